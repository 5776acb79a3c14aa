//! Symbol path grammar: parsing and formatting, no I/O.
//!
//! Data flow: a string such as `srv*C:\Symbols*\\BranchOfficeA\Symbols*\\MainOffice\Symbols`
//! (from `--sympath`, `_NT_SYMBOL_PATH`/`_NT_ALT_SYMBOL_PATH` or config) is parsed into a
//! [`SymbolPath`]: a list of [`Element`]s, each either a symbol-server *chain* of stores, a
//! `cache*` element or a plain directory. `resolve` later turns it into live stores; this module
//! only knows the grammar, so it is table- and property-tested without touching a disk.
//!
//! Semantics follow Microsoft's "Advanced SymSrv Use" and "Symbol path for Windows debuggers":
//! elements are separated by `;`, stores of a chain by `*`, keywords (`srv`, `symsrv`, `cache`)
//! are case-insensitive, and an empty store token (`**` or a trailing `*`) is the default
//! downstream store.

use serde::Serialize;
use std::fmt;
use std::str::FromStr;

/// A parsed symbol path: the elements in search order (left to right).
///
/// Per SymSrv/DbgHelp: elements are consulted in order and the first element that finds a file
/// ends the search. `Display` writes a canonical form (lower-case keywords, no surrounding
/// whitespace) that parses back to an equal value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SymbolPath {
    /// Elements, left to right. Empty elements (`;;`) are dropped as DbgHelp does.
    pub elements: Vec<Element>,
}

/// One `;`-separated element of a symbol path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Element {
    /// `srv*S1*S2*…` or `symsrv*<dll>*S1*…`: a chain of symbol stores searched left to right;
    /// a hit in store *i* is copied into stores *i-1 … 0* (cascade order).
    Server {
        /// `None` for `srv*`; `Some(dll)` for `symsrv*<dll>*` (normally `symsrv.dll`).
        dll: Option<String>,
        /// The stores, leftmost (downstream) first. Never empty.
        stores: Vec<StoreSpec>,
    },
    /// `cache*<dir>`: a store that caches files found by every element to its right.
    /// `cache*` with an empty directory uses the default downstream store.
    Cache {
        /// The cache directory.
        store: StoreSpec,
    },
    /// A plain directory (local or UNC). Searched as a symbol store when its root holds
    /// `pingme.txt` (SymSrv autodetection), otherwise as a flat folder of files.
    Plain {
        /// The directory.
        location: Location,
    },
}

/// A store token inside a chain or `cache*` element.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "location", rename_all = "snake_case")]
pub enum StoreSpec {
    /// The empty token: the default downstream store `<home>/sym` (see [`default_downstream_store`]).
    DefaultDownstream,
    /// An explicit location.
    At(Location),
}

/// Where a store or directory lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Location {
    /// A local path as written: a Windows drive path (`C:\Symbols`), a relative path or a POSIX
    /// path (`/var/symbols`). Kept verbatim; the local transport interprets it.
    ///
    /// A relative path (`DownstreamStore`, `sym`) is resolved against the working directory of
    /// the process that uses it, as DbgHelp does: fine for `symcascade get` in a shell, but
    /// `symcascade run` refuses it (a service's working directory means nothing). A token
    /// that looks like a URL (`s3://…`, `https//…`) is never taken as a relative path.
    Local {
        /// The path text.
        path: String,
    },
    /// An SMB share: `\\host[:port]\share[\dir…]` or `smb://host[:port]/share[/dir…]`.
    Smb {
        /// Server name or address, as written (an alias may map it elsewhere).
        host: String,
        /// TCP port when given (`\\host:44445\share`); 445 otherwise.
        port: Option<u16>,
        /// Share name.
        share: String,
        /// Directories below the share, outermost first (may be empty).
        dirs: Vec<String>,
        /// Whether it was written as an `smb://` URL (kept so `Display` round-trips).
        url_form: bool,
    },
    /// An HTTP(S) symbol server URL, e.g. `https://msdl.microsoft.com/download/symbols`.
    /// HTTP stores are read-only: they are never written to.
    Http {
        /// The URL as written, without a trailing `/`.
        url: String,
    },
    /// An object store tier (issue #18): `s3://bucket[/prefix…]` (S3 and S3-compatible
    /// servers: MinIO, Ceph RGW) or `az://account/container[/prefix…]` (Azure Blob). The
    /// SymStore layout lives below the prefix. Endpoint, region and credentials come from the
    /// config's `[s3]` / `[azure]` sections or the standard environment variables.
    Object {
        /// Which service's protocol.
        service: ObjectService,
        /// The bucket (S3) or `account/container` (Azure), as written.
        container: String,
        /// Key prefix components below the container, outermost first (may be empty).
        prefix: Vec<String>,
    },
}

/// The protocol of an object store location.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectService {
    /// Amazon S3 and S3-compatible servers: `s3://bucket/prefix`.
    S3,
    /// Azure Blob Storage: `az://account/container/prefix`.
    Azure,
}

impl ObjectService {
    /// The URL scheme: `s3` or `az`.
    pub fn scheme(self) -> &'static str {
        match self {
            ObjectService::S3 => "s3",
            ObjectService::Azure => "az",
        }
    }
}

impl Location {
    /// `true` for HTTP(S) locations, which can never be written (SymSrv).
    pub fn is_http(&self) -> bool {
        matches!(self, Location::Http { .. })
    }

