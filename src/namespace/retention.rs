//! How long a volume keeps the versions its files had before an overwrite or a delete, and how
//! many. A member volume's owner puts its policy in the volume record (signed, in clear, so
//! every node holding the volume's chunks honours it without the volume's keys); the network
//! volume, which has no owner, and a volume whose record says nothing, use the node's config.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::VolumeId;

/// Seven days, the default of `[retention] days`.
pub const DEFAULT_KEEP_SECS: u64 = 7 * 24 * 3600;

/// The longest a policy may keep versions (ten years): a record claiming more is clipped.
pub const MAX_KEEP_SECS: u64 = 10 * 365 * 24 * 3600;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionPolicy {
    /// How long a replaced version is kept after it was replaced here; 0 keeps none.
    pub keep_secs: u64,
    /// At most this many replaced versions per file (the newest); 0: no cap.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_versions: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        Self {
            keep_secs: DEFAULT_KEEP_SECS,
            max_versions: 0,
        }
    }
}

impl RetentionPolicy {
    /// Keeps no earlier version: a replaced version's chunks go as soon as GC finds them.
    pub const OFF: Self = Self {
        keep_secs: 0,
        max_versions: 0,
    };

    /// `days` as the config gives it (fractions allowed: `0.001` is 86.4 s).
    pub fn from_days(days: f64, max_versions: u32) -> Self {
        let secs = if days.is_finite() && days > 0.0 {
            (days * 86_400.0).round().min(MAX_KEEP_SECS as f64) as u64
        } else {
            0
        };
        Self {
            keep_secs: secs,
            max_versions,
        }
    }

    pub fn keeps_versions(&self) -> bool {
        self.keep_secs > 0
    }

    /// The policy with its claims bounded (a record is another user's input).
    pub fn clipped(self) -> Self {
        Self {
            keep_secs: self.keep_secs.min(MAX_KEEP_SECS),
            max_versions: self.max_versions,
        }
    }
}

/// The policy of every volume this node knows: the config's for volumes whose record sets
/// none (the network volume always).
#[derive(Clone, Debug, Default)]
pub struct RetentionTable {
    pub default: RetentionPolicy,
    pub volumes: HashMap<VolumeId, RetentionPolicy>,
}

impl RetentionTable {
    pub fn of(&self, volume: &VolumeId) -> RetentionPolicy {
        self.volumes.get(volume).copied().unwrap_or(self.default)
    }

    /// The shortest time any volume keeps versions (expiry scans no further back than this).
    pub fn shortest_keep_secs(&self) -> u64 {
        self.volumes
            .values()
            .map(|p| p.keep_secs)
            .chain([self.default.keep_secs])
            .min()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_become_seconds_and_nonsense_turns_retention_off() {
        assert_eq!(
            RetentionPolicy::from_days(7.0, 0),
            RetentionPolicy::default()
        );
        assert_eq!(RetentionPolicy::from_days(0.001, 3).keep_secs, 86);
        assert_eq!(RetentionPolicy::from_days(0.001, 3).max_versions, 3);
        for bad in [0.0, -1.0, f64::NAN, f64::NEG_INFINITY] {
            assert!(
                !RetentionPolicy::from_days(bad, 0).keeps_versions(),
                "{bad}"
            );
        }
        assert_eq!(RetentionPolicy::from_days(1e12, 0).keep_secs, MAX_KEEP_SECS);
    }

    #[test]
    fn a_volume_without_its_own_policy_uses_the_default() {
        let mut t = RetentionTable::default();
        let v = VolumeId([1; 16]);
        assert_eq!(t.of(&v), RetentionPolicy::default());
        t.volumes.insert(v, RetentionPolicy::OFF);
        assert_eq!(t.of(&v), RetentionPolicy::OFF);
        assert_eq!(t.shortest_keep_secs(), 0);
    }
}
