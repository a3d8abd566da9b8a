//! Whole messages from a client's frames (RFC 6455 5.4–5.5): reassembly of
//! fragments, the rules frames must follow between each other, and what a
//! control frame asks for.
//!
//! [`MessageReader::on_frame`] takes one frame and says what it means; it
//! does no IO, so every rule here is unit tested without a socket. The
//! connection's read loop reads the frames (with [`MessageReader::read_frame`],
//! which bounds each frame by what is left of its message) and acts on what
//! this says.

use fastwebsockets::OpCode;
use tokio::io::AsyncRead;

use super::frame_reader::{FrameReader, InFrame};
use crate::frame::FrameError;
use crate::protocol::CloseCode;

/// A fragmented message may span at most one frame per this many bytes of
/// `MAX_MESSAGE_BYTES` (1024 frames at the default 64 KiB), so that a flood
/// of tiny or empty continuation frames is bounded like the bytes are.
pub const FRAGMENT_BYTES_MIN: usize = 64;

/// The fewest fragments a message may always span, however small the limit.
const FRAGMENTS_MIN: usize = 16;

/// What a complete message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataKind {
    /// A text message (valid UTF-8).
    Text,
    /// A binary message.
    Binary,
}

/// What one frame amounts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// Nothing to act on: a fragment of a message still incomplete, a pong,
    /// or, once the server is closing, anything but a close.
    Nothing,
    /// A complete message.
    Message(DataKind, Vec<u8>),
    /// A ping, to be answered with a pong carrying this payload.
    Ping(Vec<u8>),
    /// The peer closed with this code (1005 when its close frame had none).
    PeerClosed(u16),
    /// The peer answered the server's close.
    CloseAnswered,
}

