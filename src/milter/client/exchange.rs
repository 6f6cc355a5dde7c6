//! One event and its replies: the bytes of a milter conversation. Sends the
//! macros and the event in one write, reads replies until one decides (SMFIR_PROGRESS
//! restarts the limit), and turns end-of-message requests into [`Modification`]s.
//! Every read and write is bounded by the time left before the stage's deadline.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use super::{Failure, Milter, Refusal, Verdict};
use crate::endpoint;
use crate::milter::edit::{self, Modification};
use crate::milter::macros::Macros;
use crate::milter::protocol::{self as p, Command, Response, Stage};
use crate::milter::reply_text;

impl Milter {
    pub(super) fn event(
        &mut self,
        cmd: Command,
        no_flag: u32,
        nr_flag: u32,
        stage: Option<Stage>,
        macros: &Macros,
    ) -> Result<Exchange, Failure> {
        let names = match stage {
            Some(s) => self
                .negotiated
                .as_ref()
                .and_then(|n| n.symlists.get(s as usize).cloned().flatten())
                .unwrap_or_else(|| self.spec.macros.for_stage(s).to_owned()),
            None => String::new(),
        };
        self.event_with(cmd, no_flag, nr_flag, &names, macros)
    }

    /// Send the macros for `cmd`, then `cmd` unless the milter declined it, then
    /// read the replies unless it said it sends none (milter8_event()).
    pub(super) fn event_with(
        &mut self,
        cmd: Command,
        no_flag: u32,
        nr_flag: u32,
        names: &str,
        macros: &Macros,
    ) -> Result<Exchange, Failure> {
        let code = cmd.code();
        let (steps, not_in_protocol) = self
            .negotiated
            .as_ref()
            .map_or((0, 0), |n| (n.steps, n.not_in_protocol));
        let go_on = Ok(Exchange::go_on());
        // Events the version we speak lacks: not even their macros.
        if no_flag & not_in_protocol != 0 {
            return go_on;
        }
        // SMFIR_SKIP covers further events of the same type only.
        match self.skip_event {
            Some(s) if s == code => return go_on,
            Some(_) => self.skip_event = None,
            None => {}
        }
        let content = matches!(
            code,
            p::SMFIC_HEADER | p::SMFIC_EOH | p::SMFIC_BODY | p::SMFIC_BODYEOB
        );
        let limit = if content {
            self.spec.timeouts.content
        } else {
            self.spec.timeouts.command
        };
        let pairs = macros.pairs(names);
        if !pairs.is_empty() {
            self.send(Command::Macro { cmd: code, pairs });
        }
        let declined = no_flag & steps != 0;
        if !declined {
            self.send(cmd);
        }
        self.flush(Instant::now() + limit)?;
        if declined || nr_flag & steps != 0 {
            return go_on;
        }
        self.replies(code, limit)
    }

