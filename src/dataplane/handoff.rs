//! Hand-off of frames between shards: copied packets in batches over bounded
//! channels, reusable buffers, and an eventfd to wake a sleeping shard.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use super::DataplaneError;

/// A packet copied out of a UMEM frame for another shard.
#[derive(Debug, Default)]
pub struct HandoffFrame {
    /// Interface the packet arrived on.
    pub in_ifindex: u32,
    /// The packet bytes (no headroom: the receiver copies them into one of
    /// its UMEM frames at [`super::xsk::HANDOFF_HEADROOM`]).
    pub data: Vec<u8>,
}

/// A batch sent in one channel message. After processing, the receiver
/// sends it back to `from` (on that shard's return channel) so that the
/// buffers are reused by their origin and nothing is allocated per packet.
#[derive(Debug, Default)]
pub struct HandoffBatch {
    /// Shard that sent the batch.
    pub from: u16,
    /// The frames.
    pub frames: Vec<HandoffFrame>,
}

/// Reusable buffers and batch vectors, so the steady state allocates nothing.
/// Bounded: extra buffers are freed.
#[derive(Debug)]
pub struct BufPool {
    bufs: Vec<Vec<u8>>,
    batches: Vec<Vec<HandoffFrame>>,
    max_bufs: usize,
    max_batches: usize,
    buf_capacity: usize,
    batch_capacity: usize,
}

impl BufPool {
    /// A pool keeping at most `max_bufs` buffers of `buf_capacity` bytes and
    /// `max_batches` batch vectors of `batch_capacity` entries.
    pub fn new(
        max_bufs: usize,
        buf_capacity: usize,
        max_batches: usize,
        batch_capacity: usize,
    ) -> Self {
        BufPool {
            bufs: Vec::with_capacity(max_bufs),
            batches: Vec::with_capacity(max_batches),
            max_bufs,
            max_batches,
            buf_capacity,
            batch_capacity,
        }
    }

    /// A handed-off frame holding a copy of `data`.
    pub fn frame(&mut self, in_ifindex: u32, data: &[u8]) -> HandoffFrame {
        let mut buf = self
            .bufs
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.buf_capacity));
        buf.clear();
        buf.extend_from_slice(data);
        HandoffFrame {
            in_ifindex,
            data: buf,
        }
    }

    /// Return a frame's buffer to the pool.
    pub fn put(&mut self, f: HandoffFrame) {
        if self.bufs.len() < self.max_bufs {
            self.bufs.push(f.data);
        }
    }

    /// An empty batch vector.
    pub fn batch(&mut self) -> Vec<HandoffFrame> {
        self.batches
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.batch_capacity))
    }

    /// Return a batch vector (and every frame in it) to the pool.
    pub fn put_batch(&mut self, mut b: Vec<HandoffFrame>) {
        for f in b.drain(..) {
            self.put(f);
        }
        if self.batches.len() < self.max_batches {
            self.batches.push(b);
        }
    }

    /// Buffers currently pooled.
    pub fn pooled_bufs(&self) -> usize {
        self.bufs.len()
    }
}

/// Wakes a shard blocked in `poll()`: the shard sets `sleeping` before it
/// blocks; a sender that finds it set writes the eventfd.
#[derive(Debug)]
pub struct Waker {
    fd: OwnedFd,
    sleeping: AtomicBool,
}

impl Waker {
    /// A non-blocking eventfd.
    pub fn new() -> Result<Self, DataplaneError> {
        // SAFETY: plain eventfd creation; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(DataplaneError::Eventfd(io::Error::last_os_error()));
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Waker {
            fd,
            sleeping: AtomicBool::new(false),
        })
    }

    /// The eventfd, to include in the shard's `poll()` set.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Called by the owner before blocking. The owner must re-check its
    /// inbox after this and before blocking.
    pub fn prepare_sleep(&self) {
        self.sleeping.store(true, Ordering::SeqCst);
    }

    /// Called by the owner after waking up; clears the eventfd.
    pub fn woke(&self) {
        self.sleeping.store(false, Ordering::SeqCst);
        let mut v = 0u64;
        // SAFETY: reading 8 bytes into a u64 from our non-blocking eventfd;
        // EAGAIN (nothing pending) is fine.
        unsafe {
            libc::read(self.fd(), (&mut v as *mut u64).cast(), 8);
        }
    }

    /// Called by a sender after it queued something: wake the owner if it
    /// is (about to be) asleep.
    pub fn wake_if_sleeping(&self) {
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::SeqCst) {
            self.wake();
        }
    }

    /// Wake the owner unconditionally (used by stop).
    pub fn wake(&self) {
        let v = 1u64;
        // SAFETY: writing 8 bytes from a u64 to our eventfd; a full counter
        // (EAGAIN) already means "wake up".
        unsafe {
            libc::write(self.fd(), (&v as *const u64).cast(), 8);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_reuses_buffers_and_copies_data() {
        let mut p = BufPool::new(2, 64, 1, 4);
        let f = p.frame(7, b"hello");
        assert_eq!(f.in_ifindex, 7);
        assert_eq!(f.data, b"hello");
        let ptr = f.data.as_ptr();
        p.put(f);
        let g = p.frame(8, b"xy");
        assert_eq!(g.data, b"xy");
        assert_eq!(g.data.as_ptr(), ptr, "buffer reused");
    }

    #[test]
    fn pool_is_bounded() {
        let mut p = BufPool::new(2, 16, 1, 4);
        let frames: Vec<_> = (0..5).map(|i| p.frame(i, b"a")).collect();
        let mut b = p.batch();
        b.extend(frames);
        p.put_batch(b);
        assert_eq!(p.pooled_bufs(), 2);
        let b1 = p.batch();
        let b2 = p.batch();
        p.put_batch(b1);
        p.put_batch(b2);
        assert_eq!(p.batches.len(), 1);
    }

    #[test]
    fn waker_wakes_poll_only_when_sleeping() {
        let w = Waker::new().expect("eventfd");
        let mut pfd = libc::pollfd {
            fd: w.fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        w.wake_if_sleeping();
        // SAFETY: one valid pollfd, zero timeout.
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        assert_eq!(n, 0, "not sleeping: no wake-up");
        w.prepare_sleep();
        w.wake_if_sleeping();
        // SAFETY: as above.
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        assert_eq!(n, 1, "sleeping: woken");
        w.woke();
        // SAFETY: as above.
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        assert_eq!(n, 0, "woke() clears the eventfd");
    }
}
