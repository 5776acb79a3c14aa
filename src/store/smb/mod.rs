//! SMB transport: symbol stores on `\\host\share\dir` reached with the pure-Rust `smb` crate,
//! no mounts.
//!
//! Data flow: [`SmbClient`] owns one [`Server`] per resolved `address:port` + user (host
//! aliases resolved first), each holding one connection, one session and one tree per share,
//! reused across requests and rebuilt after a drop. [`SmbStore`] maps the `Store` operations
//! onto create/read/write/rename calls on a tree; every call is bounded by a timeout.
//!
//! The `smb` crate's defects are neutralised here rather than patched (we may not vendor it):
//! our own transport (TCP_NODELAY, single-write framing, credit meter, see [`transport`]);
//! servers keyed by resolved address *and port* (the crate's `Client` keys by IP only, mixing
//! up two servers on one IP), so we never use `Client`; no `Directory::query` on hot paths
//! (exact-path probes only), so its lost wakeup cannot hang a lookup; sizes taken from the
//! CREATE response of the handle we read through (the crate caches it at open).

pub mod store;
pub mod transport;

pub use store::{DirChange, Listed, SmbStore};

use crate::store::{StoreError, StoreErrorKind};
use serde::Deserialize;
use smb::{Connection, ConnectionConfig, Session, Tree, UncPath};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use transport::{CreditMeter, MeteredTcp};

/// SMB credentials for one host. `Debug` never shows the password; nothing logs it.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// User name (`user`, `DOMAIN\user` or `user@realm`).
    pub user: String,
    /// Password.
    pub password: String,
    /// Domain, when not part of `user`.
    #[serde(default)]
    pub domain: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("domain", &self.domain)
            .finish()
    }
}

impl Credentials {
    /// `SYMCASCADE_SMB_USER`, `SYMCASCADE_SMB_PASSWORD`, `SYMCASCADE_SMB_DOMAIN` from `get`
    /// (the environment), or `None` when no user is set.
    pub fn from_env_with(get: impl Fn(&str) -> Option<String>) -> Option<Credentials> {
        let user = get("SYMCASCADE_SMB_USER").filter(|u| !u.is_empty())?;
        Some(Credentials {
            user,
            password: get("SYMCASCADE_SMB_PASSWORD").unwrap_or_default(),
            domain: get("SYMCASCADE_SMB_DOMAIN").filter(|d| !d.is_empty()),
        })
    }
}

/// SMB settings: host aliases, credentials, timeouts and transfer shape.
#[derive(Debug, Clone)]
pub struct SmbConfig {
    /// Host aliases, case-insensitive: `MainOffice` → `127.0.0.1:44445`, so real-looking UNC
    /// paths work anywhere.
    pub aliases: BTreeMap<String, String>,
    /// Credentials per host (as written in the path, or its alias target).
    pub credentials: BTreeMap<String, Credentials>,
    /// Credentials for hosts without an entry (from the environment by default).
    pub default_credentials: Option<Credentials>,
    /// Bound on TCP connect + negotiate + session setup + tree connect.
    pub connect_timeout: Duration,
    /// Bound on every single SMB request (one read chunk, one create, …).
    pub request_timeout: Duration,
    /// Bytes per READ/WRITE request, capped by the server's maximum. 1 MiB keeps each
    /// request's credit charge at 16 (see `transport`).
    pub chunk_size: usize,
    /// READ/WRITE requests in flight per transfer.
    pub in_flight: usize,
    /// Highest SMB dialect offered. Default 3.1.1 (pre-authentication integrity, AES-GMAC
    /// signing with Samba ≥ 4.15 / Windows Server 2022). 3.0 signs with AES-CMAC, 2.1 with
    /// HMAC-SHA256 (see BENCHMARKS.md for what each costs on a fast link).
    pub max_dialect: smb::Dialect,
    /// Credits the crate may lose on one connection before it is retired. The default leaves
    /// the backlog of 512 credits at least twice what [`MAX_SLOTS`] requests of [`MAX_CHUNK`]
    /// can hold (2 × 8 × 16 = 256).
    pub retire_after_lost_credits: u64,
    /// SMB 3 encryption (`[smb] encrypt`). Default [`SmbEncrypt::IfOffered`]: a share or
    /// server that requires it (`smb encrypt = required`, "Encrypt data access") works, and
    /// one that does not is read unencrypted (signing stays on either way).
    pub encrypt: SmbEncrypt,
}

