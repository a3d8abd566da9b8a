//! The `chat-flow` binary: configuration errors name the variable, the
//! precedence flag > environment > `.env`, `.env` as users write it (and
//! every line of `.env.example`), `chat-flow token`, production secret
//! rules, and a real process serving and exiting 0 on SIGTERM.
//!
//! Every run uses `env_clear()` (plus `PATH`) and its own temporary working
//! directory, so no stray `.env` or variable leaks in.

mod common;
#[path = "common/redis.rs"]
mod redis_server;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chat_flow::config::{Config, ConfigSource, DotEnv, JwtKeySource, ServeArgs};
use chat_flow::server::RunningServer;
use common::process::{TempDir, chat_flow, wait_output};
use common::*;
use redis_server::RedisServer;
use serde_json::json;

/// Runs the binary to completion (killing it and failing after 10 s, in
/// case a configuration meant to be invalid starts a server).
fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let child = chat_flow(dir, args, env).spawn().expect("spawn chat-flow");
    wait_output(child, Duration::from_secs(10))
}

/// Runs a command that must fail; returns its stderr.
fn fails(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = run(dir, args, env);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "chat-flow {args:?} {env:?} should fail; stderr: {stderr}"
    );
    stderr
}

/// Runs `chat-flow token …` that must succeed; returns the token.
fn token_cmd(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let mut all = vec!["token"];
    all.extend_from_slice(args);
    let out = run(dir, &all, env);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "token failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = stdout.trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "a compact JWT: {stdout:?}");
    assert_eq!(stdout.lines().count(), 1, "only the token on stdout");
    token
}

#[test]
fn invalid_values_are_start_up_errors_naming_the_variable() {
    let dir = TempDir::new("invalid");
    for (var, value) in [
        ("PORT", "abc"),
        ("PORT", "70000"),
        ("HOST", "localhost:3001"),
        ("HISTORY_LIMIT", "0"),
        ("MAX_MESSAGE_BYTES", "-1"),
        ("MAX_CONNECTIONS", "many"),
        ("RATE_LIMIT_MESSAGES", "0"),
        ("AUTH_TIMEOUT_MS", "soon"),
        ("JWT_ALGORITHM", "HS512"),
        ("LOG_FORMAT", "xml"),
        ("APP_ENV", "staging"),
        ("ALLOWED_ORIGINS", "not an origin"),
        ("DEFAULT_ROOMS", "no name"),
    ] {
        let stderr = fails(&dir.0, &[], &[(var, value)]);
        assert!(
            stderr.contains(var),
            "{var}={value}: the error must name {var}: {stderr}"
        );
    }
    // IDLE_TIMEOUT_MS must exceed PING_INTERVAL_MS.
    let stderr = fails(
        &dir.0,
        &[],
        &[("PING_INTERVAL_MS", "1000"), ("IDLE_TIMEOUT_MS", "500")],
    );
    assert!(stderr.contains("IDLE_TIMEOUT_MS"), "{stderr}");
}

#[test]
fn flags_are_validated_like_variables() {
    let dir = TempDir::new("flags");
    let stderr = fails(&dir.0, &["--port", "abc"], &[]);
    assert!(stderr.contains("PORT"), "{stderr}");
    let stderr = fails(&dir.0, &["serve", "--history-limit", "0"], &[]);
    assert!(stderr.contains("HISTORY_LIMIT"), "{stderr}");
}

#[test]
fn a_dotenv_file_is_read_and_loses_to_the_environment_and_flags() {
    // .env alone.
    let dir = TempDir::with_dotenv("dotenv", "PORT=abc\n");
    let stderr = fails(&dir.0, &[], &[]);
    assert!(stderr.contains("PORT"), ".env is read: {stderr}");
    // A real variable beats .env: PORT is fine, so the next error shows.
    let stderr = fails(&dir.0, &[], &[("PORT", "0"), ("HISTORY_LIMIT", "0")]);
    assert!(stderr.contains("HISTORY_LIMIT"), "{stderr}");
    assert!(
        !stderr.contains("PORT"),
        "the environment beat .env: {stderr}"
    );
    // A flag beats both.
    let stderr = fails(
        &dir.0,
        &["--port", "0"],
        &[("PORT", "xyz"), ("HISTORY_LIMIT", "0")],
    );
    assert!(stderr.contains("HISTORY_LIMIT"), "{stderr}");
    assert!(
        !stderr.contains("PORT"),
        "the flag beat the environment: {stderr}"
    );
}

