//! `auth`: authentication and expiry close connections exactly as the
//! contract says.
//!
//! - A token is accepted only before `exp + leeway`; a refresh for the same
//!   user replaces the connection's deadline with its own (later or earlier).
//! - At the deadline (never earlier) the connection gets `ERROR
//!   UNAUTHORIZED "token expired"` without a `requestId`, then close `1008`,
//!   and nothing else; no message of its own is accepted from then on.
//! - An unauthenticated connection gets `ERROR UNAUTHORIZED` and `1008`
//!   once `AUTH_TIMEOUT_MS` have passed, never earlier.
//! - The third `AUTHENTICATE` answered `UNAUTHORIZED` is followed by the
//!   close `1008` and nothing else; a `1008` comes only for one of these
//!   reasons or right after a `RATE_LIMIT_EXCEEDED` (a row of them).
//!
//! "Later than the deadline" is proven by the server itself: a frame that
//! reaches the client after the deadline plus delivery slack was sent after
//! the deadline.

use chat_flow::protocol::ErrorCode;
use chat_flow::protocol::server::ChatMessage;

use super::Out;
use super::model::{Model, Req};
use crate::obs::ConnNo;

fn fmt_ms(ms: u64) -> String {
    format!("{}.{:03}s", ms / 1000, ms % 1000)
}

/// `AUTH_SUCCESS` answering `req`: `userId` is the token's `sub`;
/// `username` the token's `username` claim, else the payload's, else the
/// user id — and on a refresh the name the connection already had.
#[allow(clippy::too_many_arguments)]
pub fn on_auth_success(
    m: &mut Model,
    out: &mut Out,
    at: u64,
    conn: ConnNo,
    user_id: &str,
    username: &str,
    req: Option<&Req>,
) {
    let place = m.place(conn);
    let Some((sub, exp)) = req
        .filter(|r| r.kind == "AUTHENTICATE")
        .and_then(|r| r.token.clone())
    else {
        out.fail(
            "auth",
            at,
            place,
            "AUTH_SUCCESS that answers no AUTHENTICATE with a readable token".into(),
        );
        return;
    };
    let sent_at = req.map_or(at, |r| r.at);
    let deadline = (exp + m.cfg.jwt_leeway_seconds)
        .saturating_mul(1000)
        .saturating_sub(m.cfg.epoch_unix_ms);
    if sub != user_id {
        out.fail(
            "auth",
            at,
            place.clone(),
            format!("AUTH_SUCCESS as {user_id} for a token of {sub}"),
        );
    }
    if sent_at >= deadline {
        out.fail(
            "auth",
            at,
            place.clone(),
            format!(
                "token accepted although sent at {} after its expiry at {}",
                fmt_ms(sent_at),
                fmt_ms(deadline)
            ),
        );
    }
    let c = m.conns.get_mut(&conn).expect("caller checked");
    let expected = match &c.username {
        Some(name) => Some(name.clone()),
        None => req.and_then(Req::auth_name),
    };
    if let Some(want) = expected
        && want != username
    {
        out.fail(
            "auth",
            at,
            place.clone(),
            format!(
                "AUTH_SUCCESS names the connection {username:?}, the contract gives {want:?}{}",
                if c.username.is_some() {
                    " (a refresh keeps the name)"
                } else {
                    ""
                }
            ),
        );
    }
    c.username.get_or_insert_with(|| username.to_owned());
    match &c.user {
        None => {
            c.user = Some(user_id.to_owned());
            c.expires_at = Some(deadline);
        }
        Some(user) => {
            out.coverage.hit("token_refresh");
            if user != user_id {
                out.fail(
                    "auth",
                    at,
                    place,
                    format!("refresh switched the connection from {user} to {user_id}"),
                );
            }
            // The new token's authority replaces the old one's whole.
            c.expires_at = Some(deadline);
        }
    }
}

/// An `ERROR`.
#[allow(clippy::too_many_arguments)]
pub fn on_error(
    m: &mut Model,
    out: &mut Out,
    at: u64,
    conn: ConnNo,
    code: ErrorCode,
    message: &str,
    has_request_id: bool,
) {
    if code != ErrorCode::Unauthorized || has_request_id {
        return;
    }
    let place = m.place(conn);
    let auth_timeout = m.cfg.auth_timeout_ms;
    let c = m.conns.get_mut(&conn).expect("caller checked");
    if message == "token expired" {
        out.coverage.hit("token_expiry_error");
        match c.expires_at {
            Some(deadline) if at >= deadline => {}
            Some(deadline) => out.fail(
                "auth",
                at,
                place,
                format!("\"token expired\" before the deadline {}", fmt_ms(deadline)),
            ),
            None => out.fail(
                "auth",
                at,
                place,
                "\"token expired\" on a connection that never authenticated".into(),
            ),
        }
    } else {
        // The authentication timeout.
        if c.user.is_some() {
            out.fail(
                "auth",
                at,
                place,
                format!("unsolicited UNAUTHORIZED ({message}) on an authenticated connection"),
            );
        } else if at < c.dial_at + auth_timeout {
            out.fail(
                "auth",
                at,
                place,
                format!(
                    "authentication timeout after {} ms, before AUTH_TIMEOUT_MS {auth_timeout}",
                    at - c.dial_at
                ),
            );
        }
    }
    c.fatal = Some((at, message.to_owned()));
}

