//! The adapter's HTTP transport: one reqwest client (rustls, no redirects: a bearer token
//! never follows one), each attempt bounded by `[entra] request_timeout_ms`, retries with
//! exponential backoff and jitter for idempotent calls only, `Retry-After` honoured on 429 up
//! to [`MAX_RETRY_AFTER`]. Logs method, path template, status, attempt and Graph's
//! `request-id`; never a header or body (tokens, secrets and passes travel in them).

use std::time::{Duration, SystemTime};

use rand::Rng;
use reqwest::RequestBuilder;

use super::EntraError;

/// Longest `Retry-After` the adapter waits out itself; a longer one is handed to the caller
/// as `Throttled`.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(5);
/// Upper bound of one backoff step.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Whether a call may be sent again after a transient failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Token requests, GET, DELETE.
    Idempotent,
    /// POSTs that create something: sent once.
    Never,
}

/// A call as logged: method and path template (no user names, ids or query).
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallName {
    pub method: &'static str,
    pub path: &'static str,
}

/// An HTTP answer, read whole.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: u16,
    pub body: String,
    pub retry_after: Option<Duration>,
    pub request_id: Option<String>,
}

impl Answer {
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after
            .map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0))
    }
}

pub(crate) struct Http {
    client: reqwest::Client,
    max_retries: u32,
    retry_base: Duration,
    /// Where each attempt is counted (`keygate_entra_requests_total`), once the daemon set it.
    pub(crate) metrics: std::sync::OnceLock<crate::metrics::Metrics>,
}

/// `Retry-After` as delay-seconds or an HTTP-date (RFC 9110).
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

impl Http {
    pub fn new(timeout: Duration, max_retries: u32, retry_base: Duration) -> Result<Http, String> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("keygate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("building the Entra HTTP client: {e}"))?;
        Ok(Http {
            client,
            max_retries,
            retry_base,
            metrics: std::sync::OnceLock::new(),
        })
    }

    /// Step `attempt` (0-based) of the backoff: base * 2^attempt plus up to as much jitter.
    fn backoff(&self, attempt: u32) -> Duration {
        let step = self
            .retry_base
            .saturating_mul(1u32 << attempt.min(16))
            .min(MAX_BACKOFF);
        let jitter_ms = rand::thread_rng().gen_range(0..=step.as_millis() as u64);
        step + Duration::from_millis(jitter_ms)
    }

    /// Send the request `build` makes (built anew per attempt). Transport failures and 5xx are
    /// retried for [`Retry::Idempotent`] calls, 429 too when its `Retry-After` is short; what is
    /// left is returned for the caller to map (a transport failure as `Unavailable`).
    pub async fn send(
        &self,
        name: CallName,
        retry: Retry,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<Answer, EntraError> {
        let attempts = match retry {
            Retry::Idempotent => self.max_retries + 1,
            Retry::Never => 1,
        };
        let mut attempt = 0;
        loop {
            let last = attempt + 1 >= attempts;
            match self.attempt(name, attempt, build(&self.client)).await {
                Ok(answer) => {
                    let wait = match answer.status {
                        500..=599 => Some(self.backoff(attempt)),
                        429 => match answer.retry_after {
                            Some(d) if d > MAX_RETRY_AFTER => None,
                            Some(d) => Some(d),
                            None => Some(self.backoff(attempt)),
                        },
                        _ => None,
                    };
                    match wait {
                        Some(d) if !last => tokio::time::sleep(d).await,
                        _ => return Ok(answer),
                    }
                }
                Err(detail) if last => return Err(EntraError::Unavailable(detail)),
                Err(_) => tokio::time::sleep(self.backoff(attempt)).await,
            }
            attempt += 1;
        }
    }

    async fn attempt(
        &self,
        name: CallName,
        attempt: u32,
        req: RequestBuilder,
    ) -> Result<Answer, String> {
        let sent = req.send().await;
        if let Some(m) = self.metrics.get() {
            let status = sent.as_ref().ok().map(|r| r.status().as_u16());
            m.entra_request(name.method, name.path, status);
        }
        let resp = match sent {
            Ok(r) => r,
            Err(e) => {
                let kind = if e.is_timeout() {
                    "timed out"
                } else if e.is_connect() {
                    "connection failed"
                } else {
                    "request failed"
                };
                tracing::warn!(
                    target: "keygate::entra",
                    method = name.method,
                    path = name.path,
                    attempt,
                    "Entra call {kind}"
                );
                return Err(format!("{} {}: {kind}", name.method, name.path));
            }
        };
        let status = resp.status().as_u16();
        let header = |h: &str| {
            resp.headers()
                .get(h)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let request_id = header("request-id").or_else(|| header("x-ms-request-id"));
        let retry_after = header("retry-after").and_then(|v| parse_retry_after(&v));
        tracing::info!(
            target: "keygate::entra",
            method = name.method,
            path = name.path,
            status,
            attempt,
            request_id = request_id.as_deref().unwrap_or("-"),
            "Entra call"
        );
        let body = match resp.text().await {
            Ok(b) => b,
            Err(e) => {
                let kind = if e.is_timeout() {
                    "timed out"
                } else {
                    "body unreadable"
                };
                return Err(format!("{} {}: {kind}", name.method, name.path));
            }
        };
        Ok(Answer {
            status,
            body,
            retry_after,
            request_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn backoff_grows_and_is_bounded() {
        let h = Http::new(Duration::from_secs(1), 3, Duration::from_millis(100)).unwrap();
        for attempt in 0..20 {
            let d = h.backoff(attempt);
            let step = Duration::from_millis(100)
                .saturating_mul(1 << attempt.min(16))
                .min(MAX_BACKOFF);
            assert!(d >= step && d <= step * 2, "{attempt}: {d:?}");
        }
    }
}
