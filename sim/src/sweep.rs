//! Many seeds over all cores: one turmoil simulation per seed, one seed at
//! a time per thread.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::SeedReport;
use crate::oracles::{Coverage, REQUIRED_COVERAGE};

/// The outcome of a sweep.
#[derive(Debug, Default)]
pub struct Sweep {
    /// Every seed's report (without traces), in seed order.
    pub reports: Vec<SeedReport>,
    /// Wall-clock time.
    pub wall: Duration,
    /// Coverage summed over all seeds.
    pub coverage: Coverage,
}

impl Sweep {
    /// Seeds that failed.
    pub fn failed(&self) -> impl Iterator<Item = &SeedReport> {
        self.reports.iter().filter(|r| !r.passed())
    }

    /// Simulated milliseconds covered.
    pub fn sim_ms(&self) -> u64 {
        self.reports.iter().map(|r| r.sim_ms).sum()
    }

    /// Required edges never reached.
    pub fn missing_coverage(&self) -> Vec<&'static str> {
        REQUIRED_COVERAGE
            .iter()
            .copied()
            .filter(|k| self.coverage.get(k) == 0)
            .collect()
    }
}

/// Runs `seeds` over `threads` cores, each seed in a fresh worker process
/// (`exe --worker`): a seed that hangs (see [`crate::watchdog`]) or crashes
/// costs only its process, and no state of an earlier seed can leak into a
/// later one — which matters: tokio numbers tasks with a process-wide
/// counter and shards a runtime's task list by that number, so the order in
/// which a crashed server's tasks are dropped (and its sockets send FIN)
/// would otherwise depend on how many tasks the process had created before,
/// and a seed could behave differently in a sweep than in its replay.
/// `each` sees every report as it comes.
pub fn sweep_processes(
    exe: &std::path::Path,
    seeds: std::ops::Range<u64>,
    threads: usize,
    each: &(dyn Fn(&SeedReport) + Sync),
) -> Sweep {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};

    let started = Instant::now();
    let next = AtomicU64::new(seeds.start);
    let reports = Mutex::new(Vec::new());
    let done = |report: SeedReport| {
        each(&report);
        reports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(report);
    };
    let run_one = |seed: u64| -> SeedReport {
        let child = Command::new(exe)
            .arg("--worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn();
        let Ok(mut child) = child else {
            return SeedReport::crashed(seed, "could not start a worker");
        };
        let mut line = String::new();
        {
            let mut stdin = child.stdin.take().expect("piped");
            let _ = writeln!(stdin, "{seed}");
        }
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let answered = stdout.read_line(&mut line).is_ok_and(|n| n > 0);
        let report = answered.then(|| SeedReport::from_json(&line)).flatten();
        match report {
            Some(r) => {
                let _ = child.wait();
                r
            }
            None => {
                let _ = child.kill();
                let status = child.wait();
                SeedReport::crashed(seed, &format!("{status:?}"))
            }
        }
    };
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= seeds.end {
                        return;
                    }
                    done(run_one(seed));
                }
            });
        }
    });
    let mut reports = reports.into_inner().unwrap_or_else(|e| e.into_inner());
    reports.sort_by_key(|r| r.seed);
    let mut coverage = Coverage::default();
    for r in &reports {
        coverage.merge(&r.coverage);
    }
    Sweep {
        reports,
        wall: started.elapsed(),
        coverage,
    }
}
