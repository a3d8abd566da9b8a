//! The wire contract (`PROTOCOL.md`) rule by rule, against the sans-IO core.
//!
//! [`TestHub`](harness::TestHub) drives a [`Hub`](crate::core::Hub) on a
//! virtual clock the way the production server does: it numbers connections,
//! ticks the hub whenever time passes a deadline, decodes every frame the hub
//! emits (each must be a valid `{"type","payload"}` envelope that
//! [`ServerFrame::decode`](crate::protocol::server::ServerFrame::decode)
//! understands) into per-connection inboxes, and records closes. It refuses any frame addressed
//! to a connection that was already closed or disconnected.
//!
//! Each test asserts exact outcomes: codes, payload fields, `requestId` echo,
//! who receives what, and who receives nothing.
//!
//! The harness is in `harness`; the tests are grouped by topic, one file each.

pub(super) mod harness;

mod auth;
mod determinism;
mod envelope;
mod expiry;
mod history;
mod messages;
mod rate_limits;
mod refresh;
mod room_lifetime;
mod rooms;
mod seam;
mod typing;
