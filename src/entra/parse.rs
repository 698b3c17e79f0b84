//! Graph's JSON into the adapter's types, strictly: an answer without what keygate needs (a
//! challenge, the rp id, the user id, ...) is `Unavailable("malformed ...")`, never a default.
//! Also the two text rules at the edge: Entra's phone-number format and what of Graph's error
//! text may be shown.

use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::{CreationOptions, EntraError, Fido2Method, PhoneMethod, TemporaryAccessPass};
use crate::config::Secret;

/// Longest piece of Graph's text carried in an error, in characters.
const MAX_MESSAGE_CHARS: usize = 300;

fn malformed(what: &str) -> EntraError {
    EntraError::Unavailable(format!("malformed answer from Graph: {what}"))
}

/// Binary values from Graph: base64url without padding per the v1.0 documentation; real
/// tenants have also sent excludeCredentials ids in standard base64 with padding, so both
/// alphabets are accepted, padded or not.
pub(crate) fn decode_binary(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    if s.contains(['+', '/']) {
        STANDARD_NO_PAD.decode(s).ok()
    } else {
        URL_SAFE_NO_PAD.decode(s).ok()
    }
}

fn required_str<'a>(v: &'a Value, path: &str) -> Result<&'a str, EntraError> {
    let mut cur = v;
    for key in path.split('.') {
        cur = &cur[key];
    }
    cur.as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| malformed(&format!("creationOptions without {path}")))
}

fn timestamp(v: &Value) -> Option<OffsetDateTime> {
    v.as_str()
        .and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok())
}

/// A `credentialProtectionPolicy` name as its CTAP level.
fn cred_protect_level(name: &str) -> Option<u8> {
    match name {
        "userVerificationOptional" => Some(1),
        "userVerificationOptionalWithCredentialIDList" => Some(2),
        "userVerificationRequired" => Some(3),
        _ => None,
    }
}

pub(crate) fn creation_options(v: &Value) -> Result<CreationOptions, EntraError> {
    let pk = &v["publicKey"];
    let challenge = required_str(v, "publicKey.challenge")?;
    if decode_binary(challenge).is_none() {
        return Err(malformed("creationOptions challenge is not base64url"));
    }
    let expires_at = timestamp(&v["challengeTimeoutDateTime"])
        .ok_or_else(|| malformed("creationOptions without challengeTimeoutDateTime"))?;
    let rp_id = required_str(v, "publicKey.rp.id")?;
    let user_id = decode_binary(required_str(v, "publicKey.user.id")?)
        .ok_or_else(|| malformed("creationOptions user.id is not base64url"))?;
    let user_name = required_str(v, "publicKey.user.name")?;
    let algorithms: Vec<i64> = pk["pubKeyCredParams"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["alg"].as_i64()).collect())
        .unwrap_or_default();
    if algorithms.is_empty() {
        return Err(malformed("creationOptions without pubKeyCredParams"));
    }
    let exclude_credentials = match &pk["excludeCredentials"] {
        Value::Null => Vec::new(),
        Value::Array(list) => list
            .iter()
            .map(|c| c["id"].as_str().and_then(decode_binary))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| malformed("creationOptions excludeCredentials id"))?,
        _ => return Err(malformed("creationOptions excludeCredentials")),
    };
    let sel = &pk["authenticatorSelection"];
    let ext = &pk["extensions"];
    let cred_protect =
        match ext["credentialProtectionPolicy"].as_str() {
            None => None,
            Some(name) => Some(cred_protect_level(name).ok_or_else(|| {
                malformed(&format!("unknown credentialProtectionPolicy `{name}`"))
            })?),
        };
    Ok(CreationOptions {
        challenge: challenge.to_string(),
        expires_at,
        rp_id: rp_id.to_string(),
        rp_name: pk["rp"]["name"].as_str().unwrap_or_default().to_string(),
        user_id,
        user_name: user_name.to_string(),
        user_display_name: pk["user"]["displayName"]
            .as_str()
            .unwrap_or(user_name)
            .to_string(),
        algorithms,
        exclude_credentials,
        resident_key: sel["requireResidentKey"].as_bool() == Some(true)
            || sel["residentKey"].as_str() == Some("required"),
        user_verification: sel["userVerification"]
            .as_str()
            .unwrap_or("preferred")
            .to_string(),
        cred_protect,
        enforce_cred_protect: ext["enforceCredentialProtectionPolicy"].as_bool() == Some(true),
        hmac_secret: ext["hmacCreateSecret"].as_bool() == Some(true),
        attestation: pk["attestation"].as_str().unwrap_or("none").to_string(),
    })
}

