//! Next-hop MAC resolution for the AF_XDP backend, from the kernel's own tables over
//! `NETLINK_ROUTE` (rtnetlink(7)).
//!
//! AF_XDP transmits whole Ethernet frames, so the relay must know the destination MAC
//! itself. It does not run ARP or ND: the kernel already does, on the same interface.
//! [`NeighborCache::refresh`] dumps the kernel's neighbour table (`RTM_GETNEIGH`) and routes
//! (`RTM_GETROUTE`); a destination off every on-link prefix goes to the gateway of the
//! default route (or a configured gateway), so its MAC is the gateway's.
//! [`NeighborCache::resolve`] makes the kernel resolve an unknown neighbour by sending it
//! one UDP datagram to the discard port through a normal socket, then refreshes.
//!
//! Invariants: the parsers check every length against the buffer before reading and never
//! panic on any input (kernel bytes are trusted less than they could be, and the tests feed
//! them truncations). [`NeighborCache::lookup`] is the only per-packet call: a hash lookup
//! and a scan of a few prefixes, no allocation, lock or syscall. Everything else allocates
//! and makes syscalls and belongs between batches.

use std::collections::HashMap;
use std::io;
use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::wire::EthernetAddress;

/// `NLMSG_ERROR`: an error or, with code 0, an acknowledgement.
const NLMSG_ERROR: u16 = 2;
/// `NLMSG_DONE`: the end of a dump.
const NLMSG_DONE: u16 = 3;
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_HDRLEN: usize = 16;
/// `struct ndmsg`.
const NDMSG_LEN: usize = 12;
/// `struct rtmsg`.
const RTMSG_LEN: usize = 12;
/// `struct ifinfomsg`.
const IFINFOMSG_LEN: usize = 16;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_TABLE: u16 = 15;
const IFLA_ADDRESS: u16 = 1;
/// The attribute type bits (`NLA_TYPE_MASK`): the top two are flags.
const NLA_TYPE_MASK: u16 = 0x3fff;
const AF_INET: u8 = libc::AF_INET as u8;
const AF_INET6: u8 = libc::AF_INET6 as u8;
/// Neighbour states without a usable link-layer address.
const NUD_INCOMPLETE: u16 = 0x01;
const NUD_FAILED: u16 = 0x20;
/// `RT_TABLE_MAIN`.
pub const TABLE_MAIN: u32 = 254;
/// `RTN_UNICAST`.
const RTN_UNICAST: u8 = 1;
/// The UDP discard port (RFC 863), where [`NeighborCache::resolve`] sends its probe.
pub const DISCARD_PORT: u16 = 9;

/// Why a netlink exchange or parse failed.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// A message or attribute ends before the length it announces, or before its header.
    #[error("netlink message truncated")]
    Truncated,
    /// A length field is smaller than the header it covers.
    #[error("bad netlink length field")]
    BadLength,
    /// The kernel answered with `NLMSG_ERROR` and this (negative) errno.
    #[error("kernel netlink error {0}")]
    Kernel(i32),
    /// A socket call failed.
    #[error("netlink socket: {0}")]
    Io(#[from] io::Error),
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn u16_ne(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_ne(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// One netlink message: `nlmsghdr` fields and the payload after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    /// `nlmsg_type`.
    pub kind: u16,
    /// `nlmsg_flags`.
    pub flags: u16,
    /// `nlmsg_seq`.
    pub seq: u32,
    /// The bytes after the 16-byte header, `nlmsg_len - 16` long.
    pub payload: &'a [u8],
}

/// Iterates over the netlink messages in one `recv` buffer (netlink(7), `NLMSG_NEXT`).
/// After an error it yields nothing more.
pub fn messages(buf: &[u8]) -> impl Iterator<Item = Result<Message<'_>, NetlinkError>> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let parsed = (|| {
            let len = u32_ne(rest, 0).ok_or(NetlinkError::Truncated)? as usize;
            if len < NLMSG_HDRLEN {
                return Err(NetlinkError::BadLength);
            }
            let msg = rest.get(..len).ok_or(NetlinkError::Truncated)?;
            let m = Message {
                kind: u16_ne(msg, 4).ok_or(NetlinkError::Truncated)?,
                flags: u16_ne(msg, 6).ok_or(NetlinkError::Truncated)?,
                seq: u32_ne(msg, 8).ok_or(NetlinkError::Truncated)?,
                payload: &msg[NLMSG_HDRLEN..],
            };
            Ok((m, rest.get(align4(len)..).unwrap_or(&[])))
        })();
        match parsed {
            Ok((m, next)) => {
                rest = next;
                Some(Ok(m))
            }
            Err(e) => {
                rest = &[];
                Some(Err(e))
            }
        }
    })
}

