//! `chat-flow checktoken`: what a token says, and whether the server's
//! configuration accepts it at this moment, and if not, why.
//!
//! The verdict is [`Verifier::verify`]'s, called exactly as the server calls
//! it for an `AUTHENTICATE` (the token as given, the current Unix
//! millisecond): nothing here judges a token. What this module adds is
//! explanation, read from the token decoded without trust
//! ([`decode_unverified`]): the header and claims, the dates, and for each
//! refusal the values that caused it (the `exp` and since when it is
//! refused, the `iss` found and the one required, …). For a token refused
//! for its time only, it asks the verifier again at a moment inside the
//! token's validity, so the report also says whether a token like it, on
//! time, would pass.
//!
//! The text ([`Report::to_text`]) is one `label  value` line per fact, with
//! fixed labels, for people; [`Report::to_json`] has the same facts for
//! scripts. Neither ever contains the secret; claims are shown with control
//! characters escaped, so a token cannot write to the terminal.

use serde_json::{Map, Value, json};

use crate::auth::{
    AuthError, SegmentProblem, TOKEN_MAX_BYTES, Unverified, VerifiedToken, Verifier,
    decode_unverified,
};
use crate::config::{Config, JwtKeySource};
use crate::protocol::time::rfc3339_ms;

/// Longest header or claims JSON shown in the text report, in characters
/// (the JSON report shows everything).
const SHOWN_JSON_MAX_CHARS: usize = 2_000;
/// Longest claim value quoted in an explanation, in characters.
const QUOTED_VALUE_MAX_CHARS: usize = 100;

/// Everything `checktoken` found out about one token.
#[derive(Debug, Clone)]
pub struct Report {
    token_bytes: usize,
    token: Unverified,
    setup: Setup,
    now_unix_ms: u64,
    verdict: Result<VerifiedToken, AuthError>,
    why: Option<String>,
    otherwise: Option<Otherwise>,
    notes: Vec<String>,
}

/// The configuration's JWT settings, as the report describes them (never
/// the secret itself).
#[derive(Debug, Clone)]
struct Setup {
    algorithm: &'static str,
    key: KeyUsed,
    issuer: Option<String>,
    audience: Option<String>,
    leeway_seconds: u64,
}

#[derive(Debug, Clone)]
enum KeyUsed {
    DevSecret,
    Secret { bytes: usize },
    PublicKey { path: String },
}

/// For a token refused for its time alone: the verifier's verdict at a
/// moment inside the token's validity, or that there is no such moment.
#[derive(Debug, Clone)]
enum Otherwise {
    At {
        unix_ms: u64,
        verdict: Result<(), AuthError>,
        why: Option<String>,
    },
    NeverValid,
}

/// Checks `token` with `verifier` (built from `config`) at `now_unix_ms`,
/// as the server would at that moment.
pub fn check(token: &str, config: &Config, verifier: &Verifier, now_unix_ms: u64) -> Report {
    let setup = Setup {
        algorithm: config.jwt_algorithm.as_str(),
        key: match &config.jwt_key {
            JwtKeySource::DevSecret => KeyUsed::DevSecret,
            JwtKeySource::Secret(secret) => KeyUsed::Secret {
                bytes: secret.len(),
            },
            JwtKeySource::PublicKeyPem { path, .. } => KeyUsed::PublicKey {
                path: path.display().to_string(),
            },
        },
        issuer: config.jwt_issuer.clone(),
        audience: config.jwt_audience.clone(),
        leeway_seconds: config.jwt_leeway_seconds,
    };
    let decoded = decode_unverified(token);
    let verdict = verifier.verify(token, now_unix_ms);
    let why = verdict
        .as_ref()
        .err()
        .map(|error| explain(*error, &decoded, &setup, token.len(), now_unix_ms));
    let otherwise = match verdict {
        Err(AuthError::Expired | AuthError::NotYetValid) => {
            on_time(verifier, token, &decoded, &setup)
        }
        _ => None,
    };
    let mut notes = Vec::new();
    if token.starts_with("Bearer ") || token.starts_with("bearer ") {
        notes.push(
            "the input starts with \"Bearer \": AUTHENTICATE carries the token alone".to_owned(),
        );
    } else if token.contains(char::is_whitespace) {
        notes.push("the input contains whitespace, which no JWT has".to_owned());
    }
    if matches!(verdict, Err(AuthError::BadSignature)) && setup.key.is_dev_secret() {
        notes.push(
            "JWT_SECRET is not set where this command ran, so it checked with the \
             built-in development secret; if the server has JWT_SECRET set (a systemd \
             EnvironmentFile, a container's environment), run this command with the \
             same environment"
                .to_owned(),
        );
    }
    Report {
        token_bytes: token.len(),
        token: decoded,
        setup,
        now_unix_ms,
        verdict,
        why,
        otherwise,
        notes,
    }
}

