/* The xdpvs XDP program.
 *
 * 1. Established flows the shards offloaded (flow_map) are forwarded here:
 *    rewritten (MACs; NAT addresses and ports) and sent with XDP_TX or a
 *    redirect. Only untagged IPv4 without options and IPv6 without extension
 *    headers, TCP without SYN/FIN/RST, or UDP (see flow.h).
 * 2. Everything else the director handles goes to the AF_XDP socket of the
 *    arriving queue (bpf_redirect_map(xsk_map, rx_queue, XDP_PASS), so a
 *    queue without a socket falls back to the kernel):
 *    a) TCP/UDP whose (daddr, proto, dport) or (daddr, proto, 0) is in
 *       vip_map;
 *    b) TCP/UDP whose (saddr, proto, sport) or (saddr, proto, 0) is in
 *       real_map (NAT replies), unless (daddr, 0, 0) is in local_map: a
 *       real server's packet to the director host itself (a health probe's
 *       answer) is the host's traffic;
 *    c) IPv4 fragments and IPv6 packets with an extension header, when
 *       (daddr, 0, 0) is in vip_map;
 *    d) ICMP errors (types 3, 11, 12) and ICMPv6 errors (1-4) when
 *       (daddr, 0, 0) is in vip_map.
 * 3. The rest (ARP, the host's own traffic, SSH) passes to the kernel.
 *
 * Parsing: Ethernet, up to two VLAN tags, IPv4 with options, the fixed IPv6
 * header. Anything truncated or malformed passes.
 *
 * Built by bpf/build.sh with clang; the object (bpf/xdpvs.o) is committed and
 * embedded in the binary, so building xdpvs needs only the Rust toolchain. */

#include "types.h"
#include "maps.h"
#include "csum.h"
#include "flow.h"

char LICENSE[] SEC("license") = "GPL";

/* Is `k` in `map`? */
static __always_inline int has(void *map, struct addr_key *k)
{
    return bpf_map_lookup_elem(map, k) != 0;
}

static __always_inline int to_socket(struct xdp_md *ctx)
{
    return bpf_redirect_map(&xsk_map, ctx->rx_queue_index, XDP_PASS);
}

/* An address-only entry (daddr, 0, 0) in vip_map: fragments, extension
 * headers and ICMP errors to a VIP. */
static __always_inline int addr_only(struct xdp_md *ctx, struct addr_key *d)
{
    d->proto = 0;
    d->port = 0;
    return has(&vip_map, d) ? to_socket(ctx) : XDP_PASS;
}

/* TCP/UDP: a virtual service, or the reply of a NAT real server. */
static __always_inline int ports(struct xdp_md *ctx, struct addr_key *d, struct addr_key *s)
{
    if (has(&vip_map, d))
        return to_socket(ctx);
    d->port = 0;
    if (has(&vip_map, d))
        return to_socket(ctx);
    d->proto = 0;
    if (has(&local_map, d))
        return XDP_PASS;
    if (has(&real_map, s))
        return to_socket(ctx);
    s->port = 0;
    if (has(&real_map, s))
        return to_socket(ctx);
    return XDP_PASS;
}

/* Read the ports (and the TCP flags) at `l4`; -1 when truncated. */
static __always_inline int read_l4(struct pkt *p, struct addr_key *d, struct addr_key *s)
{
    __be16 *pp = p->l4;
    if ((void *)(pp + 2) > p->end)
        return -1;
    s->port = pp[0];
    d->port = pp[1];
    s->proto = d->proto = p->proto;
    p->tcp_flags = 0;
    if (p->proto == IPPROTO_TCP) {
        struct tcphdr *t = p->l4;
        if ((void *)(t + 1) <= p->end)
            p->tcp_flags = t->flags;
        else
            p->tcp_flags = TCP_SYN; /* truncated: never the fast path */
    }
    return 0;
}

