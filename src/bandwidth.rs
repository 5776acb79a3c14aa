//! Bandwidth caps for background transfers, with schedule windows (issue #17, item 1).
//!
//! Semantics follow BITS' group policy ("Limit the maximum network bandwidth for BITS
//! background transfers"): background transfers are capped, the cap depends on the local
//! day and hour through schedule windows, and foreground (interactive) transfers are not
//! capped unless asked to be. Here *background* is everything the agent does (queue records,
//! `prefetch` manifests, back-fills) and *interactive* is the HTTP front serving a waiting
//! client. Reads are told apart by a task-local [`Priority`] that the agent sets around its
//! work ([`in_background`]); reads of tasks that set none (the front's lookups run in their
//! own spawned tasks) are interactive.
//!
//! Data flow: config `[bandwidth]` → [`BandwidthSection`] → [`Policy::parse`] (checked at
//! load) → [`Bandwidth`] (one `async-speed-limit` limiter per class, shared by every read of
//! the class) → the remote stores' wrapper (`store::limited`) reads through
//! [`Bandwidth::limit`]; the daemon calls [`Bandwidth::tick`] about once a second, which sets
//! the caps of the window in force (live: running transfers change rate) and measures the
//! rates shown by `status` and `/metrics`.
//!
//! Rates are written `<number><unit>/s` with `bit`, `kbit`, `Mbit`, `Gbit` (powers of 1000,
//! bits), `B`, `kB`/`KB`, `MB`, `GB` (powers of 1000, bytes) or `KiB`, `MiB`, `GiB` (powers of
//! 1024, bytes), or `unlimited`. Days are `Mon`…`Sun`, as ranges (`Mon-Fri`, wrapping
//! `Fri-Mon`) and lists (`Mon-Fri,Sun`); hours are `HH:MM-HH:MM` in local time, end excluded;
//! an end before the start runs past midnight (the part after midnight belongs to the start
//! day's window).

use chrono::{Datelike, NaiveDateTime, Timelike};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// `[bandwidth]` as written in the config file (checked by [`Policy::parse`]).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BandwidthSection {
    /// Cap of background transfers outside any window, e.g. `"4Mbit/s"`. Default: none.
    #[serde(default)]
    pub background: Option<String>,
    /// Cap of interactive transfers outside any window. Default: none (exempt).
    #[serde(default)]
    pub interactive: Option<String>,
    /// Schedule windows; the first that contains the local time sets the caps it names.
    #[serde(default)]
    pub windows: Vec<WindowSection>,
}

/// One `[[bandwidth.windows]]` entry as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSection {
    /// Days, e.g. `"Mon-Fri"`. Default: every day.
    #[serde(default)]
    pub days: Option<String>,
    /// Local hours, e.g. `"08:00-18:00"`.
    pub hours: String,
    /// Background cap inside the window (else the section's).
    #[serde(default)]
    pub background: Option<String>,
    /// Interactive cap inside the window (else the section's).
    #[serde(default)]
    pub interactive: Option<String>,
}

/// A config value of `[bandwidth]` that cannot work: the key and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("key `{key}`: {reason}")]
pub struct BandwidthError {
    /// The key, e.g. `bandwidth.windows[0].hours`.
    pub key: String,
    /// Why, with what is accepted.
    pub reason: String,
}

/// A transfer rate in bytes per second; `None` where used means unlimited.
pub type BytesPerSec = f64;

/// Parses a rate (`"4Mbit/s"`, `"500KiB/s"`, `"unlimited"`) into bytes per second (`None` for
/// unlimited).
///
/// # Errors
/// A message naming the text and the accepted units.
pub fn parse_rate(text: &str) -> Result<Option<BytesPerSec>, String> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("unlimited") {
        return Ok(None);
    }
    let bad = || {
        format!(
            "{text:?} is not a rate: write e.g. \"4Mbit/s\" or \"500KiB/s\" (bit, kbit, Mbit, Gbit, B, kB, MB, GB, KiB, MiB, GiB per second) or \"unlimited\""
        )
    };
    let body = t.strip_suffix("/s").ok_or_else(bad)?;
    let split = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(bad)?;
    let n: f64 = body[..split].parse().map_err(|_| bad())?;
    let unit = match body[split..].trim() {
        "bit" => 1.0 / 8.0,
        "kbit" | "Kbit" => 1e3 / 8.0,
        "Mbit" => 1e6 / 8.0,
        "Gbit" => 1e9 / 8.0,
        "B" => 1.0,
        "kB" | "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    let rate = n * unit;
    if !(rate.is_finite() && rate >= 1.0) {
        return Err(format!(
            "{text:?}: a cap must be at least 1 byte per second"
        ));
    }
    Ok(Some(rate))
}

