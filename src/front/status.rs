//! `/status` (HTML for people) and `/status.json` (for scripts): stores and their health, the
//! agent's queue, the miss cache, transfers in flight and recent ones, request counters.
//!
//! Data flow: each request checks store health live (bounded), takes the agent's latest
//! status from memory when the agent runs beside the front, and snapshots the front's own state.

use super::Front;
use crate::metrics::Outcome;
use crate::report::{Status as AgentStatus, StoreHealth, Transfer};
use axum::extract::State;
use axum::response::{Html, IntoResponse, Json, Response};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

/// The `/status.json` document.
#[derive(Debug, Serialize)]
pub struct StatusDoc {
    /// symcascade version.
    pub version: &'static str,
    /// Address the front listens on.
    pub listen: Option<String>,
    /// Seconds since the front started.
    pub uptime_secs: u64,
    /// The store the front serves (the chain's downstream store).
    pub serving: String,
    /// One verdict (OK / DEGRADED / DOWN) and its reason, from the stores' health.
    pub health: Health,
    /// Each store of the chain: role, reachable, writable, free space, error.
    pub stores: Vec<StoreHealth>,
    /// Keys in the miss cache.
    pub miss_cache_entries: usize,
    /// SymProxy `MissTimeout`, seconds.
    pub miss_timeout_secs: u64,
    /// Keys being fetched now.
    pub in_flight: Vec<String>,
    /// Recent transfers, newest last.
    pub recent: Vec<Transfer>,
    /// HTTP answers by outcome.
    pub requests: BTreeMap<&'static str, u64>,
    /// The replication agent's status (queue depth, back-fills...), when it runs.
    pub agent: Option<AgentStatus>,
}

/// The verdict of [`crate::report::verdict`] with its reason.
#[derive(Debug, Serialize)]
pub struct Health {
    /// OK, DEGRADED or DOWN.
    pub verdict: crate::report::Verdict,
    /// Why, naming the first store at fault.
    pub reason: String,
}

async fn doc(front: &Front) -> StatusDoc {
    let stores = super::health(front).await;
    let (verdict, reason) = crate::report::verdict(&stores, None);
    let agent = front.agent_status.as_ref().map(|rx| rx.borrow().clone());
    StatusDoc {
        version: env!("CARGO_PKG_VERSION"),
        listen: front.listen.lock().expect("listen").map(|a| a.to_string()),
        uptime_secs: front.started.elapsed().as_secs(),
        serving: front.serving.store().describe().location,
        health: Health { verdict, reason },
        stores,
        miss_cache_entries: front.misses.lock().expect("misses").len(),
        miss_timeout_secs: front.opts.miss_timeout.as_secs(),
        in_flight: front
            .inflight
            .lock()
            .expect("inflight")
            .keys()
            .map(|k| k.to_string())
            .collect(),
        recent: front
            .recent
            .lock()
            .expect("recent")
            .iter()
            .cloned()
            .collect(),
        requests: Outcome::ALL
            .iter()
            .map(|o| (o.as_str(), front.metrics.requests(*o)))
            .collect(),
        agent,
    }
}

pub(super) async fn json(State(front): State<Arc<Front>>) -> Response {
    Json(doc(&front).await).into_response()
}

pub(super) async fn html(State(front): State<Arc<Front>>) -> Response {
    Html(render(&doc(&front).await)).into_response()
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '&' => o.push_str("&amp;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn render(d: &StatusDoc) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>symcascade status</title>\
         <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left}}.bad{{color:#b00}}</style>\
         </head><body><h1>symcascade {}</h1><p>Serving <code>{}</code> on {} for {} s. \
         <a href=\"status.json\">JSON</a> · <a href=\"metrics\">metrics</a></p>",
        esc(d.version),
        esc(&d.serving),
        esc(d.listen.as_deref().unwrap_or("?")),
        d.uptime_secs
    );
    let word = serde_json::to_value(d.health.verdict)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default();
    let _ = write!(
        h,
        "<p id=\"health\" class=\"{}\"><strong>{}</strong>: {}</p>",
        if word == "OK" { "" } else { "bad" },
        esc(&word),
        esc(&d.health.reason)
    );
    h.push_str("<h2>Stores</h2><table><tr><th>store</th><th>role</th><th>readable</th><th>writable</th><th>free</th><th>error</th></tr>");
    for s in &d.stores {
        let _ = write!(
            h,
            "<tr><td><code>{}</code></td><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td><td class=\"bad\">{}</td></tr>",
            esc(&s.store),
            esc(&s.role),
            if s.reachable { "" } else { "bad" },
            if s.reachable { "yes" } else { "no" },
            if s.writable { "yes" } else { "no" },
            s.free_bytes
                .map(|b| format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64))
                .unwrap_or_default(),
            esc(s.error.as_deref().unwrap_or(""))
        );
    }
    h.push_str("</table><h2>Requests</h2><table>");
    for (k, v) in &d.requests {
        let _ = write!(h, "<tr><td>{}</td><td>{v}</td></tr>", esc(k));
    }
    let _ = write!(
        h,
        "</table><h2>Miss cache</h2><p>{} key(s); MissTimeout {} s.</p><h2>In flight</h2><ul>",
        d.miss_cache_entries, d.miss_timeout_secs
    );
    for k in &d.in_flight {
        let _ = write!(h, "<li><code>{}</code></li>", esc(k));
    }
    h.push_str("</ul><h2>Recent transfers</h2><table><tr><th>key</th><th>found in</th><th>written to</th><th>bytes</th><th>ms</th></tr>");
    for t in d.recent.iter().rev() {
        let _ = write!(
            h,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&t.key),
            esc(&t.found_in),
            esc(&t.written.join(", ")),
            t.bytes_read,
            t.ms
        );
    }
    h.push_str("</table>");
    if let Some(a) = &d.agent {
        let _ = write!(
            h,
            "<h2>Agent {}</h2><p>Queue depth {}, in flight {}, pending back-fills {}, lookups {}, hits {}, misses {}.</p>",
            esc(&a.agent),
            a.queue_depth,
            a.in_flight,
            a.backfills.len(),
            a.lookups,
            a.hits,
            a.misses
        );
    }
    h.push_str("</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escapes_store_names() {
        let d = StatusDoc {
            version: "0",
            listen: None,
            uptime_secs: 1,
            serving: "<script>".into(),
            health: Health {
                verdict: crate::report::Verdict::Degraded,
                reason: "branch <b> unreachable".into(),
            },
            stores: vec![],
            miss_cache_entries: 0,
            miss_timeout_secs: 300,
            in_flight: vec!["a&b".into()],
            recent: vec![],
            requests: BTreeMap::new(),
            agent: None,
        };
        let h = render(&d);
        assert!(h.contains("&lt;script&gt;") && h.contains("a&amp;b"));
        assert!(
            h.contains("<strong>DEGRADED</strong>: branch &lt;b&gt; unreachable"),
            "{h}"
        );
        assert!(!h.contains("<script>"));
    }
}
