//! The XDP filter: loads edgerelay's XDP program (crate `xdp-prog`), attaches it, and keeps
//! its maps in step with relayd.
//!
//! The program drops flood traffic in the kernel and redirects the rest to AF_XDP sockets
//! (DESIGN.md "Data path"). Userspace owns four things here:
//! - the `config` map (relay port range, per-source join and packet rates), changeable at
//!   run time;
//! - the `sessions` map: every session's 5-tuple, inserted before its join-ok is sent and
//!   removed when it ends, so media from unknown sources never reaches userspace;
//! - the `xsks` map: one AF_XDP socket per RX queue;
//! - the blocklist tries: entries added, removed and listed by the operator (expired ones are
//!   deleted when listed);
//! - reading the per-CPU `stats` counters and the per-source `offenders` drop counts.
//!
//! Maps are pinned under [`xdp_prog::PIN_DIR`] so the blocklist and limits survive a relayd
//! restart and can be inspected with `bpftool`. Attaching prefers driver (native) mode and
//! falls back to generic (SKB) mode with a warning. aya attaches through a BPF link where the
//! kernel has them, so a crashed relayd leaves nothing attached; a program attached the
//! legacy way (for example with `ip link set dev IF xdp obj ...`) is replaced after a
//! warning. Dropping the [`XdpFilter`] detaches.
//!
//! [`open_xdp`] is relayd's XDP start-up: load the program, open one AF_XDP socket per RX
//! queue and register it in `xsks`; the caller attaches ([`XdpFilter::attach`]) only after
//! that and after restoring the saved blocklist, so nothing is redirected to a socket that
//! does not exist yet, and a blocklist rebuilt into fresh maps filters the first packet.
#![forbid(unsafe_code)]

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

use aya::maps::lpm_trie::{Key as LpmKey, LpmTrie};
use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, PerCpuHashMap, XskMap};
use aya::programs::{Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};
use xdp_prog::{maps, Counter, Session, SessionKey, SrcKey};

use super::afxdp::{LocalEndpoint, XskConfig, XskMode, XskPort};
use super::netlink::RouteSocket;
use super::sys;
use crate::config::{Validated, XdpSettings, XskMode as CfgXskMode, DEFAULT_XDP_MAX_SESSIONS};

pub use xdp_prog::{BlockEntry, Config as FilterConfig, Reason};

/// Errors of the XDP filter.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object did not load (verifier, BTF, pinning, permissions).
    #[error("loading the XDP program: {0}")]
    Load(#[from] aya::EbpfError),
    /// The program could not be loaded into the kernel or attached.
    #[error("XDP program on {iface}: {source}")]
    Program {
        /// The interface.
        iface: String,
        /// aya's error.
        source: aya::programs::ProgramError,
    },
    /// A map operation failed.
    #[error("XDP map {map}: {source}")]
    Map {
        /// The map.
        map: &'static str,
        /// aya's error.
        source: aya::maps::MapError,
    },
    /// The BPF filesystem is not mounted and could not be mounted, or the pin directory
    /// cannot be created.
    #[error("BPF filesystem: {0}")]
    Bpffs(String),
    /// A map the object must have is missing.
    #[error("XDP object has no map {0}")]
    MissingMap(&'static str),
    /// Source and destination of a session are of different families.
    #[error("session addresses {0} and {1} are of different families")]
    Family(SocketAddr, SocketAddr),
    /// A blocklist prefix length beyond the address (32 for IPv4, 128 for IPv6).
    #[error("prefix length {prefix_len} is too long for {ip} (at most {max})")]
    PrefixLen {
        /// The address.
        ip: IpAddr,
        /// The prefix length given.
        prefix_len: u32,
        /// The longest allowed.
        max: u32,
    },
}

/// Whether a map operation failed only because the key is absent (aya reports a delete's
/// `ENOENT` as a syscall error, a lookup's as `KeyNotFound`).
fn not_found(e: &aya::maps::MapError) -> bool {
    match e {
        aya::maps::MapError::KeyNotFound => true,
        aya::maps::MapError::SyscallError(s) => s.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

fn map_err(map: &'static str) -> impl FnOnce(aya::maps::MapError) -> Error {
    move |source| Error::Map { map, source }
}

/// How the program ended up attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attached {
    /// Native XDP in the driver.
    Driver,
    /// Generic XDP in the network stack (slower; a warning was logged).
    Skb,
}

/// Summed packet and byte counters for one verdict reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReasonCount {
    /// The reason.
    pub reason: Reason,
    /// Packets.
    pub packets: u64,
    /// Bytes (whole frames).
    pub bytes: u64,
}

/// A live blocklist entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    /// The prefix's address, bits past the prefix zero.
    pub ip: IpAddr,
    /// The prefix length.
    pub prefix_len: u32,
    /// When it expires, in [`xdp_prog::boot_time_ns`] time; 0 = never.
    pub expires_ns: u64,
}

