//! The SMTP server: listeners, the session thread pool, the session loop and
//! the policy it consults.

pub mod auth;
pub mod auth_guard;
pub mod conn;
pub mod listener;
pub mod policy;
pub mod proxy;
pub mod session;

impl From<session::Service> for crate::metrics::Listener {
    fn from(s: session::Service) -> Self {
        match s {
            session::Service::Smtp => Self::Smtp,
            session::Service::Submission => Self::Submission,
            session::Service::Smtps => Self::Smtps,
        }
    }
}
