//! Our TCP transport for the `smb` crate, fixing two of its defects without touching its code.
//!
//! Data flow: `Connection::from_transport` splits this into a read half (the crate's receive
//! loop) and a write half (its send loop). We:
//! - set `TCP_NODELAY` and write the 4-byte direct-TCP header and the message in **one**
//!   write: the crate's default writes them separately, so every request waited ~40 ms for
//!   the server's delayed ACK (lab defect 1);
//! - meter credits the crate loses: it drops interim `STATUS_PENDING` responses, which carry
//!   the server's credit grant, and the final response of an async operation grants none
//!   (MS-SMB2 3.3.4.3). Each such exchange permanently removes the request's charge from the
//!   crate's credit semaphore, which has no timeout (lab defect 2). The meter adds those
//!   charges up per connection; the pool retires a connection well before the crate could
//!   starve, so no request ever waits for credits that will not come.

use futures_util::FutureExt;
use smb::transport::{IoVec, SmbTransport, SmbTransportRead, SmbTransportWrite, TransportError};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
type TRes<T> = Result<T, TransportError>;

const STATUS_PENDING: u32 = 0x0000_0103;
const FLAG_ASYNC: u32 = 0x0000_0002;

/// Credits the `smb` crate has lost on one connection, as seen on the wire.
#[derive(Debug, Default)]
pub struct CreditMeter {
    lost: AtomicU64,
    interims: AtomicU64,
}

impl CreditMeter {
    /// Credits the crate's semaphore has lost so far.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// Interim (`STATUS_PENDING`) responses seen.
    pub fn interims(&self) -> u64 {
        self.interims.load(Ordering::Relaxed)
    }

    /// Looks at one received SMB2 message (without the 4-byte frame header).
    fn observe(&self, msg: &[u8]) {
        // Plain SMB2 header (MS-SMB2 2.2.1): 0 ProtocolId `FE 'S' 'M' 'B'`, 6 CreditCharge,
        // 8 Status, 14 CreditResponse, 16 Flags. Transform/compressed frames are not used
        // (encryption and compression are off), so anything else is ignored.
        if msg.len() < 64 || msg[0..4] != [0xFE, b'S', b'M', b'B'] {
            return;
        }
        let u16_at = |i: usize| u16::from_le_bytes([msg[i], msg[i + 1]]) as u64;
        let u32_at = |i: usize| u32::from_le_bytes([msg[i], msg[i + 1], msg[i + 2], msg[i + 3]]);
        let (status, flags) = (u32_at(8), u32_at(16));
        if flags & FLAG_ASYNC == 0 {
            return;
        }
        if status == STATUS_PENDING {
            self.interims.fetch_add(1, Ordering::Relaxed);
        } else {
            // Final async response: the crate returns only this grant to its semaphore.
            let lost = u16_at(6).max(1).saturating_sub(u16_at(14));
            self.lost.fetch_add(lost, Ordering::Relaxed);
        }
    }
}

/// A TCP connection to an SMB server with `TCP_NODELAY`, single-write framing and a
/// [`CreditMeter`].
pub struct MeteredTcp {
    r: Option<OwnedReadHalf>,
    w: Option<OwnedWriteHalf>,
    peer: SocketAddr,
    meter: Arc<CreditMeter>,
}

impl MeteredTcp {
    /// Connects within `timeout`.
    ///
    /// # Errors
    /// [`TransportError::Timeout`] or the I/O error (refused, unreachable).
    pub async fn connect(
        addr: SocketAddr,
        timeout: Duration,
        meter: Arc<CreditMeter>,
    ) -> TRes<MeteredTcp> {
        let s = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| TransportError::Timeout(timeout))??;
        s.set_nodelay(true)?;
        let peer = s.peer_addr()?;
        let (r, w) = s.into_split();
        Ok(MeteredTcp {
            r: Some(r),
            w: Some(w),
            peer,
            meter,
        })
    }
}

