//! The packet path: one frame in, one [`Verdict`] out. Parse, the
//! established-connection fast path, classification and the owner shard,
//! inbound (client to virtual service), outbound (NAT replies), ICMP errors
//! about tracked connections, and the transmit step (rewrite for DR, NAT,
//! IPIP or GUE towards the next hop).

use std::net::IpAddr;

use crate::service::model::{FlowKey, FwdMethod, Millis, Proto, ServiceKey};
use crate::service::snapshot::Snapshot;
use crate::shard::conn::{Conn, ConnHandle};
use crate::shard::forward;
use crate::shard::nexthop::{Neighbors, NextHop};
use crate::shard::tcp_state::{Dir, TcpState};
use crate::shard::verdict::{DropReason, Frame, Verdict};
use crate::wire::packet::FlowPeek;
use crate::wire::{self, PacketInfo};

use super::accounting::cached_hop;
use super::schedule::NewTarget;
use super::{hop_or_pending, owner_shard, Ctx, Target};

/// What [`Ctx::established_in`] did.
enum Fast {
    /// Forwarded or dropped.
    Done(Verdict),
    /// Not for the fast path; the connection lookup's result.
    Slow(Option<ConnHandle>),
    /// Not for the fast path, nothing looked up (a TCP SYN).
    NoLookup,
}
/// A TCP SYN without ACK (a connection attempt).
#[inline]
fn is_syn(tcp_flags: u8) -> bool {
    tcp_flags & wire::tcp::flags::SYN != 0 && tcp_flags & wire::tcp::flags::ACK == 0
}
/// The protocol of a packet that can open a connection (a TCP SYN, or
/// UDP); `None` for any other.
#[inline]
pub(super) fn opening_proto(p: &FlowPeek) -> Option<Proto> {
    match Proto::from_number(p.proto)? {
        Proto::Tcp => is_syn(p.tcp_flags).then_some(Proto::Tcp),
        Proto::Udp => Some(Proto::Udp),
    }
}
impl Ctx<'_> {
    /// [`Engine::process`].
    #[inline(always)]
    pub(super) fn process(
        &mut self,
        now: Millis,
        frame: &mut Frame<'_>,
        nh: &dyn Neighbors,
    ) -> Verdict {
        self.stats.packets += 1;
        // Borrowed in place: moving the parsed headers out costs a copy.
        let parsed = wire::parse(frame.data());
        let info = match &parsed {
            Ok(i) => i,
            Err(e) => {
                self.stats.malformed.count(e);
                return self.drop(DropReason::Malformed);
            }
        };
        if !info.is_ip() {
            self.stats.passed += 1;
            return Verdict::Pass;
        }
        if info.inner.is_some() {
            return self.process_icmp_error(now, frame, info, nh);
        }
        let proto = match Proto::from_number(info.proto) {
            Some(p) => p,
            None => {
                self.stats.passed += 1;
                return Verdict::Pass;
            }
        };
        if info.is_fragment {
            // Fragment policy: fragments of virtual-service traffic are not
            // reassembled (as IPVS without defrag); they are counted and dropped.
            if self.is_vip(info.dst) {
                return self.drop(DropReason::Fragment);
            }
            self.stats.passed += 1;
            return Verdict::Pass;
        }
        let key = FlowKey {
            proto,
            src: info.src,
            dst: info.dst,
            sport: info.sport,
            dport: info.dport,
        };
        let snap = self.snap;
        // IPVS order (ip_vs_in_hook): an existing connection is found by its
        // 5-tuple first. Replies of NAT real servers are looked up by their
        // reply key below instead.
        let mut looked_up = None;
        let from_nat_real = is_nat_real(snap, info.src);
        if !from_nat_real {
            match self.established_in(now, frame, info, &key, nh) {
                Fast::Done(v) => return v,
                Fast::Slow(h) => looked_up = Some(h),
                Fast::NoLookup => {}
            }
        }
        match snap.classifier.classify(proto, info.dst, info.dport) {
            Some(svc_idx) => {
                let owner = owner_shard(info.src, snap, self.cfg.shards);
                if owner != self.cfg.shard {
                    self.stats.handoff += 1;
                    return Verdict::Handoff(owner);
                }
                self.inbound(now, frame, info, &key, svc_idx as usize, looked_up, nh)
            }
            None => {
                // Not for a virtual service: only a reply of a NAT real
                // server (to a client) can be ours. Anything else is passed
                // here, by any shard, as the XDP filter would.
                if !from_nat_real {
                    self.stats.passed += 1;
                    return Verdict::Pass;
                }
                let owner = owner_shard(info.dst, snap, self.cfg.shards);
                if owner != self.cfg.shard {
                    self.stats.handoff += 1;
                    return Verdict::Handoff(owner);
                }
                self.outbound(now, frame, info, &key, nh)
            }
        }
    }
    /// The established-connection fast path: a packet (not a TCP SYN) of a
    /// connection whose real server is in the snapshot is forwarded without
    /// classifying it. That is what the classify-first path would do: the
    /// connection's service is in the snapshot (its real server's id is
    /// bound to the service key), so an address service still classifies
    /// the packet; a firewall-mark service is asked (its fwmark rules may
    /// have changed). Anything else (SYNs, which may reopen or reschedule a
    /// connection; removed real servers; another owner shard) takes the
    /// full path, with the lookup's result when there was one.
    #[inline(always)]
    fn established_in(
        &mut self,
        now: Millis,
        frame: &mut Frame<'_>,
        info: &PacketInfo,
        key: &FlowKey,
        nh: &dyn Neighbors,
    ) -> Fast {
        if key.proto == Proto::Tcp && is_syn(info.tcp_flags) {
            return Fast::NoLookup;
        }
        let Some(h) = self.conns.lookup_in(key) else {
            return Fast::Slow(None);
        };
        let Some(c) = self.conns.get(h) else {
            return Fast::Slow(Some(h));
        };
        let snap = self.snap;
        let Some(d) = self.dests.get_mut(&c.dest) else {
            return Fast::Slow(Some(h));
        };
        let classified = match d.at.and_then(|(s, _)| snap.services.get(s as usize)) {
            Some(svc) => match svc.key {
                ServiceKey::Addr { .. } => true,
                ServiceKey::Fwmark(_) => snap
                    .classifier
                    .classify(key.proto, key.dst, key.dport)
                    .is_some(),
            },
            None => false,
        };
        if !classified || owner_shard(key.src, snap, self.cfg.shards) != self.cfg.shard {
            return Fast::Slow(Some(h));
        }
        d.c.inpkts += 1;
        d.c.inbytes += u64::from(info.l3_len);
        let hop = cached_hop(d, c.raddr, nh);
        self.touch_conn(h, &c, now, Dir::Input, info.tcp_flags);
        let v = self.transmit_hop(frame, info, &Target::of(&c), hop, nh);
        self.offload_after(v, h, false, hop);
        Fast::Done(v)
    }
    pub(super) fn drop(&mut self, r: DropReason) -> Verdict {
        if let Some(c) = self.stats.dropped.get_mut(r as usize) {
            *c += 1;
        }
        Verdict::Drop(r)
    }
    /// Is `a` a virtual address (any protocol, any port)? `vips` is sorted
    /// by (proto, address, port) (see `build_snapshot`).
    fn is_vip(&self, a: IpAddr) -> bool {
        let v = &self.snap.vips;
        [Proto::Tcp, Proto::Udp].into_iter().any(|p| {
            let i = v.partition_point(|&(q, b, _)| (q, b) < (p, a));
            v.get(i).is_some_and(|&(q, b, _)| q == p && b == a)
        })
    }
    /// A packet to a virtual service, from a client.
    ///
    /// Connection reuse and unavailable real servers follow IPVS
    /// (`ip_vs_in_hook`, `net/netfilter/ipvs/ip_vs_core.c`):
    /// - a SYN on a connection in a closing state is a new connection,
    ///   scheduled afresh (`conn_reuse_mode`); with `expire_nodest_conn`, so
    ///   is a SYN on a connection whose real server is quiesced (weight 0);
    /// - a packet of a connection whose real server is no longer in the
    ///   snapshot (removed from the service) is dropped and counted as
    ///   [`DropReason::DestRemoved`]; the connection's timer is not
    ///   restarted, so it times out as it would have. With
    ///   `expire_nodest_conn` the connection is expired at once instead, and
    ///   the packet is scheduled afresh when it can open a connection (UDP,
    ///   TCP SYN) — otherwise it is dropped as `DestRemoved` too.
    #[allow(clippy::too_many_arguments)]
    fn inbound(
        &mut self,
        now: Millis,
        frame: &mut Frame<'_>,
        info: &PacketInfo,
        key: &FlowKey,
        svc_idx: usize,
        looked_up: Option<Option<ConnHandle>>,
        nh: &dyn Neighbors,
    ) -> Verdict {
        let snap = self.snap;
        let Some(svc) = snap.services.get(svc_idx) else {
            return self.drop(DropReason::NoDest);
        };
        let syn = key.proto == Proto::Tcp && is_syn(info.tcp_flags);
        let mut hit: Option<(ConnHandle, Conn)> = None;
        let handle = match looked_up {
            Some(h) => h,
            None => self.conns.lookup_in(key),
        };
        if let Some(h) = handle {
            let Some(c) = self.conns.get(h) else {
                return self.drop(DropReason::NoDest);
            };
            hit = Some((h, c));
        }
        if let (Some((h, c)), true) = (hit, syn) {
            // A new SYN on a connection that has closed: IPVS
            // conn_reuse_mode reschedules it as a new connection; with
            // expire_nodest_conn, so does one to a quiesced server.
            // conn_reuse_mode 0 turns both off, as in IPVS.
            let mode = snap.conn_reuse_mode;
            let quiesced =
                svc.expire_nodest_conn && snap.dest(c.dest).is_some_and(|(_, d)| d.weight == 0);
            if mode != 0 && (is_new_conn_expected(&c, mode) || quiesced) {
                self.remove_conn(h);
                hit = None;
            }
        }
        if let Some((h, c)) = hit {
            // One lookup: is the real server still in the snapshot, and its
            // counters.
            if let Some(d) = self.dests.get_mut(&c.dest).filter(|d| d.at.is_some()) {
                d.c.inpkts += 1;
                d.c.inbytes += u64::from(info.l3_len);
                self.touch_conn(h, &c, now, Dir::Input, info.tcp_flags);
                let hop = nh.lookup(c.raddr);
                let v = self.transmit_hop(frame, info, &Target::of(&c), hop, nh);
                self.offload_after(v, h, false, hop);
                return v;
            }
            // The real server is gone (ip_vs_in_hook: "the destination
            // server is not available").
            if !svc.expire_nodest_conn {
                return self.drop(DropReason::DestRemoved);
            }
            self.remove_conn(h);
            self.stats.expired_conns += 1;
            if key.proto == Proto::Tcp && !syn {
                return self.drop(DropReason::DestRemoved);
            }
        }
        // IPVS tcp_conn_schedule: a SYN opens a connection; with
        // `sloppy_tcp` any segment but a RST does (a director taking over
        // flows it never saw).
        if key.proto == Proto::Tcp
            && !syn
            && !(snap.sloppy_tcp && info.tcp_flags & wire::tcp::flags::RST == 0)
        {
            return self.drop(DropReason::NotSyn);
        }
        let t = match self.new_conn(now, key, svc_idx, svc, info, nh) {
            Ok(NewTarget::New(t, hop, h)) => {
                let v = self.transmit_hop(frame, info, &t, hop, nh);
                // UDP: offloaded at its first packet.
                self.offload_after(v, h, false, hop);
                return v;
            }
            Ok(NewTarget::Existing(t)) => {
                if let Some(d) = self.dests.get_mut(&t.dest) {
                    d.c.inpkts += 1;
                    d.c.inbytes += u64::from(info.l3_len);
                }
                t
            }
            Err(v) => return v,
        };
        self.transmit_in(frame, info, &t, nh)
    }
    fn outbound(
        &mut self,
        now: Millis,
        frame: &mut Frame<'_>,
        info: &PacketInfo,
        key: &FlowKey,
        nh: &dyn Neighbors,
    ) -> Verdict {
        let Some(h) = self.conns.lookup_out(key) else {
            self.stats.passed += 1;
            return Verdict::Pass;
        };
        let Some(c) = self.conns.get(h) else {
            self.stats.passed += 1;
            return Verdict::Pass;
        };
        self.touch_conn(h, &c, now, Dir::Output, info.tcp_flags);
        if let Some(d) = self.dests.get_mut(&c.dest) {
            d.c.outpkts += 1;
            d.c.outbytes += u64::from(info.l3_len);
        }
        let Some((hop, held)) = hop_or_pending(nh.lookup(c.caddr), c.caddr, nh) else {
            return self.no_neighbor(c.caddr);
        };
        let v = match forward::nat_out(frame, info, c.vaddr, c.vport, &hop) {
            Ok(()) => self.sent(&hop, held, c.caddr),
            Err(_) => self.drop(DropReason::NoRoom),
        };
        self.offload_after(v, h, true, Some(hop));
        v
    }
    /// ICMP errors about a tracked connection go where the connection goes
    /// (path MTU discovery through the director), as IPVS `ip_vs_in_icmp` /
    /// `ip_vs_out_icmp`:
    /// - quoting a packet from a virtual service to a client (a reply, sent
    ///   by us for NAT or by the real server for DR/tunnels), the error goes
    ///   to the connection's real server (NAT: outer destination and quoted
    ///   source become the real server's); no such connection: dropped as
    ///   [`DropReason::IcmpNoConn`];
    /// - quoting a packet from a client to a NAT real server (an error from
    ///   the real server's side), it goes to the client with the virtual
    ///   address and port in place of the real server's;
    /// - anything else is not ours: passed to the kernel.
    ///
    /// Either way the owner shard is the client's.
    fn process_icmp_error(
        &mut self,
        _now: Millis,
        frame: &mut Frame<'_>,
        info: &PacketInfo,
        nh: &dyn Neighbors,
    ) -> Verdict {
        let Some(inner) = info.inner.and_then(|i| i.flow_key()) else {
            self.stats.passed += 1;
            return Verdict::Pass;
        };
        let snap = self.snap;
        let about_reply = snap
            .classifier
            .classify(inner.proto, inner.src, inner.sport)
            .is_some();
        let about_request = !about_reply && is_nat_real(snap, inner.dst);
        if !about_reply && !about_request {
            self.stats.passed += 1;
            return Verdict::Pass;
        }
        let client = if about_reply { inner.dst } else { inner.src };
        let owner = owner_shard(client, snap, self.cfg.shards);
        if owner != self.cfg.shard {
            self.stats.handoff += 1;
            return Verdict::Handoff(owner);
        }
        if about_request {
            // Quoted client -> RIP:rport: the reply key of a NAT connection.
            let c = self
                .conns
                .lookup_out(&inner.reversed())
                .and_then(|h| self.conns.get(h));
            let Some(c) = c.filter(|c| c.fwd == FwdMethod::Nat) else {
                self.stats.passed += 1;
                return Verdict::Pass;
            };
            let Some((hop, held)) = hop_or_pending(nh.lookup(c.caddr), c.caddr, nh) else {
                return self.no_neighbor(c.caddr);
            };
            return match forward::nat_icmp_out(frame, info, c.vaddr, c.vport, &hop) {
                Ok(()) => self.sent(&hop, held, c.caddr),
                Err(e) => self.drop(e.drop_reason()),
            };
        }
        // The quoted packet is one we (or a real server, DR) sent towards the
        // client: VIP -> client. Its connection's inbound key is the reverse.
        let in_key = inner.reversed();
        let Some(h) = self.conns.lookup_in(&in_key) else {
            return self.drop(DropReason::IcmpNoConn);
        };
        let Some(c) = self.conns.get(h) else {
            return self.drop(DropReason::IcmpNoConn);
        };
        match c.fwd {
            FwdMethod::Dr => {
                let Some((hop, held)) = hop_or_pending(nh.lookup(c.raddr), c.raddr, nh) else {
                    return self.no_neighbor(c.raddr);
                };
                match forward::dr(frame, info, &hop) {
                    Ok(()) => self.sent(&hop, held, c.raddr),
                    Err(_) => self.drop(DropReason::NoRoom),
                }
            }
            FwdMethod::Ipip | FwdMethod::Gue => self.transmit_in(frame, info, &Target::of(&c), nh),
            FwdMethod::Nat => {
                let Some((hop, held)) = hop_or_pending(nh.lookup(c.raddr), c.raddr, nh) else {
                    return self.no_neighbor(c.raddr);
                };
                match forward::nat_icmp_in(frame, info, c.raddr, c.rport, &hop) {
                    Ok(()) => self.sent(&hop, held, c.raddr),
                    Err(e) => self.drop(e.drop_reason()),
                }
            }
        }
    }
    /// The verdict for a frame rewritten towards `hop`: sent, or held
    /// until the MAC of the next hop towards `dest` is known.
    #[inline(always)]
    fn sent(&mut self, hop: &NextHop, held: bool, dest: IpAddr) -> Verdict {
        if !held {
            return Verdict::Forward {
                ifindex: hop.ifindex,
            };
        }
        self.stats.neighbor_misses += 1;
        if self.want_neighbors.len() < 64 && !self.want_neighbors.contains(&dest) {
            self.want_neighbors.push(dest);
        }
        Verdict::Hold {
            ifindex: hop.ifindex,
            dest,
        }
    }

    fn no_neighbor(&mut self, a: IpAddr) -> Verdict {
        self.stats.neighbor_misses += 1;
        if self.want_neighbors.len() < 64 && !self.want_neighbors.contains(&a) {
            self.want_neighbors.push(a);
        }
        self.drop(DropReason::NoNeighbor)
    }
    #[inline]
    fn transmit_in(
        &mut self,
        frame: &mut Frame<'_>,
        info: &PacketInfo,
        c: &Target,
        nh: &dyn Neighbors,
    ) -> Verdict {
        let hop = nh.lookup(c.raddr);
        self.transmit_hop(frame, info, c, hop, nh)
    }
    /// [`Ctx::transmit_in`] with the next hop already looked up.
    #[inline(always)]
    fn transmit_hop(
        &mut self,
        frame: &mut Frame<'_>,
        info: &PacketInfo,
        c: &Target,
        hop: Option<NextHop>,
        nh: &dyn Neighbors,
    ) -> Verdict {
        let Some((hop, held)) = hop_or_pending(hop, c.raddr, nh) else {
            return self.no_neighbor(c.raddr);
        };
        let r = match c.fwd {
            FwdMethod::Dr => forward::dr(frame, info, &hop),
            FwdMethod::Nat => forward::nat_in(frame, info, c.raddr, c.rport, &hop),
            FwdMethod::Ipip | FwdMethod::Gue => {
                let snap = self.snap;
                let src = match c.raddr {
                    IpAddr::V4(_) => snap.tunnel_src4.map(IpAddr::V4),
                    IpAddr::V6(_) => snap.tunnel_src6.map(IpAddr::V6),
                };
                let Some(src) = src else {
                    return self.drop(DropReason::NoRoom);
                };
                if c.fwd == FwdMethod::Ipip {
                    forward::ipip(frame, info, src, c.raddr, &hop)
                } else {
                    let sport = forward::flow_hash_port(info);
                    forward::gue(frame, info, src, c.raddr, sport, snap.gue_port, &hop)
                }
            }
        };
        match r {
            Ok(()) => self.sent(&hop, held, c.raddr),
            Err(_) => self.drop(DropReason::NoRoom),
        }
    }
}

/// Is `a` the address of a NAT real server of `snap` (whose replies come
/// back through the director)? `nat_reals` is sorted (see `build_snapshot`).
#[inline]
pub(super) fn is_nat_real(snap: &Snapshot, a: IpAddr) -> bool {
    snap.is_nat_real(a)
}
/// IPVS `is_new_conn_expected` for `conn_reuse_mode` `mode` (not 0): a SYN
/// on a TCP connection in TIME_WAIT or CLOSE starts a new connection, and
/// with bit 2 of the mode so does one in FIN_WAIT when the director sees
/// no output (not NAT), unless a persistence template controls the old
/// connection (then the SYN goes on with it, to the template's server). A
/// SYN on a connection still shutting down otherwise stays on it, and the
/// state table takes it from there.
fn is_new_conn_expected(c: &Conn, mode: u8) -> bool {
    c.template.is_none()
        && match c.state {
            TcpState::TimeWait | TcpState::Close => true,
            TcpState::FinWait => mode & 2 != 0 && c.fwd != FwdMethod::Nat,
            _ => false,
        }
}
