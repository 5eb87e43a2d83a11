//! The operator's side of the admin protocol (`coraft_net::admin`): a
//! blocking [`AdminClient`] for one node, and the leader planner
//! ([`plan_rebalance_by_priority`])
//! that `coraft-admin rebalance` executes. The node side is
//! `runtime/admin.rs`; the CLI (`src/bin/coraft-admin/`) is a thin layer of
//! arguments and tables over this module.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use coraft_net::admin::{AdminReply, AdminRequestFrame, AdminResponseFrame};
use coraft_net::{BlockingConnection, Hello, NetError, Refusal, Role as NetRole};

use crate::raft::{GroupId, NodeId};

pub use coraft_net::admin::{
    AdminError, AdminRequest, AdminRole, GroupReport, InstallReport, MemberSpec, NodeAddresses, NodeReport, PeerReport,
    ShardReport, ShardState, ADMIN_ADDRESSES_VERSION_MIN, ADMIN_ANSWER_BYTES_MAX, ADMIN_GROUPS_VERSION_MIN,
    ADMIN_INSTALLS_MAX, ADMIN_INSTALLS_VERSION_MIN, ADMIN_PROTOCOL_VERSION, ADMIN_SERVED_VERSION_MIN,
    ADMIN_SHARDS_VERSION_MIN, ADMIN_STATUS_GROUPS_MAX, ADMIN_STATUS_PAGE_GROUPS_MAX,
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
    /// The node speaks an older admin protocol version than the request
    /// needs (it was added later): nothing was done.
    #[error(
        "node {node} at {address} speaks admin protocol {speaks}, {request} needs {needs}: upgrade the node first"
    )]
    OlderProtocol {
        /// Where the node listens.
        address: SocketAddr,
        /// The node.
        node: NodeId,
        /// The version it speaks.
        speaks: u16,
        /// The request (as `coraft-admin` names its command).
        request: &'static str,
        /// The version that added it.
        needs: u16,
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
    /// The admin protocol version spoken to this node: this build's, or
    /// an older one the node named in an `UnsupportedVersion` answer.
    version: u16,
    /// The version the node's last answer said it speaks (none yet).
    node_version: Option<u16>,
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
            client_protocol: coraft_net::CLIENT_PROTOCOL_VERSION,
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
            version: ADMIN_PROTOCOL_VERSION,
            node_version: None,
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

    /// Sends one request and waits for its answer. A node of an older
    /// admin protocol version, from [`ADMIN_SERVED_VERSION_MIN`] on, is
    /// asked again at its version (its requests are laid out alike in
    /// this one), and spoken to at it from then on.
    pub fn call(&mut self, request: AdminRequest) -> Result<AdminReply, AdminCallError> {
        match self.call_as(self.version, request.clone()) {
            Err(AdminCallError::Node {
                error: AdminError::UnsupportedVersion { supported, .. },
                ..
            }) if (ADMIN_SERVED_VERSION_MIN..self.version).contains(&supported) => {
                self.version = supported;
                self.call_as(supported, request)
            }
            answer => answer,
        }
    }

    /// The admin protocol version spoken to this node (this build's until
    /// the node answered that it speaks an older one).
    pub fn version(&self) -> u16 {
        self.version
    }

    /// The snapshot streams in flight on this node, both ways (at most
    /// [`ADMIN_INSTALLS_MAX`]), and how many there are in all; `None` from
    /// a node of admin protocol version 3, which does not report them.
    pub fn installs(&mut self) -> Result<Option<(Vec<InstallReport>, u64)>, AdminCallError> {
        match self.call_since(ADMIN_INSTALLS_VERSION_MIN, AdminRequest::Installs)? {
            None => Ok(None),
            Some(AdminReply::Installs { installs, total }) => Ok(Some((installs, total))),
            Some(other) => Err(self.unexpected(&other)),
        }
    }

    /// The state of each of this node's shards, by index (serving, failed
    /// with the reason, stopped); `None` from a node of admin protocol
    /// version 3 or 4, which does not report them.
    pub fn shards(&mut self) -> Result<Option<Vec<ShardReport>>, AdminCallError> {
        match self.call_since(ADMIN_SHARDS_VERSION_MIN, AdminRequest::Shards)? {
            None => Ok(None),
            Some(AdminReply::Shards(shards)) => Ok(Some(shards)),
            Some(other) => Err(self.unexpected(&other)),
        }
    }

    /// Sends `request`, which admin protocol `since` added; `None` if this
    /// node speaks an older version (known already, or learnt from its
    /// `UnsupportedVersion` answer, after which it is spoken to at its
    /// version).
    fn call_since(&mut self, since: u16, request: AdminRequest) -> Result<Option<AdminReply>, AdminCallError> {
        if self.version < since {
            return Ok(None);
        }
        match self.call_as(self.version, request) {
            Ok(reply) => Ok(Some(reply)),
            Err(AdminCallError::Node {
                error: AdminError::UnsupportedVersion { supported, .. },
                ..
            }) if (ADMIN_SERVED_VERSION_MIN..self.version).contains(&supported) => {
                self.version = supported;
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }

    /// Creates `group` on this node with `voters` (this node among them)
    /// as its first configuration ([`AdminRequest::CreateGroup`]); done
    /// also if it exists with these voters. A node of admin protocol
    /// version 5 or older cannot: [`AdminCallError::OlderProtocol`].
    pub fn create_group(&mut self, group: GroupId, voters: &[NodeId]) -> Result<(), AdminCallError> {
        let request = AdminRequest::CreateGroup {
            group: group.0,
            voters: voters.iter().map(|v| v.0).collect(),
        };
        match self.call_needing(ADMIN_GROUPS_VERSION_MIN, "create-group", request)? {
            AdminReply::GroupCreated { .. } => Ok(()),
            other => Err(self.unexpected(&other)),
        }
    }

    /// Removes `group`, a group created at run time, from this node
    /// ([`AdminRequest::RemoveGroup`]); done also if it was removed
    /// already. A node of admin protocol version 5 or older cannot:
    /// [`AdminCallError::OlderProtocol`].
    pub fn remove_group(&mut self, group: GroupId) -> Result<(), AdminCallError> {
        let request = AdminRequest::RemoveGroup { group: group.0 };
        match self.call_needing(ADMIN_GROUPS_VERSION_MIN, "remove-group", request)? {
            AdminReply::GroupRemoved { .. } => Ok(()),
            other => Err(self.unexpected(&other)),
        }
    }

    /// Sends `request`, which admin protocol `since` added and which has
    /// no older form: [`AdminCallError::OlderProtocol`] (`name` says what
    /// was asked) if this node speaks an older version, known already,
    /// learnt from its `UnsupportedVersion` answer, or from the version in
    /// the frame of the `BadRequest` it answers a request it cannot read.
    fn call_needing(
        &mut self,
        since: u16,
        name: &'static str,
        request: AdminRequest,
    ) -> Result<AdminReply, AdminCallError> {
        let older = |client: &mut AdminClient, speaks: u16| {
            if (ADMIN_SERVED_VERSION_MIN..client.version).contains(&speaks) {
                client.version = speaks;
            }
            AdminCallError::OlderProtocol {
                address: client.address,
                node: client.node,
                speaks,
                request: name,
                needs: since,
            }
        };
        if self.version < since {
            let speaks = self.version;
            return Err(older(self, speaks));
        }
        match self.call_as(self.version, request) {
            Err(AdminCallError::Node {
                error: AdminError::UnsupportedVersion { supported, .. },
                ..
            }) if supported < since => Err(older(self, supported)),
            Err(error @ AdminCallError::Node { .. }) => match self.node_version {
                Some(speaks) if speaks < since => Err(older(self, speaks)),
                _ => Err(error),
            },
            answer => answer,
        }
    }

    /// Sends one request as admin protocol `version` speaks it (for a
    /// request laid out alike in that version, to a node of it) and waits
    /// for its answer.
    pub fn call_as(&mut self, version: u16, request: AdminRequest) -> Result<AdminReply, AdminCallError> {
        let request_id = self.next_request;
        self.next_request += 1;
        let transport = |reason: String| AdminCallError::Transport {
            address: self.address,
            reason,
        };
        self.connection
            .send(&AdminRequestFrame {
                version,
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
            self.node_version = Some(response.version);
            return response.result.map_err(|error| AdminCallError::Node {
                address: self.address,
                node: NodeId(response.node_id),
                error,
            });
        }
    }

    /// The state of `groups` on this node (all it hosts when empty), asked
    /// [`ADMIN_STATUS_PAGE_GROUPS_MAX`] groups at a time: see
    /// [`status_in_pages`](Self::status_in_pages).
    pub fn status(&mut self, groups: &[GroupId]) -> Result<NodeReport, AdminCallError> {
        self.status_in_pages(groups, ADMIN_STATUS_PAGE_GROUPS_MAX)
    }

    /// The state of `groups` on this node (all it hosts when empty), in
    /// answers of at most `page_groups` groups each (1 to
    /// [`ADMIN_STATUS_PAGE_GROUPS_MAX`]), so a node of any number of groups
    /// can answer: every hosted group page by page
    /// ([`AdminRequest::StatusPage`]) until a page comes back empty, or the
    /// named groups `page_groups` at a time ([`AdminRequest::Status`]).
    pub fn status_in_pages(&mut self, groups: &[GroupId], page_groups: u32) -> Result<NodeReport, AdminCallError> {
        let page_groups = page_groups.clamp(1, ADMIN_STATUS_PAGE_GROUPS_MAX);
        let mut whole: Option<NodeReport> = None;
        let mut merge = |page: NodeReport| -> usize {
            let count = page.groups.len();
            match &mut whole {
                None => whole = Some(page),
                Some(whole) => whole.groups.extend(page.groups),
            }
            count
        };
        if groups.is_empty() {
            let mut after = 0;
            loop {
                let page = self.status_once(AdminRequest::StatusPage {
                    after,
                    groups_max: page_groups,
                })?;
                let last = page.groups.last().map(|g| g.group);
                if merge(page) == 0 {
                    break;
                }
                match last {
                    Some(last) if last > after => after = last,
                    _ => return Err(self.transport("a status page did not move past the last one".into())),
                }
            }
        } else {
            for chunk in groups.chunks(page_groups as usize) {
                let groups = chunk.iter().map(|g| g.0).collect();
                merge(self.status_once(AdminRequest::Status { groups })?);
            }
        }
        Ok(whole.expect("at least one answer"))
    }

    fn status_once(&mut self, request: AdminRequest) -> Result<NodeReport, AdminCallError> {
        match self.call(request)? {
            AdminReply::Status(report) => Ok(report),
            other => Err(self.unexpected(&other)),
        }
    }

    fn transport(&self, reason: String) -> AdminCallError {
        AdminCallError::Transport {
            address: self.address,
            reason,
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

/// The shard addresses of every node the node at `seed` knows (its
/// [`AdminRequest::Addresses`] answer), for a node that joins a cluster.
/// A seed of an older admin protocol version (one that answers
/// `UnsupportedVersion` naming a version from
/// [`ADMIN_ADDRESSES_VERSION_MIN`] up) is asked again at its version: the
/// request and its answer are laid out alike in every version that has it.
pub fn seed_addresses(
    seed: SocketAddr,
    cluster_id: u64,
    timeout: Duration,
) -> Result<Vec<NodeAddresses>, AdminCallError> {
    let mut client = AdminClient::connect(seed, cluster_id, timeout)?;
    let answer = match client.call(AdminRequest::Addresses) {
        Err(AdminCallError::Node {
            error: AdminError::UnsupportedVersion { supported, .. },
            ..
        }) if (ADMIN_ADDRESSES_VERSION_MIN..ADMIN_PROTOCOL_VERSION).contains(&supported) => {
            client.call_as(supported, AdminRequest::Addresses)?
        }
        answer => answer?,
    };
    match answer {
        AdminReply::Addresses(nodes) => Ok(nodes),
        other => Err(client.unexpected(&other)),
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
/// `nodes` (SOFAJRaft's `rebalance`), every node of equal priority: see
/// [`plan_rebalance_by_priority`].
pub fn plan_rebalance(nodes: &[NodeId], groups: &[Leadership]) -> Vec<Move> {
    let nodes: Vec<(NodeId, u8)> = nodes.iter().map(|&n| (n, 0)).collect();
    plan_rebalance_by_priority(&nodes, groups)
}

/// Leadership transfers that spread the leaders of `groups` evenly over
/// `nodes`, each given with its election priority (0..=10, 0: no
/// preference), as SOFAJRaft's `rebalance` does with priority elections.
///
/// The rule: a group's *targets* are those of its voters among `nodes` whose
/// priority is the highest among them. With every priority 0 that is every
/// voter; with priorities 5, 5 and 1 on three voters, the two nodes of
/// priority 5 (a priority 0 is lowest, so a node left at the default leads
/// only groups none of whose voters has a priority set). First each group
/// led by a node that is not one of its targets moves to its target with
/// the fewest leaders. Then leaders move from the busiest nodes to the
/// idlest, each to one of its group's targets, until no move narrows a gap
/// of at least two. When every group has the same `k` targets (the same
/// voters), each of them then leads `floor(n / k)` or `ceil(n / k)` of the
/// `n` led groups and every other node none; with voter sets that differ,
/// as evenly as they allow. A group without a leader, or led by a node
/// outside `nodes`, stays as it is. A group moves at most once in the plan
/// (from its leader now to the node the plan ends it on), and the plan is
/// never longer than the number of groups.
pub fn plan_rebalance_by_priority(nodes: &[(NodeId, u8)], groups: &[Leadership]) -> Vec<Move> {
    let priority: BTreeMap<NodeId, u8> = nodes.iter().copied().collect();
    let mut counts: BTreeMap<NodeId, usize> = nodes.iter().map(|&(n, _)| (n, 0)).collect();
    let mut leaders: BTreeMap<GroupId, NodeId> = BTreeMap::new();
    let mut targets: BTreeMap<GroupId, BTreeSet<NodeId>> = BTreeMap::new();
    for group in groups {
        if let Some(leader) = group.leader.filter(|l| counts.contains_key(l)) {
            *counts.get_mut(&leader).expect("checked") += 1;
            leaders.insert(group.group, leader);
            targets.insert(group.group, targets_of(&priority, group));
        }
    }
    let before = leaders.clone();
    // First: off the nodes a group should not be led by.
    for (&group, group_targets) in &targets {
        let leader = leaders[&group];
        if group_targets.is_empty() || group_targets.contains(&leader) {
            continue;
        }
        let to = *group_targets
            .iter()
            .min_by_key(|&&n| (counts[&n], n))
            .expect("not empty");
        *counts.get_mut(&leader).expect("a counted node") -= 1;
        *counts.get_mut(&to).expect("a counted node") += 1;
        leaders.insert(group, to);
    }
    // Then: even out, each group moved by this phase at most once.
    let mut moved: BTreeSet<GroupId> = BTreeSet::new();
    for _ in 0..groups.len() {
        let Some(next) = next_move(&counts, &leaders, &moved, &targets) else {
            break;
        };
        *counts.get_mut(&next.from).expect("a counted node") -= 1;
        *counts.get_mut(&next.to).expect("a counted node") += 1;
        leaders.insert(next.group, next.to);
        moved.insert(next.group);
    }
    before
        .into_iter()
        .filter_map(|(group, from)| {
            let to = leaders[&group];
            (to != from).then_some(Move { group, from, to })
        })
        .collect()
}

/// The voters of `group` among the nodes of `priority` with the highest
/// priority among them.
fn targets_of(priority: &BTreeMap<NodeId, u8>, group: &Leadership) -> BTreeSet<NodeId> {
    let known: Vec<(NodeId, u8)> = group
        .voters
        .iter()
        .filter_map(|v| Some((*v, *priority.get(v)?)))
        .collect();
    let highest = known.iter().map(|&(_, p)| p).max().unwrap_or(0);
    known
        .into_iter()
        .filter(|&(_, p)| p == highest)
        .map(|(n, _)| n)
        .collect()
}

/// The first move, from the busiest sources to the idlest targets, that
/// narrows a gap of at least two leaders.
fn next_move(
    counts: &BTreeMap<NodeId, usize>,
    leaders: &BTreeMap<GroupId, NodeId>,
    moved: &BTreeSet<GroupId>,
    targets: &BTreeMap<GroupId, BTreeSet<NodeId>>,
) -> Option<Move> {
    let mut by_load: Vec<(usize, NodeId)> = counts.iter().map(|(&n, &c)| (c, n)).collect();
    by_load.sort();
    for &(from_count, from) in by_load.iter().rev() {
        for &(to_count, to) in &by_load {
            if from_count < to_count + 2 {
                break;
            }
            let candidate = targets
                .iter()
                .find(|(g, t)| leaders.get(g) == Some(&from) && !moved.contains(g) && t.contains(&to));
            if let Some((&group, _)) = candidate {
                return Some(Move { group, from, to });
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

    fn with_priorities(list: &[(u64, u8)]) -> Vec<(NodeId, u8)> {
        list.iter().map(|&(n, p)| (NodeId(n), p)).collect()
    }

    #[test]
    fn with_priorities_five_five_one_the_two_highest_split_every_leader() {
        let nodes = with_priorities(&[(1, 5), (2, 5), (3, 1)]);
        let ids: Vec<NodeId> = nodes.iter().map(|&(n, _)| n).collect();
        // Node 3 leads 20 groups, node 1 the other 10.
        let mut groups = all_led_by(3, 30, &[1, 2, 3]);
        for group in groups.iter_mut().take(10) {
            group.leader = Some(NodeId(1));
        }
        let moves = plan_rebalance_by_priority(&nodes, &groups);
        let counts = leaders_per_node(&ids, &groups, &moves);
        assert_eq!(counts[&NodeId(3)], 0, "{counts:?}");
        assert_eq!(counts[&NodeId(1)], 15, "{counts:?}");
        assert_eq!(counts[&NodeId(2)], 15, "{counts:?}");
        let moved: BTreeSet<GroupId> = moves.iter().map(|m| m.group).collect();
        assert_eq!(moved.len(), moves.len(), "no group moves twice");
        assert!(moves.len() <= groups.len());
    }

    #[test]
    fn priority_zero_nodes_lead_only_where_no_voter_has_a_priority() {
        // Node 3 is left at 0 ("no preference"); groups 1..=4 have node 1
        // (priority 3) among their voters, groups 5..=8 do not.
        let nodes = with_priorities(&[(1, 3), (2, 0), (3, 0)]);
        let ids: Vec<NodeId> = nodes.iter().map(|&(n, _)| n).collect();
        let mut groups = all_led_by(3, 4, &[1, 2, 3]);
        groups.extend(all_led_by(3, 4, &[2, 3]).into_iter().map(|mut g| {
            g.group = GroupId(g.group.0 + 4);
            g
        }));
        let moves = plan_rebalance_by_priority(&nodes, &groups);
        let mut leaders: BTreeMap<GroupId, NodeId> = groups.iter().map(|g| (g.group, g.leader.unwrap())).collect();
        for m in &moves {
            leaders.insert(m.group, m.to);
        }
        for g in 1..=4 {
            assert_eq!(leaders[&GroupId(g)], NodeId(1), "group {g}: {leaders:?}");
        }
        let counts = leaders_per_node(&ids, &groups, &moves);
        assert_eq!(counts[&NodeId(2)], 2, "{counts:?}");
        assert_eq!(counts[&NodeId(3)], 2, "{counts:?}");
    }

    #[test]
    fn equal_priorities_plan_as_no_priorities() {
        let ids = [NodeId(1), NodeId(2), NodeId(3)];
        let mut groups = all_led_by(2, 100, &[1, 2, 3]);
        groups[0].leader = Some(NodeId(3));
        let unset = plan_rebalance(&ids, &groups);
        let equal = plan_rebalance_by_priority(&with_priorities(&[(1, 7), (2, 7), (3, 7)]), &groups);
        assert_eq!(unset, equal);
    }
}
