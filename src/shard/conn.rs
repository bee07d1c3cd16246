//! The per-shard connection table: one writer, no locks, hard capacity.
//!
//! Layout (per address family; IPv4 and IPv6 live in separate stores so
//! IPv4 entries stay small):
//! - a slab of fixed-size entries (`Vec`, reserved at `capacity`, so it never
//!   reallocates; pages are touched as entries are used). An IPv4 entry is 32
//!   bytes, half a cache line; an IPv6 entry is 68 bytes;
//! - an open-addressing index of 64-byte buckets (`shard::index`, shared with
//!   the template table), each holding 7 `(tag,
//!   handle)` pairs and an overflow count (F14-style, no tombstones). A lookup
//!   is one hash, one bucket line and one entry line. The index holds the
//!   inbound key of every connection and, for NAT, the reply key; it is
//!   sized for two keys per entry at most 6/7 load;
//! - a [`TimerWheel`] (8 bytes per entry) with lazy re-arming: the true
//!   expiry lives in the entry and the timer moves only when it fires (or
//!   when the expiry moves earlier);
//! - an eviction FIFO of handles (4 bytes per entry), see below.
//!
//! Eviction when full: a new connection may push out one connection that is
//! not ESTABLISHED (half-open SYN_RECV/SYN_SENT/SYNACK, closing FIN_WAIT/
//! TIME_WAIT/CLOSE/CLOSE_WAIT/LAST_ACK, or NONE), the oldest first; if there
//! is none, the insert fails with [`InsertError::Full`]. Established flows
//! and UDP flows are never evicted: under a SYN flood the table fills with
//! half-open entries, and evicting those (which the flood keeps creating)
//! protects the flows that carry real traffic, while refusing a new flow
//! costs one retransmitted SYN at worst. The FIFO holds each slot at most
//! once (a slot enters when its connection becomes evictable and is not
//! queued yet); an insert pops at most [`EVICT_SCAN`] stale heads (slots
//! whose connection became established or went away) before giving up, so
//! eviction is O(1) amortized, never O(table).
//!
//! Handles stay valid until their connection is removed, expired or evicted;
//! do not keep one across [`ConnTable::insert`] or [`ConnTable::expire`].

use std::collections::VecDeque;
use std::fmt;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::index::Index;
use super::tcp_state::{self, Dir, TcpState};
use super::template::TplHandle;
use super::timer::{self, ExpireStats, TimerWheel, TICK_MS};
use crate::service::model::{DestId, FlowKey, FwdMethod, Millis, Proto, Timeouts};

/// Largest capacity a table accepts (larger requests are clamped).
pub const MAX_CAPACITY: usize = 1 << 30;
/// Stale FIFO heads an insert may pop while looking for a victim.
pub const EVICT_SCAN: usize = 128;
/// Bits of [`Conn::flags`] the engine may use freely.
pub const USER_FLAGS_MASK: u8 = 0x0F;

/// A connection's place in the table. Bit 31 selects the IPv6 store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnHandle(u32);

const H_V6: u32 = 1 << 31;

impl ConnHandle {
    /// The raw value (for logs and compact storage).
    pub const fn raw(self) -> u32 {
        self.0
    }
    /// Rebuild from [`ConnHandle::raw`].
    pub const fn from_raw(v: u32) -> Self {
        ConnHandle(v)
    }
    fn v4(i: u32) -> Self {
        ConnHandle(i)
    }
    fn v6(i: u32) -> Self {
        ConnHandle(i | H_V6)
    }
}

/// Why an insert failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InsertError {
    /// Full, and nothing evictable (every connection is established or UDP).
    #[error("connection table full")]
    Full,
    /// A connection with the same inbound key exists.
    #[error("connection already exists")]
    Exists(ConnHandle),
    /// Client and virtual address are of different families.
    #[error("client and virtual address families differ")]
    MixedFamily,
}

/// What the engine asks to create.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewConn {
    pub proto: Proto,
    pub caddr: IpAddr,
    pub cport: u16,
    pub vaddr: IpAddr,
    pub vport: u16,
    /// Real server. May be of the other family for tunnels (not for NAT:
    /// a mixed-family connection gets no reply index).
    pub raddr: IpAddr,
    pub rport: u16,
    pub dest: DestId,
    pub fwd: FwdMethod,
    /// Engine-owned bits, masked with [`USER_FLAGS_MASK`].
    pub flags: u8,
    /// The persistence template controlling this connection, if any.
    pub template: Option<TplHandle>,
}

impl NewConn {
    /// A connection for the inbound packet `key` towards `raddr:rport`.
    pub fn from_key(
        key: &FlowKey,
        raddr: IpAddr,
        rport: u16,
        dest: DestId,
        fwd: FwdMethod,
    ) -> Self {
        NewConn {
            proto: key.proto,
            caddr: key.src,
            cport: key.sport,
            vaddr: key.dst,
            vport: key.dport,
            raddr,
            rport,
            dest,
            fwd,
            flags: 0,
            template: None,
        }
    }
}

/// A decoded copy of one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conn {
    pub proto: Proto,
    pub caddr: IpAddr,
    pub cport: u16,
    pub vaddr: IpAddr,
    pub vport: u16,
    pub raddr: IpAddr,
    pub rport: u16,
    pub dest: DestId,
    pub fwd: FwdMethod,
    /// TCP state; `None` for UDP (IPVS's single UDP state).
    pub state: TcpState,
    /// When it expires, rounded up to the wheel tick (64 ms).
    pub expires: Millis,
    /// Engine-owned bits (see [`USER_FLAGS_MASK`]).
    pub flags: u8,
    pub template: Option<TplHandle>,
}

