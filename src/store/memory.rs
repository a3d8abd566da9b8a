//! [`MemoryStore`]: every shared thing of the service in this process.
//!
//! It answers each [`Op`] at once, in the order given, with the semantics
//! written in the parent module; what it publishes it returns beside the
//! reply. It reads no clock and does no IO: a single node runs on it, and
//! the simulation and the differential test use it as the model of what a
//! Redis store must answer.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use super::{
    BucketShape, Event, Holder, NodeId, Op, Present, Refusal, Reply, RoomRecord, RoomView, Since,
    StoredMessage,
};
use crate::core::{Bucket, BucketLimit, Timestamp};

/// `(sender, clientMessageId)`, shared by a retained message and the index.
type RetryKey = (Arc<str>, Arc<str>);

/// Charges between two sweeps of the buckets that are full again (a full
/// bucket is the same as none, so it is forgotten to bound memory).
const CHARGES_PER_BUCKET_SWEEP: u32 = 1024;

/// One retained message.
#[derive(Debug, Clone)]
struct Entry {
    message: StoredMessage,
    retry: Option<RetryKey>,
}

/// A user present in a room.
#[derive(Debug, Clone)]
struct Presence {
    /// The name presence shows; `None` when it is the user id (as for a
    /// token without a username), which then is not held twice.
    username: Option<Box<str>>,
    /// Its first connection in the room, held inline: most users have one.
    first: Holder,
    /// Its other connections in the room.
    more: Vec<Holder>,
}

impl Presence {
    fn new(user: &str, username: &str, holder: Holder) -> Presence {
        Presence {
            username: (username != user).then(|| username.into()),
            first: holder,
            more: Vec::new(),
        }
    }

    fn name<'a>(&'a self, user: &'a str) -> &'a str {
        self.username.as_deref().unwrap_or(user)
    }

    fn holders(&self) -> impl Iterator<Item = &Holder> {
        std::iter::once(&self.first).chain(&self.more)
    }

    fn add(&mut self, holder: &Holder) {
        if !self.holders().any(|h| h == holder) {
            self.more.push(holder.clone());
        }
    }

    /// Takes `holder` out: `None` if it was not in, else whether none is
    /// left (then `first` is stale and the entry must go).
    fn remove(&mut self, holder: &Holder) -> Option<bool> {
        if self.first == *holder {
            match self.more.pop() {
                Some(next) => {
                    self.first = next;
                    Some(false)
                }
                None => Some(true),
            }
        } else {
            let at = self.more.iter().position(|h| h == holder)?;
            self.more.swap_remove(at);
            Some(false)
        }
    }
}

/// One room's shared state.
#[derive(Debug, Clone)]
struct Room {
    record: RoomRecord,
    /// `seq` of the last message stored in this epoch.
    last_seq: u64,
    /// The newest messages, oldest first.
    log: VecDeque<Entry>,
    retry: BTreeMap<RetryKey, u64>,
    present: BTreeMap<String, Presence>,
    /// The number of its last presence change.
    pseq: u64,
    /// Since when nobody is in it (set at creation and by the last leave).
    empty_since_ms: Option<u64>,
    /// A user's room its creator has not joined yet: to everyone else it is
    /// not there (the creator is joined to it at once, as far as they see).
    awaiting_creator: bool,
}

impl Room {
    fn new(record: RoomRecord) -> Room {
        let empty_since_ms = Some(record.created_at_ms);
        Room {
            record,
            last_seq: 0,
            log: VecDeque::new(),
            retry: BTreeMap::new(),
            present: BTreeMap::new(),
            pseq: 0,
            empty_since_ms,
            awaiting_creator: false,
        }
    }

    /// Whether `user` sees the room (anyone, once its creator joined).
    fn seen_by(&self, user: Option<&str>) -> bool {
        !self.awaiting_creator || user.is_some_and(|u| self.record.created_by.as_deref() == Some(u))
    }

    fn view(&self) -> RoomView {
        RoomView {
            record: self.record.clone(),
            member_count: self.present.len() as u64,
        }
    }

    /// Whether `holder` is `user`'s connection in the room.
    fn holds(&self, user: &str, holder: &Holder) -> bool {
        self.present
            .get(user)
            .is_some_and(|p| p.holders().any(|h| h == holder))
    }

    fn users(&self) -> Vec<Present> {
        self.present
            .iter()
            .map(|(user, p)| Present {
                user: user.clone(),
                username: p.name(user).to_owned(),
            })
            .collect()
    }

    fn retained(&self) -> Vec<StoredMessage> {
        self.log.iter().map(|e| e.message.clone()).collect()
    }

