//! The operator's side of the admin protocol (`coraft_net::admin`): a
//! blocking [`AdminClient`] for one node, and the leader [`plan_rebalance`]
//! that `coraft-admin rebalance` executes. The node side is
//! `runtime/admin.rs`; the CLI (`src/bin/coraft-admin.rs`) is a thin layer of
//! arguments and tables over this module.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use coraft_net::admin::{AdminReply, AdminRequestFrame, AdminResponseFrame};
use coraft_net::{BlockingConnection, Hello, NetError, Refusal, Role as NetRole};

use crate::raft::{GroupId, NodeId};

pub use coraft_net::admin::{
    AdminError, AdminRequest, AdminRole, GroupReport, MemberSpec, NodeReport, PeerReport, ADMIN_PROTOCOL_VERSION,
    ADMIN_STATUS_GROUPS_MAX,
};

/// Why an admin call to one node failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminCallError {
    /// Nothing answers at the address (refused, unroutable, no handshake
    /// answer in time).
    #[error("cannot reach a node at {address}: {reason}")]
    Unreachable {
        /// Where the tool tried.
        address: SocketAddr,
        /// What the socket said.
        reason: String,
    },
    /// The node belongs to another cluster: it refused the handshake.
    #[error("the node at {address} belongs to cluster {node_cluster}, not to cluster {expected} (check --cluster-id)")]
    ForeignCluster {
        /// Where the node listens.
        address: SocketAddr,
        /// The cluster the tool was told to talk to.
        expected: u64,
        /// The node's cluster.
        node_cluster: u64,
    },
    /// The node refused the handshake for another reason (wire version).
    #[error("the node at {address} refused the connection: {reason}")]
    Refused {
        /// Where the node listens.
        address: SocketAddr,
        /// Its reason.
        reason: String,
    },
    /// The node answered with a typed error.
    #[error("node {node} at {address}: {error}")]
    Node {
        /// Where the node listens.
        address: SocketAddr,
        /// The node.
        node: NodeId,
        /// Its answer.
        error: AdminError,
    },
    /// The connection broke or carried something unexpected; the outcome
    /// of the request is unknown.
    #[error("node at {address}: {reason}")]
    Transport {
        /// Where the node listens.
        address: SocketAddr,
        /// What went wrong.
        reason: String,
    },
}

/// A blocking connection to one node for admin requests.
pub struct AdminClient {
    connection: BlockingConnection,
    address: SocketAddr,
    cluster_id: u64,
    node: NodeId,
    next_request: u64,
    timeout: Duration,
}

impl std::fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminClient")
            .field("address", &self.address)
            .field("node", &self.node)
            .finish()
    }
}

impl AdminClient {
    /// Connects to the node listening at `address` (any of its shards'
    /// addresses), as a tool of cluster `cluster_id`; `timeout` bounds the
    /// connection and each later call.
    pub fn connect(address: SocketAddr, cluster_id: u64, timeout: Duration) -> Result<AdminClient, AdminCallError> {
        let hello = Hello {
            cluster_id,
            node_id: 0,
            shard_id: 0,
            target_shard_id: 0,
            target_node_id: 0,
            role: NetRole::Client,
        };
        let mut connection = BlockingConnection::connect(address, &hello, timeout);
        if let Err(NetError::Refused {
            refusal: Refusal::WrongShard { expected, .. },
        }) = connection
        {
            // Dialled another shard's port of the node: ask for that shard.
            let hello = Hello {
                target_shard_id: expected,
                ..hello
            };
            connection = BlockingConnection::connect(address, &hello, timeout);
        }
        let connection = connection.map_err(|error| match error {
            NetError::Refused {
                refusal: Refusal::ForeignCluster { expected, .. },
            } => AdminCallError::ForeignCluster {
                address,
                expected: cluster_id,
                node_cluster: expected,
            },
            NetError::Refused { refusal } => AdminCallError::Refused {
                address,
                reason: refusal.to_string(),
            },
            other => AdminCallError::Unreachable {
                address,
                reason: other.to_string(),
            },
        })?;
        connection
            .set_read_timeout(Some(timeout))
            .map_err(|e| AdminCallError::Transport {
                address,
                reason: e.to_string(),
            })?;
        let node = NodeId(connection.remote().node_id);
        Ok(AdminClient {
            connection,
            address,
            cluster_id,
            node,
            next_request: 1,
            timeout,
        })
    }

