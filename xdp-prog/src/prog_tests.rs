//! `BPF_PROG_RUN` tests: load [`OBJECT`] (verifier included) without attaching it, set map
//! entries, run crafted frames through it with aya's `TestRun`, and check the returned XDP
//! action and the `stats` counter deltas.
//!
//! Each test loads its own copy with its maps pinned in its own bpffs, mounted on a temporary
//! directory and unmounted on drop, so tests run in parallel without sharing state. They need
//! root (BPF, mount): without it they skip with one line, and under `CI=true` they fail.
//!
//! `BPF_PROG_RUN` refuses frames shorter than an Ethernet header (`EINVAL`), so the shortest
//! truncation tested is 14 bytes. It also cannot create an AF_XDP socket, so redirects are
//! tested with an empty `xsks` slot: the helper then returns its default, `XDP_PASS`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, HashMap, MapData, MapInfo, PerCpuArray, PerCpuHashMap};
use aya::programs::Xdp;
use aya::{Ebpf, EbpfLoader, TestRun, TestRunOptions};
use relay::wire::{self, EthernetAddress};

use crate::*;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

const ETH: usize = 14;
const MAC_A: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0xa]);
const MAC_B: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0xb]);

const RELAY_V4: &str = "198.51.100.1:20000";
const RELAY_V6: &str = "[2001:db8:ffff::1]:20000";
const CLIENT_V4: &str = "192.0.2.10:40000";
const CLIENT_V6: &str = "[2001:db8:1:2::10]:40000";

