//! Durable state: a SQLite file in the data dir (the embedded default) or PostgreSQL shared by
//! a campus of kiosks (`[store] url`). This is the only module that names the database
//! drivers, and inside it only `db` (and SQLite-only parts of `engine`, `health` and tests).
//!
//! Contract: every multi-row change (a credential stored together with its ceremony's end and
//! the audit line) is one transaction, so a crash or kill at any instant leaves either all of
//! it or none. The database runs in WAL mode with `synchronous=NORMAL`: a killed process loses
//! nothing that was committed; an OS crash may lose the last commits but never consistency.
//!
//! Layout: `engine` (connections, writer thread, transactions, checkpointer), `migrations`, and
//! one file per aggregate (`users`, `credentials`, `ceremonies`, `audit`, `tokens`, `sms`,
//! `outbox`, `kiosk`, `fraud`); each adds its part of the [`Store`] facade in its own `impl Store` block.

mod audit;
pub mod audit_chain;
mod audit_verify;
mod audit_writer;
mod campus;
mod ceremonies;
mod copy;
mod credentials;
pub mod db;
mod engine;
mod entra;
mod fraud;
mod gauges;
mod health;
mod hooks;
mod inventory;
mod key_reset;
mod kiosk;
mod migrations;
mod migrations_pg;
mod outbox;
mod retention;
mod retention_export;
mod retention_rules;
mod sms;
mod sms_checks;
mod sqlite_file;
mod sweep;
mod tokens;
mod users;
mod writer;

pub use audit::{AuditEvent, AuditHead, NewAudit};
pub use audit_verify::{
    verify_audit_chain, verify_audit_chain_on, verify_campus_audit_chain, AuditBreak, AuditVerdict,
    GivenHead,
};
pub use ceremonies::CeremonyRecord;
pub use copy::CopyReport;
pub use credentials::{CredentialRecord, CredentialState};
pub use entra::{EntraPasskeyRecord, PhoneEntraSync};
pub use fraud::{FraudBlockRecord, MonthlyUsage, PrefixCounts};
pub use hooks::{HookCounts, HookDelivery};
pub use inventory::{EntraKeyFacts, KeyFilter, KeyKind, KeyRecord, KeyRef, KeyState};
pub use key_reset::ResetCredential;
pub use outbox::{NewOutbox, OutboxRecord};
pub use retention::{Closure, PurgeReport, PurgedUser, RetentionWindows, PURGE_ACTOR};
pub use sms::{
    BudgetCounts, PhoneRecord, SendLog, SmsChallengeRecord, SmsUserState, SEND_MINUTE_MS,
};
pub use sms_checks::{SendCheck, SendCheckQuery};
pub use sweep::{HotWindows, SweepReport};
pub use tokens::TokenRecord;
pub use users::{ResetReceipt, UserRecord};

pub(crate) use engine::{exec, exec_later, prepare, row};
use writer::BatchJob;

use std::sync::{mpsc, Arc, Mutex};

use db::Connection;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(String),
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
    /// [`Store::record_assertion`]: another ceremony moved the counter to or past the
    /// presented value first.
    #[error("the counter is not above the stored one")]
    CounterNotAbove,
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The database's storage cannot take the write: the disk is full (`SQLITE_FULL`, an I/O
    /// error while writing) or the database is at its page limit; nothing of the unit was
    /// stored. Also every write while the store reports `storage_full` (see `health.rs`).
    #[error("the database's storage is full")]
    StorageFull,
    /// The database cannot be reached (the campus store is down, unreachable, or did not
    /// answer within the timeout); nothing of the unit was stored.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
}

impl From<db::Error> for StoreError {
    fn from(e: db::Error) -> Self {
        let full = match &e {
            db::Error::Sqlite(e) => health::is_storage_full(e),
            // disk_full, out_of_memory-class "insufficient resources" on the server's disk.
            db::Error::Pg { code, .. } => code == "53100",
            _ => false,
        };
        if full {
            tracing::debug!(detail = %e, "write refused by the storage");
            health::note_storage_full();
            return StoreError::StorageFull;
        }
        if e.is_constraint() {
            tracing::debug!(detail = %e, "constraint violation");
            return StoreError::Conflict("a conflicting record already exists".into());
        }
        match e {
            db::Error::Unavailable(m) => StoreError::Unavailable(m),
            e => StoreError::Db(e.to_string()),
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        db::Error::from(e).into()
    }
}

impl crate::base::error::PublicError for StoreError {
    fn code(&self) -> crate::base::error::ErrorCode {
        use crate::base::error::ErrorCode;
        match self {
            StoreError::NotFound => ErrorCode::NotFound,
            StoreError::Conflict(_) => ErrorCode::Conflict,
            StoreError::StorageFull | StoreError::Unavailable(_) => ErrorCode::StoreUnavailable,
            StoreError::Db(_) | StoreError::CounterNotAbove | StoreError::Corrupt(_) => {
                ErrorCode::Internal
            }
        }
    }
    fn public_message(&self) -> String {
        match self {
            StoreError::NotFound => "no such resource".into(),
            StoreError::Conflict(m) => m.clone(),
            StoreError::StorageFull => {
                "keygate's storage is full: nothing was stored; try again once an operator \
                 has freed disk space"
                    .into()
            }
            StoreError::Unavailable(_) => {
                "keygate's database cannot be reached: nothing was stored; try again shortly".into()
            }
            _ => "internal error".into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

pub use crate::base::ids::new_row_id;

/// Timestamps are stored as RFC 3339 text in UTC, from the store's clock ([`Store::now`]).
pub fn fmt_time(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

fn parse_time(s: &str) -> Result<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).map_err(|e| StoreError::Corrupt(format!("time {s}: {e}")))
}

fn parse_opt_time(s: Option<String>) -> Result<Option<OffsetDateTime>> {
    s.map(|s| parse_time(&s)).transpose()
}

/// Handle to the database; cheap to clone.
///
/// One connection writes; a few more (file databases only) serve the reads on every request's
/// path (token checks), so that those never wait behind a write. Async callers hand whole
/// read-check-write units to the writer thread with [`Store::atomic`]; it runs every unit that
/// queued up meanwhile in one transaction (group commit).
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    readers: Arc<Vec<Mutex<Connection>>>,
    writer: mpsc::Sender<BatchJob>,
    /// The WAL file of a file database.
    wal: Option<Arc<std::path::Path>>,
    /// Where every timestamp the store writes comes from (`keygate_now()` in SQL).
    clock: Arc<dyn crate::base::clock::Clock>,
    /// Whether the storage is full (`/healthz`, the writes refused meanwhile).
    health: Arc<health::StorageHealth>,
    /// The audit log's hash chain: the writer's cached head and the head key.
    audit: Arc<audit_writer::AuditChain>,
    /// The engine: a SQLite file of this daemon, or the campus store shared with others.
    backend: db::Backend,
    /// This daemon among those sharing the store (its data dir's `node.id`; `local` for a
    /// SQLite file, which no other daemon writes).
    node: Arc<str>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

/// The store seen from inside one atomic unit ([`Store::atomic`]): every call runs in the
/// unit's (group) transaction, so the unit's checks and writes land together or not at all.
pub struct Tx<'a>(&'a Connection);
#[cfg(test)]
mod audit_tests;
#[cfg(test)]
mod engine_tests;
#[cfg(test)]
mod entra_tests;
#[cfg(test)]
mod query_plans;
#[cfg(test)]
mod retention_tests;
#[cfg(test)]
mod sweep_tests;
#[cfg(test)]
mod tests;
