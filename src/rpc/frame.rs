//! Frames: a 4-byte big-endian length, then that many bytes of CBOR. A length over the
//! protocol's limit is refused before anything is allocated; a peer never makes us buffer more
//! than one frame of the declared maximum.

use libp2p::futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use serde::{Serialize, de::DeserializeOwned};

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes is over the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("frame does not decode: {0}")]
    Decode(String),
    #[error("stream: {0}")]
    Io(#[from] std::io::Error),
}

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
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await?;
    ciborium::from_reader(&buf[..])
        .map(Some)
        .map_err(|e| FrameError::Decode(e.to_string()))
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
