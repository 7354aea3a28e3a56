//! edgerelay's XDP program, embedded, and the layouts it shares with userspace.
//!
//! The program is C (`src/edgerelay.bpf.c`, layouts in `include/edgerelay.h`): Rust-side eBPF
//! needs a bpf-linker matching rustc's LLVM, which cannot be installed here. `build.rs`
//! compiles it with clang when clang is present, else it embeds the committed
//! `bpf/edgerelay.bpf.o` (the bpf2go convention); the test `committed_object_is_fresh` fails
//! when the committed object is stale. Load [`OBJECT`] with aya, pinning the maps under
//! [`PIN_DIR`]:
//!
//! ```no_run
//! let mut ebpf = aya::EbpfLoader::new().default_map_pin_directory(xdp_prog::PIN_DIR).load(xdp_prog::OBJECT)?;
//! let prog: &mut aya::programs::Xdp = ebpf.program_mut(xdp_prog::PROGRAM).expect("in the object").try_into()?;
//! prog.load()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The verdicts and their policies (fragments, IPv6 extension headers, blocklist expiry,
//! token buckets) are documented at the top of the C file. Every type here mirrors a C struct
//! field for field with explicit padding, and both sides assert the sizes, so a layout change
//! made on one side only does not build.
//!
//! `unsafe` here is limited to the [`aya::Pod`] impls, which aya requires to be unsafe, and one
//! `clock_gettime` call.

use std::net::{IpAddr, SocketAddr};

/// The compiled program, aligned for parsing as an ELF object.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/edgerelay.bpf.o"));

/// The XDP program's name in [`OBJECT`].
pub const PROGRAM: &str = "edgerelay";

/// Where relayd pins the maps, so that they outlive a restart (DESIGN.md "Threads and state").
/// Pass it to `aya::EbpfLoader::default_map_pin_directory`: every map is declared with
/// `LIBBPF_PIN_BY_NAME`, so aya opens `PIN_DIR/<map>` if it exists and creates and pins it
/// otherwise. aya does not check that a pinned map it reuses has the current layout.
pub const PIN_DIR: &str = "/sys/fs/bpf/edgerelay";

/// Map names in [`OBJECT`]; each is also the file name under [`PIN_DIR`].
pub mod maps {
    /// `ARRAY` of one [`Config`](crate::Config), key `0u32`.
    pub const CONFIG: &str = "config";
    /// `PERCPU_ARRAY` of [`Counter`](crate::Counter), key [`Reason`](crate::Reason)` as u32`.
    pub const STATS: &str = "stats";
    /// `LPM_TRIE`, key `aya::maps::lpm_trie::Key<[u8; 4]>`, value [`BlockEntry`](crate::BlockEntry).
    pub const BLOCKLIST_V4: &str = "blocklist_v4";
    /// `LPM_TRIE`, key `aya::maps::lpm_trie::Key<[u8; 16]>`, value [`BlockEntry`](crate::BlockEntry).
    pub const BLOCKLIST_V6: &str = "blocklist_v6";
    /// `HASH`, key [`SessionKey`](crate::SessionKey), value [`Session`](crate::Session).
    pub const SESSIONS: &str = "sessions";
    /// `LRU_HASH`, key [`SrcKey`](crate::SrcKey), value [`Bucket`](crate::Bucket): join limits.
    pub const JOIN_BUCKETS: &str = "join_buckets";
    /// `ARRAY`, 1 entry: the global control budget's [`Bucket`](crate::Bucket).
    pub const CONTROL_BUDGET: &str = "control_budget";
    /// `LRU_HASH`, key [`SrcKey`](crate::SrcKey), value [`Bucket`](crate::Bucket): packet limits.
    pub const PPS_BUCKETS: &str = "pps_buckets";
    /// `LRU_PERCPU_HASH` of [`OFFENDERS_MAX`](crate::OFFENDERS_MAX) entries, key
    /// [`SrcKey`](crate::SrcKey), value `u64`: packets dropped from that source (any drop
    /// reason, once its IP source address parsed), per CPU.
    pub const OFFENDERS: &str = "offenders";
    /// `XSKMAP`, key the RX queue index, value an AF_XDP socket fd.
    pub const XSKS: &str = "xsks";
    /// Every map, in declaration order.
    pub const ALL: [&str; 10] = [
        CONFIG,
        STATS,
        BLOCKLIST_V4,
        BLOCKLIST_V6,
        SESSIONS,
        JOIN_BUCKETS,
        PPS_BUCKETS,
        CONTROL_BUDGET,
        OFFENDERS,
        XSKS,
    ];
}

