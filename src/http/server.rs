//! The HTTP listener: every connection under a cap, every request head and body under a
//! timeout, every event stream counted. Contract: however many sockets a local process opens
//! or holds, keygate keeps descriptors for its database, keys and providers, and a fresh
//! client is answered: served while the cap has room, else `503` at once (and closed).
//!
//! HTTP/1.1 only (what the kiosk page, curl and the front-ends speak). hyper's header-read
//! timer runs whenever the server waits for a request head, so it bounds both a slow head and
//! a kept-alive connection idling between requests; a long poll or an event stream is a
//! response in progress and is not cut by it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::base::error::ErrorCode;
use crate::base::sync::lock;
use crate::config::HttpConfig;

/// Descriptors kept free of connections for the database (file, WAL, SHM, readers), the
/// keys, the SMS providers' sockets and the log.
const RESERVED_DESCRIPTORS: u64 = 128;

/// Refusals being written at once, at most; beyond that a client is closed unanswered.
const MAX_REFUSALS_IN_FLIGHT: usize = 64;

/// The listener's limits, resolved from [`HttpConfig`].
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
}

impl Limits {
    /// `max_connections = 0` derives the cap from the descriptor limit, which is first raised
    /// to its hard limit (as systemd's default soft limit of 1,024 is far below it).
    pub fn resolve(cfg: &HttpConfig) -> Limits {
        let max_connections = if cfg.max_connections > 0 {
            cfg.max_connections
        } else {
            let soft = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
            derived_cap(soft)
        };
        Limits {
            max_connections,
            header_timeout: Duration::from_secs(cfg.header_timeout_secs),
            body_timeout: Duration::from_secs(cfg.body_timeout_secs),
        }
    }
}

/// The connection cap for a descriptor limit: the limit less the reserve, at least 16.
pub fn derived_cap(nofile: u64) -> usize {
    nofile
        .saturating_sub(RESERVED_DESCRIPTORS)
        .clamp(16, 1 << 20) as usize
}

/// Serve `app` on `listener` until `shutdown` resolves; then stop accepting and give open
/// connections up to 10 s to finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = app.layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
        limits.body_timeout,
    ));
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS_IN_FLIGHT));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // EMFILE/ENFILE and friends: the error is the listener's, not the
                    // client's; back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            if let Ok(p) = refusals.clone().try_acquire_owned() {
                tokio::spawn(async move {
                    refuse(stream).await;
                    drop(p);
                });
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open 10 s after shutdown began; closing them");
    }
    Ok(())
}

/// Answer a client beyond the cap with `503` and close, within a second.
async fn refuse(mut stream: TcpStream) {
    let body = format!(
        r#"{{"error":{{"code":"{}","message":"keygate has too many open connections; retry in a moment"}}}}"#,
        ErrorCode::TooManyConnections.as_str()
    );
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(answer.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Counts live event streams, in all and per ceremony; a [`StreamSlot`] holds one.
#[derive(Debug)]
pub struct EventStreams {
    total: AtomicUsize,
    per_ceremony: Mutex<HashMap<String, usize>>,
    max_total: usize,
    max_per_ceremony: usize,
}

impl EventStreams {
    pub fn new(cfg: &HttpConfig) -> Arc<EventStreams> {
        Arc::new(EventStreams {
            total: AtomicUsize::new(0),
            per_ceremony: Mutex::new(HashMap::new()),
            max_total: cfg.max_event_streams,
            max_per_ceremony: cfg.max_event_streams_per_ceremony,
        })
    }

    /// A slot for one more stream of `ceremony`, or None when either cap is reached.
    pub fn open(self: &Arc<Self>, ceremony: &str) -> Option<StreamSlot> {
        let mut per = lock(&self.per_ceremony);
        let n = per.get(ceremony).copied().unwrap_or(0);
        if n >= self.max_per_ceremony {
            return None;
        }
        if self
            .total
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| {
                (t < self.max_total).then_some(t + 1)
            })
            .is_err()
        {
            return None;
        }
        per.insert(ceremony.to_string(), n + 1);
        Some(StreamSlot {
            streams: self.clone(),
            ceremony: ceremony.to_string(),
        })
    }

    pub fn live(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }
}

/// One live event stream; dropping it (the stream ended or the client left) frees the slot.
#[derive(Debug)]
pub struct StreamSlot {
    streams: Arc<EventStreams>,
    ceremony: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut per = lock(&self.streams.per_ceremony);
        if let Some(n) = per.get_mut(&self.ceremony) {
            *n -= 1;
            if *n == 0 {
                per.remove(&self.ceremony);
            }
        }
        self.streams.total.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_a_reserve() {
        assert_eq!(derived_cap(1024), 896);
        assert_eq!(derived_cap(100), 16);
        assert_eq!(derived_cap(524_288), 524_160);
    }

    #[test]
    fn stream_slots_are_capped_in_all_and_per_ceremony_and_come_back() {
        let s = EventStreams::new(&HttpConfig {
            max_event_streams: 3,
            max_event_streams_per_ceremony: 2,
            ..HttpConfig::default()
        });
        let a1 = s.open("a").unwrap();
        let _a2 = s.open("a").unwrap();
        assert!(s.open("a").is_none(), "per ceremony");
        let _b1 = s.open("b").unwrap();
        assert!(s.open("c").is_none(), "in all");
        drop(a1);
        assert_eq!(s.live(), 2);
        let _c1 = s.open("c").unwrap();
        assert!(lock(&s.per_ceremony).get("a") == Some(&1));
    }
}
