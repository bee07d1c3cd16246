//! Restart without losing state, in the lab: the director writes its
//! connections and persistence templates on SIGTERM and the next start
//! restores what still matches the config, so a held TCP session survives
//! and every client group keeps its real server; `xdpvs run --takeover`
//! does the same for an upgrade in place; a corrupt state file is reported
//! and ignored; entries of a real server removed meanwhile are dropped.
//!
//! Root only (network namespaces, XDP).

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

mod labkit;

use labkit::{exe, start_echo, status, Held};
use xdpvs_lab::demo::DirectorProcess;
use xdpvs_lab::{Lab, LabMode, Request};

fn config(lab: &Lab, with_rs2: bool) -> String {
    let mut reals = String::new();
    for (i, a) in lab.env_list("LAB_RS_IP4").iter().enumerate() {
        if i == 1 && !with_rs2 {
            continue;
        }
        reals.push_str(&format!("  [[service.real]]\n  addr = \"{a}\"\n"));
    }
    format!(
        r#"[director]
interfaces = ["dr0"]
xdp_mode = "native"
control_socket = "{sock}"
metrics = "off"
state_file = "{state}"

[[fwmark]]
mark = 1
rules = [ {{ vip = "198.18.0.100", proto = "tcp", ports = "80,443,7000" }} ]

[[service]]
name = "web"
fwmark = 1
scheduler = "rr"
persistence = {{ timeout = 600, netmask = "255.255.255.0" }}
{reals}"#,
        sock = lab.dir().join("xdpvs.sock").display(),
        state = lab.dir().join("xdpvs.state").display(),
    )
}

fn groups(lab: &Lab, order: &[u8]) -> BTreeMap<u8, String> {
    let vip = lab.env("LAB_VIP4");
    let reqs: Vec<Request> = order
        .iter()
        .map(|g| Request::http(&lab.client4(*g, 2), &vip, 80))
        .collect();
    let res = lab.requests(&reqs).expect("requests");
    order
        .iter()
        .zip(res)
        .map(|(g, r)| {
            assert!(r.ok, "group {g}: {}", r.error);
            (*g, r.server().unwrap_or_default().to_string())
        })
        .collect()
}

fn start(lab: &Lab, cfg: &std::path::Path, log: &str, takeover: bool) -> DirectorProcess {
    let ns = lab.env("LAB_NS_DIR");
    if !takeover {
        return DirectorProcess::start(&exe(), &ns, cfg, &lab.dir().join(log)).expect("director");
    }
    // `--takeover` goes through the same helper via a wrapper script.
    let wrapper = lab.dir().join("takeover.sh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n[ \"$1\" = run ] && shift && exec {} run --takeover \"$@\"\nexec {} \"$@\"\n",
            exe().display(),
            exe().display()
        ),
    )
    .expect("wrapper");
    let _ = Command::new("chmod").arg("+x").arg(&wrapper).status();
    DirectorProcess::start(&wrapper, &ns, cfg, &lab.dir().join(log)).expect("director")
}

