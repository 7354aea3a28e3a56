//! Cascade legs driven by relay-control, on loopback: a real Redis, and per node a fake
//! relayd ([`edgerelay_tests::fake_relayd`]) with relay-control's own parts in this process
//! (the relayd link, the cluster agent, a registry heartbeat, the leg agent).
//!
//! - A room on three nodes: each pair gets exactly one `open_leg`, from the lower id; a room
//!   on one node gets none; `set_peers` is every other live node.
//! - A hint opens the leg well before the reconcile would (measured right after the lower
//!   node's reconcile, so the next one is a full period away).
//! - A node whose registry key expired leaves every pushed peer set and gets no leg, though
//!   its presence in Redis is still fresh.
//! - Redis down: nothing closes (the peer set stays), errors are counted; Redis back empty:
//!   the reconcile forms the leg of a room gained during the outage.
//! - relayd restarted: the link pushes the peers again, the agent lists the rooms again and
//!   the leg is opened again.
//! - The daemon: two `relay-control serve` processes on fake relayds open the leg, and
//!   `GET /v1/cluster`, `relayctl cluster status` and `/metrics` show it.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use control::api::{ClusterNode, NodeLoad, RelayEndpoint};
use control::cluster::leases::Leases;
use control::cluster::legs::{self, Agent, Reason, Timings};
use control::cluster::peers::Peers;
use control::cluster::{Cluster, ClusterConfig};
use control::server::push::Link;
use control::store::Store;
use edgerelay_tests::cluster::{wait_until, Nodes, Redis, REDIS_USER};
use edgerelay_tests::fake_relayd::FakeRelayd;
use edgerelay_tests::TempDir;

const APP: u64 = 1400000001;
const HEARTBEAT_MS: u64 = 250;
const NODE_TTL_MS: u64 = 2000;

/// One node: a fake relayd and relay-control's cluster parts.
struct Node {
    id: String,
    relayd: FakeRelayd,
    cluster: Arc<Cluster>,
    beating: Arc<AtomicBool>,
    _agent: Agent,
    _dir: TempDir,
}

impl Node {
    fn start(redis: &Redis, key: &Path, i: u8) -> Node {
        let id = format!("edge-{i}");
        let dir = TempDir::new("legs-node").expect("temp dir");
        let store = Arc::new(Store::open(dir.join("control.redb")).expect("store"));
        let relayd = FakeRelayd::start();
        let leases = Arc::new(Leases::default());
        let peers = Arc::new(Peers::default());
        let link = Link::spawn(relayd.path.clone(), store.clone(), Some(leases.clone()), Some(peers.clone()))
            .expect("relayd link");
        let cfg = ClusterConfig {
            redis_url: format!("redis://{REDIS_USER}@{}", redis.addr),
            redis_password_file: Some(redis.password_file.clone()),
            redis_ca_file: None,
            node_id: id.clone(),
            region: "eu-west".into(),
            endpoints: Vec::new(),
            key_file: key.to_owned(),
            key_prefix: "edgerelay:".into(),
            log_max_len: 100_000,
            heartbeat_ms: HEARTBEAT_MS,
            node_ttl_ms: NODE_TTL_MS,
        };
        let cluster = Cluster::new(cfg, store, link.clone(), leases).expect("cluster agent");
        control::cluster::follow::spawn(cluster.clone()).expect("follower");
        // The registry heartbeat, as `server::clustering::heartbeat` writes it.
        let beating = Arc::new(AtomicBool::new(true));
        let (c, on, node_id) = (cluster.clone(), beating.clone(), id.clone());
        std::thread::spawn(move || {
            while on.load(Relaxed) {
                let node = ClusterNode {
                    node_id: node_id.clone(),
                    region: "eu-west".into(),
                    relays: vec![RelayEndpoint {
                        endpoint: format!("198.18.0.{i}:7000"),
                        public_key: relay::identity::RelayKey([i; 32]),
                    }],
                    load: NodeLoad::default(),
                    relayd_reachable: true,
                    applied: "0-0".into(),
                    lag_ms: 0,
                    version: "test".into(),
                    heartbeat_at_ms: relay::time::unix_now_ms(),
                };
                let _ = c.beat(&node, None);
                std::thread::sleep(Duration::from_millis(HEARTBEAT_MS));
            }
        });
        let agent = legs::spawn(cluster.clone(), link, peers, relayd.path.clone(), Timings::for_ttl(NODE_TTL_MS))
            .expect("leg agent");
        Node { id, relayd, cluster, beating, _agent: agent, _dir: dir }
    }

