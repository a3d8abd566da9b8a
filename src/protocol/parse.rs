//! Client frame → [`ClientMessage`], with simd-json.
//!
//! The frame's own buffer is parsed in place into a simd-json tape; the
//! scratch buffers and the tape's storage are kept in the [`Parser`] and reused
//! for the next message, so that a steady stream of messages parses without
//! allocating anything but the strings the request keeps.
//!
//! Every rule of the envelope is checked here: a top-level object, a known
//! `type`, a `requestId` that is a string of at most 128 characters, a
//! `payload` that is an object when present, required fields present with the
//! right types, `null` treated as absent, unknown fields ignored, lengths in
//! characters. Anything else is a [`ParseError`], answered `INVALID_MESSAGE`.

use simd_json::prelude::*;
use simd_json::tape::{Object, Tape, Value};

use super::request::{
    Authenticate, ClientMessage, ClientRequest, CreateRoom, GetHistory, JoinRoom, LeaveRoom,
    MessageKind, RoomKind, SendMessage, TypingStatus,
};
use super::rules::{
    CLIENT_MESSAGE_ID_CHARS_MAX, HISTORY_PAGE_DEFAULT, HISTORY_PAGE_MAX, REQUEST_ID_CHARS_MAX,
    ROOM_DESCRIPTION_CHARS_MAX, ROOM_NAME_CHARS_MAX, valid_client_message_id, valid_display_text,
    valid_message_content, valid_request_id, valid_room_description, valid_room_id,
    valid_room_reference, valid_username,
};

/// Why a frame is not a valid request. Answered with `ERROR INVALID_MESSAGE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The `requestId`, when the frame was an object carrying a valid one.
    pub request_id: Option<String>,
    /// A short, safe explanation for the client.
    pub reason: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for ParseError {}

/// Limits of the contract that depend on configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseLimits {
    /// `MAX_CONTENT_LENGTH`: most characters of a message's `content`.
    pub content_chars_max: usize,
}

impl Default for ParseLimits {
    fn default() -> Self {
        ParseLimits {
            content_chars_max: 4000,
        }
    }
}

/// A reusable parser: holds simd-json's scratch buffers between messages.
pub struct Parser {
    limits: ParseLimits,
    buffers: simd_json::Buffers,
    /// The tape's storage, empty between calls (its lifetime is reset each time).
    tape: Option<Tape<'static>>,
}

impl std::fmt::Debug for Parser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parser")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Parser {
    /// A parser enforcing `limits`.
    pub fn new(limits: ParseLimits) -> Parser {
        Parser {
            limits,
            buffers: simd_json::Buffers::new(512),
            tape: Some(Tape::null().reset()),
        }
    }

    /// The limits this parser enforces.
    pub fn limits(&self) -> ParseLimits {
        self.limits
    }

    /// Parses one text frame. `buf` is used as simd-json's working space and
    /// is left in an unspecified state.
    pub fn parse(&mut self, buf: &mut [u8]) -> Result<ClientMessage, ParseError> {
        let mut tape = self.tape.take().unwrap_or_else(|| Tape::null().reset());
        let result = match simd_json::fill_tape(buf, &mut self.buffers, &mut tape) {
            Ok(()) => interpret(tape.as_value(), self.limits),
            Err(_) => Err(ParseError {
                request_id: None,
                reason: "malformed JSON".to_owned(),
            }),
        };
        self.tape = Some(tape.reset());
        result
    }
}

/// Parses one message with a throwaway parser (tests, tools).
pub fn parse_once(buf: &mut [u8], limits: ParseLimits) -> Result<ClientMessage, ParseError> {
    Parser::new(limits).parse(buf)
}

fn interpret(root: Value<'_, '_>, limits: ParseLimits) -> Result<ClientMessage, ParseError> {
    let Some(envelope) = root.as_object() else {
        return Err(ParseError {
            request_id: None,
            reason: "a message must be a JSON object".to_owned(),
        });
    };
    let request_id = match present(envelope.get("requestId")) {
        None => None,
        Some(v) => match v.as_str() {
            Some(s) if valid_request_id(s) => Some(s.to_owned()),
            _ => {
                return Err(ParseError {
                    request_id: None,
                    reason: format!(
                        "requestId must be a string of at most {REQUEST_ID_CHARS_MAX} characters"
                    ),
                });
            }
        },
    };
    let fail = |reason: String| ParseError {
        request_id: request_id.clone(),
        reason,
    };
    let Some(type_name) = present(envelope.get("type")).and_then(|v| v.into_string()) else {
        return Err(fail("type must be a string".to_owned()));
    };
    let payload = match present(envelope.get("payload")) {
        None => None,
        Some(v) => match v.as_object() {
            Some(o) => Some(o),
            None => return Err(fail("payload must be an object".to_owned())),
        },
    };
    let fields = Fields { payload };
    let request = request_of(type_name, &fields, limits).map_err(fail)?;
    Ok(ClientMessage {
        request_id,
        request,
    })
}

