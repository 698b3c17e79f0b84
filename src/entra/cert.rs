//! The app registration's certificate credential: a PEM file holding the X.509 certificate
//! and its RSA private key (PKCS#8 `PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`, unencrypted),
//! and the private_key_jwt client assertion signed with it (Microsoft identity platform
//! "certificate credentials": PS256, header `x5t#S256` = base64url SHA-256 thumbprint of the
//! certificate's DER; claims `aud` = the token endpoint, `iss` = `sub` = client id, `jti`,
//! `nbf`, `iat`, `exp`).

use std::path::Path;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::signature::{KeyPair, RsaKeyPair, RSA_PSS_SHA256};
use serde_json::json;
use sha2::{Digest, Sha256};

/// How long a client assertion is valid (Entra: keep it short, 5-10 minutes).
const ASSERTION_LIFETIME_SECS: i64 = 10 * 60;

/// The loaded certificate credential. `Debug` shows the thumbprint only.
pub(crate) struct ClientCertificate {
    key: RsaKeyPair,
    /// base64url SHA-256 thumbprint of the certificate DER.
    x5t_s256: String,
}

impl std::fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCertificate")
            .field("x5t#S256", &self.x5t_s256)
            .finish_non_exhaustive()
    }
}

/// The PEM blocks of `text`: (label, DER).
fn pem_blocks(text: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut blocks = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines().map(str::trim) {
        if let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            current = Some((label.to_string(), String::new()));
        } else if let Some(label) = line
            .strip_prefix("-----END ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            let (begun, b64) = current
                .take()
                .ok_or_else(|| format!("`END {label}` without BEGIN"))?;
            if begun != label {
                return Err(format!("`BEGIN {begun}` closed by `END {label}`"));
            }
            let der = STANDARD
                .decode(b64.as_bytes())
                .map_err(|e| format!("{label}: not base64 ({e})"))?;
            blocks.push((label.to_string(), der));
        } else if let Some((_, b64)) = current.as_mut() {
            if !line.contains(':') {
                b64.push_str(line);
            }
        }
    }
    Ok(blocks)
}

impl ClientCertificate {
    /// Parse a PEM holding the certificate and its RSA key; the key must be the certificate's.
    pub(crate) fn from_pem(text: &str) -> Result<ClientCertificate, String> {
        let blocks = pem_blocks(text)?;
        let cert = blocks
            .iter()
            .find(|(label, _)| label == "CERTIFICATE")
            .map(|(_, der)| der)
            .ok_or("no CERTIFICATE block")?;
        let key = match blocks
            .iter()
            .find(|(label, _)| label.ends_with("PRIVATE KEY"))
        {
            Some((label, der)) if label == "PRIVATE KEY" => RsaKeyPair::from_pkcs8(der)
                .map_err(|e| format!("the PRIVATE KEY is not a usable RSA key ({e})"))?,
            Some((label, der)) if label == "RSA PRIVATE KEY" => RsaKeyPair::from_der(der)
                .map_err(|e| format!("the RSA PRIVATE KEY is not usable ({e})"))?,
            Some((label, _)) => {
                return Err(format!(
                    "`{label}` is not supported (an unencrypted RSA PRIVATE KEY or PRIVATE KEY is)"
                ))
            }
            None => return Err("no PRIVATE KEY block".into()),
        };
        // The RSAPublicKey DER sits verbatim in the certificate's subjectPublicKeyInfo.
        let public = key.public_key().as_ref();
        if !cert.windows(public.len()).any(|w| w == public) {
            return Err("the private key does not belong to the certificate".into());
        }
        Ok(ClientCertificate {
            key,
            x5t_s256: URL_SAFE_NO_PAD.encode(Sha256::digest(cert)),
        })
    }

    /// Read and parse the PEM file at `path`.
    pub(crate) fn load(path: &Path) -> Result<ClientCertificate, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::from_pem(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// A signed client assertion for `audience` (the token endpoint), issued at `now_secs`.
    pub(crate) fn assertion(
        &self,
        client_id: &str,
        audience: &str,
        now_secs: i64,
    ) -> Result<String, String> {
        let header = json!({"alg": "PS256", "typ": "JWT", "x5t#S256": self.x5t_s256});
        let claims = json!({
            "aud": audience,
            "iss": client_id,
            "sub": client_id,
            "jti": uuid::Uuid::new_v4().to_string(),
            "nbf": now_secs,
            "iat": now_secs,
            "exp": now_secs + ASSERTION_LIFETIME_SECS,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut sig = vec![0u8; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PSS_SHA256,
                &ring::rand::SystemRandom::new(),
                signing_input.as_bytes(),
                &mut sig,
            )
            .map_err(|_| "signing the client assertion failed".to_string())?;
        Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_structure_errors_are_named() {
        assert!(ClientCertificate::from_pem("")
            .unwrap_err()
            .contains("CERTIFICATE"));
        let only_cert = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(ClientCertificate::from_pem(only_cert)
            .unwrap_err()
            .contains("PRIVATE KEY"));
        let encrypted = format!(
            "{only_cert}-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"
        );
        assert!(ClientCertificate::from_pem(&encrypted)
            .unwrap_err()
            .contains("not supported"));
        let mismatched = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(ClientCertificate::from_pem(mismatched).is_err());
    }
}
