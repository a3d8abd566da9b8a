//! `acked-survives`: a message whose sender got its acknowledgement (the
//! `NEW_MESSAGE` answering its `SEND_MESSAGE`) is never lost, also when a
//! node dies — it reaches every other member of the room, on every node.
//!
//! What the other oracles already hold, and this one does not repeat: a
//! connection that receives a later message of the room has this one
//! (`seq-order`: no gaps); a library client in the room at the end has it
//! delivered (`liveness`: caught up; `exactly-once`: no skip without a
//! gap); a `ROOM_JOINED`/`HISTORY` covering its `seq` lists it (`history`:
//! contiguous, every sighting agrees, never older than what was seen before
//! the request; `recovery`: complete after `sinceSeq`). What was left: a
//! member that gets nothing more of that room (a quiet room, a member that
//! leaves or goes, a raw client), and a room whose history was started over
//! in a new epoch. Hence two checks:
//!
//! - **Every member gets it.** Once seq `S` of a room epoch was
//!   acknowledged at `t_ack`, a connection joined to that epoch (whatever
//!   its node) that has not received `S` may get no text frame at or after
//!   `max(t_ack, its join) + learn + delivery slack + PRESENCE_DELAY_MS`
//!   while it is still in the room: a frame the server wrote after it had
//!   `S` comes after `S` (one queue per connection). A ping is written
//!   ahead of the data queued with it, so a ping proves it only once the
//!   next ping has arrived (the first one's batch is all in by then). `learn` is 0 on one
//!   node (the hub queues the broadcast with the acknowledgement); in a
//!   cluster, another node hears of `S` from the store's event, or — when
//!   it was cut from the store — reads it back after the heal: the window
//!   starts again at the end of any cut of the member's node that overlaps
//!   it, and `learn` is `NODE_TTL_MS + NODE_TTL_MS / 3 + REDIS_TIMEOUT_MS`
//!   (the event stream notices a lost connection within two store
//!   timeouts, reconnects within its 1 s backoff cap, and reads back within
//!   one more; a node out of touch with the store longer than that lost
//!   its lease and closes its connections). A `NEW_MESSAGE` of that room
//!   is left to `seq-order` (a gap, or `S` itself, late). Clients that do
//!   not read their socket promptly are exempt.
//! - **Its epoch lives on.** A default room (created by `system`, never
//!   deleted) has one epoch per server run — per store in a cluster,
//!   whatever the nodes do: an epoch that held an acknowledged message is
//!   never replaced by another in the same run (a node crash must not
//!   start the room over).

use std::collections::{BTreeMap, BTreeSet};

use super::Out;
use super::model::Model;
use crate::obs::ConnNo;

/// Acknowledged messages and what was reported of them.
#[derive(Debug, Default)]
pub struct Acked {
    /// `(room, epoch)` → `seq` → when its first acknowledgement arrived.
    acked: BTreeMap<(String, String), BTreeMap<u64, u64>>,
    /// `(conn, room, seq)` reported missing.
    reported: BTreeSet<(ConnNo, String, u64)>,
    /// `(room, new epoch)` reported as replacing an acknowledged one.
    replaced: BTreeSet<(String, String)>,
    /// Connection → when its last ping from the server arrived.
    pings: BTreeMap<ConnNo, u64>,
}

/// How long after a member's window opens its node has `S` to send.
fn learn_ms(m: &Model) -> u64 {
    let t = &m.topology;
    t.node_ttl_ms() + t.node_ttl_ms() / 3 + t.store_timeout_ms()
}

impl Acked {
    /// The sender's acknowledgement of `seq` in `(room, epoch)` arrived.
    pub fn on_ack(&mut self, at: u64, room: &str, epoch: &str, seq: u64) {
        self.acked
            .entry((room.to_owned(), epoch.to_owned()))
            .or_default()
            .entry(seq)
            .or_insert(at);
    }

