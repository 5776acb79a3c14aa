//! The SymProxy-compatible HTTP front: debuggers fetch through the agent with a symbol path
//! such as `srv*C:\Symbols*http://127.0.0.1:8775`.
//!
//! Data flow for `GET|HEAD /<name>/<index>/<file>` (or the two-tier form, under an optional
//! virtual-directory prefix):
//! 1. the path is parsed into a key and form (`layout::parse_request_path`); anything else is
//!    400 with nothing touched;
//! 2. the front's own store (the chain's downstream local store, SymProxy's "virtual
//!    directory folder") is checked: a warm hit is served by `tower-http` (Range, HEAD,
//!    conditional requests, Content-Length);
//! 3. cold: exclusion list → miss cache (SymProxy `MissTimeout`) → one lookup per key at a time
//!    (later clients join the transfer in flight), run as a detached task so it completes
//!    even when every client gives up; the cascade copies the hit into every store left of it;
//! 4. the client waits at most `client_timeout` (SymProxy: 25 s); then it gets 503 with
//!    `Symbol-Agent-Status: 0x80070512` while the transfer goes on, so its retry hits.
//!
//! With `NoCache` the hit is streamed from the upstream store without being stored. `/status`
//! (HTML, or JSON at `/status.json`) and `/metrics` (Prometheus text) are served at the root.
//! Security: the router checks the client address against the allow-list; keys are validated
//! before any store is asked.

mod misscache;
mod status;

pub use misscache::MissCache;

use crate::cascade::{Cascade, Chain, Lookup, Spooling, Tier};
use crate::config::Config;
use crate::exclusions::ExclusionList;
use crate::key::{Key, PeKey};
use crate::layout::{self, FileRequest, Form, RelPath};
use crate::metrics::{Metrics, Outcome};
use crate::report::{Activity, Actor, StoreHealth, Transfer};
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// SymProxy's "still working" status, sent in `Symbol-Agent-Status` when a client's time limit
/// passes before its transfer ends: HRESULT_FROM_WIN32(ERROR_APP_HANG).
pub const APP_HANG_STATUS: &str = "0x80070512";
/// Request header in which newer SymSrv clients send their HTTP timeout, in milliseconds.
pub const RECEIVE_TIMEOUT_HEADER: &str = "symbol-agent-receive-timeout";
/// Response header carrying [`APP_HANG_STATUS`].
pub const STATUS_HEADER: &str = "symbol-agent-status";
/// SymProxy merges at most this many upstream stores per virtual directory.
pub const MAX_UPSTREAMS: usize = 10;

/// Why the front cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrontError {
    /// The configuration cannot serve (names the key).
    #[error("config: {0}")]
    Config(String),
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
}

/// The front's settings (from `[http]` and `[cascade]`).
#[derive(Debug, Clone)]
pub struct FrontOptions {
    /// Virtual-directory prefix without a trailing `/` (`""` for the root).
    pub prefix: String,
    /// Client networks allowed besides loopback (empty: loopback only).
    pub allow: Vec<ipnet::IpNet>,
    /// Longest a client waits for a transfer.
    pub client_timeout: Duration,
    /// SymProxy `NoCache`.
    pub no_cache: bool,
    /// SymProxy `MissTimeout`.
    pub miss_timeout: Duration,
    /// SymProxy `MissAgeCheck`.
    pub miss_age_check: Duration,
    /// SymProxy `MissAgeTimeout`.
    pub miss_age_timeout: Duration,
    /// Exclusion list file.
    pub exclusions: Option<PathBuf>,
    /// Open client connections at most (also kept below the open-file limit).
    pub max_connections: usize,
    /// Longest wait for a request head, idle time between requests included.
    pub idle_timeout: Duration,
    /// Cold lookups running at once (16× as many may wait).
    pub max_cold_lookups: usize,
    /// Companion prefetch (`[agent] companions`): an image's PDB is fetched right after it.
    pub companions: bool,
}

impl FrontOptions {
    /// The options a config asks for.
    pub fn from_config(config: &Config) -> FrontOptions {
        FrontOptions {
            prefix: config
                .http
                .prefix
                .as_deref()
                .unwrap_or("")
                .trim_end_matches('/')
                .to_string(),
            allow: config.http.allow.clone(),
            client_timeout: config.http.client_timeout,
            no_cache: config.cascade.no_cache,
            miss_timeout: config.cascade.miss_timeout,
            miss_age_check: config.cascade.miss_age_check,
            miss_age_timeout: config.cascade.miss_age_timeout,
            exclusions: config.http.exclusions.clone(),
            max_connections: config.http.max_connections,
            idle_timeout: config.http.idle_timeout,
            max_cold_lookups: config.http.max_cold_lookups,
            companions: config.agent.companions,
        }
    }
}

/// What a finished lookup left for the clients waiting on it.
type Done = Arc<Result<Lookup, crate::cascade::CascadeError>>;

/// A lookup in flight: its result when it ends, and the progress of a plain hit being read
/// (clients are served from the spool file while the cascade copies it down).
#[derive(Clone)]
struct Inflight {
    done: watch::Receiver<Option<Done>>,
    spool: watch::Receiver<Spooling>,
}

