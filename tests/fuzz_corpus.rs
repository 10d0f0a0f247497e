//! The fuzz corpus as a stable regression test: every file of `fuzz/corpus/<target>/` and
//! `fuzz/regressions/<target>/` (crashes the fuzzers found, kept after the fix) goes through
//! the same harness as the `cargo fuzz` target (`p2pfs::fuzzing`), which must not panic.
//! Decode errors are fine.
//!
//! The seed corpus (files named `seed-*`) is written by the ignored test below:
//! `cargo test --features fuzzing --test fuzz_corpus -- --ignored write_seed_corpus`. The
//! harnesses exist only with that feature, which this test requires (Cargo.toml).

use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use libp2p::futures::executor::block_on;
use libp2p::futures::io::Cursor;
use p2pfs::block::chunk::{FORMAT_AES256_GCM, FORMAT_CHACHA20_POLY1305};
use p2pfs::block::{ChunkId, ChunkKey, ChunkRef, ChunkSecret};
use p2pfs::cluster::NamespaceGossip;
use p2pfs::cluster::membership::{AnnouncedState, Announcement};
use p2pfs::fuzzing;
use p2pfs::namespace::entry::{EntrySealer, descend};
use p2pfs::namespace::{Entry, EntryId, EntryKey, EntryKind, EntryMeta, Timestamp, UserId};
use p2pfs::rpc::chunk::{ChunkRequest, ChunkResponse, MAX_BODY};
use p2pfs::rpc::frame::{MAX_HEADER, write_frame, write_frame_with_body};
use p2pfs::rpc::sync::{MAX_FRAME, SyncRequest, SyncResponse};
use p2pfs::util::hlc::Hlc;
use serde::Serialize;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// Feeds every kept input of `target` to `harness`; fails naming every input that panicked.
fn replay(target: &str, harness: fn(&[u8])) {
    let mut inputs = 0;
    let mut panicked = Vec::new();
    for kind in ["corpus", "regressions"] {
        let dir = fuzz_dir().join(kind).join(target);
        let Ok(files) = std::fs::read_dir(&dir) else {
            assert_eq!(kind, "regressions", "{} is missing", dir.display());
            continue;
        };
        for file in files {
            let path = file.expect("corpus directory lists").path();
            let data = std::fs::read(&path).expect("corpus file reads");
            inputs += 1;
            if std::panic::catch_unwind(|| harness(&data)).is_err() {
                panicked.push(path.display().to_string());
            }
        }
    }
    assert!(inputs > 0, "no corpus for {target}");
    assert!(
        panicked.is_empty(),
        "{target}: {} of {inputs} inputs panicked: {panicked:#?}",
        panicked.len()
    );
}

#[test]
fn frame() {
    replay("frame", fuzzing::frame);
}

#[test]
fn gossip() {
    replay("gossip", fuzzing::gossip);
}

#[test]
fn entry() {
    replay("entry", fuzzing::entry);
}

#[test]
fn chunk() {
    replay("chunk", fuzzing::chunk);
}

// ---- The seed corpus: real encodings of valid messages of every type, and edge cases. ----

fn signer() -> SigningKey {
    SigningKey::from_bytes(&[0x42; 32])
}

fn sealer(key: &SigningKey, origin: u64) -> EntrySealer<'_> {
    EntrySealer {
        volume: fuzzing::VOLUME,
        payload_key: &fuzzing::PAYLOAD_KEY,
        signer: key,
        origin,
    }
}

fn time(secs: i64, nanos: u32) -> Timestamp {
    Timestamp { secs, nanos }
}

fn meta(kind: EntryKind, name: &[u8], blocks: Vec<Option<ChunkRef>>) -> EntryMeta {
    EntryMeta {
        parent: EntryId([1; 16]),
        name: name.to_vec(),
        kind,
        size: blocks.len() as u64 * 4096,
        mode: if kind == EntryKind::Dir { 0o755 } else { 0o644 },
        uid: 1000,
        gid: 1000,
        atime: time(1_700_000_000, 1),
        mtime: time(1_700_000_000, 999_999_999),
        ctime: time(1_700_000_001, 0),
        blocks,
        symlink_target: if kind == EntryKind::Symlink {
            b"../target/file".to_vec()
        } else {
            Vec::new()
        },
        rdev: 0,
        target: None,
        unnamed: false,
        xattrs: Vec::new(),
        conflict_of: None,
    }
}

