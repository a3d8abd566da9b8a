//! Chat Flow's load generator: drives a server over loopback with the wire
//! contract and reports what the server delivered, how fast, at what cost.
//!
//! Scenarios:
//!
//! * `fanout`: C connections over R rooms, S senders per room; open loop at a
//!   target rate of deliveries per second (`--rate`), or closed loop
//!   (`--closed`, each sender waits for its own message to come back, with
//!   `--window` in flight). Measured over `--duration` after `--warmup`.
//!   `--cluster`: the same against a cluster the load generator starts, a
//!   `redis-server` of its own on a free port and two chat-flow nodes with
//!   `REDIS_URL` on it; the senders connect to node 1, the other members of
//!   each room alternate between node 1 and node 2. It reports latency,
//!   losses, gaps and duplicates per node, and the CPU per delivery of node 1,
//!   node 2 and redis-server.
//! * `idle`: C authenticated, joined connections opened at `--connect-rate`
//!   and held; connect + upgrade + authenticate + join latency, and the
//!   server's RSS per connection.
//! * `burst`: one sender writes N messages back to back into a room of M
//!   members; the time until every member has all of them.
//!
//! Every message's `content` carries the moment it was sent on this
//! process's monotonic clock, so latency is send → receipt on the same clock.
//! Receivers check each room's `seq` (gaps, duplicates) and count closes.
//! The server's CPU time (utime + stime of all its threads) and RSS come from
//! `/proc/PID/stat` and `/proc/PID/status`: the load generator starts
//! `chat-flow` (or, with `--floor`, the cost-floor server `floor`) from its
//! own directory with generous limits, or measures a running one given
//! `--addr` and `--pid`. `--compare` runs the same scenario against the
//! floor, then against chat-flow, and prints the ratio of CPU per delivery.
//!
//! The client side is cheap on purpose: one single-threaded tokio runtime
//! (`--threads N` for more), fastwebsockets with masking, no JSON parsing on
//! the delivery path. Every run is bounded in time and count and stops by
//! itself; only loopback addresses are accepted.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chat_flow::auth::{TokenSpec, mint_hs256};
use chat_flow::config::DEV_JWT_SECRET;
use chat_flow_bench::client::{self, SetupError, Ws};
use chat_flow_bench::procstat::{self, ProcSample};
use chat_flow_bench::stats::{Summary, fmt_dur, fmt_ns};
use chat_flow_bench::wire;
use clap::{Args, Parser, Subcommand};
use fastwebsockets::{Frame, OpCode, Payload, WebSocketRead, WebSocketWrite};
use tokio::io::BufWriter;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinHandle;

#[derive(Parser, Debug)]
#[command(about = "Load generator for Chat Flow (loopback only)")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
    #[command(flatten)]
    target: TargetArgs,
}

#[derive(Args, Debug, Clone)]
struct TargetArgs {
    /// Drive an already running server at this address (loopback only)
    /// instead of starting one.
    #[arg(long, global = true)]
    addr: Option<SocketAddr>,
    /// PID of the server at --addr, to read its CPU time and RSS from /proc.
    #[arg(long, global = true)]
    pid: Option<u32>,
    /// Start the cost-floor server (`floor`) instead of chat-flow.
    #[arg(long, global = true)]
    floor: bool,
    /// Run the scenario against the floor, then against chat-flow, and
    /// report chat-flow's CPU per delivery as a ratio to the floor's.
    #[arg(long, global = true)]
    compare: bool,
    /// chat-flow binary to start (default: `chat-flow` beside this binary).
    #[arg(long, global = true)]
    server_bin: Option<PathBuf>,
    /// Floor binary to start (default: `floor` beside this binary).
    #[arg(long, global = true)]
    floor_bin: Option<PathBuf>,
    /// Extra argument for a started floor (repeatable), e.g. `--floor-arg=--writer=task`.
    #[arg(long = "floor-arg", global = true, allow_hyphen_values = true)]
    floor_args: Vec<String>,
    /// Extra NAME=VALUE environment for a started chat-flow (repeatable).
    #[arg(long = "server-env", global = true)]
    server_env: Vec<String>,
    /// Worker threads of this load generator (1: a current-thread runtime).
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
    /// HS256 secret to mint tokens with (default: chat-flow's development secret).
    #[arg(long, global = true)]
    secret: Option<String>,
    /// Size of each SEND_MESSAGE frame, bytes.
    #[arg(long, global = true, default_value_t = 200)]
    msg_bytes: usize,
    /// Run everything this many times.
    #[arg(long, global = true, default_value_t = 1)]
    repeat: usize,
}

#[derive(Subcommand, Debug, Clone)]
enum Scenario {
    /// C connections over R rooms, S senders per room.
    Fanout(FanoutArgs),
    /// C authenticated, joined connections held.
    Idle(IdleArgs),
    /// One sender, N messages back to back into a room of M members.
    Burst(BurstArgs),
}

#[derive(Args, Debug, Clone)]
struct FanoutArgs {
    /// Connections.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Rooms (connection i joins room i mod R).
    #[arg(long, default_value_t = 10)]
    rooms: usize,
    /// Senders per room (they are members too).
    #[arg(long, default_value_t = 1)]
    senders: usize,
    /// Open-loop target, deliveries per second (all rooms together).
    #[arg(long, default_value_t = 50_000.0)]
    rate: f64,
    /// Closed loop: each sender waits for its own message to come back.
    #[arg(long)]
    closed: bool,
    /// Closed loop: messages in flight per sender.
    #[arg(long, default_value_t = 1)]
    window: usize,
    /// Seconds sent before the measurement window.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Seconds of the measurement window.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Most seconds to wait for the window's messages after it ends.
    #[arg(long, default_value_t = 5.0)]
    drain: f64,
    /// Connections set up concurrently.
    #[arg(long, default_value_t = 200)]
    setup_concurrency: usize,
    /// Cluster mode: start a redis-server and two chat-flow nodes on it; the
    /// senders connect to node 1, the other members alternate between node 1
    /// and node 2 within each room.
    #[arg(long)]
    cluster: bool,
    /// Cluster mode: the redis-server binary (when it is the default and not
    /// on PATH, `scripts/ensure-redis.sh` installs Debian's package first).
    #[arg(long, default_value = "redis-server")]
    redis_bin: PathBuf,
}

#[derive(Args, Debug, Clone)]
struct IdleArgs {
    /// Connections.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Rooms (connection i joins room i mod R).
    #[arg(long, default_value_t = 100)]
    rooms: usize,
    /// New connections per second (open loop).
    #[arg(long, default_value_t = 2_000.0)]
    connect_rate: f64,
    /// Seconds to wait after the last connection before reading RSS.
    #[arg(long, default_value_t = 2.0)]
    settle: f64,
    /// Seconds to hold the connections after the first RSS reading.
    #[arg(long, default_value_t = 3.0)]
    hold: f64,
}

#[derive(Args, Debug, Clone)]
struct BurstArgs {
    /// Members of the room, the sender included.
    #[arg(long, default_value_t = 100)]
    members: usize,
    /// Messages the sender writes back to back.
    #[arg(long, default_value_t = 5_000)]
    messages: usize,
    /// Most seconds to wait for every member to have every message.
    #[arg(long, default_value_t = 60.0)]
    timeout: f64,
}

