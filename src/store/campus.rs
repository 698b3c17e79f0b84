//! What several daemons sharing one campus store must agree on beyond the data: the keys in
//! their data dirs that make the stored data readable (the SMS code key: a code stored as a
//! keyed hash at one kiosk is checked at another; the audit head key: the signed head one
//! daemon writes is verified by all). Each key's fingerprint (HMAC-SHA256 keyed by the key
//! over a fixed label: it tells nothing of the key) is recorded by the first daemon; a daemon
//! whose key differs refuses to start, naming the file to copy.

use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{Result, Store, StoreError};

/// The fingerprint of a key file's bytes.
pub fn key_fingerprint(key: &[u8]) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(b"keygate campus key fingerprint v1");
    m.finalize().into_bytes().to_vec()
}

/// The daemon's node id at `path` (16 random bytes, hex), created on first use. Not a
/// secret; it must differ between kiosks (copy only the keys between data dirs).
pub(super) fn load_or_create_node_id(path: &Path) -> std::io::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        Ok(_) => Err(std::io::Error::other("empty node id")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use rand::RngCore;
            let mut b = [0u8; 16];
            rand::rngs::OsRng.fill_bytes(&mut b);
            let id = hex::encode(b);
            crate::base::fs::write_new_private(path, id.as_bytes())?;
            Ok(id)
        }
        Err(e) => Err(e),
    }
}

impl Store {
    /// Record `name`'s fingerprint as the campus's when it has none yet; `Err` naming the file
    /// when the campus already uses a different key. A SQLite store has no campus: `Ok`.
    pub fn check_campus_key(&self, name: &str, key: &[u8]) -> Result<()> {
        if !self.is_shared() {
            return Ok(());
        }
        let fingerprint = key_fingerprint(key);
        let recorded: Vec<u8> = self.tx(|c| {
            c.execute_batch(
                "CREATE TABLE IF NOT EXISTS campus_keys (name TEXT PRIMARY KEY, \
                 fingerprint BYTEA NOT NULL, recorded_at TEXT NOT NULL)",
            )?;
            c.execute(
                "INSERT OR IGNORE INTO campus_keys (name, fingerprint, recorded_at) \
                 VALUES (?1, ?2, keygate_now())",
                super::db::params![name, fingerprint],
            )?;
            Ok(c.query_row(
                "SELECT fingerprint FROM campus_keys WHERE name = ?1",
                [name],
                |r| r.get(0),
            )?)
        })?;
        if recorded != fingerprint {
            return Err(StoreError::Conflict(format!(
                "{name} in this data dir differs from the one the other kiosks of this campus \
                 store use: copy {name} from a kiosk that already serves (see README, \
                 \"Campus: several kiosks\")"
            )));
        }
        Ok(())
    }
}
