//! The wire contract (`PROTOCOL.md`) as types.
//!
//! * [`parse`] turns one received text frame into a validated [`ClientMessage`]
//!   with simd-json, reading straight from the frame's own mutable buffer and
//!   reusing its scratch buffers between messages.
//! * [`server`] holds the server → client messages: typed (serde) so that the
//!   Rust client can decode them, and encoded once into shared [`bytes::Bytes`]
//!   so that a broadcast is serialized once for every recipient.
//! * `request` holds the client → server requests ([`ClientRequest`], one
//!   struct per request type), `codes` the `ERROR` and close codes, and
//!   `rules` every validation rule of the contract, once; all are re-exported
//!   here. [`client_encode`] writes a request back as JSON.
//!
//! Validation that depends only on the contract (lengths, character classes,
//! ranges) happens here, before any state is touched, so the core only ever
//! sees well-formed requests ("parse, don't validate").

pub mod client_encode;
mod codes;
pub mod parse;
mod request;
mod rules;
pub mod server;
pub mod time;

pub use codes::{CloseCode, ErrorCode};
pub use parse::{ParseError, Parser};
pub use request::{
    Authenticate, ClientMessage, ClientRequest, CreateRoom, GetHistory, JoinRoom, LeaveRoom,
    MessageKind, RoomKind, SendMessage, TypingStatus,
};
pub use rules::{
    CLIENT_MESSAGE_ID_CHARS_MAX, HISTORY_PAGE_DEFAULT, HISTORY_PAGE_MAX, REQUEST_ID_CHARS_MAX,
    ROOM_DESCRIPTION_CHARS_MAX, ROOM_ID_CHARS_MAX, ROOM_NAME_CHARS_MAX, USERNAME_MAX_CHARS,
    char_len, valid_client_message_id, valid_display_text, valid_message_content, valid_request_id,
    valid_room_description, valid_room_id, valid_room_reference, valid_username,
};
