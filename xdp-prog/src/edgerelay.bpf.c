// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * edgerelay's XDP program: the first filter of the data path (DESIGN.md
 * "Data path", step 1).
 *
 * Traffic that is not UDP to the relay's ports passes untouched, so SSH and
 * everything else on the host keeps working. Traffic to the relay's ports is
 * either dropped here or redirected to the AF_XDP socket of its RX queue;
 * every packet is counted under exactly one enum er_reason.
 *
 * Order of the checks, and why:
 *  1. Headers up to UDP must fit the frame and the IP length fields, else
 *     DROP malformed. These are checks the kernel makes too (ip_rcv_core,
 *     ipv6_rcv, udp_rcv), so no valid packet of anybody's is lost.
 *  2. Not IPv4/IPv6, not UDP, or not a relay port: PASS.
 *  3. The source is blocklisted: DROP, before any other work on it.
 *  4. Fragments and IPv6 extension headers to relay ports: DROP (below).
 *  5. UDP length must match the IP length, payload non-empty, else malformed.
 *  6. RFC 7983 demultiplexing on the first payload byte: 0-3 control,
 *     128-191 SRTP/SRTCP (known session, packet rate limit), anything else
 *     DROP not_relayed. Control from a known session's 5-tuple (keepalives,
 *     leaves, in-room messages) is redirected at once; control from anyone
 *     else passes its source's join bucket, then the global control budget,
 *     so a flood from random spoofed sources (each with a full bucket of its
 *     own) still reaches userspace at most at the budget's rate.
 *  7. bpf_redirect_map(&xsks, rx_queue_index, XDP_PASS): an empty slot makes
 *     the helper return XDP_PASS, counted as no_socket, so the kernel stack
 *     (e.g. the socket backend) serves the packet while relayd restarts.
 *
 * Fragments. A first IPv4 fragment (MF set, offset 0), or an IPv6 packet
 * with a Fragment header of offset 0, carries the UDP header: if its port is
 * ours it is dropped (fragment). A non-first fragment carries no UDP header,
 * so its port cannot be known: it passes (pass_fragment). That is harmless:
 * the first fragment of any datagram to a relay port was dropped here, so
 * the kernel can never reassemble one; the orphans are freed by the
 * reassembly timeout within the kernel's memory bound (ipfrag_high_thresh).
 * Dropping them instead would break fragmented UDP to other services. The
 * relay itself never fragments (DF) and its clients have no reason to.
 *
 * IPv6 extension headers. Hop-by-Hop, Routing, Destination Options and
 * Fragment headers are walked, up to ER_MAX_IPV6_EXT of them, to find the
 * transport: anything but UDP passes. UDP to a relay port behind any
 * extension header is dropped (ext_header): relay::wire::parse_udp, the
 * AF_XDP receive path, accepts UDP only right after the fixed header, and no
 * client sends options. A chain longer than ER_MAX_IPV6_EXT cannot be
 * classified and is dropped (ext_header) rather than let through to a stack
 * that might deliver it to the relay's port.
 *
 * Blocklist. Two LPM tries; an entry whose expires_ns (CLOCK_BOOTTIME) has
 * passed is ignored, including for the lookup: an expired /32 must not hide
 * a live /24 that covers it, so the program finds the expired entry's prefix
 * length (binary search: same value pointer) and looks up again below it.
 *
 * Token buckets. Integer nanosecond math: a bucket holds up to burst * 1e9
 * "nanotokens", gains rate per nanosecond and a packet costs 1e9. Rate and
 * burst are read from `config` on every packet, so changes apply at once.
 * Buckets are shared by all CPUs without a lock (LRU hashes do not support
 * bpf_spin_lock); concurrent updates may admit a few extra packets.
 *
 * Offenders. Every drop of a packet whose IP source address was parsed (any
 * drop reason: blocklisted, unknown session, rate limited, junk, malformed
 * UDP...) also counts against that address in `offenders`, a small per-CPU
 * LRU hash: per-CPU so the count is a plain increment, LRU so a flood of
 * spoofed sources only evicts the quietest entries. relayd sums it over CPUs
 * for its `offenders` operation, which relay-control's auto-blocker polls.
 * Packets whose IP header does not parse have no trustworthy source and are
 * only counted in `stats`.
 */

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "edgerelay.h"

