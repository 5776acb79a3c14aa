//! Store administration as SymStore and AgeStore users expect: aging ([`age`]), the
//! `000Admin` transaction records of `add`/`del` ([`transaction`]) and listings ([`query`]).
//!
//! Data flow: a store location (local folder or SMB share) becomes an [`AdminStore`], which
//! lists folders with sizes and last-write times and removes files and empty folders;
//! [`scan_keys`] turns the listing into [`KeyFolder`]s (`<name>/<index>/` with every form
//! in it); `age` plans removals over them as a pure function and executes the plan, `query`
//! prints them. HTTP stores cannot be administered (they are read-only to SymSrv).

pub mod age;
pub mod cli;
pub mod query;
pub mod transaction;

use crate::layout::{self, Form, Tiering};
use crate::store::smb::{Listed, SmbClient, SmbStore};
use crate::store::{StoreError, StoreErrorKind};
use crate::sympath::Location;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

/// Why an administration command could not do its job. Names the input and the reason.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The store cannot be administered this way (an HTTP store).
    #[error("{store}: {reason}")]
    Unsupported {
        /// The store as written.
        store: String,
        /// Why.
        reason: &'static str,
    },
    /// A store operation failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A local file of the store could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A `000Admin` file does not have SymStore's format.
    #[error("{path} line {line}: {reason}")]
    Record {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A file given to `add` could not be keyed or stored.
    #[error(transparent)]
    Publish(#[from] crate::publish::PublishError),
    /// No transaction with this id is listed in `000Admin/server.txt`.
    #[error("no transaction with id '{0}' found in 000Admin/server.txt")]
    TransactionNotFound(String),
    /// A transaction id that is not a number.
    #[error("transaction id {0:?} is not a number (SymStore ids are like 0000000001)")]
    BadTransactionId(String),
    /// A `--product`, `--version` or `--comment` value SymStore's records cannot hold.
    #[error("--{field} {value:?}: {reason}")]
    BadField {
        /// `product`, `version` or `comment`.
        field: &'static str,
        /// The value given.
        value: String,
        /// Why.
        reason: &'static str,
    },
    /// A byte size (`--max-size`, `aging.max_size`) that cannot be read.
    #[error("size {value:?}: {reason} (e.g. 50GB, 512MiB, 1000000)")]
    BadSize {
        /// The text given.
        value: String,
        /// Why.
        reason: String,
    },
}

/// Parses a byte size: a number with an optional SI (`KB`, `MB`, `GB`, `TB`: powers of 1000)
/// or IEC (`KiB`, `MiB`, `GiB`, `TiB`: powers of 1024) unit, as the `bytesize` crate reads them.
///
/// # Errors
/// [`AdminError::BadSize`] naming the text.
pub fn parse_size(text: &str) -> Result<u64, AdminError> {
    let t = text.trim();
    if t.is_empty() || !t.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(AdminError::BadSize {
            value: text.to_string(),
            reason: "must start with a number".into(),
        });
    }
    t.parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|reason| AdminError::BadSize {
            value: text.to_string(),
            reason,
        })
}

/// A store opened for administration: a local folder or a folder of an SMB share.
#[derive(Debug, Clone)]
pub enum AdminStore {
    /// A local store root.
    Local(crate::store::LocalStore),
    /// An SMB store.
    Smb(SmbStore),
}

/// One listed entry of a store folder (local entries are converted to the SMB shape).
pub type Entry = Listed;

impl AdminStore {
    /// Opens `location` for administration (no I/O yet).
    ///
    /// # Errors
    /// [`AdminError::Unsupported`] for HTTP stores.
    pub fn open(location: &Location, client: &Arc<SmbClient>) -> Result<AdminStore, AdminError> {
        match location {
            Location::Local { path } => Ok(AdminStore::Local(crate::store::LocalStore::new(
                PathBuf::from(path),
            ))),
            Location::Smb {
                host,
                port,
                share,
                dirs,
                ..
            } => Ok(AdminStore::Smb(SmbStore::new(
                client.clone(),
                host,
                *port,
                share,
                dirs,
                &location.to_string(),
            ))),
            Location::Http { .. } => Err(AdminError::Unsupported {
                store: location.to_string(),
                reason: "an HTTP store cannot be listed or aged; run this where its files are",
            }),
            Location::Object { .. } => Err(AdminError::Unsupported {
                store: location.to_string(),
                reason: "an object store is aged by the bucket's own lifecycle rules (expiration by age), not by symcascade",
            }),
        }
    }

    /// The store as written, for messages.
    pub fn describe(&self) -> String {
        match self {
            AdminStore::Local(s) => s.root().display().to_string(),
            AdminStore::Smb(s) => crate::store::Store::describe(s).location,
        }
    }

