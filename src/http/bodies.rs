//! The JSON envelopes the routes answer: one typed struct per response shape, each deriving
//! its OpenAPI schema, so that `/openapi.json` is derived from what the handlers serialise.
//! Contract: each serialises to exactly the JSON the API has always answered (the kiosk page
//! and the tests read these members by name).

use serde::Serialize;
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::RefOr;
use utoipa::ToSchema;

use crate::base::error::ErrorCode;
use crate::ceremony::CredentialView;
use crate::device::actor::DeviceStatus;
use crate::device::sim::SimKeyStatus;
use crate::sms::dispatch::ProviderHealth;
use crate::sms::providers::SimMessage;
use crate::sms::{ChallengeView, PhoneView};
use crate::store::{AuditEvent, ResetReceipt, UserRecord};

/// Every 4xx and 5xx keygate answers: `{"error":{"code","message",...}}`.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorObject,
}

/// The error object: a stable code (which fixes the status), a message for people, and
/// per-code details (`retries_left`, `attempts_left`, `retry_after`, `devices`, ...).
#[derive(Serialize, ToSchema)]
pub struct ErrorObject {
    pub code: ErrorCodeName,
    pub message: String,
    #[serde(flatten)]
    #[schema(ignore)]
    pub details: serde_json::Map<String, serde_json::Value>,
}

/// One of keygate's stable error codes (`base::error::ErrorCode`).
#[derive(Serialize)]
pub struct ErrorCodeName(pub &'static str);

impl utoipa::PartialSchema for ErrorCodeName {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(SchemaType::new(Type::String))
            .enum_values(Some(ErrorCode::ALL.iter().map(|c| c.as_str())))
            .description(Some("A stable error code; each has one HTTP status"))
            .into()
    }
}

impl ToSchema for ErrorCodeName {}

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: &'static str,
    /// `ok`; `storage_full` while the database's disk is full (writes answer
    /// `503 store_unavailable` until space returns; reads go on); `unavailable` while the
    /// campus store (PostgreSQL) does not answer (requests that need it answer
    /// `503 store_unavailable`; keygate reconnects by itself).
    #[schema(pattern = "^(ok|storage_full|unavailable)$")]
    pub store: &'static str,
    pub version: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct DeviceList {
    pub devices: Vec<DeviceStatus>,
}

/// The key after a PIN change, and the PIN keygate generated (shown this once).
#[derive(Serialize, ToSchema)]
pub struct DeviceBody {
    pub device: DeviceStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generated_pin: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct UserPage {
    pub users: Vec<UserRecord>,
    /// The cursor of the following page (`after`); null on the last page.
    pub next: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct UserDetail {
    pub user: UserRecord,
    pub credentials: Vec<CredentialView>,
}

#[derive(Serialize, ToSchema)]
pub struct ReceiptBody {
    pub receipt: ResetReceipt,
    /// With `[entra]`: the user's Microsoft Entra ID methods are separate and untouched by
    /// this reset (`/v1/users/{user}/entra/methods`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entra: Option<&'static str>,
}

#[derive(Serialize, ToSchema)]
pub struct CredentialList {
    pub credentials: Vec<CredentialView>,
}

#[derive(Serialize, ToSchema)]
pub struct CredentialBody {
    pub credential: CredentialView,
}

#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    pub events: Vec<AuditEvent>,
}

#[derive(Serialize, ToSchema)]
pub struct SimKeyList {
    pub keys: Vec<SimKeyStatus>,
}

#[derive(Serialize, ToSchema)]
pub struct SimKeyBody {
    pub key: SimKeyStatus,
}

#[derive(Serialize, ToSchema)]
pub struct PhoneAdded {
    pub phone: PhoneView,
    /// The verification code sent to the new phone.
    pub challenge: ChallengeView,
}

#[derive(Serialize, ToSchema)]
pub struct PhoneList {
    pub phones: Vec<PhoneView>,
}

#[derive(Serialize, ToSchema)]
pub struct Verified {
    /// Always `true` (a wrong code is a `wrong_code` error).
    pub verified: bool,
    pub challenge: ChallengeView,
}

#[derive(Serialize, ToSchema)]
pub struct ProviderList {
    pub providers: Vec<ProviderHealth>,
}

#[derive(Serialize, ToSchema)]
pub struct SimInboxBody {
    /// Newest first.
    pub messages: Vec<SimMessage>,
}

/// What the kiosk page needs to know about the daemon.
#[derive(Serialize, ToSchema)]
pub struct KioskConfigView {
    pub inactivity_secs: u64,
    pub touch_timeout_secs: u64,
    /// The SMS factor is available.
    pub sms: bool,
    pub simulate: bool,
    /// A reverse proxy names the signed-in student (`/v1/kiosk/whoami`).
    pub trusted_user_header: bool,
    /// Where the page enrolls keys (`[kiosk] enroll_target`): send it as `target`.
    pub enroll_target: crate::config::EnrollTarget,
    /// `[entra]` is configured (Entra enrollments and "whose key is this?" work).
    pub entra: bool,
}

/// The student a verified handoff names.
#[derive(Serialize, ToSchema)]
pub struct HandoffView {
    pub user: String,
    pub display_name: String,
    /// Unix seconds when the handoff expires.
    pub expires_at: i64,
}

/// The student the trusted header names.
#[derive(Serialize, ToSchema)]
pub struct WhoAmI {
    pub user: String,
    pub display_name: String,
}

/// `{user}` in a path: the one user-name rule (documentation only; `ApiPath` extracts it).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct UserPath {
    /// User name
    #[param(pattern = r"^(?!\.\.?$)[A-Za-z0-9._@+-]{1,128}$")]
    user: String,
}

/// `{user}` and a credential `{id}` in a path (documentation only).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct CredentialPath {
    /// User name
    #[param(pattern = r"^(?!\.\.?$)[A-Za-z0-9._@+-]{1,128}$")]
    user: String,
    /// Credential id, base64url without padding
    #[param(
        pattern = r"^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-][AQgw]|[A-Za-z0-9_-]{2}[AEIMQUYcgkosw048])?$",
        min_length = 2,
        max_length = 1364
    )]
    id: String,
}

/// One Server-Sent Event of a `.../events` stream, as a client's SSE parser hands it over:
/// `event` names the state reached, `data` is the whole view at that moment as JSON text.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct SseEvent {
    /// The state reached (`waiting_touch`, `needs_pin`, `done`, ...).
    pub event: String,
    /// The view (ceremony or reset) as JSON text.
    pub data: String,
}
