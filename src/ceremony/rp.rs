//! The relying-party half: webauthn-rs (its core crate, for control over UV and resident-key
//! options) verifies attestations and assertions. Attestation trust: with configured CAs (and,
//! under `--simulate`, the simulated keys' test CA) a chain to one of them marks the credential
//! `attested`; `require_trusted_attestation` rejects anything else.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use crypto_glue::der::Encode;
use sha2::{Digest, Sha256};
use webauthn_rs_core::error::WebauthnError;
use webauthn_rs_core::proto::{
    AttestationCa, AttestationCaList, AttestationConveyancePreference, AttestationMetadata,
    AuthenticatorAttachment, Credential, ParsedAttestationData, PublicKeyCredential,
    PublicKeyCredentialCreationOptions, PublicKeyCredentialRequestOptions,
    RegisterPublicKeyCredential, UserVerificationPolicy,
};
use webauthn_rs_core::WebauthnCore;

use crate::base::sync::lock;
use crate::config::UserVerification;
use crate::store::{CredentialRecord, UserRecord};

pub use webauthn_rs_core::proto::{AuthenticationState, RegistrationState};

#[derive(Debug, thiserror::Error)]
pub enum RpError {
    #[error("verification failed: {0}")]
    Verification(String),
    #[error("attestation rejected: {0}")]
    Attestation(String),
    #[error("credential excluded")]
    Excluded,
    #[error("counter did not increase: possible cloned key")]
    ClonedKey,
    #[error("relying party internal error: {0}")]
    Internal(String),
}

pub struct VerifiedRegistration {
    pub credential_id: Vec<u8>,
    /// The RP library's credential, serialised for the store.
    pub serialised: String,
    pub attestation_format: String,
    pub attested: bool,
}

pub struct VerifiedAssertion {
    pub counter: u32,
    pub user_verified: bool,
    pub serialised: String,
}

pub struct RelyingParty {
    core: WebauthnCore,
    pub origin: String,
    ca_list: Option<AttestationCaList>,
    require_trusted: bool,
    /// Attestation chains already found to lead to one of `ca_list`, by SHA-256 of their DER.
    /// Keys of one batch share an attestation certificate, so every enrollment after the first
    /// skips the chain's signature check (~0.2 ms of pure-Rust P-256 each). An entry is used
    /// only while every certificate of the chain and its CA is within its validity period.
    trusted_chains: Mutex<HashMap<[u8; 32], TrustedChain>>,
    /// Chain checks actually run (not answered from `trusted_chains`).
    chain_checks: std::sync::atomic::AtomicU64,
}

/// Where a verified chain led (the CA's position in `ca_list`, which never changes) and when
/// that answer holds.
#[derive(Clone, Copy)]
struct TrustedChain {
    ca: usize,
    valid_from: SystemTime,
    valid_until: SystemTime,
}

/// Distinct attestation chains remembered; past this the memory starts over.
const TRUSTED_CHAINS_KEPT: usize = 256;

fn policy(uv: UserVerification) -> UserVerificationPolicy {
    match uv {
        UserVerification::Required => UserVerificationPolicy::Required,
        UserVerification::Preferred => UserVerificationPolicy::Preferred,
    }
}

/// DER bodies of all certificates in a PEM text.
pub fn pem_certificates(pem: &str) -> Result<Vec<Vec<u8>>, RpError> {
    let mut out = Vec::new();
    let mut body: Option<String> = None;
    for line in pem.lines().map(str::trim) {
        if line == "-----BEGIN CERTIFICATE-----" {
            body = Some(String::new());
        } else if line == "-----END CERTIFICATE-----" {
            let b = body
                .take()
                .ok_or_else(|| RpError::Internal("PEM END without BEGIN".into()))?;
            out.push(
                STANDARD
                    .decode(b)
                    .map_err(|e| RpError::Internal(format!("PEM base64: {e}")))?,
            );
        } else if let Some(b) = body.as_mut() {
            b.push_str(line);
        }
    }
    Ok(out)
}

/// An attestation CA trusted for every AAGUID it signs for.
fn blanket_ca(der: &[u8]) -> Result<AttestationCa, RpError> {
    let ser = serde_json::json!({
        "ca": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(der),
        "aaguids": {},
        "blanket_allow": true,
    });
    serde_json::from_value(ser).map_err(|e| RpError::Internal(format!("attestation CA: {e}")))
}

