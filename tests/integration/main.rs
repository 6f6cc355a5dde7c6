//! Integration tests: the real binaries on loopback, driven by raw sockets,
//! a third-party client library (lettre), Python's smtplib, and kill -9.

#[macro_use]
mod common;

mod auth_guard;
mod chunking;
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
mod filters;
mod idn;
mod inetd;
mod install;
mod junk;
mod limits;
mod lmtp;
mod local_delivery;
mod mailauth;
mod maillog;
mod manpages;
mod message_path;
mod metrics;
mod milter;
mod outbound;
mod peers;
mod policy_service;
mod pool;
mod proxy;
mod recipients;
mod relay;
mod secrets;
mod sendmail;
mod slowloris;
mod smuggling;
mod spool;
mod submission;
mod tls;
mod tlspolicy;
