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
use std::time::{Duration, SystemTime};

use libp2p::PeerId;
use libp2p::core::upgrade::{
    InboundConnectionUpgrade, Negotiated, OutboundConnectionUpgrade, UpgradeInfo,
};
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

/// Peers whose last refusal is remembered so as not to log it again; past this the memory is
/// cleared (a refusal is then logged once more).
const MAX_REFUSALS_LOGGED: usize = 4096;

/// Which refusals were logged: each is logged once per peer and side, and again when its
/// reason changes (a peer redialled every few seconds is not a warning every few seconds).
#[derive(Default)]
pub(super) struct RefusalLog {
    last: std::collections::HashMap<(PeerId, RefusalSide), String>,
}

impl RefusalLog {
    /// Whether this refusal is to be logged (and from now on, not again).
    pub(super) fn is_new(&mut self, peer: PeerId, side: RefusalSide, reason: &str) -> bool {
        if self.last.get(&(peer, side)).is_some_and(|r| r == reason) {
            return false;
        }
        if self.last.len() >= MAX_REFUSALS_LOGGED {
            self.last.clear();
        }
        self.last.insert((peer, side), reason.to_string());
        true
    }
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
    /// Blocked peers are refused in the handshake itself, so that they never see a connection
    /// established (the block list would otherwise close it only after it was).
    guard: Arc<super::guard::PeerGuard>,
    peer: PeerId,
    yamux: yamux::Config,
}

/// What a blocked peer is told.
const BLOCKED: &str =
    "this node has blocked yours (expelled from the network, or repeated offences)";

