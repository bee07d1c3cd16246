//! Shared by the perf bins (`xdpvs-loadgen`, `xdpvs-sink`): the payload
//! format, address parsing with the lab's address policy, checksums, the
//! monotonic clock, namespaces, CPU pinning, stop signals and the `.hgrm`
//! writer.
//!
//! Payload (after the UDP or TCP header), little endian:
//!
//! | bytes | field |
//! |---|---|
//! | 0..2  | magic `0x5856` ("XV") |
//! | 2..4  | run id |
//! | 4..12 | sequence number (0, 1, 2, ... per run) |
//! | 12..20 | CLOCK_MONOTONIC nanoseconds when the frame was written |
#![allow(dead_code)] // each bin uses a part

use std::fmt::Write as _;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};

pub const MAGIC: u16 = 0x5856;
pub const PAYLOAD_LEN: usize = 20;
pub const ETH_LEN: usize = 14;
pub const IP4_LEN: usize = 20;
pub const UDP_LEN: usize = 8;
pub const TCP_LEN: usize = 20;

/// The only IPv4 range the bench may put on the wire (RFC 2544 benchmarking).
pub const BENCH_NET4: (u32, u8) = (0xC612_0000, 15); // 198.18.0.0/15

/// CLOCK_MONOTONIC in nanoseconds (the same clock in every process of the host).
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// An IPv4 prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr4 {
    pub base: u32,
    pub len: u8,
}

impl Cidr4 {
    pub fn parse(s: &str) -> Result<Cidr4, String> {
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, l.parse::<u8>().map_err(|e| format!("{s}: {e}"))?),
            None => (s, 32),
        };
        if l > 32 {
            return Err(format!("{s}: prefix length > 32"));
        }
        let a: Ipv4Addr = a.parse().map_err(|e| format!("{s}: {e}"))?;
        let mask = mask4(l);
        Ok(Cidr4 {
            base: u32::from(a) & mask,
            len: l,
        })
    }

    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.len))
    }

    /// Host addresses: all but the network and broadcast address for
    /// prefixes shorter than /31.
    pub fn hosts(&self) -> (u32, u64) {
        if self.len >= 31 {
            (self.base, self.size())
        } else {
            (self.base + 1, self.size() - 2)
        }
    }

    pub fn contains(&self, a: u32) -> bool {
        a & mask4(self.len) == self.base
    }

    /// Whether this whole prefix lies inside `outer`.
    pub fn within(&self, outer: Cidr4) -> bool {
        self.len >= outer.len && outer.contains(self.base)
    }
}

pub fn mask4(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

pub fn bench_net4() -> Cidr4 {
    Cidr4 {
        base: BENCH_NET4.0,
        len: BENCH_NET4.1,
    }
}

/// Refuse anything outside 198.18.0.0/15.
pub fn check_bench4(what: &str, c: Cidr4) -> Result<(), String> {
    if c.within(bench_net4()) {
        Ok(())
    } else {
        Err(format!(
            "{what} {}/{} is outside 198.18.0.0/15 (the only range this tool sends)",
            Ipv4Addr::from(c.base),
            c.len
        ))
    }
}

/// `"80"` or `"10000-10099"` -> inclusive range.
pub fn parse_range(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let a: u16 = a.trim().parse().map_err(|e| format!("{s}: {e}"))?;
    let b: u16 = b.trim().parse().map_err(|e| format!("{s}: {e}"))?;
    if a > b || a == 0 {
        return Err(format!("{s}: bad port range"));
    }
    Ok((a, b))
}

pub fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let mut m = [0u8; 6];
    let mut it = s.trim().split(':');
    for b in m.iter_mut() {
        let p = it.next().ok_or_else(|| format!("bad MAC {s:?}"))?;
        *b = u8::from_str_radix(p, 16).map_err(|_| format!("bad MAC {s:?}"))?;
    }
    if it.next().is_some() {
        return Err(format!("bad MAC {s:?}"));
    }
    Ok(m)
}

/// MAC of interface `name` in the calling thread's namespace (SIOCGIFHWADDR:
/// `/sys` would show the namespace the process was started in, not the one
/// a thread entered with setns).
pub fn if_mac(name: &str) -> Result<[u8; 6], String> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(format!("bad interface name {name:?}"));
    }
    // SAFETY: a plain datagram socket, closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(format!("socket: {}", io::Error::last_os_error()));
    }
    // SAFETY: ifreq is plain data; the name is NUL-terminated (length checked).
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: SIOCGIFHWADDR fills `ifr` for a valid socket.
    let r = unsafe { libc::ioctl(fd, libc::SIOCGIFHWADDR, &mut ifr) };
    let err = io::Error::last_os_error();
    // SAFETY: our own fd.
    unsafe { libc::close(fd) };
    if r != 0 {
        return Err(format!("SIOCGIFHWADDR {name}: {err}"));
    }
    // SAFETY: the kernel filled the hwaddr member of the union.
    let sa = unsafe { ifr.ifr_ifru.ifru_hwaddr };
    let mut m = [0u8; 6];
    for (d, s) in m.iter_mut().zip(sa.sa_data.iter()) {
        *d = *s as u8;
    }
    Ok(m)
}

