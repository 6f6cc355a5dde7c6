//! SMTP AUTH (RFC 4954): the SASL PLAIN (RFC 4616) and LOGIN exchanges as
//! pure functions, the `auth_users` password file and the `sender_map` of
//! addresses each user may send as. Both files are re-read when they change.
//!
//! The session does the I/O (the 334 prompts); this module decides.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use crate::config::Config;
use crate::smtp::address::{Domain, Mailbox};
use crate::tables::Cached;

/// The mechanisms offered, in the order of the EHLO line.
pub const MECHANISMS: &str = "PLAIN LOGIN";

/// RFC 4954 4: a line of the exchange may be up to 12288 octets.
pub const MAX_AUTH_LINE: usize = 12288;

/// The LOGIN prompts: base64 of "Username:" and "Password:".
pub const LOGIN_USER_PROMPT: &str = "VXNlcm5hbWU6";
pub const LOGIN_PASS_PROMPT: &str = "UGFzc3dvcmQ6";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    Login,
}

impl Mechanism {
    pub fn parse(s: &str) -> Option<Mechanism> {
        if s.eq_ignore_ascii_case("PLAIN") {
            Some(Mechanism::Plain)
        } else if s.eq_ignore_ascii_case("LOGIN") {
            Some(Mechanism::Login)
        } else {
            None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
        }
    }
}

/// Why a client response could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslError {
    /// The client sent `*` (RFC 4954 4).
    Cancelled,
    /// Not base64, or not the mechanism's format.
    Malformed,
}

/// Decode one client response line: `*` cancels, `=` is an empty response
/// (RFC 4954 4), anything else must be base64.
pub fn decode_response(line: &str) -> Result<Vec<u8>, SaslError> {
    match line.trim() {
        "*" => Err(SaslError::Cancelled),
        "=" => Ok(Vec::new()),
        b64 => base64_decode(b64).ok_or(SaslError::Malformed),
    }
}

/// RFC 4616 2: `[authzid] NUL authcid NUL passwd`. An authorization identity
/// other than the user itself is refused: tern has no proxy authorization.
pub fn parse_plain(msg: &[u8]) -> Result<(String, String), SaslError> {
    let mut parts = msg.split(|&b| b == 0);
    let (Some(authz), Some(user), Some(pass), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::Malformed);
    };
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| SaslError::Malformed);
    let (authz, user, pass) = (text(authz)?, text(user)?, text(pass)?);
    if user.is_empty() || (!authz.is_empty() && authz != user) {
        return Err(SaslError::Malformed);
    }
    Ok((user, pass))
}

/// The text of one LOGIN response (user name or password).
pub fn parse_login_field(msg: &[u8]) -> Result<String, SaslError> {
    String::from_utf8(msg.to_vec()).map_err(|_| SaslError::Malformed)
}

/// Standard base64 with padding (RFC 4648 4), as RFC 4954 requires; None
/// for anything else, including whitespace inside.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let bytes = s.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    let chunks = bytes.chunks(4);
    let last = chunks.len().saturating_sub(1);
    for (i, chunk) in chunks.enumerate() {
        let &[a, b, c, d] = chunk else { return None };
        let pad = match (c, d) {
            (b'=', b'=') => 2,
            (_, b'=') => 1,
            _ => 0,
        };
        if pad > 0 && i != last {
            return None;
        }
        let n = (val(a)? << 18)
            | (val(b)? << 12)
            | (if pad >= 2 { 0 } else { val(c)? << 6 })
            | (if pad >= 1 { 0 } else { val(d)? });
        out.push((n >> 16) as u8);
        if pad < 2 {
            out.push((n >> 8) as u8);
        }
        if pad < 1 {
            out.push(n as u8);
        }
    }
    Some(out)
}

/// `user:hash` lines; `#` comments and blank lines ignored. User names are
/// matched exactly (passwords are not case-folded, and neither are names).
fn load_users(text: &str) -> HashMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(u, h)| (u.trim().to_owned(), h.trim().to_owned()))
        .collect()
}

