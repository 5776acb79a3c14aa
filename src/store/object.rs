//! Object store tiers (issue #18): an S3 bucket (`s3://bucket/prefix`: AWS, MinIO, Ceph RGW)
//! or an Azure Blob container (`az://account/container/prefix`) as a full symbol store —
//! upstream, intermediate or downstream tier, and the HTTP front's upstream.
//!
//! Data flow: `open::Transports` builds a [`BucketStore`] from the location and the
//! [`ObjectConfig`] (config sections `[s3]`/`[azure]` over the standard environment
//! variables); the cascade calls the [`Store`] operations, which become requests signed by
//! the `object_store` crate and sent through the project's own reqwest client (proxy, connect
//! and idle timeouts of `[http_client]`).
//!
//! Semantics:
//! - **Layout**: the SymStore layout below the prefix (`<prefix>/ntdll.pdb/<index>/ntdll.pdb`).
//!   Object keys are case-sensitive while SymStore and older caches write any case: a key is
//!   looked up as asked, then (in one more round trip, all at once) in the other spellings
//!   debuggers and tools use ([`spellings`]). Writes use the canonical case the layout gives.
//! - **Publishing**: nothing partial is ever visible under a final key. A file up to one part
//!   (`PART_SIZE`) is one conditional PUT (`If-None-Match: *`); a larger one is uploaded in
//!   parts (multipart / block list: memory stays at a few parts whatever the file's size) to a
//!   temporary key below `UPLOADS`, then copied server-side to the final key only if that
//!   key does not exist (S3: a multipart copy completed with `If-None-Match: *`; Azure: Copy
//!   Blob with `If-None-Match: *`), and the temporary key is deleted. Two agents racing for a
//!   key leave one complete object; the loser reports `AlreadyPresent`.
//! - **Reading**: a streaming GET; [`Store::open_from`] continues with a `Range` request made
//!   conditional on the object's ETag (a changed object starts over).
//! - **Errors**: a missing bucket or container is `Unreachable`, refused credentials
//!   `AuthFailed`, a denied operation `PermissionDenied`; details never carry a secret (SAS
//!   tokens are cut out).
//! - **Leftovers**: a writer killed between its upload and its copy leaves an object under
//!   `UPLOADS` (never under a store name); the health check deletes those older than a day.
//! - **Not here**: the branch queue and leases (they need a file system's rename and change
//!   notifications): they stay on SMB or local stores.

use super::{
    Capabilities, FileMeta, Opened, PutOutcome, Store, StoreDescription, StoreError,
    StoreErrorKind, Transport,
};
use crate::layout::RelPath;
use crate::sympath::ObjectService;
use async_trait::async_trait;
use futures_util::TryStreamExt;
use object_store::path::{Path as Key, PathPart};
use object_store::{
    GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    WriteMultipart,
};
use std::fmt;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Bytes per uploaded part (S3's minimum is 5 MiB, Azure's blocks have none). Files up to
/// this size are one PUT. Memory per upload: about `PART_SIZE × (UPLOAD_PARALLEL + 1)`.
pub const PART_SIZE: usize = 8 << 20;
/// Parts of one upload in flight at once.
pub const UPLOAD_PARALLEL: usize = 2;
/// Key prefix (below the store's prefix) of uploads not yet copied to their final key. Not a
/// SymStore name (names are file names; this one starts with a dot and holds no index), so
/// no debugger request reaches it.
pub const UPLOADS: &str = ".symcascade-uploads";

/// `[s3]`: how S3 buckets are reached. Every field falls back to the standard environment
/// variable named beside it (as the AWS CLI and SDKs read them).
#[derive(Clone, Default)]
pub struct S3Settings {
    /// Endpoint URL for S3-compatible servers (MinIO, Ceph RGW); `AWS_ENDPOINT_URL`. Default:
    /// AWS.
    pub endpoint: Option<String>,
    /// Region; `AWS_REGION` / `AWS_DEFAULT_REGION`. Default `us-east-1`.
    pub region: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`). Default: on with a custom endpoint
    /// (MinIO, Ceph, moto), off for AWS (virtual-hosted style).
    pub path_style: Option<bool>,
    /// Access key id; `AWS_ACCESS_KEY_ID`.
    pub access_key_id: Option<String>,
    /// Secret access key; `AWS_SECRET_ACCESS_KEY`. Never printed.
    pub secret_access_key: Option<String>,
    /// Session token of temporary credentials; `AWS_SESSION_TOKEN`. Never printed.
    pub session_token: Option<String>,
    /// Allow plain `http://` to an endpoint that is not on this machine. Default off:
    /// `http://` is allowed for loopback endpoints only.
    pub allow_http: bool,
    /// A profile of the AWS shared files (`~/.aws/credentials`, `~/.aws/config`, or
    /// `AWS_SHARED_CREDENTIALS_FILE` / `AWS_CONFIG_FILE`); `AWS_PROFILE`; default `default`.
    /// Read for what the config and the environment leave open (the AWS CLI's order).
    pub profile: Option<String>,
}

/// Values of one profile of the AWS shared files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AwsProfile {
    /// `aws_access_key_id`.
    pub access_key_id: Option<String>,
    /// `aws_secret_access_key`.
    pub secret_access_key: Option<String>,
    /// `aws_session_token`.
    pub session_token: Option<String>,
    /// `region` (config file).
    pub region: Option<String>,
    /// `endpoint_url` (config file).
    pub endpoint_url: Option<String>,
}

