//! SMTP replies as typed values, and the catalog of every reply tern sends.
//!
//! A reviewer can read everything the server ever says in this one file; the
//! session only picks a constructor. Every reply except the greeting and the
//! EHLO/HELO answer carries an enhanced status code (RFC 2034 section 3,
//! RFC 3463).

use std::borrow::Cow;
use std::fmt;

use crate::smtp::status::Status;

/// One SMTP reply: a three-digit code, an optional enhanced status code, one or
/// more lines of text, and whether the connection closes after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// The enhanced status code (RFC 2034), None for the greeting and EHLO.
    pub esc: Option<Status>,
    pub lines: Vec<Cow<'static, str>>,
    /// The server closes the connection after sending this reply.
    pub close: bool,
}

impl Reply {
    fn new(code: u16, esc: Option<Status>, text: impl Into<Cow<'static, str>>) -> Reply {
        Reply {
            code,
            esc,
            lines: vec![text.into()],
            close: false,
        }
    }

    fn closing(mut self) -> Reply {
        self.close = true;
        self
    }

    /// Positive completion or intermediate (2xx, 3xx).
    pub fn is_positive(&self) -> bool {
        self.code < 400
    }

    /// Append the wire form (`250-first`, ..., `250 last`, CRLF each) to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let n = self.lines.len();
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i + 1 == n { ' ' } else { '-' };
            let start = out.len();
            out.extend_from_slice(format!("{}{}", self.code, sep).as_bytes());
            if let Some(esc) = self.esc {
                out.extend_from_slice(format!("{esc} ").as_bytes());
            }
            // Never let a CR or LF from an argument end the reply line early.
            out.extend(
                line.bytes()
                    .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
            );
            // RFC 5321 4.5.3.1.5: a reply line is at most 512 octets including CRLF.
            out.truncate(start + (out.len() - start).min(510));
            out.extend_from_slice(b"\r\n");
        }
        if n == 0 {
            out.extend_from_slice(format!("{}\r\n", self.code).as_bytes());
        }
    }

    /// The wire form as a string, for logs and tests.
    pub fn to_wire(&self) -> String {
        let mut v = Vec::new();
        self.write_to(&mut v);
        String::from_utf8_lossy(&v).into_owned()
    }
}

impl fmt::Display for Reply {
    /// The first line without CRLF, for logs: `550 5.1.1 <x@y>: Recipient address rejected`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(esc) = self.esc {
            write!(f, " {esc}")?;
        }
        if let Some(first) = self.lines.first() {
            write!(f, " {first}")?;
        }
        Ok(())
    }
}

const fn esc(class: u8, subject: u16, detail: u16) -> Option<Status> {
    Some(Status(class, subject, detail))
}

// ---- Connection ----------------------------------------------------------

/// RFC 5321 4.2: the greeting. No enhanced code (RFC 2034 section 3).
pub fn greeting(hostname: &str) -> Reply {
    Reply::new(220, None, format!("{hostname} ESMTP tern"))
}

/// The answer to QUIT (RFC 5321 4.1.1.10).
pub fn bye() -> Reply {
    Reply::new(221, esc(2, 0, 0), "Bye").closing()
}

/// RFC 7504 3: this host accepts no mail at all (a listener in `refuse_mail`):
/// the answer at connection opening, instead of the 220, then the connection
/// closes (the RFC prefers that to answering each command with 521).
pub fn does_not_accept_mail(hostname: &str) -> Reply {
    Reply::new(521, esc(5, 3, 2), format!("{hostname} does not accept mail")).closing()
}

/// RFC 9422 MAILMAX (`max_transactions`): the client has had as many MAIL
/// commands as one session allows; it may go on in a new session (Exim answers
/// its `smtp_accept_max_per_connection` so).
pub fn too_many_transactions() -> Reply {
    Reply::new(
        421,
        esc(4, 7, 0),
        "Too many mail transactions in one session, closing connection",
    )
    .closing()
}

/// All session threads are busy (the choice of X.3.2: system not accepting messages).
pub fn too_busy() -> Reply {
    Reply::new(421, esc(4, 3, 2), "Too many connections, try again later").closing()
}

