//! The management commands relayd's control thread runs for its management socket
//! ([`crate::mgmt`] has the protocol): operator actions on the registry (dismiss a room,
//! remove a user, replace the app set), and on the XDP filter (blocklist, per-source
//! limits, offenders).
//!
//! Each command runs on the control thread between control datagrams, so it is just
//! another registry change: the session [`Update`]s it causes are returned to the caller,
//! which sends them to the workers. `stats` is answered by the control thread itself (it
//! owns the counters).
#![forbid(unsafe_code)]

use crate::config::App;
use crate::ids::{RoomId, RoomKey, SdkAppId, UserId};
use crate::limits::Limits;
use crate::mgmt::{
    room_text, Answer, BlockInfo, KeyInfo, MemberInfo, Offender, PeerSpec, RefusalCode, Request, Response, RoomInfo,
    OFFENDERS_DEFAULT_LIMIT, ROOMS_DEFAULT_LIMIT, ROOMS_MAX_LIMIT,
};
use crate::proto::leg;
use crate::registry::{Now, Peer, Registry, Update};
use crate::usersig::PrivilegeMap as P;

use super::xdp::{FilterConfig, XdpFilter};

/// Longest overlap a key rotation may give the old key.
pub const MAX_KEY_OVERLAP_SECS: u64 = 30 * 86_400;

/// What the commands act on, borrowed from the control thread.
pub struct Managed<'a> {
    /// The sessions and rooms.
    pub registry: &'a mut Registry,
    /// The XDP filter (XDP backend only).
    pub filter: Option<&'a mut XdpFilter>,
    /// The limits in force (mirrored into the filter's `config` map on XDP).
    pub limits: &'a mut Limits,
    /// relayd's bound UDP address: every port range must contain its port.
    pub local_addr: std::net::SocketAddr,
    /// Where the relay's static keys are saved (a rotation writes it before answering).
    pub key_file: Option<&'a std::path::Path>,
    /// The time.
    pub now: Now,
}

fn invalid(msg: impl Into<String>) -> Response {
    Response::refused(RefusalCode::Invalid, msg)
}

fn failed(e: impl std::fmt::Display) -> Response {
    Response::refused(RefusalCode::Failed, e.to_string())
}

fn room_key(sdkappid: u64, room: &str) -> Result<RoomKey, String> {
    let app = SdkAppId::new(sdkappid).map_err(|e| format!("sdkappid {sdkappid}: {e}"))?;
    let room = RoomId::parse(room).map_err(|e| format!("room {room:?}: {e}"))?;
    Ok(RoomKey { app, room })
}

