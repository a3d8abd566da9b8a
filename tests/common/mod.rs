//! Shared helpers for the integration tests: start the real server in-process
//! on 127.0.0.1 port 0, talk to it with an independent WebSocket client
//! (tokio-tungstenite), with raw HTTP requests, or with a hand-written raw
//! WebSocket frame writer/reader for frame-level cases.
//!
//! Every receive has a timeout so that a hang fails the test instead of
//! blocking it.

#![allow(dead_code)]

pub mod process;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use chat_flow::auth::{TokenSpec, mint_hs256};
use chat_flow::config::{Config, DEV_JWT_SECRET};
use chat_flow::frame::{self, OpCode};
use chat_flow::protocol::server::ServerFrame;
use chat_flow::server::RunningServer;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Bytes, Error as WsError, Message};
use tokio_tungstenite::{WebSocketStream, client_async};

/// How long any single expected event may take before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// `Config::default()` listening on 127.0.0.1, port 0, with presence and
/// typing notices written at once: a test that expects silence after an
/// action must hear a wrong notice within its wait, not after a hold.
pub fn test_config() -> Config {
    Config {
        host: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: 0,
        presence_delay_ms: 0,
        ..Config::default()
    }
}

/// Starts the real server with `test_config()` changed by `f`.
pub async fn start_with(f: impl FnOnce(&mut Config)) -> RunningServer {
    let mut cfg = test_config();
    f(&mut cfg);
    RunningServer::start(cfg).await.expect("server starts")
}

/// Starts the real server with the defaults (on 127.0.0.1:0).
pub async fn start() -> RunningServer {
    start_with(|_| {}).await
}

/// Unix time in seconds.
pub fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// A token for `sub` signed with the development secret, valid for an hour.
pub fn token(sub: &str) -> String {
    mint(&TokenSpec::new(sub, now_s(), 3600))
}

/// A token signed with the development secret.
pub fn mint(spec: &TokenSpec<'_>) -> String {
    mint_hs256(DEV_JWT_SECRET.as_bytes(), spec).expect("mint")
}

/// A token for `sub` with a `username` claim.
pub fn token_named(sub: &str, username: &str) -> String {
    mint(&TokenSpec {
        username: Some(username),
        ..TokenSpec::new(sub, now_s(), 3600)
    })
}

/// A token for `sub` whose `rooms` claim lists `rooms`.
pub fn token_rooms(sub: &str, rooms: &[&str]) -> String {
    let rooms: Vec<String> = rooms.iter().map(|r| (*r).to_owned()).collect();
    mint(&TokenSpec {
        rooms: &rooms,
        ..TokenSpec::new(sub, now_s(), 3600)
    })
}

/// A file under `tests/fixtures/jwt` (throwaway keys).
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/jwt")
        .join(name)
}

/// A token with arbitrary claims, signed with `alg` and the dev secret.
pub fn hs(alg: jsonwebtoken::Algorithm, claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(alg),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(DEV_JWT_SECRET.as_bytes()),
    )
    .expect("encode")
}

/// Unpadded base64url, as in a JWS.
pub fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// `header.claims.` with no signature (an `alg: none` token, or any other
/// header left unsigned).
pub fn unsigned(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}.",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    )
}

/// A compact JWS with exactly this `header` and these `claims` (nothing
/// added: any `alg`, `kid` or `crit` the test wants), signed as `alg` with
/// `key` whatever the header says.
pub fn jws(
    header: &Value,
    claims: &Value,
    alg: jsonwebtoken::Algorithm,
    key: &jsonwebtoken::EncodingKey,
) -> String {
    let input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let signature = jsonwebtoken::crypto::sign(input.as_bytes(), key, alg).expect("sign");
    format!("{input}.{signature}")
}

/// A configuration on 127.0.0.1:0 accepting only `alg` with the fixture
/// public key `public` (as an operator would set it: through the variables).
pub fn public_key_config(alg: &str, public: &str) -> Config {
    let key = fixture(public).to_string_lossy().into_owned();
    let alg = alg.to_owned();
    Config::from_lookup(|var| match var {
        "HOST" => Some("127.0.0.1".into()),
        "PORT" => Some("0".into()),
        "JWT_ALGORITHM" => Some(alg.clone()),
        "JWT_PUBLIC_KEY_FILE" => Some(key.clone()),
        _ => None,
    })
    .expect("config")
}

