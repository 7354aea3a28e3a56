//! edgerelay itself under the baseline load: relayd with one worker, pinned to the relay CPU,
//! on loopback (socket backend) or in the rig's namespace topology ([`crate::rig`], XDP
//! backend), fan-out 1, driven by the same pacer and search as rtpengine.
//!
//! Every probe joins a fresh sender and receiver into a fresh room with real keys from the
//! join handshake ([`relay::client`]), so no probe inherits state from an earlier one. On
//! loopback the receiver verifies every packet with its downlink key; in the namespace
//! topology every relayed packet is captured and verified after the probe ([`Rig`]).

use std::net::UdpSocket;
use std::path::Path;

use anyhow::{bail, Context, Result};
use relay::client::{write_rtp_header, Client, Event};
use relay::config::Backend;
use relay::srtp::Profile;

use crate::load::{self, MakePacket, Probe, SearchArgs, Sink, Traffic, Verify};
use crate::procs::Cpus;
use crate::relayd::{self, join, Member, Relayd};
use crate::rig::Rig;

const SSRC: u32 = 0x5eed;

/// A packet maker for `member`: RTP of `size` bytes from [`SSRC`], protected with its keys.
pub fn maker(member: Member, size: usize) -> MakePacket {
    let Member { mut client, .. } = member;
    let mut seq = 1u16;
    Box::new(move |buf| {
        let h = write_rtp_header(buf, 96, seq, u32::from(seq).wrapping_mul(3000), SSRC);
        seq = seq.wrapping_add(1);
        buf.get_mut(h..size).context("packet size below the RTP header")?.fill(0x42);
        Ok(client.protect_rtp(buf, size)?)
    })
}

/// A receiver check for `client`: only downlink media that authenticates passes.
pub fn verifier(mut client: Client) -> Verify {
    Box::new(move |buf| match client.handle(buf) {
        Event::Media { .. } => Ok(()),
        Event::MediaError(e) => Err(e),
        // Nothing but media is expected during a probe.
        _ => Err(relay::srtp::Error::TooShort),
    })
}

/// relayd under test, with its network: the socket backend on loopback, probed like the
/// baselines (a sender that makes each packet as it goes, a verifying socket receiver), or the
/// XDP backend in the throughput scenario's namespaces ([`Rig`]: pre-protected
/// packets from the AF_XDP generator, every relayed packet captured and verified).
pub enum Target {
    /// relayd on loopback.
    Loopback(Loopback),
    /// relayd in namespaces.
    Veth(Box<Rig>),
}

/// relayd on loopback and the state of its probes.
pub struct Loopback {
    relayd: Relayd,
    rooms: u32,
    /// Sockets of earlier probes' members, kept open for the target's life. Their sessions
    /// outlive the probe (no leave is sent), and relayd refuses a join from an address that
    /// holds another user's session (`address_in_use`), so their ports must not be reused.
    spent: Vec<UdpSocket>,
}

impl Target {
    /// Starts relayd on `backend`: socket on loopback, XDP in a fresh namespace topology.
    pub fn start(bin: &Path, backend: Backend, cpus: Cpus, size: usize) -> Result<Self> {
        match backend {
            Backend::Xdp => Ok(Self::Veth(Box::new(Rig::fan_out_one(bin, cpus, backend, size)?))),
            _ => Ok(Self::Loopback(Loopback {
                relayd: relayd::start(bin, None, backend, Some(cpus))?,
                rooms: 0,
                spent: Vec::new(),
            })),
        }
    }

    /// One probe at `rate` (see [`Loopback::probe`] and [`Rig::probe`]).
    pub fn probe(&mut self, rate: f64, size: usize, search: &SearchArgs, cpus: Cpus) -> Result<Probe> {
        match self {
            Self::Loopback(l) => l.probe(rate, size, search, cpus),
            Self::Veth(rig) => rig.probe(rate, search, &mut Vec::new()),
        }
    }
}

impl Loopback {
    /// One probe at `rate`: a fresh room with one sender and one receiver.
    pub fn probe(&mut self, rate: f64, size: usize, search: &SearchArgs, cpus: Cpus) -> Result<Probe> {
        self.rooms += 1;
        let profile = Profile::AesCm128HmacSha1_80;
        let socket = || relay::io::sys::bind_reuseport("127.0.0.1:0".parse().expect("an address"), 4 << 20);
        let sender = join(socket()?, self.relayd.addr, self.relayd.key, self.rooms, "sender", Some(SSRC), profile)?;
        let receiver = join(socket()?, self.relayd.addr, self.relayd.key, self.rooms, "receiver", None, profile)?;
        self.spent.push(sender.sock.try_clone()?);
        self.spent.push(receiver.sock.try_clone()?);
        let tx = sender.sock.try_clone()?;
        let Member { sock, client } = receiver;
        let sink = Sink { sock, verify: verifier(client) };
        let traffic = Traffic { tx, dst: self.relayd.addr, make: maker(sender, size), sink };
        let before = self.relayd.snapshot()?.tx_packets;
        let mut p = load::probe(traffic, rate, search.probe_secs, self.relayd.pid(), cpus, search.max_loss)?;
        p.relay_sent = Some(self.relayd.snapshot()?.tx_packets - before);
        if p.auth_failed > 0 {
            bail!("{} packets relayed by relayd (socket backend) failed the receiver's SRTP check", p.auth_failed);
        }
        Ok(p)
    }
}
