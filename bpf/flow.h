/* The flow cache: established flows the shards decided and offloaded, and
 * how the program forwards a packet of one (MAC rewrite, NAT with
 * incremental checksums, IPIP/GUE encapsulation (encap.h), XDP_TX or
 * redirect). The shards stay the only
 * authority: they install and remove entries; the program only reads an
 * entry and stamps its last-seen time, and counts per real server
 * (dest_map). */
#ifndef XDPVS_FLOW_H
#define XDPVS_FLOW_H

#include "types.h"
#include "maps.h"
#include "csum.h"

/* flow_map key (40 bytes): the flow as it arrives. IPv4 addresses take the
 * first 4 bytes of src/dst, the rest is 0. */
struct flow_key {
    __u8 src[16];
    __u8 dst[16];
    __be16 sport;
    __be16 dport;
    __u8 proto;
    __u8 family; /* 4 or 6 */
    __u8 pad[2];
};

enum flow_action {
    FLOW_DR = 1,   /* new MACs only */
    FLOW_DNAT = 2, /* destination becomes addr:port (to the real server) */
    FLOW_SNAT = 3, /* source becomes addr:port (a NAT reply to the client) */
    FLOW_IPIP = 4, /* outer IP header tun_src -> tun_dst pushed (encap.h) */
    FLOW_GUE = 5,  /* outer IP + UDP tun_sport -> tun_dport pushed */
};

/* dest_map key and per-CPU value (src/xdp/flow.rs DEST_KEY_SIZE,
 * DEST_VALUE_SIZE). */
struct dest_key {
    __u32 dest;  /* the real server's id */
    __u32 reply; /* 1: a NAT reply (the engine's out counters) */
};
struct dest_ctr {
    __u64 packets;
    __u64 bytes; /* IP bytes, as the engine counts */
};

/* flow_map value (120 bytes). */
struct flow_entry {
    __u8 dst_mac[6];
    __u8 src_mac[6];
    __u32 ifindex; /* out of this interface: XDP_TX when it is the one the
                      packet came in on, else bpf_redirect */
    __u16 mtu;     /* a larger packet takes the AF_XDP path */
    __u8 action;   /* enum flow_action */
    __u8 pad0;
    __u8 addr[16]; /* NAT address (IPv4: first 4 bytes) */
    __be16 port;   /* NAT port */
    __u16 pad1;
    __u32 dest;    /* the real server's id (counters) */
    __u32 pad2;
    __u64 installed_ns;
    __u64 last_seen_ns; /* written by the program */
    __u64 packets;      /* unused (0): counted per real server, dest_map */
    __u64 bytes;        /* unused (0) */
    /* IPIP / GUE only (zero otherwise): the outer header. */
    __u8 tun_src[16];   /* outer source (IPv4: first 4 bytes) */
    __u8 tun_dst[16];   /* outer destination: the real server */
    __be16 tun_sport;   /* GUE: UDP source port (the flow's hash port) */
    __be16 tun_dport;   /* GUE: UDP destination port (gue_port) */
    __u8 tun_family;    /* outer family: 4 or 6 */
    __u8 pad3[3];
};

_Static_assert(sizeof(struct flow_key) == 40, "flow_key: src/xdp/flow.rs FLOW_KEY_SIZE");
_Static_assert(sizeof(struct flow_entry) == 120, "flow_entry: src/xdp/flow.rs FLOW_VALUE_SIZE");
_Static_assert(__builtin_offsetof(struct flow_entry, bytes) == 72, "flow_entry.bytes");
_Static_assert(__builtin_offsetof(struct flow_entry, tun_src) == 80, "flow_entry.tun_src");
_Static_assert(__builtin_offsetof(struct flow_entry, tun_family) == 116, "flow_entry.tun_family");

/* The packet being looked at, as the parser left it. */
struct pkt {
    void *l3;
    void *l4;
    void *end;
    __u32 l3_len;
    __u8 v6;
    __u8 proto;
    __u8 tcp_flags;
};

#include "encap.h"

/* NAT rewrite: source (SNAT) or destination (DNAT) address and port,
 * IPv4 header checksum and TCP/UDP checksum updated incrementally. */
