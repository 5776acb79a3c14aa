//! Verification of a hit before it is written into any store, and of a file found under a final
//! name before it is answered: "never publish garbage".
//!
//! Rules (issue 10, items 9–10; symbolicator#1172 and WinDbg-Feedback#299 for the failures seen
//! in the wild: zero-byte files, HTML error pages and proxy text under symbol names, cut-off
//! cabinets):
//! - a 0-byte file is never a symbol file;
//! - a name whose type [`Key::from_file`] can key (`.pdb`, and PE images such as `.dll`,
//!   `.exe`, `.sys`; see [`keyable`]) must hold that kind of content, and its computed key
//!   must equal the requested key (the index, compared case-insensitively);
//! - a compressed file must be a cabinet holding exactly one complete member, which expands
//!   within the cap to content passing the rules above.
//!
//! Names that cannot be keyed (`.txt`, `.dbg`, unknown extensions) get the 0-byte check only.
//! Keying reads a PDB's header streams or a PE's headers, never the whole file, so verifying a
//! plain file is cheap; verifying a cabinet expands it once (to a temp file for keyable names,
//! else into a sink).

use crate::compress::{self, CompressError};
use crate::key::{Key, PeKey};
use std::io::{self, Read};
use std::path::Path;

/// The kind of content a file name promises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `.pdb`: a Windows (MSF 7.00) or portable (`BSJB`) PDB.
    Pdb,
    /// A PE image (`MZ`): `.dll`, `.exe`, `.sys` and the other image extensions.
    Image,
}

/// Extensions of PE images SymStore indexes by `TimeDateStamp` + `SizeOfImage`.
const IMAGE_EXTENSIONS: &[&str] = &[
    "dll", "exe", "sys", "ocx", "drv", "cpl", "scr", "efi", "mui", "winmd", "acm", "ax", "tsp",
];

/// The kind of content `name` promises, or `None` when its type cannot be keyed (only the
/// 0-byte check applies then).
pub fn keyable(name: &str) -> Option<Kind> {
    let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
    if ext == "pdb" {
        Some(Kind::Pdb)
    } else if IMAGE_EXTENSIONS.contains(&ext.as_str()) {
        Some(Kind::Image)
    } else {
        None
    }
}