    /// Read replies until one decides (milter8_event()'s loop).
    pub(super) fn replies(&mut self, event: u8, limit: Duration) -> Result<Exchange, Failure> {
        let at_eom = event == p::SMFIC_BODYEOB;
        let leading = self.leading_space();
        let mut x = Exchange::go_on();
        let mut body: Option<Vec<u8>> = None;
        let mut body_done = false;
        let mut too_big = false;
        let mut deadline = Instant::now() + limit;
        loop {
            let resp = self.read_response(deadline)?;
            if body.is_some() && !matches!(resp, Response::ReplBody(_)) {
                // The replacement ends when anything else comes (milter8.c).
                if let Some(b) = body.take().filter(|_| !too_big) {
                    x.modifications
                        .push(Modification::ReplaceBody(edit::body_from_milter(&b)));
                }
                body_done = true;
            }
            let decided = match resp {
                Response::Progress => {
                    deadline = Instant::now() + limit;
                    continue;
                }
                Response::Continue => Verdict::Continue,
                Response::Accept => Verdict::Accept,
                Response::Discard => Verdict::Discard,
                Response::Reject => Verdict::Reject(Refusal::Plain),
                Response::Tempfail => Verdict::Tempfail(Refusal::Plain),
                Response::Shutdown => Verdict::Shutdown,
                Response::ReplyCode(text) => match reply_text::parse_reply_text(&text) {
                    Some(r) if r.is_temporary() => Verdict::Tempfail(Refusal::Custom(r)),
                    Some(r) => Verdict::Reject(Refusal::Custom(r)),
                    None => {
                        return Err(Failure::Config(format!(
                            "malformed reply: {}",
                            String::from_utf8_lossy(&text)
                        )))
                    }
                },
                Response::Quarantine(reason) => {
                    // No state change: the milter goes on to its real answer.
                    let mut reason = String::from_utf8_lossy(&reason).into_owned();
                    reason.truncate(reason.char_indices().nth(100).map_or(reason.len(), |(i, _)| i));
                    x.quarantine = Some(reason);
                    continue;
                }
                Response::Skip => {
                    self.skip_event = Some(event);
                    Verdict::Continue
                }
                Response::ReplBody(chunk) if at_eom => {
                    if body_done {
                        return Err(Failure::Config(
                            "body replacement requests can't be mixed with other requests".to_owned(),
                        ));
                    }
                    let b = body.get_or_insert_with(Vec::new);
                    if b.len().saturating_add(chunk.len()) > self.spec.max_body {
                        // Like a queue file edit error in Postfix: read on to the
                        // milter's decision, so the conversation stays in step,
                        // and refuse this message only.
                        if !too_big {
                            log::warn!(
                                "milter {}: replacement body over {} bytes",
                                self.name,
                                self.spec.max_body
                            );
                        }
                        too_big = true;
                        b.clear();
                    } else if !too_big {
                        b.extend_from_slice(&chunk);
                    }
                    continue;
                }
                other if at_eom => match modification(other, leading) {
                    Ok(m) => {
                        x.modifications.push(m);
                        continue;
                    }
                    Err(f) => return Err(f),
                },
                other => {
                    return Err(Failure::Comm(format!(
                        "unexpected filter response '{}' after event '{}'",
                        char::from(other.code()),
                        char::from(event)
                    )))
                }
            };
            x.verdict = decided;
            if too_big {
                // milter8.c: the edit error stands unless the milter itself
                // discards, shuts down or fails temporarily.
                x.modifications.clear();
                if !matches!(
                    x.verdict,
                    Verdict::Discard | Verdict::Shutdown | Verdict::Tempfail(_)
                ) {
                    x.verdict = Verdict::Reject(Refusal::TooBig);
                }
            }
            return Ok(x);
        }
    }

    // ---- Bytes ----------------------------------------------------------------

    pub(super) fn send(&mut self, cmd: Command) {
        cmd.encode(&mut self.out);
    }