/// This process's resident set size in bytes (`VmRSS` in
/// `/proc/self/status`); the server runs in-process in the tests.
///
/// Freed memory is first handed back to the kernel (glibc's `malloc_trim`),
/// so that the figure follows what is live rather than what glibc's
/// per-thread arenas happen to keep cached (which varies by hundreds of
/// connections' worth from one measurement to the next).
pub fn vm_rss_bytes() -> u64 {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: malloc_trim only releases free heap memory; it is
        // thread-safe and has no preconditions.
        unsafe {
            malloc_trim(0);
        }
    }
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kib * 1024
}

/// `retryAfterMs` of a `RATE_LIMIT_EXCEEDED` error.
pub fn retry_after(v: &Value) -> u64 {
    v["payload"]["retryAfterMs"]
        .as_u64()
        .unwrap_or_else(|| panic!("retryAfterMs must be a non-negative integer: {v}"))
}

/// What the client saw next.
#[derive(Debug)]
pub enum Event {
    /// A text frame, decoded as JSON.
    Text(Value),
    /// A close frame with its code (`None`: no code).
    Close(Option<u16>),
    /// The stream ended (EOF, reset) without a close frame.
    End(String),
}

/// A WebSocket client on tokio-tungstenite.
pub struct Client {
    ws: WebSocketStream<TcpStream>,
    /// WebSocket pings received from the server so far (tungstenite answers
    /// them itself while reading).
    pub pings: usize,
    next_request: u64,
}

/// Why an upgrade did not produce a WebSocket.
#[derive(Debug)]
pub enum ConnectError {
    /// The server answered with this HTTP status instead of 101.
    Status(u16),
    /// Anything else.
    Other(String),
}

fn ws_request(
    addr: SocketAddr,
    headers: &[(&str, &str)],
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let mut request = format!("ws://{addr}/ws")
        .into_client_request()
        .expect("request");
    for (name, value) in headers {
        request.headers_mut().insert(
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes())
                .expect("header name"),
            HeaderValue::from_str(value).expect("header value"),
        );
    }
    request
}

async fn upgrade(
    stream: TcpStream,
    addr: SocketAddr,
    headers: &[(&str, &str)],
) -> Result<Client, ConnectError> {
    stream.set_nodelay(true).expect("nodelay");
    match tokio::time::timeout(TIMEOUT, client_async(ws_request(addr, headers), stream)).await {
        Err(_) => Err(ConnectError::Other("upgrade timed out".into())),
        Ok(Ok((ws, response))) => {
            assert_eq!(response.status().as_u16(), 101);
            Ok(Client {
                ws,
                pings: 0,
                next_request: 0,
            })
        }
        Ok(Err(WsError::Http(response))) => Err(ConnectError::Status(response.status().as_u16())),
        Ok(Err(e)) => Err(ConnectError::Other(e.to_string())),
    }
}

impl Client {
    /// Opens a WebSocket to `addr`; panics if the upgrade fails.
    pub async fn connect(addr: SocketAddr) -> Client {
        Self::try_connect(addr, &[]).await.expect("upgrade")
    }

    /// Opens a WebSocket with extra request headers (e.g. `Origin`).
    pub async fn try_connect(
        addr: SocketAddr,
        headers: &[(&str, &str)],
    ) -> Result<Client, ConnectError> {
        let stream = TcpStream::connect(addr).await.expect("tcp connect");
        upgrade(stream, addr, headers).await
    }

    /// Opens a WebSocket from a given local IP (any 127.x.y.z on Linux).
    pub async fn try_connect_from(addr: SocketAddr, local: IpAddr) -> Result<Client, ConnectError> {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.bind(SocketAddr::new(local, 0)).expect("bind");
        let stream = socket.connect(addr).await.expect("tcp connect");
        upgrade(stream, addr, &[]).await
    }

    /// Opens a WebSocket whose socket has a small receive buffer (so that a
    /// client that stops reading backs up into the server quickly).
    pub async fn connect_small_buffer(addr: SocketAddr) -> Client {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(16 * 1024).expect("SO_RCVBUF");
        let stream = socket.connect(addr).await.expect("tcp connect");
        upgrade(stream, addr, &[]).await.expect("upgrade")
    }

    /// Connects and authenticates as `user` (token from the dev secret).
    pub async fn authed(addr: SocketAddr, user: &str) -> Client {
        let mut c = Self::connect(addr).await;
        c.auth(user).await;
        c
    }

    /// Sends one JSON value as a text frame.
    pub async fn send(&mut self, value: Value) {
        self.send_text(&value.to_string()).await;
    }

