//! The end of an Entra enrollment: read the key's attestation (credential, public key, the
//! credProtect and hmac-secret outputs), post it to Graph before the window closes, keep the
//! local record (with the user row, the ceremony's end and the audit line, in one commit) and
//! answer the result.

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::device::MakeCredentialOutput;
use crate::entra::{CreationOptions, EntraError, Fido2Method, NewFido2Method};
use crate::store::{EntraPasskeyRecord, NewAudit};

use super::super::client::{self, b64, AuthDataSummary};
use super::super::rp::RpError;
use super::super::{Ceremony, CeremonyError, CeremonyService, State};
use super::enroll::EntraEnrollment;

/// The authenticator data of `out`, checked against what keygate asked for: a new credential
/// (the one the key named) for `opts.rp_id`, user verified, and the extension outputs Graph
/// asked for.
fn checked_auth_data(
    opts: &CreationOptions,
    out: &MakeCredentialOutput,
) -> Result<AuthDataSummary, CeremonyError> {
    let raw = client::attestation_auth_data(&out.attestation_object)
        .ok_or_else(|| RpError::Verification("attestation object unreadable".into()))?;
    let ad = client::parse_auth_data(&raw)
        .ok_or_else(|| RpError::Verification("authenticator data unreadable".into()))?;
    if raw[..32] != Sha256::digest(opts.rp_id.as_bytes())[..] {
        return Err(RpError::Verification("the key signed for another rp id".into()).into());
    }
    if ad.credential_id.as_deref() != Some(out.credential_id.as_slice()) || ad.cose_key.is_none() {
        return Err(RpError::Verification("no attested credential data".into()).into());
    }
    if !ad.user_verified() {
        return Err(RpError::Verification("the key did not verify the user".into()).into());
    }
    if opts.hmac_secret && ad.hmac_secret != Some(true) {
        return Err(CeremonyError::KeyUnsupported(
            "the key did not create the hmac-secret Microsoft Entra ID asks for".into(),
        ));
    }
    let level = opts.cred_protect.unwrap_or(super::DEFAULT_CRED_PROTECT);
    if opts.enforce_cred_protect && ad.cred_protect.unwrap_or(1) != level {
        return Err(CeremonyError::KeyUnsupported(format!(
            "the key did not apply credProtect level {level}, which Microsoft Entra ID enforces"
        )));
    }
    Ok(ad)
}

/// WebAuthn client extension results from the authenticator's outputs.
fn client_extension_results(ad: &AuthDataSummary) -> serde_json::Value {
    let mut r = serde_json::Map::new();
    if let Some(h) = ad.hmac_secret {
        r.insert("hmacCreateSecret".into(), h.into());
    }
    if let Some(l) = ad.cred_protect {
        r.insert("credProtect".into(), l.into());
    }
    serde_json::Value::Object(r)
}

impl CeremonyService {
    pub(super) async fn register_entra_passkey(
        &self,
        c: &Ceremony,
        job: &EntraEnrollment,
        opts: &CreationOptions,
        cdj: &[u8],
        out: &MakeCredentialOutput,
    ) -> Result<serde_json::Value, CeremonyError> {
        c.update(|v| v.state = State::Processing);
        let ad = checked_auth_data(opts, out)?;
        // keygate's own policy first: a key it refuses is never posted to Graph.
        let attestation = self
            .check_attestation(c, "entra", &job.user, cdj, out, &job.who)
            .await?;
        // Checked on the clock before posting: a registration after the window is refused by
        // Graph anyway, and must not count as an attempt.
        if self.clock.now() >= opts.expires_at {
            return Err(EntraError::ChallengeExpired.into());
        }
        let extensions = client_extension_results(&ad);
        let method = NewFido2Method {
            display_name: job.entra.display_name_for(job.model.as_deref(), &job.user),
            credential_id: out.credential_id.clone(),
            client_data_json: cdj.to_vec(),
            attestation_object: out.attestation_object.clone(),
            client_extension_results: extensions.clone(),
        };
        // Not cancellable from here: once posted, Graph may have registered the key.
        let registered = job.entra.register_fido2(&job.upn, &method).await?;
        let rec = self.entra_record(job, opts, &ad, &method, &registered);
        self.keep_entra_record(c, job, &rec).await;
        let mut response = client::registration_response_json(cdj, out);
        response["clientExtensionResults"] = extensions;
        let mut result = json!({
            "entra": {
                "method_id": rec.method_id,
                "display_name": rec.display_name,
                "model": rec.model,
                "attestation_level": rec.attestation_level,
            },
            "credential": {
                "id": b64(&rec.credential_id),
                "aaguid": rec.aaguid,
                "rp_id": rec.rp_id,
                "counter": rec.counter,
                "user_verified": rec.user_verified,
                "cred_protect": rec.cred_protect,
                "hmac_secret": rec.hmac_secret,
            },
            "upn": job.upn,
            "registration_response": response,
        });
        if let Some(j) = &attestation {
            result["attestation"] = j.result_json();
        }
        Ok(result)
    }

