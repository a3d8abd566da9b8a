//! Reading a token without trusting it, for `chat-flow checktoken` to show
//! what a token says: its header and claims as they decode, and `exp`/`nbf`
//! as the verifier reads them.
//!
//! Nothing here decides whether a token is accepted: that is
//! [`Verifier::verify`](super::Verifier::verify) alone. The segments are
//! decoded with the base64url rules the verifier's header check uses
//! ([`decode_segment`], shared with it), and the dates with its rounding, so
//! what is shown is what the verifier read.

use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde_json::{Map, Value};

use super::claims::{Rounding, numeric_date};

/// Unpadded base64url (RFC 7515 §2): the URL-safe alphabet, padding refused.
/// Unlike `URL_SAFE_NO_PAD`, bits left over in the last character are
/// ignored, so that such a header is still judged by its `alg` and `crit`
/// and keeps the answer it has always had (`WrongAlgorithm`,
/// `CriticalHeader`) rather than becoming `Malformed`.
const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(true),
);

/// Decodes one segment of a compact JWS; `None` on padding, any character
/// outside the URL-safe alphabet, or an impossible length.
pub(super) fn decode_segment(segment: &str) -> Option<Vec<u8>> {
    BASE64URL.decode(segment).ok()
}

/// Why one segment of a token could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SegmentProblem {
    /// The token has too few `.`-separated segments to hold it.
    #[error("absent")]
    Absent,
    /// Not unpadded base64url.
    #[error("not base64url")]
    NotBase64url,
    /// Decodes, but not to JSON.
    #[error("not JSON")]
    NotJson,
    /// JSON, but not an object.
    #[error("JSON but not an object")]
    NotObject,
}

/// A token as it decodes, signature unchecked: see [`decode_unverified`].
#[derive(Debug, Clone, PartialEq)]
pub struct Unverified {
    /// How many `.`-separated segments the token has (a compact JWS has 3).
    pub segments: usize,
    /// The first segment as a JSON object.
    pub header: Result<Map<String, Value>, SegmentProblem>,
    /// The second segment as a JSON object.
    pub claims: Result<Map<String, Value>, SegmentProblem>,
    /// The length in bytes of the third segment, decoded.
    pub signature_bytes: Result<usize, SegmentProblem>,
}

impl Unverified {
    /// A claim, `None` when absent or `null` (the verifier's reading), or
    /// when the claims do not decode.
    pub fn claim(&self, name: &str) -> Option<&Value> {
        self.claims
            .as_ref()
            .ok()?
            .get(name)
            .filter(|value| !value.is_null())
    }

    /// A header parameter, `None` when absent or when the header does not
    /// decode.
    pub fn header_param(&self, name: &str) -> Option<&Value> {
        self.header.as_ref().ok()?.get(name)
    }

    /// `exp` in whole Unix seconds as the verifier reads it (a fraction
    /// rounded down); `None` when absent or not a number.
    pub fn expires_s(&self) -> Option<u64> {
        numeric_date(self.claim("exp")?, Rounding::Down)
    }

    /// `nbf` in whole Unix seconds as the verifier reads it (a fraction
    /// rounded up); `None` when absent or not a number.
    pub fn not_before_s(&self) -> Option<u64> {
        numeric_date(self.claim("nbf")?, Rounding::Up)
    }

    /// `iat` in whole Unix seconds (rounded down), for display only: the
    /// verifier does not read it.
    pub fn issued_at_s(&self) -> Option<u64> {
        numeric_date(self.claim("iat")?, Rounding::Down)
    }
}

/// Decodes `token`'s header and claims without checking anything, however
/// long or broken the token is (never panics).
pub fn decode_unverified(token: &str) -> Unverified {
    let segments: Vec<&str> = token.split('.').collect();
    let object = |index: usize| {
        let segment = segments.get(index).ok_or(SegmentProblem::Absent)?;
        let bytes = decode_segment(segment).ok_or(SegmentProblem::NotBase64url)?;
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(_) => Err(SegmentProblem::NotObject),
            Err(_) => Err(SegmentProblem::NotJson),
        }
    };
    Unverified {
        segments: segments.len(),
        header: object(0),
        claims: object(1),
        signature_bytes: segments
            .get(2)
            .ok_or(SegmentProblem::Absent)
            .and_then(|s| decode_segment(s).ok_or(SegmentProblem::NotBase64url))
            .map(|bytes| bytes.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn b64(value: &Value) -> String {
        BASE64URL.encode(value.to_string())
    }

    #[test]
    fn a_token_decodes_into_header_and_claims() {
        let token = format!(
            "{}.{}.{}",
            b64(&json!({"alg": "HS256", "typ": "JWT"})),
            b64(&json!({"sub": "u", "exp": 10.7, "nbf": 5.2, "iat": 4, "aud": null})),
            BASE64URL.encode([0u8; 32])
        );
        let read = decode_unverified(&token);
        assert_eq!(read.segments, 3);
        assert_eq!(read.header_param("alg"), Some(&json!("HS256")));
        assert_eq!(read.claim("sub"), Some(&json!("u")));
        assert_eq!(
            read.claim("aud"),
            None,
            "null is absent, as for the verifier"
        );
        assert_eq!(read.expires_s(), Some(10), "exp rounds down");
        assert_eq!(read.not_before_s(), Some(6), "nbf rounds up");
        assert_eq!(read.issued_at_s(), Some(4));
        assert_eq!(read.signature_bytes, Ok(32));
    }

    #[test]
    fn broken_tokens_say_which_segment_is_broken() {
        let read = decode_unverified("hello");
        assert_eq!(read.segments, 1);
        assert_eq!(read.header, Err(SegmentProblem::NotBase64url));
        assert_eq!(read.claims, Err(SegmentProblem::Absent));
        assert_eq!(read.signature_bytes, Err(SegmentProblem::Absent));

        let read = decode_unverified("aGVsbG8.aGVsbG8"); // "hello"
        assert_eq!(read.header, Err(SegmentProblem::NotJson));
        assert_eq!(read.claims, Err(SegmentProblem::NotJson));

        let read = decode_unverified("a.b");
        assert_eq!(read.header, Err(SegmentProblem::NotBase64url));
        assert_eq!(read.claims, Err(SegmentProblem::NotBase64url));

        let array = b64(&json!([1]));
        let read = decode_unverified(&format!("{array}.{array}.***"));
        assert_eq!(read.header, Err(SegmentProblem::NotObject));
        assert_eq!(read.claims, Err(SegmentProblem::NotObject));
        assert_eq!(read.signature_bytes, Err(SegmentProblem::NotBase64url));
        assert_eq!(read.expires_s(), None);

        for garbage in ["", ".", "..", "....", "\u{0}.\u{7f}.é", "=.=.="] {
            let read = decode_unverified(garbage);
            assert!(read.header.is_err() && read.claims.is_err(), "{garbage:?}");
        }
    }
}
