//! Loopback HTTP servers for tests, in plain tokio (so every byte and every pause is ours to
//! decide):
//!
//! - [`Upstream`]: a symbol server serving a SymStore folder under `/store/`, as IIS serves
//!   one. It counts requests per store path and injects faults on demand: `fail_next` (a
//!   status for the next N requests of one path), and a [`Fault`] for every answer (a soft-404
//!   HTML page, an empty 200, a delay before the answer, a throttled body).
//! - [`Proxy`]: a forward proxy that demands basic auth (407 with `Proxy-Authenticate: Basic`
//!   without a valid `Proxy-Authorization`) and forwards absolute-form requests
//!   (`GET http://127.0.0.1:P/store/… HTTP/1.1`) to loopback origins, counting both.
//!
//! Both run on a thread of their own with their own runtime, so sync tests that run the
//! `symcascade` binary and async tests use them alike; dropping one stops it. HTTP/1.1 with
//! keep-alive; request bodies are not expected (GET/HEAD) and are discarded.

#![allow(dead_code)]

use base64::Engine;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// A fault applied to every answer of an [`Upstream`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Answer normally.
    #[default]
    None,
    /// Every request gets `200 OK` with an HTML page (a misconfigured server's soft 404).
    HtmlPage,
    /// Every request gets `200 OK` with `Content-Length: 0`.
    Empty,
    /// Every request gets `200 OK` with a chunked body of no chunks (no length up front).
    EmptyChunked,
    /// Every HEAD request gets `405 Method Not Allowed` (GET works).
    NoHead,
    /// Wait this long before sending the answer's head.
    Delay(Duration),
    /// Send only the first `n` bytes of file bodies (with the full `Content-Length`), then
    /// close the connection: a transfer broken midway.
    CutAfter(usize),
    /// Send file bodies `chunk` bytes at a time, pausing `pause` before each chunk.
    Throttle {
        /// Bytes per write.
        chunk: usize,
        /// Pause before each write.
        pause: Duration,
    },
}

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// `GET`, `HEAD`, …
    pub method: String,
    /// The request target as sent (origin-form for an upstream, absolute-form for a proxy).
    pub target: String,
    /// The `User-Agent` header, if any.
    pub user_agent: Option<String>,
}

#[derive(Default)]
struct UpstreamState {
    root: PathBuf,
    hits: Mutex<HashMap<String, usize>>,
    seen: Mutex<Vec<Seen>>,
    fault: Mutex<Fault>,
    fail_next: Mutex<HashMap<String, (usize, u16)>>,
}

/// A loopback symbol server over a SymStore folder (see the module doc).
pub struct Upstream {
    server: Background,
    state: Arc<UpstreamState>,
}

impl Upstream {
    /// Serves `root` at `http://127.0.0.1:<port>/store/`.
    pub fn start(root: impl Into<PathBuf>) -> Upstream {
        let state = Arc::new(UpstreamState {
            root: root.into(),
            ..Default::default()
        });
        let s = state.clone();
        let server = Background::start(move |conn| serve_upstream(conn, s.clone()));
        Upstream { server, state }
    }