impl KeyUsed {
    fn is_dev_secret(&self) -> bool {
        matches!(self, KeyUsed::DevSecret)
    }

    fn describe(&self) -> String {
        match self {
            KeyUsed::DevSecret => {
                "the built-in development secret (JWT_SECRET is not set)".to_owned()
            }
            KeyUsed::Secret { bytes } => format!("JWT_SECRET ({bytes} bytes)"),
            KeyUsed::PublicKey { path } => {
                format!("the public key in JWT_PUBLIC_KEY_FILE {path:?}")
            }
        }
    }
}

impl Report {
    /// Whether the server would accept the token now.
    pub fn accepted(&self) -> bool {
        self.verdict.is_ok()
    }

    /// What the verifier decided: what the token grants, or why it is
    /// refused.
    pub fn verdict(&self) -> &Result<VerifiedToken, AuthError> {
        &self.verdict
    }

    /// Adds a remark shown with the report (e.g. about how the input was
    /// read).
    pub fn add_note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// The report for people: one `label  value` line per fact.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let mut line = |label: &str, value: &str| {
            out.push_str(&format!("{label:<10} {value}\n"));
        };
        line(
            "token",
            &format!(
                "{} bytes, {} segment{}",
                self.token_bytes,
                self.token.segments,
                if self.token.segments == 1 { "" } else { "s" }
            ),
        );
        line("header", &shown_object(&self.token.header));
        line("claims", &shown_object(&self.token.claims));
        for (claim, seconds) in [
            ("iat", self.token.issued_at_s()),
            ("nbf", self.token.not_before_s()),
            ("exp", self.token.expires_s()),
        ] {
            if let Some(seconds) = seconds {
                line(&format!("  {claim}"), &date_s(seconds));
            }
        }
        line("now", &rfc3339_ms(self.now_unix_ms));
        line("checked", &self.setup.describe());
        match &self.verdict {
            Ok(granted) => {
                line("verdict", "accepted");
                line("user", &quoted(&Value::from(granted.user_id.as_str())));
                line(
                    "username",
                    &match &granted.username {
                        Some(name) => format!(
                            "{} (from the token: the client cannot choose another)",
                            quoted(&Value::from(name.as_str()))
                        ),
                        None => "none in the token: the one the client sends, else the user id"
                            .to_owned(),
                    },
                );
                line(
                    "rooms",
                    &if granted.rooms.is_empty() {
                        "none (no private room beyond those the user creates)".to_owned()
                    } else {
                        quoted(&Value::from(granted.rooms.clone()))
                    },
                );
                line(
                    "expires",
                    &format!(
                        "{} (exp + {} s of leeway), {}: the server closes the connection \
                         then unless the client has authenticated again",
                        rfc3339_ms(granted.expires_at_unix_ms),
                        self.setup.leeway_seconds,
                        relative(granted.expires_at_unix_ms, self.now_unix_ms),
                    ),
                );
            }
            Err(error) => {
                line(
                    "verdict",
                    &format!("rejected ({}): {error}", reason_code(*error)),
                );
                if let Some(why) = &self.why {
                    line("why", why);
                }
            }
        }
        if let Some(otherwise) = &self.otherwise {
            line("otherwise", &otherwise.describe());
        }
        for note in &self.notes {
            line("note", note);
        }
        out
    }

    /// The same facts as one JSON object: `accepted`, `reason` (a stable
    /// snake_case code, `null` when accepted), `message`, `why`,
    /// `otherwise`, `now`, `config`, `token`, `header`, `claims` (`null`
    /// when they do not decode, with `header_problem` / `claims_problem`
    /// saying why), `grants` and `notes`.
    pub fn to_json(&self) -> Value {
        let object = |decoded: &Result<Map<String, Value>, SegmentProblem>| match decoded {
            Ok(map) => (Value::Object(map.clone()), Value::Null),
            Err(problem) => (Value::Null, Value::from(problem.to_string())),
        };
        let (header, header_problem) = object(&self.token.header);
        let (claims, claims_problem) = object(&self.token.claims);
        let (reason, message, grants) = match &self.verdict {
            Ok(granted) => (
                Value::Null,
                Value::Null,
                json!({
                    "user_id": granted.user_id,
                    "username": granted.username,
                    "rooms": granted.rooms,
                    "expires_at": rfc3339_ms(granted.expires_at_unix_ms),
                    "expires_at_unix_ms": granted.expires_at_unix_ms,
                }),
            ),
            Err(error) => (
                Value::from(reason_code(*error)),
                Value::from(error.to_string()),
                Value::Null,
            ),
        };
        let otherwise = match &self.otherwise {
            None => Value::Null,
            Some(Otherwise::NeverValid) => json!({ "never_valid": true }),
            Some(Otherwise::At {
                unix_ms,
                verdict,
                why,
            }) => json!({
                "never_valid": false,
                "at": rfc3339_ms(*unix_ms),
                "at_unix_ms": unix_ms,
                "accepted": verdict.is_ok(),
                "reason": verdict.err().map(reason_code),
                "message": verdict.err().map(|e| e.to_string()),
                "why": why,
            }),
        };
        let (key, key_file) = match &self.setup.key {
            KeyUsed::DevSecret => ("development_secret", Value::Null),
            KeyUsed::Secret { .. } => ("JWT_SECRET", Value::Null),
            KeyUsed::PublicKey { path } => ("JWT_PUBLIC_KEY_FILE", Value::from(path.as_str())),
        };
        json!({
            "accepted": self.accepted(),
            "reason": reason,
            "message": message,
            "why": self.why,
            "otherwise": otherwise,
            "now": rfc3339_ms(self.now_unix_ms),
            "now_unix_ms": self.now_unix_ms,
            "config": {
                "algorithm": self.setup.algorithm,
                "key": key,
                "key_file": key_file,
                "issuer": self.setup.issuer,
                "audience": self.setup.audience,
                "leeway_seconds": self.setup.leeway_seconds,
            },
            "token": { "bytes": self.token_bytes, "segments": self.token.segments },
            "header": header,
            "header_problem": header_problem,
            "claims": claims,
            "claims_problem": claims_problem,
            "grants": grants,
            "notes": self.notes,
        })
    }
}

