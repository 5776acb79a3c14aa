//! `000Admin`: SymStore's transaction records, written by `symcascade add` and undone by
//! `symcascade del`, in the format of symstore.exe as the PyPI `symstore` package writes it.
//!
//! Files (per SymStore; formats checked against PyPI `symstore` in `tests/it/admin.rs`):
//! - `000Admin/<id>` (`0000000001`, ten digits): one line per file added,
//!   `"<name>\<index>","<absolute source path>"`, each ending in `\n`;
//! - `000Admin/server.txt`: the live transactions, one per line ending in `\n`:
//!   `<id>,add,file|ptr,<MM/DD/YYYY>,<HH:MM:SS>,"<product>","<version>","<comment>",`;
//! - `000Admin/history.txt`: every transaction ever, lines joined by `\n` without a final one;
//!   a deletion is `<new id>,del,<deleted id>`;
//! - `000Admin/lastid.txt`: the last id used, no newline.
//!
//! Data flow: `add` publishes the files (see `publish`), then [`record_add`] takes the store's
//! admin lock, allocates the next id and writes the four files; [`delete`] removes the key
//! folders only that transaction referenced (as SymStore does), rewrites `server.txt` without
//! it, renames its file to `<id>.deleted` and records the `del`. Every file is written to a
//! temp name and renamed into place: no reader ever sees half a record. Dates are local time.

use super::AdminError;
use crate::layout::{self, Tiering};
use chrono::{DateTime, Local};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The admin folder in a store root.
pub const ADMIN_DIR: &str = "000Admin";
/// The live transactions.
pub const SERVER_TXT: &str = "server.txt";
/// Every transaction ever.
pub const HISTORY_TXT: &str = "history.txt";
/// The last id used.
pub const LASTID_TXT: &str = "lastid.txt";

/// How the files of a transaction are stored (symstore.exe's `file`/`ptr` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ref {
    /// Copies (plain or compressed).
    File,
    /// `file.ptr` pointers (`symstore add /p`).
    Ptr,
}

/// The descriptive fields of an `add` transaction (`/t`, `/v`, `/c` of symstore.exe).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels {
    /// Product name.
    pub product: String,
    /// Product version.
    pub version: String,
    /// Comment.
    pub comment: String,
}

impl Labels {
    /// Checks that each field fits SymStore's quoted fields: no `"` and no line break.
    ///
    /// # Errors
    /// [`AdminError::BadField`] naming the field and value.
    pub fn check(&self) -> Result<(), AdminError> {
        for (field, value) in [
            ("product", &self.product),
            ("version", &self.version),
            ("comment", &self.comment),
        ] {
            if value.contains(['"', '\n', '\r']) {
                return Err(AdminError::BadField {
                    field,
                    value: value.clone(),
                    reason: "may not hold a double quote or a line break (SymStore quotes it with \" in server.txt)",
                });
            }
        }
        Ok(())
    }
}

/// One file of a transaction: the key folder it went into and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxEntry {
    /// File name (the `<name>` folder).
    pub name: String,
    /// Index.
    pub index: String,
    /// The source file's absolute path as given.
    pub source: String,
}

/// A transaction id as SymStore writes it: ten digits, zero-padded.
pub fn format_id(id: u64) -> String {
    format!("{id:010}")
}

/// Parses an id (`1`, `0000000001`).
///
/// # Errors
/// [`AdminError::BadTransactionId`].
pub fn parse_id(text: &str) -> Result<u64, AdminError> {
    let t = text.trim();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AdminError::BadTransactionId(text.to_string()));
    }
    t.parse()
        .map_err(|_| AdminError::BadTransactionId(text.to_string()))
}

/// The `server.txt`/`history.txt` line of an `add` transaction (no line end).
pub fn add_line(id: u64, r: Ref, at: &DateTime<Local>, labels: &Labels) -> String {
    format!(
        "{},add,{},{},{},\"{}\",\"{}\",\"{}\",",
        format_id(id),
        match r {
            Ref::File => "file",
            Ref::Ptr => "ptr",
        },
        at.format("%m/%d/%Y"),
        at.format("%H:%M:%S"),
        labels.product,
        labels.version,
        labels.comment
    )
}

