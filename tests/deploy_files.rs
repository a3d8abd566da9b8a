//! The deployment files keep their promises, so that they cannot rot
//! unnoticed: CI cannot build the Docker image (no base images can be
//! pulled here) nor start a systemd service (systemd is not PID 1), so what
//! can be checked without them is checked here, against the server's own
//! defaults.
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
//!
//! Each check is a function returning the problems it found, and each is
//! also run on a copy of the file with a promise broken, which it must
//! report.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use chat_flow::cli::DEFAULT_HEALTHCHECK_TIMEOUT;
use chat_flow::config::{DEFAULT_MAX_CONNECTIONS, DEFAULT_PORT, DEFAULT_SHUTDOWN_GRACE_MS};
use chat_flow::server::admission::HANDSHAKE_CAP_FACTOR;
use common::process::{BIN, TempDir, chat_flow, output_text, wait_output};

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
