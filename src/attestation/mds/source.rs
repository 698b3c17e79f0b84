//! The installed BLOB as the policy sees it: read and verified once per version of the file
//! (`keygate mds update` renames a new file into place, so a running daemon picks it up at the
//! next enrollment without a restart), and judged current or stale against the clock at every
//! use.
//!
//! A file that appears but does not verify is logged and ignored: the last verified BLOB stays
//! in use until the file changes again (the real BLOB is several megabytes; it is not read again
//! on every enrollment).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crypto_glue::x509::Certificate;
use time::OffsetDateTime;

use crate::base::sync::lock;

use super::{verify_blob, MdsData};

/// The BLOB's state at one moment.
#[derive(Debug, Clone)]
pub enum MdsState {
    /// No file.
    Absent,
    /// Verified and on or before its `nextUpdate`.
    Current(Arc<MdsData>),
    /// Verified, but past its `nextUpdate`: its entries are not used.
    Stale(Arc<MdsData>),
    /// A file that does not verify (and no earlier verified BLOB).
    Invalid(String),
}

impl MdsState {
    pub fn as_str(&self) -> &'static str {
        match self {
            MdsState::Absent => "absent",
            MdsState::Current(_) => "current",
            MdsState::Stale(_) => "stale",
            MdsState::Invalid(_) => "invalid",
        }
    }

    /// The data the policy may use: a current BLOB's.
    pub fn current(&self) -> Option<&MdsData> {
        match self {
            MdsState::Current(d) => Some(d),
            _ => None,
        }
    }
}

/// Which version of the file was read: a rename gives a new inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    mtime_ns: i128,
    len: u64,
}

#[derive(Default)]
struct Cache {
    stamp: Option<Stamp>,
    verified: Option<Arc<MdsData>>,
    failure: Option<String>,
}

pub struct MdsSource {
    path: PathBuf,
    roots: Vec<Certificate>,
    cache: Mutex<Cache>,
}

impl MdsSource {
    /// The BLOB at `path`, trusted when its chain leads to one of `roots`.
    pub fn new(path: PathBuf, roots: Vec<Certificate>) -> MdsSource {
        MdsSource {
            path,
            roots,
            cache: Mutex::new(Cache::default()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The BLOB's state at `now`, reading the file again if it changed since the last call.
    pub fn state(&self, now: SystemTime) -> MdsState {
        let mut cache = lock(&self.cache);
        let stamp = match std::fs::metadata(&self.path) {
            Ok(m) => Stamp {
                dev: m.dev(),
                ino: m.ino(),
                mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
                len: m.len(),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                *cache = Cache::default();
                return MdsState::Absent;
            }
            Err(e) => return MdsState::Invalid(format!("{}: {e}", self.path.display())),
        };
        if cache.stamp != Some(stamp) {
            cache.stamp = Some(stamp);
            let read = std::fs::read_to_string(&self.path)
                .map_err(|e| e.to_string())
                .and_then(|text| verify_blob(&text, &self.roots, now).map_err(|e| e.to_string()));
            match read {
                Ok(data) => {
                    tracing::info!(
                        path = %self.path.display(), no = data.no,
                        next_update = %data.next_update, entries = data.entries,
                        "FIDO metadata BLOB loaded"
                    );
                    cache.verified = Some(Arc::new(data));
                    cache.failure = None;
                }
                Err(e) => {
                    tracing::error!(
                        path = %self.path.display(), error = %e,
                        kept_no = cache.verified.as_ref().map(|d| d.no),
                        "FIDO metadata BLOB does not verify; not used"
                    );
                    cache.failure = Some(e);
                }
            }
        }
        match (&cache.verified, &cache.failure) {
            (Some(d), _) if d.is_current(OffsetDateTime::from(now)) => MdsState::Current(d.clone()),
            (Some(d), _) => MdsState::Stale(d.clone()),
            (None, Some(e)) => MdsState::Invalid(format!("{}: {e}", self.path.display())),
            (None, None) => MdsState::Absent,
        }
    }
}
