//! Handling one inbound message: charging it to a rate limit, then
//! answering the request.

use std::sync::Arc;

use super::hub::{Hub, Timer};
use super::inbound::Inbound;
use super::log::{self, Stored};
use super::output::Output;
use super::room::{Room, forget_client_id};
use super::types::{ConnId, RoomId, Timestamp, UserId};
use crate::protocol::server::{self, MessageFrame, NewMessage, ServerMessage};
use crate::protocol::{
    ClientMessage, ClientRequest, CloseCode, CreateRoom, ErrorCode, GetHistory, JoinRoom,
    LeaveRoom, SendMessage, TypingStatus,
};

/// Why an `AUTHENTICATE` whose token the driver did not verify is refused.
const UNVERIFIED_TOKEN: &str = "token was not verified";

impl Hub {
    /// Handles one message received on `conn`.
    pub fn handle(&mut self, now: Timestamp, conn: ConnId, inbound: Inbound) {
        self.tick(now);
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let request_id = inbound.request_id().map(str::to_owned);
        let rid = request_id.as_deref();

        // Charge first: nothing has any effect before it is paid for.
        let user_send = match (&inbound, c.session()) {
            (
                Inbound::Request(ClientMessage {
                    request: ClientRequest::SendMessage(_),
                    ..
                }),
                Some(s),
            ) => Some(s.user_id.clone()),
            _ => None,
        };
        let charge = match &user_send {
            Some(user) => {
                let limit = self.limits.send_bucket();
                let u = self
                    .users
                    .get_mut(user)
                    .expect("authenticated user is registered");
                u.sends.try_take(limit, self.now)
            }
            None => {
                let limit = self.limits.request_bucket();
                let c = self.conns.get_mut(&conn).expect("checked above");
                c.requests.try_take(limit, self.now)
            }
        };
        let c = self.conns.get_mut(&conn).expect("checked above");
        if let Err(retry_after_ms) = charge {
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
            return;
        }
        c.rejected_in_row = 0;

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
            (ClientRequest::ListRooms, Some(_)) => self.list_rooms(conn, rid),
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

    fn list_rooms(&mut self, conn: ConnId, rid: Option<&str>) {
        let session = self.conns[&conn].session().expect("caller checked");
        let rooms = self
            .rooms
            .values()
            .filter(|r| r.may_join(session))
            .map(Room::info)
            .collect();
        self.reply(conn, &ServerMessage::RoomList { rooms }, rid);
    }

    fn create_room(&mut self, conn: ConnId, user: &UserId, request: CreateRoom, rid: Option<&str>) {
        let CreateRoom {
            name,
            description,
            kind,
            id,
        } = request;
        let created = self.rooms_created.get(user).copied().unwrap_or(0);
        if created >= self.limits.rooms_per_user_max {
            let max = self.limits.rooms_per_user_max;
            return self.error(
                conn,
                ErrorCode::Forbidden,
                format!("a user may create at most {max} rooms"),
                rid,
            );
        }
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
                let id = RoomId(Arc::from(id));
                if self.rooms.contains_key(&id) {
                    return self.error(
                        conn,
                        ErrorCode::RoomExists,
                        format!("room {} already exists", id.0),
                        rid,
                    );
                }
                Some(id)
            }
            None => None,
        };
        if self.rooms.len() >= self.limits.max_rooms {
            return self.error(conn, ErrorCode::Forbidden, "room limit reached", rid);
        }
        let id = id.unwrap_or_else(|| self.generate_room_id());
        self.insert_room(id.clone(), name, description, kind, Some(user.clone()));
        self.add_member(conn, &id);
        let room = &self.rooms[&id];
        let message = ServerMessage::RoomCreated {
            room: room.info(),
            epoch: room.log.epoch().to_owned(),
        };
        self.reply(conn, &message, rid);
    }

    fn join_room(&mut self, conn: ConnId, request: JoinRoom, rid: Option<&str>) {
        let JoinRoom {
            room_id,
            since_seq,
            epoch,
        } = request;
        let room_id = room_id.as_str();
        let Some(room) = self.rooms.get(room_id) else {
            return self.room_not_found(conn, room_id, rid);
        };
        let session = self.conns[&conn].session().expect("caller checked");
        if !room.may_join(session) && !self.conns[&conn].rooms.contains(&room.id) {
            return self.error(
                conn,
                ErrorCode::Forbidden,
                format!("no access to private room {room_id}"),
                rid,
            );
        }
        let id = room.id.clone();
        self.add_member(conn, &id);
        let room = &self.rooms[&id];
        let (messages, recovered) = match since_seq {
            None => (room.log.retained(), None),
            Some(n) => {
                let r = room.log.since(n, epoch.as_deref());
                (r.messages, Some(r.recovered))
            }
        };
        let frame = server::room_joined(
            &room.info(),
            room.log.epoch(),
            log::frames(messages),
            &room.users(),
            recovered,
            rid,
        );
        self.send(conn, frame);
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
        let room = &self.rooms[&room];
        let (messages, has_more) = room.log.page(request.before_seq, request.limit as usize);
        let frame = server::history(&request.room_id, log::frames(messages), has_more, rid);
        self.send(conn, frame);
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
        let Some(room_id) = self.member_room(conn, &room_id, rid) else {
            return;
        };
        let room_id = &room_id;
        let username = self.conns[&conn]
            .session()
            .expect("caller checked")
            .username
            .clone();
        let room = self.rooms.get_mut(room_id).expect("caller checked");
        // The retry key is looked up, and kept if the message is new: the
        // room's index and the stored message share it.
        let retry = client_message_id.map(|cmid| (user.clone(), Arc::<str>::from(cmid)));
        if let Some(key) = &retry
            && let Some(seq) = room.client_ids.get(key)
        {
            let ack = room
                .log
                .get(*seq)
                .expect("client ids are pruned with history")
                .frame
                .ack(rid);
            self.stats.retries_deduplicated += 1;
            self.stats.messages_delivered += 1;
            self.send(conn, ack);
            return;
        }
        self.next_message += 1;
        let seq = room.log.next_seq();
        let id = format!("msg_{:x}_{}", self.instance, self.next_message);
        let timestamp = crate::protocol::time::rfc3339_ms(self.now.0);
        let frame = MessageFrame::encode(&NewMessage {
            id: &id,
            seq,
            room_id: &room_id.0,
            user_id: &user.0,
            username: &username,
            content: &content,
            kind,
            timestamp: &timestamp,
            client_message_id: retry.as_ref().map(|(_, cmid)| &**cmid),
        });
        if let Some(key) = &retry {
            room.client_ids.insert(key.clone(), seq);
        }
        let evicted = room.log.append(Stored { seq, frame, retry });
        if let Some(old) = evicted {
            self.stats.history_evictions += 1;
            forget_client_id(&mut room.client_ids, &old);
        }
        let stored = room.log.newest().expect("just appended");
        self.stats.messages_accepted += 1;
        let broadcast = stored.frame.broadcast();
        let mut delivered = 0;
        for member in room.members.values() {
            for &c in &member.conns {
                let frame = if c == conn {
                    stored.frame.ack(rid)
                } else {
                    broadcast.clone()
                };
                self.outputs.push_back(Output::Frame {
                    conn: c,
                    frame,
                    notice: false,
                });
                delivered += 1;
            }
        }
        self.stats.messages_delivered += delivered;
        if room.typing.remove(user).is_some() {
            self.broadcast_typing(room_id, user, false);
        }
    }

    fn typing_status(
        &mut self,
        conn: ConnId,
        user: &UserId,
        request: TypingStatus,
        rid: Option<&str>,
    ) {
        let Some(room_id) = self.member_room(conn, &request.room_id, rid) else {
            return;
        };
        let (room_id, is_typing) = (&room_id, request.is_typing);
        let timeout = self.limits.typing_timeout_ms;
        let now = self.now;
        let room = self.rooms.get_mut(room_id).expect("caller checked");
        let previous = room.typing.get(user).copied();
        if is_typing {
            let deadline = now.plus_ms(timeout);
            room.typing.insert(user.clone(), deadline);
            if let Some(old) = previous {
                self.timers
                    .remove(&(old, Timer::Typing(room_id.clone(), user.clone())));
            }
            self.timers
                .insert((deadline, Timer::Typing(room_id.clone(), user.clone())));
            if previous.is_none() {
                self.broadcast_typing(room_id, user, true);
            }
        } else if let Some(old) = previous {
            room.typing.remove(user);
            self.timers
                .remove(&(old, Timer::Typing(room_id.clone(), user.clone())));
            self.broadcast_typing(room_id, user, false);
        }
    }
}
