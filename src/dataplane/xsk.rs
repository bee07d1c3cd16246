//! AF_XDP sockets of one shard (via `xdpilone`).
//!
//! A shard owns one UMEM (an anonymous mapping of `frame_count` frames of
//! `frame_size` bytes) shared by all its sockets: one socket per
//! (interface, queue), each with its own fill/completion ring pair. A frame
//! received on one interface can therefore be transmitted on another one
//! without copying. The first socket owns the UMEM and is bound with
//! `COPY|NEED_WAKEUP` (or `ZEROCOPY|NEED_WAKEUP`); the others are bound with
//! `SHARED_UMEM` only and inherit the mode (the kernel rejects other flags).
//!
//! Frames: in aligned mode the kernel writes a received packet at
//! `frame base + XDP_PACKET_HEADROOM (256) + umem headroom`, so every frame
//! has at least 256 bytes of headroom in front of the packet. A frame is
//! identified by its base offset in the UMEM; descriptors carry
//! `base + start`.

use std::io;
use std::num::NonZeroU32;
use std::os::fd::RawFd;
use std::ptr::NonNull;

use xdpilone::xdp::XdpDesc;
use xdpilone::{DeviceQueue, IfInfo, RingRx, RingTx, Socket, SocketConfig, Umem, UmemConfig, User};

use super::DataplaneError;

/// Bytes the kernel leaves in front of a received packet (`XDP_PACKET_HEADROOM`).
pub const XDP_PACKET_HEADROOM: usize = 256;

/// Where a handed-over frame's packet is placed inside a UMEM frame.
pub const HANDOFF_HEADROOM: usize = XDP_PACKET_HEADROOM;

/// Most `sendto` kicks per socket per flush (copy mode sends at most 32
/// frames per kick).
const MAX_KICKS: usize = 8;

/// UMEM and ring geometry of one shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XskConfig {
    /// Frames in the shard's UMEM.
    pub frame_count: u32,
    /// Bytes per frame: a power of two, 2048 or 4096.
    pub frame_size: u32,
    /// Entries in each fill, completion, RX and TX ring (power of two).
    pub ring_size: u32,
    /// Descriptors read from an RX ring per socket per loop iteration.
    pub batch: u32,
    /// Extra UMEM headroom registered with the kernel (added to the 256
    /// bytes of `XDP_PACKET_HEADROOM`).
    pub umem_headroom: u32,
    /// Bind in zero-copy mode (fails on veth); copy mode otherwise.
    pub zero_copy: bool,
    /// Try `MAP_HUGETLB` for the UMEM first (falls back to normal pages).
    pub hugepages: bool,
}

impl Default for XskConfig {
    fn default() -> Self {
        XskConfig {
            // 2048-entry rings absorb the moments the shard thread is not
            // scheduled (its core also runs the kernel's veth/bridge work):
            // with 1024 the RX ring overflowed now and then at a quarter of
            // the flat-out rate. 32 MiB of UMEM per shard.
            frame_count: 8192,
            frame_size: 4096,
            ring_size: 2048,
            batch: 64,
            umem_headroom: 0,
            zero_copy: false,
            hugepages: false,
        }
    }
}

impl XskConfig {
    /// Check the geometry; the kernel would reject some of it with a less
    /// helpful errno.
    pub fn validate(&self) -> Result<(), DataplaneError> {
        let bad = |m: &str| Err(DataplaneError::Config(m.to_string()));
        if !(self.frame_size == 2048 || self.frame_size == 4096) {
            return bad("xsk frame_size must be 2048 or 4096");
        }
        if !self.ring_size.is_power_of_two() || self.ring_size < 64 {
            return bad("xsk ring_size must be a power of two >= 64");
        }
        if self.batch == 0 || self.batch > self.ring_size {
            return bad("xsk batch must be in 1..=ring_size");
        }
        if self.frame_count < self.ring_size.saturating_mul(2) {
            return bad("xsk frame_count must be at least 2 * ring_size");
        }
        if self.frame_count > (1 << 20) {
            return bad("xsk frame_count must be at most 2^20");
        }
        let room = XDP_PACKET_HEADROOM as u32 + self.umem_headroom;
        if room + 1514 > self.frame_size {
            return bad("xsk umem_headroom leaves no room for a 1514-byte frame");
        }
        Ok(())
    }

