//! The relying-party half: webauthn-rs (its core crate, for control over UV and resident-key
//! options) verifies attestations and assertions. Attestation trust: with configured CAs (and,
//! under `--simulate`, the simulated keys' test CA) a chain to one of them marks the credential
//! `attested`; `require_trusted_attestation` rejects anything else.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use webauthn_rs_core::error::WebauthnError;
use webauthn_rs_core::proto::{
    AttestationCa, AttestationCaList, AttestationConveyancePreference, AuthenticatorAttachment,
    Credential, PublicKeyCredential, PublicKeyCredentialCreationOptions,
    PublicKeyCredentialRequestOptions, RegisterPublicKeyCredential, UserVerificationPolicy,
};
use webauthn_rs_core::WebauthnCore;

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
}

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
        let (cred, attested) = match &self.ca_list {
            Some(list) => match self.core.register_credential(reg, state, Some(list)) {
                Ok(c) => (c, true),
                Err(e) => match classify(e) {
                    RpError::Attestation(why) if !self.require_trusted => {
                        tracing::info!(reason = %why, "attestation not from a trusted CA; enrolled as unattested");
                        let c = self
                            .core
                            .register_credential(reg, state, None)
                            .map_err(classify)?;
                        (c, false)
                    }
                    other => return Err(other),
                },
            },
            None => (
                self.core
                    .register_credential(reg, state, None)
                    .map_err(classify)?,
                false,
            ),
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
