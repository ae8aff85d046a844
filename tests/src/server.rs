//! The HTTP side: a hand-rolled HTTP/1.1 server on a tokio `TcpListener` (keep-alive, GET and
//! HEAD) that serves the archive's objects under `/data/...`, the S3 listing at the root, the
//! Binance REST API under `/fapi/`, `/dapi/`, `/api/v3/` and `/futures/data/`, the request log at
//! `/_sim/log`, the clock at `/_sim/clock`, and injects the configured faults on both sides. The
//! archive itself is `archive` and the REST answers are `rest`; this module owns sockets, fault
//! counters, HTTP framing and the request log.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use md5::{Digest as _, Md5};
use serde::Serialize;
use sha2::Sha256;
use shared::paths::{decode_key, encode_key};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use chrono::NaiveDateTime;

use crate::archive::{Archive, Object};
use crate::config::{FaultKind, FaultRule, SimConfig, format_instant, parse_instant};
use crate::listing::{ListRequest, error_xml, list_xml};
use crate::rest::{self, Rest, query_params};

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestRecord {
    pub method: String,
    /// The decoded path without its leading `/`: an object key (`data/...`), `""` for the
    /// listing, a REST path (`fapi/v1/klines`), `_sim/log`...
    pub path: String,
    /// The raw query string (empty when none).
    pub query: String,
    /// Status sent; 0 when the connection was reset without a response.
    pub status: u16,
    /// Body bytes actually written.
    pub bytes: u64,
    /// REST weight charged (0 for archive objects, refused and faulted requests, and the
    /// weight-0 endpoints).
    pub weight: u32,
    /// Milliseconds since the Unix epoch when the request arrived.
    pub unix_ms: u64,
    /// Milliseconds since the server started when the request arrived.
    pub at_ms: u64,
    /// When the request arrived (not in the JSON log).
    #[serde(skip)]
    pub at: Instant,
}

impl RequestRecord {
    /// The decoded object key (same as `path`).
    pub fn key(&self) -> &str {
        &self.path
    }

    /// Whether this was a REST API request.
    pub fn is_rest(&self) -> bool {
        rest::is_rest_path(&self.path)
    }
}

struct State {
    archive: Arc<Archive>,
    rest: Rest,
    faults: Mutex<Vec<FaultRule>>,
    counters: Mutex<HashMap<(usize, String), u32>>,
    log: Mutex<Vec<RequestRecord>>,
    started: Instant,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts servers.
pub struct SimServer;

impl SimServer {
    /// Build the archive from `config` and serve it on `127.0.0.1:port` (0 = ephemeral).
    pub async fn start(config: SimConfig, port: u16) -> io::Result<SimHandle> {
        Self::start_at(config, SocketAddr::from(([127, 0, 0, 1], port))).await
    }

    /// Build the archive from `config` and serve it on `addr` (a pod serves on `0.0.0.0`).
    pub async fn start_at(config: SimConfig, addr: SocketAddr) -> io::Result<SimHandle> {
        let faults = config.faults.clone();
        let archive = tokio::task::spawn_blocking(move || Archive::new(config))
            .await
            .map_err(io::Error::other)?;
        Self::start_with_at(Arc::new(archive), faults, addr).await
    }

    /// Serve an existing archive with the given fault rules on `127.0.0.1:port`.
    pub async fn start_with(
        archive: Arc<Archive>,
        faults: Vec<FaultRule>,
        port: u16,
    ) -> io::Result<SimHandle> {
        Self::start_with_at(archive, faults, SocketAddr::from(([127, 0, 0, 1], port))).await
    }

    /// Serve an existing archive with the given fault rules on `addr`.
    pub async fn start_with_at(
        archive: Arc<Archive>,
        faults: Vec<FaultRule>,
        addr: SocketAddr,
    ) -> io::Result<SimHandle> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            archive,
            rest: Rest::new(),
            faults: Mutex::new(faults),
            counters: Mutex::new(HashMap::new()),
            log: Mutex::new(Vec::new()),
            started: Instant::now(),
        });
        let (tx, rx) = watch::channel(false);
        let st = state.clone();
        let task = tokio::spawn(async move {
            let mut rx_accept = rx.clone();
            loop {
                tokio::select! {
                    r = listener.accept() => match r {
                        Ok((stream, _)) => {
                            let _ = stream.set_nodelay(true);
                            let st = st.clone();
                            let rx = rx.clone();
                            tokio::spawn(async move {
                                let _ = serve_conn(stream, st, rx).await;
                            });
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                    },
                    _ = rx_accept.changed() => break,
                }
            }
        });
        Ok(SimHandle {
            addr,
            state,
            shutdown: tx,
            task,
        })
    }
}

