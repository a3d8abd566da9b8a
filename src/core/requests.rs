//! Handling one inbound message: charging it to a rate limit, then starting
//! the request. A request that needs the store hands an operation out; its
//! reply is finished in `replies`.

use super::hub::Hub;
use super::inbound::Inbound;
use super::pending::{Pending, Wait};
use super::types::{ConnId, Timestamp, UserId};
use crate::protocol::server::{MessageFrame, NewMessage, ServerMessage};
use crate::protocol::{
    ClientMessage, ClientRequest, CloseCode, CreateRoom, ErrorCode, GetHistory, JoinRoom,
    LeaveRoom, SendMessage, TypingStatus,
};
use crate::store::{Draft, Op, RoomRecord, Since};

/// Why an `AUTHENTICATE` whose token the driver did not verify is refused.
const UNVERIFIED_TOKEN: &str = "token was not verified";
/// What `retryAfterMs` says when the store did not answer a request (the
/// driver passes it to `Hub::store_failed`), or when a join must wait for
/// the undo of the last one.
pub const STORE_RETRY_AFTER_MS: u64 = 1000;

/// Messages of one connection that may wait behind a request the store has
/// not answered; past it, the connection is closed `1013` (it sends faster
/// than the store answers).
pub const WAITING_MAX: usize = 64;

impl Hub {
    /// Handles one message received on `conn` (after the ones before it,
    /// which may still wait for the store).
    pub fn handle(&mut self, now: Timestamp, conn: ConnId, inbound: Inbound) {
        self.tick(now);
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.busy || c.waiting.is_some() {
            let waiting = c.waiting.get_or_insert_default();
            if waiting.len() >= WAITING_MAX {
                self.close(conn, CloseCode::TryAgainLater, "too many requests waiting");
                return;
            }
            waiting.push_back(inbound);
            return;
        }
        self.start(conn, inbound);
    }

    /// Starts the messages that waited behind `conn`'s finished request,
    /// until one waits for the store again.
    pub(super) fn resume(&mut self, conn: ConnId) {
        loop {
            let Some(c) = self.conns.get_mut(&conn) else {
                return;
            };
            c.busy = false;
            let Some(next) = c.waiting.as_mut().and_then(|w| w.pop_front()) else {
                c.waiting = None;
                return;
            };
            if c.waiting.as_ref().is_some_and(|w| w.is_empty()) {
                c.waiting = None;
            }
            self.start(conn, next);
            if self.conns.get(&conn).is_none_or(|c| c.busy) {
                return;
            }
        }
    }

    fn start(&mut self, conn: ConnId, inbound: Inbound) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let request_id = inbound.request_id().map(str::to_owned);
        let rid = request_id.as_deref();

        // Charge first: nothing has any effect before it is paid for. An
        // authenticated SEND_MESSAGE is charged to its user's bucket, which
        // the store keeps (it is the same on every node); anything else to
        // the connection's.
        let user_send = matches!(
            (&inbound, c.session()),
            (
                Inbound::Request(ClientMessage {
                    request: ClientRequest::SendMessage(_),
                    ..
                }),
                Some(_)
            )
        );
        if !user_send {
            let limit = self.limits.request_bucket();
            if let Err(retry_after_ms) = c.requests.try_take(limit, self.now) {
                self.rate_limited(conn, retry_after_ms, rid);
                return;
            }
            c.rejected_in_row = 0;
        }

