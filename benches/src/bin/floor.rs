//! The cost floor: a server that accepts the same WebSocket connections as
//! Chat Flow and, per message, writes one pre-encoded frame to each member
//! of the room, with no JSON parsing, no authentication, no core, no queue.
//!
//! Per delivery it does what no chat server can avoid: one `write` of a frame
//! (WebSocket header included) that was built once for the whole room. Its
//! CPU time per delivery is the machine's floor, against which the load
//! generator sets the server's (`loadgen … --compare`).
//!
//! What it answers, found by prefix and substring only:
//! `AUTHENTICATE` → `AUTH_SUCCESS`; `CREATE_ROOM` (`"id"`) → `ROOM_CREATED`
//! and joined; `JOIN_ROOM` (`"roomId"`) → `ROOM_JOINED` with no history;
//! `LEAVE_ROOM` → `ROOM_LEFT`; after the reply to a join, one `USER_JOINED`,
//! built once, to each member already there; `SEND_MESSAGE` → a `NEW_MESSAGE` (same fields
//! and order as Chat Flow's, `content` copied byte for byte, `seq` per room)
//! to every member, the sender included; anything else → `PONG`.
//!
//! Writes go straight to the socket with `try_write` from the task that read
//! the message. Only when a socket would block are the bytes appended to that
//! connection's pending buffer, which a per-connection task flushes when the
//! socket is writable (so under back-pressure it coalesces, like any server
//! would). On SIGTERM/SIGINT it prints its counters (deliveries, `write`
//! calls) to stderr and exits.
//!
//! With `--writer task` every frame goes through the connection's writer
//! task instead (queued, task woken, written there): the cost of that
//! hand-off alone, for comparison.
//!
//! `floor --port 3002 [--host 127.0.0.1] [--threads 2] [--writer direct|task]`

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine;
use chat_flow::frame;
use chat_flow_bench::wire;
use clap::Parser;
use fastwebsockets::{OpCode, Role};
use memchr::memmem;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

#[derive(Parser, Debug)]
#[command(about = "Cost-floor WebSocket server for Chat Flow's load generator")]
struct Args {
    /// Listen address (loopback only).
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    host: IpAddr,
    /// Listen port (0: any free port, printed on stderr).
    #[arg(long, env = "PORT", default_value_t = 3002)]
    port: u16,
    /// Runtime worker threads (default: one per core, like Chat Flow).
    #[arg(long)]
    threads: Option<usize>,
    /// `direct`: write each frame from the task that read the message (the
    /// floor). `task`: queue it and wake the connection's writer task, which
    /// writes what is queued (the cost of a per-connection writer task,
    /// without anything else of Chat Flow's).
    #[arg(long, default_value = "direct")]
    writer: Writer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Writer {
    Direct,
    Task,
}

static WRITER: OnceLock<Writer> = OnceLock::new();

#[derive(Default)]
struct Counters {
    deliveries: AtomicU64,
    writes: AtomicU64,
    pending_appends: AtomicU64,
    messages: AtomicU64,
    connections: AtomicU64,
}

static COUNTERS: OnceLock<Counters> = OnceLock::new();

fn counters() -> &'static Counters {
    COUNTERS.get_or_init(Counters::default)
}

/// One connection's write side.
struct Peer {
    w: OwnedWriteHalf,
    out: Mutex<Out>,
    wake: Notify,
}

#[derive(Default)]
struct Out {
    pending: Vec<u8>,
    dead: bool,
}

