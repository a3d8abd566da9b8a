//! The rules on a token's content that both the verifier and the minter
//! apply (its size; the `username` claim follows the contract's
//! [`valid_username`](crate::protocol::valid_username)), and how the verifier reads the
//! NumericDate claims (`exp`, `nbf`).

use serde_json::Value;

/// Longest token accepted, in bytes (8 KiB). Checked before decoding so an
/// oversized token costs nothing; real tokens are well under 1 KiB.
pub const TOKEN_MAX_BYTES: usize = 8 * 1024;

/// Which way to round a fractional NumericDate: always towards the stricter
/// outcome (an earlier `exp`, a later `nbf`).
#[derive(Clone, Copy)]
pub(super) enum Rounding {
    Down,
    Up,
}

/// A JWT NumericDate (seconds since the epoch, possibly fractional) as whole
/// seconds; dates before 1970 clamp to 0, huge ones to `u64::MAX`. `None`
/// when the value is not a number.
pub(super) fn numeric_date(value: &Value, rounding: Rounding) -> Option<u64> {
    let Value::Number(number) = value else {
        return None;
    };
    if let Some(seconds) = number.as_u64() {
        return Some(seconds);
    }
    if number.as_i64().is_some() {
        return Some(0); // negative integer
    }
    let seconds = number.as_f64()?;
    let seconds = match rounding {
        Rounding::Down => seconds.floor(),
        Rounding::Up => seconds.ceil(),
    };
    // `as` saturates for floats: negative → 0, too large → u64::MAX.
    Some(seconds as u64)
}
