//! Tokens: forged, malformed, expired, for someone else, confused
//! algorithms, oversized, brute-forced.

use std::time::Duration;

use chat_flow::auth::TokenSpec;
use chat_flow::config::DEV_JWT_SECRET;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};

use crate::common::*;
use crate::harness::*;

/// `AUTHENTICATE` with `token` on a fresh connection must fail with
/// `UNAUTHORIZED` (and leave the connection usable: a valid token works
/// afterwards).
async fn refused_token(arena: &Arena, what: &str, token: &str) {
    let mut c = Client::connect(arena.addr).await;
    let v = c.request("AUTHENTICATE", json!({"token": token})).await;
    assert_eq!(v["type"], "ERROR", "{what}: {v}");
    assert_eq!(v["payload"]["code"], "UNAUTHORIZED", "{what}: {v}");
    let message = v["payload"]["message"].as_str().expect("message");
    assert!(
        token.len() < 8 || !message.contains(token),
        "{what}: the error echoes the token"
    );
    c.auth_token(&(arena.mint)("after-refusal")).await;
}

/// `AUTHENTICATE` with `token` on a fresh connection must succeed as `sub`.
async fn accepted_token(arena: &Arena, what: &str, token: &str, sub: &str) -> Client {
    let mut c = Client::connect(arena.addr).await;
    let v = c.request("AUTHENTICATE", json!({"token": token})).await;
    assert_eq!(v["type"], "AUTH_SUCCESS", "{what}: {v}");
    assert_eq!(v["payload"]["userId"], sub, "{what}");
    c
}