impl Peer {
    /// Writes `frame` now if nothing is pending (one `write`), else appends
    /// it to what the flusher will write. Returns the `write` calls made.
    fn deliver(&self, frame: &[u8]) -> u64 {
        let mut o = self.out.lock().unwrap_or_else(|e| e.into_inner());
        if o.dead {
            return 0;
        }
        if !o.pending.is_empty() {
            o.pending.extend_from_slice(frame);
            counters().pending_appends.fetch_add(1, Ordering::Relaxed);
            return 0;
        }
        if WRITER.get() == Some(&Writer::Task) {
            o.pending.extend_from_slice(frame);
            drop(o);
            self.wake.notify_one();
            return 0;
        }
        match self.w.try_write(frame) {
            Ok(n) if n == frame.len() => return 1,
            Ok(n) => o.pending.extend_from_slice(&frame[n..]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => o.pending.extend_from_slice(frame),
            Err(_) => {
                o.dead = true;
                return 1;
            }
        }
        counters().pending_appends.fetch_add(1, Ordering::Relaxed);
        drop(o);
        self.wake.notify_one();
        1
    }

    fn kill(&self) {
        self.out.lock().unwrap_or_else(|e| e.into_inner()).dead = true;
        self.wake.notify_one();
    }
}

/// Flushes a peer's pending bytes whenever its socket is writable.
async fn flusher(peer: Arc<Peer>) {
    loop {
        peer.wake.notified().await;
        loop {
            {
                let mut o = peer.out.lock().unwrap_or_else(|e| e.into_inner());
                if o.dead {
                    return;
                }
                if o.pending.is_empty() {
                    break;
                }
                counters().writes.fetch_add(1, Ordering::Relaxed);
                match peer.w.try_write(&o.pending) {
                    Ok(n) => {
                        o.pending.drain(..n);
                        if o.pending.is_empty() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => {
                        o.dead = true;
                        return;
                    }
                }
            }
            if peer.w.writable().await.is_err() {
                peer.kill();
                return;
            }
        }
    }
}

struct Room {
    id: String,
    inner: Mutex<RoomInner>,
}

#[derive(Default)]
struct RoomInner {
    seq: u64,
    members: Vec<Arc<Peer>>,
}

type Rooms = Mutex<HashMap<String, Arc<Room>>>;

fn room(rooms: &Rooms, id: &str) -> Arc<Room> {
    rooms
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(id.to_owned())
        .or_insert_with(|| {
            Arc::new(Room {
                id: id.to_owned(),
                inner: Mutex::new(RoomInner::default()),
            })
        })
        .clone()
}

impl Room {
    /// Adds `peer` to the members; whether it was new.
    fn join(&self, peer: &Arc<Peer>) -> bool {
        let mut r = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if r.members.iter().any(|p| Arc::ptr_eq(p, peer)) {
            return false;
        }
        r.members.push(peer.clone());
        true
    }

    /// One `USER_JOINED` for `peer`, encoded once, written to every other
    /// member (the presence every chat server owes a room).
    fn announce(&self, peer: &Arc<Peer>) {
        let frame = wire::server_text_frame(
            format!(
                r#"{{"type":"USER_JOINED","payload":{{"roomId":"{}","user":{{"userId":"floor","username":"floor"}}}}}}"#,
                self.id
            )
            .as_bytes(),
        );
        let r = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (mut deliveries, mut writes) = (0, 0);
        for p in r.members.iter().filter(|p| !Arc::ptr_eq(p, peer)) {
            deliveries += 1;
            writes += p.deliver(&frame);
        }
        let c = counters();
        c.deliveries.fetch_add(deliveries, Ordering::Relaxed);
        c.writes.fetch_add(writes, Ordering::Relaxed);
    }

    fn leave(&self, peer: &Arc<Peer>) {
        let mut r = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        r.members.retain(|p| !Arc::ptr_eq(p, peer));
    }

    /// One `NEW_MESSAGE`, encoded once, written to every member.
    fn fan_out(&self, content: &[u8], buf: &mut Vec<u8>) {
        let mut r = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        r.seq += 1;
        let seq = r.seq;
        buf.clear();
        // Room for the WebSocket header, filled in below.
        buf.extend_from_slice(&[0; 4]);
        buf.extend_from_slice(br#"{"type":"NEW_MESSAGE","payload":{"id":"msg_f_"#);
        push_u64(buf, seq);
        buf.extend_from_slice(br#"","seq":"#);
        push_u64(buf, seq);
        buf.extend_from_slice(br#","roomId":""#);
        buf.extend_from_slice(self.id.as_bytes());
        buf.extend_from_slice(br#"","userId":"floor","username":"floor","content":""#);
        buf.extend_from_slice(content);
        buf.extend_from_slice(br#"","type":"text","timestamp":"2026-01-01T00:00:00.000Z"}}"#);
        // The header ends where the payload starts, in the room left for it.
        let mut head = [0; frame::MAX_HEAD_LEN];
        let n = frame::encode_head(&mut head, true, OpCode::Text, None, buf.len() - 4);
        assert!(n <= 4, "load-generator messages are small");
        let start = 4 - n;
        buf[start..4].copy_from_slice(&head[..n]);
        let frame = &buf[start..];
        let mut writes = 0;
        for p in &r.members {
            writes += p.deliver(frame);
        }
        let c = counters();
        c.messages.fetch_add(1, Ordering::Relaxed);
        c.deliveries
            .fetch_add(r.members.len() as u64, Ordering::Relaxed);
        c.writes.fetch_add(writes, Ordering::Relaxed);
    }
}

fn push_u64(buf: &mut Vec<u8>, mut v: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    buf.extend_from_slice(&tmp[i..]);
}

/// The string value following `key` (which ends with the opening quote).
fn string_after<'a>(payload: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let at = memmem::find(payload, key)? + key.len();
    let end = memchr::memchr(b'"', &payload[at..])?;
    Some(&payload[at..at + end])
}

fn room_json(id: &str) -> String {
    format!(
        r#"{{"id":"{id}","name":"{id}","description":"","type":"public","memberCount":0,"createdAt":"2026-01-01T00:00:00.000Z","createdBy":"floor"}}"#
    )
}

async fn handshake(stream: &mut TcpStream) -> io::Result<bool> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(false);
        }
        head.extend_from_slice(&buf[..n]);
        if memmem::find(&head, b"\r\n\r\n").is_some() {
            break;
        }
        if head.len() > 16 * 1024 {
            return Ok(false);
        }
    }
    let text = String::from_utf8_lossy(&head);
    let key = text.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("sec-websocket-key")
            .then(|| value.trim().to_owned())
    });
    let Some(key) = key else {
        // Plain HTTP (a readiness probe): answer and close.
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
            .await?;
        return Ok(false);
    };
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let accept = base64::engine::general_purpose::STANDARD.encode(sha.finalize());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    stream.write_all(response.as_bytes()).await?;
    Ok(true)
}

async fn serve(mut stream: TcpStream, rooms: Arc<Rooms>) {
    match handshake(&mut stream).await {
        Ok(true) => {}
        _ => return,
    }
    counters().connections.fetch_add(1, Ordering::Relaxed);
    let (r, w) = stream.into_split();
    let peer = Arc::new(Peer {
        w,
        out: Mutex::new(Out::default()),
        wake: Notify::new(),
    });
    tokio::spawn(flusher(peer.clone()));
    let (mut rx, _) = fastwebsockets::after_handshake_split(r, tokio::io::sink(), Role::Server);
    rx.set_auto_close(false);
    rx.set_auto_pong(false);
    let mut joined: Option<Arc<Room>> = None;
    let mut buf = Vec::with_capacity(1024);
    let mut no_sends = |_| async { Ok::<(), io::Error>(()) };
    loop {
        let frame = match rx.read_frame(&mut no_sends).await {
            Ok(f) => f,
            Err(_) => break,
        };
        match frame.opcode {
            OpCode::Text => {}
            OpCode::Close => break,
            _ => continue,
        }
        let p = &frame.payload[..];
        if p.starts_with(wire::SEND_MESSAGE_PREFIX) {
            if let (Some(room), Some(content)) = (&joined, string_after(p, br#""content":""#)) {
                room.fan_out(content, &mut buf);
            }
            continue;
        }
        let mut announce = None;
        let reply = match wire::frame_type(p) {
            b"AUTHENTICATE" => {
                r#"{"type":"AUTH_SUCCESS","payload":{"userId":"floor","username":"floor","status":"online"}}"#
                    .to_owned()
            }
            b"CREATE_ROOM" | b"JOIN_ROOM" => {
                let key: &[u8] = if wire::frame_type(p) == b"CREATE_ROOM" {
                    br#""id":""#
                } else {
                    br#""roomId":""#
                };
                let id = string_after(p, key).unwrap_or(b"general");
                let id = String::from_utf8_lossy(id).into_owned();
                let room = room(&rooms, &id);
                if let Some(old) = joined.take()
                    && !Arc::ptr_eq(&old, &room)
                {
                    old.leave(&peer);
                }
                if room.join(&peer) {
                    announce = Some(room.clone());
                }
                joined = Some(room);
                if wire::frame_type(p) == b"CREATE_ROOM" {
                    format!(
                        r#"{{"type":"ROOM_CREATED","payload":{{"room":{},"epoch":"floor"}}}}"#,
                        room_json(&id)
                    )
                } else {
                    format!(
                        r#"{{"type":"ROOM_JOINED","payload":{{"room":{},"epoch":"floor","messages":[],"users":[]}}}}"#,
                        room_json(&id)
                    )
                }
            }
            b"LEAVE_ROOM" => {
                let id = string_after(p, br#""roomId":""#).unwrap_or_default();
                let id = String::from_utf8_lossy(id).into_owned();
                if let Some(room) = joined.take() {
                    room.leave(&peer);
                }
                format!(r#"{{"type":"ROOM_LEFT","payload":{{"roomId":"{id}"}}}}"#)
            }
            _ => r#"{"type":"PONG","payload":{}}"#.to_owned(),
        };
        peer.deliver(&wire::server_text_frame(reply.as_bytes()));
        if let Some(room) = announce {
            room.announce(&peer);
        }
    }
    if let Some(room) = joined {
        room.leave(&peer);
    }
    peer.kill();
}

fn main() -> io::Result<()> {
    let args = Args::parse();
    WRITER.set(args.writer).expect("set once");
    if !args.host.is_loopback() {
        eprintln!("floor: listens on loopback only");
        std::process::exit(2);
    }
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.threads {
        rt.worker_threads(n.max(1));
    }
    let rt = rt.enable_all().build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(SocketAddr::new(args.host, args.port)).await?;
        eprintln!("floor: listening on {}", listener.local_addr()?);
        let rooms: Arc<Rooms> = Arc::new(Mutex::new(HashMap::new()));
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(serve(stream, rooms.clone()));
                }
                _ = term.recv() => break,
                _ = tokio::signal::ctrl_c() => break,
            }
        }
        let c = counters();
        let d = c.deliveries.load(Ordering::Relaxed);
        let w = c.writes.load(Ordering::Relaxed);
        eprintln!(
            "floor: connections={} messages={} deliveries={d} writes={w} writes_per_delivery={:.3} pending_appends={}",
            c.connections.load(Ordering::Relaxed),
            c.messages.load(Ordering::Relaxed),
            w as f64 / d.max(1) as f64,
            c.pending_appends.load(Ordering::Relaxed),
        );
        Ok(())
    })
}
