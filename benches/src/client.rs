//! The load generator's client: a WebSocket over loopback TCP (fastwebsockets,
//! client role, so every frame it sends is masked), set up with a hand-written
//! HTTP/1.1 upgrade, and the request/reply steps of the contract it needs.

use std::io;
use std::net::SocketAddr;

use fastwebsockets::{Frame, OpCode, Payload, Role, WebSocket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::wire;

/// A client WebSocket.
pub type Ws = WebSocket<TcpStream>;

/// Why a connection could not be set up.
#[derive(Debug)]
pub enum SetupError {
    /// TCP or WebSocket failure.
    Io(String),
    /// The server answered with something else than expected.
    Refused(String),
}

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SetupError::Io(e) => write!(f, "io: {e}"),
            SetupError::Refused(e) => write!(f, "refused: {e}"),
        }
    }
}

impl From<io::Error> for SetupError {
    fn from(e: io::Error) -> Self {
        SetupError::Io(e.to_string())
    }
}

impl From<fastwebsockets::WebSocketError> for SetupError {
    fn from(e: fastwebsockets::WebSocketError) -> Self {
        SetupError::Io(e.to_string())
    }
}

/// Refuses anything but a loopback address: the load generator only ever
/// targets this machine.
pub fn check_loopback(addr: SocketAddr) -> Result<(), String> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(format!(
            "{addr} is not a loopback address; the load generator only targets 127.0.0.0/8 or ::1"
        ))
    }
}

/// Connects and upgrades `GET /ws`.
pub async fn connect(addr: SocketAddr) -> Result<Ws, SetupError> {
    check_loopback(addr).map_err(SetupError::Refused)?;
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    // The server sends nothing after its 101 until the client speaks, so
    // reading up to the end of the head never swallows a frame.
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 512];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(SetupError::Io("closed during the upgrade".into()));
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = memchr::memmem::find(&head, b"\r\n\r\n") {
            if end + 4 != head.len() {
                return Err(SetupError::Refused(
                    "data after the upgrade response".into(),
                ));
            }
            break;
        }
        if head.len() > 16 * 1024 {
            return Err(SetupError::Refused("upgrade response too long".into()));
        }
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
        return Err(SetupError::Refused(
            String::from_utf8_lossy(line).into_owned(),
        ));
    }
    let mut ws = WebSocket::after_handshake(stream, Role::Client);
    ws.set_writev(false);
    Ok(ws)
}

/// Sends one text frame (masked by fastwebsockets).
pub async fn send_text(ws: &mut Ws, text: &[u8]) -> Result<(), SetupError> {
    // `to_mut` on a borrowed payload would copy it anyway; give an owned one.
    ws.write_frame(Frame::text(Payload::Owned(text.to_vec())))
        .await?;
    Ok(())
}

/// Reads text frames until one of type `want` (returned), failing on an
/// `ERROR` (unless its code is in `ok_errors`, then returned), a close or EOF.
/// Frames of other types (broadcasts) are skipped.
pub async fn expect(ws: &mut Ws, want: &[u8], ok_errors: &[&str]) -> Result<Vec<u8>, SetupError> {
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Text => {
                let t = wire::frame_type(&frame.payload);
                if t == want {
                    return Ok(frame.payload.to_vec());
                }
                if t == b"ERROR" {
                    let code = wire::error_code(&frame.payload);
                    if ok_errors.contains(&code.as_str()) {
                        return Ok(frame.payload.to_vec());
                    }
                    return Err(SetupError::Refused(format!(
                        "ERROR {code} while waiting for {}",
                        String::from_utf8_lossy(want)
                    )));
                }
            }
            OpCode::Close => {
                let code = close_code(&frame.payload);
                return Err(SetupError::Refused(format!("closed with {code}")));
            }
            _ => {}
        }
    }
}

/// The code of a close frame's payload (1005 when it has none).
pub fn close_code(payload: &[u8]) -> u16 {
    if payload.len() >= 2 {
        u16::from_be_bytes([payload[0], payload[1]])
    } else {
        1005
    }
}

/// A request with `type` first (the floor server reads it by prefix).
pub fn request(kind: &str, payload_json: &str, request_id: &str) -> String {
    format!(r#"{{"type":"{kind}","payload":{payload_json},"requestId":"{request_id}"}}"#)
}

/// `s` as a JSON string literal.
pub fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string always serializes")
}

/// `AUTHENTICATE`, then waits for `AUTH_SUCCESS`.
pub async fn authenticate(ws: &mut Ws, token: &str) -> Result<(), SetupError> {
    let msg = request(
        "AUTHENTICATE",
        &format!(r#"{{"token":{}}}"#, json_str(token)),
        "a",
    );
    send_text(ws, msg.as_bytes()).await?;
    expect(ws, b"AUTH_SUCCESS", &[]).await.map(drop)
}

/// `JOIN_ROOM`, then waits for `ROOM_JOINED`; returns the room's last `seq`.
pub async fn join(ws: &mut Ws, room: &str) -> Result<u64, SetupError> {
    let msg = request(
        "JOIN_ROOM",
        &format!(r#"{{"roomId":{}}}"#, json_str(room)),
        "j",
    );
    send_text(ws, msg.as_bytes()).await?;
    let reply = expect(ws, b"ROOM_JOINED", &[]).await?;
    Ok(wire::last_seq(&reply))
}

/// `CREATE_ROOM` with a chosen id (an existing room is fine), then
/// `LEAVE_ROOM` so that the creating connection receives nothing.
pub async fn create_room(ws: &mut Ws, room: &str) -> Result<(), SetupError> {
    let r = json_str(room);
    let msg = request("CREATE_ROOM", &format!(r#"{{"id":{r},"name":{r}}}"#), "c");
    send_text(ws, msg.as_bytes()).await?;
    let reply = expect(ws, b"ROOM_CREATED", &["ROOM_EXISTS"]).await?;
    if wire::frame_type(&reply) == b"ROOM_CREATED" {
        let msg = request("LEAVE_ROOM", &format!(r#"{{"roomId":{r}}}"#), "l");
        send_text(ws, msg.as_bytes()).await?;
        expect(ws, b"ROOM_LEFT", &[]).await?;
    }
    Ok(())
}
