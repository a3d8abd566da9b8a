//! Observations: everything that can be seen from outside the server, in
//! the order it happened, stamped with simulated time.
//!
//! The oracles ([`crate::oracles`]) read nothing else. A connection's
//! observations are what its client saw on the wire (the tap in
//! [`crate::tap`] records them as bytes cross the client's socket); the
//! library client's events and the scenario's commands and faults are
//! recorded beside them. Another driver — a fuzz target feeding the core
//! directly — can produce the same stream and reuse every checker.
//!
//! The trace is the observation stream written out one line each; its
//! FNV-1a hash is the seed's fingerprint (same seed ⇒ same hash).

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use chat_flow::client::Event;

/// A connection's number: unique within one run, in the order connections
/// were opened.
pub type ConnNo = u64;

/// One thing observed.
#[derive(Debug, Clone)]
pub enum Obs {
    /// A TCP connection to the server was established by `client` and the
    /// HTTP upgrade request is about to be written.
    Dial {
        /// The connection.
        conn: ConnNo,
        /// The simulated client (index in the scenario's roster).
        client: u32,
    },
    /// A connection attempt failed before TCP was established.
    DialFailed {
        /// The client.
        client: u32,
    },
    /// The server answered the upgrade with `101 Switching Protocols`.
    Open {
        /// The connection.
        conn: ConnNo,
    },
    /// The server refused the upgrade with this HTTP status.
    Refused {
        /// The connection.
        conn: ConnNo,
        /// The status code.
        status: u16,
    },
    /// A text message the client sent (one JSON request).
    Sent {
        /// The connection.
        conn: ConnNo,
        /// The JSON text.
        text: Arc<str>,
    },
    /// A text message the server sent (one JSON frame).
    Recv {
        /// The connection.
        conn: ConnNo,
        /// The JSON text.
        text: Arc<str>,
    },
    /// A ping or pong (for the trace only).
    Control {
        /// The connection.
        conn: ConnNo,
        /// True when the server sent it.
        from_server: bool,
        /// The WebSocket opcode (9 ping, 10 pong).
        opcode: u8,
    },
    /// Bytes that are not a valid WebSocket frame crossed the wire; nothing
    /// after them on that stream can be parsed.
    Malformed {
        /// The connection.
        conn: ConnNo,
        /// True when the server wrote them.
        from_server: bool,
        /// What is wrong with them.
        reason: &'static str,
    },
    /// The server's close frame arrived.
    CloseRecv {
        /// The connection.
        conn: ConnNo,
        /// Its close code (`None`: an empty close frame).
        code: Option<u16>,
    },
    /// The byte stream ended: end of file or reset while reading, or the
    /// client dropped its side.
    Ended {
        /// The connection.
        conn: ConnNo,
        /// How (`eof`, `error`, `dropped`).
        how: &'static str,
    },
    /// An event the library client handed to the application.
    Client {
        /// The client.
        client: u32,
        /// The event.
        event: Box<Event>,
    },
    /// A command the scenario gave a client (trace and liveness).
    Command {
        /// The client.
        client: u32,
        /// What, in words.
        what: String,
    },
    /// The server (re)started.
    ServerStart {
        /// 0 for the first start, then 1, 2, … per restart.
        run: u32,
        /// The `RuntimeEnv::instance` it was given.
        instance: u64,
    },
    /// A node of a cluster (re)started; the store host's start is the
    /// `ServerStart` of a cluster run (the service's state lives there).
    NodeStart {
        /// Which node (0 is the host `server`).
        node: u32,
        /// 0 for its first start, then 1, 2, … per restart.
        run: u32,
        /// The `RuntimeEnv::instance` it was given.
        instance: u64,
    },
    /// A fault was injected or healed.
    Fault {
        /// What, in words.
        what: String,
    },
}

/// An observation with its simulated time.
#[derive(Debug, Clone)]
pub struct Record {
    /// Milliseconds of simulated time since the simulation started.
    pub at_ms: u64,
    /// What was observed.
    pub obs: Obs,
}

