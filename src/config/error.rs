//! [`ConfigError`]: why a configuration cannot be used, always naming the
//! variable at fault.

use std::path::PathBuf;

/// Longest part of an offending value quoted back in an error message.
const SHOWN_VALUE_MAX_CHARS: usize = 120;

/// A configuration value that cannot be used. Start-up aborts with it; the
/// message always names the variable (or the `.env` file) so the operator
/// knows what to fix, and never contains secret material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A variable holds a value outside its rules.
    #[error("invalid value {value:?} for {var}: {expected}")]
    Invalid {
        /// The environment variable.
        var: &'static str,
        /// The offending value (shortened when long).
        value: String,
        /// What would have been accepted.
        expected: String,
    },
    /// A variable that the other settings make mandatory is unset.
    #[error("{var} is required {reason}")]
    Missing {
        /// The environment variable.
        var: &'static str,
        /// Why it is required, e.g. "when JWT_ALGORITHM is RS256".
        reason: String,
    },
    /// A secret is unacceptable under `APP_ENV=production` (its value is not
    /// shown).
    #[error("{var} is not acceptable when APP_ENV=production: {reason}")]
    InsecureSecret {
        /// The environment variable.
        var: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The key file cannot be read.
    #[error("cannot read {var} {path:?}: {reason}")]
    KeyFileUnreadable {
        /// The environment variable naming the file.
        var: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O problem.
        reason: String,
    },
    /// The key file does not hold a usable public key.
    #[error("invalid key in {var} {path:?}: {reason}")]
    InvalidKey {
        /// The environment variable naming the file.
        var: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with the key.
        reason: String,
    },
    /// The `.env` file exists but cannot be read, or a line of it is not
    /// `.env` syntax.
    #[error("cannot load {}{}: {reason}", .file.display(), line_suffix(*.line))]
    DotEnv {
        /// The file.
        file: PathBuf,
        /// The line at fault (from 1), or `None` when the file could not be
        /// read.
        line: Option<usize>,
        /// The problem (never includes a value from the file).
        reason: String,
    },
}

impl ConfigError {
    /// The environment variable at fault, or `None` for a `.env` problem.
    pub fn variable(&self) -> Option<&'static str> {
        match self {
            Self::Invalid { var, .. }
            | Self::Missing { var, .. }
            | Self::InsecureSecret { var, .. }
            | Self::KeyFileUnreadable { var, .. }
            | Self::InvalidKey { var, .. } => Some(var),
            Self::DotEnv { .. } => None,
        }
    }

    /// Builds [`ConfigError::Invalid`], shortening a long value.
    pub(crate) fn invalid(var: &'static str, value: &str, expected: impl Into<String>) -> Self {
        Self::Invalid {
            var,
            value: shown(value),
            expected: expected.into(),
        }
    }
}

/// `, line N` when there is a line.
fn line_suffix(line: Option<usize>) -> String {
    line.map(|n| format!(", line {n}")).unwrap_or_default()
}

/// Quotes at most [`SHOWN_VALUE_MAX_CHARS`] of a value in an error message.
fn shown(value: &str) -> String {
    match value.char_indices().nth(SHOWN_VALUE_MAX_CHARS) {
        Some((cut, _)) => format!("{}…", &value[..cut]),
        None => value.to_owned(),
    }
}
