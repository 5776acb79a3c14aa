//! Configuration file (TOML): symbol path, SMB aliases and credentials, the HTTP client
//! (proxy, timeouts, retries), SymSrv blackout thresholds and SymProxy-style switches.
//!
//! Data flow: `--config FILE` (or `SYMCASCADE_CONFIG`) → [`Config::load`] → validated values
//! that build the SMB client, the store opener and the cascade options. Unknown keys are
//! rejected and every error names the file and the key. Durations are humantime strings
//! (`"30s"`, `"5m"`).

use crate::cascade::CascadeOptions;
use crate::store::blackout::BlackoutPolicy;
use crate::store::http::{HttpConfig, ProxyCredentials};
use crate::store::smb::{Credentials, SmbConfig};
use crate::sympath::{Element, Location, StoreSpec, SymbolPath};
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
    /// Aging of the local tiers the agent writes (off unless a cap is set).
    #[serde(default)]
    pub aging: AgingSection,
    /// Bandwidth caps of background (and optionally interactive) transfers from remote
    /// stores, with schedule windows (see `bandwidth`). Default: no caps.
    #[serde(default)]
    pub bandwidth: crate::bandwidth::BandwidthSection,
    /// S3 buckets (`s3://bucket/prefix` stores): endpoint, region, addressing, credentials;
    /// each falls back to the standard `AWS_*` variable.
    #[serde(default)]
    pub s3: S3Section,
    /// Azure Blob containers (`az://account/container/prefix` stores): endpoint, shared key
    /// or SAS; each falls back to the standard `AZURE_STORAGE_*` variable.
    #[serde(default)]
    pub azure: AzureSection,
}

/// `[s3]` (see `store::object::S3Settings` for each key's semantics and environment
/// variable).
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Section {
    /// Endpoint of an S3-compatible server (`http://127.0.0.1:9000`); default AWS.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Region; default `us-east-1`.
    #[serde(default)]
    pub region: Option<String>,
    /// Path-style requests; default on with an endpoint, off for AWS.
    #[serde(default)]
    pub path_style: Option<bool>,
    /// Access key id.
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// Secret access key. Never printed.
    #[serde(default)]
    pub secret_access_key: Option<String>,
    /// Session token of temporary credentials. Never printed.
    #[serde(default)]
    pub session_token: Option<String>,
    /// Allow plain `http://` to an endpoint on another machine.
    #[serde(default)]
    pub allow_http: bool,
    /// Profile of the AWS shared files (`~/.aws/credentials`, `~/.aws/config`); default
    /// `AWS_PROFILE`, then `default`.
    #[serde(default)]
    pub profile: Option<String>,
}

/// `[azure]` (see `store::object::AzureSettings`).
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureSection {
    /// Blob endpoint (`http://127.0.0.1:10000/devstoreaccount1` for Azurite); default
    /// `https://<account>.blob.core.windows.net`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The storage account's shared key. Never printed.
    #[serde(default)]
    pub access_key: Option<String>,
    /// A SAS token. Never printed.
    #[serde(default)]
    pub sas: Option<String>,
    /// Allow plain `http://` to an endpoint on another machine.
    #[serde(default)]
    pub allow_http: bool,
}

impl std::fmt::Debug for S3Section {
    // Not derived: secrets must never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&Config::s3_settings(self), f)
    }
}

impl std::fmt::Debug for AzureSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&Config::azure_settings(self), f)
    }
}

/// `[aging]`: the agent keeps each local folder tier it writes under these caps (AgeStore's
/// job; last use = write time, refreshed at most hourly when a file is served).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgingSection {
    /// Size cap of each tier, e.g. `"50GB"` or `"512MiB"`; least recently used keys go first.
    #[serde(default)]
    pub max_size: Option<String>,
    /// Keys not used for this long are removed (e.g. `"30d"`).
    #[serde(default, deserialize_with = "opt_duration")]
    pub unused_for: Option<Duration>,
    /// How often the tiers are checked. Default `1m`.
    #[serde(default = "d1m", deserialize_with = "duration")]
    pub interval: Duration,
    /// Keys with a file written more recently than this are left alone (another program may
    /// be writing them). Default `30s`.
    #[serde(default = "d30s", deserialize_with = "duration")]
    pub grace: Duration,
}

impl Default for AgingSection {
    fn default() -> Self {
        AgingSection {
            max_size: None,
            unused_for: None,
            interval: d1m(),
            grace: d30s(),
        }
    }
}

fn d1m() -> Duration {
    Duration::from_secs(60)
}

impl AgingSection {
    /// The aging policy (`max_size` in bytes); `max_size` was validated at load.
    pub fn policy(&self) -> crate::admin::age::AgePolicy {
        crate::admin::age::AgePolicy {
            unused_for: self.unused_for,
            max_size: self
                .max_size
                .as_deref()
                .and_then(|m| crate::admin::parse_size(m).ok()),
        }
    }
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
    /// Open client connections at most; beyond it a new connection gets 503 and is closed.
    /// Also kept below the process's open-file limit. Default 4096.
    #[serde(default = "d_max_connections")]
    pub max_connections: usize,
    /// A connection that sends no complete request head for this long (idle between
    /// requests, or too slow sending one) is closed. Default `15s`.
    #[serde(default = "d15s", deserialize_with = "duration")]
    pub idle_timeout: Duration,
    /// Cold lookups (misses in the front's store) running at once; more wait in a queue of
    /// 16× this size, beyond which clients get SymProxy's 503 "still working". Default 64.
    #[serde(default = "d_max_cold")]
    pub max_cold_lookups: usize,
}

