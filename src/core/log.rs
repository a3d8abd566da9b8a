//! A room's message log: the one seam between room logic and where messages
//! live.
//!
//! Room logic asks the log for four things only: append a message and get its
//! `seq`, the messages after a `seq` (recovery), a page before a `seq`
//! (`GET_HISTORY`), and the current `epoch`. [`MemoryLog`] keeps the last
//! `HISTORY_LIMIT` messages in a ring; a log shared between servers (a stream
//! in an external store) can stand behind the same methods.
//!
//! A message is held once: as its encoded `NEW_MESSAGE` frame
//! ([`MessageFrame`]), next to the little the core looks up without decoding
//! it (its `seq`, and who may retry it under which `clientMessageId`).

use std::collections::VecDeque;
use std::collections::vec_deque;
use std::sync::Arc;

use super::types::UserId;
use crate::protocol::server::MessageFrame;

/// `(sender, clientMessageId)`: what a retry of a message is recognised by.
/// The id is shared with the room's index of retry keys, not copied.
pub type RetryKey = (UserId, Arc<str>);

/// One retained message.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Its `seq`.
    pub seq: u64,
    /// Its `NEW_MESSAGE` frame: everything the wire ever needs of it.
    pub frame: MessageFrame,
    /// Its retry key, when the sender gave a `clientMessageId`.
    pub retry: Option<RetryKey>,
}

/// Retained messages, oldest first, as a log hands them out.
pub type Messages<'a> = vec_deque::Iter<'a, Stored>;

/// The frames of `messages`, for the encoders of `ROOM_JOINED` and `HISTORY`.
pub fn frames<'a>(messages: Messages<'a>) -> impl Iterator<Item = &'a MessageFrame> + Clone + 'a {
    messages.map(|m| &m.frame)
}

/// What a recovery (`JOIN_ROOM` with `sinceSeq`) found.
#[derive(Debug)]
pub struct Recovery<'a> {
    /// The messages to send, oldest first.
    pub messages: Messages<'a>,
    /// Whether they are exactly everything after `sinceSeq` in this epoch.
    pub recovered: bool,
}

/// The newest retained messages of one room, in `seq` order.
#[derive(Debug)]
pub struct MemoryLog {
    epoch: String,
    /// `seq` of the last message appended; 0 before the first.
    last_seq: u64,
    ring: VecDeque<Stored>,
    limit: usize,
}

impl MemoryLog {
    /// An empty log whose sequence starts afresh under `epoch`, keeping at
    /// most `limit` (≥ 1) messages.
    pub fn new(epoch: String, limit: usize) -> MemoryLog {
        MemoryLog {
            epoch,
            last_seq: 0,
            ring: VecDeque::with_capacity(limit.clamp(1, 64)),
            limit: limit.max(1),
        }
    }

    /// The epoch of the current sequence.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// `seq` of the newest message, 0 when none was ever appended.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The `seq` the next appended message will get.
    pub fn next_seq(&self) -> u64 {
        self.last_seq + 1
    }

    /// Appends `message` (whose `seq` must be [`Self::next_seq`]); returns the
    /// message evicted to make room, if any.
    pub fn append(&mut self, message: Stored) -> Option<Stored> {
        assert_eq!(message.seq, self.next_seq(), "seq must have no gaps");
        self.last_seq = message.seq;
        self.ring.push_back(message);
        let evicted = if self.ring.len() > self.limit {
            self.ring.pop_front()
        } else {
            None
        };
        debug_assert!(self.ring.len() <= self.limit);
        evicted
    }

    /// The newest message (the one just appended, after [`Self::append`]).
    pub fn newest(&self) -> Option<&Stored> {
        self.ring.back()
    }

    /// Keeps at most `limit` (≥ 1) messages from now on; returns the
    /// messages evicted to get there, oldest first.
    pub fn set_limit(&mut self, limit: usize) -> Vec<Stored> {
        self.limit = limit.max(1);
        let excess = self.ring.len().saturating_sub(self.limit);
        let evicted = self.ring.drain(..excess).collect();
        // A ring grown for a larger limit gives the memory back.
        self.ring.shrink_to(self.limit);
        evicted
    }

