//! The deployment files keep their promises, so that they cannot rot
//! unnoticed: CI cannot build the Docker image (no base images can be
//! pulled here), run compose, nor start a systemd service (systemd is not
//! PID 1), so what can be checked without them is checked here, against
//! the server's own defaults.
//!
//! * `Dockerfile`: a multi-stage build with `cargo build --release
//!   --locked` over every workspace member, the dependencies first over
//!   stand-in sources, then the real ones touched (else cargo would keep
//!   the stand-in binary); a non-root `USER` that the
//!   runtime stage creates; a `HEALTHCHECK` that runs `chat-flow
//!   healthcheck` (and that command, run as the image would run it, says
//!   healthy for the real server and unhealthy without one); `STOPSIGNAL
//!   SIGTERM`; `EXPOSE` the default `PORT`; its stop-timeout advice longer
//!   than `SHUTDOWN_GRACE_MS`. `.dockerignore` keeps `target/`, `.git`,
//!   `node_modules`, the fuzz tree and `.env` out of the context, and
//!   nothing the build copies.
//! * `deploy/chat-flow.service`: `systemd-analyze verify` accepts it with
//!   not one complaint about it (it only warns, exit 0, on unknown keys and
//!   bad values, so its output is read), and rejects it with an error
//!   planted; its stop timeout, descriptor limit, reload and stop signals
//!   match the server (a reload reads the working directory's `.env`,
//!   `/etc/chat-flow/.env`); its sandbox directives are there. `systemd-analyze`
//!   is installed with apt-get when missing: this test never skips.
//! * `docker-compose.yml` (read by a YAML-subset reader of its own that
//!   refuses what it does not understand): Redis `redis:7` with AOF,
//!   `noeviction`, a named volume and a `redis-cli ping` health check; two
//!   nodes built from `./Dockerfile`, alike, whose every variable is one the
//!   server reads and whose environment `Config::from_args` accepts
//!   (production, `JWT_SECRET` required from the operator, `REDIS_URL` at
//!   the redis service), a `stop_grace_period` above their
//!   `SHUTDOWN_GRACE_MS`, ports only on the loopback interface;
//!   `TRUSTED_PROXIES` covering the proxy's fixed address and not the
//!   network's gateway; the proxy service mounting `deploy/haproxy.cfg`,
//!   whose servers are the nodes.
//! * `deploy/haproxy.cfg`: what it routes (`/`, `/ws`, `/healthz`,
//!   `/readyz`, `/demo/`, never `/metrics`), `option forwardfor`, the
//!   tunnel timeout above the nodes' idle timeout, `/readyz` health checks;
//!   `haproxy -c` accepts it with no warning but the unresolvable compose
//!   names, and rejects it with an error planted; and HAProxy runs it in
//!   front of a real server and a draining stub: the stub leaves the
//!   rotation, `/metrics` is refused in every spelling, a WebSocket works
//!   and the node counts clients by the forwarded address. `haproxy` is
//!   installed by `scripts/ensure-haproxy.sh` when missing.
//!
//! Each check is a function returning the problems it found, and each is
//! also run on a copy of the file with a promise broken, which it must
//! report.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chat_flow::cli::DEFAULT_HEALTHCHECK_TIMEOUT;
use chat_flow::config::{
    Cidr, Config, DEFAULT_IDLE_TIMEOUT_MS, DEFAULT_MAX_CONNECTIONS, DEFAULT_PING_INTERVAL_MS,
    DEFAULT_PORT, DEFAULT_SHUTDOWN_GRACE_MS, DotEnv, ServeArgs,
};
use chat_flow::server::admission::HANDSHAKE_CAP_FACTOR;
use common::Client;
use common::process::{BIN, TempDir, chat_flow, output_text, wait_output};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Where the Dockerfile and the unit install the binary.
const INSTALLED_BIN: &str = "/usr/local/bin/chat-flow";

fn read(path: &str) -> String {
    let path = Path::new(ROOT).join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Panics listing `problems` unless there are none.
fn assert_none(what: &str, problems: Vec<String>) {
    assert!(problems.is_empty(), "{what}:\n  {}", problems.join("\n  "));
}

/// Asserts that `check` finds a problem mentioning `expected` once every
/// `from` is replaced by `to` in `text` (which must contain `from`).
fn assert_catches(
    check: impl Fn(&str) -> Vec<String>,
    text: &str,
    from: &str,
    to: &str,
    expected: &str,
) {
    assert!(text.contains(from), "the file no longer holds {from:?}");
    let broken = text.replace(from, to);
    let problems = check(&broken);
    assert!(
        problems.iter().any(|p| p.contains(expected)),
        "replacing {from:?} by {to:?} should be reported as {expected:?}; got {problems:?}"
    );
}

// ------------------------------------------------------------- Dockerfile

/// One Dockerfile instruction: its keyword (upper case) and its arguments,
/// continuation lines joined.
#[derive(Debug, Clone)]
struct Instruction {
    keyword: String,
    args: String,
}

/// A build stage: its `FROM` arguments and its instructions.
#[derive(Debug, Clone)]
struct Stage {
    from: String,
    instructions: Vec<Instruction>,
}

impl Stage {
    fn name(&self) -> Option<&str> {
        let words: Vec<&str> = self.from.split_whitespace().collect();
        words
            .iter()
            .position(|w| w.eq_ignore_ascii_case("AS"))
            .and_then(|i| words.get(i + 1).copied())
    }

    fn all(&self, keyword: &str) -> impl Iterator<Item = &str> {
        self.instructions
            .iter()
            .filter(move |i| i.keyword == keyword)
            .map(|i| i.args.as_str())
    }

    fn last(&self, keyword: &str) -> Option<&str> {
        self.all(keyword).last()
    }
}

/// The Dockerfile's instructions, as Docker reads them: `#` lines are
/// comments (also inside a continued instruction), a trailing `\`
/// continues the instruction on the next line.
fn instructions(text: &str) -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        let (body, continued) = match trimmed.strip_suffix('\\') {
            Some(body) => (body, true),
            None => (trimmed, false),
        };
        current.push_str(body.trim());
        current.push(' ');
        if !continued {
            let full = current.trim().to_owned();
            current.clear();
            if full.is_empty() {
                continue;
            }
            let (keyword, args) = full.split_once(' ').unwrap_or((&full, ""));
            out.push(Instruction {
                keyword: keyword.to_ascii_uppercase(),
                args: args.trim().to_owned(),
            });
        }
    }
    out
}

fn stages(text: &str) -> Vec<Stage> {
    let mut stages: Vec<Stage> = Vec::new();
    for instruction in instructions(text) {
        if instruction.keyword == "FROM" {
            stages.push(Stage {
                from: instruction.args,
                instructions: Vec::new(),
            });
        } else if let Some(stage) = stages.last_mut() {
            stage.instructions.push(instruction);
        }
    }
    stages
}

/// A `HEALTHCHECK`'s options (`timeout` → `5s`) and its command in exec
/// form.
type HealthcheckParts = (Vec<(String, String)>, Vec<String>);

