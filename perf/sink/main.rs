//! `xdpvs-sink`: the receiving end of the benchmark, on the real servers.
//!
//! For each namespace given (`--netns xdpvs-rs1,xdpvs-rs2,...`) it attaches a
//! small XDP program to `--iface` that redirects to an AF_XDP socket only
//! IPv4 UDP/TCP frames addressed to the interface's MAC with a destination
//! port in `--ports` (ARP, ICMP and everything else still reach the real
//! server's kernel). One thread reads all the sockets, checks each frame's
//! IP and L4 checksums and the payload written by `xdpvs-loadgen` (magic,
//! run id, sequence number, CLOCK_MONOTONIC timestamp), counts packets,
//! duplicates and reordering, and records the one-way latency (same host,
//! same clock) in an HdrHistogram.
//!
//! It prints `ready` once attached, and stops at `--duration`, after
//! `--idle-exit` seconds without packets (once some arrived), or on
//! SIGINT/SIGTERM; then writes `--json` (summary) and `--hgrm` (percentile
//! distribution in µs) and detaches.

#[path = "../common/mod.rs"]
mod common;

use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::ExitCode;

use clap::Parser;
use common::*;
use hdrhistogram::Histogram;
use xdpvs::dataplane::xsk::{RxFrame, ShardXsk, XskConfig};

#[derive(Parser, Debug)]
#[command(name = "xdpvs-sink", about = "AF_XDP benchmark sink")]
struct Args {
    /// Network namespaces of the real servers, comma separated.
    #[arg(long, value_delimiter = ',')]
    netns: Vec<String>,
    /// Interface in each namespace.
    #[arg(long = "iface", alias = "if", default_value = "eth0")]
    iface: String,
    /// Destination ports to capture, "P" or "A-B".
    #[arg(long, default_value = "10000-10099")]
    ports: String,
    /// XDP attach mode: native or generic.
    #[arg(long, default_value = "native")]
    xdp_mode: String,
    /// Count only this run id (others are "foreign").
    #[arg(long)]
    run_id: Option<u16>,
    /// Longest run, seconds (mandatory cap).
    #[arg(long)]
    duration: f64,
    /// Stop after this many seconds without packets, once packets arrived (0: never).
    #[arg(long, default_value_t = 0.0)]
    idle_exit: f64,
    /// Write the summary JSON here (also printed on stdout).
    #[arg(long)]
    json: Option<String>,
    /// Write the latency histogram (µs) here, HdrHistogram percentile format.
    #[arg(long)]
    hgrm: Option<String>,
    /// Pin to this CPU.
    #[arg(long)]
    cpu: Option<usize>,
    /// Busy-poll this long (µs) after the last packet before blocking in poll().
    #[arg(long, default_value_t = 0)]
    spin_us: u64,
    /// RX ring entries per socket (power of two).
    #[arg(long, default_value_t = 8192)]
    ring: u32,
    /// Write a latency timeline here: per 10 ms of send time (from the first
    /// packet's timestamp), packets and their p50/max latency in µs.
    #[arg(long)]
    timeline: Option<String>,
}

// ---- a minimal XDP filter, assembled here and loaded with bpf() ----------

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_MAP_TYPE_XSKMAP: u32 = 17;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
const XDP_FLAGS_SKB_MODE: u32 = 2;
const XDP_FLAGS_DRV_MODE: u32 = 4;

fn bpf(cmd: libc::c_long, attr: &mut [u8; 128]) -> io::Result<RawFd> {
    // SAFETY: `attr` is a zero-padded bpf_attr for `cmd`; the pointers in
    // it refer to buffers that outlive the call.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as RawFd)
}

fn a32(a: &mut [u8; 128], off: usize, v: u32) {
    a[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}

fn a64(a: &mut [u8; 128], off: usize, v: u64) {
    a[off..off + 8].copy_from_slice(&v.to_ne_bytes());
}

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
    let mut i = [0u8; 8];
    i[0] = code;
    i[1] = (src << 4) | (dst & 0xf);
    i[2..4].copy_from_slice(&off.to_ne_bytes());
    i[4..8].copy_from_slice(&imm.to_ne_bytes());
    i
}

