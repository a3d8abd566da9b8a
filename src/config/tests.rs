//! Tests of the whole configuration: defaults, every variable, and the
//! rules each one is held to.

use super::*;
use std::collections::HashMap;

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/jwt/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn load(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Config::from_lookup(|var| map.get(var).cloned())
}

fn error_for(var: &str, value: &str) -> ConfigError {
    match load(&[(var, value)]) {
        Ok(config) => panic!("{var}={value:?} was accepted: {config:?}"),
        Err(e) => e,
    }
}

#[test]
fn nothing_set_gives_the_defaults_with_the_dev_secret() {
    let config = load(&[]).expect("defaults are valid");
    assert_eq!(config, Config::default());
    assert!(config.uses_dev_secret());
    assert_eq!(config.listen_addr().to_string(), "0.0.0.0:3001");
    assert_eq!(
        config.default_rooms,
        vec![("general".to_owned(), "General Chat".to_owned())]
    );
    assert_eq!(config.log_format, LogFormat::Json);
    assert_eq!(config.app_env, AppEnv::Development);
}

#[test]
fn every_variable_is_read() {
    let config = load(&[
        ("HOST", "::1"),
        ("PORT", "0"),
        ("MAX_MESSAGE_BYTES", "1024"),
        (
            "ALLOWED_ORIGINS",
            " https://A.example , http://localhost:3000 ",
        ),
        ("MAX_CONNECTIONS", "10"),
        ("MAX_CONNECTIONS_PER_IP", "2"),
        ("TRUSTED_PROXIES", " 10.0.0.0/8 , fd00::/8,127.0.0.1 "),
        ("JWT_ALGORITHM", "hs256"),
        ("JWT_SECRET", "s3cret"),
        ("JWT_ISSUER", "issuer"),
        ("JWT_AUDIENCE", "aud"),
        ("JWT_LEEWAY_SECONDS", "0"),
        ("AUTH_TIMEOUT_MS", "1"),
        ("DEFAULT_ROOMS", "a:Room A, b-2 : Room: B "),
        ("MAX_CONTENT_LENGTH", "10"),
        ("HISTORY_LIMIT", "1"),
        ("TYPING_TIMEOUT_MS", "2"),
        ("PRESENCE_DELAY_MS", "0"),
        ("RATE_LIMIT_MESSAGES", "3"),
        ("RATE_LIMIT_WINDOW_MS", "4"),
        ("RATE_LIMIT_REQUESTS", "5"),
        ("RATE_LIMIT_DISCONNECT_AFTER", "6"),
        ("ROOMS_PER_USER_MAX", "0"),
        ("MAX_ROOMS", "2"),
        ("ROOM_IDLE_TTL_MS", "0"),
        ("PING_INTERVAL_MS", "7"),
        ("IDLE_TIMEOUT_MS", "8"),
        ("OUTBOUND_QUEUE_LIMIT", "9"),
        ("OUTBOUND_QUEUE_BYTES", "10"),
        ("WRITE_TIMEOUT_MS", "11"),
        ("OUTBOUND_MEMORY_MAX_BYTES", "12"),
        ("SHUTDOWN_GRACE_MS", "0"),
        ("WORKER_THREADS", "3"),
        ("LOG_LEVEL", "chat_flow=debug,warn"),
        ("LOG_FORMAT", "Pretty"),
        ("APP_ENV", "development"),
        ("DEMO_PAGE", " Off "),
        ("REDIS_URL", " redis://127.0.0.1:6390/2 "),
        ("REDIS_KEY_PREFIX", "cf-test"),
        ("NODE_TTL_MS", "1000"),
        ("REDIS_TIMEOUT_MS", "250"),
    ])
    .expect("valid");
    let expected = Config {
        host: "::1".parse().expect("ip"),
        port: 0,
        max_message_bytes: 1024,
        allowed_origins: Some(vec![
            "https://a.example".to_owned(),
            "http://localhost:3000".to_owned(),
        ]),
        max_connections: 10,
        max_connections_per_ip: 2,
        trusted_proxies: ["10.0.0.0/8", "fd00::/8", "127.0.0.1/32"]
            .map(|net| Cidr::parse(net).expect("a network"))
            .to_vec(),
        jwt_algorithm: JwtAlgorithm::Hs256,
        jwt_key: JwtKeySource::Secret(b"s3cret".to_vec()),
        jwt_issuer: Some("issuer".to_owned()),
        jwt_audience: Some("aud".to_owned()),
        jwt_leeway_seconds: 0,
        auth_timeout_ms: 1,
        default_rooms: vec![
            ("a".to_owned(), "Room A".to_owned()),
            ("b-2".to_owned(), "Room: B".to_owned()),
        ],
        max_content_length: 10,
        history_limit: 1,
        typing_timeout_ms: 2,
        presence_delay_ms: 0,
        rate_limit_messages: 3,
        rate_limit_window_ms: 4,
        rate_limit_requests: 5,
        rate_limit_disconnect_after: 6,
        rooms_per_user_max: 0,
        max_rooms: 2,
        room_idle_ttl_ms: 0,
        ping_interval_ms: 7,
        idle_timeout_ms: 8,
        outbound_queue_limit: 9,
        outbound_queue_bytes: 10,
        write_timeout_ms: 11,
        outbound_memory_max_bytes: 12,
        shutdown_grace_ms: 0,
        worker_threads: 3,
        log_level: "chat_flow=debug,warn".to_owned(),
        log_format: LogFormat::Pretty,
        app_env: AppEnv::Development,
        demo_page: false,
        redis_url: Some("redis://127.0.0.1:6390/2".to_owned()),
        redis_key_prefix: "cf-test".to_owned(),
        node_ttl_ms: 1000,
        redis_timeout_ms: 250,
    };
    assert_eq!(config, expected);
    assert!(!config.uses_dev_secret());
}