#define NSEC_PER_SEC 1000000000ULL

#define ER_SESSIONS_MAX	 65536
#define ER_BUCKETS_MAX	 65536
#define ER_BLOCKLIST_MAX 65536
#define ER_XSKS_MAX	 64
#define ER_OFFENDERS_MAX 4096

/* 802.1Q tag: TCI and the encapsulated EtherType. */
struct vlan_tag {
	__be16 tci;
	__be16 proto;
};

/* IPv6 Fragment header (RFC 8200 section 4.5). */
struct ipv6_frag {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off; /* offset in the upper 13 bits, M flag in bit 0 */
	__be32 identification;
};

/* IPv4 fragment offset / more-fragments bits (RFC 791). */
#define ER_IP_MF      0x2000
#define ER_IP_OFFSET  0x1fff
#define ER_IP6_OFFSET 0xfff8

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct er_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ER_REASON_COUNT);
	__type(key, __u32);
	__type(value, struct er_counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, ER_BLOCKLIST_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct er_lpm_v4_key);
	__type(value, struct er_block);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} blocklist_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, ER_BLOCKLIST_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct er_lpm_v6_key);
	__type(value, struct er_block);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} blocklist_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, ER_SESSIONS_MAX);
	__type(key, struct er_session_key);
	__type(value, struct er_session);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sessions SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, ER_BUCKETS_MAX);
	__type(key, struct er_src_key);
	__type(value, struct er_bucket);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} join_buckets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, ER_BUCKETS_MAX);
	__type(key, struct er_src_key);
	__type(value, struct er_bucket);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pps_buckets SEC(".maps");

/* The global control budget's bucket (ARRAY, 1 entry): shared by all CPUs,
 * updated without a lock like the per-source buckets. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct er_bucket);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} control_budget SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, ER_OFFENDERS_MAX);
	__type(key, struct er_src_key);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} offenders SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, ER_XSKS_MAX);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} xsks SEC(".maps");

/* What the parser found about a UDP datagram. */
struct flow {
	struct er_session_key key; /* the 5-tuple, ports in host order */
	void *udp;		   /* the UDP header, within the frame */
	void *ip_end;		   /* end of the IP packet, within the frame */
	__u8 fragment;		   /* first fragment of a datagram */
	__u8 ext_headers;	   /* IPv6 extension headers were skipped */
};

static __always_inline int count(struct xdp_md *ctx, __u32 reason, int action)
{
	struct er_counter *c = bpf_map_lookup_elem(&stats, &reason);

	if (c) {
		c->packets += 1;
		c->bytes += ctx->data_end - ctx->data;
	}
	return action;
}

/*
 * Counts one dropped packet against the source in k (family 0: not parsed,
 * nothing to count). Global and __noinline so that the verifier checks it
 * once, not at each of the drop sites that call it.
 */
__noinline int note_offender(const struct er_session_key *k)
{
	struct er_src_key key = {};
	__u64 one = 1, *n;

	if (!k || (k->family != ER_FAMILY_V4 && k->family != ER_FAMILY_V6))
		return 0;
	key.family = k->family;
	__builtin_memcpy(key.addr, k->src_addr, 16);
	n = bpf_map_lookup_elem(&offenders, &key);
	if (n) {
		*n += 1;
		return 0;
	}
	/* A concurrent insert from another CPU wins; this one packet goes uncounted. */
	bpf_map_update_elem(&offenders, &key, &one, BPF_NOEXIST);
	return 0;
}

static __always_inline int drop(struct xdp_md *ctx, struct flow *f, __u32 reason)
{
	note_offender(&f->key);
	return count(ctx, reason, XDP_DROP);
}

