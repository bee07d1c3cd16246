//! Authenticated envelope for sync datagrams (xdpvs extension).
//!
//! With a shared key, xdpvs peers wrap the same payload (a version 1 sync
//! message or a resync request) as
//!
//! ```text
//! 0..8   magic "XA\0\0SYN1"
//! 8..16  sequence number (u64, network order)
//! 16..n  payload
//! n..+16 HMAC-SHA256(key, magic || sequence || payload), first 16 bytes
//! ```
//!
//! Bytes 2..4 of the magic are zero: read as an IPVS header, the size
//! field is 0, which never equals a datagram's length, so a kernel IPVS
//! backup that receives an envelope drops it ("bogus message size", see
//! [`super::sync`]), and the first byte is nonzero, so an xdpvs
//! [`super::sync::SyncMessage`] refuses it too.
//!
//! # Sequence numbers and replay
//!
//! A sender starts from its wall clock in microseconds since the Unix
//! epoch ([`initial_seq`]) and adds one per datagram, never going below
//! the clock ([`next_seq`]). A restarted sender therefore continues above
//! everything it sent before as long as it averaged less than one datagram
//! per microsecond and its clock did not step back; receivers keep the
//! highest sequence seen per sender address in a [`ReplayGuard`] and
//! refuse anything not above it.
//!
//! The tag is checked in constant time (`hmac`'s `verify_truncated_left`).

use std::net::IpAddr;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::field::array_at;

/// Magic at the start of an envelope.
pub const AUTH_MAGIC: [u8; 8] = *b"XA\0\0SYN1";
/// Bytes of the truncated tag.
pub const TAG_LEN: usize = 16;
/// Bytes before the payload (magic and sequence).
pub const PREFIX_LEN: usize = 16;
/// Smallest envelope: empty payload.
pub const MIN_LEN: usize = PREFIX_LEN + TAG_LEN;
/// Shortest key accepted.
pub const MIN_KEY_LEN: usize = 16;
/// Senders a [`ReplayGuard`] remembers by default.
pub const DEFAULT_MAX_SENDERS: usize = 64;

/// Why an envelope was refused. Every reason has a counter name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum AuthError {
    /// Key shorter than [`MIN_KEY_LEN`].
    #[error("sync key shorter than 16 bytes")]
    WeakKey,
    /// Shorter than magic, sequence and tag.
    #[error("sync envelope truncated")]
    Truncated,
    /// Does not start with [`AUTH_MAGIC`].
    #[error("not a sync envelope")]
    BadMagic,
    /// The tag does not verify (wrong key or altered datagram).
    #[error("sync envelope tag mismatch")]
    BadTag,
    /// Sequence not above the sender's last accepted one.
    #[error("sync envelope replayed")]
    Replay,
    /// A new sender while the guard is full.
    #[error("too many sync senders")]
    TooManySenders,
}

impl AuthError {
    /// Stable counter name for this reason.
    pub const fn reason(&self) -> &'static str {
        match self {
            AuthError::WeakKey => "weak_key",
            AuthError::Truncated => "auth_truncated",
            AuthError::BadMagic => "auth_bad_magic",
            AuthError::BadTag => "auth_bad_tag",
            AuthError::Replay => "replay",
            AuthError::TooManySenders => "too_many_senders",
        }
    }

    /// Every reason, for registering counters.
    pub const ALL: [AuthError; 6] = [
        AuthError::WeakKey,
        AuthError::Truncated,
        AuthError::BadMagic,
        AuthError::BadTag,
        AuthError::Replay,
        AuthError::TooManySenders,
    ];
}

fn mac(key: &[u8]) -> Result<Hmac<Sha256>, AuthError> {
    if key.len() < MIN_KEY_LEN {
        return Err(AuthError::WeakKey);
    }
    // HMAC takes keys of any length; the error is unreachable.
    <Hmac<Sha256> as Mac>::new_from_slice(key).map_err(|_| AuthError::WeakKey)
}

/// Does the datagram start with the envelope magic? (Cheap dispatch
/// between plain and authenticated datagrams.)
pub fn is_envelope(datagram: &[u8]) -> bool {
    datagram.first_chunk::<8>() == Some(&AUTH_MAGIC)
}

