//! A sans-IO client session: join, protect, unprotect, keepalive, leave.
//!
//! With the relay's public key ([`ClientConfig::relay_key`]) the client joins with v2
//! ([`crate::proto::v2`]): every join attempt is a fresh Noise NK handshake (the relay's
//! replay cache refuses a retransmitted copy), a cookie reply makes the next attempt carry
//! mac2, and only an answer that decrypts under that key counts. Without it, the client
//! sends a v1 join, which relays refuse unless the app allows v1 joins.
//!
//! Used by `relay-client`, the benchmarks and the tests. The client keeps per-SSRC send
//! state (ROC) and per-SSRC receive state (replay windows) for the streams the relay
//! forwards to it. The client side may allocate: it is not the relay's per-packet path.
#![forbid(unsafe_code)]

use std::collections::HashMap;

use crate::handshake::{KeyPair, SessionSecrets};
use crate::identity::RelayKey;
use crate::ids::RoomId;
use crate::noise::Initiator;
use crate::proto::v2::{self, AnswerPayload, COOKIE_LEN};
use crate::proto::{self, DeclaredSsrc, ErrorCode, Join, JoinError, JoinOk, MsgType, Ticket, MAC_LEN, MAX_SSRCS};
use crate::srtp::{self, Profile, RtcpPacket, RtcpReceiver, RtpPacket, RtpReceiver, RtpSender, SessionKeys};

/// Errors of the client API.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The operation needs a joined session.
    #[error("not joined")]
    NotJoined,
    /// The SSRC was not declared in the join.
    #[error("SSRC {0:#x} was not declared in the join")]
    UndeclaredSsrc(u32),
    /// Too many SSRCs declared.
    #[error("at most {MAX_SSRCS} SSRCs may be declared")]
    TooManySsrcs,
    /// Encoding the join failed.
    #[error(transparent)]
    Proto(#[from] proto::Error),
    /// SRTP failed.
    #[error(transparent)]
    Srtp(#[from] srtp::Error),
}

/// What to join with.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The app.
    pub sdkappid: u32,
    /// The room.
    pub room: RoomId,
    /// The UserSig.
    pub usersig: String,
    /// An optional PrivateMapKey.
    pub private_map_key: Option<String>,
    /// The SRTP profile.
    pub profile: Profile,
    /// Streams this client will send.
    pub ssrcs: Vec<DeclaredSsrc>,
    /// The relay's static public key (`relayd key show`, or the minting API's answer):
    /// join v2 to it. `None` sends a v1 join.
    pub relay_key: Option<RelayKey>,
}

/// What a received datagram was.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// Join-ok with a valid key confirmation.
    Joined {
        /// The session id.
        session: u64,
    },
    /// Join-error (or an error answer to a keepalive).
    Refused {
        /// The code, `None` if unknown to this client.
        code: Option<ErrorCode>,
        /// The detail text.
        detail: String,
    },
    /// A keepalive was acknowledged.
    KeepaliveAck,
    /// The relay is under load and sent a cookie: send [`Client::join`] again now (the next
    /// join carries it).
    Cookie,
    /// The relay saw this session's keepalive from a new address (a NAT rebinding): join
    /// again from here.
    AddressChanged,
    /// A join answer that does not decrypt under the relay key this client holds: whoever
    /// sent it is not that relay. Ignored; the client keeps waiting for the real one.
    Unverified,
    /// A media packet, decrypted in place: `buf[..len]` is plaintext RTP or RTCP.
    Media {
        /// RTP SSRC or RTCP sender SSRC.
        ssrc: u32,
        /// RTCP rather than RTP.
        rtcp: bool,
        /// Plaintext length.
        len: usize,
        /// The SRTP/SRTCP packet index.
        index: u64,
    },
    /// Media that failed SRTP checks.
    MediaError(srtp::Error),
    /// Anything else (bad join-ok confirmation, wrong session, junk).
    Ignored,
}

struct Joined {
    session: u64,
    secrets: SessionSecrets,
    up: SessionKeys,
    down: SessionKeys,
    senders: HashMap<u32, (RtpSender, u32)>,
    receivers: HashMap<u32, (RtpReceiver, RtcpReceiver)>,
    counter: u64,
    keepalive_secs: u16,
    timeout_secs: u16,
}

