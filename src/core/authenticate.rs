//! `AUTHENTICATE`: a verified token starts a session, or replaces the
//! authority of one for the same user (a refresh): its expiry and its `rooms`
//! claim, leaving the private rooms the new claim no longer grants.

use std::sync::Arc;

use super::hub::{Hub, Timer};
use super::inbound::AuthOutcome;
use super::room::may_join;
use super::session::{ConnState, Session};
use super::types::{ConnId, RoomId, Timestamp, UserId};
use crate::protocol::server::ServerMessage;
use crate::protocol::{CloseCode, ErrorCode};

impl Hub {
    pub(super) fn authenticate(
        &mut self,
        conn: ConnId,
        outcome: AuthOutcome,
        username: Option<String>,
        rid: Option<&str>,
    ) {
        let token = match outcome {
            // `expires_at_unix_ms` is the first moment the token is no longer accepted.
            Ok(t) if Timestamp(t.expires_at_unix_ms) > self.now => Ok(t),
            Ok(_) => Err("token expired".to_owned()),
            Err(e) => Err(e.to_string()),
        };
        let token = match token {
            Ok(t) => t,
            Err(reason) => return self.auth_failed(conn, reason, rid),
        };
        let expires_at = Timestamp(token.expires_at_unix_ms);
        let c = self.conns.get_mut(&conn).expect("caller checked");
        match &mut c.state {
            ConnState::ExpectAuthenticate { deadline } => {
                let deadline = *deadline;
                let user_id = UserId(Arc::from(token.user_id.as_str()));
                let username: Arc<str> = Arc::from(
                    token
                        .username
                        .or(username)
                        .unwrap_or_else(|| token.user_id.clone()),
                );
                c.state = ConnState::Authenticated(Session {
                    user_id: user_id.clone(),
                    username: username.clone(),
                    rooms_claim: token.rooms.into_iter().collect(),
                    expires_at,
                });
                self.authenticated += 1;
                self.timers.remove(&(deadline, Timer::AuthDeadline(conn)));
                self.timers.insert((expires_at, Timer::TokenExpiry(conn)));
                let user = self.users.entry(user_id.clone()).or_default();
                user.conns.insert(conn);
                self.auth_success(conn, &user_id, &username, rid);
            }
            ConnState::Authenticated(session) => {
                if *session.user_id.0 != *token.user_id {
                    return self.auth_failed(conn, "token is for a different user".to_owned(), rid);
                }
                // The new token's authority replaces the old one's whole:
                // an older token cannot keep a later expiry or a room that
                // a newer one revoked.
                let old = session.expires_at;
                session.expires_at = expires_at;
                session.rooms_claim = token.rooms.into_iter().collect();
                let (user_id, username) = (session.user_id.clone(), session.username.clone());
                self.timers.remove(&(old, Timer::TokenExpiry(conn)));
                self.timers.insert((expires_at, Timer::TokenExpiry(conn)));
                self.stats.token_refreshes += 1;
                self.auth_success(conn, &user_id, &username, rid);
                self.leave_revoked_rooms(conn);
            }
        }
    }

    /// Takes `conn` out of every private room its token no longer grants
    /// (and its user did not create): `ROOM_LEFT` without a `requestId` to
    /// it, and to the others what any leave tells them.
    fn leave_revoked_rooms(&mut self, conn: ConnId) {
        let c = &self.conns[&conn];
        let session = c
            .session()
            .expect("refreshed connections are authenticated");
        let revoked: Vec<RoomId> = (&c.rooms)
            .into_iter()
            .filter(|id| {
                self.rooms
                    .get(*id)
                    .is_some_and(|r| !may_join(&r.record, session))
            })
            .cloned()
            .collect();
        for room in revoked {
            let message = ServerMessage::RoomLeft {
                room_id: room.0.to_string(),
            };
            self.reply(conn, &message, None);
            self.leave(conn, &room);
            self.stats.rooms_revoked += 1;
        }
    }

    fn auth_success(&mut self, conn: ConnId, user_id: &UserId, username: &str, rid: Option<&str>) {
        let message = ServerMessage::AuthSuccess {
            user_id: user_id.0.to_string(),
            username: username.to_owned(),
            status: "online".to_owned(),
        };
        self.reply(conn, &message, rid);
    }

    pub(super) fn auth_failed(&mut self, conn: ConnId, reason: String, rid: Option<&str>) {
        let c = self.conns.get_mut(&conn).expect("caller checked");
        c.failed_auths += 1;
        let close = c.failed_auths >= self.limits.auth_failures_max;
        self.error(conn, ErrorCode::Unauthorized, reason, rid);
        if close {
            self.close(conn, CloseCode::Policy, "too many failed authentications");
        }
    }
}
