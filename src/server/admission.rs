//! Admission: how many connections the server takes, in total and per peer
//! address, and the guards that give a place back when a connection ends.
//!
//! Two tallies: WebSocket connections (`MAX_CONNECTIONS`,
//! `MAX_CONNECTIONS_PER_IP`; past them an upgrade is answered 503), and TCP
//! connections still in HTTP (before an upgrade, or asking for `/healthz`
//! and the like), at most [`HANDSHAKE_CAP_FACTOR`] times the same caps, so
//! that connections that never upgrade cannot take every file descriptor
//! (each also ends at the header timeout); past those a new TCP connection
//! is closed on accept, unanswered.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::metrics::Metrics;
use crate::config::Config;

/// TCP connections that may be in HTTP at once, as a multiple of
/// `MAX_CONNECTIONS` in total and of `MAX_CONNECTIONS_PER_IP` per address,
/// but never fewer than [`HANDSHAKES_MIN`] and [`HANDSHAKES_PER_IP_MIN`]
/// (small caps must not starve health checks).
pub const HANDSHAKE_CAP_FACTOR: usize = 2;
/// The least total of connections that may be in HTTP at once.
pub const HANDSHAKES_MIN: usize = 1024;
/// The least number of connections one address may have in HTTP at once.
pub const HANDSHAKES_PER_IP_MIN: usize = 64;

/// Connections counted in total and per peer address.
#[derive(Default)]
struct Tally {
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

impl Tally {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        // Every update is one insert or removal: a panic elsewhere while
        // holding the lock cannot leave the map inconsistent.
        self.per_ip.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one more for `ip` unless that would pass either cap.
    fn try_take(&self, ip: IpAddr, max_total: usize, max_per_ip: usize) -> bool {
        let mut per_ip = self.lock();
        let count = per_ip.get(&ip).copied().unwrap_or(0);
        if count >= max_per_ip || self.total.load(Ordering::Relaxed) >= max_total {
            return false;
        }
        per_ip.insert(ip, count + 1);
        self.total.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Uncounts one taken for `ip`.
    fn give_back(&self, ip: IpAddr) {
        {
            let mut per_ip = self.lock();
            if let Some(n) = per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
        self.total.fetch_sub(1, Ordering::Relaxed);
    }

    fn total(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }
}

/// The connection caps, shared by the accept loop and the HTTP service.
pub struct Admission {
    /// Open WebSocket connections.
    open: Tally,
    /// TCP connections still in HTTP.
    handshaking: Tally,
    metrics: Arc<Metrics>,
}

/// A counted WebSocket connection; uncounted when dropped.
pub struct OpenGuard {
    admission: Arc<Admission>,
    ip: IpAddr,
}

/// A counted connection still in HTTP; uncounted when dropped.
pub struct HandshakeGuard {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Admission {
    /// No connection counted yet; the open-connections gauge is `metrics`'.
    pub fn new(metrics: Arc<Metrics>) -> Admission {
        Admission {
            open: Tally::default(),
            handshaking: Tally::default(),
            metrics,
        }
    }

    /// Counts a WebSocket connection from `ip`, unless `config`'s caps are
    /// reached.
    pub fn try_open(self: &Arc<Self>, ip: IpAddr, config: &Config) -> Option<OpenGuard> {
        if !self
            .open
            .try_take(ip, config.max_connections, config.max_connections_per_ip)
        {
            return None;
        }
        self.metrics.connections.inc();
        Some(OpenGuard {
            admission: self.clone(),
            ip,
        })
    }

    /// Counts a TCP connection from `ip` entering HTTP, unless the handshake
    /// caps derived from `config` are reached.
    pub fn try_handshake(self: &Arc<Self>, ip: IpAddr, config: &Config) -> Option<HandshakeGuard> {
        let (total, per_ip) = handshake_caps(config);
        self.handshaking
            .try_take(ip, total, per_ip)
            .then(|| HandshakeGuard {
                admission: self.clone(),
                ip,
            })
    }

    /// WebSocket connections open now.
    pub fn open(&self) -> usize {
        self.open.total()
    }
}

/// How many connections may be in HTTP at once: in total, and per address.
fn handshake_caps(config: &Config) -> (usize, usize) {
    let cap = |n: usize, min: usize| n.saturating_mul(HANDSHAKE_CAP_FACTOR).max(min);
    (
        cap(config.max_connections, HANDSHAKES_MIN),
        cap(config.max_connections_per_ip, HANDSHAKES_PER_IP_MIN),
    )
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.admission.open.give_back(self.ip);
        self.admission.metrics.connections.dec();
    }
}

impl Drop for HandshakeGuard {
    fn drop(&mut self) {
        self.admission.handshaking.give_back(self.ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_caps_are_twice_the_connection_caps_with_floors() {
        let caps = |total, per_ip| {
            handshake_caps(&Config {
                max_connections: total,
                max_connections_per_ip: per_ip,
                ..Config::default()
            })
        };
        assert_eq!(caps(10_000, 100), (20_000, 200));
        // Small caps do not starve health checks.
        assert_eq!(caps(2, 1), (HANDSHAKES_MIN, HANDSHAKES_PER_IP_MIN));
        assert_eq!(caps(usize::MAX, usize::MAX), (usize::MAX, usize::MAX));
    }

    #[test]
    fn a_tally_caps_in_total_and_per_address_and_gives_back() {
        let c = Tally::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(c.try_take(a, 3, 2));
        assert!(c.try_take(a, 3, 2));
        assert!(!c.try_take(a, 3, 2), "per address");
        assert!(c.try_take(b, 3, 2));
        assert!(!c.try_take(b, 3, 2), "in total");
        c.give_back(a);
        assert!(c.try_take(b, 3, 2));
        assert_eq!(c.total(), 3);
        for ip in [a, b, b] {
            c.give_back(ip);
        }
        assert_eq!(c.total(), 0);
        assert!(c.lock().is_empty(), "no address left behind");
    }

    #[test]
    fn guards_give_their_place_back_when_dropped() {
        let admission = Arc::new(Admission::new(Arc::new(Metrics::new())));
        let config = Config {
            max_connections: 1,
            ..Config::default()
        };
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let open = admission.try_open(ip, &config).expect("a place");
        assert!(admission.try_open(ip, &config).is_none(), "at the cap");
        assert_eq!(admission.open(), 1);
        drop(open);
        assert_eq!(admission.open(), 0);
        assert!(admission.try_open(ip, &config).is_some());
    }
}
