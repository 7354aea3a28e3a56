//! Network namespaces and veth pairs for tests and ops scripts.
//!
//! - [`NetNs`] creates a uniquely named namespace with `ip netns add` and deletes it on
//!   `Drop`, so a failed test leaks nothing.
//! - [`NetNsGuard`] moves the *calling thread* into a namespace with `setns(2)` and moves it
//!   back on `Drop`. It is `!Send`: the namespace is a property of the thread, so the guard
//!   must be dropped on the thread that made it (the shape of aya's
//!   `test_helpers.rs::NetNsGuard`). Sockets, AF_XDP sockets and netlink sockets created
//!   while inside stay in that namespace after the guard drops.
//! - [`VethPair`] builds a veth pair between two namespaces with addresses, and deletes it
//!   on `Drop`.
//!
//! None of this is on the packet path; it shells out to `ip` (iproute2) and needs root.

use std::fs::File;
use std::io;
use std::marker::PhantomData;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A short name unique to this process and call: `{prefix}{pid}x{seq}`, at most 15 bytes
/// (the interface-name limit) for a prefix of up to 3 bytes.
pub fn unique_name(prefix: &str) -> String {
    let pid = std::process::id() % 100_000;
    let seq = SEQ.fetch_add(1, Relaxed) % 10_000;
    format!("{prefix}{pid}x{seq}")
}

/// Runs a command and fails with its stderr if it exits non-zero.
pub fn run(program: &str, args: &[&str]) -> io::Result<()> {
    let out = Command::new(program).args(args).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// A named network namespace, deleted on `Drop`.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates a namespace named from `prefix` (at most 3 bytes) and brings its loopback up.
    pub fn new(prefix: &str) -> io::Result<Self> {
        let name = unique_name(prefix);
        run("ip", &["netns", "add", &name])?;
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name (as in `/run/netns/NAME`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n NAME ARGS…`.
    pub fn ip(&self, args: &[&str]) -> io::Result<()> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Moves the calling thread into this namespace until the guard drops.
    pub fn enter(&self) -> io::Result<NetNsGuard> {
        NetNsGuard::enter(&format!("/run/netns/{}", self.name))
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}

/// The calling thread is in another network namespace until this drops. `!Send`.
#[derive(Debug)]
pub struct NetNsGuard {
    old: File,
    _not_send: PhantomData<*const ()>,
}

impl NetNsGuard {
    /// Enters the namespace whose handle is at `path` (e.g. `/run/netns/NAME`).
    pub fn enter(path: &str) -> io::Result<Self> {
        let old = File::open("/proc/thread-self/ns/net")?;
        let new = File::open(path)?;
        setns(&new)?;
        Ok(Self { old, _not_send: PhantomData })
    }
}

impl Drop for NetNsGuard {
    fn drop(&mut self) {
        if let Err(e) = setns(&self.old) {
            // Staying in the wrong namespace would silently misdirect everything after.
            panic!("cannot restore the network namespace: {e}");
        }
    }
}

fn setns(f: &File) -> io::Result<()> {
    // SAFETY: the fd is an open namespace file owned by `f`; setns only reads it.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A veth pair with one end in each of two namespaces, up and addressed. Deleted on `Drop`
/// (deleting either end deletes both; so does deleting a namespace).
#[derive(Debug)]
pub struct VethPair {
    /// The end in namespace `a`.
    pub name_a: String,
    /// The end in namespace `b`.
    pub name_b: String,
    /// RX/TX queues on each end.
    pub queues: u32,
    ns_a: String,
}

impl VethPair {
    /// Creates `veth` ends in `a` and `b`, assigns each the given CIDR addresses (IPv6
    /// addresses get `nodad`) and brings both up.
    pub fn new(a: &NetNs, addrs_a: &[&str], b: &NetNs, addrs_b: &[&str]) -> io::Result<Self> {
        Self::with_queues(a, addrs_a, b, addrs_b, 1)
    }

    /// As [`new`](Self::new), with `queues` RX and TX queues on each end (for multi-queue
    /// AF_XDP tests).
    pub fn with_queues(a: &NetNs, addrs_a: &[&str], b: &NetNs, addrs_b: &[&str], queues: u32) -> io::Result<Self> {
        let name_a = unique_name("va");
        let name_b = unique_name("vb");
        let q = queues.max(1).to_string();
        run(
            "ip",
            &[
                "link",
                "add",
                &name_a,
                "netns",
                a.name(),
                "numtxqueues",
                &q,
                "numrxqueues",
                &q,
                "type",
                "veth",
                "peer",
                "name",
                &name_b,
                "netns",
                b.name(),
                "numtxqueues",
                &q,
                "numrxqueues",
                &q,
            ],
        )?;
        let pair = Self { name_a, name_b, queues: queues.max(1), ns_a: a.name().to_owned() };
        for (ns, dev, addrs) in [(a, &pair.name_a, addrs_a), (b, &pair.name_b, addrs_b)] {
            for addr in addrs {
                if addr.contains(':') {
                    ns.ip(&["addr", "add", addr, "dev", dev, "nodad"])?;
                } else {
                    ns.ip(&["addr", "add", addr, "dev", dev])?;
                }
            }
            ns.ip(&["link", "set", dev, "up"])?;
        }
        Ok(pair)
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        let _ = run("ip", &["-n", &self.ns_a, "link", "del", &self.name_a]);
    }
}

/// The index of interface `name` in the calling thread's namespace.
pub fn ifindex(name: &str) -> io::Result<u32> {
    let c = std::ffi::CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_fit_ifnamsiz() {
        let a = unique_name("va");
        let b = unique_name("va");
        assert_ne!(a, b);
        assert!(a.len() <= 15, "{a}");
    }
}