    /// Parses one location token. `offset`/`element` only feed error messages.
    fn parse(token: &str, element: &str, offset: usize) -> Result<Location, SymbolPathError> {
        let err = |reason| SymbolPathError {
            element: element.to_string(),
            offset,
            reason,
        };
        if token.contains('\0') || token.chars().any(|c| c.is_control()) {
            return Err(err(SymbolPathErrorKind::ControlCharacter));
        }
        let lower = token.to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            // Trailing slashes and whitespace go (`http://h/x/ /` is `http://h/x`): `Display`
            // must print a form that parses back the same, and tokens are trimmed.
            let slash_or_space = |c: char| c == '/' || c.is_whitespace();
            let rest = &token[token.find("://").unwrap_or(0) + 3..];
            if rest.trim_matches(slash_or_space).is_empty() {
                return Err(err(SymbolPathErrorKind::MissingHost));
            }
            return Ok(Location::Http {
                url: token.trim_end_matches(slash_or_space).to_string(),
            });
        }
        for service in [ObjectService::S3, ObjectService::Azure] {
            if let Some(rest) = lower
                .strip_prefix(service.scheme())
                .and_then(|r| r.strip_prefix("://"))
            {
                let rest = &token[token.len() - rest.len()..];
                return Self::object_from(service, rest).map_err(err);
            }
        }
        // Share path components lose trailing whitespace, as Win32 path normalisation does
        // (`\\h\s \x` is `\\h\s\x`); a component left empty is dropped like `\\h\\s`.
        if lower.starts_with("smb://") {
            let parts: Vec<&str> = token[6..]
                .split('/')
                .map(str::trim_end)
                .filter(|p| !p.is_empty())
                .collect();
            return Self::smb_from_parts(&parts, true).map_err(err);
        }
        if let Some(rest) = token.strip_prefix("\\\\") {
            let parts: Vec<&str> = rest
                .split('\\')
                .map(str::trim_end)
                .filter(|p| !p.is_empty())
                .collect();
            return Self::smb_from_parts(&parts, false).map_err(err);
        }
        if token.is_empty() {
            return Err(err(SymbolPathErrorKind::EmptyLocation));
        }
        if let Some(kind) = url_problem(token) {
            return Err(err(kind));
        }
        Ok(Location::Local {
            path: token.to_string(),
        })
    }

    /// `bucket/prefix…` (S3) or `account/container/prefix…` (Azure), after the scheme. Empty
    /// components and trailing whitespace go, as for share paths; `.`, `..` and `\\` are
    /// refused (object keys have no folders to climb, and a `\\` would be a different key on
    /// every client).
    fn object_from(service: ObjectService, rest: &str) -> Result<Location, SymbolPathErrorKind> {
        let parts: Vec<&str> = rest
            .split('/')
            .map(str::trim_end)
            .filter(|p| !p.is_empty())
            .collect();
        if parts
            .iter()
            .any(|p| *p == "." || *p == ".." || p.contains('\\'))
        {
            return Err(SymbolPathErrorKind::DotSegment);
        }
        let needs = match service {
            ObjectService::S3 => 1,
            ObjectService::Azure => 2,
        };
        if parts.len() < needs {
            return Err(SymbolPathErrorKind::MissingContainer(service.scheme()));
        }
        Ok(Location::Object {
            service,
            container: parts[..needs].join("/"),
            prefix: parts[needs..].iter().map(|p| p.to_string()).collect(),
        })
    }

    fn smb_from_parts(parts: &[&str], url_form: bool) -> Result<Location, SymbolPathErrorKind> {
        let (host_part, share) = match parts {
            [] => return Err(SymbolPathErrorKind::MissingHost),
            [_] => return Err(SymbolPathErrorKind::MissingShare),
            [h, s, ..] => (*h, *s),
        };
        let (host, port) = match host_part.rsplit_once(':') {
            Some((h, p)) => {
                let port: u16 = p
                    .parse()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| SymbolPathErrorKind::BadPort(p.to_string()))?;
                (h, Some(port))
            }
            None => (host_part, None),
        };
        if host.is_empty() {
            return Err(SymbolPathErrorKind::MissingHost);
        }
        if parts.iter().any(|p| *p == "." || *p == "..") {
            return Err(SymbolPathErrorKind::DotSegment);
        }
        if parts.iter().any(|p| p.contains(['\\', '/'])) {
            // `smb://h/s/a\..\x` would become a `..` once joined with `\`.
            return Err(SymbolPathErrorKind::DotSegment);
        }
        Ok(Location::Smb {
            host: host.to_string(),
            port,
            share: share.to_string(),
            dirs: parts[2..].iter().map(|s| s.to_string()).collect(),
            url_form,
        })
    }
}

/// A token that looks like a URL no transport reads (`s3://bucket`) or a mistyped HTTP URL
/// (`https//host`, `htps://host`, `http:/host`). Without this check it would be a relative local
/// path, and the first copy would create a folder named `s3:` or `https` in the working
/// directory. A one-letter "scheme" is a drive (`C://x`), not a URL.
fn url_problem(token: &str) -> Option<SymbolPathErrorKind> {
    let lower = token.to_ascii_lowercase();
    if let Some((scheme, _)) = lower.split_once("://")
        && scheme.len() >= 2
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    {
        let meant = ["https", "http"]
            .into_iter()
            .find(|m| edit_distance(scheme, m) <= 1);
        return Some(match meant {
            Some(m) => SymbolPathErrorKind::MistypedUrl(format!("{m}://")),
            None => SymbolPathErrorKind::UnknownScheme(scheme.to_string()),
        });
    }
    for meant in ["https", "http"] {
        let Some(rest) = lower.strip_prefix(meant) else {
            continue;
        };
        let typo = rest.starts_with("//")
            || rest.starts_with(":\\")
            || (rest.starts_with(":/") && !rest.starts_with("://"));
        return typo.then(|| SymbolPathErrorKind::MistypedUrl(format!("{meant}://")));
    }
    None
}

