//! The SMTP command parser: one line in (without its CRLF), a `Command` out,
//! or the reply that explains why not. No I/O, no policy, no session state.

use super::address::{self, AddrError, ForwardPath, PathSyntax, ReversePath};
use super::notify::Notify;
use super::reply::{self, Reply};
use super::xtext;

/// RFC 5321 4.5.3.1.4: a command line is at most 512 octets including CRLF.
pub const MAX_COMMAND_LINE: usize = 512;

/// BODY= of RFC 6152 and RFC 3030.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    SevenBit,
    EightBitMime,
    BinaryMime,
}

/// RET= of RFC 3461 4.3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ret {
    Full,
    Hdrs,
}

/// The ESMTP parameters of MAIL FROM that tern knows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailParams {
    /// RFC 1870 SIZE=.
    pub size: Option<u64>,
    pub body: Option<Body>,
    /// RFC 6531 SMTPUTF8.
    pub smtputf8: bool,
    /// RFC 3461 RET= and ENVID= (decoded from xtext).
    pub ret: Option<Ret>,
    pub envid: Option<String>,
    /// RFC 4954 AUTH= (decoded from xtext; `<>` kept as is).
    pub auth: Option<String>,
    /// RFC 8689 REQUIRETLS.
    pub requiretls: bool,
}

/// The ESMTP parameters of RCPT TO that tern knows (RFC 3461 4.1, 4.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RcptParams {
    /// NOTIFY=.
    pub notify: Option<Notify>,
    /// ORCPT= as `addr-type;address`, the address decoded from xtext.
    pub orcpt: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Ehlo(String),
    Helo(String),
    Mail(ReversePath, MailParams),
    Rcpt(ForwardPath, RcptParams),
    Data,
    /// RFC 3030 2: `BDAT chunk-size [LAST]`.
    Bdat {
        size: u64,
        last: bool,
    },
    Rset,
    Noop,
    Quit,
    Vrfy(String),
    Expn(String),
    Help,
    StartTls,
    Auth(String),
    /// A line from a web client; answered and closed.
    Http,
}

/// Parse one command line (CRLF already removed), by RFC 5321's grammar.
pub fn parse(line: &[u8]) -> Result<Command, Reply> {
    parse_with(line, PathSyntax::Strict)
}

/// Parse one command line, reading MAIL and RCPT paths by `paths`.
pub fn parse_with(line: &[u8], paths: PathSyntax) -> Result<Command, Reply> {
    // RFC 6531 allows UTF-8 in commands; anything else is not a command.
    let line = std::str::from_utf8(line).map_err(|_| reply::unknown_command())?;
    let (verb, arg) = match line.split_once(' ') {
        Some((v, a)) => (v, a),
        None => (line, ""),
    };
    let upper = verb.to_ascii_uppercase();
    match upper.as_str() {
        "EHLO" => Ok(Command::Ehlo(hello_arg(arg)?)),
        "HELO" => Ok(Command::Helo(hello_arg(arg)?)),
        "MAIL" => parse_mail(arg, paths),
        "RCPT" => parse_rcpt(arg, paths),
        "DATA" => no_arg(arg, Command::Data),
        "BDAT" => parse_bdat(arg),
        "RSET" => no_arg(arg, Command::Rset),
        // RFC 5321 4.1.1.9: NOOP may carry a string, which is ignored.
        "NOOP" => Ok(Command::Noop),
        "QUIT" => no_arg(arg, Command::Quit),
        "VRFY" => required(arg).map(Command::Vrfy),
        "EXPN" => required(arg).map(Command::Expn),
        "HELP" => Ok(Command::Help),
        "STARTTLS" => no_arg(arg, Command::StartTls),
        "AUTH" => required(arg).map(Command::Auth),
        "GET" | "POST" | "HEAD" | "PUT" | "CONNECT" | "OPTIONS" => Ok(Command::Http),
        _ => Err(reply::unknown_command()),
    }
}