    /// Sends a text frame as is.
    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::text(text.to_owned()))
            .await
            .expect("send text");
    }

    /// Sends a binary frame.
    pub async fn send_binary(&mut self, data: &[u8]) {
        self.ws
            .send(Message::Binary(Bytes::copy_from_slice(data)))
            .await
            .expect("send binary");
    }

    /// Sends a close frame with `code`.
    pub async fn close(&mut self, code: u16) {
        use tokio_tungstenite::tungstenite::protocol::CloseFrame;
        let _ = self
            .ws
            .send(Message::Close(Some(CloseFrame {
                code: code.into(),
                reason: "".into(),
            })))
            .await;
    }

    /// The next event within `within`, or `None` on timeout. Pings and
    /// pongs are counted and skipped.
    pub async fn next_event(&mut self, within: Duration) -> Option<Event> {
        let deadline = Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return None,
                Ok(None) => return Some(Event::End("stream ended".into())),
                Ok(Some(Err(e))) => return Some(Event::End(e.to_string())),
                Ok(Some(Ok(message))) => match message {
                    Message::Text(text) => {
                        let value: Value = serde_json::from_str(text.as_str())
                            .unwrap_or_else(|e| panic!("server sent invalid JSON {text:?}: {e}"));
                        // Every frame must also decode as a known server message.
                        if let Err(e) = ServerFrame::decode(text.as_bytes()) {
                            panic!("server frame does not decode as a ServerMessage: {e}: {text}");
                        }
                        return Some(Event::Text(value));
                    }
                    Message::Binary(b) => panic!("server sent a binary frame: {b:?}"),
                    Message::Ping(_) => self.pings += 1,
                    Message::Pong(_) | Message::Frame(_) => {}
                    Message::Close(frame) => {
                        return Some(Event::Close(frame.map(|f| u16::from(f.code))));
                    }
                },
            }
        }
    }

    /// The next text frame, decoded; panics on close, end or timeout.
    pub async fn recv(&mut self) -> Value {
        match self.next_event(TIMEOUT).await {
            Some(Event::Text(v)) => v,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// The next text frame, which must have `type` `kind`.
    pub async fn expect_type(&mut self, kind: &str) -> Value {
        let v = self.recv().await;
        assert_eq!(v["type"], kind, "unexpected frame: {v}");
        v
    }

    /// The next frame must be `ERROR` with `code`; returns it.
    pub async fn expect_error(&mut self, code: &str) -> Value {
        let v = self.expect_type("ERROR").await;
        assert_eq!(v["payload"]["code"], code, "unexpected error: {v}");
        assert!(
            v["payload"]["message"].is_string(),
            "error without message: {v}"
        );
        v
    }

    /// The next frame must be a close frame with `code` (no text frame
    /// before it); then waits for the stream to end.
    pub async fn expect_close(&mut self, code: u16) {
        match self.next_event(TIMEOUT).await {
            Some(Event::Close(c)) => assert_eq!(c, Some(code), "wrong close code"),
            other => panic!("expected close {code}, got {other:?}"),
        }
        self.finish().await;
    }

    /// Reads text frames until a close frame or the end of the stream;
    /// returns the frames and the close code (`None` when the stream ended
    /// without a close frame).
    pub async fn drain_until_close(&mut self, within: Duration) -> (Vec<Value>, Option<u16>) {
        let deadline = Instant::now() + within;
        let mut frames = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event(left).await {
                Some(Event::Text(v)) => frames.push(v),
                Some(Event::Close(c)) => {
                    self.finish().await;
                    return (frames, c);
                }
                Some(Event::End(_)) => return (frames, None),
                None => panic!("no close within {within:?} (after {} frames)", frames.len()),
            }
        }
    }

    /// Lets the close handshake complete (tungstenite answers the close).
    async fn finish(&mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }

    /// Asserts that nothing (no text frame, no close) arrives within `ms`.
    pub async fn expect_silence(&mut self, ms: u64) {
        if let Some(e) = self.next_event(Duration::from_millis(ms)).await {
            panic!("expected silence for {ms} ms, got {e:?}");
        }
    }

    /// A fresh request id.
    pub fn next_id(&mut self) -> String {
        self.next_request += 1;
        format!("r{}", self.next_request)
    }

    /// Sends `{type, payload, requestId}` and returns the next frame, which
    /// must carry that `requestId`.
    pub async fn request(&mut self, kind: &str, payload: Value) -> Value {
        let id = self.next_id();
        self.send(json!({"type": kind, "payload": payload, "requestId": id}))
            .await;
        let v = self.recv().await;
        assert_eq!(v["requestId"], id.as_str(), "reply to {kind}: {v}");
        v
    }

    /// A request that must succeed with `reply` as its type.
    pub async fn ok(&mut self, kind: &str, payload: Value, reply: &str) -> Value {
        let v = self.request(kind, payload).await;
        assert_eq!(v["type"], reply, "{kind} failed: {v}");
        v
    }

    /// A request that must fail with `code`.
    pub async fn fails(&mut self, kind: &str, payload: Value, code: &str) -> Value {
        let v = self.request(kind, payload).await;
        assert_eq!(v["type"], "ERROR", "{kind} should fail with {code}: {v}");
        assert_eq!(v["payload"]["code"], code, "{kind}: {v}");
        v
    }

    /// Authenticates with a dev-secret token for `user`.
    pub async fn auth(&mut self, user: &str) -> Value {
        let t = token(user);
        self.auth_token(&t).await
    }

    /// Authenticates with `token`; must succeed.
    pub async fn auth_token(&mut self, token: &str) -> Value {
        self.ok("AUTHENTICATE", json!({"token": token}), "AUTH_SUCCESS")
            .await
    }

    /// Joins `room`; returns `ROOM_JOINED`.
    pub async fn join(&mut self, room: &str) -> Value {
        self.ok("JOIN_ROOM", json!({"roomId": room}), "ROOM_JOINED")
            .await
    }

    /// Sends a message to `room` and returns the sender's `NEW_MESSAGE`
    /// acknowledgement.
    pub async fn say(&mut self, room: &str, content: &str) -> Value {
        self.ok(
            "SEND_MESSAGE",
            json!({"roomId": room, "content": content}),
            "NEW_MESSAGE",
        )
        .await
    }
}

