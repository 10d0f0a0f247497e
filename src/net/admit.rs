//! The admission handshake: right after Noise, before the muxer and so before any other
//! protocol, both ends of a connection show each other a hello and each decides whether to
//! admit the other. What a hello holds and how it is judged is not the network's business: an
//! [`Admission`] (the node's membership rules) makes and checks the bytes.
//!
//! On the wire, inside the Noise channel, the muxer negotiation offers `/p2pfs/admit/1`
//! ([`ADMIT_PROTOCOL`]); on it each side, at the same time:
//! 1. writes its hello as a u32 big-endian length and the bytes, and reads the other's (at most
//!    [`MAX_HELLO`]; a longer one is refused unread);
//! 2. checks it ([`Admission::check`]) and writes its verdict as a u32 length and a body: `0`
//!    (admitted), `1` and a grant (admitted, and here is something minted for you, at most
//!    [`MAX_HELLO`]) or `2` and a reason (refused; UTF-8, at most [`MAX_REASON`] bytes), and
//!    reads the other's;
//! 3. if both admitted, runs yamux on the same channel; otherwise the connection fails with an
//!    [`AdmitError`] naming who refused whom and why.
//!
//! The whole exchange is within the transport's handshake timeout
//! (`limits::HANDSHAKE_TIMEOUT`): a peer that stalls or sends garbage is closed by then.
//!
//! An [`Admission`] that admits plain connections ([`Admission::admits_plain`], a key-only
//! network) also offers plain `/yamux/1.0.0`, which is what nodes made before the handshake
//! existed speak: they connect without it. One that does not (a certified network) offers only
//! `/p2pfs/admit/1`, so such nodes fail at the negotiation.

use std::sync::Arc;
use std::time::SystemTime;

use libp2p::PeerId;
use libp2p::core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo};
use libp2p::futures::future::BoxFuture;
use libp2p::futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::yamux;

/// The admission handshake's protocol name.
pub const ADMIT_PROTOCOL: &str = "/p2pfs/admit/1";
/// Plain yamux, as nodes without the handshake speak it.
pub const YAMUX_PROTOCOL: &str = "/yamux/1.0.0";
/// Largest hello, and largest grant, read from a peer.
pub const MAX_HELLO: usize = 512 * 1024;
/// Largest refusal reason sent or read (longer ones are cut when sent).
pub const MAX_REASON: usize = 1024;

const VERDICT_OK: u8 = 0;
const VERDICT_GRANT: u8 = 1;
const VERDICT_REFUSED: u8 = 2;

/// The node's membership rules, as the handshake sees them: bytes only (the network knows no
/// certificate format). Called from the connection's handshake task, off the async runtime's
/// threads (they may take a while: a hello can carry a ledger to verify).
pub trait Admission: Send + Sync + 'static {
    /// What this node shows `remote` (`dialer`: this node opened the connection). The peer
    /// refuses a hello over [`MAX_HELLO`].
    fn hello(&self, remote: &PeerId, dialer: bool) -> Vec<u8>;
    /// Whether to admit `remote`, whose hello this is: `Ok` with what to hand it (a grant, at
    /// most [`MAX_HELLO`]), or the reason it is refused (shown to it, cut to [`MAX_REASON`]).
    fn check(&self, remote: &PeerId, hello: &[u8]) -> Result<Option<Vec<u8>>, String>;
    /// `remote` admitted this node and handed it `grant`.
    fn granted(&self, remote: &PeerId, grant: &[u8]);
    /// `remote` refused this node, for `reason` (its words, untrusted).
    fn refused(&self, remote: &PeerId, reason: &str);
    /// Whether connections without the handshake (plain yamux, as nodes made before it speak)
    /// are admitted: true in a key-only network, where holding the network key is membership,
    /// false in a certified one. Asked for every new connection, so a switch of mode applies
    /// to the next one.
    fn admits_plain(&self) -> bool;
}

/// A key-only network's rules: everyone who completed Noise with the network key is a member.
/// Shows an empty hello, admits every hello, and admits nodes without the handshake.
#[derive(Clone, Copy, Debug, Default)]
pub struct KeyOnlyAdmission;

