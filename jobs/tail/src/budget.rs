//! The request budgets one process shares across every request it makes to a Binance host
//! family: the IP's request weight per minute (resynchronised from `X-MBX-USED-WEIGHT-1M`), the
//! request buckets counted per 5 minutes (fundingRate + fundingInfo, `/futures/data/*`), a pause
//! every request honours after a 429, and a ban that refuses every request after a 418. Pure
//! bookkeeping over a clock given in milliseconds, so it is tested without waiting.

use std::collections::VecDeque;

/// A bucket of requests counted apart from the weight (binance-live.md §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bucket {
    /// `/fapi/v1/fundingRate` and `/fapi/v1/fundingInfo`: 500 requests / 5 min.
    Funding,
    /// The five `/futures/data/*` endpoints: 1000 requests / 5 min.
    FuturesData,
}

/// What one request costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cost {
    pub weight: u32,
    pub bucket: Option<Bucket>,
}

impl Cost {
    pub const fn weight(weight: u32) -> Cost {
        Cost {
            weight,
            bucket: None,
        }
    }

    pub const fn bucket(bucket: Bucket) -> Cost {
        Cost {
            weight: 0,
            bucket: Some(bucket),
        }
    }
}

/// The limits, as the exchange states them (before headroom).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Limits {
    /// REQUEST_WEIGHT per minute (futures 2400, UM and CM together; spot 6000).
    pub weight_per_minute: u32,
    pub funding_per_5min: u32,
    pub futures_data_per_5min: u32,
    /// The share of each limit left unused, so that other clients on the IP and clock skew at a
    /// window's edge do not push it over.
    pub headroom: f64,
}

const MINUTE_MS: i64 = 60_000;
const FIVE_MINUTES_MS: i64 = 300_000;
/// Past a window's end before spending the next one: the server's minute may start a little
/// after ours.
const EDGE_SLACK_MS: i64 = 250;

/// Whether a request may go now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admit {
    /// Sent: its cost is booked.
    Go,
    /// Not before this instant (unix ms).
    WaitUntil(i64),
    /// The IP is banned until this instant (unix ms); `reason` is the server's message.
    Banned { until_ms: i64, reason: String },
}

/// The state of the budgets.
#[derive(Debug)]
pub struct Budget {
    limits: Limits,
    /// Start of the current weight window (unix ms, a minute boundary).
    window_start: i64,
    /// Weight spent in it: ours, or what the server said, whichever is more.
    used: u32,
    funding: VecDeque<i64>,
    futures_data: VecDeque<i64>,
    paused_until: i64,
    banned: Option<(i64, String)>,
    /// Highest weight the server reported in any window (the report's peak).
    pub peak_used: u32,
}