/// Chunk refs whose ids are `[b; 32]`: the ids the entry harness's payload check knows.
fn blocks(n: u8) -> Vec<Option<ChunkRef>> {
    (0..n)
        .map(|b| {
            (b % 5 != 3).then_some(ChunkRef {
                id: ChunkId([b; 32]),
                key: ChunkKey([b ^ 0xff; 32]),
            })
        })
        .collect()
}

fn metas() -> Vec<(&'static str, EntryMeta)> {
    vec![
        ("file", meta(EntryKind::File, b"notes.txt", blocks(3))),
        ("empty-file", meta(EntryKind::File, b"empty", vec![])),
        ("big-file", meta(EntryKind::File, b"video.mkv", blocks(40))),
        ("dir", meta(EntryKind::Dir, b"photos", vec![])),
        ("symlink", meta(EntryKind::Symlink, b"link", vec![])),
        ("root", meta(EntryKind::Dir, b"", vec![])),
        ("long-name", meta(EntryKind::File, &[b'n'; 255], blocks(1))),
        (
            "utf8-name",
            meta(EntryKind::File, "été ☃.txt".as_bytes(), blocks(2)),
        ),
        ("far-future", {
            let mut m = meta(EntryKind::File, b"future", vec![]);
            m.mtime = time(i64::MAX, 999_999_999);
            m.atime = time(i64::MIN, 0);
            m
        }),
        ("before-epoch", {
            let mut m = meta(EntryKind::File, b"old", vec![]);
            m.mtime = time(-86_400, 500);
            m
        }),
    ]
}

fn entries() -> Vec<(&'static str, Entry)> {
    let key = signer();
    let s = sealer(&key, 42);
    let mut out: Vec<(&str, Entry)> = metas()
        .into_iter()
        .enumerate()
        .map(|(i, (name, m))| {
            let id = EntryId([i as u8 + 2; 16]);
            (name, s.seal(id, Hlc(1 << 40 | i as u64), &[], &m))
        })
        .collect();
    let first = out[0].1.clone();
    out.push((
        "tombstone",
        s.tombstone(first.id, Hlc(2 << 40), &first.seen),
    ));
    // A version written on top of those of 40 other nodes (the history keeps 32).
    let mut base = Vec::new();
    for origin in 0..40u64 {
        base = descend(&base, origin * 7 + 1, Hlc(1 << 40 | origin));
    }
    let m = meta(EntryKind::File, b"shared.txt", blocks(2));
    out.push((
        "long-history",
        s.seal(EntryId([0xee; 16]), Hlc(3 << 40), &base, &m),
    ));
    out.push((
        "other-volume",
        EntrySealer {
            volume: p2pfs::namespace::VolumeId([0x22; 16]),
            ..sealer(&key, 7)
        }
        .seal(EntryId([0xdd; 16]), Hlc(4 << 40), &[], &m),
    ));
    out
}

fn cbor<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).expect("serializes");
    out
}

fn encode_frame<T: Serialize>(msg: &T) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    block_on(write_frame(&mut out, msg, MAX_FRAME)).expect("frame writes");
    out.into_inner()
}

fn encode_frame_with_body<T: Serialize>(msg: &T, body: &[u8]) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    block_on(write_frame_with_body(&mut out, msg, body, MAX_BODY)).expect("frame writes");
    out.into_inner()
}

