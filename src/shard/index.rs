//! The hash index of the connection and template tables: bucketed open
//! addressing over 64-byte buckets (F14-style, no tombstones).
//!
//! Each bucket is one aligned cache line holding 7 `(tag, value)` pairs and
//! an overflow count (how many keys whose home is this bucket or an earlier
//! one live further on). A lookup is one hash and, almost always, one bucket
//! line; the tag (32 bits of the hash, never 0) filters the values the caller
//! compares. Tags and values share the line, so an insert after a missed
//! lookup touches no other memory, and [`Index::bucket_addr`] names the one
//! line a batch can prefetch. Values are the caller's (slab slots).

const BUCKET_WORDS: usize = 16;
const BUCKET_SLOTS: usize = 7;
const OVF: usize = 7;
const HANDLES: usize = 8;

/// Bucketed open addressing with overflow counts (no tombstones).
#[derive(Debug)]
pub(crate) struct Index {
    words: Vec<u32>,
    base: usize,
    nb: usize,
    len: usize,
}

impl Index {
    pub(crate) fn new(max_keys: usize) -> Index {
        let nb = max_keys.div_ceil(6).max(1);
        let words = vec![0u32; nb * BUCKET_WORDS + BUCKET_WORDS];
        let misalign = (words.as_ptr() as usize) % 64;
        let base = if misalign == 0 {
            0
        } else {
            (64 - misalign) / 4
        };
        Index {
            words,
            base,
            nb,
            len: 0,
        }
    }

    pub(crate) fn bytes(&self) -> usize {
        self.words.len() * 4
    }

    /// The whole allocation (for the data plane's huge-page advice).
    pub(crate) fn region(&self) -> std::ops::Range<usize> {
        crate::shard::reservation(&self.words)
    }

    /// The address of `hash`'s home bucket (one aligned cache line), for a
    /// prefetch. Arithmetic only: reads nothing.
    #[inline]
    pub(crate) fn bucket_addr(&self, hash: u64) -> usize {
        let o = self.base + self.home(hash) * BUCKET_WORDS;
        self.words.as_ptr() as usize + o * std::mem::size_of::<u32>()
    }

    #[inline]
    fn home(&self, hash: u64) -> usize {
        ((u128::from(hash) * self.nb as u128) >> 64) as usize
    }

    #[inline]
    fn tag(hash: u64) -> u32 {
        hash as u32 | 1
    }

    #[inline]
    fn bucket(&self, b: usize) -> Option<&[u32; BUCKET_WORDS]> {
        let o = self.base + b * BUCKET_WORDS;
        self.words.get(o..o + BUCKET_WORDS)?.try_into().ok()
    }

    #[inline]
    fn bucket_mut(&mut self, b: usize) -> Option<&mut [u32; BUCKET_WORDS]> {
        let o = self.base + b * BUCKET_WORDS;
        self.words.get_mut(o..o + BUCKET_WORDS)?.try_into().ok()
    }

    /// Load the home bucket (a software prefetch by plain load); returns the
    /// value stored in the first slot whose tag matches, if any.
    // Buckets are fixed-size arrays indexed by slot constants below
    // BUCKET_SLOTS / HANDLES / OVF, all within the array: cannot panic.
    #[allow(clippy::indexing_slicing)]
    #[inline]
    pub(crate) fn touch(&self, hash: u64) -> Option<u32> {
        let w = self.bucket(self.home(hash))?;
        let tag = Self::tag(hash);
        (0..BUCKET_SLOTS)
            .find(|&s| w[s] == tag)
            .map(|s| w[HANDLES + s])
    }

    #[allow(clippy::indexing_slicing)] // fixed-size bucket, constant slots
    #[inline]
    pub(crate) fn find(
        &self,
        hash: u64,
        mut eq: impl FnMut(u32) -> bool,
    ) -> Option<(usize, usize, u32)> {
        let tag = Self::tag(hash);
        let mut b = self.home(hash);
        for _ in 0..self.nb {
            let w = self.bucket(b)?;
            for s in 0..BUCKET_SLOTS {
                if w[s] == tag && eq(w[HANDLES + s]) {
                    return Some((b, s, w[HANDLES + s]));
                }
            }
            if w[OVF] == 0 {
                return None;
            }
            b += 1;
            if b == self.nb {
                b = 0;
            }
        }
        None
    }

    #[allow(clippy::indexing_slicing)] // fixed-size bucket, constant slots
    pub(crate) fn insert(&mut self, hash: u64, val: u32) -> bool {
        if self.len >= self.nb * BUCKET_SLOTS {
            return false;
        }
        let tag = Self::tag(hash);
        let mut b = self.home(hash);
        for _ in 0..self.nb {
            let Some(w) = self.bucket_mut(b) else {
                return false;
            };
            if let Some(s) = (0..BUCKET_SLOTS).find(|&s| w[s] == 0) {
                w[s] = tag;
                w[HANDLES + s] = val;
                self.len += 1;
                return true;
            }
            w[OVF] = w[OVF].wrapping_add(1);
            b += 1;
            if b == self.nb {
                b = 0;
            }
        }
        false
    }

    pub(crate) fn remove_at(&mut self, hash: u64, bucket: usize, slot: usize) {
        let mut b = self.home(hash);
        while b != bucket {
            if let Some(w) = self.bucket_mut(b) {
                w[OVF] = w[OVF].wrapping_sub(1);
            }
            b += 1;
            if b == self.nb {
                b = 0;
            }
        }
        if let Some(w) = self.bucket_mut(bucket) {
            if let Some(t) = w.get_mut(slot) {
                *t = 0;
            }
        }
        self.len -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_is_cache_line_aligned() {
        for n in [1, 10, 1000, 100_000] {
            let ix = Index::new(n);
            let p = ix.words.as_ptr() as usize + ix.base * 4;
            assert_eq!(p % 64, 0);
            assert_eq!(ix.bucket_addr(0), p);
            assert!(ix.nb * BUCKET_SLOTS >= n);
        }
    }

    #[test]
    fn index_overflow_counts_return_to_zero() {
        // A tiny index forces probing past full buckets.
        let mut ix = Index::new(12);
        let nb = ix.nb;
        let hashes: Vec<u64> = (0..(nb * BUCKET_SLOTS) as u64).map(|i| i << 1).collect();
        for (i, h) in hashes.iter().enumerate() {
            assert!(ix.insert(*h, i as u32));
        }
        assert!(!ix.insert(99, 99), "no room left");
        for (i, h) in hashes.iter().enumerate() {
            let (b, s, v) = ix.find(*h, |v| v == i as u32).unwrap();
            assert_eq!(v, i as u32);
            ix.remove_at(*h, b, s);
        }
        assert_eq!(ix.len, 0);
        for b in 0..nb {
            assert_eq!(ix.bucket(b).unwrap()[OVF], 0);
        }
    }
}
