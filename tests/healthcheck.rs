//! `chat-flow healthcheck`, run as a process: 0 against the real server,
//! 1 against anything else (nothing listening, another status, no answer,
//! not HTTP, a bad setting), within its timeout, and `HOST`/`PORT` read
//! from flags, the environment and `.env` as the server reads them.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use common::process::{TempDir, chat_flow, output_text, wait_output};

/// Runs `chat-flow healthcheck ARGS` in `dir` with only `env` (and
/// `PATH`); fails the test after 20 s.
fn healthcheck_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let child = chat_flow(dir, &[&["healthcheck"], args].concat(), env)
        .spawn()
        .expect("spawn chat-flow");
    wait_output(child, Duration::from_secs(20))
}

fn healthcheck(args: &[&str], env: &[(&str, &str)]) -> Output {
    let dir = TempDir::new("run");
    healthcheck_in(&dir.0, args, env)
}

fn assert_unhealthy(out: &Output, says: &str) {
    assert_eq!(out.status.code(), Some(1), "{}", output_text(out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(says), "{says:?} in {}", output_text(out));
    assert!(!stderr.contains("panicked"), "{}", output_text(out));
}

/// A port on 127.0.0.1 where nothing listens (bound, then released).
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A one-connection-at-a-time fake server on 127.0.0.1 that reads the
/// request head and then does `answer` with the stream, for `connections`
/// connections.
fn fake_server(
    connections: usize,
    answer: impl Fn(&mut std::net::TcpStream) + Send + 'static,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming().take(connections) {
            let Ok(mut stream) = stream else { continue };
            let mut head = Vec::new();
            let mut buf = [0u8; 512];
            while !head.ends_with(b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            assert!(
                head.starts_with(b"GET /healthz HTTP/1.1\r\n"),
                "{}",
                String::from_utf8_lossy(&head)
            );
            answer(&mut stream);
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_server_is_healthy_and_a_stopped_one_is_not() {
    let server = common::start().await;
    let port = server.addr.port().to_string();
    let out = tokio::task::spawn_blocking({
        let port = port.clone();
        move || healthcheck(&["--port", &port], &[])
    })
    .await
    .expect("join");
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("healthy: http://127.0.0.1:{port}/healthz answered 200\n")
    );
    // PORT from the environment; HOST 0.0.0.0 is asked on loopback.
    let out = tokio::task::spawn_blocking({
        let port = port.clone();
        move || healthcheck(&[], &[("PORT", &port), ("HOST", "0.0.0.0")])
    })
    .await
    .expect("join");
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));

    server.shutdown().await.expect("shutdown");
    let out = tokio::task::spawn_blocking(move || healthcheck(&["--port", &port], &[]))
        .await
        .expect("join");
    assert_unhealthy(&out, "unhealthy: cannot connect to 127.0.0.1:");
}

#[test]
fn nothing_listening_is_unhealthy() {
    let port = closed_port().to_string();
    let out = healthcheck(&["--port", &port], &[]);
    assert_unhealthy(&out, "cannot connect to 127.0.0.1");
}

#[test]
fn another_status_is_unhealthy() {
    let addr = fake_server(2, |stream| {
        let _ = stream.write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n");
    });
    let port = addr.port().to_string();
    let out = healthcheck(&["--port", &port], &[]);
    assert_unhealthy(&out, &format!("{addr} answered /healthz with 503"));
    // HTTP/1.0 and a status line in pieces are read too.
    let addr = fake_server(1, |stream| {
        for piece in [&b"HTTP/1.0 2"[..], b"00 OK\r", b"\n\r\n"] {
            let _ = stream.write_all(piece);
            let _ = stream.flush();
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let out = healthcheck(&["--port", &addr.port().to_string()], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
}

#[test]
fn no_answer_is_unhealthy_within_the_timeout() {
    let addr = fake_server(1, |_stream| std::thread::sleep(Duration::from_secs(10)));
    let started = Instant::now();
    let out = healthcheck(
        &["--port", &addr.port().to_string(), "--timeout", "500ms"],
        &[],
    );
    let took = started.elapsed();
    assert_unhealthy(&out, "no answer from");
    assert!(out.status.code() == Some(1));
    assert!(
        took < Duration::from_secs(5),
        "gave up after {took:?}, not 500ms"
    );
}

#[test]
fn what_is_not_http_is_unhealthy() {
    let addr = fake_server(1, |stream| {
        let _ = stream.write_all(b"SSH-2.0-OpenSSH_9.2\r\n");
    });
    assert_unhealthy(
        &healthcheck(&["--port", &addr.port().to_string()], &[]),
        "did not answer in HTTP/1.x",
    );
    let addr = fake_server(1, |_stream| {}); // closes at once
    assert_unhealthy(
        &healthcheck(&["--port", &addr.port().to_string()], &[]),
        "closed the connection without an HTTP answer",
    );
    let addr = fake_server(1, |stream| {
        let _ = stream.write_all(&[b'x'; 4096]);
    });
    assert_unhealthy(
        &healthcheck(&["--port", &addr.port().to_string()], &[]),
        "did not answer in HTTP/1.x",
    );
}

#[test]
fn port_and_host_come_from_flags_then_the_environment_then_dotenv() {
    let addr = fake_server(3, |stream| {
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n");
    });
    let good = addr.port().to_string();
    let bad = closed_port().to_string();
    let dir = TempDir::new("precedence");
    std::fs::write(dir.0.join(".env"), format!("PORT={good}\nHOST=127.0.0.1\n")).expect(".env");
    let out = healthcheck_in(&dir.0, &[], &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        ".env is read: {}",
        output_text(&out)
    );
    let out = healthcheck_in(&dir.0, &[], &[("PORT", &bad)]);
    assert_unhealthy(&out, &format!(":{bad}"));
    let out = healthcheck_in(&dir.0, &["--port", &good], &[("PORT", &bad)]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "the flag wins: {}",
        output_text(&out)
    );
    let out = healthcheck_in(&dir.0, &[], &[("HOST", "127.0.0.1")]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
}

#[test]
fn bad_settings_exit_1_naming_the_variable() {
    for (env, says) in [
        (&[("PORT", "abc")][..], "PORT"),
        (&[("PORT", "70000")], "PORT"),
        (&[("PORT", "0")], "PORT is 0"),
        (&[("HOST", "localhost")], "HOST"),
    ] {
        let out = healthcheck(&[], env);
        assert_unhealthy(&out, says);
    }
    // Usage errors are clap's (exit 2), never a panic.
    for args in [&["--timeout", "0s"][..], &["--timeout", "2m"], &["--bogus"]] {
        let out = healthcheck(args, &[]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            output_text(&out)
        );
    }
}