const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

fn day_index(s: &str) -> Option<u8> {
    DAYS.iter()
        .position(|d| d.eq_ignore_ascii_case(s.trim()))
        .map(|i| i as u8)
}

/// Parses days (`"Mon-Fri"`, `"Fri-Mon"`, `"Sat,Sun"`) into a bit set, bit 0 = Monday.
///
/// # Errors
/// A message naming the part that is not a day or range.
pub fn parse_days(text: &str) -> Result<u8, String> {
    let mut set = 0u8;
    for part in text.split(',') {
        let bad = || format!("{part:?} is not a day or a range of days (Mon, Tue, … Sun; Mon-Fri)");
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (day_index(a).ok_or_else(bad)?, day_index(b).ok_or_else(bad)?),
            None => {
                let d = day_index(part).ok_or_else(bad)?;
                (d, d)
            }
        };
        let mut d = a;
        loop {
            set |= 1 << d;
            if d == b {
                break;
            }
            d = (d + 1) % 7;
        }
    }
    Ok(set)
}

fn parse_hm(s: &str) -> Option<u32> {
    let (h, m) = s.trim().split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 24 && m < 60 && (h < 24 || m == 0) && s.trim().len() == 5).then_some(h * 60 + m)
}

/// Parses hours `"HH:MM-HH:MM"` into minutes since midnight (start, end); `24:00` is the end
/// of the day.
///
/// # Errors
/// A message naming the text when it is not two times or they are equal.
pub fn parse_hours(text: &str) -> Result<(u32, u32), String> {
    let bad = || {
        format!("{text:?} is not hours: write \"HH:MM-HH:MM\" in local time, e.g. \"08:00-18:00\"")
    };
    let (a, b) = text.split_once('-').ok_or_else(bad)?;
    let (a, b) = (parse_hm(a).ok_or_else(bad)?, parse_hm(b).ok_or_else(bad)?);
    if a == b || a == 24 * 60 {
        return Err(format!("{text:?}: the window is empty"));
    }
    Ok((a, b))
}

/// A checked schedule window.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// Days as a bit set, bit 0 = Monday.
    pub days: u8,
    /// Start, minutes since local midnight.
    pub start: u32,
    /// End (excluded), minutes since local midnight; before `start` when past midnight.
    pub end: u32,
    /// Background cap in the window (`None`: the section's).
    pub background: Option<Option<BytesPerSec>>,
    /// Interactive cap in the window (`None`: the section's).
    pub interactive: Option<Option<BytesPerSec>>,
    /// The window as written (`Mon-Fri 08:00-18:00`), for status.
    pub label: String,
}

impl Window {
    /// Whether local time `t` falls into the window.
    pub fn contains(&self, t: NaiveDateTime) -> bool {
        let day = t.weekday().num_days_from_monday() as u8;
        let prev = (day + 6) % 7;
        let m = t.hour() * 60 + t.minute();
        let on = |d: u8| self.days & (1 << d) != 0;
        if self.start < self.end {
            on(day) && (self.start..self.end).contains(&m)
        } else {
            (on(day) && m >= self.start) || (on(prev) && m < self.end)
        }
    }
}

/// The checked `[bandwidth]` section.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policy {
    /// Background cap outside windows (bytes/s; `None` = unlimited).
    pub background: Option<BytesPerSec>,
    /// Interactive cap outside windows.
    pub interactive: Option<BytesPerSec>,
    /// Windows in the order written; the first that contains the time applies.
    pub windows: Vec<Window>,
}

/// The caps in force at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Caps {
    /// Background cap, bytes/s (`None`: unlimited).
    pub background: Option<BytesPerSec>,
    /// Interactive cap, bytes/s (`None`: unlimited).
    pub interactive: Option<BytesPerSec>,
    /// The window in force (its label), if any.
    pub window: Option<String>,
}

