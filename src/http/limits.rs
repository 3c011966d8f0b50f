//! Abuse limits (DESIGN §6): connections per client IP, stream handshakes per IP,
//! requests per IP, ingested events per token, and request bodies (a cap per route
//! and one budget for the bytes of every body being received).
//!
//! Owns the counters, token buckets and the body budget; every one is bounded in the
//! number of keys it tracks. Over a rate or connection limit the caller gets 429 with
//! `Retry-After`, and the refusal is logged once per key and limit until that key is
//! back under it; over the body budget, 503 with `Retry-After`. A limit of 0 switches
//! that limit off (a load test from one loopback address needs that).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, HttpBody};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use hyper::body::{Frame, SizeHint};

use super::AppState;
use super::error::ApiError;
use crate::auth::Principal;
use crate::config::Limits;

/// Cap on the body of `/login` and `/logout`: a form with a token or a login code and
/// a local path to return to fits in well under 1 KiB.
pub(crate) const FORM_MAX_BODY_BYTES: usize = 4 * 1024;
/// Cap on every other body that is not ingest: coordinator commands, admin requests
/// (tokens, sessions), and whatever route is added without a class of its own, so a
/// new route is small by default.
pub(crate) const COMMAND_MAX_BODY_BYTES: usize = 64 * 1024;
/// Seconds a client is asked to wait when the body budget is spent: bodies in flight
/// finish or time out within the body timeout, most within a second.
const BODY_BUDGET_RETRY_SECS: u64 = 1;
/// Most keys (IPs or tokens) one limiter tracks; beyond it, idle keys are swept, and
/// if none is idle, new keys are refused rather than tracked without bound.
const MAX_TRACKED_KEYS: usize = 100_000;

/// A refusal: which limit, and when to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverLimit {
    pub limit: &'static str,
    pub retry_after: Duration,
}

impl OverLimit {
    /// Whole seconds for `Retry-After`, at least 1.
    pub fn retry_secs(&self) -> u64 {
        self.retry_after.as_secs_f64().ceil().max(1.0) as u64
    }
}

impl From<OverLimit> for ApiError {
    fn from(o: OverLimit) -> Self {
        ApiError {
            retry_after: Some(o.retry_secs()),
            ..ApiError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("over the {} limit; retry later", o.limit),
            )
        }
    }
}

struct Bucket {
    tokens: f64,
    last: Instant,
    /// Whether the current refusal streak was logged.
    logged: bool,
}

/// Token buckets keyed by `K`: `rate` per second, bursts up to `rate` (at least `cost`).
pub struct RateLimiter<K> {
    name: &'static str,
    rate: f64,
    /// Locked only for one map operation, never across an await.
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Hash + Eq + Clone + std::fmt::Debug> RateLimiter<K> {
    pub fn new(name: &'static str, per_sec: u32) -> Self {
        RateLimiter { name, rate: f64::from(per_sec), buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes `cost` tokens for `key`.
    ///
    /// # Errors
    /// [`OverLimit`] with the time until `cost` tokens are available.
    pub fn check(&self, key: &K, cost: u32) -> Result<(), OverLimit> {
        if self.rate == 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let cost = f64::from(cost);
        // A single request larger than the burst may still pass once the bucket is full.
        let burst = self.rate.max(cost);
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_TRACKED_KEYS && !buckets.contains_key(key) {
            // Forget keys whose bucket has refilled: they are indistinguishable from new.
            let rate = self.rate;
            buckets.retain(|_, b| b.tokens + now.duration_since(b.last).as_secs_f64() * rate < burst);
            if buckets.len() >= MAX_TRACKED_KEYS {
                return Err(OverLimit { limit: self.name, retry_after: Duration::from_secs(1) });
            }
        }
        let bucket = buckets.entry(key.clone()).or_insert(Bucket { tokens: burst, last: now, logged: false });
        bucket.tokens = (bucket.tokens + now.duration_since(bucket.last).as_secs_f64() * self.rate).min(burst);
        bucket.last = now;
        if bucket.tokens >= cost {
            bucket.tokens -= cost;
            bucket.logged = false;
            Ok(())
        } else {
            if !bucket.logged {
                bucket.logged = true;
                tracing::warn!(limit = self.name, key = ?key, "rate limit reached; refusing until it recovers");
            }
            Err(OverLimit {
                limit: self.name,
                retry_after: Duration::from_secs_f64((cost - bucket.tokens) / self.rate),
            })
        }
    }
}

/// Open connections, per client IP and in all.
pub struct ConnCounter {
    per_ip: u32,
    total: u32,
    /// Locked only to count, never across an await.
    open: Mutex<(u32, HashMap<IpAddr, u32>)>,
}

/// Holds one connection's place; gives it back when dropped.
pub struct ConnSlot {
    counter: Arc<ConnCounter>,
    ip: IpAddr,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut open = self.counter.open.lock().unwrap_or_else(|p| p.into_inner());
        open.0 = open.0.saturating_sub(1);
        if let Some(n) = open.1.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.ip);
            }
        }
    }
}

