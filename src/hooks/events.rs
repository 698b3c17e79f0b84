//! The hook events: their stable names, the audit lines each one is derived from, and the
//! payload's `data`, built from a per-event list of audit fields that may leave keygate.
//!
//! Contract: `data` carries the audit line's user, credential, ceremony and actor, plus only the
//! detail fields named here. Audit details hold no PIN, code or token today; the allow-list
//! keeps it so when someone adds one tomorrow.

use serde_json::{Map, Value};

use crate::store::AuditEvent;

/// Every event a `[[hooks]]` entry may subscribe to.
pub const EVENT_NAMES: &[&str] = &[
    "enrollment.succeeded",
    "enrollment.failed",
    "assertion.succeeded",
    "credential.revoked",
    "credential.quarantined",
    "user.locked",
    "user.reset",
    "sms.provider.circuit_open",
    "sms.provider.circuit_closed",
    "entra.passkey_registered",
];

/// One mapping: a hook event, the audit events it comes from, and the audit detail fields it
/// carries (`(audit field, payload field)`).
struct Mapping {
    event: &'static str,
    audit: &'static [&'static str],
    fields: &'static [(&'static str, &'static str)],
}

const MAPPINGS: &[Mapping] = &[
    Mapping {
        event: "enrollment.succeeded",
        audit: &["credential.enrolled"],
        fields: &[
            ("aaguid", "aaguid"),
            ("attestation_format", "attestation_format"),
            ("attested", "attested"),
            ("discoverable", "discoverable"),
            ("user_verified", "user_verified"),
            ("device", "device"),
        ],
    },
    Mapping {
        event: "enrollment.failed",
        // The ceremony's error code (e.g. `pin_invalid`), never a PIN.
        audit: &["enrollment.failed"],
        fields: &[("code", "error")],
    },
    Mapping {
        event: "assertion.succeeded",
        audit: &["credential.verified", "entra.passkey_verified"],
        fields: &[
            ("counter", "counter"),
            ("user_verified", "user_verified"),
            ("device", "device"),
            ("upn", "upn"),
        ],
    },
    Mapping {
        event: "credential.revoked",
        audit: &["credential.revoked"],
        fields: &[],
    },
    Mapping {
        event: "credential.quarantined",
        audit: &["credential.quarantined", "entra.possible_cloned_key"],
        fields: &[
            ("reason", "reason"),
            ("stored_counter", "stored_counter"),
            ("presented_counter", "presented_counter"),
            ("device", "device"),
            ("upn", "upn"),
        ],
    },
    Mapping {
        event: "user.locked",
        audit: &["sms.user_locked"],
        fields: &[("attempts", "failed_attempts")],
    },
    Mapping {
        event: "user.reset",
        audit: &["user.reset"],
        fields: &[
            ("credentials_revoked", "credentials_revoked"),
            ("phones_removed", "phones_removed"),
        ],
    },
    Mapping {
        event: "sms.provider.circuit_open",
        audit: &["sms.circuit_opened"],
        fields: &[
            ("provider", "provider"),
            ("consecutive_failures", "consecutive_failures"),
        ],
    },
    Mapping {
        event: "sms.provider.circuit_closed",
        audit: &["sms.circuit_closed"],
        fields: &[("provider", "provider")],
    },
    Mapping {
        event: "entra.passkey_registered",
        audit: &["entra.passkey_registered"],
        fields: &[
            ("upn", "upn"),
            ("method_id", "method_id"),
            ("aaguid", "aaguid"),
            ("model", "model"),
            ("display_name", "display_name"),
            ("device", "device"),
        ],
    },
];

/// The hook event an audit line is, if any.
pub fn hook_event(audit_event: &str) -> Option<&'static str> {
    find(audit_event).map(|m| m.event)
}

fn find(audit_event: &str) -> Option<&'static Mapping> {
    MAPPINGS.iter().find(|m| m.audit.contains(&audit_event))
}

/// The payload's `data` for an audit line that is a hook event: what the line says about who
/// and what, and the allowed detail fields. None for an audit line that is no hook event.
pub fn event_data(a: &AuditEvent) -> Option<Value> {
    let m = find(&a.event)?;
    let mut data = Map::new();
    let mut put = |k: &str, v: Option<&String>| {
        if let Some(v) = v {
            data.insert(k.to_string(), Value::String(v.clone()));
        }
    };
    put("user", a.user.as_ref());
    put("credential_id", a.credential_id.as_ref());
    put("ceremony_id", a.ceremony_id.as_ref());
    put("actor", Some(&a.actor));
    for (from, to) in m.fields {
        if let Some(v) = a.detail.get(*from).filter(|v| !v.is_null()) {
            data.insert((*to).to_string(), v.clone());
        }
    }
    data.insert("audit_seq".into(), Value::from(a.seq));
    Some(Value::Object(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audit(event: &str, detail: Value) -> AuditEvent {
        AuditEvent {
            seq: 7,
            at: time::OffsetDateTime::UNIX_EPOCH,
            event: event.into(),
            user: Some("r0123456".into()),
            credential_id: None,
            ceremony_id: None,
            actor: "token:abc".into(),
            detail,
        }
    }

    #[test]
    fn every_mapping_names_a_known_event_once() {
        for m in MAPPINGS {
            assert!(EVENT_NAMES.contains(&m.event), "{}", m.event);
        }
        for e in EVENT_NAMES {
            assert_eq!(MAPPINGS.iter().filter(|m| m.event == *e).count(), 1, "{e}");
        }
    }

    #[test]
    fn only_allowed_detail_fields_leave() {
        let a = audit(
            "user.reset",
            serde_json::json!({"credentials_revoked": 2, "phones_removed": 1, "pin": "1234", "code": "654321"}),
        );
        let data = event_data(&a).unwrap();
        assert_eq!(data["credentials_revoked"], 2);
        assert_eq!(data["user"], "r0123456");
        assert!(data.get("pin").is_none() && data.get("code").is_none());
        assert_eq!(hook_event("sms.user_locked"), Some("user.locked"));
        assert_eq!(event_data(&audit("token.created", Value::Null)), None);
    }
}