/// `ip` with every bit past `prefix_len` cleared, or an error if the prefix is too long.
pub fn prefix(ip: IpAddr, prefix_len: u32) -> Result<IpAddr, Error> {
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if prefix_len > max {
        return Err(Error::PrefixLen { ip, prefix_len, max });
    }
    Ok(match ip {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - prefix_len).unwrap_or(0);
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - prefix_len).unwrap_or(0);
            IpAddr::V6((u128::from(a) & mask).into())
        }
    })
}

/// The loaded (and possibly attached) program and its maps.
pub struct XdpFilter {
    ebpf: Ebpf,
    config: Array<MapData, FilterConfig>,
    sessions: BpfHashMap<MapData, SessionKey, Session>,
    xsks: XskMap<MapData>,
    stats: PerCpuArray<MapData, Counter>,
    blocklist_v4: LpmTrie<MapData, [u8; 4], BlockEntry>,
    blocklist_v6: LpmTrie<MapData, [u8; 16], BlockEntry>,
    offenders: PerCpuHashMap<MapData, SrcKey, u64>,
    iface: String,
    /// A private pin directory, removed on drop (when the caller did not ask for pinning).
    private_pin: Option<std::path::PathBuf>,
    /// The `sessions` map's size, as the kernel reports it.
    sessions_capacity: u32,
}

impl XdpFilter {
    /// Loads the program into the kernel (not attached yet), pinning maps under
    /// `pin_dir` (normally [`xdp_prog::PIN_DIR`]), and writes `config`.
    ///
    /// Every map is declared pin-by-name, so aya always pins: with `pin_dir` `None` the maps
    /// go to a private directory that is removed on drop, so instances never share maps.
    pub fn load(iface: &str, pin_dir: Option<&str>, config: FilterConfig) -> Result<Self, Error> {
        Self::load_sized(iface, pin_dir, config, DEFAULT_XDP_MAX_SESSIONS)
    }

