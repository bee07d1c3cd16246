//! Prometheus text exposition of a [`Status`].

use std::fmt::Write as _;

use crate::control::status::{sock, Status, LATENCY_BUCKETS_NS};

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

type Field<T, V> = (&'static str, &'static str, fn(&T) -> V);

pub fn render(st: &Status) -> String {
    let mut o = String::new();
    let family = |o: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(o, "# HELP {name} {help}");
        let _ = writeln!(o, "# TYPE {name} {kind}");
    };
    let counters: [Field<crate::control::status::Counters, u64>; 5] = [
        ("conns", "connections scheduled", |c| c.conns),
        ("in_packets", "packets client -> real server", |c| c.inpkts),
        ("out_packets", "packets real server -> client (NAT)", |c| {
            c.outpkts
        }),
        ("in_bytes", "bytes client -> real server", |c| c.inbytes),
        ("out_bytes", "bytes real server -> client (NAT)", |c| {
            c.outbytes
        }),
    ];
    for (name, help, get) in counters {
        let n = format!("xdpvs_service_{name}_total");
        family(&mut o, &n, "counter", help);
        for s in &st.services {
            let _ = writeln!(o, "{n}{{service=\"{}\"}} {}", esc(&s.name), get(&s.stats));
        }
        let n = format!("xdpvs_real_{name}_total");
        family(&mut o, &n, "counter", help);
        for s in &st.services {
            for r in &s.reals {
                let _ = writeln!(
                    o,
                    "{n}{{service=\"{}\",real=\"{}\"}} {}",
                    esc(&s.name),
                    esc(&sock(r.addr, r.port.unwrap_or(0))),
                    get(&r.stats)
                );
            }
        }
    }
    let rates: [Field<crate::control::status::Rates, f64>; 5] = [
        ("cps", "", |r| r.cps),
        ("in_pps", "", |r| r.inpps),
        ("out_pps", "", |r| r.outpps),
        ("in_bps", "", |r| r.inbps),
        ("out_bps", "", |r| r.outbps),
    ];
    for (name, _, get) in rates {
        let n = format!("xdpvs_real_rate_{name}");
        family(
            &mut o,
            &n,
            "gauge",
            "smoothed rate per second, as ipvsadm --rate",
        );
        for s in &st.services {
            for r in &s.reals {
                let _ = writeln!(
                    o,
                    "{n}{{service=\"{}\",real=\"{}\"}} {:.3}",
                    esc(&s.name),
                    esc(&sock(r.addr, r.port.unwrap_or(0))),
                    get(&r.rates)
                );
            }
        }
    }
    let gauges: [Field<crate::control::status::RealStatus, u64>; 6] = [
        ("active_conns", "established connections", |r| r.active),
        ("inactive_conns", "other live connections", |r| r.inactive),
        ("persistent_templates", "persistence templates", |r| {
            r.persist
        }),
        ("weight", "weight in effect", |r| u64::from(r.weight)),
        ("up", "1 unless a health check holds it down", |r| {
            u64::from(r.health != "down")
        }),
        (
            "sorry_server",
            "1 for the service's sorry server (it takes new connections only while no real server can)",
            |r| u64::from(r.health == "sorry"),
        ),
    ];
    for (name, help, get) in gauges {
        let n = format!("xdpvs_real_{name}");
        family(&mut o, &n, "gauge", help);
        for s in &st.services {
            for r in &s.reals {
                let _ = writeln!(
                    o,
                    "{n}{{service=\"{}\",real=\"{}\"}} {}",
                    esc(&s.name),
                    esc(&sock(r.addr, r.port.unwrap_or(0))),
                    get(r)
                );
            }
        }
    }
    let shard: [Field<crate::control::status::ShardStatus, u64>; 11] = [
        ("rx_total", "frames received", |s| s.rx),
        ("tx_total", "frames sent", |s| s.tx),
        (
            "handoff_out_total",
            "frames handed to the owner shard",
            |s| s.handoff_out,
        ),
        (
            "handoff_in_total",
            "frames received from other shards",
            |s| s.handoff_in,
        ),
        (
            "not_ours_total",
            "frames redirected to AF_XDP that were not ours after all",
            |s| s.passed_unhandled,
        ),
        ("connections", "connection table entries", |s| s.conns),
        ("templates", "persistence templates", |s| s.templates),
        ("conns_new_total", "connections created", |s| s.new_conns),
        (
            "conns_expired_total",
            "connections expired by their timer",
            |s| s.expired_conns,
        ),
        (
            "conns_evicted_total",
            "connections evicted because the table was full",
            |s| s.evicted_conns,
        ),
        (
            "templates_expired_total",
            "persistence templates expired",
            |s| s.expired_templates,
        ),
    ];
    for (name, help, get) in shard {
        let n = format!("xdpvs_shard_{name}");
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        family(&mut o, &n, kind, help);
        for (i, s) in st.shards.iter().enumerate() {
            let _ = writeln!(o, "{n}{{shard=\"{i}\"}} {}", get(s));
        }
    }
    family(
        &mut o,
        "xdpvs_shard_dropped_total",
        "counter",
        "frames dropped, by reason",
    );
    for (i, s) in st.shards.iter().enumerate() {
        for (reason, n) in &s.dropped {
            let _ = writeln!(
                o,
                "xdpvs_shard_dropped_total{{shard=\"{i}\",reason=\"{}\"}} {n}",
                esc(reason)
            );
        }
    }
    family(
        &mut o,
        "xdpvs_shard_io_loss_total",
        "counter",
        "frames lost in the I/O layer (TX ring full, no UMEM frame, kernel XSK drops), by reason",
    );
    for (i, s) in st.shards.iter().enumerate() {
        for (reason, n) in &s.io_loss {
            let _ = writeln!(
                o,
                "xdpvs_shard_io_loss_total{{shard=\"{i}\",reason=\"{}\"}} {n}",
                esc(reason)
            );
        }
    }
    family(
        &mut o,
        "xdpvs_shard_malformed_total",
        "counter",
        "malformed frames, by what was wrong",
    );
    for (i, s) in st.shards.iter().enumerate() {
        for (reason, n) in &s.malformed {
            let _ = writeln!(
                o,
                "xdpvs_shard_malformed_total{{shard=\"{i}\",reason=\"{}\"}} {n}",
                esc(reason)
            );
        }
    }
    family(
        &mut o,
        "xdpvs_datapath_engine_seconds",
        "histogram",
        "engine time per packet (sampled 1 in 64), all shards",
    );
    let mut cum = 0u64;
    for (i, n) in st.latency_buckets.iter().enumerate() {
        cum += n;
        let le = LATENCY_BUCKETS_NS
            .get(i)
            .map(|ns| format!("{:e}", *ns as f64 / 1e9))
            .unwrap_or_else(|| "+Inf".to_string());
        let _ = writeln!(
            o,
            "xdpvs_datapath_engine_seconds_bucket{{le=\"{le}\"}} {cum}"
        );
    }
    let _ = writeln!(
        o,
        "xdpvs_datapath_engine_seconds_sum {:e}",
        st.latency_sum_ns as f64 / 1e9
    );
    let _ = writeln!(o, "xdpvs_datapath_engine_seconds_count {cum}");
    family(
        &mut o,
        "xdpvs_reloads_total",
        "counter",
        "config reloads applied",
    );
    let _ = writeln!(o, "xdpvs_reloads_total {}", st.reloads);
    family(
        &mut o,
        "xdpvs_reloads_refused_total",
        "counter",
        "config reloads refused",
    );
    let _ = writeln!(o, "xdpvs_reloads_refused_total {}", st.reloads_refused);
    family(
        &mut o,
        "xdpvs_config_generation",
        "gauge",
        "generation of the running snapshot",
    );
    let _ = writeln!(o, "xdpvs_config_generation {}", st.generation);
    family(
        &mut o,
        "xdpvs_last_reload_ok",
        "gauge",
        "1 if the last reload was applied, 0 if refused",
    );
    let _ = writeln!(
        o,
        "xdpvs_last_reload_ok {}",
        u8::from(!st.last_reload.starts_with("refused"))
    );
    family(
        &mut o,
        "xdpvs_last_reload_duration_seconds",
        "gauge",
        "wall-clock time of the last reload (read, validate, build, publish)",
    );
    let _ = writeln!(
        o,
        "xdpvs_last_reload_duration_seconds {:e}",
        st.last_reload_seconds
    );
    announce(&mut o, &st.announce);
    if let Some(s) = &st.sync {
        sync(&mut o, s);
    }
    if let Some(f) = &st.fast_path {
        fast_path(&mut o, f);
    }
    o
}