/// Entries of the `offenders` map: the sources tracked at once (least recently dropped
/// evicted first).
pub const OFFENDERS_MAX: u32 = 4096;

/// `struct er_config`: the one entry of the `config` map. Read on every packet, so a change
/// takes effect with the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct Config {
    /// Lowest relay UDP port, inclusive.
    pub port_lo: u16,
    /// Highest relay UDP port, inclusive; 0 (the zeroed map) means unconfigured: all passes.
    pub port_hi: u16,
    /// Reserved, 0.
    pub flags: u32,
    /// Joins (control messages) per second per source address; 0 = unlimited.
    pub join_rate_per_sec: u64,
    /// Join bucket size; 0 is taken as 1, larger than 10^9 as 10^9.
    pub join_burst: u64,
    /// SRTP/SRTCP packets per second per source address; 0 = unlimited.
    pub pps_rate_per_sec: u64,
    /// Packet bucket size; 0 is taken as 1, larger than 10^9 as 10^9.
    pub pps_burst: u64,
    /// Control messages per second from sources without a session, all together (the
    /// global control budget, after the per-source join buckets); 0 = unlimited.
    pub control_rate_per_sec: u64,
    /// The budget's bucket size; 0 is taken as 1, larger than 10^9 as 10^9.
    pub control_burst: u64,
}

/// `struct er_counter`: one `stats` slot of one CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct Counter {
    /// Packets.
    pub packets: u64,
    /// Bytes of whole frames, from the Ethernet header.
    pub bytes: u64,
}

/// `struct er_block`: a blocklist value. Keys are `aya::maps::lpm_trie::Key<[u8; 4]>` and
/// `Key<[u8; 16]>` (`struct er_lpm_v4_key` / `er_lpm_v6_key`: prefix length, then the
/// address in network order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct BlockEntry {
    /// When the entry stops applying, in [`boot_time_ns`] time; 0 = never.
    pub expires_ns: u64,
}

/// Address family tag of [`SessionKey`] and [`SrcKey`] for IPv4.
pub const FAMILY_V4: u8 = 4;
/// Address family tag of [`SessionKey`] and [`SrcKey`] for IPv6.
pub const FAMILY_V6: u8 = 6;

/// The 16-byte address form of the keys: IPv4 in the first 4 bytes, the rest zero.
fn addr16(ip: IpAddr) -> (u8, [u8; 16]) {
    match ip {
        IpAddr::V4(v4) => {
            let mut a = [0; 16];
            a[..4].copy_from_slice(&v4.octets());
            (FAMILY_V4, a)
        }
        IpAddr::V6(v6) => (FAMILY_V6, v6.octets()),
    }
}

/// `struct er_session_key`: a `sessions` key, the 5-tuple as the relay receives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(C)]
pub struct SessionKey {
    /// Source address, network order; IPv4 in the first 4 bytes, the rest zero.
    pub src_addr: [u8; 16],
    /// Destination (relay) address, same form.
    pub dst_addr: [u8; 16],
    /// Source port, host order.
    pub src_port: u16,
    /// Destination port, host order.
    pub dst_port: u16,
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u8,
    /// Zero.
    pub pad: [u8; 3],
}

