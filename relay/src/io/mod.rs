//! Everything that touches sockets, threads and clocks.
//!
//! [`socket`] is the plain UDP backend: N pinned workers on `SO_REUSEPORT` sockets with
//! `recvmmsg`/`sendmmsg`, and one control thread that owns the registry. [`sys`] holds the
//! syscall wrappers and is the only place here with `unsafe`.

pub mod socket;
pub mod sys;
pub mod xdp;
