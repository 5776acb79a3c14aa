//! Configuration file (TOML): symbol path, SMB aliases and credentials, the HTTP client
//! (proxy, timeouts, retries), SymSrv blackout thresholds and SymProxy-style switches.
//!
//! Data flow: `--config FILE` (or `SYMCASCADE_CONFIG`) → [`Config::load`] → validated values
//! that build the SMB client, the store opener and the cascade options. Unknown keys are
//! rejected and every error names the file and the key. Durations are humantime strings
//! (`"30s"`, `"5m"`).

use crate::cascade::CascadeOptions;
use crate::smb::{Credentials, SmbConfig};
use crate::store::blackout::BlackoutPolicy;
use crate::store::http::{HttpConfig, ProxyCredentials};
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A configuration file, as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The symbol path (`srv*C:\Symbols*\\BranchOfficeA\Symbols*\\MainOffice\Symbols`).
    #[serde(default)]
    pub sympath: Option<String>,
    /// SMB settings.
    #[serde(default)]
    pub smb: SmbSection,
    /// HTTP(S) upstream stores: proxy, timeouts, retries.
    #[serde(default)]
    pub http_client: HttpClientSection,
    /// SymSrv `[timeouts]`: blackout of stores that keep timing out.
    #[serde(default)]
    pub timeouts: TimeoutsSection,
    /// Cascade switches (SymProxy option names).
    #[serde(default)]
    pub cascade: CascadeSection,
    /// The replication agent (`symcascade run`).
    #[serde(default)]
    pub agent: AgentSection,
    /// Logging.
    #[serde(default)]
    pub log: LogSection,
    /// The SymProxy-compatible HTTP front (off unless `listen` is set).
    #[serde(default)]
    pub http: HttpSection,
}

/// `[http]`: the HTTP front debuggers fetch through (`srv*C:\Symbols*http://127.0.0.1:8775`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// Address to listen on, e.g. `127.0.0.1:8775`. Absent: no HTTP front.
    #[serde(default)]
    pub listen: Option<std::net::SocketAddr>,
    /// Client networks allowed when `listen` is not a loopback address, e.g.
    /// `["10.1.0.0/16"]` (`["0.0.0.0/0", "::/0"]` allows everyone). Loopback clients are always
    /// allowed.
    #[serde(default)]
    pub allow: Vec<ipnet::IpNet>,
    /// Virtual directory the store is served under (SymProxy's IIS virtual directory), e.g.
    /// `/symbols`. Default: the root.
    #[serde(default)]
    pub prefix: Option<String>,
    /// Exclusion list file: one file-name pattern per line, `*` wildcards (`symsrv.ini`
    /// `[exclusions]` format). Re-read when it changes.
    #[serde(default)]
    pub exclusions: Option<PathBuf>,
    /// Longest a client waits for a transfer before it is answered "still working"
    /// (SymProxy: 25 s, under SymSrv's 30 s socket timeout); the transfer goes on in the
    /// background. A client's `Symbol-Agent-Receive-Timeout` header (ms) overrides it.
    #[serde(default = "d25s", deserialize_with = "duration")]
    pub client_timeout: Duration,
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection {
            listen: None,
            allow: Vec::new(),
            prefix: None,
            exclusions: None,
            client_timeout: d25s(),
        }
    }
}