    /// Entries of the folder `dir` (components below the root); `Ok(None)` when it does not
    /// exist.
    ///
    /// # Errors
    /// [`StoreError`] when the folder cannot be listed.
    pub async fn list(&self, dir: &[String]) -> Result<Option<Vec<Entry>>, StoreError> {
        match self {
            AdminStore::Local(s) => {
                let path = dir.iter().fold(s.root().to_path_buf(), |p, c| p.join(c));
                let shown = self.describe();
                let rel = dir.join("/");
                tokio::task::spawn_blocking(move || list_local(&path))
                    .await
                    .unwrap_or_else(|e| Err(std::io::Error::other(e)))
                    .map_err(|e| StoreError::from_io(shown, "list", rel, &e))
            }
            AdminStore::Smb(s) => s.list_entries(dir).await,
        }
    }

    /// Removes the file `path` (components below the root); a missing file is fine.
    ///
    /// # Errors
    /// [`StoreError`] when the store refuses.
    pub async fn remove_file(&self, path: &[String]) -> Result<(), StoreError> {
        let rel = crate::layout::RelPath::checked(path.iter().cloned()).ok_or_else(|| {
            StoreError::new(
                self.describe(),
                "remove",
                path.join("/"),
                StoreErrorKind::Io,
                "unsafe name",
            )
        })?;
        match self {
            AdminStore::Local(s) => {
                let p = path.iter().fold(s.root().to_path_buf(), |p, c| p.join(c));
                match tokio::fs::remove_file(&p).await {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(StoreError::from_io(self.describe(), "remove", rel, &e)),
                }
            }
            AdminStore::Smb(s) => s.remove(&rel).await,
        }
    }

    /// Removes the folder `dir` if empty: `Ok(false)` when it still holds something.
    ///
    /// # Errors
    /// [`StoreError`] when the store refuses.
    pub async fn remove_empty_dir(&self, dir: &[String]) -> Result<bool, StoreError> {
        match self {
            AdminStore::Local(s) => {
                let p = dir.iter().fold(s.root().to_path_buf(), |p, c| p.join(c));
                match tokio::fs::remove_dir(&p).await {
                    Ok(()) => Ok(true),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
                    Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => Ok(false),
                    Err(e) => Err(StoreError::from_io(
                        self.describe(),
                        "remove",
                        dir.join("/"),
                        &e,
                    )),
                }
            }
            AdminStore::Smb(s) => s.remove_empty_dir(dir).await,
        }
    }

    /// The store's layout: two-tier when `index2.txt` is in its root.
    ///
    /// # Errors
    /// [`StoreError`] when the root cannot be listed.
    pub async fn tiering(&self) -> Result<Tiering, StoreError> {
        let root = self.list(&[]).await?.unwrap_or_default();
        let two = root
            .iter()
            .any(|e| !e.is_dir && e.name.eq_ignore_ascii_case(layout::INDEX2_TXT));
        Ok(if two {
            Tiering::TwoTier
        } else {
            Tiering::OneTier
        })
    }
}

fn list_local(path: &std::path::Path) -> std::io::Result<Option<Vec<Entry>>> {
    let rd = match std::fs::read_dir(path) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e?;
        // Gone since the listing (another remover, a rename into place): skip it.
        let Ok(m) = e.metadata() else { continue };
        out.push(Entry {
            name: e.file_name().to_string_lossy().into_owned(),
            is_dir: m.is_dir(),
            len: if m.is_dir() { 0 } else { m.len() },
            modified: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        });
    }
    Ok(Some(out))
}

/// A root entry that is not a symbol file's folder: `000Admin` (SymStore), `000Cascade`
/// (our queue and locks) and any other `000*` folder, hidden (`.`) names and files.
pub fn is_reserved_root_entry(e: &Entry) -> bool {
    !e.is_dir || e.name.starts_with("000") || e.name.starts_with('.')
}

/// One file in a key folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyFile {
    /// The name as stored.
    pub name: String,
    /// Its form (`None`: another file, e.g. a temp file being written).
    pub form: Option<Form>,
    /// Size in bytes.
    pub bytes: u64,
    /// Last write (= last use, see `age::touch_hit`).
    #[serde(with = "unix_secs")]
    pub modified: SystemTime,
}

/// A key folder `<name>/<index>/` (with its two-character prefix folder in a two-tier store)
/// and every file in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyFolder {
    /// File name (the `<name>` folder as stored).
    pub name: String,
    /// Index (the `<index>` folder as stored).
    pub index: String,
    /// Components of the folder below the store root.
    pub dir: Vec<String>,
    /// The files in it.
    pub files: Vec<KeyFile>,
}

impl KeyFolder {
    /// Bytes of all its files.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }

    /// The latest write time of its files (the folder's last use); the epoch when empty.
    pub fn last_use(&self) -> SystemTime {
        self.files
            .iter()
            .map(|f| f.modified)
            .max()
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }
}

/// The form of `file` in the key folder of `name`: plain, compressed (`_`-suffixed) or
/// `file.ptr` (case-insensitively, as stores live on case-insensitive file systems).
pub fn form_of(name: &str, file: &str) -> Option<Form> {
    if file.eq_ignore_ascii_case(name) {
        Some(Form::Plain)
    } else if file.eq_ignore_ascii_case(&layout::compressed_name(name)) {
        Some(Form::Compressed)
    } else if file.eq_ignore_ascii_case(layout::FILE_PTR) {
        Some(Form::FilePtr)
    } else {
        None
    }
}

