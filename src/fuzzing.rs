//! Fuzzing harnesses: one function per `cargo fuzz` target in `fuzz/` (each target is a
//! one-line call), shared with `tests/fuzz_corpus.rs`, which replays the committed corpus on
//! the stable toolchain. Each feeds arbitrary bytes through the decoders the node runs on
//! untrusted input (the very functions, not copies), then through what the node does next
//! with a decoded value, and panics only when an invariant breaks. Decode errors are fine.
//!
//! Not part of the node's API: compiled only with the `fuzzing` feature, which `fuzz/` and
//! `tests/fuzz_corpus.rs` turn on.

use std::time::{Duration, Instant};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use libp2p::PeerId;
use libp2p::futures::executor::block_on;
use libp2p::futures::io::Cursor;
use serde::de::DeserializeOwned;

use crate::block::chunk::{self as codec, FORMAT_AES256_GCM, FORMAT_CHACHA20_POLY1305};
use crate::block::{ChunkId, ChunkKey, ChunkRef, ChunkSecret};
use crate::cluster::membership::{
    self, Announcement, LivenessConfig, MAX_ADDRS, MAX_VERSION_CHARS, Membership,
};
use crate::cluster::{self, NamespaceGossip};
use crate::namespace::entry::{self, MAX_ENCODED_ENTRY};
use crate::namespace::{Entry, EntryId, EntryMeta, UserId, VolumeId};
use crate::rpc::chunk::{ChunkRequest, ChunkResponse, MAX_BODY};
use crate::rpc::frame::{read_frame, read_frame_with_body};
use crate::rpc::sync::{self, SyncRequest, SyncResponse};
use crate::util::hlc::Hlc;

/// The volume payload key the harnesses open entries with (the seed corpus is sealed with it,
/// so seeds get past decryption).
pub const PAYLOAD_KEY: [u8; 32] = [0x5a; 32];
/// The volume the seed entries belong to.
pub const VOLUME: VolumeId = VolumeId([0x11; 16]);
/// The chunk secret of the seed chunks.
pub const CHUNK_SECRET: [u8; 32] = [0xc5; 32];
/// The key the chunk harness tries on arbitrary ciphertext.
pub const CHUNK_KEY: [u8; 32] = [0x4b; 32];

/// A stream of `/p2pfs/chunk/2` or `/p2pfs/sync/2` frames. The same bytes are read as each
/// of the four message types (requests as the server reads them, responses as the client
/// does), frame after frame until the stream ends or a frame is refused, as a connection
/// would be.
pub fn frame(data: &[u8]) {
    frames_with_body::<ChunkRequest>(data, |request, body| {
        // What a node computes from a request before its store is involved.
        if let ChunkRequest::Put { id, nonce } = request {
            let _ = codec::verify(&id, body);
            let _ = crate::block::proof::proof(&nonce, body);
        }
    });
    frames_with_body::<ChunkResponse>(data, |response, body| match response {
        ChunkResponse::Data => ciphertext(body),
        // What a writer and a challenger check a proof against.
        ChunkResponse::StoredProof(p) => {
            let _ = crate::block::proof::verify(&[0; 32], body, &p);
        }
        ChunkResponse::Proofs(proofs) => {
            for p in proofs.iter().flatten() {
                let _ = crate::block::proof::verify(&[0; 32], body, p);
            }
        }
        _ => {}
    });
    frames::<SyncRequest>(data, |request| {
        if let SyncRequest::Push(entries) | SyncRequest::Expire(entries) = request {
            entries.iter().for_each(received_entry);
        }
    });
    frames::<SyncResponse>(data, |response| match response {
        SyncResponse::Entries { entries, .. } => entries.iter().for_each(received_entry),
        SyncResponse::Applied { forgotten, .. } => forgotten.iter().for_each(received_entry),
        _ => {}
    });
}

fn frames_with_body<T: DeserializeOwned>(data: &[u8], mut next: impl FnMut(T, &[u8])) {
    let mut stream = Cursor::new(data);
    block_on(async {
        while let Ok(Some((msg, body))) = read_frame_with_body::<_, T>(&mut stream, MAX_BODY).await
        {
            next(msg, &body);
        }
    });
}

fn frames<T: DeserializeOwned>(data: &[u8], mut next: impl FnMut(T)) {
    let mut stream = Cursor::new(data);
    block_on(async {
        while let Ok(Some(msg)) = read_frame::<_, T>(&mut stream, sync::MAX_FRAME).await {
            next(msg);
        }
    });
}

/// A gossip message, read as each topic's payload: an [`Announcement`] (then applied to a
/// membership view, as from its own source, and aged through every liveness state) and a
/// [`NamespaceGossip`] (whose entries go where sync's go).
pub fn gossip(data: &[u8]) {
    if let Some(a) = cluster::decode_announcement(data) {
        announcement(&a);
    }
    if let Some(NamespaceGossip::Entries(entries)) = cluster::decode_namespace_gossip(data) {
        entries.iter().for_each(received_entry);
    }
}

