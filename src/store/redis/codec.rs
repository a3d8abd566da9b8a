//! What the scripts return and publish, decoded; nothing here panics on
//! data it did not expect, it says [`StoreError::Decode`].
//!
//! Published events (the room is the channel's):
//!
//! | first byte | rest | event |
//! | --- | --- | --- |
//! | `M` | `<seq>:<n>:<epoch (n bytes)><m>:<sender (m bytes)><frame>` | [`Event::Message`] |
//! | `J` / `L` | `<member_count>:<n>:<user (n bytes)><username>` | [`Event::Presence`], joined or not |
//! | `T` / `t` | `<n>:<user (n bytes)><username>` | [`Event::Typing`], typing or stopped |
//! | `D` | | [`Event::RoomDeleted`] |

use bytes::Bytes;
use redis::Value;

use super::error::StoreError;
use crate::protocol::RoomKind;
use crate::store::{Event, Present, RoomRecord, StoredMessage};

/// A script's answer as an array.
pub fn array(v: Value) -> Result<Vec<Value>, StoreError> {
    match v {
        Value::Array(items) => Ok(items),
        other => Err(StoreError::decode(format!(
            "expected an array, got {other:?}"
        ))),
    }
}

/// Bytes of a string answer.
pub fn bytes(v: Value) -> Result<Vec<u8>, StoreError> {
    match v {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.into_bytes()),
        other => Err(StoreError::decode(format!(
            "expected a string, got {other:?}"
        ))),
    }
}

/// A UTF-8 string answer.
pub fn string(v: Value) -> Result<String, StoreError> {
    String::from_utf8(bytes(v)?).map_err(|_| StoreError::decode("a string that is not UTF-8"))
}

/// A string answer, or `None` for nil.
pub fn opt_string(v: Value) -> Result<Option<String>, StoreError> {
    match v {
        Value::Nil => Ok(None),
        v => string(v).map(Some),
    }
}

/// A non-negative integer answer (an integer reply, or decimal digits).
pub fn uint(v: Value) -> Result<u64, StoreError> {
    match v {
        Value::Int(n) => u64::try_from(n).map_err(|_| StoreError::decode(format!("negative {n}"))),
        v => digits(&bytes(v)?),
    }
}

/// An integer answer that is -1, 0 or 1.
pub fn tri(v: Value) -> Result<Option<bool>, StoreError> {
    match v {
        Value::Int(-1) => Ok(None),
        Value::Int(0) => Ok(Some(false)),
        Value::Int(1) => Ok(Some(true)),
        other => Err(StoreError::decode(format!(
            "expected -1, 0 or 1, got {other:?}"
        ))),
    }
}

/// Decimal digits as a `u64`.
pub fn digits(b: &[u8]) -> Result<u64, StoreError> {
    if b.is_empty() || b.len() > 20 || !b.iter().all(u8::is_ascii_digit) {
        return Err(StoreError::decode(format!(
            "expected digits, got {:?}",
            String::from_utf8_lossy(b)
        )));
    }
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| StoreError::decode("a number beyond u64"))
}

/// A script's tag (its answer's first element) and the rest.
pub fn tagged(v: Value) -> Result<(u8, std::vec::IntoIter<Value>), StoreError> {
    let mut items = array(v)?.into_iter();
    let tag = items
        .next()
        .ok_or_else(|| StoreError::decode("an empty answer"))
        .and_then(bytes)?;
    match tag.as_slice() {
        [t] => Ok((*t, items)),
        _ => Err(StoreError::decode("a tag that is not one byte")),
    }
}

/// The next element of an answer.
pub fn next(items: &mut impl Iterator<Item = Value>) -> Result<Value, StoreError> {
    items
        .next()
        .ok_or_else(|| StoreError::decode("an answer too short"))
}

/// Splits `<digits>:<rest>`.
fn number_then(b: &[u8]) -> Result<(u64, &[u8]), StoreError> {
    let colon = b
        .iter()
        .position(|&c| c == b':')
        .ok_or_else(|| StoreError::decode("a field without ':'"))?;
    Ok((digits(&b[..colon])?, &b[colon + 1..]))
}

/// Splits `<n>:<n bytes><rest>`.
fn sized_then(b: &[u8]) -> Result<(&[u8], &[u8]), StoreError> {
    let (n, rest) = number_then(b)?;
    let n = usize::try_from(n).map_err(|_| StoreError::decode("a length beyond usize"))?;
    if rest.len() < n {
        return Err(StoreError::decode("a length beyond the data"));
    }
    Ok(rest.split_at(n))
}

fn utf8(b: &[u8]) -> Result<String, StoreError> {
    String::from_utf8(b.to_vec()).map_err(|_| StoreError::decode("a string that is not UTF-8"))
}

/// A log entry `<seq>:<n>:<retry key><frame>` as a stored message.
pub fn entry(v: Value) -> Result<StoredMessage, StoreError> {
    let b = bytes(v)?;
    let (seq, rest) = number_then(&b)?;
    let (_retry, frame) = sized_then(rest)?;
    Ok(StoredMessage {
        seq,
        frame: Bytes::copy_from_slice(frame),
    })
}

/// A list of log entries.
pub fn entries(v: Value) -> Result<Vec<StoredMessage>, StoreError> {
    array(v)?.into_iter().map(entry).collect()
}

