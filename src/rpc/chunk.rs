//! `/p2pfs/chunk/2`: chunk transfer between peers on long-lived streams. Each stream carries
//! one request/response at a time; the client keeps idle streams per peer and reuses them, so
//! yamux windows grow and bulk data does not pay a stream setup per chunk.
//!
//! The receiver of a `Put` verifies blake3 before storing; the receiver of `Data` verifies it
//! before using it. A `Put` carries a nonce and is answered with a proof over the bytes under
//! it, and `Prove` asks a holder for such proofs of chunks it stores ([`crate::cluster::audit`]): a
//! holder's bare "stored" or "have" never counts as a copy. Frames are capped, every request has a timeout, and a peer may hold only a
//! bounded number of streams on us at once. Protocol violations are reported to the node's
//! [`PeerGuard`] (which disconnects the peer).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use libp2p::futures::StreamExt;
use libp2p::{PeerId, Stream, StreamProtocol};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::frame::{self, FrameError, read_frame_with_body, write_frame_with_body};
use crate::block::{ChunkId, ChunkStore, StoreError, chunk};
use crate::net::bandwidth::Direction;
use crate::net::guard::{self, Offence, PeerGuard, Refusal, StreamKind};
use crate::rpc::counters::{CHUNK_TRAFFIC, Counted};
use crate::util::workers::Workers;

pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/p2pfs/chunk/2");
/// Largest body: a 16 MiB chunk (the largest configurable) plus its codec overhead.
pub const MAX_BODY: usize = (16 << 20) + 4096;
/// Most ids in one `Have` request a node answers (callers may ask for this many at once).
pub const MAX_HAVE_BATCH: usize = 4096;
/// Ids per `Have` frame on the wire: 4,096 ids (34 bytes each in CBOR) would be over the
/// 64 KiB header cap, so a larger batch is sent as several requests.
const HAVE_PER_FRAME: usize = 1024;
/// Most ids in one `Prove` request: each is a chunk read and hashed by the answering node.
pub const MAX_PROVE_BATCH: usize = 64;
/// Bytes one peer may have this node read and hash for its proofs, per second, unless
/// configured (`network.prove_rate_mb`, [`ChunkServer::set_prove_rate`]): a peer cannot turn challenges
/// into a disk-read flood.
const PROVE_BYTES_PER_SEC: u64 = 16_000_000;
/// Chunk bytes one `Prove` may make this node read; a request that needs more is refused
/// (challengers split their batches by size too, [`crate::cluster::audit::challenge`]).
pub const MAX_PROVE_BYTES: usize = 32 << 20;
/// A `Prove` that would have to wait longer than this for its peer's budget is refused.
const PROVE_MAX_WAIT: Duration = Duration::from_secs(5);
/// How a refusal for being over a rate starts: the peer may hold the chunks (a caller counts
/// such an answer as unverified, not as absent).
pub const BUSY: &str = "busy";
/// The refusal a peer sends when its disk is full.
pub const NO_SPACE: &str = "no space left";
/// Streams one peer may have open on us at once; more are reset. Clients pool as many.
const STREAMS_PER_PEER: usize = guard::CHUNK_STREAMS_PER_PEER;
/// A request must be answered within this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// Opening a stream includes dialing: a peer that is cut off must not hold a writer for long
/// (the writer then places the copy on the next node in rank, and repair moves it back).
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);
/// An idle server stream is closed after this. Open streams keep their connection alive, so
/// this (plus the swarm's idle connection timeout) is how long a connection to an owner outside
/// the gossip mesh outlives its last transfer: short, so a node's connection count stays flat.
/// A client's pooled stream closed by the server is noticed on use and replaced.
const IDLE_TIMEOUT: Duration = Duration::from_secs(20);

/// A request; a `Put`'s chunk bytes travel as the frame's body.
#[derive(Debug, Serialize, Deserialize)]
pub enum ChunkRequest {
    /// Store a chunk, and prove it with [`crate::block::proof::proof`] under `nonce`.
    Put {
        id: ChunkId,
        nonce: [u8; 32],
    },
    Get {
        id: ChunkId,
    },
    Have {
        ids: Vec<ChunkId>,
    },
    /// Flush the chunks stored so far to disk (a writer's `fsync()`); answered `Stored`.
    Sync,
    /// Prove holding each of `ids` (at most [`MAX_PROVE_BATCH`]) under `nonce`; answered
    /// `Proofs`.
    Prove {
        nonce: [u8; 32],
        ids: Vec<ChunkId>,
    },
}

/// A response; `Data`'s chunk bytes travel as the frame's body.
#[derive(Debug, Serialize, Deserialize)]
pub enum ChunkResponse {
    Stored,
    Data,
    NotFound,
    Have(Vec<bool>),
    Refused(String),
    /// A `Put`'s answer: stored, and the proof over the bytes under its nonce.
    StoredProof([u8; 32]),
    /// A `Prove`'s answer: a proof per id, `None` for a chunk not held.
    Proofs(Vec<Option<[u8; 32]>>),
}

