//! The hourly send budgets against SMS pumping, kept in memory (rebuilt from the send log at
//! start-up) so that a request costs O(1) instead of a scan of the last hour's sends.

use std::collections::{HashMap, VecDeque};

pub const HOUR_MS: i64 = 3_600_000;

/// Sends of the last hour, in all and per country code, oldest first.
#[derive(Debug, Default)]
pub struct HourlySends {
    all: VecDeque<i64>,
    per_country: HashMap<u16, VecDeque<i64>>,
}

impl HourlySends {
    /// From `(at, country_code)` pairs in time order.
    pub fn from_log(sends: impl IntoIterator<Item = (i64, u16)>) -> Self {
        let mut s = HourlySends::default();
        for (at, cc) in sends {
            s.push(at, cc);
        }
        s
    }

    pub fn push(&mut self, at: i64, country_code: u16) {
        self.all.push_back(at);
        self.per_country
            .entry(country_code)
            .or_default()
            .push_back(at);
    }

    /// Forget sends an hour old or older at `now`.
    fn expire(&mut self, now: i64) {
        let old = |q: &mut VecDeque<i64>| {
            while q.front().is_some_and(|at| *at <= now - HOUR_MS) {
                q.pop_front();
            }
        };
        old(&mut self.all);
        self.per_country.retain(|_, q| {
            old(q);
            !q.is_empty()
        });
    }

    /// Count a send at `now` unless the global or the country's budget is used up; then
    /// `Err((free_at, which))`.
    pub fn try_reserve(
        &mut self,
        now: i64,
        country_code: u16,
        global_budget: u32,
        country_budget: u32,
    ) -> Result<(), (i64, &'static str)> {
        self.expire(now);
        if self.all.len() as u64 >= u64::from(global_budget) {
            return Err((self.all.front().copied().unwrap_or(now) + HOUR_MS, "global"));
        }
        let in_country = self.per_country.get(&country_code);
        if in_country.map_or(0, VecDeque::len) as u64 >= u64::from(country_budget) {
            let oldest = in_country.and_then(|q| q.front().copied()).unwrap_or(now);
            return Err((oldest + HOUR_MS, "country"));
        }
        self.push(now, country_code);
        Ok(())
    }
}

/// A fixed set of async locks picked by a key's hash: one key always maps to the same lock,
/// so the work of one user (or number) is serialised while others proceed.
pub struct Stripes(Vec<tokio::sync::Mutex<()>>);

impl Stripes {
    const COUNT: usize = 64;

    pub fn new() -> Self {
        Stripes(
            (0..Self::COUNT)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        )
    }

    pub async fn lock(&self, key: &str) -> tokio::sync::MutexGuard<'_, ()> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        self.0[(h.finish() % Self::COUNT as u64) as usize]
            .lock()
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_fill_and_free_an_hour_after_the_oldest_send() {
        let mut s = HourlySends::from_log([(0, 32), (10, 32), (20, 31)]);
        assert_eq!(s.try_reserve(30, 32, 10, 2), Err((HOUR_MS, "country")));
        assert_eq!(s.try_reserve(30, 49, 3, 2), Err((HOUR_MS, "global")));
        // A refused send is not counted; an accepted one is.
        assert_eq!(s.try_reserve(30, 31, 10, 2), Ok(()));
        assert_eq!(s.try_reserve(31, 31, 10, 2), Err((20 + HOUR_MS, "country")));
        // The first send ages out: one slot free for Belgium again.
        assert_eq!(s.try_reserve(HOUR_MS, 32, 10, 2), Ok(()));
        assert_eq!(
            s.try_reserve(HOUR_MS + 1, 32, 10, 2),
            Err((10 + HOUR_MS, "country"))
        );
        // Everything ages out, and empty countries are forgotten.
        assert_eq!(s.try_reserve(3 * HOUR_MS, 32, 1, 1), Ok(()));
        assert_eq!(s.all.len(), 1);
        assert_eq!(s.per_country.len(), 1);
    }

    #[tokio::test]
    async fn one_key_one_stripe() {
        let stripes = Stripes::new();
        let held = stripes.lock("r0123456").await;
        // The same key waits; (almost every) other key does not.
        assert!(tokio::time::timeout(
            std::time::Duration::from_millis(20),
            stripes.lock("r0123456")
        )
        .await
        .is_err());
        let mut free = 0;
        for i in 0..10 {
            let other = format!("other{i}");
            let t = std::time::Duration::from_millis(5);
            free += tokio::time::timeout(t, stripes.lock(&other)).await.is_ok() as usize;
        }
        assert!(free >= 8, "{free}");
        drop(held);
    }
}
