//! Credential ids of the simulated key and what they carry.
//!
//! An id is all the key needs to use a credential again, authenticated under the master secret
//! (`tag` = the first 16 bytes of HMAC-SHA-256 keyed with it), so only this key recognises its
//! ids and nobody can alter the policy an id carries. Two forms:
//! - `nonce(32) ‖ tag(16)`, tag over `"cred" ‖ nonce ‖ rpIdHash`: the default policy
//!   (credProtect level 1, no hmac-secret). Every id minted before the extensions were
//!   simulated has this form, and so does every credential made without extension inputs;
//! - `nonce(32) ‖ policy(1) ‖ tag(16)`, tag over `"cred-policy" ‖ nonce ‖ policy ‖ rpIdHash`:
//!   policy bits 0–1 = credProtect level (1..=3), bit 7 = the credential has CredRandoms
//!   (hmac-secret); the other bits are zero.
//!
//! Both forms derive the private key from `"key" ‖ nonce ‖ rpIdHash`, and the two CredRandoms
//! of hmac-secret (CTAP 2.1 §12.5) from `"credRandom" ‖ uv ‖ nonce ‖ rpIdHash`: per credential,
//! different with and without UV, and gone with the master secret on a reset.

use p256::ecdsa::SigningKey;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{hmac, SoftKey};

const NONCE_LEN: usize = 32;
const TAG_LEN: usize = 16;
const HMAC_SECRET_BIT: u8 = 0x80;

/// What a credential's use depends on besides its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct CredentialPolicy {
    /// credProtect level (CTAP 2.1 §12.1), 1..=3.
    pub cred_protect: u8,
    /// Made with `hmac-secret: true`: the credential has its CredRandoms.
    pub hmac_secret: bool,
}

impl CredentialPolicy {
    pub const DEFAULT: CredentialPolicy = CredentialPolicy {
        cred_protect: 1,
        hmac_secret: false,
    };

    fn to_byte(self) -> u8 {
        self.cred_protect | if self.hmac_secret { HMAC_SECRET_BIT } else { 0 }
    }

    fn from_byte(b: u8) -> Option<Self> {
        let level = b & !HMAC_SECRET_BIT;
        (1..=3).contains(&level).then_some(CredentialPolicy {
            cred_protect: level,
            hmac_secret: b & HMAC_SECRET_BIT != 0,
        })
    }

    /// Whether a request may see the credential (CTAP 2.1 §6.2.2 step 7 for getAssertion,
    /// §6.1.2 step 4 for makeCredential's excludeList): level 1 always; level 2 with UV or when
    /// the platform named it (`named`: it is in the allowList/excludeList); level 3 only with UV.
    pub fn visible(self, uv: bool, named: bool) -> bool {
        match self.cred_protect {
            1 => true,
            2 => uv || named,
            _ => uv,
        }
    }
}

/// A credential of this key, recognised from its id.
pub(super) struct OwnCredential {
    pub key: SigningKey,
    pub policy: CredentialPolicy,
    nonce: [u8; NONCE_LEN],
}

impl SoftKey {
    fn credential_tag(&self, nonce: &[u8], policy: Option<u8>, rp_id_hash: &[u8]) -> [u8; TAG_LEN] {
        let full = match policy {
            None => hmac(&self.state.master, &[b"cred", nonce, rp_id_hash]),
            Some(p) => hmac(
                &self.state.master,
                &[b"cred-policy", nonce, &[p], rp_id_hash],
            ),
        };
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&full[..TAG_LEN]);
        tag
    }

    /// The credential behind `credential_id`, when the id is this key's for `rp_id_hash`.
    pub(super) fn credential(
        &self,
        credential_id: &[u8],
        rp_id_hash: &[u8],
    ) -> Option<OwnCredential> {
        let (nonce, policy_byte, tag) = match credential_id.len() {
            48 => (
                &credential_id[..NONCE_LEN],
                None,
                &credential_id[NONCE_LEN..],
            ),
            49 => (
                &credential_id[..NONCE_LEN],
                Some(credential_id[NONCE_LEN]),
                &credential_id[NONCE_LEN + 1..],
            ),
            _ => return None,
        };
        let expect = self.credential_tag(nonce, policy_byte, rp_id_hash);
        if !bool::from(expect.ct_eq(tag)) {
            return None;
        }
        let policy = match policy_byte {
            None => CredentialPolicy::DEFAULT,
            Some(b) => CredentialPolicy::from_byte(b)?,
        };
        let mut seed = hmac(&self.state.master, &[b"key", nonce, rp_id_hash]);
        let key = loop {
            if let Ok(k) = SigningKey::from_slice(&seed) {
                break k;
            }
            seed = Sha256::digest(seed).into();
        };
        let mut n = [0u8; NONCE_LEN];
        n.copy_from_slice(nonce);
        Some(OwnCredential {
            key,
            policy,
            nonce: n,
        })
    }

    /// Mint a credential for `rp_id_hash`: its id and the credential itself.
    pub(super) fn new_credential(
        &mut self,
        rp_id_hash: &[u8],
        policy: CredentialPolicy,
    ) -> (Vec<u8>, OwnCredential) {
        let nonce = self.random();
        // The default policy keeps the original id form, byte for byte.
        let policy_byte = (policy != CredentialPolicy::DEFAULT).then(|| policy.to_byte());
        let mut id = nonce.to_vec();
        id.extend(policy_byte);
        id.extend(self.credential_tag(&nonce, policy_byte, rp_id_hash));
        let cred = self
            .credential(&id, rp_id_hash)
            .expect("freshly minted id is ours");
        (id, cred)
    }

    /// CredRandomWithUV or CredRandomWithoutUV (§12.5); None for a credential made without
    /// hmac-secret.
    pub(super) fn cred_random(
        &self,
        cred: &OwnCredential,
        rp_id_hash: &[u8],
        uv: bool,
    ) -> Option<[u8; 32]> {
        cred.policy.hmac_secret.then(|| {
            hmac(
                &self.state.master,
                &[b"credRandom", &[u8::from(uv)], &cred.nonce, rp_id_hash],
            )
        })
    }
}
