//! PostgreSQL through tokio-postgres, called synchronously like rusqlite.
//!
//! The connections' I/O runs on one small runtime of its own (`keygate-pg` threads); a call
//! hands its future to it and waits on a channel with the target's timeout. The caller may be
//! any thread, a tokio worker included (it blocks as a SQLite call does), and a database that
//! stops answering costs at most the timeout: the connection is then dropped (PostgreSQL rolls
//! back its open transaction) and opened again on the next call.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use tokio_postgres::types::Type;

use super::pg_pipeline::{count_sent, in_order, in_statement, is_savepoint_control, Ahead};
use super::pg_target::PgTarget;
use super::pg_value::PgValue;

use super::translate::to_postgres;
use super::{Error, Result, ValueRef};

/// Answers `keygate_now()`: the store's clock as RFC 3339 text.
pub type NowFn = Arc<dyn Fn() -> String + Send + Sync>;

/// The key of the campus-wide write lock (`pg_advisory_xact_lock`): "keygate" in ASCII.
const WRITE_LOCK: i64 = 0x006b_6579_6761_7465;

/// The runtime that drives every PostgreSQL connection's I/O.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("keygate-pg")
            .enable_all()
            .build()
            .expect("the PostgreSQL I/O runtime starts")
    })
}

/// A statement prepared on one connection.
pub struct Prepared {
    /// None when PostgreSQL could not tell a parameter's type from the SQL alone (`?1 IS NULL
    /// OR ...`): then the statement is prepared per call with the bound values' types.
    statement: Option<tokio_postgres::Statement>,
    /// The SQL as sent to PostgreSQL.
    text: String,
    /// Parameters as the SQL was written; `keygate_now()` is bound after them.
    params: usize,
    uses_now: bool,
    /// INSERT, UPDATE or DELETE: its rows count as changes.
    writes: bool,
}

impl Prepared {
    pub fn column_names(&self) -> Vec<String> {
        self.statement
            .iter()
            .flat_map(|s| s.columns())
            .map(|c| c.name().to_string())
            .collect()
    }
}

pub struct PgConn {
    target: Arc<PgTarget>,
    now: NowFn,
    client: RefCell<Option<Arc<tokio_postgres::Client>>>,
    statements: RefCell<HashMap<String, Arc<Prepared>>>,
    in_tx: Cell<bool>,
    changes: Cell<u64>,
    /// Transaction-control statements not sent yet (`BEGIN` with the campus lock, savepoints):
    /// they go out ahead of the next statement, in the same write, so they cost no round trip
    /// of their own. Their failure is reported by that next statement.
    deferred: RefCell<Vec<Ahead>>,
    /// A statement of the open transaction failed and no `ROLLBACK TO` has undone it since:
    /// PostgreSQL then refuses every statement, and answers `COMMIT` with a rollback (no
    /// error), so a commit must not be reported as one.
    aborted: Cell<bool>,
    /// A deferred statement failed: the open transaction can only be rolled back, whatever
    /// `ROLLBACK TO` follows (the unit that sent it was already told it succeeded).
    doomed: Cell<bool>,
    /// The connection was lost inside the open transaction (see `lose`).
    broken: Cell<bool>,
    /// The runtime of a connection used by one thread at a time (the writer): the caller
    /// drives the connection's I/O itself, with no hand-over to another thread and back.
    own_runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for PgConn {
    fn drop(&mut self) {
        self.client.get_mut().take();
        if let Some(rt) = self.own_runtime.take() {
            // Never blocks, so the last handle may go from any thread, async ones included.
            rt.shutdown_background();
        }
    }
}

impl PgConn {
    pub fn new(target: Arc<PgTarget>, now: NowFn) -> PgConn {
        PgConn {
            target,
            now,
            client: RefCell::new(None),
            statements: RefCell::new(HashMap::new()),
            in_tx: Cell::new(false),
            changes: Cell::new(0),
            deferred: RefCell::new(Vec::new()),
            aborted: Cell::new(false),
            doomed: Cell::new(false),
            broken: Cell::new(false),
            own_runtime: None,
        }
    }

