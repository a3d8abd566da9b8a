//! The WebSocket frame format (RFC 6455 5.2), written once: the server's
//! reader parses headers with it, and the tests, the simulation and the load
//! generator write and read their hand-made frames with it.
//!
//! ```text
//! byte 0:  FIN, three reserved bits, a 4-bit opcode
//! byte 1:  MASK, a 7-bit length: 0-125, or 126 (a 16-bit length follows)
//!          or 127 (a 64-bit length follows, top bit clear)
//! then:    the masking key (4 bytes) if MASK is set, then the payload
//! ```
//!
//! Clients mask every frame; servers mask none. Opcodes are fastwebsockets'
//! [`OpCode`] (re-exported here), the type the server's reader and writer
//! already speak, so that the codec adds no second name for the same six
//! values; a test that needs an opcode no [`OpCode`] has writes a valid frame
//! and then changes its first byte.

pub use fastwebsockets::OpCode;

/// The longest frame header: 2 bytes, a 64-bit length, a masking key.
pub const MAX_HEAD_LEN: usize = 14;

/// A frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// The final fragment of its message.
    pub fin: bool,
    /// What the frame is.
    pub opcode: OpCode,
    /// The masking key, if the frame had one.
    pub mask: Option<[u8; 4]>,
    /// Payload length.
    pub len: usize,
    /// Header length: 2 to 14 bytes.
    pub head_len: usize,
}

/// Why no frame could be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The socket ended or failed (a reader's error: parsing never returns
    /// it).
    Gone,
    /// A frame longer than the limit.
    TooBig,
    /// A malformed header (the close reason).
    Protocol(&'static str),
}

/// Parses the frame header at the start of `bytes`; `Ok(None)` until all of
/// it is there. A data frame longer than `max_payload` is
/// [`FrameError::TooBig`]; control frames are bounded by their own 125 bytes.
pub fn parse_head(bytes: &[u8], max_payload: usize) -> Result<Option<Head>, FrameError> {
    let [b0, b1, ..] = *bytes else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(FrameError::Protocol("reserved bits set"));
    }
    let opcode = OpCode::try_from(b0 & 0x0f).map_err(|_| FrameError::Protocol("unknown opcode"))?;
    let fin = b0 & 0x80 != 0;
    let masked = b1 & 0x80 != 0;
    let code = b1 & 0x7f;
    let ext = match code {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let control = matches!(opcode, OpCode::Close | OpCode::Ping | OpCode::Pong);
    if control {
        if !fin {
            return Err(FrameError::Protocol("fragmented control frame"));
        }
        if code > 125 {
            return Err(FrameError::Protocol("control frame too long"));
        }
    }
    let Some(length) = bytes.get(..2 + ext) else {
        return Ok(None);
    };
    let len = match *length {
        [_, _, a, b] => u64::from(u16::from_be_bytes([a, b])),
        [_, _, a, b, c, d, e, f, g, h] => u64::from_be_bytes([a, b, c, d, e, f, g, h]),
        _ => u64::from(code),
    };
    if len >> 63 != 0 {
        return Err(FrameError::Protocol("invalid frame length"));
    }
    // Refused before the rest of the header, let alone the payload, is read.
    // (A control frame is not part of a message: 125 bytes bound it.)
    let len = match usize::try_from(len) {
        Ok(len) if control || len <= max_payload => len,
        _ => return Err(FrameError::TooBig),
    };
    let head_len = 2 + ext + if masked { 4 } else { 0 };
    let Some(head) = bytes.get(..head_len) else {
        return Ok(None);
    };
    let mask = match *head {
        [.., a, b, c, d] if masked => Some([a, b, c, d]),
        _ => None,
    };
    Ok(Some(Head {
        fin,
        opcode,
        mask,
        len,
        head_len,
    }))
}

/// The whole frame at the start of `bytes`: its header and its payload
/// (still masked if the frame was), `Ok(None)` until all of it is there.
/// Errors are [`parse_head`]'s.
pub fn parse_frame(bytes: &[u8], max_payload: usize) -> Result<Option<(Head, &[u8])>, FrameError> {
    let Some(head) = parse_head(bytes, max_payload)? else {
        return Ok(None);
    };
    let payload = bytes
        .get(head.head_len..)
        .and_then(|rest| rest.get(..head.len));
    Ok(payload.map(|payload| (head, payload)))
}

/// How long the header of a frame of `len` payload bytes is: 2, 4 or 10
/// bytes, and 4 more for a masking key.
pub const fn head_len(len: usize, masked: bool) -> usize {
    let length = if len < 126 {
        2
    } else if len <= u16::MAX as usize {
        4
    } else {
        10
    };
    if masked { length + 4 } else { length }
}

