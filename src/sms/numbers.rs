//! The per-number policy cache: every stored number is checked again under the current
//! policy (the allow-list may have changed since it was registered) and masked for clients and
//! logs, once, so that the hot path does not run libphonenumber again.

use std::collections::HashMap;

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

/// How long a number's facts stay cached after their last use: the longest budget window.
const KEEP_FOR_MS: i64 = super::challenge::HOUR_MS;

/// A bound on the cache whatever the traffic: past it, it starts again empty.
const KEEP_AT_MOST: usize = 100_000;

/// The per-number facts, each with its last use (SMS clock, ms). Entries unused for
/// [`KEEP_FOR_MS`] are dropped (looked for every quarter of that), and the map gives its memory
/// back when it shrank far below its capacity, so that the numbers of a busy hour do not stay
/// resident.
#[derive(Default)]
pub(super) struct NumberCache {
    entries: HashMap<String, (NumberFacts, i64)>,
    next_trim: i64,
}

impl NumberCache {
    fn trim(&mut self, now: i64) {
        if now < self.next_trim {
            return;
        }
        self.next_trim = now + KEEP_FOR_MS / 4;
        self.entries
            .retain(|_, (_, used)| *used > now - KEEP_FOR_MS);
        if self.entries.capacity() > 64 && self.entries.len() <= self.entries.capacity() / 4 {
            self.entries.shrink_to_fit();
        }
    }

    fn get(&mut self, e164: &str, now: i64) -> Option<NumberFacts> {
        self.trim(now);
        let (facts, used) = self.entries.get_mut(e164)?;
        *used = now;
        Some(facts.clone())
    }

    fn insert(&mut self, e164: &str, facts: NumberFacts, now: i64) {
        if self.entries.len() >= KEEP_AT_MOST {
            self.entries = HashMap::new();
        }
        self.entries.insert(e164.to_string(), (facts, now));
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }
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
        let now = self.now();
        let mut numbers = lock(&self.numbers);
        if let Some(f) = numbers.get(e164, now) {
            return f;
        }
        let facts = NumberFacts {
            parsed: self.parse_number(e164),
            masked: self.numbering().mask(e164),
        };
        numbers.insert(e164, facts.clone(), now);
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::base::clock::ManualClock;

    /// Numbers unused for the window leave the cache; those used meanwhile stay.
    #[test]
    fn the_cache_keeps_the_numbers_of_its_window() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = crate::config::parse_config(
            None,
            &[],
            &crate::config::Overrides {
                data_dir: Some(dir.path().to_path_buf()),
                simulate: Some(true),
                listen: None,
            },
        )
        .unwrap();
        let store = crate::store::Store::open_in_memory().unwrap();
        let clock = Arc::new(ManualClock::new(1_790_000_000_000));
        let svc = SmsService::new(cfg, store, clock.clone()).unwrap();
        for i in 0..500 {
            svc.masked(&format!("+3247500{i:04}"));
        }
        assert_eq!(lock(&svc.numbers).len(), 500);
        clock.advance(Duration::from_secs(40 * 60));
        let kept = svc.masked("+32475000007");
        clock.advance(Duration::from_secs(30 * 60));
        assert_eq!(svc.masked("+32475000007"), kept);
        svc.masked("+32475009999");
        assert_eq!(
            lock(&svc.numbers).len(),
            2,
            "the other 499 were unused for over an hour"
        );
    }
}
