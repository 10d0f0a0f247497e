//! The volume commands of `p2pfs-ctl volume` (list, create, share, unshare) and the signed
//! volume records they publish.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{Mount, Slot};
use crate::fs::{FsError, FsResult};
use crate::namespace::volume::{Role, UserKey, VolumeError, VolumeRecord};
use crate::namespace::{UserId, Volume, VolumeId};

/// One line of `p2pfs-ctl volume list`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VolumeInfo {
    pub name: String,
    /// Where it shows in the mount, relative to the mountpoint.
    pub dir: String,
    pub id: String,
    pub owner: String,
    pub role: Option<Role>,
    pub writers: usize,
    pub members: usize,
    pub keys: usize,
    pub files: usize,
}

impl Mount {
    /// Signs, stores and publishes a new version of `volume`'s record written on `base`, then
    /// takes it as if it had arrived.
    pub(super) fn publish_record(
        &self,
        volume: &Volume,
        base: &[(u64, crate::util::hlc::Hlc)],
    ) -> FsResult<()> {
        let entry = volume
            .record_entry(
                &self.user.signing,
                self.template.origin,
                self.clock.now(),
                base,
            )
            .map_err(|e| FsError::Io(e.to_string()))?;
        let committed = self.namespace.commit(std::slice::from_ref(&entry))?;
        if let Some(publish) = &self.template.publish {
            let _ = publish.send(vec![entry.clone()]);
        }
        for e in &committed.applied {
            self.take_record(e)?;
        }
        Ok(())
    }

    /// The versions of `user` in `volume` this node holds (what a removal of theirs keeps), in
    /// the order a removal keeps them when they do not all fit its record
    /// ([`Volume::revoke`]): current live versions first (the files they wrote stay), then
    /// current tombstones, then displaced versions, then expired tombstones. A tombstone left
    /// out is refused, so the file it deleted comes back: what is lost is never data.
    pub(super) fn held_versions(
        &self,
        volume: &VolumeId,
        user: &UserId,
    ) -> Result<Vec<crate::namespace::VersionHash>, VolumeError> {
        use crate::namespace::StoredAs;
        let mut versions = self
            .namespace
            .placed_versions_in_where(
                |v| v == volume,
                |e| e.author == *user && !VolumeRecord::is_record(e),
            )
            .map_err(|e| VolumeError::Record(e.to_string()))?;
        versions.sort_by_key(|(place, e)| match place {
            StoredAs::Current => u8::from(e.deleted),
            StoredAs::Displaced => 2,
            StoredAs::Expired => 3,
        });
        Ok(versions.iter().map(|(_, e)| e.version_hash()).collect())
    }

    /// Volumes this node's user is a member of, the network volume first.
    pub fn volumes(&self) -> Vec<VolumeInfo> {
        let me = self.me();
        let mut out = vec![VolumeInfo {
            name: "(network)".into(),
            dir: "/".into(),
            id: self.network_id.to_string(),
            owner: "(every holder of the network key)".into(),
            role: Some(Role::Writer),
            writers: 0,
            members: 0,
            keys: 1,
            files: self.network.stats().entries.saturating_sub(1),
        }];
        let dirs: HashMap<usize, Vec<u8>> = self.volume_dirs().into_iter().collect();
        for (i, s) in self.slots.read().iter().enumerate() {
            if !s.member {
                continue;
            }
            out.push(VolumeInfo {
                name: s.volume.name.clone(),
                dir: format!(
                    "/{}",
                    String::from_utf8_lossy(dirs.get(&(i + 1)).map(|d| &d[..]).unwrap_or(b""))
                ),
                id: s.volume.id.to_string(),
                owner: s.volume.owner.to_string(),
                role: s.volume.role(&me),
                writers: s.volume.writers.len(),
                members: s.volume.members.len(),
                keys: s.volume.key_count(),
                files: s.core.stats().entries.saturating_sub(1),
            });
        }
        out
    }

    /// The volume `name` owned by this user (for share/unshare), with its record's history.
    fn owned(
        &self,
        name: &str,
    ) -> Result<(Volume, Vec<(u64, crate::util::hlc::Hlc)>), VolumeError> {
        let me = self.me();
        let slots = self.slots.read();
        let matching: Vec<&Slot> = slots
            .iter()
            .filter(|s| s.member && s.volume.name == name)
            .collect();
        let Some(slot) = matching.iter().find(|s| s.volume.owner == me) else {
            return Err(VolumeError::NotAllowed(if matching.is_empty() {
                format!("no volume named {name:?} (see `p2pfs-ctl volume list`)")
            } else {
                format!(
                    "volume {name:?} is not yours; only its owner can change who shares it or how long it keeps versions"
                )
            }));
        };
        let base = self
            .namespace
            .get(&VolumeRecord::entry_key(&slot.volume.id))
            .ok()
            .flatten()
            .map(|e| e.seen)
            .unwrap_or_default();
        Ok((slot.volume.clone(), base))
    }