/// One XSKMAP + program + link on one interface (detached on drop).
struct SinkProg {
    map: OwnedFd,
    _prog: OwnedFd,
    _link: Option<OwnedFd>,
}

fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: a fresh fd returned by bpf(), owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// The program: pass unless the frame is IPv4 (no options) UDP/TCP to our
/// MAC with a destination port in lo..=hi; redirect those to XSKMAP[queue].
#[cfg(test)]
fn program(map_fd: RawFd, mac: [u8; 6], lo: u16, hi: u16) -> Vec<u8> {
    program_with_fallback(map_fd, mac, lo, hi, 2)
}

/// `fallback`: what a matching frame returns when XSKMAP has no socket for
/// its queue (XDP_PASS; the self-test uses XDP_TX to see the match).
fn program_with_fallback(map_fd: RawFd, mac: [u8; 6], lo: u16, hi: u16, fallback: i32) -> Vec<u8> {
    const PASS: i16 = 27; // index of the PASS label
    let mac_lo = i32::from_ne_bytes([mac[0], mac[1], mac[2], mac[3]]);
    let mac_hi = i32::from(u16::from_ne_bytes([mac[4], mac[5]]));
    let ethertype = i32::from(u16::from_ne_bytes([0x08, 0x00]));
    let mut v: Vec<[u8; 8]> = Vec::new();
    let j = |at: usize| PASS - at as i16 - 1; // offset to PASS from insn `at`
    v.push(insn(0xbf, 6, 1, 0, 0)); // 0: r6 = r1
    v.push(insn(0x61, 2, 1, 0, 0)); // 1: r2 = ctx->data
    v.push(insn(0x61, 3, 1, 4, 0)); // 2: r3 = ctx->data_end
    v.push(insn(0xbf, 4, 2, 0, 0)); // 3: r4 = r2
    v.push(insn(0x07, 4, 0, 0, 38)); // 4: r4 += 38
    v.push(insn(0x2d, 4, 3, j(5), 0)); // 5: if r4 > r3 goto PASS
    v.push(insn(0x61, 5, 2, 0, 0)); // 6: r5 = *(u32*)(r2+0)
    v.push(insn(0x56, 5, 0, j(7), mac_lo)); // 7: if w5 != mac_lo goto PASS
    v.push(insn(0x69, 5, 2, 4, 0)); // 8: r5 = *(u16*)(r2+4)
    v.push(insn(0x56, 5, 0, j(9), mac_hi)); // 9
    v.push(insn(0x69, 5, 2, 12, 0)); // 10: ethertype
    v.push(insn(0x55, 5, 0, j(11), ethertype)); // 11
    v.push(insn(0x71, 5, 2, 14, 0)); // 12: version/ihl
    v.push(insn(0x55, 5, 0, j(13), 0x45)); // 13
    v.push(insn(0x71, 5, 2, 23, 0)); // 14: protocol
    v.push(insn(0x15, 5, 0, 1, 17)); // 15: if r5 == 17 goto 17
    v.push(insn(0x55, 5, 0, j(16), 6)); // 16: if r5 != 6 goto PASS
    v.push(insn(0x69, 5, 2, 36, 0)); // 17: dst port (network order)
    v.push(insn(0xdc, 5, 0, 0, 16)); // 18: r5 = be16(r5)
    v.push(insn(0xa5, 5, 0, j(19), i32::from(lo))); // 19: if r5 < lo goto PASS
    v.push(insn(0x25, 5, 0, j(20), i32::from(hi))); // 20: if r5 > hi goto PASS
    v.push(insn(0x61, 2, 6, 16, 0)); // 21: r2 = ctx->rx_queue_index
    v.push(insn(0x18, 1, 1, 0, map_fd)); // 22: r1 = map (ld_imm64)
    v.push(insn(0, 0, 0, 0, 0)); // 23
    v.push(insn(0xb7, 3, 0, 0, fallback)); // 24: r3 = XDP_PASS
    v.push(insn(0x85, 0, 0, 0, 51)); // 25: call bpf_redirect_map
    v.push(insn(0x95, 0, 0, 0, 0)); // 26: exit
    v.push(insn(0xb7, 0, 0, 0, 2)); // 27 PASS: r0 = XDP_PASS
    v.push(insn(0x95, 0, 0, 0, 0)); // 28: exit
    debug_assert_eq!(v.len(), PASS as usize + 2);
    v.concat()
}