static __always_inline int ipv4(struct xdp_md *ctx, struct ethhdr *eth, void *l3, void *end,
                                int tagged)
{
    struct iphdr *ip = l3;
    struct addr_key d = {}, s = {};
    struct pkt p = { .l3 = l3, .end = end };

    if ((void *)(ip + 1) > end)
        return XDP_PASS;
    if ((ip->ver_ihl & 0xf0) != 0x40)
        return XDP_PASS;
    __u32 ihl = (ip->ver_ihl & 0x0f) * 4;
    if (ihl < 20)
        return XDP_PASS;
    d.addr[10] = d.addr[11] = s.addr[10] = s.addr[11] = 0xff;
    __builtin_memcpy(&d.addr[12], &ip->daddr, 4);
    __builtin_memcpy(&s.addr[12], &ip->saddr, 4);
    if (ip->frag_off & bpf_htons(0x3fff))
        return addr_only(ctx, &d);
    p.proto = ip->protocol;
    p.l4 = l3 + ihl;
    if (p.proto == IPPROTO_TCP || p.proto == IPPROTO_UDP) {
        if (read_l4(&p, &d, &s) < 0)
            return XDP_PASS;
        if (!tagged && ihl == 20) {
            struct flow_key k = {};
            __builtin_memcpy(k.src, &ip->saddr, 4);
            __builtin_memcpy(k.dst, &ip->daddr, 4);
            k.sport = s.port;
            k.dport = d.port;
            k.proto = p.proto;
            k.family = 4;
            p.l3_len = bpf_htons(ip->tot_len);
            int r = flow_forward(ctx, eth, &p, &k);
            if (r >= 0)
                return r;
        }
        return ports(ctx, &d, &s);
    }
    if (p.proto != IPPROTO_ICMP)
        return XDP_PASS;
    __u8 *type = p.l4;
    if ((void *)(type + 1) > end)
        return XDP_PASS;
    if (*type == 3 || *type == 11 || *type == 12)
        return addr_only(ctx, &d);
    return XDP_PASS;
}

/* IPv6 extension headers (IANA "IPv6 Extension Header Types"). */
static __always_inline int is_ext_header(__u8 nh)
{
    return nh == 0 || nh == 43 || nh == 44 || nh == 50 || nh == 51 || nh == 60 || nh == 135 ||
           nh == 139 || nh == 140 || nh == 253 || nh == 254;
}

static __always_inline int ipv6(struct xdp_md *ctx, struct ethhdr *eth, void *l3, void *end,
                                int tagged)
{
    struct ipv6hdr *ip6 = l3;
    struct addr_key d = {}, s = {};
    struct pkt p = { .l3 = l3, .end = end, .v6 = 1 };

    if ((void *)(ip6 + 1) > end)
        return XDP_PASS;
    if ((((__u8 *)ip6)[0] & 0xf0) != 0x60)
        return XDP_PASS;
    __builtin_memcpy(d.addr, ip6->daddr, 16);
    __builtin_memcpy(s.addr, ip6->saddr, 16);
    p.proto = ip6->nexthdr;
    p.l4 = ip6 + 1;
    if (p.proto == IPPROTO_TCP || p.proto == IPPROTO_UDP) {
        if (read_l4(&p, &d, &s) < 0)
            return XDP_PASS;
        if (!tagged) {
            struct flow_key k = {};
            __builtin_memcpy(k.src, ip6->saddr, 16);
            __builtin_memcpy(k.dst, ip6->daddr, 16);
            k.sport = s.port;
            k.dport = d.port;
            k.proto = p.proto;
            k.family = 6;
            p.l3_len = 40 + bpf_htons(ip6->payload_len);
            int r = flow_forward(ctx, eth, &p, &k);
            if (r >= 0)
                return r;
        }
        return ports(ctx, &d, &s);
    }
    if (p.proto == IPPROTO_ICMPV6) {
        __u8 *type = p.l4;
        if ((void *)(type + 1) > end)
            return XDP_PASS;
        if (*type >= 1 && *type <= 4)
            return addr_only(ctx, &d);
        return XDP_PASS;
    }
    if (is_ext_header(p.proto))
        return addr_only(ctx, &d);
    return XDP_PASS;
}

SEC("xdp")
int xdpvs(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    int tagged = 0;

    if ((void *)(eth + 1) > end)
        return XDP_PASS;
    __be16 proto = eth->proto;
    void *l3 = eth + 1;
#pragma unroll
    for (int i = 0; i < 2; i++) {
        if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
            break;
        struct vlanhdr *v = l3;
        if ((void *)(v + 1) > end)
            return XDP_PASS;
        proto = v->proto;
        l3 = v + 1;
        tagged = 1;
    }
    if (proto == bpf_htons(ETH_P_IP))
        return ipv4(ctx, eth, l3, end, tagged);
    if (proto == bpf_htons(ETH_P_IPV6))
        return ipv6(ctx, eth, l3, end, tagged);
    return XDP_PASS;
}