/// The HTTP front: shared state of every request.
pub struct Front {
    cascade: Arc<Cascade>,
    chain: Chain,
    branch: Option<usize>,
    serving: Arc<Tier>,
    /// The front's own store as a local folder: the warm path maps a request to its file
    /// through it ([`crate::store::LocalStore::canonical_path`]).
    serving_root: crate::store::LocalStore,
    local_hits: prometheus_client::metrics::counter::Counter,
    local_hit_requests: prometheus_client::metrics::counter::Counter,
    opts: FrontOptions,
    misses: Mutex<MissCache>,
    inflight: Mutex<HashMap<Key, Inflight>>,
    /// PDBs fetched as companions that no client has asked for yet (bounded).
    companions: Mutex<std::collections::HashSet<Key>>,
    exclusions: Option<ExclusionList>,
    metrics: Arc<Metrics>,
    /// Reads in flight and recent transfers, shared with the agent.
    activity: Arc<Activity>,
    started: Instant,
    listen: Mutex<Option<SocketAddr>>,
    agent_status: Option<tokio::sync::watch::Receiver<crate::report::Status>>,
    /// Permits for cold lookups running at once (`max_cold_lookups`).
    cold: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for Front {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Front")
            .field("serving", &self.serving.store().describe().location)
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl Front {
    /// A front serving `chain`'s downstream store (tier 0, which must be local) and looking
    /// keys up through `cascade`. `branch` is the chain's branch index (for `/status` roles
    /// and where the WAN begins); `activity` is the process's (shared with the agent, fed by
    /// the cascade's stores); `agent_status` is the running agent's status (from the daemon),
    /// shown in `/status`.
    ///
    /// # Errors
    /// [`FrontError::Config`] when the chain's downstream store is not a local folder or a
    /// chain has more than [`MAX_UPSTREAMS`] upstream stores.
    pub fn new(
        cascade: Arc<Cascade>,
        chain: Chain,
        branch: Option<usize>,
        opts: FrontOptions,
        metrics: Arc<Metrics>,
        activity: Arc<Activity>,
        agent_status: Option<tokio::sync::watch::Receiver<crate::report::Status>>,
    ) -> Result<Front, FrontError> {
        let serving = chain
            .tiers
            .first()
            .cloned()
            .ok_or_else(|| FrontError::Config("key `sympath`: empty chain".into()))?;
        let serving_root = crate::store::LocalStore::new(serving.store().describe().location);
        if serving.store().describe().transport != crate::store::Transport::Local {
            return Err(FrontError::Config(format!(
                "key `sympath`: the HTTP front serves the chain's downstream store, which must be a local folder, not {}",
                serving.store().describe().location
            )));
        }
        for c in cascade.chains() {
            if c.tiers.len().saturating_sub(1) > MAX_UPSTREAMS {
                return Err(FrontError::Config(format!(
                    "key `sympath`: {} has {} upstream stores; SymProxy's limit is {MAX_UPSTREAMS}",
                    c.element,
                    c.tiers.len() - 1
                )));
            }
        }
        let opts_cold = opts.max_cold_lookups.max(1);
        let stores = chain
            .tiers
            .iter()
            .map(|t| t.store().describe().location)
            .collect();
        metrics.set_chain(stores, branch);
        Ok(Front {
            misses: Mutex::new(MissCache::new(opts.miss_timeout, opts.miss_age_timeout)),
            exclusions: opts.exclusions.as_ref().map(ExclusionList::new),
            cascade,
            chain,
            branch,
            local_hits: metrics.hit_counter(&serving.store().describe().location, 0),
            local_hit_requests: metrics.request_counter(Outcome::LocalHit),
            serving,
            serving_root,
            opts,
            inflight: Mutex::new(HashMap::new()),
            companions: Mutex::new(std::collections::HashSet::new()),
            metrics,
            activity,
            started: Instant::now(),
            listen: Mutex::new(None),
            agent_status,
            cold: Arc::new(tokio::sync::Semaphore::new(opts_cold)),
        })
    }

    /// The metrics this front records into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The router: symbol files under the prefix, `/status`, `/status.json`, `/metrics`, all
    /// behind the allow-list.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route(
                "/",
                axum::routing::get(|| async { axum::response::Redirect::to("/status") }),
            )
            .route("/status", axum::routing::get(status::html))
            .route("/status.json", axum::routing::get(status::json))
            .route("/metrics", axum::routing::get(metrics))
            .fallback(symbol_file)
            .layer(middleware::from_fn_with_state(self.clone(), allow_list))
            .with_state(self.clone())
    }

