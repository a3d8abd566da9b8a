//! A list of operations → the sans-IO core, checked by the simulation's
//! oracles.
//!
//! The input is a [`Program`] (derived `Arbitrary`): small limits and a list
//! of operations — connect, disconnect, advance time, restart the server,
//! reload the room limits, and every client request with arbitrary fields
//! (tokens with `rooms` claims among them) or as arbitrary text.
//! [`core_ops::check`] plays it through the real parser, token verifier and
//! core, records what each connection would see, and runs every oracle of
//! the simulation over the record (the same code as `sim`, not a copy).
//!
//! Invariants: the core never panics, and no oracle fails (per-room order,
//! exactly-once delivery, recovery, retries, history, rate limits, typing,
//! presence, authentication and expiry, rooms: claims, revocation, idle
//! deletion).

#![no_main]

use libfuzzer_sys::fuzz_target;
use sim::core_ops::{self, Program};

fuzz_target!(|program: Program| {
    let out = core_ops::check(&program);
    if !out.violations.is_empty() {
        let list: Vec<String> = out.violations.iter().map(ToString::to_string).collect();
        panic!("{} oracle violation(s):\n{}", out.total(), list.join("\n"));
    }
});
