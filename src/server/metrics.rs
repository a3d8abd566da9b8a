//! Prometheus metrics (`GET /metrics`), with prometheus-client.
//!
//! The driver publishes the core's counters (every field of [`Stats`]) and
//! gauges after each batch of work (the core itself knows nothing of
//! Prometheus); connection tasks count frames received and open sockets.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::outbox::Cause;
use crate::core::{Gauges, Stats};
use crate::protocol::{CloseCode, ErrorCode};

/// The `code` label of `chatflow_errors_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct CodeLabel {
    /// An `ERROR` code.
    pub code: &'static str,
}

/// The `code` label of `chatflow_closes_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct CloseLabel {
    /// A WebSocket close code.
    pub code: u16,
}

/// The `reason` label of `chatflow_connection_closes_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ReasonLabel {
    /// How the connection ended ([`Cause::as_str`]).
    pub reason: &'static str,
}

/// Every metric the server exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// WebSocket connections open now.
    pub connections: Gauge,
    /// Of those, authenticated.
    pub authenticated: Gauge,
    /// Rooms.
    pub rooms: Gauge,
    /// (connection, room) memberships.
    pub memberships: Gauge,
    /// WebSocket messages received from clients.
    pub messages_received: Counter,
    /// Chat messages accepted and stored.
    pub messages_accepted: Counter,
    /// `NEW_MESSAGE` frames queued to recipients.
    pub messages_delivered: Counter,
    /// `ERROR` frames sent, by code.
    pub errors: Family<CodeLabel, Counter>,
    /// Requests refused by a rate limit.
    pub rate_limited: Counter,
    /// `SEND_MESSAGE` retries answered with the original message (a client
    /// resending after a lost acknowledgement).
    pub retries_deduplicated: Counter,
    /// Messages evicted from a room's history (recovery can no longer
    /// return them).
    pub history_evictions: Counter,
    /// Connections the core closed (authentication timeout, failed
    /// authentications, token expiry, rate-limit abuse), by close code.
    pub closes: Family<CloseLabel, Counter>,
    /// Tokens of authenticated connections refreshed by a new `AUTHENTICATE`.
    pub token_refreshes: Counter,
    /// Private rooms connections were taken out of by a refresh that no
    /// longer grants them.
    pub rooms_revoked: Counter,
    /// Rooms deleted after `ROOM_IDLE_TTL_MS` without a member.
    pub rooms_deleted: Counter,
    /// Connections closed as slow consumers (1013).
    pub slow_consumers: Counter,
    /// Bytes queued to open connections and not yet accepted by their
    /// sockets: the server-wide total that `OUTBOUND_MEMORY_MAX_BYTES` caps
    /// (every outbox adds to it directly).
    pub outbound_queued_bytes: Gauge,
    /// WebSocket connections ended, by how ([`Cause`]).
    pub connection_closes: Family<ReasonLabel, Counter>,
    /// TCP connections closed on accept because the connection caps were
    /// reached by connections still in HTTP.
    pub refused_handshakes: Counter,
    /// Seconds from receiving a `SEND_MESSAGE` to its frames being queued to
    /// every member.
    pub fanout_seconds: Histogram,
    /// Seconds each Redis call took, answered or not (cluster mode only).
    pub redis_seconds: Histogram,
    /// Redis calls that failed: timed out, connection lost, or an answer
    /// that could not be read (cluster mode only).
    pub redis_errors: Counter,
    /// 1 while Redis answers (and in single-node mode), 0 while it does
    /// not: `/readyz` answers 503 then.
    pub redis_up: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("chatflow");
        let m = Metrics {
            connections: Gauge::default(),
            authenticated: Gauge::default(),
            rooms: Gauge::default(),
            memberships: Gauge::default(),
            messages_received: Counter::default(),
            messages_accepted: Counter::default(),
            messages_delivered: Counter::default(),
            errors: Family::default(),
            rate_limited: Counter::default(),
            retries_deduplicated: Counter::default(),
            history_evictions: Counter::default(),
            closes: Family::default(),
            token_refreshes: Counter::default(),
            rooms_revoked: Counter::default(),
            rooms_deleted: Counter::default(),
            slow_consumers: Counter::default(),
            outbound_queued_bytes: Gauge::default(),
            connection_closes: Family::default(),
            refused_handshakes: Counter::default(),
            fanout_seconds: Histogram::new(exponential_buckets(0.000_01, 2.5, 14)),
            redis_seconds: Histogram::new(exponential_buckets(0.000_05, 2.5, 14)),
            redis_errors: Counter::default(),
            redis_up: Gauge::default(),
            registry: Registry::default(),
        };
        let gauges = [
            ("connections", "WebSocket connections open", &m.connections),
            (
                "authenticated_connections",
                "Authenticated WebSocket connections",
                &m.authenticated,
            ),
            ("rooms", "Rooms", &m.rooms),
            (
                "room_memberships",
                "Connection-room memberships",
                &m.memberships,
            ),
            (
                "outbound_queued_bytes",
                "Bytes queued to open connections, not yet accepted by their sockets \
                 (capped by OUTBOUND_MEMORY_MAX_BYTES)",
                &m.outbound_queued_bytes,
            ),
            (
                "redis_up",
                "1 while Redis answers within REDIS_TIMEOUT_MS (always 1 without REDIS_URL), 0 while it does not",
                &m.redis_up,
            ),
        ];
        m.redis_up.set(1);
        for (name, help, gauge) in gauges {
            registry.register(name, help, gauge.clone());
        }
        let counters = [
            (
                "messages_received",
                "WebSocket messages received from clients",
                &m.messages_received,
            ),
            (
                "chat_messages_accepted",
                "Chat messages accepted and stored",
                &m.messages_accepted,
            ),
            (
                "messages_delivered",
                "NEW_MESSAGE frames queued to recipients",
                &m.messages_delivered,
            ),
            (
                "rate_limit_rejections",
                "Requests refused by a rate limit",
                &m.rate_limited,
            ),
            (
                "retries_deduplicated",
                "SEND_MESSAGE retries answered with the original message instead of storing a duplicate",
                &m.retries_deduplicated,
            ),
            (
                "history_evictions",
                "Messages evicted from a room's history",
                &m.history_evictions,
            ),
            (
                "token_refreshes",
                "Tokens of authenticated connections refreshed by a new AUTHENTICATE",
                &m.token_refreshes,
            ),
            (
                "rooms_revoked",
                "Private rooms connections were taken out of by a refreshed token that no longer grants them",
                &m.rooms_revoked,
            ),
            (
                "rooms_deleted",
                "Rooms deleted after ROOM_IDLE_TTL_MS without a member",
                &m.rooms_deleted,
            ),
            (
                "slow_consumer_closes",
                "Connections closed because their outbound queue was full (OUTBOUND_QUEUE_LIMIT or OUTBOUND_QUEUE_BYTES)",
                &m.slow_consumers,
            ),
            (
                "refused_handshakes",
                "TCP connections closed on accept: too many connections still in HTTP",
                &m.refused_handshakes,
            ),
            (
                "redis_errors",
                "Redis calls that failed: timed out, connection lost, or unreadable (cluster mode)",
                &m.redis_errors,
            ),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
        registry.register("errors", "ERROR frames sent, by code", m.errors.clone());
        registry.register(
            "connection_closes",
            "WebSocket connections ended, by reason: client, network, idle_timeout, protocol, \
             policy, slow_consumer, write_timeout, memory_cap, shutdown, server_error, lease_lost",
            m.connection_closes.clone(),
        );
        for cause in Cause::ALL {
            // Every reason is present from the start, at 0.
            let _ = m.connection_closes.get_or_create(&ReasonLabel {
                reason: cause.as_str(),
            });
        }
        registry.register(
            "closes",
            "Connections closed by the server's rules (authentication timeout, failed \
             authentications, token expiry, rate-limit abuse), by close code",
            m.closes.clone(),
        );
        registry.register(
            "message_fanout_seconds",
            "Time from receiving a message to its frames being written or queued for every member \
             (writes handed to the flush lanes are not waited for)",
            m.fanout_seconds.clone(),
        );
        registry.register(
            "redis_round_trip_seconds",
            "Time each Redis call took, from the node's side (cluster mode)",
            m.redis_seconds.clone(),
        );
        for code in ErrorCode::ALL {
            // Every code is present from the start, at 0.
            let _ = m.errors.get_or_create(&CodeLabel {
                code: code.as_str(),
            });
        }
        // The one code the core closes with, present from the start at 0.
        let _ = m.closes.get_or_create(&CloseLabel {
            code: CloseCode::Policy.code(),
        });
        Metrics { registry, ..m }
    }

    /// Brings the counters up to the core's cumulative `stats` (given the
    /// values last published) and sets the gauges.
    pub fn publish(&self, stats: &Stats, last: &Stats, gauges: Gauges) {
        self.authenticated.set(gauges.authenticated as i64);
        self.rooms.set(gauges.rooms as i64);
        self.memberships.set(gauges.memberships as i64);
        // Only what moved: at low load a batch is one message, and most
        // counters stand still.
        let counters = [
            (
                &self.messages_accepted,
                stats.messages_accepted,
                last.messages_accepted,
            ),
            (
                &self.messages_delivered,
                stats.messages_delivered,
                last.messages_delivered,
            ),
            (&self.rate_limited, stats.rate_limited, last.rate_limited),
            (
                &self.retries_deduplicated,
                stats.retries_deduplicated,
                last.retries_deduplicated,
            ),
            (
                &self.history_evictions,
                stats.history_evictions,
                last.history_evictions,
            ),
            (
                &self.token_refreshes,
                stats.token_refreshes,
                last.token_refreshes,
            ),
            (&self.rooms_revoked, stats.rooms_revoked, last.rooms_revoked),
            (&self.rooms_deleted, stats.rooms_deleted, last.rooms_deleted),
        ];
        for (counter, now, before) in counters {
            if now > before {
                counter.inc_by(now - before);
            }
        }
        if stats.closes != last.closes {
            for (&code, &count) in &stats.closes {
                let delta = count - last.closes.get(&code).copied().unwrap_or(0);
                if delta > 0 {
                    self.closes
                        .get_or_create(&CloseLabel { code })
                        .inc_by(delta);
                }
            }
        }
        for (i, code) in ErrorCode::ALL.iter().enumerate() {
            let delta = stats.errors[i] - last.errors[i];
            if delta > 0 {
                self.errors
                    .get_or_create(&CodeLabel {
                        code: code.as_str(),
                    })
                    .inc_by(delta);
            }
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{series} missing from:\n{text}"))
    }

    #[test]
    fn every_core_counter_is_exported_and_follows_the_stats() {
        let metrics = Metrics::new();
        let text = metrics.encode();
        for series in [
            "chatflow_retries_deduplicated_total",
            "chatflow_history_evictions_total",
            "chatflow_closes_total{code=\"1008\"}",
            "chatflow_token_refreshes_total",
            "chatflow_outbound_queued_bytes",
            "chatflow_connection_closes_total{reason=\"write_timeout\"}",
            "chatflow_connection_closes_total{reason=\"memory_cap\"}",
            "chatflow_connection_closes_total{reason=\"slow_consumer\"}",
        ] {
            assert_eq!(value(&text, series), 0.0, "{series} starts at 0");
        }

        let first = Stats {
            messages_accepted: 4,
            messages_delivered: 9,
            rate_limited: 1,
            retries_deduplicated: 2,
            history_evictions: 3,
            closes: [(1008, 5)].into(),
            token_refreshes: 1,
            ..Stats::default()
        };
        metrics.publish(&first, &Stats::default(), Gauges::default());
        let mut second = first.clone();
        second.retries_deduplicated += 1;
        second.history_evictions += 10;
        *second.closes.get_mut(&1008).expect("present") += 2;
        second.closes.insert(1011, 1);
        second.token_refreshes += 3;
        metrics.publish(&second, &first, Gauges::default());

        let text = metrics.encode();
        assert_eq!(value(&text, "chatflow_chat_messages_accepted_total"), 4.0);
        assert_eq!(value(&text, "chatflow_messages_delivered_total"), 9.0);
        assert_eq!(value(&text, "chatflow_rate_limit_rejections_total"), 1.0);
        assert_eq!(value(&text, "chatflow_retries_deduplicated_total"), 3.0);
        assert_eq!(value(&text, "chatflow_history_evictions_total"), 13.0);
        assert_eq!(value(&text, "chatflow_closes_total{code=\"1008\"}"), 7.0);
        assert_eq!(value(&text, "chatflow_closes_total{code=\"1011\"}"), 1.0);
        assert_eq!(value(&text, "chatflow_token_refreshes_total"), 4.0);
    }
}
