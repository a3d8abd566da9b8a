//! Echo server for the Autobahn TestSuite (`scripts/autobahn.sh`): the
//! server's WebSocket connection layer with an echo handler instead of the
//! chat core. A test tool, not a production route: the `chat-flow` binary is
//! untouched.
//!
//! ```text
//! cargo run --release --example autobahn_echo -- [--port 9001] [--max-message-bytes 65536]
//! ```
//!
//! It serves `GET /ws` (any path upgrades, for convenience) and
//! `GET /healthz` with hyper 1 + fastwebsockets with the same HTTP/1 builder
//! options as `src/server/`, and runs every connection through the
//! production connection layer ([`serve_with`]: fragment reassembly with its
//! byte and fragment limits, UTF-8 validation, close-frame validation and
//! echo, pongs, idle timeout, batched writes, pings, close grace) with an
//! echo [`Handler`] in place of the chat one. Limits come from
//! [`Config::default`] except `MAX_MESSAGE_BYTES`, which `--max-message-bytes`
//! (or the `MAX_MESSAGE_BYTES` variable) sets.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chat_flow::config::Config;
use chat_flow::protocol::CloseCode;
use chat_flow::server::conn::{Handler, ReadLimits, serve_with};
use chat_flow::server::message_reader::DataKind;
use chat_flow::server::outbox::writer::WriteTimers;
use chat_flow::server::outbox::{OutFrame, Outbox, PushError, QueueLimits, QueuedBytes};
use fastwebsockets::WebSocket;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

/// What a connection needs from the configuration.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_message_bytes: usize,
    idle_timeout: Duration,
    ping_interval: Duration,
    write_timeout: Duration,
    outbound_queue_limit: usize,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut port: u16 = 9001;
    let mut config = Config::default();
    if let Ok(v) = std::env::var("MAX_MESSAGE_BYTES") {
        config.max_message_bytes = v.parse()?;
    }
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--port" => port = value()?.parse()?,
            "--max-message-bytes" => config.max_message_bytes = value()?.parse()?,
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    let limits = Limits {
        max_message_bytes: config.max_message_bytes,
        idle_timeout: Duration::from_millis(config.idle_timeout_ms),
        ping_interval: Duration::from_millis(config.ping_interval_ms),
        write_timeout: Duration::from_millis(config.write_timeout_ms),
        outbound_queue_limit: config.outbound_queue_limit,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        println!(
            "autobahn_echo listening on ws://{}/ws (MAX_MESSAGE_BYTES={})",
            listener.local_addr()?,
            limits.max_message_bytes
        );
        loop {
            let (stream, peer) = listener.accept().await?;
            stream.set_nodelay(true)?;
            tokio::spawn(serve_http(stream, peer, limits));
        }
    })
}

async fn serve_http(io: tokio::net::TcpStream, peer: SocketAddr, limits: Limits) {
    let service =
        hyper::service::service_fn(
            move |req| async move { Ok::<_, Infallible>(route(req, limits)) },
        );
    let connection = chat_flow::server::http::builder(true)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    if let Err(e) = connection.await {
        eprintln!("{peer}: http connection ended with an error: {e}");
    }
}

type Body = Full<Bytes>;

fn respond(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r
}

fn route(mut req: Request<Incoming>, limits: Limits) -> Response<Body> {
    if req.method() == Method::GET && req.uri().path() == "/healthz" {
        return respond(StatusCode::OK, "ok\n");
    }
    if req.method() != Method::GET {
        return respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "use GET with a WebSocket upgrade\n",
        );
    }
    if !fastwebsockets::upgrade::is_upgrade_request(&req) {
        let mut r = respond(StatusCode::UPGRADE_REQUIRED, "WebSocket upgrade required\n");
        r.headers_mut().insert(
            hyper::header::UPGRADE,
            HeaderValue::from_static("websocket"),
        );
        return r;
    }
    let (response, fut) = match fastwebsockets::upgrade::upgrade(&mut req) {
        Ok(pair) => pair,
        Err(_) => return respond(StatusCode::BAD_REQUEST, "bad WebSocket upgrade request\n"),
    };
    tokio::spawn(async move {
        if let Ok(ws) = fut.await {
            serve(ws, limits).await;
        }
    });
    response.map(|_| Full::new(Bytes::new()))
}

/// Echoes every message back as it came (text as text, binary as binary).
struct Echo {
    limits: Limits,
    outbox: Arc<Outbox>,
}

impl Handler for Echo {
    fn limits(&self) -> ReadLimits {
        ReadLimits {
            max_message_bytes: self.limits.max_message_bytes,
            idle_timeout: self.limits.idle_timeout,
        }
    }

    async fn message(
        &mut self,
        kind: DataKind,
        payload: &mut [u8],
        _received: Instant,
    ) -> Result<(), (CloseCode, &'static str)> {
        let bytes = Bytes::copy_from_slice(payload);
        let frame = match kind {
            DataKind::Text => OutFrame::Text(bytes),
            DataKind::Binary => OutFrame::Binary(bytes),
        };
        match self.outbox.push_frame(frame) {
            Ok(()) | Err(PushError::Closed) => Ok(()),
            Err(PushError::Full) => Err((CloseCode::TryAgainLater, "slow consumer")),
        }
    }

    async fn reading_ended(&mut self) {}
}

/// The production connection layer with the echo handler.
async fn serve<S>(ws: WebSocket<S>, limits: Limits)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Bounded in frames only: the conformance suite echoes messages of up
    // to 16 MiB back to back, which is not what a chat queue's byte bound
    // is for.
    let outbox = Arc::new(Outbox::new(
        QueueLimits::frames(limits.outbound_queue_limit),
        QueuedBytes::default(),
    ));
    let echo = Echo {
        limits,
        outbox: outbox.clone(),
    };
    let timers = WriteTimers {
        ping_interval: limits.ping_interval,
        write_timeout: limits.write_timeout,
    };
    serve_with(ws, outbox, timers, echo).await;
}
