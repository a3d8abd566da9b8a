//! A throwaway `redis-server` for the Redis store's tests: on a free port
//! of 127.0.0.1, saving nothing, in a directory of its own; killed (and the
//! directory removed) on drop. `scripts/ensure-redis.sh` installs
//! Debian's `redis-server` first when it is missing: the tests never assume
//! a running Redis, and never skip.
//!
//! Included with `#[path = "common/redis.rs"] mod redis_server;` by the tests
//! that need it (it does not use the rest of `common`).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

/// Runs `scripts/ensure-redis.sh` once per test binary.
pub fn ensure_redis() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/ensure-redis.sh");
        let status = Command::new("bash")
            .arg(&script)
            .status()
            .expect("bash runs scripts/ensure-redis.sh");
        assert!(status.success(), "scripts/ensure-redis.sh failed: {status}");
    });
}

/// A running `redis-server`.
pub struct RedisServer {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: PathBuf,
}

impl RedisServer {
    /// Starts one on a free port and waits until it answers `PING`.
    pub fn start() -> RedisServer {
        ensure_redis();
        for _ in 0..10 {
            let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            if let Some(server) = RedisServer::start_on(port) {
                return server;
            }
        }
        panic!("redis-server did not start on any of 10 free ports");
    }

    /// Starts one on `port` (`None` if it did not answer within 10 s, say
    /// because the port was taken meanwhile).
    pub fn start_on(port: u16) -> Option<RedisServer> {
        ensure_redis();
        let dir =
            std::env::temp_dir().join(format!("chatflow-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let mut server = RedisServer {
            child: Some(child),
            port,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if server.child_exited() {
                return None;
            }
            if server.ping() {
                return Some(server);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn child_exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| c.try_wait().ok().flatten().is_some())
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Whether it answers `PING` now.
    pub fn ping(&self) -> bool {
        self.command(&["PING"]).is_some_and(|r| r == "+PONG\r\n")
    }

    /// Sends one command (RESP) and returns the first reply read (raw), for
    /// the tests' own look at the data (`DEL`, `FLUSHDB`, `INFO`...).
    pub fn command(&self, args: &[&str]) -> Option<String> {
        let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).ok()?;
        let mut out = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            let n = s.read(&mut buf).ok()?;
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
            if complete(&out) {
                break;
            }
        }
        String::from_utf8(out).ok()
    }

    /// Sends it a signal by name (`STOP`, `CONT`, `KILL`...): `SIGSTOP`
    /// stalls it with every connection open, as a hung Redis does.
    pub fn signal(&self, name: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name} {pid}: {status}");
    }

    /// Kills it now (the port is free again once this returns).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether `out` holds one whole RESP reply (enough for the replies the
/// tests ask for: simple strings, errors, integers, one bulk string).
fn complete(out: &[u8]) -> bool {
    let Some(line_end) = out.windows(2).position(|w| w == b"\r\n") else {
        return false;
    };
    match out.first() {
        Some(b'$') => {
            let len: i64 = std::str::from_utf8(&out[1..line_end])
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            len < 0 || out.len() >= line_end + 2 + len as usize + 2
        }
        _ => true,
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
