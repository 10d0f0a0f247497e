//! A rogue peer: a test tool, not part of a p2pfs node. It joins a network the way a node does (the
//! library's own swarm: TCP, Noise with the network-key admission, Yamux, gossipsub on the
//! network's topics, the `/p2pfs/chunk/2` and `/p2pfs/sync/2` streams), dials one node and
//! performs one named attack, printing what it saw as JSON lines on stdout: whether the node
//! closed or reset its streams, what it answered, whether it dropped the connection.
//!
//! ```text
//! cargo run --features rogue --bin p2pfs-rogue -- --network-key KEYFILE \
//!     --target /ip4/127.0.0.1/tcp/PORT/p2p/PEER_ID --attack malformed-frame
//! ```
//!
//! Attacks (each in phases; `--phases` picks some):
//! - `oversized-frame`: a length prefix over the cap (`chunk-header`, `chunk-body`, `sync`);
//! - `malformed-frame`: a valid length, garbage CBOR (`chunk`, `sync`), and garbage gossip
//!   (`gossip-namespace`, `gossip-membership`);
//! - `truncated`: a declared length or body, then the stream closed mid-way (`chunk-header`,
//!   `chunk-body`, `sync`);
//! - `bad-chunk`: a chunk `Put` whose bytes do not hash to the claimed id (`chunk`);
//! - `forged-entry`: file entries in the network volume, one with a broken signature and one
//!   claiming another author (signed by a key that is not that writer's), pushed by sync
//!   (`sync`) and published on the namespace topic (`gossip`);
//! - `flood`: as many chunk and sync streams and requests (`streams`), or gossip messages
//!   (`gossip`), as fast as it can, reconnecting when dropped, for `--duration-secs` or until
//!   the node refuses it; or (`sustained`, only when asked for) all of them at the per-peer
//!   limits, as a heavy but legal peer.
//!
//! - `removed-writer`: a writer removed from `--volume` signs, with its `--user-key`,
//!   tombstones back-dated before its removal over every entry of the volume
//!   (`removed_writer.rs`), pushed by sync (`sync`) or gossip (`gossip`).
//! - `cross-volume`, `held-entries`, `peer-names`: namespace attacks by a member with no right
//!   in any volume but the network volume (`namespace.rs`).
//!
//! Not an attack, but a peer the tests need: `old-rule` (`announce`) joins as a member that
//! announces placement rule 1 (an older version, with no capacity) once a second for
//! `--duration-secs`.
//!
//! `fake-holder` (`hold`, `fake_holder.rs`): a member that claims a huge
//! capacity (`--claim-capacity`) and to hold every chunk, and stores nothing.
//! Member attacks on bounded costs (`limits.rs`): `junk-chunks` (`put`) puts valid chunks
//! the node does not own; `leaving-forever` (`announce`) announces `Leaving` once a second for
//! `--duration-secs` (with `--flap-secs N`, one `Alive` every N seconds in between).
//!
//! `forged-cert` (`self-signed`, `stolen`, `edited`; `forged_cert.rs`): a holder of a
//! certified network's key with no certificate shows a made-up one in the admission handshake
//! (`--member-data-dir`: the member whose certificate it steals).
//!
//! Every phase uses a fresh identity unless `--seed` gives one for all (to show that a peer
//! that offends again and again is blocked); `--rounds` repeats each phase on new connections.
//!
//! Built only with the `rogue` feature, and never packaged: `tests/hostile.rs` and the
//! `tests/insider_*.rs` run it as a child process (`tests/common/rogue.rs`).

mod fake_holder;
mod forged_cert;
mod limits;
mod namespace;
mod removed_writer;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, ValueEnum};
use libp2p::futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Stream, StreamProtocol, gossipsub};
use p2pfs::block::ChunkId;
use p2pfs::cluster::NamespaceGossip;
use p2pfs::identity::NetworkKey;
use p2pfs::namespace::entry::EntrySealer;
use p2pfs::namespace::{Entry, EntryId, EntryKind, EntryMeta, Timestamp, UserId, Volume};
use p2pfs::net::guard::PeerGuard;
use p2pfs::net::{Behaviour, BehaviourEvent, Topic};
use p2pfs::rpc::chunk::{ChunkRequest, ChunkResponse, MAX_BODY};
use p2pfs::rpc::frame::{
    MAX_HEADER, read_frame, read_frame_with_body, write_frame, write_frame_with_body,
};
use p2pfs::rpc::sync::{MAX_FRAME, SyncRequest, SyncResponse};
use p2pfs::util::hlc::Hlc;
use rand::RngCore;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};

const CHUNK: StreamProtocol = p2pfs::rpc::chunk::PROTOCOL;
const SYNC: StreamProtocol = p2pfs::rpc::sync::PROTOCOL;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Attack {
    OversizedFrame,
    MalformedFrame,
    Truncated,
    BadChunk,
    ForgedEntry,
    Flood,
    OldRule,
    RemovedWriter,
    FakeHolder,
    CrossVolume,
    HeldEntries,
    PeerNames,
    /// Valid chunks the node does not own, `Put` to it (`put`).
    JunkChunks,
    /// A member that announces `Leaving` for `--duration-secs` (`announce`).
    LeavingForever,
    /// Made-up certificates shown to a certified network (`self-signed`, `stolen`, `edited`).
    ForgedCert,
}

