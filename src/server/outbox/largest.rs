//! The driver's index of the connections whose queues may be the largest:
//! whom to close when all queues together pass `OUTBOUND_MEMORY_MAX_BYTES`.
//!
//! A queue only grows when the driver pushes to it, and it shrinks
//! elsewhere (its writer, the flush lanes). So the index is kept by the
//! pushes alone, lazily: a connection is listed at a *level* — the bit
//! length of its held bytes — the first time a push takes it to a level
//! above the one it is listed at ([`Outbox::queue`] says so: the push
//! already holds the connection's lock, so this costs a `leading_zeros`
//! and a compare per frame, and a `Vec` push a few times in a connection's
//! life). Writes never touch the index, so a listing may be stale: a
//! connection is listed at least as high as its queue is now, never lower.
//! Queues under [`LISTED_MIN_BYTES`] are not listed at all (an ordinary
//! delivery never reaches it, so a connection that is not falling behind
//! never costs an entry).
//!
//! To find the largest queue the driver looks at the highest non-empty
//! level: each entry there is checked against its connection (gone,
//! closing, or listed elsewhere since: dropped; shrunk: moved down to its
//! level now). Whatever stays at the highest level is larger than every
//! connection listed lower or not at all, and the largest of those is the
//! one. Each check moves an entry down or drops it, so the work is paid
//! for by the pushes that listed it. Entries of connections that went away
//! are dropped when they outnumber the live connections, in one pass.
//!
//! The cost lands only where the cap is passed: the fan-out's hot path
//! pays the relaxed atomic add of [`QueuedBytes`](super::QueuedBytes) and
//! the compare above.

pub use super::LISTED_MIN_BYTES;
use super::Outbox;

/// Levels: a queue's held bytes have at most 64 bits.
const LEVELS: usize = 65;

/// The index (see the module's documentation). `K` names a connection.
#[derive(Debug)]
pub struct LargestQueues<K> {
    levels: Vec<Vec<K>>,
    entries: usize,
}

impl<K> Default for LargestQueues<K> {
    fn default() -> Self {
        LargestQueues {
            levels: (0..LEVELS).map(|_| Vec::new()).collect(),
            entries: 0,
        }
    }
}

