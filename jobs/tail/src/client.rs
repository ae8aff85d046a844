//! The one polite REST client a `tail` process shares: every request waits for the budgets
//! ([`crate::budget`]), books its cost, and is counted; the server's `X-MBX-USED-WEIGHT-1M`
//! resynchronises the weight; a 429 pauses every request for `Retry-After`; a 418 (or a 403 WAF
//! block) stops every request until the ban ends; 5xx, 408 and transport errors retry with
//! backoff; a 400 is typed by Binance's error code (-1121 is an invalid symbol).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use reqwest::StatusCode;
use serde::Serialize;
use shared::http::RetryPolicy;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::budget::{Admit, Budget, Cost, Limits};

/// What a request can end in, by what the caller should do about it.
#[derive(Debug, thiserror::Error)]
pub enum RestError {
    /// The IP is banned (418) or blocked (403): nothing more may be sent before `until`.
    #[error("{url}: the IP is banned until {until} ({reason}); every request stops until then")]
    Banned {
        url: String,
        until: chrono::DateTime<chrono::Utc>,
        reason: String,
    },
    /// Binance does not know the symbol on this host (-1121).
    #[error("{symbol}: invalid symbol on {host} (Binance -1121)")]
    InvalidSymbol { symbol: String, host: String },
    /// Any other refused request (HTTP 4xx with Binance's code and message): asking again
    /// cannot help.
    #[error("{url}: HTTP {status}, Binance {code}: {msg}")]
    Refused {
        url: String,
        status: u16,
        code: i64,
        msg: String,
    },
    /// 5xx, 408, resets and timeouts that outlasted every retry: a later run may pass.
    #[error("{url}: {reason} (after {attempts} attempts)")]
    Unavailable {
        url: String,
        reason: String,
        attempts: u32,
    },
    /// A 200 whose body is not what the endpoint documents.
    #[error("{url}: unexpected response: {reason}")]
    BadBody { url: String, reason: String },
    #[error("interrupted")]
    Interrupted,
}

impl From<RestError> for shared::Error {
    fn from(e: RestError) -> Self {
        match e {
            RestError::Interrupted => shared::Error::Interrupted,
            RestError::InvalidSymbol { .. } => shared::Error::BadName(e.to_string()),
            RestError::Unavailable { url, reason, .. } => shared::Error::Transient {
                url,
                reason,
                retry_after: None,
            },
            RestError::BadBody { url, reason } => shared::Error::bad_data(url, reason),
            RestError::Banned { ref url, .. } | RestError::Refused { ref url, .. } => {
                shared::Error::Http {
                    url: url.clone(),
                    reason: e.to_string(),
                }
            }
        }
    }
}

/// What the client did, for the report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClientStats {
    pub requests: u64,
    /// The weight booked for them (the budgets' view; 0-weight bucket requests excluded).
    pub weight: u64,
    /// Requests per endpoint path.
    pub by_endpoint: BTreeMap<String, u64>,
    pub retries: u64,
    pub http_429: u64,
    pub http_418: u64,
    /// Milliseconds spent waiting for a budget (all requests together).
    pub waited_ms: u64,
    /// Highest `X-MBX-USED-WEIGHT-1M` seen.
    pub peak_used_weight: u32,
}

