//! The membership view: who is in the network, how to reach them, what they offer, and
//! whether they are still there.
//!
//! Nodes gossip an [`Announcement`] about themselves; this module keeps the newest one per peer
//! and runs the liveness state machine on top. It is pure logic: the caller does the networking
//! and passes the time in, so every transition is testable without sleeping.
//!
//! States: alive → suspect (silent for `suspect_after`) → dead (silent for `dead_after`), and
//! alive → leaving → left when a node says goodbye. A suspect node still counts for placement,
//! so a reboot or a short partition does not start a repair storm; only death moves its chunks.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

/// Most addresses kept per peer: enough for every interface and transport, and a hostile
/// announcement cannot make the view (or the dialer) hold thousands.
pub const MAX_ADDRS: usize = 16;
/// Longest version string kept, in characters.
pub const MAX_VERSION_CHARS: usize = 64;

/// What a node says about itself, gossiped periodically and on change. Everything in it comes
/// from the network: [`Membership::apply`] validates and bounds every field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    /// The announcing node's [`PeerId::to_bytes`].
    pub peer: Vec<u8>,
    /// Multiaddrs as strings; unparsable ones are dropped, at most [`MAX_ADDRS`] kept.
    pub addrs: Vec<String>,
    /// Bytes offered for chunks: the placement weight (stable, so placement does not churn).
    pub capacity: u64,
    /// Free bytes on the node's disk right now (informational: status, `df`).
    #[serde(default)]
    pub free: u64,
    /// Software version, at most [`MAX_VERSION_CHARS`] kept.
    pub version: String,
    pub state: AnnouncedState,
    /// Increases with every announcement from the node, so a delayed older one is recognised
    /// and ignored. A restarted node starts from a wall-clock-based value to stay increasing.
    pub seq: u64,
    /// How many live members the announcer's view holds, itself included. A node that knows
    /// fewer than a peer does is missing someone (it just started, or restarted with an empty
    /// view), so the peer answers it with an announcement; nodes that agree send none
    /// ([`Membership::knows_fewer`]). Absent (0) from older nodes: they are always answered.
    #[serde(default)]
    pub knows: u32,
    /// The placement rule the announcer computes owners by ([`crate::cluster::placement::RULE`]).
    /// Absent from nodes older than rule 2, which all placed by rule 1. Nodes on different
    /// rules disagree on owners, so this node warns when it hears one.
    #[serde(default = "placement_rule_1")]
    pub placement_rule: u8,
    /// The node's name (`[node] name` in its config): a claim, kept only when
    /// [`crate::cluster::names::check_name`] accepts it. Empty from nodes older than names.
    #[serde(default)]
    pub name: String,
    /// The node's certificate in a certified network (CBOR of an
    /// [`crate::admission::NodeCert`]), checked by the cluster before the announcement is
    /// applied; empty in a key-only network and from nodes older than certificates.
    #[serde(default, with = "serde_bytes")]
    pub cert: Vec<u8>,
    /// The node's user, and that user's age recipient: what `p2pfs-ctl certify` needs to
    /// certify a member it sees. Absent from nodes older than certificates.
    #[serde(default)]
    pub user: Option<crate::identity::UserId>,
    #[serde(default)]
    pub recipient: String,
}

/// Longest age recipient kept from an announcement (an X25519 recipient is 62 characters).
pub const MAX_RECIPIENT_CHARS: usize = 128;

/// The rule of announcements without the field: every node before rule 2 placed by rule 1.
fn placement_rule_1() -> u8 {
    1
}

/// The states a node can claim for itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AnnouncedState {
    Alive,
    Leaving,
    Left,
    /// Stopping without leaving (a plain stop: Ctrl-C, SIGTERM): it will be back, keeps its
    /// data, handed nothing off.
    Offline,
    /// Running but not syncing (`p2pfs-ctl pause`): it closes its connections after this.
    Paused,
}

/// A peer's state as this node sees it: what the peer announced, downgraded by silence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerState {
    Alive,
    Suspect,
    Dead,
    Leaving,
    Left,
    /// It said it stopped without leaving: placed and repaired as a silent peer is (it counts
    /// until the dead-after time, then it is dead), but shown as what it is at once.
    Offline,
    /// It said it paused its sync: treated as [`PeerState::Offline`].
    Paused,
}

impl PeerState {
    /// The name in logs and in `p2pfs-ctl status`.
    pub fn as_str(self) -> &'static str {
        match self {
            PeerState::Alive => "alive",
            PeerState::Suspect => "suspect",
            PeerState::Dead => "dead",
            PeerState::Leaving => "leaving",
            PeerState::Left => "left",
            PeerState::Offline => "offline",
            PeerState::Paused => "paused",
        }
    }

    /// Whether the peer counts for placement: alive, or silent (suspect, offline, paused) but
    /// not yet given up on.
    pub fn is_live(self) -> bool {
        matches!(
            self,
            PeerState::Alive | PeerState::Suspect | PeerState::Offline | PeerState::Paused
        )
    }

    /// Whether the peer counts but is not expected to answer now (suspect, offline, paused):
    /// readers and writers try it last.
    pub fn is_quiet(self) -> bool {
        matches!(
            self,
            PeerState::Suspect | PeerState::Offline | PeerState::Paused
        )
    }

    /// Whether the peer said it is not syncing (offline, paused).
    fn is_announced_quiet(self) -> bool {
        matches!(self, PeerState::Offline | PeerState::Paused)
    }
}

impl fmt::Display for PeerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<AnnouncedState> for PeerState {
    fn from(state: AnnouncedState) -> Self {
        match state {
            AnnouncedState::Alive => PeerState::Alive,
            AnnouncedState::Leaving => PeerState::Leaving,
            AnnouncedState::Left => PeerState::Left,
            AnnouncedState::Offline => PeerState::Offline,
            AnnouncedState::Paused => PeerState::Paused,
        }
    }
}

/// One peer in the view.
#[derive(Clone, Debug)]
pub struct Member {
    pub peer: PeerId,
    pub addrs: Vec<Multiaddr>,
    pub capacity: u64,
    pub free: u64,
    pub version: String,
    pub state: PeerState,
    /// Last announcement or other sign of life; every silence timer runs from here.
    pub last_seen: Instant,
    /// Sequence number of the newest announcement applied.
    pub seq: u64,
    /// Live members its view held, by its newest announcement ([`Announcement::knows`]).
    pub knows: u32,
    /// Its placement rule ([`Announcement::placement_rule`]).
    pub placement_rule: u8,
    /// Its name ([`Announcement::name`]); empty when it announced none or an invalid one.
    pub name: String,
    /// Whether its newest announcement's name was refused (so the refusal is logged once,
    /// not with every announcement).
    pub name_refused: bool,
    /// Its user and that user's age recipient, as announced (empty recipient when it
    /// announced none or one too long).
    pub user: Option<crate::identity::UserId>,
    pub recipient: String,
    /// When it first announced the leave it is in (kept once the leave timed out, so a
    /// member that keeps announcing `Leaving` stays dead; cleared once it has stayed alive for
    /// the dead-after time, see [`Member::alive_since`]).
    pub leave_started: Option<Instant>,
    /// When it first announced `offline` or `paused` (kept through short alive spells and
    /// cleared as `leave_started` is): `dead_after` past it, it is dead whatever it keeps
    /// announcing, so re-announcing `offline` cannot keep a peer out of audit and repair.
    pub quiet_since: Option<Instant>,
    /// Since when it has not been alive (suspect, dead or leaving); `None` once it has stayed
    /// alive for the dead-after time. Short alive spells do not clear it, so a member flapping
    /// between `Leaving` and `Alive` cannot restart the clock of
    /// [`Membership::holds_back_gc`] or of the leave timeout.
    pub down_since: Option<Instant>,
    /// Since when it has been alive without a break; `None` while it is not alive.
    pub alive_since: Option<Instant>,
}