/// One client address holds too many sessions.
pub fn too_many_from_ip() -> Reply {
    Reply::new(421, esc(4, 7, 0), "Too many connections from your address").closing()
}

/// The daemon is stopping (RFC 5321 3.8).
pub fn shutting_down() -> Reply {
    Reply::new(421, esc(4, 3, 2), "Service shutting down, closing channel").closing()
}

/// RFC 5321 4.5.3.2.7: the client was silent past the server timeout.
pub fn timeout() -> Reply {
    Reply::new(421, esc(4, 4, 2), "Timeout exceeded, closing connection").closing()
}

/// The pool is full and this session, which has sent no mail for a while
/// (or only junk commands), is closed to make room for a new client.
pub fn evicted() -> Reply {
    Reply::new(
        421,
        esc(4, 3, 2),
        "Server busy, closing a session that sends no mail",
    )
    .closing()
}

/// Too many bad commands in one session.
pub fn too_many_errors() -> Reply {
    Reply::new(421, esc(4, 7, 0), "Too many errors, closing connection").closing()
}

/// A web browser or proxy probing the SMTP port (chasquid, Postfix do the same).
pub fn http_probe() -> Reply {
    Reply::new(554, esc(5, 7, 0), "This is an SMTP server, not an HTTP one").closing()
}

/// An internal fault in the session; the daemon itself goes on.
pub fn internal_error() -> Reply {
    Reply::new(421, esc(4, 3, 0), "Internal error, closing connection").closing()
}

// ---- Greeting and session commands ---------------------------------------

/// The EHLO answer: the first line greets, the others list extensions (RFC 5321 4.1.1.1).
pub fn ehlo(hostname: &str, client: &str, extensions: &[String]) -> Reply {
    let mut lines: Vec<Cow<'static, str>> = vec![format!("{hostname} Hello {client}").into()];
    lines.extend(extensions.iter().map(|e| Cow::Owned(e.clone())));
    Reply {
        code: 250,
        esc: None,
        lines,
        close: false,
    }
}

/// The HELO answer.
pub fn helo(hostname: &str) -> Reply {
    Reply::new(250, None, hostname.to_owned())
}

pub fn ok() -> Reply {
    Reply::new(250, esc(2, 0, 0), "Ok")
}

pub fn sender_ok() -> Reply {
    Reply::new(250, esc(2, 1, 0), "Ok")
}

pub fn recipient_ok() -> Reply {
    Reply::new(250, esc(2, 1, 5), "Ok")
}

pub fn reset_ok() -> Reply {
    Reply::new(250, esc(2, 0, 0), "Ok")
}

pub fn noop_ok() -> Reply {
    Reply::new(250, esc(2, 0, 0), "Ok")
}

/// RFC 5321 3.5.3: VRFY may answer 252 without disclosing whether the user exists.
pub fn vrfy_cannot() -> Reply {
    Reply::new(
        252,
        esc(2, 5, 2),
        "Cannot VRFY user, but will accept message and attempt delivery",
    )
}

/// VRFY with `vrfy = yes` for an address mail would be accepted for. 252, not
/// 250, as Postfix answers: the address is not proven deliverable (RFC 5321
/// 3.5.1 keeps 250 for a verified mailbox); 3.5.1's `<local-part@domain>` form.
pub fn vrfy_ok(addr: &str) -> Reply {
    Reply::new(252, esc(2, 0, 0), format!("<{addr}>"))
}

/// EXPN when it is switched off (RFC 5321 3.5.2 allows refusing it).
pub fn expn_disabled() -> Reply {
    Reply::new(502, esc(5, 5, 1), "EXPN command disabled")
}

/// EXPN answer: one mailbox a line (RFC 5321 3.5.2).
pub fn expn_list(members: &[String]) -> Reply {
    let mut r = Reply::new(250, esc(2, 1, 5), "");
    r.lines = members.iter().map(|m| Cow::Owned(m.clone())).collect();
    if r.lines.is_empty() {
        r.lines.push(Cow::Borrowed("(empty list)"));
    }
    r
}

pub fn expn_unknown() -> Reply {
    Reply::new(550, esc(5, 1, 1), "No such mailing list")
}