/// Why a file was refused. All but [`VerifyError::Read`] and [`VerifyError::Spool`] blame the file (its
/// source is `corrupt`); those two are I/O failures, never a verdict on the content.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The file is empty.
    #[error("{name}: empty file (0 bytes)")]
    Empty {
        /// The requested file name.
        name: String,
    },
    /// The content is not what the name promises (HTML page, text, another format).
    #[error("{name}: not a {expected}: {reason}")]
    WrongContent {
        /// The requested file name.
        name: String,
        /// `PDB` or `PE image`.
        expected: &'static str,
        /// What was found instead, or why it could not be parsed.
        reason: String,
    },
    /// A valid file of another key (another build).
    #[error("{name}: holds index {found}, expected {expected}")]
    WrongKey {
        /// The requested file name.
        name: String,
        /// The index computed from the content.
        found: String,
        /// The requested index.
        expected: String,
    },
    /// A compressed file that is not one complete, one-member cabinet.
    #[error("{name}: compressed file: {source}")]
    BadCabinet {
        /// The requested file name.
        name: String,
        /// What is wrong with it.
        #[source]
        source: CompressError,
    },
    /// The file to check could not be read (an I/O error, not a verdict on its content).
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The expansion could not be written into the spool directory (full disk): a failure of
    /// this machine, never blamed on the source.
    #[error("expanding into {path}: {source}")]
    Spool {
        /// The spool directory.
        path: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

impl VerifyError {
    /// `true` when the file could not be checked (I/O), `false` for a verdict on its content.
    pub fn is_io(&self) -> bool {
        matches!(self, VerifyError::Read { .. } | VerifyError::Spool { .. })
    }
}

/// Checks a complete plain file at `path` (a spool file or a store's file) against `key`.
/// Blocking: run it on a blocking thread.
///
/// # Errors
/// [`VerifyError`] naming `key`'s file name and the reason.
pub fn verify_plain(path: &Path, key: &Key) -> Result<(), VerifyError> {
    let name = key.name().to_string();
    let local = |source| VerifyError::Read {
        path: path.display().to_string(),
        source,
    };
    let len = std::fs::metadata(path).map_err(local)?.len();
    if len == 0 {
        return Err(VerifyError::Empty { name });
    }
    let Some(kind) = keyable(key.name()) else {
        return Ok(());
    };
    let expected = match kind {
        Kind::Pdb => "PDB",
        Kind::Image => "PE image",
    };
    let wrong = |reason: String| VerifyError::WrongContent {
        name: name.clone(),
        expected,
        reason,
    };
    let mut head = Vec::with_capacity(512);
    std::fs::File::open(path)
        .and_then(|f| f.take(512).read_to_end(&mut head))
        .map_err(local)?;
    let is_pdb =
        head.starts_with(b"Microsoft C/C++ MSF 7.00\r\n\x1aDS") || head.starts_with(b"BSJB");
    let is_image = head.starts_with(b"MZ");
    match (kind, is_pdb, is_image) {
        (Kind::Pdb, true, _) | (Kind::Image, _, true) => {}
        (Kind::Pdb, _, true) => return Err(wrong("a PE image".into())),
        (Kind::Image, true, _) => return Err(wrong("a PDB".into())),
        _ => return Err(wrong(describe_foreign(&head))),
    }
    let found = match Key::from_file(path, PeKey::Image) {
        Ok(k) => k,
        Err(crate::key::KeyError::Io { source, .. }) => return Err(local(source)),
        Err(e) => return Err(wrong(e.to_string())),
    };
    if !found.index().eq_ignore_ascii_case(key.index()) {
        return Err(VerifyError::WrongKey {
            name,
            found: found.index().to_string(),
            expected: key.index().to_string(),
        });
    }
    Ok(())
}

/// Whether `head` (the first bytes of a file, at least 64 or all of it) starts like the
/// content `name` promises: a cheap early check before a hit is streamed to a client while it
/// is still being read (the full check runs when it is complete).
pub fn plausible_start(name: &str, head: &[u8]) -> bool {
    match keyable(name) {
        Some(Kind::Pdb) => {
            head.starts_with(b"Microsoft C/C++ MSF 7.00\r\n\x1aDS") || head.starts_with(b"BSJB")
        }
        Some(Kind::Image) => head.starts_with(b"MZ"),
        None => !head.is_empty(),
    }
}

/// Names what a file that is neither PE nor PDB looks like, for the reason of a refusal.
fn describe_foreign(head: &[u8]) -> String {
    let text = String::from_utf8_lossy(head);
    let t = text.trim_start_matches('\u{feff}').trim_start();
    let lower = t.chars().take(64).collect::<String>().to_ascii_lowercase();
    if lower.starts_with("<!doctype html")
        || lower.starts_with("<html")
        || lower.starts_with("<?xml")
    {
        "an HTML/XML page".into()
    } else if lower.starts_with("path:") || lower.starts_with("msg:") {
        "file.ptr text".into()
    } else if compress::is_cab(head) {
        "a cabinet (compressed file) under a plain name".into()
    } else if head
        .iter()
        .all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace())
    {
        "text".into()
    } else {
        "unknown format (no MZ, MSF 7.00 or BSJB magic)".into()
    }
}

