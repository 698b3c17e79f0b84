//! Sending through the failover chain: per provider, retries with exponential backoff and
//! jitter on transient errors only (honouring Retry-After), a circuit breaker that skips a
//! provider after repeated failures, and no retry or failover on a 4xx rejection.
//!
//! Breaker contract: closed lets every send through; open skips the provider until its cooldown
//! ends; half-open (cooldown over) lets exactly one trial send ("probe") through at a time,
//! and every other send meanwhile treats the provider as open. The probe's outcome closes the
//! circuit (success) or opens it again (transient failure); a rejection leaves it half-open.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use serde::Serialize;

use super::providers::{OutgoingSms, ProviderError, SendReceipt, SmsProvider};
use crate::base::clock::Clock;
use crate::base::sync::lock;
use crate::metrics::{MessageStatus, Metrics};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

/// What `GET /v1/sms/providers` shows per provider.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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
    /// A half-open circuit's single trial send is under way.
    probing: bool,
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
    metrics: Metrics,
    /// Where circuit openings and closings are audited (and so reach the event hooks).
    audit: Option<crate::store::Store>,
}

/// Whether a send may use a provider now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admission {
    Closed,
    /// This send is the half-open circuit's probe.
    Probe,
    Skip,
}

/// Clears a probe's claim however its send ends (including the future being dropped).
struct ProbeClaim<'a>(Option<&'a Mutex<Breaker>>);

