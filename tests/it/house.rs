//! House rules of the code base, checked on its sources: no import circles between modules,
//! and no function over 80 lines without a comment saying why (`Long:` in the comment lines
//! right above it). A refactor that breaks either fails here, with the offending names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 80;

/// Every `.rs` file under `dir`, with its module path (`store::smb::store`).
fn modules(dir: &Path) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let rel = p.strip_prefix(dir).unwrap().with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|l| l == "mod") {
                parts.pop();
            }
            if parts == ["lib"] || parts == ["main"] {
                continue;
            }
            out.insert(parts.join("::"), p);
        }
    }
    out
}

/// Code lines only (comments, doc comments and `#[cfg(test)]` modules left out).
fn code(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if line.starts_with("#[cfg(test)]") {
            break;
        }
        let t = line.trim_start();
        if t.starts_with("//") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The modules `m` refers to through `crate::` paths (nested `use crate::{a, b::c}` groups
/// included) and `super::` paths; a submodule using its parent is not an edge.
fn edges(m: &str, text: &str, all: &BTreeMap<String, PathBuf>) -> BTreeSet<String> {
    let resolve = |path: &str| -> Option<String> {
        let parts: Vec<&str> = path.split("::").collect();
        (1..=parts.len())
            .rev()
            .map(|i| parts[..i].join("::"))
            .find(|c| all.contains_key(c))
    };
    let mut refs = Vec::new();
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + 7..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find("};").unwrap_or(group.len());
            for item in group[..end].split([',', '{']) {
                let item: String = item.trim().chars().take_while(|c| ident(*c)).collect();
                refs.push(item);
            }
        } else {
            refs.push(rest.chars().take_while(|c| ident(*c)).collect());
        }
    }
    let parent = m.rsplit_once("::").map(|(p, _)| p.to_string());
    for (i, _) in text.match_indices("super::") {
        let name: String = text[i + 7..].chars().take_while(|c| ident(*c)).collect();
        refs.push(match &parent {
            Some(p) => format!("{p}::{name}"),
            None => name,
        });
    }
    refs.iter()
        .filter_map(|r| resolve(r.trim_end_matches(':')))
        .filter(|t| t != m && !m.starts_with(&format!("{t}::")))
        .collect()
}

/// Strongly connected components of more than one module (Tarjan).
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        let n = t.index.len();
        t.index.insert(v, n);
        t.low.insert(v, n);
        t.stack.push(v);
        t.on.insert(v);
        for w in &t.g[v] {
            let w = w.as_str();
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                comp.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        g: graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let all = modules(&src_dir());
    assert!(all.len() > 20, "{} modules found", all.len());
    let graph: BTreeMap<String, BTreeSet<String>> = all
        .iter()
        .map(|(m, p)| {
            (
                m.clone(),
                edges(m, &code(&std::fs::read_to_string(p).unwrap()), &all),
            )
        })
        .collect();
    // The checker sees edges at all (a broken parser would pass vacuously).
    assert!(graph["daemon"].contains("agent") && graph["daemon"].contains("front"));
    assert!(graph["cascade"].contains("store"));
    let found = circles(&graph);
    assert!(found.is_empty(), "import circles: {found:?}");
}

#[test]
fn the_circle_finder_finds_circles() {
    let g: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(circles(&g), vec![vec!["a", "b", "c"]]);
}

/// Functions longer than [`MAX_LINES`] lines in `text`, as `(name, first line, lines)`, unless
/// the comments right above them say why (`Long:`).
fn long_functions(text: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.starts_with("#[cfg(test)]") {
            break;
        }
        let t = line.trim_start();
        let indent = &line[..line.len() - t.len()];
        let t = t
            .strip_prefix("pub(crate) ")
            .or_else(|| t.strip_prefix("pub(super) "))
            .or_else(|| t.strip_prefix("pub "))
            .unwrap_or(t);
        let t = t.strip_prefix("async ").unwrap_or(t);
        let Some(rest) = t.strip_prefix("fn ") else {
            continue;
        };
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        // The body opens on the first line ending in `{` (a declaration ends in `;`).
        let Some(open) = (i..lines.len()).find(|&j| {
            let l = lines[j].trim_end();
            l.ends_with('{') || l.ends_with(';')
        }) else {
            continue;
        };
        if lines[open].trim_end().ends_with(';') {
            continue;
        }
        let close = format!("{indent}}}");
        let Some(end) = (open + 1..lines.len()).find(|&j| lines[j] == close) else {
            continue;
        };
        let n = end - i + 1;
        let reason = lines[..i]
            .iter()
            .rev()
            .take_while(|l| {
                let l = l.trim_start();
                l.starts_with("//") || l.starts_with("#[")
            })
            .any(|l| l.contains("Long:"));
        if n > MAX_LINES && !reason {
            out.push((name, i + 1, n));
        }
    }
    out
}

#[test]
fn no_function_over_80_lines_without_a_reason() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut found = Vec::new();
    for dir in ["src", "service"] {
        for p in modules(&root.join(dir)).values() {
            for (name, line, n) in long_functions(&std::fs::read_to_string(p).unwrap()) {
                found.push(format!("{}:{line} {name} ({n} lines)", p.display()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "functions over {MAX_LINES} lines: {found:#?}"
    );
}

#[test]
fn the_length_check_sees_long_functions_and_reasons() {
    let body = "    x();\n".repeat(MAX_LINES);
    let long = format!("fn big() {{\n{body}}}\n");
    assert_eq!(long_functions(&long).len(), 1);
    let excused = format!("// Long: a table of cases.\n{long}");
    assert!(long_functions(&excused).is_empty());
    let short = "pub async fn small() {\n    x();\n}\n";
    assert!(long_functions(short).is_empty());
}
