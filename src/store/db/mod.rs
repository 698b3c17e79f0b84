//! The one place that names the database drivers: rusqlite for the embedded default (a
//! SQLite file in the data dir) and tokio-postgres for the campus store (PostgreSQL shared by
//! several kiosks). The store's aggregates speak only this module's types: a [`Connection`]
//! with rusqlite's calling conventions (`query_row`, `prepare`, `params!`, `optional()`), whose
//! SQL is written once in SQLite's dialect and rewritten for PostgreSQL ([`translate`]).
//!
//! Contract of the PostgreSQL side: every call is bounded by the target's timeout (a database
//! that does not answer yields [`Error::Unavailable`], never a hang); a lost connection is
//! dropped and opened again on the next call; statements are prepared once per connection.

mod pg;
mod pg_pipeline;
mod pg_target;
#[cfg(test)]
mod pg_tests;
mod pg_value;
mod sqlite;
pub(super) mod translate;
mod value;

pub use pg::NowFn;
pub use pg_pipeline::statements_sent;
pub use pg_target::PgTarget;
pub use value::{FromSql, ToSql, Value, ValueRef};

use std::fmt;

/// Which database engine a connection talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database error, classified once for the store.
#[derive(Debug)]
pub enum Error {
    Sqlite(rusqlite::Error),
    /// PostgreSQL refused the statement: its SQLSTATE and message.
    Pg {
        code: String,
        message: String,
    },
    /// The database cannot be reached (refused, lost, or no answer within the timeout).
    Unavailable(String),
    /// `query_row` found no row.
    QueryReturnedNoRows,
    /// A column could not be read as the asked type.
    FromSql(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Sqlite(e) => write!(f, "{e}"),
            Error::Pg { code, message } => write!(f, "{message} (SQLSTATE {code})"),
            Error::Unavailable(m) => write!(f, "database unavailable: {m}"),
            Error::QueryReturnedNoRows => f.write_str("query returned no rows"),
            Error::FromSql(m) => write!(f, "column conversion: {m}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        match e {
            rusqlite::Error::QueryReturnedNoRows => Error::QueryReturnedNoRows,
            e => Error::Sqlite(e),
        }
    }
}

impl Error {
    /// A uniqueness or primary-key violation (SQLite's constraint codes, SQLSTATE 23505).
    pub fn is_unique_violation(&self) -> bool {
        match self {
            Error::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => matches!(
                f.extended_code,
                rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                    | rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            ),
            Error::Pg { code, .. } => code == "23505",
            _ => false,
        }
    }

    /// Any integrity-constraint violation (SQLite's constraint codes, SQLSTATE class 23).
    pub fn is_constraint(&self) -> bool {
        match self {
            Error::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => {
                f.code == rusqlite::ErrorCode::ConstraintViolation
            }
            Error::Pg { code, .. } => code.starts_with("23"),
            _ => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// rusqlite's `optional()`: a missing row is `Ok(None)`.
pub trait OptionalExtension<T> {
    fn optional(self) -> Result<Option<T>>;
}

impl<T> OptionalExtension<T> for Result<T> {
    fn optional(self) -> Result<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(Error::QueryReturnedNoRows) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Statement parameters: `params![a, b]`, `[]`, or an array of one type.
pub trait Params {
    fn values(&self) -> Vec<ValueRef<'_>>;
}

impl Params for [&dyn ToSql; 0] {
    fn values(&self) -> Vec<ValueRef<'_>> {
        Vec::new()
    }
}

impl Params for [&dyn ToSql] {
    fn values(&self) -> Vec<ValueRef<'_>> {
        self.iter().map(|p| p.to_sql()).collect()
    }
}

impl Params for &[&dyn ToSql] {
    fn values(&self) -> Vec<ValueRef<'_>> {
        self.iter().map(|p| p.to_sql()).collect()
    }
}

impl Params for Vec<Value> {
    fn values(&self) -> Vec<ValueRef<'_>> {
        self.iter().map(|p| p.to_sql()).collect()
    }
}

macro_rules! array_params {
    ($($n:literal)*) => {$(
        impl<T: ToSql> Params for [T; $n] {
            fn values(&self) -> Vec<ValueRef<'_>> {
                self.iter().map(|p| p.to_sql()).collect()
            }
        }
    )*};
}
array_params!(1 2 3 4 5 6 7 8);

/// `params![a, b, c]`: a parameter list of mixed types, as rusqlite's macro.
macro_rules! params {
    () => {
        &[] as &[&dyn $crate::store::db::ToSql]
    };
    ($($p:expr),+ $(,)?) => {
        &[$(&$p as &dyn $crate::store::db::ToSql),+] as &[&dyn $crate::store::db::ToSql]
    };
}
pub(crate) use params;

