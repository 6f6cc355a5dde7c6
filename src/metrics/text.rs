//! The Prometheus text exposition format, version 0.0.4: `# HELP` and
//! `# TYPE` lines, then one `name{label="value",...} value` line per sample,
//! each ending in LF.
//!
//! Escaping (the format's own rules): in HELP text a backslash and a line
//! feed become `\\` and `\n`; in a label value the double quote too becomes
//! `\"`. Metric and label names are tern's own constants and need none.

use std::fmt::{Display, Write};

/// The Content-Type of a scrape answered in this format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `# HELP name text` and `# TYPE name kind`.
pub(super) fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    out.push_str("# HELP ");
    out.push_str(name);
    out.push(' ');
    escape(out, help, false);
    out.push_str("\n# TYPE ");
    out.push_str(name);
    out.push(' ');
    out.push_str(kind);
    out.push('\n');
}

/// One sample: `name{labels} value`, where `labels` is already
/// `name="value",...` (or empty: no braces then).
pub(super) fn sample(out: &mut String, name: &str, suffix: &str, labels: &str, value: impl Display) {
    out.push_str(name);
    out.push_str(suffix);
    if !labels.is_empty() {
        out.push('{');
        out.push_str(labels);
        out.push('}');
    }
    // Writing to a String cannot fail.
    let _ = writeln!(out, " {value}");
}

/// `name="value"`, the value escaped.
pub(super) fn label(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push_str("=\"");
    escape(out, value, true);
    out.push('"');
}

/// A float as the format reads it: Rust's shortest round-trip form ("0.5",
/// "300", "1e-7"), `+Inf`, `-Inf` and `NaN` spelled as Go's ParseFloat takes them.
pub(super) fn float(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v == f64::INFINITY {
        "+Inf".to_owned()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        format!("{v}")
    }
}

fn escape(out: &mut String, s: &str, quote: bool) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_escapes_backslash_and_newline_but_not_quotes() {
        let mut out = String::new();
        header(&mut out, "x_total", "a \\ b\nc \"d\"", "counter");
        assert_eq!(out, "# HELP x_total a \\\\ b\\nc \"d\"\n# TYPE x_total counter\n");
    }

    #[test]
    fn label_values_escape_quotes_too() {
        let mut out = String::new();
        label(&mut out, "l", "a\"b\\c\nd");
        assert_eq!(out, "l=\"a\\\"b\\\\c\\nd\"");
    }

    #[test]
    fn samples_with_and_without_labels() {
        let mut out = String::new();
        sample(&mut out, "x", "_count", "", 3);
        sample(&mut out, "x", "", "a=\"1\",b=\"2\"", -4);
        assert_eq!(out, "x_count 3\nx{a=\"1\",b=\"2\"} -4\n");
    }

    #[test]
    fn floats_as_prometheus_parses_them() {
        assert_eq!(float(0.5), "0.5");
        assert_eq!(float(300.0), "300");
        assert_eq!(float(21.3), "21.3");
        assert_eq!(float(f64::INFINITY), "+Inf");
        assert_eq!(float(f64::NEG_INFINITY), "-Inf");
        assert_eq!(float(f64::NAN), "NaN");
        // Every finite form parses back to the same value.
        for v in [1e-7, 0.1, 432000.0, 1.5e300] {
            assert_eq!(float(v).parse::<f64>().unwrap(), v);
        }
    }
}
