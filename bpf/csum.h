/* Incremental Internet checksum updates (RFC 1624: HC' = ~(~HC + ~m + m')),
 * step for step the engine's CsumDelta (src/wire/checksum.rs), so that the
 * fast path and the engine write the same checksum bytes, 0x0000 and 0xffff
 * included. Words are used as they sit in the packet: the one's complement
 * sum does not depend on byte order (RFC 1071). */
#ifndef XDPVS_CSUM_H
#define XDPVS_CSUM_H

#include "types.h"

/* End-around carry of an accumulator of a few 16-bit words. */
static __always_inline __u16 csum_fold(__u32 acc)
{
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    return (__u16)acc;
}

/* The delta of a field of `n` 16-bit words (n <= 8) changing from `old` to
 * `new`: ~sum(old) + sum(new), folded (CsumDelta::bytes). */
static __always_inline __u16 csum_delta(const __u16 *old, const __u16 *new, int n)
{
    __u32 o = 0, w = 0;
#pragma unroll
    for (int i = 0; i < 8; i++) {
        if (i < n) {
            o += old[i];
            w += new[i];
        }
    }
    return csum_fold((__u16)~csum_fold(o) + (__u32)csum_fold(w));
}

/* Two deltas as one (CsumDelta::combine). */
static __always_inline __u16 csum_combine(__u16 a, __u16 b)
{
    return csum_fold((__u32)a + b);
}

/* The checksum field `check` with `delta` applied (CsumDelta::apply). */
static __always_inline __u16 csum_apply(__u16 check, __u16 delta)
{
    return (__u16)~csum_fold((__u32)(__u16)~check + delta);
}

/* UDP: a checksum of 0 means "none" and stays 0; a result of 0 is sent as
 * 0xffff. */
static __always_inline __u16 csum_apply_udp(__u16 check, __u16 delta)
{
    if (check == 0)
        return 0;
    __u16 r = csum_apply(check, delta);
    return r ? r : 0xffff;
}

#endif
