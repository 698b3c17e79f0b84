//! Durable state in SQLite. This is the only module that names rusqlite.
//!
//! Contract: every multi-row change (a credential stored together with its ceremony's end and
//! the audit line) is one transaction, so a crash or kill at any instant leaves either all of
//! it or none. The database runs in WAL mode with `synchronous=NORMAL`: a killed process loses
//! nothing that was committed; an OS crash may lose the last commits but never consistency.

mod kiosk;
mod migrations;
mod sms;

pub use sms::{OutboxRecord, PhoneRecord, SendLog, SmsChallengeRecord, SmsUserState};

use std::path::Path;
use std::sync::{mpsc, Arc, Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::base::sync::lock;

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
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        if let rusqlite::Error::SqliteFailure(f, ref msg) = e {
            if f.code == rusqlite::ErrorCode::ConstraintViolation {
                tracing::debug!(detail = ?msg, "constraint violation");
                return StoreError::Conflict("a conflicting record already exists".into());
            }
        }
        StoreError::Db(e.to_string())
    }
}

impl crate::base::error::PublicError for StoreError {
    fn code(&self) -> crate::base::error::ErrorCode {
        use crate::base::error::ErrorCode;
        match self {
            StoreError::NotFound => ErrorCode::NotFound,
            StoreError::Conflict(_) => ErrorCode::Conflict,
            StoreError::Db(_) | StoreError::CounterNotAbove | StoreError::Corrupt(_) => {
                ErrorCode::Internal
            }
        }
    }
    fn public_message(&self) -> String {
        match self {
            StoreError::NotFound => "no such resource".into(),
            StoreError::Conflict(m) => m.clone(),
            _ => "internal error".into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

pub use crate::base::ids::new_row_id;

/// Timestamps are stored as RFC 3339 text in UTC.
pub fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

pub fn fmt_time(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

fn parse_time(s: &str) -> Result<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).map_err(|e| StoreError::Corrupt(format!("time {s}: {e}")))
}

fn parse_opt_time(s: Option<String>) -> Result<Option<OffsetDateTime>> {
    s.map(|s| parse_time(&s)).transpose()
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UserRecord {
    pub name: String,
    pub display_name: String,
    #[serde(skip)]
    pub user_handle: Vec<u8>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CredentialState {
    Active,
    Quarantined,
    Revoked,
}

impl CredentialState {
    fn as_str(self) -> &'static str {
        match self {
            CredentialState::Active => "active",
            CredentialState::Quarantined => "quarantined",
            CredentialState::Revoked => "revoked",
        }
    }
    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "active" => CredentialState::Active,
            "quarantined" => CredentialState::Quarantined,
            "revoked" => CredentialState::Revoked,
            other => return Err(StoreError::Corrupt(format!("credential state {other}"))),
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CredentialRecord {
    /// Raw credential id bytes.
    pub id: Vec<u8>,
    pub user: String,
    /// The relying-party library's serialised credential (opaque to the store).
    pub rp_credential: String,
    /// COSE_Key of the credential public key.
    pub public_key_cose: Vec<u8>,
    pub counter: u32,
    pub aaguid: Option<Uuid>,
    pub attestation_format: String,
    /// The attestation chained to a trusted CA.
    pub attested: bool,
    pub discoverable: bool,
    pub user_verified: bool,
    pub nickname: Option<String>,
    pub model: Option<String>,
    pub created_at: OffsetDateTime,
    pub last_used_at: Option<OffsetDateTime>,
    pub state: CredentialState,
    pub state_reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AuditEvent {
    pub seq: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub event: String,
    pub user: Option<String>,
    pub credential_id: Option<String>,
    pub ceremony_id: Option<String>,
    /// Who caused it: `token:<id>`, `system`, ...
    pub actor: String,
    pub detail: serde_json::Value,
}

/// An audit line to append (the store assigns `seq` and `at`).
#[derive(Debug, Clone, Default)]
pub struct NewAudit {
    pub event: String,
    pub user: Option<String>,
    pub credential_id: Option<String>,
    pub ceremony_id: Option<String>,
    pub actor: String,
    pub detail: serde_json::Value,
}

impl NewAudit {
    pub fn new(event: &str, actor: &str) -> Self {
        NewAudit {
            event: event.to_string(),
            actor: actor.to_string(),
            detail: serde_json::Value::Null,
            ..Default::default()
        }
    }
    pub fn user(mut self, u: &str) -> Self {
        self.user = Some(u.to_string());
        self
    }
    pub fn credential(mut self, id: &str) -> Self {
        self.credential_id = Some(id.to_string());
        self
    }
    pub fn ceremony(mut self, id: &str) -> Self {
        self.ceremony_id = Some(id.to_string());
        self
    }
    pub fn detail(mut self, d: serde_json::Value) -> Self {
        self.detail = d;
        self
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CeremonyRecord {
    pub id: String,
    pub kind: String,
    pub user: Option<String>,
    pub state: String,
    pub error_code: Option<String>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TokenRecord {
    pub id: String,
    pub role: String,
    pub hash: Vec<u8>,
    pub label: Option<String>,
    pub created_at: OffsetDateTime,
    pub revoked: bool,
}

/// What a service-desk reset removed.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ResetReceipt {
    pub user: String,
    pub credentials_revoked: u64,
    pub phones_removed: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Sequence number of the audit line recording the reset.
    pub audit_seq: i64,
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
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

/// The statements a connection keeps prepared (rusqlite's default of 16 is fewer than the
/// SMS path alone uses, and a miss re-parses and re-plans the SQL).
const STATEMENT_CACHE: usize = 256;

/// At most this many units share one group commit.
const MAX_BATCH: usize = 128;

/// Read connections of a file database.
const READERS: usize = 2;

/// Delivers a unit's outcome once its batch committed (`Ok`) or failed to (`Err`).
type Reply = Box<dyn FnOnce(std::result::Result<(), &StoreError>) + Send>;
/// A unit of work for the writer thread: runs inside the batch's transaction (or, given no
/// connection, is dropped unrun) and returns its reply and whether it failed after writing.
type BatchJob = Box<dyn FnOnce(Option<&Connection>) -> (Reply, bool) + Send>;

/// The store seen from inside one atomic unit ([`Store::atomic`]): every call runs in the
/// unit's (group) transaction, so the unit's checks and writes land together or not at all.
pub struct Tx<'a>(&'a Connection);

/// Run one unit inside the batch's transaction. Returns its outcome and whether it failed
/// after writing (then only rolling back the whole batch undoes it).
///
/// No savepoint per unit: SQLite would copy every page a unit touches into a statement
/// journal, a quarter of the writer's time under load. The contract that makes this safe:
/// a unit makes its checks before its writes, so a unit that refuses has written nothing; a
/// failure after the first write (storage trouble, a panic) fails the whole batch.
fn run_unit<T, E: From<StoreError>>(
    c: &Connection,
    f: impl FnOnce(&Tx<'_>) -> std::result::Result<T, E>,
) -> (std::result::Result<T, E>, bool) {
    let before = c.total_changes();
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&Tx(c))))
        .unwrap_or_else(|_| Err(StoreError::Db("a store unit panicked".into()).into()));
    let failed_dirty = out.is_err() && c.total_changes() != before;
    (out, failed_dirty)
}

/// The writer thread: takes every unit queued so far, runs them in one transaction, commits
/// once, then answers them all. When a unit failed after writing, the batch is rolled back
/// and every unit in it gets an error. When the transaction cannot start (another process
/// holds the write lock past the busy timeout), each unit runs in a transaction of its own.
/// Ends when the last [`Store`] handle is dropped.
fn writer_loop(conn: Arc<Mutex<Connection>>, jobs: mpsc::Receiver<BatchJob>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let c = lock(&conn);
        if exec(&c, "BEGIN IMMEDIATE", []).is_err() {
            for job in batch {
                match exec(&c, "BEGIN IMMEDIATE", []) {
                    Ok(_) => {
                        let (reply, dirty) = job(Some(&c));
                        reply(end_transaction(&c, dirty).as_ref().map(|_| ()));
                    }
                    Err(e) => job(None).0(Err(&e.into())),
                }
            }
            continue;
        }
        let mut replies: Vec<Reply> = Vec::with_capacity(batch.len());
        let mut poisoned = false;
        for job in batch {
            let (reply, dirty) = job(Some(&c));
            poisoned |= dirty;
            replies.push(reply);
        }
        let committed = end_transaction(&c, poisoned);
        drop(c);
        if let Err(e) = &committed {
            tracing::error!(error = %e, "a group commit failed; its units were rolled back");
        }
        for reply in replies {
            reply(committed.as_ref().map(|_| ()));
        }
    }
}

/// Commit the open transaction, or roll it back when a unit in it failed after writing
/// (`poisoned`) or the commit itself fails.
fn end_transaction(c: &Connection, poisoned: bool) -> Result<()> {
    let committed = if poisoned {
        Err(StoreError::Db(
            "a unit failed after writing; its group commit was rolled back".into(),
        ))
    } else {
        exec(c, "COMMIT", []).map(|_| ()).map_err(StoreError::from)
    };
    if committed.is_err() {
        let _ = exec(c, "ROLLBACK", []);
    }
    committed
}

/// Statements are prepared once per connection (rusqlite's statement cache).
pub(crate) fn exec(c: &Connection, sql: &str, p: impl rusqlite::Params) -> rusqlite::Result<usize> {
    c.prepare_cached(sql)?.execute(p)
}

pub(crate) fn row<T>(
    c: &Connection,
    sql: &str,
    p: impl rusqlite::Params,
    f: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    c.prepare_cached(sql)?.query_row(p, f)
}

const CRED_COLS: &str = "id, user_name, rp_credential, public_key_cose, counter, aaguid, \
    attestation_format, attested, discoverable, user_verified, nickname, model, created_at, \
    last_used_at, state, state_reason";

fn cred_from_row(r: &Row<'_>) -> rusqlite::Result<(CredentialRecordRaw,)> {
    Ok((CredentialRecordRaw {
        id: r.get(0)?,
        user: r.get(1)?,
        rp_credential: r.get(2)?,
        public_key_cose: r.get(3)?,
        counter: r.get(4)?,
        aaguid: r.get(5)?,
        attestation_format: r.get(6)?,
        attested: r.get(7)?,
        discoverable: r.get(8)?,
        user_verified: r.get(9)?,
        nickname: r.get(10)?,
        model: r.get(11)?,
        created_at: r.get(12)?,
        last_used_at: r.get(13)?,
        state: r.get(14)?,
        state_reason: r.get(15)?,
    },))
}

struct CredentialRecordRaw {
    id: Vec<u8>,
    user: String,
    rp_credential: String,
    public_key_cose: Vec<u8>,
    counter: i64,
    aaguid: Option<String>,
    attestation_format: String,
    attested: bool,
    discoverable: bool,
    user_verified: bool,
    nickname: Option<String>,
    model: Option<String>,
    created_at: String,
    last_used_at: Option<String>,
    state: String,
    state_reason: Option<String>,
}

impl CredentialRecordRaw {
    fn into_record(self) -> Result<CredentialRecord> {
        Ok(CredentialRecord {
            id: self.id,
            user: self.user,
            rp_credential: self.rp_credential,
            public_key_cose: self.public_key_cose,
            counter: u32::try_from(self.counter)
                .map_err(|_| StoreError::Corrupt("counter".into()))?,
            aaguid: self
                .aaguid
                .map(|s| Uuid::parse_str(&s).map_err(|e| StoreError::Corrupt(e.to_string())))
                .transpose()?,
            attestation_format: self.attestation_format,
            attested: self.attested,
            discoverable: self.discoverable,
            user_verified: self.user_verified,
            nickname: self.nickname,
            model: self.model,
            created_at: parse_time(&self.created_at)?,
            last_used_at: parse_opt_time(self.last_used_at)?,
            state: CredentialState::parse(&self.state)?,
            state_reason: self.state_reason,
        })
    }
}

fn user_from_row(r: &Row<'_>) -> rusqlite::Result<(String, String, Vec<u8>, String)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

fn to_user(t: (String, String, Vec<u8>, String)) -> Result<UserRecord> {
    Ok(UserRecord {
        name: t.0,
        display_name: t.1,
        user_handle: t.2,
        created_at: parse_time(&t.3)?,
    })
}

fn insert_audit(tx: &Connection, a: &NewAudit) -> Result<i64> {
    tx.prepare_cached(
        "INSERT INTO audit (at, event, user_name, credential_id, ceremony_id, actor, detail) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        fmt_time(now()),
        a.event,
        a.user,
        a.credential_id,
        a.ceremony_id,
        a.actor,
        a.detail.to_string()
    ])?;
    Ok(tx.last_insert_rowid())
}

/// The user `name`, created with `new_handle` when absent; an existing user's display name is
/// updated (the handle never changes).
fn upsert_user_row(
    c: &Connection,
    name: &str,
    display_name: &str,
    new_handle: &[u8],
    created_at: OffsetDateTime,
) -> Result<UserRecord> {
    exec(
        c,
        "INSERT INTO users (name, display_name, user_handle, created_at) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT(name) DO UPDATE SET display_name = excluded.display_name",
        params![name, display_name, new_handle, fmt_time(created_at)],
    )?;
    let t = row(
        c,
        "SELECT name, display_name, user_handle, created_at FROM users WHERE name = ?1",
        params![name],
        user_from_row,
    )?;
    to_user(t)
}

fn set_ceremony_state(
    tx: &Connection,
    id: &str,
    state: &str,
    error_code: Option<&str>,
) -> Result<()> {
    exec(
        tx,
        "UPDATE ceremonies SET state = ?2, error_code = ?3, updated_at = ?4 WHERE id = ?1",
        params![id, state, error_code, fmt_time(now())],
    )?;
    Ok(())
}

impl Store {
    /// Open (creating if needed) the database file and run pending migrations.
    pub fn open(path: &Path) -> Result<Store> {
        let conn = Connection::open(path)?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let r = Connection::open(path)?;
            r.busy_timeout(std::time::Duration::from_secs(5))?;
            r.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
            r.pragma_update(None, "query_only", "ON")?;
            readers.push(Mutex::new(r));
        }
        let store = Self::init(conn, readers)?;
        // Checkpoint the WAL from a second connection on a background thread, so that no
        // request pays for copying pages back into the database file (tail latency). The
        // thread ends with the store.
        store.conn().pragma_update(None, "wal_autocheckpoint", 0)?;
        let weak = Arc::downgrade(&store.conn);
        let checkpointer = Connection::open(path)?;
        checkpointer.busy_timeout(std::time::Duration::from_secs(1))?;
        std::thread::Builder::new()
            .name("keygate-wal-checkpoint".into())
            .spawn(move || loop {
                std::thread::sleep(std::time::Duration::from_millis(250));
                if weak.strong_count() == 0 {
                    return;
                }
                let _ = checkpointer.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
            })
            .map_err(|e| StoreError::Db(e.to_string()))?;
        Ok(store)
    }

    /// A private in-memory database (unit tests). Reads use the one connection.
    pub fn open_in_memory() -> Result<Store> {
        Self::init(Connection::open_in_memory()?, Vec::new())
    }

    fn init(mut conn: Connection, readers: Vec<Mutex<Connection>>) -> Result<Store> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrations::run(&mut conn)?;
        let conn = Arc::new(Mutex::new(conn));
        let (writer, jobs) = mpsc::channel();
        let thread_conn = conn.clone();
        std::thread::Builder::new()
            .name("keygate-store-writer".into())
            .spawn(move || writer_loop(thread_conn, jobs))
            .map_err(|e| StoreError::Db(e.to_string()))?;
        Ok(Store {
            conn,
            readers: Arc::new(readers),
            writer,
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        lock(&self.conn)
    }

    /// A connection for a read that must not wait behind writes: a free reader, else the
    /// first one; the writing connection when there are none (in-memory).
    fn reader(&self) -> MutexGuard<'_, Connection> {
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
    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
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

    /// Run `f` inside one transaction (committed when `f` returns Ok). For layers above the
    /// store that need several changes to land together, expressed with store functions.
    fn tx<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let mut c = self.conn();
        let tx = c.transaction()?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// `PRAGMA integrity_check` and foreign-key check; Ok(()) when both are clean.
    pub fn check_integrity(&self) -> Result<()> {
        let c = self.conn();
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

    // ---- users -------------------------------------------------------------------------

    pub fn get_user(&self, name: &str) -> Result<Option<UserRecord>> {
        let c = self.conn();
        row(
            &c,
            "SELECT name, display_name, user_handle, created_at FROM users WHERE name = ?1",
            params![name],
            user_from_row,
        )
        .optional()?
        .map(to_user)
        .transpose()
    }

    pub fn find_user_by_handle(&self, handle: &[u8]) -> Result<Option<UserRecord>> {
        let c = self.conn();
        row(
            &c,
            "SELECT name, display_name, user_handle, created_at FROM users WHERE user_handle = ?1",
            params![handle],
            user_from_row,
        )
        .optional()?
        .map(to_user)
        .transpose()
    }

    /// Returns the user, creating it with `new_handle` when absent; an existing user's
    /// display name is updated.
    pub fn upsert_user(
        &self,
        name: &str,
        display_name: &str,
        new_handle: &[u8],
    ) -> Result<UserRecord> {
        self.tx(|c| upsert_user_row(c, name, display_name, new_handle, now()))
    }

    pub fn list_users(&self) -> Result<Vec<UserRecord>> {
        let c = self.conn();
        let mut st = c.prepare(
            "SELECT name, display_name, user_handle, created_at FROM users ORDER BY name",
        )?;
        let rows = st.query_map([], user_from_row)?;
        rows.map(|r| to_user(r?)).collect()
    }

    // ---- credentials -------------------------------------------------------------------

    pub fn list_credentials(
        &self,
        user: &str,
        include_revoked: bool,
    ) -> Result<Vec<CredentialRecord>> {
        let c = self.conn();
        let sql =
            format!(
            "SELECT {CRED_COLS} FROM credentials WHERE user_name = ?1 {} ORDER BY created_at, id",
            if include_revoked { "" } else { "AND state != 'revoked'" }
        );
        let mut st = c.prepare(&sql)?;
        let rows = st.query_map(params![user], cred_from_row)?;
        rows.map(|r| r?.0.into_record()).collect()
    }

    pub fn get_credential(&self, id: &[u8]) -> Result<Option<CredentialRecord>> {
        let c = self.conn();
        row(
            &c,
            &format!("SELECT {CRED_COLS} FROM credentials WHERE id = ?1"),
            params![id],
            cred_from_row,
        )
        .optional()?
        .map(|r| r.0.into_record())
        .transpose()
    }

    /// Store a new credential, end its ceremony as `succeeded` and audit it, atomically.
    /// A new credential of `user`, stored together with the user row (created, or its display
    /// name updated), its ceremony's success and the audit line. Fails without storing anything
    /// when the user row exists with another user handle than the one the key was given (two
    /// first enrollments of one user raced).
    pub fn insert_credential(
        &self,
        user: &UserRecord,
        cred: &CredentialRecord,
        ceremony_id: &str,
        audit: &NewAudit,
    ) -> Result<()> {
        self.tx(|c| {
            let stored = upsert_user_row(
                c,
                &user.name,
                &user.display_name,
                &user.user_handle,
                user.created_at,
            )?;
            if stored.user_handle != user.user_handle {
                return Err(StoreError::Db(format!(
                    "user {} was created by a concurrent enrollment",
                    user.name
                )));
            }
            exec(c,
                &format!(
                    "INSERT INTO credentials ({CRED_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)"
                ),
                params![
                    cred.id,
                    cred.user,
                    cred.rp_credential,
                    cred.public_key_cose,
                    cred.counter as i64,
                    cred.aaguid.map(|u| u.to_string()),
                    cred.attestation_format,
                    cred.attested,
                    cred.discoverable,
                    cred.user_verified,
                    cred.nickname,
                    cred.model,
                    fmt_time(cred.created_at),
                    cred.last_used_at.map(fmt_time),
                    cred.state.as_str(),
                    cred.state_reason
                ],
            )?;
            set_ceremony_state(c, ceremony_id, "succeeded", None)?;
            insert_audit(c, audit)?;
            Ok(())
        })
    }

    /// Record a verified assertion: new counter and serialised credential, last use,
    /// ceremony success and audit, atomically. Fails with `Conflict` when the credential is
    /// no longer active (revoked or quarantined concurrently).
    pub fn record_assertion(
        &self,
        cred_id: &[u8],
        counter: u32,
        rp_credential: &str,
        ceremony_id: &str,
        audit: &NewAudit,
    ) -> Result<()> {
        self.tx(|c| {
            // Compare-and-set on the counter: two ceremonies racing on two devices (a key and
            // its clone) cannot both move it from the same stored value. A key that always
            // reports 0 stays at 0.
            let n = exec(
                c,
                "UPDATE credentials SET counter = ?2, rp_credential = ?3, last_used_at = ?4 \
                 WHERE id = ?1 AND state = 'active' AND (counter < ?2 OR (counter = 0 AND ?2 = 0))",
                params![cred_id, counter as i64, rp_credential, fmt_time(now())],
            )?;
            if n != 1 {
                let state: Option<String> = c
                    .query_row(
                        "SELECT state FROM credentials WHERE id = ?1",
                        params![cred_id],
                        |r| r.get(0),
                    )
                    .optional()?;
                return Err(match state.as_deref() {
                    Some("active") => StoreError::CounterNotAbove,
                    _ => StoreError::Conflict("credential is not active".into()),
                });
            }
            set_ceremony_state(c, ceremony_id, "succeeded", None)?;
            insert_audit(c, audit)?;
            Ok(())
        })
    }

    /// Put a credential into quarantine (possible clone), fail the ceremony, audit; atomically.
    pub fn quarantine_credential(
        &self,
        cred_id: &[u8],
        reason: &str,
        ceremony_id: &str,
        audit: &NewAudit,
    ) -> Result<()> {
        self.tx(|c| {
            exec(c,
                "UPDATE credentials SET state = 'quarantined', state_reason = ?2 WHERE id = ?1 AND state = 'active'",
                params![cred_id, reason],
            )?;
            set_ceremony_state(c, ceremony_id, "failed", Some("possible_cloned_key"))?;
            insert_audit(c, audit)?;
            Ok(())
        })
    }

    /// Move a user's credential to `to` from one of `from`; audits. NotFound when no such
    /// credential of that user; Conflict when it is not in one of `from`.
    pub fn transition_credential(
        &self,
        user: &str,
        cred_id: &[u8],
        from: &[CredentialState],
        to: CredentialState,
        reason: Option<&str>,
        audit: &NewAudit,
    ) -> Result<CredentialRecord> {
        self.tx(|c| {
            let state: Option<String> = c
                .query_row(
                    "SELECT state FROM credentials WHERE id = ?1 AND user_name = ?2",
                    params![cred_id, user],
                    |r| r.get(0),
                )
                .optional()?;
            let state = CredentialState::parse(&state.ok_or(StoreError::NotFound)?)?;
            if !from.contains(&state) {
                return Err(StoreError::Conflict(format!(
                    "credential is {}",
                    state.as_str()
                )));
            }
            exec(
                c,
                "UPDATE credentials SET state = ?2, state_reason = ?3 WHERE id = ?1",
                params![cred_id, to.as_str(), reason],
            )?;
            insert_audit(c, audit)?;
            let raw = row(
                c,
                &format!("SELECT {CRED_COLS} FROM credentials WHERE id = ?1"),
                params![cred_id],
                cred_from_row,
            )?;
            raw.0.into_record()
        })
    }

    pub fn rename_credential(
        &self,
        user: &str,
        cred_id: &[u8],
        nickname: Option<&str>,
        audit: &NewAudit,
    ) -> Result<CredentialRecord> {
        self.tx(|c| {
            let n = exec(c,
                "UPDATE credentials SET nickname = ?3 WHERE id = ?1 AND user_name = ?2 AND state != 'revoked'",
                params![cred_id, user, nickname],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            insert_audit(c, audit)?;
            let raw = row(c,
                &format!("SELECT {CRED_COLS} FROM credentials WHERE id = ?1"),
                params![cred_id],
                cred_from_row,
            )?;
            raw.0.into_record()
        })
    }

    /// Service-desk reset: revoke every credential of the user and remove their phones;
    /// audited; returns a receipt. NotFound for an unknown user.
    pub fn reset_user(&self, user: &str, actor: &str) -> Result<ResetReceipt> {
        self.tx(|c| {
            let exists: Option<String> = c
                .query_row(
                    "SELECT name FROM users WHERE name = ?1",
                    params![user],
                    |r| r.get(0),
                )
                .optional()?;
            exists.ok_or(StoreError::NotFound)?;
            let creds = exec(
                c,
                "UPDATE credentials SET state = 'revoked', state_reason = 'service desk reset' \
                 WHERE user_name = ?1 AND state != 'revoked'",
                params![user],
            )? as u64;
            let phones = exec(c, "DELETE FROM phones WHERE user_name = ?1", params![user])? as u64;
            exec(
                c,
                "UPDATE sms_challenges SET state = 'cancelled', code_enc = NULL \
                 WHERE user_name = ?1 AND state = 'pending'",
                params![user],
            )?;
            let at = now();
            let seq = insert_audit(
                c,
                &NewAudit::new("user.reset", actor)
                    .user(user)
                    .detail(serde_json::json!({
                        "credentials_revoked": creds,
                        "phones_removed": phones,
                    })),
            )?;
            Ok(ResetReceipt {
                user: user.to_string(),
                credentials_revoked: creds,
                phones_removed: phones,
                at,
                audit_seq: seq,
            })
        })
    }

    // ---- ceremonies --------------------------------------------------------------------

    pub fn insert_ceremony(&self, rec: &CeremonyRecord, audit: &NewAudit) -> Result<()> {
        self.tx(|c| {
            exec(c,
                "INSERT INTO ceremonies (id, kind, user_name, state, error_code, created_at, updated_at, expires_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    rec.id,
                    rec.kind,
                    rec.user,
                    rec.state,
                    rec.error_code,
                    fmt_time(rec.created_at),
                    fmt_time(rec.updated_at),
                    fmt_time(rec.expires_at)
                ],
            )?;
            insert_audit(c, audit)?;
            Ok(())
        })
    }

    /// Update a ceremony's state; with `audit` when the change is security-relevant
    /// (terminal failures, cancellation).
    pub fn update_ceremony(
        &self,
        id: &str,
        state: &str,
        error_code: Option<&str>,
        audit: Option<&NewAudit>,
    ) -> Result<()> {
        self.tx(|c| {
            set_ceremony_state(c, id, state, error_code)?;
            if let Some(a) = audit {
                insert_audit(c, a)?;
            }
            Ok(())
        })
    }

    pub fn get_ceremony(&self, id: &str) -> Result<Option<CeremonyRecord>> {
        let c = self.conn();
        row(&c,
            "SELECT id, kind, user_name, state, error_code, created_at, updated_at, expires_at FROM ceremonies WHERE id = ?1",
            params![id],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, String>(6)?,
                    r.get::<_, String>(7)?,
                ))
            },
        )
        .optional()?
        .map(|t| {
            Ok(CeremonyRecord {
                id: t.0,
                kind: t.1,
                user: t.2,
                state: t.3,
                error_code: t.4,
                created_at: parse_time(&t.5)?,
                updated_at: parse_time(&t.6)?,
                expires_at: parse_time(&t.7)?,
            })
        })
        .transpose()
    }

    /// At start-up: every ceremony that was in flight when the previous process stopped ends
    /// as `failed` with `ceremony_interrupted` (nothing of it was stored half-way). Returns
    /// how many.
    pub fn fail_interrupted_ceremonies(&self) -> Result<u64> {
        self.tx(|c| {
            let ids: Vec<(String, Option<String>)> = {
                let mut st = c.prepare(
                    "SELECT id, user_name FROM ceremonies WHERE state NOT IN ('succeeded', 'failed', 'cancelled')",
                )?;
                let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            for (id, user) in &ids {
                set_ceremony_state(c, id, "failed", Some("ceremony_interrupted"))?;
                let mut a = NewAudit::new("ceremony.interrupted", "system").ceremony(id);
                a.user = user.clone();
                insert_audit(c, &a)?;
            }
            Ok(ids.len() as u64)
        })
    }

    /// Delete finished ceremonies older than `before` (the audit log keeps their story).
    pub fn prune_ceremonies(&self, before: OffsetDateTime) -> Result<u64> {
        let c = self.conn();
        Ok(exec(&c,
            "DELETE FROM ceremonies WHERE state IN ('succeeded', 'failed', 'cancelled') AND updated_at < ?1",
            params![fmt_time(before)],
        )? as u64)
    }

    // ---- audit -------------------------------------------------------------------------

    pub fn append_audit(&self, a: &NewAudit) -> Result<i64> {
        let c = self.conn();
        insert_audit(&c, a)
    }

    pub fn list_audit(
        &self,
        user: Option<&str>,
        since: Option<OffsetDateTime>,
        limit: u32,
    ) -> Result<Vec<AuditEvent>> {
        let c = self.conn();
        let mut st = c.prepare(
            "SELECT seq, at, event, user_name, credential_id, ceremony_id, actor, detail FROM audit \
             WHERE (?1 IS NULL OR user_name = ?1) AND (?2 IS NULL OR at >= ?2) ORDER BY seq DESC LIMIT ?3",
        )?;
        let rows = st.query_map(params![user, since.map(fmt_time), limit], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, Option<String>>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, String>(7)?,
            ))
        })?;
        rows.map(|r| {
            let t = r?;
            Ok(AuditEvent {
                seq: t.0,
                at: parse_time(&t.1)?,
                event: t.2,
                user: t.3,
                credential_id: t.4,
                ceremony_id: t.5,
                actor: t.6,
                detail: serde_json::from_str(&t.7).unwrap_or(serde_json::Value::Null),
            })
        })
        .collect()
    }

