//! `protocol`: every frame the server sends has exactly the shape the
//! contract gives its type — the envelope (`type`, `payload`, an optional
//! `requestId` of at most 128 characters), every field of the payload
//! present (optional ones only where the contract makes them optional),
//! none unknown, none `null`, each of its type and in its range: ids,
//! names and usernames within their lengths and character rules, `seq` at
//! least 1, timestamps RFC 3339 UTC with milliseconds, `status` `online`,
//! enumerations (`type`, `code`) among their values, `retryAfterMs` an
//! integer of at least 1 and only on `RATE_LIMIT_EXCEEDED` (or
//! `SERVER_ERROR`, which may carry it in a cluster).
//!
//! The typed decoder the other oracles read with is lenient (a missing
//! `recovered` or `retryAfterMs` decodes as absent, extra fields are
//! dropped), so the shape is checked here, on the raw JSON. What the
//! values must be (given the requests and the rest of the run) is checked
//! by the other oracles.

use serde_json::{Map, Value};

use super::model::parse_rfc3339_ms;
use chat_flow::protocol::{
    CLIENT_MESSAGE_ID_CHARS_MAX, REQUEST_ID_CHARS_MAX, ROOM_DESCRIPTION_CHARS_MAX,
    ROOM_ID_CHARS_MAX, ROOM_NAME_CHARS_MAX, USERNAME_MAX_CHARS as USERNAME_CHARS_MAX,
};

/// The error codes of the contract.
const CODES: [&str; 8] = [
    "UNAUTHORIZED",
    "INVALID_MESSAGE",
    "ROOM_NOT_FOUND",
    "NOT_A_MEMBER",
    "FORBIDDEN",
    "ROOM_EXISTS",
    "RATE_LIMIT_EXCEEDED",
    "SERVER_ERROR",
];

/// Collects what is wrong with one frame.
struct Shape {
    max_content_chars: usize,
    problems: Vec<String>,
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

impl Shape {
    fn bad(&mut self, path: &str, what: impl std::fmt::Display) {
        self.problems.push(format!("{path}: {what}"));
    }

