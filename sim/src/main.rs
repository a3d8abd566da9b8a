//! `cargo run -p sim --release -- --seeds 0..10000` runs a sweep over all
//! cores; `--seed N --trace` replays one seed with its full trace.

use std::io::{BufRead, Write};
use std::ops::Range;
use std::process::ExitCode;

use clap::Parser;
use sim::oracles::REQUIRED_COVERAGE;
use sim::sweep::sweep_processes;
use sim::{HANG_LIMIT, SeedReport, hang_report, replay_command, run_seed, watchdog};

/// Chat Flow's deterministic simulation: a sweep over many seeds, or one
/// seed replayed with its report.
#[derive(Debug, Parser)]
#[command(name = "sim", args_override_self = true)]
struct Args {
    /// Run seeds A (inclusive) to B (exclusive) over all cores.
    #[arg(long, value_name = "A..B", default_value = "0..100", value_parser = parse_seeds)]
    seeds: Range<u64>,
    /// Run one seed and print its report.
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// With --seed: print the full trace.
    #[arg(long)]
    trace: bool,
    /// Worker threads [default: available cores].
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// One line per seed.
    #[arg(long)]
    verbose: bool,
    /// Fail if an edge was never reached [default: on for 1000+ seeds].
    #[arg(long, overrides_with = "no_require_coverage")]
    require_coverage: bool,
    /// Do not fail if an edge was never reached.
    #[arg(long, overrides_with = "require_coverage")]
    no_require_coverage: bool,
    /// Run the one seed read from stdin (what a sweep's worker processes
    /// run).
    #[arg(long, hide = true)]
    worker: bool,
}

impl Args {
    /// `--require-coverage` or `--no-require-coverage`, whichever came last.
    fn require_coverage(&self) -> Option<bool> {
        if self.require_coverage {
            Some(true)
        } else if self.no_require_coverage {
            Some(false)
        } else {
            None
        }
    }
}

/// `A..B`: seeds A (inclusive) to B (exclusive).
fn parse_seeds(v: &str) -> Result<Range<u64>, String> {
    let (lo, hi) = v.split_once("..").ok_or("--seeds takes A..B")?;
    let lo: u64 = lo.parse().map_err(|_| "bad --seeds start")?;
    let hi: u64 = hi.parse().map_err(|_| "bad --seeds end")?;
    Ok(lo..hi)
}

fn print_failure(r: &SeedReport) {
    println!(
        "FAIL seed {} ({} violations, hash {:016x})",
        r.seed, r.violation_count, r.hash
    );
    for v in &r.violations {
        println!("  {v}");
    }
    if r.violation_count > r.violations.len() as u64 {
        println!(
            "  … and {} more",
            r.violation_count - r.violations.len() as u64
        );
    }
    println!("  replay: {}", replay_command(r.seed));
}

/// `--worker`: runs the one seed read from stdin and prints its report as
/// one JSON line. One seed per process: no state of an earlier seed can
/// leak into it (see `sim::sweep::sweep_processes`).
fn worker() -> ExitCode {
    watchdog::spawn(HANG_LIMIT, |hang| {
        let r = hang_report(&hang, false);
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", r.to_json());
        let _ = out.flush();
        std::process::exit(3);
    });
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() {
        return ExitCode::FAILURE;
    }
    let Ok(seed) = line.trim().parse::<u64>() else {
        return ExitCode::FAILURE;
    };
    let r = run_seed(seed, false);
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{}", r.to_json()).is_err() || out.flush().is_err() {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.worker {
        return worker();
    }
    if let Some(seed) = args.seed {
        let trace = args.trace;
        watchdog::spawn(HANG_LIMIT, move |hang| {
            let r = hang_report(&hang, trace);
            if let Some(t) = &r.trace {
                print!("{t}");
            }
            println!("{}", r.summary);
            print_failure(&r);
            std::process::exit(3);
        });
        let r = run_seed(seed, args.trace);
        println!("{}", r.summary);
        if let Some(trace) = &r.trace {
            print!("{trace}");
        }
        println!(
            "seed {seed}: {} records, {} ms simulated in {:.2?}, hash {:016x}",
            r.records, r.sim_ms, r.wall, r.hash
        );
        println!("coverage: {:?}", r.coverage.0);
        if r.passed() {
            println!("PASS seed {seed}");
            return ExitCode::SUCCESS;
        }
        print_failure(&r);
        return ExitCode::FAILURE;
    }

    let verbose = args.verbose;
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let exe = std::env::current_exe().expect("the path of this program");
    let s = sweep_processes(&exe, args.seeds.clone(), threads, &|r| {
        if !r.passed() {
            print_failure(r);
        } else if verbose {
            println!(
                "ok   seed {} hash {:016x} {} ms sim in {:.2?}",
                r.seed, r.hash, r.sim_ms, r.wall
            );
        }
    });
    let n = s.reports.len();
    let failed: Vec<u64> = s.failed().map(|r| r.seed).collect();
    let secs = s.wall.as_secs_f64();
    println!();
    println!(
        "seeds run {n}, passed {}, failed {}",
        n - failed.len(),
        failed.len()
    );
    println!(
        "wall {secs:.1} s on {} threads: {:.2} seeds/s; simulated {:.1} s ({:.0}x real time)",
        threads,
        n as f64 / secs.max(1e-9),
        s.sim_ms() as f64 / 1000.0,
        s.sim_ms() as f64 / 1000.0 / secs.max(1e-9)
    );
    let mut slow: Vec<&SeedReport> = s.reports.iter().collect();
    slow.sort_by_key(|r| std::cmp::Reverse(r.wall));
    let slowest: Vec<String> = slow
        .iter()
        .take(3)
        .map(|r| format!("{} ({:.2?})", r.seed, r.wall))
        .collect();
    println!("slowest seeds: {}", slowest.join(", "));
    println!("coverage:");
    for (k, v) in &s.coverage.0 {
        let mark = if REQUIRED_COVERAGE.contains(&k.as_str()) {
            "*"
        } else {
            " "
        };
        println!("  {mark} {k:<22} {v}");
    }
    let missing = s.missing_coverage();
    let require = args.require_coverage().unwrap_or(n >= 1000);
    let mut ok = failed.is_empty();
    if !missing.is_empty() {
        println!("required coverage never reached: {missing:?}");
        if require {
            ok = false;
        }
    }
    if !failed.is_empty() {
        println!("failed seeds: {:?}", &failed[..failed.len().min(50)]);
        println!("replay one: {}", replay_command(failed[0]));
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
