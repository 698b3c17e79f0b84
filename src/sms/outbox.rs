//! The durable outbox: a worker sends what is due through the failover chain (at most once
//! more after a crash), drops messages whose challenge ended, sweeps the encrypted codes of
//! ended challenges, and records the providers' delivery reports.

use std::sync::Arc;
use std::time::Duration;

use super::dispatch::Dispatched;
use super::error::SmsError;
use super::providers::{DeliveryStatus, OutgoingSms};
use super::template::{self, Locale};
use super::SmsService;
use crate::metrics::MessageStatus;
use crate::store::{NewOutbox, OutboxRecord, SmsChallengeRecord};

/// Messages this daemon sends at once right after their commit (besides the worker's).
const DIRECT_SENDS: usize = 16;

/// A message stored with its challenge by a unit that committed, in hand for sending.
pub(super) struct Queued {
    pub(super) ob: OutboxRecord,
    pub(super) ch: SmsChallengeRecord,
    /// Claimed by this daemon at insert ([`NewOutbox::claimed`]): no worker sends it before
    /// its lease ends.
    pub(super) claimed: bool,
}

/// How often (real time) the outbox worker wipes the encrypted codes of ended challenges.
const CODE_SWEEP_EVERY: Duration = Duration::from_secs(1);

impl SmsService {
    /// A provider's delivery report, authenticated by [`super::providers::receipt`]. `false`:
    /// no message of that provider has that id.
    pub async fn delivery_report(
        &self,
        provider: &str,
        message_id: &str,
        status: DeliveryStatus,
    ) -> Result<bool, SmsError> {
        let (provider_name, message_id) = (provider.to_string(), message_id.to_string());
        let found = self
            .store
            .atomic(move |tx| tx.sms_delivery_report(&provider_name, &message_id, status.as_str()))
            .await?;
        let counted = match status {
            // The provider's own "sent" repeats what its accepted send already counted.
            DeliveryStatus::Sent => None,
            DeliveryStatus::Delivered => Some(MessageStatus::Delivered),
            DeliveryStatus::Undeliverable => Some(MessageStatus::Undeliverable),
            DeliveryStatus::Failed => Some(MessageStatus::DeliveryFailed),
        };
        if let (true, Some(counted), Some(provider)) =
            (found, counted, self.dispatcher.provider_name(provider))
        {
            self.metrics.sms_message(provider, counted);
        }
        Ok(found)
    }

    /// Wipe the encrypted code of every challenge that has ended (expired, verified, failed,
    /// cancelled), touched or not. The worker runs it every [`CODE_SWEEP_EVERY`]; public for
    /// tests.
    pub async fn sweep_codes(&self) -> Result<usize, SmsError> {
        let now = self.now();
        let wiped = self
            .store
            .atomic(move |tx| tx.sms_wipe_ended_codes(now))
            .await?;
        if wiped > 0 {
            tracing::debug!(wiped, "encrypted codes of ended SMS challenges wiped");
        }
        Ok(wiped)
    }