/// Iterates over route attributes (`struct rtattr`, `RTA_NEXT`): `(type, value)`, with the
/// flag bits masked off the type. After an error it yields nothing more.
pub fn attributes(buf: &[u8]) -> impl Iterator<Item = Result<(u16, &[u8]), NetlinkError>> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let parsed = (|| {
            let len = usize::from(u16_ne(rest, 0).ok_or(NetlinkError::Truncated)?);
            if len < 4 {
                return Err(NetlinkError::BadLength);
            }
            let attr = rest.get(..len).ok_or(NetlinkError::Truncated)?;
            let kind = u16_ne(attr, 2).ok_or(NetlinkError::Truncated)? & NLA_TYPE_MASK;
            Ok(((kind, &attr[4..]), rest.get(align4(len)..).unwrap_or(&[])))
        })();
        match parsed {
            Ok((a, next)) => {
                rest = next;
                Some(Ok(a))
            }
            Err(e) => {
                rest = &[];
                Some(Err(e))
            }
        }
    })
}

fn ip_from(family: u8, b: &[u8]) -> Option<IpAddr> {
    match family {
        AF_INET => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(b).ok()?))),
        AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(b).ok()?))),
        _ => None,
    }
}

/// One neighbour-table entry (`RTM_NEWNEIGH`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbor {
    /// The interface it was learned on.
    pub ifindex: u32,
    /// `NDA_DST`.
    pub ip: IpAddr,
    /// `NDA_LLADDR`, if present and 6 bytes long.
    pub mac: Option<EthernetAddress>,
    /// `ndm_state` (`NUD_*` bits).
    pub state: u16,
}

impl Neighbor {
    /// Whether the entry has a MAC the relay may send to (not incomplete or failed).
    pub fn usable(&self) -> bool {
        self.mac.is_some() && self.state & (NUD_INCOMPLETE | NUD_FAILED) == 0
    }
}

/// Parses the payload of an `RTM_NEWNEIGH` message (`ndmsg` + attributes). `Ok(None)` for an
/// entry of another family or without `NDA_DST`.
pub fn parse_neighbor(payload: &[u8]) -> Result<Option<Neighbor>, NetlinkError> {
    let hdr = payload.get(..NDMSG_LEN).ok_or(NetlinkError::Truncated)?;
    let family = hdr[0];
    let ifindex = u32_ne(hdr, 4).ok_or(NetlinkError::Truncated)?;
    let state = u16_ne(hdr, 8).ok_or(NetlinkError::Truncated)?;
    let (mut ip, mut mac) = (None, None);
    for a in attributes(&payload[NDMSG_LEN..]) {
        match a? {
            (NDA_DST, v) => ip = ip_from(family, v),
            (NDA_LLADDR, v) => mac = <[u8; 6]>::try_from(v).ok().map(EthernetAddress),
            _ => {}
        }
    }
    Ok(ip.map(|ip| Neighbor { ifindex, ip, mac, state }))
}

/// One route (`RTM_NEWROUTE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// `RTA_DST`, or the unspecified address for a default route.
    pub dst: IpAddr,
    /// `rtm_dst_len`.
    pub prefix_len: u8,
    /// `RTA_GATEWAY`: set for routes via a next hop, unset for on-link routes.
    pub gateway: Option<IpAddr>,
    /// `RTA_OIF`.
    pub oif: Option<u32>,
    /// `RTA_TABLE`, or `rtm_table`.
    pub table: u32,
    /// `rtm_type` (`RTN_*`).
    pub kind: u8,
}

