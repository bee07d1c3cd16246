//! Signals as a file descriptor (signalfd), so the control loop (and later
//! its io_uring ring) reads them like any other event. The signals are
//! blocked in the calling thread *before* the shard threads start, so every
//! thread inherits the mask and only the signalfd sees them.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// Signals the director reacts to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM or SIGINT: stop cleanly.
    Stop,
    /// SIGHUP: reload the config.
    Reload,
}

pub struct Signals {
    fd: OwnedFd,
}

impl Signals {
    /// Block SIGINT, SIGTERM and SIGHUP and open a signalfd for them.
    pub fn new() -> io::Result<Signals> {
        // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it
        // fully before use, and pthread_sigmask only reads it.
        let fd = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::sigaddset(&mut set, libc::SIGHUP);
            if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
            libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC)
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: signalfd returned a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Signals { fd })
    }

    pub fn fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// Wait up to `timeout` for a signal.
    pub fn wait(&self, timeout: Duration) -> io::Result<Option<Signal>> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd, count 1.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(None);
            }
            return Err(e);
        }
        if n == 0 {
            return Ok(None);
        }
        self.read()
    }

    /// Read one pending signal, if any.
    pub fn read(&self) -> io::Result<Option<Signal>> {
        let mut info = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
        // SAFETY: the buffer is exactly one signalfd_siginfo long.
        let n = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                info.as_mut_ptr() as *mut libc::c_void,
                info.len(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                return Ok(None);
            }
            return Err(e);
        }
        if (n as usize) < 4 {
            return Ok(None);
        }
        let signo = u32::from_ne_bytes([info[0], info[1], info[2], info[3]]) as i32;
        Ok(match signo {
            libc::SIGHUP => Some(Signal::Reload),
            libc::SIGINT | libc::SIGTERM => Some(Signal::Stop),
            _ => None,
        })
    }
}
