//! The chat glue: what the connection layer ([`conn`]) hands a chat
//! connection's messages to. Each text message is parsed with simd-json
//! (scratch space per worker thread), a token is verified here, in the
//! connection's task, so that the driver never does crypto, and the result
//! goes to the driver as a [`Command::Inbound`].
//!
//! Also the mapping from the configuration to what the core takes.

use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use fastwebsockets::WebSocket;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::conn::{self, Handler, ReadLimits};
use super::driver::Command;
use super::message_reader::DataKind;
use super::metrics::ReasonLabel;
use super::outbox::writer::WriteTimers;
use super::outbox::{Outbox, QueueLimits, QueuedBytes};
use super::shared::Shared;
use crate::config::Config;
use crate::core::{ConnId, DefaultRoom, Inbound, Limits};
use crate::protocol::parse::ParseLimits;
use crate::protocol::{CloseCode, Parser};

thread_local! {
    /// simd-json scratch space, reused by every connection served on this
    /// worker thread.
    static PARSER: RefCell<Parser> = RefCell::new(Parser::new(ParseLimits::default()));
}

/// Serves one upgraded chat connection until it is closed.
pub(crate) fn serve<S>(
    ws: WebSocket<S>,
    conn: ConnId,
    shared: Arc<Shared>,
) -> impl Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let live = shared.live.load();
    let limits = QueueLimits {
        frames: live.config.outbound_queue_limit,
        bytes: live.config.outbound_queue_bytes,
    };
    let total = QueuedBytes::new(shared.metrics.outbound_queued_bytes.clone());
    let outbox = Arc::new(Outbox::new(limits, total));
    let timers = WriteTimers {
        ping_interval: Duration::from_millis(live.config.ping_interval_ms),
        write_timeout: Duration::from_millis(live.config.write_timeout_ms),
    };
    drop(live);
    // The socket is split now, before any future holds it, and the
    // connection's future is built inside the task, once: a future captured
    // by this block and then awaited would be held twice for the
    // connection's whole life.
    let read_half = conn::split(ws, &outbox);
    async move {
        let connect = Command::Connect {
            conn,
            outbox: outbox.clone(),
        };
        if shared.send(connect).await.is_err() {
            return;
        }
        info!("connected");
        let handler = ChatHandler {
            conn,
            shared: shared.clone(),
            outbox: outbox.clone(),
        };
        let cause = conn::serve_split(read_half, outbox, timers, handler).await;
        shared
            .metrics
            .connection_closes
            .get_or_create(&ReasonLabel {
                reason: cause.as_str(),
            })
            .inc();
        // Idempotent: the core may already have forgotten the connection.
        let _ = shared.send(Command::Disconnect { conn }).await;
    }
}

/// Parses each message, verifies tokens, and hands the result to the driver.
struct ChatHandler {
    conn: ConnId,
    shared: Arc<Shared>,
    outbox: Arc<Outbox>,
}

impl Handler for ChatHandler {
    fn limits(&self) -> ReadLimits {
        let config = &self.shared.live.load().config;
        ReadLimits {
            max_message_bytes: config.max_message_bytes,
            idle_timeout: Duration::from_millis(config.idle_timeout_ms),
        }
    }

    async fn message(
        &mut self,
        kind: DataKind,
        payload: &mut [u8],
        received: Instant,
    ) -> Result<(), (CloseCode, &'static str)> {
        if self.outbox.is_closing() {
            // The server is closing this connection: nothing more counts.
            return Ok(());
        }
        let shared = &self.shared;
        shared.metrics.messages_received.inc();
        let inbound = match kind {
            DataKind::Binary => Inbound::Binary,
            DataKind::Text => {
                let live = shared.live.load();
                let limits = ParseLimits {
                    content_chars_max: live.config.max_content_length,
                };
                let parsed = PARSER.with_borrow_mut(|p| {
                    if p.limits() != limits {
                        *p = Parser::new(limits);
                    }
                    p.parse(payload)
                });
                match parsed {
                    Err(e) => Inbound::Invalid(e),
                    Ok(message) => {
                        debug!(request = message.request.type_name(), "request");
                        let now = shared.clock.now();
                        Inbound::from_message(message, |token| {
                            let verified = live.verifier.verify(token, now.0);
                            match &verified {
                                Ok(t) => {
                                    tracing::Span::current().record("user", t.user_id.as_str());
                                }
                                Err(e) => warn!(error = %e, "authentication failed"),
                            }
                            verified
                        })
                    }
                }
            }
        };
        let command = Command::Inbound {
            conn: self.conn,
            inbound,
            received,
        };
        shared
            .send(command)
            .await
            .map_err(|()| (CloseCode::Internal, "server error"))
    }

    async fn reading_ended(&mut self) {
        let _ = self
            .shared
            .send(Command::Disconnect { conn: self.conn })
            .await;
    }
}

/// The core's limits from the configuration.
pub fn core_limits(config: &Config) -> Limits {
    Limits {
        auth_timeout_ms: config.auth_timeout_ms,
        auth_failures_max: crate::core::AUTH_FAILURES_MAX,
        history_limit: config.history_limit,
        typing_timeout_ms: config.typing_timeout_ms,
        rate_limit_messages: u64::from(config.rate_limit_messages),
        rate_limit_requests: u64::from(config.rate_limit_requests),
        rate_limit_window_ms: config.rate_limit_window_ms,
        rate_limit_disconnect_after: config.rate_limit_disconnect_after,
        rooms_per_user_max: u32::try_from(config.rooms_per_user_max).unwrap_or(u32::MAX),
        max_rooms: config.max_rooms,
        room_idle_ttl_ms: config.room_idle_ttl_ms,
    }
}

/// `DEFAULT_ROOMS` for the core.
pub fn default_rooms(config: &Config) -> Vec<DefaultRoom> {
    config
        .default_rooms
        .iter()
        .map(|(id, name)| DefaultRoom {
            id: id.clone(),
            name: name.clone(),
        })
        .collect()
}
