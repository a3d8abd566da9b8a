//! What the client remembers across connections: the rooms it is in and
//! where it is in each, and the sends not yet acknowledged. No I/O: the
//! session loop feeds it server frames and writes the requests it returns.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use super::api::Event;
use super::requests::{self, JOIN_ID_PREFIX, SEND_ID_PREFIX};
use crate::protocol::server::{ChatMessage, ServerFrame, ServerMessage};
use crate::protocol::{ErrorCode, MessageKind};
use crate::rng::Rng;

/// Where the client is in a room's sequence.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Cursor {
    epoch: Option<String>,
    /// Highest `seq` delivered in `epoch`.
    last_seq: Option<u64>,
}

impl Cursor {
    /// The `JOIN_ROOM` that resumes the room where the client left it: from
    /// `seq` 0 of an epoch whose messages it has none of yet.
    fn join_request(&self, room: &str) -> String {
        let since_seq = self.epoch.as_ref().map(|_| self.last_seq.unwrap_or(0));
        requests::join(room, since_seq, self.epoch.as_deref())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct PendingSend {
    room: String,
    content: String,
    kind: MessageKind,
    client_message_id: String,
    /// Not before this instant (after a rate-limit rejection).
    not_before: Option<Instant>,
    /// Written on this connection and not answered yet.
    in_flight: bool,
}

/// Most sends unanswered at once (fewer than any sensible
/// `RATE_LIMIT_DISCONNECT_AFTER`).
const SEND_WINDOW: usize = 4;

/// What the client remembers across connections.
#[derive(Debug)]
pub(super) struct Session {
    rooms: BTreeMap<String, Cursor>,
    pending: VecDeque<PendingSend>,
    id_prefix: String,
    next_id: u64,
    pending_max: usize,
    /// A send was rate-limited and none accepted since: one at
    /// a time.
    careful: bool,
    /// Rooms whose join the service could not answer (`SERVER_ERROR`),
    /// asked again at these instants.
    rejoins: BTreeMap<String, Instant>,
}

impl Session {
    /// A session whose `clientMessageId`s start with a prefix drawn from `rng`.
    pub(super) fn new(rng: &mut Rng, pending_max: usize) -> Session {
        Session {
            rooms: BTreeMap::new(),
            pending: VecDeque::new(),
            id_prefix: format!("{:08x}", rng.next_u64() as u32),
            next_id: 0,
            pending_max,
            careful: false,
            rejoins: BTreeMap::new(),
        }
    }

    fn new_client_message_id(&mut self) -> String {
        self.next_id += 1;
        format!("{}-{}", self.id_prefix, self.next_id)
    }

    /// Stays in `room` across reconnects.
    pub(super) fn join(&mut self, room: &str) {
        self.rooms.entry(room.to_owned()).or_default();
    }

    /// The `JOIN_ROOM` for `room` from where the client is in it.
    pub(super) fn join_request(&self, room: &str) -> String {
        self.rooms.get(room).map_or_else(
            || Cursor::default().join_request(room),
            |c| c.join_request(room),
        )
    }

    /// Forgets `room`.
    pub(super) fn leave(&mut self, room: &str) {
        self.rooms.remove(room);
    }

    /// Queues a send for the window, picking a `clientMessageId` when it has
    /// none. A full queue refuses it: the returned event reports that.
    pub(super) fn queue_send(
        &mut self,
        room: String,
        content: String,
        kind: MessageKind,
        client_message_id: Option<String>,
    ) -> Option<Event> {
        let client_message_id = client_message_id.unwrap_or_else(|| self.new_client_message_id());
        if self.pending.len() >= self.pending_max {
            return Some(Event::SendFailed {
                client_message_id,
                code: ErrorCode::RateLimitExceeded,
            });
        }
        self.pending.push_back(PendingSend {
            room,
            content,
            kind,
            client_message_id,
            not_before: None,
            in_flight: false,
        });
        None
    }

    /// Requests that resume the session on a fresh, authenticated connection.
    pub(super) fn resume_requests(&mut self, now: Instant) -> Vec<String> {
        let mut out = Vec::new();
        self.rejoins.clear();
        for (room, cursor) in &self.rooms {
            out.push(cursor.join_request(room));
        }
        // Nothing is in flight on a new connection; sends go
        // out through the window, each once.
        for p in &mut self.pending {
            p.in_flight = false;
        }
        out.extend(self.sendable(now));
        out
    }

    /// The sends that may go now: due, not in flight, within
    /// the window (one at a time while `careful`).
    pub(super) fn sendable(&mut self, now: Instant) -> Vec<String> {
        let window = if self.careful { 1 } else { SEND_WINDOW };
        let mut in_flight = self.pending.iter().filter(|p| p.in_flight).count();
        let mut out = Vec::new();
        // Joins asked again go first: a send to the room follows its join.
        let due: Vec<String> = self
            .rejoins
            .iter()
            .filter(|&(_, at)| *at <= now)
            .map(|(room, _)| room.clone())
            .collect();
        for room in due {
            self.rejoins.remove(&room);
            if let Some(cursor) = self.rooms.get(&room) {
                out.push(cursor.join_request(&room));
            }
        }
        for p in &mut self.pending {
            if in_flight >= window {
                break;
            }
            if !p.in_flight && p.not_before.is_none_or(|t| t <= now) {
                p.in_flight = true;
                p.not_before = None;
                out.push(requests::send(
                    &p.room,
                    &p.content,
                    p.kind,
                    &p.client_message_id,
                ));
                in_flight += 1;
            }
        }
        out
    }

    /// When a waiting send becomes due (never while the
    /// window is full: a reply frees it, and a timer in the past would
    /// spin the loop).
    pub(super) fn next_due(&self) -> Option<Instant> {
        let rejoin = self.rejoins.values().min().copied();
        let window = if self.careful { 1 } else { SEND_WINDOW };
        if self.pending.iter().filter(|p| p.in_flight).count() >= window {
            return rejoin;
        }
        let send = self
            .pending
            .iter()
            .filter(|p| !p.in_flight)
            .filter_map(|p| p.not_before)
            .min();
        match (rejoin, send) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Applies a server frame; returns the events for the application.
    pub(super) fn on_frame(&mut self, frame: ServerFrame, events: &mut Vec<Event>, now: Instant) {
        let request_id = frame.request_id.clone();
        match frame.message {
            ServerMessage::RoomJoined {
                room,
                epoch,
                messages,
                users,
                recovered,
            } => {
                let room_id = room.id.clone();
                let Some(cursor) = self.rooms.get_mut(&room_id) else {
                    return;
                };
                if cursor.epoch.as_deref() != Some(epoch.as_str()) {
                    // A new sequence: nothing of it was delivered yet.
                    cursor.epoch = Some(epoch.clone());
                    cursor.last_seq = None;
                }
                events.push(Event::Joined {
                    room: room_id.clone(),
                    epoch,
                    recovered,
                    users,
                });
                if recovered == Some(false) {
                    events.push(Event::Gap {
                        room: room_id.clone(),
                    });
                }
                for m in messages {
                    self.deliver(m, events);
                }
            }
            ServerMessage::NewMessage(m) => self.deliver(m, events),
            // Unasked (no requestId): the server took the room away, so it
            // is not resumed on the next connection. (A ROOM_LEFT answering
            // our LEAVE_ROOM is reported as it is below; the room was
            // forgotten when the application left it.)
            ServerMessage::RoomLeft { room_id } if request_id.is_none() => {
                self.rooms.remove(&room_id);
                events.push(Event::Left { room: room_id });
            }
            message => {
                if let ServerMessage::Error {
                    code,
                    retry_after_ms,
                    ..
                } = &message
                {
                    self.on_error(request_id.as_deref(), *code, *retry_after_ms, events, now);
                }
                events.push(Event::Server(ServerFrame {
                    message,
                    request_id,
                }));
            }
        }
    }

    /// A request failed: a rate-limited send, or one the service could not
    /// store now (`SERVER_ERROR` with `retryAfterMs`), waits and goes
    /// again; any other failed send is given up; a room that cannot be
    /// joined is forgotten, and a join the service could not answer
    /// (`SERVER_ERROR`, or rate-limited) goes again after `retryAfterMs`.
    fn on_error(
        &mut self,
        request_id: Option<&str>,
        code: ErrorCode,
        retry_after_ms: Option<u64>,
        events: &mut Vec<Event>,
        now: Instant,
    ) {
        if let Some(cmid) = request_id.and_then(|r| r.strip_prefix(SEND_ID_PREFIX)) {
            let Some(i) = self
                .pending
                .iter()
                .position(|p| p.client_message_id == cmid)
            else {
                return;
            };
            // Rate-limited, or the service could not store it now (its
            // outcome unknown): the same message goes again, with its
            // clientMessageId, and is stored at most once.
            let again = code == ErrorCode::RateLimitExceeded
                || (code == ErrorCode::ServerError && retry_after_ms.is_some());
            if again {
                let wait = Duration::from_millis(retry_after_ms.unwrap_or(100));
                self.pending[i].not_before = Some(now + wait);
                self.pending[i].in_flight = false;
                self.careful = true;
            } else {
                let p = self.pending.remove(i).expect("index from position");
                events.push(Event::SendFailed {
                    client_message_id: p.client_message_id,
                    code,
                });
            }
        } else if let Some(room) = request_id.and_then(|r| r.strip_prefix(JOIN_ID_PREFIX)) {
            match code {
                ErrorCode::RoomNotFound | ErrorCode::Forbidden => {
                    self.rooms.remove(room);
                }
                // The service could not answer: the join goes again.
                ErrorCode::ServerError | ErrorCode::RateLimitExceeded
                    if self.rooms.contains_key(room) =>
                {
                    let wait = Duration::from_millis(retry_after_ms.unwrap_or(1000));
                    self.rejoins.insert(room.to_owned(), now + wait);
                }
                _ => {}
            }
        }
    }

    /// Delivers `m` unless already delivered; acknowledges our own sends.
    fn deliver(&mut self, m: ChatMessage, events: &mut Vec<Event>) {
        if let Some(cmid) = &m.client_message_id
            && let Some(i) = self
                .pending
                .iter()
                .position(|p| p.client_message_id == *cmid && p.room == m.room_id)
        {
            self.pending.remove(i);
            self.careful = false;
            events.push(Event::Acked {
                client_message_id: cmid.clone(),
                room: m.room_id.clone(),
                seq: m.seq,
            });
        }
        let Some(cursor) = self.rooms.get_mut(&m.room_id) else {
            return;
        };
        if cursor.last_seq.is_some_and(|last| m.seq <= last) {
            return;
        }
        cursor.last_seq = Some(m.seq);
        events.push(Event::Message(m));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(room: &str, seq: u64, cmid: Option<&str>) -> ChatMessage {
        ChatMessage {
            id: format!("m{seq}"),
            seq,
            room_id: room.into(),
            user_id: "u".into(),
            username: "u".into(),
            content: "x".into(),
            kind: MessageKind::Text,
            timestamp: String::new(),
            client_message_id: cmid.map(str::to_owned),
        }
    }

    #[test]
    fn delivers_once_in_order_and_acks_own_messages() {
        let mut rng = Rng::new(1);
        let mut s = Session::new(&mut rng, 16);
        s.rooms.insert("r".into(), Cursor::default());
        s.pending.push_back(PendingSend {
            room: "r".into(),
            content: "x".into(),
            kind: MessageKind::Text,
            client_message_id: "c1".into(),
            not_before: None,
            in_flight: false,
        });
        let mut ev = Vec::new();
        let now = Instant::now();
        for seq in [1, 2, 2, 1, 3] {
            let cmid = (seq == 2).then_some("c1");
            s.on_frame(
                ServerFrame {
                    message: ServerMessage::NewMessage(message("r", seq, cmid)),
                    request_id: None,
                },
                &mut ev,
                now,
            );
        }
        let seqs: Vec<u64> = ev
            .iter()
            .filter_map(|e| match e {
                Event::Message(m) => Some(m.seq),
                _ => None,
            })
            .collect();
        assert_eq!(seqs, vec![1, 2, 3]);
        assert!(s.pending.is_empty());
        assert_eq!(
            ev.iter()
                .filter(|e| matches!(e, Event::Acked { .. }))
                .count(),
            1
        );
        // The resume request carries the cursor.
        s.rooms.get_mut("r").unwrap().epoch = Some("e".into());
        let r = s.resume_requests(now);
        assert!(
            r[0].contains("\"sinceSeq\":3") && r[0].contains("\"epoch\":\"e\""),
            "{r:?}"
        );
    }

    #[test]
    fn a_room_the_server_takes_away_is_not_resumed() {
        let mut rng = Rng::new(1);
        let mut s = Session::new(&mut rng, 16);
        s.join("kept");
        s.join("taken");
        s.join("asked");
        s.leave("asked");
        let now = Instant::now();
        let mut ev = Vec::new();
        let left = |room: &str, request_id: Option<&str>| ServerFrame {
            message: ServerMessage::RoomLeft {
                room_id: room.into(),
            },
            request_id: request_id.map(str::to_owned),
        };
        s.on_frame(left("taken", None), &mut ev, now);
        s.on_frame(left("asked", Some("l:asked")), &mut ev, now);
        assert_eq!(
            ev,
            [
                Event::Left {
                    room: "taken".into()
                },
                Event::Server(left("asked", Some("l:asked")))
            ]
        );
        let resumed = s.resume_requests(now);
        assert_eq!(resumed.len(), 1, "{resumed:?}");
        assert!(resumed[0].contains("\"roomId\":\"kept\""), "{resumed:?}");
    }

    #[test]
    fn a_send_the_service_could_not_store_goes_again_with_its_id_and_others_fail() {
        let mut rng = Rng::new(1);
        let mut s = Session::new(&mut rng, 16);
        s.join("r");
        let now = Instant::now();
        for content in ["unknown", "refused"] {
            assert_eq!(
                s.queue_send("r".into(), content.into(), MessageKind::Text, None),
                None
            );
        }
        let first = s.sendable(now);
        assert_eq!(first.len(), 2, "{first:?}");
        let id = |frame: &str| {
            let v: serde_json::Value = serde_json::from_str(frame).expect("JSON");
            v["requestId"].as_str().expect("requestId").to_owned()
        };
        let error = |code, retry_after_ms| ServerMessage::Error {
            code,
            message: "x".into(),
            retry_after_ms,
        };
        let mut ev = Vec::new();
        s.on_frame(
            ServerFrame {
                message: error(ErrorCode::ServerError, Some(1000)),
                request_id: Some(id(&first[0])),
            },
            &mut ev,
            now,
        );
        s.on_frame(
            ServerFrame {
                message: error(ErrorCode::ServerError, None),
                request_id: Some(id(&first[1])),
            },
            &mut ev,
            now,
        );
        // Without retryAfterMs it is given up; with it, it waits its time.
        let failed: Vec<&Event> = ev
            .iter()
            .filter(|e| matches!(e, Event::SendFailed { .. }))
            .collect();
        assert!(
            matches!(&failed[..], [Event::SendFailed { code: ErrorCode::ServerError, client_message_id }] if *client_message_id == id(&first[1])[2..]),
            "{ev:?}"
        );
        assert_eq!(s.sendable(now), Vec::<String>::new());
        let again = s.sendable(now + Duration::from_millis(1000));
        assert_eq!(again.len(), 1, "{again:?}");
        assert_eq!(id(&again[0]), id(&first[0]), "the same clientMessageId");
        assert!(again[0].contains("unknown"));

        // A join the service could not answer is asked again, before sends.
        s.on_frame(
            ServerFrame {
                message: error(ErrorCode::ServerError, Some(500)),
                request_id: Some(format!("{JOIN_ID_PREFIX}r")),
            },
            &mut ev,
            now,
        );
        let due = now + Duration::from_millis(500);
        assert_eq!(s.next_due(), Some(due));
        assert_eq!(s.sendable(now), Vec::<String>::new());
        let rejoin = s.sendable(due);
        assert_eq!(rejoin.len(), 1, "{rejoin:?}");
        assert!(
            rejoin[0].contains("JOIN_ROOM") && rejoin[0].contains("\"roomId\":\"r\""),
            "{rejoin:?}"
        );
        assert_eq!(s.next_due(), None);
    }
}