fn classify(e: WebauthnError) -> RpError {
    use WebauthnError as W;
    match e {
        W::CredentialExcludedFromRequest | W::CredentialAlreadyExists => RpError::Excluded,
        W::CredentialPossibleCompromise => RpError::ClonedKey,
        W::AttestationTrustFailure
        | W::AttestationChainNotTrusted(_)
        | W::AttestationCertificateAAGUIDMismatch
        | W::AttestationCertificateRequirementsNotMet
        | W::AttestationCertificateTrustStoreEmpty
        | W::AttestationNotVerifiable
        | W::AttestationUntrustedAaguid
        | W::AttestationFormatMissingAaguid
        | W::AttestationNotSupported
        | W::AttestationStatementSigInvalid
        | W::AttestationStatementX5CInvalid
        | W::AttestationLeafCertMissing
        | W::TrustFailure => RpError::Attestation(format!("{e:?}")),
        other => RpError::Verification(format!("{other:?}")),
    }
}

impl RelyingParty {
    /// `ca_pems`: PEM texts of trusted attestation roots.
    pub fn new(
        rp_id: &str,
        rp_name: &str,
        origin: &str,
        ca_pems: &[String],
        require_trusted: bool,
    ) -> Result<RelyingParty, RpError> {
        let url = url::Url::parse(origin).map_err(|e| RpError::Internal(e.to_string()))?;
        let core = WebauthnCore::new_unsafe_experts_only(
            rp_name,
            rp_id,
            vec![url],
            Duration::from_secs(120),
            None,
            None,
        );
        let mut list = AttestationCaList::default();
        for pem in ca_pems {
            for der in pem_certificates(pem)? {
                list.insert(blanket_ca(&der)?)
                    .map_err(|e| RpError::Internal(format!("attestation CA: {e:?}")))?;
            }
        }
        if require_trusted && list.is_empty() {
            return Err(RpError::Internal(
                "require_trusted_attestation needs at least one attestation CA".into(),
            ));
        }
        Ok(RelyingParty {
            core,
            origin: origin.to_string(),
            ca_list: (!list.is_empty()).then_some(list),
            require_trusted,
            trusted_chains: Mutex::new(HashMap::new()),
            chain_checks: Default::default(),
        })
    }

    pub fn start_registration(
        &self,
        user: &UserRecord,
        existing: &[CredentialRecord],
        uv: UserVerification,
        discoverable: bool,
        timeout: Duration,
    ) -> Result<(PublicKeyCredentialCreationOptions, RegistrationState), RpError> {
        let exclude: Vec<_> = existing.iter().map(|c| c.id.clone()).collect();
        let builder = self
            .core
            .new_challenge_register_builder(&user.user_handle, &user.name, &user.display_name)
            .map_err(|e| RpError::Internal(format!("{e:?}")))?
            .attestation(AttestationConveyancePreference::Direct)
            .user_verification_policy(policy(uv))
            .exclude_credentials(Some(exclude))
            .require_resident_key(discoverable)
            .authenticator_attachment(Some(AuthenticatorAttachment::CrossPlatform));
        let (ccr, state) = self
            .core
            .generate_challenge_register(builder)
            .map_err(|e| RpError::Internal(format!("{e:?}")))?;
        let mut options = ccr.public_key;
        options.timeout = Some(timeout.as_millis().min(u32::MAX as u128) as u32);
        Ok((options, state))
    }

