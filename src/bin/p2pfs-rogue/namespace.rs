//! Namespace attacks by a member that holds the network key and nothing else (no right in
//! any volume but the network volume, which every member may write):
//! - `cross-volume`: learns every stored entry by sync `Pull` (a digest of zeros makes every
//!   bucket differ), then signs, in the network volume, a tombstone for each entry of another
//!   volume with that entry's id and a history that covers everything, and sends them by sync
//!   `Push` (`sync`), on the namespace topic (`gossip`), or as an `Expire` (`expire`: store,
//!   then forget them, which moves the deleted version to the forgotten table).
//! - `held-entries`: pushes many large entries of volumes no node has a record of (held
//!   unverified until one arrives), one per frame (`sync`).
//! - `peer-names`: pushes validly signed network-volume entries in the root whose names a local
//!   create refuses ("", ".", "..") and legal names with control characters, by sync (`sync`)
//!   and gossip (`gossip`).

use super::*;

/// Entries of `held-entries`, and the payload of each (under the entry cap).
pub const HELD_ENTRIES: usize = 64;
pub const HELD_PAYLOAD: usize = 3 << 20;

/// The names `peer-names` sends: refused ones, then legal ones with control characters.
pub const BAD_NAMES: [&[u8]; 3] = [b"", b".", b".."];
pub const CONTROL_NAMES: [&[u8]; 2] = [b"ctl\x01name", b"line\nbreak"];

/// A sealer for the network volume under a fresh author key.
fn network_sealer<'a>(
    volume: &'a Volume,
    signer: &'a ed25519_dalek::SigningKey,
) -> EntrySealer<'a> {
    EntrySealer {
        volume: volume.id,
        payload_key: volume.payload_key(),
        signer,
        origin: rand::random(),
    }
}

/// One request on `s` and its answer.
async fn exchange(s: &mut Stream, req: &SyncRequest) -> Result<SyncResponse, String> {
    write_frame(s, req, MAX_FRAME)
        .await
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(
        Duration::from_secs(30),
        read_frame::<_, SyncResponse>(s, MAX_FRAME),
    )
    .await
    {
        Err(_) => Err("no answer".into()),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(None)) => Err("closed".into()),
        Ok(Ok(Some(r))) => Ok(r),
    }
}

/// Every entry the node stores, by sync: a digest of zeros, then one pull per bucket that
/// differs (the first page of each: a test namespace is far smaller than a page).
async fn learn(ctx: &Ctx<'_>, s: &mut Stream) -> Result<Vec<Entry>, String> {
    let differs = match exchange(s, &SyncRequest::Digest(vec![0; 256 * 32])).await? {
        SyncResponse::Differs(b) => b,
        other => return Err(format!("digest answered {other:?}")),
    };
    let mut all = Vec::new();
    for bucket in differs {
        match exchange(
            s,
            &SyncRequest::Pull {
                bucket,
                after: None,
            },
        )
        .await?
        {
            SyncResponse::Entries { entries, .. } => all.extend(entries),
            other => return Err(format!("pull answered {other:?}")),
        }
    }
    ctx.emit(json!({"event": "learned", "entries": all.len()}));
    Ok(all)
}

