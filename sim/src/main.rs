//! `cargo run -p sim --release -- --seeds 0..10000` runs a sweep over all
//! cores; `--seed N --trace` replays one seed with its full trace.

use std::process::ExitCode;

use sim::oracles::REQUIRED_COVERAGE;
use std::io::{BufRead, Write};

use sim::sweep::sweep_processes;
use sim::{HANG_LIMIT, SeedReport, hang_report, replay_command, run_seed, watchdog};

const USAGE: &str = "\
usage: sim [--seeds A..B | --seed N] [--trace] [--threads N] [--verbose] [--require-coverage | --no-require-coverage]

  --seeds A..B   run seeds A (inclusive) to B (exclusive) over all cores (default 0..100)
  --seed N       run one seed and print its report
  --trace        with --seed: print the full trace
  --threads N    worker threads (default: available cores)
  --verbose      one line per seed
  --require-coverage / --no-require-coverage
                 fail if an edge was never reached (default: on for 1000+ seeds)";

struct Args {
    seeds: std::ops::Range<u64>,
    single: Option<u64>,
    trace: bool,
    threads: usize,
    verbose: bool,
    worker: bool,
    require_coverage: Option<bool>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        seeds: 0..100,
        single: None,
        trace: false,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        verbose: false,
        worker: false,
        require_coverage: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--seeds" => {
                let v = value()?;
                let (lo, hi) = v.split_once("..").ok_or("--seeds takes A..B")?;
                let lo: u64 = lo.parse().map_err(|_| "bad --seeds start")?;
                let hi: u64 = hi.parse().map_err(|_| "bad --seeds end")?;
                a.seeds = lo..hi;
            }
            "--seed" => a.single = Some(value()?.parse().map_err(|_| "bad --seed")?),
            "--trace" => a.trace = true,
            "--threads" => a.threads = value()?.parse().map_err(|_| "bad --threads")?,
            "--verbose" => a.verbose = true,
            "--worker" => a.worker = true,
            "--require-coverage" => a.require_coverage = Some(true),
            "--no-require-coverage" => a.require_coverage = Some(false),
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    Ok(a)
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
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if args.worker {
        return worker();
    }
    if let Some(seed) = args.single {
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
    let exe = std::env::current_exe().expect("the path of this program");
    let s = sweep_processes(&exe, args.seeds.clone(), args.threads, &|r| {
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
        args.threads,
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
    let require = args.require_coverage.unwrap_or(n >= 1000);
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
