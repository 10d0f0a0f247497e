//! `/p2pfs/sync/2`: namespace anti-entropy. The initiator sends a digest of its namespace (256
//! buckets by the first byte of entry ids, each the XOR of its entries' hashes); the responder
//! names the buckets that differ; for each, the initiator pulls the responder's entries (in
//! pages, in entry-key order: an entry is named by its id and its volume) and pushes its own. Both sides merge with last-writer-wins, so one session leaves
//! both with the union. Gossip spreads new entries fast; this brings back whatever gossip missed
//! (a node that was away, a partition, a message dropped).

use std::sync::Arc;
use std::time::Duration;

use libp2p::futures::StreamExt;
use libp2p::{PeerId, Stream, StreamProtocol};
use serde::{Deserialize, Serialize};

use super::frame::{self, FrameError, read_frame, write_frame};
use crate::fs::{Mount, RemoteApply};
use crate::namespace::entry::MAX_ENCODED_ENTRY;
use crate::namespace::{Entry, EntryKey};
use crate::net::NetHandle;
use crate::net::bandwidth::Direction;
use crate::net::guard::{Offence, PeerGuard, StreamKind};
use crate::rpc::counters::{Counted, SYNC_TRAFFIC};
use crate::util::workers::Workers;

/// Version 2: pages and pulls name entries by [`EntryKey`] (version 1 named them by id alone).
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/p2pfs/sync/2");
/// Entries per page.
const PAGE_ENTRIES: usize = 512;
/// The encoded entries of a page (a pull's answer, a push) add up to at most this, or the page
/// is one entry alone; an entry is at most [`MAX_ENCODED_ENTRY`]. So a page of entries is at
/// most `MAX_ENCODED_ENTRY` bytes plus its frame's few bytes of CBOR around them.
const PAGE_BYTES: usize = MAX_ENCODED_ENTRY;
/// Room for the CBOR around a page's entries (the message's tags and lengths, `more`).
const FRAME_OVERHEAD: usize = 4 << 10;
/// The cap on a frame either way: one full page. A larger frame is an offence.
pub const MAX_FRAME: usize = PAGE_BYTES + FRAME_OVERHEAD;
const TIMEOUT: Duration = Duration::from_secs(60);
/// Simultaneous sync sessions served.
const MAX_SESSIONS: usize = 8;

#[derive(Debug, Serialize, Deserialize)]
pub enum SyncRequest {
    /// 256 bucket hashes of 32 bytes, concatenated.
    Digest(#[serde(with = "serde_bytes")] Vec<u8>),
    Pull {
        bucket: u8,
        after: Option<EntryKey>,
    },
    Push(Vec<Entry>),
    /// Tombstones every member has seen: store, then forget them.
    Expire(Vec<Entry>),
}

#[derive(Debug, Serialize, Deserialize)]
pub enum SyncResponse {
    Differs(#[serde(with = "serde_bytes")] Vec<u8>),
    Entries {
        entries: Vec<Entry>,
        more: bool,
    },
    Applied {
        applied: u32,
        rejected: u32,
        /// Expired tombstones that deleted pushed entries: the pusher missed the deletion.
        #[serde(default)]
        forgotten: Vec<Entry>,
    },
    Expired {
        forgotten: u32,
    },
    Refused(String),
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("cannot open a sync stream: {0}")]
    Open(String),
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("sync peer timed out")]
    Timeout,
    #[error("sync peer answered out of protocol")]
    Unexpected,
    #[error("sync peer refused: {0}")]
    Refused(String),
    #[error("local namespace: {0}")]
    Local(String),
}

/// What one session did.
#[derive(Debug, Default, Clone)]
pub struct SyncReport {
    pub buckets: usize,
    pub pulled: RemoteApply,
    pub pushed: usize,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, SyncError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SyncError::Local(e.to_string()))?
        .map_err(SyncError::Local)
}

/// The entries of `bucket` after `after` that fit one page ([`PAGE_BYTES`]), and whether more
/// follow.
fn page(mount: &Mount, bucket: u8, after: Option<EntryKey>) -> Result<(Vec<Entry>, bool), String> {
    let entries = mount
        .namespace()
        .bucket_entries(bucket, after, PAGE_ENTRIES)
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut bytes = 0;
    for e in entries {
        // The exact encoded size (an entry encodes the same alone and in a page).
        bytes += e.to_bytes().len();
        if bytes > PAGE_BYTES && !out.is_empty() {
            return Ok((out, true));
        }
        out.push(e);
    }
    let more = out.len() == PAGE_ENTRIES;
    Ok((out, more))
}

