//! The sorry server and script (exec) health checks in the lab, as a
//! keepalived user runs them, on the two-arm NAT lab:
//! - real servers rs1 and rs2 on port 80, the sorry server rs3 on port 8080
//!   (not a real server of the service; NAT, so its replies on 8080 must
//!   pass the XDP filter's real-server map). Health checks take rs1 and rs2
//!   down (their http servers are killed): new clients reach the sorry
//!   server. rs1 comes back: new clients go to it, while a session held
//!   on the sorry server goes on.
//! - exec checks with alpha, notify_up and notify_down: every server starts
//!   down (alpha), so the sorry server answers until the first checks pass;
//!   a flag file read by the check script takes a server down and up again,
//!   and the notify programs log each change.
//!
//! Root only (network namespaces, XDP); under CI a skip is a failure.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

mod labkit;

use labkit::{director_section, exe, lab_lock, skip};
use xdpvs::control::status::Status;
use xdpvs_lab::demo::DirectorProcess;
use xdpvs_lab::{Lab, LabMode, Request};

/// How long a health state change may take (interval 1 s, rise/fall 2).
const CHANGE_WITHIN: Duration = Duration::from_secs(10);

/// Service `web` on the VIP, port 80: rs1 and rs2 (NAT, port 80) with
/// `health`, the sorry server rs3:8080 (NAT).
fn config(lab: &Lab, health: &str) -> String {
    let rs = lab.env_list("LAB_RS_IP4");
    let mut s = director_section(lab, "native", "");
    s.push_str(&format!(
        "[[service]]\nname = \"web\"\nproto = \"tcp\"\nvip = \"{}\"\nport = 80\nscheduler = \"rr\"\n\
         health = {health}\nsorry_server = {{ addr = \"{}\", port = 8080, forward = \"nat\" }}\n",
        lab.env("LAB_VIP4"),
        rs[2]
    ));
    for a in rs.iter().take(2) {
        s.push_str(&format!(
            "  [[service.real]]\n  addr = \"{a}\"\n  port = 80\n  forward = \"nat\"\n"
        ));
    }
    s
}

/// Fields drop in order: the director stops before the lab goes away.
struct Env {
    director: DirectorProcess,
    lab: Lab,
}

impl Env {
    fn start(health: &str) -> Env {
        let mut lab = Lab::up(LabMode::Nat).expect("lab");
        lab.start_http(&[80, 8080], 0).expect("http");
        // rs3 serves the sorry page on 8080 only: an answer from rs3 proves
        // the sorry server's port was used.
        lab.kill("http-rs3-80");
        let cfg = lab.dir().join("xdpvs.toml");
        std::fs::write(&cfg, config(&lab, health)).expect("cfg");
        let out = Command::new(exe())
            .args(["check", "--config"])
            .arg(&cfg)
            .output()
            .expect("check");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let director = DirectorProcess::start(
            &exe(),
            &lab.env("LAB_NS_DIR"),
            &cfg,
            &lab.dir().join("director.log"),
        )
        .expect("director");
        Env { director, lab }
    }

    fn cli(&self, args: &[&str]) -> Output {
        labkit::cli(&self.lab, args)
    }

    fn status(&self) -> Status {
        labkit::status(&self.lab)
    }

    /// The health column of the real server at `addr` ("sorry" for the
    /// sorry server).
    fn health(&self, addr: &str) -> String {
        self.status()
            .services
            .first()
            .and_then(|s| s.reals.iter().find(|r| r.addr.to_string() == addr))
            .map(|r| r.health.clone())
            .unwrap_or_default()
    }

