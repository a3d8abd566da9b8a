//! The demo page (`server/demo.rs`) over real sockets: its files with their
//! content types and security headers, 404 and 405, `DEMO_PAGE` off (at
//! start-up and by a reload), and the development-token endpoint, which
//! exists only with the built-in development secret and refuses bad
//! usernames with a clear error.

mod common;

use std::net::SocketAddr;

use chat_flow::config::{AppEnv, Config, JwtKeySource};
use common::*;
use serde_json::{Value, json};

/// Each served path, the file it is, and its content type.
const FILES: [(&str, &str, &str); 9] = [
    ("/", "clients/demo/index.html", "text/html; charset=utf-8"),
    (
        "/demo/app.js",
        "clients/demo/app.js",
        "text/javascript; charset=utf-8",
    ),
    (
        "/demo/style.css",
        "clients/demo/style.css",
        "text/css; charset=utf-8",
    ),
    (
        "/demo/client/index.js",
        "clients/js/src/index.js",
        "text/javascript; charset=utf-8",
    ),
    (
        "/demo/client/client.js",
        "clients/js/src/client.js",
        "text/javascript; charset=utf-8",
    ),
    (
        "/demo/client/session.js",
        "clients/js/src/session.js",
        "text/javascript; charset=utf-8",
    ),
    (
        "/demo/client/backoff.js",
        "clients/js/src/backoff.js",
        "text/javascript; charset=utf-8",
    ),
    (
        "/demo/client/token.js",
        "clients/js/src/token.js",
        "text/javascript; charset=utf-8",
    ),
    (
        "/demo/client/errors.js",
        "clients/js/src/errors.js",
        "text/javascript; charset=utf-8",
    ),
];

/// A parsed HTTP response.
struct Reply {
    status: u16,
    /// Header names lowercased.
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// Sends one request (`extra` header lines, each ending in `\r\n`) and
/// parses the reply.
async fn request(addr: SocketAddr, method: &str, path: &str, extra: &str, body: &str) -> Reply {
    let length = if body.is_empty() && method == "GET" {
        String::new()
    } else {
        format!("Content-Length: {}\r\n", body.len())
    };
    let text = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost:3001\r\nConnection: close\r\n{extra}{length}\r\n{body}"
    );
    let (status, response) = raw_http(addr, &text).await;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_owned(),
    }
}

async fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path, "", "").await
}

/// `POST /demo/token` with a JSON body.
async fn post_token(addr: SocketAddr, body: &str) -> Reply {
    request(
        addr,
        "POST",
        "/demo/token",
        "Content-Type: application/json\r\n",
        body,
    )
    .await
}