/// The REST client of one host family.
pub struct RestClient {
    http: reqwest::Client,
    base: String,
    host: String,
    budget: Mutex<Budget>,
    in_flight: Semaphore,
    retry: RetryPolicy,
    stats: Mutex<ClientStats>,
    cancel: CancellationToken,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Binance's error body `{"code":-1121,"msg":"Invalid symbol."}`.
#[derive(serde::Deserialize)]
struct ErrorBody {
    code: i64,
    msg: String,
}

impl RestClient {
    /// A client of `base` (scheme, host and optional port; no path) with these limits, at most
    /// `max_in_flight` requests at once.
    pub fn new(
        base: &str,
        limits: Limits,
        max_in_flight: usize,
        cancel: CancellationToken,
    ) -> shared::Result<RestClient> {
        let url = url::Url::parse(base)
            .map_err(|e| shared::Error::usage(format!("--rest-url `{base}`: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(shared::Error::usage(format!(
                "--rest-url `{base}`: expected an http(s) URL such as https://fapi.binance.com"
            )));
        }
        let host = url.host_str().unwrap_or_default().to_string();
        let http = shared::http::client(Duration::from_secs(10), Duration::from_secs(30))?;
        Ok(RestClient {
            http,
            base: base.trim_end_matches('/').to_string(),
            host,
            budget: Mutex::new(Budget::new(limits)),
            in_flight: Semaphore::new(max_in_flight.max(1)),
            retry: RetryPolicy {
                max_attempts: 5,
                base_delay: Duration::from_millis(200),
                max_delay: Duration::from_secs(30),
            },
            stats: Mutex::new(ClientStats::default()),
            cancel,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn limits(&self) -> Limits {
        lock(&self.budget).limits()
    }

    pub fn stats(&self) -> ClientStats {
        let mut s = lock(&self.stats).clone();
        s.peak_used_weight = lock(&self.budget).peak_used;
        s
    }

    /// The ban in force, if any (for the report).
    pub fn banned(&self) -> Option<(chrono::DateTime<chrono::Utc>, String)> {
        let (until, reason) = lock(&self.budget).banned(now_ms())?;
        Some((ms_to_utc(until), reason))
    }

    fn url(&self, path: &str, query: &[(&str, String)]) -> String {
        let mut u = format!("{}{path}", self.base);
        for (i, (k, v)) in query.iter().enumerate() {
            u.push(if i == 0 { '?' } else { '&' });
            u.push_str(k);
            u.push('=');
            u.push_str(
                &percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
                    .to_string(),
            );
        }
        u
    }

    /// Wait until the budgets admit `cost`, then book it.
    async fn admit(&self, cost: Cost, url: &str) -> Result<(), RestError> {
        loop {
            let now = now_ms();
            let decision = lock(&self.budget).admit(cost, now);
            match decision {
                Admit::Go => return Ok(()),
                Admit::Banned { until_ms, reason } => {
                    return Err(RestError::Banned {
                        url: url.to_string(),
                        until: ms_to_utc(until_ms),
                        reason,
                    });
                }
                Admit::WaitUntil(t) => {
                    let wait = (t - now).max(1) as u64;
                    lock(&self.stats).waited_ms += wait;
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
                        _ = self.cancel.cancelled() => return Err(RestError::Interrupted),
                    }
                }
            }
        }
    }

    /// GET `path` with `query`, costing `cost`; the parsed JSON body of a 200. `symbol` names
    /// the symbol an invalid-symbol answer is about.
    pub async fn get(
        &self,
        path: &str,
        query: &[(&str, String)],
        cost: Cost,
        symbol: &str,
    ) -> Result<serde_json::Value, RestError> {
        let url = self.url(path, query);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            // The slot first, then the budget: a request never goes out on a decision taken
            // before a 429's pause or a 418's ban that arrived while it waited for a slot.
            let permit = tokio::select! {
                p = self.in_flight.acquire() => p.map_err(|_| RestError::Interrupted)?,
                _ = self.cancel.cancelled() => return Err(RestError::Interrupted),
            };
            self.admit(cost, &url).await?;
            {
                let mut s = lock(&self.stats);
                s.requests += 1;
                s.weight += u64::from(cost.weight);
                *s.by_endpoint.entry(path.to_string()).or_default() += 1;
            }
            let sent = tokio::select! {
                r = self.http.get(&url).send() => r,
                _ = self.cancel.cancelled() => return Err(RestError::Interrupted),
            };
            let outcome = match sent {
                Ok(resp) => self.response(&url, resp, symbol).await,
                Err(e) => Err(Retry::After(
                    shared::http::transport_error(&url, &e).to_string(),
                    None,
                )),
            };
            drop(permit);
            match outcome {
                Ok(v) => return Ok(v),
                Err(Retry::Fatal(e)) => return Err(e),
                // A 429 paused the budget; the request goes again when it lifts, without
                // counting as a failed attempt (the pause is the server's instruction).
                Err(Retry::Throttled) => {
                    attempt -= 1;
                    continue;
                }
                Err(Retry::After(reason, retry_after)) => {
                    if attempt >= self.retry.max_attempts {
                        return Err(RestError::Unavailable {
                            url,
                            reason,
                            attempts: attempt,
                        });
                    }
                    lock(&self.stats).retries += 1;
                    let d = self.retry.delay(attempt, retry_after);
                    tracing::warn!(%url, %reason, attempt, delay_ms = d.as_millis() as u64, "REST request failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(d) => {}
                        _ = self.cancel.cancelled() => return Err(RestError::Interrupted),
                    }
                }
            }
        }
    }

