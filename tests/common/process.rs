//! The `chat-flow` binary run as a process, for the tests of its
//! subcommands: each run in a working directory of its own with only the
//! variables the test gives (and `PATH`), so no stray `.env` or variable
//! leaks in, and failed rather than waited for when it does not exit.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The binary this test run built.
pub const BIN: &str = env!("CARGO_BIN_EXE_chat-flow");

/// A fresh, empty directory under the system's temporary directory,
/// removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// `chat-flow-test-PID-NAME-NANOS-N`: unique within and across runs.
    pub fn new(name: &str) -> TempDir {
        static COUNT: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "chat-flow-test-{}-{name}-{nanos}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    /// A fresh directory holding a `.env` with `contents`.
    pub fn with_dotenv(name: &str, contents: &str) -> TempDir {
        let dir = TempDir::new(name);
        std::fs::write(dir.0.join(".env"), contents).expect(".env");
        dir
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `chat-flow ARGS` in `dir` with only `env` (and `PATH`): standard input
/// empty, standard output and error captured.
pub fn chat_flow(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Waits for `child` to exit and returns what it printed; kills it and
/// fails the test, showing its output so far, when it has not exited
/// within `limit`. Its output is read while it runs, so a child that
/// prints more than a pipe holds is not stuck.
pub fn wait_output(mut child: Child, limit: Duration) -> Output {
    fn drain(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let status = child.wait().expect("wait");
            let out = Output {
                status,
                stdout: stdout.join().expect("stdout"),
                stderr: stderr.join().expect("stderr"),
            };
            panic!(
                "the process did not exit within {limit:?}: {}",
                output_text(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: stdout.join().expect("stdout"),
        stderr: stderr.join().expect("stderr"),
    }
}

/// A run's exit code and output, for assertion messages.
pub fn output_text(out: &Output) -> String {
    format!(
        "exit {:?}; stdout: {}; stderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