#[test]
fn production_requires_a_strong_jwt_secret() {
    let dir = TempDir::new("production");
    let stderr = fails(&dir.0, &[], &[("APP_ENV", "production")]);
    assert!(stderr.contains("JWT_SECRET"), "{stderr}");
    let stderr = fails(
        &dir.0,
        &[],
        &[("APP_ENV", "production"), ("JWT_SECRET", "too-short")],
    );
    assert!(stderr.contains("JWT_SECRET"), "{stderr}");
    assert!(
        !stderr.contains("too-short"),
        "never echo a secret: {stderr}"
    );
    // The token command resolves the secret the same way.
    let stderr = fails(
        &dir.0,
        &["token", "--sub", "alice"],
        &[("APP_ENV", "production")],
    );
    assert!(stderr.contains("JWT_SECRET"), "{stderr}");
    // A strong secret is fine for the token command.
    token_cmd(
        &dir.0,
        &["--sub", "alice"],
        &[
            ("APP_ENV", "production"),
            ("JWT_SECRET", "0123456789abcdef0123456789abcdef"),
        ],
    );
}

#[test]
fn a_bad_jwt_key_file_is_a_start_up_error() {
    let dir = TempDir::new("bad-key");
    let cargo_toml = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    for (path, message) in [
        (
            "/nonexistent/key.pem",
            "chat-flow: cannot read JWT_PUBLIC_KEY_FILE",
        ),
        (cargo_toml, "chat-flow: invalid key in JWT_PUBLIC_KEY_FILE"),
    ] {
        let out = run(
            &dir.0,
            &[],
            &[("JWT_ALGORITHM", "ES256"), ("JWT_PUBLIC_KEY_FILE", path)],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.starts_with(message), "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_printed_token_is_accepted_by_the_server() {
    let dir = TempDir::new("token");
    let server = start().await;
    let t = token_cmd(&dir.0, &["--sub", "alice"], &[]);
    let mut c = Client::connect(server.addr).await;
    let v = c.auth_token(&t).await;
    assert_eq!(
        v["payload"],
        json!({"userId": "alice", "username": "alice", "status": "online"})
    );

    // --username and --rooms become claims the server honours.
    let mut owner = Client::connect(server.addr).await;
    owner.auth_token(&token_rooms("owner", &["vip"])).await;
    owner
        .ok(
            "CREATE_ROOM",
            json!({"name": "VIP", "id": "vip", "type": "private"}),
            "ROOM_CREATED",
        )
        .await;
    let t = token_cmd(
        &dir.0,
        &[
            "--sub",
            "bob",
            "--username",
            "Bobby",
            "--rooms",
            "vip,other",
            "--ttl",
            "15m",
        ],
        &[],
    );
    let mut c = Client::connect(server.addr).await;
    let v = c.auth_token(&t).await;
    assert_eq!(v["payload"]["username"], "Bobby");
    c.join("vip").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_command_uses_jwt_secret_from_the_environment_or_dotenv() {
    let secret = "a-shared-secret-for-this-test-only!!";
    let mut cfg = test_config();
    cfg.jwt_key = JwtKeySource::Secret(secret.as_bytes().to_vec());
    let server = RunningServer::start(cfg).await.expect("start");
    let dev_server = start().await;

    let dir = TempDir::new("secret-env");
    let t = token_cmd(&dir.0, &["--sub", "carol"], &[("JWT_SECRET", secret)]);
    Client::connect(server.addr).await.auth_token(&t).await;
    let mut c = Client::connect(dev_server.addr).await;
    c.fails("AUTHENTICATE", json!({"token": t}), "UNAUTHORIZED")
        .await;

    let dir = TempDir::with_dotenv("secret-dotenv", &format!("JWT_SECRET={secret}\n"));
    let t = token_cmd(&dir.0, &["--sub", "carol"], &[]);
    Client::connect(server.addr).await.auth_token(&t).await;
    // The environment beats .env.
    let t = token_cmd(
        &dir.0,
        &["--sub", "carol"],
        &[("JWT_SECRET", "x".repeat(40).as_str())],
    );
    let mut c = Client::connect(server.addr).await;
    c.fails("AUTHENTICATE", json!({"token": t}), "UNAUTHORIZED")
        .await;
}

#[test]
fn token_command_rejects_bad_arguments() {
    let dir = TempDir::new("token-args");
    fails(&dir.0, &["token"], &[]);
    fails(&dir.0, &["token", "--sub", "a", "--ttl", "0"], &[]);
    fails(&dir.0, &["token", "--sub", "a", "--ttl", "soon"], &[]);
    fails(
        &dir.0,
        &["token", "--sub", "a", "--username", &"x".repeat(33)],
        &[],
    );
    fails(&dir.0, &["token", "--sub", "a", "--rooms", "bad room"], &[]);
}

#[test]
fn a_token_printed_into_a_closed_pipe_is_an_error_not_a_panic() {
    let dir = TempDir::new("token-pipe");
    // The reading end is closed before the command starts: its write
    // cannot succeed (EPIPE), whatever the timing.
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let out = chat_flow(&dir.0, &["token", "--sub", "alice"], &[])
        .stdout(writer)
        .output()
        .expect("run chat-flow token");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("cannot write the token to stdout"),
        "{stderr}"
    );
}

/// Kills the child on drop so a failing test leaves no server behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Collects a child's output lines in the background.
fn collect(pipe: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

/// Sends SIGHUP (reload the configuration) to the process `pid`.
fn sighup(pid: &str) {
    let sent = Command::new("kill")
        .args(["-HUP", pid])
        .status()
        .expect("kill");
    assert!(sent.success());
}

/// The `fields` of the first JSON log line whose message is `message`.
fn log_fields(lines: &Mutex<Vec<String>>, message: &str) -> Option<serde_json::Value> {
    lines.lock().unwrap().iter().find_map(|line| {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        (v["fields"]["message"] == message).then(|| v["fields"].clone())
    })
}

/// Starts the binary in `dir` on 127.0.0.1 with a port the OS picks, JSON
/// logs and `env`; returns once it logs that it listens, with its stdout
/// lines.
async fn serve_on_port_0(dir: &Path, env: &[(&str, &str)]) -> (Running, Arc<Mutex<Vec<String>>>) {
    let mut all = vec![("HOST", "127.0.0.1"), ("PORT", "0"), ("LOG_FORMAT", "json")];
    all.extend_from_slice(env);
    let mut child = Running(chat_flow(dir, &[], &all).spawn().expect("spawn"));
    let stdout = collect(child.0.stdout.take().unwrap());
    eventually("a listening line", || async {
        log_fields(&stdout, "listening").is_some()
    })
    .await;
    (child, stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_warns_about_the_dev_secret_and_exits_0_on_sigterm() {
    let dir = TempDir::new("serve");
    let port = free_port();
    let port_s = port.to_string();
    let mut child = Running(
        chat_flow(
            &dir.0,
            &[],
            &[
                ("HOST", "127.0.0.1"),
                ("PORT", port_s.as_str()),
                ("LOG_FORMAT", "json"),
            ],
        )
        .spawn()
        .expect("spawn"),
    );
    let stdout = collect(child.0.stdout.take().unwrap());
    let stderr = collect(child.0.stderr.take().unwrap());
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    eventually("the server answers /healthz", || async {
        tokio::net::TcpStream::connect(addr).await.is_ok()
    })
    .await;
    assert_eq!(http_get(addr, "/healthz").await.0, 200);
    assert_eq!(http_get(addr, "/readyz").await.0, 200);
    let mut c = Client::authed(addr, "alice").await;
    c.join("general").await;
    c.say("general", "hello from a real process").await;

    // The development secret is in use: a warning says so.
    let logs = || {
        let mut all = stdout.lock().unwrap().clone();
        all.extend(stderr.lock().unwrap().iter().cloned());
        all
    };
    assert!(
        logs()
            .iter()
            .any(|l| l.contains("WARN") && l.contains("JWT_SECRET")),
        "no warning about the development secret in: {:#?}",
        logs()
    );

    let pid = child.0.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    // The client is told the server is going away.
    c.expect_close(1001).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        status.success(),
        "exit status {status:?}; logs: {:#?}",
        logs()
    );
    // The output is JSON lines, as LOG_FORMAT=json asks.
    let out = stdout.lock().unwrap().clone();
    assert!(!out.is_empty());
    for line in &out {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_port_0_the_listening_line_names_the_port_bound() {
    let dir = TempDir::new("port-0");
    let (_child, stdout) = serve_on_port_0(&dir.0, &[]).await;
    let logged = log_fields(&stdout, "listening").expect("listening line")["addr"].clone();
    let addr: SocketAddr = logged
        .as_str()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("not an address: {logged}"));
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    assert_ne!(addr.port(), 0, "the port the OS picked, not 0");
    // It is the address the server answers on.
    assert_eq!(http_get(addr, "/healthz").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_with_a_bad_jwt_key_file_is_refused_naming_it() {
    let key = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/jwt/ec_p256_public.pem"
    );
    let dir = TempDir::with_dotenv("reload-key", &format!("JWT_PUBLIC_KEY_FILE={key}\n"));
    let (child, stdout) = serve_on_port_0(&dir.0, &[("JWT_ALGORITHM", "ES256")]).await;
    std::fs::write(
        dir.0.join(".env"),
        "JWT_PUBLIC_KEY_FILE=/nonexistent/key.pem\n",
    )
    .expect("rewrite .env");
    let pid = child.0.id().to_string();
    sighup(&pid);
    // Refused where the binary reads the configuration again, with the
    // error naming the variable; the running configuration stays.
    let refused = "configuration reload failed; keeping the running one";
    eventually("the reload is refused", || async {
        log_fields(&stdout, refused).is_some()
    })
    .await;
    let refusal = log_fields(&stdout, refused).expect("refusal");
    assert!(
        refusal["error"]
            .as_str()
            .is_some_and(|e| e.contains("JWT_PUBLIC_KEY_FILE")),
        "{refusal}"
    );
}

#[test]
fn config_from_lookup_matches_the_binary_rules() {
    // The in-process configuration path used by the other tests applies
    // the same validation as the binary.
    let err = Config::from_lookup(|k| (k == "PORT").then(|| "abc".to_owned())).unwrap_err();
    assert!(err.to_string().contains("PORT"));
    let cfg = Config::from_lookup(|k| match k {
        "PORT" => Some("0".into()),
        "HISTORY_LIMIT" => Some("7".into()),
        _ => None,
    })
    .expect("valid");
    assert_eq!((cfg.port, cfg.history_limit), (0, 7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_dotenv_while_flags_and_the_environment_still_win() {
    let dir = TempDir::with_dotenv(
        "reload",
        "ALLOWED_ORIGINS=http://a.example\nMAX_CONTENT_LENGTH=5\nHISTORY_LIMIT=7\n",
    );
    let port = free_port();
    let port_s = port.to_string();
    let child = Running(
        chat_flow(
            &dir.0,
            &["--history-limit", "3"],
            &[
                ("HOST", "127.0.0.1"),
                ("PORT", port_s.as_str()),
                ("MAX_CONTENT_LENGTH", "8"),
            ],
        )
        .spawn()
        .expect("spawn"),
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    eventually("the server listens", || async {
        tokio::net::TcpStream::connect(addr).await.is_ok()
    })
    .await;
    let origin =
        |o: &'static str| async move { Client::try_connect(addr, &[("Origin", o)]).await.is_ok() };
    assert!(origin("http://a.example").await);
    assert!(!origin("http://b.example").await, "b is not listed yet");

    // Change `.env` and send SIGHUP: the new origin list is in force...
    std::fs::write(
        dir.0.join(".env"),
        "ALLOWED_ORIGINS=http://b.example\nMAX_CONTENT_LENGTH=2\nHISTORY_LIMIT=9\n",
    )
    .expect("rewrite .env");
    let pid = child.0.id().to_string();
    sighup(&pid);
    eventually("the reloaded ALLOWED_ORIGINS applies", || async {
        origin("http://b.example").await
    })
    .await;
    assert!(!origin("http://a.example").await);

    // ...while the real environment still beats `.env` (8 characters, not 2)
    // and the flag still beats both (history of 3, not 9).
    let mut c = Client::authed(addr, "alice").await;
    c.join("general").await;
    for i in 0..4 {
        c.say("general", &format!("msg {i}")).await;
    }
    c.fails(
        "SEND_MESSAGE",
        json!({"roomId": "general", "content": "123456789"}),
        "INVALID_MESSAGE",
    )
    .await;
    let history = c
        .ok("GET_HISTORY", json!({"roomId": "general"}), "HISTORY")
        .await;
    assert_eq!(history["payload"]["messages"].as_array().unwrap().len(), 3);

    // An invalid `.env` is refused and the running configuration kept.
    std::fs::write(dir.0.join(".env"), "HISTORY_LIMIT=0\n").expect("rewrite .env");
    sighup(&pid);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        origin("http://b.example").await,
        "the previous configuration stays"
    );
}

/// `.env.example`'s commented settings (`#KEY=value`, no blank after the
/// `#`), uncommented: (line number, line).
fn env_example_setting_lines() -> Vec<(usize, String)> {
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.env.example"))
        .expect(".env.example");
    example
        .lines()
        .enumerate()
        .filter_map(|(index, line)| {
            let setting = line.strip_prefix('#')?;
            let (key, _) = setting.split_once('=')?;
            let is_name = !key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            is_name.then(|| (index + 1, setting.to_owned()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_env_example_line_uncommented_alone_starts_the_server() {
    let lines = env_example_setting_lines();
    assert!(lines.len() >= 30, "{} settings found", lines.len());
    let dir = TempDir::new("env-example");
    let path = dir.0.join(".env");
    for (number, line) in lines {
        let (key, _) = line.split_once('=').expect("KEY=value");
        assert!(
            ServeArgs::VARIABLES.contains(&key),
            ".env.example line {number}: {key} is not a setting"
        );
        std::fs::write(&path, format!("{line}\n")).expect("write .env");
        // The value is read, as written...
        let dotenv = DotEnv::read(&path).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        assert!(dotenv.get(key).is_some(), "{line:?} sets nothing");
        // ...and the configuration loads the way the binary loads it (the
        // same source, then the JWT key check the server does).
        let mut config = ConfigSource::new(ServeArgs::default())
            .with_dotenv_path(&path)
            .load()
            .unwrap_or_else(|e| panic!(".env.example line {number} ({line:?}): {e}"));
        // Then the server starts with it (on a free loopback port: the
        // HOST and PORT lines name the defaults, which may be taken).
        config.host = [127, 0, 0, 1].into();
        config.port = 0;
        // The REDIS_URL line names a Redis on its default port: a node is
        // ready once its Redis answers, here one of the test's own.
        let redis = config.redis_url.is_some().then(RedisServer::start);
        if let Some(redis) = &redis {
            config.redis_url = Some(redis.url());
        }
        let server = RunningServer::start(config)
            .await
            .unwrap_or_else(|e| panic!(".env.example line {number} ({line:?}): {e}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let status = http_get(server.addr, "/readyz").await.0;
            if status == 200 {
                break;
            }
            assert!(
                redis.is_some() && Instant::now() < deadline,
                "{line:?}: /readyz {status}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server.shutdown().await.expect("stops");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_reads_dotenv_as_users_write_it() {
    // What dotenv and `docker run --env-file` users write: a byte-order
    // mark, CRLF, comments, `export`, an unquoted value with spaces and a
    // `#` that starts no comment, quotes, a variable the server does not
    // know, and a key given twice (the last wins).
    let dir = TempDir::with_dotenv(
        "dotenv-syntax",
        "\u{feff}# Chat Flow\r\n\r\n\
         export DEFAULT_ROOMS=general:General Chat,lobby:Room#1  # two rooms\r\n\
         MAX_CONTENT_LENGTH='5' # characters\r\n\
           HISTORY_LIMIT = \"2\"\r\n\
         NODE_ENV=production\r\n\
         HISTORY_LIMIT=3\r\n",
    );
    let (_child, stdout) = serve_on_port_0(&dir.0, &[]).await;
    let addr: SocketAddr = log_fields(&stdout, "listening").expect("listening")["addr"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .expect("an address");
    let mut c = Client::authed(addr, "alice").await;
    let list = c.ok("LIST_ROOMS", json!({}), "ROOM_LIST").await;
    let names: Vec<&str> = list["payload"]["rooms"]
        .as_array()
        .expect("rooms")
        .iter()
        .map(|r| r["name"].as_str().expect("a name"))
        .collect();
    assert_eq!(names, ["General Chat", "Room#1"]);
    c.join("general").await;
    c.fails(
        "SEND_MESSAGE",
        json!({"roomId": "general", "content": "123456"}),
        "INVALID_MESSAGE",
    )
    .await;
    for i in 0..4 {
        c.say("general", &format!("m{i}")).await;
    }
    // The last HISTORY_LIMIT wins.
    let history = c
        .ok("GET_HISTORY", json!({"roomId": "general"}), "HISTORY")
        .await;
    assert_eq!(history["payload"]["messages"].as_array().unwrap().len(), 3);
}

#[test]
fn a_bad_dotenv_line_is_an_error_naming_the_file_and_the_line() {
    for (contents, line, what) in [
        (
            "PORT=0\n# a comment\nDEFAULT_ROOMS=general:General Chat\nthis line is prose\n",
            4,
            "expected KEY=value",
        ),
        ("\n\nJWT_SECRET='s3cret\n", 3, "JWT_SECRET"),
        ("PORT=0\r\n=value\r\n", 2, "name before '=' is empty"),
        (
            "MAX_CONTENT_LENGTH=\"5\" and more\n",
            1,
            "MAX_CONTENT_LENGTH",
        ),
    ] {
        let dir = TempDir::with_dotenv("dotenv-bad", contents);
        for args in [&[][..], &["token", "--sub", "u"]] {
            let out = run(&dir.0, args, &[]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{contents:?}: {stderr}");
            assert!(
                stderr.contains(&format!(".env, line {line}: ")) && stderr.contains(what),
                "{contents:?}: {stderr}"
            );
            assert!(!stderr.contains("s3cret"), "{stderr}");
        }
    }
}
