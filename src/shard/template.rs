//! Persistence templates, keyed as IPVS keys them, with IPVS's rule that a
//! template never expires while it controls connections.
//!
//! A template maps a (masked) client to the real server it was given. Each
//! new connection re-arms it to the full persistence timeout
//! ([`TemplateTable::rearm`]) and [`TemplateTable::attach`]es to it; the
//! engine [`TemplateTable::detach`]es when the connection goes away. When the
//! timer of a template that still controls connections fires, the template is
//! kept and checked again [`TEMPLATE_RECHECK_MS`] later (IPVS sets the
//! template's timeout to 60 s in `ip_vs_conn_expire` in that case).
//!
//! Storage: a slab of entries, the bucketed [`Index`] the connection table
//! uses (one cache line per lookup or insert, and a bucket address a batch
//! can prefetch) over a random-seeded hash, and a [`TimerWheel`] with lazy
//! re-arming.

use std::hash::BuildHasher;
use std::net::IpAddr;

use hashbrown::DefaultHashBuilder;

use super::index::Index;
use super::timer::{self, ExpireStats, TimerWheel};
use crate::service::model::{DestId, Millis, Proto};

/// Delay before a template that still controls connections is checked again.
pub const TEMPLATE_RECHECK_MS: Millis = 60_000;

/// Largest capacity a template table accepts (larger requests are clamped).
pub const MAX_TPL_CAPACITY: usize = 1 << 30;

/// A template's place in its table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TplHandle(u32);

impl TplHandle {
    /// The raw value (connections store it in 4 bytes).
    pub const fn raw(self) -> u32 {
        self.0
    }
    /// Rebuild from [`TplHandle::raw`].
    pub const fn from_raw(v: u32) -> Self {
        TplHandle(v)
    }
}

/// What identifies a persistence template (IPVS `ip_vs_ct_in_get` keys).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TemplateKey {
    /// `proto client/mask VIP:vport`; `vport` is 0 for port-0 services.
    Addr {
        proto: Proto,
        client_masked: IpAddr,
        vip: IpAddr,
        vport: u16,
    },
    /// Firewall-mark services: `client/mask mark`.
    Fwmark { client_masked: IpAddr, mark: u32 },
}

/// One persistence template.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Template {
    key: TemplateKey,
    /// The real server the client sticks to.
    pub dest: DestId,
    pub raddr: IpAddr,
    /// `None` when the real server takes the packet's own port.
    pub rport: Option<u16>,
    expires: Millis,
    controls: u32,
}

impl Template {
    /// The key it is indexed by.
    pub fn key(&self) -> &TemplateKey {
        &self.key
    }
    /// When its timer runs out (it stays while [`Template::controls`] > 0).
    pub fn expires(&self) -> Millis {
        self.expires
    }
    /// Number of live connections it controls.
    pub fn controls(&self) -> u32 {
        self.controls
    }
}

/// Why a template insert failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TplInsertError {
    /// The table holds `capacity` templates.
    #[error("template table full")]
    Full,
    /// A template with this key exists.
    #[error("template already exists")]
    Exists(TplHandle),
}

#[derive(Clone, Copy, Debug)]
enum Slot {
    Used(Template),
    Free(u32),
}

const NIL: u32 = u32::MAX;

/// The persistence templates of one shard.
#[derive(Debug)]
pub struct TemplateTable {
    index: Index,
    slab: Vec<Slot>,
    free: u32,
    len: usize,
    capacity: usize,
    hasher: DefaultHashBuilder,
    wheel: TimerWheel,
}

fn used(slab: &[Slot], i: u32) -> Option<&Template> {
    match slab.get(i as usize) {
        Some(Slot::Used(t)) => Some(t),
        _ => None,
    }
}

impl TemplateTable {
    /// Call `f` for every template (O(table); for listing).
    pub fn for_each(&self, mut f: impl FnMut(&Template)) {
        for slot in &self.slab {
            if let Slot::Used(t) = slot {
                f(t);
            }
        }
    }

