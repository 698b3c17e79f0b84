//! The OpenAPI 3.1 document served at `GET /openapi.json`, derived from the code: each
//! handler's `#[utoipa::path]` (its statuses and content types) and each body's
//! `#[derive(ToSchema)]` (the limits the server enforces). Built once, when the router is.
//!
//! What the derive cannot say is added here, in one place: the answers every route shares
//! (the Host/Origin guard's 403, the bearer check's 401/403, a refused body's 400/413/415,
//! the store's 503, `internal`), the configured ceremony time-out, and "exactly one of" rules.
//! Contract (tests/openapi.rs): every routed path and method is documented, nothing else is.

use std::sync::Arc;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ObjectBuilder, Schema, Type};
use utoipa::{Modify, OpenApi};

use super::{admin, entra, handlers, hooks, keys, kiosk, metrics, reset, sim, sms, users_privacy};
use crate::config::{Config, UserVerification};

/// THE user-name rule (`base::user`) as a regular expression; the `#[schema]` attributes
/// repeat it as a literal (a unit test holds them to this and to `is_valid_user_name`).
pub const USER_NAME_PATTERN: &str = r"^(?!\.\.?$)[A-Za-z0-9._@+-]{1,128}$";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "keygate",
        description = "Campus second factor: FIDO2 security keys over CTAP2/HID and SMS codes. \
            Every 4xx and 5xx is `{\"error\":{\"code\",\"message\",...}}`; the code fixes the \
            status. Requests must name keygate's own Host; browsers' cross-origin requests are \
            refused. Kiosk routes take a `kiosk` or `admin` bearer token (or the kiosk page's \
            session cookie); admin routes an `admin` token; `/metrics` a `metrics` or `admin` \
            token. The `simulator` routes exist only under `--simulate`."
    ),
    paths(
        handlers::healthz, serve, metrics::scrape,
        handlers::list_devices, handlers::device_pin,
        handlers::start_enrollment, handlers::get_enrollment, handlers::cancel_enrollment,
        handlers::enrollment_events, handlers::enrollment_pin,
        handlers::start_assertion, handlers::get_assertion, handlers::cancel_assertion,
        handlers::assertion_events, handlers::assertion_pin,
        admin::list_users, admin::get_user, admin::reset_user, admin::list_credentials,
        admin::get_credential, admin::patch_credential, admin::revoke_credential,
        admin::release_credential, admin::audit, admin::audit_head,
        users_privacy::close, users_privacy::reopen, users_privacy::export,
        entra::list_methods, entra::delete_method, entra::create_tap,
        sms::add_phone, sms::list_phones, sms::delete_phone, sms::create_challenge,
        sms::get_challenge, sms::cancel_challenge, sms::verify, sms::resend, sms::providers,
        sms::fraud, sms::lift_fraud_block,
        sms::callback, sms::sim_inbox,
        sim::list, sim::plug, sim::configure, sim::remove, sim::unplug, sim::replug,
        sim::clone_key,
        reset::start, reset::get_reset, reset::cancel, reset::events,
        keys::list_keys, keys::update_key,
        kiosk::root, kiosk::kiosk_slash, kiosk::index, kiosk::app_js, kiosk::texts_js, kiosk::app_css,
        kiosk::icon, kiosk::session, kiosk::config, kiosk::handoff, kiosk::sign_out,
        kiosk::whoami, hooks::list_hooks, hooks::list_deliveries, hooks::replay_delivery,
    ),
    components(schemas(super::bodies::ErrorBody)),
    modifiers(&Security),
    tags(
        (name = "service", description = "Liveness, metrics and this document"),
        (name = "devices", description = "The plugged keys"),
        (name = "ceremonies", description = "Enrolling and verifying keys"),
        (name = "users", description = "The service desk's view: users, credentials, audit (admin)"),
        (name = "keys", description = "The key inventory: every key keygate has enrolled, as JSON or CSV (admin)"),
        (name = "sms", description = "SMS codes: phones, challenges, providers, the fraud guard, delivery reports"),
        (name = "entra", description = "A user's Microsoft Entra ID methods (admin; needs `[entra]`)"),
        (name = "hooks", description = "Signed event notifications to `[[hooks]]` receivers (admin)"),
        (name = "kiosk page", description = "The kiosk page, its session and its student"),
        (name = "simulator", description = "Simulated keys and phones: only under `--simulate`"),
    )
)]
struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let c = doc.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A token from `keygate token create --role kiosk|admin|metrics`; the scopes \
                         of each requirement name the role it needs (admin may do all)",
                    ))
                    .build(),
            ),
        );
        c.add_security_scheme(
            "kiosk_session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                super::kiosk::SESSION_COOKIE,
                "The kiosk page's session (from /kiosk/session); kiosk routes only",
            ))),
        );
    }
}

/// `?wait=`: `true`, `false`, or seconds 0-120 (as `u64` parses them: an optional `+`,
/// leading zeros).
pub fn wait_schema() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(
            r"^(true|false|\+?0*([0-9]|[1-9][0-9]|1[01][0-9]|120))$",
        ))
        .build()
        .into()
}

