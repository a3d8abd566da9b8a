//! `exactly-once`: what the library client hands to the application. In
//! each room it delivers every accepted message once, in `seq` order —
//! skipping ahead only right after it reported `Event::Gap` (or on a first
//! join, or in a new epoch) — and each message is one the server accepted.
//! Its acknowledgements name its own messages.

use std::collections::{BTreeMap, BTreeSet};

use chat_flow::client::Event;
use chat_flow::protocol::ErrorCode;
use chat_flow::protocol::server::ServerMessage;

use super::model::Model;
use super::{Out, Place};

/// The client's position in one room, as its events show it.
#[derive(Debug, Clone, Default)]
pub struct Cursor {
    /// The epoch of the last `Joined`.
    pub epoch: Option<String>,
    /// The last `seq` delivered in that epoch.
    pub last: Option<u64>,
    /// The next message may skip ahead (first join, new epoch, gap).
    pub free: bool,
}

/// Every library client's delivery state.
#[derive(Debug, Default)]
pub struct Clients {
    /// `(client, room)` → cursor.
    pub cursors: BTreeMap<(u32, String), Cursor>,
    /// Sends commanded, per client: `(room, clientMessageId)`.
    pub sends: BTreeMap<u32, Vec<(String, String)>>,
    /// `clientMessageId`s acknowledged or given up, per client.
    pub resolved: BTreeMap<u32, BTreeSet<String>>,
    /// `(client, room)`: since the client was last told to join the room,
    /// the server refused it (`ROOM_NOT_FOUND`, `FORBIDDEN`) or took it away
    /// (`Event::Left`), so the client no longer means to be in it.
    pub refused: BTreeSet<(u32, String)>,
}

fn place(client: u32, room: &str, seq: Option<u64>) -> Place {
    Place {
        client: Some(client),
        conn: None,
        room: Some(room.to_owned()),
        seq,
    }
}

impl Clients {
    /// A command given to `client` (as recorded: `send <room> <id>` …).
    pub fn on_command(&mut self, client: u32, what: &str) {
        let mut words = what.split(' ');
        match (words.next(), words.next(), words.next()) {
            (Some("send"), Some(room), Some(id)) => {
                self.sends
                    .entry(client)
                    .or_default()
                    .push((room.to_owned(), id.to_owned()));
            }
            (Some("join"), Some(room), None) => {
                self.refused.remove(&(client, room.to_owned()));
            }
            _ => {}
        }
    }

    /// An event `client` delivered.
    pub fn on_event(&mut self, m: &Model, out: &mut Out, at: u64, client: u32, event: &Event) {
        match event {
            Event::Joined {
                room,
                epoch,
                recovered,
                ..
            } => {
                let c = self.cursors.entry((client, room.clone())).or_default();
                if c.epoch.as_deref().is_some_and(|e| e != epoch) {
                    out.coverage.hit("restart_new_epoch");
                    c.last = None;
                }
                if c.epoch.as_deref() != Some(epoch.as_str()) {
                    c.free = true;
                }
                c.epoch = Some(epoch.clone());
                if recovered.is_none() {
                    // No sinceSeq: the client starts afresh (first join, or
                    // joined again after leaving) and may repeat history.
                    c.last = None;
                }
                if *recovered != Some(true) {
                    c.free = true;
                }
            }
            Event::Gap { room } => {
                out.coverage.hit("gap_reported");
                self.cursors.entry((client, room.clone())).or_default().free = true;
            }
            Event::Message(msg) => {
                let p = place(client, &msg.room_id, Some(msg.seq));
                let Some(c) = self.cursors.get_mut(&(client, msg.room_id.clone())) else {
                    out.fail(
                        "exactly-once",
                        at,
                        p,
                        "message delivered before the room was joined".into(),
                    );
                    return;
                };
                let epoch = c.epoch.clone().unwrap_or_default();
                let accepted = m
                    .logs
                    .get(&(msg.room_id.clone(), epoch.clone()))
                    .and_then(|log| log.msgs.get(&msg.seq));
                match accepted {
                    Some(a) if a.message == *msg => {}
                    Some(a) => out.fail(
                        "exactly-once",
                        at,
                        p.clone(),
                        format!(
                            "delivered {:?}, but the server's seq {} in epoch {epoch} is {:?}",
                            msg.id, msg.seq, a.message.id
                        ),
                    ),
                    None => out.fail(
                        "exactly-once",
                        at,
                        p.clone(),
                        format!(
                            "delivered {:?}, never seen on the wire in epoch {epoch}",
                            msg.id
                        ),
                    ),
                }
                let last = c.last.unwrap_or(0);
                if c.last.is_some() && msg.seq <= last {
                    out.fail(
                        "exactly-once",
                        at,
                        p,
                        format!(
                            "delivered seq {} again or out of order (after {last})",
                            msg.seq
                        ),
                    );
                } else if msg.seq > last + 1 && !c.free {
                    out.fail(
                        "exactly-once",
                        at,
                        p,
                        format!(
                            "skipped seqs {}..{} without reporting a gap",
                            last + 1,
                            msg.seq
                        ),
                    );
                }
                c.last = Some(c.last.map_or(msg.seq, |l| l.max(msg.seq)));
                c.free = false;
            }
            Event::Acked {
                client_message_id,
                room,
                seq,
            } => {
                self.resolved
                    .entry(client)
                    .or_default()
                    .insert(client_message_id.clone());
                // Events are recorded when the application drains them, so
                // the connection may have moved on (left the room, a new
                // epoch) by then: some epoch of the room must hold, at that
                // seq, this client's message.
                let ok = m
                    .logs
                    .range((room.clone(), String::new())..)
                    .take_while(|((r, _), _)| r == room)
                    .any(|(_, log)| {
                        log.msgs.get(seq).is_some_and(|a| {
                            a.message.client_message_id.as_deref()
                                == Some(client_message_id.as_str())
                        })
                    });
                if !ok {
                    out.fail(
                        "exactly-once",
                        at,
                        place(client, room, Some(*seq)),
                        format!(
                            "acknowledged {client_message_id} as seq {seq}, which no epoch of the room holds with that clientMessageId"
                        ),
                    );
                }
            }
            Event::SendFailed {
                client_message_id, ..
            } => {
                out.coverage.hit("send_failed");
                self.resolved
                    .entry(client)
                    .or_default()
                    .insert(client_message_id.clone());
            }
            Event::Disconnected { .. } => out.coverage.hit("reconnect"),
            Event::Left { room } => {
                out.coverage.hit("room_revoked_event");
                self.refused.insert((client, room.clone()));
            }
            Event::Server(frame) => {
                // The library client forgets a room whose join is refused.
                if let ServerMessage::Error { code, .. } = &frame.message
                    && matches!(code, ErrorCode::RoomNotFound | ErrorCode::Forbidden)
                    && let Some(room) = frame
                        .request_id
                        .as_deref()
                        .and_then(|r| r.strip_prefix("j:"))
                {
                    self.refused.insert((client, room.to_owned()));
                }
            }
            Event::Connected { .. } | Event::Authenticated { .. } | Event::Stopped => {}
        }
    }
}
