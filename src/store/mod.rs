//! What the nodes of one service share, and the one vocabulary every store
//! speaks.
//!
//! A node's core keeps what is its own (connections, sessions, the
//! per-connection request bucket, which of its connections are in which
//! room, typing timers). Everything the contract makes service-wide lives in
//! a store: the rooms and their caps, each room's log (`seq`, history,
//! `clientMessageId` retries, the epoch), the per-user send bucket, presence,
//! and the fan-out of messages, presence and typing to every node.
//!
//! The core never talks to a store. It hands an [`Op`] out, and the shell
//! executes it against whichever store it was started with, then hands the
//! [`Reply`] back in; what a store publishes reaches every node subscribed
//! to the room as an [`Event`]. Two stores speak this vocabulary with the
//! same semantics, written down here once:
//!
//! - [`memory::MemoryStore`]: one node, everything in this process, no IO
//!   (the default, and the simulation's model of Redis);
//! - `redis`: every node of the service on one Redis, one atomic script per
//!   operation.
//!
//! A differential test runs the same seeded operation sequences against
//! both and compares every reply and every event.
//!
//! # Rules every store keeps
//!
//! - Each operation is atomic: no other operation sees half of it.
//! - A room's `seq` starts at 1 in each epoch and has no gap; a room whose
//!   data is lost (or that is deleted and created again) gets a new epoch —
//!   the one its creator proposed, which is unique to that creation.
//! - History keeps the newest `history_limit` messages of a room (the limit
//!   the last `Publish`, `Join`, `History` or `Since` on it carried: a
//!   smaller limit evicts at once); a message evicted from history can no
//!   longer be matched by its `clientMessageId`.
//! - A message is stored as its whole `NEW_MESSAGE` frame (without
//!   `requestId`): `draft.head`, the decimal `seq`, `draft.tail`.
//! - Time is what the operation carries (`now_ms`); a store never reads a
//!   clock of its own, so that every node charges buckets and ages rooms on
//!   the same arithmetic as the core.

//!
//! # How a node drives it
//!
//! - **One request at a time per connection.** A request whose answer needs
//!   the store is started (local checks, then one `Op` out) and finished
//!   when its `Reply` comes in; the connection's later messages wait behind
//!   it, so that a `JOIN_ROOM` followed at once by a `SEND_MESSAGE` is
//!   answered as it is today. A single node's `MemoryStore` answers within
//!   the same step, so nothing ever waits there.
//! - **Deliveries follow one cursor per room and node.** A node delivers a
//!   room's message `seq` to its local members only after `seq - 1`; the
//!   `Published` reply and the room's `Event::Message` both feed that
//!   cursor, and whichever comes second is dropped. A `seq` beyond the
//!   cursor + 1 (a pub/sub message lost) is held while the node reads the
//!   gap with `Op::Since`; what the store no longer retains cannot be
//!   delivered, so the connections of that room are closed with `1013` to
//!   resume (and be told `recovered: false`).
//! - **Presence and typing are replicas.** Each node keeps, for the rooms it
//!   has members in, the users present (from `Joined` and
//!   `Event::Presence`) and who is typing (from `Event::Typing`, with its
//!   own `TYPING_TIMEOUT_MS` timer, and ended by that user's
//!   `Event::Message`); `USER_JOINED`, `USER_LEFT` and `TYPING_UPDATE` are
//!   what those events become for its local members.
//! - **A room's idleness** is the store's: a `Left` reply with
//!   `member_count` 0 arms the node's `ROOM_IDLE_TTL_MS` timer, whose
//!   `DeleteIfIdle` deletes the room only if it is still empty.
//! - **Nodes come and go.** A clustered node sends `Heartbeat` every third
//!   of `NODE_TTL_MS`, which also clears the holders of nodes whose lease ran
//!   out; a single node never needs to.

use std::sync::Arc;

use bytes::Bytes;

use crate::protocol::RoomKind;

pub mod local;
pub mod memory;
pub mod redis;

/// One node of the service: unique to one run of one process (a node that
/// restarts is a new node).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub Arc<str>);

/// One connection anywhere in the service: what presence counts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Holder {
    /// The node the connection is on.
    pub node: NodeId,
    /// The connection's number on that node.
    pub conn: u64,
}

/// A room as stored: everything `RoomInfo` shows but the member count, and
/// its epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomRecord {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its description.
    pub description: String,
    /// Public or private.
    pub kind: RoomKind,
    /// When it was created, in milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// The user who created it; `None` for a default room, which is never
    /// deleted and counts against no user.
    pub created_by: Option<String>,
    /// The epoch of its log.
    pub epoch: String,
}

