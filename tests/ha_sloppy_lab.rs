//! A failover without sync (issue #16): two directors behind the ECMP
//! router, `mh` on the persistent firewall-mark service (80 + 443, /24) and
//! `sloppy_tcp`. The scheduler of a persistent service sees the client
//! group, so both directors pick the same server for a group without
//! sharing anything; with `sloppy_tcp` the survivor takes over the flows of
//! a director whose link goes down mid-download: the download completes
//! byte-exact and every group keeps its server. (Without `sloppy_tcp` the
//! survivor drops the flow's segments: not a SYN.)
//!
//! Root only. Namespaces `xha-*`, removed at the end (HaLab's Drop).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use xdpvs_lab::ha::{client_requests, rs_ip4, HaConfig, HaLab, HA_BIG_BYTES, HA_VIP4};
use xdpvs_lab::Request;

fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_xdpvs"))
}

/// Requests from hosts .1-.8 of each of the 4 groups, ports 80 and 443:
/// group -> the one server it reached.
fn groups(lab: &HaLab) -> BTreeMap<u8, String> {
    let mut reqs = Vec::new();
    for g in 0..4u8 {
        for k in 0..16usize {
            reqs.push(Request::http(
                &lab.client4(g, 1 + (k % 8) as u8),
                HA_VIP4,
                [80, 443][k % 2],
            ));
        }
    }
    let res = lab.requests(&reqs).expect("client");
    let mut by: BTreeMap<u8, Vec<String>> = BTreeMap::new();
    for (r, out) in reqs.iter().zip(&res) {
        let g = r.src.split('.').nth(2).unwrap().parse::<u8>().unwrap() - 52;
        let s = out
            .server()
            .unwrap_or_else(|| panic!("{} failed: {}", r.src, out.error));
        by.entry(g).or_default().push(s.to_string());
    }
    by.into_iter()
        .map(|(g, v)| {
            assert!(v.iter().all(|s| *s == v[0]), "group {g} split: {v:?}");
            (g, v[0].clone())
        })
        .collect()
}

#[test]
fn sloppy_tcp_and_mh_fail_over_without_sync() {
    if xdpvs::dataplane::testutil::skip_without_root("sloppy_tcp_and_mh_fail_over_without_sync") {
        return;
    }
    let mut lab = HaLab::up(&exe()).expect("HA lab up");
    let mut direct = Request::http(&lab.client4(0, 16), rs_ip4()[0], 80);
    direct.path = Some("/big?rate=100000000".into());
    direct.timeout = 30.0;
    let reference = lab.requests(&[direct]).expect("client").remove(0);
    assert!(reference.ok, "{}", reference.error);

    let cfg = HaConfig {
        scheduler: "mh".into(),
        sloppy_tcp: true,
        ..HaConfig::default()
    };
    for i in 0..2 {
        let c = lab.config(i, &cfg);
        lab.start_director(i, &c).expect("director");
    }
    let servers = groups(&lab);
    let t = [
        lab.director_total(0).unwrap(),
        lab.director_total(1).unwrap(),
    ];
    assert!(t[0] > 0 && t[1] > 0, "both directors carry traffic: {t:?}");

    let src = lab.client4(3, 11);
    let (dl, carrier) = std::thread::scope(|sc| {
        let before = [
            lab.director_total(0).unwrap(),
            lab.director_total(1).unwrap(),
        ];
        let h = sc.spawn(|| {
            let mut r = Request::http(&src, HA_VIP4, 80);
            r.path = Some("/big?rate=4000000".into());
            r.timeout = 60.0;
            client_requests(&[r]).expect("client").remove(0)
        });
        let t0 = Instant::now();
        let mut carrier = None;
        while carrier.is_none() && t0.elapsed() < Duration::from_secs(3) {
            std::thread::sleep(Duration::from_millis(50));
            carrier = (0..2).find(|&i| lab.director_total(i).unwrap_or(0) > before[i]);
        }
        let carrier = carrier.expect("the download reached a director");
        std::thread::sleep(Duration::from_millis(1000));
        lab.link_down(carrier).expect("link down");
        let moved = lab
            .wait_paths(1, Duration::from_secs(10))
            .expect("withdrawn");
        println!("director {carrier}'s link cut: route moved after {moved:?}");
        (h.join().unwrap(), carrier)
    });
    println!(
        "download through director {carrier}: {} in {} ms",
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
    assert_eq!(groups(&lab), servers, "groups kept their servers");
}
