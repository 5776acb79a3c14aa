//! Listings: `symcascade query <store>` (keys, forms and sizes) and `query --queue` (the
//! branch's miss queue).
//!
//! Data flow: [`super::scan_keys`] or the queue folders → rows ([`KeyRow`], [`QueueRow`]) →
//! a human table ([`keys_table`], [`queue_table`]) or JSON (the rows serialise as they are).

use super::KeyFolder;
use crate::folder::Folder;
use crate::layout::Form;
use crate::queue::{self, Lease, Record};
use serde::Serialize;

/// One key of a store listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyRow {
    /// File name.
    pub name: String,
    /// Index.
    pub index: String,
    /// Forms present, in SymSrv's probe order (`plain`, `compressed`, `file_ptr`).
    pub forms: Vec<Form>,
    /// Bytes of all files in the key folder.
    pub bytes: u64,
    /// Last use (latest write time), seconds since the Unix epoch.
    pub last_use: u64,
}

impl From<&KeyFolder> for KeyRow {
    fn from(k: &KeyFolder) -> KeyRow {
        let mut forms: Vec<Form> = k.files.iter().filter_map(|f| f.form).collect();
        let rank = |f: &Form| match f {
            Form::Plain => 0,
            Form::Compressed => 1,
            Form::FilePtr => 2,
        };
        forms.sort_by_key(rank);
        forms.dedup();
        KeyRow {
            name: k.name.clone(),
            index: k.index.clone(),
            forms,
            bytes: k.bytes(),
            last_use: secs(k.last_use()),
        }
    }
}

fn secs(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn form_name(f: Form) -> &'static str {
    match f {
        Form::Plain => "plain",
        Form::Compressed => "compressed",
        Form::FilePtr => "file.ptr",
    }
}

/// A text table of `rows` (`NAME INDEX FORMS BYTES LAST-USE`, last use as RFC 3339 UTC) and a
/// total line.
pub fn keys_table(rows: &[KeyRow]) -> String {
    let w_name = rows.iter().map(|r| r.name.len()).max().unwrap_or(0).max(4);
    let w_ix = rows.iter().map(|r| r.index.len()).max().unwrap_or(0).max(5);
    let mut out = format!(
        "{:w_name$}  {:w_ix$}  {:22}  {:>14}  LAST-USE\n",
        "NAME", "INDEX", "FORMS", "BYTES"
    );
    for r in rows {
        let forms: Vec<&str> = r.forms.iter().map(|f| form_name(*f)).collect();
        let forms = if forms.is_empty() {
            "-".to_string()
        } else {
            forms.join(",")
        };
        let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(r.last_use);
        out += &format!(
            "{:w_name$}  {:w_ix$}  {forms:22}  {:>14}  {}\n",
            r.name,
            r.index,
            r.bytes,
            humantime::format_rfc3339_seconds(when)
        );
    }
    let total: u64 = rows.iter().map(|r| r.bytes).sum();
    out += &format!("{} keys, {} bytes\n", rows.len(), total);
    out
}

/// One request record of the branch queue, with its lease if one is held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueRow {
    /// The record's file name in `000Cascade/requests/`.
    pub record: String,
    /// File name.
    pub name: String,
    /// Index.
    pub index: String,
    /// Agent id that wants it, or `any`.
    pub requester: String,
    /// When it was requested, seconds since the Unix epoch.
    pub requested: u64,
    /// The agent holding the key's lease (pulling it now), if any and not expired.
    pub leased_by: Option<String>,
    /// Why the record is unreadable (malformed or in progress), if so.
    pub error: Option<String>,
}