impl Policy {
    /// Checks a `[bandwidth]` section.
    ///
    /// # Errors
    /// [`BandwidthError`] naming the key (`bandwidth.background`,
    /// `bandwidth.windows[1].days`, …) and the reason.
    pub fn parse(s: &BandwidthSection) -> Result<Policy, BandwidthError> {
        let err = |key: String| move |reason: String| BandwidthError { key, reason };
        let rate = |key: &str, v: &Option<String>| -> Result<Option<Option<f64>>, BandwidthError> {
            v.as_deref()
                .map(|t| parse_rate(t).map_err(err(format!("bandwidth.{key}"))))
                .transpose()
        };
        let mut windows = Vec::new();
        for (i, w) in s.windows.iter().enumerate() {
            let days = match &w.days {
                Some(d) => parse_days(d).map_err(err(format!("bandwidth.windows[{i}].days")))?,
                None => 0x7f,
            };
            let (start, end) =
                parse_hours(&w.hours).map_err(err(format!("bandwidth.windows[{i}].hours")))?;
            let background = rate(&format!("windows[{i}].background"), &w.background)?;
            let interactive = rate(&format!("windows[{i}].interactive"), &w.interactive)?;
            if background.is_none() && interactive.is_none() {
                return Err(err(format!("bandwidth.windows[{i}]"))(
                    "a window must set `background` or `interactive`".into(),
                ));
            }
            let label = format!("{} {}", w.days.as_deref().unwrap_or("Mon-Sun"), w.hours);
            windows.push(Window {
                days,
                start,
                end,
                background,
                interactive,
                label,
            });
        }
        Ok(Policy {
            background: rate("background", &s.background)?.flatten(),
            interactive: rate("interactive", &s.interactive)?.flatten(),
            windows,
        })
    }

    /// The caps in force at local time `t`.
    pub fn caps_at(&self, t: NaiveDateTime) -> Caps {
        match self.windows.iter().find(|w| w.contains(t)) {
            Some(w) => Caps {
                background: w.background.unwrap_or(self.background),
                interactive: w.interactive.unwrap_or(self.interactive),
                window: Some(w.label.clone()),
            },
            None => Caps {
                background: self.background,
                interactive: self.interactive,
                window: None,
            },
        }
    }
}

/// Which class a read belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Priority {
    /// A client is waiting (the HTTP front): exempt unless `interactive` is set.
    #[default]
    Interactive,
    /// The agent's queue, prefetch and back-fills: capped by `background`.
    Background,
}

tokio::task_local! {
    static PRIORITY: Priority;
    static PROMOTION: Promotion;
}

/// A switch that promotes the background reads of one transfer to the interactive class
/// while they run: set when a client comes to wait for a file the agent is pulling, so that a
/// person is not served at the background cap and the file still crosses the WAN once.
pub type Promotion = Arc<std::sync::atomic::AtomicBool>;

/// Runs `f` with `p` as the promotion switch of the reads it opens (see [`Promotion`]).
pub async fn promotable<F: std::future::Future>(p: Promotion, f: F) -> F::Output {
    PROMOTION.scope(p, f).await
}

/// Runs `f` with background priority: the remote reads it opens are capped by `background`.
pub async fn in_background<F: std::future::Future>(f: F) -> F::Output {
    PRIORITY.scope(Priority::Background, f).await
}

/// The current task's priority ([`Priority::Interactive`] unless [`in_background`] set it).
pub fn current_priority() -> Priority {
    PRIORITY.try_with(|p| *p).unwrap_or_default()
}

/// A reader under the cap of its class (see [`Bandwidth::limit`]): after each read it takes
/// the bytes from its class's token bucket and, before the next, waits as long as the bucket
/// says. A promoted background reader takes them from the interactive bucket instead.
pub struct Capped<R> {
    inner: R,
    class: Priority,
    promoted: Option<Promotion>,
    background: Limiter,
    interactive: Limiter,
    wait: Option<async_speed_limit::limiter::Consume<async_speed_limit::clock::StandardClock, ()>>,
}

impl<R> Capped<R> {
    fn limiter(&self) -> &Limiter {
        let promoted = self
            .promoted
            .as_ref()
            .is_some_and(|p| p.load(std::sync::atomic::Ordering::Relaxed));
        match self.class {
            Priority::Background if !promoted => &self.background,
            _ => &self.interactive,
        }
    }
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Capped<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::future::Future;
        use std::task::Poll;
        if let Some(w) = self.wait.as_mut() {
            if std::pin::Pin::new(w).poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.wait = None;
        }
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            let consume = self.limiter().consume(n);
            self.wait = Some(consume);
        }
        r
    }
}

/// The caps and rates shown by `status` (`status.json`, `/status`) and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BandwidthStatus {
    /// Background cap in force, bits per second (`None`: unlimited).
    pub background_cap_bps: Option<u64>,
    /// Interactive cap in force, bits per second (`None`: unlimited).
    pub interactive_cap_bps: Option<u64>,
    /// The schedule window in force (`Mon-Fri 08:00-18:00`), if any.
    pub window: Option<String>,
    /// Background rate over the last tick, bits per second.
    pub background_bps: u64,
    /// Interactive rate over the last tick, bits per second.
    pub interactive_bps: u64,
    /// Bytes read from remote stores in the background class since start.
    pub background_bytes: u64,
    /// Bytes read from remote stores in the interactive class since start.
    pub interactive_bytes: u64,
}

