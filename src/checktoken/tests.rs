//! Each verdict `checktoken` can give, its explanation, and that what it
//! shows agrees with the verifier to the millisecond.

use super::*;
use crate::config::JwtAlgorithm;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

const NOW_S: u64 = 1_700_000_000;
const NOW_MS: u64 = NOW_S * 1000 + 250;
const SECRET: &str = "checktoken-unit-test-secret-0123456789";

fn config(f: impl FnOnce(&mut Config)) -> Config {
    let mut config = Config {
        jwt_key: JwtKeySource::Secret(SECRET.as_bytes().to_vec()),
        ..Config::default()
    };
    f(&mut config);
    config
}

fn sign(alg: Algorithm, claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode")
}

fn hs(claims: Value) -> String {
    sign(Algorithm::HS256, &claims, SECRET)
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn report_with(token: &str, config: &Config, now_ms: u64) -> Report {
    let verifier = Verifier::from_config(config).expect("verifier");
    check(token, config, &verifier, now_ms)
}

fn report(token: &str) -> Report {
    report_with(token, &config(|_| {}), NOW_MS)
}

/// The verdict line's reason and the `why` line of a rejected token.
fn rejected(report: &Report) -> (&'static str, String) {
    let error = report.verdict().clone().expect_err("rejected");
    let why = report.why.clone().expect("a rejection is explained");
    (reason_code(error), why)
}

fn valid_claims() -> Value {
    json!({"sub": "alice", "iat": NOW_S - 60, "exp": NOW_S + 3600})
}

#[test]
fn an_accepted_token_shows_what_it_grants() {
    let token = hs(json!({
        "sub": "alice", "username": "Alice", "rooms": ["vip", "team"],
        "iat": NOW_S - 60, "exp": NOW_S + 3600,
    }));
    let report = report(&token);
    assert!(report.accepted());
    let text = report.to_text();
    for expected in [
        "verdict    accepted\n",
        "user       \"alice\"\n",
        "username   \"Alice\" (from the token",
        "rooms      [\"vip\",\"team\"]\n",
        "  iat      2023-11-14T22:12:20Z\n",
        "  exp      2023-11-14T23:13:20Z\n",
        "now        2023-11-14T22:13:20.250Z\n",
        "expires    2023-11-14T23:13:25.000Z (exp + 5 s of leeway), in 1h 4s: the server closes",
        "checked    HS256 with JWT_SECRET (38 bytes); iss not checked; aud not checked; leeway 5 s\n",
    ] {
        assert!(text.contains(expected), "{expected:?} in\n{text}");
    }
    assert!(!text.contains(SECRET), "never the secret:\n{text}");
    assert!(!text.contains("why"), "{text}");

    let json = report.to_json();
    assert_eq!(json["accepted"], true);
    assert_eq!(json["reason"], Value::Null);
    assert_eq!(json["grants"]["user_id"], "alice");
    assert_eq!(json["grants"]["rooms"], json!(["vip", "team"]));
    assert_eq!(
        json["grants"]["expires_at_unix_ms"],
        (NOW_S + 3600 + 5) * 1000
    );
    assert_eq!(json["claims"]["username"], "Alice");
    assert_eq!(json["header"]["alg"], "HS256");
    assert_eq!(json["config"]["key"], "JWT_SECRET");
    assert!(!json.to_string().contains(SECRET));
}

#[test]
fn an_expired_token_says_since_when_and_whether_it_would_pass_on_time() {
    let token = hs(json!({"sub": "alice", "exp": NOW_S - 3600}));
    let report = report(&token);
    let (reason, why) = rejected(&report);
    assert_eq!(reason, "expired");
    assert_eq!(
        why,
        "exp is 2023-11-14T21:13:20Z; with 5 s of leeway (JWT_LEEWAY_SECONDS) the server \
         refuses it from 2023-11-14T21:13:25.000Z, 59m 55s ago"
    );
    let text = report.to_text();
    assert!(
        text.contains("verdict    rejected (expired): token expired\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "otherwise  on time it would be accepted (checked again at 2023-11-14T21:13:24.999Z"
        ),
        "{text}"
    );
    let json = report.to_json();
    assert_eq!(json["reason"], "expired");
    assert_eq!(json["otherwise"]["accepted"], true);

    // Expired and from another issuer: the verifier stops at the first.
    let token = hs(json!({"sub": "a", "exp": NOW_S - 3600, "iss": "other"}));
    let report = report_with(
        &token,
        &config(|c| c.jwt_issuer = Some("mine".into())),
        NOW_MS,
    );
    assert_eq!(rejected(&report).0, "expired");
    assert!(
        report.to_text().contains(
            "otherwise  on time it would still be rejected (wrong_issuer): iss is \"other\"; \
             JWT_ISSUER requires \"mine\" (checked again at 2023-11-14T21:13:24.999Z)"
        ),
        "{}",
        report.to_text()
    );
}

#[test]
fn the_leeway_is_the_configured_one() {
    let token = hs(json!({"sub": "a", "exp": NOW_S - 2}));
    assert!(report(&token).accepted(), "2 s late, 5 s of leeway");
    let strict = config(|c| c.jwt_leeway_seconds = 0);
    let report = report_with(&token, &strict, NOW_MS);
    let (reason, why) = rejected(&report);
    assert_eq!(reason, "expired");
    assert!(why.contains("with 0 s of leeway"), "{why}");
}

/// What the report says about time is what the verifier does, to the
/// millisecond: accepted until just before the instant shown, refused from
/// it (`exp` rounded down, `nbf` up, as the verifier reads them).
#[test]
fn the_instants_shown_are_the_verifiers() {
    for leeway in [0, 5, 86_400] {
        let config = config(|c| c.jwt_leeway_seconds = leeway);
        let verifier = Verifier::from_config(&config).expect("verifier");
        let token = hs(json!({"sub": "a", "exp": NOW_S as f64 + 0.9, "nbf": NOW_S as f64 - 99.5}));
        let decoded = decode_unverified(&token);
        let until = refused_from_ms(decoded.expires_s().expect("exp"), leeway);
        let from = accepted_from_ms(decoded.not_before_s().expect("nbf"), leeway);
        let verdict = |at| verifier.verify(&token, at).map(|t| t.expires_at_unix_ms);
        assert_eq!(verdict(until - 1), Ok(until), "leeway {leeway}");
        assert_eq!(verdict(until), Err(AuthError::Expired), "leeway {leeway}");
        assert_eq!(verdict(from), Ok(until), "leeway {leeway}");
        assert_eq!(
            verdict(from - 1),
            Err(AuthError::NotYetValid),
            "leeway {leeway}"
        );
    }
}

#[test]
fn a_token_not_yet_valid_says_from_when() {
    let token = hs(json!({"sub": "a", "exp": NOW_S + 7200, "nbf": NOW_S + 3600}));
    let report = report(&token);
    let (reason, why) = rejected(&report);
    assert_eq!(reason, "not_yet_valid");
    assert_eq!(
        why,
        "nbf is 2023-11-14T23:13:20Z; with 5 s of leeway (JWT_LEEWAY_SECONDS) the server \
         accepts it from 2023-11-14T23:13:15.000Z, in 59m 54s"
    );
    assert!(report.to_text().contains("on time it would be accepted"));

    // nbf after exp: no moment would do.
    let token = hs(json!({"sub": "a", "exp": NOW_S + 100, "nbf": NOW_S + 3600}));
    let text = report_with(&token, &config(|_| {}), NOW_MS).to_text();
    assert!(
        text.contains("otherwise  the token is never valid"),
        "{text}"
    );
}

#[test]
fn signature_algorithm_and_header_refusals() {
    let (reason, why) = rejected(&report(&sign(
        Algorithm::HS256,
        &valid_claims(),
        "another-secret",
    )));
    assert_eq!(reason, "bad_signature");
    assert!(why.contains("with JWT_SECRET (38 bytes)"), "{why}");

    let (reason, why) = rejected(&report(&sign(Algorithm::HS384, &valid_claims(), SECRET)));
    assert_eq!(reason, "wrong_algorithm");
    assert_eq!(
        why,
        "alg is \"HS384\"; this server accepts HS256 only (JWT_ALGORITHM)"
    );

    let header = b64(br#"{"alg":"HS256","crit":["exp"]}"#);
    let token = format!(
        "{header}.{}.c2ln",
        b64(valid_claims().to_string().as_bytes())
    );
    let (reason, why) = rejected(&report(&token));
    assert_eq!(reason, "critical_header");
    assert!(why.contains("crit [\"exp\"] (an array)"), "{why}");

    // With the development secret a bad signature says where the secret
    // may be.
    let dev = config(|c| c.jwt_key = JwtKeySource::DevSecret);
    let report = report_with(
        &sign(Algorithm::HS256, &valid_claims(), SECRET),
        &dev,
        NOW_MS,
    );
    let text = report.to_text();
    assert!(
        text.contains("the built-in development secret (JWT_SECRET is not set)"),
        "{text}"
    );
    assert!(
        text.contains("note       JWT_SECRET is not set where this command ran"),
        "{text}"
    );
    assert_eq!(report.to_json()["config"]["key"], "development_secret");
}

#[test]
fn public_key_configurations_are_described_by_their_file() {
    let path = format!(
        "{}/tests/fixtures/jwt/ec_p256_public.pem",
        env!("CARGO_MANIFEST_DIR")
    );
    let config = config(|c| {
        c.jwt_algorithm = JwtAlgorithm::Es256;
        c.jwt_key = JwtKeySource::PublicKeyPem {
            path: path.clone().into(),
            pem: std::fs::read(&path).expect("fixture"),
        };
    });
    let report = report_with(&hs(valid_claims()), &config, NOW_MS);
    let (reason, why) = rejected(&report);
    assert_eq!(reason, "wrong_algorithm");
    assert!(why.contains("accepts ES256 only"), "{why}");
    assert!(
        report.to_text().contains(&format!(
            "ES256 with the public key in JWT_PUBLIC_KEY_FILE {path:?}"
        )),
        "{}",
        report.to_text()
    );
    assert_eq!(report.to_json()["config"]["key_file"], path.as_str());
}

#[test]
fn issuer_and_audience_refusals_show_both_values() {
    let strict = config(|c| {
        c.jwt_issuer = Some("https://auth.example".into());
        c.jwt_audience = Some("chat".into());
    });
    let claims = |extra: Value| {
        let mut claims = valid_claims();
        claims
            .as_object_mut()
            .expect("object")
            .extend(extra.as_object().expect("object").clone());
        hs(claims)
    };
    let report = report_with(&claims(json!({"aud": "chat"})), &strict, NOW_MS);
    assert_eq!(
        rejected(&report),
        (
            "wrong_issuer",
            "iss is missing; JWT_ISSUER requires \"https://auth.example\"".to_owned()
        )
    );
    let report = report_with(
        &claims(json!({"iss": "https://evil.example", "aud": "chat"})),
        &strict,
        NOW_MS,
    );
    assert!(
        rejected(&report)
            .1
            .starts_with("iss is \"https://evil.example\";")
    );
    let report = report_with(
        &claims(json!({"iss": "https://auth.example", "aud": ["web", 7]})),
        &strict,
        NOW_MS,
    );
    let (reason, why) = rejected(&report);
    assert_eq!(reason, "wrong_audience");
    assert!(
        why.starts_with("aud is [\"web\",7] (an array); JWT_AUDIENCE requires \"chat\""),
        "{why}"
    );
    let ok = report_with(
        &claims(json!({"iss": "https://auth.example", "aud": ["web", "chat"]})),
        &strict,
        NOW_MS,
    );
    assert!(ok.accepted());
    assert!(
        ok.to_text()
            .contains("iss must be \"https://auth.example\" (JWT_ISSUER); aud must be \"chat\""),
        "{}",
        ok.to_text()
    );
}

#[test]
fn claim_refusals_name_the_claim_and_its_value() {
    let exp = NOW_S + 3600;
    for (claims, reason, why) in [
        (
            json!({"exp": exp}),
            "invalid_sub",
            "sub is missing; it must be a non-empty string (the user id)",
        ),
        (
            json!({"sub": "", "exp": exp}),
            "invalid_sub",
            "sub is an empty string;",
        ),
        (
            json!({"sub": 42, "exp": exp}),
            "invalid_sub",
            "sub is 42 (a number);",
        ),
        (json!({"sub": "a"}), "invalid_exp", "exp is missing;"),
        (
            json!({"sub": "a", "exp": "tomorrow"}),
            "invalid_exp",
            "exp is \"tomorrow\"; it must be a number of seconds",
        ),
        (
            json!({"sub": "a", "exp": exp, "nbf": true}),
            "invalid_nbf",
            "nbf is true (a boolean);",
        ),
        (
            json!({"sub": "a", "exp": exp, "username": "x".repeat(33)}),
            "invalid_username",
            ", which has 33 characters; when present it must be a string of 1-32",
        ),
        (
            json!({"sub": "a", "exp": exp, "username": "a\u{7}b"}),
            "invalid_username",
            "username is \"a\\u0007b\", which holds a control character;",
        ),
        (
            json!({"sub": "a", "exp": exp, "username": ""}),
            "invalid_username",
            "username is an empty string;",
        ),
        (
            json!({"sub": "a", "exp": exp, "rooms": "vip"}),
            "invalid_rooms",
            "rooms is \"vip\"; when present it must be an array of strings",
        ),
        (
            json!({"sub": "a", "exp": exp, "rooms": ["vip", {"id": 1}]}),
            "invalid_rooms",
            "(rooms[1] is {\"id\":1} (an object))",
        ),
    ] {
        let report = report(&hs(claims.clone()));
        let (got_reason, got_why) = rejected(&report);
        assert_eq!(got_reason, reason, "{claims}");
        assert!(got_why.contains(why), "{claims}: {got_why:?} lacks {why:?}");
    }
}

#[test]
fn malformed_and_oversized_tokens_say_what_is_wrong() {
    let claims = b64(valid_claims().to_string().as_bytes());
    let header = b64(br#"{"alg":"HS256","typ":"JWT"}"#);
    for (token, why) in [
        (
            "hello".to_owned(),
            "not a JWT: a JWT is three base64url segments joined by dots \
             (header.claims.signature); this has 1 segment",
        ),
        ("a.b.c.d".to_owned(), "this has 4 segments"),
        (format!("{header}.{claims}"), "this has 2 segments"),
        (
            format!("***.{claims}.c2ln"),
            "not a JWT: the header (first segment) is not base64url",
        ),
        (
            format!("{}.{claims}.c2ln", b64(b"[1]")),
            "the header (first segment) is JSON but not an object",
        ),
        (
            format!("{}.{claims}.c2ln", b64(b"{}")),
            "the header has no alg",
        ),
        (
            format!("{}.{claims}.c2ln", b64(br#"{"alg":7}"#)),
            "the header's alg is 7 (a number)",
        ),
        (
            format!("{header}.{claims}.*"),
            "the signature (third segment) is not base64url",
        ),
        (
            format!("{}.{claims}.c2ln", b64(br#"{"alg":"HS256","typ":7}"#)),
            "the JWT library refused their structure",
        ),
    ] {
        let report = report(&token);
        let (reason, got) = rejected(&report);
        assert_eq!(reason, "malformed", "{token}");
        assert!(got.contains(why), "{token}: {got:?} lacks {why:?}");
    }

    // Claims that are not JSON under a good signature.
    let bad_claims = b64(b"not json");
    let signature = {
        let key = EncodingKey::from_secret(SECRET.as_bytes());
        jsonwebtoken::crypto::sign(
            format!("{header}.{bad_claims}").as_bytes(),
            &key,
            Algorithm::HS256,
        )
        .expect("sign")
    };
    let (reason, why) = rejected(&report(&format!("{header}.{bad_claims}.{signature}")));
    assert_eq!(reason, "malformed");
    assert_eq!(why, "the claims (second segment) are not JSON");

    let huge = hs(json!({"sub": "a", "exp": NOW_S + 60, "pad": "x".repeat(9000)}));
    let report = report(&huge);
    let (reason, why) = rejected(&report);
    assert_eq!(reason, "too_long");
    assert_eq!(
        why,
        format!(
            "the token is {} bytes; the server refuses tokens over 8192 bytes without reading them",
            huge.len()
        )
    );
    let text = report.to_text();
    assert!(text.contains("more characters)"), "long claims are cut");
    assert!(text.len() < 6000, "{}", text.len());
    assert_eq!(
        report.to_json()["claims"]["pad"].as_str().map(str::len),
        Some(9000),
        "--json shows everything"
    );

    let text = report_with("Bearer abc.def.ghi", &config(|_| {}), NOW_MS).to_text();
    assert!(
        text.contains("note       the input starts with \"Bearer \""),
        "{text}"
    );
}

#[test]
fn the_terminal_never_gets_a_raw_control_character() {
    let token = hs(json!({
        "sub": "a\u{1b}[31mred", "exp": NOW_S + 60,
        "note": "csi\u{9b}2J del\u{7f} bidi\u{202e}",
    }));
    let text = report(&token).to_text();
    assert!(
        !text.chars().any(|c| c.is_control() && c != '\n'),
        "{text:?}"
    );
    assert!(text.contains("\\u001b[31mred"), "{text}");
    assert!(text.contains("csi\\u009b2J del\\u007f"), "{text}");
    // Still valid JSON of the same value.
    let escaped = escape_controls(&json!("\u{9b}\u{7f}").to_string());
    assert_eq!(
        serde_json::from_str::<Value>(&escaped).expect("json"),
        json!("\u{9b}\u{7f}")
    );
}

#[test]
fn extreme_dates_do_not_panic() {
    for exp in [json!(u64::MAX), json!(1e300), json!(-5), json!(0.5)] {
        let report = report(&hs(json!({"sub": "a", "exp": exp, "nbf": exp, "iat": exp})));
        let _ = report.to_text();
        let _ = report.to_json().to_string();
    }
    assert_eq!(relative(u64::MAX, 0).split_whitespace().next(), Some("in"));
    assert_eq!(date_s(0), "1970-01-01T00:00:00Z");
}

#[test]
fn every_reason_has_a_distinct_code() {
    let all = [
        AuthError::TooLong,
        AuthError::Malformed,
        AuthError::WrongAlgorithm,
        AuthError::CriticalHeader,
        AuthError::BadSignature,
        AuthError::MissingSubject,
        AuthError::MissingExpiry,
        AuthError::InvalidNotBefore,
        AuthError::Expired,
        AuthError::NotYetValid,
        AuthError::WrongIssuer,
        AuthError::WrongAudience,
        AuthError::InvalidUsername,
        AuthError::InvalidRooms,
        AuthError::Signing,
    ];
    let codes: std::collections::BTreeSet<_> = all.iter().map(|e| reason_code(*e)).collect();
    assert_eq!(codes.len(), all.len());
}
