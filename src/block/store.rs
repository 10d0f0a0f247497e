//! Chunks on this node's disk: one file per chunk under a two-level fan-out
//! (`chunks/ab/cd/abcd…`), written to a temp file and renamed into place, so a chunk visible
//! under its name was written whole. Every read re-hashes the bytes.
//!
//! Durability: by default a copy counts as stored once it is in the kernel's page cache (it
//! survives the process; the kernel writes it back within seconds), and [`ChunkStore::sync`]
//! (a user's `fsync()`, through every owner) flushes the store to disk. With `sync_each` every
//! copy is fdatasync'd before its rename. A copy cut short by a power failure fails its hash
//! check on the next read or scrub, is deleted and is repaired from the other replicas.

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::ChunkId;
use super::chunk::{self, ChunkCodecError};
use crate::util::fsutil::create_private_dir;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("chunk {0} is not stored on this node")]
    Missing(ChunkId),
    #[error("chunk {0} is corrupt on disk (hash mismatch); the copy was deleted")]
    Corrupt(ChunkId),
    #[error("chunk store I/O: {0}")]
    Io(#[from] io::Error),
}

impl StoreError {
    /// True when the failure is the disk being full.
    pub fn is_no_space(&self) -> bool {
        matches!(self, StoreError::Io(e) if e.raw_os_error() == Some(libc::ENOSPC) || e.raw_os_error() == Some(libc::EDQUOT))
    }
}

pub struct ChunkStore {
    root: PathBuf,
    tmp: PathBuf,
    tmp_seq: AtomicU64,
    /// fdatasync every copy before it gets its name (`storage.sync_chunks`).
    sync_each: bool,
}

impl ChunkStore {
    /// Opens (creating if needed) the store under `root`, removing temp files a crash left.
    pub fn open(root: &Path) -> io::Result<Self> {
        let tmp = root.join("tmp");
        create_private_dir(&tmp)?;
        for entry in fs::read_dir(&tmp)? {
            let _ = fs::remove_file(entry?.path());
        }
        Ok(Self {
            root: root.to_path_buf(),
            tmp,
            tmp_seq: AtomicU64::new(0),
            sync_each: false,
        })
    }

    /// Flush every copy to disk before it counts as stored (slower; see the module doc).
    pub fn with_sync_each(mut self, sync_each: bool) -> Self {
        self.sync_each = sync_each;
        self
    }

