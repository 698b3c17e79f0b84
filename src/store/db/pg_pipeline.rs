//! Pipelining on a PostgreSQL connection: statements whose answers nobody waits for (savepoints,
//! `BEGIN`, writes whose row count is not read) wait in a queue and go out in the same write as
//! the next statement, so a unit of work costs one round trip per statement it reads from.

use std::sync::Arc;

use super::pg_value::PgValue;
use super::Error;

/// A statement waiting to go out ahead of the next request.
pub(super) enum Ahead {
    /// Transaction control, without parameters (simple-query protocol).
    Simple(String),
    /// A write whose row count nobody reads.
    Write {
        statement: tokio_postgres::Statement,
        params: Vec<PgValue>,
        text: String,
    },
}

impl Ahead {
    pub(super) fn text(&self) -> &str {
        match self {
            Ahead::Simple(t) | Ahead::Write { text: t, .. } => t,
        }
    }

    pub(super) fn rolls_back_to_savepoint(&self) -> bool {
        matches!(self, Ahead::Simple(t) if t.contains("ROLLBACK TO"))
    }
}

type Sent = std::pin::Pin<
    Box<dyn std::future::Future<Output = std::result::Result<(), tokio_postgres::Error>> + Send>,
>;

/// Send `queue`, then `request`, in this order (each request goes out on its first poll), and
/// wait for every answer. Answers the first queued statement that failed (its index) and the
/// request's outcome.
pub(super) async fn in_order<T>(
    client: Arc<tokio_postgres::Client>,
    queue: Vec<Ahead>,
    request: impl std::future::Future<Output = std::result::Result<T, tokio_postgres::Error>>,
) -> (
    Option<(usize, tokio_postgres::Error)>,
    std::result::Result<T, tokio_postgres::Error>,
) {
    use std::task::Poll;
    let mut sent: Vec<Sent> = queue
        .into_iter()
        .map(|a| -> Sent {
            let c = client.clone();
            match a {
                Ahead::Simple(text) => Box::pin(async move { c.batch_execute(&text).await }),
                Ahead::Write {
                    statement, params, ..
                } => Box::pin(async move {
                    let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                        params.iter().map(|v| v as _).collect();
                    c.execute(&statement, &refs).await.map(|_| ())
                }),
            }
        })
        .collect();
    let mut done: Vec<Option<std::result::Result<(), tokio_postgres::Error>>> = Vec::new();
    for f in sent.iter_mut() {
        done.push(match futures::poll!(f.as_mut()) {
            Poll::Ready(r) => Some(r),
            Poll::Pending => None,
        });
    }
    let mut request = std::pin::pin!(request);
    let first = futures::poll!(request.as_mut());
    let mut failed = None;
    for (i, (f, d)) in sent.iter_mut().zip(done).enumerate() {
        let r = match d {
            Some(r) => r,
            None => f.await,
        };
        if let (Err(e), None) = (r, &failed) {
            failed = Some((i, e));
        }
    }
    let answer = match first {
        Poll::Ready(r) => r,
        Poll::Pending => request.await,
    };
    (failed, answer)
}

/// `SAVEPOINT`, `RELEASE` or `ROLLBACK TO`: transaction control that may wait for the next
/// statement.
pub(super) fn is_savepoint_control(sql: &str) -> bool {
    let head = sql
        .trim_start()
        .get(..12)
        .unwrap_or(sql)
        .to_ascii_uppercase();
    head.starts_with("SAVEPOINT ")
        || head.starts_with("RELEASE ")
        || head.starts_with("ROLLBACK TO")
}

/// A statement's error, naming the statement (for the log: never shown to clients).
pub(super) fn in_statement(e: Error, sql: &str) -> Error {
    match e {
        Error::Pg { code, message } => Error::Pg {
            code,
            message: format!("{message}; in: {sql}"),
        },
        e => e,
    }
}

/// Statements this process sent to PostgreSQL: every SQL statement of a request, transaction
/// control and savepoints included, pipelined or not (see [`statements_sent`]).
static STATEMENTS_SENT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many statements this process has sent to PostgreSQL so far, on every connection; a
/// measure of the work a flow costs the database (benches divide it by the flows).
pub fn statements_sent() -> u64 {
    STATEMENTS_SENT.load(std::sync::atomic::Ordering::Relaxed)
}

/// The statements in a simple query's text (keygate's own: no `;` inside a literal).
fn statements_in(text: &str) -> u64 {
    text.split(';').filter(|s| !s.trim().is_empty()).count() as u64
}

/// Count a request and the deferred statements sent ahead of it.
pub(super) fn count_sent(queue: &[Ahead]) {
    let ahead: u64 = queue
        .iter()
        .map(|a| match a {
            Ahead::Simple(text) => statements_in(text),
            Ahead::Write { .. } => 1,
        })
        .sum();
    STATEMENTS_SENT.fetch_add(ahead + 1, std::sync::atomic::Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::statements_in;

    #[test]
    fn a_simple_query_counts_its_statements() {
        assert_eq!(statements_in("COMMIT"), 1);
        assert_eq!(statements_in("BEGIN; SELECT pg_advisory_xact_lock(1)"), 2);
        assert_eq!(
            statements_in("ROLLBACK TO keygate_unit; RELEASE keygate_unit;"),
            2
        );
        assert_eq!(statements_in(" ; "), 0);
    }
}
