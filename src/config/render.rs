//! [`Config`] -> TOML text, every director key explicit, in the layout of
//! `config/example.toml`. The output parses back to an equal config.

use std::fmt::Write;

use crate::config::schema::{
    format_duration, format_mac, Announce, Config, HealthSpec, ServiceConfig, DEFAULT_QUORUM,
};
use crate::service::model::ServiceKey;
use crate::service::sched::SchedParams;

/// A TOML basic string with escapes.
fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn list(v: &[String]) -> String {
    let items: Vec<String> = v.iter().map(|s| q(s)).collect();
    format!("[{}]", items.join(", "))
}

fn health(h: &HealthSpec) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(k) = h.kind {
        parts.push(format!("type = {}", q(k.name())));
    }
    let nums = [
        ("port", h.port.map(u32::from)),
        ("interval", h.interval),
        ("timeout", h.timeout),
        ("rise", h.rise),
        ("fall", h.fall),
    ];
    for (k, v) in nums {
        if let Some(v) = v {
            parts.push(format!("{k} = {v}"));
        }
    }
    if let Some(p) = &h.path {
        parts.push(format!("path = {}", q(p)));
    }
    if let Some(s) = h.expect_status {
        parts.push(format!("expect_status = {s}"));
    }
    if let Some(s) = &h.send {
        parts.push(format!("send = {}", q(s)));
    }
    if let Some(s) = &h.expect {
        parts.push(format!("expect = {}", q(s)));
    }
    if let Some(c) = &h.cmd {
        parts.push(format!("cmd = {}", list(c)));
    }
    if let Some(f) = h.on_failure {
        parts.push(format!("on_failure = {}", q(f.name())));
    }
    if let Some(b) = h.alpha {
        parts.push(format!("alpha = {b}"));
    }
    if let Some(b) = h.omega {
        parts.push(format!("omega = {b}"));
    }
    if let Some(c) = &h.notify_up {
        parts.push(format!("notify_up = {}", list(c)));
    }
    if let Some(c) = &h.notify_down {
        parts.push(format!("notify_down = {}", list(c)));
    }
    if parts.is_empty() {
        "{}".to_string()
    } else {
        format!("{{ {} }}", parts.join(", "))
    }
}

/// Render `cfg` as TOML.
pub(crate) fn render(cfg: &Config) -> String {
    let mut o = String::new();
    // Writing to a String cannot fail.
    let _ = write_config(&mut o, cfg);
    o
}

fn write_config(o: &mut String, cfg: &Config) -> std::fmt::Result {
    let d = &cfg.director;
    writeln!(o, "# xdpvs config; see config/example.toml for every key.")?;
    writeln!(o)?;
    writeln!(o, "[director]")?;
    let ifs: Vec<String> = d.interfaces.iter().map(|s| q(s)).collect();
    writeln!(o, "interfaces = [{}]", ifs.join(", "))?;
    writeln!(o, "xdp_mode = {}", q(d.xdp_mode.name()))?;
    if let Some(cores) = &d.cores {
        let c: Vec<String> = cores.iter().map(|c| c.to_string()).collect();
        writeln!(o, "cores = [{}]", c.join(", "))?;
    }
    writeln!(
        o,
        "control_socket = {}",
        q(&d.control_socket.to_string_lossy())
    )?;
    let metrics = d
        .metrics
        .map_or_else(|| "off".to_string(), |m| m.to_string());
    writeln!(o, "metrics = {}", q(&metrics))?;
    writeln!(o, "conn_capacity = {}", d.conn_capacity)?;
    writeln!(o, "template_capacity = {}", d.template_capacity)?;
    writeln!(o, "hugepages = {}", d.hugepages)?;
    writeln!(o, "prefault = {}", d.prefault)?;
    writeln!(o, "busy_poll_us = {}", d.busy_poll_us)?;
    if let Some(a) = d.tunnel_src4 {
        writeln!(o, "tunnel_src4 = {}", q(&a.to_string()))?;
    }
    if let Some(a) = d.tunnel_src6 {
        writeln!(o, "tunnel_src6 = {}", q(&a.to_string()))?;
    }
    writeln!(o, "gue_port = {}", d.gue_port)?;
    if let Some(p) = &d.state_file {
        writeln!(o, "state_file = {}", q(&p.to_string_lossy()))?;
    }
    writeln!(o, "log_level = {}", q(&d.log_level))?;
    writeln!(o, "expire_nodest_conn = {}", d.expire_nodest_conn)?;
    writeln!(
        o,
        "expire_quiescent_template = {}",
        d.expire_quiescent_template
    )?;
    writeln!(o, "conn_reuse_mode = {}", d.conn_reuse_mode)?;
    writeln!(o, "sloppy_tcp = {}", d.sloppy_tcp)?;
    writeln!(o, "sloppy_udp = {}", d.sloppy_udp)?;
    writeln!(o, "fast_path = {}", d.fast_path)?;
    writeln!(o, "fast_path_capacity = {}", d.fast_path_capacity)?;
    writeln!(o, "shard_rt_priority = {}", d.shard_rt_priority)?;
    writeln!(o)?;
    let t = cfg.timeouts;
    writeln!(o, "[timeouts]")?;
    writeln!(o, "tcp = {}", t.tcp)?;
    writeln!(o, "tcp_fin = {}", t.tcp_fin)?;
    writeln!(o, "udp = {}", t.udp)?;
    if cfg.announce != Announce::default() {
        let a = &cfg.announce;
        writeln!(o)?;
        writeln!(o, "[announce]")?;
        if let Some(c) = &a.up {
            writeln!(o, "up = {}", list(c))?;
        }
        if let Some(c) = &a.down {
            writeln!(o, "down = {}", list(c))?;
        }
        writeln!(o, "timeout = {}", format_duration(a.timeout))?;
        writeln!(o, "retry = {}", format_duration(a.retry))?;
        writeln!(o, "withdraw_delay = {}", format_duration(a.withdraw_delay))?;
    }
    for g in &cfg.fwmarks {
        writeln!(o)?;
        writeln!(o, "[[fwmark]]")?;
        writeln!(o, "mark = {}", g.mark)?;
        writeln!(o, "rules = [")?;
        for r in &g.rules {
            writeln!(
                o,
                "  {{ vip = {}, proto = {}, ports = {} }},",
                q(&r.vip.to_string()),
                q(r.proto.name()),
                q(&r.ports.to_string())
            )?;
        }
        writeln!(o, "]")?;
    }
    for s in &cfg.services {
        write_service(o, s)?;
    }
    for n in &cfg.neighbors {
        writeln!(o)?;
        writeln!(o, "[[neighbor]]")?;
        writeln!(o, "addr = {}", q(&n.addr.to_string()))?;
        writeln!(o, "mac = {}", q(&format_mac(&n.mac)))?;
        writeln!(o, "interface = {}", q(&n.interface))?;
    }
    if let Some(s) = &cfg.sync {
        writeln!(o)?;
        writeln!(o, "[sync]")?;
        writeln!(o, "mode = {}", q(s.mode.name()))?;
        writeln!(o, "interface = {}", q(&s.interface))?;
        if let Some(g) = s.group {
            writeln!(o, "group = {}", q(&g.to_string()))?;
        }
        if !s.peers.is_empty() {
            let p: Vec<String> = s.peers.iter().map(|a| q(&a.to_string())).collect();
            writeln!(o, "peers = [{}]", p.join(", "))?;
        }
        writeln!(o, "port = {}", s.port)?;
        writeln!(o, "syncid = {}", s.syncid)?;
        if let Some(k) = &s.auth_key {
            writeln!(o, "auth_key = {}", q(&k.to_string_lossy()))?;
        }
        writeln!(o, "ttl = {}", s.ttl)?;
        writeln!(o, "sync_period = {}", s.sync_period)?;
        writeln!(o, "resync_wait = {}", s.resync_wait)?;
    }
    Ok(())
}

