//! FTP through the director, the classic LVS way: the control port (21)
//! and the servers' passive data ports in one firewall-mark group, and a
//! persistent service over it, so that a session's data connections reach
//! the real server that holds its control connection. No FTP helper: the
//! real servers announce the VIP in their passive replies (as vsftpd's
//! `pasv_address` does), which DR needs anyway and NAT needs without a
//! helper. Real clients (python's ftplib, PASV and EPSV) against a small
//! real FTP server (below) in each real server's namespace, through the
//! real `xdpvs run`, DR and NAT. Then the same sessions through a
//! non-persistent service: data connections land on other servers and
//! fail, which is what the persistence above prevents.
//!
//! Root only (network namespaces, XDP); each test says why it skips
//! otherwise.

mod labkit;

use std::path::Path;
use std::process::{Command, Output};

use labkit::{director_section, exe, lab_lock, reals, skip};
use xdpvs_lab::demo::DirectorProcess;
use xdpvs_lab::{Lab, LabMode};

/// Passive data ports of the servers (and of the fwmark group).
const PASV_LO: u16 = 10000;
const PASV_HI: u16 = 10009;

/// A small FTP server (passive mode only): `argv` = name, announced
/// address. Each control connection gets a thread; PASV/EPSV open a
/// listener on a free port of the passive range for that session only;
/// `RETR x` sends "<name> x\n" over it. A data connection is accepted only
/// on the port its own session opened, as a real server's would be.
const FTP_SERVER_PY: &str = r#"
import socket, sys, threading
name, announce = sys.argv[1], sys.argv[2]
LO, HI = int(sys.argv[3]), int(sys.argv[4])
lock = threading.Lock()
used = set()

def pasv_listener():
    with lock:
        for p in range(LO, HI + 1):
            if p in used:
                continue
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("0.0.0.0", p))
            except OSError:
                s.close()
                continue
            s.listen(1)
            s.settimeout(5)
            used.add(p)
            return s, p
    return None, 0

def session(c):
    f = c.makefile("rwb", buffering=0)
    def say(line):
        f.write((line + "\r\n").encode())
    say("220 " + name)
    data = None
    port = 0
    try:
        for raw in f:
            words = raw.decode(errors="replace").strip().split(" ", 1)
            cmd = words[0].upper()
            arg = words[1] if len(words) > 1 else ""
            if cmd == "USER":
                say("331 ok")
            elif cmd == "PASS":
                say("230 " + name)
            elif cmd in ("TYPE", "MODE", "STRU"):
                say("200 ok")
            elif cmd in ("PASV", "EPSV"):
                if data is not None:
                    data.close()
                    with lock:
                        used.discard(port)
                data, port = pasv_listener()
                if data is None:
                    say("425 no passive port")
                elif cmd == "PASV":
                    h = announce.replace(".", ",")
                    say("227 Entering Passive Mode (%s,%d,%d)" % (h, port >> 8, port & 255))
                else:
                    say("229 Entering Extended Passive Mode (|||%d|)" % port)
            elif cmd == "RETR":
                if data is None:
                    say("425 use PASV first")
                    continue
                try:
                    d, _ = data.accept()
                except OSError:
                    say("425 no data connection")
                    continue
                finally:
                    data.close()
                    data = None
                    with lock:
                        used.discard(port)
                say("150 sending")
                d.sendall(("%s %s\n" % (name, arg)).encode())
                d.close()
                say("226 done")
            elif cmd == "QUIT":
                say("221 bye")
                break
            else:
                say("502 not implemented")
    except OSError:
        pass
    finally:
        if data is not None:
            data.close()
            with lock:
                used.discard(port)
        c.close()

srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", 21))
srv.listen(64)
while True:
    c, _ = srv.accept()
    c.settimeout(10)
    threading.Thread(target=session, args=(c,), daemon=True).start()
"#;

/// FTP sessions with python's ftplib: argv = VIP, then client source
/// addresses. Per client, one session: log in (the banner names the
/// server), fetch a file over PASV and one over EPSV, quit. Prints
/// "<client> <banner server> <pasv server> <epsv server>" per session,
/// "FAIL" for a step that failed.
const FTP_CLIENT_PY: &str = r#"
import ftplib, socket, sys
vip = sys.argv[1]
for src in sys.argv[2:]:
    out = [src]
    try:
        f = ftplib.FTP(timeout=5, source_address=(src, 0))
        out.append(f.connect(vip, 21).split(" ", 1)[1].strip())
        f.login("anonymous", "x")
        for epsv in (False, True):
            buf = []
            try:
                if epsv:
                    # ftplib uses EPSV only for IPv6: ask for it by hand.
                    port = int(f.sendcmd("EPSV").split("|||")[1].rstrip("|)"))
                    s = socket.create_connection((vip, port), timeout=5, source_address=(src, 0))
                    f.voidcmd("TYPE I")
                    f.putcmd("RETR epsv")
                    resp = f.getresp()
                    if not resp.startswith("150"):
                        raise ftplib.error_reply(resp)
                    buf.append(s.recv(1024))
                    s.close()
                    f.voidresp()
                else:
                    f.retrbinary("RETR pasv", buf.append)
                out.append(b"".join(buf).decode().split(" ")[0] or "FAIL")
            except Exception:
                out.append("FAIL")
        try:
            f.quit()
        except Exception:
            f.close()
    except Exception:
        out += ["FAIL"] * (4 - len(out))
    print(" ".join(out), flush=True)