static __always_inline int flow_nat(struct pkt *p, const struct flow_entry *f)
{
    int src = f->action == FLOW_SNAT;
    __u16 *port;
    __u16 *check;
    __u16 da;

    if (p->proto == IPPROTO_TCP) {
        struct tcphdr *t = p->l4;
        if ((void *)(t + 1) > p->end)
            return -1;
        port = src ? &t->source : &t->dest;
        check = &t->check;
    } else {
        struct udphdr *u = p->l4;
        if ((void *)(u + 1) > p->end)
            return -1;
        port = src ? &u->source : &u->dest;
        check = &u->check;
    }
    if (p->v6) {
        struct ipv6hdr *ip6 = p->l3;
        __u16 *a = (__u16 *)(src ? ip6->saddr : ip6->daddr);
        da = csum_delta(a, (const __u16 *)f->addr, 8);
        __builtin_memcpy(a, f->addr, 16);
    } else {
        struct iphdr *ip = p->l3;
        __u16 *a = (__u16 *)(src ? &ip->saddr : &ip->daddr);
        da = csum_delta(a, (const __u16 *)f->addr, 2);
        __builtin_memcpy(a, f->addr, 4);
        ip->check = csum_apply(ip->check, da);
    }
    __u16 dp = csum_delta(port, &f->port, 1);
    *port = f->port;
    __u16 d = csum_combine(da, dp);
    if (p->proto == IPPROTO_UDP)
        *check = csum_apply_udp(*check, d);
    else
        *check = csum_apply(*check, d);
    return 0;
}

/* The counters of the entry's real server and direction on this CPU, made
 * at its first packet here; 0 when dest_map is full (the packet then takes
 * the AF_XDP path, where the engine counts it). */
static __always_inline struct dest_ctr *dest_counters(const struct flow_entry *f)
{
    struct dest_key k = { .dest = f->dest, .reply = f->action == FLOW_SNAT };
    struct dest_ctr *c = bpf_map_lookup_elem(&dest_map, &k);
    if (c)
        return c;
    struct dest_ctr zero = {};
    bpf_map_update_elem(&dest_map, &k, &zero, BPF_NOEXIST);
    return bpf_map_lookup_elem(&dest_map, &k);
}

/* Forward a packet of an offloaded flow, or return -1 when it must take the
 * AF_XDP path: no entry, fast path off, a TCP SYN, FIN or RST (the engine
 * keeps the state table), or larger than the way out allows (with the outer
 * header of a tunnel). */
static __always_inline int flow_forward(struct xdp_md *ctx, struct ethhdr *eth,
                                        struct pkt *p, const struct flow_key *key)
{
    __u32 zero = 0;
    __u32 *on = bpf_map_lookup_elem(&cfg_map, &zero);
    if (!on || !*on)
        return -1;
    if (p->tcp_flags & (TCP_SYN | TCP_FIN | TCP_RST))
        return -1;
    struct flow_entry *f = bpf_map_lookup_elem(&flow_map, key);
    if (!f)
        return -1;
    __u32 over = encap_overhead(f);
    if (p->l3_len + over > f->mtu)
        return -1;
    struct dest_ctr *c = dest_counters(f);
    if (!c)
        return -1;
    if (over) {
        /* `eth` and `p` are stale after this. */
        int r = flow_encap(ctx, p, f);
        if (r < 0)
            return -1;
        if (r > 0)
            return XDP_ABORTED;
    } else {
        if (f->action != FLOW_DR && flow_nat(p, f) < 0)
            return -1;
        __builtin_memcpy(eth->dst, f->dst_mac, 6);
        __builtin_memcpy(eth->src, f->src_mac, 6);
    }
    /* Per-CPU counters: plain adds. The stamp is written only when it
     * moves (the engine reads it in milliseconds), sparing the entry's
     * cache line most stores. */
    c->packets += 1;
    c->bytes += p->l3_len;
    __u64 now = bpf_ktime_get_ns();
    if (now - f->last_seen_ns >= 1000000)
        f->last_seen_ns = now;
    if (f->ifindex == ctx->ingress_ifindex)
        return XDP_TX;
    return bpf_redirect(f->ifindex, 0);
}

#endif