    /// A table for at most `capacity` templates.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.min(MAX_TPL_CAPACITY);
        TemplateTable {
            index: Index::new(capacity),
            slab: Vec::with_capacity(capacity),
            free: NIL,
            len: 0,
            capacity,
            hasher: DefaultHashBuilder::default(),
            wheel: TimerWheel::with_capacity(capacity),
        }
    }

    /// The large reservations (slab, index, timer links), for the data
    /// plane's huge-page advice.
    pub fn memory_regions(&self) -> Vec<std::ops::Range<usize>> {
        vec![
            crate::shard::reservation(&self.slab),
            self.index.region(),
            self.wheel.memory_region(),
        ]
    }

    /// Number of templates.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there is no template.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Hard limit on [`TemplateTable::len`].
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes per template with the table full (slab + index + timer link).
    pub fn bytes_per_entry(&self) -> usize {
        let cap = self.capacity.max(1);
        let index = self.index.bytes();
        std::mem::size_of::<Slot>()
            + TimerWheel::BYTES_PER_HANDLE
            + (index + TimerWheel::FIXED_BYTES).div_ceil(cap)
    }

    /// The hash of `key` in this table, for [`TemplateTable::lookup_hashed`]
    /// and [`TemplateTable::insert_hashed`] (a miss followed by an insert
    /// hashes the key once).
    #[inline]
    pub fn hash(&self, key: &TemplateKey) -> u64 {
        self.hasher.hash_one(key)
    }

    /// Find the template for `key`.
    #[inline]
    pub fn lookup(&self, key: &TemplateKey) -> Option<TplHandle> {
        self.lookup_hashed(self.hash(key), key)
    }

    /// [`TemplateTable::lookup`] with `hash` = [`TemplateTable::hash`]`(key)`.
    #[inline]
    pub fn lookup_hashed(&self, hash: u64, key: &TemplateKey) -> Option<TplHandle> {
        let slab = &self.slab;
        self.index
            .find(hash, |i| used(slab, i).is_some_and(|t| t.key == *key))
            .map(|(_, _, i)| TplHandle(i))
    }

    /// The address of `hash`'s index bucket (one cache line), for a batch's
    /// prefetch. Arithmetic only: reads nothing.
    #[inline]
    pub fn bucket_addr(&self, hash: u64) -> usize {
        self.index.bucket_addr(hash)
    }

    /// The address range of the slots the next `n` inserts will write (see
    /// `shard::next_slots`).
    pub fn next_slots(&self, n: usize) -> std::ops::Range<usize> {
        let free = (self.free != NIL).then_some(self.free);
        super::next_slots(&self.slab, free, n)
    }

    /// Add a template for `key` expiring `timeout` ms from `now`, with no
    /// controlled connection yet.
    pub fn insert(
        &mut self,
        now: Millis,
        key: TemplateKey,
        dest: DestId,
        raddr: IpAddr,
        rport: Option<u16>,
        timeout: Millis,
    ) -> Result<TplHandle, TplInsertError> {
        let hash = self.hash(&key);
        self.insert_hashed(hash, now, key, dest, raddr, rport, timeout)
    }

    /// [`TemplateTable::insert`] with `hash` = [`TemplateTable::hash`]`(&key)`.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub fn insert_hashed(
        &mut self,
        hash: u64,
        now: Millis,
        key: TemplateKey,
        dest: DestId,
        raddr: IpAddr,
        rport: Option<u16>,
        timeout: Millis,
    ) -> Result<TplHandle, TplInsertError> {
        if let Some(h) = self.lookup_hashed(hash, &key) {
            return Err(TplInsertError::Exists(h));
        }
        if self.len >= self.capacity {
            return Err(TplInsertError::Full);
        }
        let t = Template {
            key,
            dest,
            raddr,
            rport,
            expires: now.saturating_add(timeout),
            controls: 0,
        };
        let idx = if self.free != NIL {
            let i = self.free;
            match self.slab.get_mut(i as usize) {
                Some(slot @ Slot::Free(_)) => {
                    if let Slot::Free(next) = *slot {
                        self.free = next;
                    }
                    *slot = Slot::Used(t);
                }
                _ => return Err(TplInsertError::Full),
            }
            i
        } else {
            let i = u32::try_from(self.slab.len()).map_err(|_| TplInsertError::Full)?;
            if i > super::timer::MAX_HANDLE {
                return Err(TplInsertError::Full);
            }
            self.slab.push(Slot::Used(t));
            i
        };
        if !self.index.insert(hash, idx) {
            // Cannot happen (the index has room for more than `capacity`
            // keys); give the slot back rather than lose it.
            if let Some(slot) = self.slab.get_mut(idx as usize) {
                *slot = Slot::Free(self.free);
                self.free = idx;
            }
            return Err(TplInsertError::Full);
        }
        self.len += 1;
        self.wheel.schedule(idx, now, t.expires);
        Ok(TplHandle(idx))
    }

    /// The template, if the handle is live.
    #[inline]
    pub fn get(&self, h: TplHandle) -> Option<&Template> {
        used(&self.slab, h.0)
    }

    /// Mutable access (dest/raddr/rport; the key and timers stay under the
    /// table's control).
    pub fn get_mut(&mut self, h: TplHandle) -> Option<&mut Template> {
        match self.slab.get_mut(h.0 as usize) {
            Some(Slot::Used(t)) => Some(t),
            _ => None,
        }
    }

    /// Re-arm to expire `timeout` ms from `now` (each new connection re-arms
    /// its template to the full persistence timeout).
    pub fn rearm(&mut self, h: TplHandle, now: Millis, timeout: Millis) -> bool {
        let Some(Slot::Used(t)) = self.slab.get_mut(h.0 as usize) else {
            return false;
        };
        let old = t.expires;
        t.expires = now.saturating_add(timeout);
        if t.expires < old {
            self.wheel.schedule(h.0, now, t.expires);
        }
        true
    }

    /// One more connection controlled by the template.
    pub fn attach(&mut self, h: TplHandle) -> bool {
        self.get_mut(h)
            .map(|t| t.controls = t.controls.saturating_add(1))
            .is_some()
    }

    /// One connection fewer (saturates at 0).
    pub fn detach(&mut self, h: TplHandle) -> bool {
        self.get_mut(h)
            .map(|t| t.controls = t.controls.saturating_sub(1))
            .is_some()
    }

    /// Remove a template now, whatever it controls; returns it.
    pub fn remove(&mut self, h: TplHandle) -> Option<Template> {
        let t = *self.get(h)?;
        self.wheel.cancel(h.0);
        Self::unlink(
            &mut self.index,
            &mut self.slab,
            &mut self.free,
            &self.hasher,
            h.0,
            &t,
        );
        self.len -= 1;
        Some(t)
    }

    fn unlink(
        index: &mut Index,
        slab: &mut [Slot],
        free: &mut u32,
        hasher: &DefaultHashBuilder,
        idx: u32,
        t: &Template,
    ) {
        let hash = hasher.hash_one(t.key);
        if let Some((b, s, _)) = index.find(hash, |i| i == idx) {
            index.remove_at(hash, b, s);
        }
        if let Some(slot) = slab.get_mut(idx as usize) {
            *slot = Slot::Free(*free);
            *free = idx;
        }
    }

    /// Expire templates whose time has come, visiting at most `budget` timer
    /// entries. A template that still controls connections is kept and
    /// checked again [`TEMPLATE_RECHECK_MS`] later; one whose expiry moved
    /// later is re-armed. `cb` sees each expired template (already removed).
    pub fn expire<F: FnMut(&Template)>(
        &mut self,
        now: Millis,
        budget: usize,
        mut cb: F,
    ) -> ExpireStats {
        let TemplateTable {
            index,
            slab,
            free,
            len,
            hasher,
            wheel,
            ..
        } = self;
        let mut expired = 0;
        let visited = wheel.advance(now, budget, |h| {
            let t = *used(slab, h)?;
            // Not due yet by the wheel's rule (a timer fires at the first
            // tick at or after its time), whichever timer brought it here:
            // an expiry moved later leaves its earlier timer behind (lazy
            // re-arming), and that one must not expire it sooner than a
            // timer set for the new time would.
            if timer::fire_tick(t.expires) > timer::now_tick(now) {
                return Some(t.expires);
            }
            if t.controls > 0 {
                let at = now.saturating_add(TEMPLATE_RECHECK_MS);
                if let Some(Slot::Used(m)) = slab.get_mut(h as usize) {
                    m.expires = at;
                }
                return Some(at);
            }
            Self::unlink(index, slab, free, hasher, h, &t);
            *len -= 1;
            expired += 1;
            cb(&t);
            None
        });
        ExpireStats { visited, expired }
    }
}