    /// Flushes every chunk written so far to disk (syncfs of the store's filesystem).
    pub fn sync(&self) -> Result<(), StoreError> {
        let dir = File::open(&self.root)?;
        // SAFETY: a valid open file descriptor.
        if unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir)) } != 0 {
            return Err(StoreError::Io(io::Error::last_os_error()));
        }
        Ok(())
    }

    fn path_of(&self, id: &ChunkId) -> PathBuf {
        let hex = id.to_hex();
        self.root.join(&hex[0..2]).join(&hex[2..4]).join(hex)
    }

    /// Stores a chunk whose ciphertext the caller has produced or verified. Returns false
    /// when a whole copy was already there (content addressing makes a second write moot).
    pub fn put(&self, id: &ChunkId, ciphertext: &[u8]) -> Result<bool, StoreError> {
        let path = self.path_of(id);
        // A present file of the right size was written whole (one cut short by a power
        // failure is caught by the hash check of the next read or scrub).
        if let Ok(meta) = fs::metadata(&path)
            && meta.len() == ciphertext.len() as u64
        {
            // Written again (the same content in a new file): garbage collection counts its
            // grace period from now, so a chunk that was about to be collected as unreferenced
            // survives until the new entry that references it has spread.
            if let Ok(f) = File::open(&path) {
                let _ = f.set_modified(std::time::SystemTime::now());
            }
            return Ok(false);
        }
        let seq = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        let tmp = self.tmp.join(format!("{}.{seq}", id.to_hex()));
        let result = (|| -> io::Result<()> {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(ciphertext)?;
            if self.sync_each {
                file.sync_data()?;
            }
            drop(file);
            match fs::rename(&tmp, &path) {
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    create_private_dir(path.parent().expect("fan-out dir"))?;
                    fs::rename(&tmp, &path)
                }
                other => other,
            }
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result?;
        Ok(true)
    }

    /// Reads and verifies a chunk. A copy whose hash fails is deleted (so it is fetched
    /// again, not served) and reported as corrupt.
    pub fn get(&self, id: &ChunkId) -> Result<Vec<u8>, StoreError> {
        let path = self.path_of(id);
        let mut bytes = Vec::new();
        match File::open(&path) {
            Ok(mut f) => {
                f.read_to_end(&mut bytes)?;
            }
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(StoreError::Missing(*id)),
            Err(e) => return Err(e.into()),
        }
        match chunk::verify(id, &bytes) {
            Ok(()) => Ok(bytes),
            Err(ChunkCodecError::HashMismatch(_)) | Err(_) => {
                tracing::error!(chunk = %id, path = %path.display(), "stored chunk fails its hash; deleting the bad copy");
                let _ = fs::remove_file(&path);
                Err(StoreError::Corrupt(*id))
            }
        }
    }

    pub fn contains(&self, id: &ChunkId) -> bool {
        self.path_of(id).exists()
    }

    pub fn delete(&self, id: &ChunkId) -> io::Result<()> {
        match fs::remove_file(self.path_of(id)) {
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// The chunk's size on disk, if it is stored (not read, not verified).
    pub fn size_of(&self, id: &ChunkId) -> Option<u64> {
        fs::metadata(self.path_of(id)).map(|m| m.len()).ok()
    }

    /// When the chunk was last written (or written again), if it is stored.
    pub fn modified(&self, id: &ChunkId) -> Option<std::time::SystemTime> {
        fs::metadata(self.path_of(id))
            .and_then(|m| m.modified())
            .ok()
    }

    /// How many bytes the store's filesystem is short of having `percent` of its size free
    /// (for unprivileged writers); 0 when it has that much.
    pub fn space_short_by(&self, percent: u8) -> u64 {
        use std::os::unix::ffi::OsStrExt;
        let Ok(path) = std::ffi::CString::new(self.root.as_os_str().as_bytes()) else {
            return 0;
        };
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: a NUL-terminated path and a valid out-pointer.
        if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
            return 0;
        }
        let frsize = st.f_frsize as u64;
        let wanted = (st.f_blocks as u128 * u128::from(percent.min(100)) / 100) as u64;
        wanted.saturating_sub(st.f_bavail as u64) * frsize
    }

    /// Free bytes for unprivileged writers on the store's filesystem.
    pub fn free_bytes(&self) -> u64 {
        use std::os::unix::ffi::OsStrExt;
        let Ok(path) = std::ffi::CString::new(self.root.as_os_str().as_bytes()) else {
            return 0;
        };
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: a NUL-terminated path and a valid out-pointer.
        if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
            return 0;
        }
        st.f_bavail as u64 * st.f_frsize as u64
    }

    /// Every chunk id stored, with its size on disk.
    pub fn list(&self) -> io::Result<Vec<(ChunkId, u64)>> {
        let mut out = Vec::new();
        for l1 in fs::read_dir(&self.root)? {
            let l1 = l1?;
            if l1.file_name().len() != 2 || !l1.file_type()?.is_dir() {
                continue;
            }
            for l2 in fs::read_dir(l1.path())? {
                for f in fs::read_dir(l2?.path())? {
                    let f = f?;
                    if let Some(id) = f.file_name().to_str().and_then(ChunkId::from_hex) {
                        out.push((id, f.metadata()?.len()));
                    }
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::ChunkSecret;

    #[test]
    fn put_get_and_corruption_is_detected_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkStore::open(dir.path()).unwrap();
        let (r, ct) = ChunkSecret([9; 32]).seal(b"some plaintext");
        assert!(store.put(&r.id, &ct).unwrap());
        assert!(!store.put(&r.id, &ct).unwrap());
        assert_eq!(store.get(&r.id).unwrap(), ct);
        assert_eq!(store.list().unwrap(), vec![(r.id, ct.len() as u64)]);

        let path = store.path_of(&r.id);
        let mut bytes = fs::read(&path).unwrap();
        bytes[5] ^= 0x40;
        fs::write(&path, bytes).unwrap();
        assert!(matches!(store.get(&r.id), Err(StoreError::Corrupt(id)) if id == r.id));
        assert!(matches!(store.get(&r.id), Err(StoreError::Missing(_))));
        // Writing it again heals it.
        assert!(store.put(&r.id, &ct).unwrap());
        assert_eq!(store.get(&r.id).unwrap(), ct);
    }

    #[test]
    fn leftover_temp_files_are_cleaned_on_open() {
        let dir = tempfile::tempdir().unwrap();
        drop(ChunkStore::open(dir.path()).unwrap());
        fs::write(dir.path().join("tmp/abc.1"), b"partial").unwrap();
        ChunkStore::open(dir.path()).unwrap();
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }
}
