//! Live updates and the last hour of activity, for the dashboard's plots.
//!
//! [`Samples`] reads the process's traffic counters every [`SAMPLE_EVERY`] and keeps one hour
//! of rates. `GET /api/events` is a server-sent event stream: `status` (the status object) every
//! [`STATUS_EVERY`], `sample` (the newest [`Sample`]) as each is taken. `GET /api/history`
//! gives the hour kept.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::WebState;
use crate::node::control::ControlService;

/// How often the rates are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// Samples kept: one hour.
pub const KEPT: usize = 360;
/// How often the event stream sends the status.
pub const STATUS_EVERY: Duration = Duration::from_secs(2);

/// Rates over one sampling interval, ending at `t`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds since the Unix epoch.
    pub t: u64,
    /// Chunk and namespace traffic to and from peers.
    pub sent_bytes_per_sec: f64,
    pub received_bytes_per_sec: f64,
    /// Copies pushed by repair (to restore R copies, or hand data to new owners).
    pub repair_copies_per_sec: f64,
    /// Bytes read from and written to files through the mount (FUSE).
    pub read_bytes_per_sec: f64,
    pub written_bytes_per_sec: f64,
}

/// `GET /api/history`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct History {
    pub interval_secs: u64,
    pub samples: Vec<Sample>,
}

/// Counter readings a sample is the difference of.
#[derive(Clone, Copy, Default)]
struct Reading {
    sent: u64,
    received: u64,
    repair_copies: u64,
    read: u64,
    written: u64,
}

impl Reading {
    fn now(control: &ControlService) -> Self {
        use crate::rpc::counters::{CHUNK_TRAFFIC, SYNC_TRAFFIC};
        use std::sync::atomic::Ordering::Relaxed;
        let fuse = &crate::fuse::counters::FUSE;
        Self {
            sent: CHUNK_TRAFFIC.sent() + SYNC_TRAFFIC.sent(),
            received: CHUNK_TRAFFIC.received() + SYNC_TRAFFIC.received(),
            repair_copies: control.repair.pushed_copies(),
            read: fuse.read_bytes.load(Relaxed),
            written: fuse.written_bytes.load(Relaxed),
        }
    }

    /// The rates from `self` to `later`, `secs` apart.
    fn rates(&self, later: &Reading, secs: f64, t: u64) -> Sample {
        let rate = |a: u64, b: u64| b.saturating_sub(a) as f64 / secs;
        Sample {
            t,
            sent_bytes_per_sec: rate(self.sent, later.sent),
            received_bytes_per_sec: rate(self.received, later.received),
            repair_copies_per_sec: rate(self.repair_copies, later.repair_copies),
            read_bytes_per_sec: rate(self.read, later.read),
            written_bytes_per_sec: rate(self.written, later.written),
        }
    }
}

/// The last hour of samples, and the newest for the event streams.
pub struct Samples {
    kept: Mutex<VecDeque<Sample>>,
    newest: tokio::sync::watch::Sender<Option<Sample>>,
}

impl Samples {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            kept: Mutex::new(VecDeque::with_capacity(KEPT)),
            newest: tokio::sync::watch::channel(None).0,
        })
    }

    /// Adds a sample, dropping the oldest past an hour.
    pub fn push(&self, sample: Sample) {
        let mut kept = self.kept.lock();
        if kept.len() == KEPT {
            kept.pop_front();
        }
        kept.push_back(sample);
        drop(kept);
        self.newest.send_replace(Some(sample));
    }

    pub fn history(&self) -> History {
        History {
            interval_secs: SAMPLE_EVERY.as_secs(),
            samples: self.kept.lock().iter().copied().collect(),
        }
    }

    /// Samples every [`SAMPLE_EVERY`] until cancelled.
    pub async fn run(self: Arc<Self>, control: Arc<ControlService>) {
        // The FUSE byte counters count only once timing is on.
        crate::fuse::counters::enable_timing();
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut last = (Reading::now(&control), tokio::time::Instant::now());
        loop {
            tick.tick().await;
            let (reading, at) = (Reading::now(&control), tokio::time::Instant::now());
            let secs = at.duration_since(last.1).as_secs_f64().max(0.001);
            let t = crate::admission::cert::now_unix();
            self.push(last.0.rates(&reading, secs, t));
            last = (reading, at);
        }
    }
}

pub async fn history(State(state): State<WebState>) -> Response {
    axum::Json(state.samples.history()).into_response()
}

/// `GET /api/events`: `status` every [`STATUS_EVERY`] (the first at once), `sample` as each
/// sample is taken.
pub async fn events(State(state): State<WebState>) -> Response {
    let newest = state.samples.newest.subscribe();
    let mut tick = tokio::time::interval(STATUS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stream = futures::stream::unfold(
        (state, newest, tick),
        |(state, mut newest, mut tick)| async move {
            let event = tokio::select! {
                _ = tick.tick() => {
                    // Throttled: a listing of the store per tab every 2 s would cost more than
                    // the dashboard is worth on a node with many chunks.
                    let status = state.status.status_throttled().await;
                    Event::default().event("status").json_data(status)
                }
                changed = newest.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                    let sample = *newest.borrow_and_update();
                    Event::default().event("sample").json_data(sample)
                }
            };
            let event =
                event.unwrap_or_else(|e| Event::default().event("error").data(e.to_string()));
            Some((Ok::<_, Infallible>(event), (state, newest, tick)))
        },
    );
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_differences_over_the_interval_and_an_hour_is_kept() {
        let a = Reading {
            sent: 1000,
            received: 0,
            repair_copies: 2,
            read: 0,
            written: 10,
        };
        let b = Reading {
            sent: 3000,
            received: 500,
            repair_copies: 12,
            read: 40,
            written: 10,
        };
        let s = a.rates(&b, 10.0, 7);
        assert_eq!(s.t, 7);
        assert_eq!(s.sent_bytes_per_sec, 200.0);
        assert_eq!(s.received_bytes_per_sec, 50.0);
        assert_eq!(s.repair_copies_per_sec, 1.0);
        assert_eq!(s.read_bytes_per_sec, 4.0);
        assert_eq!(s.written_bytes_per_sec, 0.0);
        // A counter that went down (it cannot, but a reading is not trusted to) is no rate.
        assert_eq!(b.rates(&a, 10.0, 8).sent_bytes_per_sec, 0.0);

        let samples = Samples::new();
        for t in 0..(KEPT as u64 + 5) {
            samples.push(Sample {
                t,
                ..Sample::default()
            });
        }
        let h = samples.history();
        assert_eq!(h.samples.len(), KEPT);
        assert_eq!(h.samples.first().unwrap().t, 5);
        assert_eq!(h.samples.last().unwrap().t, KEPT as u64 + 4);
        assert_eq!(*samples.newest.borrow(), h.samples.last().copied());
    }
}
