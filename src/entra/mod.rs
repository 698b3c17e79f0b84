//! Microsoft Entra ID: the adapter to the identity platform (OAuth 2.0 client credentials) and
//! Microsoft Graph (passkey provisioning on a user's behalf, phone methods, Temporary Access
//! Pass). The only module besides the SMS providers that names reqwest; the rest of keygate
//! speaks the types below.
//!
//! Contract of [`EntraClient`]:
//! - every call is bounded by `[entra] request_timeout_ms`; idempotent calls (token, GET,
//!   DELETE) retry on 5xx/timeouts with backoff up to `max_retries`; POSTs never retry;
//! - the Graph token is cached until shortly before it expires and never logged;
//! - Graph's answers map onto [`EntraError`] (one stable API code each).
//!
//! Files: this one holds the contract; `token` the client-credentials token and its cache,
//! `cert` the certificate credential (PEM, client assertion), `http` the transport (timeouts,
//! retries, logging), `graph` the Graph operations and the mapping of Graph's refusals,
//! `parse` Graph's JSON into these types.

mod cert;
mod error;
mod graph;
mod http;
mod parse;
mod token;

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use crate::base::clock::Clock;
use crate::config::{EntraConfig, Secret};

pub use error::EntraError;

/// The most characters of a passkey's name Entra takes (DSInternals.Passkeys, which wraps this
/// API, enforces 1-30 on `displayName`).
pub const MAX_DISPLAY_NAME_CHARS: usize = 30;

/// Graph's `fido2Methods/creationOptions` answer, parsed into what a WebAuthn client needs.
/// Everything comes from the answer; nothing is hardcoded (rp id is `login.microsoft.com` in
/// real tenants, but that is Graph's to say).
#[derive(Debug, Clone, PartialEq)]
pub struct CreationOptions {
    /// `publicKey.challenge` exactly as received (base64url): clientDataJSON carries it as is.
    pub challenge: String,
    /// `challengeTimeoutDateTime`: the registration must reach Graph before this.
    pub expires_at: OffsetDateTime,
    pub rp_id: String,
    pub rp_name: String,
    /// `publicKey.user.id`, decoded.
    pub user_id: Vec<u8>,
    pub user_name: String,
    pub user_display_name: String,
    /// `pubKeyCredParams` algorithms in Graph's order (e.g. -7, -257).
    pub algorithms: Vec<i64>,
    /// `excludeCredentials` ids, decoded: the user's passkeys already registered.
    pub exclude_credentials: Vec<Vec<u8>>,
    /// `authenticatorSelection.requireResidentKey` / `residentKey == "required"`.
    pub resident_key: bool,
    /// `authenticatorSelection.userVerification` (`required`, `preferred`, `discouraged`).
    pub user_verification: String,
    /// `extensions.credentialProtectionPolicy` as a CTAP level (1..=3), if asked.
    pub cred_protect: Option<u8>,
    /// `extensions.enforceCredentialProtectionPolicy`.
    pub enforce_cred_protect: bool,
    /// `extensions.hmacCreateSecret`.
    pub hmac_secret: bool,
    /// `attestation` conveyance (`direct`, `none`, ...).
    pub attestation: String,
}

impl CreationOptions {
    /// The origin a WebAuthn client writes for these options: `https://{rp id}`.
    pub fn origin(&self) -> String {
        format!("https://{}", self.rp_id)
    }

    /// The clientDataJSON of a registration for these options, in the member order the
    /// WebAuthn spec serialises (`type`, `challenge`, `origin`, `crossOrigin`), the challenge
    /// exactly as Graph sent it.
    pub fn client_data_json(&self) -> Vec<u8> {
        let string = |s: &str| serde_json::Value::from(s).to_string();
        format!(
            r#"{{"type":"webauthn.create","challenge":{},"origin":{},"crossOrigin":false}}"#,
            string(&self.challenge),
            string(&self.origin())
        )
        .into_bytes()
    }

    /// Whether `credential_id` is one of the user's passkeys already (`excludeCredentials`).
    pub fn excludes(&self, credential_id: &[u8]) -> bool {
        self.exclude_credentials
            .iter()
            .any(|c| c.as_slice() == credential_id)
    }
}

