//! The edge cluster's shared control state, on loopback: three relay-control nodes on one
//! real Redis (ACL user, password file, AOF fsynced on every write).
//!
//! - Convergence: an app created on node 1 is on nodes 2 and 3; a UserSig minted on node 2
//!   verifies with the secret node 1 returned; a rotation through node 3 keeps the old
//!   secret inside its overlap everywhere; an API key revoked on node 2 fails on all three.
//! - Replay: a signed request accepted by node 1, sent byte for byte to node 2, is refused.
//! - Redis down: writes answer 503 `ResourceUnavailable.Cluster`, reads are served with the
//!   `x-edgerelay-stale` header; after Redis returns, writes pass and nodes converge.
//! - Registry: a node killed with SIGKILL leaves `/v1/cluster` within 3 s.
//! - No lost update: 1,000 mixed changes through all three nodes while Redis is killed and
//!   restarted and one node's relay-control is killed and restarted; afterwards every
//!   acknowledged change is in effect and every node holds exactly what Redis holds.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use edgerelay_tests::cluster::{wait_until, Nodes, Redis};
use edgerelay_tests::control::{ApiClient, Call, Credentials};
use serde_json::{json, Value};

fn loopback_redis() -> Option<Redis> {
    Redis::loopback()
}

/// Polling loops would trip the default per-key rate limit.
const GENEROUS_LIMITS: &str =
    "[rate_limits]\nper_ip_per_sec = 100000\nper_ip_burst = 100000\nper_key_per_sec = 100000\nper_key_burst = 100000\n";

fn app_ids(c: &ApiClient) -> BTreeSet<u64> {
    c.get_ok("/v1/apps")["apps"].as_array().unwrap().iter().map(|a| a["sdkappid"].as_u64().unwrap()).collect()
}