async fn call(
    stream: &mut Stream,
    guard: &Arc<PeerGuard>,
    peer: PeerId,
    req: &SyncRequest,
) -> Result<SyncResponse, SyncError> {
    let exchange = async {
        let mut io = Counted::new(stream, &SYNC_TRAFFIC);
        write_frame(&mut io, req, MAX_FRAME).await?;
        let response = read_frame::<_, SyncResponse>(&mut io, MAX_FRAME)
            .await
            .inspect_err(|e| frame::report(guard, peer, e, false, "sync response"))?;
        Ok::<_, FrameError>((response, io.take_tally()))
    };
    let (response, (sent, received)) = tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| SyncError::Timeout)??;
    guard.bandwidth().pace(&peer, sent, received).await;
    response.ok_or(SyncError::Unexpected)
}

async fn open(control: &libp2p_stream::Control, peer: PeerId) -> Result<Stream, SyncError> {
    let mut control = control.clone();
    tokio::time::timeout(TIMEOUT, control.open_stream(peer, PROTOCOL))
        .await
        .map_err(|_| SyncError::Timeout)?
        .map_err(|e| SyncError::Open(e.to_string()))
}

/// Sends this node's digest and returns the buckets where the peer's differs.
async fn differing_buckets(
    stream: &mut Stream,
    guard: &Arc<PeerGuard>,
    peer: PeerId,
    mount: &Arc<Mount>,
) -> Result<Vec<u8>, SyncError> {
    let c = mount.clone();
    let digest = blocking(move || c.namespace().digest().map_err(|e| e.to_string())).await?;
    match call(stream, guard, peer, &SyncRequest::Digest(digest.concat())).await? {
        SyncResponse::Differs(b) => Ok(b),
        SyncResponse::Refused(why) => Err(SyncError::Refused(why)),
        _ => Err(SyncError::Unexpected),
    }
}

/// Runs one anti-entropy session with `peer`.
pub async fn sync_with(
    net: &NetHandle,
    peer: PeerId,
    mount: Arc<Mount>,
) -> Result<SyncReport, SyncError> {
    let guard = &net.guard;
    guard.used(peer);
    let mut stream = open(&net.streams, peer).await?;
    let differs = differing_buckets(&mut stream, guard, peer, &mount).await?;
    let mut report = SyncReport {
        buckets: differs.len(),
        ..Default::default()
    };
    for &bucket in &differs {
        let mut after = None;
        loop {
            let (entries, more) = match call(
                &mut stream,
                guard,
                peer,
                &SyncRequest::Pull { bucket, after },
            )
            .await?
            {
                SyncResponse::Entries { entries, more } => (entries, more),
                _ => return Err(SyncError::Unexpected),
            };
            if entries
                .iter()
                .any(|e| e.id.0[0] != bucket || after.is_some_and(|a| e.key() <= a))
                || !entries.windows(2).all(|w| w[0].key() < w[1].key())
            {
                guard.offence(peer, Offence::Malformed, "sync page out of order");
                return Err(SyncError::Unexpected);
            }
            after = entries.last().map(|e| e.key());
            let c = mount.clone();
            let (applied, forged) = blocking(move || apply_from_peer(&c, peer, entries)).await?;
            report_forged(guard, peer, forged);
            report.pulled.applied += applied.applied;
            report.pulled.rejected += applied.rejected;
            if !applied.forgotten.is_empty() {
                // The peer still has versions whose deletion expired here: hand it the
                // tombstones.
                let expire = SyncRequest::Expire(applied.forgotten);
                if let SyncResponse::Refused(why) = call(&mut stream, guard, peer, &expire).await? {
                    return Err(SyncError::Refused(why));
                }
            }
            if !more || after.is_none() {
                break;
            }
        }
    }
    if differs.is_empty() {
        return Ok(report);
    }
    // Push only the buckets that still differ once ours took in what the peer had: a bucket
    // that now matches holds nothing the peer lacks (pushing it whole sent a joiner's entire
    // pull straight back, and made the peer verify every signature again).
    let still = differing_buckets(&mut stream, guard, peer, &mount).await?;
    for bucket in still {
        let mut after = None;
        loop {
            let c = mount.clone();
            let (entries, more) = blocking(move || page(&c, bucket, after)).await?;
            if entries.is_empty() {
                break;
            }
            after = entries.last().map(|e| e.key());
            report.pushed += entries.len();
            match call(&mut stream, guard, peer, &SyncRequest::Push(entries)).await? {
                SyncResponse::Applied { forgotten, .. } if !forgotten.is_empty() => {
                    // Versions deleted while this node was away, their tombstones since
                    // expired: apply and forget them too.
                    let (c, guard) = (mount.clone(), guard.clone());
                    let n = blocking(move || {
                        report_forged(&guard, peer, count_forged(&forgotten));
                        c.expire(forgotten).map_err(|e| e.to_string())
                    })
                    .await?;
                    tracing::info!(%peer, expired = n, "deletions missed while away applied");
                }
                SyncResponse::Applied { .. } => {}
                SyncResponse::Refused(why) => return Err(SyncError::Refused(why)),
                _ => return Err(SyncError::Unexpected),
            }
            if !more {
                break;
            }
        }
    }
    Ok(report)
}