fn wait_exit(d: &mut DirectorProcess) -> String {
    let t0 = Instant::now();
    loop {
        let log = d.log_text();
        if log.contains("final counters") {
            return log;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "old director did not exit:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The running director forwards at least one flow in its XDP program and
/// has forwarded packets there (polled: the counters are read every tick).
fn offloaded(lab: &Lab, when: &str) {
    let t0 = Instant::now();
    loop {
        let fp = status(lab).fast_path.unwrap_or_default();
        if fp.on && fp.flows >= 1 && fp.installs >= 1 && fp.packets >= 1 {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{when}: the held session is not on the fast path: {fp:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn restart_and_takeover_keep_sessions_and_persistence() {
    if xdpvs::dataplane::testutil::skip_without_root("restart") {
        return;
    }
    let mut lab = Lab::up(LabMode::Dr).expect("lab");
    lab.start_http(&[80], 0).expect("http");
    start_echo(&mut lab);
    // Unlike an IPVS director, an xdpvs director needs no VIP of its own;
    // without one, packets that arrive while no xdpvs runs are dropped
    // (and retransmitted) instead of answered with a reset by the kernel.
    let ns_dir = lab.env("LAB_NS_DIR");
    let _ = lab.exec(
        &ns_dir,
        &["ip", "addr", "del", "198.18.0.100/32", "dev", "lo"],
    );
    let cfg = lab.dir().join("xdpvs.toml");
    std::fs::write(&cfg, config(&lab, true)).expect("cfg");

    let mut a = start(&lab, &cfg, "a.log", false);
    let before = groups(&lab, &[0, 1, 2, 3]);
    let mut held = Held::open(&lab, "198.18.102.7", 20);
    let first = held.ask(1);
    let rs = first
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(first.ends_with("ping 1") && rs.starts_with("rs"), "{first}");
    // The held session is established: the XDP program forwards it (the
    // default fast path), so what follows is a restart under offloaded flows.
    assert_eq!(held.ask(10), format!("{rs} ping 10"));
    offloaded(&lab, "before the restart");

    // 1. Restart: SIGTERM saves, the next start restores.
    let log_a = a.stop();
    assert!(log_a.contains("state saved: "), "{log_a}");
    let b = start(&lab, &cfg, "b.log", false);
    let log_b = b.log_text();
    assert!(log_b.contains("state restored: "), "{log_b}");
    assert_eq!(
        held.ask(2),
        format!("{rs} ping 2"),
        "the held session broke across a restart"
    );
    // Restored connections come back without an entry: the next packet
    // crosses the engine, which installs it again.
    assert_eq!(held.ask(20), format!("{rs} ping 20"));
    offloaded(&lab, "after the restart");
    // Ask in another order than before: a fresh scheduler would pick
    // differently, restored templates keep every group where it was.
    assert_eq!(
        groups(&lab, &[3, 2, 1, 0]),
        before,
        "groups moved across a restart"
    );

    // 2. Takeover for an upgrade: the new process asks the old to hand over.
    let mut b = b;
    let c = start(&lab, &cfg, "c.log", true);
    let log_b = wait_exit(&mut b);
    assert!(log_b.contains("takeover requested"), "{log_b}");
    assert!(
        c.log_text().contains("state restored: "),
        "{}",
        c.log_text()
    );
    assert_eq!(
        held.ask(3),
        format!("{rs} ping 3"),
        "the held session broke across a takeover"
    );
    assert_eq!(held.ask(30), format!("{rs} ping 30"));
    offloaded(&lab, "after the takeover");
    assert_eq!(
        groups(&lab, &[1, 3, 0, 2]),
        before,
        "groups moved across a takeover"
    );
    drop(held);

    // 3. The config changes between runs: rs2's entries no longer match.
    let mut c = c;
    c.stop();
    std::fs::write(&cfg, config(&lab, false)).expect("cfg");
    let mut d = start(&lab, &cfg, "d.log", false);
    let log_d = d.log_text();
    let moved: Vec<u8> = before
        .iter()
        .filter(|(_, s)| s.as_str() == "rs2")
        .map(|(g, _)| *g)
        .collect();
    if !moved.is_empty() {
        assert!(
            !log_d.contains("; 0 no longer match"),
            "entries of the removed rs2 should be dropped:\n{log_d}"
        );
    }
    let after = groups(&lab, &[0, 1, 2, 3]);
    for (g, s) in &before {
        if s != "rs2" {
            assert_eq!(after.get(g), Some(s), "group {g} lost its server");
        } else {
            assert_ne!(after.get(g).map(String::as_str), Some("rs2"));
        }
    }
    d.stop();

    // 4. A corrupt state file is reported and ignored.
    let state = lab.dir().join("xdpvs.state");
    let text = std::fs::read_to_string(&state).expect("state file");
    std::fs::write(&state, text.replacen("198.18", "198.19", 1)).expect("corrupt");
    let mut e = start(&lab, &cfg, "e.log", false);
    let log_e = e.log_text();
    assert!(
        log_e.contains("state file ignored") && log_e.contains("checksum"),
        "{log_e}"
    );
    assert!(!log_e.contains("state restored: "), "{log_e}");
    assert_eq!(
        groups(&lab, &[0]).len(),
        1,
        "the director serves after ignoring the file"
    );
    e.stop();
}
