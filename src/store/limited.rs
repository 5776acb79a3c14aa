//! `Limited`: bandwidth caps as a store wrapper (issue #17). Every file a wrapped store opens
//! is read through the limiter of the reading task's [`Priority`] (background for the agent's
//! queue, prefetch and back-fills; interactive for the front's clients): see `bandwidth`.
//!
//! Data flow: [`LimitedOpener`] wraps the transports' opener (innermost, so the progress and
//! activity wrappers count the bytes as they leave the limiter); only remote stores (SMB,
//! HTTP) are wrapped: local folders are not the link. The priority is read when the file is
//! opened, so a stream keeps its class whichever task reads it afterwards.

use super::open::StoreOpener;
use super::{Capabilities, FileMeta, Opened, PutOutcome, Store, StoreDescription, StoreError};
use crate::bandwidth::{Bandwidth, current_priority};
use crate::layout::RelPath;
use crate::sympath::Location;
use async_trait::async_trait;
use std::sync::Arc;
use tokio::io::AsyncRead;

/// The largest read passed to the limiter: a transport may hand out a megabyte at once,
/// which would make a capped class move in bursts of seconds instead of a steady rate.
const SMALL_READ: usize = 16 * 1024;

/// Reads at most [`SMALL_READ`] bytes at a time from `inner`.
struct Small {
    inner: super::ByteStream,
    buf: Vec<u8>,
}

impl AsyncRead for Small {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        out: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let me = &mut *self;
        let max = out.remaining().min(me.buf.len());
        let mut sub = tokio::io::ReadBuf::new(&mut me.buf[..max]);
        let r = std::pin::Pin::new(&mut me.inner).poll_read(cx, &mut sub);
        if let std::task::Poll::Ready(Ok(())) = &r {
            out.put_slice(sub.filled());
        }
        r
    }
}

/// A store whose opened files are read under the bandwidth caps.
#[derive(Debug)]
pub struct Limited {
    inner: Arc<dyn Store>,
    caps: Arc<Bandwidth>,
}

impl Limited {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Store>, caps: Arc<Bandwidth>) -> Limited {
        Limited { inner, caps }
    }

    /// `opened`, its reader under the cap of the current task's priority.
    fn limit(&self, mut opened: Opened) -> Opened {
        let reader = std::mem::replace(&mut opened.reader, Box::new(tokio::io::empty()));
        let small = Small {
            inner: reader,
            buf: vec![0; SMALL_READ],
        };
        opened.reader = Box::new(self.caps.limit(current_priority(), small));
        opened
    }
}

#[async_trait]
impl Store for Limited {
    fn describe(&self) -> StoreDescription {
        self.inner.describe()
    }
    async fn stat(&self, p: &RelPath) -> Result<Option<FileMeta>, StoreError> {
        self.inner.stat(p).await
    }
    async fn open(&self, p: &RelPath) -> Result<Option<Opened>, StoreError> {
        Ok(self.inner.open(p).await?.map(|o| self.limit(o)))
    }
    async fn open_from(
        &self,
        p: &RelPath,
        offset: u64,
        version: &str,
    ) -> Result<Option<Opened>, StoreError> {
        let opened = self.inner.open_from(p, offset, version).await?;
        Ok(opened.map(|o| self.limit(o)))
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

/// An opener whose remote stores (SMB, HTTP) are [`Limited`].
#[derive(Debug)]
pub struct LimitedOpener {
    inner: Arc<dyn StoreOpener>,
    caps: Arc<Bandwidth>,
}

impl LimitedOpener {
    /// Wraps `inner`.
    pub fn wrap(inner: Arc<dyn StoreOpener>, caps: Arc<Bandwidth>) -> Arc<dyn StoreOpener> {
        Arc::new(LimitedOpener { inner, caps })
    }
}

impl StoreOpener for LimitedOpener {
    fn open_store(&self, location: &Location) -> Result<Arc<dyn Store>, StoreError> {
        let s = self.inner.open_store(location)?;
        match location {
            Location::Local { .. } => Ok(s),
            Location::Smb { .. } | Location::Http { .. } | Location::Object { .. } => {
                Ok(Arc::new(Limited::new(s, self.caps.clone())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bandwidth::{Policy, in_background};
    use crate::store::LocalStore;
    use tokio::io::AsyncReadExt;

    async fn read_all(s: &Limited, p: &RelPath) -> usize {
        let mut o = s.open(p).await.unwrap().unwrap();
        let mut v = Vec::new();
        o.reader.read_to_end(&mut v).await.unwrap();
        v.len()
    }

    #[tokio::test]
    async fn background_opens_are_capped_interactive_ones_not() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.bin"), vec![1u8; 150_000]).unwrap();
        let caps = Bandwidth::new(Policy {
            background: Some(100_000.0),
            ..Policy::default()
        });
        let s = Limited::new(Arc::new(LocalStore::new(dir.path())), caps.clone());
        let p = RelPath::from_safe(["a.bin"]);
        let t = std::time::Instant::now();
        assert_eq!(in_background(read_all(&s, &p)).await, 150_000);
        let bg = t.elapsed().as_secs_f64();
        assert!((1.2..2.0).contains(&bg), "150 kB at 100 kB/s: {bg} s");
        let t = std::time::Instant::now();
        assert_eq!(read_all(&s, &p).await, 150_000);
        assert!(t.elapsed().as_secs_f64() < 0.3);
        let st = caps.tick();
        assert_eq!(
            (st.background_bytes, st.interactive_bytes),
            (150_000, 150_000)
        );
    }
}