/// Flow offload (`[director] fast_path`).
fn fast_path(o: &mut String, f: &crate::control::status::FastPathStatus) {
    for (name, kind, help, v) in [
        (
            "xdpvs_fast_path_enabled",
            "gauge",
            "1 when established flows are forwarded by the XDP program",
            u64::from(f.on),
        ),
        (
            "xdpvs_fast_path_flows",
            "gauge",
            "flows in the XDP flow cache",
            f.flows,
        ),
        (
            "xdpvs_fast_path_capacity",
            "gauge",
            "most flows the XDP flow cache holds",
            f.capacity,
        ),
        (
            "xdpvs_fast_path_packets_total",
            "counter",
            "packets forwarded by the XDP program",
            f.packets,
        ),
        (
            "xdpvs_fast_path_bytes_total",
            "counter",
            "IP bytes forwarded by the XDP program",
            f.bytes,
        ),
        (
            "xdpvs_slow_path_packets_total",
            "counter",
            "packets that took the AF_XDP path",
            f.slow_packets,
        ),
        (
            "xdpvs_fast_path_installs_total",
            "counter",
            "flow cache entries installed",
            f.installs,
        ),
        (
            "xdpvs_fast_path_removes_total",
            "counter",
            "flow cache entries removed",
            f.removes,
        ),
        (
            "xdpvs_fast_path_install_failed_total",
            "counter",
            "flows the full cache refused (they stay on the AF_XDP path)",
            f.install_failed,
        ),
    ] {
        let _ = writeln!(o, "# HELP {name} {help}");
        let _ = writeln!(o, "# TYPE {name} {kind}");
        let _ = writeln!(o, "{name} {v}");
    }
}