/// `[smb] encrypt`: whether sessions are encrypted (AES-128/256-GCM or -CCM, as negotiated).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SmbEncrypt {
    /// Only servers that offer encryption are used, every session encrypted.
    Required,
    /// Encrypted when the server or share asks for it (the default).
    #[default]
    IfOffered,
    /// Never encrypted: a share that requires encryption refuses the connection.
    Off,
}

/// Added to a refused tree connect while `[smb] encrypt = "off"`.
const ENCRYPT_OFF_HINT: &str = " (a share that requires encryption — Windows' \"Encrypt data access\", Samba's `smb encrypt = required` — refuses unencrypted sessions so; `[smb] encrypt` is \"off\": set it to \"if-offered\")";

impl SmbEncrypt {
    /// The `smb` crate's mode.
    fn mode(self) -> smb::connection::EncryptionMode {
        use smb::connection::EncryptionMode as M;
        match self {
            SmbEncrypt::Required => M::Required,
            SmbEncrypt::IfOffered => M::Allowed,
            SmbEncrypt::Off => M::Disabled,
        }
    }
}

impl SmbConfig {
    /// Whether the built-in client has credentials for `host` (as written in the UNC path;
    /// its alias target counts too): a per-host entry or default credentials. On Windows a
    /// host without any is reached through the operating system's own SMB client instead, as
    /// SymSrv does, with the process's identity (see `store::open::Transports`).
    pub fn has_credentials(&self, host: &str) -> bool {
        self.credentials_for(host).is_some()
    }

    /// The credentials the built-in client uses for `host`: the entry for the host as
    /// written, its alias target or the target's host name, else the default credentials.
    pub fn credentials_for(&self, host: &str) -> Option<&Credentials> {
        let target = self
            .aliases
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(host))
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| host.to_string());
        let thost = target.rsplit_once(':').map_or(target.as_str(), |(h, _)| h);
        [host, target.as_str(), thost]
            .iter()
            .find_map(|h| {
                self.credentials
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(h))
                    .map(|(_, c)| c)
            })
            .or(self.default_credentials.as_ref())
    }
}

impl Default for SmbConfig {
    fn default() -> Self {
        SmbConfig {
            aliases: BTreeMap::new(),
            credentials: BTreeMap::new(),
            default_credentials: Credentials::from_env_with(|k| std::env::var(k).ok()),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            chunk_size: 1 << 20,
            in_flight: 4,
            max_dialect: smb::Dialect::Smb0311,
            retire_after_lost_credits: 256,
            encrypt: SmbEncrypt::default(),
        }
    }
}

/// The live part of a server: connection, session and trees, replaced as a whole.
pub(crate) struct Live {
    // Field order matters for drop: trees, then session, then connection.
    trees: tokio::sync::Mutex<HashMap<String, Arc<Tree>>>,
    session: Session,
    // Held only to keep the connection open while trees and sessions are in use.
    _conn: Connection,
    meter: Arc<CreditMeter>,
    dead: std::sync::atomic::AtomicBool,
    max_read: usize,
    max_write: usize,
    /// READ/WRITE slots on this connection: bounds the credits in flight so that a retiring
    /// connection always has enough left for what is already under way.
    pub(crate) slots: tokio::sync::Semaphore,
}

/// Credits the crate keeps asking the server for (`credits_backlog`).
const CREDIT_BACKLOG: u16 = 512;
/// Most READ/WRITE requests in flight on one connection.
pub(crate) const MAX_SLOTS: usize = 8;
/// Largest READ/WRITE we send: 1 MiB = 16 credits. Larger requests are split; bigger charges
/// would drain the crate's leaking credit pool faster than any retirement could help.
pub(crate) const MAX_CHUNK: usize = 1 << 20;

impl Live {
    pub(crate) fn usable(&self, retire_after: u64) -> bool {
        !self.dead.load(std::sync::atomic::Ordering::Relaxed) && self.meter.lost() < retire_after
    }
}