    /// Names of the volumes owned by this user that `user` is a member of (what to unshare
    /// when `user` loses its last node).
    pub fn owned_volumes_shared_with(&self, user: &UserId) -> Vec<String> {
        let me = self.me();
        if *user == me {
            return Vec::new();
        }
        self.slots
            .read()
            .iter()
            .filter(|s| s.member && s.volume.owner == me && s.volume.role(user).is_some())
            .map(|s| s.volume.name.clone())
            .collect()
    }

    /// Creates a volume owned by this user; it appears as `@NAME` in the mount.
    pub fn create_volume(&self, name: &str) -> Result<VolumeInfo, VolumeError> {
        let _g = self.record_changes.lock();
        let me = self.me();
        if name == "home"
            || self
                .slots
                .read()
                .iter()
                .any(|s| s.member && s.volume.owner == me && s.volume.name == name)
        {
            return Err(VolumeError::NotAllowed(format!(
                "you already have a volume named {name:?}"
            )));
        }
        let volume = Volume::create(&self.user, name)?;
        let id = volume.id;
        self.publish_record(&volume, &[])
            .map_err(|e| VolumeError::Record(e.to_string()))?;
        self.volumes()
            .into_iter()
            .find(|v| v.id == id.to_string())
            .ok_or_else(|| VolumeError::Record("the new volume did not mount".into()))
    }

    /// Shares a volume of this user's with `user` (reader only when `read_only`).
    pub fn share(&self, name: &str, user: &UserKey, read_only: bool) -> Result<(), VolumeError> {
        let _g = self.record_changes.lock();
        let (mut volume, base) = self.owned(name)?;
        if read_only && volume.writers.contains(&user.id) {
            let held = self.held_versions(&volume.id, &user.id)?;
            let left_out = volume.revoke(&user.id, self.clock.now(), held)?;
            warn_left_out(&volume, &user.id, left_out);
        }
        volume.share(user, read_only)?;
        self.publish_record(&volume, &base)
            .map_err(|e| VolumeError::Record(e.to_string()))
    }

    /// Removes `user` from a volume of this user's; a new key encrypts what is written from now
    /// on. Returns `None` when they were not a member, else how many of their versions did not
    /// fit the record and are refused from now on ([`Volume::revoke`]).
    pub fn unshare(&self, name: &str, user: &UserId) -> Result<Option<usize>, VolumeError> {
        let _g = self.record_changes.lock();
        let (mut volume, base) = self.owned(name)?;
        let held = self.held_versions(&volume.id, user)?;
        let Some(left_out) = volume.unshare(user, self.clock.now(), held)? else {
            return Ok(None);
        };
        warn_left_out(&volume, user, left_out);
        self.publish_record(&volume, &base)
            .map_err(|e| VolumeError::Record(e.to_string()))?;
        Ok(Some(left_out))
    }
}

/// One line of `p2pfs-ctl retention`: a volume's policy and where it comes from.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RetentionInfo {
    /// The volume's name (`""` for the network volume) and where it shows in the mount.
    pub name: String,
    pub dir: String,
    pub keep_secs: u64,
    pub max_versions: u32,
    /// `"owner"`: its record sets it; `"config"`: `[retention]` of this node's config.
    pub source: String,
}

impl Mount {
    /// The retention policy of every volume this user is a member of, the network volume
    /// first.
    pub fn retention_list(&self) -> Vec<RetentionInfo> {
        let table = self.namespace.retention();
        let registry = self.registry.read();
        self.volumes()
            .into_iter()
            .map(|v| {
                let id = self.volume_id_of(&v.name).unwrap_or(self.network_id);
                let own = registry.get(&id).and_then(|r| r.retention);
                let policy = own.map_or(table.default, |p| p.clipped());
                RetentionInfo {
                    name: v.name,
                    dir: v.dir,
                    keep_secs: policy.keep_secs,
                    max_versions: policy.max_versions,
                    source: if own.is_some() { "owner" } else { "config" }.into(),
                }
            })
            .collect()
    }

    fn volume_id_of(&self, name: &str) -> Option<VolumeId> {
        self.slots
            .read()
            .iter()
            .find(|s| s.member && s.volume.name == name)
            .map(|s| s.volume.id)
    }

    /// Sets (or, with `None`, clears: back to each node's config) the retention policy of a
    /// volume of this user's, in its record: every node holding its data honours it.
    pub fn set_volume_retention(
        &self,
        name: &str,
        policy: Option<crate::namespace::RetentionPolicy>,
    ) -> Result<(), VolumeError> {
        let _g = self.record_changes.lock();
        let (mut volume, base) = self.owned(name)?;
        volume.retention = policy.map(crate::namespace::RetentionPolicy::clipped);
        self.publish_record(&volume, &base)
            .map_err(|e| VolumeError::Record(e.to_string()))
    }
}

/// Says when a removal could not keep every version of the removed writer.
fn warn_left_out(volume: &Volume, user: &UserId, left_out: usize) {
    if left_out > 0 {
        tracing::warn!(volume = %volume.id, %user, left_out, "removed writer has more versions than the volume record can keep: those kept last (expired, displaced, then tombstones) are refused from now on");
    }
}