/// The `history.txt` line of a deletion (no line end).
pub fn del_line(id: u64, deleted: u64) -> String {
    format!("{},del,{}", format_id(id), format_id(deleted))
}

/// A transaction file line (no line end).
pub fn entry_line(e: &TxEntry) -> String {
    format!("\"{}\\{}\",\"{}\"", e.name, e.index, e.source)
}

/// Parses a transaction file line `"<name>\<index>","<source>"`.
///
/// # Errors
/// A reason, for [`AdminError::Record`].
pub fn parse_entry_line(line: &str) -> Result<TxEntry, String> {
    let (key, source) = line
        .trim_end()
        .split_once("\",\"")
        .ok_or("expected \"<name>\\<index>\",\"<source>\"")?;
    let key = key.strip_prefix('"').ok_or("missing opening quote")?;
    // PyPI symstore leaves the closing quote out; symstore.exe writes it. Both are read.
    let source = source.strip_suffix('"').unwrap_or(source);
    let (name, index) = key.split_once('\\').ok_or("expected <name>\\<index>")?;
    if crate::key::Key::new(name, index).is_err() {
        return Err(format!("not a valid key: {name}\\{index}"));
    }
    Ok(TxEntry {
        name: name.into(),
        index: index.into(),
        source: source.into(),
    })
}

/// The id of a `server.txt` line (its first field).
fn line_id(line: &str) -> Result<u64, String> {
    let id = line.split(',').next().unwrap_or("");
    parse_id(id).map_err(|e| e.to_string())
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AdminError + '_ {
    move |source| AdminError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Writes `content` to `path` through a temp file renamed over it.
fn write_atomic(path: &Path, content: &[u8]) -> Result<(), AdminError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = crate::store::local::shared_tempfile(dir, ".admin.", layout::TEMP_SUFFIX)
        .map_err(io(dir))?;
    std::io::Write::write_all(&mut tmp, content).map_err(io(path))?;
    tmp.as_file().sync_all().map_err(io(path))?;
    tmp.persist(path).map_err(|e| io(path)(e.error))?;
    Ok(())
}

fn read_opt(path: &Path) -> Result<Option<String>, AdminError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path)(e)),
    }
}

