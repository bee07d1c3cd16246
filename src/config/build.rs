//! Validated [`Config`] -> immutable [`Snapshot`]: classifier, services with
//! stable [`DestId`]s, persistence in prefix lengths and milliseconds, shard
//! prefixes, VIP and NAT lists. Linear in the config size (10,000 services
//! and 100,000 real servers build in milliseconds, schedulers aside).

use hashbrown::HashMap;
use std::net::IpAddr;

use crate::config::error::{invalid, ConfigError, Diagnostic};
use crate::config::schema::Config;
use crate::service::model::{DestId, FwdMethod, Proto, ServiceIdx, ServiceKey};
use crate::service::sched::{self, DestSpec, SchedError, SchedParams, Scheduler};
use crate::service::snapshot::{Classifier, Dest, Persistence, Service, Snapshot};

/// Builds one service's scheduler: [`sched::build`] in production, anything
/// with the same signature in tests and benchmarks.
pub type SchedFactory<'a> =
    dyn Fn(&str, &[DestSpec], &SchedParams) -> Result<Box<dyn Scheduler>, SchedError> + 'a;

/// Build the snapshot of `cfg`. Pass the snapshot currently published as
/// `prev`: real servers with the same (service key, address, port) keep
/// their [`DestId`]; new ones get ids never used before.
pub fn build_snapshot(cfg: &Config, prev: Option<&Snapshot>) -> Result<Snapshot, ConfigError> {
    build_snapshot_with(cfg, prev, &sched::build)
}

