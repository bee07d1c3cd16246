//! Drained and dead real servers, in the lab, as IPVS documents them:
//! weight 0 drains gracefully (the held session and the client group's
//! persistence stay), `expire_quiescent_template` moves the group, and a
//! real server whose link goes down mid-session is taken out by its health
//! check (new clients avoid it); with `on_failure = "remove"` and
//! `expire_nodest_conn`, its connections are expired at their next packet
//! and the group is scheduled elsewhere.
//!
//! Root only (network namespaces, XDP).

use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use xdpvs::control::status::Status;
mod labkit;

use labkit::{exe, lab_lock, start_echo, Held};
use xdpvs_lab::demo::DirectorProcess;
use xdpvs_lab::{Lab, LabMode, Request};

fn config(lab: &Lab, extra: &str, on_failure: &str) -> String {
    let mut reals = String::new();
    for a in lab.env_list("LAB_RS_IP4") {
        reals.push_str(&format!("  [[service.real]]\n  addr = \"{a}\"\n"));
    }
    format!(
        r#"[director]
interfaces = ["dr0"]
xdp_mode = "native"
control_socket = "{sock}"
metrics = "off"
{extra}
[[fwmark]]
mark = 1
rules = [ {{ vip = "198.18.0.100", proto = "tcp", ports = "80,7000" }} ]

[[service]]
name = "web"
fwmark = 1
scheduler = "rr"
persistence = {{ timeout = 600, netmask = "255.255.255.0" }}
health = {{ type = "tcp", port = 80, interval = 1, timeout = 1, rise = 2, fall = 2, on_failure = "{on_failure}" }}
{reals}"#,
        sock = lab.dir().join("xdpvs.sock").display(),
    )
}

/// Fields drop in order: the director stops before the lab goes away.
struct Env {
    director: DirectorProcess,
    lab: Lab,
    cfg: PathBuf,
}