impl Member {
    /// Forgets its last down spell (leave, silence) once it has been alive without a break
    /// for `stable`: a node back for good starts a new life, a flapping one does not.
    fn settle(&mut self, now: Instant, stable: Duration) {
        if self
            .alive_since
            .is_some_and(|t| now.saturating_duration_since(t) >= stable)
        {
            self.leave_started = None;
            self.quiet_since = None;
            self.down_since = None;
        }
    }
}

/// Announcements the whole network sends per second, at most, once it is large: every node
/// announces once per [`Membership::announce_period`], which grows with the membership so that
/// what each node receives stays flat as the network grows. Up to 16 members the configured
/// interval (2 s) applies unchanged.
pub const NETWORK_ANNOUNCEMENTS_PER_SEC: u32 = 8;

/// Silence thresholds are never shorter than this many announce periods: a peer is suspected
/// only after missing three announcements in a row, declared dead after missing five.
const SUSPECT_PERIODS: u32 = 3;
const DEAD_PERIODS: u32 = 5;

/// How long silence lasts before the view gives up on a peer, step by step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LivenessConfig {
    /// How often a node announces itself in a small network (see
    /// [`Membership::announce_period`]).
    pub announce_every: Duration,
    /// Alive becomes suspect after this much silence.
    pub suspect_after: Duration,
    /// Suspect becomes dead (and leaving becomes left) after this much silence. Long enough
    /// that a reboot does not trigger repair.
    pub dead_after: Duration,
    /// Dead and left members are dropped from the view after this much silence; a member
    /// that is not alive holds back garbage collection for at most this long
    /// ([`Membership::holds_back_gc`]).
    pub forget_after: Duration,
    /// A member still leaving this long after it announced it (its handoff never finished, or
    /// it keeps announcing `Leaving`) is dead.
    pub leave_timeout: Duration,
}

impl Default for LivenessConfig {
    fn default() -> Self {
        LivenessConfig {
            announce_every: Duration::from_secs(2),
            suspect_after: Duration::from_secs(6),
            dead_after: Duration::from_secs(60),
            forget_after: Duration::from_secs(60 * 60),
            leave_timeout: Duration::from_secs(120),
        }
    }
}

/// What changed, so the node can react (repair, log).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipEvent {
    Joined(PeerId),
    StateChanged {
        peer: PeerId,
        from: PeerState,
        to: PeerState,
    },
    Forgotten(PeerId),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MembershipError {
    #[error("announcement has an invalid peer id")]
    BadPeerId,
}

/// This node's view of the other members. The local node is never in it.
#[derive(Debug)]
pub struct Membership {
    local: PeerId,
    config: LivenessConfig,
    /// Ordered so listings (status, logs) are stable.
    members: BTreeMap<PeerId, Member>,
    /// Announcements whose name was refused, since start.
    refused_names: u64,
}

impl Membership {
    pub fn new(local: PeerId, config: LivenessConfig) -> Self {
        Membership {
            local,
            config,
            members: BTreeMap::new(),
            refused_names: 0,
        }
    }

    /// Applies an announcement heard at `now`. One that is not newer than what is known
    /// (`seq` not above the known one) changes nothing; one about the local node is ignored.
    /// The caller must have checked that the announcement comes from the peer it names (the
    /// gossip message's signed source); everything else is checked here.
    pub fn apply(
        &mut self,
        a: &Announcement,
        now: Instant,
    ) -> Result<Vec<MembershipEvent>, MembershipError> {
        let peer = PeerId::from_bytes(&a.peer).map_err(|_| MembershipError::BadPeerId)?;
        if peer == self.local {
            return Ok(Vec::new());
        }
        if let Some(known) = self.members.get(&peer)
            && a.seq <= known.seq
        {
            return Ok(Vec::new());
        }
        let stable = self.effective_liveness().dead_after;
        let old = self.members.get(&peer);
        let mut to = PeerState::from(a.state);
        // A leave lasts from its first announcement, through short alive spells: only a member
        // alive without a break for `stable` starts a new life (`Member::settle`).
        let leave_started = match to {
            PeerState::Leaving => old.and_then(|o| o.leave_started).or(Some(now)),
            _ => old.and_then(|o| o.leave_started),
        };
        if to == PeerState::Leaving
            && leave_started
                .is_some_and(|t| now.saturating_duration_since(t) >= self.config.leave_timeout)
        {
            to = PeerState::Dead;
        }
        // Offline and paused are counted from the first such announcement, not from the
        // newest: a peer announcing `offline` every second still becomes dead.
        let quiet_since = match to {
            PeerState::Offline | PeerState::Paused => old.and_then(|o| o.quiet_since).or(Some(now)),
            _ => old.and_then(|o| o.quiet_since),
        };
        if to.is_announced_quiet()
            && quiet_since.is_some_and(|t| now.saturating_duration_since(t) >= stable)
        {
            to = PeerState::Dead;
        }
        let down_since = match to {
            PeerState::Alive => old.and_then(|o| o.down_since),
            _ => old.and_then(|o| o.down_since).or(Some(now)),
        };
        let alive_since = match to {
            PeerState::Alive => old
                .filter(|o| o.state == PeerState::Alive)
                .and_then(|o| o.alive_since)
                .or(Some(now)),
            _ => None,
        };
        let name_refused = match crate::cluster::names::check_name(&a.name) {
            Ok(()) => false,
            Err(crate::cluster::names::NameError::Empty) => false,
            Err(e) => {
                self.refused_names += 1;
                if !old.is_some_and(|o| o.name_refused) {
                    tracing::warn!(%peer, error = %e, "peer announced an invalid name: ignored");
                }
                true
            }
        };
        let mut member = Member {
            peer,
            addrs: parse_addrs(&a.addrs),
            capacity: a.capacity,
            free: a.free,
            version: clean_version(&a.version),
            state: to,
            last_seen: now,
            seq: a.seq,
            knows: a.knows,
            placement_rule: a.placement_rule,
            name: if name_refused {
                String::new()
            } else {
                a.name.clone()
            },
            name_refused,
            user: a.user,
            recipient: if a.recipient.len() <= MAX_RECIPIENT_CHARS
                && !a.recipient.chars().any(char::is_control)
            {
                a.recipient.clone()
            } else {
                String::new()
            },
            leave_started,
            quiet_since,
            down_since,
            alive_since,
        };
        member.settle(now, stable);
        let rule_was = self.members.get(&peer).map(|m| m.placement_rule);
        if a.placement_rule != crate::cluster::placement::RULE && rule_was != Some(a.placement_rule)
        {
            // Owners computed by another rule differ from ours: copies would be pushed to
            // owners by one rule and dropped by the other. Said once per peer and rule.
            tracing::warn!(
                %peer,
                name = %member.name,
                peer_rule = a.placement_rule,
                our_rule = crate::cluster::placement::RULE,
                version = %member.version,
                "peer places chunks by another rule: run the same p2pfs version on every node"
            );
        }
        let event = match self.members.insert(peer, member) {
            // First heard saying it left: kept only to remember its seq, so a delayed older
            // announcement cannot bring it back. It never joined as far as this node knows.
            None if to == PeerState::Left => None,
            None => Some(MembershipEvent::Joined(peer)),
            Some(old) if old.state != to => Some(MembershipEvent::StateChanged {
                peer,
                from: old.state,
                to,
            }),
            Some(_) => None,
        };
        Ok(event.into_iter().collect())
    }

