//! SymStore layout as pure functions: where a key lives in a store, the compressed name,
//! `file.ptr` parsing and the probe order.
//!
//! Data flow: the cascade engine asks this module for [`RelPath`]s and hands them to a `Store`;
//! transports (local, SMB, HTTP) never build store paths themselves. Sources: Microsoft's
//! "Symbol Store Folder Tree", "SymStore" and "Handling File Pointers" pages and SymSrv's
//! behaviour as summarised in `shared/semantics.md`.

use crate::key::Key;
use serde::Serialize;
use std::fmt;

/// Marker file in a store root: its presence makes a plain symbol-path directory a symbol store
/// (SymSrv autodetection).
pub const PINGME_TXT: &str = "pingme.txt";
/// Marker file in a store root: the store is two-tier (`<first 2 chars>/<name>/<index>/<name>`).
pub const INDEX2_TXT: &str = "index2.txt";
/// Marker file in a downstream store root: copy `file.ptr` itself rather than its target.
pub const WANTSPTR_TXT: &str = "wantsptr.txt";
/// The pointer file name inside `<name>/<index>/`.
pub const FILE_PTR: &str = "file.ptr";
/// Largest `file.ptr` we read, in bytes; real ones are one short line.
pub const MAX_FILE_PTR_LEN: usize = 4096;

/// A path inside a store: validated components, outermost first. Transports join them with
/// their own separator; no component is empty, `.`/`..`, or contains a separator or NUL.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct RelPath(Vec<String>);

impl RelPath {
    /// A path from components already known to be safe (key names and indexes, fixed names).
    ///
    /// # Panics
    /// In debug builds, when a component is unsafe: this is an internal invariant, since every
    /// caller passes validated key parts or constants.
    pub fn from_safe<I: IntoIterator<Item = S>, S: Into<String>>(parts: I) -> RelPath {
        let v: Vec<String> = parts.into_iter().map(Into::into).collect();
        debug_assert!(v.iter().all(|c| is_safe_component(c)), "unsafe {v:?}");
        RelPath(v)
    }

    /// A path from untrusted components (e.g. a file name from `file.ptr`); `None` when unsafe.
    pub fn checked<I: IntoIterator<Item = S>, S: Into<String>>(parts: I) -> Option<RelPath> {
        let v: Vec<String> = parts.into_iter().map(Into::into).collect();
        (!v.is_empty() && v.iter().all(|c| is_safe_component(c))).then_some(RelPath(v))
    }

    /// The components, outermost first.
    pub fn components(&self) -> &[String] {
        &self.0
    }

    /// The last component (a file name).
    pub fn file_name(&self) -> &str {
        self.0.last().map(String::as_str).unwrap_or("")
    }

    /// All components but the last.
    pub fn parent(&self) -> &[String] {
        &self.0[..self.0.len().saturating_sub(1)]
    }
}

fn is_safe_component(c: &str) -> bool {
    !c.is_empty()
        && c != "."
        && c != ".."
        && !c.contains(['/', '\\', ':', '\0'])
        && !c.chars().any(|ch| ch.is_control())
}

impl fmt::Display for RelPath {
    /// Forward slashes, as in a SymSrv HTTP request path.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("/"))
    }
}

/// One-tier or two-tier store layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Tiering {
    /// `<name>/<index>/<name>` (the default).
    #[default]
    OneTier,
    /// `<first 2 chars of name>/<name>/<index>/<name>`: chosen when `index2.txt` is in the root.
    TwoTier,
}

/// The form in which a key's file is held in a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Form {
    /// The file itself, `<name>`.
    Plain,
    /// A one-file CAB under the compressed name (last character replaced by `_`).
    Compressed,
    /// A `file.ptr` naming where the file is.
    FilePtr,
}

/// The compressed name of a file: its last character replaced by `_` (`ntdll.pdb` → `ntdll.pd_`).
/// Per SymStore `/compress`; a name already ending in `_` maps to itself.
pub fn compressed_name(name: &str) -> String {
    let mut s = name.to_string();
    s.pop();
    s.push('_');
    s
}

fn key_dir(key: &Key, tiering: Tiering) -> Vec<String> {
    let mut v = Vec::with_capacity(3);
    if tiering == Tiering::TwoTier {
        // SymStore's two-tier prefix: the first two characters of the name (the whole name when
        // shorter).
        let prefix: String = key.name().chars().take(2).collect();
        v.push(prefix);
    }
    v.push(key.name().to_string());
    v.push(key.index().to_string());
    v
}

