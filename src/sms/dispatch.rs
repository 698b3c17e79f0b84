//! Sending through the failover chain: per provider, retries with exponential backoff and
//! jitter on transient errors only (honouring Retry-After), a circuit breaker that skips a
//! provider after repeated failures, and no retry or failover on a 4xx rejection.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use serde::Serialize;

use super::providers::{OutgoingSms, ProviderError, SendReceipt, SmsProvider};
use super::Clock;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

/// What `GET /v1/sms/providers` shows per provider.
#[derive(Debug, Clone, Serialize)]
pub struct ProviderHealth {
    pub name: &'static str,
    pub circuit: CircuitState,
    pub consecutive_failures: u32,
    pub sent: u64,
    pub failed: u64,
    pub last_error: Option<String>,
    /// Unix ms when an open circuit lets a trial request through.
    pub retry_at: Option<i64>,
}

struct Breaker {
    consecutive_failures: u32,
    open_until: Option<i64>,
    sent: u64,
    failed: u64,
    last_error: Option<String>,
}

pub struct Dispatcher {
    chain: Vec<(Arc<dyn SmsProvider>, Mutex<Breaker>)>,
    clock: Arc<dyn Clock>,
    max_retries: u32,
    retry_base: Duration,
    breaker_failures: u32,
    breaker_cooldown_ms: i64,
}

/// The outcome of one dispatch over the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dispatched {
    Sent {
        provider: &'static str,
        receipt: SendReceipt,
    },
    /// A provider refused the message itself (4xx): final, no failover.
    Rejected {
        provider: &'static str,
        detail: String,
    },
    /// Every provider failed transiently or had its circuit open: try again later.
    Unavailable { detail: String },
}

impl Dispatcher {
    pub fn new(
        chain: Vec<Arc<dyn SmsProvider>>,
        clock: Arc<dyn Clock>,
        max_retries: u32,
        retry_base: Duration,
        breaker_failures: u32,
        breaker_cooldown: Duration,
    ) -> Self {
        Dispatcher {
            chain: chain
                .into_iter()
                .map(|p| {
                    (
                        p,
                        Mutex::new(Breaker {
                            consecutive_failures: 0,
                            open_until: None,
                            sent: 0,
                            failed: 0,
                            last_error: None,
                        }),
                    )
                })
                .collect(),
            clock,
            max_retries,
            retry_base,
            breaker_failures: breaker_failures.max(1),
            breaker_cooldown_ms: breaker_cooldown.as_millis() as i64,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.chain.is_empty()
    }

    fn circuit(&self, b: &Breaker) -> CircuitState {
        match b.open_until {
            Some(t) if self.clock.now_ms() < t => CircuitState::Open,
            Some(_) => CircuitState::HalfOpen,
            None => CircuitState::Closed,
        }
    }

    /// True when at least one provider would be tried now.
    pub fn any_available(&self) -> bool {
        self.chain
            .iter()
            .any(|(_, b)| self.circuit(&lock(b)) != CircuitState::Open)
    }

    pub fn health(&self) -> Vec<ProviderHealth> {
        self.chain
            .iter()
            .map(|(p, b)| {
                let b = lock(b);
                ProviderHealth {
                    name: p.name(),
                    circuit: self.circuit(&b),
                    consecutive_failures: b.consecutive_failures,
                    sent: b.sent,
                    failed: b.failed,
                    last_error: b.last_error.clone(),
                    retry_at: b.open_until,
                }
            })
            .collect()
    }

    fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(ra) = retry_after {
            return ra.min(Duration::from_secs(10));
        }
        let exp = self.retry_base.saturating_mul(1 << attempt.min(10));
        let jitter = rand::thread_rng().gen_range(0..=self.retry_base.as_millis().max(1) as u64);
        exp + Duration::from_millis(jitter)
    }

    pub async fn send(&self, msg: &OutgoingSms) -> Dispatched {
        let mut last = String::from("no SMS provider is configured");
        for (provider, breaker) in &self.chain {
            if self.circuit(&lock(breaker)) == CircuitState::Open {
                last = format!("{}: circuit open", provider.name());
                continue;
            }
            let mut attempt = 0;
            loop {
                match provider.send(msg).await {
                    Ok(receipt) => {
                        let mut b = lock(breaker);
                        b.consecutive_failures = 0;
                        b.open_until = None;
                        b.sent += 1;
                        return Dispatched::Sent {
                            provider: provider.name(),
                            receipt,
                        };
                    }
                    Err(ProviderError::Rejected(detail)) => {
                        lock(breaker).last_error = Some(detail.clone());
                        return Dispatched::Rejected {
                            provider: provider.name(),
                            detail,
                        };
                    }
                    Err(ProviderError::Transient {
                        detail,
                        retry_after,
                    }) => {
                        tracing::warn!(provider = provider.name(), message = %msg.id, attempt, %detail, "SMS provider failed");
                        let opened = {
                            let mut b = lock(breaker);
                            b.failed += 1;
                            b.consecutive_failures += 1;
                            b.last_error = Some(detail.clone());
                            let half_open = b.open_until.is_some();
                            if half_open || b.consecutive_failures >= self.breaker_failures {
                                b.open_until = Some(self.clock.now_ms() + self.breaker_cooldown_ms);
                                true
                            } else {
                                false
                            }
                        };
                        last = format!("{}: {detail}", provider.name());
                        if opened || attempt >= self.max_retries {
                            break;
                        }
                        tokio::time::sleep(self.backoff(attempt, retry_after)).await;
                        attempt += 1;
                    }
                }
            }
        }
        Dispatched::Unavailable { detail: last }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