/// The store's administration lock (`000Cascade/admin.lock`): SymStore allows one writer of
/// `000Admin` at a time. Waits for it; released on drop.
fn lock_admin(root: &Path) -> Result<std::fs::File, AdminError> {
    let dir = root.join(crate::store::local::ADMIN_DIR);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let p = dir.join("admin.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .map_err(io(&p))?;
    f.lock().map_err(io(&p))?;
    Ok(f)
}

/// Paths of a store's admin files.
struct Admin {
    dir: PathBuf,
}

impl Admin {
    fn new(root: &Path) -> Admin {
        Admin {
            dir: root.join(ADMIN_DIR),
        }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn next_id(&self) -> Result<u64, AdminError> {
        let p = self.file(LASTID_TXT);
        match read_opt(&p)? {
            None => Ok(1),
            Some(s) => parse_id(&s).map(|n| n + 1).map_err(|_| AdminError::Record {
                path: p.display().to_string(),
                line: 1,
                reason: format!("{:?} is not a transaction id", s.trim()),
            }),
        }
    }

    /// Appends `line` to history.txt, with a `\n` before it when the file is not empty and does
    /// not end in one (as PyPI symstore does).
    fn append_history(&self, line: &str) -> Result<(), AdminError> {
        let p = self.file(HISTORY_TXT);
        let mut text = read_opt(&p)?.unwrap_or_default();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text += line;
        write_atomic(&p, text.as_bytes())
    }

    fn finish(&self, root: &Path, id: u64, at: &DateTime<Local>) -> Result<(), AdminError> {
        write_atomic(&self.file(LASTID_TXT), format_id(id).as_bytes())?;
        touch_pingme(root, at)
    }
}

/// Creates `pingme.txt` if missing and sets its write time to `at` (SymStore marks each
/// change of the store this way).
fn touch_pingme(root: &Path, at: &DateTime<Local>) -> Result<(), AdminError> {
    let p = root.join(layout::PINGME_TXT);
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p)
        .map_err(io(&p))?;
    f.set_modified(std::time::SystemTime::from(*at))
        .map_err(io(&p))
}

/// Records an `add` of `entries` in `root`'s `000Admin` at time `at` (whole seconds): the
/// transaction file, `server.txt`, `history.txt`, `lastid.txt`, `pingme.txt`'s time. Returns
/// the new id.
///
/// # Errors
/// [`AdminError`] for bad labels, unreadable/malformed `lastid.txt` or I/O failures.
pub fn record_add(
    root: &Path,
    entries: &[TxEntry],
    r: Ref,
    labels: &Labels,
    at: DateTime<Local>,
) -> Result<u64, AdminError> {
    labels.check()?;
    let _lock = lock_admin(root)?;
    let a = Admin::new(root);
    std::fs::create_dir_all(&a.dir).map_err(io(&a.dir))?;
    let id = a.next_id()?;
    let mut tx = String::new();
    for e in entries {
        tx += &entry_line(e);
        tx.push('\n');
    }
    write_atomic(&a.file(&format_id(id)), tx.as_bytes())?;
    let line = add_line(id, r, &at, labels);
    let sp = a.file(SERVER_TXT);
    let mut server = read_opt(&sp)?.unwrap_or_default();
    if !server.is_empty() && !server.ends_with('\n') {
        server.push('\n');
    }
    server += &line;
    server.push('\n');
    write_atomic(&sp, server.as_bytes())?;
    a.append_history(&line)?;
    a.finish(root, id, &at)?;
    Ok(id)
}

/// What [`delete`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deleted {
    /// The deleted transaction's id.
    pub id: u64,
    /// The id of the `del` record.
    pub del_id: u64,
    /// Key folders removed (`<name>/<index>`); keys other live transactions still reference
    /// are kept, as SymStore does.
    pub removed: Vec<String>,
}

/// Deletes transaction `id` from `root` as `symstore del /i` does: removes the key folders no
/// other live transaction references (then their `<name>` folder when empty), drops its line
/// from `server.txt`, renames `000Admin/<id>` to `<id>.deleted` and records
/// `<new id>,del,<id>` in `history.txt`.
///
/// # Errors
/// [`AdminError::TransactionNotFound`] when `server.txt` does not list it; malformed records
/// and I/O failures name the file.
pub fn delete(root: &Path, id: u64, at: DateTime<Local>) -> Result<Deleted, AdminError> {
    let _lock = lock_admin(root)?;
    let a = Admin::new(root);
    let sp = a.file(SERVER_TXT);
    let server = read_opt(&sp)?.unwrap_or_default();
    let mut lines: BTreeMap<u64, &str> = BTreeMap::new();
    for (n, line) in server
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let lid = line_id(line).map_err(|reason| AdminError::Record {
            path: sp.display().to_string(),
            line: n + 1,
            reason,
        })?;
        lines.insert(lid, line);
    }
    if !lines.contains_key(&id) {
        return Err(AdminError::TransactionNotFound(format_id(id)));
    }
    let mut others: BTreeSet<(String, String)> = BTreeSet::new();
    let mut mine = Vec::new();
    for &lid in lines.keys() {
        for e in read_entries(&a.file(&format_id(lid)))? {
            let k = (e.name, e.index);
            if lid == id {
                mine.push(k);
            } else {
                others.insert(k);
            }
        }
    }
    let tiering = if root.join(layout::INDEX2_TXT).exists() {
        Tiering::TwoTier
    } else {
        Tiering::OneTier
    };
    let mut removed = Vec::new();
    for (name, index) in mine.into_iter().filter(|k| !others.contains(k)) {
        if remove_key(root, &name, &index, tiering)? {
            removed.push(format!("{name}/{index}"));
        }
    }
    let kept: String = lines
        .iter()
        .filter(|(l, _)| **l != id)
        .map(|(_, line)| format!("{line}\n"))
        .collect();
    write_atomic(&sp, kept.as_bytes())?;
    let tx = a.file(&format_id(id));
    let gone = a.file(&format!("{}.deleted", format_id(id)));
    std::fs::rename(&tx, &gone).map_err(io(&tx))?;
    let del_id = a.next_id()?;
    a.append_history(&del_line(del_id, id))?;
    a.finish(root, del_id, &at)?;
    Ok(Deleted {
        id,
        del_id,
        removed,
    })
}