impl Attack {
    fn phases(self) -> &'static [&'static str] {
        match self {
            Attack::OversizedFrame => &["chunk-header", "chunk-body", "sync"],
            Attack::MalformedFrame => &["chunk", "sync", "gossip-namespace", "gossip-membership"],
            Attack::Truncated => &["chunk-header", "chunk-body", "sync"],
            Attack::BadChunk => &["chunk"],
            Attack::ForgedEntry => &["sync", "gossip"],
            Attack::Flood => &["streams", "gossip"],
            Attack::OldRule => &["announce"],
            Attack::RemovedWriter => &["sync", "gossip"],
            Attack::FakeHolder => &["hold"],
            Attack::CrossVolume => &["sync", "gossip", "expire"],
            Attack::HeldEntries => &["sync"],
            Attack::PeerNames => &["sync", "gossip"],
            Attack::JunkChunks => &["put"],
            Attack::LeavingForever => &["announce"],
            Attack::ForgedCert => &["self-signed", "stolen", "edited"],
        }
    }

    /// Phases that run only when asked for.
    fn extra_phases(self) -> &'static [&'static str] {
        match self {
            Attack::Flood => &["sustained"],
            _ => &[],
        }
    }
}

#[derive(Parser, Debug, Clone)]
#[command(name = "p2pfs-rogue", about = "A hostile p2pfs peer (a test tool)")]
pub struct Args {
    /// The network key file (the rogue is a member: it holds the key).
    #[arg(long)]
    pub network_key: PathBuf,
    /// The node to attack: its address with `/p2p/PEER_ID`.
    #[arg(long)]
    pub target: Multiaddr,
    #[arg(long, value_enum)]
    pub attack: Attack,
    /// Phases to run, comma-separated (default: every phase of the attack).
    #[arg(long, value_delimiter = ',')]
    pub phases: Vec<String>,
    /// One identity (an ed25519 key from this seed byte) for every phase and round.
    #[arg(long)]
    pub seed: Option<u8>,
    /// Times to repeat each phase, each on a new connection.
    #[arg(long, default_value_t = 1)]
    pub rounds: u32,
    /// How long to wait for the node to drop the connection after an attack.
    #[arg(long, default_value_t = 6)]
    pub wait_secs: u64,
    /// `flood`: how long to keep at each phase (SIGINT ends a flood sooner, with its report);
    /// `old-rule`: how long to keep announcing.
    #[arg(long, default_value_t = 8)]
    pub duration_secs: u64,
    /// `leaving-forever`: every this many seconds, announce `Alive` once between two
    /// `Leaving` announcements (0: never).
    #[arg(long, default_value_t = 0)]
    pub flap_secs: u64,
    /// `removed-writer`: the removed writer's user key file (`user.key` in its data dir).
    #[arg(long)]
    pub user_key: Option<PathBuf>,
    /// `removed-writer`: the volume's id (as `p2pfs-ctl volume list --json` prints it).
    #[arg(long)]
    pub volume: Option<String>,
    /// `fake-holder`: the capacity it announces, in bytes.
    #[arg(long, default_value_t = 1 << 50)]
    pub claim_capacity: u64,
    /// `fake-holder`: keep the chunks it is sent and answer truthfully (it lies only about
    /// its capacity).
    #[arg(long)]
    pub keep_chunks: bool,
    /// `forged-cert`: the data dir of a certified member whose certificate it steals.
    #[arg(long)]
    pub member_data_dir: Option<PathBuf>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Prints one JSON line (with a wall-clock time) and flushes it.
fn emit(mut v: Value) {
    use std::io::Write;
    v["t_ms"] = json!(now_ms());
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("p2pfs-rogue: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(attack(args)) {
        Ok(()) => {
            emit(json!({"event": "done"}));
            ExitCode::SUCCESS
        }
        Err(e) => {
            emit(json!({"event": "error", "error": e}));
            ExitCode::FAILURE
        }
    }
}

async fn attack(args: Args) -> Result<(), String> {
    let key = NetworkKey::load(&args.network_key).map_err(|e| e.to_string())?;
    let target = match args.target.iter().last() {
        Some(libp2p::multiaddr::Protocol::P2p(p)) => p,
        _ => return Err("--target must end with /p2p/PEER_ID".into()),
    };
    let phases: Vec<String> = if args.phases.is_empty() {
        args.attack.phases().iter().map(|s| s.to_string()).collect()
    } else {
        args.phases.clone()
    };
    if args.attack == Attack::FakeHolder {
        return fake_holder::run(&args, &key, target).await;
    }
    if args.attack == Attack::ForgedCert {
        for phase in &phases {
            if !args.attack.phases().contains(&phase.as_str()) {
                return Err(format!("{:?} has no phase {phase}", args.attack));
            }
        }
        return forged_cert::run(&args, &key, &args.target, target, &phases).await;
    }
    let seeded = args
        .seed
        .map(|s| libp2p::identity::Keypair::ed25519_from_bytes([s; 32]).expect("32-byte seed"));
    let mut shared_peer: Option<Rogue> = None;
    for phase in &phases {
        if !args.attack.phases().contains(&phase.as_str())
            && !args.attack.extra_phases().contains(&phase.as_str())
        {
            return Err(format!("{:?} has no phase {phase}", args.attack));
        }
        let fresh;
        let rogue = match &seeded {
            Some(kp) => {
                if shared_peer.is_none() {
                    shared_peer = Some(Rogue::start(kp.clone(), &key, &args.target, target)?);
                }
                shared_peer.as_ref().expect("set above")
            }
            None => {
                fresh = Rogue::start(
                    libp2p::identity::Keypair::generate_ed25519(),
                    &key,
                    &args.target,
                    target,
                )?;
                &fresh
            }
        };
        emit(
            json!({"event": "start", "attack": format!("{:?}", args.attack), "phase": phase,
            "peer_id": rogue.id.to_string()}),
        );
        if args.attack == Attack::Flood {
            flood(rogue, phase, &args).await;
            continue;
        }
        if args.attack == Attack::OldRule {
            if rogue.connect(phase, 1).await {
                announce_old_rule(rogue, &args).await;
            }
            continue;
        }
        if matches!(args.attack, Attack::JunkChunks | Attack::LeavingForever) {
            if rogue.connect(phase, 1).await {
                match args.attack {
                    Attack::JunkChunks => limits::junk_chunks(rogue).await,
                    _ => limits::announce_leaving_forever(rogue, &args).await,
                }
            }
            continue;
        }
        for round in 1..=args.rounds {
            if !rogue.connect(phase, round).await {
                continue;
            }
            let ctx = Ctx {
                rogue,
                phase,
                round,
                key: &key,
            };
            match args.attack {
                Attack::OversizedFrame => oversized(&ctx).await,
                Attack::MalformedFrame => malformed(&ctx).await,
                Attack::Truncated => truncated(&ctx).await,
                Attack::BadChunk => bad_chunk(&ctx).await,
                Attack::ForgedEntry => forged(&ctx).await,
                Attack::CrossVolume => namespace::cross_volume(&ctx).await,
                Attack::HeldEntries => namespace::held_entries(&ctx).await,
                Attack::PeerNames => namespace::peer_names(&ctx).await,
                Attack::RemovedWriter => removed_writer::removed_writer(&ctx, &args).await,
                Attack::Flood
                | Attack::OldRule
                | Attack::FakeHolder
                | Attack::JunkChunks
                | Attack::LeavingForever
                | Attack::ForgedCert => {
                    unreachable!("handled above")
                }
            }
            rogue
                .report_disconnect(phase, round, Duration::from_secs(args.wait_secs))
                .await;
        }
    }
    Ok(())
}

struct Ctx<'a> {
    rogue: &'a Rogue,
    phase: &'a str,
    round: u32,
    key: &'a NetworkKey,
}

