//! The maildrop pickup (spool/maildrop.rs): an arbitrary file in maildrop/, as a
//! local user could write it, is either queued or moved to corrupt/, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tern::spool::{QueueId, Spool};

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(dir.path()).expect("spool");
    let name = QueueId::generate().to_string();
    let drop_dir = tern::spool::maildrop::dir(dir.path());
    std::fs::write(drop_dir.join(name), data).expect("write drop file");
    let got = spool.pickup(&|id, uid| format!("Received: {id} {uid}\n"));
    assert!(got.is_ok(), "pickup failed on a bad file: {got:?}");
    assert_eq!(
        spool.maildrop_count().ok(),
        Some(0),
        "the file stayed in the maildrop"
    );
});
