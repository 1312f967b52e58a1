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

use std::fmt;

use std::path::Path;

use lb_common::{
    names, NodeEntry, CLOSED_REPLY_KERNEL, CLOSED_REPLY_XDP, NODE_CLOSED, NODE_DRAINING,
    NODE_SERVING,
};

use super::{error::map_err, gateway::Dataplane, DataplaneError};

/// Where the node is in its lifecycle, as the kernel sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum NodeState {
    /// Normal operation.
    Serving,
    /// Shutting down but still serving new connections (readiness already says not ready).
    Draining,
    /// New connections to edge VIPs are refused with a RST in XDP.
    Closed,
}

impl NodeState {
    pub const ALL: [NodeState; 3] = [NodeState::Serving, NodeState::Draining, NodeState::Closed];

    /// The value stored in the node map.
    pub const fn code(self) -> u8 {
        match self {
            NodeState::Serving => NODE_SERVING,
            NodeState::Draining => NODE_DRAINING,
            NodeState::Closed => NODE_CLOSED,
        }
    }

    pub const fn from_code(code: u8) -> Option<NodeState> {
        match code {
            NODE_SERVING => Some(NodeState::Serving),
            NODE_DRAINING => Some(NodeState::Draining),
            NODE_CLOSED => Some(NodeState::Closed),
            _ => None,
        }
    }

    /// Stable lowercase name for status output and logs.
    pub const fn name(self) -> &'static str {
        match self {
            NodeState::Serving => "serving",
            NodeState::Draining => "draining",
            NodeState::Closed => "closed",
        }
    }
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Dataplane {
    /// Tells `sluice_xdp` the node's state; takes effect with the next packet.
    pub fn set_node_state(&mut self, state: NodeState) -> Result<(), DataplaneError> {
        let entry = NodeEntry {
            state: state.code(),
            closed_reply: self.closed_reply.code(),
            _pad: [0; 2],
        };
        self.node.set(0, entry, 0).map_err(map_err(names::NODE))
    }

    /// The node's state as the kernel map holds it.
    pub fn node_state(&self) -> Result<NodeState, DataplaneError> {
        let entry = self.node.get(&0, 0).map_err(map_err(names::NODE))?;
        NodeState::from_code(entry.state).ok_or(DataplaneError::BadNodeState(entry.state))
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
        let entry = NodeEntry {
            state: state.code(),
            closed_reply: self.closed_reply.code(),
            _pad: [0; 2],
        };
        self.map.set(0, entry, 0).map_err(map_err(names::NODE))
    }
}

impl Dataplane {
    /// A handle on the node map for [`NodeSwitch::set`]; take it once every interface is
    /// attached (who answers a closed node's SYNs depends on them).
    pub fn node_switch(&self) -> Result<NodeSwitch, DataplaneError> {
        use aya::maps::IterableMap as _;
        use std::os::fd::AsFd as _;
        let io = |error| DataplaneError::MapIo {
            name: names::NODE,
            what: "duplicating its fd",
            error,
        };
        let fd = self
            .node
            .map()
            .fd()
            .as_fd()
            .try_clone_to_owned()
            .map_err(io)?;
        let data = aya::maps::MapData::from_fd(fd).map_err(map_err(names::NODE))?;
        let map = aya::maps::Array::try_from(aya::maps::Map::Array(data))
            .map_err(map_err(names::NODE))?;
        Ok(NodeSwitch {
            map,
            closed_reply: self.closed_reply,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::NodeState;

    #[test]
    fn codes_round_trip_and_match_the_kernel_constants() {
        for (s, code, name) in [
            (NodeState::Serving, 0, "serving"),
            (NodeState::Draining, 1, "draining"),
            (NodeState::Closed, 2, "closed"),
        ] {
            assert_eq!(s.code(), code);
            assert_eq!(NodeState::from_code(code), Some(s));
            assert_eq!(s.to_string(), name);
        }
        assert_eq!(NodeState::from_code(3), None);
    }
}
