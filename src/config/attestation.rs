//! `[attestation]`: what keygate makes of a key's attestation at enrollment (`crate::attestation`):
//! the mode, the AAGUID allow and block lists, the configured attestation roots and the FIDO
//! Metadata Service (MDS3) BLOB with the root its signature must chain to.
//!
//! The shape is checked by the pure [`AttestationConfig::check`] (through
//! [`super::parse_config`]); the files it names are read only by [`check_attestation_files`],
//! which [`super::load`] runs (start-up and every CLI command, `check-config` included). The
//! BLOB itself is verified at start-up, by `check-config` and by `keygate mds update`, not here:
//! `mds update` must be able to replace a BLOB that no longer verifies.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Config, ConfigError};

/// What the attestation policy does with what it finds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttestationMode {
    /// No check, nothing recorded.
    Off,
    /// The enrollment succeeds; each finding is audited (`attestation.finding`).
    #[default]
    Monitor,
    /// A finding fails the enrollment with `attestation_rejected` (and is audited).
    Enforce,
}

impl AttestationMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AttestationMode::Off => "off",
            AttestationMode::Monitor => "monitor",
            AttestationMode::Enforce => "enforce",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AttestationConfig {
    pub mode: AttestationMode,
    /// Key models (AAGUIDs) accepted; empty: any model whose attestation is trusted.
    pub allowed_aaguids: Vec<uuid::Uuid>,
    /// Key models refused even with a trusted attestation.
    pub blocked_aaguids: Vec<uuid::Uuid>,
    /// The FIDO Metadata Service BLOB (a signed JWT), where `keygate mds update` installs it.
    /// Unset: `<data_dir>/mds-blob.jwt`. Absent file: no metadata (only `ca_files` roots).
    pub mds_blob: Option<PathBuf>,
    /// PEM files of attestation roots trusted for every key model.
    pub ca_files: Vec<PathBuf>,
    /// PEM file of the root the BLOB's signing chain must lead to. Unset: the FIDO Alliance's
    /// root, GlobalSign Root CA - R3 (built in).
    pub mds_root_ca: Option<PathBuf>,
}

impl AttestationConfig {
    /// The shape (no file access): no AAGUID both allowed and blocked or listed twice, no
    /// empty path.
    pub fn check(&self) -> Result<(), String> {
        for (name, list) in [
            ("allowed_aaguids", &self.allowed_aaguids),
            ("blocked_aaguids", &self.blocked_aaguids),
        ] {
            if let Some((i, a)) = list
                .iter()
                .enumerate()
                .find(|(i, a)| list[..*i].contains(a))
            {
                return Err(format!("attestation.{name}[{i}]: {a} is listed twice"));
            }
        }
        if let Some(a) = self
            .allowed_aaguids
            .iter()
            .find(|a| self.blocked_aaguids.contains(a))
        {
            return Err(format!(
                "attestation: {a} is in both allowed_aaguids and blocked_aaguids"
            ));
        }
        let empty = |p: &Path| p.as_os_str().is_empty();
        if self.mds_blob.as_deref().is_some_and(empty) {
            return Err("attestation.mds_blob is empty".into());
        }
        if self.mds_root_ca.as_deref().is_some_and(empty) {
            return Err("attestation.mds_root_ca is empty".into());
        }
        if let Some(i) = self.ca_files.iter().position(|p| empty(p)) {
            return Err(format!("attestation.ca_files[{i}] is empty"));
        }
        Ok(())
    }

    /// Where the BLOB is read from and installed: `mds_blob`, else `<data_dir>/mds-blob.jwt`.
    pub fn mds_blob_path(&self, data_dir: &Path) -> PathBuf {
        self.mds_blob
            .clone()
            .unwrap_or_else(|| data_dir.join("mds-blob.jwt"))
    }
}