fn d_max_connections() -> usize {
    4096
}
fn d_max_cold() -> usize {
    64
}
fn d15s() -> Duration {
    Duration::from_secs(15)
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection {
            listen: None,
            allow: Vec::new(),
            prefix: None,
            exclusions: None,
            client_timeout: d25s(),
            max_connections: d_max_connections(),
            idle_timeout: d15s(),
            max_cold_lookups: d_max_cold(),
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
    /// Temp files (`*.symcascade-tmp`) older than this in a local tier are leftovers of a
    /// writer that died (a crash, a power cut) and are removed at start and every hour.
    /// Default `1h` (far longer than any live writer leaves a temp file untouched).
    #[serde(default = "d1h", deserialize_with = "duration")]
    pub temp_max_age: Duration,
    /// Companion prefetch: after an image (`.dll`, `.exe`, `.sys`) is fetched, its PDB (named
    /// by the image's CodeView record) is fetched too, before a debugger asks. Default `true`.
    #[serde(default = "yes")]
    pub companions: bool,
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
            temp_max_age: d1h(),
            companions: true,
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// `human` (default) or `json`.
    #[serde(default)]
    pub format: Option<String>,
    /// Also write logs to this file (for services). It keeps its name; rotated files are
    /// `<file>.1` (newest) … `<file>.<max_files>`, see `daily`, `max_size`, `max_files`.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// Level filter, `RUST_LOG` syntax (e.g. `info`, `symcascade=debug`).
    #[serde(default)]
    pub level: Option<String>,
    /// One log line per store probe (store, path, form, result, ms), like SymSrv's
    /// `!sym noisy`; the same as `--noisy`.
    #[serde(default)]
    pub noisy: bool,
    /// Rotate `file` at local midnight (default `true`).
    #[serde(default = "yes")]
    pub daily: bool,
    /// Rotate `file` when it reaches this size: bytes, or a string such as `"10MiB"`, `"50MB"`.
    #[serde(default, deserialize_with = "opt_size")]
    pub max_size: Option<u64>,
    /// Rotated files kept besides the current one (default 7, 1 to 1000).
    #[serde(default = "d_max_files")]
    pub max_files: usize,
    /// How often a long transfer logs its progress (key, bytes, rate); default 10 s.
    #[serde(default = "d10s", deserialize_with = "duration")]
    pub progress_interval: Duration,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            format: None,
            file: None,
            level: None,
            noisy: false,
            daily: true,
            max_size: None,
            max_files: d_max_files(),
            progress_interval: d10s(),
        }
    }
}

fn d_max_files() -> usize {
    7
}

/// A size: integer bytes or a string with a unit (see [`crate::units::parse_size`]).
fn opt_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Bytes(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Bytes(b) => Ok(Some(b)),
        Raw::Text(s) => crate::units::parse_size(&s)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
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
    /// SMB 3 encryption: `"if-offered"` (default: encrypted where the share or server
    /// requires it), `"required"` or `"off"`.
    #[serde(default)]
    pub encrypt: crate::store::smb::SmbEncrypt,
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
            encrypt: Default::default(),
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
#[non_exhaustive]
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
    /// TOML syntax, an unknown key or a bad value (the error names the key).
    #[error("config {path}: {error}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong, with the key.
        #[source]
        error: InvalidConfig,
    },
}

/// What is wrong with a configuration's content; every variant names the key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidConfig {
    /// TOML syntax, an unknown key or a value of the wrong type (the TOML parser's message,
    /// which names the key and the line).
    #[error("{0}")]
    Syntax(String),
    /// A value outside what the key accepts.
    #[error("key `{key}`: {reason}")]
    Value {
        /// The key, e.g. `smb.in_flight`.
        key: &'static str,
        /// Why, with what is accepted.
        reason: String,
    },
    /// A path that cannot work on the platform symcascade runs on.
    #[error("key `{key}`: `{path}` {problem}")]
    Path {
        /// The key, e.g. `log.file`.
        key: &'static str,
        /// The path as written.
        path: String,
        /// Why it cannot work, with a hint.
        problem: PathProblem,
    },
    /// A duration a timer cannot use.
    #[error("key `{key}`: {value:?} {problem}")]
    Duration {
        /// The key, e.g. `agent.rescan_interval`.
        key: &'static str,
        /// The value, as humantime.
        value: String,
        /// Why.
        problem: DurationProblem,
    },
    /// A `[bandwidth]` value that cannot work (the key names the window: `bandwidth.windows[1].days`).
    #[error("key `{key}`: {reason}")]
    Bandwidth {
        /// The key, e.g. `bandwidth.background`.
        key: String,
        /// Why, with what is accepted.
        reason: String,
    },
    /// A malformed symbol path.
    #[error("key `sympath`: {0}")]
    SymbolPath(#[from] crate::sympath::SymbolPathError),
    /// A local store of the symbol path that cannot work on this platform.
    #[error("key `sympath`: local store `{path}` {problem}")]
    SympathStore {
        /// The store's path as written.
        path: String,
        /// Why it cannot work, with a hint.
        problem: PathProblem,
    },
    /// A chain (symbol path plus `[agent]` settings) the agent cannot replicate with, e.g. no
    /// store between local and upstream to hold the queue.
    #[error("key `{key}`: {reason}; {hint}")]
    Chain {
        /// The key to change: `sympath`, `agent.branch`, `agent.id`, `agent.queue`.
        key: &'static str,
        /// What is wrong.
        reason: String,
        /// What to write instead.
        hint: String,
    },
}

