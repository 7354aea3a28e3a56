//! A fake relayd for relay-control tests: a Unix socket speaking the management protocol's
//! JSON lines ([`relay::mgmt`]), holding only what the cascade ops need: local rooms and
//! their events, the peer set, and legs. It records every `open_leg` and `set_peers` with
//! its arrival time. Other requests get a neutral answer (`set_apps` removes nothing, the
//! blocklist is empty, counters are zero, `key` is a fixed key per fake).
//!
//! [`FakeRelayd::restart`] plays a relayd restart: rooms, legs and peers are forgotten, the
//! event counter starts again (a follower's old cursor gets `resync`), and every open
//! connection is closed on its next request.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use relay::mgmt::{
    Answer, KeyInfo, LegInfo, MemberInfo, PeerSpec, RefusalCode, Request, Response, RoomEvent, RoomEvents, RoomInfo,
};

use crate::TempDir;

/// One `open_leg` relayd received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// When it arrived.
    pub at: Instant,
    /// The app.
    pub sdkappid: u64,
    /// The room.
    pub room: String,
    /// The peer it names.
    pub peer: String,
    /// Whether it was accepted (the room is local and the peer in the set).
    pub accepted: bool,
}

#[derive(Default)]
struct State {
    key: [u8; 32],
    generation: u64,
    rooms: BTreeSet<(u64, String)>,
    seq: u64,
    events: Vec<(u64, RoomEvent)>,
    node: Option<String>,
    peers: Option<Vec<PeerSpec>>,
    set_peers: Vec<(Instant, Vec<String>)>,
    legs: Vec<LegInfo>,
    opens: Vec<Open>,
}

/// The fake; its socket is removed on drop.
pub struct FakeRelayd {
    /// The management socket.
    pub path: PathBuf,
    state: Arc<Mutex<State>>,
    _dir: TempDir,
}

impl FakeRelayd {
    /// Listens on a new socket.
    pub fn start() -> FakeRelayd {
        let dir = TempDir::new("fake-relayd").expect("temp dir");
        let path = dir.join("relayd.sock");
        let listener = UnixListener::bind(&path).expect("bind the fake relayd's socket");
        static KEYS: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(1);
        let key = [KEYS.fetch_add(1, std::sync::atomic::Ordering::Relaxed); 32];
        let state = Arc::new(Mutex::new(State { key, ..State::default() }));
        let s = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let s = s.clone();
                std::thread::spawn(move || serve(conn, &s));
            }
        });
        FakeRelayd { path, state, _dir: dir }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A first local member joins `room`.
    pub fn join(&self, sdkappid: u64, room: &str) {
        let mut s = self.lock();
        if s.rooms.insert((sdkappid, room.to_owned())) {
            s.seq += 1;
            let seq = s.seq;
            s.events.push((seq, RoomEvent { sdkappid, room: room.to_owned(), local: true }));
        }
    }

    /// The last local member leaves `room` (its legs close).
    pub fn leave(&self, sdkappid: u64, room: &str) {
        let mut s = self.lock();
        if s.rooms.remove(&(sdkappid, room.to_owned())) {
            s.seq += 1;
            let seq = s.seq;
            s.events.push((seq, RoomEvent { sdkappid, room: room.to_owned(), local: false }));
            s.legs.retain(|l| !(l.sdkappid == sdkappid && l.room == room));
        }
    }

    /// Every `open_leg` so far.
    pub fn opens(&self) -> Vec<Open> {
        self.lock().opens.clone()
    }

    /// The accepted `open_leg`s of `room`, by peer.
    pub fn opens_of(&self, sdkappid: u64, room: &str) -> Vec<String> {
        self.lock()
            .opens
            .iter()
            .filter(|o| o.accepted && o.sdkappid == sdkappid && o.room == room)
            .map(|o| o.peer.clone())
            .collect()
    }

    /// The peer ids of the last `set_peers` (`None` before one), and the node id it named.
    pub fn peers(&self) -> Option<(String, Vec<String>)> {
        let s = self.lock();
        let ids = s.peers.as_ref()?.iter().map(|p| p.node.clone()).collect();
        Some((s.node.clone().unwrap_or_default(), ids))
    }

    /// Every `set_peers` received: when, and the peer ids.
    pub fn set_peers_log(&self) -> Vec<(Instant, Vec<String>)> {
        self.lock().set_peers.clone()
    }

    /// The legs it holds.
    pub fn legs(&self) -> Vec<LegInfo> {
        self.lock().legs.clone()
    }

    /// Plays a restart (see the module comment).
    pub fn restart(&self) {
        let mut s = self.lock();
        let generation = s.generation + 1;
        *s = State { generation, key: s.key, ..State::default() };
    }
}

