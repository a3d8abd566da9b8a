//! One seed, end to end: build the turmoil world, run the real server and
//! the clients on it, inject the faults, collect the observations.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use chat_flow::auth::{TokenSpec, mint_hs256};
use chat_flow::client::{self, ClientOptions, Command};
use chat_flow::config::{Config, DEV_JWT_SECRET};
use chat_flow::protocol::MessageKind;
use chat_flow::server::{self, Listener, RuntimeEnv};
use tokio::time::Instant;

use crate::obs::{Obs, Record, Recorder};
use crate::raw::{self, RawCtx, sleep_until_ms};
use crate::rng::{SimRng, mix};
use crate::scenario::{Action, ClientSpec, EPOCH_UNIX_S, Fault, Scenario};
use crate::store_host::STORE;
use crate::tap::{ConnCounter, SERVER, TapConnector, node_host};

/// The server's listener over turmoil's TCP: the only thing swapped out of
/// the production server.
struct SimListener(turmoil::net::TcpListener);

impl Listener for SimListener {
    type Io = turmoil::net::TcpStream;

    async fn accept(&mut self) -> std::io::Result<(Self::Io, SocketAddr)> {
        self.0.accept().await
    }
}

/// One node on this host (`SERVER.1`): the production `server::run_node`,
/// alone or (`cluster`) on the simulated store; until the host crashes.
pub async fn serve_node(config: Config, env: RuntimeEnv, cluster: bool) -> turmoil::Result {
    let listener =
        turmoil::net::TcpListener::bind((IpAddr::V4(Ipv4Addr::UNSPECIFIED), SERVER.1)).await?;
    let store =
        cluster.then(|| crate::store_host::backend(Duration::from_millis(config.redis_timeout_ms)));
    let (_keep_open, reloads) = tokio::sync::mpsc::channel(1);
    server::run_node(
        SimListener(listener),
        config,
        env,
        std::future::pending(),
        reloads,
        store,
    )
    .await?;
    Ok(())
}

/// What a run produced.
#[derive(Debug)]
pub struct RunOutput {
    /// Every observation, in order.
    pub records: Vec<Record>,
    /// turmoil's error, if a host failed (a host's software returned an
    /// error or panicked) or the run did not finish.
    pub sim_error: Option<String>,
    /// Panics caught anywhere in the run (spawned tasks included).
    pub panics: Vec<String>,
    /// Simulated milliseconds covered.
    pub sim_ms: u64,
}

thread_local! {
    /// Panics of the run on this thread, when one is being captured.
    static PANICS: RefCell<Option<Vec<String>>> = const { RefCell::new(None) };
}

/// Installs (once) a panic hook that captures panics on threads running a
/// simulation; elsewhere the default hook runs.
fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let captured = PANICS
                .try_with(|p| match p.try_borrow_mut() {
                    Ok(mut p) => match p.as_mut() {
                        Some(v) => {
                            v.push(info.to_string());
                            true
                        }
                        None => false,
                    },
                    Err(_) => false,
                })
                .unwrap_or(false);
            if !captured {
                default(info);
            }
        }));
    });
}

/// A token for `user`, issued now (simulated), valid for `ttl_s`.
pub fn mint_now(user: &str, ttl_s: u64) -> String {
    mint_claiming(user, ttl_s, &[])
}

/// A token for `user`, issued now (simulated), valid for `ttl_s`, whose
/// `rooms` claim lists `rooms`.
pub fn mint_claiming(user: &str, ttl_s: u64, rooms: &[String]) -> String {
    let now_s = turmoil::since_epoch().map_or(EPOCH_UNIX_S, |d| d.as_secs());
    let spec = TokenSpec {
        rooms,
        ..TokenSpec::new(user, now_s, ttl_s)
    };
    mint_hs256(DEV_JWT_SECRET.as_bytes(), &spec).expect("a valid token spec")
}

/// `NODE_TTL_MS` of a simulated cluster: a crashed node's users leave
/// within it (well inside the settle time).
pub const CLUSTER_NODE_TTL_MS: u64 = 1_500;
/// `REDIS_TIMEOUT_MS` of a simulated cluster.
pub const CLUSTER_STORE_TIMEOUT_MS: u64 = 300;