/// Why the connection must be closed: the code and the close frame's reason.
pub type Refusal = (CloseCode, &'static str);

/// A message in pieces.
#[derive(Debug)]
struct Partial {
    kind: DataKind,
    payload: Vec<u8>,
    fragments: usize,
}

/// Reads whole messages off one connection.
#[derive(Debug, Default)]
pub struct MessageReader {
    frames: FrameReader,
    /// The message being reassembled, if a first fragment has arrived.
    partial: Option<Partial>,
}

impl MessageReader {
    /// Reads the next frame. A data frame may only be as long as what is
    /// left of its message under `max_message_bytes`: a longer one is
    /// refused (1009) before it is read. Not cancel-safe (see
    /// [`FrameReader::read_frame`]).
    pub async fn read_frame<R>(
        &mut self,
        stream: &mut R,
        max_message_bytes: usize,
    ) -> Result<InFrame, FrameError>
    where
        R: AsyncRead + Unpin,
    {
        let frame_max = match &self.partial {
            Some(p) => max_message_bytes.saturating_sub(p.payload.len()),
            None => max_message_bytes,
        };
        self.frames.read_frame(stream, frame_max).await
    }

    /// What `frame` means, given the message limit in force and whether the
    /// server is closing the connection (then only the peer's close
    /// matters).
    pub fn on_frame(
        &mut self,
        frame: InFrame,
        max_message_bytes: usize,
        closing: bool,
    ) -> Result<Received, Refusal> {
        // RFC 6455 5.1: a server must close the connection on a frame from
        // the client that is not masked.
        if !frame.masked {
            return Err((CloseCode::ProtocolError, "unmasked frame"));
        }
        if closing {
            return Ok(if frame.opcode == OpCode::Close {
                Received::CloseAnswered
            } else {
                Received::Nothing
            });
        }
        let kind = |opcode| {
            if opcode == OpCode::Binary {
                DataKind::Binary
            } else {
                DataKind::Text
            }
        };
        match frame.opcode {
            OpCode::Text | OpCode::Binary => {
                if self.partial.is_some() {
                    return Err((CloseCode::ProtocolError, "expected a continuation frame"));
                }
                if frame.fin {
                    complete(kind(frame.opcode), frame.payload)
                } else {
                    self.partial = Some(Partial {
                        kind: kind(frame.opcode),
                        payload: frame.payload,
                        fragments: 1,
                    });
                    Ok(Received::Nothing)
                }
            }
            OpCode::Continuation => {
                let Some(partial) = self.partial.as_mut() else {
                    return Err((CloseCode::ProtocolError, "unexpected continuation frame"));
                };
                partial.fragments += 1;
                if partial.fragments > (max_message_bytes / FRAGMENT_BYTES_MIN).max(FRAGMENTS_MIN) {
                    return Err((CloseCode::TooBig, "too many fragments"));
                }
                partial.payload.extend_from_slice(&frame.payload);
                match self.partial.take_if(|_| frame.fin) {
                    Some(done) => complete(done.kind, done.payload),
                    None => Ok(Received::Nothing),
                }
            }
            OpCode::Close => peer_close(&frame.payload),
            OpCode::Ping => Ok(Received::Ping(frame.payload)),
            OpCode::Pong => Ok(Received::Nothing),
        }
    }
}

/// A complete message; a text message must be valid UTF-8 as a whole (RFC
/// 6455 8.1): fragments are checked once reassembled.
fn complete(kind: DataKind, payload: Vec<u8>) -> Result<Received, Refusal> {
    if kind == DataKind::Text && std::str::from_utf8(&payload).is_err() {
        return Err((CloseCode::InvalidPayload, "invalid UTF-8"));
    }
    Ok(Received::Message(kind, payload))
}

/// Validates a close frame from the peer (auto-close is off, so this is ours
/// to do).
fn peer_close(payload: &[u8]) -> Result<Received, Refusal> {
    match payload.len() {
        0 => Ok(Received::PeerClosed(1005)),
        1 => Err((CloseCode::ProtocolError, "invalid close frame")),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !fastwebsockets::CloseCode::from(code).is_allowed() {
                return Err((CloseCode::ProtocolError, "invalid close code"));
            }
            if std::str::from_utf8(&payload[2..]).is_err() {
                return Err((CloseCode::InvalidPayload, "invalid close reason"));
            }
            Ok(Received::PeerClosed(code))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 64 * 1024;

    fn frame(fin: bool, opcode: OpCode, payload: &[u8]) -> InFrame {
        InFrame {
            fin,
            opcode,
            masked: true,
            payload: payload.to_vec(),
        }
    }

    fn on(r: &mut MessageReader, f: InFrame) -> Result<Received, Refusal> {
        r.on_frame(f, LIMIT, false)
    }

    #[test]
    fn a_whole_frame_is_a_message() {
        let mut r = MessageReader::default();
        assert_eq!(
            on(&mut r, frame(true, OpCode::Text, b"hi")),
            Ok(Received::Message(DataKind::Text, b"hi".to_vec()))
        );
        assert_eq!(
            on(&mut r, frame(true, OpCode::Binary, &[0xff])),
            Ok(Received::Message(DataKind::Binary, vec![0xff]))
        );
    }

    #[test]
    fn fragments_are_reassembled_with_control_frames_between_them() {
        let mut r = MessageReader::default();
        assert_eq!(
            on(&mut r, frame(false, OpCode::Text, b"he")),
            Ok(Received::Nothing)
        );
        assert_eq!(
            on(&mut r, frame(true, OpCode::Ping, b"p")),
            Ok(Received::Ping(b"p".to_vec()))
        );
        assert_eq!(
            on(&mut r, frame(true, OpCode::Pong, b"")),
            Ok(Received::Nothing)
        );
        assert_eq!(
            on(&mut r, frame(false, OpCode::Continuation, b"ll")),
            Ok(Received::Nothing)
        );
        assert_eq!(
            on(&mut r, frame(true, OpCode::Continuation, b"o")),
            Ok(Received::Message(DataKind::Text, b"hello".to_vec()))
        );
        // The next message starts afresh.
        assert_eq!(
            on(&mut r, frame(true, OpCode::Text, b"x")),
            Ok(Received::Message(DataKind::Text, b"x".to_vec()))
        );
    }

    #[test]
    fn frames_out_of_sequence_are_protocol_errors() {
        let mut r = MessageReader::default();
        assert_eq!(
            on(&mut r, frame(true, OpCode::Continuation, b"x")),
            Err((CloseCode::ProtocolError, "unexpected continuation frame"))
        );
        let mut r = MessageReader::default();
        on(&mut r, frame(false, OpCode::Binary, b"a")).expect("a first fragment");
        assert_eq!(
            on(&mut r, frame(true, OpCode::Text, b"b")),
            Err((CloseCode::ProtocolError, "expected a continuation frame"))
        );
        let mut r = MessageReader::default();
        on(&mut r, frame(false, OpCode::Text, b"a")).expect("a first fragment");
        assert_eq!(
            on(&mut r, frame(false, OpCode::Text, b"b")),
            Err((CloseCode::ProtocolError, "expected a continuation frame"))
        );
        let mut r = MessageReader::default();
        let mut unmasked = frame(true, OpCode::Text, b"x");
        unmasked.masked = false;
        assert_eq!(
            on(&mut r, unmasked),
            Err((CloseCode::ProtocolError, "unmasked frame"))
        );
    }

    #[test]
    fn fragments_are_bounded_by_count() {
        let max = (LIMIT / FRAGMENT_BYTES_MIN).max(FRAGMENTS_MIN);
        let mut r = MessageReader::default();
        on(&mut r, frame(false, OpCode::Text, b"")).expect("first");
        for _ in 1..max {
            assert_eq!(
                on(&mut r, frame(false, OpCode::Continuation, b"")),
                Ok(Received::Nothing)
            );
        }
        assert_eq!(
            on(&mut r, frame(false, OpCode::Continuation, b"")),
            Err((CloseCode::TooBig, "too many fragments"))
        );
        // However small the limit, a few fragments are allowed.
        let mut r = MessageReader::default();
        r.on_frame(frame(false, OpCode::Text, b""), 10, false)
            .expect("first");
        for _ in 1..FRAGMENTS_MIN {
            r.on_frame(frame(false, OpCode::Continuation, b""), 10, false)
                .expect("within the floor");
        }
    }

    #[test]
    fn text_is_checked_as_utf8_once_whole() {
        let euro = "€".as_bytes();
        let mut r = MessageReader::default();
        // Split inside a character: fine until the message is whole.
        on(&mut r, frame(false, OpCode::Text, &euro[..1])).expect("first");
        assert_eq!(
            on(&mut r, frame(true, OpCode::Continuation, &euro[1..])),
            Ok(Received::Message(DataKind::Text, euro.to_vec()))
        );
        assert_eq!(
            on(&mut r, frame(true, OpCode::Text, &[0xc3])),
            Err((CloseCode::InvalidPayload, "invalid UTF-8"))
        );
        // Binary is not text.
        assert_eq!(
            on(&mut r, frame(true, OpCode::Binary, &[0xc3])),
            Ok(Received::Message(DataKind::Binary, vec![0xc3]))
        );
    }

    #[test]
    fn close_frames_are_validated() {
        let close = |payload: &[u8]| {
            MessageReader::default().on_frame(frame(true, OpCode::Close, payload), LIMIT, false)
        };
        assert_eq!(close(b""), Ok(Received::PeerClosed(1005)));
        assert_eq!(close(&[0x03, 0xe8]), Ok(Received::PeerClosed(1000)));
        assert_eq!(
            close(&[0x03, 0xe9, b'b', b'y']),
            Ok(Received::PeerClosed(1001))
        );
        assert_eq!(
            close(&[0x03]),
            Err((CloseCode::ProtocolError, "invalid close frame"))
        );
        // 1005 may not be sent; 999 is not a close code.
        assert_eq!(
            close(&[0x03, 0xed]),
            Err((CloseCode::ProtocolError, "invalid close code"))
        );
        assert_eq!(
            close(&[0x03, 0xe7]),
            Err((CloseCode::ProtocolError, "invalid close code"))
        );
        assert_eq!(
            close(&[0x03, 0xe8, 0xff]),
            Err((CloseCode::InvalidPayload, "invalid close reason"))
        );
    }

    #[test]
    fn once_closing_only_the_peers_close_counts() {
        let mut r = MessageReader::default();
        let closing = |r: &mut MessageReader, f| r.on_frame(f, LIMIT, true);
        assert_eq!(
            closing(&mut r, frame(true, OpCode::Text, b"late")),
            Ok(Received::Nothing)
        );
        // Even frames that would be errors are ignored.
        assert_eq!(
            closing(&mut r, frame(true, OpCode::Continuation, b"x")),
            Ok(Received::Nothing)
        );
        assert_eq!(
            closing(&mut r, frame(true, OpCode::Close, &[0x03])),
            Ok(Received::CloseAnswered)
        );
    }
}