/// HELP (RFC 5321 4.1.1.8).
pub fn help() -> Reply {
    let mut r = Reply::new(214, esc(2, 0, 0), "");
    r.lines = vec![
        Cow::Borrowed("Commands: EHLO HELO STARTTLS AUTH MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY EXPN HELP"),
        Cow::Borrowed("See ternd(8); send reports to postmaster"),
    ];
    r
}

/// The go-ahead for DATA (RFC 5321 4.1.1.4).
pub fn start_data() -> Reply {
    Reply::new(354, None, "End data with <CR><LF>.<CR><LF>")
}

/// RFC 3030 2: a chunk that is not the last one was read (nothing is on disk yet).
pub fn chunk_received(octets: u64) -> Reply {
    Reply::new(250, esc(2, 0, 0), format!("{octets} octets received"))
}

/// RFC 3030 2: BDAT's argument does not parse. The chunk's length is unknown, so
/// what follows cannot be told from commands: the session ends (as Postfix does).
pub fn bdat_syntax() -> Reply {
    Reply::new(501, esc(5, 5, 4), "Syntax: BDAT chunk-size [LAST]").closing()
}

/// RFC 3030 2: DATA in a transaction that BDAT started (or BDAT with no
/// transaction open); the chunk itself was read and thrown away.
pub fn data_after_bdat() -> Reply {
    Reply::new(503, esc(5, 5, 1), "Error: DATA in a BDAT transaction")
}

/// The message is on disk: only ever sent after the spool's commit returned.
pub fn queued(id: &str) -> Reply {
    Reply::new(250, esc(2, 0, 0), format!("Ok: queued as {id}"))
}

// ---- Syntax and sequence --------------------------------------------------

/// RFC 5321 4.2.4: unrecognized command.
pub fn unknown_command() -> Reply {
    Reply::new(500, esc(5, 5, 2), "Error: command not recognized")
}

/// RFC 5321 4.5.3.1.4: command line over 512 octets (4.2.2 code 500).
pub fn line_too_long() -> Reply {
    Reply::new(500, esc(5, 5, 2), "Error: line too long")
}

/// A command line with a CR or LF that is not part of a CRLF (RFC 5321
/// 2.3.8, 4.1.1): nothing of it is executed, and the session is closed, as
/// Postfix does with `smtpd_forbid_bare_newline = reject`, since client and
/// server no longer agree where the next command starts. 5xx, so that the
/// client does not retry the same bytes.
pub fn bare_newline_command(lf: bool) -> Reply {
    let what = if lf {
        "Error: bare <LF> received"
    } else {
        "Error: bare <CR> received"
    };
    Reply::new(550, esc(5, 5, 2), what).closing()
}

/// A recognised command this server does not implement (RFC 5321 4.2.4).
pub fn not_implemented() -> Reply {
    Reply::new(502, esc(5, 5, 1), "Error: command not implemented")
}

/// 501 with a reason: bad argument syntax.
pub fn syntax(what: &'static str) -> Reply {
    Reply::new(501, esc(5, 5, 4), what)
}

/// 501 for an address that does not parse (RFC 3463 X.1.7 / X.1.3).
pub fn bad_sender_syntax() -> Reply {
    Reply::new(501, esc(5, 1, 7), "Bad sender address syntax")
}

pub fn bad_recipient_syntax() -> Reply {
    Reply::new(501, esc(5, 1, 3), "Bad recipient address syntax")
}

/// RFC 5321 4.1.2: a MAIL or RCPT path without its angle brackets, refused
/// unless `strict_rfc821_envelopes = no`.
pub fn path_needs_brackets(syntax: &'static str) -> Reply {
    Reply::new(501, esc(5, 5, 4), syntax)
}

/// RFC 5321 4.1.1.11 / 4.3.2: bad sequence of commands.
pub fn need_helo() -> Reply {
    Reply::new(503, esc(5, 5, 1), "Error: send HELO/EHLO first")
}

pub fn nested_mail() -> Reply {
    Reply::new(503, esc(5, 5, 1), "Error: nested MAIL command")
}

pub fn need_mail() -> Reply {
    Reply::new(503, esc(5, 5, 1), "Error: need MAIL command")
}

pub fn need_rcpt() -> Reply {
    Reply::new(503, esc(5, 5, 1), "Error: need RCPT command")
}

