//! Six-digit codes: drawn uniformly from the OS CSPRNG, kept as a keyed hash (HMAC-SHA256)
//! compared in constant time, and, only while a challenge lives, encrypted (AES-256-CBC then
//! HMAC-SHA256, encrypt-then-MAC) so that "Resend code" can send the same code again.
//! All keys derive from one 32-byte secret in `<data_dir>/sms.key` (mode 0600).

use std::path::Path;

use aes::cipher::{block_padding::Pkcs7, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::error::SmsError;

type HmacSha256 = Hmac<Sha256>;

/// A code in memory only; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Code(String);

/// How many codes there are (000000..=999999).
const CODES: u32 = 1_000_000;
/// The largest multiple of [`CODES`] that fits in a u32 draw: draws at or above it are rejected,
/// so that every code has exactly `ACCEPT_BELOW / CODES` draws mapping to it (no modulo bias).
const ACCEPT_BELOW: u32 = (u32::MAX / CODES) * CODES;

impl Code {
    /// A code from the OS CSPRNG, uniform over 000000..=999999.
    pub fn generate() -> Code {
        Self::generate_with(&mut OsRng)
    }

    /// Uniform over 000000..=999999 given uniform u32 draws: rejection sampling, drawing again
    /// whenever a draw falls in the top `2^32 mod 10^6` values that a plain modulo would
    /// fold onto the low codes.
    pub fn generate_with(rng: &mut impl RngCore) -> Code {
        loop {
            let v = rng.next_u32();
            if v < ACCEPT_BELOW {
                return Code(format!("{:06}", v % CODES));
            }
        }
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// What a user typed, when it has the shape of a code (6 digits, spaces ignored).
    pub fn parse_typed(s: &str) -> Option<Code> {
        let digits: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (digits.len() == 6 && digits.bytes().all(|b| b.is_ascii_digit())).then_some(Code(digits))
    }
}

impl std::fmt::Debug for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Code(<redacted>)")
    }
}

pub struct CodeKeys {
    mac: [u8; 32],
    enc: [u8; 32],
    enc_auth: [u8; 32],
}

fn derive(secret: &[u8], label: &[u8]) -> [u8; 32] {
    let mut m = <HmacSha256 as Mac>::new_from_slice(secret).expect("any key length");
    m.update(label);
    m.finalize().into_bytes().into()
}

impl CodeKeys {
    pub fn from_secret(secret: &[u8; 32]) -> CodeKeys {
        CodeKeys {
            mac: derive(secret, b"keygate sms code mac"),
            enc: derive(secret, b"keygate sms code enc"),
            enc_auth: derive(secret, b"keygate sms code enc auth"),
        }
    }

    /// Load `<data_dir>/sms.key`, creating it (0600) on first use.
    pub fn load_or_create(data_dir: &Path) -> Result<CodeKeys, SmsError> {
        let path = data_dir.join("sms.key");
        let io = |e: std::io::Error| SmsError::Internal(format!("{}: {e}", path.display()));
        let secret = match std::fs::read(&path) {
            Ok(b) if b.len() == 32 => b,
            Ok(_) => {
                return Err(SmsError::Internal(format!(
                    "{} is not 32 bytes",
                    path.display()
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut s = vec![0u8; 32];
                OsRng.fill_bytes(&mut s);
                write_private(&path, &s).map_err(io)?;
                s
            }
            Err(e) => return Err(io(e)),
        };
        let mut arr = [0u8; 32];
        arr.copy_from_slice(&secret);
        Ok(CodeKeys::from_secret(&arr))
    }

    /// Keyed hash, bound to the challenge id (a code cannot be moved between challenges).
    pub fn mac(&self, challenge_id: &str, code: &Code) -> Vec<u8> {
        let mut m = <HmacSha256 as Mac>::new_from_slice(&self.mac).expect("key");
        m.update(challenge_id.as_bytes());
        m.update(&[0]);
        m.update(code.expose().as_bytes());
        m.finalize().into_bytes().to_vec()
    }

    pub fn matches(&self, challenge_id: &str, typed: &Code, stored_mac: &[u8]) -> bool {
        bool::from(self.mac(challenge_id, typed).ct_eq(stored_mac))
    }

    pub fn encrypt(&self, challenge_id: &str, code: &Code) -> Vec<u8> {
        let mut iv = [0u8; 16];
        OsRng.fill_bytes(&mut iv);
        let ct = cbc::Encryptor::<aes::Aes256>::new(&self.enc.into(), &iv.into())
            .encrypt_padded_vec_mut::<Pkcs7>(code.expose().as_bytes());
        let mut out = iv.to_vec();
        out.extend(ct);
        let tag = self.tag(challenge_id, &out);
        out.extend(tag);
        out
    }

    pub fn decrypt(&self, challenge_id: &str, blob: &[u8]) -> Option<Code> {
        if blob.len() < 16 + 16 + 32 {
            return None;
        }
        let (body, tag) = blob.split_at(blob.len() - 32);
        if !bool::from(self.tag(challenge_id, body).ct_eq(tag)) {
            return None;
        }
        let (iv, ct) = body.split_at(16);
        let iv: [u8; 16] = iv.try_into().ok()?;
        let pt = cbc::Decryptor::<aes::Aes256>::new(&self.enc.into(), &iv.into())
            .decrypt_padded_vec_mut::<Pkcs7>(ct)
            .ok()?;
        Code::parse_typed(std::str::from_utf8(&pt).ok()?)
    }

    fn tag(&self, challenge_id: &str, body: &[u8]) -> Vec<u8> {
        let mut m = <HmacSha256 as Mac>::new_from_slice(&self.enc_auth).expect("key");
        m.update(challenge_id.as_bytes());
        m.update(&[0]);
        m.update(body);
        m.finalize().into_bytes().to_vec()
    }
}

fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Yields the scripted u32 draws in order, and counts them.
    struct Scripted(Vec<u32>, usize);

    impl RngCore for Scripted {
        fn next_u32(&mut self) -> u32 {
            let v = *self.0.get(self.1).expect("the script ran out of draws");
            self.1 += 1;
            v
        }
        fn next_u64(&mut self) -> u64 {
            u64::from(self.next_u32()) << 32 | u64::from(self.next_u32())
        }
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            for chunk in dest.chunks_mut(4) {
                let b = self.next_u32().to_le_bytes();
                chunk.copy_from_slice(&b[..chunk.len()]);
            }
        }
        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
            self.fill_bytes(dest);
            Ok(())
        }
    }

