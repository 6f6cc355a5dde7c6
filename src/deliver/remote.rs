//! Remote delivery over SMTP. Until the SMTP client lands, mail for other
//! domains waits in the queue, deferred, until queue_lifetime expires it.

use crate::config::Config;
use crate::deliver::{Outcome, Status};
use crate::spool::{Envelope, Recipient};

pub fn deliver(_cfg: &Config, _env: &Envelope, _rcpt: &Recipient) -> Outcome {
    // RFC 3463 4.4.1: no answer from host; the message stays queued.
    Outcome::temporary(Status(4, 4, 1), "remote delivery is not available in this build")
}
