//! `fake-holder`: a member that claims to store everything and stores nothing. It listens, joins
//! the network through the target, announces itself alive with a huge capacity
//! (`--claim-capacity`, default 2^50 bytes) and its own address, so every node places chunks
//! on it and talks to it; on the chunk protocol it answers every `Put` as stored (with a
//! made-up proof: it never looks at the bytes), every `Have` with "yes", every `Prove` with
//! made-up proofs and every `Get` with "not found". With `--keep-chunks` it lies only about its capacity: it keeps what
//! it is sent (in memory) and answers truthfully. It runs until killed (or `--duration-secs`),
//! printing one `put` line per chunk id it was first sent.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Stream};
use p2pfs::block::ChunkId;
use p2pfs::identity::NetworkKey;
use p2pfs::net::Topic;
use p2pfs::net::guard::PeerGuard;
use p2pfs::rpc::chunk::{ChunkRequest, ChunkResponse, MAX_BODY};
use p2pfs::rpc::frame::{read_frame_with_body, write_frame_with_body};
use serde_json::json;
use tokio::sync::mpsc;

use super::{Args, CHUNK, emit, now_ms};

pub async fn run(args: &Args, key: &NetworkKey, target: PeerId) -> Result<(), String> {
    let keypair = match args.seed {
        Some(s) => libp2p::identity::Keypair::ed25519_from_bytes([s; 32]).expect("32-byte seed"),
        None => libp2p::identity::Keypair::generate_ed25519(),
    };
    let id = keypair.public().to_peer_id();
    let mut swarm = p2pfs::net::build_swarm(
        keypair,
        key,
        false,
        PeerGuard::new(),
        std::sync::Arc::new(p2pfs::net::admit::KeyOnlyAdmission),
    )
    .map_err(|e| e.to_string())?;
    for t in [Topic::Membership, Topic::Namespace] {
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&p2pfs::net::topic(key, t))
            .map_err(|e| e.to_string())?;
    }
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("an address"))
        .map_err(|e| e.to_string())?;
    swarm.dial(args.target.clone()).map_err(|e| e.to_string())?;
    let mut incoming = swarm
        .behaviour()
        .stream
        .new_control()
        .accept(CHUNK)
        .map_err(|e| e.to_string())?;
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<String>();
    let kept: Option<Kept> = args.keep_chunks.then(Kept::default);
    tokio::spawn(async move {
        while let Some((peer, stream)) = incoming.next().await {
            tokio::spawn(answer(peer, stream, seen_tx.clone(), kept.clone()));
        }
    });

    let deadline = Instant::now() + Duration::from_secs(args.duration_secs);
    let mut addrs: Vec<Multiaddr> = Vec::new();
    let mut announce = tokio::time::interval(Duration::from_millis(500));
    let mut seq = now_ms();
    let mut first = true;
    let mut put_ids = HashSet::new();
    let mut connected = false;
    while Instant::now() < deadline {
        tokio::select! {
            event = swarm.select_next_some() => match event {
                SwarmEvent::NewListenAddr { address, .. } => addrs.push(address),
                SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == target => {
                    connected = true;
                }
                SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. }
                    if peer_id == target =>
                {
                    connected = false;
                    let _ = swarm.dial(args.target.clone());
                }
                _ => {}
            },
            Some(chunk) = seen_rx.recv() => {
                if put_ids.insert(chunk.clone()) {
                    emit(json!({"event": "put", "chunk": chunk, "distinct": put_ids.len()}));
                }
            }
            _ = announce.tick() => {
                if !connected || addrs.is_empty() {
                    continue;
                }
                seq += 1;
                let a = p2pfs::cluster::membership::Announcement {
                    peer: id.to_bytes(),
                    addrs: addrs.iter().map(|a| format!("{a}/p2p/{id}")).collect(),
                    capacity: args.claim_capacity,
                    free: args.claim_capacity,
                    version: env!("CARGO_PKG_VERSION").into(),
                    state: p2pfs::cluster::membership::AnnouncedState::Alive,
                    seq,
                    knows: u32::MAX,
                    placement_rule: p2pfs::cluster::placement::RULE,
                    name: "rogue".into(),
                    cert: Vec::new(),
                    user: None,
                    recipient: String::new(),
                };
                let mut bytes = Vec::new();
                ciborium::into_writer(&a, &mut bytes).expect("an announcement serializes");
                let ok = swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(p2pfs::net::topic(key, Topic::Membership), bytes)
                    .is_ok();
                if first && ok {
                    first = false;
                    emit(json!({"event": "announcing", "phase": "hold", "peer_id": id.to_string(),
                        "capacity": args.claim_capacity}));
                }
            }
        }
    }
    Ok(())
}

fn made_up() -> [u8; 32] {
    let mut p = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut p);
    p
}

/// The chunks a `--keep-chunks` rogue was sent.
type Kept = Arc<parking_lot::Mutex<HashMap<ChunkId, Vec<u8>>>>;

/// Answers one stream's requests (with lies unless it keeps chunks), reporting the chunk ids
/// it is sent.
async fn answer(
    peer: PeerId,
    mut stream: Stream,
    seen: mpsc::UnboundedSender<String>,
    kept: Option<Kept>,
) {
    loop {
        let Ok(Some((request, body))) =
            read_frame_with_body::<_, ChunkRequest>(&mut stream, MAX_BODY).await
        else {
            return;
        };
        let mut data = Vec::new();
        let response = match (request, &kept) {
            (ChunkRequest::Put { id, nonce }, kept) => {
                let _ = seen.send(id.to_string());
                match kept {
                    Some(kept) => {
                        let proof = p2pfs::block::proof::proof(&nonce, &body);
                        kept.lock().insert(id, body);
                        ChunkResponse::StoredProof(proof)
                    }
                    // It never looks at the bytes: its "proof" is made up.
                    None => ChunkResponse::StoredProof(made_up()),
                }
            }
            (ChunkRequest::Prove { ids, .. }, None) => {
                ChunkResponse::Proofs(ids.iter().map(|_| Some(made_up())).collect())
            }
            (ChunkRequest::Prove { nonce, ids }, Some(kept)) => {
                let kept = kept.lock();
                ChunkResponse::Proofs(
                    ids.iter()
                        .map(|id| kept.get(id).map(|b| p2pfs::block::proof::proof(&nonce, b)))
                        .collect(),
                )
            }
            (ChunkRequest::Have { ids }, None) => ChunkResponse::Have(vec![true; ids.len()]),
            (ChunkRequest::Have { ids }, Some(kept)) => {
                let kept = kept.lock();
                ChunkResponse::Have(ids.iter().map(|id| kept.contains_key(id)).collect())
            }
            (ChunkRequest::Get { id }, Some(kept)) if kept.lock().contains_key(&id) => {
                data = kept.lock()[&id].clone();
                ChunkResponse::Data
            }
            (ChunkRequest::Get { .. }, _) => ChunkResponse::NotFound,
            (ChunkRequest::Sync, _) => ChunkResponse::Stored,
        };
        if write_frame_with_body(&mut stream, &response, &data, MAX_BODY)
            .await
            .is_err()
        {
            tracing::debug!(%peer, "fake holder: stream gone");
            return;
        }
    }
}