/// One SMB server (address, port, user): its current connection, rebuilt on demand.
pub struct Server {
    label: String,
    addr: SocketAddr,
    creds: Credentials,
    config: SmbConfig,
    live: tokio::sync::Mutex<Option<Arc<Live>>>,
    connects: std::sync::atomic::AtomicU64,
    retired_interims: std::sync::atomic::AtomicU64,
    /// The last failed connect and when it may be retried: requests meanwhile fail at once
    /// instead of each paying a connect timeout.
    failed: Mutex<Option<(std::time::Instant, Duration, StoreErrorKind, String)>>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("label", &self.label)
            .field("addr", &self.addr)
            .field("user", &self.creds.user)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// How many connections were made to this server so far (for tests and status).
    pub fn connects(&self) -> u64 {
        self.connects.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Interim `STATUS_PENDING` responses seen on all connections so far, and credits the
    /// crate lost on the current one (diagnostics for status and tests).
    pub async fn credit_stats(&self) -> (u64, u64) {
        let g = self.live.lock().await;
        let retired = self
            .retired_interims
            .load(std::sync::atomic::Ordering::Relaxed);
        match g.as_ref() {
            Some(l) => (retired + l.meter.interims(), l.meter.lost()),
            None => (retired, 0),
        }
    }

    /// The resolved socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The current connection, or a new one when there is none, it died, or the crate lost
    /// too many credits on it.
    pub(crate) async fn live(&self, store: &str) -> Result<Arc<Live>, StoreError> {
        let mut g = self.live.lock().await;
        if let Some(l) = g
            .as_ref()
            .filter(|l| l.usable(self.config.retire_after_lost_credits))
        {
            return Ok(l.clone());
        }
        if let Some((at, wait, kind, detail)) = self.failed.lock().expect("poisoned").clone()
            && at.elapsed() < wait
        {
            // `backoff`: answered from memory, not a new attempt (blackouts do not count it).
            return Err(StoreError::new(
                store,
                "backoff",
                "",
                kind,
                format!(
                    "{detail} (not retried for {:?})",
                    wait.saturating_sub(at.elapsed())
                ),
            ));
        }
        if let Some(old) = g.take() {
            self.retired_interims
                .fetch_add(old.meter.interims(), std::sync::atomic::Ordering::Relaxed);
            tracing::debug!(server = %self.label, lost_credits = old.meter.lost(),
                interims = old.meter.interims(), "retiring SMB connection");
        }
        let t = self.config.connect_timeout;
        let live = tokio::time::timeout(t, self.connect())
            .await
            .map_err(|_| {
                StoreError::new(
                    store,
                    "connect",
                    "",
                    StoreErrorKind::Timeout,
                    format!("no SMB session with {} within {t:?}", self.label),
                )
            })
            .and_then(|r| r.map_err(|e| map_error(store, "connect", "", &e)));
        let live = match live {
            Ok(l) => l,
            Err(e) => {
                let mut f = self.failed.lock().expect("poisoned");
                // Back off 2 s, doubling up to a minute, while the server stays down.
                let wait = f
                    .as_ref()
                    .map(|(_, w, _, _)| (*w * 2).min(Duration::from_secs(60)))
                    .unwrap_or(Duration::from_secs(2));
                *f = Some((std::time::Instant::now(), wait, e.kind, e.detail.clone()));
                return Err(e);
            }
        };
        *self.failed.lock().expect("poisoned") = None;
        let live = Arc::new(live);
        *g = Some(live.clone());
        Ok(live)
    }

    async fn connect(&self) -> smb::Result<Live> {
        let mut attempt = 0;
        loop {
            match self.connect_once().await {
                Err(e) if is_sign_failure(&e) && attempt < 3 => {
                    attempt += 1;
                    tracing::debug!(server = %self.label, "signature check failed during connect; retrying: {e}");
                }
                r => return r,
            }
        }
    }

    async fn connect_once(&self) -> smb::Result<Live> {
        self.connects
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let cfg = ConnectionConfig {
            timeout: Some(self.config.request_timeout),
            smb2_only_negotiate: true,
            compression_enabled: false,
            encryption_mode: self.config.encrypt.mode(),
            auth_methods: smb::connection::AuthMethodsConfig {
                ntlm: true,
                kerberos: false,
            },
            credits_backlog: Some(CREDIT_BACKLOG),
            max_dialect: Some(self.config.max_dialect),
            ..Default::default()
        };
        let meter = Arc::new(CreditMeter::default());
        let tcp =
            MeteredTcp::connect(self.addr, self.config.connect_timeout, meter.clone()).await?;
        let conn = Connection::from_transport(
            Box::new(tcp),
            &self.addr.ip().to_string(),
            smb::Guid::generate(),
            cfg,
        )
        .await?;
        let (user, domain) = split_user(&self.creds);
        let username = sspi::Username::new(&user, domain.as_deref())
            .map_err(|e| smb::Error::InvalidArgument(format!("user name {user:?}: {e}")))?;
        let session = conn
            .authenticate(sspi::AuthIdentity {
                username,
                password: self.creds.password.clone().into(),
            })
            .await?;
        let (max_read, max_write) = conn
            .conn_info()
            .map(|i| {
                (
                    i.negotiation.max_read_size as usize,
                    i.negotiation.max_write_size as usize,
                )
            })
            .unwrap_or((65536, 65536));
        tracing::debug!(server = %self.label, max_read, max_write, "SMB session established");
        Ok(Live {
            trees: tokio::sync::Mutex::new(HashMap::new()),
            session,
            _conn: conn,
            meter,
            dead: false.into(),
            max_read,
            max_write,
            slots: tokio::sync::Semaphore::new(self.config.in_flight.clamp(1, MAX_SLOTS)),
        })
    }

    /// The tree for `share` on a usable connection (connecting as needed).
    pub(crate) async fn tree(
        &self,
        store: &str,
        share: &str,
    ) -> Result<(Arc<Live>, Arc<Tree>), StoreError> {
        let mut attempt = 0;
        loop {
            match self.tree_once(store, share).await {
                Err((e, true)) if attempt < 3 => {
                    attempt += 1;
                    tracing::debug!(server = %self.label, "tree connect on a fresh connection: {e}");
                }
                r => return r.map_err(|(e, _)| e),
            }
        }
    }

    /// One tree-connect attempt; the flag says whether a retry on a new connection may help.
    async fn tree_once(
        &self,
        store: &str,
        share: &str,
    ) -> Result<(Arc<Live>, Arc<Tree>), (StoreError, bool)> {
        let live = self.live(store).await.map_err(|e| (e, false))?;
        let key = share.to_ascii_lowercase();
        let mut trees = live.trees.lock().await;
        if let Some(t) = trees.get(&key) {
            let t = t.clone();
            drop(trees);
            return Ok((live, t));
        }
        let unc = UncPath::new(&self.addr.ip().to_string())
            .and_then(|u| u.with_share(share))
            .map_err(|e| (map_error(store, "connect", share, &e), false))?;
        let tree =
            tokio::time::timeout(self.config.connect_timeout, live.session.tree_connect(&unc))
                .await
                .map_err(|_| {
                    live.dead.store(true, std::sync::atomic::Ordering::Relaxed);
                    let e = StoreError::new(
                        store,
                        "connect",
                        share,
                        StoreErrorKind::Timeout,
                        "tree connect timed out",
                    );
                    (e, false)
                })?
                .map_err(|e| {
                    let retry = is_sign_failure(&e);
                    if connection_level(&e) {
                        live.dead.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    let mut se = map_error(store, "connect", share, &e);
                    if se.kind == StoreErrorKind::PermissionDenied
                        && self.config.encrypt == SmbEncrypt::Off
                    {
                        // Servers refuse an unencrypted tree connect to a share that requires
                        // encryption with a plain ACCESS_DENIED: name the likely cause.
                        se.detail.push_str(ENCRYPT_OFF_HINT);
                    }
                    (se, retry)
                })?;
        let tree = Arc::new(tree);
        trees.insert(key, tree.clone());
        drop(trees);
        Ok((live, tree))
    }

    /// Marks `live` unusable after a connection-level failure or a timed-out call (whose
    /// credits the crate can never get back).
    pub(crate) fn poison(&self, live: &Live) {
        live.dead.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn split_user(c: &Credentials) -> (String, Option<String>) {
    if let Some((d, u)) = c.user.split_once('\\') {
        return (u.to_string(), Some(d.to_string()));
    }
    (c.user.clone(), c.domain.clone())
}

/// The SMB transport: one [`Server`] per resolved address, port and user.
#[derive(Debug)]
pub struct SmbClient {
    config: SmbConfig,
    servers: Mutex<HashMap<(SocketAddr, String), Arc<Server>>>,
}

impl SmbClient {
    /// A client with these settings.
    pub fn new(config: SmbConfig) -> Arc<SmbClient> {
        Arc::new(SmbClient {
            config,
            servers: Mutex::new(HashMap::new()),
        })
    }

    /// The settings.
    pub fn config(&self) -> &SmbConfig {
        &self.config
    }

    /// Resolves `host[:port]` (through the aliases) to a server; `store` names the store in
    /// errors.
    ///
    /// # Errors
    /// `Unreachable` when the name does not resolve, `AuthFailed` when no credentials apply.
    pub async fn server(
        &self,
        store: &str,
        host: &str,
        port: Option<u16>,
    ) -> Result<Arc<Server>, StoreError> {
        let alias = self
            .config
            .aliases
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(host))
            .map(|(_, v)| v.clone());
        let target = alias.clone().unwrap_or_else(|| host.to_string());
        let (thost, tport) = match target.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h.to_string(), p.parse::<u16>().ok()),
            _ => (target.clone(), None),
        };
        let port = port.or(tport).unwrap_or(445);
        let unreachable = |detail: String| {
            StoreError::new(store, "connect", "", StoreErrorKind::Unreachable, detail)
        };
        let addr = tokio::time::timeout(
            self.config.connect_timeout,
            tokio::net::lookup_host((thost.as_str(), port)),
        )
        .await
        .map_err(|_| unreachable(format!("resolving host {thost:?} timed out")))?
        .map_err(|e| unreachable(format!("cannot resolve host {thost:?}: {e}")))?
        .next()
        .ok_or_else(|| unreachable(format!("host {thost:?} has no address")))?;
        let creds = [host, thost.as_str(), target.as_str()]
            .iter()
            .find_map(|h| {
                self.config
                    .credentials
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(h))
                    .map(|(_, c)| c.clone())
            })
            .or_else(|| self.config.default_credentials.clone())
            .ok_or_else(|| {
                StoreError::new(
                    store,
                    "connect",
                    "",
                    StoreErrorKind::AuthFailed,
                    format!(
                        "no SMB credentials for host {host:?} (set SYMCASCADE_SMB_USER/PASSWORD or [smb.credentials])"
                    ),
                )
            })?;
        let key = (addr, creds.user.to_ascii_lowercase());
        let mut servers = self.servers.lock().expect("server map poisoned");
        Ok(servers
            .entry(key)
            .or_insert_with(|| {
                Arc::new(Server {
                    label: format!("{host} ({addr})"),
                    addr,
                    creds,
                    config: self.config.clone(),
                    live: tokio::sync::Mutex::new(None),
                    connects: 0.into(),
                    retired_interims: 0.into(),
                    failed: Mutex::new(None),
                })
            })
            .clone())
    }
}