    fn area_len(&self) -> usize {
        self.frame_count as usize * self.frame_size as usize
    }
}

/// An anonymous mapping holding the UMEM; unmapped on drop.
struct UmemArea {
    ptr: NonNull<u8>,
    len: usize,
}

impl UmemArea {
    fn new(len: usize, hugepages: bool) -> Result<Self, DataplaneError> {
        let base_flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE;
        let mut attempts = Vec::with_capacity(2);
        if hugepages {
            attempts.push(base_flags | libc::MAP_HUGETLB);
        }
        attempts.push(base_flags);
        let mut last = io::Error::from_raw_os_error(libc::ENOMEM);
        for flags in attempts {
            // SAFETY: anonymous mapping with no address hint; the result is
            // checked against MAP_FAILED before use.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    flags,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                last = io::Error::last_os_error();
                continue;
            }
            if let Some(ptr) = NonNull::new(p.cast::<u8>()) {
                return Ok(UmemArea { ptr, len });
            }
        }
        Err(DataplaneError::Mmap(last))
    }

    fn as_slice_ptr(&self) -> NonNull<[u8]> {
        NonNull::slice_from_raw_parts(self.ptr, self.len)
    }
}

impl Drop for UmemArea {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the mapping created in `new`, and
        // every socket/ring using it was dropped before (field order of
        // `ShardXsk`).
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// Identity of one AF_XDP socket, to register in the XDP program's XSKMAP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XskSocketInfo {
    /// Shard that owns the socket.
    pub shard: u16,
    /// Interface index the socket is bound to.
    pub ifindex: u32,
    /// Queue id the socket is bound to.
    pub queue: u32,
    /// The socket's file descriptor (owned by the runtime; valid until it stops).
    pub fd: RawFd,
}

/// One received descriptor, already split into frame base and packet offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RxFrame {
    /// Offset of the frame in the UMEM (a multiple of `frame_size`).
    pub base: u64,
    /// Offset of the packet inside the frame.
    pub start: usize,
    /// Packet length.
    pub len: usize,
}

/// Split an RX descriptor (`addr` = base + offset) into frame base, offset and
/// a length clamped to the frame. `None` when the address is outside the UMEM.
pub fn split_desc(addr: u64, len: u32, frame_size: u32, area_len: u64) -> Option<RxFrame> {
    let fs = u64::from(frame_size);
    if fs == 0 || !fs.is_power_of_two() {
        return None;
    }
    let base = addr & !(fs - 1);
    if base.checked_add(fs)? > area_len {
        return None;
    }
    let start = (addr - base) as usize;
    let len = (len as usize).min(frame_size as usize - start);
    Some(RxFrame { base, start, len })
}

/// Whether a packet at `start..start+len` fits in a frame (and is non-empty).
pub fn tx_fits(start: usize, len: usize, frame_size: u32) -> bool {
    len > 0
        && start
            .checked_add(len)
            .is_some_and(|end| end <= frame_size as usize)
}

struct XskQueue {
    ifindex: u32,
    queue: u32,
    fd: RawFd,
    // Field order = drop order: rings are unmapped before the sockets close.
    tx: RingTx,
    rx: RingRx,
    dev: DeviceQueue,
    _user: User,
    staged: Vec<XdpDesc>,
    fill_target: u32,
}

/// Result of pushing staged TX descriptors to the rings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlushResult {
    /// Descriptors placed in TX rings.
    pub queued: u64,
    /// Descriptors rejected (TX ring full, and a ring's worth already
    /// waiting); their frames were recycled.
    pub rejected: u64,
    /// Descriptors that did not fit in the TX ring this time and stay
    /// staged, first in line for the next flush.
    pub deferred: u64,
    /// `sendto` kicks issued.
    pub kicks: u64,
}

/// Who holds a UMEM frame. Frames move Free -> Kernel (fill ring) -> User
/// (read from RX) -> Staged -> Kernel (TX ring) -> Free (completion), and
/// User <-> Free by [`ShardXsk::alloc`] / [`ShardXsk::recycle`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Holder {
    /// On the free list.
    Free,
    /// In a fill or TX ring: the kernel may write or read it at any time.
    Kernel,
    /// Handed out to the caller (received or allocated).
    User,
    /// Queued for the TX ring, not yet pushed.
    Staged,
}