impl SessionKey {
    /// The key for packets from `src` to `dst`; `None` if their families differ.
    #[must_use]
    pub fn new(src: SocketAddr, dst: SocketAddr) -> Option<Self> {
        let (family, src_addr) = addr16(src.ip());
        let (dst_family, dst_addr) = addr16(dst.ip());
        (family == dst_family).then_some(Self {
            src_addr,
            dst_addr,
            src_port: src.port(),
            dst_port: dst.port(),
            family,
            pad: [0; 3],
        })
    }
}

/// `struct er_session`'s peer bit: the session is another relay's (a cascade leg), and its
/// media skips the per-source packet bucket.
pub const SESSION_PEER: u64 = 1 << 63;

/// `struct er_session`: a `sessions` value, opaque to the program but for [`SESSION_PEER`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct Session {
    /// The relay's session id.
    pub id: u64,
}

/// `struct er_src_key`: a token bucket key, the source address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(C)]
pub struct SrcKey {
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u8,
    /// Zero.
    pub pad: [u8; 3],
    /// The address, in the form of [`SessionKey::src_addr`].
    pub addr: [u8; 16],
}

impl SrcKey {
    /// The key of `ip`'s buckets.
    #[must_use]
    pub fn new(ip: IpAddr) -> Self {
        let (family, addr) = addr16(ip);
        Self { family, pad: [0; 3], addr }
    }

    /// The address back; `None` for an unknown family.
    #[must_use]
    pub fn ip(&self) -> Option<IpAddr> {
        match self.family {
            FAMILY_V4 => Some(IpAddr::from([self.addr[0], self.addr[1], self.addr[2], self.addr[3]])),
            FAMILY_V6 => Some(IpAddr::from(self.addr)),
            _ => None,
        }
    }
}

/// `struct er_bucket`: token bucket state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct Bucket {
    /// Tokens in units of 10^-9 packet: a packet costs [`NANOTOKENS_PER_PACKET`].
    pub tokens: u64,
    /// [`boot_time_ns`] of the last refill.
    pub last_ns: u64,
}

/// The cost of one packet in [`Bucket::tokens`].
pub const NANOTOKENS_PER_PACKET: u64 = 1_000_000_000;

// Mirrors of the `_Static_assert`s in edgerelay.h.
const _: () = {
    use std::mem::size_of;
    assert!(size_of::<Config>() == 56);
    assert!(size_of::<Counter>() == 16);
    assert!(size_of::<aya::maps::lpm_trie::Key<[u8; 4]>>() == 8);
    assert!(size_of::<aya::maps::lpm_trie::Key<[u8; 16]>>() == 20);
    assert!(size_of::<BlockEntry>() == 8);
    assert!(size_of::<SessionKey>() == 40);
    assert!(size_of::<Session>() == 8);
    assert!(size_of::<SrcKey>() == 20);
    assert!(size_of::<Bucket>() == 16);
};

// SAFETY (all impls below): each type is `repr(C)`, has only integer and byte-array fields,
// and its size (asserted above) is the sum of its fields' sizes, so it has no padding: every
// byte is initialised and every byte pattern is a valid value, which is what `Pod` requires.
// SAFETY: see above.
unsafe impl aya::Pod for Config {}
// SAFETY: see above.
unsafe impl aya::Pod for Counter {}
// SAFETY: see above.
unsafe impl aya::Pod for BlockEntry {}
// SAFETY: see above.
unsafe impl aya::Pod for SessionKey {}
// SAFETY: see above.
unsafe impl aya::Pod for Session {}
// SAFETY: see above.
unsafe impl aya::Pod for SrcKey {}
// SAFETY: see above.
unsafe impl aya::Pod for Bucket {}