fn frame_seeds() -> Vec<(String, Vec<u8>)> {
    let (r, sealed) = ChunkSecret(fuzzing::CHUNK_SECRET).seal(b"the first chunk of a file");
    let ids: Vec<ChunkId> = (0..3u8).map(|b| ChunkId([b; 32])).collect();
    let all = entries();
    let pick = |names: &[&str]| -> Vec<Entry> {
        all.iter()
            .filter(|(n, _)| names.contains(n))
            .map(|(_, e)| e.clone())
            .collect()
    };
    let mut digest = vec![0u8; 256 * 32];
    digest[32..64].fill(0xab);
    let mut seeds: Vec<(&str, Vec<u8>)> = vec![
        (
            "chunk-put",
            encode_frame_with_body(
                &ChunkRequest::Put {
                    id: r.id,
                    nonce: [3; 32],
                },
                &sealed,
            ),
        ),
        (
            "chunk-put-mismatch",
            encode_frame_with_body(
                &ChunkRequest::Put {
                    id: ids[1],
                    nonce: [4; 32],
                },
                &sealed,
            ),
        ),
        (
            "chunk-get",
            encode_frame_with_body(&ChunkRequest::Get { id: r.id }, &[]),
        ),
        (
            "chunk-have",
            encode_frame_with_body(&ChunkRequest::Have { ids: ids.clone() }, &[]),
        ),
        (
            "chunk-prove",
            encode_frame_with_body(
                &ChunkRequest::Prove {
                    nonce: [5; 32],
                    ids: ids.clone(),
                },
                &[],
            ),
        ),
        (
            "chunk-stored-proof",
            encode_frame_with_body(&ChunkResponse::StoredProof([6; 32]), &[]),
        ),
        (
            "chunk-proofs",
            encode_frame_with_body(
                &ChunkResponse::Proofs(vec![Some([7; 32]), None, Some([8; 32])]),
                &[],
            ),
        ),
        (
            "chunk-have-empty",
            encode_frame_with_body(&ChunkRequest::Have { ids: vec![] }, &[]),
        ),
        (
            "chunk-stored",
            encode_frame_with_body(&ChunkResponse::Stored, &[]),
        ),
        (
            "chunk-data",
            encode_frame_with_body(&ChunkResponse::Data, &sealed),
        ),
        (
            "chunk-not-found",
            encode_frame_with_body(&ChunkResponse::NotFound, &[]),
        ),
        (
            "chunk-have-bits",
            encode_frame_with_body(&ChunkResponse::Have(vec![true, false, true]), &[]),
        ),
        (
            "chunk-refused",
            encode_frame_with_body(&ChunkResponse::Refused("no space left".into()), &[]),
        ),
        ("sync-digest", encode_frame(&SyncRequest::Digest(digest))),
        (
            "sync-digest-short",
            encode_frame(&SyncRequest::Digest(vec![1; 31])),
        ),
        (
            "sync-pull",
            encode_frame(&SyncRequest::Pull {
                bucket: 7,
                after: None,
            }),
        ),
        (
            "sync-pull-after",
            encode_frame(&SyncRequest::Pull {
                bucket: 2,
                after: Some(EntryKey {
                    id: EntryId([2; 16]),
                    volume: fuzzing::VOLUME,
                }),
            }),
        ),
        (
            "sync-push",
            encode_frame(&SyncRequest::Push(pick(&["file", "dir", "symlink"]))),
        ),
        (
            "sync-expire",
            encode_frame(&SyncRequest::Expire(pick(&["tombstone"]))),
        ),
        (
            "sync-differs",
            encode_frame(&SyncResponse::Differs(vec![0, 2, 255])),
        ),
        (
            "sync-entries",
            encode_frame(&SyncResponse::Entries {
                entries: pick(&["root", "long-history"]),
                more: true,
            }),
        ),
        (
            "sync-applied",
            encode_frame(&SyncResponse::Applied {
                applied: 3,
                rejected: 1,
                forgotten: pick(&["tombstone"]),
            }),
        ),
        (
            "sync-expired",
            encode_frame(&SyncResponse::Expired { forgotten: 4 }),
        ),
        (
            "sync-refused",
            encode_frame(&SyncResponse::Refused(
                "at most 512 entries per push".into(),
            )),
        ),
    ];
    // A stream carries one frame after another.
    let mut session = encode_frame(&SyncRequest::Pull {
        bucket: 0,
        after: None,
    });
    session.extend(encode_frame(&SyncRequest::Push(pick(&["file"]))));
    session.extend(encode_frame(&SyncRequest::Expire(vec![])));
    seeds.push(("sync-session", session));
    let mut pooled = encode_frame_with_body(&ChunkRequest::Get { id: r.id }, &[]);
    pooled.extend(encode_frame_with_body(
        &ChunkRequest::Put {
            id: r.id,
            nonce: [3; 32],
        },
        &sealed,
    ));
    pooled.extend(encode_frame_with_body(&ChunkRequest::Have { ids }, &[]));
    seeds.push(("chunk-session", pooled));
    // Edge cases: cut short, lengths over the caps, empty frames.
    let push = encode_frame(&SyncRequest::Push(pick(&["file"])));
    seeds.push(("edge-truncated-push", push[..push.len() / 2].to_vec()));
    seeds.push(("edge-length-only", push[..4].to_vec()));
    let put = encode_frame_with_body(
        &ChunkRequest::Put {
            id: r.id,
            nonce: [3; 32],
        },
        &sealed,
    );
    seeds.push(("edge-truncated-body", put[..put.len() - 5].to_vec()));
    let mut over = vec![0xff, 0xff, 0xff, 0xff];
    over.extend_from_slice(b"\xa0");
    seeds.push(("edge-huge-length", over));
    let mut over_header = ((MAX_HEADER + 1) as u32).to_be_bytes().to_vec();
    over_header.extend_from_slice(&[0xf6; 16]);
    seeds.push(("edge-header-over-cap", over_header));
    let mut over_body = encode_frame_with_body(&ChunkRequest::Get { id: r.id }, &[]);
    let n = over_body.len();
    over_body[n - 4..].copy_from_slice(&((MAX_BODY + 1) as u32).to_be_bytes());
    seeds.push(("edge-body-over-cap", over_body));
    seeds.push(("edge-zero-length", vec![0, 0, 0, 0]));
    seeds.push(("edge-empty", vec![]));
    let mut unknown = vec![0, 0, 0, 0];
    unknown.extend(cbor(&"Teleport"));
    let len = (unknown.len() - 4) as u32;
    unknown[..4].copy_from_slice(&len.to_be_bytes());
    seeds.push(("edge-unknown-variant", unknown));
    seeds.into_iter().map(|(n, d)| (n.to_string(), d)).collect()
}