impl Setup {
    fn describe(&self) -> String {
        let required = |what: &str, value: &Option<String>, var: &str| match value {
            Some(value) => format!(
                "{what} must be {} ({var})",
                quoted(&Value::from(value.as_str()))
            ),
            None => format!("{what} not checked"),
        };
        format!(
            "{} with {}; {}; {}; leeway {} s",
            self.algorithm,
            self.key.describe(),
            required("iss", &self.issuer, "JWT_ISSUER"),
            required("aud", &self.audience, "JWT_AUDIENCE"),
            self.leeway_seconds
        )
    }
}

impl Otherwise {
    fn describe(&self) -> String {
        match self {
            Otherwise::NeverValid => {
                "the token is never valid: its nbf, less the leeway, is not before its exp \
                 plus the leeway"
                    .to_owned()
            }
            Otherwise::At {
                unix_ms,
                verdict: Ok(()),
                ..
            } => format!(
                "on time it would be accepted (checked again at {}, inside its validity)",
                rfc3339_ms(*unix_ms)
            ),
            Otherwise::At {
                unix_ms,
                verdict: Err(error),
                why,
            } => format!(
                "on time it would still be rejected ({}): {} (checked again at {})",
                reason_code(*error),
                why.clone().unwrap_or_else(|| error.to_string()),
                rfc3339_ms(*unix_ms)
            ),
        }
    }
}

/// The stable name of a refusal, for `--json` and the text's verdict line.
pub fn reason_code(error: AuthError) -> &'static str {
    match error {
        AuthError::TooLong => "too_long",
        AuthError::Malformed => "malformed",
        AuthError::WrongAlgorithm => "wrong_algorithm",
        AuthError::CriticalHeader => "critical_header",
        AuthError::BadSignature => "bad_signature",
        AuthError::MissingSubject => "invalid_sub",
        AuthError::MissingExpiry => "invalid_exp",
        AuthError::InvalidNotBefore => "invalid_nbf",
        AuthError::Expired => "expired",
        AuthError::NotYetValid => "not_yet_valid",
        AuthError::WrongIssuer => "wrong_issuer",
        AuthError::WrongAudience => "wrong_audience",
        AuthError::InvalidUsername => "invalid_username",
        AuthError::InvalidRooms => "invalid_rooms",
        AuthError::Signing => "signing",
    }
}

