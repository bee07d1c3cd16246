/* A program that drops every frame: perf/bench.sh attaches it (native) to
 * the director's interface for its "xdp-drop" config, the ceiling of the
 * fast path's path on the bench topology (the generator, the bridge, the
 * director's veth receive and an XDP program, nothing forwarded). */
#include "types.h"

char LICENSE[] SEC("license") = "GPL";

SEC("xdp")
int xdp_drop(struct xdp_md *ctx)
{
    return XDP_DROP;
}