/// Why the program returned what it returned: `enum er_reason`, the index into `stats`.
///
/// The names reuse the engine's `relay::stats::DropReason` vocabulary where they overlap
/// (`malformed`, `unknown_session`, `not_relayed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Reason {
    /// `XDP_PASS`: not IP, not UDP, not a relay port, or no config.
    PassNotOurs = 0,
    /// `XDP_PASS`: a non-first fragment, whose port cannot be known.
    PassFragment,
    /// `XDP_REDIRECT` of a control message (first byte 0–3).
    RedirectControl,
    /// `XDP_REDIRECT` of SRTP/SRTCP (first byte 128–191).
    RedirectMedia,
    /// The `xsks` slot of the RX queue is empty: `XDP_PASS`, the helper's default.
    NoSocket,
    /// `XDP_DROP`: the source is on the blocklist.
    Blocklisted,
    /// `XDP_DROP`: truncated or inconsistent headers, or an empty UDP payload.
    Malformed,
    /// `XDP_DROP`: the first fragment of a datagram to a relay port.
    Fragment,
    /// `XDP_DROP`: IPv6 extension headers before UDP to a relay port, or too many to walk.
    ExtHeader,
    /// `XDP_DROP`: the source's join bucket is empty.
    JoinRateLimited,
    /// `XDP_DROP`: SRTP/SRTCP whose 5-tuple is not in `sessions`.
    UnknownSession,
    /// `XDP_DROP`: the source's packet bucket is empty.
    RateLimited,
    /// `XDP_DROP`: first byte outside the RFC 7983 ranges the relay serves.
    NotRelayed,
    /// `XDP_REDIRECT` of a control message from a known session's 5-tuple (keepalive,
    /// leave, in-room message): no join bucket, no budget.
    RedirectSessionControl,
    /// `XDP_DROP`: the global control budget is spent.
    ControlBudget,
}

/// Metric labels of [`Reason`], indexed like `enum er_reason`.
pub const REASON_NAMES: &[&str] = &[
    "pass_not_ours",
    "pass_fragment",
    "redirect_control",
    "redirect_media",
    "no_socket",
    "blocklisted",
    "malformed",
    "fragment",
    "ext_header",
    "join_rate_limited",
    "unknown_session",
    "rate_limited",
    "not_relayed",
    "redirect_session_control",
    "control_budget",
];

impl Reason {
    /// Every reason, in index order.
    pub const ALL: [Reason; 15] = [
        Self::PassNotOurs,
        Self::PassFragment,
        Self::RedirectControl,
        Self::RedirectMedia,
        Self::NoSocket,
        Self::Blocklisted,
        Self::Malformed,
        Self::Fragment,
        Self::ExtHeader,
        Self::JoinRateLimited,
        Self::UnknownSession,
        Self::RateLimited,
        Self::NotRelayed,
        Self::RedirectSessionControl,
        Self::ControlBudget,
    ];

    /// The metric label.
    #[must_use]
    pub const fn name(self) -> &'static str {
        REASON_NAMES[self as usize]
    }

    /// The reason with this `stats` index.
    #[must_use]
    pub fn from_index(index: u32) -> Option<Self> {
        Self::ALL.get(usize::try_from(index).ok()?).copied()
    }
}

/// `CLOCK_BOOTTIME` in nanoseconds: the clock of `bpf_ktime_get_boot_ns`, for
/// [`BlockEntry::expires_ns`] and [`Bucket::last_ns`].
#[must_use]
pub fn boot_time_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec and CLOCK_BOOTTIME is a valid clock id.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_BOOTTIME) cannot fail on Linux");
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

#[cfg(test)]
#[expect(dead_code, reason = "shared with build.rs, which uses all of it")]
mod bpf_build;
#[cfg(test)]
mod prog_tests;

#[cfg(test)]
mod tests {
    use super::*;

    /// Under `CI=true` a skipped check must fail instead.
    fn skip_or_fail(why: &str) {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true and cannot run: {why}");
        eprintln!("skipped: {why}");
    }

