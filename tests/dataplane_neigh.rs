//! Next hops from the kernel via netlink, in network namespaces (root only):
//! routes, static neighbours, pinned entries, and resolution on request.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use xdpvs::dataplane::neigh::{NeighborResolver, Pinned, ResolverConfig};
use xdpvs::dataplane::netlink::Netlink;
use xdpvs::dataplane::testutil::{ifindex, in_netns, mac_of, sh, Netns};
use xdpvs::shard::nexthop::Neighbors;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

/// `{p}-a` n0 198.18.50.1/24 2001:db8:50::1/64 <-> `{p}-b` n1 198.18.50.2
/// and .5, 2001:db8:50::2; in a: 198.18.60.0/24 via 198.18.50.2 and a
/// permanent neighbour 198.18.50.3.
fn topology(p: &str) -> Result<(Netns, String, String), String> {
    let (a, b) = (format!("{p}-a"), format!("{p}-b"));
    let ns = Netns::create(&[&a, &b])?;
    for n in [&a, &b] {
        sh(&format!(
            "ip netns exec {n} sysctl -qw net.ipv6.conf.all.accept_dad=0"
        ))?;
        sh(&format!(
            "ip netns exec {n} sysctl -qw net.ipv6.conf.default.accept_dad=0"
        ))?;
    }
    sh(&format!(
        "ip -n {a} link add n0 type veth peer name n1 netns {b}"
    ))?;
    for (n, i, v4, v6) in [
        (&a, "n0", "198.18.50.1/24", "2001:db8:50::1/64"),
        (&b, "n1", "198.18.50.2/24", "2001:db8:50::2/64"),
    ] {
        sh(&format!("ip -n {n} addr add {v4} dev {i}"))?;
        sh(&format!("ip -n {n} addr add {v6} dev {i} nodad"))?;
        sh(&format!("ip -n {n} link set {i} up"))?;
    }
    sh(&format!("ip -n {b} addr add 198.18.50.5/24 dev n1"))?;
    sh(&format!(
        "ip -n {a} route add 198.18.60.0/24 via 198.18.50.2"
    ))?;
    sh(&format!(
        "ip -n {a} neigh replace 198.18.50.3 lladdr 02:00:00:00:00:03 dev n0 nud permanent"
    ))?;
    Ok((ns, a, b))
}

#[test]
fn resolver_builds_next_hops_and_resolves_on_request() {
    if xdpvs::dataplane::testutil::skip_without_root("netlink namespace tests need root") {
        return;
    }
    let (_ns, a, b) = topology("xdpvs-tr").expect("topology");
    let n0_mac = mac_of(&a, "n0").expect("mac");
    let n1_mac = mac_of(&b, "n1").expect("mac");
    in_netns(&a, move || {
        let n0 = ifindex("n0").expect("n0");
        let cfg = ResolverConfig {
            pinned: vec![Pinned {
                addr: ip("198.18.50.4"),
                mac: [2, 0, 0, 0, 0, 0x44],
                ifindex: None,
            }],
            ..ResolverConfig::default()
        };
        let mut r = NeighborResolver::new(cfg).expect("resolver");
        let nb = r.shared();

        // Static neighbour, on-link.
        let h = nb.lookup(ip("198.18.50.3")).expect("static neighbour");
        assert_eq!(h.ifindex, n0);
        assert_eq!(h.src_mac, n0_mac);
        assert_eq!(h.dst_mac, [2, 0, 0, 0, 0, 3]);
        assert_eq!(h.mtu, 1500);
        // Pinned entry.
        assert_eq!(
            nb.lookup(ip("198.18.50.4")).map(|h| h.dst_mac),
            Some([2, 0, 0, 0, 0, 0x44])
        );
        // No route at all (no default route in this namespace).
        assert!(nb.lookup(ip("198.18.99.1")).is_none());

        // Off-link via an unresolved gateway, and an unresolved v6 neighbour:
        // the misses queue requests; stepping the resolver resolves them.
        let via_gw = ip("198.18.60.7");
        let v6 = ip("2001:db8:50::2");
        assert!(nb.lookup(via_gw).is_none());
        assert!(nb.lookup(v6).is_none());
        let t0 = Instant::now();
        while (nb.lookup(via_gw).is_none() || nb.lookup(v6).is_none())
            && t0.elapsed() < Duration::from_secs(5)
        {
            r.step().expect("step");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(r.probes() >= 2, "probes {}", r.probes());
        assert_eq!(nb.lookup(via_gw).map(|h| h.dst_mac), Some(n1_mac));
        assert_eq!(nb.lookup(v6).map(|h| h.dst_mac), Some(n1_mac));

        // Single route query.
        let mut nl = Netlink::open().expect("netlink");
        let rt = nl.route_get(via_gw).expect("route get").expect("route");
        assert_eq!(rt.oif, n0);
        assert_eq!(rt.gateway, Some(ip("198.18.50.2")));
        assert_eq!(nl.route_get(ip("198.18.99.1")).expect("route get"), None);
        // The probe itself (RTM_NEWNEIGH + NTF_USE) is accepted by the kernel.
        nl.probe_neighbour(n0, ip("198.18.50.9"))
            .expect("NTF_USE probe");
        nl.probe_neighbour(n0, ip("2001:db8:50::9"))
            .expect("NTF_USE probe v6");

        // Background thread: resolves another address on its own.
        let stop = Arc::new(AtomicBool::new(false));
        let h = r.spawn(stop.clone()).expect("spawn");
        let other = ip("198.18.50.5");
        let t0 = Instant::now();
        while nb.lookup(other).is_none() && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(nb.lookup(other).map(|h| h.dst_mac), Some(n1_mac));
        stop.store(true, Ordering::SeqCst);
        h.join().expect("join");
    })
    .expect("netns");
}
