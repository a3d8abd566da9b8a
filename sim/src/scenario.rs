//! A scenario, generated from one `u64` seed: the server's limits, the
//! network, the clients and their schedules, the faults.
//!
//! Swarm testing: each seed switches a random subset of action and fault
//! kinds on ([`Features`]), so that some seeds hammer one edge while others
//! mix everything.
//!
//! It is one file, longer than most, because every draw a seed makes is
//! here, in order: whether a change leaves the other seeds' scenarios as
//! they were is read top to bottom.

use std::collections::BTreeSet;
use std::fmt;

use chat_flow::config::{Config, DEFAULT_ROOM_IDLE_TTL_MS};

use crate::rng::SimRng;

/// Unix seconds at which every simulation starts (turmoil's epoch; the
/// wall clock never leaks in).
pub const EPOCH_UNIX_S: u64 = 1_700_000_000;

/// The limits and timeouts of the server and the network, kept small so that
/// the edges are hit often.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Knobs {
    /// `HISTORY_LIMIT`.
    pub history_limit: usize,
    /// `TYPING_TIMEOUT_MS`.
    pub typing_timeout_ms: u64,
    /// `PRESENCE_DELAY_MS`.
    pub presence_delay_ms: u64,
    /// `PING_INTERVAL_MS`.
    pub ping_interval_ms: u64,
    /// `IDLE_TIMEOUT_MS`.
    pub idle_timeout_ms: u64,
    /// `AUTH_TIMEOUT_MS`.
    pub auth_timeout_ms: u64,
    /// `OUTBOUND_QUEUE_LIMIT`.
    pub outbound_queue_limit: usize,
    /// `OUTBOUND_QUEUE_BYTES`.
    pub outbound_queue_bytes: usize,
    /// `WRITE_TIMEOUT_MS`.
    pub write_timeout_ms: u64,
    /// `OUTBOUND_MEMORY_MAX_BYTES`.
    pub outbound_memory_max_bytes: usize,
    /// `RATE_LIMIT_MESSAGES`.
    pub rate_limit_messages: u32,
    /// `RATE_LIMIT_WINDOW_MS`.
    pub rate_limit_window_ms: u64,
    /// `RATE_LIMIT_REQUESTS`.
    pub rate_limit_requests: u32,
    /// `RATE_LIMIT_DISCONNECT_AFTER`.
    pub rate_limit_disconnect_after: u32,
    /// `JWT_LEEWAY_SECONDS`.
    pub jwt_leeway_seconds: u64,
    /// `ROOM_IDLE_TTL_MS`.
    pub room_idle_ttl_ms: u64,
    /// Smallest one-way network latency.
    pub min_latency_ms: u64,
    /// Largest one-way network latency (outside latency faults).
    pub max_latency_ms: u64,
    /// Segments a simulated TCP stream holds before the writer waits.
    pub tcp_capacity: usize,
}

impl Knobs {
    /// The server's configuration.
    pub fn config(&self, rooms: &[String]) -> Config {
        Config {
            port: crate::tap::SERVER.1,
            history_limit: self.history_limit,
            typing_timeout_ms: self.typing_timeout_ms,
            presence_delay_ms: self.presence_delay_ms,
            ping_interval_ms: self.ping_interval_ms,
            idle_timeout_ms: self.idle_timeout_ms,
            auth_timeout_ms: self.auth_timeout_ms,
            outbound_queue_limit: self.outbound_queue_limit,
            outbound_queue_bytes: self.outbound_queue_bytes,
            write_timeout_ms: self.write_timeout_ms,
            outbound_memory_max_bytes: self.outbound_memory_max_bytes,
            rate_limit_messages: self.rate_limit_messages,
            rate_limit_window_ms: self.rate_limit_window_ms,
            rate_limit_requests: self.rate_limit_requests,
            rate_limit_disconnect_after: self.rate_limit_disconnect_after,
            jwt_leeway_seconds: self.jwt_leeway_seconds,
            room_idle_ttl_ms: self.room_idle_ttl_ms,
            default_rooms: rooms
                .iter()
                .map(|r| (r.clone(), format!("Room {r}")))
                .collect(),
            ..Config::default()
        }
    }
}

