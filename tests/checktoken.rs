//! `chat-flow checktoken`, run as a process: every verdict with its exit
//! code (0 accepted, 1 rejected, 2 usage or configuration error), the token
//! from standard input, `--json`, and the configuration read from flags,
//! the environment and `.env` as the server reads it.
//!
//! Every run uses `env_clear()` (plus `PATH`) and its own temporary working
//! directory, so no stray `.env` or variable leaks in.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use chat_flow::config::DEV_JWT_SECRET;
use common::process::{TempDir, chat_flow, wait_output};
use common::{b64url, now_s};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const SECRET: &str = "checktoken-integration-secret-0123456789";

/// Runs `chat-flow checktoken ARGS` in `dir` with only `env` (and `PATH`),
/// `stdin` written to its standard input; fails the test after 10 s.
fn run_in(dir: &Path, args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Output {
    let mut child = chat_flow(dir, &[&["checktoken"], args].concat(), env)
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn chat-flow");
    let mut input = child.stdin.take().expect("stdin");
    // A process that does not read its input closes the pipe: not an error.
    let _ = input.write_all(stdin);
    drop(input);
    wait_output(child, Duration::from_secs(10))
}

/// What one run printed and how it exited.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// The text report's line for `label` (without the label).
    fn line(&self, label: &str) -> &str {
        self.stdout
            .lines()
            .find_map(|line| {
                line.strip_prefix(label)
                    .filter(|rest| rest.starts_with(' '))
                    .map(str::trim_start)
            })
            .unwrap_or_else(|| panic!("no {label:?} line in:\n{}", self.stdout))
    }
}

fn checktoken_in(dir: &Path, args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Run {
    let out = run_in(dir, args, env, stdin);
    Run {
        code: out.status.code().expect("exited, not killed"),
        stdout: String::from_utf8(out.stdout).expect("UTF-8 stdout"),
        stderr: String::from_utf8(out.stderr).expect("UTF-8 stderr"),
    }
}

/// `checktoken TOKEN` with `env`, in an empty directory.
fn checktoken(token: &str, env: &[(&str, &str)]) -> Run {
    let dir = TempDir::new("run");
    checktoken_in(&dir.0, &[token], env, b"")
}

fn sign(alg: Algorithm, claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode")
}

/// A token signed with `SECRET` carrying `claims` plus what `extra` adds.
fn hs(extra: Value) -> String {
    let mut claims = json!({"sub": "alice", "iat": now_s(), "exp": now_s() + 3600});
    claims
        .as_object_mut()
        .expect("object")
        .extend(extra.as_object().expect("object").clone());
    sign(Algorithm::HS256, &claims, SECRET)
}

const WITH_SECRET: &[(&str, &str)] = &[("JWT_SECRET", SECRET)];

/// Asserts a rejection: exit 1, the reason on the verdict line and `why`
/// containing `why`.
fn assert_rejected(run: &Run, reason: &str, why: &str) {
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.line("verdict")
            .starts_with(&format!("rejected ({reason}): ")),
        "{}",
        run.stdout
    );
    assert!(run.line("why").contains(why), "{why:?} in:\n{}", run.stdout);
}

