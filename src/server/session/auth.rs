//! AUTH (RFC 4954) inside the session: the SASL exchange and its limits. The
//! mechanisms and the password check are `server::auth`'s.

use super::{is_timeout, Hangup, Session};
use crate::maillog;
use crate::server::auth::{self, Mechanism, SaslError};
use crate::server::conn::{self, Line};
use crate::smtp::reply::{self, Reply};

/// Failed AUTH attempts before the session is closed.
const MAX_AUTH_FAILURES: u32 = 3;

impl Session<'_> {
    /// The SASL mechanism and user of an authenticated session, for the log.
    pub(super) fn sasl(&self) -> Option<(&str, &str)> {
        Some((self.sasl_method?, self.user.as_deref()?))
    }

    /// Whether AUTH is offered now: configured, and only inside TLS.
    pub(super) fn auth_offered(&self) -> bool {
        self.ctx.auth.enabled() && self.tls.is_some()
    }

    /// RFC 4954: AUTH mechanism [initial-response], then 334 challenges.
    pub(super) fn auth(&mut self, arg: &str) -> Result<Reply, Hangup> {
        if !self.ctx.auth.enabled() {
            return Ok(reply::not_implemented());
        }
        if self.tls.is_none() {
            return Ok(reply::auth_needs_tls());
        }
        if self.helo.is_none() {
            return Ok(reply::need_helo());
        }
        if self.user.is_some() {
            return Ok(reply::auth_already());
        }
        if self.tx.is_some() {
            return Ok(reply::auth_in_transaction());
        }
        let mut words = arg.split_whitespace();
        let Some(mech) = words.next().and_then(Mechanism::parse) else {
            return Ok(reply::auth_mechanism_unknown());
        };
        let initial = words.next().map(str::to_owned);
        if words.next().is_some() {
            return Ok(reply::syntax("Syntax: AUTH mechanism [initial-response]"));
        }
        let creds = match mech {
            Mechanism::Plain => self.sasl_step(initial, "")?.and_then(|m| auth::parse_plain(&m)),
            Mechanism::Login => {
                let user = self
                    .sasl_step(initial, auth::LOGIN_USER_PROMPT)?
                    .and_then(|m| auth::parse_login_field(&m));
                match user {
                    Ok(u) => self
                        .sasl_step(None, auth::LOGIN_PASS_PROMPT)?
                        .and_then(|m| auth::parse_login_field(&m))
                        .map(|p| (u, p)),
                    Err(e) => Err(e),
                }
            }
        };
        let (user, pass) = match creds {
            Ok(c) => c,
            Err(SaslError::Cancelled) => return Ok(reply::auth_cancelled()),
            Err(SaslError::Malformed) => return Ok(reply::auth_malformed()),
        };
        if self.ctx.auth.check(&user, &pass) {
            maillog::auth_ok(self.peer, mech.name(), &user);
            self.meter.auth(true);
            self.user = Some(user);
            self.sasl_method = Some(mech.name());
            return Ok(reply::auth_ok());
        }
        self.auth_failures += 1;
        maillog::auth_failed(self.peer, mech.name(), &user);
        self.meter.auth(false);
        // Slow down guessing; the client waits for its answer meanwhile.
        let _ = self.io.flush();
        std::thread::sleep(self.cfg.auth.failure_delay);
        let r = reply::auth_failed();
        Ok(if self.auth_failures >= MAX_AUTH_FAILURES {
            r.and_close()
        } else {
            r
        })
    }

    /// One client response: the initial response if given, else a 334
    /// challenge and the line that answers it.
    fn sasl_step(
        &mut self,
        initial: Option<String>,
        challenge: &'static str,
    ) -> Result<Result<Vec<u8>, SaslError>, Hangup> {
        let line = match initial {
            Some(l) => l,
            None => {
                self.send(reply::auth_challenge(challenge))?;
                match self.io.read_line(auth::MAX_AUTH_LINE) {
                    Ok(Line::Text(t)) => String::from_utf8_lossy(&t).into_owned(),
                    Ok(Line::TooLong) => return Ok(Err(SaslError::Malformed)),
                    Ok(Line::Eof) => return Err(Hangup),
                    Err(e) if is_timeout(&e) => {
                        maillog::timeout(self.peer, "AUTH", conn::is_stress_timeout(&e));
                        self.send(reply::timeout())?;
                        return Err(Hangup);
                    }
                    Err(_) => return Err(Hangup),
                }
            }
        };
        Ok(auth::decode_response(&line))
    }
}