/// Checks a complete cabinet at `cab` holding `key`'s file: one member, complete, expanding
/// within `cap` to content that passes [`verify_plain`]. The member is expanded into a temp
/// file in `spool_dir` when it must be keyed or when `keep` asks for the expansion (then it is
/// returned with its length); otherwise into a sink. Blocking.
///
/// # Errors
/// [`VerifyError::BadCabinet`] for a bad cabinet, the [`verify_plain`] errors for bad
/// content, [`VerifyError::Read`] / [`VerifyError::Spool`] when the cabinet cannot be read or
/// its expansion cannot be written.
pub fn verify_cab(
    cab: &Path,
    key: &Key,
    cap: u64,
    spool_dir: &Path,
    keep: bool,
) -> Result<Option<(tempfile::NamedTempFile, u64)>, VerifyError> {
    let name = key.name().to_string();
    let input = std::fs::File::open(cab).map_err(|source| VerifyError::Read {
        path: cab.display().to_string(),
        source,
    })?;
    let input = io::BufReader::new(input);
    let bad = |source| VerifyError::BadCabinet {
        name: name.clone(),
        source,
    };
    let out_err = |source: io::Error| VerifyError::Spool {
        path: spool_dir.display().to_string(),
        source,
    };
    if !keep && keyable(key.name()).is_none() {
        let (_, len) = compress::expand_cab(input, &mut io::sink(), cap).map_err(|e| match e {
            CompressError::Write(source) => out_err(source),
            e => bad(e),
        })?;
        if len == 0 {
            return Err(VerifyError::Empty { name });
        }
        return Ok(None);
    }
    let tmp = crate::spool::new_spool_file(spool_dir).map_err(out_err)?;
    let file = tmp.as_file().try_clone().map_err(out_err)?;
    let mut w = io::BufWriter::new(file);
    let (member, len) = compress::expand_cab(input, &mut w, cap).map_err(|e| match e {
        CompressError::Write(source) => out_err(source),
        e => bad(e),
    })?;
    drop(w);
    if !member.eq_ignore_ascii_case(key.name()) {
        tracing::debug!(%member, key = %key, "cabinet member name differs from key name");
    }
    verify_plain(tmp.path(), key)?;
    Ok(keep.then_some((tmp, len)))
}

/// Local files found good, by path, with the length and modification time they had then: a
/// warm hit is keyed once per process, not on every request. Keying a 5.7 MB PDB (its header
/// streams) measured about 2.2 ms in a debug build, 0.4 ms for a 1 MB PDB and 0.06 ms for a
/// DLL; a `stat` costs under 1 µs. A file replaced since (new length or time) is checked again.
#[derive(Debug, Default)]
pub struct VerifiedFiles {
    seen: std::sync::Mutex<
        std::collections::HashMap<std::path::PathBuf, (u64, std::time::SystemTime)>,
    >,
}

/// Entries kept by [`VerifiedFiles`]; beyond it the memory is simply cleared (re-keying is cheap).
const MAX_VERIFIED: usize = 100_000;

impl VerifiedFiles {
    /// Whether `path` was found good with its current length and modification time (one
    /// `stat`, no reading). `false` when it was not, or cannot be stat'ed.
    pub fn is_known_good(&self, path: &Path) -> bool {
        let Ok(meta) = std::fs::metadata(path) else {
            return false;
        };
        let Ok(modified) = meta.modified() else {
            return false;
        };
        self.seen.lock().expect("verified files").get(path) == Some(&(meta.len(), modified))
    }