    /// The store URL for a symbol path: `http://127.0.0.1:<port>/store`.
    pub fn url(&self) -> String {
        format!("http://{}/store", self.server.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// Requests so far for the store path `rel` (`name/INDEX/name`, percent-decoded), any
    /// method, faults included.
    pub fn hits(&self, rel: &str) -> usize {
        self.state
            .hits
            .lock()
            .unwrap()
            .get(rel)
            .copied()
            .unwrap_or(0)
    }

    /// Requests so far for any path.
    pub fn total_hits(&self) -> usize {
        self.state.hits.lock().unwrap().values().sum()
    }

    /// Every request so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// Applies `fault` to every answer from now on ([`Fault::None`] to stop).
    pub fn set_fault(&self, fault: Fault) {
        *self.state.fault.lock().unwrap() = fault;
    }

    /// Answers the next `n` requests for store path `rel` with `status` (e.g. 503) and a
    /// short text body; counted in [`Upstream::hits`] like any request.
    pub fn fail_next(&self, rel: &str, n: usize, status: u16) {
        self.state
            .fail_next
            .lock()
            .unwrap()
            .insert(rel.to_string(), (n, status));
    }
}

/// The store path of a key's file in one-tier layout, as [`Upstream::hits`] counts it.
pub fn rel_path(key: &symcascade::key::Key, form: symcascade::layout::Form) -> String {
    symcascade::layout::path_for(key, symcascade::layout::Tiering::OneTier, form).to_string()
}

#[derive(Default)]
struct ProxyState {
    user: String,
    password: String,
    forwarded: Mutex<Vec<Seen>>,
    rejected: Mutex<Vec<Seen>>,
}

/// A loopback forward proxy that demands basic auth (see the module doc).
pub struct Proxy {
    server: Background,
    state: Arc<ProxyState>,
}

impl Proxy {
    /// A proxy accepting only `Proxy-Authorization: Basic base64(user:password)`.
    pub fn start(user: &str, password: &str) -> Proxy {
        let state = Arc::new(ProxyState {
            user: user.into(),
            password: password.into(),
            ..Default::default()
        });
        let s = state.clone();
        let server = Background::start(move |conn| serve_proxy(conn, s.clone()));
        Proxy { server, state }
    }

    /// `127.0.0.1:<port>`, as `_NT_SYMBOL_PROXY` takes it.
    pub fn host_port(&self) -> String {
        self.server.addr.to_string()
    }

    /// Requests forwarded to an origin (they carried valid credentials), in order.
    pub fn forwarded(&self) -> Vec<Seen> {
        self.state.forwarded.lock().unwrap().clone()
    }

    /// Requests answered 407 (missing or wrong credentials), in order.
    pub fn rejected(&self) -> Vec<Seen> {
        self.state.rejected.lock().unwrap().clone()
    }
}

/// A server on its own thread and runtime; stopped when dropped.
struct Background {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Background {
    fn start<F, Fut>(handle: F) -> Background
    where
        F: Fn(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = TcpListener::from_std(std_listener).unwrap();
                loop {
                    tokio::select! {
                        _ = &mut stopped => break,
                        r = listener.accept() => {
                            if let Ok((conn, _)) = r {
                                tokio::spawn(handle(conn));
                            }
                        }
                    }
                }
            });
        });
        Background {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A request head.
struct Head {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn wants_close(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
    fn seen(&self) -> Seen {
        Seen {
            method: self.method.clone(),
            target: self.target.clone(),
            user_agent: self.header("user-agent").map(str::to_string),
        }
    }
}

/// Reads one request head (and discards a body), `None` at end of stream or on garbage.
async fn read_head<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> Option<Head> {
    let mut line = String::new();
    if r.read_line(&mut line).await.ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).await.ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let head = Head {
        method,
        target,
        headers,
    };
    if let Some(n) = head
        .header("content-length")
        .and_then(|v| v.parse::<u64>().ok())
    {
        tokio::io::copy(&mut r.take(n), &mut tokio::io::sink())
            .await
            .ok()?;
    }
    Some(head)
}

async fn serve_upstream(conn: TcpStream, st: Arc<UpstreamState>) {
    let (r, mut w) = conn.into_split();
    let mut r = BufReader::new(r);
    while let Some(head) = read_head(&mut r).await {
        st.seen.lock().unwrap().push(head.seen());
        if answer(&head, &st, &mut w).await.is_err() || head.wants_close() {
            break;
        }
    }
}

/// The store path a request target names, percent-decoded; `None` outside `/store/`.
fn store_rel(target: &str) -> Option<String> {
    let path = target.split(['?', '#']).next()?;
    let rest = path.strip_prefix("/store/")?;
    Some(
        percent_encoding::percent_decode_str(rest)
            .decode_utf8_lossy()
            .into_owned(),
    )
}

async fn answer(
    head: &Head,
    st: &UpstreamState,
    w: &mut tokio::net::tcp::OwnedWriteHalf,
) -> std::io::Result<()> {
    let close = if head.wants_close() {
        "Connection: close\r\n"
    } else {
        ""
    };
    let is_head = head.method.eq_ignore_ascii_case("HEAD");
    let rel = store_rel(&head.target);
    if let Some(rel) = &rel {
        *st.hits.lock().unwrap().entry(rel.clone()).or_default() += 1;
    }
    let fault = *st.fault.lock().unwrap();
    if let Fault::Delay(d) = fault {
        tokio::time::sleep(d).await;
    }
    let failing = rel.as_ref().and_then(|rel| {
        let mut f = st.fail_next.lock().unwrap();
        let e = f.get_mut(rel)?;
        (e.0 > 0).then(|| {
            e.0 -= 1;
            e.1
        })
    });
    let text = |status: u16, ctype: &str, body: &[u8]| {
        let mut v = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n{close}\r\n",
            body.len()
        )
        .into_bytes();
        if !is_head {
            v.extend_from_slice(body);
        }
        v
    };
    if let Some(status) = failing {
        return w.write_all(&text(status, "text/plain", b"busy")).await;
    }
    match fault {
        Fault::NoHead if is_head => return w.write_all(&text(405, "text/plain", b"")).await,
        Fault::HtmlPage => {
            let page = b"<!DOCTYPE html><html><body><h1>Welcome</h1>The page you asked for is not here.</body></html>";
            return w
                .write_all(&text(200, "text/html; charset=utf-8", page))
                .await;
        }
        Fault::Empty => {
            return w
                .write_all(&text(200, "application/octet-stream", b""))
                .await;
        }
        Fault::EmptyChunked => {
            let h = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n{close}\r\n"
            );
            w.write_all(h.as_bytes()).await?;
            return if is_head {
                Ok(())
            } else {
                w.write_all(b"0\r\n\r\n").await
            };
        }
        _ => {}
    }
    let file = rel.as_deref().and_then(|rel| {
        let parts: Vec<&str> = rel.split('/').collect();
        if parts
            .iter()
            .any(|p| p.is_empty() || *p == "." || *p == "..")
        {
            return None;
        }
        let p = parts.iter().fold(st.root.clone(), |p, c| p.join(c));
        p.is_file().then_some(p)
    });
    let Some(file) = file else {
        return w.write_all(&text(404, "text/plain", b"not found")).await;
    };
    let body = tokio::fs::read(&file).await?;
    let h = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n{close}\r\n",
        body.len()
    );
    w.write_all(h.as_bytes()).await?;
    if is_head {
        return Ok(());
    }
    match fault {
        Fault::Throttle { chunk, pause } => {
            for c in body.chunks(chunk.max(1)) {
                tokio::time::sleep(pause).await;
                w.write_all(c).await?;
                w.flush().await?;
            }
            Ok(())
        }
        Fault::CutAfter(n) => {
            w.write_all(&body[..n.min(body.len())]).await?;
            // An error ends the connection: the client sees it close midway.
            Err(std::io::ErrorKind::ConnectionAborted.into())
        }
        _ => w.write_all(&body).await,
    }
}

