//! Bandwidth limits for ordinary traffic (chunks and anti-entropy pages, both directions): one
//! bucket for everything this node sends, one for everything it receives, and one of each per
//! peer; 0 = unlimited. Repair and scrub keep their own rates on top.
//!
//! The buckets are virtual schedules (GCRA): each holds the time its traffic is paid up to;
//! sending or receiving `n` bytes pushes it `n / rate` further, and the caller sleeps until it
//! is within [`BURST`] of now. Nothing polls: a throttled transfer is one timer per frame. A
//! received frame is charged after it was read, which delays reading the next one: the
//! sender's window fills and it slows to the rate.

use std::collections::HashMap;
use std::time::Duration;

use libp2p::PeerId;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// How far ahead of its rate a bucket may run: a short burst (one chunk at a low rate) goes
/// out at once, and a transfer of `n` bytes takes at least `n / rate - BURST`.
pub const BURST: Duration = Duration::from_millis(100);

/// How far ahead of now a bucket may be paid when a peer's request is served: past it the
/// request is refused as busy ([`Bandwidth::admit`]), so no peer can push the schedule (and
/// every other peer's wait) further, and no answer waits near the requester's timeout.
pub const MAX_AHEAD: Duration = Duration::from_secs(4);

/// How much of the global schedule one peer's requests may hold ahead of now: with many
/// peers at once, one peer flooding requests delays another's by at most this (plus one
/// request) and is refused past it.
pub const PEER_SHARE: Duration = Duration::from_secs(1);

/// Per-peer buckets kept at most; idle ones are dropped past it.
const MAX_PEER_BUCKETS: usize = 1024;

/// The four limits, in bytes per second; 0 = unlimited. The JSON shape of `p2pfs-ctl limit`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// All this node sends (chunks it stores on others or serves, pages it answers).
    pub upload: u64,
    /// All this node receives.
    pub download: u64,
    /// What it sends to any one peer.
    pub peer_upload: u64,
    /// What it receives from any one peer.
    pub peer_download: u64,
}

/// A peer's request refused because the limits are booked too far ahead.
#[derive(Clone, Copy, Debug, thiserror::Error, PartialEq, Eq)]
#[error("bandwidth limit reached; try again in {retry_in:.1?}")]
pub struct Busy {
    /// When the bucket that refused is back under its bound.
    pub retry_in: Duration,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RateError {
    #[error("{0:?} is not a rate: give bytes per second, e.g. 500000, \"500KB\", \"10MiB\"")]
    Invalid(String),
    #[error("{0:?} is too large")]
    TooLarge(String),
}

/// Parses a rate in bytes per second: a plain number, or a number with a unit (`B`, `KB`,
/// `MB`, `GB` in powers of 1000; `KiB`, `MiB`, `GiB` in powers of 1024; an optional `/s`).
pub fn parse_rate(text: &str) -> Result<u64, RateError> {
    let t = text.trim();
    let t = t.strip_suffix("/s").unwrap_or(t).trim_end();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| RateError::Invalid(text.to_string()))?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return Err(RateError::Invalid(text.to_string())),
    };
    let bytes = (number * scale).round();
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(RateError::TooLarge(text.to_string()));
    }
    Ok(bytes as u64)
}

/// A rate for people: `unlimited`, or bytes per second in binary units (`1.5 MiB/s`).
pub fn show_rate(bytes_per_sec: u64) -> String {
    if bytes_per_sec == 0 {
        return "unlimited".into();
    }
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes_per_sec as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes_per_sec} B/s")
    } else {
        format!("{v:.1} {}/s", units[i])
    }
}

/// Which way bytes go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// This node sends them.
    Up,
    /// This node receives them.
    Down,
}