/*
 * The longest live blocklist entry for the address in key->addr, or none.
 * The LPM lookup with prefixlen p returns the longest entry of length <= p,
 * so when that entry has expired its length is the smallest p that still
 * returns it, and the next candidate is found with that length minus one.
 *
 * Global and __noinline so that the verifier checks it once on its own:
 * inlined, its nested loops multiplied the parser's states (184k processed
 * instructions for the program, against 14k this way).
 */
#define DEFINE_BLOCKED(name, map, key_type, max_len, steps)                                        \
	__noinline int name(key_type *key, __u64 now)                                              \
	{                                                                                          \
		if (!key)                                                                          \
			return 0;                                                                  \
		key->prefixlen = max_len;                                                          \
		for (int i = 0; i < ER_MAX_EXPIRED_BLOCKS; i++) {                                  \
			struct er_block *v = bpf_map_lookup_elem(&map, key);                       \
			__u32 lo = 0, hi = key->prefixlen;                                         \
                                                                                                   \
			if (!v)                                                                    \
				return 0;                                                          \
			if (v->expires_ns == 0 || v->expires_ns > now)                             \
				return 1;                                                          \
			for (int j = 0; j < steps && lo < hi; j++) {                               \
				__u32 mid = (lo + hi) / 2;                                         \
				struct er_block *w;                                                \
                                                                                                   \
				key->prefixlen = mid;                                              \
				w = bpf_map_lookup_elem(&map, key);                                \
				if (w && w == v)                                                   \
					hi = mid;                                                  \
				else                                                               \
					lo = mid + 1;                                              \
			}                                                                          \
			if (hi == 0)                                                               \
				return 0;                                                          \
			key->prefixlen = hi - 1;                                                   \
		}                                                                                  \
		return 0;                                                                          \
	}

DEFINE_BLOCKED(blocked_v4, blocklist_v4, struct er_lpm_v4_key, 32, 6)
DEFINE_BLOCKED(blocked_v6, blocklist_v6, struct er_lpm_v6_key, 128, 8)

static __always_inline int blocklisted(const struct er_session_key *k, __u64 now)
{
	if (k->family == ER_FAMILY_V4) {
		struct er_lpm_v4_key key = {};

		__builtin_memcpy(key.addr, k->src_addr, 4);
		return blocked_v4(&key, now);
	} else {
		struct er_lpm_v6_key key = {};

		__builtin_memcpy(key.addr, k->src_addr, 16);
		return blocked_v6(&key, now);
	}
}

/*
 * Refills bucket `b` for the time since its last refill and takes one packet
 * from it; 1 if it was there.
 */
static __always_inline int bucket_refill_take(struct er_bucket *b, __u64 rate, __u64 cap, __u64 now)
{
	__u64 tokens = b->tokens;

	if (tokens > cap)
		tokens = cap;
	if (now > b->last_ns) {
		__u64 elapsed = now - b->last_ns;
		__u64 deficit = cap - tokens;

		/* elapsed * rate <= deficit <= cap: no overflow. */
		if (elapsed > deficit / rate)
			tokens = cap;
		else
			tokens += elapsed * rate;
		b->last_ns = now;
	}
	if (tokens < NSEC_PER_SEC) {
		b->tokens = tokens;
		return 0;
	}
	b->tokens = tokens - NSEC_PER_SEC;
	return 1;
}

static __always_inline __u64 bucket_cap(__u64 burst)
{
	if (burst == 0)
		burst = 1;
	if (burst > ER_MAX_BURST)
		burst = ER_MAX_BURST;
	return burst * NSEC_PER_SEC;
}

/*
 * Takes one packet from the source's bucket; 1 if it was there. A missing
 * bucket starts full. rate 0 means unlimited.
 */
static __always_inline int bucket_take(void *map, const struct er_session_key *k, __u64 rate,
				       __u64 burst, __u64 now)
{
	struct er_src_key key = {};
	struct er_bucket *b;
	__u64 cap;

	if (rate == 0)
		return 1;
	cap = bucket_cap(burst);
	key.family = k->family;
	__builtin_memcpy(key.addr, k->src_addr, 16);
	b = bpf_map_lookup_elem(map, &key);
	if (!b) {
		struct er_bucket fresh = { .tokens = cap - NSEC_PER_SEC, .last_ns = now };

		bpf_map_update_elem(map, &key, &fresh, BPF_ANY);
		return 1;
	}
	return bucket_refill_take(b, rate, cap, now);
}