/// Connection sync counters (`[sync]`).
fn sync(o: &mut String, s: &crate::control::sync::SyncStatus) {
    let family = |o: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(o, "# HELP {name} {help}");
        let _ = writeln!(o, "# TYPE {name} {kind}");
    };
    for (name, help, v) in [
        (
            "xdpvs_sync_sent_datagrams_total",
            "sync datagrams sent",
            s.sent_datagrams,
        ),
        (
            "xdpvs_sync_sent_entries_total",
            "sync entries sent",
            s.sent_entries,
        ),
        (
            "xdpvs_sync_send_errors_total",
            "sync datagrams that could not be sent",
            s.send_errors,
        ),
        (
            "xdpvs_sync_received_datagrams_total",
            "sync datagrams received",
            s.received_datagrams,
        ),
        (
            "xdpvs_sync_received_entries_total",
            "sync entries received",
            s.received_entries,
        ),
        (
            "xdpvs_sync_applied_connections_total",
            "received connections applied",
            s.applied_conns,
        ),
        (
            "xdpvs_sync_applied_templates_total",
            "received templates applied",
            s.applied_templates,
        ),
        (
            "xdpvs_sync_queue_dropped_total",
            "entries a shard could not queue",
            s.queue_dropped,
        ),
        (
            "xdpvs_sync_resync_requests_sent_total",
            "full resyncs asked for",
            s.resync_requests_sent,
        ),
        (
            "xdpvs_sync_resync_requests_served_total",
            "full resyncs served to peers",
            s.resync_requests_served,
        ),
        (
            "xdpvs_sync_resyncs_completed_total",
            "full resyncs received completely",
            s.resyncs_completed,
        ),
    ] {
        family(o, name, "counter", help);
        let _ = writeln!(o, "{name} {v}");
    }
    family(
        o,
        "xdpvs_sync_ignored_total",
        "counter",
        "received datagrams or entries refused or not applied, by reason",
    );
    for (r, n) in &s.ignored {
        let _ = writeln!(o, "xdpvs_sync_ignored_total{{reason=\"{r}\"}} {n}");
    }
    family(
        o,
        "xdpvs_sync_resync_state",
        "gauge",
        "1 for the resync state (waiting, synced, alone, off)",
    );
    for st in ["waiting", "synced", "alone", "off"] {
        let _ = writeln!(
            o,
            "xdpvs_sync_resync_state{{state=\"{st}\"}} {}",
            u8::from(s.resync == st)
        );
    }
}