/// `[agent]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    /// This agent's id (`[A-Za-z0-9_-]`, at most 64). Default: the host name.
    #[serde(default)]
    pub id: Option<String>,
    /// The store (as written in `sympath`) holding the shared queue. Default: the chain's
    /// second store (the intermediate/branch store).
    #[serde(default)]
    pub branch: Option<String>,
    /// Safety-net rescan of the queue. Default `30s`.
    #[serde(default = "d30s", deserialize_with = "duration")]
    pub rescan_interval: Duration,
    /// First retry of a pending back-fill (doubling up to 10 minutes). Default `30s`.
    #[serde(default = "d30s", deserialize_with = "duration")]
    pub backfill_interval: Duration,
    /// Watch and serve the branch queue. `false` runs only the HTTP front (a SymProxy-style
    /// branch server). Default `true`.
    #[serde(default = "yes")]
    pub queue: bool,
    /// How long a lease keeps other agents from pulling the same key. Default `2m`.
    #[serde(default = "d2m", deserialize_with = "duration")]
    pub lease_timeout: Duration,
    /// Records processed at once. Default 4.
    #[serde(default = "d_in_flight")]
    pub max_parallel: usize,
    /// Poll a local queue folder at this interval instead of using OS notifications (network
    /// file systems mounted by the OS need it). Default: OS notifications.
    #[serde(default, deserialize_with = "opt_duration")]
    pub poll_interval: Option<Duration>,
    /// Where back-fills and `status.json` live. Default `<local store>/000Cascade/agent`.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// How long in-flight copies may finish at shutdown. Default `20s`.
    #[serde(default = "d20s", deserialize_with = "duration")]
    pub shutdown_grace: Duration,
}

impl Default for AgentSection {
    fn default() -> Self {
        AgentSection {
            id: None,
            branch: None,
            rescan_interval: d30s(),
            backfill_interval: d30s(),
            queue: true,
            lease_timeout: d2m(),
            max_parallel: d_in_flight(),
            poll_interval: None,
            state_dir: None,
            shutdown_grace: d20s(),
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// `human` (default) or `json`.
    #[serde(default)]
    pub format: Option<String>,
    /// Also write logs to this file, rotated daily (for services).
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// Level filter, `RUST_LOG` syntax (e.g. `info`, `symcascade=debug`).
    #[serde(default)]
    pub level: Option<String>,
}

/// `[smb]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmbSection {
    /// Host aliases: `MainOffice = "127.0.0.1:44445"`.
    #[serde(default)]
    pub aliases: BTreeMap<String, String>,
    /// Credentials per host: `[smb.credentials.MainOffice] user = "…" password = "…"`.
    #[serde(default)]
    pub credentials: BTreeMap<String, Credentials>,
    /// A separate TOML file holding `[credentials.<host>]` tables (keep secrets out of the main
    /// config; relative to the config file).
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// Bound on connecting (TCP + negotiate + session + tree). Default `5s`.
    #[serde(default = "d5s", deserialize_with = "duration")]
    pub connect_timeout: Duration,
    /// Bound on each SMB request. Default `30s`.
    #[serde(default = "d30s", deserialize_with = "duration")]
    pub request_timeout: Duration,
    /// Bytes per READ/WRITE. Default 1 MiB.
    #[serde(default = "d_chunk")]
    pub chunk_size: usize,
    /// READs/WRITEs in flight per transfer. Default 4.
    #[serde(default = "d_in_flight")]
    pub in_flight: usize,
    /// Highest SMB dialect to offer: `"2.1"`, `"3.0"`, `"3.0.2"` or `"3.1.1"` (default).
    #[serde(default)]
    pub max_dialect: Option<String>,
}

impl Default for SmbSection {
    fn default() -> Self {
        SmbSection {
            aliases: BTreeMap::new(),
            credentials: BTreeMap::new(),
            credentials_file: None,
            connect_timeout: d5s(),
            request_timeout: d30s(),
            chunk_size: d_chunk(),
            in_flight: d_in_flight(),
            max_dialect: None,
        }
    }
}

/// `[http_client]`: how HTTP(S) stores are reached (see `store::http` for the semantics).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpClientSection {
    /// Proxy for every HTTP store, `host:port` or a URL, or `"direct"` for none; overrides
    /// `_NT_SYMBOL_PROXY`, which overrides `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY`.
    #[serde(default)]
    pub proxy: Option<String>,
    /// Hosts that bypass the proxy (`NO_PROXY` syntax); overrides `NO_PROXY`.
    #[serde(default)]
    pub no_proxy: Option<String>,
    /// Proxy basic-auth user; default `SYMCASCADE_PROXY_USER`.
    #[serde(default)]
    pub proxy_user: Option<String>,
    /// Proxy basic-auth password; default `SYMCASCADE_PROXY_PASSWORD`. Never printed.
    #[serde(default)]
    pub proxy_password: Option<String>,
    /// Bound on connecting (TCP and TLS). Default `10s`.
    #[serde(default = "d10s", deserialize_with = "duration")]
    pub connect_timeout: Duration,
    /// Idle bound: on the answer and on each chunk of a body (never on a whole transfer).
    /// Default `30s`.
    #[serde(default = "d30s", deserialize_with = "duration")]
    pub read_timeout: Duration,
    /// Retries after a 5xx answer, a timeout or a failed connection. Default 2.
    #[serde(default = "d_retries")]
    pub retries: u32,
    /// First pause between retries, doubled each time (at most 10 s). Default `250ms`.
    #[serde(default = "d250ms", deserialize_with = "duration")]
    pub retry_backoff: Duration,
    /// User-Agent. Default `Microsoft-Symbol-Server/10.0.0.0` (what SymSrv sends).
    #[serde(default)]
    pub user_agent: Option<String>,
}