type Limiter = async_speed_limit::Limiter<async_speed_limit::clock::StandardClock>;

/// A local-time clock; tests inject their own with [`Bandwidth::set_clock`].
pub type Clock = Arc<dyn Fn() -> NaiveDateTime + Send + Sync>;

struct Tick {
    at: Instant,
    background: usize,
    interactive: usize,
    status: BandwidthStatus,
}

/// The running caps: one limiter per class, shared by every remote read of that class.
pub struct Bandwidth {
    policy: Policy,
    background: Limiter,
    interactive: Limiter,
    clock: Mutex<Clock>,
    last: Mutex<Tick>,
}

impl std::fmt::Debug for Bandwidth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bandwidth")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

fn speed(cap: Option<BytesPerSec>) -> f64 {
    cap.unwrap_or(f64::INFINITY)
}

fn bps(cap: Option<BytesPerSec>) -> Option<u64> {
    cap.map(|c| (c * 8.0).round() as u64)
}

impl Bandwidth {
    /// Caps per `policy`, on the local clock; the caps of the current time apply at once.
    pub fn new(policy: Policy) -> Arc<Bandwidth> {
        let clock: Clock = Arc::new(|| chrono::Local::now().naive_local());
        let b = Bandwidth {
            policy,
            background: Limiter::new(f64::INFINITY),
            interactive: Limiter::new(f64::INFINITY),
            clock: Mutex::new(clock),
            last: Mutex::new(Tick {
                at: Instant::now(),
                background: 0,
                interactive: 0,
                status: BandwidthStatus::default(),
            }),
        };
        b.tick();
        Arc::new(b)
    }

    /// Replaces the clock (tests: a window that starts during a transfer); the caps of its
    /// time apply at the next [`Bandwidth::tick`].
    pub fn set_clock(&self, clock: Clock) {
        *self.clock.lock().expect("clock") = clock;
    }

    /// Wraps `reader` in the limiter of `priority`: its reads wait so the class stays under
    /// its cap (all readers of a class share it). A background reader opened inside
    /// [`promotable`] moves to the interactive class once its switch is set.
    pub fn limit<R>(&self, priority: Priority, reader: R) -> Capped<R> {
        Capped {
            inner: reader,
            class: priority,
            promoted: PROMOTION.try_with(Clone::clone).ok(),
            background: self.background.clone(),
            interactive: self.interactive.clone(),
            wait: None,
        }
    }

    /// Applies the caps of the clock's time (running transfers change rate at once) and
    /// measures each class's rate since the previous tick.
    pub fn tick(&self) -> BandwidthStatus {
        let now = (self.clock.lock().expect("clock"))();
        let caps = self.policy.caps_at(now);
        for (l, cap) in [
            (&self.background, caps.background),
            (&self.interactive, caps.interactive),
        ] {
            if l.speed_limit() != speed(cap) {
                l.set_speed_limit(speed(cap));
            }
        }
        let mut last = self.last.lock().expect("tick");
        let (b, i) = (
            self.background.total_bytes_consumed(),
            self.interactive.total_bytes_consumed(),
        );
        let secs = last.at.elapsed().as_secs_f64();
        let rate = |now: usize, before: usize| {
            if secs > 0.0 {
                (now.saturating_sub(before) as f64 * 8.0 / secs) as u64
            } else {
                0
            }
        };
        let status = BandwidthStatus {
            background_cap_bps: bps(caps.background),
            interactive_cap_bps: bps(caps.interactive),
            window: caps.window,
            background_bps: rate(b, last.background),
            interactive_bps: rate(i, last.interactive),
            background_bytes: b as u64,
            interactive_bytes: i as u64,
        };
        *last = Tick {
            at: Instant::now(),
            background: b,
            interactive: i,
            status: status.clone(),
        };
        status
    }

    /// What the last [`Bandwidth::tick`] measured.
    pub fn status(&self) -> BandwidthStatus {
        self.last.lock().expect("tick").status.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(y, mo, d)
            .unwrap()
            .and_hms_opt(h, mi, 0)
            .unwrap()
    }