#[test]
fn an_accepted_token_exits_0_and_shows_what_it_grants() {
    let token = hs(json!({"username": "Alice", "rooms": ["vip"]}));
    let run = checktoken(&token, WITH_SECRET);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(run.line("verdict"), "accepted");
    assert_eq!(run.line("user"), "\"alice\"");
    assert!(run.line("username").starts_with("\"Alice\""));
    assert_eq!(run.line("rooms"), "[\"vip\"]");
    assert!(run.line("expires").contains("(exp + 5 s of leeway), in 1h"));
    assert!(
        run.line("checked")
            .starts_with("HS256 with JWT_SECRET (40 bytes);")
    );
    assert_eq!(run.line("header"), r#"{"alg":"HS256","typ":"JWT"}"#);
    assert!(run.line("claims").contains(r#""sub":"alice""#));
    assert!(run.stderr.is_empty(), "{}", run.stderr);
    assert!(!run.stdout.contains(SECRET), "never the secret");
}

#[test]
fn the_token_is_read_from_standard_input_with_a_dash() {
    let dir = TempDir::new("stdin");
    let token = hs(json!({}));
    let run = checktoken_in(&dir.0, &["-"], WITH_SECRET, format!("{token}\n").as_bytes());
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(run.line("verdict"), "accepted");
    // CRLF and surrounding blanks too.
    let run = checktoken_in(
        &dir.0,
        &["-"],
        WITH_SECRET,
        format!("  {token}\r\n").as_bytes(),
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    // Nothing on stdin is a usage error, not a verdict.
    for empty in [&b""[..], b"\n", b"  \r\n\t"] {
        let run = checktoken_in(&dir.0, &["-"], WITH_SECRET, empty);
        assert_eq!(run.code, 2, "{empty:?}");
        assert!(run.stderr.contains("no token given"), "{}", run.stderr);
        assert!(run.stdout.is_empty());
    }
    // Bytes that are not UTF-8 are not a JWT.
    let run = checktoken_in(&dir.0, &["-"], WITH_SECRET, b"\xff\xfe.\x00.\x80");
    assert_rejected(&run, "malformed", "not a JWT");
    assert!(run.line("note").contains("not UTF-8"), "{}", run.stdout);
    // More than a megabyte is refused without being judged.
    let run = checktoken_in(&dir.0, &["-"], WITH_SECRET, &vec![b'a'; 1024 * 1024 + 1]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("more than 1048576 bytes"),
        "{}",
        run.stderr
    );
}

#[test]
fn json_output_has_the_same_verdict() {
    let dir = TempDir::new("json");
    let token = hs(json!({"exp": now_s() - 7200}));
    let run = checktoken_in(&dir.0, &["--json", &token], WITH_SECRET, b"");
    assert_eq!(run.code, 1);
    let report: Value = serde_json::from_str(&run.stdout).expect("one JSON object");
    assert_eq!(report["accepted"], false);
    assert_eq!(report["reason"], "expired");
    assert_eq!(report["message"], "token expired");
    assert!(report["why"].as_str().expect("why").contains("ago"));
    assert_eq!(report["otherwise"]["accepted"], true);
    assert_eq!(report["claims"]["sub"], "alice");
    assert_eq!(report["config"]["leeway_seconds"], 5);

    let run = checktoken_in(
        &dir.0,
        &["--json", "-"],
        WITH_SECRET,
        hs(json!({})).as_bytes(),
    );
    assert_eq!(run.code, 0);
    let report: Value = serde_json::from_str(&run.stdout).expect("one JSON object");
    assert_eq!(report["accepted"], true);
    assert_eq!(report["grants"]["user_id"], "alice");
}

#[test]
fn an_expired_token_says_since_when_under_the_configured_leeway() {
    let run = checktoken(&hs(json!({"exp": now_s() - 3600})), WITH_SECRET);
    assert_rejected(&run, "expired", "with 5 s of leeway (JWT_LEEWAY_SECONDS)");
    assert!(run.line("why").ends_with(" ago"), "{}", run.stdout);
    assert!(
        run.line("otherwise")
            .starts_with("on time it would be accepted")
    );

    // Two seconds late: inside the default leeway, outside a zero one.
    let late = hs(json!({"exp": now_s() - 2}));
    assert_eq!(checktoken(&late, WITH_SECRET).code, 0);
    let run = checktoken(
        &late,
        &[("JWT_SECRET", SECRET), ("JWT_LEEWAY_SECONDS", "0")],
    );
    assert_rejected(&run, "expired", "with 0 s of leeway");
}

#[test]
fn a_token_not_yet_valid_says_from_when() {
    let run = checktoken(&hs(json!({"nbf": now_s() + 3600})), WITH_SECRET);
    assert_rejected(&run, "not_yet_valid", "accepts it from");
    assert!(run.line("why").contains(", in 59m"), "{}", run.stdout);
}

#[test]
fn signature_and_algorithm_refusals() {
    let claims = json!({"sub": "alice", "exp": now_s() + 60});
    let run = checktoken(
        &sign(Algorithm::HS256, &claims, "not-the-secret"),
        WITH_SECRET,
    );
    assert_rejected(
        &run,
        "bad_signature",
        "does not verify with JWT_SECRET (40 bytes)",
    );
    // Checked with the development secret: the report says so.
    let run = checktoken(&sign(Algorithm::HS256, &claims, SECRET), &[]);
    assert_rejected(&run, "bad_signature", "the built-in development secret");
    assert!(
        run.line("note")
            .contains("JWT_SECRET is not set where this command ran")
    );
    // …which accepts what it signed.
    let run = checktoken(&sign(Algorithm::HS256, &claims, DEV_JWT_SECRET), &[]);
    assert_eq!(run.code, 0, "{}", run.stdout);

    let run = checktoken(&sign(Algorithm::HS512, &claims, SECRET), WITH_SECRET);
    assert_rejected(
        &run,
        "wrong_algorithm",
        "alg is \"HS512\"; this server accepts HS256 only",
    );
    let none = format!(
        "{}.{}.",
        b64url(br#"{"alg":"none"}"#),
        b64url(claims.to_string().as_bytes())
    );
    assert_rejected(
        &checktoken(&none, WITH_SECRET),
        "wrong_algorithm",
        "\"none\"",
    );

    let crit = format!(
        "{}.{}.c2ln",
        b64url(br#"{"alg":"HS256","crit":["b64"]}"#),
        b64url(claims.to_string().as_bytes())
    );
    assert_rejected(
        &checktoken(&crit, WITH_SECRET),
        "critical_header",
        "crit [\"b64\"]",
    );
}

#[test]
fn public_key_algorithms_use_the_key_file() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jwt");
    let private = std::fs::read(fixtures.join("ec_p256_private.pem")).expect("fixture");
    let other = std::fs::read(fixtures.join("ec_p256_other_private.pem")).expect("fixture");
    let public = fixtures.join("ec_p256_public.pem");
    let claims = json!({"sub": "bob", "exp": now_s() + 60});
    let es256 = |pem: &[u8]| {
        jsonwebtoken::encode(
            &Header::new(Algorithm::ES256),
            &claims,
            &EncodingKey::from_ec_pem(pem).expect("EC key"),
        )
        .expect("encode")
    };
    let env = [
        ("JWT_ALGORITHM", "ES256"),
        ("JWT_PUBLIC_KEY_FILE", public.to_str().expect("UTF-8 path")),
    ];
    let run = checktoken(&es256(&private), &env);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.line("checked")
            .starts_with("ES256 with the public key in JWT_PUBLIC_KEY_FILE")
    );
    assert_rejected(
        &checktoken(&es256(&other), &env),
        "bad_signature",
        "the public key in JWT_PUBLIC_KEY_FILE",
    );
    // An HS256 token against an ES256 server (the key confusion attack).
    assert_rejected(
        &checktoken(&hs(json!({})), &env),
        "wrong_algorithm",
        "accepts ES256 only",
    );
}

#[test]
fn issuer_and_audience_refusals() {
    let env = [
        ("JWT_SECRET", SECRET),
        ("JWT_ISSUER", "https://auth.example"),
        ("JWT_AUDIENCE", "chat"),
    ];
    let run = checktoken(
        &hs(json!({"iss": "https://evil.example", "aud": "chat"})),
        &env,
    );
    assert_rejected(
        &run,
        "wrong_issuer",
        "iss is \"https://evil.example\"; JWT_ISSUER requires \"https://auth.example\"",
    );
    let run = checktoken(&hs(json!({"iss": "https://auth.example"})), &env);
    assert_rejected(
        &run,
        "wrong_audience",
        "aud is missing; JWT_AUDIENCE requires \"chat\"",
    );
    let run = checktoken(
        &hs(json!({"iss": "https://auth.example", "aud": ["web", "chat"]})),
        &env,
    );
    assert_eq!(run.code, 0, "{}", run.stdout);
}

#[test]
fn too_large_and_not_a_jwt() {
    let huge = hs(json!({"pad": "x".repeat(9000)}));
    let run = checktoken(&huge, WITH_SECRET);
    assert_rejected(
        &run,
        "too_long",
        &format!(
            "the token is {} bytes; the server refuses tokens over 8192 bytes",
            huge.len()
        ),
    );
    for (token, why) in [
        (
            "hello",
            "not a JWT: a JWT is three base64url segments joined by dots",
        ),
        (
            "a.b.c",
            "not a JWT: the header (first segment) is not base64url",
        ),
        ("e30.e30.e30", "the header has no alg"),
    ] {
        assert_rejected(&checktoken(token, WITH_SECRET), "malformed", why);
    }
    let run = checktoken(&format!("Bearer {}", hs(json!({}))), WITH_SECRET);
    assert_eq!(run.code, 1);
    assert!(run.line("note").contains("\"Bearer \""), "{}", run.stdout);
}

#[test]
fn settings_come_from_flags_then_the_environment_then_dotenv() {
    let dir = TempDir::new("precedence");
    let token = hs(json!({}));
    std::fs::write(dir.0.join(".env"), format!("JWT_SECRET={SECRET}\n")).expect(".env");
    let run = checktoken_in(&dir.0, &[&token], &[], b"");
    assert_eq!(run.code, 0, ".env is read: {}", run.stdout);
    let wrong = "the-environment-secret-0123456789-abcdef";
    let run = checktoken_in(&dir.0, &[&token], &[("JWT_SECRET", wrong)], b"");
    assert_eq!(run.code, 1, "the environment beats .env: {}", run.stdout);
    let run = checktoken_in(
        &dir.0,
        &["--jwt-secret", SECRET, &token],
        &[("JWT_SECRET", wrong)],
        b"",
    );
    assert_eq!(
        run.code, 0,
        "the flag beats the environment: {}",
        run.stdout
    );
    // The leeway too.
    std::fs::write(
        dir.0.join(".env"),
        format!("JWT_SECRET={SECRET}\nJWT_LEEWAY_SECONDS=120\n"),
    )
    .expect(".env");
    let late = hs(json!({"exp": now_s() - 60}));
    let run = checktoken_in(&dir.0, &[&late], &[], b"");
    assert_eq!(run.code, 0, "120 s of leeway from .env: {}", run.stdout);
    assert!(run.line("checked").ends_with("leeway 120 s"));
}

#[test]
fn configuration_and_usage_errors_exit_2_naming_the_problem() {
    let dir = TempDir::new("errors");
    let token = hs(json!({}));
    for (env, named) in [
        (&[("APP_ENV", "production")][..], "JWT_SECRET"),
        (
            &[("APP_ENV", "production"), ("JWT_SECRET", "short")],
            "JWT_SECRET",
        ),
        (&[("JWT_ALGORITHM", "RS256")], "JWT_PUBLIC_KEY_FILE"),
        (&[("JWT_ALGORITHM", "HS512")], "JWT_ALGORITHM"),
        (&[("JWT_LEEWAY_SECONDS", "soon")], "JWT_LEEWAY_SECONDS"),
        (
            &[
                ("JWT_ALGORITHM", "EdDSA"),
                ("JWT_PUBLIC_KEY_FILE", "/nonexistent.pem"),
            ],
            "cannot read JWT_PUBLIC_KEY_FILE",
        ),
        (
            &[
                ("JWT_ALGORITHM", "RS256"),
                (
                    "JWT_PUBLIC_KEY_FILE",
                    concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"),
                ),
            ],
            "invalid key in JWT_PUBLIC_KEY_FILE",
        ),
    ] {
        let run = checktoken_in(&dir.0, &[&token], env, b"");
        assert_eq!(run.code, 2, "{env:?}: {}{}", run.stdout, run.stderr);
        assert!(run.stderr.contains(named), "{env:?}: {}", run.stderr);
        assert!(run.stdout.is_empty(), "no report without a configuration");
        assert!(
            !run.stderr.contains("short"),
            "never a secret: {}",
            run.stderr
        );
    }
    std::fs::write(dir.0.join(".env"), "JWT_SECRET='unterminated\n").expect(".env");
    let run = checktoken_in(&dir.0, &[&token], &[], b"");
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains(".env, line 1"), "{}", run.stderr);
    std::fs::remove_file(dir.0.join(".env")).expect("rm .env");

    for args in [&[][..], &[""], &["a", "b"], &["--bogus", "x"]] {
        let run = checktoken_in(&dir.0, args, &[], b"");
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    }
}