    #[test]
    fn committed_object_is_fresh() {
        let crate_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let Some(clang) = bpf_build::find_clang() else {
            return skip_or_fail("no clang (tried $CLANG, clang-19, clang) to rebuild the object");
        };
        let fresh = std::env::temp_dir().join(format!("edgerelay-fresh-{}.bpf.o", std::process::id()));
        bpf_build::compile(&clang, crate_dir, &fresh).unwrap_or_else(|e| panic!("{e}"));
        let fresh_bytes = std::fs::read(&fresh).expect("read the fresh object");
        let _ = std::fs::remove_file(&fresh);
        let committed_path = crate_dir.join(bpf_build::COMMITTED);
        if std::env::var_os("XDP_PROG_BLESS").is_some() {
            std::fs::write(&committed_path, &fresh_bytes).expect("write the committed object");
        }
        let committed = std::fs::read(&committed_path).unwrap_or_default();
        assert!(
            committed == fresh_bytes,
            "{} is stale: it differs from a fresh build with {clang} ({} vs {} bytes). \
             Rebuild it with `XDP_PROG_BLESS=1 cargo test -p xdp-prog committed_object_is_fresh` \
             (with clang-19: the compiler version is part of the object) and commit it.",
            bpf_build::COMMITTED,
            committed.len(),
            fresh_bytes.len(),
        );
    }

    #[test]
    fn reasons_match_the_c_enum() {
        let header = include_str!("../include/edgerelay.h");
        for (i, reason) in Reason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, i);
            assert_eq!(Reason::from_index(u32::try_from(i).unwrap()), Some(*reason));
            let c_name = format!("ER_{} = {i},", reason.name().to_uppercase());
            assert!(header.contains(&c_name), "edgerelay.h lacks `{c_name}`");
        }
        let count = format!("ER_REASON_COUNT = {},", Reason::ALL.len());
        assert!(header.contains(&count), "edgerelay.h lacks `{count}`");
        assert_eq!(REASON_NAMES.len(), Reason::ALL.len());
        assert_eq!(Reason::from_index(u32::try_from(Reason::ALL.len()).unwrap()), None);
        let mut names = REASON_NAMES.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), REASON_NAMES.len(), "names are unique");
        for name in REASON_NAMES {
            assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{name} is snake_case");
        }
    }

    #[test]
    fn reasons_share_the_engine_vocabulary() {
        use relay::stats::DropReason;
        for (ours, engine) in [
            (Reason::Malformed, DropReason::Malformed),
            (Reason::UnknownSession, DropReason::UnknownSession),
            (Reason::NotRelayed, DropReason::NotRelayed),
        ] {
            assert_eq!(ours.name(), engine.name());
        }
    }

    #[test]
    fn offenders_max_matches_the_c_define() {
        let src = include_str!("edgerelay.bpf.c");
        assert!(src.contains(&format!("#define ER_OFFENDERS_MAX {}", OFFENDERS_MAX)));
    }

    #[test]
    fn keys_from_addresses() {
        let k = SessionKey::new("192.0.2.1:4000".parse().unwrap(), "198.51.100.2:5000".parse().unwrap()).unwrap();
        assert_eq!(k.family, FAMILY_V4);
        assert_eq!(&k.src_addr[..4], &[192, 0, 2, 1]);
        assert_eq!(&k.src_addr[4..], &[0; 12]);
        assert_eq!(&k.dst_addr[..4], &[198, 51, 100, 2]);
        assert_eq!((k.src_port, k.dst_port), (4000, 5000));
        assert!(SessionKey::new("192.0.2.1:4000".parse().unwrap(), "[::1]:5000".parse().unwrap()).is_none());
        let s = SrcKey::new("2001:db8::1".parse().unwrap());
        assert_eq!(s.ip(), Some("2001:db8::1".parse().unwrap()));
        assert_eq!(SrcKey::new("192.0.2.1".parse().unwrap()).ip(), Some("192.0.2.1".parse().unwrap()));
        assert_eq!(SrcKey { family: 0, ..s }.ip(), None);
        assert_eq!(s.family, FAMILY_V6);
        assert_eq!(s.addr, "2001:db8::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
    }

    #[test]
    fn boot_time_advances() {
        let a = boot_time_ns();
        let b = boot_time_ns();
        assert!(a > 0 && b >= a);
    }
}