/*
 * Takes one packet from the global control budget; 1 if it was there. The
 * zeroed entry (last_ns 0) fills on the first packet. rate 0 means unlimited.
 */
static __always_inline int budget_take(__u64 rate, __u64 burst, __u64 now)
{
	__u32 zero = 0;
	struct er_bucket *b;

	if (rate == 0)
		return 1;
	b = bpf_map_lookup_elem(&control_budget, &zero);
	if (!b)
		return 1;
	return bucket_refill_take(b, rate, bucket_cap(burst), now);
}

static __always_inline int redirect(struct xdp_md *ctx, __u32 reason)
{
	long action = bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);

	if (action == XDP_REDIRECT)
		return count(ctx, reason, XDP_REDIRECT);
	return count(ctx, ER_NO_SOCKET, (int)action);
}

/* Parses an IPv4 packet at ip. Returns a reason to stop with, or -1 to go on. */
static __always_inline int parse_v4(struct iphdr *ip, void *data_end, struct flow *f)
{
	__u32 hdr_len, tot_len;
	__u16 frag;

	if ((void *)(ip + 1) > data_end || ip->version != 4)
		return ER_MALFORMED;
	hdr_len = ip->ihl * 4;
	tot_len = bpf_ntohs(ip->tot_len);
	if (hdr_len < sizeof(*ip) || tot_len < hdr_len || (void *)ip + tot_len > data_end)
		return ER_MALFORMED;
	if (ip->protocol != IPPROTO_UDP)
		return ER_PASS_NOT_OURS;
	frag = bpf_ntohs(ip->frag_off);
	if (frag & ER_IP_OFFSET)
		return ER_PASS_FRAGMENT;
	f->fragment = !!(frag & ER_IP_MF);
	f->key.family = ER_FAMILY_V4;
	__builtin_memcpy(f->key.src_addr, &ip->saddr, 4);
	__builtin_memcpy(f->key.dst_addr, &ip->daddr, 4);
	f->udp = (void *)ip + hdr_len;
	f->ip_end = (void *)ip + tot_len;
	return -1;
}

/* Parses an IPv6 packet at ip, walking extension headers (policy above). */
static __always_inline int parse_v6(struct ipv6hdr *ip, void *data_end, struct flow *f)
{
	void *cur = ip + 1;
	__u8 next;

	if (cur > data_end || ip->version != 6)
		return ER_MALFORMED;
	f->ip_end = cur + bpf_ntohs(ip->payload_len);
	if (f->ip_end > data_end)
		return ER_MALFORMED;
	f->key.family = ER_FAMILY_V6;
	__builtin_memcpy(f->key.src_addr, &ip->saddr, 16);
	__builtin_memcpy(f->key.dst_addr, &ip->daddr, 16);
	next = ip->nexthdr;

	for (int i = 0; i < ER_MAX_IPV6_EXT; i++) {
		switch (next) {
		case IPPROTO_UDP:
			f->udp = cur;
			return -1;
		case IPPROTO_HOPOPTS:
		case IPPROTO_ROUTING:
		case IPPROTO_DSTOPTS: {
			struct ipv6_opt_hdr *h = cur;

			if ((void *)(h + 1) > data_end)
				return ER_MALFORMED;
			next = h->nexthdr;
			cur += (h->hdrlen + 1) * 8;
			break;
		}
		case IPPROTO_FRAGMENT: {
			struct ipv6_frag *h = cur;

			if ((void *)(h + 1) > data_end)
				return ER_MALFORMED;
			if (bpf_ntohs(h->frag_off) & ER_IP6_OFFSET)
				return ER_PASS_FRAGMENT;
			f->fragment = 1;
			next = h->nexthdr;
			cur += sizeof(*h);
			break;
		}
		default:
			return ER_PASS_NOT_OURS;
		}
		f->ext_headers = 1;
		if (cur > f->ip_end)
			return ER_MALFORMED;
	}
	return ER_EXT_HEADER;
}

