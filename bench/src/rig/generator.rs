//! The throughput scenario's traffic generators: a UDP socket with `sendmmsg`, or an AF_XDP
//! socket that writes whole Ethernet frames onto the clients' veth.
//!
//! Both send the same pre-protected SRTP payloads from the sender's joined address to relayd.
//! The socket generator pays for the sender's UDP/IP stack on every packet and tops out well
//! below what relayd's XDP backend can take, so the comparison would measure the generator.
//! The AF_XDP generator builds each frame once ([`frame`]: Ethernet, IPv4 with its header
//! checksum, UDP with its checksum, via [`relay::wire::write_udp_headers`]) and then only
//! copies it into the UMEM and wakes the kernel, which hands it straight to the veth.
//!
//! Invariants: the AF_XDP socket is bound (copy mode, queue 0) to the clients' veth inside
//! the clients' namespace and is only used to transmit; no XDP program redirects to it, so
//! the counting sink on the same veth keeps counting everything relayd sends. "Offered" is
//! what the kernel completed (`tx_completed`), not what was queued.

use std::net::SocketAddr;

use anyhow::{bail, Context, Result};
use relay::io::afxdp::{XskConfig, XskMode, XskPort};
use relay::io::netlink::RouteSocket;
use relay::io::netns::{self, NetNs};
use relay::io::sys::SendBatch;
use relay::wire::{self, EthernetAddress};

use crate::rig::topology::Topology;

/// Datagrams per `sendmmsg` of the socket generator.
const SOCKET_BATCH: usize = 64;

/// Which generator sends the sender's packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// AF_XDP if the socket opens, else the UDP socket (with a note).
    Auto,
    /// AF_XDP frames on the clients' veth; fails if AF_XDP is unavailable.
    Afxdp,
    /// A UDP socket with `sendmmsg`.
    Socket,
}

/// The Ethernet frame carrying `payload` from `src` to `dst`, checksums filled.
pub fn frame(
    macs: (EthernetAddress, EthernetAddress),
    src: SocketAddr,
    dst: SocketAddr,
    payload: &[u8],
) -> Result<Vec<u8>> {
    let hdr = wire::headers_len(true, dst.is_ipv4());
    let mut f = vec![0u8; hdr + payload.len()];
    f[hdr..].copy_from_slice(payload);
    wire::write_udp_headers(&mut f, Some(macs), src, dst, payload.len()).context("writing frame headers")?;
    Ok(f)
}

/// The MAC of interface `name` in namespace `ns`.
fn link_mac(ns: &NetNs, name: &str) -> Result<EthernetAddress> {
    let _g = ns.enter()?;
    let index = netns::ifindex(name).with_context(|| format!("no interface {name}"))?;
    RouteSocket::open()?
        .link_mac(index)
        .with_context(|| format!("reading the MAC of {name}"))?
        .with_context(|| format!("{name} has no MAC"))
}

/// An AF_XDP socket (copy mode, queue 0) on the clients' end of `topo`'s veth: the AF_XDP
/// generator's, and the receivers' when the sink redirects relayd's output into it. Its rings
/// are sized for receiving a fan-out's worth of frames between two drains.
pub fn open_port(topo: &Topology) -> Result<XskPort> {
    let _g = topo.client_ns.enter()?;
    let index = netns::ifindex(&topo.veth.name_b)?;
    let cfg = XskConfig {
        mode: XskMode::Copy,
        frames: 16384,
        rx_size: 4096,
        fill_size: 4096,
        completion_size: 4096,
        tx_size: 2048,
        ..XskConfig::default()
    };
    Ok(XskPort::open(index, 0, cfg)?)
}

/// What [`Generator::try_send`] did with a chunk.
#[derive(Clone, Copy, Debug, Default)]
pub struct Offer {
    /// Items taken from the front of the chunk (sent, queued or refused).
    pub taken: usize,
    /// Of those, the ones the socket refused.
    pub refused: usize,
}

/// A generator bound to one sender.
pub enum Generator {
    /// `sendmmsg` on the sender's connected socket.
    Socket {
        /// The staging batch.
        batch: SendBatch,
    },
    /// Frames from an AF_XDP socket on the clients' veth.
    Afxdp {
        /// The port (transmit only).
        port: Box<XskPort>,
        /// Source and destination MACs.
        macs: (EthernetAddress, EthernetAddress),
    },
}

impl Generator {
    /// Opens the generator `kind` in `topo`'s clients' namespace.
    pub fn open(kind: Kind, topo: &Topology) -> Result<Self> {
        let afxdp = || -> Result<Self> {
            let macs = (link_mac(&topo.client_ns, &topo.veth.name_b)?, link_mac(&topo.relay_ns, &topo.veth.name_a)?);
            let port = open_port(topo).context("opening the AF_XDP generator socket")?;
            Ok(Self::Afxdp { port: Box::new(port), macs })
        };
        match kind {
            Kind::Socket => Ok(Self::Socket { batch: SendBatch::new(SOCKET_BATCH) }),
            Kind::Afxdp => afxdp(),
            Kind::Auto => afxdp().or_else(|e| {
                eprintln!("note: AF_XDP generator unavailable ({e:#}); using the UDP socket generator");
                Ok(Self::Socket { batch: SendBatch::new(SOCKET_BATCH) })
            }),
        }
    }

    /// The (source, destination) MACs of the AF_XDP generator's frames; `None` for the
    /// socket generator.
    pub fn macs(&self) -> Option<(EthernetAddress, EthernetAddress)> {
        match self {
            Self::Socket { .. } => None,
            Self::Afxdp { macs, .. } => Some(*macs),
        }
    }

