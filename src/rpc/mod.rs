//! Peer-to-peer protocols on top of libp2p streams: length-prefixed CBOR frames with hard size
//! limits ([`frame`]) and the chunk transfer protocol ([`chunk`]).

pub mod chunk;
pub mod counters;
pub mod frame;
pub mod sync;
