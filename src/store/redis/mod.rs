//! The store of a cluster: every node of the service on one Redis, each
//! [`Op`] one atomic Lua script, events on one pub/sub channel per room.
//!
//! # Shape
//!
//! - [`RedisStore`] runs operations: one multiplexed
//!   [`ConnectionManager`] per node, shared by
//!   every connection of the node (clones of the store share it). Calls made
//!   concurrently are written to the one TCP connection without waiting for
//!   each other's answers: they pipeline by themselves, with no batching
//!   code here. The manager reconnects by itself after the connection drops.
//! - [`Subscriber`] is the other connection a node keeps: the pub/sub
//!   connection that turns what the scripts `PUBLISH` into [`Event`](crate::store::Event)s, per
//!   room the node subscribes to, in the order the scripts ran.
//!
//! Each operation is one `EVALSHA` of its script (`redis::Script` loads it
//! and retries once on `NOSCRIPT`, after a Redis restart or a
//! `SCRIPT FLUSH`); [`RedisStore::connect`] loads them all first, so the
//! first calls do not pay for it. A `Publish` is one round trip: charge
//! the bucket, match a retry, `seq`, append, evict with the retry keys of
//! what it evicts, `PUBLISH`, all in one script. `Join`, `History` and
//! `Since` write too: they first cut the room's history to the
//! `HISTORY_LIMIT` they carry, as the memory store does. The scripts are in
//! this folder (`*.lua`, with `common.lua`'s helpers in front of each), the
//! key layout in [`keys`].
//!
//! # Why `redis` (redis-rs) and not `fred`
//!
//! Both are maintained async clients with scripts, pub/sub, TLS and
//! reconnection. `redis` is the more widely used of the two, and has just
//! the surface this store needs: `Script` (EVALSHA with the NOSCRIPT
//! fallback), a `ConnectionManager` that multiplexes and reconnects, and an
//! async `PubSub` that splits into a sink (subscribe) and a stream
//! (messages). `fred` brings its own client pool, routing and event
//! machinery, and more features to compile (on a 2-core machine that
//! counts). Nothing here depends on one beyond this module.
//!
//! # What the scripts assume
//!
//! - One Redis, or a primary with replicas (the commands go to the
//!   primary): not Redis Cluster. A room's keys share a hash tag
//!   (`{<room id>}`) and the scripts of one room pass them in `KEYS`, but a
//!   `Publish` also charges the sender's bucket (another slot),
//!   `CreateRoom` counts the creator's rooms and the index of rooms, and
//!   `Heartbeat`, `ListRooms` and `DeleteIfIdle` touch keys they compute
//!   (the rooms of a dead node, every room, the creator's set).
//! - Lua numbers are doubles: exact for integers below 2^53. `seq`,
//!   timestamps, counts and bucket levels stay far below it; the arguments
//!   that could leave it are refused with [`StoreError::OutOfRange`] (a
//!   bucket whose `capacity * window_ms` passes 2^52, a `now_ms` past
//!   2^53), or clamped where that changes no answer (a `sinceSeq` or
//!   `beforeSeq` above any `seq`, a lease expiry past 2^53 ms).
//! - Time is the operation's `now_ms`, never Redis's clock, with one
//!   exception that changes no answer: a send bucket key expires
//!   `window_ms + 60 s` after its last charge (a bucket is full again
//!   `window_ms` after it, the same as a missing one), so that the buckets
//!   of users gone do not stay forever. Nodes whose clocks run more than a
//!   minute apart from Redis's would see a bucket forgotten early.
//! - Data a script cannot read (a hash field or a log entry this store did
//!   not write) fails the call with a script error, a [`StoreError`]; the
//!   scripts read what they decide on before they write where they can,
//!   but Redis does not roll back what a failing script wrote before it
//!   failed (a `Publish` has charged the bucket before it reads the room).
//!
//! # Errors
//!
//! Every call has a timeout (`REDIS_TIMEOUT_MS`); a timeout, a lost
//! connection or a script error is a [`StoreError`], never a [`Reply`]. The
//! operation may then have happened or not: a `Publish` whose outcome is
//! unknown is retried with its `clientMessageId` and stored at most once.

