//! Parsers for authenticator responses: authenticatorGetInfo (§6.4), makeCredential re-keyed as a
//! WebAuthn attestationObject (§6.1.2), getAssertion/getNextAssertion (§6.2.2), and the
//! credential id inside authData. Malformed input is a `DeviceError::Protocol`, never a panic.

use ciborium::value::Value;

use super::cbor::{
    as_i64, bytes, decode, encode, get_int_key, get_text_key, need, need_bytes, text_map,
};
use crate::device::{AssertionOutput, DeviceError, MakeCredentialOutput};

/// authenticatorGetInfo response (§6.4), the fields keygate uses.
#[derive(Debug, Clone, Default)]
pub struct GetInfo {
    pub versions: Vec<String>,
    pub extensions: Vec<String>,
    pub aaguid: Option<uuid::Uuid>,
    pub options: Vec<(String, bool)>,
    pub pin_protocols: Vec<u64>,
    pub min_pin_length: Option<u32>,
    /// 0x0C forcePINChange (CTAP 2.1).
    pub force_pin_change: Option<bool>,
    pub firmware_version: Option<u64>,
    pub remaining_discoverable_credentials: Option<u32>,
    /// 0x07 maxCredentialCountInList.
    pub max_credential_count_in_list: Option<u32>,
}

impl GetInfo {
    pub fn option(&self, name: &str) -> Option<bool> {
        self.options
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| *v)
    }

    pub fn parse(body: &[u8]) -> Result<GetInfo, DeviceError> {
        let v = decode(body)?;
        let strings = |k: i64| -> Vec<String> {
            get_int_key(&v, k)
                .and_then(|a| a.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_text().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let aaguid = get_int_key(&v, 0x03)
            .and_then(|b| b.as_bytes())
            .and_then(|b| uuid::Uuid::from_slice(b).ok());
        let options = get_int_key(&v, 0x04)
            .and_then(|m| m.as_map())
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.as_text()?.to_string(), v.as_bool()?)))
                    .collect()
            })
            .unwrap_or_default();
        let pin_protocols = get_int_key(&v, 0x06)
            .and_then(|a| a.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|x| as_i64(x).map(|i| i as u64))
                    .collect()
            })
            .unwrap_or_default();
        let small = |k: i64| get_int_key(&v, k).and_then(as_i64);
        Ok(GetInfo {
            versions: strings(0x01),
            extensions: strings(0x02),
            aaguid,
            options,
            pin_protocols,
            min_pin_length: small(0x0D).map(|i| i as u32),
            force_pin_change: get_int_key(&v, 0x0C).and_then(Value::as_bool),
            firmware_version: small(0x0E).map(|i| i as u64),
            remaining_discoverable_credentials: small(0x14).map(|i| i as u32),
            max_credential_count_in_list: small(0x07).map(|i| i as u32),
        })
    }
}

/// Parse one authenticatorGetAssertion/GetNextAssertion response (§6.2.2).
pub fn parse_assertion(v: &Value, allow_list: &[Vec<u8>]) -> Result<AssertionOutput, DeviceError> {
    let credential_id = match get_int_key(v, 0x01) {
        Some(c) => need_bytes(get_text_key(c, "id"), "credential id")?,
        // §6.2.2: the credential may be omitted when the allowList had exactly one entry.
        None if allow_list.len() == 1 => allow_list[0].clone(),
        None => {
            return Err(DeviceError::Protocol(
                "assertion lacks its credential".into(),
            ))
        }
    };
    let user_handle = get_int_key(v, 0x04)
        .and_then(|u| get_text_key(u, "id"))
        .and_then(|b| b.as_bytes().cloned());
    Ok(AssertionOutput {
        credential_id,
        authenticator_data: need_bytes(get_int_key(v, 0x02), "authData")?,
        signature: need_bytes(get_int_key(v, 0x03), "signature")?,
        user_handle,
    })
}

/// Re-key a makeCredential response (integer keys 1..3) as a WebAuthn attestationObject
/// (text keys fmt/authData/attStmt), and pull out the credential id from authData.
pub fn attestation_object(v: &Value) -> Result<MakeCredentialOutput, DeviceError> {
    let fmt = need(get_int_key(v, 0x01), "fmt")?.clone();
    let auth_data = need_bytes(get_int_key(v, 0x02), "authData")?;
    let att_stmt = need(get_int_key(v, 0x03), "attStmt")?.clone();
    let credential_id = credential_id_from_auth_data(&auth_data)?;
    let obj = text_map(vec![
        ("fmt", fmt),
        ("attStmt", att_stmt),
        ("authData", bytes(&auth_data)),
    ]);
    Ok(MakeCredentialOutput {
        attestation_object: encode(&obj),
        credential_id,
    })
}

/// authData layout (WebAuthn §6.1): rpIdHash(32) flags(1) signCount(4) [aaguid(16) len(2) id ...].
pub fn credential_id_from_auth_data(auth_data: &[u8]) -> Result<Vec<u8>, DeviceError> {
    if auth_data.len() < 37 || auth_data[32] & 0x40 == 0 {
        return Err(DeviceError::Protocol(
            "authData lacks attested credential data".into(),
        ));
    }
    let rest = &auth_data[37..];
    if rest.len() < 18 {
        return Err(DeviceError::Protocol(
            "attested credential data truncated".into(),
        ));
    }
    let len = u16::from_be_bytes([rest[16], rest[17]]) as usize;
    rest.get(18..18 + len)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| DeviceError::Protocol("credential id truncated".into()))
}
