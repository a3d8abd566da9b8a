//! The JWT settings: which algorithm is accepted and where its key comes
//! from. Only the values the operator set live here; turning them into keys
//! is cryptography and belongs to `auth`.

use std::fmt;
use std::path::PathBuf;

/// Largest public key file read from `JWT_PUBLIC_KEY_FILE` (a PEM public key
/// is a few KiB at most; this stops a misconfigured path from being slurped).
pub const PUBLIC_KEY_FILE_MAX_BYTES: u64 = 64 * 1024;

/// Minimum `JWT_SECRET` length under `APP_ENV=production` (256 bits, the
/// HS256 output size; shorter secrets are guessable).
pub const JWT_SECRET_MIN_BYTES: usize = 32;

/// The built-in HS256 secret used when `JWT_SECRET` is unset outside
/// production. DEVELOPMENT ONLY: it is public (it is in this source file), so
/// anyone can mint tokens a server using it accepts. The server warns when it
/// is in use and refuses it under `APP_ENV=production`.
pub const DEV_JWT_SECRET: &str = "chat-flow-DEVELOPMENT-ONLY-jwt-secret-never-use-in-production";

/// The one JWT signature algorithm the server accepts (`JWT_ALGORITHM`).
///
/// Exactly one algorithm is accepted so that a token can never choose how it
/// is verified (no `alg` confusion).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JwtAlgorithm {
    /// `HS256`: HMAC-SHA256 with the shared `JWT_SECRET`.
    Hs256,
    /// `RS256`: RSASSA-PKCS1-v1_5 with SHA-256, RSA public key in
    /// `JWT_PUBLIC_KEY_FILE`.
    Rs256,
    /// `ES256`: ECDSA on P-256 with SHA-256, EC public key in
    /// `JWT_PUBLIC_KEY_FILE`.
    Es256,
    /// `EdDSA`: Ed25519, public key in `JWT_PUBLIC_KEY_FILE`.
    EdDsa,
}

impl JwtAlgorithm {
    /// Every accepted value, in the spelling used by `JWT_ALGORITHM` and the
    /// JWT `alg` header.
    pub const ALL: [JwtAlgorithm; 4] = [Self::Hs256, Self::Rs256, Self::Es256, Self::EdDsa];

    /// The `alg` header value (`HS256`, `RS256`, `ES256`, `EdDSA`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hs256 => "HS256",
            Self::Rs256 => "RS256",
            Self::Es256 => "ES256",
            Self::EdDsa => "EdDSA",
        }
    }

    /// Parses a `JWT_ALGORITHM` value (surrounding whitespace and ASCII case
    /// are ignored); `None` for anything else.
    pub fn from_name(name: &str) -> Option<Self> {
        let name = name.trim();
        Self::ALL
            .into_iter()
            .find(|alg| alg.as_str().eq_ignore_ascii_case(name))
    }

    /// Whether the algorithm verifies with a public key file rather than a
    /// shared secret.
    pub fn uses_public_key(self) -> bool {
        self != Self::Hs256
    }
}

impl fmt::Display for JwtAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the key that verifies JWTs comes from, resolved from
/// `JWT_ALGORITHM`, `JWT_SECRET`, `JWT_PUBLIC_KEY_FILE` and `APP_ENV`.
///
/// One field instead of separate secret/path fields so that an inconsistent
/// combination (a public key under HS256, a secret under RS256) cannot be
/// represented after validation. `Debug` never prints key material.
#[derive(Clone, PartialEq, Eq)]
pub enum JwtKeySource {
    /// HS256 with [`DEV_JWT_SECRET`], because `JWT_SECRET` is unset and
    /// `APP_ENV` is not `production`. The server must log a warning.
    DevSecret,
    /// HS256 with the bytes of `JWT_SECRET`.
    Secret(Vec<u8>),
    /// RS256, ES256 or EdDSA with the PEM public key read from
    /// `JWT_PUBLIC_KEY_FILE` during validation (once: a verifier built from
    /// this configuration, now or after a reload, parses these bytes, never
    /// a file that may have changed since). `auth` parses it; the binary
    /// builds a verifier right after validation, so a wrong key is a
    /// start-up error.
    PublicKeyPem {
        /// The path it was read from, for errors and logs.
        path: PathBuf,
        /// The file's contents.
        pem: Vec<u8>,
    },
}

impl JwtKeySource {
    /// The HMAC secret for HS256 (the development one for
    /// [`JwtKeySource::DevSecret`]); `None` for a public key.
    pub fn hmac_secret(&self) -> Option<&[u8]> {
        match self {
            Self::DevSecret => Some(DEV_JWT_SECRET.as_bytes()),
            Self::Secret(secret) => Some(secret),
            Self::PublicKeyPem { .. } => None,
        }
    }
}

impl fmt::Debug for JwtKeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DevSecret => f.write_str("DevSecret"),
            Self::Secret(secret) => write!(f, "Secret([redacted; {} bytes])", secret.len()),
            Self::PublicKeyPem { path, pem } => f
                .debug_struct("PublicKeyPem")
                .field("path", path)
                .field("pem_bytes", &pem.len())
                .finish(),
        }
    }
}
