/* The maps the program uses. User space creates them (sizes from the
 * config) and the loader (src/xdp/object.rs) patches every reference to one
 * of these symbols with the map's file descriptor, by name: the section
 * holds no definitions, only names. Layouts: src/xdp/keys.rs (addr_key) and
 * src/xdp/flow.rs (flow_key, flow_entry). */
#ifndef XDPVS_MAPS_H
#define XDPVS_MAPS_H

#include "types.h"

struct map_ref {
    __u32 unused;
};
#define MAP(name) struct map_ref name SEC("maps")

/* HASH addr_key -> u8: virtual services (proto, VIP, port) and address-only
 * (VIP, 0, 0) entries. */
MAP(vip_map);
/* HASH addr_key -> u8: NAT real servers (their replies are ours). */
MAP(real_map);
/* HASH addr_key -> u8: the director host's own addresses. */
MAP(local_map);
/* XSKMAP rx queue -> AF_XDP socket. */
MAP(xsk_map);
/* HASH flow_key -> flow_entry: established flows the shards offloaded. */
MAP(flow_map);
/* ARRAY u32 0 -> u32: 1 when the fast path is on (reloadable). */
MAP(cfg_map);
/* PERCPU_HASH dest_key -> dest_ctr: what the fast path forwarded, per real
 * server and direction, per CPU (flow.h). Entries are made by the program
 * at a real server's first fast packet; the control loop reads them (a walk
 * proportional to the real servers, not to the flows) and removes those of
 * real servers no longer configured. */
MAP(dest_map);

/* vip_map / real_map / local_map key (20 bytes). */
struct addr_key {
    __u8 addr[16]; /* IPv6, or IPv4 as ::ffff:a.b.c.d */
    __u8 proto;    /* 6 or 17; 0 for address-only */
    __u8 pad;
    __be16 port;   /* 0 for port-0 services and address-only */
};

#endif