    /// `afxdp` or `socket`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Socket { .. } => "socket",
            Self::Afxdp { .. } => "afxdp",
        }
    }

    /// Turns UDP payloads sent over `sock` into what [`send`](Self::send) takes: the payloads
    /// themselves, or whole frames from `sock`'s address to its peer.
    pub fn prepare(&self, sock: &std::net::UdpSocket, payloads: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>> {
        match self {
            Self::Socket { .. } => Ok(payloads),
            Self::Afxdp { macs, .. } => {
                let (src, dst) = (sock.local_addr()?, sock.peer_addr()?);
                payloads.iter().map(|p| frame(*macs, src, dst, p)).collect()
            }
        }
    }

    /// Sends `chunk` (at most 64 items from [`prepare`](Self::prepare)), waiting out
    /// back-pressure. Returns the packets offered so far in total.
    pub fn send(&mut self, sock: &std::net::UdpSocket, chunk: &[Vec<u8>], offered: u64) -> Result<u64> {
        match self {
            Self::Socket { batch } => {
                let dst = sock.peer_addr()?;
                for p in chunk {
                    batch.next_buffer().context("more than a batch")?[..p.len()].copy_from_slice(p);
                    batch.push(dst, p.len());
                }
                Ok(offered + batch.flush(sock).sent as u64)
            }
            Self::Afxdp { port, .. } => {
                for f in chunk {
                    let mut tries = 0u32;
                    while !port.send_raw_frame(f) {
                        port.kick().context("AF_XDP TX wake-up")?;
                        tries += 1;
                        if tries > 1_000_000 {
                            bail!("AF_XDP TX made no progress: {:?}", port.accounting());
                        }
                    }
                }
                port.kick().context("AF_XDP TX wake-up")?;
                Ok(port.counters().tx_completed)
            }
        }
    }

    /// Offers as much of `chunk` as the generator takes now, without waiting: returns how
    /// many it took and how many the socket refused (would block; those are not retried).
    /// For AF_XDP, taking a frame means queueing it; the kernel completes it later
    /// (`tx_completed`).
    pub fn try_send(&mut self, sock: &std::net::UdpSocket, chunk: &[Vec<u8>]) -> Result<Offer> {
        match self {
            Self::Socket { batch } => {
                let dst = sock.peer_addr()?;
                for p in chunk.iter().take(SOCKET_BATCH) {
                    batch.next_buffer().context("more than a batch")?[..p.len()].copy_from_slice(p);
                    batch.push(dst, p.len());
                }
                let f = batch.flush(sock);
                Ok(Offer { taken: f.sent + f.dropped, refused: f.dropped })
            }
            Self::Afxdp { port, .. } => {
                let taken = chunk.iter().take_while(|f| port.send_raw_frame(f)).count();
                port.kick().context("AF_XDP TX wake-up")?;
                Ok(Offer { taken, refused: 0 })
            }
        }
    }

    /// The AF_XDP generator's port, which can also receive; `None` for the socket generator.
    pub fn port_mut(&mut self) -> Option<&mut XskPort> {
        match self {
            Self::Socket { .. } => None,
            Self::Afxdp { port, .. } => Some(port),
        }
    }

    /// Waits (briefly) for frames still in the kernel; returns the final offered count.
    pub fn finish(&mut self, offered: u64) -> Result<u64> {
        match self {
            Self::Socket { .. } => Ok(offered),
            Self::Afxdp { port, .. } => {
                for _ in 0..1000 {
                    port.kick().context("AF_XDP TX wake-up")?;
                    let a = port.accounting();
                    if a.in_tx == 0 && a.in_completion == 0 {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_micros(100));
                }
                Ok(port.counters().tx_completed)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use relay::wire::{Ipv4Packet, UdpPacket};

    use super::*;

    #[test]
    fn frames_parse_and_their_checksums_verify() {
        let macs = (EthernetAddress([2, 0, 0, 0, 0, 2]), EthernetAddress([2, 0, 0, 0, 0, 1]));
        let src: SocketAddr = "198.18.0.2:40000".parse().unwrap();
        let dst: SocketAddr = "198.18.0.1:7000".parse().unwrap();
        // An RTP-looking payload of odd length, so the checksum's odd-byte padding is exercised.
        let payload: Vec<u8> = (0..1211u32).map(|i| (i * 7 + 0x80) as u8).collect();
        let f = frame(macs, src, dst, &payload).unwrap();
        assert_eq!(f.len(), 14 + 20 + 8 + payload.len());

        let meta = wire::parse_udp(&f).expect("the frame parses (IPv4 header checksum included)");
        assert_eq!((meta.src, meta.dst), (src, dst));
        assert_eq!((meta.src_mac, meta.dst_mac), macs);
        assert_eq!(&f[meta.payload], &payload[..]);

        let ip = Ipv4Packet::new_checked(&f[14..]).unwrap();
        assert_eq!(usize::from(ip.total_len()), 20 + 8 + payload.len());
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        assert_ne!(udp.checksum(), 0, "the UDP checksum is filled, not left out");
        let (IpAddr::V4(s), IpAddr::V4(d)) = (src.ip(), dst.ip()) else { unreachable!() };
        assert!(udp.verify_checksum_v4(s, d));

        // A flipped payload bit breaks the UDP checksum: the check above is real.
        let mut bad = f.clone();
        *bad.last_mut().unwrap() ^= 1;
        let ip = Ipv4Packet::new_checked(&bad[14..]).unwrap();
        assert!(!UdpPacket::new_checked(ip.payload()).unwrap().verify_checksum_v4(s, d));
        let wrong_dst = Ipv4Addr::new(198, 18, 0, 3);
        let ip = Ipv4Packet::new_checked(&f[14..]).unwrap();
        assert!(!UdpPacket::new_checked(ip.payload()).unwrap().verify_checksum_v4(s, wrong_dst));
    }
}