/// A client session.
pub struct Client {
    cfg: ClientConfig,
    key: KeyPair,
    join: Vec<u8>,
    joined: Option<Joined>,
    /// v2: the handshake of the last join sent, and that join's mac1.
    initiator: Option<(Initiator, [u8; MAC_LEN])>,
    cookie: Option<[u8; COOKIE_LEN]>,
    attempts: u64,
}

impl Client {
    /// A client with a fresh ephemeral key.
    pub fn new(cfg: ClientConfig) -> Result<Self, Error> {
        Self::with_key(cfg, KeyPair::generate())
    }

    /// A client with a given key (deterministic tests).
    pub fn with_key(cfg: ClientConfig, key: KeyPair) -> Result<Self, Error> {
        if cfg.ssrcs.len() > MAX_SSRCS {
            return Err(Error::TooManySsrcs);
        }
        Ok(Self { cfg, key, join: Vec::new(), joined: None, initiator: None, cookie: None, attempts: 0 })
    }

    /// The config.
    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    /// Writes a join datagram stamped with the system clock; see [`join_at`](Self::join_at).
    pub fn join(&mut self, out: &mut [u8]) -> Result<usize, Error> {
        self.join_at(crate::time::unix_now_ms(), out)
    }

    /// Writes a join datagram; send a fresh one (on timeout, or after [`Event::Cookie`])
    /// until [`Event::Joined`]. `now_unix_ms` stamps a v2 join for the relay's window.
    pub fn join_at(&mut self, now_unix_ms: u64, out: &mut [u8]) -> Result<usize, Error> {
        let mut ssrcs = [None; MAX_SSRCS];
        for (s, d) in ssrcs.iter_mut().zip(&self.cfg.ssrcs) {
            *s = Some(*d);
        }
        if let Some(relay) = self.cfg.relay_key {
            let p = v2::JoinPayload {
                timestamp_ms: now_unix_ms,
                sdkappid: self.cfg.sdkappid,
                profile: self.cfg.profile.id(),
                room: self.cfg.room.clone(),
                ssrcs,
                usersig: &self.cfg.usersig,
                private_map_key: self.cfg.private_map_key.as_deref(),
            };
            // A fresh ephemeral key per attempt, derived from this client's key so that
            // deterministic tests stay deterministic.
            self.attempts += 1;
            let e = crate::handshake::derive_secret(&self.key.secret_bytes(), self.attempts);
            let (init, n) = v2::write_join(&relay, e, &p, self.cookie.as_ref(), out)?;
            let mac1 = v2::JoinFrame::new_checked(&out[..n])?.mac1();
            self.initiator = Some((init, mac1));
            self.join = out[..n].to_vec();
            return Ok(n);
        }
        let j = Join {
            sdkappid: self.cfg.sdkappid,
            profile: self.cfg.profile.id(),
            room: self.cfg.room.clone(),
            key_share: self.key.public,
            ssrcs,
            usersig: &self.cfg.usersig,
            private_map_key: self.cfg.private_map_key.as_deref(),
        };
        let n = j.write(out)?;
        self.join = out[..n].to_vec();
        Ok(n)
    }

    /// The session id once joined.
    pub fn session(&self) -> Option<u64> {
        self.joined.as_ref().map(|j| j.session)
    }

    /// The negotiated secrets once joined.
    pub fn secrets(&self) -> Option<&SessionSecrets> {
        self.joined.as_ref().map(|j| &j.secrets)
    }

    /// Keepalive interval and session timeout the relay announced.
    pub fn timers(&self) -> Option<(u16, u16)> {
        self.joined.as_ref().map(|j| (j.keepalive_secs, j.timeout_secs))
    }

    /// Handles a datagram from the relay; media is decrypted in place.
    pub fn handle(&mut self, buf: &mut [u8]) -> Event {
        match proto::demux(buf) {
            proto::Demux::Control => self.handle_control(buf),
            proto::Demux::Media => self.handle_media(buf),
            proto::Demux::Other => Event::Ignored,
        }
    }