/// RFC 3030 2: bdat-cmd = "BDAT" SP chunk-size [ SP end-marker ] CR LF,
/// chunk-size = 1*DIGIT, end-marker = "LAST".
fn parse_bdat(arg: &str) -> Result<Command, Reply> {
    let mut words = arg.split(' ');
    let size = words
        .next()
        .filter(|n| !n.is_empty() && n.len() <= 20 && n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or_else(reply::bdat_syntax)?;
    let last = match words.next() {
        None => false,
        Some(w) if w.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return Err(reply::bdat_syntax()),
    };
    if words.next().is_some() {
        return Err(reply::bdat_syntax());
    }
    Ok(Command::Bdat { size, last })
}

fn no_arg(arg: &str, cmd: Command) -> Result<Command, Reply> {
    if arg.trim().is_empty() {
        Ok(cmd)
    } else {
        Err(reply::syntax("Syntax error, no parameters allowed"))
    }
}

fn required(arg: &str) -> Result<String, Reply> {
    let a = arg.trim();
    if a.is_empty() {
        Err(reply::syntax("Syntax error, argument required"))
    } else {
        Ok(a.to_owned())
    }
}

/// EHLO/HELO take a domain or address literal (RFC 5321 4.1.1.1). Like Postfix
/// by default, any printable word is accepted: rejecting odd HELO names loses
/// mail from misconfigured but honest clients and stops no spammer.
fn hello_arg(arg: &str) -> Result<String, Reply> {
    let a = arg.trim();
    if a.is_empty() {
        return Err(reply::syntax("Syntax: EHLO hostname"));
    }
    if a.chars().any(|c| c.is_control()) {
        return Err(reply::syntax("Syntax: EHLO hostname"));
    }
    Ok(a.to_owned())
}

/// `FROM:<path> params`; many clients put a space after the colon, which
/// Postfix and Exim accept, so tern does too.
fn strip_keyword<'a>(arg: &'a str, kw: &str) -> Option<&'a str> {
    let head = arg.get(..kw.len())?;
    if !head.eq_ignore_ascii_case(kw) {
        return None;
    }
    Some(arg.get(kw.len()..)?.trim_start_matches(' '))
}

fn parse_mail(arg: &str, paths: PathSyntax) -> Result<Command, Reply> {
    let rest = strip_keyword(arg, "FROM:").ok_or_else(|| reply::syntax("Syntax: MAIL FROM:<address>"))?;
    let (path, params) = address::parse_reverse_path(rest, paths).map_err(|e| addr_reply(e, true))?;
    let mut p = MailParams::default();
    for (key, value) in split_params(params)? {
        let dup = match key.as_str() {
            "SIZE" => {
                // RFC 1870: size-value = 1*20DIGIT
                let v =
                    value.filter(|v| !v.is_empty() && v.len() <= 20 && v.bytes().all(|b| b.is_ascii_digit()));
                let n = v.and_then(|v| v.parse::<u64>().ok()).unwrap_or(u64::MAX);
                p.size.replace(n).is_some()
            }
            "BODY" => {
                let b = match value.map(str::to_ascii_uppercase).as_deref() {
                    Some("7BIT") => Body::SevenBit,
                    Some("8BITMIME") => Body::EightBitMime,
                    Some("BINARYMIME") => Body::BinaryMime,
                    _ => return Err(reply::bad_parameter()),
                };
                p.body.replace(b).is_some()
            }
            "SMTPUTF8" => {
                if value.is_some() {
                    return Err(reply::bad_parameter());
                }
                std::mem::replace(&mut p.smtputf8, true)
            }
            // RFC 8689 4: a keyword without a value.
            "REQUIRETLS" => {
                if value.is_some() {
                    return Err(reply::bad_parameter());
                }
                std::mem::replace(&mut p.requiretls, true)
            }
            "RET" => {
                let r = match value.map(str::to_ascii_uppercase).as_deref() {
                    Some("FULL") => Ret::Full,
                    Some("HDRS") => Ret::Hdrs,
                    _ => return Err(reply::bad_parameter()),
                };
                p.ret.replace(r).is_some()
            }
            "ENVID" => {
                // RFC 3461 4.4: at most 100 characters.
                let v = value
                    .filter(|v| v.len() <= 100)
                    .and_then(|v| xtext::decode(v).ok())
                    .ok_or_else(reply::bad_parameter)?;
                p.envid.replace(v).is_some()
            }
            "AUTH" => {
                let v = value
                    .and_then(|v| xtext::decode(v).ok())
                    .ok_or_else(reply::bad_parameter)?;
                p.auth.replace(v).is_some()
            }
            _ => return Err(reply::unknown_parameter()),
        };
        if dup {
            return Err(reply::bad_parameter());
        }
    }
    Ok(Command::Mail(path, p))
}