    /// A connection whose I/O runs on the calling thread (see `own_runtime`); for the writer,
    /// whose every statement would otherwise wait for two thread hand-overs.
    pub fn with_own_runtime(target: Arc<PgTarget>, now: NowFn) -> PgConn {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime starts");
        let mut conn = PgConn::new(target, now);
        conn.own_runtime = Some(rt);
        conn
    }

    pub fn in_transaction(&self) -> bool {
        self.in_tx.get()
    }

    pub fn changes(&self) -> u64 {
        self.changes.get()
    }

    /// Let a connection driven by its caller see what the server did while nobody called (a
    /// connection closed by a restart, an idle timeout): an idle own-runtime connection is not
    /// polled, so without this a dead one looks alive until a transaction has started on it.
    fn notice_closed(&self) {
        if let Some(rt) = &self.own_runtime {
            if tokio::runtime::Handle::try_current().is_err() {
                // Zero-length sleeps park the runtime: the connection task sees an end of
                // stream the server sent meanwhile.
                rt.block_on(async {
                    for _ in 0..2 {
                        tokio::time::sleep(std::time::Duration::ZERO).await;
                        tokio::task::yield_now().await;
                    }
                });
            }
        }
        let closed = self.client.borrow().as_ref().is_some_and(|c| c.is_closed());
        if closed && !self.in_tx.get() {
            self.lose("closed by the server");
        }
    }

    /// Drive `fut` to its end, waiting at most the timeout (None: no answer in time): on the
    /// calling thread when the connection has a runtime of its own, else on the shared I/O
    /// runtime.
    fn drive<T: Send + 'static>(
        &self,
        fut: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Option<T> {
        let timeout = self.target.timeout;
        match &self.own_runtime {
            Some(rt) => {
                let run = move || {
                    rt.block_on(async move { tokio::time::timeout(timeout, fut).await.ok() })
                };
                if tokio::runtime::Handle::try_current().is_ok() {
                    // A thread inside a runtime may not block on another one (start-up work
                    // called from async code): the call gets a thread of its own.
                    std::thread::scope(|s| s.spawn(run).join().ok().flatten())
                } else {
                    run()
                }
            }
            None => {
                let (tx, rx) = std::sync::mpsc::sync_channel(1);
                runtime().spawn(async move {
                    let _ = tx.send(fut.await);
                });
                rx.recv_timeout(timeout).ok()
            }
        }
    }

    /// Run `fut` and wait for it at most the timeout.
    fn call<T: Send + 'static>(
        &self,
        fut: impl std::future::Future<Output = std::result::Result<T, tokio_postgres::Error>>
            + Send
            + 'static,
    ) -> Result<T> {
        match self.drive(fut) {
            Some(Ok(v)) => Ok(v),
            Some(Err(e)) => Err(self.classify(e)),
            None => Err(self.timed_out()),
        }
    }

    fn timed_out(&self) -> Error {
        self.lose("no answer within the timeout");
        Error::Unavailable(format!(
            "no answer within {} ms",
            self.target.timeout.as_millis()
        ))
    }