/// Which kinds of actions and faults this seed uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Features {
    /// Leaving and re-joining rooms.
    pub churn: bool,
    /// Typing indicators.
    pub typing: bool,
    /// `GET_HISTORY` reads.
    pub history: bool,
    /// Bursts of sends beyond the rate limit.
    pub bursts: bool,
    /// Tokens that expire mid-scenario.
    pub expiry: bool,
    /// Token refresh before expiry (with `expiry`).
    pub refresh: bool,
    /// Abrupt connection drops by the client.
    pub drops: bool,
    /// Library clients that stop draining their events for a while.
    pub stalls: bool,
    /// Raw clients that stop reading their socket (slow consumers, 1013).
    pub slow_readers: bool,
    /// Raw clients that never authenticate.
    pub lurkers: bool,
    /// Network partitions between a client and the server.
    pub partitions: bool,
    /// Latency spikes on a client's link.
    pub latency: bool,
    /// Links that hold traffic for a while, then deliver it.
    pub holds: bool,
    /// Server crashes and restarts.
    pub restarts: bool,
    /// Users with several connections.
    pub multi_device: bool,
    /// Rooms created by their owners (raw clients whose tokens grant the
    /// ids), which library clients join on their tokens' `rooms` claims and
    /// which are deleted after a short `ROOM_IDLE_TTL_MS` without members.
    pub owned_rooms: bool,
    /// Claims that lose a private room mid-run (with `owned_rooms`); a
    /// refresh then takes the client out of it.
    pub narrowing: bool,
}

impl Features {
    /// Every flag with its name.
    pub fn list(&self) -> [(&'static str, bool); 17] {
        [
            ("churn", self.churn),
            ("typing", self.typing),
            ("history", self.history),
            ("bursts", self.bursts),
            ("expiry", self.expiry),
            ("refresh", self.refresh),
            ("drops", self.drops),
            ("stalls", self.stalls),
            ("slow_readers", self.slow_readers),
            ("lurkers", self.lurkers),
            ("partitions", self.partitions),
            ("latency", self.latency),
            ("holds", self.holds),
            ("restarts", self.restarts),
            ("multi_device", self.multi_device),
            ("owned_rooms", self.owned_rooms),
            ("narrowing", self.narrowing),
        ]
    }
}

impl fmt::Display for Features {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let on: Vec<&str> = self
            .list()
            .iter()
            .filter(|(_, on)| *on)
            .map(|(n, _)| *n)
            .collect();
        write!(f, "{}", on.join(","))
    }
}

/// What a library client is told to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `Command::Join`.
    Join(String),
    /// `Command::Leave`.
    Leave(String),
    /// `count` sends in a row (more than the bucket holds: a burst).
    Send {
        /// The room.
        room: String,
        /// How many.
        count: u32,
    },
    /// `Command::Typing`.
    Typing {
        /// The room.
        room: String,
        /// Typing or not.
        on: bool,
    },
    /// `Command::History`.
    History {
        /// The room.
        room: String,
        /// `beforeSeq`.
        before_seq: Option<u64>,
        /// `limit`.
        limit: Option<u32>,
    },
    /// `Command::RefreshToken`.
    Refresh,
    /// `Command::Drop`.
    Drop,
    /// Stop draining events for this long.
    Stall {
        /// How long.
        ms: u64,
    },
}

/// One library client (a device of a user).
#[derive(Debug, Clone)]
pub struct ClientSpec {
    /// The user (token `sub`).
    pub user: String,
    /// The client's own seed (`ClientOptions::seed`).
    pub seed: u64,
    /// Lifetime of the tokens it gets during the action phase.
    pub token_ttl_s: u64,
    /// `ClientOptions::backoff_base_ms`.
    pub backoff_base_ms: u64,
    /// `ClientOptions::backoff_max_ms`.
    pub backoff_max_ms: u64,
    /// `ClientOptions::idle_timeout_ms`.
    pub idle_timeout_ms: u64,
    /// What to do when, in time order.
    pub actions: Vec<(u64, Action)>,
    /// The rooms it means to be in once its actions are done (a room the
    /// server refuses it or takes away is forgiven: see the liveness oracle).
    pub final_rooms: BTreeSet<String>,
    /// The `rooms` claim of the tokens it gets: from each time on (ms), the
    /// claim listed, in time order; none when empty.
    pub claims: Vec<(u64, Vec<String>)>,
}