fn announcement(a: &Announcement) {
    let local = libp2p::identity::Keypair::ed25519_from_bytes([1; 32])
        .expect("32 bytes are an ed25519 secret")
        .public()
        .to_peer_id();
    let mut view = Membership::new(local, LivenessConfig::default());
    let t0 = Instant::now();
    // `Membership::apply` validates the peer id; the node has checked that it is the gossip
    // source already, so a valid one is the source here.
    let Ok(_) = view.apply(a, t0) else {
        assert!(
            PeerId::from_bytes(&a.peer).is_err(),
            "valid peer id refused"
        );
        return;
    };
    let peer = PeerId::from_bytes(&a.peer).expect("applied, so the peer id is valid");
    assert!(membership::parse_addrs(&a.addrs).len() <= MAX_ADDRS);
    if let Some(m) = view.get(&peer) {
        assert!(m.addrs.len() <= MAX_ADDRS);
        assert!(m.version.chars().count() <= MAX_VERSION_CHARS);
        assert!(!m.version.chars().any(char::is_control));
    }
    let _ = view.apply(a, t0 + Duration::from_secs(1));
    for secs in [7, 61, 3600, 7200] {
        view.tick(t0 + Duration::from_secs(secs));
        view.heard_from(&peer, t0 + Duration::from_secs(secs));
    }
    let _ = (view.placement_peers(), view.live_count());
}

/// An entry as stored in the namespace database ([`Entry::from_bytes`]), then checked and
/// opened as a received one. The same bytes are also tried as the decrypted payload of an
/// entry (what a writer holding the volume key can put there) and opened.
pub fn entry(data: &[u8]) {
    if let Ok(e) = Entry::from_bytes(data) {
        received_entry(&e);
    }
    let e = with_payload(data);
    if let Ok(meta) = e.open(&PAYLOAD_KEY) {
        opened(&e, &meta);
    }
}

/// A decoded entry from a peer or the disk: what the node does with it that needs no store.
/// Whatever decodes on the wire must be storable: it must load back from its stored bytes.
fn received_entry(e: &Entry) {
    let _ = e.verify_signature();
    if let Ok(meta) = e.open(&PAYLOAD_KEY) {
        opened(e, &meta);
    }
    let stored = e.to_bytes();
    if stored.len() <= MAX_ENCODED_ENTRY {
        assert_eq!(
            Entry::from_bytes(&stored).as_ref(),
            Ok(e),
            "an entry that decodes from the wire does not load back from its stored bytes"
        );
    }
    let r = entry::resolve(Some(e), e).expect("an entry is a version of itself");
    assert!(r.displaced.is_none());
    let _ = (e.covers(e), e.supersedes(e), e.seen_of(e.origin));
}

/// What the node does with opened metadata: its times go to the kernel.
fn opened(e: &Entry, meta: &EntryMeta) {
    assert!(!e.deleted);
    for t in [meta.atime, meta.mtime, meta.ctime] {
        let _ = t.to_system();
    }
    assert!(
        meta.blocks
            .iter()
            .flatten()
            .all(|r| e.chunks.binary_search(&r.id).is_ok())
    );
}

/// An entry whose payload is `plain` encrypted under [`PAYLOAD_KEY`] (unsigned: opening does
/// not look at the signature).
fn with_payload(plain: &[u8]) -> Entry {
    let (id, nonce) = (EntryId([7; 16]), [9u8; 24]);
    let mut aad = [0u8; 32];
    aad[..16].copy_from_slice(&id.0);
    aad[16..].copy_from_slice(&VOLUME.0);
    let sealed = XChaCha20Poly1305::new((&PAYLOAD_KEY).into())
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plain,
                aad: &aad,
            },
        )
        .expect("fits the AEAD limit");
    let mut payload = nonce.to_vec();
    payload.extend_from_slice(&sealed);
    // Every chunk id a seed's chunk map can name, so the clear-set check passes for seeds.
    let chunks: Vec<ChunkId> = (0..=255u8).map(|b| ChunkId([b; 32])).collect();
    Entry {
        id,
        volume: VOLUME,
        hlc: Hlc(1),
        author: UserId([0; 32]),
        origin: 1,
        deleted: false,
        purge: false,
        seen: vec![(1, Hlc(1))],
        chunks,
        payload,
        signature: [0; 64],
    }
}

/// Chunk bytes: as ciphertext from a peer or the disk (verified, then opened), and as
/// plaintext (sealed in each format, then opened back to itself).
pub fn chunk(data: &[u8]) {
    ciphertext(data);
    let secret = ChunkSecret(CHUNK_SECRET);
    for format in [FORMAT_CHACHA20_POLY1305, FORMAT_AES256_GCM] {
        let (r, sealed) = secret.seal_as(format, data);
        assert_eq!(codec::verify(&r.id, &sealed), Ok(()));
        let plain = codec::open(&r, &sealed).expect("a sealed chunk opens");
        assert_eq!(&plain[..], data);
    }
}

fn ciphertext(data: &[u8]) {
    let r = ChunkRef {
        id: ChunkId::of(data),
        key: ChunkKey(CHUNK_KEY),
    };
    let _ = codec::verify(&ChunkId([0; 32]), data);
    let _ = codec::open(&r, data);
    if let Ok(plain) = codec::open_verified(&r, data.to_vec()) {
        let _ = plain.len();
    }
}