    /// [`load`](Self::load) with a `sessions` map of `max_sessions` entries (the object
    /// declares 65,536; the loader resizes it before creating the map). A map already pinned
    /// under `pin_dir` by an earlier relayd is reused as it is, whatever its size.
    pub fn load_sized(
        iface: &str,
        pin_dir: Option<&str>,
        config: FilterConfig,
        max_sessions: u32,
    ) -> Result<Self, Error> {
        static PRIVATE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let mut loader = EbpfLoader::new();
        super::sys::ensure_bpffs("/sys/fs/bpf").map_err(|e| Error::Bpffs(e.to_string()))?;
        let private_pin = match pin_dir {
            Some(_) => None,
            None => {
                let n = PRIVATE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Some(std::path::PathBuf::from(format!("/sys/fs/bpf/edgerelay-private-{}-{n}", std::process::id())))
            }
        };
        let dir = private_pin
            .as_deref()
            .map_or_else(|| std::path::PathBuf::from(pin_dir.unwrap_or_default()), |p| p.to_owned());
        std::fs::create_dir_all(&dir).map_err(|e| Error::Bpffs(format!("{}: {e}", dir.display())))?;
        loader.default_map_pin_directory(&dir);
        loader.map_max_entries(maps::SESSIONS, max_sessions);
        let mut ebpf = loader.load(xdp_prog::OBJECT)?;
        let program_err = |source| Error::Program { iface: iface.to_owned(), source };
        let prog: &mut Xdp =
            ebpf.program_mut(xdp_prog::PROGRAM).ok_or(Error::MissingMap("program"))?.try_into().map_err(program_err)?;
        prog.load().map_err(|source| Error::Program { iface: iface.to_owned(), source })?;
        let mut take = |name: &'static str| ebpf.take_map(name).ok_or(Error::MissingMap(name));
        let mut config_map = Array::try_from(take(maps::CONFIG)?).map_err(map_err(maps::CONFIG))?;
        let sessions_data = take(maps::SESSIONS)?;
        let sessions_capacity = match &sessions_data {
            aya::maps::Map::HashMap(d) => d.info().map(|i| i.max_entries()).unwrap_or(0),
            _ => 0,
        };
        if sessions_capacity != max_sessions {
            tracing::warn!(
                requested = max_sessions,
                actual = sessions_capacity,
                "the sessions map has another size than configured (a map pinned by an earlier relayd is reused as it is; remove it to resize)"
            );
        }
        let sessions = BpfHashMap::try_from(sessions_data).map_err(map_err(maps::SESSIONS))?;
        let xsks = XskMap::try_from(take(maps::XSKS)?).map_err(map_err(maps::XSKS))?;
        let stats = PerCpuArray::try_from(take(maps::STATS)?).map_err(map_err(maps::STATS))?;
        let blocklist_v4 = LpmTrie::try_from(take(maps::BLOCKLIST_V4)?).map_err(map_err(maps::BLOCKLIST_V4))?;
        let blocklist_v6 = LpmTrie::try_from(take(maps::BLOCKLIST_V6)?).map_err(map_err(maps::BLOCKLIST_V6))?;
        let offenders = PerCpuHashMap::try_from(take(maps::OFFENDERS)?).map_err(map_err(maps::OFFENDERS))?;
        config_map.set(0, config, 0).map_err(map_err(maps::CONFIG))?;
        // A pinned `sessions` map outlives relayd; its entries belong to sessions that died
        // with the previous process. Start empty, so unknown sources stay in the kernel.
        let mut sessions = sessions;
        let stale: Vec<SessionKey> = sessions.keys().filter_map(Result::ok).collect();
        for k in &stale {
            let _ = sessions.remove(k);
        }
        if !stale.is_empty() {
            tracing::info!(stale = stale.len(), "cleared sessions left in the pinned map by an earlier relayd");
        }
        Ok(Self {
            ebpf,
            config: config_map,
            sessions,
            xsks,
            stats,
            blocklist_v4,
            blocklist_v6,
            offenders,
            iface: iface.to_owned(),
            private_pin,
            sessions_capacity,
        })
    }

    /// Entries the kernel's `sessions` map holds (the most concurrent sessions).
    pub fn sessions_capacity(&self) -> u32 {
        self.sessions_capacity
    }

    /// Attaches to the interface: driver mode, else SKB mode with a warning. A program
    /// attached there the legacy way (a crashed process, or `ip link`) is detached first.
    pub fn attach(&mut self) -> Result<Attached, Error> {
        let iface = self.iface.clone();
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(xdp_prog::PROGRAM)
            .expect("checked at load")
            .try_into()
            .map_err(|source| Error::Program { iface: iface.clone(), source })?;
        let mut busy_cleared = false;
        loop {
            match prog.attach(&iface, XdpMode::Driver) {
                Ok(_) => return Ok(Attached::Driver),
                Err(e) if is_busy(&e) && !busy_cleared => {
                    tracing::warn!(%iface, "another XDP program is attached; replacing it");
                    detach_legacy(&iface);
                    busy_cleared = true;
                }
                Err(e) => {
                    tracing::warn!(%iface, error = %e, "native XDP attach failed; falling back to SKB (generic) mode");
                    return prog
                        .attach(&iface, XdpMode::Skb)
                        .map(|_| Attached::Skb)
                        .map_err(|source| Error::Program { iface: iface.clone(), source });
                }
            }
        }
    }

    /// Updates the run-time limits and ports.
    pub fn set_config(&mut self, config: FilterConfig) -> Result<(), Error> {
        self.config.set(0, config, 0).map_err(map_err(maps::CONFIG))
    }

