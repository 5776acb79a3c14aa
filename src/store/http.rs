//! `HttpStore`: a read-only symbol store on an HTTP(S) symbol server (IIS serving a SymStore
//! folder, SymProxy, `https://msdl.microsoft.com/download/symbols`).
//!
//! Data flow: the cascade hands a [`RelPath`]; [`join_url`] appends its components to the base
//! URL, each percent-encoded as one path segment (transports never format store paths). `open`
//! sends a GET and streams the body as it arrives (`StreamReader` over reqwest's byte stream;
//! no file is ever held in memory), `stat` sends a HEAD (a GET whose body is dropped when the
//! server rejects HEAD), `put` always fails: SymSrv never writes to an HTTP store.
//!
//! Answers, as SymSrv reads them: 404/410 is a miss; a 200 that is an HTML page or has an empty
//! body is a miss too (soft-404 pages of misconfigured servers and proxies must never be stored
//! as a PDB); 401/403/407 is a failed authentication (the blackout wrapper then stops contacting
//! the store, as SymSrv does); 5xx, timeouts and connection failures are retried with
//! exponential backoff and then reported as `Unreachable`/`Timeout`, which the blackout counts.
//!
//! Timeouts: a connect timeout and a read (idle) timeout that restarts with every chunk
//! received, never a total timeout, so a big PDB on a slow link is not cut off while bytes
//! still flow.
//!
//! Proxies ([`choose_proxy`]): `[http_client] proxy` from the config, else `_NT_SYMBOL_PROXY`
//! (`host:port`, Microsoft "Symbol Server and Internet Firewalls"), else
//! `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY` (upper case first, then lower case), with `NO_PROXY`
//! exclusions; basic-auth credentials from the config or `SYMCASCADE_PROXY_USER`/`_PASSWORD`.
//! Nothing ever prompts (the agent runs as a service: SymSrv's `SYMOPT_NO_PROMPTS`). The
//! environment is read through a function so tests inject it (edition 2024 makes `set_var`
//! unsafe and the crate forbids unsafe code).

use super::{
    Capabilities, FileMeta, Opened, PutOutcome, Store, StoreDescription, StoreError, StoreErrorKind,
};
use crate::layout::RelPath;
use async_trait::async_trait;
use futures_util::{StreamExt, TryStreamExt, stream};
use reqwest::{Method, Response, StatusCode, Url, header};
use serde::Serialize;
use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncRead;
use tokio_util::io::StreamReader;

/// The User-Agent SymSrv sends; symbol servers and proxies in the wild expect it.
pub const DEFAULT_USER_AGENT: &str = "Microsoft-Symbol-Server/10.0.0.0";
/// Upper bound on one backoff pause between retries.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// `[http_client] proxy` value that disables every proxy, whatever the environment says.
pub const DIRECT: &str = "direct";

/// Basic-auth credentials for the proxy. `Debug` never shows the password; nothing logs it.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyCredentials {
    /// User name, sent as is (`user` or `DOMAIN\user`).
    pub user: String,
    /// Password.
    pub password: String,
}

impl fmt::Debug for ProxyCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyCredentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl ProxyCredentials {
    /// `SYMCASCADE_PROXY_USER` and `SYMCASCADE_PROXY_PASSWORD` from `get` (the environment), or
    /// `None` when no user is set.
    pub fn from_env_with(get: impl Fn(&str) -> Option<String>) -> Option<ProxyCredentials> {
        let user = get("SYMCASCADE_PROXY_USER").filter(|u| !u.is_empty())?;
        Some(ProxyCredentials {
            user,
            password: get("SYMCASCADE_PROXY_PASSWORD").unwrap_or_default(),
        })
    }
}

/// HTTP client settings (from `[http_client]`, see `config.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// Proxy for every HTTP store (`host:port` or a URL), or [`DIRECT`]; overrides
    /// `_NT_SYMBOL_PROXY` and the `*_PROXY` variables. `None`: from the environment.
    pub proxy: Option<String>,
    /// Hosts that bypass the proxy (`NO_PROXY` syntax); overrides `NO_PROXY`/`no_proxy`.
    pub no_proxy: Option<String>,
    /// Proxy credentials; `None`: `SYMCASCADE_PROXY_USER`/`SYMCASCADE_PROXY_PASSWORD`, else the
    /// user info of a proxy URL (`http://user:pass@host:port`).
    pub proxy_credentials: Option<ProxyCredentials>,
    /// Bound on establishing a connection (TCP and TLS). Default 10 s.
    pub connect_timeout: Duration,
    /// Bound on waiting for the answer and for each chunk of a body (an idle timeout, restarted
    /// by every chunk). Default 30 s.
    pub read_timeout: Duration,
    /// Retries after a 5xx answer, a timeout or a failed connection. Default 2.
    pub retries: u32,
    /// First backoff pause; doubled for each retry, at most [`MAX_BACKOFF`]. Default 250 ms.
    pub retry_backoff: Duration,
    /// The User-Agent header. Default [`DEFAULT_USER_AGENT`].
    pub user_agent: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            proxy: None,
            no_proxy: None,
            proxy_credentials: None,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            retries: 2,
            retry_backoff: Duration::from_millis(250),
            user_agent: DEFAULT_USER_AGENT.to_string(),
        }
    }
}

