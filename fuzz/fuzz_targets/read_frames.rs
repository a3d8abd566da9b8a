//! Arbitrary bytes from a client → the server's WebSocket frame reader.
//!
//! The first byte sets the frame limit (1 to 16,321 bytes); the rest is the
//! stream, which arrives in pieces whose sizes come from the input too (so
//! headers and payloads are split at every possible point).
//!
//! Invariants checked on every input:
//!
//! 1. Reading never panics, and never waits on bytes that are there.
//! 2. Every data frame read respects the limit, control frames are final
//!    and at most 125 bytes long (whatever the limit), and a header that [`parse_head`] accepts is
//!    exactly what the reader returned.
//! 3. The reader consumes the stream exactly: each frame read re-encodes (its
//!    header in the form the input used) to the next bytes of the input.

#![no_main]

use std::pin::pin;
use std::task::{Context, Poll, Waker};

use chat_flow::frame::{OpCode, parse_head, unmask};
use chat_flow::server::frame_reader::FrameReader;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, ReadBuf};

/// A stream that hands out the input in pieces of the given sizes.
struct Pieces<'a> {
    data: &'a [u8],
    sizes: &'a [u8],
}

impl AsyncRead for Pieces<'_> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let size = match self.sizes.split_first() {
            Some((&s, rest)) => {
                self.sizes = rest;
                usize::from(s).max(1)
            }
            None => usize::MAX,
        };
        let n = size.min(buf.remaining()).min(self.data.len());
        buf.put_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Poll::Ready(Ok(()))
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&limit, rest)) = input.split_first() else {
        return;
    };
    let max = 1 + usize::from(limit) * 64;
    let split = rest
        .len()
        .min(rest.first().map_or(0, |&n| usize::from(n) % 16));
    let (sizes, data) = rest.split_at(split);
    let mut stream = Pieces { data, sizes };
    let mut reader = FrameReader::default();
    let mut cx = Context::from_waker(Waker::noop());
    let mut offset = 0;
    loop {
        let read = {
            let fut = pin!(reader.read_frame(&mut stream, max));
            match fut.poll(&mut cx) {
                Poll::Ready(r) => r,
                Poll::Pending => panic!("waited on a stream that never blocks"),
            }
        };
        let Ok(frame) = read else {
            break;
        };
        let head = parse_head(&data[offset..], max)
            .expect("the reader accepted this header")
            .expect("the header is whole");
        assert_eq!(frame.payload.len(), head.len);
        assert_eq!((frame.fin, frame.opcode), (head.fin, head.opcode));
        assert_eq!(frame.masked, head.mask.is_some());
        // Data frames are held to the limit; control frames (not part of a
        // message) to their own 125 bytes, whatever the limit.
        if matches!(frame.opcode, OpCode::Close | OpCode::Ping | OpCode::Pong) {
            assert!(frame.fin && frame.payload.len() <= 125);
        } else {
            assert!(frame.payload.len() <= max);
        }
        let mut wire = data[offset..offset + head.head_len].to_vec();
        let mut payload = frame.payload.clone();
        if let Some(mask) = head.mask {
            unmask(&mut payload, mask);
        }
        wire.extend_from_slice(&payload);
        assert_eq!(wire, data[offset..offset + wire.len()]);
        offset += wire.len();
    }
});
