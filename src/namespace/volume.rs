//! Volumes: what is mounted. A volume has a random 32-byte key from which its payload key (for
//! entry payloads) and chunk secret (for convergent chunk keys) are derived; the key is kept
//! only wrapped with age to each member's recipient.

use std::fs;
use std::path::{Path, PathBuf};

use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{EntryId, UserId, VolumeId};
use crate::block::ChunkSecret;
use crate::identity::UserIdentity;
use crate::util::fsutil::{create_private_dir, write_new};

pub const VOLUMES_DIR: &str = "volumes";

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("no volume found in {0}")]
    None(PathBuf),
}

pub struct Volume {
    pub id: VolumeId,
    pub owner: UserId,
    pub writers: Vec<UserId>,
    /// Anyone who can sign may write (the network volume: admission is the network key).
    pub open: bool,
    pub payload_key: Zeroizing<[u8; 32]>,
    pub chunk_secret: ChunkSecret,
    key: Zeroizing<[u8; 32]>,
}

/// On-disk form: the key wrapped with age to the owner's recipient.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VolumeFile {
    id: String,
    owner: String,
    writers: Vec<String>,
    wrapped_key: String,
}

impl Volume {
    fn from_key(
        id: VolumeId,
        owner: UserId,
        writers: Vec<UserId>,
        key: Zeroizing<[u8; 32]>,
    ) -> Self {
        let payload_key =
            Zeroizing::new(blake3::derive_key("p2pfs volume payload key v1", &key[..]));
        let chunk_secret =
            ChunkSecret(blake3::derive_key("p2pfs volume chunk secret v1", &key[..]));
        Self {
            id,
            owner,
            writers,
            open: false,
            payload_key,
            chunk_secret,
            key,
        }
    }

    /// The personal volume of `owner`: id and key derived from the user's secret signing key,
    /// so every machine that holds the same (exported, imported) user identity has the same
    /// personal volume, and nobody else can derive it.
    pub fn personal(owner: &UserIdentity) -> Self {
        let secret = Zeroizing::new(owner.signing.to_bytes());
        let id = blake3::derive_key("p2pfs personal volume id v1", &secret[..]);
        let key = Zeroizing::new(blake3::derive_key(
            "p2pfs personal volume key v1",
            &secret[..],
        ));
        Self::from_key(
            VolumeId(id[..16].try_into().expect("16 bytes")),
            owner.user_id(),
            vec![owner.user_id()],
            key,
        )
    }