    fn handle_control(&mut self, buf: &[u8]) -> Event {
        let Ok((version, ty, _)) = proto::parse_any_header(buf) else {
            return Event::Ignored;
        };
        if version == proto::VERSION_2 {
            return self.handle_v2(ty, buf);
        }
        match ty {
            MsgType::JoinOk => {
                let Ok(ok) = JoinOk::parse(buf) else { return Event::Ignored };
                if self.join.is_empty() {
                    return Event::Ignored;
                }
                let Ok(secrets) = self.key.agree(&ok.key_share, &self.join, &ok.key_share, self.cfg.profile) else {
                    return Event::Ignored;
                };
                if secrets.verify_confirm(ok.session, &ok.confirm).is_err() {
                    return Event::Ignored;
                }
                if self.joined.as_ref().is_some_and(|j| j.session == ok.session) {
                    return Event::Joined { session: ok.session };
                }
                self.install(ok.session, secrets, ok.keepalive_secs, ok.timeout_secs);
                Event::Joined { session: ok.session }
            }
            MsgType::JoinError => match JoinError::parse(buf) {
                Ok(e) => Event::Refused { code: e.code, detail: e.detail.to_owned() },
                Err(_) => Event::Ignored,
            },
            MsgType::KeepaliveAck => {
                let (Ok(t), Some(j)) = (Ticket::parse(buf), self.joined.as_ref()) else {
                    return Event::Ignored;
                };
                if t.session == j.session && j.secrets.verify_ticket(&t) {
                    Event::KeepaliveAck
                } else {
                    Event::Ignored
                }
            }
            _ => Event::Ignored,
        }
    }

    fn handle_v2(&mut self, ty: MsgType, buf: &[u8]) -> Event {
        match ty {
            MsgType::JoinOk => {
                let Some((init, _)) = self.initiator.as_ref() else { return Event::Ignored };
                let mut copy = [0u8; proto::MAX_LEN];
                let copy = &mut copy[..buf.len()];
                copy.copy_from_slice(buf);
                let Ok((answer, split)) = v2::read_answer(init, copy) else { return Event::Unverified };
                match answer {
                    AnswerPayload::Refused { code, detail } => {
                        Event::Refused { code: ErrorCode::from_u16(code), detail: detail.to_owned() }
                    }
                    AnswerPayload::Joined { session, keepalive_secs, timeout_secs } => {
                        let secrets = SessionSecrets::from_split(&split, self.cfg.profile);
                        self.initiator = None;
                        self.install(session, secrets, keepalive_secs, timeout_secs);
                        Event::Joined { session }
                    }
                }
            }
            MsgType::Cookie => {
                let (Some(relay), Some((_, mac1))) = (self.cfg.relay_key, self.initiator.as_ref()) else {
                    return Event::Ignored;
                };
                match v2::read_cookie(&relay, mac1, buf) {
                    Ok(c) => {
                        self.cookie = Some(c);
                        Event::Cookie
                    }
                    Err(_) => Event::Ignored,
                }
            }
            MsgType::KeepaliveAck | MsgType::AddressChanged => {
                let (Ok(t), Some(j)) = (Ticket::parse(buf), self.joined.as_ref()) else {
                    return Event::Ignored;
                };
                if t.session != j.session || !j.secrets.verify_ticket(&t) {
                    return Event::Ignored;
                }
                if t.ty == MsgType::AddressChanged {
                    Event::AddressChanged
                } else {
                    Event::KeepaliveAck
                }
            }
            // A v1-format refusal of a ticket (unknown session) is sent for v2 sessions too.
            _ => Event::Ignored,
        }
    }

    fn install(&mut self, session: u64, secrets: SessionSecrets, keepalive_secs: u16, timeout_secs: u16) {
        let senders = self.cfg.ssrcs.iter().map(|d| (d.ssrc.get(), (RtpSender::new(), 0))).collect();
        self.joined = Some(Joined {
            session,
            up: secrets.c2r.session_keys(),
            down: secrets.r2c.session_keys(),
            secrets,
            senders,
            receivers: HashMap::new(),
            counter: 0,
            keepalive_secs,
            timeout_secs,
        });
    }