    /// Records any other sign of life from `peer` (a message, a stream). A suspect or dead peer
    /// is alive again; a leaving or left one keeps the state it announced. Unknown peers are
    /// not added: without an announcement there is no capacity or address to record.
    pub fn heard_from(&mut self, peer: &PeerId, now: Instant) -> Vec<MembershipEvent> {
        let Some(member) = self.members.get_mut(peer) else {
            return Vec::new();
        };
        member.last_seen = member.last_seen.max(now);
        match member.state {
            // Its leave (or its offline spell) timed out: it stays dead until it announces
            // itself alive.
            PeerState::Dead if member.leave_started.is_some() || member.quiet_since.is_some() => {
                Vec::new()
            }
            PeerState::Suspect | PeerState::Dead => {
                let from = member.state;
                member.state = PeerState::Alive;
                member.alive_since = Some(now);
                vec![MembershipEvent::StateChanged {
                    peer: *peer,
                    from,
                    to: PeerState::Alive,
                }]
            }
            // Offline and paused peers say when they are back, by an announcement.
            PeerState::Alive
            | PeerState::Leaving
            | PeerState::Left
            | PeerState::Offline
            | PeerState::Paused => Vec::new(),
        }
    }

    /// Advances the silence timers to `now`. A peer silent long enough to skip a state goes
    /// through it anyway (alive → suspect → dead gives two events), so every event is a step
    /// of the state machine.
    pub fn tick(&mut self, now: Instant) -> Vec<MembershipEvent> {
        let config = self.effective_liveness();
        let mut events = Vec::new();
        self.members.retain(|&peer, member| {
            let silence = now.saturating_duration_since(member.last_seen);
            if member.state == PeerState::Leaving
                && member
                    .leave_started
                    .is_some_and(|t| now.saturating_duration_since(t) >= config.leave_timeout)
            {
                tracing::warn!(%peer, name = %member.name, secs = config.leave_timeout.as_secs(), "a member did not finish leaving in time: counted as dead");
                events.push(MembershipEvent::StateChanged {
                    peer,
                    from: member.state,
                    to: PeerState::Dead,
                });
                member.state = PeerState::Dead;
                member.alive_since = None;
            }
            if member.state.is_announced_quiet()
                && member
                    .quiet_since
                    .is_some_and(|t| now.saturating_duration_since(t) >= config.dead_after)
            {
                events.push(MembershipEvent::StateChanged {
                    peer,
                    from: member.state,
                    to: PeerState::Dead,
                });
                member.state = PeerState::Dead;
                member.alive_since = None;
            }
            while let Some(to) = after_silence(member.state, silence, &config) {
                events.push(MembershipEvent::StateChanged {
                    peer,
                    from: member.state,
                    to,
                });
                member.state = to;
                member.alive_since = None;
                // Down since its last sign of life.
                member.down_since = member.down_since.or(Some(member.last_seen));
            }
            if member.state == PeerState::Alive {
                member.settle(now, config.dead_after);
            }
            let forget = matches!(member.state, PeerState::Dead | PeerState::Left)
                && silence >= config.forget_after;
            if forget {
                events.push(MembershipEvent::Forgotten(peer));
            }
            !forget
        });
        events
    }

    pub fn get(&self, peer: &PeerId) -> Option<&Member> {
        self.members.get(peer)
    }

    /// Drops `peer` from the view at once (it was expelled, or is not certified): it is no
    /// owner any more, so repair re-replicates what it held, and it holds back nothing. It
    /// comes back only with an announcement the caller accepts again. True when it was in
    /// the view.
    pub fn remove(&mut self, peer: &PeerId) -> bool {
        self.members.remove(peer).is_some()
    }

    /// Drops every member `keep` refuses (see [`Membership::remove`]); returns them.
    pub fn retain(&mut self, mut keep: impl FnMut(&PeerId) -> bool) -> Vec<PeerId> {
        let mut dropped = Vec::new();
        self.members.retain(|peer, _| {
            let k = keep(peer);
            if !k {
                dropped.push(*peer);
            }
            k
        });
        dropped
    }

    /// Announcements whose name was refused ([`crate::cluster::names::check_name`]), since
    /// start: the announcement is applied, its name ignored.
    pub fn refused_names(&self) -> u64 {
        self.refused_names
    }

    /// The name `peer` announced; empty when it is unknown or announced none (valid).
    pub fn name_of(&self, peer: &PeerId) -> &str {
        self.members.get(peer).map_or("", |m| m.name.as_str())
    }

    /// Whether `m` holds back garbage collection at `now`: it is suspect, dead or leaving
    /// (it may still write, or bring back what was deleted), and has been for less than
    /// `forget_after`, counted through short alive spells ([`Member::down_since`]). Past that
    /// it counts as gone, as if forgotten, whatever it announces.
    pub fn holds_back_gc(&self, m: &Member, now: Instant) -> bool {
        !matches!(m.state, PeerState::Alive | PeerState::Left)
            && m.down_since
                .is_none_or(|t| now.saturating_duration_since(t) < self.config.forget_after)
    }

    /// Every member in the view, by peer id.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// Peers that count for placement, with their capacity: alive and suspect ones. Leaves
    /// out the local node, whose capacity the caller knows first-hand and must add itself.
    pub fn placement_peers(&self) -> Vec<(PeerId, u64)> {
        self.members
            .values()
            .filter(|m| m.state.is_live())
            .map(|m| (m.peer, m.capacity))
            .collect()
    }

    /// Live peers whose announcements name another placement rule than this node's.
    pub fn peers_on_another_rule(&self) -> usize {
        self.members
            .values()
            .filter(|m| m.state.is_live() && m.placement_rule != crate::cluster::placement::RULE)
            .count()
    }

