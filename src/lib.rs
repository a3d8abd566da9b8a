//! Chat Flow: a chat WebSocket server whose room logic is a deterministic,
//! sans-IO state machine ([`core`]) driven by a production shell ([`server`]).

pub mod auth;
pub mod checktoken;
pub mod cli;
pub mod client;
pub mod config;
pub mod core;
pub mod frame;
pub mod healthcheck;
pub mod protocol;
pub mod rng;
pub mod server;
pub mod store;
