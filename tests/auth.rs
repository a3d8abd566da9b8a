//! Authentication: tokens, usernames, failures, timeouts, expiry, refresh.

mod common;

use std::time::Duration;

use chat_flow::auth::TokenSpec;
use chat_flow::server::RunningServer;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// `AUTHENTICATE` with `token` must fail with UNAUTHORIZED (requestId echoed).
async fn refused(c: &mut Client, token: &str) -> Value {
    let v = c
        .fails("AUTHENTICATE", json!({"token": token}), "UNAUTHORIZED")
        .await;
    assert!(v["requestId"].is_string());
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_token_authenticates_with_the_documented_payload() {
    let server = start().await;
    let mut c = Client::connect(server.addr).await;
    c.send(
        json!({"type": "AUTHENTICATE", "payload": {"token": token("user_123")}, "requestId": "a1"}),
    )
    .await;
    let v = c.recv().await;
    assert_eq!(
        v,
        json!({
            "type": "AUTH_SUCCESS",
            "payload": {"userId": "user_123", "username": "user_123", "status": "online"},
            "requestId": "a1"
        })
    );
    c.ok("PING", json!({}), "PONG").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn username_precedence_token_claim_then_payload_then_user_id() {
    let server = start().await;
    let addr = server.addr;
    // The claim wins; the client cannot override it.
    let mut c = Client::connect(addr).await;
    let v = c
        .ok(
            "AUTHENTICATE",
            json!({"token": token_named("u1", "Alice"), "username": "Mallory"}),
            "AUTH_SUCCESS",
        )
        .await;
    assert_eq!(v["payload"]["userId"], "u1");
    assert_eq!(v["payload"]["username"], "Alice");
    c.join("general").await;
    let m = c.say("general", "hi").await;
    assert_eq!(m["payload"]["username"], "Alice");

    // No claim: the payload's username.
    let mut c = Client::connect(addr).await;
    let v = c
        .ok(
            "AUTHENTICATE",
            json!({"token": token("u2"), "username": "Bobby Tables"}),
            "AUTH_SUCCESS",
        )
        .await;
    assert_eq!(v["payload"]["username"], "Bobby Tables");
    let joined = c.join("general").await;
    let users = joined["payload"]["users"]
        .as_array()
        .expect("users")
        .clone();
    assert!(users.contains(&json!({"userId": "u2", "username": "Bobby Tables"})));
    assert!(users.contains(&json!({"userId": "u1", "username": "Alice"})));

    // Neither: the userId. 32 code points is fine.
    let mut c = Client::connect(addr).await;
    let v = c.auth_token(&token("u3")).await;
    assert_eq!(v["payload"]["username"], "u3");
    let mut c = Client::connect(addr).await;
    let v = c
        .ok(
            "AUTHENTICATE",
            json!({"token": token("u4"), "username": "ü".repeat(32)}),
            "AUTH_SUCCESS",
        )
        .await;
    assert_eq!(v["payload"]["username"], "ü".repeat(32));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_payload_username_is_invalid_message_and_not_a_failed_attempt() {
    let server = start().await;
    let mut c = Client::connect(server.addr).await;
    let good = token("alice");
    for name in [
        json!(""),
        json!("a".repeat(33)),
        json!("tab\there"),
        json!("new\nline"),
        json!(5),
    ] {
        c.fails(
            "AUTHENTICATE",
            json!({"token": good, "username": name}),
            "INVALID_MESSAGE",
        )
        .await;
    }
    // Two real failures: still below the limit of three.
    refused(&mut c, "garbage").await;
    refused(&mut c, "garbage").await;
    c.auth_token(&good).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_whose_username_claim_breaks_the_rules_is_rejected() {
    let server = start().await;
    let exp = now_s() + 600;
    for name in [
        json!(""),
        json!("a".repeat(33)),
        json!("bad\u{7}name"),
        json!(7),
    ] {
        let mut c = Client::connect(server.addr).await;
        refused(
            &mut c,
            &hs(
                Algorithm::HS256,
                &json!({"sub": "u", "exp": exp, "username": name}),
            ),
        )
        .await;
        c.auth("u").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_unauthorized() {
    let server = start().await;
    let now = now_s();
    let other_secret = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "u", "exp": now + 600}),
        &EncodingKey::from_secret(b"some-other-secret-of-enough-length!!"),
    )
    .expect("encode");
    let unsigned = unsigned(
        &json!({"alg": "none", "typ": "JWT"}),
        &json!({"sub": "u", "exp": now + 600}),
    );
    let cases = [
        ("wrong secret", other_secret),
        ("expired", mint(&TokenSpec::new("u", now - 3600, 60))),
        (
            "not yet valid",
            hs(
                Algorithm::HS256,
                &json!({"sub": "u", "exp": now + 600, "nbf": now + 300}),
            ),
        ),
        ("no exp", hs(Algorithm::HS256, &json!({"sub": "u"}))),
        ("no sub", hs(Algorithm::HS256, &json!({"exp": now + 600}))),
        (
            "empty sub",
            hs(Algorithm::HS256, &json!({"sub": "", "exp": now + 600})),
        ),
        (
            "other algorithm",
            hs(Algorithm::HS512, &json!({"sub": "u", "exp": now + 600})),
        ),
        ("alg none", unsigned),
        ("garbage", "not.a.token".to_owned()),
        ("empty", String::new()),
        (
            "bad rooms claim",
            hs(
                Algorithm::HS256,
                &json!({"sub": "u", "exp": now + 600, "rooms": "vip"}),
            ),
        ),
    ];
    for (what, bad) in cases {
        let mut c = Client::connect(server.addr).await;
        let v = c.request("AUTHENTICATE", json!({"token": bad})).await;
        assert_eq!(v["type"], "ERROR", "{what}: {v}");
        assert_eq!(v["payload"]["code"], "UNAUTHORIZED", "{what}: {v}");
        // Still unauthenticated.
        c.fails("PING", json!({}), "UNAUTHORIZED").await;
        // A good token afterwards works (one failure is not three).
        c.auth("u").await;
    }
    // A token that is valid but has nbf in the past is fine.
    let mut c = Client::connect(server.addr).await;
    c.auth_token(&hs(
        Algorithm::HS256,
        &json!({"sub": "u", "exp": now + 600, "nbf": now - 10}),
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leeway_applies_to_exp() {
    let expired_3s_ago = || mint(&TokenSpec::new("u", now_s() - 63, 60));
    let lenient = start().await; // JWT_LEEWAY_SECONDS 5
    let mut c = Client::connect(lenient.addr).await;
    c.auth_token(&expired_3s_ago()).await;
    let strict = start_with(|c| c.jwt_leeway_seconds = 0).await;
    let mut c = Client::connect(strict.addr).await;
    refused(&mut c, &expired_3s_ago()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_failed_attempts_close_with_1008_after_the_third_error() {
    let server = start().await;
    let mut c = Client::connect(server.addr).await;
    refused(&mut c, "bad-1").await;
    refused(&mut c, &mint(&TokenSpec::new("u", now_s() - 3600, 60))).await;
    // Still open after two.
    c.fails("PING", json!({}), "UNAUTHORIZED").await;
    c.send(json!({"type": "AUTHENTICATE", "payload": {"token": "bad-3"}, "requestId": "third"}))
        .await;
    let v = c.expect_error("UNAUTHORIZED").await;
    assert_eq!(v["requestId"], "third");
    c.expect_close(1008).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_authentication_within_auth_timeout_closes_with_1008() {
    let server = start_with(|c| c.auth_timeout_ms = 300).await;
    let mut slow = Client::connect(server.addr).await;
    let mut prompt = Client::connect(server.addr).await;
    prompt.auth("alice").await;
    // Requests before authentication do not reset the timer.
    slow.fails("PING", json!({}), "UNAUTHORIZED").await;
    let v = slow.expect_error("UNAUTHORIZED").await;
    assert!(v.get("requestId").is_none(), "{v}");
    slow.expect_close(1008).await;
    // The authenticated connection is not affected.
    prompt.expect_silence(200).await;
    prompt.ok("PING", json!({}), "PONG").await;
}

async fn expiry_server() -> RunningServer {
    start_with(|c| c.jwt_leeway_seconds = 0).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_expiry_mid_session_closes_with_1008_unless_refreshed() {
    let server = expiry_server().await;
    // exp is 1-2 s away (whole seconds), leeway 0.
    let short = mint(&TokenSpec::new("alice", now_s(), 2));
    let mut expiring = Client::connect(server.addr).await;
    expiring.auth_token(&short).await;
    expiring.join("general").await;
    let mut refreshed = Client::connect(server.addr).await;
    refreshed.auth_token(&short).await;
    refreshed.join("general").await;
    let v = refreshed
        .ok(
            "AUTHENTICATE",
            json!({"token": mint(&TokenSpec::new("alice", now_s(), 3600))}),
            "AUTH_SUCCESS",
        )
        .await;
    assert_eq!(v["payload"]["userId"], "alice");

    let v = match expiring.next_event(Duration::from_secs(4)).await {
        Some(Event::Text(v)) => v,
        other => panic!("expected ERROR token expired, got {other:?}"),
    };
    assert_eq!(v["type"], "ERROR");
    assert_eq!(v["payload"]["code"], "UNAUTHORIZED");
    assert_eq!(v["payload"]["message"], "token expired");
    assert!(v.get("requestId").is_none(), "{v}");
    expiring.expect_close(1008).await;

    // The refreshed connection outlives the original exp. Its user is still
    // in the room (alice's other connection left, but not her last).
    refreshed.expect_silence(300).await;
    let m = refreshed.say("general", "still here").await;
    assert_eq!(m["payload"]["userId"], "alice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_for_another_sub_is_unauthorized_and_the_identity_is_kept() {
    let server = start().await;
    let mut c = Client::connect(server.addr).await;
    c.auth_token(&token_named("alice", "Alice")).await;
    c.join("general").await;
    let v = c
        .fails(
            "AUTHENTICATE",
            json!({"token": token_named("mallory", "Mallory")}),
            "UNAUTHORIZED",
        )
        .await;
    assert!(v["requestId"].is_string());
    let m = c.say("general", "who am I").await;
    assert_eq!(m["payload"]["userId"], "alice");
    assert_eq!(m["payload"]["username"], "Alice");
    // A refresh for the same sub is fine and keeps the name.
    let v = c.auth_token(&token("alice")).await;
    assert_eq!(
        v["payload"],
        json!({"userId": "alice", "username": "Alice", "status": "online"})
    );
}

/// A token for `sub` granting `rooms`, valid for `ttl_s` seconds.
fn granting(sub: &str, rooms: &[&str], ttl_s: u64) -> String {
    let rooms: Vec<String> = rooms.iter().map(|r| (*r).to_owned()).collect();
    mint(&TokenSpec {
        rooms: &rooms,
        ..TokenSpec::new(sub, now_s(), ttl_s)
    })
}

/// A refresh replaces the connection's authority: the private rooms the new
/// claim no longer grants are left at once (`ROOM_LEFT` without a
/// `requestId`; `USER_LEFT` to the others), the rest is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_with_a_narrower_claim_leaves_the_rooms_it_no_longer_grants() {
    let server = start().await;
    let addr = server.addr;
    let mut owner = Client::connect(addr).await;
    owner
        .auth_token(&granting("owner", &["vip", "team"], 3600))
        .await;
    for id in ["vip", "team"] {
        owner
            .ok(
                "CREATE_ROOM",
                json!({"name": id, "id": id, "type": "private"}),
                "ROOM_CREATED",
            )
            .await;
    }
    let mut alice = Client::connect(addr).await;
    alice
        .auth_token(&granting("alice", &["vip", "team"], 3600))
        .await;
    let mine = alice
        .ok(
            "CREATE_ROOM",
            json!({"name": "Mine", "type": "private"}),
            "ROOM_CREATED",
        )
        .await;
    let mine = mine["payload"]["room"]["id"].as_str().unwrap().to_owned();
    for room in ["vip", "team", "general"] {
        alice.join(room).await;
    }
    for _ in 0..2 {
        owner.expect_type("USER_JOINED").await;
    }
    alice
        .send(json!({"type": "TYPING_STATUS", "payload": {"roomId": "vip", "isTyping": true}}))
        .await;
    owner.expect_type("TYPING_UPDATE").await;

    // The new token grants `team` only.
    alice
        .send(json!({"type": "AUTHENTICATE", "payload": {"token": granting("alice", &["team"], 3600)}, "requestId": "r1"}))
        .await;
    let v = alice.recv().await;
    assert_eq!(
        (v["type"].as_str(), v["requestId"].as_str()),
        (Some("AUTH_SUCCESS"), Some("r1")),
        "{v}"
    );
    assert_eq!(
        alice.recv().await,
        json!({"type": "ROOM_LEFT", "payload": {"roomId": "vip"}})
    );
    wait_metric(server.addr, "chatflow_rooms_revoked_total", |n| n == 1.0).await;
    alice.expect_silence(100).await;
    // The owner sees her stop typing, then leave.
    let stop = owner.expect_type("TYPING_UPDATE").await;
    assert_eq!(stop["payload"]["isTyping"], false);
    let left = owner.expect_type("USER_LEFT").await;
    assert_eq!(
        left["payload"],
        json!({"roomId": "vip", "userId": "alice", "username": "alice"})
    );
    // Gone from `vip` for good (on this token); `team`, her own room and
    // the public room are untouched.
    alice
        .fails("JOIN_ROOM", json!({"roomId": "vip"}), "FORBIDDEN")
        .await;
    alice
        .fails(
            "SEND_MESSAGE",
            json!({"roomId": "vip", "content": "x"}),
            "NOT_A_MEMBER",
        )
        .await;
    for room in ["team", mine.as_str(), "general"] {
        alice.say(room, "still here").await;
    }
    owner.expect_type("NEW_MESSAGE").await;
}

/// An older token cannot keep a later expiry: after a refresh the
/// connection ends at the new token's `exp`, earlier or later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_with_an_earlier_exp_ends_the_connection_then() {
    let server = expiry_server().await;
    let mut c = Client::connect(server.addr).await;
    c.auth_token(&granting("alice", &[], 3600)).await;
    c.join("general").await;
    // exp 1-2 s away (whole seconds), leeway 0.
    c.auth_token(&granting("alice", &[], 2)).await;
    let v = match c.next_event(Duration::from_secs(4)).await {
        Some(Event::Text(v)) => v,
        other => panic!("expected ERROR token expired, got {other:?}"),
    };
    assert_eq!(v["payload"]["message"], "token expired", "{v}");
    c.expect_close(1008).await;
}

/// A failed refresh (another user's token, a bad one) is a failed attempt
/// and changes nothing: identity, rooms and expiry stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_refresh_keeps_the_rooms_it_had() {
    let server = start().await;
    let addr = server.addr;
    let mut owner = Client::connect(addr).await;
    owner.auth_token(&granting("owner", &["vip"], 3600)).await;
    owner
        .ok(
            "CREATE_ROOM",
            json!({"name": "VIP", "id": "vip", "type": "private"}),
            "ROOM_CREATED",
        )
        .await;
    let mut alice = Client::connect(addr).await;
    alice.auth_token(&granting("alice", &["vip"], 3600)).await;
    alice.join("vip").await;
    for bad in [granting("mallory", &[], 3600), "not.a.token".to_owned()] {
        refused(&mut alice, &bad).await;
    }
    alice.expect_silence(100).await;
    let m = alice.say("vip", "still in").await;
    assert_eq!(m["payload"]["userId"], "alice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_and_audience_are_enforced_when_configured() {
    let server = start_with(|c| {
        c.jwt_issuer = Some("https://auth.example".to_owned());
        c.jwt_audience = Some("chat".to_owned());
    })
    .await;
    let now = now_s();
    let good = mint(&TokenSpec {
        issuer: Some("https://auth.example"),
        audience: Some("chat"),
        ..TokenSpec::new("u", now, 600)
    });
    for bad in [
        mint(&TokenSpec::new("u", now, 600)),
        mint(&TokenSpec {
            issuer: Some("https://evil.example"),
            audience: Some("chat"),
            ..TokenSpec::new("u", now, 600)
        }),
        mint(&TokenSpec {
            issuer: Some("https://auth.example"),
            audience: Some("other"),
            ..TokenSpec::new("u", now, 600)
        }),
    ] {
        let mut c = Client::connect(server.addr).await;
        refused(&mut c, &bad).await;
        c.auth_token(&good).await;
    }
}

/// A server accepting only `alg` with the fixture public key `public`.
async fn public_key_server(alg: &str, public: &str) -> RunningServer {
    RunningServer::start(public_key_config(alg, public))
        .await
        .expect("start")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_key_algorithms_accept_only_their_own_tokens() {
    let claims = json!({"sub": "pk-user", "exp": now_s() + 600});
    let cases = [
        (
            "RS256",
            Algorithm::RS256,
            "rsa_public.pem",
            EncodingKey::from_rsa_pem(&std::fs::read(fixture("rsa_private.pem")).unwrap()).unwrap(),
        ),
        (
            "ES256",
            Algorithm::ES256,
            "ec_p256_public.pem",
            EncodingKey::from_ec_pem(&std::fs::read(fixture("ec_p256_private.pem")).unwrap())
                .unwrap(),
        ),
        (
            "EdDSA",
            Algorithm::EdDSA,
            "ed25519_public.pem",
            EncodingKey::from_ed_pem(&std::fs::read(fixture("ed25519_private.pem")).unwrap())
                .unwrap(),
        ),
    ];
    for (name, alg, public, private) in cases {
        let server = public_key_server(name, public).await;
        let signed = jsonwebtoken::encode(&Header::new(alg), &claims, &private).expect("sign");
        let mut c = Client::connect(server.addr).await;
        // An HS256 token (even with the dev secret) is refused.
        refused(&mut c, &token("pk-user")).await;
        let v = c.auth_token(&signed).await;
        assert_eq!(v["payload"]["userId"], "pk-user", "{name}");
        drop(c);
        server.shutdown().await.expect("shutdown");
    }
    // A token signed by another EC key is refused.
    let server = public_key_server("ES256", "ec_p256_public.pem").await;
    let other =
        EncodingKey::from_ec_pem(&std::fs::read(fixture("ec_p256_other_private.pem")).unwrap())
            .unwrap();
    let forged = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &other).unwrap();
    let mut c = Client::connect(server.addr).await;
    refused(&mut c, &forged).await;
}
