//! Store openers: the seam where transports plug in. A [`StoreOpener`] turns a symbol path's
//! [`Location`] into a [`Store`]; [`Transports`] knows every transport of this build (local
//! folders, SMB shares, HTTP servers, each remote one wrapped in a SymSrv blackout), while
//! [`LocalOnly`] serves builds and tests without network transports. A location no transport can
//! open becomes an [`UnavailableStore`], which the cascade skips with the recorded reason
//! (per SymSrv: a store that cannot be read is skipped, never an error of the lookup).
//!
//! Data flow: config → `Transports` → `Cascade::resolve` calls `open_store` once per location.

use super::{
    Capabilities, FileMeta, LocalStore, Opened, PutOutcome, Store, StoreDescription, StoreError,
    StoreErrorKind, Transport, blackout, http, is_drive_path, object, smb,
};
use crate::layout::RelPath;
use crate::sympath::Location;
use async_trait::async_trait;
use std::fmt;
use std::sync::Arc;

/// Opens stores for locations: the seam where transports plug in (local folders here; SMB and
/// HTTP transports register through their own openers).
pub trait StoreOpener: Send + Sync + fmt::Debug {
    /// A store rooted at `location`.
    ///
    /// # Errors
    /// [`StoreError`] with kind `Unsupported` when no transport handles the location, or the
    /// transport's own error.
    fn open_store(&self, location: &Location) -> Result<Arc<dyn Store>, StoreError>;
}

/// The opener for builds with only the local transport: local paths become [`LocalStore`]s;
/// SMB and HTTP locations are `Unsupported` (and so skipped by the cascade, with that reason).
#[derive(Debug, Default, Clone)]
pub struct LocalOnly;

impl StoreOpener for LocalOnly {
    fn open_store(&self, location: &Location) -> Result<Arc<dyn Store>, StoreError> {
        match location {
            Location::Local { path } if !cfg!(windows) && is_drive_path(path) => {
                Err(StoreError::new(
                    path.as_str(),
                    "connect",
                    "",
                    StoreErrorKind::Unsupported,
                    "a Windows drive path cannot be used on this operating system",
                ))
            }
            Location::Local { path } => Ok(Arc::new(LocalStore::new(path))),
            other => Err(StoreError::new(
                other.to_string(),
                "connect",
                "",
                StoreErrorKind::Unsupported,
                "no transport for this kind of location is configured",
            )),
        }
    }
}

/// The opener for every transport this build has: local folders ([`LocalStore`]), SMB shares
/// ([`smb::SmbStore`]) and HTTP(S) servers ([`http::HttpStore`]), each remote store
/// wrapped in a SymSrv [`blackout::Blackout`].
#[derive(Debug, Clone)]
pub struct Transports {
    /// The SMB client (connection pool, aliases, credentials).
    pub smb: Arc<smb::SmbClient>,
    /// The HTTP client (proxy, timeouts, retries), or why it could not be built.
    pub http: http::HttpTransport,
    /// Blackout thresholds for remote stores.
    pub blackout: blackout::BlackoutPolicy,
    /// S3 and Azure Blob settings (`[s3]`, `[azure]` over the environment).
    pub objects: object::ObjectConfig,
}

impl StoreOpener for Transports {
    fn open_store(&self, location: &Location) -> Result<Arc<dyn Store>, StoreError> {
        match location {
            Location::Smb {
                host,
                port,
                share,
                dirs,
                ..
            } if smb_route(
                cfg!(windows),
                self.smb.config().has_credentials(host),
                port.is_some(),
            ) == SmbRoute::Os =>
            {
                let s = LocalStore::os_share(location.to_string());
                Ok(Arc::new(blackout::Blackout::new(
                    Arc::new(s),
                    self.blackout,
                )))
            }
            Location::Smb {
                host,
                port,
                share,
                dirs,
                ..
            } => {
                let s = smb::SmbStore::new(
                    self.smb.clone(),
                    host,
                    *port,
                    share,
                    dirs,
                    &location.to_string(),
                );
                Ok(Arc::new(blackout::Blackout::new(
                    Arc::new(s),
                    self.blackout,
                )))
            }
            Location::Http { url } => {
                let client = self.http.as_ref().map_err(|e| {
                    StoreError::new(
                        url.as_str(),
                        "connect",
                        "",
                        StoreErrorKind::Unsupported,
                        e.to_string(),
                    )
                })?;
                let s = http::HttpStore::new(client.clone(), url)?;
                Ok(Arc::new(blackout::Blackout::new(
                    Arc::new(s),
                    self.blackout,
                )))
            }
            Location::Object { .. } => self.bucket(location),
            other => LocalOnly.open_store(other),
        }
    }
}

