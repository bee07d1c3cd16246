//! `xdpvs-loadgen`: an AF_XDP (copy mode) TX load generator for the xdpvs lab.
//!
//! Builds complete Ethernet/IPv4/UDP or TCP frames with valid IP and L4
//! checksums from many client addresses and ports, with a 20-byte payload
//! (magic, run id, sequence number, CLOCK_MONOTONIC timestamp: see
//! `perf/common/mod.rs`), and sends them at a target rate or flat out. Both
//! `--count` and `--duration` are mandatory caps: it stops at the first one
//! reached (or on SIGINT/SIGTERM). Every address must be in 198.18.0.0/15.
//!
//! Run it inside the namespace that owns the interface, e.g.
//! `ip netns exec xdpvs-rt xdpvs-loadgen --iface lan0 --dst-mac ... --count 1000000 --duration 10`.
//! Prints a JSON summary on stdout.
//!
//! `--mode live`: no socket: `bpf/loadgen.c` run with BPF_PROG_RUN and
//! BPF_F_TEST_XDP_LIVE_FRAMES on the interface (src/xdp/livegen.rs) writes
//! each packet into a recycled kernel frame and sends it with XDP_TX, at
//! about twice the AF_XDP mode's rate on the bench's lab. UDP only (the same packets, flows
//! and payload as the AF_XDP mode). The interface's peer must have an XDP
//! program (perf/bench.sh attaches bpf/xdp_pass.o to the router's bridge port
//! `rt`). "sent" is what the interface's counters say left it (tx_packets,
//! which for XDP frames on veth counts what the peer took), not the frames
//! generated ("generated").
//!
//! `--syn-flood`: TCP SYNs (no payload unless `--with-payload`) from random
//! spoofed sources in `--flood-src` (default, and at most, 198.18.0.0/15),
//! random source ports and sequence numbers, to `--dst`:`--dst-ports`.

#[path = "../common/mod.rs"]
mod common;

use std::net::Ipv4Addr;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use common::*;
use xdpvs::dataplane::xsk::{ShardXsk, XskConfig};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Proto {
    /// UDP datagrams.
    Udp,
    /// TCP SYN only (every packet a connection attempt).
    Syn,
    /// TCP ACK only.
    Ack,
    /// TCP: a SYN for the first packet of each flow, then ACKs.
    Tcp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// AF_XDP copy-mode TX socket (any --proto, --syn-flood).
    Afxdp,
    /// BPF_PROG_RUN with live frames (UDP only).
    Live,
}

#[derive(Parser, Debug)]
#[command(
    name = "xdpvs-loadgen",
    about = "AF_XDP load generator (198.18.0.0/15 only)"
)]
struct Args {
    /// Interface to send on (in the current network namespace).
    #[arg(long = "iface", alias = "if")]
    iface: String,
    /// Destination MAC (the next hop: the director, or a router).
    #[arg(long)]
    dst_mac: String,
    /// Source MAC (default: the interface's own).
    #[arg(long)]
    src_mac: Option<String>,
    /// Client source addresses (a prefix inside 198.18.0.0/15).
    #[arg(long, default_value = "198.18.100.0/22")]
    src: String,
    /// Client source ports, "A-B".
    #[arg(long, default_value = "1024-65535")]
    src_ports: String,
    /// Distinct flows (src addr x src port x dst port), used round-robin.
    /// Default: min(16384, all combinations).
    #[arg(long)]
    flows: Option<u64>,
    /// Destination address (the VIP), inside 198.18.0.0/15.
    #[arg(long, default_value = "198.18.0.100")]
    dst: String,
    /// Destination ports, "P" or "A-B" (flows spread over them).
    #[arg(long, default_value = "10000")]
    dst_ports: String,
    /// What to send.
    #[arg(long, value_enum, default_value = "udp")]
    proto: Proto,
    /// Packets per second; 0 = as fast as possible.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Maximum number of packets (mandatory cap).
    #[arg(long)]
    count: u64,
    /// Maximum seconds (mandatory cap).
    #[arg(long)]
    duration: f64,
    /// Frame length in bytes without FCS (padded; at least the headers + payload).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Run id written into the payload (the sink can filter on it).
    #[arg(long, default_value_t = 0)]
    run_id: u16,
    /// Pin to this CPU.
    #[arg(long)]
    cpu: Option<usize>,
    /// TX queue of the interface.
    #[arg(long, default_value_t = 0)]
    queue: u32,
    /// Frames per TX batch.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// SYN flood: random spoofed sources from --flood-src, random ports and
    /// sequence numbers, to --dst:--dst-ports (ignores --src/--src-ports/--flows/--proto).
    #[arg(long)]
    syn_flood: bool,
    /// Source prefix of the SYN flood (must be inside 198.18.0.0/15).
    #[arg(long, default_value = "198.18.0.0/15")]
    flood_src: String,
    /// Random seed of the SYN flood (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Put the timestamp/sequence payload into flood SYNs too.
    #[arg(long)]
    with_payload: bool,
    /// How to send: an AF_XDP socket, or live frames of BPF_PROG_RUN.
    #[arg(long, value_enum, default_value = "afxdp")]
    mode: Mode,
    /// Live mode, flat out: target milliseconds of one BPF_PROG_RUN call
    /// (sized from the rate measured so far, and never past --duration).
    /// Each call has a fixed cost of ~20-30 ms on these machines (the
    /// process sleeps in it), so calls must be long: 8192-packet calls ran
    /// at a quarter of the rate, 250 ms calls lost ~12 %, 500 ms ~6 %.
    #[arg(long, default_value_t = 500)]
    live_call_ms: u64,
    /// Live mode: attach the program natively to this idle interface (one
    /// that receives nothing, e.g. a spare veth) for the run, which removes
    /// the fixed cost of a call (see LiveGen::pin_dispatcher).
    #[arg(long)]
    pin_iface: Option<String>,
}