fn main() {
    let cli = Cli::parse();
    let t = &cli.target;
    if let Some(addr) = t.addr {
        if let Err(e) = client::check_loopback(addr) {
            eprintln!("loadgen: {e}");
            std::process::exit(2);
        }
        if t.floor || t.compare {
            eprintln!("loadgen: --floor/--compare start their own servers; drop --addr");
            std::process::exit(2);
        }
    }
    match procstat::raise_fd_limit() {
        Ok(n) => eprintln!("loadgen: open-file limit {n}"),
        Err(e) => eprintln!("loadgen: cannot raise the open-file limit: {e}"),
    }
    let rt = if t.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(t.threads)
            .enable_all()
            .build()
    }
    .expect("a tokio runtime");
    let mut ok = true;
    for round in 1..=t.repeat {
        if t.repeat > 1 {
            println!("######## round {round} of {}", t.repeat);
        }
        ok &= rt.block_on(run(&cli));
    }
    std::process::exit(if ok { 0 } else { 1 });
}

/// What a run reports for `--compare`.
#[derive(Debug, Clone, Copy, Default)]
struct Figures {
    cpu_per_delivery_ns: Option<f64>,
    rss_per_conn_bytes: Option<f64>,
}

async fn run(cli: &Cli) -> bool {
    let t = &cli.target;
    if let Scenario::Fanout(a) = &cli.scenario
        && a.cluster
    {
        return match run_cluster(t, &cli.scenario, a).await {
            Ok(()) => true,
            Err(e) => {
                eprintln!("loadgen: {e}");
                false
            }
        };
    }
    let kinds: Vec<Kind> = if t.compare {
        vec![Kind::Floor, Kind::ChatFlow]
    } else if t.floor {
        vec![Kind::Floor]
    } else if t.addr.is_some() {
        vec![Kind::External]
    } else {
        vec![Kind::ChatFlow]
    };
    let mut figures = Vec::new();
    for kind in kinds {
        let target = match Target::start(kind, t, &cli.scenario, &[]).await {
            Ok(target) => target,
            Err(e) => {
                eprintln!("loadgen: {e}");
                return false;
            }
        };
        println!();
        println!(
            "== {} against {} ({}, pid {}) ==",
            scenario_name(&cli.scenario),
            target.name,
            target.addr,
            target.pid.map_or("?".to_owned(), |p| p.to_string())
        );
        println!(
            "date {} | load average {} | cores {}",
            date(),
            procstat::loadavg(),
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        let result = match &cli.scenario {
            Scenario::Fanout(a) => fanout(&[&target], None, t, a).await,
            Scenario::Idle(a) => idle(&target, t, a).await,
            Scenario::Burst(a) => burst(&target, t, a).await,
        };
        let load_end = procstat::loadavg();
        let name = target.name.clone();
        if let Some(line) = target.stop().await {
            println!("{line}");
        }
        println!("load average at end {load_end}");
        match result {
            Ok(f) => figures.push((name, f)),
            Err(e) => {
                eprintln!("loadgen: {e}");
                return false;
            }
        }
    }
    if let [(_, floor), (_, server)] = figures.as_slice() {
        println!();
        println!("== compare ({}) ==", scenario_name(&cli.scenario));
        if let (Some(f), Some(s)) = (floor.cpu_per_delivery_ns, server.cpu_per_delivery_ns) {
            println!(
                "server CPU per delivery {} vs floor {}: ratio {:.2}x",
                fmt_ns(s as u64),
                fmt_ns(f as u64),
                s / f
            );
        }
        if let (Some(f), Some(s)) = (floor.rss_per_conn_bytes, server.rss_per_conn_bytes) {
            println!(
                "RSS per connection: server {:.0} B vs floor {:.0} B: ratio {:.2}x",
                s,
                f,
                s / f
            );
        }
    }
    true
}

fn scenario_name(s: &Scenario) -> &'static str {
    match s {
        Scenario::Fanout(_) => "fanout",
        Scenario::Idle(_) => "idle",
        Scenario::Burst(_) => "burst",
    }
}

fn date() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    chat_flow::protocol::time::rfc3339_ms(secs)
}

// ----- the server under test ------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    ChatFlow,
    Floor,
    External,
}

struct Target {
    name: String,
    addr: SocketAddr,
    pid: Option<u32>,
    child: Option<Child>,
    log: Option<PathBuf>,
    kind: Kind,
}

fn sibling(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join(name)))
        .unwrap_or_else(|| PathBuf::from(name))
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Target {
    async fn start(
        kind: Kind,
        t: &TargetArgs,
        scenario: &Scenario,
        extra_env: &[(&str, String)],
    ) -> Result<Target, String> {
        if kind == Kind::External {
            let addr = t.addr.expect("external needs --addr");
            if t.pid.is_none() {
                eprintln!("loadgen: no --pid: the server's CPU and RSS will not be reported");
            }
            return Ok(Target {
                name: "server".into(),
                addr,
                pid: t.pid,
                child: None,
                log: None,
                kind,
            });
        }
        let port = free_port().map_err(|e| format!("no free port: {e}"))?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let log = std::env::temp_dir().join(format!(
            "chat-flow-loadgen-{}-{port}.log",
            if kind == Kind::Floor {
                "floor"
            } else {
                "server"
            }
        ));
        let log_file =
            std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let log_err = log_file
            .try_clone()
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let mut cmd;
        let name;
        if kind == Kind::Floor {
            let bin = t.floor_bin.clone().unwrap_or_else(|| sibling("floor"));
            cmd = Command::new(&bin);
            cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()]);
            cmd.args(&t.floor_args);
            name = format!("floor ({})", bin.display());
        } else {
            let bin = t.server_bin.clone().unwrap_or_else(|| sibling("chat-flow"));
            cmd = Command::new(&bin);
            let queue = match scenario {
                Scenario::Burst(b) => (b.messages * 2).max(100_000),
                _ => 100_000,
            };
            let secret = t
                .secret
                .clone()
                .unwrap_or_else(|| DEV_JWT_SECRET.to_owned());
            // A clean environment, so nothing of the caller's (nor a .env in
            // the working directory) changes the server under test.
            cmd.env_clear()
                .env("HOST", "127.0.0.1")
                .env("PORT", port.to_string())
                .env("JWT_SECRET", secret)
                .env("LOG_LEVEL", "warn")
                .env("RATE_LIMIT_MESSAGES", "1000000000")
                .env("RATE_LIMIT_REQUESTS", "1000000000")
                .env("MAX_CONNECTIONS", "1000000")
                .env("MAX_CONNECTIONS_PER_IP", "1000000")
                .env("OUTBOUND_QUEUE_LIMIT", queue.to_string())
                .env("HISTORY_LIMIT", "100")
                .env("ROOMS_PER_USER_MAX", "100000")
                .env("AUTH_TIMEOUT_MS", "60000")
                .env("IDLE_TIMEOUT_MS", "600000")
                .env("SHUTDOWN_GRACE_MS", "2000")
                .env("DEFAULT_ROOMS", "general:General");
            for (k, v) in extra_env {
                cmd.env(k, v);
            }
            for kv in &t.server_env {
                let Some((k, v)) = kv.split_once('=') else {
                    return Err(format!("--server-env {kv}: expected NAME=VALUE"));
                };
                cmd.env(k, v);
            }
            name = format!("chat-flow ({})", bin.display());
        }
        cmd.current_dir(std::env::temp_dir())
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        let pid = child.id();
        let mut target = Target {
            name,
            addr,
            pid: Some(pid),
            child: Some(child),
            log: Some(log),
            kind,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                break;
            }
            if let Some(Ok(Some(status))) = target.child.as_mut().map(|c| c.try_wait()) {
                return Err(format!(
                    "{} exited at start-up ({status}); log: {}",
                    target.name,
                    target.log_tail()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!("{} did not listen within 20 s", target.name));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Let start-up allocations settle before any baseline is read.
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(target)
    }

    fn sample(&self) -> Option<ProcSample> {
        self.pid.and_then(|p| procstat::sample(p).ok())
    }

    /// Waits (up to 20 s) for `GET /readyz` to answer 200: a cluster node
    /// answers 503 until Redis first answered.
    async fn wait_ready(&self) -> Result<(), String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let ask = || async {
            let mut s = tokio::net::TcpStream::connect(self.addr).await?;
            s.write_all(b"GET /readyz HTTP/1.1\r\nHost: loadgen\r\nConnection: close\r\n\r\n")
                .await?;
            let mut head = [0u8; 12];
            s.read_exact(&mut head).await?;
            Ok::<bool, std::io::Error>(head.starts_with(b"HTTP/1.1 200"))
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Ok(true)) = tokio::time::timeout(Duration::from_secs(1), ask()).await {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} did not answer /readyz 200 within 20 s; log: {}",
                    self.name,
                    self.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_tail(&self) -> String {
        self.log
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .map(|s| {
                let lines: Vec<&str> = s.lines().collect();
                lines[lines.len().saturating_sub(5)..].join("\n")
            })
            .unwrap_or_default()
    }

    /// Stops a started server (SIGTERM, then SIGKILL after 15 s); returns
    /// the floor's counters line.
    async fn stop(mut self) -> Option<String> {
        let mut child = self.child.take()?;
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
            }
        }
        if self.kind == Kind::Floor {
            let log = std::fs::read_to_string(self.log.as_ref()?).ok()?;
            return log
                .lines()
                .rev()
                .find(|l| l.starts_with("floor: connections="))
                .map(str::to_owned);
        }
        let log = self.log_tail();
        let errors: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("ERROR") || l.contains("panic"))
            .collect();
        (!errors.is_empty()).then(|| format!("server log errors:\n{}", errors.join("\n")))
    }
}