"#;

fn config(lab: &Lab, fwd: &str, persistent: bool) -> String {
    let vip4 = lab.env("LAB_VIP4");
    // No port: each packet keeps its own (21, or its passive port).
    let reals = reals(lab, "LAB_RS_IP4", fwd, &[], None);
    let persistence = if persistent {
        "persistence = { timeout = 60 }"
    } else {
        ""
    };
    format!(
        r#"{director}
[[fwmark]]
mark = 21
rules = [ {{ vip = "{vip4}", proto = "tcp", ports = "21,{PASV_LO}-{PASV_HI}" }} ]

[[service]]
name = "ftp"
fwmark = 21
scheduler = "rr"
{persistence}
{reals}"#,
        director = director_section(lab, "native", ""),
    )
}

fn run_sessions(lab: &Lab, clients: &[String]) -> Vec<Vec<String>> {
    let ns = lab.env("LAB_NS_CLIENT");
    let vip = lab.env("LAB_VIP4");
    let mut args = vec!["netns", "exec", &ns, "python3", "-c", FTP_CLIENT_PY, &vip];
    args.extend(clients.iter().map(String::as_str));
    let out = Command::new("ip").args(&args).output().expect("ftp client");
    assert!(
        out.status.success(),
        "ftp client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

fn cli(lab: &Lab, args: &[&str]) -> Output {
    let ns = lab.env("LAB_NS_DIR");
    Command::new("ip")
        .args(["netns", "exec", &ns])
        .arg(exe())
        .args(args)
        .arg("-s")
        .arg(lab.dir().join("xdpvs.sock"))
        .output()
        .expect("xdpvs cli")
}

fn write_checked(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write config");
    let check = Command::new(exe())
        .args(["check", "--config"])
        .arg(path)
        .output()
        .expect("xdpvs check");
    assert!(
        check.status.success(),
        "config refused: {}",
        String::from_utf8_lossy(&check.stderr)
    );
}

fn ftp_through_the_director(mode: LabMode, fwd: &str) {
    let mut lab = Lab::up(mode).expect("lab up");
    let vip = lab.env("LAB_VIP4");
    for (i, ns) in lab.rs_namespaces().iter().enumerate() {
        let name = format!("rs{}", i + 1);
        let (lo, hi) = (PASV_LO.to_string(), PASV_HI.to_string());
        let args = ["python3", "-c", FTP_SERVER_PY, &name, &vip, &lo, &hi];
        lab.spawn(&format!("ftp-{name}"), ns, &args)
            .expect("ftp server");
    }
    for ns in lab.rs_namespaces() {
        let mut up = false;
        for _ in 0..100 {
            let out = lab.exec(&ns, &["ss", "-Htln", "sport = :21"]).unwrap();
            if !out.stdout.is_empty() {
                up = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(up, "ftp server in {ns} did not start");
    }
    let cfg = lab.dir().join("director.toml");
    write_checked(&cfg, &config(&lab, fwd, true));
    let ns = lab.env("LAB_NS_DIR");
    let mut director = DirectorProcess::start(&exe(), &ns, &cfg, &lab.dir().join("director.log"))
        .expect("director start");

    // Twelve clients in four /24s, one session each.
    let clients: Vec<String> = (0..12u8).map(|i| lab.client4(i % 4, 1 + i / 4)).collect();
    let sessions = run_sessions(&lab, &clients);
    eprintln!("{fwd}, persistent: {sessions:?}");
    let log = || director.log_text();
    assert_eq!(sessions.len(), clients.len(), "{sessions:?}\n{}", log());
    let mut servers = std::collections::BTreeSet::new();
    for s in &sessions {
        assert_eq!(s.len(), 4, "{s:?}");
        let server = &s[1];
        assert!(server.starts_with("rs"), "no banner: {s:?}\n{}", log());
        assert_eq!(
            (&s[2], &s[3]),
            (server, server),
            "{fwd}: a data connection (PASV, EPSV) did not reach the server of its control \
             connection: {s:?}\n{}",
            log()
        );
        servers.insert(server.clone());
    }
    assert_eq!(servers.len(), 3, "rr spread the clients: {sessions:?}");

    // Without persistence, the same sessions break: each new connection,
    // data connections included, is scheduled on its own.
    write_checked(&cfg, &config(&lab, fwd, false));
    let out = cli(&lab, &["reload"]);
    assert!(
        out.status.success(),
        "reload: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sessions = run_sessions(&lab, &clients);
    eprintln!("{fwd}, not persistent: {sessions:?}");
    let broken = sessions
        .iter()
        .filter(|s| s.get(2) != s.get(1) || s.get(3) != s.get(1))
        .count();
    assert!(
        broken >= clients.len() / 2,
        "{fwd}: without persistence most sessions should break: {sessions:?}"
    );
    let log = director.stop();
    assert!(log.contains("reload"), "{log}");
}

#[test]
fn ftp_control_and_passive_data_under_one_persistent_mark_dr() {
    if skip("ftp_control_and_passive_data_under_one_persistent_mark_dr") {
        return;
    }
    let _l = lab_lock();
    ftp_through_the_director(LabMode::Dr, "dr");
}

#[test]
fn ftp_control_and_passive_data_under_one_persistent_mark_nat() {
    if skip("ftp_control_and_passive_data_under_one_persistent_mark_nat") {
        return;
    }
    let _l = lab_lock();
    ftp_through_the_director(LabMode::Nat, "nat");
}