/// An SRTP-looking payload (V=2) and a control one (type 1).
const MEDIA: &[u8] = &[0x80, 0x60, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
const CONTROL: &[u8] = &[1, 2, 0, 0];

/// The config most tests use: relay ports 20000–20009, no rate limits.
const CONFIG: Config = Config {
    port_lo: 20_000,
    port_hi: 20_009,
    flags: 0,
    join_rate_per_sec: 0,
    join_burst: 0,
    pps_rate_per_sec: 0,
    pps_burst: 0,
    control_rate_per_sec: 0,
    control_burst: 0,
};

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

/// Ethernet + IP + UDP + `payload`, written by the relay's own `write_udp_headers`.
fn frame(src: &str, dst: &str, payload: &[u8]) -> Vec<u8> {
    let (src, dst) = (sa(src), sa(dst));
    let hdr = wire::headers_len(true, dst.is_ipv4());
    let mut buf = vec![0; hdr + payload.len()];
    buf[hdr..].copy_from_slice(payload);
    wire::write_udp_headers(&mut buf, Some((MAC_A, MAC_B)), src, dst, payload.len()).expect("headers fit");
    buf
}

fn put16(buf: &mut [u8], at: usize, v: u16) {
    buf[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

fn get16(buf: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([buf[at], buf[at + 1]])
}

/// Inserts an 802.1Q tag (VLAN 42) after the MAC addresses.
fn vlan(mut f: Vec<u8>) -> Vec<u8> {
    f.splice(12..12, [0x81, 0x00, 0x00, 42]);
    f
}

/// Inserts `options` (a multiple of 4 bytes) after the IPv4 header at `ip` and fixes IHL and
/// total length.
fn v4_options(mut f: Vec<u8>, ip: usize, options: &[u8]) -> Vec<u8> {
    assert_eq!(options.len() % 4, 0);
    let ihl = usize::from(f[ip] & 0xf) * 4;
    f.splice(ip + ihl..ip + ihl, options.iter().copied());
    f[ip] = 0x40 | u8::try_from((ihl + options.len()) / 4).unwrap();
    let tot = get16(&f, ip + 2) + u16::try_from(options.len()).unwrap();
    put16(&mut f, ip + 2, tot);
    f
}

/// Sets the IPv4 flags/fragment-offset field (offset in 8-byte units).
fn v4_frag(mut f: Vec<u8>, more: bool, offset_units: u16) -> Vec<u8> {
    put16(&mut f, ETH + 6, (u16::from(more) << 13) | offset_units);
    f
}

/// Inserts IPv6 extension header `(kind, bytes)`s after the fixed header: each gets its
/// next-header byte chained, and the payload length is fixed.
fn v6_ext(mut f: Vec<u8>, headers: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let ip = ETH;
    let mut next = f[ip + 6];
    let mut chain = Vec::new();
    for (kind, bytes) in headers.iter().rev() {
        let mut h = bytes.clone();
        h[0] = next;
        next = *kind;
        h.extend(chain);
        chain = h;
    }
    f[ip + 6] = next;
    let added = u16::try_from(chain.len()).unwrap();
    f.splice(ip + 40..ip + 40, chain);
    let plen = get16(&f, ip + 4) + added;
    put16(&mut f, ip + 4, plen);
    f
}

/// An 8-byte option header (Hop-by-Hop, Routing or Destination Options) of PadN.
fn opt8() -> Vec<u8> {
    vec![0, 0, 1, 4, 0, 0, 0, 0]
}

/// An IPv6 Fragment header with this offset (8-byte units) and M flag.
fn frag6(offset_units: u16, more: bool) -> Vec<u8> {
    let v = (offset_units << 3) | u16::from(more);
    let [a, b] = v.to_be_bytes();
    vec![0, 0, a, b, 0, 0, 0, 7]
}

const HOPOPTS: u8 = 0;
const ROUTING: u8 = 43;
const FRAGMENT: u8 = 44;
const DSTOPTS: u8 = 60;

/// Skips (one line) unless root; under `CI=true` fails instead.
fn require_root() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    // /proc/self belongs to the effective uid.
    if std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0) {
        return true;
    }
    let why = "BPF_PROG_RUN tests need root (BPF, and mounting a bpffs for the pinned maps)";
    assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true and cannot run: {why}");
    eprintln!("skipped: {why}");
    false
}

/// A private bpffs mounted on a fresh directory, unmounted and removed on drop, so that the
/// maps' `LIBBPF_PIN_BY_NAME` pins neither need nor touch `/sys/fs/bpf`.
struct BpfFs {
    dir: PathBuf,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl BpfFs {
    fn mount() -> Rc<BpfFs> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("edgerelay-bpffs-{}-{n}", std::process::id()));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let fs = Rc::new(BpfFs { dir });
        let status = Command::new("mount").args(["-t", "bpf", "bpf"]).arg(&fs.dir).status().expect("run mount");
        assert!(status.success(), "mount -t bpf bpf {}: {status}", fs.dir.display());
        fs
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// The program loaded into the kernel, with its maps pinned in a private bpffs.
struct Prog {
    ebpf: Ebpf,
    fs: Rc<BpfFs>,
}

impl Prog {
    /// Loads the program with `config`, or `None` if the test must skip.
    fn load(config: Config) -> Option<Prog> {
        if !require_root() {
            return None;
        }
        let prog = Self::load_at(BpfFs::mount());
        prog.set_config(config);
        Some(prog)
    }

    /// Loads the program, pinning its maps in `fs` or reusing those pinned there.
    fn load_at(fs: Rc<BpfFs>) -> Prog {
        let mut ebpf =
            EbpfLoader::new().default_map_pin_directory(&fs.dir).load(OBJECT).expect("aya parses the object");
        let xdp: &mut Xdp = ebpf.program_mut(PROGRAM).expect("program in object").try_into().expect("an XDP program");
        if let Err(e) = xdp.load() {
            panic!("the verifier rejects the program: {e:?}");
        }
        Prog { ebpf, fs }
    }

    fn xdp(&self) -> &Xdp {
        self.ebpf.program(PROGRAM).expect("program in object").try_into().expect("an XDP program")
    }

    fn set_config(&self, config: Config) {
        let mut map: Array<MapData, Config> = Array::try_from(self.open(maps::CONFIG)).expect("config is an array");
        map.set(0, config, 0).expect("set config");
    }

    /// A second handle to a pinned map, so maps can be written while `self` is borrowed.
    fn open(&self, name: &str) -> aya::maps::Map {
        let data = MapData::from_pin(self.fs.dir.join(name)).expect("pinned map");
        match name {
            maps::CONFIG => aya::maps::Map::Array(data),
            maps::STATS => aya::maps::Map::PerCpuArray(data),
            maps::BLOCKLIST_V4 | maps::BLOCKLIST_V6 => aya::maps::Map::LpmTrie(data),
            maps::SESSIONS => aya::maps::Map::HashMap(data),
            maps::JOIN_BUCKETS | maps::PPS_BUCKETS => aya::maps::Map::LruHashMap(data),
            maps::OFFENDERS => aya::maps::Map::PerCpuLruHashMap(data),
            _ => panic!("no test handle for {name}"),
        }
    }

    fn block_v4(&self, net: &str, prefix_len: u32, expires_ns: u64) {
        let ip: std::net::Ipv4Addr = net.parse().expect("test address");
        let mut t: LpmTrie<MapData, [u8; 4], BlockEntry> = self.open(maps::BLOCKLIST_V4).try_into().expect("trie");
        t.insert(&Key::new(prefix_len, ip.octets()), BlockEntry { expires_ns }, 0).expect("insert v4 block");
    }

    fn block_v6(&self, net: &str, prefix_len: u32, expires_ns: u64) {
        let ip: std::net::Ipv6Addr = net.parse().expect("test address");
        let mut t: LpmTrie<MapData, [u8; 16], BlockEntry> = self.open(maps::BLOCKLIST_V6).try_into().expect("trie");
        t.insert(&Key::new(prefix_len, ip.octets()), BlockEntry { expires_ns }, 0).expect("insert v6 block");
    }

    fn add_session(&self, src: &str, dst: &str) {
        let mut m: HashMap<MapData, SessionKey, Session> = self.open(maps::SESSIONS).try_into().expect("hash");
        let key = SessionKey::new(sa(src), sa(dst)).expect("same family");
        m.insert(key, Session { id: 7 }, 0).expect("insert session");
    }

    fn buckets(&self, name: &str) -> HashMap<MapData, SrcKey, Bucket> {
        self.open(name).try_into().expect("lru hash")
    }

    /// `offenders`, summed over CPUs, by address.
    fn offenders(&self) -> std::collections::BTreeMap<IpAddr, u64> {
        let m: PerCpuHashMap<MapData, SrcKey, u64> = self.open(maps::OFFENDERS).try_into().expect("per-cpu lru hash");
        m.iter()
            .map(|item| {
                let (k, per_cpu) = item.expect("offenders entry");
                (k.ip().expect("a known family"), per_cpu.iter().sum())
            })
            .collect()
    }

    /// `stats`, summed over CPUs.
    fn stats(&self) -> Vec<Counter> {
        let m: PerCpuArray<MapData, Counter> = self.open(maps::STATS).try_into().expect("per-cpu array");
        (0..u32::try_from(Reason::ALL.len()).unwrap())
            .map(|i| {
                let per_cpu = m.get(&i, 0).expect("stats slot");
                per_cpu.iter().fold(Counter::default(), |a, c| Counter {
                    packets: a.packets + c.packets,
                    bytes: a.bytes + c.bytes,
                })
            })
            .collect()
    }

    /// Runs `frame` through the program and returns the XDP action.
    fn run(&self, frame: &[u8]) -> u32 {
        let opts = TestRunOptions { data_in: Some(frame), ..TestRunOptions::default() };
        self.xdp().test_run(opts).expect("BPF_PROG_RUN").return_value
    }

    /// Runs `frame` and checks the action and that exactly `reason` counted it.
    #[track_caller]
    fn expect(&self, frame: &[u8], action: u32, reason: Reason) {
        let before = self.stats();
        let got = self.run(frame);
        let after = self.stats();
        let moved: Vec<&str> = Reason::ALL
            .iter()
            .filter(|r| after[**r as usize].packets != before[**r as usize].packets)
            .map(|r| r.name())
            .collect();
        assert_eq!((got, moved), (action, vec![reason.name()]), "action and counted reasons");
        let (a, b) = (after[reason as usize], before[reason as usize]);
        assert_eq!(a.packets - b.packets, 1);
        assert_eq!(a.bytes - b.bytes, frame.len() as u64, "bytes counts the whole frame");
    }
}

#[test]
fn loads_pins_by_name_and_layouts_match() {
    let Some(prog) = Prog::load(CONFIG) else { return };
    let sizes: [(&str, usize, usize); 8] = [
        (maps::CONFIG, 4, size_of::<Config>()),
        (maps::STATS, 4, size_of::<Counter>()),
        (maps::BLOCKLIST_V4, size_of::<Key<[u8; 4]>>(), size_of::<BlockEntry>()),
        (maps::BLOCKLIST_V6, size_of::<Key<[u8; 16]>>(), size_of::<BlockEntry>()),
        (maps::SESSIONS, size_of::<SessionKey>(), size_of::<Session>()),
        (maps::JOIN_BUCKETS, size_of::<SrcKey>(), size_of::<Bucket>()),
        (maps::PPS_BUCKETS, size_of::<SrcKey>(), size_of::<Bucket>()),
        (maps::OFFENDERS, size_of::<SrcKey>(), size_of::<u64>()),
    ];
    for (name, key, value) in sizes {
        let info = MapInfo::from_pin(prog.fs.dir.join(name)).unwrap_or_else(|e| panic!("{name} pinned: {e}"));
        assert_eq!((info.key_size() as usize, info.value_size() as usize), (key, value), "{name}");
    }
    let xsks = MapInfo::from_pin(prog.fs.dir.join(maps::XSKS)).expect("xsks pinned");
    assert_eq!(xsks.map_type().expect("known type"), aya::maps::MapType::XskMap);
    let info = prog.xdp().info().expect("program info");
    let verified = info.verified_instruction_count().expect("kernel reports verified instructions");
    eprintln!("verifier: {verified} instructions processed (limit 1000000)");
    assert!(verified < 100_000, "verifier complexity grew to {verified} instructions");
    let stats = MapInfo::from_pin(prog.fs.dir.join(maps::STATS)).expect("stats pinned");
    assert_eq!(stats.max_entries() as usize, Reason::ALL.len());
    let offenders = MapInfo::from_pin(prog.fs.dir.join(maps::OFFENDERS)).expect("offenders pinned");
    assert_eq!(offenders.map_type().expect("known type"), aya::maps::MapType::LruPerCpuHash);
    assert_eq!(offenders.max_entries(), OFFENDERS_MAX);

    // A second load into the same directory reuses the pinned maps, as relayd does on restart:
    // it sees the first load's config, and both count into one `stats`.
    let second = Prog::load_at(prog.fs.clone());
    let config: Array<&MapData, Config> =
        Array::try_from(second.ebpf.map(maps::CONFIG).expect("config")).expect("array");
    assert_eq!(config.get(&0, 0).expect("config"), CONFIG, "the second load sees the first's config");
    prog.expect(&frame(CLIENT_V4, RELAY_V4, CONTROL), XDP_PASS, Reason::NoSocket);
    let stats: PerCpuArray<&MapData, Counter> =
        PerCpuArray::try_from(second.ebpf.map(maps::STATS).expect("stats")).expect("per-cpu array");
    let no_socket: u64 = stats.get(&(Reason::NoSocket as u32), 0).expect("slot").iter().map(|c| c.packets).sum();
    assert_eq!(no_socket, 1);
}

#[test]
fn not_ours_passes() {
    let Some(prog) = Prog::load(CONFIG) else { return };
    let mut arp = frame(CLIENT_V4, RELAY_V4, CONTROL);
    put16(&mut arp, 12, 0x0806);
    prog.expect(&arp, XDP_PASS, Reason::PassNotOurs);

    let mut tcp = frame(CLIENT_V4, RELAY_V4, MEDIA);
    tcp[ETH + 9] = 6;
    prog.expect(&tcp, XDP_PASS, Reason::PassNotOurs);

    let mut icmp6 = frame(CLIENT_V6, RELAY_V6, MEDIA);
    icmp6[ETH + 6] = 58;
    prog.expect(&icmp6, XDP_PASS, Reason::PassNotOurs);

    for port in [19_999, 20_010, 22, 0] {
        let dst = SocketAddr::new(sa(RELAY_V4).ip(), port).to_string();
        prog.expect(&frame(CLIENT_V4, &dst, MEDIA), XDP_PASS, Reason::PassNotOurs);
        let dst = SocketAddr::new(sa(RELAY_V6).ip(), port).to_string();
        prog.expect(&frame(CLIENT_V6, &dst, MEDIA), XDP_PASS, Reason::PassNotOurs);
    }
    // A second 802.1Q tag (QinQ) is not parsed.
    let mut qinq = vlan(vlan(frame(CLIENT_V4, RELAY_V4, MEDIA)));
    prog.expect(&qinq, XDP_PASS, Reason::PassNotOurs);
    qinq.splice(12..16, []);
    prog.expect(&qinq, XDP_DROP, Reason::UnknownSession);

    // The edges of the port range are ours.
    for port in [20_000, 20_009] {
        let dst = SocketAddr::new(sa(RELAY_V4).ip(), port).to_string();
        prog.expect(&frame(CLIENT_V4, &dst, MEDIA), XDP_DROP, Reason::UnknownSession);
    }

    // An unconfigured (zeroed) config passes everything, port 0 included.
    prog.set_config(Config::default());
    prog.expect(&frame(CLIENT_V4, RELAY_V4, MEDIA), XDP_PASS, Reason::PassNotOurs);
    prog.expect(&frame(CLIENT_V4, "198.51.100.1:0", MEDIA), XDP_PASS, Reason::PassNotOurs);
}

#[test]
fn truncation_at_every_length_is_malformed() {
    let Some(prog) = Prog::load(CONFIG) else { return };
    for f in [
        frame(CLIENT_V4, RELAY_V4, MEDIA),
        frame(CLIENT_V6, RELAY_V6, MEDIA),
        vlan(frame(CLIENT_V4, RELAY_V4, CONTROL)),
        vlan(frame(CLIENT_V6, RELAY_V6, CONTROL)),
        v4_options(frame(CLIENT_V4, RELAY_V4, MEDIA), ETH, &[1, 1, 1, 0]),
    ] {
        // Every cut from just after the Ethernet header to one byte short: the IP length
        // fields then point past the frame, or a header itself is cut.
        for len in ETH..f.len() {
            prog.expect(&f[..len], XDP_DROP, Reason::Malformed);
        }
    }
    // Shorter than an Ethernet header: BPF_PROG_RUN itself refuses the frame.
    let opts = TestRunOptions { data_in: Some(&[0u8; 13]), ..TestRunOptions::default() };
    assert!(prog.xdp().test_run(opts).is_err(), "the kernel rejects frames under 14 bytes");
}

#[test]
fn inconsistent_headers_are_malformed() {
    let Some(prog) = Prog::load(CONFIG) else { return };
    let v4 = frame(CLIENT_V4, RELAY_V4, MEDIA);
    let v6 = frame(CLIENT_V6, RELAY_V6, MEDIA);
    let udp4 = ETH + 20;
    let udp6 = ETH + 40;
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut f = v4.clone();
    f[ETH] = 0x44;
    cases.push(("IHL 4", f));
    let mut f = v4.clone();
    f[ETH] = 0x4f;
    cases.push(("IHL 15 past the frame", f));
    let mut f = v4.clone();
    f[ETH] = 0x65;
    cases.push(("IPv4 EtherType, version 6", f));
    let mut f = v6.clone();
    f[ETH] = 0x40;
    cases.push(("IPv6 EtherType, version 4", f));
    let mut f = v4.clone();
    put16(&mut f, ETH + 2, 19);
    cases.push(("total length below IHL", f));
    let mut f = v4.clone();
    put16(&mut f, ETH + 2, 20 + 7);
    cases.push(("v4 total length cuts the UDP header", f));
    let mut f = v6.clone();
    put16(&mut f, ETH + 4, 7);
    cases.push(("v6 payload length cuts the UDP header", f));
    for (udp, base) in [(udp4, &v4), (udp6, &v6)] {
        for (what, len) in [("UDP length 0", 0u16), ("UDP length 7", 7), ("UDP length 8: empty payload", 8)] {
            let mut f = base.clone();
            put16(&mut f, udp + 4, len);
            cases.push((what, f));
        }
        let mut f = base.clone();
        let len = get16(&f, udp + 4) + 1;
        put16(&mut f, udp + 4, len);
        cases.push(("UDP length past the IP payload", f));
    }
    cases.push(("v4 empty datagram", frame(CLIENT_V4, RELAY_V4, &[])));
    cases.push(("v6 empty datagram", frame(CLIENT_V6, RELAY_V6, &[])));
    for (what, f) in cases {
        eprintln!("case: {what}");
        prog.expect(&f, XDP_DROP, Reason::Malformed);
    }

    // Ethernet padding after the IP packet, and IP payload after the UDP length, are fine
    // (relay::wire::parse_udp ignores both).
    let mut padded = v4.clone();
    padded.extend([0; 6]);
    prog.expect(&padded, XDP_DROP, Reason::UnknownSession);
    let mut short_udp = frame(CLIENT_V6, RELAY_V6, CONTROL);
    put16(&mut short_udp, udp6 + 4, 9);
    prog.expect(&short_udp, XDP_PASS, Reason::NoSocket);
}

#[test]
fn ipv4_options_and_vlan_are_parsed() {
    let Some(prog) = Prog::load(CONFIG) else { return };
    prog.add_session(CLIENT_V4, RELAY_V4);
    prog.add_session(CLIENT_V6, RELAY_V6);
    let media4 = frame(CLIENT_V4, RELAY_V4, MEDIA);
    let media6 = frame(CLIENT_V6, RELAY_V6, MEDIA);
    // 4 bytes of options (NOP NOP NOP EOL), and the maximum: 40 bytes, IHL 15.
    prog.expect(&v4_options(media4.clone(), ETH, &[1, 1, 1, 0]), XDP_PASS, Reason::NoSocket);
    prog.expect(&v4_options(media4.clone(), ETH, &[1; 40]), XDP_PASS, Reason::NoSocket);
    // The options push the UDP header: its port decides, not the bytes at offset 20.
    let other = frame(CLIENT_V4, "198.51.100.1:22", MEDIA);
    prog.expect(&v4_options(other, ETH, &[1; 8]), XDP_PASS, Reason::PassNotOurs);

    prog.expect(&vlan(media4.clone()), XDP_PASS, Reason::NoSocket);
    prog.expect(&vlan(media6.clone()), XDP_PASS, Reason::NoSocket);
    prog.expect(&v4_options(vlan(media4), ETH + 4, &[1; 4]), XDP_PASS, Reason::NoSocket);
    let mut tagged_arp = vlan(media6);
    put16(&mut tagged_arp, 16, 0x0806);
    prog.expect(&tagged_arp, XDP_PASS, Reason::PassNotOurs);
}

#[test]
fn fragments() {
    let Some(prog) = Prog::load(CONFIG) else { return };
    prog.add_session(CLIENT_V4, RELAY_V4);
    prog.add_session(CLIENT_V6, RELAY_V6);
    let v4 = frame(CLIENT_V4, RELAY_V4, MEDIA);
    // First fragment to a relay port: dropped. To another port: passed.
    prog.expect(&v4_frag(v4.clone(), true, 0), XDP_DROP, Reason::Fragment);
    prog.expect(&v4_frag(frame(CLIENT_V4, "198.51.100.1:53", MEDIA), true, 0), XDP_PASS, Reason::PassNotOurs);
    // Non-first fragments carry no port: passed (the kernel cannot reassemble ours).
    prog.expect(&v4_frag(v4.clone(), true, 185), XDP_PASS, Reason::PassFragment);
    prog.expect(&v4_frag(v4.clone(), false, 185), XDP_PASS, Reason::PassFragment);
    // A first fragment too short to hold the UDP header (tiny-fragment attack).
    let mut tiny = v4_frag(v4.clone(), true, 0);
    put16(&mut tiny, ETH + 2, 24);
    prog.expect(&tiny[..ETH + 24], XDP_DROP, Reason::Malformed);
    // DF alone is not a fragment (write_udp_headers sets it).
    assert_eq!(get16(&v4, ETH + 6), 0x4000);
    prog.expect(&v4, XDP_PASS, Reason::NoSocket);

    let v6 = frame(CLIENT_V6, RELAY_V6, MEDIA);
    prog.expect(&v6_ext(v6.clone(), &[(FRAGMENT, frag6(0, true))]), XDP_DROP, Reason::Fragment);
    prog.expect(&v6_ext(v6.clone(), &[(FRAGMENT, frag6(0, false))]), XDP_DROP, Reason::Fragment);
    prog.expect(&v6_ext(v6.clone(), &[(FRAGMENT, frag6(100, true))]), XDP_PASS, Reason::PassFragment);
    prog.expect(&v6_ext(v6.clone(), &[(HOPOPTS, opt8()), (FRAGMENT, frag6(9, false))]), XDP_PASS, Reason::PassFragment);
    let other = frame(CLIENT_V6, "[2001:db8:ffff::1]:53", MEDIA);
    prog.expect(&v6_ext(other, &[(FRAGMENT, frag6(0, true))]), XDP_PASS, Reason::PassNotOurs);
}

#[test]
fn ipv6_extension_headers() {
    let Some(prog) = Prog::load(CONFIG) else { return };
    prog.add_session(CLIENT_V6, RELAY_V6);
    let v6 = frame(CLIENT_V6, RELAY_V6, MEDIA);
    // UDP to a relay port behind any extension header: dropped.
    for kind in [HOPOPTS, ROUTING, DSTOPTS] {
        prog.expect(&v6_ext(v6.clone(), &[(kind, opt8())]), XDP_DROP, Reason::ExtHeader);
    }
    // A 16-byte header (Hdr Ext Len 1) is skipped by its length.
    let mut long = opt8();
    long[1] = 1;
    long.extend([1, 6, 0, 0, 0, 0, 0, 0]);
    prog.expect(&v6_ext(v6.clone(), &[(DSTOPTS, long)]), XDP_DROP, Reason::ExtHeader);
    // The same to another port, or to TCP, passes.
    let other = frame(CLIENT_V6, "[2001:db8:ffff::1]:22", MEDIA);
    prog.expect(&v6_ext(other, &[(HOPOPTS, opt8()), (DSTOPTS, opt8())]), XDP_PASS, Reason::PassNotOurs);
    let mut tcp = v6_ext(v6.clone(), &[(HOPOPTS, opt8())]);
    tcp[ETH + 40] = 6;
    prog.expect(&tcp, XDP_PASS, Reason::PassNotOurs);
    let mut no_next = v6_ext(v6.clone(), &[(DSTOPTS, opt8())]);
    no_next[ETH + 40] = 59;
    prog.expect(&no_next, XDP_PASS, Reason::PassNotOurs);
    // Seven headers plus UDP is the longest chain walked; eight headers is too many.
    let seven: Vec<_> = (0..7).map(|_| (DSTOPTS, opt8())).collect();
    prog.expect(&v6_ext(v6.clone(), &seven), XDP_DROP, Reason::ExtHeader);
    let eight: Vec<_> = (0..8).map(|_| (DSTOPTS, opt8())).collect();
    prog.expect(&v6_ext(v6.clone(), &eight), XDP_DROP, Reason::ExtHeader);
    let mut eight_tcp = v6_ext(v6.clone(), &eight);
    eight_tcp[ETH + 40 + 7 * 8] = 6;
    prog.expect(&eight_tcp, XDP_DROP, Reason::ExtHeader);
    let mut seven_tcp = v6_ext(v6.clone(), &seven);
    seven_tcp[ETH + 40 + 6 * 8] = 6;
    prog.expect(&seven_tcp, XDP_PASS, Reason::PassNotOurs);
    // A header whose length runs past the payload length, or past the frame.
    let mut overrun = v6_ext(v6.clone(), &[(HOPOPTS, opt8())]);
    overrun[ETH + 41] = 200;
    prog.expect(&overrun, XDP_DROP, Reason::Malformed);
    let cut = v6_ext(v6, &[(HOPOPTS, opt8())]);
    let mut cut = cut[..ETH + 41].to_vec();
    put16(&mut cut, ETH + 4, 1);
    prog.expect(&cut, XDP_DROP, Reason::Malformed);
}

#[test]
fn blocklist_prefixes_and_expiry() {
    let Some(prog) = Prog::load(CONFIG) else { return };
    prog.add_session(CLIENT_V4, RELAY_V4);
    prog.add_session(CLIENT_V6, RELAY_V6);
    let now = boot_time_ns();
    let hour = 3_600_000_000_000;
    prog.block_v4("192.0.2.0", 24, 0);
    prog.block_v6("2001:db8:1:2::", 64, now + hour);
    for (src, dst) in [(CLIENT_V4, RELAY_V4), ("192.0.2.255:1", RELAY_V4), (CLIENT_V6, RELAY_V6)] {
        prog.expect(&frame(src, dst, MEDIA), XDP_DROP, Reason::Blocklisted);
        prog.expect(&frame(src, dst, CONTROL), XDP_DROP, Reason::Blocklisted);
        prog.expect(&frame(src, dst, &[0x40]), XDP_DROP, Reason::Blocklisted);
    }
    prog.expect(&frame("[2001:db8:1:2:ffff::1]:1", RELAY_V6, &[0x40]), XDP_DROP, Reason::Blocklisted);
    // Outside the prefixes.
    prog.expect(&frame("192.0.3.1:1", RELAY_V4, &[0x40]), XDP_DROP, Reason::NotRelayed);
    prog.expect(&frame("[2001:db8:1:3::10]:1", RELAY_V6, &[0x40]), XDP_DROP, Reason::NotRelayed);
    // The blocklist applies to relay traffic only: SSH from a blocked source still passes.
    prog.expect(&frame(CLIENT_V4, "198.51.100.1:22", MEDIA), XDP_PASS, Reason::PassNotOurs);

    // An expired entry is ignored...
    prog.block_v4("203.0.113.0", 24, now - 1);
    prog.block_v6("2001:db8:9::", 48, 1);
    prog.expect(&frame("203.0.113.9:1", RELAY_V4, &[0x40]), XDP_DROP, Reason::NotRelayed);
    prog.expect(&frame("[2001:db8:9::9]:1", RELAY_V6, &[0x40]), XDP_DROP, Reason::NotRelayed);
    // ... and does not hide a live shorter prefix: expired /32 and /26 inside a live /24,
    // expired /128 and /100 inside a live /64.
    prog.block_v4("192.0.2.10", 32, now - 1);
    prog.block_v4("192.0.2.0", 26, 1);
    prog.expect(&frame(CLIENT_V4, RELAY_V4, MEDIA), XDP_DROP, Reason::Blocklisted);
    prog.block_v6("2001:db8:1:2::10", 128, 1);
    prog.block_v6("2001:db8:1:2::", 100, now - 1);
    prog.expect(&frame(CLIENT_V6, RELAY_V6, MEDIA), XDP_DROP, Reason::Blocklisted);
    // An expired /32 with nothing live above it: not blocked.
    prog.block_v4("198.18.0.1", 32, 1);
    prog.expect(&frame("198.18.0.1:1", RELAY_V4, &[0x40]), XDP_DROP, Reason::NotRelayed);
    // A /0 blocks everyone.
    prog.block_v4("0.0.0.0", 0, 0);
    prog.expect(&frame("198.18.0.1:1", RELAY_V4, &[0x40]), XDP_DROP, Reason::Blocklisted);
}

#[test]
fn sessions_gate_media() {
    let Some(prog) = Prog::load(CONFIG) else { return };
    for (client, relay) in [(CLIENT_V4, RELAY_V4), (CLIENT_V6, RELAY_V6)] {
        let media = frame(client, relay, MEDIA);
        prog.expect(&media, XDP_DROP, Reason::UnknownSession);
        prog.add_session(client, relay);
        // Known session, empty xsks slot: the helper's default XDP_PASS, counted no_socket.
        prog.expect(&media, XDP_PASS, Reason::NoSocket);
        // Every part of the 5-tuple counts.
        let (c, r) = (sa(client), sa(relay));
        let other_port = SocketAddr::new(c.ip(), c.port() + 1).to_string();
        prog.expect(&frame(&other_port, relay, MEDIA), XDP_DROP, Reason::UnknownSession);
        let other_relay_port = SocketAddr::new(r.ip(), r.port() + 1).to_string();
        prog.expect(&frame(client, &other_relay_port, MEDIA), XDP_DROP, Reason::UnknownSession);
        let other_ip = match c.ip() {
            IpAddr::V4(_) => "192.0.2.11:40000",
            IpAddr::V6(_) => "[2001:db8:1:2::11]:40000",
        };
        prog.expect(&frame(other_ip, relay, MEDIA), XDP_DROP, Reason::UnknownSession);
        // Control messages need no session.
        prog.expect(&frame(other_ip, relay, CONTROL), XDP_PASS, Reason::NoSocket);
    }
}

#[test]
fn rfc7983_demultiplexing() {
    let Some(prog) = Prog::load(CONFIG) else { return };
    prog.add_session(CLIENT_V4, RELAY_V4);
    for first in [0u8, 1, 2, 3] {
        prog.expect(&frame(CLIENT_V4, RELAY_V4, &[first]), XDP_PASS, Reason::NoSocket);
    }
    for first in [128u8, 150, 191] {
        prog.expect(&frame(CLIENT_V4, RELAY_V4, &[first, 0]), XDP_PASS, Reason::NoSocket);
    }
    for first in [4u8, 19, 20, 63, 64, 79, 127, 192, 255] {
        prog.expect(&frame(CLIENT_V4, RELAY_V4, &[first]), XDP_DROP, Reason::NotRelayed);
    }
}

#[test]
fn no_socket_counts_the_redirect_that_found_none() {
    let Some(prog) = Prog::load(CONFIG) else { return };
    prog.add_session(CLIENT_V6, RELAY_V6);
    let before = prog.stats();
    for payload in [CONTROL, MEDIA] {
        assert_eq!(prog.run(&frame(CLIENT_V6, RELAY_V6, payload)), XDP_PASS);
    }
    let after = prog.stats();
    let no_socket = Reason::NoSocket as usize;
    assert_eq!(after[no_socket].packets - before[no_socket].packets, 2);
    for r in [Reason::RedirectControl, Reason::RedirectMedia] {
        assert_eq!(after[r as usize], before[r as usize], "{} without a socket", r.name());
    }
}

/// Sends `n` frames and returns how many were not dropped by `limited`.
fn admitted(prog: &Prog, f: &[u8], n: usize, limited: Reason) -> usize {
    (0..n)
        .filter(|_| {
            let before = prog.stats()[limited as usize].packets;
            prog.run(f);
            prog.stats()[limited as usize].packets == before
        })
        .count()
}

#[test]
fn join_bucket_empties_and_refills() {
    let config = Config { join_rate_per_sec: 1, join_burst: 3, ..CONFIG };
    let Some(prog) = Prog::load(config) else { return };
    let join = frame(CLIENT_V4, RELAY_V4, CONTROL);
    for _ in 0..3 {
        prog.expect(&join, XDP_PASS, Reason::NoSocket);
    }
    prog.expect(&join, XDP_DROP, Reason::JoinRateLimited);
    prog.expect(&join, XDP_DROP, Reason::JoinRateLimited);
    // Another source has its own bucket; media does not use the join bucket.
    prog.expect(&frame("192.0.2.11:1", RELAY_V4, CONTROL), XDP_PASS, Reason::NoSocket);
    prog.expect(&frame(CLIENT_V4, RELAY_V4, MEDIA), XDP_DROP, Reason::UnknownSession);

    // Refill: pretend the last refill was 2.5 s ago, with an empty bucket: 2 joins at 1/s.
    let key = SrcKey::new(sa(CLIENT_V4).ip());
    let mut buckets = prog.buckets(maps::JOIN_BUCKETS);
    assert!(buckets.get(&key, 0).expect("bucket exists").tokens < NANOTOKENS_PER_PACKET);
    buckets.insert(key, Bucket { tokens: 0, last_ns: boot_time_ns() - 2_500_000_000 }, 0).expect("write bucket");
    assert_eq!(admitted(&prog, &join, 5, Reason::JoinRateLimited), 2);
    // Long ago: the bucket refills to its burst, not beyond.
    buckets.insert(key, Bucket { tokens: 0, last_ns: 1 }, 0).expect("write bucket");
    assert_eq!(admitted(&prog, &join, 10, Reason::JoinRateLimited), 3);

    // Config changes apply at once: a bigger burst, then no limit at all.
    prog.set_config(Config { join_burst: 5, ..config });
    buckets.insert(key, Bucket { tokens: 0, last_ns: 1 }, 0).expect("write bucket");
    assert_eq!(admitted(&prog, &join, 10, Reason::JoinRateLimited), 5);
    prog.set_config(Config { join_rate_per_sec: 0, ..config });
    assert_eq!(admitted(&prog, &join, 10, Reason::JoinRateLimited), 10);
    // A smaller burst caps tokens already in the bucket.
    buckets.insert(key, Bucket { tokens: 50 * NANOTOKENS_PER_PACKET, last_ns: boot_time_ns() }, 0).expect("write");
    prog.set_config(Config { join_burst: 2, ..config });
    assert_eq!(admitted(&prog, &join, 10, Reason::JoinRateLimited), 2);
}

#[test]
fn known_sessions_control_skips_the_join_bucket_and_the_budget() {
    let config = Config { join_rate_per_sec: 1, join_burst: 1, control_rate_per_sec: 1, control_burst: 1, ..CONFIG };
    let Some(prog) = Prog::load(config) else { return };
    prog.add_session(CLIENT_V4, RELAY_V4);
    let keepalive = frame(CLIENT_V4, RELAY_V4, CONTROL);
    for _ in 0..20 {
        prog.expect(&keepalive, XDP_PASS, Reason::NoSocket);
    }
    assert_eq!(prog.stats()[Reason::JoinRateLimited as usize].packets, 0);
    assert_eq!(prog.stats()[Reason::ControlBudget as usize].packets, 0);
    // A stranger at the same address but another port has no session: it meets its bucket.
    let stranger = frame("192.0.2.10:40001", RELAY_V4, CONTROL);
    prog.expect(&stranger, XDP_PASS, Reason::NoSocket);
    prog.expect(&stranger, XDP_DROP, Reason::JoinRateLimited);
}

#[test]
fn the_control_budget_caps_sources_that_each_have_a_full_bucket() {
    let config = Config { join_rate_per_sec: 10, join_burst: 10, control_rate_per_sec: 1, control_burst: 3, ..CONFIG };
    let Some(prog) = Prog::load(config) else { return };
    // 50 spoofed sources, one join each: every source bucket is full, the budget is not.
    let admitted = (0..50u8)
        .filter(|i| {
            let before = prog.stats()[Reason::ControlBudget as usize].packets;
            prog.run(&frame(&format!("198.18.{i}.1:1000"), RELAY_V4, CONTROL));
            prog.stats()[Reason::ControlBudget as usize].packets == before
        })
        .count();
    assert_eq!(admitted, 3, "the budget's burst, then nothing");
    assert_eq!(prog.stats()[Reason::ControlBudget as usize].packets, 47);
    assert_eq!(prog.stats()[Reason::JoinRateLimited as usize].packets, 0);
    // Media is not charged to it, and 0 turns it off.
    prog.set_config(Config { control_rate_per_sec: 0, ..config });
    prog.expect(&frame("198.18.200.1:1000", RELAY_V4, CONTROL), XDP_PASS, Reason::NoSocket);
}

#[test]
fn peer_relays_skip_the_packet_bucket() {
    let config = Config { pps_rate_per_sec: 1, pps_burst: 1, ..CONFIG };
    let Some(prog) = Prog::load(config) else { return };
    let mut sessions: HashMap<MapData, SessionKey, Session> = prog.open(maps::SESSIONS).try_into().expect("hash");
    let key = SessionKey::new(sa(CLIENT_V4), sa(RELAY_V4)).unwrap();
    sessions.insert(key, Session { id: 7 | SESSION_PEER }, 0).unwrap();
    let media = frame(CLIENT_V4, RELAY_V4, MEDIA);
    for _ in 0..20 {
        prog.expect(&media, XDP_PASS, Reason::NoSocket);
    }
    assert_eq!(prog.stats()[Reason::RateLimited as usize].packets, 0);
    // The same source as a client session meets its bucket.
    sessions.insert(key, Session { id: 7 }, 0).unwrap();
    prog.expect(&media, XDP_PASS, Reason::NoSocket);
    prog.expect(&media, XDP_DROP, Reason::RateLimited);
}

#[test]
fn packet_bucket_empties_and_refills_in_real_time() {
    // 10 packets/s: one token every 100 ms.
    let config = Config { pps_rate_per_sec: 10, pps_burst: 2, ..CONFIG };
    let Some(prog) = Prog::load(config) else { return };
    prog.add_session(CLIENT_V6, RELAY_V6);
    let media = frame(CLIENT_V6, RELAY_V6, MEDIA);
    prog.expect(&media, XDP_PASS, Reason::NoSocket);
    prog.expect(&media, XDP_PASS, Reason::NoSocket);
    prog.expect(&media, XDP_DROP, Reason::RateLimited);
    // The unknown-session check comes first: such packets never touch a bucket.
    prog.expect(&frame("[2001:db8:1:2::10]:1", RELAY_V6, MEDIA), XDP_DROP, Reason::UnknownSession);
    // Joins from the same source use the other bucket.
    prog.expect(&frame(CLIENT_V6, RELAY_V6, CONTROL), XDP_PASS, Reason::NoSocket);
    std::thread::sleep(std::time::Duration::from_millis(150));
    prog.expect(&media, XDP_PASS, Reason::NoSocket);
    prog.expect(&media, XDP_DROP, Reason::RateLimited);

    // The state is what the C says: nanotokens and CLOCK_BOOTTIME.
    let b = prog.buckets(maps::PPS_BUCKETS).get(&SrcKey::new(sa(CLIENT_V6).ip()), 0).expect("bucket");
    assert!(b.tokens < NANOTOKENS_PER_PACKET);
    let now = boot_time_ns();
    assert!(b.last_ns <= now && now - b.last_ns < 5_000_000_000, "last_ns {} vs now {now}", b.last_ns);

    // Huge rates and bursts do not overflow: everything passes.
    prog.set_config(Config { pps_rate_per_sec: u64::MAX, pps_burst: u64::MAX, ..config });
    assert_eq!(admitted(&prog, &media, 20, Reason::RateLimited), 20);
}

#[test]
fn offenders_count_every_drop_by_source() {
    let config = Config { pps_rate_per_sec: 1, pps_burst: 1, join_rate_per_sec: 1, join_burst: 1, ..CONFIG };
    let Some(prog) = Prog::load(config) else { return };
    prog.add_session(CLIENT_V4, RELAY_V4);
    let media = frame(CLIENT_V4, RELAY_V4, MEDIA);
    // Admitted traffic is no offence: the first packet of the session's bucket, the first join.
    prog.expect(&media, XDP_PASS, Reason::NoSocket);
    prog.expect(&frame("192.0.2.20:1", RELAY_V4, CONTROL), XDP_PASS, Reason::NoSocket);
    assert!(prog.offenders().is_empty());

    // Each kind of drop counts against its source.
    prog.expect(&media, XDP_DROP, Reason::RateLimited);
    prog.expect(&media, XDP_DROP, Reason::RateLimited);
    prog.expect(&frame("192.0.2.20:1", RELAY_V4, CONTROL), XDP_DROP, Reason::JoinRateLimited);
    for _ in 0..5 {
        prog.expect(&frame("192.0.2.11:1", RELAY_V4, MEDIA), XDP_DROP, Reason::UnknownSession);
    }
    prog.expect(&frame("192.0.2.12:1", RELAY_V4, &[0x40]), XDP_DROP, Reason::NotRelayed);
    prog.expect(&v4_frag(frame("192.0.2.13:1", RELAY_V4, MEDIA), true, 0), XDP_DROP, Reason::Fragment);
    let mut bad_udp = frame("192.0.2.14:1", RELAY_V4, MEDIA);
    put16(&mut bad_udp, ETH + 20 + 4, 7);
    prog.expect(&bad_udp, XDP_DROP, Reason::Malformed);
    prog.expect(&v6_ext(frame(CLIENT_V6, RELAY_V6, MEDIA), &[(HOPOPTS, opt8())]), XDP_DROP, Reason::ExtHeader);
    prog.block_v6("2001:db8:9::", 48, 0);
    prog.expect(&frame("[2001:db8:9::1]:1", RELAY_V6, MEDIA), XDP_DROP, Reason::Blocklisted);
    prog.expect(&frame("[2001:db8:9::1]:2", RELAY_V6, CONTROL), XDP_DROP, Reason::Blocklisted);

    // Not counted: passes, and drops whose IP header did not parse (no trustworthy source).
    prog.expect(&frame("192.0.2.15:1", "198.51.100.1:22", MEDIA), XDP_PASS, Reason::PassNotOurs);
    let mut bad_ip = frame("192.0.2.16:1", RELAY_V4, MEDIA);
    bad_ip[ETH] = 0x44;
    prog.expect(&bad_ip, XDP_DROP, Reason::Malformed);

    let ip = |s: &str| -> IpAddr { s.parse().expect("test address") };
    let expected: std::collections::BTreeMap<IpAddr, u64> = [
        (sa(CLIENT_V4).ip(), 2),
        (ip("192.0.2.20"), 1),
        (ip("192.0.2.11"), 5),
        (ip("192.0.2.12"), 1),
        (ip("192.0.2.13"), 1),
        (ip("192.0.2.14"), 1),
        (sa(CLIENT_V6).ip(), 1),
        (ip("2001:db8:9::1"), 2),
    ]
    .into_iter()
    .collect();
    assert_eq!(prog.offenders(), expected);
}

#[test]
fn offenders_map_stays_bounded_under_many_sources() {
    let Some(prog) = Prog::load(CONFIG) else { return };
    let n = OFFENDERS_MAX + 1000;
    let mut last = String::new();
    for i in 0..n {
        last = format!("10.{}.{}.{}:1", i >> 16 & 0xff, i >> 8 & 0xff, i & 0xff);
        assert_eq!(prog.run(&frame(&last, RELAY_V4, MEDIA)), XDP_DROP);
    }
    let tracked = prog.offenders();
    assert!(tracked.len() <= OFFENDERS_MAX as usize, "{} entries", tracked.len());
    assert!(tracked.len() > OFFENDERS_MAX as usize / 2, "only {} entries kept", tracked.len());
    assert_eq!(tracked.get(&sa(&last).ip()), Some(&1), "the newest source is tracked");
}