impl<K: Copy + Ord> LargestQueues<K> {
    /// Lists `conn` at `level` (what a push returned in
    /// [`Pushed::level`](super::Pushed::level)). `live` connections are
    /// open and `outbox` finds them: when entries outnumber them, the
    /// stale ones are dropped.
    pub fn note<'a>(
        &mut self,
        conn: K,
        level: u8,
        live: usize,
        outbox: impl Fn(K) -> Option<&'a Outbox>,
    ) {
        self.levels[usize::from(level)].push(conn);
        self.entries += 1;
        if self.entries > 2 * live + 64 {
            self.compact(outbox);
        }
    }

    /// Keeps only the entries that stand: their connection is open and
    /// listed at that level (one entry each).
    fn compact<'a>(&mut self, outbox: impl Fn(K) -> Option<&'a Outbox>) {
        self.entries = 0;
        for (level, entries) in self.levels.iter_mut().enumerate() {
            entries.retain(|&k| {
                outbox(k).is_some_and(|o| !o.is_closing() && usize::from(o.level()) == level)
            });
            entries.sort_unstable();
            entries.dedup();
            self.entries += entries.len();
        }
    }

    /// Takes the connection with the largest queue out of the index, if any
    /// listed connection is still open and holds at least
    /// [`LISTED_MIN_BYTES`].
    pub fn take_largest<'a>(&mut self, outbox: impl Fn(K) -> Option<&'a Outbox>) -> Option<K> {
        for level in (1..LEVELS).rev() {
            if self.levels[level].is_empty() {
                continue;
            }
            let entries = std::mem::take(&mut self.levels[level]);
            self.entries -= entries.len();
            let mut largest: Option<(usize, K)> = None;
            for k in entries {
                let Some((held, now)) = outbox(k).and_then(|o| o.relist(level as u8)) else {
                    continue;
                };
                let now = usize::from(now);
                if now == level && largest.is_none_or(|(most, _)| held > most) {
                    largest = Some((held, k));
                }
                if now > 0 {
                    self.levels[now].push(k);
                    self.entries += 1;
                }
            }
            if let Some((_, k)) = largest {
                let at = self.levels[level].iter().position(|&e| e == k);
                if let Some(at) = at {
                    self.levels[level].swap_remove(at);
                    self.entries -= 1;
                }
                return Some(k);
            }
        }
        None
    }

    /// Entries, stale ones included.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bytes::Bytes;

    use super::super::{Cause, QueueLimits, QueuedBytes};
    use super::*;
    use crate::protocol::CloseCode;

    struct Conns {
        outboxes: BTreeMap<u32, Outbox>,
        index: LargestQueues<u32>,
    }

    impl Conns {
        fn new() -> Conns {
            Conns {
                outboxes: BTreeMap::new(),
                index: LargestQueues::default(),
            }
        }

        /// Queues `bytes` bytes to `conn` (opened on first use) as the
        /// driver does, noting what the push says.
        fn push(&mut self, conn: u32, bytes: usize) {
            let o = self.outboxes.entry(conn).or_insert_with(|| {
                Outbox::new(QueueLimits::frames(1 << 20), QueuedBytes::default())
            });
            let (_, pushed) = o
                .queue(Bytes::from(vec![b'x'; bytes]), false)
                .expect("room");
            if let Some(level) = pushed.level {
                let outboxes = &self.outboxes;
                self.index
                    .note(conn, level, outboxes.len(), |k| outboxes.get(&k));
            }
        }

        fn largest(&mut self) -> Option<u32> {
            let outboxes = &self.outboxes;
            self.index.take_largest(|k| outboxes.get(&k))
        }

        /// The writer takes everything queued to `conn` and writes `bytes`.
        fn drain(&mut self, conn: u32, bytes: usize) {
            use futures_util::FutureExt;
            let o = &self.outboxes[&conn];
            let (batch, _) = o.next_batch().now_or_never().expect("work");
            assert!(!batch.frames.is_empty());
            o.written(0, bytes);
        }
    }

    #[test]
    fn the_largest_queue_is_found_and_small_ones_are_not_listed() {
        let mut c = Conns::new();
        c.push(1, 100_000);
        c.push(2, 300_000);
        c.push(3, 200_000);
        c.push(4, 1_000);
        // Same level as 2 (bit length 19), smaller.
        c.push(5, 270_000);
        assert_eq!(c.largest(), Some(2));
        c.outboxes[&2].close_discarding(Cause::MemoryCap, CloseCode::TryAgainLater, "cap");
        assert_eq!(c.largest(), Some(5));
        c.outboxes[&5].close_discarding(Cause::MemoryCap, CloseCode::TryAgainLater, "cap");
        assert_eq!(c.largest(), Some(3));
        c.outboxes.remove(&3);
        assert_eq!(c.largest(), Some(1));
        c.outboxes.remove(&1);
        assert_eq!(c.largest(), None, "1 KB is not listed");
    }

    #[test]
    fn a_queue_that_shrank_is_found_at_its_size_now() {
        let mut c = Conns::new();
        c.push(1, 1_000_000);
        c.push(2, 400_000);
        // 1's writer took its frame and the socket accepted most of it.
        c.drain(1, 900_000);
        assert_eq!(c.outboxes[&1].held_bytes(), 1_000_010 - 900_000);
        assert_eq!(c.largest(), Some(2));
        c.outboxes.remove(&2);
        assert_eq!(c.largest(), Some(1));
        // Growing again lists it again.
        c.push(1, 2_000_000);
        assert_eq!(c.largest(), Some(1));
    }

    #[test]
    fn entries_of_connections_that_went_away_do_not_pile_up() {
        let mut c = Conns::new();
        for round in 0..1_000u32 {
            c.push(round, 20_000);
            c.push(round, 40_000);
            c.outboxes.remove(&round);
        }
        c.push(5_000, 20_000);
        assert!(
            c.index.len() <= 2 * c.outboxes.len() + 65,
            "{}",
            c.index.len()
        );
        assert_eq!(c.largest(), Some(5_000));
    }
}