fn opt_string(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

pub(crate) fn fido2_method(v: &Value) -> Result<Fido2Method, EntraError> {
    let id = v["id"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| malformed("fido2AuthenticationMethod without id"))?;
    Ok(Fido2Method {
        id: id.to_string(),
        display_name: opt_string(&v["displayName"]),
        aaguid: opt_string(&v["aaGuid"]),
        model: opt_string(&v["model"]),
        attestation_level: opt_string(&v["attestationLevel"]),
        created_at: timestamp(&v["createdDateTime"]),
    })
}

pub(crate) fn phone_method(v: &Value) -> Result<PhoneMethod, EntraError> {
    match (v["id"].as_str(), v["phoneNumber"].as_str()) {
        (Some(id), Some(number)) => Ok(PhoneMethod {
            id: id.to_string(),
            phone_number: number.to_string(),
            phone_type: v["phoneType"].as_str().unwrap_or_default().to_string(),
        }),
        _ => Err(malformed(
            "phoneAuthenticationMethod without id or phoneNumber",
        )),
    }
}

pub(crate) fn temporary_access_pass(v: &Value) -> Result<TemporaryAccessPass, EntraError> {
    let pass = v["temporaryAccessPass"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| malformed("temporaryAccessPassAuthenticationMethod without the pass"))?;
    Ok(TemporaryAccessPass {
        id: v["id"].as_str().unwrap_or_default().to_string(),
        pass: Secret::new(pass),
        lifetime_minutes: v["lifetimeInMinutes"]
            .as_u64()
            .and_then(|m| u32::try_from(m).ok())
            .ok_or_else(|| malformed("temporaryAccessPassAuthenticationMethod lifetime"))?,
        usable_once: v["isUsableOnce"].as_bool().unwrap_or(false),
        starts_at: timestamp(&v["startDateTime"]),
    })
}

/// `+32475345678` (E.164) in Entra's format `+32 475345678`: one space after the country
/// calling code. None for anything that is not `+` and 8-15 digits with a known calling code.
pub(crate) fn entra_phone_number(e164: &str) -> Option<String> {
    let digits = e164.strip_prefix('+')?;
    if !(8..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let code = crate::sms::phone::international_calling_code(e164)?.to_string();
    Some(format!("+{code} {}", &digits[code.len()..]))
}

/// Digits only, to compare a number in E.164 with one in Entra's format.
pub(crate) fn phone_digits(n: &str) -> String {
    let n = n.split('x').next().unwrap_or_default();
    n.chars().filter(char::is_ascii_digit).collect()
}

/// Graph's (or the identity platform's) text as it may travel in an error: control and
/// bidirectional-formatting characters dropped, whitespace runs collapsed, at most
/// [`MAX_MESSAGE_CHARS`] characters.
pub(crate) fn sanitize(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| if c.is_whitespace() { ' ' } else { c })
        .filter(|c| !c.is_control() && !crate::base::text::is_bidi_control(*c))
        .collect();
    let collapsed = cleaned.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.chars().count() <= MAX_MESSAGE_CHARS {
        return collapsed;
    }
    let mut cut: String = collapsed.chars().take(MAX_MESSAGE_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// `(code, message)` of a Graph error body (`{"error":{"code","message",...}}`), sanitised;
/// empty strings when the body is not one.
pub(crate) fn graph_error(body: &str) -> (String, String) {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let e = &v["error"];
    (
        sanitize(e["code"].as_str().unwrap_or_default()),
        sanitize(e["message"].as_str().unwrap_or_default()),
    )
}

/// Whether a 400 on registration says the creationOptions challenge ran out.
pub(crate) fn is_challenge_expired(code: &str, message: &str) -> bool {
    let text = format!("{code} {message}").to_ascii_lowercase();
    text.contains("challenge")
        && ["expired", "timed out", "timeout", "no longer valid"]
            .iter()
            .any(|w| text.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn options() -> Value {
        json!({
            "challengeTimeoutDateTime": "2024-06-13T11:26:35.1234567Z",
            "publicKey": {
                "rp": {"id": "login.microsoft.com", "name": "Microsoft"},
                "user": {"id": "T0lEOjEyMw", "name": "john@contoso.com", "displayName": "John"},
                "challenge": "QTU1MzNDNzAtNkM3Ng",
                "pubKeyCredParams": [{"type": "public-key", "alg": -7}, {"type": "public-key", "alg": -257}],
                "excludeCredentials": [
                    {"type": "public-key", "id": "TZ2KrDEawbrIGQsnheGZ/BG9Nfnb7blSGwQYMGyJIhM=", "transports": []},
                    {"type": "public-key", "id": "AQID"}
                ],
                "authenticatorSelection": {"authenticatorAttachment": "cross-platform", "requireResidentKey": true, "userVerification": "required"},
                "attestation": "direct",
                "extensions": {"hmacCreateSecret": true, "enforceCredentialProtectionPolicy": true, "credentialProtectionPolicy": "userVerificationOptional"}
            }
        })
    }

    #[test]
    fn a_real_tenants_options_parse() {
        let o = creation_options(&options()).unwrap();
        assert_eq!(o.rp_id, "login.microsoft.com");
        assert_eq!(o.user_id, b"OID:123");
        assert_eq!(o.challenge, "QTU1MzNDNzAtNkM3Ng");
        assert_eq!(o.algorithms, vec![-7, -257]);
        assert_eq!(o.exclude_credentials.len(), 2);
        assert_eq!(o.exclude_credentials[0].len(), 32);
        assert_eq!(o.exclude_credentials[1], vec![1, 2, 3]);
        assert!(o.resident_key && o.hmac_secret && o.enforce_cred_protect);
        assert_eq!(o.cred_protect, Some(1));
        assert_eq!(o.user_verification, "required");
        assert_eq!(o.expires_at.year(), 2024);
    }

    #[test]
    fn missing_essentials_are_malformed() {
        for path in [
            "/publicKey/challenge",
            "/publicKey/rp/id",
            "/publicKey/user/id",
            "/publicKey/user/name",
            "/challengeTimeoutDateTime",
            "/publicKey/pubKeyCredParams",
        ] {
            let mut v = options();
            *v.pointer_mut(path).unwrap() = Value::Null;
            let e = creation_options(&v).unwrap_err();
            assert!(
                matches!(&e, EntraError::Unavailable(m) if m.starts_with("malformed")),
                "{path}: {e:?}"
            );
        }
        let mut v = options();
        v["publicKey"]["extensions"]["credentialProtectionPolicy"] = json!("sometimes");
        assert!(creation_options(&v).is_err());
        let mut v = options();
        v["publicKey"]["user"]["id"] = json!("not base64 !");
        assert!(creation_options(&v).is_err());
    }

    #[test]
    fn entra_phone_format() {
        assert_eq!(
            entra_phone_number("+32475345678").as_deref(),
            Some("+32 475345678")
        );
        assert_eq!(
            entra_phone_number("+31612345678").as_deref(),
            Some("+31 612345678")
        );
        assert_eq!(
            entra_phone_number("+12065550123").as_deref(),
            Some("+1 2065550123")
        );
        assert_eq!(
            entra_phone_number("+352621123456").as_deref(),
            Some("+352 621123456")
        );
        assert_eq!(entra_phone_number("0475345678"), None);
        assert_eq!(entra_phone_number("+32 475345678"), None);
        assert_eq!(phone_digits("+32 475345678"), phone_digits("+32475345678"));
    }

    #[test]
    fn graph_text_is_cleaned_and_bounded() {
        assert_eq!(sanitize("bad\u{202E}\nkey\t\u{0}here"), "bad key here");
        let long = sanitize(&"x".repeat(1000));
        assert_eq!(long.chars().count(), MAX_MESSAGE_CHARS);
        let (code, msg) = graph_error(
            r#"{"error":{"code":"badRequest","message":"The challenge has expired."}}"#,
        );
        assert_eq!(code, "badRequest");
        assert!(is_challenge_expired(&code, &msg));
        assert!(!is_challenge_expired(
            "badRequest",
            "The challenge is invalid."
        ));
        assert!(!is_challenge_expired(
            "badRequest",
            "Attestation expired certificate"
        ));
    }
}
