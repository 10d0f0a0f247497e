//! Pins: paths this node keeps whole in its own chunk store, to read them without the
//! network (`p2pfs-ctl pin PATH`). A pin is this node's choice, kept in `pins.json` in the data
//! dir; other nodes neither see nor follow it.
//!
//! The pin worker keeps every chunk of the current version of every file under each pinned
//! path (files created there later included) in this node's store: it lists them from the
//! mount, fetches what is missing from the peers (verified against its id, as every fetch is)
//! and stores it. It runs when entries are committed here or arrive from peers, when a pin is
//! added, and every [`PIN_PASS_EVERY`]. Repair never drops a pinned chunk as a surplus copy
//! ([`Repair::set_kept`]); garbage collection deletes only chunks no entry references, which a
//! pinned file's current chunks never are. A reader node (`--no-storage`) has a chunk store
//! too: it owns nothing by placement, but keeps what it pins.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::block::{ChunkId, ChunkStore};
use crate::cluster::ChunkRouter;
use crate::cluster::repair::Repair;
use crate::fs::Mount;

/// The pins file in the data dir.
pub const PINS_FILE: &str = "pins.json";

/// Time between pin passes when nothing wakes the worker.
pub const PIN_PASS_EVERY: Duration = Duration::from_secs(60);

/// Chunk fetches a pin pass keeps in flight.
const FETCHES_IN_FLIGHT: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a pins file: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0}: {1}")]
    Path(String, crate::fs::FsError),
    #[error("{0} is not pinned")]
    NotPinned(String),
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct PinsFile {
    pins: Vec<String>,
}

/// One pin as the last pass found it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinState {
    /// Relative to the mount's root.
    pub path: String,
    /// Files under it.
    pub files: u64,
    /// Bytes of their current versions (each chunk once, holes left out).
    pub bytes: u64,
    /// Of those, bytes whose chunks are in this node's store.
    pub held_bytes: u64,
    pub chunks: u64,
    pub held_chunks: u64,
    /// Whether a pass has looked at it since it was pinned.
    pub checked: bool,
    /// Why the last pass could not list it (the path does not exist here, yet or any more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl PinState {
    /// Every chunk is here.
    pub fn complete(&self) -> bool {
        self.checked && self.error.is_none() && self.held_chunks == self.chunks
    }
}

/// How `p2pfs-ctl pins` shows a pin's state: `3.2 GiB, complete`, `1.1 of 3.2 GiB, syncing`,
/// `not checked yet`, or why it cannot be listed.
pub fn describe(pin: &PinState) -> String {
    if let Some(e) = &pin.error {
        return format!("not available here: {e}");
    }
    if !pin.checked {
        return "not checked yet".into();
    }
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut unit = 0;
    while pin.bytes >= 1024u64.pow(unit as u32 + 1) && unit < UNITS.len() - 1 {
        unit += 1;
    }
    let scaled = |n: u64| {
        if unit == 0 {
            n.to_string()
        } else {
            format!("{:.1}", n as f64 / 1024f64.powi(unit as i32))
        }
    };
    let files = if pin.files == 1 { "file" } else { "files" };
    if pin.complete() {
        format!(
            "{} {}, complete ({} {files})",
            scaled(pin.bytes),
            UNITS[unit],
            pin.files
        )
    } else {
        format!(
            "{} of {} {}, syncing ({} {files})",
            scaled(pin.held_bytes),
            scaled(pin.bytes),
            UNITS[unit],
            pin.files
        )
    }
}

/// A path as pins keep it: relative to the mount's root, `/`-separated, no empty or `.`
/// components (the root is `""`).
pub fn normalize(path: &str) -> Result<String, PinError> {
    let mut parts = Vec::new();
    for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
        if part == ".." {
            return Err(PinError::Path(path.into(), crate::fs::FsError::Invalid));
        }
        parts.push(part);
    }
    Ok(parts.join("/"))
}

/// Whether `path` is `pin` or below it.
fn under(path: &str, pin: &str) -> bool {
    pin.is_empty()
        || path == pin
        || (path.starts_with(pin) && path.as_bytes().get(pin.len()) == Some(&b'/'))
}

/// This node's pins and their worker.
pub struct Pins {
    file: PathBuf,
    paths: Mutex<Vec<String>>,
    states: Mutex<BTreeMap<String, PinState>>,
    wake: Arc<Notify>,
    mount: Arc<Mount>,
    store: Arc<ChunkStore>,
    router: Arc<ChunkRouter>,
    repair: Arc<Repair>,
    passes: std::sync::atomic::AtomicU64,
    /// Pinned chunks the last pass found (or put) in the store: a pass woken by a commit
    /// checks only the others; the periodic pass checks every one again.
    held: Mutex<Arc<HashSet<ChunkId>>>,
}