impl Env {
    fn cli(&self, args: &[&str]) -> Output {
        labkit::cli(&self.lab, args)
    }
    fn status(&self) -> Status {
        labkit::status(&self.lab)
    }
    fn server(&self, src: &str) -> String {
        let r = self
            .lab
            .requests(&[Request::http(src, &self.lab.env("LAB_VIP4"), 80)])
            .expect("request");
        assert!(
            r[0].ok,
            "request from {src}: {}\n{}",
            r[0].error,
            self.director.log_text()
        );
        r[0].server().unwrap_or_default().to_string()
    }
    fn reload_with(&self, text: &str) {
        std::fs::write(&self.cfg, text).expect("cfg");
        let out = self.cli(&["reload"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    /// The health of real server `rs` (index), "removed" when a failed
    /// check took it out of the service.
    fn health(&self, rs: usize) -> String {
        let addr = self.lab.env_list("LAB_RS_IP4")[rs].clone();
        self.status().services[0]
            .reals
            .iter()
            .find(|r| r.addr.to_string() == addr)
            .map(|r| r.health.clone())
            .unwrap_or_else(|| "removed".into())
    }

    fn wait_health(&self, rs: usize, want: &str) {
        let t0 = Instant::now();
        while self.health(rs) != want {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "rs{} not {want} in time\n{}",
                rs + 1,
                self.director.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn start(on_failure: &str) -> Env {
    let mut lab = Lab::up(LabMode::Dr).expect("lab");
    lab.start_http(&[80], 0).expect("http");
    start_echo(&mut lab);
    let cfg = lab.dir().join("xdpvs.toml");
    std::fs::write(&cfg, config(&lab, "", on_failure)).expect("cfg");
    let director = DirectorProcess::start(
        &exe(),
        &lab.env("LAB_NS_DIR"),
        &cfg,
        &lab.dir().join("director.log"),
    )
    .expect("director");
    Env { lab, director, cfg }
}

fn idx(rs: &str) -> usize {
    rs.trim_start_matches("rs").parse::<usize>().unwrap_or(1) - 1
}

#[test]
fn weight_zero_drains_and_expire_quiescent_template_moves_the_group() {
    if xdpvs::dataplane::testutil::skip_without_root("drain") {
        return;
    }
    let _l = lab_lock();
    let e = start("quiesce");
    let mut held = Held::open(&e.lab, "198.18.101.7", 3);
    let first = held.ask(1);
    let rs = first
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    let rs_addr = e.lab.env_list("LAB_RS_IP4")[idx(&rs)].clone();
    // Weight 0: drain.
    let out = e.cli(&[
        "real",
        "edit",
        "--service",
        "web",
        "--addr",
        &rs_addr,
        "--weight",
        "0",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        held.ask(2),
        format!("{rs} ping 2"),
        "weight 0 broke an established session"
    );
    assert_eq!(
        e.server("198.18.101.8"),
        rs,
        "the group's template must be honoured at weight 0"
    );
    for h in 1..=6 {
        assert_ne!(
            e.server(&e.lab.client4(0, h)),
            rs,
            "a new group went to a quiesced server"
        );
        assert_ne!(
            e.server(&e.lab.client4(3, h)),
            rs,
            "a new group went to a quiesced server"
        );
    }
    // expire_quiescent_template: the group is scheduled anew, the held
    // connection carries on (connections are not templates).
    let mut text = config(&e.lab, "expire_quiescent_template = true", "quiesce");
    text = text.replace(
        &format!("  addr = \"{rs_addr}\"\n"),
        &format!("  addr = \"{rs_addr}\"\n  weight = 0\n"),
    );
    e.reload_with(&text);
    assert_ne!(
        e.server("198.18.101.9"),
        rs,
        "expire_quiescent_template should move the group"
    );
    assert_eq!(held.ask(3), format!("{rs} ping 3"));
}

#[test]
fn a_dead_link_is_taken_out_by_health_checks_and_nodest_connections_expire() {
    if xdpvs::dataplane::testutil::skip_without_root("dead link") {
        return;
    }
    let _l = lab_lock();
    let mut e = start("remove");
    let text = config(&e.lab, "expire_nodest_conn = true", "remove");
    e.reload_with(&text);
    let mut held = Held::open(&e.lab, "198.18.102.7", 3);
    let first = held.ask(1);
    let rs = first
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    let i = idx(&rs);
    let ns = e.lab.rs_namespaces()[i].clone();
    // The real server's link goes down mid-session.
    let _ = e.lab.exec(&ns, &["ip", "link", "set", "eth0", "down"]);
    e.wait_health(i, "removed");
    // New clients, and the held client's own group, go elsewhere.
    for h in 1..=4 {
        assert_ne!(
            e.server(&e.lab.client4(0, h)),
            rs,
            "a new client went to the dead server"
        );
    }
    assert_ne!(
        e.server("198.18.102.8"),
        rs,
        "the group's template should be invalid now"
    );
    // The held session's next packet finds its server removed: with
    // expire_nodest_conn the connection is expired (and the packet dropped).
    let reply = held.ask(2);
    assert!(!reply.starts_with(&format!("{rs} ping 2")), "{reply}");
    let stats = e.cli(&["stats"]);
    let text = String::from_utf8_lossy(&stats.stdout).to_string();
    assert!(
        text.contains("dest_removed="),
        "no dest_removed drop counted:\n{text}"
    );
    // The link comes back: the health check restores it.
    let _ = e.lab.exec(&ns, &["ip", "link", "set", "eth0", "up"]);
    let _ = e.lab.exec(
        &ns,
        &["ip", "route", "replace", "default", "via", "198.18.0.1"],
    );
    e.wait_health(i, "up");
    let log = e.director.stop();
    assert!(
        log.contains("health: real server DOWN") && log.contains("health: real server UP"),
        "{log}"
    );
}
