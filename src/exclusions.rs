//! Exclusion lists: file names SymSrv/SymProxy never look up upstream.
//!
//! Data flow: the HTTP front asks [`ExclusionList::is_excluded`] before a cold lookup; the list
//! file is re-read when its modification time or size changes (checked at most once per
//! [`RECHECK`]), so an admin's edit takes effect within a second, without a restart. Format (per
//! Microsoft, "Setting Up Exclusion Lists"): one file name per line, `*` wildcards (`mso*`,
//! `symsrv.*`), case-insensitive; a `symsrv.ini`-style `[exclusions]` header and `;`/`#`
//! comment lines are ignored. A list that cannot be read excludes nothing (logged once).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// How often the list file's metadata is checked for changes.
pub const RECHECK: Duration = Duration::from_secs(1);

/// Whether `name` matches `pattern` (`*` matches any run of characters, including none),
/// ASCII case-insensitively.
pub fn wildcard_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().map(|c| c.to_ascii_lowercase()).collect();
    let n: Vec<char> = name.chars().map(|c| c.to_ascii_lowercase()).collect();
    // Greedy matching with backtracking to the last `*`: linear in practice, no recursion.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if pi < p.len() && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Parses an exclusion list: one pattern per line; blank lines, `[section]` headers and
/// `;`/`#` comments are skipped.
pub fn parse(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with([';', '#', '[']))
        .map(str::to_string)
        .collect()
}

#[derive(Debug, Default)]
struct State {
    patterns: Vec<String>,
    seen: Option<(SystemTime, u64)>,
    checked: Option<Instant>,
}

/// An exclusion list backed by a file, reloaded when the file changes.
#[derive(Debug)]
pub struct ExclusionList {
    path: PathBuf,
    state: Mutex<State>,
}

impl ExclusionList {
    /// A list read from `path` (read now and whenever it changes; a missing file is empty).
    pub fn new(path: impl AsRef<Path>) -> ExclusionList {
        let list = ExclusionList {
            path: path.as_ref().to_path_buf(),
            state: Mutex::new(State::default()),
        };
        list.refresh(Instant::now());
        list
    }

    /// The list file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether `name` (a symbol file name such as `mso.pdb`) matches any pattern.
    pub fn is_excluded(&self, name: &str) -> bool {
        self.refresh(Instant::now());
        let st = self.state.lock().expect("exclusions");
        st.patterns.iter().any(|p| wildcard_match(p, name))
    }

    /// The patterns currently in force.
    pub fn patterns(&self) -> Vec<String> {
        self.refresh(Instant::now());
        self.state.lock().expect("exclusions").patterns.clone()
    }

    fn refresh(&self, now: Instant) {
        let mut st = self.state.lock().expect("exclusions");
        if st.checked.is_some_and(|t| now.duration_since(t) < RECHECK) {
            return;
        }
        st.checked = Some(now);
        let meta = std::fs::metadata(&self.path)
            .ok()
            .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
        if meta == st.seen {
            return;
        }
        st.seen = meta;
        st.patterns = match std::fs::read_to_string(&self.path) {
            Ok(text) => parse(&text),
            Err(e) => {
                tracing::warn!(file = %self.path.display(), "exclusion list unreadable, excluding nothing: {e}");
                Vec::new()
            }
        };
        tracing::info!(file = %self.path.display(), patterns = st.patterns.len(), "exclusion list loaded");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_table() {
        for (p, n, want) in [
            ("dbghelp.pdb", "dbghelp.pdb", true),
            ("dbghelp.pdb", "DbgHelp.PDB", true),
            ("dbghelp.pdb", "dbghelp.pd_", false),
            ("symsrv.*", "symsrv.dll", true),
            ("symsrv.*", "symsrv.", true),
            ("symsrv.*", "symsrvx.dll", false),
            ("mso*", "mso.dll", true),
            ("mso*", "amso.dll", false),
            ("*", "", true),
            ("*.pdb", "a.b.pdb", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXbY", false),
            ("**x", "x", true),
            ("", "", true),
            ("", "a", false),
        ] {
            assert_eq!(wildcard_match(p, n), want, "{p} vs {n}");
        }
    }

    #[test]
    fn parse_skips_comments_and_headers() {
        let v = parse("[exclusions]\n; comment\n# also\n\n  mso*  \nsymsrv.*\n");
        assert_eq!(v, ["mso*", "symsrv.*"]);
    }

    #[test]
    fn reloads_when_the_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("exclusions.txt");
        let list = ExclusionList::new(&f);
        assert!(
            !list.is_excluded("mso.dll"),
            "missing file excludes nothing"
        );
        std::fs::write(&f, "mso*\n").unwrap();
        // Force the next check (the file changed within the recheck interval).
        list.state.lock().unwrap().checked = None;
        assert!(list.is_excluded("MSO.dll"));
        std::fs::write(&f, "other.pdb\nmore.pdb\n").unwrap();
        list.state.lock().unwrap().checked = None;
        assert!(!list.is_excluded("mso.dll"));
        assert!(list.is_excluded("more.pdb"));
    }

    proptest::proptest! {
        #[test]
        fn a_name_matches_itself_and_star(name in "[ -~]{0,30}") {
            proptest::prop_assert!(wildcard_match("*", &name));
            if !name.contains('*') {
                proptest::prop_assert!(wildcard_match(&name, &name));
            }
        }
    }
}
