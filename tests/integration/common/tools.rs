//! Outside programs used as plain tools, each an independent judge of what
//! tern writes: pflogsumm (Postfix's log summariser), promtool (Prometheus'
//! metrics linter) and dkimpy (python3-dkim) to verify and make DKIM
//! signatures. Each returns None after recording a skip (a failure under
//! CI=true) when its package is missing.

use std::io::Write;
use std::process::{Command, Stdio};

use super::skip;

/// What a tool printed and how it ended.
#[derive(Debug)]
pub struct ToolOutput {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

fn run_with_input(cmd: &mut Command, input: &[u8]) -> ToolOutput {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("wait");
    let _ = writer.join();
    ToolOutput {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn tool(name: &str) -> Option<std::path::PathBuf> {
    if !skip::tools_present(&[name]) {
        return None;
    }
    skip::find_tool(name)
}

/// `pflogsumm` over a log (Postfix syslog format). Extra arguments, e.g.
/// `--syslog-name=tern`, go before the log.
pub fn pflogsumm(log: &str, args: &[&str]) -> Option<ToolOutput> {
    let prog = tool("pflogsumm")?;
    Some(run_with_input(Command::new(prog).args(args), log.as_bytes()))
}

/// The count pflogsumm reports for a line of its "Grand Totals" (e.g.
/// "received", "delivered", "deferred", "bounced", "rejected").
pub fn pflogsumm_total(summary: &str, what: &str) -> Option<u64> {
    summary.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let n = f.next()?;
        let word = f.next()?;
        (word == what).then(|| n.parse().ok()).flatten()
    })
}

/// `promtool check metrics` on a Prometheus text exposition: ok means it
/// parsed and passed the linter.
pub fn promtool_check_metrics(text: &str) -> Option<ToolOutput> {
    let prog = tool("promtool")?;
    Some(run_with_input(
        Command::new(prog).args(["check", "metrics"]),
        text.as_bytes(),
    ))
}

/// The python that runs dkimpy code, or None after a skip.
fn dkimpy() -> Option<&'static str> {
    if !skip::have_python_module("dkim") {
        skip::skip(&skip::missing("dkim"));
        return None;
    }
    Some(skip::debian_python())
}

/// Python source of a DNS function answering from `keys` (name -> TXT).
fn dns_func(keys: &[(&str, &str)]) -> String {
    let entries: String = keys
        .iter()
        .map(|(n, v)| format!("{:?}: {:?},", n.trim_end_matches('.').to_ascii_lowercase(), v))
        .collect();
    format!(
        "KEYS = {{{entries}}}\n\
         def dnsfunc(name, timeout=5):\n    \
             n = name.decode() if isinstance(name, bytes) else name\n    \
             v = KEYS.get(n.rstrip('.').lower())\n    \
             return v.encode() if v is not None else None\n"
    )
}

/// Verify every DKIM-Signature of `message` (CRLF) with dkimpy, the public
/// keys given as (`sel._domainkey.domain`, TXT) instead of DNS. Some(Ok(()))
/// when all verify, Some(Err(reason)) when one does not.
pub fn dkim_verify(message: &[u8], keys: &[(&str, &str)]) -> Option<Result<(), String>> {
    let py = dkimpy()?;
    let script = format!(
        "import sys, dkim\n{}\
         msg = sys.stdin.buffer.read()\n\
         d = dkim.DKIM(msg)\n\
         n = len([h for h in d.headers if h[0].lower() == b'dkim-signature'])\n\
         if n == 0:\n    print('no DKIM-Signature'); sys.exit(2)\n\
         for i in range(n):\n    \
             if not d.verify(idx=i, dnsfunc=dnsfunc):\n        \
                 print('signature', i, 'does not verify'); sys.exit(1)\n\
         print('ok', n)\n",
        dns_func(keys)
    );
    let out = run_with_input(Command::new(py).args(["-c", &script]), message);
    Some(if out.ok {
        Ok(())
    } else {
        Err(format!("{}{}", out.stdout, out.stderr))
    })
}

/// Sign `message` (CRLF) with dkimpy: the DKIM-Signature header line(s) to
/// put in front, relaxed/relaxed. `key_pem` is a PEM private key (RSA) or,
/// with `ed25519`, the base64 of a raw Ed25519 private key (RFC 8463).
pub fn dkim_sign(
    message: &[u8],
    selector: &str,
    domain: &str,
    key_pem: &str,
    ed25519: bool,
) -> Option<String> {
    let py = dkimpy()?;
    let script = format!(
        "import sys, dkim\n\
         msg = sys.stdin.buffer.read()\n\
         sig = dkim.sign(msg, {selector:?}.encode(), {domain:?}.encode(), {key:?}.encode(),\n    \
             canonicalize=(b'relaxed', b'relaxed'), signature_algorithm={alg:?}.encode(),\n    \
             include_headers=[b'from', b'to', b'subject', b'date', b'message-id'])\n\
         sys.stdout.buffer.write(sig)\n",
        key = key_pem,
        alg = if ed25519 { "ed25519-sha256" } else { "rsa-sha256" },
    );
    let out = run_with_input(Command::new(py).args(["-c", &script]), message);
    assert!(out.ok, "dkimpy sign: {}{}", out.stdout, out.stderr);
    Some(out.stdout)
}

/// A fresh Ed25519 DKIM key (RFC 8463) made by PyNaCl (python3-nacl, which
/// python3-dkim depends on): (private key as dkimpy takes it: base64 of the
/// 32-byte seed, TXT value `v=DKIM1; k=ed25519; p=<base64 public key>`).
pub fn dkim_ed25519_key() -> Option<(String, String)> {
    let py = dkimpy()?;
    let script = "import base64, nacl.signing\n\
                  k = nacl.signing.SigningKey.generate()\n\
                  print(base64.b64encode(bytes(k)).decode())\n\
                  print('v=DKIM1; k=ed25519; p=' + base64.b64encode(bytes(k.verify_key)).decode())\n";
    let out = run_with_input(Command::new(py).args(["-c", script]), b"");
    assert!(out.ok, "nacl: {}", out.stderr);
    let mut lines = out.stdout.lines();
    Some((lines.next()?.to_owned(), lines.next()?.to_owned()))
}