/// The holder of every frame of a UMEM, so that a view into a frame is
/// given out only while user space holds it: no safe call can alias memory
/// the kernel may be writing, whatever bases a caller passes, and a frame
/// recycled twice goes onto the free list once.
#[derive(Debug)]
struct Owners {
    holder: Vec<Holder>,
    frame_size: u64,
}

impl Owners {
    fn new(frames: u32, frame_size: u32) -> Owners {
        Owners {
            holder: vec![Holder::Free; frames as usize],
            frame_size: u64::from(frame_size.max(1)),
        }
    }

    fn slot(&mut self, base: u64) -> Option<&mut Holder> {
        let i = usize::try_from(base / self.frame_size).ok()?;
        self.holder.get_mut(i)
    }

    /// Move the frame at `base` from `from` to `to`; false (nothing changed)
    /// when it is not held by `from`.
    fn take(&mut self, base: u64, from: Holder, to: Holder) -> bool {
        match self.slot(base) {
            Some(h) if *h == from => {
                *h = to;
                true
            }
            _ => false,
        }
    }

    fn is(&self, base: u64, h: Holder) -> bool {
        usize::try_from(base / self.frame_size)
            .ok()
            .and_then(|i| self.holder.get(i))
            == Some(&h)
    }
}

/// The AF_XDP sockets and UMEM of one shard.
pub struct ShardXsk {
    // Field order = drop order: sockets, then the UMEM socket, then the memory.
    queues: Vec<XskQueue>,
    umem: Umem,
    area: UmemArea,
    free: Vec<u64>,
    owners: Owners,
    frame_size: u32,
    batch: u32,
    reserve: usize,
    /// Most descriptors kept staged per socket when the TX ring is full.
    defer_max: usize,
}

// SAFETY: `Umem` is !Send only because it holds a raw pointer to the UMEM
// area; that area is owned by this same struct (`area`) and moves with it.
// All rings and sockets are used by exactly one thread at a time (the owner of
// the `ShardXsk`), and nothing here is tied to thread-local state.
unsafe impl Send for ShardXsk {}

fn xsk_err(op: &'static str, ifindex: u32, queue: u32, e: xdpilone::Errno) -> DataplaneError {
    DataplaneError::Xsk {
        op,
        ifindex,
        queue,
        source: io::Error::from_raw_os_error(e.get_raw().abs()),
    }
}

