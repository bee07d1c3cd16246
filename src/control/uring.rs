//! The control loop's io_uring: a small completion reactor (poll for
//! readiness, timeouts, connect / send / recv with linked timeouts for the
//! health probes) and the inotify watch used for config reloads. All the
//! `unsafe` of the control plane lives here, each block with its reason.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::Duration;

use io_uring::{opcode, squeue, types, IoUring};

/// One completion: the token given at submission and the result
/// (`>= 0` success, `-errno` failure).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    pub token: u64,
    pub result: i32,
}

/// Tokens with this bit are linked timeouts: their completions carry no news
/// for the caller (the linked operation completes with `-ECANCELED`).
pub const LINK_TIMEOUT_BIT: u64 = 1 << 63;

pub struct Reactor {
    ring: IoUring,
    /// Timespecs referenced by entries, by the entry's user data; each is
    /// freed when that entry's completion arrives, never at submission (a
    /// submit may consume only part of the queue, and an entry still queued
    /// must not point at freed memory). Boxed so their addresses survive
    /// the map growing.
    #[allow(clippy::vec_box)]
    timespecs: HashMap<u64, Vec<Box<types::Timespec>>>,
}

fn timespec(d: Duration) -> Box<types::Timespec> {
    Box::new(
        types::Timespec::new()
            .sec(d.as_secs())
            .nsec(d.subsec_nanos()),
    )
}

impl Reactor {
    pub fn new(entries: u32) -> io::Result<Reactor> {
        Ok(Reactor {
            ring: IoUring::new(entries)?,
            timespecs: HashMap::new(),
        })
    }

    fn push(&mut self, entries: &[squeue::Entry]) -> io::Result<()> {
        for attempt in 0..2 {
            // SAFETY: every pointer in these entries (timespecs, sockaddrs,
            // buffers) is owned by the caller or by `timespecs` and stays
            // valid until the operation completes: the caller keeps buffers
            // and sockets alive until it has seen the completion (see
            // `Probe` in health.rs), and a timespec is freed only when the
            // completion of the entry that points at it has been reaped.
            let r = unsafe { self.ring.submission().push_multiple(entries) };
            if r.is_ok() {
                return Ok(());
            }
            if attempt == 0 {
                self.submit()?;
            }
        }
        Err(io::Error::other("io_uring submission queue full"))
    }

    fn submit(&mut self) -> io::Result<()> {
        self.ring.submit()?;
        Ok(())
    }

    /// Keep `ts` alive until the completion with user data `key` arrives.
    fn hold(&mut self, key: u64, ts: Box<types::Timespec>) {
        self.timespecs.entry(key).or_default().push(ts);
    }

    /// An entry with user data `key` was not queued: free the timespec just
    /// held for it (the newest).
    fn unhold(&mut self, key: u64) {
        if let Some(v) = self.timespecs.get_mut(&key) {
            v.pop();
            if v.is_empty() {
                self.timespecs.remove(&key);
            }
        }
    }

    /// The completion with user data `key` arrived: free one timespec held
    /// for it (the oldest; the kernel copied each at submission, so which
    /// one goes first does not matter for safety, only for the count).
    fn release(&mut self, key: u64) {
        if let Some(v) = self.timespecs.get_mut(&key) {
            if !v.is_empty() {
                v.remove(0);
            }
            if v.is_empty() {
                self.timespecs.remove(&key);
            }
        }
    }

    /// Timespecs still held for entries in flight (for tests).
    pub fn timespecs_held(&self) -> usize {
        self.timespecs.values().map(Vec::len).sum()
    }