/// What keygate posts to `fido2Methods` (base64url without padding on the wire).
#[derive(Debug, Clone, PartialEq)]
pub struct NewFido2Method {
    pub display_name: String,
    pub credential_id: Vec<u8>,
    pub client_data_json: Vec<u8>,
    pub attestation_object: Vec<u8>,
    /// WebAuthn client extension results (`{"hmacCreateSecret": true, "credProtect": 1}`).
    pub client_extension_results: serde_json::Value,
}

impl NewFido2Method {
    /// The client extension results keygate posts: `hmacCreateSecret` (the WebAuthn output of
    /// hmac-secret) and `credProtect` (the level the key reported), from the authenticator's
    /// extension outputs.
    pub fn extension_results(cred_protect: Option<u8>, hmac_secret: bool) -> serde_json::Value {
        let mut results = serde_json::Map::new();
        results.insert("hmacCreateSecret".into(), hmac_secret.into());
        if let Some(level) = cred_protect {
            results.insert("credProtect".into(), level.into());
        }
        serde_json::Value::Object(results)
    }
}

/// A passkey (fido2AuthenticationMethod) as Graph describes it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Fido2Method {
    pub id: String,
    pub display_name: Option<String>,
    pub aaguid: Option<String>,
    pub model: Option<String>,
    /// `attested`, `notAttested`, ...
    pub attestation_level: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub created_at: Option<OffsetDateTime>,
}

/// A phone method (phoneAuthenticationMethod).
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct PhoneMethod {
    pub id: String,
    /// Entra's format: `+32 475345678`.
    pub phone_number: String,
    /// `mobile`, `alternateMobile`, `office`.
    pub phone_type: String,
}

/// A Temporary Access Pass as issued; the pass itself is shown once and never stored or logged.
#[derive(Debug, Clone)]
pub struct TemporaryAccessPass {
    pub id: String,
    pub pass: Secret,
    pub lifetime_minutes: u32,
    pub usable_once: bool,
    pub starts_at: Option<OffsetDateTime>,
}

/// The Entra adapter. Cheap to clone (shared token cache and HTTP client).
#[derive(Clone)]
pub struct EntraClient {
    cfg: Arc<EntraConfig>,
    clock: Arc<dyn Clock>,
    inner: Arc<Inner>,
}

struct Inner {
    http: http::Http,
    tokens: token::TokenSource,
    /// `[entra] graph_url`, parsed.
    graph_base: url::Url,
}

impl std::fmt::Debug for EntraClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntraClient")
            .field("tenant_id", &self.cfg.tenant_id)
            .field("graph_url", &self.cfg.graph_url)
            .finish_non_exhaustive()
    }
}

/// Whether the PEM file at `path` holds a certificate and its RSA private key, usable as the
/// app registration's credential (for `check-config` and start-up).
pub fn check_client_certificate(path: &std::path::Path) -> Result<(), String> {
    cert::ClientCertificate::load(path).map(|_| ())
}

/// Refuse an unusable `[entra]` (config validation has said why already; this logs it again).
fn not_configured(detail: &str) -> EntraError {
    tracing::error!(target: "keygate::entra", "[entra] is not usable: {detail}");
    EntraError::NotConfigured
}

impl EntraClient {
    /// Check `cfg` (URLs, tenant, client id, exactly one credential) and load the certificate
    /// credential if there is one. No network traffic: the first call fetches the token.
    pub fn new(cfg: &EntraConfig, clock: Arc<dyn Clock>) -> Result<Self, EntraError> {
        crate::config::validate_entra_section(cfg).map_err(|e| not_configured(&e))?;
        let authority = crate::config::entra_endpoint("entra.authority_url", &cfg.authority_url)
            .map_err(|e| not_configured(&e))?;
        let graph_base = crate::config::entra_endpoint("entra.graph_url", &cfg.graph_url)
            .map_err(|e| not_configured(&e))?;
        let credential = match &cfg.client_certificate {
            Some(path) => token::Credential::Certificate(Box::new(
                cert::ClientCertificate::load(path).map_err(EntraError::AuthFailed)?,
            )),
            None => token::Credential::Secret(cfg.client_secret.clone()),
        };
        let token_endpoint = format!(
            "{}/{}/oauth2/v2.0/token",
            authority.as_str().trim_end_matches('/'),
            cfg.tenant_id
        );
        let scope = format!("{}/.default", graph_base.origin().ascii_serialization());
        let http = http::Http::new(
            Duration::from_millis(cfg.request_timeout_ms),
            cfg.max_retries,
            Duration::from_millis(cfg.retry_base_ms),
        )
        .map_err(EntraError::Unavailable)?;
        Ok(EntraClient {
            cfg: Arc::new(cfg.clone()),
            clock,
            inner: Arc::new(Inner {
                http,
                tokens: token::TokenSource::new(
                    token_endpoint,
                    cfg.client_id.clone(),
                    scope,
                    credential,
                ),
                graph_base,
            }),
        })
    }

