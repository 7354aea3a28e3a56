/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Layouts shared by the edgerelay XDP program and userspace.
 *
 * The Rust mirror lives in xdp-prog/src/lib.rs; both sides assert the sizes
 * below, so a layout change that is not made on both sides fails to build.
 * Addresses are in network byte order; ports and all other integers are in
 * host byte order. Every struct spells out its padding so that hash keys
 * never contain uninitialised bytes.
 */
#ifndef EDGERELAY_H
#define EDGERELAY_H

#include <linux/types.h>

/*
 * Why the program returned what it returned: the index into the `stats`
 * map. The names (snake_case, see ER_REASON_NAMES in the Rust crate) reuse
 * the engine's DropReason vocabulary where they overlap.
 */
enum er_reason {
	/* XDP_PASS: not IP, not UDP, not a relay port, or not configured. */
	ER_PASS_NOT_OURS = 0,
	/* XDP_PASS: a non-first fragment, whose port cannot be known. */
	ER_PASS_FRAGMENT = 1,
	/* XDP_REDIRECT of a control message (first byte 0-3). */
	ER_REDIRECT_CONTROL = 2,
	/* XDP_REDIRECT of SRTP/SRTCP (first byte 128-191). */
	ER_REDIRECT_MEDIA = 3,
	/* The xsks slot of the RX queue is empty: the helper's default. */
	ER_NO_SOCKET = 4,
	/* XDP_DROP: the source is in blocklist_v4 / blocklist_v6. */
	ER_BLOCKLISTED = 5,
	/* XDP_DROP: truncated or inconsistent headers, empty UDP payload. */
	ER_MALFORMED = 6,
	/* XDP_DROP: the first fragment of a datagram to a relay port. */
	ER_FRAGMENT = 7,
	/* XDP_DROP: IPv6 extension headers before UDP to a relay port, or a
	 * chain longer than ER_MAX_IPV6_EXT. */
	ER_EXT_HEADER = 8,
	/* XDP_DROP: the source's join token bucket is empty. */
	ER_JOIN_RATE_LIMITED = 9,
	/* XDP_DROP: SRTP/SRTCP whose 5-tuple is not in `sessions`. */
	ER_UNKNOWN_SESSION = 10,
	/* XDP_DROP: the source's packet token bucket is empty. */
	ER_RATE_LIMITED = 11,
	/* XDP_DROP: first byte outside the RFC 7983 ranges the relay serves. */
	ER_NOT_RELAYED = 12,
	/* XDP_REDIRECT of a control message from a known session's 5-tuple
	 * (keepalive, leave, in-room message): no join bucket, no budget. */
	ER_REDIRECT_SESSION_CONTROL = 13,
	/* XDP_DROP: the global control budget (all unknown sources together) is
	 * spent. */
	ER_CONTROL_BUDGET = 14,
	ER_REASON_COUNT = 15,
};

/* At most this many IPv6 extension headers are walked. */
#define ER_MAX_IPV6_EXT	      8
/* Nested expired blocklist entries skipped before giving up (not blocked). */
#define ER_MAX_EXPIRED_BLOCKS 4
/* Token bucket bursts are clamped to this many packets. */
#define ER_MAX_BURST	      1000000000ULL

#define ER_FAMILY_V4 4
#define ER_FAMILY_V6 6

/* `config` (ARRAY, 1 entry, key 0). Rates are per second; 0 = unlimited. */
struct er_config {
	__u16 port_lo; /* relay UDP ports, inclusive; port_hi 0 = unconfigured */
	__u16 port_hi;
	__u32 flags; /* reserved, 0 */
	__u64 join_rate_per_sec;
	__u64 join_burst;
	__u64 pps_rate_per_sec;
	__u64 pps_burst;
	/* Control messages per second from sources without a session, all of
	 * them together (after their per-source join buckets); 0 = unlimited. */
	__u64 control_rate_per_sec;
	__u64 control_burst;
};

/* `stats` (PERCPU_ARRAY, ER_REASON_COUNT entries, key enum er_reason). */
struct er_counter {
	__u64 packets;
	__u64 bytes; /* whole frames, from the Ethernet header */
};

/* `blocklist_v4` (LPM_TRIE) key. */
struct er_lpm_v4_key {
	__u32 prefixlen;
	__u8 addr[4];
};

/* `blocklist_v6` (LPM_TRIE) key. */
struct er_lpm_v6_key {
	__u32 prefixlen;
	__u8 addr[16];
};

/* Blocklist value. */
struct er_block {
	__u64 expires_ns; /* CLOCK_BOOTTIME; 0 = never */
};

/* `sessions` (HASH) key: the 5-tuple as the relay receives it. */
struct er_session_key {
	__u8 src_addr[16]; /* IPv4 in the first 4 bytes, rest zero */
	__u8 dst_addr[16];
	__u16 src_port;
	__u16 dst_port;
	__u8 family; /* ER_FAMILY_V4 or ER_FAMILY_V6 */
	__u8 pad[3];
};

/* `sessions` value: the relay's session id, opaque to the program except for
 * ER_SESSION_PEER (session ids never reach bit 63). */
struct er_session {
	__u64 id; /* the relay's session id, | ER_SESSION_PEER for a peer relay */
};

/* The source is another relay of the cluster (cascade legs): its media carries
 * a whole room's streams from one 5-tuple, so the per-source packet bucket,
 * sized for one client, does not apply to it. It was authenticated as a
 * registered node like any session. */
#define ER_SESSION_PEER (1ULL << 63)

/*
 * `join_buckets` / `pps_buckets` (LRU_HASH) key: the source address. Also the
 * key of `offenders` (LRU_PERCPU_HASH, value __u64: packets dropped from that
 * source, per CPU).
 */
struct er_src_key {
	__u8 family;
	__u8 pad[3];
	__u8 addr[16];
};

/* Token bucket state. */
struct er_bucket {
	__u64 tokens;  /* in units of 1e-9 packet */
	__u64 last_ns; /* CLOCK_BOOTTIME of the last refill */
};

_Static_assert(sizeof(struct er_config) == 56, "er_config");
_Static_assert(sizeof(struct er_counter) == 16, "er_counter");
_Static_assert(sizeof(struct er_lpm_v4_key) == 8, "er_lpm_v4_key");
_Static_assert(sizeof(struct er_lpm_v6_key) == 20, "er_lpm_v6_key");
_Static_assert(sizeof(struct er_block) == 8, "er_block");
_Static_assert(sizeof(struct er_session_key) == 40, "er_session_key");
_Static_assert(sizeof(struct er_session) == 8, "er_session");
_Static_assert(sizeof(struct er_src_key) == 20, "er_src_key");
_Static_assert(sizeof(struct er_bucket) == 16, "er_bucket");

#endif /* EDGERELAY_H */