    /// Serves on `listener` until `shutdown` completes; also sweeps the miss cache every
    /// `MissAgeCheck`. Requests in progress finish; transfers in flight continue in their
    /// own tasks until the runtime stops.
    ///
    /// # Errors
    /// The server's I/O error.
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let addr = listener.local_addr()?;
        *self.listen.lock().expect("listen") = Some(addr);
        tracing::info!(%addr, serving = %self.serving.store().describe().location, "HTTP front listening");
        let sweeper = (!self.opts.miss_age_check.is_zero()).then(|| {
            let me = Arc::downgrade(&self);
            let every = self.opts.miss_age_check;
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let Some(me) = me.upgrade() else { break };
                    let n = me.misses.lock().expect("misses").sweep(Instant::now());
                    tracing::debug!(purged = n, "miss cache sweep");
                }
            })
        });
        let r = self.accept_loop(listener, shutdown).await;
        if let Some(s) = sweeper {
            s.abort();
        }
        r
    }

    /// Accepts connections until `shutdown`, then lets the requests in progress finish.
    ///
    /// Why not `axum::serve`: it has no header-read or idle timeout and no connection cap, and
    /// checks the allow-list only per request, so ~1,000 idle sockets made the front
    /// unreachable. Here a connection from outside the allow-list is answered 403 and closed
    /// at once; beyond the cap a connection gets 503 and is closed; a connection that sends no
    /// complete request head for `idle_timeout` (idle keep-alive time included) is closed; and
    /// an accept error (out of file descriptors) backs off instead of ending the server.
    async fn accept_loop(
        self: &Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        use hyper_util::rt::{TokioIo, TokioTimer};
        let cap = crate::platform::connection_cap(self.opts.max_connections);
        tracing::debug!(cap, "HTTP front connection cap");
        let conns = Arc::new(tokio::sync::Semaphore::new(cap));
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let router = self.router();
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                _ = &mut shutdown => break,
                r = listener.accept() => match r {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::warn!("HTTP front cannot accept a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            if !self.allowed(peer.ip()) {
                self.metrics.request(Outcome::Forbidden);
                tracing::warn!(client = %peer, "client not on the allow-list (http.allow)");
                tokio::spawn(refuse(stream, REFUSED_FORBIDDEN));
                continue;
            }
            let Ok(permit) = conns.clone().try_acquire_owned() else {
                self.metrics.request(Outcome::Busy);
                tracing::debug!(client = %peer, cap, "connection cap reached");
                tokio::spawn(refuse(stream, REFUSED_BUSY));
                continue;
            };
            let _ = stream.set_nodelay(true);
            let svc = tower::Layer::layer(&axum::Extension(ConnectInfo(peer)), router.clone());
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(self.opts.idle_timeout)
                .serve_connection(
                    TokioIo::new(stream),
                    hyper_util::service::TowerToHyperService::new(svc),
                );
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                let _permit = permit;
                if let Err(e) = conn.await {
                    tracing::debug!(client = %peer, "connection ended: {e}");
                }
            });
        }
        drop(listener);
        graceful.shutdown().await;
        Ok(())
    }

    /// Loopback, or a network of the allow-list.
    fn allowed(&self, ip: std::net::IpAddr) -> bool {
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map(std::net::IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        ip.is_loopback() || self.opts.allow.iter().any(|n| n.contains(&ip))
    }

    /// Starts (or joins) the lookup of `key`; the returned receivers yield its progress and
    /// result. The lookup runs in its own task, so it completes when every client has gone.
    /// At most `max_cold_lookups` run at once; `None` when 16× as many already wait (the
    /// client is told to retry, as SymProxy's "still working").
    fn lookup_shared(self: &Arc<Self>, key: &Key) -> Option<Inflight> {
        let mut map = self.inflight.lock().expect("inflight");
        if let Some(f) = map.get(key) {
            return Some(f.clone());
        }
        if map.len() >= self.opts.max_cold_lookups.max(1) * 17 {
            return None;
        }
        let (tx, rx) = watch::channel(None);
        let (stx, srx) = watch::channel(Spooling::default());
        let f = Inflight {
            done: rx,
            spool: srx,
        };
        map.insert(key.clone(), f.clone());
        drop(map);
        let me = self.clone();
        let key = key.clone();
        let front = Actor {
            by: "front".into(),
            requester: None,
        };
        let registered = self.activity.looking_up("front", &key);
        tokio::spawn(crate::report::acting_as(front, async move {
            let _registered = registered;
            let permit = me.cold.clone().acquire_owned().await;
            let result = me.cascade.lookup_tapped(&key, Some(&stx)).await;
            drop(permit);
            if let Ok(l) = &result {
                me.after_lookup(l);
                me.companion_of(l).await;
            }
            // Publish before leaving the in-flight map: a client arriving in between then
            // finds the file in the front's store or the miss in the miss cache.
            let _ = tx.send(Some(Arc::new(result)));
            me.inflight.lock().expect("inflight").remove(&key);
        }));
        Some(f)
    }

    /// Companion prefetch (issue #17 item 3): when `l` fetched an image (`.dll`, `.exe`,
    /// `.sys`) from beyond the front's store, its CodeView record names the PDB a debugger
    /// asks for next; that lookup starts now, shared with any client that asks meanwhile.
    async fn companion_of(self: &Arc<Self>, l: &Lookup) {
        let Some(f) = l.fetched.as_ref().filter(|f| f.tier > 0) else {
            return;
        };
        let name = l.key.name().to_ascii_lowercase();
        let image = [".dll", ".exe", ".sys"].iter().any(|e| name.ends_with(e));
        let Some(path) = f
            .local_path
            .clone()
            .filter(|_| image && self.opts.companions)
        else {
            return;
        };
        let read = tokio::task::spawn_blocking(move || Key::from_file(&path, PeKey::Pdb)).await;
        let Ok(Ok(pdb)) = read else {
            return;
        };
        if self.answers_without_lookup(&pdb).await || self.activity.is_looking_up("agent", &pdb) {
            return;
        }
        let Some(mut fl) = self.lookup_shared(&pdb) else {
            return;
        };
        let me = self.clone();
        tokio::spawn(async move {
            let _ = fl.done.wait_for(Option::is_some).await;
            let result = fl.done.borrow().clone();
            if let Some(Ok(l)) = result.as_deref()
                && l.fetched.as_ref().is_some_and(|f| f.tier > 0)
            {
                tracing::info!(key = %pdb, image = %l.key, "companion PDB fetched");
                me.metrics.companion_fetched();
                let mut set = me.companions.lock().expect("companions");
                if set.len() >= 4096 {
                    set.clear();
                }
                set.insert(pdb);
            }
        });
    }

    /// Whether a request for `key` would be answered without a lookup: the front's store has
    /// it (plain or compressed), the exclusion list names it, or the miss cache holds a fresh
    /// miss. A companion prefetch then has nothing to do (CI finding: it looked up a PDB that
    /// was already local, counting a second lookup and hit for one client request).
    async fn answers_without_lookup(&self, key: &Key) -> bool {
        if self
            .exclusions
            .as_ref()
            .is_some_and(|x| x.is_excluded(key.name()))
            || self
                .misses
                .lock()
                .expect("misses")
                .is_fresh_miss(key, Instant::now())
        {
            return true;
        }
        let Ok(tiering) = self.serving.tiering().await else {
            return false;
        };
        for form in [Form::Plain, Form::Compressed] {
            let path = layout::path_for(key, tiering, form);
            if let Ok(Some(_)) = self.serving.store().stat(&path).await {
                return true;
            }
        }
        false
    }

    /// Counts a client's request for a key fetched as a companion (once per key).
    fn companion_asked(&self, key: &Key) {
        if self.companions.lock().expect("companions").remove(key) {
            self.metrics.companion_asked();
        }
    }

    fn after_lookup(&self, l: &Lookup) {
        self.metrics.record_lookup(l);
        let now = Instant::now();
        match &l.fetched {
            Some(_) => {
                self.misses.lock().expect("misses").clear(&l.key);
                if let Some(t) = Transfer::of(l) {
                    self.activity.record(t);
                }
            }
            // Only a definitive miss is cached: a store that could not answer may have it. A
            // corrupt copy is an answer (fetching it again would only refuse it again).
            None if l.is_definitive_miss() => {
                let reason = l.miss_reason();
                self.misses
                    .lock()
                    .expect("misses")
                    .record(&l.key, now, reason);
            }
            None => {
                tracing::info!(key = %l.key, "not found while some stores could not answer; not cached as a miss");
            }
        }
    }

    /// The file for `req` in the front's own store, if there.
    async fn local_file(&self, req: &FileRequest) -> Option<PathBuf> {
        let tiering = self.serving.tiering().await.ok()?;
        let path = layout::path_for(&req.key, tiering, req.form);
        let p = match self.serving.store().stat(&path).await {
            Ok(Some(meta)) => meta.local_path?,
            _ => return None,
        };
        self.cascade
            .verified_local(&p, &req.key, req.form)
            .await
            .then_some(p)
    }

    /// Opens the file for `req` from the first tier of any chain that has it in the requested
    /// form (`upstream_only`: skip each chain's downstream store).
    async fn open_anywhere(
        &self,
        req: &FileRequest,
        upstream_only: bool,
    ) -> Option<(String, usize, crate::store::Opened)> {
        let opts = self.cascade.options();
        for chain in self.cascade.chains() {
            let skip = usize::from(upstream_only);
            for (ti, tier) in chain.tiers.iter().enumerate().skip(skip) {
                let d = tier.store().describe();
                if !opts.uri_allows(d.transport, req.form) {
                    continue;
                }
                let Ok(t) = tier.tiering().await else {
                    continue;
                };
                let path: RelPath = layout::path_for(&req.key, t, req.form);
                match tier.store().open(&path).await {
                    Ok(Some(o)) => return Some((d.location, ti, o)),
                    Ok(None) => {}
                    Err(e) => tracing::debug!("{e}"),
                }
            }
        }
        None
    }
}