    /// Send the request `make` builds, preceded by the deferred statements in the same write
    /// (requests on one connection are answered in order), and wait for all. A failure of a
    /// deferred statement dooms the open transaction; a failure of the request marks it
    /// aborted, which a `ROLLBACK TO` that went through clears.
    fn run<T, F>(&self, make: impl FnOnce(Arc<tokio_postgres::Client>) -> F) -> Result<T>
    where
        T: Send + 'static,
        F: std::future::Future<Output = std::result::Result<T, tokio_postgres::Error>>
            + Send
            + 'static,
    {
        let client = self.client()?;
        let queue = self.deferred.take();
        count_sent(&queue);
        let request = make(client.clone());
        let out = if queue.is_empty() {
            self.call(request)
        } else {
            let undoes = queue.iter().any(Ahead::rolls_back_to_savepoint);
            let texts: Vec<String> = queue.iter().map(|a| a.text().to_string()).collect();
            match self.drive(in_order(client, queue, request)) {
                None => Err(self.timed_out()),
                Some((Some((i, e)), _)) => {
                    let e = in_statement(self.classify(e), &texts[i]);
                    if self.in_tx.get() {
                        tracing::warn!(error = %e, "a pipelined statement failed; its transaction rolls back");
                        self.doomed.set(true);
                    }
                    Err(e)
                }
                Some((None, answer)) => {
                    if undoes {
                        self.aborted.set(false);
                    }
                    answer.map_err(|e| self.classify(e))
                }
            }
        };
        if matches!(out, Err(Error::Pg { .. })) && self.in_tx.get() {
            self.aborted.set(true);
        }
        out
    }

    /// Forget the connection (and with it any open transaction and prepared statement).
    ///
    /// Lost inside a transaction, it stays open here but broken (every statement and its
    /// `COMMIT` fail) until ended: a reconnect would commit the rest of a unit statement by
    /// statement, the start of it rolled back with the old connection.
    fn lose(&self, why: &str) {
        if self.client.borrow_mut().take().is_some() {
            tracing::warn!(reason = why, "campus store connection lost");
        }
        self.statements.borrow_mut().clear();
        self.broken.set(self.in_tx.get());
        self.aborted.set(false);
        self.doomed.set(false);
        self.deferred.borrow_mut().clear();
    }

    fn broken_transaction() -> Error {
        Error::Unavailable(
            "the campus store connection was lost in the middle of a transaction; it was rolled back"
                .into(),
        )
    }

    fn classify(&self, e: tokio_postgres::Error) -> Error {
        if let Some(db) = e.as_db_error() {
            let code = db.code().code().to_string();
            tracing::debug!(
                code,
                message = db.message(),
                "campus store refused a statement"
            );
            // Class 08 (connection exception), 57P (operator intervention: shutdown, crash
            // recovery) and 53300 (too many connections): the database, not the statement.
            if code.starts_with("08") || code.starts_with("57P") || code == "53300" {
                self.lose(&code);
                return Error::Unavailable(db.message().to_string());
            }
            if code == "25P02" {
                // "current transaction is aborted": an earlier statement failed in it.
                return Error::Pg {
                    code,
                    message: db.message().to_string(),
                };
            }
            return Error::Pg {
                code,
                message: db.message().to_string(),
            };
        }
        let closed = e.is_closed() || self.client.borrow().as_ref().is_none_or(|c| c.is_closed());
        let message = e.to_string();
        if closed || std::error::Error::source(&e).is_some() {
            self.lose(&message);
        }
        Error::Unavailable(message)
    }

