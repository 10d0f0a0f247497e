//! What the rpc protocols count: bytes received and sent on each, through [`Counted`], the
//! stream wrapper frames and bodies are read and written through. Process-wide atomics; the
//! node's metrics export reads them.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use libp2p::futures::{AsyncRead, AsyncWrite};

/// Bytes one protocol received and sent (frames and bodies, as read from and written to its
/// streams; below that, Noise and yamux add their own framing).
pub struct Traffic {
    received: AtomicU64,
    sent: AtomicU64,
}

impl Traffic {
    const fn new() -> Self {
        Self {
            received: AtomicU64::new(0),
            sent: AtomicU64::new(0),
        }
    }

    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

/// `/p2pfs/chunk/2`, both as client and as server.
pub static CHUNK_TRAFFIC: Traffic = Traffic::new();
/// `/p2pfs/sync/2`, both as initiator and as responder.
pub static SYNC_TRAFFIC: Traffic = Traffic::new();

/// A stream that counts the bytes read from and written to it into a [`Traffic`].
pub struct Counted<S> {
    inner: S,
    traffic: &'static Traffic,
    /// Bytes sent and received since the last [`Counted::take_tally`] (what the bandwidth
    /// limits charge).
    tally: (u64, u64),
}

impl<S> Counted<S> {
    pub fn new(inner: S, traffic: &'static Traffic) -> Self {
        Self {
            inner,
            traffic,
            tally: (0, 0),
        }
    }

    /// Bytes (sent, received) through this stream since the last call.
    pub fn take_tally(&mut self) -> (u64, u64) {
        std::mem::take(&mut self.tally)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            this.traffic.received.fetch_add(n as u64, Ordering::Relaxed);
            this.tally.1 += n as u64;
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            this.traffic.sent.fetch_add(n as u64, Ordering::Relaxed);
            this.tally.0 += n as u64;
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_streams_count_both_ways() {
        use libp2p::futures::executor::block_on;
        use libp2p::futures::io::{AsyncReadExt, AsyncWriteExt, Cursor};
        static T: Traffic = Traffic::new();
        block_on(async {
            let mut s = Counted::new(Cursor::new(vec![0u8; 100]), &T);
            let mut buf = [0u8; 40];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&[1u8; 25]).await.unwrap();
        });
        assert_eq!((T.received(), T.sent()), (40, 25));
    }
}
