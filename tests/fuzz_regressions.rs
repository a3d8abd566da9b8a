//! Regression tests for what the fuzzers found (`fuzz/`). Each input that
//! crashed a target is also committed to that target's seed corpus
//! (`fuzz/corpus/TARGET/regression-*`), so every fuzzing run replays it.

use chat_flow::auth::{AuthError, TOKEN_MAX_BYTES, TokenSpec, Verifier, mint_hs256};
use chat_flow::config::{Config, DEV_JWT_SECRET};

/// `verify_token`, `fuzz/corpus/verify_token/regression-mint-over-token-cap`:
/// a token minted with ~1,300 rooms was over the verifier's 8 KiB cap, so
/// `mint_hs256` (and `chat-flow token --rooms …`) handed out a token the
/// server always refuses. Minting now refuses it.
#[test]
fn minting_refuses_a_token_the_verifier_would_refuse_for_its_length() {
    let rooms: Vec<String> = (0..1_300).map(|i| format!("room-{i}")).collect();
    let spec = TokenSpec {
        rooms: &rooms,
        ..TokenSpec::new("CC", 1_700_000_000, 3600)
    };
    let minted = mint_hs256(DEV_JWT_SECRET.as_bytes(), &spec);
    assert!(
        minted == Err(AuthError::TooLong),
        "minted a token of {:?} bytes, over the {TOKEN_MAX_BYTES}-byte cap",
        minted.map(|t| t.len())
    );
    // Just under the cap, what is minted verifies.
    let verifier = Verifier::from_config(&Config::default()).expect("default config");
    let mut fewer = rooms.clone();
    let token = loop {
        fewer.pop();
        let spec = TokenSpec {
            rooms: &fewer,
            ..TokenSpec::new("CC", 1_700_000_000, 3600)
        };
        if let Ok(token) = mint_hs256(DEV_JWT_SECRET.as_bytes(), &spec) {
            break token;
        }
    };
    assert!(token.len() <= TOKEN_MAX_BYTES);
    assert!(token.len() > TOKEN_MAX_BYTES - 64, "the cap is exact");
    let verified = verifier
        .verify(&token, 1_700_000_000_000)
        .expect("a minted token verifies");
    assert_eq!(verified.rooms, fewer);
}
