//! Group commit for the one SQLite connection.
//!
//! Contract: [`Db::tx`] returns Ok only after the SQLite transaction holding the caller's
//! changes committed. Writers that arrive while another holds the connection join its open
//! transaction: each runs in its own savepoint (a failing one rolls back alone), and the last
//! of them, the one that finds nobody waiting, commits for all. A commit writes the pages the
//! batch touched once, instead of once per caller: under concurrent load most of the
//! per-transaction cost (WAL frames, locks, syscalls) is shared. A batch that fails to commit
//! fails every member; SQLite's atomic commit keeps the file consistent whatever happens.
//! Readers never see an open batch: [`Db::conn`] commits it first.

use std::collections::VecDeque;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

use rusqlite::Connection;

use super::{Result, StoreError};

/// Members after which a batch commits even while more writers wait (bounds latency).
const MAX_BATCH: u32 = 64;

pub struct Db {
    inner: Mutex<Inner>,
    /// Writers blocked on `inner`: a batch is left open only for them.
    writers_waiting: AtomicUsize,
    commits: Mutex<Commits>,
    committed: Condvar,
}

struct Inner {
    conn: Connection,
    open: Option<Batch>,
    last_epoch: u64,
}

struct Batch {
    epoch: u64,
    members: u32,
}

/// Batches are numbered in order; every batch up to `through` has ended, and the few most
/// recent ones that failed are kept with their error for their members to collect.
#[derive(Default)]
struct Commits {
    through: u64,
    failed: VecDeque<(u64, String)>,
}

/// The connection, locked; no transaction of ours is open while it is held.
pub struct ConnGuard<'a>(MutexGuard<'a, Inner>);

impl std::ops::Deref for ConnGuard<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.0.conn
    }
}

impl Db {
    pub fn new(conn: Connection) -> Db {
        Db {
            inner: Mutex::new(Inner {
                conn,
                open: None,
                last_epoch: 0,
            }),
            writers_waiting: AtomicUsize::new(0),
            commits: Mutex::new(Commits::default()),
            committed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic inside a batch rolls the batch back before unwinding (see `tx`), so a
        // poisoned lock guards a connection with no transaction open: safe to reuse.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn conn(&self) -> ConnGuard<'_> {
        let mut g = self.lock();
        self.end_batch(&mut g, true);
        ConnGuard(g)
    }

    pub fn tx<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        self.writers_waiting.fetch_add(1, Ordering::SeqCst);
        let mut g = self.lock();
        self.writers_waiting.fetch_sub(1, Ordering::SeqCst);
        let epoch = match g.open.as_mut() {
            Some(b) => {
                b.members += 1;
                b.epoch
            }
            None => {
                g.conn.execute_batch("BEGIN IMMEDIATE")?;
                g.last_epoch += 1;
                let epoch = g.last_epoch;
                g.open = Some(Batch { epoch, members: 1 });
                epoch
            }
        };
        if let Err(e) = g.conn.execute_batch("SAVEPOINT keygate_op") {
            self.end_batch(&mut g, false);
            return Err(e.into());
        }
        let out = match catch_unwind(AssertUnwindSafe(|| f(&g.conn))) {
            Ok(out) => out,
            Err(panic) => {
                self.end_batch(&mut g, false);
                drop(g);
                resume_unwind(panic);
            }
        };
        let closed = match &out {
            Ok(_) => g.conn.execute_batch("RELEASE keygate_op"),
            Err(_) => g
                .conn
                .execute_batch("ROLLBACK TO keygate_op; RELEASE keygate_op"),
        };
        // Some errors (disk full, I/O) make SQLite roll the whole transaction back itself.
        if closed.is_err() || g.conn.is_autocommit() {
            self.end_batch(&mut g, false);
            return Err(out.err().unwrap_or_else(|| {
                StoreError::Db(closed.err().map_or_else(
                    || "the transaction was rolled back".to_string(),
                    |e| e.to_string(),
                ))
            }));
        }
        let full = g.open.as_ref().is_some_and(|b| b.members >= MAX_BATCH);
        if full || self.writers_waiting.load(Ordering::SeqCst) == 0 {
            let failure = self.end_batch(&mut g, true);
            drop(g);
            return match failure {
                Some(msg) => Err(StoreError::Db(msg)),
                None => out,
            };
        }
        drop(g);
        // Nothing of a failed `f` is in the batch: no need to wait for its commit.
        let value = out?;
        self.wait_for(epoch)?;
        Ok(value)
    }