async fn serve_proxy(conn: TcpStream, st: Arc<ProxyState>) {
    let (r, mut w) = conn.into_split();
    let mut r = BufReader::new(r);
    let want = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", st.user, st.password))
    );
    while let Some(head) = read_head(&mut r).await {
        if head.header("proxy-authorization") != Some(want.as_str()) {
            st.rejected.lock().unwrap().push(head.seen());
            let a = "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"symcascade-test\"\r\nContent-Length: 0\r\n\r\n";
            if w.write_all(a.as_bytes()).await.is_err() {
                return;
            }
            continue;
        }
        st.forwarded.lock().unwrap().push(head.seen());
        // Forward one request on a fresh origin connection with `Connection: close`, copy the
        // answer until the origin closes, then close too: no response framing to parse.
        let _ = forward(&head, &mut w).await;
        return;
    }
}

async fn forward(head: &Head, w: &mut tokio::net::tcp::OwnedWriteHalf) -> std::io::Result<()> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, m.to_string());
    let rest = head
        .target
        .strip_prefix("http://")
        .ok_or_else(|| bad("not an absolute http:// target"))?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let origin: SocketAddr = authority
        .parse()
        .map_err(|_| bad("origin is not an IP:port"))?;
    // Only loopback origins: a test proxy must never reach out.
    if !origin.ip().is_loopback() {
        return w
            .write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            .await;
    }
    let mut up = TcpStream::connect(origin).await?;
    let mut req = format!(
        "{} {} HTTP/1.1\r\nHost: {authority}\r\n",
        head.method,
        if path.is_empty() { "/" } else { path }
    );
    for (k, v) in &head.headers {
        let skip = [
            "host",
            "connection",
            "proxy-connection",
            "proxy-authorization",
        ];
        if !skip.iter().any(|s| k.eq_ignore_ascii_case(s)) {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    req.push_str("Connection: close\r\n\r\n");
    up.write_all(req.as_bytes()).await?;
    tokio::io::copy(&mut up, w).await?;
    w.shutdown().await
}
