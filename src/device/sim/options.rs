//! The scripting surface of the simulated keys: how the simulated user touches a key
//! ([`Touch`]), the options a test bench plugs or reconfigures a key with ([`SimKeyOptions`],
//! the body of `POST`/`PATCH /v1/sim/keys`), and what it reports about one ([`SimKeyStatus`]).

use serde::{Deserialize, Serialize};

use super::{AttestationMode, CounterMode, SimExtension};

/// How the simulated user touches the key.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Touch {
    /// Touch after this many milliseconds (at most an hour).
    AutoAfterMs(u64),
    /// Nobody touches it: the operation runs into its deadline.
    Never,
    /// The user declines (a key with a "deny" gesture; CTAP2_ERR_OPERATION_DENIED).
    Deny,
}

impl Default for Touch {
    fn default() -> Self {
        Touch::AutoAfterMs(100)
    }
}

/// Options for a new key (`POST /v1/sim/keys`) and changes to one (`PATCH`).
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SimKeyOptions {
    pub touch: Option<Touch>,
    pub counter: Option<CounterMode>,
    /// A PIN to set directly (null clears it), bypassing ClientPIN.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(min_length = 4, max_length = 63)]
    pub pin: Option<Option<String>>,
    pub pin_retries: Option<u32>,
    pub resident_slots: Option<u32>,
    /// `ca` (default) or `self`.
    pub attestation: Option<AttestationMode>,
    /// False: a touch-only key without ClientPIN (no PIN can be set, no UV).
    pub pin_supported: Option<bool>,
    /// The CTAP 2.1 extensions the key implements (default: all, `["credProtect",
    /// "hmac-secret"]`). `[]` makes an older CTAP 2.0 key that ignores extension inputs: no
    /// extension outputs, no ED flag. Without `credProtect` the key reports `FIDO_2_0` only.
    pub extensions: Option<Vec<SimExtension>>,
    /// How long after power-up (plug, replug) the key accepts a factory reset, in ms
    /// (default 10000 per CTAP 2.1; older YubiKeys 5000). More than an hour is taken as an
    /// hour.
    pub reset_window_ms: Option<u64>,
}

fn double_option<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<String>>, D::Error> {
    Ok(Some(Option::<String>::deserialize(d)?))
}

/// What `/v1/sim/keys` shows about a key.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SimKeyStatus {
    pub id: String,
    pub plugged: bool,
    pub aaguid: uuid::Uuid,
    pub model: &'static str,
    pub touch: Touch,
    pub counter: CounterMode,
    pub sign_counter: u32,
    pub pin_set: bool,
    pub pin_retries: u32,
    pub discoverable_credentials: usize,
    pub resident_slots: u32,
    pub attestation: AttestationMode,
    pub pin_supported: bool,
    /// The extensions the key implements (as in its GetInfo).
    pub extensions: Vec<SimExtension>,
    pub cloned_from: Option<String>,
}
