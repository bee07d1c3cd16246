//! The control plane's state without a kernel: runtime edits (ipvsadm
//! -A/-E/-D/-a/-e/-d), reloads from a file, health overrides, and that a
//! refused change publishes nothing.

use std::cell::RefCell;
use std::net::IpAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use arc_swap::ArcSwap;

use xdpvs::config::build_snapshot;
use xdpvs::config::schema::{Config, OnFailure};
use xdpvs::control::api::{RealSpec, Request};
use xdpvs::control::state::ControlState;
use xdpvs::control::status::new_reports;
use xdpvs::service::model::ServiceKey;
use xdpvs::service::snapshot::Snapshot;

const CFG: &str = r#"
[director]
interfaces = ["eth0"]

[[fwmark]]
mark = 1
rules = [ { vip = "198.18.0.100", proto = "tcp", ports = "80,443" } ]

[[service]]
name = "web"
fwmark = 1
scheduler = "rr"
persistence = { timeout = 300, netmask = "255.255.255.0" }
  [[service.real]]
  addr = "198.18.0.11"
  [[service.real]]
  addr = "198.18.0.12"
"#;

struct Fixture {
    state: ControlState,
    published: Rc<RefCell<u32>>,
    fail_maps: Rc<RefCell<bool>>,
    file: PathBuf,
}