    /// The node on the other side (from its handshake).
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// The address this client dialled.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Sends one request and waits for its answer.
    pub fn call(&mut self, request: AdminRequest) -> Result<AdminReply, AdminCallError> {
        let request_id = self.next_request;
        self.next_request += 1;
        let transport = |reason: String| AdminCallError::Transport {
            address: self.address,
            reason,
        };
        self.connection
            .send(&AdminRequestFrame {
                version: ADMIN_PROTOCOL_VERSION,
                cluster_id: self.cluster_id,
                request_id,
                request,
            })
            .map_err(|e| transport(e.to_string()))?;
        let deadline = Instant::now() + self.timeout;
        loop {
            if Instant::now() >= deadline {
                return Err(transport(format!("no answer within {:?}", self.timeout)));
            }
            let frame = match self.connection.recv() {
                Ok(Some(frame)) => frame,
                Ok(None) => return Err(transport("the node closed the connection".into())),
                Err(NetError::UnknownKind { kind }) => {
                    return Err(transport(format!(
                        "the node answered with frame kind {kind}: it does not speak the admin protocol"
                    )))
                }
                Err(error) => return Err(transport(error.to_string())),
            };
            let Some(archived) = frame.admin_response() else {
                continue;
            };
            let response = rkyv::deserialize::<AdminResponseFrame, rkyv::rancor::Error>(archived)
                .map_err(|e| transport(format!("an admin answer does not read: {e}")))?;
            if response.request_id != request_id && response.request_id != 0 {
                continue;
            }
            return response.result.map_err(|error| AdminCallError::Node {
                address: self.address,
                node: NodeId(response.node_id),
                error,
            });
        }
    }

    /// The state of `groups` on this node (all it hosts when empty).
    pub fn status(&mut self, groups: &[GroupId]) -> Result<NodeReport, AdminCallError> {
        let groups = groups.iter().map(|g| g.0).collect();
        match self.call(AdminRequest::Status { groups })? {
            AdminReply::Status(report) => Ok(report),
            other => Err(self.unexpected(&other)),
        }
    }

    /// Asks this node, which must lead `group`, to hand leadership to `to`.
    pub fn transfer_leader(&mut self, group: GroupId, to: NodeId) -> Result<(), AdminCallError> {
        match self.call(AdminRequest::TransferLeader {
            group: group.0,
            to: to.0,
        })? {
            AdminReply::TransferStarted => Ok(()),
            other => Err(self.unexpected(&other)),
        }
    }

    /// Takes a snapshot of `group` on this node; returns its index.
    pub fn snapshot(&mut self, group: GroupId) -> Result<u64, AdminCallError> {
        match self.call(AdminRequest::Snapshot { group: group.0 })? {
            AdminReply::Snapshot { index } => Ok(index),
            other => Err(self.unexpected(&other)),
        }
    }

    /// Sends a membership request (`AddLearner`, `Promote`, `AddVoter`,
    /// `Remove`, `Change`, `ResetPeers`) and waits until the node answers
    /// that it is done.
    pub fn change_membership(&mut self, request: AdminRequest) -> Result<(), AdminCallError> {
        match self.call(request)? {
            AdminReply::MembershipChanged => Ok(()),
            other => Err(self.unexpected(&other)),
        }
    }

    /// Bounds each later call by `timeout` instead (a membership change
    /// that catches a node up may take longer than a status).
    pub fn set_timeout(&mut self, timeout: Duration) -> Result<(), AdminCallError> {
        self.timeout = timeout;
        self.connection
            .set_read_timeout(Some(timeout))
            .map_err(|e| AdminCallError::Transport {
                address: self.address,
                reason: e.to_string(),
            })
    }

    fn unexpected(&self, reply: &AdminReply) -> AdminCallError {
        AdminCallError::Transport {
            address: self.address,
            reason: format!("an answer of the wrong kind: {reply:?}"),
        }
    }
}

/// One group's leadership, as the rebalance planner needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leadership {
    /// The group.
    pub group: GroupId,
    /// Its leader, if it has one now.
    pub leader: Option<NodeId>,
    /// Its voters (the nodes that may lead it).
    pub voters: BTreeSet<NodeId>,
}

/// One leadership transfer of a rebalance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Move {
    /// The group.
    pub group: GroupId,
    /// Its leader now.
    pub from: NodeId,
    /// The node to lead it.
    pub to: NodeId,
}

/// Leadership transfers that spread the leaders of `groups` evenly over
/// `nodes` (SOFAJRaft's `rebalance`): afterwards each node leads
/// `floor(n / nodes)` or `ceil(n / nodes)` of the `n` groups that have a
/// leader, as far as the voter sets allow (a group moves only to one of its
/// voters). A group without a leader, or led by a node outside `nodes`,
/// stays as it is. Each move takes a group from a node with the most
/// leaders to one with at least two fewer, so the plan is never longer than
/// the number of groups and moves no group twice.
pub fn plan_rebalance(nodes: &[NodeId], groups: &[Leadership]) -> Vec<Move> {
    let mut counts: BTreeMap<NodeId, usize> = nodes.iter().map(|&n| (n, 0)).collect();
    let mut leaders: BTreeMap<GroupId, NodeId> = BTreeMap::new();
    for group in groups {
        if let Some(leader) = group.leader.filter(|l| counts.contains_key(l)) {
            *counts.get_mut(&leader).expect("checked") += 1;
            leaders.insert(group.group, leader);
        }
    }
    let mut moved: BTreeSet<GroupId> = BTreeSet::new();
    let mut moves = Vec::new();
    for _ in 0..groups.len() {
        let Some(next) = next_move(&counts, &leaders, &moved, groups) else {
            break;
        };
        *counts.get_mut(&next.from).expect("a counted node") -= 1;
        *counts.get_mut(&next.to).expect("a counted node") += 1;
        leaders.insert(next.group, next.to);
        moved.insert(next.group);
        moves.push(next);
    }
    moves
}