fn serve(conn: UnixStream, state: &Mutex<State>) {
    let generation = state.lock().unwrap_or_else(|p| p.into_inner()).generation;
    let mut w = conn.try_clone().expect("clone the connection");
    let reader = BufReader::new(conn);
    for line in reader.lines() {
        let Ok(line) = line else { return };
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        if s.generation != generation {
            return; // "restarted": the connection is gone
        }
        let resp = match serde_json::from_str::<Request>(&line) {
            Ok(req) => answer(&mut s, req),
            Err(e) => Response::refused(RefusalCode::BadRequest, e.to_string()),
        };
        drop(s);
        let mut text = serde_json::to_string(&resp).expect("a response encodes");
        text.push('\n');
        if w.write_all(text.as_bytes()).is_err() {
            return;
        }
    }
}

fn answer(s: &mut State, req: Request) -> Response {
    let ok = Response::Ok;
    match req {
        Request::Stats {} => ok(Answer::Stats(Box::default())),
        Request::Key {} => ok(Answer::Key(KeyInfo {
            public_key: relay::identity::RelayKey(s.key),
            fingerprint: relay::identity::RelayKey(s.key).fingerprint(),
            previous_key: None,
            previous_until: None,
            listen: None,
        })),
        Request::SetApps { .. } => ok(Answer::Removed(0)),
        Request::Blocklist {} => ok(Answer::Blocks(Vec::new())),
        Request::Rooms { .. } => ok(Answer::Rooms(
            s.rooms
                .iter()
                .map(|(app, room)| RoomInfo {
                    sdkappid: *app,
                    room: room.clone(),
                    members: vec![MemberInfo {
                        user: "u".into(),
                        addr: "198.18.9.9:5000".into(),
                        send: true,
                        recv: true,
                    }],
                })
                .collect(),
        )),
        Request::SetPeers { node, peers } => {
            let before = s.legs.len();
            s.legs.retain(|l| peers.iter().any(|p| p.node == l.peer));
            let closed = (before - s.legs.len()) as u64;
            s.set_peers.push((Instant::now(), peers.iter().map(|p| p.node.clone()).collect()));
            s.node = Some(node);
            s.peers = Some(peers);
            ok(Answer::Removed(closed))
        }
        Request::OpenLeg { sdkappid, room, peer } => {
            let local = s.rooms.contains(&(sdkappid, room.clone()));
            let known = s.peers.as_ref().is_some_and(|p| p.iter().any(|p| p.node == peer));
            let accepted = local && known;
            s.opens.push(Open { at: Instant::now(), sdkappid, room: room.clone(), peer: peer.clone(), accepted });
            if !accepted {
                return Response::refused(RefusalCode::NotFound, "no local member, or not a peer");
            }
            if !s.legs.iter().any(|l| l.sdkappid == sdkappid && l.room == room && l.peer == peer) {
                s.legs.push(LegInfo {
                    sdkappid,
                    room,
                    peer,
                    role: "initiator".into(),
                    state: "up".into(),
                    streams_in: 0,
                    streams_out: 0,
                    age_ms: 0,
                    last_error: None,
                });
            }
            ok(Answer::Done)
        }
        Request::Legs {} => ok(Answer::Legs(s.legs.clone())),
        Request::RoomEvents { after } => {
            let first = s.events.first().map_or(s.seq + 1, |e| e.0);
            let resync = after > s.seq || (after + 1 < first && after != 0);
            let events = s.events.iter().filter(|e| e.0 > after).map(|e| e.1.clone()).collect();
            ok(Answer::RoomEvents(RoomEvents { next: s.seq, resync, events: if resync { Vec::new() } else { events } }))
        }
        _ => ok(Answer::Done),
    }
}