/// [`build_snapshot`] with a chosen scheduler factory.
pub fn build_snapshot_with(
    cfg: &Config,
    prev: Option<&Snapshot>,
    make_scheduler: &SchedFactory<'_>,
) -> Result<Snapshot, ConfigError> {
    cfg.validate()?;
    let origin = &cfg.origin;
    let d = &cfg.director;

    // Ids of the previous snapshot, by identity.
    let mut prev_ids: HashMap<(ServiceKey, IpAddr, Option<u16>), DestId> = HashMap::new();
    if let Some(p) = prev {
        prev_ids.reserve(p.dest_index.len());
        for s in &p.services {
            for dst in &s.dests {
                prev_ids.insert((s.key, dst.addr, dst.port), dst.id);
            }
        }
    }
    let mut next_id = prev.map_or(1, |p| p.next_dest_id).max(1);

    let marks_used: HashMap<u32, ()> = cfg
        .services
        .iter()
        .filter_map(|s| match s.key {
            ServiceKey::Fwmark(m) => Some((m, ())),
            ServiceKey::Addr { .. } => None,
        })
        .collect();

    let mut errors: Vec<Diagnostic> = Vec::new();
    let mut snap = Snapshot::empty();
    snap.generation = prev.map_or(1, |p| p.generation.wrapping_add(1));
    snap.timeouts = cfg.timeouts;
    snap.conn_reuse_mode = u8::try_from(d.conn_reuse_mode.min(3)).unwrap_or(1);
    snap.sloppy_tcp = d.sloppy_tcp;
    snap.fast_path = d.fast_path;
    snap.tunnel_src4 = d.tunnel_src4;
    snap.tunnel_src6 = d.tunnel_src6;
    snap.gue_port = d.gue_port;
    snap.services.reserve(cfg.services.len());
    let total_reals: usize = cfg.services.iter().map(|s| s.reals.len()).sum();
    snap.dest_index.reserve(total_reals);

    // Families of each used mark's VIPs, for the shard prefixes.
    let mut mark_family: HashMap<u32, (bool, bool)> = HashMap::new();
    let mut classifier = Classifier::default();
    let mut vips: Vec<(Proto, IpAddr, u16)> = Vec::new();
    for g in &cfg.fwmarks {
        if !marks_used.contains_key(&g.mark) {
            continue;
        }
        let fam = mark_family.entry(g.mark).or_default();
        for r in &g.rules {
            fam.0 |= r.vip.is_ipv4();
            fam.1 |= r.vip.is_ipv6();
            let list = classifier.fwmark_rules.entry((r.proto, r.vip)).or_default();
            for &(lo, hi) in &r.ports.0 {
                list.push((lo, hi, g.mark));
                vips.extend((lo..=hi).map(|p| (r.proto, r.vip, p)));
            }
        }
    }

    let mut nat_reals: Vec<IpAddr> = Vec::new();
    let (mut prefix4, mut prefix6) = (32u8, 128u8);
    for (i, svc) in cfg.services.iter().enumerate() {
        let idx = i as ServiceIdx;
        let persistence = svc.persistence.map(|p| Persistence {
            timeout_ms: u64::from(p.timeout) * 1000,
            prefix4: p.prefix4().unwrap_or(32),
            prefix6: p.prefix6.min(128),
        });
        let (has4, has6) = match svc.key {
            ServiceKey::Fwmark(m) => {
                classifier.by_mark.insert(m, idx);
                mark_family.get(&m).copied().unwrap_or_default()
            }
            ServiceKey::Addr { proto, vip, port } => {
                classifier.by_addr.insert((proto, vip, port), idx);
                vips.push((proto, vip, port));
                (vip.is_ipv4(), vip.is_ipv6())
            }
        };
        if let Some(p) = &persistence {
            if has4 {
                prefix4 = prefix4.min(p.prefix4);
            }
            if has6 {
                prefix6 = prefix6.min(p.prefix6);
            }
        }

        let mut dests = Vec::with_capacity(svc.reals.len());
        let mut specs = Vec::with_capacity(svc.reals.len());
        for (j, r) in svc.reals.iter().enumerate() {
            let port = r.effective_port(svc);
            let id = match prev_ids.get(&(svc.key, r.addr, port)) {
                Some(&id) => id,
                None => {
                    let id = DestId(next_id);
                    match next_id.checked_add(1) {
                        Some(n) => next_id = n,
                        None => {
                            errors.push(origin.diag(
                                &format!("service[{i}].real[{j}]"),
                                "real server id space exhausted; restart the director",
                            ));
                            return Err(invalid(errors));
                        }
                    }
                    id
                }
            };
            if r.forward == FwdMethod::Nat {
                nat_reals.push(r.addr);
            }
            if let Ok(Some(h)) = r.health_check(svc) {
                snap.health.insert(id, h);
            }
            snap.dest_index.insert(id, (idx, j as u32));
            specs.push(DestSpec {
                addr: r.addr,
                port: port.unwrap_or(0),
                weight: r.weight,
            });
            dests.push(Dest {
                id,
                addr: r.addr,
                port,
                weight: r.weight,
                fwd: r.forward,
                u_threshold: r.u_threshold,
                l_threshold: r.l_threshold,
            });
        }
        // The sorry server: after the real servers, outside the scheduler's
        // set, with an id kept across reloads as a real server's is.
        if let Some(z) = &svc.sorry_server {
            let port = z.effective_port(svc);
            let id = match prev_ids.get(&(svc.key, z.addr, port)) {
                Some(&id) => id,
                None => {
                    let id = DestId(next_id);
                    match next_id.checked_add(1) {
                        Some(n) => next_id = n,
                        None => {
                            errors.push(origin.diag(
                                &format!("service[{i}].sorry_server"),
                                "real server id space exhausted; restart the director",
                            ));
                            return Err(invalid(errors));
                        }
                    }
                    id
                }
            };
            if z.forward == FwdMethod::Nat {
                nat_reals.push(z.addr);
            }
            snap.dest_index.insert(id, (idx, dests.len() as u32));
            dests.push(Dest {
                id,
                addr: z.addr,
                port,
                weight: 1,
                fwd: z.forward,
                u_threshold: 0,
                l_threshold: 0,
            });
        }
        let scheduler = match make_scheduler(&svc.scheduler, &specs, &svc.sched_params) {
            Ok(s) => s,
            Err(e) => {
                let key = match e {
                    SchedError::BadTableSize(_) | SchedError::TableTooLarge { .. } => {
                        "mh_table_size"
                    }
                    SchedError::Unknown(_) => "scheduler",
                };
                errors.push(origin.diag(&format!("service[{i}].{key}"), e.to_string()));
                continue;
            }
        };
        snap.services.push(Service {
            name: svc.name.clone(),
            key: svc.key,
            scheduler,
            persistence,
            dests,
            sorry: svc.sorry_server.is_some(),
            expire_nodest_conn: svc.expire_nodest_conn.unwrap_or(d.expire_nodest_conn),
            expire_quiescent_template: svc
                .expire_quiescent_template
                .unwrap_or(d.expire_quiescent_template),
        });
    }
    if !errors.is_empty() {
        return Err(invalid(errors));
    }
    vips.sort_unstable();
    vips.dedup();
    nat_reals.sort_unstable();
    nat_reals.dedup();
    snap.classifier = classifier;
    snap.vips = vips;
    snap.nat_reals = nat_reals;
    snap.shard_prefix4 = prefix4;
    snap.shard_prefix6 = prefix6;
    snap.next_dest_id = next_id;
    snap.finish();
    Ok(snap)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::sched::{DestStat, SchedKey, SchedState};

    /// Scheduler stand-in: these tests are about the snapshot, not scheduling.
    #[derive(Debug)]
    struct First;
    impl Scheduler for First {
        fn name(&self) -> &'static str {
            "first"
        }
        fn schedule(&self, _: &mut SchedState, d: &[DestStat], _: &SchedKey) -> Option<usize> {
            d.iter().position(|s| s.available())
        }
    }

    fn first(_: &str, _: &[DestSpec], _: &SchedParams) -> Result<Box<dyn Scheduler>, SchedError> {
        Ok(Box::new(First))
    }

    const CFG: &str = r#"
[director]
interfaces = ["eth0"]
[[service]]
name = "a"
proto = "tcp"
vip = "198.18.0.1"
port = 80
  [[service.real]]
  addr = "198.18.1.1"
  forward = "nat"
"#;

    #[test]
    fn scheduler_errors_point_at_the_service() {
        let cfg = Config::parse(CFG, "t.toml").unwrap();
        let bad =
            |_: &str, _: &[DestSpec], _: &SchedParams| -> Result<Box<dyn Scheduler>, SchedError> {
                Err(SchedError::BadTableSize(7))
            };
        let e = build_snapshot_with(&cfg, None, &bad)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("t.toml:4:1: service[0].mh_table_size: mh table size 7"),
            "{e}"
        );
    }

    #[test]
    fn nat_reals_and_generation() {
        let cfg = Config::parse(CFG, "t.toml").unwrap();
        let s1 = build_snapshot_with(&cfg, None, &first).unwrap();
        assert_eq!(s1.generation, 1);
        assert_eq!(s1.nat_reals, vec!["198.18.1.1".parse::<IpAddr>().unwrap()]);
        assert_eq!(s1.services[0].dests[0].port, Some(80));
        let s2 = build_snapshot_with(&cfg, Some(&s1), &first).unwrap();
        assert_eq!(s2.generation, 2);
    }
}