    /// Registers the AF_XDP socket for RX `queue`.
    pub fn register_socket(&mut self, queue: u32, fd: impl AsRawFd) -> Result<(), Error> {
        self.xsks.set(queue, fd, 0).map_err(map_err(maps::XSKS))
    }

    /// Lets media from `src` to `dst` (the relay's address) through.
    pub fn add_session(&mut self, src: SocketAddr, dst: SocketAddr, id: u64) -> Result<(), Error> {
        let key = SessionKey::new(src, dst).ok_or(Error::Family(src, dst))?;
        self.sessions.insert(key, Session { id }, 0).map_err(map_err(maps::SESSIONS))
    }

    /// Lets media from another relay's `src` through (its cascade legs), exempt from the
    /// per-source packet bucket: one peer 5-tuple carries whole rooms.
    pub fn add_peer_session(&mut self, src: SocketAddr, dst: SocketAddr, id: u64) -> Result<(), Error> {
        self.add_session(src, dst, id | xdp_prog::SESSION_PEER)
    }

    /// Stops letting media from `src` through. Removing an absent key is not an error.
    pub fn remove_session(&mut self, src: SocketAddr, dst: SocketAddr) -> Result<(), Error> {
        let key = SessionKey::new(src, dst).ok_or(Error::Family(src, dst))?;
        match self.sessions.remove(&key) {
            Ok(()) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(map_err(maps::SESSIONS)(e)),
        }
    }

    /// Blocks a prefix until `expires_ns` (CLOCK_BOOTTIME; 0 = forever). Bits of `ip` past
    /// the prefix are ignored; an existing entry for the prefix is replaced.
    pub fn block(&mut self, ip: IpAddr, prefix_len: u32, expires_ns: u64) -> Result<(), Error> {
        let v = BlockEntry { expires_ns };
        match prefix(ip, prefix_len)? {
            IpAddr::V4(a) => self
                .blocklist_v4
                .insert(&LpmKey::new(prefix_len, a.octets()), v, 0)
                .map_err(map_err(maps::BLOCKLIST_V4)),
            IpAddr::V6(a) => self
                .blocklist_v6
                .insert(&LpmKey::new(prefix_len, a.octets()), v, 0)
                .map_err(map_err(maps::BLOCKLIST_V6)),
        }
    }

    /// Removes the entry for exactly this prefix; returns whether there was one.
    pub fn unblock(&mut self, ip: IpAddr, prefix_len: u32) -> Result<bool, Error> {
        let r = match prefix(ip, prefix_len)? {
            IpAddr::V4(a) => self.blocklist_v4.remove(&LpmKey::new(prefix_len, a.octets())),
            IpAddr::V6(a) => self.blocklist_v6.remove(&LpmKey::new(prefix_len, a.octets())),
        };
        match r {
            Ok(()) => Ok(true),
            Err(e) if not_found(&e) => Ok(false),
            Err(e) => Err(map_err(if ip.is_ipv4() { maps::BLOCKLIST_V4 } else { maps::BLOCKLIST_V6 })(e)),
        }
    }

    /// Every blocklist entry that has not expired at `now_ns`, IPv4 first. Expired entries
    /// (which the program already ignores) are deleted, so they do not fill the map.
    pub fn blocklist(&mut self, now_ns: u64) -> Result<Vec<Block>, Error> {
        let live = |e: &BlockEntry| e.expires_ns == 0 || e.expires_ns > now_ns;
        let mut out = Vec::new();
        let mut expired4 = Vec::new();
        for item in self.blocklist_v4.iter() {
            let (k, v) = item.map_err(map_err(maps::BLOCKLIST_V4))?;
            if live(&v) {
                let ip = IpAddr::from(k.data());
                out.push(Block { ip, prefix_len: k.prefix_len(), expires_ns: v.expires_ns });
            } else {
                expired4.push(k);
            }
        }
        let mut expired6 = Vec::new();
        for item in self.blocklist_v6.iter() {
            let (k, v) = item.map_err(map_err(maps::BLOCKLIST_V6))?;
            if live(&v) {
                let ip = IpAddr::from(k.data());
                out.push(Block { ip, prefix_len: k.prefix_len(), expires_ns: v.expires_ns });
            } else {
                expired6.push(k);
            }
        }
        // Deleting while iterating would restart the kernel's walk; delete afterwards.
        for k in &expired4 {
            let _ = self.blocklist_v4.remove(k);
        }
        for k in &expired6 {
            let _ = self.blocklist_v6.remove(k);
        }
        if !expired4.is_empty() || !expired6.is_empty() {
            tracing::debug!(expired = expired4.len() + expired6.len(), "deleted expired blocklist entries");
        }
        Ok(out)
    }