impl SinkProg {
    fn load(mac: [u8; 6], lo: u16, hi: u16) -> io::Result<SinkProg> {
        Self::load_with(mac, lo, hi, 2)
    }

    fn load_with(mac: [u8; 6], lo: u16, hi: u16, fallback: i32) -> io::Result<SinkProg> {
        let mut a = [0u8; 128];
        a32(&mut a, 0, BPF_MAP_TYPE_XSKMAP);
        a32(&mut a, 4, 4);
        a32(&mut a, 8, 4);
        a32(&mut a, 12, 64);
        let map = owned(bpf(BPF_MAP_CREATE, &mut a)?);
        let code = program_with_fallback(map.as_raw_fd(), mac, lo, hi, fallback);
        let license = b"GPL\0";
        let mut log = vec![0u8; 16384];
        let mut a = [0u8; 128];
        a32(&mut a, 0, BPF_PROG_TYPE_XDP);
        a32(&mut a, 4, (code.len() / 8) as u32);
        a64(&mut a, 8, code.as_ptr() as u64);
        a64(&mut a, 16, license.as_ptr() as u64);
        a32(&mut a, 24, 1);
        a32(&mut a, 28, log.len() as u32);
        a64(&mut a, 32, log.as_mut_ptr() as u64);
        a32(&mut a, 68, BPF_XDP);
        let prog = match bpf(BPF_PROG_LOAD, &mut a) {
            Ok(fd) => owned(fd),
            Err(e) => {
                let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                let msg = String::from_utf8_lossy(&log[..end]).into_owned();
                return Err(io::Error::new(e.kind(), format!("{e}: {msg}")));
            }
        };
        Ok(SinkProg {
            map,
            _prog: prog,
            _link: None,
        })
    }

    fn insert(&self, queue: u32, fd: RawFd) -> io::Result<()> {
        let key = queue;
        let val = fd as u32;
        let mut a = [0u8; 128];
        a32(&mut a, 0, self.map.as_raw_fd() as u32);
        a64(&mut a, 8, &key as *const u32 as u64);
        a64(&mut a, 16, &val as *const u32 as u64);
        bpf(BPF_MAP_UPDATE_ELEM, &mut a).map(|_| ())
    }

    fn attach(&mut self, ifindex: u32, flags: u32) -> io::Result<()> {
        let mut a = [0u8; 128];
        a32(&mut a, 0, self._prog.as_raw_fd() as u32);
        a32(&mut a, 4, ifindex);
        a32(&mut a, 8, BPF_XDP);
        a32(&mut a, 12, flags);
        self._link = Some(owned(bpf(BPF_LINK_CREATE, &mut a)?));
        Ok(())
    }
}

// ---- counting -------------------------------------------------------------

struct Port {
    ns: String,
    xsk: ShardXsk,
    _prog: SinkProg,
    received: u64,
    reordered: u64,
    last_max: Option<u64>,
}

#[derive(Default)]
struct Totals {
    received: u64,
    unique: u64,
    duplicates: u64,
    foreign: u64,
    bad_csum: u64,
    clock_skew: u64,
    max_seq: Option<u64>,
    first_ns: u64,
    last_ns: u64,
    seen: Vec<u64>,
}

/// Timeline bucket (send time) and most buckets kept (10 minutes).
const TL_BUCKET_NS: u64 = 10_000_000;
const TL_MAX_BUCKETS: usize = 60_000;

/// Sequence numbers tracked for duplicates (2^30 = 128 MiB of bitmap at most).
const SEEN_LIMIT: u64 = 1 << 30;

