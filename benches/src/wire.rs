//! The frames the load generator writes, and cheap scans of those it reads.
//!
//! A load-generator message's `content` starts with a marker carrying the
//! moment it was sent (nanoseconds on the load generator's monotonic clock),
//! the sender's number and the sender's message counter:
//! `lg <t_ns> <sender> <n> xxxx…`. A receiver finds `"seq":` and that marker
//! by substring search; it never parses JSON on the delivery path, so the
//! load generator stays cheap next to the server it measures.

use chat_flow::frame::{self, OpCode};
use memchr::memmem;

/// The prefix of every `NEW_MESSAGE` frame (the server writes `type` first).
pub const NEW_MESSAGE_PREFIX: &[u8] = br#"{"type":"NEW_MESSAGE""#;
/// The prefix of every `SEND_MESSAGE` the load generator writes.
pub const SEND_MESSAGE_PREFIX: &[u8] = br#"{"type":"SEND_MESSAGE""#;
/// Marks a load-generator `content`.
pub const CONTENT_MARKER: &[u8] = br#""content":"lg "#;
const SEQ_KEY: &[u8] = br#""seq":"#;

/// What a receiver reads from a load-generator `NEW_MESSAGE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// The room's `seq`.
    pub seq: u64,
    /// When it was sent (ns on the load generator's clock).
    pub sent_ns: u64,
    /// Which sender.
    pub sender: u64,
    /// The sender's counter.
    pub n: u64,
}

/// Reads a `NEW_MESSAGE` written by a load generator; `None` for any other frame.
pub fn scan_delivery(frame: &[u8]) -> Option<Delivery> {
    if !frame.starts_with(NEW_MESSAGE_PREFIX) {
        return None;
    }
    let seq_at = memmem::find(frame, SEQ_KEY)? + SEQ_KEY.len();
    let (seq, _) = read_u64(&frame[seq_at..])?;
    let c = memmem::find(&frame[seq_at..], CONTENT_MARKER)? + seq_at + CONTENT_MARKER.len();
    let (sent_ns, used) = read_u64(&frame[c..])?;
    let rest = &frame[c + used + 1..];
    let (sender, used) = read_u64(rest)?;
    let (n, _) = read_u64(&rest[used + 1..])?;
    Some(Delivery {
        seq,
        sent_ns,
        sender,
        n,
    })
}

/// The decimal number at the start of `s`, and how many bytes it took.
fn read_u64(s: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    let mut i = 0;
    while i < s.len() && s[i].is_ascii_digit() {
        v = v.checked_mul(10)?.checked_add(u64::from(s[i] - b'0'))?;
        i += 1;
    }
    (i > 0).then_some((v, i))
}

/// The `type` of a server frame (`{"type":"X",…` → `X`).
pub fn frame_type(frame: &[u8]) -> &[u8] {
    let Some(rest) = frame.strip_prefix(br#"{"type":""#) else {
        return b"";
    };
    match memchr::memchr(b'"', rest) {
        Some(end) => &rest[..end],
        None => b"",
    }
}

/// The largest `seq` in a frame (`ROOM_JOINED` lists history oldest first,
/// so this is the room's last `seq` at join time); 0 when there is none.
/// `"seq":` cannot occur inside a JSON string (its quotes would be escaped).
pub fn last_seq(frame: &[u8]) -> u64 {
    memmem::rfind(frame, SEQ_KEY)
        .and_then(|at| read_u64(&frame[at + SEQ_KEY.len()..]))
        .map_or(0, |(v, _)| v)
}

/// An error frame's `code`, for reporting.
pub fn error_code(frame: &[u8]) -> String {
    const KEY: &[u8] = br#""code":""#;
    memmem::find(frame, KEY)
        .and_then(|at| {
            let rest = &frame[at + KEY.len()..];
            memchr::memchr(b'"', rest).map(|end| String::from_utf8_lossy(&rest[..end]).into_owned())
        })
        .unwrap_or_default()
}

/// Writes a `SEND_MESSAGE` of about `frame_bytes` bytes (at least what the
/// marker needs) into `out`, replacing its contents.
pub fn send_message(
    out: &mut Vec<u8>,
    room: &str,
    sent_ns: u64,
    sender: u64,
    n: u64,
    frame_bytes: usize,
) {
    use std::io::Write;
    out.clear();
    out.extend_from_slice(SEND_MESSAGE_PREFIX);
    out.extend_from_slice(br#","payload":{"roomId":""#);
    out.extend_from_slice(room.as_bytes());
    out.extend_from_slice(CONTENT_MARKER_AFTER_ROOM);
    write!(out, "{sent_ns} {sender} {n} ").expect("writing to a Vec cannot fail");
    let tail_len = br#""},"requestId":"m"#.len() + digits(n) + 2;
    let pad = frame_bytes.saturating_sub(out.len() + tail_len);
    out.resize(out.len() + pad, b'x');
    write!(out, r#""}},"requestId":"m{n}"}}"#).expect("writing to a Vec cannot fail");
}

const CONTENT_MARKER_AFTER_ROOM: &[u8] = br#"","content":"lg "#;

fn digits(mut n: u64) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

/// A complete server-to-client WebSocket text frame (unmasked, FIN) holding
/// `payload`: what the floor server writes in one `write`.
pub fn server_text_frame(payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(frame::MAX_HEAD_LEN + payload.len());
    frame::put_frame(&mut f, true, OpCode::Text, None, payload);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_message_has_the_requested_size_and_round_trips() {
        let mut out = Vec::new();
        send_message(&mut out, "lg-3", 123_456_789, 7, 42, 200);
        assert_eq!(out.len(), 200, "{}", String::from_utf8_lossy(&out));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["type"], "SEND_MESSAGE");
        assert_eq!(v["payload"]["roomId"], "lg-3");
        assert_eq!(v["requestId"], "m42");
        let content = v["payload"]["content"].as_str().unwrap();
        assert!(content.starts_with("lg 123456789 7 42 x"));
        // A frame as the server would broadcast it.
        let frame = format!(
            r#"{{"type":"NEW_MESSAGE","payload":{{"id":"msg_1","seq":17,"roomId":"lg-3","userId":"u","username":"u","content":{},"type":"text","timestamp":"t"}},"requestId":"m42"}}"#,
            serde_json::to_string(content).unwrap()
        );
        assert_eq!(
            scan_delivery(frame.as_bytes()),
            Some(Delivery {
                seq: 17,
                sent_ns: 123_456_789,
                sender: 7,
                n: 42
            })
        );
        assert_eq!(frame_type(frame.as_bytes()), b"NEW_MESSAGE");
        assert_eq!(last_seq(frame.as_bytes()), 17);
        assert_eq!(scan_delivery(br#"{"type":"PONG","payload":{}}"#), None);
    }

    #[test]
    fn small_sizes_still_carry_the_marker() {
        let mut out = Vec::new();
        send_message(&mut out, "r", 1, 2, 3, 0);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert!(
            v["payload"]["content"]
                .as_str()
                .unwrap()
                .starts_with("lg 1 2 3 ")
        );
    }

    #[test]
    fn frame_headers() {
        assert_eq!(&server_text_frame(b"hi")[..2], &[0x81, 2]);
        let f = server_text_frame(&[b'a'; 300]);
        assert_eq!(&f[..4], &[0x81, 126, 1, 44]);
        assert_eq!(f.len(), 304);
        assert_eq!(
            error_code(br#"{"type":"ERROR","payload":{"code":"NOT_A_MEMBER","message":"x"}}"#),
            "NOT_A_MEMBER"
        );
    }
}
