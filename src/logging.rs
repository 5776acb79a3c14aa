//! Process logging: where lines go and which lines may be written at all.
//!
//! Data flow: `-v`/`RUST_LOG`/`[log] level` → [`log_filter`] → a per-layer filter that is
//! always AND-ed with a hard cap on the SMB and authentication crates ([`QUIET_TARGETS`] at
//! `warn`: no filter string can lift it) → stderr (human text, coloured only on a terminal;
//! plain `<priority>`-prefixed lines for journald when `JOURNAL_STREAM` is set; or JSON) and,
//! with `[log] file`, a JSON file that keeps its name and rotates daily and/or at a size,
//! keeping `max_files` old files (`<file>.1` newest). `--noisy` adds the probe target
//! ([`crate::store::noisy::PROBE_TARGET`]) at `info`.

use crate::config::LogSection;
use std::path::{Path, PathBuf};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Targets of the SMB and authentication crates: at debug and trace they print protocol
/// messages, NTLM AUTHENTICATE messages among them (crackable offline). They stay at `warn`
/// whatever `RUST_LOG`, `[log] level` or `-vv` asks for; `symcascade::smb` logs what an admin
/// needs. Matching is by prefix, as `tracing`'s own (`smb` covers `smb_msg`, `picky` covers
/// `picky_krb`).
pub const QUIET_TARGETS: [&str; 8] = [
    "smb",
    "smb_transport",
    "smb_msg",
    "smb_fscc",
    "smb_dtyp",
    "smb_rpc",
    "sspi",
    "picky",
];

/// How the command line asks for logging.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// `-v` count: 0 warn (info for the agent), 1 info, 2+ debug.
    pub verbose: u8,
    /// `--log-json`: JSON lines on stderr.
    pub json: bool,
    /// The process is the agent (default level `info`).
    pub agent: bool,
    /// `--noisy`: probe lines at `info` (also `[log] noisy`).
    pub noisy: bool,
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// `[log] file` cannot be created or written.
    #[error("key `log.file`: cannot write the log file {}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A logger was already installed in this process.
    #[error("cannot install the logger: {0}")]
    Install(String),
}

/// The filter spec: `RUST_LOG` (else `default`) with every directive about a
/// [`QUIET_TARGETS`] crate removed, those crates at `warn`, and the probe target at `info`
/// when `noisy`. (The cap itself does not depend on this string: see [`quiet_cap`].)
pub fn log_filter(rust_log: Option<&str>, default: &str, noisy: bool) -> String {
    let base = rust_log.filter(|s| !s.trim().is_empty()).unwrap_or(default);
    let quiet = |d: &str| {
        let target = d.split(['=', '[']).next().unwrap_or("").trim();
        QUIET_TARGETS.iter().any(|q| target.starts_with(q))
    };
    let mut parts: Vec<String> = base
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty() && !quiet(d))
        .map(String::from)
        .collect();
    parts.extend(QUIET_TARGETS.iter().map(|q| format!("{q}=warn")));
    if noisy {
        parts.push(format!("{}=info", crate::store::noisy::PROBE_TARGET));
    }
    parts.join(",")
}

/// The hard cap: events of [`QUIET_TARGETS`] (by prefix) below `warn` are never written,
/// whatever the level filter says (span-scoped directives such as `[conn]=trace` included).
pub fn quiet_cap() -> tracing_subscriber::filter::Targets {
    use tracing_subscriber::filter::LevelFilter;
    tracing_subscriber::filter::Targets::new()
        .with_default(LevelFilter::TRACE)
        .with_targets(QUIET_TARGETS.map(|t| (t, LevelFilter::WARN)))
}

/// `true` when stderr goes to the systemd journal (`JOURNAL_STREAM`, set by systemd for
/// services whose output is connected to journald): lines then carry no timestamp or colour
/// (journald adds its own) and start with a `<N>` syslog priority journald understands.
pub fn journald(env: impl Fn(&str) -> Option<String>) -> bool {
    env("JOURNAL_STREAM").is_some_and(|v| !v.is_empty())
}

/// Plain lines for journald: `<6>INFO target: message field=value`.
#[derive(Debug, Clone, Copy)]
pub struct JournaldFormat;

impl<S, N> FormatEvent<S, N> for JournaldFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let m = event.metadata();
        let prio = match *m.level() {
            tracing::Level::ERROR => 3,
            tracing::Level::WARN => 4,
            tracing::Level::INFO => 6,
            _ => 7,
        };
        write!(w, "<{prio}>{} {}: ", m.level(), m.target())?;
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

