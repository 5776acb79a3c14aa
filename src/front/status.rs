//! `/status` (HTML for people) and `/status.json` (for scripts): the health verdict, the
//! agent's queue (key, requester, age, state, last error), reads in flight with bytes and
//! rate, recent transfers of the agent and the front in one list, per-tier hits and hit
//! ratio, WAN bytes read and saved, store health with its last error and since when, the
//! miss cache and request counters. The HTML page refreshes itself every 5 s (`?refresh=N`
//! sets the period, `?refresh=0` turns it off) and writes sizes, times and ages in human
//! units.
//!
//! Data flow: each request checks store health live (bounded), takes the agent's latest
//! status from memory when the agent runs beside the front (its queue), and snapshots the
//! process's shared activity (reads in flight, recent transfers) and metrics (traffic).

use super::Front;
use crate::metrics::Outcome;
use crate::report::{
    InFlight, Status as AgentStatus, StoreHealth, Traffic, Transfer, human_ago, human_span,
};
use crate::units::bytes as human_bytes;
use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse, Json, Response};
use serde::{Deserialize, Serialize};
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
    /// When this document was made, seconds since the epoch (the times below are too).
    pub now: u64,
    /// The store the front serves (the chain's downstream store).
    pub serving: String,
    /// One verdict (OK / DEGRADED / DOWN) and its reason, from the stores' health.
    pub health: Health,
    /// Each store of the chain: role, reachable, writable, free space, error, since when in
    /// this state, last error and when.
    pub stores: Vec<StoreHealth>,
    /// Keys in the miss cache.
    pub miss_cache_entries: usize,
    /// SymProxy `MissTimeout`, seconds.
    pub miss_timeout_secs: u64,
    /// Keys the front is looking up now.
    pub in_flight: Vec<String>,
    /// Symbol files being read out of stores now (agent and front), oldest first.
    pub transfers: Vec<InFlight>,
    /// Recent transfers of the agent and the front (`by` says which), newest first.
    pub recent: Vec<Transfer>,
    /// Per-tier hits and hit ratio, WAN bytes read and saved, bytes served.
    pub traffic: Traffic,
    /// Bandwidth caps in force and current rates (`[bandwidth]`).
    pub bandwidth: Option<crate::bandwidth::BandwidthStatus>,
    /// HTTP answers by outcome.
    pub requests: BTreeMap<&'static str, u64>,
    /// The replication agent's status (queue table, back-fills...), when it runs.
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

/// `/status`'s query: `refresh` = seconds between reloads (default 5, 0 = off).
#[derive(Debug, Deserialize)]
pub(super) struct PageQuery {
    refresh: Option<u64>,
}

/// Seconds between reloads of the HTML page when the query does not say.
const DEFAULT_REFRESH: u64 = 5;