impl Admission for KeyOnlyAdmission {
    fn hello(&self, _: &PeerId, _: bool) -> Vec<u8> {
        Vec::new()
    }

    fn check(&self, _: &PeerId, _: &[u8]) -> Result<Option<Vec<u8>>, String> {
        Ok(None)
    }

    fn granted(&self, _: &PeerId, _: &[u8]) {}

    fn refused(&self, remote: &PeerId, reason: &str) {
        tracing::debug!(%remote, reason, "refused by a peer (key-only node)");
    }

    fn admits_plain(&self) -> bool {
        true
    }
}

/// Why a connection failed its admission handshake.
#[derive(Debug, thiserror::Error)]
pub enum AdmitError {
    /// One side refused the other, or both did.
    #[error("{}", refusal_text(.peer, .by_us.as_deref(), .by_peer.as_deref()))]
    Refused {
        peer: PeerId,
        /// This node refused the peer, for this reason.
        by_us: Option<String>,
        /// The peer refused this node, for this reason.
        by_peer: Option<String>,
    },
    /// The peer broke the handshake's format.
    #[error("admission handshake with {peer}: {what}")]
    Protocol { peer: PeerId, what: String },
    /// The connection failed during the handshake.
    #[error("admission handshake with {peer}: {source}")]
    Io {
        peer: PeerId,
        #[source]
        source: std::io::Error,
    },
}

fn refusal_text(peer: &PeerId, by_us: Option<&str>, by_peer: Option<&str>) -> String {
    match (by_us, by_peer) {
        (Some(us), Some(them)) => {
            format!("refused peer {peer}: {us}; and peer {peer} refused this node: {them}")
        }
        (Some(us), None) => format!("refused peer {peer}: {us}"),
        (None, Some(them)) => format!("peer {peer} refused this node: {them}"),
        (None, None) => format!("admission handshake with {peer} failed"),
    }
}

/// Who refused whom.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RefusalSide {
    /// This node refused the peer.
    ByUs,
    /// The peer refused this node.
    ByPeer,
}

/// A refusal, as the node keeps it for `status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdmissionRefusal {
    pub at: SystemTime,
    pub peer: PeerId,
    pub side: RefusalSide,
    pub reason: String,
}

/// The refusals one node's network saw since it started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AdmissionRefusals {
    /// Peers this node refused (once per refused connection).
    pub refused_peers: u64,
    /// Times a peer refused this node.
    pub refused_by_peers: u64,
    pub last: Option<AdmissionRefusal>,
}

/// The admission error somewhere in a transport error's chain, if any (the transport's layers
/// box it into `io::Error`s, whose `source` skips the boxed error itself).
pub(super) fn find_admit_error<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a AdmitError> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(admit) = e.downcast_ref::<AdmitError>() {
            return Some(admit);
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            current = Some(inner);
            continue;
        }
        current = e.source();
    }
    None
}

/// The muxer upgrade of every connection: the admission handshake, then yamux on the same
/// channel (see the module docs). Made per connection, for its authenticated peer.
#[derive(Clone)]
pub struct AdmitThenYamux {
    admission: Arc<dyn Admission>,
    peer: PeerId,
    yamux: yamux::Config,
}

impl AdmitThenYamux {
    pub fn new(admission: Arc<dyn Admission>, peer: PeerId, yamux: yamux::Config) -> Self {
        Self {
            admission,
            peer,
            yamux,
        }
    }