/// The NTSTATUS inside an `smb` error, when there is one (read/write errors carry it only in
/// their message text).
pub fn nt_status(e: &smb::Error) -> Option<u32> {
    match e {
        smb::Error::ReceivedErrorMessage(s, _) | smb::Error::UnexpectedMessageStatus(s) => Some(*s),
        smb::Error::IoError(io) => status_in_text(&io.to_string()),
        other => status_in_text(&other.to_string()),
    }
}

/// The last NTSTATUS-looking `0x` + 8 hex digits in an error text (the crate formats them as
/// `(0xc0000034)` or `status: 0xc000007f.` depending on the path).
fn status_in_text(m: &str) -> Option<u32> {
    m.match_indices("0x")
        .filter_map(|(i, _)| {
            let hex: String = m[i + 2..]
                .chars()
                .take_while(|c| c.is_ascii_hexdigit())
                .collect();
            (hex.len() == 8)
                .then(|| u32::from_str_radix(&hex, 16).ok())
                .flatten()
        })
        .last()
}

/// NTSTATUS values we act on (MS-ERREF 2.3).
pub mod status {
    /// STATUS_OBJECT_NAME_NOT_FOUND
    pub const NAME_NOT_FOUND: u32 = 0xC000_0034;
    /// STATUS_OBJECT_PATH_NOT_FOUND
    pub const PATH_NOT_FOUND: u32 = 0xC000_003A;
    /// STATUS_OBJECT_NAME_INVALID
    pub const NAME_INVALID: u32 = 0xC000_0033;
    /// STATUS_NOT_A_DIRECTORY
    pub const NOT_A_DIRECTORY: u32 = 0xC000_0103;
    /// STATUS_FILE_IS_A_DIRECTORY
    pub const FILE_IS_A_DIRECTORY: u32 = 0xC000_00BA;
    /// STATUS_ACCESS_DENIED
    pub const ACCESS_DENIED: u32 = 0xC000_0022;
    /// STATUS_OBJECT_NAME_COLLISION
    pub const NAME_COLLISION: u32 = 0xC000_0035;
    /// STATUS_BAD_NETWORK_NAME (no such share)
    pub const BAD_NETWORK_NAME: u32 = 0xC000_00CC;
    /// STATUS_LOGON_FAILURE
    pub const LOGON_FAILURE: u32 = 0xC000_006D;
    /// STATUS_DISK_FULL
    pub const DISK_FULL: u32 = 0xC000_007F;
    /// STATUS_MEDIA_WRITE_PROTECTED
    pub const WRITE_PROTECTED: u32 = 0xC000_00A2;
    /// STATUS_NETWORK_ACCESS_DENIED
    pub const NETWORK_ACCESS_DENIED: u32 = 0xC000_00CA;
    /// STATUS_ACCOUNT_DISABLED etc. are folded into logon failure by servers.
    pub const WRONG_PASSWORD: u32 = 0xC000_006A;
    /// STATUS_QUOTA_EXCEEDED
    pub const QUOTA_EXCEEDED: u32 = 0xC000_0044;
    /// STATUS_DIRECTORY_NOT_EMPTY.
    pub const DIRECTORY_NOT_EMPTY: u32 = 0xC000_0101;
}