/// A running server. Dropping it leaves the server running until the runtime ends; call
/// [`SimHandle::shutdown`] to stop it.
pub struct SimHandle {
    addr: SocketAddr,
    state: Arc<State>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl SimHandle {
    /// `http://127.0.0.1:PORT`: both the download base and the listing URL.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The percent-encoded URL of a key.
    pub fn url_of(&self, key: &str) -> String {
        format!("{}/{}", self.base_url(), encode_key(key))
    }

    pub fn archive(&self) -> &Archive {
        &self.state.archive
    }

    pub fn archive_arc(&self) -> Arc<Archive> {
        self.state.archive.clone()
    }

    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.state.log).clone()
    }

    pub fn count(&self, f: impl Fn(&RequestRecord) -> bool) -> usize {
        lock(&self.state.log).iter().filter(|r| f(r)).count()
    }

    /// Requests whose decoded path contains `substr`.
    pub fn count_path(&self, substr: &str) -> usize {
        self.count(|r| r.path.contains(substr))
    }

    pub fn clear_log(&self) {
        lock(&self.state.log).clear();
    }

    /// See [`Archive::republish`].
    pub fn republish(&self, key: &str) -> Option<u32> {
        self.state.archive.republish(key)
    }

    /// Replace the fault rules (and reset their request counters).
    pub fn set_faults(&self, faults: Vec<FaultRule>) {
        *lock(&self.state.faults) = faults;
        lock(&self.state.counters).clear();
    }

    pub fn add_fault(&self, fault: FaultRule) {
        lock(&self.state.faults).push(fault);
    }

    /// The simulated now (see [`Archive::now`]).
    pub fn now(&self) -> NaiveDateTime {
        self.state.archive.now()
    }

    /// Move the simulated clock: archive files appear as they get published, REST rows up to
    /// the new now (see [`Archive::set_now`]).
    pub fn set_now(&self, now: NaiveDateTime) {
        self.state.archive.set_now(now);
    }

    /// The REST weight charged so far: the sum over the request log.
    pub fn rest_weight_used(&self) -> u64 {
        lock(&self.state.log).iter().map(|r| r.weight as u64).sum()
    }

    /// REST requests logged so far.
    pub fn rest_requests(&self) -> Vec<RequestRecord> {
        lock(&self.state.log)
            .iter()
            .filter(|r| r.is_rest())
            .cloned()
            .collect()
    }

    #[cfg(test)]
    pub(crate) fn rest(&self) -> &Rest {
        &self.state.rest
    }

    /// Stop accepting, close idle connections, and wait for the accept loop to end.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

struct Request {
    method: String,
    path: String,
    query: String,
    close: bool,
    content_length: usize,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_head(head: &[u8]) -> Option<Request> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let target = first.next()?;
    let version = first.next().unwrap_or("HTTP/1.1");
    let mut close = version == "HTTP/1.0";
    let mut content_length = 0;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        } else if name.eq_ignore_ascii_case("content-length") {
            content_length = value.parse().unwrap_or(0);
        }
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, q),
        None => (target, ""),
    };
    // Absolute-form targets (proxies) keep only the path.
    let path = match path.strip_prefix("http://") {
        Some(rest) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => path,
    };
    Some(Request {
        method,
        path: path.to_string(),
        query: query.to_string(),
        close,
        content_length,
    })
}

async fn serve_conn(
    mut stream: TcpStream,
    st: Arc<State>,
    mut shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        let end = loop {
            if let Some(p) = find(&buf, b"\r\n\r\n") {
                break p + 4;
            }
            if buf.len() > 64 * 1024 {
                return Ok(());
            }
            tokio::select! {
                r = stream.read_buf(&mut buf) => {
                    if r? == 0 {
                        return Ok(());
                    }
                }
                _ = shutdown.changed() => return Ok(()),
            }
        };
        let Some(req) = parse_head(&buf[..end]) else {
            let body = error_xml("BadRequest", "Malformed request", None);
            write_simple(&mut stream, 400, "text/xml", body.as_bytes(), true, &[]).await?;
            return Ok(());
        };
        buf.drain(..end);
        // Discard a request body, if any.
        while buf.len() < req.content_length {
            if stream.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        }
        buf.drain(..req.content_length);
        match handle(&mut stream, &st, &req).await? {
            Conn::Abort => return Ok(()),
            Conn::Close => {
                let _ = stream.shutdown().await;
                return Ok(());
            }
            Conn::Keep => {}
        }
        if req.close {
            let _ = stream.shutdown().await;
            return Ok(());
        }
    }
}

