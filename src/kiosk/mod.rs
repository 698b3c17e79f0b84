//! The kiosk page's server side: embedded assets, one-time session codes, and the signed user
//! handoff from the upstream sign-in (the page never trusts a typed user name).
//!
//! Handoff token: `base64url(payload) "." base64url(HMAC-SHA256(secret, payload))` with payload
//! `{"user": "...", "display_name": "...", "exp": <unix seconds>}`. The campus sign-in (which
//! knows who the student is) signs it and sends the kiosk browser to `/kiosk/#handoff=<token>`.

use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const INDEX_HTML: &str = include_str!("assets/index.html");
pub const APP_JS: &str = include_str!("assets/app.js");
pub const APP_CSS: &str = include_str!("assets/app.css");

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Handoff {
    pub user: String,
    pub display_name: String,
    /// Unix seconds.
    pub exp: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandoffError {
    #[error("the sign-in handoff is malformed")]
    Malformed,
    #[error("the sign-in handoff signature is wrong")]
    BadSignature,
    #[error("the sign-in handoff has expired")]
    Expired,
}

fn mac(secret: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("any key length");
    m.update(payload);
    m.finalize().into_bytes().to_vec()
}

pub fn sign_handoff(secret: &[u8], h: &Handoff) -> String {
    let payload = serde_json::to_vec(h).expect("serialisable");
    format!(
        "{}.{}",
        B64.encode(&payload),
        B64.encode(mac(secret, &payload))
    )
}

pub fn verify_handoff(secret: &[u8], token: &str, now_unix: i64) -> Result<Handoff, HandoffError> {
    let (p, s) = token.split_once('.').ok_or(HandoffError::Malformed)?;
    let payload = B64.decode(p).map_err(|_| HandoffError::Malformed)?;
    let sig = B64.decode(s).map_err(|_| HandoffError::Malformed)?;
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("any key length");
    m.update(&payload);
    m.verify_slice(&sig)
        .map_err(|_| HandoffError::BadSignature)?;
    let h: Handoff = serde_json::from_slice(&payload).map_err(|_| HandoffError::Malformed)?;
    if h.exp <= now_unix {
        return Err(HandoffError::Expired);
    }
    Ok(h)
}

/// The handoff key: configured, or `<data_dir>/kiosk-handoff.key` (created 0600).
pub fn handoff_secret(cfg: &crate::config::Config) -> std::io::Result<Vec<u8>> {
    if !cfg.kiosk.handoff_secret.is_empty() {
        return Ok(cfg.kiosk.handoff_secret.expose().as_bytes().to_vec());
    }
    let path = cfg.data_dir.join("kiosk-handoff.key");
    match std::fs::read(&path) {
        Ok(b) if !b.is_empty() => Ok(b),
        Ok(_) => Err(std::io::Error::other("empty kiosk-handoff.key")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut k = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut k);
            let hexed = hex::encode(k).into_bytes();
            write_private(&path, &hexed)?;
            Ok(hexed)
        }
        Err(e) => Err(e),
    }
}

fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)
}

/// A fresh one-time code and its hash (only the hash is stored).
pub fn new_session_code() -> (String, Vec<u8>) {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    let code = B64.encode(b);
    let hash = session_code_hash(&code);
    (code, hash)
}

pub fn session_code_hash(code: &str) -> Vec<u8> {
    Sha256::digest(code.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handoff_round_trip_and_rejections() {
        let h = Handoff {
            user: "r0123456".into(),
            display_name: "An Peeters".into(),
            exp: 2_000,
        };
        let t = sign_handoff(b"k", &h);
        assert_eq!(verify_handoff(b"k", &t, 1_000).unwrap(), h);
        assert_eq!(
            verify_handoff(b"other", &t, 1_000).unwrap_err(),
            HandoffError::BadSignature
        );
        assert_eq!(
            verify_handoff(b"k", &t, 2_000).unwrap_err(),
            HandoffError::Expired
        );
        assert_eq!(
            verify_handoff(b"k", "garbage", 0).unwrap_err(),
            HandoffError::Malformed
        );
        // A forged payload with the old signature.
        let forged_payload = B64.encode(br#"{"user":"admin","display_name":"x","exp":9999}"#);
        let sig = t.split_once('.').unwrap().1;
        assert_eq!(
            verify_handoff(b"k", &format!("{forged_payload}.{sig}"), 0).unwrap_err(),
            HandoffError::BadSignature
        );
    }

    #[test]
    fn the_page_has_no_inline_script_or_style() {
        assert!(!INDEX_HTML.contains("<script>") && !INDEX_HTML.contains("style="));
        assert!(INDEX_HTML.contains(r#"<script src="app.js""#));
        assert!(
            !INDEX_HTML.contains("http://") && !INDEX_HTML.contains("https://"),
            "no third-party assets"
        );
    }
}