/// RFC 5321 4.1.1.4 / RFC 1869: a parameter this server does not know (555).
pub fn unknown_parameter() -> Reply {
    Reply::new(555, esc(5, 5, 4), "Unsupported parameter")
}

/// A parameter given twice or with a bad value.
pub fn bad_parameter() -> Reply {
    Reply::new(501, esc(5, 5, 4), "Bad parameter value")
}

/// RFC 6531 3.5: a non-ASCII address without the SMTPUTF8 parameter.
pub fn need_smtputf8() -> Reply {
    Reply::new(553, esc(5, 6, 7), "Non-ASCII address requires SMTPUTF8")
}

// ---- Policy --------------------------------------------------------------

/// RFC 1870 6.1: declared SIZE over the limit.
pub fn size_exceeded() -> Reply {
    Reply::new(
        552,
        esc(5, 3, 4),
        "Message size exceeds fixed maximum message size",
    )
}

/// RFC 5321 4.5.3.1.10: too many recipients; the client may go on later.
pub fn too_many_recipients() -> Reply {
    Reply::new(452, esc(4, 5, 3), "Too many recipients")
}

/// A local domain, but nobody of that name.
pub fn no_such_user(addr: &str) -> Reply {
    Reply::new(
        550,
        esc(5, 1, 1),
        format!("<{addr}>: Recipient address rejected: User unknown"),
    )
}

/// A domain we do not serve, from a client not allowed to relay.
pub fn relay_denied(addr: &str) -> Reply {
    Reply::new(554, esc(5, 7, 1), format!("<{addr}>: Relay access denied"))
}

/// The spool's filesystem is (nearly) full (RFC 3463 X.3.1 mail system full).
pub fn no_space() -> Reply {
    Reply::new(452, esc(4, 3, 1), "Insufficient system storage")
}

/// The spool could not write the message for another reason; the client retries.
pub fn local_error() -> Reply {
    Reply::new(451, esc(4, 3, 0), "Local error in processing, try again later")
}

// ---- TLS (RFC 3207) --------------------------------------------------------

/// The go-ahead for the TLS handshake.
pub fn starttls_ready() -> Reply {
    Reply::new(220, esc(2, 0, 0), "Ready to start TLS")
}

/// STARTTLS inside TLS (RFC 3207 4: not offered again after the handshake).
pub fn tls_already_active() -> Reply {
    Reply::new(503, esc(5, 5, 1), "Error: TLS already active")
}

/// RFC 3207 4 and RFC 6409: this listener needs TLS before mail.
pub fn tls_required() -> Reply {
    Reply::new(530, esc(5, 7, 0), "Must issue a STARTTLS command first")
}

/// RFC 8689 4.1: REQUIRETLS asked for on a session without TLS.
pub fn requiretls_needs_tls() -> Reply {
    Reply::new(530, esc(5, 7, 10), "REQUIRETLS needs a TLS session")
}

// ---- AUTH (RFC 4954) -------------------------------------------------------

/// RFC 4954 6: a submission listener needs AUTH before MAIL.
pub fn auth_required() -> Reply {
    Reply::new(530, esc(5, 7, 0), "Authentication required")
}

/// RFC 4954 6: AUTH before TLS, which would send the password in the clear.
pub fn auth_needs_tls() -> Reply {
    Reply::new(
        538,
        esc(5, 7, 11),
        "Encryption required for requested authentication mechanism",
    )
}

/// A server challenge: `334 base64` (RFC 4954 4). No enhanced code.
pub fn auth_challenge(b64: &'static str) -> Reply {
    Reply::new(334, None, b64)
}

pub fn auth_ok() -> Reply {
    Reply::new(235, esc(2, 7, 0), "Authentication successful")
}

/// RFC 4954 6: bad user name or password.
pub fn auth_failed() -> Reply {
    Reply::new(535, esc(5, 7, 8), "Authentication credentials invalid")
}

/// AUTH from an address with too many recent failures (server::auth_guard):
/// refused before any password is checked, and the session closed.
pub fn auth_address_blocked() -> Reply {
    Reply::new(
        421,
        esc(4, 7, 0),
        "Too many failed authentications from your address, try again later",
    )
    .closing()
}

