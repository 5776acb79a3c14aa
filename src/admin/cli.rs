//! The administration commands as the CLI runs them: `age`, `query`, `query --queue`, `del`,
//! and the `000Admin` record of `add`. Each returns the text to print (a table, or JSON with
//! `json`), so `main.rs` only parses arguments.

use super::age::{AgeOptions, AgePolicy, AgeReport};
use super::query::{KeyRow, QueueRow};
use super::transaction::{self, Labels, Ref, TxEntry};
use super::{AdminError, AdminStore};
use crate::store::smb::SmbClient;
use crate::sympath::Location;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

fn open(store: &str, client: &Arc<SmbClient>) -> Result<AdminStore, AdminError> {
    let loc: Location = store.parse().map_err(|e| AdminError::Unsupported {
        store: format!("{store} ({e})"),
        reason: "not a store location (a folder, \\\\host\\share\\dir or smb://host/share/dir)",
    })?;
    AdminStore::open(&loc, client)
}

/// `symcascade age <store>`: ages the store and returns the report and its text.
///
/// # Errors
/// [`AdminError`] for a bad location or a store that cannot be listed.
pub async fn age(
    store: &str,
    client: &Arc<SmbClient>,
    policy: AgePolicy,
    opts: AgeOptions,
    json: bool,
) -> Result<(AgeReport, String), AdminError> {
    let s = open(store, client)?;
    let r = super::age::age_store(&s, &policy, opts, SystemTime::now()).await?;
    let text = if json {
        serde_json::to_string_pretty(&r).expect("report serialises") + "\n"
    } else {
        age_text(&r)
    };
    Ok((r, text))
}

fn age_text(r: &AgeReport) -> String {
    let verb = if r.dry_run { "would remove" } else { "removed" };
    let mut out = String::new();
    for k in &r.removed {
        out += &format!(
            "{verb} {}/{} ({} bytes, last used {}, {:?})\n",
            k.name,
            k.index,
            k.bytes,
            humantime::format_rfc3339_seconds(k.last_use),
            k.reason
        );
    }
    for (k, e) in &r.failed {
        out += &format!("could not remove {k}: {e}\n");
    }
    out += &format!(
        "{}: {} keys, {} bytes; {verb} {} keys ({} bytes); {} bytes {}; {} busy keys left alone\n",
        r.store,
        r.keys,
        r.bytes_before,
        r.removed.len(),
        r.removed_bytes(),
        r.bytes_after,
        if r.dry_run { "would remain" } else { "remain" },
        r.busy
    );
    out
}

/// `symcascade query <store>`: the store's keys, forms and sizes.
///
/// # Errors
/// [`AdminError`] for a bad location or a store that cannot be listed.
pub async fn query(store: &str, client: &Arc<SmbClient>, json: bool) -> Result<String, AdminError> {
    let s = open(store, client)?;
    let rows: Vec<KeyRow> = super::scan_keys(&s)
        .await?
        .iter()
        .map(KeyRow::from)
        .collect();
    Ok(if json {
        serde_json::to_string_pretty(&rows).expect("rows serialise") + "\n"
    } else {
        super::query::keys_table(&rows)
    })
}

/// `symcascade query --queue`: the branch queue in `admin` (`<branch>/000Cascade`).
///
/// # Errors
/// [`AdminError`] when the queue cannot be listed.
pub async fn queue(admin: &crate::folder::Folder, json: bool) -> Result<String, AdminError> {
    let rows: Vec<QueueRow> = super::query::queue_rows(admin).await?;
    Ok(if json {
        serde_json::to_string_pretty(&rows).expect("rows serialise") + "\n"
    } else {
        super::query::queue_table(&rows, crate::queue::now_secs())
    })
}

