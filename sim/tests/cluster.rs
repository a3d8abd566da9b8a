//! Two nodes of the production server on the simulated store host, over
//! turmoil's network: a client on each node, messages from both, then the
//! store's link to one node cut (its events lost meanwhile), and one node
//! crashed with its client moving to the other. Every message reaches both
//! clients exactly once, in one `seq` order, every send is acknowledged,
//! and the run replays exactly from its seed.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chat_flow::auth::{TokenSpec, mint_hs256};
use chat_flow::client::{self, ClientOptions, Connector, Event};
use chat_flow::config::{Config, DEV_JWT_SECRET};
use chat_flow::server::RuntimeEnv;
use sim::run::serve_node;
use sim::store_host::{self, STORE};

const NODES: [&str; 2] = ["node0", "node1"];
const PORT: u16 = 3001;
const EPOCH_S: u64 = 1_790_000_000;

/// Connects to `nodes[attempt % len]`: a client whose node is gone tries
/// the next one.
struct Nodes {
    nodes: Vec<&'static str>,
    attempt: usize,
}

impl Connector for Nodes {
    type Io = turmoil::net::TcpStream;

    async fn connect(&mut self) -> io::Result<Self::Io> {
        let node = self.nodes[self.attempt % self.nodes.len()];
        self.attempt += 1;
        turmoil::net::TcpStream::connect((node, PORT)).await
    }
}

fn config() -> Config {
    Config {
        host: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        port: sim::tap::SERVER.1,
        presence_delay_ms: 0,
        node_ttl_ms: 1_500,
        redis_timeout_ms: 300,
        rate_limit_messages: 1_000,
        ..Config::default()
    }
}

/// What one client saw: `(seq, content)` of every message, and the seqs
/// of its acknowledged sends.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Seen {
    messages: Vec<(u64, String)>,
    acked: Vec<u64>,
}

fn run(seed: u64) -> (Seen, Seen) {
    store_host::reset();
    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_secs(60))
        .epoch(std::time::UNIX_EPOCH + Duration::from_secs(EPOCH_S))
        .rng_seed(seed)
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(5))
        .build();
    sim.host(STORE.0, store_host::serve);
    for (n, node) in NODES.iter().enumerate() {
        let runs = Arc::new(Mutex::new(0u64));
        sim.host(*node, move || {
            let runs = runs.clone();
            async move {
                let run = {
                    let mut r = runs.lock().expect("runs");
                    *r += 1;
                    *r
                };
                let env = RuntimeEnv {
                    start_unix_ms: turmoil::since_epoch()
                        .map_or(EPOCH_S * 1000, |d| d.as_millis() as u64),
                    instance: (n as u64 + 1) << 32 | run,
                    secret: seed ^ (n as u64) ^ run,
                    http_date_header: false,
                };
                serve_node(config(), env, true).await
            }
        });
    }
    let seen: [Arc<Mutex<Seen>>; 2] = Default::default();
    for (c, (user, nodes)) in [("alice", vec!["node0"]), ("bob", vec!["node1", "node0"])]
        .into_iter()
        .enumerate()
    {
        let seen = seen[c].clone();
        sim.client(format!("client-{user}"), async move {
            let tokens = move || {
                let now_s = turmoil::since_epoch().map_or(EPOCH_S, |d| d.as_secs());
                mint_hs256(
                    DEV_JWT_SECRET.as_bytes(),
                    &TokenSpec::new(user, now_s, 3_600),
                )
                .expect("a token")
            };
            let options = ClientOptions {
                seed: seed ^ c as u64,
                backoff_base_ms: 50,
                backoff_max_ms: 500,
                idle_timeout_ms: 3_000,
                ..ClientOptions::new(format!("{}:{PORT}", nodes[0]))
            };
            let (handle, mut events, _task) =
                client::spawn(Nodes { nodes, attempt: 0 }, tokens, options);
            // Both nodes need a moment to reach the store.
            tokio::time::sleep(Duration::from_millis(500)).await;
            handle.join("general").await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let sender = handle.clone();
            let sends = tokio::task::spawn_local(async move {
                for i in 0..40 {
                    sender.send("general", &format!("{user}-{i}")).await;
                    tokio::time::sleep(Duration::from_millis(150)).await;
                }
            });
            let until = tokio::time::Instant::now() + Duration::from_secs(25);
            loop {
                let event = tokio::select! {
                    e = events.recv() => e,
                    () = tokio::time::sleep_until(until) => break,
                };
                let Some(event) = event else { break };
                let mut s = seen.lock().expect("seen");
                match event {
                    Event::Message(m) => s.messages.push((m.seq, m.content)),
                    Event::Acked { seq, .. } => s.acked.push(seq),
                    _ => {}
                }
            }
            sends.await?;
            Ok(())
        });
    }
    // Let both join and talk, then cut node0 from the store (its events
    // are lost; its sends fail and are retried), heal, then crash node1
    // (bob moves to node0).
    fn step(sim: &mut turmoil::Sim<'_>, ms: u64) {
        while sim.elapsed() < Duration::from_millis(ms) {
            sim.step().expect("the simulation runs");
        }
    }
    step(&mut sim, 3_000);
    sim.partition(NODES[0], STORE.0);
    step(&mut sim, 4_500);
    sim.repair(NODES[0], STORE.0);
    step(&mut sim, 7_000);
    sim.crash(NODES[1]);
    step(&mut sim, 9_000);
    sim.bounce(NODES[1]);
    sim.run().expect("the simulation ends");
    let a = seen[0].lock().expect("seen").clone();
    let b = seen[1].lock().expect("seen").clone();
    (a, b)
}

#[test]
fn two_nodes_on_the_simulated_store_deliver_every_message_once_in_one_order() {
    let (alice, bob) = run(7);
    for (name, seen) in [("alice", &alice), ("bob", &bob)] {
        let seqs: Vec<u64> = seen.messages.iter().map(|(s, _)| *s).collect();
        eprintln!(
            "{name}: {} messages {:?}, acked {:?}",
            seqs.len(),
            seqs,
            seen.acked
        );
    }
    let every: Vec<u64> = (1..=80).collect();
    for (name, seen) in [("alice", &alice), ("bob", &bob)] {
        let seqs: Vec<u64> = seen.messages.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, every, "{name}: every seq once, in order");
        assert_eq!(seen.acked.len(), 40, "{name}'s sends all acknowledged");
    }
    // In seq order as delivered.
    for seen in [&alice, &bob] {
        assert!(
            seen.messages.windows(2).all(|w| w[0].0 < w[1].0),
            "{seen:?}"
        );
    }
    // One order: the same seq is the same message for both.
    for (seq, content) in &alice.messages {
        if let Some((_, other)) = bob.messages.iter().find(|(s, _)| s == seq) {
            assert_eq!(content, other, "seq {seq}");
        }
    }
}

#[test]
fn the_cluster_run_replays_from_its_seed() {
    assert_eq!(run(11), run(11));
}
