//! Internet checksum (RFC 1071), pseudo-header sums and RFC 1624
//! incremental updates.
//!
//! Partial sums are kept as `u32`/`u64` one's-complement accumulators and
//! folded to 16 bits only at the end. A valid checksum field makes the
//! folded sum of its whole range equal `0xffff`.

/// One's-complement sum of `data` (big-endian 16-bit words, an odd last byte
/// padded with zero), added to `initial`. Not folded, not complemented.
#[inline]
pub fn sum(data: &[u8], initial: u32) -> u32 {
    let mut acc: u64 = u64::from(initial);
    let (words, rest) = data.as_chunks::<8>();
    for c in words {
        let w = u64::from_be_bytes(*c);
        // Add the two 32-bit halves: 2^32 ≡ 1 (mod 0xffff), so this is exact.
        acc += (w >> 32) + (w & 0xffff_ffff);
    }
    let (pairs, tail) = rest.as_chunks::<2>();
    for p in pairs {
        acc += u64::from(u16::from_be_bytes(*p));
    }
    if let [last] = tail {
        acc += u64::from(*last) << 8;
    }
    fold64(acc)
}

/// Fold a 64-bit accumulator into a 32-bit one without changing its
/// one's-complement value.
#[inline]
fn fold64(mut acc: u64) -> u32 {
    while acc > 0xffff_ffff {
        acc = (acc >> 32) + (acc & 0xffff_ffff);
    }
    acc as u32
}

/// Fold a 32-bit accumulator to 16 bits (end-around carry).
#[inline]
pub fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc >> 16) + (acc & 0xffff);
    }
    acc as u16
}

/// The checksum field value for `data` (with its checksum field zeroed)
/// plus the partial sum `initial` (e.g. a pseudo header).
#[inline]
pub fn finish(acc: u32) -> u16 {
    !fold(acc)
}

/// Internet checksum of `data` (checksum field zeroed beforehand).
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    finish(sum(data, 0))
}

/// True when `data`, including its checksum field, sums to `0xffff`
/// together with `initial`.
#[inline]
pub fn verify(data: &[u8], initial: u32) -> bool {
    fold(sum(data, initial)) == 0xffff
}

/// Partial sum of the IPv4 pseudo header (RFC 793/768).
#[inline]
pub fn pseudo_v4(src: [u8; 4], dst: [u8; 4], proto: u8, l4_len: u16) -> u32 {
    u32::from(u16::from_be_bytes([src[0], src[1]]))
        + u32::from(u16::from_be_bytes([src[2], src[3]]))
        + u32::from(u16::from_be_bytes([dst[0], dst[1]]))
        + u32::from(u16::from_be_bytes([dst[2], dst[3]]))
        + u32::from(proto)
        + u32::from(l4_len)
}

/// Partial sum of the IPv6 pseudo header (RFC 8200 §8.1).
#[inline]
pub fn pseudo_v6(src: &[u8; 16], dst: &[u8; 16], next_header: u8, l4_len: u32) -> u32 {
    let a = sum(src, 0);
    let b = sum(dst, a);
    b + (l4_len >> 16) + (l4_len & 0xffff) + u32::from(next_header)
}

/// An accumulated RFC 1624 change: the sum of `~m + m'` over every 16-bit
/// word that changed. One delta can be applied to several checksums that
/// cover the same words (e.g. an address in both the IPv4 header and the
/// TCP pseudo header).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CsumDelta(u32);

impl CsumDelta {
    /// No change.
    pub const fn new() -> Self {
        CsumDelta(0)
    }

    /// A 16-bit word changes from `old` to `new`.
    #[inline]
    pub fn word(mut self, old: u16, new: u16) -> Self {
        self.0 = fold_keep(self.0 + u32::from(!old) + u32::from(new));
        self
    }

    /// A 16-bit aligned byte run changes from `old` to `new` (same length,
    /// even; an odd tail is padded with zero like the checksum does).
    #[inline]
    pub fn bytes(mut self, old: &[u8], new: &[u8]) -> Self {
        // ~sum(old) is the sum of the complemented words (one's complement).
        let o = fold(sum(old, 0));
        let n = fold(sum(new, 0));
        self.0 = fold_keep(self.0 + u32::from(!o) + u32::from(n));
        self
    }

    /// Combine two deltas.
    #[inline]
    pub fn combine(mut self, other: CsumDelta) -> Self {
        self.0 = fold_keep(self.0 + other.0);
        self
    }

    /// Apply to a checksum field value: `HC' = ~(~HC + Σ(~m + m'))`.
    #[inline]
    pub fn apply(self, hc: u16) -> u16 {
        !fold(u32::from(!hc) + self.0)
    }
}

/// Keep an accumulator well below overflow while preserving its value.
#[inline]
fn fold_keep(acc: u32) -> u32 {
    u32::from(fold(acc))
}