pub fn ifindex(name: &str) -> Result<u32, String> {
    let c = std::ffi::CString::new(name).map_err(|e| e.to_string())?;
    // SAFETY: valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        Err(format!(
            "no interface {name}: {}",
            io::Error::last_os_error()
        ))
    } else {
        Ok(i)
    }
}

/// Ones' complement sum of big-endian 16-bit words (odd byte padded).
pub fn csum_add(mut sum: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum = sum.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
    }
    if let [b] = chunks.remainder() {
        sum = sum.wrapping_add(u32::from(*b) << 8);
    }
    sum
}

pub fn csum_fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Verify a checksum over data that includes it: true when valid.
pub fn csum_ok(sum: u32) -> bool {
    csum_fold(sum) == 0
}

/// Enter network namespace `name` (calling thread only).
pub fn setns(name: &str) -> Result<(), String> {
    let path = format!("/var/run/netns/{name}");
    let f = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
    // SAFETY: setns on a valid namespace fd, for this thread.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if r != 0 {
        return Err(format!("setns {path}: {}", io::Error::last_os_error()));
    }
    Ok(())
}

/// Pin the calling thread to `cpu`.
pub fn pin_cpu(cpu: usize) -> Result<(), String> {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(format!("pin to cpu {cpu}: {}", io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// Finer sleeps (the default timer slack is 50 µs).
pub fn fine_timer_slack() {
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1u64, 0u64, 0u64, 0u64);
    }
}

pub static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// SIGINT / SIGTERM set [`STOP`].
pub fn install_stop_handler() {
    // SAFETY: the handler only stores to an atomic (async-signal-safe).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGINT, &sa, std::ptr::null_mut());
        libc::sigaction(libc::SIGTERM, &sa, std::ptr::null_mut());
    }
}

pub fn stopped() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// The histogram in HdrHistogram's percentile distribution format
/// (`outputPercentileDistribution`), values divided by `scale` (1000.0:
/// recorded in ns, printed in µs).
pub fn hgrm(h: &hdrhistogram::Histogram<u64>, scale: f64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    if !h.is_empty() {
        for v in h.iter_quantiles(5) {
            total += v.count_since_last_iteration();
            let q = v.quantile_iterated_to();
            let val = v.value_iterated_to() as f64 / scale;
            if q >= 1.0 {
                let _ = writeln!(out, "{val:12.3} {q:2.12} {total:10}");
            } else {
                let inv = 1.0 / (1.0 - q);
                let _ = writeln!(out, "{val:12.3} {q:2.12} {total:10} {inv:14.2}");
            }
        }
    }
    let sub_buckets = 1u64 << (64 - (2 * 10u64.pow(u32::from(h.sigfig())) - 1).leading_zeros());
    let _ = writeln!(
        out,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]",
        h.mean() / scale,
        h.stdev() / scale
    );
    let _ = writeln!(
        out,
        "#[Max     = {:12.3}, Total count    = {:12}]",
        h.max() as f64 / scale,
        h.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        sub_buckets
    );
    out
}

/// A small xorshift generator (no external crate needed).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_policy() {
        let c = Cidr4::parse("198.18.100.0/22").unwrap();
        assert_eq!(c.hosts(), (0xC612_6401, 1022));
        assert!(check_bench4("src", c).is_ok());
        assert!(check_bench4("src", Cidr4::parse("198.20.0.0/16").unwrap()).is_err());
        assert!(check_bench4("src", Cidr4::parse("198.18.0.0/14").unwrap()).is_err());
        assert!(check_bench4("dst", Cidr4::parse("198.19.255.255").unwrap()).is_ok());
    }

    #[test]
    fn checksum_of_known_header() {
        // RFC 1071 style example: an IPv4 header with its checksum verifies.
        let h = [
            0x45u8, 0, 0, 0x73, 0, 0, 0x40, 0, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0, 1, 0xc0,
            0xa8, 0, 0xc7,
        ];
        assert!(csum_ok(csum_add(0, &h)));
    }

    #[test]
    fn hgrm_has_footer() {
        let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
        for v in [1000u64, 2000, 3000, 50_000] {
            h.record(v).unwrap();
        }
        let s = hgrm(&h, 1000.0);
        assert!(s.contains("Total count    =            4"), "{s}");
        assert!(s.contains("SubBuckets     =         2048"), "{s}");
    }
}