/// Where the proxy setting came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProxySource {
    /// `[http_client] proxy`.
    Config,
    /// `_NT_SYMBOL_PROXY`.
    NtSymbolProxy,
    /// `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY` (or their lower-case forms).
    Environment,
}

/// The proxies HTTP stores use: one for `http://` and one for `https://` stores (an HTTPS
/// store is reached through a CONNECT tunnel), and the hosts that bypass them. The URLs keep
/// any user info they were given (`Debug` hides it).
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyChoice {
    /// Where it came from.
    pub source: ProxySource,
    /// Proxy URL for `http://` stores, `None` for direct.
    pub http: Option<String>,
    /// Proxy URL for `https://` stores, `None` for direct.
    pub https: Option<String>,
    /// Exclusions (`NO_PROXY` syntax: comma-separated hosts, domains, IPs or CIDRs, `*`).
    pub no_proxy: Option<String>,
}

impl fmt::Debug for ProxyChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = |u: &Option<String>| {
            u.as_deref()
                .map(|u| Url::parse(u).map(|u| redacted(&u)).unwrap_or_default())
        };
        f.debug_struct("ProxyChoice")
            .field("source", &self.source)
            .field("http", &shown(&self.http))
            .field("https", &shown(&self.https))
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

/// Why no HTTP client could be built. Reported when an HTTP store is opened, so a bad proxy
/// variable never breaks local or SMB stores.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpClientError {
    /// A proxy setting that is not `host:port` or an `http(s)://` URL.
    #[error("proxy from {setting}: {value:?} is not host:port or an http(s):// URL: {reason}")]
    InvalidProxy {
        /// The setting (`_NT_SYMBOL_PROXY`, `HTTPS_PROXY`, `key http_client.proxy`, …).
        setting: String,
        /// The value (user info removed).
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// reqwest refused the settings (e.g. no TLS trust roots, an invalid User-Agent).
    #[error("HTTP client: {0}")]
    Build(String),
}

/// Parses a proxy setting: `host:port` (as `_NT_SYMBOL_PROXY` is written) or an `http://` /
/// `https://` URL, possibly with `user:password@`.
///
/// # Errors
/// A message saying what is wrong (never echoing a password).
pub fn parse_proxy_url(value: &str) -> Result<Url, String> {
    let v = value.trim();
    let text = if v.contains("://") {
        v.to_string()
    } else {
        format!("http://{v}")
    };
    let url = Url::parse(&text).map_err(|e| e.to_string())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("scheme {:?} is not supported", url.scheme()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("no host".into());
    }
    Ok(url)
}

/// A URL as it may be shown: without user info.
fn redacted(url: &Url) -> String {
    let mut u = url.clone();
    // Both only fail for URLs that cannot have user info, which then have none to hide.
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.to_string()
}

