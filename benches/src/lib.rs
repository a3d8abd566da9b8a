//! Chat Flow's measuring side: shared pieces of the load generator
//! (`src/bin/loadgen.rs`), the cost-floor server (`src/bin/floor.rs`) and the
//! criterion micro-benchmarks (`benches/*.rs`).
//!
//! * [`alloc`]: a counting global-allocator wrapper for the benchmarks.
//! * [`procstat`]: a process's CPU time and memory from `/proc`.
//! * [`wire`]: the few frames the load generator writes, and cheap scans of
//!   the frames it receives (no JSON parsing on the delivery path).
//! * [`client`]: a WebSocket client handshake over loopback (fastwebsockets).
//! * [`stats`]: latency percentiles.
//! * [`serde_ref`]: a serde_json parser of client messages, equivalent to
//!   the production simd-json one, for comparison.

pub mod alloc;
pub mod client;
pub mod procstat;
pub mod serde_ref;
pub mod stats;
pub mod wire;