/// Writes the header of a frame of `len` payload bytes at the start of
/// `out` and returns how long it is (see [`head_len`]). The shortest length
/// encoding is used, as RFC 6455 5.2 asks.
#[inline]
pub fn encode_head(
    out: &mut [u8; MAX_HEAD_LEN],
    fin: bool,
    opcode: OpCode,
    mask: Option<[u8; 4]>,
    len: usize,
) -> usize {
    out[0] = (u8::from(fin) << 7) | opcode as u8;
    let masked = if mask.is_some() { 0x80 } else { 0 };
    let at = if len < 126 {
        out[1] = masked | len as u8;
        2
    } else if len <= usize::from(u16::MAX) {
        out[1] = masked | 126;
        out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        out[1] = masked | 127;
        out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    match mask {
        Some(key) => {
            out[at..at + 4].copy_from_slice(&key);
            at + 4
        }
        None => at,
    }
}

/// Appends the header of a frame of `len` payload bytes to `buf`, with the
/// masking key `mask` (a client's frame) or none (a server's). Formatted on
/// the stack and appended in one copy: no allocation beyond `buf`'s growth.
#[inline]
pub fn put_head(buf: &mut Vec<u8>, fin: bool, opcode: OpCode, mask: Option<[u8; 4]>, len: usize) {
    let mut head = [0; MAX_HEAD_LEN];
    let n = encode_head(&mut head, fin, opcode, mask, len);
    buf.extend_from_slice(&head[..n]);
}

/// Appends a whole frame to `buf`: its header, then `payload`, masked with
/// `mask` if there is one.
pub fn put_frame(
    buf: &mut Vec<u8>,
    fin: bool,
    opcode: OpCode,
    mask: Option<[u8; 4]>,
    payload: &[u8],
) {
    put_head(buf, fin, opcode, mask, payload.len());
    let start = buf.len();
    buf.extend_from_slice(payload);
    if let Some(key) = mask {
        unmask(&mut buf[start..], key);
    }
}

/// Unmasks a payload read with masking key `mask` in place (RFC 6455 5.3);
/// the same XOR masks one.
#[inline]
pub fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    fastwebsockets::unmask(payload, mask);
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPCODES: [OpCode; 6] = [
        OpCode::Continuation,
        OpCode::Text,
        OpCode::Binary,
        OpCode::Close,
        OpCode::Ping,
        OpCode::Pong,
    ];

    const LENGTHS: [usize; 8] = [0, 1, 125, 126, 127, 65_535, 65_536, 70_000];

    #[test]
    fn headers_are_checked() {
        let max = 1000;
        assert_eq!(parse_head(&[0x81], max), Ok(None));
        // Masked, 2 bytes of the 4-byte key so far.
        assert_eq!(parse_head(&[0x81, 0x85, 1, 2], max), Ok(None));
        let head = parse_head(&[0x81, 0x85, 1, 2, 3, 4], max).unwrap().unwrap();
        assert_eq!(
            head,
            Head {
                fin: true,
                opcode: OpCode::Text,
                mask: Some([1, 2, 3, 4]),
                len: 5,
                head_len: 6
            }
        );
        let bad = |bytes: &[u8]| parse_head(bytes, max).unwrap_err();
        assert_eq!(
            bad(&[0xc1, 0x80]),
            FrameError::Protocol("reserved bits set")
        );
        assert_eq!(bad(&[0x83, 0x80]), FrameError::Protocol("unknown opcode"));
        assert_eq!(
            bad(&[0x09, 0x80]),
            FrameError::Protocol("fragmented control frame")
        );
        assert_eq!(
            bad(&[0x89, 0xfe, 0, 126]),
            FrameError::Protocol("control frame too long")
        );
        let mut huge = vec![0x82, 0xff];
        huge.extend_from_slice(&(1u64 << 63).to_be_bytes());
        assert_eq!(bad(&huge), FrameError::Protocol("invalid frame length"));
        assert_eq!(bad(&[0x82, 0xfe, 0x03, 0xe9]), FrameError::TooBig);
        assert!(parse_head(&[0x82, 0xfe, 0x03, 0xe8, 0, 0, 0, 0], max).is_ok());
        // A ping between fragments is not held to what is left of the message.
        assert_eq!(
            parse_head(&[0x89, 0x0a], 0).map(|h| h.map(|h| h.len)),
            Ok(Some(10))
        );
    }

    #[test]
    fn frames_are_laid_out_as_a_server_sends_them() {
        // The bytes the server's writer has always produced for these frames.
        let mut buf = Vec::new();
        put_frame(&mut buf, true, OpCode::Text, None, b"hi");
        put_frame(&mut buf, true, OpCode::Ping, None, &[]);
        let mut close = 1013u16.to_be_bytes().to_vec();
        close.extend_from_slice(b"slow");
        put_frame(&mut buf, true, OpCode::Close, None, &close);
        let long = vec![b'x'; 300];
        put_frame(&mut buf, true, OpCode::Text, None, &long);
        let mut expected = vec![0x81, 2, b'h', b'i', 0x89, 0, 0x88, 6, 0x03, 0xf5];
        expected.extend_from_slice(b"slow");
        expected.extend_from_slice(&[0x81, 126, 0x01, 0x2c]);
        expected.extend_from_slice(&long);
        assert_eq!(buf, expected);
    }

    #[test]
    fn the_examples_of_rfc_6455_are_laid_out_exactly() {
        // RFC 6455 5.7.
        let mut buf = Vec::new();
        put_frame(&mut buf, true, OpCode::Text, None, b"Hello");
        assert_eq!(buf, [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        buf.clear();
        put_frame(
            &mut buf,
            true,
            OpCode::Text,
            Some([0x37, 0xfa, 0x21, 0x3d]),
            b"Hello",
        );
        assert_eq!(
            buf,
            [
                0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58
            ]
        );
        buf.clear();
        put_frame(&mut buf, false, OpCode::Text, None, b"Hel");
        put_frame(&mut buf, true, OpCode::Continuation, None, b"lo");
        assert_eq!(buf, [0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f]);
        buf.clear();
        put_head(&mut buf, true, OpCode::Binary, None, 256);
        assert_eq!(buf, [0x82, 0x7e, 0x01, 0x00]);
        buf.clear();
        put_head(&mut buf, true, OpCode::Binary, None, 65_536);
        assert_eq!(buf, [0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0]);
    }

    #[test]
    fn headers_are_what_fastwebsockets_writes() {
        // The server's writer formatted headers with fastwebsockets until
        // this codec: the bytes must not change.
        for len in LENGTHS {
            let payload = vec![7; len];
            for opcode in OPCODES {
                for fin in [true, false] {
                    for mask in [None, Some([9, 8, 7, 6])] {
                        let mut frame = fastwebsockets::Frame::new(
                            fin,
                            opcode,
                            mask,
                            fastwebsockets::Payload::Borrowed(&payload),
                        );
                        let mut theirs = [0; 16];
                        let n = frame.fmt_head(&mut theirs);
                        let mut ours = Vec::new();
                        put_head(&mut ours, fin, opcode, mask, len);
                        assert_eq!(ours, theirs[..n], "{opcode:?} {len} {mask:?}");
                        assert_eq!(ours.len(), head_len(len, mask.is_some()));
                    }
                }
            }
        }
    }

    #[test]
    fn every_frame_round_trips() {
        for len in LENGTHS {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            for opcode in OPCODES {
                for fin in [true, false] {
                    for mask in [None, Some([0x37, 0xfa, 0x21, 0x3d])] {
                        let mut wire = vec![0xee];
                        put_frame(&mut wire, fin, opcode, mask, &payload);
                        let wire = &wire[1..];
                        let what = format!("{opcode:?} fin {fin} {len} bytes {mask:?}");
                        let control = matches!(opcode, OpCode::Close | OpCode::Ping | OpCode::Pong);
                        let parsed = parse_frame(wire, usize::MAX);
                        if control && !fin {
                            assert_eq!(
                                parsed,
                                Err(FrameError::Protocol("fragmented control frame")),
                                "{what}"
                            );
                            continue;
                        }
                        if control && len > 125 {
                            assert_eq!(
                                parsed,
                                Err(FrameError::Protocol("control frame too long")),
                                "{what}"
                            );
                            continue;
                        }
                        let (head, masked) = parsed.expect(&what).expect(&what);
                        let head_len = head_len(len, mask.is_some());
                        assert_eq!(
                            head,
                            Head {
                                fin,
                                opcode,
                                mask,
                                len,
                                head_len
                            },
                            "{what}"
                        );
                        assert_eq!(wire.len(), head_len + len, "{what}");
                        let mut unmasked = masked.to_vec();
                        if let Some(key) = head.mask {
                            unmask(&mut unmasked, key);
                        }
                        assert!(unmasked == payload, "{what}");
                        // One byte short of the frame: not there yet.
                        assert_eq!(
                            parse_frame(&wire[..wire.len() - 1], usize::MAX),
                            Ok(None),
                            "{what}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_limit_applies_to_data_frames_only() {
        let mut wire = Vec::new();
        put_head(&mut wire, true, OpCode::Text, None, 1001);
        assert_eq!(parse_frame(&wire, 1000), Err(FrameError::TooBig));
        assert_eq!(parse_frame(&wire, 1001), Ok(None));
        wire.clear();
        put_frame(&mut wire, true, OpCode::Pong, Some([1, 2, 3, 4]), &[5; 125]);
        let (head, _) = parse_frame(&wire, 0).unwrap().unwrap();
        assert_eq!((head.opcode, head.len), (OpCode::Pong, 125));
    }
}
