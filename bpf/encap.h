/* IPIP and GUE in the fast path: the outer header is pushed in front of the
 * packet with bpf_xdp_adjust_head, as Katran does (katran/lib/bpf/
 * pckt_encap.h), and filled byte for byte as the engine fills it
 * (src/shard/forward.rs, encap()):
 *   outer IPv4: TOS copied from the inner packet (an IPv6 inner: its traffic
 *     class), ID 0, DF copied from an IPv4 inner and set for an IPv6 one,
 *     TTL 64, protocol 4 / 41 (IPIP) or 17 (GUE), header checksum computed;
 *   outer IPv6: traffic class copied, flow label 0, hop limit 64, next
 *     header 4 / 41 or 17;
 *   GUE variant 1 (no GUE header: the inner IP packet right after UDP):
 *     source port the flow's hash port (the engine computed it when it
 *     installed the entry), destination port gue_port; checksum 0 over IPv4,
 *     over IPv6 computed over the whole inner packet (gue_csum_v6).
 * The outer family may differ from the inner one. Ethernet padding after the
 * inner packet is dropped, as the engine drops it.
 * Included by flow.h (struct flow_entry, struct pkt). */
#ifndef XDPVS_ENCAP_H
#define XDPVS_ENCAP_H

#include "types.h"
#include "csum.h"

#define OUTER_TTL 64
/* GUE over IPv6: the inner packet is summed in chunks of CSUM_CHUNK bytes
 * (bpf_csum_diff takes at most 512), then in parts of 256, 128, ..., 4, 2
 * and 1 bytes; an inner packet above CSUM_MAX (1535 bytes: more than a
 * 1500-byte MTU leaves room for) takes the AF_XDP path. Every chunk more
 * multiplies the paths the verifier walks: with 18 (9 KB jumbo frames) it
 * processed 979,273 instructions of its 1,000,000 limit; with 2, 156,869. */
#define CSUM_CHUNK 512
#define CSUM_CHUNKS 2
#define CSUM_MAX (CSUM_CHUNK * (CSUM_CHUNKS + 1) - 1)

/* Bytes an entry pushes in front of the inner IP packet (0: no tunnel). */
static __always_inline __u32 encap_overhead(const struct flow_entry *f)
{
    if (f->action != FLOW_IPIP && f->action != FLOW_GUE)
        return 0;
    return (f->tun_family == 6 ? 40 : 20) + (f->action == FLOW_GUE ? 8 : 0);
}

/* What the outer header takes from the inner one. */
struct inner_facts {
    __u8 tos;
    __u8 df;
    __u8 proto; /* of the outer header for IPIP: 4 or 41 */
};

static __always_inline int inner_facts(const struct pkt *p, struct inner_facts *in)
{
    __u8 *b = p->l3;
    if ((void *)(b + 8) > p->end)
        return -1;
    if (p->v6) {
        /* IPv6 is never fragmented on the path: DF on an IPv4 outer. */
        in->tos = (__u8)(b[0] << 4) | (b[1] >> 4);
        in->df = 1;
        in->proto = IPPROTO_IPV6;
    } else {
        in->tos = b[1];
        in->df = (b[6] & 0x40) != 0;
        in->proto = IPPROTO_IPIP;
    }
    return 0;
}

/* a + b with end-around carry. */
static __always_inline __u32 csum_add(__u32 a, __u32 b)
{
    a += b;
    return a + (a < b);
}

/* The header checksum of the 20-byte IPv4 header at `h` (check field 0). */
static __always_inline __u16 ip4_csum(const __u16 *h)
{
    __u32 s = 0;
#pragma unroll
    for (int i = 0; i < 10; i++)
        s += h[i];
    return (__u16)~csum_fold(s);
}

#define CSUM_PART(n)                                                                               \
    if ((void *)(q + (n)) <= end) {                                                                \
        acc = bpf_csum_diff(0, 0, (__be32 *)q, (n), acc);                                          \
        q += (n);                                                                                  \
    }

/* The UDP checksum of a GUE packet over IPv6: pseudo header, UDP header
 * (check 0) and the inner packet, which ends at `end` and is at most
 * CSUM_MAX bytes. 0 is sent as 0xffff. */