/// SymProxy's answer when a client's time is up but the work goes on: 503 with
/// `Symbol-Agent-Status: 0x80070512`, so SymSrv retries.
fn still_working() -> Response {
    let mut r = plain(
        StatusCode::SERVICE_UNAVAILABLE,
        "transfer in progress; retry\n",
    );
    r.headers_mut()
        .insert(STATUS_HEADER, HeaderValue::from_static(APP_HANG_STATUS));
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    r
}

/// Sent to a connection refused at accept: no route, no body parsing, then closed.
const REFUSED_FORBIDDEN: &[u8] = b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 27\r\nConnection: close\r\n\r\nclient address not allowed\n";
/// Sent beyond the connection cap.
const REFUSED_BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 21\r\nRetry-After: 1\r\nConnection: close\r\n\r\ntoo many connections\n";

/// Writes `answer` (bounded by a second) and closes the connection.
async fn refuse(mut stream: tokio::net::TcpStream, answer: &'static [u8]) {
    use tokio::io::AsyncWriteExt;
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(answer).await?;
        stream.shutdown().await
    })
    .await;
}

async fn allow_list(
    State(front): State<Arc<Front>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    // Connections are checked when accepted; this covers routers served by other means.
    if front.allowed(peer.ip()) {
        return next.run(req).await;
    }
    front.metrics.request(Outcome::Forbidden);
    tracing::warn!(client = %peer, "client not on the allow-list (http.allow)");
    (StatusCode::FORBIDDEN, "client address not allowed\n").into_response()
}

