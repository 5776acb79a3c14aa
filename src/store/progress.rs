//! `Progress`: the progress of files being read out of a store, as a store wrapper. Every file
//! a wrapped store opens is read through a [`Counted`] reader that reports the bytes read so
//! far to a [`TransferProgress`] made by a [`ProgressSink`]: [`LogEvery`] logs long transfers
//! periodically (the agent: key path, bytes done/total, rate, ETA), [`Bar`] draws an indicatif
//! bar on stderr when it is a terminal (`get`).
//!
//! Data flow: [`ProgressOpener`] wraps the process's opener, so the cascade is not touched:
//! it opens a hit, the transport's stream is wrapped, the cascade reads it (spool, verify,
//! copy down) and the sink sees the bytes as they arrive; end of stream or drop finishes it.

use super::open::StoreOpener;
use super::{
    ByteStream, Capabilities, FileMeta, Opened, PutOutcome, Store, StoreDescription, StoreError,
};
use crate::layout::RelPath;
use crate::sympath::Location;
use async_trait::async_trait;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, ReadBuf};

/// Follows one file being read.
pub trait TransferProgress: Send {
    /// `done` bytes have been read so far.
    fn advance(&mut self, done: u64);
    /// The read ended (end of stream, error or drop) after `done` bytes; called once.
    fn finish(&mut self, done: u64);
}

/// Makes a [`TransferProgress`] for each file opened, or `None` to not follow it.
pub trait ProgressSink: Send + Sync + fmt::Debug {
    /// A read of `path` from `store` starts; `len` in bytes when the store knows it.
    fn start(
        &self,
        store: &StoreDescription,
        path: &RelPath,
        len: Option<u64>,
    ) -> Option<Box<dyn TransferProgress>>;
}

/// A stream that reports the bytes read through it.
pub struct Counted {
    inner: ByteStream,
    done: u64,
    progress: Option<Box<dyn TransferProgress>>,
}

impl Counted {
    /// Wraps `inner`, reporting to `progress`.
    pub fn new(inner: ByteStream, progress: Box<dyn TransferProgress>) -> Counted {
        Counted {
            inner,
            done: 0,
            progress: Some(progress),
        }
    }