    /// The client counting its calls into the daemon's `metrics` (the first set stays).
    pub fn with_metrics(self, metrics: crate::metrics::Metrics) -> Self {
        let _ = self.inner.http.metrics.set(metrics);
        self
    }

    /// `[entra] upn_template` applied to a keygate user name.
    pub fn upn_for(&self, user: &str) -> String {
        self.cfg.upn_template.replace("{user}", user)
    }

    /// `[entra] display_name_template` with `{model}`, `{date}` (today, YYYY-MM-DD) and `{user}`,
    /// at most [`MAX_DISPLAY_NAME_CHARS`] characters (the model name is shortened first).
    pub fn display_name_for(&self, model: Option<&str>, user: &str) -> String {
        let today = self.clock.now().date();
        let render = |model: &str| {
            self.cfg
                .display_name_template
                .replace("{model}", model)
                .replace("{date}", &today.to_string())
                .replace("{user}", user)
        };
        let model = model.unwrap_or("Security key").trim();
        let full = render(model);
        let excess = full.chars().count().saturating_sub(MAX_DISPLAY_NAME_CHARS);
        if excess == 0 {
            return full;
        }
        let kept = model.chars().count().saturating_sub(excess);
        let shorter = render(model.chars().take(kept).collect::<String>().trim_end());
        shorter
            .chars()
            .take(MAX_DISPLAY_NAME_CHARS)
            .collect::<String>()
            .trim()
            .to_string()
    }

    pub fn sync_phones(&self) -> bool {
        self.cfg.sync_phones
    }

    /// GET `users/{upn}/authentication/fido2Methods/creationOptions`.
    pub async fn creation_options(&self, upn: &str) -> Result<CreationOptions, EntraError> {
        self.do_creation_options(upn).await
    }

    /// POST `users/{upn}/authentication/fido2Methods` (never retried).
    pub async fn register_fido2(
        &self,
        upn: &str,
        method: &NewFido2Method,
    ) -> Result<Fido2Method, EntraError> {
        self.do_register_fido2(upn, method).await
    }

    /// GET `users/{upn}/authentication/fido2Methods` (all pages).
    pub async fn list_fido2(&self, upn: &str) -> Result<Vec<Fido2Method>, EntraError> {
        self.do_list_fido2(upn).await
    }

    /// DELETE `users/{upn}/authentication/fido2Methods/{id}`. A method already gone is Ok.
    pub async fn delete_fido2(&self, upn: &str, id: &str) -> Result<(), EntraError> {
        self.do_delete_fido2(upn, id).await
    }

    /// POST `users/{upn}/authentication/phoneMethods {"phoneNumber", "phoneType": "mobile"}`.
    /// `e164` is `+32475345678`; the adapter writes Entra's `+32 475345678`. When the user
    /// already has a mobile method with this number, returns it.
    pub async fn add_mobile_phone(&self, upn: &str, e164: &str) -> Result<PhoneMethod, EntraError> {
        self.do_add_mobile_phone(upn, e164).await
    }

    /// POST `users/{upn}/authentication/temporaryAccessPassMethods`.
    pub async fn create_temporary_access_pass(
        &self,
        upn: &str,
        lifetime_minutes: u32,
        usable_once: bool,
    ) -> Result<TemporaryAccessPass, EntraError> {
        self.do_create_temporary_access_pass(upn, lifetime_minutes, usable_once)
            .await
    }
}