/// Path of the key's file in the given form: `<name>/<index>/<name>`, `<name>/<index>/<nam_>`
/// or `<name>/<index>/file.ptr` (each with a two-character prefix directory when two-tier).
pub fn path_for(key: &Key, tiering: Tiering, form: Form) -> RelPath {
    let mut v = key_dir(key, tiering);
    v.push(match form {
        Form::Plain => key.name().to_string(),
        Form::Compressed => compressed_name(key.name()),
        Form::FilePtr => FILE_PTR.to_string(),
    });
    RelPath::from_safe(v)
}

/// Suffix of every temp file a transport writes before renaming it into place; the sweepers
/// remove files with it that are older than a safe age.
pub const TEMP_SUFFIX: &str = ".symcascade-tmp";

/// The start of a temp file name for `name` (`.<name>.`), shortened so that the whole temp
/// name — this prefix, `unique_len` bytes of randomness, [`TEMP_SUFFIX`] — fits in
/// [`crate::key::MAX_NAME_LEN`] bytes: every name a key accepts (up to 255 bytes) can be
/// stored. Cut at a character boundary. Files of one key live in their own folder, so a cut
/// name still tells that key's temp files from others (the lock covers the whole folder).
pub fn temp_prefix(name: &str, unique_len: usize) -> String {
    let budget = crate::key::MAX_NAME_LEN.saturating_sub(2 + unique_len + TEMP_SUFFIX.len());
    let mut cut = name.len().min(budget);
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!(".{}.", &name[..cut])
}

/// SymSrv's probe order for one store: plain, then compressed, then `file.ptr`.
pub fn probe_order(key: &Key, tiering: Tiering) -> [(Form, RelPath); 3] {
    [Form::Plain, Form::Compressed, Form::FilePtr].map(|f| (f, path_for(key, tiering, f)))
}

/// A root-level marker file path (`pingme.txt`, `index2.txt`, `wantsptr.txt`).
pub fn root_file(name: &'static str) -> RelPath {
    RelPath::from_safe([name])
}

/// The parsed content of a `file.ptr`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "text", rename_all = "snake_case")]
pub enum FilePtr {
    /// `PATH:<target>` or a bare path (older stores): the file lives at `target`.
    Path(String),
    /// `MSG:<text>`: the file is not here; the text says why. Search goes on.
    Msg(String),
}

/// Why a `file.ptr` could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FilePtrError {
    /// Empty or whitespace only.
    #[error("file.ptr is empty")]
    Empty,
    /// Larger than [`MAX_FILE_PTR_LEN`].
    #[error("file.ptr is larger than {MAX_FILE_PTR_LEN} bytes")]
    TooLarge,
    /// Not UTF-8 text or holds NUL.
    #[error("file.ptr is not text")]
    NotText,
}

/// Parses a `file.ptr`. Splits on the first `:` only, so `PATH:C:\x\y.pdb` keeps its drive;
/// the keyword is case-insensitive; content without a known keyword is a bare path (older
/// SymStore). Only the first line counts; surrounding whitespace is trimmed.
///
/// # Errors
/// [`FilePtrError`] when the content is empty, too large or not text.
pub fn parse_file_ptr(content: &[u8]) -> Result<FilePtr, FilePtrError> {
    if content.len() > MAX_FILE_PTR_LEN {
        return Err(FilePtrError::TooLarge);
    }
    let text = std::str::from_utf8(content).map_err(|_| FilePtrError::NotText)?;
    let text = text.trim_start_matches('\u{feff}');
    if text.contains('\0') {
        return Err(FilePtrError::NotText);
    }
    let line = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    if line.is_empty() {
        return Err(FilePtrError::Empty);
    }
    if let Some((kw, rest)) = line.split_once(':') {
        if kw.eq_ignore_ascii_case("PATH") {
            let rest = rest.trim();
            return if rest.is_empty() {
                Err(FilePtrError::Empty)
            } else {
                Ok(FilePtr::Path(rest.to_string()))
            };
        }
        if kw.eq_ignore_ascii_case("MSG") {
            return Ok(FilePtr::Msg(rest.trim().to_string()));
        }
    }
    Ok(FilePtr::Path(line.to_string()))
}