impl ShardXsk {
    /// Create the UMEM and bind one socket per `(ifindex, queue)`.
    pub fn new(cfg: &XskConfig, queues: &[(u32, u32)]) -> Result<Self, DataplaneError> {
        cfg.validate()?;
        if queues.is_empty() {
            return Err(DataplaneError::Config(
                "a shard needs at least one (interface, queue)".into(),
            ));
        }
        for (i, q) in queues.iter().enumerate() {
            if queues.iter().skip(i + 1).any(|o| o == q) {
                return Err(DataplaneError::Config(format!(
                    "duplicate socket for ifindex {} queue {}",
                    q.0, q.1
                )));
            }
        }
        let area = UmemArea::new(cfg.area_len(), cfg.hugepages)?;
        let ucfg = UmemConfig {
            fill_size: cfg.ring_size,
            complete_size: cfg.ring_size,
            frame_size: cfg.frame_size,
            headroom: cfg.umem_headroom,
            flags: 0,
        };
        // SAFETY: `area` is a fresh page-aligned mapping of exactly
        // `frame_count * frame_size` bytes; it outlives the `Umem` because
        // `ShardXsk` drops `umem` before `area`.
        let umem = unsafe { Umem::new(ucfg, area.as_slice_ptr()) }
            .map_err(|e| xsk_err("umem register", 0, 0, e))?;

        let ring = NonZeroU32::new(cfg.ring_size)
            .ok_or_else(|| DataplaneError::Config("ring_size 0".into()))?;
        let mode = if cfg.zero_copy {
            SocketConfig::XDP_BIND_ZEROCOPY
        } else {
            SocketConfig::XDP_BIND_COPY
        };
        let n = queues.len() as u32;
        let reserve = (cfg.frame_count / 4) as usize;
        let fill_target = cfg.ring_size.min((cfg.frame_count - reserve as u32) / n);

        let mut out = Vec::with_capacity(queues.len());
        for (i, &(ifindex, queue)) in queues.iter().enumerate() {
            let mut info = IfInfo::invalid();
            info.from_ifindex(ifindex)
                .map_err(|e| xsk_err("if_indextoname", ifindex, queue, e))?;
            info.set_queue(queue);
            let first = i == 0;
            let sock = if first {
                Socket::with_shared(&info, &umem)
            } else {
                Socket::new(&info)
            }
            .map_err(|e| xsk_err("socket", ifindex, queue, e))?;
            let dev = umem
                .fq_cq(&sock)
                .map_err(|e| xsk_err("fill/completion rings", ifindex, queue, e))?;
            let bind_flags = if first {
                mode | SocketConfig::XDP_BIND_NEED_WAKEUP
            } else {
                // Shared-UMEM binds must pass no flags (they inherit them).
                0
            };
            let user = umem
                .rx_tx(
                    &sock,
                    &SocketConfig {
                        rx_size: Some(ring),
                        tx_size: Some(ring),
                        bind_flags,
                    },
                )
                .map_err(|e| xsk_err("rx/tx rings", ifindex, queue, e))?;
            let rx = user
                .map_rx()
                .map_err(|e| xsk_err("map rx", ifindex, queue, e))?;
            let tx = user
                .map_tx()
                .map_err(|e| xsk_err("map tx", ifindex, queue, e))?;
            bind_retrying(&umem, &user).map_err(|e| xsk_err("bind", ifindex, queue, e))?;
            // xdpilone opens AF_XDP sockets without SOCK_CLOEXEC: a health
            // check or notify program the director spawns must not inherit
            // them (a leftover child would keep the queue bound and the
            // UMEM pinned after the director exits).
            // SAFETY: fcntl(F_SETFD) on a socket fd this function owns (via
            // `user`, alive here) changes only its close-on-exec flag.
            let rc = unsafe { libc::fcntl(user.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
            if rc != 0 {
                return Err(DataplaneError::Xsk {
                    op: "fcntl(FD_CLOEXEC)",
                    ifindex,
                    queue,
                    source: std::io::Error::last_os_error(),
                });
            }
            out.push(XskQueue {
                ifindex,
                queue,
                fd: user.as_raw_fd(),
                tx,
                rx,
                dev,
                _user: user,
                staged: Vec::with_capacity(cfg.ring_size as usize),
                fill_target,
            });
        }
        let free = (0..u64::from(cfg.frame_count))
            .rev()
            .map(|i| i * u64::from(cfg.frame_size))
            .collect();
        let mut this = ShardXsk {
            queues: out,
            umem,
            area,
            free,
            owners: Owners::new(cfg.frame_count, cfg.frame_size),
            frame_size: cfg.frame_size,
            batch: cfg.batch,
            reserve,
            defer_max: cfg.ring_size as usize,
        };
        this.refill();
        Ok(this)
    }

    /// Sockets of this shard (`shard` is filled in by the caller).
    pub fn sockets(&self, shard: u16) -> Vec<XskSocketInfo> {
        self.queues
            .iter()
            .map(|q| XskSocketInfo {
                shard,
                ifindex: q.ifindex,
                queue: q.queue,
                fd: q.fd,
            })
            .collect()
    }

    /// Number of sockets.
    pub fn n_queues(&self) -> usize {
        self.queues.len()
    }

    /// Interface index of socket `qi`.
    pub fn ifindex_of(&self, qi: usize) -> Option<u32> {
        self.queues.get(qi).map(|q| q.ifindex)
    }

    /// Index of the first socket bound to `ifindex` (TX goes there).
    pub fn queue_for_ifindex(&self, ifindex: u32) -> Option<usize> {
        self.queues.iter().position(|q| q.ifindex == ifindex)
    }

    /// RX batch size per socket.
    pub fn batch(&self) -> u32 {
        self.batch
    }

    /// Bytes per frame.
    pub fn frame_size(&self) -> u32 {
        self.frame_size
    }

    /// Frames currently owned by user space and unused.
    pub fn free_frames(&self) -> usize {
        self.free.len()
    }

    /// Whether any RX ring has descriptors waiting (relaxed, advisory).
    pub fn rx_available(&self) -> bool {
        self.queues.iter().any(|q| q.rx.available() > 0)
    }

    /// Whether any TX ring still has descriptors the kernel has not taken.
    pub fn tx_pending(&self) -> bool {
        self.queues
            .iter()
            .any(|q| q.tx.pending() > 0 || !q.staged.is_empty())
    }

    /// File descriptors to `poll()` for RX.
    pub fn fds(&self) -> impl Iterator<Item = RawFd> + '_ {
        self.queues.iter().map(|q| q.fd)
    }

    /// Read up to `batch` descriptors from socket `qi`'s RX ring into `out`.
    /// The frames now belong to the caller (recycle or stage them).
    pub fn receive(&mut self, qi: usize, out: &mut Vec<RxFrame>) -> usize {
        let area_len = self.area.len as u64;
        let fs = self.frame_size;
        let Some(q) = self.queues.get_mut(qi) else {
            return 0;
        };
        let mut n = 0;
        let mut r = q.rx.receive(self.batch);
        while let Some(d) = r.read() {
            // A descriptor outside the UMEM, or for a frame the kernel was
            // not given, cannot come from the kernel; skip it.
            if let Some(f) = split_desc(d.addr, d.len, fs, area_len) {
                if self.owners.take(f.base, Holder::Kernel, Holder::User) {
                    out.push(f);
                    n += 1;
                }
            }
        }
        r.release();
        n
    }

    /// The whole frame at `base` (headroom included). `None` for a base that
    /// is not a frame of this UMEM or that the caller does not hold (got
    /// from [`receive`](Self::receive) or [`alloc`](Self::alloc) and not
    /// yet recycled or staged).
    pub fn frame_mut(&mut self, base: u64) -> Option<&mut [u8]> {
        let (b, fs) = self.frame_offset(base)?;
        if !self.owners.is(base, Holder::User) {
            return None;
        }
        // SAFETY: `b..b+fs` lies inside the mapping (checked above); the
        // frame is held by user space (checked above: not in a fill or TX
        // ring, so the kernel neither writes nor reads it), and `&mut self`
        // makes this the only live reference into the UMEM.
        Some(unsafe { std::slice::from_raw_parts_mut(self.area.ptr.as_ptr().add(b), fs) })
    }

    /// The whole frame at `base`, read-only (for the RX batch's prefetch
    /// pass). `None` as for [`frame_mut`](Self::frame_mut).
    pub fn frame(&self, base: u64) -> Option<&[u8]> {
        let (b, fs) = self.frame_offset(base)?;
        if !self.owners.is(base, Holder::User) {
            return None;
        }
        // SAFETY: `b..b+fs` lies inside the mapping (checked above); the
        // frame is held by user space (checked above), and `&self` excludes
        // any `frame_mut` reference while this one lives.
        Some(unsafe { std::slice::from_raw_parts(self.area.ptr.as_ptr().add(b), fs) })
    }

    /// `(offset, frame size)` of the frame at `base`, if it is one of this
    /// UMEM's frames.
    fn frame_offset(&self, base: u64) -> Option<(usize, usize)> {
        let fs = self.frame_size as usize;
        let b = usize::try_from(base).ok()?;
        (b % fs == 0 && b.checked_add(fs)? <= self.area.len).then_some((b, fs))
    }

    /// Take a free frame (for a packet copied in from another shard).
    /// Keeps `reserve` frames back from the fill rings, not from here.
    pub fn alloc(&mut self) -> Option<u64> {
        let base = self.free.pop()?;
        self.owners.take(base, Holder::Free, Holder::User);
        Some(base)
    }

    /// Give a frame the caller holds back to the free list (a frame it does
    /// not hold is left where it is).
    pub fn recycle(&mut self, base: u64) {
        let fs = u64::from(self.frame_size);
        let base = base & !(fs - 1);
        if self.owners.take(base, Holder::User, Holder::Free) {
            self.free.push(base);
        }
    }

    /// Stage a frame for transmission on socket `qi`; it is pushed to the TX
    /// ring by [`flush_tx`](Self::flush_tx). Returns false (frame recycled)
    /// when `start/len` do not fit the frame or `qi` is unknown, false and
    /// nothing done for a frame the caller does not hold.
    pub fn stage_tx(&mut self, qi: usize, base: u64, start: usize, len: usize) -> bool {
        let fits = tx_fits(start, len, self.frame_size) && qi < self.queues.len();
        if !self.owners.is(base, Holder::User) {
            return false;
        }
        if fits {
            self.owners.take(base, Holder::User, Holder::Staged);
        }
        match self.queues.get_mut(qi) {
            Some(q) if fits => {
                q.staged.push(XdpDesc {
                    addr: base + start as u64,
                    len: len as u32,
                    options: 0,
                });
                true
            }
            _ => {
                self.recycle(base);
                false
            }
        }
    }

    /// Push staged descriptors into the TX rings and kick the kernel where
    /// descriptors are pending. What does not fit stays staged for the next
    /// flush (in order), up to one ring's worth per socket; beyond that the
    /// newest frames are dropped and recycled (`rejected`). A full TX ring
    /// is usually a moment's lag of the kernel's copy-mode sender, so
    /// waiting an iteration loses nothing; a sustained overload ends up
    /// with no free frames for the fill ring, and the kernel drops at RX
    /// (its `rx_dropped` counter).
    pub fn flush_tx(&mut self) -> FlushResult {
        let mut res = FlushResult::default();
        let fs = u64::from(self.frame_size);
        for q in self.queues.iter_mut() {
            if !q.staged.is_empty() {
                let want = q.staged.len() as u32;
                let mut w = q.tx.transmit(want);
                let n = w.insert(q.staged.iter().copied());
                w.commit();
                drop(w);
                res.queued += u64::from(n);
                for d in q.staged.drain(..(n as usize).min(q.staged.len())) {
                    self.owners
                        .take(d.addr & !(fs - 1), Holder::Staged, Holder::Kernel);
                }
                let keep = self.defer_max.min(q.staged.len());
                for d in q.staged.drain(keep..) {
                    if self
                        .owners
                        .take(d.addr & !(fs - 1), Holder::Staged, Holder::Free)
                    {
                        self.free.push(d.addr & !(fs - 1));
                    }
                    res.rejected += 1;
                }
                res.deferred += q.staged.len() as u64;
            }
            res.kicks += kick(q);
        }
        res
    }

    /// Recycle every staged frame (at shutdown); returns how many.
    pub fn drop_staged(&mut self) -> u64 {
        let fs = u64::from(self.frame_size);
        let mut n = 0;
        for q in self.queues.iter_mut() {
            for d in q.staged.drain(..) {
                if self
                    .owners
                    .take(d.addr & !(fs - 1), Holder::Staged, Holder::Free)
                {
                    self.free.push(d.addr & !(fs - 1));
                }
                n += 1;
            }
        }
        n
    }

    /// Reap all completion rings; frames go back to the free list.
    /// Returns the number of completed transmissions.
    pub fn reap_completions(&mut self) -> u64 {
        let fs = u64::from(self.frame_size);
        let mut total = 0;
        for q in self.queues.iter_mut() {
            let avail = q.dev.available();
            if avail == 0 {
                continue;
            }
            let mut r = q.dev.complete(avail);
            while let Some(addr) = r.read() {
                if self
                    .owners
                    .take(addr & !(fs - 1), Holder::Kernel, Holder::Free)
                {
                    self.free.push(addr & !(fs - 1));
                }
                total += 1;
            }
            r.release();
        }
        total
    }

    /// Top up every fill ring to its target, keeping `reserve` frames free.
    pub fn refill(&mut self) {
        for q in self.queues.iter_mut() {
            let in_ring = q.dev.pending();
            let want = q.fill_target.saturating_sub(in_ring);
            let spare = self.free.len().saturating_sub(self.reserve) as u32;
            let want = want.min(spare);
            if want == 0 {
                continue;
            }
            let mut w = q.dev.fill(want);
            let k = (w.capacity().min(want)) as usize;
            let from = self.free.len() - k;
            let n = w.insert(self.free.get(from..).unwrap_or(&[]).iter().copied()) as usize;
            w.commit();
            drop(w);
            // The ring took the first `n` of the offered frames.
            for base in self.free.drain(from..from + n) {
                self.owners.take(base, Holder::Free, Holder::Kernel);
            }
            if q.dev.needs_wakeup() {
                q.dev.wake();
            }
        }
    }

    /// Kernel statistics summed over the sockets:
    /// (rx_dropped, rx_ring_full, fill_ring_empty, tx_invalid).
    pub fn kernel_stats(&self) -> (u64, u64, u64, u64) {
        let mut t = (0, 0, 0, 0);
        for q in &self.queues {
            if let Ok(s) = q._user.statistics_v2() {
                t.0 += s.rx_dropped;
                t.1 += s.rx_ring_full;
                t.2 += s.rx_fill_ring_empty_descs;
                t.3 += s.tx_invalid_descs;
            }
        }
        t
    }

    /// Frames not found anywhere: UMEM size minus frames on the free list, in
    /// fill rings, RX rings (unread), TX rings (not yet sent) and completion
    /// rings (not yet reaped). Nonzero only if frames leaked (or while the
    /// engine holds some, which it cannot between iterations).
    pub fn frames_missing(&self) -> u64 {
        let mut seen = self.free.len() as u64;
        for q in &self.queues {
            seen += u64::from(q.dev.pending())
                + u64::from(q.rx.available())
                + u64::from(q.tx.pending())
                + u64::from(q.dev.available())
                + q.staged.len() as u64;
        }
        u64::from(self.umem.len_frames()).saturating_sub(seen)
    }

    /// Number of frames in this UMEM (for tests and accounting).
    pub fn frame_count(&self) -> u32 {
        self.umem.len_frames()
    }
}

/// Bind, retrying on EBUSY for up to a second: the kernel releases a
/// closed socket's hold on its queue from a deferred work item, so binding
/// right after a previous runtime stopped can briefly fail.
fn bind_retrying(umem: &Umem, user: &User) -> Result<(), xdpilone::Errno> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        match umem.bind(user) {
            Err(e) if e.get_raw().abs() == libc::EBUSY && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            r => return r,
        }
    }
}