fn blocks(c: &ApiClient) -> BTreeSet<String> {
    c.get_ok("/v1/blocklist")["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["cidr"].as_str().unwrap().to_owned())
        .collect()
}

fn keys(c: &ApiClient) -> BTreeSet<(String, String)> {
    c.get_ok("/v1/keys")["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["secret_id"].as_str().unwrap().to_owned(), k["state"].as_str().unwrap_or("?").to_owned()))
        .collect()
}

#[test]
fn three_nodes_converge_refuse_replays_and_survive_redis_outages() {
    let Some(mut redis) = loopback_redis() else { return };
    let nodes = Nodes::start(&redis, 3, |i| if i == 3 { "ap-east".into() } else { "eu-west".into() }, GENEROUS_LIMITS);
    let c: Vec<ApiClient> = nodes.nodes.iter().map(|n| n.admin_client()).collect();

    // Every node sees all three in the registry; so does relayctl.
    wait_until(Duration::from_secs(5), "three nodes registered", || {
        c[0].get_ok("/v1/cluster")["nodes"].as_array().is_some_and(|n| n.len() == 3)
    });
    let out = nodes.relayctl(2).args(["cluster", "status"]).output().expect("run relayctl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "relayctl cluster status: {text} {}", String::from_utf8_lossy(&out.stderr));
    for want in ["this node", "edge-2", "redis", "reachable", "edge-1", "edge-3", "ap-east", "LAG"] {
        assert!(text.contains(want), "relayctl cluster status lacks {want:?}:\n{text}");
    }

    // An app created on node 1 reaches nodes 2 and 3.
    let r = c[0].call("POST", "/v1/apps", &json!({"sdkappid": 1400000301u32}));
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let secret = r.json()["secret"].as_str().unwrap().to_owned();
    for (i, client) in c.iter().enumerate().skip(1) {
        let t = wait_until(Duration::from_secs(2), "app on another node", || {
            client.call("GET", "/v1/apps/1400000301", &Value::Null).status == 200
        });
        eprintln!("app visible on node {} after {t:?}", i + 1);
    }
    // A UserSig minted on node 2 verifies with the secret node 1 handed out.
    let minted = c[1].call("POST", "/v1/apps/1400000301/usersig", &json!({"user_id": "alice", "expire_secs": 600}));
    assert_eq!(minted.status, 200);
    let sig = minted.json()["usersig"].as_str().unwrap().to_owned();
    let verified = relay::usersig::decode(&sig).and_then(|u| u.verify(secret.as_bytes(), edgerelay_tests::unix_now()));
    assert!(verified.is_ok(), "UserSig from node 2 does not verify with node 1's secret: {verified:?}");

    // Rotation through node 3: both secrets are live everywhere during the overlap.
    let rot = c[2].call("POST", "/v1/apps/1400000301/rotate-secret", &json!({"overlap_secs": 600}));
    assert_eq!(rot.status, 200, "{}", String::from_utf8_lossy(&rot.body));
    for client in &c {
        wait_until(Duration::from_secs(2), "rotation everywhere", || {
            client.get_ok("/v1/apps/1400000301")["secrets"].as_array().is_some_and(|s| s.len() == 2)
        });
    }

    // A key created on node 1, revoked on node 2, fails on every node.
    let k = c[0].call("POST", "/v1/keys", &json!({"role": "operator", "label": "ops"}));
    assert_eq!(k.status, 201);
    let ops = Credentials::from_json(&k.json());
    let ops_clients: Vec<ApiClient> = nodes.nodes.iter().map(|n| n.client(&ops)).collect();
    for oc in &ops_clients {
        wait_until(Duration::from_secs(2), "new key usable everywhere", || {
            oc.call("GET", "/v1/apps", &Value::Null).status == 200
        });
    }
    assert_eq!(c[1].call("DELETE", &format!("/v1/keys/{}", ops.secret_id), &Value::Null).status, 204);
    for (i, oc) in ops_clients.iter().enumerate() {
        let r = oc.call("GET", "/v1/apps", &Value::Null);
        assert_eq!(r.status, 401, "revoked key still works on node {}: {}", i + 1, String::from_utf8_lossy(&r.body));
    }

    // Replay: accepted by node 1, the same bytes to node 2 are refused.
    let sent = c[0].send(&Call::json("GET", "/v1/apps", &Value::Null));
    assert_eq!(sent.response.status, 200);
    let mut replay = Call::json("GET", "/v1/apps", &Value::Null);
    replay.signing =
        edgerelay_tests::control::Signing::Raw(sent.authorization.clone().unwrap(), sent.timestamp.unwrap());
    replay.nonce = Some(sent.nonce.clone());
    let to_node2 = c[0].redirected(nodes.node(2).addr, Some(nodes.node(2).fingerprint.clone()));
    let replayed = to_node2.send(&replay).response;
    assert_eq!(replayed.status, 401, "replay to node 2 accepted: {}", String::from_utf8_lossy(&replayed.body));
    assert!(
        String::from_utf8_lossy(&replayed.body).contains("Replayed"),
        "{}",
        String::from_utf8_lossy(&replayed.body)
    );

    // Redis down: writes 503, reads served and marked stale.
    redis.kill();
    let w = wait_until(Duration::from_secs(5), "writes refused with Redis down", || {
        let r = c[0].call("POST", "/v1/blocklist", &json!({"cidr": "198.18.66.1/32", "ttl_secs": 0}));
        r.status == 503 && r.code() == "ResourceUnavailable.Cluster"
    });
    eprintln!("first 503 after {w:?}");
    let metric = |client: &ApiClient, line: &str| {
        let r = client.call("GET", "/metrics", &Value::Null);
        String::from_utf8_lossy(&r.body).lines().any(|l| l == line)
    };
    wait_until(Duration::from_secs(3), "redis_up 0 in /metrics", || metric(&c[1], "edgerelay_cluster_redis_up 0"));
    let fired = wait_until(Duration::from_secs(8), "cluster_unreachable alert fires", || {
        metric(&c[1], r#"edgerelay_alerts_firing{rule="cluster_unreachable"} 1"#)
    });
    eprintln!("cluster_unreachable fired {fired:?} after the first 503");
    let read = c[1].call("GET", "/v1/apps/1400000301", &Value::Null);
    assert_eq!(read.status, 200);
    wait_until(Duration::from_secs(5), "stale header", || {
        c[1].call("GET", "/v1/apps", &Value::Null).header("x-edgerelay-stale").is_some()
    });
    redis.restart();
    wait_until(Duration::from_secs(10), "writes pass again", || {
        c[2].call("POST", "/v1/blocklist", &json!({"cidr": "198.18.66.2/32", "ttl_secs": 0})).status == 201
    });
    wait_until(Duration::from_secs(5), "cluster_unreachable resolves", || {
        metric(&c[1], r#"edgerelay_alerts_firing{rule="cluster_unreachable"} 0"#)
            && metric(&c[1], "edgerelay_cluster_redis_up 1")
    });
    for client in &c {
        wait_until(Duration::from_secs(3), "block everywhere after the outage", || {
            blocks(client).contains("198.18.66.2/32")
        });
        assert!(!blocks(client).contains("198.18.66.1/32"), "a refused write was applied");
        assert!(client.call("GET", "/v1/apps", &Value::Null).header("x-edgerelay-stale").is_none());
    }

    // Registry: node 3 killed; gone from the registry within 3 s.
    let mut nodes = nodes;
    let third = nodes.nodes.pop().unwrap();
    drop(third); // SIGKILL
    let gone = wait_until(Duration::from_secs(3), "dead node leaves the registry", || {
        c[0].get_ok("/v1/cluster")["nodes"].as_array().is_some_and(|n| n.len() == 2)
    });
    eprintln!("dead node gone from the registry after {gone:?}");
}

/// One change and whether it was acknowledged.
#[derive(Debug, Clone)]
enum Op {
    CreateApp(u64),
    DeleteApp(u64),
    Block(String),
    Unblock(String),
}

#[test]
fn no_update_is_lost_across_redis_and_node_crashes() {
    let Some(mut redis) = loopback_redis() else { return };
    let mut nodes = Nodes::start(&redis, 3, |_| "eu-west".into(), GENEROUS_LIMITS);
    let mut acked: Vec<Op> = Vec::new();
    let mut refused = 0usize;
    let mut ambiguous = 0usize;
    for i in 0..1000u64 {
        match i {
            250 => redis.kill(),
            330 => redis.restart(),
            500 => {
                let n2 = nodes.nodes.remove(1);
                nodes.nodes.insert(1, n2.crash_and_restart());
            }
            _ => {}
        }
        let node = &nodes.nodes[(i % 3) as usize];
        let client = node.admin_client();
        let op = match i % 4 {
            0 | 1 => Op::CreateApp(1_400_100_000 + i),
            2 => Op::Block(format!("198.18.{}.{}/32", 100 + i / 250, i % 250)),
            _ => match i % 8 {
                3 => Op::DeleteApp(1_400_100_000 + i - 3),
                _ => Op::Unblock(format!("198.18.{}.{}/32", 100 + (i - 1) / 250, (i - 1) % 250)),
            },
        };
        let call = match &op {
            Op::CreateApp(id) => Call::json("POST", "/v1/apps", &json!({"sdkappid": id})),
            Op::DeleteApp(id) => Call::json("DELETE", &format!("/v1/apps/{id}"), &Value::Null),
            Op::Block(c) => Call::json("POST", "/v1/blocklist", &json!({"cidr": c, "ttl_secs": 0})),
            Op::Unblock(c) => Call::json("DELETE", &format!("/v1/blocklist/{c}"), &Value::Null),
        };
        let raw = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| client.send(&call).response));
        match raw {
            Ok(r) if r.status < 300 => acked.push(op),
            Ok(r) if r.status == 503 => refused += 1,
            Ok(r) if r.status == 404 => {} // deleting what a refused change never created
            Ok(r) => panic!("change {i} {op:?}: {} {}", r.status, String::from_utf8_lossy(&r.body)),
            Err(_) => ambiguous += 1, // the connection broke: applied or not, the states must still agree
        }
    }
    eprintln!("acknowledged {} refused {refused} ambiguous {ambiguous}", acked.len());
    assert!(refused > 0, "the Redis outage refused nothing: the test did not test it");
    assert!(acked.len() > 600, "too few changes acknowledged: {}", acked.len());

    // What the acknowledged changes imply.
    let mut want_apps = BTreeSet::new();
    let mut want_blocks = BTreeSet::new();
    for op in &acked {
        match op {
            Op::CreateApp(id) => drop(want_apps.insert(*id)),
            Op::DeleteApp(id) => drop(want_apps.remove(id)),
            Op::Block(c) => drop(want_blocks.insert(c.clone())),
            Op::Unblock(c) => drop(want_blocks.remove(c)),
        }
    }
    let clients: Vec<ApiClient> = nodes.nodes.iter().map(|n| n.admin_client()).collect();
    // Redis's own view: the hash fields (values are sealed).
    let redis_fields = |kind: &str| -> BTreeSet<String> {
        redis
            .cli(&["HKEYS", &format!("edgerelay:state:{kind}")])
            .lines()
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.is_empty())
            .collect()
    };
    wait_until(Duration::from_secs(10), "every node equal to Redis", || {
        let ra: BTreeSet<u64> = redis_fields("apps").iter().filter_map(|f| f.parse().ok()).collect();
        let rb = redis_fields("blocks");
        let rk: BTreeSet<String> = redis_fields("keys");
        clients.iter().all(|c| {
            app_ids(c) == ra && blocks(c) == rb && keys(c).iter().map(|k| k.0.clone()).collect::<BTreeSet<_>>() == rk
        })
    });
    let ra: BTreeSet<u64> = redis_fields("apps").iter().filter_map(|f| f.parse().ok()).collect();
    let rb = redis_fields("blocks");
    // Nothing acknowledged is lost, nothing refused is applied (an ambiguous change may go
    // either way, and only those).
    let extra_apps: Vec<_> = ra.difference(&want_apps).collect();
    let lost_apps: Vec<_> = want_apps.difference(&ra).collect();
    let extra_blocks: Vec<_> = rb.difference(&want_blocks).collect();
    let lost_blocks: Vec<_> = want_blocks.difference(&rb).collect();
    assert!(lost_apps.len() + lost_blocks.len() + extra_apps.len() + extra_blocks.len() <= ambiguous,
        "lost apps {lost_apps:?} blocks {lost_blocks:?}; unexpected apps {extra_apps:?} blocks {extra_blocks:?} ({ambiguous} ambiguous)");
}

#[test]
fn max_sessions_holds_across_nodes() {
    use edgerelay_tests::{two_app_config, Peer, Relayd};
    use relay::ids::RoomId;
    let Some(redis) = loopback_redis() else { return };
    let relayds: Vec<Relayd> = (0..3).map(|_| Relayd::start(&two_app_config(30, ""))).collect();
    let nodes = Nodes::start_with(
        &redis,
        3,
        |_| "eu-west".into(),
        GENEROUS_LIMITS,
        |i| format!("relayd_socket = \"{}\"", relayds[i - 1].stats_socket.display()),
    );
    let c: Vec<ApiClient> = nodes.nodes.iter().map(|n| n.admin_client()).collect();
    for client in &c {
        wait_until(Duration::from_secs(10), "relayd link up", || {
            client.get_ok("/v1/node")["relayd"]["reachable"] == true
        });
    }
    const APP: u32 = 1_400_000_777;
    const MAX: u64 = 4;
    let q = json!({"max_rooms": 10, "max_members_per_room": 20, "max_sessions": MAX});
    assert_eq!(c[0].call("POST", "/v1/apps", &json!({"sdkappid": APP, "quotas": q})).status, 201);
    // Three would-be members per node, 9 in all, each with a UserSig minted on its node.
    let mut peers: Vec<(usize, String, Peer, bool)> = Vec::new();
    for (n, relayd) in relayds.iter().enumerate() {
        for k in 0..3 {
            let user = format!("u{n}{k}");
            let r =
                c[n].call("POST", &format!("/v1/apps/{APP}/usersig"), &json!({"user_id": user, "expire_secs": 600}));
            assert_eq!(r.status, 200);
            let mut cfg = relayd.client_config(APP, "unused-secret-unused", &user, RoomId::num(7).unwrap(), None);
            cfg.usersig = r.json()["usersig"].as_str().unwrap().to_owned();
            peers.push((n, user, Peer::with_config(relayd.addr, cfg), false));
        }
    }
    let total = || relayds.iter().map(|r| r.stats().sessions).sum::<u64>();
    // Keep trying every refused member for a while: leases move, the quota never breaks.
    let deadline = std::time::Instant::now() + Duration::from_secs(6);
    let mut max_seen = 0;
    while std::time::Instant::now() < deadline {
        for (_, _, p, joined) in peers.iter_mut().filter(|(_, _, _, j)| !*j) {
            *joined = p.join_within(Duration::from_millis(150)).is_ok();
            max_seen = max_seen.max(total());
            assert!(max_seen <= MAX, "the app holds {max_seen} sessions across nodes; max_sessions is {MAX}");
        }
        for (_, _, p, joined) in peers.iter_mut() {
            if *joined {
                p.keepalive();
            }
        }
        if total() == MAX {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let per_node: Vec<u64> = relayds.iter().map(|r| r.stats().sessions).collect();
    eprintln!("sessions per node {per_node:?} (quota {MAX}), highest total seen {max_seen}");
    assert_eq!(total(), MAX, "the cluster did not admit up to its quota: {per_node:?}");
    assert_eq!(peers.iter().filter(|p| p.3).count() as u64, MAX);

    // Node selection: nodes hosting room 7 (1 and 2) come first, then node 3; every node
    // with its relay key. The UserSig answer lists the same order.
    let sel = wait_until(Duration::from_secs(5), "hosting nodes first", || {
        let v = c[2].get_ok(&format!("/v1/apps/{APP}/nodes?room_id=7"));
        let nodes: Vec<&str> = v["nodes"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
        nodes.len() == 3 && nodes[2] == "edge-3" && v["relays"].as_array().is_some_and(|r| r.len() == 3)
    });
    eprintln!("selection put the hosting nodes first after {sel:?}");
    let minted = c[2]
        .call("POST", &format!("/v1/apps/{APP}/usersig"), &json!({"user_id": "late", "expire_secs": 60, "room_id": 7}))
        .json();
    let keys: Vec<String> = relayds.iter().map(|r| r.key.to_string()).collect();
    let relays = minted["relays"].as_array().expect("relays");
    assert_eq!(relays.len(), 3, "{minted}");
    assert_eq!(relays[2]["public_key"], keys[2], "node 3 (not hosting) is not last: {minted}");
    assert!(relays[..2].iter().all(|r| r["public_key"] != keys[2]), "{minted}");

    // A ban made through node 3 reaches the node whose relayd holds the user.
    let (n, user, peer, _) = peers.iter_mut().find(|p| p.3).expect("a member");
    let before = relayds[*n].stats().sessions;
    let r = c[2].call("DELETE", &format!("/v1/apps/{APP}/rooms/7/users/{user}?ban_secs=60"), &Value::Null);
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
    let t = wait_until(Duration::from_secs(2), "the ban removes the member on its node", || {
        relayds[*n].stats().sessions == before - 1
    });
    eprintln!("ban through node 3 removed {user} on node {} after {t:?}", *n + 1);
    match peer.join_within(Duration::from_millis(500)) {
        Err((Some(code), _)) => assert_eq!(code, relay::proto::ErrorCode::Banned),
        other => panic!("a banned user rejoined: {other:?}"),
    }

    // A secret rotated through node 3 (no overlap): the members keep their sessions.
    let held = total();
    let rot = c[2].call("POST", &format!("/v1/apps/{APP}/rotate-secret"), &json!({"overlap_secs": 0}));
    assert_eq!(rot.status, 200, "{}", String::from_utf8_lossy(&rot.body));
    for client in &c {
        wait_until(Duration::from_secs(3), "rotation on every node", || {
            client.get_ok(&format!("/v1/apps/{APP}"))["secrets"].as_array().is_some_and(|s| s.len() == 1)
        });
    }
    // Every relayd has the new secret once an unused old token is refused there...
    for node in 0..3 {
        let (_, _, p, _) = peers.iter_mut().find(|p| p.0 == node && !p.3).expect("a refused member on every node");
        wait_until(Duration::from_secs(3), "the rotation reaches relayd", || {
            matches!(p.join_within(Duration::from_millis(300)), Err((Some(relay::proto::ErrorCode::BadSignature), _)))
        });
    }
    // ...and the sessions made with the old secret are all still there.
    for (_, _, p, joined) in peers.iter_mut() {
        if *joined {
            p.keepalive();
        }
    }
    assert_eq!(total(), held, "a rotation ended sessions made with the old secret");
}

#[test]
fn nodes_reach_redis_over_tls_and_refuse_an_unknown_ca() {
    if !Redis::available() {
        return;
    }
    let dir = edgerelay_tests::TempDir::new("redis-tls").expect("temp dir");
    // A CA and a server certificate for 127.0.0.1 signed by it.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "edgerelay test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap())];
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let (cert_file, key_file, ca_file) = (dir.join("redis.crt"), dir.join("redis.key"), dir.join("ca.pem"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let redis = Redis::start_tls(SocketAddr::from(([127, 0, 0, 1], port)), cert_file, key_file, ca_file);

    let nodes = Nodes::start(&redis, 2, |_| "eu-west".into(), GENEROUS_LIMITS);
    let c: Vec<ApiClient> = nodes.nodes.iter().map(|n| n.admin_client()).collect();
    assert_eq!(c[0].call("POST", "/v1/apps", &json!({"sdkappid": 1400000901u32})).status, 201);
    wait_until(Duration::from_secs(3), "app on node 2 over TLS", || {
        c[1].call("GET", "/v1/apps/1400000901", &Value::Null).status == 200
    });
    assert_eq!(c[1].get_ok("/v1/cluster")["redis_reachable"], true);

    // A node that trusts another CA does not talk to this Redis.
    let other_key = rcgen::KeyPair::generate().unwrap();
    let mut other_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    other_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let other = other_params.self_signed(&other_key).unwrap();
    let other_ca = dir.join("other-ca.pem");
    std::fs::write(&other_ca, other.pem()).unwrap();
    let endpoint = "198.18.0.9:7000".parse().unwrap();
    let cfg = edgerelay_tests::cluster::cluster_toml_trusting(
        &redis,
        Some(&other_ca),
        &nodes.key,
        "edge-x",
        "eu-west",
        endpoint,
    );
    let stranger =
        edgerelay_tests::control::ControlDaemon::start_joining(&format!("{cfg}\n{GENEROUS_LIMITS}"), nodes.admin());
    wait_until(Duration::from_secs(5), "the stranger logs why it cannot reach Redis", || {
        let log = stranger.log();
        log.contains("cluster") && (log.contains("UnknownIssuer") || log.contains("certificate"))
    });
    let listed = c[0].get_ok("/v1/cluster");
    assert!(
        listed["nodes"].as_array().unwrap().iter().all(|n| n["node_id"] != "edge-x"),
        "a node trusting another CA registered: {listed}"
    );
}

#[test]
fn a_node_behind_a_trimmed_log_or_a_wiped_redis_resyncs_and_secrets_stay_sealed() {
    let Some(redis) = loopback_redis() else { return };
    let mut nodes = Nodes::start(&redis, 3, |_| "eu-west".into(), GENEROUS_LIMITS);
    let c1 = nodes.node(1).admin_client();
    let r = c1.call("POST", "/v1/apps", &json!({"sdkappid": 1400000401u32}));
    assert_eq!(r.status, 201);
    let secret = r.json()["secret"].as_str().unwrap().to_owned();

    // Node 3 stops; changes go on; the log is trimmed past node 3's position.
    let mut n3 = nodes.nodes.pop().unwrap();
    n3.stop();
    for i in 0..5 {
        let cidr = format!("198.18.77.{i}/32");
        assert_eq!(c1.call("POST", "/v1/blocklist", &json!({"cidr": cidr, "ttl_secs": 0})).status, 201);
    }
    assert_eq!(c1.call("DELETE", "/v1/apps/1400000401", &Value::Null).status, 204);
    redis.cli(&["XTRIM", "edgerelay:log", "MAXLEN", "0"]);
    let n3 = n3.restart();
    let c3 = n3.admin_client();
    wait_until(Duration::from_secs(5), "node 3 resynced past the gap", || {
        blocks(&c3).len() == 5 && !app_ids(&c3).contains(&1400000401)
    });
    let m = String::from_utf8_lossy(&c3.call("GET", "/metrics", &Value::Null).body).into_owned();
    let resyncs: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("edgerelay_cluster_resyncs_total "))
        .and_then(|v| v.parse().ok())
        .expect("resync counter");
    assert!(resyncs >= 1, "node 3 caught up without a resync: the trimmed entries were skipped silently?");

    // Nothing in Redis reads as a secret: every value is sealed.
    let r = c1.call("POST", "/v1/apps", &json!({"sdkappid": 1400000402u32}));
    let secret2 = r.json()["secret"].as_str().unwrap().to_owned();
    let key = c1.call("POST", "/v1/keys", &json!({"role": "auditor", "label": "x"})).json();
    let secret_key = key["secret_key"].as_str().unwrap().to_owned();
    let dump: String = ["apps", "keys", "blocks", "settings", "bans"]
        .iter()
        .map(|k| redis.cli(&["HGETALL", &format!("edgerelay:state:{k}")]))
        .chain([redis.cli(&["XRANGE", "edgerelay:log", "-", "+"])])
        .collect();
    assert!(dump.contains("1400000402"), "the dump holds the app's field name: {}", &dump[..dump.len().min(300)]);
    for s in [&secret, &secret2, &secret_key] {
        assert!(!dump.contains(s.as_str()), "a secret is readable in Redis");
    }
    assert!(!dump.contains("secret"), "a record's JSON is readable in Redis");

    // Redis loses everything: the first node to notice seeds it from its copy.
    redis.cli(&["FLUSHALL"]);
    wait_until(Duration::from_secs(5), "Redis re-seeded", || redis.cli(&["EXISTS", "edgerelay:epoch"]).trim() == "1");
    let c2 = nodes.node(2).admin_client();
    assert_eq!(c2.call("POST", "/v1/apps", &json!({"sdkappid": 1400000403u32})).status, 201);
    for c in [&c1, &c2, &c3] {
        wait_until(Duration::from_secs(5), "every node agrees after the re-seed", || {
            app_ids(c) == BTreeSet::from([1400000402, 1400000403]) && blocks(c).len() == 5
        });
    }
}