async fn metrics(State(front): State<Arc<Front>>) -> Response {
    let entries = front.misses.lock().expect("misses").len();
    let inflight = front.inflight.lock().expect("inflight").len();
    front.metrics.set_gauges(entries, inflight);
    front
        .metrics
        .set_reads_in_flight(front.activity.in_flight().len());
    if front.agent_status.is_none() {
        // No agent checks the stores periodically (front only): check them per scrape.
        front.metrics.set_store_health(&health(&front).await);
    }
    (
        [(header::CONTENT_TYPE, Metrics::CONTENT_TYPE)],
        front.metrics.render(),
    )
        .into_response()
}

fn plain(status: StatusCode, text: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text.into(),
    )
        .into_response()
}

/// How long this client may wait: `Symbol-Agent-Receive-Timeout` (ms) less a margin for the
/// answer to arrive, else the configured limit.
fn client_limit(headers: &HeaderMap, default: Duration) -> Duration {
    headers
        .get(RECEIVE_TIMEOUT_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|ms| Duration::from_millis(ms).mul_f64(25.0 / 30.0))
        .map(|d| d.clamp(Duration::from_millis(500), Duration::from_secs(600)))
        .unwrap_or(default)
}

/// `GET|HEAD <prefix>/<name>/<index>/<file>`: the SymProxy request. Each phase answers with
/// the outcome it counts (`None`: counted already) and the response.
async fn symbol_file(State(front): State<Arc<Front>>, req: Request) -> Response {
    // The client's clock started when it sent the request, not when the cold path begins.
    let arrived = Instant::now();
    // Only the head matters (GET/HEAD); it is Sync, so the handler's future stays Send.
    let (req, _body) = req.into_parts();
    let (outcome, resp) = answer(&front, &req, arrived).await;
    if let Some(o) = outcome {
        front.metrics.request(o);
    }
    resp
}

/// An answer and the outcome to count for it.
type Answered = (Option<Outcome>, Response);

async fn answer(
    front: &Arc<Front>,
    req: &axum::http::request::Parts,
    arrived: Instant,
) -> Answered {
    if req.method != Method::GET && req.method != Method::HEAD {
        return (
            None,
            plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n"),
        );
    }
    let raw = req.uri.path().to_string();
    let Some(rest) = raw.strip_prefix(front.opts.prefix.as_str()) else {
        return (
            None,
            plain(StatusCode::NOT_FOUND, "not under the store's prefix\n"),
        );
    };
    // Store markers a client may probe: this front answers both layouts, so it claims neither.
    if rest.eq_ignore_ascii_case("/index2.txt") || rest.eq_ignore_ascii_case("/pingme.txt") {
        return (None, plain(StatusCode::NOT_FOUND, "not found\n"));
    }
    let fr = match layout::parse_request_path(rest) {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!("400: {e}");
            let resp = plain(StatusCode::BAD_REQUEST, format!("{e}\n"));
            return (Some(Outcome::BadRequest), resp);
        }
    };
    front.companion_asked(&fr.key);
    if let Some(a) = own_store(front, &fr, req).await {
        return a;
    }
    if let Some(a) = refused_early(front, &fr) {
        return a;
    }
    if front.opts.no_cache {
        return (None, stream_uncached(front, &fr, req).await);
    }
    cold(front, &fr, req, arrived).await
}

/// The warm path: the file is in the front's own store.
async fn own_store(
    front: &Arc<Front>,
    fr: &FileRequest,
    req: &axum::http::request::Parts,
) -> Option<Answered> {
    if !has_conditions(&req.headers)
        && let Some(resp) = front.serve_warm(fr, req.method == Method::HEAD).await
    {
        front.local_hit_requests.inc();
        front.local_hits.inc();
        return Some((None, resp));
    }
    let p = front.local_file(fr).await?;
    let resp = serve_local(&p, file_request(req)).await?;
    crate::store::local::touch_hit(Some(&p), None);
    if req.method != Method::HEAD
        && let Some(n) = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
    {
        front.metrics.served_local(n);
    }
    front
        .metrics
        .hit(&front.serving.store().describe().location, 0);
    Some((Some(Outcome::LocalHit), resp))
}

/// Answers that need no lookup: a `file.ptr` (only ever served from the front's store: the
/// lookup of the plain and compressed names, which SymSrv asks for first, already followed
/// any upstream pointer), an excluded name, a fresh miss-cache entry.
fn refused_early(front: &Front, fr: &FileRequest) -> Option<Answered> {
    let not_found = |o: Outcome, text: &str| Some((Some(o), plain(StatusCode::NOT_FOUND, text)));
    if fr.form == Form::FilePtr {
        return not_found(Outcome::Miss, "not found\n");
    }
    if let Some(x) = &front.exclusions
        && x.is_excluded(fr.key.name())
    {
        return not_found(Outcome::Excluded, "excluded\n");
    }
    let mut m = front.misses.lock().expect("misses");
    if !m.is_fresh_miss(&fr.key, Instant::now()) {
        return None;
    }
    // Store locations stay in the log and /status; the client learns only the kind.
    match m.reason(&fr.key) {
        Some(_) => not_found(
            Outcome::MissCached,
            "not found (miss cache: only corrupt copies upstream)\n",
        ),
        None => not_found(Outcome::MissCached, "not found (miss cache)\n"),
    }
}