fn status_text(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        418 => "I'm a teapot",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

fn http_date(t: chrono::NaiveDateTime) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

fn head_bytes(
    status: u16,
    len: usize,
    ctype: &str,
    close: bool,
    extra: &[(&str, String)],
) -> Vec<u8> {
    let mut h = format!(
        "HTTP/1.1 {status} {}\r\nServer: AmazonS3\r\nContent-Type: {ctype}\r\nContent-Length: {len}\r\nConnection: {}\r\n",
        status_text(status),
        if close { "close" } else { "keep-alive" }
    );
    for (k, v) in extra {
        h.push_str(k);
        h.push_str(": ");
        h.push_str(v);
        h.push_str("\r\n");
    }
    h.push_str("\r\n");
    h.into_bytes()
}

async fn write_simple(
    stream: &mut TcpStream,
    status: u16,
    ctype: &str,
    body: &[u8],
    send_body: bool,
    extra: &[(&str, String)],
) -> io::Result<u64> {
    let mut out = head_bytes(status, body.len(), ctype, false, extra);
    if send_body {
        out.extend_from_slice(body);
    }
    stream.write_all(&out).await?;
    Ok(if send_body { body.len() as u64 } else { 0 })
}

enum Action {
    Normal,
    Status(u16, &'static str, Vec<(&'static str, String)>),
    Reset,
    Truncated,
    Corrupt,
    WrongChecksum,
    Slow(u64),
}

fn decide(st: &State, key: &str) -> Action {
    let faults = lock(&st.faults).clone();
    let mut counters = lock(&st.counters);
    let mut action = Action::Normal;
    for (i, rule) in faults.iter().enumerate() {
        if !rule.matches(key) {
            continue;
        }
        let n = counters.entry((i, key.to_string())).or_insert(0);
        *n += 1;
        let n = *n;
        if !matches!(action, Action::Normal) {
            continue;
        }
        action = match &rule.kind {
            FaultKind::NotFound => Action::Status(404, "NoSuchKey", vec![]),
            FaultKind::NotFoundFirst { first_n } if n <= *first_n => {
                Action::Status(404, "NoSuchKey", vec![])
            }
            FaultKind::ServerError { first_n } if n <= *first_n => {
                Action::Status(500, "InternalError", vec![])
            }
            FaultKind::TooManyRequests {
                first_n,
                retry_after_secs,
            } if n <= *first_n => Action::Status(
                429,
                "SlowDown",
                vec![("Retry-After", retry_after_secs.to_string())],
            ),
            FaultKind::Banned {
                first_n,
                retry_after_secs,
            } if n <= *first_n => Action::Status(
                418,
                "SlowDown",
                vec![("Retry-After", retry_after_secs.to_string())],
            ),
            FaultKind::Truncated { first_n } if n <= *first_n => Action::Truncated,
            FaultKind::Reset { first_n } if n <= *first_n => Action::Reset,
            FaultKind::CorruptBody { first_n } if n <= *first_n => Action::Corrupt,
            FaultKind::WrongChecksum { first_n }
                if key.ends_with(".CHECKSUM") && first_n.is_none_or(|f| n <= f) =>
            {
                Action::WrongChecksum
            }
            FaultKind::SlowBody { bytes_per_sec } => Action::Slow((*bytes_per_sec).max(1)),
            _ => Action::Normal,
        };
    }
    action
}

/// What happens to the connection after a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Conn {
    Keep,
    /// Close gracefully (FIN).
    Close,
    /// Drop without shutdown: with SO_LINGER 0 the peer sees a reset.
    Abort,
}

