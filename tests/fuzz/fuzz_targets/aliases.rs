//! aliases::Aliases::parse and expand: the table is the input before the first NUL,
//! any include file read holds the input after it. Every left-hand side is expanded.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use tern::aliases::Aliases;

fuzz_target!(|data: &[u8]| {
    let (table, include) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let table = String::from_utf8_lossy(table);
    let include = String::from_utf8_lossy(include).into_owned();
    let (aliases, _errors) = Aliases::parse(&table);
    let mut names: Vec<&str> = vec!["root", "postmaster", "MAILER-DAEMON", ""];
    names.extend(
        table
            .lines()
            .filter_map(|l| l.split(':').next())
            .map(str::trim)
            .take(32),
    );
    let is_local = |d: &str| d.eq_ignore_ascii_case("localhost") || d == "example.org";
    let read_include = |_: &Path| Ok(include.clone());
    for name in names {
        let _ = aliases.expand(name, &is_local, &read_include);
    }
});