async fn doc(front: &Front) -> StatusDoc {
    let stores = super::health(front).await;
    let (verdict, reason) = crate::report::verdict(&stores, None);
    let agent = front.agent_status.as_ref().map(|rx| rx.borrow().clone());
    StatusDoc {
        version: env!("CARGO_PKG_VERSION"),
        listen: front.listen.lock().expect("listen").map(|a| a.to_string()),
        uptime_secs: front.started.elapsed().as_secs(),
        now: crate::queue::now_secs(),
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
        transfers: front.activity.in_flight(),
        recent: front.activity.recent().into_iter().rev().collect(),
        traffic: front.metrics.traffic(),
        bandwidth: front.metrics.bandwidth(),
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

pub(super) async fn html(State(front): State<Arc<Front>>, q: Query<PageQuery>) -> Response {
    let refresh = q.refresh.unwrap_or(DEFAULT_REFRESH);
    Html(render(&doc(&front).await, refresh)).into_response()
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

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:1.5em 2em;color:#222;background:#fafafa}\
h1{margin:0 0 .2em;font-size:1.6em}h2{font-size:1.15em;margin:1.6em 0 .4em}\
.sub{color:#555;margin:.2em 0 1em}code{font-size:.92em}\
.verdict{font-size:1.25em;padding:.6em 1em;border-radius:6px;margin:.5em 0 1em}\
.v-ok{background:#e3f4e1;border-left:8px solid #2e7d32}.v-degraded{background:#fff4d6;border-left:8px solid #e09b00}\
.v-down{background:#fde2e1;border-left:8px solid #c62828}\
.cards{display:flex;flex-wrap:wrap;gap:.8em}.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.6em 1em;min-width:11em}\
.card .n{font-size:1.5em;font-weight:600}.card .l{color:#555;font-size:.9em}\
table{border-collapse:collapse;background:#fff;min-width:40%}td,th{border:1px solid #ddd;padding:.3em .6em;text-align:left;vertical-align:top}\
th{background:#f0f0f0}tr:nth-child(even) td{background:#fbfbfb}td.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}\
.bad{color:#b00}.muted{color:#777}";

/// The HTML page; `refresh` seconds between reloads (0: none).
fn render(d: &StatusDoc, refresh: u64) -> String {
    let mut h = String::new();
    head(&mut h, d, refresh);
    summary(&mut h, d);
    if let Some(a) = &d.agent {
        queue(&mut h, a, d.now);
    }
    in_flight(&mut h, d);
    recent(&mut h, d);
    tiers(&mut h, &d.traffic);
    bandwidth(&mut h, d);
    stores(&mut h, d);
    counters(&mut h, d);
    h.push_str("</body></html>\n");
    h
}

/// `[bandwidth]`: the caps in force (and the window that sets them) and the current rates.
fn bandwidth(h: &mut String, d: &StatusDoc) {
    let Some(b) = &d.bandwidth else {
        return;
    };
    let cap = |c: Option<u64>| match c {
        Some(v) => format!("{:.1} Mbit/s", v as f64 / 1e6),
        None => "unlimited".into(),
    };
    let _ = write!(
        h,
        "<h2>Bandwidth</h2><p id=\"bandwidth\">background {bc} (now {br:.1} Mbit/s) · \
         interactive {ic} (now {ir:.1} Mbit/s){w}</p>",
        bc = cap(b.background_cap_bps),
        br = b.background_bps as f64 / 1e6,
        ic = cap(b.interactive_cap_bps),
        ir = b.interactive_bps as f64 / 1e6,
        w = b
            .window
            .as_ref()
            .map(|w| format!(" · window <code>{}</code>", esc(w)))
            .unwrap_or_default(),
    );
}

/// The verdict's word: `OK`, `DEGRADED`, `DOWN`.
fn verdict_word(d: &StatusDoc) -> String {
    serde_json::to_value(d.health.verdict)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

/// Head, title line and the verdict banner.
fn head(h: &mut String, d: &StatusDoc, refresh: u64) {
    let word = verdict_word(d);
    let meta = match refresh {
        0 => String::new(),
        n => format!("<meta http-equiv=\"refresh\" content=\"{n}\">"),
    };
    let toggle = match refresh {
        0 => "auto-refresh off (<a href=\"status\">turn on</a>)".to_string(),
        n => format!("refreshes every {n} s (<a href=\"status?refresh=0\">stop</a>)"),
    };
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">{meta}\
         <title>symcascade: {w}</title><style>{STYLE}</style></head><body>\
         <h1>symcascade {v}</h1><p class=\"sub\">Serving <code>{s}</code> on {l}, up {up}; \
         {toggle} · <a href=\"status.json\">JSON</a> · <a href=\"metrics\">metrics</a></p>\
         <p id=\"health\" class=\"verdict v-{c}\"><strong>{w}</strong>: {r}</p>",
        w = esc(&word),
        v = esc(d.version),
        s = esc(&d.serving),
        l = esc(d.listen.as_deref().unwrap_or("?")),
        up = human_span(d.uptime_secs),
        c = word.to_ascii_lowercase(),
        r = esc(&d.health.reason),
    );
}

/// The numbers an admin looks at first, as cards.
fn summary(h: &mut String, d: &StatusDoc) {
    let t = &d.traffic;
    let answers: u64 = t.tiers.iter().map(|x| x.hits).sum::<u64>() + t.misses;
    let near: u64 = t.tiers.iter().filter(|x| !x.wan).map(|x| x.hits).sum();
    let ratio = match answers {
        0 => "–".to_string(),
        n => format!("{:.0}%", near as f64 * 100.0 / n as f64),
    };
    let mut cards = vec![
        (
            "wan-saved",
            human_bytes(t.wan_bytes_saved),
            "WAN bytes saved",
        ),
        ("wan-read", human_bytes(t.wan_bytes_read), "WAN bytes read"),
        ("served", human_bytes(t.bytes_served), "served to debuggers"),
        ("near-ratio", ratio, "answered this side of the WAN"),
    ];
    if let Some(a) = &d.agent {
        let oldest = a.queue_oldest_age_secs.map(human_span);
        cards.push(("queue-depth", a.queue_depth.to_string(), "requests queued"));
        cards.push((
            "queue-oldest",
            oldest.unwrap_or_else(|| "–".into()),
            "oldest request waiting",
        ));
    }
    h.push_str("<div class=\"cards\">");
    for (id, n, label) in cards {
        let _ = write!(
            h,
            "<div class=\"card\" id=\"{id}\"><div class=\"n\">{}</div><div class=\"l\">{label}</div></div>",
            esc(&n)
        );
    }
    h.push_str("</div>");
}

/// A table with `head` columns and already-escaped `rows`; `empty` when there are none.
fn table(h: &mut String, id: &str, head: &[&str], rows: Vec<Vec<String>>, empty: &str) {
    if rows.is_empty() {
        let _ = write!(h, "<p id=\"{id}\" class=\"muted\">{}</p>", esc(empty));
        return;
    }
    let _ = write!(h, "<table id=\"{id}\"><tr>");
    for c in head {
        let _ = write!(h, "<th>{c}</th>");
    }
    h.push_str("</tr>");
    for r in rows {
        h.push_str("<tr>");
        for c in r {
            let class = if c.starts_with(|ch: char| ch.is_ascii_digit()) {
                " class=\"num\""
            } else {
                ""
            };
            let _ = write!(h, "<td{class}>{c}</td>");
        }
        h.push_str("</tr>");
    }
    h.push_str("</table>");
}

/// The agent's queue: the oldest requests with their state and last error.
fn queue(h: &mut String, a: &AgentStatus, now: u64) {
    let _ = write!(
        h,
        "<h2>Queue of agent {}: {} request(s){}</h2>",
        esc(&a.agent),
        a.queue_depth,
        if a.queue_depth > a.queue.len() && !a.queue.is_empty() {
            format!(", the {} oldest shown", a.queue.len())
        } else {
            String::new()
        }
    );
    let rows = a
        .queue
        .iter()
        .map(|e| {
            let mut err = esc(e.last_error.as_deref().unwrap_or(""));
            if let Some(t) = e.next_try.filter(|t| *t > now) {
                let _ = write!(
                    err,
                    " <span class=\"muted\">(next try {})</span>",
                    human_ago(t, now)
                );
            }
            vec![
                format!("<code>{}</code>", esc(&e.key)),
                esc(&e.requester),
                human_span(now.saturating_sub(e.requested)),
                e.state.as_str().into(),
                err,
            ]
        })
        .collect();
    let head = ["key", "requester", "age", "state", "last error"];
    table(h, "queue", &head, rows, "The queue is empty.");
}

/// `by`, or a dash when unknown.
fn who(by: &str, requester: Option<&str>) -> String {
    match (by, requester) {
        ("", _) => "–".into(),
        (b, Some(r)) => format!("{} <span class=\"muted\">for {}</span>", esc(b), esc(r)),
        (b, None) => esc(b),
    }
}

/// Reads under way: bytes done of total, rate, time running.
fn in_flight(h: &mut String, d: &StatusDoc) {
    h.push_str("<h2>In flight</h2>");
    let rows = d
        .transfers
        .iter()
        .map(|t| {
            let done = match t.bytes_total {
                Some(n) if n > 0 => format!(
                    "{} of {} ({:.0}%)",
                    human_bytes(t.bytes_done),
                    human_bytes(n),
                    t.bytes_done as f64 * 100.0 / n as f64
                ),
                _ => human_bytes(t.bytes_done),
            };
            vec![
                format!("<code>{}</code>", esc(&t.key)),
                who(&t.by, t.requester.as_deref()),
                format!("<code>{}</code>", esc(&t.store)),
                done,
                format!("{}/s", human_bytes(t.bytes_per_sec)),
                human_span(t.elapsed_ms / 1000),
            ]
        })
        .collect();
    let head = ["key", "by", "from", "bytes", "rate", "running for"];
    table(h, "in-flight", &head, rows, "Nothing is being read now.");
}

/// Milliseconds for people: `250 ms`, `1.5 s`, `2 min 5 s`.
fn human_ms(ms: u64) -> String {
    match ms {
        0..1000 => format!("{ms} ms"),
        1000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        _ => human_span(ms / 1000),
    }
}

/// Recent transfers of the agent and the front, newest first.
fn recent(h: &mut String, d: &StatusDoc) {
    h.push_str("<h2>Recent transfers</h2>");
    let rows = d
        .recent
        .iter()
        .map(|t| {
            vec![
                human_ago(t.at, d.now),
                format!("<code>{}</code>", esc(&t.key)),
                who(&t.by, t.requester.as_deref()),
                format!("<code>{}</code>", esc(&t.found_in)),
                esc(&t.written.join(", ")),
                human_bytes(t.bytes_read),
                human_ms(t.ms),
            ]
        })
        .collect();
    let head = [
        "when",
        "key",
        "by",
        "found in",
        "written to",
        "size",
        "took",
    ];
    table(h, "recent", &head, rows, "No transfer yet.");
}

/// Hits and bytes per tier, and which side of the WAN each is on.
fn tiers(h: &mut String, t: &Traffic) {
    let _ = write!(
        h,
        "<h2>Tiers</h2><p>WAN bytes read <strong>{}</strong>; WAN bytes saved <strong>{}</strong> \
         (delivered to debuggers and stores without crossing the WAN); not read again because \
         an interrupted transfer resumed {}; misses {}.</p>",
        human_bytes(t.wan_bytes_read),
        human_bytes(t.wan_bytes_saved),
        human_bytes(t.wan_bytes_resumed),
        t.misses
    );
    let rows = t
        .tiers
        .iter()
        .enumerate()
        .map(|(i, x)| {
            vec![
                i.to_string(),
                esc(&x.role),
                format!("<code>{}</code>", esc(&x.store)),
                if x.wan { "beyond the WAN" } else { "this side" }.into(),
                x.hits.to_string(),
                x.hit_ratio
                    .map(|r| format!("{:.1}%", r * 100.0))
                    .unwrap_or_else(|| "–".into()),
                human_bytes(x.bytes_read),
            ]
        })
        .collect();
    let head = [
        "tier",
        "role",
        "store",
        "side",
        "hits",
        "hit ratio",
        "bytes read",
    ];
    table(h, "tiers", &head, rows, "No chain.");
}

/// Store health: state and since when, writable, free space, last error and when.
fn stores(h: &mut String, d: &StatusDoc) {
    h.push_str("<h2>Stores</h2>");
    let rows = d
        .stores
        .iter()
        .map(|s| {
            let since = s
                .since
                .map(|t| {
                    format!(
                        " <span class=\"muted\">since {}</span>",
                        human_ago(t, d.now)
                    )
                })
                .unwrap_or_default();
            let state = match s.reachable {
                true => format!("reachable{since}"),
                false => format!("<span class=\"bad\">UNREACHABLE</span>{since}"),
            };
            let err = match (&s.last_error, s.last_error_at) {
                (Some(e), Some(t)) => format!(
                    "<span class=\"bad\">{}</span> <span class=\"muted\">({})</span>",
                    esc(e),
                    human_ago(t, d.now)
                ),
                (Some(e), None) => format!("<span class=\"bad\">{}</span>", esc(e)),
                _ => String::new(),
            };
            vec![
                format!("<code>{}</code>", esc(&s.store)),
                esc(&s.role),
                state,
                if s.writable { "yes" } else { "no" }.into(),
                s.free_bytes.map(human_bytes).unwrap_or_default(),
                err,
            ]
        })
        .collect();
    let head = ["store", "role", "state", "writable", "free", "last error"];
    table(h, "stores", &head, rows, "No store.");
}

/// Back-fills, the miss cache and the front's answers by outcome.
fn counters(h: &mut String, d: &StatusDoc) {
    if let Some(a) = &d.agent {
        let _ = write!(h, "<h2>Back-fills pending: {}</h2>", a.backfills.len());
        let rows = a
            .backfills
            .iter()
            .map(|b| {
                let key = format!("{}/{}", b.name, b.index);
                vec![
                    format!("<code>{}</code>", esc(&key)),
                    format!("<code>{}</code>", esc(&b.store)),
                ]
            })
            .collect();
        table(h, "backfills", &["key", "store"], rows, "None.");
    }
    let _ = write!(
        h,
        "<h2>HTTP answers</h2><p>Miss cache: {} key(s); MissTimeout {}.</p>",
        d.miss_cache_entries,
        human_span(d.miss_timeout_secs)
    );
    let rows = d
        .requests
        .iter()
        .filter(|(_, v)| **v > 0)
        .map(|(k, v)| vec![esc(k), v.to_string()])
        .collect();
    table(
        h,
        "requests",
        &["outcome", "requests"],
        rows,
        "No request yet.",
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{QueueEntry, QueueState, TierTraffic};

    fn sample() -> StatusDoc {
        StatusDoc {
            version: "0",
            listen: None,
            uptime_secs: 7500,
            now: 10_000,
            serving: "<script>".into(),
            health: Health {
                verdict: crate::report::Verdict::Degraded,
                reason: "branch <b> unreachable".into(),
            },
            stores: vec![StoreHealth {
                store: r"\\MainOffice\Symbols".into(),
                role: "upstream".into(),
                error: Some("host down".into()),
                since: Some(9_820),
                last_error: Some("host down".into()),
                last_error_at: Some(9_990),
                ..StoreHealth::default()
            }],
            miss_cache_entries: 0,
            miss_timeout_secs: 300,
            in_flight: vec!["a&b".into()],
            transfers: vec![InFlight {
                key: "a.pdb/1".into(),
                store: "m".into(),
                by: "front".into(),
                requester: None,
                bytes_done: 3 << 20,
                bytes_total: Some(4 << 20),
                bytes_per_sec: 1 << 20,
                started: 9_997,
                elapsed_ms: 3_000,
            }],
            recent: vec![],
            traffic: Traffic {
                tiers: vec![TierTraffic {
                    store: "/sym".into(),
                    role: "local".into(),
                    hits: 3,
                    hit_ratio: Some(0.75),
                    ..TierTraffic::default()
                }],
                misses: 1,
                wan_bytes_saved: 5 << 20,
                wan_bytes_resumed: 0,
                ..Traffic::default()
            },
            bandwidth: Some(crate::bandwidth::BandwidthStatus {
                background_cap_bps: Some(2_000_000),
                window: Some("Mon-Fri 08:00-18:00".into()),
                background_bps: 1_900_000,
                ..Default::default()
            }),
            requests: BTreeMap::new(),
            agent: Some(AgentStatus {
                agent: "DESK-1".into(),
                queue_depth: 1,
                queue: vec![QueueEntry {
                    key: "x.pdb/2".into(),
                    requester: "any".into(),
                    requested: 9_700,
                    state: QueueState::WaitingForRetry,
                    last_error: Some("main <down>".into()),
                    next_try: Some(10_025),
                }],
                ..AgentStatus::default()
            }),
        }
    }

    #[test]
    fn html_escapes_and_speaks_human_units() {
        let h = render(&sample(), 5);
        assert!(h.contains("&lt;script&gt;"), "{h}");
        assert!(!h.contains("<script>"));
        assert!(
            h.contains("<strong>DEGRADED</strong>: branch &lt;b&gt; unreachable"),
            "{h}"
        );
        for want in [
            "up 2 h 5 min",
            "<meta http-equiv=\"refresh\" content=\"5\">",
            "5.0 MiB</div><div class=\"l\">WAN bytes saved",
            "<td>waiting for retry</td>",
            "main &lt;down&gt; <span class=\"muted\">(next try in 25 s)</span>",
            "5 min",
            "3.0 MiB of 4.0 MiB (75%)",
            "1.0 MiB/s",
            "75.0%",
            "since 3 min ago",
            "(10 s ago)",
            "background 2.0 Mbit/s (now 1.9 Mbit/s) · interactive unlimited (now 0.0 Mbit/s) · window <code>Mon-Fri 08:00-18:00</code>",
        ] {
            assert!(h.contains(want), "{want} in {h}");
        }
        let off = render(&sample(), 0);
        assert!(!off.contains("http-equiv") && off.contains("auto-refresh off"));
    }
}
