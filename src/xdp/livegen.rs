//! The live-frames packet generator of `xdpvs-loadgen --mode live`: the
//! program of `bpf/loadgen.c` ([`LOADGEN_OBJECT`]) run with
//! `BPF_PROG_RUN` and `BPF_F_TEST_XDP_LIVE_FRAMES` on the sending interface.
//! The kernel builds frames from a template in a page pool, the program
//! turns each into the next packet of the run (sequence number, timestamp,
//! flow, checksums) and sends it with `XDP_TX`: no socket and no copy.
//!
//! The receiving end of the interface (a veth's peer) must have an XDP
//! program for such frames to be received (`bpf/xdp_pass.o` does).

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use super::error::XdpError;
use super::object::BpfObject;
use super::sys::{self, BpfMap, MapType};
use super::{test_ctx, LICENSE};

/// The generator program, compiled from `bpf/loadgen.c`.
pub const LOADGEN_OBJECT: &[u8] = include_bytes!("../../bpf/loadgen.o");

/// Ethernet + IPv4 (no options) + UDP + the 20-byte payload.
pub const MIN_FRAME: usize = 14 + 20 + 8 + 20;

/// `struct gen_state` of `bpf/loadgen.c` without its counters: the flows of
/// a run. Packet `seq` uses flow `f = seq % flows`, source address
/// `src_base + f % n_src`, source port `sport_lo + (f / n_src) % n_sport`,
/// destination port `dport_lo + (f / n_src / n_sport) % n_dport`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LiveFlows {
    /// Distinct flows (at least 1).
    pub flows: u32,
    /// First source address (host order).
    pub src_base: u32,
    /// Source addresses.
    pub n_src: u32,
    /// First source port.
    pub sport_lo: u16,
    /// Source ports.
    pub n_sport: u32,
    /// First destination port.
    pub dport_lo: u16,
    /// Destination ports.
    pub n_dport: u32,
}

/// Size of `struct gen_state`.
const STATE_SIZE: usize = 48;

impl LiveFlows {
    /// The map value: counters at sequence 0, then the flows (native order).
    fn state(&self) -> [u8; STATE_SIZE] {
        // seq (u64) and the four counters (u32) stay 0: bytes 0..24.
        let mut bytes: Vec<u8> = vec![0u8; 24];
        for w in [
            self.flows,
            self.n_src,
            self.n_sport,
            self.n_dport,
            self.src_base,
        ] {
            bytes.extend_from_slice(&w.to_ne_bytes());
        }
        bytes.extend_from_slice(&self.sport_lo.to_ne_bytes());
        bytes.extend_from_slice(&self.dport_lo.to_ne_bytes());
        let mut v = [0u8; STATE_SIZE];
        for (d, b) in v.iter_mut().zip(bytes) {
            *d = b;
        }
        v
    }
}

/// The loaded generator, its state map and the run's template frame.
#[derive(Debug)]
pub struct LiveGen {
    prog: OwnedFd,
    state: BpfMap,
    frame: Vec<u8>,
    ctx: [u8; 24],
    batch: u32,
    pin: Option<OwnedFd>,
}

impl LiveGen {
    /// Load the program for frames like `template` (Ethernet, IPv4 with no
    /// options, UDP, the payload; its varying fields and checksums are
    /// rewritten for every packet) sent out of `ifindex` (queue `queue`, in
    /// the caller's network namespace), `batch` (1..=256) frames per batch
    /// of the kernel. Needs CAP_BPF and CAP_NET_ADMIN (root).
    pub fn load(
        template: &[u8],
        ifindex: u32,
        queue: u32,
        flows: LiveFlows,
        batch: u32,
    ) -> Result<LiveGen, XdpError> {
        let bad = |why: &str| XdpError::Object(format!("live generator: {why}"));
        let at = |i: usize| template.get(i).copied();
        if template.len() < MIN_FRAME
            || (at(12), at(13)) != (Some(0x08), Some(0x00))
            || at(14) != Some(0x45)
            || at(23) != Some(17)
            || (at(38), at(39)) != (Some(0), Some(28))
        {
            return Err(bad(
                "the template must be Ethernet + IPv4 (no options) + UDP with a 20-byte payload",
            ));
        }
        if flows.flows == 0 || flows.n_src == 0 || flows.n_sport == 0 || flows.n_dport == 0 {
            return Err(bad("flows, addresses and ports must not be 0"));
        }
        if !(1..=sys::TEST_XDP_MAX_BATCH).contains(&batch) {
            return Err(bad("batch must be 1..=256"));
        }
        let ctx = test_ctx(template, ifindex, queue)?;
        let state = BpfMap::create(MapType::Array, "xdpvs_gen", 4, STATE_SIZE as u32, 1)?;
        let obj = BpfObject::parse(LOADGEN_OBJECT, "xdp")?;
        let fds: HashMap<&str, RawFd> = [("gen_map", state.as_fd().as_raw_fd())]
            .into_iter()
            .collect();
        let insns = obj.link(&fds)?;
        let prog = sys::prog_load(
            sys::BPF_PROG_TYPE_XDP,
            &insns,
            LICENSE,
            "xdpvs_loadgen",
            sys::BPF_XDP,
        )?;
        state.update(&0u32.to_ne_bytes(), &flows.state(), sys::BPF_ANY)?;
        Ok(LiveGen {
            prog,
            state,
            frame: template.to_vec(),
            ctx,
            batch,
            pin: None,
        })
    }