    async fn response(
        &self,
        url: &str,
        resp: reqwest::Response,
        symbol: &str,
    ) -> Result<serde_json::Value, Retry> {
        let status = resp.status();
        let now = now_ms();
        if let Some(used) = resp
            .headers()
            .get("x-mbx-used-weight-1m")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u32>().ok())
        {
            lock(&self.budget).observe_used(used, now);
        }
        let retry_after = shared::http::retry_after(resp.headers());
        let body = resp
            .bytes()
            .await
            .map_err(|e| Retry::After(shared::http::transport_error(url, &e).to_string(), None))?;
        if status == StatusCode::OK {
            return serde_json::from_slice(&body).map_err(|e| {
                Retry::Fatal(RestError::BadBody {
                    url: url.to_string(),
                    reason: format!("not JSON: {e}"),
                })
            });
        }
        let err: Option<ErrorBody> = serde_json::from_slice(&body).ok();
        let text = || {
            err.as_ref().map_or_else(
                || String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
                |e| format!("{} {}", e.code, e.msg),
            )
        };
        match status.as_u16() {
            429 => {
                let wait = retry_after.unwrap_or(Duration::from_secs(60));
                lock(&self.budget).pause_until(now + wait.as_millis() as i64);
                lock(&self.stats).http_429 += 1;
                tracing::warn!(%url, retry_after_secs = wait.as_secs(), reason = %text(), "429: every request pauses");
                Err(Retry::Throttled)
            }
            418 | 403 => {
                // The ban's end: Retry-After, else the "banned until <ms>" of the message, else
                // two minutes (the shortest ban).
                let until = retry_after
                    .map(|d| now + d.as_millis() as i64)
                    .or_else(|| err.as_ref().and_then(|e| banned_until(&e.msg)))
                    .unwrap_or(now + 120_000);
                let reason = format!("HTTP {}: {}", status.as_u16(), text());
                lock(&self.budget).ban(until, reason.clone());
                lock(&self.stats).http_418 += 1;
                tracing::error!(%url, until = %ms_to_utc(until), %reason, "banned: every request stops");
                Err(Retry::Fatal(RestError::Banned {
                    url: url.to_string(),
                    until: ms_to_utc(until),
                    reason,
                }))
            }
            408 | 500..=599 => Err(Retry::After(
                format!("HTTP {}: {}", status.as_u16(), text()),
                retry_after,
            )),
            code => match err {
                Some(e) if e.code == -1121 => Err(Retry::Fatal(RestError::InvalidSymbol {
                    symbol: symbol.to_string(),
                    host: self.host.clone(),
                })),
                Some(e) => Err(Retry::Fatal(RestError::Refused {
                    url: url.to_string(),
                    status: code,
                    code: e.code,
                    msg: e.msg,
                })),
                None => Err(Retry::Fatal(RestError::Refused {
                    url: url.to_string(),
                    status: code,
                    code: 0,
                    msg: text(),
                })),
            },
        }
    }
}

/// How a failed attempt continues.
enum Retry {
    Fatal(RestError),
    Throttled,
    After(String, Option<Duration>),
}

/// The `<ms>` of "IP banned until <ms>".
fn banned_until(msg: &str) -> Option<i64> {
    let rest = msg.split("until").nth(1)?;
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

pub fn ms_to_utc(ms: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ban_end_is_read_from_binances_message() {
        let msg = "Way too many requests; IP banned until 1660090423228. Please use the websocket for live updates to avoid bans.";
        assert_eq!(banned_until(msg), Some(1_660_090_423_228));
        assert_eq!(banned_until("Too many requests"), None);
    }

    #[test]
    fn a_malformed_rest_url_is_a_usage_error_naming_it() {
        let limits = Limits {
            weight_per_minute: 2400,
            funding_per_5min: 500,
            futures_data_per_5min: 1000,
            headroom: 0.05,
        };
        for bad in ["fapi.binance.com", "ftp://x", "http://"] {
            let e = RestClient::new(bad, limits, 4, CancellationToken::new())
                .err()
                .expect("refused");
            assert!(matches!(e, shared::Error::Usage(_)), "{bad}: {e}");
            assert!(e.to_string().contains(bad), "{e}");
        }
    }
}