/// The announce state and the services' quorum.
fn announce(o: &mut String, a: &crate::control::announce::AnnounceStatus) {
    let family = |o: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(o, "# HELP {name} {help}");
        let _ = writeln!(o, "# TYPE {name} {kind}");
    };
    family(
        o,
        "xdpvs_announce_state",
        "gauge",
        "1 for the current announce state (announced, withdrawn, pending, idle)",
    );
    for s in ["announced", "withdrawn", "pending", "idle"] {
        let _ = writeln!(
            o,
            "xdpvs_announce_state{{state=\"{s}\"}} {}",
            u8::from(a.state == s)
        );
    }
    family(
        o,
        "xdpvs_announce_ready",
        "gauge",
        "1 when every readiness condition holds",
    );
    let _ = writeln!(
        o,
        "xdpvs_announce_ready {}",
        u8::from(a.waiting_for.is_empty())
    );
    family(
        o,
        "xdpvs_announce_commands_total",
        "counter",
        "announce up/down commands run",
    );
    let _ = writeln!(o, "xdpvs_announce_commands_total {}", a.runs);
    family(
        o,
        "xdpvs_announce_command_failures_total",
        "counter",
        "announce up/down commands that failed (exit status, spawn error, timeout)",
    );
    let _ = writeln!(o, "xdpvs_announce_command_failures_total {}", a.failures);
    family(
        o,
        "xdpvs_service_quorum_up",
        "gauge",
        "1 while the service has quorum (live weight, with hysteresis)",
    );
    for q in &a.services {
        let _ = writeln!(
            o,
            "xdpvs_service_quorum_up{{service=\"{}\"}} {}",
            esc(&q.name),
            u8::from(q.has_quorum)
        );
    }
    family(
        o,
        "xdpvs_service_live_weight",
        "gauge",
        "sum of the weights of the service's real servers not held down by a check",
    );
    for q in &a.services {
        let _ = writeln!(
            o,
            "xdpvs_service_live_weight{{service=\"{}\"}} {}",
            esc(&q.name),
            q.live_weight
        );
    }
    for (name, help, get) in [
        (
            "xdpvs_service_quorum_lost_total",
            "times the service lost quorum",
            (|q| q.losses) as fn(&crate::control::announce::QuorumStatus) -> u64,
        ),
        (
            "xdpvs_service_quorum_commands_total",
            "quorum_up/quorum_down commands run",
            |q| q.runs,
        ),
        (
            "xdpvs_service_quorum_command_failures_total",
            "quorum_up/quorum_down commands that failed",
            |q| q.failures,
        ),
    ] {
        family(o, name, "counter", help);
        for q in &a.services {
            let _ = writeln!(o, "{name}{{service=\"{}\"}} {}", esc(&q.name), get(q));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::announce::{AnnounceStatus, QuorumStatus};

    #[test]
    fn announce_and_quorum_metrics() {
        let st = Status {
            announce: AnnounceStatus {
                configured: true,
                state: "pending".into(),
                waiting_for: vec!["sync".into()],
                runs: 3,
                failures: 2,
                last_error: "exit status 1".into(),
                services: vec![QuorumStatus {
                    name: "web".into(),
                    quorum: 2,
                    hysteresis: 0,
                    live_weight: 1,
                    has_quorum: false,
                    losses: 1,
                    state: "withdrawn".into(),
                    runs: 2,
                    failures: 0,
                }],
            },
            ..Status::default()
        };
        let m = render(&st);
        for line in [
            "xdpvs_announce_state{state=\"pending\"} 1",
            "xdpvs_announce_state{state=\"announced\"} 0",
            "xdpvs_announce_ready 0",
            "xdpvs_announce_commands_total 3",
            "xdpvs_announce_command_failures_total 2",
            "xdpvs_service_quorum_up{service=\"web\"} 0",
            "xdpvs_service_live_weight{service=\"web\"} 1",
            "xdpvs_service_quorum_lost_total{service=\"web\"} 1",
            "xdpvs_service_quorum_commands_total{service=\"web\"} 2",
        ] {
            assert!(m.lines().any(|l| l == line), "{line}\n{m}");
        }
        let text = st.announce.render();
        assert!(
            text.contains("announce pending (waiting for sync): 3 command(s) run, 2 failed")
                && text.contains("quorum web: DOWN (live weight 1, quorum 2"),
            "{text}"
        );
    }
}
