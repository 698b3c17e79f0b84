//! Local verification of an assertion by an Entra passkey: keygate is not Entra's relying
//! party, so it checks what an RP would with what it recorded at enrollment (rp id, COSE
//! public key): rpIdHash, user presence and verification, the clientDataJSON it built (type,
//! origin, its own fresh challenge) and the ES256 signature over authData || SHA-256(cdj).

use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::device::AssertionOutput;
use crate::store::EntraPasskeyRecord;

use super::super::client::{self, b64, AuthDataSummary};
use super::super::rp::RpError;
use super::origin_of;

fn fail(why: &str) -> RpError {
    RpError::Verification(why.into())
}

/// The ES256 verifying key of a COSE_Key (kty EC2, alg -7, crv P-256).
pub(super) fn es256_key(cose: &[u8]) -> Result<VerifyingKey, RpError> {
    let v: ciborium::Value =
        ciborium::de::from_reader(cose).map_err(|_| fail("stored public key unreadable"))?;
    let int = |k: i64| {
        v.as_map()?
            .iter()
            .find(|(key, _)| key.as_integer().map(i128::from) == Some(k.into()))
            .and_then(|(_, val)| val.as_integer())
            .map(i128::from)
    };
    if int(1) != Some(2) || int(3) != Some(-7) || int(-1) != Some(1) {
        return Err(fail("stored public key is not an ES256 P-256 key"));
    }
    let pk = crate::device::ctap2::parse_cose_ec2(&v)
        .map_err(|_| fail("stored public key is not on P-256"))?;
    Ok(VerifyingKey::from(pk))
}

/// Verify `out` for `rec` against the clientDataJSON keygate built with `challenge`.
/// Returns the authenticator data (counter, flags) for the counter check.
pub(super) fn verify_assertion(
    rec: &EntraPasskeyRecord,
    cdj: &[u8],
    challenge: &[u8],
    out: &AssertionOutput,
    require_uv: bool,
) -> Result<AuthDataSummary, RpError> {
    let ad = client::parse_auth_data(&out.authenticator_data)
        .ok_or_else(|| fail("authenticator data unreadable"))?;
    if out.authenticator_data[..32] != Sha256::digest(rec.rp_id.as_bytes())[..] {
        return Err(fail("rpIdHash is not the passkey's rp id"));
    }
    if !ad.user_present() {
        return Err(fail("the key did not confirm user presence"));
    }
    if require_uv && !ad.user_verified() {
        return Err(fail("the key did not verify the user"));
    }
    let cd: serde_json::Value =
        serde_json::from_slice(cdj).map_err(|_| fail("clientDataJSON unreadable"))?;
    if cd["type"] != "webauthn.get"
        || cd["challenge"] != b64(challenge).as_str()
        || cd["origin"] != origin_of(&rec.rp_id).as_str()
    {
        return Err(fail("clientDataJSON is not the one of this ceremony"));
    }
    let key = es256_key(&rec.public_key_cose)?;
    let sig = Signature::from_der(&out.signature).map_err(|_| fail("signature is not DER"))?;
    let mut signed = out.authenticator_data.clone();
    signed.extend_from_slice(&Sha256::digest(cdj));
    key.verify(&signed, &sig)
        .map_err(|_| fail("signature does not verify with the passkey's public key"))?;
    Ok(ad)
}

/// Whether the presented counter is evidence of a clone: both non-zero and not above the
/// stored one (a key that reports 0 keeps no counter).
pub(super) fn counter_suggests_clone(stored: u32, presented: u32) -> bool {
    stored != 0 && presented != 0 && presented <= stored
}
