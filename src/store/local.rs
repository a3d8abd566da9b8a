//! [`Local`]: one node on its own in-process store — a [`Hub`] whose store
//! operations a [`MemoryStore`] answers at once, within the same call.
//!
//! This is the server without `REDIS_URL`, and what the core's tests, the
//! fuzzers, the benchmarks and the single-node simulation drive. It adds
//! nothing to the hub's behaviour: every operation and event goes through
//! the same seam a Redis store would answer, only without waiting.

use std::ops::{Deref, DerefMut};

use super::memory::MemoryStore;
use crate::core::{DefaultRoom, Gauges, Hub, Instance, Limits, Output, Timestamp};

/// A hub and the store it alone uses.
#[derive(Debug)]
pub struct Local {
    hub: Hub,
    store: MemoryStore,
}

impl Local {
    /// A node whose default rooms exist from `now`.
    pub fn new(
        limits: Limits,
        default_rooms: &[DefaultRoom],
        instance: Instance,
        now: Timestamp,
    ) -> Local {
        let mut local = Local {
            hub: Hub::new(limits, default_rooms, instance, now),
            store: MemoryStore::new(),
        };
        // Only the default rooms' creation is queued yet: answered here.
        let first = local.poll_output();
        debug_assert!(first.is_none(), "a new hub asks only the store: {first:?}");
        local
    }

    /// The next thing the driver must do (a frame or a close): the store
    /// operations before it are answered on the way, their replies and
    /// events handed back to the hub at its present time.
    pub fn poll_output(&mut self) -> Option<Output> {
        loop {
            match self.hub.poll_output()? {
                Output::Store { id, op } => {
                    let (reply, events) = self.store.apply(&op);
                    let now = self.hub.now();
                    self.hub.store_reply(now, id, reply);
                    for event in events {
                        self.hub.store_event(now, event);
                    }
                }
                // Every event reaches the hub, which keeps those of the
                // rooms it holds.
                Output::Subscribe { .. } | Output::Unsubscribe { .. } => {}
                other => return Some(other),
            }
        }
    }

    /// Current gauges; `rooms` counts every room of the store.
    pub fn gauges(&self) -> Gauges {
        Gauges {
            rooms: self.store.room_count() as u64,
            ..self.hub.gauges()
        }
    }

    /// The store.
    pub fn store(&self) -> &MemoryStore {
        &self.store
    }
}

impl Deref for Local {
    type Target = Hub;

    fn deref(&self) -> &Hub {
        &self.hub
    }
}

impl DerefMut for Local {
    fn deref_mut(&mut self) -> &mut Hub {
        &mut self.hub
    }
}