/// Levenshtein distance of two short ASCII strings (URL schemes).
fn edit_distance(a: &str, b: &str) -> usize {
    let b = b.as_bytes();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.bytes().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (diag + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

impl FromStr for Location {
    type Err = SymbolPathError;

    /// Parses one location (local path, UNC/`smb://` share path or HTTP URL), e.g. a
    /// `file.ptr` target. Surrounding whitespace is trimmed.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        Location::parse(t, t, 0)
    }
}

impl Location {
    /// Splits a location naming a *file* into its directory and file name
    /// (`\\h\s\d\a.pdb` → `\\h\s\d` + `a.pdb`). `None` when there is no directory part,
    /// or the directory would not be a valid location (a share root needs `\\host\share`).
    pub fn split_file(&self) -> Option<(Location, String)> {
        match self {
            Location::Local { path } => {
                let (dir, name) = path.rsplit_once(['\\', '/'])?;
                let dir = if dir.is_empty() { &path[..1] } else { dir };
                Some((
                    Location::Local {
                        path: dir.to_string(),
                    },
                    name.to_string(),
                ))
            }
            Location::Smb {
                host,
                port,
                share,
                dirs,
                url_form,
            } => {
                let mut dirs = dirs.clone();
                let name = dirs.pop()?;
                Some((
                    Location::Smb {
                        host: host.clone(),
                        port: *port,
                        share: share.clone(),
                        dirs,
                        url_form: *url_form,
                    },
                    name,
                ))
            }
            Location::Object {
                service,
                container,
                prefix,
            } => {
                let mut prefix = prefix.clone();
                let name = prefix.pop()?;
                Some((
                    Location::Object {
                        service: *service,
                        container: container.clone(),
                        prefix,
                    },
                    name,
                ))
            }
            Location::Http { url } => {
                let (dir, name) = url.rsplit_once('/')?;
                (dir.contains("://") && !dir.ends_with('/')).then(|| {
                    (
                        Location::Http {
                            url: dir.to_string(),
                        },
                        name.to_string(),
                    )
                })
            }
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local { path } => f.write_str(path),
            Location::Http { url } => f.write_str(url),
            Location::Object {
                service,
                container,
                prefix,
            } => {
                write!(f, "{}://{container}", service.scheme())?;
                for p in prefix {
                    write!(f, "/{p}")?;
                }
                Ok(())
            }
            Location::Smb {
                host,
                port,
                share,
                dirs,
                url_form,
            } => {
                let sep = if *url_form { "/" } else { "\\" };
                if *url_form {
                    f.write_str("smb://")?;
                } else {
                    f.write_str("\\\\")?;
                }
                f.write_str(host)?;
                if let Some(p) = port {
                    write!(f, ":{p}")?;
                }
                write!(f, "{sep}{share}")?;
                for d in dirs {
                    write!(f, "{sep}{d}")?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for StoreSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreSpec::DefaultDownstream => Ok(()),
            StoreSpec::At(l) => l.fmt(f),
        }
    }
}

impl fmt::Display for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Element::Server { dll, stores } => {
                match dll {
                    None => f.write_str("srv")?,
                    Some(d) => write!(f, "symsrv*{d}")?,
                }
                for s in stores {
                    write!(f, "*{s}")?;
                }
                Ok(())
            }
            Element::Cache { store } => write!(f, "cache*{store}"),
            Element::Plain { location } => location.fmt(f),
        }
    }
}

impl fmt::Display for SymbolPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.elements.iter().enumerate() {
            if i > 0 {
                f.write_str(";")?;
            }
            e.fmt(f)?;
        }
        Ok(())
    }
}

/// Why a symbol path element was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[non_exhaustive]
pub enum SymbolPathErrorKind {
    /// `srv` or `symsrv*dll` with no store at all.
    #[error("a symbol server element needs at least one store after `*`")]
    NoStores,
    /// `symsrv*` without a DLL name.
    #[error("`symsrv*` must be followed by a server DLL name (e.g. `symsrv*symsrv.dll*…`)")]
    MissingDll,
    /// `cache*a*b`.
    #[error("`cache*` takes exactly one directory")]
    CacheTakesOneDirectory,
    /// `foo*bar` where `foo` is not a keyword.
    #[error("unknown keyword `{0}` (expected `srv`, `symsrv` or `cache`)")]
    UnknownKeyword(String),
    /// `\\` or `smb://` without a host.
    #[error("the location has no host name")]
    MissingHost,
    /// `\\host` without a share.
    #[error("a UNC location needs a share name (`\\\\host\\share`)")]
    MissingShare,
    /// `\\host:x\share`.
    #[error("`{0}` is not a valid TCP port")]
    BadPort(String),
    /// `.` or `..` in a UNC location.
    #[error("`.` and `..` are not allowed in a UNC location")]
    DotSegment,
    /// A NUL or other control character.
    #[error("control characters are not allowed")]
    ControlCharacter,
    /// An empty plain location.
    #[error("empty location")]
    EmptyLocation,
    /// `s3://bucket/x`, `ftp://…`: a URL scheme no transport reads (it is not taken as a
    /// local folder named `s3:`).
    #[error(
        "unknown scheme `{0}://`: a store is a local folder, `\\\\host\\share` (or `smb://host/share`), an `http(s)://` URL, `s3://bucket/prefix` or `az://account/container/prefix`"
    )]
    UnknownScheme(String),
    /// `https//host`, `htps://host`, `http:/host`: a mistyped HTTP URL; holds what was
    /// probably meant (`https://`).
    #[error("this looks like a mistyped `{0}` URL")]
    MistypedUrl(String),
    /// `s3://` without a bucket, `az://account` without a container; holds the scheme.
    #[error(
        "`{0}://` needs a bucket (`s3://bucket/prefix`) or an account and a container (`az://account/container/prefix`)"
    )]
    MissingContainer(&'static str),
}