impl InvalidConfig {
    /// The key the error is about (`None` for TOML syntax errors, whose message names it).
    pub fn key(&self) -> Option<&str> {
        match self {
            InvalidConfig::Syntax(_) => None,
            InvalidConfig::Value { key, .. }
            | InvalidConfig::Path { key, .. }
            | InvalidConfig::Duration { key, .. }
            | InvalidConfig::Chain { key, .. } => Some(key),
            InvalidConfig::Bandwidth { key, .. } => Some(key),
            InvalidConfig::SymbolPath(_) | InvalidConfig::SympathStore { .. } => Some("sympath"),
        }
    }
}

/// The operating system a configuration is checked for: paths are interpreted by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Platform {
    /// Drive (`C:\…`) and UNC (`\\host\share\…`) paths.
    Windows,
    /// POSIX paths (`/var/…`); a backslash is an ordinary character in a file name.
    Posix,
}

impl Platform {
    /// The platform this build runs on.
    pub fn current() -> Platform {
        if cfg!(windows) {
            Platform::Windows
        } else {
            Platform::Posix
        }
    }

    /// Why `path` cannot be used as an absolute local path on this platform, if it cannot.
    ///
    /// Config files are read by services, whose working directory means nothing, so relative
    /// paths are refused too. On POSIX a Windows path (`C:\x`, `\\host\share`, any `\`) would
    /// be a relative file name with backslashes in it, created in the working directory.
    pub fn path_problem(self, path: &str) -> Option<PathProblem> {
        if path.is_empty() {
            return Some(PathProblem::Empty);
        }
        if path.chars().any(char::is_control) {
            return Some(PathProblem::ControlCharacter);
        }
        match self {
            Platform::Posix if crate::store::is_drive_path(path) || path.contains('\\') => {
                Some(PathProblem::WindowsPathOnPosix)
            }
            Platform::Posix if !path.starts_with('/') => Some(PathProblem::Relative),
            Platform::Windows if path.starts_with(['/', '\\']) && !path.starts_with("\\\\") => {
                // `\x` and `/x` are relative to the current drive; `//` is not UNC here.
                Some(PathProblem::PosixPathOnWindows)
            }
            Platform::Windows => {
                // `C:\x` or `\\host\share`; `C:x` is relative to drive C's current folder.
                let drive_rooted =
                    crate::store::is_drive_path(path) && path[2..].starts_with(['\\', '/']);
                (!drive_rooted && !path.starts_with("\\\\")).then_some(PathProblem::Relative)
            }
            _ => None,
        }
    }
}

/// Why a path in a configuration cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathProblem {
    /// Empty.
    #[error("is empty")]
    Empty,
    /// NUL or another control character.
    #[error("has control characters")]
    ControlCharacter,
    /// A Windows path on a POSIX system.
    #[error(
        "is a Windows path: use a POSIX path on this system (e.g. /var/lib/symcascade/…); the examples are written for Windows"
    )]
    WindowsPathOnPosix,
    /// A rooted path without a drive on Windows.
    #[error("has no drive: use a drive path (C:\\…) or a UNC path (\\\\host\\share\\…) on Windows")]
    PosixPathOnWindows,
    /// A relative path.
    #[error(
        "is relative: use an absolute path (a service's working directory is not a place to keep files)"
    )]
    Relative,
}

/// Why a duration was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DurationProblem {
    /// Zero where a period or a bound is needed.
    #[error("must be more than 0")]
    Zero,
    /// Longer than [`MAX_DURATION`]: timers would overflow.
    #[error("is too long (at most 365 days)")]
    TooLong,
}

/// The longest duration any key accepts: deadlines computed from it must not overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 86400);

/// The local folders a symbol path names, as written.
fn local_stores(path: &SymbolPath) -> impl Iterator<Item = &str> {
    path.elements.iter().flat_map(|e| {
        let specs: Vec<&StoreSpec> = match e {
            Element::Server { stores, .. } => stores.iter().collect(),
            Element::Cache { store } => vec![store],
            Element::Plain { .. } => Vec::new(),
        };
        let plain = match e {
            Element::Plain {
                location: Location::Local { path },
            } => Some(path.as_str()),
            _ => None,
        };
        specs
            .into_iter()
            .filter_map(|s| match s {
                StoreSpec::At(Location::Local { path }) => Some(path.as_str()),
                _ => None,
            })
            .chain(plain)
    })
}

