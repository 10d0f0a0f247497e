//! Hybrid logical clock.
//!
//! Namespace entries are ordered by a hybrid logical clock rather than wall time alone: it
//! follows the wall clock closely (so "last writer" means what a person expects) but never goes
//! backwards and always moves past every timestamp this node has seen, so a node whose clock
//! lags still orders its writes after the ones it has observed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Bits of an [`Hlc`] given to the logical counter; the rest hold milliseconds since the epoch.
const LOGICAL_BITS: u32 = 16;

/// A hybrid logical timestamp: `millis << 16 | counter`, so plain integer order is clock order.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Hlc(pub u64);

impl Hlc {
    /// Milliseconds since the Unix epoch of the physical part.
    pub fn millis(self) -> u64 {
        self.0 >> LOGICAL_BITS
    }
}

/// How far ahead of this node's wall clock an observed timestamp may move its clock. A peer
/// whose clock is further ahead (or a hostile entry stamped near the end of time) does not
/// drag every node's clock along, and cannot make it overflow; order between versions does not
/// suffer, as a version written on top of another replaces it whatever their clocks say.
const MAX_AHEAD_MS: u64 = 10 * 60 * 1000;

/// A node's clock source. Cheap to share; `now` is lock-free.
#[derive(Debug, Default)]
pub struct HlcClock {
    last: AtomicU64,
}

fn wall_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl HlcClock {
    pub fn new() -> Self {
        Self::default()
    }

    /// A timestamp greater than every one returned or observed before.
    pub fn now(&self) -> Hlc {
        let wall = wall_millis() << LOGICAL_BITS;
        let mut prev = self.last.load(Ordering::Relaxed);
        loop {
            let next = wall.max(prev.saturating_add(1));
            match self
                .last
                .compare_exchange_weak(prev, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Hlc(next),
                Err(actual) => prev = actual,
            }
        }
    }

    /// Moves the clock past a timestamp seen in a remote or stored entry, unless it is more
    /// than `MAX_AHEAD_MS` ahead of the wall clock.
    pub fn observe(&self, seen: Hlc) {
        let limit = wall_millis().saturating_add(MAX_AHEAD_MS) << LOGICAL_BITS;
        if seen.0 <= limit {
            self.last.fetch_max(seen.0, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strictly_increasing_and_past_observed() {
        let clock = HlcClock::new();
        let a = clock.now();
        let b = clock.now();
        assert!(b > a);
        let future = Hlc((wall_millis() + 60_000) << LOGICAL_BITS);
        clock.observe(future);
        let c = clock.now();
        assert!(c > future);
        assert!(c.millis() >= future.millis());
    }

    #[test]
    fn a_timestamp_far_ahead_neither_drags_the_clock_nor_overflows_it() {
        let clock = HlcClock::new();
        clock.observe(Hlc(u64::MAX));
        clock.observe(Hlc((wall_millis() + 3_600_000) << LOGICAL_BITS));
        let t = clock.now();
        assert!(t.millis() <= wall_millis() + 1000, "{t:?}");
        // Even a clock already at the end of time does not panic.
        let stuck = HlcClock::default();
        stuck.last.store(u64::MAX, Ordering::Relaxed);
        assert_eq!(stuck.now(), Hlc(u64::MAX));
    }
}
