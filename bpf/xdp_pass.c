/* A program that passes every frame: attached by the lab to the veth peers
 * of the director's interfaces. On veth, a frame sent with XDP_TX or
 * redirected into a veth reaches the other end only when that end has an XDP
 * program (or GRO on); a physical NIC needs nothing of the kind. */
#include "types.h"

char LICENSE[] SEC("license") = "GPL";

SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
    return XDP_PASS;
}
