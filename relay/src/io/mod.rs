//! Everything that touches sockets, threads and clocks.
//!
//! [`socket`] is the plain UDP backend: N pinned workers on `SO_REUSEPORT` sockets with
//! `recvmmsg`/`sendmmsg`, and one control thread that owns the registry. [`afxdp`] is the
//! AF_XDP layer (UMEM, rings, the engine's transmit sink over them), [`netlink`] resolves
//! next-hop MACs from the kernel's tables for it, and [`netns`] builds network namespaces
//! and veth pairs for tests. `unsafe` lives only in [`sys`], [`afxdp`], [`netlink`] and
//! [`netns`] (syscalls), each block with its `SAFETY` comment.

pub mod afxdp;
pub mod mgmt;
pub mod netlink;
pub mod netns;
pub mod socket;
pub mod sys;
pub mod xdp;
mod xdp_worker;
