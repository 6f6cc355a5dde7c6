//! dsn::build fed an arbitrary original message and arbitrary envelope fields (the
//! sender, recipients and diagnostics all come from remote peers). Checks that the
//! notification's own header section has no line over RFC 5322's 998 octets.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tern::smtp::status::Status;
use tern::dsn::{build, Action, RecipientReport, Report, ReturnContent};

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let (ctl, rest) = data.split_at(4);
    let mut parts = rest.splitn(9, |&b| b == 0);
    let mut next = || String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let hostname = next();
    let queue_id = next();
    let envid = next();
    let sender = next();
    let rcpt = next();
    let orcpt = next();
    let mta = next();
    let diag = next();
    let original = parts.next().unwrap_or_default().to_vec();
    let actions = [
        Action::Failed,
        Action::Delayed,
        Action::Delivered,
        Action::Relayed,
        Action::Expanded,
    ];
    let opt = |bit: u8, s: &String| (ctl[0] & bit != 0).then(|| s.clone());
    let recipients = (0..=ctl[1] % 3)
        .map(|i| RecipientReport {
            final_recipient: format!("{rcpt}{i}"),
            original_recipient: opt(1, &orcpt),
            action: actions[usize::from(ctl[2].wrapping_add(i)) % actions.len()],
            status: Status(2 + ctl[3] % 4, u16::from(ctl[3]), u16::from(ctl[2])),
            remote_mta: opt(2, &mta),
            diagnostic: opt(4, &diag),
            last_attempt: (ctl[0] & 8 != 0).then_some(1_700_000_000),
            will_retry_until: (ctl[0] & 16 != 0).then_some(u64::MAX),
        })
        .collect();
    let report = Report {
        hostname: &hostname,
        queue_id: &queue_id,
        envid: (ctl[0] & 32 != 0).then_some(envid.as_str()),
        arrival: u64::from(ctl[1]) << 32,
        sender: &sender,
        recipients,
        return_content: if ctl[0] & 64 != 0 {
            ReturnContent::Full
        } else {
            ReturnContent::Headers
        },
        original: &original,
        max_return_size: u64::from(ctl[2]) * 64,
    };
    let out = build(&report);
    let head_end = out.windows(2).position(|w| w == b"\n\n").unwrap_or(out.len());
    for line in out[..head_end].split(|&b| b == b'\n') {
        assert!(line.len() <= 998, "header line of {} octets", line.len());
    }
});
