//! What the oracles know: every connection as its client saw it, and every
//! accepted message of every room epoch that anyone observed.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use base64::Engine as _;
use chat_flow::protocol::server::{ChatMessage, RoomInfo};
use serde_json::Value;

use super::{OracleConfig, Place};
use crate::obs::ConnNo;

/// A request a connection sent, as far as the oracles care.
#[derive(Debug, Clone, Default)]
pub struct Req {
    /// When it was written.
    pub at: u64,
    /// Its `type`.
    pub kind: String,
    /// Its `requestId`.
    pub request_id: Option<String>,
    /// `roomId`.
    pub room: Option<String>,
    /// `sinceSeq`.
    pub since_seq: Option<u64>,
    /// `epoch`.
    pub epoch: Option<String>,
    /// `beforeSeq`.
    pub before_seq: Option<u64>,
    /// `limit`.
    pub limit: Option<u64>,
    /// `isTyping`.
    pub is_typing: Option<bool>,
    /// `clientMessageId`.
    pub client_message_id: Option<String>,
    /// The token's `sub` and `exp` (read without verifying).
    pub token: Option<(String, u64)>,
    /// The token's `rooms` claim (empty when it has none).
    pub claim: BTreeSet<String>,
    /// The token's `username` claim.
    pub token_username: Option<String>,
    /// `username` (of `AUTHENTICATE`).
    pub username: Option<String>,
    /// `content`.
    pub content: Option<String>,
    /// `type` of the payload (`SEND_MESSAGE`: text or emote; `CREATE_ROOM`:
    /// public or private).
    pub payload_type: Option<String>,
    /// `name` (of `CREATE_ROOM`).
    pub name: Option<String>,
    /// `description` (of `CREATE_ROOM`).
    pub description: Option<String>,
    /// For `JOIN_ROOM` and `GET_HISTORY`: the highest `seq` of each epoch of
    /// the room observed anywhere before the request was written (the
    /// answer cannot be older than that).
    pub known_max: BTreeMap<String, u64>,
    /// The last time before the request was written that a member of the
    /// room (in the connection's server run) received a frame.
    pub member_seen: Option<u64>,
}

impl Req {
    /// Parses a request the client wrote; `None` if it is not JSON.
    pub fn parse(at: u64, text: &str, model: &Model, conn: ConnNo) -> Option<Req> {
        let v: Value = serde_json::from_str(text).ok()?;
        let p = v.get("payload").cloned().unwrap_or(Value::Null);
        let s = |k: &str| p.get(k).and_then(Value::as_str).map(str::to_owned);
        let u = |k: &str| p.get(k).and_then(Value::as_u64);
        let mut req = Req {
            at,
            kind: v.get("type").and_then(Value::as_str)?.to_owned(),
            request_id: v
                .get("requestId")
                .and_then(Value::as_str)
                .map(str::to_owned),
            // CREATE_ROOM names the room it wants `id`.
            room: s("roomId").or_else(|| {
                (v.get("type").and_then(Value::as_str) == Some("CREATE_ROOM"))
                    .then(|| s("id"))
                    .flatten()
            }),
            since_seq: u("sinceSeq"),
            epoch: s("epoch"),
            before_seq: u("beforeSeq"),
            limit: u("limit"),
            is_typing: p.get("isTyping").and_then(Value::as_bool),
            client_message_id: s("clientMessageId"),
            token: s("token").and_then(|t| token_claims(&t)),
            claim: s("token").map(|t| token_rooms(&t)).unwrap_or_default(),
            token_username: s("token").and_then(|t| token_username(&t)),
            username: s("username"),
            content: s("content"),
            payload_type: s("type"),
            name: s("name"),
            description: s("description"),
            known_max: BTreeMap::new(),
            member_seen: None,
        };
        if let (Some(room), Some(c)) = (&req.room, model.conns.get(&conn)) {
            req.member_seen = model.member_evidence.get(&(c.run, room.clone())).copied();
        }
        if matches!(req.kind.as_str(), "JOIN_ROOM" | "GET_HISTORY")
            && let Some(room) = &req.room
        {
            req.known_max = model.known_max(room);
        }
        Some(req)
    }
}

/// The claims of a JWT, read without verifying.
fn jwt_payload(token: &str) -> Option<Value> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// `(sub, exp)` of a JWT, read without verifying.
fn token_claims(token: &str) -> Option<(String, u64)> {
    let v = jwt_payload(token)?;
    Some((v.get("sub")?.as_str()?.to_owned(), v.get("exp")?.as_u64()?))
}

