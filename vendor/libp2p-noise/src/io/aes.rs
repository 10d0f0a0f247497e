//! The transport of [`crate::PROTOCOL_AES_GCM`] (p2pfs's addition).
//!
//! The wire format is Noise's transport phase with the AESGCM cipher: each message is a 2-byte
//! big-endian length, then the AES-256-GCM ciphertext and its 16-byte tag; the nonce is 4 zero
//! bytes and a 64-bit big-endian counter per direction, the associated data is empty, and each
//! direction has its own key (Noise's `Split()`). What differs from snow's transport is where
//! the bytes live: a message is sealed in place in the outgoing buffer and opened in place in
//! the incoming one, so the plaintext is copied once on each side (from the writer's buffer,
//! into the reader's), where snow's path copies it three times and zero-fills buffers per
//! message; and the socket is read and written up to four messages at a time.

use std::{
    cmp::min,
    io,
    pin::Pin,
    task::{Context, Poll},
};

use futures::{AsyncRead, AsyncWrite, ready};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use zeroize::Zeroize;

/// Largest Noise message (ciphertext and tag).
const MAX_MESSAGE: usize = 65535;
/// The AEAD tag.
const TAG: usize = 16;
/// The length prefix.
const HEADER: usize = 2;
/// Largest plaintext of one message.
const MAX_PLAINTEXT: usize = MAX_MESSAGE - TAG;
/// Sealed bytes a writer may queue before it waits for the socket.
const SEND_HIGH_WATER: usize = 4 * (HEADER + MAX_MESSAGE);
/// The incoming buffer: room for a message and the start of the next, read at once.
const RECV_BUFFER: usize = 2 * (HEADER + MAX_MESSAGE);

/// The two transport keys of one side: what it sends, what it receives.
pub(crate) struct Keys {
    send: [u8; 32],
    recv: [u8; 32],
}

impl Keys {
    pub(crate) fn new(send: [u8; 32], recv: [u8; 32]) -> Self {
        Keys { send, recv }
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        self.send.zeroize();
        self.recv.zeroize();
    }
}

/// One direction's cipher state.
struct Direction {
    key: LessSafeKey,
    nonce: u64,
}

impl Direction {
    fn new(key: &[u8; 32]) -> Self {
        Direction {
            key: LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("a 32-byte key")),
            nonce: 0,
        }
    }

    /// The next message's nonce; Noise reserves 2^64-1, so the session ends before it.
    fn next_nonce(&mut self) -> io::Result<Nonce> {
        if self.nonce == u64::MAX {
            return Err(io::Error::other("noise: nonces exhausted"));
        }
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&self.nonce.to_be_bytes());
        self.nonce += 1;
        Ok(Nonce::assume_unique_for_key(nonce))
    }
}

pub(crate) struct AesIo<T> {
    io: T,
    send: Direction,
    recv: Direction,
    /// Outgoing bytes: sealed messages from `out_pos` on, then, from `open_at` when a message
    /// is being filled, its length placeholder and plaintext so far.
    out: Vec<u8>,
    out_pos: usize,
    open_at: Option<usize>,
    /// Incoming bytes: `inb[in_start..in_end]` received and not yet opened; the plaintext of
    /// the last opened message, not yet read, is `inb[plain_start..plain_end]`.
    inb: Vec<u8>,
    in_start: usize,
    in_end: usize,
    plain_start: usize,
    plain_end: usize,
    /// A message failed to open: the session is over.
    broken: bool,
    /// A message failed to seal: nothing more is sent.
    send_broken: bool,
}

impl<T> AesIo<T> {
    /// `received` are bytes read past the handshake, `unsent` handshake bytes not yet written.
    pub(crate) fn new(io: T, keys: Keys, received: &[u8], unsent: &[u8]) -> Self {
        let mut inb = Vec::new();
        if !received.is_empty() {
            inb.resize(RECV_BUFFER.max(received.len() + HEADER + MAX_MESSAGE), 0);
            inb[..received.len()].copy_from_slice(received);
        }
        AesIo {
            io,
            send: Direction::new(&keys.send),
            recv: Direction::new(&keys.recv),
            out: unsent.to_vec(),
            out_pos: 0,
            open_at: None,
            inb,
            in_start: 0,
            in_end: received.len(),
            plain_start: 0,
            plain_end: 0,
            broken: false,
            send_broken: false,
        }
    }