impl Drop for ProbeClaim<'_> {
    fn drop(&mut self) {
        if let Some(b) = self.0 {
            lock(b).probing = false;
        }
    }
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
                            probing: false,
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
            metrics: Metrics::default(),
            audit: None,
        }
    }

    /// The dispatcher auditing its circuits' openings and closings into `store`.
    pub fn with_audit(mut self, store: crate::store::Store) -> Self {
        self.audit = Some(store);
        self
    }

    /// Audit a circuit that opened (from closed) or closed; a failed write is only logged.
    async fn audit_circuit(&self, provider: &'static str, opened: Option<u32>) {
        let Some(store) = &self.audit else {
            return;
        };
        let (event, detail) = match opened {
            Some(failures) => (
                "sms.circuit_opened",
                serde_json::json!({ "provider": provider, "consecutive_failures": failures }),
            ),
            None => (
                "sms.circuit_closed",
                serde_json::json!({ "provider": provider }),
            ),
        };
        let line = crate::store::NewAudit::new(event, "system").detail(detail);
        if let Err(e) = store.append_audit(&line).await {
            tracing::error!(provider, error = %e, "cannot audit the circuit change");
        }
    }

    /// The dispatcher counting its send attempts into `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The configured provider called `name`, as the chain names it.
    pub fn provider_name(&self, name: &str) -> Option<&'static str> {
        self.chain
            .iter()
            .map(|(p, _)| p.name())
            .find(|n| *n == name)
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

    /// Decide, under the breaker's lock, whether this send may use the provider; a half-open
    /// circuit admits one probe and claims it until that probe's send ends.
    fn admit(&self, b: &Mutex<Breaker>) -> Admission {
        let mut b = lock(b);
        match self.circuit(&b) {
            CircuitState::Closed => Admission::Closed,
            CircuitState::Open => Admission::Skip,
            CircuitState::HalfOpen if b.probing => Admission::Skip,
            CircuitState::HalfOpen => {
                b.probing = true;
                Admission::Probe
            }
        }
    }

    /// True when at least one provider would be tried now (a half-open circuit counts: its
    /// probe may be about to close it).
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
            let admission = self.admit(breaker);
            if admission == Admission::Skip {
                last = format!("{}: circuit open", provider.name());
                continue;
            }
            let _claim = ProbeClaim((admission == Admission::Probe).then_some(breaker));
            let mut attempt = 0;
            loop {
                match super::providers::send_via(provider.as_ref(), msg).await {
                    Ok(receipt) => {
                        self.metrics
                            .sms_message(provider.name(), MessageStatus::Sent);
                        let was_open = {
                            let mut b = lock(breaker);
                            b.consecutive_failures = 0;
                            b.sent += 1;
                            b.open_until.take().is_some()
                        };
                        if was_open {
                            self.audit_circuit(provider.name(), None).await;
                        }
                        return Dispatched::Sent {
                            provider: provider.name(),
                            receipt,
                        };
                    }
                    Err(ProviderError::Rejected(detail)) => {
                        self.metrics
                            .sms_message(provider.name(), MessageStatus::Rejected);
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
                        self.metrics
                            .sms_message(provider.name(), MessageStatus::Failed);
                        tracing::warn!(provider = provider.name(), message = %msg.id, attempt, %detail, "SMS provider failed");
                        let (opened, newly) = {
                            let mut b = lock(breaker);
                            b.failed += 1;
                            b.consecutive_failures += 1;
                            b.last_error = Some(detail.clone());
                            let half_open = b.open_until.is_some();
                            if half_open || b.consecutive_failures >= self.breaker_failures {
                                b.open_until = Some(self.clock.now_ms() + self.breaker_cooldown_ms);
                                (true, (!half_open).then_some(b.consecutive_failures))
                            } else {
                                (false, None)
                            }
                        };
                        if newly.is_some() {
                            self.audit_circuit(provider.name(), newly).await;
                        }
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use futures::future::BoxFuture;
    use tokio::sync::Semaphore;

    use super::*;
    use crate::base::clock::ManualClock;

    /// Fails transiently while `down`; otherwise each send waits for a permit of `gate`.
    struct Gated {
        name: &'static str,
        down: AtomicBool,
        calls: AtomicUsize,
        gate: Semaphore,
    }

    impl Gated {
        fn new(name: &'static str, down: bool, permits: usize) -> Arc<Gated> {
            Arc::new(Gated {
                name,
                down: AtomicBool::new(down),
                calls: AtomicUsize::new(0),
                gate: Semaphore::new(permits),
            })
        }
    }

    impl SmsProvider for Gated {
        fn name(&self) -> &'static str {
            self.name
        }
        fn send<'a>(
            &'a self,
            _msg: &'a OutgoingSms,
        ) -> BoxFuture<'a, Result<SendReceipt, ProviderError>> {
            Box::pin(async move {
                self.calls.fetch_add(1, Ordering::SeqCst);
                if self.down.load(Ordering::SeqCst) {
                    return Err(ProviderError::Transient {
                        detail: "HTTP 503".into(),
                        retry_after: None,
                    });
                }
                self.gate.acquire().await.expect("open gate").forget();
                Ok(SendReceipt {
                    provider_message_id: None,
                })
            })
        }
    }

    fn msg() -> OutgoingSms {
        OutgoingSms {
            id: "m".into(),
            to: "+32475345678".into(),
            text: "t".into(),
        }
    }

    /// A dispatcher whose first provider's circuit is half-open (it failed once, the cooldown
    /// passed) and now answers only when its gate lets it.
    async fn half_open(chain: Vec<Arc<dyn SmsProvider>>, flaky: &Gated) -> Arc<Dispatcher> {
        let clock = Arc::new(ManualClock::new(1_790_000_000_000));
        let d = Arc::new(Dispatcher::new(
            chain,
            clock.clone(),
            0,
            Duration::from_millis(1),
            1,
            Duration::from_secs(30),
        ));
        d.send(&msg()).await;
        assert_eq!(d.health()[0].circuit, CircuitState::Open);
        clock.advance(Duration::from_secs(30));
        assert_eq!(d.health()[0].circuit, CircuitState::HalfOpen);
        flaky.down.store(false, Ordering::SeqCst);
        flaky.calls.store(0, Ordering::SeqCst);
        d
    }

    async fn until(what: &str, f: impl Fn() -> bool) {
        for _ in 0..500 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!("never: {what}");
    }

    #[tokio::test]
    async fn a_half_open_circuit_lets_one_probe_through_and_the_rest_fail_over() {
        let flaky = Gated::new("flaky", true, 0);
        let backup = Gated::new("backup", false, 1000);
        let d = half_open(vec![flaky.clone(), backup.clone()], &flaky).await;
        backup.calls.store(0, Ordering::SeqCst);
        let sends: Vec<_> = (0..16)
            .map(|_| {
                let d = d.clone();
                tokio::spawn(async move { d.send(&msg()).await })
            })
            .collect();
        until("15 sends failed over", || {
            backup.calls.load(Ordering::SeqCst) == 15
        })
        .await;
        assert_eq!(
            flaky.calls.load(Ordering::SeqCst),
            1,
            "exactly one probe in flight"
        );
        assert_eq!(d.health()[0].circuit, CircuitState::HalfOpen);
        flaky.gate.add_permits(1);
        let mut by = std::collections::HashMap::new();
        for s in sends {
            match s.await.unwrap() {
                Dispatched::Sent { provider, .. } => *by.entry(provider).or_insert(0) += 1,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!((by["flaky"], by["backup"]), (1, 15));
        assert_eq!(
            d.health()[0].circuit,
            CircuitState::Closed,
            "the probe closed it"
        );
        // Closed again: sends no longer wait for one another.
        flaky.gate.add_permits(4);
        for _ in 0..4 {
            assert!(matches!(
                d.send(&msg()).await,
                Dispatched::Sent {
                    provider: "flaky",
                    ..
                }
            ));
        }
    }

    #[tokio::test]
    async fn without_a_next_provider_the_others_stay_unavailable_until_the_probe_ends() {
        let flaky = Gated::new("flaky", true, 0);
        let d = half_open(vec![flaky.clone()], &flaky).await;
        let probe = {
            let d = d.clone();
            tokio::spawn(async move { d.send(&msg()).await })
        };
        until("the probe started", || {
            flaky.calls.load(Ordering::SeqCst) == 1
        })
        .await;
        for _ in 0..8 {
            assert_eq!(
                d.send(&msg()).await,
                Dispatched::Unavailable {
                    detail: "flaky: circuit open".into()
                }
            );
        }
        assert_eq!(flaky.calls.load(Ordering::SeqCst), 1);
        // A probe that is abandoned (its task dropped) gives the claim back.
        probe.abort();
        let _ = probe.await;
        flaky.gate.add_permits(1);
        assert!(matches!(
            d.send(&msg()).await,
            Dispatched::Sent {
                provider: "flaky",
                ..
            }
        ));
        assert_eq!(flaky.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_failed_probe_opens_the_circuit_again() {
        let flaky = Gated::new("flaky", true, 0);
        let d = half_open(vec![flaky.clone()], &flaky).await;
        flaky.down.store(true, Ordering::SeqCst);
        assert!(matches!(
            d.send(&msg()).await,
            Dispatched::Unavailable { .. }
        ));
        assert_eq!(d.health()[0].circuit, CircuitState::Open);
        assert_eq!(flaky.calls.load(Ordering::SeqCst), 1);
    }
}
