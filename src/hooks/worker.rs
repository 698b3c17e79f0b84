//! The one hook worker: fans new audit lines out into deliveries, POSTs the due ones (a few
//! at a time, each with a timeout), retries with exponential backoff, and gives a delivery up
//! ("dead", kept) once it is [`MAX_AGE_MS`] old.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;

use super::{event_data, hook_event, hook_signature, HookError};
use crate::base::clock::Clock;
use crate::config::HookConfig;
use crate::store::{AuditEvent, HookDelivery, Store, StoreError};

/// A delivery not accepted within this age is given up; audit lines older than this when the
/// fan-out reaches them (hooks re-enabled after a long pause) are not sent at all.
pub const MAX_AGE_MS: i64 = 24 * 3600 * 1000;
/// The first retry waits this long, each next one twice as long, up to [`RETRY_CAP_MS`].
const RETRY_BASE_MS: i64 = 1000;
const RETRY_CAP_MS: i64 = 3600 * 1000;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// POSTs in flight at once (receivers are remote; SQLite stays serialised).
const CONCURRENCY: usize = 8;
/// Audit lines fanned out per transaction.
const FAN_OUT_BATCH: u32 = 256;
/// Delivered rows are kept this long (for `GET /v1/hooks` and debugging), then pruned.
const KEEP_DELIVERED_MS: i64 = 7 * 24 * 3600 * 1000;
const POLL: Duration = Duration::from_millis(250);

pub struct HookWorker {
    hooks: Arc<Vec<HookConfig>>,
    store: Store,
    clock: Arc<dyn Clock>,
    client: reqwest::Client,
}

impl HookWorker {
    pub fn new(
        hooks: Vec<HookConfig>,
        store: Store,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<HookWorker>, HookError> {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(3))
            // A redirect would re-POST the signed body somewhere the operator did not name.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| HookError::Client(e.to_string()))?;
        Ok(Arc::new(HookWorker {
            hooks: Arc::new(hooks),
            store,
            clock,
            client,
        }))
    }

    /// Start the cursor (synchronously: an event right after start-up is not missed) and run
    /// the worker until the process ends. Call inside a tokio runtime.
    pub fn spawn(self: &Arc<Self>) -> Result<tokio::task::JoinHandle<()>, HookError> {
        self.store.hooks_start_cursor()?;
        let worker = self.clone();
        Ok(tokio::spawn(async move {
            let mut last_prune: Option<std::time::Instant> = None;
            loop {
                if worker.store.storage_full() {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
                if let Err(e) = worker.round().await {
                    tracing::error!(error = %e, "hook worker");
                }
                if last_prune.is_none_or(|t| t.elapsed() >= Duration::from_secs(3600)) {
                    let before = worker.clock.now_ms() - KEEP_DELIVERED_MS;
                    if let Err(e) = worker
                        .store
                        .atomic(move |tx| tx.hook_prune_delivered(before))
                        .await
                    {
                        tracing::error!(error = %e, "hook outbox prune");
                    }
                    last_prune = Some(std::time::Instant::now());
                }
                tokio::time::sleep(POLL).await;
            }
        }))
    }

    /// One round: fan out every new audit line, then POST every due delivery once. Public for
    /// tests; returns how many POSTs were made.
    pub async fn round(&self) -> Result<usize, StoreError> {
        while self.fan_out().await? == FAN_OUT_BATCH as usize {}
        let due = self.store.hook_deliveries_due(self.clock.now_ms(), 64)?;
        let n = due.len();
        let results: Vec<Result<(), StoreError>> = futures::stream::iter(due)
            .map(|d| self.deliver(d))
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        results.into_iter().collect::<Result<(), _>>()?;
        Ok(n)
    }

    async fn fan_out(&self) -> Result<usize, StoreError> {
        let hooks = self.hooks.clone();
        let now = self.clock.now_ms();
        self.store
            .atomic(move |tx| tx.hooks_fan_out(FAN_OUT_BATCH, |lines| plan(&hooks, lines, now)))
            .await
    }

    async fn deliver(&self, mut d: HookDelivery) -> Result<(), StoreError> {
        let Some(hook) = self.hooks.iter().find(|h| h.url == d.hook_url) else {
            d.state = "dead".into();
            d.last_error = Some("the hook is no longer configured".into());
            return self.save(d).await;
        };
        let timestamp = (self.clock.now_ms() / 1000).to_string();
        let signature = hook_signature(hook.secret.expose(), &timestamp, d.payload.as_bytes());
        d.attempts += 1;
        let outcome = self
            .client
            .post(&hook.url)
            .header("content-type", "application/json")
            .header("x-keygate-timestamp", &timestamp)
            .header("x-keygate-signature", signature)
            .header("x-keygate-event", &d.event)
            .body(d.payload.clone())
            .send()
            .await;
        let now = self.clock.now_ms();
        let failure = match outcome {
            Ok(r) if r.status().is_success() => None,
            Ok(r) => Some(format!("HTTP {}", r.status().as_u16())),
            Err(e) if e.is_timeout() => Some("timed out".to_string()),
            Err(e) if e.is_connect() => Some("connection failed".to_string()),
            Err(_) => Some("transport error".to_string()),
        };
        match failure {
            None => {
                d.state = "delivered".into();
                d.delivered_at = Some(now);
                d.last_error = None;
                tracing::debug!(delivery = %d.id, event = %d.event, "hook delivered");
            }
            Some(why) => {
                let wait =
                    (RETRY_BASE_MS << d.attempts.saturating_sub(1).min(20)).min(RETRY_CAP_MS);
                if now + wait - d.created_at >= MAX_AGE_MS {
                    d.state = "dead".into();
                    tracing::error!(delivery = %d.id, event = %d.event, url = %d.hook_url,
                        attempts = d.attempts, error = %why, "hook delivery given up");
                } else {
                    d.next_attempt_at = now + wait;
                    tracing::warn!(delivery = %d.id, event = %d.event, url = %d.hook_url,
                        attempts = d.attempts, error = %why, "hook delivery failed; will retry");
                }
                d.last_error = Some(why);
            }
        }
        self.save(d).await
    }

    async fn save(&self, d: HookDelivery) -> Result<(), StoreError> {
        self.store.atomic(move |tx| tx.hook_delivery_save(&d)).await
    }
}

/// The deliveries of `lines`: one per (subscribed hook, hook event) that is not older than
/// [`MAX_AGE_MS`] at `now`.
fn plan(hooks: &[HookConfig], lines: &[AuditEvent], now: i64) -> Vec<HookDelivery> {
    let mut out = Vec::new();
    for a in lines {
        let Some(event) = hook_event(&a.event) else {
            continue;
        };
        let at_ms = (a.at.unix_timestamp_nanos() / 1_000_000) as i64;
        if now - at_ms >= MAX_AGE_MS {
            continue;
        }
        let Some(data) = event_data(a) else {
            continue;
        };
        let at = crate::store::fmt_time(a.at);
        for hook in hooks.iter().filter(|h| h.wants(event)) {
            let id = crate::store::new_row_id();
            let payload = json!({ "id": id, "event": event, "at": at, "data": data });
            out.push(HookDelivery {
                id,
                hook_url: hook.url.clone(),
                event: event.to_string(),
                audit_seq: a.seq,
                payload: payload.to_string(),
                created_at: now,
                state: "pending".into(),
                attempts: 0,
                next_attempt_at: now,
                last_error: None,
                delivered_at: None,
            });
        }
    }
    out
}