/// Collects the records of one run. Shared by every simulated host (all run
/// on the thread of that seed; the lock is never contended).
#[derive(Debug, Clone, Default)]
pub struct Recorder(Arc<Mutex<Vec<Record>>>);

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Recorder {
        Recorder::default()
    }

    /// Records `obs` at the current simulated time (inside a host), or at
    /// the last recorded time when there is no host running (a connection
    /// dropped while the simulation is torn down).
    pub fn push(&self, obs: Obs) {
        let now = turmoil::sim_elapsed().map(|d| d.as_millis() as u64);
        let mut records = self.lock();
        let at_ms = now.unwrap_or_else(|| records.last().map_or(0, |r| r.at_ms));
        records.push(Record { at_ms, obs });
    }

    /// Records `obs` at `at_ms` (from the simulation's driver, between steps).
    pub fn push_at(&self, at_ms: u64, obs: Obs) {
        self.lock().push(Record { at_ms, obs });
    }

    /// Records so far.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing was recorded yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of every record so far.
    pub fn snapshot(&self) -> Vec<Record> {
        self.lock().clone()
    }

    /// Takes every record so far.
    pub fn take(&self) -> Vec<Record> {
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Record>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One trace line for `record` (no newline).
pub fn trace_line(record: &Record, out: &mut String) {
    let t = record.at_ms;
    let _ = write!(out, "{:>6}.{:03} ", t / 1000, t % 1000);
    let _ = match &record.obs {
        Obs::Dial { conn, client } => write!(out, "#{conn} c{client} DIAL"),
        Obs::DialFailed { client } => write!(out, "c{client} DIAL-FAILED"),
        Obs::Open { conn } => write!(out, "#{conn} OPEN"),
        Obs::Refused { conn, status } => write!(out, "#{conn} REFUSED {status}"),
        Obs::Sent { conn, text } => write!(out, "#{conn} > {text}"),
        Obs::Recv { conn, text } => write!(out, "#{conn} < {text}"),
        Obs::Control {
            conn,
            from_server,
            opcode,
        } => {
            let kind = if *opcode == 9 { "PING" } else { "PONG" };
            let dir = if *from_server { '<' } else { '>' };
            write!(out, "#{conn} {dir} {kind}")
        }
        Obs::Malformed {
            conn,
            from_server,
            reason,
        } => {
            let dir = if *from_server { '<' } else { '>' };
            write!(out, "#{conn} {dir} MALFORMED {reason}")
        }
        Obs::CloseRecv { conn, code } => match code {
            Some(c) => write!(out, "#{conn} < CLOSE {c}"),
            None => write!(out, "#{conn} < CLOSE"),
        },
        Obs::Ended { conn, how } => write!(out, "#{conn} END {how}"),
        Obs::Client { client, event } => write!(out, "c{client} EVENT {event:?}"),
        Obs::Command { client, what } => write!(out, "c{client} DO {what}"),
        Obs::ServerStart { run, instance } => {
            write!(out, "SERVER START run {run} instance {instance:x}")
        }
        Obs::NodeStart {
            node,
            run,
            instance,
        } => write!(out, "NODE {node} START run {run} instance {instance:x}"),
        Obs::Fault { what } => write!(out, "FAULT {what}"),
    };
}

/// The whole trace, one line per record.
pub fn trace_text(records: &[Record]) -> String {
    let mut out = String::with_capacity(records.len() * 80);
    for r in records {
        trace_line(r, &mut out);
        out.push('\n');
    }
    out
}

/// 64-bit FNV-1a.
#[derive(Debug, Clone, Copy)]
pub struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a {
    /// Mixes in `bytes`.
    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// The hash so far.
    pub fn finish(self) -> u64 {
        self.0
    }
}

/// The fingerprint of a run: FNV-1a over its trace text.
pub fn fingerprint(records: &[Record]) -> u64 {
    let mut h = Fnv1a::default();
    let mut line = String::with_capacity(256);
    for r in records {
        line.clear();
        trace_line(r, &mut line);
        line.push('\n');
        h.write(line.as_bytes());
    }
    h.finish()
}
