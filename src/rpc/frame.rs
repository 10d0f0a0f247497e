//! Frames: a 4-byte big-endian length, then that many bytes of CBOR. A length over the
//! protocol's limit is refused before anything is allocated; a peer never makes us buffer more
//! than one frame of the declared maximum.
//!
//! Bulk data travels as a *body* after its frame (another 4-byte length, then raw bytes), so a
//! 1 MiB chunk is neither copied into nor parsed out of CBOR.

use std::sync::Arc;

use libp2p::PeerId;
use libp2p::futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use serde::{Serialize, de::DeserializeOwned};

use crate::net::guard::{Offence, PeerGuard};

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes is over the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("frame does not decode: {0}")]
    Decode(String),
    #[error("stream: {0}")]
    Io(#[from] std::io::Error),
}

/// Writes a frame followed by a raw body.
pub async fn write_frame_with_body<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    msg: &T,
    body: &[u8],
    max_body: usize,
) -> Result<(), FrameError> {
    if body.len() > max_body {
        return Err(FrameError::TooLarge {
            len: body.len(),
            max: max_body,
        });
    }
    let mut head = Vec::with_capacity(64);
    head.extend_from_slice(&[0; 4]);
    ciborium::into_writer(msg, &mut head).map_err(|e| FrameError::Decode(e.to_string()))?;
    let len = head.len() - 4;
    if len > MAX_HEADER {
        return Err(FrameError::TooLarge {
            len,
            max: MAX_HEADER,
        });
    }
    head[..4].copy_from_slice(&(len as u32).to_be_bytes());
    head.extend_from_slice(&(body.len() as u32).to_be_bytes());
    w.write_all(&head).await?;
    w.write_all(body).await?;
    w.flush().await?;
    Ok(())
}

/// Reads a frame and its body; `Ok(None)` when the peer closed the stream between frames.
/// The body is read straight into its buffer, never decoded.
pub async fn read_frame_with_body<R: AsyncRead + Unpin, T: DeserializeOwned>(
    r: &mut R,
    max_body: usize,
) -> Result<Option<(T, Vec<u8>)>, FrameError> {
    let Some(msg) = read_frame(r, MAX_HEADER).await? else {
        return Ok(None);
    };
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max_body {
        return Err(FrameError::TooLarge { len, max: max_body });
    }
    let body = read_exactly(r, len).await?;
    Ok(Some((msg, body)))
}

/// Most memory reserved for a frame before its bytes arrive: a legitimate chunk body fits, and
/// a peer that only declares a large length (then sends nothing) pins no more than this per
/// stream; beyond it the buffer grows with the bytes actually received.
const PREALLOCATE: usize = (1 << 20) + 4096;

/// Reads exactly `len` bytes (already checked against the cap), growing the buffer as they
/// arrive; `UnexpectedEof` when the stream ends first. The buffer is zeroed once per growth
/// (not on every poll, as `read_to_end` does) and never grows past `len`, so a 1 MiB chunk
/// costs one allocation and no copy.
async fn read_exactly<R: AsyncRead + Unpin>(r: &mut R, len: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len.min(PREALLOCATE)];
    let mut filled = 0;
    while filled < len {
        if filled == buf.len() {
            let grown = (buf.len() * 2).min(len);
            buf.resize(grown, 0);
        }
        let n = r.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        filled += n;
    }
    Ok(buf)
}

/// Largest CBOR header of a frame that carries a body.
pub const MAX_HEADER: usize = 64 * 1024;

/// Writes one frame.
pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    msg: &T,
    max: usize,
) -> Result<(), FrameError> {
    let mut buf = Vec::with_capacity(64);
    buf.extend_from_slice(&[0; 4]);
    ciborium::into_writer(msg, &mut buf).map_err(|e| FrameError::Decode(e.to_string()))?;
    let len = buf.len() - 4;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    buf[..4].copy_from_slice(&(len as u32).to_be_bytes());
    w.write_all(&buf).await?;
    w.flush().await?;
    Ok(())
}

/// Reads one frame; `Ok(None)` when the peer closed the stream cleanly between frames.
pub async fn read_frame<R: AsyncRead + Unpin, T: DeserializeOwned>(
    r: &mut R,
    max: usize,
) -> Result<Option<T>, FrameError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len[..1]).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    r.read_exact(&mut len[1..]).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let buf = read_exactly(r, len).await?;
    ciborium::from_reader(&buf[..])
        .map(Some)
        .map_err(|e| FrameError::Decode(e.to_string()))
}

