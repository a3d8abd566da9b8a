//! `chat-flow`: parses the command line and runs the server, prints a
//! token, checks one, or probes a running server's health.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use chat_flow::auth::Verifier;
use chat_flow::cli::{self, Action, CheckTokenArgs, Cli, CliError, HealthcheckArgs, TokenArgs};
use chat_flow::config::{Config, ConfigError, ConfigSource, DotEnv, LogFormat};
use chat_flow::healthcheck;
use chat_flow::server::{self, RuntimeEnv};
use clap::Parser;
use tracing::{info, warn};

fn main() -> ExitCode {
    // Flags and the real environment (clap); `.env` fills in the rest in
    // each command, without writing to the process environment.
    match Cli::parse().into_action() {
        Action::Token(args) => token(args),
        Action::CheckToken(args) => checktoken(args),
        Action::Healthcheck(args) => healthcheck(args),
        Action::Serve(args) => {
            // The same source is read again on every SIGHUP.
            let source = ConfigSource::new(args);
            match source.load().and_then(with_checked_key) {
                Ok(config) => serve(config, source),
                Err(e) => {
                    eprintln!("chat-flow: {e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

/// The working directory's `.env`, for what neither a flag nor the
/// environment set (an empty one when there is no file).
fn dotenv() -> Result<DotEnv, CliError> {
    DotEnv::read(Path::new(".env")).map_err(CliError::from)
}

/// Writes `text` to standard output and flushes it.
fn print(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// `chat-flow token`. Exit 0: printed; 1: stdout closed; 2: usage or
/// configuration error.
fn token(mut args: TokenArgs) -> ExitCode {
    let token = dotenv().and_then(|dotenv| {
        args.jwt.fill_unset(&dotenv);
        cli::run_token(&args, cli::unix_now_s())
    });
    match token {
        // A closed stdout is an error to report, not a panic.
        Ok(token) => match print(&format!("{token}\n")) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("chat-flow: cannot write the token to stdout: {e}");
                ExitCode::from(1)
            }
        },
        Err(e) => {
            eprintln!("chat-flow: {e}");
            ExitCode::from(2)
        }
    }
}

/// `chat-flow checktoken`. Exit 0: accepted; 1: rejected; 2: usage or
/// configuration error.
fn checktoken(mut args: CheckTokenArgs) -> ExitCode {
    let report = dotenv().and_then(|dotenv| {
        args.jwt.fill_unset(&dotenv);
        let input = cli::read_token(&args.token, std::io::stdin().lock())?;
        cli::run_checktoken(&args, &input, cli::unix_now_ms())
    });
    let report = match report {
        Ok(report) => report,
        Err(e) => {
            eprintln!("chat-flow: {e}");
            return ExitCode::from(2);
        }
    };
    let text = if args.json {
        format!("{:#}\n", report.to_json())
    } else {
        report.to_text()
    };
    // The verdict is the exit code: a closed stdout (`| head -1`) changes
    // nothing about it.
    let _ = print(&text);
    if report.accepted() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// `chat-flow healthcheck`. Exit 0: healthy; 1: anything else, a bad
/// setting included (Docker reserves 2 for health checks).
fn healthcheck(mut args: HealthcheckArgs) -> ExitCode {
    let addr = dotenv().and_then(|dotenv| {
        args.fill_unset(&dotenv);
        cli::healthcheck_addr(&args)
    });
    let addr = match addr {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("chat-flow healthcheck: {e}");
            return ExitCode::from(1);
        }
    };
    match healthcheck::probe(addr, args.timeout) {
        Ok(()) => {
            // The verdict is the exit code; a closed stdout changes
            // nothing about it.
            let _ = print(&format!(
                "healthy: http://{addr}{} answered 200\n",
                healthcheck::HEALTH_PATH
            ));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("chat-flow healthcheck: unhealthy: {e}");
            ExitCode::from(1)
        }
    }
}

/// `config` once the JWT key it names has been read and parsed. The
/// configuration holds only the key's setting values, so without this a
/// missing or wrong `JWT_PUBLIC_KEY_FILE` would first show when the server
/// builds its verifier, instead of as a start-up (or reload) error naming it.
fn with_checked_key(config: Config) -> Result<Config, ConfigError> {
    Verifier::from_config(&config)?;
    Ok(config)
}

fn serve(config: Config, source: ConfigSource) -> ExitCode {
    init_logging(&config);
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if config.worker_threads > 0 {
        runtime.worker_threads(config.worker_threads);
    }
    let runtime = match runtime.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chat-flow: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        if config.uses_dev_secret() {
            warn!(
                "JWT_SECRET is not set: using the built-in development secret. \
                 Anyone can mint tokens for this server; set JWT_SECRET in production."
            );
        }
        let addr = config.listen_addr();
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(%addr, error = %e, "cannot listen (HOST/PORT)");
                return ExitCode::from(1);
            }
        };
        // With PORT=0 the OS picks the port: name the one it picked.
        let bound = listener.local_addr().unwrap_or(addr);
        info!(addr = %bound, "listening");
        let (reload_tx, reloads) = tokio::sync::mpsc::channel(4);
        tokio::spawn(reload_on_sighup(source, reload_tx));
        let env = RuntimeEnv::from_system();
        match server::run_with_reloads(listener, config, env, shutdown_signal(), reloads).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "server failed");
                ExitCode::from(1)
            }
        }
    })
}

/// On every SIGHUP, reads the configuration again and hands it to the
/// server; an invalid one is logged (naming the variable) and ignored.
async fn reload_on_sighup(source: ConfigSource, reloads: tokio::sync::mpsc::Sender<Config>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            warn!("cannot listen for SIGHUP: configuration reload is unavailable");
            return;
        };
        while hangups.recv().await.is_some() {
            info!("SIGHUP received: reloading the configuration");
            match source.load().and_then(with_checked_key) {
                Ok(config) => {
                    if reloads.send(config).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "configuration reload failed; keeping the running one")
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (source, reloads);
    }
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => info!("SIGTERM received"),
                    _ = int.recv() => info!("SIGINT received"),
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match config.log_format {
        LogFormat::Json => builder.json().with_current_span(true).init(),
        LogFormat::Pretty => builder.init(),
    }
}
