//! The control protocol as values: what a client asks ([`Request`]) and
//! what the daemon answers ([`Response`]), each with its encoding. The wire
//! format is one request line, then one reply line (`ok`, `error: WHY`), or
//! for `mailq` the listing until the daemon closes the connection:
//!
//! ```text
//! pickup       → ok         queue what waits in the maildrop now
//! flush        → ok         try every deferred recipient now
//! wake ID      → ok         look at message ID now
//! tlsrpt       → ok         send the TLS reports (RFC 8460) due now
//! mailq        → the queue listing (many lines), then the connection closes
//! (other)      → error: unknown command
//! ```
//!
//! It is the format tern has always spoken, so a sendmail or ternctl of one
//! version talks to a ternd of another.

use crate::spool::QueueId;

/// What a client asks of the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Queue what waits in the maildrop now (sendmail just dropped a message).
    Pickup,
    /// Try every deferred recipient now (`ternctl flush`, `sendmail -q`).
    Flush,
    /// Look at this message now (`ternctl release`, `ternd -i`).
    Wake(QueueId),
    /// The queue listing (`mailq` for users who may not read the spool).
    Mailq,
    /// Send the daily TLS reports that are due now (`ternctl tlsrpt send`).
    TlsRpt,
}

impl Request {
    /// The request line, with its line end.
    pub fn encode(&self) -> String {
        match self {
            Request::Pickup => "pickup\n".to_owned(),
            Request::Flush => "flush\n".to_owned(),
            Request::Wake(id) => format!("wake {id}\n"),
            Request::Mailq => "mailq\n".to_owned(),
            Request::TlsRpt => "tlsrpt\n".to_owned(),
        }
    }

    /// Parse a request line (surrounding white space ignored); the error is
    /// the text of the `error:` reply.
    pub fn decode(line: &str) -> Result<Request, String> {
        let mut words = line.split_whitespace();
        let req = match (words.next(), words.next(), words.next()) {
            (Some("pickup"), None, _) => Request::Pickup,
            (Some("flush"), None, _) => Request::Flush,
            (Some("mailq"), None, _) => Request::Mailq,
            (Some("tlsrpt"), None, _) => Request::TlsRpt,
            (Some("wake"), Some(id), None) => match QueueId::parse(id) {
                Some(id) => Request::Wake(id),
                None => return Err(format!("not a queue id: {id}")),
            },
            _ => return Err("unknown command".to_owned()),
        };
        Ok(req)
    }
}

/// What the daemon answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// Done (the order was passed to the queue runner).
    Ok,
    /// Refused or failed, and why.
    Error(String),
    /// The queue listing, in Postfix's mailq format.
    Listing(String),
}

/// The prefix of an error reply.
const ERROR: &str = "error: ";

impl Response {
    /// The reply as sent: one line, or the listing as it is.
    pub fn encode(&self) -> String {
        match self {
            Response::Ok => "ok\n".to_owned(),
            // One line: a line end inside would end the reply early.
            Response::Error(why) => format!("{ERROR}{}\n", why.replace(['\r', '\n'], " ")),
            Response::Listing(text) => text.clone(),
        }
    }

    /// Parse what the daemon sent in answer to `req`; None when it is not a
    /// reply to that request (nothing, or a line the protocol does not have).
    pub fn decode(req: &Request, text: &str) -> Option<Response> {
        if text.is_empty() {
            return None;
        }
        let first = text.lines().next().unwrap_or_default();
        // An error is one line whatever was asked (a listing never starts so).
        if let Some(why) = first.strip_prefix(ERROR) {
            if text.trim_end_matches('\n').lines().count() == 1 {
                return Some(Response::Error(why.trim_end().to_owned()));
            }
        }
        match req {
            Request::Mailq => Some(Response::Listing(text.to_owned())),
            _ if first.trim_end() == "ok" => Some(Response::Ok),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let id = QueueId::generate();
        for req in [
            Request::Pickup,
            Request::Flush,
            Request::Mailq,
            Request::TlsRpt,
            Request::Wake(id.clone()),
        ] {
            let line = req.encode();
            assert!(
                line.ends_with('\n') && line.matches('\n').count() == 1,
                "{line:?}"
            );
            assert_eq!(Request::decode(&line), Ok(req));
        }
        // The exact wire form, which older and newer binaries share.
        assert_eq!(Request::Wake(id.clone()).encode(), format!("wake {id}\n"));
        assert_eq!(Request::decode(" flush \r\n"), Ok(Request::Flush));
    }

    #[test]
    fn bad_requests() {
        assert_eq!(
            Request::decode("wake ../etc"),
            Err("not a queue id: ../etc".to_owned())
        );
        for bad in ["", "wake", "flush now", "FLUSH", "mailq -v", "bogus"] {
            assert_eq!(Request::decode(bad), Err("unknown command".to_owned()), "{bad:?}");
        }
    }

    #[test]
    fn responses_round_trip() {
        assert_eq!(Response::Ok.encode(), "ok\n");
        assert_eq!(Response::decode(&Request::Flush, "ok\n"), Some(Response::Ok));
        let e = Response::Error("the queue runner is not running".to_owned());
        assert_eq!(e.encode(), "error: the queue runner is not running\n");
        assert_eq!(Response::decode(&Request::Pickup, &e.encode()), Some(e.clone()));
        assert_eq!(Response::decode(&Request::Mailq, &e.encode()), Some(e));
        // An error's text stays on its line.
        let two = Response::Error("a\nb".to_owned()).encode();
        assert_eq!(two, "error: a b\n");
        let listing = "-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------\n\
                       \n-- 1 Kbytes in 1 Request.\n";
        let l = Response::Listing(listing.to_owned());
        assert_eq!(l.encode(), listing);
        assert_eq!(Response::decode(&Request::Mailq, listing), Some(l));
        assert_eq!(
            Response::decode(&Request::Mailq, "Mail queue is empty\n"),
            Some(Response::Listing("Mail queue is empty\n".to_owned()))
        );
        // Not replies.
        assert_eq!(Response::decode(&Request::Flush, ""), None);
        assert_eq!(Response::decode(&Request::Flush, "okay\n"), None);
        assert_eq!(Response::decode(&Request::Mailq, ""), None);
    }
}
