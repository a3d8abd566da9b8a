//! The attack suite: every case plays a known attack against a real server
//! and asserts (1) the exact outcome the contract (or, where it is silent,
//! the server) defines — HTTP status, close code, `ERROR` code — and (2) that
//! nobody else noticed: each case runs in an [`Arena`](harness::Arena) with
//! two bystanders, authenticated and joined to `general`, who still exchange
//! a message both ways after the attack
//! ([`Arena::assert_bystanders_fine`](harness::Arena::assert_bystanders_fine)).
//!
//! Bystanders are strict: the next frame each of them reads must be the
//! other's message, so a case whose attack is visible in the room (presence,
//! typing, flooded messages) asserts exactly what the bystanders saw first.
//!
//! No assertion is about speed: timeouts only detect hangs.
//!
//! One file per topic (`http`, `addresses`, `tokens`, `frames`, `json`,
//! `floods`, `slow_readers`, `memory`, `rooms`); the arena and the helpers
//! they share are in `harness`.

#[path = "../common/mod.rs"]
mod common;
mod harness;

mod addresses;
mod floods;
mod frames;
mod http;
mod json;
mod memory;
mod rooms;
mod slow_readers;
mod tokens;
