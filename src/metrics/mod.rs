//! Prometheus metrics: one [`Registry`] per daemon, owned by the application state through
//! [`Metrics`], the handles every layer counts with, and the text `GET /metrics` answers
//! ([`format`]). The `prometheus-client` crate writes the exposition; nothing here formats it.
//!
//! Contract on labels: every label value comes from a closed set, so the number of series is
//! bounded whatever clients send: kinds, targets, states and purposes are keygate's own
//! words; error codes are [`ErrorCode`]s; providers are the configured chain's names; routes
//! are the router's templates (`/v1/enrollments/{id}`, or `unmatched`), never a raw path; HTTP
//! methods outside the standard ones are `other`. No user name, id or number is ever a label.
//!
//! The families (the README's "Metrics" section says what each one counts):
//! - `keygate_ceremonies_total{kind,target,outcome}`, `keygate_ceremony_duration_seconds
//!   {kind,target,state}`, `keygate_ceremony_key_seconds{kind}`;
//! - `keygate_sms_challenges_total{purpose,outcome}`, `keygate_sms_messages_total
//!   {provider,status}`, `keygate_sms_provider_circuit_open{provider}`,
//!   `keygate_sms_outbox_pending`, `keygate_lockouts_active`;
//! - `keygate_http_request_duration_seconds{method,route,status}`;
//! - `keygate_entra_requests_total{method,call,status}`;
//! - `keygate_devices_plugged`, `keygate_build_info{version}`.
//!
//! Durations are in seconds, named so (`_seconds`); the families carry no separate OpenMetrics
//! `# UNIT` line, which some parsers refuse on histograms.
//!
//! Gauges that describe the store or the keys (outbox, lockouts, plugged keys, circuits) are
//! set when `/metrics` is scraped (`http::metrics`), so they are as fresh as the scrape.

pub mod format;
mod labels;

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::base::error::ErrorCode;
use labels::{
    BuildLabels, CeremonyDurationLabels, CeremonyLabels, EntraLabels, HttpLabels, KindLabel,
    ProviderLabel, SmsChallengeLabels, SmsMessageLabels,
};

pub use format::Format;

/// Upper bounds of `keygate_http_request_duration_seconds`: a token check is milliseconds; a
/// long-poll (`?wait=`) holds its answer up to 120 s.
const HTTP_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];
/// Upper bounds of `keygate_ceremony_duration_seconds`: a ceremony waits for a person (touch,
/// PIN), up to the configured maximum time-out.
const CEREMONY_BUCKETS: [f64; 14] = [
    0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0,
];
/// Upper bounds of `keygate_ceremony_key_seconds`: a simulated key answers in milliseconds, a
/// USB key's signature takes tens to hundreds of them, a touch seconds.
const KEY_BUCKETS: [f64; 14] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0,
];

fn http_histogram() -> Histogram {
    Histogram::new(HTTP_BUCKETS)
}
fn ceremony_histogram() -> Histogram {
    Histogram::new(CEREMONY_BUCKETS)
}
fn key_histogram() -> Histogram {
    Histogram::new(KEY_BUCKETS)
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The daemon's metrics. Cheap to clone: every clone counts into the same registry.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    ceremonies: Family<CeremonyLabels, Counter>,
    ceremony_duration: HistogramFamily<CeremonyDurationLabels>,
    ceremony_key: HistogramFamily<KindLabel>,
    sms_challenges: Family<SmsChallengeLabels, Counter>,
    sms_messages: Family<SmsMessageLabels, Counter>,
    sms_circuit_open: Family<ProviderLabel, Gauge>,
    sms_outbox_pending: Gauge,
    lockouts_active: Gauge,
    http_duration: HistogramFamily<HttpLabels>,
    entra_requests: Family<EntraLabels, Counter>,
    devices_plugged: Gauge,
}