    /// Checks the local file `path` holding `key`'s file in `form` (plain: [`verify_plain`];
    /// compressed: [`verify_cab`], expanding into `spool_dir`; `file.ptr`: not empty), unless
    /// it was found good before with the same length and modification time. Blocking.
    ///
    /// # Errors
    /// As [`verify_plain`] and [`verify_cab`].
    pub fn check(
        &self,
        path: &Path,
        key: &Key,
        form: crate::layout::Form,
        cap: u64,
        spool_dir: &Path,
    ) -> Result<(), VerifyError> {
        use crate::layout::Form;
        let local = |source| VerifyError::Read {
            path: path.display().to_string(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(local)?;
        let stamp = (meta.len(), meta.modified().map_err(local)?);
        if self.seen.lock().expect("verified files").get(path) == Some(&stamp) {
            return Ok(());
        }
        match form {
            Form::Plain => verify_plain(path, key)?,
            Form::Compressed => {
                std::fs::create_dir_all(spool_dir).map_err(|source| VerifyError::Spool {
                    path: spool_dir.display().to_string(),
                    source,
                })?;
                verify_cab(path, key, cap, spool_dir, false)?;
            }
            Form::FilePtr if stamp.0 == 0 => {
                return Err(VerifyError::Empty {
                    name: crate::layout::FILE_PTR.into(),
                });
            }
            Form::FilePtr => {}
        }
        let mut seen = self.seen.lock().expect("verified files");
        if seen.len() >= MAX_VERIFIED {
            seen.clear();
        }
        seen.insert(path.to_path_buf(), stamp);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn fixture(n: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(n)
    }

    fn key_of(n: &str) -> Key {
        Key::from_file(&fixture(n), PeKey::Image).unwrap()
    }

    fn write(dir: &Path, body: &[u8]) -> PathBuf {
        let p = dir.join(format!("f{}", body.len()));
        std::fs::write(&p, body).unwrap();
        p
    }

    #[test]
    fn keyable_names() {
        assert_eq!(keyable("ntdll.PDB"), Some(Kind::Pdb));
        assert_eq!(keyable("ntoskrnl.exe"), Some(Kind::Image));
        assert_eq!(keyable("x.sys"), Some(Kind::Image));
        assert_eq!(keyable("readme.txt"), None);
        assert_eq!(keyable("noext"), None);
    }

    #[test]
    fn good_files_pass_and_garbage_is_refused_with_its_reason() {
        let d = tempfile::tempdir().unwrap();
        let pdb = key_of("attach_amd64.pdb");
        let dll = key_of("attach_amd64.dll");
        verify_plain(&fixture("attach_amd64.pdb"), &pdb).unwrap();
        verify_plain(&fixture("attach_amd64.dll"), &dll).unwrap();
        let e = verify_plain(&write(d.path(), b""), &pdb).unwrap_err();
        assert!(matches!(e, VerifyError::Empty { .. }), "{e}");
        let html = b"<!DOCTYPE html><html><body>Proxy error</body></html>";
        let e = verify_plain(&write(d.path(), html), &pdb).unwrap_err();
        assert!(e.to_string().contains("HTML"), "{e}");
        let e = verify_plain(&write(d.path(), b"PATH:\\\\srv\\s\\a.dll"), &dll).unwrap_err();
        assert!(e.to_string().contains("file.ptr"), "{e}");
        // Another build's PDB, and a PE under a PDB name.
        let e = verify_plain(&fixture("run_code_on_dllmain_x86.pdb"), &pdb).unwrap_err();
        assert!(matches!(e, VerifyError::WrongKey { .. }), "{e}");
        let e = verify_plain(&fixture("attach_amd64.dll"), &pdb).unwrap_err();
        assert!(e.to_string().contains("a PE image"), "{e}");
        // Unkeyable names: only the 0-byte check.
        let txt = Key::new("notes.txt", "1234").unwrap();
        verify_plain(&write(d.path(), b"hello"), &txt).unwrap();
        assert!(verify_plain(&write(d.path(), b""), &txt).is_err());
        assert!(!e.is_io());
    }

    fn cab_of(member: &str, body: &[u8]) -> Vec<u8> {
        compress::write_cab(member, &mut &body[..], io::Cursor::new(Vec::new()))
            .unwrap()
            .into_inner()
    }

    #[test]
    fn cabinets_are_checked_whole() {
        let d = tempfile::tempdir().unwrap();
        let key = key_of("attach_amd64.pdb");
        let body = std::fs::read(fixture("attach_amd64.pdb")).unwrap();
        let good = write(d.path(), &cab_of("attach_amd64.pdb", &body));
        assert!(
            verify_cab(&good, &key, u64::MAX, d.path(), false)
                .unwrap()
                .is_none()
        );
        let (tmp, len) = verify_cab(&good, &key, u64::MAX, d.path(), true)
            .unwrap()
            .unwrap();
        assert_eq!(len, body.len() as u64);
        assert_eq!(std::fs::read(tmp.path()).unwrap(), body);
        drop(tmp);
        // Truncated, garbage, another build's PDB inside.
        let raw = std::fs::read(&good).unwrap();
        let cut = write(d.path(), &raw[..raw.len() / 2]);
        let e = verify_cab(&cut, &key, u64::MAX, d.path(), false).unwrap_err();
        assert!(matches!(e, VerifyError::BadCabinet { .. }), "{e}");
        let junk = write(d.path(), b"MSCF\0\0\0\0 not a cabinet at all");
        assert!(verify_cab(&junk, &key, u64::MAX, d.path(), false).is_err());
        let other = std::fs::read(fixture("run_code_on_dllmain_x86.pdb")).unwrap();
        let other = write(d.path(), &cab_of("attach_amd64.pdb", &other));
        let e = verify_cab(&other, &key, u64::MAX, d.path(), false).unwrap_err();
        assert!(matches!(e, VerifyError::WrongKey { .. }), "{e}");
        // No temp file is left behind.
        let left = std::fs::read_dir(d.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(crate::spool::SPOOL_PREFIX)
                    && !e
                        .as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .ends_with(".lock")
            })
            .count();
        assert_eq!(left, 0);
    }
}
