//! A serde_json parser of client messages into the same
//! [`ClientMessage`] the production simd-json [`Parser`](chat_flow::protocol::Parser)
//! produces, with the same validation: the comparison the parse benchmark
//! makes. It covers the requests the benchmark feeds it (`SEND_MESSAGE`,
//! `AUTHENTICATE`, `JOIN_ROOM`, `TYPING_STATUS`, `PING`).
//!
//! Single pass: the envelope and a superset payload struct are deserialized
//! at once (strings the request keeps are owned, the `type` is borrowed),
//! then the fields the `type` needs are checked.

use std::borrow::Cow;

use chat_flow::protocol::{
    Authenticate, ClientMessage, ClientRequest, JoinRoom, MessageKind, ParseError, SendMessage,
    TypingStatus, valid_client_message_id, valid_message_content, valid_request_id,
    valid_room_reference,
};
use serde::Deserialize;

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    payload: Option<Payload>,
    #[serde(rename = "requestId")]
    request_id: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Payload {
    room_id: Option<String>,
    content: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    client_message_id: Option<String>,
    token: Option<String>,
    username: Option<String>,
    is_typing: Option<bool>,
    since_seq: Option<u64>,
    epoch: Option<String>,
}

fn invalid(request_id: Option<String>, reason: impl Into<String>) -> ParseError {
    ParseError {
        request_id,
        reason: reason.into(),
    }
}

/// Parses one client frame with serde_json.
pub fn parse(buf: &[u8], content_chars_max: usize) -> Result<ClientMessage, ParseError> {
    let env: Envelope<'_> =
        serde_json::from_slice(buf).map_err(|_| invalid(None, "malformed JSON"))?;
    let request_id = match env.request_id {
        Some(id) if !valid_request_id(&id) => {
            return Err(invalid(None, "requestId too long"));
        }
        id => id,
    };
    let Some(kind) = env.kind else {
        return Err(invalid(request_id, "type must be a string"));
    };
    let p = env.payload.unwrap_or_default();
    let room_id = |p: &mut Payload| match p.room_id.take() {
        Some(id) if valid_room_reference(&id) => Ok(id),
        _ => Err("roomId must be a non-empty string"),
    };
    let mut p = p;
    let request = match &*kind {
        "SEND_MESSAGE" => (|| {
            let room_id = room_id(&mut p)?;
            let content = p.content.take().ok_or("content is required")?;
            if !valid_message_content(&content, content_chars_max) {
                return Err("content must be 1-max characters and not only whitespace");
            }
            let kind = match p.kind.as_deref() {
                None | Some("text") => MessageKind::Text,
                Some("emote") => MessageKind::Emote,
                Some(_) => return Err("type must be \"text\" or \"emote\""),
            };
            let client_message_id = p.client_message_id.take();
            if client_message_id
                .as_deref()
                .is_some_and(|id| !valid_client_message_id(id))
            {
                return Err("clientMessageId must be 1-64 characters");
            }
            Ok(ClientRequest::SendMessage(SendMessage {
                room_id,
                content,
                kind,
                client_message_id,
            }))
        })(),
        "AUTHENTICATE" => (|| {
            let token = p.token.take().ok_or("token is required")?;
            let username = p.username.take();
            if username
                .as_deref()
                .is_some_and(|u| !chat_flow::protocol::valid_username(u))
            {
                return Err("username must be 1-32 characters without control characters");
            }
            Ok(ClientRequest::Authenticate(Authenticate {
                token,
                username,
            }))
        })(),
        "JOIN_ROOM" => room_id(&mut p).map(|room_id| {
            ClientRequest::JoinRoom(JoinRoom {
                room_id,
                since_seq: p.since_seq,
                epoch: p.epoch.take(),
            })
        }),
        "TYPING_STATUS" => (|| {
            let room_id = room_id(&mut p)?;
            let is_typing = p.is_typing.ok_or("isTyping is required")?;
            Ok(ClientRequest::TypingStatus(TypingStatus {
                room_id,
                is_typing,
            }))
        })(),
        "PING" => Ok(ClientRequest::Ping),
        _ => Err("unknown type"),
    };
    request
        .map(|request| ClientMessage {
            request_id: request_id.clone(),
            request,
        })
        .map_err(|reason| invalid(request_id, reason))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_flow::protocol::Parser;
    use chat_flow::protocol::parse::ParseLimits;

    #[test]
    fn agrees_with_the_production_parser() {
        let mut p = Parser::new(ParseLimits::default());
        for msg in [
            r#"{"type":"SEND_MESSAGE","payload":{"roomId":"general","content":"hi there","type":"emote","clientMessageId":"c1"},"requestId":"m1"}"#,
            r#"{"type":"SEND_MESSAGE","payload":{"roomId":"general","content":"hi","type":null},"requestId":null,"x":1}"#,
            r#"{"type":"JOIN_ROOM","payload":{"roomId":"r","sinceSeq":3,"epoch":"e"}}"#,
            r#"{"type":"TYPING_STATUS","payload":{"roomId":"r","isTyping":true},"requestId":"t"}"#,
            r#"{"type":"AUTHENTICATE","payload":{"token":"a.b.c","username":"alice"},"requestId":"a"}"#,
            r#"{"type":"PING"}"#,
        ] {
            let mut buf = msg.as_bytes().to_vec();
            let simd = p.parse(&mut buf).unwrap();
            assert_eq!(parse(msg.as_bytes(), 4000).unwrap(), simd, "{msg}");
        }
        for bad in [
            r#"{"type":"SEND_MESSAGE","payload":{"roomId":"general","content":"   "}}"#,
            r#"{"type":"SEND_MESSAGE","payload":{"roomId":"general"},"requestId":"r"}"#,
            r#"{"type":"NOPE"}"#,
            "{",
        ] {
            let mut buf = bad.as_bytes().to_vec();
            let simd = p.parse(&mut buf).unwrap_err();
            let serde = parse(bad.as_bytes(), 4000).unwrap_err();
            assert_eq!(serde.request_id, simd.request_id, "{bad}");
        }
    }
}