fn healthcheck_parts(args: &str) -> Result<HealthcheckParts, String> {
    let (options, command) = args
        .split_once("CMD ")
        .ok_or_else(|| format!("HEALTHCHECK has no CMD: {args}"))?;
    let options = options
        .split_whitespace()
        .filter_map(|o| o.strip_prefix("--")?.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let command: Vec<String> = serde_json::from_str(command.trim())
        .map_err(|_| format!("HEALTHCHECK CMD is not in exec form: {command}"))?;
    Ok((options, command))
}

/// A duration as Docker and systemd write them (`5s`, `1m30s`, `20`).
fn seconds(text: &str) -> Option<f64> {
    let text = text.trim();
    if let Ok(plain) = text.parse::<f64>() {
        return Some(plain);
    }
    humantime::parse_duration(text)
        .ok()
        .map(|d| d.as_secs_f64())
}

/// Everything the Dockerfile promises, as a list of what is broken.
fn dockerfile_problems(text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let stages = stages(text);
    let (Some(builder), Some(runtime)) = (stages.first(), stages.last()) else {
        return vec!["no FROM".to_owned()];
    };
    if stages.len() < 2 {
        problems.push("not a multi-stage build".to_owned());
    }

    // The build: release, locked, every workspace member present.
    if !builder
        .all("RUN")
        .any(|run| run.contains("cargo build --release --locked"))
    {
        problems.push("the build stage never runs `cargo build --release --locked`".to_owned());
    }
    for member in workspace_members(&read("Cargo.toml"))
        .iter()
        .filter(|m| *m != ".")
    {
        if !builder.all("COPY").any(|copy| {
            copy.split_whitespace()
                .any(|w| w.trim_end_matches('/') == member)
        }) {
            problems.push(format!(
                "workspace member {member} is not copied into the build stage (cargo reads every member)"
            ));
        }
    }

    // The real sources are built after the stand-ins, touched first: COPY
    // keeps their old modification times, and cargo would take the
    // stand-in build for up to date and ship its empty binary.
    let real_sources = builder
        .instructions
        .iter()
        .position(|i| i.keyword == "COPY" && i.args.starts_with("src/ "));
    let rebuilt = real_sources.is_some_and(|at| {
        builder.instructions[at..].iter().any(|i| {
            i.keyword == "RUN"
                && i.args.starts_with("touch src/lib.rs src/main.rs ")
                && i.args.contains("cargo build --release --locked")
        })
    });
    if !rebuilt {
        problems.push(
            "the build stage does not touch src/lib.rs and src/main.rs after COPY src/ \
             and build again"
                .to_owned(),
        );
    }

    // The runtime: the binary from the build stage, run as a user it creates.
    let builder_name = builder.name().unwrap_or("0");
    if !runtime.all("COPY").any(|copy| {
        copy.starts_with(&format!("--from={builder_name} ")) && copy.ends_with(INSTALLED_BIN)
    }) {
        problems.push(format!(
            "the runtime stage does not copy the binary from {builder_name} to {INSTALLED_BIN}"
        ));
    }
    match runtime.last("USER") {
        None => problems.push("no USER in the runtime stage: it would run as root".to_owned()),
        Some(user) => {
            let name = user.split(':').next().unwrap_or("").trim();
            if name.is_empty() || name == "root" || name == "0" {
                problems.push(format!("USER {user} is root"));
            } else {
                let created = runtime.all("RUN").any(|run| {
                    run.contains("useradd")
                        && if name.bytes().all(|b| b.is_ascii_digit()) {
                            run.contains(&format!("--uid {name} "))
                        } else {
                            run.split_whitespace().any(|w| w == name)
                        }
                });
                if !created {
                    problems.push(format!("USER {user} is not created in the runtime stage"));
                }
            }
        }
    }

    // The health check runs the binary's own probe, with time to finish.
    match runtime.last("HEALTHCHECK").map(healthcheck_parts) {
        None => problems.push("no HEALTHCHECK in the runtime stage".to_owned()),
        Some(Err(e)) => problems.push(e),
        Some(Ok((options, command))) => {
            if command.first().map(String::as_str) != Some(INSTALLED_BIN)
                || command.get(1).map(String::as_str) != Some("healthcheck")
            {
                problems.push(format!(
                    "HEALTHCHECK does not run `{INSTALLED_BIN} healthcheck`: {command:?}"
                ));
            }
            let probe = command
                .iter()
                .position(|a| a == "--timeout")
                .and_then(|i| command.get(i + 1))
                .map_or(DEFAULT_HEALTHCHECK_TIMEOUT, String::as_str);
            let docker = options
                .iter()
                .find(|(k, _)| k == "timeout")
                .map_or("30s", |(_, v)| v.as_str());
            match (seconds(probe), seconds(docker)) {
                (Some(probe_s), Some(docker_s)) if docker_s > probe_s => {}
                _ => problems.push(format!(
                    "HEALTHCHECK --timeout={docker} must exceed the probe's own {probe}"
                )),
            }
        }
    }
    if runtime.last("STOPSIGNAL") != Some("SIGTERM") {
        problems.push("STOPSIGNAL is not SIGTERM (the signal that drains)".to_owned());
    }
    let exposed: Vec<&str> = runtime.all("EXPOSE").collect();
    if exposed != [DEFAULT_PORT.to_string()] {
        problems.push(format!(
            "EXPOSE {exposed:?} is not the default PORT {DEFAULT_PORT}"
        ));
    }
    let entrypoint: Option<Vec<String>> = runtime
        .last("ENTRYPOINT")
        .and_then(|e| serde_json::from_str(e).ok());
    if entrypoint
        .as_deref()
        .and_then(<[String]>::first)
        .map(String::as_str)
        != Some(INSTALLED_BIN)
    {
        problems.push(format!(
            "ENTRYPOINT is not [\"{INSTALLED_BIN}\", …] in exec form (a shell would take SIGTERM)"
        ));
    }

    // The advice on stop timeouts outlasts the drain.
    let grace_s = DEFAULT_SHUTDOWN_GRACE_MS as f64 / 1000.0;
    let mut advice = 0;
    for (marker, end) in [
        ("docker stop -t ", ' '),
        ("--stop-timeout ", ' '),
        ("stop_grace_period: ", '`'),
        ("terminationGracePeriodSeconds: ", '`'),
    ] {
        for (at, _) in text.match_indices(marker) {
            advice += 1;
            let rest = &text[at + marker.len()..];
            let value = rest.split([end, '\n', '`', ',']).next().unwrap_or("");
            match seconds(value) {
                Some(s) if s > grace_s => {}
                _ => problems.push(format!(
                    "`{marker}{value}` does not exceed SHUTDOWN_GRACE_MS ({grace_s} s)"
                )),
            }
        }
    }
    if advice == 0 || !text.contains("SHUTDOWN_GRACE_MS") {
        problems.push("no advice on stop timeouts against SHUTDOWN_GRACE_MS".to_owned());
    }

    // What the build copies is in the context.
    let ignored = dockerignore_patterns(&read(".dockerignore"));
    for stage in &stages {
        for copy in stage.all("COPY").filter(|c| !c.starts_with("--from=")) {
            let words: Vec<&str> = copy.split_whitespace().collect();
            for source in &words[..words.len().saturating_sub(1)] {
                let source = source.trim_end_matches('/');
                if !Path::new(ROOT).join(source).exists() {
                    problems.push(format!("COPY source {source} does not exist"));
                }
                if let Some(pattern) = ignored.iter().find(|p| ignores(p, source)) {
                    problems.push(format!(
                        "COPY source {source} is excluded by .dockerignore {pattern}"
                    ));
                }
            }
        }
    }
    problems
}

/// `.dockerignore`'s patterns, without comments and trailing slashes.
fn dockerignore_patterns(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_end_matches('/').to_owned())
        .collect()
}

/// Whether `pattern` (a path, possibly `**/`-prefixed) excludes `path`.
fn ignores(pattern: &str, path: &str) -> bool {
    let pattern = pattern.trim_start_matches("**/");
    path == pattern
        || path.starts_with(&format!("{pattern}/"))
        || path.split('/').any(|part| part == pattern)
}

fn dockerignore_problems(text: &str) -> Vec<String> {
    let patterns = dockerignore_patterns(text);
    ["target", ".git", "node_modules", "fuzz", ".env"]
        .iter()
        .filter(|needed| {
            !patterns
                .iter()
                .any(|p| p.trim_start_matches("**/") == **needed)
        })
        .map(|needed| format!(".dockerignore does not exclude {needed}"))
        .collect()
}

/// Reads `members = [...]` of `[workspace]` (the manifest's only array of
/// that name), without a TOML parser among the dependencies.
fn workspace_members(manifest: &str) -> Vec<String> {
    let start = manifest.find("members = [").expect("workspace members") + "members = [".len();
    let end = start + manifest[start..].find(']').expect("end of members");
    manifest[start..end]
        .split(',')
        .map(|m| m.trim().trim_matches('"').to_owned())
        .filter(|m| !m.is_empty())
        .collect()
}

#[test]
fn the_dockerfile_keeps_its_promises() {
    let text = read("Dockerfile");
    assert_none("Dockerfile", dockerfile_problems(&text));
    assert_none(
        ".dockerignore",
        dockerignore_problems(&read(".dockerignore")),
    );
}

#[test]
fn the_dockerfile_checks_catch_a_broken_promise() {
    let text = read("Dockerfile");
    let check = dockerfile_problems;
    assert_catches(check, &text, "USER 10001:10001", "USER root", "is root");
    assert_catches(check, &text, "USER 10001:10001", "USER 0:0", "is root");
    assert_catches(check, &text, "USER 10001:10001", "", "no USER");
    assert_catches(check, &text, "USER 10001:10001", "USER 4242", "not created");
    assert_catches(
        check,
        &text,
        "EXPOSE 3001",
        "EXPOSE 8080",
        "not the default PORT",
    );
    assert_catches(
        check,
        &text,
        "STOPSIGNAL SIGTERM",
        "STOPSIGNAL SIGKILL",
        "STOPSIGNAL",
    );
    assert_catches(
        check,
        &text,
        r#"CMD ["/usr/local/bin/chat-flow", "healthcheck"]"#,
        r#"CMD ["curl", "-f", "http://localhost:3001/healthz"]"#,
        "does not run",
    );
    assert_catches(
        check,
        &text,
        r#"CMD ["/usr/local/bin/chat-flow", "healthcheck"]"#,
        "CMD /usr/local/bin/chat-flow healthcheck",
        "exec form",
    );
    assert_catches(check, &text, "--timeout=5s", "--timeout=1s", "must exceed");
    assert_catches(
        check,
        &text,
        "docker stop -t 15",
        "docker stop -t 10",
        "does not exceed",
    );
    assert_catches(
        check,
        &text,
        "stop_grace_period: 15s",
        "stop_grace_period: 5s",
        "does not exceed",
    );
    assert_catches(check, &text, "--release --locked", "--release", "--locked");
    assert_catches(
        check,
        &text,
        "COPY benches/ benches/",
        "",
        "benches is not copied",
    );
    assert_catches(
        check,
        &text,
        r#"ENTRYPOINT ["/usr/local/bin/chat-flow"]"#,
        "ENTRYPOINT /usr/local/bin/chat-flow",
        "ENTRYPOINT",
    );
    assert_catches(
        check,
        &text,
        "RUN touch src/lib.rs src/main.rs \\\n && cargo",
        "RUN cargo",
        "does not touch",
    );
    assert_catches(
        check,
        &text,
        "COPY src/ src/",
        "COPY srcs/ src/",
        "does not exist",
    );
    assert_catches(
        check,
        &text,
        "COPY src/ src/",
        "COPY fuzz/ src/",
        "excluded by .dockerignore",
    );
    let ignore = read(".dockerignore");
    assert_catches(dockerignore_problems, &ignore, ".env\n", "", "exclude .env");
    assert_catches(
        dockerignore_problems,
        &ignore,
        "target/\n",
        "",
        "exclude target",
    );
    // Continuations and comments inside them are read as Docker reads them.
    let parsed = instructions("RUN a \\\n# note\n  && b\nUSER x\n");
    assert_eq!(parsed.len(), 2, "{parsed:?}");
    assert_eq!(parsed[0].args, "a && b");
}

/// The image's HEALTHCHECK command, run as Docker runs it (the container's
/// environment, no arguments added), against the real server and against
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_images_health_check_command_tells_a_live_server_from_none() {
    let stages = stages(&read("Dockerfile"));
    let runtime = stages.last().expect("a stage");
    let (_, command) =
        healthcheck_parts(runtime.last("HEALTHCHECK").expect("HEALTHCHECK")).expect("exec form");
    assert_eq!(command[0], INSTALLED_BIN);
    let run = |port: u16| {
        let args = command[1..].to_vec();
        tokio::task::spawn_blocking(move || {
            let dir = TempDir::new("image-healthcheck");
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let child = chat_flow(&dir.0, &args, &[("PORT", &port.to_string())])
                .spawn()
                .expect("run the health check");
            wait_output(child, Duration::from_secs(20))
        })
    };
    let server = common::start().await;
    let port = server.addr.port();
    let healthy = run(port).await.expect("join");
    assert_eq!(healthy.status.code(), Some(0), "{}", output_text(&healthy));
    server.shutdown().await.expect("shutdown");
    let gone = run(port).await.expect("join");
    assert_eq!(gone.status.code(), Some(1), "{}", output_text(&gone));
}