    #[test]
    fn rates_in_bits_and_bytes() {
        assert_eq!(parse_rate("4Mbit/s"), Ok(Some(500_000.0)));
        assert_eq!(parse_rate("500KiB/s"), Ok(Some(512_000.0)));
        assert_eq!(parse_rate("2 MB/s"), Ok(Some(2e6)));
        assert_eq!(parse_rate("1.5Gbit/s"), Ok(Some(187_500_000.0)));
        assert_eq!(parse_rate("unlimited"), Ok(None));
        for bad in ["4Mbit", "4 mbit/s", "fast/s", "0Mbit/s", "/s", "4Mbps"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn days_and_hours() {
        assert_eq!(parse_days("Mon-Fri"), Ok(0b001_1111));
        assert_eq!(parse_days("Fri-Mon"), Ok(0b111_0001));
        assert_eq!(parse_days("sat,Sun"), Ok(0b110_0000));
        assert!(parse_days("Mon-Funday").is_err());
        assert_eq!(parse_hours("08:00-18:00"), Ok((480, 1080)));
        assert_eq!(parse_hours("22:00-06:00"), Ok((1320, 360)));
        assert_eq!(parse_hours("00:00-24:00"), Ok((0, 1440)));
        for bad in [
            "8-18",
            "08:00-08:00",
            "25:00-26:00",
            "08:60-09:00",
            "8:00-9:00",
        ] {
            assert!(parse_hours(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn windows_set_caps_by_local_day_and_hour() {
        let s: BandwidthSection = toml::from_str(
            r#"background = "4Mbit/s"
               windows = [{ days = "Mon-Fri", hours = "08:00-18:00", background = "2Mbit/s" },
                          { hours = "22:00-06:00", background = "unlimited", interactive = "1MB/s" }]"#,
        )
        .unwrap();
        let p = Policy::parse(&s).unwrap();
        // 2024-01-01 is a Monday.
        let mon_9 = p.caps_at(at(2024, 1, 1, 9, 0));
        assert_eq!(mon_9.background, Some(250_000.0));
        assert_eq!(mon_9.window.as_deref(), Some("Mon-Fri 08:00-18:00"));
        assert_eq!(p.caps_at(at(2024, 1, 1, 18, 0)).background, Some(500_000.0));
        assert_eq!(
            p.caps_at(at(2024, 1, 6, 9, 0)).background,
            Some(500_000.0),
            "Saturday"
        );
        let night = p.caps_at(at(2024, 1, 2, 3, 0));
        assert_eq!((night.background, night.interactive), (None, Some(1e6)));
        assert_eq!(p.caps_at(at(2024, 1, 1, 12, 0)).interactive, None);
    }

    #[test]
    fn bad_values_name_their_key() {
        let s: BandwidthSection = toml::from_str(
            r#"windows = [{ days = "Mon-Fri", hours = "8-18", background = "1Mbit/s" }]"#,
        )
        .unwrap();
        let e = Policy::parse(&s).unwrap_err();
        assert_eq!(e.key, "bandwidth.windows[0].hours");
        let s: BandwidthSection = toml::from_str(r#"background = "lots""#).unwrap();
        assert_eq!(Policy::parse(&s).unwrap_err().key, "bandwidth.background");
        let s: BandwidthSection =
            toml::from_str(r#"windows = [{ hours = "08:00-09:00" }]"#).unwrap();
        assert_eq!(Policy::parse(&s).unwrap_err().key, "bandwidth.windows[0]");
    }

    #[tokio::test]
    async fn background_reads_follow_the_cap_and_change_live() {
        use tokio::io::AsyncReadExt;
        let p = Policy {
            background: Some(200_000.0),
            ..Policy::default()
        };
        let b = Bandwidth::new(p);
        assert_eq!(current_priority(), Priority::Interactive);
        in_background(async { assert_eq!(current_priority(), Priority::Background) }).await;
        let data = vec![0u8; 300_000];
        let t = Instant::now();
        let mut r = b.limit(Priority::Background, &data[..]);
        let mut out = Vec::new();
        r.read_to_end(&mut out).await.unwrap();
        // The bucket starts full (0.1 s worth): 300 kB at 200 kB/s take about 1.4 s.
        let secs = t.elapsed().as_secs_f64();
        assert!((1.2..2.0).contains(&secs), "{secs}");
        let t = Instant::now();
        let mut r = b.limit(Priority::Interactive, &data[..]);
        r.read_to_end(&mut Vec::new()).await.unwrap();
        assert!(t.elapsed().as_secs_f64() < 0.2, "interactive is exempt");
        let s = b.tick();
        assert_eq!(s.background_cap_bps, Some(1_600_000));
        assert_eq!(
            (s.background_bytes, s.interactive_bytes),
            (300_000, 300_000)
        );
        assert!(s.background_bps > 0);
    }
}