/// Formats a `file.ptr` for writing (`PATH:<target>` / `MSG:<text>`).
pub fn format_file_ptr(ptr: &FilePtr) -> String {
    match ptr {
        FilePtr::Path(p) => format!("PATH:{p}"),
        FilePtr::Msg(m) => format!("MSG:{m}"),
    }
}

/// Longest request path the HTTP front looks at, in bytes (a two-tier path of a 255-byte name
/// and a 128-digit index fits easily). Longer paths are rejected before any decoding.
pub const MAX_REQUEST_PATH: usize = 1024;

/// A symbol-file request as SymSrv's HTTP client sends it: which key, in which form, and in
/// which store layout the client assumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRequest {
    /// The key (name in the client's case, index in canonical case).
    pub key: Key,
    /// Plain name, compressed name or `file.ptr`.
    pub form: Form,
    /// One-tier `/<name>/<index>/<file>` or two-tier `/<na>/<name>/<index>/<file>`.
    pub tiering: Tiering,
}

/// Why a request path is not a symbol-file request (the HTTP front answers 400, touching
/// nothing).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestPathError {
    /// Longer than [`MAX_REQUEST_PATH`].
    #[error("request path longer than {MAX_REQUEST_PATH} bytes")]
    TooLong,
    /// Not 3 (one-tier) or 4 (two-tier) non-empty segments.
    #[error("request path {path:?} is not /<name>/<index>/<file> or /<na>/<name>/<index>/<file>")]
    Shape {
        /// The path as received.
        path: String,
    },
    /// A segment is not valid percent-encoded UTF-8.
    #[error("request path {path:?}: a segment is not valid percent-encoded UTF-8")]
    Encoding {
        /// The path as received.
        path: String,
    },
    /// The name or index is not a valid key (traversal, separators, over-long, not hex...).
    #[error("request path {path:?}: {reason}")]
    BadKey {
        /// The path as received.
        path: String,
        /// The key error.
        reason: String,
    },
    /// The last segment is neither the name, its compressed name nor `file.ptr`.
    #[error(
        "request path {path:?}: file {file:?} is not {name:?}, its compressed name or file.ptr"
    )]
    File {
        /// The path as received.
        path: String,
        /// The last segment.
        file: String,
        /// The key's name.
        name: String,
    },
    /// The two-tier prefix is not the name's first two characters.
    #[error("request path {path:?}: two-tier prefix {prefix:?} does not match {name:?}")]
    Prefix {
        /// The path as received.
        path: String,
        /// The first segment.
        prefix: String,
        /// The key's name.
        name: String,
    },
}

