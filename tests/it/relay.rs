//! A loopback TCP relay that models a slow WAN link: one-way delay and a rate cap in each
//! direction. Used by the agent tests (a transfer slow enough to kill midway), the resume
//! tests (a metered relay counts the bytes it delivered from the server and can cut every
//! connection once a number of them has passed) and the SMB benchmark (the slow-link row).

#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A relay on 127.0.0.1 to `target`: each direction delays bytes by `delay` and caps the rate
/// at `bits_per_sec`. Returns the relay's port.
pub async fn relay(target: std::net::SocketAddr, delay: Duration, bits_per_sec: u64) -> u16 {
    metered(target, delay, bits_per_sec).await.port
}

/// What a metered relay counts, and its cut.
pub struct Meter {
    /// The relay's port.
    pub port: u16,
    delivered: AtomicU64,
    cut_at: AtomicU64,
    cut: watch::Sender<u64>,
}

impl Meter {
    /// Bytes delivered from the server to clients so far (all connections).
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::SeqCst)
    }

    /// Closes every connection once `delivered` reaches `bytes` (once; 0 = never).
    pub fn cut_at(&self, bytes: u64) {
        self.cut_at.store(bytes, Ordering::SeqCst);
    }

    /// Closes every live connection now, as a link going down does.
    pub fn cut_now(&self) {
        self.cut.send_modify(|g| *g += 1);
    }

    fn count(&self, n: usize) {
        let total = self.delivered.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
        let at = self.cut_at.load(Ordering::SeqCst);
        if at != 0
            && total >= at
            && self
                .cut_at
                .compare_exchange(at, 0, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            self.cut_now();
        }
    }
}

/// Like [`relay`], counting the bytes delivered from `target` to clients; see [`Meter`].
pub async fn metered(
    target: std::net::SocketAddr,
    delay: Duration,
    bits_per_sec: u64,
) -> Arc<Meter> {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let meter = Arc::new(Meter {
        port: l.local_addr().unwrap().port(),
        delivered: AtomicU64::new(0),
        cut_at: AtomicU64::new(0),
        cut: watch::channel(0).0,
    });
    let m = meter.clone();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = l.accept().await else {
                return;
            };
            let Ok(server) = TcpStream::connect(target).await else {
                continue;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            let link = Link {
                delay,
                bits_per_sec,
            };
            tokio::spawn(pipe(cr, sw, link, None, m.cut.subscribe()));
            tokio::spawn(pipe(sr, cw, link, Some(m.clone()), m.cut.subscribe()));
        }
    });
    meter
}

#[derive(Clone, Copy)]
struct Link {
    delay: Duration,
    bits_per_sec: u64,
}

/// Copies `r` to `w` through the modelled link; counts delivered bytes on `meter`; ends (both
/// halves dropped: the peer sees the connection close) when `cut` changes.
async fn pipe(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    link: Link,
    meter: Option<Arc<Meter>>,
    mut cut: watch::Receiver<u64>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let mut writer_cut = cut.clone();
    tokio::spawn(async move {
        loop {
            let (at, buf) = tokio::select! {
                m = rx.recv() => match m { Some(m) => m, None => return },
                _ = writer_cut.changed() => return,
            };
            tokio::select! {
                _ = tokio::time::sleep_until(at) => {}
                _ = writer_cut.changed() => return,
            }
            if w.write_all(&buf).await.is_err() {
                return;
            }
            if let Some(m) = &meter {
                m.count(buf.len());
            }
        }
    });
    // The link is busy until `free`; a chunk leaves the link `delay` after it was serialised.
    let mut free = tokio::time::Instant::now();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            r = r.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = cut.changed() => return,
        };
        let now = tokio::time::Instant::now();
        let wire = Duration::from_secs_f64(n as f64 * 8.0 / link.bits_per_sec as f64);
        free = free.max(now) + wire;
        if tx.send((free + link.delay, buf[..n].to_vec())).is_err() {
            return;
        }
    }
}
