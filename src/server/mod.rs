//! The SMTP server: listeners, the session thread pool, the session loop and
//! the policy it consults.

pub mod auth;
pub mod auth_guard;
pub mod conn;
pub mod listener;
pub mod policy;
pub mod proxy;
pub mod session;