    /// A text frame arrives on `conn` at `at` (before anything else looks
    /// at it): the acknowledged messages of its rooms that its node had
    /// time to send are there. `new_message_room`: the room of the frame
    /// when it is a `NEW_MESSAGE` (`seq-order`'s business).
    pub fn before_frame(
        &mut self,
        m: &Model,
        out: &mut Out,
        at: u64,
        conn: ConnNo,
        new_message_room: Option<&str>,
    ) {
        self.check(m, out, at, at, conn, new_message_room);
    }

    /// A ping from the server arrived on `conn` at `at`. A ping is written
    /// ahead of the data frames queued with it, so it proves nothing of
    /// them; but every frame of the batch an earlier ping led has arrived
    /// before this one: that earlier ping proves as a text frame would.
    pub fn on_ping(&mut self, m: &Model, out: &mut Out, at: u64, conn: ConnNo) {
        if let Some(earlier) = self.pings.insert(conn, at) {
            self.check(m, out, at, earlier, conn, None);
        }
    }

    /// What a frame arriving at `at` proves: the server had written it by
    /// `proof` (its own arrival, or an earlier ping's).
    fn check(
        &mut self,
        m: &Model,
        out: &mut Out,
        at: u64,
        proof: u64,
        conn: ConnNo,
        new_message_room: Option<&str>,
    ) {
        let Some(c) = m.conns.get(&conn) else {
            return;
        };
        let learn = learn_ms(m);
        let slack = m.cfg.delivery_slack_ms + m.cfg.notice_delay_ms;
        for (room, r) in &c.rooms {
            if new_message_room == Some(room.as_str()) {
                continue;
            }
            let Some(seqs) = self.acked.get(&(room.clone(), r.epoch.clone())) else {
                continue;
            };
            for (&seq, &t_ack) in seqs.range(r.last + 1..) {
                let from = t_ack.max(r.joined_at);
                let Some(base) = m.topology.connected_from(c.node, from, learn) else {
                    continue;
                };
                let deadline = base + learn + slack;
                if proof <= deadline || !self.reported.insert((conn, room.clone(), seq)) {
                    continue;
                }
                out.fail(
                    "acked-survives",
                    at,
                    m.place_room(conn, room, Some(seq)),
                    format!(
                        "seq {seq} (epoch {}) was acknowledged to its sender at {t_ack} ms; this member (node {}, joined at {} ms, last seq {}) still lacks it at {at} ms (a frame written after {proof} ms arrived), past {deadline} ms",
                        r.epoch, c.node, r.joined_at, r.last
                    ),
                );
            }
        }
    }

    /// `conn` was told it is in `room`, epoch `epoch` (`ROOM_JOINED` or
    /// `ROOM_CREATED`): a default room keeps, within one server run, the
    /// epoch its acknowledged messages are in.
    #[allow(clippy::too_many_arguments)]
    pub fn on_joined(
        &mut self,
        m: &Model,
        out: &mut Out,
        at: u64,
        conn: ConnNo,
        room: &str,
        epoch: &str,
        default_room: bool,
    ) {
        let Some(run) = m.conns.get(&conn).map(|c| c.run) else {
            return;
        };
        if !default_room {
            return;
        }
        let lost: Vec<(&String, u64, usize)> = self
            .acked
            .range((room.to_owned(), String::new())..)
            .take_while(|((r, _), _)| r == room)
            .filter(|((_, e), seqs)| e != epoch && !seqs.is_empty())
            .filter(|((r, e), _)| {
                m.logs
                    .get(&(r.clone(), e.clone()))
                    .is_some_and(|log| log.run == run)
            })
            .map(|((_, e), seqs)| (e, *seqs.keys().next_back().unwrap_or(&0), seqs.len()))
            .collect();
        for (old, last, n) in lost {
            if !self.replaced.insert((room.to_owned(), epoch.to_owned())) {
                break;
            }
            out.fail(
                "acked-survives",
                at,
                m.place_room(conn, room, Some(last)),
                format!(
                    "default room {room} is in epoch {epoch}, but epoch {old} of the same server run held {n} acknowledged messages (up to seq {last}): they are lost"
                ),
            );
        }
    }
}
