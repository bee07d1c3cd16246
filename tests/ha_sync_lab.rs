//! Several directors with connection sync (issue #16): two directors
//! behind an ECMP router (FRR), each announcing the VIP with BIRD through
//! xdpvs's `[announce]` commands, syncing connections and persistence
//! templates in the IPVS sync protocol (multicast 224.0.0.81 on their LAN).
//! `wlc` on a firewall-mark service (80 + 443) with /24 persistence: a
//! scheduler the two directors would disagree on without sync.
//!
//! - requests from every client group over many source ports reach both
//!   directors and still one real server per group;
//! - a rate-limited 20 MB download, forwarded by the carrying director's
//!   XDP program (fast path), continues byte-exact after that director's
//!   link goes down; every group keeps its server;
//! - the dead director comes back, resyncs (announced only then), and after
//!   the *other* one dies, a download opened before the rejoin completes.
//!
//! Root only. Namespaces `xha-*`, removed at the end (HaLab's Drop).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use xdpvs_lab::ha::{client_requests, dir_ip4, rs_ip4, HaConfig, HaLab, HA_BIG_BYTES, HA_VIP4};
use xdpvs_lab::{Request, Response};

const GROUPS: u8 = 4;

fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_xdpvs"))
}

/// `per_group` requests from each group (hosts .1-.8 in turn, a fresh
/// source port each), alternating ports 80 and 443; group -> servers.
fn round(lab: &HaLab, per_group: usize) -> BTreeMap<u8, Vec<String>> {
    let mut reqs = Vec::new();
    for g in 0..GROUPS {
        for k in 0..per_group {
            let host = 1 + (k % 8) as u8;
            reqs.push(Request::http(
                &lab.client4(g, host),
                HA_VIP4,
                [80, 443][k % 2],
            ));
        }
    }
    let res = lab.requests(&reqs).expect("client");
    let mut by: BTreeMap<u8, Vec<String>> = BTreeMap::new();
    for (r, out) in reqs.iter().zip(&res) {
        let g = r.src.split('.').nth(2).unwrap().parse::<u8>().unwrap() - 52;
        match out.server() {
            Some(s) => by.entry(g).or_default().push(s.to_string()),
            None => panic!(
                "{} -> {}:{} failed: {}\n{}",
                r.src,
                r.dst,
                r.port,
                out.error,
                lab.daemon_logs()
            ),
        }
    }
    by
}

fn one_server_each(r: &BTreeMap<u8, Vec<String>>) -> BTreeMap<u8, String> {
    r.iter()
        .map(|(g, v)| {
            assert!(
                v.iter().all(|s| *s == v[0]),
                "group {g} reached several servers: {v:?}"
            );
            (*g, v[0].clone())
        })
        .collect()
}

fn totals(lab: &HaLab) -> [u64; 2] {
    [
        lab.director_total(0).unwrap_or(0),
        lab.director_total(1).unwrap_or(0),
    ]
}

fn sync_status(lab: &HaLab, i: usize) -> serde_json::Value {
    lab.director_status(i)
        .map(|v| v["sync"].clone())
        .unwrap_or_default()
}

