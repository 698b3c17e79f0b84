//! The fake Graph routes under `users/{id | upn}/authentication/`: passkey creation options and
//! registration (verified in `verify`), list (paged) and delete, phone methods (Entra's
//! `+CC NNN` format, one per type), Temporary Access Passes.

use axum::response::Response;
use rand::{Rng, RngCore};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;

use super::verify;
use super::{
    b64url, graph_error, json_response, Challenge, Route, Shared, StoredFido2, StoredPhone,
};

/// Graph's well-known ids of the three phone methods.
pub(crate) fn phone_method_id(phone_type: &str) -> &'static str {
    match phone_type {
        "mobile" => "3179e48a-750b-4051-897c-87b9720928f7",
        "alternateMobile" => "b6332ec1-7057-4abe-9331-3d72feddfe41",
        _ => "e37fc753-ff3b-4958-9484-eaa9425c82bc",
    }
}

pub(crate) fn rfc3339(ms: i64) -> String {
    keygate::base::clock::ms_to_time(ms)
        .format(&Rfc3339)
        .unwrap_or_default()
}

pub(crate) fn fido2_json(m: &StoredFido2) -> Value {
    json!({
        "@odata.type": "#microsoft.graph.fido2AuthenticationMethod",
        "id": m.id,
        "displayName": m.display_name,
        "createdDateTime": m.created,
        "aaGuid": m.aaguid,
        "model": m.model,
        "attestationCertificates": m.attestation_certificates,
        "attestationLevel": m.attestation_level,
    })
}

pub(crate) fn phone_json(p: &StoredPhone) -> Value {
    json!({"id": p.id, "phoneNumber": p.number, "phoneType": p.phone_type, "smsSignInState": "notSupported"})
}

fn bad_request(message: &str) -> Response {
    json_response(400, &graph_error("badRequest", message), None)
}