/// The first move, from the busiest sources to the idlest targets, that
/// narrows a gap of at least two leaders.
fn next_move(
    counts: &BTreeMap<NodeId, usize>,
    leaders: &BTreeMap<GroupId, NodeId>,
    moved: &BTreeSet<GroupId>,
    groups: &[Leadership],
) -> Option<Move> {
    let mut by_load: Vec<(usize, NodeId)> = counts.iter().map(|(&n, &c)| (c, n)).collect();
    by_load.sort();
    for &(from_count, from) in by_load.iter().rev() {
        for &(to_count, to) in &by_load {
            if from_count < to_count + 2 {
                break;
            }
            let candidate = groups
                .iter()
                .find(|g| leaders.get(&g.group) == Some(&from) && !moved.contains(&g.group) && g.voters.contains(&to));
            if let Some(group) = candidate {
                return Some(Move {
                    group: group.group,
                    from,
                    to,
                });
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_led_by(leader: u64, groups: u64, voters: &[u64]) -> Vec<Leadership> {
        (1..=groups)
            .map(|g| Leadership {
                group: GroupId(g),
                leader: Some(NodeId(leader)),
                voters: voters.iter().map(|&v| NodeId(v)).collect(),
            })
            .collect()
    }

    fn leaders_per_node(nodes: &[NodeId], groups: &[Leadership], moves: &[Move]) -> BTreeMap<NodeId, usize> {
        let mut leaders: BTreeMap<GroupId, NodeId> = groups.iter().filter_map(|g| Some((g.group, g.leader?))).collect();
        for m in moves {
            assert_eq!(leaders[&m.group], m.from, "a move starts from the group's leader");
            leaders.insert(m.group, m.to);
        }
        let mut counts: BTreeMap<NodeId, usize> = nodes.iter().map(|&n| (n, 0)).collect();
        for leader in leaders.values() {
            *counts.entry(*leader).or_default() += 1;
        }
        counts
    }

    #[test]
    fn six_groups_led_by_one_node_of_three_end_two_per_node() {
        let nodes = [NodeId(1), NodeId(2), NodeId(3)];
        let groups = all_led_by(1, 6, &[1, 2, 3]);
        let moves = plan_rebalance(&nodes, &groups);
        assert_eq!(moves.len(), 4);
        let counts = leaders_per_node(&nodes, &groups, &moves);
        assert!(counts.values().all(|&c| c == 2), "{counts:?}");
    }

    #[test]
    fn a_hundred_groups_on_three_nodes_end_thirty_three_plus_or_minus_one() {
        let nodes = [NodeId(1), NodeId(2), NodeId(3)];
        let mut groups = all_led_by(2, 100, &[1, 2, 3]);
        groups[0].leader = Some(NodeId(3));
        let moves = plan_rebalance(&nodes, &groups);
        let counts = leaders_per_node(&nodes, &groups, &moves);
        assert!(counts.values().all(|&c| (32..=34).contains(&c)), "{counts:?}");
        let moved: BTreeSet<GroupId> = moves.iter().map(|m| m.group).collect();
        assert_eq!(moved.len(), moves.len(), "no group moves twice");
    }

    #[test]
    fn a_balanced_cluster_needs_no_move_and_leaderless_groups_stay() {
        let nodes = [NodeId(1), NodeId(2)];
        let mut groups = all_led_by(1, 2, &[1, 2]);
        groups[1].leader = Some(NodeId(2));
        groups.push(Leadership {
            group: GroupId(3),
            leader: None,
            voters: nodes.iter().copied().collect(),
        });
        assert!(plan_rebalance(&nodes, &groups).is_empty());
    }

    #[test]
    fn a_group_moves_only_to_one_of_its_voters() {
        let nodes = [NodeId(1), NodeId(2), NodeId(3)];
        // Node 3 votes in no group: it can lead none of them.
        let groups = all_led_by(1, 4, &[1, 2]);
        let moves = plan_rebalance(&nodes, &groups);
        assert!(moves.iter().all(|m| m.to == NodeId(2)), "{moves:?}");
        let counts = leaders_per_node(&nodes, &groups, &moves);
        assert_eq!(counts[&NodeId(1)], 2);
        assert_eq!(counts[&NodeId(2)], 2);
        assert_eq!(counts[&NodeId(3)], 0);
    }
}