    pub(super) fn flush(&mut self, deadline: Instant) -> Result<(), Failure> {
        let out = std::mem::take(&mut self.out);
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| Failure::Comm("not connected".to_owned()))?;
        let mut rest = out.as_slice();
        while !rest.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Failure::Comm("timeout while writing".to_owned()));
            }
            conn.set_timeout(Some(left))
                .map_err(|e| Failure::Comm(format!("write: {e}")))?;
            match conn.write(rest) {
                Ok(0) => return Err(Failure::Comm("write: connection closed".to_owned())),
                Ok(n) => rest = rest.get(n..).unwrap_or_default(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if endpoint::is_timeout(&e) => {
                    return Err(Failure::Comm("timeout while writing".to_owned()))
                }
                Err(e) => return Err(Failure::Comm(format!("write: {e}"))),
            }
        }
        Ok(())
    }

    /// Read more of the milter's bytes before `deadline`. Each read waits only for
    /// the time left, so a milter dripping bytes cannot stretch the limit.
    pub(super) fn fill(&mut self, deadline: Instant) -> Result<(), Failure> {
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| Failure::Comm("not connected".to_owned()))?;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Failure::Comm("timeout while reading a reply".to_owned()));
            }
            conn.set_timeout(Some(left))
                .map_err(|e| Failure::Comm(format!("read: {e}")))?;
            conn.ack_now();
            match conn.read(&mut chunk) {
                Ok(0) => {
                    return Err(Failure::Comm(
                        "connection closed while reading a reply".to_owned(),
                    ))
                }
                Ok(n) => {
                    self.inbuf.extend_from_slice(chunk.get(..n).unwrap_or_default());
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if endpoint::is_timeout(&e) => {
                    return Err(Failure::Comm("timeout while reading a reply".to_owned()))
                }
                Err(e) => return Err(Failure::Comm(format!("read: {e}"))),
            }
        }
    }

    pub(super) fn read_response(&mut self, deadline: Instant) -> Result<Response, Failure> {
        loop {
            let decoded = match p::split_packet(&self.inbuf) {
                Err(e) => return Err(Failure::Comm(e.to_string())),
                Ok(None) => None,
                Ok(Some(packet)) => Some((Response::decode(packet.cmd, packet.data), packet.size)),
            };
            match decoded {
                Some((r, size)) => {
                    self.inbuf.drain(..size.min(self.inbuf.len()));
                    return r.map_err(|e| Failure::Comm(e.to_string()));
                }
                None => self.fill(deadline)?,
            }
        }
    }
}

/// What one event's replies came to.
pub(super) struct Exchange {
    pub(super) verdict: Verdict,
    pub(super) modifications: Vec<Modification>,
    pub(super) quarantine: Option<String>,
}

impl Exchange {
    pub(super) fn go_on() -> Exchange {
        Exchange {
            verdict: Verdict::Continue,
            modifications: Vec::new(),
            quarantine: None,
        }
    }
}

/// A modification request in the spool's form, or why tern cannot carry it out.
fn modification(r: Response, leading_space: bool) -> Result<Modification, Failure> {
    let name = |n: Vec<u8>| -> Result<String, Failure> {
        match String::from_utf8(n) {
            Ok(s) if edit::is_field_name(&s) => Ok(s),
            Ok(s) => Err(Failure::Config(format!("bad header name {s:?}"))),
            Err(e) => Err(Failure::Config(format!(
                "bad header name {:?}",
                String::from_utf8_lossy(e.as_bytes())
            ))),
        }
    };
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    let opt = |b: Option<Vec<u8>>| b.map(text).filter(|s| !s.is_empty());
    Ok(match r {
        Response::AddHeader { name: n, value } => Modification::AddHeader {
            name: name(n)?,
            value: edit::header_value_from_milter(&value, leading_space),
        },
        Response::InsHeader {
            index,
            name: n,
            value,
        } => Modification::InsertHeader {
            index,
            name: name(n)?,
            value: edit::header_value_from_milter(&value, leading_space),
        },
        Response::ChgHeader {
            index,
            name: n,
            value,
        } => Modification::ChangeHeader {
            index,
            name: name(n)?,
            // Empty means delete; keep it empty rather than " ".
            value: if value.is_empty() {
                Vec::new()
            } else {
                edit::header_value_from_milter(&value, leading_space)
            },
        },
        Response::AddRcpt(r) => Modification::AddRcpt {
            rcpt: text(r),
            args: None,
        },
        Response::AddRcptPar { rcpt, args } => Modification::AddRcpt {
            rcpt: text(rcpt),
            args: opt(args),
        },
        Response::DelRcpt(r) => Modification::DelRcpt(text(r)),
        Response::ChgFrom { sender, args } => Modification::ChangeFrom {
            sender: text(sender),
            args: opt(args),
        },
        other => {
            return Err(Failure::Comm(format!(
                "unexpected filter response '{}' at end of message",
                char::from(other.code())
            )))
        }
    })
}
