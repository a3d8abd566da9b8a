//! Reading client frames, holding no buffer while a connection is idle.
//!
//! fastwebsockets' reader gives every connection an 8 KiB buffer when the
//! connection opens and keeps it: most of what an idle connection costs the
//! server. This reader holds nothing between frames. It reads into a
//! per-worker-thread scratch buffer (borrowed only inside one poll) until a
//! frame's header says how long the frame is, then into a buffer grown as
//! the payload arrives, at most 16 KiB at a time, up to that size (a frame
//! longer than the limit is refused before anything of it is buffered);
//! bytes of the next frame that arrived with this one are kept, and the
//! buffer is released once everything read is consumed. Headers are checked as RFC 6455 5.2 asks:
//! reserved bits, known opcodes, unfragmented control frames of at most
//! 125 bytes, a 64-bit length with its top bit clear.

use std::cell::RefCell;
use std::pin::Pin;
use std::task::Poll;

use fastwebsockets::OpCode;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

/// Why no frame could be read (the frame codec's error).
use crate::frame::FrameError;
use crate::frame::parse_head;

/// Bytes read at once into the thread's scratch buffer while no frame needs
/// more: a chat message, or several, arrive in one read.
const SCRATCH_BYTES: usize = 4096;

/// Most the buffer grows by for one read of a large frame.
const GROW_BYTES_MAX: usize = 16 * 1024;

thread_local! {
    /// Where every connection served on this worker thread reads while it
    /// has no frame in progress that needs more than this.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_BYTES].into_boxed_slice());
}

/// A frame as read: the payload unmasked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InFrame {
    /// The final fragment of its message.
    pub fin: bool,
    /// What the frame is.
    pub opcode: OpCode,
    /// Whether the frame had a masking key (RFC 6455 5.1: a client's must).
    pub masked: bool,
    /// The payload.
    pub payload: Vec<u8>,
}

/// Reads frames off one connection.
#[derive(Debug, Default)]
pub struct FrameReader {
    /// Bytes read and not yet consumed; no allocation between frames unless
    /// the peer has already sent part of the next one.
    buf: Vec<u8>,
}

impl FrameReader {
    /// Reads the next frame, refusing one longer than `max_payload`. Not
    /// cancel-safe: a read abandoned half way leaves the stream mid-frame.
    pub async fn read_frame<R>(
        &mut self,
        stream: &mut R,
        max_payload: usize,
    ) -> Result<InFrame, FrameError>
    where
        R: AsyncRead + Unpin,
    {
        let head = loop {
            if let Some(head) = parse_head(&self.buf, max_payload)? {
                break head;
            }
            self.read_more(stream, 0).await?;
        };
        let total = head.head_len + head.len;
        while self.buf.len() < total {
            self.read_more(stream, total - self.buf.len()).await?;
        }
        let mut payload = if self.buf.len() == total {
            // The common case: the buffer holds this frame alone.
            let mut frame = std::mem::take(&mut self.buf);
            frame.drain(..head.head_len);
            frame
        } else {
            let payload = self.buf[head.head_len..total].to_vec();
            // Keep what arrived of the next frame, not the storage this
            // frame needed.
            self.buf = self.buf[total..].to_vec();
            payload
        };
        if let Some(mask) = head.mask {
            crate::frame::unmask(&mut payload, mask);
        }
        Ok(InFrame {
            fin: head.fin,
            opcode: head.opcode,
            masked: head.mask.is_some(),
            payload,
        })
    }