    /// The sources with the most dropped packets (summed over CPUs), highest first, at most
    /// `limit`. The map holds at most [`xdp_prog::OFFENDERS_MAX`] sources.
    pub fn offenders(&self, limit: usize) -> Result<Vec<(IpAddr, u64)>, Error> {
        let mut out = Vec::new();
        for item in self.offenders.iter() {
            let (k, per_cpu) = match item {
                Ok(kv) => kv,
                // Evicted between listing its key and reading it.
                Err(e) if not_found(&e) => continue,
                Err(e) => return Err(map_err(maps::OFFENDERS)(e)),
            };
            if let Some(ip) = k.ip() {
                out.push((ip, per_cpu.iter().fold(0u64, |a, n| a.saturating_add(*n))));
            }
        }
        out.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        out.truncate(limit);
        Ok(out)
    }

    /// The current `config` entry.
    pub fn config(&self) -> Result<FilterConfig, Error> {
        self.config.get(&0, 0).map_err(map_err(maps::CONFIG))
    }

    /// Counters summed over CPUs, one per reason.
    pub fn counters(&self) -> Result<Vec<ReasonCount>, Error> {
        let mut out = Vec::with_capacity(Reason::ALL.len());
        for reason in Reason::ALL {
            let per_cpu = self.stats.get(&(reason as u32), 0).map_err(map_err(maps::STATS))?;
            let (packets, bytes) = per_cpu.iter().fold((0, 0), |(p, b), c| (p + c.packets, b + c.bytes));
            out.push(ReasonCount { reason, packets, bytes });
        }
        Ok(out)
    }
}

impl Drop for XdpFilter {
    fn drop(&mut self) {
        if let Some(dir) = &self.private_pin {
            if let Ok(entries) = std::fs::read_dir(dir) {
                for e in entries.flatten() {
                    let _ = std::fs::remove_file(e.path());
                }
            }
            let _ = std::fs::remove_dir(dir);
        }
    }
}

fn is_busy(e: &aya::programs::ProgramError) -> bool {
    use aya::programs::{ProgramError, XdpError};
    let code = match e {
        ProgramError::SyscallError(s) => s.io_error.raw_os_error(),
        ProgramError::XdpError(XdpError::NetlinkError(n)) => n.raw_os_error(),
        _ => None,
    };
    code == Some(libc::EBUSY) || code == Some(libc::EEXIST)
}

