//! Token verification against hostile tokens.
//!
//! Each input drives three tokens through [`Verifier::verify`]:
//!
//! * `raw`: an arbitrary string, used as the token as it is;
//! * `built`: a token assembled from fuzzer-chosen pieces — a header (from
//!   typed fields: `alg` among the real names and look-alikes, `typ`, `kid`,
//!   `crit`, extra members; or raw JSON text; or a raw segment), claims
//!   (`sub`, `exp`, `nbf`, `iss`, `aud`, `username`, `rooms` as any JSON
//!   shape, times near "now"; or raw text) and a signature (right key, wrong
//!   key, the public key's PEM used as an HMAC secret, the right key with
//!   another HMAC, a real ES256 signature, raw text);
//! * `minted`: a token from [`mint_hs256`] with fuzzer-chosen claims.
//!
//! Invariants:
//!
//! 1. `verify` never panics.
//! 2. Only a token signed with the configured key and algorithm passes: for
//!    any accepted token the header is a JSON object whose `alg` is exactly
//!    the configured one and has no `crit`, the signature verifies under the
//!    configured key (checked independently: the exact HMAC-SHA256 text for
//!    HS256, jsonwebtoken's ES256 check for ES256), and what it returns is
//!    what its claims say (`sub`, unexpired at `now`, `iss`/`aud` when
//!    configured).
//! 3. A minted token verifies while unexpired (and the issuer / audience
//!    match the configuration), with exactly its claims; it is `Expired`
//!    from `(exp + leeway) * 1000` on; minting refuses exactly an empty
//!    `sub`, an invalid `username`, an overflowing `exp`, and claims that
//!    make the token longer than the verifier's cap (never minting a token
//!    the verifier refuses for its length).
//! 4. A minted token is refused by a verifier configured for another
//!    algorithm (ES256: no HS256 / public-key confusion) and when signed with
//!    another secret (`BadSignature`, before any claim is looked at).
//! 5. Any mutation of a minted token's signature part (a byte replaced,
//!    inserted or removed, truncation), and any byte replaced anywhere in
//!    the token, makes it fail.

#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chat_flow::auth::{AuthError, TOKEN_MAX_BYTES, TokenSpec, VerifiedToken, Verifier, mint_hs256};
use chat_flow::config::{Config, JwtAlgorithm, JwtKeySource};
use chat_flow::protocol::valid_username;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};

const SECRET: &[u8] = b"chat-flow-fuzz-secret-0123456789abcdef";
const WRONG_SECRET: &[u8] = b"chat-flow-fuzz-secret-0123456789abcdeF";
const EC_PUBLIC: &[u8] = include_bytes!("../../tests/fixtures/jwt/ec_p256_public.pem");
const EC_PRIVATE: &[u8] = include_bytes!("../../tests/fixtures/jwt/ec_p256_private.pem");
/// "Now" for raw and built tokens, give or take the fuzzer's offset.
const BASE_S: u64 = 1_700_000_000;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    config: ConfigSpec<'a>,
    /// Milliseconds added to `BASE_S` for the raw and built tokens.
    now_offset_ms: i64,
    raw: &'a str,
    built: Built<'a>,
    minted: Minted<'a>,
}

#[derive(Arbitrary, Debug)]
struct ConfigSpec<'a> {
    es256: bool,
    issuer: Option<&'a str>,
    audience: Option<&'a str>,
    leeway_s: u16,
}

#[derive(Arbitrary, Debug)]
struct Built<'a> {
    header: Segment<'a, HeaderFields<'a>>,
    claims: Segment<'a, ClaimFields<'a>>,
    signature: Signature<'a>,
}

