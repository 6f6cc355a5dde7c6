//! STARTTLS (RFC 3207) and implicit TLS (RFC 8314): the upgrade and the
//! session reset, the CVE-2011-0411 injection, Received: with ESMTPS and the
//! TLS details (RFC 3848), through a raw rustls client, lettre, Python's
//! smtplib and `openssl s_client`.

use std::io::Write;
use std::process::{Command, Stdio};

use lettre::message::Mailbox;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{Message, SmtpTransport, Transport};

use crate::common::{message, Setup, TlsClient};

#[test]
fn starttls_offered_only_with_a_certificate() {
    let t = Setup::new().start();
    let mut c = t.connect();
    let r = c.hello();
    assert!(!r.text().contains("STARTTLS"), "{r:?}");
    assert_eq!(c.cmd("STARTTLS").status(), "502 5.5.1");

    let t = Setup::new().tls().start();
    let mut c = t.connect();
    let r = c.hello();
    assert!(r.lines.contains(&"250-STARTTLS".to_owned()), "{r:?}");
    // No AUTH without auth_users, and none before TLS anyway.
    assert!(!r.text().contains("AUTH"), "{r:?}");
}

#[test]
fn starttls_upgrade_resets_the_session() {
    let t = Setup::new().tls().start();
    let mut c = t.connect();
    c.hello();
    assert_eq!(c.cmd("MAIL FROM:<a@remote.test>").status(), "250 2.1.0");
    let ca = t.setup.ca_pem();
    let mut s = c.starttls(&ca);
    assert!(s.version() == "TLSv1_3" || s.version() == "TLSv1_2");
    // RFC 3207 4.2: the client must say EHLO again, and the transaction is gone.
    assert_eq!(s.cmd("MAIL FROM:<a@remote.test>").status(), "503 5.5.1");
    let r = s.cmd("EHLO client.test");
    assert_eq!(r.code, 250);
    assert!(!r.text().contains("STARTTLS"), "{r:?}");
    assert_eq!(s.cmd("STARTTLS").status(), "503 5.5.1");
    let r = s.send_mail("a@remote.test", &["alice@example.test"], &message("tls"));
    assert_eq!(r.status(), "250 2.0.0");
    let (env, body) = t.message(&r.queue_id());
    assert_eq!(env.protocol, "ESMTPS");
    let body = String::from_utf8(body).unwrap();
    // RFC 3848: "with ESMTPS", and the version and cipher in a comment.
    assert!(
        body.starts_with(
            "Received: from client.test (unknown [127.0.0.1])\n\t(using TLSv1.3 with cipher TLS13_"
        ),
        "{body}"
    );
    assert!(body.contains("\n\tby mx.test (tern) with ESMTPS id "), "{body}");
    assert_eq!(s.cmd("QUIT").status(), "221 2.0.0");
    assert!(t.wait_log("TLS established from unknown[127.0.0.1] on smtp: TLSv1.3"));
}

/// CVE-2011-0411: commands pipelined after STARTTLS in the same plaintext
/// packet must be thrown away, never run inside the TLS session.
#[test]
fn plaintext_pipelined_after_starttls_is_discarded() {
    let t = Setup::new().tls().start();
    let mut c = t.connect();
    c.hello();
    c.send_raw(b"STARTTLS\r\nMAIL FROM:<evil@remote.test>\r\nRCPT TO:<alice@example.test>\r\n");
    let ca = t.setup.ca_pem();
    // starttls() reads the 220 and checks nothing else was answered in plaintext.
    let mut s = crate::common::TlsClient::handshake_after_ready(c, &ca);
    // Inside TLS the first reply must be to our EHLO, not to the injected commands.
    let r = s.cmd("EHLO client.test");
    assert_eq!(r.code, 250, "{r:?}");
    assert!(r.lines[0].starts_with("250-mx.test Hello client.test"), "{r:?}");
    // The injected MAIL never ran: RCPT has no transaction to join.
    assert_eq!(s.cmd("RCPT TO:<alice@example.test>").status(), "503 5.5.1");
    assert_eq!(s.cmd("NOOP").status(), "250 2.0.0");
    assert!(t.queued().is_empty());
}

