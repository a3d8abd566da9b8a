//! Admission: how many connections the server takes, in total and per
//! client address, which address that is, and the guards that give a place
//! back when a connection ends.
//!
//! Two tallies: WebSocket connections (`MAX_CONNECTIONS`,
//! `MAX_CONNECTIONS_PER_IP`; past them an upgrade is answered 503), and TCP
//! connections still in HTTP (before an upgrade, or asking for `/healthz`
//! and the like), at most [`HANDSHAKE_CAP_FACTOR`] times the same caps, so
//! that connections that never upgrade cannot take every file descriptor
//! (each also ends at the header timeout); past those a new TCP connection
//! is closed on accept, unanswered.
//!
//! The WebSocket tally counts the client address ([`client_address`]): the
//! TCP peer's, or behind a proxy in `TRUSTED_PROXIES` the one its
//! `X-Forwarded-For` names. The HTTP tally is taken on accept, before any
//! header has arrived, so it counts the TCP peer; a trusted proxy, which
//! carries many clients' connections, has no per-address HTTP cap (the total
//! still applies). Both count an IPv6 address by its /64
//! ([`IPV6_GROUP_PREFIX_BITS`]): one host is commonly given a whole /64.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
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

/// Leading bits of an IPv6 address that the per-address caps count by: a
/// /64 is one subscriber's (RFC 6177), who can use any of its 2^64
/// addresses.
pub const IPV6_GROUP_PREFIX_BITS: u32 = 64;

/// The address the per-address caps count `ip` under: an IPv4 address (also
/// written IPv4-mapped, `::ffff:a.b.c.d`) as itself, an IPv6 address as its
/// /64.
pub fn cap_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let mask = u128::MAX << (128 - IPV6_GROUP_PREFIX_BITS);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

/// The client address of a request from TCP peer `peer` carrying the
/// `X-Forwarded-For` header lines `forwarded` (in the order received; a
/// proxy may append a line rather than extend the last one, so the lines
/// are one list).
///
/// A peer outside `TRUSTED_PROXIES` is the client, whatever it wrote. From a
/// trusted peer, the client is the rightmost listed address that is not
/// itself a trusted proxy: each trusted proxy appended the address it saw,
/// and whatever is further left came from the client and may be forged.
/// The peer is the client when the header is missing, or when that
/// rightmost entry is not an address (a proxy that writes garbage vouches
/// for nothing). When every listed address is a trusted proxy, the leftmost
/// is the client (a request from inside the trusted networks). IPv4-mapped
/// IPv6 addresses are returned as IPv4.
pub fn client_address<'a>(
    peer: IpAddr,
    forwarded: impl DoubleEndedIterator<Item = &'a [u8]>,
    config: &Config,
) -> IpAddr {
    let peer = peer.to_canonical();
    if !config.is_trusted_proxy(peer) {
        return peer;
    }
    let mut nearest_trusted = peer;
    for line in forwarded.rev() {
        // Empty list elements are allowed and ignored (RFC 9110 5.6.1).
        for entry in line.rsplit(|b| *b == b',').filter(|e| !is_blank(e)) {
            match forwarded_ip(entry) {
                None => return peer,
                Some(ip) if config.is_trusted_proxy(ip) => nearest_trusted = ip,
                Some(ip) => return ip,
            }
        }
    }
    nearest_trusted
}

fn is_blank(bytes: &[u8]) -> bool {
    bytes.iter().all(|b| matches!(b, b' ' | b'\t'))
}

/// One `X-Forwarded-For` entry: an address, optionally with a port (some
/// proxies write `1.2.3.4:5678` or `[2001:db8::1]:443`) or in brackets.
fn forwarded_ip(entry: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(entry).ok()?.trim_matches([' ', '\t']);
    let ip = text
        .parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            let inner = text.strip_prefix('[')?.strip_suffix(']')?;
            inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
        })?;
    Some(ip.to_canonical())
}

/// Connections counted in total and per address (see [`cap_key`]).
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
    /// The address it is counted under ([`cap_key`]).
    key: IpAddr,
}

/// A counted connection still in HTTP; uncounted when dropped.
pub struct HandshakeGuard {
    admission: Arc<Admission>,
    /// The address it is counted under ([`cap_key`]).
    key: IpAddr,
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

    /// Counts a WebSocket connection from client address `client` (see
    /// [`client_address`]), unless `config`'s caps are reached.
    pub fn try_open(self: &Arc<Self>, client: IpAddr, config: &Config) -> Option<OpenGuard> {
        let key = cap_key(client);
        if !self
            .open
            .try_take(key, config.max_connections, config.max_connections_per_ip)
        {
            return None;
        }
        self.metrics.connections.inc();
        Some(OpenGuard {
            admission: self.clone(),
            key,
        })
    }