    /// An object with exactly the `required` fields and some of the
    /// `optional` ones, none of them `null`.
    fn object<'v>(
        &mut self,
        path: &str,
        v: &'v Value,
        required: &[&str],
        optional: &[&str],
    ) -> Option<&'v Map<String, Value>> {
        let Some(o) = v.as_object() else {
            self.bad(path, format!("not an object: {v}"));
            return None;
        };
        for k in required {
            if !o.contains_key(*k) {
                self.bad(path, format!("missing field {k}"));
            }
        }
        for (k, x) in o {
            if !required.contains(&k.as_str()) && !optional.contains(&k.as_str()) {
                self.bad(path, format!("unknown field {k}"));
            } else if x.is_null() {
                self.bad(path, format!("{k} is null"));
            }
        }
        Some(o)
    }

    /// A string of `min..=max` characters (when present).
    fn string<'v>(
        &mut self,
        path: &str,
        o: &'v Map<String, Value>,
        key: &str,
        min: usize,
        max: usize,
    ) -> Option<&'v str> {
        let v = o.get(key).filter(|v| !v.is_null())?;
        let Some(s) = v.as_str() else {
            self.bad(&format!("{path}.{key}"), format!("not a string: {v}"));
            return None;
        };
        let n = chars(s);
        if n < min || n > max {
            self.bad(
                &format!("{path}.{key}"),
                format!("{n} characters, not {min}-{max}: {s:?}"),
            );
        }
        Some(s)
    }

    /// A display text: no control characters, not only whitespace.
    fn text(&mut self, path: &str, o: &Map<String, Value>, key: &str, min: usize, max: usize) {
        if let Some(s) = self.string(path, o, key, min, max) {
            if s.chars().any(char::is_control) {
                self.bad(
                    &format!("{path}.{key}"),
                    format!("control characters: {s:?}"),
                );
            }
            if !s.is_empty() && s.trim().is_empty() {
                self.bad(&format!("{path}.{key}"), "only whitespace");
            }
        }
    }

    /// A room id: 1–64 of `[A-Za-z0-9_-]`.
    fn room_id(&mut self, path: &str, o: &Map<String, Value>, key: &str) {
        if let Some(s) = self.string(path, o, key, 1, ROOM_ID_CHARS_MAX)
            && !s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            self.bad(
                &format!("{path}.{key}"),
                format!("not [A-Za-z0-9_-]: {s:?}"),
            );
        }
    }

    fn timestamp(&mut self, path: &str, o: &Map<String, Value>, key: &str) {
        if let Some(s) = self.string(path, o, key, 24, 24)
            && parse_rfc3339_ms(s).is_none()
        {
            self.bad(
                &format!("{path}.{key}"),
                format!("not RFC 3339 UTC with milliseconds: {s:?}"),
            );
        }
    }

    fn boolean(&mut self, path: &str, o: &Map<String, Value>, key: &str) {
        if let Some(v) = o.get(key)
            && !v.is_boolean()
            && !v.is_null()
        {
            self.bad(&format!("{path}.{key}"), format!("not a boolean: {v}"));
        }
    }

    fn integer(&mut self, path: &str, o: &Map<String, Value>, key: &str, min: u64) {
        let Some(v) = o.get(key).filter(|v| !v.is_null()) else {
            return;
        };
        match v.as_u64() {
            Some(n) if n >= min => {}
            _ => self.bad(
                &format!("{path}.{key}"),
                format!("not an integer of at least {min}: {v}"),
            ),
        }
    }

    fn one_of(&mut self, path: &str, o: &Map<String, Value>, key: &str, values: &[&str]) {
        if let Some(s) = self.string(path, o, key, 0, usize::MAX)
            && !values.contains(&s)
        {
            self.bad(
                &format!("{path}.{key}"),
                format!("{s:?} is not one of {values:?}"),
            );
        }
    }

    fn username(&mut self, path: &str, o: &Map<String, Value>, key: &str) {
        if let Some(s) = self.string(path, o, key, 1, USERNAME_CHARS_MAX)
            && s.chars().any(char::is_control)
        {
            self.bad(
                &format!("{path}.{key}"),
                format!("control characters: {s:?}"),
            );
        }
    }

    fn array<'v>(&mut self, path: &str, o: &'v Map<String, Value>, key: &str) -> &'v [Value] {
        match o.get(key) {
            Some(Value::Array(a)) => a,
            Some(Value::Null) | None => &[],
            Some(v) => {
                self.bad(&format!("{path}.{key}"), format!("not an array: {v}"));
                &[]
            }
        }
    }

    fn room(&mut self, path: &str, v: &Value) {
        let fields = [
            "id",
            "name",
            "description",
            "type",
            "memberCount",
            "createdAt",
            "createdBy",
        ];
        let Some(o) = self.object(path, v, &fields, &[]) else {
            return;
        };
        self.room_id(path, o, "id");
        self.text(path, o, "name", 1, ROOM_NAME_CHARS_MAX);
        self.string(path, o, "description", 0, ROOM_DESCRIPTION_CHARS_MAX);
        self.one_of(path, o, "type", &["public", "private"]);
        self.integer(path, o, "memberCount", 0);
        self.timestamp(path, o, "createdAt");
        self.string(path, o, "createdBy", 1, usize::MAX);
    }

    fn message(&mut self, path: &str, v: &Value) {
        let fields = [
            "id",
            "seq",
            "roomId",
            "userId",
            "username",
            "content",
            "type",
            "timestamp",
        ];
        let Some(o) = self.object(path, v, &fields, &["clientMessageId"]) else {
            return;
        };
        self.string(path, o, "id", 1, usize::MAX);
        self.integer(path, o, "seq", 1);
        self.room_id(path, o, "roomId");
        self.string(path, o, "userId", 1, usize::MAX);
        self.username(path, o, "username");
        if let Some(s) = self.string(path, o, "content", 1, self.max_content_chars)
            && s.trim().is_empty()
        {
            self.bad(&format!("{path}.content"), "only whitespace");
        }
        self.one_of(path, o, "type", &["text", "emote"]);
        self.timestamp(path, o, "timestamp");
        self.string(path, o, "clientMessageId", 1, CLIENT_MESSAGE_ID_CHARS_MAX);
    }

    fn user(&mut self, path: &str, v: &Value) {
        if let Some(o) = self.object(path, v, &["userId", "username"], &[]) {
            self.string(path, o, "userId", 1, usize::MAX);
            self.username(path, o, "username");
        }
    }

    fn messages(&mut self, path: &str, o: &Map<String, Value>) {
        for (i, m) in self.array(path, o, "messages").iter().enumerate() {
            self.message(&format!("{path}.messages[{i}]"), m);
        }
    }

    fn frame(&mut self, v: &Value) {
        let Some(top) = self.object("frame", v, &["type"], &["payload", "requestId"]) else {
            return;
        };
        self.string("frame", top, "requestId", 0, REQUEST_ID_CHARS_MAX);
        let Some(kind) = top.get("type").and_then(Value::as_str) else {
            self.bad("frame.type", "not a string");
            return;
        };
        let empty = Value::Object(Map::new());
        let payload = match top.get("payload") {
            Some(p) => p,
            // Only a type without fields may leave its payload out.
            None if kind == "PONG" => &empty,
            None => {
                self.bad("frame", "missing field payload");
                return;
            }
        };
        let p = "payload";
        match kind {
            "AUTH_SUCCESS" => {
                if let Some(o) = self.object(p, payload, &["userId", "username", "status"], &[]) {
                    self.string(p, o, "userId", 1, usize::MAX);
                    self.username(p, o, "username");
                    self.one_of(p, o, "status", &["online"]);
                }
            }
            "ROOM_CREATED" => {
                if let Some(o) = self.object(p, payload, &["room", "epoch"], &[]) {
                    if let Some(r) = o.get("room") {
                        self.room("payload.room", r);
                    }
                    self.string(p, o, "epoch", 1, usize::MAX);
                }
            }
            "ROOM_LIST" => {
                if let Some(o) = self.object(p, payload, &["rooms"], &[]) {
                    for (i, r) in self.array(p, o, "rooms").iter().enumerate() {
                        self.room(&format!("payload.rooms[{i}]"), r);
                    }
                }
            }
            "ROOM_JOINED" => {
                let fields = ["room", "epoch", "messages", "users"];
                if let Some(o) = self.object(p, payload, &fields, &["recovered"]) {
                    if let Some(r) = o.get("room") {
                        self.room("payload.room", r);
                    }
                    self.string(p, o, "epoch", 1, usize::MAX);
                    self.messages(p, o);
                    for (i, u) in self.array(p, o, "users").iter().enumerate() {
                        self.user(&format!("payload.users[{i}]"), u);
                    }
                    self.boolean(p, o, "recovered");
                }
            }
            "ROOM_LEFT" => {
                if let Some(o) = self.object(p, payload, &["roomId"], &[]) {
                    self.room_id(p, o, "roomId");
                }
            }
            "HISTORY" => {
                if let Some(o) = self.object(p, payload, &["roomId", "messages", "hasMore"], &[]) {
                    self.room_id(p, o, "roomId");
                    self.messages(p, o);
                    self.boolean(p, o, "hasMore");
                }
            }
            "PONG" => {
                self.object(p, payload, &[], &[]);
            }
            "NEW_MESSAGE" => self.message(p, payload),
            "USER_JOINED" => {
                if let Some(o) = self.object(p, payload, &["roomId", "user"], &[]) {
                    self.room_id(p, o, "roomId");
                    if let Some(u) = o.get("user") {
                        self.user("payload.user", u);
                    }
                }
            }
            "USER_LEFT" => {
                if let Some(o) = self.object(p, payload, &["roomId", "userId", "username"], &[]) {
                    self.room_id(p, o, "roomId");
                    self.string(p, o, "userId", 1, usize::MAX);
                    self.username(p, o, "username");
                }
            }
            "TYPING_UPDATE" => {
                let fields = ["roomId", "userId", "username", "isTyping"];
                if let Some(o) = self.object(p, payload, &fields, &[]) {
                    self.room_id(p, o, "roomId");
                    self.string(p, o, "userId", 1, usize::MAX);
                    self.username(p, o, "username");
                    self.boolean(p, o, "isTyping");
                }
            }
            "ERROR" => {
                if let Some(o) = self.object(p, payload, &["code", "message"], &["retryAfterMs"]) {
                    self.one_of(p, o, "code", &CODES);
                    self.string(p, o, "message", 1, usize::MAX);
                    self.integer(p, o, "retryAfterMs", 1);
                    let code = o.get("code").and_then(Value::as_str).unwrap_or("");
                    if o.contains_key("retryAfterMs")
                        && !matches!(code, "RATE_LIMIT_EXCEEDED" | "SERVER_ERROR")
                    {
                        self.bad(p, format!("retryAfterMs on {code}"));
                    }
                }
            }
            other => self.bad("frame.type", format!("unknown type {other:?}")),
        }
    }
}

