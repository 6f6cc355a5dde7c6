//! Integration tests: the real binaries on loopback, driven by raw sockets,
//! a third-party client library (lettre), Python's smtplib, and kill -9.

mod common;

mod auth_guard;
mod clients;
mod command_lines;
mod config;
mod crash;
mod ctl;
mod daemon;
mod delivery;
mod dialogs;
mod duplicates;
mod envelope_syntax;
mod faults;
mod idn;
mod inetd;
mod install;
mod junk;
mod limits;
mod local_delivery;
mod manpages;
mod outbound;
mod pool;
mod proxy;
mod recipients;
mod relay;
mod sendmail;
mod slowloris;
mod smuggling;
mod spool;
mod submission;
mod tls;
