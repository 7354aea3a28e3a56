//! Everything that touches sockets, threads and clocks.
//!
//! One concern per module, in a one-way order (`scripts/module-cycles` checks it):
//! - [`runtime`] starts and stops relayd's threads ([`runtime::Relay`]);
//! - [`socket`] is the socket backend's worker (`recvmmsg`/`sendmmsg`), [`xdp_worker`] the
//!   XDP backend's (one per RX queue, over [`afxdp`]);
//! - [`control`] is the control thread (the registry, joins, expiry, the XDP `sessions`
//!   map), running management requests through [`commands`] for [`mgmt_server`];
//! - [`persist`] writes the saved push ([`crate::pushed`]) off the control thread;
//! - [`worker`] is what every worker shares (core, channels, clocks, pinning), and
//!   [`seccomp`] the allow-list each worker installs on its own thread;
//! - [`xdp`] loads and attaches the XDP program and keeps its maps; [`afxdp`] is the
//!   AF_XDP layer (UMEM, rings, the engine's transmit sink over them), [`netlink`] resolves
//!   next-hop MACs from the kernel's tables for it, and [`netns`] builds network namespaces
//!   and veth pairs for tests.
//!
//! `unsafe` lives only in [`sys`], [`afxdp`], [`netlink`] and [`netns`] (and, outside `io`,
//! `crate::privileges`): syscalls, each block with its `SAFETY` comment; every other module
//! forbids it.

pub mod afxdp;
mod commands;
mod control;
mod mgmt_server;
pub mod netlink;
pub mod netns;
pub mod persist;
pub mod runtime;
mod seccomp;
mod socket;
pub mod sys;
pub mod worker;
pub mod xdp;
mod xdp_worker;
