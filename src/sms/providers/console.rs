//! Development provider: prints the message to the log (showing it is its whole job, so it is
//! refused unless `--simulate` or `sms.allow_console`). Under `--simulate` it also keeps what
//! it "sent" in an inbox of simulated phones (`GET /v1/sim/sms?number=`).

use std::sync::Mutex;

use futures::future::BoxFuture;
use serde::Serialize;

use super::{OutgoingSms, ProviderError, SendReceipt, SmsProvider};
use crate::base::sync::lock;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SimMessage {
    pub to: String,
    pub text: String,
    /// The six digits found in the text, for tests and demos.
    pub code: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub sent_at: time::OffsetDateTime,
}

#[derive(Default)]
pub struct SimInbox {
    messages: Mutex<Vec<SimMessage>>,
}

impl SimInbox {
    /// Newest first.
    pub fn for_number(&self, e164: &str) -> Vec<SimMessage> {
        let all = lock(&self.messages);
        all.iter().rev().filter(|m| m.to == e164).cloned().collect()
    }
    fn push(&self, m: SimMessage) {
        lock(&self.messages).push(m);
    }
}

pub struct ConsoleProvider {
    inbox: Option<std::sync::Arc<SimInbox>>,
}

impl ConsoleProvider {
    pub fn new(inbox: Option<std::sync::Arc<SimInbox>>) -> Self {
        ConsoleProvider { inbox }
    }
}

impl SmsProvider for ConsoleProvider {
    fn name(&self) -> &'static str {
        "console"
    }

    fn send<'a>(
        &'a self,
        msg: &'a OutgoingSms,
    ) -> BoxFuture<'a, Result<SendReceipt, ProviderError>> {
        Box::pin(async move {
            tracing::info!(target: "keygate::sms::console", to = %msg.to, text = %msg.text, "SMS (console provider, development only)");
            if let Some(inbox) = &self.inbox {
                let code = msg
                    .text
                    .split(|c: char| !c.is_ascii_digit())
                    .find(|w| w.len() == 6)
                    .map(str::to_string);
                inbox.push(SimMessage {
                    to: msg.to.clone(),
                    text: msg.text.clone(),
                    code,
                    sent_at: time::OffsetDateTime::now_utc(),
                });
            }
            Ok(SendReceipt {
                provider_message_id: Some(msg.id.clone()),
            })
        })
    }
}
