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
use std::time::Duration;

use tokio_postgres::types::{IsNull, Type};

use super::translate::to_postgres;
use super::{Error, Result, ValueRef};

/// Answers `keygate_now()`: the store's clock as RFC 3339 text.
pub type NowFn = Arc<dyn Fn() -> String + Send + Sync>;

/// The key of the campus-wide write lock (`pg_advisory_xact_lock`): "keygate" in ASCII.
const WRITE_LOCK: i64 = 0x006b_6579_6761_7465;

/// Where the campus store is and how long to wait for it.
pub struct PgTarget {
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    /// The most one call (or connecting) may take.
    pub timeout: Duration,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTarget")
            .field("hosts", &self.config.get_hosts())
            .field("dbname", &self.config.get_dbname())
            .field("user", &self.config.get_user())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl PgTarget {
    /// Parse a `postgres://user:password@host:port/db?sslmode=...` URL. TLS (sslmode
    /// `prefer`, the default, or `require`) verifies the server against the system's roots.
    pub fn parse(url: &str, timeout: Duration) -> std::result::Result<PgTarget, String> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| format!("not a PostgreSQL URL: {e}"))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(timeout);
        }
        config.application_name("keygate");
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(30));
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS set-up: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(PgTarget {
            config,
            tls: tokio_postgres_rustls::MakeRustlsConnect::new(tls),
            timeout,
        })
    }

    /// The database name, for messages.
    pub fn database(&self) -> &str {
        self.config.get_dbname().unwrap_or("postgres")
    }
}

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
        }
    }

    pub fn in_transaction(&self) -> bool {
        self.in_tx.get()
    }

    pub fn changes(&self) -> u64 {
        self.changes.get()
    }

    /// Run `fut` on the I/O runtime and wait for it at most the timeout.
    fn call<T: Send + 'static>(
        &self,
        fut: impl std::future::Future<Output = std::result::Result<T, tokio_postgres::Error>>
            + Send
            + 'static,
    ) -> Result<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        runtime().spawn(async move {
            let _ = tx.send(fut.await);
        });
        match rx.recv_timeout(self.target.timeout) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.classify(e)),
            Err(_) => {
                self.lose("no answer within the timeout");
                Err(Error::Unavailable(format!(
                    "no answer within {} ms",
                    self.target.timeout.as_millis()
                )))
            }
        }
    }

    /// Forget the connection (and with it any open transaction and prepared statement).
    fn lose(&self, why: &str) {
        if self.client.borrow_mut().take().is_some() {
            tracing::warn!(reason = why, "campus store connection lost");
        }
        self.statements.borrow_mut().clear();
        self.in_tx.set(false);
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
        let client = self.client()?;
        let text = t.sql.clone();
        let statement = match self.guarded(|| self.call(async move { client.prepare(&text).await }))
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
        let client = self.client()?;
        let text = p.text.clone();
        let typed = types.clone();
        let statement =
            self.guarded(|| self.call(async move { client.prepare_typed(&text, &typed).await }))?;
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
        let client = self.client()?;
        let n = self
            .call(async move {
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
        let client = self.client()?;
        let rows = self
            .call(async move {
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

    /// Statements without parameters (simple-query protocol).
    pub fn batch(&self, sql: &str) -> Result<()> {
        let client = self.client()?;
        let text = sql.to_string();
        self.call(async move { client.batch_execute(&text).await })
    }

    pub fn begin_write(&self) -> Result<()> {
        self.batch(&format!(
            "BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK})"
        ))?;
        self.in_tx.set(true);
        Ok(())
    }

    pub fn end(&self, how: &str) -> Result<()> {
        let out = self.batch(how);
        self.in_tx.set(false);
        out
    }
}

/// A statement's error, naming the statement (for the log: never shown to clients).
fn in_statement(e: Error, sql: &str) -> Error {
    match e {
        Error::Pg { code, message } => Error::Pg {
            code,
            message: format!("{message}; in: {sql}"),
        },
        e => e,
    }
}

/// A column of a PostgreSQL row in SQLite's storage classes.
pub fn column(row: &tokio_postgres::Row, i: usize) -> Result<ValueRef<'_>> {
    let raw: Option<Raw<'_>> = row
        .try_get(i)
        .map_err(|e| Error::FromSql(format!("column {i}: {e}")))?;
    let Some(Raw(ty, b)) = raw else {
        return Ok(ValueRef::Null);
    };
    let int = |n: usize| -> Result<i64> {
        let bytes = b
            .get(..n)
            .ok_or_else(|| Error::FromSql(format!("short {ty} value")))?;
        Ok(match n {
            2 => i16::from_be_bytes([bytes[0], bytes[1]]) as i64,
            4 => i32::from_be_bytes(bytes.try_into().expect("4 bytes")) as i64,
            _ => i64::from_be_bytes(bytes.try_into().expect("8 bytes")),
        })
    };
    Ok(match ty {
        Type::INT8 => ValueRef::Integer(int(8)?),
        Type::INT4 | Type::OID => ValueRef::Integer(int(4)?),
        Type::INT2 => ValueRef::Integer(int(2)?),
        Type::BOOL => ValueRef::Integer((b.first() == Some(&1)) as i64),
        Type::FLOAT8 => ValueRef::Real(f64::from_bits(int(8)? as u64)),
        Type::FLOAT4 => ValueRef::Real(f32::from_bits(int(4)? as u32) as f64),
        Type::NUMERIC => numeric(b)?,
        Type::BYTEA => ValueRef::Blob(b),
        _ => ValueRef::Text(b),
    })
}

/// A `numeric` in PostgreSQL's binary form (what `sum()` of a bigint answers): an integer
/// when it has no fraction, else a real.
fn numeric(b: &[u8]) -> Result<ValueRef<'static>> {
    let short = || Error::FromSql("short numeric value".into());
    let word = |i: usize| -> Result<i16> {
        let s = b.get(i..i + 2).ok_or_else(short)?;
        Ok(i16::from_be_bytes([s[0], s[1]]))
    };
    let (ndigits, weight, sign, dscale) = (word(0)?, word(2)?, word(4)? as u16, word(6)?);
    if sign == 0xC000 {
        return Ok(ValueRef::Real(f64::NAN));
    }
    let mut value = 0f64;
    for d in 0..ndigits.max(0) as usize {
        let digit = word(8 + 2 * d)? as f64;
        value += digit * 10000f64.powi(weight as i32 - d as i32);
    }
    if sign == 0x4000 {
        value = -value;
    }
    Ok(if dscale == 0 && value.abs() < 9.0e15 {
        ValueRef::Integer(value as i64)
    } else {
        ValueRef::Real(value)
    })
}

/// Any column, as its type and raw binary bytes.
struct Raw<'a>(Type, &'a [u8]);

impl<'a> tokio_postgres::types::FromSql<'a> for Raw<'a> {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(ty.clone(), raw))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// A parameter, written as whatever type PostgreSQL inferred for its place (the store's SQL
/// does not say: an integer may be bound where `bigint`, `integer` or `boolean` is wanted).
#[derive(Debug)]
struct PgValue(super::Value);

impl tokio_postgres::types::ToSql for PgValue {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use super::Value as V;
        match (&self.0, ty) {
            (V::Null, _) => Ok(IsNull::Yes),
            (V::Integer(i), &Type::INT8) => i.to_sql(ty, out),
            (V::Integer(i), &Type::INT4) => i32::try_from(*i)?.to_sql(ty, out),
            (V::Integer(i), &Type::INT2) => i16::try_from(*i)?.to_sql(ty, out),
            (V::Integer(i), &Type::BOOL) => (*i != 0).to_sql(ty, out),
            (V::Integer(i), &Type::FLOAT8) => (*i as f64).to_sql(ty, out),
            (V::Integer(i), _) => i.to_string().as_str().to_sql(&Type::TEXT, out),
            (V::Real(f), &Type::FLOAT4) => (*f as f32).to_sql(ty, out),
            (V::Real(f), &Type::FLOAT8) => f.to_sql(ty, out),
            (V::Real(f), _) => f.to_string().as_str().to_sql(&Type::TEXT, out),
            (V::Text(t), &Type::BYTEA) => t.as_bytes().to_sql(ty, out),
            (V::Text(t), &Type::INT8) => t.parse::<i64>()?.to_sql(ty, out),
            (V::Text(t), _) => t.as_str().to_sql(&Type::TEXT, out),
            (V::Blob(b), &Type::BYTEA) => b.as_slice().to_sql(ty, out),
            (V::Blob(b), _) => std::str::from_utf8(b)?.to_sql(&Type::TEXT, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    tokio_postgres::types::to_sql_checked!();
}
