//! Key cryptography: turns the JWT settings of a [`Config`](crate::config::Config)
//! (algorithm, secret, public key file) into the `jsonwebtoken` key that
//! verifies tokens, refusing a key that is unreadable, of the wrong kind or
//! too weak. Its errors are [`ConfigError`]s because they name
//! `JWT_PUBLIC_KEY_FILE`, the setting the operator has to fix.

use jsonwebtoken::DecodingKey;

use crate::config::{ConfigError, DEV_JWT_SECRET, JwtAlgorithm, JwtKeySource};

/// Smallest accepted RSA modulus for `RS256` (NIST SP 800-131A).
const RSA_MIN_BITS: usize = 2048;

/// The `jsonwebtoken` algorithm for a `JWT_ALGORITHM` setting.
pub(super) fn jsonwebtoken_algorithm(algorithm: JwtAlgorithm) -> jsonwebtoken::Algorithm {
    match algorithm {
        JwtAlgorithm::Hs256 => jsonwebtoken::Algorithm::HS256,
        JwtAlgorithm::Rs256 => jsonwebtoken::Algorithm::RS256,
        JwtAlgorithm::Es256 => jsonwebtoken::Algorithm::ES256,
        JwtAlgorithm::EdDsa => jsonwebtoken::Algorithm::EdDSA,
    }
}

/// Builds the `jsonwebtoken` key that verifies `algorithm` from `source`,
/// reading a public key file and checking that the key actually parses for
/// that algorithm (the binary builds a verifier right after validating the
/// configuration, so a wrong or corrupt key is a start-up error, and no
/// malformed key can reach the verifier at run time).
pub(super) fn decoding_key(
    algorithm: JwtAlgorithm,
    source: &JwtKeySource,
) -> Result<DecodingKey, ConfigError> {
    let (path, pem) = match (algorithm.uses_public_key(), source) {
        (false, JwtKeySource::PublicKeyPem { path, .. }) => {
            return Err(ConfigError::invalid(
                "JWT_PUBLIC_KEY_FILE",
                &path.to_string_lossy(),
                "is only used with JWT_ALGORITHM RS256, ES256 or EdDSA, but JWT_ALGORITHM is HS256",
            ));
        }
        (false, key) => {
            let secret = key.hmac_secret().unwrap_or(DEV_JWT_SECRET.as_bytes());
            return Ok(DecodingKey::from_secret(secret));
        }
        (true, JwtKeySource::PublicKeyPem { path, pem }) => (path, pem),
        (true, _) => {
            return Err(ConfigError::Missing {
                var: "JWT_PUBLIC_KEY_FILE",
                reason: format!("when JWT_ALGORITHM is {algorithm}"),
            });
        }
    };
    let invalid = |reason: String| ConfigError::InvalidKey {
        var: "JWT_PUBLIC_KEY_FILE",
        path: path.clone(),
        reason,
    };
    let expected = match algorithm {
        JwtAlgorithm::Rs256 => "an RSA public key in PEM (\"PUBLIC KEY\" or \"RSA PUBLIC KEY\")",
        JwtAlgorithm::Es256 => "a P-256 EC public key in PEM (\"PUBLIC KEY\")",
        _ => "an Ed25519 public key in PEM (\"PUBLIC KEY\")",
    };
    let key = match algorithm {
        JwtAlgorithm::Rs256 => DecodingKey::from_rsa_pem(pem),
        JwtAlgorithm::Es256 => DecodingKey::from_ec_pem(pem),
        _ => DecodingKey::from_ed_pem(pem),
    }
    .map_err(|_| invalid(format!("expected {expected} for {algorithm}")))?;
    let der = key
        .try_get_as_bytes()
        .map_err(|_| invalid(format!("expected {expected} for {algorithm}")))?;

    match algorithm {
        JwtAlgorithm::Rs256 => {
            let utils = &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.key_utils;
            let (modulus, _exponent) = (utils.rsa_pub_components_from_public_key)(der)
                .map_err(|_| invalid(format!("expected {expected} for {algorithm}")))?;
            let significant = modulus.iter().skip_while(|byte| **byte == 0).count();
            let bits = significant * 8;
            if bits < RSA_MIN_BITS {
                return Err(invalid(format!(
                    "the RSA key has about {bits} bits; at least {RSA_MIN_BITS} are required"
                )));
            }
        }
        JwtAlgorithm::EdDsa if der.len() != 32 => {
            return Err(invalid(format!("expected {expected} for {algorithm}")));
        }
        _ => {}
    }
    // ES256 and EdDSA keys are decoded into curve points when a verifier is
    // built; do it once now with a dummy signature so a key that is not on
    // the right curve fails here. (`Ok(false)` = key fine, signature not.)
    jsonwebtoken::crypto::verify("AA", b"probe", &key, jsonwebtoken_algorithm(algorithm))
        .map_err(|_| invalid(format!("expected {expected} for {algorithm}")))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn fixture(name: &str) -> String {
        format!("{}/tests/fixtures/jwt/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    /// The key an operator's `JWT_ALGORITHM` and `JWT_PUBLIC_KEY_FILE`
    /// give, through the configuration as the binary reads it.
    fn load(alg: &str, key_file: &str) -> Result<DecodingKey, ConfigError> {
        let config = Config::from_lookup(|var| match var {
            "JWT_ALGORITHM" => Some(alg.to_owned()),
            "JWT_PUBLIC_KEY_FILE" => Some(key_file.to_owned()),
            _ => None,
        })?;
        decoding_key(config.jwt_algorithm, &config.jwt_key)
    }

    #[test]
    fn public_key_algorithms_require_a_readable_valid_key_file() {
        for alg in ["RS256", "ES256", "EdDSA"] {
            let e = load(alg, "/nonexistent/key.pem").expect_err("unreadable");
            assert!(matches!(e, ConfigError::KeyFileUnreadable { .. }), "{e}");
            assert_eq!(e.variable(), Some("JWT_PUBLIC_KEY_FILE"));

            let cargo_toml = format!("{}/Cargo.toml", env!("CARGO_MANIFEST_DIR"));
            let e = load(alg, &cargo_toml).expect_err("not a PEM");
            assert!(matches!(e, ConfigError::InvalidKey { .. }), "{e}");
        }
    }

    #[test]
    fn public_keys_load_for_their_algorithm_only() {
        let cases = [
            ("RS256", "rsa_public.pem"),
            ("ES256", "ec_p256_public.pem"),
            ("EdDSA", "ed25519_public.pem"),
        ];
        for (alg, file) in cases {
            let path = fixture(file);
            load(alg, &path).unwrap_or_else(|e| panic!("{alg} with {file}: {e}"));
            for (other_alg, _) in cases.iter().filter(|(a, _)| *a != alg) {
                let e = load(other_alg, &path).expect_err("key of another algorithm");
                assert!(
                    matches!(e, ConfigError::InvalidKey { .. }),
                    "{other_alg}/{file}: {e}"
                );
            }
        }
        for (alg, file) in [
            ("ES256", "ec_p384_public.pem"),
            ("RS256", "rsa1024_public.pem"),
            ("RS256", "rsa_private.pem"),
            ("ES256", "ec_p256_private.pem"),
            ("EdDSA", "ed25519_private.pem"),
        ] {
            let e = load(alg, &fixture(file)).expect_err("unusable key");
            assert!(
                matches!(e, ConfigError::InvalidKey { .. }),
                "{alg}/{file}: {e}"
            );
        }
    }
}