    fn entra_record(
        &self,
        job: &EntraEnrollment,
        opts: &CreationOptions,
        ad: &AuthDataSummary,
        method: &NewFido2Method,
        registered: &Fido2Method,
    ) -> EntraPasskeyRecord {
        EntraPasskeyRecord {
            credential_id: method.credential_id.clone(),
            user: job.user.clone(),
            upn: job.upn.clone(),
            method_id: registered.id.clone(),
            rp_id: opts.rp_id.clone(),
            entra_user_id: opts.user_id.clone(),
            public_key_cose: ad.cose_key.clone().unwrap_or_default(),
            counter: ad.sign_count,
            aaguid: ad.aaguid,
            model: registered.model.clone().or_else(|| job.model.clone()),
            attestation_level: registered.attestation_level.clone(),
            display_name: registered
                .display_name
                .clone()
                .unwrap_or_else(|| method.display_name.clone()),
            cred_protect: ad.cred_protect,
            hmac_secret: ad.hmac_secret == Some(true),
            user_verified: ad.user_verified(),
            created_at: self.clock.now(),
            created_by: Some(job.who.clone()),
            last_used_at: None,
        }
    }

    /// The local record of a passkey Graph registered, with the user row (created when absent,
    /// as a local enrollment does), the ceremony's success and `entra.passkey_registered`.
    ///
    /// Graph's answer is the truth: the key IS registered and the student can sign in with
    /// it. So a failed local write does not fail the ceremony; it is logged as an error and
    /// audited best-effort (it costs only the local "whose key is this?" lookup; the service
    /// desk still sees the passkey in `GET /v1/users/{user}/entra/methods`).
    async fn keep_entra_record(
        &self,
        c: &Ceremony,
        job: &EntraEnrollment,
        rec: &EntraPasskeyRecord,
    ) {
        let id = c.view.borrow().id.clone();
        let detail = json!({
            "upn": rec.upn, "method_id": rec.method_id, "rp_id": rec.rp_id,
            "aaguid": rec.aaguid, "model": rec.model, "attestation_level": rec.attestation_level,
            "display_name": rec.display_name, "cred_protect": rec.cred_protect,
            "hmac_secret": rec.hmac_secret, "device": c.actor.id(),
        });
        let audit = NewAudit::new("entra.passkey_registered", &job.who)
            .user(&job.user)
            .credential(&b64(&rec.credential_id))
            .ceremony(&id)
            .detail(detail.clone());
        let stored = match self.user_row(&job.user, &job.display_name) {
            Ok((user, _)) => {
                self.store
                    .insert_entra_passkey(&user, rec, &id, &audit)
                    .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = stored {
            tracing::error!(
                ceremony = %id, user = %job.user, method_id = %rec.method_id, error = %e,
                "Microsoft Entra ID registered the passkey but keygate could not record it"
            );
            let mut detail = detail;
            detail["local_record"] = false.into();
            let audit = NewAudit { detail, ..audit };
            if let Err(e) = self
                .store
                .update_ceremony(&id, State::Succeeded.as_str(), None, Some(&audit))
                .await
            {
                tracing::error!(ceremony = %id, error = %e, "cannot audit the Entra registration");
            }
        }
    }
}