impl Pins {
    /// Reads the pins of the node in `data_dir`. `wake` is notified by whatever commits
    /// entries (the node's local commits); entries from peers wake it through the mount.
    pub fn open(
        data_dir: &std::path::Path,
        wake: Arc<Notify>,
        mount: Arc<Mount>,
        store: Arc<ChunkStore>,
        router: Arc<ChunkRouter>,
        repair: Arc<Repair>,
    ) -> Result<Arc<Self>, PinError> {
        let file = data_dir.join(PINS_FILE);
        let paths = match std::fs::read(&file) {
            Ok(bytes) => {
                serde_json::from_slice::<PinsFile>(&bytes)
                    .map_err(|e| PinError::Parse {
                        path: file.clone(),
                        message: e.to_string(),
                    })?
                    .pins
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => return Err(PinError::Io { path: file, source }),
        };
        Ok(Arc::new(Self {
            file,
            paths: Mutex::new(paths),
            states: Mutex::new(BTreeMap::new()),
            wake,
            mount,
            store,
            router,
            repair,
            passes: Default::default(),
            held: Default::default(),
        }))
    }

    fn save(&self, paths: &[String]) -> Result<(), PinError> {
        let bytes = serde_json::to_vec_pretty(&PinsFile {
            pins: paths.to_vec(),
        })
        .expect("pins serialize");
        crate::util::fsutil::write_atomic(&self.file, &bytes, 0o600).map_err(|source| {
            PinError::Io {
                path: self.file.clone(),
                source,
            }
        })
    }

    /// Pins `path` (relative to the mount's root); it must exist here now. Returns the
    /// normalized path. Pinning a path again is no change.
    pub fn pin(&self, path: &str) -> Result<String, PinError> {
        let path = normalize(path)?;
        self.mount
            .resolve(&path)
            .map_err(|e| PinError::Path(path.clone(), e))?;
        let mut paths = self.paths.lock();
        if !paths.contains(&path) {
            let mut next = paths.clone();
            next.push(path.clone());
            next.sort();
            self.save(&next)?;
            *paths = next;
        }
        drop(paths);
        self.wake.notify_one();
        Ok(path)
    }

    /// Unpins `path`: its chunks become ordinary copies again (repair drops those this node
    /// does not own once their owners hold them).
    pub fn unpin(&self, path: &str) -> Result<String, PinError> {
        let path = normalize(path)?;
        let mut paths = self.paths.lock();
        if !paths.contains(&path) {
            return Err(PinError::NotPinned(path));
        }
        let next: Vec<String> = paths.iter().filter(|p| **p != path).cloned().collect();
        self.save(&next)?;
        *paths = next;
        drop(paths);
        self.states.lock().remove(&path);
        self.wake.notify_one();
        Ok(path)
    }

    /// Every pin with its state at the last pass (unchecked ones not yet looked at).
    pub fn list(&self) -> Vec<PinState> {
        let states = self.states.lock();
        self.paths
            .lock()
            .iter()
            .map(|p| {
                states.get(p).cloned().unwrap_or_else(|| PinState {
                    path: p.clone(),
                    ..Default::default()
                })
            })
            .collect()
    }

    /// Whether `path` is pinned, itself or through a directory above it.
    pub fn covers(&self, path: &str) -> bool {
        let path = normalize(path).unwrap_or_default();
        self.paths.lock().iter().any(|p| under(&path, p))
    }

    /// The chunks of every pinned file as the mount holds them now (blocking): what repair
    /// must keep from the start, before the worker's first pass.
    pub fn chunks_now(&self) -> HashSet<ChunkId> {
        let paths = self.paths.lock().clone();
        paths
            .iter()
            .filter_map(|p| self.mount.files_under(p).ok())
            .flatten()
            .flat_map(|f| f.chunks.into_iter().map(|(id, _)| id))
            .collect()
    }

    /// Pin passes completed since start.
    pub fn passes(&self) -> u64 {
        self.passes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The pin worker: a full pass now, then a pass whenever woken (after a second, so a burst
    /// of commits makes one pass), and a full one every [`PIN_PASS_EVERY`]. Runs until its
    /// task is cancelled.
    pub async fn run(self: Arc<Self>) {
        let applied = self.mount.entries_applied();
        let mut full = true;
        loop {
            self.pass(full).await;
            full = tokio::select! {
                _ = tokio::time::sleep(PIN_PASS_EVERY) => true,
                _ = self.wake.notified() => false,
                _ = applied.notified() => false,
            };
            if !full {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    /// One pass: lists every pinned file, tells repair to keep their chunks, fetches the
    /// missing ones, and records each pin's state. A `full` pass looks in the store for every
    /// pinned chunk; another trusts what the last pass found there.
    pub async fn pass(&self, full: bool) {
        let paths = self.paths.lock().clone();
        let mount = self.mount.clone();
        let store = self.store.clone();
        let known = if full {
            Arc::default()
        } else {
            self.held.lock().clone()
        };
        // Listing and checking the store are blocking work.
        let listed = tokio::task::spawn_blocking(move || {
            paths
                .into_iter()
                .map(|path| {
                    let files = mount.files_under(&path);
                    let files = files.map(|files| {
                        let mut chunks: HashMap<ChunkId, u64> = HashMap::new();
                        for f in &files {
                            chunks.extend(f.chunks.iter().copied());
                        }
                        let held: HashSet<ChunkId> = chunks
                            .keys()
                            .filter(|id| known.contains(id) || store.contains(id))
                            .copied()
                            .collect();
                        (files.len() as u64, chunks, held)
                    });
                    (path, files)
                })
                .collect::<Vec<_>>()
        })
        .await;
        let Ok(listed) = listed else {
            return;
        };
        let mut kept = HashSet::new();
        let mut missing: HashSet<ChunkId> = HashSet::new();
        for (_, files) in &listed {
            if let Ok((_, chunks, held)) = files {
                kept.extend(chunks.keys().copied());
                missing.extend(chunks.keys().filter(|id| !held.contains(id)));
            }
        }
        self.repair.set_kept(kept);
        let fetched = self.fetch_all(missing).await;
        let mut now_held: HashSet<ChunkId> = fetched.clone();
        let mut states = BTreeMap::new();
        for (path, files) in listed {
            let state = match files {
                Ok((files, chunks, held)) => {
                    now_held.extend(held.iter().copied());
                    let is_held = |id: &ChunkId| held.contains(id) || fetched.contains(id);
                    PinState {
                        path: path.clone(),
                        files,
                        bytes: chunks.values().sum(),
                        held_bytes: chunks
                            .iter()
                            .filter(|(id, _)| is_held(id))
                            .map(|(_, b)| b)
                            .sum(),
                        chunks: chunks.len() as u64,
                        held_chunks: chunks.keys().filter(|id| is_held(id)).count() as u64,
                        checked: true,
                        error: None,
                    }
                }
                Err(e) => PinState {
                    path: path.clone(),
                    checked: true,
                    error: Some(e.to_string()),
                    ..Default::default()
                },
            };
            states.insert(path, state);
        }
        // A pin removed meanwhile is not brought back.
        let paths = self.paths.lock().clone();
        states.retain(|p, _| paths.contains(p));
        *self.states.lock() = states;
        *self.held.lock() = Arc::new(now_held);
        self.passes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Fetches `ids` from the peers and stores them here; returns those now stored.
    async fn fetch_all(&self, ids: HashSet<ChunkId>) -> HashSet<ChunkId> {
        use libp2p::futures::StreamExt;
        if ids.is_empty() {
            return HashSet::new();
        }
        let results: Vec<Option<ChunkId>> = libp2p::futures::stream::iter(ids)
            .map(|id| async move {
                let data = match self.router.fetch_async(&id).await {
                    Ok(data) => data,
                    Err(e) => {
                        tracing::debug!(chunk = %id, error = %e, "pinned chunk not fetched");
                        return None;
                    }
                };
                let store = self.store.clone();
                match tokio::task::spawn_blocking(move || store.put(&id, &data)).await {
                    Ok(Ok(_)) => Some(id),
                    Ok(Err(e)) => {
                        tracing::warn!(chunk = %id, error = %e, "cannot store a pinned chunk");
                        None
                    }
                    Err(_) => None,
                }
            })
            .buffer_unordered(FETCHES_IN_FLIGHT)
            .collect()
            .await;
        results.into_iter().flatten().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_paths_are_normalized_and_cover_what_is_below_them() {
        assert_eq!(normalize("/docs//reports/./").unwrap(), "docs/reports");
        assert_eq!(normalize("/").unwrap(), "");
        assert!(normalize("docs/../etc").is_err());
        assert!(under("docs/reports/a.txt", "docs/reports"));
        assert!(under("docs/reports", "docs/reports"));
        assert!(!under("docs/reports2/a.txt", "docs/reports"));
        assert!(!under("docs", "docs/reports"));
        assert!(under("anything", ""));
    }

    #[test]
    fn a_pin_shows_its_size_and_whether_every_chunk_is_here() {
        let gib = 1u64 << 30;
        let mut pin = PinState {
            path: "docs".into(),
            files: 12,
            bytes: gib * 32 / 10,
            held_bytes: gib * 11 / 10,
            chunks: 10,
            held_chunks: 3,
            checked: true,
            error: None,
        };
        assert_eq!(describe(&pin), "1.1 of 3.2 GiB, syncing (12 files)");
        pin.held_bytes = pin.bytes;
        pin.held_chunks = pin.chunks;
        assert_eq!(describe(&pin), "3.2 GiB, complete (12 files)");
        let small = PinState {
            files: 1,
            bytes: 700,
            held_bytes: 700,
            chunks: 1,
            held_chunks: 1,
            checked: true,
            ..pin.clone()
        };
        assert_eq!(describe(&small), "700 B, complete (1 file)");
        assert_eq!(
            describe(&PinState {
                checked: false,
                ..pin.clone()
            }),
            "not checked yet"
        );
    }
}
