//! The fake identity platform's token endpoint (OAuth 2.0 client credentials) and the bearer
//! check in front of every Graph route. Errors carry Entra's body shape
//! (`error`, `error_description` starting with `AADSTSnnnn:`, `error_codes`, ids).

use std::collections::HashMap;

use axum::http::HeaderMap;
use axum::response::Response;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use rand::RngCore;
use serde_json::{json, Value};
use sha2::Digest;
use x509_cert::der::Decode;

use super::{graph_error, json_response, Shared};

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const GRAPH_DEFAULT_SCOPE: &str = "https://graph.microsoft.com/.default";
/// Clock skew Entra tolerates on `nbf`/`exp` of a client assertion.
const SKEW_MS: i64 = 5 * 60 * 1000;

fn aadsts(status: u16, error: &str, code: u32, text: &str) -> Response {
    let trace = uuid::Uuid::new_v4();
    let correlation = uuid::Uuid::new_v4();
    json_response(
        status,
        &json!({
            "error": error,
            "error_description": format!(
                "AADSTS{code}: {text} Trace ID: {trace} Correlation ID: {correlation} Timestamp: 2026-01-01 00:00:00Z"
            ),
            "error_codes": [code],
            "timestamp": "2026-01-01 00:00:00Z",
            "trace_id": trace.to_string(),
            "correlation_id": correlation.to_string(),
            "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
        }),
        None,
    )
}

pub(super) fn handle(shared: &Shared, tenant: &str, headers: &HeaderMap, body: &[u8]) -> Response {
    let o = &shared.opts;
    if !tenant.eq_ignore_ascii_case(&o.tenant_id) {
        return aadsts(400, "invalid_request", 90002, &format!(
            "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
        ));
    }
    let form_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let form: HashMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    if !form_type || field("grant_type").is_empty() {
        return aadsts(
            400,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'grant_type'.",
        );
    }
    if field("grant_type") != "client_credentials" {
        return aadsts(
            400,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.",
        );
    }
    if field("client_id") != o.client_id {
        return aadsts(
            400,
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{}' was not found in the directory '{tenant}'.",
                field("client_id")
            ),
        );
    }
    let own_scope = format!("{}/.default", shared.base);
    if field("scope") != GRAPH_DEFAULT_SCOPE && field("scope") != own_scope {
        return aadsts(400, "invalid_scope", 1002012, &format!(
            "The provided value for scope {} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).",
            field("scope")
        ));
    }
    if !field("client_secret").is_empty() {
        if o.client_secret.as_deref() != Some(field("client_secret")) {
            return aadsts(401, "invalid_client", 7000215, &format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.",
                o.client_id
            ));
        }
    } else if !field("client_assertion").is_empty() {
        if field("client_assertion_type") != JWT_BEARER {
            return aadsts(
                400,
                "invalid_request",
                90014,
                "The required field 'client_assertion_type' is missing or invalid.",
            );
        }
        if let Err((code, text)) = verify_assertion(shared, field("client_assertion")) {
            return aadsts(401, "invalid_client", code, &text);
        }
    } else {
        return aadsts(401, "invalid_client", 7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.");
    }
    let mut raw = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut raw);
    let token = format!("fake-at.{}", hex::encode(raw));
    let lifetime = o.token_lifetime.as_secs();
    shared
        .lock()
        .tokens
        .insert(token.clone(), shared.now_ms() + (lifetime as i64) * 1000);
    json_response(
        200,
        &json!({
            "token_type": "Bearer",
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": token,
        }),
        None,
    )
}

