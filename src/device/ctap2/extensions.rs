//! CTAP 2.1 extensions on the platform side: the makeCredential extension inputs keygate sends
//! (credProtect §12.1, hmac-secret §12.5), and the authenticator extension outputs a key puts
//! in authData (WebAuthn §6.1: a CBOR map after the attested credential data, flag ED).

use std::io::Cursor;

use ciborium::value::Value;

use super::cbor::int;
use crate::device::{CredentialExtensions, DeviceError};

/// authData flag ED: extension data follows.
const FLAG_ED: u8 = 0x80;
/// authData flag AT: attested credential data follows.
const FLAG_AT: u8 = 0x40;

/// makeCredential parameter 0x06 for `ext`, None when nothing is asked:
/// `{"credProtect": level, "hmac-secret": true}` with the asked entries only. CTAP2 canonical
/// order sorts keys by length, then bytewise: both are 11 bytes, credProtect comes first.
pub fn make_credential_extensions(ext: &CredentialExtensions) -> Option<Value> {
    let mut map = Vec::new();
    if let Some(level) = ext.cred_protect {
        map.push((Value::Text("credProtect".into()), int(level.level().into())));
    }
    if ext.hmac_secret {
        map.push((Value::Text("hmac-secret".into()), Value::Bool(true)));
    }
    (!map.is_empty()).then_some(Value::Map(map))
}

fn malformed(what: &str) -> DeviceError {
    DeviceError::Protocol(format!("authData: {what}"))
}

/// The authenticator extension outputs map of `auth_data`; None without flag ED. The map must
/// be the last thing in authData.
pub fn auth_data_extensions(auth_data: &[u8]) -> Result<Option<Value>, DeviceError> {
    if auth_data.len() < 37 {
        return Err(malformed("shorter than 37 bytes"));
    }
    let flags = auth_data[32];
    if flags & FLAG_ED == 0 {
        return Ok(None);
    }
    let mut at = 37;
    if flags & FLAG_AT != 0 {
        // aaguid(16) ‖ credentialIdLength(2) ‖ credentialId ‖ credentialPublicKey (COSE).
        let len_at = at + 16;
        let len = auth_data
            .get(len_at..len_at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
            .ok_or_else(|| malformed("attested credential data truncated"))?;
        let key_at = len_at + 2 + len;
        let key_bytes = auth_data
            .get(key_at..)
            .ok_or_else(|| malformed("credential id truncated"))?;
        let mut cursor = Cursor::new(key_bytes);
        let _: Value = ciborium::de::from_reader(&mut cursor)
            .map_err(|_| malformed("invalid credential public key"))?;
        at = key_at + cursor.position() as usize;
    }
    let rest = &auth_data[at..];
    let mut cursor = Cursor::new(rest);
    let map: Value =
        ciborium::de::from_reader(&mut cursor).map_err(|_| malformed("invalid extensions map"))?;
    if map.as_map().is_none() {
        return Err(malformed("extensions are not a map"));
    }
    if cursor.position() as usize != rest.len() {
        return Err(malformed("bytes after the extensions map"));
    }
    Ok(Some(map))
}
