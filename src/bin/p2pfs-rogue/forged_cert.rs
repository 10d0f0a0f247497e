//! `forged-cert`: a peer that holds the network key of a certified network but no certificate
//! of its own, and shows one it made up in the admission handshake:
//! - `self-signed`: a certificate for its own peer id, claiming the network's founder, signed
//!   by a user key it just made (nobody the founder let admit);
//! - `stolen`: a real member's certificate and ledger, taken from that member's
//!   `membership.cbor` (`--member-data-dir`), shown from the rogue's own peer id (it has the
//!   file, not the member's node key);
//! - `edited`: the stolen certificate with its peer id changed to the rogue's (the signature no
//!   longer matches).
//!
//! Each phase builds the hello with the library's own gate (the member's hello, as it would
//! send it) and edits only the `cert` field, so the rest of the hello is what a node sends. The
//! rogue admits whatever the node shows: the question is only whether the node admits it. It
//! prints `refused` (with the node's reason) or `granted`, then the usual `connect`.

use std::path::Path;
use std::sync::Arc;

use libp2p::{Multiaddr, PeerId};
use p2pfs::admission::Gate;
use p2pfs::admission::cert::{CertBody, NodeCert, NodeRole, Signed, now_unix};
use p2pfs::identity::{NetworkKey, UserIdentity};
use p2pfs::net::admit::Admission;
use serde_json::json;

use super::{Args, Rogue, emit};

/// Shows a fixed hello; admits the node whatever it shows; reports the node's verdict.
struct ShowHello {
    hello: Vec<u8>,
    phase: String,
}

impl Admission for ShowHello {
    fn hello(&self, _: &PeerId, _: bool) -> Vec<u8> {
        self.hello.clone()
    }

    fn check(&self, _: &PeerId, _: &[u8]) -> Result<Option<Vec<u8>>, String> {
        Ok(None)
    }

    fn granted(&self, remote: &PeerId, grant: &[u8]) {
        emit(
            json!({"event": "granted", "phase": self.phase, "peer": remote.to_string(),
            "bytes": grant.len()}),
        );
    }

    fn refused(&self, remote: &PeerId, reason: &str) {
        emit(
            json!({"event": "refused", "phase": self.phase, "peer": remote.to_string(),
            "reason": reason}),
        );
    }

    fn admits_plain(&self) -> bool {
        false
    }
}

/// `hello` with its `cert` field replaced by `cert`.
fn with_cert(hello: &[u8], cert: &NodeCert) -> Result<Vec<u8>, String> {
    let mut v: ciborium::Value = ciborium::from_reader(hello).map_err(|e| e.to_string())?;
    let map = v.as_map_mut().ok_or("a hello is a CBOR map")?;
    let slot = map
        .iter_mut()
        .find(|(k, _)| k.as_text() == Some("cert"))
        .ok_or("a hello has a cert field")?;
    slot.1 = ciborium::Value::serialized(&Some(cert)).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    ciborium::into_writer(&v, &mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// The hello `phase` shows, from the rogue's peer `me`.
fn forged_hello(
    phase: &str,
    me: &PeerId,
    target: &PeerId,
    member_dir: &Path,
) -> Result<Vec<u8>, String> {
    // The member's membership file opened as if it were the rogue's (a fresh user: a thief of
    // the file need not have the member's user key).
    // The gate reads its files at open and writes only on changes, which a hello is not.
    let scratch = std::env::temp_dir().join(format!("p2pfs-rogue-{}-{me}", std::process::id()));
    std::fs::create_dir_all(&scratch).map_err(|e| e.to_string())?;
    let file = p2pfs::admission::gate::MEMBERSHIP_FILE;
    let opened = std::fs::copy(member_dir.join(file), scratch.join(file))
        .map_err(|e| format!("{}: {e}", member_dir.join(file).display()))
        .and_then(|_| {
            Gate::open(&scratch, *me, &UserIdentity::generate(), "rogue").map_err(|e| e.to_string())
        });
    let _ = std::fs::remove_dir_all(&scratch);
    let gate = opened?;
    let stolen = gate
        .own_cert()
        .ok_or("the member's membership file holds no certificate")?;
    let hello = gate.hello(target);
    match phase {
        "stolen" => Ok(hello),
        "edited" => {
            let mut cert = stolen;
            cert.body.peer = me.to_bytes();
            with_cert(&hello, &cert)
        }
        _ => {
            let eve = UserIdentity::generate();
            let founder = gate.ledger().root().ok_or("the ledger has no founder")?;
            let cert: NodeCert = Signed::sign(
                CertBody {
                    network: founder,
                    peer: me.to_bytes(),
                    name: "rogue".into(),
                    user: eve.user_id(),
                    recipient: eve.recipient().to_string(),
                    role: NodeRole::Storage,
                    issued_at: now_unix(),
                },
                &eve,
            );
            with_cert(&hello, &cert)
        }
    }
}

pub async fn run(
    args: &Args,
    key: &NetworkKey,
    target_addr: &Multiaddr,
    target: PeerId,
    phases: &[String],
) -> Result<(), String> {
    let member_dir = args
        .member_data_dir
        .as_ref()
        .ok_or("forged-cert needs --member-data-dir")?;
    for phase in phases {
        let keypair = libp2p::identity::Keypair::generate_ed25519();
        let me = keypair.public().to_peer_id();
        let hello = forged_hello(phase, &me, &target, member_dir)?;
        let admission = Arc::new(ShowHello {
            hello,
            phase: phase.clone(),
        });
        let rogue = Rogue::start_admitting(keypair, key, target_addr, target, admission)?;
        emit(
            json!({"event": "start", "attack": "ForgedCert", "phase": phase,
            "peer_id": me.to_string()}),
        );
        for round in 1..=args.rounds {
            rogue.connect(phase, round).await;
        }
    }
    Ok(())
}