/// Parses the path of an HTTP symbol request (`/ntdll.pdb/<index>/ntdll.pdb`, `…/ntdll.pd_`,
/// `…/file.ptr`, or the two-tier `/nt/ntdll.pdb/<index>/ntdll.pdb`) into a [`FileRequest`].
/// `raw` is the URL path as received, still percent-encoded, after any virtual-directory
/// prefix. Names match case-insensitively (stores live on case-insensitive file systems, and
/// SSQP clients lower-case); the index is put in canonical case.
///
/// Every segment is percent-decoded once and then validated as a key part, so `..%2f..%2f`,
/// encoded backslashes, drive colons, NULs and over-long names are all rejected.
///
/// # Errors
/// [`RequestPathError`] naming the path and the reason.
pub fn parse_request_path(raw: &str) -> Result<FileRequest, RequestPathError> {
    if raw.len() > MAX_REQUEST_PATH {
        return Err(RequestPathError::TooLong);
    }
    let path = raw.to_string();
    let trimmed = raw.strip_prefix('/').unwrap_or(raw);
    let segs: Vec<&str> = trimmed.split('/').collect();
    if !(3..=4).contains(&segs.len()) || segs.iter().any(|s| s.is_empty()) {
        return Err(RequestPathError::Shape { path });
    }
    let mut decoded = Vec::with_capacity(segs.len());
    for s in &segs {
        match percent_encoding::percent_decode_str(s).decode_utf8() {
            Ok(d) => decoded.push(d.into_owned()),
            Err(_) => return Err(RequestPathError::Encoding { path }),
        }
    }
    let (prefix, rest) = if decoded.len() == 4 {
        (Some(decoded[0].clone()), &decoded[1..])
    } else {
        (None, &decoded[..])
    };
    let (name, index, file) = (&rest[0], &rest[1], &rest[2]);
    let key = Key::new(name, index).map_err(|e| RequestPathError::BadKey {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let form = if file.eq_ignore_ascii_case(name) {
        Form::Plain
    } else if file.eq_ignore_ascii_case(&compressed_name(name)) {
        Form::Compressed
    } else if file.eq_ignore_ascii_case(FILE_PTR) {
        Form::FilePtr
    } else {
        return Err(RequestPathError::File {
            path,
            file: file.clone(),
            name: name.clone(),
        });
    };
    let tiering = match prefix {
        None => Tiering::OneTier,
        Some(p) => {
            let want: String = name.chars().take(2).collect();
            if !p.eq_ignore_ascii_case(&want) {
                return Err(RequestPathError::Prefix {
                    path,
                    prefix: p,
                    name: name.clone(),
                });
            }
            Tiering::TwoTier
        }
    };
    Ok(FileRequest { key, form, tiering })
}

#[cfg(test)]
mod tests {
    #[test]
    fn temp_names_always_fit_a_name_component() {
        for (len, unique) in [(1, 6), (200, 6), (232, 6), (233, 6), (255, 6), (255, 16)] {
            for ch in ["a", "é", "語"] {
                let name: String = ch.repeat(len / ch.len()).chars().collect();
                let p = super::temp_prefix(&name, unique);
                assert!(
                    p.len() + unique + super::TEMP_SUFFIX.len() <= 255,
                    "{len} {ch}"
                );
                assert!(p.starts_with('.') && p.ends_with('.'));
                assert!(name.starts_with(&p[1..p.len() - 1]));
            }
        }
        assert_eq!(super::temp_prefix("ntdll.pdb", 6), ".ntdll.pdb.");
    }
    use super::*;
    use proptest::prelude::*;

    fn k(n: &str, i: &str) -> Key {
        Key::new(n, i).unwrap()
    }

    #[test]
    fn paths_table() {
        let pdb = k("ntdll.pdb", "1EB8F7F0C2F1E0A2A5F2D8E0B7C9A1B21");
        let cases = [
            (
                Tiering::OneTier,
                Form::Plain,
                "ntdll.pdb/1EB8F7F0C2F1E0A2A5F2D8E0B7C9A1B21/ntdll.pdb",
            ),
            (
                Tiering::OneTier,
                Form::Compressed,
                "ntdll.pdb/1EB8F7F0C2F1E0A2A5F2D8E0B7C9A1B21/ntdll.pd_",
            ),
            (
                Tiering::OneTier,
                Form::FilePtr,
                "ntdll.pdb/1EB8F7F0C2F1E0A2A5F2D8E0B7C9A1B21/file.ptr",
            ),
            (
                Tiering::TwoTier,
                Form::Plain,
                "nt/ntdll.pdb/1EB8F7F0C2F1E0A2A5F2D8E0B7C9A1B21/ntdll.pdb",
            ),
            (
                Tiering::TwoTier,
                Form::Compressed,
                "nt/ntdll.pdb/1EB8F7F0C2F1E0A2A5F2D8E0B7C9A1B21/ntdll.pd_",
            ),
            (
                Tiering::TwoTier,
                Form::FilePtr,
                "nt/ntdll.pdb/1EB8F7F0C2F1E0A2A5F2D8E0B7C9A1B21/file.ptr",
            ),
        ];
        for (t, f, want) in cases {
            assert_eq!(path_for(&pdb, t, f).to_string(), want, "{t:?} {f:?}");
        }
        let short = k("a", "12");
        assert_eq!(
            path_for(&short, Tiering::TwoTier, Form::Compressed).to_string(),
            "a/a/12/_"
        );
        let order: Vec<Form> = probe_order(&pdb, Tiering::OneTier)
            .iter()
            .map(|p| p.0)
            .collect();
        assert_eq!(order, vec![Form::Plain, Form::Compressed, Form::FilePtr]);
    }

    #[test]
    fn compressed_names() {
        for (n, c) in [
            ("ntdll.pdb", "ntdll.pd_"),
            ("kernel32.dll", "kernel32.dl_"),
            ("x", "_"),
        ] {
            assert_eq!(compressed_name(n), c);
        }
    }

    #[test]
    fn file_ptr_table() {
        let cases: [(&[u8], Result<FilePtr, FilePtrError>); 10] = [
            (
                b"PATH:C:\\x\\y.pdb",
                Ok(FilePtr::Path("C:\\x\\y.pdb".into())),
            ),
            (
                b"path:\\\\srv\\share\\y.pdb\r\n",
                Ok(FilePtr::Path("\\\\srv\\share\\y.pdb".into())),
            ),
            (
                b"MSG:not here: try later",
                Ok(FilePtr::Msg("not here: try later".into())),
            ),
            (
                b"\\\\build\\drop\\a.pdb",
                Ok(FilePtr::Path("\\\\build\\drop\\a.pdb".into())),
            ),
            (
                b"C:\\bare\\path.pdb",
                Ok(FilePtr::Path("C:\\bare\\path.pdb".into())),
            ),
            (
                b"\xef\xbb\xbfPATH:/srv/a.pdb",
                Ok(FilePtr::Path("/srv/a.pdb".into())),
            ),
            (b"   \n", Err(FilePtrError::Empty)),
            (b"PATH:", Err(FilePtrError::Empty)),
            (b"\xff\xfe", Err(FilePtrError::NotText)),
            (b"PATH:a\0b", Err(FilePtrError::NotText)),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse_file_ptr(input),
                want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        assert_eq!(parse_file_ptr(&[b'a'; 5000]), Err(FilePtrError::TooLarge));
    }

    #[test]
    fn request_paths_table() {
        use RequestPathError as E;
        let idx = "446150EEE021480999C4BCE7828E15281";
        let ok: &[(&str, &str, Form, Tiering)] = &[
            (
                "/attach_amd64.pdb/446150EEE021480999C4BCE7828E15281/attach_amd64.pdb",
                "attach_amd64.pdb",
                Form::Plain,
                Tiering::OneTier,
            ),
            (
                "/attach_amd64.pdb/446150eee021480999c4bce7828e15281/attach_amd64.pd_",
                "attach_amd64.pdb",
                Form::Compressed,
                Tiering::OneTier,
            ),
            (
                "/attach_amd64.pdb/446150EEE021480999C4BCE7828E15281/file.ptr",
                "attach_amd64.pdb",
                Form::FilePtr,
                Tiering::OneTier,
            ),
            (
                "/at/attach_amd64.pdb/446150EEE021480999C4BCE7828E15281/attach_amd64.pdb",
                "attach_amd64.pdb",
                Form::Plain,
                Tiering::TwoTier,
            ),
            (
                "/AT/Attach_AMD64.pdb/446150EEE021480999C4BCE7828E15281/attach_amd64.PDB",
                "Attach_AMD64.pdb",
                Form::Plain,
                Tiering::TwoTier,
            ),
            (
                "/my%20lib.pdb/446150EEE021480999C4BCE7828E15281/my%20lib.pdb",
                "my lib.pdb",
                Form::Plain,
                Tiering::OneTier,
            ),
            (
                "attach_amd64.dll/6AA9A872c000/attach_amd64.dl_",
                "attach_amd64.dll",
                Form::Compressed,
                Tiering::OneTier,
            ),
        ];
        for (p, name, form, tiering) in ok {
            let r = parse_request_path(p).unwrap_or_else(|e| panic!("{p}: {e}"));
            assert_eq!(
                (r.key.name(), r.form, r.tiering),
                (*name, *form, *tiering),
                "{p}"
            );
        }
        assert_eq!(parse_request_path(ok[1].0).unwrap().key.index(), idx);
        let long = format!("/{n}/{idx}/{n}", n = "a".repeat(300));
        type Check = fn(&E) -> bool;
        let bad: &[(&str, Check)] = &[
            ("/..%2f..%2fetc%2fpasswd/00/x", |e| {
                matches!(e, E::BadKey { .. })
            }),
            (
                "/..%2F..%2F/446150EEE021480999C4BCE7828E15281/..%2F..%2F",
                |e| matches!(e, E::BadKey { .. }),
            ),
            (
                "/a%5cb.pdb/446150EEE021480999C4BCE7828E15281/a%5cb.pdb",
                |e| matches!(e, E::BadKey { .. }),
            ),
            ("/C%3a%5cwindows%5cwin.ini/00/x", |e| {
                matches!(e, E::BadKey { .. })
            }),
            ("/../../etc/passwd", |e| matches!(e, E::BadKey { .. })),
            ("/a.pdb/XYZ/a.pdb", |e| matches!(e, E::BadKey { .. })),
            ("/a.pdb/%00/a.pdb", |e| matches!(e, E::BadKey { .. })),
            ("/a.pdb//a.pdb", |e| matches!(e, E::Shape { .. })),
            ("/a.pdb/00", |e| matches!(e, E::Shape { .. })),
            ("/x/y/a.pdb/00/a.pdb", |e| matches!(e, E::Shape { .. })),
            ("/a.pdb/00/b.pdb", |e| matches!(e, E::File { .. })),
            ("/a.pdb/00/..", |e| matches!(e, E::File { .. })),
            ("/zz/a.pdb/00/a.pdb", |e| matches!(e, E::Prefix { .. })),
            ("/a.pdb/00/a%ff.pdb", |e| matches!(e, E::Encoding { .. })),
            (&long, |e| matches!(e, E::BadKey { .. })),
        ];
        for (p, want) in bad {
            let e = parse_request_path(p).expect_err(p);
            assert!(want(&e), "{p}: {e:?}");
        }
        assert_eq!(parse_request_path(&"/a".repeat(600)), Err(E::TooLong));
    }

    #[test]
    fn relpath_checked_rejects_traversal() {
        for bad in [
            vec!["..", "x"],
            vec!["a/b"],
            vec!["a\\b"],
            vec!["c:"],
            vec![""],
            vec![],
        ] {
            assert!(RelPath::checked(bad.clone()).is_none(), "{bad:?}");
        }
        assert!(RelPath::checked(["a", "b.pdb"]).is_some());
    }

    /// Fuzzing regression (fuzz/fuzz_targets/request_path.rs): `/../..ll/<index>/..ll` was a
    /// valid two-tier request whose store path started with `..`.
    #[test]
    fn two_tier_dot_dot_prefix_is_rejected() {
        for raw in [
            "/../..ll/6AA9A2C000/..ll",
            "/..ll/6AA9A2C000/..ll",
            "/%2e%2e/..x/12/file.ptr",
        ] {
            let e = parse_request_path(raw).unwrap_err();
            assert!(matches!(e, RequestPathError::BadKey { .. }), "{raw}: {e}");
        }
    }

    /// A name with one leading dot is an ordinary (hidden) name; its two-tier folder `.x` is a
    /// safe component (two dots are refused by `key`).
    #[test]
    fn one_dot_names_get_a_safe_two_tier_folder() {
        let k = Key::new(".x.pdb", "12").unwrap();
        let p = path_for(&k, Tiering::TwoTier, Form::Plain);
        assert_eq!(p.components()[0], ".x");
    }

    proptest! {
        #[test]
        fn file_ptr_round_trip(target in "[A-Za-z]:(\\\\[A-Za-z0-9_. ]{1,8}){1,3}", msg in "[ -~]{0,30}") {
            let p = FilePtr::Path(target.trim().to_string());
            if !target.trim().is_empty() {
                prop_assert_eq!(parse_file_ptr(format_file_ptr(&p).as_bytes()).unwrap(), p);
            }
            let m = FilePtr::Msg(msg.trim().to_string());
            prop_assert_eq!(parse_file_ptr(format_file_ptr(&m).as_bytes()).unwrap(), m);
        }

        #[test]
        fn request_path_round_trip(name in "[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}[A-Za-z0-9]", index in "[0-9A-F]{8,33}", two in any::<bool>(), f in 0usize..3) {
            let key = Key::new(&name, &index).unwrap();
            let form = [Form::Plain, Form::Compressed, Form::FilePtr][f];
            let tiering = if two { Tiering::TwoTier } else { Tiering::OneTier };
            let p = format!("/{}", path_for(&key, tiering, form));
            let r = parse_request_path(&p).unwrap();
            prop_assert_eq!(r, FileRequest { key, form, tiering });
        }

        #[test]
        fn request_path_never_panics(s in "[ -~]{0,80}") {
            let _ = parse_request_path(&s);
        }

        #[test]
        fn file_ptr_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_file_ptr(&bytes);
        }
    }
}