/// `user: address, @domain` lines: the senders each user may use.
fn load_senders(text: &str) -> HashMap<String, Vec<String>> {
    let mut map: HashMap<String, Vec<String>> = HashMap::new();
    for l in text.lines().map(str::trim) {
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let Some((user, list)) = l.split_once(':') else {
            continue;
        };
        let entry = map.entry(user.trim().to_owned()).or_default();
        entry.extend(
            list.split([',', ' ', '\t'])
                .filter(|s| !s.is_empty())
                .map(str::to_lowercase),
        );
    }
    map
}

/// Hash schemes accepted in `auth_users`: strong crypt(3) formats only. DES
/// and MD5 crypt are refused even though the crate can check them.
fn strong_hash(hash: &str) -> bool {
    ["$6$", "$5$", "$2b$", "$2y$", "$2a$"]
        .iter()
        .any(|p| hash.starts_with(p))
}

/// A SHA-512-crypt hash checked when the user is unknown, so that the answer
/// takes as long as for a known one (no user enumeration by timing).
static DUMMY_HASH: LazyLock<String> =
    LazyLock::new(|| pwhash::sha512_crypt::hash("tern-dummy").unwrap_or_default());

/// The AUTH tables of one daemon.
pub struct Auth {
    users: Option<Cached<HashMap<String, String>>>,
    senders: Option<Cached<HashMap<String, Vec<String>>>>,
}

impl Auth {
    pub fn new(cfg: &Config) -> Auth {
        Auth {
            users: cfg.auth.users.clone().map(|p| Cached::new(p, load_users)),
            senders: cfg.auth.sender_map.clone().map(|p| Cached::new(p, load_senders)),
        }
    }

    /// Whether AUTH is configured at all.
    pub fn enabled(&self) -> bool {
        self.users.is_some()
    }

    /// Check a user name and password against the current `auth_users` file.
    pub fn check(&self, user: &str, pass: &str) -> bool {
        let table: Option<Arc<HashMap<String, String>>> = self.users.as_ref().and_then(Cached::get);
        let hash = table.as_ref().and_then(|t| t.get(user).cloned());
        match hash {
            Some(h) if strong_hash(&h) => pwhash::unix::verify(pass, &h),
            Some(h) => {
                log::warn!("auth_users: {user}: unsupported or weak hash scheme {:.4}", h);
                false
            }
            None => {
                let _ = pwhash::unix::verify(pass, &DUMMY_HASH);
                false
            }
        }
    }