impl ConnCounter {
    pub fn new(limits: &Limits) -> Arc<Self> {
        Arc::new(ConnCounter { per_ip: limits.max_conns_per_ip, total: limits.max_connections, open: Mutex::default() })
    }

    /// Admits a new connection from `ip`, or says which limit it is over.
    ///
    /// # Errors
    /// [`OverLimit`] for the per-IP or the total cap.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnSlot, OverLimit> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if self.total > 0 && open.0 >= self.total {
            return Err(OverLimit { limit: "max-connections", retry_after: Duration::from_secs(1) });
        }
        let mine = open.1.get(&ip).copied().unwrap_or(0);
        if self.per_ip > 0 && mine >= self.per_ip {
            return Err(OverLimit { limit: "max-conns-per-ip", retry_after: Duration::from_secs(1) });
        }
        open.0 += 1;
        open.1.insert(ip, mine + 1);
        Ok(ConnSlot { counter: Arc::clone(self), ip })
    }

    /// Connections open now.
    pub fn open(&self) -> u32 {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).0
    }
}

/// The per-request limiters, shared through the app state.
pub struct Limiters {
    pub requests: RateLimiter<IpAddr>,
    pub handshakes: RateLimiter<IpAddr>,
    pub ingest: RateLimiter<String>,
    /// The bytes of request bodies being received, against `--max-inflight-body-bytes`.
    pub bodies: Arc<BodyBudget>,
}

impl Limiters {
    pub fn new(limits: &Limits) -> Self {
        Limiters {
            requests: RateLimiter::new("requests-per-ip-per-sec", limits.requests_per_ip_per_sec),
            handshakes: RateLimiter::new("handshakes-per-ip-per-sec", limits.handshakes_per_ip_per_sec),
            ingest: RateLimiter::new("ingest-rate-per-token", limits.ingest_rate_per_token),
            bodies: Arc::new(BodyBudget::new(limits.max_inflight_body_bytes)),
        }
    }

    /// Charges `events` to the caller's token.
    ///
    /// # Errors
    /// [`OverLimit`] when the token is over its ingest rate.
    pub fn ingest(&self, principal: &Principal, events: usize) -> Result<(), OverLimit> {
        self.ingest.check(&principal.token_id, u32::try_from(events).unwrap_or(u32::MAX))
    }
}

/// A stream handshake: a WebSocket upgrade or an event-stream request.
fn is_handshake(request: &Request) -> bool {
    request.method() == Method::GET
        && (request
            .headers()
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
            || request.uri().path() == "/api/stream")
}

/// Middleware: the per-IP request and handshake rates.
pub(crate) async fn per_ip(State(state): State<AppState>, request: Request, next: Next) -> Result<Response, ApiError> {
    if let Some(ConnectInfo(addr)) = request.extensions().get::<ConnectInfo<SocketAddr>>().copied() {
        state.limiters.requests.check(&addr.ip(), 1)?;
        if is_handshake(&request) {
            state.limiters.handshakes.check(&addr.ip(), 1)?;
        }
    }
    Ok(next.run(request).await)
}

/// The bytes held by request bodies being received, under one cap, so that many slow
/// bodies cannot add up to more memory than the operator granted (DESIGN §6).
///
/// A body with a `Content-Length` reserves all of it before a byte is read (its
/// sender learns at once, not after uploading, that there is no room); a chunked body
/// is charged as its chunks arrive. Either is given back when the body is dropped: when
/// the handler has collected it, or the request ended early.
pub struct BodyBudget {
    /// 0 = no cap (only counted).
    max: usize,
    held: AtomicUsize,
}