/// RFC 1624 eqn. 3 for one 16-bit word.
#[inline]
pub fn csum_replace2(hc: u16, old: u16, new: u16) -> u16 {
    CsumDelta::new().word(old, new).apply(hc)
}

/// RFC 1624 update for a 32-bit field (an IPv4 address).
#[inline]
pub fn csum_replace4(hc: u16, old: [u8; 4], new: [u8; 4]) -> u16 {
    CsumDelta::new().bytes(&old, &new).apply(hc)
}

/// RFC 1624 update for a 128-bit field (an IPv6 address).
#[inline]
pub fn csum_replace16(hc: u16, old: &[u8; 16], new: &[u8; 16]) -> u16 {
    CsumDelta::new().bytes(old, new).apply(hc)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Naive reference: word by word with end-around carry.
    fn naive(data: &[u8]) -> u16 {
        let mut s: u32 = 0;
        let mut i = 0;
        while i < data.len() {
            let hi = u32::from(data[i]) << 8;
            let lo = data.get(i + 1).map_or(0, |&b| u32::from(b));
            s += hi | lo;
            s = (s & 0xffff) + (s >> 16);
            i += 2;
        }
        !(s as u16)
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: 0001 f203 f4f5 f6f7 sums to ddf2 -> checksum 220d.
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&d, 0)), 0xddf2);
        assert_eq!(checksum(&d), 0x220d);
    }

    #[test]
    fn known_ipv4_header() {
        // Wikipedia's example header, checksum b861.
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&h), 0xb861);
        h[10] = 0xb8;
        h[11] = 0x61;
        assert!(verify(&h, 0));
        h[19] ^= 1;
        assert!(!verify(&h, 0));
    }

    #[test]
    fn matches_naive_for_all_lengths_and_odd_tails() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 + 13) as u8 ^ 0xa5).collect();
        for n in 0..data.len() {
            assert_eq!(checksum(&data[..n]), naive(&data[..n]), "len {n}");
        }
        let ff = [0xffu8; 64];
        for n in 0..ff.len() {
            assert_eq!(checksum(&ff[..n]), naive(&ff[..n]), "ff len {n}");
        }
    }

    #[test]
    fn pseudo_headers_match_laid_out_bytes() {
        let s4 = [198, 18, 0, 1];
        let d4 = [198, 19, 255, 7];
        let mut ph = Vec::new();
        ph.extend_from_slice(&s4);
        ph.extend_from_slice(&d4);
        ph.extend_from_slice(&[0, 6, 0x05, 0xdc]);
        assert_eq!(fold(pseudo_v4(s4, d4, 6, 1500)), fold(sum(&ph, 0)));

        let s6 = [
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff,
        ];
        let d6 = [
            0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0xab, 0, 0, 2,
        ];
        let mut ph6 = Vec::new();
        ph6.extend_from_slice(&s6);
        ph6.extend_from_slice(&d6);
        ph6.extend_from_slice(&70000u32.to_be_bytes());
        ph6.extend_from_slice(&[0, 0, 0, 17]);
        assert_eq!(fold(pseudo_v6(&s6, &d6, 17, 70000)), fold(sum(&ph6, 0)));
    }

    #[test]
    fn incremental_equals_full() {
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        let old = [0xc0, 0xa8, 0x00, 0xc7];
        let new = [198, 18, 0xff, 0x00];
        let hc = csum_replace4(0xb861, old, new);
        h[16..20].copy_from_slice(&new);
        h[10] = 0;
        h[11] = 0;
        assert_eq!(hc, checksum(&h));

        // TTL 0x40 -> 0x3f in the ttl/proto word.
        let hc2 = csum_replace2(hc, 0x4011, 0x3f11);
        h[8] = 0x3f;
        assert_eq!(hc2, checksum(&h));
    }

    #[test]
    fn incremental_v6_address() {
        let mut d = [0u8; 40];
        for (i, b) in d.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(31);
        }
        let hc = checksum(&d);
        let mut old = [0u8; 16];
        old.copy_from_slice(&d[8..24]);
        let new = [0xffu8; 16];
        d[8..24].copy_from_slice(&new);
        assert_eq!(csum_replace16(hc, &old, &new), checksum(&d));
    }

    #[test]
    fn delta_applies_to_several_checksums() {
        let a = [1u8, 2, 3, 4, 5, 6, 7, 8];
        let b = [9u8, 9, 9, 9, 0xaa, 0xbb, 0xcc, 0xdd];
        let mut x = a;
        let hc = checksum(&x);
        let d = CsumDelta::new()
            .bytes(&a[0..4], &b[0..4])
            .combine(CsumDelta::new().word(0x0506, 0xaabb))
            .word(0x0708, 0xccdd);
        x.copy_from_slice(&b);
        assert_eq!(d.apply(hc), checksum(&x));
        assert_eq!(CsumDelta::new().apply(hc), hc);
    }
}