/// The document for a daemon running with `cfg`.
pub fn document(cfg: &Config) -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serialises");
    refine(&mut doc, cfg);
    doc
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": {
            "schema": { "$ref": "#/components/schemas/ErrorBody" }
        } }
    })
}

/// Add `status` to `responses` (or extend its description when the handler lists it).
fn add_response(responses: &mut serde_json::Map<String, Value>, status: &str, description: &str) {
    match responses.get_mut(status) {
        Some(r) => {
            let d = r["description"].as_str().unwrap_or("").to_string();
            if !d.contains(description) {
                r["description"] = Value::String(format!("{d}; {description}"));
            }
        }
        None => {
            responses.insert(status.to_string(), error_response(description));
        }
    }
}

/// utoipa writes Rust's `u32`/`u64` as `int32`/`int64` with `minimum: 0`, which a reader takes
/// to end at 2^31-1 / 2^63-1; serde reads them up to 2^32-1 / 2^64-1. Say the real range.
fn unsigned_ranges(v: &mut Value) {
    match v {
        Value::Object(map) => {
            let unsigned = map.get("minimum") == Some(&json!(0));
            let max = match map.get("format").and_then(Value::as_str) {
                Some("int32") if unsigned => Some(json!(u32::MAX)),
                Some("int64") if unsigned => Some(json!(u64::MAX)),
                _ => None,
            };
            if let Some(max) = max {
                map.remove("format");
                map.entry("maximum").or_insert(max);
            }
            map.values_mut().for_each(unsigned_ranges);
        }
        Value::Array(items) => items.iter_mut().for_each(unsigned_ranges),
        _ => {}
    }
}

fn refine(doc: &mut Value, cfg: &Config) {
    unsigned_ranges(doc);
    let paths = doc["paths"].as_object_mut().expect("paths");
    for (path, item) in paths.iter_mut() {
        for (_, op) in item.as_object_mut().expect("path item").iter_mut() {
            let secured = op
                .get("security")
                .and_then(Value::as_array)
                .is_some_and(|s| !s.is_empty());
            let has_body = op.get("requestBody").is_some();
            let has_params = op
                .get("parameters")
                .and_then(Value::as_array)
                .is_some_and(|p| !p.is_empty());
            let responses = op["responses"].as_object_mut().expect("responses");
            add_response(
                responses,
                "403",
                "`host_not_allowed`, `origin_not_allowed`: the Host/Origin guard",
            );
            if secured {
                add_response(responses, "401", "`unauthorized`: no valid token");
                add_response(
                    responses,
                    "403",
                    "`forbidden`: the token's role, or a kiosk page session acting for another student",
                );
            }
            if has_body || has_params {
                add_response(responses, "400", "`invalid_request`");
            }
            if has_body {
                add_response(responses, "413", "`payload_too_large`");
                add_response(responses, "415", "`unsupported_media_type`");
            }
            if secured || path.starts_with("/v1/") || path == "/kiosk/session" {
                add_response(responses, "503", "`store_unavailable`");
            }
            add_response(responses, "500", "`internal`");
        }
    }
    let schemas = &mut doc["components"]["schemas"];
    for req in ["EnrollmentRequest", "AssertionRequest"] {
        schemas[req]["properties"]["timeout_ms"]["maximum"] = json!(cfg.ceremony.max_timeout_ms);
    }
    // The configured level is a floor: under `required`, asking for `preferred` is refused.
    if cfg.relying_party.user_verification == UserVerification::Required {
        schemas["UserVerification"]["enum"] = json!(["required"]);
    }
    // A scripted touch delay is bounded (`sim::MAX_TOUCH_DELAY_MS`); `{"auto_after_ms": n}` is
    // an externally tagged variant, so it has that one member only.
    if let Some(variants) = schemas["Touch"]["oneOf"].as_array_mut() {
        for v in variants
            .iter_mut()
            .filter(|v| v["properties"]["auto_after_ms"].is_object())
        {
            v["properties"]["auto_after_ms"]["maximum"] = json!(super::sim::MAX_TOUCH_DELAY_MS);
            v["additionalProperties"] = json!(false);
        }
    }
    // Exactly one of `phone_id` and `number` (a null one counts as absent).
    schemas["NewChallenge"]["oneOf"] = json!([
        { "required": ["phone_id"], "properties": { "phone_id": { "type": "string" } } },
        { "required": ["number"], "properties": { "number": { "type": "string" } } },
    ]);
}

/// `GET /openapi.json`, for one router: the document, built once.
pub fn handler(cfg: &Config) -> impl Fn() -> std::future::Ready<Response> + Clone {
    let body: Arc<str> = document(cfg).to_string().into();
    move || std::future::ready(json_response(&body))
}

fn json_response(body: &Arc<str>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "service",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object)))]
#[allow(dead_code)]
fn serve() {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every user-name pattern in the document is [`USER_NAME_PATTERN`].
    #[test]
    fn user_name_patterns_are_the_rule() {
        let doc = document(&Config::default()).to_string();
        let literal = serde_json::to_string(USER_NAME_PATTERN).unwrap();
        let n = doc.matches(&literal).count();
        assert!(n >= 8, "{n} uses of the user-name pattern");
        assert!(!doc.contains("{1,64}"), "an old user-name rule");
    }
}