impl ClientSpec {
    /// The `rooms` claim of a token minted at `now_ms`.
    pub fn claim_at(&self, now_ms: u64) -> &[String] {
        self.claims
            .iter()
            .rev()
            .find(|(from, _)| *from <= now_ms)
            .map_or(&[], |(_, rooms)| rooms.as_slice())
    }
}

/// A hand-written WebSocket client that misbehaves on purpose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawSpec {
    /// Authenticates, joins, asks for history again and again, and stops
    /// reading for a while: a slow consumer.
    SlowReader {
        /// The user.
        user: String,
        /// Its room.
        room: String,
        /// When it connects.
        start_ms: u64,
        /// How long after joining it stops reading.
        stall_after_ms: u64,
        /// For how long.
        stall_ms: u64,
    },
    /// Connects and never authenticates.
    Lurker {
        /// When it connects.
        start_ms: u64,
    },
    /// Creates its rooms (ids its token grants), tries to create one its
    /// token does not grant (a squat: `FORBIDDEN`), says something in each,
    /// and goes; on each visit again (re-creating what was deleted).
    Owner {
        /// The user.
        user: String,
        /// Its token's `rooms` claim.
        claim: Vec<String>,
        /// Its rooms: `(id, private)`.
        rooms: Vec<(String, bool)>,
        /// An id its claim does not list.
        squat: String,
        /// `(start, stay)` of each visit, in ms.
        visits: Vec<(u64, u64)>,
    },
}

/// A fault, injected by the simulation's driver between steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Cut the link between a client site and the server (segments on it
    /// are lost; a stream that lost one stalls for good).
    Partition(String),
    /// Heal it.
    Repair(String),
    /// Hold the link's traffic.
    Hold(String),
    /// Deliver what was held.
    Release(String),
    /// Raise the link's largest latency.
    Latency(String, u64),
    /// Back to the normal latency.
    LatencyRestore(String),
    /// Crash the server, or node `n` of a cluster (all its state lost; a
    /// cluster's shared state is the store's).
    Crash(usize),
    /// Start it again.
    Restart(usize),
    /// Cut node `n` of a cluster from the store (its calls time out, its
    /// events are lost).
    StoreCut(usize),
    /// Heal it.
    StoreHeal(usize),
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Partition(h) => write!(f, "partition {h}"),
            Fault::Repair(h) => write!(f, "repair {h}"),
            Fault::Hold(h) => write!(f, "hold {h}"),
            Fault::Release(h) => write!(f, "release {h}"),
            Fault::Latency(h, ms) => write!(f, "latency {h} {ms}ms"),
            Fault::LatencyRestore(h) => write!(f, "latency-restore {h}"),
            Fault::Crash(n) => write!(f, "crash {}", crate::tap::node_host(*n)),
            Fault::Restart(n) => write!(f, "restart {}", crate::tap::node_host(*n)),
            Fault::StoreCut(n) => write!(f, "cut {} from the store", crate::tap::node_host(*n)),
            Fault::StoreHeal(n) => write!(f, "heal {} to the store", crate::tap::node_host(*n)),
        }
    }
}

/// Everything one seed does.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The seed.
    pub seed: u64,
    /// What is switched on.
    pub features: Features,
    /// Limits.
    pub knobs: Knobs,
    /// The rooms (all `DEFAULT_ROOMS`).
    pub rooms: Vec<String>,
    /// Rooms owners create: `(id, private)`.
    pub owned_rooms: Vec<(String, bool)>,
    /// Library clients; client `i` runs on host [`Scenario::host`].
    pub clients: Vec<ClientSpec>,
    /// Raw clients; raw `j` is client `clients.len() + j` on host `x{j}`.
    pub raws: Vec<RawSpec>,
    /// Faults in time order.
    pub faults: Vec<(u64, Fault)>,
    /// Actions and faults stop here; the liveness phase begins.
    pub quiet_ms: u64,
    /// The run ends here (every client stops).
    pub end_ms: u64,
    /// Largest extra delay a fault can add to a delivery (latency spike or
    /// hold), for the oracles' timing slack.
    pub fault_delay_max_ms: u64,
    /// Library client `i` runs on host `h{i % client_hosts}`.
    pub client_hosts: usize,
    /// Nodes of the service: 1, the one server; 2–4, a cluster on the
    /// simulated store (`store_host`), node `n` on host
    /// [`node_host`](crate::tap::node_host)`(n)`.
    pub nodes: usize,
}

