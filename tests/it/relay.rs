//! A loopback TCP relay that models a slow WAN link: one-way delay and a rate cap in each
//! direction. Used by the agent tests (a transfer slow enough to kill midway) and the SMB
//! benchmark (the slow-link row).

#![allow(dead_code)]

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A relay on 127.0.0.1 to `target`: each direction delays bytes by `delay` and caps the rate
/// at `bits_per_sec`. Returns the relay's port.
pub async fn relay(target: std::net::SocketAddr, delay: Duration, bits_per_sec: u64) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
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
            tokio::spawn(pipe(cr, sw, delay, bits_per_sec));
            tokio::spawn(pipe(sr, cw, delay, bits_per_sec));
        }
    });
    port
}

async fn pipe(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
    bits_per_sec: u64,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    tokio::spawn(async move {
        while let Some((at, buf)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if w.write_all(&buf).await.is_err() {
                return;
            }
        }
    });
    // The link is busy until `free`; a chunk leaves the link `delay` after it was serialised.
    let mut free = tokio::time::Instant::now();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let now = tokio::time::Instant::now();
        let wire = Duration::from_secs_f64(n as f64 * 8.0 / bits_per_sec as f64);
        free = free.max(now) + wire;
        if tx.send((free + delay, buf[..n].to_vec())).is_err() {
            return;
        }
    }
}