    /// Opens the next whole message in the incoming buffer, if there is one.
    fn open_next(&mut self) -> io::Result<bool> {
        let available = self.in_end - self.in_start;
        if available < HEADER {
            return Ok(false);
        }
        let at = self.in_start;
        let len = u16::from_be_bytes([self.inb[at], self.inb[at + 1]]) as usize;
        if available < HEADER + len {
            return Ok(false);
        }
        if len < TAG {
            self.broken = true;
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "noise: message shorter than its tag",
            ));
        }
        let start = at + HEADER;
        let nonce = self.recv.next_nonce()?;
        let plaintext = match self.recv.key.open_in_place(
            nonce,
            Aad::empty(),
            &mut self.inb[start..start + len],
        ) {
            Ok(plaintext) => plaintext.len(),
            Err(_) => {
                self.broken = true;
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "noise: decryption failed",
                ));
            }
        };
        self.plain_start = start;
        self.plain_end = start + plaintext;
        self.in_start = start + len;
        Ok(true)
    }

    /// Seals the message being filled, if any. On failure its plaintext is dropped, never
    /// sent, and the sending side stays failed.
    fn seal_open(&mut self) -> io::Result<()> {
        let Some(at) = self.open_at.take() else {
            return Ok(());
        };
        let start = at + HEADER;
        let plaintext = self.out.len() - start;
        if plaintext == 0 {
            self.out.truncate(at);
            return Ok(());
        }
        let sealed = self.send.next_nonce().and_then(|nonce| {
            self.send
                .key
                .seal_in_place_separate_tag(nonce, Aad::empty(), &mut self.out[start..])
                .map_err(|_| io::Error::other("noise: encryption failed"))
        });
        let tag = match sealed {
            Ok(tag) => tag,
            Err(e) => {
                self.out.truncate(at);
                self.send_broken = true;
                return Err(e);
            }
        };
        self.out.extend_from_slice(tag.as_ref());
        let len = u16::try_from(plaintext + TAG).expect("a message fits its length prefix");
        self.out[at..start].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }
}

impl<T: AsyncRead + Unpin> AesIo<T> {
    pub(crate) fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if self.broken {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "noise: session failed",
            )));
        }
        loop {
            if self.plain_start < self.plain_end {
                let n = min(buf.len(), self.plain_end - self.plain_start);
                buf[..n].copy_from_slice(&self.inb[self.plain_start..self.plain_start + n]);
                self.plain_start += n;
                return Poll::Ready(Ok(n));
            }
            if self.open_next()? {
                continue;
            }
            if self.inb.len() < RECV_BUFFER {
                self.inb.resize(RECV_BUFFER, 0);
            }
            if self.in_start == self.in_end {
                self.in_start = 0;
                self.in_end = 0;
            } else if self.inb.len() - self.in_end < HEADER + MAX_MESSAGE {
                // Not sure to fit the rest of the partial message: move it to the front.
                self.inb.copy_within(self.in_start..self.in_end, 0);
                self.in_end -= self.in_start;
                self.in_start = 0;
            }
            let n = ready!(Pin::new(&mut self.io).poll_read(cx, &mut self.inb[self.in_end..]))?;
            if n == 0 {
                if self.in_start == self.in_end {
                    return Poll::Ready(Ok(0));
                }
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "noise: connection closed in the middle of a message",
                )));
            }
            self.in_end += n;
        }
    }
}

impl<T: AsyncWrite + Unpin> AesIo<T> {
    /// Writes the sealed bytes; `Ready(Ok)` once all of them are with the socket.
    fn poll_send_sealed(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let end = self.open_at.unwrap_or(self.out.len());
        while self.out_pos < end {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.out[self.out_pos..end]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_pos += n;
        }
        Poll::Ready(Ok(()))
    }

    pub(crate) fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.send_broken {
            return Poll::Ready(Err(io::Error::other("noise: session failed")));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let at = match self.open_at {
            Some(at) => at,
            None => {
                if self.out.len() - self.out_pos >= SEND_HIGH_WATER {
                    ready!(self.poll_send_sealed(cx))?;
                }
                if self.out_pos == self.out.len() {
                    self.out.clear();
                    self.out_pos = 0;
                } else if self.out_pos >= SEND_HIGH_WATER {
                    self.out.drain(..self.out_pos);
                    self.out_pos = 0;
                }
                let at = self.out.len();
                self.out.extend_from_slice(&[0; HEADER]);
                self.open_at = Some(at);
                at
            }
        };
        let filled = self.out.len() - at - HEADER;
        let n = min(buf.len(), MAX_PLAINTEXT - filled);
        self.out.extend_from_slice(&buf[..n]);
        if filled + n == MAX_PLAINTEXT {
            self.seal_open()?;
        }
        Poll::Ready(Ok(n))
    }

    pub(crate) fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.send_broken {
            return Poll::Ready(Err(io::Error::other("noise: session failed")));
        }
        self.seal_open()?;
        ready!(self.poll_send_sealed(cx))?;
        self.out.clear();
        self.out_pos = 0;
        // A burst's buffer is not kept for an idle connection.
        if self.out.capacity() > SEND_HIGH_WATER + HEADER + MAX_MESSAGE {
            self.out.shrink_to(HEADER + MAX_MESSAGE);
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }

