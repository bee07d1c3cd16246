//! `xdpvs-bare`: the ceiling of the AF_XDP data path, for `perf/bench.sh`.
//!
//! The same XDP filter, the same AF_XDP runtime and worker loop (batching,
//! TX deferral, sleeping) as `xdpvs run`, but an engine with no
//! load-balancing logic: each frame gets the real server's MAC (picked by a
//! hash of the source address and port) and goes back out of the interface,
//! as a DR director would send it. No parsing beyond the offsets, no
//! tables, no scheduler, no counters. What xdpvs does costs
//! `1 - xdpvs / bare` of this rate, measured in the same run.
//!
//! `ip netns exec xdpvs-dir xdpvs-bare --iface dr0 --mode generic --cpu 1
//!  --vip 198.18.0.100 --ports 9000-9015 --to MAC1,MAC2,MAC3`
//! Runs until SIGINT/SIGTERM; prints "forwarding" once attached.

#[path = "../common/mod.rs"]
mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use common::*;
use xdpvs::dataplane::{PacketHandler, QueueSpec, RuntimeConfig, ShardRuntime, ShardSpec};
use xdpvs::service::model::{Millis, Proto};
use xdpvs::shard::verdict::{Frame, Verdict};
use xdpvs::xdp::{XdpMode, XdpProgram};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    Generic,
    Native,
}

#[derive(Parser, Debug)]
#[command(about = "Bare AF_XDP forwarder (MAC rewrite only): the ceiling xdpvs is compared with")]
struct Args {
    /// Interface to receive on and send back out of.
    #[arg(long)]
    iface: String,
    #[arg(long, value_enum, default_value = "generic")]
    mode: Mode,
    /// CPU of the one shard.
    #[arg(long)]
    cpu: Option<usize>,
    /// The VIP whose UDP and TCP ports are redirected (198.18.0.0/15).
    #[arg(long)]
    vip: Ipv4Addr,
    /// Port range, e.g. 9000-9015.
    #[arg(long)]
    ports: String,
    /// Real servers' MACs, comma-separated.
    #[arg(long)]
    to: String,
    /// Run the shard thread under SCHED_FIFO at this priority (1-99).
    #[arg(long)]
    rt_priority: Option<u8>,
}

struct Bare {
    src: [u8; 6],
    to: Vec<[u8; 6]>,
    ifindex: u32,
}

impl PacketHandler for Bare {
    fn begin_batch(&mut self, _now: Millis) {}

    fn process(&mut self, _now: Millis, _in: u32, frame: &mut Frame<'_>) -> Verdict {
        let data = frame.data_mut();
        // IPv4 source address and source port (no options: the generator's).
        let key = match (data.get(26..30), data.get(34..36)) {
            (Some(a), Some(p)) => {
                u32::from_be_bytes([a[0], a[1], a[2], a[3]])
                    ^ u32::from(u16::from_be_bytes([p[0], p[1]]))
            }
            _ => return Verdict::Pass,
        };
        let n = self.to.len() as u32;
        let Some(dst) = self
            .to
            .get((key.wrapping_mul(0x9E37_79B9) >> 16) as usize % n as usize)
        else {
            return Verdict::Pass;
        };
        if let Some(h) = data.get_mut(..12) {
            h[..6].copy_from_slice(dst);
            h[6..].copy_from_slice(&self.src);
        }
        Verdict::Forward {
            ifindex: self.ifindex,
        }
    }

    fn tick(&mut self, _now: Millis) {}
}

fn run(a: Args) -> Result<(), String> {
    check_bench4(
        "--vip",
        Cidr4 {
            base: u32::from(a.vip),
            len: 32,
        },
    )?;
    let (lo, hi) = parse_range(&a.ports)?;
    let to =
        a.to.split(',')
            .map(parse_mac)
            .collect::<Result<Vec<_>, _>>()?;
    if to.is_empty() {
        return Err("--to: at least one MAC".into());
    }
    let ifindex = ifindex(&a.iface)?;
    let src = if_mac(&a.iface)?;
    let rcfg = RuntimeConfig {
        shards: vec![ShardSpec {
            cpu: a.cpu,
            queues: vec![QueueSpec { ifindex, queue: 0 }],
        }],
        rt_priority: a.rt_priority,
        ..RuntimeConfig::default()
    };
    let rt = ShardRuntime::new(rcfg).map_err(|e| format!("AF_XDP: {e}"))?;
    let prog = XdpProgram::load().map_err(|e| format!("XDP program: {e}"))?;
    let vip = IpAddr::V4(a.vip);
    let vips: Vec<(Proto, IpAddr, u16)> = (lo..=hi)
        .flat_map(|p| [(Proto::Udp, vip, p), (Proto::Tcp, vip, p)])
        .collect();
    prog.set_vips(&vips).map_err(|e| format!("VIP map: {e}"))?;
    for s in rt.sockets() {
        prog.register_xsk(s.queue, s.fd)
            .map_err(|e| format!("XSKMAP: {e}"))?;
    }
    let mode = match a.mode {
        Mode::Generic => XdpMode::Generic,
        Mode::Native => XdpMode::Native,
    };
    let link = prog
        .attach(ifindex, mode)
        .map_err(|e| format!("attach: {e}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let running = rt
        .start(
            move |_, _| Bare {
                src,
                to: to.clone(),
                ifindex,
            },
            stop,
        )
        .map_err(|e| format!("start: {e}"))?;
    println!("forwarding: bare AF_XDP on {} ({:?})", a.iface, a.mode);
    while !stopped() {
        std::thread::sleep(Duration::from_millis(50));
    }
    running.stop();
    let stats = running.join().map_err(|e| format!("join: {e}"))?;
    drop(link);
    for (i, s) in stats.iter().enumerate() {
        println!("shard {i}: rx {} tx {}", s.rx, s.tx);
    }
    Ok(())
}

fn main() -> ExitCode {
    install_stop_handler();
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xdpvs-bare: {e}");
            ExitCode::from(1)
        }
    }
}