/// A column index: a position, or a column name.
pub trait RowIndex {
    fn index(&self, row: &Row<'_>) -> Result<usize>;
}

impl RowIndex for usize {
    fn index(&self, _: &Row<'_>) -> Result<usize> {
        Ok(*self)
    }
}

impl RowIndex for &str {
    fn index(&self, row: &Row<'_>) -> Result<usize> {
        row.column_index(self)
    }
}

/// One result row, borrowed from its statement.
pub struct Row<'a>(RowRef<'a>);

enum RowRef<'a> {
    Sqlite(&'a rusqlite::Row<'a>),
    Pg(&'a tokio_postgres::Row),
}

impl Row<'_> {
    pub fn get<I: RowIndex, T: FromSql>(&self, idx: I) -> Result<T> {
        let i = idx.index(self)?;
        T::column_result(self.get_ref(i)?)
    }

    pub fn get_ref(&self, i: usize) -> Result<ValueRef<'_>> {
        match &self.0 {
            RowRef::Sqlite(r) => Ok(r.get_ref(i)?.into()),
            RowRef::Pg(r) => pg_value::column(r, i),
        }
    }

    fn column_index(&self, name: &str) -> Result<usize> {
        match &self.0 {
            RowRef::Sqlite(r) => Ok(r.as_ref().column_index(name)?),
            RowRef::Pg(r) => r
                .columns()
                .iter()
                .position(|c| c.name() == name)
                .ok_or_else(|| Error::FromSql(format!("no column {name}"))),
        }
    }
}

/// A connection to either engine. Not shared between threads at once (the store keeps each
/// behind a mutex).
pub struct Connection(Inner);

enum Inner {
    Sqlite(rusqlite::Connection),
    Pg(pg::PgConn),
}

impl From<rusqlite::Connection> for Connection {
    fn from(c: rusqlite::Connection) -> Self {
        Connection(Inner::Sqlite(c))
    }
}

impl Connection {
    /// A PostgreSQL connection to `target` (connected on first use); `now` answers
    /// `keygate_now()` in its SQL.
    pub fn postgres(target: std::sync::Arc<PgTarget>, now: pg::NowFn) -> Connection {
        Connection(Inner::Pg(pg::PgConn::new(target, now)))
    }

    /// A PostgreSQL connection for one thread at a time (the writer): its I/O runs on the
    /// calling thread.
    pub fn postgres_writer(target: std::sync::Arc<PgTarget>, now: pg::NowFn) -> Connection {
        Connection(Inner::Pg(pg::PgConn::with_own_runtime(target, now)))
    }

    /// A connection to the SQLite file at `path` (tests, tools beside the daemon).
    pub fn open_sqlite(path: &std::path::Path) -> Result<Connection> {
        let c = rusqlite::Connection::open(path)?;
        c.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(c.into())
    }

    pub fn backend(&self) -> Backend {
        match self.0 {
            Inner::Sqlite(_) => Backend::Sqlite,
            Inner::Pg(_) => Backend::Postgres,
        }
    }

    /// The SQLite connection underneath, for what only SQLite has (pragmas, functions).
    pub fn sqlite(&self) -> Option<&rusqlite::Connection> {
        match &self.0 {
            Inner::Sqlite(c) => Some(c),
            Inner::Pg(_) => None,
        }
    }

    pub fn prepare(&self, sql: &str) -> Result<Statement<'_>> {
        match &self.0 {
            Inner::Sqlite(c) => Ok(Statement(Stmt::Plain(c.prepare(sql)?))),
            Inner::Pg(c) => Ok(Statement(Stmt::Pg(c, c.prepare(sql)?))),
        }
    }

    pub fn prepare_cached(&self, sql: &str) -> Result<Statement<'_>> {
        match &self.0 {
            Inner::Sqlite(c) => Ok(Statement(Stmt::Cached(c.prepare_cached(sql)?))),
            Inner::Pg(c) => Ok(Statement(Stmt::Pg(c, c.prepare(sql)?))),
        }
    }

    pub fn execute(&self, sql: &str, p: impl Params) -> Result<usize> {
        self.prepare_cached(sql)?.execute(p)
    }

    pub fn query_row<T>(
        &self,
        sql: &str,
        p: impl Params,
        f: impl FnOnce(&Row<'_>) -> Result<T>,
    ) -> Result<T> {
        self.prepare_cached(sql)?.query_row(p, f)
    }

    /// Statements without parameters, separated by `;` (DDL, savepoints).
    pub fn execute_batch(&self, sql: &str) -> Result<()> {
        match &self.0 {
            Inner::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Inner::Pg(c) => c.batch(sql),
        }
    }

    /// Start a write transaction. SQLite: `BEGIN IMMEDIATE` (the file's write lock). PostgreSQL:
    /// `BEGIN` plus the campus-wide write lock (a transaction-scoped advisory lock), so that
    /// units of different daemons run one after the other as they do on one SQLite file: a
    /// read-check-write inside a unit cannot race a unit of another kiosk.
    pub fn begin_write(&self) -> Result<()> {
        match &self.0 {
            Inner::Sqlite(c) => Ok(c.execute_batch("BEGIN IMMEDIATE")?),
            Inner::Pg(c) => c.begin_write(),
        }
    }

    pub fn commit(&self) -> Result<()> {
        match &self.0 {
            Inner::Sqlite(c) => Ok(c.execute_batch("COMMIT")?),
            Inner::Pg(c) => c.end("COMMIT"),
        }
    }

    pub fn rollback(&self) -> Result<()> {
        match &self.0 {
            Inner::Sqlite(c) => Ok(c.execute_batch("ROLLBACK")?),
            Inner::Pg(c) => c.end("ROLLBACK"),
        }
    }

    /// Whether no transaction is open (SQLite ends one itself on some I/O errors; a lost
    /// PostgreSQL connection ends it too).
    pub fn is_autocommit(&self) -> bool {
        match &self.0 {
            Inner::Sqlite(c) => c.is_autocommit(),
            Inner::Pg(c) => !c.in_transaction(),
        }
    }

    /// Rows changed by this connection so far (for "did this unit write?").
    pub fn total_changes(&self) -> u64 {
        match &self.0 {
            Inner::Sqlite(c) => c.total_changes(),
            Inner::Pg(c) => c.changes(),
        }
    }
}

