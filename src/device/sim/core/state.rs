//! What a simulated key keeps across power cycles (a real key's flash), as written to its JSON
//! file. Fields added after the first release carry serde defaults, so files written by an
//! older keygate still load (and then get the newer defaults).

use serde::{Deserialize, Serialize};

use super::extensions::{all_extensions, SimExtension};
use super::{AttestationMode, CounterMode, MAX_PIN_RETRIES};

/// A discoverable credential. Its credProtect level and hmac-secret flag live in its id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResidentCredential {
    pub rp_id: String,
    #[serde(with = "hex_bytes")]
    pub user_id: Vec<u8>,
    pub user_name: String,
    pub user_display_name: String,
    #[serde(with = "hex_bytes")]
    pub credential_id: Vec<u8>,
    /// Creation order; newest first when listed.
    pub serial: u64,
}

/// What persists across power cycles (a real key's flash).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyState {
    #[serde(with = "hex_bytes")]
    pub master: Vec<u8>,
    pub rng_counter: u64,
    pub sign_counter: u32,
    pub counter_mode: CounterMode,
    #[serde(with = "opt_hex_bytes", default)]
    pub pin_hash: Option<Vec<u8>>,
    pub pin_retries: u32,
    pub resident: Vec<ResidentCredential>,
    pub resident_slots: u32,
    #[serde(default)]
    pub attestation: AttestationMode,
    /// False for a key without ClientPIN support (no PIN, no UV: touch only).
    #[serde(default = "yes")]
    pub pin_supported: bool,
    /// The extensions this key implements (GetInfo 0x02). Files from before extensions were
    /// simulated load with all of them.
    #[serde(default = "all_extensions")]
    pub extensions: Vec<SimExtension>,
    /// The PIN policy of authenticatorConfig (see `config`).
    #[serde(default)]
    pub pin_policy: PinPolicyState,
    /// How long after power-up the key accepts authenticatorReset (CTAP 2.1 §6.6: 10 s;
    /// older YubiKeys 5 s).
    #[serde(default = "default_reset_window_ms")]
    pub reset_window_ms: u64,
}

/// minPINLength and forcePINChange (CTAP 2.1 §6.11.4), and the length of the current PIN in
/// code points (a key keeps it to force a change when the minimum rises above it).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PinPolicyState {
    pub min_pin_length: u32,
    pub force_pin_change: bool,
    pub pin_length: Option<u32>,
}

impl Default for PinPolicyState {
    fn default() -> Self {
        PinPolicyState {
            min_pin_length: 4,
            force_pin_change: false,
            pin_length: None,
        }
    }
}

/// CTAP 2.1 §6.6's power-up window for authenticatorReset.
pub const DEFAULT_RESET_WINDOW_MS: u64 = 10_000;

fn default_reset_window_ms() -> u64 {
    DEFAULT_RESET_WINDOW_MS
}

fn yes() -> bool {
    true
}

impl KeyState {
    pub fn new(master: [u8; 32]) -> Self {
        KeyState {
            master: master.to_vec(),
            rng_counter: 0,
            sign_counter: 0,
            counter_mode: CounterMode::Increment,
            pin_hash: None,
            pin_retries: MAX_PIN_RETRIES,
            resident: Vec::new(),
            resident_slots: 25,
            attestation: AttestationMode::Ca,
            pin_supported: true,
            extensions: all_extensions(),
            pin_policy: PinPolicyState::default(),
            reset_window_ms: DEFAULT_RESET_WINDOW_MS,
        }
    }

    pub fn supports(&self, extension: SimExtension) -> bool {
        self.extensions.contains(&extension)
    }
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(b))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        hex::decode(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

mod opt_hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(b: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match b {
            Some(b) => s.serialize_some(&hex::encode(b)),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|h| hex::decode(h).map_err(serde::de::Error::custom))
            .transpose()
    }
}
