// Test-only XDP programs for the AF_XDP integration tests (relay/tests/afxdp.rs).
//
// `redirect_udp` (relay side): UDP (IPv4 or IPv6, untagged) to RELAY_PORT goes to
// `xsks[rx_queue_index]`; everything else passes to the kernel (ARP, ND, ...).
// `sink` (peer side): UDP to SINK_PORT is counted in `sunk` and dropped; everything else
// passes. A program on the peer veth is needed anyway: veth drops redirected and AF_XDP TX
// frames when its peer has no XDP program.
//
// The real product program lives in xdp-prog/; the map name `xsks` matches it.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#ifndef RELAY_PORT
#define RELAY_PORT 40000
#endif
#ifndef SINK_PORT
#define SINK_PORT 40001
#endif

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} sunk SEC(".maps");

// The UDP destination port of an untagged IPv4/IPv6 UDP frame, or 0.
static __always_inline __u16 udp_dport(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct udphdr *udp;

	if ((void *)(eth + 1) > end)
		return 0;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > end || ip->protocol != IPPROTO_UDP || ip->ihl < 5)
			return 0;
		udp = (void *)ip + ip->ihl * 4;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > end || ip6->nexthdr != IPPROTO_UDP)
			return 0;
		udp = (void *)(ip6 + 1);
	} else {
		return 0;
	}
	if ((void *)(udp + 1) > end)
		return 0;
	return bpf_ntohs(udp->dest);
}

SEC("xdp")
int redirect_udp(struct xdp_md *ctx)
{
	if (udp_dport(ctx) != RELAY_PORT)
		return XDP_PASS;
	return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
}

SEC("xdp")
int sink(struct xdp_md *ctx)
{
	__u32 zero = 0;
	__u64 *n;

	if (udp_dport(ctx) != SINK_PORT)
		return XDP_PASS;
	n = bpf_map_lookup_elem(&sunk, &zero);
	if (n)
		__sync_fetch_and_add(n, 1);
	return XDP_DROP;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
