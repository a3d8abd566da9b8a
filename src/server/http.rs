//! HTTP: hyper 1 serves each TCP connection as HTTP/1.1 until it upgrades.
//!
//! Routes: `GET /ws` (WebSocket upgrade, handed to [`chat::serve`], counted
//! by the client address: see [`admission::client_address`]),
//! `GET /healthz`, `GET /readyz` (503 while draining, or while Redis does not
//! answer), `GET /metrics`;
//! `/` and `/demo/…`, the demo page ([`demo`], 404 while `DEMO_PAGE` is
//! off); anything else is 404. Request heads are bounded in time, lines and
//! bytes before any route runs.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ORIGIN};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{Instrument, info_span};

use super::admission;
use super::chat;
use super::demo;
use super::shared::Shared;
use crate::core::ConnId;

/// The header in which a trusted proxy names the client address.
const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// Time a client has to send a complete HTTP request head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Most header lines in one request.
pub const HEADERS_MAX: usize = 64;
/// Longest HTTP request head (request line and headers); a longer one is
/// refused with 431.
pub const HEAD_BYTES_MAX: usize = 16 * 1024;

/// hyper's HTTP/1.1 server with this server's limits on request heads (time,
/// lines, bytes); `date_header` says whether responses carry `Date`.
pub fn builder(date_header: bool) -> hyper::server::conn::http1::Builder {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_headers(HEADERS_MAX)
        .max_buf_size(HEAD_BYTES_MAX)
        .auto_date_header(date_header);
    builder
}

/// Serves one TCP connection's HTTP until it ends or upgrades.
pub(crate) async fn serve<I>(io: I, peer: SocketAddr, shared: Arc<Shared>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let builder = builder(shared.http_date_header);
    let service = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(route(req, peer, &shared).await) }
    });
    let connection = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    if let Err(e) = connection.await {
        tracing::debug!(%peer, error = %e, "http connection ended with an error");
    }
}

type Body = Full<Bytes>;

fn respond(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r
}

async fn route(
    mut req: Request<Incoming>,
    peer: SocketAddr,
    shared: &Arc<Shared>,
) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => respond(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => {
            if shared.draining.load(Ordering::SeqCst) {
                respond(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            } else if shared.metrics.redis_up.get() == 0 {
                respond(StatusCode::SERVICE_UNAVAILABLE, "redis unavailable\n")
            } else {
                respond(StatusCode::OK, "ready\n")
            }
        }
        (&Method::GET, "/metrics") => {
            let mut r = Response::new(Full::new(Bytes::from(shared.metrics.encode())));
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            r
        }
        (_, "/ws") => upgrade(&mut req, peer, shared),
        // Boxed: only a token request waits (for its body), and the
        // future of every other request stays as small as before.
        (_, path) if demo::is_demo_path(path) => Box::pin(demo::serve(req, shared)).await,
        _ => respond(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Answers a WebSocket upgrade: refused while draining (503), from a
/// foreign origin (403) or past the caps (503); otherwise 101, and the
/// connection is served by [`chat::serve`] in a task of its own, tracked
/// for the drain.
fn upgrade(req: &mut Request<Incoming>, peer: SocketAddr, shared: &Arc<Shared>) -> Response<Body> {
    if req.method() != Method::GET {
        return respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "use GET with a WebSocket upgrade\n",
        );
    }
    if !fastwebsockets::upgrade::is_upgrade_request(req) {
        let mut r = respond(StatusCode::UPGRADE_REQUIRED, "WebSocket upgrade required\n");
        r.headers_mut().insert(
            hyper::header::UPGRADE,
            HeaderValue::from_static("websocket"),
        );
        return r;
    }
    if shared.draining.load(Ordering::SeqCst) {
        return respond(StatusCode::SERVICE_UNAVAILABLE, "server shutting down\n");
    }
    let live = shared.live.load();
    let forwarded = req.headers().get_all(X_FORWARDED_FOR).iter();
    let client = admission::client_address(
        peer.ip(),
        forwarded.map(HeaderValue::as_bytes),
        &live.config,
    );
    if let (Some(allowed), Some(origin)) = (&live.config.allowed_origins, req.headers().get(ORIGIN))
    {
        let listed = origin
            .to_str()
            .is_ok_and(|o| allowed.iter().any(|a| a.eq_ignore_ascii_case(o)));
        if !listed {
            return respond(StatusCode::FORBIDDEN, "origin not allowed\n");
        }
    }
    let Some(guard) = shared.admission.try_open(client, &live.config) else {
        return respond(StatusCode::SERVICE_UNAVAILABLE, "too many connections\n");
    };
    drop(live);
    let (response, fut) = match fastwebsockets::upgrade::upgrade(&mut *req) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(peer = %client, tcp_peer = %peer, error = %e, "bad upgrade request");
            return respond(StatusCode::BAD_REQUEST, "bad WebSocket upgrade request\n");
        }
    };
    let conn = ConnId(shared.next_conn.fetch_add(1, Ordering::Relaxed));
    // `peer` is the client address (what the caps count); `tcp_peer` the
    // socket's other end, a proxy's when the client came through one.
    let span = info_span!(
        "conn",
        id = conn.0,
        peer = %client,
        tcp_peer = %peer,
        user = tracing::field::Empty
    );
    let for_task = shared.clone();
    shared.connections.spawn(
        async move {
            // Written so that nothing is held twice across the awaits (the
            // task's future is part of every connection's memory).
            let serving = match fut.await {
                Ok(ws) => chat::serve(ws, conn, for_task),
                Err(e) => {
                    tracing::debug!(error = %e, "upgrade failed");
                    return;
                }
            };
            serving.await;
            drop(guard);
        }
        .instrument(span),
    );
    response.map(|_| Full::new(Bytes::new()))
}