/// Profile `name` from the texts of the AWS shared credentials and config files, as the AWS
/// CLI reads them: `[name]` in the credentials file, `[profile name]` in the config file
/// (`[default]` in both); the credentials file wins for keys. Unparsable text counts as empty.
pub fn aws_profile(credentials: &str, config: &str, name: &str) -> AwsProfile {
    let get = |text: &str, section: &str, key: &str| {
        ini::Ini::load_from_str_noescape(text)
            .ok()
            .and_then(|i| {
                i.section(Some(section))
                    .and_then(|s| s.get(key))
                    .map(str::to_string)
            })
            .filter(|v| !v.is_empty())
    };
    let in_config = if name == "default" {
        "default".to_string()
    } else {
        format!("profile {name}")
    };
    let key = |k: &str| get(credentials, name, k).or_else(|| get(config, &in_config, k));
    AwsProfile {
        access_key_id: key("aws_access_key_id"),
        secret_access_key: key("aws_secret_access_key"),
        session_token: key("aws_session_token"),
        region: get(config, &in_config, "region"),
        endpoint_url: get(config, &in_config, "endpoint_url"),
    }
}

/// `[azure]`: how Azure Blob containers are reached.
#[derive(Clone, Default)]
pub struct AzureSettings {
    /// Blob endpoint including the account for emulators
    /// (`http://127.0.0.1:10000/devstoreaccount1` for Azurite); `AZURE_STORAGE_ENDPOINT`.
    /// Default `https://<account>.blob.core.windows.net`.
    pub endpoint: Option<String>,
    /// Shared key of the storage account; `AZURE_STORAGE_ACCOUNT_KEY`. Never printed.
    pub access_key: Option<String>,
    /// A SAS token (`sv=…&sig=…`); `AZURE_STORAGE_SAS_TOKEN`. Never printed.
    pub sas: Option<String>,
    /// Allow plain `http://` to an endpoint that is not on this machine (loopback always is).
    pub allow_http: bool,
}

impl fmt::Debug for S3Settings {
    // Not derived: secrets must never reach a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .field("allow_http", &self.allow_http)
            .field("profile", &self.profile)
            .finish()
    }
}

impl fmt::Debug for AzureSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureSettings")
            .field("endpoint", &self.endpoint)
            .field(
                "access_key",
                &self.access_key.as_ref().map(|_| "<redacted>"),
            )
            .field("sas", &self.sas.as_ref().map(|_| "<redacted>"))
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

/// Settings of both object store services.
#[derive(Debug, Clone, Default)]
pub struct ObjectConfig {
    /// `[s3]`.
    pub s3: S3Settings,
    /// `[azure]`.
    pub azure: AzureSettings,
}

impl ObjectConfig {
    /// What the config left open, filled from this process's environment and then the AWS
    /// shared files, in the AWS CLI's order.
    pub fn resolved(self) -> ObjectConfig {
        let env = |k: &str| std::env::var(k).ok();
        self.with_env(env)
            .with_aws_files(env, |p| std::fs::read_to_string(p).ok())
    }