/// Runs one command (anything but `stats`); the updates it causes go into `updates`.
pub fn execute(req: Request, m: Managed<'_>, updates: &mut Vec<Update>) -> Response {
    match req {
        Request::Stats {} | Request::Reload {} => {
            Response::refused(RefusalCode::BadRequest, "stats and reload are answered by the control thread")
        }
        Request::DismissRoom { sdkappid, room } => match room_key(sdkappid, &room) {
            Ok(k) => {
                let n = m.registry.dismiss_room(m.now, &k, updates);
                tracing::info!(room = %k, sessions = n, "room dismissed by the operator");
                Response::Ok(Answer::Removed(n as u64))
            }
            Err(e) => invalid(e),
        },
        Request::RemoveUser { sdkappid, room, user, ban_secs } => match (room_key(sdkappid, &room), UserId::new(&user))
        {
            (Ok(k), Ok(u)) => {
                if ban_secs > 0 {
                    m.registry.ban(&k, &u, crate::time::unix_now().saturating_add(ban_secs));
                }
                let n = u64::from(m.registry.remove_user(&k, &u, updates));
                tracing::info!(room = %k, user = %u, removed = n, ban_secs, "user removed by the operator");
                Response::Ok(Answer::Removed(n))
            }
            (Err(e), _) => invalid(e),
            (_, Err(e)) => invalid(format!("user {user:?}: {e}")),
        },
        Request::SetApps { apps } => {
            let mut valid: Vec<App> = Vec::with_capacity(apps.len());
            for a in apps {
                let app =
                    SdkAppId::new(a.sdkappid).map_err(|e| format!("sdkappid {}: {e}", a.sdkappid)).and_then(|id| {
                        let mut app = App::new(id, a.secrets, a.require_private_map_key, a.profiles, a.quotas)
                            .map_err(|e| e.to_string())?;
                        app.allow_v1_joins = a.allow_v1_joins;
                        Ok(app)
                    });
                // All or nothing: a bad push leaves the running config as it was.
                match app {
                    Ok(app) if valid.iter().any(|v| v.sdkappid == app.sdkappid) => {
                        return invalid(format!("app {} given twice", app.sdkappid));
                    }
                    Ok(app) => valid.push(app),
                    Err(e) => return invalid(e),
                }
            }
            let n = m.registry.set_apps(valid, updates);
            tracing::info!(ended = n, "apps replaced by a push");
            Response::Ok(Answer::Removed(n as u64))
        }
        Request::Key {} => {
            Response::Ok(Answer::Key(KeyInfo { listen: Some(m.local_addr), ..KeyInfo::of(m.registry.identity()) }))
        }
        Request::RotateKey { overlap_secs } => {
            if overlap_secs > MAX_KEY_OVERLAP_SECS {
                return invalid(format!("overlap_secs must be at most {MAX_KEY_OVERLAP_SECS} (30 days)"));
            }
            let now = crate::time::unix_now();
            let mut id = m.registry.identity().clone();
            id.rotate(now, overlap_secs);
            // Saved first: a relayd restarted after answering must still hold the new key.
            if let Some(path) = m.key_file {
                if let Err(e) = id.save(path) {
                    return failed(format!("cannot save the rotated key: {e}"));
                }
            }
            m.registry.set_identity(id, now);
            let info = KeyInfo { listen: Some(m.local_addr), ..KeyInfo::of(m.registry.identity()) };
            tracing::info!(key = %info.public_key, overlap_secs, "relay key rotated");
            Response::Ok(Answer::Key(info))
        }
        Request::Block { ip, prefix_len, ttl_secs } => {
            let Some(f) = m.filter else {
                return Response::refused(RefusalCode::NeedsXdp, "blocking needs the XDP backend");
            };
            let expires = match ttl_secs {
                0 => 0,
                t => xdp_prog::boot_time_ns().saturating_add(t.saturating_mul(1_000_000_000)),
            };
            match f.block(ip, prefix_len, expires) {
                Ok(()) => {
                    tracing::info!(%ip, prefix_len, ttl_secs, "source blocked by the operator");
                    Response::Ok(Answer::Done)
                }
                Err(e @ super::xdp::Error::PrefixLen { .. }) => invalid(e.to_string()),
                Err(e) => failed(e),
            }
        }
        Request::Unblock { ip, prefix_len } => {
            let Some(f) = m.filter else {
                return Response::refused(RefusalCode::NeedsXdp, "unblocking needs the XDP backend");
            };
            match f.unblock(ip, prefix_len) {
                Ok(found) => {
                    tracing::info!(%ip, prefix_len, found, "source unblocked by the operator");
                    Response::Ok(Answer::Removed(u64::from(found)))
                }
                Err(e @ super::xdp::Error::PrefixLen { .. }) => invalid(e.to_string()),
                Err(e) => failed(e),
            }
        }
        Request::Blocklist {} => {
            let Some(f) = m.filter else { return Response::Ok(Answer::Blocks(Vec::new())) };
            let now = xdp_prog::boot_time_ns();
            match f.blocklist(now) {
                Ok(list) => Response::Ok(Answer::Blocks(
                    list.into_iter()
                        .map(|b| BlockInfo {
                            ip: b.ip,
                            prefix_len: b.prefix_len,
                            expires_in_secs: (b.expires_ns != 0)
                                .then(|| (b.expires_ns.saturating_sub(now)).div_ceil(1_000_000_000)),
                        })
                        .collect(),
                )),
                Err(e) => failed(e),
            }
        }
        Request::Rooms { sdkappid, limit } => rooms(m.registry, sdkappid, limit),
        Request::GetLimits {} => Response::Ok(Answer::Limits(current_limits(m.filter.as_deref(), *m.limits))),
        Request::SetLimits(l) => set_limits(m, l),
        Request::Offenders { limit } => {
            let Some(f) = m.filter else { return Response::Ok(Answer::Offenders(Vec::new())) };
            match f.offenders(limit.unwrap_or(OFFENDERS_DEFAULT_LIMIT) as usize) {
                Ok(list) => Response::Ok(Answer::Offenders(
                    list.into_iter().map(|(ip, dropped_packets)| Offender { ip, dropped_packets }).collect(),
                )),
                Err(e) => failed(e),
            }
        }
        Request::SetPeers { node, peers } => set_peers(m, node, peers, updates),
        Request::OpenLeg { sdkappid, room, peer } => match room_key(sdkappid, &room) {
            Ok(k) => match m.registry.open_leg(m.now, &k, &peer) {
                Ok(()) => Response::Ok(Answer::Done),
                Err(e) => Response::refused(RefusalCode::NotFound, e),
            },
            Err(e) => invalid(e),
        },
        Request::Legs {} => Response::Ok(Answer::Legs(m.registry.legs(m.now.mono_ms))),
        Request::RoomEvents { after } => Response::Ok(Answer::RoomEvents(m.registry.room_events(after))),
    }
}

