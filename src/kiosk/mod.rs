//! The kiosk page's server side: embedded assets, one-time session codes, and the signed user
//! handoff from the upstream sign-in (the page never trusts a typed user name).
//!
//! Handoff token: `base64url(payload) "." base64url(HMAC-SHA256(secret, payload))` with payload
//! `{"user": "...", "display_name": "...", "exp": <unix seconds>, "jti": "..."}`. The campus
//! sign-in (which knows who the student is) signs it and sends the kiosk browser to
//! `/kiosk/#handoff=<token>`. A token is accepted at most [`MAX_HANDOFF_TTL_SECS`] before its
//! `exp` and only once (the HTTP layer records each used payload's [`handoff_hash`] until its
//! `exp`); the required `jti` keeps two hand-offs of one student in one second apart. The
//! display name is bounded and clean like every text field ([`crate::base::text`]).

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const INDEX_HTML: &str = include_str!("assets/index.html");
pub const APP_JS: &str = include_str!("assets/app.js");
pub const TEXTS_JS: &str = include_str!("assets/texts.js");
pub const APP_CSS: &str = include_str!("assets/app.css");
/// The page's icon, served same-origin as `/favicon.ico` (an SVG: browsers sniff it).
pub const ICON_SVG: &str = include_str!("assets/icon.svg");

/// The longest a handoff may be valid: `exp` at most this far after its check.
pub const MAX_HANDOFF_TTL_SECS: i64 = 600;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Handoff {
    pub user: String,
    pub display_name: String,
    /// Unix seconds.
    pub exp: i64,
}

/// The payload as signed: a handoff plus its required `jti` (what keeps two hand-offs of one
/// student in one second apart, and single use meaningful).
#[derive(Deserialize)]
struct SignedHandoff {
    #[serde(flatten)]
    handoff: Handoff,
    jti: String,
}

/// Longest `display_name` a handoff may carry (characters), like every text field.
pub const MAX_DISPLAY_NAME_CHARS: usize = 128;
const MAX_JTI_BYTES: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandoffError {
    #[error("the sign-in handoff's display name must be 1-128 printable characters")]
    BadDisplayName,
    #[error("the sign-in handoff is malformed")]
    Malformed,
    #[error("the sign-in handoff signature is wrong")]
    BadSignature,
    #[error("the sign-in handoff has expired")]
    Expired,
    #[error("the sign-in handoff is valid for too long (at most 10 minutes)")]
    TooLong,
    #[error("the sign-in handoff was already used")]
    Replayed,
}

fn mac(secret: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("any key length");
    m.update(payload);
    m.finalize().into_bytes().to_vec()
}

/// Sign `h` with a fresh random `jti`, so that every token is distinct.
pub fn sign_handoff(secret: &[u8], h: &Handoff) -> String {
    let mut v = serde_json::to_value(h).expect("serialisable");
    let mut jti = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut jti);
    v["jti"] = B64.encode(jti).into();
    let payload = serde_json::to_vec(&v).expect("serialisable");
    format!(
        "{}.{}",
        B64.encode(&payload),
        B64.encode(mac(secret, &payload))
    )
}

/// Check signature and lifetime (`now < exp <= now + MAX_HANDOFF_TTL_SECS`). Single use is the
/// caller's part: record [`handoff_hash`] of every accepted token.
pub fn verify_handoff(secret: &[u8], token: &str, now_unix: i64) -> Result<Handoff, HandoffError> {
    let (p, s) = token.split_once('.').ok_or(HandoffError::Malformed)?;
    let payload = B64.decode(p).map_err(|_| HandoffError::Malformed)?;
    let sig = B64.decode(s).map_err(|_| HandoffError::Malformed)?;
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("any key length");
    m.update(&payload);
    m.verify_slice(&sig)
        .map_err(|_| HandoffError::BadSignature)?;
    let signed: SignedHandoff =
        serde_json::from_slice(&payload).map_err(|_| HandoffError::Malformed)?;
    if signed.jti.is_empty() || signed.jti.len() > MAX_JTI_BYTES {
        return Err(HandoffError::Malformed);
    }
    let h = signed.handoff;
    if crate::base::text::check_text(&h.display_name, MAX_DISPLAY_NAME_CHARS).is_err() {
        return Err(HandoffError::BadDisplayName);
    }
    if h.exp <= now_unix {
        return Err(HandoffError::Expired);
    }
    if h.exp > now_unix.saturating_add(MAX_HANDOFF_TTL_SECS) {
        return Err(HandoffError::TooLong);
    }
    Ok(h)
}