    /// Fills what the config left open from the environment (`get` reads a variable).
    pub fn with_env(mut self, get: impl Fn(&str) -> Option<String>) -> ObjectConfig {
        let first = |names: &[&str]| names.iter().find_map(|n| get(n).filter(|v| !v.is_empty()));
        let s3 = &mut self.s3;
        s3.endpoint = s3
            .endpoint
            .take()
            .or_else(|| first(&["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]));
        s3.region = s3
            .region
            .take()
            .or_else(|| first(&["AWS_REGION", "AWS_DEFAULT_REGION"]));
        if s3.access_key_id.is_none() {
            s3.access_key_id = first(&["AWS_ACCESS_KEY_ID"]);
            s3.secret_access_key = first(&["AWS_SECRET_ACCESS_KEY"]);
            s3.session_token = first(&["AWS_SESSION_TOKEN"]);
        }
        s3.profile = s3.profile.take().or_else(|| first(&["AWS_PROFILE"]));
        let az = &mut self.azure;
        az.endpoint = az
            .endpoint
            .take()
            .or_else(|| first(&["AZURE_STORAGE_ENDPOINT"]));
        if az.access_key.is_none() && az.sas.is_none() {
            az.access_key = first(&["AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_ACCESS_KEY"]);
            az.sas = first(&["AZURE_STORAGE_SAS_TOKEN"]);
        }
        self
    }
}

impl ObjectConfig {
    /// Fills what the config and the environment left open of `[s3]` from the AWS shared
    /// files' profile (`read` reads a file, `None` when absent; `get` an environment
    /// variable), as the AWS CLI does after the environment.
    pub fn with_aws_files(
        mut self,
        get: impl Fn(&str) -> Option<String>,
        read: impl Fn(&std::path::Path) -> Option<String>,
    ) -> ObjectConfig {
        let s3 = &mut self.s3;
        let home = get("HOME").or_else(|| get("USERPROFILE"));
        let file = |var: &str, name: &str| {
            get(var).map(std::path::PathBuf::from).or_else(|| {
                home.as_ref()
                    .map(|h| std::path::Path::new(h).join(".aws").join(name))
            })
        };
        let text = |p: Option<std::path::PathBuf>| p.and_then(|p| read(&p)).unwrap_or_default();
        let credentials = text(file("AWS_SHARED_CREDENTIALS_FILE", "credentials"));
        let config = text(file("AWS_CONFIG_FILE", "config"));
        let name = s3.profile.clone().unwrap_or_else(|| "default".into());
        let p = aws_profile(&credentials, &config, &name);
        if s3.access_key_id.is_none() && p.access_key_id.is_some() {
            s3.access_key_id = p.access_key_id;
            s3.secret_access_key = p.secret_access_key;
            s3.session_token = p.session_token;
        }
        s3.region = s3.region.take().or(p.region);
        s3.endpoint = s3.endpoint.take().or(p.endpoint_url);
        self
    }

    /// How a store of `service` is reached and as whom, for `doctor` (never a secret: an
    /// access key id is shown as the AWS CLI shows it, its last four characters).
    pub fn identity(&self, service: ObjectService) -> String {
        let at = |ep: &Option<String>| ep.as_ref().map(|e| format!(" at {e}")).unwrap_or_default();
        match service {
            ObjectService::S3 => {
                let who = match &self.s3.access_key_id {
                    Some(id) => {
                        let tail: String = id
                            .chars()
                            .rev()
                            .take(4)
                            .collect::<Vec<_>>()
                            .into_iter()
                            .rev()
                            .collect();
                        format!("as access key ****{tail}")
                    }
                    None => "with the instance's role (EC2/ECS metadata or web identity)".into(),
                };
                format!("S3 client{} {who}", at(&self.s3.endpoint))
            }
            ObjectService::Azure => {
                let who = if self.azure.access_key.is_some() {
                    "with the account's shared key"
                } else if self.azure.sas.is_some() {
                    "with a SAS token"
                } else {
                    "with the managed identity"
                };
                format!("Azure Blob client{} {who}", at(&self.azure.endpoint))
            }
        }
    }
}

/// `true` when `endpoint` may be plain HTTP: its host is a loopback address or `localhost`
/// (an emulator or a test server on this machine), or `allow` says so.
pub fn http_allowed(endpoint: &str, allow: bool) -> bool {
    let Ok(url) = reqwest::Url::parse(endpoint) else {
        return false;
    };
    if url.scheme() != "http" || allow {
        return true;
    }
    let host = url.host_str().unwrap_or("");
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback())
}

/// The spellings of a store path an object store is asked for, in order: as asked; names in
/// lower case with the index in upper case (SSQP clients lower-case names, SymStore writes
/// the index in upper case); everything in lower case; everything in upper case (older tools).
/// Duplicates are dropped. The index is the component before the file name.
pub fn spellings(parts: &[String]) -> Vec<Vec<String>> {
    let index = parts.len().checked_sub(2);
    let lower: Vec<String> = parts.iter().map(|p| p.to_ascii_lowercase()).collect();
    let mut canonical = lower.clone();
    if let Some(i) = index {
        canonical[i] = parts[i].to_ascii_uppercase();
    }
    let upper = parts.iter().map(|p| p.to_ascii_uppercase()).collect();
    let mut out: Vec<Vec<String>> = Vec::with_capacity(4);
    for s in [parts.to_vec(), canonical, lower, upper] {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

/// Sends object store requests through our reqwest client (proxy, timeouts of
/// `[http_client]`), not one `object_store` would build with its own settings.
#[derive(Debug)]
struct OurClient(reqwest::Client);

impl object_store::client::HttpConnector for OurClient {
    fn connect(
        &self,
        _: &object_store::ClientOptions,
    ) -> object_store::Result<object_store::client::HttpClient> {
        Ok(object_store::client::HttpClient::new(self.0.clone()))
    }
}

/// A symbol store in an S3 bucket or an Azure Blob container. Cheap to clone.
#[derive(Clone)]
pub struct BucketStore {
    inner: Arc<dyn ObjectStore>,
    shown: String,
    transport: Transport,
    container: String,
    prefix: Vec<String>,
    /// Secrets that must never appear in an error (a SAS token and its signature).
    secrets: Vec<String>,
    /// Whether the bucket or container answered (checked once: a missing bucket must not
    /// look like a store full of misses).
    checked: Arc<Mutex<bool>>,
    /// Uploads older than this under `UPLOADS` are leftovers of a crash between upload and
    /// copy, deleted by the sweep.
    upload_max_age: Duration,
    /// When the sweep last ran (it runs from `capabilities`, at most every `SWEEP_EVERY`).
    swept: Arc<Mutex<Option<std::time::Instant>>>,
}

/// An upload older than this was left by a writer that died before its copy (an upload of
/// any symbol file finishes far sooner).
pub const UPLOAD_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// How often a store's health check sweeps `UPLOADS` at most.
pub const SWEEP_EVERY: Duration = Duration::from_secs(3600);

impl fmt::Debug for BucketStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BucketStore")
            .field("location", &self.shown)
            .finish_non_exhaustive()
    }
}

impl BucketStore {
    /// A store at `service://container/prefix…` (`shown` as written). No request is made
    /// until the first operation.
    ///
    /// # Errors
    /// `Unsupported` when the settings cannot work (plain HTTP to a remote endpoint, a
    /// malformed endpoint or key), naming the setting.
    pub fn new(
        service: ObjectService,
        container: &str,
        prefix: &[String],
        shown: &str,
        cfg: &ObjectConfig,
        http: &super::http::HttpClient,
    ) -> Result<BucketStore, StoreError> {
        let bad = |d: String| StoreError::new(shown, "connect", "", StoreErrorKind::Unsupported, d);
        let (retries, backoff) = http.retry_policy();
        let retry = object_store::RetryConfig {
            backoff: object_store::BackoffConfig {
                init_backoff: backoff,
                max_backoff: Duration::from_secs(10),
                base: 2.0,
            },
            max_retries: retries as usize,
            retry_timeout: Duration::from_secs(60),
        };
        let connector = OurClient(http.reqwest());
        let (inner, transport, secrets): (Arc<dyn ObjectStore>, _, _) = match service {
            ObjectService::S3 => (
                Arc::new(s3(container, &cfg.s3, retry, connector).map_err(bad)?),
                Transport::S3,
                Vec::new(),
            ),
            ObjectService::Azure => {
                let secrets = cfg.azure.sas.iter().flat_map(|s| sas_secrets(s)).collect();
                (
                    Arc::new(azure(container, &cfg.azure, retry, connector).map_err(bad)?),
                    Transport::Azure,
                    secrets,
                )
            }
        };
        Ok(BucketStore {
            inner,
            shown: shown.to_string(),
            transport,
            container: container.to_string(),
            prefix: prefix.to_vec(),
            secrets,
            checked: Arc::new(Mutex::new(false)),
            upload_max_age: UPLOAD_MAX_AGE,
            swept: Arc::new(Mutex::new(None)),
        })
    }

    /// The same store with leftovers counted from `age` on (tests; `UPLOAD_MAX_AGE` otherwise).
    pub fn with_upload_max_age(mut self, age: Duration) -> BucketStore {
        self.upload_max_age = age;
        self
    }

    /// Deletes uploads under `UPLOADS` older than the maximum age (a writer killed between its
    /// upload and its copy leaves one; it is never visible under a store name). Runs at most
    /// every [`SWEEP_EVERY`]; failures are logged, not returned (a health check must not fail
    /// for a sweep). The number deleted.
    pub async fn sweep_uploads(&self) -> usize {
        {
            let mut last = self.swept.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| t.elapsed() < SWEEP_EVERY) {
                return 0;
            }
            *last = Some(std::time::Instant::now());
        }
        let age = chrono::Duration::from_std(self.upload_max_age).unwrap_or(chrono::TimeDelta::MAX);
        let Some(cutoff) = chrono::Utc::now().checked_sub_signed(age) else {
            return 0;
        };
        let old: Vec<Key> = match self
            .inner
            .list(Some(&self.uploads()))
            .try_filter(|m| std::future::ready(m.last_modified <= cutoff))
            .map_ok(|m| m.location)
            .try_collect()
            .await
        {
            Ok(v) => v,
            Err(e) => {
                tracing::info!(store = %self.shown, error = %self.redacted(&e), "could not list old uploads");
                return 0;
            }
        };
        let mut deleted = 0;
        for key in old {
            match self.inner.delete(&key).await {
                Ok(()) => deleted += 1,
                Err(e) => {
                    tracing::info!(store = %self.shown, %key, error = %self.redacted(&e), "could not delete an old upload")
                }
            }
        }
        if deleted > 0 {
            tracing::info!(store = %self.shown, deleted, "deleted uploads left by writers that died before publishing");
        }
        deleted
    }

    /// The object key of `parts` below the prefix.
    /// The object key of `parts` below the prefix, each part as written (`foo~1.pdb` stays
    /// `foo~1.pdb`: other SymStore tools read and write the same names). Only a part the
    /// crate cannot carry as is (a control character; key parts never hold one) is
    /// percent-encoded.
    fn key(&self, parts: &[String]) -> Key {
        self.prefix
            .iter()
            .chain(parts)
            .map(|p| PathPart::parse(p).unwrap_or_else(|_| PathPart::from(p.as_str())))
            .collect()
    }

    fn uploads(&self) -> Key {
        self.key(&[UPLOADS.to_string()])
    }

    /// An error's text with every secret cut out (a SAS token rides in request URLs, which
    /// the crate prints for requests it does not mark sensitive).
    fn redacted(&self, e: &object_store::Error) -> String {
        let mut detail = chain(e);
        for s in &self.secrets {
            detail = detail.replace(s.as_str(), "<redacted>");
        }
        detail
    }

    fn err(
        &self,
        op: &'static str,
        path: impl fmt::Display,
        e: &object_store::Error,
    ) -> StoreError {
        let detail = self.redacted(e);
        let kind = classify(e, &detail);
        StoreError::new(self.shown.as_str(), op, path, kind, detail)
    }

    /// Checks the bucket once per process with a GET of a key that never exists: its 404
    /// names the missing thing (`NoSuchKey` / `BlobNotFound`: the bucket is there;
    /// `NoSuchBucket` / `ContainerNotFound`: it is not), where a HEAD in a missing bucket
    /// answers a bare 404, like a miss. Refused credentials are `AuthFailed`. (A GET, not a
    /// listing — though on S3 the answer is 404 only with `s3:ListBucket`, which a store
    /// needs anyway: without it every missing key is a 403.)
    async fn check(&self, op: &'static str, path: impl fmt::Display) -> Result<(), StoreError> {
        if *self.checked.lock().unwrap_or_else(|e| e.into_inner()) {
            return Ok(());
        }
        let probe = self.key(&[UPLOADS.to_string(), "probe".to_string()]);
        let missing = match self.inner.get(&probe).await {
            Ok(_) => false,
            Err(e @ object_store::Error::NotFound { .. }) => {
                let text = chain(&e);
                if text.contains("NoSuchBucket") || text.contains("ContainerNotFound") {
                    let what = match self.transport {
                        Transport::Azure => "container",
                        _ => "bucket",
                    };
                    let mut se = self.err(op, path, &e);
                    se.kind = StoreErrorKind::Unreachable;
                    se.detail = format!(
                        "the {what} `{}` does not exist: {}",
                        self.container, se.detail
                    );
                    return Err(se);
                }
                true
            }
            Err(e) => {
                let mut se = self.err(op, path, &e);
                if se.kind == StoreErrorKind::PermissionDenied && self.transport == Transport::S3 {
                    // S3 answers a missing key with 403 unless the caller may list the
                    // bucket: without s3:ListBucket every miss would look like this.
                    se.detail.push_str(" (a store needs s3:ListBucket on the bucket, s3:GetObject, and for a written tier s3:PutObject and s3:DeleteObject: without s3:ListBucket S3 answers every missing key with 403)");
                }
                return Err(se);
            }
        };
        tracing::debug!(store = %self.shown, probe_missing = missing, "bucket answers");
        *self.checked.lock().unwrap_or_else(|e| e.into_inner()) = true;
        Ok(())
    }

    /// The key `path` is stored under in any of its [`spellings`], with its metadata: the
    /// asked spelling first, then the others at once.
    async fn find(
        &self,
        op: &'static str,
        path: &RelPath,
    ) -> Result<Option<(Key, object_store::ObjectMeta)>, StoreError> {
        self.check(op, path).await?;
        self.find_spelled(op, path, true).await
    }

    /// [`BucketStore::find`] without the bucket check; `asked` says whether the spelling as
    /// asked is still to be tried (an `open` has tried it with its GET).
    async fn find_spelled(
        &self,
        op: &'static str,
        path: &RelPath,
        asked: bool,
    ) -> Result<Option<(Key, object_store::ObjectMeta)>, StoreError> {
        let all = spellings(path.components());
        let head = |parts: &Vec<String>| {
            let key = self.key(parts);
            async move {
                match self.inner.head(&key).await {
                    Ok(m) => Ok(Some((key, m))),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(self.err(op, path, &e)),
                }
            }
        };
        if asked && let Some(hit) = head(&all[0]).await? {
            return Ok(Some(hit));
        }
        let rest = futures_util::future::join_all(all[1..].iter().map(head)).await;
        let mut first_err = None;
        for r in rest {
            match r {
                Ok(Some(hit)) => return Ok(Some(hit)),
                Ok(None) => {}
                Err(e) => first_err = first_err.or(Some(e)),
            }
        }
        first_err.map_or(Ok(None), Err)
    }

    /// A streaming GET of `key` from `offset` (conditional on `version` when resuming).
    async fn get(
        &self,
        path: &RelPath,
        key: &Key,
        from: Option<(u64, &str)>,
    ) -> Result<Option<Opened>, StoreError> {
        let opts = GetOptions {
            range: from.map(|(o, _)| GetRange::Offset(o)),
            if_match: from.map(|(_, v)| v.to_string()),
            ..Default::default()
        };
        let res = match self.inner.get_opts(key, opts).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.err("open", path, &e)),
        };
        let len = res.meta.size;
        let version = res.meta.e_tag.clone();
        let offset = res.range.start;
        let secrets = self.secrets.clone();
        let stream = res.into_stream().map_err(move |e| {
            let mut d = chain(&e);
            for s in &secrets {
                d = d.replace(s.as_str(), "<redacted>");
            }
            let kind = if d.contains("timed out") || d.contains("timeout") {
                io::ErrorKind::TimedOut
            } else {
                io::ErrorKind::UnexpectedEof
            };
            io::Error::new(kind, d)
        });
        Ok(Some(Opened {
            len: Some(len),
            reader: Box::new(tokio_util::io::StreamReader::new(stream)),
            local_path: None,
            offset,
            version,
        }))
    }

    /// Uploads `first` and the rest of `src` in parts to a temporary key; its name and the
    /// bytes uploaded.
    async fn upload_parts(
        &self,
        path: &RelPath,
        first: Vec<u8>,
        src: &mut (dyn AsyncRead + Send + Unpin),
        len: Option<u64>,
    ) -> Result<(Key, u64), StoreError> {
        let tmp = self.key(&[
            UPLOADS.to_string(),
            format!("{}.{:016x}", path.file_name(), rand_suffix()),
        ]);
        let upload = self
            .inner
            .put_multipart(&tmp)
            .await
            .map_err(|e| self.err("put", path, &e))?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut total = first.len() as u64;
        w.put(first.into());
        let mut buf = vec![0u8; 1 << 20];
        let result: Result<(), StoreError> = async {
            loop {
                let n = src
                    .read(&mut buf)
                    .await
                    .map_err(|e| StoreError::from_io(self.shown.as_str(), "put", path, &e))?;
                if n == 0 {
                    break;
                }
                total += n as u64;
                w.wait_for_capacity(UPLOAD_PARALLEL)
                    .await
                    .map_err(|e| self.err("put", path, &e))?;
                w.write(&buf[..n]);
            }
            check_len(&self.shown, path, len, total)?;
            // Every part up before `finish`: a failed part fails here, where the upload is
            // still ours to abort (`finish` would return the error and drop the upload
            // open, invisible but billed).
            w.wait_for_capacity(0)
                .await
                .map_err(|e| self.err("put", path, &e))
        }
        .await;
        if let Err(e) = result {
            let _ = w.abort().await;
            return Err(e);
        }
        w.finish().await.map_err(|e| self.err("put", path, &e))?;
        Ok((tmp, total))
    }

    /// Writes `src` to `path`: one PUT with `mode` when it fits in a part, else parts to a
    /// temporary key and a server-side copy (only if absent unless `replace`).
    async fn write(
        &self,
        path: &RelPath,
        key: Key,
        src: &mut (dyn AsyncRead + Send + Unpin),
        len: Option<u64>,
        replace: bool,
    ) -> Result<PutOutcome, StoreError> {
        let expected = len.map_or(PART_SIZE, |l| {
            usize::try_from(l).map_or(PART_SIZE, |l| l.saturating_add(1).min(PART_SIZE))
        });
        let mut first = Vec::with_capacity(expected);
        (&mut *src)
            .take(PART_SIZE as u64)
            .read_to_end(&mut first)
            .await
            .map_err(|e| StoreError::from_io(self.shown.as_str(), "put", path, &e))?;
        if first.len() < PART_SIZE {
            let bytes = first.len() as u64;
            check_len(&self.shown, path, len, bytes)?;
            let mode = if replace {
                PutMode::Overwrite
            } else {
                PutMode::Create
            };
            let opts = PutOptions {
                mode,
                ..Default::default()
            };
            return match self
                .inner
                .put_opts(&key, PutPayload::from(first), opts)
                .await
            {
                Ok(_) => Ok(written(bytes)),
                Err(e) => self.refused_write(path, &key, replace, &e).await,
            };
        }
        let (tmp, total) = self.upload_parts(path, first, src, len).await?;
        let copied = if replace {
            self.inner.copy(&tmp, &key).await
        } else {
            self.inner.copy_if_not_exists(&tmp, &key).await
        };
        if let Err(e) = self.inner.delete(&tmp).await {
            tracing::warn!(store = %self.shown, key = %tmp, error = %self.redacted(&e), "could not delete a finished upload");
        }
        match copied {
            Ok(()) => Ok(written(total)),
            Err(e) => self.refused_write(path, &key, replace, &e).await,
        }
    }

    /// A write the server refused. A conditional create refused because the key exists
    /// (412, or 409 from stores that say so) is [`PutOutcome::AlreadyPresent`] — once a HEAD
    /// confirms the object is there: S3 also answers 409 `ConditionalRequestConflict` to
    /// concurrent conditional writes, and Azure 409 for other states, with no object behind
    /// them. Anything else, and any refusal of a replace, is an error.
    async fn refused_write(
        &self,
        path: &RelPath,
        key: &Key,
        replace: bool,
        e: &object_store::Error,
    ) -> Result<PutOutcome, StoreError> {
        let conflict = matches!(
            e,
            object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }
        );
        if conflict && !replace && self.inner.head(key).await.is_ok() {
            return Ok(PutOutcome::AlreadyPresent { local_path: None });
        }
        let mut se = self.err(if replace { "replace" } else { "put" }, path, e);
        if conflict {
            se.kind = StoreErrorKind::Io;
            se.detail = format!("a concurrent write conflicted (try again): {}", se.detail);
        }
        Err(se)
    }
}