/// A Windows local store on POSIX (`srv*C:\Symbols*…`) would be a folder with a backslash in
/// its name, in the working directory. Relative stores pass here: `get` resolves them against
/// its working directory (see [`check_agent_stores`] for the agent).
fn check_sympath_stores(path: &SymbolPath, platform: Platform) -> Result<(), InvalidConfig> {
    for store in local_stores(path) {
        if let Some(problem @ PathProblem::WindowsPathOnPosix) = platform.path_problem(store) {
            return Err(InvalidConfig::SympathStore {
                path: store.to_string(),
                problem,
            });
        }
    }
    Ok(())
}

/// For the agent (`symcascade run`, the service): every local store of its chain must be an
/// absolute path for `platform`, since a service's working directory means nothing.
///
/// # Errors
/// [`InvalidConfig::SympathStore`] naming the first store that is not.
pub fn check_agent_stores<'a>(
    stores: impl IntoIterator<Item = &'a Location>,
    platform: Platform,
) -> Result<(), InvalidConfig> {
    for store in stores {
        if let Location::Local { path } = store
            && let Some(problem) = platform.path_problem(path)
        {
            return Err(InvalidConfig::SympathStore {
                path: path.clone(),
                problem,
            });
        }
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsFile {
    #[serde(default)]
    credentials: BTreeMap<String, Credentials>,
}

fn bad(key: &'static str, reason: impl Into<String>) -> InvalidConfig {
    InvalidConfig::Value {
        key,
        reason: reason.into(),
    }
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
        let mut cfg = Config::parse(&text).map_err(|error| ConfigError::Invalid {
            path: shown.clone(),
            error,
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
                    error: InvalidConfig::Syntax(e.to_string()),
                })?;
            for (k, v) in creds.credentials {
                cfg.smb.credentials.entry(k).or_insert(v);
            }
        }
        Ok(cfg)
    }

    /// Parses and validates TOML text for the platform this build runs on.
    ///
    /// # Errors
    /// [`InvalidConfig`] naming the key that is wrong.
    pub fn parse(text: &str) -> Result<Config, InvalidConfig> {
        Config::parse_for(text, Platform::current())
    }

    /// Parses and validates TOML text, interpreting paths as `platform` does.
    ///
    /// # Errors
    /// [`InvalidConfig`] naming the key that is wrong.
    pub fn parse_for(text: &str, platform: Platform) -> Result<Config, InvalidConfig> {
        let cfg: Config = toml::from_str(text).map_err(|e| InvalidConfig::Syntax(e.to_string()))?;
        if let Some(p) = &cfg.sympath {
            let path: SymbolPath = p.parse()?;
            check_sympath_stores(&path, platform)?;
        }
        cfg.check_paths(platform)?;
        cfg.check_durations()?;
        cfg.check_smb_and_agent()?;
        cfg.check_cascade_and_http()?;
        cfg.check_http_client()?;
        cfg.check_objects()?;
        cfg.check_aging()?;
        cfg.bandwidth_policy()?;
        Ok(cfg)
    }

    /// `[bandwidth]`, checked: rates, days and hours of each window.
    ///
    /// # Errors
    /// [`InvalidConfig::Value`] naming the key (e.g. `bandwidth.windows[0].hours`).
    pub fn bandwidth_policy(&self) -> Result<crate::bandwidth::Policy, InvalidConfig> {
        crate::bandwidth::Policy::parse(&self.bandwidth).map_err(|e| InvalidConfig::Bandwidth {
            key: e.key,
            reason: e.reason,
        })
    }

    /// `[aging]`: a readable size; periods above zero and bounded.
    fn check_aging(&self) -> Result<(), InvalidConfig> {
        if let Some(m) = &self.aging.max_size {
            crate::admin::parse_size(m).map_err(|e| bad("aging.max_size", e.to_string()))?;
        }
        let periods = [
            ("aging.interval", Some(self.aging.interval)),
            ("aging.unused_for", self.aging.unused_for),
        ];
        if self.aging.grace > MAX_DURATION {
            return Err(InvalidConfig::Duration {
                key: "aging.grace",
                value: humantime::format_duration(self.aging.grace).to_string(),
                problem: DurationProblem::TooLong,
            });
        }
        for (key, d) in periods {
            let Some(d) = d else { continue };
            let problem = if d.is_zero() {
                DurationProblem::Zero
            } else if d > MAX_DURATION {
                DurationProblem::TooLong
            } else {
                continue;
            };
            return Err(InvalidConfig::Duration {
                key,
                value: humantime::format_duration(d).to_string(),
                problem,
            });
        }
        Ok(())
    }

    /// Every file or folder key: absolute, and written for `platform`.
    fn check_paths(&self, platform: Platform) -> Result<(), InvalidConfig> {
        let keys: [(&'static str, Option<&PathBuf>); 4] = [
            ("log.file", self.log.file.as_ref()),
            ("agent.state_dir", self.agent.state_dir.as_ref()),
            ("http.exclusions", self.http.exclusions.as_ref()),
            ("cascade.spool_dir", self.cascade.spool_dir.as_ref()),
        ];
        for (key, path) in keys {
            let Some(path) = path else { continue };
            let text = path.to_string_lossy();
            if let Some(problem) = platform.path_problem(&text) {
                return Err(InvalidConfig::Path {
                    key,
                    path: text.into_owned(),
                    problem,
                });
            }
        }
        // Relative to the config file by design; only a Windows path on POSIX is wrong.
        if let Some(f) = &self.smb.credentials_file {
            let text = f.to_string_lossy();
            if let Some(problem @ (PathProblem::WindowsPathOnPosix | PathProblem::Empty)) =
                platform.path_problem(&text)
            {
                return Err(InvalidConfig::Path {
                    key: "smb.credentials_file",
                    path: text.into_owned(),
                    problem,
                });
            }
        }
        Ok(())
    }

    /// Periods must be above zero (a zero tokio interval panics) and every duration bounded
    /// (an `Instant` plus a huge duration overflows).
    fn check_durations(&self) -> Result<(), InvalidConfig> {
        let (a, s, h, t, c) = (
            &self.agent,
            &self.smb,
            &self.http_client,
            &self.timeouts,
            &self.cascade,
        );
        let nonzero = [
            ("smb.connect_timeout", s.connect_timeout),
            ("smb.request_timeout", s.request_timeout),
            ("http_client.connect_timeout", h.connect_timeout),
            ("http_client.read_timeout", h.read_timeout),
            ("agent.rescan_interval", a.rescan_interval),
            ("agent.backfill_interval", a.backfill_interval),
            ("agent.lease_timeout", a.lease_timeout),
            ("agent.temp_max_age", a.temp_max_age),
            ("http.idle_timeout", self.http.idle_timeout),
            ("log.progress_interval", self.log.progress_interval),
        ];
        let poll = a.poll_interval.map(|p| ("agent.poll_interval", p));
        let other = [
            ("agent.shutdown_grace", a.shutdown_grace),
            ("http.client_timeout", self.http.client_timeout),
            ("http_client.retry_backoff", h.retry_backoff),
            ("timeouts.trigger", t.trigger),
            ("timeouts.blackout", t.blackout),
            ("cascade.MissTimeout", c.miss_timeout),
            ("cascade.MissAgeCheck", c.miss_age_check),
            ("cascade.MissAgeTimeout", c.miss_age_timeout),
        ];
        for (key, d, zero_ok) in nonzero
            .into_iter()
            .chain(poll)
            .map(|(k, d)| (k, d, false))
            .chain(other.into_iter().map(|(k, d)| (k, d, true)))
        {
            let problem = if d.is_zero() && !zero_ok {
                DurationProblem::Zero
            } else if d > MAX_DURATION {
                DurationProblem::TooLong
            } else {
                continue;
            };
            return Err(InvalidConfig::Duration {
                key,
                value: humantime::format_duration(d).to_string(),
                problem,
            });
        }
        Ok(())
    }

    fn check_smb_and_agent(&self) -> Result<(), InvalidConfig> {
        if self.smb.chunk_size < 4096 || self.smb.chunk_size > 8 << 20 {
            return Err(bad(
                "smb.chunk_size",
                "must be between 4096 and 8388608 bytes",
            ));
        }
        if self.http.max_connections == 0 || self.http.max_connections > 1_000_000 {
            return Err(bad("http.max_connections", "must be between 1 and 1000000"));
        }
        if self.http.max_cold_lookups == 0 || self.http.max_cold_lookups > 4096 {
            return Err(bad("http.max_cold_lookups", "must be between 1 and 4096"));
        }
        if self.smb.in_flight == 0 || self.smb.in_flight > 64 {
            return Err(bad("smb.in_flight", "must be between 1 and 64"));
        }
        if let Some(d) = &self.smb.max_dialect
            && dialect(d).is_none()
        {
            return Err(bad(
                "smb.max_dialect",
                format!("{d:?} is not one of \"2.1\", \"3.0\", \"3.0.2\", \"3.1.1\""),
            ));
        }
        if let Some(f) = &self.log.format
            && f != "human"
            && f != "json"
        {
            return Err(bad("log.format", format!("{f:?} is not `human` or `json`")));
        }
        if self.log.max_files == 0 || self.log.max_files > 1000 {
            return Err(bad("log.max_files", "must be between 1 and 1000"));
        }
        if self.log.max_size.is_some_and(|s| s < 4096) {
            return Err(bad("log.max_size", "must be at least 4096 bytes (4KiB)"));
        }
        if self.agent.max_parallel == 0 || self.agent.max_parallel > 64 {
            return Err(bad("agent.max_parallel", "must be between 1 and 64"));
        }
        if let Some(id) = &self.agent.id
            && !crate::queue::valid_agent_id(id)
        {
            return Err(bad(
                "agent.id",
                format!("{id:?} must be 1-64 of [A-Za-z0-9_-]"),
            ));
        }
        if self.timeouts.count == 0 {
            return Err(bad("timeouts.count", "must be at least 1"));
        }
        Ok(())
    }

    fn check_cascade_and_http(&self) -> Result<(), InvalidConfig> {
        if !matches!(self.cascade.uri_tiers, 0..=2) {
            return Err(bad(
                "cascade.UriTiers",
                format!("{} is not 0 (detect), 1 or 2", self.cascade.uri_tiers),
            ));
        }
        if self.cascade.uri_filter & !0xFF != 0 {
            return Err(bad(
                "cascade.UriFilter",
                format!("{:#x} has bits outside 0xFF", self.cascade.uri_filter),
            ));
        }
        if let Some(p) = &self.http.prefix
            && (!p.starts_with('/') || p.contains(['\\', '%', '?', '#']) || p.contains("//"))
        {
            return Err(bad(
                "http.prefix",
                format!("{p:?} must be a plain absolute URL path like \"/symbols\""),
            ));
        }
        if let Some(addr) = self.http.listen
            && !addr.ip().is_loopback()
            && self.http.allow.is_empty()
        {
            return Err(bad(
                "http.allow",
                format!(
                    "listening on {addr} (not loopback) needs an allow-list of client networks, e.g. allow = [\"10.0.0.0/8\"]"
                ),
            ));
        }
        Ok(())
    }

    fn check_http_client(&self) -> Result<(), InvalidConfig> {
        let h = &self.http_client;
        if let Some(p) = &h.proxy
            && !p.trim().eq_ignore_ascii_case(crate::store::http::DIRECT)
        {
            crate::store::http::parse_proxy_url(p).map_err(|e| {
                bad(
                    "http_client.proxy",
                    format!("not host:port, an http(s):// URL or \"direct\": {e}"),
                )
            })?;
        }
        if h.proxy_password.is_some() && h.proxy_user.is_none() {
            return Err(bad("http_client.proxy_password", "needs `proxy_user`"));
        }
        if h.retries > 10 {
            return Err(bad("http_client.retries", "must be at most 10"));
        }
        if let Some(ua) = &h.user_agent
            && (ua.is_empty() || !ua.chars().all(|c| c == ' ' || c.is_ascii_graphic()))
        {
            return Err(bad(
                "http_client.user_agent",
                "must be non-empty printable ASCII",
            ));
        }
        Ok(())
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
            encrypt: self.smb.encrypt,
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

    /// Object store settings as written; [`ObjectConfig::with_env`] fills the gaps.
    ///
    /// [`ObjectConfig::with_env`]: crate::store::object::ObjectConfig::with_env
    pub fn object_config(&self) -> crate::store::object::ObjectConfig {
        crate::store::object::ObjectConfig {
            s3: Config::s3_settings(&self.s3),
            azure: Config::azure_settings(&self.azure),
        }
    }

    fn s3_settings(s: &S3Section) -> crate::store::object::S3Settings {
        crate::store::object::S3Settings {
            endpoint: s.endpoint.clone(),
            region: s.region.clone(),
            path_style: s.path_style,
            access_key_id: s.access_key_id.clone(),
            secret_access_key: s.secret_access_key.clone(),
            session_token: s.session_token.clone(),
            allow_http: s.allow_http,
            profile: s.profile.clone(),
        }
    }

    fn azure_settings(s: &AzureSection) -> crate::store::object::AzureSettings {
        crate::store::object::AzureSettings {
            endpoint: s.endpoint.clone(),
            access_key: s.access_key.clone(),
            sas: s.sas.clone(),
            allow_http: s.allow_http,
        }
    }

    fn check_objects(&self) -> Result<(), InvalidConfig> {
        use crate::store::object::http_allowed;
        let endpoints = [
            ("s3.endpoint", &self.s3.endpoint, self.s3.allow_http),
            (
                "azure.endpoint",
                &self.azure.endpoint,
                self.azure.allow_http,
            ),
        ];
        for (key, ep, allow) in endpoints {
            let Some(ep) = ep else { continue };
            match reqwest::Url::parse(ep) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {}
                _ => return Err(bad(key, format!("`{ep}` is not an http(s):// URL"))),
            }
            if !http_allowed(ep, allow) {
                let section = key.split('.').next().unwrap_or(key);
                return Err(bad(
                    key,
                    format!(
                        "plain http:// is allowed only to this machine; use https:// or set `{section}.allow_http = true`"
                    ),
                ));
            }
        }
        if self.s3.secret_access_key.is_some() != self.s3.access_key_id.is_some() {
            return Err(bad(
                "s3.secret_access_key",
                "`access_key_id` and `secret_access_key` go together",
            ));
        }
        if self.azure.access_key.is_some() && self.azure.sas.is_some() {
            return Err(bad(
                "azure.sas",
                "give a shared key or a SAS token, not both",
            ));
        }
        Ok(())
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
        let c = Config::parse_for(
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
            Platform::Windows,
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
            let e = Config::parse(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
    }

    /// Paths are checked for the platform: a Windows path on POSIX (which would become a file
    /// named `C:\x\y.log` in the working directory) or a relative path names its key.
    #[test]
    fn paths_are_checked_for_the_platform() {
        let (win, posix) = (Platform::Windows, Platform::Posix);
        for (text, platform, key, problem) in [
            (
                r"[log]
file = 'C:\x\y.log'",
                posix,
                "log.file",
                PathProblem::WindowsPathOnPosix,
            ),
            (
                r"[log]
file = 'logs/y.log'",
                posix,
                "log.file",
                PathProblem::Relative,
            ),
            (
                r"[log]
file = ''",
                posix,
                "log.file",
                PathProblem::Empty,
            ),
            (
                r"[agent]
state_dir = 'C:\ProgramData\s'",
                posix,
                "agent.state_dir",
                PathProblem::WindowsPathOnPosix,
            ),
            (
                r"[http]
exclusions = '\\srv\share\x.txt'",
                posix,
                "http.exclusions",
                PathProblem::WindowsPathOnPosix,
            ),
            (
                r"[cascade]
spool_dir = 'spool'",
                win,
                "cascade.spool_dir",
                PathProblem::Relative,
            ),
            (
                r"[cascade]
spool_dir = '/var/spool'",
                win,
                "cascade.spool_dir",
                PathProblem::PosixPathOnWindows,
            ),
            (
                r"[smb]
credentials_file = 'C:\c.toml'",
                posix,
                "smb.credentials_file",
                PathProblem::WindowsPathOnPosix,
            ),
        ] {
            match Config::parse_for(text, platform) {
                Err(InvalidConfig::Path {
                    key: k, problem: p, ..
                }) => {
                    assert_eq!((k, p), (key, problem), "{text}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
        for (text, platform) in [
            (
                r"[log]
file = 'C:\ProgramData\symcascade\logs\symcascade.log'",
                win,
            ),
            (
                r"[log]
file = '\\srv\logs\a.log'",
                win,
            ),
            ("[log]\nfile = '/var/log/symcascade/a.log'", posix),
            ("[smb]\ncredentials_file = 'credentials.toml'", posix),
        ] {
            Config::parse_for(text, platform).unwrap_or_else(|e| panic!("{text}: {e}"));
        }
        // The message names the key and says what to do.
        let e = Config::parse_for("[log]\nfile = 'C:\\x\\y.log'", posix).unwrap_err();
        let shown = e.to_string();
        assert!(
            shown.contains("log.file") && shown.contains("POSIX path"),
            "{shown}"
        );
        assert_eq!(e.key(), Some("log.file"));
    }

    /// A Windows local store in `sympath` on POSIX is an error naming `sympath`; relative
    /// stores are fine for `get` but refused for the agent.
    #[test]
    fn sympath_local_stores() {
        let text = r"sympath = 'srv*C:\Symbols*\\BranchOfficeA\Symbols*\\MainOffice\Symbols'";
        let e = Config::parse_for(text, Platform::Posix).unwrap_err();
        assert!(
            matches!(
                e,
                InvalidConfig::SympathStore {
                    problem: PathProblem::WindowsPathOnPosix,
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(e.key(), Some("sympath"));
        assert!(e.to_string().contains(r"C:\Symbols"), "{e}");
        Config::parse_for(text, Platform::Windows).unwrap();
        let local = |p: &str| Location::Local { path: p.into() };
        check_agent_stores(&[local(r"C:\Symbols")], Platform::Windows).unwrap();
        check_agent_stores(&[local("/var/sym")], Platform::Posix).unwrap();
        assert!(Config::parse_for("sympath = 'srv*sym*/srv/branch'", Platform::Posix).is_ok());
        let e =
            check_agent_stores(&[local("sym"), local("/srv/branch")], Platform::Posix).unwrap_err();
        assert!(
            matches!(
                e,
                InvalidConfig::SympathStore {
                    problem: PathProblem::Relative,
                    ..
                }
            ),
            "{e}"
        );
        let e = Config::parse_for("sympath = 'srv*/tmp/a*gs://b/k'", Platform::Posix).unwrap_err();
        assert!(
            e.to_string().contains("sympath") && e.to_string().contains("gs"),
            "{e}"
        );
    }

    /// Zero periods (a zero tokio interval panics) and huge durations (an `Instant` overflow)
    /// are refused at load, naming the key.
    #[test]
    fn durations_are_bounded() {
        for (text, key, problem) in [
            (
                "[agent]\nrescan_interval = \"0s\"",
                "agent.rescan_interval",
                DurationProblem::Zero,
            ),
            (
                "[agent]\nbackfill_interval = \"0s\"",
                "agent.backfill_interval",
                DurationProblem::Zero,
            ),
            (
                "[agent]\npoll_interval = \"0ms\"",
                "agent.poll_interval",
                DurationProblem::Zero,
            ),
            (
                "[smb]\nrequest_timeout = \"0s\"",
                "smb.request_timeout",
                DurationProblem::Zero,
            ),
            (
                "[http]\nclient_timeout = \"500000000y\"",
                "http.client_timeout",
                DurationProblem::TooLong,
            ),
            (
                "[cascade]\nMissTimeout = 18446744073709551615",
                "cascade.MissTimeout",
                DurationProblem::TooLong,
            ),
        ] {
            match Config::parse(text) {
                Err(InvalidConfig::Duration {
                    key: k, problem: p, ..
                }) => {
                    assert_eq!((k, p), (key, problem), "{text}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
        assert!(
            Config::parse("[http]\nclient_timeout = \"0s\"\n[agent]\nshutdown_grace = \"0s\"")
                .is_ok()
        );
        assert!(Config::parse("[http]\nclient_timeout = \"365d\"").is_ok());
    }
}

#[cfg(test)]
mod example_tests {
    /// The example shipped in `examples/` (and shown in README) is a valid configuration.
    #[test]
    fn shipped_examples_parse() {
        use super::{Config, Platform};
        let win = Platform::Windows;
        let c = Config::parse_for(include_str!("../examples/symcascade.toml"), win).unwrap();
        assert_eq!(c.smb.aliases.len(), 2);
        assert_eq!(c.timeouts.count, 5);
        let d = Config::parse_for(include_str!("../examples/desktop.toml"), win).unwrap();
        assert_eq!(d.agent.max_parallel, 4);
        let b = Config::parse_for(include_str!("../examples/branch-server.toml"), win).unwrap();
        assert_eq!(
            b.agent.branch.as_deref(),
            Some("\\\\BranchOfficeA\\Symbols")
        );
        assert_eq!(b.log.format.as_deref(), Some("json"));
        // On Linux they name the Windows path to edit instead of creating `C:\Symbols` folders.
        for text in [
            include_str!("../examples/symcascade.toml"),
            include_str!("../examples/desktop.toml"),
            include_str!("../examples/branch-server.toml"),
        ] {
            let e = Config::parse_for(text, Platform::Posix)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("key `sympath`") && e.contains("POSIX path"),
                "{e}"
            );
        }
    }

    #[test]
    fn aging_values_are_checked_with_the_key() {
        use super::Config;
        use std::time::Duration;
        let c =
            Config::parse("[aging]\nmax_size = \"2GB\"\nunused_for = \"30d\"\ninterval = \"5m\"\n")
                .unwrap();
        let p = c.aging.policy();
        assert_eq!(p.max_size, Some(2_000_000_000));
        assert_eq!(p.unused_for, Some(Duration::from_secs(30 * 86400)));
        assert_eq!(c.aging.interval, Duration::from_secs(300));
        assert!(!Config::parse("").unwrap().aging.policy().is_active());
        for (text, key) in [
            ("max_size = \"lots\"", "aging.max_size"),
            ("max_size = \"5 parsecs\"", "aging.max_size"),
            ("interval = \"0s\"", "aging.interval"),
            ("unused_for = \"0s\"", "aging.unused_for"),
            ("unused_for = \"400d\"", "aging.unused_for"),
        ] {
            let e = Config::parse(&format!("[aging]\n{text}\n")).unwrap_err();
            assert_eq!(e.key(), Some(key), "{text}: {e}");
            assert!(e.to_string().contains(key), "{e}");
        }
    }

    /// `[s3]`/`[azure]`: endpoints must be URLs, plain HTTP only to this machine unless
    /// allowed, key pairs complete, one Azure credential; secrets never in `Debug`.
    #[test]
    fn object_store_sections() {
        use crate::config::Config;
        let ok = Config::parse(
            "[s3]\nendpoint = \"http://127.0.0.1:9000\"\naccess_key_id = \"AKIA\"\nsecret_access_key = \"hush\"\n\
             [azure]\nendpoint = \"https://acct.blob.core.windows.net\"\nsas = \"sv=1&sig=psst\"",
        )
        .unwrap();
        let shown = format!("{ok:?}");
        assert!(
            !shown.contains("hush") && !shown.contains("psst"),
            "{shown}"
        );
        let o = ok.object_config();
        assert_eq!(o.s3.access_key_id.as_deref(), Some("AKIA"));
        assert!(
            Config::parse("[s3]\nendpoint = \"http://minio.corp:9000\"\nallow_http = true").is_ok()
        );
        let bad = [
            ("[s3]\nendpoint = \"http://minio.corp:9000\"", "s3.endpoint"),
            ("[s3]\nendpoint = \"minio.corp\"", "s3.endpoint"),
            (
                "[azure]\nendpoint = \"http://10.0.0.5:10000/acct\"",
                "azure.endpoint",
            ),
            ("[s3]\naccess_key_id = \"AKIA\"", "s3.secret_access_key"),
            (
                "[azure]\naccess_key = \"a2V5\"\nsas = \"sv=1\"",
                "azure.sas",
            ),
            ("[s3]\nbucket = \"x\"", "bucket"),
        ];
        for (text, key) in bad {
            let e = Config::parse(text).unwrap_err();
            assert!(e.to_string().contains(key), "{text}: {e}");
        }
    }
}