fn fixture(name: &str) -> Fixture {
    let dir = std::env::temp_dir().join(format!("xdpvs-ctl-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("xdpvs.toml");
    std::fs::write(&file, CFG).unwrap();
    let cfg = Config::load(&file).unwrap();
    let snap = build_snapshot(&cfg, None).unwrap();
    let snaps = Arc::new(ArcSwap::from_pointee(snap));
    let published = Rc::new(RefCell::new(0));
    let fail_maps = Rc::new(RefCell::new(false));
    let (p, f) = (published.clone(), fail_maps.clone());
    let maps = Box::new(move |_: &Snapshot| {
        if *f.borrow() {
            return Err("XDP map update failed (test)".to_string());
        }
        *p.borrow_mut() += 1;
        Ok(())
    });
    let state = ControlState::new(file.clone(), cfg, snaps, maps, new_reports(1));
    Fixture {
        state,
        published,
        fail_maps,
        file,
    }
}

fn gen(f: &Fixture) -> u64 {
    f.state.snaps.load().generation
}

fn weights(f: &Fixture, svc: &str) -> Vec<(IpAddr, u32)> {
    let snap = f.state.snaps.load();
    snap.services
        .iter()
        .find(|s| s.name == svc)
        .map(|s| s.dests.iter().map(|d| (d.addr, d.weight)).collect())
        .unwrap_or_default()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn add_edit_delete_services_and_real_servers() {
    let mut f = fixture("edits");
    let g0 = gen(&f);
    let r = f.state.handle(Request::AddService {
        toml: "[[service]]\nname = \"dns\"\nproto = \"udp\"\nvip = \"198.18.0.100\"\nport = 53\nscheduler = \"sh\"\n".into(),
    });
    assert!(r.ok, "{}", r.error);
    assert_eq!(gen(&f), g0 + 1);
    assert_eq!(
        *f.published.borrow(),
        1,
        "XDP maps updated before the store"
    );

    let r = f.state.handle(Request::AddReal {
        service: "dns".into(),
        real: RealSpec {
            addr: "198.18.0.13".into(),
            weight: Some(3),
            ..RealSpec::default()
        },
    });
    assert!(r.ok, "{}", r.error);
    assert_eq!(weights(&f, "dns"), vec![(ip("198.18.0.13"), 3)]);

    // ipvsadm -e: quiesce one real server of the fwmark service.
    let r = f.state.handle(Request::EditReal {
        service: "web".into(),
        real: RealSpec {
            addr: "198.18.0.12".into(),
            weight: Some(0),
            ..RealSpec::default()
        },
    });
    assert!(r.ok, "{}", r.error);
    assert_eq!(
        weights(&f, "web"),
        vec![(ip("198.18.0.11"), 1), (ip("198.18.0.12"), 0)]
    );

    // ipvsadm -E: change the scheduler, keep the real servers.
    let r = f.state.handle(Request::EditService {
        toml: "[[service]]\nname = \"web\"\nfwmark = 1\nscheduler = \"wlc\"\n".into(),
    });
    assert!(r.ok, "{}", r.error);
    let snap = f.state.snaps.load();
    let web = snap.services.iter().find(|s| s.name == "web").unwrap();
    assert_eq!(web.scheduler.name(), "wlc");
    assert_eq!(web.dests.len(), 2);
    assert!(
        web.persistence.is_none(),
        "-E replaces the whole service definition"
    );
    drop(snap);

    let r = f.state.handle(Request::DelReal {
        service: "web".into(),
        addr: "198.18.0.11".into(),
        port: None,
    });
    assert!(r.ok, "{}", r.error);
    assert_eq!(weights(&f, "web"), vec![(ip("198.18.0.12"), 0)]);

    let r = f.state.handle(Request::DelService { name: "dns".into() });
    assert!(r.ok, "{}", r.error);
    assert!(weights(&f, "dns").is_empty());

    // `save` prints the running state; it parses back to the same config.
    let saved = f.state.handle(Request::Save).toml.unwrap();
    let back = Config::parse(&saved, "saved.toml").unwrap();
    assert_eq!(back.services, f.state.cfg.services);
    let _ = std::fs::remove_dir_all(f.file.parent().unwrap());
}

#[test]
fn refused_edits_publish_nothing() {
    let mut f = fixture("refused");
    let g0 = gen(&f);
    let cases = [
        (
            Request::AddService {
                toml: "[[service]]\nname = \"web\"\nproto = \"tcp\"\nvip = \"198.18.0.100\"\nport = 8080\n"
                    .into(),
            },
            "exists already",
        ),
        (
            Request::AddService {
                toml: "[[service]]\nname = \"x\"\nproto = \"tcp\"\nvip = \"198.18.0.100\"\nport = 8080\nscheduler = \"fastest\"\n".into(),
            },
            "unknown scheduler",
        ),
        (
            Request::AddService {
                toml: "[[service]]\nname = \"y\"\nfwmark = 4\n".into(),
            },
            "mark 4 is not declared",
        ),
        (
            Request::AddReal {
                service: "nope".into(),
                real: RealSpec {
                    addr: "198.18.0.13".into(),
                    ..RealSpec::default()
                },
            },
            "no service named",
        ),
        (
            Request::AddReal {
                service: "web".into(),
                real: RealSpec {
                    addr: "198.18.0.11".into(),
                    ..RealSpec::default()
                },
            },
            "exists",
        ),
        (
            Request::EditReal {
                service: "web".into(),
                real: RealSpec {
                    addr: "198.18.0.11".into(),
                    weight: Some(70_000),
                    ..RealSpec::default()
                },
            },
            "weight",
        ),
        (
            Request::DelReal {
                service: "web".into(),
                addr: "198.18.0.99".into(),
                port: None,
            },
            "no real server",
        ),
    ];
    for (req, why) in cases {
        let r = f.state.handle(req.clone());
        assert!(!r.ok, "{req:?} accepted");
        assert!(r.error.contains(why), "{req:?}: {}", r.error);
        assert_eq!(gen(&f), g0, "{req:?} published something");
    }
    assert_eq!(*f.published.borrow(), 0);
    // A failing XDP map update also keeps the old snapshot.
    *f.fail_maps.borrow_mut() = true;
    let r = f.state.handle(Request::DelService { name: "web".into() });
    assert!(!r.ok && r.error.contains("XDP map"), "{}", r.error);
    assert_eq!(gen(&f), g0);
    assert_eq!(f.state.cfg.services.len(), 1);
    let _ = std::fs::remove_dir_all(f.file.parent().unwrap());
}

#[test]
fn reload_from_the_file_applies_or_refuses_as_a_whole() {
    let mut f = fixture("reload");
    let g0 = gen(&f);
    std::fs::write(
        &f.file,
        CFG.replace("scheduler = \"rr\"", "scheduler = \"wrr\""),
    )
    .unwrap();
    assert!(f.state.reload("test").is_ok());
    assert_eq!(gen(&f), g0 + 1);
    assert_eq!(f.state.snaps.load().services[0].scheduler.name(), "wrr");
    assert_eq!(f.state.reloads, 1);

    std::fs::write(&f.file, CFG.replace("198.18.0.12", "198.18.0.300")).unwrap();
    let e = f.state.reload("test").unwrap_err();
    assert!(e.contains("xdpvs.toml:") && e.contains("addr"), "{e}");
    assert_eq!(gen(&f), g0 + 1, "a refused reload publishes nothing");
    assert_eq!(f.state.refused, 1);
    assert!(f.state.last_reload.starts_with("refused"));
    let _ = std::fs::remove_dir_all(f.file.parent().unwrap());
}

#[test]
fn health_overrides_quiesce_or_remove_without_touching_the_config() {
    let mut f = fixture("health");
    let rk = (ServiceKey::Fwmark(1), ip("198.18.0.11"), None);
    f.state.set_health(rk, Some(OnFailure::Quiesce)).unwrap();
    assert_eq!(
        weights(&f, "web"),
        vec![(ip("198.18.0.11"), 0), (ip("198.18.0.12"), 1)]
    );
    assert_eq!(
        f.state.cfg.services[0].reals[0].weight, 1,
        "configured weight kept"
    );
    let st = f.state.status();
    assert_eq!(st.services[0].reals[0].health, "down");
    assert_eq!(st.services[0].reals[0].config_weight, 1);

    f.state.set_health(rk, Some(OnFailure::Remove)).unwrap();
    assert_eq!(weights(&f, "web"), vec![(ip("198.18.0.12"), 1)]);
    // A reload while it is down keeps it down.
    assert!(f.state.reload("test").is_ok());
    assert_eq!(weights(&f, "web"), vec![(ip("198.18.0.12"), 1)]);

    f.state.set_health(rk, None).unwrap();
    assert_eq!(
        weights(&f, "web"),
        vec![(ip("198.18.0.11"), 1), (ip("198.18.0.12"), 1)]
    );
    let _ = std::fs::remove_dir_all(f.file.parent().unwrap());
}

/// A reload keeps the snapshot it replaced until no shard uses it, so a
/// shard that lets go of it never frees it (a large snapshot takes a
/// millisecond or more to free; that belongs to the control thread).
#[test]
fn the_replaced_snapshot_is_freed_by_the_control_thread() {
    let mut f = fixture("retired");
    // A shard still on the current snapshot.
    let shard_ref = f.state.snaps.load_full();
    let watch = Arc::downgrade(&shard_ref);
    f.state.reload("test").unwrap();
    assert!(f.state.holds_retired());
    // The shard moves on: the old snapshot must still be alive (freed later,
    // here, not in the shard).
    drop(shard_ref);
    assert!(
        watch.upgrade().is_some(),
        "the shard freed the old snapshot"
    );
    f.state.tick_rates(std::time::Instant::now());
    assert!(!f.state.holds_retired());
    assert!(watch.upgrade().is_none(), "not freed once unused");
}

/// A reload reports how long it took: in the status, the last-reload line
/// and the metrics; a refused one too.
#[test]
fn reload_duration_is_reported() {
    let mut f = fixture("duration");
    assert_eq!(f.state.status().last_reload_seconds, 0.0);
    f.state.reload("test").unwrap();
    let st = f.state.status();
    assert!(st.last_reload_seconds > 0.0 && st.last_reload_seconds < 10.0);
    assert!(
        st.last_reload.starts_with("ok (test) in "),
        "{}",
        st.last_reload
    );
    let m = xdpvs::control::metrics::render(&st);
    let line = m
        .lines()
        .find(|l| l.starts_with("xdpvs_last_reload_duration_seconds "))
        .unwrap_or_else(|| panic!("no duration gauge:\n{m}"));
    let v: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert_eq!(v, st.last_reload_seconds);
    std::fs::write(&f.file, "[director]\ninterfaces = []\n").unwrap();
    assert!(f.state.reload("test").is_err());
    let st = f.state.status();
    assert!(
        st.last_reload.starts_with("refused (test) after "),
        "{}",
        st.last_reload
    );
    assert!(st.last_reload_seconds > 0.0);
}

/// `alpha`: real servers checked for the first time start down (quiesced
/// here) until their first successful check, at start and on a reload;
/// a reload does not put servers already checked back down.
#[test]
fn alpha_holds_newly_checked_servers_down_until_their_first_success() {
    let mut f = fixture("alpha");
    let text = CFG.replace(
        "scheduler = \"rr\"",
        "scheduler = \"rr\"\nhealth = { type = \"tcp\", port = 80, alpha = true }",
    );
    let cfg = Config::parse(&text, "t.toml").unwrap();
    let start = ControlState::initial(&cfg);
    assert!(start.services[0].reals.iter().all(|r| r.weight == 0));
    std::fs::write(&f.file, &text).unwrap();
    f.state.reload("test").unwrap();
    assert_eq!(
        weights(&f, "web"),
        vec![(ip("198.18.0.11"), 0), (ip("198.18.0.12"), 0)]
    );
    let rk = (ServiceKey::Fwmark(1), ip("198.18.0.11"), None);
    f.state.set_health(rk, None).unwrap();
    assert_eq!(
        weights(&f, "web"),
        vec![(ip("198.18.0.11"), 1), (ip("198.18.0.12"), 0)]
    );
    f.state.reload("test").unwrap();
    assert_eq!(
        weights(&f, "web"),
        vec![(ip("198.18.0.11"), 1), (ip("198.18.0.12"), 0)]
    );
    assert_eq!(f.state.status().services[0].reals[1].health, "down");
    // The check removed: nothing holds the server down any more.
    std::fs::write(&f.file, CFG).unwrap();
    f.state.reload("test").unwrap();
    assert_eq!(
        weights(&f, "web"),
        vec![(ip("198.18.0.11"), 1), (ip("198.18.0.12"), 1)]
    );
    let _ = std::fs::remove_dir_all(f.file.parent().unwrap());
}