mod codec;
mod error;
pub mod keys;
mod scripts;
mod subscriber;

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ScriptInvocation, Value};

pub use error::StoreError;
use keys::Keys;
pub use subscriber::{Notice, Subscriber};

use crate::store::{BucketShape, Holder, NodeId, Op, Refusal, Reply, RoomRecord, RoomView, Since};

/// Integers up to here are exact in a Lua number (a double).
const EXACT: u64 = 1 << 53;

/// How much longer than its window a send bucket is kept after its last
/// charge (see the module doc).
const BUCKET_SLACK_MS: u64 = 60_000;

/// Where the store is and how long a call may take.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `REDIS_URL`: `redis://[user:pass@]host:port[/db]` or `rediss://`.
    pub url: String,
    /// `REDIS_KEY_PREFIX` (default `chatflow`).
    pub key_prefix: String,
    /// `REDIS_TIMEOUT_MS`: the most any call waits for its answer.
    pub timeout: Duration,
}

/// The Redis store of one node. Cheap to clone: clones share the
/// connection.
#[derive(Clone)]
pub struct RedisStore {
    client: redis::Client,
    conn: ConnectionManager,
    keys: Keys,
    timeout: Duration,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.keys.prefix())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects (within the timeout) and loads the scripts.
    pub async fn connect(config: &RedisConfig) -> Result<RedisStore, StoreError> {
        let store = RedisStore::new(config)?;
        let mut conn = store.conn.clone();
        for script in scripts::all() {
            store.bounded(script.load_async(&mut conn)).await?;
        }
        Ok(store)
    }

    /// A store whose connection is made at the first call (and again after
    /// it drops): a node can start while Redis is away. Fails only on a bad
    /// URL.
    pub fn new(config: &RedisConfig) -> Result<RedisStore, StoreError> {
        // rediss:// takes rustls's process-wide crypto provider, which
        // rustls installs from its one provider compiled in (ring) when none
        // was installed before.
        let client = redis::Client::open(config.url.as_str())?;
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), manager)?;
        Ok(RedisStore {
            client,
            conn,
            keys: Keys::new(&config.key_prefix),
            timeout: config.timeout,
        })
    }

    /// The key and channel names.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Whether Redis answers `PING` within the timeout (for `/readyz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let pong: String = self
            .bounded(redis::cmd("PING").query_async(&mut conn))
            .await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(StoreError::decode(format!("PING answered {pong:?}")))
        }
    }

    /// A pub/sub connection of this node, subscribed to nothing yet, made
    /// in the background (see [`Subscriber::spawn`]).
    pub fn subscriber_in_background(&self) -> Subscriber {
        Subscriber::spawn(self.client.clone(), self.keys.clone(), self.timeout)
    }

    /// A new pub/sub connection of this node, subscribed to nothing yet.
    pub async fn subscriber(&self) -> Result<Subscriber, StoreError> {
        Subscriber::start(self.client.clone(), self.keys.clone(), self.timeout).await
    }

    async fn bounded<T>(
        &self,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        error::within(self.timeout, call).await
    }

    async fn run(&self, invocation: &ScriptInvocation<'_>) -> Result<Value, StoreError> {
        let mut conn = self.conn.clone();
        self.bounded(invocation.invoke_async::<Value>(&mut conn))
            .await
    }

    /// Runs one operation: exactly the reply the memory store gives, or an
    /// error when Redis could not be asked.
    pub async fn apply(&self, op: &Op) -> Result<Reply, StoreError> {
        match op {
            Op::EnsureRoom { record } => self.create_room(record, None).await,
            Op::CreateRoom {
                record,
                rooms_per_user_max,
                max_rooms,
            } => {
                self.create_room(record, Some((*rooms_per_user_max, *max_rooms)))
                    .await
            }
            Op::ListRooms => self.list_rooms().await,
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
                let mut script = scripts::JOIN.prepare_invoke();
                script
                    .key(self.keys.room(room))
                    .key(self.keys.room_part(room, "log"))
                    .key(self.keys.room_part(room, "users"))
                    .key(self.keys.room_part(room, "holders"))
                    .key(self.keys.node_held(&holder.node.0))
                    .key(self.keys.room_part(room, "retry"))
                    .arg(user)
                    .arg(username)
                    .arg(holder_field(holder))
                    .arg(flag(*granted))
                    .arg(flag(since.is_some()));
                since_args(&mut script, since.as_ref().unwrap_or(&NO_SINCE));
                script
                    .arg(*history_limit)
                    .arg(self.keys.channel(room))
                    .arg(format!("{}:{room}", holder.conn));
                self.join(room, &script).await
            }
            Op::Lookup { room } => {
                let v = self.run(&scripts::LOOKUP.key(self.keys.room(room))).await?;
                let (tag, rest) = codec::tagged(v)?;
                match tag {
                    b'N' => Ok(Reply::NotFound),
                    b'R' => Ok(Reply::Room(codec::record(
                        room,
                        Value::Array(rest.collect()),
                    )?)),
                    t => Err(unexpected("Lookup", t)),
                }
            }
            Op::Since {
                room,
                since,
                history_limit,
            } => {
                let mut script = scripts::SINCE.prepare_invoke();
                script
                    .key(self.keys.room(room))
                    .key(self.keys.room_part(room, "log"))
                    .key(self.keys.room_part(room, "retry"))
                    .key(self.keys.room_part(room, "users"));
                since_args(&mut script, since);
                script.arg(*history_limit);
                let v = self.run(&script).await?;
                let (tag, mut rest) = codec::tagged(v)?;
                match tag {
                    b'N' => Ok(Reply::NotFound),
                    b'R' => Ok(Reply::Recovery {
                        epoch: codec::string(codec::next(&mut rest)?)?,
                        recovered: codec::uint(codec::next(&mut rest)?)? == 1,
                        messages: codec::entries(codec::next(&mut rest)?)?,
                        last_seq: codec::uint(codec::next(&mut rest)?)?,
                        users: codec::users(codec::next(&mut rest)?)?,
                        presence_seq: codec::uint(codec::next(&mut rest)?)?,
                    }),
                    t => Err(unexpected("Since", t)),
                }
            }
            Op::Leave {
                room,
                user,
                holder,
                now_ms,
            } => self.leave(room, user, holder, *now_ms).await,
            Op::History {
                room,
                before_seq,
                limit,
                history_limit,
            } => {
                self.history(room, *before_seq, *limit, *history_limit)
                    .await
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
                let mut script = scripts::PUBLISH.prepare_invoke();
                charge_args(&self.keys, &mut script, user, bucket, *now_ms)?;
                let retry = client_message_id
                    .as_ref()
                    .map(|id| format!("{user}\0{id}"))
                    .unwrap_or_default();
                script
                    .key(self.keys.room(room))
                    .key(self.keys.room_part(room, "log"))
                    .key(self.keys.room_part(room, "retry"))
                    .key(self.keys.room_part(room, "holders"))
                    .arg(retry)
                    .arg(&draft.head[..])
                    .arg(&draft.tail[..])
                    .arg(*history_limit)
                    .arg(self.keys.channel(room))
                    .arg(user)
                    .arg(holder_field(holder));
                let v = self.run(&script).await?;
                let (tag, mut rest) = codec::tagged(v)?;
                match tag {
                    b'G' => Ok(Reply::Unheld),
                    b'R' => rate_limited(bucket, codec::next(&mut rest)?),
                    b'N' => Ok(Reply::NotFound),
                    b'D' => Ok(Reply::Duplicate(codec::entry(codec::next(&mut rest)?)?)),
                    b'P' => {
                        let seq = codec::uint(codec::next(&mut rest)?)?;
                        let presence_seq = codec::uint(codec::next(&mut rest)?)?;
                        Ok(Reply::Published(
                            crate::store::StoredMessage {
                                seq,
                                frame: draft.frame(seq),
                            },
                            presence_seq,
                        ))
                    }
                    t => Err(unexpected("Publish", t)),
                }
            }
            Op::Charge {
                user,
                bucket,
                now_ms,
            } => {
                let mut script = scripts::CHARGE.prepare_invoke();
                charge_args(&self.keys, &mut script, user, bucket, *now_ms)?;
                let v = self.run(&script).await?;
                let (tag, mut rest) = codec::tagged(v)?;
                match tag {
                    b'C' => Ok(Reply::Charged),
                    b'R' => rate_limited(bucket, codec::next(&mut rest)?),
                    t => Err(unexpected("Charge", t)),
                }
            }
            Op::Typing {
                room,
                user,
                username,
                is_typing,
                holder,
            } => {
                let v = self
                    .run(
                        scripts::TYPING
                            .key(self.keys.room_part(room, "holders"))
                            .arg(self.keys.channel(room))
                            .arg(codec::typing_payload(user, username, *is_typing))
                            .arg(user)
                            .arg(holder_field(holder)),
                    )
                    .await?;
                match codec::tagged(v)?.0 {
                    b'T' => Ok(Reply::Done),
                    b'G' => Ok(Reply::Unheld),
                    t => Err(unexpected("Typing", t)),
                }
            }
            Op::Heartbeat {
                node,
                now_ms,
                ttl_ms,
            } => {
                let now = exact(*now_ms, "now_ms")?;
                let expiry = now_ms.saturating_add(*ttl_ms).min(EXACT);
                let v = self
                    .run(
                        scripts::HEARTBEAT
                            .key(self.keys.nodes())
                            .arg(&*node.0)
                            .arg(now)
                            .arg(expiry)
                            .arg(self.keys.prefix()),
                    )
                    .await?;
                let (tag, mut rest) = codec::tagged(v)?;
                if tag != b'S' {
                    return Err(unexpected("Heartbeat", tag));
                }
                let mut gone = codec::array(codec::next(&mut rest)?)?
                    .into_iter()
                    .map(|n| codec::string(n).map(|s| NodeId(s.into())))
                    .collect::<Result<Vec<_>, _>>()?;
                gone.sort();
                let lapsed = codec::uint(codec::next(&mut rest)?)? == 1;
                Ok(Reply::Swept { gone, lapsed })
            }
            Op::DeleteIfIdle {
                room,
                idle_ttl_ms,
                now_ms,
            } => {
                let cutoff = now_ms.checked_sub(*idle_ttl_ms);
                let mut script = scripts::DELETE_IF_IDLE.prepare_invoke();
                every_room_key(&self.keys, &mut script, room);
                script
                    .key(self.keys.rooms())
                    .arg(room)
                    .arg(flag(cutoff.is_some()))
                    .arg(cutoff.unwrap_or(0).min(EXACT))
                    .arg(self.keys.channel(room))
                    .arg(self.keys.prefix());
                let v = self.run(&script).await?;
                match codec::tagged(v)?.0 {
                    // A room that is not there was not deleted.
                    b'N' | b'K' => Ok(Reply::Deleted(false)),
                    b'D' => Ok(Reply::Deleted(true)),
                    t => Err(unexpected("DeleteIfIdle", t)),
                }
            }
        }
    }

    async fn create_room(
        &self,
        record: &RoomRecord,
        caps: Option<(u32, u64)>,
    ) -> Result<Reply, StoreError> {
        let id = &record.id;
        let creator = record.created_by.as_deref();
        let (per_user, max_rooms) = caps.unwrap_or((u32::MAX, u64::MAX));
        let mut script = scripts::CREATE_ROOM.prepare_invoke();
        every_room_key(&self.keys, &mut script, id);
        script
            .key(self.keys.rooms())
            .key(self.keys.creator(creator.unwrap_or("")))
            .arg(if caps.is_some() { "create" } else { "ensure" })
            .arg(id)
            .arg(&record.name)
            .arg(&record.description)
            .arg(codec::kind_str(record.kind))
            .arg(record.created_at_ms)
            .arg(creator.unwrap_or(""))
            .arg(flag(creator.is_some()))
            .arg(&record.epoch)
            .arg(per_user)
            .arg(max_rooms.min(EXACT))
            .arg(self.keys.prefix());
        let v = self.run(&script).await?;
        let (tag, rest) = codec::tagged(v)?;
        match (tag, caps.is_some()) {
            (b'C', false) => Ok(Reply::Room(record.clone())),
            (b'C', true) => Ok(Reply::Created(record.clone())),
            (b'R', false) => Ok(Reply::Room(codec::record(
                id,
                Value::Array(rest.collect()),
            )?)),
            (b'U', true) => Ok(Reply::Refused(Refusal::UserLimit)),
            (b'E', true) => Ok(Reply::Refused(Refusal::Exists)),
            (b'M', true) => Ok(Reply::Refused(Refusal::RoomLimit)),
            (t, _) => Err(unexpected("CreateRoom", t)),
        }
    }

    async fn list_rooms(&self) -> Result<Reply, StoreError> {
        let v = self
            .run(
                scripts::LIST_ROOMS
                    .key(self.keys.rooms())
                    .arg(self.keys.prefix()),
            )
            .await?;
        let (tag, mut rest) = codec::tagged(v)?;
        if tag != b'L' {
            return Err(unexpected("ListRooms", tag));
        }
        let mut rooms = Vec::new();
        for room in codec::array(codec::next(&mut rest)?)? {
            let mut f = codec::array(room)?;
            if f.len() != 8 {
                return Err(StoreError::decode("a room of ListRooms"));
            }
            let member_count = codec::uint(f.pop().unwrap_or_default())?;
            let id = codec::string(f.remove(0))?;
            rooms.push(RoomView {
                record: codec::record(&id, Value::Array(f))?,
                member_count,
            });
        }
        rooms.sort_by(|a, b| a.record.id.cmp(&b.record.id));
        Ok(Reply::Rooms(rooms))
    }

    async fn join(&self, room: &str, script: &ScriptInvocation<'_>) -> Result<Reply, StoreError> {
        let v = self.run(script).await?;
        let (tag, mut rest) = codec::tagged(v)?;
        match tag {
            b'N' => return Ok(Reply::NotFound),
            b'F' => return Ok(Reply::Forbidden),
            b'J' => {}
            t => return Err(unexpected("Join", t)),
        }
        let first_of_user = codec::uint(codec::next(&mut rest)?)? == 1;
        let recovered = codec::tri(codec::next(&mut rest)?)?;
        let record = codec::record(room, codec::next(&mut rest)?)?;
        let member_count = codec::uint(codec::next(&mut rest)?)?;
        let users = codec::users(codec::next(&mut rest)?)?;
        let messages = codec::entries(codec::next(&mut rest)?)?;
        let last_seq = codec::uint(codec::next(&mut rest)?)?;
        let presence_seq = codec::uint(codec::next(&mut rest)?)?;
        Ok(Reply::Joined {
            room: RoomView {
                record,
                member_count,
            },
            users,
            first_of_user,
            messages,
            recovered,
            last_seq,
            presence_seq,
        })
    }

    async fn leave(
        &self,
        room: &str,
        user: &str,
        holder: &Holder,
        now_ms: u64,
    ) -> Result<Reply, StoreError> {
        let v = self
            .run(
                scripts::LEAVE
                    .key(self.keys.room(room))
                    .key(self.keys.room_part(room, "users"))
                    .key(self.keys.room_part(room, "holders"))
                    .key(self.keys.node_held(&holder.node.0))
                    .arg(user)
                    .arg(holder_field(holder))
                    .arg(format!("{}:{room}", holder.conn))
                    .arg(now_ms)
                    .arg(self.keys.channel(room)),
            )
            .await?;
        let (tag, mut rest) = codec::tagged(v)?;
        match tag {
            b'N' => Ok(Reply::NotFound),
            b'L' => Ok(Reply::Left {
                last_of_user: codec::uint(codec::next(&mut rest)?)? == 1,
                member_count: codec::uint(codec::next(&mut rest)?)?,
            }),
            t => Err(unexpected("Leave", t)),
        }
    }

    async fn history(
        &self,
        room: &str,
        before_seq: Option<u64>,
        limit: u32,
        history_limit: u32,
    ) -> Result<Reply, StoreError> {
        let v = self
            .run(
                scripts::HISTORY
                    .key(self.keys.room(room))
                    .key(self.keys.room_part(room, "log"))
                    .key(self.keys.room_part(room, "retry"))
                    .arg(flag(before_seq.is_some()))
                    .arg(before_seq.unwrap_or(0).min(EXACT))
                    .arg(limit)
                    .arg(history_limit),
            )
            .await?;
        let (tag, mut rest) = codec::tagged(v)?;
        match tag {
            b'N' => Ok(Reply::NotFound),
            b'H' => Ok(Reply::History {
                has_more: codec::uint(codec::next(&mut rest)?)? == 1,
                messages: codec::entries(codec::next(&mut rest)?)?,
            }),
            t => Err(unexpected("History", t)),
        }
    }
}