/// Entra's phone format: `+{country code} {number}` with an optional `x{extension}`.
fn is_entra_phone_format(n: &str) -> bool {
    let Some(rest) = n.strip_prefix('+') else {
        return false;
    };
    let Some((cc, number)) = rest.split_once(' ') else {
        return false;
    };
    let (number, ext) = number.split_once('x').unwrap_or((number, "0"));
    let digits = |s: &str, min: usize, max: usize| {
        (min..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
    };
    digits(cc, 1, 3) && digits(number, 4, 14) && digits(ext, 1, 10)
}

pub(super) fn handle(
    shared: &Shared,
    route: Route,
    segs: &[String],
    query: &str,
    body: &[u8],
) -> Response {
    let user_key = segs[3].as_str();
    let now = shared.now_ms();
    let graph = shared.graph_url();
    let mut t = shared.lock();
    let Some(user) = t.user_mut(user_key).cloned() else {
        return json_response(
            404,
            &graph_error(
                "Request_ResourceNotFound",
                &format!("Resource '{user_key}' does not exist or one of its queried reference-property objects are not present."),
            ),
            None,
        );
    };
    let json_body = || serde_json::from_slice::<Value>(body);
    match route {
        Route::CreationOptions => {
            let mut raw = [0u8; 32];
            rand::thread_rng().fill_bytes(&mut raw);
            let challenge = b64url(&raw);
            let expires_ms = now + shared.opts.challenge_window.as_millis() as i64;
            t.challenges.insert(
                challenge.clone(),
                Challenge {
                    user_oid: user.oid.clone(),
                    expires_ms,
                    used: false,
                },
            );
            let exclude: Vec<Value> = user
                .fido2
                .iter()
                .map(|m| json!({"type": "public-key", "id": b64url(&m.credential_id), "transports": []}))
                .collect();
            json_response(
                200,
                &json!({
                    "@odata.context": format!("{graph}/$metadata#microsoft.graph.webauthnCredentialCreationOptions"),
                    "challengeTimeoutDateTime": rfc3339(expires_ms),
                    "publicKey": {
                        "rp": {"id": shared.opts.rp_id, "name": "Microsoft"},
                        "user": {"id": b64url(&user.webauthn_id), "name": user.upn, "displayName": user.display_name},
                        "challenge": challenge,
                        "pubKeyCredParams": [{"type": "public-key", "alg": -7}, {"type": "public-key", "alg": -257}],
                        "timeout": 60000,
                        "excludeCredentials": exclude,
                        "authenticatorSelection": {
                            "authenticatorAttachment": "cross-platform",
                            "requireResidentKey": true,
                            "userVerification": "required"
                        },
                        "attestation": "direct",
                        "extensions": {
                            "hmacCreateSecret": true,
                            "enforceCredentialProtectionPolicy": true,
                            "credentialProtectionPolicy": "userVerificationOptional"
                        }
                    }
                }),
                None,
            )
        }
        Route::RegisterFido2 => {
            let Ok(req) = json_body() else {
                return bad_request("Unable to read JSON request payload.");
            };
            t.last_registration = Some(req.clone());
            let parts = match verify::credential_parts(&req) {
                Ok(p) => p,
                Err(m) => return bad_request(&m),
            };
            let challenge =
                match verify::client_data_challenge(&parts.client_data_json, &shared.opts.rp_id) {
                    Ok(c) => c,
                    Err(m) => return bad_request(&m),
                };
            match t.challenges.get(&challenge) {
                Some(c) if c.user_oid != user.oid => {
                    return bad_request("The challenge is invalid for this user.")
                }
                Some(c) if c.used => {
                    return bad_request(
                        "The challenge has already been used. Request new creation options.",
                    )
                }
                Some(c) if c.expires_ms <= now => {
                    return bad_request(
                        "The challenge has expired. Request new creation options and try again.",
                    )
                }
                Some(_) => {}
                None => return bad_request("The challenge is invalid."),
            }
            let verified = match verify::attestation(&parts, &shared.opts.rp_id) {
                Ok(v) => v,
                Err(m) => return bad_request(&m),
            };
            if shared.opts.enforce_attestation && !verified.attested {
                return bad_request("The security key could not be registered: attestation is enforced by the FIDO2 policy and the key is not attested.");
            }
            if let Some(allowed) = &shared.opts.allowed_aaguids {
                if !allowed.contains(&verified.aaguid) {
                    return bad_request(&format!(
                        "The security key with AAGUID {} is not allowed by the FIDO2 key restriction policy.",
                        verified.aaguid
                    ));
                }
            }
            if t.users.iter().any(|u| {
                u.fido2
                    .iter()
                    .any(|m| m.credential_id == parts.credential_id)
            }) {
                return bad_request("The credential is already registered.");
            }
            if let Some(c) = t.challenges.get_mut(&challenge) {
                c.used = true;
            }
            let stored = StoredFido2 {
                id: uuid::Uuid::new_v4().to_string(),
                credential_id: parts.credential_id,
                display_name: req["displayName"].as_str().unwrap_or("").to_string(),
                aaguid: verified.aaguid.to_string(),
                model: Some(
                    keygate::device::model_name(&verified.aaguid)
                        .unwrap_or_else(|| "Unknown".into()),
                ),
                attestation_level: if verified.attested {
                    "attested"
                } else {
                    "notAttested"
                }
                .into(),
                attestation_certificates: verified.certificates,
                created: rfc3339(now),
            };
            let mut answer = fido2_json(&stored);
            answer["@odata.context"] = json!(format!(
                "{graph}/$metadata#users('{}')/authentication/fido2Methods/$entity",
                user.oid
            ));
            if let Some(u) = t.user_mut(user_key) {
                u.fido2.push(stored);
            }
            json_response(201, &answer, None)
        }
        Route::ListFido2 => {
            let skip: usize = query
                .split('&')
                .find_map(|kv| {
                    kv.strip_prefix("$skiptoken=")
                        .or(kv.strip_prefix("%24skiptoken="))
                })
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let size = shared.opts.page_size.max(1);
            let page: Vec<Value> = user
                .fido2
                .iter()
                .skip(skip)
                .take(size)
                .map(fido2_json)
                .collect();
            let mut answer = json!({
                "@odata.context": format!("{graph}/$metadata#users('{}')/authentication/fido2Methods", user.oid),
                "value": page,
            });
            if skip + size < user.fido2.len() {
                answer["@odata.nextLink"] = json!(format!(
                    "{graph}/users/{}/authentication/fido2Methods?$skiptoken={}",
                    user.oid,
                    skip + size
                ));
            }
            json_response(200, &answer, None)
        }
        Route::DeleteFido2 => {
            let id = segs[6].as_str();
            let u = t.user_mut(user_key).expect("looked up above");
            let before = u.fido2.len();
            u.fido2.retain(|m| m.id != id);
            if u.fido2.len() == before {
                return json_response(
                    404,
                    &graph_error(
                        "itemNotFound",
                        "The requested authentication method was not found.",
                    ),
                    None,
                );
            }
            no_content()
        }
        Route::AddPhone => {
            let Ok(req) = json_body() else {
                return bad_request("Unable to read JSON request payload.");
            };
            let number = req["phoneNumber"].as_str().unwrap_or("");
            let phone_type = req["phoneType"].as_str().unwrap_or("");
            if !matches!(phone_type, "mobile" | "alternateMobile" | "office") {
                return bad_request("Invalid value for phoneType. Possible values are mobile, alternateMobile and office.");
            }
            if !is_entra_phone_format(number) {
                return bad_request("Invalid phone number. Phone numbers use the format +{country code} {number}x{extension}.");
            }
            if user.phones.iter().any(|p| p.phone_type == phone_type) {
                return bad_request(&format!(
                    "A phone authentication method of type {phone_type} already exists for this user."
                ));
            }
            if phone_type == "alternateMobile"
                && !user.phones.iter().any(|p| p.phone_type == "mobile")
            {
                return bad_request(
                    "A mobile phone is required before adding an alternateMobile phone.",
                );
            }
            let stored = StoredPhone {
                id: phone_method_id(phone_type).into(),
                number: number.into(),
                phone_type: phone_type.into(),
            };
            let answer = phone_json(&stored);
            t.user_mut(user_key)
                .expect("looked up above")
                .phones
                .push(stored);
            json_response(201, &answer, None)
        }
        Route::ListPhones => {
            let value: Vec<Value> = user.phones.iter().map(phone_json).collect();
            json_response(200, &json!({"value": value}), None)
        }
        Route::CreateTap => {
            let Ok(req) = json_body() else {
                return bad_request("Unable to read JSON request payload.");
            };
            let lifetime = req["lifetimeInMinutes"].as_i64().unwrap_or(60);
            if !(10..=43200).contains(&lifetime) {
                return bad_request("lifetimeInMinutes must be between 10 and 43200.");
            }
            const CHARSET: &[u8] =
                b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789@#$%&+=";
            let mut rng = rand::thread_rng();
            let pass: String = (0..8)
                .map(|_| CHARSET[rng.gen_range(0..CHARSET.len())] as char)
                .collect();
            let answer = json!({
                "@odata.type": "#microsoft.graph.temporaryAccessPassAuthenticationMethod",
                "id": uuid::Uuid::new_v4().to_string(),
                "temporaryAccessPass": pass,
                "createdDateTime": rfc3339(now),
                "startDateTime": rfc3339(now),
                "lifetimeInMinutes": lifetime,
                "isUsableOnce": req["isUsableOnce"].as_bool().unwrap_or(false),
                "isUsable": true,
                "methodUsabilityReason": "EnabledByPolicy",
            });
            t.user_mut(user_key)
                .expect("looked up above")
                .taps
                .push(answer.clone());
            json_response(201, &answer, None)
        }
        Route::Token | Route::Other => {
            json_response(404, &graph_error("notFound", "Not found."), None)
        }
    }
}

/// 204 with Graph's request id.
fn no_content() -> Response {
    use axum::response::IntoResponse;
    let mut resp = axum::http::StatusCode::NO_CONTENT.into_response();
    if let Ok(v) = axum::http::HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        resp.headers_mut().insert("request-id", v);
    }
    resp
}
