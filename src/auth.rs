//! JWT verification for `AUTHENTICATE`, and HS256 minting for the `token`
//! command and tests.
//!
//! [`Verifier::verify`] takes the current time as a parameter instead of
//! reading the clock, so the deterministic core (and its simulation) decides
//! what "now" is. `jsonwebtoken` therefore only checks the signature and the
//! algorithm; every claim is checked here against `now_unix_ms`:
//!
//! | claim | rule |
//! | --- | --- |
//! | header `alg` | exactly `JWT_ALGORITHM`; anything else (`none`, `HS256` against an RSA key, …) is rejected |
//! | header `crit` | rejected when present: no extension is understood |
//! | `sub` | required, a non-empty string; becomes the `userId` |
//! | `exp` | required NumericDate; rejected from `(exp + leeway)` seconds on |
//! | `nbf` | optional NumericDate; rejected before `(nbf - leeway)` seconds |
//! | `iss` | when `JWT_ISSUER` is set: required, equal to it |
//! | `aud` | when `JWT_AUDIENCE` is set: required, a string equal to it or an array of strings containing it |
//! | `username` | optional; when present it must satisfy [`valid_username`] |
//! | `rooms` | optional; when present an array of strings (private rooms the user may join) |
//!
//! A claim that is `null` counts as absent, like optional fields on the wire.
//! Tokens longer than [`TOKEN_MAX_BYTES`] are rejected before any decoding.
//! Error texts ([`AuthError`]) are safe to send to the client: they never
//! echo the token or a claim.

use std::collections::HashSet;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value};

use crate::config::{Config, ConfigError, JwtAlgorithm, decoding_key};

/// Longest token accepted, in bytes (8 KiB). Checked before decoding so an
/// oversized token costs nothing; real tokens are well under 1 KiB.
pub const TOKEN_MAX_BYTES: usize = 8 * 1024;

/// Longest username, in Unicode code points.
pub const USERNAME_MAX_CHARS: usize = 32;

/// Why a token was refused (or could not be minted). `Display` texts are
/// meant for the client's `ERROR UNAUTHORIZED` message: they say what is
/// wrong without echoing the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The token exceeds [`TOKEN_MAX_BYTES`].
    #[error("token is too long")]
    TooLong,
    /// Not a compact JWS with a JSON header and claims object.
    #[error("token is malformed")]
    Malformed,
    /// The header's `alg` is not the configured algorithm.
    #[error("token algorithm is not accepted")]
    WrongAlgorithm,
    /// The header lists `crit` extensions, none of which are understood.
    #[error("token has unsupported critical header parameters")]
    CriticalHeader,
    /// The signature does not verify with the configured key.
    #[error("token signature is invalid")]
    BadSignature,
    /// `sub` is absent, not a string, or empty.
    #[error("token has no valid sub claim")]
    MissingSubject,
    /// `exp` is absent or not a number (or cannot be computed when minting).
    #[error("token has no valid exp claim")]
    MissingExpiry,
    /// `nbf` is present but not a number.
    #[error("token nbf claim is not a number")]
    InvalidNotBefore,
    /// `exp` plus the leeway has passed.
    #[error("token expired")]
    Expired,
    /// `nbf` minus the leeway is still in the future.
    #[error("token is not yet valid")]
    NotYetValid,
    /// `JWT_ISSUER` is set and `iss` is absent or different.
    #[error("token issuer is not accepted")]
    WrongIssuer,
    /// `JWT_AUDIENCE` is set and `aud` is absent or does not contain it.
    #[error("token audience is not accepted")]
    WrongAudience,
    /// The `username` claim breaks the username rule (see [`valid_username`]).
    #[error("token username claim is invalid")]
    InvalidUsername,
    /// The `rooms` claim is not an array of strings.
    #[error("token rooms claim must be an array of strings")]
    InvalidRooms,
    /// Minting only: the signing library failed.
    #[error("token could not be signed")]
    Signing,
}

/// What a successfully verified token says about the connection's user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// The `sub` claim: the `userId`.
    pub user_id: String,
    /// The `username` claim, already validated; when `Some` it overrides any
    /// username the client sends.
    pub username: Option<String>,
    /// The `rooms` claim: ids of private rooms the user may join (empty when
    /// absent).
    pub rooms: Vec<String>,
    /// `(exp + leeway) * 1000`: the first Unix millisecond at which the token
    /// is no longer accepted. The server closes the connection then unless
    /// the token was refreshed.
    pub expires_at_unix_ms: u64,
}