fn request_of(
    type_name: &str,
    f: &Fields<'_, '_>,
    limits: ParseLimits,
) -> Result<ClientRequest, String> {
    Ok(match type_name {
        "AUTHENTICATE" => {
            // A token over the verifier's cap is a bad token (UNAUTHORIZED,
            // a failed attempt), not a malformed message: the length is the
            // verifier's to judge.
            let token = f.required_str("token")?;
            let username = f.optional_str("username")?;
            if username.is_some_and(|name| !valid_username(name)) {
                return Err(
                    "username must be 1-32 characters without control characters".to_owned(),
                );
            }
            ClientRequest::Authenticate(Authenticate {
                token: token.to_owned(),
                username: username.map(str::to_owned),
            })
        }
        "CREATE_ROOM" => {
            let name = f.required_str("name")?;
            if !valid_display_text(name, ROOM_NAME_CHARS_MAX) {
                return Err(format!(
                    "name must be 1-{ROOM_NAME_CHARS_MAX} characters, not only whitespace, without control characters"
                ));
            }
            let description = f.optional_str("description")?.unwrap_or("");
            if !valid_room_description(description) {
                return Err(format!(
                    "description must be at most {ROOM_DESCRIPTION_CHARS_MAX} characters"
                ));
            }
            let kind = match f.optional_str("type")? {
                None | Some("public") => RoomKind::Public,
                Some("private") => RoomKind::Private,
                Some(_) => return Err("type must be \"public\" or \"private\"".to_owned()),
            };
            let id = f.optional_str("id")?;
            if id.is_some_and(|id| !valid_room_id(id)) {
                return Err("id must be 1-64 characters of [A-Za-z0-9_-]".to_owned());
            }
            ClientRequest::CreateRoom(CreateRoom {
                name: name.to_owned(),
                description: description.to_owned(),
                kind,
                id: id.map(str::to_owned),
            })
        }
        "LIST_ROOMS" => ClientRequest::ListRooms,
        "JOIN_ROOM" => {
            let room_id = f.room_id()?;
            let since_seq = f.optional_seq("sinceSeq")?;
            let epoch = f.optional_str("epoch")?.map(str::to_owned);
            ClientRequest::JoinRoom(JoinRoom {
                room_id,
                since_seq,
                epoch,
            })
        }
        "LEAVE_ROOM" => ClientRequest::LeaveRoom(LeaveRoom {
            room_id: f.room_id()?,
        }),
        "GET_HISTORY" => {
            let room_id = f.room_id()?;
            let before_seq = f.optional_seq("beforeSeq")?;
            let limit = match f.optional_u64("limit")? {
                None => HISTORY_PAGE_DEFAULT,
                Some(n) if (1..=u64::from(HISTORY_PAGE_MAX)).contains(&n) => n as u32,
                Some(_) => return Err(format!("limit must be 1-{HISTORY_PAGE_MAX}")),
            };
            ClientRequest::GetHistory(GetHistory {
                room_id,
                before_seq,
                limit,
            })
        }
        "SEND_MESSAGE" => {
            let room_id = f.room_id()?;
            let content = f.required_str("content")?;
            let max = limits.content_chars_max;
            if !valid_message_content(content, max) {
                return Err(format!(
                    "content must be 1-{max} characters and not only whitespace"
                ));
            }
            let kind = match f.optional_str("type")? {
                None | Some("text") => MessageKind::Text,
                Some("emote") => MessageKind::Emote,
                Some(_) => return Err("type must be \"text\" or \"emote\"".to_owned()),
            };
            let client_message_id = f.optional_str("clientMessageId")?;
            if client_message_id.is_some_and(|id| !valid_client_message_id(id)) {
                return Err(format!(
                    "clientMessageId must be 1-{CLIENT_MESSAGE_ID_CHARS_MAX} characters"
                ));
            }
            ClientRequest::SendMessage(SendMessage {
                room_id,
                content: content.to_owned(),
                kind,
                client_message_id: client_message_id.map(str::to_owned),
            })
        }
        "TYPING_STATUS" => {
            let room_id = f.room_id()?;
            let is_typing = match f.get("isTyping") {
                Some(v) => v
                    .as_bool()
                    .ok_or_else(|| "isTyping must be a boolean".to_owned())?,
                None => return Err("isTyping is required".to_owned()),
            };
            ClientRequest::TypingStatus(TypingStatus { room_id, is_typing })
        }
        "PING" => ClientRequest::Ping,
        other => {
            let shown: String = other.chars().take(32).collect();
            return Err(format!("unknown type {shown:?}"));
        }
    })
}