/// What is wrong with the shape of `text`, a frame the server sent (empty
/// when nothing is).
pub fn problems(text: &str, max_content_chars: usize) -> Vec<String> {
    let mut shape = Shape {
        max_content_chars,
        problems: Vec::new(),
    };
    match serde_json::from_str::<Value>(text) {
        Ok(v) => shape.frame(&v),
        Err(e) => shape.bad("frame", format!("not JSON: {e}")),
    }
    shape.problems
}

#[cfg(test)]
mod tests {
    use super::problems;

    #[test]
    fn good_frames_pass_and_each_flaw_is_named() {
        let msg = r#"{"id":"m1","seq":1,"roomId":"general","userId":"u1","username":"ann","content":"hi","type":"text","timestamp":"2023-10-01T12:00:00.000Z"}"#;
        let room = r#"{"id":"general","name":"General","description":"","type":"public","memberCount":1,"createdAt":"2023-10-01T12:00:00.000Z","createdBy":"system"}"#;
        let good = [
            format!(r#"{{"type":"NEW_MESSAGE","payload":{msg},"requestId":"r"}}"#),
            format!(
                r#"{{"type":"ROOM_JOINED","payload":{{"room":{room},"epoch":"e","messages":[{msg}],"users":[{{"userId":"u1","username":"ann"}}]}}}}"#
            ),
            format!(r#"{{"type":"ROOM_LIST","payload":{{"rooms":[{room}]}}}}"#),
            r#"{"type":"HISTORY","payload":{"roomId":"general","messages":[],"hasMore":false}}"#
                .to_owned(),
            r#"{"type":"PONG","payload":{}}"#.to_owned(),
            r#"{"type":"ERROR","payload":{"code":"RATE_LIMIT_EXCEEDED","message":"slow","retryAfterMs":3}}"#.to_owned(),
        ];
        for f in &good {
            assert_eq!(problems(f, 4000), Vec::<String>::new(), "{f}");
        }
        let bad = [
            r#"{"type":"HISTORY","payload":{"roomId":"general","messages":[]}}"#,
            r#"{"type":"HISTORY","payload":{"roomId":"general","messages":[],"hasMore":0}}"#,
            r#"{"type":"ERROR","payload":{"code":"RATE_LIMIT_EXCEEDED","message":"slow","retryAfterMs":0}}"#,
            r#"{"type":"ERROR","payload":{"code":"NOT_A_MEMBER","message":"x","retryAfterMs":5}}"#,
            r#"{"type":"ERROR","payload":{"code":"NOPE","message":"x"}}"#,
            r#"{"type":"AUTH_SUCCESS","payload":{"userId":"u","username":"u","status":"away"}}"#,
            r#"{"type":"USER_LEFT","payload":{"roomId":"general","userId":"u","username":null}}"#,
            r#"{"type":"PONG","payload":{"extra":1}}"#,
        ];
        for f in bad {
            assert!(!problems(f, 4000).is_empty(), "{f}");
        }
    }
}