/// A room and how many users are in it now (service-wide).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomView {
    /// The room.
    pub record: RoomRecord,
    /// Distinct users with at least one connection in it.
    pub member_count: u64,
}

/// A user as presence shows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Present {
    /// The user's id.
    pub user: String,
    /// The name of the user's first connection to join (kept while the user
    /// has any connection in the room).
    pub username: String,
}

/// A message before the store gives it its `seq`: its `NEW_MESSAGE` frame
/// cut where the digits of `seq` go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    /// The frame up to and including `"seq":`.
    pub head: Bytes,
    /// The frame after the digits of `seq`.
    pub tail: Bytes,
}

impl Draft {
    /// The whole frame with `seq` in place.
    pub fn frame(&self, seq: u64) -> Bytes {
        let digits = seq.to_string();
        let mut out = Vec::with_capacity(self.head.len() + digits.len() + self.tail.len());
        out.extend_from_slice(&self.head);
        out.extend_from_slice(digits.as_bytes());
        out.extend_from_slice(&self.tail);
        Bytes::from(out)
    }
}

/// A message as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Its `seq` in its room's epoch.
    pub seq: u64,
    /// Its whole `NEW_MESSAGE` frame, without `requestId`.
    pub frame: Bytes,
}

/// A token bucket's shape (see `core::Bucket`, whose arithmetic every store
/// uses: levels in units of `1 / window_ms` of a token, integers only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketShape {
    /// Tokens when full; at least 1.
    pub capacity: u64,
    /// Time for an empty bucket to refill; at least 1 ms.
    pub window_ms: u64,
}

/// What a recovering `JOIN_ROOM` asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Since {
    /// The last `seq` the client has.
    pub seq: u64,
    /// The epoch that `seq` is of, if the client sent it.
    pub epoch: Option<String>,
}

/// Why a `CreateRoom` created nothing. Checked in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The creator already has `rooms_per_user_max` rooms.
    UserLimit,
    /// A room with this id exists.
    Exists,
    /// `max_rooms` rooms exist.
    RoomLimit,
}