    pub fn finish_registration(
        &self,
        reg: &RegisterPublicKeyCredential,
        state: &RegistrationState,
    ) -> Result<VerifiedRegistration, RpError> {
        // The attestation statement itself (its signature) is checked here; whether its chain
        // leads to a trusted CA is decided below, exactly as webauthn-rs would with the CA list,
        // but remembering chains it has seen.
        let cred = self
            .core
            .register_credential(reg, state, None)
            .map_err(classify)?;
        let attested = match &self.ca_list {
            None => false,
            Some(list) => match self.check_attestation_trust(list, &cred, SystemTime::now()) {
                Ok(()) => true,
                Err(e) => match classify(e) {
                    RpError::Attestation(why) if !self.require_trusted => {
                        tracing::info!(reason = %why, "attestation not from a trusted CA; enrolled as unattested");
                        false
                    }
                    other => return Err(other),
                },
            },
        };
        let format = serde_json::to_value(&cred.attestation_format)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| "unknown".into());
        Ok(VerifiedRegistration {
            credential_id: AsRef::<[u8]>::as_ref(&cred.cred_id).to_vec(),
            serialised: serde_json::to_string(&cred)
                .map_err(|e| RpError::Internal(e.to_string()))?,
            attestation_format: format,
            attested,
        })
    }

    /// webauthn-rs-core's trust step (`register_credential` with a CA list): the chain must
    /// lead to one of `list`, and a CA that is not a blanket one must list the key's AAGUID.
    fn check_attestation_trust(
        &self,
        list: &AttestationCaList,
        cred: &Credential,
        now: SystemTime,
    ) -> Result<(), WebauthnError> {
        let ca = self
            .trusted_ca(list, &cred.attestation.data, now)?
            .ok_or(WebauthnError::AttestationNotVerifiable)?;
        if ca.blanket_allow() {
            return Ok(());
        }
        match &cred.attestation.metadata {
            AttestationMetadata::Packed { aaguid } | AttestationMetadata::Tpm { aaguid, .. } => {
                if ca.aaguids().contains_key(aaguid) {
                    Ok(())
                } else {
                    Err(WebauthnError::AttestationUntrustedAaguid)
                }
            }
            _ => Err(WebauthnError::AttestationFormatMissingAaguid),
        }
    }

    /// [`webauthn_rs_core::attestation::verify_attestation_ca_chain`], answered from
    /// `trusted_chains` for a chain (same DER) verified before and still within its validity.
    fn trusted_ca<'a>(
        &self,
        list: &'a AttestationCaList,
        data: &ParsedAttestationData,
        now: SystemTime,
    ) -> Result<Option<&'a AttestationCa>, WebauthnError> {
        let verify = || {
            self.chain_checks
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            webauthn_rs_core::attestation::verify_attestation_ca_chain(data, list, now)
        };
        let chain = match data {
            ParsedAttestationData::Basic(c)
            | ParsedAttestationData::AttCa(c)
            | ParsedAttestationData::AnonCa(c) => c,
            _ => return verify(),
        };
        let mut hash = Sha256::new();
        for cert in chain {
            let Ok(der) = cert.to_der() else {
                return verify();
            };
            hash.update((der.len() as u64).to_be_bytes());
            hash.update(&der);
        }
        let key: [u8; 32] = hash.finalize().into();
        let known = lock(&self.trusted_chains).get(&key).copied();
        if let Some(t) = known {
            if t.valid_from <= now && now <= t.valid_until {
                return Ok(list.cas().values().nth(t.ca));
            }
        }
        let found = verify()?;
        if let Some(ca) = found {
            let position = list.cas().values().position(|c| std::ptr::eq(c, ca));
            let validity: Vec<_> = chain
                .iter()
                .chain([ca.ca()])
                .map(|c| *c.tbs_certificate().validity())
                .collect();
            let valid_from = validity.iter().map(|v| v.not_before.to_system_time()).max();
            let valid_until = validity.iter().map(|v| v.not_after.to_system_time()).min();
            if let (Some(ca), Some(valid_from), Some(valid_until)) =
                (position, valid_from, valid_until)
            {
                let mut chains = lock(&self.trusted_chains);
                if chains.len() >= TRUSTED_CHAINS_KEPT {
                    chains.clear();
                }
                chains.insert(
                    key,
                    TrustedChain {
                        ca,
                        valid_from,
                        valid_until,
                    },
                );
            }
        }
        Ok(found)
    }

    pub fn start_authentication(
        &self,
        creds: &[CredentialRecord],
        uv: UserVerification,
        timeout: Duration,
    ) -> Result<(PublicKeyCredentialRequestOptions, AuthenticationState), RpError> {
        let parsed = creds
            .iter()
            .map(|c| {
                serde_json::from_str::<Credential>(&c.rp_credential)
                    .map_err(|e| RpError::Internal(format!("stored credential: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let builder = self
            .core
            .new_challenge_authenticate_builder(parsed, Some(policy(uv)))
            .map_err(|e| RpError::Internal(format!("{e:?}")))?;
        let (rcr, state) = self
            .core
            .generate_challenge_authenticate(builder)
            .map_err(|e| RpError::Internal(format!("{e:?}")))?;
        let mut options = rcr.public_key;
        options.timeout = Some(timeout.as_millis().min(u32::MAX as u128) as u32);
        Ok((options, state))
    }

    /// Verify an assertion made with `rec`. A non-increasing counter on a key that counts is
    /// reported as [`RpError::ClonedKey`] (after the signature was verified).
    pub fn finish_authentication(
        &self,
        assertion: &PublicKeyCredential,
        mut state: AuthenticationState,
        rec: &CredentialRecord,
    ) -> Result<VerifiedAssertion, RpError> {
        let mut cred: Credential = serde_json::from_str(&rec.rp_credential)
            .map_err(|e| RpError::Internal(format!("stored credential: {e}")))?;
        state.set_allowed_credentials(vec![cred.clone()]);
        let res = self
            .core
            .authenticate_credential(assertion, &state)
            .map_err(classify)?;
        cred.counter = res.counter();
        cred.backup_state = res.backup_state();
        cred.backup_eligible = res.backup_eligible();
        Ok(VerifiedAssertion {
            counter: res.counter(),
            user_verified: res.user_verified(),
            serialised: serde_json::to_string(&cred)
                .map_err(|e| RpError::Internal(e.to_string()))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use crypto_glue::der::Decode;

    use super::*;
    use crate::device::ctap2::{decode, get_text_key};
    use crate::device::sim::fixtures::{bench, ctx, mc_args};

    /// The attestation certificate a simulated key puts in its packed statement, and its CA.
    fn sim_attestation(seed: u64) -> (crypto_glue::x509::Certificate, String) {
        let (_dir, bench, key) = bench(Some(seed));
        let out = key.make_credential(&mc_args(false, None), &ctx()).unwrap();
        let obj = decode(&out.attestation_object).unwrap();
        let x5c = get_text_key(get_text_key(&obj, "attStmt").unwrap(), "x5c").unwrap();
        let leaf = x5c.as_array().unwrap()[0].as_bytes().unwrap().clone();
        (
            crypto_glue::x509::Certificate::from_der(&leaf).unwrap(),
            bench.attestation_ca_pem(),
        )
    }

    /// A chain verified once is answered from memory while it is valid; outside its validity
    /// period, or for another chain, the check runs again.
    #[test]
    fn trusted_chains_are_remembered_only_while_valid() {
        let (leaf, ca_pem) = sim_attestation(1);
        let rp = RelyingParty::new(
            "keygate.local",
            "keygate",
            "https://keygate.local",
            &[ca_pem],
            true,
        )
        .unwrap();
        let list = rp.ca_list.as_ref().unwrap();
        let data = ParsedAttestationData::Basic(vec![leaf.clone()]);
        let now = SystemTime::now();
        assert!(rp.trusted_ca(list, &data, now).unwrap().is_some());
        let remembered = *rp.trusted_chains.lock().unwrap().values().next().unwrap();
        assert!(remembered.valid_from <= now && now <= remembered.valid_until);
        assert!(rp.trusted_ca(list, &data, now).unwrap().is_some());
        let checks = || rp.chain_checks.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!((checks(), rp.trusted_chains.lock().unwrap().len()), (1, 1));
        // Past the certificates' validity the memory does not answer: the check fails.
        let later = remembered.valid_until + Duration::from_secs(1);
        assert!(matches!(
            rp.trusted_ca(list, &data, later),
            Err(WebauthnError::AttestationChainNotTrusted(_))
        ));
        assert_eq!(checks(), 2);
        // Another key's chain (another CA) is checked, refused and not remembered.
        let (foreign, _) = sim_attestation(2);
        let foreign = ParsedAttestationData::Basic(vec![foreign]);
        assert!(rp.trusted_ca(list, &foreign, now).is_err());
        assert_eq!((checks(), rp.trusted_chains.lock().unwrap().len()), (3, 1));
    }
}