    async fn upgrade<C>(
        self,
        mut socket: C,
        protocol: &'static str,
        dialer: bool,
    ) -> Result<yamux::Muxer<C>, AdmitError>
    where
        C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let peer = self.peer;
        if protocol == ADMIT_PROTOCOL {
            self.admit(&mut socket, dialer).await?;
        } else if !self.admission.admits_plain() {
            // Offered only when plain connections are admitted; the mode changed since.
            return Err(AdmitError::Refused {
                peer,
                by_us: Some("this node admits only peers that pass the admission handshake".into()),
                by_peer: None,
            });
        }
        let muxer = if dialer {
            self.yamux.upgrade_outbound(socket, YAMUX_PROTOCOL).await
        } else {
            self.yamux.upgrade_inbound(socket, YAMUX_PROTOCOL).await
        };
        muxer.map_err(|source| AdmitError::Io { peer, source })
    }

    async fn admit<C>(&self, socket: &mut C, dialer: bool) -> Result<(), AdmitError>
    where
        C: AsyncRead + AsyncWrite + Send + Unpin,
    {
        let peer = self.peer;
        let io = |source| AdmitError::Io { peer, source };
        let admission = self.admission.clone();
        let hello = off_runtime(peer, move || admission.hello(&peer, dialer)).await?;
        if hello.len() > MAX_HELLO {
            tracing::warn!(%peer, bytes = hello.len(), limit = MAX_HELLO, "this node's admission hello is over the limit; the peer will refuse it");
        }

        // Both ends write and read at once: neither waits for the other to read first, so two
        // large hellos cannot fill both sides' buffers and stall.
        let (theirs, written) = {
            let (mut reader, mut writer) = (&mut *socket).split();
            libp2p::futures::join!(
                read_frame(&mut reader, MAX_HELLO),
                write_frame(&mut writer, &hello)
            )
        };
        written.map_err(io)?;
        let (ours, desynced) = match theirs.map_err(io)? {
            // Their hello is left unread, so whatever they send next cannot be framed.
            Frame::TooLong(len) => (
                Verdict::Refused(format!(
                    "hello of {len} bytes is over the {MAX_HELLO}-byte limit"
                )),
                true,
            ),
            Frame::Bytes(hello) => {
                let admission = self.admission.clone();
                let verdict = match off_runtime(peer, move || admission.check(&peer, &hello))
                    .await?
                {
                    Ok(Some(grant)) if grant.len() > MAX_HELLO => {
                        return Err(AdmitError::Protocol {
                            peer,
                            what: format!(
                                "this node's grant of {} bytes is over the {MAX_HELLO}-byte limit",
                                grant.len()
                            ),
                        });
                    }
                    Ok(grant) => Verdict::Admitted(grant),
                    Err(reason) => Verdict::Refused(cut(reason, MAX_REASON)),
                };
                (verdict, false)
            }
        };

        let encoded = ours.encode();
        let (theirs, written) = {
            let (mut reader, mut writer) = (&mut *socket).split();
            libp2p::futures::join!(
                async {
                    if desynced {
                        return None;
                    }
                    Some(match read_frame(&mut reader, MAX_HELLO + 1).await {
                        Ok(Frame::Bytes(body)) => {
                            Verdict::decode(&body).ok_or_else(|| AdmitError::Protocol {
                                peer,
                                what: "malformed verdict".into(),
                            })
                        }
                        Ok(Frame::TooLong(len)) => Err(AdmitError::Protocol {
                            peer,
                            what: format!("verdict of {len} bytes"),
                        }),
                        Err(source) => Err(AdmitError::Io { peer, source }),
                    })
                },
                write_frame(&mut writer, &encoded)
            )
        };
        if let Verdict::Refused(by_us) = ours {
            // Refused: whatever they answered, the connection ends here (their refusal, if
            // they sent one, is passed on too).
            let by_peer = match theirs {
                Some(Ok(Verdict::Refused(reason))) => Some(reason),
                _ => None,
            };
            if let Some(reason) = &by_peer {
                self.told_refused(reason).await?;
            }
            let _ = socket.close().await;
            return Err(AdmitError::Refused {
                peer,
                by_us: Some(by_us),
                by_peer,
            });
        }
        written.map_err(io)?;
        match theirs.expect("read unless desynced, and a desynced peer is refused")? {
            Verdict::Refused(reason) => {
                self.told_refused(&reason).await?;
                let _ = socket.close().await;
                Err(AdmitError::Refused {
                    peer,
                    by_us: None,
                    by_peer: Some(reason),
                })
            }
            Verdict::Admitted(grant) => {
                if let Some(grant) = grant {
                    let admission = self.admission.clone();
                    off_runtime(peer, move || admission.granted(&peer, &grant)).await?;
                }
                Ok(())
            }
        }
    }

    async fn told_refused(&self, reason: &str) -> Result<(), AdmitError> {
        let (admission, peer, reason) = (self.admission.clone(), self.peer, reason.to_string());
        off_runtime(peer, move || admission.refused(&peer, &reason)).await
    }
}

