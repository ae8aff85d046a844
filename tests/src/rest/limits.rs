//! The REST rate limiter: the two weight pools (futures = fapi + dapi + `/futures/data`, spot =
//! `api/v3`) in fixed wall-clock minutes, the two request buckets (funding, futures data) in
//! fixed 5-minute windows, the 429 refusals and the 418 ban they escalate to. Pure state over a
//! millisecond wall clock passed in; which request weighs what is `rest`.

use crate::config::RestLimits;

const MINUTE_MS: u64 = 60_000;
const FIVE_MIN_MS: u64 = 300_000;

/// A weight pool: which `X-MBX-USED-WEIGHT-1M` a request reports and charges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    /// fapi, dapi and `/futures/data` (one 2400/min budget since the CM migration).
    Futures,
    /// api/v3.
    Spot,
}

/// A request-count bucket with its own limit per 5 minutes (weight 0 endpoints).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    /// `fundingRate` + `fundingInfo`.
    Funding,
    /// The `/futures/data/*` statistics endpoints.
    FuturesData,
}

/// A fixed window: its start (aligned to its length) and what it has used.
#[derive(Debug, Clone, Copy, Default)]
struct Window {
    start_ms: u64,
    used: u64,
    refused: u32,
}

impl Window {
    fn roll(&mut self, now_ms: u64, len_ms: u64) {
        let start = now_ms - now_ms % len_ms;
        if start != self.start_ms {
            *self = Window {
                start_ms: start,
                used: 0,
                refused: 0,
            };
        }
    }

    fn secs_left(&self, now_ms: u64, len_ms: u64) -> u64 {
        (self.start_ms + len_ms)
            .saturating_sub(now_ms)
            .div_ceil(1000)
            .max(1)
    }
}

/// What the limiter says about one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Served; the pool's weight used in the current minute, this request included.
    Admitted { used: u64 },
    /// 429: over a limit. `limit`/`per` name the limit broken (for the message).
    Refused {
        used: u64,
        retry_after_secs: u64,
        limit: u32,
        per: &'static str,
    },
    /// 418: the IP is banned until `until_ms` (Unix ms).
    Banned {
        used: u64,
        until_ms: u64,
        retry_after_secs: u64,
    },
}

/// The limiter state of the (single) client IP.
#[derive(Debug, Default)]
pub struct Limiter {
    futures: Window,
    spot: Window,
    funding: Window,
    futures_data: Window,
    banned_until_ms: u64,
}

impl Limiter {
    fn pool(&mut self, p: Pool) -> &mut Window {
        match p {
            Pool::Futures => &mut self.futures,
            Pool::Spot => &mut self.spot,
        }
    }

    fn bucket(&mut self, b: Bucket) -> &mut Window {
        match b {
            Bucket::Funding => &mut self.funding,
            Bucket::FuturesData => &mut self.futures_data,
        }
    }

    fn roll_all(&mut self, now_ms: u64) {
        self.futures.roll(now_ms, MINUTE_MS);
        self.spot.roll(now_ms, MINUTE_MS);
        self.funding.roll(now_ms, FIVE_MIN_MS);
        self.futures_data.roll(now_ms, FIVE_MIN_MS);
    }

    /// The pool's used weight in the current minute.
    pub fn used(&mut self, now_ms: u64, pool: Pool) -> u64 {
        self.roll_all(now_ms);
        self.pool(pool).used
    }

    /// Whether the IP is banned at `now_ms`; `Some((until_ms, secs left))`.
    pub fn ban(&self, now_ms: u64) -> Option<(u64, u64)> {
        (now_ms < self.banned_until_ms).then(|| {
            (
                self.banned_until_ms,
                (self.banned_until_ms - now_ms).div_ceil(1000).max(1),
            )
        })
    }

