//! Attacks on a node's bounded costs by a member (issue 17): chunks it does not own put to
//! it (`junk-chunks`), and a leave that never ends (`leaving-forever`).

use super::*;

/// Chunks `junk-chunks` puts, and their size.
pub const JUNK_CHUNKS: usize = 200;
pub const JUNK_CHUNK_BYTES: usize = 16 * 1024;

/// Puts [`JUNK_CHUNKS`] random chunks (valid: their ids are their hashes) on one stream, one
/// after the other, and reports how many the node stored and refused, and why.
pub(super) async fn junk_chunks(rogue: &Rogue) {
    let mut stream = match rogue.open(CHUNK).await {
        Ok(s) => s,
        Err(e) => {
            emit(json!({"event": "open_failed", "phase": "put", "error": e}));
            return;
        }
    };
    let (mut stored, mut refused, mut failed) = (0u64, 0u64, 0u64);
    let mut reasons: std::collections::BTreeMap<String, u64> = Default::default();
    let mut stored_ids = Vec::new();
    for _ in 0..JUNK_CHUNKS {
        let mut body = vec![0u8; JUNK_CHUNK_BYTES];
        rand::thread_rng().fill_bytes(&mut body);
        let id = ChunkId::of(&body);
        let exchange = async {
            write_frame_with_body(
                &mut stream,
                &ChunkRequest::Put {
                    id,
                    nonce: p2pfs::block::proof::fresh_nonce(),
                },
                &body,
                MAX_BODY,
            )
            .await
            .map_err(|e| e.to_string())?;
            read_frame_with_body::<_, ChunkResponse>(&mut stream, MAX_BODY)
                .await
                .map_err(|e| e.to_string())
        };
        match tokio::time::timeout(Duration::from_secs(10), exchange).await {
            Ok(Ok(Some((ChunkResponse::Stored | ChunkResponse::StoredProof(_), _)))) => {
                stored += 1;
                stored_ids.push(id.to_hex());
            }
            Ok(Ok(Some((ChunkResponse::Refused(why), _)))) => {
                refused += 1;
                *reasons.entry(why).or_default() += 1;
            }
            other => {
                failed += 1;
                emit(
                    json!({"event": "put_failed", "phase": "put", "answer": format!("{other:?}")}),
                );
                break;
            }
        }
    }
    emit(
        json!({"event": "junk", "phase": "put", "planned": JUNK_CHUNKS,
        "sent": stored + refused + failed,
        "stored": stored, "refused": refused, "failed": failed, "reasons": reasons,
        "stored_ids": stored_ids}),
    );
}

/// Announces itself `Leaving` (with a large capacity) once a second for `--duration-secs`:
/// a member whose leave never ends. With `--flap-secs N`, every N seconds it announces `Alive`
/// and, a moment later, `Leaving` again: a member trying to restart its leave timeout and the
/// time it holds back garbage collection, while hardly ever looking alive to a GC pass.
pub(super) async fn announce_leaving_forever(rogue: &Rogue, args: &Args) {
    let subscribed = rogue.wait_subscribed(Topic::Membership).await;
    let deadline = Instant::now() + Duration::from_secs(args.duration_secs);
    let first_seq = now_ms();
    let mut sent = 0u64;
    let mut flaps = 0u64;
    let mut last_flap = Instant::now();
    while Instant::now() < deadline {
        let flap = args.flap_secs > 0 && last_flap.elapsed() >= Duration::from_secs(args.flap_secs);
        if flap {
            last_flap = Instant::now();
        }
        let states: &[p2pfs::cluster::membership::AnnouncedState] = if flap {
            &[
                p2pfs::cluster::membership::AnnouncedState::Alive,
                p2pfs::cluster::membership::AnnouncedState::Leaving,
            ]
        } else {
            &[p2pfs::cluster::membership::AnnouncedState::Leaving]
        };
        for (i, state) in states.iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let a = p2pfs::cluster::membership::Announcement {
                peer: rogue.id.to_bytes(),
                addrs: Vec::new(),
                capacity: 1 << 40,
                free: 1 << 40,
                version: env!("CARGO_PKG_VERSION").into(),
                state: *state,
                seq: first_seq + sent,
                knows: 0,
                placement_rule: p2pfs::cluster::placement::RULE,
                name: "rogue".into(),
                cert: Vec::new(),
                user: None,
                recipient: String::new(),
            };
            let mut bytes = Vec::new();
            ciborium::into_writer(&a, &mut bytes).expect("an announcement serializes");
            let ok = rogue.publish(Topic::Membership, bytes).await.is_ok();
            if sent == 0 {
                emit(json!({"event": "announcing", "phase": "announce", "ok": ok,
                    "node_subscribed": subscribed}));
            }
            sent += 1;
        }
        flaps += u64::from(flap);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    emit(json!({"event": "announced", "phase": "announce", "count": sent, "flaps": flaps}));
}