// ---------------------------------------------------------------- systemd

/// The unit's `(section, key, value)` entries in order.
fn unit_entries(text: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
        } else if let Some((key, value)) = line.split_once('=') {
            out.push((
                section.clone(),
                key.trim().to_owned(),
                value.trim().to_owned(),
            ));
        }
    }
    out
}

/// The values `key` has in `[Service]`, in order.
fn service_values<'a>(entries: &'a [(String, String, String)], key: &str) -> Vec<&'a str> {
    entries
        .iter()
        .filter(|(s, k, _)| s == "Service" && k == key)
        .map(|(_, _, v)| v.as_str())
        .collect()
}

/// Everything the unit promises besides what `systemd-analyze` checks.
fn unit_problems(text: &str) -> Vec<String> {
    let entries = unit_entries(text);
    let mut problems = Vec::new();
    let one = |key: &str| -> Option<&str> { service_values(&entries, key).last().copied() };
    let main_rs = read("src/main.rs");

    for (key, expected) in [
        // The server does not speak sd_notify.
        ("Type", "exec"),
        ("ExecStart", INSTALLED_BIN),
        ("EnvironmentFile", "-/etc/chat-flow/env"),
        // The .env that a reload reads again is the working directory's.
        ("WorkingDirectory", "-/etc/chat-flow"),
        ("Restart", "on-failure"),
        ("KillSignal", "SIGTERM"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("MemoryDenyWriteExecute", "yes"),
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
    ] {
        if one(key) != Some(expected) {
            problems.push(format!("{key}={expected} expected, found {:?}", one(key)));
        }
    }
    if !service_values(&entries, "SystemCallFilter").contains(&"@system-service") {
        problems.push("SystemCallFilter=@system-service missing".to_owned());
    }
    let user = one("User");
    if one("DynamicUser") != Some("yes") && matches!(user, None | Some("root" | "0")) {
        problems.push("runs as root: neither DynamicUser=yes nor a User".to_owned());
    }
    if !main_rs.contains("SignalKind::terminate()") {
        problems.push("KillSignal=SIGTERM, but src/main.rs does not handle SIGTERM".to_owned());
    }
    match one("ExecReload") {
        Some("/bin/kill -HUP $MAINPID") => {
            if !main_rs.contains("SignalKind::hangup()") {
                problems.push(
                    "ExecReload sends SIGHUP, but src/main.rs does not reload on it".to_owned(),
                );
            }
        }
        other => problems.push(format!("ExecReload is {other:?}, not a SIGHUP")),
    }
    let grace_s = DEFAULT_SHUTDOWN_GRACE_MS as f64 / 1000.0;
    match one("TimeoutStopSec").and_then(seconds) {
        Some(s) if s > grace_s => {}
        _ => problems.push(format!(
            "TimeoutStopSec={:?} does not exceed SHUTDOWN_GRACE_MS ({grace_s} s)",
            one("TimeoutStopSec")
        )),
    }
    // A descriptor per WebSocket, up to HANDSHAKE_CAP_FACTOR per connection
    // still in HTTP, and some to spare.
    let needed = (1 + HANDSHAKE_CAP_FACTOR as u64) * DEFAULT_MAX_CONNECTIONS as u64 + 1024;
    match one("LimitNOFILE").and_then(|v| v.split(':').next_back()?.parse::<u64>().ok()) {
        Some(limit) if limit >= needed => {}
        _ => problems.push(format!(
            "LimitNOFILE={:?} is under {needed} for MAX_CONNECTIONS {DEFAULT_MAX_CONNECTIONS}",
            one("LimitNOFILE")
        )),
    }
    problems
}

#[test]
fn the_unit_keeps_its_promises() {
    assert_none(
        "deploy/chat-flow.service",
        unit_problems(&read("deploy/chat-flow.service")),
    );
}

#[test]
fn the_unit_checks_catch_a_broken_promise() {
    let text = read("deploy/chat-flow.service");
    let check = unit_problems;
    assert_catches(
        check,
        &text,
        "TimeoutStopSec=20",
        "TimeoutStopSec=10",
        "TimeoutStopSec",
    );
    assert_catches(
        check,
        &text,
        "LimitNOFILE=1048576",
        "LimitNOFILE=65536",
        "LimitNOFILE",
    );
    assert_catches(check, &text, "Type=exec", "Type=notify", "Type=exec");
    assert_catches(check, &text, "DynamicUser=yes", "", "runs as root");
    assert_catches(check, &text, "DynamicUser=yes", "User=root", "runs as root");
    assert_catches(
        check,
        &text,
        "CapabilityBoundingSet=\n",
        "CapabilityBoundingSet=CAP_SYS_ADMIN\n",
        "CapabilityBoundingSet",
    );
    assert_catches(
        check,
        &text,
        "ProtectSystem=strict",
        "ProtectSystem=full",
        "ProtectSystem",
    );
    assert_catches(check, &text, "-HUP", "-USR1", "not a SIGHUP");
    assert_catches(
        check,
        &text,
        "KillSignal=SIGTERM",
        "KillSignal=SIGKILL",
        "KillSignal",
    );
}

/// `systemd-analyze`, installed from Debian's `systemd` package when it is
/// missing (once per test run).
fn systemd_analyze() -> &'static Path {
    static FOUND: OnceLock<PathBuf> = OnceLock::new();
    FOUND.get_or_init(|| {
        let find = || {
            ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
                .into_iter()
                .map(PathBuf::from)
                .find(|p| p.exists())
        };
        if let Some(found) = find() {
            return found;
        }
        eprintln!("systemd-analyze is missing: installing Debian's systemd package");
        let apt = |args: &[&str]| {
            let status = Command::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status();
            assert!(
                matches!(status, Ok(s) if s.success()),
                "apt-get {args:?} failed ({status:?}); install Debian's systemd package \
                 (systemd-analyze) to run this test"
            );
        };
        apt(&["update"]);
        apt(&["install", "-y", "--no-install-recommends", "systemd"]);
        find().expect("systemd-analyze after installing systemd")
    })
}

/// Runs `systemd-analyze verify` on `unit` saved as `chat-flow.service`
/// with `ExecStart` pointing at the binary this test built (verify checks
/// that it exists and is executable). Any complaint about the unit, even a
/// warning with exit 0 (unknown keys, bad values are only warnings), is an
/// error.
fn verify(unit: &str) -> Result<(), String> {
    let unit = unit.replace(
        &format!("ExecStart={INSTALLED_BIN}\n"),
        &format!("ExecStart={BIN}\n"),
    );
    let dir = TempDir::new("verify");
    let path = dir.0.join("chat-flow.service");
    std::fs::write(&path, unit).expect("write the unit");
    let child = Command::new(systemd_analyze())
        .args(["verify", "--man=no"])
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run systemd-analyze");
    let out = wait_output(child, Duration::from_secs(60));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let about_unit: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("chat-flow.service") || l.contains(&*path.to_string_lossy()))
        .collect();
    if !text.trim().is_empty() {
        eprintln!("systemd-analyze verify said:\n{text}");
    }
    if out.status.success() && about_unit.is_empty() {
        Ok(())
    } else {
        Err(format!("exit {:?}: {text}", out.status.code()))
    }
}

#[test]
fn systemd_analyze_verifies_the_unit() {
    let text = read("deploy/chat-flow.service");
    assert_eq!(
        text.matches(&format!("ExecStart={INSTALLED_BIN}\n"))
            .count(),
        1,
        "one ExecStart, the one verify's copy points at the built binary"
    );
    if let Err(e) = verify(&text) {
        panic!("systemd-analyze verify: {e}");
    }
}

#[test]
fn systemd_analyze_rejects_a_unit_with_an_error_planted() {
    let text = read("deploy/chat-flow.service");
    for (from, to, says) in [
        (
            "Type=exec\n",
            "Type=exec\nKillSignall=SIGTERM\n",
            "KillSignall",
        ),
        (
            "KillSignal=SIGTERM",
            "KillSignal=SIGTERMINATE",
            "SIGTERMINATE",
        ),
        ("LimitNOFILE=1048576", "LimitNOFILE=many", "many"),
        (
            "SystemCallFilter=@system-service",
            "SystemCallFilter=@system-services",
            "@system-services",
        ),
        (
            "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
            "RestrictAddressFamilies=AF_INET AF_INET7 AF_UNIX",
            "AF_INET7",
        ),
        (
            &format!("ExecStart={INSTALLED_BIN}\n"),
            "ExecStart=/nonexistent/chat-flow\n",
            "/nonexistent/chat-flow",
        ),
        ("[Service]", "[Servce]", "Servce"),
    ] {
        assert!(text.contains(from), "the unit no longer holds {from:?}");
        match verify(&text.replacen(from, to, 1)) {
            Ok(()) => panic!("verify accepted the unit with {to:?}"),
            Err(e) => assert!(e.contains(says), "{to:?}: the complaint names it: {e}"),
        }
    }
}

#[test]
fn durations_read_as_docker_and_systemd_write_them() {
    assert_eq!(seconds(DEFAULT_HEALTHCHECK_TIMEOUT), Some(2.0));
    assert_eq!(seconds("1min 30s"), Some(90.0));
    assert_eq!(seconds("1m30s"), Some(90.0));
    assert_eq!(seconds("20"), Some(20.0));
    assert_eq!(seconds("soon"), None);
}

// ------------------------------------------------------------ compose YAML

