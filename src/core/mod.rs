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
//!    driver (1013) and reported with [`Hub::disconnect`];
//! 4. executes each [`Output::Store`] against the store, in order, and
//!    hands its reply back with [`Hub::store_reply`]; hands every event the
//!    store publishes about a room it was told to [`Output::Subscribe`] to
//!    with [`Hub::store_event`]. `crate::store::local::Local` does this
//!    with an in-process store, within the same call.
//!
//! What the whole service shares (rooms, history, `seq`, retries, the
//! per-user send bucket, presence) is the store's; the hub keeps its own
//! connections and, for the rooms they are in, a replica of who is present
//! and typing, and how far messages were delivered. `crate::store` says
//! how the two meet.
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
//! (charging a message to a rate limit, then starting the request),
//! `replies` (the store's replies and events: finishing requests, and
//! delivering each room's messages in `seq` order), `authenticate`,
//! `membership` (rooms joined and left, connections forgotten) and `emit`
//! (the outputs). `session`, `room` and `pending` hold the state those act
//! on; `bucket` and `sorted_set` are the data structures underneath.

mod authenticate;
mod bucket;
mod emit;
mod hub;
mod inbound;
mod limits;
mod membership;
mod output;
mod pending;
mod replies;
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
pub use requests::{STORE_RETRY_AFTER_MS, WAITING_MAX};
pub use stats::{Gauges, Stats};
pub use types::{ConnId, Instance, OpId, RoomId, Timestamp, UserId};

#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;
