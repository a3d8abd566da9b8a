//! A passive tap on a client's TCP stream: it forwards every byte unchanged
//! and records what crossed the wire — the upgrade's answer, each WebSocket
//! text message in either direction, close frames, the stream's end.
//!
//! The library client and the raw clients run over a [`TapIo`], so the
//! oracles see exactly what a client saw, frame by frame, without any hook
//! in the client or the server.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use chat_flow::client::Connector;
use chat_flow::frame::{self, FrameError, Head};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::obs::{ConnNo, Obs, Recorder};

/// The server's host name and port in the simulation.
pub const SERVER: (&str, u16) = ("server", 3001);

/// Which way bytes flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    /// Client to server: an HTTP request head, then masked frames.
    Up,
    /// Server to client: an HTTP response head, then unmasked frames.
    Down,
}

/// Reassembles one direction of a WebSocket connection from raw bytes.
#[derive(Debug)]
struct Sniffer {
    dir: Dir,
    buf: Vec<u8>,
    /// The HTTP head is behind us.
    upgraded: bool,
    /// Nothing more to parse (refused upgrade, protocol confusion, closed).
    dead: bool,
    /// A fragmented message being reassembled: (opcode, payload).
    partial: Option<(u8, Vec<u8>)>,
}

/// Most bytes of an HTTP head before the sniffer gives up on it.
const HEAD_MAX: usize = 16 * 1024;

impl Sniffer {
    fn new(dir: Dir) -> Sniffer {
        Sniffer {
            dir,
            buf: Vec::new(),
            upgraded: false,
            dead: false,
            partial: None,
        }
    }

    fn feed(&mut self, bytes: &[u8], conn: ConnNo, rec: &Recorder) {
        if self.dead {
            return;
        }
        self.buf.extend_from_slice(bytes);
        if !self.upgraded {
            let Some(end) = find(&self.buf, b"\r\n\r\n") else {
                if self.buf.len() > HEAD_MAX {
                    self.dead = true;
                }
                return;
            };
            let head = self.buf[..end].to_vec();
            self.buf.drain(..end + 4);
            self.upgraded = true;
            if self.dir == Dir::Down {
                let status = std::str::from_utf8(&head)
                    .ok()
                    .and_then(|h| h.split(' ').nth(1))
                    .and_then(|s| s.parse::<u16>().ok())
                    .unwrap_or(0);
                if status == 101 {
                    rec.push(Obs::Open { conn });
                } else {
                    rec.push(Obs::Refused { conn, status });
                    self.dead = true;
                    return;
                }
            }
        }
        loop {
            let (head, payload) = match parse_frame(&self.buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => return,
                // Nothing the server or a simulated client writes: the
                // transport oracle fails the run on it, and nothing after it
                // can be parsed.
                Err(e) => {
                    rec.push(Obs::Malformed {
                        conn,
                        from_server: self.dir == Dir::Down,
                        reason: match e {
                            FrameError::Protocol(reason) => reason,
                            FrameError::TooBig => "frame too big",
                            FrameError::Gone => "stream ended",
                        },
                    });
                    self.dead = true;
                    return;
                }
            };
            self.buf.drain(..head.head_len + head.len);
            self.frame(head.fin, head.opcode as u8, payload, conn, rec);
            if self.dead {
                return;
            }
        }
    }