/// A room's keys `KEYS[1..=5]` of `CreateRoom` and `DeleteIfIdle`: its
/// hash, log, retry index, users and holders.
fn every_room_key(keys: &Keys, script: &mut ScriptInvocation<'_>, id: &str) {
    script.key(keys.room(id));
    for part in ["log", "retry", "users", "holders"] {
        script.key(keys.room_part(id, part));
    }
}

/// What a `Join` without `since` passes for it (after its `'0'`).
const NO_SINCE: Since = Since {
    seq: 0,
    epoch: None,
};

/// A `since` of `Join` or `Since`: its `seq` (clamped: above any `seq`, the
/// same answer), with its epoch or not, the epoch.
fn since_args(script: &mut ScriptInvocation<'_>, since: &Since) {
    script
        .arg(since.seq.min(EXACT))
        .arg(flag(since.epoch.is_some()))
        .arg(since.epoch.as_deref().unwrap_or(""));
}

/// A script's `'1'` / `'0'` argument.
fn flag(b: bool) -> &'static str {
    if b { "1" } else { "0" }
}

/// A holder as a hash field: `<conn>:<node>`.
fn holder_field(holder: &Holder) -> String {
    format!("{}:{}", holder.conn, holder.node.0)
}

/// `n` if a Lua number holds it exactly.
fn exact(n: u64, what: &str) -> Result<u64, StoreError> {
    if n < EXACT {
        Ok(n)
    } else {
        Err(StoreError::OutOfRange(format!(
            "{what} {n} is not below 2^53"
        )))
    }
}

