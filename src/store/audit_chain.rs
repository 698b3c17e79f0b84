//! The audit log's hash chain: the canonical encoding each entry's hash covers, the signed
//! head and its key. Pure functions; the writer side is `audit_writer.rs`, the checker
//! `audit_verify.rs`.
//!
//! Entry hash, version 1: SHA-256 over the concatenation of
//!
//! | field           | encoding                                                    |
//! |-----------------|-------------------------------------------------------------|
//! | domain tag      | the 22 ASCII bytes `keygate.audit.entry.v1`                 |
//! | `seq`           | 8 bytes, big-endian two's complement                        |
//! | `at`            | text                                                        |
//! | `event`         | text                                                        |
//! | `user`          | optional text                                               |
//! | `credential_id` | optional text                                               |
//! | `ceremony_id`   | optional text                                               |
//! | `actor`         | text                                                        |
//! | `detail`        | text                                                        |
//! | `prev_hash`     | 32 bytes: the previous entry's hash (32 zero bytes before the first entry) |
//!
//! where text = the byte length as 8 bytes big-endian, then the UTF-8 bytes; optional text =
//! one byte 0x00 when absent, or 0x01 then text. Every field is length-prefixed or of fixed
//! size, so no two different entries encode to the same bytes. `at` is the stored RFC 3339
//! text; `detail` is the stored JSON text, which keygate writes as canonical JSON
//! ([`canonical_json`]). The hash covers the stored bytes as they are, so any rewrite of them
//! (even to an equivalent JSON) shows.
//!
//! Signed head: HMAC-SHA256 under the head key (32 bytes, `audit-head.key` next to the
//! database) over the 21 ASCII bytes `keygate.audit.head.v1`, then `seq` as 8 bytes
//! big-endian, then the entry's 32-byte hash.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use rand::RngCore;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The previous hash of the first entry of a chain that starts at the beginning.
pub const GENESIS: [u8; 32] = [0; 32];

const ENTRY_TAG: &[u8] = b"keygate.audit.entry.v1";
const HEAD_TAG: &[u8] = b"keygate.audit.head.v1";

/// The head key's file name, in the database's directory (the data dir).
pub const HEAD_KEY_FILE: &str = "audit-head.key";

/// Every this many entries the writer stores the signed head in `audit_signed_head` and, once
/// committed, writes it to the log (target `keygate::audit`) for an external copy.
pub const HEAD_EVERY: i64 = 100;

/// The fields of one entry as stored, which its hash covers (with its predecessor's hash).
#[derive(Debug, Clone, Copy)]
pub struct EntryFields<'a> {
    pub seq: i64,
    pub at: &'a str,
    pub event: &'a str,
    pub user: Option<&'a str>,
    pub credential_id: Option<&'a str>,
    pub ceremony_id: Option<&'a str>,
    pub actor: &'a str,
    pub detail: &'a str,
}

/// The columns [`StoredEntry::read`] reads, in its order.
pub(super) const ENTRY_COLUMNS: &str =
    "seq, at, event, actor, detail, user_name, credential_id, ceremony_id, prev_hash, hash";

/// One entry as stored (hashes as stored: NULL or of any length when tampered with).
pub(super) struct StoredEntry {
    pub seq: i64,
    /// `at`, `event`, `actor`, `detail`.
    texts: [String; 4],
    /// `user_name`, `credential_id`, `ceremony_id`.
    optional: [Option<String>; 3],
    pub prev_hash: Option<Vec<u8>>,
    pub hash: Option<Vec<u8>>,
}

impl StoredEntry {
    /// The entry from a row of [`ENTRY_COLUMNS`].
    pub(super) fn read(r: &super::db::Row<'_>) -> super::db::Result<StoredEntry> {
        Ok(StoredEntry {
            seq: r.get(0)?,
            texts: [r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?],
            optional: [r.get(5)?, r.get(6)?, r.get(7)?],
            prev_hash: r.get(8)?,
            hash: r.get(9)?,
        })
    }

    /// Its fields, as if it were at `seq`.
    pub(super) fn fields(&self, seq: i64) -> EntryFields<'_> {
        let [at, event, actor, detail] = &self.texts;
        let [user, cred, cer] = &self.optional;
        EntryFields {
            seq,
            at,
            event,
            user: user.as_deref(),
            credential_id: cred.as_deref(),
            ceremony_id: cer.as_deref(),
            actor,
            detail,
        }
    }
}