impl Default for HttpClientSection {
    fn default() -> Self {
        HttpClientSection {
            proxy: None,
            no_proxy: None,
            proxy_user: None,
            proxy_password: None,
            connect_timeout: d10s(),
            read_timeout: d30s(),
            retries: d_retries(),
            retry_backoff: d250ms(),
            user_agent: None,
        }
    }
}

impl std::fmt::Debug for HttpClientSection {
    // Not derived: the password must never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClientSection")
            .field("proxy", &self.proxy)
            .field("no_proxy", &self.no_proxy)
            .field("proxy_user", &self.proxy_user)
            .field(
                "proxy_password",
                &self.proxy_password.as_ref().map(|_| "<redacted>"),
            )
            .field("connect_timeout", &self.connect_timeout)
            .field("read_timeout", &self.read_timeout)
            .field("retries", &self.retries)
            .field("retry_backoff", &self.retry_backoff)
            .field("user_agent", &self.user_agent)
            .finish()
    }
}

/// `[timeouts]`, as in `symsrv.ini`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsSection {
    /// Window in which timeouts are counted. Default `10m`.
    #[serde(default = "d10m", deserialize_with = "duration")]
    pub trigger: Duration,
    /// Timeouts in the window that start a blackout. Default 5.
    #[serde(default = "d_count")]
    pub count: usize,
    /// Blackout length. Default `15m`.
    #[serde(default = "d15m", deserialize_with = "duration")]
    pub blackout: Duration,
}

impl Default for TimeoutsSection {
    fn default() -> Self {
        TimeoutsSection {
            trigger: d10m(),
            count: d_count(),
            blackout: d15m(),
        }
    }
}

/// `[cascade]`: SymProxy's registry switches under their own names and with the same meaning
/// (Microsoft, "Configuring the Registry"). Time values are seconds (as SymProxy's DWORDs) or
/// humantime strings (`"5m"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct CascadeSection {
    /// `MissTimeout`: a key no upstream had is answered "missing" without asking upstream for
    /// this long; the first request after it re-queries. `0` disables the miss cache. Default
    /// 300 s.
    #[serde(default = "d5m", deserialize_with = "seconds")]
    pub miss_timeout: Duration,
    /// `MissAgeCheck`: period of the sweep that purges unused miss entries. Default 3600 s.
    #[serde(default = "d1h", deserialize_with = "seconds")]
    pub miss_age_check: Duration,
    /// `MissAgeTimeout`: a miss entry nobody asked for in this long is purged (the agent also
    /// drops a queued request that kept missing this long). Default 86400 s.
    #[serde(default = "d1d", deserialize_with = "seconds")]
    pub miss_age_timeout: Duration,
    /// `NoCache`: the HTTP front streams upstream hits to the client without storing them.
    #[serde(default)]
    pub no_cache: bool,
    /// `UriFilter`: bitmask of the request forms sent to upstream stores (HTTP 0x1 plain, 0x2
    /// compressed, 0x4 file.ptr; UNC 0x10/0x20/0x40). `0`: all forms. Default 0.
    #[serde(default)]
    pub uri_filter: u32,
    /// `UriTiers`: force the layout of every upstream store (1 or 2 tiers) instead of asking
    /// for `index2.txt`. `0`: detect. Default 0.
    #[serde(default)]
    pub uri_tiers: u32,
    /// Do not follow `file.ptr`.
    #[serde(default)]
    pub no_file_pointers: bool,
    /// Keep compressed files compressed everywhere.
    #[serde(default)]
    pub no_uncompress: bool,
    /// Directory for spool files. Default: the system temp dir.
    #[serde(default, rename = "spool_dir")]
    pub spool_dir: Option<PathBuf>,
    /// Extra SMB hosts `file.ptr` targets may point to (build drops). Default: only the hosts
    /// of the symbol path.
    #[serde(default, rename = "file_ptr_hosts")]
    pub file_ptr_hosts: Vec<String>,
    /// Extra local folders `file.ptr` targets may point into (build output folders). Default:
    /// only the local stores of the symbol path.
    #[serde(default, rename = "file_ptr_roots")]
    pub file_ptr_roots: Vec<PathBuf>,
}