/// The `username` claim of a JWT, read without verifying.
fn token_username(token: &str) -> Option<String> {
    jwt_payload(token)?
        .get("username")?
        .as_str()
        .map(str::to_owned)
}

impl Req {
    /// The name an `AUTHENTICATE` that succeeds gives its connection: the
    /// token's `username` claim, else the payload's `username`, else the
    /// user id.
    pub fn auth_name(&self) -> Option<String> {
        self.token_username
            .clone()
            .or_else(|| self.username.clone())
            .or_else(|| self.token.as_ref().map(|(sub, _)| sub.clone()))
    }
}

/// The `rooms` claim of a JWT (empty when absent or unreadable).
fn token_rooms(token: &str) -> BTreeSet<String> {
    jwt_payload(token)
        .and_then(|v| {
            v.get("rooms")?.as_array().map(|rooms| {
                rooms
                    .iter()
                    .filter_map(|r| r.as_str().map(str::to_owned))
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// A room as one connection sees it.
#[derive(Debug, Clone, Default)]
pub struct ConnRoom {
    /// The epoch it joined.
    pub epoch: String,
    /// The highest `seq` it has received in this room.
    pub last: u64,
    /// Users present, per `ROOM_JOINED` and presence events since.
    pub users: BTreeSet<String>,
    /// The room is private (as `ROOM_JOINED` / `ROOM_CREATED` said).
    pub private: bool,
    /// Who created it (`system` for a default room).
    pub created_by: String,
    /// When the `ROOM_JOINED` (or `ROOM_CREATED`) that put the connection
    /// in the room arrived.
    pub joined_at: u64,
}

/// A connection as its client saw it.
#[derive(Debug, Clone)]
pub struct Conn {
    /// The simulated client.
    pub client: u32,
    /// The server run it was made to.
    pub run: usize,
    /// When TCP was established.
    pub dial_at: u64,
    /// When the upgrade's answer arrived.
    pub open_at: Option<u64>,
    /// When the stream ended.
    pub ended_at: Option<u64>,
    /// A close frame arrived.
    pub closed: bool,
    /// Its code.
    pub close_code: Option<u16>,
    /// Requests with a `requestId` not answered yet, oldest first.
    pub pending: VecDeque<Req>,
    /// The authenticated user.
    pub user: Option<String>,
    /// The first simulated millisecond at which its token is no longer
    /// accepted (refreshes included).
    pub expires_at: Option<u64>,
    /// Rooms joined.
    pub rooms: BTreeMap<String, ConnRoom>,
    /// An error after which only a close may come, and when it came.
    pub fatal: Option<(u64, String)>,
    /// A deadline violation was reported already (report once).
    pub overdue_reported: bool,
    /// When the last frame from the server (any kind) arrived.
    pub last_recv_at: u64,
    /// `AUTHENTICATE` requests answered `UNAUTHORIZED` (refreshes included).
    pub failed_auths: u32,
    /// The code of the last text frame, if it was an `ERROR`.
    pub last_error: Option<chat_flow::protocol::ErrorCode>,
    /// The `rooms` claim of the token in force.
    pub claim: BTreeSet<String>,
    /// Rooms a refresh just revoked: the next frames must be their
    /// `ROOM_LEFT`s, in this order.
    pub expect_left: VecDeque<String>,
    /// The name it goes by (from its first `AUTH_SUCCESS`).
    pub username: Option<String>,
    /// Messages it wrote that carry no readable `requestId` (their replies
    /// and errors carry none either).
    pub anon_sent: u64,
    /// Of those, requests other than `TYPING_STATUS` (or unreadable).
    pub anon_requests: u64,
    /// The node it was made to (0 on one node; see [`super::nodes`]).
    pub node: usize,
    /// When a close frame arrived.
    pub closed_at: Option<u64>,
    /// How the stream ended (`eof`, `error`, `dropped`).
    pub end_how: Option<&'static str>,
}

impl Conn {
    /// A connection of `client` to server run `run`, made at `at`.
    pub fn new(client: u32, run: usize, at: u64) -> Conn {
        Conn {
            client,
            run,
            dial_at: at,
            open_at: None,
            ended_at: None,
            closed: false,
            close_code: None,
            pending: VecDeque::new(),
            user: None,
            expires_at: None,
            rooms: BTreeMap::new(),
            fatal: None,
            overdue_reported: false,
            last_recv_at: at,
            failed_auths: 0,
            last_error: None,
            claim: BTreeSet::new(),
            expect_left: VecDeque::new(),
            username: None,
            anon_sent: 0,
            anon_requests: 0,
            node: 0,
            closed_at: None,
            end_how: None,
        }
    }

    /// Whether it is still up (as far as its client knows).
    pub fn live(&self) -> bool {
        self.open_at.is_some() && self.ended_at.is_none() && !self.closed
    }
}

/// An accepted message.
#[derive(Debug, Clone)]
pub struct Msg {
    /// The message.
    pub message: ChatMessage,
    /// Its server timestamp, in simulated milliseconds.
    pub ts: u64,
}

/// Everything observed of one epoch of one room.
#[derive(Debug, Clone, Default)]
pub struct RoomLog {
    /// Accepted messages by `seq`.
    pub msgs: BTreeMap<u64, Msg>,
    /// `(user, clientMessageId)` → the `seq`s carrying it.
    pub by_client_id: BTreeMap<(String, String), Vec<u64>>,
    /// The server run the epoch belongs to.
    pub run: usize,
    /// When it was first seen, among all epochs (a room deleted and created
    /// again has several in one run).
    pub order: u64,
    /// The room's `createdAt` as first seen in this epoch.
    pub created_at: Option<String>,
    /// Whether a `ROOM_CREATED` started it.
    pub created: bool,
}

impl RoomLog {
    /// The highest accepted `seq` observed (0 if none).
    pub fn max_seq(&self) -> u64 {
        self.msgs.keys().next_back().copied().unwrap_or(0)
    }
}

/// The oracles' shared model.
#[derive(Debug)]
pub struct Model {
    /// Settings.
    pub cfg: OracleConfig,
    /// Every connection.
    pub conns: BTreeMap<ConnNo, Conn>,
    /// Start time of each server run.
    pub runs: Vec<u64>,
    /// `(room, epoch)` → what was observed of it.
    pub logs: BTreeMap<(String, String), RoomLog>,
    /// Message id → `(room, epoch, seq)`.
    pub ids: BTreeMap<String, (String, String, u64)>,
    /// Epochs seen so far (for [`RoomLog::order`]).
    pub epochs_seen: u64,
    /// `(server run, room)` → the latest time a connection joined to the
    /// room received a frame: the server had a member there shortly before.
    pub member_evidence: BTreeMap<(usize, String), u64>,
    /// Rooms seen created by `system` (default rooms: public, never deleted).
    pub system_rooms: BTreeSet<String>,
    /// User id → every name an `AUTHENTICATE` written for it would give
    /// (a user goes by one of these wherever it is shown).
    pub user_names: BTreeMap<String, BTreeSet<String>>,
    /// `(server run, room id, createdAt)` → `(name, description, type,
    /// createdBy)`: what one incarnation of a room is, wherever it is shown.
    pub room_facts: BTreeMap<(usize, String, String), RoomFacts>,
    /// Every `HISTORY` page, judged at the end (`history::finish`).
    pub pages: Vec<super::history::Page>,
    /// The nodes: which connection is on which, crashes, store cuts.
    pub topology: super::nodes::Topology,
}

/// The fields of a room object that never change while the room lives.
pub type RoomFacts = (String, String, chat_flow::protocol::RoomKind, String);

impl Model {
    /// The epoch `epoch` of `room` exists from now on (announced to `conn`),
    /// messages or not.
    pub fn open_epoch(&mut self, conn: ConnNo, room: &RoomInfo, epoch: &str) {
        let Some(run) = self.conns.get(&conn).map(|c| c.run) else {
            return;
        };
        let log = self.log_entry(&room.id, epoch, run);
        log.created_at
            .get_or_insert_with(|| room.created_at.clone());
    }

    /// The log of `(room, epoch)`, made (in server run `run`) if new.
    pub fn log_entry(&mut self, room: &str, epoch: &str, run: usize) -> &mut RoomLog {
        let order = self.epochs_seen;
        let key = (room.to_owned(), epoch.to_owned());
        if !self.logs.contains_key(&key) {
            self.epochs_seen += 1;
        }
        self.logs.entry(key).or_insert_with(|| RoomLog {
            run,
            order,
            ..RoomLog::default()
        })
    }

    /// An empty model.
    pub fn new(cfg: OracleConfig) -> Model {
        Model {
            cfg,
            conns: BTreeMap::new(),
            runs: Vec::new(),
            logs: BTreeMap::new(),
            ids: BTreeMap::new(),
            epochs_seen: 0,
            member_evidence: BTreeMap::new(),
            system_rooms: BTreeSet::new(),
            user_names: BTreeMap::new(),
            room_facts: BTreeMap::new(),
            pages: Vec::new(),
            topology: super::nodes::Topology::default(),
        }
    }

    /// The index of the server run now.
    pub fn current_run(&self) -> usize {
        self.runs.len().saturating_sub(1)
    }

    /// The user `conn` authenticated as.
    pub fn user_of(&self, conn: ConnNo) -> Option<&str> {
        self.conns.get(&conn).and_then(|c| c.user.as_deref())
    }

    /// The highest `seq` observed so far in each epoch of `room`.
    pub fn known_max(&self, room: &str) -> BTreeMap<String, u64> {
        self.logs
            .range((room.to_owned(), String::new())..)
            .take_while(|((r, _), _)| r == room)
            .map(|((_, e), log)| (e.clone(), log.max_seq()))
            .collect()
    }

    /// The latest epoch of `room` (of the latest server run it was seen in,
    /// and of those the last seen: a room created again has a new one).
    pub fn latest_epoch(&self, room: &str) -> Option<(&str, &RoomLog)> {
        self.logs
            .range((room.to_owned(), String::new())..)
            .take_while(|((r, _), _)| r == room)
            .max_by_key(|(_, log)| (log.run, log.order))
            .map(|((_, e), log)| (e.as_str(), log))
    }

    /// Converts a server timestamp (RFC 3339, UTC, milliseconds) to
    /// simulated milliseconds.
    pub fn sim_ms(&self, timestamp: &str) -> Option<u64> {
        parse_rfc3339_ms(timestamp).and_then(|unix| unix.checked_sub(self.cfg.epoch_unix_ms))
    }

    /// `room` as shown to `conn`: the same incarnation of a room (one
    /// `createdAt` in one server run) always has the same name,
    /// description, type and creator. Returns what differs.
    pub fn room_facts(&mut self, conn: ConnNo, room: &RoomInfo) -> Option<String> {
        let run = self.conns.get(&conn).map_or(0, |c| c.run);
        let facts: RoomFacts = (
            room.name.clone(),
            room.description.clone(),
            room.kind,
            room.created_by.clone(),
        );
        let key = (run, room.id.clone(), room.created_at.clone());
        match self.room_facts.get(&key) {
            Some(known) if *known != facts => Some(format!(
                "room {} (created at {}) shown as {facts:?}, earlier as {known:?}",
                room.id, room.created_at
            )),
            Some(_) => None,
            None => {
                self.room_facts.insert(key, facts);
                None
            }
        }
    }

    /// Whether `user` may be shown as `name`: a name one of its
    /// `AUTHENTICATE`s gave (`None` when none of its authentications was
    /// observed, so nothing is known).
    pub fn name_ok(&self, user: &str, name: &str) -> Option<bool> {
        self.user_names.get(user).map(|names| names.contains(name))
    }

    /// Where `conn` is.
    pub fn place(&self, conn: ConnNo) -> Place {
        Place {
            client: self.conns.get(&conn).map(|c| c.client),
            conn: Some(conn),
            room: None,
            seq: None,
        }
    }

    /// Where `conn`, `room` and `seq` are.
    pub fn place_room(&self, conn: ConnNo, room: &str, seq: Option<u64>) -> Place {
        Place {
            room: Some(room.to_owned()),
            seq,
            ..self.place(conn)
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` → Unix milliseconds.
pub fn parse_rfc3339_ms(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 24 || b[4] != b'-' || b[10] != b'T' || b[19] != b'.' || b[23] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss, ms) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..23)?);
    // Days from civil (Howard Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3_600 + mm * 60 + ss;
    u64::try_from(secs * 1_000 + ms).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip() {
        for ms in [0, 1_696_161_600_000, 951_782_400_123, 1_700_000_012_345] {
            let s = chat_flow::protocol::time::rfc3339_ms(ms);
            assert_eq!(parse_rfc3339_ms(&s), Some(ms), "{s}");
        }
    }
}