/// A malformed symbol path: names the element, its byte offset in the input and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("symbol path element `{element}` at offset {offset}: {reason}")]
pub struct SymbolPathError {
    /// The offending element (or token) as written.
    pub element: String,
    /// Byte offset of the element in the input string.
    pub offset: usize,
    /// Why it was rejected.
    pub reason: SymbolPathErrorKind,
}

impl FromStr for SymbolPath {
    type Err = SymbolPathError;

    /// Parses a symbol path. Whitespace around elements and tokens is trimmed; empty elements
    /// are skipped. An empty string parses to an empty path.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut elements = Vec::new();
        let mut start = 0usize;
        for raw in s.split(';') {
            let raw_offset = start;
            start += raw.len() + 1;
            let lead = raw.len() - raw.trim_start().len();
            let text = raw.trim();
            if text.is_empty() {
                continue;
            }
            elements.push(parse_element(text, raw_offset + lead)?);
        }
        Ok(SymbolPath { elements })
    }
}

fn parse_element(text: &str, offset: usize) -> Result<Element, SymbolPathError> {
    let err = |reason| SymbolPathError {
        element: text.to_string(),
        offset,
        reason,
    };
    if !text.contains('*') {
        return Ok(Element::Plain {
            location: Location::parse(text, text, offset)?,
        });
    }
    let tokens: Vec<&str> = text.split('*').map(str::trim).collect();
    let keyword = tokens[0].to_ascii_lowercase();
    let parse_stores = |toks: &[&str]| -> Result<Vec<StoreSpec>, SymbolPathError> {
        toks.iter()
            .map(|t| {
                if t.is_empty() {
                    Ok(StoreSpec::DefaultDownstream)
                } else {
                    Location::parse(t, text, offset).map(StoreSpec::At)
                }
            })
            .collect()
    };
    match keyword.as_str() {
        "srv" => {
            let stores = parse_stores(&tokens[1..])?;
            if stores.is_empty() {
                return Err(err(SymbolPathErrorKind::NoStores));
            }
            Ok(Element::Server { dll: None, stores })
        }
        "symsrv" => {
            let dll = tokens.get(1).copied().unwrap_or("");
            if dll.is_empty() {
                return Err(err(SymbolPathErrorKind::MissingDll));
            }
            if tokens.len() < 3 {
                return Err(err(SymbolPathErrorKind::NoStores));
            }
            Ok(Element::Server {
                dll: Some(dll.to_string()),
                stores: parse_stores(&tokens[2..])?,
            })
        }
        "cache" => {
            if tokens.len() != 2 {
                return Err(err(SymbolPathErrorKind::CacheTakesOneDirectory));
            }
            let store = parse_stores(&tokens[1..])?.remove(0);
            Ok(Element::Cache { store })
        }
        _ => Err(err(SymbolPathErrorKind::UnknownKeyword(
            tokens[0].to_string(),
        ))),
    }
}