#[test]
fn errors_name_the_variable_and_the_value() {
    assert_eq!(
        error_for("PORT", "abc").to_string(),
        r#"invalid value "abc" for PORT: expected an integer 0-65535"#
    );
    assert_eq!(
        error_for("PORT", "65536").to_string(),
        r#"invalid value "65536" for PORT: expected an integer 0-65535"#
    );
    assert_eq!(
        error_for("MAX_CONNECTIONS", "-1").to_string(),
        r#"invalid value "-1" for MAX_CONNECTIONS: expected an integer >= 1"#
    );
    assert_eq!(
        error_for("WORKER_THREADS", "1025").to_string(),
        r#"invalid value "1025" for WORKER_THREADS: expected an integer 0-1024"#
    );
    assert_eq!(
        error_for("PRESENCE_DELAY_MS", "10001").to_string(),
        r#"invalid value "10001" for PRESENCE_DELAY_MS: expected an integer 0-10000"#
    );
    let e = error_for("HOST", "localhost");
    assert_eq!(e.variable(), Some("HOST"));
    assert!(e.to_string().contains(r#""localhost""#), "{e}");
}

#[test]
fn zero_is_rejected_where_it_makes_no_sense() {
    for var in [
        "MAX_MESSAGE_BYTES",
        "MAX_CONNECTIONS",
        "MAX_CONNECTIONS_PER_IP",
        "AUTH_TIMEOUT_MS",
        "MAX_CONTENT_LENGTH",
        "HISTORY_LIMIT",
        "TYPING_TIMEOUT_MS",
        "RATE_LIMIT_MESSAGES",
        "RATE_LIMIT_WINDOW_MS",
        "RATE_LIMIT_REQUESTS",
        "RATE_LIMIT_DISCONNECT_AFTER",
        "PING_INTERVAL_MS",
        "IDLE_TIMEOUT_MS",
        "OUTBOUND_QUEUE_LIMIT",
        "OUTBOUND_QUEUE_BYTES",
        "WRITE_TIMEOUT_MS",
        "OUTBOUND_MEMORY_MAX_BYTES",
        "MAX_ROOMS",
    ] {
        let e = error_for(var, "0");
        assert_eq!(e.variable(), Some(var));
        assert!(
            e.to_string()
                .starts_with(&format!("invalid value \"0\" for {var}")),
            "{e}"
        );
    }
    for var in [
        "PORT",
        "JWT_LEEWAY_SECONDS",
        "ROOMS_PER_USER_MAX",
        "ROOM_IDLE_TTL_MS",
        "SHUTDOWN_GRACE_MS",
        "WORKER_THREADS",
    ] {
        load(&[(var, "0")]).unwrap_or_else(|e| panic!("{var}=0 rejected: {e}"));
    }
}

#[test]
fn out_of_range_and_garbage_numbers_are_rejected() {
    for (var, value) in [
        ("MAX_MESSAGE_BYTES", "67108865"),
        ("RATE_LIMIT_MESSAGES", "4294967296"),
        ("AUTH_TIMEOUT_MS", "2592000001"),
        ("JWT_LEEWAY_SECONDS", "86401"),
        ("HISTORY_LIMIT", "1.5"),
        ("HISTORY_LIMIT", "1e3"),
        ("HISTORY_LIMIT", "99999999999999999999999"),
        ("PORT", ""),
        ("PORT", "   "),
    ] {
        assert_eq!(error_for(var, value).variable(), Some(var), "{var}={value}");
    }
    assert_eq!(load(&[("PORT", " 8080 ")]).expect("trimmed").port, 8080);
}

#[test]
fn max_rooms_must_hold_the_default_rooms() {
    let rooms = ("DEFAULT_ROOMS", "a:A,b:B,c:C");
    let e = load(&[rooms, ("MAX_ROOMS", "2")]).expect_err("fewer than the defaults");
    assert_eq!(e.variable(), Some("MAX_ROOMS"));
    assert!(e.to_string().contains("DEFAULT_ROOMS (3)"), "{e}");
    assert_eq!(
        load(&[rooms, ("MAX_ROOMS", "3")])
            .expect("as many")
            .max_rooms,
        3
    );
    assert_eq!(
        error_for("ROOM_IDLE_TTL_MS", "2592000001").variable(),
        Some("ROOM_IDLE_TTL_MS")
    );
    assert_eq!(error_for("MAX_ROOMS", "lots").variable(), Some("MAX_ROOMS"));
}

#[test]
fn idle_timeout_must_exceed_ping_interval() {
    let e = load(&[("PING_INTERVAL_MS", "1000"), ("IDLE_TIMEOUT_MS", "1000")])
        .expect_err("equal is rejected");
    assert_eq!(e.variable(), Some("IDLE_TIMEOUT_MS"));
    assert!(e.to_string().contains("PING_INTERVAL_MS (1000)"), "{e}");
    let e = error_for("PING_INTERVAL_MS", "80000");
    assert_eq!(e.variable(), Some("IDLE_TIMEOUT_MS"));
}

#[test]
fn the_memory_cap_is_at_least_one_connections_bound() {
    let e = load(&[
        ("OUTBOUND_QUEUE_BYTES", "2048"),
        ("OUTBOUND_MEMORY_MAX_BYTES", "2047"),
    ])
    .expect_err("a cap below one connection's bound is rejected");
    assert_eq!(e.variable(), Some("OUTBOUND_MEMORY_MAX_BYTES"));
    assert!(e.to_string().contains("OUTBOUND_QUEUE_BYTES (2048)"), "{e}");
    // The default cap is below a larger per-connection bound: named too.
    let e = error_for("OUTBOUND_QUEUE_BYTES", "1073741825");
    assert_eq!(e.variable(), Some("OUTBOUND_MEMORY_MAX_BYTES"));
    let equal = load(&[
        ("OUTBOUND_QUEUE_BYTES", "2048"),
        ("OUTBOUND_MEMORY_MAX_BYTES", "2048"),
    ])
    .expect("equal is fine");
    assert_eq!(equal.outbound_memory_max_bytes, 2048);
    assert_eq!(
        error_for("WRITE_TIMEOUT_MS", "2592000001").variable(),
        Some("WRITE_TIMEOUT_MS")
    );
}

#[test]
fn enums_are_validated() {
    assert_eq!(error_for("APP_ENV", "staging").variable(), Some("APP_ENV"));
    assert_eq!(
        error_for("LOG_FORMAT", "xml").variable(),
        Some("LOG_FORMAT")
    );
    assert_eq!(
        error_for("JWT_ALGORITHM", "none").variable(),
        Some("JWT_ALGORITHM")
    );
    assert_eq!(
        error_for("JWT_ALGORITHM", "HS512").variable(),
        Some("JWT_ALGORITHM")
    );
    for alg in JwtAlgorithm::ALL {
        assert_eq!(JwtAlgorithm::from_name(alg.as_str()), Some(alg));
    }
    assert_eq!(JwtAlgorithm::from_name("eddsa"), Some(JwtAlgorithm::EdDsa));
}

#[test]
fn the_demo_page_is_on_outside_production_and_a_switch() {
    let config = load(&[]).expect("defaults");
    assert!(config.demo_page && config.demo_tokens());
    let strong = "y".repeat(JWT_SECRET_MIN_BYTES);
    let production = [("APP_ENV", "production"), ("JWT_SECRET", strong.as_str())];
    let config = load(&production).expect("production");
    assert!(!config.demo_page, "off by default in production");
    let config = load(&[production[0], production[1], ("DEMO_PAGE", "true")]).expect("on");
    assert!(config.demo_page, "on when asked for");
    assert!(
        !config.demo_tokens(),
        "never development tokens in production"
    );
    let config = load(&[("JWT_SECRET", "own-secret")]).expect("own secret");
    assert!(
        config.demo_page && !config.demo_tokens(),
        "only with the dev secret"
    );
    for (raw, on) in [
        ("true", true),
        ("TRUE", true),
        (" 1 ", true),
        ("yes", true),
        ("On", true),
        ("false", false),
        ("0", false),
        ("No", false),
        ("off", false),
    ] {
        let config = load(&[("DEMO_PAGE", raw)]).unwrap_or_else(|e| panic!("{raw:?}: {e}"));
        assert_eq!(config.demo_page, on, "{raw:?}");
        assert_eq!(config.demo_tokens(), on, "{raw:?}");
    }
    for bad in ["", " ", "2", "enabled", "truee", "y"] {
        let e = error_for("DEMO_PAGE", bad);
        assert_eq!(e.variable(), Some("DEMO_PAGE"), "{bad:?}");
    }
    assert_eq!(
        error_for("DEMO_PAGE", "maybe").to_string(),
        r#"invalid value "maybe" for DEMO_PAGE: expected true or false (or 1/0, yes/no, on/off)"#
    );
}

#[test]
fn log_level_must_parse_as_an_env_filter() {
    assert_eq!(
        error_for("LOG_LEVEL", "foo=bogus").variable(),
        Some("LOG_LEVEL")
    );
    assert_eq!(error_for("LOG_LEVEL", "").variable(), Some("LOG_LEVEL"));
    assert_eq!(
        load(&[("LOG_LEVEL", "debug")]).expect("valid").log_level,
        "debug"
    );
}

#[test]
fn allowed_origins_rules() {
    for bad in [
        "",
        ",",
        "https://a.com,",
        "https://a.com/",
        "a.com",
        "*",
        "https://a.com/x",
    ] {
        assert_eq!(
            error_for("ALLOWED_ORIGINS", bad).variable(),
            Some("ALLOWED_ORIGINS")
        );
    }
    let config = load(&[("ALLOWED_ORIGINS", "https://a.com,https://A.com")]).expect("ok");
    assert_eq!(
        config.allowed_origins,
        Some(vec!["https://a.com".to_owned()])
    );
}

#[test]
fn default_rooms_rules() {
    assert_eq!(
        load(&[("DEFAULT_ROOMS", "")]).expect("ok").default_rooms,
        vec![]
    );
    for bad in [
        "general",
        "general:",
        ":General",
        "a:A,,b:B",
        "a:A,",
        "a b:A",
        "a:A,a:Again",
        "a:   ",
        "a:bell\u{7}",
        &format!("{}:x", "i".repeat(65)),
        &format!("a:{}", "n".repeat(65)),
    ] {
        let e = error_for("DEFAULT_ROOMS", bad);
        assert_eq!(e.variable(), Some("DEFAULT_ROOMS"), "{bad:?}");
    }
    let long = format!("{}:{}", "i".repeat(64), "é".repeat(64));
    assert_eq!(
        load(&[("DEFAULT_ROOMS", &long)])
            .expect("ok")
            .default_rooms
            .len(),
        1
    );
}

#[test]
fn production_requires_a_strong_secret() {
    let e = load(&[("APP_ENV", "production")]).expect_err("no secret");
    assert_eq!(e.variable(), Some("JWT_SECRET"));
    let short = "x".repeat(JWT_SECRET_MIN_BYTES - 1);
    let e = load(&[("APP_ENV", "production"), ("JWT_SECRET", &short)]).expect_err("short");
    assert_eq!(e.variable(), Some("JWT_SECRET"));
    assert!(
        !e.to_string().contains(&short),
        "the secret is never shown: {e}"
    );
    let e =
        load(&[("APP_ENV", "production"), ("JWT_SECRET", DEV_JWT_SECRET)]).expect_err("dev secret");
    assert_eq!(e.variable(), Some("JWT_SECRET"));
    let strong = "y".repeat(JWT_SECRET_MIN_BYTES);
    let config = load(&[("APP_ENV", "production"), ("JWT_SECRET", &strong)]).expect("ok");
    assert_eq!(config.jwt_key, JwtKeySource::Secret(strong.into_bytes()));
    assert!(!config.uses_dev_secret());
}

#[test]
fn development_allows_short_secrets_but_not_empty_ones() {
    let config = load(&[("JWT_SECRET", "short")]).expect("ok");
    assert_eq!(config.jwt_key.hmac_secret(), Some(&b"short"[..]));
    assert_eq!(error_for("JWT_SECRET", "").variable(), Some("JWT_SECRET"));
}

#[test]
fn secrets_are_redacted_in_debug_output() {
    let config = load(&[("JWT_SECRET", "hunter2-hunter2")]).expect("ok");
    assert!(!format!("{config:?}").contains("hunter2"));
}

/// Only the setting is checked here; reading and parsing the key file is
/// `auth`'s (see the tests in `auth/keys.rs`).
#[test]
fn public_key_algorithms_require_a_key_file() {
    for alg in ["RS256", "ES256", "EdDSA"] {
        let e = load(&[("JWT_ALGORITHM", alg)]).expect_err("no key file");
        assert_eq!(e.variable(), Some("JWT_PUBLIC_KEY_FILE"), "{alg}");
        assert!(e.to_string().contains(alg), "{e}");

        let e =
            load(&[("JWT_ALGORITHM", alg), ("JWT_PUBLIC_KEY_FILE", " ")]).expect_err("blank path");
        assert_eq!(e.variable(), Some("JWT_PUBLIC_KEY_FILE"), "{alg}");

        let path = fixture("rsa_public.pem");
        let config = load(&[("JWT_ALGORITHM", alg), ("JWT_PUBLIC_KEY_FILE", &path)])
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(
            config.jwt_key,
            JwtKeySource::PublicKeyPem {
                pem: std::fs::read(&path).expect("fixture"),
                path: path.into(),
            }
        );
        assert_eq!(config.jwt_key.hmac_secret(), None);
        assert!(!config.uses_dev_secret());
    }
}

#[test]
fn a_public_key_file_under_hs256_is_an_error() {
    let e = error_for("JWT_PUBLIC_KEY_FILE", &fixture("rsa_public.pem"));
    assert_eq!(e.variable(), Some("JWT_PUBLIC_KEY_FILE"));
}

#[test]
fn issuer_and_audience_must_not_be_blank() {
    assert_eq!(error_for("JWT_ISSUER", " ").variable(), Some("JWT_ISSUER"));
    assert_eq!(
        error_for("JWT_AUDIENCE", "").variable(),
        Some("JWT_AUDIENCE")
    );
}

#[test]
fn long_values_are_shortened_in_errors() {
    let e = error_for("PORT", &"9".repeat(10_000));
    assert!(e.to_string().len() < 300, "{e}");
}

#[test]
fn serve_args_cover_every_variable_and_feed_from_args() {
    let mut args = ServeArgs::default();
    for var in ServeArgs::VARIABLES {
        assert_eq!(args.value(var), None);
    }
    assert_eq!(ServeArgs::VARIABLES.len(), 42);
    args.port = Some("4000".to_owned());
    args.log_format = Some("pretty".to_owned());
    let config = Config::from_args(&args).expect("valid");
    assert_eq!((config.port, config.log_format), (4000, LogFormat::Pretty));
    args.history_limit = Some("0".to_owned());
    assert_eq!(
        Config::from_args(&args).expect_err("zero").variable(),
        Some("HISTORY_LIMIT")
    );
}

/// Settings unset by default: their `.env.example` line holds an example,
/// not the default.
const EXAMPLE_VALUED: [&str; 5] = [
    "ALLOWED_ORIGINS",
    "JWT_SECRET",
    "JWT_ISSUER",
    "JWT_AUDIENCE",
    "REDIS_URL",
];

/// The one setting whose `.env.example` line is prose (`# VAR=…`): it
/// cannot stand alone, as it needs `JWT_ALGORITHM` too.
const PROSE_ONLY: [&str; 1] = ["JWT_PUBLIC_KEY_FILE"];

/// `.env.example`'s commented settings (`#VAR=value`), in order.
fn env_example_settings() -> Vec<(&'static str, &'static str)> {
    include_str!("../../.env.example")
        .lines()
        .filter_map(|line| line.strip_prefix('#'))
        .filter_map(|line| line.split_once('='))
        .filter(|(var, _)| {
            !var.is_empty()
                && var
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .collect()
}

#[test]
fn env_example_documents_every_variable() {
    let example = include_str!("../../.env.example");
    let settings = env_example_settings();
    for var in ServeArgs::VARIABLES {
        let lines = settings.iter().filter(|(v, _)| v == var).count();
        if PROSE_ONLY.contains(var) {
            assert_eq!(lines, 0, "{var} has a #{var}= line");
            assert!(
                example.contains(&format!("\n# {var}=")),
                ".env.example lacks {var}"
            );
        } else {
            assert_eq!(lines, 1, ".env.example has {lines} #{var}= lines");
        }
    }
    for (var, _) in settings {
        assert!(
            ServeArgs::VARIABLES.contains(&var),
            "{var} is not a setting"
        );
    }
}

#[test]
fn env_example_defaults_are_the_defaults() {
    let vars: HashMap<&str, &str> = env_example_settings()
        .into_iter()
        .filter(|(var, _)| !EXAMPLE_VALUED.contains(var))
        .collect();
    let config = Config::from_lookup(|var| vars.get(var).map(|v| (*v).to_owned())).expect("valid");
    assert_eq!(config, Config::default());
}

#[test]
fn trusted_proxies_rules() {
    assert_eq!(load(&[]).expect("default").trusted_proxies, []);
    for blank in ["", "  "] {
        let config = load(&[("TRUSTED_PROXIES", blank)]).expect("blank trusts none");
        assert_eq!(config.trusted_proxies, []);
    }
    let config = load(&[("TRUSTED_PROXIES", "10.1.2.3/8,10.0.0.0/8,::1")]).expect("valid");
    let shown: Vec<String> = config
        .trusted_proxies
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        shown,
        ["10.0.0.0/8", "::1/128"],
        "host bits cleared, duplicates dropped"
    );
    assert!(config.is_trusted_proxy("10.200.0.1".parse().expect("ip")));
    assert!(config.is_trusted_proxy("::ffff:10.200.0.1".parse().expect("ip")));
    assert!(!config.is_trusted_proxy("11.0.0.1".parse().expect("ip")));
    for (bad, entry) in [
        ("10.0.0.0/33", r#"entry 1 ("10.0.0.0/33")"#),
        ("10.0.0.0/8,proxy.local", r#"entry 2 ("proxy.local")"#),
        ("10.0.0.0/8,,::1", "entry 2 is empty"),
        ("10.0.0.0/8,", "entry 2 is empty"),
        ("::/129", r#"entry 1 ("::/129")"#),
    ] {
        let e = error_for("TRUSTED_PROXIES", bad);
        assert_eq!(e.variable(), Some("TRUSTED_PROXIES"));
        assert!(e.to_string().contains(entry), "{bad:?}: {e}");
    }
}

#[test]
fn an_oversized_key_file_is_unreadable() {
    let dir = std::env::temp_dir().join(format!("chat-flow-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("huge.pem");
    let size = usize::try_from(super::jwt::PUBLIC_KEY_FILE_MAX_BYTES).expect("small") + 1;
    std::fs::write(&path, vec![b'A'; size]).expect("write");
    let e = load(&[
        ("JWT_ALGORITHM", "ES256"),
        ("JWT_PUBLIC_KEY_FILE", &path.to_string_lossy()),
    ])
    .expect_err("too large");
    assert!(matches!(e, ConfigError::KeyFileUnreadable { .. }), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_redis_url_is_checked_and_its_password_never_shown() {
    assert_eq!(
        load(&[]).expect("valid").redis_url,
        None,
        "one node by default"
    );
    for ok in [
        "redis://localhost",
        "rediss://u:p@cache.example:6380/3",
        "redis://:p@10.0.0.1:6379",
    ] {
        assert_eq!(
            load(&[("REDIS_URL", ok)]).expect(ok).redis_url.as_deref(),
            Some(ok)
        );
    }
    assert_eq!(
        error_for("REDIS_URL", "http://u:hunter2@host").to_string(),
        r#"invalid value "http://u:***@host" for REDIS_URL: expected redis://[user:pass@]host:port[/db] or rediss://…"#
    );
    let bad_port = error_for("REDIS_URL", "redis://:hunter2@host:notaport").to_string();
    assert!(
        bad_port.starts_with(r#"invalid value "redis://:***@host:notaport" for REDIS_URL"#),
        "{bad_port}"
    );
    assert!(!bad_port.contains("hunter2"), "{bad_port}");
    assert_eq!(
        error_for("REDIS_KEY_PREFIX", "a b").to_string(),
        r#"invalid value "a b" for REDIS_KEY_PREFIX: expected 1-64 characters: letters, digits, - _ . :"#
    );
    assert_eq!(
        error_for("NODE_TTL_MS", "299").to_string(),
        r#"invalid value "299" for NODE_TTL_MS: expected an integer 300-2592000000"#
    );
    assert_eq!(
        error_for("REDIS_TIMEOUT_MS", "0").to_string(),
        r#"invalid value "0" for REDIS_TIMEOUT_MS: expected an integer 1-2592000000"#
    );
}
