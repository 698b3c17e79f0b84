//! PIN/UV auth protocol 1 (CTAP 2.1 §6.5.6): the KDF, AES-256-CBC with a zero IV, the truncated
//! HMAC, the PIN hash and the 64-byte PIN padding. Shared by the platform side (`client`) and the
//! simulated key, so both ends use the same primitives.

use aes::cipher::{block_padding::NoPadding, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type Enc = cbc::Encryptor<aes::Aes256>;
type Dec = cbc::Decryptor<aes::Aes256>;

/// kdf(Z) = SHA-256(Z), Z = the ECDH shared point's x-coordinate.
pub fn kdf(z: &[u8]) -> [u8; 32] {
    Sha256::digest(z).into()
}

/// AES-256-CBC with an all-zero IV and no padding; `data` must be whole blocks.
pub fn encrypt(key: &[u8; 32], data: &[u8]) -> Vec<u8> {
    let mut buf = data.to_vec();
    let n = buf.len();
    Enc::new(key.into(), &[0u8; 16].into())
        .encrypt_padded_mut::<NoPadding>(&mut buf, n)
        .expect("whole blocks");
    buf
}

pub fn decrypt(key: &[u8; 32], data: &[u8]) -> Option<Vec<u8>> {
    if data.is_empty() || data.len() % 16 != 0 {
        return None;
    }
    let mut buf = data.to_vec();
    Dec::new(key.into(), &[0u8; 16].into())
        .decrypt_padded_mut::<NoPadding>(&mut buf)
        .ok()
        .map(|b| b.to_vec())
}

/// LEFT(HMAC-SHA-256(key, message), 16).
pub fn authenticate(key: &[u8], message: &[u8]) -> [u8; 16] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
    mac.update(message);
    let full = mac.finalize().into_bytes();
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}

/// Constant-time check of a pinUvAuthParam.
pub fn verify(key: &[u8], message: &[u8], param: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    param.len() == 16 && bool::from(authenticate(key, message).ct_eq(param))
}

/// LEFT(SHA-256(pin), 16).
pub fn pin_hash(pin: &str) -> [u8; 16] {
    let d = Sha256::digest(pin.as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    out
}

/// The new PIN, UTF-8, zero-padded to 64 bytes (§6.5.5.5).
pub fn pad_pin(pin: &str) -> Vec<u8> {
    let mut p = pin.as_bytes().to_vec();
    p.resize(64, 0);
    p
}

/// Undo [`pad_pin`]; None when the padding or UTF-8 is malformed.
pub fn unpad_pin(padded: &[u8]) -> Option<String> {
    if padded.len() < 64 {
        return None;
    }
    let end = padded.iter().position(|b| *b == 0).unwrap_or(padded.len());
    if padded[end..].iter().any(|b| *b != 0) {
        return None;
    }
    String::from_utf8(padded[..end].to_vec()).ok()
}