/// `null` counts as absent.
fn present<'t, 'i>(v: Option<Value<'t, 'i>>) -> Option<Value<'t, 'i>> {
    v.filter(|v| !v.is_null())
}

/// Typed access to the payload's fields.
struct Fields<'t, 'i> {
    payload: Option<Object<'t, 'i>>,
}

impl<'t, 'i> Fields<'t, 'i> {
    fn get(&self, key: &str) -> Option<Value<'t, 'i>> {
        present(self.payload.as_ref()?.get(key))
    }

    fn required_str(&self, key: &str) -> Result<&'t str, String> {
        match self.get(key) {
            None => Err(format!("{key} is required")),
            Some(v) => v.into_str_ref(key),
        }
    }

    fn optional_str(&self, key: &str) -> Result<Option<&'t str>, String> {
        self.get(key).map(|v| v.into_str_ref(key)).transpose()
    }

    fn room_id(&self) -> Result<String, String> {
        let id = self.required_str("roomId")?;
        if !valid_room_reference(id) {
            return Err("roomId must be a non-empty string".to_owned());
        }
        Ok(id.to_owned())
    }

    fn optional_u64(&self, key: &str) -> Result<Option<u64>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match (v.as_u64(), v.as_i64()) {
                (Some(n), _) => Ok(Some(n)),
                (None, Some(_)) => Err(format!("{key} must not be negative")),
                _ => Err(format!("{key} must be a non-negative integer")),
            },
        }
    }

    fn optional_seq(&self, key: &str) -> Result<Option<u64>, String> {
        self.optional_u64(key)
    }
}

trait StrRef<'t> {
    fn into_str_ref(self, key: &str) -> Result<&'t str, String>;
}

