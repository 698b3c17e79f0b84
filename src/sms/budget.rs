//! The sends of the last hour, for the global and per-country hourly budgets
//! ([`SmsService::check_budgets`](super::SmsService)): one list of (time, country code) in the
//! order they were counted, with each country's times kept alongside, so that a check reads
//! a total, a country's count and the oldest send of either in O(1), and the sends that left
//! the hour are dropped in amortised O(1).
//!
//! Contract: the same answers as counting the one list: a country's list holds exactly that
//! country's entries of the main list, in the same order, and both drop an entry together.
//! Lists that shrank far below what they once held give the memory back (a burst of sends
//! must not stay resident once the hour has passed).

use std::collections::{HashMap, VecDeque};

/// A list keeps its capacity while it holds at least a quarter of it, or while it is small.
const KEEP_CAPACITY_BELOW: usize = 64;

#[derive(Debug, Default)]
pub(super) struct RecentSends {
    /// (time in ms, country code), in the order counted.
    sends: VecDeque<(i64, u16)>,
    /// Per country code: the times of its entries in `sends`, in the same order. A country
    /// with none has no entry.
    by_country: HashMap<u16, VecDeque<i64>>,
}

impl RecentSends {
    /// The sends as the store logged them, oldest first.
    pub(super) fn from_log(sends: impl IntoIterator<Item = (i64, u16)>) -> RecentSends {
        let mut recent = RecentSends::default();
        for (at, country_code) in sends {
            recent.push(at, country_code);
        }
        recent
    }

    /// Count a send.
    pub(super) fn push(&mut self, at: i64, country_code: u16) {
        self.sends.push_back((at, country_code));
        self.by_country
            .entry(country_code)
            .or_default()
            .push_back(at);
    }

    /// Drop the sends at the front of the list that were counted at or before `cutoff` (the
    /// front only, as the one list was read: entries are dropped in the order counted).
    pub(super) fn expire(&mut self, cutoff: i64) {
        let mut dropped = false;
        while let Some(&(at, country_code)) = self.sends.front() {
            if at > cutoff {
                break;
            }
            self.sends.pop_front();
            dropped = true;
            if let Some(times) = self.by_country.get_mut(&country_code) {
                times.pop_front();
                if times.is_empty() {
                    self.by_country.remove(&country_code);
                } else {
                    release_spare(times);
                }
            }
        }
        if dropped {
            release_spare(&mut self.sends);
            if self.by_country.capacity() > KEEP_CAPACITY_BELOW
                && self.by_country.len() <= self.by_country.capacity() / 4
            {
                self.by_country.shrink_to_fit();
            }
        }
    }

    /// Sends counted, in all.
    pub(super) fn total(&self) -> usize {
        self.sends.len()
    }

    /// The time of the first send still counted.
    pub(super) fn oldest(&self) -> Option<i64> {
        self.sends.front().map(|(at, _)| *at)
    }

    /// Sends counted to `country_code`.
    pub(super) fn in_country(&self, country_code: u16) -> usize {
        self.by_country.get(&country_code).map_or(0, VecDeque::len)
    }

    /// The time of the first send still counted to `country_code`.
    pub(super) fn oldest_in_country(&self, country_code: u16) -> Option<i64> {
        self.by_country
            .get(&country_code)
            .and_then(|t| t.front().copied())
    }

    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.sends.capacity()
            + self
                .by_country
                .values()
                .map(VecDeque::capacity)
                .sum::<usize>()
    }
}

/// Give back the memory of a list that holds less than a quarter of its capacity.
fn release_spare<T>(list: &mut VecDeque<T>) {
    if list.capacity() > KEEP_CAPACITY_BELOW && list.len() <= list.capacity() / 4 {
        list.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HOUR: i64 = 3_600_000;

    /// What the budgets read, counted the slow way over the one list.
    fn counted(list: &[(i64, u16)], country_code: u16) -> (usize, Option<i64>, usize, Option<i64>) {
        let mut in_country = list.iter().filter(|(_, cc)| *cc == country_code);
        (
            list.len(),
            list.first().map(|(at, _)| *at),
            in_country.clone().count(),
            in_country.next().map(|(at, _)| *at),
        )
    }

    fn read(r: &RecentSends, country_code: u16) -> (usize, Option<i64>, usize, Option<i64>) {
        (
            r.total(),
            r.oldest(),
            r.in_country(country_code),
            r.oldest_in_country(country_code),
        )
    }

    #[test]
    fn counts_follow_the_hour_as_it_slides() {
        let mut r = RecentSends::from_log([(0, 32), (10, 31), (20, 32)]);
        r.push(HOUR - 5, 32);
        r.push(HOUR + 5, 49);
        r.expire(-1);
        assert_eq!(read(&r, 32), (5, Some(0), 3, Some(0)));
        r.expire(0);
        assert_eq!(read(&r, 32), (4, Some(10), 2, Some(20)));
        assert_eq!(read(&r, 31), (4, Some(10), 1, Some(10)));
        r.expire(20);
        assert_eq!(read(&r, 32), (2, Some(HOUR - 5), 1, Some(HOUR - 5)));
        assert_eq!((r.in_country(31), r.oldest_in_country(31)), (0, None));
        r.expire(HOUR + 5);
        assert_eq!(read(&r, 49), (0, None, 0, None));
        assert!(r.by_country.is_empty(), "no country is kept without sends");
    }

    /// A burst's memory is given back once the hour has passed it.
    #[test]
    fn a_burst_releases_its_memory() {
        let mut r = RecentSends::default();
        for i in 0..100_000 {
            r.push(i, if i % 2 == 0 { 32 } else { 31 });
        }
        assert!(r.capacity() >= 100_000);
        r.push(HOUR * 2, 32);
        r.expire(HOUR * 2 - 1);
        assert_eq!(read(&r, 32), (1, Some(HOUR * 2), 1, Some(HOUR * 2)));
        assert!(r.capacity() <= 2 * KEEP_CAPACITY_BELOW, "{}", r.capacity());
    }

    proptest! {
        /// Whatever the sends and the checks, the counts are those of the one list read the
        /// old way (front-first expiry, times not necessarily in order).
        #[test]
        fn counts_are_those_of_the_one_list(
            steps in proptest::collection::vec((0i64..5_000, 0u16..4, any::<bool>()), 1..400)
        ) {
            let mut fast = RecentSends::default();
            let mut slow: VecDeque<(i64, u16)> = VecDeque::new();
            let mut now = 0i64;
            for (step, country_code, check) in steps {
                // Mostly forward, sometimes a little back (a clock is not a promise).
                now += step - 500;
                if check {
                    let cutoff = now - 2_000;
                    while slow.front().is_some_and(|(at, _)| *at <= cutoff) {
                        slow.pop_front();
                    }
                    fast.expire(cutoff);
                    let list: Vec<_> = slow.iter().copied().collect();
                    for cc in 0..4 {
                        prop_assert_eq!(read(&fast, cc), counted(&list, cc));
                    }
                } else {
                    slow.push_back((now, country_code));
                    fast.push(now, country_code);
                }
            }
        }
    }
}