impl SymbolPath {
    /// The symbol path from the environment, as the debuggers build it:
    /// `_NT_ALT_SYMBOL_PATH` then `_NT_SYMBOL_PATH`, joined with `;` (either may be unset).
    ///
    /// Docs disagree on the order: WinDbg's "Symbol path" page searches the alternate path first,
    /// DbgHelp's `SymInitialize` lists `_NT_SYMBOL_PATH` first. We follow the debugger, because
    /// `_NT_ALT_SYMBOL_PATH` exists to override. Returns `Ok(None)` when neither is set.
    ///
    /// # Errors
    /// [`SymbolPathError`] when the variables hold a malformed path.
    pub fn from_env_with(
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<SymbolPath>, SymbolPathError> {
        let parts: Vec<String> = ["_NT_ALT_SYMBOL_PATH", "_NT_SYMBOL_PATH"]
            .iter()
            .filter_map(|k| get(k))
            .filter(|v| !v.trim().is_empty())
            .collect();
        if parts.is_empty() {
            return Ok(None);
        }
        parts.join(";").parse().map(Some)
    }

    /// [`SymbolPath::from_env_with`] over the process environment.
    ///
    /// # Errors
    /// As [`SymbolPath::from_env_with`].
    pub fn from_env() -> Result<Option<SymbolPath>, SymbolPathError> {
        Self::from_env_with(|k| std::env::var(k).ok())
    }
}

/// The default downstream store: `<home>/sym`.
///
/// Per the debugger docs, home is `DBGHELP_HOMEDIR` when set, else the debugger's installation
/// directory. symcascade has no such directory, so its platform defaults are
/// `%ProgramData%\dbg` on Windows (where WinDbg keeps `sym`) and `$XDG_CACHE_HOME/symcascade`
/// (else `$HOME/.cache/symcascade`) elsewhere. `get` reads environment variables (injected for
/// tests). Returns a path string in the platform's syntax.
pub fn default_downstream_store(get: impl Fn(&str) -> Option<String>) -> String {
    let home = if let Some(h) = get("DBGHELP_HOMEDIR").filter(|h| !h.is_empty()) {
        h
    } else if cfg!(windows) {
        let pd = get("ProgramData").unwrap_or_else(|| r"C:\ProgramData".to_string());
        format!(r"{pd}\dbg")
    } else if let Some(x) = get("XDG_CACHE_HOME").filter(|h| !h.is_empty()) {
        format!("{x}/symcascade")
    } else {
        let home = get("HOME").unwrap_or_else(|| "/tmp".to_string());
        format!("{home}/.cache/symcascade")
    };
    let sep = if cfg!(windows) { '\\' } else { '/' };
    format!("{}{sep}sym", home.trim_end_matches(['/', '\\']))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn unc(host: &str, share: &str, dirs: &[&str]) -> StoreSpec {
        StoreSpec::At(Location::Smb {
            host: host.into(),
            port: None,
            share: share.into(),
            dirs: dirs.iter().map(|d| d.to_string()).collect(),
            url_form: false,
        })
    }
    fn local(p: &str) -> StoreSpec {
        StoreSpec::At(Location::Local { path: p.into() })
    }
    fn http(u: &str) -> StoreSpec {
        StoreSpec::At(Location::Http { url: u.into() })
    }
    fn srv(stores: Vec<StoreSpec>) -> Element {
        Element::Server { dll: None, stores }
    }

    /// Every symbol path quoted in `shared/reference/` parses as the pages describe.
    #[test]
    fn reference_examples() {
        let d = StoreSpec::DefaultDownstream;
        let cases: Vec<(&str, Vec<Element>)> = vec![
            // SymProxy page
            (
                r"SRV*D:\SymStore\Symbols*\\MainOffice\Symbols",
                vec![srv(vec![
                    local(r"D:\SymStore\Symbols"),
                    unc("MainOffice", "Symbols", &[]),
                ])],
            ),
            (
                r"SRV*D:\SymStore\Symbols*https://msdl.microsoft.com/download/symbols",
                vec![srv(vec![
                    local(r"D:\SymStore\Symbols"),
                    http("https://msdl.microsoft.com/download/symbols"),
                ])],
            ),
            (
                r"SRV*D:\SymStore\Symbols*http://symbols.contoso.com/symbols",
                vec![srv(vec![
                    local(r"D:\SymStore\Symbols"),
                    http("http://symbols.contoso.com/symbols"),
                ])],
            ),
            // Advanced SymSrv Use
            (
                r"symsrv*ServerDLL*DownstreamStore*\\Server\Share",
                vec![Element::Server {
                    dll: Some("ServerDLL".into()),
                    stores: vec![local("DownstreamStore"), unc("Server", "Share", &[])],
                }],
            ),
            (
                r"symsrv*ServerDLL*\\Server\Share",
                vec![Element::Server {
                    dll: Some("ServerDLL".into()),
                    stores: vec![unc("Server", "Share", &[])],
                }],
            ),
            (
                r"srv*DownstreamStore*\\Server\Share",
                vec![srv(vec![
                    local("DownstreamStore"),
                    unc("Server", "Share", &[]),
                ])],
            ),
            (
                r"srv*\\Server\Share",
                vec![srv(vec![unc("Server", "Share", &[])])],
            ),
            (
                r"symsrv*symsrv.dll*\\mybuilds\mysymbols",
                vec![Element::Server {
                    dll: Some("symsrv.dll".into()),
                    stores: vec![unc("mybuilds", "mysymbols", &[])],
                }],
            ),
            (
                r"symsrv*symsrv.dll*c:\localsymbols*\\mybuilds\mysymbols",
                vec![Element::Server {
                    dll: Some("symsrv.dll".into()),
                    stores: vec![local(r"c:\localsymbols"), unc("mybuilds", "mysymbols", &[])],
                }],
            ),
            (
                r"symsrv*symsrv.dll*\\localserver\myshare\mycache*https://www.company.com/manysymbols",
                vec![Element::Server {
                    dll: Some("symsrv.dll".into()),
                    stores: vec![
                        unc("localserver", "myshare", &["mycache"]),
                        http("https://www.company.com/manysymbols"),
                    ],
                }],
            ),
            (
                r"srv*\\localserver\myshare\mycache*https://www.company.com/manysymbols",
                vec![srv(vec![
                    unc("localserver", "myshare", &["mycache"]),
                    http("https://www.company.com/manysymbols"),
                ])],
            ),
            (
                r"srv*c:\localcache*\\interim\store*https://msdl.microsoft.com/download/symbols",
                vec![srv(vec![
                    local(r"c:\localcache"),
                    unc("interim", "store", &[]),
                    http("https://msdl.microsoft.com/download/symbols"),
                ])],
            ),
            (
                r"srv**\\interim\store*https://internetsite",
                vec![srv(vec![
                    d.clone(),
                    unc("interim", "store", &[]),
                    http("https://internetsite"),
                ])],
            ),
            (
                r"srv*C:\Symbols*\\BranchOfficeA\Symbols*\\MainOffice\Symbols",
                vec![srv(vec![
                    local(r"C:\Symbols"),
                    unc("BranchOfficeA", "Symbols", &[]),
                    unc("MainOffice", "Symbols", &[]),
                ])],
            ),
            (
                r"srv*C:\Symbols*\\MachineName\Symbols*https://SymProxyName/Symbols",
                vec![srv(vec![
                    local(r"C:\Symbols"),
                    unc("MachineName", "Symbols", &[]),
                    http("https://SymProxyName/Symbols"),
                ])],
            ),
            (
                r"srv*C:\Symbols*\\Machine1\Symbols*https://SymProxyName/Symbols;srv*C:\WebSymbols*https://msdl.microsoft.com/download/symbols",
                vec![
                    srv(vec![
                        local(r"C:\Symbols"),
                        unc("Machine1", "Symbols", &[]),
                        http("https://SymProxyName/Symbols"),
                    ]),
                    srv(vec![
                        local(r"C:\WebSymbols"),
                        http("https://msdl.microsoft.com/download/symbols"),
                    ]),
                ],
            ),
            (
                r"\\someshare\that\cachestar\ignores;srv*c:\mysymbols*https://msdl.microsoft.com/download/symbols;cache*c:\mysymbols;\\anothershare\that\gets\cached",
                vec![
                    Element::Plain {
                        location: Location::Smb {
                            host: "someshare".into(),
                            port: None,
                            share: "that".into(),
                            dirs: vec!["cachestar".into(), "ignores".into()],
                            url_form: false,
                        },
                    },
                    srv(vec![
                        local(r"c:\mysymbols"),
                        http("https://msdl.microsoft.com/download/symbols"),
                    ]),
                    Element::Cache {
                        store: local(r"c:\mysymbols"),
                    },
                    Element::Plain {
                        location: Location::Smb {
                            host: "anothershare".into(),
                            port: None,
                            share: "that".into(),
                            dirs: vec!["gets".into(), "cached".into()],
                            url_form: false,
                        },
                    },
                ],
            ),
            // Public symbol server page
            (
                r"srv*DownstreamStore*https://msdl.microsoft.com/download/symbols",
                vec![srv(vec![
                    local("DownstreamStore"),
                    http("https://msdl.microsoft.com/download/symbols"),
                ])],
            ),
            (r"srv*", vec![srv(vec![d.clone()])]),
            (
                r"cache*c:\MyCache;SRV*https://msdl.microsoft.com/download/symbols",
                vec![
                    Element::Cache {
                        store: local(r"c:\MyCache"),
                    },
                    srv(vec![http("https://msdl.microsoft.com/download/symbols")]),
                ],
            ),
        ];
        for (text, want) in cases {
            let got: SymbolPath = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(got.elements, want, "{text}");
            let again: SymbolPath = got.to_string().parse().unwrap();
            assert_eq!(again, got, "round trip of {text}");
        }
    }

    #[test]
    fn lab_forms_and_trimming() {
        let p: SymbolPath =
            "  SRV * /tmp/a ** smb://127.0.0.1:44445/MainOffice/sub ; cache* ; \\\\h:1\\s "
                .parse()
                .unwrap();
        assert_eq!(
            p.elements,
            vec![
                srv(vec![
                    local("/tmp/a"),
                    StoreSpec::DefaultDownstream,
                    StoreSpec::At(Location::Smb {
                        host: "127.0.0.1".into(),
                        port: Some(44445),
                        share: "MainOffice".into(),
                        dirs: vec!["sub".into()],
                        url_form: true,
                    }),
                ]),
                Element::Cache {
                    store: StoreSpec::DefaultDownstream
                },
                Element::Plain {
                    location: Location::Smb {
                        host: "h".into(),
                        port: Some(1),
                        share: "s".into(),
                        dirs: vec![],
                        url_form: false
                    }
                }
            ]
        );
        // A trailing `*` is the default downstream store.
        let p: SymbolPath = r"srv*\\s\x*".parse().unwrap();
        assert_eq!(
            p.elements,
            vec![srv(vec![unc("s", "x", &[]), StoreSpec::DefaultDownstream])]
        );
    }

    #[test]
    fn errors_name_element_offset_and_reason() {
        let cases = [
            ("a;  symsrv**x", 4, SymbolPathErrorKind::MissingDll),
            ("symsrv*dll", 0, SymbolPathErrorKind::NoStores),
            (
                "c:\\x;cache*a*b",
                5,
                SymbolPathErrorKind::CacheTakesOneDirectory,
            ),
            (
                "foo*bar",
                0,
                SymbolPathErrorKind::UnknownKeyword("foo".into()),
            ),
            ("srv*\\\\host", 0, SymbolPathErrorKind::MissingShare),
            ("srv*\\\\", 0, SymbolPathErrorKind::MissingHost),
            (
                "srv*\\\\h:99999\\s",
                0,
                SymbolPathErrorKind::BadPort("99999".into()),
            ),
            ("srv*\\\\h\\s\\..\\x", 0, SymbolPathErrorKind::DotSegment),
            ("srv*smb://h/s/a\\..\\x", 0, SymbolPathErrorKind::DotSegment),
            ("srv*c:\\a\u{1}b", 0, SymbolPathErrorKind::ControlCharacter),
            ("srv*https://", 0, SymbolPathErrorKind::MissingHost),
        ];
        for (text, offset, reason) in cases {
            let e = text.parse::<SymbolPath>().unwrap_err();
            assert_eq!((e.offset, &e.reason), (offset, &reason), "{text}: {e}");
            assert!(e.to_string().contains(&e.element), "{e}");
        }
        // `srv` without any `*` is a plain directory named "srv", as in DbgHelp.
        let p: SymbolPath = "srv".parse().unwrap();
        assert!(matches!(p.elements[0], Element::Plain { .. }));
    }

    /// Unknown schemes and mistyped HTTP URLs are errors naming the element, never local
    /// folders (`s3:` or `https` in the working directory).
    #[test]
    fn unknown_schemes_and_url_typos_are_rejected() {
        let unknown = |s: &str| SymbolPathErrorKind::UnknownScheme(s.into());
        let typo = |s: &str| SymbolPathErrorKind::MistypedUrl(s.into());
        let cases = [
            ("gs://symbols/main", 0, unknown("gs")),
            (r"srv*C:\Symbols*gs://symbols/main", 0, unknown("gs")),
            ("ftp://host/symbols", 0, unknown("ftp")),
            ("file:///var/symbols", 0, unknown("file")),
            (
                r"c:\x;srv*c:\y*https//msdl.microsoft.com/download/symbols",
                5,
                typo("https://"),
            ),
            ("srv*/tmp/a*http//symbols.corp/s", 0, typo("http://")),
            ("srv*/tmp/a*htps://msdl.microsoft.com", 0, typo("https://")),
            ("srv*/tmp/a*htp://symbols.corp", 0, typo("http://")),
            ("srv*/tmp/a*HTTPS:/msdl.microsoft.com", 0, typo("https://")),
            (r"srv*/tmp/a*http:\\symbols.corp", 0, typo("http://")),
            ("cache*httpss://x", 0, typo("https://")),
        ];
        for (text, offset, reason) in cases {
            let e = text.parse::<SymbolPath>().unwrap_err();
            assert_eq!((e.offset, &e.reason), (offset, &reason), "{text}: {e}");
            let shown = e.to_string();
            assert!(shown.contains(&e.element), "{shown}");
        }
        let e = "gs://symbols/main".parse::<SymbolPath>().unwrap_err();
        assert!(e.to_string().contains("`gs://`"), "{e}");
        // Still local paths: a drive written with slashes, folders whose names merely start
        // with "http", relative names, colons inside a name.
        for ok in [
            "C://Symbols",
            "httpdocs",
            "srv*https_cache*https://msdl.microsoft.com/download/symbols",
            "/srv/http/symbols",
            "DownstreamStore",
            "/tmp/a:b",
        ] {
            let p: SymbolPath = ok.parse().unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert_eq!(p.to_string(), ok);
        }
        // Locations parsed alone (`file.ptr` targets) get the same check.
        assert!("gs://b/k".parse::<Location>().is_err());
        assert!("HTTPS://Host/x".parse::<Location>().unwrap().is_http());
    }

    /// Object store tiers (issue #18): bucket or account/container, then the prefix; the
    /// scheme in any case; `Display` prints what parses back the same.
    #[test]
    fn object_store_locations() {
        let obj = |service, container: &str, prefix: &[&str]| Location::Object {
            service,
            container: container.into(),
            prefix: prefix.iter().map(|p| p.to_string()).collect(),
        };
        let (s3, az) = (ObjectService::S3, ObjectService::Azure);
        let cases = [
            ("s3://symbols", obj(s3, "symbols", &[]), "s3://symbols"),
            (
                "s3://symbols/main",
                obj(s3, "symbols", &["main"]),
                "s3://symbols/main",
            ),
            (
                "S3://symbols//a/b/ ",
                obj(s3, "symbols", &["a", "b"]),
                "s3://symbols/a/b",
            ),
            ("az://acct/sym", obj(az, "acct/sym", &[]), "az://acct/sym"),
            (
                "az://acct/sym/main/x",
                obj(az, "acct/sym", &["main", "x"]),
                "az://acct/sym/main/x",
            ),
        ];
        for (text, want, shown) in cases {
            let l: Location = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(l, want, "{text}");
            assert_eq!(l.to_string(), shown, "{text}");
            assert_eq!(shown.parse::<Location>().unwrap(), l, "{text}");
        }
        let p: SymbolPath = r"srv*C:\Symbols*\\BranchOfficeA\Symbols*s3://symbols/main"
            .parse()
            .unwrap();
        let Element::Server { stores, .. } = &p.elements[0] else {
            panic!("{p:?}")
        };
        assert_eq!(stores[2], StoreSpec::At(obj(s3, "symbols", &["main"])));
        let refused = [
            ("s3://", SymbolPathErrorKind::MissingContainer("s3")),
            ("az://acct", SymbolPathErrorKind::MissingContainer("az")),
            ("s3://b/../x", SymbolPathErrorKind::DotSegment),
            ("az://a/c/./x", SymbolPathErrorKind::DotSegment),
            ("s3://b/a\\x", SymbolPathErrorKind::DotSegment),
        ];
        for (text, reason) in refused {
            let e = text.parse::<Location>().unwrap_err();
            assert_eq!(e.reason, reason, "{text}");
        }
        let (dir, name) = obj(s3, "b", &["p", "a.pdb"]).split_file().unwrap();
        assert_eq!(
            (dir.to_string(), name.as_str()),
            ("s3://b/p".into(), "a.pdb")
        );
        assert!(obj(s3, "b", &[]).split_file().is_none());
    }

    /// Fuzzing regressions (fuzz/fuzz_targets/sympath.rs): trailing whitespace before a
    /// separator was kept in a location, so `Display` printed a form that parsed differently.
    #[test]
    fn trailing_whitespace_in_locations_round_trips() {
        let cases: [(&str, &str); 5] = [
            ("\\\\srv*x[             \\   ;*\\ \\", "\\\\srv*x[\\   ;*"),
            ("\\\\h\\s \\x", "\\\\h\\s\\x"),
            ("smb://h/s/d /", "smb://h/s/d"),
            ("http://a/ /", "http://a"),
            ("https://a/b \u{3000}/", "https://a/b"),
        ];
        for (text, shown) in cases {
            let l: Location = text.parse().unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(l.to_string(), shown, "{text:?}");
            assert_eq!(shown.parse::<Location>().unwrap(), l, "{text:?}");
        }
        let p: SymbolPath = "srv*\\\\h\\s \\*http://x/ /".parse().unwrap();
        assert_eq!(p.to_string(), "srv*\\\\h\\s*http://x");
        assert_eq!(p.to_string().parse::<SymbolPath>().unwrap(), p);
        for no_host in ["http:// /", "https:// \u{3000}/"] {
            let e = no_host.parse::<Location>().unwrap_err();
            assert_eq!(e.reason, SymbolPathErrorKind::MissingHost, "{no_host:?}");
        }
    }

    #[test]
    fn env_order_and_default_store() {
        let env = |k: &str| match k {
            "_NT_SYMBOL_PATH" => Some("srv*c:\\b*\\\\m\\s".to_string()),
            "_NT_ALT_SYMBOL_PATH" => Some("c:\\alt".to_string()),
            _ => None,
        };
        let p = SymbolPath::from_env_with(env).unwrap().unwrap();
        assert_eq!(p.to_string(), "c:\\alt;srv*c:\\b*\\\\m\\s");
        assert_eq!(SymbolPath::from_env_with(|_| None).unwrap(), None);
        let d = default_downstream_store(|k| (k == "DBGHELP_HOMEDIR").then(|| "/h/".to_string()));
        assert!(d == "/h/sym" || d == "/h\\sym", "{d}");
        if !cfg!(windows) {
            let d = default_downstream_store(|k| (k == "HOME").then(|| "/home/u".to_string()));
            assert_eq!(d, "/home/u/.cache/symcascade/sym");
        }
    }

    fn arb_location() -> impl Strategy<Value = Location> {
        let seg = "[A-Za-z0-9_$-]{1,8}";
        prop_oneof![
            "(/[a-z0-9]{1,6}){1,3}".prop_map(|path| Location::Local { path }),
            "[A-Z]:(\\\\[A-Za-z0-9 ]{1,6}){0,2}"
                .prop_filter("no trailing space", |p| !p.ends_with(' '))
                .prop_map(|path| Location::Local { path }),
            (
                seg,
                proptest::option::of(1u16..),
                seg,
                proptest::collection::vec(seg, 0..3),
                any::<bool>()
            )
                .prop_map(|(host, port, share, dirs, url_form)| Location::Smb {
                    host,
                    port,
                    share,
                    dirs,
                    url_form
                }),
            "https?://[a-z]{1,8}(/[a-z]{1,5}){0,2}".prop_map(|url| Location::Http { url }),
            (
                any::<bool>(),
                "[a-z0-9-]{3,8}",
                proptest::collection::vec(seg, 0..3)
            )
                .prop_map(|(azure, c, prefix)| Location::Object {
                    service: if azure {
                        ObjectService::Azure
                    } else {
                        ObjectService::S3
                    },
                    container: if azure { format!("acct/{c}") } else { c },
                    prefix,
                }),
        ]
    }

    fn arb_store() -> impl Strategy<Value = StoreSpec> {
        prop_oneof![
            1 => Just(StoreSpec::DefaultDownstream),
            4 => arb_location().prop_map(StoreSpec::At),
        ]
    }

    fn arb_element() -> impl Strategy<Value = Element> {
        prop_oneof![
            (
                proptest::option::of("[a-z]{1,6}\\.dll"),
                proptest::collection::vec(arb_store(), 1..4)
            )
                .prop_map(|(dll, stores)| Element::Server { dll, stores }),
            arb_store().prop_map(|store| Element::Cache { store }),
            arb_location().prop_map(|location| Element::Plain { location }),
        ]
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(elements in proptest::collection::vec(arb_element(), 0..4)) {
            let p = SymbolPath { elements };
            let text = p.to_string();
            let back: SymbolPath = text.parse().map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
            prop_assert_eq!(back, p);
        }

        /// `scheme://…` is a store symcascade reads (HTTP, SMB) or an error: never a local path.
        #[test]
        fn url_looking_tokens_are_never_local(
            scheme in "[a-zA-Z][a-zA-Z0-9+.-]{1,7}",
            rest in "[a-z0-9./]{0,12}",
        ) {
            let text = format!("srv*/tmp/a*{scheme}://{rest}");
            if let Ok(p) = text.parse::<SymbolPath>() {
                let Element::Server { stores, .. } = &p.elements[0] else {
                    return Err(TestCaseError::fail("not a chain"));
                };
                prop_assert!(
                    !matches!(&stores[1], StoreSpec::At(Location::Local { .. })),
                    "{text} parsed as a local path"
                );
            }
        }

        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            let _ = s.parse::<SymbolPath>();
        }
    }
}
