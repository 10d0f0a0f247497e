//! What the membership commands (`invites`, `members`, `expel`, `admin`) show and act on,
//! read from the gate's ledger and invite book: rows for the listings, and a node named on the
//! command line resolved to one certificate.

use std::collections::HashMap;

use libp2p::PeerId;

use super::proto::{InviteInfo, MemberInfo};
use crate::admission::gate::short_user;
use crate::admission::invites::MadeInvite;
use crate::admission::{Ledger, NodeCert};
use crate::cluster::names::labels;
use crate::identity::UserId;

/// The rows of `p2pfs-ctl invites`, oldest first, with their state at `now` (unix seconds).
pub fn invite_rows(invites: &[MadeInvite], now: u64) -> Vec<InviteInfo> {
    invites
        .iter()
        .map(|i| {
            let used_by_peer = i.used.as_ref().map(|u| {
                PeerId::from_bytes(&u.peer).map_or_else(|_| hex::encode(&u.peer), |p| p.to_string())
            });
            let state = match &i.used {
                Some(u) => format!("used by {}", u.name),
                None if i.revoked => "revoked".into(),
                None if !i.is_open(now) => "expired".into(),
                None => "open".into(),
            };
            InviteInfo {
                id: i.id_hex(),
                role: i.role.as_str().to_string(),
                made_at: i.made_at,
                expires: i.expires,
                state,
                used_by_name: i.used.as_ref().map(|u| u.name.clone()),
                used_by_peer,
            }
        })
        .collect()
}

/// Display labels of every certified node by peer id, as `cluster::names::labels` makes them
/// for peers: a name more than one certificate carries gets a short peer id.
fn cert_labels(ledger: &Ledger) -> HashMap<String, String> {
    let ids: Vec<(String, String)> = ledger
        .certs()
        .filter_map(|c| Some((c.peer_id()?.to_string(), c.body.name.clone())))
        .collect();
    labels(ids.iter().map(|(id, name)| (id.as_str(), name.as_str())))
}

/// The label of the certified node `peer` (empty when it has no certificate).
pub fn label_of(ledger: &Ledger, peer: &PeerId) -> String {
    cert_labels(ledger)
        .remove(&peer.to_string())
        .unwrap_or_default()
}