    /// Reads what is available: through the thread's scratch buffer while
    /// the frame in progress needs at most that much, else straight into the
    /// buffer, grown to what the frame still needs.
    async fn read_more<R>(&mut self, stream: &mut R, missing: usize) -> Result<(), FrameError>
    where
        R: AsyncRead + Unpin,
    {
        let read = if missing > SCRATCH_BYTES {
            // Grown as bytes arrive, not on the header's word: a peer that
            // announces a large frame and sends nothing holds no memory.
            self.buf.reserve_exact(missing.min(GROW_BYTES_MAX));
            stream.read_buf(&mut self.buf).await
        } else {
            let buf = &mut self.buf;
            std::future::poll_fn(|cx| {
                SCRATCH.with_borrow_mut(|scratch| {
                    let mut read = ReadBuf::new(scratch);
                    match Pin::new(&mut *stream).poll_read(cx, &mut read) {
                        Poll::Ready(Ok(())) => {
                            buf.extend_from_slice(read.filled());
                            Poll::Ready(Ok(read.filled().len()))
                        }
                        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                        Poll::Pending => Poll::Pending,
                    }
                })
            })
            .await
        };
        match read {
            Ok(1..) => Ok(()),
            Ok(0) | Err(_) => Err(FrameError::Gone),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame: masked with `mask`, or unmasked when `None`.
    fn client_frame(opcode: OpCode, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut out = Vec::new();
        crate::frame::put_frame(&mut out, true, opcode, mask, payload);
        out
    }

    const MASK: Option<[u8; 4]> = Some([1, 2, 3, 4]);

    #[tokio::test]
    async fn frames_of_every_length_arriving_together_or_apart() {
        let payloads: Vec<Vec<u8>> = [0, 1, 125, 126, 255, 256, 257, 300, 65_535, 65_536, 70_000]
            .iter()
            .map(|&n| (0..n).map(|i| (i % 251) as u8).collect())
            .collect();
        let mut wire = Vec::new();
        for p in &payloads {
            wire.extend(client_frame(OpCode::Binary, p, MASK));
        }
        wire.extend(client_frame(OpCode::Text, b"unmasked", None));
        // All at once, and a few bytes at a time.
        for chunk in [wire.len(), 3, 1000] {
            let (mut client, mut server) = tokio::io::duplex(chunk.max(64));
            let sent = wire.clone();
            let writer = tokio::spawn(async move {
                for piece in sent.chunks(chunk) {
                    tokio::io::AsyncWriteExt::write_all(&mut client, piece)
                        .await
                        .expect("write");
                }
                client
            });
            let mut reader = FrameReader::default();
            for p in &payloads {
                let f = reader.read_frame(&mut server, 70_000).await.expect("frame");
                assert_eq!((f.fin, f.opcode, f.masked), (true, OpCode::Binary, true));
                assert!(f.payload == *p, "{} bytes, chunk {chunk}", p.len());
            }
            let f = reader.read_frame(&mut server, 70_000).await.expect("frame");
            assert_eq!((f.masked, f.payload.as_slice()), (false, &b"unmasked"[..]));
            // Everything consumed: nothing is held while idle.
            assert_eq!(reader.buf.capacity(), 0);
            drop(writer.await.expect("writer"));
            assert_eq!(
                reader.read_frame(&mut server, 70_000).await,
                Err(FrameError::Gone)
            );
        }
    }

    #[tokio::test]
    async fn an_oversized_frame_is_refused_before_its_payload_is_read() {
        let wire = client_frame(OpCode::Binary, &[7; 5000], MASK);
        // Only the header arrives.
        let (mut client, mut server) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut client, &wire[..8])
            .await
            .expect("write");
        let mut reader = FrameReader::default();
        assert_eq!(
            reader.read_frame(&mut server, 4999).await,
            Err(FrameError::TooBig)
        );
        assert!(reader.buf.capacity() < 5000);
    }

    #[tokio::test]
    async fn a_large_frame_announced_but_not_sent_holds_little() {
        let mut wire = client_frame(OpCode::Binary, &[7; 60_000], MASK);
        wire.truncate(14 + 100);
        let (mut client, mut server) = tokio::io::duplex(1 << 17);
        tokio::io::AsyncWriteExt::write_all(&mut client, &wire)
            .await
            .expect("write");
        let mut reader = FrameReader::default();
        let waiting = tokio::time::timeout(
            std::time::Duration::from_millis(20),
            reader.read_frame(&mut server, 65_536),
        )
        .await;
        assert!(waiting.is_err(), "the frame is not all there");
        assert!(
            reader.buf.capacity() <= GROW_BYTES_MAX + 200,
            "{} bytes reserved on the header's word",
            reader.buf.capacity()
        );
    }
}
