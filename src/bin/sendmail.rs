//! sendmail: the sendmail-compatible submission program; also `mailq` (-bp) and
//! `newaliases` (-bi) by the name it is called with. See sendmail(8); the logic is
//! in `tern::sendmail`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args();
    let name = tern::sendmail::program_name(&args.next().unwrap_or_default());
    let rest: Vec<String> = args.collect();
    ExitCode::from(tern::sendmail::main(&name, &rest))
}