    /// Commit (or, with `commit == false`, roll back) the open batch, if any, and tell its
    /// members. Returns the batch's error, if it failed.
    fn end_batch(&self, g: &mut Inner, commit: bool) -> Option<String> {
        let batch = g.open.take()?;
        let mut failure = if commit {
            g.conn.execute_batch("COMMIT").err().map(|e| e.to_string())
        } else {
            Some("the transaction was rolled back".to_string())
        };
        if !g.conn.is_autocommit() {
            if let Err(e) = g.conn.execute_batch("ROLLBACK") {
                failure.get_or_insert_with(|| e.to_string());
            }
        }
        if let Some(msg) = &failure {
            tracing::error!(error = %msg, members = batch.members, "store: a write batch failed");
        }
        let mut c = self.commits.lock().unwrap_or_else(|p| p.into_inner());
        c.through = batch.epoch;
        if let Some(msg) = &failure {
            c.failed.push_back((batch.epoch, msg.clone()));
            if c.failed.len() > 64 {
                c.failed.pop_front();
            }
        }
        self.committed.notify_all();
        failure
    }

    fn wait_for(&self, epoch: u64) -> Result<()> {
        let wait = || {
            let mut c = self.commits.lock().unwrap_or_else(|p| p.into_inner());
            while c.through < epoch {
                c = self.committed.wait(c).unwrap_or_else(|p| p.into_inner());
            }
            match c.failed.iter().find(|(e, _)| *e == epoch) {
                Some((_, msg)) => Err(StoreError::Db(msg.clone())),
                None => Ok(()),
            }
        };
        // On a tokio worker, let the runtime move its other tasks to another thread while
        // this one waits (they may be the writers that end the batch).
        let on_worker = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if on_worker {
            tokio::task::block_in_place(wait)
        } else {
            wait()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn db() -> (tempfile::TempDir, Arc<Db>) {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("t.db")).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)")
            .unwrap();
        (dir, Arc::new(Db::new(conn)))
    }

    fn count(db: &Db) -> i64 {
        db.conn()
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn concurrent_writers_share_commits_and_each_is_durable_on_return() {
        let (dir, db) = db();
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let db = db.clone();
                let path = dir.path().join("t.db");
                std::thread::spawn(move || {
                    for i in 0..200 {
                        let k = t * 1000 + i;
                        db.tx(|c| {
                            c.execute("INSERT INTO t (k, v) VALUES (?1, 'x')", [k])?;
                            Ok(())
                        })
                        .unwrap();
                        // Committed: another connection sees it at once.
                        if i % 50 == 0 {
                            let other = Connection::open(&path).unwrap();
                            let n: i64 = other
                                .query_row("SELECT count(*) FROM t WHERE k = ?1", [k], |r| r.get(0))
                                .unwrap();
                            assert_eq!(n, 1);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(count(&db), 1600);
        let batches = db.lock().last_epoch;
        assert!(batches <= 1600, "{batches}");
    }

    #[test]
    fn a_failing_member_rolls_back_alone() {
        let (_dir, db) = db();
        db.tx(|c| {
            c.execute("INSERT INTO t (k, v) VALUES (1, 'a')", [])?;
            Ok(())
        })
        .unwrap();
        let e = db
            .tx(|c| {
                c.execute("INSERT INTO t (k, v) VALUES (2, 'b')", [])?;
                c.execute("INSERT INTO t (k, v) VALUES (1, 'dup')", [])?;
                Ok(())
            })
            .unwrap_err();
        assert!(matches!(e, StoreError::Conflict(_)), "{e:?}");
        assert_eq!(count(&db), 1);
        // A panic inside a transaction rolls it back and leaves the store usable.
        let db2 = db.clone();
        let r = std::thread::spawn(move || {
            db2.tx(|c| -> Result<()> {
                c.execute("INSERT INTO t (k, v) VALUES (3, 'c')", [])?;
                panic!("bug in a store function");
            })
        })
        .join();
        assert!(r.is_err());
        assert_eq!(count(&db), 1);
        db.tx(|c| {
            c.execute("INSERT INTO t (k, v) VALUES (4, 'd')", [])?;
            Ok(())
        })
        .unwrap();
        assert_eq!(count(&db), 2);
    }
}