#[derive(Debug, thiserror::Error)]
pub enum ChunkRpcError {
    #[error("cannot open a stream to {0}: {1}")]
    Open(PeerId, String),
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("peer {0} did not answer in time")]
    Timeout(PeerId),
    #[error("peer {0} closed the stream")]
    Closed(PeerId),
    #[error("peer {0} refused: {1}")]
    Refused(PeerId, String),
    #[error("peer {0} answered out of protocol")]
    Unexpected(PeerId),
    #[error("peer {0} sent bytes that do not match chunk {1}")]
    BadData(PeerId, ChunkId),
    #[error("peer {0} answered a wrong proof for chunk {1}: it does not hold those bytes")]
    BadProof(PeerId, ChunkId),
}

/// Client side: requests over pooled streams.
#[derive(Clone)]
pub struct ChunkClient {
    streams: libp2p_stream::Control,
    /// Where a peer's wrong answers are counted.
    guard: Arc<PeerGuard>,
    idle: Arc<Mutex<HashMap<PeerId, Vec<Stream>>>>,
}

impl ChunkClient {
    pub fn new(streams: libp2p_stream::Control, guard: Arc<PeerGuard>) -> Self {
        Self {
            streams,
            guard,
            idle: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The guard this client reports peers' wrong answers to (the node's).
    pub fn guard(&self) -> &Arc<PeerGuard> {
        &self.guard
    }

    /// One request/response. Every request is idempotent, so one that dies with its stream or
    /// connection (a pooled stream gone stale, a duplicate connection being closed) is tried
    /// once more on a fresh stream before it counts as failed.
    async fn call(
        &self,
        peer: PeerId,
        request: &ChunkRequest,
        body: &[u8],
    ) -> Result<(ChunkResponse, Vec<u8>), ChunkRpcError> {
        self.guard.used(peer);
        match self.call_once(peer, request, body, false).await {
            Err(
                ChunkRpcError::Frame(FrameError::Io(_))
                | ChunkRpcError::Closed(_)
                | ChunkRpcError::Open(..),
            ) => {
                // Streams pooled on a connection that closed are stale too: drop them all.
                self.forget(&peer);
                self.call_once(peer, request, body, true).await
            }
            other => other,
        }
    }

    async fn call_once(
        &self,
        peer: PeerId,
        request: &ChunkRequest,
        body: &[u8],
        fresh: bool,
    ) -> Result<(ChunkResponse, Vec<u8>), ChunkRpcError> {
        let pooled = if fresh {
            None
        } else {
            self.idle.lock().get_mut(&peer).and_then(Vec::pop)
        };
        let mut stream = match pooled {
            Some(s) => s,
            None => {
                let mut streams = self.streams.clone();
                tokio::time::timeout(OPEN_TIMEOUT, streams.open_stream(peer, PROTOCOL))
                    .await
                    .map_err(|_| ChunkRpcError::Timeout(peer))?
                    .map_err(|e| ChunkRpcError::Open(peer, e.to_string()))?
            }
        };
        let exchange = async {
            let mut io = Counted::new(&mut stream, &CHUNK_TRAFFIC);
            write_frame_with_body(&mut io, request, body, MAX_BODY).await?;
            let response = read_frame_with_body::<_, ChunkResponse>(&mut io, MAX_BODY)
                .await
                .inspect_err(|e| frame::report(&self.guard, peer, e, false, "chunk response"))?;
            Ok::<_, FrameError>((response, io.take_tally()))
        };
        let (response, (sent, received)) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| ChunkRpcError::Timeout(peer))??;
        let response = response.ok_or(ChunkRpcError::Closed(peer))?;
        {
            let mut idle = self.idle.lock();
            let pool = idle.entry(peer).or_default();
            if pool.len() < STREAMS_PER_PEER {
                pool.push(stream);
            }
        }
        self.guard.bandwidth().pace(&peer, sent, received).await;
        Ok(response)
    }

    /// Forgets pooled streams to a peer (it disconnected).
    pub fn forget(&self, peer: &PeerId) {
        self.idle.lock().remove(peer);
    }

    /// Stores a copy on `peer`; `Ok` only when its answer proves it handled these bytes.
    pub async fn put(&self, peer: PeerId, id: ChunkId, data: &[u8]) -> Result<(), ChunkRpcError> {
        let nonce = crate::block::proof::fresh_nonce();
        match self
            .call(peer, &ChunkRequest::Put { id, nonce }, data)
            .await?
            .0
        {
            ChunkResponse::StoredProof(p) if crate::block::proof::verify(&nonce, data, &p) => {
                Ok(())
            }
            ChunkResponse::StoredProof(_) | ChunkResponse::Stored => {
                self.guard.offence(peer, Offence::FailedProof, "chunk put");
                Err(ChunkRpcError::BadProof(peer, id))
            }
            ChunkResponse::Refused(why) => Err(ChunkRpcError::Refused(peer, why)),
            _ => Err(ChunkRpcError::Unexpected(peer)),
        }
    }