/// The entries of a transaction file (none when it is missing).
fn read_entries(path: &Path) -> Result<Vec<TxEntry>, AdminError> {
    let text = read_opt(path)?.unwrap_or_default();
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| {
            parse_entry_line(l).map_err(|reason| AdminError::Record {
                path: path.display().to_string(),
                line: n + 1,
                reason,
            })
        })
        .collect()
}

/// Removes the key folder of `name`/`index` and its parents when they became empty; `false`
/// when it was not there.
fn remove_key(root: &Path, name: &str, index: &str, t: Tiering) -> Result<bool, AdminError> {
    let key = crate::key::Key::new(name, index).map_err(|e| AdminError::Record {
        path: format!("{ADMIN_DIR}/{name}\\{index}"),
        line: 0,
        reason: e.to_string(),
    })?;
    let rel = layout::path_for(&key, t, layout::Form::Plain);
    let mut dir: Vec<String> = rel.parent().to_vec();
    let path = dir.iter().fold(root.to_path_buf(), |p, c| p.join(c));
    match std::fs::remove_dir_all(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io(&path)(e)),
    }
    dir.pop();
    while !dir.is_empty() {
        let p = dir.iter().fold(root.to_path_buf(), |p, c| p.join(c));
        if std::fs::remove_dir(&p).is_err() {
            break; // not empty (another index of that name), or gone
        }
        dir.pop();
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at() -> DateTime<Local> {
        Local.with_ymd_and_hms(2026, 3, 7, 9, 5, 2).unwrap()
    }

    #[test]
    fn lines_have_symstores_shape() {
        let l = Labels {
            product: "App".into(),
            version: "1.2".into(),
            comment: "nightly, x64".into(),
        };
        assert_eq!(
            add_line(1, Ref::File, &at(), &l),
            r#"0000000001,add,file,03/07/2026,09:05:02,"App","1.2","nightly, x64","#
        );
        assert_eq!(
            add_line(12, Ref::Ptr, &at(), &Labels::default()),
            r#"0000000012,add,ptr,03/07/2026,09:05:02,"","","","#
        );
        assert_eq!(del_line(3, 1), "0000000003,del,0000000001");
        let e = TxEntry {
            name: "a.pdb".into(),
            index: "ABC1".into(),
            source: "/src/a.pdb".into(),
        };
        assert_eq!(entry_line(&e), r#""a.pdb\ABC1","/src/a.pdb""#);
        assert_eq!(parse_entry_line(&entry_line(&e)).unwrap(), e);
    }

    #[test]
    fn bad_input_is_a_typed_error() {
        for bad in ["", "x", "1a", "-1"] {
            assert!(
                matches!(parse_id(bad), Err(AdminError::BadTransactionId(_))),
                "{bad}"
            );
        }
        assert_eq!(parse_id("0000000007").unwrap(), 7);
        let l = Labels {
            comment: "say \"hi\"".into(),
            ..Labels::default()
        };
        let e = l.check().unwrap_err();
        assert!(e.to_string().contains("--comment"), "{e}");
        // PyPI symstore's lines lack the closing quote.
        assert_eq!(
            parse_entry_line(r#""a.pdb\ABC1","/src/a.pdb"#)
                .unwrap()
                .source,
            "/src/a.pdb"
        );
        for bad in ["", "\"a\\1\"", "\"a.pdb\",\"x\"", "\"a.pdb\\..\",\"x\""] {
            assert!(parse_entry_line(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_transaction_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = delete(dir.path(), 4, at()).unwrap_err();
        assert!(matches!(e, AdminError::TransactionNotFound(_)));
        assert!(e.to_string().contains("0000000004"), "{e}");
    }
}
