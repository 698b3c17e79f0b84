//! Extractors whose rejections use keygate's error shape, and the one way a JSON request body
//! is read ([`json_object`]).

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::error::ErrorCode;
use crate::auth::Caller;

/// `Json<T>` that answers malformed bodies with `invalid_request`, oversized ones with
/// `payload_too_large` and a wrong content type with `unsupported_media_type`.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !json_content_type(req.headers()) {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "send a JSON body with `Content-Type: application/json`",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::too_large()
            } else {
                ApiError::invalid("the request body could not be read")
            }
        })?;
        json_object(&bytes).map(ApiJson)
    }
}

/// A request body as `T`. Every body keygate takes is a JSON object: serde would read a struct
/// from a JSON array too (`[]` would be an empty request), so anything else is refused first.
/// A number with a zero fraction (`30.0`) is the integer it equals, as JSON Schema (and so the
/// OpenAPI document) counts it. Handlers and the page-session check read bodies only through
/// this, so both see the same request in the same bytes.
pub(crate) fn json_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        None => {
            return Err(ApiError::invalid(
                "the request body is empty: send a JSON object",
            ))
        }
        Some(_) => return Err(ApiError::invalid("the request body must be a JSON object")),
    }
    let mut value = serde_json::from_slice::<StrictJson>(bytes)
        .map_err(|e| {
            if e.is_data() {
                ApiError::invalid(format!("invalid request body: {e}"))
            } else {
                ApiError::invalid("the request body is not valid JSON")
            }
        })?
        .0;
    integral_floats_to_integers(&mut value);
    serde_json::from_value(value)
        .map_err(|e| ApiError::invalid(format!("invalid request body: {e}")))
}

/// A JSON value whose objects never repeat a key: `{"user":"a","user":"b"}` is refused, not
/// read as whichever copy a parser keeps (a proxy or a front-end may keep the other one).
struct StrictJson(serde_json::Value);

impl<'de> serde::Deserialize<'de> for StrictJson {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{Error, MapAccess, SeqAccess, Visitor};
        use serde_json::Value;
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StrictJson;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_bool<E>(self, b: bool) -> Result<StrictJson, E> {
                Ok(StrictJson(Value::Bool(b)))
            }
            fn visit_i64<E>(self, n: i64) -> Result<StrictJson, E> {
                Ok(StrictJson(Value::from(n)))
            }
            fn visit_u64<E>(self, n: u64) -> Result<StrictJson, E> {
                Ok(StrictJson(Value::from(n)))
            }
            fn visit_f64<E>(self, n: f64) -> Result<StrictJson, E> {
                Ok(StrictJson(Value::from(n)))
            }
            fn visit_str<E>(self, s: &str) -> Result<StrictJson, E> {
                Ok(StrictJson(Value::from(s)))
            }
            fn visit_string<E>(self, s: String) -> Result<StrictJson, E> {
                Ok(StrictJson(Value::from(s)))
            }
            fn visit_unit<E>(self) -> Result<StrictJson, E> {
                Ok(StrictJson(Value::Null))
            }
            fn visit_none<E>(self) -> Result<StrictJson, E> {
                Ok(StrictJson(Value::Null))
            }
            fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<StrictJson, D::Error> {
                serde::Deserialize::deserialize(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StrictJson, A::Error> {
                let mut items = Vec::new();
                while let Some(StrictJson(v)) = seq.next_element()? {
                    items.push(v);
                }
                Ok(StrictJson(Value::Array(items)))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StrictJson, A::Error> {
                let mut object = serde_json::Map::new();
                while let Some(key) = map.next_key::<String>()? {
                    let StrictJson(v) = map.next_value()?;
                    if object.insert(key.clone(), v).is_some() {
                        return Err(A::Error::custom(format!("duplicate key `{key}`")));
                    }
                }
                Ok(StrictJson(Value::Object(object)))
            }
        }
        d.deserialize_any(V)
    }
}

/// `30.0` -> `30`, wherever it occurs, for numbers that f64 holds exactly (|n| <= 2^53).
fn integral_floats_to_integers(v: &mut serde_json::Value) {
    use serde_json::Value;
    const EXACT: f64 = 9_007_199_254_740_992.0;
    match v {
        Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64() {
                if f.fract() == 0.0 && f.abs() <= EXACT {
                    *v = Value::from(f as i64);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_floats_to_integers),
        Value::Object(map) => map.values_mut().for_each(integral_floats_to_integers),
        _ => {}
    }
}

/// `application/json` or any `+json` media type, as axum's `Json` accepts.
fn json_content_type(headers: &HeaderMap) -> bool {
    let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|sub| sub.ends_with("+json"))
}

/// `Path<T>` that answers an undecodable parameter (invalid percent-encoding, invalid UTF-8,
/// a value of the wrong type) with `invalid_request` in keygate's error shape.
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(ApiPath(v)),
            Err(rej) => Err(ApiError::invalid(format!(
                "invalid path parameter: {}",
                rej.body_text()
            ))),
        }
    }
}

/// `Query<T>` that answers a malformed query string with `invalid_request`.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => Err(ApiError::invalid(
                format!("invalid query string: {}", e.body_text()),
            )),
            Err(other) => Err(ApiError::invalid(other.body_text())),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(ApiError::unauthorized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    struct Body {
        n: u32,
    }

    #[test]
    fn bodies_are_objects_and_integral_floats_are_integers() {
        assert_eq!(json_object::<Body>(br#"{"n": 30.0}"#).unwrap().n, 30);
        assert_eq!(json_object::<Body>(br#"{"n": 30}"#).unwrap().n, 30);
        assert!(json_object::<Body>(br#"{"n": 30.5}"#).is_err());
        assert!(json_object::<Body>(br#"{"n": 1e300}"#).is_err());
        assert!(json_object::<Body>(br#"[30]"#).is_err());
        assert!(json_object::<Body>(b"").is_err());
        assert!(json_object::<Body>(b"{").is_err());
        // A repeated key is refused, not resolved to one of its copies.
        let e = json_object::<Body>(br#"{"n": 1, "n": 2}"#).unwrap_err();
        assert!(e.message.contains("duplicate key `n`"), "{}", e.message);
        assert!(json_object::<serde_json::Value>(br#"{"a": {"b": 1, "b": 1}}"#).is_err());
        assert!(json_object::<serde_json::Value>(br#"{"a": [{"b": 1}, {"b": 2}]}"#).is_ok());
    }
}
