//! `keygate mds update FILE`: verify a downloaded BLOB (signature chain to the configured root,
//! `nextUpdate` not passed) and install it where the daemon reads it, atomically and 0600. A
//! BLOB with a lower serial (`no`) than the installed one is refused: an attacker, or an old
//! download, must not roll back revocations. The same serial again is accepted (a reinstall).

use std::path::{Path, PathBuf};

use time::{Date, OffsetDateTime};

use crate::base::clock::Clock;
use crate::config::Config;

use super::super::{mds_roots, system_time, AttestationError};
use super::{unverified_serial, verify_blob};

/// What `keygate mds update` installed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Installed {
    pub path: PathBuf,
    pub no: u64,
    pub next_update: Date,
    pub entries: usize,
    /// The serial of the BLOB it replaced, if one was installed.
    pub replaced: Option<u64>,
}

/// Verify the BLOB in `file` and install it at `[attestation] mds_blob` (or
/// `<data_dir>/mds-blob.jwt`), whose directory must exist.
pub fn install_blob(
    cfg: &Config,
    file: &Path,
    clock: &dyn Clock,
) -> Result<Installed, AttestationError> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| AttestationError::File(format!("{}: {e}", file.display())))?;
    let roots = mds_roots(&cfg.attestation)?;
    let data = verify_blob(&text, &roots, system_time(clock))?;
    let now: OffsetDateTime = clock.now();
    if !data.is_current(now) {
        return Err(AttestationError::BlobStale {
            next_update: data.next_update,
        });
    }
    let path = cfg.attestation.mds_blob_path(&cfg.data_dir);
    let replaced = match std::fs::read_to_string(&path) {
        Ok(old) => unverified_serial(&old),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(AttestationError::File(format!("{}: {e}", path.display()))),
    };
    if let Some(installed) = replaced.filter(|&old| data.no < old) {
        return Err(AttestationError::BlobOlder {
            offered: data.no,
            installed,
        });
    }
    crate::base::fs::replace_private(&path, text.trim().as_bytes())
        .map_err(|e| AttestationError::File(format!("{}: {e}", path.display())))?;
    Ok(Installed {
        path,
        no: data.no,
        next_update: data.next_update,
        entries: data.entries,
        replaced,
    })
}
