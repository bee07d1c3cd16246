//! An idle runtime blocks in poll(): ~0 CPU, timers still tick, and the stop
//! flag alone ends the threads within a second (root only). In its own test
//! binary so that no other test's shard threads are counted.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use xdpvs::dataplane::testutil::{ifindex, in_netns, thread_cpu_ticks, Triangle};
use xdpvs::dataplane::{PacketHandler, RuntimeConfig, ShardRuntime};
use xdpvs::service::model::Millis;
use xdpvs::shard::verdict::{Frame, Verdict};

struct Idle {
    ticks: Arc<AtomicU64>,
}

impl PacketHandler for Idle {
    fn begin_batch(&mut self, _now: Millis) {}
    fn process(&mut self, _now: Millis, _in: u32, _f: &mut Frame<'_>) -> Verdict {
        Verdict::Pass
    }
    fn tick(&mut self, _now: Millis) {
        self.ticks.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn idle_shards_use_no_cpu_tick_and_stop_on_the_flag() {
    if xdpvs::dataplane::testutil::skip_without_root("dataplane namespace tests need root") {
        return;
    }
    let t = Triangle::create("xdpvs-ti").expect("topology");
    let res = in_netns(&t.dir, || -> Result<(u64, u64, Duration, u64), String> {
        let d0 = ifindex("d0").ok_or("no d0")?;
        let d1 = ifindex("d1").ok_or("no d1")?;
        let rt =
            ShardRuntime::new(RuntimeConfig::per_queue(&[d0, d1], 2)).map_err(|e| e.to_string())?;
        let ticks = Arc::new(AtomicU64::new(0));
        let tk = ticks.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let running = rt
            .start(move |_, _| Idle { ticks: tk.clone() }, stop.clone())
            .map_err(|e| e.to_string())?;
        std::thread::sleep(Duration::from_millis(300));
        let cpu0 = thread_cpu_ticks("xdpvs-shard");
        let tick0 = ticks.load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_secs(1));
        let cpu = thread_cpu_ticks("xdpvs-shard") - cpu0;
        let engine_ticks = ticks.load(Ordering::Relaxed) - tick0;
        // Only the flag: no eventfd wake-up.
        stop.store(true, Ordering::SeqCst);
        let t0 = Instant::now();
        let stats = running.join().map_err(|e| e.to_string())?;
        let stop_time = t0.elapsed();
        let sleeps = stats.iter().map(|s| s.sleeps).sum();
        Ok((cpu, engine_ticks, stop_time, sleeps))
    })
    .expect("netns")
    .expect("run");
    let (cpu, engine_ticks, stop_time, sleeps) = res;
    eprintln!("cpu ticks {cpu} engine ticks {engine_ticks} stop {stop_time:?} sleeps {sleeps}");
    // Clock ticks are 10 ms: two shards used less than 10% of one core.
    assert!(cpu < 10, "idle shards used {cpu} ticks in 1 s");
    // Both shards tick about every 10 ms even with no traffic.
    assert!(
        engine_ticks >= 40,
        "engine ticked {engine_ticks} times in 1 s"
    );
    assert!(sleeps > 0);
    assert!(
        stop_time < Duration::from_secs(1),
        "stop took {stop_time:?}"
    );
}