/// Append the envelope of `payload` with sequence `seq` to `out`.
pub fn seal(key: &[u8], seq: u64, payload: &[u8], out: &mut Vec<u8>) -> Result<(), AuthError> {
    let mut m = mac(key)?;
    let start = out.len();
    out.extend_from_slice(&AUTH_MAGIC);
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(payload);
    m.update(out.get(start..).unwrap_or(&[]));
    let tag = m.finalize().into_bytes();
    out.extend_from_slice(tag.get(..TAG_LEN).unwrap_or(&[]));
    Ok(())
}

/// Check an envelope; its sequence and payload. Replay is not checked
/// here (see [`ReplayGuard`]).
pub fn open<'a>(key: &[u8], datagram: &'a [u8]) -> Result<(u64, &'a [u8]), AuthError> {
    let mut m = mac(key)?;
    if datagram.len() < MIN_LEN {
        return Err(AuthError::Truncated);
    }
    if !is_envelope(datagram) {
        return Err(AuthError::BadMagic);
    }
    let (signed, tag) = datagram.split_at(datagram.len() - TAG_LEN);
    m.update(signed);
    m.verify_truncated_left(tag)
        .map_err(|_| AuthError::BadTag)?;
    let seq = u64::from_be_bytes(array_at::<8>(signed, 8));
    Ok((seq, signed.get(PREFIX_LEN..).unwrap_or(&[])))
}

/// A sender's first sequence number: its wall clock in microseconds since
/// the Unix epoch.
pub const fn initial_seq(unix_micros: u64) -> u64 {
    unix_micros
}

/// The sequence number after `prev`: one more, but never below the clock
/// (so a sender that sent little catches up with time and its next
/// restart starts above).
pub const fn next_seq(prev: u64, unix_micros: u64) -> u64 {
    let n = prev.saturating_add(1);
    if n > unix_micros {
        n
    } else {
        unix_micros
    }
}

/// Highest accepted sequence per sender address.
///
/// Bounded: at most `max_senders` addresses are remembered, and a datagram
/// from a new address while full is refused ([`AuthError::TooManySenders`])
/// rather than evicting one: eviction would let a recorded datagram of the
/// evicted sender be replayed. A cluster has a handful of directors; call
/// [`ReplayGuard::forget`] when a peer is removed.
#[derive(Clone, Debug)]
pub struct ReplayGuard {
    max_senders: usize,
    seen: Vec<(IpAddr, u64)>,
}

impl Default for ReplayGuard {
    fn default() -> Self {
        ReplayGuard::new(DEFAULT_MAX_SENDERS)
    }
}

impl ReplayGuard {
    /// A guard remembering up to `max_senders` addresses (at least 1).
    pub fn new(max_senders: usize) -> Self {
        ReplayGuard {
            max_senders: max_senders.max(1),
            seen: Vec::new(),
        }
    }

    /// Accept `seq` from `from` if above its last accepted sequence (and
    /// remember it), else refuse. Call after [`open`] succeeded.
    pub fn check(&mut self, from: IpAddr, seq: u64) -> Result<(), AuthError> {
        if let Some((_, last)) = self.seen.iter_mut().find(|(a, _)| *a == from) {
            if seq <= *last {
                return Err(AuthError::Replay);
            }
            *last = seq;
            return Ok(());
        }
        if self.seen.len() >= self.max_senders {
            return Err(AuthError::TooManySenders);
        }
        self.seen.push((from, seq));
        Ok(())
    }

    /// The last accepted sequence of `from`.
    pub fn last(&self, from: IpAddr) -> Option<u64> {
        self.seen.iter().find(|(a, _)| *a == from).map(|(_, s)| *s)
    }

    /// Forget a sender.
    pub fn forget(&mut self, from: IpAddr) {
        self.seen.retain(|(a, _)| *a != from);
    }