/// `HGETALL` of a room's users (`user` → `<holders>:<username>`), in user
/// id order.
pub fn users(v: Value) -> Result<Vec<Present>, StoreError> {
    let items = match v {
        Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        v => array(v)?,
    };
    if items.len() % 2 != 0 {
        return Err(StoreError::decode("an odd number of hash fields"));
    }
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut items = items.into_iter();
    while let (Some(user), Some(value)) = (items.next(), items.next()) {
        let value = bytes(value)?;
        let (_holders, username) = number_then(&value)?;
        out.push(Present {
            user: string(user)?,
            username: utf8(username)?,
        });
    }
    out.sort();
    Ok(out)
}

/// How a room's kind is stored.
pub fn kind_str(kind: RoomKind) -> &'static str {
    match kind {
        RoomKind::Public => "public",
        RoomKind::Private => "private",
    }
}

/// A room record from `name, description, kind, created_at, created_by,
/// epoch`.
pub fn record(id: &str, v: Value) -> Result<RoomRecord, StoreError> {
    let mut f = array(v)?.into_iter();
    let name = string(next(&mut f)?)?;
    let description = string(next(&mut f)?)?;
    let kind = match bytes(next(&mut f)?)?.as_slice() {
        b"public" => RoomKind::Public,
        b"private" => RoomKind::Private,
        other => {
            return Err(StoreError::decode(format!(
                "room kind {:?}",
                String::from_utf8_lossy(other)
            )));
        }
    };
    let created_at_ms = uint(next(&mut f)?)?;
    let created_by = opt_string(next(&mut f)?)?;
    let epoch = string(next(&mut f)?)?;
    Ok(RoomRecord {
        id: id.to_owned(),
        name,
        description,
        kind,
        created_at_ms,
        created_by,
        epoch,
    })
}

/// The payload of [`Event::Typing`].
pub fn typing_payload(user: &str, username: &str, is_typing: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(user.len() + username.len() + 8);
    out.push(if is_typing { b'T' } else { b't' });
    out.extend_from_slice(format!("{}:", user.len()).as_bytes());
    out.extend_from_slice(user.as_bytes());
    out.extend_from_slice(username.as_bytes());
    out
}

/// A message published on `room`'s channel.
pub fn event(room: &str, payload: &[u8]) -> Result<Event, StoreError> {
    let room = room.to_owned();
    let (&tag, rest) = payload
        .split_first()
        .ok_or_else(|| StoreError::decode("an empty event"))?;
    match tag {
        b'M' => {
            let (seq, rest) = number_then(rest)?;
            let (epoch, rest) = sized_then(rest)?;
            let (user, frame) = sized_then(rest)?;
            Ok(Event::Message {
                room,
                epoch: utf8(epoch)?,
                user: utf8(user)?,
                message: StoredMessage {
                    seq,
                    frame: Bytes::copy_from_slice(frame),
                },
            })
        }
        b'J' | b'L' => {
            let (member_count, rest) = number_then(rest)?;
            let (pseq, rest) = number_then(rest)?;
            let (last_seq, rest) = number_then(rest)?;
            let (user, username) = sized_then(rest)?;
            Ok(Event::Presence {
                room,
                who: Present {
                    user: utf8(user)?,
                    username: utf8(username)?,
                },
                joined: tag == b'J',
                member_count,
                pseq,
                last_seq,
            })
        }
        b'T' | b't' => {
            let (user, username) = sized_then(rest)?;
            Ok(Event::Typing {
                room,
                user: utf8(user)?,
                username: utf8(username)?,
                is_typing: tag == b'T',
            })
        }
        b'D' if rest.is_empty() => Ok(Event::RoomDeleted { room }),
        _ => Err(StoreError::decode(format!(
            "an event tagged {:?}",
            char::from(tag)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_decode() {
        let e = event("r", b"M12:3:e-13:u:1{\"seq\":12}").unwrap();
        assert_eq!(
            e,
            Event::Message {
                room: "r".into(),
                epoch: "e-1".into(),
                user: "u:1".into(),
                message: StoredMessage {
                    seq: 12,
                    frame: Bytes::from_static(b"{\"seq\":12}")
                }
            }
        );
        let e = event("r", b"L0:7:3:2:u1Ann:a").unwrap();
        assert!(
            matches!(e, Event::Presence { joined: false, member_count: 0, pseq: 7, last_seq: 3, ref who, .. }
            if who.user == "u1" && who.username == "Ann:a")
        );
        assert_eq!(
            event("r", &typing_payload("u:1", "Bo", false)).unwrap(),
            Event::Typing {
                room: "r".into(),
                user: "u:1".into(),
                username: "Bo".into(),
                is_typing: false
            }
        );
        assert_eq!(
            event("r", b"D").unwrap(),
            Event::RoomDeleted { room: "r".into() }
        );
    }

    #[test]
    fn bad_data_is_an_error_not_a_panic() {
        for bad in [
            &b""[..],
            b"M",
            b"M12",
            b"M12:99:e",
            b"M12:1:e",
            b"M12:1:e9:u",
            b"Mx:1:e",
            b"J1:5:ab",
            b"T9999999999999999999999:u",
            b"Dx",
            b"?",
            b"M18446744073709551616:1:e",
        ] {
            assert!(event("r", bad).is_err(), "{bad:?}");
        }
        assert!(entry(Value::BulkString(b"3:5:ab".to_vec())).is_err());
        assert!(entry(Value::Int(3)).is_err());
        assert!(users(Value::Array(vec![Value::BulkString(b"u".to_vec())])).is_err());
        assert!(tagged(Value::Array(vec![])).is_err());
        assert!(record("r", Value::Array(vec![Value::Nil])).is_err());
    }
}