        let request = match inbound {
            Inbound::Binary => {
                self.error(
                    conn,
                    ErrorCode::InvalidMessage,
                    "binary frames are not supported",
                    None,
                );
                return;
            }
            Inbound::Invalid(e) => {
                self.error(conn, ErrorCode::InvalidMessage, e.reason, rid);
                return;
            }
            Inbound::Authenticate {
                token, username, ..
            } => {
                self.authenticate(conn, token, username, rid);
                return;
            }
            Inbound::Request(m) => m.request,
        };
        let user = self.conns[&conn].session().map(|s| s.user_id.clone());
        match (request, user) {
            // Only the driver can verify a token (see `Inbound::from_message`):
            // one that reaches the core unverified is never trusted.
            (ClientRequest::Authenticate(_), _) => {
                self.auth_failed(conn, UNVERIFIED_TOKEN.to_owned(), rid);
            }
            (_, None) => self.error(conn, ErrorCode::Unauthorized, "authenticate first", rid),
            (ClientRequest::Ping, Some(_)) => self.reply(conn, &ServerMessage::Pong {}, rid),
            (ClientRequest::ListRooms, Some(_)) => {
                self.store(Pending::answer(conn, rid, Wait::ListRooms), Op::ListRooms);
            }
            (ClientRequest::CreateRoom(r), Some(user)) => self.create_room(conn, &user, r, rid),
            (ClientRequest::JoinRoom(r), Some(_)) => self.join_room(conn, r, rid),
            (ClientRequest::LeaveRoom(r), Some(_)) => self.leave_room(conn, r, rid),
            (ClientRequest::GetHistory(r), Some(_)) => self.get_history(conn, r, rid),
            (ClientRequest::SendMessage(r), Some(user)) => {
                self.send_message(conn, &user, r, rid);
            }
            (ClientRequest::TypingStatus(r), Some(user)) => {
                self.typing_status(conn, &user, r, rid);
            }
        }
    }

    /// A request refused by a rate limit: `RATE_LIMIT_EXCEEDED`, and after
    /// too many in a row, the connection closed.
    pub(super) fn rate_limited(&mut self, conn: ConnId, retry_after_ms: u64, rid: Option<&str>) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.rejected_in_row += 1;
        let abuse = c.rejected_in_row >= self.limits.rate_limit_disconnect_after;
        self.stats.rate_limited += 1;
        self.error_with_retry(
            conn,
            ErrorCode::RateLimitExceeded,
            "rate limit exceeded",
            Some(retry_after_ms),
            rid,
        );
        if abuse {
            self.close(conn, CloseCode::Policy, "rate limit abuse");
        }
    }

    fn create_room(&mut self, conn: ConnId, user: &UserId, request: CreateRoom, rid: Option<&str>) {
        let CreateRoom {
            name,
            description,
            kind,
            id,
        } = request;
        let generated = id.is_none();
        let id = match id {
            Some(id) => {
                // A chosen id must be one the creator's token grants, and
                // that is checked before whether it is taken: nobody can
                // claim an id that tokens grant to others, nor learn which
                // of those exist.
                let session = self.conns[&conn].session().expect("caller checked");
                if !session.rooms_claim.contains(&id) {
                    let shown: String = id.chars().take(64).collect();
                    return self.error(
                        conn,
                        ErrorCode::Forbidden,
                        format!("room id {shown} is not in your token's rooms claim"),
                        rid,
                    );
                }
                id
            }
            None => self.generate_room_id().0.to_string(),
        };
        let record = self.record(id, name, description, kind, Some(user));
        self.ask_create(conn, record, generated, rid);
    }

    /// Asks the store to create the room.
    pub(super) fn ask_create(
        &mut self,
        conn: ConnId,
        record: RoomRecord,
        generated: bool,
        rid: Option<&str>,
    ) {
        let op = Op::CreateRoom {
            record: record.clone(),
            rooms_per_user_max: self.limits.rooms_per_user_max,
            max_rooms: self.limits.max_rooms as u64,
        };
        let wait = Wait::Create { record, generated };
        self.store(Pending::answer(conn, rid, wait), op);
    }

    /// Asks the store to put `conn` in `room` (`since`: a recovery;
    /// `creating`: its creator, answered `ROOM_CREATED`).
    pub(super) fn ask_join(
        &mut self,
        conn: ConnId,
        room: String,
        since: Option<Since>,
        creating: bool,
        rid: Option<&str>,
    ) {
        let c = &self.conns[&conn];
        let session = c.session().expect("caller checked");
        let granted = session.rooms_claim.contains(&room) || c.rooms.contains(room.as_str());
        let wait = Wait::Join {
            room_id: room.clone(),
            user: session.user_id.clone(),
            creating,
        };
        let op = Op::Join {
            user: session.user_id.0.to_string(),
            username: session.username.to_string(),
            holder: self.holder(conn),
            granted,
            since,
            history_limit: self.history_limit(),
            now_ms: self.now.0,
            room,
        };
        self.store(Pending::answer(conn, rid, wait), op);
    }

    pub(super) fn history_limit(&self) -> u32 {
        u32::try_from(self.limits.history_limit).unwrap_or(u32::MAX)
    }

    fn join_room(&mut self, conn: ConnId, request: JoinRoom, rid: Option<&str>) {
        let JoinRoom {
            room_id,
            since_seq,
            epoch,
        } = request;
        let since = since_seq.map(|seq| Since { seq, epoch });
        // Its last join's outcome was unknown and is being undone: this one
        // would be undone with it.
        if self.undoing.contains(&(conn, room_id.clone())) {
            return self.error_with_retry(
                conn,
                ErrorCode::ServerError,
                "the service is unavailable, try again",
                Some(STORE_RETRY_AFTER_MS),
                rid,
            );
        }
        self.ask_join(conn, room_id, since, false, rid);
    }

    fn leave_room(&mut self, conn: ConnId, request: LeaveRoom, rid: Option<&str>) {
        let Some(room) = self.member_room(conn, &request.room_id, rid) else {
            return;
        };
        let message = ServerMessage::RoomLeft {
            room_id: request.room_id,
        };
        self.reply(conn, &message, rid);
        self.leave(conn, &room);
    }

    fn get_history(&mut self, conn: ConnId, request: GetHistory, rid: Option<&str>) {
        let Some(room) = self.member_room(conn, &request.room_id, rid) else {
            return;
        };
        let op = Op::History {
            room: room.0.to_string(),
            before_seq: request.before_seq,
            limit: request.limit,
            history_limit: self.history_limit(),
        };
        let wait = Wait::History {
            room_id: request.room_id,
        };
        self.store(Pending::answer(conn, rid, wait), op);
    }

    fn send_message(
        &mut self,
        conn: ConnId,
        user: &UserId,
        request: SendMessage,
        rid: Option<&str>,
    ) {
        let SendMessage {
            room_id,
            content,
            kind,
            client_message_id,
        } = request;
        let bucket = self.limits.send_bucket();
        let Some(room) = self.joined(conn, &room_id) else {
            // Charged all the same, then told why it cannot send.
            let op = Op::Charge {
                user: user.0.to_string(),
                bucket,
                now_ms: self.now.0,
            };
            return self.store(Pending::answer(conn, rid, Wait::Charge { room_id }), op);
        };
        let username = self.conns[&conn]
            .session()
            .expect("caller checked")
            .username
            .clone();
        self.next_message += 1;
        let id = format!("msg_{:x}_{}", self.instance, self.next_message);
        let timestamp = crate::protocol::time::rfc3339_ms(self.now.0);
        let (head, tail) = MessageFrame::draft(&NewMessage {
            id: &id,
            seq: 0,
            room_id: &room_id,
            user_id: &user.0,
            username: &username,
            content: &content,
            kind,
            timestamp: &timestamp,
            client_message_id: client_message_id.as_deref(),
        });
        self.rooms.get_mut(&room).expect("joined").publishing += 1;
        let op = Op::Publish {
            room: room_id,
            user: user.0.to_string(),
            holder: self.holder(conn),
            client_message_id,
            draft: Draft { head, tail },
            bucket,
            history_limit: self.history_limit(),
            now_ms: self.now.0,
        };
        self.store(Pending::answer(conn, rid, Wait::Publish { room }), op);
    }

    fn typing_status(
        &mut self,
        conn: ConnId,
        user: &UserId,
        request: TypingStatus,
        rid: Option<&str>,
    ) {
        let Some(room) = self.member_room(conn, &request.room_id, rid) else {
            return;
        };
        let username = self.conns[&conn]
            .session()
            .expect("caller checked")
            .username
            .to_string();
        let op = Op::Typing {
            room: room.0.to_string(),
            user: user.0.to_string(),
            username,
            is_typing: request.is_typing,
            holder: self.holder(conn),
        };
        self.store(Pending::quiet(), op);
    }
}