    /// Asks the peer to flush its chunk store to disk.
    pub async fn sync(&self, peer: PeerId) -> Result<(), ChunkRpcError> {
        match self.call(peer, &ChunkRequest::Sync, &[]).await?.0 {
            ChunkResponse::Stored => Ok(()),
            ChunkResponse::Refused(why) => Err(ChunkRpcError::Refused(peer, why)),
            _ => Err(ChunkRpcError::Unexpected(peer)),
        }
    }

    /// Fetches and verifies a chunk; `Ok(None)` when the peer does not have it.
    pub async fn get(&self, peer: PeerId, id: ChunkId) -> Result<Option<Vec<u8>>, ChunkRpcError> {
        match self.call(peer, &ChunkRequest::Get { id }, &[]).await? {
            (ChunkResponse::Data, data) => match chunk::verify(&id, &data) {
                Ok(()) => Ok(Some(data)),
                Err(_) => {
                    // A node verifies what it serves: bytes that do not match are the peer's.
                    self.guard.offence(peer, Offence::BadChunk, "chunk served");
                    Err(ChunkRpcError::BadData(peer, id))
                }
            },
            (ChunkResponse::NotFound, _) => Ok(None),
            (ChunkResponse::Refused(why), _) => Err(ChunkRpcError::Refused(peer, why)),
            _ => Err(ChunkRpcError::Unexpected(peer)),
        }
    }

    /// Asks `peer` for proofs of holding `ids` (at most [`MAX_PROVE_BATCH`]) under `nonce`:
    /// one per id, `None` where it says it does not hold the chunk. Checking them is the
    /// caller's ([`crate::cluster::audit::challenge`]).
    pub async fn prove(
        &self,
        peer: PeerId,
        nonce: [u8; 32],
        ids: Vec<ChunkId>,
    ) -> Result<Vec<Option<[u8; 32]>>, ChunkRpcError> {
        let n = ids.len();
        match self
            .call(peer, &ChunkRequest::Prove { nonce, ids }, &[])
            .await?
            .0
        {
            ChunkResponse::Proofs(proofs) if proofs.len() == n => Ok(proofs),
            ChunkResponse::Refused(why) => Err(ChunkRpcError::Refused(peer, why)),
            _ => Err(ChunkRpcError::Unexpected(peer)),
        }
    }

    pub async fn have(&self, peer: PeerId, ids: Vec<ChunkId>) -> Result<Vec<bool>, ChunkRpcError> {
        let mut all = Vec::with_capacity(ids.len());
        for part in ids.chunks(HAVE_PER_FRAME) {
            let n = part.len();
            let request = ChunkRequest::Have { ids: part.to_vec() };
            match self.call(peer, &request, &[]).await?.0 {
                ChunkResponse::Have(bits) if bits.len() == n => all.extend(bits),
                ChunkResponse::Refused(why) => return Err(ChunkRpcError::Refused(peer, why)),
                _ => return Err(ChunkRpcError::Unexpected(peer)),
            }
        }
        Ok(all)
    }
}

/// Whether this node takes a chunk a peer `Put`s: one it owns or is being handed (see
/// `cluster::ChunkRouter::takes_put`). A refused `Put` is answered `Refused` with
/// [`NOT_OWNER`] and counted; the writer then tries the next node in rank.
pub trait PutPolicy: Send + Sync {
    fn takes(&self, from: &PeerId, id: &ChunkId) -> bool;
}

/// Takes every chunk (a node alone, and tests).
pub struct TakeAll;

impl PutPolicy for TakeAll {
    fn takes(&self, _: &PeerId, _: &ChunkId) -> bool {
        true
    }
}

/// The refusal of a chunk this node neither owns nor is being handed.
pub const NOT_OWNER: &str = "not an owner of this chunk";

/// Flushes the store to disk for `Sync` requests, as a group commit: one flush (`syncfs`) at a
/// time for the whole node, every request that arrives while one runs shares the next one, and
/// a peer none of whose chunks arrived since the last flush started is answered at once. So
/// peers cannot make a node flush more often than back to back, nor more often than they
/// store chunks (each `Put` passes the [`PutPolicy`]).
pub struct Flusher {
    store: Arc<ChunkStore>,
    workers: Workers,
    state: Mutex<FlushState>,
    /// The last flush completed: its number and result.
    done: tokio::sync::watch::Sender<(u64, Result<(), String>)>,
    flushes: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct FlushState {
    /// Flushes started (the running one, if any, is number `started`).
    started: u64,
    running: bool,
    /// Per peer: the first flush that covers every chunk it stored (one started after it).
    needs: HashMap<PeerId, u64>,
}

/// Peers whose flush needs are remembered at most; past it, the met ones are dropped, or all
/// if that is not enough (an unknown peer's request is answered with a flush, never wrongly
/// at once).
const MAX_FLUSH_PEERS: usize = 4096;

impl Flusher {
    /// A flusher of `store` whose flushes run among `workers`.
    pub fn new(store: Arc<ChunkStore>, workers: Workers) -> Arc<Self> {
        Arc::new(Self {
            store,
            workers,
            state: Mutex::new(FlushState::default()),
            done: tokio::sync::watch::channel((0, Ok(()))).0,
            flushes: Default::default(),
        })
    }