/// Lists every key folder of the store (one listing per folder: root, each `<name>`, each
/// `<index>`; plus each prefix folder when two-tier), skipping reserved root entries
/// ([`is_reserved_root_entry`]). Sorted by name, then index.
///
/// # Errors
/// [`AdminError::Store`] when the root cannot be listed; a folder that vanished meanwhile is
/// skipped.
pub async fn scan_keys(store: &AdminStore) -> Result<Vec<KeyFolder>, AdminError> {
    let tiering = store.tiering().await?;
    let root = store.list(&[]).await?.unwrap_or_default();
    let mut name_dirs: Vec<Vec<String>> = Vec::new();
    for e in root.iter().filter(|e| !is_reserved_root_entry(e)) {
        match tiering {
            Tiering::OneTier => name_dirs.push(vec![e.name.clone()]),
            Tiering::TwoTier => {
                let sub = store.list(std::slice::from_ref(&e.name)).await?;
                for n in sub.unwrap_or_default().into_iter().filter(|n| n.is_dir) {
                    name_dirs.push(vec![e.name.clone(), n.name]);
                }
            }
        }
    }
    let mut keys = Vec::new();
    for nd in name_dirs {
        let name = nd.last().cloned().unwrap_or_default();
        let Some(indexes) = store.list(&nd).await? else {
            continue;
        };
        for ix in indexes.into_iter().filter(|e| e.is_dir) {
            let mut dir = nd.clone();
            dir.push(ix.name.clone());
            let Some(files) = store.list(&dir).await? else {
                continue;
            };
            let files = files
                .into_iter()
                .filter(|f| !f.is_dir)
                .map(|f| KeyFile {
                    form: form_of(&name, &f.name),
                    name: f.name,
                    bytes: f.len,
                    modified: f.modified,
                })
                .collect();
            keys.push(KeyFolder {
                name: name.clone(),
                index: ix.name,
                dir,
                files,
            });
        }
    }
    keys.sort_by(|a, b| (&a.name, &a.index).cmp(&(&b.name, &b.index)));
    Ok(keys)
}

/// Removes a key folder and everything in it, then its `<name>` folder (and two-tier prefix
/// folder) when they became empty. Returns the bytes removed.
///
/// # Errors
/// [`StoreError`] for the first file or folder the store refuses to remove.
pub async fn remove_key_folder(store: &AdminStore, key: &KeyFolder) -> Result<u64, StoreError> {
    let mut removed = 0;
    // Listed again: what is there now is what goes (a file added since the scan included).
    for f in store.list(&key.dir).await?.unwrap_or_default() {
        let mut p = key.dir.clone();
        p.push(f.name);
        if f.is_dir {
            // Key folders hold files only; something else is not ours to remove.
            continue;
        }
        store.remove_file(&p).await?;
        removed += f.len;
    }
    let mut dir = key.dir.clone();
    while !dir.is_empty() {
        if !store.remove_empty_dir(&dir).await? {
            break;
        }
        dir.pop();
    }
    Ok(removed)
}

/// Serde helper: a `SystemTime` as whole seconds since the Unix epoch.
pub(crate) mod unix_secs {
    use std::time::{SystemTime, UNIX_EPOCH};

    /// Serialises `t` as seconds since the epoch (0 before it).
    pub fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_si_and_iec_units() {
        assert_eq!(parse_size("50GB").unwrap(), 50_000_000_000);
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert_eq!(parse_size(" 2 KB ").unwrap(), 2000);
        for bad in ["", "GB", "-5GB", "5 parsecs"] {
            let e = parse_size(bad).unwrap_err();
            assert!(matches!(e, AdminError::BadSize { .. }), "{bad}: {e}");
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn forms_are_recognised_case_insensitively() {
        assert_eq!(form_of("a.pdb", "A.PDB"), Some(Form::Plain));
        assert_eq!(form_of("a.pdb", "a.pd_"), Some(Form::Compressed));
        assert_eq!(form_of("a.pdb", "FILE.PTR"), Some(Form::FilePtr));
        assert_eq!(form_of("a.pdb", ".a.pdb.x1.symcascade-tmp"), None);
    }

    #[test]
    fn reserved_root_entries_are_never_key_folders() {
        let e = |name: &str, is_dir| Entry {
            name: name.into(),
            is_dir,
            len: 0,
            modified: SystemTime::UNIX_EPOCH,
        };
        for r in [
            e("000Admin", true),
            e("000Cascade", true),
            e("000Other", true),
            e(".hidden", true),
            e("pingme.txt", false),
        ] {
            assert!(is_reserved_root_entry(&r), "{}", r.name);
        }
        assert!(!is_reserved_root_entry(&e("ntdll.pdb", true)));
    }
}