impl AdmitThenYamux {
    pub fn new(
        admission: Arc<dyn Admission>,
        guard: Arc<super::guard::PeerGuard>,
        peer: PeerId,
        yamux: yamux::Config,
    ) -> Self {
        Self {
            admission,
            guard,
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
        } else if self.guard.is_blocked(&peer) {
            return Err(AdmitError::Refused {
                peer,
                by_us: Some(BLOCKED.into()),
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
        let (theirs, hello_written) = {
            let (mut reader, mut writer) = (&mut *socket).split();
            libp2p::futures::join!(
                read_frame(&mut reader, MAX_HELLO),
                write_frame(&mut writer, &hello)
            )
        };
        // A failed write is reported after their verdict: a peer that refused our hello may
        // have closed before taking all of it, and its reason is what matters.
        let mut unread = 0u64;
        let (ours, desynced) = match theirs.map_err(io)? {
            // Their hello is left unread, so whatever they send next cannot be framed.
            Frame::TooLong(len) => {
                unread = len;
                (
                    Verdict::Refused(format!(
                        "hello of {len} bytes is over the {MAX_HELLO}-byte limit"
                    )),
                    true,
                )
            }
            Frame::Bytes(_) if self.guard.is_blocked(&peer) => {
                (Verdict::Refused(BLOCKED.into()), false)
            }
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
        let by_us = match ours {
            Verdict::Refused(reason) => Some(reason),
            Verdict::Admitted(_) => None,
        };
        let (theirs, by_peer) = match theirs {
            Some(Ok(Verdict::Refused(reason))) => (None, Some(reason)),
            other => (other, None),
        };
        if by_us.is_some() || by_peer.is_some() {
            if let Some(reason) = &by_peer {
                self.told_refused(reason).await?;
            }
            if unread > 0 {
                drain_unread(socket, unread).await;
            }
            let _ = socket.close().await;
            return Err(AdmitError::Refused {
                peer,
                by_us,
                by_peer,
            });
        }
        hello_written.map_err(io)?;
        written.map_err(io)?;
        match theirs {
            Some(Ok(Verdict::Admitted(grant))) => {
                if let Some(grant) = grant {
                    let admission = self.admission.clone();
                    off_runtime(peer, move || admission.granted(&peer, &grant)).await?;
                }
                Ok(())
            }
            Some(Err(e)) => Err(e),
            // Their hello is read unless it was too long, and then we refused (above).
            Some(Ok(Verdict::Refused(_))) | None => Err(AdmitError::Protocol {
                peer,
                what: "no verdict".into(),
            }),
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

/// Reads and drops what is left of a refused, over-long hello (at most twice the limit, for
/// at most [`DRAIN_FOR`]) before the connection is closed: closing with unread bytes makes
/// the kernel reset the connection, and a reset can discard the refusal the peer has not read
/// yet, leaving it without the reason.
async fn drain_unread<R: AsyncRead + Unpin>(r: &mut R, declared: u64) {
    let limit = declared.min(2 * MAX_HELLO as u64);
    let mut sink = libp2p::futures::io::sink();
    let copy = libp2p::futures::io::copy(r.take(limit), &mut sink);
    if tokio::runtime::Handle::try_current().is_ok() {
        let _ = tokio::time::timeout(DRAIN_FOR, copy).await;
    }
}

/// How long a refused, over-long hello is drained at most.
const DRAIN_FOR: Duration = Duration::from_secs(2);

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

/// The dialer waits for the listener to confirm the protocol before its hello: the transport
/// negotiates lazily, and a listener that does not speak it (a node before certificates)
/// answers "not available" while the dialer writes, which left the stream in a state where the
/// write panicked (multistream-select's `Negotiated: Invalid state`).
impl<C> OutboundConnectionUpgrade<Negotiated<C>> for AdmitThenYamux
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = yamux::Muxer<Negotiated<C>>;
    type Error = AdmitError;
    type Future = BoxFuture<'static, Result<Self::Output, Self::Error>>;

    fn upgrade_outbound(self, socket: Negotiated<C>, protocol: Self::Info) -> Self::Future {
        Box::pin(async move {
            let peer = self.peer;
            let socket = socket.complete().await.map_err(|e| AdmitError::Io {
                peer,
                source: e.into(),
            })?;
            self.upgrade(socket, protocol, true).await
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use libp2p::futures::StreamExt;
    use libp2p::identity::Keypair;
    use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
    use libp2p::{Multiaddr, Swarm, noise, ping, tcp};
    use parking_lot::Mutex;
    use tokio::sync::mpsc;

    use super::*;
    use crate::identity::NetworkKey;
    use crate::net::guard::PeerGuard;
    use crate::net::limits::HANDSHAKE_TIMEOUT;
    use crate::net::{
        BehaviourEvent, NetConfig, NetHandle, Topic, admission_prologue, build_swarm, start, topic,
        yamux_config,
    };
    use crate::util::workers::Workers;

    const MEMBER: &[u8] = b"member";

    /// Test rules: admits the hello [`MEMBER`] (handing it `grant`), refuses any other with a
    /// reason naming its size; records what peers granted and why they refused.
    struct Rules {
        hello: Vec<u8>,
        grant: Option<Vec<u8>>,
        plain: bool,
        checked: Mutex<Vec<PeerId>>,
        granted: Mutex<Vec<(PeerId, Vec<u8>)>>,
        refused: Mutex<Vec<(PeerId, String)>>,
    }

    impl Rules {
        fn new(hello: &[u8]) -> Arc<Self> {
            Arc::new(Rules {
                hello: hello.to_vec(),
                grant: None,
                plain: false,
                checked: Mutex::default(),
                granted: Mutex::default(),
                refused: Mutex::default(),
            })
        }

        fn member() -> Arc<Self> {
            Self::new(MEMBER)
        }

        fn granting(grant: &[u8]) -> Arc<Self> {
            Arc::new(Rules {
                grant: Some(grant.to_vec()),
                ..Arc::into_inner(Self::member()).unwrap()
            })
        }
    }

    fn not_a_member(hello: &[u8]) -> String {
        format!("not a member (a hello of {} bytes)", hello.len())
    }

    impl Admission for Rules {
        fn hello(&self, _: &PeerId, _: bool) -> Vec<u8> {
            self.hello.clone()
        }

        fn check(&self, remote: &PeerId, hello: &[u8]) -> Result<Option<Vec<u8>>, String> {
            self.checked.lock().push(*remote);
            if hello == MEMBER {
                Ok(self.grant.clone())
            } else {
                Err(not_a_member(hello))
            }
        }

        fn granted(&self, remote: &PeerId, grant: &[u8]) {
            self.granted.lock().push((*remote, grant.to_vec()));
        }

        fn refused(&self, remote: &PeerId, reason: &str) {
            self.refused.lock().push((*remote, reason.to_string()));
        }

        fn admits_plain(&self) -> bool {
            self.plain
        }
    }

    /// What a test swarm did, in order.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Seen {
        Listening(Multiaddr),
        Established(PeerId),
        Closed(PeerId),
        /// A protocol ran on a connection (its behaviour reported something).
        Protocol(&'static str),
        OutgoingError(String),
        IncomingError(String),
    }

    /// A swarm driven in its own task: dials what it is sent, reports what it sees. Stops when
    /// the sender is dropped.
    struct Driven {
        peer: PeerId,
        addr: Multiaddr,
        dial: mpsc::UnboundedSender<Multiaddr>,
        seen: mpsc::UnboundedReceiver<Seen>,
        log: Vec<Seen>,
    }

    async fn drive<B>(mut swarm: Swarm<B>, protocol: fn(&B::ToSwarm) -> &'static str) -> Driven
    where
        B: NetworkBehaviour + Send + 'static,
        B::ToSwarm: Send,
    {
        swarm
            .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .unwrap();
        let peer = *swarm.local_peer_id();
        let (dial, mut dials) = mpsc::unbounded_channel::<Multiaddr>();
        let (tx, seen) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    event = swarm.select_next_some() => {
                        let seen = match event {
                            SwarmEvent::NewListenAddr { address, .. } => Seen::Listening(address),
                            SwarmEvent::ConnectionEstablished { peer_id, .. } => Seen::Established(peer_id),
                            SwarmEvent::ConnectionClosed { peer_id, .. } => Seen::Closed(peer_id),
                            // An empty name: the behaviour's own event, nothing ran on a
                            // connection.
                            SwarmEvent::Behaviour(e) => match protocol(&e) {
                                "" => continue,
                                p => Seen::Protocol(p),
                            },
                            SwarmEvent::OutgoingConnectionError { error, .. } => Seen::OutgoingError(format!("{error:?}")),
                            SwarmEvent::IncomingConnectionError { error, .. } => Seen::IncomingError(format!("{error:?}")),
                            _ => continue,
                        };
                        let _ = tx.send(seen);
                    }
                    addr = dials.recv() => match addr {
                        Some(addr) => swarm.dial(addr).unwrap(),
                        None => return,
                    },
                }
            }
        });
        let mut driven = Driven {
            peer,
            addr: Multiaddr::empty(),
            dial,
            seen,
            log: Vec::new(),
        };
        let addr = driven
            .wait("listening", |s| matches!(s, Seen::Listening(_)))
            .await;
        let Seen::Listening(addr) = addr else {
            unreachable!()
        };
        driven.addr = addr.with(libp2p::multiaddr::Protocol::P2p(peer));
        driven
    }

    impl Driven {
        /// Waits (20 s at most) for what `want` matches; keeps everything seen in `log`.
        async fn wait(&mut self, what: &str, want: impl Fn(&Seen) -> bool) -> Seen {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            loop {
                let seen = tokio::time::timeout_at(deadline, self.seen.recv())
                    .await
                    .unwrap_or_else(|_| panic!("timed out waiting for {what}; saw {:?}", self.log))
                    .expect("the swarm task runs");
                self.log.push(seen.clone());
                if want(&seen) {
                    return seen;
                }
            }
        }

        /// Waits (20 s at most) until everything in `want` was seen, in any order.
        async fn wait_all(&mut self, want: &[Seen]) {
            for w in want {
                if !self.log.contains(w) {
                    self.wait(&format!("{w:?}"), |s| s == w).await;
                }
            }
        }

        /// Takes what is seen within `window` into `log`.
        async fn settle(&mut self, window: Duration) {
            while let Ok(Some(seen)) = tokio::time::timeout(window, self.seen.recv()).await {
                self.log.push(seen);
            }
        }

        fn dial(&self, other: &Driven) {
            self.dial.send(other.addr.clone()).unwrap();
        }

        fn connected_to(&self, peer: PeerId) -> bool {
            self.log.contains(&Seen::Established(peer))
        }

        fn protocols(&self) -> Vec<&'static str> {
            self.log
                .iter()
                .filter_map(|s| match s {
                    Seen::Protocol(p) => Some(*p),
                    _ => None,
                })
                .collect()
        }
    }

    fn node_protocol(e: &BehaviourEvent) -> &'static str {
        match e {
            BehaviourEvent::Gossipsub(_) => "gossipsub",
            BehaviourEvent::Identify(_) => "identify",
            BehaviourEvent::Ping(_) => "ping",
            BehaviourEvent::Kad(_) => "kad",
            // AutoNAT found no member to ask (a timer, with no connection).
            BehaviourEvent::Autonat(libp2p::autonat::Event::OutboundProbe(
                libp2p::autonat::OutboundProbeEvent::Error { peer: None, .. },
            )) => "",
            _ => "other",
        }
    }

    /// A node's swarm (subscribed to its topics, so gossipsub speaks on every connection).
    async fn node(key: &NetworkKey, admission: Arc<dyn Admission>) -> Driven {
        let mut swarm = build_swarm(
            Keypair::generate_ed25519(),
            key,
            false,
            PeerGuard::new(),
            admission,
        )
        .unwrap();
        for t in [Topic::Membership, Topic::Namespace] {
            swarm
                .behaviour_mut()
                .gossipsub
                .subscribe(&topic(key, t))
                .unwrap();
        }
        drive(swarm, node_protocol).await
    }

    /// A swarm as nodes made before the admission handshake were: Noise with the network key's
    /// prologue, then plain yamux; it speaks ping only.
    async fn pre_handshake_node(key: &NetworkKey) -> Driven {
        use libp2p::Transport;
        let prologue = admission_prologue(key);
        let swarm = libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_other_transport(|kp| {
                let noise = noise::Config::new(kp)?.with_prologue(prologue.clone());
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
                    tcp::tokio::Transport::new(tcp::Config::default())
                        .upgrade(libp2p::core::upgrade::Version::V1Lazy)
                        .authenticate(noise)
                        .multiplex(yamux_config())
                        .timeout(HANDSHAKE_TIMEOUT),
                )
            })
            .unwrap()
            .with_behaviour(|_| {
                ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_millis(200)))
            })
            .unwrap()
            .build();
        drive(swarm, |e: &ping::Event| match e.result {
            Ok(_) => "ping",
            Err(_) => "ping failed",
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn admitted_peers_connect_and_speak_their_protocols() {
        let key = NetworkKey::generate();
        let (ra, rb) = (Rules::member(), Rules::member());
        let mut a = node(&key, ra.clone()).await;
        let mut b = node(&key, rb.clone()).await;
        a.dial(&b);
        let bp = b.peer;
        a.wait("a connected", |s| *s == Seen::Established(bp)).await;
        let ap = a.peer;
        b.wait("b connected", |s| *s == Seen::Established(ap)).await;
        for d in [&mut a, &mut b] {
            d.wait_all(&[
                Seen::Protocol("identify"),
                Seen::Protocol("ping"),
                Seen::Protocol("gossipsub"),
            ])
            .await;
        }
        assert_eq!(
            *ra.checked.lock(),
            vec![b.peer],
            "each side checked the other"
        );
        assert_eq!(*rb.checked.lock(), vec![a.peer]);
        assert!(ra.refused.lock().is_empty() && rb.refused.lock().is_empty());
        assert!(ra.granted.lock().is_empty(), "nothing was granted");
    }

    /// A peer the rules refuse never gets a connection, in either direction: no protocol runs,
    /// and it is told why.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_peer_gets_no_connection_and_is_told_why() {
        let key = NetworkKey::generate();
        let stranger_hello = b"stranger";
        let reason = not_a_member(stranger_hello);
        for stranger_dials in [true, false] {
            let (rs, rm) = (Rules::new(stranger_hello), Rules::member());
            let mut stranger = node(&key, rs.clone()).await;
            let mut member = node(&key, rm.clone()).await;
            let (dialer, listener) = if stranger_dials {
                (&mut stranger, &mut member)
            } else {
                (&mut member, &mut stranger)
            };
            dialer.dial(listener);
            dialer
                .wait("the dial fails", |s| matches!(s, Seen::OutgoingError(_)))
                .await;
            listener
                .wait("the incoming connection fails", |s| {
                    matches!(s, Seen::IncomingError(_))
                })
                .await;
            for d in [&mut stranger, &mut member] {
                d.settle(Duration::from_millis(1500)).await;
            }
            for (d, other) in [(&stranger, member.peer), (&member, stranger.peer)] {
                assert!(!d.connected_to(other), "no connection: {:?}", d.log);
                assert!(d.protocols().is_empty(), "no protocol ran: {:?}", d.log);
            }
            assert_eq!(
                *rs.refused.lock(),
                vec![(member.peer, reason.clone())],
                "the stranger is told why"
            );
            assert!(rm.refused.lock().is_empty(), "the member was not refused");
            let error = stranger
                .log
                .iter()
                .chain(&member.log)
                .filter_map(|s| match s {
                    Seen::OutgoingError(e) | Seen::IncomingError(e) => Some(e.clone()),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join("\n");
            assert!(error.contains(&reason), "{error}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_grant_reaches_the_admitted_peer() {
        let key = NetworkKey::generate();
        let (joiner_rules, inviter_rules) = (Rules::member(), Rules::granting(b"a cert for you"));
        let mut joiner = node(&key, joiner_rules.clone()).await;
        let mut inviter = node(&key, inviter_rules.clone()).await;
        joiner.dial(&inviter);
        let ip = inviter.peer;
        joiner
            .wait("connected", |s| *s == Seen::Established(ip))
            .await;
        assert_eq!(
            *joiner_rules.granted.lock(),
            vec![(inviter.peer, b"a cert for you".to_vec())]
        );
        let jp = joiner.peer;
        inviter
            .wait("connected", |s| *s == Seen::Established(jp))
            .await;
        assert!(
            inviter_rules.granted.lock().is_empty(),
            "the joiner granted nothing"
        );
    }

    /// How a hostile peer breaks the handshake.
    #[derive(Clone, Copy, Debug)]
    enum Garbage {
        /// Announces a 4 GiB hello.
        HugeHello,
        /// Sends a valid hello, then a verdict that is no verdict.
        BadVerdict,
        /// Says nothing.
        Stall,
    }

    impl UpgradeInfo for Garbage {
        type Info = &'static str;
        type InfoIter = std::iter::Once<&'static str>;

        fn protocol_info(&self) -> Self::InfoIter {
            std::iter::once(ADMIT_PROTOCOL)
        }
    }

    impl Garbage {
        /// Breaks the handshake, then waits for the other side to close the connection.
        async fn run<C: AsyncRead + AsyncWrite + Unpin>(self, mut s: C) -> std::io::Error {
            let sent = async {
                match self {
                    Garbage::HugeHello => {
                        s.write_all(&u32::MAX.to_be_bytes()).await?;
                        s.write_all(&[7; 64]).await?;
                    }
                    Garbage::BadVerdict => {
                        write_frame(&mut s, MEMBER).await?;
                        read_frame(&mut s, MAX_HELLO).await?;
                        write_frame(&mut s, &[9, 9, 9]).await?;
                    }
                    Garbage::Stall => {}
                }
                s.flush().await
            };
            if let Err(e) = sent.await {
                return e;
            }
            let mut sink = [0u8; 1024];
            loop {
                match s.read(&mut sink).await {
                    Ok(0) => return std::io::Error::other("closed by the peer"),
                    Ok(_) => {}
                    Err(e) => return e,
                }
            }
        }
    }

    impl<C: AsyncRead + AsyncWrite + Send + Unpin + 'static> OutboundConnectionUpgrade<C> for Garbage {
        type Output = yamux::Muxer<C>;
        type Error = std::io::Error;
        type Future = BoxFuture<'static, Result<Self::Output, Self::Error>>;

        fn upgrade_outbound(self, s: C, _: Self::Info) -> Self::Future {
            Box::pin(async move { Err(self.run(s).await) })
        }
    }

    impl<C: AsyncRead + AsyncWrite + Send + Unpin + 'static> InboundConnectionUpgrade<C> for Garbage {
        type Output = yamux::Muxer<C>;
        type Error = std::io::Error;
        type Future = BoxFuture<'static, Result<Self::Output, Self::Error>>;

        fn upgrade_inbound(self, s: C, _: Self::Info) -> Self::Future {
            Box::pin(async move { Err(self.run(s).await) })
        }
    }

    /// A peer with the network key that breaks the admission handshake (and has no timeout of
    /// its own: its dial ends when the other side closes).
    async fn garbage_peer(key: &NetworkKey, how: Garbage) -> Driven {
        use libp2p::Transport;
        let prologue = admission_prologue(key);
        let swarm = libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_other_transport(|kp| {
                let noise = noise::Config::new(kp)?.with_prologue(prologue.clone());
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
                    tcp::tokio::Transport::new(tcp::Config::default())
                        .upgrade(libp2p::core::upgrade::Version::V1Lazy)
                        .authenticate(noise)
                        .multiplex_ext(move |_, _| how),
                )
            })
            .unwrap()
            .with_behaviour(|_| libp2p::swarm::dummy::Behaviour)
            .unwrap()
            .build();
        drive(swarm, |e: &std::convert::Infallible| match *e {}).await
    }

    /// A hello over the limit is refused unread; a broken handshake or a silent peer ends the
    /// connection (the silent one within the handshake timeout); the node goes on admitting.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn oversized_garbage_and_silence_are_refused_without_harm() {
        let key = NetworkKey::generate();
        let rules = Rules::member();
        let mut member = node(&key, rules.clone()).await;

        // Through the real handshake: a hello one byte over the limit.
        let big = Rules::new(&vec![1u8; MAX_HELLO + 1]);
        let mut bloated = node(&key, big.clone()).await;
        bloated.dial(&member);
        bloated
            .wait("the dial fails", |s| matches!(s, Seen::OutgoingError(_)))
            .await;
        let told = big.refused.lock().clone();
        assert_eq!(told.len(), 1, "{told:?}");
        assert!(told[0].1.contains("over the 524288-byte limit"), "{told:?}");
        assert!(
            rules.checked.lock().is_empty(),
            "never checked: {:?}",
            rules.checked
        );

        for how in [Garbage::HugeHello, Garbage::BadVerdict, Garbage::Stall] {
            let mut garbage = garbage_peer(&key, how).await;
            let start = Instant::now();
            garbage.dial(&member);
            garbage
                .wait("the connection ends", |s| {
                    matches!(s, Seen::OutgoingError(_))
                })
                .await;
            let took = start.elapsed();
            assert!(
                took < HANDSHAKE_TIMEOUT + Duration::from_secs(5),
                "{how:?}: closed after {took:?}"
            );
            if !matches!(how, Garbage::Stall) {
                assert!(
                    took < HANDSHAKE_TIMEOUT,
                    "{how:?}: closed at once, not by the timeout ({took:?})"
                );
            }
            let gp = garbage.peer;
            member
                .wait("the member's side fails", |s| {
                    matches!(s, Seen::IncomingError(_))
                })
                .await;
            assert!(!member.connected_to(gp), "{how:?}: {:?}", member.log);
        }

        // Still admitting.
        let mut other = node(&key, Rules::member()).await;
        other.dial(&member);
        let mp = member.peer;
        other
            .wait("a member still connects", |s| *s == Seen::Established(mp))
            .await;
    }

    /// A key-only node connects to and from a node that predates the handshake (plain yamux);
    /// a node that admits only through the handshake does not, either way.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_key_only_nodes_connect_to_nodes_without_the_handshake() {
        let key = NetworkKey::generate();
        for old_dials in [true, false] {
            let mut old = pre_handshake_node(&key).await;
            let mut key_only = node(&key, Arc::new(KeyOnlyAdmission)).await;
            if old_dials {
                old.dial(&key_only);
            } else {
                key_only.dial(&old);
            }
            let (op, kp) = (old.peer, key_only.peer);
            key_only
                .wait("key-only connected", |s| *s == Seen::Established(op))
                .await;
            old.wait("old connected", |s| *s == Seen::Established(kp))
                .await;
            old.wait("ping runs", |s| *s == Seen::Protocol("ping"))
                .await;

            let mut certified = node(&key, Rules::member()).await;
            let mut old = pre_handshake_node(&key).await;
            if old_dials {
                old.dial(&certified);
            } else {
                certified.dial(&old);
            }
            // An old dialer negotiates yamux lazily (it assumes it is accepted and starts), so
            // its side may count a connection until the refusal closes it.
            let cp = certified.peer;
            old.wait("old fails", |s| {
                matches!(s, Seen::OutgoingError(_) | Seen::IncomingError(_))
                    || *s == Seen::Closed(cp)
            })
            .await;
            certified
                .wait("certified fails", |s| {
                    matches!(s, Seen::OutgoingError(_) | Seen::IncomingError(_))
                })
                .await;
            for d in [&mut old, &mut certified] {
                d.settle(Duration::from_millis(1000)).await;
            }
            assert!(!certified.connected_to(old.peer), "{:?}", certified.log);
            assert!(
                !old.log.contains(&Seen::Protocol("ping")),
                "no protocol ran: {:?}",
                old.log
            );
        }
    }

    fn start_node(
        key: &NetworkKey,
        admission: Arc<dyn Admission>,
        bootstrap: Vec<Multiaddr>,
        workers: &Workers,
    ) -> NetHandle {
        let (handle, mut events) = start(
            NetConfig {
                keypair: Keypair::generate_ed25519(),
                network_key: key.clone(),
                listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
                bootstrap,
                mdns: false,
                max_queued_gossip: 64,
                limits: crate::net::limits::AdmissionLimits::default(),
                reach: Default::default(),
                guard: PeerGuard::new(),
                admission,
            },
            workers,
        )
        .unwrap();
        // Take the events, as a node's program does.
        workers.spawn(async move { while events.recv().await.is_some() {} });
        handle
    }

    async fn eventually(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + within;
        while !done() {
            assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn with_peer(handle: &NetHandle) -> Multiaddr {
        handle.listen_addrs()[0]
            .clone()
            .with(libp2p::multiaddr::Protocol::P2p(handle.local))
    }

    #[test]
    fn a_refusal_is_logged_once_per_peer_and_side_until_its_reason_changes() {
        let mut log = RefusalLog::default();
        let (p, q) = (PeerId::random(), PeerId::random());
        assert!(log.is_new(p, RefusalSide::ByUs, "no cert"));
        assert!(
            !log.is_new(p, RefusalSide::ByUs, "no cert"),
            "the same again"
        );
        assert!(
            log.is_new(p, RefusalSide::ByPeer, "no cert"),
            "the other side"
        );
        assert!(log.is_new(q, RefusalSide::ByUs, "no cert"), "another peer");
        assert!(log.is_new(p, RefusalSide::ByUs, "revoked"), "a new reason");
        assert!(!log.is_new(p, RefusalSide::ByUs, "revoked"));
        assert!(log.is_new(p, RefusalSide::ByUs, "no cert"), "changed back");
    }

    /// Both ends of a refusal keep it for `status`, and count it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refusal_is_kept_and_counted_on_both_sides() {
        let key = NetworkKey::generate();
        let workers = Workers::new();
        let member = start_node(&key, Rules::member(), vec![], &workers);
        eventually("listening", Duration::from_secs(20), || {
            !member.listen_addrs().is_empty()
        })
        .await;
        let (before_us, before_peer) = crate::net::counters::ADMISSION.refused();
        let hello = b"no cert";
        let stranger = start_node(&key, Rules::new(hello), vec![with_peer(&member)], &workers);
        eventually(
            "both sides saw the refusal",
            Duration::from_secs(20),
            || member.last_refusal().is_some() && stranger.last_refusal().is_some(),
        )
        .await;
        let reason = not_a_member(hello);
        let ours = member.last_refusal().unwrap();
        assert_eq!(
            (ours.peer, ours.side, ours.reason.as_str()),
            (stranger.local, RefusalSide::ByUs, reason.as_str())
        );
        let theirs = stranger.last_refusal().unwrap();
        assert_eq!(
            (theirs.peer, theirs.side, theirs.reason.as_str()),
            (member.local, RefusalSide::ByPeer, reason.as_str())
        );
        assert!(member.admission_refusals().refused_peers >= 1);
        assert_eq!(member.admission_refusals().refused_by_peers, 0);
        assert!(stranger.admission_refusals().refused_by_peers >= 1);
        assert_eq!(stranger.admission_refusals().refused_peers, 0);
        let (after_us, after_peer) = crate::net::counters::ADMISSION.refused();
        assert!(after_us > before_us && after_peer > before_peer);
        assert!(member.connected().is_empty() && stranger.connected().is_empty());
        workers.cancel();
    }

    /// A peer disconnected and blocked on purpose loses its connection at once and cannot come
    /// back (its redials fail, and so do ours) until it is unblocked.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn disconnect_and_block_drops_the_peer_until_unblocked() {
        let key = NetworkKey::generate();
        let workers = Workers::new();
        let keeper = start_node(&key, Arc::new(KeyOnlyAdmission), vec![], &workers);
        eventually("listening", Duration::from_secs(20), || {
            !keeper.listen_addrs().is_empty()
        })
        .await;
        // It redials its bootstrap address every 5 s while alone.
        let expelled = start_node(
            &key,
            Arc::new(KeyOnlyAdmission),
            vec![with_peer(&keeper)],
            &workers,
        );
        eventually("connected", Duration::from_secs(20), || {
            keeper.connected() == vec![expelled.local]
        })
        .await;
        keeper.disconnect_and_block(expelled.local);
        eventually("disconnected", Duration::from_secs(5), || {
            keeper.connected().is_empty() && expelled.connected().is_empty()
        })
        .await;
        keeper.add_addresses(expelled.local, expelled.listen_addrs());
        keeper.dial(expelled.local);
        // Past the expelled node's next redials.
        let until = tokio::time::Instant::now() + Duration::from_secs(12);
        while tokio::time::Instant::now() < until {
            assert!(keeper.connected().is_empty(), "the blocked peer came back");
            assert!(expelled.connected().is_empty());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        keeper.unblock(expelled.local);
        eventually(
            "reconnected after the unblock",
            Duration::from_secs(20),
            || keeper.connected() == vec![expelled.local],
        )
        .await;
        workers.cancel();
    }
}