/// RFC 4954 6: 454 4.7.0, temporary authentication failure: the account is
/// under attack and its password was checked too recently to check again.
pub fn auth_account_throttled() -> Reply {
    Reply::new(
        454,
        esc(4, 7, 0),
        "Temporary authentication failure, try again later",
    )
}

/// The client answered a challenge with `*` (RFC 4954 4).
pub fn auth_cancelled() -> Reply {
    Reply::new(501, esc(5, 0, 0), "Authentication cancelled")
}

/// A response that is not base64 or not in the mechanism's format.
pub fn auth_malformed() -> Reply {
    Reply::new(501, esc(5, 5, 2), "Cannot decode authentication response")
}

pub fn auth_mechanism_unknown() -> Reply {
    Reply::new(504, esc(5, 5, 4), "Unrecognized authentication type")
}

/// RFC 4954 4: AUTH once per session, and never inside a transaction.
pub fn auth_already() -> Reply {
    Reply::new(503, esc(5, 5, 1), "Error: already authenticated")
}

pub fn auth_in_transaction() -> Reply {
    Reply::new(
        503,
        esc(5, 5, 1),
        "Error: AUTH not permitted during a mail transaction",
    )
}

/// An authenticated user sending as an address it does not own.
pub fn sender_not_owned(addr: &str) -> Reply {
    Reply::new(
        553,
        esc(5, 7, 1),
        format!("<{addr}>: Sender address rejected: not owned by user"),
    )
}

/// A directory harvest: too many unknown recipients in one session.
pub fn harvest_limit() -> Reply {
    Reply::new(
        421,
        esc(4, 7, 0),
        "Too many unknown recipients, closing connection",
    )
    .closing()
}

// ---- Milters and policy services -----------------------------------------
// Postfix's words for the refusals it makes on a milter's behalf (milter8.c,
// smtpd.c), so that clients and log readers see what they know.

/// A milter answered SMFIR_REJECT.
pub fn milter_rejected() -> Reply {
    Reply::new(550, esc(5, 7, 1), "Command rejected")
}

/// A milter answered SMFIR_TEMPFAIL, or one that failed and
/// `milter_default_action = tempfail`.
pub fn milter_tempfail() -> Reply {
    Reply::new(451, esc(4, 7, 1), "Service unavailable - try again later")
}

/// A milter that failed, with `milter_default_action = reject`.
pub fn milter_unavailable() -> Reply {
    Reply::new(550, esc(5, 5, 0), "Service unavailable")
}

/// A milter asked for something tern cannot carry out (a malformed reply, a
/// header without a name): temporary, the administrator has to look.
pub fn milter_misconfigured() -> Reply {
    Reply::new(
        451,
        esc(4, 3, 5),
        "Server configuration problem - try again later",
    )
}

/// A milter answered SMFIR_SHUTDOWN, or failed with
/// `milter_default_action = shutdown`.
pub fn milter_shutdown() -> Reply {
    Reply::new(421, esc(4, 7, 0), "Server closing connection").closing()
}

/// The greeting when a milter or policy service refused the client at
/// connection time (RFC 5321 3.1: 554 instead of 220, then the client
/// should QUIT). No enhanced code in a greeting (RFC 2034 3).
pub fn not_accepting(hostname: &str) -> Reply {
    Reply::new(554, None, format!("{hostname} ESMTP not accepting connections"))
}

/// The greeting when a milter asked to close the connection at once.
pub fn unavailable_greeting(hostname: &str) -> Reply {
    Reply::new(
        421,
        None,
        format!("{hostname} Service unavailable - try again later"),
    )
    .closing()
}

/// Every command but QUIT after a 554 greeting (RFC 5321 3.1: the server
/// SHOULD answer them 503; Postfix's text).
pub fn access_denied(client: &str) -> Reply {
    Reply::new(503, esc(5, 7, 0), format!("Error: access denied for {client}"))
}