    /// How many other peers are alive or suspect.
    pub fn live_count(&self) -> usize {
        self.members.values().filter(|m| m.state.is_live()).count()
    }

    /// What this node announces as [`Announcement::knows`]: its live members, itself included.
    pub fn knows(&self) -> u32 {
        u32::try_from(self.live_count() + 1).unwrap_or(u32::MAX)
    }

    /// Whether `peer`, by its newest announcement, knows fewer live members than this node
    /// does: it may be missing this node, so it is worth an announcement. An unknown peer
    /// knows fewer.
    pub fn knows_fewer(&self, peer: &PeerId) -> bool {
        self.members
            .get(peer)
            .is_none_or(|m| m.knows < self.knows())
    }

    /// How often this node announces itself: the configured interval, stretched in a large
    /// network so the whole network sends at most [`NETWORK_ANNOUNCEMENTS_PER_SEC`] (each node
    /// then receives that many, whatever the size). Every node computes it from its own view;
    /// views that differ by a few members give nearly the same period.
    pub fn announce_period(&self) -> Duration {
        let members = self.live_count() as u32 + 1;
        self.config
            .announce_every
            .max(Duration::from_secs(1) * members / NETWORK_ANNOUNCEMENTS_PER_SEC)
    }

    /// The liveness thresholds in force: the configured ones, but never shorter than
    /// `SUSPECT_PERIODS` and `DEAD_PERIODS` announce periods, so a large network, whose
    /// members announce less often, does not mistake that for silence. (The cost: failure
    /// detection past 16 members takes longer, in proportion to the membership.)
    pub fn effective_liveness(&self) -> LivenessConfig {
        let period = self.announce_period();
        let suspect_after = self.config.suspect_after.max(period * SUSPECT_PERIODS);
        LivenessConfig {
            announce_every: period,
            suspect_after,
            dead_after: self
                .config
                .dead_after
                .max(period * DEAD_PERIODS)
                .max(suspect_after),
            forget_after: self.config.forget_after,
            leave_timeout: self.config.leave_timeout,
        }
    }
}

/// The state a peer silent for `silence` moves to from `state`, if any.
fn after_silence(
    state: PeerState,
    silence: Duration,
    config: &LivenessConfig,
) -> Option<PeerState> {
    match state {
        PeerState::Alive if silence >= config.suspect_after => Some(PeerState::Suspect),
        // Silence since it said it stopped or paused counts as silence after suspicion does: a
        // restart causes no repair, a node gone for long is repaired around as a dead one.
        PeerState::Suspect | PeerState::Offline | PeerState::Paused
            if silence >= config.dead_after =>
        {
            Some(PeerState::Dead)
        }
        PeerState::Leaving if silence >= config.dead_after => Some(PeerState::Left),
        _ => None,
    }
}

/// The first [`MAX_ADDRS`] addresses that parse, without loopback and link-local ones when
/// there are others (a node older than `net::reach::for_peers` announced them all); the rest
/// are dropped.
pub fn parse_addrs(addrs: &[String]) -> Vec<Multiaddr> {
    let parsed = addrs
        .iter()
        .filter_map(|s| s.parse().ok())
        .take(MAX_ADDRS)
        .collect();
    crate::net::reach::for_peers(parsed)
}

/// At most [`MAX_VERSION_CHARS`] characters, control characters removed so the string cannot
/// forge log lines or terminal output.
fn clean_version(version: &str) -> String {
    version
        .chars()
        .take(MAX_VERSION_CHARS)
        .filter(|c| !c.is_control())
        .collect()
}

#[cfg(test)]
mod tests {
    use libp2p::identity::Keypair;
    use proptest::prelude::*;

    use super::*;

    const SECOND: Duration = Duration::from_secs(1);
    const MILLI: Duration = Duration::from_millis(1);

    fn peer(index: u8) -> PeerId {
        Keypair::ed25519_from_bytes([index; 32])
            .expect("any 32 bytes are an ed25519 secret")
            .public()
            .to_peer_id()
    }

    fn announcement(peer: PeerId, seq: u64, state: AnnouncedState) -> Announcement {
        Announcement {
            peer: peer.to_bytes(),
            addrs: vec!["/ip4/10.0.0.1/tcp/4001".into()],
            capacity: 1 << 30,
            free: 1 << 29,
            version: "0.1.0".into(),
            state,
            seq,
            knows: 1,
            placement_rule: crate::cluster::placement::RULE,
            name: format!("node-{seq}"),
            cert: Vec::new(),
            user: None,
            recipient: String::new(),
        }
    }

    fn view() -> Membership {
        Membership::new(peer(0), LivenessConfig::default())
    }

    fn changed(peer: PeerId, from: PeerState, to: PeerState) -> MembershipEvent {
        MembershipEvent::StateChanged { peer, from, to }
    }

    #[test]
    fn announcement_joins() {
        let (mut view, t0, p) = (view(), Instant::now(), peer(1));
        let events = view.apply(&announcement(p, 1, AnnouncedState::Alive), t0);
        assert_eq!(events, Ok(vec![MembershipEvent::Joined(p)]));
        let member = view.get(&p).unwrap();
        assert_eq!(member.state, PeerState::Alive);
        assert_eq!(
            member.addrs,
            vec!["/ip4/10.0.0.1/tcp/4001".parse::<Multiaddr>().unwrap()]
        );
        assert_eq!((member.capacity, member.seq), (1 << 30, 1));
        assert_eq!(view.placement_peers(), vec![(p, 1 << 30)]);
        assert_eq!(view.live_count(), 1);
        assert_eq!(view.members().count(), 1);
    }

    #[test]
    fn stale_announcements_change_nothing() {
        let (mut view, t0, p) = (view(), Instant::now(), peer(1));
        view.apply(&announcement(p, 5, AnnouncedState::Alive), t0)
            .unwrap();
        for seq in [5, 4, 0] {
            let mut stale = announcement(p, seq, AnnouncedState::Left);
            stale.capacity = 7;
            assert_eq!(view.apply(&stale, t0 + 10 * SECOND), Ok(vec![]));
        }
        let member = view.get(&p).unwrap();
        assert_eq!(
            (member.state, member.capacity, member.seq),
            (PeerState::Alive, 1 << 30, 5)
        );
        assert_eq!(member.last_seen, t0);
    }

    #[test]
    fn newer_announcement_replaces_and_reports_state_change() {
        let (mut view, t0, p) = (view(), Instant::now(), peer(1));
        view.apply(&announcement(p, 1, AnnouncedState::Alive), t0)
            .unwrap();
        let mut update = announcement(p, 2, AnnouncedState::Alive);
        update.capacity = 42;
        assert_eq!(view.apply(&update, t0 + SECOND), Ok(vec![]));
        assert_eq!(view.get(&p).unwrap().capacity, 42);
        assert_eq!(
            view.apply(&announcement(p, 3, AnnouncedState::Leaving), t0 + SECOND),
            Ok(vec![changed(p, PeerState::Alive, PeerState::Leaving)])
        );
        assert!(view.placement_peers().is_empty());
    }