    /// Attach the program natively (`BPF_LINK_CREATE`, driver mode) to
    /// `ifindex`, an interface that receives nothing (an idle veth), until
    /// the generator is dropped. That keeps it in the kernel's XDP
    /// dispatcher: otherwise every `BPF_PROG_RUN` call with `repeat` > 1
    /// adds it to the dispatcher and removes it again, each change waiting
    /// for an RCU grace period (`synchronize_rcu` in
    /// `bpf_dispatcher_change_prog`: the ~20-30 ms a call cost here).
    /// Frames that interface receives would be sent back out of it.
    pub fn pin_dispatcher(&mut self, ifindex: u32) -> Result<(), XdpError> {
        let link = sys::link_create(
            self.prog.as_fd(),
            ifindex,
            sys::BPF_XDP,
            sys::XDP_FLAGS_DRV_MODE,
        )?;
        self.pin = Some(link);
        Ok(())
    }

    /// Generate and send `repeat` packets (the next ones of the run).
    /// Returns the kernel's average nanoseconds per packet, or `None` when a
    /// signal interrupted the run part way ([`LiveGen::seq`] tells how far
    /// it got).
    pub fn run(&self, repeat: u32) -> Result<Option<u32>, XdpError> {
        match sys::prog_test_run_live(
            self.prog.as_fd(),
            &self.frame,
            &self.ctx,
            repeat,
            self.batch.min(repeat.max(1)),
        ) {
            Ok(r) => Ok(Some(r.duration_ns)),
            Err(XdpError::Sys { source, .. }) if source.raw_os_error() == Some(libc::EINTR) => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Run the program once, not live (nothing is sent): the frame it
    /// writes from the template, and its action. Advances the sequence.
    pub fn test_frame(&self) -> Result<(u32, Vec<u8>), XdpError> {
        let mut out = vec![0u8; self.frame.len() + 256];
        let r = sys::prog_test_run(
            self.prog.as_fd(),
            &self.frame,
            Some(&self.ctx),
            1,
            Some(&mut out),
        )?;
        out.truncate(r.data_out);
        Ok((r.retval, out))
    }

    /// Packets the program has written so far (the next sequence number).
    pub fn seq(&self) -> Result<u64, XdpError> {
        let mut v = [0u8; STATE_SIZE];
        self.state.lookup(&0u32.to_ne_bytes(), &mut v)?;
        let mut s = [0u8; 8];
        for (d, b) in s.iter_mut().zip(v) {
            *d = b;
        }
        Ok(u64::from_ne_bytes(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_program_uses_only_its_state_map() {
        let o = BpfObject::parse(LOADGEN_OBJECT, "xdp").unwrap();
        assert_eq!(o.map_names(), ["gen_map"]);
    }

    #[test]
    fn state_layout_matches_the_c_struct() {
        let f = LiveFlows {
            flows: 16384,
            src_base: 0xC612_6401,
            n_src: 1022,
            sport_lo: 1024,
            n_sport: 64512,
            dport_lo: 10000,
            n_dport: 100,
        };
        let v = f.state();
        assert_eq!(&v[..24], &[0u8; 24]);
        assert_eq!(v[24..28], 16384u32.to_ne_bytes());
        assert_eq!(v[40..44], 0xC612_6401u32.to_ne_bytes());
        assert_eq!(v[44..46], 1024u16.to_ne_bytes());
        assert_eq!(v[46..48], 10000u16.to_ne_bytes());
    }
}
