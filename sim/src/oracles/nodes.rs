//! The nodes of the service as the records show them: how many there are
//! (one, unless [`Obs::NodeStart`](crate::obs::Obs::NodeStart) says more),
//! which node each connection was made to, when a node crashed, and when
//! one was cut from the store. The oracles of a cluster need these: a
//! connection to a crashed node is gone although its client may not know
//! yet, and a node cut from the store hears nothing of the others.
//!
//! Which node a connection is on is not recorded; it follows from the
//! dialing rule of the simulation's connector (`tap::TapConnector`): a
//! library client's `n`-th attempt (each one recorded as a `Dial` or a
//! `DialFailed`) goes to node `(client + n) % nodes`; raw clients always
//! dial node 0. On one node every connection is on node 0.

use std::collections::BTreeMap;

/// `NODE_TTL_MS` of a simulated cluster (0 on one node: no lease).
fn cluster_node_ttl_ms() -> u64 {
    crate::run::CLUSTER_NODE_TTL_MS
}

/// `REDIS_TIMEOUT_MS` of a simulated cluster.
fn cluster_store_timeout_ms() -> u64 {
    crate::run::CLUSTER_STORE_TIMEOUT_MS
}

/// Nodes, crashes and store cuts.
#[derive(Debug, Clone, Default)]
pub struct Topology {
    /// Highest node number started, plus one (0 until a `NodeStart`: one
    /// node).
    started: usize,
    /// Connection attempts so far, per client.
    attempts: BTreeMap<u32, usize>,
    /// Node → the times it crashed.
    crashes: BTreeMap<usize, Vec<u64>>,
    /// Node → its cuts from the store: `(cut, heal)`.
    cuts: BTreeMap<usize, Vec<(u64, Option<u64>)>>,
    /// When the last fault (of any kind) was injected or healed.
    pub last_fault: Option<u64>,
}

/// The node a fault's host name (`server`, `server2`, …) names.
fn node_of(host: &str) -> Option<usize> {
    let rest = host.strip_prefix(crate::tap::SERVER.0)?;
    if rest.is_empty() {
        Some(0)
    } else {
        rest.parse().ok()
    }
}

impl Topology {
    /// How many nodes serve.
    pub fn nodes(&self) -> usize {
        self.started.max(1)
    }

    /// Whether the service is a cluster on a store.
    pub fn cluster(&self) -> bool {
        self.nodes() > 1
    }

    /// `NODE_TTL_MS` (0 on one node).
    pub fn node_ttl_ms(&self) -> u64 {
        if self.cluster() {
            cluster_node_ttl_ms()
        } else {
            0
        }
    }

    /// `REDIS_TIMEOUT_MS` (0 on one node).
    pub fn store_timeout_ms(&self) -> u64 {
        if self.cluster() {
            cluster_store_timeout_ms()
        } else {
            0
        }
    }

    /// How long after a node crashes its users may still be listed by the
    /// other nodes' store: its lease, renewed last before the crash, runs
    /// out within `NODE_TTL_MS`; the next heartbeat of a live node (one
    /// every `NODE_TTL_MS / 3`) clears it, in a store call that takes at
    /// most `REDIS_TIMEOUT_MS`. (0 on one node: its users go with it.)
    pub fn crash_removal_ms(&self) -> u64 {
        let ttl = self.node_ttl_ms();
        ttl + ttl / 3 + self.store_timeout_ms()
    }

    /// A `NodeStart` of `node`.
    pub fn on_node_start(&mut self, node: u32) {
        self.started = self.started.max(node as usize + 1);
    }

    /// A connection attempt of `client` (a `Dial` or a `DialFailed`);
    /// returns the node it went to.
    pub fn on_attempt(&mut self, client: u32, raw: bool) -> usize {
        let nodes = self.nodes();
        let n = self.attempts.entry(client).or_insert(0);
        let node = if raw {
            0
        } else {
            (client as usize + *n) % nodes
        };
        *n += 1;
        node
    }

    /// A fault record (`crash server2`, `cut server1 from the store`, …).
    pub fn on_fault(&mut self, at: u64, what: &str) {
        self.last_fault = Some(at);
        let mut words = what.split(' ');
        let (Some(verb), Some(host)) = (words.next(), words.next()) else {
            return;
        };
        let Some(node) = node_of(host) else {
            return;
        };
        match verb {
            "crash" => self.crashes.entry(node).or_default().push(at),
            "cut" => self.cuts.entry(node).or_default().push((at, None)),
            "heal" => {
                if let Some(open) = self
                    .cuts
                    .entry(node)
                    .or_default()
                    .iter_mut()
                    .rev()
                    .find(|(_, heal)| heal.is_none())
                {
                    open.1 = Some(at);
                }
            }
            _ => {}
        }
    }

    /// When `node` first crashed at or after `since` (a connection made to
    /// it at `since` is dead from then on).
    pub fn crashed_after(&self, node: usize, since: u64) -> Option<u64> {
        self.crashes
            .get(&node)?
            .iter()
            .copied()
            .find(|&at| at >= since)
    }

    /// The earliest time from which `node` had been in touch with the store
    /// for `span` ms without a cut, starting no earlier than `from`: `from`
    /// itself unless a cut of the node began before `from + span` and
    /// ended after `from`, then the end of that cut (and so on). `None`
    /// while a cut that matters is not healed.
    pub fn connected_from(&self, node: usize, from: u64, span: u64) -> Option<u64> {
        let mut base = from;
        let Some(cuts) = self.cuts.get(&node) else {
            return Some(base);
        };
        loop {
            let mut moved = false;
            for &(cut, heal) in cuts {
                let heal_ms = heal.unwrap_or(u64::MAX);
                if cut < base + span && heal_ms > base {
                    heal?;
                    base = heal_ms;
                    moved = true;
                }
            }
            if !moved {
                return Some(base);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_from_records() {
        let mut t = Topology::default();
        assert_eq!((t.nodes(), t.node_ttl_ms()), (1, 0));
        assert_eq!(t.on_attempt(3, false), 0);
        for n in 0..3 {
            t.on_node_start(n);
        }
        assert_eq!(t.nodes(), 3);
        // Client 1: attempts 0, 1, 2 go to nodes 1, 2, 0.
        let seen: Vec<usize> = (0..3).map(|_| t.on_attempt(1, false)).collect();
        assert_eq!(seen, vec![1, 2, 0]);
        assert_eq!(t.on_attempt(1, true), 0);
        t.on_fault(100, "crash server2");
        t.on_fault(200, "cut server from the store");
        t.on_fault(900, "heal server to the store");
        assert_eq!(t.crashed_after(2, 50), Some(100));
        assert_eq!(t.crashed_after(2, 150), None);
        assert_eq!(t.connected_from(0, 0, 100), Some(0));
        assert_eq!(t.connected_from(0, 150, 100), Some(900));
        assert_eq!(t.connected_from(1, 150, 100), Some(150));
        assert_eq!(t.last_fault, Some(900));
    }
}