impl Conn {
    /// Key of client -> VIP packets.
    pub fn in_key(&self) -> FlowKey {
        FlowKey {
            proto: self.proto,
            src: self.caddr,
            dst: self.vaddr,
            sport: self.cport,
            dport: self.vport,
        }
    }
    /// Key of real server -> client packets (NAT replies).
    pub fn out_key(&self) -> FlowKey {
        FlowKey {
            proto: self.proto,
            src: self.raddr,
            dst: self.caddr,
            sport: self.rport,
            dport: self.cport,
        }
    }
    /// Counts as active for lc/wlc (TCP only; see [`tcp_state::is_active`]).
    pub fn is_active(&self) -> bool {
        self.proto == Proto::Tcp && tcp_state::is_active(self.state)
    }
}

/// What [`ConnTable::insert`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inserted {
    pub handle: ConnHandle,
    /// The connection pushed out to make room (the engine must account for
    /// it as for an expired one).
    pub evicted: Option<Conn>,
}

// ---- entry encoding ----

const ST_MASK: u16 = 0x000F;
const FWD_SHIFT: u16 = 4;
const FWD_MASK: u16 = 0x3 << FWD_SHIFT;
const UDP: u16 = 1 << 6;
const NOOUTPUT: u16 = 1 << 7;
const IN_RING: u16 = 1 << 8;
const LIVE: u16 = 1 << 9;
/// Client and VIP are IPv4, stored v4-mapped (IPv6 store only).
const CV4: u16 = 1 << 10;
/// Real server is IPv4, stored v4-mapped (IPv6 store only).
const R4: u16 = 1 << 11;
const USER_SHIFT: u16 = 12;

const NIL: u32 = u32::MAX;
const REPLY: u32 = 1 << 31;

fn fwd_bits(f: FwdMethod) -> u16 {
    let v = match f {
        FwdMethod::Dr => 0,
        FwdMethod::Nat => 1,
        FwdMethod::Ipip => 2,
        FwdMethod::Gue => 3,
    };
    v << FWD_SHIFT
}

fn fwd_of(bits: u16) -> FwdMethod {
    match (bits & FWD_MASK) >> FWD_SHIFT {
        0 => FwdMethod::Dr,
        1 => FwdMethod::Nat,
        2 => FwdMethod::Ipip,
        _ => FwdMethod::Gue,
    }
}

fn state_of(bits: u16) -> TcpState {
    TcpState::from_index((bits & ST_MASK) as u8).unwrap_or(TcpState::Close)
}

fn proto_of(bits: u16) -> Proto {
    if bits & UDP != 0 {
        Proto::Udp
    } else {
        Proto::Tcp
    }
}

/// Address width of a store.
trait Family: Copy + Eq + fmt::Debug {
    fn to_ip(self, v4_mapped: bool) -> IpAddr;
    fn hash(seed: &[u64; 4], src: Self, dst: Self, rest: u64) -> u64;
}

#[inline]
fn fmul(a: u64, b: u64) -> u64 {
    let p = (a as u128).wrapping_mul(b as u128);
    (p as u64) ^ ((p >> 64) as u64)
}

const K_MIX: u64 = 0x243F_6A88_85A3_08D3;

impl Family for Ipv4Addr {
    fn to_ip(self, _: bool) -> IpAddr {
        IpAddr::V4(self)
    }
    #[inline]
    fn hash(seed: &[u64; 4], src: Self, dst: Self, rest: u64) -> u64 {
        let a = (u64::from(u32::from(src)) << 32) | u64::from(u32::from(dst));
        let h = fmul(a ^ seed[0], rest ^ seed[1]);
        fmul(h ^ seed[2], K_MIX)
    }
}