/// Chooses the proxies, highest precedence first: `config_proxy` (`[http_client] proxy`;
/// [`DIRECT`] means none at all), `_NT_SYMBOL_PROXY` (one proxy for every store, SymSrv's
/// variable), then per scheme `HTTPS_PROXY`/`HTTP_PROXY` with `ALL_PROXY` as the fallback
/// (each upper case first, then lower case, as curl and reqwest read them). Exclusions:
/// `config_no_proxy`, else `NO_PROXY`/`no_proxy`; they apply to whichever proxy was chosen.
/// Empty variables count as unset. `Ok(None)`: connect directly.
///
/// # Errors
/// [`HttpClientError::InvalidProxy`] naming the setting that is malformed.
pub fn choose_proxy(
    config_proxy: Option<&str>,
    config_no_proxy: Option<&str>,
    get: impl Fn(&str) -> Option<String>,
) -> Result<Option<ProxyChoice>, HttpClientError> {
    let var = |names: &[&str]| {
        names.iter().find_map(|n| {
            get(n)
                .filter(|v| !v.trim().is_empty())
                .map(|v| (n.to_string(), v))
        })
    };
    let parse = |setting: &str, value: &str| {
        parse_proxy_url(value)
            .map(|u| u.to_string())
            .map_err(|reason| HttpClientError::InvalidProxy {
                setting: setting.to_string(),
                value: parse_proxy_url(value)
                    .map(|u| redacted(&u))
                    .unwrap_or_else(|_| value.split('@').next_back().unwrap_or("").to_string()),
                reason,
            })
    };
    let no_proxy = config_no_proxy
        .map(str::to_string)
        .or_else(|| var(&["NO_PROXY", "no_proxy"]).map(|(_, v)| v));
    let both = |source, setting: &str, value: &str| -> Result<_, HttpClientError> {
        let u = parse(setting, value)?;
        Ok(Some(ProxyChoice {
            source,
            http: Some(u.clone()),
            https: Some(u),
            no_proxy: no_proxy.clone(),
        }))
    };
    if let Some(p) = config_proxy.filter(|p| !p.trim().is_empty()) {
        if p.trim().eq_ignore_ascii_case(DIRECT) {
            return Ok(None);
        }
        return both(ProxySource::Config, "key http_client.proxy", p);
    }
    if let Some((n, v)) = var(&["_NT_SYMBOL_PROXY"]) {
        return both(ProxySource::NtSymbolProxy, &n, &v);
    }
    let all = var(&["ALL_PROXY", "all_proxy"]);
    let pick = |names: &[&str]| -> Result<Option<String>, HttpClientError> {
        match var(names).or_else(|| all.clone()) {
            Some((n, v)) => parse(&n, &v).map(Some),
            None => Ok(None),
        }
    };
    let https = pick(&["HTTPS_PROXY", "https_proxy"])?;
    let http = pick(&["HTTP_PROXY", "http_proxy"])?;
    if http.is_none() && https.is_none() {
        return Ok(None);
    }
    Ok(Some(ProxyChoice {
        source: ProxySource::Environment,
        http,
        https,
        no_proxy,
    }))
}

/// The shared HTTP client of every HTTP store: one connection pool, the chosen proxy and the
/// retry policy. Built once per process from [`HttpConfig`] and the environment.
pub struct HttpClient {
    client: reqwest::Client,
    retries: u32,
    backoff: Duration,
    proxy: Option<ProxyChoice>,
}

impl fmt::Debug for HttpClient {
    // Not derived: reqwest's Debug would print the proxy matcher, credentials included.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient")
            .field("retries", &self.retries)
            .field("backoff", &self.backoff)
            .field("proxy", &self.proxy)
            .finish_non_exhaustive()
    }
}

/// The HTTP transport as configured: a client, or why none could be built (reported per HTTP
/// store, so the rest of the symbol path keeps working).
pub type HttpTransport = Result<Arc<HttpClient>, Arc<HttpClientError>>;

/// [`HttpClient::new`] with the process environment, as [`HttpTransport`].
pub fn transport_from_env(cfg: &HttpConfig) -> HttpTransport {
    HttpClient::new(cfg, |k| std::env::var(k).ok())
        .map(Arc::new)
        .map_err(Arc::new)
}