impl Ctx<'_> {
    fn emit(&self, mut v: Value) {
        v["phase"] = json!(self.phase);
        v["round"] = json!(self.round);
        emit(v)
    }

    async fn open(&self, protocol: StreamProtocol) -> Option<Stream> {
        match self.rogue.open(protocol.clone()).await {
            Ok(s) => Some(s),
            Err(e) => {
                self.emit(
                    json!({"event": "open_failed", "protocol": protocol.to_string(), "error": e}),
                );
                None
            }
        }
    }

    /// Sends raw bytes on a new stream (closing its write side if `close`), then reports how
    /// the node reacted on the stream.
    async fn raw(&self, protocol: StreamProtocol, bytes: &[u8], close: bool, what: &str) {
        let Some(mut s) = self.open(protocol.clone()).await else {
            return;
        };
        let sent = async {
            s.write_all(bytes).await?;
            s.flush().await?;
            if close {
                s.close().await?;
            }
            Ok::<_, std::io::Error>(())
        }
        .await;
        self.emit(json!({"event": "sent", "protocol": protocol.to_string(), "what": what,
            "bytes": bytes.len(), "closed_write": close, "error": sent.err().map(|e| e.to_string())}));
        let outcome = observe(&mut s, Duration::from_secs(4)).await;
        self.emit(json!({"event": "stream", "protocol": protocol.to_string(), "outcome": outcome}));
    }

    async fn publish(&self, topic: Topic, data: Vec<u8>, what: &str) {
        let subscribed = self.rogue.wait_subscribed(topic).await;
        let result = self.rogue.publish(topic, data).await;
        self.emit(
            json!({"event": "published", "topic": format!("{topic:?}"), "what": what,
            "node_subscribed": subscribed, "ok": result.is_ok(), "error": result.err()}),
        );
    }
}