    /// `peer` stored a chunk (or was told it is stored): its next `Sync` needs a flush that
    /// starts after now.
    pub fn stored(&self, peer: PeerId) {
        let completed = self.done.borrow().0;
        let mut state = self.state.lock();
        if state.needs.len() >= MAX_FLUSH_PEERS && !state.needs.contains_key(&peer) {
            state.needs.retain(|_, need| *need > completed);
            if state.needs.len() >= MAX_FLUSH_PEERS {
                // Safe to forget: a peer not remembered is given a flush.
                state.needs.clear();
            }
        }
        let need = state.started + 1;
        state.needs.insert(peer, need);
    }

    /// Flushes what `peer` stored: returns once a flush that started after its last stored
    /// chunk completed. The second value is whether this request got away without a flush of
    /// its own (shared one, or needed none).
    pub async fn flush_for(self: &Arc<Self>, peer: PeerId) -> (Result<(), String>, bool) {
        let mut done = self.done.subscribe();
        let need = {
            let mut state = self.state.lock();
            match state.needs.get(&peer).copied() {
                Some(need) => need,
                // Unknown (never stored here, or forgotten): flush to be sure.
                None => {
                    let need = state.started + 1;
                    state.needs.insert(peer, need);
                    need
                }
            }
        };
        let mut shared = true;
        loop {
            {
                let (completed, result) = &*done.borrow_and_update();
                if *completed >= need {
                    return (result.clone(), shared);
                }
            }
            let number = {
                let mut state = self.state.lock();
                if state.running {
                    None
                } else {
                    state.running = true;
                    state.started += 1;
                    Some(state.started)
                }
            };
            if let Some(number) = number {
                shared = false;
                // Its own task: a requester that goes away does not leave the flush unfinished.
                let this = self.clone();
                self.workers.spawn(async move {
                    let store = this.store.clone();
                    let result = match tokio::task::spawn_blocking(move || store.sync()).await {
                        Ok(r) => r.map_err(|e| e.to_string()),
                        Err(_) => Err("internal error".to_string()),
                    };
                    this.flushes
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    this.state.lock().running = false;
                    let _previous = this.done.send_replace((number, result));
                });
            }
            if done.changed().await.is_err() {
                return (Err("internal error".into()), shared);
            }
        }
    }

