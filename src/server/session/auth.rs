//! AUTH (RFC 4954) inside the session: the SASL exchange and its limits. The
//! mechanisms and the password check are `server::auth`'s.

use std::time::Duration;

use super::{is_timeout, Hangup, Session};
use crate::maillog;
use crate::metrics;
use crate::server::auth::{self, Mechanism, SaslError};
use crate::server::auth_guard::{Limits, Verdict};
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
        // Failures across sessions: an address that failed too often is
        // refused before anything else (server::auth_guard).
        // The attempt counts against the address (and, once named, the
        // account) while it is under way, so parallel sessions cannot all
        // get a guess in before the first failure is counted.
        let limits = self.guard_limits();
        let mut attempt = match self.ctx.auth_guard.begin(self.peer.ip, limits) {
            Ok(a) => a,
            Err(verdict) => {
                let left = match verdict {
                    Verdict::AddressBlocked(left) | Verdict::AccountThrottled(left) => left,
                    Verdict::Check => Duration::ZERO,
                };
                let (n, window) = (limits.failures, limits.window.as_secs());
                if left.is_zero() {
                    maillog::auth_refused(
                        self.peer,
                        &format_args!("too many attempts at once from this address (limit {n} in {window}s)"),
                    );
                } else {
                    maillog::auth_refused(
                        self.peer,
                        &format_args!(
                            "too many failures from this address ({n} in {window}s), for {}s more",
                            left.as_secs().max(1)
                        ),
                    );
                }
                return Ok(reply::auth_address_blocked());
            }
        };
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
        // An account under attack is checked at most once per
        // window/limit, whoever asks; the others are refused unchecked,
        // and count against their address.
        if let Verdict::AccountThrottled(left) = attempt.account(&user) {
            attempt.failed();
            maillog::auth_refused(
                self.peer,
                &format_args!(
                    "account <{}> under attack, next check in {}s",
                    maillog::printable(&user),
                    left.as_secs().max(1)
                ),
            );
            return Ok(self.failed_attempt(reply::auth_account_throttled()));
        }
        if self.ctx.auth.check(&user, &pass) {
            maillog::auth_ok(self.peer, mech.name(), &user);
            self.meter.auth(true);
            self.user = Some(user);
            self.sasl_method = Some(mech.name());
            return Ok(reply::auth_ok());
        }
        attempt.failed();
        maillog::auth_failed(self.peer, mech.name(), &user);
        self.meter.auth(false);
        Ok(self.failed_attempt(reply::auth_failed()))
    }

    /// The answer to a failed attempt: late, to slow down guessing (the
    /// client waits for it meanwhile), and closing at the session's third.
    fn failed_attempt(&mut self, r: Reply) -> Reply {
        self.auth_failures += 1;
        let _ = self.io.flush();
        std::thread::sleep(self.cfg.auth.failure_delay);
        if self.auth_failures >= MAX_AUTH_FAILURES {
            r.and_close()
        } else {
            r
        }
    }

    fn guard_limits(&self) -> Limits {
        Limits {
            failures: self.cfg.auth.failure_limit,
            window: self.cfg.auth.failure_window,
        }
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
                    // RFC 5321 2.3.8 holds for the exchange too: nothing of
                    // such a line is used, and the session ends.
                    Ok(Line::Bare(bare)) => {
                        let r = super::bare_reply(bare);
                        maillog::reject(
                            self.peer,
                            "AUTH",
                            &r,
                            None,
                            None,
                            &self.proto(),
                            self.helo.as_deref(),
                        );
                        metrics::rejected(&r);
                        self.errors += 1;
                        self.send(r)?;
                        return Err(Hangup);
                    }
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