/// Checks and installs the cluster's peers: ids non-empty and unique, at most
/// [`leg::MAX_NODE_LEN`] bytes, none of them this node, none at relayd's own address.
fn set_peers(m: Managed<'_>, node: String, peers: Vec<PeerSpec>, updates: &mut Vec<Update>) -> Response {
    let id_ok = |n: &str| !n.is_empty() && n.len() <= leg::MAX_NODE_LEN;
    if !id_ok(&node) {
        return invalid(format!("node id {node:?}: 1 to {} bytes", leg::MAX_NODE_LEN));
    }
    let mut list: Vec<Peer> = Vec::with_capacity(peers.len());
    for p in peers {
        if !id_ok(&p.node) {
            return invalid(format!("peer id {:?}: 1 to {} bytes", p.node, leg::MAX_NODE_LEN));
        }
        if p.node == node {
            return invalid(format!("peer {:?} is this node", p.node));
        }
        if p.endpoint == m.local_addr {
            return invalid(format!("peer {:?}: {} is this relay's own address", p.node, p.endpoint));
        }
        if list.iter().any(|q| q.node == p.node || q.endpoint == p.endpoint) {
            return invalid(format!("peer {:?} ({}) given twice", p.node, p.endpoint));
        }
        list.push(Peer { node: p.node, endpoint: p.endpoint, key: p.public_key });
    }
    let n = list.len();
    let closed = m.registry.set_peers(node, list, updates);
    tracing::info!(peers = n, legs_closed = closed, "cascade peers set");
    Response::Ok(Answer::Removed(closed as u64))
}

fn rooms(registry: &Registry, sdkappid: Option<u64>, limit: Option<u32>) -> Response {
    let limit = limit.unwrap_or(ROOMS_DEFAULT_LIMIT);
    if limit > ROOMS_MAX_LIMIT {
        return invalid(format!("limit {limit}: at most {ROOMS_MAX_LIMIT}"));
    }
    let app = match sdkappid.map(SdkAppId::new).transpose() {
        Ok(a) => a,
        Err(e) => return invalid(format!("sdkappid {}: {e}", sdkappid.unwrap_or_default())),
    };
    let rooms = registry
        .list_rooms(app, limit as usize)
        .into_iter()
        .map(|(key, members)| RoomInfo {
            sdkappid: key.app.get().into(),
            room: room_text(&key.room),
            members: members
                .into_iter()
                .map(|m| MemberInfo {
                    user: m.user.as_str().to_owned(),
                    addr: m.addr.to_string(),
                    send: m.privileges.contains(P::SEND_AUDIO) || m.privileges.contains(P::SEND_VIDEO),
                    recv: m.privileges.contains(P::RECV_AUDIO) || m.privileges.contains(P::RECV_VIDEO),
                })
                .collect(),
        })
        .collect();
    Response::Ok(Answer::Rooms(rooms))
}

/// The limits in force: read back from the kernel on the XDP backend.
pub fn current_limits(filter: Option<&XdpFilter>, configured: Limits) -> Limits {
    let Some(f) = filter else { return configured };
    match f.config() {
        Ok(c) => {
            let u32_of = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
            Limits {
                pps_rate_per_sec: u32_of(c.pps_rate_per_sec),
                pps_burst: u32_of(c.pps_burst),
                join_rate_per_sec: u32_of(c.join_rate_per_sec),
                join_burst: u32_of(c.join_burst),
                port_min: c.port_lo,
                port_max: c.port_hi,
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the XDP config map");
            configured
        }
    }
}

/// Writes the `[xdp]` per-source rates and the control budget of `x` into the kernel's
/// `config` map (a reload), keeping its port range.
pub fn apply_xdp_rates(f: &mut XdpFilter, x: &crate::config::XdpSettings) -> Result<(), super::xdp::Error> {
    let current = f.config()?;
    f.set_config(super::xdp::with_rates(current, x))
}

fn set_limits(m: Managed<'_>, l: Limits) -> Response {
    let Some(f) = m.filter else {
        return Response::refused(
            RefusalCode::NeedsXdp,
            "per-source limits need the xdp backend: this relayd runs the socket backend, which has none",
        );
    };
    if let Err(e) = l.check_for(m.local_addr.port()) {
        return invalid(e.to_string());
    }
    // The global control budget is relayd's config, not a per-source limit: kept as it is.
    let current = match f.config() {
        Ok(c) => c,
        Err(e) => return failed(e),
    };
    let fc = FilterConfig {
        port_lo: l.port_min,
        port_hi: l.port_max,
        join_rate_per_sec: l.join_rate_per_sec.into(),
        join_burst: l.join_burst.into(),
        pps_rate_per_sec: l.pps_rate_per_sec.into(),
        pps_burst: l.pps_burst.into(),
        ..current
    };
    match f.set_config(fc) {
        Ok(()) => {
            *m.limits = l;
            tracing::info!(limits = ?l, "limits changed");
            Response::Ok(Answer::Limits(l))
        }
        Err(e) => failed(e),
    }
}