/// The first Unix millisecond at which the verifier refuses a token with
/// this `exp` (as `VerifiedToken::expires_at_unix_ms`).
fn refused_from_ms(exp_s: u64, leeway_s: u64) -> u64 {
    exp_s.saturating_add(leeway_s).saturating_mul(1000)
}

/// The first Unix millisecond at which the verifier no longer refuses a
/// token with this `nbf` as not yet valid.
fn accepted_from_ms(nbf_s: u64, leeway_s: u64) -> u64 {
    nbf_s
        .saturating_mul(1000)
        .saturating_sub(leeway_s.saturating_mul(1000))
}

/// Asks the verifier again at a moment inside the token's validity.
fn on_time(
    verifier: &Verifier,
    token: &str,
    decoded: &Unverified,
    setup: &Setup,
) -> Option<Otherwise> {
    let leeway_s = setup.leeway_seconds;
    let until = refused_from_ms(decoded.expires_s()?, leeway_s);
    let from = decoded
        .not_before_s()
        .map_or(0, |nbf| accepted_from_ms(nbf, leeway_s));
    if from >= until {
        return Some(Otherwise::NeverValid);
    }
    // The last moment before expiry: a token refused only for its time is
    // then judged on everything else.
    let at = until - 1;
    let verdict = verifier.verify(token, at).map(|_| ());
    Some(Otherwise::At {
        unix_ms: at,
        why: verdict
            .err()
            .map(|error| explain(error, decoded, setup, token.len(), at)),
        verdict,
    })
}

/// Why the verifier refused the token, in terms of what the token holds.
fn explain(
    error: AuthError,
    token: &Unverified,
    setup: &Setup,
    token_bytes: usize,
    now_ms: u64,
) -> String {
    let leeway = setup.leeway_seconds;
    match error {
        AuthError::TooLong => format!(
            "the token is {token_bytes} bytes; the server refuses tokens over \
             {TOKEN_MAX_BYTES} bytes without reading them"
        ),
        AuthError::Malformed => malformed(token),
        AuthError::WrongAlgorithm => format!(
            "alg is {}; this server accepts {} only (JWT_ALGORITHM)",
            described(token.header_param("alg")),
            setup.algorithm
        ),
        AuthError::CriticalHeader => format!(
            "the header lists crit {}; the server understands no critical extension",
            described(token.header_param("crit"))
        ),
        AuthError::BadSignature => format!(
            "the signature does not verify with {}: the token was signed with another \
             secret or key, or changed after it was signed",
            setup.key.describe()
        ),
        AuthError::MissingSubject => format!(
            "sub is {}; it must be a non-empty string (the user id)",
            described(token.claim("sub"))
        ),
        AuthError::MissingExpiry => format!(
            "exp is {}; it must be a number of seconds since 1970 (NumericDate)",
            described(token.claim("exp"))
        ),
        AuthError::InvalidNotBefore => format!(
            "nbf is {}; when present it must be a number of seconds since 1970 (NumericDate)",
            described(token.claim("nbf"))
        ),
        AuthError::Expired => match token.expires_s() {
            Some(exp) => {
                let refused = refused_from_ms(exp, leeway);
                format!(
                    "exp is {}; with {leeway} s of leeway (JWT_LEEWAY_SECONDS) the server \
                     refuses it from {}, {}",
                    date_s(exp),
                    rfc3339_ms(refused),
                    relative(refused, now_ms)
                )
            }
            None => "exp has passed".to_owned(),
        },
        AuthError::NotYetValid => match token.not_before_s() {
            Some(nbf) => {
                let from = accepted_from_ms(nbf, leeway);
                format!(
                    "nbf is {}; with {leeway} s of leeway (JWT_LEEWAY_SECONDS) the server \
                     accepts it from {}, {}",
                    date_s(nbf),
                    rfc3339_ms(from),
                    relative(from, now_ms)
                )
            }
            None => "nbf is still in the future".to_owned(),
        },
        AuthError::WrongIssuer => format!(
            "iss is {}; JWT_ISSUER requires {}",
            described(token.claim("iss")),
            quoted(&Value::from(setup.issuer.clone()))
        ),
        AuthError::WrongAudience => format!(
            "aud is {}; JWT_AUDIENCE requires {}: a string equal to it, or an array of \
             strings that contains it",
            described(token.claim("aud")),
            quoted(&Value::from(setup.audience.clone()))
        ),
        AuthError::InvalidUsername => {
            let value = token.claim("username");
            let detail = match value {
                Some(Value::String(name)) if name.chars().any(char::is_control) => {
                    ", which holds a control character".to_owned()
                }
                Some(Value::String(name)) if !name.is_empty() => {
                    format!(", which has {} characters", name.chars().count())
                }
                _ => String::new(),
            };
            format!(
                "username is {}{detail}; when present it must be a string of 1-32 \
                 characters without control characters",
                described(value)
            )
        }
        AuthError::InvalidRooms => {
            let value = token.claim("rooms");
            let detail = match value {
                Some(Value::Array(rooms)) => rooms
                    .iter()
                    .position(|room| !room.is_string())
                    .map(|i| format!(" (rooms[{i}] is {})", described(rooms.get(i))))
                    .unwrap_or_default(),
                _ => String::new(),
            };
            format!(
                "rooms is {}{detail}; when present it must be an array of strings",
                described(value)
            )
        }
        AuthError::Signing => error.to_string(),
    }
}

