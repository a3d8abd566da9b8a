//! Tests of the verifier, the claims it checks and minting.

use super::*;
use crate::config::{DEV_JWT_SECRET, JwtKeySource};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

const NOW_S: u64 = 1_700_000_000;
const NOW_MS: u64 = NOW_S * 1000;
const SECRET: &[u8] = b"test-secret-test-secret-test-secret!";

fn fixture_path(name: &str) -> String {
    format!("{}/tests/fixtures/jwt/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> Vec<u8> {
    let path = fixture_path(name);
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
            path: fixture_path(file).into(),
            pem: std::fs::read(fixture_path(file)).expect("fixture"),
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
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
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
        let token = encode_with(
            &Header::new(keys::jsonwebtoken_algorithm(algorithm)),
            &good_claims(),
            &key,
        );
        let config = public_key_config(algorithm, public);
        let verified = verifier(&config).verify(&token, NOW_MS).expect("valid");
        assert_eq!(verified.user_id, "user_1");
        // An HS256 token signed with the dev secret never passes.
        let dev =
            mint_hs256(DEV_JWT_SECRET.as_bytes(), &TokenSpec::new("u", NOW_S, 60)).expect("mint");
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

/// The assertions on the hand-written decoder that `decode_segment`
/// replaced, which it must still pass.
#[test]
fn segments_decode_as_unpadded_base64url() {
    assert_eq!(decode_segment(""), Some(vec![]));
    assert_eq!(decode_segment("TWFu").as_deref(), Some(&b"Man"[..]));
    assert_eq!(decode_segment("TWE").as_deref(), Some(&b"Ma"[..]));
    assert_eq!(decode_segment("TQ").as_deref(), Some(&b"M"[..]));
    assert_eq!(decode_segment("T"), None);
    assert_eq!(decode_segment("TQ=="), None);
    assert_eq!(decode_segment("TWE="), None);
    assert_eq!(decode_segment("+/"), None);
    assert_eq!(decode_segment("TW Fu"), None);
    for len in 0..40 {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 37 % 256) as u8).collect();
        assert_eq!(decode_segment(&b64(&bytes)), Some(bytes));
    }
    // Bits left over in the last character are ignored, as they were.
    assert_eq!(decode_segment("TR").as_deref(), Some(&b"M"[..]));
    assert_eq!(decode_segment("TWF").as_deref(), Some(&b"Ma"[..]));
}

/// A header whose last character carries non-zero leftover bits still
/// decodes, so its `alg` is judged as before (`WrongAlgorithm`, not
/// `Malformed`).
#[test]
fn leftover_bits_in_the_header_do_not_change_the_error() {
    let header = b64(br#"{"alg":"none"}"#);
    let last = header.chars().last().expect("non-empty");
    const ALPHABET: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let sextet = ALPHABET.find(last).expect("base64url");
    assert_eq!(sextet % 4, 0, "two leftover bits, zero in canonical form");
    let noisy = format!(
        "{}{}",
        &header[..header.len() - 1],
        &ALPHABET[sextet + 1..sextet + 2]
    );
    let token = format!("{noisy}.{}.", b64(good_claims().to_string().as_bytes()));
    assert_eq!(
        verifier(&hs_config()).verify(&token, NOW_MS),
        Err(AuthError::WrongAlgorithm)
    );
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
