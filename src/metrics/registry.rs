//! The metric types: counters, gauges and histograms over a label set fixed
//! at compile time. Each label is an enum, so a label set is an index into a
//! static array of atomics: counting an event is one relaxed `fetch_add`, with
//! no lock, no hashing and no allocation, and every series exists (at zero)
//! from the start, as Prometheus wants for `rate()` to work from the first
//! scrape.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use super::text;

/// One label: an enum with every value known at compile time (see `label!`).
pub trait Label: Copy + 'static {
    /// The label's name, `listener`.
    const NAME: &'static str;
    /// Every value, in index order.
    const ALL: &'static [Self];
    /// This value's place in `ALL`.
    fn index(self) -> usize;
    /// This value as exported, `smtp`.
    fn value(self) -> &'static str;
}

/// A set of labels a metric is split by: none `()`, one label, or a pair.
pub trait Labels: Copy + 'static {
    /// How many label sets there are: the number of series of the metric.
    const COUNT: usize;
    /// This set's series, in `0..COUNT`.
    fn index(self) -> usize;
    /// The series `i` as `name="value",...` (nothing for `()`).
    fn write(i: usize, out: &mut String);
}

impl Labels for () {
    const COUNT: usize = 1;
    fn index(self) -> usize {
        0
    }
    fn write(_: usize, _: &mut String) {}
}

impl<A: Label, B: Label> Labels for (A, B) {
    const COUNT: usize = A::ALL.len() * B::ALL.len();
    fn index(self) -> usize {
        self.0.index() * B::ALL.len() + self.1.index()
    }
    fn write(i: usize, out: &mut String) {
        let n = B::ALL.len().max(1);
        write_label::<A>(i / n, out);
        out.push(',');
        write_label::<B>(i % n, out);
    }
}

/// `name="value"` of value `i` of label `L`.
pub(super) fn write_label<L: Label>(i: usize, out: &mut String) {
    if let Some(v) = L::ALL.get(i) {
        text::label(out, L::NAME, v.value());
    }
}

/// An enum that is a [`Label`] (and a [`Labels`] of its own):
/// `label! { pub enum Listener("listener") { Smtp = "smtp", ... } }`.
macro_rules! label {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident($label:literal) {
            $($(#[$vmeta:meta])* $variant:ident = $value:literal),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        $vis enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $crate::metrics::registry::Label for $name {
            const NAME: &'static str = $label;
            const ALL: &'static [Self] = &[$($name::$variant),+];
            fn index(self) -> usize {
                self as usize
            }
            fn value(self) -> &'static str {
                match self {
                    $($name::$variant => $value),+
                }
            }
        }

        impl $crate::metrics::registry::Labels for $name {
            const COUNT: usize = <Self as $crate::metrics::registry::Label>::ALL.len();
            fn index(self) -> usize {
                <Self as $crate::metrics::registry::Label>::index(self)
            }
            fn write(i: usize, out: &mut String) {
                $crate::metrics::registry::write_label::<Self>(i, out)
            }
        }
    };
}
pub(crate) use label;

/// What the exposition needs of every metric.
pub trait Family: Sync {
    /// Append the HELP and TYPE lines and every sample.
    fn render(&self, out: &mut String);
}

/// A monotonic count per label set. `N` must be `L::COUNT` (checked at
/// compile time; the `counter!` macro writes it).
pub struct Counter<L: Labels, const N: usize> {
    name: &'static str,
    help: &'static str,
    cells: [AtomicU64; N],
    labels: PhantomData<fn(L)>,
}

impl<L: Labels, const N: usize> Counter<L, N> {
    pub const fn new(name: &'static str, help: &'static str) -> Self {
        const { assert!(N == L::COUNT, "N is not the number of label sets") };
        Counter {
            name,
            help,
            cells: [const { AtomicU64::new(0) }; N],
            labels: PhantomData,
        }
    }

    pub fn inc(&self, labels: L) {
        self.add(labels, 1);
    }

