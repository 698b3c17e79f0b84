//! API tokens. A token is `kg_<id>_<secret>`: the id finds the row, the secret (32 bytes from
//! the OS CSPRNG) is stored only as its SHA-256 and compared in constant time. A high-entropy
//! secret needs no slow hash.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::store::{NewAudit, Store, StoreError, TokenRecord};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Ceremonies and devices.
    Kiosk,
    /// Everything, including users, credentials, audit and quarantine release.
    Admin,
    /// `GET /metrics` only (a Prometheus scraper's token).
    Metrics,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Kiosk => "kiosk",
            Role::Admin => "admin",
            Role::Metrics => "metrics",
        }
    }
    fn parse(s: &str) -> Option<Role> {
        match s {
            "kiosk" => Some(Role::Kiosk),
            "admin" => Some(Role::Admin),
            "metrics" => Some(Role::Metrics),
            _ => None,
        }
    }
    /// Whether this role may do what `needed` may: admin may do all, the others only their own
    /// (a metrics token reads `/metrics` and nothing else).
    pub fn allows(self, needed: Role) -> bool {
        self == Role::Admin || self == needed
    }
}

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub token_id: String,
    pub role: Role,
    /// The token is a kiosk page session (`keygate kiosk-url`), whose requests are bound to
    /// one student.
    pub page_session: bool,
}

impl Caller {
    /// The audit log's actor string.
    pub fn actor(&self) -> String {
        format!("token:{}", self.token_id)
    }
}

fn random_b64(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

/// Create a token; returns the full token text (shown once, never stored).
pub async fn create_token(
    store: &Store,
    role: Role,
    label: Option<&str>,
) -> Result<String, StoreError> {
    // The id is the part before the first '_' of the token, so it must not contain one.
    let id: String = random_b64(9).replace(['_', '-'], "x");
    let secret = random_b64(32);
    let hash = Sha256::digest(secret.as_bytes()).to_vec();
    store
        .insert_token(
            &TokenRecord {
                id: id.clone(),
                role: role.as_str().into(),
                hash,
                label: label.map(str::to_string),
                created_at: store.now(),
                revoked: false,
            },
            &NewAudit::new("token.created", "cli").detail(
                serde_json::json!({ "token_id": id, "role": role.as_str(), "label": label }),
            ),
        )
        .await?;
    Ok(format!("kg_{id}_{secret}"))
}

/// Check a presented token. None for anything malformed, unknown, revoked or wrong.
pub fn verify_token(store: &Store, presented: &str) -> Result<Option<Caller>, StoreError> {
    let Some(rest) = presented.strip_prefix("kg_") else {
        return Ok(None);
    };
    let Some((id, secret)) = rest.split_once('_') else {
        return Ok(None);
    };
    if id.is_empty() || id.len() > 32 || secret.is_empty() || secret.len() > 128 {
        return Ok(None);
    }
    let Some((rec, page_session_expiry)) = store.token_for_auth(id)? else {
        // Same work as a real comparison, so that unknown ids are not faster.
        let _ = Sha256::digest(secret.as_bytes())
            .as_slice()
            .ct_eq(&[0u8; 32]);
        return Ok(None);
    };
    let presented_hash = Sha256::digest(secret.as_bytes());
    let ok: bool = presented_hash.as_slice().ct_eq(&rec.hash).into();
    if !ok || rec.revoked {
        return Ok(None);
    }
    // A kiosk page session (`keygate kiosk-url`) also ends at its server-side expiry.
    if let Some(expires_at) = page_session_expiry {
        if expires_at <= store.now().unix_timestamp() {
            return Ok(None);
        }
    }
    Ok(Role::parse(&rec.role).map(|role| Caller {
        token_id: rec.id,
        role,
        page_session: page_session_expiry.is_some(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tokens_verify_and_fail_closed() {
        let s = Store::open_in_memory().unwrap();
        let t = create_token(&s, Role::Kiosk, Some("kiosk 1"))
            .await
            .unwrap();
        let c = verify_token(&s, &t).unwrap().unwrap();
        assert_eq!(c.role, Role::Kiosk);
        let mut wrong = t.clone();
        wrong.pop();
        wrong.push('A');
        if wrong == t {
            wrong.pop();
            wrong.push('B');
        }
        assert!(verify_token(&s, &wrong).unwrap().is_none());
        assert!(verify_token(&s, "kg_nope_x").unwrap().is_none());
        assert!(verify_token(&s, "Bearer").unwrap().is_none());
        assert!(Role::Admin.allows(Role::Kiosk));
        assert!(!Role::Kiosk.allows(Role::Admin));
        assert!(Role::Admin.allows(Role::Metrics));
        assert!(!Role::Metrics.allows(Role::Kiosk));
        assert!(!Role::Metrics.allows(Role::Admin));
        assert!(!Role::Kiosk.allows(Role::Metrics));
        let m = create_token(&s, Role::Metrics, Some("prometheus"))
            .await
            .unwrap();
        assert_eq!(verify_token(&s, &m).unwrap().unwrap().role, Role::Metrics);
    }
}
