//! Checks of `[entra]` and of `[kiosk] enroll_target`. The shape (ids, exactly one credential,
//! URLs, bounds) is checked by the pure [`super::parse_config`]; the client certificate file is
//! read only by [`check_entra_files`], which [`super::load`] runs (start-up and every CLI
//! command, `check-config` included).

use super::{Config, ConfigError, EnrollTarget, EntraConfig};

/// `tenant_id` and `client_id` as Entra writes GUIDs: 8-4-4-4-12 hex digits.
fn is_guid(s: &str) -> bool {
    s.len() == 36 && uuid::Uuid::try_parse(s).is_ok()
}

/// A DNS name of at least two labels (a tenant's verified domain, e.g. `odisee.onmicrosoft.com`).
fn is_domain_name(s: &str) -> bool {
    let labels: Vec<&str> = s.split('.').collect();
    s.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            (1..=63).contains(&l.len())
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

fn is_loopback_host(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// `authority_url` / `graph_url`: an absolute https URL without query or fragment; plain http
/// only on a loopback host (test fakes).
pub fn entra_endpoint(name: &str, value: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(value).map_err(|e| format!("{name} `{value}`: {e}"))?;
    let scheme_ok = match url.scheme() {
        "https" => true,
        "http" => is_loopback_host(&url),
        _ => false,
    };
    if !scheme_ok {
        return Err(format!(
            "{name} `{value}` must be https (plain http only on 127.0.0.1, ::1 or localhost)"
        ));
    }
    if url.host().is_none() || url.cannot_be_a_base() {
        return Err(format!("{name} `{value}` has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(format!(
            "{name} `{value}` must not carry a query, fragment or user info"
        ));
    }
    Ok(url)
}

/// The shape of an `[entra]` section (no file access).
pub fn validate_entra_section(e: &EntraConfig) -> Result<(), String> {
    if !(is_guid(&e.tenant_id) || is_domain_name(&e.tenant_id)) {
        return Err(format!(
            "entra.tenant_id `{}` must be the directory (tenant) id, a GUID, or a domain name of the tenant",
            e.tenant_id
        ));
    }
    if !is_guid(&e.client_id) {
        return Err(format!(
            "entra.client_id `{}` must be the app registration's application (client) id, a GUID",
            e.client_id
        ));
    }
    match (e.client_secret.is_empty(), &e.client_certificate) {
        (true, None) => return Err(
            "entra: set client_secret or client_certificate (the app registration's credential)"
                .into(),
        ),
        (false, Some(_)) => {
            return Err("entra: set client_secret or client_certificate, not both".into())
        }
        (true, Some(p)) if p.as_os_str().is_empty() => {
            return Err("entra.client_certificate is empty".into())
        }
        _ => {}
    }
    if !e.upn_template.contains("{user}") {
        return Err(format!(
            "entra.upn_template `{}` must contain {{user}}",
            e.upn_template
        ));
    }
    if e.display_name_template.trim().is_empty() {
        return Err("entra.display_name_template must not be empty".into());
    }
    entra_endpoint("entra.authority_url", &e.authority_url)?;
    entra_endpoint("entra.graph_url", &e.graph_url)?;
    if !(100..=120_000).contains(&e.request_timeout_ms) {
        return Err("entra.request_timeout_ms must be 100..=120000".into());
    }
    if e.max_retries > 10 {
        return Err("entra.max_retries must be at most 10".into());
    }
    if !(1..=60_000).contains(&e.retry_base_ms) {
        return Err("entra.retry_base_ms must be 1..=60000".into());
    }
    Ok(())
}

pub(super) fn validate(cfg: &Config) -> Result<(), ConfigError> {
    match &cfg.entra {
        Some(e) => validate_entra_section(e).map_err(ConfigError::Invalid),
        None if cfg.kiosk.enroll_target == EnrollTarget::Entra => Err(ConfigError::Invalid(
            "kiosk.enroll_target = \"entra\" needs an [entra] section".into(),
        )),
        None => Ok(()),
    }
}

/// The files `[entra]` names: the client certificate must be readable and hold a certificate
/// with its (unencrypted) RSA key.
pub fn check_entra_files(cfg: &Config) -> Result<(), ConfigError> {
    let Some(path) = cfg
        .entra
        .as_ref()
        .and_then(|e| e.client_certificate.as_ref())
    else {
        return Ok(());
    };
    crate::entra::check_client_certificate(path)
        .map_err(|e| ConfigError::Invalid(format!("entra.client_certificate: {e}")))
}
