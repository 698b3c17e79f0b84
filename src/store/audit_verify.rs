//! `keygate audit verify`: walk the audit chain of a database file, read-only (no migration,
//! no write, the daemon may be running), from the newest retention anchor (or the genesis) in
//! seq order, and name the first entry that breaks it; then check the head given on the
//! command line and the stored signed head against the chain's end.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;

use super::db::{params, Connection, OptionalExtension};

use super::audit_chain::{entry_hash, hash32, HeadKey, StoredEntry, ENTRY_COLUMNS, GENESIS};
use super::migrations::AUDIT_CHAIN_VERSION;
use super::{Result, StoreError};

/// A head kept outside keygate (`--head SEQ:HASH`, the hash in hex).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GivenHead {
    pub seq: i64,
    pub hash: [u8; 32],
}

impl FromStr for GivenHead {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (seq, hash) = s
            .split_once(':')
            .ok_or("expected SEQ:HASH (the hash as 64 hex digits)")?;
        let seq = seq
            .parse::<i64>()
            .ok()
            .filter(|s| *s >= 0)
            .ok_or("SEQ must be a number")?;
        let hash = hex::decode(hash)
            .ok()
            .and_then(|h| <[u8; 32]>::try_from(h).ok())
            .ok_or("HASH must be 64 hex digits")?;
        Ok(GivenHead { seq, hash })
    }
}

/// Which head a head check was about.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HeadSource {
    /// `--head`.
    Given,
    /// The signed head the daemon stored (`audit_signed_head`).
    Stored,
    /// SQLite's counter of the highest seq ever given out (`sqlite_sequence`), which deleting
    /// entries leaves as it was.
    Counter,
}

impl std::fmt::Display for HeadSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HeadSource::Given => "the given head",
            HeadSource::Stored => "the stored signed head",
            HeadSource::Counter => "the highest seq ever given out",
        })
    }
}

/// The first thing wrong with the chain.
#[derive(Debug, Clone, PartialEq)]
pub enum AuditBreak {
    /// The entry's content no longer matches its hash.
    Edited { seq: i64 },
    /// Entries from `seq` on are missing: the next one there is `next` (None: none at all).
    Deleted { seq: i64, next: Option<i64> },
    /// The entry at `seq` was chained at `original` (its seq was changed).
    Reordered { seq: i64, original: i64 },
    /// The entry matches its hash but its predecessor hash is not the hash of the entry before
    /// it (or of the anchor): the entry before was replaced.
    PrevMismatch { seq: i64 },
    /// The entry has no hash.
    Unchained { seq: i64 },
    /// An entry below the newest retention anchor (`anchor`), which the purge removes.
    BeforeAnchor { seq: i64, anchor: i64 },
    /// The chain ends before the head at `head`: its tail from `seq` on was cut.
    CutTail {
        seq: i64,
        head: i64,
        source: HeadSource,
    },
    /// The entry at the head's seq has another hash than the head.
    HeadDiffers { seq: i64, source: HeadSource },
    /// The stored signed head's signature does not verify under the head key.
    BadSignature { seq: i64 },
}

impl AuditBreak {
    /// The seq the break is named by.
    pub fn seq(&self) -> i64 {
        match self {
            AuditBreak::Edited { seq }
            | AuditBreak::Deleted { seq, .. }
            | AuditBreak::Reordered { seq, .. }
            | AuditBreak::PrevMismatch { seq }
            | AuditBreak::Unchained { seq }
            | AuditBreak::BeforeAnchor { seq, .. }
            | AuditBreak::CutTail { seq, .. }
            | AuditBreak::HeadDiffers { seq, .. }
            | AuditBreak::BadSignature { seq } => *seq,
        }
    }
}

impl std::fmt::Display for AuditBreak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuditBreak::Edited { seq } => {
                write!(f, "seq {seq}: content edited (hash mismatch)")
            }
            AuditBreak::Deleted {
                seq,
                next: Some(next),
            } => write!(
                f,
                "seq {seq}: entry deleted (seq gap: the next entry is seq {next})"
            ),
            AuditBreak::Deleted { seq, next: None } => {
                write!(f, "seq {seq}: entry deleted (no entry from here on)")
            }
            AuditBreak::Reordered { seq, original } => write!(
                f,
                "seq {seq}: entries reordered (this entry was chained at seq {original})"
            ),
            AuditBreak::PrevMismatch { seq } => write!(
                f,
                "seq {seq}: prev mismatch (its predecessor hash is not the hash of the entry \
                 before it: that entry was replaced)"
            ),
            AuditBreak::Unchained { seq } => write!(f, "seq {seq}: entry has no hash"),
            AuditBreak::BeforeAnchor { seq, anchor } => write!(
                f,
                "seq {seq}: entry before the retention anchor at seq {anchor}"
            ),
            AuditBreak::CutTail { seq, head, source } => write!(
                f,
                "seq {seq}: tail cut (the chain ends at seq {}, {source} is seq {head})",
                seq - 1
            ),
            AuditBreak::HeadDiffers { seq, source } => {
                write!(f, "seq {seq}: hash differs from {source}")
            }
            AuditBreak::BadSignature { seq } => write!(
                f,
                "seq {seq}: the stored signed head's signature does not verify"
            ),
        }
    }
}