// ----- raw HTTP ---------------------------------------------------------

/// Sends `request` verbatim on a fresh TCP connection and returns the
/// response status and the whole response text.
pub async fn raw_http(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("tcp connect");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write request");
    let mut response = Vec::new();
    let read = async {
        let mut buf = [0u8; 8192];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    response.extend_from_slice(&buf[..n]);
                    if response_complete(&response) {
                        break;
                    }
                }
            }
        }
    };
    tokio::time::timeout(TIMEOUT, read)
        .await
        .expect("HTTP response within the timeout");
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = status_of(&text);
    (status, text)
}

fn status_of(text: &str) -> u16 {
    let line = text.lines().next().unwrap_or_default();
    let mut parts = line.split_whitespace();
    assert_eq!(
        parts.next().map(|p| p.starts_with("HTTP/1.")),
        Some(true),
        "not an HTTP response: {text:?}"
    );
    parts
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {line:?}"))
}

/// Whether `response` holds a complete head and (by Content-Length) body.
fn response_complete(response: &[u8]) -> bool {
    let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&response[..end]).to_ascii_lowercase();
    if head.starts_with("http/1.1 101") {
        return true;
    }
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    match length {
        Some(n) => response.len() >= end + 4 + n,
        None => false,
    }
}

/// `GET path` → (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let (status, text) = raw_http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The `/metrics` text.
pub async fn metrics(addr: SocketAddr) -> String {
    let (status, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    body
}

/// The value of the sample `series` (a metric name with its labels exactly
/// as exposed, e.g. `chatflow_errors_total{code="NOT_A_MEMBER"}`).
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

/// Polls `/metrics` until `series` satisfies `ok` (metrics are published
/// by the hub after each batch, just after the replies are queued).
pub async fn wait_metric(addr: SocketAddr, series: &str, ok: impl Fn(f64) -> bool) -> f64 {
    wait_metric_within(addr, series, TIMEOUT, ok).await
}

/// [`wait_metric`] with a deadline of its own.
pub async fn wait_metric_within(
    addr: SocketAddr,
    series: &str,
    within: Duration,
    ok: impl Fn(f64) -> bool,
) -> f64 {
    let deadline = Instant::now() + within;
    loop {
        let text = metrics(addr).await;
        let value = metric(&text, series);
        if let Some(v) = value
            && ok(v)
        {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{series} = {value:?} never satisfied the condition; metrics:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ----- raw WebSocket ----------------------------------------------------

/// Short names for the opcodes (the codec's [`OpCode`]).
pub mod op {
    use chat_flow::frame::OpCode;

    pub const CONTINUATION: OpCode = OpCode::Continuation;
    pub const TEXT: OpCode = OpCode::Text;
    pub const BINARY: OpCode = OpCode::Binary;
    pub const CLOSE: OpCode = OpCode::Close;
    pub const PING: OpCode = OpCode::Ping;
    pub const PONG: OpCode = OpCode::Pong;
}

/// One frame read from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    pub fin: bool,
    pub opcode: OpCode,
    pub payload: Vec<u8>,
}

impl RawFrame {
    /// The close code of a close frame.
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == op::CLOSE && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// A hand-written WebSocket client that writes exactly the frames it is told
/// to (fragments, invalid UTF-8, oversized messages) and never answers pings
/// or closes by itself.
pub struct RawWs {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawWs {
    /// Performs the upgrade by hand; panics unless the answer is 101.
    pub async fn connect(addr: SocketAddr) -> RawWs {
        let stream = TcpStream::connect(addr).await.expect("tcp connect");
        Self::upgrade(stream, addr, &[]).await
    }

    /// [`RawWs::connect`], with `early` (e.g. encoded frames) sent in the
    /// same write as the upgrade request, before its answer.
    pub async fn connect_with_early(addr: SocketAddr, early: &[u8]) -> RawWs {
        let stream = TcpStream::connect(addr).await.expect("tcp connect");
        Self::upgrade(stream, addr, early).await
    }

    async fn upgrade(mut stream: TcpStream, addr: SocketAddr, early: &[u8]) -> RawWs {
        stream.set_nodelay(true).expect("nodelay");
        let request = format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream
            .write_all(&[request.as_bytes(), early].concat())
            .await
            .expect("write upgrade");
        let mut buf = Vec::new();
        let head_end = tokio::time::timeout(TIMEOUT, async {
            let mut chunk = [0u8; 4096];
            loop {
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    return end + 4;
                }
                let n = stream.read(&mut chunk).await.expect("read upgrade");
                assert!(n > 0, "connection closed during the upgrade");
                buf.extend_from_slice(&chunk[..n]);
            }
        })
        .await
        .expect("upgrade response in time");
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
        assert!(
            head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            "wrong Sec-WebSocket-Accept: {head}"
        );
        buf.drain(..head_end);
        RawWs { stream, buf }
    }

    /// [`RawWs::connect`] with a small socket receive buffer, so that a
    /// client that reads slowly backs up into the server quickly.
    pub async fn connect_small_buffer(addr: SocketAddr) -> RawWs {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(16 * 1024).expect("SO_RCVBUF");
        let stream = socket.connect(addr).await.expect("tcp connect");
        Self::upgrade(stream, addr, &[]).await
    }

    /// Writes one masked frame.
    pub async fn write_frame(&mut self, fin: bool, opcode: OpCode, payload: &[u8]) {
        let bytes = encode_frame(fin, opcode, payload);
        self.stream.write_all(&bytes).await.expect("write frame");
    }

    /// Writes one masked frame, tolerating a connection the server already
    /// closed (returns whether the write succeeded).
    pub async fn try_write_frame(&mut self, fin: bool, opcode: OpCode, payload: &[u8]) -> bool {
        let bytes = encode_frame(fin, opcode, payload);
        self.stream.write_all(&bytes).await.is_ok()
    }

    /// Writes bytes as they are (e.g. several encoded frames), tolerating a
    /// connection the server already closed (returns whether it worked).
    pub async fn try_write_frame_bytes(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).await.is_ok()
    }

    /// A text message in one frame.
    pub async fn text(&mut self, text: &str) {
        self.write_frame(true, op::TEXT, text.as_bytes()).await;
    }

    /// The next frame within `within`: `Ok(None)` on EOF or reset,
    /// `Err(())` on timeout.
    pub async fn read_frame_within(&mut self, within: Duration) -> Result<Option<RawFrame>, ()> {
        let deadline = Instant::now() + within;
        loop {
            if let Some((frame, used)) = decode_frame(&self.buf) {
                self.buf.drain(..used);
                return Ok(Some(frame));
            }
            let mut chunk = [0u8; 65536];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return Err(()),
                Ok(Ok(0)) | Ok(Err(_)) => return Ok(None),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The next frame; `None` on EOF. Panics on timeout.
    pub async fn read_frame(&mut self) -> Option<RawFrame> {
        self.read_frame_within(TIMEOUT)
            .await
            .expect("a frame (or EOF) within the timeout")
    }

    /// The next text frame decoded as JSON, skipping pings; panics on
    /// anything else.
    pub async fn recv(&mut self) -> Value {
        loop {
            let frame = self.read_frame().await.expect("a frame, not EOF");
            match frame.opcode {
                op::PING => continue,
                op::TEXT => {
                    assert!(frame.fin, "server fragments its frames");
                    return serde_json::from_slice(&frame.payload).expect("JSON");
                }
                _ => panic!("expected a text frame, got {frame:?}"),
            }
        }
    }

    /// Reads (skipping pings) until a close frame; returns its code. Panics
    /// if a text frame, EOF or a timeout comes first.
    pub async fn expect_close(&mut self) -> Option<u16> {
        loop {
            let frame = self.read_frame().await.expect("a close frame, not EOF");
            match frame.opcode {
                op::PING | op::PONG => continue,
                op::CLOSE => return frame.close_code(),
                _ => panic!("expected a close frame, got {frame:?}"),
            }
        }
    }
}

/// The masking key of every frame the raw client writes (RFC 6455 5.7's).
pub const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Encodes a client frame (always masked).
pub fn encode_frame(fin: bool, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + frame::MAX_HEAD_LEN);
    frame::put_frame(&mut out, fin, opcode, Some(MASK), payload);
    out
}

/// Decodes one server frame (never masked) from the front of `buf`.
fn decode_frame(buf: &[u8]) -> Option<(RawFrame, usize)> {
    let (head, payload) =
        frame::parse_frame(buf, usize::MAX).expect("a well-formed server frame")?;
    assert_eq!(head.mask, None, "server frames must not be masked");
    let frame = RawFrame {
        fin: head.fin,
        opcode: head.opcode,
        payload: payload.to_vec(),
    };
    Some((frame, head.head_len + head.len))
}

/// Retries an upgrade while it is refused with 503 (a slot frees once the
/// server has noticed a disconnect), up to [`TIMEOUT`].
pub async fn connect_when_slot_frees(addr: SocketAddr) -> Client {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match Client::try_connect(addr, &[]).await {
            Ok(c) => return c,
            Err(ConnectError::Status(503)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("no slot freed: {e:?}"),
        }
    }
}

/// Polls `f` until it returns true (every 20 ms, up to [`TIMEOUT`]).
pub async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + TIMEOUT;
    while !f().await {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ----- flooding a room ---------------------------------------------------

/// Reads frames until the acknowledgement carrying `request_id`; returns
/// whether a `USER_LEFT` for `watch` was seen on the way.
pub async fn read_until_ack(c: &mut Client, request_id: &str, watch: &str) -> bool {
    let mut left = false;
    loop {
        let v = c.recv().await;
        match v["type"].as_str() {
            Some("NEW_MESSAGE") if v["requestId"] == request_id => return left,
            Some("USER_LEFT") if v["payload"]["userId"] == watch => left = true,
            Some("NEW_MESSAGE" | "USER_JOINED" | "USER_LEFT") => {}
            _ => panic!("unexpected frame while flooding: {v}"),
        }
    }
}

/// The flooder sends messages of `chars` characters to `general`, each
/// acknowledged in time (`recv` fails the test if one takes over 5 s),
/// until `slow`'s `USER_LEFT` shows that it was closed. Returns how many
/// messages were sent.
pub async fn flood_until_gone(flooder: &mut Client, slow: &str, chars: usize) -> u64 {
    const MAX_MESSAGES: u64 = 1_000;
    let content = "x".repeat(chars);
    let mut sent = 0;
    while sent < MAX_MESSAGES {
        sent += 1;
        let id = format!("f{sent}");
        flooder
            .send(json!({"type": "SEND_MESSAGE", "payload": {"roomId": "general", "content": content}, "requestId": id}))
            .await;
        if read_until_ack(flooder, &id, slow).await {
            return sent;
        }
    }
    panic!("the slow consumer was never closed after {sent} messages of {chars} bytes");
}

// ----- captured logs ----------------------------------------------------

/// What the JSON subscriber of this test binary wrote (see [`logs`]).
#[derive(Clone, Default)]
pub struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Every line written so far, parsed.
    pub fn lines(&self) -> Vec<Value> {
        let bytes = self.0.lock().expect("log buffer").clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

/// Installs (once per test binary) a JSON subscriber at info that writes to
/// memory, with each line's current span, as an operator's log pipeline
/// would get it; returns what it captured.
pub fn logs() -> &'static Captured {
    static LOGS: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Captured::default();
        let writer = logs.clone();
        tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || writer.clone())
            .init();
        logs
    })
}