/// When the agent of this process is fetching `fr`'s key (a queue record, a companion), waits
/// for that copy (until `deadline`) rather than read the WAN a second time; the answer from the
/// front's store if the copy is there. The agent's transfer is promoted to the interactive
/// class first: a person at a debugger is not served at the background cap (BITS: foreground
/// transfers are unaffected).
async fn after_agents_lookup(
    front: &Arc<Front>,
    fr: &FileRequest,
    req: &axum::http::request::Parts,
    deadline: Instant,
) -> Option<Answered> {
    if !front.activity.promote("agent", &fr.key) {
        return None;
    }
    while front.activity.is_looking_up("agent", &fr.key) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    own_store(front, fr, req).await
}

/// The cold path: one shared lookup per key; the client is served as the file arrives, or
/// when the lookup ends, or told to come back when its own time limit is near.
async fn cold(
    front: &Arc<Front>,
    fr: &FileRequest,
    req: &axum::http::request::Parts,
    arrived: Instant,
) -> Answered {
    let deadline = Instant::now()
        + client_limit(&req.headers, front.opts.client_timeout).saturating_sub(arrived.elapsed());
    if let Some(a) = after_agents_lookup(front, fr, req, deadline).await {
        return a;
    }
    let limit = deadline.saturating_duration_since(Instant::now());
    let Some(fl) = front.lookup_shared(&fr.key) else {
        return (Some(Outcome::Busy), still_working());
    };
    let head = req.method == Method::HEAD;
    let done: Done = match wait_or_stream(front, fr, fl, limit, head).await {
        Waited::Done(d) => d,
        Waited::Streaming(resp) => return (Some(Outcome::Fetched), resp),
        Waited::Died => {
            // The lookup task ended without publishing (it panicked).
            let resp = plain(StatusCode::INTERNAL_SERVER_ERROR, "lookup failed\n");
            return (Some(Outcome::Error), resp);
        }
        Waited::TimedOut => {
            tracing::info!(key = %fr.key, ?limit, "client limit reached; transfer continues in the background");
            return (Some(Outcome::StillWorking), still_working());
        }
    };
    match done.as_ref() {
        Err(e) => {
            let resp = plain(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n"));
            (Some(Outcome::Error), resp)
        }
        Ok(l) if l.fetched.is_none() => (
            Some(Outcome::Miss),
            plain(StatusCode::NOT_FOUND, "not found\n"),
        ),
        Ok(_) => fetched(front, fr, req).await,
    }
}

/// A lookup found the file: the cascade put it into the front's store (normally), or it is
/// readable where it is.
async fn fetched(
    front: &Arc<Front>,
    fr: &FileRequest,
    req: &axum::http::request::Parts,
) -> Answered {
    if let Some(p) = front.local_file(fr).await
        && let Some(resp) = serve_local(&p, file_request(req)).await
    {
        return (Some(Outcome::Fetched), resp);
    }
    match front.open_anywhere(fr, false).await {
        Some((_, _, o)) => (
            Some(Outcome::Fetched),
            stream(front, o, req.method == Method::HEAD),
        ),
        // Found in another form than the one asked for (e.g. kept compressed): the client asks
        // for the next form.
        None => (
            Some(Outcome::Miss),
            plain(StatusCode::NOT_FOUND, "not found in this form\n"),
        ),
    }
}

enum Waited {
    Done(Done),
    Streaming(Response),
    Died,
    TimedOut,
}

/// Waits for the lookup to end, or for a plain hit to start arriving in its spool file (then
/// the client is served from the spool while it grows), at most `limit`.
async fn wait_or_stream(
    front: &Arc<Front>,
    fr: &FileRequest,
    mut fl: Inflight,
    limit: Duration,
    head: bool,
) -> Waited {
    let deadline = tokio::time::Instant::now() + limit;
    let mut late = false;
    loop {
        if let Some(d) = fl.done.borrow().clone() {
            return Waited::Done(d);
        }
        if fr.form == Form::Plain {
            let sp = fl.spool.borrow().clone();
            // Start once the head shows the kind of content the name promises (an empty file,
            // an HTML page under a PDB name: wait for the cascade's verdict, a clean 404). When
            // the client's limit comes first, start anyway: `stream_growing` checks the head
            // and holds the last byte until the verdict, so a refused file is never whole.
            if let (Some(path), Some(len), false) = (&sp.path, sp.len, sp.failed)
                && len > 0
                && let Ok(file) = std::fs::File::open(path)
                && if sp.written >= len.min(HEAD_SNIFF) {
                    plausible_head(&file, &fr.key)
                } else {
                    late
                }
            {
                return Waited::Streaming(stream_growing(
                    front,
                    file,
                    (len, fr.key.name().to_string()),
                    sp.generation,
                    fl.spool.clone(),
                    head,
                ));
            }
        }
        if late {
            return Waited::TimedOut;
        }
        tokio::select! {
            r = fl.done.changed() => {
                if r.is_err() && fl.done.borrow().is_none() {
                    return Waited::Died;
                }
            }
            // Err: the lookup ended; its result is checked at the top of the loop.
            r = fl.spool.changed() => {
                if r.is_err()
                    && fl.done.changed().await.is_err()
                    && fl.done.borrow().is_none()
                {
                    return Waited::Died;
                }
            }
            _ = tokio::time::sleep_until(deadline) => late = true,
        }
    }
}

/// Bytes of a cold hit's head looked at before it is streamed to a client.
const HEAD_SNIFF: u64 = 64;

/// Whether the spool's head is the kind of content `key`'s name promises (`verify`).
fn plausible_head(file: &std::fs::File, key: &Key) -> bool {
    use std::io::Read;
    let mut head = Vec::with_capacity(HEAD_SNIFF as usize);
    match file.take(HEAD_SNIFF).read_to_end(&mut head) {
        // `take` moved the shared cursor: rewind it for the reader that follows.
        Ok(_) => {
            std::io::Seek::rewind(&mut &*file).is_ok()
                && crate::verify::plausible_start(key.name(), &head)
        }
        Err(_) => false,
    }
}

/// Serves a plain hit from the spool file the cascade is still filling: reads up to the
/// announced flushed length, waits for more, ends at `len`. The last byte waits for the
/// cascade's verdict (`verified`): when the source fails midway, its content is refused, or
/// the cascade moves on to another store, the body ends with an error, so the client sees a
/// short transfer and retries; it never receives a whole file the cascade refused, and nothing
/// partial or unverified is ever stored under a final name.
fn stream_growing(
    front: &Arc<Front>,
    file: std::fs::File,
    (len, name): (u64, String),
    generation: u64,
    mut progress: watch::Receiver<Spooling>,
    head: bool,
) -> Response {
    let b = file_response(Some(len));
    if head {
        return b.body(Body::empty()).expect("valid response");
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(2);
    let metrics = front.metrics.clone();
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut f = tokio::fs::File::from_std(file);
        let mut buf = vec![0u8; WARM_CHUNK];
        let mut sent = 0u64;
        let mut ended = false;
        while sent < len {
            let (written, alive) = {
                let s = progress.borrow_and_update();
                let hold = if s.verified { 0 } else { 1 };
                let ready = s.written.min(len - hold);
                // The first chunk must hold the head, to be checked.
                let ready = if sent == 0 && ready < len.min(HEAD_SNIFF) {
                    0
                } else {
                    ready
                };
                (ready, s.generation == generation && !s.failed)
            };
            let fail = |why: &str| std::io::Error::other(format!("source failed: {why}"));
            if !alive {
                let _ = tx.send(Err(fail("the upstream read broke off"))).await;
                return;
            }
            if written > sent {
                let want = ((written - sent) as usize).min(buf.len());
                match f.read(&mut buf[..want]).await {
                    Ok(0) | Err(_) => {
                        let _ = tx.send(Err(fail("spool unreadable"))).await;
                        return;
                    }
                    Ok(k) if sent == 0 && !crate::verify::plausible_start(&name, &buf[..k]) => {
                        let _ = tx
                            .send(Err(fail("content is not what its name promises")))
                            .await;
                        return;
                    }
                    Ok(k) => {
                        sent += k as u64;
                        metrics.served(k as u64);
                        if tx
                            .send(Ok(bytes::Bytes::copy_from_slice(&buf[..k])))
                            .await
                            .is_err()
                        {
                            return; // the client went away; the transfer goes on
                        }
                    }
                }
                continue;
            }
            if ended {
                let _ = tx.send(Err(fail("ended short"))).await;
                return;
            }
            if progress.changed().await.is_err() {
                // The lookup is over: what was announced last is all there is.
                ended = true;
            }
        }
    });
    b.body(Body::from_stream(tokio_stream_from(rx)))
        .expect("valid response")
}