fn parse_rcpt(arg: &str, paths: PathSyntax) -> Result<Command, Reply> {
    let rest = strip_keyword(arg, "TO:").ok_or_else(|| reply::syntax("Syntax: RCPT TO:<address>"))?;
    let (path, params) = address::parse_forward_path(rest, paths).map_err(|e| addr_reply(e, false))?;
    let mut p = RcptParams::default();
    for (key, value) in split_params(params)? {
        let dup = match key.as_str() {
            "NOTIFY" => {
                // RFC 3461 4.1: NEVER alone, or any of SUCCESS, FAILURE, DELAY.
                let v = value.and_then(Notify::parse).ok_or_else(reply::bad_parameter)?;
                p.notify.replace(v).is_some()
            }
            "ORCPT" => {
                // RFC 3461 4.2: addr-type ";" xtext
                let v = value.ok_or_else(reply::bad_parameter)?;
                let (kind, addr) = v.split_once(';').ok_or_else(reply::bad_parameter)?;
                let addr = xtext::decode(addr).map_err(|_| reply::bad_parameter())?;
                if kind.is_empty() || !kind.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                    return Err(reply::bad_parameter());
                }
                p.orcpt.replace(format!("{kind};{addr}")).is_some()
            }
            _ => return Err(reply::unknown_parameter()),
        };
        if dup {
            return Err(reply::bad_parameter());
        }
    }
    Ok(Command::Rcpt(path, p))
}

fn addr_reply(e: AddrError, sender: bool) -> Reply {
    match (e, sender) {
        (AddrError::NoBrackets, true) => reply::path_needs_brackets("Syntax: MAIL FROM:<address>"),
        (AddrError::NoBrackets, false) => reply::path_needs_brackets("Syntax: RCPT TO:<address>"),
        (_, true) => reply::bad_sender_syntax(),
        (_, false) => reply::bad_recipient_syntax(),
    }
}