/// Why a token is malformed: the first thing the verifier reads that is
/// not there, in the order it reads.
fn malformed(token: &Unverified) -> String {
    const SHAPE: &str = "a JWT is three base64url segments joined by dots \
                         (header.claims.signature)";
    if token.segments != 3 {
        return format!(
            "not a JWT: {SHAPE}; this has {} segment{}",
            token.segments,
            if token.segments == 1 { "" } else { "s" }
        );
    }
    if let Err(problem) = &token.header {
        return format!("not a JWT: the header (first segment) is {problem}");
    }
    match token.header_param("alg") {
        None => return "the header has no alg".to_owned(),
        Some(Value::String(_)) => {}
        Some(other) => return format!("the header's alg is {}", described(Some(other))),
    }
    if let Err(problem) = &token.signature_bytes {
        return format!("the signature (third segment) is {problem}");
    }
    if let Err(problem) = &token.claims {
        return format!("the claims (second segment) are {problem}");
    }
    "its segments decode, but the JWT library refused their structure (for example \
     a registered header field such as typ or kid that is not a string)"
        .to_owned()
}

/// A claim as an explanation quotes it: `missing`, or its JSON with its
/// type.
fn described(value: Option<&Value>) -> String {
    let Some(value) = value else {
        return "missing".to_owned();
    };
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(s) if s.is_empty() => return "an empty string".to_owned(),
        Value::String(_) => return quoted(value),
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    format!("{} ({kind})", quoted(value))
}

/// A JSON value on one line, shortened to [`QUOTED_VALUE_MAX_CHARS`], safe
/// for a terminal.
fn quoted(value: &Value) -> String {
    shorten(&escape_controls(&value.to_string()), QUOTED_VALUE_MAX_CHARS)
}

/// The header or claims line of the text report.
fn shown_object(decoded: &Result<Map<String, Value>, SegmentProblem>) -> String {
    match decoded {
        Ok(map) => shorten(
            &escape_controls(&Value::Object(map.clone()).to_string()),
            SHOWN_JSON_MAX_CHARS,
        ),
        Err(problem) => format!("(cannot be read: {problem})"),
    }
}

/// JSON text with every control character (C0, DEL, C1) written as a
/// `\u` escape, which keeps it valid JSON of the same value: `serde_json`
/// escapes only C0, and DEL or C1 (U+009B is a terminal's CSI) would reach
/// the terminal raw.
fn escape_controls(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_control() {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// `text` cut to `max` characters, saying how much was left out.
fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!(
            "{}… ({} more characters)",
            &text[..cut],
            text[cut..].chars().count()
        ),
        None => text.to_owned(),
    }
}

/// A NumericDate in whole seconds as an RFC 3339 instant.
fn date_s(unix_s: u64) -> String {
    let text = rfc3339_ms(unix_s.saturating_mul(1000));
    match text.strip_suffix(".000Z") {
        Some(seconds) => format!("{seconds}Z"),
        None => text,
    }
}

/// `in 5m 3s` or `5m 3s ago`, to the second.
fn relative(at_ms: u64, now_ms: u64) -> String {
    let span = |ms: u64| humantime::format_duration(std::time::Duration::from_secs(ms / 1000));
    if at_ms >= now_ms {
        format!("in {}", span(at_ms - now_ms))
    } else {
        format!("{} ago", span(now_ms - at_ms))
    }
}

#[cfg(test)]
mod tests;