SEC("xdp")
int edgerelay(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct flow f = {};
	struct udphdr *udp;
	struct er_config *cfg;
	__u32 zero = 0, udp_len;
	__u16 proto, dport;
	__u8 *payload;
	__u64 now;
	void *l3;
	int r;

	if ((void *)(eth + 1) > data_end)
		return count(ctx, ER_MALFORMED, XDP_DROP);
	proto = eth->h_proto;
	l3 = eth + 1;
	if (proto == bpf_htons(ETH_P_8021Q)) {
		struct vlan_tag *tag = l3;

		if ((void *)(tag + 1) > data_end)
			return count(ctx, ER_MALFORMED, XDP_DROP);
		proto = tag->proto;
		l3 = tag + 1;
	}

	if (proto == bpf_htons(ETH_P_IP))
		r = parse_v4(l3, data_end, &f);
	else if (proto == bpf_htons(ETH_P_IPV6))
		r = parse_v6(l3, data_end, &f);
	else
		r = ER_PASS_NOT_OURS;
	if (r == ER_PASS_NOT_OURS || r == ER_PASS_FRAGMENT)
		return count(ctx, r, XDP_PASS);
	if (r >= 0)
		return drop(ctx, &f, r);

	udp = f.udp;
	if ((void *)(udp + 1) > data_end || (void *)(udp + 1) > f.ip_end)
		return drop(ctx, &f, ER_MALFORMED);
	cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg)
		return count(ctx, ER_PASS_NOT_OURS, XDP_PASS);
	dport = bpf_ntohs(udp->dest);
	if (cfg->port_hi == 0 || dport < cfg->port_lo || dport > cfg->port_hi)
		return count(ctx, ER_PASS_NOT_OURS, XDP_PASS);
	f.key.src_port = bpf_ntohs(udp->source);
	f.key.dst_port = dport;

	/* From here on the packet is addressed to the relay. */
	now = bpf_ktime_get_boot_ns();
	if (blocklisted(&f.key, now))
		return drop(ctx, &f, ER_BLOCKLISTED);
	if (f.fragment)
		return drop(ctx, &f, ER_FRAGMENT);
	if (f.ext_headers)
		return drop(ctx, &f, ER_EXT_HEADER);
	udp_len = bpf_ntohs(udp->len);
	if (udp_len <= sizeof(*udp) || (void *)udp + udp_len > f.ip_end)
		return drop(ctx, &f, ER_MALFORMED);
	payload = (__u8 *)(udp + 1);
	if ((void *)(payload + 1) > data_end)
		return drop(ctx, &f, ER_MALFORMED);

	/* RFC 7983 section 7. */
	if (payload[0] <= 3) {
		if (bpf_map_lookup_elem(&sessions, &f.key))
			return redirect(ctx, ER_REDIRECT_SESSION_CONTROL);
		if (!bucket_take(&join_buckets, &f.key, cfg->join_rate_per_sec, cfg->join_burst,
				 now))
			return drop(ctx, &f, ER_JOIN_RATE_LIMITED);
		if (!budget_take(cfg->control_rate_per_sec, cfg->control_burst, now))
			return drop(ctx, &f, ER_CONTROL_BUDGET);
		return redirect(ctx, ER_REDIRECT_CONTROL);
	}
	if (payload[0] >= 128 && payload[0] <= 191) {
		struct er_session *s = bpf_map_lookup_elem(&sessions, &f.key);

		if (!s)
			return drop(ctx, &f, ER_UNKNOWN_SESSION);
		if (!(s->id & ER_SESSION_PEER) &&
		    !bucket_take(&pps_buckets, &f.key, cfg->pps_rate_per_sec, cfg->pps_burst, now))
			return drop(ctx, &f, ER_RATE_LIMITED);
		return redirect(ctx, ER_REDIRECT_MEDIA);
	}
	return drop(ctx, &f, ER_NOT_RELAYED);
}

char LICENSE[] SEC("license") = "MIT OR Apache-2.0";
