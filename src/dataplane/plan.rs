//! Which shards run, on which CPUs, reading which queues.
//!
//! A shard reads the AF_XDP sockets of the RX queues it owns; a queue
//! without a socket falls back to the kernel (`XDP_PASS`), so every queue
//! that receives traffic must belong to a shard, and a shard with no queue
//! would never see a packet. The plan is pure: the caller reads queue
//! counts and usable CPUs from the system and logs [`ShardPlan::describe`].
//!
//! - Default (no `cores`): one shard per receiving queue, up to the usable
//!   CPUs, each pinned to a distinct CPU; with more queues than CPUs a shard
//!   reads several queues (queue `q` goes to shard `q % shards`).
//! - Explicit `cores`: one shard per listed CPU; more shards than receiving
//!   queues is refused with the interface, its queue count and the fixes.
//! - Generic (skb) XDP on a virtual device (veth, no `device` in sysfs):
//!   the kernel runs the program for every packet as if it arrived on
//!   queue 0, so only queue 0 receives (measured on veth).

use thiserror::Error;

use super::{QueueSpec, ShardSpec};

/// One data-plane interface as the plan sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanIface {
    pub name: String,
    pub ifindex: u32,
    /// RX queues the device has (`/sys/class/net/IF/queues/rx-*`).
    pub rx_queues: u32,
    /// Generic XDP on a virtual device: everything arrives on queue 0.
    pub queue0_only: bool,
}

impl PlanIface {
    /// Queues that actually receive traffic.
    pub fn receiving(&self) -> u32 {
        if self.queue0_only {
            1
        } else {
            self.rx_queues.max(1)
        }
    }
}

/// Why no plan fits.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("no data-plane interface")]
    NoInterface,
    #[error("no usable CPU (sched_getaffinity returned none)")]
    NoCpu,
    #[error(
        "director.cores lists {shards} CPUs, one shard each, but {iface} has {queues} receiving RX queue(s){why}: \
         every shard needs a queue of its own. Fix: give {iface} more queues (`ethtool -L {iface} combined {shards}`){native}, \
         or list at most {queues} core(s) in director.cores (or omit `cores` for one shard per queue)"
    )]
    TooManyShards {
        shards: usize,
        iface: String,
        queues: u32,
        why: &'static str,
        native: &'static str,
    },
}

/// The shards to start, in shard order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardPlan {
    pub shards: Vec<ShardSpec>,
}

impl ShardPlan {
    /// Work out the plan. `cores`: the config's explicit list, if any;
    /// `usable`: the CPUs this process may run on, ascending.
    pub fn new(
        ifaces: &[PlanIface],
        cores: Option<&[usize]>,
        usable: &[usize],
    ) -> Result<ShardPlan, PlanError> {
        let widest = ifaces
            .iter()
            .max_by_key(|i| i.receiving())
            .ok_or(PlanError::NoInterface)?;
        let queues = widest.receiving();
        let cpus: Vec<usize> = match cores {
            Some(c) if !c.is_empty() => {
                if c.len() > queues as usize {
                    let virt = widest.queue0_only && widest.rx_queues > 1;
                    return Err(PlanError::TooManyShards {
                        shards: c.len(),
                        iface: widest.name.clone(),
                        queues,
                        why: if virt {
                            " (generic XDP on a virtual device receives on queue 0 only)"
                        } else {
                            ""
                        },
                        native: if virt {
                            " and use xdp_mode = \"native\""
                        } else {
                            ""
                        },
                    });
                }
                c.to_vec()
            }
            _ => {
                if usable.is_empty() {
                    return Err(PlanError::NoCpu);
                }
                let n = (queues as usize).min(usable.len()).min(64);
                usable.iter().copied().take(n).collect()
            }
        };
        let n = cpus.len() as u32;
        let shards = cpus
            .iter()
            .enumerate()
            .map(|(s, &cpu)| ShardSpec {
                cpu: Some(cpu),
                queues: ifaces
                    .iter()
                    .flat_map(|i| {
                        (0..i.receiving())
                            .filter(move |q| q % n == s as u32)
                            .map(move |queue| QueueSpec {
                                ifindex: i.ifindex,
                                queue,
                            })
                    })
                    .collect(),
            })
            .collect();
        Ok(ShardPlan { shards })
    }

    /// One line for the log: shards, CPUs, and each shard's queues by name.
    pub fn describe(&self, ifaces: &[PlanIface]) -> String {
        let name = |ifindex: u32| {
            ifaces
                .iter()
                .find(|i| i.ifindex == ifindex)
                .map_or_else(|| format!("ifindex {ifindex}"), |i| i.name.clone())
        };
        let mut s = format!("shard plan: {} shard(s);", self.shards.len());
        for i in ifaces {
            s.push_str(&format!(" {}: {} RX queue(s)", i.name, i.rx_queues));
            if i.queue0_only && i.rx_queues > 1 {
                s.push_str(" (generic XDP on a virtual device: only queue 0 receives)");
            }
            s.push(';');
        }
        for (n, sh) in self.shards.iter().enumerate() {
            let qs: Vec<String> = sh
                .queues
                .iter()
                .map(|q| format!("{} queue {}", name(q.ifindex), q.queue))
                .collect();
            let cpu = sh.cpu.map_or_else(|| "any".to_string(), |c| c.to_string());
            s.push_str(&format!(" shard {n}: cpu {cpu}, {};", qs.join(", ")));
        }
        s.pop();
        s
    }

