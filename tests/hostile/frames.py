#!/usr/bin/env python3
"""Hostile frames for xdpvs: builds a table of malformed and tricky frames
and sends them, one per call, on an interface (AF_PACKET), to the director's
MAC. Addresses only from 198.18.0.0/15 and 2001:db8::/32.

  frames.py list                      names, one per line
  frames.py send IF DST_MAC NAME [N]  send frame NAME N times (default 1)
  frames.py pmtu IF DST_MAC CLIENT CPORT MTU
      an ICMP "fragmentation needed" from a router (198.18.0.1) to the VIP,
      quoting a packet VIP:80 -> CLIENT:CPORT (what a DR real server sends)
"""
import socket, struct, sys

VIP4 = socket.inet_aton("198.18.0.100")
SRC4 = socket.inet_aton("198.18.103.77")
VIP6 = socket.inet_pton(socket.AF_INET6, "2001:db8::100")
SRC6 = socket.inet_pton(socket.AF_INET6, "2001:db8:100::77")
SRC_MAC = bytes.fromhex("02000000beef")


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def eth(dst, payload, etype=0x0800, vlan=None):
    h = dst + SRC_MAC
    if vlan is not None:
        h += struct.pack("!HH", 0x8100, vlan)
    return h + struct.pack("!H", etype) + payload


def ipv4(payload, proto=6, ihl=5, total=None, frag=0x4000, options=b"", ttl=64):
    total = 4 * ihl + len(payload) if total is None else total
    h = struct.pack("!BBHHHBBH4s4s", 0x40 | (ihl & 0xF), 0, total & 0xFFFF, 0x1234, frag,
                    ttl, proto, 0, SRC4, VIP4) + options
    h = h[:10] + struct.pack("!H", csum(h[:20 + len(options)])) + h[12:]
    return h + payload


def tcp(sport=40000, dport=80, flags=0x02, doff=5, extra=b"", src=SRC4, dst=VIP4, v6=False):
    h = struct.pack("!HHIIBBHHH", sport, dport, 1000, 0, (doff & 0xF) << 4, flags, 65535, 0, 0) + extra
    if v6:
        pseudo = src + dst + struct.pack("!IxxxB", len(h), 6)
    else:
        pseudo = src + dst + struct.pack("!BBH", 0, 6, len(h))
    c = csum(pseudo + h)
    return h[:16] + struct.pack("!H", c) + h[18:]


def udp(sport=40000, dport=5353, length=None, data=b"hi"):
    length = 8 + len(data) if length is None else length
    return struct.pack("!HHHH", sport, dport, length, 0) + data


def ipv6(payload, nh=6, plen=None):
    plen = len(payload) if plen is None else plen
    return struct.pack("!IHBB16s16s", 0x60000000, plen, nh, 64, SRC6, VIP6) + payload


def ext(nh, length8=0):
    # A generic extension header (hop-by-hop / destination options shape).
    return struct.pack("!BB", nh, length8) + b"\x01\x04\0\0\0\0" + b"\0" * (8 * length8)