/// Handle one request.
async fn handle(stream: &mut TcpStream, st: &Arc<State>, req: &Request) -> io::Result<Conn> {
    let arrived = Instant::now();
    let unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let path = decode_key(&req.path).unwrap_or_else(|_| req.path.clone());
    let path = path.trim_start_matches('/').to_string();
    // Path-style bucket prefix, as on the S3 host.
    let path = path
        .strip_prefix("data.binance.vision")
        .map(|p| p.trim_start_matches('/').to_string())
        .unwrap_or(path);
    let mut rec = RequestRecord {
        method: req.method.clone(),
        path: path.clone(),
        query: req.query.clone(),
        status: 0,
        bytes: 0,
        weight: 0,
        unix_ms,
        at_ms: arrived.duration_since(st.started).as_millis() as u64,
        at: arrived,
    };
    let send_body = req.method != "HEAD";
    let result = if req.method != "GET" && req.method != "HEAD" {
        rec.status = 405;
        let body = error_xml("MethodNotAllowed", "The method is not allowed", None);
        write_simple(
            stream,
            405,
            "application/xml",
            body.as_bytes(),
            send_body,
            &[],
        )
        .await
        .map(|b| (b, Conn::Keep))
    } else if path.is_empty() {
        serve_listing(stream, st, req, send_body, &mut rec).await
    } else if path == "_sim/log" {
        rec.status = 200;
        let body = serde_json::to_vec(&*lock(&st.log)).map_err(io::Error::other)?;
        write_simple(stream, 200, "application/json", &body, send_body, &[])
            .await
            .map(|b| (b, Conn::Keep))
    } else if path == "_sim/clock" {
        let q = query_params(&req.query);
        let (status, body) = match q.get("now").map(|v| parse_instant(v)) {
            Some(Ok(t)) => {
                st.archive.set_now(t);
                (200, format_instant(t))
            }
            Some(Err(e)) => (400, e),
            None => (200, format_instant(st.archive.now())),
        };
        rec.status = status;
        write_simple(
            stream,
            status,
            "text/plain",
            body.as_bytes(),
            send_body,
            &[],
        )
        .await
        .map(|b| (b, Conn::Keep))
    } else if rest::is_rest_path(&path) {
        serve_rest(stream, st, req, &path, send_body, &mut rec).await
    } else if path == "_sim/republish" {
        let q = query_params(&req.query);
        let v = q.get("key").and_then(|k| st.archive.republish(k));
        rec.status = if v.is_some() { 200 } else { 404 };
        let body = v.map_or_else(|| "unknown key".to_string(), |v| v.to_string());
        write_simple(
            stream,
            rec.status,
            "text/plain",
            body.as_bytes(),
            send_body,
            &[],
        )
        .await
        .map(|b| (b, Conn::Keep))
    } else {
        serve_object(stream, st, &path, send_body, &mut rec).await
    };
    let outcome = match result {
        Ok((bytes, keep)) => {
            rec.bytes = bytes;
            Ok(keep)
        }
        Err(e) => Err(e),
    };
    lock(&st.log).push(rec);
    outcome
}

async fn serve_listing(
    stream: &mut TcpStream,
    st: &Arc<State>,
    req: &Request,
    send_body: bool,
    rec: &mut RequestRecord,
) -> io::Result<(u64, Conn)> {
    let q = query_params(&req.query);
    let page_size = st.archive.config().page_size.max(1);
    let max_keys = q
        .get("max-keys")
        .and_then(|m| m.parse::<usize>().ok())
        .unwrap_or(page_size)
        .clamp(1, page_size.min(1000));
    let lr = ListRequest {
        prefix: q.get("prefix").cloned().unwrap_or_default(),
        delimiter: q.get("delimiter").cloned().filter(|d| !d.is_empty()),
        marker: q.get("marker").cloned().filter(|m| !m.is_empty()),
        max_keys,
        url_encoding: q.get("encoding-type").is_some_and(|e| e == "url"),
    };
    let archive = st.archive.clone();
    let lr2 = lr.clone();
    let page = tokio::task::spawn_blocking(move || {
        archive.list(
            &lr2.prefix,
            lr2.delimiter.as_deref(),
            lr2.marker.as_deref(),
            lr2.max_keys,
        )
    })
    .await
    .map_err(io::Error::other)?;
    match page {
        Ok(page) => {
            rec.status = 200;
            let body = list_xml(&lr, &page);
            write_simple(
                stream,
                200,
                "application/xml",
                body.as_bytes(),
                send_body,
                &[],
            )
            .await
            .map(|b| (b, Conn::Keep))
        }
        Err(e) => {
            rec.status = 500;
            let body = error_xml("InternalError", &e.to_string(), None);
            write_simple(
                stream,
                500,
                "application/xml",
                body.as_bytes(),
                send_body,
                &[],
            )
            .await
            .map(|b| (b, Conn::Keep))
        }
    }
}