impl Family for Ipv6Addr {
    fn to_ip(self, v4_mapped: bool) -> IpAddr {
        match self.to_ipv4_mapped() {
            Some(a) if v4_mapped => IpAddr::V4(a),
            _ => IpAddr::V6(self),
        }
    }
    #[inline]
    fn hash(seed: &[u64; 4], src: Self, dst: Self, rest: u64) -> u64 {
        let s = u128::from(src);
        let d = u128::from(dst);
        let h1 = fmul((s >> 64) as u64 ^ seed[0], s as u64 ^ seed[1]);
        let h2 = fmul((d >> 64) as u64 ^ seed[2], d as u64 ^ seed[3]);
        let h = fmul(h1 ^ rest ^ seed[1], h2 ^ seed[0]);
        fmul(h ^ seed[2], K_MIX)
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry<A> {
    caddr: A,
    vaddr: A,
    raddr: A,
    cport: u16,
    vport: u16,
    rport: u16,
    bits: u16,
    dest: u32,
    /// Expiry tick (of the wheel), relative to the table epoch.
    expires: u32,
    /// Template handle or `NIL`; next free slot when not live.
    tpl: u32,
}

// ---- one family's store ----

/// Slab + index: everything but the timer and the eviction FIFO, so that
/// timer callbacks can remove entries while the wheel is borrowed.
#[derive(Debug)]
struct Store<A> {
    slab: Vec<Entry<A>>,
    free: u32,
    len: usize,
    index: Index,
    seed: [u64; 4],
    /// Live entries with `CV4` (IPv4 client in the IPv6 store).
    mapped: usize,
}

#[inline]
fn key_rest(reply: bool, proto: Proto, sport: u16, dport: u16) -> u64 {
    (u64::from(sport) << 48)
        | (u64::from(dport) << 32)
        | (u64::from(proto.number()) << 8)
        | u64::from(reply)
}

impl<A: Family> Store<A> {
    fn new(capacity: usize, seed: [u64; 4]) -> Self {
        Store {
            slab: Vec::with_capacity(capacity),
            free: NIL,
            len: 0,
            index: Index::new(capacity.saturating_mul(2)),
            seed,
            mapped: 0,
        }
    }

    #[inline]
    fn hash(&self, reply: bool, proto: Proto, src: A, sport: u16, dst: A, dport: u16) -> u64 {
        A::hash(&self.seed, src, dst, key_rest(reply, proto, sport, dport))
    }

    #[inline]
    fn matches(e: &Entry<A>, reply: bool, mapped: bool, k: (Proto, A, u16, A, u16)) -> bool {
        let (proto, src, sport, dst, dport) = k;
        e.bits & LIVE != 0
            && proto_of(e.bits) == proto
            && if reply {
                e.raddr == src && e.rport == sport && e.caddr == dst && e.cport == dport
            } else {
                e.caddr == src
                    && e.cport == sport
                    && e.vaddr == dst
                    && e.vport == dport
                    && (e.bits & CV4 != 0) == mapped
            }
    }

    #[inline]
    fn find_hashed(
        &self,
        hash: u64,
        reply: bool,
        mapped: bool,
        k: (Proto, A, u16, A, u16),
    ) -> Option<(usize, usize, u32)> {
        self.index.find(hash, |v| {
            (v & REPLY != 0) == reply
                && self
                    .slab
                    .get((v & !REPLY) as usize)
                    .is_some_and(|e| Self::matches(e, reply, mapped, k))
        })
    }

    #[inline]
    fn find(&self, reply: bool, mapped: bool, k: (Proto, A, u16, A, u16)) -> Option<u32> {
        let hash = self.hash(reply, k.0, k.1, k.2, k.3, k.4);
        self.find_hashed(hash, reply, mapped, k)
            .map(|(_, _, v)| v & !REPLY)
    }

    fn has_reply_key(e: &Entry<A>) -> bool {
        fwd_of(e.bits) == FwdMethod::Nat && e.bits & (CV4 | R4) == 0
    }

    fn in_tuple(e: &Entry<A>) -> (Proto, A, u16, A, u16) {
        (proto_of(e.bits), e.caddr, e.cport, e.vaddr, e.vport)
    }

    fn out_tuple(e: &Entry<A>) -> (Proto, A, u16, A, u16) {
        (proto_of(e.bits), e.raddr, e.rport, e.caddr, e.cport)
    }

    /// Store a new entry whose inbound-key hash is `hin`; the caller checked
    /// capacity and duplicates.
    fn add(&mut self, mut e: Entry<A>, hin: u64) -> Option<u32> {
        let idx = if self.free != NIL {
            let i = self.free;
            let slot = self.slab.get(i as usize)?;
            self.free = slot.tpl;
            e.bits = (e.bits & !IN_RING) | (slot.bits & IN_RING);
            i
        } else {
            let i = u32::try_from(self.slab.len()).ok()?;
            if i >= H_V6 {
                return None;
            }
            e.bits &= !IN_RING;
            self.slab.push(e);
            i
        };
        let t = Self::in_tuple(&e);
        if !self.index.insert(hin, idx) {
            self.release(idx);
            return None;
        }
        if Self::has_reply_key(&e) {
            let o = Self::out_tuple(&e);
            let hout = self.hash(true, o.0, o.1, o.2, o.3, o.4);
            if !self.index.insert(hout, idx | REPLY) {
                if let Some((b, s, _)) = self.find_hashed(hin, false, e.bits & CV4 != 0, t) {
                    self.index.remove_at(hin, b, s);
                }
                self.release(idx);
                return None;
            }
        }
        if let Some(slot) = self.slab.get_mut(idx as usize) {
            *slot = e;
        }
        self.len += 1;
        if e.bits & CV4 != 0 {
            self.mapped += 1;
        }
        Some(idx)
    }

    /// Put a slot (already out of the index) on the free list.
    fn release(&mut self, idx: u32) {
        if let Some(slot) = self.slab.get_mut(idx as usize) {
            slot.bits &= IN_RING;
            slot.tpl = self.free;
            self.free = idx;
        }
    }

    /// Remove a live entry from the index and free its slot.
    fn remove(&mut self, idx: u32) -> Option<Entry<A>> {
        let e = *self.slab.get(idx as usize)?;
        if e.bits & LIVE == 0 {
            return None;
        }
        let mapped = e.bits & CV4 != 0;
        let t = Self::in_tuple(&e);
        let hin = self.hash(false, t.0, t.1, t.2, t.3, t.4);
        let found = self.index.find(hin, |v| v == idx);
        if let Some((b, s, _)) = found {
            self.index.remove_at(hin, b, s);
        }
        if Self::has_reply_key(&e) {
            let o = Self::out_tuple(&e);
            let hout = self.hash(true, o.0, o.1, o.2, o.3, o.4);
            if let Some((b, s, _)) = self.index.find(hout, |v| v == idx | REPLY) {
                self.index.remove_at(hout, b, s);
            }
        }
        self.release(idx);
        self.len -= 1;
        if mapped {
            self.mapped -= 1;
        }
        Some(e)
    }

    #[inline(always)]
    fn view(e: &Entry<A>, epoch: u64) -> Conn {
        let cv4 = e.bits & CV4 != 0;
        Conn {
            proto: proto_of(e.bits),
            caddr: e.caddr.to_ip(cv4),
            cport: e.cport,
            vaddr: e.vaddr.to_ip(cv4),
            vport: e.vport,
            raddr: e.raddr.to_ip(e.bits & R4 != 0),
            rport: e.rport,
            dest: DestId(e.dest),
            fwd: fwd_of(e.bits),
            state: state_of(e.bits),
            expires: abs_ms(epoch, e.expires),
            flags: (e.bits >> USER_SHIFT) as u8 & USER_FLAGS_MASK,
            template: (e.tpl != NIL).then_some(TplHandle::from_raw(e.tpl)),
        }
    }

    #[inline(always)]
    fn live(&self, idx: u32) -> Option<&Entry<A>> {
        self.slab.get(idx as usize).filter(|e| e.bits & LIVE != 0)
    }

    fn live_mut(&mut self, idx: u32) -> Option<&mut Entry<A>> {
        self.slab
            .get_mut(idx as usize)
            .filter(|e| e.bits & LIVE != 0)
    }
}

fn abs_ms(epoch: u64, rel: u32) -> Millis {
    (epoch + u64::from(rel)).saturating_mul(TICK_MS)
}

/// One family: store + timer + eviction FIFO.
#[derive(Debug)]
struct Inner<A> {
    store: Store<A>,
    wheel: TimerWheel,
    ring: VecDeque<u32>,
}

impl<A: Family> Inner<A> {
    fn new(capacity: usize, seed: [u64; 4]) -> Self {
        Inner {
            store: Store::new(capacity, seed),
            wheel: TimerWheel::with_capacity(capacity),
            ring: VecDeque::with_capacity(capacity),
        }
    }

    fn memory_regions(&self) -> [std::ops::Range<usize>; 3] {
        [
            crate::shard::reservation(&self.store.slab),
            self.store.index.region(),
            self.wheel.memory_region(),
        ]
    }

    fn insert(&mut self, now: Millis, epoch: u64, e: Entry<A>, hin: u64) -> Option<u32> {
        let idx = self.store.add(e, hin)?;
        self.wheel.schedule(idx, now, abs_ms(epoch, e.expires));
        self.enqueue_if_evictable(idx);
        Some(idx)
    }

    fn enqueue_if_evictable(&mut self, idx: u32) {
        if let Some(e) = self.store.slab.get_mut(idx as usize) {
            if e.bits & (UDP | IN_RING) == 0 && tcp_state::is_evictable(state_of(e.bits)) {
                e.bits |= IN_RING;
                self.ring.push_back(idx);
            }
        }
    }

    fn remove(&mut self, idx: u32) -> Option<Entry<A>> {
        let e = self.store.remove(idx)?;
        self.wheel.cancel(idx);
        Some(e)
    }

    /// Pop FIFO heads until an evictable live entry is found (and removed).
    fn evict(&mut self, scans: &mut usize) -> Option<Entry<A>> {
        while *scans > 0 {
            let idx = self.ring.pop_front()?;
            *scans -= 1;
            let Some(e) = self.store.slab.get_mut(idx as usize) else {
                continue;
            };
            e.bits &= !IN_RING;
            if e.bits & (LIVE | UDP) == LIVE && tcp_state::is_evictable(state_of(e.bits)) {
                return self.remove(idx);
            }
        }
        None
    }

    /// Re-arm to `timeout` from now; reschedule only if it moved earlier.
    fn rearm(&mut self, idx: u32, now: Millis, epoch: u64, timeout: Millis) {
        let rel = rel_tick(epoch, timer::fire_tick(now.saturating_add(timeout)));
        if let Some(e) = self.store.live_mut(idx) {
            let old = e.expires;
            e.expires = rel;
            if rel < old {
                self.wheel.schedule(idx, now, abs_ms(epoch, rel));
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn expire(
        &mut self,
        now: Millis,
        budget: usize,
        epoch: u64,
        t: &Timeouts,
        seen: &mut dyn FnMut(&Conn) -> Option<Millis>,
        cb: &mut dyn FnMut(&Conn),
    ) -> ExpireStats {
        let now_rel = rel_tick(epoch, timer::now_tick(now));
        let Inner { store, wheel, .. } = self;
        let mut expired = 0;
        let visited = wheel.advance(now, budget, |h| {
            let e = store.live(h)?;
            if e.expires > now_rel {
                return Some(abs_ms(epoch, e.expires));
            }
            let c = Store::view(e, epoch);
            // Packets that did not cross the engine (the fast path) count
            // as if they had: the timer runs from the last one.
            if let Some(last) = seen(&c) {
                let timeout = if e.bits & UDP != 0 {
                    tcp_state::udp_timeout_ms(t)
                } else {
                    tcp_state::timeout_ms(state_of(e.bits), t)
                };
                let rel = rel_tick(epoch, timer::fire_tick(last.saturating_add(timeout)));
                if rel > now_rel {
                    if let Some(e) = store.live_mut(h) {
                        e.expires = rel;
                    }
                    return Some(abs_ms(epoch, rel));
                }
            }
            store.remove(h);
            expired += 1;
            cb(&c);
            None
        });
        ExpireStats { visited, expired }
    }

    fn bytes_per_entry(&self, capacity: usize) -> usize {
        let cap = capacity.max(1);
        let fixed = self.store.index.bytes() + TimerWheel::FIXED_BYTES;
        std::mem::size_of::<Entry<A>>()
            + TimerWheel::BYTES_PER_HANDLE
            + std::mem::size_of::<u32>()
            + fixed.div_ceil(cap)
    }

    fn allocated_bytes(&self) -> usize {
        self.store.slab.capacity() * std::mem::size_of::<Entry<A>>()
            + self.store.index.bytes()
            + TimerWheel::FIXED_BYTES
            + self.store.slab.capacity() * TimerWheel::BYTES_PER_HANDLE
            + self.ring.capacity() * std::mem::size_of::<u32>()
    }
}

fn rel_tick(epoch: u64, tick: u64) -> u32 {
    u32::try_from(tick.saturating_sub(epoch)).unwrap_or(u32::MAX)
}

/// A key's hash and family: what [`ConnTable::bucket_addr`] and
/// [`ConnTable::entry_addr`] need to name the memory a lookup will read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WarmKey {
    hash: u64,
    v6: bool,
}

/// The connection table of one shard.
#[derive(Debug)]
pub struct ConnTable {
    v4: Inner<Ipv4Addr>,
    v6: Inner<Ipv6Addr>,
    capacity: usize,
    timeouts: Timeouts,
    secure_tcp: bool,
    /// Wheel tick that relative expiries count from; set by the first call
    /// that passes a time.
    epoch: Option<u64>,
    v6_first: bool,
}

fn random_seed() -> [u64; 4] {
    let s = std::collections::hash_map::RandomState::new();
    [
        s.hash_one(0x51u64),
        s.hash_one(0xA7u64),
        s.hash_one(0x3Cu64),
        s.hash_one(0xE9u64),
    ]
}

impl ConnTable {
    /// A table for at most `capacity` connections (clamped to
    /// [`MAX_CAPACITY`]), with IPVS default timeouts and a random hash seed.
    /// Memory is reserved up front and touched as it is used.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.min(MAX_CAPACITY);
        let seed = random_seed();
        ConnTable {
            v4: Inner::new(capacity, seed),
            v6: Inner::new(capacity, seed),
            capacity,
            timeouts: Timeouts::default(),
            secure_tcp: false,
            epoch: None,
            v6_first: false,
        }
    }

    /// The large reservations (slabs, indexes, timer links) of both
    /// families, for the data plane's huge-page advice.
    pub fn memory_regions(&self) -> Vec<std::ops::Range<usize>> {
        let mut r = self.v4.memory_regions().to_vec();
        r.extend(self.v6.memory_regions());
        r
    }

    /// Set the timeouts used by later updates (existing expiries stay).
    pub fn set_timeouts(&mut self, t: Timeouts) {
        self.timeouts = t;
    }

    /// The timeouts in use.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// Use IPVS's `secure_tcp` transition table (`tcp_states_dos`).
    pub fn set_secure_tcp(&mut self, on: bool) {
        self.secure_tcp = on;
    }

    /// Number of connections.
    pub fn len(&self) -> usize {
        self.v4.store.len + self.v6.store.len
    }

    /// True when there is no connection.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Hard limit on [`ConnTable::len`].
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes per IPv4 connection with the table full: entry + index share +
    /// timer link + FIFO slot (+ fixed wheel heads spread over capacity).
    pub fn bytes_per_entry(&self) -> usize {
        self.v4.bytes_per_entry(self.capacity)
    }

    /// Same for IPv6 connections.
    pub fn bytes_per_entry_v6(&self) -> usize {
        self.v6.bytes_per_entry(self.capacity)
    }

    /// Address space reserved by both families (pages become resident only
    /// when touched, so an unused family costs little real memory).
    pub fn allocated_bytes(&self) -> usize {
        self.v4.allocated_bytes() + self.v6.allocated_bytes()
    }

    fn epoch(&mut self, now: Millis) -> u64 {
        *self.epoch.get_or_insert(timer::now_tick(now))
    }

    fn epoch_or_zero(&self) -> u64 {
        self.epoch.unwrap_or(0)
    }

    /// Find the connection of a client -> VIP packet.
    #[inline]
    pub fn lookup_in(&self, k: &FlowKey) -> Option<ConnHandle> {
        match (k.src, k.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => self
                .v4
                .store
                .find(false, false, (k.proto, s, k.sport, d, k.dport))
                .map(ConnHandle::v4)
                .or_else(|| self.lookup_mapped(k.proto, s, k.sport, d, k.dport)),
            (IpAddr::V6(s), IpAddr::V6(d)) => self
                .v6
                .store
                .find(false, false, (k.proto, s, k.sport, d, k.dport))
                .map(ConnHandle::v6),
            _ => None,
        }
    }

    fn lookup_mapped(
        &self,
        p: Proto,
        s: Ipv4Addr,
        sp: u16,
        d: Ipv4Addr,
        dp: u16,
    ) -> Option<ConnHandle> {
        if self.v6.store.mapped == 0 {
            return None;
        }
        let k = (p, s.to_ipv6_mapped(), sp, d.to_ipv6_mapped(), dp);
        self.v6.store.find(false, true, k).map(ConnHandle::v6)
    }

    /// Find the NAT connection of a real server -> client packet.
    #[inline]
    pub fn lookup_out(&self, k: &FlowKey) -> Option<ConnHandle> {
        match (k.src, k.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => self
                .v4
                .store
                .find(true, false, (k.proto, s, k.sport, d, k.dport))
                .map(ConnHandle::v4),
            (IpAddr::V6(s), IpAddr::V6(d)) => self
                .v6
                .store
                .find(true, false, (k.proto, s, k.sport, d, k.dport))
                .map(ConnHandle::v6),
            _ => None,
        }
    }

    /// What a later lookup of `k` will read (inbound key, or the reply key
    /// of a NAT connection with `reply`), for a prefetching pre-pass over an
    /// RX batch (`Engine::warm_batch`). None for mixed address families.
    #[inline]
    pub fn warm_key(&self, k: &FlowKey, reply: bool) -> Option<WarmKey> {
        let (hash, v6) = match (k.src, k.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => (
                self.v4.store.hash(reply, k.proto, s, k.sport, d, k.dport),
                false,
            ),
            (IpAddr::V6(s), IpAddr::V6(d)) => (
                self.v6.store.hash(reply, k.proto, s, k.sport, d, k.dport),
                true,
            ),
            _ => return None,
        };
        Some(WarmKey { hash, v6 })
    }

    /// The address of the key's home index bucket (one aligned cache line).
    /// Arithmetic only: reads nothing.
    #[inline]
    pub fn bucket_addr(&self, w: WarmKey) -> usize {
        if w.v6 {
            self.v6.store.index.bucket_addr(w.hash)
        } else {
            self.v4.store.index.bucket_addr(w.hash)
        }
    }

    /// The address range of the entry the home bucket's first matching tag
    /// points at (reads the bucket: call it once the bucket is in cache).
    #[inline]
    pub fn entry_addr(&self, w: WarmKey) -> Option<std::ops::Range<usize>> {
        fn range<A: Family>(st: &Store<A>, hash: u64) -> Option<std::ops::Range<usize>> {
            let v = st.index.touch(hash)?;
            let e = st.slab.get((v & !REPLY) as usize)?;
            let start = e as *const Entry<A> as usize;
            Some(start..start + std::mem::size_of::<Entry<A>>())
        }
        if w.v6 {
            range(&self.v6.store, w.hash)
        } else {
            range(&self.v4.store, w.hash)
        }
    }

    /// The address range of the slots the next `n` inserts of a family
    /// (`v6`) will write (see `shard::next_slots`), for a batch's prefetch
    /// of the entries its new connections will fill.
    pub fn next_slots(&self, v6: bool, n: usize) -> std::ops::Range<usize> {
        fn range<A: Family>(st: &Store<A>, n: usize) -> std::ops::Range<usize> {
            super::next_slots(&st.slab, (st.free != NIL).then_some(st.free), n)
        }
        if v6 {
            range(&self.v6.store, n)
        } else {
            range(&self.v4.store, n)
        }
    }

    /// [`ConnTable::lookup_in`] for many keys, overlapping their memory
    /// accesses: for an RX batch. `out[i]` gets the result for `keys[i]`
    /// (extra slots untouched). Per group of 16 keys: prefetch every home
    /// bucket, then every candidate entry, then look each key up; `prefetch`
    /// is the data plane's (`dataplane::mem::prefetch`), or a no-op.
    pub fn lookup_in_batch(
        &self,
        keys: &[FlowKey],
        out: &mut [Option<ConnHandle>],
        prefetch: impl Fn(usize),
    ) {
        const B: usize = 16;
        for (ks, os) in keys.chunks(B).zip(out.chunks_mut(B)) {
            let mut ws = [None; B];
            for (k, w) in ks.iter().zip(ws.iter_mut()) {
                *w = self.warm_key(k, false);
                if let Some(w) = *w {
                    prefetch(self.bucket_addr(w));
                }
            }
            for w in ws.iter().flatten() {
                if let Some(r) = self.entry_addr(*w) {
                    prefetch(r.start);
                    prefetch(r.end - 1);
                }
            }
            for (k, o) in ks.iter().zip(os.iter_mut()) {
                *o = self.lookup_in(k);
            }
        }
    }

    /// Add a connection. TCP starts in NONE (2 s; call
    /// [`ConnTable::update_tcp`] with the first segment), UDP with the UDP
    /// timeout. Non-NAT TCP connections use the INPUT_ONLY table until an
    /// OUTPUT packet is seen. When full, one evictable connection (see the
    /// module docs) is removed first and returned in [`Inserted::evicted`].
    pub fn insert(&mut self, now: Millis, c: NewConn) -> Result<Inserted, InsertError> {
        let epoch = self.epoch(now);
        let timeout = match c.proto {
            Proto::Tcp => tcp_state::timeout_ms(TcpState::None, &self.timeouts),
            Proto::Udp => tcp_state::udp_timeout_ms(&self.timeouts),
        };
        let mut bits =
            fwd_bits(c.fwd) | LIVE | (u16::from(c.flags & USER_FLAGS_MASK) << USER_SHIFT);
        if c.proto == Proto::Udp {
            bits |= UDP;
        }
        if c.fwd != FwdMethod::Nat {
            bits |= NOOUTPUT;
        }
        let expires = rel_tick(epoch, timer::fire_tick(now.saturating_add(timeout)));
        let tpl = c.template.map_or(NIL, TplHandle::raw);
        let v6 = match (c.caddr, c.vaddr, c.raddr) {
            (IpAddr::V4(ca), IpAddr::V4(va), IpAddr::V4(ra)) => {
                let e = Entry {
                    caddr: ca,
                    vaddr: va,
                    raddr: ra,
                    cport: c.cport,
                    vport: c.vport,
                    rport: c.rport,
                    bits,
                    dest: c.dest.0,
                    expires,
                    tpl,
                };
                return self.insert_in(now, epoch, false, |t| &mut t.v4, e, ConnHandle::v4);
            }
            (IpAddr::V4(ca), IpAddr::V4(va), IpAddr::V6(ra)) => Entry {
                caddr: ca.to_ipv6_mapped(),
                vaddr: va.to_ipv6_mapped(),
                raddr: ra,
                cport: c.cport,
                vport: c.vport,
                rport: c.rport,
                bits: bits | CV4,
                dest: c.dest.0,
                expires,
                tpl,
            },
            (IpAddr::V6(ca), IpAddr::V6(va), ra) => {
                let (raddr, r4) = match ra {
                    IpAddr::V6(a) => (a, 0),
                    IpAddr::V4(a) => (a.to_ipv6_mapped(), R4),
                };
                Entry {
                    caddr: ca,
                    vaddr: va,
                    raddr,
                    cport: c.cport,
                    vport: c.vport,
                    rport: c.rport,
                    bits: bits | r4,
                    dest: c.dest.0,
                    expires,
                    tpl,
                }
            }
            _ => return Err(InsertError::MixedFamily),
        };
        self.insert_in(now, epoch, true, |t| &mut t.v6, v6, ConnHandle::v6)
    }

    fn insert_in<A: Family>(
        &mut self,
        now: Millis,
        epoch: u64,
        is_v6: bool,
        inner: fn(&mut ConnTable) -> &mut Inner<A>,
        e: Entry<A>,
        mk: fn(u32) -> ConnHandle,
    ) -> Result<Inserted, InsertError> {
        // The inbound key is hashed once, for the duplicate check and the
        // index insert.
        let hin = {
            let me = inner(self);
            let mapped = e.bits & CV4 != 0;
            let t = Store::in_tuple(&e);
            let hin = me.store.hash(false, t.0, t.1, t.2, t.3, t.4);
            if let Some((_, _, v)) = me.store.find_hashed(hin, false, mapped, t) {
                return Err(InsertError::Exists(mk(v & !REPLY)));
            }
            hin
        };
        let mut evicted = None;
        if self.len() >= self.capacity {
            evicted = self.evict(is_v6);
            if evicted.is_none() {
                return Err(InsertError::Full);
            }
        }
        let idx = inner(self)
            .insert(now, epoch, e, hin)
            .ok_or(InsertError::Full)?;
        Ok(Inserted {
            handle: mk(idx),
            evicted,
        })
    }

    fn evict(&mut self, prefer_v6: bool) -> Option<Conn> {
        let epoch = self.epoch_or_zero();
        let mut scans = EVICT_SCAN;
        for v6 in [prefer_v6, !prefer_v6] {
            let c = if v6 {
                self.v6.evict(&mut scans).map(|e| Store::view(&e, epoch))
            } else {
                self.v4.evict(&mut scans).map(|e| Store::view(&e, epoch))
            };
            if c.is_some() {
                return c;
            }
        }
        None
    }

    /// A copy of the connection, if the handle is live.
    #[inline(always)]
    pub fn get(&self, h: ConnHandle) -> Option<Conn> {
        let epoch = self.epoch_or_zero();
        let i = h.0 & !H_V6;
        if h.0 & H_V6 == 0 {
            self.v4.store.live(i).map(|e| Store::view(e, epoch))
        } else {
            self.v6.store.live(i).map(|e| Store::view(e, epoch))
        }
    }

    fn with_entry<R>(
        &mut self,
        h: ConnHandle,
        f4: impl FnOnce(&mut Inner<Ipv4Addr>, u32) -> R,
        f6: impl FnOnce(&mut Inner<Ipv6Addr>, u32) -> R,
    ) -> R {
        let i = h.0 & !H_V6;
        if h.0 & H_V6 == 0 {
            f4(&mut self.v4, i)
        } else {
            f6(&mut self.v6, i)
        }
    }

    /// Set the engine-owned flag bits (masked with [`USER_FLAGS_MASK`]).
    pub fn set_flags(&mut self, h: ConnHandle, flags: u8) -> bool {
        let bits = u16::from(flags & USER_FLAGS_MASK) << USER_SHIFT;
        let keep = !(u16::from(USER_FLAGS_MASK) << USER_SHIFT);
        self.with_entry(
            h,
            |t, i| {
                t.store
                    .live_mut(i)
                    .map(|e| e.bits = (e.bits & keep) | bits)
                    .is_some()
            },
            |t, i| {
                t.store
                    .live_mut(i)
                    .map(|e| e.bits = (e.bits & keep) | bits)
                    .is_some()
            },
        )
    }

    /// Set or clear the controlling template.
    pub fn set_template(&mut self, h: ConnHandle, tpl: Option<TplHandle>) -> bool {
        let raw = tpl.map_or(NIL, TplHandle::raw);
        self.with_entry(
            h,
            |t, i| t.store.live_mut(i).map(|e| e.tpl = raw).is_some(),
            |t, i| t.store.live_mut(i).map(|e| e.tpl = raw).is_some(),
        )
    }

    /// Apply a TCP segment with header `tcp_flags` seen in direction `dir`:
    /// IPVS's transition, and re-arm to the new state's timeout. For non-NAT
    /// connections `Input` is taken as `InputOnly` until an `Output` packet is
    /// seen. Returns `(old, new)`, or `None` for a dead handle or a UDP
    /// connection.
    #[inline]
    pub fn update_tcp(
        &mut self,
        h: ConnHandle,
        now: Millis,
        dir: Dir,
        tcp_flags: u8,
    ) -> Option<(TcpState, TcpState)> {
        let epoch = self.epoch(now);
        let secure = self.secure_tcp;
        let t = self.timeouts;
        self.with_entry(
            h,
            |inner, i| update_tcp_in(inner, i, now, epoch, dir, tcp_flags, secure, &t),
            |inner, i| update_tcp_in(inner, i, now, epoch, dir, tcp_flags, secure, &t),
        )
    }

    /// Re-arm to the current state's timeout (UDP: the UDP timeout).
    #[inline]
    /// Put a restored connection back in TCP state `state` with `left` ms to
    /// live (a state file read at start); UDP entries only get the timer.
    pub fn restore(&mut self, h: ConnHandle, now: Millis, state: TcpState, left: Millis) -> bool {
        let epoch = self.epoch(now);
        self.with_entry(
            h,
            |inner, i| restore_in(inner, i, now, epoch, state, left),
            |inner, i| restore_in(inner, i, now, epoch, state, left),
        )
    }

    pub fn touch(&mut self, h: ConnHandle, now: Millis) -> bool {
        let epoch = self.epoch(now);
        let t = self.timeouts;
        self.with_entry(
            h,
            |inner, i| touch_in(inner, i, now, epoch, &t),
            |inner, i| touch_in(inner, i, now, epoch, &t),
        )
    }

    /// Remove a connection (no callback); returns it.
    pub fn remove(&mut self, h: ConnHandle) -> Option<Conn> {
        let epoch = self.epoch_or_zero();
        self.with_entry(
            h,
            |t, i| t.remove(i).map(|e| Store::view(&e, epoch)),
            |t, i| t.remove(i).map(|e| Store::view(&e, epoch)),
        )
    }

    /// Expire connections whose time has come, visiting at most `budget`
    /// timer entries; `cb` sees each expired connection (already removed).
    /// Entries whose expiry moved later are re-armed, not expired.
    pub fn expire<F: FnMut(&Conn)>(&mut self, now: Millis, budget: usize, cb: F) -> ExpireStats {
        self.expire_seen(now, budget, |_| None, cb)
    }

    /// [`ConnTable::expire`], asking `seen` first about each connection
    /// whose time has come: `Some(t)` (the last packet forwarded outside the
    /// table, the fast path) re-arms it from `t` with its state's timeout
    /// when that ends later than now.
    pub fn expire_seen<S, F>(
        &mut self,
        now: Millis,
        budget: usize,
        mut seen: S,
        mut cb: F,
    ) -> ExpireStats
    where
        S: FnMut(&Conn) -> Option<Millis>,
        F: FnMut(&Conn),
    {
        let epoch = self.epoch(now);
        let t = self.timeouts;
        self.v6_first = !self.v6_first;
        let (a, b) = if self.v6_first {
            let a = self.v6.expire(now, budget, epoch, &t, &mut seen, &mut cb);
            let b = self
                .v4
                .expire(now, budget - a.visited, epoch, &t, &mut seen, &mut cb);
            (a, b)
        } else {
            let a = self.v4.expire(now, budget, epoch, &t, &mut seen, &mut cb);
            let b = self
                .v6
                .expire(now, budget - a.visited, epoch, &t, &mut seen, &mut cb);
            (a, b)
        };
        ExpireStats {
            visited: a.visited + b.visited,
            expired: a.expired + b.expired,
        }
    }

    /// Call `f` for every connection (O(table); for listing and bulk changes).
    pub fn for_each(&self, mut f: impl FnMut(ConnHandle, &Conn)) {
        let epoch = self.epoch_or_zero();
        for (i, e) in self.v4.store.slab.iter().enumerate() {
            if e.bits & LIVE != 0 {
                f(ConnHandle::v4(i as u32), &Store::view(e, epoch));
            }
        }
        for (i, e) in self.v6.store.slab.iter().enumerate() {
            if e.bits & LIVE != 0 {
                f(ConnHandle::v6(i as u32), &Store::view(e, epoch));
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
#[inline]
fn update_tcp_in<A: Family>(
    inner: &mut Inner<A>,
    i: u32,
    now: Millis,
    epoch: u64,
    dir: Dir,
    tcp_flags: u8,
    secure: bool,
    t: &Timeouts,
) -> Option<(TcpState, TcpState)> {
    let e = inner.store.live_mut(i)?;
    if e.bits & UDP != 0 {
        return None;
    }
    let mut dir = dir;
    if e.bits & NOOUTPUT != 0 {
        if dir == Dir::Output {
            e.bits &= !NOOUTPUT;
        } else {
            dir = Dir::InputOnly;
        }
    }
    let old = state_of(e.bits);
    let new = tcp_state::transition(secure, dir, old, tcp_flags);
    e.bits = (e.bits & !ST_MASK) | new as u16;
    inner.rearm(i, now, epoch, tcp_state::timeout_ms(new, t));
    if new != old {
        inner.enqueue_if_evictable(i);
    }
    Some((old, new))
}

fn restore_in<A: Family>(
    inner: &mut Inner<A>,
    i: u32,
    now: Millis,
    epoch: u64,
    state: TcpState,
    left: Millis,
) -> bool {
    let Some(e) = inner.store.live_mut(i) else {
        return false;
    };
    if e.bits & UDP == 0 {
        e.bits = (e.bits & !ST_MASK) | state as u16;
    }
    inner.rearm(i, now, epoch, left.max(1));
    inner.enqueue_if_evictable(i);
    true
}

fn touch_in<A: Family>(
    inner: &mut Inner<A>,
    i: u32,
    now: Millis,
    epoch: u64,
    t: &Timeouts,
) -> bool {
    let Some(e) = inner.store.live(i) else {
        return false;
    };
    let timeout = if e.bits & UDP != 0 {
        tcp_state::udp_timeout_ms(t)
    } else {
        tcp_state::timeout_ms(state_of(e.bits), t)
    };
    inner.rearm(i, now, epoch, timeout);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_sizes() {
        assert_eq!(std::mem::size_of::<Entry<Ipv4Addr>>(), 32);
        assert_eq!(std::mem::size_of::<Entry<Ipv6Addr>>(), 68);
    }
}
