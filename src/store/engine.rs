//! The connections and how writes reach them: opening and migrating the database, the pool of
//! read connections, units for the writer thread (`writer.rs`: [`Store::atomic`]), synchronous
//! transactions ([`Store::tx`]), the background WAL checkpointer and the integrity check.

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};

use super::db::{self, Connection, OptionalExtension, Params, PgTarget, Row};

use super::audit_chain::{head_key_path, HeadKey};
use super::audit_writer::{self, AuditChain};
use super::health::{self, StorageHealth};
use super::sqlite_file::{
    checkpointer_loop, file_len, restrict_db_files, sidecar, JOURNAL_SIZE_LIMIT, TRUNCATE_WAIT,
};
use super::writer::{begin, run_unit, writer_loop, BatchJob, Reply};
use super::{migrations, Result, Store, StoreError, Tx};
use crate::base::clock::{Clock, SystemClock};
use crate::base::sync::lock;

/// The statements a connection keeps prepared (rusqlite's default of 16 is fewer than the
/// SMS path alone uses, and a miss re-parses and re-plans the SQL).
const STATEMENT_CACHE: usize = 256;

/// Read connections of a file database.
const READERS: usize = 2;

/// Read connections of a campus store (each a PostgreSQL session of this daemon).
const PG_READERS: usize = 4;

/// `keygate_now()` in SQL: the store's clock as RFC 3339 text, so that every timestamp a
/// statement writes (audit lines, `updated_at`, `used_at`, ...) comes from the one injected
/// clock, on whatever thread the statement runs.
fn register_clock(conn: &rusqlite::Connection, clock: &Arc<dyn Clock>) -> Result<()> {
    let clock = clock.clone();
    conn.create_scalar_function(
        "keygate_now",
        0,
        rusqlite::functions::FunctionFlags::SQLITE_UTF8,
        move |_| Ok(super::fmt_time(clock.now())),
    )?;
    Ok(())
}

/// Statements are prepared once per connection (rusqlite's statement cache). Every statement
/// on a request's path goes through here (or [`exec`] / [`row`]): the query-plan test records
/// what passes and checks each plan for full scans.
pub(crate) fn prepare<'c>(c: &'c Connection, sql: &str) -> db::Result<db::Statement<'c>> {
    #[cfg(test)]
    if let Some(sqlite) = c.sqlite() {
        super::query_plans::record(sqlite, sql);
    }
    c.prepare_cached(sql)
}

pub(crate) fn exec(c: &Connection, sql: &str, p: impl Params) -> db::Result<usize> {
    prepare(c, sql)?.execute(p)
}

/// A write whose row count nobody reads: on the campus store it goes out with the next
/// statement ([`db::Statement::execute_later`]), and its failure fails the transaction.
pub(crate) fn exec_later(c: &Connection, sql: &str, p: impl Params) -> db::Result<()> {
    prepare(c, sql)?.execute_later(p)
}