/// Whether `name` is an acceptable username: 1–32 Unicode code points and no
/// control characters. Shared by the `username` claim and the `AUTHENTICATE`
/// payload validation.
pub fn valid_username(name: &str) -> bool {
    let mut count = 0usize;
    for c in name.chars() {
        count += 1;
        if count > USERNAME_MAX_CHARS || c.is_control() {
            return false;
        }
    }
    count >= 1
}

/// Verifies tokens for the one configured algorithm and key. Build it once at
/// start-up with [`Verifier::from_config`]; it is cheap to clone and share.
#[derive(Debug, Clone)]
pub struct Verifier {
    algorithm: JwtAlgorithm,
    key: DecodingKey,
    validation: Validation,
    issuer: Option<String>,
    audience: Option<String>,
    leeway_seconds: u64,
}

impl Verifier {
    /// Builds the verifier from the validated configuration (algorithm, key,
    /// issuer, audience, leeway). Fails only for a configuration that did not
    /// come from [`Config::from_lookup`] (e.g. a public key with HS256).
    pub fn from_config(config: &Config) -> Result<Verifier, ConfigError> {
        let key = decoding_key(config.jwt_algorithm, &config.jwt_key)?;
        let mut validation = Validation::new(config.jwt_algorithm.jsonwebtoken());
        // Time and registered claims are checked by `check_claims` against
        // the caller's clock, not by jsonwebtoken against the system clock.
        validation.required_spec_claims = HashSet::new();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;
        Ok(Verifier {
            algorithm: config.jwt_algorithm,
            key,
            validation,
            issuer: config.jwt_issuer.clone(),
            audience: config.jwt_audience.clone(),
            leeway_seconds: config.jwt_leeway_seconds,
        })
    }

    /// The algorithm this verifier accepts.
    pub fn algorithm(&self) -> JwtAlgorithm {
        self.algorithm
    }

    /// Verifies `token` at time `now_unix_ms` and returns what it grants.
    pub fn verify(&self, token: &str, now_unix_ms: u64) -> Result<VerifiedToken, AuthError> {
        if token.len() > TOKEN_MAX_BYTES {
            return Err(AuthError::TooLong);
        }
        self.check_header(token)?;
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &self.key, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature
                | ErrorKind::InvalidEcdsaKey
                | ErrorKind::InvalidEddsaKey
                | ErrorKind::InvalidRsaKey(_)
                | ErrorKind::InvalidKeyFormat => AuthError::BadSignature,
                ErrorKind::InvalidAlgorithm
                | ErrorKind::MissingAlgorithm
                | ErrorKind::UnsupportedAlgorithm => AuthError::WrongAlgorithm,
                _ => AuthError::Malformed,
            })?
            .claims;
        self.check_claims(&claims, now_unix_ms)
    }

    /// Checks the header before any signature work: three segments, a JSON
    /// object header, exactly the configured `alg`, no `crit`.
    fn check_header(&self, token: &str) -> Result<(), AuthError> {
        let mut segments = token.split('.');
        let (Some(header), Some(_claims), Some(_signature), None) = (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) else {
            return Err(AuthError::Malformed);
        };
        let header = base64url_decode(header).ok_or(AuthError::Malformed)?;
        let header: Map<String, Value> =
            serde_json::from_slice(&header).map_err(|_| AuthError::Malformed)?;
        match header.get("alg") {
            Some(Value::String(alg)) if alg == self.algorithm.as_str() => {}
            Some(Value::String(_)) => return Err(AuthError::WrongAlgorithm),
            _ => return Err(AuthError::Malformed),
        }
        if header.contains_key("crit") {
            return Err(AuthError::CriticalHeader);
        }
        Ok(())
    }

    /// Checks the claims of a token whose signature verified.
    fn check_claims(
        &self,
        claims: &Map<String, Value>,
        now_unix_ms: u64,
    ) -> Result<VerifiedToken, AuthError> {
        let claim = |name: &str| claims.get(name).filter(|value| !value.is_null());
        let leeway_ms = self.leeway_seconds.saturating_mul(1000);

        let user_id = match claim("sub") {
            Some(Value::String(sub)) if !sub.is_empty() => sub.clone(),
            _ => return Err(AuthError::MissingSubject),
        };

        let exp = claim("exp")
            .and_then(|exp| numeric_date(exp, Rounding::Down))
            .ok_or(AuthError::MissingExpiry)?;
        let expires_at_unix_ms = exp.saturating_add(self.leeway_seconds).saturating_mul(1000);
        if now_unix_ms >= expires_at_unix_ms {
            return Err(AuthError::Expired);
        }

        if let Some(nbf) = claim("nbf") {
            let nbf = numeric_date(nbf, Rounding::Up).ok_or(AuthError::InvalidNotBefore)?;
            if now_unix_ms.saturating_add(leeway_ms) < nbf.saturating_mul(1000) {
                return Err(AuthError::NotYetValid);
            }
        }

        if let Some(issuer) = &self.issuer {
            match claim("iss") {
                Some(Value::String(iss)) if iss == issuer => {}
                _ => return Err(AuthError::WrongIssuer),
            }
        }

        if let Some(audience) = &self.audience {
            let accepted = match claim("aud") {
                Some(Value::String(aud)) => aud == audience,
                Some(Value::Array(auds)) => {
                    auds.iter().all(Value::is_string)
                        && auds.iter().any(|aud| aud.as_str() == Some(audience))
                }
                _ => false,
            };
            if !accepted {
                return Err(AuthError::WrongAudience);
            }
        }

        let username = match claim("username") {
            None => None,
            Some(Value::String(name)) if valid_username(name) => Some(name.clone()),
            Some(_) => return Err(AuthError::InvalidUsername),
        };

        let rooms = match claim("rooms") {
            None => Vec::new(),
            Some(Value::Array(rooms)) => rooms
                .iter()
                .map(|room| room.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or(AuthError::InvalidRooms)?,
            Some(_) => return Err(AuthError::InvalidRooms),
        };

        Ok(VerifiedToken {
            user_id,
            username,
            rooms,
            expires_at_unix_ms,
        })
    }
}