    fn frame(&mut self, fin: bool, opcode: u8, payload: Vec<u8>, conn: ConnNo, rec: &Recorder) {
        let from_server = self.dir == Dir::Down;
        match opcode {
            0 => {
                let Some((_, buf)) = self.partial.as_mut() else {
                    return;
                };
                buf.extend_from_slice(&payload);
                if fin {
                    let (op, buf) = self.partial.take().expect("checked above");
                    self.message(op, buf, conn, rec);
                }
            }
            1 | 2 => {
                if fin {
                    self.message(opcode, payload, conn, rec);
                } else {
                    self.partial = Some((opcode, payload));
                }
            }
            8 => {
                if from_server {
                    let code =
                        (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    rec.push(Obs::CloseRecv { conn, code });
                }
                self.dead = true;
            }
            9 | 10 => rec.push(Obs::Control {
                conn,
                from_server,
                opcode,
            }),
            _ => {}
        }
    }

    fn message(&mut self, opcode: u8, payload: Vec<u8>, conn: ConnNo, rec: &Recorder) {
        let text: Arc<str> = if opcode == 1 {
            String::from_utf8_lossy(&payload).into()
        } else {
            format!("<binary {} bytes>", payload.len()).into()
        };
        match self.dir {
            Dir::Up => rec.push(Obs::Sent { conn, text }),
            Dir::Down => rec.push(Obs::Recv { conn, text }),
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parses one complete frame at the start of `buf`: its header and its
/// unmasked payload; `Ok(None)` until all of it is there, an error for
/// bytes that are no frame.
fn parse_frame(buf: &[u8]) -> Result<Option<(Head, Vec<u8>)>, FrameError> {
    let Some((head, payload)) = frame::parse_frame(buf, usize::MAX)? else {
        return Ok(None);
    };
    let mut payload = payload.to_vec();
    if let Some(mask) = head.mask {
        frame::unmask(&mut payload, mask);
    }
    Ok(Some((head, payload)))
}

/// A turmoil TCP stream with a tap on both directions.
#[derive(Debug)]
pub struct TapIo {
    inner: turmoil::net::TcpStream,
    conn: ConnNo,
    rec: Recorder,
    up: Sniffer,
    down: Sniffer,
    ended: bool,
}

impl TapIo {
    /// Taps `inner` as connection `conn`.
    pub fn new(inner: turmoil::net::TcpStream, conn: ConnNo, rec: Recorder) -> TapIo {
        TapIo {
            inner,
            conn,
            rec,
            up: Sniffer::new(Dir::Up),
            down: Sniffer::new(Dir::Down),
            ended: false,
        }
    }

    /// The connection's number.
    pub fn conn(&self) -> ConnNo {
        self.conn
    }

    fn end(&mut self, how: &'static str) {
        if !self.ended {
            self.ended = true;
            self.rec.push(Obs::Ended {
                conn: self.conn,
                how,
            });
        }
    }
}

impl Drop for TapIo {
    fn drop(&mut self) {
        self.end("dropped");
    }
}

impl AsyncRead for TapIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        match &r {
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                if new.is_empty() {
                    this.end("eof");
                } else {
                    this.down.feed(new, this.conn, &this.rec);
                }
            }
            Poll::Ready(Err(_)) => this.end("error"),
            Poll::Pending => {}
        }
        r
    }
}

impl AsyncWrite for TapIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            this.up.feed(&buf[..*n], this.conn, &this.rec);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Hands out connection numbers in the order connections are made.
#[derive(Debug, Clone, Default)]
pub struct ConnCounter(Arc<AtomicU64>);

impl ConnCounter {
    /// The next number (from 1).
    pub fn next(&self) -> ConnNo {
        self.0.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// Connects to the simulated server and taps the stream.
pub async fn dial(client: u32, rec: &Recorder, conns: &ConnCounter) -> io::Result<TapIo> {
    dial_host(client, rec, conns, SERVER.0).await
}

/// The host name of node `node` of a cluster (node 0 is [`SERVER`]).
pub fn node_host(node: usize) -> String {
    if node == 0 {
        SERVER.0.to_owned()
    } else {
        format!("{}{node}", SERVER.0)
    }
}

/// [`dial`] to the node on `host`.
pub async fn dial_host(
    client: u32,
    rec: &Recorder,
    conns: &ConnCounter,
    host: &str,
) -> io::Result<TapIo> {
    match turmoil::net::TcpStream::connect((host, SERVER.1)).await {
        Ok(stream) => {
            let conn = conns.next();
            rec.push(Obs::Dial { conn, client });
            Ok(TapIo::new(stream, conn, rec.clone()))
        }
        Err(e) => {
            rec.push(Obs::DialFailed { client });
            Err(e)
        }
    }
}

/// The library client's [`Connector`] in the simulation.
#[derive(Debug, Clone)]
pub struct TapConnector {
    /// The simulated client.
    pub client: u32,
    /// Where observations go.
    pub rec: Recorder,
    /// Connection numbering.
    pub conns: ConnCounter,
    /// The nodes of the service (1: the one server).
    pub nodes: usize,
    /// Connections attempted so far: attempt `n` goes to node
    /// `(client + n) % nodes`, so that a client whose node is gone tries
    /// another one.
    pub attempts: usize,
}

impl Connector for TapConnector {
    type Io = TapIo;

    async fn connect(&mut self) -> io::Result<TapIo> {
        let node = (self.client as usize + self.attempts) % self.nodes.max(1);
        self.attempts += 1;
        dial_host(self.client, &self.rec, &self.conns, &node_host(node)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_masked_and_extended_frames() {
        let mut f = vec![0x81, 0x80 | 3, 1, 2, 3, 4];
        f.extend([b'a' ^ 1, b'b' ^ 2, b'c' ^ 3]);
        let (head, p) = parse_frame(&f).unwrap().unwrap();
        assert!(head.fin);
        let used = head.head_len + head.len;
        assert_eq!((head.opcode as u8, p.as_slice(), used), (1, &b"abc"[..], 9));
        let mut g = vec![0x81, 126, 0, 200];
        g.extend(std::iter::repeat_n(b'x', 200));
        let (head, _) = parse_frame(&g).unwrap().unwrap();
        assert_eq!(head.head_len + head.len, 204);
        assert_eq!(parse_frame(&g[..100]), Ok(None));
    }
}