fn peer(seed: u8) -> Vec<u8> {
    libp2p::identity::Keypair::ed25519_from_bytes([seed; 32])
        .expect("32 bytes are an ed25519 secret")
        .public()
        .to_peer_id()
        .to_bytes()
}

fn announcement(state: AnnouncedState) -> Announcement {
    Announcement {
        peer: peer(2),
        addrs: vec![
            "/ip4/192.168.1.20/tcp/4001".into(),
            "/ip6/::1/tcp/4001".into(),
        ],
        capacity: 100 << 30,
        free: 40 << 30,
        version: "0.1.0".into(),
        state,
        seq: 1_700_000_000_000,
        knows: 3,
        placement_rule: p2pfs::cluster::placement::RULE,
        name: "nas".into(),
        cert: Vec::new(),
        user: None,
        recipient: String::new(),
    }
}

fn gossip_seeds() -> Vec<(String, Vec<u8>)> {
    let all = entries();
    let mut seeds: Vec<(&str, Vec<u8>)> = vec![
        ("announce-alive", cbor(&announcement(AnnouncedState::Alive))),
        (
            "announce-leaving",
            cbor(&announcement(AnnouncedState::Leaving)),
        ),
        ("announce-left", cbor(&announcement(AnnouncedState::Left))),
        ("announce-local", {
            let mut a = announcement(AnnouncedState::Alive);
            a.peer = peer(1);
            cbor(&a)
        }),
        ("announce-many-addrs", {
            let mut a = announcement(AnnouncedState::Alive);
            a.addrs = (0..24)
                .map(|i| match i % 4 {
                    0 => format!("/ip4/10.0.0.{i}/tcp/{}", 4000 + i),
                    1 => format!("/dns4/node{i}.example/tcp/4001/p2p/{}", "12D3KooW"),
                    2 => "/ip4/1.2.3.4/udp/1/quic-v1".into(),
                    _ => "not a multiaddr".into(),
                })
                .collect();
            cbor(&a)
        }),
        ("announce-odd-version", {
            let mut a = announcement(AnnouncedState::Alive);
            a.version = "1.0\u{1b}[31m\n☃".repeat(30);
            a.capacity = u64::MAX;
            a.seq = u64::MAX;
            cbor(&a)
        }),
        ("announce-bad-peer", {
            let mut a = announcement(AnnouncedState::Alive);
            a.peer = vec![0x00, 0x25, 0x08, 0x02];
            cbor(&a)
        }),
        ("announce-empty-peer", {
            let mut a = announcement(AnnouncedState::Alive);
            a.peer = vec![];
            a.addrs = vec![];
            cbor(&a)
        }),
        (
            "namespace-entries",
            cbor(&NamespaceGossip::Entries(
                all.iter()
                    .filter(|(n, _)| ["file", "dir", "tombstone"].contains(n))
                    .map(|(_, e)| e.clone())
                    .collect(),
            )),
        ),
        ("namespace-empty", cbor(&NamespaceGossip::Entries(vec![]))),
        ("namespace-sync-with-me", cbor(&NamespaceGossip::SyncWithMe)),
        ("edge-garbage", b"\xff\xfe\xfd not cbor".to_vec()),
        ("edge-empty", vec![]),
        ("edge-deep-nesting", vec![0x81; 600]),
    ];
    let a = cbor(&announcement(AnnouncedState::Alive));
    seeds.push(("edge-truncated-announce", a[..a.len() - 7].to_vec()));
    // Announcements from before `free` existed still decode.
    seeds.push(("announce-without-free", {
        #[derive(Serialize)]
        struct Old {
            peer: Vec<u8>,
            addrs: Vec<String>,
            capacity: u64,
            version: String,
            state: AnnouncedState,
            seq: u64,
        }
        cbor(&Old {
            peer: peer(3),
            addrs: vec!["/ip4/127.0.0.1/tcp/1".into()],
            capacity: 1,
            version: "0.0.1".into(),
            state: AnnouncedState::Alive,
            seq: 1,
        })
    }));
    seeds.into_iter().map(|(n, d)| (n.to_string(), d)).collect()
}

