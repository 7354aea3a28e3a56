//! Cascade legs between real relayd processes: three relayds on loopback (socket backend),
//! each told its peers over its management socket as relay-control does (`set_peers`), the
//! legs opened by the lower node id of each pair (`open_leg`), and in-process clients split
//! across the nodes in a room spanning two nodes and a room spanning three. Every receiver
//! checks every packet (SRTP auth and replay, its room's tag, the publisher's packet number
//! never twice) and must get its room's stream from a remote publisher as well as a local
//! one would reach it, and nothing else.
//!
//! Run `cargo build --workspace --bins` first.

use std::net::UdpSocket;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgerelay_tests::drill::*;
use edgerelay_tests::*;
use relay::mgmt::{PeerSpec, RefusalCode, Request, Response};

fn socket() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").unwrap()
}

fn node_id(i: usize) -> String {
    format!("node-{}", i + 1)
}

/// Pushes every relayd's peers: all the others.
fn set_peers(nodes: &[Relayd]) {
    for (i, n) in nodes.iter().enumerate() {
        let peers = nodes
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(j, m)| PeerSpec { node: node_id(j), endpoint: m.addr, public_key: m.key })
            .collect();
        match n.mgmt(&Request::SetPeers { node: node_id(i), peers }) {
            Response::Ok(_) => {}
            r => panic!("set_peers on {}: {r:?}", node_id(i)),
        }
    }
}

/// Opens the room's legs among `hosts` as relay-control would: the lower id of each pair.
/// Retries while a host's relayd does not list the room yet (its clients still joining).
fn open_legs(nodes: &[Relayd], room: u32, hosts: &[usize]) {
    for &a in hosts {
        for &b in hosts.iter().filter(|&&b| b > a) {
            let req = Request::OpenLeg { sdkappid: APP_A.into(), room: room.to_string(), peer: node_id(b) };
            wait_until(&format!("open_leg room {room} {a}->{b}"), Duration::from_secs(10), || {
                match nodes[a].mgmt(&req) {
                    Response::Ok(_) => true,
                    Response::Refused(r) if r.code == RefusalCode::NotFound => false,
                    r => panic!("open_leg: {r:?}"),
                }
            });
        }
    }
}

fn legs_up(n: &Relayd) -> usize {
    match n.mgmt(&Request::Legs {}) {
        Response::Ok(relay::mgmt::Answer::Legs(l)) => l.iter().filter(|l| l.state == "up").count(),
        r => panic!("legs: {r:?}"),
    }
}

#[test]
fn rooms_span_relays_over_legs_and_every_packet_arrives_once() {
    let nodes: Vec<Relayd> = (0..3).map(|_| Relayd::start(&two_app_config(10, ""))).collect();
    set_peers(&nodes);
    let rooms = Arc::new(vec![
        Room { app: APP_A, secret: SECRET_A, room: 11, tag: 0x0b0b_0b0b, ssrcs: Mutex::new(Vec::new()) },
        Room { app: APP_A, secret: SECRET_A, room: 12, tag: 0x0c0c_0c0c, ssrcs: Mutex::new(Vec::new()) },
    ]);
    let shared = Arc::new(Shared { stop: false.into() });
    // Room 11: publisher on node 1, receivers on nodes 1 and 2. Room 12: publisher on node 3,
    // receivers on every node.
    let mut clients = vec![
        spawn_publisher(&nodes[0], socket(), &rooms, 0, 200, &shared),
        spawn_publisher(&nodes[2], socket(), &rooms, 1, 200, &shared),
    ];
    let receivers = [(0, 0), (1, 0), (0, 1), (1, 1), (2, 1)];
    for (k, &(node, room)) in receivers.iter().enumerate() {
        clients.push(spawn_receiver(&nodes[node], socket(), &rooms, room, &format!("r{k}"), &shared));
    }
    let t0 = Instant::now();
    open_legs(&nodes, 11, &[0, 1]);
    open_legs(&nodes, 12, &[0, 1, 2]);
    wait_until("legs up: node 1 has 3, node 2 has 3, node 3 has 2", Duration::from_secs(10), || {
        (legs_up(&nodes[0]), legs_up(&nodes[1]), legs_up(&nodes[2])) == (3, 3, 2)
    });
    let up = t0.elapsed();
    wait_until("200 packets at every receiver", Duration::from_secs(15), || {
        clients.iter().filter_map(|c| c.seen.as_ref()).all(|s| s.lock().unwrap().numbers.len() >= 200)
    });
    shared.stop.store(true, Relaxed);
    for c in clients.iter() {
        if let Some(s) = &c.seen {
            let s = s.lock().unwrap();
            let declared = rooms[c.room].ssrcs.lock().unwrap().clone();
            s.assert_clean(&declared, &format!("receiver in room {}", rooms[c.room].room));
            assert_eq!(s.generation, 0, "nobody rejoined");
        }
    }
    for c in clients {
        c.handle.join().unwrap();
    }
    // What went over the legs is counted on each side.
    let s = nodes[1].stats();
    assert!(s.legs.get("accepted").copied().unwrap_or(0) >= 2, "node 2 accepted node 1's legs: {:?}", s.legs);
    for n in &nodes {
        let s = n.stats();
        assert_eq!(s.legs.get("ssrc_conflicts").copied().unwrap_or(0), 0, "{:?}", s.legs);
        assert_eq!(s.legs.get("wrong_peer_key").copied().unwrap_or(0), 0);
    }
    println!("legs of both rooms up {} ms after the first open_leg", up.as_millis());
}