impl Default for CascadeSection {
    fn default() -> Self {
        CascadeSection {
            miss_timeout: d5m(),
            miss_age_check: d1h(),
            miss_age_timeout: d1d(),
            no_cache: false,
            uri_filter: 0,
            uri_tiers: 0,
            no_file_pointers: false,
            no_uncompress: false,
            spool_dir: None,
            file_ptr_hosts: Vec::new(),
            file_ptr_roots: Vec::new(),
        }
    }
}

fn yes() -> bool {
    true
}
fn d25s() -> Duration {
    Duration::from_secs(25)
}
fn d1h() -> Duration {
    Duration::from_secs(3600)
}
fn d10s() -> Duration {
    Duration::from_secs(10)
}
fn d250ms() -> Duration {
    Duration::from_millis(250)
}
fn d_retries() -> u32 {
    2
}
fn d20s() -> Duration {
    Duration::from_secs(20)
}
fn d2m() -> Duration {
    Duration::from_secs(120)
}
fn d5m() -> Duration {
    Duration::from_secs(300)
}
fn d1d() -> Duration {
    Duration::from_secs(86400)
}
fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}
fn d5s() -> Duration {
    Duration::from_secs(5)
}
fn d30s() -> Duration {
    Duration::from_secs(30)
}
fn d10m() -> Duration {
    Duration::from_secs(600)
}
fn d15m() -> Duration {
    Duration::from_secs(900)
}
fn d_chunk() -> usize {
    1 << 20
}
fn d_in_flight() -> usize {
    4
}
fn d_count() -> usize {
    5
}

fn dialect(s: &str) -> Option<smb::Dialect> {
    Some(match s {
        "2.1" => smb::Dialect::Smb021,
        "3.0" => smb::Dialect::Smb030,
        "3.0.2" => smb::Dialect::Smb0302,
        "3.1.1" => smb::Dialect::Smb0311,
        _ => return None,
    })
}

/// A SymProxy-style time value: integer seconds (as the registry DWORD) or a humantime string.
fn seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Secs(s) => Ok(Duration::from_secs(s)),
        Raw::Text(s) => humantime::parse_duration(&s)
            .map_err(|e| serde::de::Error::custom(format!("invalid duration {s:?}: {e}"))),
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s)
        .map_err(|e| serde::de::Error::custom(format!("invalid duration {s:?}: {e}")))
}

/// A configuration that could not be used: names the file and, where known, the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key or a bad value (the message names the key and line).
    #[error("config {path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong, with the key.
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsFile {
    #[serde(default)]
    credentials: BTreeMap<String, Credentials>,
}