/// A stored hash as 32 bytes; None when it is NULL or of another length.
pub(super) fn hash32(v: Option<&[u8]>) -> Option<[u8; 32]> {
    v.and_then(|v| v.try_into().ok())
}

fn text(h: &mut Sha256, s: &str) {
    h.update((s.len() as u64).to_be_bytes());
    h.update(s.as_bytes());
}

fn optional_text(h: &mut Sha256, s: Option<&str>) {
    match s {
        None => h.update([0u8]),
        Some(s) => {
            h.update([1u8]);
            text(h, s);
        }
    }
}

/// The entry's hash (see the module documentation for the encoding).
pub fn entry_hash(e: &EntryFields<'_>, prev_hash: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(ENTRY_TAG);
    h.update(e.seq.to_be_bytes());
    text(&mut h, e.at);
    text(&mut h, e.event);
    optional_text(&mut h, e.user);
    optional_text(&mut h, e.credential_id);
    optional_text(&mut h, e.ceremony_id);
    text(&mut h, e.actor);
    text(&mut h, e.detail);
    h.update(prev_hash);
    h.finalize().into()
}

/// `v` as canonical JSON: no whitespace, every object's keys sorted by their UTF-8 bytes,
/// strings and numbers in serde_json's (deterministic) forms. The same value always gives
/// the same text, whatever order its keys were built in.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Where the head key of the database at `db` lives.
pub fn head_key_path(db: &Path) -> PathBuf {
    db.with_file_name(HEAD_KEY_FILE)
}

/// The key the head is signed with: 32 bytes from the OS's generator, kept in the data dir.
#[derive(Clone)]
pub struct HeadKey([u8; 32]);

impl std::fmt::Debug for HeadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HeadKey(..)")
    }
}

/// How often, and how long apart, a reader retries a key file another process is still
/// writing (it exists but is not yet 32 bytes long).
const KEY_READ_TRIES: u32 = 20;
const KEY_READ_PAUSE: std::time::Duration = std::time::Duration::from_millis(25);

impl HeadKey {
    /// A key for an in-memory database (nothing outlives it to check against).
    pub fn ephemeral() -> HeadKey {
        let mut k = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut k);
        HeadKey(k)
    }

    /// The key file at `path`; an error when it is missing or not exactly 32 bytes.
    pub fn read(path: &Path) -> std::io::Result<HeadKey> {
        let bytes = std::fs::read(path)?;
        let k: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            std::io::Error::new(
                ErrorKind::InvalidData,
                format!("{}: not a 32-byte key", path.display()),
            )
        })?;
        Ok(HeadKey(k))
    }

    /// The key file at `path`, created (0600, durably) when there is none. Another process
    /// creating it at the same moment wins; this one then reads its key.
    pub fn load_or_create(path: &Path) -> std::io::Result<HeadKey> {
        match std::fs::metadata(path) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let key = Self::ephemeral();
                match crate::base::fs::write_new_private(path, &key.0) {
                    Ok(()) => return Ok(key),
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
        let mut tries = 0;
        loop {
            match Self::read(path) {
                Err(e) if e.kind() == ErrorKind::InvalidData && tries < KEY_READ_TRIES => {
                    tries += 1;
                    std::thread::sleep(KEY_READ_PAUSE);
                }
                other => return other,
            }
        }
    }

    fn mac(&self, seq: i64, hash: &[u8; 32]) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(HEAD_TAG);
        mac.update(&seq.to_be_bytes());
        mac.update(hash);
        mac
    }

    /// The signature of the head (`seq`, `hash`).
    pub fn sign(&self, seq: i64, hash: &[u8; 32]) -> [u8; 32] {
        self.mac(seq, hash).finalize().into_bytes().into()
    }

    /// Whether `signature` signs the head (`seq`, `hash`) under this key (constant time).
    pub fn verifies(&self, seq: i64, hash: &[u8; 32], signature: &[u8]) -> bool {
        self.mac(seq, hash).verify_slice(signature).is_ok()
    }
}