impl HttpClient {
    /// Builds the client: proxies by [`choose_proxy`] over `get` (the environment),
    /// credentials from `cfg` else `SYMCASCADE_PROXY_USER`/`SYMCASCADE_PROXY_PASSWORD`,
    /// rustls with the OS trust store, no total timeout, no automatic decompression (the
    /// bytes stored are the bytes served).
    ///
    /// # Errors
    /// [`HttpClientError`] for a malformed proxy setting or settings reqwest refuses.
    pub fn new(
        cfg: &HttpConfig,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<HttpClient, HttpClientError> {
        let proxy = choose_proxy(cfg.proxy.as_deref(), cfg.no_proxy.as_deref(), &get)?;
        let creds = cfg
            .proxy_credentials
            .clone()
            .or_else(|| ProxyCredentials::from_env_with(&get));
        let build = |e: reqwest::Error| HttpClientError::Build(error_chain(&e));
        let mut b = reqwest::Client::builder()
            .user_agent(cfg.user_agent.as_str())
            .connect_timeout(cfg.connect_timeout)
            .read_timeout(cfg.read_timeout)
            // reqwest would otherwise read the proxy variables itself, without our precedence.
            .no_proxy();
        if let Some(p) = &proxy {
            for (url, https) in [(&p.http, false), (&p.https, true)] {
                let Some(url) = url else { continue };
                let mut rp = if https {
                    reqwest::Proxy::https(url.as_str())
                } else {
                    reqwest::Proxy::http(url.as_str())
                }
                .map_err(build)?
                .no_proxy(
                    p.no_proxy
                        .as_deref()
                        .and_then(reqwest::NoProxy::from_string),
                );
                if let Some(c) = &creds {
                    rp = rp.basic_auth(&c.user, &c.password);
                }
                b = b.proxy(rp);
            }
            tracing::debug!(proxy = ?p, auth = creds.is_some(), "HTTP proxy");
        }
        Ok(HttpClient {
            client: b.build().map_err(build)?,
            retries: cfg.retries,
            backoff: cfg.retry_backoff,
            proxy,
        })
    }

    /// The underlying reqwest client (one connection pool; the proxy, connect and idle
    /// timeouts of `[http_client]`), for transports that sign their own requests (object
    /// stores).
    pub fn reqwest(&self) -> reqwest::Client {
        self.client.clone()
    }

    /// Retries after a transient failure, and the first pause between them.
    pub fn retry_policy(&self) -> (u32, Duration) {
        (self.retries, self.backoff)
    }

    /// The proxies in use, `None` for direct connections.
    pub fn proxy(&self) -> Option<&ProxyChoice> {
        self.proxy.as_ref()
    }

    /// The proxy (user info removed) a request to `url` goes through, for error messages.
    fn proxy_for(&self, url: &Url) -> Option<String> {
        let p = self.proxy.as_ref()?;
        let u = if url.scheme() == "https" {
            &p.https
        } else {
            &p.http
        };
        u.as_deref()
            .and_then(|u| Url::parse(u).ok())
            .map(|u| redacted(&u))
    }
}

/// The pause before retry `attempt` (0-based): `base × 2^attempt`, at most [`MAX_BACKOFF`].
pub fn backoff(base: Duration, attempt: u32) -> Duration {
    base.saturating_mul(1u32 << attempt.min(16))
        .min(MAX_BACKOFF)
}

/// `base` with `path`'s components appended, each percent-encoded as one path segment (so
/// `a b#1.pdb` is `a%20b%231.pdb`); a trailing `/` of the base is not doubled and its query,
/// if any, is kept.
pub fn join_url(base: &Url, path: &RelPath) -> Url {
    let mut u = base.clone();
    if let Ok(mut segs) = u.path_segments_mut() {
        segs.pop_if_empty().extend(path.components());
    }
    u
}

/// Every message of an error's source chain, joined: reqwest's top-level message alone
/// ("error sending request") does not say what failed.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// `Content-Length` as sent. Read from the header, not `Response::content_length`, which is 0
/// for every HEAD answer.
fn header_len(resp: &Response) -> Option<u64> {
    resp.headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The validator `If-Range` accepts: a strong `ETag`, else `Last-Modified` (RFC 9110 13.1.5:
/// a weak entity tag cannot be used for a range).
fn validator(resp: &Response) -> Option<String> {
    let h = resp.headers();
    let etag = h.get(header::ETAG).and_then(|v| v.to_str().ok());
    etag.filter(|e| !e.starts_with("W/"))
        .or_else(|| h.get(header::LAST_MODIFIED).and_then(|v| v.to_str().ok()))
        .map(str::to_string)
}

/// A 206 answer's `Content-Range: bytes <start>-<end>/<total>` as (start, total length).
fn content_range(resp: &Response) -> Option<(u64, Option<u64>)> {
    let v = resp.headers().get(header::CONTENT_RANGE)?.to_str().ok()?;
    let (range, total) = v.strip_prefix("bytes ")?.split_once('/')?;
    let start = range.split_once('-')?.0.trim().parse().ok()?;
    Some((start, total.trim().parse().ok()))
}

fn is_html(resp: &Response) -> bool {
    resp.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            let v = v.trim_start().to_ascii_lowercase();
            v.starts_with("text/html") || v.starts_with("application/xhtml")
        })
}

/// What to do about a proxy's 407.
const PROXY_AUTH_HINT: &str = "the proxy demands credentials: set [http_client] proxy_user/proxy_password or SYMCASCADE_PROXY_USER/SYMCASCADE_PROXY_PASSWORD (basic auth only; symcascade never prompts)";

/// `true` when a proxy refused the CONNECT tunnel of an HTTPS store with 407: reqwest reports
/// it as a connect error ("tunnel error: proxy authorization required"), not as an answer. It
/// is not transient, so it is never retried.
fn proxy_auth_refused(e: &reqwest::Error) -> bool {
    let m = error_chain(e).to_ascii_lowercase();
    m.contains("proxy authorization required") || m.contains("407")
}

/// A read error of a body being streamed, classified for the cascade (`StoreError::from_io`):
/// an idle timeout is a timeout, anything else a truncated transfer.
fn body_error(e: reqwest::Error) -> io::Error {
    let kind = if e.is_timeout() {
        io::ErrorKind::TimedOut
    } else {
        io::ErrorKind::UnexpectedEof
    };
    io::Error::new(kind, error_chain(&e))
}

/// A read-only store at an HTTP(S) URL.
#[derive(Debug, Clone)]
pub struct HttpStore {
    client: Arc<HttpClient>,
    base: Url,
    shown: String,
}

impl HttpStore {
    /// A store at `url` (as written in the symbol path). No network traffic until the first
    /// operation.
    ///
    /// # Errors
    /// [`StoreError`] of kind `Unsupported` when `url` is not a usable http(s) URL.
    pub fn new(client: Arc<HttpClient>, url: &str) -> Result<HttpStore, StoreError> {
        let bad = |d: String| StoreError::new(url, "connect", "", StoreErrorKind::Unsupported, d);
        let base = Url::parse(url).map_err(|e| bad(format!("invalid URL: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(bad("not an http(s) URL".into()));
        }
        Ok(HttpStore {
            client,
            base,
            shown: url.to_string(),
        })
    }

    /// The URL of `path` in this store.
    pub fn url_for(&self, path: &RelPath) -> Url {
        join_url(&self.base, path)
    }

    fn err(
        &self,
        op: &'static str,
        path: &dyn fmt::Display,
        kind: StoreErrorKind,
        detail: String,
    ) -> StoreError {
        StoreError::new(self.shown.as_str(), op, path, kind, detail)
    }

    /// A failed exchange (no HTTP answer), classified.
    fn transport_error(
        &self,
        op: &'static str,
        path: &dyn fmt::Display,
        url: &Url,
        e: &reqwest::Error,
    ) -> StoreError {
        let detail = error_chain(e);
        let via = self
            .client
            .proxy_for(url)
            .map(|p| format!(" (via proxy {p})"))
            .unwrap_or_default();
        if proxy_auth_refused(e) {
            let hint = PROXY_AUTH_HINT;
            return self.err(
                op,
                path,
                StoreErrorKind::AuthFailed,
                format!("{detail}{via}: HTTP 407: {hint}"),
            );
        }
        let kind = if e.is_timeout() {
            StoreErrorKind::Timeout
        } else {
            StoreErrorKind::Unreachable
        };
        self.err(op, path, kind, format!("{detail}{via}"))
    }

    /// Sends `method url`, retrying 5xx answers (but 501, which is not transient), timeouts
    /// and failed connections with exponential backoff. Returns the last answer, whatever its
    /// status.
    async fn send(
        &self,
        method: Method,
        url: &Url,
        op: &'static str,
        path: &(dyn fmt::Display + Sync),
        resume: Option<(u64, &str)>,
    ) -> Result<Response, StoreError> {
        let c = &self.client;
        let mut attempt = 0;
        loop {
            let mut req = c.client.request(method.clone(), url.clone());
            if let Some((offset, version)) = resume {
                // If-Range: the rest of *this* version, or (a 200) the whole new one.
                req = req
                    .header(header::RANGE, format!("bytes={offset}-"))
                    .header(header::IF_RANGE, version);
            }
            let r = req.send().await;
            let transient = match &r {
                Ok(resp) => {
                    resp.status().is_server_error() && resp.status() != StatusCode::NOT_IMPLEMENTED
                }
                Err(e) => {
                    (e.is_timeout() || e.is_connect() || e.is_request()) && !proxy_auth_refused(e)
                }
            };
            if !transient || attempt >= c.retries {
                return r.map_err(|e| self.transport_error(op, path, url, &e));
            }
            let pause = backoff(c.backoff, attempt);
            tracing::debug!(store = %self.shown, %op, %path, attempt, ?pause,
                outcome = %r.as_ref().map(|x| x.status().to_string()).unwrap_or_else(|e| error_chain(e)),
                "HTTP request failed; retrying");
            tokio::time::sleep(pause).await;
            attempt += 1;
        }
    }

    /// Reads an answer's status: a usable 2xx answer, `Ok(None)` for a miss (404, 410, an HTML
    /// page, an empty body), or the classified error.
    fn classify(
        &self,
        resp: Response,
        op: &'static str,
        path: &dyn fmt::Display,
    ) -> Result<Option<Response>, StoreError> {
        let s = resp.status();
        if s == StatusCode::NOT_FOUND || s == StatusCode::GONE {
            return Ok(None);
        }
        if s.is_success() {
            if is_html(&resp) {
                tracing::debug!(store = %self.shown, %path, "HTTP 200 with an HTML page: a miss");
                return Ok(None);
            }
            if header_len(&resp) == Some(0) {
                tracing::debug!(store = %self.shown, %path, "HTTP 200 with an empty body: a miss");
                return Ok(None);
            }
            return Ok(Some(resp));
        }
        let (kind, why) = match s {
            StatusCode::PROXY_AUTHENTICATION_REQUIRED => (
                StoreErrorKind::AuthFailed,
                format!(
                    "the proxy {} refused: {PROXY_AUTH_HINT}",
                    self.client.proxy_for(resp.url()).unwrap_or_default()
                ),
            ),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => (
                StoreErrorKind::AuthFailed,
                "the server refused access (symcascade never prompts)".to_string(),
            ),
            s if s.is_server_error() => (
                StoreErrorKind::Unreachable,
                format!(
                    "the server kept failing ({} attempts)",
                    self.client.retries + 1
                ),
            ),
            _ => (StoreErrorKind::Io, "unexpected answer".to_string()),
        };
        Err(self.err(op, path, kind, format!("HTTP {s}: {why}")))
    }

    /// GET `path`, streamed (from `resume`'s offset, see [`Store::open_from`]). The first
    /// chunk is awaited so that an empty 200 without a `Content-Length` is recognised as a
    /// miss; it is handed on in front of the rest.
    async fn get(
        &self,
        op: &'static str,
        path: &RelPath,
        resume: Option<(u64, &str)>,
    ) -> Result<Option<Opened>, StoreError> {
        let url = self.url_for(path);
        let resp = self.send(Method::GET, &url, op, path, resume).await?;
        let Some(resp) = self.classify(resp, op, path)? else {
            return Ok(None);
        };
        let version = validator(&resp);
        let partial = resp.status() == StatusCode::PARTIAL_CONTENT;
        let (offset, len) = match content_range(&resp) {
            _ if !partial => (0, header_len(&resp)),
            Some((start, total)) if resume.is_some_and(|(o, _)| o == start) => (start, total),
            _ => {
                let detail = "HTTP 206 with a range that was not asked for";
                return Err(self.err(op, path, StoreErrorKind::Io, detail.to_string()));
            }
        };
        let mut body = resp.bytes_stream();
        let first = loop {
            match body.next().await {
                Some(Ok(b)) if b.is_empty() => continue,
                Some(Ok(b)) => break b,
                Some(Err(e)) => return Err(self.transport_error(op, path, &url, &e)),
                None => {
                    tracing::debug!(store = %self.shown, %path, "HTTP 200 with an empty body: a miss");
                    return Ok(None);
                }
            }
        };
        let rest = stream::once(async move { Ok(first) }).chain(body.map_err(body_error));
        Ok(Some(Opened {
            len,
            reader: Box::new(StreamReader::new(Box::pin(rest))),
            local_path: None,
            offset,
            version,
        }))
    }
}

#[async_trait]
impl Store for HttpStore {
    fn describe(&self) -> StoreDescription {
        StoreDescription {
            location: self.shown.clone(),
            transport: crate::store::Transport::Http,
        }
    }

    /// HEAD; when the server rejects HEAD (405/501) or gives no length, a GET whose body is
    /// dropped (or, without `Content-Length`, counted as it streams by).
    async fn stat(&self, path: &RelPath) -> Result<Option<FileMeta>, StoreError> {
        let url = self.url_for(path);
        let resp = self.send(Method::HEAD, &url, "stat", path, None).await?;
        let no_head = matches!(
            resp.status(),
            StatusCode::METHOD_NOT_ALLOWED | StatusCode::NOT_IMPLEMENTED
        );
        if !no_head {
            let Some(resp) = self.classify(resp, "stat", path)? else {
                return Ok(None);
            };
            if let Some(len) = header_len(&resp) {
                return Ok(Some(FileMeta {
                    len,
                    local_path: None,
                }));
            }
        }
        let Some(mut o) = self.get("stat", path, None).await? else {
            return Ok(None);
        };
        let len = match o.len {
            Some(n) => n,
            None => tokio::io::copy(&mut o.reader, &mut tokio::io::sink())
                .await
                .map_err(|e| StoreError::from_io(self.shown.as_str(), "stat", path, &e))?,
        };
        Ok(Some(FileMeta {
            len,
            local_path: None,
        }))
    }

    async fn open(&self, path: &RelPath) -> Result<Option<Opened>, StoreError> {
        self.get("open", path, None).await
    }

    /// `Range` from `offset` with `If-Range: version`: a 206 continues the copy, a 200 (the
    /// file changed, or the server ignores ranges) starts it over.
    async fn open_from(
        &self,
        path: &RelPath,
        offset: u64,
        version: &str,
    ) -> Result<Option<Opened>, StoreError> {
        self.get("open", path, Some((offset, version))).await
    }

    async fn put(
        &self,
        path: &RelPath,
        _src: &mut (dyn AsyncRead + Send + Unpin),
        _len: Option<u64>,
    ) -> Result<PutOutcome, StoreError> {
        Err(self.err(
            "put",
            path,
            StoreErrorKind::ReadOnly,
            "HTTP symbol stores are read-only (SymSrv never writes to them)".into(),
        ))
    }

    /// A HEAD of the store root: any answer but 401/407 (credentials refused) or 5xx means the
    /// server is reachable and so readable (many servers answer 403 or 404 for the root
    /// itself, which says nothing about the files). Never writable; no free-space figure.
    async fn capabilities(&self) -> Result<Capabilities, StoreError> {
        let mut url = self.base.clone();
        if let Ok(mut segs) = url.path_segments_mut() {
            segs.pop_if_empty().push("");
        }
        let resp = self
            .send(Method::HEAD, &url, "capabilities", &"", None)
            .await?;
        let s = resp.status();
        if matches!(
            s,
            StatusCode::UNAUTHORIZED | StatusCode::PROXY_AUTHENTICATION_REQUIRED
        ) || (s.is_server_error() && s != StatusCode::NOT_IMPLEMENTED)
        {
            return self
                .classify(resp, "capabilities", &"")
                .map(|_| Capabilities {
                    readable: false,
                    writable: false,
                    free_bytes: None,
                });
        }
        Ok(Capabilities {
            readable: true,
            writable: false,
            free_bytes: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn proxy_precedence() {
        use ProxySource::*;
        let nt = ("_NT_SYMBOL_PROXY", "ntproxy:8080");
        let hs = ("HTTPS_PROXY", "http://secure:3128");
        let h = ("HTTP_PROXY", "http://plain:3128");
        // The expected choice: source, proxy for http://, for https://, exclusions.
        let pc = |source, http: Option<&str>, https: Option<&str>, no_proxy: Option<&str>| {
            Some(ProxyChoice {
                source,
                http: http.map(str::to_string),
                https: https.map(str::to_string),
                no_proxy: no_proxy.map(str::to_string),
            })
        };
        // (config proxy, config no_proxy, environment, expected)
        let cases: Vec<(_, _, Vec<(&str, &str)>, _)> = vec![
            (None, None, vec![], None),
            (
                Some("cfg:1"),
                None,
                vec![nt, hs, h],
                pc(Config, Some("http://cfg:1/"), Some("http://cfg:1/"), None),
            ),
            (Some("DIRECT"), None, vec![nt, hs, h], None),
            (
                None,
                None,
                vec![nt, hs, h, ("NO_PROXY", "corp.example")],
                pc(
                    NtSymbolProxy,
                    Some("http://ntproxy:8080/"),
                    Some("http://ntproxy:8080/"),
                    Some("corp.example"),
                ),
            ),
            (
                None,
                Some("cfg.example"),
                vec![
                    ("_NT_SYMBOL_PROXY", "  "),
                    hs,
                    h,
                    ("no_proxy", "env.example"),
                ],
                pc(
                    Environment,
                    Some("http://plain:3128/"),
                    Some("http://secure:3128/"),
                    Some("cfg.example"),
                ),
            ),
            (
                None,
                None,
                vec![
                    ("https_proxy", "http://lower:1"),
                    ("ALL_PROXY", "http://all:2"),
                ],
                pc(
                    Environment,
                    Some("http://all:2/"),
                    Some("http://lower:1/"),
                    None,
                ),
            ),
            (
                None,
                None,
                vec![
                    ("HTTPS_PROXY", "http://upper:1"),
                    ("https_proxy", "http://lower:1"),
                ],
                pc(Environment, None, Some("http://upper:1/"), None),
            ),
            (
                None,
                None,
                vec![("HTTPS_PROXY", "https://u:secret@tls:443")],
                pc(Environment, None, Some("https://u:secret@tls/"), None),
            ),
        ];
        for (i, (cp, cn, vars, want)) in cases.into_iter().enumerate() {
            let got = choose_proxy(cp, cn, env(&vars)).unwrap();
            assert_eq!(got, want, "case {i}: {vars:?}");
        }
    }

    #[test]
    fn malformed_proxy_names_the_setting_and_hides_the_password() {
        for (vars, setting) in [
            (vec![("_NT_SYMBOL_PROXY", "ftp://x:21")], "_NT_SYMBOL_PROXY"),
            (vec![("https_proxy", "http://u:pw@:80")], "https_proxy"),
            (vec![("HTTP_PROXY", "socks5://u:pw@h:1080")], "HTTP_PROXY"),
        ] {
            let e = choose_proxy(None, None, env(&vars))
                .unwrap_err()
                .to_string();
            assert!(e.contains(setting), "{e}");
            assert!(!e.contains("pw"), "{e}");
        }
        let e = choose_proxy(Some("http://"), None, env(&[])).unwrap_err();
        assert!(e.to_string().contains("http_client.proxy"), "{e}");
    }

    #[test]
    fn credentials_from_config_then_env_and_never_printed() {
        let c = ProxyCredentials::from_env_with(env(&[
            ("SYMCASCADE_PROXY_USER", "CORP\\bob"),
            ("SYMCASCADE_PROXY_PASSWORD", "hunter2"),
        ]))
        .unwrap();
        assert_eq!(c.user, "CORP\\bob");
        assert_eq!(c.password, "hunter2");
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(ProxyCredentials::from_env_with(env(&[("SYMCASCADE_PROXY_USER", "")])).is_none());
        let cfg = HttpConfig {
            proxy_credentials: Some(c),
            ..HttpConfig::default()
        };
        let client = HttpClient::new(&cfg, env(&[("_NT_SYMBOL_PROXY", "127.0.0.1:1")])).unwrap();
        let shown = format!("{client:?} {cfg:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        let in_url = HttpClient::new(
            &HttpConfig::default(),
            env(&[("HTTP_PROXY", "http://bob:hunter2@proxy:3128")]),
        )
        .unwrap();
        let shown = format!("{in_url:?}");
        assert!(
            shown.contains("proxy:3128") && !shown.contains("hunter2"),
            "{shown}"
        );
        assert_eq!(client.proxy().unwrap().source, ProxySource::NtSymbolProxy);
    }

    #[test]
    fn url_joining_encodes_each_component() {
        let cases = [
            (
                "http://h/store",
                vec!["a.pdb", "ABC1", "a.pdb"],
                "http://h/store/a.pdb/ABC1/a.pdb",
            ),
            ("http://h/store/", vec!["a.pdb"], "http://h/store/a.pdb"),
            ("https://h:8443", vec!["x.pd_"], "https://h:8443/x.pd_"),
            (
                "http://h/s",
                vec!["a b#1?.pdb"],
                "http://h/s/a%20b%231%3F.pdb",
            ),
            ("http://h/s", vec!["100%.pdb"], "http://h/s/100%25.pdb"),
            (
                "http://h/s",
                vec!["ünï.pdb"],
                "http://h/s/%C3%BCn%C3%AF.pdb",
            ),
            ("http://h/s?sig=k", vec!["f.ptr"], "http://h/s/f.ptr?sig=k"),
            (
                "http://h/download/symbols",
                vec!["nt", "file.ptr"],
                "http://h/download/symbols/nt/file.ptr",
            ),
        ];
        for (base, parts, want) in cases {
            let p = RelPath::checked(parts.clone()).unwrap();
            assert_eq!(
                join_url(&Url::parse(base).unwrap(), &p).as_str(),
                want,
                "{base} + {parts:?}"
            );
        }
    }

    #[test]
    fn backoff_doubles_and_is_bounded() {
        let b = Duration::from_millis(250);
        let got: Vec<u128> = (0..8).map(|a| backoff(b, a).as_millis()).collect();
        assert_eq!(got, [250, 500, 1000, 2000, 4000, 8000, 10000, 10000]);
        assert_eq!(backoff(b, u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn store_urls_must_be_http() {
        let client = Arc::new(HttpClient::new(&HttpConfig::default(), env(&[])).unwrap());
        assert!(
            HttpStore::new(
                client.clone(),
                "https://msdl.microsoft.com/download/symbols"
            )
            .is_ok()
        );
        let e = HttpStore::new(client, "http://exa mple/").unwrap_err();
        assert_eq!(e.kind, StoreErrorKind::Unsupported);
    }
}