/// `true` for "this name does not exist" statuses (a miss, not an error).
pub fn is_not_found(e: &smb::Error) -> bool {
    matches!(
        nt_status(e),
        Some(status::NAME_NOT_FOUND | status::PATH_NOT_FOUND | status::NOT_A_DIRECTORY)
    )
}

/// `true` when the error means the connection cannot be trusted any more.
pub fn connection_level(e: &smb::Error) -> bool {
    use smb::Error as E;
    matches!(
        e,
        E::ConnectionStopped
            | E::TransportError(_)
            | E::OperationTimeout(..)
            | E::SignatureVerificationFailed
    ) || is_sign_failure(e)
        || is_async_refused(e)
}

/// `true` when the crate refused an interim (STATUS_PENDING) response it was not told to
/// expect: `smb` 0.12.1 answers `InvalidArgument("Async command is not allowed in this
/// context.")` (connection/worker/worker_trait.rs) and the connection's credit accounting is
/// then off, so it is replaced. No variant of its own: matched by text, pinned by a test.
pub fn is_async_refused(e: &smb::Error) -> bool {
    matches!(e, smb::Error::InvalidArgument(m) if m.starts_with("Async command is not allowed"))
}

/// `true` when the crate rejected a server message's signature. Seen intermittently under load
/// (with AES-CMAC and AES-GMAC alike) on responses Samba completed asynchronously: the
/// connection is then replaced and idempotent steps are retried.
pub fn is_sign_failure(e: &smb::Error) -> bool {
    use smb::connection::transformer::{TransformError, TransformPhase};
    matches!(
        e,
        smb::Error::SignatureVerificationFailed
            | smb::Error::TranformFailed(TransformError {
                outgoing: false,
                phase: TransformPhase::SignVerify,
                ..
            })
    )
}