impl Budget {
    pub fn new(limits: Limits) -> Budget {
        Budget {
            limits,
            window_start: 0,
            used: 0,
            funding: VecDeque::new(),
            futures_data: VecDeque::new(),
            paused_until: 0,
            banned: None,
            peak_used: 0,
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The weight a window may spend: the limit less the headroom.
    pub fn weight_budget(&self) -> u32 {
        allowance(self.limits.weight_per_minute, self.limits.headroom)
    }

    fn roll(&mut self, now: i64) {
        let start = now - now.rem_euclid(MINUTE_MS);
        if start != self.window_start {
            self.window_start = start;
            self.used = 0;
        }
    }

    /// Book `cost` at `now` if every budget allows it, or say until when to wait.
    pub fn admit(&mut self, cost: Cost, now: i64) -> Admit {
        if let Some((until, reason)) = &self.banned {
            if now < *until {
                return Admit::Banned {
                    until_ms: *until,
                    reason: reason.clone(),
                };
            }
            self.banned = None;
        }
        if now < self.paused_until {
            return Admit::WaitUntil(self.paused_until);
        }
        self.roll(now);
        let budget = self.weight_budget();
        // A request heavier than the whole budget still goes, alone in a fresh window.
        if cost.weight > 0 && self.used > 0 && self.used + cost.weight > budget {
            return Admit::WaitUntil(self.window_start + MINUTE_MS + EDGE_SLACK_MS);
        }
        if let Some(b) = cost.bucket {
            let (queue, limit) = match b {
                Bucket::Funding => (&mut self.funding, self.limits.funding_per_5min),
                Bucket::FuturesData => (&mut self.futures_data, self.limits.futures_data_per_5min),
            };
            while queue.front().is_some_and(|t| *t <= now - FIVE_MINUTES_MS) {
                queue.pop_front();
            }
            let allowed = allowance(limit, self.limits.headroom) as usize;
            if queue.len() >= allowed.max(1) {
                let oldest = *queue.front().expect("non-empty");
                return Admit::WaitUntil(oldest + FIVE_MINUTES_MS + EDGE_SLACK_MS);
            }
            queue.push_back(now);
        }
        self.used += cost.weight;
        Admit::Go
    }

    /// The server's `X-MBX-USED-WEIGHT-1M` of a response received at `now`: the IP's weight in
    /// the server's current minute, other clients on the IP included.
    pub fn observe_used(&mut self, used: u32, now: i64) {
        self.roll(now);
        self.used = self.used.max(used);
        self.peak_used = self.peak_used.max(used);
    }

    /// A 429: every request waits until `until` (unix ms).
    pub fn pause_until(&mut self, until: i64) {
        self.paused_until = self.paused_until.max(until);
    }

    /// A 418: every request is refused until `until` (unix ms).
    pub fn ban(&mut self, until: i64, reason: String) {
        self.banned = Some((until, reason));
    }

    /// The ban in force at `now`, if any.
    pub fn banned(&self, now: i64) -> Option<(i64, String)> {
        self.banned.clone().filter(|(until, _)| now < *until)
    }
}

fn allowance(limit: u32, headroom: f64) -> u32 {
    ((limit as f64) * (1.0 - headroom.clamp(0.0, 0.9)))
        .floor()
        .max(1.0) as u32
}

/// The weight of a kline-family request of `limit` rows on a futures host (binance-live.md
/// §1.1: `[1,100)` → 1, `[100,500)` → 2, `[500,1000]` → 5, above → 10).
pub fn futures_kline_weight(limit: u32) -> u32 {
    match limit {
        0..100 => 1,
        100..500 => 2,
        500..=1000 => 5,
        _ => 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(w: u32) -> Limits {
        Limits {
            weight_per_minute: w,
            funding_per_5min: 10,
            futures_data_per_5min: 20,
            headroom: 0.1,
        }
    }

    #[test]
    fn weight_waits_for_the_next_minute_once_the_budget_less_headroom_is_spent() {
        let mut b = Budget::new(limits(100));
        assert_eq!(b.weight_budget(), 90);
        let t0 = 10 * MINUTE_MS + 1_000;
        for _ in 0..9 {
            assert_eq!(b.admit(Cost::weight(10), t0), Admit::Go);
        }
        assert_eq!(
            b.admit(Cost::weight(10), t0 + 5),
            Admit::WaitUntil(11 * MINUTE_MS + EDGE_SLACK_MS)
        );
        // The next minute starts afresh.
        assert_eq!(b.admit(Cost::weight(10), 11 * MINUTE_MS + 300), Admit::Go);
    }

    #[test]
    fn the_servers_count_raises_ours_but_never_lowers_it() {
        let mut b = Budget::new(limits(100));
        let t0 = 5 * MINUTE_MS;
        assert_eq!(b.admit(Cost::weight(10), t0), Admit::Go);
        // Another client on the IP spent 75 this minute.
        b.observe_used(85, t0 + 10);
        assert_eq!(
            b.admit(Cost::weight(10), t0 + 20),
            Admit::WaitUntil(6 * MINUTE_MS + 250)
        );
        b.observe_used(3, t0 + 30);
        assert!(matches!(
            b.admit(Cost::weight(10), t0 + 40),
            Admit::WaitUntil(_)
        ));
        assert_eq!(b.peak_used, 85);
    }

    #[test]
    fn buckets_count_requests_over_a_sliding_five_minutes() {
        let mut b = Budget::new(limits(100));
        // 10 per 5 min less 10 % → 9.
        for i in 0..9 {
            assert_eq!(b.admit(Cost::bucket(Bucket::Funding), i * 1_000), Admit::Go);
        }
        assert_eq!(
            b.admit(Cost::bucket(Bucket::Funding), 9_000),
            Admit::WaitUntil(FIVE_MINUTES_MS + EDGE_SLACK_MS)
        );
        // The other bucket and the weight are unaffected.
        assert_eq!(b.admit(Cost::bucket(Bucket::FuturesData), 9_000), Admit::Go);
        assert_eq!(b.admit(Cost::weight(5), 9_000), Admit::Go);
        assert_eq!(
            b.admit(Cost::bucket(Bucket::Funding), FIVE_MINUTES_MS + 1),
            Admit::Go
        );
    }

    #[test]
    fn a_pause_holds_every_request_and_a_ban_refuses_them_until_it_ends() {
        let mut b = Budget::new(limits(100));
        b.pause_until(30_000);
        assert_eq!(b.admit(Cost::weight(1), 1_000), Admit::WaitUntil(30_000));
        assert_eq!(b.admit(Cost::weight(1), 30_000), Admit::Go);
        b.ban(90_000, "IP banned".into());
        assert!(matches!(
            b.admit(Cost::weight(1), 40_000),
            Admit::Banned {
                until_ms: 90_000,
                ..
            }
        ));
        assert_eq!(b.admit(Cost::weight(1), 90_000), Admit::Go);
    }

    #[test]
    fn kline_weights_follow_the_limit_brackets() {
        let w: Vec<u32> = [1, 99, 100, 499, 500, 1000, 1001, 1500]
            .into_iter()
            .map(futures_kline_weight)
            .collect();
        assert_eq!(w, [1, 1, 2, 2, 5, 5, 10, 10]);
    }
}