fn wait_resync(lab: &HaLab, i: usize, want: &str, limit: Duration) {
    let t0 = Instant::now();
    loop {
        let s = sync_status(lab, i);
        if s["resync"] == want {
            return;
        }
        assert!(
            t0.elapsed() < limit,
            "director {i}: resync {} not {want} after {limit:?}: {s}",
            s["resync"]
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn download(src: &str, rate: u32) -> Response {
    let mut r = Request::http(src, HA_VIP4, 80);
    r.path = Some(format!("/big?rate={rate}"));
    r.timeout = 60.0;
    client_requests(&[r]).expect("client").remove(0)
}

#[test]
fn ha_sync_failover_keeps_connections_and_groups() {
    if xdpvs::dataplane::testutil::skip_without_root(
        "ha_sync_failover_keeps_connections_and_groups",
    ) {
        return;
    }
    let t_start = Instant::now();
    let mut lab = HaLab::up(&exe()).expect("HA lab up");
    let cfg = HaConfig::synced();

    // The reference content, straight from a real server.
    let mut direct = Request::http(&lab.client4(0, 16), rs_ip4()[0], 80);
    direct.path = Some("/big?rate=100000000".into());
    direct.timeout = 30.0;
    let reference = lab.requests(&[direct]).expect("client").remove(0);
    assert!(reference.ok, "direct download: {}", reference.error);
    assert_eq!(reference.len as usize, HA_BIG_BYTES);

    // Director 0 starts first: nobody answers its resync, it goes on alone
    // after resync_wait; director 1 gets director 0's table.
    let c0 = lab.config(0, &cfg);
    lab.start_director(0, &c0).expect("director 0");
    wait_resync(&lab, 0, "alone", Duration::from_secs(10));
    let c1 = lab.config(1, &cfg);
    lab.start_director(1, &c1).expect("director 1");
    wait_resync(&lab, 1, "synced", Duration::from_secs(10));
    lab.wait_paths(2, Duration::from_secs(10))
        .expect("two paths");

    // One request per group makes its template; then many source ports.
    round(&lab, 1);
    std::thread::sleep(Duration::from_millis(300));
    let before = totals(&lab);
    let servers = one_server_each(&round(&lab, 24));
    let after = totals(&lab);
    println!("groups -> servers {servers:?}; new connections per director {before:?} -> {after:?}");
    assert!(
        after[0] > before[0] && after[1] > before[1],
        "ECMP used one director only: {before:?} -> {after:?}"
    );
    for i in 0..2 {
        let s = sync_status(&lab, i);
        println!("director {i} sync: {s}");
        assert!(s["applied_templates"].as_u64().unwrap_or(0) > 0, "{s}");
        assert!(s["applied_conns"].as_u64().unwrap_or(0) > 0, "{s}");
    }

    // A 20 MB download at 4 MB/s; the link of the director carrying it
    // goes down a second in.
    let src = lab.client4(1, 9);
    let (dl, carrier, moved) = std::thread::scope(|sc| {
        let before = totals(&lab);
        let h = sc.spawn(|| download(&src, 4_000_000));
        let t0 = Instant::now();
        let mut carrier = None;
        while carrier.is_none() && t0.elapsed() < Duration::from_secs(3) {
            std::thread::sleep(Duration::from_millis(50));
            let now = totals(&lab);
            carrier = (0..2).find(|&i| now[i] > before[i]);
        }
        let carrier = carrier.expect("the download reached a director");
        std::thread::sleep(Duration::from_millis(1000));
        // The download is forwarded by the carrier's XDP program (the
        // default fast path) when its link goes: the takeover is of an
        // offloaded flow, which the survivor knows only from sync.
        let fp = lab
            .director_status(carrier)
            .map(|v| v["fast_path"].clone())
            .unwrap_or_default();
        assert!(
            fp["flows"].as_u64().unwrap_or(0) >= 1 && fp["packets"].as_u64().unwrap_or(0) > 0,
            "the download is not on director {carrier}'s fast path: {fp}"
        );
        let t_cut = Instant::now();
        lab.link_down(carrier).expect("link down");
        let moved = lab
            .wait_paths(1, Duration::from_secs(10))
            .expect("withdrawn");
        let _ = t_cut;
        (h.join().unwrap(), carrier, moved)
    });
    println!(
        "download through director {carrier}, its link cut: route moved after {moved:?}; download {} in {} ms",
        if dl.ok { "completed" } else { "FAILED" },
        dl.ms
    );
    assert!(
        dl.ok,
        "download failed: {}\n{}",
        dl.error,
        lab.daemon_logs()
    );
    assert_eq!(dl.len as usize, HA_BIG_BYTES);
    assert_eq!(dl.sha256, reference.sha256, "byte-exact");
    let survivor = 1 - carrier;
    let r = round(&lab, 8);
    assert_eq!(one_server_each(&r), servers, "groups kept their servers");

    // The dead director comes back: stopped (its `down` withdraws the
    // VIP), link up, started: it asks the survivor for its table and is
    // announced once it has it. A download opened before the rejoin then
    // loses the survivor and completes through the rejoined director.
    let src2 = lab.client4(2, 10);
    let dl2 = std::thread::scope(|sc| {
        let h = sc.spawn(|| download(&src2, 2_000_000));
        std::thread::sleep(Duration::from_millis(500));
        lab.stop_director(carrier);
        lab.link_up(carrier).expect("link up");
        let c = lab.config(carrier, &cfg);
        lab.start_director(carrier, &c).expect("rejoin");
        wait_resync(&lab, carrier, "synced", Duration::from_secs(10));
        lab.wait_paths(2, Duration::from_secs(15))
            .expect("announced again");
        let s = sync_status(&lab, carrier);
        println!("rejoined director {carrier}: {s}");
        assert!(
            s["resync_entries_received"].as_u64().unwrap_or(0) > 0,
            "{s}"
        );
        let t_kill = Instant::now();
        lab.kill_director(survivor);
        let gone = lab.wait_paths(1, Duration::from_secs(10)).expect("killed");
        println!("director {survivor} killed: route moved after {gone:?}");
        let _ = t_kill;
        h.join().unwrap()
    });
    println!(
        "download opened before the rejoin: {} in {} ms",
        if dl2.ok { "completed" } else { "FAILED" },
        dl2.ms
    );
    assert!(
        dl2.ok,
        "download 2 failed: {}\n{}",
        dl2.error,
        lab.daemon_logs()
    );
    assert_eq!(dl2.sha256, reference.sha256, "byte-exact");
    let r = round(&lab, 8);
    assert_eq!(one_server_each(&r), servers, "groups kept their servers");
    assert_eq!(lab.bgp_paths().unwrap(), vec![dir_ip4(carrier)]);
    drop(lab);
    println!("total {:?}", t_start.elapsed());
}