    /// Run the outbox worker until the process ends: send what is due, and sweep the codes of
    /// ended challenges.
    pub fn spawn_worker(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        self.direct_sends
            .get_or_init(|| Arc::new(tokio::sync::Semaphore::new(DIRECT_SENDS)));
        let svc = self.clone();
        tokio::spawn(async move {
            let mut last_sweep: Option<std::time::Instant> = None;
            loop {
                // While the store's disk is full nothing is sent: a message whose send could
                // not be recorded would go out again on every round.
                if svc.store.storage_full() {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
                if let Err(e) = svc.drain_outbox().await {
                    tracing::error!(error = %e, "SMS outbox worker");
                }
                if last_sweep.is_none_or(|t| t.elapsed() >= CODE_SWEEP_EVERY) {
                    if let Err(e) = svc.sweep_codes().await {
                        tracing::error!(error = %e, "SMS code sweep");
                    }
                    last_sweep = Some(std::time::Instant::now());
                }
                tokio::select! {
                    _ = svc.wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        })
    }

    /// The outbox row for a message stored at `now`: claimed by this daemon for the outbox
    /// lease when it sends new messages itself (its worker runs), else due at once.
    pub(super) fn new_outbox(&self, now: i64) -> NewOutbox {
        NewOutbox {
            id: Self::new_id(),
            claimed: self.direct_sends.get().map(|_| {
                let lease_until = now + 1000 * self.cfg.sms.outbox_lease_secs as i64;
                (self.store.node().to_string(), lease_until)
            }),
        }
    }

    /// A new message's unit committed: send it now when this daemon claimed it, with the
    /// challenge in hand (no claim, no read, no wait for the worker's round), else wake the
    /// worker. The claim holds until the lease ends: a daemon that stops before the send
    /// leaves the message to the workers (its own after a restart, which releases its claims).
    /// A challenge cancelled in the moment between the commit and the send still gets its
    /// message, as one cancelled during a worker's send does.
    pub(super) fn send_new(self: &Arc<Self>, q: Queued) {
        let Some(permits) = self.direct_sends.get().filter(|_| q.claimed).cloned() else {
            self.wake.notify_one();
            return;
        };
        let svc = self.clone();
        tokio::spawn(async move {
            let Ok(_permit) = permits.acquire_owned().await else {
                return;
            };
            // Waited out the claim (sends stuck on a slow provider): the workers have it now.
            if svc.now() >= q.ob.next_attempt_at {
                return;
            }
            if let Err(e) = svc.send_with(q.ob, q.ch).await {
                tracing::error!(error = %e, "SMS outbox: a new message's send");
            }
        });
    }

    /// Send every due outbox message once. Public for tests.
    pub async fn drain_outbox(&self) -> Result<usize, SmsError> {
        use futures::StreamExt;
        let now = self.now();
        let due = if self.store.is_shared() {
            let lease_until = now + 1000 * self.cfg.sms.outbox_lease_secs as i64;
            let node = self.store.node().to_string();
            self.store
                .atomic(move |tx| tx.sms_outbox_claim(&node, now, lease_until, 64))
                .await?
        } else {
            // One daemon on its own file: what it reads, nobody else sends.
            self.store.sms_outbox_due(now, 64)?
        };
        let n = due.len();
        // Up to 16 messages in flight: providers are remote; SQLite stays serialised.
        let results: Vec<Result<(), SmsError>> = futures::stream::iter(due)
            .map(|ob| self.send_one(ob))
            .buffer_unordered(16)
            .collect()
            .await;
        results.into_iter().collect::<Result<(), _>>()?;
        Ok(n)
    }

    /// Store an outbox row's new state (and its challenge's delivery status) as one unit.
    async fn save_outbox(
        &self,
        ob: OutboxRecord,
        delivery: Option<&'static str>,
    ) -> Result<(), SmsError> {
        Ok(self
            .store
            .atomic(move |tx| tx.sms_outbox_update(&ob, delivery))
            .await?)
    }

    async fn send_one(&self, ob: OutboxRecord) -> Result<(), SmsError> {
        let ch = self
            .store
            .sms_challenge(&ob.challenge_id)?
            .ok_or(SmsError::NotFound)?;
        self.send_with(ob, ch).await
    }

    /// Send message `ob` of challenge `ch` (as read or as just stored) and record the outcome.
    async fn send_with(
        &self,
        mut ob: OutboxRecord,
        ch: SmsChallengeRecord,
    ) -> Result<(), SmsError> {
        let now = self.now();
        let code = ch
            .code_enc
            .as_deref()
            .and_then(|b| self.keys.decrypt(&ch.id, b));
        let Some(code) = code.filter(|_| ch.state == "pending" && now < ch.expires_at) else {
            // The challenge ended before its message went out: nothing to send any more, and
            // no reason to keep its code.
            ob.state = "dropped".into();
            self.store
                .atomic(move |tx| tx.sms_outbox_drop(&ob, now))
                .await?;
            return Ok(());
        };
        // No "sending" write before the call: a crash mid-send leaves the row pending and the
        // message goes out once more after the restart (the at-most-once-more contract).
        ob.attempts += 1;
        let locale = Locale::parse(&ch.locale).unwrap_or_default();
        let minutes = self.cfg.sms.code_ttl_secs.div_ceil(60);
        let msg = OutgoingSms {
            id: ob.id.clone(),
            to: ch.e164.clone(),
            text: template::render(
                locale,
                &code,
                minutes,
                self.cfg.sms.webotp_domain.as_deref(),
            ),
        };
        let masked = self.masked(&ch.e164);
        match self.dispatcher.send(&msg).await {
            Dispatched::Sent { provider, receipt } => {
                tracing::info!(message = %ob.id, challenge = %ch.id, to = %masked, provider, "SMS sent");
                ob.state = "sent".into();
                ob.provider = Some(provider.to_string());
                ob.provider_message_id = receipt.provider_message_id;
                ob.sent_at = Some(self.now());
                ob.last_error = None;
                self.save_outbox(ob, Some("sent")).await?;
            }
            Dispatched::Rejected { provider, detail } => {
                tracing::warn!(message = %ob.id, to = %masked, provider, %detail, "SMS rejected by the provider");
                ob.state = "failed".into();
                ob.provider = Some(provider.to_string());
                ob.last_error = Some(detail);
                self.save_outbox(ob, Some("undeliverable")).await?;
            }
            Dispatched::Unavailable { detail } => {
                let next = self.now() + 1000 * (1i64 << ob.attempts.min(6));
                if next >= ch.expires_at || ob.attempts >= 8 {
                    tracing::warn!(message = %ob.id, to = %masked, %detail, "SMS could not be sent");
                    ob.state = "failed".into();
                    ob.last_error = Some(detail);
                    self.save_outbox(ob, Some("failed")).await?;
                } else {
                    ob.state = "pending".into();
                    ob.next_attempt_at = next;
                    ob.last_error = Some(detail);
                    self.save_outbox(ob, None).await?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::clock::ManualClock;
    use crate::store::Store;

    const START: i64 = 1_790_000_000_000;

    /// A service on an in-memory store with the console provider and no worker running: the
    /// tests drive the outbox and the sweep themselves.
    fn service(dir: &std::path::Path) -> (Arc<SmsService>, Store, Arc<ManualClock>) {
        let cfg = crate::config::parse_config(
            None,
            &[],
            &crate::config::Overrides {
                data_dir: Some(dir.to_path_buf()),
                simulate: Some(true),
                listen: None,
            },
        )
        .unwrap();
        let store = Store::open_in_memory().unwrap();
        let clock = Arc::new(ManualClock::new(START));
        let svc = SmsService::new(cfg, store.clone(), clock.clone()).unwrap();
        (svc, store, clock)
    }

    async fn challenge(svc: &Arc<SmsService>, user: &str, number: &str) -> String {
        svc.add_phone(user, number, None, Locale::default(), "test")
            .await
            .unwrap()
            .1
            .id
    }

    #[tokio::test]
    async fn a_message_dropped_because_its_challenge_expired_wipes_the_code() {
        let dir = tempfile::tempdir().unwrap();
        let (svc, store, clock) = service(dir.path());
        let id = challenge(&svc, "r1", "0475 00 00 01").await;
        let queued = store.sms_outbox_due(i64::MAX, 10).unwrap();
        assert_eq!(queued.len(), 1);
        clock.advance(Duration::from_secs(300));
        assert_eq!(svc.drain_outbox().await.unwrap(), 1);
        let ob = store.sms_outbox(&queued[0].id).unwrap().unwrap();
        assert_eq!(ob.state, "dropped");
        assert_eq!(store.sms_challenge(&id).unwrap().unwrap().code_enc, None);
        assert!(svc
            .inbox
            .as_ref()
            .unwrap()
            .for_number("+32475000001")
            .is_empty());
    }

    #[tokio::test]
    async fn the_sweep_wipes_codes_of_expired_challenges_only() {
        let dir = tempfile::tempdir().unwrap();
        let (svc, store, clock) = service(dir.path());
        let expiring = challenge(&svc, "r1", "0475 00 00 01").await;
        svc.drain_outbox().await.unwrap();
        clock.advance(Duration::from_secs(100));
        let live = challenge(&svc, "r3", "0475 00 00 03").await;
        let code_of = |id: &str| store.sms_challenge(id).unwrap().unwrap().code_enc;
        assert!(code_of(&expiring).is_some());
        assert_eq!(
            svc.sweep_codes().await.unwrap(),
            0,
            "nothing has expired yet"
        );
        clock.advance(Duration::from_secs(200));
        assert_eq!(svc.sweep_codes().await.unwrap(), 1);
        assert_eq!(code_of(&expiring), None, "expired, never touched since");
        assert!(code_of(&live).is_some(), "a live challenge keeps its code");
        clock.advance(Duration::from_secs(100));
        assert_eq!(svc.sweep_codes().await.unwrap(), 1);
        assert_eq!(code_of(&live), None);
    }
}
