//! The object store: what a chunk is on the wire and on disk ([`chunk`]), where chunks live on
//! this node ([`store`]) and the in-memory cache of decrypted chunks ([`cache`]).

pub mod cache;
pub mod chunk;
pub mod proof;
pub mod store;

pub use cache::ChunkCache;
pub use chunk::{ChunkCodecError, ChunkId, ChunkKey, ChunkRef, ChunkSecret, PlainChunk};
pub use store::{ChunkStore, StoreError};