    /// One-shot readiness: completes with the poll mask when `fd` is readable.
    pub fn poll_readable(&mut self, fd: RawFd, token: u64) -> io::Result<()> {
        let e = opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32)
            .build()
            .user_data(token);
        self.push(&[e])
    }

    /// One-shot readiness bounded by `limit`: completes with the poll mask
    /// when `fd` is readable (a pidfd: the process exited), or with
    /// `-ECANCELED` when `limit` passed first. The caller keeps `fd` open
    /// until the completion arrives.
    pub fn poll_readable_for(&mut self, fd: RawFd, limit: Duration, token: u64) -> io::Result<()> {
        let e = opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32)
            .build()
            .flags(squeue::Flags::IO_LINK)
            .user_data(token);
        self.with_link_timeout(e, limit, token)
    }

    /// Completes with `-ETIME` after `d`.
    pub fn timeout(&mut self, d: Duration, token: u64) -> io::Result<()> {
        let ts = timespec(d);
        let e = opcode::Timeout::new(&*ts as *const types::Timespec)
            .build()
            .user_data(token);
        self.hold(token, ts);
        let r = self.push(&[e]);
        if r.is_err() {
            // Not queued: nothing points at it.
            self.unhold(token);
        }
        r
    }

    /// `connect(fd, addr)` bounded by `limit`.
    ///
    /// The caller keeps `addr` and `fd` alive until the completion arrives.
    pub fn connect(
        &mut self,
        fd: RawFd,
        addr: &SockAddr,
        limit: Duration,
        token: u64,
    ) -> io::Result<()> {
        let e = opcode::Connect::new(types::Fd(fd), addr.as_ptr(), addr.len)
            .build()
            .flags(squeue::Flags::IO_LINK)
            .user_data(token);
        self.with_link_timeout(e, limit, token)
    }

    /// `send(fd, buf)` bounded by `limit`. The caller keeps `buf` alive
    /// (and unmoved) until the completion arrives.
    pub fn send(&mut self, fd: RawFd, buf: &[u8], limit: Duration, token: u64) -> io::Result<()> {
        let e = opcode::Send::new(types::Fd(fd), buf.as_ptr(), buf.len() as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .flags(squeue::Flags::IO_LINK)
            .user_data(token);
        self.with_link_timeout(e, limit, token)
    }

    /// `recv(fd, buf)` bounded by `limit`. The caller keeps `buf` alive
    /// (and unmoved) until the completion arrives.
    pub fn recv(
        &mut self,
        fd: RawFd,
        buf: &mut [u8],
        limit: Duration,
        token: u64,
    ) -> io::Result<()> {
        let e = opcode::Recv::new(types::Fd(fd), buf.as_mut_ptr(), buf.len() as u32)
            .build()
            .flags(squeue::Flags::IO_LINK)
            .user_data(token);
        self.with_link_timeout(e, limit, token)
    }

    fn with_link_timeout(
        &mut self,
        op: squeue::Entry,
        limit: Duration,
        token: u64,
    ) -> io::Result<()> {
        let ts = timespec(limit.max(Duration::from_millis(1)));
        let lt = opcode::LinkTimeout::new(&*ts as *const types::Timespec)
            .build()
            .user_data(token | LINK_TIMEOUT_BIT);
        self.hold(token | LINK_TIMEOUT_BIT, ts);
        let r = self.push(&[op, lt]);
        if r.is_err() {
            self.unhold(token | LINK_TIMEOUT_BIT);
        }
        r
    }

    /// Submit what is queued and wait for at least one completion; return
    /// all that are ready (without the linked-timeout ones).
    pub fn wait(&mut self) -> io::Result<Vec<Completion>> {
        loop {
            match self.ring.submit_and_wait(1) {
                Ok(_) => break,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(e),
            }
        }
        let mut out = Vec::new();
        let mut done = Vec::new();
        for cqe in self.ring.completion() {
            done.push(cqe.user_data());
            if cqe.user_data() & LINK_TIMEOUT_BIT != 0 {
                continue;
            }
            out.push(Completion {
                token: cqe.user_data(),
                result: cqe.result(),
            });
        }
        for key in done {
            self.release(key);
        }
        Ok(out)
    }
}

/// A socket address in the C layout, owned (stable while boxed).
pub struct SockAddr {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

impl SockAddr {
    pub fn new(a: SocketAddr) -> Box<SockAddr> {
        // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let len = match a {
            SocketAddr::V4(v4) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: v4.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(v4.ip().octets()),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: sockaddr_storage is larger than and aligned for
                // sockaddr_in; we write one whole value at its start.
                unsafe {
                    std::ptr::write(
                        &mut storage as *mut libc::sockaddr_storage as *mut libc::sockaddr_in,
                        sin,
                    )
                };
                std::mem::size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(v6) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: v6.port().to_be(),
                    sin6_flowinfo: 0,
                    sin6_addr: libc::in6_addr {
                        s6_addr: v6.ip().octets(),
                    },
                    sin6_scope_id: v6.scope_id(),
                };
                // SAFETY: as above, for sockaddr_in6.
                unsafe {
                    std::ptr::write(
                        &mut storage as *mut libc::sockaddr_storage as *mut libc::sockaddr_in6,
                        sin6,
                    )
                };
                std::mem::size_of::<libc::sockaddr_in6>()
            }
        };
        Box::new(SockAddr {
            storage,
            len: len as libc::socklen_t,
        })
    }

    fn as_ptr(&self) -> *const libc::sockaddr {
        &self.storage as *const libc::sockaddr_storage as *const libc::sockaddr
    }
}