    /// The CPUs the shards are pinned to, in shard order.
    pub fn cpus(&self) -> Vec<usize> {
        self.shards.iter().filter_map(|s| s.cpu).collect()
    }
}

/// The usable CPUs of this process (its affinity mask), ascending.
pub fn usable_cpus() -> Vec<usize> {
    let mut v: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    v.sort_unstable();
    if v.is_empty() {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        v = (0..n).collect();
    }
    v
}

/// RX queues of interface `name` as sysfs lists them (at least 1).
pub fn rx_queues(name: &str) -> u32 {
    std::fs::read_dir(format!("/sys/class/net/{name}/queues"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                .count() as u32
        })
        .unwrap_or(1)
        .max(1)
}

/// A virtual device (veth, bridge, ...) has no `device` link in sysfs.
pub fn is_virtual(name: &str) -> bool {
    !std::path::Path::new(&format!("/sys/class/net/{name}/device")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str, ifindex: u32, rx: u32, q0: bool) -> PlanIface {
        PlanIface {
            name: name.to_string(),
            ifindex,
            rx_queues: rx,
            queue0_only: q0,
        }
    }

    fn queues(p: &ShardPlan) -> Vec<Vec<(u32, u32)>> {
        p.shards
            .iter()
            .map(|s| s.queues.iter().map(|q| (q.ifindex, q.queue)).collect())
            .collect()
    }

    /// Table: interfaces, cores, usable CPUs -> (cpus, queues per shard).
    #[test]
    fn plans() {
        type Case = (
            &'static str,
            Vec<PlanIface>,
            Option<Vec<usize>>,
            Vec<usize>,
            Vec<usize>,
            Vec<Vec<(u32, u32)>>,
        );
        let cases: Vec<Case> = vec![
            (
                "single-queue NIC, 2 CPUs, default: one shard",
                vec![iface("eth0", 2, 1, false)],
                None,
                vec![0, 1],
                vec![0],
                vec![vec![(2, 0)]],
            ),
            (
                "2 queues, 2 CPUs: a shard per queue",
                vec![iface("eth0", 2, 2, false)],
                None,
                vec![0, 1],
                vec![0, 1],
                vec![vec![(2, 0)], vec![(2, 1)]],
            ),
            (
                "generic on a 2-queue veth: queue 0 only, one shard",
                vec![iface("dr0", 5, 2, true)],
                None,
                vec![0, 1],
                vec![0],
                vec![vec![(5, 0)]],
            ),
            (
                "8 queues, 2 CPUs: each shard reads 4 queues",
                vec![iface("eth0", 2, 8, false)],
                None,
                vec![2, 3],
                vec![2, 3],
                vec![
                    vec![(2, 0), (2, 2), (2, 4), (2, 6)],
                    vec![(2, 1), (2, 3), (2, 5), (2, 7)],
                ],
            ),
            (
                "two interfaces of different widths",
                vec![iface("eth0", 2, 2, false), iface("eth1", 3, 1, false)],
                None,
                vec![0, 1, 2, 3],
                vec![0, 1],
                vec![vec![(2, 0), (3, 0)], vec![(2, 1)]],
            ),
            (
                "explicit cores within the queues",
                vec![iface("eth0", 2, 4, false)],
                Some(vec![3, 1]),
                vec![0, 1, 2, 3],
                vec![3, 1],
                vec![vec![(2, 0), (2, 2)], vec![(2, 1), (2, 3)]],
            ),
        ];
        for (what, ifs, cores, usable, cpus, qs) in cases {
            let p = ShardPlan::new(&ifs, cores.as_deref(), &usable).unwrap();
            assert_eq!(p.cpus(), cpus, "{what}");
            assert_eq!(queues(&p), qs, "{what}");
        }
    }

    #[test]
    fn too_many_cores_names_the_interface_and_both_fixes() {
        let e = ShardPlan::new(&[iface("eth0", 2, 1, false)], Some(&[0, 1]), &[0, 1]).unwrap_err();
        let m = e.to_string();
        for want in [
            "director.cores lists 2 CPUs",
            "eth0 has 1 receiving RX queue(s)",
            "ethtool -L eth0 combined 2",
            "list at most 1 core(s)",
        ] {
            assert!(m.contains(want), "{want:?} missing in: {m}");
        }
        let e = ShardPlan::new(&[iface("dr0", 2, 2, true)], Some(&[0, 1]), &[0, 1]).unwrap_err();
        let m = e.to_string();
        assert!(m.contains("virtual device receives on queue 0 only"), "{m}");
        assert!(m.contains("xdp_mode = \"native\""), "{m}");
    }

    #[test]
    fn describe_names_queues_and_cpus() {
        let ifs = [iface("dr0", 7, 2, true)];
        let p = ShardPlan::new(&ifs, None, &[0, 1]).unwrap();
        assert_eq!(
            p.describe(&ifs),
            "shard plan: 1 shard(s); dr0: 2 RX queue(s) (generic XDP on a virtual device: only queue 0 receives); shard 0: cpu 0, dr0 queue 0"
        );
    }

    #[test]
    fn no_interface_or_cpu_is_an_error() {
        assert_eq!(ShardPlan::new(&[], None, &[0]), Err(PlanError::NoInterface));
        assert_eq!(
            ShardPlan::new(&[iface("eth0", 2, 1, false)], None, &[]),
            Err(PlanError::NoCpu)
        );
    }
}