    /// A view of `n` live members besides the local node, all heard at `t0`.
    fn view_of(n: usize, config: LivenessConfig, t0: Instant) -> (Membership, Vec<PeerId>) {
        let mut view = Membership::new(peer(0), config);
        let peers: Vec<PeerId> = (0..n)
            .map(|i| {
                let mut secret = [7u8; 32];
                secret[..8].copy_from_slice(&(i as u64).to_le_bytes());
                Keypair::ed25519_from_bytes(secret)
                    .expect("any 32 bytes are an ed25519 secret")
                    .public()
                    .to_peer_id()
            })
            .collect();
        for p in &peers {
            view.apply(&announcement(*p, 1, AnnouncedState::Alive), t0)
                .unwrap();
        }
        (view, peers)
    }

    #[test]
    fn announce_period_keeps_the_network_wide_rate_flat() {
        let t0 = Instant::now();
        let config = LivenessConfig {
            dead_after: 10 * SECOND,
            ..LivenessConfig::default()
        };
        // Up to 16 members (15 peers and us): the configured 2 s, thresholds as configured.
        let (small, _) = view_of(15, config, t0);
        assert_eq!(small.announce_period(), 2 * SECOND);
        assert_eq!(small.effective_liveness(), config);
        for n in [31usize, 63, 255, 9_999] {
            let (view, _) = view_of(n, config, t0);
            let period = view.announce_period();
            // What the network sends per second: one announcement per member per period.
            let rate = (n + 1) as f64 / period.as_secs_f64();
            assert!(
                (rate - f64::from(NETWORK_ANNOUNCEMENTS_PER_SEC)).abs() < 1e-6,
                "{n} members: {rate} announcements/s"
            );
            let live = view.effective_liveness();
            assert_eq!(live.suspect_after, period * 3);
            assert_eq!(live.dead_after, period * 5);
        }
    }

    #[test]
    fn a_peer_that_knows_fewer_members_is_worth_an_answer() {
        let mut view = view();
        let t0 = Instant::now();
        let (a, b) = (peer(1), peer(2));
        assert!(view.knows_fewer(&a), "an unknown peer knows fewer");
        view.apply(&announcement(a, 1, AnnouncedState::Alive), t0)
            .unwrap();
        // We know a and ourselves: 2. a said it knows only itself.
        assert_eq!(view.knows(), 2);
        assert!(view.knows_fewer(&a));
        let mut caught_up = announcement(a, 2, AnnouncedState::Alive);
        caught_up.knows = 2;
        view.apply(&caught_up, t0).unwrap();
        assert!(!view.knows_fewer(&a));
        // A third member joins our view: a, as of its last word, lacks someone.
        view.apply(&announcement(b, 1, AnnouncedState::Alive), t0)
            .unwrap();
        assert!(view.knows_fewer(&a));
        // An older node does not send the field: it is always answered.
        let mut old = announcement(a, 3, AnnouncedState::Alive);
        old.knows = 0;
        view.apply(&old, t0).unwrap();
        assert!(view.knows_fewer(&a));
    }

    #[test]
    fn an_announcement_without_a_placement_rule_is_rule_1() {
        // What a node before rule 2 sent: the same fields, without `placement_rule`.
        #[derive(Serialize)]
        struct OldAnnouncement {
            peer: Vec<u8>,
            addrs: Vec<String>,
            capacity: u64,
            free: u64,
            version: String,
            state: AnnouncedState,
            seq: u64,
            knows: u32,
        }
        let a = peer(1);
        let mut bytes = Vec::new();
        ciborium::into_writer(
            &OldAnnouncement {
                peer: a.to_bytes(),
                addrs: vec![],
                capacity: 1 << 30,
                free: 0,
                version: "0.1.0".into(),
                state: AnnouncedState::Alive,
                seq: 1,
                knows: 1,
            },
            &mut bytes,
        )
        .unwrap();
        let old: Announcement = ciborium::from_reader(&bytes[..]).unwrap();
        assert_eq!(old.placement_rule, 1);
        // It still joins the view (the node only warns), and says which rule it is on.
        let mut view = view();
        view.apply(&old, Instant::now()).unwrap();
        let member = view.members().find(|m| m.peer == a).unwrap();
        assert_eq!(member.placement_rule, 1);
        // Nor did it announce a name.
        assert_eq!(member.name, "");
        assert_eq!(view.refused_names(), 0);
        assert_eq!(view.peers_on_another_rule(), 1);
        // Once it announces our rule (upgraded), the view is uniform again.
        view.apply(&announcement(a, 5, AnnouncedState::Alive), Instant::now())
            .unwrap();
        assert_eq!(view.peers_on_another_rule(), 0);
        // Ours round-trips.
        let ours = announcement(a, 2, AnnouncedState::Alive);
        let mut bytes = Vec::new();
        ciborium::into_writer(&ours, &mut bytes).unwrap();
        let back: Announcement = ciborium::from_reader(&bytes[..]).unwrap();
        assert_eq!(back.placement_rule, crate::cluster::placement::RULE);
    }

    #[test]
    fn a_large_view_waits_three_periods_before_suspecting() {
        let t0 = Instant::now();
        let config = LivenessConfig {
            dead_after: 10 * SECOND,
            ..LivenessConfig::default()
        };
        // 64 members: one announcement every 8 s from each.
        let (mut view, peers) = view_of(63, config, t0);
        assert_eq!(view.announce_period(), 8 * SECOND);
        // The configured 6 s of silence is less than one period: nobody is suspected yet.
        assert_eq!(view.tick(t0 + 23 * SECOND), vec![]);
        let events = view.tick(t0 + 24 * SECOND);
        assert_eq!(events.len(), peers.len());
        assert!(events.contains(&changed(peers[0], PeerState::Alive, PeerState::Suspect)));
        assert_eq!(view.tick(t0 + 40 * SECOND - MILLI), vec![]);
        assert_eq!(view.tick(t0 + 40 * SECOND).len(), peers.len());
    }

    /// A plain stop (and a pause) shows at once, but counts as silence does: the peer keeps
    /// its place until the dead-after time (a restart moves no data), then it is dead; it is
    /// back only by announcing itself, and holds back GC meanwhile.
    #[test]
    fn offline_and_paused_show_at_once_and_are_dead_at_the_dead_after_time() {
        for (announced, shown) in [
            (AnnouncedState::Offline, PeerState::Offline),
            (AnnouncedState::Paused, PeerState::Paused),
        ] {
            let (mut view, t0, p) = (view(), Instant::now(), peer(1));
            view.apply(&announcement(p, 1, AnnouncedState::Alive), t0)
                .unwrap();
            assert_eq!(
                view.apply(&announcement(p, 2, announced), t0 + SECOND),
                Ok(vec![changed(p, PeerState::Alive, shown)])
            );
            assert_eq!(view.get(&p).unwrap().state.as_str(), shown.as_str());
            assert_eq!(view.placement_peers(), vec![(p, 1 << 30)]);
            assert!(view.holds_back_gc(view.get(&p).unwrap(), t0 + SECOND));
            // A late message from it is no announcement of its return.
            assert_eq!(view.heard_from(&p, t0 + 2 * SECOND), vec![]);
            assert_eq!(view.tick(t0 + 30 * SECOND), vec![]);
            assert_eq!(
                view.tick(t0 + 62 * SECOND),
                vec![changed(p, shown, PeerState::Dead)]
            );
            assert!(view.placement_peers().is_empty());
            assert_eq!(
                view.apply(&announcement(p, 3, AnnouncedState::Alive), t0 + 70 * SECOND),
                Ok(vec![changed(p, PeerState::Dead, PeerState::Alive)])
            );
        }
    }