    /// The connection, opened when there is none (or it was closed).
    fn client(&self) -> Result<Arc<tokio_postgres::Client>> {
        if self.broken.get() {
            return Err(Self::broken_transaction());
        }
        if let Some(c) = self.client.borrow().as_ref() {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        if self.client.borrow().is_some() {
            self.lose("closed by the server");
        }
        let target = self.target.clone();
        let client = self.call(async move {
            let (client, connection) = target.config.connect(target.tls.clone()).await?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "campus store connection ended");
                }
            });
            Ok(Arc::new(client))
        })?;
        *self.client.borrow_mut() = Some(client.clone());
        Ok(client)
    }

    /// Run `f` (a prepare, which may fail) so that its failure does not end the open
    /// transaction: inside one, under a savepoint that a failure rolls back to.
    fn guarded<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        if !self.in_tx.get() {
            return f();
        }
        self.batch("SAVEPOINT keygate_prepare")?;
        match f() {
            Ok(v) => {
                self.batch("RELEASE keygate_prepare")?;
                Ok(v)
            }
            Err(e) => {
                if self.in_tx.get() {
                    self.batch("ROLLBACK TO keygate_prepare; RELEASE keygate_prepare")?;
                }
                Err(e)
            }
        }
    }

    pub fn prepare(&self, sql: &str) -> Result<Arc<Prepared>> {
        if let Some(p) = self.statements.borrow().get(sql) {
            return Ok(p.clone());
        }
        let t = to_postgres(sql);
        let text = t.sql.clone();
        let statement = match self
            .guarded(|| self.run(move |client| async move { client.prepare(&text).await }))
        {
            Ok(s) => Some(s),
            Err(Error::Pg { code, .. }) if code == "42P08" || code == "42P18" => None,
            // The statement itself is wrong for PostgreSQL: say which (logged, never shown).
            Err(Error::Pg { code, message }) => {
                return Err(Error::Pg {
                    code,
                    message: format!("{message}; in: {}", t.sql),
                })
            }
            Err(e) => return Err(e),
        };
        let head = t
            .sql
            .trim_start()
            .get(..6)
            .unwrap_or("")
            .to_ascii_uppercase();
        let prepared = Arc::new(Prepared {
            statement,
            text: t.sql.clone(),
            params: t.params,
            uses_now: t.uses_now,
            writes: matches!(head.as_str(), "INSERT" | "UPDATE" | "DELETE"),
        });
        self.statements
            .borrow_mut()
            .insert(sql.to_string(), prepared.clone());
        Ok(prepared)
    }

    fn bind(&self, p: &Prepared, values: &[ValueRef<'_>]) -> Result<Vec<PgValue>> {
        if values.len() != p.params {
            return Err(Error::FromSql(format!(
                "{} parameters given, the statement has {}",
                values.len(),
                p.params
            )));
        }
        let mut out: Vec<PgValue> = values.iter().map(|v| PgValue(v.to_owned_value())).collect();
        if p.uses_now {
            out.push(PgValue(super::Value::Text((self.now)())));
        }
        Ok(out)
    }

    /// `p`'s statement, or (when its parameter types are not in its SQL) the statement
    /// prepared for the types of `params`.
    fn statement_for(&self, p: &Prepared, params: &[PgValue]) -> Result<tokio_postgres::Statement> {
        if let Some(s) = &p.statement {
            return Ok(s.clone());
        }
        let types: Vec<Type> = params
            .iter()
            .map(|v| match v.0 {
                super::Value::Integer(_) => Type::INT8,
                super::Value::Real(_) => Type::FLOAT8,
                super::Value::Blob(_) => Type::BYTEA,
                super::Value::Text(_) | super::Value::Null => Type::TEXT,
            })
            .collect();
        let key = format!("{types:?}\u{0}{}", p.text);
        if let Some(s) = self
            .statements
            .borrow()
            .get(&key)
            .and_then(|p| p.statement.clone())
        {
            return Ok(s);
        }
        let text = p.text.clone();
        let typed = types.clone();
        let statement = self.guarded(|| {
            self.run(move |client| async move { client.prepare_typed(&text, &typed).await })
        })?;
        self.statements.borrow_mut().insert(
            key,
            Arc::new(Prepared {
                statement: Some(statement.clone()),
                text: p.text.clone(),
                params: p.params,
                uses_now: p.uses_now,
                writes: p.writes,
            }),
        );
        Ok(statement)
    }

    pub fn execute(&self, p: &Arc<Prepared>, values: &[ValueRef<'_>]) -> Result<usize> {
        let params = self.bind(p, values)?;
        let statement = self.statement_for(p, &params)?;
        let n = self
            .run(move |client| async move {
                let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                    params.iter().map(|v| v as _).collect();
                client.execute(&statement, &refs).await
            })
            .map_err(|e| in_statement(e, &p.text))?;
        if p.writes {
            self.changes.set(self.changes.get() + n);
        }
        Ok(n as usize)
    }

    pub fn query(
        &self,
        p: &Arc<Prepared>,
        values: &[ValueRef<'_>],
    ) -> Result<Vec<tokio_postgres::Row>> {
        let params = self.bind(p, values)?;
        let statement = self.statement_for(p, &params)?;
        let rows = self
            .run(move |client| async move {
                let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                    params.iter().map(|v| v as _).collect();
                client.query(&statement, &refs).await
            })
            .map_err(|e| in_statement(e, &p.text))?;
        if p.writes {
            self.changes.set(self.changes.get() + rows.len() as u64);
        }
        Ok(rows)
    }

    /// Statements without parameters (simple-query protocol). Savepoint statements inside a
    /// transaction are deferred: sent with the next statement.
    pub fn batch(&self, sql: &str) -> Result<()> {
        if self.in_tx.get() && is_savepoint_control(sql) {
            self.defer(sql);
            return Ok(());
        }
        let text = sql.to_string();
        self.run(move |client| async move { client.batch_execute(&text).await })
    }

    fn defer(&self, sql: &str) {
        let mut d = self.deferred.borrow_mut();
        match d.last_mut() {
            Some(Ahead::Simple(text)) => {
                text.push_str("; ");
                text.push_str(sql);
            }
            _ => d.push(Ahead::Simple(sql.to_string())),
        }
    }

    /// See [`super::Statement::execute_later`]; outside a transaction it runs at once.
    pub fn execute_later(&self, p: &Arc<Prepared>, values: &[ValueRef<'_>]) -> Result<()> {
        if !self.in_tx.get() || p.statement.is_none() {
            return self.execute(p, values).map(|_| ());
        }
        let params = self.bind(p, values)?;
        let statement = self.statement_for(p, &params)?;
        self.deferred.borrow_mut().push(Ahead::Write {
            statement,
            params,
            text: p.text.clone(),
        });
        Ok(())
    }

    /// `BEGIN` and the campus write lock, sent with the transaction's first statement. The
    /// lock may be waited for as long as the timeout, like any statement.
    pub fn begin_write(&self) -> Result<()> {
        self.notice_closed();
        if self.in_tx.get() {
            return Err(Error::Pg {
                code: "25001".into(),
                message: "a transaction is already open".into(),
            });
        }
        self.deferred.borrow_mut().clear();
        self.defer(&format!(
            "BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK})"
        ));
        self.in_tx.set(true);
        self.aborted.set(false);
        self.doomed.set(false);
        Ok(())
    }

    /// `COMMIT` or `ROLLBACK` the open transaction. A commit of an aborted transaction rolls
    /// it back and fails (PostgreSQL would answer it with a rollback, not an error).
    pub fn end(&self, how: &str) -> Result<()> {
        let commit = how.eq_ignore_ascii_case("COMMIT");
        let out = if self.broken.replace(false) {
            // The server rolled it back when the connection went.
            self.deferred.borrow_mut().clear();
            if commit {
                Err(Self::broken_transaction())
            } else {
                Ok(())
            }
        } else if commit {
            self.commit()
        } else {
            self.deferred.borrow_mut().clear();
            let text = how.to_string();
            self.run(move |client| async move { client.batch_execute(&text).await })
        };
        self.in_tx.set(false);
        self.aborted.set(false);
        self.doomed.set(false);
        out
    }

    fn commit(&self) -> Result<()> {
        if self.aborted.get() && !self.doomed.get() && !self.deferred.borrow().is_empty() {
            // A deferred ROLLBACK TO may undo the last failure: send what waits first.
            self.run(|client| async move { client.batch_execute("SELECT 1").await })?;
        }
        if self.aborted.get() || self.doomed.get() {
            self.deferred.borrow_mut().clear();
            let _ = self.run(|client| async move { client.batch_execute("ROLLBACK").await });
            return Err(Error::Pg {
                code: "25P02".into(),
                message: "a statement of the transaction failed; it was rolled back".into(),
            });
        }
        // A deferred statement that fails now makes COMMIT a rollback: `run` answers its error.
        self.run(|client| async move { client.batch_execute("COMMIT").await })
    }
}
