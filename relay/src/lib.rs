//! edgerelay's data plane: a media relay for real-time audio/video rooms.
//!
//! Clients join a room with a Tencent UserSig ([`usersig`]) over a small versioned control
//! protocol ([`proto`]) that also agrees per-session, per-direction SRTP keys
//! ([`handshake`]). The [`registry`] owns sessions, rooms and quotas; each worker's
//! [`engine`] authenticates, replay-checks and decrypts SRTP/SRTCP ([`srtp`]) and
//! re-encrypts it for every other member. Both are sans-IO; only [`io`] touches sockets.
//! [`node`] wires them together in one thread for simulations, [`client`] is the matching
//! client session, and [`wire`] has the zero-copy Ethernet/IP/UDP views the kernel-bypass
//! backend builds frames with.

//!
//! The crate builds in two layers. The core (everything but [`io`]) is sans-IO Rust with no
//! kernel dependencies: relay-control links only that, with `default-features = false`. The
//! `dataplane` feature (on by default) adds [`io`]: the socket and AF_XDP backends, aya, the
//! XDP program, netlink and network namespaces, which only relayd and the test rigs need.

pub mod client;
pub mod config;
pub mod engine;
pub mod guard;
pub mod handshake;
pub mod identity;
pub mod ids;
#[cfg(feature = "dataplane")]
pub mod io;
pub mod limits;
pub mod logging;
pub mod messages;
pub mod mgmt;
pub mod node;
pub mod noise;
pub mod prefix;
#[cfg(feature = "privileges")]
pub mod privileges;
pub mod proto;
pub mod pushed;
pub mod registry;
pub mod srtp;
pub mod stats;
pub mod tempdir;
pub mod time;
pub mod usersig;
pub mod wire;