/// Where a bucket's traffic is paid up to ([`Bucket::charge`]).
#[derive(Default)]
struct Buckets {
    up: Option<Instant>,
    down: Option<Instant>,
    peers: HashMap<(PeerId, bool), Instant>,
    /// Each peer's served requests alone, charged at the global rate: its share of the
    /// global schedule ([`PEER_SHARE`]).
    shares: HashMap<(PeerId, bool), Instant>,
}

/// The node's limits and buckets. Shared by the chunk and sync protocols, both ends.
#[derive(Default)]
pub struct Bandwidth {
    limits: Mutex<Limits>,
    buckets: Mutex<Buckets>,
}

/// Pushes a schedule paid up to `at` by `bytes` at `rate` (0: unlimited); returns the new
/// schedule and how long the caller waits.
fn charge(at: Option<Instant>, now: Instant, bytes: usize, rate: u64) -> (Instant, Duration) {
    if rate == 0 {
        return (now, Duration::ZERO);
    }
    let start = at.map_or(now, |t| t.max(now));
    let paid = start + Duration::from_secs_f64(bytes as f64 / rate as f64);
    (paid, paid.saturating_duration_since(now + BURST))
}

impl Bandwidth {
    pub fn new(limits: Limits) -> Self {
        Bandwidth {
            limits: Mutex::new(limits),
            buckets: Mutex::default(),
        }
    }

    pub fn limits(&self) -> Limits {
        *self.limits.lock()
    }

    /// New limits, in force for the next frame.
    pub fn set(&self, limits: Limits) {
        *self.limits.lock() = limits;
        // A schedule far ahead under the old limit would go on delaying under a raised one.
        *self.buckets.lock() = Buckets::default();
    }

    /// How long `bytes` going `direction` with `peer` must wait, charged to the global and
    /// the peer's bucket (the longer wait of the two).
    pub fn reserve(&self, peer: &PeerId, direction: Direction, bytes: usize) -> Duration {
        self.reserve_at(Instant::now(), peer, direction, bytes)
    }

    fn reserve_at(
        &self,
        now: Instant,
        peer: &PeerId,
        direction: Direction,
        bytes: usize,
    ) -> Duration {
        let limits = self.limits();
        let (global, per_peer) = match direction {
            Direction::Up => (limits.upload, limits.peer_upload),
            Direction::Down => (limits.download, limits.peer_download),
        };
        if global == 0 && per_peer == 0 {
            return Duration::ZERO;
        }
        let mut b = self.buckets.lock();
        let slot = match direction {
            Direction::Up => &mut b.up,
            Direction::Down => &mut b.down,
        };
        let (paid, global_wait) = charge(*slot, now, bytes, global);
        *slot = (global != 0).then_some(paid);
        if b.peers.len() > MAX_PEER_BUCKETS {
            b.peers.retain(|_, t| *t > now);
        }
        let key = (*peer, direction == Direction::Up);
        let (paid, peer_wait) = charge(b.peers.get(&key).copied(), now, bytes, per_peer);
        if per_peer != 0 {
            b.peers.insert(key, paid);
        }
        global_wait.max(peer_wait)
    }

    /// Books `bytes` of a request `peer` made (served by this node) going `direction`, and
    /// returns how long its answer waits; or [`Busy`] (nothing booked) when the global or the
    /// peer's bucket is paid more than [`MAX_AHEAD`] ahead, or the peer's share of the global
    /// one more than [`PEER_SHARE`]. A bucket not that far ahead takes the request whatever
    /// its size, so a chunk larger than the bound still goes at a low rate.
    pub fn admit(
        &self,
        peer: &PeerId,
        direction: Direction,
        bytes: usize,
    ) -> Result<Duration, Busy> {
        self.admit_at(Instant::now(), peer, direction, bytes)
    }

