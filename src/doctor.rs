//! `symcascade doctor`: a preflight of every store of the chain, run as the identity the agent
//! will use (the service account): can it read, can it write (a probe file is created and
//! removed), how much room is left, how long a round trip takes; and, plainly, which tier
//! SymSrv-style cascading would silently skip and why.
//!
//! Data flow: config → `Setup::resolve` → per tier: a timed `stat` (read + latency),
//! `capabilities` (free space), and for tiers that must be written (all but the upstream) a
//! probe written and removed in `000Cascade/`. Permissions as Microsoft documents them for
//! symbol shares: the upstream needs Read; intermediate shares and the local folder need
//! Read/Change.

use crate::layout;
use crate::setup::{Setup, admin_folder};
use serde::Serialize;
use std::time::{Duration, Instant};

/// The verdict for one tier.
#[derive(Debug, Clone, Serialize)]
pub struct TierCheck {
    /// Store location.
    pub store: String,
    /// `local`, `branch`, `intermediate` or `upstream`.
    pub role: String,
    /// Reading works.
    pub readable: bool,
    /// Writing works (`None` for the upstream, which is only read).
    pub writable: Option<bool>,
    /// Free bytes, when the store tells.
    pub free_bytes: Option<u64>,
    /// Round trip of one lookup, milliseconds.
    pub latency_ms: Option<u64>,
    /// `true` when the cascade can use the tier as it must.
    pub ok: bool,
    /// Plain words: `ok`, `unreachable: …`, `would be skipped: not writable (…)`.
    pub verdict: String,
    /// How the store is reached and as whom: `local folder`, `built-in SMB client as DOM\bob
    /// (configured credentials)`, `Windows SMB client as this process's identity`, `HTTP`.
    pub reached_by: String,
}

/// How tier `i` of `setup`'s chain is reached, and with which identity (never a secret).
pub fn reached_by(setup: &Setup, i: usize) -> String {
    use crate::store::Transport;
    match setup.chain.tiers[i].store().describe().transport {
        Transport::Local => "local folder, as this process's identity".into(),
        Transport::OsSmb => {
            let who = crate::platform::process_identity(|k| std::env::var(k).ok())
                .unwrap_or_else(|| "this process's identity".into());
            format!(
                "Windows SMB client, as {who} (Kerberos/NTLM, signing, encryption and DFS as Windows negotiates them)"
            )
        }
        Transport::Smb => {
            let host = match &setup.locations[i] {
                crate::sympath::Location::Smb { host, .. } => host.as_str(),
                _ => "",
            };
            match setup.client.config().credentials_for(host) {
                Some(c) => match &c.domain {
                    Some(d) => format!(
                        "built-in SMB client as {d}\\{} (configured credentials)",
                        c.user
                    ),
                    None => format!("built-in SMB client as {} (configured credentials)", c.user),
                },
                None => "built-in SMB client, no credentials configured".into(),
            }
        }
        Transport::Http => "HTTP(S) client".into(),
        Transport::S3 => setup.objects.identity(crate::sympath::ObjectService::S3),
        Transport::Azure => setup.objects.identity(crate::sympath::ObjectService::Azure),
        _ => "no transport of this build".into(),
    }
}

/// Checks every tier of the agent's chain, each bounded by `timeout`.
pub async fn check(setup: &Setup, timeout: Duration) -> Vec<TierCheck> {
    let n = setup.chain.tiers.len();
    let mut out = Vec::new();
    for (i, tier) in setup.chain.tiers.iter().enumerate() {
        let store = tier.store();
        let role = crate::report::tier_role(i, n, setup.branch);
        let must_write = i + 1 < n && !setup.locations[i].is_http();
        let location = store.describe().location;
        let start = Instant::now();
        let read =
            tokio::time::timeout(timeout, store.stat(&layout::root_file(layout::PINGME_TXT))).await;
        let latency = start.elapsed().as_millis() as u64;
        let read_err = match read {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("no answer within {timeout:?}")),
        };
        if let Some(e) = read_err {
            out.push(TierCheck {
                reached_by: reached_by(setup, i),
                store: location,
                role: role.into(),
                readable: false,
                writable: None,
                free_bytes: None,
                latency_ms: None,
                ok: false,
                verdict: format!("unreachable: would be skipped ({e})"),
            });
            continue;
        }
        let free = tokio::time::timeout(timeout, store.capabilities())
            .await
            .ok()
            .and_then(Result::ok)
            .and_then(|c| c.free_bytes);
        let mut writable = None;
        let mut verdict = "ok".to_string();
        if must_write {
            let probe = format!("doctor-{}.probe", std::process::id());
            let w = match admin_folder(&setup.locations[i], &setup.client) {
                Some(f) => {
                    match tokio::time::timeout(timeout, f.create_new(&probe, b"symcascade doctor"))
                        .await
                    {
                        Ok(Ok(_)) => {
                            let _ = f.remove(&probe).await;
                            Ok(())
                        }
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(_) => Err(format!("no answer within {timeout:?}")),
                    }
                }
                None => Err("HTTP stores cannot be written".to_string()),
            };
            writable = Some(w.is_ok());
            if let Err(e) = w {
                let needs = if i == 0 {
                    "the local folder needs Read/Change"
                } else {
                    "an intermediate share needs Read/Change"
                };
                verdict = format!("would be skipped: not writable ({needs}; {e})");
            }
        }
        out.push(TierCheck {
            reached_by: reached_by(setup, i),
            store: location,
            role: role.into(),
            readable: true,
            writable,
            free_bytes: free,
            latency_ms: Some(latency),
            ok: verdict == "ok",
            verdict,
        });
    }
    out
}