/// Everything needed to write packet `seq`.
struct Gen {
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src_base: u32,
    n_src: u64,
    sport_lo: u16,
    n_sport: u64,
    dst: u32,
    dport_lo: u16,
    n_dport: u64,
    flows: u64,
    proto: Proto,
    size: usize,
    run_id: u16,
    flood: Option<(Cidr4, Rng)>,
    payload: bool,
}

fn put16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_be_bytes());
}

fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_be_bytes());
}

fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x
}

impl Gen {
    /// Write packet `seq` into `buf`; returns its length.
    fn write(&mut self, buf: &mut [u8], seq: u64, now: u64) -> usize {
        let (src, sport, dport, tcp_flags, tcp_seq, udp) = match &mut self.flood {
            Some((c, rng)) => {
                let r = rng.next_u64();
                let src = c.base.wrapping_add((r % c.size()) as u32);
                let r2 = rng.next_u64();
                let sport = 1024 + (r2 % 64512) as u16;
                let dport = self.dport_lo + ((r2 >> 16) % self.n_dport) as u16;
                (src, sport, dport, 0x02u8, (r2 >> 32) as u32, false)
            }
            None => {
                let f = seq % self.flows;
                let round = seq / self.flows;
                let ip = f % self.n_src;
                let rest = f / self.n_src;
                let sport = self.sport_lo + (rest % self.n_sport) as u16;
                let dport = self.dport_lo + ((rest / self.n_sport) % self.n_dport) as u16;
                let isn = mix(f ^ 0x5eed) as u32;
                let (flags, s, udp) = match self.proto {
                    Proto::Udp => (0, 0, true),
                    Proto::Syn => (0x02, isn, false),
                    Proto::Ack => (0x10, isn.wrapping_add(1 + round as u32 * 20), false),
                    Proto::Tcp if round == 0 => (0x02, isn, false),
                    Proto::Tcp => (0x10, isn.wrapping_add(1 + (round as u32 - 1) * 20), false),
                };
                (self.src_base + ip as u32, sport, dport, flags, s, udp)
            }
        };
        let l4_len = if udp { UDP_LEN } else { TCP_LEN };
        let pay = if self.payload { PAYLOAD_LEN } else { 0 };
        let ip_total = IP4_LEN + l4_len + pay;
        let len = (ETH_LEN + ip_total).max(self.size).max(60);
        let b = &mut buf[..len];
        // Ethernet
        b[0..6].copy_from_slice(&self.dst_mac);
        b[6..12].copy_from_slice(&self.src_mac);
        put16(b, 12, 0x0800);
        // IPv4
        let ip = ETH_LEN;
        b[ip] = 0x45;
        b[ip + 1] = 0;
        put16(b, ip + 2, ip_total as u16);
        put16(b, ip + 4, seq as u16);
        put16(b, ip + 6, 0x4000); // DF
        b[ip + 8] = 64;
        b[ip + 9] = if udp { 17 } else { 6 };
        put16(b, ip + 10, 0);
        put32(b, ip + 12, src);
        put32(b, ip + 16, self.dst);
        let c = csum_fold(csum_add(0, &b[ip..ip + IP4_LEN]));
        put16(b, ip + 10, c);
        // L4
        let l4 = ip + IP4_LEN;
        let p = l4 + l4_len;
        if pay > 0 {
            b[p..p + 2].copy_from_slice(&MAGIC.to_le_bytes());
            b[p + 2..p + 4].copy_from_slice(&self.run_id.to_le_bytes());
            b[p + 4..p + 12].copy_from_slice(&seq.to_le_bytes());
            b[p + 12..p + 20].copy_from_slice(&now.to_le_bytes());
        }
        for x in &mut b[p + pay..] {
            *x = 0;
        }
        put16(b, l4, sport);
        put16(b, l4 + 2, dport);
        let seg = l4_len + pay;
        if udp {
            put16(b, l4 + 4, seg as u16);
            put16(b, l4 + 6, 0);
        } else {
            put32(b, l4 + 4, tcp_seq);
            put32(
                b,
                l4 + 8,
                if tcp_flags & 0x10 != 0 {
                    mix(u64::from(tcp_seq)) as u32
                } else {
                    0
                },
            );
            b[l4 + 12] = 5 << 4;
            b[l4 + 13] = tcp_flags;
            put16(b, l4 + 14, 65535);
            put16(b, l4 + 16, 0);
            put16(b, l4 + 18, 0);
        }
        let mut s = csum_add(0, &b[ip + 12..ip + 20]);
        s = s
            .wrapping_add(u32::from(b[ip + 9]))
            .wrapping_add(seg as u32);
        s = csum_add(s, &b[l4..l4 + seg]);
        let mut c = csum_fold(s);
        if udp {
            if c == 0 {
                c = 0xffff;
            }
            put16(b, l4 + 6, c);
        } else {
            put16(b, l4 + 16, c);
        }
        len
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xdpvs-loadgen: {e}");
            ExitCode::from(1)
        }
    }
}