    fn reconciles(&self) -> u64 {
        self.cluster.legs.reconciles.load(Relaxed)
    }

    /// Waits until this node ran `n` more reconciles.
    fn wait_reconciles(&self, n: u64) {
        let start = self.reconciles();
        wait_until(Duration::from_secs(5 * n), &format!("{} reconciles {n} times", self.id), || {
            self.reconciles() >= start + n
        });
    }

    fn peer_ids(&self) -> Vec<String> {
        self.relayd.peers().map(|(_, p)| p).unwrap_or_default()
    }
}

fn cluster(n: u8) -> Option<(Redis, TempDir, Vec<Node>)> {
    let redis = Redis::loopback()?;
    let dir = TempDir::new("legs-key").expect("temp dir");
    let key = dir.join("cluster.key");
    control::cluster::seal::ClusterKey::generate(&key).expect("cluster key");
    let nodes: Vec<Node> = (1..=n).map(|i| Node::start(&redis, &key, i)).collect();
    for node in &nodes {
        let want: Vec<String> = nodes.iter().filter(|o| o.id != node.id).map(|o| o.id.clone()).collect();
        wait_until(Duration::from_secs(5), &format!("{}'s relayd has every other node as a peer", node.id), || {
            node.peer_ids() == want
        });
        assert_eq!(node.relayd.peers().expect("pushed").0, node.id, "set_peers names this node");
    }
    Some((redis, dir, nodes))
}