/// What identifies a handoff for single use: SHA-256 of its signed payload (so re-encodings
/// of one token are one token). None for a malformed token.
pub fn handoff_hash(token: &str) -> Option<Vec<u8>> {
    let (p, _) = token.split_once('.')?;
    let payload = B64.decode(p).ok()?;
    Some(Sha256::digest(&payload).to_vec())
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
            crate::base::fs::write_new_private(&path, &hexed)?;
            Ok(hexed)
        }
        Err(e) => Err(e),
    }
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
            exp: 1_500,
        };
        let t = sign_handoff(b"k", &h);
        assert_eq!(verify_handoff(b"k", &t, 1_000).unwrap(), h);
        assert_eq!(
            verify_handoff(b"other", &t, 1_000).unwrap_err(),
            HandoffError::BadSignature
        );
        assert_eq!(
            verify_handoff(b"k", &t, 1_500).unwrap_err(),
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

    /// A token signed with the right key over any payload (what a careless upstream could send).
    fn signed_raw(payload: &serde_json::Value) -> String {
        let p = serde_json::to_vec(payload).unwrap();
        format!("{}.{}", B64.encode(&p), B64.encode(mac(b"k", &p)))
    }

    #[test]
    fn a_handoff_needs_a_jti_and_a_clean_bounded_display_name() {
        let now = 1_000;
        let ok = serde_json::json!({"user":"r1","display_name":"An","exp":now + 60,"jti":"a"});
        assert!(verify_handoff(b"k", &signed_raw(&ok), now).is_ok());
        let mut no_jti = ok.clone();
        no_jti.as_object_mut().unwrap().remove("jti");
        assert_eq!(
            verify_handoff(b"k", &signed_raw(&no_jti), now).unwrap_err(),
            HandoffError::Malformed
        );
        let mut empty_jti = ok.clone();
        empty_jti["jti"] = "".into();
        assert_eq!(
            verify_handoff(b"k", &signed_raw(&empty_jti), now).unwrap_err(),
            HandoffError::Malformed
        );
        for bad in [
            "x".repeat(20_000),
            "An\0".into(),
            "An \u{202E}sreteeP".into(),
            " ".into(),
        ] {
            let mut v = ok.clone();
            v["display_name"] = bad.into();
            assert_eq!(
                verify_handoff(b"k", &signed_raw(&v), now).unwrap_err(),
                HandoffError::BadDisplayName
            );
        }
        let mut max = ok.clone();
        max["display_name"] = "é".repeat(MAX_DISPLAY_NAME_CHARS).into();
        assert!(verify_handoff(b"k", &signed_raw(&max), now).is_ok());
    }

    #[test]
    fn handoff_lifetime_is_capped_and_tokens_are_distinct() {
        let h = |exp| Handoff {
            user: "r0123456".into(),
            display_name: "An Peeters".into(),
            exp,
        };
        let now = 1_000_000;
        let edge = sign_handoff(b"k", &h(now + MAX_HANDOFF_TTL_SECS));
        assert!(verify_handoff(b"k", &edge, now).is_ok());
        let long = sign_handoff(b"k", &h(now + MAX_HANDOFF_TTL_SECS + 1));
        assert_eq!(
            verify_handoff(b"k", &long, now).unwrap_err(),
            HandoffError::TooLong
        );
        let far = sign_handoff(b"k", &h(i64::MAX));
        assert_eq!(
            verify_handoff(b"k", &far, now).unwrap_err(),
            HandoffError::TooLong
        );
        // Two hand-offs of one student in one second are two tokens, each used once.
        let a = sign_handoff(b"k", &h(now + 60));
        let b = sign_handoff(b"k", &h(now + 60));
        assert_ne!(a, b);
        assert_ne!(handoff_hash(&a), handoff_hash(&b));
        assert_eq!(handoff_hash(&a), handoff_hash(&a.clone()));
        assert_eq!(handoff_hash("garbage"), None);
    }

    /// Everything in `html` that a CSP without 'unsafe-inline' would block or that hides code
    /// in markup: inline `<script>` (one without `src`), `<style>`, `style=` and `on...=`
    /// attributes, `javascript:` URLs.
    fn inline_code(html: &str) -> Vec<String> {
        let lower = html.to_ascii_lowercase();
        let mut found = Vec::new();
        let mut rest = lower.as_str();
        while let Some(open) = rest.find('<') {
            let tag_end = rest[open..].find('>').map_or(rest.len(), |e| open + e + 1);
            let tag = &rest[open..tag_end];
            rest = &rest[tag_end..];
            let name: String = tag[1..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            if name == "script" && !has_attr(tag, "src") {
                found.push(format!("inline script: {tag}"));
            }
            if name == "style" {
                found.push(format!("inline style element: {tag}"));
            }
            if has_attr(tag, "style") {
                found.push(format!("style attribute: {tag}"));
            }
            if event_handler(tag) {
                found.push(format!("event handler attribute: {tag}"));
            }
            if tag.contains("javascript:") {
                found.push(format!("javascript: URL: {tag}"));
            }
        }
        found
    }

    /// Whether a (lower-case) tag has the attribute `name`.
    fn has_attr(tag: &str, name: &str) -> bool {
        tag.match_indices(name).any(|(i, _)| {
            let before = tag[..i].chars().next_back();
            let after = tag[i + name.len()..].trim_start();
            before.is_some_and(char::is_whitespace) && after.starts_with('=')
        })
    }

    /// Whether a (lower-case) tag has an ` on[a-z]+=` attribute.
    fn event_handler(tag: &str) -> bool {
        tag.match_indices("on").any(|(i, _)| {
            let before = tag[..i].chars().next_back();
            let letters = tag[i + 2..]
                .chars()
                .take_while(char::is_ascii_lowercase)
                .count();
            let after = tag[i + 2 + letters..].trim_start();
            before.is_some_and(char::is_whitespace) && letters > 0 && after.starts_with('=')
        })
    }

    #[test]
    fn the_inline_code_check_catches_what_it_should() {
        for bad in [
            "<script>alert(1)</script>",
            "<script type=\"module\">x()</script>",
            "<SCRIPT\n>x()</SCRIPT>",
            "<button onclick=\"x()\">",
            "<body ONLOAD = 'x()'>",
            "<img src=\"a.png\" onerror=x>",
            "<p style=\"color:red\">",
            "<style>p{}</style>",
            "<a href=\"javascript:x()\">",
        ] {
            assert!(!inline_code(bad).is_empty(), "not caught: {bad}");
        }
        for good in [
            "<script src=\"app.js\" defer></script>",
            "<button type=\"button\" id=\"lang-on\" data-t=\"done\">",
            "<p>Hallo on=niets</p>",
            "<link rel=\"stylesheet\" href=\"app.css\">",
        ] {
            assert_eq!(inline_code(good), Vec::<String>::new(), "{good}");
        }
    }

    #[test]
    fn the_page_has_no_inline_script_or_style() {
        assert_eq!(inline_code(INDEX_HTML), Vec::<String>::new());
        assert!(INDEX_HTML.contains(r#"<script src="app.js""#));
        assert!(
            !INDEX_HTML.contains("http://") && !INDEX_HTML.contains("https://"),
            "no third-party assets"
        );
    }
}
