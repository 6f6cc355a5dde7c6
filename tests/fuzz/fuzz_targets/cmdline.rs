//! The sendmail command line (sendmail::parse_args, under each of its names) with
//! arguments split at NUL, and the -t header address-list parser on each argument.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tern::sendmail::{address_list, parse_args, program_name};

fuzz_target!(|data: &[u8]| {
    let args: Vec<String> = data
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    for name in ["sendmail", "mailq", "newaliases"] {
        let _ = parse_args(name, &args, None);
    }
    let _ = parse_args("sendmail", &args, args.first().cloned());
    for a in &args {
        let _ = address_list(a);
        let _ = program_name(a);
    }
});