/// Wake the kernel for TX while descriptors are pending: copy mode only
/// sends on `sendto`, at most 32 frames per call.
fn kick(q: &mut XskQueue) -> u64 {
    let mut kicks = 0;
    for _ in 0..MAX_KICKS {
        if q.tx.pending() == 0 || !q.tx.needs_wakeup() {
            break;
        }
        kicks += 1;
        // SAFETY: a zero-length sendto on our own XSK fd with no buffers;
        // this is the documented TX wake-up.
        let r = unsafe {
            libc::sendto(
                q.fd,
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error().raw_os_error().unwrap_or(0);
            if e != libc::EAGAIN && e != libc::EINTR {
                // EBUSY/ENOBUFS/ENETDOWN: retry on the next loop iteration.
                break;
            }
        }
    }
    kicks
}

#[cfg(test)]
mod tests {
    use super::*;

    /// More frames staged than the TX ring holds: the ring takes what fits,
    /// up to one ring's worth waits for the next flush, the rest is
    /// rejected and recycled; later flushes send the waiting frames and no
    /// frame is lost track of. Root only (a veth pair in its own namespace;
    /// the frames carry no IP and stay on that pair).
    #[test]
    fn a_full_tx_ring_defers_a_rings_worth_and_rejects_the_rest() {
        use crate::dataplane::testutil::{ifindex, in_netns, run, Netns};
        if crate::dataplane::testutil::skip_without_root("a_full_tx_ring_defers...") {
            return;
        }
        let ns = "xdpvs-txdefer";
        let _guard = Netns::create(&[ns]).expect("netns");
        for cmd in [
            &[
                "ip", "-n", ns, "link", "add", "t0", "type", "veth", "peer", "name", "t1",
            ][..],
            &["ip", "-n", ns, "link", "set", "t0", "up"],
            &["ip", "-n", ns, "link", "set", "t1", "up"],
        ] {
            run(cmd).expect("veth");
        }
        let got = in_netns(ns, || {
            let cfg = XskConfig {
                frame_count: 256,
                ring_size: 64,
                batch: 64,
                ..XskConfig::default()
            };
            let idx = ifindex("t0").expect("t0");
            let mut x = ShardXsk::new(&cfg, &[(idx, 0)]).expect("xsk");
            // Local experimental EtherType, locally administered MACs.
            let mut f = [0u8; 60];
            f[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
            f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
            f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
            for _ in 0..150 {
                let b = x.alloc().expect("free frame");
                let buf = x.frame_mut(b).expect("frame");
                buf[XDP_PACKET_HEADROOM..XDP_PACKET_HEADROOM + 60].copy_from_slice(&f);
                assert!(x.stage_tx(0, b, XDP_PACKET_HEADROOM, 60));
            }
            let first = x.flush_tx();
            let mut queued = first.queued;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
            while x.tx_pending() && std::time::Instant::now() < deadline {
                x.reap_completions();
                queued += x.flush_tx().queued;
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            x.reap_completions();
            (first, queued, x.tx_pending(), x.frames_missing())
        })
        .expect("in netns");
        let (first, queued, pending, missing) = got;
        assert_eq!(
            (first.queued, first.deferred, first.rejected),
            (64, 64, 22),
            "first flush: ring full after 64, 64 wait, 22 rejected"
        );
        assert_eq!(queued, 128, "the waiting frames were sent later");
        assert!(!pending, "frames still waiting");
        assert_eq!(missing, 0, "frames lost track of");
    }

    #[test]
    fn default_config_is_valid() {
        assert!(XskConfig::default().validate().is_ok());
    }

    #[test]
    fn config_rejects_bad_geometry() {
        let d = XskConfig::default();
        let bad = [
            XskConfig {
                frame_size: 3000,
                ..d.clone()
            },
            XskConfig {
                ring_size: 1000,
                ..d.clone()
            },
            XskConfig {
                batch: 0,
                ..d.clone()
            },
            XskConfig {
                frame_count: 1024,
                ..d.clone()
            },
            XskConfig {
                umem_headroom: 3000,
                ..d.clone()
            },
        ];
        for c in bad {
            assert!(c.validate().is_err(), "{c:?}");
        }
    }

    #[test]
    fn split_desc_finds_base_and_offset() {
        let f = split_desc(3 * 4096 + 256, 60, 4096, 8 * 4096);
        assert_eq!(
            f,
            Some(RxFrame {
                base: 3 * 4096,
                start: 256,
                len: 60
            })
        );
    }

    #[test]
    fn split_desc_clamps_len_and_rejects_outside() {
        let f = split_desc(4096 + 4000, 500, 4096, 2 * 4096);
        assert_eq!(f.map(|f| f.len), Some(96));
        assert_eq!(split_desc(2 * 4096, 60, 4096, 2 * 4096), None);
        assert_eq!(split_desc(0, 60, 3000, 2 * 4096), None);
    }

    /// A frame is viewable only while user space holds it, and each holder
    /// change happens once (a second recycle, or a view of a frame in a
    /// ring, is refused).
    #[test]
    fn owners_follow_a_frame_through_its_rings() {
        let mut o = Owners::new(4, 2048);
        let f = 2048;
        assert!(o.is(f, Holder::Free));
        assert!(o.take(f, Holder::Free, Holder::Kernel)); // fill ring
        assert!(!o.is(f, Holder::User)); // no view while the kernel may write
        assert!(!o.take(f, Holder::User, Holder::Free)); // recycle refused
        assert!(o.take(f, Holder::Kernel, Holder::User)); // RX
        assert!(o.is(f, Holder::User));
        assert!(o.take(f, Holder::User, Holder::Staged));
        assert!(o.take(f, Holder::Staged, Holder::Kernel)); // TX ring
        assert!(!o.is(f, Holder::User));
        assert!(o.take(f, Holder::Kernel, Holder::Free)); // completion
        let mut o = Owners::new(4, 2048);
        assert!(o.take(0, Holder::Free, Holder::User));
        assert!(o.take(0, Holder::User, Holder::Free));
        assert!(!o.take(0, Holder::User, Holder::Free)); // double recycle
                                                         // Outside the UMEM: nothing.
        assert!(!o.take(4 * 2048, Holder::Free, Holder::User));
        assert!(!o.is(u64::MAX, Holder::Free));
    }

    #[test]
    fn tx_fits_bounds() {
        assert!(tx_fits(256, 3840, 4096));
        assert!(!tx_fits(256, 3841, 4096));
        assert!(!tx_fits(0, 0, 4096));
        assert!(!tx_fits(usize::MAX, 2, 4096));
    }
}
