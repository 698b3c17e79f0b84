//! The per-number policy cache: every stored number is checked again under the current
//! policy (the allow-list may have changed since it was registered) and masked for clients and
//! logs, once, so that the hot path does not run libphonenumber again.

use super::error::SmsError;
use super::phone;
use super::SmsService;
use crate::base::sync::lock;

#[derive(Clone)]
pub(super) struct NumberFacts {
    parsed: Result<phone::ParsedPhone, SmsError>,
    masked: String,
}

/// Contract: the regions were checked with [`phone::unknown_region`] (in [`SmsService::new`]).
pub(super) fn load_numbering(sms: &crate::config::SmsConfig) -> phone::Numbering {
    phone::Numbering::new(&sms.default_region, &sms.allowed_countries)
        .expect("regions checked in SmsService::new")
}

impl SmsService {
    /// A stored number checked again under the current policy (the allow-list may have changed
    /// since it was registered).
    pub(super) fn stored_number(&self, e164: &str) -> Result<phone::ParsedPhone, SmsError> {
        self.number_facts(e164).parsed
    }

    /// A number as clients and logs may see it.
    pub(super) fn masked(&self, e164: &str) -> String {
        self.number_facts(e164).masked
    }

    fn number_facts(&self, e164: &str) -> NumberFacts {
        const KEEP_AT_MOST: usize = 100_000;
        let mut numbers = lock(&self.numbers);
        if let Some(f) = numbers.get(e164) {
            return f.clone();
        }
        let facts = NumberFacts {
            parsed: self.parse_number(e164),
            masked: self.numbering().mask(e164),
        };
        if numbers.len() >= KEEP_AT_MOST {
            numbers.clear();
        }
        numbers.insert(e164.to_string(), facts.clone());
        facts
    }

    /// Parse and check a number as typed (national, international, "00..." forms).
    pub fn parse_number(&self, number: &str) -> Result<phone::ParsedPhone, SmsError> {
        self.numbering().parse(number)
    }

    fn numbering(&self) -> &phone::Numbering {
        self.numbering.get_or_init(|| load_numbering(&self.cfg.sms))
    }
}