/// The admins of the network, for a person: each user with the labels of its nodes
/// (`home (user 0a1b2c3d4e5f)`), the founder first.
pub fn admins_named(ledger: &Ledger) -> String {
    let labels = cert_labels(ledger);
    ledger
        .admins()
        .iter()
        .map(|user| {
            let mut nodes: Vec<&String> = ledger
                .certs()
                .filter(|c| c.body.user == *user)
                .filter_map(|c| labels.get(&c.peer_id()?.to_string()))
                .collect();
            nodes.sort();
            let nodes: Vec<&str> = nodes.iter().map(|l| l.as_str()).collect();
            if nodes.is_empty() {
                format!("user {}", short_user(user))
            } else {
                format!("{} (user {})", nodes.join(", "), short_user(user))
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// What `p2pfs-ctl expel` says once `peer` (labelled `label`) is revoked: with the number of
/// the key epoch made, or the error that kept the key from being rotated (then `Err`).
pub fn expelled_message(
    label: &str,
    peer: &PeerId,
    epoch: Result<usize, String>,
) -> Result<String, String> {
    let done = format!(
        "expelled {label} ({}): its connections are closed, it cannot reconnect",
        crate::cluster::names::short_id(&peer.to_string())
    );
    match epoch {
        Ok(n) => Ok(format!(
            "{done}; network key rotated (epoch {n}); volumes its user could read are re-keyed \
             by their owners' nodes"
        )),
        Err(e) => Err(format!(
            "{done}; but the network key could not be rotated: {e}"
        )),
    }
}

/// The rows of `p2pfs-ctl members`: every certificate of the ledger, with the node's state:
/// `expelled` when revoked, else its state in `states` (this node's view, by peer id; `local`
/// is alive), else `not seen`. Sorted by label.
pub fn member_rows(
    ledger: &Ledger,
    states: &HashMap<String, String>,
    local: &PeerId,
) -> Vec<MemberInfo> {
    let labels = cert_labels(ledger);
    let label_of_user = |user: &UserId| -> String {
        let mut of_user: Vec<&String> = ledger
            .certs()
            .filter(|c| c.body.user == *user)
            .filter_map(|c| labels.get(&c.peer_id()?.to_string()))
            .collect();
        of_user.sort();
        of_user
            .first()
            .map_or_else(|| short_user(user), |l| l.to_string())
    };
    let mut rows: Vec<MemberInfo> = ledger
        .certs()
        .filter_map(|c| {
            let peer = c.peer_id()?;
            let id = peer.to_string();
            let state = if ledger.is_revoked(&peer) {
                "expelled".to_string()
            } else if peer == *local {
                "alive".to_string()
            } else {
                states
                    .get(&id)
                    .cloned()
                    .unwrap_or_else(|| "not seen".to_string())
            };
            Some(MemberInfo {
                name: labels.get(&id).cloned().unwrap_or_default(),
                peer_id: id,
                user: c.body.user.to_string(),
                role: c.body.role.as_str().to_string(),
                admin: ledger.is_admin(&c.body.user),
                admitted_by: c.by.to_string(),
                admitted_by_name: label_of_user(&c.by),
                since: c.body.issued_at,
                state,
            })
        })
        .collect();
    rows.sort_by(|a, b| (&a.name, &a.peer_id).cmp(&(&b.name, &b.peer_id)));
    rows
}

/// What a node named on the command line turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Node(PeerId),
    /// A user id given as such (64 hex digits), only where users are accepted.
    User(UserId),
}

/// Resolves `given` (a peer id, a node's label or certificate name, and with `users` a user id
/// in hex) to one certified node. Unknown or ambiguous: `Err` with the candidates.
pub fn resolve(ledger: &Ledger, given: &str, users: bool) -> Result<Target, String> {
    let given = given.trim();
    let certs: Vec<(PeerId, &NodeCert)> = ledger
        .certs()
        .filter_map(|c| Some((c.peer_id()?, c)))
        .collect();
    if let Some((peer, _)) = certs.iter().find(|(p, _)| p.to_string() == given) {
        return Ok(Target::Node(*peer));
    }
    if users && given.len() == 64 {
        let mut bytes = [0u8; 32];
        if hex::decode_to_slice(given, &mut bytes).is_ok() {
            return Ok(Target::User(UserId(bytes)));
        }
    }
    let labels = cert_labels(ledger);
    let shown = |peer: &PeerId| {
        let id = peer.to_string();
        format!("{} ({id})", labels.get(&id).cloned().unwrap_or_default())
    };
    if let Some((peer, _)) = certs
        .iter()
        .find(|(p, _)| labels.get(&p.to_string()).is_some_and(|l| l == given))
    {
        return Ok(Target::Node(*peer));
    }
    let mut named: Vec<PeerId> = certs
        .iter()
        .filter(|(_, c)| c.body.name == given)
        .map(|(p, _)| *p)
        .collect();
    named.sort_by_key(|p| p.to_string());
    match named.as_slice() {
        [one] => Ok(Target::Node(*one)),
        [] => {
            let mut all: Vec<String> = certs.iter().map(|(p, _)| shown(p)).collect();
            all.sort();
            Err(format!(
                "no certified node is called {given:?}; the certified nodes: {}",
                all.join(", ")
            ))
        }
        many => Err(format!(
            "{} certified nodes are called {given:?}: {}; name one by its peer id",
            many.len(),
            many.iter().map(shown).collect::<Vec<_>>().join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::cert::{CertBody, LedgerRecord, NodeRole, Signed};
    use crate::admission::invites::InviteBook;
    use crate::identity::UserIdentity;

    fn cert(
        founder: &UserIdentity,
        signer: &UserIdentity,
        user: &UserIdentity,
        name: &str,
    ) -> (PeerId, LedgerRecord) {
        let peer = PeerId::random();
        let c = Signed::sign(
            CertBody {
                network: founder.user_id(),
                peer: peer.to_bytes(),
                name: name.into(),
                user: user.user_id(),
                recipient: user.recipient().to_string(),
                role: NodeRole::Storage,
                issued_at: 50,
            },
            signer,
        );
        (peer, LedgerRecord::Cert(c))
    }

    /// A ledger with the founder's node `home`, two nodes called `laptop` and one `nas`.
    struct Net {
        ledger: Ledger,
        founder: UserIdentity,
        home: PeerId,
        laptops: [PeerId; 2],
        nas: PeerId,
        nas_user: UserIdentity,
    }

    fn net() -> Net {
        let founder = UserIdentity::generate();
        let nas_user = UserIdentity::generate();
        let mut ledger = Ledger::new(founder.user_id());
        let mut add = |(peer, rec): (PeerId, LedgerRecord)| {
            ledger.merge(rec).unwrap();
            peer
        };
        let home = add(cert(&founder, &founder, &founder, "home"));
        let l1 = add(cert(
            &founder,
            &founder,
            &UserIdentity::generate(),
            "laptop",
        ));
        let l2 = add(cert(
            &founder,
            &founder,
            &UserIdentity::generate(),
            "laptop",
        ));
        let nas = add(cert(&founder, &founder, &nas_user, "nas"));
        Net {
            ledger,
            founder,
            home,
            laptops: [l1, l2],
            nas,
            nas_user,
        }
    }

    #[test]
    fn a_node_is_named_by_peer_id_label_or_unique_name() {
        let n = net();
        let l = &n.ledger;
        assert_eq!(resolve(l, "nas", false), Ok(Target::Node(n.nas)));
        assert_eq!(
            resolve(l, &n.laptops[1].to_string(), false),
            Ok(Target::Node(n.laptops[1]))
        );
        // The label `laptop (12D3…abcd)` that status and members show names one of them.
        let label = format!(
            "laptop ({})",
            crate::cluster::names::short_id(&n.laptops[0].to_string())
        );
        assert_eq!(resolve(l, &label, false), Ok(Target::Node(n.laptops[0])));
        // Two nodes called laptop: ambiguous, both listed with their peer ids.
        let err = resolve(l, "laptop", false).unwrap_err();
        assert!(
            err.contains("2 certified nodes are called \"laptop\""),
            "{err}"
        );
        for p in n.laptops {
            assert!(err.contains(&p.to_string()), "{err}");
        }
        // Unknown: every candidate listed.
        let err = resolve(l, "desk", false).unwrap_err();
        assert!(
            err.contains("no certified node is called \"desk\""),
            "{err}"
        );
        for p in [n.home, n.nas] {
            assert!(err.contains(&p.to_string()), "{err}");
        }
        // A user id only where users are accepted (`admin`); else it is an unknown name.
        let user = n.nas_user.user_id().to_string();
        assert_eq!(
            resolve(l, &user, true),
            Ok(Target::User(n.nas_user.user_id()))
        );
        assert!(resolve(l, &user, false).is_err());
        assert_eq!(resolve(l, "home", true), Ok(Target::Node(n.home)));
        // Admins are named by their nodes.
        assert_eq!(
            admins_named(l),
            format!("home (user {})", short_user(&n.founder.user_id()))
        );
    }

    #[test]
    fn expel_says_what_happened_in_one_line() {
        let peer = PeerId::random();
        let short = crate::cluster::names::short_id(&peer.to_string());
        assert_eq!(
            expelled_message("nas", &peer, Ok(2)),
            Ok(format!(
                "expelled nas ({short}): its connections are closed, it cannot reconnect; network \
                 key rotated (epoch 2); volumes its user could read are re-keyed by their owners' \
                 nodes"
            ))
        );
        let failed = expelled_message("nas", &peer, Err("no recipient".into())).unwrap_err();
        assert!(
            failed.ends_with("reconnect; but the network key could not be rotated: no recipient")
        );
        assert!(!failed.contains("  "), "{failed}");
    }

    #[test]
    fn members_show_labels_admins_who_admitted_them_and_their_state() {
        let n = net();
        let mut ledger = n.ledger.clone();
        let revocation = Signed::sign(
            crate::admission::cert::RevocationBody {
                network: n.founder.user_id(),
                peer: n.laptops[0].to_bytes(),
                at: 60,
            },
            &n.founder,
        );
        ledger.merge(LedgerRecord::Revocation(revocation)).unwrap();
        let states: HashMap<String, String> = [(n.nas.to_string(), "suspect".to_string())].into();
        let rows = member_rows(&ledger, &states, &n.home);
        assert_eq!(rows.len(), 4);
        let row = |p: &PeerId| rows.iter().find(|r| r.peer_id == p.to_string()).unwrap();
        let home = row(&n.home);
        assert_eq!((home.name.as_str(), home.state.as_str()), ("home", "alive"));
        assert!(home.admin);
        assert_eq!(home.admitted_by, n.founder.user_id().to_string());
        assert_eq!(home.admitted_by_name, "home");
        let nas = row(&n.nas);
        assert_eq!((nas.state.as_str(), nas.admin), ("suspect", false));
        assert_eq!(nas.admitted_by_name, "home");
        assert_eq!((nas.role.as_str(), nas.since), ("storage", 50));
        assert_eq!(row(&n.laptops[0]).state, "expelled");
        assert_eq!(row(&n.laptops[1]).state, "not seen");
        assert!(row(&n.laptops[1]).name.starts_with("laptop ("));
        // Sorted by label.
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
    }

    #[test]
    fn invites_are_open_used_expired_or_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let mut book = InviteBook::open(&dir.path().join("invites.cbor")).unwrap();
        let open = book.add(&[1; 32], NodeRole::Reader, 100, None).unwrap();
        let used = book
            .add(&[2; 32], NodeRole::Storage, 100, Some(1000))
            .unwrap();
        book.add(&[3; 32], NodeRole::Storage, 100, Some(150))
            .unwrap();
        let revoked = book.add(&[4; 32], NodeRole::Storage, 100, None).unwrap();
        let peer = PeerId::random();
        book.redeem(
            &used.id,
            &crate::admission::invites::redemption_proof(&[2; 32], &peer),
            &peer,
            "desk",
            120,
        )
        .unwrap();
        book.revoke(&revoked.id_hex()).unwrap();
        let rows = invite_rows(book.list(), 200);
        let states: Vec<&str> = rows.iter().map(|r| r.state.as_str()).collect();
        assert_eq!(states, ["open", "used by desk", "expired", "revoked"]);
        assert_eq!(rows[0].id, open.id_hex());
        assert_eq!((rows[0].role.as_str(), rows[0].expires), ("reader", None));
        assert_eq!(rows[1].used_by_name.as_deref(), Some("desk"));
        assert_eq!(rows[1].used_by_peer, Some(peer.to_string()));
        assert_eq!((rows[2].made_at, rows[2].expires), (100, Some(150)));
        // Before its expiry the third was open.
        assert_eq!(invite_rows(book.list(), 140)[2].state, "open");
    }
}
