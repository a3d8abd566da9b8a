//! The demo page: a small chat UI built into the binary, so that a person
//! who runs the server can open `http://localhost:3001/` and chat between
//! two tabs before reading a line of protocol.
//!
//! Served while `DEMO_PAGE` is on (read per request, so a reload turns it
//! on or off at once):
//!
//! * `GET /`: the page (`clients/demo/index.html`); `GET /demo/app.js` and
//!   `GET /demo/style.css`: its script and style sheet;
//! * `GET /demo/client/*.js`: the `chat-flow-client` package's modules
//!   (`clients/js/src/`), the very files its tests test, which the page
//!   imports;
//! * `GET /demo/config.json`: `{"devTokens": bool, "maxContentLength": n}`,
//!   how the page signs in and how long a message may be;
//! * `POST /demo/token` (`{"username": "…"}` → `{"token", "userId",
//!   "username", "expiresInSeconds"}`): a short-lived development token, only
//!   while tokens are verified with the public development secret
//!   ([`Config::demo_tokens`]); in any other configuration it does not
//!   exist (404), and the page asks for a token from `chat-flow token`.
//!
//! Every file is embedded with `include_bytes!`. Every response carries a
//! strict Content-Security-Policy (scripts and styles from this origin
//! only, no inline code, connections to this origin and its WebSocket),
//! `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer` and a
//! `Cache-Control` (`no-cache` for files: revalidated, so a new binary's
//! page never runs with an old client; `no-store` for the rest). Unknown
//! paths under `/demo/` are 404, a known path asked with another method 405.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{
    ALLOW, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HOST, HeaderValue,
    REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use super::shared::Shared;
use crate::auth::{TokenSpec, mint_hs256};
use crate::config::Config;
use crate::protocol::valid_username;

/// Lifetime of a development token from `POST /demo/token`: short, since
/// the page asks for a fresh one on every (re)connect and before expiry.
pub const DEMO_TOKEN_TTL_S: u64 = 15 * 60;
/// Largest `POST /demo/token` body.
pub const TOKEN_BODY_MAX_BYTES: usize = 1024;
/// Time a `POST /demo/token` body has to arrive (the head has its own).
pub const TOKEN_BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// The path of the development-token endpoint.
pub const TOKEN_PATH: &str = "/demo/token";
/// The path of the page's settings.
pub const CONFIG_PATH: &str = "/demo/config.json";

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";

/// One embedded file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

/// Every file the page loads, at the path it loads it from.
const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: HTML,
        body: include_bytes!("../../clients/demo/index.html"),
    },
    Asset {
        path: "/demo/app.js",
        content_type: JS,
        body: include_bytes!("../../clients/demo/app.js"),
    },
    Asset {
        path: "/demo/style.css",
        content_type: CSS,
        body: include_bytes!("../../clients/demo/style.css"),
    },
    Asset {
        path: "/demo/client/index.js",
        content_type: JS,
        body: include_bytes!("../../clients/js/src/index.js"),
    },
    Asset {
        path: "/demo/client/client.js",
        content_type: JS,
        body: include_bytes!("../../clients/js/src/client.js"),
    },
    Asset {
        path: "/demo/client/session.js",
        content_type: JS,
        body: include_bytes!("../../clients/js/src/session.js"),
    },
    Asset {
        path: "/demo/client/backoff.js",
        content_type: JS,
        body: include_bytes!("../../clients/js/src/backoff.js"),
    },
    Asset {
        path: "/demo/client/token.js",
        content_type: JS,
        body: include_bytes!("../../clients/js/src/token.js"),
    },
    Asset {
        path: "/demo/client/errors.js",
        content_type: JS,
        body: include_bytes!("../../clients/js/src/errors.js"),
    },
];

/// Whether `path` is the demo page's (`/` or under `/demo/`), whether or
/// not the page is on.
pub fn is_demo_path(path: &str) -> bool {
    path == "/" || path.starts_with("/demo/")
}