/// RFC 5321 4.1.2: Mail-parameters = esmtp-param *(SP esmtp-param);
/// esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-"). Keywords uppercased.
fn split_params(s: &str) -> Result<Vec<(String, Option<&str>)>, Reply> {
    let mut out = Vec::new();
    for word in s.split(' ').filter(|w| !w.is_empty()) {
        let (k, v) = match word.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (word, None),
        };
        let kw_ok = k.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        // esmtp-value = 1*(%d33-60 / %d62-126), plus UTF-8 under SMTPUTF8.
        let v_ok = v.is_none_or(|v| !v.is_empty() && v.chars().all(|c| c != '=' && (c > ' ' && c != '\x7f')));
        if !kw_ok || !v_ok {
            return Err(reply::syntax("Syntax error in parameters"));
        }
        out.push((k.to_ascii_uppercase(), v));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(r: Result<Command, Reply>) -> u16 {
        match r {
            Ok(_) => 0,
            Err(r) => r.code,
        }
    }

    #[test]
    fn verbs_any_case() {
        assert_eq!(
            parse(b"ehlo client.example"),
            Ok(Command::Ehlo("client.example".into()))
        );
        assert_eq!(parse(b"HeLo x"), Ok(Command::Helo("x".into())));
        assert_eq!(parse(b"data"), Ok(Command::Data));
        assert_eq!(parse(b"RSET"), Ok(Command::Rset));
        assert_eq!(parse(b"NOOP anything at all"), Ok(Command::Noop));
        assert_eq!(parse(b"quit"), Ok(Command::Quit));
        assert_eq!(parse(b"HELP"), Ok(Command::Help));
        assert_eq!(parse(b"HELP MAIL"), Ok(Command::Help));
        assert_eq!(parse(b"VRFY root"), Ok(Command::Vrfy("root".into())));
        assert_eq!(parse(b"STARTTLS"), Ok(Command::StartTls));
        assert_eq!(parse(b"GET / HTTP/1.1"), Ok(Command::Http));
    }

    #[test]
    fn errors_and_codes() {
        let table: &[(&[u8], u16)] = &[
            (b"", 500),
            (b"FOO", 500),
            (b"\xff\xfe", 500),
            (b"EHLO", 501),
            (b"EHLO ", 501),
            (b"DATA x", 501),
            (b"QUIT now", 501),
            (b"VRFY", 501),
            (b"MAIL", 501),
            (b"MAIL TO:<a@b>", 501),
            (b"MAIL FROM:", 501),
            (b"MAIL FROM:<a@b", 501),
            (b"MAIL FROM:<a@b> FOO=bar", 555),
            (b"MAIL FROM:<a@b> SIZE=x", 0),
            (b"MAIL FROM:<a@b> BODY=9BIT", 501),
            (b"MAIL FROM:<a@b> SMTPUTF8=yes", 501),
            (b"MAIL FROM:<a@b> REQUIRETLS=yes", 501),
            (b"MAIL FROM:<a@b> REQUIRETLS REQUIRETLS", 501),
            (b"MAIL FROM:<a@b> SIZE=1 SIZE=2", 501),
            (b"MAIL FROM:<a@b> =x", 501),
            // xtext (RFC 3461 4): upper case hex only, no raw '+'.
            (b"MAIL FROM:<a@b> ENVID=a+e9", 501),
            (b"MAIL FROM:<a@b> ENVID=a+", 501),
            (b"RCPT TO:<a@b> ORCPT=rfc822;a+40b", 0),
            (b"RCPT TO:<a@b> ORCPT=rfc822;a+4b", 501),
            (b"RCPT TO:<>", 501),
            (b"RCPT TO:<a@b> NOTIFY=NEVER,SUCCESS", 501),
            (b"RCPT TO:<a@b> NOTIFY=SOMETIMES", 501),
            (b"RCPT TO:<a@b> ORCPT=rfc822", 501),
            (b"RCPT TO:<a@b> XYZ", 555),
        ];
        for (line, want) in table {
            assert_eq!(code(parse(line)), *want, "{}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn mail_params() {
        let Ok(Command::Mail(path, p)) =
            parse(b"MAIL FROM:<a@b.example> size=1000 BODY=8bitmime SMTPUTF8 RET=HDRS ENVID=x+2By")
        else {
            panic!("parse failed");
        };
        assert_eq!(path.to_string(), "a@b.example");
        assert_eq!(p.size, Some(1000));
        assert_eq!(p.body, Some(Body::EightBitMime));
        assert!(p.smtputf8);
        assert_eq!(p.ret, Some(Ret::Hdrs));
        assert_eq!(p.envid.as_deref(), Some("x+y"));
        assert!(!p.requiretls);
        let Ok(Command::Mail(_, p)) = parse(b"MAIL FROM:<a@b.example> requiretls") else {
            panic!("parse failed");
        };
        assert!(p.requiretls);
    }

    #[test]
    fn paths_need_brackets_unless_lenient() {
        for line in [
            &b"MAIL FROM:alice@example.test"[..],
            b"RCPT TO:bob@example.test",
            b"RCPT TO:postmaster",
        ] {
            let r = parse(line).unwrap_err();
            assert_eq!((r.code, r.esc), (501, reply::path_needs_brackets("").esc));
            assert!(parse_with(line, PathSyntax::Lenient).is_ok());
        }
        assert_eq!(
            parse_with(b"MAIL FROM:a@b.example SIZE=5", PathSyntax::Lenient).map(|c| match c {
                Command::Mail(p, params) => (p.to_string(), params.size),
                _ => (String::new(), None),
            }),
            Ok(("a@b.example".to_owned(), Some(5)))
        );
    }

    #[test]
    fn mail_tolerates_space_after_colon() {
        assert!(matches!(
            parse(b"MAIL FROM: <a@b.example>"),
            Ok(Command::Mail(..))
        ));
        assert!(matches!(
            parse(b"mail from:<>"),
            Ok(Command::Mail(ReversePath::Null, _))
        ));
    }

    #[test]
    fn oversized_size_is_huge_not_error() {
        let Ok(Command::Mail(_, p)) = parse(b"MAIL FROM:<a@b> SIZE=999999999999999999999") else {
            panic!("parse failed");
        };
        assert_eq!(p.size, Some(u64::MAX));
    }

    #[test]
    fn rcpt_params() {
        let Ok(Command::Rcpt(path, p)) =
            parse(b"RCPT TO:<u@x.example> NOTIFY=success,delay ORCPT=rfc822;u+40x.example")
        else {
            panic!("parse failed");
        };
        assert_eq!(path.to_string(), "u@x.example");
        assert_eq!(p.notify.map(|n| n.to_string()).as_deref(), Some("SUCCESS,DELAY"));
        assert_eq!(p.orcpt.as_deref(), Some("rfc822;u@x.example"));
    }
}
