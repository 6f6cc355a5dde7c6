//! The SMTP vocabulary: replies, commands, addresses and the DATA reader.
//! Pure functions and types: nothing here touches a socket, a file or the config.

pub mod address;
pub mod command;
pub mod dot;
pub mod notify;
pub mod reply;
pub mod status;
pub mod xtext;