#[test]
fn failed_handshake_closes_only_that_session() {
    let t = Setup::new().tls().start();
    let mut c = t.connect();
    c.hello();
    assert_eq!(c.cmd("STARTTLS").status(), "220 2.0.0");
    c.send_raw(b"this is not a TLS client hello\r\n");
    // At most a TLS alert, then the connection is closed.
    let rest = c.read_to_close().expect("closed");
    assert!(!rest.windows(3).any(|w| w == b"250"), "{rest:?}");
    assert!(t.wait_log("TLS handshake failed from unknown[127.0.0.1]"));
    // The daemon goes on.
    let mut c = t.connect();
    c.hello();
    assert_eq!(c.cmd("NOOP").status(), "250 2.0.0");
}

#[test]
fn implicit_tls_listener() {
    let t = Setup::new().submission().start();
    let mut s = TlsClient::connect(t.smtps_addr(), &t.setup.ca_pem());
    let g = s.reply();
    assert_eq!(g.lines, vec!["220 mx.test ESMTP tern"]);
    let r = s.cmd("EHLO client.test");
    assert!(!r.text().contains("STARTTLS"), "{r:?}");
    assert!(r.lines.contains(&"250-AUTH PLAIN LOGIN".to_owned()), "{r:?}");
    // Submission rules: AUTH before MAIL.
    assert_eq!(s.cmd("MAIL FROM:<alice@example.test>").status(), "530 5.7.0");
    assert_eq!(s.auth_plain("alice", "secret").status(), "235 2.7.0");
    let r = s.send_mail("alice@example.test", &["someone@remote.test"], &message("smtps"));
    assert_eq!(r.status(), "250 2.0.0");
    let (env, body) = t.message(&r.queue_id());
    assert_eq!(env.protocol, "ESMTPSA");
    assert!(String::from_utf8(body).unwrap().contains("with ESMTPSA id"));
    // A plaintext client on the smtps port gets nothing and is closed.
    let mut c = crate::common::Client::connect(t.smtps_addr());
    c.send("EHLO plain.test");
    let rest = c.read_to_close().expect("closed");
    assert!(!rest.windows(3).any(|w| w == b"220" || w == b"250"), "{rest:?}");
}

#[test]
fn lettre_starttls_and_implicit_tls() {
    let t = Setup::new().submission().start();
    let cert = Certificate::from_pem(&t.setup.ca_pem()).unwrap();
    let params = || {
        TlsParameters::builder("mx.test".to_owned())
            .add_root_certificate(cert.clone())
            .build_rustls()
            .unwrap()
    };
    let email = |subject: &str| {
        Message::builder()
            .from("Alice <alice@example.test>".parse::<Mailbox>().unwrap())
            .to("Someone <someone@remote.test>".parse::<Mailbox>().unwrap())
            .subject(subject)
            .body("Hello over TLS.\n".to_owned())
            .unwrap()
    };
    let creds = lettre::transport::smtp::authentication::Credentials::new("alice".into(), "secret".into());
    // STARTTLS on the submission port.
    let m = SmtpTransport::builder_dangerous("127.0.0.1")
        .port(t.submission_addr().port())
        .tls(Tls::Required(params()))
        .credentials(creds.clone())
        .build();
    m.send(&email("starttls")).expect("lettre starttls");
    // Implicit TLS on the smtps port, AUTH LOGIN this time.
    let m = SmtpTransport::builder_dangerous("127.0.0.1")
        .port(t.smtps_addr().port())
        .tls(Tls::Wrapper(params()))
        .credentials(creds)
        .authentication(vec![lettre::transport::smtp::authentication::Mechanism::Login])
        .build();
    m.send(&email("wrapper")).expect("lettre smtps");
    // Port 25 with STARTTLS, no AUTH (127.0.0.1 may relay).
    let m = SmtpTransport::builder_dangerous("127.0.0.1")
        .port(t.addr.port())
        .tls(Tls::Required(params()))
        .build();
    m.send(&email("port 25")).expect("lettre port 25");
    let q = t.queued();
    assert_eq!(q.len(), 3);
    let protos: Vec<String> = q.iter().map(|(e, _)| e.protocol.clone()).collect();
    assert_eq!(protos.iter().filter(|p| *p == "ESMTPSA").count(), 2, "{protos:?}");
    assert_eq!(protos.iter().filter(|p| *p == "ESMTPS").count(), 1, "{protos:?}");
}