fn file(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).expect("the file")
}

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self' ws://localhost:3001 wss://localhost:3001; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_file_is_served_with_its_type_and_the_security_headers() {
    let server = start().await;
    for (path, source, content_type) in FILES {
        let r = get(server.addr, path).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("content-type"), Some(content_type), "{path}");
        assert_eq!(r.body, file(source), "{path} is {source}");
        assert_eq!(r.header("content-security-policy"), Some(CSP), "{path}");
        assert_eq!(
            r.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(r.header("referrer-policy"), Some("no-referrer"), "{path}");
        assert_eq!(r.header("cache-control"), Some("no-cache"), "{path}");
    }
    // HEAD answers the same head, without the body.
    let r = request(server.addr, "HEAD", "/", "", "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    // A Host that would smuggle a directive in is left out of the policy.
    let text = "GET / HTTP/1.1\r\nHost: x; script-src *\r\nConnection: close\r\n\r\n";
    let (status, response) = raw_http(server.addr, text).await;
    assert_eq!(status, 200);
    let csp = response
        .lines()
        .find_map(|l| l.strip_prefix("content-security-policy: "))
        .expect("a policy");
    assert!(csp.contains("connect-src 'self'; "), "{csp}");
    assert!(!csp.contains("script-src *"), "{csp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_settings_say_how_to_sign_in() {
    let server = start_with(|c| c.max_content_length = 500).await;
    let r = get(server.addr, "/demo/config.json").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(
        r.json(),
        json!({"devTokens": true, "maxContentLength": 500})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_are_404_and_other_methods_405() {
    let server = start().await;
    for path in [
        "/demo/",
        "/demo",
        "/demo/nope.js",
        "/demo/client/",
        "/demo/client/index.d.ts",
        "/demo/client/../app.js",
        "/index.html",
        "/demo/app.js/x",
        "/nope",
    ] {
        let r = get(server.addr, path).await;
        assert_eq!(r.status, 404, "{path}");
    }
    for (method, path, allow) in [
        ("POST", "/", "GET, HEAD"),
        ("DELETE", "/demo/app.js", "GET, HEAD"),
        ("POST", "/demo/config.json", "GET, HEAD"),
        ("GET", "/demo/token", "POST"),
        ("PUT", "/demo/token", "POST"),
    ] {
        let r = request(server.addr, method, path, "", "").await;
        assert_eq!(r.status, 405, "{method} {path}");
        assert_eq!(r.header("allow"), Some(allow), "{method} {path}");
    }
    // The other routes are as they were.
    assert_eq!(get(server.addr, "/healthz").await.status, 200);
    assert_eq!(get(server.addr, "/readyz").await.status, 200);
    assert_eq!(get(server.addr, "/metrics").await.status, 200);
    assert_eq!(get(server.addr, "/ws").await.status, 426);
}

/// Every demo path is 404 with the page off.
async fn assert_off(addr: SocketAddr) {
    for (path, _, _) in FILES {
        assert_eq!(get(addr, path).await.status, 404, "{path}");
    }
    assert_eq!(get(addr, "/demo/config.json").await.status, 404);
    assert_eq!(
        post_token(addr, r#"{"username":"alice"}"#).await.status,
        404
    );
    assert_eq!(get(addr, "/healthz").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_page_off_is_404_and_a_reload_switches_it() {
    let server = start_with(|c| c.demo_page = false).await;
    assert_off(server.addr).await;
    server.reload(test_config()).await;
    eventually("the page is on after the reload", || async {
        get(server.addr, "/").await.status == 200
    })
    .await;
    assert_eq!(
        post_token(server.addr, r#"{"username":"alice"}"#)
            .await
            .status,
        200
    );
    let mut off = test_config();
    off.demo_page = false;
    server.reload(off).await;
    eventually("the page is off after the reload", || async {
        get(server.addr, "/").await.status == 404
    })
    .await;
    assert_off(server.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_development_token_signs_in_over_the_websocket() {
    let server = start().await;
    let r = post_token(server.addr, r#"{"username":"Zoë 1"}"#).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let body = r.json();
    assert_eq!(body["userId"], "Zoë 1");
    assert_eq!(body["username"], "Zoë 1");
    assert_eq!(body["expiresInSeconds"], 900);
    let token = body["token"].as_str().expect("a token");
    // As the page uses it: from the page's own origin.
    let origin = format!("http://{}", server.addr);
    let mut c = Client::try_connect(server.addr, &[("Origin", &origin)])
        .await
        .expect("upgrade");
    let ok = c.auth_token(token).await;
    assert_eq!(ok["payload"]["userId"], "Zoë 1");
    assert_eq!(ok["payload"]["username"], "Zoë 1");
    // The token names the user: a payload username does not change it.
    let mut c = Client::connect(server.addr).await;
    let ok = c
        .ok(
            "AUTHENTICATE",
            json!({"token": token, "username": "mallory"}),
            "AUTH_SUCCESS",
        )
        .await;
    assert_eq!(ok["payload"]["username"], "Zoë 1");
    // A charset parameter and another case are fine.
    let r = request(
        server.addr,
        "POST",
        "/demo/token",
        "content-type: Application/JSON; charset=utf-8\r\n",
        r#"{"username":"bob"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_token_requests_get_a_clear_error() {
    let server = start().await;
    let addr = server.addr;
    let name_rule =
        "the username must be 1-32 characters, not only spaces, without control characters";
    let shape = r#"expected a JSON object such as {"username": "alice"}"#;
    let long = format!(r#"{{"username":"{}"}}"#, "a".repeat(33));
    for (body, error) in [
        (r#"{"username":""}"#, name_rule),
        (r#"{"username":"   "}"#, name_rule),
        (r#"{"username":"tab\there"}"#, name_rule),
        (r#"{"username":"bell\u0007"}"#, name_rule),
        (long.as_str(), name_rule),
        (r#"{"username":42}"#, shape),
        (r#"{"name":"alice"}"#, shape),
        (r#"["alice"]"#, shape),
        ("alice", shape),
        ("", shape),
    ] {
        let r = post_token(addr, body).await;
        assert_eq!(r.status, 400, "{body:?}");
        assert_eq!(r.json(), json!({ "error": error }), "{body:?}");
    }
    let r = request(addr, "POST", "/demo/token", "", r#"{"username":"alice"}"#).await;
    assert_eq!(r.status, 415);
    assert!(
        r.json()["error"]
            .as_str()
            .expect("text")
            .contains("application/json")
    );
    let r = request(
        addr,
        "POST",
        "/demo/token",
        "Content-Type: text/plain\r\n",
        r#"{"username":"alice"}"#,
    )
    .await;
    assert_eq!(r.status, 415);
    let huge = format!(r#"{{"username":"alice","pad":"{}"}}"#, "x".repeat(2000));
    let r = post_token(addr, &huge).await;
    assert_eq!(r.status, 413);
    assert!(
        r.json()["error"]
            .as_str()
            .expect("text")
            .contains("1024 bytes")
    );
    // The server is fine afterwards.
    assert_eq!(
        post_token(addr, r#"{"username":"alice"}"#).await.status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_development_tokens_without_the_development_secret() {
    // A secret of the operator's: the page is there, the token endpoint not.
    let server =
        start_with(|c| c.jwt_key = JwtKeySource::Secret(b"operator-secret".to_vec())).await;
    assert_eq!(get(server.addr, "/").await.status, 200);
    assert_eq!(
        get(server.addr, "/demo/config.json").await.json()["devTokens"],
        false
    );
    assert_eq!(
        post_token(server.addr, r#"{"username":"alice"}"#)
            .await
            .status,
        404
    );
    assert_eq!(get(server.addr, "/demo/token").await.status, 404);
    server.shutdown().await.expect("clean shutdown");

    // Production: the page is off unless asked for, and never gives tokens.
    let strong = "p".repeat(48);
    let production = |demo: Option<&str>| {
        let strong = strong.clone();
        let demo = demo.map(str::to_owned);
        Config::from_lookup(move |var| match var {
            "APP_ENV" => Some("production".to_owned()),
            "JWT_SECRET" => Some(strong.clone()),
            "HOST" => Some("127.0.0.1".to_owned()),
            "PORT" => Some("0".to_owned()),
            "DEMO_PAGE" => demo.clone(),
            _ => None,
        })
        .expect("valid")
    };
    let config = production(None);
    assert_eq!(config.app_env, AppEnv::Production);
    let server = chat_flow::server::RunningServer::start(config)
        .await
        .expect("starts");
    assert_off(server.addr).await;
    server.shutdown().await.expect("clean shutdown");
    let server = chat_flow::server::RunningServer::start(production(Some("true")))
        .await
        .expect("starts");
    assert_eq!(get(server.addr, "/").await.status, 200);
    assert_eq!(
        post_token(server.addr, r#"{"username":"alice"}"#)
            .await
            .status,
        404
    );

    // A reload that sets a secret takes the endpoint away at once.
    let server = start().await;
    assert_eq!(
        post_token(server.addr, r#"{"username":"alice"}"#)
            .await
            .status,
        200
    );
    let mut config = test_config();
    config.jwt_key = JwtKeySource::Secret(b"now-a-real-one".to_vec());
    server.reload(config).await;
    eventually("the endpoint is gone after the reload", || async {
        post_token(server.addr, r#"{"username":"alice"}"#)
            .await
            .status
            == 404
    })
    .await;
}

/// With `ALLOWED_ORIGINS` set, the page's WebSocket comes from the
/// server's own origin, which must be listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_allowed_origins_the_page_origin_must_be_listed() {
    let server = start_with(|c| {
        c.allowed_origins = Some(vec!["https://chat.example.com".to_owned()]);
    })
    .await;
    let page_origin = format!("http://{}", server.addr);
    match Client::try_connect(server.addr, &[("Origin", &page_origin)]).await {
        Err(ConnectError::Status(403)) => {}
        Err(e) => panic!("expected 403, got {e:?}"),
        Ok(_) => panic!("expected 403, got an upgrade"),
    }
    let mut config = test_config();
    config.allowed_origins = Some(vec![
        "https://chat.example.com".to_owned(),
        page_origin.clone(),
    ]);
    server.reload(config).await;
    eventually("the listed page origin upgrades", || async {
        Client::try_connect(server.addr, &[("Origin", &page_origin)])
            .await
            .is_ok()
    })
    .await;
}