/// Lists the queue in `admin` (`<branch>/000Cascade`): every request record, oldest first,
/// with its current lease.
///
/// # Errors
/// [`super::AdminError::Store`] when the requests folder cannot be listed.
pub async fn queue_rows(admin: &Folder) -> Result<Vec<QueueRow>, super::AdminError> {
    let (requests, leases) = (admin.join(queue::REQUESTS), admin.join(queue::LEASES));
    let now = queue::now_secs();
    let mut rows = Vec::new();
    for file in requests.list().await? {
        let Some(bytes) = requests.read(&file).await? else {
            continue; // handled meanwhile
        };
        let mut row = QueueRow {
            record: file.clone(),
            name: String::new(),
            index: String::new(),
            requester: String::new(),
            requested: 0,
            leased_by: None,
            error: None,
        };
        match Record::parse(&bytes) {
            Ok((r, key)) => {
                let lease = leases.read(&queue::key_file(&key, "lease")).await?;
                row.leased_by = lease
                    .and_then(|b| serde_json::from_slice::<Lease>(&b).ok())
                    .filter(|l| l.expires > now)
                    .map(|l| l.holder);
                (row.name, row.index, row.requester, row.requested) =
                    (r.name, r.index, r.requester, r.requested);
            }
            Err(e) => row.error = Some(e.to_string()),
        }
        rows.push(row);
    }
    rows.sort_by(|a, b| (a.requested, &a.record).cmp(&(b.requested, &b.record)));
    Ok(rows)
}

/// A text table of queue rows (`NAME INDEX REQUESTER AGE LEASED-BY`) and a count line.
pub fn queue_table(rows: &[QueueRow], now: u64) -> String {
    let w_name = rows.iter().map(|r| r.name.len()).max().unwrap_or(0).max(4);
    let w_ix = rows.iter().map(|r| r.index.len()).max().unwrap_or(0).max(5);
    let mut out = format!(
        "{:w_name$}  {:w_ix$}  {:16}  {:>8}  LEASED-BY\n",
        "NAME", "INDEX", "REQUESTER", "AGE"
    );
    for r in rows {
        if let Some(e) = &r.error {
            out += &format!("{}: unreadable: {e}\n", r.record);
            continue;
        }
        let age = humantime::format_duration(std::time::Duration::from_secs(
            now.saturating_sub(r.requested),
        ));
        out += &format!(
            "{:w_name$}  {:w_ix$}  {:16}  {:>8}  {}\n",
            r.name,
            r.index,
            r.requester,
            age.to_string(),
            r.leased_by.as_deref().unwrap_or("-")
        );
    }
    out += &format!("{} queued\n", rows.len());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::KeyFile;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn rows_list_forms_in_probe_order_and_sum_sizes() {
        let f = |name: &str, form, bytes| KeyFile {
            name: name.into(),
            form,
            bytes,
            modified: UNIX_EPOCH + Duration::from_secs(bytes),
        };
        let k = KeyFolder {
            name: "a.pdb".into(),
            index: "ABC1".into(),
            dir: vec!["a.pdb".into(), "ABC1".into()],
            files: vec![
                f("file.ptr", Some(Form::FilePtr), 10),
                f("a.pdb", Some(Form::Plain), 100),
                f("a.pd_", Some(Form::Compressed), 50),
            ],
        };
        let r = KeyRow::from(&k);
        assert_eq!(r.forms, [Form::Plain, Form::Compressed, Form::FilePtr]);
        assert_eq!((r.bytes, r.last_use), (160, 100));
        let t = keys_table(&[r]);
        assert!(t.contains("plain,compressed,file.ptr"), "{t}");
        assert!(t.contains("1970-01-01T00:01:40Z"), "{t}");
        assert!(t.ends_with("1 keys, 160 bytes\n"), "{t}");
    }

    #[test]
    fn queue_table_shows_age_and_lease() {
        let row = QueueRow {
            record: "r.req".into(),
            name: "a.pdb".into(),
            index: "ABC1".into(),
            requester: "DESK-1".into(),
            requested: 1000,
            leased_by: Some("BRANCH-A".into()),
            error: None,
        };
        let t = queue_table(&[row], 1090);
        assert!(t.contains("1m 30s") && t.contains("BRANCH-A"), "{t}");
        assert!(t.ends_with("1 queued\n"), "{t}");
    }
}