fn build_gen(a: &Args) -> Result<Gen, String> {
    let dst = Cidr4::parse(&a.dst)?;
    if dst.len != 32 {
        return Err("--dst must be one address".into());
    }
    check_bench4("--dst", dst)?;
    let (dport_lo, dport_hi) = parse_range(&a.dst_ports)?;
    let n_dport = u64::from(dport_hi - dport_lo) + 1;
    let dst_mac = parse_mac(&a.dst_mac)?;
    let src_mac = match &a.src_mac {
        Some(m) => parse_mac(m)?,
        None => if_mac(&a.iface)?,
    };
    if a.count == 0 || !(a.duration > 0.0 && a.duration <= 86_400.0) {
        return Err("--count must be > 0 and --duration in (0, 86400]".into());
    }
    if a.syn_flood {
        let fs = Cidr4::parse(&a.flood_src)?;
        check_bench4("--flood-src", fs)?;
        let seed = a.seed.unwrap_or_else(mono_ns);
        return Ok(Gen {
            dst_mac,
            src_mac,
            src_base: 0,
            n_src: 1,
            sport_lo: 1024,
            n_sport: 1,
            dst: dst.base,
            dport_lo,
            n_dport,
            flows: 1,
            proto: Proto::Syn,
            size: a.size,
            run_id: a.run_id,
            flood: Some((fs, Rng::new(seed))),
            payload: a.with_payload,
        });
    }
    let src = Cidr4::parse(&a.src)?;
    check_bench4("--src", src)?;
    let (src_base, n_src) = src.hosts();
    let (sport_lo, sport_hi) = parse_range(&a.src_ports)?;
    let n_sport = u64::from(sport_hi - sport_lo) + 1;
    let all = n_src * n_sport * n_dport;
    let flows = a.flows.unwrap_or(16384).min(all);
    if flows == 0 {
        return Err("--flows must be > 0".into());
    }
    Ok(Gen {
        dst_mac,
        src_mac,
        src_base,
        n_src,
        sport_lo,
        n_sport,
        dst: dst.base,
        dport_lo,
        n_dport,
        flows,
        proto: a.proto,
        size: a.size,
        run_id: a.run_id,
        flood: None,
        payload: true,
    })
}