/// An operation on the store. Every store answers each with exactly one
/// [`Reply`] (the variant named in its doc, `NotFound` where a room may be
/// missing) and publishes the [`Event`]s its doc names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Creates a default room unless a room with its id exists (no caps, no
    /// event). → [`Reply::Room`] with the room as stored (the existing one
    /// if there was one).
    EnsureRoom {
        /// The room, with a fresh epoch.
        record: RoomRecord,
    },
    /// Creates a user's room unless refused (see [`Refusal`]). Nobody joins
    /// it: the creator's node sends a `Join` next. Until that `Join`, the
    /// room is not there to anyone else (`Join` and `Lookup` answer
    /// [`Reply::NotFound`], `ListRooms` leaves it out): as users see it, its
    /// creator was in it from the start. → [`Reply::Created`] or
    /// [`Reply::Refused`].
    CreateRoom {
        /// The room, with a fresh epoch; `created_by` is set.
        record: RoomRecord,
        /// `ROOMS_PER_USER_MAX`.
        rooms_per_user_max: u32,
        /// `MAX_ROOMS` (default rooms count).
        max_rooms: u64,
    },
    /// → [`Reply::Rooms`]: every room, in id order.
    ListRooms,
    /// Puts `holder` in `room` for `user`. A private room is refused unless
    /// `granted` (the connection's claim lists it, or it is already in it)
    /// or `user` created it. The first holder of a user makes the user
    /// present: [`Event::Presence`] (`joined`) is published, and the
    /// room's `empty_since` is cleared. → [`Reply::Joined`],
    /// [`Reply::Forbidden`] or [`Reply::NotFound`].
    Join {
        /// The room.
        room: String,
        /// Who joins.
        user: String,
        /// The name presence shows if this is the user's first holder.
        username: String,
        /// The connection joining.
        holder: Holder,
        /// Whether the connection may join a private room it did not create.
        granted: bool,
        /// A recovery: the messages after `since.seq` are wanted (all of
        /// them, or `recovered: false`); `None`: the retained history.
        since: Option<Since>,
        /// `HISTORY_LIMIT` now: the room's history is first cut to it.
        history_limit: u32,
        /// When (milliseconds since the Unix epoch).
        now_ms: u64,
    },
    /// Takes `holder` out of `room`. The user's last holder makes it absent:
    /// [`Event::Presence`] (not `joined`) is published; the last user makes
    /// the room empty since `now_ms`. → [`Reply::Left`] or
    /// [`Reply::NotFound`] (the room is gone).
    Leave {
        /// The room.
        room: String,
        /// Whose connection.
        user: String,
        /// The connection leaving.
        holder: Holder,
        /// When.
        now_ms: u64,
    },
    /// → [`Reply::History`]: up to `limit` retained messages before
    /// `before_seq` (before the end when `None`), oldest first, and whether
    /// older ones are retained; or [`Reply::NotFound`].
    History {
        /// The room.
        room: String,
        /// Exclusive upper bound.
        before_seq: Option<u64>,
        /// At most this many (≥ 1).
        limit: u32,
        /// `HISTORY_LIMIT` now: the room's history is first cut to it.
        history_limit: u32,
    },
    /// A `SEND_MESSAGE`, in this order: if the room exists but `holder` is
    /// not in it (its node's lease ran out and the other nodes took it out),
    /// [`Reply::Unheld`] and nothing else happens; charge `user`'s send
    /// bucket (refused: [`Reply::RateLimited`], nothing else happens); if `(user,
    /// client_message_id)` matches a retained message, [`Reply::Duplicate`]
    /// with it (nothing stored or published); else give it the next `seq`,
    /// append it, evict past `history_limit`, publish [`Event::Message`],
    /// and answer [`Reply::Published`]. A missing room: [`Reply::NotFound`]
    /// (after the charge).
    Publish {
        /// The room.
        room: String,
        /// The sender.
        user: String,
        /// The sender's connection.
        holder: Holder,
        /// The sender's retry key, if it gave one.
        client_message_id: Option<String>,
        /// The frame to store.
        draft: Draft,
        /// The per-user send bucket.
        bucket: BucketShape,
        /// `HISTORY_LIMIT`.
        history_limit: u32,
        /// When.
        now_ms: u64,
    },
    /// The messages of `room` after `since` — what a node that saw a `seq`
    /// gap in a room's events (a pub/sub message lost while it was cut off
    /// from the store) reads before it delivers anything newer. →
    /// [`Reply::Recovery`] or [`Reply::NotFound`].
    Since {
        /// The room.
        room: String,
        /// The last `seq` the node delivered, and its epoch.
        since: Since,
        /// `HISTORY_LIMIT` now: the room's history is first cut to it.
        history_limit: u32,
    },
    /// → [`Reply::Room`] with the room, or [`Reply::NotFound`]: what a
    /// request about a room the connection is not in answers (`NOT_A_MEMBER`
    /// or `ROOM_NOT_FOUND`).
    Lookup {
        /// The room.
        room: String,
    },
    /// Charges `user`'s send bucket for a `SEND_MESSAGE` that fails before
    /// it is published (the sender is not in the room). → [`Reply::Charged`]
    /// or [`Reply::RateLimited`].
    Charge {
        /// The sender.
        user: String,
        /// The per-user send bucket.
        bucket: BucketShape,
        /// When.
        now_ms: u64,
    },
    /// Publishes [`Event::Typing`] (nothing is stored). → [`Reply::Done`].
    Typing {
        /// The room.
        room: String,
        /// Who.
        user: String,
        /// Their display name.
        username: String,
        /// Started (or renewed) or stopped.
        is_typing: bool,
        /// The typer's connection: one not in the room is [`Reply::Unheld`],
        /// and nothing is published.
        holder: Holder,
    },
    /// `node` is alive until `now_ms + ttl_ms`. Every node whose lease ran
    /// out before `now_ms` is gone — `node` itself too, when its own lease
    /// ran out before this renewal: its holders leave their rooms (with the
    /// events and `empty_since` of a `Leave`). → [`Reply::Swept`] with the
    /// nodes found gone, and whether `node`'s lease had lapsed (ran out, or
    /// was not there: swept by another node, or never renewed before).
    Heartbeat {
        /// The node.
        node: NodeId,
        /// When.
        now_ms: u64,
        /// `NODE_TTL_MS`.
        ttl_ms: u64,
    },
    /// Deletes `room` if a user created it and it has been empty since at
    /// least `idle_ttl_ms` before `now_ms`, publishing
    /// [`Event::RoomDeleted`]. → [`Reply::Deleted`] (whether it was).
    DeleteIfIdle {
        /// The room.
        room: String,
        /// `ROOM_IDLE_TTL_MS` (not 0).
        idle_ttl_ms: u64,
        /// When.
        now_ms: u64,
    },
}