pub(super) async fn cross_volume(ctx: &Ctx<'_>) {
    let Some(mut s) = ctx.open(SYNC).await else {
        return;
    };
    let learned = match learn(ctx, &mut s).await {
        Ok(l) => l,
        Err(e) => {
            ctx.emit(json!({"event": "error", "error": e}));
            return;
        }
    };
    let network = Volume::for_network(ctx.key);
    let signer = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let sealer = network_sealer(&network, &signer);
    // Stamped now (a clock far ahead is refused or clamped elsewhere), with every writer of
    // the victim's entry seen at the end of time.
    let hlc = Hlc(now_ms() << 16);
    let victims: Vec<&Entry> = learned.iter().filter(|e| e.volume != network.id).collect();
    let tombstones: Vec<Entry> = victims
        .iter()
        .map(|v| {
            let everything: Vec<(u64, Hlc)> = v
                .seen
                .iter()
                .map(|(o, _)| (*o, Hlc(u64::MAX >> 1)))
                .collect();
            sealer.tombstone(v.id, hlc, &everything)
        })
        .collect();
    ctx.emit(json!({"event": "tombstones", "victims": victims.len(),
        "ids": victims.iter().map(|v| v.id.to_string()).collect::<Vec<_>>(),
        "covers_all": tombstones.iter().zip(&victims).all(|(t, v)| t.covers(v))}));
    match ctx.phase {
        "gossip" => {
            let mut data = Vec::new();
            ciborium::into_writer(&NamespaceGossip::Entries(tombstones), &mut data)
                .expect("encodes");
            ctx.publish(Topic::Namespace, data, "cross-volume tombstones")
                .await;
        }
        phase => {
            let req = if phase == "expire" {
                SyncRequest::Expire(tombstones)
            } else {
                SyncRequest::Push(tombstones)
            };
            let answer = exchange(&mut s, &req).await;
            ctx.emit(json!({"event": "response", "answer": format!("{answer:?}")}));
        }
    }
}

pub(super) async fn held_entries(ctx: &Ctx<'_>) {
    let Some(mut s) = ctx.open(SYNC).await else {
        return;
    };
    let signer = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let mut sent = 0usize;
    let mut answers = Vec::new();
    for i in 0..HELD_ENTRIES {
        // A volume no record names: the node can only hold the entry, unverified.
        let mut volume = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut volume);
        let mut payload = vec![0u8; HELD_PAYLOAD];
        rand::thread_rng().fill_bytes(&mut payload[..4096]);
        let mut e = EntrySealer {
            volume: p2pfs::namespace::VolumeId(volume),
            payload_key: &[0; 32],
            signer: &signer,
            origin: 1,
        }
        .seal_clear(
            EntryId::random(),
            Hlc((now_ms() << 16) + i as u64),
            &[],
            payload,
        );
        e.signature = [0; 64];
        match exchange(&mut s, &SyncRequest::Push(vec![e])).await {
            Ok(r) => {
                sent += 1;
                if answers.len() < 3 {
                    answers.push(format!("{r:?}"));
                }
            }
            Err(err) => {
                ctx.emit(json!({"event": "push_failed", "after": sent, "error": err}));
                break;
            }
        }
    }
    ctx.emit(json!({"event": "held_pushed", "entries": sent,
        "bytes": sent * HELD_PAYLOAD, "answers": answers}));
}

pub(super) async fn peer_names(ctx: &Ctx<'_>) {
    let network = Volume::for_network(ctx.key);
    let signer = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let sealer = network_sealer(&network, &signer);
    let hlc = now_ms() << 16;
    let entries: Vec<Entry> = BAD_NAMES
        .iter()
        .chain(CONTROL_NAMES.iter())
        .enumerate()
        .map(|(i, name)| {
            let now = Timestamp::now();
            let meta = EntryMeta::new_empty(
                network.root_id(),
                name.to_vec(),
                EntryKind::File,
                0o644,
                (0, 0),
                now,
            );
            sealer.seal(EntryId::random(), Hlc(hlc + i as u64), &[], &meta)
        })
        .collect();
    ctx.emit(
        json!({"event": "names", "count": entries.len(), "refused": BAD_NAMES,
        "legal": CONTROL_NAMES}),
    );
    if ctx.phase == "gossip" {
        let mut data = Vec::new();
        ciborium::into_writer(&NamespaceGossip::Entries(entries), &mut data).expect("encodes");
        ctx.publish(Topic::Namespace, data, "entries with bad names")
            .await;
        return;
    }
    let Some(mut s) = ctx.open(SYNC).await else {
        return;
    };
    let answer = exchange(&mut s, &SyncRequest::Push(entries)).await;
    ctx.emit(json!({"event": "response", "answer": format!("{answer:?}")}));
}