/// Asks `peer` to expire `tombstones` (which every member has seen). Returns how many it
/// expired; an error if it could not be reached or refused.
pub async fn expire(
    net: &NetHandle,
    peer: PeerId,
    tombstones: &[Entry],
) -> Result<usize, SyncError> {
    let mut stream = open(&net.streams, peer).await?;
    let mut n = 0;
    for batch in tombstones.chunks(PAGE_ENTRIES) {
        match call(
            &mut stream,
            &net.guard,
            peer,
            &SyncRequest::Expire(batch.to_vec()),
        )
        .await?
        {
            SyncResponse::Expired { forgotten } => n += forgotten as usize,
            SyncResponse::Refused(why) => return Err(SyncError::Refused(why)),
            _ => return Err(SyncError::Unexpected),
        }
    }
    Ok(n)
}

/// Applies entries a peer sent; also returns how many of them are forged (their signature
/// does not verify). A forged entry is the sender's offence: no node stores one, so no honest
/// peer sends one. (An entry refused for another reason, such as a writer list this node has
/// not caught up with yet, is not.)
pub fn apply_from_peer(
    mount: &Mount,
    peer: PeerId,
    entries: Vec<Entry>,
) -> Result<(RemoteApply, usize), String> {
    let sent = entries.clone();
    let report = mount
        .apply_from(Some(peer), entries)
        .map_err(|e| e.to_string())?;
    let forged = if report.rejected > 0 {
        count_forged(&sent)
    } else {
        0
    };
    if report.rejected > forged {
        log_refused_once(peer, report.rejected - forged);
    }
    Ok((report, forged))
}

/// Logs that entries from `peer` were refused for their content (an author who may not write
/// the volume, a record not signed by its owner, a payload that does not open), once per peer
/// per process: a peer that keeps resending them would otherwise flood the log. Every refusal
/// is counted in status (`rejected_entries`). Forged signatures are offences, logged by the
/// guard.
fn log_refused_once(peer: PeerId, refused: usize) {
    static LOGGED: std::sync::OnceLock<parking_lot::Mutex<std::collections::HashSet<PeerId>>> =
        std::sync::OnceLock::new();
    let mut logged = LOGGED.get_or_init(Default::default).lock();
    if logged.len() >= 4096 {
        logged.clear();
    }
    if logged.insert(peer) {
        tracing::warn!(
            %peer,
            refused,
            "entries from this peer refused: their author may not write their volume, or they are malformed (further refusals from it are only counted in status)"
        );
    }
}

/// How many of `entries` have a signature that does not verify.
pub fn count_forged(entries: &[Entry]) -> usize {
    entries
        .iter()
        .filter(|e| e.verify_signature().is_err())
        .count()
}

fn report_forged(guard: &PeerGuard, peer: PeerId, forged: usize) {
    if forged > 0 {
        guard.offence(peer, Offence::ForgedEntry, "entry signature");
    }
}

/// Serves sync sessions, each among `workers`, reporting offences to `guard`.
pub async fn serve(
    mut incoming: libp2p_stream::IncomingStreams,
    mount: Arc<Mount>,
    guard: Arc<PeerGuard>,
    workers: Workers,
) {
    let sessions = Arc::new(tokio::sync::Semaphore::new(MAX_SESSIONS));
    while let Some((peer, stream)) = incoming.next().await {
        // A peer over its own limit (or blocked) is refused first, so one peer cannot take
        // every session; a refused stream is dropped at once (reset).
        let Some(peer_permit) = guard.admit_stream(peer, StreamKind::Sync) else {
            tracing::debug!(%peer, "sync session refused (peer over its limit, or blocked)");
            continue;
        };
        let Ok(permit) = sessions.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "too many sync sessions; dropping one");
            continue;
        };
        let (mount, guard) = (mount.clone(), guard.clone());
        workers.spawn(async move {
            let _permits = (permit, peer_permit);
            if let Err(e) = serve_session(&guard, peer, stream, mount).await {
                tracing::debug!(%peer, error = %e, "sync session ended");
            }
        });
    }
}

