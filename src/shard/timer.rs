//! A hashed timer wheel of `u32` entry handles with lazy re-arming.
//!
//! - Granularity: one tick is [`TICK_MS`] = 64 ms (about 1/16 s). A timer set
//!   for time `at` fires at the first tick boundary at or after `at`: never
//!   early, at most 64 ms late (plus whatever backlog the caller's budget
//!   leaves).
//! - Span: [`WHEEL_SLOTS`] = 16384 slots, about 17.5 minutes, so every default
//!   TCP/UDP timeout fits in one turn. A timer further out (long persistence,
//!   up to days) is parked at the horizon and re-armed when it fires there:
//!   one extra visit per 17.5 minutes of remaining time.
//! - Each slot is an intrusive doubly linked list through a per-handle
//!   `(next, prev)` array: 8 bytes per handle, O(1) schedule and cancel, and a
//!   handle is in at most one slot at a time.
//! - [`TimerWheel::advance`] pops the handles of every due slot and asks the
//!   owner what to do: `None` expires it, `Some(t)` re-arms it at `t`. So the
//!   owner keeps the true expiry in its entry and only moves the timer when it
//!   fires (lazy re-arming). Cost is proportional to the handles visited in
//!   due slots plus the ticks elapsed, never to the table size.

use crate::service::model::Millis;

/// Work done by one expiry pass over a wheel (the connection or template
/// table's `expire`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExpireStats {
    /// Timer entries looked at (expired + lazily re-armed).
    pub visited: usize,
    /// Entries (connections, templates) removed.
    pub expired: usize,
}

/// Wheel tick in ms (a power of two).
pub const TICK_MS: Millis = 1 << TICK_SHIFT;
/// log2 of [`TICK_MS`].
pub const TICK_SHIFT: u32 = 6;
/// Number of slots (a power of two): span = `WHEEL_SLOTS * TICK_MS`.
pub const WHEEL_SLOTS: usize = 1 << 14;
const MASK: u64 = WHEEL_SLOTS as u64 - 1;

/// Largest handle the wheel accepts.
pub const MAX_HANDLE: u32 = (1 << 31) - 2;

const NIL: u32 = u32::MAX;
/// `prev` of a list's first element: `HEAD | slot`.
const HEAD: u32 = 1 << 31;
/// `prev` of a handle that is in no slot.
const UNLINKED: u32 = u32::MAX;

/// The tick a timer for `at` fires in: `ceil(at / TICK_MS)`.
pub const fn fire_tick(at: Millis) -> u64 {
    at.div_ceil(TICK_MS)
}

/// The last tick completed at time `now`: `floor(now / TICK_MS)`.
pub const fn now_tick(now: Millis) -> u64 {
    now >> TICK_SHIFT
}

#[derive(Clone, Copy, Debug)]
struct Link {
    next: u32,
    prev: u32,
}

const FREE_LINK: Link = Link {
    next: NIL,
    prev: UNLINKED,
};

/// A hashed timer wheel over handles `0..=MAX_HANDLE`.
#[derive(Debug)]
pub struct TimerWheel {
    heads: Vec<u32>,
    links: Vec<Link>,
    /// Next tick to process; slots hold ticks `cur .. cur + WHEEL_SLOTS`.
    cur: u64,
    len: usize,
}

impl Default for TimerWheel {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl TimerWheel {
    /// An empty wheel, with room reserved for `n` handles (the per-handle
    /// array grows on demand beyond that).
    pub fn with_capacity(n: usize) -> Self {
        TimerWheel {
            heads: vec![NIL; WHEEL_SLOTS],
            links: Vec::with_capacity(n),
            cur: 0,
            len: 0,
        }
    }

    /// The per-handle array's reservation (see [`crate::shard::reservation`]).
    pub fn memory_region(&self) -> std::ops::Range<usize> {
        crate::shard::reservation(&self.links)
    }

    /// Number of scheduled handles.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no handle is scheduled.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes used per handle (the link array), excluding the fixed slot heads.
    pub const BYTES_PER_HANDLE: usize = std::mem::size_of::<Link>();

    /// Bytes of the fixed slot-head array.
    pub const FIXED_BYTES: usize = WHEEL_SLOTS * std::mem::size_of::<u32>();

    /// Whether `h` is in a slot.
    pub fn is_scheduled(&self, h: u32) -> bool {
        self.links
            .get(h as usize)
            .is_some_and(|l| l.prev != UNLINKED)
    }

    /// The next tick `advance` will process.
    pub fn current_tick(&self) -> u64 {
        self.cur
    }