/// `symcascade add` (symstore.exe `add`): stores each of `files` in the local store `root`
/// (created with `pingme.txt` when new; two-tier when `index2.txt` is there) in `form`, then
/// records the transaction in `000Admin` with `labels`. Returns one `<key>\t<path>` line per
/// file and the transaction line, in order.
///
/// # Errors
/// [`AdminError::Publish`] for a file that cannot be keyed or stored (files before it stay
/// stored, untracked: as symstore.exe, a failed `add` records no transaction);
/// [`AdminError::BadField`] for labels SymStore's records cannot hold; `Io` for the store.
pub async fn add(
    root: &Path,
    files: Vec<std::path::PathBuf>,
    form: crate::layout::Form,
    labels: &Labels,
) -> Result<Vec<String>, AdminError> {
    use crate::layout::{INDEX2_TXT, PINGME_TXT, Tiering};
    labels.check()?;
    let io = |source| AdminError::Io {
        path: root.display().to_string(),
        source,
    };
    std::fs::create_dir_all(root).map_err(io)?;
    let ping = root.join(PINGME_TXT);
    if !ping.exists() {
        std::fs::write(&ping, b"").map_err(io)?;
    }
    let tiering = if root.join(INDEX2_TXT).exists() {
        Tiering::TwoTier
    } else {
        Tiering::OneTier
    };
    let store = crate::store::LocalStore::new(root);
    let (mut lines, mut added) = (Vec::new(), Vec::new());
    for f in files {
        let abs = std::path::absolute(&f).unwrap_or(f);
        let (key, path, _) = crate::publish::publish_file(&store, &abs, tiering, form).await?;
        lines.push(format!("{key}\t{path}"));
        added.push((key, abs.display().to_string()));
    }
    let pointer = form == crate::layout::Form::FilePtr;
    lines.push(record_add(root, &added, pointer, labels)?);
    Ok(lines)
}

/// Records `add`'s transaction for `added` (key and absolute source of each file, in order)
/// in the local store `root`; returns the line to print (`SymStore: transaction <id>`).
///
/// # Errors
/// [`AdminError`] for bad labels or I/O failures.
pub fn record_add(
    root: &Path,
    added: &[(crate::key::Key, String)],
    pointer: bool,
    labels: &Labels,
) -> Result<String, AdminError> {
    let entries: Vec<TxEntry> = added
        .iter()
        .map(|(k, src)| TxEntry {
            name: k.name().to_string(),
            index: k.index().to_string(),
            source: src.clone(),
        })
        .collect();
    let r = if pointer { Ref::Ptr } else { Ref::File };
    let now = chrono::Local::now();
    let now = chrono::DateTime::from_timestamp(now.timestamp(), 0)
        .map(|t| t.with_timezone(&chrono::Local))
        .unwrap_or(now);
    let id = transaction::record_add(root, &entries, r, labels, now)?;
    Ok(format!("transaction {}", transaction::format_id(id)))
}

/// `symcascade del <id>` on the local store `root`: returns what to print.
///
/// # Errors
/// [`AdminError`] for a bad or unknown id, malformed records or I/O failures.
pub fn del(root: &Path, id: &str) -> Result<String, AdminError> {
    let id = transaction::parse_id(id)?;
    let d = transaction::delete(root, id, chrono::Local::now())?;
    let mut out = String::new();
    for k in &d.removed {
        out += &format!("removed {k}\n");
    }
    out += &format!(
        "deleted transaction {} (history: {}), {} key folders removed\n",
        transaction::format_id(d.id),
        transaction::format_id(d.del_id),
        d.removed.len()
    );
    Ok(out)
}

/// Reads a policy from the CLI's `--unused-for` and `--max-size` texts.
///
/// # Errors
/// [`AdminError::BadSize`] for a size that cannot be read.
pub fn policy(
    unused_for: Option<std::time::Duration>,
    max_size: Option<&str>,
) -> Result<AgePolicy, AdminError> {
    Ok(AgePolicy {
        unused_for,
        max_size: max_size.map(super::parse_size).transpose()?,
    })
}