    /// Re-announcing `offline` (or `paused`, or switching between them) every second keeps
    /// no peer out of audit and repair: it is dead `dead_after` past its first such
    /// announcement, stays dead through further ones, and is alive (audited) only by
    /// announcing `alive` or by a sign of life once dead.
    #[test]
    fn a_peer_announcing_offline_every_second_is_dead_after_the_dead_after_time() {
        for (first, then) in [
            (AnnouncedState::Offline, AnnouncedState::Offline),
            (AnnouncedState::Paused, AnnouncedState::Offline),
        ] {
            let (mut view, t0, p) = (view(), Instant::now(), peer(1));
            view.apply(&announcement(p, 1, AnnouncedState::Alive), t0)
                .unwrap();
            view.apply(&announcement(p, 2, first), t0).unwrap();
            let mut dead_at = None;
            for s in 1..=90u32 {
                let now = t0 + s * SECOND;
                let mut events = view
                    .apply(&announcement(p, 2 + u64::from(s), then), now)
                    .unwrap();
                view.heard_from(&p, now);
                events.extend(view.tick(now));
                if events.iter().any(|e| {
                    matches!(
                        e,
                        MembershipEvent::StateChanged {
                            to: PeerState::Dead,
                            ..
                        }
                    )
                }) {
                    dead_at.get_or_insert(s);
                }
                if s >= 60 {
                    assert_eq!(view.get(&p).unwrap().state, PeerState::Dead, "at {s} s");
                    assert!(view.placement_peers().is_empty());
                }
            }
            assert_eq!(dead_at, Some(60));
            // Back only as alive, and audited as such.
            view.apply(
                &announcement(p, 1000, AnnouncedState::Alive),
                t0 + 91 * SECOND,
            )
            .unwrap();
            assert_eq!(view.get(&p).unwrap().state, PeerState::Alive);
            // A short alive spell does not restart the clock.
            view.apply(
                &announcement(p, 1001, AnnouncedState::Offline),
                t0 + 92 * SECOND,
            )
            .unwrap();
            assert_eq!(view.get(&p).unwrap().state, PeerState::Dead);
        }
    }

    #[test]
    fn silence_makes_suspect_then_dead_at_the_configured_times() {
        let (mut view, t0, p) = (view(), Instant::now(), peer(1));
        view.apply(&announcement(p, 1, AnnouncedState::Alive), t0)
            .unwrap();
        assert_eq!(view.tick(t0 + 6 * SECOND - MILLI), vec![]);
        assert_eq!(
            view.tick(t0 + 6 * SECOND),
            vec![changed(p, PeerState::Alive, PeerState::Suspect)]
        );
        // Suspect still holds its chunks.
        assert_eq!(view.placement_peers(), vec![(p, 1 << 30)]);
        assert_eq!(view.tick(t0 + 60 * SECOND - MILLI), vec![]);
        assert_eq!(
            view.tick(t0 + 60 * SECOND),
            vec![changed(p, PeerState::Suspect, PeerState::Dead)]
        );
        assert!(view.placement_peers().is_empty());
        assert_eq!(view.live_count(), 0);
    }

    #[test]
    fn a_late_tick_goes_through_every_state() {
        let (mut view, t0, p) = (view(), Instant::now(), peer(1));
        view.apply(&announcement(p, 1, AnnouncedState::Alive), t0)
            .unwrap();
        assert_eq!(
            view.tick(t0 + 2 * 60 * 60 * SECOND),
            vec![
                changed(p, PeerState::Alive, PeerState::Suspect),
                changed(p, PeerState::Suspect, PeerState::Dead),
                MembershipEvent::Forgotten(p),
            ]
        );
        assert!(view.get(&p).is_none());
    }

    #[test]
    fn sign_of_life_revives_suspect_and_dead_and_restarts_the_timers() {
        let (mut view, t0, p) = (view(), Instant::now(), peer(1));
        view.apply(&announcement(p, 1, AnnouncedState::Alive), t0)
            .unwrap();
        view.tick(t0 + 6 * SECOND);
        let t1 = t0 + 7 * SECOND;
        assert_eq!(
            view.heard_from(&p, t1),
            vec![changed(p, PeerState::Suspect, PeerState::Alive)]
        );
        assert_eq!(view.heard_from(&p, t1), vec![]);
        assert_eq!(view.tick(t1 + 6 * SECOND - MILLI), vec![]);
        view.tick(t1 + 60 * SECOND);
        assert_eq!(view.get(&p).unwrap().state, PeerState::Dead);
        assert_eq!(
            view.heard_from(&p, t1 + 61 * SECOND),
            vec![changed(p, PeerState::Dead, PeerState::Alive)]
        );
        assert_eq!(view.live_count(), 1);
    }

    #[test]
    fn sign_of_life_from_an_unknown_peer_adds_nothing() {
        let mut view = view();
        assert_eq!(view.heard_from(&peer(1), Instant::now()), vec![]);
        assert_eq!(view.members().count(), 0);
    }

    #[test]
    fn leaving_ends_in_left_by_announcement_or_silence() {
        let (mut view, t0) = (view(), Instant::now());
        let (a, b) = (peer(1), peer(2));
        for p in [a, b] {
            view.apply(&announcement(p, 1, AnnouncedState::Leaving), t0)
                .unwrap();
        }
        assert_eq!(
            view.apply(&announcement(a, 2, AnnouncedState::Left), t0 + SECOND),
            Ok(vec![changed(a, PeerState::Leaving, PeerState::Left)])
        );
        // Leaving is not suspected: it said it is going.
        assert_eq!(view.tick(t0 + 60 * SECOND - MILLI), vec![]);
        assert_eq!(view.heard_from(&b, t0), vec![]);
        assert_eq!(
            view.tick(t0 + 60 * SECOND),
            vec![changed(b, PeerState::Leaving, PeerState::Left)]
        );
        assert_eq!(view.live_count(), 0);
    }