/// SymProxy `NoCache`: stream the first upstream hit to the client, storing nothing.
async fn stream_uncached(
    front: &Arc<Front>,
    fr: &FileRequest,
    req: &axum::http::request::Parts,
) -> Response {
    match front.open_anywhere(fr, true).await {
        Some((store, tier, o)) => {
            front.metrics.request(Outcome::Streamed);
            front.metrics.hit(&store, tier);
            stream(front, o, req.method == Method::HEAD)
        }
        None => {
            front
                .misses
                .lock()
                .expect("misses")
                .record(&fr.key, Instant::now(), None);
            front.metrics.request(Outcome::Miss);
            plain(StatusCode::NOT_FOUND, "not found\n")
        }
    }
}

fn stream(front: &Arc<Front>, o: crate::store::Opened, head: bool) -> Response {
    let b = file_response(o.len);
    if head {
        return b.body(Body::empty()).expect("valid response");
    }
    let metrics = front.metrics.clone();
    let counted = futures_util::StreamExt::inspect(
        tokio_util::io::ReaderStream::with_capacity(o.reader, 256 * 1024),
        move |chunk| {
            if let Ok(c) = chunk {
                metrics.served(c.len() as u64);
            }
        },
    );
    b.body(Body::from_stream(counted)).expect("valid response")
}

