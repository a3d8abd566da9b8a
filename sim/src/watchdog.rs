//! Hang detection. A task that spins without ever waiting keeps turmoil's
//! tick from ending (simulated time only moves when every task waits), so a
//! busy loop in the code under test hangs the simulation rather than
//! failing it. The run loop reports each completed step here; a watchdog
//! thread notices when none completed for a while and reports the seed as
//! hung, with the trace up to that point, before the process exits. Sweeps
//! run seeds in worker processes so that a hung seed costs only its worker.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::obs::Recorder;

static ACTIVE: AtomicBool = AtomicBool::new(false);
static SEED: AtomicU64 = AtomicU64::new(0);
static SIM_MS: AtomicU64 = AtomicU64::new(0);
static LAST_STEP_MS: AtomicU64 = AtomicU64::new(0);
static RECORDER: Mutex<Option<Recorder>> = Mutex::new(None);

fn clock() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// A seed starts (one at a time per process when a watchdog runs).
pub fn begin(seed: u64, rec: &Recorder) {
    SEED.store(seed, Ordering::SeqCst);
    SIM_MS.store(0, Ordering::SeqCst);
    LAST_STEP_MS.store(clock(), Ordering::SeqCst);
    *RECORDER.lock().unwrap_or_else(|e| e.into_inner()) = Some(rec.clone());
    ACTIVE.store(true, Ordering::SeqCst);
}

/// A step completed at `sim_ms`.
pub fn step(sim_ms: u64) {
    SIM_MS.store(sim_ms, Ordering::Relaxed);
    LAST_STEP_MS.store(clock(), Ordering::Relaxed);
}

/// The seed is done.
pub fn end() {
    ACTIVE.store(false, Ordering::SeqCst);
    *RECORDER.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

/// What the watchdog saw of a hung seed.
#[derive(Debug, Clone)]
pub struct Hang {
    /// The seed.
    pub seed: u64,
    /// Simulated milliseconds reached.
    pub sim_ms: u64,
    /// The observations so far.
    pub recorder: Option<Recorder>,
    /// Wall-clock time without a step.
    pub stuck: Duration,
}

/// Starts a thread that calls `on_hang` (which should end the process) when
/// a seed completes no step for `limit`.
pub fn spawn(limit: Duration, on_hang: impl Fn(Hang) + Send + 'static) {
    clock();
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_millis(250));
            if !ACTIVE.load(Ordering::SeqCst) {
                continue;
            }
            let stuck = clock().saturating_sub(LAST_STEP_MS.load(Ordering::Relaxed));
            if stuck >= limit.as_millis() as u64 {
                let recorder = RECORDER.lock().unwrap_or_else(|e| e.into_inner()).clone();
                on_hang(Hang {
                    seed: SEED.load(Ordering::SeqCst),
                    sim_ms: SIM_MS.load(Ordering::SeqCst),
                    recorder,
                    stuck: Duration::from_millis(stuck),
                });
            }
        }
    });
}