/// What the model calls the end after the last failed attempt.
const TOO_MANY_FAILURES: &str = "too many failed authentications";

/// An `AUTHENTICATE` answered `UNAUTHORIZED`: the third is the last frame
/// before the close 1008.
pub fn on_failed_authentication(m: &mut Model, at: u64, conn: ConnNo) {
    let Some(c) = m.conns.get_mut(&conn) else {
        return;
    };
    c.failed_auths += 1;
    if c.failed_auths >= chat_flow::core::AUTH_FAILURES_MAX && c.fatal.is_none() {
        c.fatal = Some((at, TOO_MANY_FAILURES.to_owned()));
    }
}

/// The close frame. A 1008 has one of the contract's reasons: the auth
/// timeout, the token's expiry, the third failed authentication (each
/// announced by the frame before it), or a row of rate-limit rejections
/// (the frame before it is `RATE_LIMIT_EXCEEDED`).
pub fn on_close(m: &mut Model, out: &mut Out, at: u64, conn: ConnNo, code: Option<u16>) {
    let place = m.place(conn);
    let Some(c) = m.conns.get(&conn) else {
        return;
    };
    match (&c.fatal, code) {
        (Some((_, why)), Some(1008)) => {
            if why == "token expired" {
                out.coverage.hit("token_expiry_close");
            } else if why == TOO_MANY_FAILURES {
                out.coverage.hit("auth_failures_close");
            } else {
                out.coverage.hit("auth_timeout_close");
            }
        }
        (Some((_, why)), code) => out.fail(
            "auth",
            at,
            place,
            format!("after \"{why}\" the close code is {code:?}, not 1008"),
        ),
        (None, Some(1008)) => {
            out.coverage.hit("policy_close");
            if c.last_error != Some(ErrorCode::RateLimitExceeded) {
                out.fail(
                    "auth",
                    at,
                    place,
                    format!(
                        "close 1008 without a reason (the frame before it: {:?}; {} failed authentications)",
                        c.last_error, c.failed_auths
                    ),
                );
            }
        }
        (None, _) => {}
    }
}

/// A frame arrived at `at` (`close`: the close frame): after a fatal error
/// only the close may; past the token's deadline (plus slack) nothing may
/// (judged only when the client reads promptly: `timed`).
pub fn on_activity(m: &mut Model, out: &mut Out, at: u64, conn: ConnNo, close: bool, timed: bool) {
    let slack = m.cfg.delivery_slack_ms;
    let auth_timeout = m.cfg.auth_timeout_ms;
    let place = m.place(conn);
    let Some(c) = m.conns.get_mut(&conn) else {
        return;
    };
    if c.overdue_reported {
        return;
    }
    if let Some((_, why)) = &c.fatal {
        if close {
            return;
        }
        c.overdue_reported = true;
        out.fail(
            "auth",
            at,
            place,
            format!("a frame after \"{why}\" (only the close may follow)"),
        );
        return;
    }
    if !timed {
        return;
    }
    match (c.user.is_some(), c.expires_at, c.open_at) {
        (true, Some(deadline), _) if at > deadline + slack => {
            c.overdue_reported = true;
            out.fail(
                "auth",
                at,
                place,
                format!(
                    "connection still served after its token expired at {}",
                    fmt_ms(deadline)
                ),
            );
        }
        (false, _, Some(open)) if at > open + auth_timeout + slack => {
            c.overdue_reported = true;
            out.fail(
                "auth",
                at,
                place,
                format!(
                    "unauthenticated connection (open at {}) still served after AUTH_TIMEOUT_MS {auth_timeout}",
                    fmt_ms(open)
                ),
            );
        }
        _ => {}
    }
}

/// `NEW_MESSAGE`: the connection's own new messages are accepted only
/// while its token is valid. Call before the order oracle updates the
/// connection's last `seq`.
pub fn on_new_message(
    m: &mut Model,
    out: &mut Out,
    at: u64,
    conn: ConnNo,
    msg: &ChatMessage,
    req: Option<&Req>,
) {
    if req.is_none() {
        return;
    }
    let Some(c) = m.conns.get(&conn) else {
        return;
    };
    let fresh = c.rooms.get(&msg.room_id).is_some_and(|r| msg.seq > r.last);
    let (Some(deadline), Some(ts)) = (c.expires_at, m.sim_ms(&msg.timestamp)) else {
        return;
    };
    if fresh && ts >= deadline {
        out.fail(
            "auth",
            at,
            m.place_room(conn, &msg.room_id, Some(msg.seq)),
            format!(
                "message accepted at {} from a connection whose token expired at {}",
                fmt_ms(ts),
                fmt_ms(deadline)
            ),
        );
    }
}