    fn admit_at(
        &self,
        now: Instant,
        peer: &PeerId,
        direction: Direction,
        bytes: usize,
    ) -> Result<Duration, Busy> {
        let limits = self.limits();
        let (global, per_peer) = match direction {
            Direction::Up => (limits.upload, limits.peer_upload),
            Direction::Down => (limits.download, limits.peer_download),
        };
        if global == 0 && per_peer == 0 {
            return Ok(Duration::ZERO);
        }
        let key = (*peer, direction == Direction::Up);
        let mut b = self.buckets.lock();
        let slot = match direction {
            Direction::Up => b.up,
            Direction::Down => b.down,
        };
        // How far past its bound each bucket that applies is paid.
        let past = |at: Option<Instant>, bound: Duration| {
            at.map_or(Duration::ZERO, |t| t.saturating_duration_since(now + bound))
        };
        let retry_in = [
            (global != 0).then(|| past(slot, MAX_AHEAD)),
            (per_peer != 0).then(|| past(b.peers.get(&key).copied(), MAX_AHEAD)),
            (global != 0).then(|| past(b.shares.get(&key).copied(), PEER_SHARE)),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or_default();
        if !retry_in.is_zero() {
            return Err(Busy { retry_in });
        }
        if global != 0 {
            if b.shares.len() > MAX_PEER_BUCKETS {
                b.shares.retain(|_, t| *t > now);
            }
            let (paid, _) = charge(b.shares.get(&key).copied(), now, bytes, global);
            b.shares.insert(key, paid);
        }
        drop(b);
        Ok(self.reserve_at(now, peer, direction, bytes))
    }

    /// Charges an exchange this node made with `peer` (`sent` and `received` bytes) and waits
    /// until it fits the limits. Called after the exchange, outside its timeouts: the wait
    /// delays the next one on the stream. Requests peers make go through [`Bandwidth::admit`].
    pub async fn pace(&self, peer: &PeerId, sent: u64, received: u64) {
        let wait = self
            .reserve(peer, Direction::Up, sent as usize)
            .max(self.reserve(peer, Direction::Down, received as usize));
        wait_for(wait).await;
    }
}

/// Waits `wait`, and not at all when it is zero. A tokio `sleep` of zero is not ready at once:
/// it waits for the timer's next tick (up to a millisecond), which would delay every answer
/// and request on the unlimited path, where every wait is zero.
pub async fn wait_for(wait: Duration) {
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A zero wait is ready at its first poll. tokio's own sleep of zero is not (it waits for
    /// the timer's next tick, ~1 ms), which delayed every chunk answer by that much.
    #[tokio::test]
    async fn a_zero_wait_is_ready_at_once() {
        use futures::FutureExt;
        assert!(
            wait_for(Duration::ZERO).now_or_never().is_some(),
            "a zero wait pends"
        );
        assert!(
            tokio::time::sleep(Duration::ZERO).now_or_never().is_none(),
            "tokio's sleep(0) is ready at once here: the reason for `wait_for` is gone"
        );
        assert!(wait_for(Duration::from_millis(5)).now_or_never().is_none());
    }

    #[test]
    fn rates_parse_with_and_without_units() {
        assert_eq!(parse_rate("0"), Ok(0));
        assert_eq!(parse_rate("500000"), Ok(500_000));
        assert_eq!(parse_rate("500KB"), Ok(500_000));
        assert_eq!(parse_rate("10MiB"), Ok(10 << 20));
        assert_eq!(parse_rate("1.5 MB/s"), Ok(1_500_000));
        assert_eq!(parse_rate("2gib"), Ok(2 << 30));
        assert!(matches!(parse_rate("fast"), Err(RateError::Invalid(_))));
        assert!(matches!(
            parse_rate("10 parsecs"),
            Err(RateError::Invalid(_))
        ));
        assert_eq!(show_rate(0), "unlimited");
        assert_eq!(show_rate(10 << 20), "10.0 MiB/s");
    }

    /// A key holder flooding a node with requests (1000 parallel 1 MiB puts at a 1 MiB/s
    /// download limit) does not push the global schedule: the flood is refused as busy past
    /// its share, and another peer's request waits at most that share plus its own bytes.
    #[test]
    fn one_peers_flood_does_not_delay_another_peers_requests() {
        let (flooder, honest) = (PeerId::random(), PeerId::random());
        let t0 = Instant::now();
        let bw = Bandwidth::new(Limits {
            download: 1 << 20,
            ..Limits::default()
        });
        let admitted = (0..1000)
            .filter(|_| bw.admit_at(t0, &flooder, Direction::Down, 1 << 20).is_ok())
            .count();
        assert!(admitted <= 3, "{admitted} of the flood admitted");
        let wait = bw
            .admit_at(t0, &honest, Direction::Down, 1 << 20)
            .expect("another peer's request is served");
        let bound = PEER_SHARE + Duration::from_secs(2);
        assert!(
            wait <= bound,
            "another peer waits {wait:?} (bound {bound:?})"
        );
        // A second later the flooder's share has drained by a second: it gets some again.
        let later = t0 + Duration::from_secs(3);
        assert!(
            bw.admit_at(later, &flooder, Direction::Down, 1 << 20)
                .is_ok()
        );
    }

    /// A request is refused, booking nothing, while the global schedule (here pushed by this
    /// node's own traffic) is more than [`MAX_AHEAD`] ahead, and served once it is within.
    #[test]
    fn a_request_too_far_ahead_is_refused_as_busy_and_books_nothing() {
        let (own, peer) = (PeerId::random(), PeerId::random());
        let t0 = Instant::now();
        let bw = Bandwidth::new(Limits {
            upload: 1_000_000,
            ..Limits::default()
        });
        // This node's own sends wait; they are never refused.
        assert_eq!(
            bw.reserve_at(t0, &own, Direction::Up, 10_000_000),
            Duration::from_millis(9900)
        );
        let busy = bw
            .admit_at(t0, &peer, Direction::Up, 1_000_000)
            .unwrap_err();
        assert_eq!(busy.retry_in, Duration::from_secs(6));
        assert!(busy.to_string().contains("bandwidth limit"), "{busy}");
        // Nothing was booked: at the retry time it fits, behind the rest of the schedule only.
        let at = t0 + busy.retry_in;
        assert_eq!(
            bw.admit_at(at, &peer, Direction::Up, 1_000_000),
            Ok(Duration::from_millis(4900))
        );
        // Unlimited: always served at once.
        let free = Bandwidth::new(Limits::default());
        assert_eq!(
            free.admit_at(t0, &peer, Direction::Up, 1 << 30),
            Ok(Duration::ZERO)
        );
    }

    /// Past the burst, each byte waits its share of the rate, in the global bucket and in the
    /// peer's; other peers and directions have their own.
    #[test]
    fn waits_follow_the_rate_past_the_burst() {
        let a = PeerId::random();
        let b = PeerId::random();
        let t0 = Instant::now();
        let bw = Bandwidth::new(Limits {
            upload: 0,
            download: 0,
            peer_upload: 1_000_000,
            peer_download: 0,
        });
        let wait = |peer, direction, bytes| bw.reserve_at(t0, peer, direction, bytes);
        // 100 ms of burst, then 1 s per MB.
        assert_eq!(wait(&a, Direction::Up, 100_000), Duration::ZERO);
        assert_eq!(wait(&a, Direction::Up, 1_000_000), Duration::from_secs(1));
        assert_eq!(wait(&b, Direction::Up, 100_000), Duration::ZERO);
        assert_eq!(wait(&a, Direction::Down, 10_000_000), Duration::ZERO);
        bw.set(Limits {
            upload: 2_000_000,
            ..bw.limits()
        });
        // The global bucket and the peer's: the longer wait counts.
        assert_eq!(
            wait(&b, Direction::Up, 2_000_000),
            Duration::from_millis(1900)
        );
        let later = t0 + Duration::from_secs(10);
        assert_eq!(
            bw.reserve_at(later, &b, Direction::Up, 100_000),
            Duration::ZERO
        );
    }
}