pub(crate) fn row<T>(
    c: &Connection,
    sql: &str,
    p: impl Params,
    f: impl FnOnce(&Row<'_>) -> db::Result<T>,
) -> db::Result<T> {
    prepare(c, sql)?.query_row(p, f)
}

impl Store {
    /// Open (creating if needed) the database file and run pending migrations. The file (and
    /// with it the WAL and SHM) gets mode 0600 whatever the umask. The audit chain's head key
    /// is `audit-head.key` beside it (created once, 0600).
    pub fn open(path: &Path) -> Result<Store> {
        Self::open_with_clock(path, Arc::new(SystemClock))
    }

    /// [`Store::open`] with the clock every timestamp the store writes comes from.
    pub fn open_with_clock(path: &Path, clock: Arc<dyn Clock>) -> Result<Store> {
        restrict_db_files(path)?;
        let key_path = head_key_path(path);
        let key = HeadKey::load_or_create(&key_path)
            .map_err(|e| StoreError::Db(format!("{}: {e}", key_path.display())))?;
        let conn = rusqlite::Connection::open(path)?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let r = rusqlite::Connection::open(path)?;
            register_clock(&r, &clock)?;
            r.busy_timeout(std::time::Duration::from_secs(5))?;
            r.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
            r.pragma_update(None, "query_only", "ON")?;
            readers.push(Mutex::new(Connection::from(r)));
        }
        let wal = sidecar(path, "-wal");
        let store = Self::init_sqlite(conn, readers, Some(wal.clone()), clock, key)?;
        // Only the checkpointer thread checkpoints (see `checkpointer_loop`).
        store.sqlite_conn(|c| c.pragma_update(None, "wal_autocheckpoint", 0))?;
        let weak = Arc::downgrade(&store.conn);
        let checkpointer = rusqlite::Connection::open(path)?;
        checkpointer.busy_timeout(TRUNCATE_WAIT)?;
        checkpointer.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT as i64)?;
        let (health, probe) = (store.health.clone(), health::probe_path(path));
        std::thread::Builder::new()
            .name("keygate-wal-checkpoint".into())
            .spawn(move || checkpointer_loop(weak, checkpointer, wal, health, probe))
            .map_err(|e| StoreError::Db(e.to_string()))?;
        Ok(store)
    }

    /// A private in-memory database (unit tests). Reads use the one connection.
    pub fn open_in_memory() -> Result<Store> {
        Self::init_sqlite(
            rusqlite::Connection::open_in_memory()?,
            Vec::new(),
            None,
            Arc::new(SystemClock),
            HeadKey::ephemeral(),
        )
    }

    /// Open the campus store at `target` (PostgreSQL) and run pending migrations (one daemon
    /// at a time: see `migrations`). `head_key_file` is the audit chain's head key, which every
    /// daemon of the campus must share (copied into each data dir).
    pub fn open_postgres(
        target: Arc<PgTarget>,
        head_key_file: &Path,
        clock: Arc<dyn Clock>,
    ) -> Result<Store> {
        let key = HeadKey::load_or_create(head_key_file)
            .map_err(|e| StoreError::Db(format!("{}: {e}", head_key_file.display())))?;
        let now: db::NowFn = {
            let clock = clock.clone();
            Arc::new(move || super::fmt_time(clock.now()))
        };
        let conn = Connection::postgres_writer(target.clone(), now.clone());
        let readers = (0..PG_READERS)
            .map(|_| Mutex::new(Connection::postgres(target.clone(), now.clone())))
            .collect();
        let audit = Arc::new(AuditChain::new(key, clock.clone()));
        migrations::run(&conn)?;
        let mut store = Self::start(conn, readers, None, clock, audit)?;
        let node_file = head_key_file.with_file_name("node.id");
        store.node = super::campus::load_or_create_node_id(&node_file)
            .map_err(|e| StoreError::Db(format!("{}: {e}", node_file.display())))?
            .into();
        Ok(store)
    }

    /// This daemon's name among those sharing the store.
    pub fn node(&self) -> &str {
        &self.node
    }

    fn init_sqlite(
        conn: rusqlite::Connection,
        readers: Vec<Mutex<Connection>>,
        wal: Option<PathBuf>,
        clock: Arc<dyn Clock>,
        key: HeadKey,
    ) -> Result<Store> {
        register_clock(&conn, &clock)?;
        let audit = Arc::new(AuditChain::new(key, clock.clone()));
        audit.register(&conn)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT as i64)?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let conn = Connection::from(conn);
        migrations::run(&conn)?;
        Self::start(conn, readers, wal, clock, audit)
    }

    /// Start the writer thread on `conn` (migrated) and make the handle.
    fn start(
        conn: Connection,
        readers: Vec<Mutex<Connection>>,
        wal: Option<PathBuf>,
        clock: Arc<dyn Clock>,
        audit: Arc<AuditChain>,
    ) -> Result<Store> {
        audit.open_head(&conn)?;
        let backend = conn.backend();
        let conn = Arc::new(Mutex::new(conn));
        let (writer, jobs) = mpsc::channel();
        let health = Arc::new(StorageHealth::default());
        let (thread_conn, thread_health) = (conn.clone(), health.clone());
        let thread_audit = audit.clone();
        std::thread::Builder::new()
            .name("keygate-store-writer".into())
            .spawn(move || {
                audit_writer::install(thread_audit);
                writer_loop(thread_conn, jobs, thread_health)
            })
            .map_err(|e| StoreError::Db(e.to_string()))?;
        let store = Store {
            conn,
            readers: Arc::new(readers),
            writer,
            wal: wal.map(Arc::from),
            clock,
            health,
            audit,
            backend,
            node: Arc::from("local"),
        };
        store.warn_about_user_names()?;
        Ok(store)
    }

    /// Size of the WAL file in bytes (0 in memory or when there is none): a figure for benches
    /// and operators; the checkpointer keeps it near [`WAL_TRUNCATE_AT`] (16 MiB) at most,
    /// except while a long read pins it.
    pub fn wal_bytes(&self) -> u64 {
        self.wal.as_deref().map_or(0, file_len)
    }

    /// Whether the database's storage is full: a write failed for lack of space and the
    /// checkpointer has not yet found room again (see `health.rs`). Meanwhile writes answer
    /// [`StoreError::StorageFull`] and reads go on.
    pub fn storage_full(&self) -> bool {
        self.health.is_full()
    }

    /// Cap the database at `pages` pages (SQLite's `max_page_count` on the writing connection,
    /// never below its current size); returns the cap in force. A write that needs more pages
    /// fails with a real `SQLITE_FULL`, as on a full disk. For tests that cannot fill a disk,
    /// and for an operator's size cap.
    pub fn limit_database_pages(&self, pages: u64) -> Result<u64> {
        // SQLite reads 0 as a question, not as a cap.
        let pages = pages.max(1);
        let cap: i64 = self.sqlite_conn(|c| {
            c.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |r| {
                r.get(0)
            })
        })?;
        Ok(cap as u64)
    }

    /// The store's clock: what `keygate_now()` answers in SQL.
    pub fn now(&self) -> time::OffsetDateTime {
        self.clock.now()
    }

    pub(super) fn conn(&self) -> MutexGuard<'_, Connection> {
        lock(&self.conn)
    }

    /// Run `f` on the writing connection when it is SQLite's (pragmas); a campus store has
    /// none of those knobs and answers `Err` to what needs them.
    fn sqlite_conn<T>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let c = self.conn();
        match c.sqlite() {
            Some(c) => Ok(f(c)?),
            None => Err(StoreError::Db("not available on the campus store".into())),
        }
    }

    /// Which engine holds the data.
    pub fn backend(&self) -> db::Backend {
        self.backend
    }

    /// Whether the data is shared with other daemons (the campus store): then nothing a
    /// daemon keeps in memory may stand in for the database (budgets, caches).
    pub fn is_shared(&self) -> bool {
        self.backend == db::Backend::Postgres
    }

    /// The store as `/healthz` reports it: `ok`, `storage_full` (a SQLite file whose disk is
    /// full) or `unavailable` (the campus store does not answer).
    pub fn status(&self) -> &'static str {
        if self.storage_full() {
            return "storage_full";
        }
        if self.is_shared()
            && self
                .read(|c| Ok(c.query_row("SELECT 1", [], |_| Ok(()))?))
                .is_err()
        {
            return "unavailable";
        }
        "ok"
    }

    /// A connection for a read that must not wait behind writes: a free reader, else the
    /// first one; the writing connection when there are none (in-memory).
    pub(super) fn reader(&self) -> MutexGuard<'_, Connection> {
        for r in self.readers.iter() {
            if let Ok(g) = r.try_lock() {
                return g;
            }
        }
        match self.readers.first() {
            Some(r) => lock(r),
            None => self.conn(),
        }
    }

    /// Run the read `f` on a reader connection (sees everything committed before it starts).
    pub(super) fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        f(&self.reader())
    }

    /// Run `f` as one atomic unit on the writer thread (see [`Store`]); for async callers,
    /// which must not block on the connection. `f` runs to completion before any other
    /// unit or writer, so a read-check-write inside it cannot race. The reply comes after the
    /// commit: Ok means durable.
    ///
    /// Contract: `f` makes all its checks before its first write, so that refusing (returning
    /// Err) leaves nothing to undo. An error after a write (storage trouble, a panic) rolls
    /// back the whole group commit, and every unit in it gets an error.
    ///
    /// `f` runs on the writer thread while it holds the writing connection: it must use only
    /// the [`Tx`] it is given, never another `Store` method (a write would deadlock).
    pub async fn atomic<T, E>(
        &self,
        f: impl FnOnce(&Tx<'_>) -> std::result::Result<T, E> + Send + 'static,
    ) -> std::result::Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        // A file database's checkpointer ends a storage-full episode once there is room again;
        // until then a write is refused before it reaches the disk.
        if self.wal.is_some() && self.health.is_full() {
            return Err(StoreError::StorageFull.into());
        }
        let (reply_tx, reply_rx) = tokio::sync::oneshot::channel();
        let job: BatchJob = Box::new(move |c: Option<&Connection>| -> (Reply, bool) {
            let (out, dirty) = match c {
                Some(c) => run_unit(c, f),
                None => (Err(StoreError::Db("not run".into()).into()), false),
            };
            let reply: Reply = Box::new(move |committed: std::result::Result<(), &StoreError>| {
                let _ = reply_tx.send(match committed {
                    Ok(()) => out,
                    Err(e) => Err(e.clone().into()),
                });
            });
            (reply, dirty)
        });
        let stopped = || StoreError::Db("the store writer has stopped".into());
        self.writer.send(job).map_err(|_| E::from(stopped()))?;
        reply_rx.await.map_err(|_| E::from(stopped()))?
    }

    /// The one write path of the store's own methods for async callers: `f` runs on the
    /// writer thread inside the current group commit, within a savepoint of its own, so that
    /// its refusal (an Err, even after some writes) undoes only its own changes and never
    /// fails the other units of the group. Only storage trouble or a panic fails the group.
    pub(super) async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let outcome: Result<Result<T>> = self
            .atomic(move |t: &Tx<'_>| {
                let c = t.0;
                let audit_at_savepoint = audit_writer::snapshot();
                c.execute_batch("SAVEPOINT keygate_write")?;
                let out = f(c);
                if out.is_ok() {
                    c.execute_batch("RELEASE keygate_write")?;
                } else {
                    c.execute_batch("ROLLBACK TO keygate_write; RELEASE keygate_write")?;
                    audit_writer::restore(audit_at_savepoint);
                }
                Ok(out)
            })
            .await;
        outcome?
    }

    /// Run `f` inside one transaction (committed when `f` returns Ok), on the caller's thread.
    /// Only for start-up and command-line work before or beside the daemon (never from async
    /// code, which must not wait on the connection the writer thread holds for a batch).
    pub(super) fn tx<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let c = self.conn();
        let _audit = audit_writer::enter(&self.audit);
        health::take_storage_full_seen();
        let out = (|| {
            begin(&c)?;
            let out = match f(&c) {
                Ok(out) => out,
                Err(e) => {
                    if !c.is_autocommit() {
                        let _ = c.rollback();
                    }
                    return Err(e);
                }
            };
            if let Err(e) = c.commit() {
                if !c.is_autocommit() {
                    let _ = c.rollback();
                }
                return Err(e.into());
            }
            Ok(out)
        })();
        audit_writer::transaction_ended(out.is_ok());
        if health::take_storage_full_seen() {
            self.health.set_full();
        }
        out
    }

    /// Hand back the page caches' memory (SQLite's `shrink_memory` on every connection, each
    /// taken in turn, the writing one between two group commits). The caches fill with
    /// whatever the hot path touched, up to `cache_size` each, and SQLite keeps them for the
    /// connection's life: after a busy hour they would hold the memory of pages no request
    /// reads any more. The sweeper calls this after every sweep; a request that comes after
    /// reads its pages from the operating system's cache again.
    pub fn release_memory(&self) -> Result<()> {
        if self.backend() == db::Backend::Postgres {
            return Ok(());
        }
        for r in self.readers.iter() {
            lock(r).execute_batch("PRAGMA shrink_memory")?;
        }
        self.conn().execute_batch("PRAGMA shrink_memory")?;
        Ok(())
    }

    /// `PRAGMA integrity_check` and foreign-key check; Ok(()) when both are clean.
    pub fn check_integrity(&self) -> Result<()> {
        let c = self.conn();
        if c.backend() == db::Backend::Postgres {
            // PostgreSQL checks its constraints and pages itself; here: that it answers.
            c.query_row("SELECT 1", [], |_| Ok(()))?;
            return Ok(());
        }
        let res: String = c.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
        if res != "ok" {
            return Err(StoreError::Corrupt(res));
        }
        let fk: Option<String> = c
            .query_row("PRAGMA foreign_key_check", [], |r| r.get(0))
            .optional()?;
        if let Some(t) = fk {
            return Err(StoreError::Corrupt(format!("foreign key violation in {t}")));
        }
        Ok(())
    }
}