/// How one of the first two segments is made.
#[derive(Arbitrary, Debug)]
enum Segment<'a, F> {
    /// From typed members, serialized with serde_json.
    Fields(F),
    /// base64url of arbitrary text (usually not JSON).
    RawJson(&'a str),
    /// Used verbatim (usually not base64url).
    Raw(&'a str),
}

#[derive(Arbitrary, Debug)]
struct HeaderFields<'a> {
    alg: Option<Scalar<'a>>,
    typ: Option<Scalar<'a>>,
    kid: Option<Scalar<'a>>,
    crit: Option<Scalar<'a>>,
    extra: Vec<(&'a str, Scalar<'a>)>,
}

#[derive(Arbitrary, Debug)]
struct ClaimFields<'a> {
    sub: Option<Scalar<'a>>,
    exp: Option<Scalar<'a>>,
    nbf: Option<Scalar<'a>>,
    iat: Option<Scalar<'a>>,
    iss: Option<Scalar<'a>>,
    aud: Option<Scalar<'a>>,
    username: Option<Scalar<'a>>,
    rooms: Option<Scalar<'a>>,
    extra: Vec<(&'a str, Scalar<'a>)>,
}

/// A JSON value, biased towards what the verifier looks for.
#[derive(Arbitrary, Debug)]
enum Scalar<'a> {
    Str(&'a str),
    Alg(AlgName),
    /// `BASE_S + offset` seconds: a time near "now".
    Near(i32),
    /// `BASE_S + offset` seconds as a fractional number.
    NearFloat(i32, u8),
    /// The configured issuer / audience (or a fixed string if none).
    Configured,
    Int(i64),
    UInt(u64),
    Float(f64),
    Bool(bool),
    Null,
    Strs(Vec<&'a str>),
    List(Vec<Scalar<'a>>),
    Object(Vec<(&'a str, Scalar<'a>)>),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum AlgName {
    Hs256,
    Hs384,
    Hs512,
    Rs256,
    Ps256,
    Es256,
    Es384,
    EdDsa,
    None,
    NoneLower,
    Hs256Lower,
    Hs256Padded,
}

impl AlgName {
    fn as_str(self) -> &'static str {
        match self {
            AlgName::Hs256 => "HS256",
            AlgName::Hs384 => "HS384",
            AlgName::Hs512 => "HS512",
            AlgName::Rs256 => "RS256",
            AlgName::Ps256 => "PS256",
            AlgName::Es256 => "ES256",
            AlgName::Es384 => "ES384",
            AlgName::EdDsa => "EdDSA",
            AlgName::None => "None",
            AlgName::NoneLower => "none",
            AlgName::Hs256Lower => "hs256",
            AlgName::Hs256Padded => "HS256 ",
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Signature<'a> {
    /// HMAC-SHA256 with the configured secret.
    Hs256,
    /// HMAC-SHA256 with another secret.
    Hs256WrongKey,
    /// HMAC-SHA256 keyed with the ES256 public key's PEM (alg confusion).
    Hs256WithPublicPem,
    /// HMAC-SHA384 with the configured secret.
    Hs384,
    /// A real ES256 signature with the configured key pair.
    Es256,
    /// Verbatim.
    Raw(&'a str),
}

#[derive(Arbitrary, Debug)]
struct Minted<'a> {
    sub: &'a str,
    username: Option<&'a str>,
    rooms: Vec<String>,
    /// Near `BASE_S` unless `far_iat`.
    iat_offset_s: i32,
    far_iat: Option<u64>,
    ttl_s: u64,
    /// `iss`: the configured issuer when `true`, else `other_issuer`.
    issuer_matches: bool,
    other_issuer: Option<&'a str>,
    audience_matches: bool,
    other_audience: Option<&'a str>,
    now: MintNow,
    mutation: Mutation,
    anywhere: (u16, u8),
}

/// When the minted token is verified, relative to its expiry.
#[derive(Arbitrary, Debug)]
enum MintNow {
    /// `x + 1` ms before `(exp + leeway) * 1000`.
    Before(u32),
    /// `x` ms after `(exp + leeway) * 1000`.
    AtOrAfter(u32),
    /// Any time at all.
    Absolute(u64),
}

#[derive(Arbitrary, Debug)]
enum Mutation {
    Replace(u16, u8),
    Insert(u16, u8),
    Remove(u16),
    Truncate(u16),
    Append(u8),
}

fuzz_target!(|input: Input<'_>| check(input));

fn check(input: Input<'_>) {
    let config = config_of(&input.config);
    let verifier = verifier_of(&config);
    let now_ms = (BASE_S * 1000).saturating_add_signed(input.now_offset_ms);

    // 1. Raw strings.
    let outcome = verifier.verify(input.raw, now_ms);
    check_accepted(input.raw, &outcome, &config, now_ms);

    // 2. Tokens built from pieces.
    let token = build(&input.built, &config);
    let outcome = verifier.verify(&token, now_ms);
    check_accepted(&token, &outcome, &config, now_ms);

    // 3. Minted tokens.
    check_minted(&input.minted, &config, &verifier);
}

fn config_of(spec: &ConfigSpec<'_>) -> Config {
    if spec.es256 {
        // Issuer, audience and leeway are checked the same way whatever the
        // algorithm (they are fuzzed under HS256); a fixed ES256 verifier is
        // built once, as parsing its PEM on every input would dominate.
        return Config {
            jwt_algorithm: JwtAlgorithm::Es256,
            jwt_key: JwtKeySource::PublicKeyPem {
                path: "ec_p256_public.pem".into(),
                pem: EC_PUBLIC.to_vec(),
            },
            ..Config::default()
        };
    }
    Config {
        jwt_key: JwtKeySource::Secret(SECRET.to_vec()),
        jwt_issuer: spec.issuer.map(str::to_owned),
        jwt_audience: spec.audience.map(str::to_owned),
        jwt_leeway_seconds: u64::from(spec.leeway_s),
        ..Config::default()
    }
}

fn verifier_of(config: &Config) -> Verifier {
    static ES256: OnceLock<Verifier> = OnceLock::new();
    if config.jwt_algorithm == JwtAlgorithm::Es256 {
        return ES256
            .get_or_init(|| Verifier::from_config(config).expect("ES256 verifier"))
            .clone();
    }
    Verifier::from_config(config).expect("verifier from a valid config")
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn hmac(secret: &[u8], message: &str, alg: Algorithm) -> String {
    jsonwebtoken::crypto::sign(message.as_bytes(), &EncodingKey::from_secret(secret), alg)
        .expect("HMAC signing cannot fail")
}

fn ec_private() -> &'static EncodingKey {
    static KEY: OnceLock<EncodingKey> = OnceLock::new();
    KEY.get_or_init(|| EncodingKey::from_ec_pem(EC_PRIVATE).expect("EC private key"))
}

fn ec_public() -> &'static DecodingKey {
    static KEY: OnceLock<DecodingKey> = OnceLock::new();
    KEY.get_or_init(|| DecodingKey::from_ec_pem(EC_PUBLIC).expect("EC public key"))
}

fn scalar(s: &Scalar<'_>, config: &Config, depth: u32) -> Value {
    match s {
        Scalar::Str(s) => json!(s),
        Scalar::Alg(a) => json!(a.as_str()),
        Scalar::Near(offset) => json!(BASE_S as i64 + i64::from(*offset)),
        Scalar::NearFloat(offset, frac) => {
            json!(BASE_S as f64 + f64::from(*offset) + f64::from(*frac) / 256.0)
        }
        Scalar::Configured => {
            json!(
                config
                    .jwt_issuer
                    .as_deref()
                    .or(config.jwt_audience.as_deref())
                    .unwrap_or("chat")
            )
        }
        Scalar::Int(n) => json!(n),
        Scalar::UInt(n) => json!(n),
        Scalar::Float(f) => json!(f),
        Scalar::Bool(b) => json!(b),
        Scalar::Null => Value::Null,
        Scalar::Strs(v) => json!(v),
        Scalar::List(v) if depth < 4 => {
            Value::Array(v.iter().map(|s| scalar(s, config, depth + 1)).collect())
        }
        Scalar::Object(v) if depth < 4 => Value::Object(
            v.iter()
                .map(|(k, s)| ((*k).to_owned(), scalar(s, config, depth + 1)))
                .collect(),
        ),
        Scalar::List(_) | Scalar::Object(_) => json!([]),
    }
}

fn object(
    members: &[(&str, &Option<Scalar<'_>>)],
    extra: &[(&str, Scalar<'_>)],
    config: &Config,
) -> Value {
    let mut map = Map::new();
    for (key, value) in extra {
        map.insert((*key).to_owned(), scalar(value, config, 0));
    }
    for (key, value) in members {
        if let Some(value) = value {
            map.insert((*key).to_owned(), scalar(value, config, 0));
        }
    }
    Value::Object(map)
}

fn segment<F>(s: &Segment<'_, F>, fields: impl FnOnce(&F) -> Value) -> String {
    match s {
        Segment::Fields(f) => b64(fields(f).to_string().as_bytes()),
        Segment::RawJson(text) => b64(text.as_bytes()),
        Segment::Raw(text) => (*text).to_owned(),
    }
}

fn build(built: &Built<'_>, config: &Config) -> String {
    let header = segment(&built.header, |h| {
        object(
            &[
                ("alg", &h.alg),
                ("typ", &h.typ),
                ("kid", &h.kid),
                ("crit", &h.crit),
            ],
            &h.extra,
            config,
        )
    });
    let claims = segment(&built.claims, |c| {
        object(
            &[
                ("sub", &c.sub),
                ("exp", &c.exp),
                ("nbf", &c.nbf),
                ("iat", &c.iat),
                ("iss", &c.iss),
                ("aud", &c.aud),
                ("username", &c.username),
                ("rooms", &c.rooms),
            ],
            &c.extra,
            config,
        )
    });
    let message = format!("{header}.{claims}");
    let signature = match &built.signature {
        Signature::Hs256 => hmac(SECRET, &message, Algorithm::HS256),
        Signature::Hs256WrongKey => hmac(WRONG_SECRET, &message, Algorithm::HS256),
        Signature::Hs256WithPublicPem => hmac(EC_PUBLIC, &message, Algorithm::HS256),
        Signature::Hs384 => hmac(SECRET, &message, Algorithm::HS384),
        Signature::Es256 => {
            jsonwebtoken::crypto::sign(message.as_bytes(), ec_private(), Algorithm::ES256)
                .expect("ES256 signing")
        }
        Signature::Raw(text) => (*text).to_owned(),
    };
    format!("{message}.{signature}")
}

/// Invariant 2: an accepted token is one signed with the configured key and
/// algorithm, and the verdict is what its claims say.
fn check_accepted(
    token: &str,
    outcome: &Result<VerifiedToken, AuthError>,
    config: &Config,
    now_ms: u64,
) {
    let Ok(verified) = outcome else { return };
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(
        parts.len(),
        3,
        "accepted a token without three segments: {token:?}"
    );
    let (header, claims, signature) = (parts[0], parts[1], parts[2]);
    let message = &token[..header.len() + 1 + claims.len()];

    let header: Map<String, Value> = URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|h| serde_json::from_slice(&h).ok())
        .unwrap_or_else(|| panic!("accepted a token whose header is not a JSON object: {token:?}"));
    assert_eq!(
        header.get("alg").and_then(Value::as_str),
        Some(config.jwt_algorithm.as_str()),
        "accepted a token with another alg: {token:?}"
    );
    assert!(
        !header.contains_key("crit"),
        "accepted a crit header: {token:?}"
    );

    match config.jwt_algorithm {
        JwtAlgorithm::Hs256 => assert_eq!(
            signature,
            hmac(SECRET, message, Algorithm::HS256),
            "accepted a token not signed with the secret: {token:?}"
        ),
        JwtAlgorithm::Es256 => assert_eq!(
            jsonwebtoken::crypto::verify(
                signature,
                message.as_bytes(),
                ec_public(),
                Algorithm::ES256
            )
            .ok(),
            Some(true),
            "accepted a token not signed with the EC key: {token:?}"
        ),
        other => unreachable!("not configured here: {other}"),
    }

    let claims: Map<String, Value> = URL_SAFE_NO_PAD
        .decode(claims)
        .ok()
        .and_then(|c| serde_json::from_slice(&c).ok())
        .unwrap_or_else(|| panic!("accepted a token whose claims are not an object: {token:?}"));
    assert_eq!(
        claims.get("sub").and_then(Value::as_str),
        Some(verified.user_id.as_str()),
        "userId is not the sub claim: {token:?}"
    );
    assert!(!verified.user_id.is_empty());
    assert!(
        claims.get("exp").is_some_and(Value::is_number),
        "accepted a token without a numeric exp: {token:?}"
    );
    assert!(
        now_ms < verified.expires_at_unix_ms,
        "accepted an expired token"
    );
    if let Some(issuer) = &config.jwt_issuer {
        assert_eq!(
            claims.get("iss").and_then(Value::as_str),
            Some(issuer.as_str())
        );
    }
    if let Some(audience) = &config.jwt_audience {
        let listed = match claims.get("aud") {
            Some(Value::String(aud)) => aud == audience,
            Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(audience)),
            _ => false,
        };
        assert!(listed, "accepted a token for another audience: {token:?}");
    }
    if let Some(name) = &verified.username {
        assert!(valid_username(name));
        assert_eq!(
            claims.get("username").and_then(Value::as_str),
            Some(name.as_str())
        );
    }
}

/// Invariants 3, 4 and 5.
fn check_minted(m: &Minted<'_>, config: &Config, verifier: &Verifier) {
    let iat = m
        .far_iat
        .unwrap_or_else(|| BASE_S.saturating_add_signed(i64::from(m.iat_offset_s)));
    let issuer = if m.issuer_matches {
        config.jwt_issuer.as_deref()
    } else {
        m.other_issuer
    };
    let audience = if m.audience_matches {
        config.jwt_audience.as_deref()
    } else {
        m.other_audience
    };
    let token_spec = TokenSpec {
        sub: m.sub,
        username: m.username,
        rooms: &m.rooms,
        issued_at_unix_s: iat,
        ttl_s: m.ttl_s,
        issuer,
        audience,
    };
    let minted = mint_hs256(SECRET, &token_spec);
    let expected_refusal = if m.sub.is_empty() {
        Some(AuthError::MissingSubject)
    } else if m.username.is_some_and(|name| !valid_username(name)) {
        Some(AuthError::InvalidUsername)
    } else if iat.checked_add(m.ttl_s).is_none() {
        Some(AuthError::MissingExpiry)
    } else {
        None
    };
    let token = match (minted, expected_refusal) {
        (Ok(token), None) => {
            assert!(token.len() <= TOKEN_MAX_BYTES, "minted over the cap");
            token
        }
        // Claims too large for the verifier's cap: refused, never minted.
        // (Only plausible when the strings are long: JSON escapes at most
        // sextuple a character and base64 adds a third.)
        (Err(AuthError::TooLong), None) => {
            let raw: usize = m.sub.len()
                + m.username.map_or(0, str::len)
                + m.rooms.iter().map(|r| r.len() + 3).sum::<usize>()
                + issuer.map_or(0, str::len)
                + audience.map_or(0, str::len);
            assert!(
                (6 * raw + 200) * 4 / 3 > TOKEN_MAX_BYTES - 100,
                "a small token was refused as too long"
            );
            return;
        }
        (Err(e), Some(expected)) => {
            assert_eq!(e, expected, "minting refused for the wrong reason");
            return;
        }
        (minted, expected) => {
            panic!("mint_hs256 gave {minted:?}, expected a refusal: {expected:?}")
        }
    };

    let exp = iat + m.ttl_s;
    let expires_at = exp
        .saturating_add(config.jwt_leeway_seconds)
        .saturating_mul(1000);
    let now_ms = match m.now {
        MintNow::Before(x) => expires_at.saturating_sub(1).saturating_sub(u64::from(x)),
        MintNow::AtOrAfter(x) => expires_at.saturating_add(u64::from(x)),
        MintNow::Absolute(t) => t,
    };
    let outcome = verifier.verify(&token, now_ms);

    if config.jwt_algorithm == JwtAlgorithm::Es256 {
        // An HS256 token never passes an ES256 verifier.
        assert_eq!(outcome, Err(AuthError::WrongAlgorithm), "alg confusion");
    } else {
        let unexpired = now_ms < expires_at;
        let issuer_ok = config.jwt_issuer.is_none() || issuer == config.jwt_issuer.as_deref();
        let audience_ok =
            config.jwt_audience.is_none() || audience == config.jwt_audience.as_deref();
        if unexpired && issuer_ok && audience_ok {
            assert_eq!(
                outcome,
                Ok(VerifiedToken {
                    user_id: m.sub.to_owned(),
                    username: m.username.map(str::to_owned),
                    rooms: m.rooms.clone(),
                    expires_at_unix_ms: expires_at,
                }),
                "a valid minted token was not accepted as minted"
            );
        } else {
            let err = outcome.expect_err("an expired or mis-addressed token passed");
            assert!(
                (!unexpired && err == AuthError::Expired)
                    || (!issuer_ok && err == AuthError::WrongIssuer)
                    || (!audience_ok && err == AuthError::WrongAudience),
                "refused for a reason that does not apply: {err:?}"
            );
        }
        // Another secret: refused for its signature, whatever its claims.
        let forged = mint_hs256(WRONG_SECRET, &token_spec).expect("same spec mints");
        assert_eq!(
            verifier.verify(&forged, now_ms),
            Err(AuthError::BadSignature)
        );
    }

    // Mutations of the signature part, and of any byte, all fail.
    let signature_start = token.rfind('.').expect("three segments") + 1;
    let mut bytes = token.clone().into_bytes();
    let sig_len = bytes.len() - signature_start;
    let at = |pos: u16, len: usize| signature_start + usize::from(pos) % len;
    match m.mutation {
        Mutation::Replace(pos, byte) => {
            let i = at(pos, sig_len);
            bytes[i] = if bytes[i] == byte {
                byte.wrapping_add(1)
            } else {
                byte
            };
        }
        Mutation::Insert(pos, byte) => bytes.insert(at(pos, sig_len + 1), byte),
        Mutation::Remove(pos) => {
            bytes.remove(at(pos, sig_len));
        }
        Mutation::Truncate(pos) => bytes.truncate(at(pos, sig_len)),
        Mutation::Append(byte) => bytes.push(byte),
    }
    check_mutant(verifier, &bytes, now_ms);

    let mut bytes = token.into_bytes();
    let (pos, byte) = m.anywhere;
    let i = usize::from(pos) % bytes.len();
    bytes[i] = if bytes[i] == byte {
        byte.wrapping_add(1)
    } else {
        byte
    };
    check_mutant(verifier, &bytes, now_ms);
}

fn check_mutant(verifier: &Verifier, bytes: &[u8], now_ms: u64) {
    let mutant = String::from_utf8_lossy(bytes);
    let outcome = verifier.verify(&mutant, now_ms);
    assert!(
        outcome.is_err(),
        "a mutated token passed: {mutant:?} → {outcome:?}"
    );
}