    /// The messages after `since`, and whether that is all of them.
    fn since(&self, since: &Since) -> (Vec<StoredMessage>, bool) {
        let same_epoch = since
            .epoch
            .as_deref()
            .is_none_or(|e| e == self.record.epoch);
        let first_retained = self
            .log
            .front()
            .map_or(self.last_seq + 1, |e| e.message.seq);
        let nothing_missing =
            since.seq <= self.last_seq && since.seq.saturating_add(1) >= first_retained;
        if same_epoch && nothing_missing {
            let after = self
                .log
                .iter()
                .filter(|e| e.message.seq > since.seq)
                .map(|e| e.message.clone())
                .collect();
            (after, true)
        } else {
            (self.retained(), false)
        }
    }

    /// Keeps the newest `history_limit` (≥ 1) messages; an evicted
    /// message's retry key goes with it.
    fn trim(&mut self, history_limit: u32) {
        let limit = history_limit.max(1) as usize;
        while self.log.len() > limit {
            let old = self.log.pop_front().expect("longer than the limit");
            if let Some(key) = old.retry {
                self.retry.remove(&key);
            }
        }
    }

    /// Takes `holder` out; returns whether its user is now absent (`None`:
    /// it was not in).
    fn remove_holder(&mut self, user: &str, holder: &Holder) -> Option<(bool, Present)> {
        let p = self.present.get_mut(user)?;
        let last = p.remove(holder)?;
        let who = Present {
            user: user.to_owned(),
            username: p.name(user).to_owned(),
        };
        if last {
            self.present.remove(user);
        }
        Some((last, who))
    }
}