    /// Every retained message, oldest first.
    pub fn retained(&self) -> Messages<'_> {
        self.ring.iter()
    }

    /// The retained message with this `seq`, if any.
    pub fn get(&self, seq: u64) -> Option<&Stored> {
        let first = self.ring.front()?.seq;
        let index = usize::try_from(seq.checked_sub(first)?).ok()?;
        self.ring.get(index)
    }

    /// The messages after `since_seq`. `recovered` is true when `epoch` is
    /// this log's epoch (or absent), `since_seq` is not beyond the last
    /// `seq`, and nothing after it has been evicted; otherwise every retained
    /// message is returned so the client knows it may have a gap.
    pub fn since(&self, since_seq: u64, epoch: Option<&str>) -> Recovery<'_> {
        let same_epoch = epoch.is_none_or(|e| e == self.epoch);
        let first_retained = self.ring.front().map_or(self.last_seq + 1, |m| m.seq);
        let nothing_missing = since_seq <= self.last_seq && since_seq + 1 >= first_retained;
        if same_epoch && nothing_missing {
            let skip = usize::try_from(since_seq + 1 - first_retained).unwrap_or(usize::MAX);
            Recovery {
                messages: self.ring.range(skip.min(self.ring.len())..),
                recovered: true,
            }
        } else {
            Recovery {
                messages: self.retained(),
                recovered: false,
            }
        }
    }

    /// The newest `limit` retained messages with `seq < before_seq` (all when
    /// `None`), oldest first, and whether older retained ones exist.
    pub fn page(&self, before_seq: Option<u64>, limit: usize) -> (Messages<'_>, bool) {
        let end = match before_seq {
            None => self.ring.len(),
            Some(before) => self.ring.partition_point(|m| m.seq < before),
        };
        let start = end.saturating_sub(limit);
        (self.ring.range(start..end), start > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::MessageKind;
    use crate::protocol::server::NewMessage;

    fn msg(seq: u64) -> Stored {
        Stored {
            seq,
            frame: MessageFrame::encode(&NewMessage {
                id: "m",
                seq,
                room_id: "r",
                user_id: "u",
                username: "u",
                content: "x",
                kind: MessageKind::Text,
                timestamp: "",
                client_message_id: None,
            }),
            retry: None,
        }
    }

    fn log_with(n: u64, limit: usize) -> MemoryLog {
        let mut log = MemoryLog::new("e".into(), limit);
        for seq in 1..=n {
            log.append(msg(seq));
        }
        log
    }

    fn seqs(v: Messages<'_>) -> Vec<u64> {
        v.map(|m| m.seq).collect()
    }

    #[test]
    fn evicts_oldest_first() {
        let mut log = log_with(7, 5);
        assert_eq!(seqs(log.retained()), vec![3, 4, 5, 6, 7]);
        assert_eq!(log.get(3).unwrap().seq, 3);
        assert!(log.get(2).is_none());
        assert!(log.get(8).is_none());
        assert_eq!(log.newest().unwrap().seq, 7);
        assert_eq!(log.append(msg(8)).map(|m| m.seq), Some(3));
        let evicted: Vec<u64> = log.set_limit(2).iter().map(|m| m.seq).collect();
        assert_eq!(evicted, [4, 5, 6]);
        assert_eq!(seqs(log.retained()), vec![7, 8]);
    }

    #[test]
    fn recovery_bounds() {
        let log = log_with(7, 5);
        // Everything after 2 is retained (3..7).
        let r = log.since(2, Some("e"));
        assert!(r.recovered);
        assert_eq!(seqs(r.messages), vec![3, 4, 5, 6, 7]);
        // Message 2 was evicted.
        let r = log.since(1, None);
        assert!(!r.recovered);
        assert_eq!(seqs(r.messages), vec![3, 4, 5, 6, 7]);
        // Up to date.
        let r = log.since(7, None);
        assert!(r.recovered);
        assert_eq!(r.messages.len(), 0);
        // Beyond the last seq.
        assert!(!log.since(8, None).recovered);
        // Another epoch.
        let r = log.since(5, Some("other"));
        assert!(!r.recovered);
        assert_eq!(r.messages.len(), 5);
        // Empty room.
        let empty = MemoryLog::new("e".into(), 5);
        assert!(empty.since(0, None).recovered);
        assert!(!empty.since(1, None).recovered);
    }

    #[test]
    fn pages_backwards() {
        let log = log_with(10, 8);
        let (page, more) = log.page(None, 3);
        assert_eq!((seqs(page), more), (vec![8, 9, 10], true));
        let (page, more) = log.page(Some(8), 3);
        assert_eq!((seqs(page), more), (vec![5, 6, 7], true));
        let (page, more) = log.page(Some(5), 3);
        assert_eq!((seqs(page), more), (vec![3, 4], false));
        let (page, more) = log.page(Some(1), 3);
        assert_eq!((seqs(page), more), (vec![], false));
        let (page, more) = log.page(Some(100), 50);
        assert_eq!((seqs(page), more), ((3..=10).collect(), false));
    }
}