    pub(crate) fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_flush(cx))?;
        Pin::new(&mut self.io).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The format is Noise's AESGCM transport: what snow's transport state (the reference
    /// implementation) seals, this opens, and the other way round.
    #[test]
    fn messages_match_snows_aesgcm_transport() {
        use futures::executor::block_on;
        let params: snow::params::NoiseParams = "Noise_NN_25519_AESGCM_SHA256".parse().unwrap();
        let builder =
            || snow::Builder::with_resolver(params.clone(), Box::new(crate::protocol::Resolver));
        let mut initiator = builder().build_initiator().unwrap();
        let mut responder = builder().build_responder().unwrap();
        let (mut a, mut b) = (vec![0u8; 1024], vec![0u8; 1024]);
        let n = initiator.write_message(&[], &mut a).unwrap();
        responder.read_message(&a[..n], &mut b).unwrap();
        let n = responder.write_message(&[], &mut a).unwrap();
        initiator.read_message(&a[..n], &mut b).unwrap();
        let (k1, k2) = initiator.dangerously_get_raw_split();
        let mut snow_responder = responder.into_transport_mode().unwrap();

        // Ours as the initiator, over an in-memory pipe we can inspect.
        let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut ours = AesIo::new(Vec::<u8>::new(), Keys::new(k1, k2), &[], &[]);
        block_on(futures::future::poll_fn(|cx| {
            let mut sent = 0;
            while sent < payload.len() {
                sent += ready!(ours.poll_write(cx, &payload[sent..]))?;
            }
            ours.poll_flush(cx)
        }))
        .unwrap();
        let wire = ours.io.clone();
        let mut at = 0;
        let mut got = Vec::new();
        while at < wire.len() {
            let len = u16::from_be_bytes([wire[at], wire[at + 1]]) as usize;
            let mut out = vec![0u8; len];
            let n = snow_responder
                .read_message(&wire[at + 2..at + 2 + len], &mut out)
                .unwrap();
            got.extend_from_slice(&out[..n]);
            at += 2 + len;
        }
        assert_eq!(got, payload);

        // The responder's messages, sealed by snow, read by ours.
        let mut wire = Vec::new();
        for piece in payload.chunks(MAX_PLAINTEXT) {
            let mut out = vec![0u8; piece.len() + TAG];
            let n = snow_responder.write_message(piece, &mut out).unwrap();
            wire.extend_from_slice(&(n as u16).to_be_bytes());
            wire.extend_from_slice(&out[..n]);
        }
        // A flipped bit anywhere fails the message, and the session stays failed.
        let mut tampered = wire.clone();
        tampered[70_000] ^= 1;
        let mut bad = AesIo::new(
            futures::io::Cursor::new(tampered),
            Keys::new(k1, k2),
            &[],
            &[],
        );
        block_on(async {
            let mut buf = vec![0u8; MAX_MESSAGE];
            let first = futures::future::poll_fn(|cx| bad.poll_read(cx, &mut buf)).await;
            assert_eq!(first.unwrap(), MAX_PLAINTEXT, "the first message is intact");
            for _ in 0..2 {
                let e = futures::future::poll_fn(|cx| bad.poll_read(cx, &mut buf))
                    .await
                    .unwrap_err();
                assert_eq!(e.kind(), io::ErrorKind::InvalidData);
            }
        });
        let mut reader = AesIo::new(futures::io::Cursor::new(wire), Keys::new(k1, k2), &[], &[]);
        let mut got = Vec::new();
        block_on(async {
            let mut buf = vec![0u8; 7000];
            loop {
                let n = futures::future::poll_fn(|cx| reader.poll_read(cx, &mut buf))
                    .await
                    .unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
        });
        assert_eq!(got, payload);
    }

    /// A message that cannot be sealed (nonces exhausted) is never sent in the clear, and the
    /// session sends nothing more.
    #[test]
    fn a_failed_seal_sends_nothing() {
        use futures::executor::block_on;
        let mut ours = AesIo::new(Vec::<u8>::new(), Keys::new([1; 32], [2; 32]), &[], &[]);
        ours.send.nonce = u64::MAX;
        let secret = b"plaintext that must not leak";
        let result = block_on(futures::future::poll_fn(|cx| {
            ready!(ours.poll_write(cx, secret))?;
            ours.poll_flush(cx)
        }));
        assert!(result.is_err());
        assert!(
            ours.io.is_empty(),
            "bytes reached the socket: {:?}",
            ours.io
        );
        assert!(ours.out.is_empty());
        let again = block_on(futures::future::poll_fn(|cx| ours.poll_write(cx, secret)));
        assert!(again.is_err());
    }
}
