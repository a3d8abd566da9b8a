//! `liveness`: once faults stop, within bounded simulated time every library
//! client is connected, authenticated, joined to exactly the rooms it meant
//! to be in (less those the server refused it or took away since it was
//! last told to join them: a room deleted, or no longer granted by its
//! token; `rooms` checks that those refusals were right), in the rooms'
//! current epoch, and caught up (its last delivered
//! `seq` is the room's last accepted one); every message it sent was
//! acknowledged or reported failed; and each room's presence list, as its
//! connection last heard it, names exactly the users whose connections are
//! joined.

use std::collections::BTreeSet;

use super::client::Clients;
use super::model::Model;
use super::{Out, Place, RosterEntry};

fn place(client: u32, conn: Option<u64>, room: Option<&str>) -> Place {
    Place {
        client: Some(client),
        conn,
        room: room.map(str::to_owned),
        seq: None,
    }
}

/// Checks the state at `end_ms`.
pub fn check(m: &Model, clients: &Clients, out: &mut Out, end_ms: u64, roster: &[RosterEntry]) {
    for (i, entry) in roster.iter().enumerate() {
        let RosterEntry::Library { final_rooms, .. } = entry else {
            continue;
        };
        let client = i as u32;
        let latest = m
            .conns
            .iter()
            .filter(|(_, c)| c.client == client)
            .max_by_key(|(n, _)| **n);
        let Some((&n, c)) = latest else {
            out.fail(
                "liveness",
                end_ms,
                place(client, None, None),
                "never connected".into(),
            );
            continue;
        };
        if c.open_at.is_none() && c.ended_at.is_none() {
            out.fail(
                "liveness",
                end_ms,
                place(client, Some(n), None),
                format!(
                    "stuck in the WebSocket upgrade since {} ms: no answer, no timeout, no reconnect",
                    c.dial_at
                ),
            );
            continue;
        }
        let silent_for = end_ms.saturating_sub(c.last_recv_at);
        if c.live() && silent_for > 2 * m.cfg.ping_interval_ms + m.cfg.delivery_slack_ms {
            out.fail(
                "liveness",
                end_ms,
                place(client, Some(n), None),
                format!(
                    "its connection has heard nothing from the server for {silent_for} ms (since {} ms) and the client never gave up on it",
                    c.last_recv_at
                ),
            );
            continue;
        }
        if !c.live() || c.user.is_none() {
            out.fail(
                "liveness",
                end_ms,
                place(client, Some(n), None),
                format!(
                    "not connected and authenticated at the end (dialed at {} ms, open {:?}, ended {:?}, close {:?}, user {:?})",
                    c.dial_at, c.open_at, c.ended_at, c.close_code, c.user
                ),
            );
            continue;
        }
        for room in final_rooms {
            if clients.refused.contains(&(client, room.clone())) && !c.rooms.contains_key(room) {
                out.coverage.hit("room_lost_at_end");
                continue;
            }
            let Some(r) = c.rooms.get(room) else {
                out.fail(
                    "liveness",
                    end_ms,
                    place(client, Some(n), Some(room)),
                    "not joined at the end".into(),
                );
                continue;
            };
            if let Some((latest_epoch, _)) = m.latest_epoch(room)
                && latest_epoch != r.epoch
            {
                out.fail(
                    "liveness",
                    end_ms,
                    place(client, Some(n), Some(room)),
                    format!(
                        "joined epoch {}, the room's latest is {latest_epoch}",
                        r.epoch
                    ),
                );
            }
            let room_last = m
                .logs
                .get(&(room.clone(), r.epoch.clone()))
                .map_or(0, |log| log.max_seq());
            let cursor = clients.cursors.get(&(client, room.clone()));
            let delivered = cursor
                .filter(|k| k.epoch.as_deref() == Some(r.epoch.as_str()))
                .and_then(|k| k.last)
                .unwrap_or(0);
            if delivered != room_last {
                out.fail(
                    "liveness",
                    end_ms,
                    place(client, Some(n), Some(room)),
                    format!(
                        "not caught up: delivered up to seq {delivered}, the room is at seq {room_last} (epoch {})",
                        r.epoch
                    ),
                );
            }
            // Presence: exactly the users with a healthy connection joined
            // here (one the server still talks to: it pings every
            // connection). A client stuck on a dead stream is reported on
            // its own, not in everyone's presence list.
            let fresh = |o: &super::model::Conn| {
                o.live()
                    && o.last_recv_at + 2 * m.cfg.ping_interval_ms + m.cfg.delivery_slack_ms
                        >= end_ms
            };
            let present: BTreeSet<String> = m
                .conns
                .values()
                .filter(|o| fresh(o) && o.rooms.contains_key(room))
                .filter_map(|o| o.user.clone())
                .collect();
            if fresh(c) && present != r.users {
                out.fail(
                    "presence",
                    end_ms,
                    place(client, Some(n), Some(room)),
                    format!(
                        "at the end the connection lists {:?}, the joined users are {:?}",
                        r.users, present
                    ),
                );
            }
        }
        for room in c.rooms.keys() {
            if !final_rooms.contains(room) {
                out.fail(
                    "liveness",
                    end_ms,
                    place(client, Some(n), Some(room)),
                    "still joined to a room it left".into(),
                );
            }
        }
        let resolved = clients.resolved.get(&client);
        let unresolved: Vec<&str> = clients
            .sends
            .get(&client)
            .into_iter()
            .flatten()
            .filter(|(_, id)| !resolved.is_some_and(|r| r.contains(id)))
            .map(|(_, id)| id.as_str())
            .collect();
        if !unresolved.is_empty() {
            out.fail(
                "liveness",
                end_ms,
                place(client, Some(n), None),
                format!(
                    "{} sends neither acknowledged nor failed: {:?}",
                    unresolved.len(),
                    &unresolved[..unresolved.len().min(8)]
                ),
            );
        }
    }
}