async fn serve_session(
    guard: &Arc<PeerGuard>,
    peer: PeerId,
    stream: Stream,
    mount: Arc<Mount>,
) -> Result<(), SyncError> {
    let mut stream = Counted::new(stream, &SYNC_TRAFFIC);
    loop {
        let request = match tokio::time::timeout(
            TIMEOUT,
            read_frame::<_, SyncRequest>(&mut stream, MAX_FRAME),
        )
        .await
        {
            Err(_) | Ok(Ok(None)) => return Ok(()),
            Ok(Ok(Some(r))) => r,
            Ok(Err(e)) => {
                frame::report(guard, peer, &e, true, "sync request");
                return Err(e.into());
            }
        };
        let c = mount.clone();
        // An offence is counted once the answer is on its way (the peer is then dropped).
        let mut offence = None;
        let response = match request {
            SyncRequest::Digest(theirs) if theirs.len() == 256 * 32 => {
                let ours =
                    blocking(move || c.namespace().digest().map_err(|e| e.to_string())).await?;
                let differs = (0..=255u8)
                    .filter(|&b| {
                        ours[b as usize][..] != theirs[b as usize * 32..(b as usize + 1) * 32]
                    })
                    .collect();
                SyncResponse::Differs(differs)
            }
            SyncRequest::Digest(_) => {
                offence = Some((Offence::Malformed, "sync digest"));
                SyncResponse::Refused("a digest has 256 buckets of 32 bytes".into())
            }
            SyncRequest::Pull { bucket, after } => {
                let (entries, more) = blocking(move || page(&c, bucket, after)).await?;
                SyncResponse::Entries { entries, more }
            }
            SyncRequest::Push(entries) if entries.len() <= PAGE_ENTRIES => {
                let (r, forged) = blocking(move || apply_from_peer(&c, peer, entries)).await?;
                if forged > 0 {
                    offence = Some((Offence::ForgedEntry, "entry signature"));
                }
                SyncResponse::Applied {
                    applied: r.applied as u32,
                    rejected: r.rejected as u32,
                    forgotten: r.forgotten,
                }
            }
            SyncRequest::Expire(entries) if entries.len() <= PAGE_ENTRIES => {
                let (n, forged) = blocking(move || {
                    let forged = count_forged(&entries);
                    c.expire(entries)
                        .map(|n| (n, forged))
                        .map_err(|e| e.to_string())
                })
                .await?;
                if forged > 0 {
                    offence = Some((Offence::ForgedEntry, "tombstone signature"));
                }
                SyncResponse::Expired {
                    forgotten: n as u32,
                }
            }
            SyncRequest::Expire(_) => {
                offence = Some((Offence::Malformed, "oversized expiry"));
                SyncResponse::Refused(format!("at most {PAGE_ENTRIES} tombstones per expiry"))
            }
            SyncRequest::Push(_) => {
                offence = Some((Offence::Malformed, "oversized push"));
                SyncResponse::Refused(format!("at most {PAGE_ENTRIES} entries per push"))
            }
        };
        let written = tokio::time::timeout(TIMEOUT, write_frame(&mut stream, &response, MAX_FRAME))
            .await
            .map_err(|_| SyncError::Timeout);
        if let Some((kind, what)) = offence {
            guard.offence(peer, kind, what);
        }
        written??;
        let (sent, received) = stream.take_tally();
        // A peer's pages are booked within the bounds `Bandwidth::admit` keeps; past them its
        // session ends (its next round comes later), so it cannot push the schedule further.
        let bandwidth = guard.bandwidth();
        let booked = bandwidth
            .admit(&peer, Direction::Up, sent as usize)
            .and_then(|up| {
                Ok(up.max(bandwidth.admit(&peer, Direction::Down, received as usize)?))
            });
        match booked {
            Ok(wait) => crate::net::bandwidth::wait_for(wait).await,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "sync session over the bandwidth limits; ended");
                return Ok(());
            }
        }
    }
}
