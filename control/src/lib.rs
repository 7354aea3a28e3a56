//! `relay-control`: the management plane of edgerelay.
//!
//! This crate holds the daemon's foundation, all sans-IO apart from the store, the client,
//! the webhook sender and the monitor's poll loop:
//! - [`api`]: the request and response bodies of the HTTPS API, shared by the server, the
//!   client, `relayctl` and the OpenAPI document;
//! - [`client`]: the blocking, signing HTTPS client of `relayctl`;
//! - [`tc3`]: TC3-HMAC-SHA256 request signing and verification (Tencent Cloud API v3), with
//!   clock-skew and replay protection;
//! - [`keys`]: API keys, their roles, generation, rotation and revocation;
//! - [`store`]: the embedded redb store of apps, API keys, blocklist, limits and the
//!   append-only audit log;
//! - [`server`]: the `relay-control` HTTPS daemon (TLS, TC3 gate, routes, OpenAPI document,
//!   the link that pushes the store's state to relayd);
//! - [`observe`], [`metrics`], [`alerts`], [`autoblock`], [`webhook`], [`monitor`]: monitoring of relayd
//!   (Prometheus text, alert rules and their webhook, automatic blocking of flooding sources),
//!   sans-IO cores plus one tokio poll loop.
#![forbid(unsafe_code)]
#![recursion_limit = "512"]

pub mod alerts;
pub mod api;
pub mod autoblock;
pub mod client;
pub mod cluster;
pub mod keys;
pub mod metrics;
pub mod monitor;
pub mod observe;
pub mod records;
pub mod server;
pub mod state;
pub mod store;
pub mod tc3;
pub mod webhook;
