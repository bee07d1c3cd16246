/* The live-frames generator of xdpvs-loadgen (`--mode live`): run with
 * BPF_PROG_RUN and BPF_F_TEST_XDP_LIVE_FRAMES on the sending interface, it
 * turns each frame the kernel hands it into the next packet of the run and
 * sends it with XDP_TX (out of that interface: no socket, no copy).
 *
 * The frames come from a page pool the kernel fills once with the template
 * the generator passes in (Ethernet, IPv4 and UDP headers and the 20-byte
 * payload of perf/common/mod.rs: magic and run id set) and then recycles as
 * the program left them: every field that varies from packet to packet is
 * written here, every time, and both checksums are recomputed from the
 * frame. Varying fields: IPv4 id (low 16 bits of the sequence number),
 * source address and port, destination port, sequence number, timestamp
 * (bpf_ktime_get_ns is CLOCK_MONOTONIC).
 *
 * Flows: packet `seq` uses flow f = seq % flows, source address
 * src_base + f % n_src, then source port and destination port from
 * f / n_src, exactly as the AF_XDP mode (perf/loadgen/main.rs, Gen::write),
 * kept as counters in gen_map instead of divisions. The program runs on one
 * CPU at a time (the calling thread), so plain increments do. */
#include "types.h"

char LICENSE[] SEC("license") = "GPL";

struct map_ref {
    __u32 unused;
};
/* ARRAY u32 0 -> struct gen_state (src/xdp/livegen.rs writes the first
 * fields before a run and reads `seq` back). */
struct map_ref gen_map SEC("maps");

/* Native byte order; layout shared with src/xdp/livegen.rs (GenState). */
struct gen_state {
    __u64 seq;      /* sequence number of the next packet */
    __u32 flow;     /* seq % flows */
    __u32 ip_i;     /* flow % n_src */
    __u32 sport_i;  /* (flow / n_src) % n_sport */
    __u32 dport_i;  /* (flow / n_src / n_sport) % n_dport */
    __u32 flows;
    __u32 n_src;
    __u32 n_sport;
    __u32 n_dport;
    __u32 src_base; /* host order */
    __u16 sport_lo;
    __u16 dport_lo;
};

#define ETH_LEN 14
#define IP_LEN 20
#define UDP_LEN 8
#define PAYLOAD_LEN 20
#define SEG_WORDS ((UDP_LEN + PAYLOAD_LEN) / 2)

static __always_inline __u16 fold(__u32 acc)
{
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    return (__u16)acc;
}

SEC("xdp")
int loadgen(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    if (data + ETH_LEN + IP_LEN + UDP_LEN + PAYLOAD_LEN > end)
        return XDP_ABORTED;
    __u32 zero = 0;
    struct gen_state *s = bpf_map_lookup_elem(&gen_map, &zero);
    if (!s)
        return XDP_ABORTED;

    __u64 seq = s->seq;
    __u32 src = s->src_base + s->ip_i;
    __u16 sport = s->sport_lo + (__u16)s->sport_i;
    __u16 dport = s->dport_lo + (__u16)s->dport_i;
    /* Advance to the next flow (f + 1) % flows, digit by digit. */
    s->seq = seq + 1;
    if (++s->flow >= s->flows) {
        s->flow = 0;
        s->ip_i = 0;
        s->sport_i = 0;
        s->dport_i = 0;
    } else if (++s->ip_i >= s->n_src) {
        s->ip_i = 0;
        if (++s->sport_i >= s->n_sport) {
            s->sport_i = 0;
            if (++s->dport_i >= s->n_dport)
                s->dport_i = 0;
        }
    }

    struct iphdr *ip = data + ETH_LEN;
    struct udphdr *udp = data + ETH_LEN + IP_LEN;
    __u8 *pay = data + ETH_LEN + IP_LEN + UDP_LEN;
    ip->id = bpf_htons((__u16)seq);
    ip->saddr = __builtin_bswap32(src);
    ip->check = 0;
    udp->source = bpf_htons(sport);
    udp->dest = bpf_htons(dport);
    udp->check = 0;
    /* Payload, little endian: bytes 4..12 sequence, 12..20 timestamp. */
    *(__u64 *)(pay + 4) = seq;
    *(__u64 *)(pay + 12) = bpf_ktime_get_ns();

    /* Words as they sit in the frame: the sum does not depend on byte
     * order, and the folded result is stored the same way (RFC 1071). */
    __u16 *w = (__u16 *)ip;
    __u32 acc = 0;
#pragma unroll
    for (int i = 0; i < IP_LEN / 2; i++)
        acc += w[i];
    ip->check = (__u16)~fold(acc);

    /* Pseudo header (addresses, protocol, UDP length), then the segment. */
    acc = (__u32)w[6] + w[7] + w[8] + w[9] + bpf_htons(IPPROTO_UDP) + udp->len;
    w = (__u16 *)udp;
#pragma unroll
    for (int i = 0; i < SEG_WORDS; i++)
        acc += w[i];
    __u16 c = (__u16)~fold(acc);
    udp->check = c ? c : 0xffff;
    return XDP_TX;
}