/// Reads what the node sends on `s` until it ends it or `limit` passes: `closed` (end of
/// stream, which is also how a reset reads), `error: ...`, or `open` (nothing happened).
async fn observe(s: &mut Stream, limit: Duration) -> String {
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0usize;
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return format!("open after {got} bytes"),
            Ok(Ok(0)) => return format!("closed after {got} bytes"),
            Ok(Ok(n)) => got += n,
            Ok(Err(e)) => return format!("error after {got} bytes: {e}"),
        }
    }
}

async fn oversized(ctx: &Ctx<'_>) {
    match ctx.phase {
        "chunk-header" => {
            let mut b = 0xffff_ff00u32.to_be_bytes().to_vec();
            b.extend_from_slice(&[0xa5; 64]);
            ctx.raw(CHUNK, &b, false, "header length 4 GiB").await;
        }
        "chunk-body" => {
            let b = put_with_body(7, MAX_BODY as u32 + 1, &[0xa5; 64]).await;
            ctx.raw(CHUNK, &b, false, "put with a body over the cap")
                .await;
        }
        _ => {
            let mut b = (MAX_FRAME as u32 + 1).to_be_bytes().to_vec();
            b.extend_from_slice(&[0xa5; 64]);
            ctx.raw(SYNC, &b, false, "frame over the cap").await;
        }
    }
}

/// A chunk `Put` frame for id `[id_byte; 32]` declaring a body of `declared` bytes, followed by
/// `sent` (which may be fewer, or more than the cap allows).
async fn put_with_body(id_byte: u8, declared: u32, sent: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    let put = ChunkRequest::Put {
        id: ChunkId([id_byte; 32]),
        nonce: [0; 32],
    };
    write_frame(
        &mut libp2p::futures::io::Cursor::new(&mut b),
        &put,
        MAX_HEADER,
    )
    .await
    .expect("encodes");
    b.extend_from_slice(&declared.to_be_bytes());
    b.extend_from_slice(sent);
    b
}

/// What the node answered to one request: its reply, `closed`, an error, or `no answer` within
/// 5 s.
async fn describe_answer<T: std::fmt::Debug>(
    exchange: impl std::future::Future<Output = Result<Option<T>, String>>,
) -> String {
    match tokio::time::timeout(Duration::from_secs(5), exchange).await {
        Err(_) => "no answer".to_string(),
        Ok(Err(e)) => format!("error: {e}"),
        Ok(Ok(None)) => "closed".to_string(),
        Ok(Ok(Some(r))) => format!("{r:?}"),
    }
}

fn garbage_frame() -> Vec<u8> {
    let mut b = 16u32.to_be_bytes().to_vec();
    b.extend_from_slice(&[0xff; 16]);
    b
}

async fn malformed(ctx: &Ctx<'_>) {
    match ctx.phase {
        "chunk" => {
            ctx.raw(CHUNK, &garbage_frame(), false, "garbage CBOR")
                .await
        }
        "sync" => ctx.raw(SYNC, &garbage_frame(), false, "garbage CBOR").await,
        "gossip-namespace" => {
            ctx.publish(Topic::Namespace, vec![0xff; 32], "garbage")
                .await
        }
        _ => {
            ctx.publish(Topic::Membership, vec![0xff; 32], "garbage")
                .await
        }
    }
}

async fn truncated(ctx: &Ctx<'_>) {
    match ctx.phase {
        "chunk-header" => {
            let mut b = 200u32.to_be_bytes().to_vec();
            b.extend_from_slice(&[0xa1; 20]);
            ctx.raw(CHUNK, &b, true, "20 of 200 header bytes").await;
        }
        "chunk-body" => {
            let b = put_with_body(9, 100_000, &[0xa1; 1000]).await;
            ctx.raw(CHUNK, &b, true, "1000 of 100000 body bytes").await;
        }
        _ => {
            let mut b = 1000u32.to_be_bytes().to_vec();
            b.extend_from_slice(&[0xa1; 10]);
            ctx.raw(SYNC, &b, true, "10 of 1000 frame bytes").await;
        }
    }
}

async fn bad_chunk(ctx: &Ctx<'_>) {
    let mut body = vec![0u8; 64 * 1024];
    rand::thread_rng().fill_bytes(&mut body);
    let mut other = body.clone();
    other[0] ^= 1;
    let claimed = ChunkId::of(&other);
    let actual = ChunkId::of(&body);
    ctx.emit(
        json!({"event": "bad_chunk", "claimed_id": claimed.to_hex(), "body_id": actual.to_hex()}),
    );
    let Some(mut s) = ctx.open(CHUNK).await else {
        return;
    };
    let exchange = async {
        write_frame_with_body(
            &mut s,
            &ChunkRequest::Put {
                id: claimed,
                nonce: [0; 32],
            },
            &body,
            MAX_BODY,
        )
        .await
        .map_err(|e| e.to_string())?;
        read_frame_with_body::<_, ChunkResponse>(&mut s, MAX_BODY)
            .await
            .map(|reply| reply.map(|(r, _)| r))
            .map_err(|e| e.to_string())
    };
    let answer = describe_answer(exchange).await;
    ctx.emit(json!({"event": "response", "protocol": CHUNK.to_string(), "answer": answer}));
}