/// A store's answer to one [`Op`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `EnsureRoom`, `Lookup`: the room as stored.
    Room(RoomRecord),
    /// `CreateRoom`: created.
    Created(RoomRecord),
    /// `CreateRoom`: refused.
    Refused(Refusal),
    /// `ListRooms`.
    Rooms(Vec<RoomView>),
    /// `Join`: in.
    Joined {
        /// The room, its member count counting the joiner.
        room: RoomView,
        /// The users present, joiner included, in user id order.
        users: Vec<Present>,
        /// Whether this made the user present (a `USER_JOINED` is owed to
        /// the others).
        first_of_user: bool,
        /// Oldest first: the messages after `since.seq` when `recovered`,
        /// else (no `since`, or recovery impossible) every retained message.
        messages: Vec<StoredMessage>,
        /// With `since`: whether everything after `since.seq` in the room's
        /// current epoch is retained — the epoch matches (or was not given),
        /// `since.seq` is not beyond the last `seq`, and nothing after it
        /// was evicted.
        recovered: Option<bool>,
        /// The `seq` of the room's last message (0 before the first): where
        /// the joining node's deliveries of this room start from.
        last_seq: u64,
        /// The number of the room's last presence change (0 before the
        /// first): `users` is the room after it.
        presence_seq: u64,
    },
    /// `Since`.
    Recovery {
        /// The room's current epoch.
        epoch: String,
        /// The users present now, in user id order: what a node whose
        /// events were cut compares its presence with.
        users: Vec<Present>,
        /// As in `Joined`.
        messages: Vec<StoredMessage>,
        /// As in `Joined`.
        recovered: bool,
        /// As in `Joined`.
        last_seq: u64,
        /// As in `Joined`.
        presence_seq: u64,
    },
    /// `Join`: a private room the user may not join.
    Forbidden,
    /// `Leave`: out.
    Left {
        /// Whether this made the user absent.
        last_of_user: bool,
        /// Users still present.
        member_count: u64,
    },
    /// `History`.
    History {
        /// Oldest first.
        messages: Vec<StoredMessage>,
        /// Whether a retained message is older than the first one.
        has_more: bool,
    },
    /// `Publish`: stored and published; and the number of the room's last
    /// presence change before it (a node shows the message after it).
    Published(StoredMessage, u64),
    /// `Publish`: the retry of a retained message, which is this one.
    Duplicate(StoredMessage),
    /// `Publish`, `Charge`: the bucket is empty; a token is there after
    /// this many milliseconds (≥ 1).
    RateLimited {
        /// Milliseconds.
        retry_after_ms: u64,
    },
    /// `Charge`: charged.
    Charged,
    /// `Typing`.
    Done,
    /// `Heartbeat`.
    Swept {
        /// The nodes found gone, in id order.
        gone: Vec<NodeId>,
        /// Whether the renewing node's own lease had lapsed: its holders are
        /// out of their rooms, and its connections must join again.
        lapsed: bool,
    },
    /// `Publish`, `Typing`: the connection is not in the room as the store
    /// knows it (its node's lease ran out and the other nodes took it out).
    Unheld,
    /// `DeleteIfIdle`: whether the room was deleted.
    Deleted(bool),
    /// The room does not exist.
    NotFound,
}

/// What a store publishes to every node subscribed to a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A message was stored.
    Message {
        /// The room.
        room: String,
        /// Its epoch.
        epoch: String,
        /// The sender (whose typing indicator it ends).
        user: String,
        /// The message.
        message: StoredMessage,
    },
    /// A user became present in a room, or absent.
    Presence {
        /// The room.
        room: String,
        /// The user.
        who: Present,
        /// Present (`USER_JOINED`) or absent (`USER_LEFT`).
        joined: bool,
        /// Users present after the change.
        member_count: u64,
        /// The change's number in the room: 1, 2, … in the order of the
        /// room's presence changes (the `presence_seq` a join or a read
        /// back reflects).
        pseq: u64,
        /// The `seq` of the room's last message before the change (a node
        /// shows the change after it).
        last_seq: u64,
    },
    /// A user started or stopped typing.
    Typing {
        /// The room.
        room: String,
        /// The user.
        user: String,
        /// Their display name.
        username: String,
        /// Started (or renewed) or stopped.
        is_typing: bool,
    },
    /// The room was deleted.
    RoomDeleted {
        /// The room.
        room: String,
    },
}

impl Event {
    /// The room the event is about: what a node subscribes by.
    pub fn room(&self) -> &str {
        match self {
            Event::Message { room, .. }
            | Event::Presence { room, .. }
            | Event::Typing { room, .. }
            | Event::RoomDeleted { room } => room,
        }
    }
}