impl Transports {
    /// An S3 bucket or Azure container store, requests sent by the HTTP client.
    fn bucket(&self, location: &Location) -> Result<Arc<dyn Store>, StoreError> {
        let Location::Object {
            service,
            container,
            prefix,
        } = location
        else {
            return LocalOnly.open_store(location);
        };
        let shown = location.to_string();
        let client = self.http.as_ref().map_err(|e| {
            StoreError::new(
                shown.as_str(),
                "connect",
                "",
                StoreErrorKind::Unsupported,
                e.to_string(),
            )
        })?;
        let s =
            object::BucketStore::new(*service, container, prefix, &shown, &self.objects, client)?;
        Ok(Arc::new(blackout::Blackout::new(
            Arc::new(s),
            self.blackout,
        )))
    }
}

/// How an SMB location (`\\host\share\dir`) is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmbRoute {
    /// The built-in client (`store::smb`), with the configured credentials.
    BuiltIn,
    /// The operating system's client: the UNC path through the file system, as the process's
    /// identity ([`LocalStore::os_share`]).
    Os,
}

/// The route for an SMB location: on Windows a host the config gives no credentials for goes
/// through Windows' own client, as SymSrv does (the debugger's user; a service's machine
/// account or gMSA: no password stored anywhere, Kerberos, DFS and encryption as Windows
/// negotiates them — Microsoft, "Choosing Network Security Credentials"). Explicit
/// credentials, a port in the path (`\\host:4445\share`, which a UNC path cannot carry) and
/// every other platform use the built-in client.
pub fn smb_route(windows: bool, has_credentials: bool, has_port: bool) -> SmbRoute {
    if windows && !has_credentials && !has_port {
        SmbRoute::Os
    } else {
        SmbRoute::BuiltIn
    }
}

/// A store that can never be reached, standing in for a location no transport could open:
/// every operation fails with the recorded reason, so the cascade skips it and says why.
#[derive(Debug)]
pub struct UnavailableStore {
    location: String,
    kind: StoreErrorKind,
    detail: String,
}

impl UnavailableStore {
    /// From the error that prevented opening the store.
    pub fn from_error(e: &StoreError) -> UnavailableStore {
        UnavailableStore {
            location: e.store.clone(),
            kind: e.kind,
            detail: e.detail.clone(),
        }
    }
    fn fail<T>(&self, op: &'static str, path: impl std::fmt::Display) -> Result<T, StoreError> {
        Err(StoreError::new(
            &self.location,
            op,
            path,
            self.kind,
            &self.detail,
        ))
    }
}

#[async_trait]
impl Store for UnavailableStore {
    fn describe(&self) -> StoreDescription {
        StoreDescription {
            location: self.location.clone(),
            transport: Transport::Unavailable,
        }
    }
    async fn stat(&self, p: &RelPath) -> Result<Option<FileMeta>, StoreError> {
        self.fail("stat", p)
    }
    async fn open(&self, p: &RelPath) -> Result<Option<Opened>, StoreError> {
        self.fail("open", p)
    }
    async fn put(
        &self,
        p: &RelPath,
        _: &mut (dyn tokio::io::AsyncRead + Send + Unpin),
        _: Option<u64>,
    ) -> Result<PutOutcome, StoreError> {
        self.fail("put", p)
    }
    async fn capabilities(&self) -> Result<Capabilities, StoreError> {
        self.fail("capabilities", "")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smb_routes() {
        // (windows, credentials configured, port in the path) → route
        let rows = [
            (true, false, false, SmbRoute::Os),
            (true, true, false, SmbRoute::BuiltIn),
            (true, false, true, SmbRoute::BuiltIn),
            (false, false, false, SmbRoute::BuiltIn),
            (false, true, false, SmbRoute::BuiltIn),
        ];
        for (w, c, p, want) in rows {
            assert_eq!(
                smb_route(w, c, p),
                want,
                "windows {w} credentials {c} port {p}"
            );
        }
    }

    /// A share the OS client cannot reach is an error (not an empty store), so a miss there
    /// is not definitive; a reachable one answers misses as `Ok(None)`.
    #[tokio::test]
    async fn an_unreachable_os_share_is_an_error_not_a_miss() {
        let rel = crate::layout::RelPath::from_safe(["a.pdb", "11", "a.pdb"]);
        let gone = LocalStore::os_share("/nonexistent-symcascade-share/Symbols");
        let e = gone.stat(&rel).await.unwrap_err();
        assert_eq!(e.kind, StoreErrorKind::Unreachable, "{e}");
        let d = tempfile::tempdir().unwrap();
        assert!(
            LocalStore::os_share(d.path())
                .stat(&rel)
                .await
                .unwrap()
                .is_none()
        );
        // A local folder that does not exist yet is an empty store (created on first write).
        assert!(
            LocalStore::new("/nonexistent-symcascade-dir")
                .stat(&rel)
                .await
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn os_shares_are_remote_stores() {
        let d = LocalStore::os_share(r"\\MainOffice\Symbols").describe();
        assert_eq!(d.transport, Transport::OsSmb);
        assert!(d.transport.is_remote());
        assert!(!LocalStore::new("/var/sym").describe().transport.is_remote());
    }
}