    /// Senders remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// No sender remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
    const B: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2));

    fn sealed(seq: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        seal(KEY, seq, payload, &mut out).unwrap();
        out
    }

    #[test]
    fn round_trip_and_layout() {
        let d = sealed(42, b"payload");
        assert_eq!(d.len(), PREFIX_LEN + 7 + TAG_LEN);
        assert_eq!(&d[..8], &AUTH_MAGIC);
        assert_eq!(&d[8..16], &42u64.to_be_bytes());
        assert_eq!(open(KEY, &d), Ok((42, &b"payload"[..])));
        // Empty payload; appending keeps what was in `out`.
        let mut out = vec![9, 9];
        seal(KEY, 1, b"", &mut out).unwrap();
        assert_eq!(open(KEY, &out[2..]), Ok((1, &b""[..])));
        // A kernel IPVS backup reads bytes 2..4 as the size: 0.
        assert_eq!(u16::from_be_bytes([d[2], d[3]]), 0);
        assert!(is_envelope(&d));
        assert!(!is_envelope(b"XA"));
    }

    #[test]
    fn any_flipped_bit_fails() {
        let d = sealed(7, b"some sync message");
        for i in 0..d.len() {
            for bit in 0..8 {
                let mut c = d.clone();
                c[i] ^= 1 << bit;
                let e = open(KEY, &c).unwrap_err();
                let want = if i < 8 {
                    AuthError::BadMagic
                } else {
                    AuthError::BadTag
                };
                assert_eq!(e, want, "byte {i} bit {bit}");
            }
        }
    }

    #[test]
    fn wrong_key_short_key_truncation() {
        let d = sealed(7, b"x");
        assert_eq!(
            open(b"0123456789abcdeX0123456789abcdef", &d),
            Err(AuthError::BadTag)
        );
        assert_eq!(open(b"short", &d), Err(AuthError::WeakKey));
        assert_eq!(seal(b"", 1, b"x", &mut Vec::new()), Err(AuthError::WeakKey));
        for n in 0..MIN_LEN {
            assert_eq!(open(KEY, &d[..n]), Err(AuthError::Truncated), "{n}");
        }
        // Cut inside the tag or the payload: the tag no longer verifies.
        assert_eq!(open(KEY, &d[..d.len() - 1]), Err(AuthError::BadTag));
        let mut longer = d.clone();
        longer.push(0);
        assert_eq!(open(KEY, &longer), Err(AuthError::BadTag));
    }

    #[test]
    fn replay_guard() {
        let mut g = ReplayGuard::default();
        assert_eq!(g.check(A, 100), Ok(()));
        assert_eq!(g.check(A, 100), Err(AuthError::Replay));
        assert_eq!(g.check(A, 99), Err(AuthError::Replay));
        assert_eq!(g.check(A, 101), Ok(()));
        // Senders are independent.
        assert_eq!(g.check(B, 5), Ok(()));
        assert_eq!(g.last(A), Some(101));
        assert_eq!(g.len(), 2);
        g.forget(A);
        assert_eq!(g.check(A, 1), Ok(()));

        let mut g = ReplayGuard::new(2);
        assert_eq!(g.check(A, 1), Ok(()));
        assert_eq!(g.check(B, 1), Ok(()));
        let c = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 3));
        assert_eq!(g.check(c, 1), Err(AuthError::TooManySenders));
        assert_eq!(g.check(A, 2), Ok(()), "known senders still accepted");
    }

    #[test]
    fn sequence_rule_survives_restart() {
        let t0 = 1_700_000_000_000_000u64;
        let mut s = initial_seq(t0);
        for _ in 0..1000 {
            s = next_seq(s, t0); // a burst within one microsecond
        }
        assert_eq!(s, t0 + 1000);
        assert_eq!(next_seq(s, t0 + 5000), t0 + 5000);
        // Restarted a second later: above everything sent before.
        let mut g = ReplayGuard::default();
        g.check(A, s).unwrap();
        assert_eq!(g.check(A, initial_seq(t0 + 1_000_000)), Ok(()));
        assert_eq!(next_seq(u64::MAX, 0), u64::MAX);
    }

    #[test]
    fn reasons_distinct() {
        let mut seen = std::collections::HashSet::new();
        for e in AuthError::ALL {
            assert!(seen.insert(e.reason()));
        }
    }

    proptest! {
        #[test]
        fn open_random_never_panics(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = open(KEY, &b);
            let mut with_magic = AUTH_MAGIC.to_vec();
            with_magic.extend_from_slice(&b);
            prop_assert!(open(KEY, &with_magic).is_err());
        }

        #[test]
        fn seal_open_round_trip(seq in any::<u64>(), p in proptest::collection::vec(any::<u8>(), 0..1500)) {
            let d = sealed(seq, &p);
            prop_assert_eq!(open(KEY, &d), Ok((seq, &p[..])));
        }
    }
}
