//! The node's own state in the kernel (`sluice_node_v1`): graceful shutdown walks it from
//! `serving` through `draining` to `closed`, and once it is `closed` every new connection to an
//! edge VIP is refused with a TCP RST (L4 VIPs keep forwarding).
//!
//! Who builds that RST depends on the interfaces: `sluice_xdp` builds it and sends it with
//! `XDP_TX`, unless some interface is a virtual device in native mode. There (a veth, most
//! often: containers, VMs) an `XDP_TX` frame reaches the peer only if the peer runs an XDP
//! program too, and is silently lost otherwise; the SYN would be retransmitted for as long as
//! the node stays closed. On such a node `sluice_xdp` passes the SYN on and the kernel answers
//! it, since the listener has closed by then. Either way every SYN gets an answer.

use std::path::Path;

use lb_common::{
    names, NodeEntry, CLOSED_REPLY_KERNEL, CLOSED_REPLY_XDP, NODE_CLOSED, NODE_DRAINING,
    NODE_SERVING,
};

use super::{error::map_err, maps::Arr, DataplaneError};
use crate::shutdown::NodeState;

/// The value the node map stores for `state`.
const fn code(state: NodeState) -> u8 {
    match state {
        NodeState::Serving => NODE_SERVING,
        NodeState::Draining => NODE_DRAINING,
        NodeState::Closed => NODE_CLOSED,
    }
}

/// The state a node map value stands for.
pub(super) const fn from_code(code: u8) -> Option<NodeState> {
    match code {
        NODE_SERVING => Some(NodeState::Serving),
        NODE_DRAINING => Some(NodeState::Draining),
        NODE_CLOSED => Some(NodeState::Closed),
        _ => None,
    }
}

/// The node map's entry for `state`, with `reply` answering a closed node's SYNs.
pub(super) const fn entry(state: NodeState, reply: ClosedReply) -> NodeEntry {
    NodeEntry {
        state: code(state),
        closed_reply: reply.code(),
        _pad: [0; 2],
    }
}

/// Who answers a closed node's SYNs (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClosedReply {
    /// `sluice_xdp` builds the RST and sends it with `XDP_TX`.
    #[default]
    Xdp,
    /// The kernel's TCP stack, once the listener has closed.
    Kernel,
}

impl ClosedReply {
    const fn code(self) -> u8 {
        match self {
            ClosedReply::Xdp => CLOSED_REPLY_XDP,
            ClosedReply::Kernel => CLOSED_REPLY_KERNEL,
        }
    }

    /// What an interface attached in `native` mode allows: `XDP_TX` is reliable on a device
    /// with a driver of its own (a NIC, virtio), not on a virtual one (veth, whose peer must
    /// run XDP too). In skb mode every device transmits `XDP_TX` frames through the stack.
    pub fn for_interface(iface: &str, native: bool) -> ClosedReply {
        let has_device = Path::new("/sys/class/net")
            .join(iface)
            .join("device")
            .exists();
        if native && !has_device {
            ClosedReply::Kernel
        } else {
            ClosedReply::Xdp
        }
    }

    /// Kernel as soon as one interface needs it: the node map is shared by every interface.
    #[must_use]
    pub fn and(self, other: ClosedReply) -> ClosedReply {
        if self == ClosedReply::Kernel || other == ClosedReply::Kernel {
            ClosedReply::Kernel
        } else {
            ClosedReply::Xdp
        }
    }
}

/// The node map on a handle of its own, so a phase change never waits for the daemon's lock
/// (SIGTERM must turn readiness to 503 at once, whatever holds the lock).
pub struct NodeSwitch {
    map: aya::maps::Array<aya::maps::MapData, NodeEntry>,
    closed_reply: ClosedReply,
}

impl NodeSwitch {
    pub fn set(&mut self, state: NodeState) -> Result<(), DataplaneError> {
        self.map
            .set(0, entry(state, self.closed_reply), 0)
            .map_err(map_err(names::NODE))
    }

    /// A handle of its own on `node`, the node map, whose closed SYNs `closed_reply` answers.
    pub(super) fn open(
        node: &Arr<NodeEntry>,
        closed_reply: ClosedReply,
    ) -> Result<NodeSwitch, DataplaneError> {
        use std::os::fd::AsFd as _;
        let io = |error| DataplaneError::MapIo {
            name: names::NODE,
            what: "duplicating its fd",
            error,
        };
        let fd = aya::maps::IterableMap::map(node)
            .fd()
            .as_fd()
            .try_clone_to_owned()
            .map_err(io)?;
        let data = aya::maps::MapData::from_fd(fd).map_err(map_err(names::NODE))?;
        let map = aya::maps::Array::try_from(aya::maps::Map::Array(data))
            .map_err(map_err(names::NODE))?;
        Ok(NodeSwitch { map, closed_reply })
    }
}

#[cfg(test)]
mod tests {
    use super::{code, from_code, NodeState};

    #[test]
    fn codes_round_trip_and_match_the_kernel_constants() {
        for (s, value, name) in [
            (NodeState::Serving, 0, "serving"),
            (NodeState::Draining, 1, "draining"),
            (NodeState::Closed, 2, "closed"),
        ] {
            assert_eq!(code(s), value);
            assert_eq!(from_code(value), Some(s));
            assert_eq!(s.to_string(), name);
        }
        assert_eq!(from_code(3), None);
    }
}
