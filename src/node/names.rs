//! Node names for the filesystem: conflict names show the node that wrote a losing version,
//! which entries know only by its origin tag. The membership view knows the names; this plugs
//! it into the mount ([`crate::fs::Mount::set_node_names`]).

use std::sync::Weak;

use crate::cluster::Cluster;
use crate::namespace::entry::node_tag;
use crate::namespace::view::NodeNames;

/// The name of a node by its origin tag: its display label in this node's view (its name,
/// with a short peer id when several nodes claim it), this node's own included.
pub struct MemberNames(pub Weak<Cluster>);

impl NodeNames for MemberNames {
    fn name_of(&self, origin: u64) -> Option<String> {
        self.0
            .upgrade()?
            .labels()
            .into_iter()
            .find_map(|(id, label)| {
                let peer: libp2p::PeerId = id.parse().ok()?;
                (node_tag(&peer.to_bytes()) == origin).then_some(label)
            })
    }
}
