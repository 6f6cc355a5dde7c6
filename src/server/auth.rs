//! SMTP AUTH (RFC 4954): the SASL PLAIN (RFC 4616) and LOGIN exchanges as
//! pure functions, the `auth_users` password file and the `sender_map` of
//! addresses each user may send as. Both files are re-read when they change.
//!
//! The session does the I/O (the 334 prompts); this module decides.

use std::collections::HashMap;
use std::sync::Arc;

use base64::prelude::{Engine as _, BASE64_STANDARD};
use sha_crypt::{PasswordVerifier, ShaCrypt};

use crate::config::Config;
use crate::smtp::address::{domain_key, Domain, Mailbox};
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
        // Standard base64 with canonical padding (RFC 4648 4), as RFC 4954 requires:
        // no whitespace inside, no missing '='.
        b64 => BASE64_STANDARD.decode(b64).map_err(|_| SaslError::Malformed),
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

/// `user:hash` lines; `#` comments and blank lines ignored. User names are
/// matched exactly (passwords are not case-folded, and neither are names). A hash
/// in a scheme tern does not accept is logged here, once per load, so that the
/// administrator learns of it before the user does.
fn load_users(text: &str) -> HashMap<String, String> {
    let users: HashMap<String, String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(u, h)| (u.trim().to_owned(), h.trim().to_owned()))
        .collect();
    for (user, hash) in &users {
        if Scheme::of(hash).is_none() {
            log::warn!(
                "auth_users: {user}: {} is not accepted (only SHA-512-crypt $6$, SHA-256-crypt $5$ \
                 and bcrypt $2b$/$2y$/$2a$); this user cannot authenticate",
                Scheme::describe_refused(hash)
            );
        }
    }
    users
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

/// The crypt(3) schemes `auth_users` accepts, each checked by a maintained
/// crate: SHA-crypt by RustCrypto's `sha-crypt`, bcrypt by `bcrypt`. DES and
/// MD5-crypt are refused as too weak to guard a mail relay (MD5-crypt's author
/// withdrew it in 2012), as before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    ShaCrypt,
    Bcrypt,
}

impl Scheme {
    fn of(hash: &str) -> Option<Scheme> {
        if hash.starts_with("$6$") || hash.starts_with("$5$") {
            Some(Scheme::ShaCrypt)
        } else if ["$2b$", "$2y$", "$2a$"].iter().any(|p| hash.starts_with(p)) {
            Some(Scheme::Bcrypt)
        } else {
            None
        }
    }

    /// A refused hash's scheme, in words for the log (never the hash itself).
    fn describe_refused(hash: &str) -> String {
        let id = hash
            .strip_prefix('$')
            .and_then(|h| h.split_once('$'))
            .map(|(id, _)| id);
        match id {
            Some("1") => "MD5-crypt ($1$)".to_owned(),
            Some("y") => "yescrypt ($y$)".to_owned(),
            Some("7") => "scrypt ($7$)".to_owned(),
            Some("gy") => "gost-yescrypt ($gy$)".to_owned(),
            Some(id) if id.len() <= 12 => format!("hash scheme ${id}$"),
            Some(_) => "an unknown hash scheme".to_owned(),
            None if hash.len() == 13 => "DES crypt".to_owned(),
            None if hash.starts_with('_') => "BSDi extended DES crypt".to_owned(),
            None => "not a crypt(3) hash".to_owned(),
        }
    }

    /// Whether `pass` matches `hash` (in constant time, in both crates).
    fn verify(self, pass: &str, hash: &str) -> bool {
        match self {
            Scheme::ShaCrypt => ShaCrypt::default().verify_password(pass.as_bytes(), hash).is_ok(),
            // As crypt(3) does, bcrypt reads the first 72 bytes of a password.
            Scheme::Bcrypt => bcrypt::verify(pass, hash).unwrap_or(false),
        }
    }
}