    fn finish(&mut self) {
        if let Some(mut p) = self.progress.take() {
            p.finish(self.done);
        }
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        match &r {
            Poll::Ready(Ok(())) => {
                let n = (buf.filled().len() - before) as u64;
                if n == 0 && buf.remaining() > 0 {
                    self.finish();
                } else {
                    self.done += n;
                    let done = self.done;
                    if let Some(p) = self.progress.as_mut() {
                        p.advance(done);
                    }
                }
            }
            Poll::Ready(Err(_)) => self.finish(),
            Poll::Pending => {}
        }
        r
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A store whose opened files report their progress to a [`ProgressSink`].
#[derive(Debug)]
pub struct Progress {
    inner: Arc<dyn Store>,
    sink: Arc<dyn ProgressSink>,
}

impl Progress {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Store>, sink: Arc<dyn ProgressSink>) -> Progress {
        Progress { inner, sink }
    }

    /// `opened`, its reader counted by the sink (a resumed stream counts the bytes still to
    /// come).
    fn counted(&self, p: &RelPath, mut opened: Opened) -> Opened {
        let rest = opened.len.map(|l| l.saturating_sub(opened.offset));
        if let Some(t) = self.sink.start(&self.inner.describe(), p, rest) {
            let reader = std::mem::replace(&mut opened.reader, Box::new(tokio::io::empty()));
            opened.reader = Box::new(Counted::new(reader, t));
        }
        opened
    }
}

#[async_trait]
impl Store for Progress {
    fn describe(&self) -> StoreDescription {
        self.inner.describe()
    }
    async fn stat(&self, p: &RelPath) -> Result<Option<FileMeta>, StoreError> {
        self.inner.stat(p).await
    }
    async fn open(&self, p: &RelPath) -> Result<Option<Opened>, StoreError> {
        Ok(self.inner.open(p).await?.map(|o| self.counted(p, o)))
    }
    async fn open_from(
        &self,
        p: &RelPath,
        offset: u64,
        version: &str,
    ) -> Result<Option<Opened>, StoreError> {
        let opened = self.inner.open_from(p, offset, version).await?;
        Ok(opened.map(|o| self.counted(p, o)))
    }
    async fn put(
        &self,
        p: &RelPath,
        src: &mut (dyn AsyncRead + Send + Unpin),
        len: Option<u64>,
    ) -> Result<PutOutcome, StoreError> {
        self.inner.put(p, src, len).await
    }
    async fn replace(
        &self,
        p: &RelPath,
        src: &mut (dyn AsyncRead + Send + Unpin),
        len: Option<u64>,
    ) -> Result<PutOutcome, StoreError> {
        self.inner.replace(p, src, len).await
    }
    async fn capabilities(&self) -> Result<Capabilities, StoreError> {
        self.inner.capabilities().await
    }
}

/// An opener whose stores are [`Progress`] wrappers reporting to one sink.
#[derive(Debug)]
pub struct ProgressOpener {
    inner: Arc<dyn StoreOpener>,
    sink: Arc<dyn ProgressSink>,
}

impl ProgressOpener {
    /// Wraps `inner`.
    pub fn wrap(inner: Arc<dyn StoreOpener>, sink: Arc<dyn ProgressSink>) -> Arc<dyn StoreOpener> {
        Arc::new(ProgressOpener { inner, sink })
    }
}

impl StoreOpener for ProgressOpener {
    fn open_store(&self, location: &Location) -> Result<Arc<dyn Store>, StoreError> {
        let s = self.inner.open_store(location)?;
        Ok(Arc::new(Progress::new(s, self.sink.clone())))
    }
}

/// Logs a transfer at `info` every `every` while it runs (so transfers shorter than `every`
/// log nothing), and once when it ends if it logged before: store, path, bytes done and total,
/// percent, rate and ETA in human units.
#[derive(Debug, Clone, Copy)]
pub struct LogEvery {
    /// Time between two lines of one transfer.
    pub every: Duration,
}

struct LogTransfer {
    store: String,
    path: String,
    len: Option<u64>,
    start: Instant,
    last: Instant,
    every: Duration,
    logged: bool,
}

impl ProgressSink for LogEvery {
    fn start(
        &self,
        store: &StoreDescription,
        path: &RelPath,
        len: Option<u64>,
    ) -> Option<Box<dyn TransferProgress>> {
        let now = Instant::now();
        Some(Box::new(LogTransfer {
            path: super::noisy::display_path(&store.location, store.transport, path),
            store: store.location.clone(),
            len,
            start: now,
            last: now,
            every: self.every,
            logged: false,
        }))
    }
}

impl TransferProgress for LogTransfer {
    fn advance(&mut self, done: u64) {
        if self.last.elapsed() < self.every {
            return;
        }
        self.last = Instant::now();
        self.logged = true;
        let elapsed = self.start.elapsed();
        let rate = crate::units::rate(done, elapsed);
        let (total, pct, eta) = match self.len {
            Some(len) if len > 0 => {
                let secs = elapsed.as_secs_f64() * (len.saturating_sub(done)) as f64
                    / (done.max(1)) as f64;
                (
                    crate::units::bytes(len),
                    format!("{:.0}%", done as f64 * 100.0 / len as f64),
                    crate::units::duration(Duration::from_secs_f64(secs.min(1e9))),
                )
            }
            _ => ("?".into(), "?".into(), "?".into()),
        };
        tracing::info!(store = %self.store, path = %self.path, done = %crate::units::bytes(done),
            %total, %pct, %rate, %eta, "transfer in progress");
    }