impl<'t, 'i> StrRef<'t> for Value<'t, 'i> {
    fn into_str_ref(self, key: &str) -> Result<&'t str, String> {
        self.into_string()
            .ok_or_else(|| format!("{key} must be a string"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<ClientMessage, ParseError> {
        let mut buf = s.as_bytes().to_vec();
        Parser::new(ParseLimits::default()).parse(&mut buf)
    }

    #[test]
    fn send_message_with_all_fields() {
        let m = parse(r#"{"type":"SEND_MESSAGE","payload":{"roomId":"general","content":"hi","type":"emote","clientMessageId":"c1"},"requestId":"m1"}"#).unwrap();
        assert_eq!(m.request_id.as_deref(), Some("m1"));
        assert_eq!(
            m.request,
            ClientRequest::SendMessage(SendMessage {
                room_id: "general".into(),
                content: "hi".into(),
                kind: MessageKind::Emote,
                client_message_id: Some("c1".into()),
            })
        );
    }

    #[test]
    fn null_is_absent_and_unknown_fields_ignored() {
        let m = parse(r#"{"type":"JOIN_ROOM","payload":{"roomId":"r","sinceSeq":null,"epoch":null,"x":[1,2]},"requestId":null,"extra":1}"#).unwrap();
        assert_eq!(m.request_id, None);
        assert_eq!(
            m.request,
            ClientRequest::JoinRoom(JoinRoom {
                room_id: "r".into(),
                since_seq: None,
                epoch: None
            })
        );
    }

    #[test]
    fn payload_may_be_omitted_for_requests_without_fields() {
        assert_eq!(
            parse(r#"{"type":"PING"}"#).unwrap().request,
            ClientRequest::Ping
        );
        assert_eq!(
            parse(r#"{"type":"LIST_ROOMS","payload":{}}"#)
                .unwrap()
                .request,
            ClientRequest::ListRooms
        );
    }

    #[test]
    fn errors_carry_the_request_id_when_readable() {
        let e = parse(r#"{"type":"NOPE","requestId":"r1"}"#).unwrap_err();
        assert_eq!(e.request_id.as_deref(), Some("r1"));
        let e = parse(r#"{"type":"SEND_MESSAGE","payload":{"roomId":"r"},"requestId":"r2"}"#)
            .unwrap_err();
        assert_eq!(e.request_id.as_deref(), Some("r2"));
        assert!(e.reason.contains("content"));
        let e = parse(r#"{"type":"PING","requestId":5}"#).unwrap_err();
        assert_eq!(e.request_id, None);
        let long = "x".repeat(129);
        let e = parse(&format!(r#"{{"type":"PING","requestId":"{long}"}}"#)).unwrap_err();
        assert_eq!(e.request_id, None);
        let ok = "é".repeat(128);
        assert!(parse(&format!(r#"{{"type":"PING","requestId":"{ok}"}}"#)).is_ok());
    }

    #[test]
    fn rejects_non_objects_and_bad_json() {
        for s in [
            "[1,2]",
            "\"PING\"",
            "12",
            "{",
            "",
            r#"{"type":"PING"} x"#,
            r#"{"type":"PING","payload":1}"#,
            r#"{"type":"PING","payload":[]}"#,
            r#"{"type":7}"#,
            r#"{"payload":{}}"#,
        ] {
            assert!(parse(s).is_err(), "{s} should be rejected");
        }
    }

    #[test]
    fn huge_numbers_are_invalid_not_fatal() {
        let e = parse(
            r#"{"type":"GET_HISTORY","payload":{"roomId":"r","beforeSeq":1e999999},"requestId":"h"}"#,
        );
        assert!(e.is_err());
        let e = parse(
            r#"{"type":"GET_HISTORY","payload":{"roomId":"r","beforeSeq":99999999999999999999999},"requestId":"h"}"#,
        );
        assert!(e.is_err());
    }

    #[test]
    fn negative_and_fractional_seqs_are_invalid() {
        for v in ["-1", "1.5", "\"3\"", "true"] {
            let s = format!(r#"{{"type":"JOIN_ROOM","payload":{{"roomId":"r","sinceSeq":{v}}}}}"#);
            assert!(parse(&s).is_err(), "{s}");
        }
        let s = r#"{"type":"GET_HISTORY","payload":{"roomId":"r","beforeSeq":-3}}"#;
        assert!(parse(s).is_err());
    }

    #[test]
    fn history_limit_bounds() {
        for (v, ok) in [("0", false), ("1", true), ("100", true), ("101", false)] {
            let s = format!(r#"{{"type":"GET_HISTORY","payload":{{"roomId":"r","limit":{v}}}}}"#);
            assert_eq!(parse(&s).is_ok(), ok, "{s}");
        }
        let m = parse(r#"{"type":"GET_HISTORY","payload":{"roomId":"r"}}"#).unwrap();
        assert!(matches!(
            m.request,
            ClientRequest::GetHistory(GetHistory { limit: 50, .. })
        ));
    }

    #[test]
    fn content_counts_characters_not_bytes() {
        let limits = ParseLimits {
            content_chars_max: 3,
        };
        let mut ok = r#"{"type":"SEND_MESSAGE","payload":{"roomId":"r","content":"ééé"}}"#
            .as_bytes()
            .to_vec();
        assert!(parse_once(&mut ok, limits).is_ok());
        let mut long = r#"{"type":"SEND_MESSAGE","payload":{"roomId":"r","content":"éééé"}}"#
            .as_bytes()
            .to_vec();
        assert!(parse_once(&mut long, limits).is_err());
        assert!(
            parse(r#"{"type":"SEND_MESSAGE","payload":{"roomId":"r","content":"  \n "}}"#).is_err()
        );
        assert!(parse(r#"{"type":"SEND_MESSAGE","payload":{"roomId":"r","content":""}}"#).is_err());
    }

    #[test]
    fn create_room_rules() {
        assert!(parse(r#"{"type":"CREATE_ROOM","payload":{"name":"   "}}"#).is_err());
        assert!(parse(r#"{"type":"CREATE_ROOM","payload":{"name":"a\u0007b"}}"#).is_err());
        assert!(parse(r#"{"type":"CREATE_ROOM","payload":{"name":"ok","id":"bad id"}}"#).is_err());
        assert!(
            parse(r#"{"type":"CREATE_ROOM","payload":{"name":"ok","type":"secret"}}"#).is_err()
        );
        let m = parse(
            r#"{"type":"CREATE_ROOM","payload":{"name":"Ok","id":"a-b_9","type":"private"}}"#,
        )
        .unwrap();
        assert_eq!(
            m.request,
            ClientRequest::CreateRoom(CreateRoom {
                name: "Ok".into(),
                description: String::new(),
                kind: RoomKind::Private,
                id: Some("a-b_9".into())
            })
        );
    }

    #[test]
    fn reused_parser_gives_same_results() {
        let mut p = Parser::new(ParseLimits::default());
        for _ in 0..3 {
            let mut a = br#"{"type":"PING","requestId":"1"}"#.to_vec();
            assert_eq!(p.parse(&mut a).unwrap().request, ClientRequest::Ping);
            let mut b = b"nonsense".to_vec();
            assert!(p.parse(&mut b).is_err());
        }
    }
}
