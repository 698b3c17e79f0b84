//! The Graph access token: OAuth 2.0 client credentials at
//! `{authority_url}/{tenant_id}/oauth2/v2.0/token` with a client secret or a certificate
//! (private_key_jwt), scope `{graph origin}/.default`. Cached until shortly before it expires
//! (by the injected clock); one request in flight at a time (callers that arrive meanwhile wait
//! for its token); dropped and fetched anew once when Graph answers 401. The token, the secret
//! and the assertion are never logged; the identity platform's refusal is logged by its AADSTS
//! code and text.

use serde_json::Value;
use tokio::sync::Mutex;

use super::cert::ClientCertificate;
use super::http::{CallName, Http, Retry};
use super::parse::sanitize;
use super::EntraError;
use crate::base::clock::Clock;
use crate::config::Secret;

/// A token is refreshed this long before it expires (or halfway, for short-lived ones).
const REFRESH_MARGIN_MS: i64 = 2 * 60 * 1000;

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

const TOKEN_CALL: CallName = CallName {
    method: "POST",
    path: "{tenant}/oauth2/v2.0/token",
};

pub(crate) enum Credential {
    Secret(Secret),
    Certificate(Box<ClientCertificate>),
}

struct Cached {
    token: Secret,
    refresh_at_ms: i64,
}

pub(crate) struct TokenSource {
    /// The token endpoint (also the assertion's audience).
    endpoint: String,
    client_id: String,
    scope: String,
    credential: Credential,
    cache: Mutex<Option<Cached>>,
}

impl TokenSource {
    pub fn new(endpoint: String, client_id: String, scope: String, credential: Credential) -> Self {
        TokenSource {
            endpoint,
            client_id,
            scope,
            credential,
            cache: Mutex::new(None),
        }
    }

    /// A token valid for a while yet: the cached one, or a new one.
    pub async fn token(&self, http: &Http, clock: &dyn Clock) -> Result<Secret, EntraError> {
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.as_ref().filter(|c| clock.now_ms() < c.refresh_at_ms) {
            return Ok(c.token.clone());
        }
        let fresh = self.fetch(http, clock).await?;
        let token = fresh.token.clone();
        *cache = Some(fresh);
        Ok(token)
    }

    /// Graph refused `rejected` (401): forget it, unless another caller already replaced it,
    /// and return a token fetched anew.
    pub async fn after_rejection(
        &self,
        http: &Http,
        clock: &dyn Clock,
        rejected: &Secret,
    ) -> Result<Secret, EntraError> {
        {
            let mut cache = self.cache.lock().await;
            if cache.as_ref().is_some_and(|c| c.token == *rejected) {
                *cache = None;
            }
        }
        self.token(http, clock).await
    }

    async fn fetch(&self, http: &Http, clock: &dyn Clock) -> Result<Cached, EntraError> {
        let mut base: Vec<(&str, String)> = vec![
            ("grant_type", "client_credentials".into()),
            ("client_id", self.client_id.clone()),
            ("scope", self.scope.clone()),
        ];
        if let Credential::Secret(s) = &self.credential {
            base.push(("client_secret", s.expose().to_string()));
        }
        // A certificate's assertion is signed per attempt: each carries its own jti and time.
        let assertion = || match &self.credential {
            Credential::Certificate(cert) => cert
                .assertion(&self.client_id, &self.endpoint, clock.now_ms() / 1000)
                .map(Some),
            Credential::Secret(_) => Ok(None),
        };
        assertion().map_err(EntraError::AuthFailed)?;
        let answer = http
            .send(TOKEN_CALL, Retry::Idempotent, |c| {
                let mut form = base.clone();
                if let Ok(Some(a)) = assertion() {
                    form.push(("client_assertion_type", JWT_BEARER.into()));
                    form.push(("client_assertion", a));
                }
                c.post(&self.endpoint).form(&form)
            })
            .await?;
        let body: Value = serde_json::from_str(&answer.body).unwrap_or(Value::Null);
        match answer.status {
            200 => {
                let token = body["access_token"]
                    .as_str()
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| {
                        EntraError::Unavailable("token endpoint answered without a token".into())
                    })?;
                let lifetime_ms = body["expires_in"]
                    .as_i64()
                    .or_else(|| body["expires_in"].as_str().and_then(|s| s.parse().ok()))
                    .unwrap_or(0)
                    .max(0)
                    * 1000;
                let margin = REFRESH_MARGIN_MS.min(lifetime_ms / 2);
                Ok(Cached {
                    token: Secret::new(token),
                    refresh_at_ms: clock.now_ms() + lifetime_ms - margin,
                })
            }
            429 => Err(EntraError::Throttled {
                retry_after_secs: answer.retry_after_secs(),
            }),
            500..=599 => Err(EntraError::Unavailable(format!(
                "token endpoint answered HTTP {}",
                answer.status
            ))),
            status => {
                let error = sanitize(body["error"].as_str().unwrap_or("unknown_error"));
                let description = sanitize(body["error_description"].as_str().unwrap_or(""));
                tracing::warn!(
                    target: "keygate::entra",
                    status,
                    error = %error,
                    description = %description,
                    "the identity platform refused keygate's client credentials"
                );
                Err(EntraError::AuthFailed(format!("{error}: {description}")))
            }
        }
    }
}
