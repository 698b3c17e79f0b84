//! CTAP status codes, parsed once from the wire into an enum.
//!
//! Source: FIDO Client to Authenticator Protocol v2.1 (Proposed Standard, 2021-06-15),
//! section 8.2 "Status codes" (section 6.3 in CTAP 2.0). The numeric value is the first byte
//! of every CTAPHID_CBOR response; 0x00 is success.

use serde::Serialize;

macro_rules! ctap_status {
    ($( $(#[$doc:meta])* $name:ident = $val:literal, $spec:literal; )*) => {
        /// A CTAP1/CTAP2 status byte (CTAP 2.1 §8.2).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        pub enum CtapStatus {
            $( $(#[$doc])* $name, )*
            /// 0xE1..=0xEF extension-specific, 0xF0..=0xFF vendor-specific, or unassigned.
            Unknown(u8),
        }

        impl CtapStatus {
            pub fn from_byte(b: u8) -> Self {
                match b {
                    $( $val => CtapStatus::$name, )*
                    other => CtapStatus::Unknown(other),
                }
            }
            pub fn to_byte(self) -> u8 {
                match self {
                    $( CtapStatus::$name => $val, )*
                    CtapStatus::Unknown(b) => b,
                }
            }
            /// The spec's name, e.g. `CTAP2_ERR_PIN_INVALID`.
            pub fn spec_name(self) -> &'static str {
                match self {
                    $( CtapStatus::$name => $spec, )*
                    CtapStatus::Unknown(_) => "CTAP_ERR_UNASSIGNED",
                }
            }
        }
    };
}

ctap_status! {
    Ok = 0x00, "CTAP2_OK";
    InvalidCommand = 0x01, "CTAP1_ERR_INVALID_COMMAND";
    InvalidParameter = 0x02, "CTAP1_ERR_INVALID_PARAMETER";
    InvalidLength = 0x03, "CTAP1_ERR_INVALID_LENGTH";
    InvalidSeq = 0x04, "CTAP1_ERR_INVALID_SEQ";
    Timeout = 0x05, "CTAP1_ERR_TIMEOUT";
    ChannelBusy = 0x06, "CTAP1_ERR_CHANNEL_BUSY";
    LockRequired = 0x0A, "CTAP1_ERR_LOCK_REQUIRED";
    InvalidChannel = 0x0B, "CTAP1_ERR_INVALID_CHANNEL";
    CborUnexpectedType = 0x11, "CTAP2_ERR_CBOR_UNEXPECTED_TYPE";
    InvalidCbor = 0x12, "CTAP2_ERR_INVALID_CBOR";
    MissingParameter = 0x14, "CTAP2_ERR_MISSING_PARAMETER";
    LimitExceeded = 0x15, "CTAP2_ERR_LIMIT_EXCEEDED";
    /// CTAP 2.0 only; reserved in 2.1.
    UnsupportedExtension = 0x16, "CTAP2_ERR_UNSUPPORTED_EXTENSION";
    FpDatabaseFull = 0x17, "CTAP2_ERR_FP_DATABASE_FULL";
    LargeBlobStorageFull = 0x18, "CTAP2_ERR_LARGE_BLOB_STORAGE_FULL";
    /// A credential of the excludeList is present on the key (after user presence).
    CredentialExcluded = 0x19, "CTAP2_ERR_CREDENTIAL_EXCLUDED";
    Processing = 0x21, "CTAP2_ERR_PROCESSING";
    InvalidCredential = 0x22, "CTAP2_ERR_INVALID_CREDENTIAL";
    UserActionPending = 0x23, "CTAP2_ERR_USER_ACTION_PENDING";
    OperationPending = 0x24, "CTAP2_ERR_OPERATION_PENDING";
    NoOperations = 0x25, "CTAP2_ERR_NO_OPERATIONS";
    UnsupportedAlgorithm = 0x26, "CTAP2_ERR_UNSUPPORTED_ALGORITHM";
    /// The user declined (e.g. a deny button, or a cancelled biometric prompt).
    OperationDenied = 0x27, "CTAP2_ERR_OPERATION_DENIED";
    KeyStoreFull = 0x28, "CTAP2_ERR_KEY_STORE_FULL";
    NotBusy = 0x29, "CTAP2_ERR_NOT_BUSY";
    NoOperationPending = 0x2A, "CTAP2_ERR_NO_OPERATION_PENDING";
    UnsupportedOption = 0x2B, "CTAP2_ERR_UNSUPPORTED_OPTION";
    InvalidOption = 0x2C, "CTAP2_ERR_INVALID_OPTION";
    /// The operation was cancelled by CTAPHID_CANCEL.
    KeepaliveCancel = 0x2D, "CTAP2_ERR_KEEPALIVE_CANCEL";
    NoCredentials = 0x2E, "CTAP2_ERR_NO_CREDENTIALS";
    /// The key's own user-presence timeout elapsed (typically ~30 s on hardware).
    UserActionTimeout = 0x2F, "CTAP2_ERR_USER_ACTION_TIMEOUT";
    NotAllowed = 0x30, "CTAP2_ERR_NOT_ALLOWED";
    PinInvalid = 0x31, "CTAP2_ERR_PIN_INVALID";
    /// Retries counter reached 0: only authenticatorReset recovers the key.
    PinBlocked = 0x32, "CTAP2_ERR_PIN_BLOCKED";
    PinAuthInvalid = 0x33, "CTAP2_ERR_PIN_AUTH_INVALID";
    /// Three consecutive wrong PINs since power-up: the key must be power-cycled.
    PinAuthBlocked = 0x34, "CTAP2_ERR_PIN_AUTH_BLOCKED";
    PinNotSet = 0x35, "CTAP2_ERR_PIN_NOT_SET";
    /// CTAP2_ERR_PIN_REQUIRED in CTAP 2.0.
    PinRequired = 0x36, "CTAP2_ERR_PUAT_REQUIRED";
    PinPolicyViolation = 0x37, "CTAP2_ERR_PIN_POLICY_VIOLATION";
    PinTokenExpired = 0x38, "CTAP2_ERR_PIN_TOKEN_EXPIRED";
    RequestTooLarge = 0x39, "CTAP2_ERR_REQUEST_TOO_LARGE";
    ActionTimeout = 0x3A, "CTAP2_ERR_ACTION_TIMEOUT";
    UpRequired = 0x3B, "CTAP2_ERR_UP_REQUIRED";
    UvBlocked = 0x3C, "CTAP2_ERR_UV_BLOCKED";
    IntegrityFailure = 0x3D, "CTAP2_ERR_INTEGRITY_FAILURE";
    InvalidSubcommand = 0x3E, "CTAP2_ERR_INVALID_SUBCOMMAND";
    UvInvalid = 0x3F, "CTAP2_ERR_UV_INVALID";
    UnauthorizedPermission = 0x40, "CTAP2_ERR_UNAUTHORIZED_PERMISSION";
    OtherError = 0x7F, "CTAP1_ERR_OTHER";
    /// First extension-specific status; keys answer it to an hmac-secret saltAuth that does not
    /// verify (what python-fido2's and SoloKeys' conformance tests expect).
    ExtensionFirst = 0xE0, "CTAP2_ERR_EXTENSION_FIRST";
}

impl CtapStatus {
    /// Parse an error string of the form ctap-hid-fido2 produces (`"0x31 CTAP2_ERR_PIN_INVALID"`)
    /// or any text containing a `0x..` status byte. Returns None when no status is present.
    pub fn parse_from_text(text: &str) -> Option<Self> {
        let idx = text.find("0x")?;
        let hex: String = text[idx + 2..]
            .chars()
            .take_while(|c| c.is_ascii_hexdigit())
            .take(2)
            .collect();
        if hex.is_empty() {
            return None;
        }
        u8::from_str_radix(&hex, 16).ok().map(Self::from_byte)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_byte() {
        for b in 0..=255u8 {
            assert_eq!(CtapStatus::from_byte(b).to_byte(), b);
        }
    }

    #[test]
    fn parses_library_error_text() {
        assert_eq!(
            CtapStatus::parse_from_text("0x31 CTAP2_ERR_PIN_INVALID"),
            Some(CtapStatus::PinInvalid)
        );
        assert_eq!(
            CtapStatus::parse_from_text("Error: 0x2d CTAP2_ERR_KEEPALIVE_CANCEL"),
            Some(CtapStatus::KeepaliveCancel)
        );
        assert_eq!(CtapStatus::parse_from_text("device not found"), None);
        assert_eq!(CtapStatus::PinBlocked.spec_name(), "CTAP2_ERR_PIN_BLOCKED");
    }
}