static __always_inline __u16 gue_csum_v6(struct ipv6hdr *ip6, struct udphdr *u, void *end)
{
    __u8 *q = (__u8 *)(u + 1);
    /* Addresses and UDP header: 40 contiguous bytes. */
    __u32 acc = bpf_csum_diff(0, 0, (__be32 *)ip6->saddr, 40, 0);
    /* The rest of the pseudo header: length and next header, 32 bits each. */
    acc = csum_add(acc, u->len);
    acc = csum_add(acc, bpf_htons(IPPROTO_UDP));
#pragma unroll
    for (int i = 0; i < CSUM_CHUNKS; i++) {
        if ((void *)(q + CSUM_CHUNK) > end)
            break;
        acc = bpf_csum_diff(0, 0, (__be32 *)q, CSUM_CHUNK, acc);
        q += CSUM_CHUNK;
    }
    CSUM_PART(256)
    CSUM_PART(128)
    CSUM_PART(64)
    CSUM_PART(32)
    CSUM_PART(16)
    CSUM_PART(8)
    CSUM_PART(4)
    if ((void *)(q + 2) <= end) {
        acc = csum_add(acc, *(__u16 *)q);
        q += 2;
    }
    /* An odd last byte is the high-order byte of a word padded with zero:
     * in memory order (little-endian load), the low half. */
    if ((void *)(q + 1) <= end)
        acc = csum_add(acc, *q);
    __u16 c = (__u16)~csum_fold(acc);
    return c ? c : 0xffff;
}

static __always_inline void put_udp(struct udphdr *u, const struct flow_entry *f, __u32 len)
{
    u->source = f->tun_sport;
    u->dest = f->tun_dport;
    u->len = bpf_htons(sizeof(struct udphdr) + len);
    u->check = 0;
}

/* Encapsulate the packet `p` (untagged, its IP header right after Ethernet)
 * as entry `f` says, and set its MACs. Returns 0 when done, -1 with the
 * packet untouched (it takes the AF_XDP path), or 1 when it was changed and
 * cannot be sent (never in practice: XDP_ABORTED). */
static __always_inline int flow_encap(struct xdp_md *ctx, const struct pkt *p,
                                      const struct flow_entry *f)
{
    struct inner_facts in;
    int gue = f->action == FLOW_GUE;
    int v6 = f->tun_family == 6;
    __u32 hdr = encap_overhead(f);
    __u32 len = p->l3_len;

    if (inner_facts(p, &in) < 0)
        return -1;
    /* The inner packet as its header says: within the frame, at least a
     * header and 8 bytes of L4; what follows it is Ethernet padding. */
    __u32 avail = (long)p->end - (long)p->l3;
    if (len > avail || len < 28)
        return -1;
    if (gue && v6 && len > CSUM_MAX)
        return -1;
    if (avail > len && bpf_xdp_adjust_tail(ctx, -(int)(avail - len)))
        return -1;
    /* Only Ethernet padding is gone if this fails: still the same packet. */
    if (bpf_xdp_adjust_head(ctx, -(int)hdr))
        return -1;

    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    if (v6) {
        struct ipv6hdr *ip6 = (void *)(eth + 1);
        struct udphdr *u = (void *)(ip6 + 1);
        if ((void *)(u + 1) > end)
            return 1;
        eth->proto = bpf_htons(ETH_P_IPV6);
        ip6->ver_tc_flow = bpf_htonl(0x60000000 | (__u32)in.tos << 20);
        ip6->payload_len = bpf_htons(hdr - sizeof(struct ipv6hdr) + len);
        ip6->nexthdr = gue ? IPPROTO_UDP : in.proto;
        ip6->hop_limit = OUTER_TTL;
        __builtin_memcpy(ip6->saddr, f->tun_src, 16);
        __builtin_memcpy(ip6->daddr, f->tun_dst, 16);
        if (gue) {
            put_udp(u, f, len);
            u->check = gue_csum_v6(ip6, u, end);
        }
    } else {
        struct iphdr *ip = (void *)(eth + 1);
        struct udphdr *u = (void *)(ip + 1);
        if ((void *)(u + 1) > end)
            return 1;
        eth->proto = bpf_htons(ETH_P_IP);
        ip->ver_ihl = 0x45;
        ip->tos = in.tos;
        ip->tot_len = bpf_htons(hdr + len);
        ip->id = 0;
        ip->frag_off = in.df ? bpf_htons(0x4000) : 0;
        ip->ttl = OUTER_TTL;
        ip->protocol = gue ? IPPROTO_UDP : in.proto;
        ip->check = 0;
        __builtin_memcpy(&ip->saddr, f->tun_src, 4);
        __builtin_memcpy(&ip->daddr, f->tun_dst, 4);
        ip->check = ip4_csum((const __u16 *)ip);
        if (gue)
            put_udp(u, f, len);
    }
    __builtin_memcpy(eth->dst, f->dst_mac, 6);
    __builtin_memcpy(eth->src, f->src_mac, 6);
    return 0;
}

#endif