/// Which way to round a fractional NumericDate: always towards the stricter
/// outcome (an earlier `exp`, a later `nbf`).
#[derive(Clone, Copy)]
enum Rounding {
    Down,
    Up,
}

/// A JWT NumericDate (seconds since the epoch, possibly fractional) as whole
/// seconds; dates before 1970 clamp to 0, huge ones to `u64::MAX`. `None`
/// when the value is not a number.
fn numeric_date(value: &Value, rounding: Rounding) -> Option<u64> {
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

/// Decodes unpadded base64url (RFC 7515 §2); `None` on any other character or
/// an impossible length.
fn base64url_decode(input: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len() / 4 * 3 + 2);
    let mut buffer: u32 = 0;
    let mut bits: u32 = 0;
    for byte in input.bytes() {
        let sextet = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        buffer = (buffer << 6) | u32::from(sextet);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(((buffer >> bits) & 0xff) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    // A lone trailing sextet (length ≡ 1 mod 4) cannot encode a byte.
    (bits < 6).then_some(out)
}

/// What to put in a token minted by [`mint_hs256`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenSpec<'a> {
    /// `sub`: the user id (non-empty).
    pub sub: &'a str,
    /// `username` claim, omitted when `None`; must satisfy [`valid_username`].
    pub username: Option<&'a str>,
    /// `rooms` claim (private rooms the user may join), omitted when empty.
    pub rooms: &'a [String],
    /// `iat`, in Unix seconds.
    pub issued_at_unix_s: u64,
    /// Lifetime: `exp = iat + ttl_s`.
    pub ttl_s: u64,
    /// `iss` claim, omitted when `None` (set it to `JWT_ISSUER`).
    pub issuer: Option<&'a str>,
    /// `aud` claim, omitted when `None` (set it to `JWT_AUDIENCE`).
    pub audience: Option<&'a str>,
}

impl<'a> TokenSpec<'a> {
    /// A token for `sub` issued at `issued_at_unix_s`, valid for `ttl_s`
    /// seconds, with no optional claims.
    pub fn new(sub: &'a str, issued_at_unix_s: u64, ttl_s: u64) -> Self {
        Self {
            sub,
            username: None,
            rooms: &[],
            issued_at_unix_s,
            ttl_s,
            issuer: None,
            audience: None,
        }
    }
}

/// Signs an HS256 token with `secret` (for `chat-flow token`, tests and load
/// generators). Refuses to mint what the verifier would reject for its
/// content: an empty `sub`, an invalid `username`, an `exp` that overflows,
/// a token longer than [`TOKEN_MAX_BYTES`] (e.g. too many `rooms`).
pub fn mint_hs256(secret: &[u8], spec: &TokenSpec<'_>) -> Result<String, AuthError> {
    if spec.sub.is_empty() {
        return Err(AuthError::MissingSubject);
    }
    if spec.username.is_some_and(|name| !valid_username(name)) {
        return Err(AuthError::InvalidUsername);
    }
    let exp = spec
        .issued_at_unix_s
        .checked_add(spec.ttl_s)
        .ok_or(AuthError::MissingExpiry)?;
    let mut claims = Map::new();
    claims.insert("sub".to_owned(), Value::from(spec.sub));
    claims.insert("iat".to_owned(), Value::from(spec.issued_at_unix_s));
    claims.insert("exp".to_owned(), Value::from(exp));
    if let Some(username) = spec.username {
        claims.insert("username".to_owned(), Value::from(username));
    }
    if !spec.rooms.is_empty() {
        claims.insert("rooms".to_owned(), Value::from(spec.rooms.to_vec()));
    }
    if let Some(issuer) = spec.issuer {
        claims.insert("iss".to_owned(), Value::from(issuer));
    }
    if let Some(audience) = spec.audience {
        claims.insert("aud".to_owned(), Value::from(audience));
    }
    let token = jsonwebtoken::encode(
        &Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|_| AuthError::Signing)?;
    if token.len() > TOKEN_MAX_BYTES {
        return Err(AuthError::TooLong);
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DEV_JWT_SECRET, JwtKeySource};
    use jsonwebtoken::Algorithm;
    use serde_json::json;

    const NOW_S: u64 = 1_700_000_000;
    const NOW_MS: u64 = NOW_S * 1000;
    const SECRET: &[u8] = b"test-secret-test-secret-test-secret!";

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/jwt/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
    }

    fn hs_config() -> Config {
        Config {
            jwt_key: JwtKeySource::Secret(SECRET.to_vec()),
            ..Config::default()
        }
    }

    fn verifier(config: &Config) -> Verifier {
        Verifier::from_config(config).expect("verifier")
    }

    fn public_key_config(algorithm: JwtAlgorithm, file: &str) -> Config {
        Config {
            jwt_algorithm: algorithm,
            jwt_key: JwtKeySource::PublicKeyPem {
                path: file.into(),
                pem: fixture(file),
            },
            ..Config::default()
        }
    }

    fn encode_with(header: &Header, claims: &Value, key: &EncodingKey) -> String {
        jsonwebtoken::encode(header, claims, key).expect("encode")
    }

    fn hs(claims: &Value) -> String {
        encode_with(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(SECRET),
        )
    }

    fn b64(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
            for i in 0..=chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            }
        }
        out
    }

    /// A token with an arbitrary header, HS256-signed with `secret`.
    fn raw_hs(header: &Value, claims: &Value, secret: &[u8]) -> String {
        let message = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let signature = jsonwebtoken::crypto::sign(
            message.as_bytes(),
            &EncodingKey::from_secret(secret),
            Algorithm::HS256,
        )
        .expect("sign");
        format!("{message}.{signature}")
    }

    fn good_claims() -> Value {
        json!({ "sub": "user_1", "exp": NOW_S + 60 })
    }

    #[test]
    fn a_valid_token_is_accepted() {
        let token = hs(&json!({
            "sub": "user_1", "exp": NOW_S + 60, "username": "alice", "rooms": ["vip", "staff"],
            "iat": NOW_S, "extra": {"ignored": true}
        }));
        let verified = verifier(&hs_config())
            .verify(&token, NOW_MS)
            .expect("valid");
        assert_eq!(
            verified,
            VerifiedToken {
                user_id: "user_1".to_owned(),
                username: Some("alice".to_owned()),
                rooms: vec!["vip".to_owned(), "staff".to_owned()],
                expires_at_unix_ms: (NOW_S + 60 + 5) * 1000,
            }
        );
    }

    #[test]
    fn optional_claims_may_be_absent_or_null() {
        let token = hs(&json!({
            "sub": "u", "exp": NOW_S + 1, "username": null, "rooms": null, "nbf": null
        }));
        let verified = verifier(&hs_config())
            .verify(&token, NOW_MS)
            .expect("valid");
        assert_eq!(verified.username, None);
        assert!(verified.rooms.is_empty());
    }

    #[test]
    fn the_dev_secret_verifies_dev_tokens() {
        let token =
            mint_hs256(DEV_JWT_SECRET.as_bytes(), &TokenSpec::new("u", NOW_S, 60)).expect("mint");
        assert!(verifier(&Config::default()).verify(&token, NOW_MS).is_ok());
        assert_eq!(
            verifier(&hs_config()).verify(&token, NOW_MS),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn alg_none_is_rejected() {
        let unsigned = format!(
            "{}.{}.",
            b64(br#"{"alg":"none","typ":"JWT"}"#),
            b64(good_claims().to_string().as_bytes())
        );
        assert_eq!(
            verifier(&hs_config()).verify(&unsigned, NOW_MS),
            Err(AuthError::WrongAlgorithm)
        );
        let missing_alg = raw_hs(&json!({"typ": "JWT"}), &good_claims(), SECRET);
        assert_eq!(
            verifier(&hs_config()).verify(&missing_alg, NOW_MS),
            Err(AuthError::Malformed)
        );
    }

    #[test]
    fn other_hmac_algorithms_are_rejected() {
        let token = encode_with(
            &Header::new(Algorithm::HS512),
            &good_claims(),
            &EncodingKey::from_secret(SECRET),
        );
        assert_eq!(
            verifier(&hs_config()).verify(&token, NOW_MS),
            Err(AuthError::WrongAlgorithm)
        );
    }

    #[test]
    fn hs_rs_key_confusion_is_rejected() {
        let rs = verifier(&public_key_config(JwtAlgorithm::Rs256, "rsa_public.pem"));
        let public_pem = fixture("rsa_public.pem");
        // An HS256 token whose HMAC key is the server's public key.
        let confused = encode_with(
            &Header::new(Algorithm::HS256),
            &good_claims(),
            &EncodingKey::from_secret(&public_pem),
        );
        assert_eq!(rs.verify(&confused, NOW_MS), Err(AuthError::WrongAlgorithm));
        // The same HMAC, but claiming RS256 in the header.
        let disguised = raw_hs(&json!({"alg": "RS256"}), &good_claims(), &public_pem);
        assert_eq!(rs.verify(&disguised, NOW_MS), Err(AuthError::BadSignature));
    }

    #[test]
    fn public_key_algorithms_verify_their_own_signatures() {
        let cases = [
            (JwtAlgorithm::Rs256, "rsa_public.pem", "rsa_private.pem"),
            (
                JwtAlgorithm::Es256,
                "ec_p256_public.pem",
                "ec_p256_private.pem",
            ),
            (
                JwtAlgorithm::EdDsa,
                "ed25519_public.pem",
                "ed25519_private.pem",
            ),
        ];
        for (algorithm, public, private) in cases {
            let private = fixture(private);
            let key = match algorithm {
                JwtAlgorithm::Rs256 => EncodingKey::from_rsa_pem(&private),
                JwtAlgorithm::Es256 => EncodingKey::from_ec_pem(&private),
                _ => EncodingKey::from_ed_pem(&private),
            }
            .expect("private key");
            let token = encode_with(&Header::new(algorithm.jsonwebtoken()), &good_claims(), &key);
            let config = public_key_config(algorithm, public);
            let verified = verifier(&config).verify(&token, NOW_MS).expect("valid");
            assert_eq!(verified.user_id, "user_1");
            // An HS256 token signed with the dev secret never passes.
            let dev = mint_hs256(DEV_JWT_SECRET.as_bytes(), &TokenSpec::new("u", NOW_S, 60))
                .expect("mint");
            assert_eq!(
                verifier(&config).verify(&dev, NOW_MS),
                Err(AuthError::WrongAlgorithm)
            );
        }
    }

    #[test]
    fn a_token_signed_with_another_key_is_rejected() {
        let token = encode_with(
            &Header::new(Algorithm::HS256),
            &good_claims(),
            &EncodingKey::from_secret(b"another-secret-another-secret-xx"),
        );
        assert_eq!(
            verifier(&hs_config()).verify(&token, NOW_MS),
            Err(AuthError::BadSignature)
        );

        let other = EncodingKey::from_ec_pem(&fixture("ec_p256_other_private.pem")).expect("key");
        let token = encode_with(&Header::new(Algorithm::ES256), &good_claims(), &other);
        let es = verifier(&public_key_config(
            JwtAlgorithm::Es256,
            "ec_p256_public.pem",
        ));
        assert_eq!(es.verify(&token, NOW_MS), Err(AuthError::BadSignature));
    }

    #[test]
    fn a_tampered_payload_is_rejected() {
        let token = hs(&good_claims());
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = b64(json!({"sub": "admin", "exp": NOW_S + 60})
            .to_string()
            .as_bytes());
        parts[1] = &forged;
        assert_eq!(
            verifier(&hs_config()).verify(&parts.join("."), NOW_MS),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn expiry_is_enforced_with_leeway_at_the_millisecond() {
        let v = verifier(&hs_config()); // leeway 5 s
        let token = hs(&json!({"sub": "u", "exp": NOW_S}));
        let boundary_ms = (NOW_S + 5) * 1000;
        assert!(v.verify(&token, NOW_MS).is_ok(), "at exp, inside leeway");
        assert!(
            v.verify(&token, boundary_ms - 1).is_ok(),
            "last accepted ms"
        );
        assert_eq!(v.verify(&token, boundary_ms), Err(AuthError::Expired));
        assert_eq!(
            v.verify(&token, boundary_ms + 60_000),
            Err(AuthError::Expired)
        );

        let strict = verifier(&Config {
            jwt_leeway_seconds: 0,
            ..hs_config()
        });
        assert_eq!(strict.verify(&token, NOW_MS), Err(AuthError::Expired));
        assert_eq!(
            strict
                .verify(&token, NOW_MS - 1)
                .map(|t| t.expires_at_unix_ms),
            Ok(NOW_MS)
        );
    }

    #[test]
    fn not_before_is_enforced_with_leeway() {
        let v = verifier(&hs_config());
        let token = hs(&json!({"sub": "u", "exp": NOW_S + 600, "nbf": NOW_S + 10}));
        assert_eq!(v.verify(&token, NOW_MS), Err(AuthError::NotYetValid));
        assert_eq!(
            v.verify(&token, (NOW_S + 5) * 1000 - 1),
            Err(AuthError::NotYetValid)
        );
        assert!(
            v.verify(&token, (NOW_S + 5) * 1000).is_ok(),
            "inside leeway"
        );
        let past = hs(&json!({"sub": "u", "exp": NOW_S + 600, "nbf": NOW_S - 10}));
        assert!(v.verify(&past, NOW_MS).is_ok());
        let bad = hs(&json!({"sub": "u", "exp": NOW_S + 600, "nbf": "soon"}));
        assert_eq!(v.verify(&bad, NOW_MS), Err(AuthError::InvalidNotBefore));
    }

    #[test]
    fn fractional_and_out_of_range_dates_round_strictly() {
        let v = verifier(&Config {
            jwt_leeway_seconds: 0,
            ..hs_config()
        });
        let token = hs(&json!({"sub": "u", "exp": (NOW_S as f64) + 0.9}));
        assert_eq!(
            v.verify(&token, NOW_MS),
            Err(AuthError::Expired),
            "exp floors"
        );
        let token = hs(&json!({"sub": "u", "exp": NOW_S + 60, "nbf": (NOW_S as f64) + 0.1}));
        assert_eq!(
            v.verify(&token, NOW_MS),
            Err(AuthError::NotYetValid),
            "nbf ceils"
        );
        let token = hs(&json!({"sub": "u", "exp": -1}));
        assert_eq!(v.verify(&token, NOW_MS), Err(AuthError::Expired));
        let token = hs(&json!({"sub": "u", "exp": 1e300}));
        assert_eq!(
            v.verify(&token, NOW_MS).map(|t| t.expires_at_unix_ms),
            Ok(u64::MAX)
        );
    }

    #[test]
    fn sub_and_exp_are_required() {
        let v = verifier(&hs_config());
        for claims in [
            json!({"exp": NOW_S + 60}),
            json!({"sub": "", "exp": NOW_S + 60}),
            json!({"sub": 42, "exp": NOW_S + 60}),
            json!({"sub": null, "exp": NOW_S + 60}),
        ] {
            assert_eq!(
                v.verify(&hs(&claims), NOW_MS),
                Err(AuthError::MissingSubject),
                "{claims}"
            );
        }
        for claims in [
            json!({"sub": "u"}),
            json!({"sub": "u", "exp": null}),
            json!({"sub": "u", "exp": "tomorrow"}),
            json!({"sub": "u", "exp": true}),
        ] {
            assert_eq!(
                v.verify(&hs(&claims), NOW_MS),
                Err(AuthError::MissingExpiry),
                "{claims}"
            );
        }
        // jsonwebtoken's own claim pre-parse chokes on a structured `exp`.
        let structured = hs(&json!({"sub": "u", "exp": [NOW_S + 60]}));
        assert!(v.verify(&structured, NOW_MS).is_err());
    }

    #[test]
    fn issuer_is_enforced_only_when_configured() {
        let open = verifier(&hs_config());
        let strict = verifier(&Config {
            jwt_issuer: Some("https://auth.example".to_owned()),
            ..hs_config()
        });
        let right = hs(&json!({"sub": "u", "exp": NOW_S + 60, "iss": "https://auth.example"}));
        let wrong = hs(&json!({"sub": "u", "exp": NOW_S + 60, "iss": "https://evil.example"}));
        let array = hs(&json!({"sub": "u", "exp": NOW_S + 60, "iss": ["https://auth.example"]}));
        let none = hs(&good_claims());
        assert!(strict.verify(&right, NOW_MS).is_ok());
        for token in [&wrong, &array, &none] {
            assert_eq!(strict.verify(token, NOW_MS), Err(AuthError::WrongIssuer));
            assert!(open.verify(token, NOW_MS).is_ok());
        }
    }

    #[test]
    fn audience_is_enforced_only_when_configured() {
        let open = verifier(&hs_config());
        let strict = verifier(&Config {
            jwt_audience: Some("chat".to_owned()),
            ..hs_config()
        });
        let with = |aud: Value| hs(&json!({"sub": "u", "exp": NOW_S + 60, "aud": aud}));
        for ok in [json!("chat"), json!(["other", "chat"])] {
            assert!(strict.verify(&with(ok.clone()), NOW_MS).is_ok(), "{ok}");
        }
        for bad in [
            json!("other"),
            json!([]),
            json!(["other"]),
            json!(["chat", 1]),
            json!(7),
        ] {
            assert_eq!(
                strict.verify(&with(bad.clone()), NOW_MS),
                Err(AuthError::WrongAudience),
                "{bad}"
            );
            assert!(open.verify(&with(bad), NOW_MS).is_ok());
        }
        assert_eq!(
            strict.verify(&hs(&good_claims()), NOW_MS),
            Err(AuthError::WrongAudience)
        );
    }

    #[test]
    fn a_bad_username_claim_rejects_the_token() {
        let v = verifier(&hs_config());
        for name in [
            json!(""),
            json!("a".repeat(33)),
            json!("bad\nname"),
            json!(5),
        ] {
            let token = hs(&json!({"sub": "u", "exp": NOW_S + 60, "username": name}));
            assert_eq!(
                v.verify(&token, NOW_MS),
                Err(AuthError::InvalidUsername),
                "{name}"
            );
        }
        let token = hs(&json!({"sub": "u", "exp": NOW_S + 60, "username": "é".repeat(32)}));
        assert!(v.verify(&token, NOW_MS).is_ok(), "32 code points is fine");
    }

    #[test]
    fn a_bad_rooms_claim_rejects_the_token() {
        let v = verifier(&hs_config());
        for rooms in [
            json!("vip"),
            json!({"vip": true}),
            json!(["vip", 1]),
            json!([null]),
        ] {
            let token = hs(&json!({"sub": "u", "exp": NOW_S + 60, "rooms": rooms}));
            assert_eq!(
                v.verify(&token, NOW_MS),
                Err(AuthError::InvalidRooms),
                "{rooms}"
            );
        }
    }

    #[test]
    fn crit_headers_are_rejected() {
        let mut header = Header::new(Algorithm::HS256);
        header.crit = Some(vec!["exp".to_owned()]);
        let token = encode_with(&header, &good_claims(), &EncodingKey::from_secret(SECRET));
        assert_eq!(
            verifier(&hs_config()).verify(&token, NOW_MS),
            Err(AuthError::CriticalHeader)
        );
        let token = raw_hs(&json!({"alg": "HS256", "crit": []}), &good_claims(), SECRET);
        assert_eq!(
            verifier(&hs_config()).verify(&token, NOW_MS),
            Err(AuthError::CriticalHeader)
        );
    }

    #[test]
    fn garbage_is_malformed() {
        let v = verifier(&hs_config());
        let valid = hs(&good_claims());
        let header = valid.split('.').next().expect("header").to_owned();
        for garbage in [
            String::new(),
            "abc".to_owned(),
            "a.b".to_owned(),
            "a.b.c".to_owned(),
            "..".to_owned(),
            "a.b.c.d.e".to_owned(),
            format!("{valid}.extra"),
            format!("{}.e30.sig", b64(b"[]")),
            format!("{}.e30.sig", b64(br#"{"alg":"HS256""#)),
            format!(" {valid}"),
        ] {
            assert_eq!(
                v.verify(&garbage, NOW_MS),
                Err(AuthError::Malformed),
                "{garbage:?}"
            );
        }
        // Correctly signed, but the claims are not a JSON object.
        for payload in [&b"[1,2]"[..], b"not json", b"\"42\"", b""] {
            let message = format!("{header}.{}", b64(payload));
            let signature = jsonwebtoken::crypto::sign(
                message.as_bytes(),
                &EncodingKey::from_secret(SECRET),
                Algorithm::HS256,
            )
            .expect("sign");
            let token = format!("{message}.{signature}");
            assert_eq!(
                v.verify(&token, NOW_MS),
                Err(AuthError::Malformed),
                "{token}"
            );
        }
        // An unsigned or mis-signed payload is refused before it is parsed.
        for token in [
            format!("{header}.{}.sig", b64(b"not json")),
            format!("{header}.!!!.sig"),
            format!("{valid}A"),
            format!("{header}.{}.", b64(good_claims().to_string().as_bytes())),
        ] {
            assert!(
                matches!(
                    v.verify(&token, NOW_MS),
                    Err(AuthError::BadSignature | AuthError::Malformed)
                ),
                "{token}"
            );
        }
    }

    #[test]
    fn over_long_tokens_are_rejected_before_decoding() {
        let v = verifier(&hs_config());
        let padding = "x".repeat(TOKEN_MAX_BYTES);
        let token = hs(&json!({"sub": "u", "exp": NOW_S + 60, "pad": padding}));
        assert_eq!(v.verify(&token, NOW_MS), Err(AuthError::TooLong));
        assert_eq!(
            v.verify(&"a".repeat(TOKEN_MAX_BYTES + 1), NOW_MS),
            Err(AuthError::TooLong)
        );
    }

    #[test]
    fn arbitrary_input_never_panics() {
        fn property(input: String, now_ms: u64) -> bool {
            let v = verifier(&hs_config());
            let _ = v.verify(&input, now_ms);
            let mut mangled = hs(&good_claims());
            mangled.insert_str(mangled.len() / 2, &input);
            let _ = v.verify(&mangled, now_ms);
            true
        }
        quickcheck::QuickCheck::new()
            .tests(300)
            .quickcheck(property as fn(String, u64) -> bool);
    }

    #[test]
    fn base64url_decoding() {
        assert_eq!(base64url_decode(""), Some(vec![]));
        assert_eq!(base64url_decode("TWFu").as_deref(), Some(&b"Man"[..]));
        assert_eq!(base64url_decode("TWE").as_deref(), Some(&b"Ma"[..]));
        assert_eq!(base64url_decode("TQ").as_deref(), Some(&b"M"[..]));
        assert_eq!(base64url_decode("T"), None);
        assert_eq!(base64url_decode("TQ=="), None);
        assert_eq!(base64url_decode("+/"), None);
        for len in 0..40 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 % 256) as u8).collect();
            assert_eq!(base64url_decode(&b64(&bytes)), Some(bytes));
        }
    }

    #[test]
    fn usernames() {
        assert!(valid_username("alice"));
        assert!(valid_username(&"ü".repeat(32)));
        assert!(valid_username("a b"));
        assert!(!valid_username(""));
        assert!(!valid_username(&"a".repeat(33)));
        assert!(!valid_username("tab\there"));
        assert!(!valid_username("nul\0"));
        assert!(!valid_username("del\u{7f}"));
    }

    #[test]
    fn minting_round_trips_and_refuses_bad_input() {
        let rooms = vec!["vip".to_owned()];
        let spec = TokenSpec {
            username: Some("alice"),
            rooms: &rooms,
            issuer: Some("iss"),
            audience: Some("aud"),
            ..TokenSpec::new("user_9", NOW_S, 3600)
        };
        let token = mint_hs256(SECRET, &spec).expect("mint");
        let v = verifier(&Config {
            jwt_issuer: Some("iss".to_owned()),
            jwt_audience: Some("aud".to_owned()),
            ..hs_config()
        });
        let verified = v.verify(&token, NOW_MS).expect("valid");
        assert_eq!(verified.user_id, "user_9");
        assert_eq!(verified.username.as_deref(), Some("alice"));
        assert_eq!(verified.rooms, rooms);
        assert_eq!(verified.expires_at_unix_ms, (NOW_S + 3600 + 5) * 1000);

        assert_eq!(
            mint_hs256(SECRET, &TokenSpec::new("", NOW_S, 60)),
            Err(AuthError::MissingSubject)
        );
        assert_eq!(
            mint_hs256(
                SECRET,
                &TokenSpec {
                    username: Some(""),
                    ..TokenSpec::new("u", NOW_S, 60)
                }
            ),
            Err(AuthError::InvalidUsername)
        );
        assert_eq!(
            mint_hs256(SECRET, &TokenSpec::new("u", u64::MAX, 1)),
            Err(AuthError::MissingExpiry)
        );
    }

    #[test]
    fn error_messages_never_echo_the_token() {
        let token = hs(&json!({"sub": "u", "exp": 1}));
        let err = verifier(&hs_config())
            .verify(&token, NOW_MS)
            .expect_err("expired");
        assert_eq!(err.to_string(), "token expired");
        assert!(!err.to_string().contains(&token));
    }

    #[test]
    fn verifiers_can_be_shared_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Verifier>();
        assert_send_sync::<VerifiedToken>();
        assert_send_sync::<AuthError>();
    }

    #[test]
    fn a_mismatched_config_fails_to_build() {
        let config = Config {
            jwt_algorithm: JwtAlgorithm::Rs256,
            ..Config::default()
        };
        let e = Verifier::from_config(&config).expect_err("no key file");
        assert_eq!(e.variable(), Some("JWT_PUBLIC_KEY_FILE"));
    }
}