/// Runs `scenario` and returns what was observed.
pub fn simulate(scenario: &Scenario) -> RunOutput {
    install_panic_hook();
    PANICS.with(|p| *p.borrow_mut() = Some(Vec::new()));
    let rec = Recorder::new();
    let conns = ConnCounter::default();
    let k = &scenario.knobs;
    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_millis(scenario.end_ms + 10_000))
        .epoch(std::time::UNIX_EPOCH + Duration::from_secs(EPOCH_UNIX_S))
        .rng_seed(scenario.seed)
        .min_message_latency(Duration::from_millis(k.min_latency_ms))
        .max_message_latency(Duration::from_millis(k.max_latency_ms))
        .tcp_capacity(k.tcp_capacity)
        .build();

    // The server: the production `server::run`, restarted with a new
    // instance number (hence new room epochs) after every crash. A cluster:
    // the simulated store on its own host (its start is the run's
    // `ServerStart`: the service's state lives there), and each node the
    // production `server::run_node` on it, restarted after a crash as a new
    // node of the same service.
    crate::store_host::reset();
    let cluster = scenario.nodes > 1;
    if cluster {
        let rec = rec.clone();
        let seed = scenario.seed;
        sim.host(STORE.0, move || {
            rec.push(Obs::ServerStart {
                run: 0,
                instance: mix(seed, 0x5702e) >> 16,
            });
            crate::store_host::serve()
        });
    }
    for node in 0..scenario.nodes {
        let runs = Rc::new(Cell::new(0u32));
        let rec = rec.clone();
        let mut config = k.config(&scenario.rooms);
        if cluster {
            config.node_ttl_ms = CLUSTER_NODE_TTL_MS;
            config.redis_timeout_ms = CLUSTER_STORE_TIMEOUT_MS;
        }
        let seed = scenario.seed;
        sim.host(node_host(node), move || {
            let run = runs.get();
            runs.set(run + 1);
            let rec = rec.clone();
            let config = config.clone();
            async move {
                let instance = if cluster {
                    mix(seed ^ (node as u64 + 1) << 40, u64::from(run) + 1) >> 16
                } else {
                    mix(seed, u64::from(run) + 1) >> 16
                };
                let start_unix_ms =
                    turmoil::since_epoch().map_or(EPOCH_UNIX_S * 1000, |d| d.as_millis() as u64);
                if cluster {
                    rec.push(Obs::NodeStart {
                        node: node as u32,
                        run,
                        instance,
                    });
                } else {
                    rec.push(Obs::ServerStart { run, instance });
                }
                let env = RuntimeEnv {
                    start_unix_ms,
                    instance,
                    secret: mix(seed ^ 0x5ec2e7 ^ (node as u64) << 32, u64::from(run) + 1),
                    http_date_header: false,
                };
                serve_node(config, env, cluster).await
            }
        });
    }

    // Every client's future, grouped by the host it runs on (in client
    // order, so that the spawn order is the same on every run).
    type Actor = Pin<Box<dyn Future<Output = turmoil::Result>>>;
    let mut hosts: BTreeMap<String, Vec<Actor>> = BTreeMap::new();
    for (i, spec) in scenario.clients.iter().enumerate() {
        let actor = client_actor(
            i as u32,
            spec.clone(),
            rec.clone(),
            conns.clone(),
            scenario.nodes,
            scenario.quiet_ms,
            scenario.end_ms,
        );
        hosts
            .entry(scenario.host(i))
            .or_default()
            .push(Box::pin(actor));
    }
    for (j, spec) in scenario.raws.iter().enumerate() {
        let id = scenario.clients.len() + j;
        let ctx = RawCtx {
            client: id as u32,
            spec: spec.clone(),
            rec: rec.clone(),
            conns: conns.clone(),
            mint: mint_claiming,
            rng: SimRng::stream(scenario.seed, 10_000 + j as u64),
            end_ms: scenario.end_ms,
        };
        hosts
            .entry(scenario.host(id))
            .or_default()
            .push(Box::pin(raw::run(ctx)));
    }
    for (host, actors) in hosts {
        sim.client(host, async move {
            let handles: Vec<_> = actors.into_iter().map(tokio::task::spawn_local).collect();
            for h in handles {
                h.await??;
            }
            Ok(())
        });
    }

    crate::watchdog::begin(scenario.seed, &rec);
    let mut sim_error = None;
    let mut next_fault = 0;
    let progress = std::env::var_os("SIM_PROGRESS").is_some();
    let wall = std::time::Instant::now();
    loop {
        let now_ms = sim.elapsed().as_millis() as u64;
        if progress && now_ms.is_multiple_of(1000) {
            eprintln!(
                "seed {} at {now_ms} ms simulated, {:.2?} wall, {} records",
                scenario.seed,
                wall.elapsed(),
                rec.len()
            );
        }
        while let Some((at, fault)) = scenario.faults.get(next_fault) {
            if *at > now_ms {
                break;
            }
            apply_fault(&mut sim, fault, k.max_latency_ms, scenario.nodes);
            rec.push_at(
                now_ms,
                Obs::Fault {
                    what: fault.to_string(),
                },
            );
            next_fault += 1;
        }
        // A panic outside the hosts' tasks (in turmoil itself) unwinds
        // through `step`; it ends the run as a failure of this seed.
        let stepped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sim.step()));
        crate::watchdog::step(now_ms);
        match stepped {
            Ok(Ok(true)) => break,
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                sim_error = Some(e.to_string());
                break;
            }
            Err(_) => {
                let last = PANICS.with(|p| p.borrow().as_ref().and_then(|v| v.last().cloned()));
                sim_error = Some(format!(
                    "the simulation panicked: {}",
                    last.unwrap_or_else(|| "(no message)".into())
                ));
                break;
            }
        }
    }
    crate::watchdog::end();
    let sim_ms = sim.elapsed().as_millis() as u64;
    let records = rec.take();
    let panics = PANICS.with(|p| p.borrow_mut().take()).unwrap_or_default();
    // Tear the world down (drops after the run are not part of it; a
    // world that panicked may panic again on the way down).
    PANICS.with(|p| *p.borrow_mut() = Some(Vec::new()));
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(sim)));
    PANICS.with(|p| *p.borrow_mut() = None);
    RunOutput {
        records,
        sim_error,
        panics,
        sim_ms,
    }
}