/// A milter's own reply (SMFIR_REPLYCODE, already checked: 4xx or 5xx, the
/// same code on each line) or a policy service's refusal, passed on as
/// given; an enhanced code of the reply's class (X.7.1) when it has none.
/// A 421 closes the connection, as it says it does.
pub fn from_filter(code: u16, status: Option<Status>, lines: Vec<String>) -> Reply {
    let class = u8::try_from(code / 100).unwrap_or(4);
    let mut r = Reply {
        code,
        esc: status.or(esc(class, 7, 1)),
        lines: lines.into_iter().map(Cow::Owned).collect(),
        close: false,
    };
    if r.lines.is_empty() {
        r.lines.push(Cow::Borrowed("Command rejected"));
    }
    if code == 421 {
        r.close = true;
    }
    r
}

// ---- End of data -----------------------------------------------------------

/// A bare CR or LF in the data (the SMTP smuggling family; RFC 5321 2.3.8).
pub fn bare_newline() -> Reply {
    Reply::new(550, esc(5, 6, 0), "Message contains bare CR or LF, refused")
}

/// A NUL octet in the data (issue 16: RFC 5322 text and RFC 6152 8-bit data
/// exclude it; a next hop that drops NULs would see a smuggled end of data).
pub fn nul_in_data() -> Reply {
    Reply::new(550, esc(5, 6, 0), "Message contains NUL characters, refused")
}

/// A text line over 1000 octets (RFC 5321 4.5.3.1.6).
pub fn data_line_too_long() -> Reply {
    Reply::new(
        550,
        esc(5, 6, 0),
        "Message contains a line longer than 1000 octets",
    )
}

/// RFC 5321 6.3: too many Received: headers means a mail loop.
pub fn mail_loop() -> Reply {
    Reply::new(
        554,
        esc(5, 4, 6),
        "Too many Received headers, mail loop suspected",
    )
}

// ---- Mail authentication (issue 20) -----------------------------------------

/// `spf_reject = fail`: `domain` (of the envelope sender or the HELO name)
/// does not authorize the client. RFC 7372 3.2: X.7.23 "SPF validation
/// failed"; at RCPT, for each recipient.
pub fn spf_failed(domain: &str) -> Reply {
    Reply::new(
        550,
        esc(5, 7, 23),
        format!("SPF validation failed: {domain} does not authorize this host"),
    )
}

/// `dmarc_reject = yes`: a DMARC failure of a domain publishing `p=reject`
/// (RFC 7489 7.3 names 5.7.1 for a refusal after DATA).
pub fn dmarc_rejected(domain: &str) -> Reply {
    Reply::new(
        550,
        esc(5, 7, 1),
        format!("Message rejected by the DMARC policy of {domain}"),
    )
}

/// The message should be DKIM-signed and could not be (a key that did not
/// load, a failed read): temporary, never sent unsigned.
pub fn dkim_sign_failed() -> Reply {
    Reply::new(451, esc(4, 3, 0), "DKIM signing failed, try again later")
}

/// BODY=BINARYMIME and the like, which need CHUNKING (RFC 3030).
pub fn body_unsupported() -> Reply {
    Reply::new(555, esc(5, 5, 4), "Unsupported BODY type")
}

impl Reply {
    /// The same reply closing the connection; for the rare case a caller decides it.
    pub fn and_close(self) -> Reply {
        self.closing()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_line_with_esc() {
        assert_eq!(need_mail().to_wire(), "503 5.5.1 Error: need MAIL command\r\n");
    }

    #[test]
    fn multi_line() {
        let r = ehlo(
            "mx.example",
            "client",
            &["PIPELINING".to_owned(), "8BITMIME".to_owned()],
        );
        assert_eq!(
            r.to_wire(),
            "250-mx.example Hello client\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
        );
    }

    #[test]
    fn greeting_has_no_esc() {
        assert_eq!(greeting("h").to_wire(), "220 h ESMTP tern\r\n");
    }

    #[test]
    fn newlines_in_text_cannot_inject() {
        let r = no_such_user("a\r\n250 fake");
        let w = r.to_wire();
        assert_eq!(w.matches("\r\n").count(), 1, "{w}");
    }

    #[test]
    fn long_lines_are_capped() {
        let r = no_such_user(&"x".repeat(2000));
        assert!(r.to_wire().len() <= 512);
    }

    #[test]
    fn display_is_first_line() {
        assert_eq!(queued("ABC").to_string(), "250 2.0.0 Ok: queued as ABC");
    }
}