impl SmbTransport for MeteredTcp {
    fn connect<'a>(&'a mut self, _: &'a str, _: SocketAddr) -> BoxFut<'a, TRes<()>> {
        async { Err(TransportError::AlreadyConnected) }.boxed()
    }
    fn default_port(&self) -> u16 {
        445
    }
    fn split(self: Box<Self>) -> TRes<(Box<dyn SmbTransportRead>, Box<dyn SmbTransportWrite>)> {
        let (peer, meter) = (self.peer, self.meter.clone());
        Ok((
            Box::new(MeteredTcp {
                r: self.r,
                w: None,
                peer,
                meter: meter.clone(),
            }),
            Box::new(MeteredTcp {
                r: None,
                w: self.w,
                peer,
                meter,
            }),
        ))
    }
    fn remote_address(&self) -> TRes<SocketAddr> {
        Ok(self.peer)
    }
}

impl SmbTransportRead for MeteredTcp {
    fn receive_exact<'a>(&'a mut self, out: &'a mut [u8]) -> BoxFut<'a, TRes<()>> {
        async move {
            let r = self.r.as_mut().ok_or(TransportError::NotConnected)?;
            r.read_exact(out).await.map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => TransportError::NotConnected,
                _ => e.into(),
            })?;
            Ok(())
        }
        .boxed()
    }

    fn receive<'a>(&'a mut self) -> BoxFut<'a, TRes<Vec<u8>>> {
        async move {
            let mut hdr = [0u8; 4];
            self.receive_exact(&mut hdr).await?;
            if hdr[0] != 0 {
                return Err(TransportError::InvalidMessage);
            }
            let len = u32::from_be_bytes([0, hdr[1], hdr[2], hdr[3]]) as usize;
            let mut body = vec![0u8; len];
            self.receive_exact(&mut body).await?;
            self.meter.observe(&body);
            Ok(body)
        }
        .boxed()
    }
}

impl SmbTransportWrite for MeteredTcp {
    fn send_raw<'a>(&'a mut self, buf: &'a [u8]) -> BoxFut<'a, TRes<()>> {
        async move {
            self.w
                .as_mut()
                .ok_or(TransportError::NotConnected)?
                .write_all(buf)
                .await?;
            Ok(())
        }
        .boxed()
    }

    fn send<'a>(&'a mut self, data: &'a IoVec) -> BoxFut<'a, TRes<()>> {
        async move {
            let len = data.total_size();
            let mut frame = Vec::with_capacity(4 + len);
            // Direct TCP transport: a zero byte and a 24-bit big-endian length.
            frame.extend_from_slice(&(len as u32).to_be_bytes());
            for part in data.iter() {
                frame.extend_from_slice(part);
            }
            self.send_raw(&frame).await
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(status: u32, flags: u32, charge: u16, grant: u16) -> Vec<u8> {
        let mut m = vec![0u8; 64];
        m[0..4].copy_from_slice(&[0xFE, b'S', b'M', b'B']);
        m[6..8].copy_from_slice(&charge.to_le_bytes());
        m[8..12].copy_from_slice(&status.to_le_bytes());
        m[14..16].copy_from_slice(&grant.to_le_bytes());
        m[16..20].copy_from_slice(&flags.to_le_bytes());
        m
    }

    #[test]
    fn meter_counts_only_async_final_losses() {
        let m = CreditMeter::default();
        m.observe(&header(0, 1, 16, 16)); // sync response: crate accounts it
        assert_eq!((m.lost(), m.interims()), (0, 0));
        m.observe(&header(STATUS_PENDING, 1 | FLAG_ASYNC, 16, 16)); // interim: dropped by crate
        m.observe(&header(0, 1 | FLAG_ASYNC, 16, 0)); // final: grants nothing
        assert_eq!((m.lost(), m.interims()), (16, 1));
        m.observe(&header(0, 1 | FLAG_ASYNC, 0, 0)); // charge 0 counts as 1
        assert_eq!(m.lost(), 17);
        m.observe(b"\xfdSMB not a plain header");
        assert_eq!(m.lost(), 17);
    }
}