/// A SHA-512-crypt hash (5000 rounds, as openssl passwd -6 makes) checked when
/// the user is unknown, so that the answer takes as long as for a known one (no
/// user enumeration by timing).
const DUMMY_HASH: &str =
    "$6$tErNdUmMySaLt000$29AbKTDuqQy5v57MjJ6Rd0xjgYGS7F4iky1QzfNpksxs5NGQZ8bqvWLS096CKNpj1.sJhlMwnzQSwEzIrapDZ/";

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
        match hash.as_deref().map(|h| (h, Scheme::of(h))) {
            Some((h, Some(scheme))) => scheme.verify(pass, h),
            Some((_, None)) => {
                log::warn!("auth_users: {user}: hash scheme not accepted (see the log at load)");
                false
            }
            None => {
                let _ = Scheme::ShaCrypt.verify(pass, DUMMY_HASH);
                false
            }
        }
    }

    /// Whether `user` may use `from` as the envelope sender: the addresses
    /// `sender_map` lists for the user, else user@ each local domain.
    pub fn may_send_as(&self, cfg: &Config, user: &str, from: &Mailbox) -> bool {
        let local = from.local().to_lowercase();
        let domain = match from.domain() {
            // A UTF-8 domain as its A-labels, as `sender_map` entries are compared.
            Domain::Name(n) => {
                domain_key(n).unwrap_or_else(|| n.strip_suffix('.').unwrap_or(n).to_lowercase())
            }
            // An address literal is nobody's address.
            Domain::Literal(_) | Domain::General(_) => return false,
        };
        let map = self.senders.as_ref().and_then(Cached::get);
        if let Some(list) = map.as_ref().and_then(|m| m.get(user)) {
            let same_domain = |d: &str| domain_key(d).is_some_and(|d| d == domain);
            return list.iter().any(|allowed| match allowed.strip_prefix('@') {
                Some(d) => same_domain(d),
                None => allowed
                    .rsplit_once('@')
                    .is_some_and(|(l, d)| l == local && same_domain(d)),
            });
        }
        local == user.to_lowercase() && cfg.local.is_local_domain(&domain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_responses() {
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
            assert_eq!(decode_response(enc), Ok(dec.as_bytes().to_vec()), "{enc}");
        }
        for bad in [
            "Zg", "Zg=", "Z===", "Zg==Zg==", "Zm 9v", "Zm9-", "====", "Zm=v",
            // RFC 4648 3.5: non-zero pad bits may be refused, and are.
            "Zh==",
        ] {
            assert_eq!(decode_response(bad), Err(SaslError::Malformed), "{bad:?}");
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
            decode_response(LOGIN_USER_PROMPT).as_deref(),
            Ok(&b"Username:"[..])
        );
        assert_eq!(
            decode_response(LOGIN_PASS_PROMPT).as_deref(),
            Ok(&b"Password:"[..])
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

    /// tests/fixtures/auth_users: hashes of "correct horse" made by openssl and
    /// libxcrypt (python's crypt), one user per format.
    const FIXTURES: &str = include_str!("../../tests/fixtures/auth_users");
    const FIXTURE_PASSWORD: &str = "correct horse";

    #[test]
    fn every_accepted_format_from_other_tools() {
        let (_d, _c, a) = setup(FIXTURES, None);
        for user in [
            "sha512",
            "sha256",
            "sha512rounds",
            "sha256rounds",
            "bcrypt2b",
            "bcrypt2y",
            "bcrypt2a",
        ] {
            assert!(a.check(user, FIXTURE_PASSWORD), "{user}");
            assert!(!a.check(user, "correct horsE"), "{user}");
            assert!(!a.check(user, ""), "{user}");
        }
        // Refused even with the right password: weak schemes.
        assert!(!a.check("md5", FIXTURE_PASSWORD));
        assert!(!a.check("des", FIXTURE_PASSWORD));
        assert!(!a.check("nobody", FIXTURE_PASSWORD));
    }

    #[test]
    fn schemes() {
        let users = load_users(FIXTURES);
        let scheme = |u: &str| Scheme::of(&users[u]);
        assert_eq!(scheme("sha512"), Some(Scheme::ShaCrypt));
        assert_eq!(scheme("sha256rounds"), Some(Scheme::ShaCrypt));
        assert_eq!(scheme("bcrypt2y"), Some(Scheme::Bcrypt));
        assert_eq!(scheme("md5"), None);
        assert_eq!(scheme("des"), None);
        assert_eq!(Scheme::describe_refused(&users["md5"]), "MD5-crypt ($1$)");
        assert_eq!(Scheme::describe_refused(&users["des"]), "DES crypt");
        assert_eq!(Scheme::describe_refused("$y$j9T$abc$def"), "yescrypt ($y$)");
        assert_eq!(Scheme::describe_refused("plaintext"), "not a crypt(3) hash");
        // A damaged hash of an accepted scheme fails, it does not panic.
        for bad in [
            "$6$",
            "$6$salt",
            "$6$rounds=x$salt$hash",
            "$2b$05$short",
            "$2y$99$abcdefghijklmnopqrstuuHNbAKRhpaujgo33bRWs.NLUTJO3lOy2",
        ] {
            let s = Scheme::of(bad).unwrap();
            assert!(!s.verify("x", bad), "{bad}");
        }
        assert!(Scheme::ShaCrypt.verify("tern-dummy", DUMMY_HASH));
    }

    #[test]
    fn check_passwords() {
        let sha = "$6$tErNtEsTsAlT0001$U.UdS5Xt4jO2fSBoiUq8U4J7ZLwc94gy3Ce7whlgz80ohgfQpuvRLkDCtDg0pnIEfDJhhbGA2Q8EMEO9oqDjm/";
        let bcrypt = "$2b$05$TernTestSaltTernTestSOYOokppVe2sLS1eQiPUTQqrQtNeF48hu";
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
