//! ternctl: look at and manage tern's queue. See ternctl(8); the logic is in
//! `tern::ctl`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    ExitCode::from(tern::ctl::main(&args))
}