/// Parse one frame: (run id, seq, timestamp) if it carries our payload and
/// valid checksums; Err(true) for a bad checksum, Err(false) for foreign.
fn parse(b: &[u8]) -> Result<(u16, u64, u64), bool> {
    if b.len() < ETH_LEN + IP4_LEN || b[12..14] != [0x08, 0x00] || b[14] != 0x45 {
        return Err(false);
    }
    let ip = ETH_LEN;
    let total = usize::from(u16::from_be_bytes([b[ip + 2], b[ip + 3]]));
    if total < IP4_LEN || ip + total > b.len() {
        return Err(false);
    }
    if !csum_ok(csum_add(0, &b[ip..ip + IP4_LEN])) {
        return Err(true);
    }
    let l4 = ip + IP4_LEN;
    let seg = total - IP4_LEN;
    let hdr = match b[ip + 9] {
        17 => UDP_LEN,
        6 if seg >= TCP_LEN => usize::from(b[l4 + 12] >> 4) * 4,
        _ => return Err(false),
    };
    if seg < hdr + PAYLOAD_LEN {
        return Err(false);
    }
    let mut s = csum_add(0, &b[ip + 12..ip + 20]);
    s = s
        .wrapping_add(u32::from(b[ip + 9]))
        .wrapping_add(seg as u32);
    s = csum_add(s, &b[l4..l4 + seg]);
    let udp_no_csum = b[ip + 9] == 17 && b[l4 + 6] == 0 && b[l4 + 7] == 0;
    if !udp_no_csum && !csum_ok(s) {
        return Err(true);
    }
    let p = &b[l4 + hdr..l4 + hdr + PAYLOAD_LEN];
    if u16::from_le_bytes([p[0], p[1]]) != MAGIC {
        return Err(false);
    }
    let run = u16::from_le_bytes([p[2], p[3]]);
    let seq = u64::from_le_bytes(p[4..12].try_into().map_err(|_| false)?);
    let ts = u64::from_le_bytes(p[12..20].try_into().map_err(|_| false)?);
    Ok((run, seq, ts))
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xdpvs-sink: {e}");
            ExitCode::from(1)
        }
    }
}

fn open_port(ns: &str, a: &Args, lo: u16, hi: u16, flags: u32) -> Result<Port, String> {
    setns(ns)?;
    let ifindex = ifindex(&a.iface)?;
    let mac = if_mac(&a.iface)?;
    let cfg = XskConfig {
        frame_count: a.ring * 4,
        frame_size: 2048,
        ring_size: a.ring,
        batch: 128,
        ..XskConfig::default()
    };
    let xsk = ShardXsk::new(&cfg, &[(ifindex, 0)]).map_err(|e| format!("{ns}: {e}"))?;
    let mut prog = SinkProg::load(mac, lo, hi).map_err(|e| format!("{ns}: load XDP: {e}"))?;
    for s in xsk.sockets(0) {
        prog.insert(s.queue, s.fd)
            .map_err(|e| format!("{ns}: xskmap: {e}"))?;
    }
    prog.attach(ifindex, flags)
        .map_err(|e| format!("{ns}: attach XDP to {}: {e}", a.iface))?;
    Ok(Port {
        ns: ns.to_string(),
        xsk,
        _prog: prog,
        received: 0,
        reordered: 0,
        last_max: None,
    })
}