impl Route {
    /// Whether `ip` falls inside this route's prefix.
    pub fn contains(&self, ip: IpAddr) -> bool {
        prefix_contains(self.dst, self.prefix_len, ip)
    }
}

fn prefix_contains(net: IpAddr, len: u8, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len.min(32))).unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len.min(128))).unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// Parses the payload of an `RTM_NEWROUTE` message (`rtmsg` + attributes). `Ok(None)` for a
/// family other than IPv4/IPv6.
pub fn parse_route(payload: &[u8]) -> Result<Option<Route>, NetlinkError> {
    let hdr = payload.get(..RTMSG_LEN).ok_or(NetlinkError::Truncated)?;
    let (family, prefix_len, table, kind) = (hdr[0], hdr[1], hdr[4], hdr[7]);
    let unspecified = match family {
        AF_INET => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        AF_INET6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => return Ok(None),
    };
    let mut r = Route { dst: unspecified, prefix_len, gateway: None, oif: None, table: u32::from(table), kind };
    for a in attributes(&payload[RTMSG_LEN..]) {
        match a? {
            (RTA_DST, v) => r.dst = ip_from(family, v).ok_or(NetlinkError::BadLength)?,
            (RTA_GATEWAY, v) => r.gateway = Some(ip_from(family, v).ok_or(NetlinkError::BadLength)?),
            (RTA_OIF, v) => r.oif = Some(u32_ne(v, 0).ok_or(NetlinkError::Truncated)?),
            (RTA_TABLE, v) => r.table = u32_ne(v, 0).ok_or(NetlinkError::Truncated)?,
            _ => {}
        }
    }
    Ok(Some(r))
}

/// Parses the payload of an `RTM_NEWLINK` message: the interface index and `IFLA_ADDRESS`
/// if it is a 6-byte MAC.
pub fn parse_link(payload: &[u8]) -> Result<(u32, Option<EthernetAddress>), NetlinkError> {
    let hdr = payload.get(..IFINFOMSG_LEN).ok_or(NetlinkError::Truncated)?;
    let index = u32_ne(hdr, 4).ok_or(NetlinkError::Truncated)?;
    let mut mac = None;
    for a in attributes(&payload[IFINFOMSG_LEN..]) {
        if let (IFLA_ADDRESS, v) = a? {
            mac = <[u8; 6]>::try_from(v).ok().map(EthernetAddress);
        }
    }
    Ok((index, mac))
}

/// A `NETLINK_ROUTE` socket in the namespace of the thread that opened it.
pub struct RouteSocket {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl RouteSocket {
    /// Opens and binds the socket, with a 1 s receive timeout so a lost answer cannot
    /// hang the caller.
    pub fn open() -> io::Result<Self> {
        // SAFETY: plain socket(2); the result is checked.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just returned by socket(2) and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_nl is plain old data; all-zero is valid (pid 0: kernel assigns).
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: `sa` is a valid sockaddr_nl of the given length.
        let r = unsafe {
            libc::bind(fd.as_raw_fd(), std::ptr::addr_of!(sa).cast(), size_of::<libc::sockaddr_nl>() as libc::socklen_t)
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let tv = libc::timeval { tv_sec: 1, tv_usec: 0 };
        // SAFETY: the option value points to a live timeval of the given size.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                std::ptr::addr_of!(tv).cast(),
                size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { fd, seq: 0, buf: vec![0; 64 * 1024] })
    }