/// A YAML value, of the subset `docker-compose.yml` is written in: block
/// mappings and sequences, flow sequences of scalars, plain and quoted
/// scalars, comments. Anything else (anchors, aliases, tags, block
/// scalars, flow mappings, tabs, duplicate keys) is an error rather than
/// misread: the file must stay in what this reader understands.
#[derive(Debug, Clone, PartialEq)]
enum Yaml {
    Null,
    Scalar(String),
    List(Vec<Yaml>),
    Map(Vec<(String, Yaml)>),
}

impl Yaml {
    fn get(&self, key: &str) -> Option<&Yaml> {
        match self {
            Yaml::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// `get` along a path of keys.
    fn at(&self, path: &[&str]) -> Option<&Yaml> {
        path.iter().try_fold(self, |node, key| node.get(key))
    }

    fn str(&self) -> Option<&str> {
        match self {
            Yaml::Scalar(s) => Some(s),
            _ => None,
        }
    }

    fn items(&self) -> &[Yaml] {
        match self {
            Yaml::List(items) => items,
            _ => &[],
        }
    }

    fn entries(&self) -> &[(String, Yaml)] {
        match self {
            Yaml::Map(entries) => entries,
            _ => &[],
        }
    }

    /// A list of scalars as strings (a scalar alone, split on whitespace,
    /// as compose reads a `command` string).
    fn words(&self) -> Vec<String> {
        match self {
            Yaml::Scalar(s) => s.split_whitespace().map(str::to_owned).collect(),
            Yaml::List(items) => items
                .iter()
                .filter_map(|i| i.str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// A line of YAML without its comment: number (1-based), indentation, text.
#[derive(Debug, Clone)]
struct YamlLine {
    number: usize,
    indent: usize,
    text: String,
}

/// `text` up to an unquoted ` #` or leading `#`.
fn strip_yaml_comment(line: &str) -> &str {
    let (mut single, mut double) = (false, false);
    let mut previous = ' ';
    for (at, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single && previous != '\\' => double = !double,
            '#' if !single && !double && previous.is_whitespace() => return &line[..at],
            _ => {}
        }
        previous = c;
    }
    line
}

/// Where `text` (a mapping entry) splits into key and value: the first
/// unquoted `: ` or a final `:`.
fn split_yaml_key(text: &str) -> Option<(String, &str)> {
    if text.starts_with(['"', '\'', '[']) {
        return None;
    }
    let at = text
        .find(": ")
        .or_else(|| text.ends_with(':').then(|| text.len() - 1))?;
    Some((text[..at].trim().to_owned(), text[at + 1..].trim()))
}

fn yaml_scalar(text: &str, number: usize) -> Result<Yaml, String> {
    let text = text.trim();
    let unquote = |t: &str, q: char| -> Result<String, String> {
        let inner = t
            .strip_prefix(q)
            .and_then(|t| t.strip_suffix(q))
            .filter(|_| t.len() >= 2)
            .ok_or_else(|| format!("line {number}: unterminated quoted scalar {t}"))?;
        Ok(if q == '"' {
            inner.replace("\\\"", "\"").replace("\\\\", "\\")
        } else {
            inner.replace("''", "'")
        })
    };
    match text.chars().next() {
        None => Ok(Yaml::Null),
        Some('"') => unquote(text, '"').map(Yaml::Scalar),
        Some('\'') => unquote(text, '\'').map(Yaml::Scalar),
        Some('[') => {
            let inner = text
                .strip_prefix('[')
                .and_then(|t| t.strip_suffix(']'))
                .ok_or_else(|| format!("line {number}: unterminated flow sequence"))?;
            let mut items = Vec::new();
            let (mut start, mut quote) = (0, None);
            for (at, c) in inner.char_indices() {
                match (c, quote) {
                    ('"' | '\'', None) => quote = Some(c),
                    (c, Some(q)) if c == q => quote = None,
                    ('[' | '{', None) => {
                        return Err(format!("line {number}: nested flow collection"));
                    }
                    (',', None) => {
                        items.push(yaml_scalar(&inner[start..at], number)?);
                        start = at + 1;
                    }
                    _ => {}
                }
            }
            if !inner[start..].trim().is_empty() {
                items.push(yaml_scalar(&inner[start..], number)?);
            }
            Ok(Yaml::List(items))
        }
        Some(c @ ('&' | '*' | '!' | '|' | '>' | '{' | '%' | '@' | '`')) => Err(format!(
            "line {number}: {c:?} (anchor, alias, tag, block scalar or flow mapping) \
             is outside the YAML this test reads"
        )),
        Some(_) => Ok(Yaml::Scalar(text.to_owned())),
    }
}

/// Reads `text` as the YAML subset of [`Yaml`].
fn parse_yaml(text: &str) -> Result<Yaml, String> {
    let mut lines = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let number = i + 1;
        let body = strip_yaml_comment(raw).trim_end();
        let content = body.trim_start_matches(' ');
        if content.is_empty() {
            continue;
        }
        if content.starts_with('\t') {
            return Err(format!("line {number}: a tab in the indentation"));
        }
        if content == "---" || content == "..." {
            return Err(format!("line {number}: one document only"));
        }
        lines.push(YamlLine {
            number,
            indent: body.len() - content.len(),
            text: content.to_owned(),
        });
    }
    let mut at = 0;
    let root = match lines.first() {
        Some(first) if first.indent == 0 => yaml_block(&mut lines, &mut at, 0)?,
        Some(first) => return Err(format!("line {}: indented document", first.number)),
        None => Yaml::Null,
    };
    match lines.get(at) {
        Some(line) => Err(format!("line {}: unexpected indentation", line.number)),
        None => Ok(root),
    }
}

fn is_list_item(text: &str) -> bool {
    text == "-" || text.starts_with("- ")
}

fn yaml_block(lines: &mut [YamlLine], at: &mut usize, indent: usize) -> Result<Yaml, String> {
    if is_list_item(&lines[*at].text) {
        yaml_list(lines, at, indent)
    } else {
        yaml_map(lines, at, indent)
    }
}

fn yaml_list(lines: &mut [YamlLine], at: &mut usize, indent: usize) -> Result<Yaml, String> {
    let mut items = Vec::new();
    while let Some(line) = lines.get(*at) {
        if line.indent != indent || !is_list_item(&line.text) {
            break;
        }
        let number = line.number;
        let rest = line.text[1..].trim_start().to_owned();
        if rest.is_empty() {
            *at += 1;
            match lines.get(*at) {
                Some(next) if next.indent > indent => {
                    let inner = next.indent;
                    items.push(yaml_block(lines, at, inner)?);
                }
                _ => items.push(Yaml::Null),
            }
        } else if split_yaml_key(&rest).is_some() {
            // `- key: value` opens a mapping whose keys line up with `key`.
            let inner = indent + (line.text.len() - rest.len());
            lines[*at].indent = inner;
            lines[*at].text = rest;
            items.push(yaml_map(lines, at, inner)?);
        } else {
            items.push(yaml_scalar(&rest, number)?);
            *at += 1;
        }
    }
    Ok(Yaml::List(items))
}

fn yaml_map(lines: &mut [YamlLine], at: &mut usize, indent: usize) -> Result<Yaml, String> {
    let mut entries: Vec<(String, Yaml)> = Vec::new();
    while let Some(line) = lines.get(*at) {
        if line.indent < indent {
            break;
        }
        let number = line.number;
        if line.indent > indent {
            return Err(format!("line {number}: unexpected indentation"));
        }
        if is_list_item(&line.text) {
            break;
        }
        let (key, value) = split_yaml_key(&line.text)
            .ok_or_else(|| format!("line {number}: not a `key: value` entry: {}", line.text))?;
        let key = match yaml_scalar(&key, number)? {
            Yaml::Scalar(k) => k,
            _ => return Err(format!("line {number}: key {key:?} is not a scalar")),
        };
        if entries.iter().any(|(k, _)| *k == key) {
            return Err(format!("line {number}: duplicate key {key}"));
        }
        let value = value.to_owned();
        *at += 1;
        let value = if !value.is_empty() {
            yaml_scalar(&value, number)?
        } else {
            match lines.get(*at) {
                Some(next) if next.indent > indent => {
                    let inner = next.indent;
                    yaml_block(lines, at, inner)?
                }
                // A sequence may sit at its key's own indentation.
                Some(next) if next.indent == indent && is_list_item(&next.text) => {
                    yaml_list(lines, at, indent)?
                }
                _ => Yaml::Null,
            }
        };
        entries.push((key, value));
    }
    Ok(Yaml::Map(entries))
}

#[test]
fn the_yaml_reader_reads_what_compose_files_hold_and_refuses_the_rest() {
    let doc = parse_yaml(
        "a: 1 # note\nb:\n  - x\n  - k: v\n    j: \"w # not a comment\"\n  - [p, 'q r', \"s\"]\nc:\n- y\nd:\ne: 'it''s'\n",
    )
    .expect("parses");
    assert_eq!(doc.at(&["a"]), Some(&Yaml::Scalar("1".into())));
    let b = doc.get("b").expect("b").items();
    assert_eq!(b[0], Yaml::Scalar("x".into()));
    assert_eq!(b[1].get("j").and_then(Yaml::str), Some("w # not a comment"));
    assert_eq!(b[2].words(), ["p", "q r", "s"]);
    assert_eq!(doc.get("c").map(Yaml::words), Some(vec!["y".to_owned()]));
    assert_eq!(doc.get("d"), Some(&Yaml::Null));
    assert_eq!(doc.get("e").and_then(Yaml::str), Some("it's"));
    for (bad, says) in [
        ("a: 1\na: 2\n", "duplicate key"),
        ("a: &x 1\n", "anchor"),
        ("a: *x\n", "alias"),
        ("a: |\n  text\n", "block scalar"),
        ("a: {b: 1}\n", "flow mapping"),
        ("a:\n\tb: 1\n", "tab"),
        ("a:\n    b: 1\n  c: 2\n", "unexpected indentation"),
        ("a: 1\n  b: 2\n", "unexpected indentation"),
        ("a: \"open\n", "unterminated"),
        ("just words\n", "not a `key: value`"),
    ] {
        match parse_yaml(bad) {
            Ok(doc) => panic!("{bad:?} read as {doc:?}"),
            Err(e) => assert!(e.contains(says), "{bad:?}: {e}"),
        }
    }
}

// ---------------------------------------------------------- docker compose

/// The variables the nodes' cluster mode reads, being added to the server
/// (src/config) meanwhile: accepted by name until `ServeArgs::VARIABLES`
/// lists them, and from then on validated like the rest.
const CLUSTER_VARIABLES: [&str; 4] = [
    "REDIS_URL",
    "REDIS_KEY_PREFIX",
    "NODE_TTL_MS",
    "REDIS_TIMEOUT_MS",
];

/// What a node must be given, exactly.
const NODE_ENVIRONMENT: [(&str, &str); 4] = [
    ("APP_ENV", "production"),
    ("JWT_SECRET", "${JWT_SECRET:?set JWT_SECRET}"),
    ("REDIS_URL", "redis://redis:6379"),
    ("REDIS_KEY_PREFIX", "chatflow"),
];

/// The proxy's configuration file in the repository and where the haproxy
/// image reads it.
const HAPROXY_CFG: &str = "deploy/haproxy.cfg";
const HAPROXY_IMAGE_CFG: &str = "/usr/local/etc/haproxy/haproxy.cfg";

/// A service's `environment`, in either of compose's forms.
fn compose_environment(service: &Yaml) -> Vec<(String, String)> {
    match service.get("environment") {
        Some(Yaml::Map(entries)) => entries
            .iter()
            .map(|(k, v)| (k.clone(), v.str().unwrap_or("").to_owned()))
            .collect(),
        Some(list @ Yaml::List(_)) => list
            .words()
            .iter()
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k.to_owned(), v.to_owned())
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The services a service depends on, with their conditions (compose's
/// list form means `service_started`).
fn compose_depends_on(service: &Yaml) -> Vec<(String, String)> {
    match service.get("depends_on") {
        Some(Yaml::Map(entries)) => entries
            .iter()
            .map(|(k, v)| {
                let condition = v.at(&["condition"]).and_then(Yaml::str);
                (k.clone(), condition.unwrap_or("service_started").to_owned())
            })
            .collect(),
        Some(list) => list
            .words()
            .into_iter()
            .map(|s| (s, "service_started".to_owned()))
            .collect(),
        None => Vec::new(),
    }
}

/// A node's environment as the server would take it: validated by
/// `Config::from_args`, with a stand-in for the interpolated JWT_SECRET.
fn node_config_problem(name: &str, env: &[(String, String)]) -> Option<String> {
    let mut dotenv = String::new();
    for (key, value) in env {
        let value = if key == "JWT_SECRET" {
            "a-stand-in-secret-of-forty-eight-bytes-for-tests"
        } else {
            value
        };
        dotenv.push_str(&format!("{key}='{value}'\n"));
    }
    let parsed = match DotEnv::parse(Path::new("docker-compose.yml"), dotenv.as_bytes()) {
        Ok(parsed) => parsed,
        Err(e) => return Some(format!("{name}: environment does not parse: {e}")),
    };
    let mut args = ServeArgs::default();
    args.fill_unset(&parsed);
    Config::from_args(&args)
        .err()
        .map(|e| format!("{name}: the server refuses its environment: {e}"))
}

/// Everything `docker-compose.yml` promises, as a list of what is broken.
fn compose_problems(text: &str) -> Vec<String> {
    let doc = match parse_yaml(text) {
        Ok(doc) => doc,
        Err(e) => return vec![format!("docker-compose.yml: {e}")],
    };
    let mut problems = Vec::new();
    let services = doc.get("services").map(Yaml::entries).unwrap_or_default();
    let service = |name: &str| services.iter().find(|(n, _)| n == name).map(|(_, s)| s);
    let grace_default_s = DEFAULT_SHUTDOWN_GRACE_MS as f64 / 1000.0;

    // Redis: the official image, persistent, healthy only when it answers.
    match service("redis") {
        None => problems.push("no redis service".to_owned()),
        Some(redis) => {
            if redis.at(&["image"]).and_then(Yaml::str) != Some("redis:7") {
                problems.push("redis: image is not redis:7".to_owned());
            }
            let command = redis.get("command").map(Yaml::words).unwrap_or_default();
            for (flag, value) in [
                ("--appendonly", "yes"),
                ("--maxmemory-policy", "noeviction"),
            ] {
                if !command.windows(2).any(|w| w[0] == flag && w[1] == value) {
                    problems.push(format!("redis: command lacks {flag} {value}: {command:?}"));
                }
            }
            let named_volumes: Vec<&str> = doc
                .get("volumes")
                .map(Yaml::entries)
                .unwrap_or_default()
                .iter()
                .map(|(k, _)| k.as_str())
                .collect();
            let data = redis.get("volumes").map(Yaml::words).unwrap_or_default();
            let persisted = data.iter().any(|v| {
                v.split_once(':').is_some_and(|(source, target)| {
                    target.trim_end_matches(":rw") == "/data" && named_volumes.contains(&source)
                })
            });
            if !persisted {
                problems.push(format!(
                    "redis: /data is not a named volume declared under volumes: {data:?}"
                ));
            }
            let test = redis
                .at(&["healthcheck", "test"])
                .map(Yaml::words)
                .unwrap_or_default()
                .join(" ");
            if !test.contains("redis-cli") || !test.contains("ping") {
                problems.push(format!(
                    "redis: healthcheck does not run redis-cli ping: {test:?}"
                ));
            }
        }
    }

    // The nodes: every service built from this directory's Dockerfile.
    let nodes: Vec<(&str, &Yaml)> = services
        .iter()
        .filter(|(_, s)| s.get("build").is_some())
        .map(|(n, s)| (n.as_str(), s))
        .collect();
    if nodes.len() != 2 {
        problems.push(format!(
            "{} Chat Flow nodes (services with build), not 2",
            nodes.len()
        ));
    }
    let known: Vec<&str> = ServeArgs::VARIABLES
        .iter()
        .chain(CLUSTER_VARIABLES.iter())
        .copied()
        .collect();
    for &(name, node) in &nodes {
        let build = node.get("build");
        let context = build
            .and_then(|b| b.str().or_else(|| b.at(&["context"]).and_then(Yaml::str)))
            .unwrap_or("");
        let dockerfile = build
            .and_then(|b| b.at(&["dockerfile"]).and_then(Yaml::str))
            .unwrap_or("Dockerfile");
        if context != "." || dockerfile != "Dockerfile" {
            problems.push(format!(
                "{name}: not built from ./Dockerfile (context {context:?}, dockerfile {dockerfile:?})"
            ));
        }
        let env = compose_environment(node);
        let value = |key: &str| env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        for (key, _) in &env {
            if !known.contains(&key.as_str()) {
                problems.push(format!("{name}: the server does not read {key}"));
            }
        }
        for (key, expected) in NODE_ENVIRONMENT {
            if value(key) != Some(expected) {
                problems.push(format!(
                    "{name}: {key} is {:?}, not {expected:?}",
                    value(key)
                ));
            }
        }
        for key in ["NODE_TTL_MS", "REDIS_TIMEOUT_MS", "TRUSTED_PROXIES"] {
            if value(key).is_none() {
                problems.push(format!("{name}: {key} is not set"));
            }
        }
        for (key, v) in &env {
            if key != "JWT_SECRET" && v.contains('$') {
                problems.push(format!(
                    "{name}: {key} interpolates the operator's environment"
                ));
            }
        }
        if let Some(url) = value("REDIS_URL") {
            let host = url
                .strip_prefix("redis://")
                .and_then(|rest| rest.rsplit('@').next())
                .and_then(|rest| rest.split([':', '/']).next())
                .unwrap_or("");
            if service(host).is_none() {
                problems.push(format!("{name}: REDIS_URL names {host:?}, not a service"));
            }
        }
        if let Some(p) = node_config_problem(name, &env) {
            problems.push(p);
        }

        // Docker's SIGKILL comes after the drain.
        let grace_s = value("SHUTDOWN_GRACE_MS")
            .and_then(|ms| ms.parse::<f64>().ok())
            .map_or(grace_default_s, |ms| ms / 1000.0);
        let stop = node.get("stop_grace_period").and_then(Yaml::str);
        match stop.and_then(seconds) {
            Some(s) if s > grace_s => {}
            _ => problems.push(format!(
                "{name}: stop_grace_period {stop:?} does not exceed SHUTDOWN_GRACE_MS ({grace_s} s)"
            )),
        }
        if !compose_depends_on(node).contains(&("redis".to_owned(), "service_healthy".to_owned())) {
            problems.push(format!("{name}: does not wait for redis to be healthy"));
        }
        // /metrics is for the node's own port, and only on the host.
        for port in node.get("ports").map(Yaml::words).unwrap_or_default() {
            if !port.starts_with("127.0.0.1:") {
                problems.push(format!(
                    "{name}: publishes {port} beyond the loopback interface (its /metrics with it)"
                ));
            }
        }
    }
    if let [(first, a), (second, b)] = nodes[..] {
        for key in [
            "build",
            "image",
            "environment",
            "stop_grace_period",
            "depends_on",
        ] {
            if a.get(key) != b.get(key) {
                problems.push(format!("{first} and {second} differ in {key}"));
            }
        }
    }

    // The proxy: the haproxy image with the checked file, on port 3001.
    let mount = format!("./{HAPROXY_CFG}:{HAPROXY_IMAGE_CFG}:ro");
    let proxies: Vec<(&str, &Yaml)> = services
        .iter()
        .filter(|(_, s)| {
            s.get("volumes")
                .map(Yaml::words)
                .unwrap_or_default()
                .contains(&mount)
        })
        .map(|(n, s)| (n.as_str(), s))
        .collect();
    let [(proxy_name, proxy)] = proxies[..] else {
        problems.push(format!("not one service mounts {mount}: {proxies:?}"));
        return problems;
    };
    if !proxy
        .at(&["image"])
        .and_then(Yaml::str)
        .is_some_and(|i| i.starts_with("haproxy:"))
    {
        problems.push(format!("{proxy_name}: image is not haproxy"));
    }
    let bind_port = haproxy_bind_port(&read(HAPROXY_CFG));
    let ports = proxy.get("ports").map(Yaml::words).unwrap_or_default();
    if ports != [format!("{DEFAULT_PORT}:{}", bind_port.unwrap_or(0))] {
        problems.push(format!(
            "{proxy_name}: ports {ports:?} do not publish {DEFAULT_PORT} to the proxy's bind port {bind_port:?}"
        ));
    }
    // HAProxy will not start when it cannot raise its descriptor limit to
    // about two per connection.
    let maxconn = haproxy_maxconn(&read(HAPROXY_CFG)).unwrap_or(0);
    let nofile = ["soft", "hard"].map(|kind| {
        proxy
            .at(&["ulimits", "nofile", kind])
            .and_then(Yaml::str)
            .and_then(|n| n.parse::<u64>().ok())
    });
    if maxconn == 0
        || nofile
            .iter()
            .any(|n| n.is_none_or(|n| n < 2 * maxconn + 1024))
    {
        problems.push(format!(
            "{proxy_name}: ulimits nofile {nofile:?} under two per connection of {HAPROXY_CFG}'s \
             global maxconn {maxconn}"
        ));
    }
    let depends: Vec<String> = compose_depends_on(proxy)
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    for &(name, _) in &nodes {
        if !depends.iter().any(|d| d == name) {
            problems.push(format!("{proxy_name}: does not depend on {name}"));
        }
    }
    // The proxy's servers are the nodes, on the port they listen on.
    let mut servers = haproxy_servers(&read(HAPROXY_CFG));
    servers.sort();
    let mut expected: Vec<String> = nodes
        .iter()
        .map(|(name, _)| format!("{name}:{DEFAULT_PORT}"))
        .collect();
    expected.sort();
    if servers != expected {
        problems.push(format!(
            "{HAPROXY_CFG} balances over {servers:?}, the nodes are {expected:?}"
        ));
    }

    // X-Forwarded-For counts from the proxy, and from nothing else on the
    // network (the gateway, through which published ports may arrive).
    let networks = doc.get("networks").map(Yaml::entries).unwrap_or_default();
    let proxy_networks = proxy.get("networks").map(Yaml::entries).unwrap_or_default();
    let [(network, attachment)] = proxy_networks else {
        problems.push(format!("{proxy_name}: not on exactly one network, by name"));
        return problems;
    };
    let address = attachment
        .at(&["ipv4_address"])
        .and_then(Yaml::str)
        .and_then(|a| a.parse::<IpAddr>().ok());
    let ipam = networks
        .iter()
        .find(|(n, _)| n == network)
        .and_then(|(_, n)| n.at(&["ipam", "config"]))
        .map(Yaml::items)
        .unwrap_or_default();
    let subnet = ipam
        .first()
        .and_then(|c| c.at(&["subnet"]).and_then(Yaml::str))
        .and_then(|s| Cidr::parse(s).ok());
    let gateway = ipam
        .first()
        .and_then(|c| c.at(&["gateway"]).and_then(Yaml::str))
        .and_then(|g| g.parse::<IpAddr>().ok());
    match (address, subnet, gateway) {
        (Some(address), Some(subnet), Some(gateway)) => {
            if !subnet.contains(address) || !subnet.contains(gateway) {
                problems.push(format!(
                    "network {network}: the proxy's {address} or gateway {gateway} is outside its subnet"
                ));
            }
            for &(name, node) in &nodes {
                let attached = node.get("networks").map(Yaml::words).unwrap_or_default();
                if attached != [network.clone()] {
                    problems.push(format!(
                        "{name}: not on the proxy's network {network} alone"
                    ));
                }
                let env = compose_environment(node);
                let trusted: Vec<Cidr> = env
                    .iter()
                    .find(|(k, _)| k == "TRUSTED_PROXIES")
                    .map(|(_, v)| {
                        v.split(',')
                            .filter_map(|c| Cidr::parse(c.trim()).ok())
                            .collect()
                    })
                    .unwrap_or_default();
                if !trusted.iter().any(|c| c.contains(address)) {
                    problems.push(format!(
                        "{name}: TRUSTED_PROXIES does not cover the proxy's {address}: \
                         its X-Forwarded-For would not count"
                    ));
                }
                if trusted.iter().any(|c| c.contains(gateway)) {
                    problems.push(format!(
                        "{name}: TRUSTED_PROXIES covers the gateway {gateway}: \
                         a client through a published port could forge X-Forwarded-For"
                    ));
                }
            }
        }
        _ => problems.push(format!(
            "{proxy_name}: no fixed ipv4_address, or network {network} has no ipam subnet \
             and gateway: TRUSTED_PROXIES cannot name the proxy"
        )),
    }
    problems
}

#[test]
fn the_compose_file_keeps_its_promises() {
    assert_none(
        "docker-compose.yml",
        compose_problems(&read("docker-compose.yml")),
    );
}

#[test]
fn the_compose_checks_catch_a_broken_promise() {
    let text = read("docker-compose.yml");
    let check = compose_problems;
    for (from, to, expected) in [
        ("image: redis:7\n", "image: redis:6\n", "not redis:7"),
        (
            "\"--appendonly\", \"yes\"",
            "\"--appendonly\", \"no\"",
            "--appendonly yes",
        ),
        ("\"noeviction\"", "\"allkeys-lru\"", "noeviction"),
        ("- redis-data:/data", "- /tmp/redis:/data", "named volume"),
        ("redis-cli ping | grep", "true | grep", "redis-cli ping"),
        ("APP_ENV: production", "APP_ENV: development", "APP_ENV"),
        (
            "${JWT_SECRET:?set JWT_SECRET}",
            "${JWT_SECRET:-changeme}",
            "JWT_SECRET",
        ),
        (
            "REDIS_URL: redis://redis:6379",
            "REDIS_URL: redis://cache:6379",
            "REDIS_URL",
        ),
        (
            "REDIS_KEY_PREFIX: chatflow",
            "REDIS_KEY_PREFIX: chat",
            "REDIS_KEY_PREFIX",
        ),
        (
            "SHUTDOWN_GRACE_MS:",
            "SHUTDOWN_GRACE_MILLIS:",
            "does not read SHUTDOWN_GRACE_MILLIS",
        ),
        (
            "      NODE_TTL_MS: \"15000\"\n",
            "",
            "NODE_TTL_MS is not set",
        ),
        (
            "stop_grace_period: 15s",
            "stop_grace_period: 10s",
            "does not exceed",
        ),
        (
            "stop_grace_period: 15s",
            "stop_grace_period: 1m",
            "differ in stop_grace_period",
        ),
        (
            "SHUTDOWN_GRACE_MS: \"10000\"",
            "SHUTDOWN_GRACE_MS: \"20000\"",
            "does not exceed",
        ),
        (
            "SHUTDOWN_GRACE_MS: \"10000\"",
            "SHUTDOWN_GRACE_MS: \"ten\"",
            "refuses",
        ),
        (
            "TRUSTED_PROXIES: 10.231.89.10/32",
            "TRUSTED_PROXIES: 10.231.89.11/32",
            "does not cover",
        ),
        (
            "TRUSTED_PROXIES: 10.231.89.10/32",
            "TRUSTED_PROXIES: 10.231.89.0/24",
            "covers the gateway",
        ),
        (
            "TRUSTED_PROXIES: 10.231.89.10/32",
            "TRUSTED_PROXIES: 10.231.89.300/32",
            "refuses",
        ),
        (
            "ipv4_address: 10.231.89.10",
            "ipv4_address: 10.9.9.9",
            "outside its subnet",
        ),
        (
            "condition: service_healthy",
            "condition: service_started",
            "healthy",
        ),
        (
            "\"127.0.0.1:3101:3001\"",
            "\"3101:3001\"",
            "beyond the loopback",
        ),
        ("\"3001:3001\"", "\"3001:80\"", "bind port"),
        ("image: haproxy:2.6", "image: nginx:1", "not haproxy"),
        ("soft: 262144", "soft: 1024", "ulimits nofile"),
        ("        hard: 262144\n", "", "ulimits nofile"),
        (
            ":/usr/local/etc/haproxy/haproxy.cfg:ro",
            ":/etc/haproxy.cfg:ro",
            "mounts",
        ),
        (
            "      - chat-2\n    networks",
            "    networks",
            "does not depend on chat-2",
        ),
        (
            "dockerfile: Dockerfile",
            "dockerfile: Dockerfile.dev",
            "not built from",
        ),
        ("  chat-2:\n", "  chat-3:\n", "balances over"),
        ("  redis:\n", "  redis:\n  redis:\n", "duplicate key"),
        ("    image: redis:7\n", "    image: &r redis:7\n", "anchor"),
    ] {
        assert_catches_once(check, &text, from, to, expected);
    }
}

/// [`assert_catches`] with only the first `from` replaced (in one node of
/// two, say).
fn assert_catches_once(
    check: impl Fn(&str) -> Vec<String>,
    text: &str,
    from: &str,
    to: &str,
    expected: &str,
) {
    assert!(text.contains(from), "the file no longer holds {from:?}");
    let problems = check(&text.replacen(from, to, 1));
    assert!(
        problems.iter().any(|p| p.contains(expected)),
        "replacing {from:?} by {to:?} should be reported as {expected:?}; got {problems:?}"
    );
}

// ---------------------------------------------------------------- HAProxy

/// A section of an HAProxy configuration: `frontend chat` is kind
/// `frontend`, name `chat`; its directives without comments.
#[derive(Debug, Clone)]
struct HaproxySection {
    kind: String,
    name: String,
    directives: Vec<String>,
}

fn haproxy_sections(text: &str) -> Vec<HaproxySection> {
    let mut sections: Vec<HaproxySection> = Vec::new();
    for line in text.lines() {
        let body = match line.find('#') {
            Some(at) if at == 0 || line[..at].ends_with(char::is_whitespace) => &line[..at],
            _ => line,
        };
        let directive = body.split_whitespace().collect::<Vec<_>>().join(" ");
        if directive.is_empty() {
            continue;
        }
        if !body.starts_with(char::is_whitespace) {
            let (kind, name) = directive.split_once(' ').unwrap_or((&directive, ""));
            sections.push(HaproxySection {
                kind: kind.to_owned(),
                name: name.to_owned(),
                directives: Vec::new(),
            });
        } else if let Some(section) = sections.last_mut() {
            section.directives.push(directive);
        }
    }
    sections
}

/// The directives of every section of `kind` that start with `prefix` (a
/// whole word or words).
fn haproxy_directives<'a>(
    sections: &'a [HaproxySection],
    kind: &str,
    prefix: &str,
) -> Vec<&'a str> {
    sections
        .iter()
        .filter(|s| s.kind == kind)
        .flat_map(|s| s.directives.iter())
        .filter(|d| *d == prefix || d.starts_with(&format!("{prefix} ")))
        .map(String::as_str)
        .collect()
}

/// An HAProxy time (`30s`, `1h`, `500ms`; a bare number is milliseconds).
fn haproxy_ms(text: &str) -> Option<u64> {
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let n: u64 = digits.parse().ok()?;
    let unit = match &text[digits.len()..] {
        "" | "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    Some(n * unit)
}

/// The port of the frontend's `bind`.
fn haproxy_bind_port(text: &str) -> Option<u16> {
    let sections = haproxy_sections(text);
    let binds = haproxy_directives(&sections, "frontend", "bind");
    let [bind] = binds[..] else { return None };
    bind.split_whitespace()
        .nth(1)?
        .rsplit(':')
        .next()?
        .parse()
        .ok()
}

/// The global `maxconn`.
fn haproxy_maxconn(text: &str) -> Option<u64> {
    let sections = haproxy_sections(text);
    haproxy_directives(&sections, "global", "maxconn")
        .last()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The addresses of the backends' servers (`chat-1:3001`).
fn haproxy_servers(text: &str) -> Vec<String> {
    haproxy_directives(&haproxy_sections(text), "backend", "server")
        .iter()
        .filter_map(|s| s.split_whitespace().nth(2).map(str::to_owned))
        .collect()
}

/// Whether the frontend passes a request for `path` on to its backend, as
/// far as its `acl` lines (`path`, `path_beg`) and `http-request deny`
/// rules (`if`/`unless`, `||`, `!`) say; a rule this cannot read is an
/// error.
fn haproxy_routes(text: &str, path: &str) -> Result<bool, String> {
    let sections = haproxy_sections(text);
    let mut acls: Vec<(String, bool)> = Vec::new();
    for acl in haproxy_directives(&sections, "frontend", "acl") {
        let words: Vec<&str> = acl.split_whitespace().collect();
        let [_, name, criterion, values @ ..] = &words[..] else {
            return Err(format!("acl not understood: {acl}"));
        };
        let matched = match *criterion {
            "path" => values.contains(&path),
            "path_beg" => values.iter().any(|v| path.starts_with(v)),
            other => return Err(format!("acl criterion {other} not understood: {acl}")),
        };
        acls.push(((*name).to_owned(), matched));
    }
    let acl = |name: &str| -> Result<bool, String> {
        let (negated, name) = match name.strip_prefix('!') {
            Some(name) => (true, name),
            None => (false, name),
        };
        acls.iter()
            .find(|(n, _)| n == name)
            .map(|(_, m)| *m != negated)
            .ok_or_else(|| format!("acl {name} is not defined"))
    };
    for rule in haproxy_directives(&sections, "frontend", "http-request") {
        let words: Vec<&str> = rule.split_whitespace().collect();
        if words.get(1) != Some(&"deny") {
            return Err(format!("rule not understood: {rule}"));
        }
        let at = words.iter().position(|w| *w == "if" || *w == "unless");
        let denied = match at {
            None => true,
            Some(at) => {
                let mut any = false;
                for term in words[at + 1..].split(|w| *w == "||" || *w == "or") {
                    let mut all = !term.is_empty();
                    for name in term {
                        all &= acl(name)?;
                    }
                    any |= all;
                }
                any == (words[at] == "if")
            }
        };
        if denied {
            return Ok(false);
        }
    }
    let backends = haproxy_directives(&sections, "frontend", "default_backend");
    Ok(backends.len() == 1)
}

/// Everything `deploy/haproxy.cfg` promises besides what `haproxy -c`
/// checks.
fn haproxy_problems(text: &str) -> Vec<String> {
    let sections = haproxy_sections(text);
    let mut problems = Vec::new();
    let anywhere = |prefix: &str| -> Vec<&str> {
        ["defaults", "frontend", "backend"]
            .iter()
            .flat_map(|kind| haproxy_directives(&sections, kind, prefix))
            .collect()
    };

    if haproxy_bind_port(text) != Some(DEFAULT_PORT) {
        problems.push(format!(
            "the frontend does not bind one port, {DEFAULT_PORT}: {:?}",
            haproxy_bind_port(text)
        ));
    }
    for default in haproxy_directives(&sections, "frontend", "default_backend") {
        let name = default.trim_start_matches("default_backend ");
        if !sections
            .iter()
            .any(|s| s.kind == "backend" && s.name == name)
        {
            problems.push(format!("default_backend {name} is not a backend"));
        }
    }
    if !haproxy_directives(&sections, "defaults", "mode").contains(&"mode http") {
        problems.push("defaults are not mode http".to_owned());
    }

    // What the proxy serves, and what it keeps to the nodes' own ports.
    for (path, routed) in [
        ("/", true),
        ("/ws", true),
        ("/healthz", true),
        ("/readyz", true),
        ("/demo/app.js", true),
        ("/metrics", false),
        ("/metrics/", false),
        ("//metrics", false),
        ("/anything-else", false),
    ] {
        match haproxy_routes(text, path) {
            Err(e) => problems.push(e),
            Ok(r) if r != routed => problems.push(if routed {
                format!("{path} is not routed to the nodes")
            } else {
                format!("{path} is routed to the nodes")
            }),
            Ok(_) => {}
        }
    }

    // The client's address goes along, and nothing rewrites the upgrade.
    if anywhere("option forwardfor").is_empty() {
        problems.push("no option forwardfor: the nodes would not see X-Forwarded-For".to_owned());
    }
    for directive in anywhere("http-request")
        .into_iter()
        .chain(anywhere("http-response"))
    {
        let lower = directive.to_ascii_lowercase();
        if lower.contains("header") && (lower.contains("upgrade") || lower.contains("connection")) {
            problems.push(format!("rewrites the upgrade's headers: {directive}"));
        }
    }
    if !anywhere("option http-buffer-request").is_empty() {
        problems.push("option http-buffer-request buffers requests".to_owned());
    }

    // Timeouts: the nodes, not the proxy, end a quiet WebSocket.
    for (timeout, at_least) in [
        (
            "tunnel",
            DEFAULT_IDLE_TIMEOUT_MS.max(DEFAULT_PING_INTERVAL_MS) + 1,
        ),
        ("client", 1),
        ("server", 1),
        ("connect", 1),
    ] {
        let values = anywhere(&format!("timeout {timeout}"));
        match values
            .last()
            .and_then(|d| d.split_whitespace().nth(2))
            .and_then(haproxy_ms)
        {
            Some(ms) if ms >= at_least => {}
            other => problems.push(format!(
                "timeout {timeout} is {other:?} ms, under {at_least} ms"
            )),
        }
    }

    // The backend: least connections, readiness checked through /readyz.
    let backend = |prefix: &str| haproxy_directives(&sections, "backend", prefix);
    if backend("balance") != ["balance leastconn"] {
        problems.push(format!(
            "backend balance is {:?}, not leastconn",
            backend("balance")
        ));
    }
    if backend("option httpchk").is_empty() {
        problems.push("no option httpchk: the nodes' health is only a TCP connect".to_owned());
    }
    let send = backend("http-check send").join(" ");
    if !send
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .any(|w| w == ["uri", "/readyz"])
        || !send.contains("meth GET")
    {
        problems.push(format!("the health check does not GET /readyz: {send:?}"));
    }
    if backend("http-check expect") != ["http-check expect status 200"] {
        problems.push(format!(
            "the health check does not expect 200: {:?}",
            backend("http-check expect")
        ));
    }
    let checked_by_default = backend("default-server")
        .iter()
        .any(|d| d.split_whitespace().any(|w| w == "check"));
    let servers = backend("server");
    if servers.len() < 2 {
        problems.push(format!("{} servers, not the two nodes", servers.len()));
    }
    for server in servers {
        if !checked_by_default && !server.split_whitespace().any(|w| w == "check") {
            problems.push(format!("{server} is not health-checked"));
        }
    }
    problems
}

#[test]
fn the_proxy_config_keeps_its_promises() {
    assert_none(HAPROXY_CFG, haproxy_problems(&read(HAPROXY_CFG)));
}

#[test]
fn the_proxy_checks_catch_a_broken_promise() {
    let text = read(HAPROXY_CFG);
    let check = haproxy_problems;
    for (from, to, expected) in [
        ("bind :3001", "bind :8080", "does not bind"),
        (
            " /healthz /readyz\n",
            " /healthz /readyz /metrics\n",
            "/metrics is routed",
        ),
        (
            "acl demo_asset path_beg /demo/",
            "acl demo_asset path_beg /",
            "/metrics is routed",
        ),
        (
            "    http-request deny deny_status 404 unless public || demo_asset\n",
            "",
            "/metrics is routed",
        ),
        (
            "unless public || demo_asset",
            "if public || demo_asset",
            "/ws is not routed",
        ),
        (
            "path / /ws /healthz",
            "path / /healthz",
            "/ws is not routed",
        ),
        ("path_beg /demo/", "path_reg ^/demo/", "not understood"),
        ("option forwardfor\n", "", "forwardfor"),
        ("timeout tunnel 1h", "timeout tunnel 60s", "timeout tunnel"),
        ("timeout tunnel 1h", "", "timeout tunnel"),
        ("balance leastconn", "balance roundrobin", "leastconn"),
        ("option httpchk\n", "", "httpchk"),
        ("uri /readyz", "uri /healthz", "/readyz"),
        ("expect status 200", "expect status 200-503", "expect 200"),
        (
            "default-server check ",
            "default-server ",
            "not health-checked",
        ),
        ("    server chat-2 chat-2:3001\n", "", "not the two nodes"),
        ("mode http\n", "mode tcp\n", "mode http"),
        (
            "default_backend nodes",
            "default_backend node",
            "not a backend",
        ),
        (
            "option dontlognull",
            "option http-buffer-request",
            "buffers",
        ),
        (
            "option dontlognull",
            "http-request del-header Upgrade",
            "rewrites the upgrade",
        ),
    ] {
        assert_catches(check, &text, from, to, expected);
    }
    // The route reader knows rule and acl shapes besides the file's own.
    let rules = "frontend f\n    acl m path_beg /metrics\n    http-request deny if m\n    default_backend b\n";
    assert_eq!(haproxy_routes(rules, "/metrics/x"), Ok(false));
    assert_eq!(haproxy_routes(rules, "/ws"), Ok(true));
    let negated = rules.replace("deny if m", "deny if !m");
    assert_eq!(haproxy_routes(&negated, "/ws"), Ok(false));
    assert_eq!(haproxy_ms("1h"), Some(3_600_000));
    assert_eq!(haproxy_ms("500"), Some(500));
    assert_eq!(haproxy_ms("5x"), None);
}

/// `haproxy`, installed by `scripts/ensure-haproxy.sh` when it is missing
/// (once per test run).
fn haproxy() -> &'static Path {
    static FOUND: OnceLock<PathBuf> = OnceLock::new();
    FOUND.get_or_init(|| {
        let script = Path::new(ROOT).join("scripts/ensure-haproxy.sh");
        let status = Command::new("bash").arg(&script).status();
        assert!(
            matches!(status, Ok(s) if s.success()),
            "scripts/ensure-haproxy.sh failed: {status:?}"
        );
        [
            "/usr/sbin/haproxy",
            "/usr/bin/haproxy",
            "/usr/local/sbin/haproxy",
        ]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("haproxy"))
    })
}

/// Runs `haproxy -c` on `config`. Any warning or alert fails it, except
/// that the compose service names do not resolve outside compose.
fn haproxy_check(config: &str) -> Result<(), String> {
    let dir = TempDir::new("haproxy-check");
    let path = dir.0.join("haproxy.cfg");
    std::fs::write(&path, config).expect("write the config");
    let child = Command::new(haproxy())
        .arg("-c")
        .arg("-f")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run haproxy -c");
    let out = wait_output(child, Duration::from_secs(30));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let complaints: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("[WARNING]") || l.contains("[ALERT]"))
        .filter(|l| !l.contains("could not resolve address 'chat-"))
        .collect();
    if out.status.success() && complaints.is_empty() {
        Ok(())
    } else {
        Err(format!("exit {:?}: {text}", out.status.code()))
    }
}

#[test]
fn haproxy_accepts_the_proxy_config() {
    if let Err(e) = haproxy_check(&read(HAPROXY_CFG)) {
        panic!("haproxy -c: {e}");
    }
}

#[test]
fn haproxy_rejects_the_proxy_config_with_an_error_planted() {
    let text = read(HAPROXY_CFG);
    for (from, to, says) in [
        ("option httpchk", "option httpchkk", "httpchkk"),
        ("inter 2s", "inter 2x", "'x'"),
        // Only warnings from haproxy: a time with a bad unit, a timeout
        // missing.
        ("timeout tunnel 1h", "timeout tunnel 1hour", "1hour"),
        ("option forwardfor", "option forwardfour", "forwardfour"),
        (
            "http-check expect status 200",
            "http-check expect stauts 200",
            "stauts",
        ),
        ("default_backend nodes", "default_backend node", "node"),
        ("    timeout server 30s\n", "", "timeout"),
    ] {
        assert!(text.contains(from), "the config no longer holds {from:?}");
        match haproxy_check(&text.replacen(from, to, 1)) {
            Ok(()) => panic!("haproxy -c accepted the config with {to:?}"),
            Err(e) => assert!(e.contains(says), "{to:?}: the complaint names it: {e}"),
        }
    }
}

/// HAProxy running `config` in the foreground, killed on drop; its log in
/// a file of its own.
struct RunningHaproxy {
    child: std::process::Child,
    log: PathBuf,
    _dir: TempDir,
}

impl RunningHaproxy {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for RunningHaproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A node that has begun draining, as far as a proxy can tell: `/readyz`
/// answers 503 (each one counted), anything else 200 `stub`.
async fn draining_stub(listener: tokio::net::TcpListener, readyz: Arc<AtomicUsize>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        let readyz = readyz.clone();
        tokio::spawn(async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
                match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
                    _ => return,
                }
            }
            let head = String::from_utf8_lossy(&head);
            let path = head.split_whitespace().nth(1).unwrap_or("");
            let (status, body) = if path == "/readyz" {
                readyz.fetch_add(1, Ordering::SeqCst);
                ("503 Service Unavailable", "draining\n")
            } else {
                ("200 OK", "stub\n")
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

/// The proxy config as written, run by HAProxy in front of a real server
/// (chat-1, trusting 127.0.0.1 as its proxy, one WebSocket per client
/// address) and a stub whose `/readyz` says it is draining (chat-2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_config_fronts_real_nodes() {
    let config = read(HAPROXY_CFG);
    let node = common::start_with(|c| {
        c.trusted_proxies = vec![Cidr::parse("127.0.0.1/32").expect("cidr")];
        c.max_connections_per_ip = 1;
    })
    .await;
    let stub = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind the stub");
    let stub_addr = stub.local_addr().expect("stub address");
    let readyz = Arc::new(AtomicUsize::new(0));
    let stub_task = tokio::spawn(draining_stub(stub, readyz.clone()));

    // The same file, with compose's names and port replaced by these.
    let servers = haproxy_servers(&config);
    assert_eq!(servers, ["chat-1:3001", "chat-2:3001"]);
    let port = free_port();
    let bind = format!("bind :{DEFAULT_PORT}\n");
    assert!(
        config.contains(&bind),
        "the config no longer holds {bind:?}"
    );
    // And a smaller maxconn: HAProxy will not start when it cannot raise
    // its descriptor limit to twice maxconn, and the limit where tests run
    // may be lower than the one compose gives the proxy (checked above).
    let maxconn = haproxy_maxconn(&config).expect("a global maxconn");
    let local = config
        .replace(&format!("maxconn {maxconn}\n"), "maxconn 1000\n")
        .replace(&bind, &format!("bind 127.0.0.1:{port}\n"))
        .replace(" chat-1:3001", &format!(" {}", node.addr))
        .replace(" chat-2:3001", &format!(" {stub_addr}"));
    let dir = TempDir::new("haproxy-run");
    let path = dir.0.join("haproxy.cfg");
    std::fs::write(&path, &local).expect("write the config");
    let log = dir.0.join("haproxy.log");
    let file = std::fs::File::create(&log).expect("log file");
    let child = Command::new(haproxy())
        .arg("-db")
        .arg("-f")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("log file"))
        .stderr(file)
        .spawn()
        .expect("run haproxy");
    let proxy = RunningHaproxy {
        child,
        log,
        _dir: dir,
    };
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "haproxy did not listen: {}",
            proxy.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The draining node leaves the rotation through its /readyz: soon every
    // request is the real node's.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut bodies = Vec::new();
        for _ in 0..6 {
            bodies.push(common::http_get(addr, "/healthz").await);
        }
        if bodies.iter().all(|b| *b == (200, "ok\n".to_owned())) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the node whose /readyz says 503 still gets requests: {bodies:?}\n{}",
            proxy.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(readyz.load(Ordering::SeqCst) > 0, "no check asked /readyz");

    // The public paths reach the node; /metrics only on the node itself.
    assert_eq!(common::http_get(addr, "/readyz").await.0, 200);
    assert_eq!(common::http_get(addr, "/").await.0, 200);
    let own = common::http_get(node.addr, "/metrics").await;
    assert!(own.0 == 200 && own.1.contains("# EOF"), "{own:?}");
    for path in [
        "/metrics",
        "/metrics?format=text",
        "/metrics/",
        "//metrics",
        "/demo/../metrics",
        "/%6detrics",
    ] {
        let (status, body) = common::http_get(addr, path).await;
        assert!(
            status == 404 && !body.contains("# EOF"),
            "{path} through the proxy: {status} {body}"
        );
    }

    // WebSockets go through, and the node counts clients by the address the
    // proxy forwards: two clients of distinct addresses pass its limit of
    // one per address, a second from the same address does not.
    let mut alice = Client::try_connect_from(addr, [127, 0, 0, 2].into())
        .await
        .expect("a WebSocket through the proxy");
    alice.auth("alice").await;
    alice.ok("PING", json!({}), "PONG").await;
    let mut bob = Client::try_connect_from(addr, [127, 0, 0, 3].into())
        .await
        .unwrap_or_else(|e| {
            panic!(
                "a second client address was refused: X-Forwarded-For not counted? {e:?}\n{}",
                proxy.log()
            )
        });
    bob.auth("bob").await;
    assert!(
        Client::try_connect_from(addr, [127, 0, 0, 2].into())
            .await
            .is_err(),
        "a second WebSocket from 127.0.0.2 passed a limit of one per address"
    );
    alice.ok("PING", json!({}), "PONG").await;

    drop(proxy);
    stub_task.abort();
    node.shutdown().await.expect("shutdown");
}
