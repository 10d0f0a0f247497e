//! Admission to a certified network: node certificates chained to the founder, admin grants,
//! revocations, key epochs ([`cert`]); the ledger that checks and keeps them ([`ledger`]);
//! the invites this node made ([`invites`]); and the gate that answers the network handshake
//! with all of it ([`gate`]). Pure logic and files: the network layer calls the gate through
//! its `Admission` trait, knowing no certificate format.

pub mod cert;
pub mod gate;
pub mod invites;
pub mod ledger;
pub mod names;

pub use cert::{LedgerRecord, NodeCert, NodeRole};
pub use gate::{Gate, GateError, GateEvent, Mode};
pub use ledger::{Ledger, Merged};