    #[test]
    fn a_member_leaving_forever_is_dead_after_the_leave_timeout_and_stops_holding_back_gc() {
        let (mut view, t0) = (view(), Instant::now());
        let config = LivenessConfig::default();
        let p = peer(1);
        view.apply(&announcement(p, 1, AnnouncedState::Leaving), t0)
            .unwrap();
        let holds = |view: &Membership, t| view.holds_back_gc(view.get(&p).unwrap(), t);
        assert!(holds(&view, t0));
        // It keeps announcing `Leaving`, so silence never ends the leave.
        let mut seq = 2;
        let mut t = t0;
        while t + 10 * SECOND < t0 + config.leave_timeout {
            t += 10 * SECOND;
            assert_eq!(
                view.apply(&announcement(p, seq, AnnouncedState::Leaving), t),
                Ok(vec![])
            );
            seq += 1;
            assert_eq!(view.tick(t), vec![]);
        }
        assert_eq!(
            view.tick(t0 + config.leave_timeout),
            vec![changed(p, PeerState::Leaving, PeerState::Dead)]
        );
        // Still announcing `Leaving`, or any other sign of life: it stays dead.
        let later = t0 + config.leave_timeout + SECOND;
        assert_eq!(
            view.apply(&announcement(p, seq, AnnouncedState::Leaving), later),
            Ok(vec![])
        );
        assert_eq!(view.heard_from(&p, later), vec![]);
        assert_eq!(view.get(&p).unwrap().state, PeerState::Dead);
        assert_eq!(view.live_count(), 0);
        // It holds back garbage collection until it has been down for forget_after, however
        // often it announces.
        assert!(holds(&view, t0 + config.forget_after - MILLI));
        assert!(!holds(&view, t0 + config.forget_after));
        // Alive again is a new life.
        assert_eq!(
            view.apply(&announcement(p, seq + 1, AnnouncedState::Alive), later),
            Ok(vec![changed(p, PeerState::Dead, PeerState::Alive)])
        );
        assert!(!holds(&view, later));
    }

    #[test]
    fn a_member_flapping_between_leaving_and_alive_stops_holding_back_gc() {
        let (mut view, t0) = (view(), Instant::now());
        let config = LivenessConfig::default();
        let p = peer(1);
        let holds = |view: &Membership, t| view.holds_back_gc(view.get(&p).unwrap(), t);
        // Leaving for just under the leave timeout, one `Alive` announcement, and again.
        let mut seq = 0;
        let mut t = t0;
        let mut leave_began = t0;
        let mut held_at_end = None;
        while t < t0 + config.forget_after + config.leave_timeout {
            seq += 1;
            let state = if t.saturating_duration_since(leave_began) >= config.leave_timeout - SECOND
            {
                leave_began = t + 2 * SECOND;
                AnnouncedState::Alive
            } else {
                AnnouncedState::Leaving
            };
            view.apply(&announcement(p, seq, state), t).unwrap();
            view.tick(t);
            if state == AnnouncedState::Leaving {
                let m = view.get(&p).unwrap();
                // Its first leave timed out; later ones do not start over.
                if t >= t0 + config.leave_timeout {
                    assert_eq!(m.state, PeerState::Dead, "at {:?}", t - t0);
                }
                if t >= t0 + config.forget_after {
                    held_at_end = Some(holds(&view, t));
                }
            }
            t += 2 * SECOND;
        }
        assert_eq!(
            held_at_end,
            Some(false),
            "flapping held back GC past forget_after"
        );
        // Back for good: alive without a break for the dead-after time is a new life.
        let settled = t + config.dead_after;
        while t <= settled {
            seq += 1;
            view.apply(&announcement(p, seq, AnnouncedState::Alive), t)
                .unwrap();
            if t < settled {
                assert!(view.get(&p).unwrap().down_since.is_some());
            }
            view.tick(t);
            t += 2 * SECOND;
        }
        let m = view.get(&p).unwrap();
        assert_eq!((m.down_since, m.leave_started), (None, None));
        view.apply(&announcement(p, seq + 1, AnnouncedState::Leaving), settled)
            .unwrap();
        assert_eq!(view.get(&p).unwrap().state, PeerState::Leaving);
        assert!(holds(&view, settled + SECOND));
    }

    #[test]
    fn left_and_dead_are_forgotten_after_forget_after() {
        let (mut view, t0) = (view(), Instant::now());
        let (gone, dead, quiet_alive) = (peer(1), peer(2), peer(3));
        view.apply(&announcement(gone, 1, AnnouncedState::Left), t0)
            .unwrap();
        view.apply(&announcement(dead, 1, AnnouncedState::Alive), t0)
            .unwrap();
        view.tick(t0 + 60 * SECOND);
        let hour = 60 * 60 * SECOND;
        view.apply(
            &announcement(quiet_alive, 1, AnnouncedState::Alive),
            t0 + hour,
        )
        .unwrap();
        assert_eq!(view.tick(t0 + hour - MILLI), vec![]);
        // Events come in peer id order, like every listing of the view.
        let mut expected = vec![gone, dead];
        expected.sort();
        assert_eq!(
            view.tick(t0 + hour),
            expected
                .into_iter()
                .map(MembershipEvent::Forgotten)
                .collect::<Vec<_>>()
        );
        assert_eq!(
            view.members().map(|m| m.peer).collect::<Vec<_>>(),
            vec![quiet_alive]
        );
    }

    #[test]
    fn first_heard_left_is_remembered_without_joining() {
        let (mut view, t0, p) = (view(), Instant::now(), peer(1));
        assert_eq!(
            view.apply(&announcement(p, 9, AnnouncedState::Left), t0),
            Ok(vec![])
        );
        // A delayed older announcement does not bring it back.
        assert_eq!(
            view.apply(&announcement(p, 8, AnnouncedState::Alive), t0),
            Ok(vec![])
        );
        assert_eq!(view.live_count(), 0);
        // A newer one does: it came back.
        assert_eq!(
            view.apply(&announcement(p, 10, AnnouncedState::Alive), t0),
            Ok(vec![changed(p, PeerState::Left, PeerState::Alive)])
        );
    }

    #[test]
    fn announcements_about_the_local_node_are_ignored() {
        let mut view = view();
        let about_me = announcement(peer(0), 1, AnnouncedState::Alive);
        assert_eq!(view.apply(&about_me, Instant::now()), Ok(vec![]));
        assert_eq!(view.members().count(), 0);
    }

    #[test]
    fn invalid_peer_ids_are_rejected() {
        let mut view = view();
        let valid = peer(1).to_bytes();
        let mut trailing = valid.clone();
        trailing.push(0);
        for bytes in [
            vec![],
            vec![0xff; 3],
            vec![0; 1000],
            valid[..valid.len() - 1].to_vec(),
            trailing,
        ] {
            let mut a = announcement(peer(1), 1, AnnouncedState::Alive);
            a.peer = bytes;
            assert_eq!(
                view.apply(&a, Instant::now()),
                Err(MembershipError::BadPeerId)
            );
        }
        assert_eq!(view.members().count(), 0);
    }