async fn serve_object(
    stream: &mut TcpStream,
    st: &Arc<State>,
    key: &str,
    send_body: bool,
    rec: &mut RequestRecord,
) -> io::Result<(u64, Conn)> {
    let action = decide(st, key);
    let not_found = |rec: &mut RequestRecord| {
        rec.status = 404;
        error_xml("NoSuchKey", "The specified key does not exist.", Some(key))
    };
    match action {
        Action::Reset => {
            rec.status = 0;
            let _ = stream.set_zero_linger();
            // Dropping the socket with SO_LINGER 0 sends RST; the caller closes it.
            return Ok((0, Conn::Abort));
        }
        Action::Status(code, s3code, extra) => {
            rec.status = code;
            let msg = match code {
                404 => "The specified key does not exist.",
                429 => "Please reduce your request rate.",
                _ => "We encountered an internal error. Please try again.",
            };
            let body = error_xml(s3code, msg, Some(key));
            return write_simple(
                stream,
                code,
                "application/xml",
                body.as_bytes(),
                send_body,
                &extra,
            )
            .await
            .map(|b| (b, Conn::Keep));
        }
        _ => {}
    }
    if !st.archive.exists(key) {
        let body = not_found(rec);
        return write_simple(
            stream,
            404,
            "application/xml",
            body.as_bytes(),
            send_body,
            &[],
        )
        .await
        .map(|b| (b, Conn::Keep));
    }
    let obj = match st.archive.cached_object(key) {
        Some(o) => Ok(Some(o)),
        None => {
            let archive = st.archive.clone();
            let k = key.to_string();
            tokio::task::spawn_blocking(move || archive.object(&k))
                .await
                .map_err(io::Error::other)?
        }
    };
    let Object { meta, mut body } = match obj {
        Ok(Some(o)) => o,
        Ok(None) => {
            let body = not_found(rec);
            return write_simple(
                stream,
                404,
                "application/xml",
                body.as_bytes(),
                send_body,
                &[],
            )
            .await
            .map(|b| (b, Conn::Keep));
        }
        Err(e) => {
            rec.status = 500;
            let body = error_xml("InternalError", &e.to_string(), Some(key));
            return write_simple(
                stream,
                500,
                "application/xml",
                body.as_bytes(),
                send_body,
                &[],
            )
            .await
            .map(|b| (b, Conn::Keep));
        }
    };
    let mut md5_hex = meta.md5_hex.clone();
    match action {
        Action::WrongChecksum => {
            let text = String::from_utf8_lossy(&body).into_owned();
            let wrong = hex::encode(Sha256::digest(format!("wrong:{key}").as_bytes()));
            let fixed = match text.split_once("  ") {
                Some((_, rest)) => format!("{wrong}  {rest}"),
                None => wrong,
            };
            body = Bytes::from(fixed);
            md5_hex = hex::encode(Md5::digest(&body));
        }
        Action::Corrupt => {
            body = corrupt(&body);
            md5_hex = hex::encode(Md5::digest(&body));
        }
        _ => {}
    }
    rec.status = 200;
    let ctype = if key.ends_with(".CHECKSUM") {
        "binary/octet-stream"
    } else {
        "application/zip"
    };
    let extra = [
        ("ETag", format!("\"{md5_hex}\"")),
        ("Last-Modified", http_date(meta.last_modified)),
        ("Accept-Ranges", "none".to_string()),
    ];
    let head = head_bytes(200, body.len(), ctype, false, &extra);
    write_body(stream, head, &body, send_body, &action).await
}

/// The same length with some bytes flipped.
fn corrupt(body: &[u8]) -> Bytes {
    let mut v = body.to_vec();
    let n = v.len();
    for i in 0..16.min(n) {
        let p = n / 2 + i * 7 % n.max(1);
        if p < n {
            v[p] ^= 0x5A;
        }
    }
    Bytes::from(v)
}

