//! The shard plan on real interfaces: the default config (no `cores`) starts
//! and forwards on a single-queue veth whatever the CPU count, and a `cores`
//! list with more shards than queues is refused with the interface, its
//! queue count and both fixes, before anything is attached.
//!
//! Root only (network namespaces, XDP); under CI a skip is a failure.

use std::process::Command;
use std::time::{Duration, Instant};

mod labkit;

use labkit::{director_section, exe, lab_lock, reals, skip};
use xdpvs_lab::demo::DirectorProcess;
use xdpvs_lab::{Lab, LabMode, Request};

/// A DR service on VIP:80 with /24 persistence; `extra` goes into
/// `[director]`.
fn config(lab: &Lab, xdp: &str, extra: &str) -> String {
    format!(
        "{director}\n[[service]]\nname = \"web\"\nproto = \"tcp\"\nvip = \"{vip}\"\nport = 80\nscheduler = \"rr\"\npersistence = {{ timeout = 300, netmask = \"255.255.255.0\" }}\n{reals}",
        director = director_section(lab, xdp, extra),
        vip = lab.env("LAB_VIP4"),
        reals = reals(lab, "LAB_RS_IP4", "dr", &[1, 1, 1], None),
    )
}

#[test]
fn default_config_starts_and_forwards_on_a_single_queue_interface() {
    if skip("default_config_starts_and_forwards_on_a_single_queue_interface") {
        return;
    }
    let _l = lab_lock();
    for xdp in ["generic", "native"] {
        let mut lab = Lab::up_with_queues(LabMode::Dr, 1).expect("lab up");
        lab.start_http(&[80], 0).expect("http");
        let cfg = lab.dir().join("director.toml");
        std::fs::write(&cfg, config(&lab, xdp, "")).expect("config");
        let ns = lab.env("LAB_NS_DIR");
        let mut d = DirectorProcess::start(&exe(), &ns, &cfg, &lab.dir().join("director.log"))
            .unwrap_or_else(|e| {
                panic!(
                    "{xdp}: the default config must start on a single-queue veth: {e}\n{}",
                    std::fs::read_to_string(lab.dir().join("director.log")).unwrap_or_default()
                )
            });
        let vip = lab.env("LAB_VIP4");
        let reqs: Vec<Request> = (0..4u8)
            .flat_map(|g| (1..=4u8).map(move |h| (g, h)))
            .map(|(g, h)| Request::http(&lab.client4(g, h), &vip, 80))
            .collect();
        let res = lab.requests(&reqs).expect("requests");
        let log = d.stop();
        for (q, r) in reqs.iter().zip(&res) {
            assert!(r.ok, "{xdp}: {} -> VIP failed: {}\n{log}", q.src, r.error);
        }
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert!(
            log.contains("shard plan: 1 shard(s); dr0: 1 RX queue(s); shard 0: cpu "),
            "{xdp}: one shard for one queue on {cpus} CPU(s), logged:\n{log}"
        );
        assert!(!log.contains("has no sockets"), "{log}");
    }
}

#[test]
fn more_cores_than_queues_is_refused_with_the_fixes() {
    if skip("more_cores_than_queues_is_refused_with_the_fixes") {
        return;
    }
    let _l = lab_lock();
    let lab = Lab::up_with_queues(LabMode::Dr, 1).expect("lab up");
    let cfg = lab.dir().join("director.toml");
    std::fs::write(&cfg, config(&lab, "native", "cores = [0, 1]")).expect("config");
    let ns = lab.env("LAB_NS_DIR");
    let t0 = Instant::now();
    let out = Command::new("timeout")
        .args(["20", "ip", "netns", "exec", &ns])
        .arg(exe())
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .expect("xdpvs run");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "must refuse to start:\n{text}");
    assert!(t0.elapsed() < Duration::from_secs(15), "{text}");
    for want in [
        "director.cores lists 2 CPUs",
        "dr0 has 1 receiving RX queue(s)",
        "ethtool -L dr0 combined 2",
        "list at most 1 core(s) in director.cores",
    ] {
        assert!(text.contains(want), "{want:?} missing:\n{text}");
    }
    assert!(!text.contains("has no sockets"), "{text}");
    // Refused before attaching: no XDP program left on the interface.
    let link = Command::new("ip")
        .args(["-n", &ns, "link", "show", "dr0"])
        .output()
        .expect("ip link");
    let link = String::from_utf8_lossy(&link.stdout);
    assert!(!link.contains("prog/xdp"), "{link}");
}