/// Bytes of the budget held by one body; returned when dropped.
pub struct Charge {
    budget: Arc<BodyBudget>,
    held: usize,
}

impl BodyBudget {
    pub fn new(max: usize) -> Self {
        BodyBudget { max, held: AtomicUsize::new(0) }
    }

    /// Bytes held now by all bodies.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }

    fn try_add(&self, n: usize) -> bool {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(n).filter(|total| self.max == 0 || *total <= self.max)
            })
            .is_ok()
    }

    /// Reserves `n` bytes, or `None` when they do not fit.
    pub fn reserve(self: &Arc<Self>, n: usize) -> Option<Charge> {
        self.try_add(n).then(|| Charge { budget: Arc::clone(self), held: n })
    }
}

impl Charge {
    /// Adds `n` bytes to this charge; `false` (and nothing added) when they do not fit.
    fn grow(&mut self, n: usize) -> bool {
        let fits = self.budget.try_add(n);
        if fits {
            self.held += n;
        }
        fits
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.held.fetch_sub(self.held, Ordering::AcqRel);
    }
}

/// Most bytes a request body to `path` may have. Only ingest gets the large,
/// configurable cap; forms get a few KiB; everything else, commands and admin
/// requests and any route added later, 64 KiB. A new ingest route must be named here
/// to get the large cap, as OTLP's are.
pub(crate) fn body_limit(method: &Method, path: &str, ingest_max: usize) -> usize {
    match path {
        "/api/events" | "/v1/traces" | "/v1/logs" if method == Method::POST => ingest_max,
        "/login" | "/logout" => FORM_MAX_BODY_BYTES,
        _ => COMMAND_MAX_BODY_BYTES,
    }
}

/// Why [`Metered`] cut a body short; read back by [`bodies`] to answer the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum BodyRefused {
    #[error("request body is larger than this route's limit of {0} bytes")]
    TooLarge(usize),
    #[error("the server holds as many request bodies as it may; retry later")]
    OverBudget,
}

impl From<BodyRefused> for ApiError {
    fn from(refused: BodyRefused) -> Self {
        match refused {
            BodyRefused::TooLarge(_) => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", refused.to_string())
            }
            BodyRefused::OverBudget => {
                ApiError::unavailable("server_busy", refused.to_string(), BODY_BUDGET_RETRY_SECS)
            }
        }
    }
}

/// A request body under its route's cap and the body budget.
struct Metered {
    inner: Body,
    limit: usize,
    received: usize,
    /// Whether `charge` already covers the declared length (else each chunk is charged).
    reserved: bool,
    charge: Charge,
    /// Set once, when the body is cut; the middleware turns it into the answer, whatever
    /// the handler's extractor made of the error.
    refused: Arc<OnceLock<BodyRefused>>,
}