fn written(bytes: u64) -> PutOutcome {
    PutOutcome::Written {
        bytes,
        local_path: None,
    }
}

/// A stream of `got` bytes where `len` was announced publishes nothing.
fn check_len(store: &str, path: &RelPath, len: Option<u64>, got: u64) -> Result<(), StoreError> {
    match len {
        Some(want) if want != got => Err(StoreError::new(
            store,
            "put",
            path,
            StoreErrorKind::Truncated,
            format!("the source gave {got} bytes, {want} were announced"),
        )),
        _ => Ok(()),
    }
}

/// A random 64-bit suffix for temporary keys (two agents uploading the same file at once
/// use different keys).
fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// The error and its sources, as one line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    super::http::error_chain(e)
}

/// The parts of a SAS token that must not be printed: the whole token and its signature.
fn sas_secrets(sas: &str) -> Vec<String> {
    let sas = sas.trim_start_matches('?');
    let mut out = vec![sas.to_string()];
    for pair in sas.split('&') {
        if let Some(sig) = pair.strip_prefix("sig=") {
            out.push(sig.to_string());
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

/// The cascade's reason for an object store error. The service's own error code (in the
/// answer's body, which `object_store` keeps only as text) tells refused credentials from a
/// denied operation: both are HTTP 403 on S3.
fn classify(e: &object_store::Error, detail: &str) -> StoreErrorKind {
    use object_store::Error as E;
    const BAD_CREDENTIALS: [&str; 6] = [
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AuthenticationFailed",
        // Azure's (and Azurite's) message for a shared key or SAS it cannot verify.
        "failed to authenticate",
        "InvalidSecurity",
        "ExpiredToken",
    ];
    match e {
        E::NotFound { .. } => StoreErrorKind::Unreachable,
        E::Unauthenticated { .. } => StoreErrorKind::AuthFailed,
        E::PermissionDenied { .. } if BAD_CREDENTIALS.iter().any(|c| detail.contains(c)) => {
            StoreErrorKind::AuthFailed
        }
        E::PermissionDenied { .. } => StoreErrorKind::PermissionDenied,
        E::NotSupported { .. } | E::NotImplemented { .. } => StoreErrorKind::Unsupported,
        _ if BAD_CREDENTIALS.iter().any(|c| detail.contains(c)) => StoreErrorKind::AuthFailed,
        _ if detail.contains("NoSuchBucket") || detail.contains("ContainerNotFound") => {
            StoreErrorKind::Unreachable
        }
        _ if reqwest_cause(e).is_some_and(|r| r.is_timeout()) => StoreErrorKind::Timeout,
        _ if reqwest_cause(e).is_some_and(|r| r.is_connect()) => StoreErrorKind::Unreachable,
        _ => StoreErrorKind::Io,
    }
}

/// The reqwest error under an object store error, if the request failed in transit.
fn reqwest_cause<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a reqwest::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if let Some(r) = c.downcast_ref::<reqwest::Error>() {
            return Some(r);
        }
        cur = c.source();
    }
    None
}

fn s3(
    bucket: &str,
    s: &S3Settings,
    retry: object_store::RetryConfig,
    connector: OurClient,
) -> Result<object_store::aws::AmazonS3, String> {
    use object_store::aws::{AmazonS3Builder, S3CopyIfNotExists};
    let mut b = AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region(s.region.as_deref().unwrap_or("us-east-1"))
        .with_retry(retry)
        .with_http_connector(connector)
        // S3 (since 2024), MinIO and moto complete a multipart upload with `If-None-Match`.
        .with_copy_if_not_exists(S3CopyIfNotExists::Multipart);
    if let Some(ep) = &s.endpoint {
        if !http_allowed(ep, s.allow_http) {
            return Err(format!(
                "s3.endpoint `{ep}`: plain http:// only to this machine (set s3.allow_http = true to allow it elsewhere)"
            ));
        }
        // The crate sends virtual-hosted requests to the endpoint as given: the bucket must
        // be in its host name then.
        let virtual_hosted = !s.path_style.unwrap_or(true);
        let ep = if virtual_hosted {
            bucket_endpoint(ep, bucket)?
        } else {
            ep.clone()
        };
        b = b
            .with_endpoint(ep)
            .with_allow_http(true)
            .with_virtual_hosted_style_request(virtual_hosted);
    } else {
        // AWS: virtual-hosted unless asked otherwise (AWS's recommendation).
        b = b.with_virtual_hosted_style_request(!s.path_style.unwrap_or(false));
    }
    if let Some(id) = &s.access_key_id {
        b = b
            .with_access_key_id(id)
            .with_secret_access_key(s.secret_access_key.as_deref().unwrap_or(""));
        if let Some(t) = &s.session_token {
            b = b.with_token(t);
        }
    }
    b.build().map_err(|e| chain(&e))
}

/// `https://minio.corp:9000` → `https://<bucket>.minio.corp:9000`, for virtual-hosted requests
/// to a custom endpoint.
fn bucket_endpoint(endpoint: &str, bucket: &str) -> Result<String, String> {
    let mut u =
        reqwest::Url::parse(endpoint).map_err(|e| format!("s3.endpoint `{endpoint}`: {e}"))?;
    let host = u
        .host_str()
        .ok_or_else(|| format!("s3.endpoint `{endpoint}` has no host"))?
        .to_string();
    u.set_host(Some(&format!("{bucket}.{host}")))
        .map_err(|e| format!("s3.endpoint `{endpoint}` with bucket `{bucket}`: {e}"))?;
    Ok(u.as_str().trim_end_matches('/').to_string())
}

fn azure(
    container: &str,
    s: &AzureSettings,
    retry: object_store::RetryConfig,
    connector: OurClient,
) -> Result<object_store::azure::MicrosoftAzure, String> {
    use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
    let Some((account, container)) = container.split_once('/') else {
        return Err("an Azure location is az://account/container/prefix".into());
    };
    let mut b = MicrosoftAzureBuilder::new()
        .with_account(account)
        .with_container_name(container)
        .with_retry(retry)
        .with_http_connector(connector);
    if let Some(ep) = &s.endpoint {
        if !http_allowed(ep, s.allow_http) {
            return Err(format!(
                "azure.endpoint `{ep}`: plain http:// only to this machine (set azure.allow_http = true to allow it elsewhere)"
            ));
        }
        b = b
            .with_endpoint(ep.trim_end_matches('/').to_string())
            .with_allow_http(true);
    }
    if let Some(k) = &s.access_key {
        b = b.with_access_key(k);
    } else if let Some(sas) = &s.sas {
        b = b.with_config(AzureConfigKey::SasKey, sas.trim_start_matches('?'));
    }
    b.build().map_err(|e| chain(&e))
}

#[async_trait]
impl Store for BucketStore {
    fn describe(&self) -> StoreDescription {
        StoreDescription {
            location: self.shown.clone(),
            transport: self.transport,
        }
    }

    async fn stat(&self, path: &RelPath) -> Result<Option<FileMeta>, StoreError> {
        Ok(self.find("stat", path).await?.map(|(_, m)| FileMeta {
            len: m.size,
            local_path: None,
        }))
    }

    /// A GET of the key as asked; on a 404 the other spellings are looked up first.
    async fn open(&self, path: &RelPath) -> Result<Option<Opened>, StoreError> {
        self.check("open", path).await?;
        let asked = self.key(path.components());
        if let Some(o) = self.get(path, &asked, None).await? {
            return Ok(Some(o));
        }
        match self.find_spelled("open", path, false).await? {
            Some((key, _)) => self.get(path, &key, None).await,
            None => Ok(None),
        }
    }

    /// `Range` from `offset`, conditional on the ETag `version`: a changed object (412)
    /// starts over from 0.
    async fn open_from(
        &self,
        path: &RelPath,
        offset: u64,
        version: &str,
    ) -> Result<Option<Opened>, StoreError> {
        let Some((key, meta)) = self.find("open", path).await? else {
            return Ok(None);
        };
        if offset == 0 || offset >= meta.size || meta.e_tag.as_deref() != Some(version) {
            return self.get(path, &key, None).await;
        }
        match self.get(path, &key, Some((offset, version))).await {
            Err(e) if e.detail.contains("recondition") => self.get(path, &key, None).await,
            other => other,
        }
    }

    async fn put(
        &self,
        path: &RelPath,
        src: &mut (dyn AsyncRead + Send + Unpin),
        len: Option<u64>,
    ) -> Result<PutOutcome, StoreError> {
        if self.find("put", path).await?.is_some() {
            return Ok(PutOutcome::AlreadyPresent { local_path: None });
        }
        self.write(path, self.key(path.components()), src, len, false)
            .await
    }

    async fn capabilities(&self) -> Result<Capabilities, StoreError> {
        *self.checked.lock().unwrap_or_else(|e| e.into_inner()) = false;
        self.check("capabilities", "").await?;
        self.sweep_uploads().await;
        Ok(Capabilities {
            readable: true,
            writable: true,
            free_bytes: None,
        })
    }

    /// A plain PUT over the bad object (or a copy over it from the finished upload), under
    /// whichever spelling it was found: the old object stays whole until the new one
    /// replaces it.
    async fn replace(
        &self,
        path: &RelPath,
        src: &mut (dyn AsyncRead + Send + Unpin),
        len: Option<u64>,
    ) -> Result<PutOutcome, StoreError> {
        let key = match self.find("replace", path).await? {
            Some((key, _)) => key,
            None => self.key(path.components()),
        };
        self.write(path, key, src, len, true).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_in_order_without_duplicates() {
        let v = |s: &[&str]| s.iter().map(|p| p.to_string()).collect::<Vec<_>>();
        let rows: [(&[&str], &[&[&str]]); 3] = [
            (
                &["ntdll.pdb", "1eb8abc1", "ntdll.pdb"],
                &[
                    &["ntdll.pdb", "1eb8abc1", "ntdll.pdb"],
                    &["ntdll.pdb", "1EB8ABC1", "ntdll.pdb"],
                    &["NTDLL.PDB", "1EB8ABC1", "NTDLL.PDB"],
                ],
            ),
            (
                &["Foo.dll", "5F3A2B1C2000", "Foo.dll"],
                &[
                    &["Foo.dll", "5F3A2B1C2000", "Foo.dll"],
                    &["foo.dll", "5F3A2B1C2000", "foo.dll"],
                    &["foo.dll", "5f3a2b1c2000", "foo.dll"],
                    &["FOO.DLL", "5F3A2B1C2000", "FOO.DLL"],
                ],
            ),
            (&["index2.txt"], &[&["index2.txt"], &["INDEX2.TXT"]]),
        ];
        for (asked, want) in rows {
            let got = spellings(&v(asked));
            let want: Vec<Vec<String>> = want.iter().map(|w| v(w)).collect();
            assert_eq!(got, want, "{asked:?}");
        }
    }

    #[test]
    fn identities_for_doctor_never_show_secrets() {
        let mut cfg = ObjectConfig::default();
        assert_eq!(
            cfg.identity(ObjectService::S3),
            "S3 client with the instance's role (EC2/ECS metadata or web identity)"
        );
        cfg.s3.endpoint = Some("https://minio.corp".into());
        cfg.s3.access_key_id = Some("AKIAEXAMPLE1234".into());
        cfg.s3.secret_access_key = Some("hush".into());
        assert_eq!(
            cfg.identity(ObjectService::S3),
            "S3 client at https://minio.corp as access key ****1234"
        );
        assert_eq!(
            cfg.identity(ObjectService::Azure),
            "Azure Blob client with the managed identity"
        );
        cfg.azure.sas = Some("sv=1&sig=x".into());
        assert_eq!(
            cfg.identity(ObjectService::Azure),
            "Azure Blob client with a SAS token"
        );
        cfg.azure.access_key = Some("a2V5".into());
        assert_eq!(
            cfg.identity(ObjectService::Azure),
            "Azure Blob client with the account's shared key"
        );
    }

    /// The AWS CLI's file layout: `[name]` in credentials, `[profile name]` in config,
    /// `[default]` in both; credentials win for keys; region and endpoint from config.
    #[test]
    fn aws_profiles_as_the_cli_reads_them() {
        let credentials = "[default]\naws_access_key_id = AKIADEFAULT\naws_secret_access_key = d\n\
                           [symbols]\naws_access_key_id = AKIASYMBOLS\naws_secret_access_key = s\n\
                           aws_session_token = t\n";
        let config = "[default]\nregion = us-west-2\n[profile symbols]\nregion = eu-west-1\n\
                      endpoint_url = https://minio.corp:9000\n[profile keys-here]\n\
                      aws_access_key_id = AKIACONFIG\naws_secret_access_key = c\n";
        let p = aws_profile(credentials, config, "symbols");
        assert_eq!(
            p,
            AwsProfile {
                access_key_id: Some("AKIASYMBOLS".into()),
                secret_access_key: Some("s".into()),
                session_token: Some("t".into()),
                region: Some("eu-west-1".into()),
                endpoint_url: Some("https://minio.corp:9000".into()),
            }
        );
        let d = aws_profile(credentials, config, "default");
        assert_eq!(d.access_key_id.as_deref(), Some("AKIADEFAULT"));
        assert_eq!(d.region.as_deref(), Some("us-west-2"));
        let c = aws_profile(credentials, config, "keys-here");
        assert_eq!(c.access_key_id.as_deref(), Some("AKIACONFIG"));
        assert_eq!(aws_profile("", "", "nope"), AwsProfile::default());
        assert_eq!(aws_profile("[[[", "=\n[", "default"), AwsProfile::default());
        // Order: config file, then environment, then the profile.
        let files = |p: &std::path::Path| match p.file_name()?.to_str()? {
            "credentials" => Some(credentials.to_string()),
            "config" => Some(config.to_string()),
            _ => None,
        };
        let env = |k: &str| match k {
            "HOME" => Some("/home/u".to_string()),
            "AWS_PROFILE" => Some("symbols".to_string()),
            _ => None,
        };
        let cfg = ObjectConfig::default()
            .with_env(env)
            .with_aws_files(env, files);
        assert_eq!(cfg.s3.access_key_id.as_deref(), Some("AKIASYMBOLS"));
        assert_eq!(cfg.s3.region.as_deref(), Some("eu-west-1"));
        let mut mine = ObjectConfig::default();
        mine.s3.access_key_id = Some("AKIAMINE".into());
        mine.s3.secret_access_key = Some("m".into());
        mine.s3.region = Some("ap-south-1".into());
        let cfg = mine.with_env(env).with_aws_files(env, files);
        assert_eq!(
            cfg.s3.access_key_id.as_deref(),
            Some("AKIAMINE"),
            "config wins"
        );
        assert_eq!(cfg.s3.secret_access_key.as_deref(), Some("m"));
        assert_eq!(cfg.s3.region.as_deref(), Some("ap-south-1"));
    }

    #[test]
    fn virtual_hosted_endpoints_carry_the_bucket() {
        assert_eq!(
            bucket_endpoint("https://minio.corp:9000", "symbols").unwrap(),
            "https://symbols.minio.corp:9000"
        );
        assert_eq!(
            bucket_endpoint("https://s3.example/", "b").unwrap(),
            "https://b.s3.example"
        );
        assert!(bucket_endpoint("not a url", "b").is_err());
    }

    #[test]
    fn plain_http_only_to_this_machine() {
        let rows = [
            ("http://127.0.0.1:9000", false, true),
            ("http://localhost:10000/devstoreaccount1", false, true),
            ("http://[::1]:9000", false, true),
            ("http://minio.corp:9000", false, false),
            ("http://minio.corp:9000", true, true),
            ("https://minio.corp", false, true),
            ("not a url", true, false),
        ];
        for (ep, allow, want) in rows {
            assert_eq!(http_allowed(ep, allow), want, "{ep} allow {allow}");
        }
    }

    #[test]
    fn sas_tokens_never_reach_errors() {
        let s = sas_secrets("?sv=2022-11-02&ss=b&sig=abc%2Fdef&se=2030");
        assert_eq!(s, ["sv=2022-11-02&ss=b&sig=abc%2Fdef&se=2030", "abc%2Fdef"]);
        let cfg = ObjectConfig {
            azure: AzureSettings {
                sas: Some("sv=1&sig=s3cret".into()),
                access_key: Some("a2V5".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let shown = format!("{cfg:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("a2V5"),
            "{shown}"
        );
    }

    #[test]
    fn environment_fills_what_the_config_leaves_open() {
        let env = |k: &str| {
            match k {
                "AWS_ENDPOINT_URL" => Some("http://127.0.0.1:9000"),
                "AWS_REGION" => Some("eu-west-1"),
                "AWS_ACCESS_KEY_ID" => Some("AKIA"),
                "AWS_SECRET_ACCESS_KEY" => Some("secret"),
                "AZURE_STORAGE_SAS_TOKEN" => Some("sv=1&sig=x"),
                _ => None,
            }
            .map(String::from)
        };
        let mut cfg = ObjectConfig::default();
        cfg.s3.region = Some("us-west-2".into());
        let cfg = cfg.with_env(env);
        assert_eq!(cfg.s3.region.as_deref(), Some("us-west-2"), "config wins");
        assert_eq!(cfg.s3.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(cfg.s3.access_key_id.as_deref(), Some("AKIA"));
        assert_eq!(cfg.s3.secret_access_key.as_deref(), Some("secret"));
        assert_eq!(cfg.azure.sas.as_deref(), Some("sv=1&sig=x"));
    }
}