    /// (Re)schedule `h` to fire at `at` (moving it if already scheduled).
    /// `now` only lets an idle wheel catch up with the clock. Times in the
    /// past fire in the first tick not yet processed; times beyond the span are parked at
    /// the horizon. Returns false (and does nothing) if `h > MAX_HANDLE`.
    pub fn schedule(&mut self, h: u32, now: Millis, at: Millis) -> bool {
        if h > MAX_HANDLE {
            return false;
        }
        self.cancel(h);
        if self.len == 0 {
            self.cur = self.cur.max(now_tick(now));
        }
        let t = fire_tick(at).clamp(self.cur, self.cur + MASK);
        self.link(h, t);
        true
    }

    /// Remove `h` from its slot. Returns whether it was scheduled.
    pub fn cancel(&mut self, h: u32) -> bool {
        let Some(&Link { next, prev }) = self.links.get(h as usize) else {
            return false;
        };
        if prev == UNLINKED {
            return false;
        }
        if prev & HEAD != 0 {
            if let Some(head) = self.heads.get_mut((prev & !HEAD) as usize) {
                *head = next;
            }
        } else if let Some(p) = self.links.get_mut(prev as usize) {
            p.next = next;
        }
        if let Some(n) = self.links.get_mut(next as usize) {
            n.prev = prev;
        }
        if let Some(l) = self.links.get_mut(h as usize) {
            *l = FREE_LINK;
        }
        self.len -= 1;
        true
    }

    fn link(&mut self, h: u32, tick: u64) {
        let slot = (tick & MASK) as usize;
        let hi = h as usize;
        if hi >= self.links.len() {
            self.links.resize(hi + 1, FREE_LINK);
        }
        let old = self.heads.get(slot).copied().unwrap_or(NIL);
        if let Some(n) = self.links.get_mut(old as usize) {
            n.prev = h;
        }
        if let Some(l) = self.links.get_mut(hi) {
            *l = Link {
                next: old,
                prev: HEAD | slot as u32,
            };
        }
        if let Some(head) = self.heads.get_mut(slot) {
            *head = h;
        }
        self.len += 1;
    }

    /// Process due slots up to `now`, visiting at most `budget` handles.
    /// Each visited handle is unlinked and passed to `f`: `None` leaves it
    /// unscheduled (expired), `Some(at)` re-arms it at `at` (no earlier than
    /// the next tick). Returns the number of handles visited; when the budget
    /// runs out, the rest stays due and is visited by the next call.
    pub fn advance<F>(&mut self, now: Millis, budget: usize, mut f: F) -> usize
    where
        F: FnMut(u32) -> Option<Millis>,
    {
        let target = now_tick(now);
        let mut visited = 0;
        while self.cur <= target {
            if self.len == 0 {
                self.cur = target + 1;
                break;
            }
            // Far behind: all entries are due; skip whole turns (slot
            // positions are unchanged modulo the span).
            let behind = target - self.cur;
            if behind >= 2 * (MASK + 1) {
                self.cur += (behind / (MASK + 1) - 1) * (MASK + 1);
            }
            let slot = (self.cur & MASK) as usize;
            loop {
                let h = self.heads.get(slot).copied().unwrap_or(NIL);
                if h == NIL {
                    break;
                }
                if visited >= budget {
                    return visited;
                }
                visited += 1;
                self.cancel(h);
                if let Some(at) = f(h) {
                    let t = fire_tick(at).clamp(self.cur + 1, self.cur + MASK);
                    self.link(h, t);
                }
            }
            self.cur += 1;
        }
        visited
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_at_first_tick_boundary_after_at() {
        let mut w = TimerWheel::with_capacity(4);
        assert!(w.schedule(1, 0, 1000));
        // 1000 ms -> tick ceil(1000/64) = 16 -> due at 1024 ms.
        let mut fired = vec![];
        w.advance(1023, usize::MAX, |h| {
            fired.push(h);
            None
        });
        assert!(fired.is_empty());
        w.advance(1024, usize::MAX, |h| {
            fired.push(h);
            None
        });
        assert_eq!(fired, vec![1]);
        assert!(!w.is_scheduled(1));
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn cancel_and_reschedule_move_the_handle() {
        let mut w = TimerWheel::with_capacity(4);
        w.schedule(0, 0, 500);
        w.schedule(1, 0, 500);
        w.schedule(2, 0, 500);
        assert!(w.cancel(1));
        assert!(!w.cancel(1));
        w.schedule(2, 0, 5000);
        assert_eq!(w.len(), 2);
        let mut fired = vec![];
        w.advance(1000, usize::MAX, |h| {
            fired.push(h);
            None
        });
        assert_eq!(fired, vec![0]);
        w.advance(5120, usize::MAX, |h| {
            fired.push(h);
            None
        });
        assert_eq!(fired, vec![0, 2]);
    }

    #[test]
    fn rejects_out_of_range_handles() {
        let mut w = TimerWheel::default();
        assert!(!w.schedule(MAX_HANDLE + 1, 0, 10));
        assert!(!w.is_scheduled(MAX_HANDLE + 1));
        assert_eq!(w.len(), 0);
    }
}
