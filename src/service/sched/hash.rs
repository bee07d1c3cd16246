//! Fixed, process-independent hashes and small integer helpers used by the
//! schedulers (never `RandomState`: every shard and every process must build
//! the same tables and pick the same server for the same key).

use std::net::IpAddr;

/// Linux `GOLDEN_RATIO_32`, the multiplier of `hash_32`.
pub const GOLDEN_RATIO_32: u32 = 0x61C8_8647;

/// Linux `hash_32(val, bits)`: multiplicative hash keeping the top `bits` bits.
/// `bits` must be in 1..=32 (smaller values give 0, larger are clamped).
pub fn hash_32(val: u32, bits: u32) -> u32 {
    let h = val.wrapping_mul(GOLDEN_RATIO_32);
    match bits {
        0 => 0,
        1..=31 => h >> (32 - bits),
        _ => h,
    }
}

/// IPVS address folding: the IPv4 address as a host-order u32, or for IPv6
/// the XOR of its four 32-bit words (as `ntohl(a[0]^a[1]^a[2]^a[3])`).
pub fn addr_fold(addr: &IpAddr) -> u32 {
    match addr {
        IpAddr::V4(a) => u32::from(*a),
        IpAddr::V6(a) => {
            // The XOR of the four 32-bit words (IPVS's v6 fold).
            let x = u128::from(*a);
            (x as u32) ^ ((x >> 32) as u32) ^ ((x >> 64) as u32) ^ ((x >> 96) as u32)
        }
    }
}

/// A 128-bit SipHash key (Linux `hsiphash_key_t` on 64-bit hosts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SipKey(pub u64, pub u64);

#[inline]
fn sipround(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13);
    v[1] ^= v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16);
    v[3] ^= v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21);
    v[3] ^= v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17);
    v[1] ^= v[2];
    v[2] = v[2].rotate_left(32);
}

/// SipHash-c-d of a message shorter than 8 bytes (the only case we need).
fn siphash_short(key: SipKey, msg: &[u8], c_rounds: usize, d_rounds: usize) -> u64 {
    let mut v = [
        0x736f_6d65_7073_6575 ^ key.0,
        0x646f_7261_6e64_6f6d ^ key.1,
        0x6c79_6765_6e65_7261 ^ key.0,
        0x7465_6462_7974_6573 ^ key.1,
    ];
    let len = msg.len().min(7);
    let mut b = (len as u64) << 56;
    for (i, byte) in msg.iter().take(len).enumerate() {
        b |= u64::from(*byte) << (8 * i);
    }
    v[3] ^= b;
    for _ in 0..c_rounds {
        sipround(&mut v);
    }
    v[0] ^= b;
    v[2] ^= 0xff;
    for _ in 0..d_rounds {
        sipround(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

/// Linux `hsiphash(&v, 4, key)` on a 64-bit host: SipHash-1-3 of the four
/// little-endian bytes of `v`, truncated to 32 bits. This is what IPVS mh
/// hashes addresses with, so our Maglev tables match the kernel's.
pub fn hsiphash_u32(v: u32, key: SipKey) -> u32 {
    siphash_short(key, &v.to_le_bytes(), 1, 3) as u32
}

/// Greatest common divisor (Euclid); `gcd(0, x) == x`.
pub fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        let t = a % b;
        a = b;
        b = t;
    }
    a
}

/// Deterministic primality test by trial division (fine for u32).
pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    if n < 4 {
        return true;
    }
    if n.is_multiple_of(2) || n.is_multiple_of(3) {
        return false;
    }
    let n = u64::from(n);
    let mut i: u64 = 5;
    while i * i <= n {
        if n.is_multiple_of(i) || n.is_multiple_of(i + 2) {
            return false;
        }
        i += 6;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    #[allow(deprecated)]
    fn siphash_rounds_match_reference_siphash24() {
        use std::hash::Hasher;
        // std's (deprecated) SipHasher is the reference SipHash-2-4; our
        // round function and finalisation must agree with it, so the 1-3
        // variant (same code, other round counts) is the kernel's hsiphash.
        let key = SipKey(0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908);
        for msg in [&b""[..], b"\x00", b"\x00\x01\x02\x03", b"abcdefg"] {
            let mut h = std::hash::SipHasher::new_with_keys(key.0, key.1);
            h.write(msg);
            assert_eq!(siphash_short(key, msg, 2, 4), h.finish(), "msg {msg:?}");
        }
        // Published SipHash-2-4 vector for the empty message and key 00..0f.
        assert_eq!(siphash_short(key, b"", 2, 4), 0x726f_db47_dd0e_0e31);
    }

    #[test]
    fn hsiphash_is_one_three_and_deterministic() {
        let k = SipKey(2_654_435_761, 2_654_435_761);
        assert_eq!(hsiphash_u32(12345, k), hsiphash_u32(12345, k));
        assert_ne!(hsiphash_u32(12345, k), hsiphash_u32(12346, k));
        assert_eq!(
            hsiphash_u32(7, k),
            siphash_short(k, &7u32.to_le_bytes(), 1, 3) as u32
        );
        assert_ne!(
            hsiphash_u32(7, k),
            siphash_short(k, &7u32.to_le_bytes(), 2, 4) as u32
        );
    }

    #[test]
    fn hash_32_keeps_top_bits() {
        assert_eq!(hash_32(1, 8), GOLDEN_RATIO_32 >> 24);
        assert_eq!(hash_32(1, 32), GOLDEN_RATIO_32);
        assert!(hash_32(0xdead_beef, 8) < 256);
        assert_eq!(hash_32(5, 0), 0);
    }

    #[test]
    fn addr_fold_v4_and_v6() {
        assert_eq!(
            addr_fold(&IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1))),
            0xC612_0001
        );
        let a = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
        assert_eq!(addr_fold(&IpAddr::V6(a)), 0x2001_0db8 ^ 1);
    }

    #[test]
    fn gcd_and_primes() {
        assert_eq!(gcd(12, 18), 6);
        assert_eq!(gcd(0, 7), 7);
        assert_eq!(gcd(7, 0), 7);
        let primes: Vec<u32> = (0..30).filter(|&n| is_prime(n)).collect();
        assert_eq!(primes, vec![2, 3, 5, 7, 11, 13, 17, 19, 23, 29]);
        assert!(is_prime(65537));
        assert!(is_prime(4093));
        assert!(!is_prime(65535));
        assert!(!is_prime(65536));
        assert!(is_prime(4_294_967_291));
        assert!(!is_prime(u32::MAX));
    }
}
