//! Outbound TLS policy (issue 18): which TLS a next hop must get, and the
//! pieces that find and check it. Nothing here knows about sessions or the
//! queue; `deliver` asks, the SMTP client enforces.
//!
//! - [`dane`]: TLSA records and the certificate verifier for them (RFC 7672).
//! - [`mtasts`]: MTA-STS records, policies, the HTTPS fetch and the disk
//!   cache under the spool (RFC 8461).
//! - [`tlsrpt`]: the per-domain results and the daily report (RFC 8460).
//! - [`policy`]: the pure decision for one hop, DANE over MTA-STS over the
//!   configured level, with REQUIRETLS and `TLS-Required: No` (RFC 8689).
//!
//! The DNSSEC status these rely on comes from `deliver::dns` (Postfix's
//! model: the AD bit of a trusted validating resolver).

pub mod dane;
