//! `chat-flow healthcheck`: asks a running server for `GET /healthz` and
//! says whether it answered `200`, for container health checks (slim images
//! have no curl) and scripts.
//!
//! Plain blocking `std` networking, one short HTTP/1.1 exchange with a
//! deadline over the whole of it (connect, write, read): no runtime to
//! start, nothing to depend on. Only the status line is read.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The path asked for: `200` while the process runs (`docs/PROTOCOL.md`).
pub const HEALTH_PATH: &str = "/healthz";

/// Longest status line read before giving up on the answer.
const STATUS_LINE_MAX_BYTES: usize = 1024;

/// Why the server is not healthy, as far as the probe can tell.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// No TCP connection (refused, unreachable, …).
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address asked.
        addr: SocketAddr,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The whole exchange took longer than allowed.
    #[error("no answer from {addr} within {}", humantime::format_duration(*.timeout))]
    TimedOut {
        /// The address asked.
        addr: SocketAddr,
        /// The time allowed.
        timeout: Duration,
    },
    /// The connection failed after it was made.
    #[error("connection to {addr} failed: {source}")]
    Io {
        /// The address asked.
        addr: SocketAddr,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The connection closed before a whole status line arrived.
    #[error("{addr} closed the connection without an HTTP answer")]
    Closed {
        /// The address asked.
        addr: SocketAddr,
    },
    /// What came back is not an HTTP/1.x status line.
    #[error("{addr} did not answer in HTTP/1.x")]
    NotHttp {
        /// The address asked.
        addr: SocketAddr,
    },
    /// The server answered, with another status than `200`.
    #[error("{addr} answered {HEALTH_PATH} with {status}")]
    Status {
        /// The address asked.
        addr: SocketAddr,
        /// The status code received.
        status: u16,
    },
}

/// Sends `GET /healthz` to `addr` and waits at most `timeout` in all for
/// its status line: `Ok(())` for `200`.
pub fn probe(addr: SocketAddr, timeout: Duration) -> Result<(), ProbeError> {
    let deadline = Instant::now() + timeout;
    let timed_out = || ProbeError::TimedOut { addr, timeout };
    // What is left of the deadline, never zero (a zero timeout is an error
    // for the socket calls).
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
            .ok_or_else(timed_out)
    };
    let io = |source: std::io::Error| match source.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => timed_out(),
        _ => ProbeError::Io { addr, source },
    };

    let mut stream = TcpStream::connect_timeout(&addr, left()?).map_err(|source| {
        if source.kind() == std::io::ErrorKind::TimedOut {
            timed_out()
        } else {
            ProbeError::Connect { addr, source }
        }
    })?;
    stream.set_write_timeout(Some(left()?)).map_err(io)?;
    let request = format!(
        "GET {HEALTH_PATH} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: chat-flow-healthcheck\r\n\
         Connection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).map_err(io)?;

    let mut received = Vec::with_capacity(128);
    let mut buf = [0u8; 256];
    let line_end = loop {
        if let Some(end) = received.windows(2).position(|w| w == b"\r\n") {
            break end;
        }
        if received.len() > STATUS_LINE_MAX_BYTES {
            return Err(ProbeError::NotHttp { addr });
        }
        stream.set_read_timeout(Some(left()?)).map_err(io)?;
        match stream.read(&mut buf) {
            Ok(0) => return Err(ProbeError::Closed { addr }),
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io(e)),
        }
    };
    match status_code(&received[..line_end]) {
        Some(200) => Ok(()),
        Some(status) => Err(ProbeError::Status { addr, status }),
        None => Err(ProbeError::NotHttp { addr }),
    }
}

/// The status code of an HTTP/1.x status line (`HTTP/1.1 200 OK`).
fn status_code(line: &[u8]) -> Option<u16> {
    let line = std::str::from_utf8(line).ok()?;
    let rest = line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| line.strip_prefix("HTTP/1.0 "))?;
    let code = rest.get(..3)?;
    if !code.bytes().all(|b| b.is_ascii_digit())
        || !matches!(rest.as_bytes().get(3), None | Some(b' '))
    {
        return None;
    }
    code.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(status_code(b"HTTP/1.1 200 OK"), Some(200));
        assert_eq!(status_code(b"HTTP/1.0 503 Service Unavailable"), Some(503));
        assert_eq!(status_code(b"HTTP/1.1 204"), Some(204));
        for bad in [
            &b""[..],
            b"HTTP/1.1",
            b"HTTP/1.1 20",
            b"HTTP/1.1 2000 OK",
            b"HTTP/2 200",
            b"SSH-2.0-OpenSSH",
            b"HTTP/1.1 +20 OK",
            b"\xff\xfe",
        ] {
            assert_eq!(status_code(bad), None, "{bad:?}");
        }
    }
}