/// Write a response head and its body as the fault action says: whole, half then close, or
/// throttled.
async fn write_body(
    stream: &mut TcpStream,
    head: Vec<u8>,
    body: &[u8],
    send_body: bool,
    action: &Action,
) -> io::Result<(u64, Conn)> {
    if !send_body {
        stream.write_all(&head).await?;
        return Ok((0, Conn::Keep));
    }
    match *action {
        Action::Truncated => {
            stream.write_all(&head).await?;
            let half = body.len() / 2;
            stream.write_all(&body[..half]).await?;
            stream.flush().await?;
            Ok((half as u64, Conn::Close))
        }
        Action::Slow(rate) => {
            stream.write_all(&head).await?;
            let tick = Duration::from_millis(50);
            let per_tick = ((rate as f64) * tick.as_secs_f64()).ceil().max(1.0) as usize;
            let start = Instant::now();
            let mut sent = 0usize;
            while sent < body.len() {
                let n = per_tick.min(body.len() - sent);
                stream.write_all(&body[sent..sent + n]).await?;
                sent += n;
                let due = Duration::from_secs_f64(sent as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(start.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
            Ok((sent as u64, Conn::Keep))
        }
        _ => {
            if body.len() <= 64 * 1024 {
                let mut out = head;
                out.extend_from_slice(body);
                stream.write_all(&out).await?;
            } else {
                stream.write_all(&head).await?;
                stream.write_all(body).await?;
            }
            Ok((body.len() as u64, Conn::Keep))
        }
    }
}

/// A REST request: injected faults first, then the limiter and the endpoint (`rest`), framed
/// as JSON with `X-MBX-USED-WEIGHT-1M` (and `Retry-After` on 429/418).
async fn serve_rest(
    stream: &mut TcpStream,
    st: &Arc<State>,
    req: &Request,
    path: &str,
    send_body: bool,
    rec: &mut RequestRecord,
) -> io::Result<(u64, Conn)> {
    let ip = stream
        .peer_addr()
        .map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |a| a.ip());
    let action = decide(st, path);
    let reply = match &action {
        Action::Reset => {
            rec.status = 0;
            let _ = stream.set_zero_linger();
            return Ok((0, Conn::Abort));
        }
        Action::Status(code, _, extra) => {
            let retry = extra
                .iter()
                .find(|(k, _)| *k == "Retry-After")
                .and_then(|(_, v)| v.parse().ok());
            st.rest.fault_reply(&st.archive, path, *code, retry, ip)
        }
        _ => {
            let (st2, p, q) = (st.clone(), path.to_string(), req.query.clone());
            tokio::task::spawn_blocking(move || st2.rest.serve(&st2.archive, &p, &q, ip))
                .await
                .map_err(io::Error::other)?
        }
    };
    rec.status = reply.status;
    rec.weight = reply.weight;
    let body = match action {
        Action::Corrupt => corrupt(&reply.body),
        _ => Bytes::from(reply.body),
    };
    let mut extra = vec![("X-MBX-USED-WEIGHT-1M", reply.used_weight.to_string())];
    if let Some(r) = reply.retry_after {
        extra.push(("Retry-After", r.to_string()));
    }
    let head = head_bytes(reply.status, body.len(), "application/json", false, &extra);
    write_body(stream, head, &body, send_body, &action).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{FaultTarget, SimConfig};
    use chrono::NaiveDate;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    struct Resp {
        status: u16,
        headers: String,
        body: Vec<u8>,
        /// The body ended before Content-Length, or the connection errored.
        short: bool,
        reset: bool,
    }

    async fn send(s: &mut TcpStream, method: &str, target: &str) -> Resp {
        let req = format!("{method} {target} HTTP/1.1\r\nHost: x\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let mut reset = false;
        let end = loop {
            if let Some(p) = find(&buf, b"\r\n\r\n") {
                break Some(p + 4);
            }
            match s.read_buf(&mut buf).await {
                Ok(0) => break None,
                Ok(_) => {}
                Err(e) => {
                    reset = e.kind() == io::ErrorKind::ConnectionReset;
                    break None;
                }
            }
        };
        let Some(end) = end else {
            return Resp {
                status: 0,
                headers: String::new(),
                body: vec![],
                short: true,
                reset,
            };
        };
        let headers = String::from_utf8_lossy(&buf[..end]).into_owned();
        let status = headers[9..12].parse().unwrap();
        let len: usize = headers
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let mut body = buf[end..].to_vec();
        let want = if method == "HEAD" { 0 } else { len };
        let mut short = false;
        while body.len() < want {
            let mut chunk = vec![0; 65536];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => {
                    short = true;
                    break;
                }
                Ok(n) => body.extend_from_slice(&chunk[..n]),
            }
        }
        Resp {
            status,
            headers,
            body,
            short,
            reset,
        }
    }

    /// The requests matching `f` once `want` of them are logged (or 2 s passed): a request is
    /// logged after its response is written, so a client can read the response first.
    async fn logged(sim: &SimHandle, want: usize, f: impl Fn(&RequestRecord) -> bool) -> usize {
        for _ in 0..200 {
            if sim.count(&f) >= want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        sim.count(&f)
    }

    async fn get(base: SocketAddr, target: &str) -> Resp {
        let mut s = TcpStream::connect(base).await.unwrap();
        send(&mut s, "GET", target).await
    }

    const DAY: &str = "data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-12-30.zip";

    fn config() -> SimConfig {
        let mut c = SimConfig::demo().with_range(d("2024-12-29"), d("2025-01-05"));
        c.trades_per_minute = (1, 3);
        c.page_size = 3;
        c
    }

    fn key(day: u32) -> String {
        DAY.replace("2024-12-30", &format!("2025-01-0{day}"))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serves_objects_listing_and_keep_alive() {
        let sim = SimServer::start(config(), 0).await.unwrap();
        let archive = sim.archive_arc();
        let mut s = TcpStream::connect(sim.addr()).await.unwrap();
        let r = send(&mut s, "GET", &format!("/{DAY}")).await;
        assert_eq!(r.status, 200);
        let zip = archive.zip_bytes(DAY).unwrap().unwrap();
        assert_eq!(r.body, zip.to_vec());
        let etag = format!("ETag: \"{}\"", hex::encode(Md5::digest(&zip)));
        assert!(r.headers.contains(&etag), "{}", r.headers);
        assert!(r.headers.contains("Last-Modified: "));
        // Same connection: HEAD, the CHECKSUM (spot: no newline), a 404, the listing.
        let h = send(&mut s, "HEAD", &format!("/{DAY}")).await;
        assert_eq!(h.status, 200);
        assert!(
            h.headers
                .contains(&format!("Content-Length: {}", zip.len()))
        );
        let c = send(&mut s, "GET", &format!("/{DAY}.CHECKSUM")).await;
        assert!(!c.body.ends_with(b"\n") && c.body.len() == 64 + 2 + 25);
        let n = send(&mut s, "GET", "/data/spot/daily/klines/BTCUSDT/1m/nope.zip").await;
        assert_eq!(n.status, 404);
        assert!(String::from_utf8_lossy(&n.body).contains("<Code>NoSuchKey</Code>"));
        let l = send(
            &mut s,
            "GET",
            "/?prefix=data/futures/um/daily/trades/&delimiter=/",
        )
        .await;
        let xml = String::from_utf8_lossy(&l.body).into_owned();
        assert!(xml.contains("xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\""));
        assert!(xml.contains("<Prefix>data/futures/um/daily/trades/</Prefix>"));
        assert!(
            xml.contains("<IsTruncated>true</IsTruncated>"),
            "page size 3: {xml}"
        );
        assert!(xml.contains("<NextMarker>data/futures/um/daily/trades/FTTUSDT/</NextMarker>"));
        assert!(
            xml.contains("FTTUSDT/</Prefix></CommonPrefixes>"),
            "delisted listed"
        );
        let l2 = send(
            &mut s,
            "GET",
            "/?prefix=data/futures/um/daily/trades/BTCUSDT/&delimiter=/&max-keys=2",
        )
        .await;
        let xml = String::from_utf8_lossy(&l2.body).into_owned();
        assert!(xml.contains("<ETag>&quot;"), "{xml}");
        assert!(xml.contains("<StorageClass>STANDARD</StorageClass>"));
        // UTF-8 keys are percent-decoded.
        assert_eq!(
            logged(&sim, 3, |r| r.path.contains(DAY)).await,
            3,
            "GET, HEAD and the CHECKSUM"
        );
        assert_eq!(logged(&sim, 2, |r| r.path.is_empty()).await, 2);
        let log = get(sim.addr(), "/_sim/log").await;
        assert!(String::from_utf8_lossy(&log.body).contains("\"status\":404"));
        sim.clear_log();
        assert!(sim.requests().is_empty());
        sim.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn utf8_symbols_round_trip() {
        let mut c = config();
        c.symbols = vec![crate::config::SymbolSpec::new(
            shared::paths::Market::Um,
            "币安人生USDT",
            d("2024-12-01"),
            0.2,
        )];
        let sim = SimServer::start(c, 0).await.unwrap();
        let key = "data/futures/um/daily/trades/币安人生USDT/币安人生USDT-trades-2025-01-01.zip";
        let r = get(sim.addr(), &format!("/{}", encode_key(key))).await;
        assert_eq!(r.status, 200);
        assert_eq!(logged(&sim, 1, |r| r.path.contains(key)).await, 1);
        sim.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_fault_kind_over_tcp() {
        let mut c = config();
        let rule = |k: String, target, kind| FaultRule {
            key_contains: k,
            exact: true,
            target,
            kind,
        };
        c.faults = vec![
            rule(key(1), FaultTarget::Zip, FaultKind::NotFound),
            rule(
                key(2),
                FaultTarget::Zip,
                FaultKind::ServerError { first_n: 2 },
            ),
            rule(
                key(3),
                FaultTarget::Both,
                FaultKind::TooManyRequests {
                    first_n: 1,
                    retry_after_secs: 7,
                },
            ),
            rule(
                DAY.to_string(),
                FaultTarget::Zip,
                FaultKind::Truncated { first_n: 1 },
            ),
            rule(
                DAY.replace("klines", "x").replace("/1m/", "/"),
                FaultTarget::Zip,
                FaultKind::NotFound,
            ),
            FaultRule::new(
                "BTCUSDT-1m-2024-12-31",
                FaultTarget::Zip,
                FaultKind::Reset { first_n: 1 },
            ),
            FaultRule::new(
                "BTCUSDT-1m-2024-12-29",
                FaultTarget::Checksum,
                FaultKind::WrongChecksum { first_n: Some(1) },
            ),
            FaultRule::new(
                "BTCUSDT-5m-2024-12-29",
                FaultTarget::Zip,
                FaultKind::CorruptBody { first_n: 1 },
            ),
            FaultRule::new(
                "BTCUSDT-1h-2024-12-29",
                FaultTarget::Zip,
                FaultKind::SlowBody {
                    bytes_per_sec: 40_000,
                },
            ),
        ];
        let sim = SimServer::start(c, 0).await.unwrap();
        let a = sim.archive_arc();
        let addr = sim.addr();
        // NotFound: always, though listed.
        assert!(a.exists(&key(1)));
        for _ in 0..2 {
            assert_eq!(get(addr, &format!("/{}", key(1))).await.status, 404);
        }
        assert_eq!(
            get(addr, &format!("/{}.CHECKSUM", key(1))).await.status,
            200
        );
        // ServerError: 500, 500, then 200.
        let st: Vec<u16> = [0; 3].iter().map(|_| 0).collect();
        let mut got = Vec::new();
        for _ in st {
            got.push(get(addr, &format!("/{}", key(2))).await.status);
        }
        assert_eq!(got, [500, 500, 200]);
        // TooManyRequests with Retry-After, on zip and CHECKSUM, counted per key.
        let r = get(addr, &format!("/{}", key(3))).await;
        assert_eq!(r.status, 429);
        assert!(r.headers.contains("Retry-After: 7"));
        assert_eq!(
            get(addr, &format!("/{}.CHECKSUM", key(3))).await.status,
            429
        );
        assert_eq!(get(addr, &format!("/{}", key(3))).await.status, 200);
        // Truncated: full Content-Length, half the body, then EOF.
        let t = get(addr, &format!("/{DAY}")).await;
        assert!(t.status == 200 && t.short);
        assert_eq!(t.body.len(), a.zip_bytes(DAY).unwrap().unwrap().len() / 2);
        assert!(!get(addr, &format!("/{DAY}")).await.short);
        // Reset: no response, RST.
        let k31 = DAY.replace("2024-12-30", "2024-12-31");
        let r = get(addr, &format!("/{k31}")).await;
        assert_eq!(r.status, 0);
        assert!(r.reset, "expected a connection reset");
        assert_eq!(get(addr, &format!("/{k31}")).await.status, 200);
        // WrongChecksum: once, same length, then right.
        let k29 = DAY.replace("2024-12-30", "2024-12-29");
        let right = a.checksum(&k29).unwrap().unwrap();
        let w = get(addr, &format!("/{k29}.CHECKSUM")).await;
        assert_eq!(w.body.len(), right.len());
        assert_ne!(w.body, right.as_bytes());
        assert_eq!(
            get(addr, &format!("/{k29}.CHECKSUM")).await.body,
            right.as_bytes()
        );
        // CorruptBody: same length, different bytes, then right.
        let k5 = "data/spot/daily/klines/BTCUSDT/5m/BTCUSDT-5m-2024-12-29.zip";
        let good = a.zip_bytes(k5).unwrap().unwrap();
        let bad = get(addr, &format!("/{k5}")).await;
        assert_eq!(bad.body.len(), good.len());
        assert_ne!(bad.body, good.to_vec());
        assert_eq!(get(addr, &format!("/{k5}")).await.body, good.to_vec());
        // SlowBody: throttled.
        let kh = "data/spot/daily/klines/BTCUSDT/1h/BTCUSDT-1h-2024-12-29.zip";
        let size = a.zip_bytes(kh).unwrap().unwrap().len();
        let t0 = Instant::now();
        let s = get(addr, &format!("/{kh}")).await;
        assert_eq!(s.body.len(), size);
        let want = Duration::from_secs_f64(size as f64 / 40_000.0 * 0.8);
        assert!(t0.elapsed() >= want, "{:?} < {want:?}", t0.elapsed());
        // Republish through the HTTP hook: new bytes, CHECKSUM follows.
        let before = get(addr, &format!("/{k5}")).await.body;
        assert_eq!(
            get(addr, &format!("/_sim/republish?key={k5}")).await.status,
            200
        );
        let after = get(addr, &format!("/{k5}")).await.body;
        assert_ne!(before, after);
        let ck = get(addr, &format!("/{k5}.CHECKSUM")).await.body;
        let sha = hex::encode(Sha256::digest(&after));
        assert!(String::from_utf8_lossy(&ck).starts_with(&sha));
        assert_eq!(sim.count(|r| r.status == 0), 1);
        sim.shutdown().await;
    }
}