fn apply_fault(sim: &mut turmoil::Sim<'_>, fault: &Fault, base_latency_ms: u64, nodes: usize) {
    // A client site's link faults are its links to every node.
    for node in 0..nodes {
        let server = node_host(node);
        let server = server.as_str();
        match fault {
            Fault::Partition(h) => sim.partition(h.as_str(), server),
            Fault::Repair(h) => sim.repair(h.as_str(), server),
            Fault::Hold(h) => sim.hold(h.as_str(), server),
            Fault::Release(h) => sim.release(h.as_str(), server),
            Fault::Latency(h, ms) => {
                sim.set_link_max_message_latency(h.as_str(), server, Duration::from_millis(*ms))
            }
            Fault::LatencyRestore(h) => sim.set_link_max_message_latency(
                h.as_str(),
                server,
                Duration::from_millis(base_latency_ms),
            ),
            Fault::Crash(_) | Fault::Restart(_) | Fault::StoreCut(_) | Fault::StoreHeal(_) => {}
        }
    }
    match fault {
        Fault::Crash(n) => sim.crash(node_host(*n)),
        Fault::Restart(n) => sim.bounce(node_host(*n)),
        Fault::StoreCut(n) => sim.partition(node_host(*n), STORE.0),
        Fault::StoreHeal(n) => sim.repair(node_host(*n), STORE.0),
        _ => {}
    }
}