/// The files `[attestation]` names: every `ca_files` entry and `mds_root_ca` must be readable
/// and hold at least one X.509 certificate.
pub fn check_attestation_files(cfg: &Config) -> Result<(), ConfigError> {
    let a = &cfg.attestation;
    let named = a
        .ca_files
        .iter()
        .enumerate()
        .map(|(i, p)| (format!("attestation.ca_files[{i}]"), p))
        .chain(
            a.mds_root_ca
                .iter()
                .map(|p| ("attestation.mds_root_ca".to_string(), p)),
        );
    for (name, path) in named {
        crate::attestation::read_pem_certificates(path)
            .map_err(|e| ConfigError::Invalid(format!("{name}: {e}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse_config, Overrides};

    fn parse(toml: &str) -> Result<Config, String> {
        parse_config(Some(toml), &[], &Overrides::default()).map_err(|e| e.to_string())
    }

    const YUBIKEY_5: &str = "ee882879-721c-4913-9775-3dfcce97072a";
    const FEITIAN: &str = "12ded745-4bed-47d4-abaa-e713f51d6393";

    #[test]
    fn monitor_by_default_and_typed_when_given() {
        let c = parse("").unwrap();
        assert_eq!(c.attestation, AttestationConfig::default());
        assert_eq!(c.attestation.mode, AttestationMode::Monitor);
        let c = parse(&format!(
            "[attestation]\nmode = \"enforce\"\nallowed_aaguids = [\"{YUBIKEY_5}\"]\n\
             blocked_aaguids = [\"{FEITIAN}\"]\nmds_blob = \"/var/lib/keygate/mds.jwt\"\n\
             ca_files = [\"/etc/keygate/yubico.pem\"]\nmds_root_ca = \"/etc/keygate/root.pem\"\n"
        ))
        .unwrap();
        let a = &c.attestation;
        assert_eq!(a.mode, AttestationMode::Enforce);
        assert_eq!(
            a.allowed_aaguids,
            vec![YUBIKEY_5.parse::<uuid::Uuid>().unwrap()]
        );
        assert_eq!(
            a.blocked_aaguids,
            vec![FEITIAN.parse::<uuid::Uuid>().unwrap()]
        );
        assert_eq!(
            a.mds_blob_path(Path::new("/data")),
            PathBuf::from("/var/lib/keygate/mds.jwt")
        );
        assert_eq!(
            AttestationConfig::default().mds_blob_path(Path::new("/data")),
            PathBuf::from("/data/mds-blob.jwt")
        );
    }

    #[test]
    fn the_mode_comes_from_the_environment_too() {
        let env = vec![("KEYGATE_ATTESTATION__MODE".to_string(), "off".to_string())];
        let c = parse_config(None, &env, &Overrides::default()).unwrap();
        assert_eq!(c.attestation.mode, AttestationMode::Off);
    }

    #[test]
    fn bad_settings_are_refused_by_name() {
        let cases = [
            ("mode = \"strict\"".to_string(), "unknown variant"),
            (
                "allowed_aaguids = [\"not-a-uuid\"]".to_string(),
                "allowed_aaguids",
            ),
            (
                format!("allowed_aaguids = [\"{YUBIKEY_5}\", \"{YUBIKEY_5}\"]"),
                "allowed_aaguids[1]",
            ),
            (
                format!("allowed_aaguids = [\"{FEITIAN}\"]\nblocked_aaguids = [\"{FEITIAN}\"]"),
                "both allowed_aaguids and blocked_aaguids",
            ),
            ("mds_blob = \"\"".to_string(), "mds_blob is empty"),
            ("mds_root_ca = \"\"".to_string(), "mds_root_ca is empty"),
            (
                "ca_files = [\"a.pem\", \"\"]".to_string(),
                "ca_files[1] is empty",
            ),
            ("require_trusted = true".to_string(), "unknown field"),
        ];
        for (body, why) in cases {
            let toml = format!("[attestation]\n{body}\n");
            let err = parse(&toml).expect_err(&toml);
            assert!(err.contains(why), "{toml}: {err}");
        }
    }

    #[test]
    fn the_named_files_must_hold_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let not_pem = dir.path().join("not.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        let root = dir.path().join("root.pem");
        std::fs::write(&root, crate::attestation::FIDO_MDS_ROOT_PEM).unwrap();
        let with = |body: String| parse(&format!("[attestation]\n{body}\n")).unwrap();

        let ok = with(format!(
            "ca_files = [{root:?}]\nmds_root_ca = {root:?}\nmds_blob = {missing:?}"
        ));
        check_attestation_files(&ok).unwrap();
        for (body, why) in [
            (format!("ca_files = [{root:?}, {missing:?}]"), "ca_files[1]"),
            (format!("mds_root_ca = {not_pem:?}"), "mds_root_ca"),
        ] {
            let err = check_attestation_files(&with(body.clone()))
                .unwrap_err()
                .to_string();
            assert!(err.contains(why), "{body}: {err}");
        }
    }
}