/// Whether seeds are run as clusters: 2–4 nodes of the production server
/// on the simulated store (`SIM_CLUSTER` set in the environment, which the
/// sweep's worker processes inherit).
pub fn cluster_requested() -> bool {
    std::env::var_os("SIM_CLUSTER").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Time after the quiet point for every client to reconnect, re-authenticate
/// and catch up.
pub const SETTLE_MS: u64 = 20_000;

impl Scenario {
    /// The scenario of `seed`.
    pub fn generate(seed: u64) -> Scenario {
        let mut r = SimRng::stream(seed, 1);
        // A cluster (with `SIM_CLUSTER` set) from a stream of its own, so
        // that every other draw stays as it was.
        let mut cr = SimRng::stream(seed, 12);
        let nodes = if cluster_requested() {
            cr.range(2, 4) as usize
        } else {
            1
        };
        let features = Features {
            churn: r.chance(50),
            typing: r.chance(60),
            history: r.chance(50),
            bursts: r.chance(50),
            expiry: r.chance(50),
            refresh: r.chance(50),
            drops: r.chance(50),
            stalls: r.chance(30),
            slow_readers: r.chance(40),
            lurkers: r.chance(30),
            partitions: r.chance(50),
            latency: r.chance(40),
            holds: r.chance(30),
            restarts: r.chance(40),
            multi_device: r.chance(50),
            owned_rooms: false,
            narrowing: false,
        };
        // Owned rooms are drawn from streams of their own, so that every
        // draw above and below (and so every seed's other choices) stays as
        // it was.
        let mut vr = SimRng::stream(seed, 5);
        let mut features = features;
        features.owned_rooms = vr.chance(50);
        features.narrowing = features.owned_rooms && vr.chance(60);
        let window = r.range(2_000, 5_000);
        let ping = r.range(800, 2_000);
        // The outbound bounds from a stream of their own (as the presence
        // delay), so that every other draw stays as it was: queues small
        // enough in bytes that a stalled reader's history replies reach
        // the bound, a write timeout shorter than the longest stalls and
        // link holds, and a server-wide cap a few queues wide.
        let mut outbound = SimRng::stream(seed, 11);
        let outbound_queue_bytes = outbound.range(8 * 1024, 256 * 1024) as usize;
        let write_timeout_ms = outbound.range(1_000, 8_000);
        // Two to four queues: one stalled reader filling its queue leaves
        // the others room, two or more push the server past the cap. (At
        // one queue wide, one stalled reader alone is the whole cap and
        // every reply anyone gets closes somebody: a reconnect storm that
        // never settles, a setting no operator would choose.)
        let outbound_memory_max_bytes = outbound_queue_bytes * outbound.range(2, 4) as usize;
        let knobs = Knobs {
            history_limit: r.range(5, 20) as usize,
            typing_timeout_ms: r.range(1_000, 3_000),
            // From a stream of its own, so that the draws above and below
            // (and so every other seed's scenario) stay as they were.
            presence_delay_ms: {
                let mut pr = SimRng::stream(seed, 4);
                if pr.chance(50) { 0 } else { pr.range(10, 300) }
            },
            ping_interval_ms: ping,
            idle_timeout_ms: ping * r.range(2, 3) + r.range(0, 500),
            auth_timeout_ms: r.range(1_000, 3_000),
            outbound_queue_limit: r.range(8, 64) as usize,
            outbound_queue_bytes,
            write_timeout_ms,
            outbound_memory_max_bytes,
            rate_limit_messages: r.range(3, 10) as u32,
            rate_limit_window_ms: window,
            rate_limit_requests: r.range(15, 50) as u32,
            rate_limit_disconnect_after: r.range(5, 20) as u32,
            jwt_leeway_seconds: r.range(0, 2),
            room_idle_ttl_ms: DEFAULT_ROOM_IDLE_TTL_MS,
            min_latency_ms: r.range(0, 2),
            max_latency_ms: r.range(5, 60),
            tcp_capacity: r.range(8, 64) as usize,
        };
        let all_rooms = ["general", "r1", "r2", "r3"];
        let rooms: Vec<String> = all_rooms[..r.range(2, 4) as usize]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let n_clients = if r.chance(10) {
            r.range(13, 50)
        } else {
            r.range(2, 12)
        } as usize;
        let quiet_ms = if n_clients > 20 {
            r.range(12_000, 18_000)
        } else {
            r.range(15_000, 28_000)
        };
        let n_users = if features.multi_device {
            (n_clients * r.range(40, 90) as usize / 100).max(1)
        } else {
            n_clients
        };

        let mut knobs = knobs;
        let (owned_rooms, owners) = if features.owned_rooms {
            knobs.room_idle_ttl_ms = vr.range(500, 3_000);
            gen_owners(&mut vr, quiet_ms)
        } else {
            (Vec::new(), Vec::new())
        };
        let first_visit = owners
            .iter()
            .filter_map(|o| match o {
                RawSpec::Owner { visits, .. } => visits.first().map(|v| v.0),
                _ => None,
            })
            .min()
            .unwrap_or(0);

        let mut clients = Vec::with_capacity(n_clients);
        for i in 0..n_clients {
            let mut cr = SimRng::stream(seed, 100 + i as u64);
            let user = format!("u{}", i % n_users);
            let mut client = gen_client(
                &mut cr, user, &features, &knobs, &rooms, n_clients, quiet_ms,
            );
            if features.owned_rooms {
                let mut or = SimRng::stream(seed, 5_000 + i as u64);
                add_owned_room_actions(
                    &mut or,
                    &mut client,
                    &owned_rooms,
                    features.narrowing,
                    first_visit,
                    quiet_ms,
                );
            }
            clients.push(client);
        }

        thin_sends(&mut clients, &knobs, quiet_ms);

        let mut raws = Vec::new();
        let mut rr = SimRng::stream(seed, 2);
        if features.slow_readers {
            for j in 0..rr.range(1, 2) {
                raws.push(RawSpec::SlowReader {
                    user: format!("slow{j}"),
                    room: rr.pick(&rooms).clone(),
                    start_ms: rr.range(500, quiet_ms / 2),
                    stall_after_ms: rr.range(200, 2_000),
                    stall_ms: rr.range(2_000, 7_000),
                });
            }
        }
        if features.lurkers {
            raws.push(RawSpec::Lurker {
                start_ms: rr.range(0, quiet_ms.saturating_sub(knobs.auth_timeout_ms + 1_000)),
            });
        }
        raws.extend(owners);

        let mut fr = SimRng::stream(seed, 3);
        let mut faults = Vec::new();
        // Clients share a few network hosts ("sites"): turmoil's cost grows
        // with the number of hosts, and a fault on a site hits every
        // client there, as a real network outage would.
        let client_hosts = n_clients.min(fr.range(3, 8) as usize);
        let mut busy: Vec<Vec<(u64, u64)>> = vec![Vec::new(); client_hosts];
        let mut fault_delay_max_ms = 0;
        let window_for = |fr: &mut SimRng, busy: &mut Vec<Vec<(u64, u64)>>, max_ms: u64| {
            // A free window on some client's link, ending before the quiet point.
            for _ in 0..8 {
                let c = fr.index(client_hosts);
                let start = fr.range(1_000, quiet_ms.saturating_sub(1_500).max(1_001));
                let end = (start + fr.range(100, max_ms)).min(quiet_ms - 200);
                if end > start && busy[c].iter().all(|&(s, e)| end < s || start > e) {
                    busy[c].push((start, end));
                    return Some((format!("h{c}"), start, end));
                }
            }
            None
        };
        if features.partitions {
            for _ in 0..fr.range(1, 4) {
                if let Some((h, s, e)) = window_for(&mut fr, &mut busy, 6_000) {
                    faults.push((s, Fault::Partition(h.clone())));
                    faults.push((e, Fault::Repair(h)));
                }
            }
        }
        if features.holds {
            for _ in 0..fr.range(1, 3) {
                if let Some((h, s, e)) = window_for(&mut fr, &mut busy, 2_000) {
                    fault_delay_max_ms = fault_delay_max_ms.max(e - s);
                    faults.push((s, Fault::Hold(h.clone())));
                    faults.push((e, Fault::Release(h)));
                }
            }
        }
        if features.latency {
            for _ in 0..fr.range(1, 3) {
                let ms = fr.range(100, 800);
                if let Some((h, s, e)) = window_for(&mut fr, &mut busy, 5_000) {
                    fault_delay_max_ms = fault_delay_max_ms.max(ms);
                    faults.push((s, Fault::Latency(h.clone(), ms)));
                    faults.push((e, Fault::LatencyRestore(h)));
                }
            }
        }
        if features.restarts {
            let mut t = 2_000;
            for _ in 0..fr.range(1, 2) {
                let latest = quiet_ms.saturating_sub(3_500);
                if t >= latest {
                    break;
                }
                let crash = fr.range(t, latest);
                let restart = crash + fr.range(0, 3_000);
                let node = if nodes > 1 {
                    cr.range(0, nodes as u64 - 1) as usize
                } else {
                    0
                };
                faults.push((crash, Fault::Crash(node)));
                faults.push((restart, Fault::Restart(node)));
                t = restart + 1_000;
            }
        }
        if nodes > 1 {
            // Nodes cut from the store: their calls time out, their events
            // of the time are lost and read back.
            for _ in 0..cr.range(0, 2) {
                let latest = quiet_ms.saturating_sub(3_000);
                if latest <= 1_500 {
                    break;
                }
                let cut = cr.range(1_500, latest);
                let node = cr.range(0, nodes as u64 - 1) as usize;
                faults.push((cut, Fault::StoreCut(node)));
                faults.push((cut + cr.range(200, 2_500), Fault::StoreHeal(node)));
            }
        }
        faults.sort_by_key(|(t, _)| *t);
        // turmoil panics when more connection attempts wait for `accept`
        // than a socket holds (a real kernel would drop the SYN); every
        // client has at most one attempt in flight.
        knobs.tcp_capacity = knobs
            .tcp_capacity
            .max(n_clients + raws.len() + 2 + 2 * nodes);

        Scenario {
            seed,
            features,
            knobs,
            rooms,
            owned_rooms,
            clients,
            raws,
            faults,
            quiet_ms,
            end_ms: quiet_ms + SETTLE_MS,
            fault_delay_max_ms,
            client_hosts,
            nodes,
        }
    }

    /// The host name of client `i` (library or raw).
    pub fn host(&self, client: usize) -> String {
        if client < self.clients.len() {
            format!("h{}", client % self.client_hosts)
        } else {
            format!("x{}", client - self.clients.len())
        }
    }

    /// One line describing the scenario.
    pub fn summary(&self) -> String {
        format!(
            "seed {} clients {} raws {} rooms {} quiet {}ms end {}ms features [{}] knobs {:?}",
            self.seed,
            self.clients.len(),
            self.raws.len(),
            self.rooms.len(),
            self.quiet_ms,
            self.end_ms,
            self.features,
            self.knobs
        )
    }
}

fn gen_client(
    r: &mut SimRng,
    user: String,
    features: &Features,
    knobs: &Knobs,
    rooms: &[String],
    n_clients: usize,
    quiet_ms: u64,
) -> ClientSpec {
    let token_ttl_s = if features.expiry {
        r.range(3, 10)
    } else {
        3_600
    };
    let refresh = features.expiry && features.refresh && r.chance(70);
    let mut actions = Vec::new();
    let mut joined: BTreeSet<String> = BTreeSet::new();
    let mut t = r.range(0, 1_000);
    // Start in some rooms.
    for room in rooms {
        if joined.is_empty() || r.chance(50) {
            actions.push((t, Action::Join(room.clone())));
            joined.insert(room.clone());
            t += r.range(0, 50);
        }
    }
    let gap_scale = (n_clients as u64).div_ceil(6).max(1);
    let last = quiet_ms.saturating_sub(500);
    let burst_max = u64::from(knobs.rate_limit_messages) * 2;
    loop {
        t += r.range(100, 1_200) * gap_scale;
        if t >= last {
            break;
        }
        let roll = r.range(0, 99);
        let in_room = |r: &mut SimRng, joined: &BTreeSet<String>| {
            let v: Vec<&String> = joined.iter().collect();
            (!v.is_empty()).then(|| (*r.pick(&v)).clone())
        };
        let action = match roll {
            0..=44 => in_room(r, &joined).map(|room| Action::Send { room, count: 1 }),
            45..=49 if features.bursts => in_room(r, &joined).map(|room| Action::Send {
                room,
                count: r.range(u64::from(knobs.rate_limit_messages) + 1, burst_max) as u32,
            }),
            50..=64 if features.typing => in_room(r, &joined).map(|room| Action::Typing {
                room,
                on: r.chance(75),
            }),
            65..=74 if features.churn => {
                let out: Vec<&String> = rooms.iter().filter(|x| !joined.contains(*x)).collect();
                if !joined.is_empty() && (out.is_empty() || r.chance(50)) {
                    let room = in_room(r, &joined).expect("non-empty");
                    joined.remove(&room);
                    Some(Action::Leave(room))
                } else if !out.is_empty() {
                    let room = (*r.pick(&out)).clone();
                    joined.insert(room.clone());
                    Some(Action::Join(room))
                } else {
                    None
                }
            }
            75..=82 if features.history => in_room(r, &joined).map(|room| Action::History {
                room,
                before_seq: r.chance(30).then(|| r.range(1, 40)),
                limit: r.chance(50).then(|| r.range(1, 30) as u32),
            }),
            83..=86 if features.drops => Some(Action::Drop),
            87..=88 if features.stalls => {
                let ms = r.range(500, 4_000).min(last - t);
                Some(Action::Stall { ms })
            }
            _ => None,
        };
        if let Some(a) = action {
            actions.push((t, a));
        }
    }
    if refresh {
        // Refresh at about half the lifetime, before the server's deadline.
        let every = token_ttl_s * 1_000 / 2;
        let mut at = every;
        while at < last {
            actions.push((at + r.range(0, 200), Action::Refresh));
            at += every;
        }
        actions.sort_by_key(|(t, _)| *t);
    }
    let idle_timeout_ms = r.range(knobs.ping_interval_ms * 2, knobs.ping_interval_ms * 3);
    ClientSpec {
        user,
        seed: r.next_u64(),
        token_ttl_s,
        backoff_base_ms: r.range(20, 200),
        backoff_max_ms: r.range(500, 2_000),
        idle_timeout_ms,
        actions,
        final_rooms: joined,
        claims: Vec::new(),
    }
}

/// The owned rooms (`p1`, `p2` private, `o1` public) and 1–2 owners who
/// share them out, each visiting up to 5 times before the quiet point.
fn gen_owners(r: &mut SimRng, quiet_ms: u64) -> (Vec<(String, bool)>, Vec<RawSpec>) {
    let owned: Vec<(String, bool)> = [("p1", true), ("p2", true), ("o1", false)]
        .iter()
        .map(|(id, private)| ((*id).to_owned(), *private))
        .collect();
    let n = r.range(1, 2) as usize;
    let mut owners = Vec::with_capacity(n);
    for j in 0..n {
        let rooms: Vec<(String, bool)> = owned
            .iter()
            .enumerate()
            .filter(|(k, _)| k % n == j)
            .map(|(_, room)| room.clone())
            .collect();
        let claim: Vec<String> = rooms.iter().map(|(id, _)| id.clone()).collect();
        // Someone else's room, or one nobody's token grants.
        let squat = owned
            .iter()
            .map(|(id, _)| id.clone())
            .find(|id| !claim.contains(id))
            .unwrap_or_else(|| "p-squat".to_owned());
        let mut visits = Vec::new();
        let mut start = r.range(300, 3_000);
        while visits.len() < 5 && start + 1_000 < quiet_ms {
            let stay = r.range(1_000, 5_000).min(quiet_ms - start);
            visits.push((start, stay));
            start += stay + r.range(300, 6_000);
        }
        owners.push(RawSpec::Owner {
            user: format!("own{j}"),
            claim,
            rooms,
            squat,
            visits,
        });
    }
    (owned, owners)
}

/// A client's share of the owned rooms: a `rooms` claim granting some of
/// the private ones (losing one mid-run when `narrowing`, with a refresh
/// soon after), and joins, sends and leaves in the owned rooms once the
/// owners have started creating them. Joins of rooms its claim does not
/// grant, or that do not exist (yet, or any more), are refused: the client
/// forgets them.
fn add_owned_room_actions(
    r: &mut SimRng,
    spec: &mut ClientSpec,
    owned: &[(String, bool)],
    narrowing: bool,
    first_visit: u64,
    quiet_ms: u64,
) {
    let last = quiet_ms.saturating_sub(500);
    let claim: Vec<String> = owned
        .iter()
        .filter(|(_, private)| *private)
        .filter(|_| r.chance(70))
        .map(|(id, _)| id.clone())
        .collect();
    spec.claims.push((0, claim.clone()));
    // Rooms it joins and stays in, with when it joined.
    let mut stays: Vec<(String, u64)> = Vec::new();
    let earliest = first_visit + 200;
    for (room, _) in owned {
        if earliest + 2_000 >= last || !r.chance(60) {
            continue;
        }
        let join = r.range(earliest, last - 2_000);
        spec.actions.push((join, Action::Join(room.clone())));
        spec.final_rooms.insert(room.clone());
        for _ in 0..r.range(1, 2) {
            let at = r.range(join + 50, last);
            spec.actions.push((
                at,
                Action::Send {
                    room: room.clone(),
                    count: 1,
                },
            ));
        }
        if r.chance(30) {
            let at = r.range(join + 100, last);
            spec.actions.push((at, Action::Leave(room.clone())));
            spec.final_rooms.remove(room);
        } else {
            stays.push((room.clone(), join));
        }
    }
    // Narrowing: a claimed room it is in is lost a while after it joined
    // it, and a refresh soon after takes it out.
    let lost: Vec<&(String, u64)> = stays.iter().filter(|(id, _)| claim.contains(id)).collect();
    if narrowing && !lost.is_empty() && r.chance(70) {
        let (room, joined) = (*r.pick(&lost)).clone();
        if joined + 1_000 < last {
            let at = r.range(joined + 1_000, last);
            let narrower: Vec<String> = claim.iter().filter(|id| **id != room).cloned().collect();
            spec.claims.push((at, narrower));
            let refresh_at = at + r.range(50, 1_500);
            if refresh_at < last {
                spec.actions.push((refresh_at, Action::Refresh));
            }
        }
    }
    spec.actions.sort_by_key(|(t, _)| *t);
}

/// Keeps each user's sends within what its bucket can pass by the middle of
/// the liveness phase (a well-paced client then drains any backlog in
/// time); the latest sends go first. Bursts still exceed the instantaneous
/// limit.
fn thin_sends(clients: &mut [ClientSpec], knobs: &Knobs, quiet_ms: u64) {
    let c = u64::from(knobs.rate_limit_messages);
    let budget = c * (quiet_ms + SETTLE_MS / 2) / knobs.rate_limit_window_ms;
    let users: BTreeSet<String> = clients.iter().map(|c| c.user.clone()).collect();
    for user in users {
        // (time, client, action index, count), latest first.
        let mut sends: Vec<(u64, usize, usize, u64)> = Vec::new();
        for (ci, spec) in clients.iter().enumerate().filter(|(_, s)| s.user == user) {
            for (ai, (t, a)) in spec.actions.iter().enumerate() {
                if let Action::Send { count, .. } = a {
                    sends.push((*t, ci, ai, u64::from(*count)));
                }
            }
        }
        sends.sort_by(|a, b| b.cmp(a));
        let mut total: u64 = sends.iter().map(|s| s.3).sum();
        let mut drop: BTreeSet<(usize, usize)> = BTreeSet::new();
        for (_, ci, ai, n) in sends {
            if total <= budget {
                break;
            }
            total -= n;
            drop.insert((ci, ai));
        }
        for (ci, spec) in clients.iter_mut().enumerate() {
            let mut ai = 0;
            spec.actions.retain(|_| {
                let keep = !drop.contains(&(ci, ai));
                ai += 1;
                keep
            });
        }
    }
}