/// Opens `[log] file`: the current file keeps `path`; it is rotated at local midnight when
/// `daily` and when it reaches `max_size`, old files being `<path>.1` (newest) …
/// `<path>.<max_files>`, older ones removed.
///
/// # Errors
/// [`LogError::File`] when the folder or file cannot be created.
pub fn open_log_file(
    path: &Path,
    log: &LogSection,
) -> Result<rolling_file::BasicRollingFileAppender, LogError> {
    let err = |source| LogError::File {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let mut cond = rolling_file::RollingConditionBasic::new();
    if log.daily {
        cond = cond.daily();
    }
    if let Some(max) = log.max_size {
        cond = cond.max_size(max);
    }
    rolling_file::BasicRollingFileAppender::new(path, cond, log.max_files).map_err(err)
}

/// Installs the process's logger: stderr, plus `[log] file` when set. The returned guard
/// flushes the file on drop.
///
/// # Errors
/// [`LogError`] when the log file cannot be created (nothing is installed then) or a logger
/// is already installed.
pub fn init(
    opts: LogOptions,
    log: &LogSection,
) -> Result<Option<tracing_appender::non_blocking::WorkerGuard>, LogError> {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::Layer;
    use tracing_subscriber::filter::FilterExt;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let default = match opts.verbose {
        0 if opts.agent => "info",
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let default = log.level.clone().unwrap_or_else(|| default.to_string());
    let json = opts.json || log.format.as_deref() == Some("json");
    let noisy = opts.noisy || log.noisy;
    let spec = log_filter(std::env::var("RUST_LOG").ok().as_deref(), &default, noisy);
    let filter = || {
        EnvFilter::try_new(&spec)
            .unwrap_or_else(|_| EnvFilter::new(log_filter(None, &default, noisy)))
    };
    let env = |k: &str| std::env::var(k).ok();
    let base = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let console = if json {
        base.json().with_filter(filter().and(quiet_cap())).boxed()
    } else if journald(env) {
        base.with_ansi(false)
            .event_format(JournaldFormat)
            .with_filter(filter().and(quiet_cap()))
            .boxed()
    } else {
        // Colour codes only for a person at a terminal: not in pipes, files or journald;
        // `NO_COLOR` (no-color.org) turns them off there too.
        let colour =
            std::io::stderr().is_terminal() && env("NO_COLOR").is_none_or(|v| v.is_empty());
        base.with_ansi(colour)
            .with_filter(filter().and(quiet_cap()))
            .boxed()
    };
    let (file, guard) = match &log.file {
        Some(path) => {
            let (w, g) = tracing_appender::non_blocking(open_log_file(path, log)?);
            let l = tracing_subscriber::fmt::layer()
                .json()
                .with_ansi(false)
                .with_writer(w)
                .with_filter(filter().and(quiet_cap()))
                .boxed();
            (Some(l), Some(g))
        }
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(console)
        .with(file)
        .try_init()
        .map_err(|e| LogError::Install(e.to_string()))?;
    Ok(guard)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn smb_and_sspi_never_log_below_warn() {
        let f = log_filter(Some("trace"), "info", false);
        assert!(f.starts_with("trace,") && f.contains(",smb=warn") && f.contains(",sspi=warn"));
        let f = log_filter(
            Some("smb=trace,sspi::ntlm=trace,symcascade=debug,sspi:=trace,smb_=trace"),
            "info",
            false,
        );
        assert!(!f.contains("trace"), "{f}");
        assert!(f.starts_with("symcascade=debug,"), "{f}");
        assert_eq!(
            log_filter(None, "info", false),
            log_filter(Some(" "), "info", false)
        );
        assert!(log_filter(None, "info", false).starts_with("info,smb=warn"));
        assert!(log_filter(None, "warn", true).ends_with(",symcascade::probe=info"));
    }

    /// The cap holds against filter strings that [`log_filter`] leaves in (span-scoped
    /// directives): an `smb` or `sspi` debug event is never written.
    #[test]
    fn the_cap_holds_whatever_the_filter() {
        use std::sync::{Arc, Mutex};
        use tracing_subscriber::Layer;
        use tracing_subscriber::filter::FilterExt;
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let w = buf.clone();
        for spec in ["trace", "[]=trace", "[conn]=trace,trace", "s=trace"] {
            let filter = tracing_subscriber::EnvFilter::new(log_filter(Some(spec), "warn", false))
                .and(quiet_cap());
            let w = w.clone();
            let layer = tracing_subscriber::fmt::layer()
                .with_writer(move || w.clone())
                .with_filter(filter);
            let sub = tracing_subscriber::registry().with(layer);
            tracing::subscriber::with_default(sub, || {
                let span = tracing::info_span!("conn");
                let _e = span.enter();
                tracing::debug!(target: "smb::connection", "NTLMSSP AUTHENTICATE secret");
                tracing::trace!(target: "sspi::ntlm", "NTLMSSP secret");
                tracing::info!(target: "picky_krb::messages", "ticket secret");
                tracing::warn!(target: "smb::connection", "a warning is kept");
                tracing::trace!(target: "symcascade::x", "ours at trace");
            });
        }
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert!(!text.contains("secret"), "{text}");
        assert_eq!(text.matches("a warning is kept").count(), 4, "{text}");
        assert!(text.contains("ours at trace"), "{text}");
    }

    #[test]
    fn journald_only_when_its_stream_is_set() {
        assert!(journald(
            |k| (k == "JOURNAL_STREAM").then(|| "8:12345".into())
        ));
        assert!(!journald(|_| None));
        assert!(!journald(|_| Some(String::new())));
    }
}