    /// Whether `user` may use `from` as the envelope sender: the addresses
    /// `sender_map` lists for the user, else user@ each local domain.
    pub fn may_send_as(&self, cfg: &Config, user: &str, from: &Mailbox) -> bool {
        let local = from.local().to_lowercase();
        let domain = match from.domain() {
            Domain::Name(n) => n.strip_suffix('.').unwrap_or(n).to_lowercase(),
            // An address literal is nobody's address.
            Domain::Literal(_) | Domain::General(_) => return false,
        };
        let map = self.senders.as_ref().and_then(Cached::get);
        if let Some(list) = map.as_ref().and_then(|m| m.get(user)) {
            let addr = format!("{local}@{domain}");
            return list.iter().any(|allowed| match allowed.strip_prefix('@') {
                Some(d) => d.strip_suffix('.').unwrap_or(d) == domain,
                None => *allowed == addr,
            });
        }
        local == user.to_lowercase() && cfg.local.is_local_domain(&domain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_vectors() {
        // RFC 4648 10.
        for (enc, dec) in [
            ("", ""),
            ("Zg==", "f"),
            ("Zm8=", "fo"),
            ("Zm9v", "foo"),
            ("Zm9vYg==", "foob"),
            ("Zm9vYmE=", "fooba"),
            ("Zm9vYmFy", "foobar"),
        ] {
            assert_eq!(base64_decode(enc).as_deref(), Some(dec.as_bytes()), "{enc}");
        }
        for bad in [
            "Zg", "Zg=", "Z===", "Zg==Zg==", "Zm 9v", "Zm9v\n", "Zm9-", "====", "Zm=v",
        ] {
            assert_eq!(base64_decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn responses() {
        assert_eq!(decode_response("*"), Err(SaslError::Cancelled));
        assert_eq!(decode_response("="), Ok(Vec::new()));
        assert_eq!(decode_response("Zm9v"), Ok(b"foo".to_vec()));
        assert_eq!(decode_response("!!"), Err(SaslError::Malformed));
    }

    #[test]
    fn plain() {
        let ok = |m: &[u8]| parse_plain(m);
        assert_eq!(ok(b"\0alice\0pw"), Ok(("alice".into(), "pw".into())));
        assert_eq!(ok(b"alice\0alice\0pw"), Ok(("alice".into(), "pw".into())));
        assert_eq!(ok(b"\0alice\0"), Ok(("alice".into(), String::new())));
        assert_eq!(ok(b"bob\0alice\0pw"), Err(SaslError::Malformed));
        assert_eq!(ok(b"\0\0pw"), Err(SaslError::Malformed));
        assert_eq!(ok(b"alice\0pw"), Err(SaslError::Malformed));
        assert_eq!(ok(b"\0a\0b\0c"), Err(SaslError::Malformed));
        assert_eq!(ok(b"\0a\xff\0b"), Err(SaslError::Malformed));
        assert_eq!(ok(b""), Err(SaslError::Malformed));
    }

    #[test]
    fn mechanisms() {
        assert_eq!(Mechanism::parse("plain"), Some(Mechanism::Plain));
        assert_eq!(Mechanism::parse("LOGIN"), Some(Mechanism::Login));
        assert_eq!(Mechanism::parse("CRAM-MD5"), None);
        assert_eq!(
            base64_decode(LOGIN_USER_PROMPT).as_deref(),
            Some(&b"Username:"[..])
        );
        assert_eq!(
            base64_decode(LOGIN_PASS_PROMPT).as_deref(),
            Some(&b"Password:"[..])
        );
    }

    fn setup(users: &str, senders: Option<&str>) -> (tempfile::TempDir, Config, Auth) {
        let dir = tempfile::tempdir().unwrap();
        let u = dir.path().join("users");
        std::fs::write(&u, users).unwrap();
        let mut cfg = Config::default();
        cfg.local.domains = vec!["example.test".into()];
        cfg.auth.users = Some(u);
        if let Some(s) = senders {
            let p = dir.path().join("senders");
            std::fs::write(&p, s).unwrap();
            cfg.auth.sender_map = Some(p);
        }
        let a = Auth::new(&cfg);
        (dir, cfg, a)
    }

    #[test]
    fn check_passwords() {
        let sha = pwhash::sha512_crypt::hash("secret").unwrap();
        let bcrypt = pwhash::bcrypt::hash("hunter2").unwrap();
        let md5 = "$1$saltsalt$qjXMvbEw8oaL.CzflDugX.";
        let text = format!("# users\nalice:{sha}\nbob:{bcrypt}\n\nmallory:{md5}\n");
        let (_d, _c, a) = setup(&text, None);
        assert!(a.enabled());
        assert!(a.check("alice", "secret"));
        assert!(!a.check("alice", "Secret"));
        assert!(!a.check("Alice", "secret"));
        assert!(a.check("bob", "hunter2"));
        assert!(!a.check("bob", "secret"));
        assert!(!a.check("mallory", "weak"));
        assert!(!a.check("nobody", "secret"));
    }

    #[test]
    fn sender_ownership() {
        let mb = |s: &str| Mailbox::parse(s).unwrap();
        let (_d, cfg, a) = setup("", None);
        assert!(a.may_send_as(&cfg, "alice", &mb("alice@example.test")));
        assert!(a.may_send_as(&cfg, "alice", &mb("Alice@Example.TEST.")));
        assert!(!a.may_send_as(&cfg, "alice", &mb("bob@example.test")));
        assert!(!a.may_send_as(&cfg, "alice", &mb("alice@other.test")));
        assert!(!a.may_send_as(&cfg, "alice", &mb("alice@[127.0.0.1]")));
        let (_d, cfg, a) = setup("", Some("alice: ann@other.test, @alice.test\n"));
        assert!(a.may_send_as(&cfg, "alice", &mb("ann@other.test")));
        assert!(a.may_send_as(&cfg, "alice", &mb("x@alice.test")));
        assert!(!a.may_send_as(&cfg, "alice", &mb("alice@example.test")));
        assert!(a.may_send_as(&cfg, "bob", &mb("bob@example.test")));
    }
}