impl HttpBody for Metered {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            other => return other,
        };
        if let Some(data) = frame.data_ref() {
            this.received = this.received.saturating_add(data.len());
            let refused = if this.received > this.limit {
                Some(BodyRefused::TooLarge(this.limit))
            } else if !this.reserved && !this.charge.grow(data.len()) {
                Some(BodyRefused::OverBudget)
            } else {
                None
            };
            if let Some(refused) = refused {
                // The first refusal is the one that counts; a later poll cannot set another.
                let _ = this.refused.set(refused);
                return Poll::Ready(Some(Err(axum::Error::new(refused))));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Middleware: each request body under its route's cap ([`body_limit`]) and the body
/// budget. A declared length over the cap is refused before a byte of the body is
/// read; so is one the budget has no room for.
pub(crate) async fn bodies(State(state): State<AppState>, request: Request, next: Next) -> Result<Response, ApiError> {
    if request.body().is_end_stream() {
        // No body (every GET, every upgrade): nothing to cap or to hold.
        return Ok(next.run(request).await);
    }
    let limit = body_limit(request.method(), request.uri().path(), state.config.max_body_bytes);
    let declared =
        request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if let Some(length) = declared
        && length > limit as u64
    {
        return Err(BodyRefused::TooLarge(limit).into());
    }
    // `declared <= limit` here, so it fits in a usize.
    let reserve = declared.map_or(0, |length| length as usize);
    let Some(charge) = state.limiters.bodies.reserve(reserve) else {
        tracing::debug!(reserve, held = state.limiters.bodies.held(), "body budget spent; refusing a body");
        return Err(BodyRefused::OverBudget.into());
    };
    let refused = Arc::new(OnceLock::new());
    let request = request.map(|inner| {
        Body::new(Metered {
            inner,
            limit,
            received: 0,
            reserved: declared.is_some(),
            charge,
            refused: Arc::clone(&refused),
        })
    });
    let response = next.run(request).await;
    match refused.get() {
        Some(refused) => Err((*refused).into()),
        None => Ok(response),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_budget_reserves_grows_and_gives_back_on_drop() {
        let budget = Arc::new(BodyBudget::new(100));
        let a = budget.reserve(60).unwrap();
        assert!(budget.reserve(41).is_none(), "over the cap");
        let mut b = budget.reserve(40).unwrap();
        assert!(!b.grow(1), "a chunk that does not fit is not charged");
        assert_eq!(budget.held(), 100);
        drop(a);
        assert!(b.grow(60));
        drop(b);
        assert_eq!(budget.held(), 0, "everything given back");
        let unlimited = Arc::new(BodyBudget::new(0));
        assert!(unlimited.reserve(usize::MAX / 2).is_some());
    }

    #[test]
    fn only_ingest_gets_the_large_body_cap() {
        assert_eq!(body_limit(&Method::POST, "/api/events", 1 << 24), 1 << 24);
        assert_eq!(body_limit(&Method::POST, "/v1/traces", 1 << 24), 1 << 24);
        assert_eq!(body_limit(&Method::POST, "/v1/logs", 1 << 24), 1 << 24);
        assert_eq!(body_limit(&Method::POST, "/login", 1 << 24), FORM_MAX_BODY_BYTES);
        assert_eq!(body_limit(&Method::POST, "/logout", 1 << 24), FORM_MAX_BODY_BYTES);
        assert_eq!(body_limit(&Method::POST, "/swarm/tasks", 1 << 24), COMMAND_MAX_BODY_BYTES);
        assert_eq!(body_limit(&Method::POST, "/api/tokens", 1 << 24), COMMAND_MAX_BODY_BYTES);
        assert_eq!(body_limit(&Method::PUT, "/api/events", 1 << 24), COMMAND_MAX_BODY_BYTES);
        assert_eq!(body_limit(&Method::POST, "/api/sessions", 1 << 24), COMMAND_MAX_BODY_BYTES, "new routes are small");
    }

    #[test]
    fn a_bucket_allows_its_rate_then_refuses_with_a_retry_time() {
        let l = RateLimiter::new("test", 5);
        for _ in 0..5 {
            assert!(l.check(&1, 1).is_ok());
        }
        let over = l.check(&1, 1).unwrap_err();
        assert_eq!(over.limit, "test");
        assert!(over.retry_after <= Duration::from_millis(200));
        assert_eq!(over.retry_secs(), 1);
        assert!(l.check(&2, 1).is_ok(), "keys are independent");
    }

    #[test]
    fn zero_means_no_limit() {
        let l = RateLimiter::new("off", 0);
        for _ in 0..10_000 {
            assert!(l.check(&1, 1000).is_ok());
        }
    }

    #[test]
    fn a_cost_larger_than_the_rate_passes_once_from_a_full_bucket() {
        let l = RateLimiter::new("ingest", 100);
        assert!(l.check(&"t", 1000).is_ok());
        assert!(l.check(&"t", 1).is_err());
    }

    #[test]
    fn connections_are_capped_per_ip_and_released_on_drop() {
        let c = ConnCounter::new(&Limits { max_conns_per_ip: 2, max_connections: 3, ..Limits::default() });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let s1 = c.admit(a).unwrap();
        let _s2 = c.admit(a).unwrap();
        assert_eq!(c.admit(a).err().unwrap().limit, "max-conns-per-ip");
        let _s3 = c.admit(b).unwrap();
        assert_eq!(c.admit(b).err().unwrap().limit, "max-connections");
        drop(s1);
        assert!(c.admit(a).is_ok());
    }
}