/// A non-blocking, close-on-exec socket for a probe.
pub fn probe_socket(a: SocketAddr, udp: bool) -> io::Result<OwnedFd> {
    let fam = if a.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    let ty = if udp {
        libc::SOCK_DGRAM
    } else {
        libc::SOCK_STREAM
    };
    // SAFETY: plain socket(2) call; the result is checked.
    let fd = unsafe { libc::socket(fam, ty | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socket(2) returned a new descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A pidfd for process `pid` (Linux 5.3+, `pidfd_open(2)`), close-on-exec:
/// it becomes readable when the process exits, so the reactor can wait for
/// a child without blocking or a SIGCHLD handler.
pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?;
    // SAFETY: pidfd_open takes a pid and flags (0) and returns a new
    // descriptor or -1; no memory is passed. The result is checked.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = RawFd::try_from(fd).map_err(|_| io::Error::other("pidfd out of range"))?;
    // SAFETY: pidfd_open returned a new descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An inotify watch on the directory of a file (editors and config
/// managers replace files by rename, which a watch on the file would miss).
pub struct FileWatch {
    fd: OwnedFd,
    name: Vec<u8>,
}

impl FileWatch {
    pub fn new(file: &Path) -> io::Result<FileWatch> {
        let dir = match file.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        };
        let name = file
            .file_name()
            .map(|n| n.as_encoded_bytes().to_vec())
            .unwrap_or_default();
        // SAFETY: plain inotify_init1 call; the result is checked.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: inotify_init1 returned a new descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let cdir = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
            .map_err(|_| io::Error::other("config path contains a NUL byte"))?;
        // SAFETY: valid descriptor and NUL-terminated path.
        let wd = unsafe {
            libc::inotify_add_watch(
                fd.as_raw_fd(),
                cdir.as_ptr(),
                libc::IN_CLOSE_WRITE | libc::IN_MOVED_TO | libc::IN_CREATE,
            )
        };
        if wd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(FileWatch { fd, name })
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Drain pending events; true if one of them is about the file.
    pub fn changed(&self) -> bool {
        let mut hit = false;
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: reading into a local buffer of the given length.
            let n = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                )
            };
            if n <= 0 {
                break;
            }
            let n = n as usize;
            let head = std::mem::size_of::<libc::inotify_event>();
            let mut off = 0;
            while off + head <= n {
                let len_at = off + head - 4;
                let name_len = buf
                    .get(len_at..len_at + 4)
                    .and_then(|b| <[u8; 4]>::try_from(b).ok())
                    .map(|b| u32::from_ne_bytes(b) as usize)
                    .unwrap_or(0);
                let name = buf
                    .get(off + head..(off + head + name_len).min(n))
                    .unwrap_or(&[]);
                let name = name.split(|&c| c == 0).next().unwrap_or(&[]);
                if name == self.name.as_slice() {
                    hit = true;
                }
                off += head + name_len;
            }
        }
        hit
    }
}

/// The uid of the process at the other end of a Unix socket (SO_PEERCRED).
pub fn peer_uid(fd: RawFd) -> Option<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: u32::MAX,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt(SO_PEERCRED) writes at most `len` bytes into a
    // local ucred; the caller's descriptor is valid for the call.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut libc::ucred as *mut libc::c_void,
            &mut len,
        )
    };
    (r == 0).then_some(cred.uid)
}

/// This process's effective uid.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// A timespec lives until its entry completes, not until a submit:
    /// after one of two timeouts fired, the other's timespec is still held,
    /// and after both, none.
    #[test]
    fn timespecs_are_held_until_their_completion() {
        let mut r = Reactor::new(8).unwrap();
        r.timeout(Duration::from_millis(300), 1).unwrap();
        r.timeout(Duration::from_millis(5), 2).unwrap();
        assert_eq!(r.timespecs_held(), 2);
        let c = r.wait().unwrap();
        assert_eq!(c.first().map(|c| c.token), Some(2), "{c:?}");
        assert_eq!(r.timespecs_held(), 1, "the pending timeout's timespec");
        let mut seen = c.len();
        while seen < 2 {
            seen += r.wait().unwrap().len();
        }
        assert_eq!(r.timespecs_held(), 0);
    }

    #[test]
    fn timeout_completes_with_etime() {
        let mut r = Reactor::new(8).unwrap();
        let t0 = Instant::now();
        r.timeout(Duration::from_millis(20), 7).unwrap();
        let c = r.wait().unwrap();
        assert_eq!(
            c,
            vec![Completion {
                token: 7,
                result: -libc::ETIME
            }]
        );
        assert!(t0.elapsed() >= Duration::from_millis(15));
    }

    #[test]
    fn connect_to_a_closed_port_is_refused_and_to_a_listener_succeeds() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let open = l.local_addr().unwrap();
        drop(l);
        let mut r = Reactor::new(8).unwrap();
        let fd = probe_socket(open, false).unwrap();
        let sa = SockAddr::new(open);
        r.connect(fd.as_raw_fd(), &sa, Duration::from_secs(1), 1)
            .unwrap();
        let c = r.wait().unwrap();
        assert_eq!(c[0].result, -libc::ECONNREFUSED);

        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        let fd = probe_socket(a, false).unwrap();
        let sa = SockAddr::new(a);
        r.connect(fd.as_raw_fd(), &sa, Duration::from_secs(1), 2)
            .unwrap();
        let c = r.wait().unwrap();
        assert_eq!(
            c,
            vec![Completion {
                token: 2,
                result: 0
            }]
        );
    }

    #[test]
    fn file_watch_sees_a_rename_over_the_file() {
        let dir = std::env::temp_dir().join(format!("xdpvs-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c.toml");
        std::fs::write(&f, "a").unwrap();
        let w = FileWatch::new(&f).unwrap();
        assert!(!w.changed());
        std::fs::write(dir.join("other"), "x").unwrap();
        assert!(!w.changed(), "another file in the directory is not news");
        let tmp = dir.join("c.toml.tmp");
        std::fs::write(&tmp, "b").unwrap();
        std::fs::rename(&tmp, &f).unwrap();
        assert!(w.changed());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