fn dev_key() -> EncodingKey {
    EncodingKey::from_secret(DEV_JWT_SECRET.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_forged_or_malformed_are_unauthorized() {
    let mut arena = arena(|_| {}).await;
    let now = now_s();
    let good = json!({"sub": "u", "exp": now + 600});
    let hs256 = json!({"alg": "HS256", "typ": "JWT"});
    let valid = jws(&hs256, &good, Algorithm::HS256, &dev_key());
    let [h, _, s] = <[&str; 3]>::try_from(valid.split('.').collect::<Vec<_>>()).expect("3 parts");
    let passwd = std::fs::read("/etc/passwd").unwrap_or_else(|_| b"root:x:0:0:root".to_vec());
    let cases: Vec<(&str, String)> = vec![
        (
            "alg none",
            unsigned(&json!({"alg": "none", "typ": "JWT"}), &good),
        ),
        ("alg None", unsigned(&json!({"alg": "None"}), &good)),
        ("alg NONE", unsigned(&json!({"alg": "NONE"}), &good)),
        (
            "alg none with an HS256 signature",
            format!(
                "{}.{}",
                b64url(json!({"alg": "none"}).to_string().as_bytes()),
                valid.split_once('.').unwrap().1
            ),
        ),
        (
            "no alg",
            jws(&json!({"typ": "JWT"}), &good, Algorithm::HS256, &dev_key()),
        ),
        (
            "wrong key",
            jws(
                &hs256,
                &good,
                Algorithm::HS256,
                &EncodingKey::from_secret(b"an-attacker-chosen-secret-of-32+bytes"),
            ),
        ),
        ("HS384 with the right secret", hs(Algorithm::HS384, &good)),
        ("HS512 with the right secret", hs(Algorithm::HS512, &good)),
        (
            "claims swapped under a valid signature",
            format!(
                "{h}.{}.{s}",
                b64url(
                    json!({"sub": "admin", "exp": now + 600})
                        .to_string()
                        .as_bytes()
                )
            ),
        ),
        (
            "signature stripped",
            format!("{h}.{}.", valid.split('.').nth(1).unwrap()),
        ),
        (
            "expired beyond the leeway",
            hs(Algorithm::HS256, &json!({"sub": "u", "exp": now - 60})),
        ),
        (
            "nbf in the future",
            hs(
                Algorithm::HS256,
                &json!({"sub": "u", "exp": now + 600, "nbf": now + 60}),
            ),
        ),
        ("no sub", hs(Algorithm::HS256, &json!({"exp": now + 600}))),
        (
            "numeric sub",
            hs(Algorithm::HS256, &json!({"sub": 42, "exp": now + 600})),
        ),
        ("no exp", hs(Algorithm::HS256, &json!({"sub": "u"}))),
        (
            "exp as a string",
            hs(
                Algorithm::HS256,
                &json!({"sub": "u", "exp": (now + 600).to_string()}),
            ),
        ),
        (
            "crit header, valid signature",
            jws(
                &json!({"alg": "HS256", "crit": ["exp"], "exp": now}),
                &good,
                Algorithm::HS256,
                &dev_key(),
            ),
        ),
        (
            "kid path, signed with /etc/passwd",
            jws(
                &json!({"alg": "HS256", "kid": "../../../../../../etc/passwd"}),
                &good,
                Algorithm::HS256,
                &EncodingKey::from_secret(&passwd),
            ),
        ),
        (
            "kid /dev/null, signed with an empty key",
            jws(
                &json!({"alg": "HS256", "kid": "../../../../../../dev/null"}),
                &good,
                Algorithm::HS256,
                &EncodingKey::from_secret(b""),
            ),
        ),
        (
            "kid SQL injection, signed with an empty key",
            jws(
                &json!({"alg": "HS256", "kid": "1' OR '1'='1"}),
                &good,
                Algorithm::HS256,
                &EncodingKey::from_secret(b""),
            ),
        ),
        (
            "kid SQL union, signed with the selected 'key'",
            jws(
                &json!({"alg": "HS256", "kid": "x' UNION SELECT 'attacker"}),
                &good,
                Algorithm::HS256,
                &EncodingKey::from_secret(b"attacker"),
            ),
        ),
        (
            "jku pointing elsewhere, signed with another key",
            jws(
                &json!({"alg": "HS256", "jku": "https://evil.example/jwks.json", "kid": "evil"}),
                &good,
                Algorithm::HS256,
                &EncodingKey::from_secret(b"evil"),
            ),
        ),
        ("garbage base64", "!!!.@@@.###".to_owned()),
        (
            "base64 of non-JSON",
            format!("{}.{}.{s}", b64url(b"{\"alg"), b64url(b"nope")),
        ),
        (
            "header not an object",
            format!("{}.{}.{s}", b64url(b"[\"HS256\"]"), b64url(b"{}")),
        ),
        ("two segments", format!("{h}.{s}")),
        ("four segments", format!("{valid}.{s}")),
        (
            "padded base64",
            format!("{h}==.{}.{s}", valid.split('.').nth(1).unwrap()),
        ),
        ("empty", String::new()),
        ("whitespace", " ".to_owned()),
    ];
    for (what, bad) in &cases {
        refused_token(&arena, what, bad).await;
    }
    arena.assert_bystanders_fine().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_kid_is_ignored_not_used_to_pick_a_key() {
    let mut arena = arena(|_| {}).await;
    let good = json!({"sub": "kid-user", "exp": now_s() + 600});
    // A valid signature with a hostile kid: accepted, because kid selects
    // nothing (the one configured key verifies every token).
    for kid in ["../../../../../../etc/passwd", "1' OR '1'='1", "", "\u{0}"] {
        let t = jws(
            &json!({"alg": "HS256", "kid": kid}),
            &good,
            Algorithm::HS256,
            &dev_key(),
        );
        accepted_token(&arena, &format!("kid {kid:?}"), &t, "kid-user").await;
    }
    // A kid that is not even a string (the header no longer parses as a
    // JWS header): refused, not a crash.
    for kid in [json!({"$ne": null}), json!(["a"]), json!(7)] {
        let t = jws(
            &json!({"alg": "HS256", "kid": kid}),
            &good,
            Algorithm::HS256,
            &dev_key(),
        );
        refused_token(&arena, &format!("kid {kid}"), &t).await;
    }
    arena.assert_bystanders_fine().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_leeway_accepts_a_few_seconds_and_no_more() {
    // A leeway of 20 s, so that a loaded machine's pauses cannot move a
    // token across its edge while the test looks.
    let mut arena = arena(|c| c.jwt_leeway_seconds = 20).await;
    let now = now_s();
    refused_token(
        &arena,
        "expired 40 s ago",
        &mint(&TokenSpec::new("late", now - 100, 60)),
    )
    .await;
    accepted_token(
        &arena,
        "nbf 10 s ahead",
        &hs(
            Algorithm::HS256,
            &json!({"sub": "early", "exp": now + 600, "nbf": now + 10}),
        ),
        "early",
    )
    .await;
    // Expired 12 s ago: accepted, but only until exp + leeway, then closed.
    let mut c = accepted_token(
        &arena,
        "expired 12 s ago",
        &mint(&TokenSpec::new("late", now - 72, 60)),
        "late",
    )
    .await;
    match c.next_event(Duration::from_secs(15)).await {
        Some(Event::Text(v)) => {
            assert_eq!(v["payload"]["code"], "UNAUTHORIZED", "{v}");
            assert_eq!(v["payload"]["message"], "token expired", "{v}");
        }
        other => panic!("expected ERROR token expired, got {other:?}"),
    }
    c.expect_close(1008).await;
    arena.assert_bystanders_fine().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_for_another_issuer_or_audience_are_unauthorized() {
    const ISS: &str = "https://auth.example";
    let mut config = test_config();
    config.jwt_issuer = Some(ISS.to_owned());
    config.jwt_audience = Some("chat".to_owned());
    let mint_for = |sub: &str| {
        mint(&TokenSpec {
            issuer: Some(ISS),
            audience: Some("chat"),
            ..TokenSpec::new(sub, now_s(), 3600)
        })
    };
    let mut arena = Arena::start(config, Box::new(mint_for), false).await;
    let exp = now_s() + 600;
    for (what, claims) in [
        ("no iss", json!({"sub": "u", "exp": exp, "aud": "chat"})),
        (
            "another iss",
            json!({"sub": "u", "exp": exp, "iss": "https://evil.example", "aud": "chat"}),
        ),
        (
            "iss in other case",
            json!({"sub": "u", "exp": exp, "iss": "HTTPS://AUTH.EXAMPLE", "aud": "chat"}),
        ),
        ("no aud", json!({"sub": "u", "exp": exp, "iss": ISS})),
        (
            "another aud",
            json!({"sub": "u", "exp": exp, "iss": ISS, "aud": "admin"}),
        ),
        (
            "aud list without ours",
            json!({"sub": "u", "exp": exp, "iss": ISS, "aud": ["admin", "billing"]}),
        ),
        (
            "aud list with a non-string",
            json!({"sub": "u", "exp": exp, "iss": ISS, "aud": ["chat", 1]}),
        ),
    ] {
        refused_token(&arena, what, &hs(Algorithm::HS256, &claims)).await;
    }
    let listed = hs(
        Algorithm::HS256,
        &json!({"sub": "u", "exp": exp, "iss": ISS, "aud": ["admin", "chat"]}),
    );
    accepted_token(&arena, "aud list with ours", &listed, "u").await;
    arena.assert_bystanders_fine().await;
}

/// An RS256 token for `sub` with `header`, signed with the fixture key.
fn rs256(header: &Value, sub: &str) -> String {
    let private = EncodingKey::from_rsa_pem(&std::fs::read(fixture("rsa_private.pem")).unwrap())
        .expect("RSA key");
    let claims = json!({"sub": sub, "exp": now_s() + 3600});
    jws(header, &claims, Algorithm::RS256, &private)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_hs_rs_confusion_is_unauthorized() {
    let config = public_key_config("RS256", "rsa_public.pem");
    let mint_rs = |sub: &str| rs256(&json!({"alg": "RS256", "typ": "JWT"}), sub);
    let mut arena = Arena::start(config, Box::new(mint_rs), false).await;
    let public_pem = std::fs::read(fixture("rsa_public.pem")).expect("public key");
    let claims = json!({"sub": "u", "exp": now_s() + 600});
    // The classic: the server's public key (which is public) as an HMAC secret.
    let pem_as_secret = EncodingKey::from_secret(&public_pem);
    let confused = [
        (
            "HS256 signed with the RSA public key PEM",
            jws(
                &json!({"alg": "HS256", "typ": "JWT"}),
                &claims,
                Algorithm::HS256,
                &pem_as_secret,
            ),
        ),
        (
            "alg RS256 but an HMAC signature with the PEM",
            jws(
                &json!({"alg": "RS256", "typ": "JWT"}),
                &claims,
                Algorithm::HS256,
                &pem_as_secret,
            ),
        ),
        (
            "HS256 signed with the PEM without its trailing newline",
            jws(
                &json!({"alg": "HS256"}),
                &claims,
                Algorithm::HS256,
                &EncodingKey::from_secret(public_pem.trim_ascii_end()),
            ),
        ),
        ("HS256 with the dev secret", token("u")),
        ("alg none", unsigned(&json!({"alg": "none"}), &claims)),
    ];
    for (what, t) in &confused {
        refused_token(&arena, what, t).await;
    }
    // A hostile kid on a genuine RS256 token changes nothing: kid selects no
    // key, the configured public key verifies it.
    for kid in ["../../../../../../etc/passwd", "1' OR '1'='1"] {
        let t = rs256(&json!({"alg": "RS256", "kid": kid}), "rs-user");
        accepted_token(&arena, &format!("RS256 with kid {kid:?}"), &t, "rs-user").await;
    }
    arena.assert_bystanders_fine().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_oversized_are_refused_by_the_token_cap_or_the_message_limit() {
    let mut arena = arena(|_| {}).await;
    // 60 KB: the message fits MAX_MESSAGE_BYTES (64 KiB), the token is over
    // the verifier's 8 KiB cap: a bad token (refused before any decoding),
    // UNAUTHORIZED and a failed attempt; the third closes the connection.
    let mut c = Client::connect(arena.addr).await;
    let big = "a".repeat(60_000);
    for _ in 0..3 {
        let v = c
            .fails("AUTHENTICATE", json!({"token": big}), "UNAUTHORIZED")
            .await;
        assert_eq!(v["payload"]["message"], "token is too long");
    }
    c.expect_close(1008).await;
    // At the cap exactly, the token is decoded (and refused: not a JWT);
    // one byte over, it is refused for its length.
    let mut c = Client::connect(arena.addr).await;
    let at_cap = format!(
        "{}.{}.{}",
        "a".repeat(4000),
        "b".repeat(4000),
        "c".repeat(190)
    );
    assert_eq!(at_cap.len(), 8192);
    let v = c
        .fails("AUTHENTICATE", json!({"token": at_cap}), "UNAUTHORIZED")
        .await;
    assert_ne!(v["payload"]["message"], "token is too long");
    let v = c
        .fails(
            "AUTHENTICATE",
            json!({"token": format!("{at_cap}c")}),
            "UNAUTHORIZED",
        )
        .await;
    assert_eq!(v["payload"]["message"], "token is too long");
    // Two failures so far: a good token still gets in.
    c.auth("big-token").await;
    // 1 MB: over MAX_MESSAGE_BYTES, the connection is closed with 1009.
    let mut c = Client::connect(arena.addr).await;
    c.send(json!({"type": "AUTHENTICATE", "payload": {"token": "a".repeat(1 << 20)}}))
        .await;
    c.expect_close(1009).await;
    arena.assert_bystanders_fine().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_brute_force_is_closed_with_1008_after_three_failures() {
    let mut arena = arena(|_| {}).await;
    let mut c = Client::connect(arena.addr).await;
    for guess in ["guess-1", "guess-2"] {
        c.fails("AUTHENTICATE", json!({"token": guess}), "UNAUTHORIZED")
            .await;
    }
    c.send(json!({"type": "AUTHENTICATE", "payload": {"token": "guess-3"}, "requestId": "third"}))
        .await;
    assert_eq!(c.expect_error("UNAUTHORIZED").await["requestId"], "third");
    c.expect_close(1008).await;
    arena.assert_bystanders_fine().await;
}