#[test]
fn each_pair_opens_one_leg_from_the_lower_id_and_hints_beat_the_reconcile() {
    let Some((redis, _dir, nodes)) = cluster(3) else { return };
    let [n1, n2, n3] = &nodes[..] else { unreachable!() };

    // A room on one node: no leg.
    n2.relayd.join(APP, "solo");
    n2.wait_reconciles(2);

    // A room on all three, gained in an order where both paths (gain, hint) are taken.
    for n in [n3, n1, n2] {
        n.relayd.join(APP, "mesh");
    }
    wait_until(Duration::from_secs(5), "the mesh's three legs", || {
        n1.relayd.opens_of(APP, "mesh").len() == 2 && n2.relayd.opens_of(APP, "mesh").len() == 1
    });
    for n in &nodes {
        n.wait_reconciles(2);
    }
    let mut o1 = n1.relayd.opens_of(APP, "mesh");
    o1.sort();
    assert_eq!(o1, ["edge-2", "edge-3"], "edge-1 opens to both, once each");
    assert_eq!(n2.relayd.opens_of(APP, "mesh"), ["edge-3"], "edge-2 opens to edge-3 only, once");
    assert!(n3.relayd.opens().is_empty(), "edge-3 has the highest id and opens nothing: {:?}", n3.relayd.opens());
    for n in &nodes {
        assert!(n.relayd.opens().iter().all(|o| o.room != "solo"), "{}: a room on one node has no leg", n.id);
        assert!(n.relayd.opens().iter().all(|o| o.accepted), "{}: every open_leg was accepted", n.id);
    }

    // Hints: edge-1 hosts the room first; edge-3 gains it right after edge-1's reconcile, so
    // only the hint can open the leg before edge-1's next reconcile, a full period later.
    let period = Timings::for_ttl(NODE_TTL_MS).refresh;
    let l = &n1.cluster.legs;
    let mut took = Vec::new();
    for k in 0.. {
        assert!(k < 15, "no five clean trials in 15 (reconciles kept running during them): {took:?}");
        let room = format!("hint-{k}");
        n1.relayd.join(APP, &room);
        let key = format!("edgerelay:room-nodes:{APP}/{room}");
        wait_until(Duration::from_secs(3), "edge-1's presence in Redis", || {
            !redis.cli(&["ZSCORE", &key, "edge-1"]).trim().is_empty()
        });
        n1.wait_reconciles(1); // a reconcile just ran: the next is a period away
        let (reconciles, hinted) = (n1.reconciles(), l.opened(Reason::Hint));
        let t0 = Instant::now();
        n3.relayd.join(APP, &room);
        wait_until(Duration::from_secs(3), "the hinted leg", || !n1.relayd.opens_of(APP, &room).is_empty());
        if n1.reconciles() != reconciles {
            // This thread was late (a loaded machine): the reconcile may have opened it.
            eprintln!("trial {k}: edge-1 reconciled meanwhile; not counted");
            continue;
        }
        let at = n1.relayd.opens().iter().find(|o| o.room == room).expect("opened").at;
        assert_eq!(l.opened(Reason::Hint), hinted + 1, "trial {k} was opened on the hint");
        took.push(at.duration_since(t0));
        if took.len() == 5 {
            break;
        }
    }
    took.sort();
    eprintln!("hint to open_leg: {took:?} (reconcile period {period:?})");
    assert!(took[4] < period / 2, "a hinted leg opens well within the reconcile period: {took:?}");
    assert!(n3.cluster.legs.hints_sent.load(Relaxed) >= 5);

    // edge-3 stops beating: its registry key expires while its presence entries stay fresh.
    n3.beating.store(false, Relaxed);
    for n in [n1, n2] {
        wait_until(Duration::from_secs(5), &format!("edge-3 leaves {}'s peers", n.id), || {
            !n.peer_ids().contains(&"edge-3".to_owned())
        });
    }
    assert!(n1.relayd.set_peers_log().iter().any(|(_, p)| p == &["edge-2"]), "the shrunk set was pushed");
    n3.relayd.join(APP, "after");
    n3.wait_reconciles(1);
    n1.relayd.join(APP, "after");
    n2.relayd.join(APP, "after");
    wait_until(Duration::from_secs(5), "edge-1 to edge-2 for the new room", || {
        n1.relayd.opens_of(APP, "after") == ["edge-2"]
    });
    n1.wait_reconciles(2);
    n2.wait_reconciles(2);
    for n in [n1, n2] {
        let to_dead: Vec<_> =
            n.relayd.opens().into_iter().filter(|o| o.room == "after" && o.peer == "edge-3").collect();
        assert!(to_dead.is_empty(), "{}: no open_leg to a node out of the registry: {to_dead:?}", n.id);
    }
}