/// A library client driven by its schedule: it issues the commands on time,
/// records every event it drains, and stops draining while stalled.
#[allow(clippy::too_many_arguments)]
async fn client_actor(
    id: u32,
    spec: ClientSpec,
    rec: Recorder,
    conns: ConnCounter,
    nodes: usize,
    quiet_ms: u64,
    end_ms: u64,
) -> turmoil::Result {
    let connector = TapConnector {
        client: id,
        rec: rec.clone(),
        conns,
        nodes,
        attempts: 0,
    };
    let user = spec.user.clone();
    let ttl_s = spec.token_ttl_s;
    // After the quiet point tokens are long-lived: expiries are faults too.
    let quiet_unix_s = EPOCH_UNIX_S + quiet_ms / 1000;
    let claims = spec.clone();
    let tokens = move || {
        let now_s = turmoil::since_epoch().map_or(EPOCH_UNIX_S, |d| d.as_secs());
        let now_ms = turmoil::sim_elapsed().map_or(0, |d| d.as_millis() as u64);
        let ttl = if now_s >= quiet_unix_s { 3_600 } else { ttl_s };
        mint_claiming(&user, ttl, claims.claim_at(now_ms))
    };
    let options = ClientOptions {
        seed: spec.seed,
        backoff_base_ms: spec.backoff_base_ms,
        backoff_max_ms: spec.backoff_max_ms,
        idle_timeout_ms: spec.idle_timeout_ms,
        pending_max: 256,
        ..ClientOptions::new(format!("{}:{}", SERVER.0, SERVER.1))
    };
    let (handle, mut events, _task) = client::spawn(connector, tokens, options);

    let base_ms = turmoil::sim_elapsed().map_or(0, |d| d.as_millis() as u64);
    let base = Instant::now();
    let at = |ms: u64| base + Duration::from_millis(ms.saturating_sub(base_ms));
    let end = at(end_ms);
    let far = end + Duration::from_secs(3_600);
    let mut next = 0;
    let mut sent = 0u64;
    let mut stall_until: Option<Instant> = None;
    loop {
        let stalled = stall_until.is_some();
        let next_at = spec.actions.get(next).map_or(far, |(t, _)| at(*t));
        tokio::select! {
            biased;
            event = events.recv(), if !stalled => match event {
                Some(event) => rec.push(Obs::Client {
                    client: id,
                    event: Box::new(event),
                }),
                None => break,
            },
            () = tokio::time::sleep_until(stall_until.unwrap_or(far)), if stalled => {
                stall_until = None;
                rec.push(Obs::Command { client: id, what: "resume draining events".into() });
            }
            () = tokio::time::sleep_until(next_at), if next < spec.actions.len() => {
                let action = spec.actions[next].1.clone();
                next += 1;
                if let Action::Stall { ms } = action {
                    rec.push(Obs::Command { client: id, what: format!("stall {ms}ms") });
                    stall_until = Some(Instant::now() + Duration::from_millis(ms));
                    continue;
                }
                for command in commands(id, &action, &mut sent) {
                    rec.push(Obs::Command { client: id, what: describe(&command) });
                    if !handle.command(command).await {
                        break;
                    }
                }
            }
            () = tokio::time::sleep_until(end) => break,
        }
    }
    // What is already in the channel belongs to the run.
    while let Ok(event) = events.try_recv() {
        rec.push(Obs::Client {
            client: id,
            event: Box::new(event),
        });
    }
    sleep_until_ms(end_ms).await;
    Ok(())
}

/// The library commands for one action.
fn commands(id: u32, action: &Action, sent: &mut u64) -> Vec<Command> {
    match action {
        Action::Join(room) => vec![Command::Join(room.clone())],
        Action::Leave(room) => vec![Command::Leave(room.clone())],
        Action::Send { room, count } => (0..*count)
            .map(|_| {
                *sent += 1;
                Command::Send {
                    room: room.clone(),
                    content: format!("m{sent} from c{id}"),
                    kind: MessageKind::Text,
                    client_message_id: Some(format!("c{id}-{sent}")),
                }
            })
            .collect(),
        Action::Typing { room, on } => vec![Command::Typing {
            room: room.clone(),
            is_typing: *on,
        }],
        Action::History {
            room,
            before_seq,
            limit,
        } => vec![Command::History {
            room: room.clone(),
            before_seq: *before_seq,
            limit: *limit,
        }],
        Action::Refresh => vec![Command::RefreshToken],
        Action::Drop => vec![Command::Drop],
        Action::Stall { .. } => vec![],
    }
}

/// A command in words, parsed back by the liveness oracle for sends:
/// `send <room> <clientMessageId>`.
fn describe(command: &Command) -> String {
    match command {
        Command::Join(r) => format!("join {r}"),
        Command::Leave(r) => format!("leave {r}"),
        Command::Send {
            room,
            client_message_id,
            ..
        } => format!(
            "send {room} {}",
            client_message_id.as_deref().unwrap_or("-")
        ),
        Command::Typing { room, is_typing } => format!("typing {room} {is_typing}"),
        Command::History {
            room,
            before_seq,
            limit,
        } => format!("history {room} before={before_seq:?} limit={limit:?}"),
        Command::RefreshToken => "refresh-token".into(),
        Command::Drop => "drop-connection".into(),
        Command::Close => "close".into(),
    }
}