/// Classifies an `smb` error for the cascade.
pub fn map_error(
    store: &str,
    op: &'static str,
    path: impl fmt::Display,
    e: &smb::Error,
) -> StoreError {
    let kind = match nt_status(e) {
        Some(status::ACCESS_DENIED | status::NETWORK_ACCESS_DENIED) => {
            StoreErrorKind::PermissionDenied
        }
        Some(status::LOGON_FAILURE | status::WRONG_PASSWORD) => StoreErrorKind::AuthFailed,
        Some(status::BAD_NETWORK_NAME) => StoreErrorKind::Unreachable,
        Some(status::DISK_FULL | status::QUOTA_EXCEEDED) => StoreErrorKind::DiskFull,
        Some(status::WRITE_PROTECTED) => StoreErrorKind::ReadOnly,
        Some(status::NAME_NOT_FOUND | status::PATH_NOT_FOUND) => StoreErrorKind::Unreachable,
        _ => match e {
            smb::Error::TransportError(smb::transport::TransportError::Timeout(_))
            | smb::Error::OperationTimeout(..) => StoreErrorKind::Timeout,
            smb::Error::TransportError(_) | smb::Error::ConnectionStopped => {
                StoreErrorKind::Unreachable
            }
            _ => StoreErrorKind::Io,
        },
    };
    let detail = match (kind, nt_status(e)) {
        (StoreErrorKind::Unreachable, Some(status::BAD_NETWORK_NAME)) => {
            "the share does not exist on this server".to_string()
        }
        (StoreErrorKind::AuthFailed, _) => {
            "the server rejected the user name or password".to_string()
        }
        _ => e.to_string(),
    };
    StoreError::new(store, op, path, kind, detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `smb` crate's errors we classify, as `smb` 0.12.1 builds them (a new version that
    /// renames or rewords them fails here, not in production).
    #[test]
    fn smb_error_classification_pinned_for_0_12_1() {
        use smb::connection::transformer::{TransformError, TransformPhase};
        let verify = smb::Error::TranformFailed(TransformError {
            outgoing: false,
            phase: TransformPhase::SignVerify,
            session_id: Some(1),
            why: "Failed to verify incoming message!",
            msg_id: Some(7),
        });
        assert!(is_sign_failure(&verify) && connection_level(&verify));
        assert!(is_sign_failure(&smb::Error::SignatureVerificationFailed));
        let outgoing = smb::Error::TranformFailed(TransformError {
            outgoing: true,
            phase: TransformPhase::SignVerify,
            session_id: None,
            why: "sign",
            msg_id: None,
        });
        assert!(!is_sign_failure(&outgoing));
        let pending =
            smb::Error::InvalidArgument("Async command is not allowed in this context.".into());
        assert!(is_async_refused(&pending) && connection_level(&pending));
        assert!(!is_async_refused(&smb::Error::InvalidArgument(
            "other".into()
        )));
        assert!(connection_level(&smb::Error::ConnectionStopped));
        let timeout = smb::Error::OperationTimeout(
            smb::error::TimedOutTask::ReceiveNextMessage,
            std::time::Duration::from_secs(1),
        );
        assert_eq!(
            map_error("s", "open", "p", &timeout).kind,
            StoreErrorKind::Timeout
        );
        assert_eq!(
            map_error("s", "open", "p", &smb::Error::ConnectionStopped).kind,
            StoreErrorKind::Unreachable
        );
    }

    #[test]
    fn credentials_known_per_host_alias_or_default() {
        let mut c = SmbConfig {
            default_credentials: None,
            ..SmbConfig::default()
        };
        assert!(!c.has_credentials("MainOffice"));
        c.aliases.insert("MainOffice".into(), "10.0.0.5:445".into());
        c.credentials.insert(
            "10.0.0.5".into(),
            Credentials {
                user: "u".into(),
                password: "p".into(),
                domain: None,
            },
        );
        assert!(c.has_credentials("mainoffice"), "through the alias target");
        assert!(!c.has_credentials("BranchOfficeA"));
        c.default_credentials = c.credentials.get("10.0.0.5").cloned();
        assert!(c.has_credentials("BranchOfficeA"));
    }

    #[test]
    fn credentials_never_print_the_password() {
        let c = Credentials {
            user: "u".into(),
            password: "hunter2".into(),
            domain: None,
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        let env = |k: &str| match k {
            "SYMCASCADE_SMB_USER" => Some("DOM\\bob".to_string()),
            "SYMCASCADE_SMB_PASSWORD" => Some("pw".to_string()),
            _ => None,
        };
        let c = Credentials::from_env_with(env).unwrap();
        assert_eq!(split_user(&c), ("bob".to_string(), Some("DOM".to_string())));
        assert!(Credentials::from_env_with(|_| None).is_none());
    }

    #[test]
    fn status_is_read_from_io_error_text() {
        assert_eq!(
            status_in_text("Read failed: Object Name Not Found (0xc0000034)."),
            Some(0xC000_0034)
        );
        assert_eq!(
            status_in_text("Server returned an error message with status: 0xc000007f."),
            Some(0xC000_007F)
        );
        assert_eq!(status_in_text("no status, just 0x12"), None);
    }
}