/// Every shared thing of the service, in memory.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    rooms: BTreeMap<String, Room>,
    /// The rooms each user created with `CreateRoom` that still exist (by
    /// id, as the Redis store keeps them: a room that never counted, one an
    /// `EnsureRoom` made, cannot be uncounted).
    created: BTreeMap<String, BTreeSet<String>>,
    buckets: BTreeMap<String, Bucket>,
    charges_since_sweep: u32,
    /// Node → when its lease runs out.
    leases: BTreeMap<NodeId, u64>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// Rooms that exist now.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// Executes `op`: its reply, and the events it published, in order.
    pub fn apply(&mut self, op: &Op) -> (Reply, Vec<Event>) {
        let mut events = Vec::new();
        let reply = self.execute(op, &mut events);
        (reply, events)
    }

    fn execute(&mut self, op: &Op, events: &mut Vec<Event>) -> Reply {
        match op {
            Op::EnsureRoom { record } => {
                let room = self
                    .rooms
                    .entry(record.id.clone())
                    .or_insert_with(|| Room::new(record.clone()));
                Reply::Room(room.record.clone())
            }
            Op::CreateRoom {
                record,
                rooms_per_user_max,
                max_rooms,
            } => self.create_room(record, *rooms_per_user_max, *max_rooms),
            Op::ListRooms => Reply::Rooms(
                self.rooms
                    .values()
                    .filter(|r| r.seen_by(None))
                    .map(Room::view)
                    .collect(),
            ),
            Op::Join {
                room,
                user,
                username,
                holder,
                granted,
                since,
                history_limit,
                now_ms: _,
            } => {
                self.trim(room, *history_limit);
                self.join(
                    room,
                    user,
                    username,
                    holder,
                    *granted,
                    since.as_ref(),
                    events,
                )
            }
            Op::Lookup { room } => match self.rooms.get(room) {
                Some(r) if r.seen_by(None) => Reply::Room(r.record.clone()),
                _ => Reply::NotFound,
            },
            Op::Leave {
                room,
                user,
                holder,
                now_ms,
            } => self.leave(room, user, holder, *now_ms, events),
            Op::History {
                room,
                before_seq,
                limit,
                history_limit,
            } => {
                self.trim(room, *history_limit);
                let Some(r) = self.rooms.get(room) else {
                    return Reply::NotFound;
                };
                let end = match before_seq {
                    None => r.log.len(),
                    Some(before) => r.log.partition_point(|e| e.message.seq < *before),
                };
                let start = end.saturating_sub((*limit).max(1) as usize);
                Reply::History {
                    messages: r.log.range(start..end).map(|e| e.message.clone()).collect(),
                    has_more: start > 0,
                }
            }
            Op::Publish {
                room,
                user,
                holder,
                client_message_id,
                draft,
                bucket,
                history_limit,
                now_ms,
            } => {
                if self.rooms.get(room).is_some_and(|r| !r.holds(user, holder)) {
                    return Reply::Unheld;
                }
                if let Err(retry_after_ms) = self.charge(user, *bucket, *now_ms) {
                    return Reply::RateLimited { retry_after_ms };
                }
                let Some(r) = self.rooms.get_mut(room) else {
                    return Reply::NotFound;
                };
                let retry: Option<RetryKey> = client_message_id
                    .as_deref()
                    .map(|cmid| (Arc::from(user.as_str()), Arc::from(cmid)));
                // The index holds retained messages only (it is pruned on
                // eviction), so a hit is always found in the log.
                let first = r.log.front().map_or(0, |e| e.message.seq);
                let retained = retry
                    .as_ref()
                    .and_then(|key| r.retry.get(key))
                    .and_then(|seq| usize::try_from(seq.checked_sub(first)?).ok())
                    .and_then(|index| r.log.get(index));
                if let Some(entry) = retained {
                    return Reply::Duplicate(entry.message.clone());
                }
                r.last_seq += 1;
                let message = StoredMessage {
                    seq: r.last_seq,
                    frame: draft.frame(r.last_seq),
                };
                if let Some(key) = &retry {
                    r.retry.insert(key.clone(), message.seq);
                }
                r.log.push_back(Entry {
                    message: message.clone(),
                    retry,
                });
                r.trim(*history_limit);
                events.push(Event::Message {
                    room: room.clone(),
                    epoch: r.record.epoch.clone(),
                    user: user.clone(),
                    message: message.clone(),
                });
                Reply::Published(message, r.pseq)
            }
            Op::Since {
                room,
                since,
                history_limit,
            } => {
                self.trim(room, *history_limit);
                let Some(r) = self.rooms.get(room) else {
                    return Reply::NotFound;
                };
                let (messages, recovered) = r.since(since);
                Reply::Recovery {
                    epoch: r.record.epoch.clone(),
                    users: r.users(),
                    messages,
                    recovered,
                    last_seq: r.last_seq,
                    presence_seq: r.pseq,
                }
            }
            Op::Charge {
                user,
                bucket,
                now_ms,
            } => match self.charge(user, *bucket, *now_ms) {
                Ok(()) => Reply::Charged,
                Err(retry_after_ms) => Reply::RateLimited { retry_after_ms },
            },
            Op::Typing {
                room,
                user,
                username,
                is_typing,
                holder,
            } => {
                if !self.rooms.get(room).is_some_and(|r| r.holds(user, holder)) {
                    return Reply::Unheld;
                }
                events.push(Event::Typing {
                    room: room.clone(),
                    user: user.clone(),
                    username: username.clone(),
                    is_typing: *is_typing,
                });
                Reply::Done
            }
            Op::Heartbeat {
                node,
                now_ms,
                ttl_ms,
            } => {
                // Its own lease too may have run out (not renewed in time):
                // then it is swept with the others before it is renewed.
                let lapsed = self.leases.get(node).is_none_or(|until| *until < *now_ms);
                let gone: Vec<NodeId> = self
                    .leases
                    .iter()
                    .filter(|(_, until)| **until < *now_ms)
                    .map(|(n, _)| n.clone())
                    .collect();
                for n in &gone {
                    self.leases.remove(n);
                }
                if !gone.is_empty() {
                    // A node's death is rare: its holders are found by a
                    // look at every room rather than an index kept for it
                    // on every join.
                    let mut dead: Vec<(String, String, Holder)> = self
                        .rooms
                        .iter()
                        .flat_map(|(room, r)| {
                            r.present.iter().flat_map(move |(user, p)| {
                                p.holders().map(move |h| (room, user, h))
                            })
                        })
                        .filter(|(_, _, h)| gone.contains(&h.node))
                        .map(|(room, user, h)| (room.clone(), user.clone(), h.clone()))
                        .collect();
                    // Node by node, then room, user and connection.
                    dead.sort_by(|a, b| {
                        (&a.2.node, &a.0, &a.1, a.2.conn).cmp(&(&b.2.node, &b.0, &b.1, b.2.conn))
                    });
                    for (room, user, holder) in dead {
                        self.leave(&room, &user, &holder, *now_ms, events);
                    }
                }
                self.leases
                    .insert(node.clone(), now_ms.saturating_add(*ttl_ms));
                Reply::Swept { gone, lapsed }
            }
            Op::DeleteIfIdle {
                room,
                idle_ttl_ms,
                now_ms,
            } => {
                let idle = self.rooms.get(room).is_some_and(|r| {
                    r.record.created_by.is_some()
                        && r.present.is_empty()
                        && r.empty_since_ms
                            .is_some_and(|since| since.saturating_add(*idle_ttl_ms) <= *now_ms)
                });
                if idle {
                    let r = self.rooms.remove(room).expect("checked");
                    if let Some(creator) = &r.record.created_by
                        && let Some(ids) = self.created.get_mut(creator)
                    {
                        ids.remove(room);
                        if ids.is_empty() {
                            self.created.remove(creator);
                        }
                    }
                    events.push(Event::RoomDeleted { room: room.clone() });
                }
                Reply::Deleted(idle)
            }
        }
    }

    fn trim(&mut self, room: &str, history_limit: u32) {
        if let Some(r) = self.rooms.get_mut(room) {
            r.trim(history_limit);
        }
    }

    fn create_room(&mut self, record: &RoomRecord, per_user_max: u32, max_rooms: u64) -> Reply {
        let creator = record.created_by.clone().unwrap_or_default();
        if self.created.get(&creator).map_or(0, BTreeSet::len) >= per_user_max as usize {
            return Reply::Refused(Refusal::UserLimit);
        }
        if self.rooms.contains_key(&record.id) {
            return Reply::Refused(Refusal::Exists);
        }
        if self.rooms.len() as u64 >= max_rooms {
            return Reply::Refused(Refusal::RoomLimit);
        }
        self.created
            .entry(creator)
            .or_default()
            .insert(record.id.clone());
        self.rooms
            .insert(record.id.clone(), Room::new(record.clone()));
        if let Some(r) = self.rooms.get_mut(&record.id) {
            r.awaiting_creator = true;
        }
        Reply::Created(record.clone())
    }

    #[allow(clippy::too_many_arguments)]
    fn join(
        &mut self,
        room: &str,
        user: &str,
        username: &str,
        holder: &Holder,
        granted: bool,
        since: Option<&Since>,
        events: &mut Vec<Event>,
    ) -> Reply {
        let Some(r) = self.rooms.get_mut(room).filter(|r| r.seen_by(Some(user))) else {
            return Reply::NotFound;
        };
        r.awaiting_creator = false;
        let private = r.record.kind == crate::protocol::RoomKind::Private;
        if private && !granted && r.record.created_by.as_deref() != Some(user) {
            return Reply::Forbidden;
        }
        let first_of_user = !r.present.contains_key(user);
        match r.present.get_mut(user) {
            Some(p) => p.add(holder),
            None => {
                r.present.insert(
                    user.to_owned(),
                    Presence::new(user, username, holder.clone()),
                );
            }
        }
        r.empty_since_ms = None;
        let (messages, recovered) = match since {
            None => (r.retained(), None),
            Some(s) => {
                let (messages, recovered) = r.since(s);
                (messages, Some(recovered))
            }
        };
        let view = r.view();
        if first_of_user {
            r.pseq += 1;
            events.push(Event::Presence {
                room: room.to_owned(),
                who: Present {
                    user: user.to_owned(),
                    username: r.present[user].name(user).to_owned(),
                },
                joined: true,
                member_count: view.member_count,
                pseq: r.pseq,
                last_seq: r.last_seq,
            });
        }
        Reply::Joined {
            room: view,
            users: r.users(),
            first_of_user,
            messages,
            recovered,
            last_seq: r.last_seq,
            presence_seq: r.pseq,
        }
    }

    fn leave(
        &mut self,
        room: &str,
        user: &str,
        holder: &Holder,
        now_ms: u64,
        events: &mut Vec<Event>,
    ) -> Reply {
        let Some(r) = self.rooms.get_mut(room) else {
            return Reply::NotFound;
        };
        let last_of_user = match r.remove_holder(user, holder) {
            Some((true, who)) => {
                r.pseq += 1;
                events.push(Event::Presence {
                    room: room.to_owned(),
                    who,
                    joined: false,
                    member_count: r.present.len() as u64,
                    pseq: r.pseq,
                    last_seq: r.last_seq,
                });
                true
            }
            _ => false,
        };
        if last_of_user && r.present.is_empty() {
            r.empty_since_ms = Some(now_ms);
        }
        Reply::Left {
            last_of_user,
            member_count: r.present.len() as u64,
        }
    }

    /// Takes a token from `user`'s send bucket, or says after how many
    /// milliseconds one will be there.
    fn charge(&mut self, user: &str, shape: BucketShape, now_ms: u64) -> Result<(), u64> {
        let limit = BucketLimit {
            capacity: shape.capacity,
            window_ms: shape.window_ms,
        };
        let now = Timestamp(now_ms);
        self.charges_since_sweep += 1;
        if self.charges_since_sweep >= CHARGES_PER_BUCKET_SWEEP {
            self.charges_since_sweep = 0;
            self.buckets.retain(|_, b| b.full_at(limit) > now);
        }
        self.buckets
            .entry(user.to_owned())
            .or_insert_with(|| Bucket::full(limit, now))
            .try_take(limit, now)
    }
}

#[cfg(test)]
mod tests;