    /// Counts a TCP connection from `peer` entering HTTP, unless the
    /// handshake caps derived from `config` are reached. A trusted proxy
    /// carries many clients' connections: only the total caps it.
    pub fn try_handshake(
        self: &Arc<Self>,
        peer: IpAddr,
        config: &Config,
    ) -> Option<HandshakeGuard> {
        let (total, mut per_ip) = handshake_caps(config);
        if config.is_trusted_proxy(peer) {
            per_ip = usize::MAX;
        }
        let key = cap_key(peer);
        self.handshaking
            .try_take(key, total, per_ip)
            .then(|| HandshakeGuard {
                admission: self.clone(),
                key,
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
        self.admission.open.give_back(self.key);
        self.admission.metrics.connections.dec();
    }
}

impl Drop for HandshakeGuard {
    fn drop(&mut self) {
        self.admission.handshaking.give_back(self.key);
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

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    /// `Config::default()` trusting `proxies`.
    fn trusting(proxies: &[&str]) -> Config {
        Config {
            trusted_proxies: proxies
                .iter()
                .map(|p| crate::config::Cidr::parse(p).expect("a network"))
                .collect(),
            ..Config::default()
        }
    }

    /// The client address of a request from `peer` with these
    /// `X-Forwarded-For` lines.
    fn client(peer: &str, lines: &[&str], config: &Config) -> IpAddr {
        client_address(ip(peer), lines.iter().map(|l| l.as_bytes()), config)
    }

    #[test]
    fn ipv4_counts_alone_and_ipv6_by_its_64() {
        assert_eq!(cap_key(ip("10.0.0.1")), ip("10.0.0.1"));
        assert_ne!(cap_key(ip("10.0.0.1")), cap_key(ip("10.0.0.2")));
        assert_eq!(cap_key(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
        assert_eq!(cap_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(
            cap_key(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")),
            cap_key(ip("2001:db8:1:2::"))
        );
        assert_ne!(
            cap_key(ip("2001:db8:1:2::1")),
            cap_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(cap_key(ip("::1")), ip("::"));
    }

    #[test]
    fn forwarded_headers_from_untrusted_peers_are_ignored() {
        let none = Config::default();
        assert_eq!(
            client("203.0.113.9", &["10.9.9.9"], &none),
            ip("203.0.113.9")
        );
        let config = trusting(&["10.0.0.0/8"]);
        for spoofed in [
            &["198.51.100.1"][..],
            &["10.0.0.5"],
            &["1.1.1.1, 2.2.2.2"],
            &[],
        ] {
            assert_eq!(
                client("203.0.113.9", spoofed, &config),
                ip("203.0.113.9"),
                "{spoofed:?}"
            );
        }
        // IPv4-mapped peers are their IPv4 address.
        assert_eq!(
            client("::ffff:203.0.113.9", &["1.1.1.1"], &config),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn behind_trusted_proxies_the_rightmost_untrusted_address_is_the_client() {
        let config = trusting(&["10.0.0.0/8", "fd00::/8"]);
        // One proxy.
        assert_eq!(
            client("10.0.0.1", &["198.51.100.7"], &config),
            ip("198.51.100.7")
        );
        // A chain: the client's own entries (left) may be forged; the
        // proxies' (right) are skipped.
        assert_eq!(
            client(
                "10.0.0.1",
                &["6.6.6.6, 198.51.100.7, 10.0.0.2, 10.0.0.3"],
                &config
            ),
            ip("198.51.100.7")
        );
        // Lines appended by proxies are one list, in order.
        assert_eq!(
            client(
                "10.0.0.1",
                &["6.6.6.6", "198.51.100.7", "10.0.0.2"],
                &config
            ),
            ip("198.51.100.7")
        );
        assert_eq!(
            client("10.0.0.1", &["6.6.6.6, 198.51.100.7", "fd00::2"], &config),
            ip("198.51.100.7")
        );
        // IPv6 clients, bracketed, with ports, mapped; blanks and empty
        // elements are allowed.
        assert_eq!(
            client("fd00::1", &["2001:db8::5"], &config),
            ip("2001:db8::5")
        );
        assert_eq!(
            client("10.0.0.1", &[" [2001:db8::5]:443 "], &config),
            ip("2001:db8::5")
        );
        assert_eq!(
            client("10.0.0.1", &["[2001:db8::5]"], &config),
            ip("2001:db8::5")
        );
        assert_eq!(
            client("10.0.0.1", &["198.51.100.7:5678"], &config),
            ip("198.51.100.7")
        );
        assert_eq!(
            client("10.0.0.1", &["::ffff:198.51.100.7"], &config),
            ip("198.51.100.7")
        );
        assert_eq!(
            client("10.0.0.1", &["198.51.100.7,, ,\t"], &config),
            ip("198.51.100.7")
        );
        assert_eq!(
            client("10.0.0.1", &["198.51.100.7", ""], &config),
            ip("198.51.100.7")
        );
        // A trusted peer seen as IPv4-mapped IPv6 (a dual-stack listener).
        assert_eq!(
            client("::ffff:10.0.0.1", &["198.51.100.7"], &config),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn a_missing_or_unparsable_header_leaves_the_peer() {
        let config = trusting(&["10.0.0.0/8"]);
        assert_eq!(client("10.0.0.1", &[], &config), ip("10.0.0.1"));
        assert_eq!(client("10.0.0.1", &[""], &config), ip("10.0.0.1"));
        for garbage in [
            "unknown",
            "198.51.100.7, unknown",
            "198.51.100.7, 10.0.0.2, garbage",
            "_hidden",
            "198.51.100",
            "fe80::1%eth0",
            "1.2.3.4/8",
            "1.2.3.4 5.6.7.8",
        ] {
            assert_eq!(
                client("10.0.0.1", &[garbage], &config),
                ip("10.0.0.1"),
                "{garbage:?}"
            );
        }
        let not_utf8: &[&[u8]] = &[b"198.51.100.7, \xff\xfe"];
        assert_eq!(
            client_address(ip("10.0.0.1"), not_utf8.iter().copied(), &config),
            ip("10.0.0.1")
        );
        // Garbage further left than the client is the client's own doing.
        assert_eq!(
            client("10.0.0.1", &["garbage, 198.51.100.7, 10.0.0.2"], &config),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn when_every_listed_address_is_trusted_the_leftmost_is_the_client() {
        let config = trusting(&["10.0.0.0/8"]);
        assert_eq!(
            client("10.0.0.1", &["10.5.5.5, 10.0.0.2"], &config),
            ip("10.5.5.5")
        );
        assert_eq!(client("10.0.0.1", &["10.0.0.1"], &config), ip("10.0.0.1"));
    }

    #[test]
    fn one_64_shares_a_cap_and_another_does_not() {
        let admission = Arc::new(Admission::new(Arc::new(Metrics::new())));
        let config = Config {
            max_connections_per_ip: 2,
            ..Config::default()
        };
        let _a = admission
            .try_open(ip("2001:db8:0:1::1"), &config)
            .expect("first");
        let _b = admission
            .try_open(ip("2001:db8:0:1:ffff::2"), &config)
            .expect("second");
        assert!(
            admission.try_open(ip("2001:db8:0:1::3"), &config).is_none(),
            "a third address of the same /64"
        );
        let _c = admission
            .try_open(ip("2001:db8:0:2::1"), &config)
            .expect("the next /64 has its own cap");
        // An IPv4 address and its mapped form share one cap.
        let _d = admission.try_open(ip("10.0.0.1"), &config).expect("v4");
        let _e = admission
            .try_open(ip("::ffff:10.0.0.1"), &config)
            .expect("mapped");
        assert!(admission.try_open(ip("10.0.0.1"), &config).is_none());
        drop(_b);
        assert!(admission.try_open(ip("2001:db8:0:1::9"), &config).is_some());
    }

    #[test]
    fn a_trusted_proxy_has_no_per_address_handshake_cap() {
        let admission = Arc::new(Admission::new(Arc::new(Metrics::new())));
        let config = Config {
            max_connections_per_ip: 1,
            ..trusting(&["10.0.0.1"])
        };
        let (total, per_ip) = handshake_caps(&config);
        let held: Vec<_> = (0..per_ip + 1)
            .map(|_| {
                admission
                    .try_handshake(ip("10.0.0.1"), &config)
                    .expect("a proxy")
            })
            .collect();
        let other: Vec<_> = (0..per_ip)
            .map(|_| {
                admission
                    .try_handshake(ip("10.0.0.2"), &config)
                    .expect("a client")
            })
            .collect();
        assert!(
            admission.try_handshake(ip("10.0.0.2"), &config).is_none(),
            "an untrusted peer is capped"
        );
        assert!(held.len() + other.len() < total);
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
