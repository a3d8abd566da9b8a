//! The sans-IO core: every decision of the wire contract, as a deterministic
//! state machine.
//!
//! The core never opens a socket, never spawns a task, never reads a clock
//! and never draws a random number. Time is a value passed into every call;
//! ids come from counters and an `instance` number chosen by the caller;
//! every map is ordered (`BTreeMap`), so the same inputs give the same
//! outputs, byte for byte. That is what lets the production server, the
//! deterministic simulation and the fuzzers all run this same code.
//!
//! # Run loop
//!
//! The driver (the production server or the simulation) owns a [`Hub`] and:
//!
//! 1. calls [`Hub::connect`] when a WebSocket connection is established,
//!    [`Hub::handle`] for every message received on it (in order), and
//!    [`Hub::disconnect`] when it is gone;
//! 2. calls [`Hub::tick`] when [`Hub::next_deadline`] has passed (auth
//!    timeouts, token expiry, typing timeouts, idle rooms);
//! 3. after each call, drains [`Hub::poll_output`] until it returns `None`,
//!    queuing each [`Output::Frame`] to its connection and acting on each
//!    [`Output::Close`]. A connection whose queue is full is closed by the
//!    driver (1013) and reported with [`Hub::disconnect`].
//!
//! `now` must never go backwards between calls. Every call first fires the
//! timers due at its `now`, so an input never overtakes a deadline that has
//! passed (a message sent at the instant a token expires is not accepted,
//! however late the driver gets round to [`Hub::tick`]).
//!
//! # Files
//!
//! The values a driver exchanges with the core are in `types`, `inbound`,
//! `output`, `limits` and `stats`; the [`Hub`] and the calls a driver makes
//! are in `hub`. The hub's behaviour is split by concern: `requests`
//! (charging a message to a rate limit, then answering it), `authenticate`,
//! `membership` (rooms joined and left, connections forgotten) and `emit`
//! (the outputs). `session` and `room` hold the state those act on;
//! `bucket`, `log` and `sorted_set` are the data structures underneath.

mod authenticate;
mod bucket;
mod emit;
mod hub;
mod inbound;
mod limits;
pub mod log;
mod membership;
mod output;
mod requests;
mod room;
mod session;
mod sorted_set;
mod stats;
mod types;

pub use bucket::{Bucket, BucketLimit};
pub use hub::Hub;
pub use inbound::{AuthOutcome, Inbound};
pub use limits::{AUTH_FAILURES_MAX, DefaultRoom, Limits};
pub use output::Output;
pub use stats::{Gauges, Stats};
pub use types::{ConnId, Instance, RoomId, Timestamp, UserId};

#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;