impl Config {
    /// Reads and validates `path`; a `credentials_file` is read too (relative to `path`).
    ///
    /// # Errors
    /// [`ConfigError`] naming the file and the offending key.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: shown.clone(),
            source,
        })?;
        let mut cfg = Config::parse(&text).map_err(|message| ConfigError::Invalid {
            path: shown.clone(),
            message,
        })?;
        if let Some(f) = cfg.smb.credentials_file.clone() {
            let f = path.parent().unwrap_or(Path::new(".")).join(f);
            let fshown = f.display().to_string();
            let text = std::fs::read_to_string(&f).map_err(|source| ConfigError::Io {
                path: fshown.clone(),
                source,
            })?;
            let creds: CredentialsFile =
                toml::from_str(&text).map_err(|e| ConfigError::Invalid {
                    path: fshown,
                    message: e.to_string(),
                })?;
            for (k, v) in creds.credentials {
                cfg.smb.credentials.entry(k).or_insert(v);
            }
        }
        Ok(cfg)
    }

    /// Parses and validates TOML text.
    ///
    /// # Errors
    /// The message names the key (and line) that is wrong.
    pub fn parse(text: &str) -> Result<Config, String> {
        let cfg: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        if let Some(p) = &cfg.sympath {
            p.parse::<crate::sympath::SymbolPath>()
                .map_err(|e| format!("key `sympath`: {e}"))?;
        }
        if cfg.smb.chunk_size < 4096 || cfg.smb.chunk_size > 8 << 20 {
            return Err("key `smb.chunk_size`: must be between 4096 and 8388608 bytes".into());
        }
        if cfg.smb.in_flight == 0 || cfg.smb.in_flight > 64 {
            return Err("key `smb.in_flight`: must be between 1 and 64".into());
        }
        if let Some(f) = &cfg.log.format
            && f != "human"
            && f != "json"
        {
            return Err(format!("key `log.format`: {f:?} is not `human` or `json`"));
        }
        if cfg.agent.max_parallel == 0 || cfg.agent.max_parallel > 64 {
            return Err("key `agent.max_parallel`: must be between 1 and 64".into());
        }
        if let Some(id) = &cfg.agent.id
            && !crate::queue::valid_agent_id(id)
        {
            return Err(format!(
                "key `agent.id`: {id:?} must be 1-64 of [A-Za-z0-9_-]"
            ));
        }
        if let Some(d) = &cfg.smb.max_dialect
            && dialect(d).is_none()
        {
            return Err(format!(
                "key `smb.max_dialect`: {d:?} is not one of \"2.1\", \"3.0\", \"3.0.2\", \"3.1.1\""
            ));
        }
        if !matches!(cfg.cascade.uri_tiers, 0..=2) {
            return Err(format!(
                "key `cascade.UriTiers`: {} is not 0 (detect), 1 or 2",
                cfg.cascade.uri_tiers
            ));
        }
        if cfg.cascade.uri_filter & !0xFF != 0 {
            return Err(format!(
                "key `cascade.UriFilter`: {:#x} has bits outside 0xFF",
                cfg.cascade.uri_filter
            ));
        }
        if let Some(p) = &cfg.http.prefix
            && (!p.starts_with('/') || p.contains(['\\', '%', '?', '#']) || p.contains("//"))
        {
            return Err(format!(
                "key `http.prefix`: {p:?} must be a plain absolute URL path like \"/symbols\""
            ));
        }
        if let Some(addr) = cfg.http.listen
            && !addr.ip().is_loopback()
            && cfg.http.allow.is_empty()
        {
            return Err(format!(
                "key `http.allow`: listening on {addr} (not loopback) needs an allow-list of client networks, e.g. allow = [\"10.0.0.0/8\"]"
            ));
        }
        let h = &cfg.http_client;
        if let Some(p) = &h.proxy
            && !p.trim().eq_ignore_ascii_case(crate::store::http::DIRECT)
        {
            crate::store::http::parse_proxy_url(p).map_err(|e| {
                format!(
                    "key `http_client.proxy`: not host:port, an http(s):// URL or \"direct\": {e}"
                )
            })?;
        }
        if h.proxy_password.is_some() && h.proxy_user.is_none() {
            return Err("key `http_client.proxy_password`: needs `proxy_user`".into());
        }
        if h.retries > 10 {
            return Err("key `http_client.retries`: must be at most 10".into());
        }
        if h.connect_timeout.is_zero() || h.read_timeout.is_zero() {
            return Err("key `http_client.connect_timeout`/`read_timeout`: must not be 0".into());
        }
        if let Some(ua) = &h.user_agent
            && (ua.is_empty() || !ua.chars().all(|c| c == ' ' || c.is_ascii_graphic()))
        {
            return Err("key `http_client.user_agent`: must be non-empty printable ASCII".into());
        }
        if cfg.timeouts.count == 0 {
            return Err("key `timeouts.count`: must be at least 1".into());
        }
        Ok(cfg)
    }

    /// SMB client settings; hosts without credentials fall back to `env_credentials`
    /// (`SYMCASCADE_SMB_*`).
    pub fn smb_config(&self, env_credentials: Option<Credentials>) -> SmbConfig {
        SmbConfig {
            aliases: self.smb.aliases.clone(),
            credentials: self.smb.credentials.clone(),
            default_credentials: env_credentials,
            connect_timeout: self.smb.connect_timeout,
            request_timeout: self.smb.request_timeout,
            chunk_size: self.smb.chunk_size,
            in_flight: self.smb.in_flight,
            max_dialect: self
                .smb
                .max_dialect
                .as_deref()
                .and_then(dialect)
                .unwrap_or(smb::Dialect::Smb0311),
            ..SmbConfig::default()
        }
    }

    /// HTTP client settings as written; the environment (`_NT_SYMBOL_PROXY`, `*_PROXY`,
    /// `SYMCASCADE_PROXY_*`) fills the gaps when the client is built.
    pub fn http_config(&self) -> HttpConfig {
        let h = &self.http_client;
        HttpConfig {
            proxy: h.proxy.clone(),
            no_proxy: h.no_proxy.clone(),
            proxy_credentials: h.proxy_user.clone().map(|user| ProxyCredentials {
                user,
                password: h.proxy_password.clone().unwrap_or_default(),
            }),
            connect_timeout: h.connect_timeout,
            read_timeout: h.read_timeout,
            retries: h.retries,
            retry_backoff: h.retry_backoff,
            user_agent: h
                .user_agent
                .clone()
                .unwrap_or_else(|| crate::store::http::DEFAULT_USER_AGENT.to_string()),
        }
    }

    /// Blackout thresholds.
    pub fn blackout(&self) -> BlackoutPolicy {
        BlackoutPolicy {
            trigger: self.timeouts.trigger,
            count: self.timeouts.count,
            blackout: self.timeouts.blackout,
        }
    }

    /// Cascade options.
    pub fn cascade_options(&self) -> CascadeOptions {
        CascadeOptions {
            follow_file_pointers: !self.cascade.no_file_pointers,
            uncompress: !self.cascade.no_uncompress,
            spool_dir: self.cascade.spool_dir.clone(),
            file_ptr_hosts: self.cascade.file_ptr_hosts.clone(),
            file_ptr_roots: self.cascade.file_ptr_roots.clone(),
            uri_filter: self.cascade.uri_filter,
            uri_tiers: match self.cascade.uri_tiers {
                1 => Some(crate::layout::Tiering::OneTier),
                2 => Some(crate::layout::Tiering::TwoTier),
                _ => None,
            },
            ..CascadeOptions::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_config_parses() {
        let c = Config::parse(
            r#"
sympath = 'srv*C:\Symbols*\\BranchOfficeA\Symbols*\\MainOffice\Symbols'
[smb]
aliases = { MainOffice = "127.0.0.1:44445" }
connect_timeout = "2s"
request_timeout = "1m"
[smb.credentials.MainOffice]
user = "CORP\\svc"
password = "x"
[timeouts]
trigger = "10m"
count = 5
blackout = "15m"
[cascade]
NoFilePointers = true
MissTimeout = 600
MissAgeTimeout = "2h"
UriFilter = 0x11
UriTiers = 1
[http]
listen = "0.0.0.0:8775"
allow = ["10.0.0.0/8", "fd00::/8"]
prefix = "/symbols"
"#,
        )
        .unwrap();
        assert_eq!(c.smb.request_timeout, Duration::from_secs(60));
        assert_eq!(c.smb.aliases["MainOffice"], "127.0.0.1:44445");
        assert!(!c.cascade_options().follow_file_pointers);
        assert_eq!(c.cascade.miss_timeout, Duration::from_secs(600));
        assert_eq!(c.cascade.miss_age_timeout, Duration::from_secs(7200));
        assert_eq!(c.cascade_options().uri_filter, 0x11);
        assert_eq!(c.http.allow.len(), 2);
    }

    #[test]
    fn http_client_section() {
        let d = Config::parse("").unwrap().http_config();
        assert_eq!(d, HttpConfig::default());
        let c = Config::parse(
            r#"
[http_client]
proxy = "proxy.corp:8080"
no_proxy = "symbols.corp"
proxy_user = 'CORP\svc'
proxy_password = "s3cret"
connect_timeout = "3s"
read_timeout = "1m"
retries = 4
retry_backoff = "100ms"
user_agent = "symcascade/0.1"
"#,
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("s3cret"));
        let h = c.http_config();
        assert_eq!(h.proxy.as_deref(), Some("proxy.corp:8080"));
        assert_eq!(h.proxy_credentials.as_ref().unwrap().password, "s3cret");
        assert_eq!(h.read_timeout, Duration::from_secs(60));
        assert_eq!(h.retry_backoff, Duration::from_millis(100));
        assert_eq!((h.retries, h.user_agent.as_str()), (4, "symcascade/0.1"));
        assert!(Config::parse("[http_client]\nproxy = \"DIRECT\"").is_ok());
    }

    #[test]
    fn errors_name_the_key() {
        for (text, key) in [
            ("[smb]\nconect_timeout = \"2s\"", "conect_timeout"),
            ("[smb]\nconnect_timeout = \"soon\"", "soon"),
            ("sympath = 'cache*a*b'", "sympath"),
            ("[smb]\nin_flight = 0", "smb.in_flight"),
            ("bogus = 1", "bogus"),
            ("[http]\nlisten = \"0.0.0.0:8775\"", "http.allow"),
            (
                "[http]\nlisten = \"127.0.0.1:8775\"\nprefix = \"sym\"",
                "http.prefix",
            ),
            ("[http]\nallow = [\"10.0.0.0/33\"]", "allow"),
            ("[cascade]\nUriTiers = 3", "UriTiers"),
            ("[cascade]\nMissTimeout = \"later\"", "later"),
            ("[http_client]\nproxy = \"ftp://p:21\"", "http_client.proxy"),
            ("[http_client]\nproxy_password = \"x\"", "proxy_password"),
            ("[http_client]\nretries = 11", "http_client.retries"),
            ("[http_client]\nread_timeout = \"0s\"", "read_timeout"),
            ("[http_client]\nproxy_usr = \"x\"", "proxy_usr"),
        ] {
            let e = Config::parse(text).unwrap_err();
            assert!(e.contains(key), "{text}: {e}");
        }
    }
}

#[cfg(test)]
mod example_tests {
    /// The example shipped in `examples/` (and shown in README) is a valid configuration.
    #[test]
    fn shipped_examples_parse() {
        let c = super::Config::parse(include_str!("../examples/symcascade.toml")).unwrap();
        assert_eq!(c.smb.aliases.len(), 2);
        assert_eq!(c.timeouts.count, 5);
        let d = super::Config::parse(include_str!("../examples/desktop.toml")).unwrap();
        assert_eq!(d.agent.max_parallel, 4);
        let b = super::Config::parse(include_str!("../examples/branch-server.toml")).unwrap();
        assert_eq!(
            b.agent.branch.as_deref(),
            Some("\\\\BranchOfficeA\\Symbols")
        );
        assert_eq!(b.log.format.as_deref(), Some("json"));
    }
}