/// The head of a 200 answer carrying a symbol file (`Content-Length` when known).
fn file_response(len: Option<u64>) -> axum::http::response::Builder {
    let b = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/octet-stream");
    match len {
        Some(len) => b.header(header::CONTENT_LENGTH, len),
        None => b,
    }
}

/// Range or conditional headers: those requests go to `tower-http`'s `ServeFile`, which
/// implements them; plain GET/HEAD take the fast path.
fn has_conditions(h: &HeaderMap) -> bool {
    [
        header::RANGE,
        header::IF_MODIFIED_SINCE,
        header::IF_UNMODIFIED_SINCE,
        header::IF_NONE_MATCH,
        header::IF_MATCH,
        header::IF_RANGE,
    ]
    .iter()
    .any(|n| h.contains_key(n))
}

/// Chunk size of warm-hit bodies.
const WARM_CHUNK: usize = 256 * 1024;

impl Front {
    /// The warm-hit fast path: the file under its canonical name in the front's store. A file
    /// of at most [`WARM_CHUNK`] bytes is opened and read on the worker thread (page-cache
    /// reads of a few KiB cost less than a hop to the blocking pool, which would dominate the
    /// request); a larger one is streamed by one blocking task through a small channel (two
    /// chunks ahead) instead of one thread-pool hop per read. `None` when it is not there under
    /// that exact name (the caller then tries the case-insensitive way).
    async fn serve_warm(&self, fr: &FileRequest, head: bool) -> Option<Response> {
        use std::io::Read;
        let tiering = self.serving.tiering().await.ok()?;
        let rel = layout::path_for(&fr.key, tiering, fr.form);
        let path = self.serving_root.canonical_path(&rel);
        let mut f = std::fs::File::open(&path).ok()?;
        let m = f.metadata().ok()?;
        if !m.is_file() {
            return None;
        }
        // A bad file (0 bytes, another key) is treated as absent: the cold path replaces it.
        if !self.cascade.verified_local(&path, &fr.key, fr.form).await {
            return None;
        }
        crate::store::local::touch_hit(Some(&path), m.modified().ok());
        let len = m.len();
        let b = file_response(Some(len)).header(header::ACCEPT_RANGES, "bytes");
        if head {
            return Some(b.body(Body::empty()).expect("valid response"));
        }
        if len <= WARM_CHUNK as u64 {
            let mut buf = Vec::with_capacity(len as usize);
            // At most `len` bytes: a file growing meanwhile must not break Content-Length.
            (&mut f).take(len).read_to_end(&mut buf).ok()?;
            if buf.len() as u64 != len {
                return None;
            }
            self.metrics.served_local(len);
            return Some(b.body(Body::from(buf)).expect("valid response"));
        }
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(2);
        let metrics = self.metrics.clone();
        tokio::task::spawn_blocking(move || {
            loop {
                let mut buf = bytes::BytesMut::zeroed(WARM_CHUNK);
                match f.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        buf.truncate(n);
                        metrics.served_local(n as u64);
                        if tx.blocking_send(Ok(buf.freeze())).is_err() {
                            return; // the client went away
                        }
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
            }
        });
        Some(
            b.body(Body::from_stream(tokio_stream_from(rx)))
                .expect("valid response"),
        )
    }
}

/// The receiver as a `Stream` of body chunks.
fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>,
) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// A bodiless request with what `ServeFile` looks at (method, URI, Range and conditional
/// headers).
fn file_request(req: &axum::http::request::Parts) -> Request {
    let mut r = Request::new(Body::empty());
    *r.method_mut() = req.method.clone();
    *r.uri_mut() = req.uri.clone();
    *r.headers_mut() = req.headers.clone();
    r
}

/// Serves a complete local file (Range, HEAD, If-Modified-Since, Content-Length); `None` when
/// it vanished meanwhile.
async fn serve_local(path: &std::path::Path, req: Request) -> Option<Response> {
    use tower::ServiceExt;
    let resp = tower_http::services::ServeFile::new(path)
        .oneshot(req)
        .await
        .ok()?;
    if resp.status() == StatusCode::NOT_FOUND {
        return None;
    }
    let mut resp = resp.map(Body::new);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Some(resp)
}

/// Store health for `/status` (bounded by 3 s per store), with since when each store is in
/// its state and its last error.
async fn health(front: &Front) -> Vec<StoreHealth> {
    let mut h =
        crate::report::store_health(&front.chain, front.branch, Duration::from_secs(3)).await;
    front.activity.observe_health(&mut h);
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_limit_from_header() {
        let mut h = HeaderMap::new();
        let d = Duration::from_secs(25);
        assert_eq!(client_limit(&h, d), d);
        h.insert(RECEIVE_TIMEOUT_HEADER, HeaderValue::from_static("60000"));
        assert_eq!(client_limit(&h, d), Duration::from_secs(50));
        h.insert(RECEIVE_TIMEOUT_HEADER, HeaderValue::from_static("1"));
        assert_eq!(client_limit(&h, d), Duration::from_millis(500));
        h.insert(RECEIVE_TIMEOUT_HEADER, HeaderValue::from_static("soon"));
        assert_eq!(client_limit(&h, d), d);
    }
}