#[test]
fn python_smtplib_starttls_and_login() {
    require_tool!("python3");
    let t = Setup::new().submission().start();
    let ca = t.setup.path().join("ca.pem");
    let script = format!(
        r#"
import smtplib, ssl, sys
ctx = ssl.create_default_context(cafile={ca:?})
with smtplib.SMTP("127.0.0.1", {port}, timeout=10) as s:
    s.ehlo("py.test")
    assert s.has_extn("starttls") and not s.has_extn("auth"), s.esmtp_features
    try:
        s.login("alice", "secret")
        sys.exit("login before TLS worked")
    except smtplib.SMTPNotSupportedError:
        pass
    code, _ = s.mail("alice@example.test")
    assert code == 530, code
    s.starttls(context=ctx)
    s.ehlo("py.test")
    assert s.has_extn("auth") and not s.has_extn("starttls"), s.esmtp_features
    try:
        s.login("alice", "wrong")
        sys.exit("bad password accepted")
    except smtplib.SMTPAuthenticationError as e:
        assert e.smtp_code == 535 and e.smtp_error.startswith(b"5.7.8"), e
    s.login("alice", "secret")
    s.sendmail("alice@example.test", ["someone@remote.test"], "Subject: py\r\n\r\nhi\r\n")
with smtplib.SMTP_SSL("127.0.0.1", {smtps}, timeout=10, context=ctx) as s:
    s.login("bob", "hunter2")
    s.sendmail("bob@example.test", ["alice@example.test"], "Subject: py2\r\n\r\nhi\r\n")
print("ok")
"#,
        ca = ca.display().to_string(),
        port = t.submission_addr().port(),
        smtps = t.smtps_addr().port(),
    );
    let out = Command::new("python3").arg("-c").arg(&script).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), "ok");
    assert_eq!(t.queued().len(), 2);
}

#[test]
fn openssl_s_client_starttls() {
    require_tool!("openssl");
    let t = Setup::new().submission().start();
    let ca = t.setup.path().join("ca.pem");
    let mut child = Command::new("timeout")
        .arg("20")
        .arg("openssl")
        .args([
            "s_client",
            "-quiet",
            "-crlf",
            "-verify_return_error",
            "-starttls",
            "smtp",
        ])
        .arg("-connect")
        .arg(t.submission_addr().to_string())
        .arg("-CAfile")
        .arg(&ca)
        .args(["-verify_hostname", "mx.test"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let auth = crate::common::b64(b"\0alice\0secret");
    let script = format!("EHLO openssl.test\nAUTH PLAIN {auth}\nMAIL FROM:<alice@example.test>\nQUIT\n");
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("250-AUTH PLAIN LOGIN"), "{stdout}\n{stderr}");
    assert!(!stdout.contains("STARTTLS"), "{stdout}");
    assert!(stdout.contains("235 2.7.0"), "{stdout}\n{stderr}");
    assert!(stdout.contains("250 2.1.0"), "{stdout}");
    assert!(stdout.contains("221 2.0.0"), "{stdout}");
}

/// A renewed certificate is picked up by the next handshake; a broken one
/// is logged and the last good one stays in use.
#[test]
fn certificate_files_reload_without_restart() {
    let t = Setup::new().tls().start();
    let touch = |name: &str, text: &str| {
        let path = t.setup.path().join(name);
        std::fs::write(&path, text).unwrap();
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
            .unwrap();
    };
    let mut c = t.connect();
    c.hello();
    c.starttls(&t.setup.ca_pem()).cmd("QUIT");

    let renewed = crate::common::make_certs();
    touch("cert.pem", &renewed.chain_pem);
    touch("key.pem", &renewed.key_pem);
    let mut c = t.connect();
    c.hello();
    let mut s = c.starttls(renewed.ca_pem.as_bytes());
    assert_eq!(s.cmd("EHLO client.test").code, 250);
    assert!(t.wait_log("TLS: loaded the new"));

    touch("key.pem", "not a key\n");
    let mut c = t.connect();
    c.hello();
    let mut s = c.starttls(renewed.ca_pem.as_bytes());
    assert_eq!(s.cmd("EHLO client.test").code, 250);
    assert!(t.wait_log("TLS: keeping the previous certificate: tls_key"));
}
