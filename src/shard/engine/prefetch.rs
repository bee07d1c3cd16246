//! The RX batch pre-pass ([`Engine::warm_batch`]): name the cache lines
//! the batch's lookups will read so that their misses overlap.

use crate::service::model::{FlowKey, Proto};
use crate::shard::conn::WarmKey;
use crate::wire;

use super::process::{is_nat_real, opening_proto};
use super::schedule::template_key;
use super::Engine;

impl Engine {
    /// Prefetch the cache lines `process` will read for each frame of an RX
    /// batch (its connection's index bucket, then the entry the bucket
    /// points at; for a reply of a NAT real server, the reply key's), in two
    /// passes over the batch so that its cache misses overlap. A frame whose
    /// bucket holds no candidate and that can open a connection (a TCP SYN,
    /// or UDP) is likely a new connection: the second pass names its
    /// persistence template's index bucket instead (persistent services),
    /// and then the slab slots the chunk's new connections and templates
    /// will fill.
    /// `prefetch` is the data plane's (`dataplane::mem::prefetch`): the
    /// engine only names addresses and reads nothing but index buckets.
    /// Changes nothing.
    pub fn warm_batch(&self, frames: &[&[u8]], prefetch: impl Fn(usize)) {
        const W: usize = 32;
        for chunk in frames.chunks(W) {
            let mut keys = [None; W];
            for (f, w) in chunk.iter().zip(keys.iter_mut()) {
                *w = self.warm_key(f);
                if let Some((w, _)) = *w {
                    prefetch(self.conns.bucket_addr(w));
                }
            }
            // New connections per family, and new templates, likely in
            // this chunk: their slots are prefetched too.
            let (mut new, mut tpl) = ([0usize; 2], 0usize);
            for (f, k) in chunk.iter().zip(keys.iter()) {
                let Some((w, reply)) = *k else {
                    continue;
                };
                match self.conns.entry_addr(w) {
                    Some(r) => {
                        prefetch(r.start);
                        prefetch(r.end - 1);
                    }
                    None => {
                        if !reply {
                            self.warm_new(f, &mut new, &mut tpl, &prefetch);
                        }
                    }
                }
            }
            let lines = |r: std::ops::Range<usize>| (r.start & !63..r.end).step_by(64);
            for (v6, n) in [(false, new[0]), (true, new[1])] {
                if n > 0 {
                    lines(self.conns.next_slots(v6, n)).for_each(&prefetch);
                }
            }
            if tpl > 0 {
                lines(self.tpls.next_slots(tpl)).for_each(&prefetch);
            }
        }
    }
    /// [`Engine::warm_batch`] for a client frame without a connection
    /// candidate: when it can open a connection to a virtual service, count
    /// it (per family) and, for a persistent service, prefetch its
    /// template's index bucket and count it. Out of line: it keeps the
    /// established path's pass small.
    #[inline(never)]
    fn warm_new(&self, f: &[u8], new: &mut [usize; 2], tpl: &mut usize, prefetch: &impl Fn(usize)) {
        // Read the (cached) frame's tuple again.
        let Some((p, proto)) =
            wire::packet::peek_flow(f).and_then(|p| Some((p, opening_proto(&p)?)))
        else {
            return;
        };
        let snap = &self.snap;
        let Some(svc) = snap
            .classifier
            .classify(proto, p.dst, p.dport)
            .and_then(|s| snap.services.get(s as usize))
        else {
            return;
        };
        if let Some(n) = new.get_mut(usize::from(p.src.is_ipv6())) {
            *n += 1;
        }
        if let Some(per) = svc.persistence.as_ref() {
            let tkey = template_key(svc.key, per, p.src, p.dport);
            prefetch(self.tpls.bucket_addr(self.tpls.hash(&tkey)));
            *tpl += 1;
        }
    }
    /// The connection table's warm key of a frame, and whether it is a reply
    /// of a NAT real server.
    #[inline]
    fn warm_key(&self, frame: &[u8]) -> Option<(WarmKey, bool)> {
        let p = wire::packet::peek_flow(frame)?;
        let k = FlowKey {
            proto: Proto::from_number(p.proto)?,
            src: p.src,
            dst: p.dst,
            sport: p.sport,
            dport: p.dport,
        };
        let reply = is_nat_real(&self.snap, p.src);
        let w = self.conns.warm_key(&k, reply)?;
        Some((w, reply))
    }
}