fn run(a: &Args) -> Result<(), String> {
    if a.netns.is_empty() {
        return Err("--netns is required".into());
    }
    if !(a.duration > 0.0 && a.duration <= 86_400.0) {
        return Err("--duration must be in (0, 86400]".into());
    }
    let (lo, hi) = parse_range(&a.ports)?;
    let flags = match a.xdp_mode.as_str() {
        "native" => XDP_FLAGS_DRV_MODE,
        "generic" => XDP_FLAGS_SKB_MODE,
        m => return Err(format!("--xdp-mode {m:?}: native or generic")),
    };
    install_stop_handler();
    if let Some(c) = a.cpu {
        pin_cpu(c)?;
    }
    // Open every port from this thread (sockets and links keep the
    // namespace they were created in).
    let mut ports = Vec::new();
    for ns in &a.netns {
        ports.push(open_port(ns, a, lo, hi, flags)?);
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)
        .map_err(|e| format!("histogram: {e}"))?;
    let mut t = Totals::default();
    println!("ready");
    let _ = io::stdout().flush();

    let start = mono_ns();
    let deadline = start + (a.duration * 1e9) as u64;
    let idle_ns = (a.idle_exit * 1e9) as u64;
    let spin_ns = a.spin_us * 1000;
    let mut last_rx = start;
    let mut got_any = false;
    let mut frames: Vec<RxFrame> = Vec::with_capacity(256);
    let mut tl_t0: Option<u64> = None;
    let mut timeline: Vec<Vec<u32>> = Vec::new();
    let mut pfds: Vec<libc::pollfd> = ports
        .iter()
        .flat_map(|p| p.xsk.fds().collect::<Vec<_>>())
        .map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    loop {
        let now = mono_ns();
        if stopped() || now >= deadline {
            break;
        }
        let mut n = 0usize;
        for p in ports.iter_mut() {
            frames.clear();
            p.xsk.receive(0, &mut frames);
            n += frames.len();
            for f in &frames {
                let now = mono_ns();
                if let Some(fr) = p.xsk.frame_mut(f.base) {
                    let end = (f.start + f.len).min(fr.len());
                    match parse(&fr[f.start.min(end)..end]) {
                        Ok((run, seq, ts)) if a.run_id.is_none_or(|r| r == run) => {
                            p.received += 1;
                            t.received += 1;
                            if t.first_ns == 0 {
                                t.first_ns = now;
                            }
                            t.last_ns = now;
                            if p.last_max.is_some_and(|m| seq < m) {
                                p.reordered += 1;
                            } else {
                                p.last_max = Some(seq);
                            }
                            t.max_seq = Some(t.max_seq.map_or(seq, |m| m.max(seq)));
                            if seq < SEEN_LIMIT {
                                let w = (seq / 64) as usize;
                                if w >= t.seen.len() {
                                    t.seen.resize((w + 1).next_power_of_two(), 0);
                                }
                                let bit = 1u64 << (seq % 64);
                                if t.seen[w] & bit != 0 {
                                    t.duplicates += 1;
                                } else {
                                    t.seen[w] |= bit;
                                    t.unique += 1;
                                }
                            } else {
                                t.unique += 1;
                            }
                            if now >= ts {
                                hist.saturating_record((now - ts).max(1));
                                if a.timeline.is_some() {
                                    let t0 = *tl_t0.get_or_insert(ts);
                                    let b = (ts.saturating_sub(t0) / TL_BUCKET_NS) as usize;
                                    if b < TL_MAX_BUCKETS {
                                        if b >= timeline.len() {
                                            timeline.resize_with(b + 1, Vec::new);
                                        }
                                        if let Some(v) = timeline.get_mut(b) {
                                            v.push(((now - ts) / 1000) as u32);
                                        }
                                    }
                                }
                            } else {
                                t.clock_skew += 1;
                            }
                        }
                        Ok(_) | Err(false) => t.foreign += 1,
                        Err(true) => t.bad_csum += 1,
                    }
                }
                p.xsk.recycle(f.base);
            }
            p.xsk.refill();
        }
        if n > 0 {
            got_any = true;
            last_rx = mono_ns();
            continue;
        }
        let now = mono_ns();
        if got_any && idle_ns > 0 && now - last_rx > idle_ns {
            break;
        }
        if now - last_rx < spin_ns {
            std::hint::spin_loop();
            continue;
        }
        for p in pfds.iter_mut() {
            p.revents = 0;
        }
        // SAFETY: `pfds` is a valid array of pollfd for the call.
        unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 10) };
    }

    let q = |x: f64| hist.value_at_quantile(x) as f64 / 1000.0;
    let per_port: Vec<serde_json::Value> = ports
        .iter()
        .map(|p| {
            let (rx_dropped, ring_full, fill_empty, _) = p.xsk.kernel_stats();
            serde_json::json!({
                "netns": p.ns,
                "received": p.received,
                "reordered": p.reordered,
                "xsk_rx_dropped": rx_dropped,
                "xsk_rx_ring_full": ring_full,
                "xsk_fill_empty": fill_empty,
            })
        })
        .collect();
    let xsk_drops: u64 = ports
        .iter()
        .map(|p| {
            let (d, f, _, _) = p.xsk.kernel_stats();
            d.max(f)
        })
        .sum();
    let summary = serde_json::json!({
        "received": t.received,
        "unique": t.unique,
        "duplicates": t.duplicates,
        "reordered": ports.iter().map(|p| p.reordered).sum::<u64>(),
        "foreign": t.foreign,
        "bad_csum": t.bad_csum,
        "clock_skew": t.clock_skew,
        "max_seq": t.max_seq,
        "first_ns": t.first_ns,
        "last_ns": t.last_ns,
        "xsk_drops": xsk_drops,
        "lat_us": {
            "count": hist.len(),
            "p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "p999": q(0.999),
            "max": hist.max() as f64 / 1000.0,
            "mean": hist.mean() / 1000.0,
        },
        "ports": per_port,
    });
    println!("{summary}");
    if let Some(path) = &a.json {
        std::fs::write(path, format!("{summary}\n")).map_err(|e| format!("{path}: {e}"))?;
    }
    if let Some(path) = &a.timeline {
        let mut o = String::from("# ms packets p50_us max_us\n");
        for (i, v) in timeline.iter_mut().enumerate() {
            v.sort_unstable();
            let p50 = v.get(v.len() / 2).copied().unwrap_or(0);
            let max = v.last().copied().unwrap_or(0);
            o.push_str(&format!(
                "{} {} {} {}\n",
                i as u64 * TL_BUCKET_NS / 1_000_000,
                v.len(),
                p50,
                max
            ));
        }
        std::fs::write(path, o).map_err(|e| format!("{path}: {e}"))?;
    }
    if let Some(path) = &a.hgrm {
        std::fs::write(path, hgrm(&hist, 1000.0)).map_err(|e| format!("{path}: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_jumps_land_on_pass() {
        let code = program(3, [2, 0, 0, 0, 0, 1], 10000, 10099);
        assert_eq!(code.len(), 29 * 8);
        for (i, c) in code.chunks(8).enumerate() {
            let op = c[0];
            if matches!(op, 0x2d | 0x56 | 0x55 | 0xa5 | 0x25) {
                let off = i16::from_ne_bytes([c[2], c[3]]);
                assert_eq!(i as i16 + 1 + off, 27, "insn {i}");
            }
        }
    }

    /// BPF_PROG_TEST_RUN of the filter (root only; skips otherwise).
    #[test]
    fn filter_matches_only_our_frames() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skip: needs root");
            return;
        }
        let mac = [2, 0xaa, 0xbb, 0xcc, 0xdd, 0xee];
        let p = SinkProg::load_with(mac, 10000, 10099, 3).expect("load");
        let run = |f: &[u8]| -> u32 {
            let mut a = [0u8; 128];
            a32(&mut a, 0, p._prog.as_raw_fd() as u32);
            a32(&mut a, 8, f.len() as u32);
            a64(&mut a, 16, f.as_ptr() as u64);
            a32(&mut a, 32, 1);
            bpf(10, &mut a).expect("test run");
            u32::from_ne_bytes(a[4..8].try_into().unwrap())
        };
        let mut f = vec![0u8; 64];
        f[..6].copy_from_slice(&mac);
        f[12] = 8;
        f[14] = 0x45;
        f[23] = 17;
        f[36..38].copy_from_slice(&10005u16.to_be_bytes());
        assert_eq!(run(&f), 3, "udp to our mac and port");
        f[23] = 6;
        assert_eq!(run(&f), 3, "tcp");
        f[36..38].copy_from_slice(&10100u16.to_be_bytes());
        assert_eq!(run(&f), 2, "port out of range");
        f[36..38].copy_from_slice(&10000u16.to_be_bytes());
        f[5] = 0;
        assert_eq!(run(&f), 2, "other mac");
        f[5] = 0xee;
        f[12] = 0x86;
        assert_eq!(run(&f), 2, "not ipv4");
    }

    #[test]
    fn parse_rejects_foreign_and_bad_checksums() {
        assert_eq!(parse(&[0u8; 60]), Err(false));
        let mut f = vec![0u8; 64];
        f[12] = 8;
        f[14] = 0x45;
        assert_eq!(parse(&f), Err(false)); // total length 0
    }
}