    #[test]
    fn oversized_fields_are_capped() {
        let (mut view, p) = (view(), peer(1));
        let mut a = announcement(p, 1, AnnouncedState::Alive);
        a.addrs = (0..10_000u32)
            .map(|i| {
                if i % 2 == 0 {
                    format!("/ip4/10.0.{}.{}/tcp/4001", i / 256 % 256, i % 256)
                } else {
                    "not an address".repeat(i as usize % 5)
                }
            })
            .collect();
        a.version = "1.0\n".repeat(1 << 20);
        view.apply(&a, Instant::now()).unwrap();
        let member = view.get(&p).unwrap();
        assert_eq!(member.addrs.len(), MAX_ADDRS);
        assert_eq!(
            member.addrs[1],
            "/ip4/10.0.0.2/tcp/4001".parse::<Multiaddr>().unwrap()
        );
        assert_eq!(member.version, "1.0".repeat(MAX_VERSION_CHARS / 4));
    }

    #[test]
    fn a_valid_name_is_kept_and_follows_the_newest_announcement() {
        let (mut view, t0, p) = (view(), Instant::now(), peer(1));
        let mut a = announcement(p, 1, AnnouncedState::Alive);
        a.name = "laptop".into();
        view.apply(&a, t0).unwrap();
        assert_eq!(view.name_of(&p), "laptop");
        a.seq = 2;
        a.name = "Büro PC".into();
        view.apply(&a, t0).unwrap();
        assert_eq!(view.name_of(&p), "Büro PC");
        assert_eq!(view.name_of(&peer(2)), "");
        assert_eq!(view.refused_names(), 0);
    }

    #[test]
    fn a_hostile_name_is_refused_and_the_rest_of_the_announcement_applies() {
        let (mut view, t0, p) = (view(), Instant::now(), peer(1));
        let mut a = announcement(p, 1, AnnouncedState::Alive);
        a.name = "laptop".into();
        view.apply(&a, t0).unwrap();
        let hostile = [
            "x".repeat(10 * 1024),
            "laptop\n2026-12-06T08:00:00Z INFO peer joined".into(),
            "\u{1b}[2J\u{1b}[Hnas".into(),
            "pay\u{202e}lapot".into(),
            format!("{}\u{7}", "y".repeat(10)),
        ];
        for (i, name) in hostile.iter().enumerate() {
            let mut bad = announcement(p, 2 + i as u64, AnnouncedState::Alive);
            bad.name = name.clone();
            bad.capacity = 7 + i as u64;
            let shown: String = name.chars().take(24).collect();
            assert_eq!(view.apply(&bad, t0), Ok(vec![]), "{shown:?}");
            let m = view.get(&p).unwrap();
            // The claim is dropped, not kept from before: the peer's name is now unknown.
            assert!(
                m.name.is_empty(),
                "{shown:?} ({} bytes) was kept",
                name.len()
            );
            assert!(m.name_refused);
            assert_eq!(m.capacity, 7 + i as u64);
        }
        assert_eq!(view.refused_names(), hostile.len() as u64);
        // A valid name later is taken again.
        a.seq = 100;
        view.apply(&a, t0).unwrap();
        assert_eq!(view.name_of(&p), "laptop");
        assert!(!view.get(&p).unwrap().name_refused);
    }

    #[test]
    fn the_announced_user_and_recipient_are_kept_bounded_and_members_can_be_dropped() {
        let (mut view, t0, p) = (view(), Instant::now(), peer(1));
        let user = crate::identity::UserIdentity::generate();
        let mut a = announcement(p, 1, AnnouncedState::Alive);
        a.user = Some(user.user_id());
        a.recipient = user.recipient().to_string();
        view.apply(&a, t0).unwrap();
        let m = view.get(&p).unwrap();
        assert_eq!((m.user, m.recipient.clone()), (a.user, a.recipient.clone()));
        // Too long, or with control characters: dropped, the rest applies.
        for bad in ["x".repeat(MAX_RECIPIENT_CHARS + 1), "age1\nforged".into()] {
            a.seq += 1;
            a.recipient = bad;
            view.apply(&a, t0).unwrap();
            assert_eq!(view.get(&p).unwrap().recipient, "");
        }
        // Dropped (expelled, uncertified): gone at once, no sign of life brings it back.
        view.apply(&announcement(peer(2), 1, AnnouncedState::Alive), t0)
            .unwrap();
        assert!(view.remove(&p));
        assert!(!view.remove(&p));
        assert_eq!(view.heard_from(&p, t0), vec![]);
        assert!(view.get(&p).is_none());
        assert_eq!(view.retain(|q| *q != peer(2)), vec![peer(2)]);
        assert_eq!(view.live_count(), 0);
    }

    #[test]
    fn state_names_are_the_status_contract() {
        for (state, name) in [
            (PeerState::Alive, "alive"),
            (PeerState::Suspect, "suspect"),
            (PeerState::Dead, "dead"),
            (PeerState::Leaving, "leaving"),
            (PeerState::Left, "left"),
        ] {
            assert_eq!(state.to_string(), name);
            assert_eq!(
                serde_json::to_string(&state).unwrap(),
                format!("\"{name}\"")
            );
        }
    }

    fn arb_state() -> impl Strategy<Value = AnnouncedState> {
        prop_oneof![
            Just(AnnouncedState::Alive),
            Just(AnnouncedState::Leaving),
            Just(AnnouncedState::Left)
        ]
    }

    proptest! {
        #[test]
        fn hostile_announcements_never_panic_and_stay_bounded(
            peer_bytes in prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..80),
                (1u8..4).prop_map(|i| peer(i).to_bytes()),
            ],
            addrs in proptest::collection::vec(
                prop_oneof![any::<String>(), "/ip[46]/[0-9.:a-f]{0,20}/(tcp|udp)/[0-9]{1,6}"],
                0..40,
            ),
            version in any::<String>(),
            name in any::<String>(),
            capacity in any::<u64>(),
            seq in any::<u64>(),
            state in arb_state(),
            placement_rule in any::<u8>(),
            offsets in proptest::collection::vec(0u64..10_000, 1..6),
        ) {
            let mut view = view();
            let t0 = Instant::now();
            let a = Announcement { peer: peer_bytes, addrs, capacity, free: capacity / 2, version, state, seq, knows: 0, placement_rule, name, cert: Vec::new(), user: None, recipient: String::new() };
            match view.apply(&a, t0) {
                Ok(_) => {
                    for m in view.members() {
                        prop_assert!(m.addrs.len() <= MAX_ADDRS);
                        prop_assert!(m.version.chars().count() <= MAX_VERSION_CHARS);
                        prop_assert!(m.name.is_empty() || crate::cluster::names::check_name(&m.name).is_ok());
                    }
                }
                Err(e) => prop_assert_eq!(e, MembershipError::BadPeerId),
            }
            for offset in offsets {
                let now = t0 + Duration::from_secs(offset);
                view.tick(now);
                if let Ok(p) = PeerId::from_bytes(&a.peer) {
                    view.heard_from(&p, now);
                }
            }
            prop_assert!(view.live_count() <= 1);
        }
    }
}