#[test]
fn legs_form_again_after_redis_and_relayd_restarts() {
    let Some((mut redis, _dir, nodes)) = cluster(2) else { return };
    let [n1, n2] = &nodes[..] else { unreachable!() };
    n1.relayd.join(APP, "before");
    n2.relayd.join(APP, "before");
    wait_until(Duration::from_secs(5), "the first leg", || n1.relayd.opens_of(APP, "before") == ["edge-2"]);

    // Redis down: rooms are gained meanwhile; nothing is closed or withdrawn.
    redis.kill();
    let errors = n1.cluster.legs.redis_errors.load(Relaxed);
    n1.relayd.join(APP, "outage");
    n2.relayd.join(APP, "outage");
    wait_until(Duration::from_secs(10), "Redis errors counted", || {
        n1.cluster.legs.redis_errors.load(Relaxed) > errors + 2
    });
    assert_eq!(n1.peer_ids(), ["edge-2"], "the peer set stays while Redis is down");
    assert_eq!(n1.relayd.legs().len(), 1, "relayd keeps its leg");
    assert!(n1.relayd.opens_of(APP, "outage").is_empty());

    // Redis back, and empty (it lost its data): re-published by the refresh, formed by the
    // reconcile.
    let reconciled = n1.cluster.legs.opened(Reason::Reconcile);
    redis.restart();
    redis.cli(&["FLUSHALL"]);
    let t = wait_until(Duration::from_secs(10), "the outage room's leg", || {
        n1.relayd.opens_of(APP, "outage") == ["edge-2"]
    });
    eprintln!("leg formed {t:?} after Redis came back");
    assert!(n1.cluster.legs.opened(Reason::Reconcile) > reconciled, "the reconcile opened it");
    assert!(n2.relayd.opens().is_empty(), "edge-2 never opens to edge-1");
    n1.wait_reconciles(2);
    assert_eq!(n1.peer_ids(), ["edge-2"], "a wiped registry closed no peer");
    assert_eq!(n1.relayd.legs().len(), 2, "both legs stand: {:?}", n1.relayd.legs());

    // relayd on edge-1 restarts: it forgets peers, rooms and legs; its members join again.
    let listings = n1.cluster.legs.room_listings.load(Relaxed);
    n1.relayd.restart();
    wait_until(Duration::from_secs(5), "set_peers again after the restart", || n1.peer_ids() == ["edge-2"]);
    wait_until(Duration::from_secs(5), "the rooms listed again", || {
        n1.cluster.legs.room_listings.load(Relaxed) > listings
    });
    n1.relayd.join(APP, "before");
    wait_until(Duration::from_secs(5), "the leg opened again", || n1.relayd.opens_of(APP, "before") == ["edge-2"]);
    n1.wait_reconciles(2);
    assert_eq!(n1.relayd.legs().len(), 1, "one leg, opened once");
    assert_eq!(n1.relayd.opens_of(APP, "before").len(), 1);
}

#[test]
fn the_daemon_opens_legs_and_reports_them() {
    let Some(redis) = Redis::loopback() else { return };
    let fakes = [FakeRelayd::start(), FakeRelayd::start()];
    // Polling loops would trip the default per-key rate limit.
    let limits = "[rate_limits]\nper_ip_per_sec = 100000\nper_ip_burst = 100000\nper_key_per_sec = 100000\nper_key_burst = 100000\n";
    let nodes = Nodes::start_with(
        &redis,
        2,
        |_| "eu-west".into(),
        limits,
        |i| format!("relayd_socket = \"{}\"\n", fakes[i - 1].path.display()),
    );
    wait_until(Duration::from_secs(10), "each relayd has the other node as its peer", || {
        fakes[0].peers().is_some_and(|(me, p)| me == "edge-1" && p == ["edge-2"])
            && fakes[1].peers().is_some_and(|(me, p)| me == "edge-2" && p == ["edge-1"])
    });
    for f in &fakes {
        f.join(APP, "lobby");
    }
    wait_until(Duration::from_secs(5), "edge-1 opens the leg", || fakes[0].opens_of(APP, "lobby") == ["edge-2"]);
    assert!(fakes[1].opens().is_empty(), "edge-2 opens nothing");

    let c = nodes.node(1).admin_client();
    wait_until(Duration::from_secs(5), "the leg in GET /v1/cluster", || {
        let v = c.get_ok("/v1/cluster");
        v["legs"].as_array().is_some_and(|l| l.len() == 1 && l[0]["peer"] == "edge-2" && l[0]["state"] == "up")
    });
    let out = nodes.relayctl(1).args(["cluster", "status"]).output().expect("run relayctl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "relayctl cluster status: {text} {}", String::from_utf8_lossy(&out.stderr));
    for want in ["PEER", "lobby", "initiator", "up"] {
        assert!(text.contains(want), "relayctl cluster status lacks {want:?}:\n{text}");
    }
    let m = String::from_utf8_lossy(&c.call("GET", "/metrics", &serde_json::Value::Null).body).into_owned();
    for want in
        ["edgerelay_cluster_legs{state=\"up\"} 1", "edgerelay_cluster_peers 1", "edgerelay_cluster_local_rooms 1"]
    {
        assert!(m.lines().any(|l| l == want), "/metrics lacks {want:?}");
    }
    let opens: u64 = m
        .lines()
        .filter(|l| l.starts_with("edgerelay_cluster_leg_opens_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum();
    assert_eq!(opens, 1, "one open_leg in /metrics:\n{m}");
}