    /// Sends one request of `kind` with `body`, and calls `f` for each answer message of
    /// `reply_kind` until the dump ends (or, without `dump`, until the first answer).
    fn request(
        &mut self,
        kind: u16,
        dump: bool,
        body: &[u8],
        reply_kind: u16,
        mut f: impl FnMut(&[u8]) -> Result<(), NetlinkError>,
    ) -> Result<(), NetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let len = NLMSG_HDRLEN + body.len();
        let mut req = Vec::with_capacity(len);
        req.extend_from_slice(&(len as u32).to_ne_bytes());
        req.extend_from_slice(&kind.to_ne_bytes());
        let flags = if dump { NLM_F_REQUEST | NLM_F_DUMP } else { NLM_F_REQUEST };
        req.extend_from_slice(&flags.to_ne_bytes());
        req.extend_from_slice(&self.seq.to_ne_bytes());
        req.extend_from_slice(&0u32.to_ne_bytes());
        req.extend_from_slice(body);
        // SAFETY: the fd is open; `req` is a live buffer of `req.len()` bytes.
        let r = unsafe { libc::send(self.fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
        if r < 0 {
            return Err(io::Error::last_os_error().into());
        }
        loop {
            // SAFETY: the fd is open; `buf` is a live, writable buffer of its length.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), self.buf.as_mut_ptr().cast(), self.buf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e.into());
            }
            let n = n as usize;
            for m in messages(&self.buf[..n]) {
                let m = m?;
                if m.seq != self.seq {
                    continue;
                }
                match m.kind {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let code = u32_ne(m.payload, 0).ok_or(NetlinkError::Truncated)? as i32;
                        return if code == 0 { Ok(()) } else { Err(NetlinkError::Kernel(code)) };
                    }
                    k if k == reply_kind => {
                        f(m.payload)?;
                        if !dump {
                            return Ok(());
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// Dumps the neighbour tables of both families.
    pub fn neighbors(&mut self) -> Result<Vec<Neighbor>, NetlinkError> {
        let mut out = Vec::new();
        self.request(RTM_GETNEIGH, true, &[0; NDMSG_LEN], RTM_NEWNEIGH, |p| {
            out.extend(parse_neighbor(p)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// Dumps the routes of both families (all tables).
    pub fn routes(&mut self) -> Result<Vec<Route>, NetlinkError> {
        let mut out = Vec::new();
        self.request(RTM_GETROUTE, true, &[0; RTMSG_LEN], RTM_NEWROUTE, |p| {
            out.extend(parse_route(p)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// The MAC address of interface `ifindex` (`RTM_GETLINK`).
    pub fn link_mac(&mut self, ifindex: u32) -> Result<Option<EthernetAddress>, NetlinkError> {
        let mut body = [0u8; IFINFOMSG_LEN];
        body[4..8].copy_from_slice(&ifindex.to_ne_bytes());
        let mut mac = None;
        self.request(RTM_GETLINK, false, &body, RTM_NEWLINK, |p| {
            let (index, m) = parse_link(p)?;
            if index == ifindex {
                mac = m;
            }
            Ok(())
        })?;
        Ok(mac)
    }
}

/// The destination MACs the AF_XDP transmit path needs, for one interface.
///
/// Built and refreshed off the packet path; [`lookup`](Self::lookup) is the per-packet
/// call.
#[derive(Debug, Clone, Default)]
pub struct NeighborCache {
    ifindex: u32,
    neighbors: HashMap<IpAddr, EthernetAddress>,
    /// Prefixes reachable directly on this interface (routes without a gateway).
    on_link: Vec<(IpAddr, u8)>,
    gateway_v4: Option<IpAddr>,
    gateway_v6: Option<IpAddr>,
    /// Gateways set by configuration win over the default routes'.
    configured_gateway: bool,
    /// Bumped whenever a lookup's answer may have changed, so destinations resolved
    /// against an older content re-resolve ([`generation`](Self::generation)).
    generation: u64,
}

impl NeighborCache {
    /// An empty cache for interface `ifindex`.
    pub fn new(ifindex: u32) -> Self {
        Self { ifindex, generation: 1, ..Self::default() }
    }

    /// The content's generation: it changes whenever [`lookup`](Self::lookup) may answer
    /// differently for some address, and is never 0 (which callers may use for "never
    /// resolved").
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn changed(&mut self) {
        self.generation = self.generation.wrapping_add(1).max(1);
    }

    /// The interface index.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Uses `gw` as the next hop of every destination of its family that is not on-link,
    /// instead of the default route's gateway.
    pub fn set_gateway(&mut self, gw: IpAddr) {
        self.configured_gateway = true;
        match gw {
            IpAddr::V4(_) => self.gateway_v4 = Some(gw),
            IpAddr::V6(_) => self.gateway_v6 = Some(gw),
        }
        self.changed();
    }

    /// Adds a static entry (tests, or operators pinning a next hop).
    pub fn insert(&mut self, ip: IpAddr, mac: EthernetAddress) {
        if self.neighbors.insert(ip, mac) != Some(mac) {
            self.changed();
        }
    }

    /// Entries known for the interface.
    pub fn len(&self) -> usize {
        self.neighbors.len()
    }

    /// Whether no entry is known.
    pub fn is_empty(&self) -> bool {
        self.neighbors.is_empty()
    }

    /// Replaces the cache's content with the kernel's current tables for this interface:
    /// usable neighbour entries, on-link prefixes of the main table, and (unless
    /// configured) the default routes' gateways. Not for the packet path.
    pub fn refresh(&mut self, sock: &mut RouteSocket) -> Result<(), NetlinkError> {
        let neighbors = sock.neighbors()?;
        let routes = sock.routes()?;
        self.apply(&neighbors, &routes);
        Ok(())
    }

    /// [`refresh`](Self::refresh) from already-dumped tables. The generation changes only
    /// if the content did (the tables are dumped once a second and rarely change).
    pub fn apply(&mut self, neighbors: &[Neighbor], routes: &[Route]) {
        let mut macs = HashMap::with_capacity(self.neighbors.len());
        for n in neighbors.iter().filter(|n| n.ifindex == self.ifindex && n.usable()) {
            if let Some(mac) = n.mac {
                macs.insert(n.ip, mac);
            }
        }
        let mut on_link = Vec::with_capacity(self.on_link.len());
        let (mut gw4, mut gw6) = (None, None);
        for r in routes {
            if r.table != TABLE_MAIN || r.kind != RTN_UNICAST || r.oif != Some(self.ifindex) {
                continue;
            }
            match r.gateway {
                None => on_link.push((r.dst, r.prefix_len)),
                Some(gw) if r.prefix_len == 0 => match gw {
                    IpAddr::V4(_) => gw4 = Some(gw),
                    IpAddr::V6(_) => gw6 = Some(gw),
                },
                Some(_) => {}
            }
        }
        let (gw4, gw6) = if self.configured_gateway { (self.gateway_v4, self.gateway_v6) } else { (gw4, gw6) };
        let same =
            macs == self.neighbors && on_link == self.on_link && (gw4, gw6) == (self.gateway_v4, self.gateway_v6);
        (self.neighbors, self.on_link, self.gateway_v4, self.gateway_v6) = (macs, on_link, gw4, gw6);
        if !same {
            self.changed();
        }
    }

    /// Whether `ip` is on an on-link prefix of the interface. With no route information
    /// at all, everything counts as on-link.
    pub fn is_on_link(&self, ip: IpAddr) -> bool {
        self.on_link.is_empty() || self.on_link.iter().any(|&(net, len)| prefix_contains(net, len, ip))
    }

    /// The next hop for `ip`: itself when on-link or when no gateway is known, else the
    /// gateway.
    pub fn next_hop(&self, ip: IpAddr) -> IpAddr {
        if self.neighbors.contains_key(&ip) || self.is_on_link(ip) {
            return ip;
        }
        let gw = match ip {
            IpAddr::V4(_) => self.gateway_v4,
            IpAddr::V6(_) => self.gateway_v6,
        };
        gw.unwrap_or(ip)
    }

    /// The destination MAC for a frame to `ip`, or `None` if the next hop is not resolved.
    /// The per-packet call: no allocation, lock or syscall.
    #[inline]
    pub fn lookup(&self, ip: IpAddr) -> Option<EthernetAddress> {
        if let Some(mac) = self.neighbors.get(&ip) {
            return Some(*mac);
        }
        self.neighbors.get(&self.next_hop(ip)).copied()
    }

    /// Makes the kernel resolve the next hop of `ip` and waits up to `timeout` for it to
    /// appear: sends one byte to the next hop's UDP discard port through a normal socket
    /// (which makes the kernel ARP or ND for it), then refreshes every 10 ms. Runs in the
    /// namespace of the calling thread. Not for the packet path.
    pub fn resolve(
        &mut self,
        sock: &mut RouteSocket,
        ip: IpAddr,
        timeout: Duration,
    ) -> Result<Option<EthernetAddress>, NetlinkError> {
        self.refresh(sock)?;
        if let Some(mac) = self.lookup(ip) {
            return Ok(Some(mac));
        }
        let hop = self.next_hop(ip);
        let bind: SocketAddr = match hop {
            IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let probe = UdpSocket::bind(bind)?;
        // Unreachable destinations fail here or later; either way the lookup below decides.
        let _ = probe.send_to(&[0], (hop, DISCARD_PORT));
        let deadline = Instant::now() + timeout;
        loop {
            self.refresh(sock)?;
            if let Some(mac) = self.lookup(ip) {
                return Ok(Some(mac));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        let net: IpAddr = "198.18.1.0".parse().unwrap();
        assert!(prefix_contains(net, 24, "198.18.1.200".parse().unwrap()));
        assert!(!prefix_contains(net, 24, "198.18.2.1".parse().unwrap()));
        assert!(prefix_contains(net, 0, "1.2.3.4".parse().unwrap()));
        assert!(!prefix_contains(net, 0, "::1".parse().unwrap()));
        let net6: IpAddr = "2001:db8::".parse().unwrap();
        assert!(prefix_contains(net6, 64, "2001:db8::5".parse().unwrap()));
        assert!(!prefix_contains(net6, 64, "2001:db8:0:1::5".parse().unwrap()));
        assert!(prefix_contains(net6, 128, net6));
    }

    /// `RTM_GETNEIGH` dump answer captured on Linux 6.18 (x86_64, so native endian is
    /// little) in a namespace after `ip neigh add 198.18.2.5 lladdr 02:00:00:00:00:05 dev
    /// vcap0 nud permanent` and `ip neigh add 2001:db8::5 lladdr 02:00:00:00:00:06 dev vcap0
    /// nud reachable` (vcap0 is ifindex 3); it also holds two IPv6 multicast entries
    /// (`NUD_NOARP`) for ifindex 3 and 2, and ends with `NLMSG_DONE`.
    const NEIGH_DUMP: &str = "\
         4c0000001c000200070000007606000002000000030000008000000108000100c61202050a0002000200000000050000\
         08000400000000001400030022000000220000002200000000000000580000001c00020007000000760600000a000000\
         030000004000000514000100ff0200000000000000000000000000160a00020033330000001600000800040000000000\
         1400030091170000210000002100000000000000580000001c00020007000000760600000a0000000300000002000001\
         1400010020010db80000000000000000000000050a000200020000000006000008000400000000001400030022000000\
         220000002200000001000000580000001c00020007000000760600000a000000020000004000000514000100ff020000\
         0000000000000000000000160a0002003333000000160000080004000000000014000300921700002200000022000000\
         000000001400000003000200070000007606000000000000\
         ";

    /// The first messages of an `RTM_GETROUTE` dump from the same namespace, after `ip route
    /// add default via 198.18.2.254 dev vcap0` (198.18.2.1/24 and 2001:db8::1/64 on vcap0):
    /// the default route, the on-link 198.18.2.0/24, two local-table routes, and the
    /// on-link 2001:db8::/64.
    const ROUTE_DUMP: &str = "\
         340000001800020007000000eb06000002000000fe0300010000000008000f00fe00000008000500c61202fe08000400\
         030000003c0000001800020007000000eb06000002180000fe02fd010000000008000f00fe00000008000100c6120200\
         08000700c612020108000400030000003c0000001800020007000000eb06000002200000ff02fe020000000008000f00\
         ff00000008000100c612020108000700c612020108000400030000003c0000001800020007000000eb06000002200000\
         ff02fd030000000008000f00ff00000008000100c61202ff08000700c612020108000400030000007400000018000200\
         07000000eb0600000a400000fe0200010000000008000f00fe0000001400010020010db8000000000000000000000000\
         0800060000010000080004000300000024000c0000000000000000000000000000000000000000000000000000000000\
         000000000500140000000000\
         ";

    fn bytes(h: &str) -> Vec<u8> {
        hex::decode(h.split_whitespace().collect::<String>()).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn neighbors_of(buf: &[u8]) -> Result<Vec<Neighbor>, NetlinkError> {
        let mut out = Vec::new();
        for m in messages(buf) {
            let m = m?;
            if m.kind == RTM_NEWNEIGH {
                out.extend(parse_neighbor(m.payload)?);
            }
        }
        Ok(out)
    }

    fn routes_of(buf: &[u8]) -> Result<Vec<Route>, NetlinkError> {
        let mut out = Vec::new();
        for m in messages(buf) {
            let m = m?;
            if m.kind == RTM_NEWROUTE {
                out.extend(parse_route(m.payload)?);
            }
        }
        Ok(out)
    }

    #[test]
    fn parse_captured_neighbor_dump() {
        let buf = bytes(NEIGH_DUMP);
        let kinds: Vec<u16> = messages(&buf).map(|m| m.unwrap().kind).collect();
        assert_eq!(kinds, [RTM_NEWNEIGH, RTM_NEWNEIGH, RTM_NEWNEIGH, RTM_NEWNEIGH, NLMSG_DONE]);
        let n = neighbors_of(&buf).unwrap();
        assert_eq!(n.len(), 4);
        assert_eq!(
            n[0],
            Neighbor { ifindex: 3, ip: ip("198.18.2.5"), mac: Some(EthernetAddress([2, 0, 0, 0, 0, 5])), state: 0x80 }
        );
        assert_eq!(
            n[2],
            Neighbor { ifindex: 3, ip: ip("2001:db8::5"), mac: Some(EthernetAddress([2, 0, 0, 0, 0, 6])), state: 0x02 }
        );
        assert_eq!(n[1].ip, ip("ff02::16"));
        assert_eq!(n[1].mac, Some(EthernetAddress([0x33, 0x33, 0, 0, 0, 0x16])));
        assert_eq!(n[3].ifindex, 2);
        assert!(n.iter().all(Neighbor::usable));
    }

    #[test]
    fn parse_captured_route_dump() {
        let r = routes_of(&bytes(ROUTE_DUMP)).unwrap();
        assert_eq!(r.len(), 5);
        assert_eq!(
            r[0],
            Route {
                dst: ip("0.0.0.0"),
                prefix_len: 0,
                gateway: Some(ip("198.18.2.254")),
                oif: Some(3),
                table: TABLE_MAIN,
                kind: RTN_UNICAST
            }
        );
        assert_eq!((r[1].dst, r[1].prefix_len, r[1].gateway, r[1].oif), (ip("198.18.2.0"), 24, None, Some(3)));
        assert_eq!((r[2].table, r[3].table), (255, 255), "local table");
        assert_eq!((r[4].dst, r[4].prefix_len, r[4].gateway, r[4].table), (ip("2001:db8::"), 64, None, TABLE_MAIN));
        assert!(r[1].contains(ip("198.18.2.77")) && !r[1].contains(ip("198.18.3.1")));
    }

    #[test]
    fn cache_from_captured_tables() {
        let n = neighbors_of(&bytes(NEIGH_DUMP)).unwrap();
        let r = routes_of(&bytes(ROUTE_DUMP)).unwrap();
        let mut c = NeighborCache::new(3);
        c.apply(&n, &r);
        assert_eq!(c.len(), 3, "ifindex 2's entry is not ours");
        assert_eq!(c.lookup(ip("198.18.2.5")), Some(EthernetAddress([2, 0, 0, 0, 0, 5])));
        assert_eq!(c.lookup(ip("2001:db8::5")), Some(EthernetAddress([2, 0, 0, 0, 0, 6])));
        assert_eq!(c.lookup(ip("198.18.2.77")), None, "on-link and unresolved");
        assert_eq!(c.next_hop(ip("198.18.2.77")), ip("198.18.2.77"));
        // Off-link: the default route's gateway, once its MAC is known.
        assert_eq!(c.next_hop(ip("198.19.7.7")), ip("198.18.2.254"));
        assert_eq!(c.lookup(ip("198.19.7.7")), None);
        let gw_mac = EthernetAddress([2, 0, 0, 0, 0, 0xfe]);
        let mut n2 = n.clone();
        n2.push(Neighbor { ifindex: 3, ip: ip("198.18.2.254"), mac: Some(gw_mac), state: 0x02 });
        c.apply(&n2, &r);
        assert_eq!(c.lookup(ip("198.19.7.7")), Some(gw_mac));
        // Failed and incomplete entries are not usable.
        n2.push(Neighbor { ifindex: 3, ip: ip("198.18.2.9"), mac: Some(gw_mac), state: NUD_FAILED });
        n2.push(Neighbor { ifindex: 3, ip: ip("198.18.2.10"), mac: None, state: NUD_INCOMPLETE });
        c.apply(&n2, &r);
        assert_eq!(c.lookup(ip("198.18.2.9")), None);
        assert_eq!(c.lookup(ip("198.18.2.10")), None);
        // A configured gateway wins over the default route's.
        c.set_gateway(ip("198.18.2.5"));
        c.apply(&n2, &r);
        assert_eq!(c.lookup(ip("198.19.7.7")), Some(EthernetAddress([2, 0, 0, 0, 0, 5])));
        // No IPv6 default route: an off-link IPv6 destination has no next hop MAC.
        assert_eq!(c.lookup(ip("2001:db8:1::1")), None);
    }

    #[test]
    fn truncations_and_corruptions_never_panic() {
        for dump in [bytes(NEIGH_DUMP), bytes(ROUTE_DUMP)] {
            for len in 0..dump.len() {
                let _ = neighbors_of(&dump[..len]);
                let _ = routes_of(&dump[..len]);
            }
            for i in 0..dump.len() {
                for v in [0x00, 0x01, 0x03, 0x04, 0x10, 0x7f, 0xff] {
                    let mut m = dump.clone();
                    m[i] = v;
                    let _ = neighbors_of(&m);
                    let _ = routes_of(&m);
                    for msg in messages(&m).flatten() {
                        let _ = parse_link(msg.payload);
                    }
                }
            }
        }
    }

    #[test]
    fn bad_lengths_are_errors() {
        let mut buf = bytes(NEIGH_DUMP);
        // Cut inside the first message: its announced length runs past the buffer.
        assert!(matches!(neighbors_of(&buf[..40]), Err(NetlinkError::Truncated)));
        // nlmsg_len below the header size.
        buf[0..4].copy_from_slice(&8u32.to_ne_bytes());
        assert!(matches!(neighbors_of(&buf), Err(NetlinkError::BadLength)));
        // An attribute with rta_len 2.
        let mut buf = bytes(NEIGH_DUMP);
        buf[16 + NDMSG_LEN..16 + NDMSG_LEN + 2].copy_from_slice(&2u16.to_ne_bytes());
        assert!(matches!(neighbors_of(&buf), Err(NetlinkError::BadLength)));
        // An ndmsg shorter than its fixed header.
        assert!(matches!(parse_neighbor(&[0; 8]), Err(NetlinkError::Truncated)));
        assert!(matches!(parse_route(&[2; 4]), Err(NetlinkError::Truncated)));
        assert!(matches!(parse_link(&[0; 15]), Err(NetlinkError::Truncated)));
    }

    #[test]
    fn parse_link_address() {
        // ifinfomsg for ifindex 7, then IFLA_ADDRESS 02:00:00:00:00:07 (10 bytes + 2 pad).
        let mut p = vec![0u8; IFINFOMSG_LEN];
        p[4..8].copy_from_slice(&7u32.to_ne_bytes());
        p.extend_from_slice(&10u16.to_ne_bytes());
        p.extend_from_slice(&IFLA_ADDRESS.to_ne_bytes());
        p.extend_from_slice(&[2, 0, 0, 0, 0, 7, 0, 0]);
        assert_eq!(parse_link(&p).unwrap(), (7, Some(EthernetAddress([2, 0, 0, 0, 0, 7]))));
    }
}