/// Counts an error reading what `peer` sent against it, in `guard`: a length over
/// the cap is `Oversized`, bytes that do not decode are `Malformed`, and, when
/// `truncation_counts` (a server reading requests), a stream that ended mid-frame is
/// `Truncated` if its connection stays up. Other stream errors are nobody's offence.
pub fn report(
    guard: &Arc<PeerGuard>,
    peer: PeerId,
    error: &FrameError,
    truncation_counts: bool,
    what: &'static str,
) {
    match error {
        FrameError::TooLarge { .. } => guard.offence(peer, Offence::Oversized, what),
        FrameError::Decode(_) => guard.offence(peer, Offence::Malformed, what),
        FrameError::Io(e) if truncation_counts && e.kind() == std::io::ErrorKind::UnexpectedEof => {
            guard.truncated(peer, what)
        }
        FrameError::Io(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::futures::executor::block_on;
    use libp2p::futures::io::Cursor;

    #[derive(Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Msg {
        n: u32,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    }

    #[test]
    fn round_trip_and_limits() {
        block_on(async {
            let mut buf = Cursor::new(Vec::new());
            let m = Msg {
                n: 7,
                data: vec![1; 100],
            };
            write_frame(&mut buf, &m, 1000).await.unwrap();
            write_frame(&mut buf, &m, 1000).await.unwrap();
            assert!(matches!(
                write_frame(
                    &mut buf,
                    &Msg {
                        n: 1,
                        data: vec![0; 2000]
                    },
                    1000
                )
                .await,
                Err(FrameError::TooLarge { .. })
            ));
            buf.set_position(0);
            assert_eq!(
                read_frame::<_, Msg>(&mut buf, 1000).await.unwrap(),
                Some(Msg {
                    n: 7,
                    data: vec![1; 100]
                })
            );
            assert!(
                read_frame::<_, Msg>(&mut buf, 1000)
                    .await
                    .unwrap()
                    .is_some()
            );
            assert!(
                read_frame::<_, Msg>(&mut buf, 1000)
                    .await
                    .unwrap()
                    .is_none(),
                "clean end"
            );
        });
    }

    #[test]
    fn bodies_travel_raw_and_are_bounded() {
        block_on(async {
            let mut buf = Cursor::new(Vec::new());
            let m = Msg { n: 1, data: vec![] };
            write_frame_with_body(&mut buf, &m, &[7u8; 5000], 10_000)
                .await
                .unwrap();
            write_frame_with_body(&mut buf, &m, &[], 10_000)
                .await
                .unwrap();
            assert!(matches!(
                write_frame_with_body(&mut buf, &m, &[0u8; 20], 10).await,
                Err(FrameError::TooLarge { .. })
            ));
            buf.set_position(0);
            let (got, body) = read_frame_with_body::<_, Msg>(&mut buf, 10_000)
                .await
                .unwrap()
                .unwrap();
            assert_eq!((got, body), (Msg { n: 1, data: vec![] }, vec![7u8; 5000]));
            let (_, body) = read_frame_with_body::<_, Msg>(&mut buf, 10_000)
                .await
                .unwrap()
                .unwrap();
            assert!(body.is_empty());
            assert!(
                read_frame_with_body::<_, Msg>(&mut buf, 10_000)
                    .await
                    .unwrap()
                    .is_none()
            );
            // A body longer than allowed is refused before it is read; a short one is an error.
            let mut big = Cursor::new(Vec::new());
            write_frame_with_body(&mut big, &m, &[1u8; 100], 1000)
                .await
                .unwrap();
            big.set_position(0);
            assert!(matches!(
                read_frame_with_body::<_, Msg>(&mut big, 50).await,
                Err(FrameError::TooLarge { .. })
            ));
            let mut cut = Cursor::new(Vec::new());
            write_frame_with_body(&mut cut, &m, &[1u8; 100], 1000)
                .await
                .unwrap();
            let mut bytes = cut.into_inner();
            bytes.truncate(bytes.len() - 10);
            assert!(matches!(
                read_frame_with_body::<_, Msg>(&mut Cursor::new(bytes), 1000).await,
                Err(FrameError::Io(_))
            ));
        });
    }

    #[test]
    fn hostile_frames_are_errors() {
        block_on(async {
            // A declared length over the limit is refused without reading or allocating it.
            let mut huge = Cursor::new(vec![0xff, 0xff, 0xff, 0xff, 1, 2, 3]);
            assert!(matches!(
                read_frame::<_, Msg>(&mut huge, 1 << 20).await,
                Err(FrameError::TooLarge { .. })
            ));
            // Truncated body.
            let mut short = Cursor::new(vec![0, 0, 0, 10, 1, 2]);
            assert!(matches!(
                read_frame::<_, Msg>(&mut short, 100).await,
                Err(FrameError::Io(_))
            ));
            // Garbage body.
            let mut junk = Cursor::new(vec![0, 0, 0, 3, 0xff, 0xfe, 0xfd]);
            assert!(matches!(
                read_frame::<_, Msg>(&mut junk, 100).await,
                Err(FrameError::Decode(_))
            ));
        });
    }
}