    /// Admit or refuse a request of `weight` in `pool` (and one count in `bucket`). A refused
    /// request adds nothing; the `ban_after_429 + 1`-th refusal inside one window starts a ban
    /// of `ban_secs` and answers 418, as does every request during the ban.
    pub fn admit(
        &mut self,
        now_ms: u64,
        pool: Pool,
        weight: u32,
        bucket: Option<Bucket>,
        limits: &RestLimits,
    ) -> Verdict {
        self.roll_all(now_ms);
        let used = self.pool(pool).used;
        if let Some((until_ms, retry_after_secs)) = self.ban(now_ms) {
            return Verdict::Banned {
                used,
                until_ms,
                retry_after_secs,
            };
        }
        let pool_limit = match pool {
            Pool::Futures => limits.futures_weight_per_minute,
            Pool::Spot => limits.spot_weight_per_minute,
        };
        let over_pool = used + weight as u64 > pool_limit as u64;
        let over_bucket = bucket.filter(|b| {
            let limit = match b {
                Bucket::Funding => limits.funding_per_5min,
                Bucket::FuturesData => limits.futures_data_per_5min,
            };
            self.bucket(*b).used + 1 > limit as u64
        });
        let (window, len, limit, per) = if over_pool {
            (self.pool(pool), MINUTE_MS, pool_limit, "minute")
        } else if let Some(b) = over_bucket {
            let limit = match b {
                Bucket::Funding => limits.funding_per_5min,
                Bucket::FuturesData => limits.futures_data_per_5min,
            };
            (self.bucket(b), FIVE_MIN_MS, limit, "5 minutes")
        } else {
            self.pool(pool).used += weight as u64;
            if let Some(b) = bucket {
                self.bucket(b).used += 1;
            }
            return Verdict::Admitted {
                used: used + weight as u64,
            };
        };
        window.refused += 1;
        let retry_after_secs = window.secs_left(now_ms, len);
        if window.refused > limits.ban_after_429 {
            self.banned_until_ms = now_ms + limits.ban_secs as u64 * 1000;
            let (until_ms, retry_after_secs) = self.ban(now_ms).unwrap_or((now_ms, 1));
            return Verdict::Banned {
                used,
                until_ms,
                retry_after_secs,
            };
        }
        Verdict::Refused {
            used,
            retry_after_secs,
            limit,
            per,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> RestLimits {
        RestLimits {
            futures_weight_per_minute: 30,
            spot_weight_per_minute: 100,
            funding_per_5min: 3,
            futures_data_per_5min: 2,
            ban_after_429: 2,
            ban_secs: 120,
        }
    }

    #[test]
    fn weights_fill_a_minute_then_refuse_then_ban() {
        let (l, mut lim) = (limits(), Limiter::default());
        let t0 = 1_700_000_080_000; // 40 s into a minute
        assert_eq!(
            lim.admit(t0, Pool::Futures, 20, None, &l),
            Verdict::Admitted { used: 20 }
        );
        // Spot is its own pool.
        assert_eq!(
            lim.admit(t0, Pool::Spot, 20, None, &l),
            Verdict::Admitted { used: 20 }
        );
        assert_eq!(
            lim.admit(t0 + 1, Pool::Futures, 10, None, &l),
            Verdict::Admitted { used: 30 }
        );
        let r = lim.admit(t0 + 500, Pool::Futures, 1, None, &l);
        assert_eq!(
            r,
            Verdict::Refused {
                used: 30,
                retry_after_secs: 20,
                limit: 30,
                per: "minute"
            }
        );
        assert!(matches!(
            lim.admit(t0 + 600, Pool::Futures, 1, None, &l),
            Verdict::Refused { .. }
        ));
        // The third refusal in the window (ban_after_429 = 2) bans, spot included.
        let Verdict::Banned {
            until_ms,
            retry_after_secs,
            ..
        } = lim.admit(t0 + 700, Pool::Futures, 1, None, &l)
        else {
            panic!("expected a ban");
        };
        assert_eq!((until_ms, retry_after_secs), (t0 + 700 + 120_000, 120));
        assert!(matches!(
            lim.admit(t0 + 30_000, Pool::Spot, 1, None, &l),
            Verdict::Banned {
                retry_after_secs: 91,
                ..
            }
        ));
        // After the ban: a new minute, a fresh pool.
        assert_eq!(
            lim.admit(until_ms, Pool::Futures, 5, None, &l),
            Verdict::Admitted { used: 5 }
        );
    }

    #[test]
    fn buckets_count_requests_in_five_minutes() {
        let (l, mut lim) = (limits(), Limiter::default());
        let t0 = 1_700_000_200_000; // 100 s into a 5-minute window
        for _ in 0..2 {
            assert!(matches!(
                lim.admit(t0, Pool::Futures, 0, Some(Bucket::FuturesData), &l),
                Verdict::Admitted { used: 0 }
            ));
        }
        assert_eq!(
            lim.admit(t0, Pool::Futures, 0, Some(Bucket::FuturesData), &l),
            Verdict::Refused {
                used: 0,
                retry_after_secs: 200,
                limit: 2,
                per: "5 minutes"
            }
        );
        // The funding bucket is separate; a new minute does not reset the 5-minute bucket.
        assert!(matches!(
            lim.admit(t0, Pool::Futures, 0, Some(Bucket::Funding), &l),
            Verdict::Admitted { .. }
        ));
        assert!(matches!(
            lim.admit(t0 + 60_000, Pool::Futures, 0, Some(Bucket::FuturesData), &l),
            Verdict::Refused { .. }
        ));
        assert!(matches!(
            lim.admit(
                t0 + 200_000,
                Pool::Futures,
                0,
                Some(Bucket::FuturesData),
                &l
            ),
            Verdict::Admitted { .. }
        ));
    }
}
