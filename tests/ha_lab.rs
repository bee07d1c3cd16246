//! The HA topology of issue #16: two directors behind an ECMP router (FRR),
//! each announcing the VIP with BIRD. Both directors carry traffic; with
//! `mh` on the persistent service every client group reaches the same real
//! server whichever director it crosses; a withdrawn announcement
//! (`birdc disable vip`), a cut link (BGP hold time) and a killed director
//! move the traffic to the other director.
//!
//! Root only (network namespaces, XDP). Namespaces `xha-*` (the HA lab's
//! own), removed at the end, on failure too (`HaLab`'s Drop).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use xdpvs_lab::ha::{dir_ip4, HaConfig, HaLab, HA_VIP4};
use xdpvs_lab::Request;

const GROUPS: u8 = 4;

fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_xdpvs"))
}

/// `per_group` requests from each client group (host .1 of each /24, a
/// fresh source port each), alternating ports 80 and 443. Returns the real
/// servers each group reached; panics on a failed request.
fn round(lab: &HaLab, per_group: usize, timeout: f64) -> BTreeMap<u8, Vec<String>> {
    let mut reqs = Vec::new();
    for g in 0..GROUPS {
        for k in 0..per_group {
            let mut r = Request::http(&lab.client4(g, 1), HA_VIP4, [80, 443][k % 2]);
            r.timeout = timeout;
            reqs.push(r);
        }
    }
    let res = lab.requests(&reqs).expect("client");
    let mut by_group: BTreeMap<u8, Vec<String>> = BTreeMap::new();
    for (r, out) in reqs.iter().zip(&res) {
        let g = r
            .src
            .split('.')
            .nth(2)
            .and_then(|x| x.parse::<u8>().ok())
            .unwrap()
            - 52;
        match out.server() {
            Some(s) => by_group.entry(g).or_default().push(s.to_string()),
            None => panic!(
                "request {}:{} from {} failed: {}\n{}",
                r.dst,
                r.port,
                r.src,
                out.error,
                lab.daemon_logs()
            ),
        }
    }
    by_group
}

/// Each group reached one server; returns group -> server.
fn one_server_each(rounds: &BTreeMap<u8, Vec<String>>) -> BTreeMap<u8, String> {
    rounds
        .iter()
        .map(|(g, v)| {
            let first = v[0].clone();
            assert!(
                v.iter().all(|s| *s == first),
                "group {g} reached several servers: {v:?}"
            );
            (*g, first)
        })
        .collect()
}

fn totals(lab: &HaLab) -> [u64; 2] {
    [
        lab.director_total(0).expect("director 0 counters"),
        lab.director_total(1).expect("director 1 counters"),
    ]
}

/// Requests (short timeouts) until a whole round succeeds and lands only on
/// director `only`; bounded. Returns the time from `t0`.
fn wait_traffic_on(lab: &HaLab, only: usize, t0: Instant, limit: Duration) -> Duration {
    loop {
        let before = totals(lab);
        let mut reqs = Vec::new();
        for g in 0..GROUPS {
            for k in 0..4 {
                let mut r = Request::http(&lab.client4(g, 1), HA_VIP4, [80, 443][k % 2]);
                r.timeout = 0.5;
                reqs.push(r);
            }
        }
        let res = lab.requests(&reqs).expect("client");
        let after = totals(lab);
        let other = 1 - only;
        if res.iter().all(|r| r.ok) && after[other] == before[other] {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < limit,
            "traffic still fails or reaches director {other} after {limit:?}: paths {:?}\n{}",
            lab.bgp_paths(),
            lab.daemon_logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn ha_ecmp_two_directors() {
    if xdpvs::dataplane::testutil::skip_without_root("ha_ecmp_two_directors") {
        return;
    }
    let t_start = Instant::now();
    let mut lab = HaLab::up(&exe()).expect("HA lab up");
    println!("HA lab up in {:?}", t_start.elapsed());
    let both = vec![dir_ip4(0), dir_ip4(1)];
    assert_eq!(lab.bgp_paths().unwrap(), both, "two ECMP next hops");

    let cfg = HaConfig::default();
    for i in 0..2 {
        let toml = lab.config(i, &cfg);
        lab.start_director(i, &toml).expect("director");
    }

    // Both directors carry traffic; every group sticks to one server.
    let r1 = round(&lab, 16, 3.0);
    let servers = one_server_each(&r1);
    let t1 = totals(&lab);
    println!("groups -> servers: {servers:?}; connections per director {t1:?}");
    assert_eq!(t1[0] + t1[1], u64::from(GROUPS) * 16);
    assert!(
        t1[0] > 0 && t1[1] > 0,
        "ECMP sent everything to one director: {t1:?}"
    );

    // Director 0 withdraws its announcement: all traffic to director 1.
    lab.birdc(0, &["disable", "vip"]).expect("birdc disable");
    let d = lab
        .wait_paths(1, Duration::from_secs(5))
        .expect("withdrawn");
    println!("birdc disable vip: router down to 1 path after {d:?}");
    assert_eq!(lab.bgp_paths().unwrap(), vec![dir_ip4(1)]);
    let before = totals(&lab);
    let r2 = round(&lab, 8, 3.0);
    let after = totals(&lab);
    assert_eq!(after[0], before[0], "director 0 still got traffic");
    assert_eq!(after[1] - before[1], u64::from(GROUPS) * 8);
    assert_eq!(one_server_each(&r2), servers, "groups kept their servers");

    // Announce again: two paths.
    lab.birdc(0, &["enable", "vip"]).expect("birdc enable");
    let d = lab
        .wait_paths(2, Duration::from_secs(10))
        .expect("announced");
    println!("birdc enable vip: router back to 2 paths after {d:?}");

    // Director 1's link is cut (its switch port down): the router keeps the
    // path until the BGP hold time (3 s) runs out.
    let t0 = Instant::now();
    lab.link_down(1).expect("link down");
    let d_route = lab
        .wait_paths(1, Duration::from_secs(10))
        .expect("hold time");
    let d_traffic = wait_traffic_on(&lab, 0, t0, Duration::from_secs(15));
    println!(
        "director 1 link down: router down to 1 path after {d_route:?}, all traffic on director 0 after {d_traffic:?}"
    );
    assert_eq!(lab.bgp_paths().unwrap(), vec![dir_ip4(0)]);
    let r3 = round(&lab, 8, 3.0);
    assert_eq!(one_server_each(&r3), servers, "groups kept their servers");

    lab.link_up(1).expect("link up");
    let d = lab.wait_paths(2, Duration::from_secs(15)).expect("back");
    println!("director 1 link up: 2 paths after {d:?}");

    // Director 1 dies (xdpvs and BIRD killed): the session closes at once.
    let t0 = Instant::now();
    lab.kill_director(1);
    let d_route = lab.wait_paths(1, Duration::from_secs(10)).expect("killed");
    println!("director 1 killed: router down to 1 path after {d_route:?}");
    let before = lab.director_total(0).unwrap();
    let r4 = round(&lab, 8, 3.0);
    assert_eq!(one_server_each(&r4), servers, "groups kept their servers");
    assert_eq!(
        lab.director_total(0).unwrap() - before,
        u64::from(GROUPS) * 8
    );
    println!(
        "director 1 killed: traffic on director 0 after {:?}",
        t0.elapsed()
    );

    drop(lab);
    println!("total {:?}", t_start.elapsed());
    let left = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&left.stdout).contains("xha-"),
        "namespaces left behind"
    );
}