fn entry_seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds: Vec<(String, Vec<u8>)> = entries()
        .into_iter()
        .map(|(n, e)| (format!("entry-{n}"), e.to_bytes()))
        .collect();
    // Plaintext payloads: the harness also opens the input as an entry's decrypted payload.
    seeds.extend(
        metas()
            .into_iter()
            .map(|(n, m)| (format!("meta-{n}"), cbor(&m))),
    );
    let bad_name = meta(EntryKind::File, b"a/b", blocks(1));
    seeds.push(("meta-slash-in-name".into(), cbor(&bad_name)));
    let mut unknown_chunk = meta(EntryKind::File, b"f", vec![]);
    unknown_chunk.blocks = vec![Some(ChunkRef {
        id: ChunkId::of(b"not in the clear set"),
        key: ChunkKey([0; 32]),
    })];
    seeds.push(("meta-unknown-chunk".into(), cbor(&unknown_chunk)));
    // Entries that decode as CBOR but break the structural rules.
    let file = entries()[0].1.clone();
    let mut unsorted = file.clone();
    unsorted.chunks = vec![ChunkId([9; 32]), ChunkId([1; 32])];
    seeds.push(("edge-unsorted-chunks".into(), unsorted.to_bytes()));
    let mut no_self = file.clone();
    no_self.seen = vec![(1, Hlc(1))];
    seeds.push(("edge-history-without-self".into(), no_self.to_bytes()));
    let mut bad_author = file.clone();
    bad_author.author = UserId([0xff; 32]);
    seeds.push(("edge-bad-author".into(), bad_author.to_bytes()));
    let bytes = file.to_bytes();
    seeds.push((
        "edge-truncated".into(),
        bytes[..bytes.len() * 2 / 3].to_vec(),
    ));
    seeds.push(("edge-empty".into(), vec![]));
    seeds
}

fn chunk_seeds() -> Vec<(String, Vec<u8>)> {
    let secret = ChunkSecret(fuzzing::CHUNK_SECRET);
    let mut seeds = Vec::new();
    for (size, fill) in [(0usize, 0u8), (1, 7), (100, b'a'), (1000, 0x5c)] {
        for (format, name) in [
            (FORMAT_CHACHA20_POLY1305, "chacha"),
            (FORMAT_AES256_GCM, "aes"),
        ] {
            let (_, sealed) = secret.seal_as(format, &vec![fill; size]);
            seeds.push((format!("sealed-{name}-{size}"), sealed));
        }
    }
    seeds.push(("plain-text".into(), b"hello, chunk codec".to_vec()));
    seeds.push(("edge-format-only".into(), vec![FORMAT_CHACHA20_POLY1305]));
    seeds.push(("edge-under-overhead".into(), vec![FORMAT_AES256_GCM; 16]));
    seeds.push(("edge-unknown-format".into(), vec![3; 40]));
    seeds.push(("edge-empty".into(), vec![]));
    seeds
}

/// Writes the seed corpus (`fuzz/corpus/<target>/seed-*`), replacing earlier seeds and
/// leaving inputs the fuzzers added alone. Entry payloads have random nonces, so entry
/// seeds differ from run to run.
#[test]
#[ignore = "writes the seed corpus into the source tree"]
fn write_seed_corpus() {
    let targets = [
        ("frame", frame_seeds()),
        ("gossip", gossip_seeds()),
        ("entry", entry_seeds()),
        ("chunk", chunk_seeds()),
    ];
    for (target, seeds) in targets {
        let dir = fuzz_dir().join("corpus").join(target);
        std::fs::create_dir_all(&dir).expect("corpus directory");
        for old in std::fs::read_dir(&dir).expect("corpus directory lists") {
            let path = old.expect("corpus entry").path();
            if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("seed-"))
            {
                std::fs::remove_file(path).expect("old seed removed");
            }
        }
        for (name, data) in seeds {
            std::fs::write(dir.join(format!("seed-{name}")), data).expect("seed written");
        }
    }
}