fn run(a: &Args) -> Result<(), String> {
    if a.mode == Mode::Live {
        return run_live(a);
    }
    let mut gen = build_gen(a)?;
    if a.size > 1514 {
        return Err("--size at most 1514".into());
    }
    install_stop_handler();
    fine_timer_slack();
    if let Some(c) = a.cpu {
        pin_cpu(c)?;
    }
    let ifindex = ifindex(&a.iface)?;
    // TX ring as large as the frames user space can hold, so staging never
    // overflows it (a rejected descriptor would be a hole in the sequence).
    let cfg = XskConfig {
        frame_count: 8192,
        frame_size: 2048,
        ring_size: 4096,
        batch: 64,
        ..XskConfig::default()
    };
    let mut xsk = ShardXsk::new(&cfg, &[(ifindex, a.queue)]).map_err(|e| e.to_string())?;
    let batch = a.batch.clamp(1, 1024);
    let count = a.count;
    let dur_ns = (a.duration * 1e9) as u64;
    let rate = a.rate;

    let start = mono_ns();
    let deadline = start + dur_ns;
    let mut queued: u64 = 0;
    let mut completed: u64 = 0;
    let mut kicks: u64 = 0;
    let mut rejected: u64 = 0;
    let mut bytes: u64 = 0;
    let mut now = start;
    while queued < count && !stopped() {
        now = mono_ns();
        if now >= deadline {
            break;
        }
        completed += xsk.reap_completions();
        let due = if rate == 0 {
            count
        } else {
            let el = u128::from(now - start);
            ((el * u128::from(rate) / 1_000_000_000) as u64 + 1).min(count)
        };
        let want = (due - queued)
            .min(batch as u64)
            .min(xsk.free_frames() as u64);
        if want == 0 {
            let r = xsk.flush_tx();
            kicks += r.kicks;
            if rate > 0 && due == queued {
                // Sleep until the next packet is due (at most 1 ms).
                let next = start + (u128::from(queued) * 1_000_000_000 / u128::from(rate)) as u64;
                let wait = next.saturating_sub(mono_ns()).min(1_000_000);
                if wait > 2_000 {
                    std::thread::sleep(std::time::Duration::from_nanos(wait));
                }
            } else {
                std::hint::spin_loop();
            }
            continue;
        }
        for _ in 0..want {
            let Some(base) = xsk.alloc() else { break };
            let Some(frame) = xsk.frame_mut(base) else {
                xsk.recycle(base);
                break;
            };
            let len = gen.write(frame, queued, mono_ns());
            if xsk.stage_tx(0, base, 0, len) {
                queued += 1;
                bytes += len as u64;
            }
        }
        let r = xsk.flush_tx();
        kicks += r.kicks;
        rejected += r.rejected;
        queued -= r.rejected;
    }
    let send_end = mono_ns().max(now);
    // Let the kernel finish what is queued (bounded).
    let drain_deadline = mono_ns() + 2_000_000_000;
    while completed < queued && mono_ns() < drain_deadline {
        let r = xsk.flush_tx();
        kicks += r.kicks;
        completed += xsk.reap_completions();
        if completed < queued {
            std::thread::sleep(std::time::Duration::from_micros(50));
        }
    }
    let secs = (send_end - start) as f64 / 1e9;
    let (rx_dropped, _, _, tx_invalid) = xsk.kernel_stats();
    let frame_len = bytes.checked_div(queued).unwrap_or(0);
    let summary = serde_json::json!({
        "queued": queued,
        "sent": completed,
        "rejected": rejected,
        "secs": secs,
        "pps": if secs > 0.0 { completed as f64 / secs } else { 0.0 },
        "target_pps": rate,
        "frame_len": frame_len,
        "kicks": kicks,
        "tx_invalid": tx_invalid,
        "rx_dropped": rx_dropped,
        "flows": gen.flows,
        "proto": format!("{:?}", if a.syn_flood { Proto::Syn } else { a.proto }).to_lowercase(),
        "syn_flood": a.syn_flood,
        "dst": Ipv4Addr::from(gen.dst).to_string(),
        "start_ns": start,
        "end_ns": send_end,
    });
    println!("{summary}");
    if completed < queued {
        eprintln!(
            "xdpvs-loadgen: {} frames still queued in the kernel after 2 s",
            queued - completed
        );
    }
    Ok(())
}

