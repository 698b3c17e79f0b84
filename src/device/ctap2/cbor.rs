//! CBOR helpers for CTAP2 messages: building values and maps in the caller's (canonical) order,
//! encoding/decoding, key lookup in decoded maps, and splitting a raw response into its status
//! byte and CBOR body. Lookups that the response parsers require fail as `DeviceError::Protocol`.

use ciborium::value::{Integer, Value};

use crate::device::{CtapStatus, DeviceError};

pub fn int(i: i64) -> Value {
    Value::Integer(Integer::from(i))
}

pub fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

pub fn bytes(b: &[u8]) -> Value {
    Value::Bytes(b.to_vec())
}

/// A CBOR map with integer keys, in the order given (callers give canonical order).
pub fn int_map(entries: Vec<(i64, Value)>) -> Value {
    Value::Map(entries.into_iter().map(|(k, v)| (int(k), v)).collect())
}

pub fn text_map(entries: Vec<(&str, Value)>) -> Value {
    Value::Map(entries.into_iter().map(|(k, v)| (text(k), v)).collect())
}

pub fn encode(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(v, &mut out).expect("writing CBOR to a Vec cannot fail");
    out
}

pub fn decode(b: &[u8]) -> Result<Value, DeviceError> {
    ciborium::de::from_reader(b).map_err(|e| DeviceError::Protocol(format!("invalid CBOR: {e}")))
}

/// Look up an integer key in a CBOR map.
pub fn get_int_key(map: &Value, key: i64) -> Option<&Value> {
    map.as_map()?
        .iter()
        .find(|(k, _)| k.as_integer().and_then(|i| i64::try_from(i).ok()) == Some(key))
        .map(|(_, v)| v)
}

pub fn get_text_key<'a>(map: &'a Value, key: &str) -> Option<&'a Value> {
    map.as_map()?
        .iter()
        .find(|(k, _)| k.as_text() == Some(key))
        .map(|(_, v)| v)
}

pub fn as_i64(v: &Value) -> Option<i64> {
    v.as_integer().and_then(|i| i64::try_from(i).ok())
}

pub(super) fn need<'a>(v: Option<&'a Value>, what: &str) -> Result<&'a Value, DeviceError> {
    v.ok_or_else(|| DeviceError::Protocol(format!("response lacks {what}")))
}

pub(super) fn need_bytes(v: Option<&Value>, what: &str) -> Result<Vec<u8>, DeviceError> {
    need(v, what)?
        .as_bytes()
        .cloned()
        .ok_or_else(|| DeviceError::Protocol(format!("{what} is not a byte string")))
}

/// Split a raw response into status and CBOR body.
pub fn split_response(raw: &[u8]) -> Result<(CtapStatus, &[u8]), DeviceError> {
    match raw.split_first() {
        Some((s, rest)) => Ok((CtapStatus::from_byte(*s), rest)),
        None => Err(DeviceError::Protocol("empty CTAP response".into())),
    }
}
