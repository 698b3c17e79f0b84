//! `keygate store migrate --to URL`: an existing SQLite deployment moves to the campus store.
//! Every table is copied row for row into an empty campus store in one transaction (all of it
//! or nothing), in an order that keeps every foreign key satisfied; then the copy is checked:
//! each table's row count on both sides, and the audit chain walked on the campus store.

use super::db::{Connection, Value};
use super::{Result, Store, StoreError};

/// Tables in an order that satisfies their references; tables not named here (added by later
/// migrations) follow in name order.
const ORDER: &[&str] = &[
    "users",
    "tokens",
    "kiosk_sessions",
    "credentials",
    "ceremonies",
    "phones",
    "sms_challenges",
    "sms_outbox",
];

/// What the copy moved: each table with its row count (equal on both sides).
#[derive(Debug, Clone, serde::Serialize)]
pub struct CopyReport {
    pub tables: Vec<(String, u64)>,
    pub audit_entries: u64,
}

fn tables(c: &Connection) -> Result<Vec<String>> {
    let mut st = c.prepare(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
         ORDER BY name",
    )?;
    let names: Vec<String> = st
        .query_map([], |r| r.get(0))?
        .collect::<super::db::Result<_>>()?;
    let mut ordered: Vec<String> = ORDER
        .iter()
        .filter(|t| names.iter().any(|n| n == *t))
        .map(|t| t.to_string())
        .collect();
    ordered.extend(names.into_iter().filter(|n| !ORDER.contains(&n.as_str())));
    Ok(ordered)
}

fn count(c: &Connection, table: &str) -> Result<u64> {
    let n: i64 = c.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?;
    Ok(n as u64)
}

/// Every row of `table` with its column names.
fn rows(c: &Connection, table: &str) -> Result<(Vec<String>, Vec<Vec<Value>>)> {
    let mut st = c.prepare(&format!("SELECT * FROM {table}"))?;
    let names = st.column_names();
    let mut rows = st.query([])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let mut row = Vec::with_capacity(names.len());
        for i in 0..names.len() {
            row.push(r.get_ref(i)?.to_owned_value());
        }
        out.push(row);
    }
    Ok((names, out))
}

impl Store {
    /// Copy everything in this (SQLite) store into `target`, an empty campus store, and check
    /// the copy. Refuses a target that holds data already.
    pub fn copy_into(&self, target: &Store) -> Result<CopyReport> {
        if self.is_shared() || !target.is_shared() {
            return Err(StoreError::Conflict(
                "copy goes from a SQLite store to a campus store".into(),
            ));
        }
        let source = self.conn();
        let names = tables(&source)?;
        target.tx(|t| {
            for table in ["users", "audit", "tokens"] {
                if count(t, table)? > 0 {
                    return Err(StoreError::Conflict(format!(
                        "the campus store is not empty (table {table} has rows): migrate into \
                         a new database"
                    )));
                }
            }
            for table in &names {
                let (cols, data) = rows(&source, table)?;
                if data.is_empty() {
                    continue;
                }
                let marks: Vec<String> = (1..=cols.len()).map(|i| format!("?{i}")).collect();
                let sql = format!(
                    "INSERT INTO {table} ({}) VALUES ({})",
                    cols.join(", "),
                    marks.join(", ")
                );
                for row in data {
                    t.execute(&sql, row)?;
                }
            }
            Ok(())
        })?;
        let mut report = CopyReport {
            tables: Vec::new(),
            audit_entries: 0,
        };
        let target_conn = target.conn();
        for table in &names {
            let (from, to) = (count(&source, table)?, count(&target_conn, table)?);
            if from != to {
                return Err(StoreError::Corrupt(format!(
                    "{table}: {from} rows in the SQLite store, {to} in the campus store"
                )));
            }
            if table == "audit" {
                report.audit_entries = to;
            }
            report.tables.push((table.clone(), to));
        }
        let verdict = super::verify_audit_chain_on(&target_conn, Some(&self.audit.key), None)?;
        if let Some(b) = verdict.broken {
            return Err(StoreError::Corrupt(format!(
                "the audit chain does not verify on the campus store: {b:?}"
            )));
        }
        Ok(report)
    }
}