// ----- cluster mode: two nodes on one redis-server -------------------------

/// `fanout --cluster`: a redis-server of its own, two chat-flow nodes on it,
/// the scenario, then the nodes stopped (they leave their rooms in Redis)
/// before Redis.
async fn run_cluster(t: &TargetArgs, scenario: &Scenario, a: &FanoutArgs) -> Result<(), String> {
    if t.addr.is_some() || t.floor || t.compare {
        return Err(
            "--cluster starts its own redis-server and nodes: drop --addr, --floor and --compare"
                .into(),
        );
    }
    let redis = RedisProc::start(&a.redis_bin).await?;
    let env = [
        ("REDIS_URL", format!("redis://127.0.0.1:{}", redis.port)),
        ("REDIS_KEY_PREFIX", "lg".to_owned()),
    ];
    let mut nodes: Vec<Target> = Vec::with_capacity(2);
    for n in 1..=2 {
        let started = match Target::start(Kind::ChatFlow, t, scenario, &env).await {
            Ok(mut target) => {
                target.name = format!("node {n}: {}", target.name);
                let ready = target.wait_ready().await;
                nodes.push(target);
                ready
            }
            Err(e) => Err(e),
        };
        if let Err(e) = started {
            for node in nodes {
                node.stop().await;
            }
            redis.stop().await;
            return Err(e);
        }
    }
    println!();
    println!("== fanout --cluster: two chat-flow nodes on one redis-server ==");
    for node in &nodes {
        println!(
            "{} at {}, pid {}",
            node.name,
            node.addr,
            node.pid.map_or("?".to_owned(), |p| p.to_string())
        );
    }
    println!(
        "redis-server ({}) at 127.0.0.1:{}, pid {}, {}",
        a.redis_bin.display(),
        redis.port,
        redis.pid(),
        redis.version
    );
    println!(
        "date {} | load average {} | cores {}",
        date(),
        procstat::loadavg(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let refs: Vec<&Target> = nodes.iter().collect();
    let result = fanout(&refs, Some(&redis), t, a).await;
    let load_end = procstat::loadavg();
    for node in nodes {
        let name = node.name.clone();
        if let Some(line) = node.stop().await {
            println!("{name}: {line}");
        }
    }
    redis.stop().await;
    println!("load average at end {load_end}");
    result.map(drop)
}

/// A redis-server of the load generator's own: on a free port of 127.0.0.1,
/// saving nothing, in a temporary directory (removed when it stops). Killed
/// on drop if not stopped.
struct RedisProc {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    version: String,
}

impl RedisProc {
    async fn start(bin: &std::path::Path) -> Result<RedisProc, String> {
        let version = |bin: &std::path::Path| {
            Command::new(bin)
                .arg("--version")
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output()
        };
        let out = match version(bin) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && bin == "redis-server" => {
                let script =
                    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/ensure-redis.sh");
                eprintln!(
                    "loadgen: redis-server is missing: running {}",
                    script.display()
                );
                let status = Command::new("bash")
                    .arg(&script)
                    .status()
                    .map_err(|e| format!("bash {}: {e}", script.display()))?;
                if !status.success() {
                    return Err(format!("{} failed: {status}", script.display()));
                }
                version(bin)
            }
            other => other,
        }
        .map_err(|e| format!("{}: {e}", bin.display()))?;
        let version = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .find_map(|w| w.strip_prefix("v="))
            .map_or_else(|| "version ?".to_owned(), |v| format!("v{v}"));
        let mut last_err = String::new();
        for _ in 0..5 {
            let port = free_port().map_err(|e| format!("no free port: {e}"))?;
            let dir = std::env::temp_dir().join(format!(
                "chat-flow-loadgen-redis-{}-{port}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let child = Command::new(bin)
                .args(["--port", &port.to_string()])
                .args(["--bind", "127.0.0.1"])
                .args(["--save", ""])
                .args(["--appendonly", "no"])
                .args(["--maxmemory-policy", "noeviction"])
                .arg("--dir")
                .arg(&dir)
                .current_dir(&dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
            let mut redis = RedisProc {
                child: Some(child),
                port,
                dir,
                version: version.clone(),
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Some(Ok(Some(status))) = redis.child.as_mut().map(|c| c.try_wait()) {
                    last_err = format!("redis-server exited at start-up ({status})");
                    break;
                }
                if redis_ping(port).await {
                    return Ok(redis);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if last_err.is_empty() {
                last_err = "redis-server did not answer PING within 10 s".into();
            }
            redis.stop().await;
        }
        Err(last_err)
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn sample(&self) -> Option<ProcSample> {
        procstat::sample(self.pid()).ok()
    }

    /// SIGTERM (SIGKILL after 5 s), then removes its directory.
    async fn stop(mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for RedisProc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether a redis-server on 127.0.0.1:`port` answers `PING` within 1 s.
async fn redis_ping(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ask = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        s.write_all(b"*1\r\n$4\r\nPING\r\n").await?;
        let mut buf = [0u8; 7];
        s.read_exact(&mut buf).await?;
        Ok::<bool, std::io::Error>(&buf == b"+PONG\r\n")
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), ask).await,
        Ok(Ok(true))
    )
}

// ----- shared measurement state ---------------------------------------------

struct Shared {
    base: Instant,
    /// Messages sent in [window_start, window_end) (ns since `base`) are measured.
    window_start: AtomicU64,
    window_end: AtomicU64,
    window_delivered: AtomicU64,
    window_expected: AtomicU64,
    /// Burst: members that have every message.
    done: AtomicU64,
    done_target: AtomicU64,
    progress: Notify,
}

impl Shared {
    fn new() -> Arc<Shared> {
        Arc::new(Shared {
            base: Instant::now(),
            window_start: AtomicU64::new(u64::MAX),
            window_end: AtomicU64::new(u64::MAX),
            window_delivered: AtomicU64::new(0),
            window_expected: AtomicU64::new(0),
            done: AtomicU64::new(0),
            done_target: AtomicU64::new(u64::MAX),
            progress: Notify::new(),
        })
    }

    fn ns(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.base).as_nanos() as u64
    }

    fn now_ns(&self) -> u64 {
        self.ns(Instant::now())
    }

    fn in_window(&self, sent_ns: u64) -> bool {
        sent_ns >= self.window_start.load(Ordering::Relaxed)
            && sent_ns < self.window_end.load(Ordering::Relaxed)
    }
}

/// One connection's view of what it received.
#[derive(Debug, Default)]
struct Recv {
    /// This connection's sender number, if it sends.
    sender_id: Option<u64>,
    /// Closed loop: one permit back per own message received.
    acks: Option<Arc<Semaphore>>,
    last_seq: u64,
    gaps: u64,
    dups: u64,
    deliveries: u64,
    latencies: Vec<u64>,
    other_frames: u64,
    /// Burst: the `seq` that completes the burst, and when it arrived.
    target_seq: u64,
    completed: Option<Instant>,
    /// Set when the server closed (or the socket failed) before the end.
    closed: Option<String>,
    /// Fanout: the connection's room index and node index, and how many
    /// deliveries of the measurement window it should have had.
    room: usize,
    node: usize,
    expected: u64,
}

impl Recv {
    fn on_text(&mut self, payload: &[u8], sh: &Shared) {
        let Some(d) = wire::scan_delivery(payload) else {
            self.other_frames += 1;
            return;
        };
        let now = sh.now_ns();
        if d.seq > self.last_seq + 1 {
            self.gaps += d.seq - self.last_seq - 1;
        } else if d.seq <= self.last_seq {
            self.dups += 1;
        }
        self.last_seq = self.last_seq.max(d.seq);
        self.deliveries += 1;
        if sh.in_window(d.sent_ns) {
            self.latencies.push(now.saturating_sub(d.sent_ns));
            sh.window_delivered.fetch_add(1, Ordering::Relaxed);
        }
        if self.sender_id == Some(d.sender)
            && let Some(acks) = &self.acks
        {
            acks.add_permits(1);
        }
        if self.target_seq > 0 && self.completed.is_none() && self.last_seq >= self.target_seq {
            self.completed = Some(Instant::now());
            let done = sh.done.fetch_add(1, Ordering::Relaxed) + 1;
            if done >= sh.done_target.load(Ordering::Relaxed) {
                sh.progress.notify_one();
            }
        }
    }

    fn on_close(&mut self, payload: &[u8]) {
        self.closed = Some(format!("close {}", client::close_code(payload)));
    }
}

async fn read_whole(
    mut ws: Ws,
    mut st: Recv,
    sh: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> Recv {
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            r = ws.read_frame() => match r {
                Ok(f) => match f.opcode {
                    OpCode::Text => st.on_text(&f.payload, &sh),
                    OpCode::Close => { st.on_close(&f.payload); break; }
                    _ => {}
                },
                Err(e) => { st.closed = Some(format!("error: {e}")); break; }
            }
        }
    }
    st
}

async fn read_half(
    mut rx: WebSocketRead<OwnedReadHalf>,
    mut st: Recv,
    sh: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> Recv {
    // Senders write often enough that the server never needs a pong.
    let mut no_sends = |_| async { Ok::<(), std::io::Error>(()) };
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            r = rx.read_frame(&mut no_sends) => match r {
                Ok(f) => match f.opcode {
                    OpCode::Text => st.on_text(&f.payload, &sh),
                    OpCode::Close => { st.on_close(&f.payload); break; }
                    _ => {}
                },
                Err(e) => { st.closed = Some(format!("error: {e}")); break; }
            }
        }
    }
    st
}

/// Everything the receivers saw, merged.
#[derive(Debug, Default)]
struct Merged {
    deliveries: u64,
    gaps: u64,
    dups: u64,
    other_frames: u64,
    latencies: Vec<u64>,
    /// Deliveries of the measurement window received (`latencies.len()`
    /// before a [`Summary`] sorts them).
    latencies_seen: u64,
    closes: BTreeMap<String, u64>,
    /// Fanout: window deliveries expected, and those missing, over how many
    /// connections.
    expected: u64,
    lost: u64,
    lossy_conns: u64,
}

impl Merged {
    fn add(&mut self, r: Recv) {
        self.add_counts(&r);
        self.latencies.extend_from_slice(&r.latencies);
        if let Some(c) = r.closed {
            *self.closes.entry(c).or_insert(0) += 1;
        }
    }

    /// Like [`Merged::add`], keeping `r`.
    fn add_ref(&mut self, r: &Recv) {
        self.add_counts(r);
        self.latencies.extend_from_slice(&r.latencies);
        if let Some(c) = &r.closed {
            *self.closes.entry(c.clone()).or_insert(0) += 1;
        }
    }

    fn add_counts(&mut self, r: &Recv) {
        self.deliveries += r.deliveries;
        self.gaps += r.gaps;
        self.dups += r.dups;
        self.other_frames += r.other_frames;
        self.latencies_seen += r.latencies.len() as u64;
        self.expected += r.expected;
        let lost = r.expected.saturating_sub(r.latencies.len() as u64);
        self.lost += lost;
        self.lossy_conns += u64::from(lost > 0);
    }

    fn unexpected_closes(&self) -> u64 {
        self.closes.values().sum()
    }
}

fn token(secret: &str, sub: &str) -> String {
    token_granting(secret, sub, &[])
}

/// A token whose `rooms` claim lists `rooms` (a chosen room id must be in
/// its creator's claim).
fn token_granting(secret: &str, sub: &str, rooms: &[String]) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let spec = TokenSpec {
        rooms,
        ..TokenSpec::new(sub, now, 3 * 3600)
    };
    mint_hs256(secret.as_bytes(), &spec).expect("a valid token spec")
}

fn secret(t: &TargetArgs) -> String {
    t.secret
        .clone()
        .unwrap_or_else(|| DEV_JWT_SECRET.to_owned())
}

fn room_name(r: usize) -> String {
    format!("lg-{r}")
}

/// Creates the rooms (each admin connection creates at most 40, within the
/// default request rate limit) and leaves them, so that nobody but the
/// scenario's connections is a member.
async fn create_rooms(addr: SocketAddr, secret: &str, rooms: &[String]) -> Result<(), SetupError> {
    for (k, chunk) in rooms.chunks(40).enumerate() {
        let mut ws = client::connect(addr).await?;
        let admin = token_granting(secret, &format!("lg-admin-{k}"), chunk);
        client::authenticate(&mut ws, &admin).await?;
        for room in chunk {
            client::create_room(&mut ws, room).await?;
        }
        let _ = ws.write_frame(Frame::close(1000, b"")).await;
    }
    Ok(())
}

async fn setup(addr: SocketAddr, token: String, room: String) -> Result<(Ws, u64), SetupError> {
    let mut ws = client::connect(addr).await?;
    client::authenticate(&mut ws, &token).await?;
    let last = client::join(&mut ws, &room).await?;
    Ok((ws, last))
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn cpu_line(label: &str, a: &ProcSample, b: &ProcSample, wall: Duration) -> String {
    let cpu = b.cpu_fine().saturating_sub(a.cpu_fine());
    format!(
        "{label} CPU: {} in {} wall ({:.1}% of one core); from /proc stat ticks {} (user {}, system {})",
        fmt_dur(cpu),
        fmt_dur(wall),
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64().max(1e-9),
        fmt_dur(b.cpu().saturating_sub(a.cpu())),
        fmt_dur(b.user().saturating_sub(a.user())),
        fmt_dur(b.system().saturating_sub(a.system())),
    )
}

fn report_latency(m: &mut Merged) {
    let s = Summary::of(&mut m.latencies);
    println!(
        "latency send→receipt: p50 {} | p99 {} | p99.9 {} | max {} (mean {}, n {})",
        fmt_ns(s.p50),
        fmt_ns(s.p99),
        fmt_ns(s.p999),
        fmt_ns(s.max),
        fmt_ns(s.mean),
        s.count
    );
    println!(
        "seq gaps {} | duplicates {} | unexpected closes {} {:?} | other frames {}",
        m.gaps,
        m.dups,
        m.unexpected_closes(),
        m.closes,
        m.other_frames
    );
}

// ----- fanout ---------------------------------------------------------------

struct SenderStats {
    sent: u64,
    /// Of them, sent within the measurement window.
    window_sent: u64,
    room: usize,
    lag: Vec<u64>,
    error: Option<String>,
    /// Kept open until the end: dropping a write half shuts the socket's
    /// write side, which the server rightly takes as the client leaving.
    tx: WebSocketWrite<OwnedWriteHalf>,
}

/// Fanout against one server, or (`--cluster`) against the nodes of a
/// cluster with its redis-server: the senders connect to the first node,
/// the other members of each room alternate over the nodes.
async fn fanout(
    nodes: &[&Target],
    redis: Option<&RedisProc>,
    t: &TargetArgs,
    a: &FanoutArgs,
) -> Result<Figures, String> {
    if a.rooms == 0 || a.connections < a.rooms * a.senders.max(1) {
        return Err("need at least --senders connections per room".into());
    }
    let sh = Shared::new();
    let secret = secret(t);
    let rooms: Vec<String> = (0..a.rooms).map(room_name).collect();
    create_rooms(nodes[0].addr, &secret, &rooms)
        .await
        .map_err(|e| format!("creating rooms: {e}"))?;
    let room_size = |r: usize| (a.connections - r).div_ceil(a.rooms);
    // Connection i is in room i % R; the first S connections of each room send.
    let is_sender = |i: usize| i < a.rooms * a.senders;
    // The k-th member of a room (k = i / R) is on node k mod N, senders on the first.
    let node_of = |i: usize| {
        if is_sender(i) {
            0
        } else {
            (i / a.rooms) % nodes.len()
        }
    };

    let setup_started = Instant::now();
    let tokens: Vec<String> = (0..a.connections)
        .map(|i| token(&secret, &format!("lg{i}")))
        .collect();
    let limit = Arc::new(Semaphore::new(a.setup_concurrency.max(1)));
    let mut handles = Vec::with_capacity(a.connections);
    for (i, tok) in tokens.into_iter().enumerate() {
        let limit = limit.clone();
        let room = rooms[i % a.rooms].clone();
        let addr = nodes[node_of(i)].addr;
        handles.push(tokio::spawn(async move {
            let _permit = limit.acquire_owned().await;
            setup(addr, tok, room).await
        }));
    }
    let mut conns = Vec::with_capacity(a.connections);
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    for h in handles {
        match h.await.expect("setup task") {
            Ok(c) => conns.push(Some(c)),
            Err(e) => {
                *failures.entry(e.to_string()).or_insert(0) += 1;
                conns.push(None);
            }
        }
    }
    let setup_time = setup_started.elapsed();
    if !failures.is_empty() {
        return Err(format!("connection setup failed: {failures:?}"));
    }
    if nodes.len() > 1 {
        // A member's USER_JOINED reaches the other node through Redis:
        // let it arrive before anything is measured.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    let total_senders = a.rooms * a.senders;
    // Open loop: every sender at the same message rate, so that all rooms
    // together deliver `rate` per second.
    let per_sender_rate = a.rate / (a.senders * a.connections) as f64;
    let interval = Duration::from_secs_f64(1.0 / per_sender_rate.max(1e-9));
    let (stop_tx, stop_rx) = watch::channel(false);
    let start = Instant::now() + Duration::from_millis(100);
    let window_start = start + Duration::from_secs_f64(a.warmup);
    let window_end = window_start + Duration::from_secs_f64(a.duration);
    sh.window_start
        .store(sh.ns(window_start), Ordering::Relaxed);
    sh.window_end.store(sh.ns(window_end), Ordering::Relaxed);

    let mut readers: Vec<JoinHandle<Recv>> = Vec::with_capacity(a.connections);
    let mut senders: Vec<JoinHandle<SenderStats>> = Vec::new();
    for (i, c) in conns.into_iter().enumerate() {
        let (ws, last_seq) = c.expect("no failures");
        let room = i % a.rooms;
        let mut st = Recv {
            last_seq,
            room,
            node: node_of(i),
            ..Recv::default()
        };
        if is_sender(i) {
            let acks = Arc::new(Semaphore::new(if a.closed { a.window.max(1) } else { 0 }));
            st.sender_id = Some(i as u64);
            st.acks = a.closed.then(|| acks.clone());
            let (rx, mut tx) = ws.split(|s| s.into_split());
            tx.set_writev(false);
            readers.push(tokio::spawn(read_half(rx, st, sh.clone(), stop_rx.clone())));
            let plan = SendPlan {
                id: i as u64,
                room,
                room_id: rooms[room].clone(),
                members: room_size(room) as u64,
                first: start + interval.mul_f64(i as f64 / total_senders as f64),
                interval,
                end: window_end,
                closed: a.closed.then_some(acks),
                msg_bytes: t.msg_bytes,
            };
            senders.push(tokio::spawn(send_loop(tx, plan, sh.clone())));
        } else {
            readers.push(tokio::spawn(read_whole(
                ws,
                st,
                sh.clone(),
                stop_rx.clone(),
            )));
        }
    }

    tokio::time::sleep_until(window_start.into()).await;
    let sample_nodes = || nodes.iter().map(|n| n.sample()).collect::<Vec<_>>();
    let cpu0 = sample_nodes();
    let redis0 = redis.and_then(RedisProc::sample);
    let self0 = procstat::self_cpu();
    let t0 = Instant::now();
    let mut sent = 0;
    let mut room_sent = vec![0u64; a.rooms];
    let mut lag = Vec::new();
    let mut send_errors = BTreeMap::new();
    let mut write_halves = Vec::new();
    for s in senders {
        let s = s.await.expect("sender task");
        sent += s.sent;
        room_sent[s.room] += s.window_sent;
        lag.extend_from_slice(&s.lag);
        if let Some(e) = s.error {
            *send_errors.entry(e).or_insert(0u64) += 1;
        }
        write_halves.push(s.tx);
    }
    let expected = sh.window_expected.load(Ordering::Relaxed);
    let drain_deadline = Instant::now() + Duration::from_secs_f64(a.drain);
    while sh.window_delivered.load(Ordering::Relaxed) < expected && Instant::now() < drain_deadline
    {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let wall = t0.elapsed();
    let cpu1 = sample_nodes();
    let redis1 = redis.and_then(RedisProc::sample);
    let self_cpu = procstat::self_cpu().saturating_sub(self0);
    let _ = stop_tx.send(true);
    let mut m = Merged::default();
    let mut per_node: Vec<Merged> = nodes.iter().map(|_| Merged::default()).collect();
    for r in readers {
        let mut r = r.await.expect("reader task");
        // What this connection should have had from the window, and did not.
        r.expected = room_sent[r.room];
        if nodes.len() > 1 {
            per_node[r.node].add_ref(&r);
        }
        m.add(r);
    }
    drop(write_halves);
    let delivered = sh.window_delivered.load(Ordering::Relaxed);
    let window_secs = a.duration;
    let window_msgs: u64 = room_sent.iter().sum();

    println!(
        "connections {} over {} rooms ({} per room), {} sender(s) per room; set up in {}",
        a.connections,
        a.rooms,
        room_size(0),
        a.senders,
        fmt_dur(setup_time)
    );
    if nodes.len() > 1 {
        let on = |n: usize| (0..a.connections).filter(|&i| node_of(i) == n).count();
        println!(
            "cluster: the {} senders on node 1; connections per node: {}",
            total_senders,
            (0..nodes.len())
                .map(|n| format!("node {} {}", n + 1, on(n)))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if a.closed {
        println!(
            "closed loop, window {} per sender, {}-byte SEND_MESSAGE",
            a.window, t.msg_bytes
        );
    } else {
        println!(
            "open loop: target {:.0} deliveries/s = {:.1} msgs/s per sender, {}-byte SEND_MESSAGE",
            a.rate, per_sender_rate, t.msg_bytes
        );
    }
    println!(
        "window {window_secs:.1} s (after {:.1} s warm-up): {sent} messages sent in all, \
         {window_msgs} in the window ({:.0}/s), {expected} deliveries expected, {delivered} delivered \
         (ratio {:.6}); {:.0} deliveries/s",
        a.warmup,
        window_msgs as f64 / window_secs,
        delivered as f64 / expected.max(1) as f64,
        delivered as f64 / window_secs
    );
    report_latency(&mut m);
    println!(
        "lost (sent in the window, not received by the end of the drain): {} deliveries, \
         on {} of {} connections",
        m.lost, m.lossy_conns, a.connections
    );
    if !send_errors.is_empty() {
        println!("send errors: {send_errors:?}");
    }
    let mut figures = Figures::default();
    if nodes.len() == 1 {
        if let (Some(c0), Some(c1)) = (cpu0[0], cpu1[0]) {
            println!("{}", cpu_line("server", &c0, &c1, wall));
            let per = c1.cpu_fine().saturating_sub(c0.cpu_fine()).as_nanos() as f64
                / delivered.max(1) as f64;
            figures.cpu_per_delivery_ns = Some(per);
            println!(
                "server CPU per delivery: {} | server RSS {} (peak {}), threads {}",
                fmt_ns(per as u64),
                mib(c1.rss_kib),
                mib(c1.hwm_kib),
                c1.threads
            );
        }
    } else {
        figures.cpu_per_delivery_ns =
            report_cluster(&mut per_node, &cpu0, &cpu1, redis0, redis1, wall, delivered);
    }
    let l = Summary::of(&mut lag);
    let lag_text = if a.closed {
        String::new()
    } else {
        format!(
            "; send lag behind schedule p50 {} p99 {} max {}",
            fmt_ns(l.p50),
            fmt_ns(l.p99),
            fmt_ns(l.max)
        )
    };
    println!(
        "loadgen: CPU {:.1}% of one core{lag_text}",
        100.0 * self_cpu.as_secs_f64() / wall.as_secs_f64()
    );
    Ok(figures)
}

/// The cluster's figures per node and for Redis; returns the whole
/// service's CPU (nodes and Redis) per delivery, ns.
fn report_cluster(
    per_node: &mut [Merged],
    cpu0: &[Option<ProcSample>],
    cpu1: &[Option<ProcSample>],
    redis0: Option<ProcSample>,
    redis1: Option<ProcSample>,
    wall: Duration,
    delivered: u64,
) -> Option<f64> {
    let used = |a: &ProcSample, b: &ProcSample| b.cpu_fine().saturating_sub(a.cpu_fine());
    let used_ticks = |a: &ProcSample, b: &ProcSample| b.cpu().saturating_sub(a.cpu());
    let per = |d: Duration, n: u64| fmt_ns((d.as_nanos() / u128::from(n.max(1))) as u64);
    for (n, m) in per_node.iter_mut().enumerate() {
        let own = m.latencies.len() as u64;
        let s = Summary::of(&mut m.latencies);
        println!(
            "node {}: {own} deliveries to its members of {} expected (ratio {:.6}); \
             latency p50 {} | p99 {} | p99.9 {} | max {}; lost {} | gaps {} | duplicates {} | \
             unexpected closes {}",
            n + 1,
            m.expected,
            own as f64 / m.expected.max(1) as f64,
            fmt_ns(s.p50),
            fmt_ns(s.p99),
            fmt_ns(s.p999),
            fmt_ns(s.max),
            m.lost,
            m.gaps,
            m.dups,
            m.unexpected_closes()
        );
    }
    let mut total = Duration::ZERO;
    let mut complete = true;
    for (n, (c0, c1)) in cpu0.iter().zip(cpu1).enumerate() {
        let (Some(c0), Some(c1)) = (c0, c1) else {
            println!("node {}: CPU unreadable", n + 1);
            complete = false;
            continue;
        };
        let label = format!("node {}", n + 1);
        println!("{}", cpu_line(&label, c0, c1, wall));
        let own = per_node.get(n).map_or(0, |m| m.latencies_seen);
        total += used(c0, c1);
        println!(
            "{label} CPU per delivery: {} of all {delivered} ({} from stat ticks); {} per delivery \
             to its own {own} members | RSS {} (peak {}), threads {}",
            per(used(c0, c1), delivered),
            per(used_ticks(c0, c1), delivered),
            per(used(c0, c1), own),
            mib(c1.rss_kib),
            mib(c1.hwm_kib),
            c1.threads
        );
    }
    if let (Some(r0), Some(r1)) = (redis0, redis1) {
        println!("{}", cpu_line("redis-server", &r0, &r1, wall));
        total += used(&r0, &r1);
        println!(
            "redis-server CPU per delivery: {} ({} from stat ticks) | RSS {} (peak {})",
            per(used(&r0, &r1), delivered),
            per(used_ticks(&r0, &r1), delivered),
            mib(r1.rss_kib),
            mib(r1.hwm_kib)
        );
    } else {
        println!("redis-server: CPU unreadable");
        complete = false;
    }
    let all = total.as_nanos() as f64 / delivered.max(1) as f64;
    println!(
        "cluster CPU (both nodes + redis-server): {} in {} wall ({:.1}% of one core), {} per delivery",
        fmt_dur(total),
        fmt_dur(wall),
        100.0 * total.as_secs_f64() / wall.as_secs_f64().max(1e-9),
        fmt_ns(all as u64)
    );
    complete.then_some(all)
}

struct SendPlan {
    id: u64,
    /// The room's index, and its id.
    room: usize,
    room_id: String,
    members: u64,
    first: Instant,
    interval: Duration,
    end: Instant,
    closed: Option<Arc<Semaphore>>,
    msg_bytes: usize,
}

async fn send_loop(
    mut tx: WebSocketWrite<OwnedWriteHalf>,
    p: SendPlan,
    sh: Arc<Shared>,
) -> SenderStats {
    let mut sent = 0;
    let mut window_sent = 0;
    let mut lag = Vec::new();
    let mut error = None;
    let mut buf = Vec::with_capacity(p.msg_bytes + 64);
    let mut next = p.first;
    tokio::time::sleep_until(p.first.into()).await;
    loop {
        match &p.closed {
            Some(acks) => {
                // Wait for a slot, but never past the end.
                tokio::select! {
                    permit = acks.acquire() => match permit {
                        Ok(permit) => permit.forget(),
                        Err(_) => break,
                    },
                    () = tokio::time::sleep_until(p.end.into()) => break,
                }
            }
            None => {
                // Never past the end: a slow sender would otherwise stretch
                // the measured wall (and CPU) by up to one interval.
                if next > Instant::now() {
                    tokio::time::sleep_until(next.min(p.end).into()).await;
                }
            }
        }
        let now = Instant::now();
        if now >= p.end {
            break;
        }
        if p.closed.is_none() {
            lag.push(now.saturating_duration_since(next).as_nanos() as u64);
            next += p.interval;
        }
        let sent_ns = sh.ns(now);
        wire::send_message(&mut buf, &p.room_id, sent_ns, p.id, sent, p.msg_bytes);
        if sh.in_window(sent_ns) {
            sh.window_expected.fetch_add(p.members, Ordering::Relaxed);
            window_sent += 1;
        }
        if let Err(e) = tx
            .write_frame(Frame::text(Payload::BorrowedMut(&mut buf)))
            .await
        {
            error = Some(e.to_string());
            break;
        }
        sent += 1;
    }
    SenderStats {
        sent,
        window_sent,
        room: p.room,
        lag,
        error,
        tx,
    }
}

// ----- idle -----------------------------------------------------------------

struct IdleConn {
    latency: Result<(Duration, Duration), String>,
    recv: Option<Recv>,
}

async fn idle(target: &Target, t: &TargetArgs, a: &IdleArgs) -> Result<Figures, String> {
    let sh = Shared::new();
    let secret = secret(t);
    let rooms: Vec<String> = (0..a.rooms.max(1)).map(room_name).collect();
    create_rooms(target.addr, &secret, &rooms)
        .await
        .map_err(|e| format!("creating rooms: {e}"))?;
    let tokens: Vec<String> = (0..a.connections)
        .map(|i| token(&secret, &format!("lg{i}")))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let base = target.sample();

    let (stop_tx, stop_rx) = watch::channel(false);
    let settled = Arc::new(AtomicU64::new(0));
    let all_settled = Arc::new(Notify::new());
    let interval = Duration::from_secs_f64(1.0 / a.connect_rate.max(1e-9));
    let start = Instant::now() + Duration::from_millis(50);
    let mut handles = Vec::with_capacity(a.connections);
    for (i, tok) in tokens.into_iter().enumerate() {
        let at = start + interval.mul_f64(i as f64);
        if at > Instant::now() {
            tokio::time::sleep_until(at.into()).await;
        }
        let room = rooms[i % rooms.len()].clone();
        let addr = target.addr;
        let (sh, stop_rx, settled, all_settled) = (
            sh.clone(),
            stop_rx.clone(),
            settled.clone(),
            all_settled.clone(),
        );
        let n = a.connections as u64;
        handles.push(tokio::spawn(async move {
            let began = Instant::now();
            let result = setup(addr, tok, room).await;
            let done = Instant::now();
            if settled.fetch_add(1, Ordering::Relaxed) + 1 == n {
                all_settled.notify_one();
            }
            match result {
                Ok((ws, last_seq)) => {
                    let st = Recv {
                        last_seq,
                        ..Recv::default()
                    };
                    let recv = read_whole(ws, st, sh, stop_rx).await;
                    IdleConn {
                        latency: Ok((done - began, done.saturating_duration_since(at))),
                        recv: Some(recv),
                    }
                }
                Err(e) => IdleConn {
                    latency: Err(e.to_string()),
                    recv: None,
                },
            }
        }));
    }
    let open_time = start.elapsed();
    let wait = Duration::from_secs(60);
    if tokio::time::timeout(wait, all_settled.notified())
        .await
        .is_err()
        && settled.load(Ordering::Relaxed) < a.connections as u64
    {
        println!(
            "only {} of {} connections settled within {} after the last attempt",
            settled.load(Ordering::Relaxed),
            a.connections,
            fmt_dur(wait)
        );
    }
    let all_in = start.elapsed();
    tokio::time::sleep(Duration::from_secs_f64(a.settle)).await;
    let held1 = target.sample();
    tokio::time::sleep(Duration::from_secs_f64(a.hold)).await;
    let held2 = target.sample();
    let _ = stop_tx.send(true);

    let mut m = Merged::default();
    let mut lat = Vec::new();
    let mut sched = Vec::new();
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    for h in handles {
        let c = h.await.expect("idle connection task");
        match c.latency {
            Ok((l, s)) => {
                lat.push(l.as_nanos() as u64);
                sched.push(s.as_nanos() as u64);
            }
            Err(e) => *failures.entry(e).or_insert(0) += 1,
        }
        if let Some(r) = c.recv {
            m.add(r);
        }
    }
    let ok = lat.len();
    let l = Summary::of(&mut lat);
    let s = Summary::of(&mut sched);
    println!(
        "{} connections into {} rooms at {:.0}/s (attempts took {}; all settled after {}): {} joined, {} failed {:?}",
        a.connections,
        rooms.len(),
        a.connect_rate,
        fmt_dur(open_time),
        fmt_dur(all_in),
        ok,
        a.connections - ok,
        failures
    );
    println!(
        "connect+upgrade+auth+join latency: p50 {} | p99 {} | p99.9 {} | max {}  (from the scheduled start: p99 {}, max {})",
        fmt_ns(l.p50),
        fmt_ns(l.p99),
        fmt_ns(l.p999),
        fmt_ns(l.max),
        fmt_ns(s.p99),
        fmt_ns(s.max)
    );
    println!(
        "while held: unexpected closes {} {:?}, frames received {} (USER_JOINED etc.)",
        m.unexpected_closes(),
        m.closes,
        m.other_frames
    );
    let mut figures = Figures::default();
    if let (Some(b), Some(h1), Some(h2)) = (base, held1, held2) {
        let per =
            |h: &ProcSample| (h.rss_kib as f64 - b.rss_kib as f64) * 1024.0 / ok.max(1) as f64;
        println!(
            "server RSS: {} before, {} held (+{:.0} B per connection), {} after {:.0} s more (+{:.0} B per connection); peak {}; threads {}",
            mib(b.rss_kib),
            mib(h1.rss_kib),
            per(&h1),
            mib(h2.rss_kib),
            a.hold,
            per(&h2),
            mib(h2.hwm_kib),
            h2.threads
        );
        println!(
            "server CPU for the whole connect phase: {} ({} per connection)",
            fmt_dur(h1.cpu_fine().saturating_sub(b.cpu_fine())),
            fmt_ns(
                (h1.cpu_fine().saturating_sub(b.cpu_fine()).as_nanos() / ok.max(1) as u128) as u64
            )
        );
        figures.rss_per_conn_bytes = Some(per(&h2));
    }
    Ok(figures)
}

// ----- burst ----------------------------------------------------------------

async fn burst(target: &Target, t: &TargetArgs, a: &BurstArgs) -> Result<Figures, String> {
    if a.members == 0 || a.messages == 0 {
        return Err("--members and --messages must be positive".into());
    }
    let sh = Shared::new();
    let secret = secret(t);
    let room = "lg-burst".to_owned();
    create_rooms(target.addr, &secret, std::slice::from_ref(&room))
        .await
        .map_err(|e| format!("creating the room: {e}"))?;
    let mut conns = Vec::with_capacity(a.members);
    for i in 0..a.members {
        let c = setup(target.addr, token(&secret, &format!("lg{i}")), room.clone())
            .await
            .map_err(|e| format!("connection {i}: {e}"))?;
        conns.push(c);
    }
    // Every member joined before the burst, so they share the last seq.
    let base_seq = conns.iter().map(|c| c.1).max().unwrap_or(0);
    let (stop_tx, stop_rx) = watch::channel(false);
    sh.done_target.store(a.members as u64, Ordering::Relaxed);
    sh.window_start.store(0, Ordering::Relaxed);
    let mut readers = Vec::with_capacity(a.members);
    let mut sender_tx = None;
    for (i, (ws, last_seq)) in conns.into_iter().enumerate() {
        let st = Recv {
            last_seq,
            target_seq: base_seq + a.messages as u64,
            ..Recv::default()
        };
        if i == 0 {
            let (rx, mut tx) = ws.split(|s| {
                let (r, w) = s.into_split();
                (r, BufWriter::with_capacity(64 * 1024, w))
            });
            tx.set_writev(false);
            sender_tx = Some(tx);
            readers.push(tokio::spawn(read_half(rx, st, sh.clone(), stop_rx.clone())));
        } else {
            readers.push(tokio::spawn(read_whole(
                ws,
                st,
                sh.clone(),
                stop_rx.clone(),
            )));
        }
    }
    let mut tx = sender_tx.expect("member 0 sends");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let cpu0 = target.sample();
    let self0 = procstat::self_cpu();
    let first = Instant::now();
    let mut buf = Vec::with_capacity(t.msg_bytes + 64);
    let mut send_error = None;
    for n in 0..a.messages {
        let sent_ns = sh.now_ns();
        wire::send_message(&mut buf, &room, sent_ns, 0, n as u64, t.msg_bytes);
        let mut r = tx
            .write_frame(Frame::text(Payload::BorrowedMut(&mut buf)))
            .await;
        if r.is_ok() && n % 64 == 63 {
            r = tx.flush().await;
        }
        if let Err(e) = r {
            send_error = Some(e.to_string());
            break;
        }
    }
    if send_error.is_none()
        && let Err(e) = tx.flush().await
    {
        send_error = Some(e.to_string());
    }
    let written = first.elapsed();
    let timeout = Duration::from_secs_f64(a.timeout);
    let finished = tokio::time::timeout(timeout, async {
        while sh.done.load(Ordering::Relaxed) < a.members as u64 {
            sh.progress.notified().await;
        }
    })
    .await
    .is_ok();
    let wall = first.elapsed();
    let cpu1 = target.sample();
    let self_cpu = procstat::self_cpu().saturating_sub(self0);
    let _ = stop_tx.send(true);
    let mut m = Merged::default();
    let mut last_done = first;
    let mut incomplete = 0;
    for r in readers {
        let r = r.await.expect("reader task");
        match r.completed {
            Some(at) => last_done = last_done.max(at),
            None => incomplete += 1,
        }
        m.add(r);
    }
    drop(tx);
    let expected = (a.members * a.messages) as u64;
    let delivered = sh.window_delivered.load(Ordering::Relaxed);
    let burst_time = last_done - first;
    println!(
        "{} members, one sender writing {} messages of {} bytes back to back (written in {})",
        a.members,
        a.messages,
        t.msg_bytes,
        fmt_dur(written)
    );
    if let Some(e) = &send_error {
        println!("send error: {e}");
    }
    println!(
        "every member had every message after {}{}: {delivered} of {expected} deliveries (ratio {:.6}); \
         {:.0} deliveries/s, {:.0} messages/s",
        fmt_dur(burst_time),
        if finished {
            String::new()
        } else {
            format!(
                " (NOT FINISHED within {}: {incomplete} members incomplete)",
                fmt_dur(timeout)
            )
        },
        delivered as f64 / expected as f64,
        delivered as f64 / burst_time.as_secs_f64(),
        a.messages as f64 / burst_time.as_secs_f64()
    );
    report_latency(&mut m);
    let mut figures = Figures::default();
    if let (Some(c0), Some(c1)) = (cpu0, cpu1) {
        println!("{}", cpu_line("server", &c0, &c1, wall));
        let per =
            c1.cpu_fine().saturating_sub(c0.cpu_fine()).as_nanos() as f64 / delivered.max(1) as f64;
        figures.cpu_per_delivery_ns = Some(per);
        println!(
            "server CPU per delivery: {} | server RSS {} (peak {})",
            fmt_ns(per as u64),
            mib(c1.rss_kib),
            mib(c1.hwm_kib)
        );
    }
    println!(
        "loadgen: CPU {:.1}% of one core",
        100.0 * self_cpu.as_secs_f64() / wall.as_secs_f64()
    );
    Ok(figures)
}
