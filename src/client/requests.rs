//! Every request the client writes, built as a typed [`ClientRequest`] and
//! encoded by [`client_encode`], so that the wire form of a request is
//! written in one place for the whole crate.
//!
//! The `requestId`s are how the client matches an error to what failed: the
//! prefixes are defined here and read back by the session state.

use crate::protocol::client_encode;
use crate::protocol::{
    Authenticate, ClientMessage, ClientRequest, GetHistory, HISTORY_PAGE_DEFAULT, JoinRoom,
    LeaveRoom, MessageKind, SendMessage, TypingStatus,
};

/// `requestId` prefix of a `JOIN_ROOM`, followed by the room.
pub(super) const JOIN_ID_PREFIX: &str = "j:";
/// `requestId` prefix of a `SEND_MESSAGE`, followed by its `clientMessageId`.
pub(super) const SEND_ID_PREFIX: &str = "s:";

/// `AUTHENTICATE` with `token` (and the name to use if the token has none).
pub(super) fn authenticate(token: String, username: Option<&str>) -> String {
    encode(
        Some("auth".to_owned()),
        ClientRequest::Authenticate(Authenticate {
            token,
            username: username.map(str::to_owned),
        }),
    )
}

/// `JOIN_ROOM`, resuming after `since_seq` of `epoch` when the client has one.
pub(super) fn join(room: &str, since_seq: Option<u64>, epoch: Option<&str>) -> String {
    encode(
        Some(format!("{JOIN_ID_PREFIX}{room}")),
        ClientRequest::JoinRoom(JoinRoom {
            room_id: room.to_owned(),
            since_seq,
            epoch: epoch.map(str::to_owned),
        }),
    )
}

/// `LEAVE_ROOM`.
pub(super) fn leave(room: &str) -> String {
    encode(
        Some(format!("l:{room}")),
        ClientRequest::LeaveRoom(LeaveRoom {
            room_id: room.to_owned(),
        }),
    )
}

/// `SEND_MESSAGE`, keyed by its `clientMessageId` so that a resend is safe.
pub(super) fn send(
    room: &str,
    content: &str,
    kind: MessageKind,
    client_message_id: &str,
) -> String {
    encode(
        Some(format!("{SEND_ID_PREFIX}{client_message_id}")),
        ClientRequest::SendMessage(SendMessage {
            room_id: room.to_owned(),
            content: content.to_owned(),
            kind,
            client_message_id: Some(client_message_id.to_owned()),
        }),
    )
}

/// `TYPING_STATUS` (no reply is awaited, so no `requestId`).
pub(super) fn typing(room: &str, is_typing: bool) -> String {
    encode(
        None,
        ClientRequest::TypingStatus(TypingStatus {
            room_id: room.to_owned(),
            is_typing,
        }),
    )
}

/// `GET_HISTORY`; without a `limit` the server's default page applies.
pub(super) fn history(room: &str, before_seq: Option<u64>, limit: Option<u32>) -> String {
    encode(
        Some(format!("h:{room}")),
        ClientRequest::GetHistory(GetHistory {
            room_id: room.to_owned(),
            before_seq,
            limit: limit.unwrap_or(HISTORY_PAGE_DEFAULT),
        }),
    )
}

/// The shortest form of the request: absent fields and defaults left out.
fn encode(request_id: Option<String>, request: ClientRequest) -> String {
    client_encode::encode(
        &ClientMessage {
            request_id,
            request,
        },
        false,
    )
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::parse::{ParseLimits, parse_once};

    fn parsed(text: String) -> ClientMessage {
        parse_once(&mut text.into_bytes(), ParseLimits::default()).expect("parses")
    }

    /// What the client writes is what the server reads.
    #[test]
    fn requests_parse_back() {
        let m = parsed(join("r", Some(3), Some("e")));
        assert_eq!(m.request_id.as_deref(), Some("j:r"));
        assert_eq!(
            m.request,
            ClientRequest::JoinRoom(JoinRoom {
                room_id: "r".into(),
                since_seq: Some(3),
                epoch: Some("e".into()),
            })
        );
        let m = parsed(send("r", "hi", MessageKind::Emote, "c-1"));
        assert_eq!(m.request_id.as_deref(), Some("s:c-1"));
        assert_eq!(
            m.request,
            ClientRequest::SendMessage(SendMessage {
                room_id: "r".into(),
                content: "hi".into(),
                kind: MessageKind::Emote,
                client_message_id: Some("c-1".into()),
            })
        );
        let m = parsed(history("r", None, None));
        assert_eq!(
            m.request,
            ClientRequest::GetHistory(GetHistory {
                room_id: "r".into(),
                before_seq: None,
                limit: HISTORY_PAGE_DEFAULT,
            })
        );
        assert_eq!(parsed(typing("r", true)).request_id, None);
        assert_eq!(parsed(leave("r")).request_id.as_deref(), Some("l:r"));
        let m = parsed(authenticate("t".into(), Some("ann")));
        assert_eq!(
            m.request,
            ClientRequest::Authenticate(Authenticate {
                token: "t".into(),
                username: Some("ann".into()),
            })
        );
    }
}
