//! Frames as the server puts them on the wire, and the buffers they are laid
//! out in.
//!
//! Both ways out of a connection's queue — the hub writing straight to an
//! idle socket, and the connection's writer task — lay frames out here:
//! headers formatted by fastwebsockets, unmasked, payloads copied into a
//! buffer taken from a per-worker-thread pool, so that frames queued back to
//! back leave in one `write` and an idle connection holds no buffer at all.

use std::cell::RefCell;

use fastwebsockets::{Frame, Payload};

use super::outbox::OutFrame;

/// Most write buffers a worker thread keeps for reuse.
const POOLED_BUFFERS_MAX: usize = 64;
/// A buffer is written out whenever it holds this much.
pub(crate) const POOLED_BUFFER_BYTES_MAX: usize = 64 * 1024;
/// A payload this large is written from its own (shared) bytes rather than
/// copied into a buffer.
pub(crate) const LARGE_PAYLOAD_BYTES: usize = 16 * 1024;

thread_local! {
    /// Buffers in which frames are laid out for one write, reused by every
    /// connection served on this worker thread: a connection holds one only
    /// while it writes.
    static WRITE_BUFFERS: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer from this thread's pool (or a new one).
pub(crate) fn take_buffer() -> Vec<u8> {
    WRITE_BUFFERS.with_borrow_mut(Vec::pop).unwrap_or_default()
}

/// Returns a buffer to this thread's pool, unless it grew unusually large or
/// the pool is full.
pub(crate) fn give_back(mut buf: Vec<u8>) {
    if buf.capacity() <= 2 * POOLED_BUFFER_BYTES_MAX {
        buf.clear();
        WRITE_BUFFERS.with_borrow_mut(|pool| {
            if pool.len() < POOLED_BUFFERS_MAX {
                pool.push(buf);
            }
        });
    }
}

/// Appends the header of `frame` as a server sends it (unmasked), as
/// fastwebsockets formats it.
pub(crate) fn put_head(buf: &mut Vec<u8>, frame: &mut Frame<'_>) {
    let mut head = [0u8; 16];
    let len = frame.fmt_head(&mut head);
    buf.extend_from_slice(&head[..len]);
}

/// Appends `frame` as a server sends it: its header, then its payload.
pub(crate) fn put_frame(buf: &mut Vec<u8>, mut frame: Frame<'_>) {
    put_head(buf, &mut frame);
    buf.extend_from_slice(&frame.payload);
}

/// The frame to send for a queued data frame, or `None` for the rest of a
/// frame already partly written (its bytes go out as they are).
pub(crate) fn data_frame(frame: &OutFrame) -> Option<Frame<'_>> {
    match frame {
        OutFrame::Text(bytes) => Some(Frame::text(Payload::Borrowed(bytes))),
        OutFrame::Binary(bytes) => Some(Frame::binary(Payload::Borrowed(bytes))),
        OutFrame::Rest(_) => None,
    }
}

/// Appends a queued frame: header and payload, or a partly written frame's
/// remaining bytes.
pub(crate) fn put_out_frame(buf: &mut Vec<u8>, frame: &OutFrame) {
    match data_frame(frame) {
        Some(f) => put_frame(buf, f),
        None => buf.extend_from_slice(frame.bytes()),
    }
}

/// How many bytes `frame` takes on the wire (a server frame's header is 2,
/// 4 or 10 bytes long).
pub(crate) fn wire_len(frame: &OutFrame) -> usize {
    let payload = frame.bytes().len();
    let head = match frame {
        OutFrame::Rest(_) => 0,
        _ if payload < 126 => 2,
        _ if payload <= usize::from(u16::MAX) => 4,
        _ => 10,
    };
    head + payload
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use fastwebsockets::OpCode;

    #[test]
    fn frames_are_laid_out_as_a_server_sends_them() {
        let mut buf = Vec::new();
        put_frame(&mut buf, Frame::text(Payload::Borrowed(b"hi")));
        put_frame(
            &mut buf,
            Frame::new(true, OpCode::Ping, None, Payload::Borrowed(&[])),
        );
        put_frame(&mut buf, Frame::close(1013, b"slow"));
        let long = vec![b'x'; 300];
        put_frame(&mut buf, Frame::text(Payload::Borrowed(&long)));
        let mut expected = vec![0x81, 2, b'h', b'i', 0x89, 0, 0x88, 6, 0x03, 0xf5];
        expected.extend_from_slice(b"slow");
        expected.extend_from_slice(&[0x81, 126, 0x01, 0x2c]);
        expected.extend_from_slice(&long);
        assert_eq!(buf, expected);
    }

    #[test]
    fn wire_len_is_what_is_laid_out() {
        for len in [0, 1, 125, 126, 127, 65_535, 65_536, 70_000] {
            for frame in [
                OutFrame::Text(Bytes::from(vec![b'a'; len])),
                OutFrame::Binary(Bytes::from(vec![0; len])),
                OutFrame::Rest(Bytes::from(vec![1; len])),
            ] {
                let mut buf = Vec::new();
                put_out_frame(&mut buf, &frame);
                assert_eq!(wire_len(&frame), buf.len(), "{len} bytes: {frame:?}");
            }
        }
    }
}