    pub fn add(&self, labels: L, n: u64) {
        if let Some(c) = self.cells.get(labels.index()) {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn get(&self, labels: L) -> u64 {
        self.cells
            .get(labels.index())
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }
}

impl<L: Labels, const N: usize> Family for Counter<L, N> {
    fn render(&self, out: &mut String) {
        let values = self.cells.iter().map(|c| c.load(Ordering::Relaxed));
        render_scalar::<L>(out, self.name, self.help, "counter", values);
    }
}

/// A counter's or a gauge's lines: one sample per label set, in index order.
fn render_scalar<L: Labels>(
    out: &mut String,
    name: &str,
    help: &str,
    kind: &str,
    values: impl Iterator<Item = impl std::fmt::Display>,
) {
    text::header(out, name, help, kind);
    let mut labels = String::new();
    for (i, v) in values.enumerate() {
        labels.clear();
        L::write(i, &mut labels);
        text::sample(out, name, "", &labels, v);
    }
}

/// A value that goes up and down, per label set.
pub struct Gauge<L: Labels, const N: usize> {
    name: &'static str,
    help: &'static str,
    cells: [AtomicI64; N],
    labels: PhantomData<fn(L)>,
}

impl<L: Labels, const N: usize> Gauge<L, N> {
    pub const fn new(name: &'static str, help: &'static str) -> Self {
        const { assert!(N == L::COUNT, "N is not the number of label sets") };
        Gauge {
            name,
            help,
            cells: [const { AtomicI64::new(0) }; N],
            labels: PhantomData,
        }
    }

    pub fn set(&self, labels: L, v: i64) {
        if let Some(c) = self.cells.get(labels.index()) {
            c.store(v, Ordering::Relaxed);
        }
    }

    pub fn add(&self, labels: L, v: i64) {
        if let Some(c) = self.cells.get(labels.index()) {
            c.fetch_add(v, Ordering::Relaxed);
        }
    }

    pub fn get(&self, labels: L) -> i64 {
        self.cells
            .get(labels.index())
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }
}

impl<L: Labels, const N: usize> Family for Gauge<L, N> {
    fn render(&self, out: &mut String) {
        let values = self.cells.iter().map(|c| c.load(Ordering::Relaxed));
        render_scalar::<L>(out, self.name, self.help, "gauge", values);
    }
}

/// The most finite buckets a histogram may have.
pub const MAX_BUCKETS: usize = 15;

/// One histogram series: a count per bucket (not cumulative: the exposition
/// adds them up), the last one for values above every bound, and the sum in
/// microseconds (an integer, so that adding is one `fetch_add`).
struct HistogramCell {
    buckets: [AtomicU64; MAX_BUCKETS + 1],
    sum_micros: AtomicU64,
}

/// A distribution of durations per label set, in seconds as Prometheus
/// names them; `bounds` are the buckets' upper bounds, ascending.
pub struct Histogram<L: Labels, const N: usize> {
    name: &'static str,
    help: &'static str,
    bounds: &'static [f64],
    cells: [HistogramCell; N],
    labels: PhantomData<fn(L)>,
}

impl<L: Labels, const N: usize> Histogram<L, N> {
    pub const fn new(name: &'static str, help: &'static str, bounds: &'static [f64]) -> Self {
        const { assert!(N == L::COUNT, "N is not the number of label sets") };
        assert!(bounds.len() <= MAX_BUCKETS, "too many buckets");
        Histogram {
            name,
            help,
            bounds,
            cells: [const {
                HistogramCell {
                    buckets: [const { AtomicU64::new(0) }; MAX_BUCKETS + 1],
                    sum_micros: AtomicU64::new(0),
                }
            }; N],
            labels: PhantomData,
        }
    }

    pub fn observe(&self, labels: L, d: Duration) {
        let Some(cell) = self.cells.get(labels.index()) else {
            return;
        };
        let secs = d.as_secs_f64();
        // The first bucket whose bound is not below the value (`le`: less or equal).
        let i = self
            .bounds
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(self.bounds.len());
        if let Some(b) = cell.buckets.get(i) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        cell.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Observations so far for `labels`.
    pub fn count(&self, labels: L) -> u64 {
        self.cells
            .get(labels.index())
            .map_or(0, |c| c.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum())
    }
}

impl<L: Labels, const N: usize> Family for Histogram<L, N> {
    fn render(&self, out: &mut String) {
        text::header(out, self.name, self.help, "histogram");
        let mut labels = String::new();
        for (i, cell) in self.cells.iter().enumerate() {
            labels.clear();
            L::write(i, &mut labels);
            let sep = if labels.is_empty() { "" } else { "," };
            // Cumulative, and _count the same total as le="+Inf", whatever is
            // observed meanwhile: both come from one pass over the buckets.
            let mut total = 0u64;
            let counts = cell.buckets.iter().map(|b| b.load(Ordering::Relaxed));
            for (j, n) in counts.take(self.bounds.len() + 1).enumerate() {
                total = total.saturating_add(n);
                let le = match self.bounds.get(j) {
                    Some(b) => text::float(*b),
                    None => "+Inf".to_owned(),
                };
                let mut with_le = labels.clone();
                with_le.push_str(sep);
                text::label(&mut with_le, "le", &le);
                text::sample(out, self.name, "_bucket", &with_le, total);
            }
            let sum = cell.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
            text::sample(out, self.name, "_sum", &labels, text::float(sum));
            text::sample(out, self.name, "_count", &labels, total);
        }
    }
}

/// `pub static NAME: Counter<LABELS, _> = ...` with the series count filled in:
/// `counter!(pub static CONNECTIONS: (Listener, Outcome), "tern_...", "help");`
macro_rules! counter {
    ($(#[$m:meta])* $vis:vis static $name:ident: $l:ty, $metric:literal, $help:literal) => {
        $(#[$m])*
        $vis static $name: $crate::metrics::registry::Counter<$l, { <$l as $crate::metrics::registry::Labels>::COUNT }> =
            $crate::metrics::registry::Counter::new($metric, $help);
    };
}
pub(crate) use counter;

macro_rules! gauge {
    ($(#[$m:meta])* $vis:vis static $name:ident: $l:ty, $metric:literal, $help:literal) => {
        $(#[$m])*
        $vis static $name: $crate::metrics::registry::Gauge<$l, { <$l as $crate::metrics::registry::Labels>::COUNT }> =
            $crate::metrics::registry::Gauge::new($metric, $help);
    };
}
pub(crate) use gauge;

macro_rules! histogram {
    ($(#[$m:meta])* $vis:vis static $name:ident: $l:ty, $metric:literal, $help:literal, $bounds:expr) => {
        $(#[$m])*
        $vis static $name: $crate::metrics::registry::Histogram<$l, { <$l as $crate::metrics::registry::Labels>::COUNT }> =
            $crate::metrics::registry::Histogram::new($metric, $help, $bounds);
    };
}
pub(crate) use histogram;

#[cfg(test)]
mod tests {
    use super::*;

    label! {
        enum Color("color") { Red = "red", Green = "green", Blue = "blue" }
    }
    label! {
        enum Size("size") { Small = "s", Large = "l" }
    }

    counter!(static PAIRS: (Color, Size), "t_pairs_total", "Pairs.");
    gauge!(static LEVEL: (), "t_level", "A level.");
    histogram!(static LAT: Size, "t_latency_seconds", "Latency.", &[0.5, 1.0, 10.0]);

    #[test]
    fn pairs_index_every_series_once() {
        let mut seen = [false; <(Color, Size)>::COUNT];
        for c in Color::ALL {
            for s in Size::ALL {
                let i = (*c, *s).index();
                assert!(!seen[i], "{c:?} {s:?} shares a series");
                seen[i] = true;
                let mut l = String::new();
                <(Color, Size)>::write(i, &mut l);
                assert_eq!(l, format!("color=\"{}\",size=\"{}\"", c.value(), s.value()));
            }
        }
        assert!(seen.iter().all(|s| *s));
    }

    #[test]
    fn counter_renders_every_series() {
        PAIRS.inc((Color::Green, Size::Large));
        PAIRS.add((Color::Green, Size::Large), 2);
        PAIRS.inc((Color::Red, Size::Small));
        assert_eq!(PAIRS.get((Color::Green, Size::Large)), 3);
        let mut out = String::new();
        PAIRS.render(&mut out);
        assert_eq!(
            out,
            "# HELP t_pairs_total Pairs.\n# TYPE t_pairs_total counter\n\
             t_pairs_total{color=\"red\",size=\"s\"} 1\n\
             t_pairs_total{color=\"red\",size=\"l\"} 0\n\
             t_pairs_total{color=\"green\",size=\"s\"} 0\n\
             t_pairs_total{color=\"green\",size=\"l\"} 3\n\
             t_pairs_total{color=\"blue\",size=\"s\"} 0\n\
             t_pairs_total{color=\"blue\",size=\"l\"} 0\n"
        );
    }

    #[test]
    fn gauge_without_labels() {
        LEVEL.set((), 7);
        LEVEL.add((), -9);
        let mut out = String::new();
        LEVEL.render(&mut out);
        assert_eq!(out, "# HELP t_level A level.\n# TYPE t_level gauge\nt_level -2\n");
    }

    #[test]
    fn histogram_buckets_are_cumulative_with_inf_sum_and_count() {
        for ms in [100, 500, 700, 20_000] {
            LAT.observe(Size::Small, Duration::from_millis(ms));
        }
        assert_eq!(LAT.count(Size::Small), 4);
        let mut out = String::new();
        LAT.render(&mut out);
        let small: Vec<&str> = out.lines().filter(|l| l.contains("size=\"s\"")).collect();
        assert_eq!(
            small,
            [
                "t_latency_seconds_bucket{size=\"s\",le=\"0.5\"} 2",
                "t_latency_seconds_bucket{size=\"s\",le=\"1\"} 3",
                "t_latency_seconds_bucket{size=\"s\",le=\"10\"} 3",
                "t_latency_seconds_bucket{size=\"s\",le=\"+Inf\"} 4",
                "t_latency_seconds_sum{size=\"s\"} 21.3",
                "t_latency_seconds_count{size=\"s\"} 4",
            ]
        );
        assert!(out.starts_with("# HELP t_latency_seconds Latency.\n# TYPE t_latency_seconds histogram\n"));
        assert!(out.contains("t_latency_seconds_bucket{size=\"l\",le=\"+Inf\"} 0\n"));
        assert!(out.contains("t_latency_seconds_count{size=\"l\"} 0\n"));
    }
}