/// What the walk found.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditVerdict {
    /// Entries walked (up to the break, if any).
    pub entries: u64,
    /// The newest entry walked, or where the chain starts (the anchor's predecessor, the
    /// genesis as seq 0) when there is none.
    pub head: (i64, [u8; 32]),
    pub broken: Option<AuditBreak>,
    /// What could not be checked (no head key, a head older than the anchor).
    pub notes: Vec<String>,
}

impl std::fmt::Display for AuditVerdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.broken {
            None => write!(
                f,
                "audit chain intact: {} entries, head {} {}",
                self.entries,
                self.head.0,
                hex::encode(self.head.1)
            ),
            Some(b) => write!(f, "audit chain broken at {b}"),
        }
    }
}

/// Candidate seqs tried at most when looking for where a moved entry was chained.
const MAX_REORDER_SEARCH: i64 = 5_000_000;

/// Where the entry `row` (whose hash does not match at its seq) was chained: a seq at which
/// its content, with its stored predecessor hash, gives its stored hash.
fn original_seq(
    c: &Connection,
    start: i64,
    row: &StoredEntry,
    prev: &[u8; 32],
    hash: &[u8; 32],
) -> Result<Option<i64>> {
    let matches = |s: i64| entry_hash(&row.fields(s), prev) == *hash;
    let after_prev: Option<i64> = c
        .query_row(
            "SELECT seq FROM audit WHERE hash = ?1",
            params![&prev[..]],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(s) = after_prev.map(|s| s + 1).filter(|&s| matches(s)) {
        return Ok(Some(s));
    }
    let (lo, hi): (Option<i64>, Option<i64>) =
        c.query_row("SELECT min(seq), max(seq) FROM audit", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    let (lo, hi) = (lo.unwrap_or(start).min(start), hi.unwrap_or(0));
    Ok((lo..=hi.min(lo + MAX_REORDER_SEARCH)).find(|&s| matches(s)))
}

/// Walk the chain of the database at `db` (see the module documentation). `key`: the head
/// key, to check the stored signed head's signature (None: only its place in the chain is
/// checked). An `Err` means the chain could not be read at all.
pub fn verify_audit_chain(
    db: &Path,
    key: Option<&HeadKey>,
    given: Option<&GivenHead>,
) -> Result<AuditVerdict> {
    use rusqlite::OpenFlags;
    let c = rusqlite::Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    c.busy_timeout(std::time::Duration::from_secs(5))?;
    verify_audit_chain_on(&Connection::from(c), key, given)
}

/// [`verify_audit_chain`] of the campus store at `target` (PostgreSQL).
pub fn verify_campus_audit_chain(
    target: std::sync::Arc<super::db::PgTarget>,
    key: Option<&HeadKey>,
    given: Option<&GivenHead>,
) -> Result<AuditVerdict> {
    let now: super::db::NowFn =
        std::sync::Arc::new(|| super::fmt_time(time::OffsetDateTime::now_utc()));
    verify_audit_chain_on(&Connection::postgres(target, now), key, given)
}

/// [`verify_audit_chain`] of the database on `c` (the campus store's, or a SQLite file's).
pub fn verify_audit_chain_on(
    c: &Connection,
    key: Option<&HeadKey>,
    given: Option<&GivenHead>,
) -> Result<AuditVerdict> {
    let version: i64 = super::migrations::current_version(c)?;
    if version < AUDIT_CHAIN_VERSION {
        return Err(StoreError::Db(format!(
            "the database predates the audit chain (schema version {version}): start keygate \
             once to chain its audit log"
        )));
    }
    // One read transaction: the walk sees one state even while the daemon appends.
    c.execute_batch("BEGIN")?;
    let anchor: Option<(i64, Vec<u8>)> = c
        .query_row(
            "SELECT seq, prev_hash FROM audit_anchor ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let stored: Option<(i64, Vec<u8>, Vec<u8>)> = c
        .query_row(
            "SELECT seq, hash, signature FROM audit_signed_head WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let (start, start_prev) = match &anchor {
        Some((seq, prev)) => (
            *seq,
            <[u8; 32]>::try_from(prev.as_slice()).unwrap_or(GENESIS),
        ),
        None => (1, GENESIS),
    };
    let mut verdict = AuditVerdict {
        entries: 0,
        head: (start - 1, start_prev),
        broken: None,
        notes: Vec::new(),
    };
    let mut heads: Vec<(i64, [u8; 32], HeadSource)> = Vec::new();
    if let Some(g) = given {
        heads.push((g.seq, g.hash, HeadSource::Given));
    }
    if let Some((seq, hash, signature)) = &stored {
        let hash = hash32(Some(hash)).unwrap_or(GENESIS);
        match key {
            Some(k) if !k.verifies(*seq, &hash, signature) => {
                verdict.broken = Some(AuditBreak::BadSignature { seq: *seq });
                return Ok(verdict);
            }
            Some(_) => {}
            None => verdict.notes.push(
                "the head key is unreadable: the stored head's signature was not checked".into(),
            ),
        }
        heads.push((*seq, hash, HeadSource::Stored));
    }
    // SQLite only: the campus store gives seqs out itself (no AUTOINCREMENT counter); there
    // the stored head and `--head` guard the tail.
    let counter: Option<i64> = match c.backend() {
        super::db::Backend::Sqlite => c
            .query_row(
                "SELECT seq FROM sqlite_sequence WHERE name = 'audit'",
                [],
                |r| r.get(0),
            )
            .optional()?,
        super::db::Backend::Postgres => None,
    };
    let mut seen: HashMap<i64, [u8; 32]> = HashMap::new();
    verdict.broken = walk(c, start, &mut verdict, &heads, &mut seen)?;
    if verdict.broken.is_some() {
        return Ok(verdict);
    }
    let last = verdict.head.0;
    if verdict.entries == 0 && anchor.is_some() {
        verdict.broken = Some(AuditBreak::Deleted {
            seq: start,
            next: None,
        });
        return Ok(verdict);
    }
    for (seq, hash, source) in heads {
        if seq > last {
            verdict.broken = Some(AuditBreak::CutTail {
                seq: last + 1,
                head: seq,
                source,
            });
        } else if seq == start - 1 {
            if hash != start_prev {
                verdict.broken = Some(AuditBreak::HeadDiffers { seq, source });
            }
        } else if seq < start {
            verdict.notes.push(format!(
                "{source} (seq {seq}) predates the retention anchor at seq {start}: not checked"
            ));
        } else if seen.get(&seq) != Some(&hash) {
            verdict.broken = Some(AuditBreak::HeadDiffers { seq, source });
        }
        if verdict.broken.is_some() {
            return Ok(verdict);
        }
    }
    if let Some(head) = counter.filter(|&s| s > last) {
        verdict.broken = Some(AuditBreak::CutTail {
            seq: last + 1,
            head,
            source: HeadSource::Counter,
        });
    }
    Ok(verdict)
}

/// Walk the entries in seq order from `start`; returns the first break. Records in `verdict`
/// the entries walked and the newest, and in `seen` the hashes at the heads' seqs.
fn walk(
    c: &Connection,
    start: i64,
    verdict: &mut AuditVerdict,
    heads: &[(i64, [u8; 32], HeadSource)],
    seen: &mut HashMap<i64, [u8; 32]>,
) -> Result<Option<AuditBreak>> {
    let mut st = c.prepare(&format!("SELECT {ENTRY_COLUMNS} FROM audit ORDER BY seq"))?;
    let mut rows = st.query([])?;
    let mut expected = start;
    while let Some(r) = rows.next()? {
        let row = StoredEntry::read(&r)?;
        if row.seq < start {
            return Ok(Some(AuditBreak::BeforeAnchor {
                seq: row.seq,
                anchor: start,
            }));
        }
        if row.seq > expected {
            return Ok(Some(AuditBreak::Deleted {
                seq: expected,
                next: Some(row.seq),
            }));
        }
        let (Some(prev), Some(hash)) = (
            hash32(row.prev_hash.as_deref()),
            hash32(row.hash.as_deref()),
        ) else {
            return Ok(Some(AuditBreak::Unchained { seq: row.seq }));
        };
        if entry_hash(&row.fields(row.seq), &prev) != hash {
            return Ok(Some(match original_seq(c, start, &row, &prev, &hash)? {
                Some(original) if original != row.seq => AuditBreak::Reordered {
                    seq: row.seq,
                    original,
                },
                _ => AuditBreak::Edited { seq: row.seq },
            }));
        }
        if prev != verdict.head.1 {
            return Ok(Some(AuditBreak::PrevMismatch { seq: row.seq }));
        }
        if heads.iter().any(|h| h.0 == row.seq) {
            seen.insert(row.seq, hash);
        }
        verdict.head = (row.seq, hash);
        verdict.entries += 1;
        expected += 1;
    }
    Ok(None)
}
