//! `relay-control`: the management plane of edgerelay.
//!
//! This crate holds the daemon's foundation, all sans-IO apart from the store and the client:
//! - [`client`]: the blocking, signing HTTPS client of `relayctl`;
//! - [`tc3`]: TC3-HMAC-SHA256 request signing and verification (Tencent Cloud API v3), with
//!   clock-skew and replay protection;
//! - [`keys`]: API keys, their roles, generation, rotation and revocation;
//! - [`store`]: the embedded redb store of apps, API keys and the append-only audit log.
#![forbid(unsafe_code)]

pub mod client;
pub mod keys;
pub mod store;
pub mod tc3;