def frames(dst):
    syn = tcp()
    f = {}
    f["eth_no_payload"] = eth(dst, b"")
    f["ipv4_truncated_header"] = eth(dst, ipv4(syn)[:12])
    f["ipv4_bad_version"] = eth(dst, b"\x55" + ipv4(syn)[1:])
    f["ipv4_ihl_below_5"] = eth(dst, ipv4(syn, ihl=4))
    f["ipv4_ihl_beyond_packet"] = eth(dst, ipv4(syn[:8], ihl=15)[:28])
    f["ipv4_total_len_lies"] = eth(dst, ipv4(syn, total=1200))
    f["ipv4_total_len_short"] = eth(dst, ipv4(syn, total=24))
    f["tcp_truncated"] = eth(dst, ipv4(syn[:12], total=32))
    f["tcp_doff_below_5"] = eth(dst, ipv4(tcp(doff=4)))
    f["tcp_doff_past_end"] = eth(dst, ipv4(tcp(doff=15)))
    f["ipv4_options_syn"] = eth(dst, ipv4(tcp(sport=40001), ihl=6, options=b"\x01\x01\x01\x00"))
    f["first_fragment"] = eth(dst, ipv4(syn, frag=0x2000))
    f["non_first_fragment"] = eth(dst, ipv4(b"\0" * 16, frag=0x0010))
    f["udp_zero_length"] = eth(dst, ipv4(udp(length=0), proto=17))
    f["udp_length_too_big"] = eth(dst, ipv4(udp(length=300), proto=17))
    f["udp_truncated"] = eth(dst, ipv4(udp()[:5], proto=17, total=25))
    inner = ipv4(tcp(), ihl=5)[:20]  # quoted header, no L4
    f["icmp_error_inner_truncated"] = eth(dst, ipv4(struct.pack("!BBHI", 3, 4, 0, 1400) + inner[:12], proto=1))
    f["icmp_error_no_conn"] = eth(dst, ipv4(struct.pack("!BBHI", 3, 4, 0, 1400) + inner + tcp()[:8], proto=1))
    f["vlan_tagged_syn"] = eth(dst, ipv4(tcp(sport=40002)), vlan=10)
    f["vlan_truncated"] = dst + SRC_MAC + b"\x81\x00\x00"
    f["unknown_ethertype"] = eth(dst, b"\0" * 46, etype=0x88B5)
    t6 = tcp(src=SRC6, dst=VIP6, v6=True)
    f["ipv6_truncated"] = eth(dst, ipv6(t6)[:30], etype=0x86DD)
    f["ipv6_payload_len_lies"] = eth(dst, ipv6(t6, plen=1000), etype=0x86DD)
    chain = b""
    nh = 6
    for _ in range(12):
        chain = ext(nh) + chain
        nh = 60
    f["ipv6_ext_chain_long"] = eth(dst, ipv6(chain + t6, nh=60), etype=0x86DD)
    # Hop-by-hop (0) is only valid first: a second one is out of order.
    f["ipv6_ext_hbh_not_first"] = eth(dst, ipv6(ext(0) + ext(6) + t6, nh=60), etype=0x86DD)
    f["ipv6_ext_truncated"] = eth(dst, ipv6(ext(6, length8=4)[:10], nh=60), etype=0x86DD)
    f["ipv6_fragment_header"] = eth(dst, ipv6(struct.pack("!BBHI", 6, 0, 1, 7) + t6, nh=44), etype=0x86DD)
    f["tcp_ack_no_conn"] = eth(dst, ipv4(tcp(sport=40003, flags=0x10)))
    return f


def pmtu(dst, client, cport, mtu):
    q = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 1500, 0, 0x4000, 63, 6, 0, VIP4, client)
    q += struct.pack("!HHI", 80, cport, 12345)
    icmp = struct.pack("!BBHHH", 3, 4, 0, 0, mtu) + q
    icmp = icmp[:2] + struct.pack("!H", csum(icmp)) + icmp[4:]
    rtr = socket.inet_aton("198.18.0.1")
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 7, 0, 64, 1, 0, rtr, VIP4)
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    return eth(dst, ip + icmp)


def main():
    if sys.argv[1] == "pmtu":
        _, _, ifname, mac, client, cport, mtu = sys.argv
        fr = pmtu(bytes.fromhex(mac.replace(":", "")), socket.inet_aton(client), int(cport), int(mtu))
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        s.bind((ifname, 0))
        s.send(fr)
        return
    if sys.argv[1] == "list":
        for n in frames(b"\0" * 6):
            print(n)
        return
    _, _, ifname, mac, name, *rest = sys.argv
    n = int(rest[0]) if rest else 1
    dst = bytes.fromhex(mac.replace(":", ""))
    fr = frames(dst)[name]
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((ifname, 0))
    for _ in range(min(n, 10000)):
        s.send(fr)


if __name__ == "__main__":
    main()
