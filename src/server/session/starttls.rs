//! STARTTLS (RFC 3207) and the handshake of implicit TLS (RFC 8314).

use super::{Hangup, Session};
use crate::maillog;
use crate::server::conn::Conn;
use crate::smtp::reply::{self, Reply};
use crate::tls;

impl Session<'_> {
    /// Run the TLS handshake over the current connection. Input the client
    /// sent before it and not yet read is discarded by `Io::upgrade`.
    pub(super) fn handshake(&mut self) -> Result<(), Hangup> {
        let Some(config) = self.ctx.tls.as_ref().map(|t| t.current()) else {
            return Err(Hangup);
        };
        let result = self.io.upgrade(|conn| {
            let (stream, info) = tls::accept(&config, conn)?;
            Ok((Box::new(stream) as Box<dyn Conn>, info))
        });
        match result {
            Ok(info) => {
                maillog::tls_established(self.peer, &self.service, &info);
                self.meter.tls(&info.version);
                self.tls = Some(info);
                Ok(())
            }
            Err(e) => {
                maillog::tls_failed(self.peer, &self.service, &e);
                self.meter.tls_failed();
                Err(Hangup)
            }
        }
    }

    /// RFC 3207: STARTTLS. After the handshake the session starts over: no
    /// HELO, no transaction, and (for the client) no knowledge from before.
    pub(super) fn starttls(&mut self) -> Result<Option<Reply>, Hangup> {
        if self.tls.is_some() {
            return Ok(Some(reply::tls_already_active()));
        }
        if self.ctx.tls.is_none() {
            return Ok(Some(reply::not_implemented()));
        }
        self.send(reply::starttls_ready())?;
        self.handshake()?;
        self.helo = None;
        self.esmtp = false;
        self.tx = None;
        self.user = None;
        // Nothing more to answer: the client speaks first inside TLS.
        Ok(None)
    }
}
