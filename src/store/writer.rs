//! The writer thread and its group commit: every unit queued so far runs in one transaction,
//! committed once, then each unit is answered ([`Store::atomic`] sends the units).
//!
//! Contract: a unit makes its checks before its first write, so a unit that refuses has
//! written nothing; a failure after a write rolls back its whole group commit.

use std::sync::{mpsc, Arc, Mutex};

use super::audit_writer;
use super::db::{self, Connection};
use super::health::{self, StorageHealth};
use super::{Result, StoreError, Tx};
use crate::base::sync::lock;

/// At most this many units share one group commit.
const MAX_BATCH: usize = 128;

/// Delivers a unit's outcome once its batch committed (`Ok`) or failed to (`Err`).
pub(super) type Reply = Box<dyn FnOnce(std::result::Result<(), &StoreError>) + Send>;
/// A unit of work for the writer thread: runs inside the batch's transaction (or, given no
/// connection, is dropped unrun) and returns its reply and whether it failed after writing.
pub(super) type BatchJob = Box<dyn FnOnce(Option<&Connection>) -> (Reply, bool) + Send>;

/// Run one unit inside the batch's transaction. Returns its outcome and whether it failed
/// after writing (then only rolling back the whole batch undoes it).
///
/// No savepoint per unit: SQLite would copy every page a unit touches into a statement
/// journal, a quarter of the writer's time under load. The contract that makes this safe:
/// a unit makes its checks before its writes, so a unit that refuses has written nothing; a
/// failure after the first write (storage trouble, a panic) fails the whole batch.
///
/// PostgreSQL ends a transaction at its first failed statement, where SQLite fails only the
/// statement; so on PostgreSQL each unit of a shared batch runs in a savepoint of its own, and
/// a unit that failed is rolled back to it (it wrote nothing the batch keeps).
pub(super) fn run_unit<T, E: From<StoreError>>(
    c: &Connection,
    f: impl FnOnce(&Tx<'_>) -> std::result::Result<T, E>,
) -> (std::result::Result<T, E>, bool) {
    let savepoint = c.backend() == db::Backend::Postgres && !c.is_autocommit();
    if savepoint {
        if let Err(e) = c.execute_batch("SAVEPOINT keygate_unit") {
            return (Err(StoreError::from(e).into()), true);
        }
    }
    let before = c.total_changes();
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&Tx(c))))
        .unwrap_or_else(|_| Err(StoreError::Db("a store unit panicked".into()).into()));
    if savepoint {
        let end = match out {
            Ok(_) => c.execute_batch("RELEASE keygate_unit"),
            Err(_) => c.execute_batch("ROLLBACK TO keygate_unit; RELEASE keygate_unit"),
        };
        let lost = end.is_err();
        return (out, lost);
    }
    let failed_dirty = out.is_err() && c.total_changes() != before;
    (out, failed_dirty)
}

/// The writer thread: takes every unit queued so far, runs them in one transaction, commits
/// once, then answers them all. When a unit failed after writing, the batch is rolled back
/// and every unit in it gets an error. When the transaction cannot start (another process
/// holds the write lock past the busy timeout), each unit runs in a transaction of its own.
/// A batch that failed for lack of space answers [`StoreError::StorageFull`] and starts a
/// storage-full episode ([`StorageHealth`]). Ends when the last [`Store`] handle is dropped.
pub(super) fn writer_loop(
    conn: Arc<Mutex<Connection>>,
    jobs: mpsc::Receiver<BatchJob>,
    health: Arc<StorageHealth>,
) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let c = lock(&conn);
        health::take_storage_full_seen();
        if begin(&c).is_err() {
            for job in batch {
                match begin(&c) {
                    Ok(_) => {
                        let (reply, dirty) = job(Some(&c));
                        let committed = end_transaction(&c, dirty || c.is_autocommit());
                        reply(storage_verdict(committed, &health).as_ref().map(|_| ()));
                    }
                    Err(e) => {
                        let e = storage_verdict(Err(e.into()), &health);
                        job(None).0(e.as_ref().map(|_| ()))
                    }
                }
            }
            continue;
        }
        let mut replies: Vec<Reply> = Vec::with_capacity(batch.len());
        let mut poisoned = false;
        for job in batch {
            // SQLite ends the whole transaction itself on some storage errors: the units after
            // that must not run, each of their statements would commit on its own.
            let lost = c.is_autocommit();
            let (reply, dirty) = job((!lost).then_some(&*c));
            poisoned |= dirty || lost;
            replies.push(reply);
        }
        let committed = end_transaction(&c, poisoned || c.is_autocommit());
        drop(c);
        let committed = storage_verdict(committed, &health);
        match &committed {
            Ok(()) | Err(StoreError::StorageFull) => {}
            Err(e) => {
                tracing::error!(error = %e, "a group commit failed; its units were rolled back")
            }
        }
        for reply in replies {
            reply(committed.as_ref().map(|_| ()));
        }
    }
}

/// A batch's outcome once the storage had its say: when a write of the batch failed for lack
/// of space, that starts (or continues) a storage-full episode, and a failed batch answers
/// [`StoreError::StorageFull`] whatever failed last.
fn storage_verdict(committed: Result<()>, health: &StorageHealth) -> Result<()> {
    if !health::take_storage_full_seen() {
        return committed;
    }
    health.set_full();
    committed.map_err(|_| StoreError::StorageFull)
}

/// Commit the open transaction, or roll it back when a unit in it failed after writing
/// (`poisoned`) or the commit itself fails. (A campus store connection lost mid-batch makes
/// the commit answer [`StoreError::Unavailable`]: the store, not the units.)
fn end_transaction(c: &Connection, poisoned: bool) -> Result<()> {
    let committed = if poisoned {
        Err(StoreError::Db(
            "a unit failed after writing; its group commit was rolled back".into(),
        ))
    } else {
        c.commit().map_err(StoreError::from)
    };
    if committed.is_err() && !c.is_autocommit() {
        let _ = c.rollback();
    }
    audit_writer::transaction_ended(committed.is_ok());
    committed
}

/// Start a write transaction on `c`. On PostgreSQL the audit chain's cached head is dropped:
/// another daemon may have appended since (the campus write lock now keeps it still).
pub(super) fn begin(c: &Connection) -> db::Result<()> {
    c.begin_write()?;
    if c.backend() == db::Backend::Postgres {
        audit_writer::forget_head();
    }
    Ok(())
}
