//! `[announce]` and the services' quorum commands with the real director,
//! in a namespace lab of its own (names `xan*`, so it runs beside the other
//! lab tests): a director namespace with one veth to a real-server
//! namespace, XDP in generic mode.
//! - a failing `up` is retried every `retry` until it succeeds, then never
//!   runs again (a reload that changes it runs nothing);
//! - exec health checks take the service's servers down: below its quorum
//!   (a sum of weights, keepalived's) `quorum_down` runs; a server whose
//!   weight is too small does not bring it back, one heavy enough does
//!   (`quorum_up`);
//! - SIGTERM runs `down` while the XDP program is still attached (the
//!   command looks), then the director detaches.
//!
//! Root only (network namespaces, XDP); under CI a skip is a failure.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use xdpvs::control::status::Status;
use xdpvs::dataplane::testutil::{sh, skip_without_root, Netns};
use xdpvs_lab::demo::DirectorProcess;

fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_xdpvs"))
}

struct Files {
    dir: PathBuf,
}

impl Files {
    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    fn log(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn count(&self, line: &str) -> usize {
        self.log().iter().filter(|l| *l == line).count()
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn config(f: &Files, up_word: &str) -> String {
    let log = f.path("log");
    // The exec check of server N passes while file `rsN` exists.
    let check = |n: u32| {
        format!(
            "health = {{ type = \"exec\", cmd = [\"/bin/sh\", \"-c\", \"test -e {}\"], \
             interval = 1, timeout = 1, rise = 1, fall = 1 }}",
            f.path(&format!("rs{n}"))
        )
    };
    format!(
        r#"[director]
interfaces = ["xan0"]
xdp_mode = "generic"
control_socket = "{sock}"
metrics = "off"

[announce]
up = ["/bin/sh", "-c", "echo {up_word} >> {log}; test -e {upok} || {{ echo 'bird: not yet' >&2; exit 1; }}"]
down = ["/bin/sh", "-c", "if ip link show dev xan0 | grep -q xdp; then echo down attached >> {log}; else echo down detached >> {log}; fi"]
timeout = "5s"
retry = "300ms"
withdraw_delay = "500ms"

[[service]]
name = "web"
proto = "tcp"
vip = "198.18.211.1"
port = 80
quorum = 2
quorum_up = ["/bin/sh", "-c", "echo quorum_up $XDPVS_SERVICE >> {log}"]
quorum_down = ["/bin/sh", "-c", "echo quorum_down $XDPVS_SERVICE >> {log}"]
  [[service.real]]
  addr = "198.18.210.2"
  weight = 2
  {check1}
  [[service.real]]
  addr = "198.18.210.3"
  weight = 1
  {check2}
"#,
        sock = f.path("xdpvs.sock"),
        upok = f.path("upok"),
        check1 = check(1),
        check2 = check(2),
    )
}

fn stats(ns: &str, sock: &str) -> Status {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(exe())
        .args(["stats", "--json", "-s", sock])
        .output()
        .expect("stats");
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

/// Wait (bounded) until `f` holds.
fn wait_for(what: &str, limit: Duration, f: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn touch(p: &str) {
    std::fs::write(p, "").expect("touch");
}

#[test]
fn announce_retry_quorum_and_withdraw_before_detach() {
    if skip_without_root("announce lab") {
        return;
    }
    let id = std::process::id();
    let (nd, nr) = (format!("xan{id}d"), format!("xan{id}r"));
    let _ns = Netns::create(&[&nd, &nr]).expect("namespaces");
    for c in [
        format!("ip -n {nd} link add xan0 type veth peer name xan1 netns {nr}"),
        format!("ip -n {nd} addr add 198.18.210.1/24 dev xan0"),
        format!("ip -n {nd} link set xan0 up"),
        format!("ip -n {nr} addr add 198.18.210.2/24 dev xan1"),
        format!("ip -n {nr} link set xan1 up"),
    ] {
        sh(&c).expect("veth");
    }
    let dir = std::env::temp_dir().join(format!("xan-{id}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let f = Files { dir };
    touch(&f.path("rs1"));
    touch(&f.path("rs2"));
    let cfg = f.dir.join("xdpvs.toml");
    std::fs::write(&cfg, config(&f, "up")).expect("cfg");
    let sock = f.path("xdpvs.sock");
    let mut d =
        DirectorProcess::start(&exe(), &nd, &cfg, &f.dir.join("director.log")).expect("director");

    // A failing up is retried (every 300 ms) and reported.
    wait_for("up retried", Duration::from_secs(10), || f.count("up") >= 3);
    let st = stats(&nd, &sock);
    assert_eq!(st.announce.state, "pending", "{:?}", st.announce);
    assert!(st.announce.failures >= 2, "{:?}", st.announce);
    assert!(
        st.announce
            .last_error
            .contains("exit status 1; stderr: bird: not yet"),
        "{:?}",
        st.announce
    );
    assert!(
        st.announce.waiting_for.is_empty(),
        "attached: ready {:?}",
        st.announce
    );
    // The service has quorum from the start (2 + 1 >= 2): quorum_up ran.
    wait_for("quorum_up at start", Duration::from_secs(5), || {
        f.count("quorum_up web") == 1
    });
    touch(&f.path("upok"));
    wait_for("announced", Duration::from_secs(5), || {
        stats(&nd, &sock).announce.state == "announced"
    });
    let ups = f.count("up");
    // A reload that changes `up` runs nothing while announced.
    std::fs::write(&cfg, config(&f, "up2")).expect("cfg");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(f.count("up"), ups, "up ran once it succeeded");
    assert_eq!(
        f.count("up2"),
        0,
        "a changed up does not run: {:?}",
        f.log()
    );
    assert!(
        std::fs::read_to_string(f.dir.join("director.log"))
            .unwrap_or_default()
            .contains("reload (file changed) ok"),
        "the reload was applied"
    );

    // Every server's check fails: quorum lost, quorum_down.
    std::fs::remove_file(f.path("rs1")).expect("rm");
    std::fs::remove_file(f.path("rs2")).expect("rm");
    wait_for("quorum_down", Duration::from_secs(10), || {
        f.count("quorum_down web") == 1
    });
    // (Lost as soon as the weight-2 server is down: 1 < 2.)
    wait_for("every server down", Duration::from_secs(10), || {
        stats(&nd, &sock).announce.services[0].live_weight == 0
    });
    let q = stats(&nd, &sock).announce.services;
    assert_eq!(q.len(), 1);
    assert!(!q[0].has_quorum && q[0].losses == 1, "{q:?}");
    assert_eq!(f.count("quorum_down web"), 1, "once: {:?}", f.log());
    // The weight-1 server alone is below quorum 2: nothing runs.
    touch(&f.path("rs2"));
    wait_for("rs2 up", Duration::from_secs(10), || {
        stats(&nd, &sock).announce.services[0].live_weight == 1
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(f.count("quorum_up web"), 1, "{:?}", f.log());
    // The weight-2 one brings quorum back.
    touch(&f.path("rs1"));
    wait_for("quorum_up again", Duration::from_secs(10), || {
        f.count("quorum_up web") == 2
    });

    // SIGTERM: down runs while XDP is attached, before the director
    // detaches and exits; the services' quorum_down too.
    let out = d.stop();
    let log = f.log();
    assert_eq!(
        log.iter()
            .filter(|l| l.starts_with("down"))
            .collect::<Vec<_>>(),
        vec!["down attached"],
        "{log:?}\n{out}"
    );
    assert_eq!(f.count("quorum_down web"), 2, "{log:?}");
    let ran = out.find("announce down ran").expect("down logged");
    let detached = out.find("detached XDP").expect("detach logged");
    assert!(ran < detached, "{out}");
    let waited = out.find("waiting 500 ms").expect("withdraw_delay");
    assert!(waited < detached, "{out}");
    assert!(!Path::new(&sock).exists(), "the director is gone");
}