fn write_service(o: &mut String, s: &ServiceConfig) -> std::fmt::Result {
    writeln!(o)?;
    writeln!(o, "[[service]]")?;
    writeln!(o, "name = {}", q(&s.name))?;
    match s.key {
        ServiceKey::Fwmark(m) => writeln!(o, "fwmark = {m}")?,
        ServiceKey::Addr { proto, vip, port } => {
            writeln!(o, "proto = {}", q(proto.name()))?;
            writeln!(o, "vip = {}", q(&vip.to_string()))?;
            writeln!(o, "port = {port}")?;
        }
    }
    writeln!(o, "scheduler = {}", q(&s.scheduler))?;
    let mut flags = Vec::new();
    if s.sched_params.fallback {
        flags.push(q(&format!("{}-fallback", s.scheduler)));
    }
    if s.sched_params.hash_port {
        flags.push(q(&format!("{}-port", s.scheduler)));
    }
    if !flags.is_empty() {
        writeln!(o, "scheduler_flags = [{}]", flags.join(", "))?;
    }
    if s.sched_params.mh_table_size != SchedParams::default().mh_table_size {
        writeln!(o, "mh_table_size = {}", s.sched_params.mh_table_size)?;
    }
    if let Some(p) = &s.persistence {
        writeln!(
            o,
            "persistence = {{ timeout = {}, netmask = {}, prefix6 = {} }}",
            p.timeout,
            q(&p.netmask.to_string()),
            p.prefix6
        )?;
    }
    if let Some(b) = s.expire_nodest_conn {
        writeln!(o, "expire_nodest_conn = {b}")?;
    }
    if let Some(b) = s.expire_quiescent_template {
        writeln!(o, "expire_quiescent_template = {b}")?;
    }
    if let Some(h) = &s.health {
        writeln!(o, "health = {}", health(h))?;
    }
    if let Some(z) = &s.sorry_server {
        let port = z.port.map(|p| format!(", port = {p}")).unwrap_or_default();
        writeln!(
            o,
            "sorry_server = {{ addr = {}{port}, forward = {} }}",
            q(&z.addr.to_string()),
            q(z.forward.name())
        )?;
    }
    if s.quorum != DEFAULT_QUORUM {
        writeln!(o, "quorum = {}", s.quorum)?;
    }
    if s.hysteresis != 0 {
        writeln!(o, "hysteresis = {}", s.hysteresis)?;
    }
    if let Some(c) = &s.quorum_up {
        writeln!(o, "quorum_up = {}", list(c))?;
    }
    if let Some(c) = &s.quorum_down {
        writeln!(o, "quorum_down = {}", list(c))?;
    }
    for r in &s.reals {
        writeln!(o, "  [[service.real]]")?;
        writeln!(o, "  addr = {}", q(&r.addr.to_string()))?;
        if let Some(p) = r.port {
            writeln!(o, "  port = {p}")?;
        }
        writeln!(o, "  weight = {}", r.weight)?;
        writeln!(o, "  forward = {}", q(r.forward.name()))?;
        if r.u_threshold != 0 {
            writeln!(o, "  u_threshold = {}", r.u_threshold)?;
        }
        if r.l_threshold != 0 {
            writeln!(o, "  l_threshold = {}", r.l_threshold)?;
        }
        if let Some(h) = &r.health {
            writeln!(o, "  health = {}", health(h))?;
        }
    }
    Ok(())
}
