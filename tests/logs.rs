//! What the server logs about a connection's end and about refused tokens:
//! the close (who closed, code, reason, bytes still queued) at info, a
//! failed authentication at warn, each inside the connection's span.
//!
//! The test binary installs a JSON subscriber writing to memory, so the
//! lines checked are the ones an operator's log pipeline would get.

mod common;

use std::time::Duration;

use common::{Captured, Client, TIMEOUT, logs, start_with};
use serde_json::{Value, json};

/// Waits for a line of `captured` whose message is `message` and whose
/// fields include every field of `fields`.
async fn wait_for(captured: &Captured, message: &str, fields: &Value) -> Value {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let found = captured.lines().into_iter().find(|l| {
            l["fields"]["message"] == message
                && fields
                    .as_object()
                    .expect("an object")
                    .iter()
                    .all(|(k, v)| &l["fields"][k] == v)
        });
        if let Some(line) = found {
            return line;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {message:?} line with {fields}; logged:\n{:#?}",
            captured.lines()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn closes_and_failed_authentications_are_logged_in_the_connections_span() {
    let captured = logs();
    let server = start_with(|c| c.auth_timeout_ms = 300).await;

    // The client closes: by the client, with its code.
    let mut c = Client::authed(server.addr, "alice").await;
    c.close(1000).await;
    let line = wait_for(
        captured,
        "connection closed",
        &json!({"by": "client", "code": 1000, "queued_bytes": 0}),
    )
    .await;
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["span"]["name"], "conn");
    assert_eq!(line["span"]["user"], "alice", "{line}");

    // A bad token: a warning in the connection's span.
    let mut c = Client::connect(server.addr).await;
    c.send(json!({"type": "AUTHENTICATE", "payload": {"token": "not.a.token"}}))
        .await;
    let line = wait_for(captured, "authentication failed", &json!({})).await;
    assert_eq!(line["level"], "WARN");
    assert_eq!(line["span"]["name"], "conn");
    assert!(line["fields"]["error"].is_string(), "{line}");

    // The server closes (no authentication in time): by the server, with
    // its code and reason, once the client has answered the close.
    c.expect_error("UNAUTHORIZED").await;
    c.expect_error("UNAUTHORIZED").await;
    c.expect_close(1008).await;
    let line = wait_for(
        captured,
        "connection closed",
        &json!({"by": "server", "code": 1008, "reason": "authentication timeout"}),
    )
    .await;
    assert_eq!(line["level"], "INFO");
    drop(c);
    server.shutdown().await.expect("clean shutdown");
}
