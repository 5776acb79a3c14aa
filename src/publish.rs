//! Publishing files into a store the way `symstore add` does: compute the key from the file's
//! content, then write it plain, compressed (one-file CAB), or as a `file.ptr`.
//!
//! Data flow: file on disk → [`Key::from_file`] → `layout::path_for` → `Store::put`. Used by
//! `symcascade add`, the demo and the test harness to build upstream stores from real PE/PDB
//! files.

use crate::compress;
use crate::key::{Key, KeyError, PeKey};
use crate::layout::{self, FilePtr, Form, RelPath, Tiering};
use crate::store::{PutOutcome, Store, StoreError};
use std::path::Path;

/// Why a file could not be published.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The file's key could not be computed.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The store refused the write.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Compressing into a temp file failed.
    #[error("compressing {path}: {source}")]
    Compress {
        /// The input file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Adds `file` to `store` under its own key (a PE image under its image key, a PDB under its
/// PDB key) in `form`: `Plain`, `Compressed` (MSZIP cabinet under the compressed name) or
/// `FilePtr` (a `PATH:` pointer to `file` as given). `tiering` must match the store's layout
/// (`TwoTier` when its root holds `index2.txt`). Returns the key and the path written.
///
/// # Errors
/// [`PublishError`] when the key cannot be computed or the store cannot be written.
pub async fn publish_file(
    store: &dyn Store,
    file: &Path,
    tiering: Tiering,
    form: Form,
) -> Result<(Key, RelPath, PutOutcome), PublishError> {
    let f = file.to_path_buf();
    let key = tokio::task::spawn_blocking(move || Key::from_file(&f, PeKey::Image))
        .await
        .map_err(|e| PublishError::Compress {
            path: file.display().to_string(),
            source: std::io::Error::other(e),
        })??;
    let path = layout::path_for(&key, tiering, form);
    let outcome = match form {
        Form::Plain => {
            let mut f = tokio::fs::File::open(file)
                .await
                .map_err(|e| StoreError::from_io("local", "open", file.display(), &e))?;
            let len = f.metadata().await.ok().map(|m| m.len());
            store.put(&path, &mut f, len).await?
        }
        Form::Compressed => {
            let (src, name) = (file.to_path_buf(), key.name().to_string());
            let tmp = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
                let tmp = tempfile::NamedTempFile::new()?;
                let mut input = std::io::BufReader::new(std::fs::File::open(&src)?);
                compress::write_cab(&name, &mut input, tmp.as_file().try_clone()?)?;
                Ok(tmp)
            })
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r)
            .map_err(|source| PublishError::Compress {
                path: file.display().to_string(),
                source,
            })?;
            let mut f = tokio::fs::File::open(tmp.path())
                .await
                .map_err(|e| StoreError::from_io("local", "open", tmp.path().display(), &e))?;
            let len = f.metadata().await.ok().map(|m| m.len());
            store.put(&path, &mut f, len).await?
        }
        Form::FilePtr => {
            let text = layout::format_file_ptr(&FilePtr::Path(file.display().to_string()));
            let len = text.len() as u64;
            store.put(&path, &mut text.as_bytes(), Some(len)).await?
        }
    };
    Ok((key, path, outcome))
}
