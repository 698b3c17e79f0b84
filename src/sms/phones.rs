//! A user's phones as an SMS method: add (registered unverified, together with its
//! verification challenge, atomically), list and delete.

use std::sync::Arc;

use serde::Serialize;

use super::challenge::ChallengeView;
use super::error::SmsError;
use super::template::Locale;
use super::{validate_user, SmsService};
use crate::metrics::SmsOutcome;
use crate::store::{NewAudit, PhoneRecord};

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct PhoneView {
    pub id: String,
    pub masked_number: String,
    #[serde(flatten)]
    pub record: PhoneRecord,
}

impl SmsService {
    /// Register a phone (unverified) and send it a verification code. Atomic: when the code
    /// cannot be sent (locked user, budgets, no provider) no phone is registered either.
    pub async fn add_phone(
        self: &Arc<Self>,
        user: &str,
        number: &str,
        label: Option<&str>,
        locale: Locale,
        actor: &str,
    ) -> Result<(PhoneView, ChallengeView), SmsError> {
        validate_user(user)?;
        if let Some(l) = label {
            if l.chars().count() > 64 || l.chars().any(char::is_control) {
                return Err(SmsError::Invalid(
                    "`label` must be at most 64 printable characters".into(),
                ));
            }
        }
        let parsed = self.parse_number(number)?;
        let svc = self.clone();
        let (user, label, actor) = (
            user.to_string(),
            label.map(str::to_string),
            actor.to_string(),
        );
        let out = self
            .store
            .atomic(move |tx| {
                let mut p = svc.prepare(
                    tx,
                    &user,
                    None,
                    &parsed,
                    "verify_phone",
                    locale,
                    None,
                    &actor,
                )?;
                let phone_audit = NewAudit::new("phone.added", &actor)
                    .user(&user)
                    .detail(serde_json::json!({ "to": svc.masked(&parsed.e164) }));
                let phone = tx.sms_add_phone_with_challenge(
                    &parsed.e164,
                    label.as_deref(),
                    &phone_audit,
                    &p.ch,
                    &p.outbox,
                    &p.send,
                    &p.audit,
                )?;
                p.ch.phone_id = Some(phone.id.clone());
                let ch = svc.started(&p);
                Ok::<_, SmsError>((svc.phone_view(phone), ch, p.queued()))
            })
            .await;
        let created = out.as_ref().map(|(_, ch, _)| ch);
        self.count_event(None, "verify_phone", created, SmsOutcome::Created);
        let (phone, ch, queued) = out?;
        self.send_new(queued);
        Ok((phone, ch))
    }

    fn phone_view(&self, p: PhoneRecord) -> PhoneView {
        PhoneView {
            id: p.id.clone(),
            masked_number: self.masked(&p.e164),
            record: p,
        }
    }

    pub fn list_phones(&self, user: &str) -> Result<Vec<PhoneView>, SmsError> {
        validate_user(user)?;
        Ok(self
            .store
            .list_phones(user)?
            .into_iter()
            .map(|p| self.phone_view(p))
            .collect())
    }

    pub async fn delete_phone(
        self: &Arc<Self>,
        user: &str,
        id: &str,
        actor: &str,
    ) -> Result<(), SmsError> {
        let (svc, user, id, actor) = (
            self.clone(),
            user.to_string(),
            id.to_string(),
            actor.to_string(),
        );
        self.store
            .atomic(move |tx| {
                let p = tx
                    .get_phone(&id)?
                    .filter(|p| p.user == user)
                    .ok_or(SmsError::NotFound)?;
                let audit = NewAudit::new("phone.removed", &actor)
                    .user(&user)
                    .detail(serde_json::json!({ "phone": id, "to": svc.masked(&p.e164) }));
                tx.delete_phone(&user, &id, &audit)?;
                Ok(())
            })
            .await
    }
}