/// A charge's first key and arguments, those of `charge()` in common.lua
/// (`Charge` and `Publish` start with them): `user`'s bucket; capacity,
/// window_ms, now_ms and the key's lifetime. The full level
/// (`capacity * window_ms`) must stay within 2^52 so that a refill (below
/// twice that) stays exact.
fn charge_args(
    keys: &Keys,
    script: &mut ScriptInvocation<'_>,
    user: &str,
    bucket: &BucketShape,
    now_ms: u64,
) -> Result<(), StoreError> {
    let now = exact(now_ms, "now_ms")?;
    match bucket.capacity.checked_mul(bucket.window_ms) {
        Some(full) if full <= EXACT / 2 => {}
        _ => {
            return Err(StoreError::OutOfRange(format!(
                "a send bucket of {} per {} ms (capacity * window_ms must stay within 2^52)",
                bucket.capacity, bucket.window_ms
            )));
        }
    }
    script
        .key(keys.bucket(user))
        .arg(bucket.capacity)
        .arg(bucket.window_ms)
        .arg(now)
        .arg(bucket.window_ms.saturating_add(BUCKET_SLACK_MS));
    Ok(())
}

/// `RateLimited` from the units missing for one token, as
/// `core::Bucket::try_take` rounds them.
fn rate_limited(bucket: &BucketShape, missing: Value) -> Result<Reply, StoreError> {
    let missing = codec::uint(missing)?;
    Ok(Reply::RateLimited {
        retry_after_ms: missing.div_ceil(bucket.capacity.max(1)),
    })
}

fn unexpected(op: &str, tag: u8) -> StoreError {
    StoreError::decode(format!("{op} answered {:?}", char::from(tag)))
}
