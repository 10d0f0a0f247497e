//! The admission handshake's contract: after Noise, before any other protocol, each side sends
//! a hello and decides on the other's. The network layer moves the bytes; what they mean (node
//! certificates, invites) is the implementor's.

use libp2p::PeerId;

/// Decides who may connect. Called from the transport upgrade of every connection.
pub trait Admission: Send + Sync + 'static {
    /// What this node sends to `remote`.
    fn hello(&self, remote: &PeerId, dialer: bool) -> Vec<u8>;
    /// Decides on `remote`'s hello: `Ok(Some(grant))` admits it and hands it `grant`;
    /// `Err(reason)` refuses it, and `reason` is sent to it.
    fn check(&self, remote: &PeerId, hello: &[u8]) -> Result<Option<Vec<u8>>, String>;
    /// `remote` admitted this node and handed it `grant`.
    fn granted(&self, remote: &PeerId, grant: &[u8]);
    /// `remote` refused this node, saying `reason`.
    fn refused(&self, remote: &PeerId, reason: &str);
}