    // ---- tokens ------------------------------------------------------------------------

    pub fn insert_token(&self, rec: &TokenRecord, audit: &NewAudit) -> Result<()> {
        self.tx(|c| {
            exec(c,
                "INSERT INTO tokens (id, role, hash, label, created_at, revoked) VALUES (?1, ?2, ?3, ?4, ?5, 0)",
                params![rec.id, rec.role, rec.hash, rec.label, fmt_time(rec.created_at)],
            )?;
            insert_audit(c, audit)?;
            Ok(())
        })
    }

    pub fn get_token(&self, id: &str) -> Result<Option<TokenRecord>> {
        Ok(self.token_for_auth(id)?.map(|(t, _)| t))
    }

    /// A token and, when it is a kiosk page session, that session's expiry (Unix seconds):
    /// one read on a reader connection, on every request's path.
    pub fn token_for_auth(&self, id: &str) -> Result<Option<(TokenRecord, Option<i64>)>> {
        let c = self.reader();
        let found = row(
            &c,
            "SELECT t.id, t.role, t.hash, t.label, t.created_at, t.revoked, s.expires_at \
             FROM tokens t LEFT JOIN kiosk_sessions s ON s.token_id = t.id WHERE t.id = ?1",
            params![id],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, bool>(5)?,
                    r.get::<_, Option<i64>>(6)?,
                ))
            },
        )
        .optional()?;
        found
            .map(|t| {
                Ok((
                    TokenRecord {
                        id: t.0,
                        role: t.1,
                        hash: t.2,
                        label: t.3,
                        created_at: parse_time(&t.4)?,
                        revoked: t.5,
                    },
                    t.6,
                ))
            })
            .transpose()
    }

    pub fn revoke_token(&self, id: &str, audit: &NewAudit) -> Result<bool> {
        self.tx(|c| {
            let n = exec(
                c,
                "UPDATE tokens SET revoked = 1 WHERE id = ?1 AND revoked = 0",
                params![id],
            )?;
            if n > 0 {
                insert_audit(c, audit)?;
            }
            Ok(n > 0)
        })
    }
}

#[cfg(test)]
mod tests;