/// Two file entries in the network volume's root that no node may accept: one whose signature
/// is broken, one that names another author (a writer) than the key that signed it.
fn forged_entries(key: &NetworkKey, tag: &str) -> (Vec<Entry>, Vec<String>) {
    let volume = Volume::for_network(key);
    let signer = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let sealer = EntrySealer {
        volume: volume.id,
        payload_key: volume.payload_key(),
        signer: &signer,
        origin: rand::random(),
    };
    let mut names = Vec::new();
    let mut entries = Vec::new();
    for variant in ["badsig", "notwriter"] {
        let name = format!("forged-{variant}-{tag}.txt");
        let now = Timestamp::now();
        let meta = EntryMeta::new_empty(
            volume.root_id(),
            name.clone().into_bytes(),
            EntryKind::File,
            0o644,
            (0, 0),
            now,
        );
        let mut e = sealer.seal(EntryId::random(), Hlc(now_ms() << 16), &[], &meta);
        if variant == "badsig" {
            e.signature[0] ^= 0x55;
        } else {
            let writer = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
            e.author = UserId(writer.verifying_key().to_bytes());
        }
        names.push(name);
        entries.push(e);
    }
    (entries, names)
}

async fn forged(ctx: &Ctx<'_>) {
    let tag = format!("{}{}", ctx.phase, ctx.round);
    let (entries, names) = forged_entries(ctx.key, &tag);
    ctx.emit(json!({"event": "forged", "names": names}));
    if ctx.phase == "gossip" {
        let mut data = Vec::new();
        ciborium::into_writer(&NamespaceGossip::Entries(entries), &mut data).expect("encodes");
        ctx.publish(Topic::Namespace, data, "forged entries").await;
        return;
    }
    let Some(mut s) = ctx.open(SYNC).await else {
        return;
    };
    let exchange = async {
        write_frame(&mut s, &SyncRequest::Push(entries), MAX_FRAME)
            .await
            .map_err(|e| e.to_string())?;
        read_frame::<_, SyncResponse>(&mut s, MAX_FRAME)
            .await
            .map_err(|e| e.to_string())
    };
    let answer = describe_answer(exchange).await;
    ctx.emit(json!({"event": "response", "protocol": SYNC.to_string(), "answer": answer}));
}

#[derive(Default)]
struct FloodCounters {
    streams_opened: AtomicU64,
    open_failed: AtomicU64,
    /// Streams the node ended before answering anything (refused: reset at once).
    streams_refused: AtomicU64,
    /// Requests not answered within 5 s (the stream is then dropped).
    requests_timed_out: AtomicU64,
    requests_answered: AtomicU64,
    gossip_queued: AtomicU64,
}

impl FloodCounters {
    fn json(&self) -> Value {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        json!({
            "streams_opened": l(&self.streams_opened),
            "open_failed": l(&self.open_failed),
            "streams_refused": l(&self.streams_refused),
            "requests_timed_out": l(&self.requests_timed_out),
            "requests_answered": l(&self.requests_answered),
            "gossip_queued": l(&self.gossip_queued),
        })
    }
}