/// Runs `f` on the blocking pool when there is a tokio runtime (the handshake's calls into
/// [`Admission`] may verify signatures by the thousand), inline otherwise.
async fn off_runtime<T: Send + 'static>(
    peer: PeerId,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, AdmitError> {
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => rt.spawn_blocking(f).await.map_err(|e| AdmitError::Io {
            peer,
            source: std::io::Error::other(format!("admission call failed: {e}")),
        }),
        Err(_) => Ok(f()),
    }
}

/// `s` cut to at most `max` bytes, on a character boundary.
fn cut(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

enum Frame {
    Bytes(Vec<u8>),
    /// A frame announced longer than allowed (its bytes left unread).
    TooLong(u64),
}

async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, max: usize) -> std::io::Result<Frame> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len);
    if len as usize > max {
        return Ok(Frame::TooLong(len.into()));
    }
    let mut bytes = vec![0u8; len as usize];
    r.read_exact(&mut bytes).await?;
    Ok(Frame::Bytes(bytes))
}

async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(bytes.len())
        .map_err(|_| std::io::Error::other("admission frame over 4 GiB"))?;
    w.write_all(&len.to_be_bytes()).await?;
    w.write_all(bytes).await?;
    w.flush().await
}

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Admitted(Option<Vec<u8>>),
    Refused(String),
}

impl Verdict {
    fn encode(&self) -> Vec<u8> {
        match self {
            Verdict::Admitted(None) => vec![VERDICT_OK],
            Verdict::Admitted(Some(grant)) => {
                let mut body = Vec::with_capacity(1 + grant.len());
                body.push(VERDICT_GRANT);
                body.extend_from_slice(grant);
                body
            }
            Verdict::Refused(reason) => {
                let mut body = Vec::with_capacity(1 + reason.len());
                body.push(VERDICT_REFUSED);
                body.extend_from_slice(reason.as_bytes());
                body
            }
        }
    }

    fn decode(body: &[u8]) -> Option<Verdict> {
        let (tag, rest) = body.split_first()?;
        match *tag {
            VERDICT_OK if rest.is_empty() => Some(Verdict::Admitted(None)),
            VERDICT_GRANT if rest.len() <= MAX_HELLO => {
                Some(Verdict::Admitted(Some(rest.to_vec())))
            }
            VERDICT_REFUSED if rest.len() <= MAX_REASON => {
                Some(Verdict::Refused(String::from_utf8_lossy(rest).into_owned()))
            }
            _ => None,
        }
    }
}

impl UpgradeInfo for AdmitThenYamux {
    type Info = &'static str;
    type InfoIter = Vec<&'static str>;

    fn protocol_info(&self) -> Self::InfoIter {
        if self.admission.admits_plain() {
            vec![ADMIT_PROTOCOL, YAMUX_PROTOCOL]
        } else {
            vec![ADMIT_PROTOCOL]
        }
    }
}

impl<C> InboundConnectionUpgrade<C> for AdmitThenYamux
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = yamux::Muxer<C>;
    type Error = AdmitError;
    type Future = BoxFuture<'static, Result<Self::Output, Self::Error>>;

    fn upgrade_inbound(self, socket: C, protocol: Self::Info) -> Self::Future {
        Box::pin(self.upgrade(socket, protocol, false))
    }
}

impl<C> OutboundConnectionUpgrade<C> for AdmitThenYamux
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = yamux::Muxer<C>;
    type Error = AdmitError;
    type Future = BoxFuture<'static, Result<Self::Output, Self::Error>>;

    fn upgrade_outbound(self, socket: C, protocol: Self::Info) -> Self::Future {
        Box::pin(self.upgrade(socket, protocol, true))
    }
}