/// Answers a request for a demo path ([`is_demo_path`]).
pub(crate) async fn serve(req: Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    let csp = content_security_policy(req.headers().get(HOST));
    let mut response = respond(req, shared).await;
    let headers = response.headers_mut();
    headers.insert(CONTENT_SECURITY_POLICY, csp);
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if !headers.contains_key(CACHE_CONTROL) {
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

async fn respond(req: Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    let (demo_page, demo_tokens, max_content_length) = {
        let live = shared.live.load();
        let config = &live.config;
        (
            config.demo_page,
            config.demo_tokens(),
            config.max_content_length,
        )
    };
    let path = req.uri().path();
    if !demo_page {
        return plain(StatusCode::NOT_FOUND, "not found\n");
    }
    if path == TOKEN_PATH && demo_tokens {
        if req.method() != Method::POST {
            return not_allowed("POST");
        }
        return token(req, shared).await;
    }
    let get = req.method() == Method::GET || req.method() == Method::HEAD;
    if path == CONFIG_PATH {
        if !get {
            return not_allowed("GET, HEAD");
        }
        let body = json!({
            "devTokens": demo_tokens,
            "maxContentLength": max_content_length,
        })
        .to_string();
        return with_type(StatusCode::OK, JSON, Bytes::from(body));
    }
    let Some(asset) = ASSETS.iter().find(|a| a.path == path) else {
        return plain(StatusCode::NOT_FOUND, "not found\n");
    };
    if !get {
        return not_allowed("GET, HEAD");
    }
    let mut r = with_type(
        StatusCode::OK,
        asset.content_type,
        Bytes::from_static(asset.body),
    );
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// `POST /demo/token`: reads `{"username": "…"}` and answers a development
/// token for that name (it is the `sub` and the `username` claim), or an
/// error saying what is wrong, as `{"error": "…"}`.
async fn token(req: Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    let json_body = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(JSON));
    if !json_body {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the username as JSON (Content-Type: application/json)",
        );
    }
    let limited = Limited::new(req.into_body(), TOKEN_BODY_MAX_BYTES);
    let bytes = match tokio::time::timeout(TOKEN_BODY_TIMEOUT, limited.collect()).await {
        Err(_) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                "the request body took too long",
            );
        }
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("the request body is larger than {TOKEN_BODY_MAX_BYTES} bytes"),
            );
        }
        Ok(Err(_)) => return error(StatusCode::BAD_REQUEST, "the request body was cut short"),
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    let username = match parse_username(&bytes) {
        Ok(name) => name,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let live = shared.live.load();
    match mint(&live.config, &username, shared.clock.now().0 / 1000) {
        Some(token) => {
            tracing::debug!(username = %username, "demo token issued");
            let body = json!({
                "token": token,
                "userId": username,
                "username": username,
                "expiresInSeconds": DEMO_TOKEN_TTL_S,
            });
            with_type(StatusCode::OK, JSON, Bytes::from(body.to_string()))
        }
        // A reload may have set a secret since the route was chosen.
        None => plain(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// The username of a `POST /demo/token` body: the contract's rule
/// (1–32 characters, no control characters), and not only whitespace, since
/// it is also the user id.
pub fn parse_username(body: &[u8]) -> Result<String, &'static str> {
    const SHAPE: &str = r#"expected a JSON object such as {"username": "alice"}"#;
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|_| SHAPE)?;
    let Some(name) = value
        .as_object()
        .and_then(|object| object.get("username"))
        .and_then(serde_json::Value::as_str)
    else {
        return Err(SHAPE);
    };
    if !valid_username(name) || name.trim().is_empty() {
        return Err(
            "the username must be 1-32 characters, not only spaces, without control characters",
        );
    }
    Ok(name.to_owned())
}

/// A development token for `username`, issued at `now_s`, as `chat-flow
/// token --sub NAME --username NAME --ttl 15m` would sign it; `None` unless
/// `config` gives development tokens ([`Config::demo_tokens`]).
pub fn mint(config: &Config, username: &str, now_s: u64) -> Option<String> {
    if !config.demo_tokens() {
        return None;
    }
    let secret = config.jwt_key.hmac_secret()?;
    let spec = TokenSpec {
        username: Some(username),
        issuer: config.jwt_issuer.as_deref(),
        audience: config.jwt_audience.as_deref(),
        ..TokenSpec::new(username, now_s, DEMO_TOKEN_TTL_S)
    };
    mint_hs256(secret, &spec).ok()
}

/// The page's Content-Security-Policy. `connect-src 'self'` covers the
/// page's own `ws:`/`wss:` origin in browsers that follow CSP Level 3
/// (Chromium does: the browser test runs with it); the `ws://` and
/// `wss://` sources of the request's `Host` are for those that do not.
/// A `Host` with characters a host name cannot have is left out.
pub fn content_security_policy(host: Option<&HeaderValue>) -> HeaderValue {
    let host = host
        .map(HeaderValue::as_bytes)
        .filter(|h| !h.is_empty() && h.len() <= 255)
        .filter(|h| {
            h.iter().all(|&b| {
                b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')
            })
        })
        .and_then(|h| std::str::from_utf8(h).ok());
    let connect = match host {
        Some(host) => format!("'self' ws://{host} wss://{host}"),
        None => "'self'".to_owned(),
    };
    let policy = format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src {connect}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    );
    HeaderValue::from_str(&policy).unwrap_or_else(|_| {
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        )
    })
}