    fn finish(&mut self, done: u64) {
        if self.logged {
            let elapsed = self.start.elapsed();
            tracing::info!(store = %self.store, path = %self.path,
                bytes = %crate::units::bytes(done), rate = %crate::units::rate(done, elapsed),
                elapsed = %crate::units::duration(elapsed), "transfer ended");
        }
    }
}

/// An indicatif bar on stderr for each file of at least `min_len` bytes (or of unknown
/// length) read while stderr is a terminal: bytes, rate, source store and ETA.
#[derive(Debug, Clone, Copy)]
pub struct Bar {
    /// Smaller files get no bar (they would only flash).
    pub min_len: u64,
}

struct BarTransfer(indicatif::ProgressBar);

impl ProgressSink for Bar {
    fn start(
        &self,
        store: &StoreDescription,
        _path: &RelPath,
        len: Option<u64>,
    ) -> Option<Box<dyn TransferProgress>> {
        use std::io::IsTerminal;
        if !std::io::stderr().is_terminal() || len.is_some_and(|l| l < self.min_len) {
            return None;
        }
        let pb = match len {
            Some(l) => indicatif::ProgressBar::new(l),
            None => indicatif::ProgressBar::no_length(),
        };
        pb.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        pb.set_message(format!("from {}", store.location));
        Some(Box::new(BarTransfer(pb)))
    }
}

impl TransferProgress for BarTransfer {
    fn advance(&mut self, done: u64) {
        self.0.set_position(done);
    }
    fn finish(&mut self, _done: u64) {
        self.0.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LocalStore;
    use std::sync::Mutex;
    use tokio::io::AsyncReadExt;

    #[derive(Debug, Default, Clone)]
    struct Record(Arc<Mutex<Vec<(String, u64)>>>);
    struct RecordTransfer(Record);
    impl ProgressSink for Record {
        fn start(
            &self,
            _: &StoreDescription,
            path: &RelPath,
            len: Option<u64>,
        ) -> Option<Box<dyn TransferProgress>> {
            let mut v = self.0.lock().unwrap();
            v.push((format!("start {}", path.file_name()), len.unwrap_or(0)));
            Some(Box::new(RecordTransfer(self.clone())))
        }
    }
    impl TransferProgress for RecordTransfer {
        fn advance(&mut self, done: u64) {
            self.0.0.lock().unwrap().push(("advance".into(), done));
        }
        fn finish(&mut self, done: u64) {
            self.0.0.lock().unwrap().push(("finish".into(), done));
        }
    }

    #[tokio::test]
    async fn bytes_read_are_reported_and_finished_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.bin"), vec![7u8; 300_000]).unwrap();
        let rec = Record::default();
        let s = Progress::new(Arc::new(LocalStore::new(dir.path())), Arc::new(rec.clone()));
        let p = RelPath::from_safe(["a.bin"]);
        let mut o = s.open(&p).await.unwrap().unwrap();
        let mut all = Vec::new();
        o.reader.read_to_end(&mut all).await.unwrap();
        drop(o);
        assert_eq!(all.len(), 300_000);
        let v = rec.0.lock().unwrap().clone();
        assert_eq!(v[0], ("start a.bin".into(), 300_000));
        let advances: Vec<u64> = v.iter().filter(|e| e.0 == "advance").map(|e| e.1).collect();
        assert!(advances.windows(2).all(|w| w[0] < w[1]), "{advances:?}");
        assert_eq!(advances.last(), Some(&300_000));
        let finishes: Vec<_> = v.iter().filter(|e| e.0 == "finish").collect();
        assert_eq!(finishes, [&("finish".to_string(), 300_000)], "once, at EOF");
        // A missing file is no transfer.
        assert!(
            s.open(&RelPath::from_safe(["b.bin"]))
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(rec.0.lock().unwrap().len(), v.len());
    }

    #[test]
    fn long_transfers_log_periodically_with_units() {
        use std::sync::Mutex;
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
        let sub = tracing_subscriber::fmt()
            .with_writer(move || w.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(sub, || {
            let d = StoreDescription {
                location: r"\\MainOffice\Symbols".into(),
                transport: crate::store::Transport::Smb,
            };
            let p = RelPath::from_safe(["a.pdb", "IDX", "a.pdb"]);
            let mut t = LogEvery {
                every: Duration::from_millis(20),
            }
            .start(&d, &p, Some(4 << 20))
            .unwrap();
            t.advance(1 << 20); // too soon: no line
            std::thread::sleep(Duration::from_millis(30));
            t.advance(2 << 20);
            t.finish(4 << 20);
            // A short transfer logs nothing.
            let mut quick = LogEvery {
                every: Duration::from_secs(60),
            }
            .start(&d, &p, Some(10))
            .unwrap();
            quick.advance(10);
            quick.finish(10);
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].contains("transfer in progress")
                && lines[0].contains(r"path=\\MainOffice\Symbols\a.pdb\IDX\a.pdb")
                && lines[0].contains("done=2.0 MiB")
                && lines[0].contains("total=4.0 MiB")
                && lines[0].contains("pct=50%")
                && lines[0].contains("/s"),
            "{text}"
        );
        assert!(lines[1].contains("transfer ended") && lines[1].contains("bytes=4.0 MiB"));
    }
}
