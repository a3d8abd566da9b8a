//! Hand-written WebSocket clients: a slow consumer that stops reading its
//! socket and a lurker that never authenticates (both misbehave on purpose),
//! and room owners, who create rooms and go (the library client does not
//! create rooms). They speak just enough RFC 6455 to upgrade and send masked
//! text frames; everything they receive is recorded by the tap.

use std::time::Duration;

use base64::Engine as _;
use chat_flow::frame::{self, OpCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::obs::Recorder;
use crate::rng::SimRng;
use crate::scenario::RawSpec;
use crate::tap::{ConnCounter, TapIo, dial};

/// Everything a raw client needs.
pub struct RawCtx {
    /// Its client number.
    pub client: u32,
    /// What it does.
    pub spec: RawSpec,
    /// Where observations go.
    pub rec: Recorder,
    /// Connection numbering.
    pub conns: ConnCounter,
    /// Mints a token for a user (at the current simulated time), valid for
    /// so many seconds, with this `rooms` claim.
    pub mint: fn(&str, u64, &[String]) -> String,
    /// Its own random numbers (WebSocket key, masks).
    pub rng: SimRng,
    /// Simulated time at which it must be done.
    pub end_ms: u64,
}

fn sim_now_ms() -> u64 {
    turmoil::sim_elapsed().map_or(0, |d| d.as_millis() as u64)
}

/// Sleeps until simulated time `at_ms`.
pub async fn sleep_until_ms(at_ms: u64) {
    let now = sim_now_ms();
    if at_ms > now {
        tokio::time::sleep(Duration::from_millis(at_ms - now)).await;
    }
}

/// A masked text frame.
fn text_frame(rng: &mut SimRng, text: &str) -> Vec<u8> {
    masked_frame(rng, OpCode::Text, text.as_bytes())
}

/// A final frame masked with a key drawn from the client's random numbers.
fn masked_frame(rng: &mut SimRng, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mask = (rng.next_u64() as u32).to_be_bytes();
    let mut out = Vec::with_capacity(frame::MAX_HEAD_LEN + payload.len());
    frame::put_frame(&mut out, true, opcode, Some(mask), payload);
    out
}

/// Opens a connection and performs the upgrade; `None` if that failed.
async fn connect(ctx: &mut RawCtx) -> Option<TapIo> {
    let mut io = dial(ctx.client, &ctx.rec, &ctx.conns).await.ok()?;
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&ctx.rng.next_u64().to_le_bytes());
    key[8..].copy_from_slice(&ctx.rng.next_u64().to_le_bytes());
    let key = base64::engine::general_purpose::STANDARD.encode(key);
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: server:3001\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    io.write_all(request.as_bytes()).await.ok()?;
    // Read the response head byte by byte, so that no frame after it is
    // consumed here (the tap records frames as they are read anyway).
    let mut head = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        match tokio::time::timeout_at(deadline, io.read(&mut b)).await {
            Ok(Ok(1)) => head.push(b[0]),
            _ => return None,
        }
    }
    head.starts_with(b"HTTP/1.1 101").then_some(io)
}

/// Reads (and discards: the tap records) until `until_ms` or the end of the
/// stream. Returns false when the stream ended.
async fn drain_until(io: &mut TapIo, until_ms: u64) -> bool {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let now = sim_now_ms();
        if now >= until_ms {
            return true;
        }
        let wait = Duration::from_millis(until_ms - now);
        match tokio::time::timeout(wait, io.read(&mut buf)).await {
            Err(_) => return true,
            Ok(Ok(0)) | Ok(Err(_)) => return false,
            Ok(Ok(_)) => {}
        }
    }
}