/// TX counters of `iface` from /proc/net/dev (this process's namespace):
/// (tx_packets, tx_dropped).
fn tx_counters(iface: &str) -> Result<(u64, u64), String> {
    let t = std::fs::read_to_string("/proc/net/dev").map_err(|e| format!("/proc/net/dev: {e}"))?;
    for line in t.lines() {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        if name.trim() != iface {
            continue;
        }
        let v: Vec<u64> = rest
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        // rx: bytes packets errs drop fifo frame compressed multicast; tx: bytes packets errs drop ...
        if v.len() < 12 {
            break;
        }
        return Ok((v[9], v[11]));
    }
    Err(format!("{iface} not in /proc/net/dev"))
}

/// `--mode live`: packets written and sent by bpf/loadgen.c in the kernel.
fn run_live(a: &Args) -> Result<(), String> {
    use xdpvs::xdp::livegen::{LiveFlows, LiveGen};
    if a.syn_flood || a.proto != Proto::Udp {
        return Err("--mode live sends UDP only (no --syn-flood, --proto udp)".into());
    }
    let mut gen = build_gen(a)?;
    if a.size > 1514 {
        return Err("--size at most 1514".into());
    }
    let mut template = vec![0u8; 2048];
    let len = gen.write(&mut template, 0, 0);
    template.truncate(len);
    let u32_of = |v: u64, what: &str| u32::try_from(v).map_err(|_| format!("{what} too large"));
    let flows = LiveFlows {
        flows: u32_of(gen.flows, "--flows")?,
        src_base: gen.src_base,
        n_src: u32_of(gen.n_src, "--src")?,
        sport_lo: gen.sport_lo,
        n_sport: u32_of(gen.n_sport, "--src-ports")?,
        dport_lo: gen.dport_lo,
        n_dport: u32_of(gen.n_dport, "--dst-ports")?,
    };
    install_stop_handler();
    fine_timer_slack();
    if let Some(c) = a.cpu {
        pin_cpu(c)?;
    }
    let ifindex = ifindex(&a.iface)?;
    let batch = a.batch.clamp(1, 256) as u32;
    let mut live =
        LiveGen::load(&template, ifindex, a.queue, flows, batch).map_err(|e| e.to_string())?;
    if let Some(p) = &a.pin_iface {
        live.pin_dispatcher(common::ifindex(p)?)
            .map_err(|e| format!("--pin-iface {p}: {e}"))?;
    }
    let call_ns = a.live_call_ms.clamp(1, 5_000) * 1_000_000;
    // Packets per second measured so far (wall time, calls included);
    // the first call assumes 0.25 Mpps.
    let mut rate_est: f64 = 250_000.0;
    let count = a.count;
    let dur_ns = (a.duration * 1e9) as u64;
    let rate = a.rate;
    let (tx0, drop0) = tx_counters(&a.iface)?;

    let start = mono_ns();
    let deadline = start + dur_ns;
    let mut done: u64 = 0;
    let mut calls: u64 = 0;
    let mut ns_sum: u128 = 0;
    let mut now = start;
    while done < count && !stopped() {
        now = mono_ns();
        if now >= deadline {
            break;
        }
        let due = if rate == 0 {
            count
        } else {
            let el = u128::from(now - start);
            ((el * u128::from(rate) / 1_000_000_000) as u64 + 1).min(count)
        };
        let want = if rate == 0 {
            // Long calls (fixed cost per call), none past the deadline.
            let left_ns = deadline - now;
            let ns = call_ns.min(left_ns);
            if ns < call_ns && left_ns < 20_000_000 {
                break; // less than 20 ms left: a call would only overshoot
            }
            let n = (rate_est * ns as f64 / 1e9) as u64;
            (due - done).min(n.max(64)).min(u64::from(u32::MAX))
        } else {
            (due - done).min(u64::from(batch))
        };
        if want == 0 {
            // Sleep until the next packet is due (at most 1 ms).
            let next = start + (u128::from(done) * 1_000_000_000 / u128::from(rate)) as u64;
            let wait = next.saturating_sub(mono_ns()).min(1_000_000);
            if wait > 2_000 {
                std::thread::sleep(std::time::Duration::from_nanos(wait));
            } else {
                std::hint::spin_loop();
            }
            continue;
        }
        calls += 1;
        let t0 = mono_ns();
        match live.run(want as u32).map_err(|e| e.to_string())? {
            Some(ns) => {
                done += want;
                ns_sum += u128::from(ns) * u128::from(want);
                let el = mono_ns().saturating_sub(t0).max(1);
                if want >= 1024 {
                    rate_est = want as f64 * 1e9 / el as f64;
                }
            }
            None => {
                done = live.seq().map_err(|e| e.to_string())?;
                break;
            }
        }
    }
    let send_end = mono_ns().max(now);
    let generated = live.seq().map_err(|e| e.to_string())?;
    // The peer takes the last frames in its NAPI poll (softirq, this CPU):
    // give it a moment before reading the counters.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let (tx1, drop1) = tx_counters(&a.iface)?;
    // Other traffic of the namespace (neighbour discovery) could add a few:
    // never report more than was generated.
    let sent = (tx1 - tx0).min(generated);
    let tx_dropped = drop1 - drop0;
    let secs = (send_end - start) as f64 / 1e9;
    let summary = serde_json::json!({
        "mode": "live",
        "queued": generated,
        "generated": generated,
        "sent": sent,
        "rejected": generated - sent,
        "tx_dropped": tx_dropped,
        "secs": secs,
        "pps": if secs > 0.0 { sent as f64 / secs } else { 0.0 },
        "target_pps": rate,
        "frame_len": template.len(),
        "kicks": calls,
        "prog_run_calls": calls,
        "ns_per_frame": if done > 0 { (ns_sum / u128::from(done)) as u64 } else { 0 },
        "tx_invalid": 0,
        "rx_dropped": 0,
        "flows": gen.flows,
        "proto": "udp",
        "syn_flood": false,
        "dst": Ipv4Addr::from(gen.dst).to_string(),
        "start_ns": start,
        "end_ns": send_end,
    });
    println!("{summary}");
    if sent < generated {
        eprintln!(
            "xdpvs-loadgen: {} of {generated} generated frames did not leave {} (tx_dropped {tx_dropped})",
            generated - sent,
            a.iface
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gen(proto: Proto) -> Gen {
        Gen {
            dst_mac: [2, 0, 0, 0, 0, 1],
            src_mac: [2, 0, 0, 0, 0, 2],
            src_base: 0xC612_6401,
            n_src: 1022,
            sport_lo: 1024,
            n_sport: 64512,
            dst: 0xC612_0064,
            dport_lo: 10000,
            n_dport: 1,
            flows: 100,
            proto,
            size: 64,
            run_id: 7,
            flood: None,
            payload: true,
        }
    }

    fn verify(b: &[u8]) {
        assert!(csum_ok(csum_add(0, &b[14..34])), "ip checksum");
        let total = u16::from_be_bytes([b[16], b[17]]) as usize;
        let seg = total - 20;
        let mut s = csum_add(0, &b[26..34]);
        s = s.wrapping_add(u32::from(b[23])).wrapping_add(seg as u32);
        s = csum_add(s, &b[34..34 + seg]);
        assert!(csum_ok(s), "l4 checksum");
    }

    #[test]
    fn frames_have_valid_checksums_and_payload() {
        let mut buf = [0u8; 2048];
        for p in [Proto::Udp, Proto::Syn, Proto::Ack, Proto::Tcp] {
            let mut g = gen(p);
            for seq in [0u64, 1, 99, 100, 12345] {
                let n = g.write(&mut buf, seq, 42);
                assert!(n >= 64);
                verify(&buf[..n]);
                let l4 = if p == Proto::Udp { 8 } else { 20 };
                let pay = &buf[34 + l4..];
                assert_eq!(u16::from_le_bytes([pay[0], pay[1]]), MAGIC);
                assert_eq!(u64::from_le_bytes(pay[4..12].try_into().unwrap()), seq);
            }
        }
        let mut g = gen(Proto::Tcp);
        g.write(&mut buf, 5, 0);
        assert_eq!(buf[47], 0x02, "first pass SYN");
        g.write(&mut buf, 105, 0);
        assert_eq!(buf[47], 0x10, "then ACK");
    }

    #[test]
    fn flood_stays_in_range() {
        let mut g = gen(Proto::Syn);
        g.flood = Some((Cidr4::parse("198.18.0.0/15").unwrap(), Rng::new(1)));
        g.payload = false;
        g.size = 60;
        let mut buf = [0u8; 2048];
        for i in 0..10_000 {
            let n = g.write(&mut buf, i, 0);
            assert_eq!(n, 60);
            verify(&buf[..n]);
            let src = u32::from_be_bytes(buf[26..30].try_into().unwrap());
            assert!(bench_net4().contains(src));
            assert_eq!(buf[47], 0x02);
        }
    }
}
