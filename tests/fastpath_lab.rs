//! The fast path (issue #15) in the lab: the real binary with its default
//! config (`fast_path = true`, native XDP), real clients and servers.
//!
//! DR and NAT each:
//! - a 20 MB download arrives byte for byte with more than 95 % of the
//!   director's packets forwarded by the XDP program (its counters);
//! - the listing equals the traffic: the packets the client sent (and, for
//!   NAT, received) during the download are the real server's listed
//!   packets, fast path included;
//! - the download's FIN closes the connection in the engine: listed in a
//!   closing state (DR: FIN_WAIT with the `tcp_fin` timeout; NAT, both FINs
//!   seen: TIME_WAIT), not ESTABLISHED;
//! - a UDP flow active only on the fast path outlives its timeout (one
//!   connection for the whole exchange), while an idle one expires;
//! - a reload that removes a real server with `expire_nodest_conn` stops
//!   its offloaded flow (the held session's next packet is dropped, counted).
//!
//! Root only (network namespaces, XDP).

use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use xdpvs::control::status::{ConnRow, Status};

mod labkit;

use labkit::{director_section, exe, lab_lock, reals, sha256_file, start_echo, Held};
use xdpvs_lab::demo::DirectorProcess;
use xdpvs_lab::{Lab, LabMode, Request};

const BIG: usize = 20 << 20;
const TCP_FIN: u64 = 4;
const UDP_TIMEOUT: u64 = 3;

fn config(lab: &Lab, fwd: &str, with_rs3: bool) -> String {
    let nat = |p: u16| (fwd == "nat").then_some(p);
    let mut all = reals(lab, "LAB_RS_IP4", fwd, &[1, 1, 1], nat(80));
    let mut echo = reals(lab, "LAB_RS_IP4", fwd, &[1, 1, 1], nat(7000));
    if !with_rs3 {
        // The third real server's entries are the last ones.
        for s in [&mut all, &mut echo] {
            let cut = s.rfind("  [[service.real]]").unwrap_or(s.len());
            s.truncate(cut);
        }
    }
    format!(
        r#"{director}
[timeouts]
tcp = 900
tcp_fin = {TCP_FIN}
udp = {UDP_TIMEOUT}

[[service]]
name = "web"
proto = "tcp"
vip = "{vip}"
port = 80
scheduler = "rr"
{all}
[[service]]
name = "echo"
proto = "tcp"
vip = "{vip}"
port = 7000
scheduler = "rr"
expire_nodest_conn = true
{echo}
[[service]]
name = "dns"
proto = "udp"
vip = "{vip}"
port = 5353
scheduler = "rr"
{dns}"#,
        director = director_section(lab, "native", ""),
        vip = lab.env("LAB_VIP4"),
        dns = reals(lab, "LAB_RS_IP4", fwd, &[1, 1, 1], nat(5353)),
    )
}

/// Fields drop in order: the director stops before the lab goes away.
struct Env {
    director: DirectorProcess,
    lab: Lab,
    cfg: PathBuf,
}

impl Env {
    fn start(mode: LabMode) -> Env {
        let mut lab = Lab::up(mode).expect("lab up");
        lab.start_http(&[80], BIG).expect("http");
        lab.start_udp_echo(5353).expect("udp echo");
        start_echo(&mut lab);
        let fwd = match mode {
            LabMode::Dr => "dr",
            LabMode::Nat => "nat",
        };
        let cfg = lab.dir().join("director.toml");
        std::fs::write(&cfg, config(&lab, fwd, true)).expect("config");
        let director = DirectorProcess::start(
            &exe(),
            &lab.env("LAB_NS_DIR"),
            &cfg,
            &lab.dir().join("director.log"),
        )
        .expect("director");
        Env { director, lab, cfg }
    }

    fn cli(&self, args: &[&str]) -> Output {
        labkit::cli(&self.lab, args)
    }

    fn status(&self) -> Status {
        labkit::status(&self.lab)
    }

    fn conns(&self) -> Vec<ConnRow> {
        serde_json::from_slice(&self.cli(&["list", "--connections", "--json"]).stdout)
            .expect("conns")
    }

    fn log(&self) -> String {
        self.director.log_text()
    }

    /// Packets counters of the client namespace's eth0: (tx, rx).
    fn client_packets(&self) -> (u64, u64) {
        let read = |what: &str| -> u64 {
            let out = self
                .lab
                .exec(
                    &self.lab.env("LAB_NS_CLIENT"),
                    &[
                        "cat",
                        &format!("/sys/class/net/eth0/statistics/{what}_packets"),
                    ],
                )
                .expect("client counters");
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .unwrap_or(0)
        };
        (read("tx"), read("rx"))
    }