/// Runs one raw client to the end of the simulation.
pub async fn run(mut ctx: RawCtx) -> turmoil::Result {
    match ctx.spec.clone() {
        RawSpec::Lurker { start_ms } => {
            sleep_until_ms(start_ms).await;
            if let Some(mut io) = connect(&mut ctx).await {
                drain_until(&mut io, ctx.end_ms).await;
            }
        }
        RawSpec::SlowReader {
            user,
            room,
            start_ms,
            stall_after_ms,
            stall_ms,
        } => {
            sleep_until_ms(start_ms).await;
            let Some(mut io) = connect(&mut ctx).await else {
                sleep_until_ms(ctx.end_ms).await;
                return Ok(());
            };
            let token = (ctx.mint)(&user, 3_600, &[]);
            let auth = format!(
                r#"{{"type":"AUTHENTICATE","payload":{{"token":"{token}"}},"requestId":"auth"}}"#
            );
            let join = format!(
                r#"{{"type":"JOIN_ROOM","payload":{{"roomId":"{room}"}},"requestId":"j:{room}"}}"#
            );
            let mut out = text_frame(&mut ctx.rng, &auth);
            out.extend(text_frame(&mut ctx.rng, &join));
            if io.write_all(&out).await.is_err() {
                return Ok(());
            }
            let stall_at = sim_now_ms() + stall_after_ms;
            if !drain_until(&mut io, stall_at).await {
                return Ok(());
            }
            // Stop reading. Keep asking for history (each answer is a frame
            // for the outbound queue) and keep pinging (so that the server
            // does not drop us as idle).
            let history = format!(
                r#"{{"type":"GET_HISTORY","payload":{{"roomId":"{room}","limit":100}},"requestId":"h:{room}"}}"#
            );
            let resume_at = stall_at + stall_ms;
            while sim_now_ms() < resume_at.min(ctx.end_ms) {
                let mut out = text_frame(&mut ctx.rng, &history);
                out.extend(masked_frame(&mut ctx.rng, OpCode::Ping, b""));
                let write = tokio::time::timeout(Duration::from_millis(500), io.write_all(&out));
                if !matches!(write.await, Ok(Ok(()))) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            drain_until(&mut io, ctx.end_ms).await;
        }
        RawSpec::Owner {
            user,
            claim,
            rooms,
            squat,
            visits,
        } => {
            for (n, (start, stay)) in visits.into_iter().enumerate() {
                sleep_until_ms(start).await;
                let Some(mut io) = connect(&mut ctx).await else {
                    continue;
                };
                let token = (ctx.mint)(&user, 3_600, &claim);
                let mut requests = vec![
                    request("AUTHENTICATE", &format!(r#"{{"token":"{token}"}}"#), "auth"),
                    request(
                        "CREATE_ROOM",
                        &format!(r#"{{"name":"{squat}","id":"{squat}","type":"private"}}"#),
                        &format!("c:{squat}"),
                    ),
                ];
                for (id, private) in &rooms {
                    let kind = if *private { "private" } else { "public" };
                    requests.push(request(
                        "CREATE_ROOM",
                        &format!(r#"{{"name":"{id}","id":"{id}","type":"{kind}"}}"#),
                        &format!("c:{id}"),
                    ));
                    // Joins it whether it was created now or existed.
                    requests.push(request(
                        "JOIN_ROOM",
                        &format!(r#"{{"roomId":"{id}"}}"#),
                        &format!("j:{id}"),
                    ));
                    requests.push(request(
                        "SEND_MESSAGE",
                        &format!(r#"{{"roomId":"{id}","content":"{user} visit {n}"}}"#),
                        &format!("s:{id}-{n}"),
                    ));
                }
                // What it can see now, and a heartbeat: the rooms it is
                // in must be listed; PONG answers PING.
                requests.push(request("LIST_ROOMS", "{}", &format!("list-{n}")));
                requests.push(request("PING", "{}", &format!("ping-{n}")));
                let mut out = Vec::new();
                for text in &requests {
                    out.extend(text_frame(&mut ctx.rng, text));
                }
                if io.write_all(&out).await.is_err() {
                    continue;
                }
                // Then it goes: the TCP connection simply ends.
                drain_until(&mut io, (start + stay).min(ctx.end_ms)).await;
            }
        }
    }
    sleep_until_ms(ctx.end_ms).await;
    Ok(())
}

/// One request as JSON text.
fn request(kind: &str, payload: &str, request_id: &str) -> String {
    format!(r#"{{"type":"{kind}","payload":{payload},"requestId":"{request_id}"}}"#)
}