/// Detaches a legacy (netlink-attached) XDP program from `iface` with iproute2.
fn detach_legacy(iface: &str) {
    for mode in ["xdp", "xdpgeneric", "xdpdrv"] {
        let _ = std::process::Command::new("ip")
            .args(["link", "set", "dev", iface, mode, "off"])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// `base` with the `[xdp]` per-source rates and the control budget of `x` (at start-up,
/// and on a reload, which keeps the running port range).
pub fn with_rates(base: FilterConfig, x: &XdpSettings) -> FilterConfig {
    FilterConfig {
        join_rate_per_sec: x.join_rate_per_sec,
        join_burst: x.join_burst,
        pps_rate_per_sec: x.pps_rate_per_sec,
        pps_burst: x.pps_burst,
        control_rate_per_sec: x.control_budget_per_sec,
        control_burst: x.control_budget_burst,
        ..base
    }
}

/// Loads the XDP program (maps pinned under `[xdp] pin_dir` when `pin_maps`) and opens one
/// AF_XDP socket per RX queue, registered in `xsks`. Not attached yet: call
/// [`XdpFilter::attach`].
pub fn open_xdp(cfg: &Validated, x: &XdpSettings) -> io::Result<(XdpFilter, Vec<XskPort>)> {
    let ifindex = super::netns::ifindex(&x.iface).map_err(|e| io_err(format!("interface {}: {e}", x.iface)))?;
    let queues = x.queues.unwrap_or_else(|| rx_queues(&x.iface));
    let pin = if x.pin_maps {
        sys::ensure_bpffs("/sys/fs/bpf").map_err(|e| io_err(format!("mounting bpffs at /sys/fs/bpf: {e}")))?;
        match &x.pin_dir {
            Some(d) => Some(d.to_str().ok_or_else(|| io_err(format!("xdp.pin_dir {} is not UTF-8", d.display())))?),
            None => Some(xdp_prog::PIN_DIR),
        }
    } else {
        None
    };
    let port = cfg.listen.port();
    let fc = with_rates(FilterConfig { port_lo: port, port_hi: port, flags: 0, ..FilterConfig::default() }, x);
    let mut filter = XdpFilter::load_sized(&x.iface, pin, fc, x.max_sessions).map_err(io_err)?;
    let mac = RouteSocket::open()?
        .link_mac(ifindex)
        .map_err(io_err)?
        .ok_or_else(|| io_err(format!("interface {} has no MAC address", x.iface)))?;
    let local = LocalEndpoint {
        mac,
        v4: cfg.listen.is_ipv4().then_some(cfg.listen),
        v6: cfg.listen.is_ipv6().then_some(cfg.listen),
    };
    let mode = match x.mode {
        CfgXskMode::Auto => XskMode::Auto,
        CfgXskMode::Copy => XskMode::Copy,
        CfgXskMode::Zerocopy => XskMode::ZeroCopy,
    };
    let mut ports = Vec::new();
    for q in 0..queues {
        let ring = x.ring_size;
        let xsk = XskConfig {
            mode,
            rx_size: ring,
            tx_size: ring,
            fill_size: 2 * ring,
            completion_size: 2 * ring,
            frames: 4 * ring,
            ..XskConfig::default()
        };
        let mut p = XskPort::open(ifindex, q, xsk)
            .map_err(|e| io_err(format!("AF_XDP socket on {} queue {q}: {e}", x.iface)))?;
        p.set_local(local);
        if let Some(gw) = x.gateway {
            p.neighbors_mut().set_gateway(gw);
        }
        filter.register_socket(q, p.fd()).map_err(io_err)?;
        tracing::info!(iface = %x.iface, queue = q, mode = ?p.mode(), "AF_XDP socket open");
        ports.push(p);
    }
    tracing::info!(iface = %x.iface, queues, pin_dir = pin.unwrap_or("(private)"), "XDP program loaded");
    Ok((filter, ports))
}

/// The interface's RX queue count from sysfs (1 if unknown).
fn rx_queues(iface: &str) -> u32 {
    std::fs::read_dir(format!("/sys/class/net/{iface}/queues"))
        .map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().starts_with("rx-")).count() as u32)
        .unwrap_or(1)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configs_default_pin_dir_is_the_programs() {
        assert_eq!(crate::config::DEFAULT_PIN_DIR, xdp_prog::PIN_DIR);
    }

    #[test]
    fn prefixes_are_masked_and_bounded() {
        let p = |ip: &str, len| prefix(ip.parse().unwrap(), len).map(|a| a.to_string());
        assert_eq!(p("198.18.5.77", 24).unwrap(), "198.18.5.0");
        assert_eq!(p("198.18.5.77", 32).unwrap(), "198.18.5.77");
        assert_eq!(p("198.18.5.77", 0).unwrap(), "0.0.0.0");
        assert_eq!(p("2001:2::ffff", 64).unwrap(), "2001:2::");
        assert_eq!(p("2001:2::ffff", 128).unwrap(), "2001:2::ffff");
        assert_eq!(p("2001:2::ffff", 0).unwrap(), "::");
        assert!(p("198.18.5.77", 33).unwrap_err().to_string().contains("at most 32"));
        assert!(p("2001:2::1", 129).unwrap_err().to_string().contains("at most 128"));
    }
}