/// A prepared statement.
pub struct Statement<'c>(Stmt<'c>);

enum Stmt<'c> {
    Cached(rusqlite::CachedStatement<'c>),
    Plain(rusqlite::Statement<'c>),
    Pg(&'c pg::PgConn, std::sync::Arc<pg::Prepared>),
}

impl<'c> Statement<'c> {
    fn sqlite(&mut self) -> Option<&mut rusqlite::Statement<'c>> {
        match &mut self.0 {
            Stmt::Cached(s) => Some(s),
            Stmt::Plain(s) => Some(s),
            Stmt::Pg(..) => None,
        }
    }

    pub fn execute(&mut self, p: impl Params) -> Result<usize> {
        let values = p.values();
        if let Stmt::Pg(c, s) = &self.0 {
            return c.execute(s, &values);
        }
        let s = self.sqlite().expect("a SQLite statement");
        sqlite::bind(s, &values)?;
        Ok(s.raw_execute()?)
    }

    /// Execute a write whose row count the caller does not need. On the campus store, inside
    /// a transaction, it is sent with the next statement (pipelined, no round trip of its
    /// own); its failure then fails that statement and dooms the transaction, whose commit
    /// answers an error. Reads after it on the connection see what it wrote.
    pub fn execute_later(&mut self, p: impl Params) -> Result<()> {
        let values = p.values();
        if let Stmt::Pg(c, s) = &self.0 {
            return c.execute_later(s, &values);
        }
        let s = self.sqlite().expect("a SQLite statement");
        sqlite::bind(s, &values)?;
        s.raw_execute()?;
        Ok(())
    }

    pub fn query(&mut self, p: impl Params) -> Result<Rows<'_>> {
        let values = p.values();
        if let Stmt::Pg(c, s) = &self.0 {
            return Ok(Rows(RowsInner::Pg(c.query(s, &values)?.into_iter(), None)));
        }
        let s = self.sqlite().expect("a SQLite statement");
        sqlite::bind(s, &values)?;
        Ok(Rows(RowsInner::Sqlite(s.raw_query())))
    }

    pub fn query_row<T>(
        &mut self,
        p: impl Params,
        f: impl FnOnce(&Row<'_>) -> Result<T>,
    ) -> Result<T> {
        let mut rows = self.query(p)?;
        match rows.next()? {
            Some(r) => f(&r),
            None => Err(Error::QueryReturnedNoRows),
        }
    }

    /// Every row mapped by `f` (read to the end before returning).
    pub fn query_map<T>(
        &mut self,
        p: impl Params,
        mut f: impl FnMut(&Row<'_>) -> Result<T>,
    ) -> Result<std::vec::IntoIter<Result<T>>> {
        let mut rows = self.query(p)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(f(&r));
        }
        Ok(out.into_iter())
    }

    pub fn column_names(&self) -> Vec<String> {
        match &self.0 {
            Stmt::Cached(s) => s.column_names().iter().map(|n| n.to_string()).collect(),
            Stmt::Plain(s) => s.column_names().iter().map(|n| n.to_string()).collect(),
            Stmt::Pg(_, s) => s.column_names(),
        }
    }
}

/// The rows of a query.
pub struct Rows<'s>(RowsInner<'s>);

enum RowsInner<'s> {
    Sqlite(rusqlite::Rows<'s>),
    Pg(
        std::vec::IntoIter<tokio_postgres::Row>,
        Option<tokio_postgres::Row>,
    ),
}

impl Rows<'_> {
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Row<'_>>> {
        match &mut self.0 {
            RowsInner::Sqlite(r) => Ok(r.next()?.map(|r| Row(RowRef::Sqlite(r)))),
            RowsInner::Pg(it, current) => {
                *current = it.next();
                Ok(current.as_ref().map(|r| Row(RowRef::Pg(r))))
            }
        }
    }
}