/// One stream worker: opens streams of `protocol` and sends requests on each as fast as the
/// node answers, until `stop`.
async fn flood_worker(
    rogue: Rogue,
    protocol: StreamProtocol,
    stop: Arc<AtomicBool>,
    c: Arc<FloodCounters>,
) {
    let ids: Vec<ChunkId> = (0..1000u32)
        .map(|i| {
            let mut b = [0u8; 32];
            rand::thread_rng().fill_bytes(&mut b);
            b[..4].copy_from_slice(&i.to_be_bytes());
            ChunkId(b)
        })
        .collect();
    while !stop.load(Ordering::Relaxed) {
        // Opening waits its turn: libp2p-stream opens one stream at a time per connection.
        let mut s = match rogue
            .open_within(protocol.clone(), Duration::from_secs(10))
            .await
        {
            Ok(s) => s,
            _ => {
                c.open_failed.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        c.streams_opened.fetch_add(1, Ordering::Relaxed);
        let mut answered = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let ok = if protocol == CHUNK {
                let req = ChunkRequest::Have { ids: ids.clone() };
                let exchange = async {
                    write_frame_with_body(&mut s, &req, &[], MAX_BODY).await?;
                    read_frame_with_body::<_, ChunkResponse>(&mut s, MAX_BODY).await
                };
                match tokio::time::timeout(Duration::from_secs(5), exchange).await {
                    Ok(Ok(Some((ChunkResponse::Have(_), _)))) => Some(true),
                    Err(_) => None,
                    Ok(_) => Some(false),
                }
            } else {
                let req = SyncRequest::Digest(vec![0u8; 256 * 32]);
                let exchange = async {
                    write_frame(&mut s, &req, MAX_FRAME).await?;
                    read_frame::<_, SyncResponse>(&mut s, MAX_FRAME).await
                };
                match tokio::time::timeout(Duration::from_secs(5), exchange).await {
                    Ok(Ok(Some(SyncResponse::Differs(_)))) => Some(true),
                    Err(_) => None,
                    Ok(_) => Some(false),
                }
            };
            match ok {
                Some(true) => {}
                // The node ended the stream before answering anything: it refused it.
                Some(false) if answered == 0 => {
                    c.streams_refused.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Some(false) => break,
                None => {
                    c.requests_timed_out.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
            answered += 1;
            c.requests_answered.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Announces itself alive on placement rule 1 with no capacity, once a second for
/// `--duration-secs`: what a node of an older version looks like to the others.
async fn announce_old_rule(rogue: &Rogue, args: &Args) {
    let subscribed = rogue.wait_subscribed(Topic::Membership).await;
    let deadline = Instant::now() + Duration::from_secs(args.duration_secs);
    let first_seq = now_ms();
    let mut sent = 0u64;
    while Instant::now() < deadline {
        let a = p2pfs::cluster::membership::Announcement {
            peer: rogue.id.to_bytes(),
            addrs: Vec::new(),
            capacity: 0,
            free: 0,
            version: "0.0.1-rule1".into(),
            state: p2pfs::cluster::membership::AnnouncedState::Alive,
            seq: first_seq + sent,
            knows: 0,
            placement_rule: 1,
            name: String::new(),
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
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    emit(json!({"event": "announced", "phase": "announce", "count": sent}));
}

async fn flood(rogue: &Rogue, phase: &str, args: &Args) {
    let deadline = Instant::now() + Duration::from_secs(args.duration_secs);
    // (chunk stream workers, sync stream workers, gossip: off, as fast as possible, or a rate)
    let (chunk_workers, sync_workers, gossip) = match phase {
        "streams" => (24, 8, None),
        "gossip" => (0, 0, Some(None)),
        // Under the per-peer limits (16 chunk streams, 3 sync sessions, 50 gossip/s), with
        // room for the stream the connection probe used.
        _ => (12, 2, Some(Some(20u64))),
    };
    let mut round = 0;
    let mut blocked = false;
    while Instant::now() < deadline {
        round += 1;
        // A refused connection may be the node still dropping us for the last round: try
        // again before concluding it blocks us.
        let mut connected = false;
        for _ in 0..3 {
            if rogue.connect(phase, round).await {
                connected = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if !connected {
            blocked = true;
            break;
        }
        emit(json!({"event": "flooding", "phase": phase, "round": round}));
        let started = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let c = Arc::new(FloodCounters::default());
        let mut tasks = Vec::new();
        for i in 0..chunk_workers + sync_workers {
            let protocol = if i < chunk_workers { CHUNK } else { SYNC };
            tasks.push(tokio::spawn(flood_worker(
                rogue.clone(),
                protocol,
                stop.clone(),
                c.clone(),
            )));
        }
        if let Some(gossip_per_sec) = gossip {
            let (rogue, stop, c) = (rogue.clone(), stop.clone(), c.clone());
            tasks.push(tokio::spawn(async move {
                rogue.wait_subscribed(Topic::Namespace).await;
                let mut n = 0u64;
                let t0 = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    let msg = if n.is_multiple_of(2) {
                        NamespaceGossip::SyncWithMe
                    } else {
                        NamespaceGossip::Entries(Vec::new())
                    };
                    let mut data = Vec::new();
                    ciborium::into_writer(&msg, &mut data).expect("encodes");
                    // Gossipsub numbers every message: identical bytes are distinct messages.
                    n += 1;
                    if !rogue.publish_nowait(Topic::Namespace, data).await {
                        break;
                    }
                    c.gossip_queued.fetch_add(1, Ordering::Relaxed);
                    if let Some(rate) = gossip_per_sec {
                        let due = t0 + Duration::from_micros(n * 1_000_000 / rate);
                        tokio::time::sleep_until(due.into()).await;
                    }
                }
            }));
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        // SIGINT ends the flood early (with its report).
        let mut interrupted = false;
        let disconnected = tokio::select! {
            d = rogue.wait_disconnected(remaining) => d,
            _ = tokio::signal::ctrl_c() => {
                interrupted = true;
                false
            }
        };
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(6), t).await;
        }
        let mut v = c.json();
        v["gossip_ok_total"] = json!(rogue.gossip_ok.load(Ordering::Relaxed));
        v["gossip_err_total"] = json!(rogue.gossip_err.load(Ordering::Relaxed));
        v["event"] = json!("flood_round");
        v["phase"] = json!(phase);
        v["round"] = json!(round);
        v["disconnected"] = json!(disconnected);
        v["interrupted"] = json!(interrupted);
        v["ms"] = json!(started.elapsed().as_millis() as u64);
        emit(v);
        if !disconnected || interrupted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    emit(json!({"event": "flood_done", "phase": phase, "rounds": round, "blocked": blocked}));
}

#[derive(Clone, Debug, Default)]
struct ConnState {
    connected: bool,
    established: u64,
    closed: u64,
    last_close: Option<String>,
    dial_failures: u64,
    dial_error: Option<String>,
    subscribed: [bool; 2],
}

enum Cmd {
    Dial,
    Publish {
        topic: Topic,
        data: Vec<u8>,
        reply: Option<oneshot::Sender<Result<(), String>>>,
    },
}

/// A swarm of the network's kind, driven in its own task, with one target node.
#[derive(Clone)]
struct Rogue {
    id: PeerId,
    target: PeerId,
    cmd: mpsc::Sender<Cmd>,
    state: watch::Receiver<ConnState>,
    control: libp2p_stream::Control,
    /// Messages gossipsub took (or refused) among those queued without waiting.
    gossip_ok: Arc<AtomicU64>,
    gossip_err: Arc<AtomicU64>,
}

fn topic_index(t: Topic) -> usize {
    match t {
        Topic::Membership => 0,
        Topic::Namespace => 1,
        Topic::Ledger => 2,
    }
}

impl Rogue {
    fn start(
        keypair: libp2p::identity::Keypair,
        key: &NetworkKey,
        target_addr: &Multiaddr,
        target: PeerId,
    ) -> Result<Self, String> {
        let admission = Arc::new(p2pfs::net::admit::KeyOnlyAdmission);
        Self::start_admitting(keypair, key, target_addr, target, admission)
    }

    /// [`Rogue::start`] showing the hellos of `admission` in the admission handshake.
    fn start_admitting(
        keypair: libp2p::identity::Keypair,
        key: &NetworkKey,
        target_addr: &Multiaddr,
        target: PeerId,
        admission: Arc<dyn p2pfs::net::admit::Admission>,
    ) -> Result<Self, String> {
        let id = keypair.public().to_peer_id();
        // The node's own swarm; the rogue's guard blocks nobody.
        let mut swarm = p2pfs::net::build_swarm(keypair, key, false, PeerGuard::new(), admission)
            .map_err(|e| e.to_string())?;
        for t in [Topic::Membership, Topic::Namespace] {
            swarm
                .behaviour_mut()
                .gossipsub
                .subscribe(&p2pfs::net::topic(key, t))
                .map_err(|e| e.to_string())?;
        }
        let control = swarm.behaviour().stream.new_control();
        let (cmd_tx, cmd_rx) = mpsc::channel(4096);
        let (state_tx, state_rx) = watch::channel(ConnState::default());
        let gossip_ok = Arc::new(AtomicU64::new(0));
        let gossip_err = Arc::new(AtomicU64::new(0));
        tokio::spawn(drive(
            swarm,
            cmd_rx,
            state_tx,
            target,
            target_addr.clone(),
            key.clone(),
            (gossip_ok.clone(), gossip_err.clone()),
        ));
        Ok(Self {
            id,
            target,
            cmd: cmd_tx,
            state: state_rx,
            control,
            gossip_ok,
            gossip_err,
        })
    }

    async fn open(&self, protocol: StreamProtocol) -> Result<Stream, String> {
        self.open_within(protocol, Duration::from_secs(5)).await
    }

    async fn open_within(
        &self,
        protocol: StreamProtocol,
        limit: Duration,
    ) -> Result<Stream, String> {
        let mut control = self.control.clone();
        tokio::time::timeout(limit, control.open_stream(self.target, protocol))
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| e.to_string())
    }

    /// Dials the target and checks that it serves us (an empty `Have`). Emits `connect`.
    async fn connect(&self, phase: &str, round: u32) -> bool {
        let before = self.state.borrow().clone();
        let mut result: Result<(), String> = Ok(());
        if !before.connected {
            let _ = self.cmd.send(Cmd::Dial).await;
            let mut rx = self.state.clone();
            let waited = tokio::time::timeout(
                Duration::from_secs(10),
                rx.wait_for(|s| {
                    s.established > before.established || s.dial_failures > before.dial_failures
                }),
            )
            .await;
            let now = self.state.borrow().clone();
            if waited.is_err() {
                result = Err("no connection within 10 s".into());
            } else if now.established == before.established {
                result = Err(now.dial_error.unwrap_or_else(|| "dial failed".into()));
            }
        }
        if result.is_ok() {
            result = self.probe().await;
        }
        let state = self.state.borrow().clone();
        emit(
            json!({"event": "connect", "phase": phase, "round": round, "ok": result.is_ok(),
            "error": result.as_ref().err(), "connected": state.connected,
            "last_close": state.last_close}),
        );
        result.is_ok()
    }

    async fn probe(&self) -> Result<(), String> {
        let mut s = self.open(CHUNK).await?;
        let exchange = async {
            write_frame_with_body(
                &mut s,
                &ChunkRequest::Have { ids: Vec::new() },
                &[],
                MAX_BODY,
            )
            .await
            .map_err(|e| e.to_string())?;
            read_frame_with_body::<_, ChunkResponse>(&mut s, MAX_BODY)
                .await
                .map_err(|e| e.to_string())
        };
        let r = match tokio::time::timeout(Duration::from_secs(5), exchange).await {
            Err(_) => Err("probe: no answer".to_string()),
            Ok(Err(e)) => Err(format!("probe: {e}")),
            Ok(Ok(Some((ChunkResponse::Have(_), _)))) => Ok(()),
            Ok(Ok(other)) => Err(format!("probe: unexpected answer {other:?}")),
        };
        let _ = s.close().await;
        r
    }

    /// Waits up to `limit` for the node to drop the connection; whether it did.
    async fn wait_disconnected(&self, limit: Duration) -> bool {
        let mut rx = self.state.clone();
        tokio::time::timeout(limit, rx.wait_for(|s| !s.connected))
            .await
            .is_ok()
    }

    /// Emits `disconnected` (with how long the node took) or `still_connected`.
    async fn report_disconnect(&self, phase: &str, round: u32, limit: Duration) {
        let t0 = Instant::now();
        if self.wait_disconnected(limit).await {
            let state = self.state.borrow().clone();
            emit(
                json!({"event": "disconnected", "phase": phase, "round": round,
                "after_ms": t0.elapsed().as_millis() as u64, "cause": state.last_close}),
            );
        } else {
            emit(
                json!({"event": "still_connected", "phase": phase, "round": round,
                "waited_ms": t0.elapsed().as_millis() as u64}),
            );
        }
    }

    /// Waits (up to 5 s) until the node has told us it subscribes to `topic`.
    async fn wait_subscribed(&self, topic: Topic) -> bool {
        let mut rx = self.state.clone();
        tokio::time::timeout(
            Duration::from_secs(5),
            rx.wait_for(|s| s.subscribed[topic_index(topic)]),
        )
        .await
        .is_ok()
    }

    async fn publish(&self, topic: Topic, data: Vec<u8>) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::Publish {
                topic,
                data,
                reply: Some(tx),
            })
            .await
            .map_err(|_| "swarm gone".to_string())?;
        rx.await.map_err(|_| "swarm gone".to_string())?
    }

    /// Queues a message (waiting while the queue is full); false if the swarm is gone.
    async fn publish_nowait(&self, topic: Topic, data: Vec<u8>) -> bool {
        self.cmd
            .send(Cmd::Publish {
                topic,
                data,
                reply: None,
            })
            .await
            .is_ok()
    }
}

async fn drive(
    mut swarm: libp2p::Swarm<Behaviour>,
    mut cmds: mpsc::Receiver<Cmd>,
    state: watch::Sender<ConnState>,
    target: PeerId,
    target_addr: Multiaddr,
    key: NetworkKey,
    (gossip_ok, gossip_err): (Arc<AtomicU64>, Arc<AtomicU64>),
) {
    let topics = [
        p2pfs::net::topic(&key, Topic::Membership).hash(),
        p2pfs::net::topic(&key, Topic::Namespace).hash(),
    ];
    loop {
        tokio::select! {
            event = swarm.select_next_some() => match event {
                SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == target => {
                    state.send_modify(|s| {
                        s.connected = true;
                        s.established += 1;
                    });
                }
                SwarmEvent::ConnectionClosed { peer_id, num_established: 0, cause, .. }
                    if peer_id == target =>
                {
                    state.send_modify(|s| {
                        s.connected = false;
                        s.closed += 1;
                        s.subscribed = [false; 2];
                        s.last_close = Some(match cause {
                            Some(c) => c.to_string(),
                            None => "closed by the node".into(),
                        });
                    });
                }
                SwarmEvent::OutgoingConnectionError { error, .. } => {
                    state.send_modify(|s| {
                        s.dial_failures += 1;
                        s.dial_error = Some(error.to_string());
                    });
                }
                SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Subscribed {
                    peer_id,
                    topic,
                })) if peer_id == target => {
                    if let Some(i) = topics.iter().position(|t| *t == topic) {
                        state.send_modify(|s| s.subscribed[i] = true);
                    }
                }
                _ => {}
            },
            cmd = cmds.recv() => match cmd {
                None => return,
                Some(Cmd::Dial) => {
                    if let Err(e) = swarm.dial(target_addr.clone()) {
                        state.send_modify(|s| {
                            s.dial_failures += 1;
                            s.dial_error = Some(e.to_string());
                        });
                    }
                }
                Some(Cmd::Publish { topic, data, reply }) => {
                    let r = swarm
                        .behaviour_mut()
                        .gossipsub
                        .publish(p2pfs::net::topic(&key, topic), data)
                        .map(|_| ())
                        .map_err(|e| e.to_string());
                    match reply {
                        Some(reply) => {
                            let _ = reply.send(r);
                        }
                        None if r.is_ok() => {
                            gossip_ok.fetch_add(1, Ordering::Relaxed);
                        }
                        None => {
                            gossip_err.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            },
        }
    }
}