    #[test]
    fn draws_in_the_rejection_zone_are_rejected() {
        assert_eq!(ACCEPT_BELOW, 4_294_000_000);
        // u32::MAX would be code 967295 under a plain modulo (one of the over-represented low
        // codes): it must be thrown away and the next draw used.
        let mut rng = Scripted(vec![u32::MAX, 42], 0);
        assert_eq!(Code::generate_with(&mut rng).expose(), "000042");
        assert_eq!(rng.1, 2, "the first draw was rejected");
        // The zone starts exactly at ACCEPT_BELOW; the draw just below it is the last code.
        let mut rng = Scripted(vec![ACCEPT_BELOW, ACCEPT_BELOW + 1, ACCEPT_BELOW - 1], 0);
        assert_eq!(Code::generate_with(&mut rng).expose(), "999999");
        assert_eq!(rng.1, 3);
        let mut rng = Scripted(vec![0], 0);
        assert_eq!(Code::generate_with(&mut rng).expose(), "000000");
    }

    #[test]
    fn os_codes_are_six_digits() {
        for _ in 0..1000 {
            let c = Code::generate();
            assert_eq!(c.expose().len(), 6);
            assert!(c.expose().bytes().all(|b| b.is_ascii_digit()));
        }
    }

    #[test]
    fn mac_is_keyed_bound_to_the_challenge_and_checked() {
        let k = CodeKeys::from_secret(&[1; 32]);
        let other = CodeKeys::from_secret(&[2; 32]);
        let c = Code::parse_typed("123 456").unwrap();
        let mac = k.mac("ch1", &c);
        assert!(k.matches("ch1", &c, &mac));
        assert!(!k.matches("ch2", &c, &mac));
        assert!(!other.matches("ch1", &c, &mac));
        assert!(!k.matches("ch1", &Code::parse_typed("123457").unwrap(), &mac));
        assert!(Code::parse_typed("12345").is_none() && Code::parse_typed("12345a").is_none());
        assert_eq!(format!("{c:?}"), "Code(<redacted>)");
    }

    #[test]
    fn encryption_round_trips_and_detects_tampering() {
        let k = CodeKeys::from_secret(&[3; 32]);
        let c = Code::generate();
        let blob = k.encrypt("ch", &c);
        assert_eq!(k.decrypt("ch", &blob), Some(c.clone()));
        assert_eq!(k.decrypt("other", &blob), None);
        let mut bad = blob.clone();
        bad[20] ^= 1;
        assert_eq!(k.decrypt("ch", &bad), None);
    }

    #[test]
    fn the_secret_file_is_private_and_stable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let a = CodeKeys::load_or_create(dir.path()).unwrap();
        let meta = std::fs::metadata(dir.path().join("sms.key")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let b = CodeKeys::load_or_create(dir.path()).unwrap();
        let c = Code::generate();
        assert!(b.matches("x", &c, &a.mac("x", &c)));
    }
}