impl Default for Metrics {
    /// A registry of its own (unit tests, and services built without the daemon's).
    fn default() -> Self {
        Metrics::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("keygate");
        let ceremonies = Family::default();
        registry.register(
            "ceremonies",
            "Ended ceremonies by kind, target and outcome (succeeded, or the error code)",
            ceremonies.clone(),
        );
        let ceremony_duration =
            HistogramFamily::new_with_constructor(ceremony_histogram as fn() -> Histogram);
        registry.register(
            "ceremony_duration_seconds",
            "Time from a ceremony's start to its end, by kind, target and final state",
            ceremony_duration.clone(),
        );
        let ceremony_key =
            HistogramFamily::new_with_constructor(key_histogram as fn() -> Histogram);
        registry.register(
            "ceremony_key_seconds",
            "Time a ceremony spent in the key's MakeCredential or GetAssertion, touch included",
            ceremony_key.clone(),
        );
        let sms_challenges = Family::default();
        registry.register(
            "sms_challenges",
            "SMS challenge events by purpose: created, resent, verified, cancelled, or the \
             error code a create, verify or resend answered",
            sms_challenges.clone(),
        );
        let sms_messages = Family::default();
        registry.register(
            "sms_messages",
            "SMS send attempts per provider (sent, rejected, failed) and delivery reports \
             (delivered, undeliverable, delivery_failed)",
            sms_messages.clone(),
        );
        let sms_circuit_open = Family::default();
        registry.register(
            "sms_provider_circuit_open",
            "1 while a provider's circuit breaker is not closed (open, or half-open awaiting \
             its trial send)",
            sms_circuit_open.clone(),
        );
        let sms_outbox_pending = Gauge::default();
        registry.register(
            "sms_outbox_pending",
            "SMS messages queued in the outbox, not yet sent",
            sms_outbox_pending.clone(),
        );
        let lockouts_active = Gauge::default();
        registry.register(
            "lockouts_active",
            "Users locked out of SMS codes now (too many wrong codes)",
            lockouts_active.clone(),
        );
        let http_duration =
            HistogramFamily::new_with_constructor(http_histogram as fn() -> Histogram);
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request (to the response head), by method, route template \
             and status",
            http_duration.clone(),
        );
        let entra_requests = Family::default();
        registry.register(
            "entra_requests",
            "Calls to Microsoft Entra ID (token endpoint and Graph), per attempt, by method, \
             path template and HTTP status (`error`: no answer)",
            entra_requests.clone(),
        );
        let devices_plugged = Gauge::default();
        registry.register(
            "devices_plugged",
            "Security keys plugged in (simulated ones under --simulate)",
            devices_plugged.clone(),
        );
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("build_info", "keygate's version, always 1", build_info);
        Metrics {
            inner: Arc::new(Inner {
                registry,
                ceremonies,
                ceremony_duration,
                ceremony_key,
                sms_challenges,
                sms_messages,
                sms_circuit_open,
                sms_outbox_pending,
                lockouts_active,
                http_duration,
                entra_requests,
                devices_plugged,
            }),
        }
    }

    /// The exposition of every family, in `format`. Fails only if writing a label value
    /// fails (keygate's are strings and integers).
    pub fn encode(&self, format: Format) -> Result<String, std::fmt::Error> {
        format.encode(&self.inner.registry)
    }

    /// A ceremony ended. `outcome` is `succeeded` or its error code (`cancelled` for a cancel);
    /// `state` its final state; `in_key` the time its key operations took (zero: it never
    /// reached the key, and the key histogram is left alone).
    pub fn ceremony_ended(&self, end: CeremonyEnd) {
        let i = &self.inner;
        i.ceremonies
            .get_or_create(&CeremonyLabels {
                kind: end.kind,
                target: end.target,
                outcome: end.outcome,
            })
            .inc();
        i.ceremony_duration
            .get_or_create(&CeremonyDurationLabels {
                kind: end.kind,
                target: end.target,
                state: end.state,
            })
            .observe(end.elapsed.as_secs_f64());
        if !end.in_key.is_zero() {
            i.ceremony_key
                .get_or_create(&KindLabel { kind: end.kind })
                .observe(end.in_key.as_secs_f64());
        }
    }

    /// An SMS challenge event; `purpose` outside keygate's two is counted as `other`.
    pub fn sms_challenge(&self, purpose: &str, outcome: SmsOutcome) {
        let purpose = match purpose {
            "sign_in" => "sign_in",
            "verify_phone" => "verify_phone",
            _ => "other",
        };
        let outcome = match outcome {
            SmsOutcome::Created => "created",
            SmsOutcome::Resent => "resent",
            SmsOutcome::Verified => "verified",
            SmsOutcome::Cancelled => "cancelled",
            SmsOutcome::Refused(code) => code.as_str(),
        };
        self.inner
            .sms_challenges
            .get_or_create(&SmsChallengeLabels { purpose, outcome })
            .inc();
    }

    /// One send attempt through `provider`, or one of its delivery reports.
    pub fn sms_message(&self, provider: &'static str, status: MessageStatus) {
        self.inner
            .sms_messages
            .get_or_create(&SmsMessageLabels {
                provider,
                status: status.as_str(),
            })
            .inc();
    }

    pub fn set_sms_circuit_open(&self, provider: &'static str, open: bool) {
        self.inner
            .sms_circuit_open
            .get_or_create(&ProviderLabel { provider })
            .set(i64::from(open));
    }

    pub fn set_sms_outbox_pending(&self, n: u64) {
        self.inner.sms_outbox_pending.set(saturating_i64(n));
    }

    pub fn set_lockouts_active(&self, n: u64) {
        self.inner.lockouts_active.set(saturating_i64(n));
    }

    pub fn set_devices_plugged(&self, n: usize) {
        self.inner.devices_plugged.set(saturating_i64(n as u64));
    }

    /// An answered HTTP request. `route` is the matched route's template (None: no route
    /// matched).
    pub fn http_request(&self, method: &str, route: Option<&str>, status: u16, took: Duration) {
        let labels = HttpLabels {
            method: labels::method(method),
            route: route.unwrap_or("unmatched").to_string(),
            status,
        };
        self.inner
            .http_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// One attempt of a call to Microsoft Entra ID: its status, or None when no answer came.
    pub fn entra_request(&self, method: &'static str, call: &'static str, status: Option<u16>) {
        self.inner
            .entra_requests
            .get_or_create(&EntraLabels {
                method,
                call,
                status: status.map_or_else(|| "error".to_string(), |s| s.to_string()),
            })
            .inc();
    }
}

fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// What [`Metrics::ceremony_ended`] records of one ceremony.
#[derive(Debug, Clone, Copy)]
pub struct CeremonyEnd {
    /// `enrollment` or `assertion`.
    pub kind: &'static str,
    /// `local` or `entra`.
    pub target: &'static str,
    /// `succeeded`, or the error code it ended with.
    pub outcome: &'static str,
    /// `succeeded`, `failed` or `cancelled`.
    pub state: &'static str,
    pub elapsed: Duration,
    pub in_key: Duration,
}

/// An event of an SMS challenge (`keygate_sms_challenges_total{outcome}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmsOutcome {
    Created,
    Resent,
    Verified,
    Cancelled,
    /// A create, verify or resend answered this error (`wrong_code`, `user_locked`, ...).
    Refused(ErrorCode),
}

/// `keygate_sms_messages_total{status}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageStatus {
    /// The provider accepted the message.
    Sent,
    /// The provider refused it (final, no failover).
    Rejected,
    /// One attempt failed transiently (retried, or failed over to the next provider).
    Failed,
    /// Delivery reports.
    Delivered,
    Undeliverable,
    DeliveryFailed,
}

impl MessageStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Sent => "sent",
            MessageStatus::Rejected => "rejected",
            MessageStatus::Failed => "failed",
            MessageStatus::Delivered => "delivered",
            MessageStatus::Undeliverable => "undeliverable",
            MessageStatus::DeliveryFailed => "delivery_failed",
        }
    }
}

/// Every family name as exposed (counters with `_total`), for dashboards' and alerts' tests.
pub const FAMILY_NAMES: &[&str] = &[
    "keygate_ceremonies_total",
    "keygate_ceremony_duration_seconds",
    "keygate_ceremony_key_seconds",
    "keygate_sms_challenges_total",
    "keygate_sms_messages_total",
    "keygate_sms_provider_circuit_open",
    "keygate_sms_outbox_pending",
    "keygate_lockouts_active",
    "keygate_http_request_duration_seconds",
    "keygate_entra_requests_total",
    "keygate_devices_plugged",
    "keygate_build_info",
];

#[cfg(test)]
mod tests;