    /// The service's listed (inpkts, outpkts), summed over its real servers.
    fn listed(&self, service: &str) -> (u64, u64) {
        let st = self.status();
        let s = st
            .services
            .iter()
            .find(|s| s.name == service)
            .expect("service listed");
        (s.stats.inpkts, s.stats.outpkts)
    }

    fn shard_sum(&self, f: impl Fn(&xdpvs::control::status::ShardStatus) -> u64) -> u64 {
        self.status().shards.iter().map(f).sum()
    }
}

/// A UDP flow with a fixed source port: `n` datagrams `every` apart, each
/// answered; returns the replies' servers.
fn udp_flow(e: &Env, src: &str, sport: u16, n: u32, every: Duration) -> Vec<String> {
    let py = format!(
        r#"
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("{src}", {sport})); s.settimeout(2.0)
for i in range({n}):
    s.sendto(b"ping", ("{vip}", 5353))
    try:
        print(s.recvfrom(100)[0].decode(), flush=True)
    except Exception as ex:
        print("error", ex, flush=True)
    time.sleep({secs})
"#,
        vip = e.lab.env("LAB_VIP4"),
        secs = every.as_secs_f64()
    );
    let out = e
        .lab
        .exec(&e.lab.env("LAB_NS_CLIENT"), &["python3", "-c", &py])
        .expect("udp flow");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .collect()
}