/// A private_key_jwt client assertion as Entra checks it: the registered certificate named by
/// its thumbprint (`x5t` SHA-1 for RS256, `x5t#S256` SHA-256 for PS256), the RSA signature,
/// `aud` = the token endpoint, `iss` = `sub` = client id, the time window, a fresh `jti`.
fn verify_assertion(shared: &Shared, jwt: &str) -> Result<(), (u32, String)> {
    let malformed = |what: &str| (50027, format!("JWT token is invalid or malformed: {what}."));
    let parts: Vec<&str> = jwt.split('.').collect();
    let [h64, p64, s64] = parts.as_slice() else {
        return Err(malformed("not three parts"));
    };
    let decode_json =
        |s: &str| -> Option<Value> { serde_json::from_slice(&B64URL.decode(s).ok()?).ok() };
    let header = decode_json(h64).ok_or_else(|| malformed("header"))?;
    let claims = decode_json(p64).ok_or_else(|| malformed("payload"))?;
    let sig = B64URL
        .decode(s64)
        .map_err(|_| malformed("signature encoding"))?;
    let Some(cert_der) = shared.opts.client_certificate_der.as_deref() else {
        return Err((700027, "Client assertion failed signature validation. No certificate is registered on the application.".into()));
    };
    let not_registered = || {
        (700027, "The certificate with identifier used to sign the client assertion is not registered on application.".to_string())
    };
    let sha1 = B64URL.encode(sha1::Sha1::digest(cert_der));
    let sha256 = B64URL.encode(sha2::Sha256::digest(cert_der));
    let x5t = header["x5t"].as_str();
    let x5t_s256 = header["x5t#S256"].as_str();
    let alg: &'static dyn ring::signature::VerificationAlgorithm = match header["alg"].as_str() {
        Some("RS256") if x5t == Some(sha1.as_str()) => &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        Some("PS256") if x5t_s256 == Some(sha256.as_str()) || x5t == Some(sha1.as_str()) => {
            &ring::signature::RSA_PSS_2048_8192_SHA256
        }
        Some("RS256" | "PS256") => return Err(not_registered()),
        _ => return Err(malformed("unsupported alg")),
    };
    let cert = x509_cert::Certificate::from_der(cert_der).map_err(|_| not_registered())?;
    let spki = cert.tbs_certificate().subject_public_key_info();
    let key = ring::signature::UnparsedPublicKey::new(alg, spki.subject_public_key.raw_bytes());
    let signing_input = format!("{h64}.{p64}");
    key.verify(signing_input.as_bytes(), &sig).map_err(|_| {
        (
            700027,
            "Client assertion failed signature validation.".to_string(),
        )
    })?;
    if claims["aud"].as_str() != Some(shared.token_url().as_str()) {
        return Err((
            700212,
            format!(
            "The audience of the client assertion is invalid: {}. It must be the token endpoint.",
            claims["aud"]
        ),
        ));
    }
    let client_id = shared.opts.client_id.as_str();
    if claims["iss"].as_str() != Some(client_id) || claims["sub"].as_str() != Some(client_id) {
        return Err(malformed("iss and sub must be the client id"));
    }
    let now = shared.now_ms();
    let exp = claims["exp"].as_i64().ok_or_else(|| malformed("exp"))? * 1000;
    let nbf = claims["nbf"].as_i64().unwrap_or(0) * 1000;
    if exp + SKEW_MS < now || nbf - SKEW_MS > now {
        return Err((
            700024,
            "Client assertion is not within its valid time range.".into(),
        ));
    }
    let jti = claims["jti"]
        .as_str()
        .filter(|j| !j.is_empty())
        .ok_or_else(|| malformed("jti"))?;
    if !shared.lock().assertion_ids.insert(jti.to_string()) {
        return Err((700025, "Client assertion contains a replayed jti.".into()));
    }
    Ok(())
}

/// Graph's 401 (as `Some`) unless the request carries a token this tenant issued and that has
/// not expired.
pub(super) fn refuse_bearer(shared: &Shared, headers: &HeaderMap) -> Option<Response> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(token) = token else {
        return Some(json_response(
            401,
            &graph_error("InvalidAuthenticationToken", "Access token is empty."),
            None,
        ));
    };
    let now = shared.now_ms();
    let valid = shared
        .lock()
        .tokens
        .get(token)
        .is_some_and(|exp| *exp > now);
    (!valid).then(|| {
        json_response(
            401,
            &graph_error(
                "InvalidAuthenticationToken",
                "Access token has expired or is not yet valid.",
            ),
            None,
        )
    })
}
