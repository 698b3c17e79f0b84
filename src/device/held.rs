//! Which credentials a plugged key holds, learned without a touch or a PIN:
//! authenticatorGetAssertion with the option `up: false` over an allowList (CTAP 2.1 §6.2.2).
//! A key answers with one listed credential it holds for the RP (a signature nobody uses, the
//! UP flag clear) or CTAP2_ERR_NO_CREDENTIALS; so a kiosk can ask, before a factory reset,
//! which of the credentials it knows are really on the key in the port.
//!
//! Limits: a credential that credProtect level 3 (userVerificationRequired) hides without UV
//! is not found; each request is for one RP.

use rand::RngCore;
use sha2::{Digest, Sha256};

use super::{Authenticator, DeviceError, GetAssertionArgs, OpContext};

/// The credentials of `ids` (for `rp_id`) that the key holds, asking about `per_request` ids
/// at a time (the key's maxCredentialCountInList; at least one). A key answers a request with
/// the first listed credential it holds, so a request is repeated without it until the key
/// holds none of the rest. Any answer but an assertion or NO_CREDENTIALS ends the check with
/// that error (a key that does not take `up: false` answers an error, never a wrong "no").
pub fn held_credentials(
    auth: &dyn Authenticator,
    rp_id: &str,
    ids: &[Vec<u8>],
    per_request: usize,
    ctx: &OpContext,
) -> Result<Vec<Vec<u8>>, DeviceError> {
    let mut held = Vec::new();
    for chunk in ids.chunks(per_request.max(1)) {
        let mut listed = chunk.to_vec();
        while !listed.is_empty() {
            if ctx.is_cancelled() {
                return Err(DeviceError::Cancelled);
            }
            if ctx.expired() {
                return Err(DeviceError::TouchTimeout);
            }
            // The client data of a request whose signature nobody checks: random, so that the
            // key signs nothing anyone could replay.
            let mut client_data_json = vec![0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut client_data_json);
            let args = GetAssertionArgs {
                client_data_hash: Sha256::digest(&client_data_json).into(),
                client_data_json,
                rp_id: rp_id.to_string(),
                allow_list: listed.clone(),
                user_verification: false,
                pin: None,
                user_presence: false,
            };
            match auth.get_assertion(&args, ctx) {
                Ok(out) => {
                    let Some(id) = out.into_iter().next().map(|a| a.credential_id) else {
                        return Err(DeviceError::Protocol("an empty assertion answer".into()));
                    };
                    if !listed.contains(&id) {
                        return Err(DeviceError::Protocol(
                            "the key answered with a credential that was not listed".into(),
                        ));
                    }
                    listed.retain(|l| *l != id);
                    held.push(id);
                }
                Err(DeviceError::NoCredentials) => break,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(held)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::device::sim::fixtures::{bench, ctx, ga_args, mc_args};
    use crate::device::sim::{SimKeyOptions, Touch};
    use crate::device::DeviceSource;

    fn touch(t: Touch) -> SimKeyOptions {
        SimKeyOptions {
            touch: Some(t),
            ..Default::default()
        }
    }

    #[test]
    fn finds_exactly_the_keys_own_credentials_without_a_touch() {
        let (_dir, b, key) = bench(None);
        let make = |a: &dyn Authenticator| {
            a.make_credential(&mc_args(false, None), &ctx())
                .unwrap()
                .credential_id
        };
        let ours: Vec<Vec<u8>> = (0..3).map(|_| make(&*key)).collect();
        // Another key of the same model, as in the same port before.
        b.plug(touch(Touch::AutoAfterMs(0))).unwrap();
        let other = b
            .enumerate()
            .unwrap()
            .into_iter()
            .find(|a| a.id() == "sim:2")
            .unwrap();
        let theirs: Vec<Vec<u8>> = (0..4).map(|_| make(&*other)).collect();
        // Nobody touches the key from here on: a request that needed presence would time out.
        b.configure("sim:1", touch(Touch::Never)).unwrap();
        let mut ids = vec![
            theirs[0].clone(),
            ours[0].clone(),
            ours[1].clone(),
            theirs[1].clone(),
            theirs[2].clone(),
            ours[2].clone(),
            theirs[3].clone(),
        ];
        ids.push(b"not a credential id at all".to_vec());
        let mut want = ours.clone();
        want.sort();
        for per_request in [1, 3, 8] {
            let mut held =
                held_credentials(&*key, "keygate.local", &ids, per_request, &ctx()).unwrap();
            held.sort();
            assert_eq!(held, want, "{per_request} per request");
        }
        let none = held_credentials(&*key, "other.example", &ids, 8, &ctx()).unwrap();
        assert!(none.is_empty(), "credentials are per RP");
        // A request with user presence still waits for the touch that never comes.
        let quick = OpContext::new(
            Instant::now() + Duration::from_millis(300),
            Arc::new(|_| {}),
        );
        assert_eq!(
            key.get_assertion(&ga_args(vec![ours[0].clone()], None), &quick)
                .unwrap_err(),
            DeviceError::TouchTimeout
        );
    }
}