    /// Flushes done since start.
    pub fn flushes(&self) -> u64 {
        self.flushes.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// What the chunk server answers from: the store, which chunks it takes, and its flusher; the
/// guard it reports offences to and the workers its streams run among.
pub struct ChunkServer {
    pub store: Arc<ChunkStore>,
    pub policy: Arc<dyn PutPolicy>,
    pub flusher: Arc<Flusher>,
    pub guard: Arc<PeerGuard>,
    workers: Workers,
    /// Each peer's pacing of the bytes its proofs make this node read.
    prove_budget: ProveBudget,
}

impl ChunkServer {
    pub fn new(
        store: Arc<ChunkStore>,
        policy: Arc<dyn PutPolicy>,
        guard: Arc<PeerGuard>,
        workers: Workers,
    ) -> Arc<Self> {
        Arc::new(Self {
            flusher: Flusher::new(store.clone(), workers.clone()),
            store,
            policy,
            guard,
            workers,
            prove_budget: ProveBudget::new(PROVE_BYTES_PER_SEC),
        })
    }

    /// Sets the bytes per second each peer may have this node read for its proofs.
    pub fn set_prove_rate(&self, bytes_per_sec: u64) {
        self.prove_budget
            .bytes_per_sec
            .store(bytes_per_sec.max(1), std::sync::atomic::Ordering::Relaxed);
    }
}

/// Server side: accepts streams and answers from the local chunk store.
pub async fn serve(mut incoming: libp2p_stream::IncomingStreams, server: Arc<ChunkServer>) {
    while let Some((peer, stream)) = incoming.next().await {
        // Over its limit (or blocked), a peer's stream is dropped at once: a reset.
        let Some(permit) = server.guard.admit_stream(peer, StreamKind::Chunk) else {
            tracing::debug!(%peer, "chunk stream refused (peer over its limit, or blocked)");
            continue;
        };
        let this = server.clone();
        server.workers.spawn(async move {
            let _permit = permit;
            if let Err(e) = serve_stream(peer, stream, this).await {
                tracing::debug!(%peer, error = %e, "chunk stream ended");
            }
        });
    }
}

async fn serve_stream(
    peer: PeerId,
    stream: Stream,
    server: Arc<ChunkServer>,
) -> Result<(), ChunkRpcError> {
    let mut stream = Counted::new(stream, &CHUNK_TRAFFIC);
    loop {
        let read = read_frame_with_body::<_, ChunkRequest>(&mut stream, MAX_BODY);
        let (request, body) = match tokio::time::timeout(IDLE_TIMEOUT, read).await {
            Err(_) => return Ok(()),
            Ok(Ok(None)) => return Ok(()),
            Ok(Ok(Some(r))) => r,
            Ok(Err(e)) => {
                frame::report(&server.guard, peer, &e, true, "chunk request");
                tracing::debug!(%peer, error = %e, "bad chunk request; closing the stream");
                return Err(e.into());
            }
        };
        let (_, received) = stream.take_tally();
        let (response, data, offence, wait) =
            answer_within_limits(&peer, request, body, received, &server).await;
        // The wait is the answer's own (booked within the bounds `Bandwidth::admit` keeps,
        // under the requester's timeout); a refused request's bytes are dropped already.
        crate::net::bandwidth::wait_for(wait).await;
        let write = write_frame_with_body(&mut stream, &response, &data, MAX_BODY);
        let written = tokio::time::timeout(REQUEST_TIMEOUT, write)
            .await
            .map_err(|_| ChunkRpcError::Timeout(peer));
        // Counted once the refusal is on its way (the peer is then dropped).
        if let Some((kind, what)) = offence {
            server.guard.offence(peer, kind, what);
        }
        written??;
        // Charged already.
        stream.take_tally();
    }
}

/// Answers one request within the bandwidth limits: the bytes received are booked before it
/// is handled, the answer's before it is sent; either over its bound, the request is refused
/// as busy with nothing stored or kept in memory. The fourth value is how long the answer
/// waits.
async fn answer_within_limits(
    peer: &PeerId,
    request: ChunkRequest,
    body: Vec<u8>,
    received: u64,
    server: &ChunkServer,
) -> (
    ChunkResponse,
    Vec<u8>,
    Option<(Offence, &'static str)>,
    Duration,
) {
    let bandwidth = server.guard.bandwidth();
    let busy = |e: crate::net::bandwidth::Busy| {
        tracing::debug!(%peer, retry_in = ?e.retry_in, "chunk request over the bandwidth limits; refused");
        ChunkResponse::Refused(format!("{BUSY}: {e}"))
    };
    let wait_in = match bandwidth.admit(peer, Direction::Down, received as usize) {
        Ok(wait) => wait,
        Err(e) => return (busy(e), Vec::new(), None, Duration::ZERO),
    };
    let (response, data, offence) = answer(peer, request, body, server).await;
    // Its header is a few dozen bytes past the body.
    match bandwidth.admit(peer, Direction::Up, data.len() + 64) {
        Ok(wait_out) => (response, data, offence, wait_in.max(wait_out)),
        Err(e) => (busy(e), Vec::new(), offence, wait_in),
    }
}

/// Answers one request from the local store; the second value is the response body, the third
/// the peer's offence if the request was one.
async fn answer(
    peer: &PeerId,
    request: ChunkRequest,
    data: Vec<u8>,
    server: &ChunkServer,
) -> (ChunkResponse, Vec<u8>, Option<(Offence, &'static str)>) {
    let store = server.store.clone();
    let mut offence = None;
    let response = match request {
        ChunkRequest::Put { id, nonce } => {
            if chunk::verify(&id, &data).is_err() {
                tracing::debug!(%peer, chunk = %id, "peer sent chunk bytes that do not match their id; refused");
                offence = Some((Offence::BadChunk, "chunk put"));
                ChunkResponse::Refused("bytes do not match the chunk id".into())
            } else if !server.policy.takes(peer, &id) {
                server.guard.refused(Refusal::NotOwner, &peer.to_string());
                ChunkResponse::Refused(NOT_OWNER.into())
            } else {
                let proof = crate::block::proof::proof(&nonce, &data);
                match tokio::task::spawn_blocking(move || store.put(&id, &data)).await {
                    Ok(Ok(_)) => {
                        server.flusher.stored(*peer);
                        ChunkResponse::StoredProof(proof)
                    }
                    Ok(Err(e)) if e.is_no_space() => ChunkResponse::Refused(NO_SPACE.into()),
                    Ok(Err(e)) => ChunkResponse::Refused(e.to_string()),
                    Err(_) => ChunkResponse::Refused("internal error".into()),
                }
            }
        }
        ChunkRequest::Get { id } => match tokio::task::spawn_blocking(move || store.get(&id)).await
        {
            Ok(Ok(bytes)) => return (ChunkResponse::Data, bytes, None),
            Ok(Err(StoreError::Missing(_) | StoreError::Corrupt(_))) => ChunkResponse::NotFound,
            Ok(Err(e)) => ChunkResponse::Refused(e.to_string()),
            Err(_) => ChunkResponse::Refused("internal error".into()),
        },
        ChunkRequest::Sync => {
            let (result, shared) = server.flusher.flush_for(*peer).await;
            if shared {
                server.guard.refused(Refusal::SyncShared, &peer.to_string());
            }
            match result {
                Ok(()) => ChunkResponse::Stored,
                Err(e) => ChunkResponse::Refused(e),
            }
        }
        ChunkRequest::Have { ids } if ids.len() > MAX_HAVE_BATCH => {
            offence = Some((Offence::Malformed, "oversized have batch"));
            ChunkResponse::Refused(format!("at most {MAX_HAVE_BATCH} ids per request"))
        }
        ChunkRequest::Prove { ids, .. } if ids.len() > MAX_PROVE_BATCH => {
            offence = Some((Offence::Malformed, "oversized prove batch"));
            ChunkResponse::Refused(format!("at most {MAX_PROVE_BATCH} ids per request"))
        }
        ChunkRequest::Prove { nonce, ids } => prove(server, peer, nonce, ids).await,
        ChunkRequest::Have { ids } => {
            match tokio::task::spawn_blocking(move || {
                ids.iter().map(|id| store.contains(id)).collect()
            })
            .await
            {
                Ok(bits) => ChunkResponse::Have(bits),
                Err(_) => ChunkResponse::Refused("internal error".into()),
            }
        }
    };
    (response, Vec::new(), offence)
}

/// Per-peer pacing of the bytes `Prove` requests make this node read and hash.
struct ProveBudget {
    /// When each peer's budget is next free (peers whose time has passed are pruned).
    next: Mutex<HashMap<PeerId, tokio::time::Instant>>,
    /// Proofs computed at once, over all peers: one disk's worth of reading.
    running: tokio::sync::Semaphore,
    /// Each peer's share, in bytes per second.
    bytes_per_sec: std::sync::atomic::AtomicU64,
}

impl ProveBudget {
    fn new(bytes_per_sec: u64) -> Self {
        ProveBudget {
            next: Mutex::new(HashMap::new()),
            running: tokio::sync::Semaphore::new(2),
            bytes_per_sec: bytes_per_sec.into(),
        }
    }

    /// Reserves `bytes` of `peer`'s budget before they are read, so requests from one peer
    /// running at once are all charged (charging after the read let parallel streams pass one
    /// check each). Returns how long to wait before reading, or `None` (nothing reserved) when
    /// that would be over [`PROVE_MAX_WAIT`].
    fn reserve(&self, peer: &PeerId, bytes: usize) -> Option<Duration> {
        let now = tokio::time::Instant::now();
        let mut next = self.next.lock();
        if next.len() > 1024 {
            next.retain(|_, t| *t > now);
        }
        let free_at = next.get(peer).map_or(now, |t| (*t).max(now));
        let wait = free_at - now;
        if wait > PROVE_MAX_WAIT {
            return None;
        }
        next.insert(*peer, free_at + self.cost(bytes));
        Some(wait)
    }

    /// Settles a reservation of `reserved` bytes of which `read` were read: the rest is given
    /// back (or the excess charged).
    fn settle(&self, peer: &PeerId, reserved: usize, read: usize) {
        let now = tokio::time::Instant::now();
        let mut next = self.next.lock();
        let at = next.entry(*peer).or_insert(now);
        if read >= reserved {
            *at = (*at).max(now) + self.cost(read - reserved);
        } else {
            *at = (*at - self.cost(reserved - read)).max(now);
        }
    }

    fn cost(&self, bytes: usize) -> Duration {
        let rate = self
            .bytes_per_sec
            .load(std::sync::atomic::Ordering::Relaxed);
        Duration::from_secs_f64(bytes as f64 / rate as f64)
    }
}

/// Answers a `Prove`: each chunk read from the store (verified against its id, as every read
/// is) and hashed under the nonce; `None` for one not held (or found corrupt). Paced per peer
/// ([`PROVE_BYTES_PER_SEC`], reserved by the chunks' sizes on disk before reading); a request
/// that would wait over [`PROVE_MAX_WAIT`] is refused.
async fn prove(
    server: &ChunkServer,
    peer: &PeerId,
    nonce: [u8; 32],
    ids: Vec<ChunkId>,
) -> ChunkResponse {
    let (guard, budget, store) = (&server.guard, &server.prove_budget, server.store.clone());
    let sizes = {
        let (store, ids) = (store.clone(), ids.clone());
        tokio::task::spawn_blocking(move || {
            ids.iter()
                .map(|id| store.size_of(id).unwrap_or(0) as usize)
                .sum::<usize>()
        })
        .await
        .unwrap_or(0)
    };
    let reserved = sizes.min(MAX_PROVE_BYTES);
    let Some(wait) = budget.reserve(peer, reserved) else {
        tracing::debug!(%peer, "proof requests over the peer's rate; refused");
        guard.offence(*peer, Offence::Flood, "prove rate");
        return ChunkResponse::Refused(format!("{BUSY}: proof rate limit"));
    };
    crate::net::bandwidth::wait_for(wait).await;
    let Ok(_running) = budget.running.acquire().await else {
        budget.settle(peer, reserved, 0);
        return ChunkResponse::Refused("internal error".into());
    };
    let answered = tokio::task::spawn_blocking(move || {
        let mut read = 0usize;
        let mut proofs: Vec<Option<[u8; 32]>> = Vec::with_capacity(ids.len());
        for id in &ids {
            if read >= MAX_PROVE_BYTES {
                return (None, read);
            }
            proofs.push(store.get(id).ok().map(|bytes| {
                read += bytes.len();
                crate::block::proof::proof(&nonce, &bytes)
            }));
        }
        (Some(proofs), read)
    })
    .await;
    match answered {
        Ok((proofs, read)) => {
            budget.settle(peer, reserved, read);
            match proofs {
                Some(proofs) => ChunkResponse::Proofs(proofs),
                None => {
                    tracing::debug!(%peer, "a proof request over the byte bound; refused");
                    guard.offence(*peer, Offence::Flood, "prove size");
                    ChunkResponse::Refused(format!(
                        "at most {MAX_PROVE_BYTES} bytes of chunks per request"
                    ))
                }
            }
        }
        Err(_) => {
            budget.settle(peer, reserved, 0);
            ChunkResponse::Refused("internal error".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::frame::MAX_HEADER;

    #[test]
    fn a_have_frame_fits_the_header_cap() {
        let ids = vec![ChunkId([0xff; 32]); HAVE_PER_FRAME];
        let mut bytes = Vec::new();
        ciborium::into_writer(&ChunkRequest::Have { ids }, &mut bytes).unwrap();
        assert!(bytes.len() <= MAX_HEADER, "{} bytes", bytes.len());
        // What it replaced did not.
        let ids = vec![ChunkId([0xff; 32]); MAX_HAVE_BATCH];
        let mut bytes = Vec::new();
        ciborium::into_writer(&ChunkRequest::Have { ids }, &mut bytes).unwrap();
        assert!(bytes.len() > MAX_HEADER, "{} bytes", bytes.len());
    }
}

#[cfg(test)]
mod sync_tests {
    use super::*;

    #[tokio::test]
    async fn a_sync_request_flushes_the_store_and_is_answered_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(ChunkStore::open(dir.path()).unwrap());
        let data = b"\x01some ciphertext".to_vec();
        let id = ChunkId::of(&data);
        store.put(&id, &data).unwrap();
        let peer = PeerId::random();
        let server = ChunkServer::new(
            store.clone(),
            Arc::new(TakeAll),
            PeerGuard::new(),
            Workers::new(),
        );
        let (response, body, offence) =
            answer(&peer, ChunkRequest::Sync, Vec::new(), &server).await;
        assert!(matches!(response, ChunkResponse::Stored), "{response:?}");
        assert!(body.is_empty() && offence.is_none());
        assert_eq!(store.get(&id).unwrap(), data);
    }
}

#[cfg(test)]
mod proof_tests {
    use super::*;
    use crate::block::proof::{fresh_nonce, verify};
    use crate::rpc::frame::MAX_HEADER;

    #[tokio::test]
    async fn a_put_is_answered_with_a_proof_over_the_bytes_under_its_nonce() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(ChunkStore::open(dir.path()).unwrap());
        let server = ChunkServer::new(
            store.clone(),
            Arc::new(TakeAll),
            PeerGuard::new(),
            Workers::new(),
        );
        let data = b"\x01a chunk's ciphertext".to_vec();
        let id = ChunkId::of(&data);
        let nonce = fresh_nonce();
        let peer = PeerId::random();
        let (response, _, offence) = answer(
            &peer,
            ChunkRequest::Put { id, nonce },
            data.clone(),
            &server,
        )
        .await;
        assert!(offence.is_none());
        match response {
            ChunkResponse::StoredProof(p) => {
                assert!(verify(&nonce, &data, &p));
                assert!(!verify(&fresh_nonce(), &data, &p), "bound to the nonce");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(store.get(&id).unwrap(), data);
    }

    #[tokio::test]
    async fn prove_answers_a_proof_per_held_chunk_and_none_for_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(ChunkStore::open(dir.path()).unwrap());
        let server = ChunkServer::new(
            store.clone(),
            Arc::new(TakeAll),
            PeerGuard::new(),
            Workers::new(),
        );
        let data = b"\x01stored ciphertext".to_vec();
        let id = ChunkId::of(&data);
        store.put(&id, &data).unwrap();
        let absent = ChunkId::of(b"\x01never stored");
        let nonce = fresh_nonce();
        let peer = PeerId::random();
        let request = ChunkRequest::Prove {
            nonce,
            ids: vec![id, absent],
        };
        let (response, _, offence) = answer(&peer, request, Vec::new(), &server).await;
        assert!(offence.is_none());
        let ChunkResponse::Proofs(proofs) = response else {
            panic!("{response:?}");
        };
        assert_eq!(proofs.len(), 2);
        assert!(verify(&nonce, &data, proofs[0].as_ref().unwrap()));
        assert_eq!(proofs[1], None);
        // Over the batch bound: refused and counted.
        let request = ChunkRequest::Prove {
            nonce,
            ids: vec![id; MAX_PROVE_BATCH + 1],
        };
        let (response, _, offence) = answer(&peer, request, Vec::new(), &server).await;
        assert!(
            matches!(response, ChunkResponse::Refused(_)),
            "{response:?}"
        );
        assert!(matches!(offence, Some((Offence::Malformed, _))));
    }

    #[tokio::test]
    async fn proof_work_is_reserved_before_reading_so_parallel_requests_are_all_charged() {
        let budget = ProveBudget::new(16 << 20);
        let (greedy, other) = (PeerId::random(), PeerId::random());
        let about = |wait: Option<Duration>, secs: u64| {
            wait.is_some_and(|w| {
                w <= Duration::from_secs(secs)
                    && w + Duration::from_millis(500) > Duration::from_secs(secs)
            })
        };
        // 32 MiB is 2 s of a peer's budget: requests taken at once, none read yet, wait
        // 0, 2, 4 s; the fourth would wait 6 s, over the 5 s cap, and is refused.
        let waits: Vec<_> = (0..4)
            .map(|_| budget.reserve(&greedy, MAX_PROVE_BYTES))
            .collect();
        assert_eq!(waits[0], Some(Duration::ZERO));
        assert!(about(waits[1], 2) && about(waits[2], 4), "{waits:?}");
        assert_eq!(waits[3], None, "over the cap: refused, nothing reserved");
        // Another peer's budget is its own.
        assert_eq!(
            budget.reserve(&other, MAX_PROVE_BYTES),
            Some(Duration::ZERO)
        );
        // Unread bytes are given back: three requests that found nothing free the budget.
        for _ in 0..3 {
            budget.settle(&greedy, MAX_PROVE_BYTES, 0);
        }
        assert_eq!(budget.reserve(&greedy, 0), Some(Duration::ZERO));
        // Bytes read past the reservation are charged.
        budget.settle(&greedy, 0, 64 << 20);
        assert!(about(budget.reserve(&greedy, 0), 4));
    }

    #[test]
    fn prove_frames_fit_the_header_cap() {
        let ids = vec![ChunkId([0xff; 32]); MAX_PROVE_BATCH];
        let mut bytes = Vec::new();
        let request = ChunkRequest::Prove {
            nonce: [0xff; 32],
            ids,
        };
        ciborium::into_writer(&request, &mut bytes).unwrap();
        assert!(bytes.len() <= MAX_HEADER, "{} bytes", bytes.len());
        let mut bytes = Vec::new();
        let proofs = ChunkResponse::Proofs(vec![Some([0xff; 32]); MAX_PROVE_BATCH]);
        ciborium::into_writer(&proofs, &mut bytes).unwrap();
        assert!(bytes.len() <= MAX_HEADER, "{} bytes", bytes.len());
    }
}

#[cfg(test)]
mod flusher_tests {
    use super::*;
    use libp2p::futures::future::join_all;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sync_requests_share_flushes_and_a_peer_with_nothing_stored_gets_none() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(ChunkStore::open(dir.path()).unwrap());
        let flusher = Flusher::new(store, Workers::new());
        let (p, q) = (PeerId::random(), PeerId::random());
        flusher.stored(p);
        // Fifty requests at once from two peers: one flush running at a time, every request
        // arriving meanwhile shares the next one.
        let results = join_all((0..50).map(|i| {
            let f = flusher.clone();
            async move { f.flush_for(if i % 2 == 0 { p } else { q }).await }
        }))
        .await;
        assert!(results.iter().all(|(r, _)| r.is_ok()));
        let flushes = flusher.flushes();
        assert!(
            (1..=2).contains(&flushes),
            "{flushes} flushes for 50 requests"
        );
        assert_eq!(
            results.iter().filter(|(_, shared)| !shared).count() as u64,
            flushes
        );
        // Nothing stored since: answered at once, no flush.
        let (r, shared) = flusher.flush_for(p).await;
        assert!(r.is_ok() && shared);
        assert_eq!(flusher.flushes(), flushes);
        // A chunk stored after the last flush started needs a new one.
        flusher.stored(q);
        let (r, shared) = flusher.flush_for(q).await;
        assert!(r.is_ok() && !shared);
        assert_eq!(flusher.flushes(), flushes + 1);
    }

    #[tokio::test]
    async fn a_put_the_policy_refuses_is_refused_counted_and_not_stored() {
        struct TakeNone;
        impl PutPolicy for TakeNone {
            fn takes(&self, _: &PeerId, _: &ChunkId) -> bool {
                false
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(ChunkStore::open(dir.path()).unwrap());
        let server = ChunkServer::new(
            store.clone(),
            Arc::new(TakeNone),
            PeerGuard::new(),
            Workers::new(),
        );
        let data = b"\x01junk".to_vec();
        let id = ChunkId::of(&data);
        let peer = PeerId::random();
        let before = server.guard.status().refused["not_owner"];
        let (response, _, offence) = answer(
            &peer,
            ChunkRequest::Put {
                id,
                nonce: crate::block::proof::fresh_nonce(),
            },
            data,
            &server,
        )
        .await;
        assert!(
            matches!(&response, ChunkResponse::Refused(why) if why == NOT_OWNER),
            "{response:?}"
        );
        assert!(
            offence.is_none(),
            "not an offence: an honest view may differ"
        );
        assert!(!store.contains(&id));
        assert!(server.guard.status().refused["not_owner"] > before);
    }
}