    /// A new volume with a random key, owned (and writable only) by `owner`.
    pub fn create(owner: &UserIdentity) -> Self {
        let mut id = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut id);
        let mut key = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(&mut key[..]);
        Self::from_key(VolumeId(id), owner.user_id(), vec![owner.user_id()], key)
    }

    /// The volume every member of a network mounts: its id and key are derived from the
    /// network key, so every holder of that key reads and writes it, and nobody else can.
    pub fn for_network(network_key: &crate::identity::NetworkKey) -> Self {
        let id = blake3::derive_key("p2pfs network volume id v1", &network_key.0);
        let key = Zeroizing::new(blake3::derive_key(
            "p2pfs network volume key v1",
            &network_key.0,
        ));
        let mut volume = Self::from_key(
            VolumeId(id[..16].try_into().expect("16 bytes")),
            UserId([0; 32]),
            Vec::new(),
            key,
        );
        volume.open = true;
        volume
    }

    /// The id of the volume's root directory entry, derived so every member agrees on it.
    pub fn root_id(&self) -> EntryId {
        let h = blake3::derive_key("p2pfs volume root v1", &self.id.0);
        EntryId(h[..16].try_into().expect("16 bytes"))
    }

    pub fn can_write(&self, user: &UserId) -> bool {
        self.open || self.writers.contains(user)
    }

    pub fn save_new(&self, data_dir: &Path, owner: &UserIdentity) -> Result<(), VolumeError> {
        let dir = data_dir.join(VOLUMES_DIR);
        let io = |source| VolumeError::Io {
            path: dir.clone(),
            source,
        };
        create_private_dir(&dir).map_err(io)?;
        let wrapped =
            age::encrypt(&owner.recipient(), &self.key[..]).map_err(|e| VolumeError::Invalid {
                path: dir.clone(),
                message: e.to_string(),
            })?;
        let file = VolumeFile {
            id: self.id.to_string(),
            owner: self.owner.to_string(),
            writers: self.writers.iter().map(|w| w.to_string()).collect(),
            wrapped_key: hex::encode(wrapped),
        };
        let path = dir.join(format!("{}.toml", self.id));
        write_new(
            &path,
            toml::to_string(&file).expect("serializes").as_bytes(),
            0o600,
        )
        .map_err(|source| VolumeError::Io {
            path: path.clone(),
            source,
        })
    }

    pub fn load(path: &Path, user: &UserIdentity) -> Result<Self, VolumeError> {
        let invalid = |message: String| VolumeError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let text = fs::read_to_string(path).map_err(|source| VolumeError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let file: VolumeFile = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        let id = VolumeId(decode_hex(&file.id).ok_or_else(|| invalid("bad volume id".into()))?);
        let owner = UserId(decode_hex(&file.owner).ok_or_else(|| invalid("bad owner".into()))?);
        let writers = file
            .writers
            .iter()
            .map(|w| decode_hex(w).map(UserId))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| invalid("bad writer".into()))?;
        let wrapped =
            hex::decode(&file.wrapped_key).map_err(|_| invalid("bad wrapped key".into()))?;
        let key = Zeroizing::new(
            age::decrypt(&user.age, &wrapped)
                .map_err(|e| invalid(format!("cannot unwrap the volume key: {e}")))?,
        );
        let key: [u8; 32] = key[..]
            .try_into()
            .map_err(|_| invalid("volume key is not 32 bytes".into()))?;
        Ok(Self::from_key(id, owner, writers, Zeroizing::new(key)))
    }

    /// The user's personal volume in the data dir.
    pub fn load_personal(data_dir: &Path, user: &UserIdentity) -> Result<Self, VolumeError> {
        let dir = data_dir.join(VOLUMES_DIR);
        let entries = fs::read_dir(&dir).map_err(|source| VolumeError::Io {
            path: dir.clone(),
            source,
        })?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "toml") {
                let volume = Self::load(&path, user)?;
                if volume.owner == user.user_id() {
                    return Ok(volume);
                }
            }
        }
        Err(VolumeError::None(dir))
    }
}

fn decode_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_volume_reloads_with_same_keys_only_for_its_owner() {
        let dir = tempfile::tempdir().unwrap();
        let user = UserIdentity::generate();
        let v = Volume::create(&user);
        v.save_new(dir.path(), &user).unwrap();
        let back = Volume::load_personal(dir.path(), &user).unwrap();
        assert_eq!(back.id, v.id);
        assert_eq!(*back.payload_key, *v.payload_key);
        assert_eq!(back.chunk_secret.0, v.chunk_secret.0);
        assert_eq!(back.root_id(), v.root_id());
        assert!(back.can_write(&user.user_id()));
        let stranger = UserIdentity::generate();
        assert!(Volume::load_personal(dir.path(), &stranger).is_err());
        assert!(!back.can_write(&stranger.user_id()));
    }

    #[test]
    fn the_personal_volume_follows_the_user_identity() {
        let user = UserIdentity::generate();
        let (a, b) = (Volume::personal(&user), Volume::personal(&user));
        assert_eq!(a.id, b.id);
        assert_eq!(a.payload_key, b.payload_key);
        let other = Volume::personal(&UserIdentity::generate());
        assert_ne!(a.id, other.id);
        assert_ne!(a.payload_key, other.payload_key);
        assert!(a.can_write(&user.user_id()) && !a.open);
    }
}
