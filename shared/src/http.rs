//! HTTP against the archive: the client, how a response status is classified (404 = missing
//! upstream; 5xx, 403, 429, resets, truncated bodies = transient), and bounded exponential
//! backoff with jitter that honours `Retry-After`.

use std::time::Duration;

use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

/// How hard to retry transient failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Delay before the second attempt; doubles each time.
    pub base_delay: Duration,
    /// Cap on one delay (also caps a server's `Retry-After`).
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The delay before attempt `attempt + 1` (attempt counts from 1): "full jitter" in
    /// `[d/2, d]` with `d = base * 2^(attempt-1)`, capped; a server's `Retry-After` is a floor.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << (attempt.saturating_sub(1)).min(20));
        let d = exp.min(self.max_delay);
        let jittered = d / 2 + d.mul_f64(fastrand::f64() / 2.0);
        match retry_after {
            Some(ra) => jittered.max(ra.min(self.max_delay)),
            None => jittered,
        }
    }
}

/// Build the HTTP client every job uses for the archive.
pub fn client(connect_timeout: Duration, read_timeout: Duration) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .read_timeout(read_timeout)
        .pool_max_idle_per_host(64)
        .user_agent(concat!("binance-pipeline/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Error::usage(format!("cannot build HTTP client: {e}")))
}

/// Parse `Retry-After` (delta-seconds; an HTTP date is treated as "a little while").
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    match v.parse::<u64>() {
        Ok(secs) => Some(Duration::from_secs(secs)),
        Err(_) => Some(Duration::from_secs(5)),
    }
}

/// Turn a non-success status into the error it means.
pub fn status_error(url: &str, status: StatusCode, headers: &HeaderMap) -> Error {
    let url = url.to_string();
    if status == StatusCode::NOT_FOUND {
        return Error::MissingUpstream { url };
    }
    // 403 is what S3/CloudFront answer during incidents and under throttling
    // (binance-archive.md §4.8): transient, not "missing".
    if status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::FORBIDDEN
        || status == StatusCode::REQUEST_TIMEOUT
    {
        return Error::Transient {
            url,
            reason: format!("HTTP {status}"),
            retry_after: retry_after(headers),
        };
    }
    Error::Http {
        url,
        reason: format!("HTTP {status}"),
    }
}

/// Classify a transport error (connect refused, reset, timeout, truncated body).
pub fn transport_error(url: &str, e: &reqwest::Error) -> Error {
    let mut reason = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        reason.push_str(": ");
        reason.push_str(&s.to_string());
        src = s.source();
    }
    Error::Transient {
        url: url.to_string(),
        reason,
        retry_after: None,
    }
}

/// Sleep, or return `Err(Interrupted)` if cancelled first.
pub async fn sleep_or_cancel(d: Duration, cancel: &CancellationToken) -> Result<()> {
    tokio::select! {
        _ = tokio::time::sleep(d) => Ok(()),
        _ = cancel.cancelled() => Err(Error::Interrupted),
    }
}

/// Run `attempt` until it succeeds, fails permanently, or runs out of attempts. `on_retry` is
/// told about every retry (for logs and counters).
pub async fn with_retry<T, F, Fut>(
    policy: &RetryPolicy,
    cancel: &CancellationToken,
    mut on_retry: impl FnMut(u32, &Error, Duration),
    mut attempt: F,
) -> Result<T>
where
    F: FnMut(u32) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut n = 1;
    loop {
        if cancel.is_cancelled() {
            return Err(Error::Interrupted);
        }
        match attempt(n).await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_transient() && n < policy.max_attempts => {
                let ra = match &e {
                    Error::Transient { retry_after, .. } => *retry_after,
                    _ => None,
                };
                let d = policy.delay(n, ra);
                on_retry(n, &e, d);
                sleep_or_cancel(d, cancel).await?;
                n += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// GET a small object whole (CHECKSUM files, listing pages), with retries.
pub async fn get_small(
    client: &reqwest::Client,
    url: &str,
    policy: &RetryPolicy,
    cancel: &CancellationToken,
    on_retry: impl FnMut(u32, &Error, Duration),
) -> Result<Bytes> {
    with_retry(policy, cancel, on_retry, |_| async move {
        let resp = client
            .get(url)
            .send()
            .await
            .map_err(|e| transport_error(url, &e))?;
        if !resp.status().is_success() {
            return Err(status_error(url, resp.status(), resp.headers()));
        }
        resp.bytes().await.map_err(|e| transport_error(url, &e))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        let p = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        };
        for _ in 0..100 {
            let d1 = p.delay(1, None);
            assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100));
            let d3 = p.delay(3, None);
            assert!(d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400));
            assert!(p.delay(30, None) <= Duration::from_secs(2));
            assert!(p.delay(1, Some(Duration::from_secs(1))) >= Duration::from_secs(1));
            // Retry-After cannot push past the cap.
            assert!(p.delay(1, Some(Duration::from_secs(3600))) <= Duration::from_secs(2));
        }
    }

    #[test]
    fn statuses_are_classified() {
        let h = HeaderMap::new();
        assert!(matches!(
            status_error("u", StatusCode::NOT_FOUND, &h),
            Error::MissingUpstream { .. }
        ));
        for s in [500, 502, 503, 429, 403] {
            let e = status_error("u", StatusCode::from_u16(s).unwrap(), &h);
            assert!(e.is_transient(), "{s}");
        }
        assert!(!status_error("u", StatusCode::BAD_REQUEST, &h).is_transient());
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "7".parse().unwrap());
        match status_error("u", StatusCode::TOO_MANY_REQUESTS, &h) {
            Error::Transient { retry_after, .. } => {
                assert_eq!(retry_after, Some(Duration::from_secs(7)))
            }
            e => panic!("{e}"),
        }
    }

    #[tokio::test]
    async fn with_retry_stops_on_permanent_errors_and_after_max_attempts() {
        let p = RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
        };
        let cancel = CancellationToken::new();
        let mut calls = 0;
        let r: Result<()> = with_retry(
            &p,
            &cancel,
            |_, _, _| {},
            |_| {
                calls += 1;
                async {
                    Err(Error::Transient {
                        url: "u".into(),
                        reason: "x".into(),
                        retry_after: None,
                    })
                }
            },
        )
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 3);
        let mut calls = 0;
        let r: Result<()> = with_retry(
            &p,
            &cancel,
            |_, _, _| {},
            |_| {
                calls += 1;
                async { Err(Error::MissingUpstream { url: "u".into() }) }
            },
        )
        .await;
        assert!(matches!(r, Err(Error::MissingUpstream { .. })));
        assert_eq!(calls, 1);
        let mut calls = 0;
        let r = with_retry(
            &p,
            &cancel,
            |_, _, _| {},
            |n| {
                calls += 1;
                async move {
                    if n < 2 {
                        Err(Error::Transient {
                            url: "u".into(),
                            reason: "x".into(),
                            retry_after: None,
                        })
                    } else {
                        Ok(n)
                    }
                }
            },
        )
        .await;
        assert_eq!(r.unwrap(), 2);
        assert_eq!(calls, 2);
    }
}