fn run(mode: LabMode) {
    let e = Env::start(mode);
    let vip = e.lab.env("LAB_VIP4");
    let name = format!("{mode:?}");
    let st = e.status();
    let fp = st.fast_path.clone().expect("fast path status");
    assert!(fp.on, "{name}: fast path on by default");

    // --- a 20 MB download, mostly on the fast path, listed exactly.
    let zero = e.cli(&["zero"]);
    assert!(zero.status.success());
    let before = e.status().fast_path.unwrap_or_default();
    let (tx0, rx0) = e.client_packets();
    let src = e.lab.client4(1, 1);
    let mut q = Request::http(&src, &vip, 80);
    q.path = Some("/big".into());
    q.timeout = 60.0;
    let res = e.lab.requests(std::slice::from_ref(&q)).expect("download");
    let got = &res[0];
    assert!(
        got.ok,
        "{name}: download failed: {}\n{}",
        got.error,
        e.log()
    );
    assert_eq!(got.len, BIG as u64, "{name}: length");
    let want = sha256_file(&e.lab.dir().join("rs1/big"));
    assert_eq!(got.sha256, want, "{name}: content differs");
    let (tx1, rx1) = e.client_packets();
    // The shards publish their counters every 250 ms.
    std::thread::sleep(Duration::from_millis(700));
    let after = e.status().fast_path.unwrap_or_default();
    let fast = after.packets - before.packets;
    let slow = after.slow_packets - before.slow_packets;
    let share = fast as f64 / (fast + slow).max(1) as f64;
    assert!(
        share > 0.95,
        "{name}: {fast} packets on the fast path, {slow} on the AF_XDP path ({:.1} %)\n{}",
        share * 100.0,
        e.log()
    );
    let (inpkts, outpkts) = e.listed("web");
    let sent = tx1 - tx0;
    // ARP/ND of the client may add a packet or two.
    assert!(
        inpkts <= sent && sent - inpkts <= 4,
        "{name}: listed {inpkts} packets in, the client sent {sent}"
    );
    if mode == LabMode::Nat {
        let recv = rx1 - rx0;
        assert!(
            outpkts <= recv && recv - outpkts <= 4,
            "{name}: listed {outpkts} packets out, the client received {recv}"
        );
    }

    // --- the FIN crossed the engine: closing state, tcp_fin timeout, entry gone.
    let rows = e.conns();
    let row = rows
        .iter()
        .find(|r| {
            !r.template && r.source.starts_with(&format!("{src}:")) && r.virt.ends_with(":80")
        })
        .unwrap_or_else(|| panic!("{name}: the download's connection is listed: {rows:?}"));
    assert!(
        ["FIN_WAIT", "TIME_WAIT", "CLOSE", "CLOSE_WAIT", "LAST_ACK"].contains(&row.state.as_str()),
        "{name}: state after the FIN: {row:?}"
    );
    // FIN_WAIT times out after tcp_fin; TIME_WAIT (both FINs seen: NAT)
    // after IPVS's fixed 2 minutes; ESTABLISHED would be 900 s.
    let limit = if row.state == "FIN_WAIT" {
        TCP_FIN * 1000 + 100
    } else {
        120_100
    };
    assert!(
        row.expires_ms <= limit,
        "{name}: {} expires in {} ms",
        row.state,
        row.expires_ms
    );
    if mode == LabMode::Dr {
        assert_eq!(
            row.state, "FIN_WAIT",
            "{name}: the client's FIN (DR sees one direction)"
        );
    }

    // --- UDP: active only on the fast path, it outlives its timeout; idle expires.
    let new0 = e.shard_sum(|s| s.new_conns);
    let fast0 = e.status().fast_path.unwrap_or_default().packets;
    let replies = udp_flow(
        &e,
        &e.lab.client4(2, 2),
        41_000,
        8,
        Duration::from_millis(700),
    );
    assert_eq!(replies.len(), 8, "{name}: {replies:?}");
    assert!(
        replies.iter().all(|r| r.starts_with("rs")),
        "{name}: {replies:?}"
    );
    assert!(
        replies.windows(2).all(|w| w[0] == w[1]),
        "{name}: one flow, one server: {replies:?}"
    );
    std::thread::sleep(Duration::from_millis(400));
    let fast1 = e.status().fast_path.unwrap_or_default().packets;
    let new1 = e.shard_sum(|s| s.new_conns);
    assert!(
        fast1 - fast0 >= 6,
        "{name}: the flow's later datagrams took the fast path ({} fast)",
        fast1 - fast0
    );
    // 8 x 0.7 s = 5.6 s > the 3 s UDP timeout: without the fast path's
    // last-seen time the engine would have expired it and counted a new one.
    assert_eq!(new1 - new0, 1, "{name}: one connection for the whole flow");
    // Idle now: gone after its timeout.
    std::thread::sleep(Duration::from_secs(UDP_TIMEOUT + 1));
    let left: Vec<ConnRow> = e
        .conns()
        .into_iter()
        .filter(|r| r.source.ends_with(":41000"))
        .collect();
    assert!(
        left.is_empty(),
        "{name}: idle UDP flow still listed: {left:?}"
    );
    let fp = e.status().fast_path.unwrap_or_default();
    assert_eq!(fp.install_failed, 0, "{name}");

    // --- a reload removes a real server (expire_nodest_conn): its offloaded
    // flow stops.
    let mut held = None;
    for h in 1..=12u8 {
        let mut s = Held::open(&e.lab, &e.lab.client4(3, h), 2);
        let a = s.ask(1);
        if a.starts_with("rs3") {
            held = Some(s);
            break;
        }
    }
    let mut held = held.unwrap_or_else(|| panic!("{name}: no session landed on rs3"));
    for i in 2..6 {
        assert!(held.ask(i).starts_with("rs3"), "{name}: held session");
    }
    let fast_before = e.status().fast_path.unwrap_or_default().packets;
    held.ask(6);
    std::thread::sleep(Duration::from_millis(400));
    assert!(
        e.status().fast_path.unwrap_or_default().packets > fast_before,
        "{name}: the held session is on the fast path"
    );
    let dest_removed0 = e.shard_sum(|s| dropped(s, "dest_removed"));
    let fwd = if mode == LabMode::Dr { "dr" } else { "nat" };
    std::fs::write(&e.cfg, config(&e.lab, fwd, false)).expect("config");
    let r = e.cli(&["reload"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let a = held.ask(7);
    assert!(
        !a.starts_with("rs3"),
        "{name}: the removed server's offloaded session still forwarded: {a:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(400));
    let dest_removed1 = e.shard_sum(|s| dropped(s, "dest_removed"));
    assert!(
        dest_removed1 > dest_removed0,
        "{name}: the session's packets reach the engine, which drops them ({dest_removed0} -> {dest_removed1})"
    );
}

fn dropped(s: &xdpvs::control::status::ShardStatus, reason: &str) -> u64 {
    s.dropped
        .iter()
        .filter(|(r, _)| r == reason)
        .map(|(_, n)| *n)
        .sum()
}

#[test]
fn dr_fast_path() {
    if labkit::skip("dr_fast_path") {
        return;
    }
    let _l = lab_lock();
    run(LabMode::Dr);
}

#[test]
fn nat_fast_path() {
    if labkit::skip("nat_fast_path") {
        return;
    }
    let _l = lab_lock();
    run(LabMode::Nat);
}