    fn handle_media(&mut self, buf: &mut [u8]) -> Event {
        let Some(j) = self.joined.as_mut() else {
            return Event::Ignored;
        };
        let rtcp = proto::is_rtcp(buf);
        let ssrc = if rtcp {
            RtcpPacket::new_checked(&*buf).map(|p| p.sender_ssrc_value())
        } else {
            RtpPacket::new_checked(&*buf).map(|p| p.ssrc_value())
        };
        let ssrc = match ssrc {
            Ok(ssrc) => ssrc,
            Err(e) => return Event::MediaError(e),
        };
        // Receive state is created on first sight; bound it so junk cannot grow it.
        if !j.receivers.contains_key(&ssrc) && j.receivers.len() >= 4096 {
            return Event::Ignored;
        }
        let (rtp_rx, rtcp_rx) = j.receivers.entry(ssrc).or_insert_with(|| (RtpReceiver::new(), RtcpReceiver::new()));
        let res = if rtcp { j.down.unprotect_rtcp(rtcp_rx, buf) } else { j.down.unprotect_rtp(rtp_rx, buf) };
        match res {
            Ok(u) => Event::Media { ssrc, rtcp, len: u.len, index: u.index },
            Err(e) => Event::MediaError(e),
        }
    }

    /// Protects an RTP packet `buf[..len]` from a declared SSRC; returns the SRTP length.
    pub fn protect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, Error> {
        let j = self.joined.as_mut().ok_or(Error::NotJoined)?;
        let pkt = RtpPacket::new_checked(buf.get(..len).ok_or(srtp::Error::BufferTooSmall)?)?;
        let ssrc = pkt.ssrc_value();
        let (sender, _) = j.senders.get_mut(&ssrc).ok_or(Error::UndeclaredSsrc(ssrc))?;
        let roc = sender.next_roc(pkt.seq().get());
        Ok(j.up.protect_rtp(buf, len, roc)?)
    }

    /// Protects an RTCP packet `buf[..len]` whose sender SSRC was declared.
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, Error> {
        let j = self.joined.as_mut().ok_or(Error::NotJoined)?;
        let ssrc = RtcpPacket::new_checked(buf.get(..len).ok_or(srtp::Error::BufferTooSmall)?)?.sender_ssrc_value();
        let (_, index) = j.senders.get_mut(&ssrc).ok_or(Error::UndeclaredSsrc(ssrc))?;
        let n = j.up.protect_rtcp(buf, len, *index)?;
        *index += 1;
        Ok(n)
    }

    fn ticket(&mut self, ty: MsgType, out: &mut [u8]) -> Result<usize, Error> {
        let j = self.joined.as_mut().ok_or(Error::NotJoined)?;
        j.counter += 1;
        Ok(j.secrets.ticket(ty, j.session, j.counter).write(out)?)
    }

    /// Writes an authenticated keepalive.
    pub fn keepalive(&mut self, out: &mut [u8]) -> Result<usize, Error> {
        self.ticket(MsgType::Keepalive, out)
    }

    /// Writes an authenticated leave and forgets the session.
    pub fn leave(&mut self, out: &mut [u8]) -> Result<usize, Error> {
        let n = self.ticket(MsgType::Leave, out)?;
        self.joined = None;
        Ok(n)
    }
}

/// Writes a minimal RTP header (V=2, no CSRC, no extension) and returns its length (12).
pub fn write_rtp_header(buf: &mut [u8], payload_type: u8, seq: u16, timestamp: u32, ssrc: u32) -> usize {
    buf[0] = 0x80;
    buf[1] = payload_type & 0x7f;
    buf[2..4].copy_from_slice(&seq.to_be_bytes());
    buf[4..8].copy_from_slice(&timestamp.to_be_bytes());
    buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
    12
}

/// Writes a minimal RTCP receiver report header with no report blocks; returns 8.
pub fn write_rtcp_rr(buf: &mut [u8], ssrc: u32) -> usize {
    buf[0] = 0x80;
    buf[1] = 201;
    buf[2..4].copy_from_slice(&1u16.to_be_bytes());
    buf[4..8].copy_from_slice(&ssrc.to_be_bytes());
    8
}