    fn wait_health(&self, addr: &str, want: &str) {
        let t0 = Instant::now();
        loop {
            let got = self.health(addr);
            if got == want {
                return;
            }
            assert!(
                t0.elapsed() < CHANGE_WITHIN,
                "{addr} is {got}, not {want}\n{}",
                self.director.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Which server answers a new connection from `src`.
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

    /// Restart the http server of real server `i` (0-based) on port 80.
    fn restart_http(&mut self, i: usize) {
        let ns = self.lab.rs_namespaces()[i].clone();
        let name = format!("rs{}", i + 1);
        let root = self.lab.dir().join(&name).to_string_lossy().to_string();
        self.lab
            .spawn(
                &format!("http-{name}-80"),
                &ns,
                &[
                    "python3",
                    "-m",
                    "http.server",
                    "80",
                    "--bind",
                    "::",
                    "--directory",
                    &root,
                ],
            )
            .expect("http");
    }
}

#[test]
fn sorry_server_takes_new_connections_while_no_real_server_is_up() {
    if skip("sorry server") {
        return;
    }
    let _l = lab_lock();
    let health = "{ type = \"tcp\", port = 80, interval = 1, timeout = 1, rise = 2, fall = 2 }";
    let mut e = Env::start(health);
    let rs = e.lab.env_list("LAB_RS_IP4");
    // Real servers up: the sorry server takes nothing.
    for h in 1..=4 {
        let s = e.server(&e.lab.client4(0, h));
        assert!(s == "rs1" || s == "rs2", "{s}");
    }
    assert_eq!(e.health(&rs[2]), "sorry");
    let list = String::from_utf8_lossy(&e.cli(&["list"]).stdout).to_string();
    assert!(list.contains("(sorry server)"), "{list}");
    // Both real servers die: their checks take them down.
    e.lab.kill("http-rs1-80");
    e.lab.kill("http-rs2-80");
    e.wait_health(&rs[0], "down");
    e.wait_health(&rs[1], "down");
    for h in 1..=4 {
        assert_eq!(e.server(&e.lab.client4(1, h)), "rs3", "sorry server");
    }
    // A session held on the sorry server (its own client address: the
    // lab's http client opens and closes one connection per request, so
    // the held one is a slow request kept open).
    let held_src = e.lab.client4(2, 9);
    let mut held = Command::new("ip")
        .args(["netns", "exec", &e.lab.env("LAB_NS_CLIENT")])
        .args([
            "python3",
            "-c",
            "import socket,sys,time\n\
             s=socket.socket(); s.bind((sys.argv[1],0)); s.settimeout(10)\n\
             s.connect((sys.argv[2],80))\n\
             s.sendall(b'GET / HTTP/1.0\\r\\n')\n\
             time.sleep(4)\n\
             s.sendall(b'\\r\\n')\n\
             d=b''\n\
             while True:\n\
             \x20   b=s.recv(4096)\n\
             \x20   if not b: break\n\
             \x20   d+=b\n\
             print(d.split(b'\\r\\n\\r\\n',1)[-1].decode().strip())\n",
            &held_src,
            &e.lab.env("LAB_VIP4"),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("held client");
    std::thread::sleep(Duration::from_millis(500));
    // rs1 comes back: new clients go to it.
    e.restart_http(0);
    e.wait_health(&rs[0], "up");
    for h in 1..=4 {
        assert_eq!(e.server(&e.lab.client4(3, h)), "rs1", "back from sorry");
    }
    // The held session finishes on the sorry server.
    let t0 = Instant::now();
    let out = loop {
        if let Ok(Some(_)) = held.try_wait() {
            break held.wait_with_output().expect("held output");
        }
        if t0.elapsed() > Duration::from_secs(15) {
            let _ = held.kill();
            break held.wait_with_output().expect("held output");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let body = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(body, "rs3", "the sorry server's session was cut");
    // Counted like a real server.
    let st = e.status();
    let sorry = st.services[0]
        .reals
        .iter()
        .find(|r| r.addr.to_string() == rs[2])
        .expect("sorry server listed");
    assert!(sorry.stats.conns >= 5, "{:?}", sorry.stats);
    let log = e.director.stop();
    assert!(log.contains("health: real server UP"), "{log}");
}

#[test]
fn exec_checks_with_alpha_and_notify() {
    if skip("exec checks") {
        return;
    }
    let _l = lab_lock();
    let dir = std::env::temp_dir().join(format!("xdpvs-sorry-lab-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let flags = dir.display().to_string();
    let log = dir.join("notify.log");
    let note = |state: &str| {
        format!(
            "[\"/bin/sh\", \"-c\", \"echo {state} $XDPVS_REAL_ADDR $XDPVS_SERVICE >> {}\"]",
            log.display()
        )
    };
    // Down while a flag file names the server; alpha: start down.
    let health = format!(
        "{{ type = \"exec\", cmd = [\"/bin/sh\", \"-c\", \"test ! -e {flags}/down-{{addr}}\"], \
         interval = 1, timeout = 1, rise = 2, fall = 2, alpha = true, notify_up = {}, \
         notify_down = {} }}",
        note("up"),
        note("down")
    );
    let mut e = Env::start(&health);
    let rs = e.lab.env_list("LAB_RS_IP4");
    e.wait_health(&rs[0], "up");
    e.wait_health(&rs[1], "up");
    for h in 1..=4 {
        let s = e.server(&e.lab.client4(0, h));
        assert!(s == "rs1" || s == "rs2", "{s}");
    }
    // The script takes rs2 down, then brings it back.
    std::fs::write(dir.join(format!("down-{}", rs[1])), "").expect("flag");
    e.wait_health(&rs[1], "down");
    for h in 1..=4 {
        assert_eq!(e.server(&e.lab.client4(1, h)), "rs1");
    }
    std::fs::write(dir.join(format!("down-{}", rs[0])), "").expect("flag");
    e.wait_health(&rs[0], "down");
    assert_eq!(e.server(&e.lab.client4(2, 1)), "rs3", "sorry server");
    let _ = std::fs::remove_file(dir.join(format!("down-{}", rs[1])));
    e.wait_health(&rs[1], "up");
    assert_eq!(e.server(&e.lab.client4(3, 1)), "rs2");
    let text = e.director.stop();
    assert!(text.contains("alpha"), "{text}");
    // notify programs ran (reaped, fire and forget): bounded wait.
    let t0 = Instant::now();
    let want = [
        format!("up {} web", rs[0]),
        format!("up {} web", rs[1]),
        format!("down {} web", rs[1]),
        format!("down {} web", rs[0]),
    ];
    let mut got = String::new();
    while t0.elapsed() < Duration::from_secs(5) {
        got = std::fs::read_to_string(&log).unwrap_or_default();
        if want.iter().all(|w| got.contains(w.as_str())) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for w in &want {
        assert!(got.contains(w.as_str()), "{w} not in notify log:\n{got}");
    }
    let _ = std::fs::remove_dir_all(PathBuf::from(&dir));
}
