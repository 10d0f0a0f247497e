//! `removed-writer`: a writer removed from a volume (`p2pfs-ctl volume unshare`) signs, with its
//! own user key, a tombstone over every entry of the volume the node serves (deleted or not),
//! stamped just before its removal's clock (read from the volume record, which is in clear) and
//! with a history that covers every version anyone will write. Pushed by sync (`sync`) or published on the
//! namespace topic (`gossip`). Under the clock rule every node took them as the writer's last
//! word: the volume's files were deleted everywhere, with no conflict copy.

use super::*;
use p2pfs::identity::UserIdentity;
use p2pfs::namespace::volume::VolumeRecord;

/// Every entry the node serves, bucket by bucket.
async fn pull_all(ctx: &Ctx<'_>) -> Result<Vec<Entry>, String> {
    let mut s = ctx.open(SYNC).await.ok_or("no sync stream")?;
    let mut all = Vec::new();
    for bucket in 0..=255u8 {
        let mut after = None;
        loop {
            write_frame(&mut s, &SyncRequest::Pull { bucket, after }, MAX_FRAME)
                .await
                .map_err(|e| e.to_string())?;
            let answer = read_frame::<_, SyncResponse>(&mut s, MAX_FRAME)
                .await
                .map_err(|e| e.to_string())?;
            let Some(SyncResponse::Entries { entries, more }) = answer else {
                return Err(format!("unexpected answer to a pull: {answer:?}"));
            };
            after = entries.last().map(|e| e.key());
            all.extend(entries);
            if !more || after.is_none() {
                break;
            }
        }
    }
    Ok(all)
}

/// The back-dated tombstones, and the removal clock they were stamped under.
fn back_dated(
    user: &UserIdentity,
    volume: &str,
    entries: &[Entry],
    offset: u64,
) -> Result<(Vec<Entry>, Option<Hlc>), String> {
    let mine: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.volume.to_string() == volume)
        .collect();
    let record = mine
        .iter()
        .find(|e| VolumeRecord::is_record(e))
        .ok_or("the node serves no record of that volume")?;
    let record = VolumeRecord::from_entry(record).map_err(|e| e.to_string())?;
    let removal = record
        .revoked
        .iter()
        .find(|(u, _)| *u == user.user_id())
        .map(|(_, at)| *at);
    // Before the removal (or now, for a writer not removed yet).
    let stamp = Hlc(removal.map_or(now_ms() << 16, |at| at.0.saturating_sub(offset)));
    let origin: u64 = rand::random();
    let tombstones = mine
        .iter()
        .filter(|e| !VolumeRecord::is_record(e))
        .map(|e| {
            let covering: Vec<(u64, Hlc)> = e
                .seen
                .iter()
                .map(|(o, _)| (*o, Hlc(u64::MAX / 2)))
                .collect();
            EntrySealer {
                volume: e.volume,
                payload_key: &[0; 32],
                signer: &user.signing,
                origin,
            }
            .tombstone(e.id, stamp, &covering)
        })
        .collect();
    Ok((tombstones, removal))
}

pub(crate) async fn removed_writer(ctx: &Ctx<'_>, args: &Args) {
    let (Some(key_file), Some(volume)) = (&args.user_key, &args.volume) else {
        ctx.emit(
            json!({"event": "error", "error": "removed-writer needs --user-key and --volume"}),
        );
        return;
    };
    let user = match UserIdentity::load(key_file) {
        Ok(u) => u,
        Err(e) => {
            ctx.emit(json!({"event": "error", "error": e.to_string()}));
            return;
        }
    };
    let entries = match pull_all(ctx).await {
        Ok(e) => e,
        Err(e) => {
            ctx.emit(json!({"event": "error", "error": e}));
            return;
        }
    };
    let offset = if ctx.phase == "gossip" { 2 } else { 1 };
    let (tombstones, removal) = match back_dated(&user, volume, &entries, offset) {
        Ok(t) => t,
        Err(e) => {
            ctx.emit(json!({"event": "error", "error": e}));
            return;
        }
    };
    ctx.emit(
        json!({"event": "back_dated", "tombstones": tombstones.len(),
        "removal_clock": removal.map(|h| h.0), "stamp": tombstones.first().map(|t| t.hlc.0)}),
    );
    if ctx.phase == "gossip" {
        let mut data = Vec::new();
        ciborium::into_writer(&NamespaceGossip::Entries(tombstones), &mut data).expect("encodes");
        ctx.publish(Topic::Namespace, data, "back-dated tombstones")
            .await;
        return;
    }
    let Some(mut s) = ctx.open(SYNC).await else {
        return;
    };
    let exchange = async {
        write_frame(&mut s, &SyncRequest::Push(tombstones), MAX_FRAME)
            .await
            .map_err(|e| e.to_string())?;
        read_frame::<_, SyncResponse>(&mut s, MAX_FRAME)
            .await
            .map_err(|e| e.to_string())
    };
    match exchange.await {
        Ok(Some(SyncResponse::Applied {
            applied, rejected, ..
        })) => ctx.emit(json!({"event": "pushed", "applied": applied, "rejected": rejected})),
        other => ctx.emit(json!({"event": "pushed", "answer": format!("{other:?}")})),
    }
}