fn with_type(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    with_type(status, TEXT, Bytes::from_static(body.as_bytes()))
}

fn not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    r.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    r
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let body = json!({ "error": message }).to_string();
    with_type(status, JSON, Bytes::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The relative module specifiers a JavaScript file imports
    /// (`from './x.js'`, `import './x.js'`).
    fn imports(source: &str) -> Vec<String> {
        let mut found = Vec::new();
        for line in source.lines() {
            let line = line.trim();
            if !(line.starts_with("import ") || line.starts_with("export ")) {
                continue;
            }
            for quote in ['\'', '"'] {
                let mut parts = line.split(quote);
                parts.next();
                if let Some(spec) = parts.next()
                    && spec.starts_with('.')
                {
                    found.push(spec.to_owned());
                }
            }
        }
        found
    }

    /// `spec` relative to the asset at `from`.
    fn resolve(from: &str, spec: &str) -> String {
        let mut parts: Vec<&str> = from.split('/').collect();
        parts.pop();
        for part in spec.split('/') {
            match part {
                "." => {}
                ".." => {
                    parts.pop();
                }
                other => parts.push(other),
            }
        }
        parts.join("/")
    }

    /// Everything the page loads is served: a module the client gains, or a
    /// file the page names, fails here rather than in a browser.
    #[test]
    fn every_import_and_every_file_the_page_names_is_served() {
        let served = |path: &str| ASSETS.iter().any(|a| a.path == path);
        let mut checked = 0;
        for asset in ASSETS.iter().filter(|a| a.content_type == JS) {
            let source = std::str::from_utf8(asset.body).expect("utf-8");
            for spec in imports(source) {
                let path = resolve(asset.path, &spec);
                assert!(
                    served(&path),
                    "{} imports {spec}: {path} is not served",
                    asset.path
                );
                checked += 1;
            }
        }
        assert!(checked >= 6, "only {checked} imports found");
        let html = std::str::from_utf8(ASSETS[0].body).expect("utf-8");
        for attr in ["src=\"", "href=\""] {
            for rest in html.split(attr).skip(1) {
                let target = rest.split('"').next().unwrap_or_default();
                if target.starts_with("data:") {
                    continue;
                }
                assert!(
                    served(target),
                    "index.html names {target}, which is not served"
                );
            }
        }
        // The client's modules on disk are the ones served.
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/js/src");
        for entry in std::fs::read_dir(dir).expect("clients/js/src") {
            let name = entry
                .expect("entry")
                .file_name()
                .into_string()
                .expect("utf-8");
            if name.ends_with(".js") {
                assert!(
                    served(&format!("/demo/client/{name}")),
                    "{name} is not served"
                );
            }
        }
    }

    #[test]
    fn no_inline_script_or_style_in_the_page() {
        let html = std::str::from_utf8(ASSETS[0].body).expect("utf-8");
        assert!(!html.contains("style=\""), "inline style attribute");
        assert!(!html.contains("<style"), "inline style element");
        // An event handler attribute: ` on…=` inside a tag.
        for tag in html.split('<').skip(1) {
            let tag = tag.split('>').next().unwrap_or_default();
            for word in tag.split_whitespace() {
                let name = word.split('=').next().unwrap_or_default();
                assert!(
                    !(name.starts_with("on") && word.contains('=')),
                    "inline event handler in <{tag}>"
                );
            }
        }
        for script in html.split("<script").skip(1) {
            let (tag, rest) = script.split_once('>').expect("a script tag");
            assert!(tag.contains("src="), "inline script: <script{tag}>");
            assert!(rest.starts_with("</script>"), "inline script body");
        }
    }

    #[test]
    fn usernames_follow_the_contract() {
        assert_eq!(
            parse_username(br#"{"username":"alice"}"#),
            Ok("alice".to_owned())
        );
        assert_eq!(
            parse_username(r#"{"username":"Zoë Ünïcode","x":1}"#.as_bytes()),
            Ok("Zoë Ünïcode".to_owned())
        );
        let longest = "é".repeat(32);
        assert_eq!(
            parse_username(format!(r#"{{"username":"{longest}"}}"#).as_bytes()),
            Ok(longest)
        );
        for bad in [
            &br#"{"username":""}"#[..],
            br#"{"username":"   "}"#,
            br#"{"username":"tab\there"}"#,
            br#"{"username":"nul\u0000"}"#,
            br#"{"username":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}"#,
            br#"{"username":7}"#,
            br#"{"name":"alice"}"#,
            br#"["alice"]"#,
            b"username=alice",
            b"",
            b"\xff\xfe",
        ] {
            assert!(
                parse_username(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn tokens_only_with_the_development_secret() {
        let config = Config::default();
        let token = mint(&config, "alice", 1_700_000_000).expect("dev secret");
        let verified = crate::auth::Verifier::from_config(&config)
            .expect("verifier")
            .verify(&token, 1_700_000_000_000)
            .expect("accepted");
        assert_eq!(verified.user_id, "alice");
        assert_eq!(verified.username.as_deref(), Some("alice"));
        let off = Config {
            demo_page: false,
            ..Config::default()
        };
        assert_eq!(mint(&off, "alice", 1_700_000_000), None);
        let secret = Config {
            jwt_key: crate::config::JwtKeySource::Secret(b"own".to_vec()),
            ..Config::default()
        };
        assert_eq!(mint(&secret, "alice", 1_700_000_000), None);
    }

    #[test]
    fn the_policy_names_only_a_well_formed_host() {
        let policy = |host: Option<&str>| {
            let value = host.map(|h| HeaderValue::from_str(h).expect("header"));
            content_security_policy(value.as_ref())
                .to_str()
                .expect("ascii")
                .to_owned()
        };
        assert!(
            policy(Some("localhost:3001"))
                .contains("connect-src 'self' ws://localhost:3001 wss://localhost:3001;")
        );
        assert!(policy(Some("[::1]:3001")).contains("ws://[::1]:3001 "));
        for bad in [None, Some(""), Some("a.example; script-src *"), Some("a b")] {
            let p = policy(bad);
            assert!(p.contains("connect-src 'self'; "), "{bad:?}: {p}");
            assert!(!p.contains("script-src *"), "{p}");
        }
        assert!(
            policy(None).starts_with("default-src 'none'; script-src 'self'; style-src 'self'")
        );
    }
}
