//! Membership changes on a live cluster: the requests of
//! [`GroupHandle`](super::GroupHandle) (`add_learner`, `promote_learner`,
//! `add_voter`, `remove_member`, `change_members`, `reset_peers`), the one
//! change a group may have in flight, and the address book that lets members
//! connect to nodes added at run time.
//!
//! Addresses live in the log: a change that brings in a node first appends
//! an address-book entry (every member's shard addresses, the new node's
//! included), a normal entry of kind [`command_kind::ADDRESSES`] that the
//! runtime applies itself and never hands to the state machine. Each member
//! connects to the nodes it lists when it applies it; a node that joins
//! started with only its own and one member's address learns the others
//! from it. When a configuration entry is applied, connections to nodes that
//! no group of the shard counts as a member any more are closed. See
//! `docs/architecture.md`, "Membership changes on a live cluster".

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;

use crate::api::Error;
use crate::raft::{ConfChange, GroupId, LogIndex, NodeId, RaftError, Role, Term};

use super::codec::{command_kind, CONFIGURATION_MEMBERS_MAX};
use super::node::PeerSpec;
use super::shard::Shard;

/// Bound on membership changes in flight per group: one. A second request
/// while one is under way is refused with [`Error::ChangeInProgress`].
pub const MEMBERSHIP_CHANGES_IN_FLIGHT_MAX: usize = 1;
/// A learner is promoted by [`add_voter`](super::GroupHandle::add_voter)
/// once it holds the log up to the entry that made it a learner and is at
/// most this many entries behind the leader's last.
pub const PROMOTE_LAG_ENTRIES_MAX: u64 = 64;
/// How long a leader that removes itself waits before asking its successor
/// again when that one is not ready for a change yet (just elected).
const FORWARD_RETRY_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);
/// Bound on the shard addresses one node may list in an address-book entry.
pub const NODE_ADDRESSES_MAX: usize = 256;
/// Bound on the bytes of one address as text in an address-book entry.
const ADDRESS_TEXT_BYTES_MAX: usize = 64;

/// A membership request from an embedding thread (or the admin protocol).
#[derive(Debug, Clone)]
pub(crate) enum MembershipRequest {
    AddLearner(PeerSpec),
    Promote(NodeId),
    AddVoter(PeerSpec),
    Remove(NodeId),
    Change(Vec<PeerSpec>),
    Reset(Vec<NodeId>),
}

/// Where a change in flight is.
enum Stage {
    /// Waiting for the entry at `index` of `term` to commit (and, for a
    /// joint change, for the group to leave the joint configuration); then
    /// promote `then_promote` if set.
    Committing {
        index: LogIndex,
        term: Term,
        then_promote: Option<NodeId>,
    },
    /// Waiting for a learner to hold the log up to `through` (and be within
    /// [`PROMOTE_LAG_ENTRIES_MAX`] of the leader's) before it is promoted.
    CatchingUp { node: NodeId, through: LogIndex },
    /// The leader removing itself: leadership is being handed to `target`
    /// (TimeoutNow once it holds the whole log); the removal is proposed
    /// by the new leader.
    HandingOver { target: NodeId },
    /// The removal of this node was sent to the new leader `leader` over
    /// the admin protocol; `outcome` is filled when it answers.
    Forwarded {
        leader: NodeId,
        outcome: Rc<RefCell<Option<Result<(), Error>>>>,
    },
}

/// The change a group has in flight on this node.
pub(crate) struct PendingChange {
    stage: Stage,
    pub(super) reply: flume::Sender<Result<(), Error>>,
    received: Instant,
}

/// Encodes an address-book entry: kind, count, then per node its id, its
/// shard count and each address as length-prefixed text.
pub(crate) fn encode_addresses(book: &BTreeMap<NodeId, Vec<SocketAddr>>) -> Bytes {
    let mut out = vec![command_kind::ADDRESSES];
    out.extend_from_slice(&(book.len() as u32).to_le_bytes());
    for (node, addresses) in book {
        out.extend_from_slice(&node.0.to_le_bytes());
        out.extend_from_slice(&(addresses.len() as u16).to_le_bytes());
        for address in addresses {
            let text = address.to_string();
            out.push(text.len() as u8);
            out.extend_from_slice(text.as_bytes());
        }
    }
    Bytes::from(out)
}

/// Decodes an address-book entry; `None` if `bytes` is not one, an error
/// naming what is wrong if it is one but malformed (a log entry is input).
pub(crate) fn decode_addresses(bytes: &[u8]) -> Option<Result<BTreeMap<NodeId, Vec<SocketAddr>>, String>> {
    if bytes.first() != Some(&command_kind::ADDRESSES) {
        return None;
    }
    Some(decode_book(&bytes[1..]))
}

fn decode_book(mut bytes: &[u8]) -> Result<BTreeMap<NodeId, Vec<SocketAddr>>, String> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize, what: &str) -> Result<&'a [u8], String> {
        if bytes.len() < n {
            return Err(format!("address book truncated in {what}"));
        }
        let (head, tail) = bytes.split_at(n);
        *bytes = tail;
        Ok(head)
    }
    let count = u32::from_le_bytes(take(&mut bytes, 4, "the count")?.try_into().expect("4 bytes")) as usize;
    if count > CONFIGURATION_MEMBERS_MAX {
        return Err(format!(
            "address book lists {count} nodes, above CONFIGURATION_MEMBERS_MAX ({CONFIGURATION_MEMBERS_MAX})"
        ));
    }
    let mut book = BTreeMap::new();
    for _ in 0..count {
        let node = NodeId(u64::from_le_bytes(
            take(&mut bytes, 8, "a node id")?.try_into().expect("8 bytes"),
        ));
        let shards = u16::from_le_bytes(take(&mut bytes, 2, "a shard count")?.try_into().expect("2 bytes")) as usize;
        if shards > NODE_ADDRESSES_MAX {
            return Err(format!(
                "node {node} lists {shards} addresses, above NODE_ADDRESSES_MAX ({NODE_ADDRESSES_MAX})"
            ));
        }
        let mut addresses = Vec::with_capacity(shards);
        for _ in 0..shards {
            let length = take(&mut bytes, 1, "an address length")?[0] as usize;
            if length > ADDRESS_TEXT_BYTES_MAX {
                return Err(format!("an address of node {node} is {length} bytes long"));
            }
            let text = take(&mut bytes, length, "an address")?;
            let address = std::str::from_utf8(text)
                .ok()
                .and_then(|t| t.parse::<SocketAddr>().ok())
                .ok_or_else(|| format!("an address of node {node} does not parse"))?;
            addresses.push(address);
        }
        book.insert(node, addresses);
    }
    if !bytes.is_empty() {
        return Err(format!("{} bytes after the address book", bytes.len()));
    }
    Ok(book)
}

/// What the new leader's answer to a forwarded removal means here.
fn forwarded_error(leader: NodeId, error: crate::admin::AdminCallError) -> Error {
    use coraft_net::admin::AdminError;
    match error {
        crate::admin::AdminCallError::Node { error, .. } => match error {
            AdminError::ChangeInProgress { .. } => Error::ChangeInProgress,
            AdminError::NotLeader { leader_hint, .. } => Error::NotLeader {
                leader_hint: leader_hint.map(NodeId),
            },
            AdminError::Timeout => Error::Timeout,
            AdminError::BadRequest { reason } => Error::InvalidChange(format!("node {leader}: {reason}")),
            other => Error::Network(format!(
                "asking node {leader}, the new leader, to remove this node: {other}"
            )),
        },
        other => Error::Network(format!(
            "asking node {leader}, the new leader, to remove this node: {other}"
        )),
    }
}

fn raft_error(error: RaftError) -> Error {
    match error {
        RaftError::NotLeader { leader_hint } => Error::NotLeader { leader_hint },
        RaftError::ConfigurationChangePending => Error::ChangeInProgress,
        RaftError::TransferInProgress { target } => Error::NotLeader {
            leader_hint: Some(target),
        },
        other => Error::InvalidChange(other.to_string()),
    }
}

impl Shard {
    /// Starts a membership change, or refuses it at once.
    pub(super) fn membership_request(
        &mut self,
        group_id: GroupId,
        request: MembershipRequest,
        reply: flume::Sender<Result<(), Error>>,
    ) {
        if let Some(error) = &self.failed {
            let _ = reply.send(Err(error.clone()));
            return;
        }
        if !self.groups.contains_key(&group_id) {
            let _ = reply.send(Err(Error::UnknownGroup(group_id)));
            return;
        }
        self.dirty.insert(group_id);
        if let MembershipRequest::Reset(voters) = request {
            let _ = reply.send(self.reset_peers(group_id, &voters));
            return;
        }
        let in_flight = usize::from(self.membership_changes.contains_key(&group_id));
        if in_flight >= MEMBERSHIP_CHANGES_IN_FLIGHT_MAX {
            let _ = reply.send(Err(Error::ChangeInProgress));
            return;
        }
        match self.start_change(group_id, request) {
            Ok(stage) => {
                let pending = PendingChange {
                    stage,
                    reply,
                    received: Instant::now(),
                };
                self.membership_changes.insert(group_id, pending);
            }
            Err(error) => {
                let _ = reply.send(Err(error));
            }
        }
    }

    fn start_change(&mut self, group_id: GroupId, request: MembershipRequest) -> Result<Stage, Error> {
        let group = self.groups.get(&group_id).expect("checked");
        let core = &group.core;
        if core.role() != Role::Leader {
            return Err(Error::NotLeader {
                leader_hint: core.leader(),
            });
        }
        let configuration = core.configuration().clone();
        if configuration.is_joint() {
            return Err(Error::ChangeInProgress);
        }
        let (changes, newcomers, then_promote) = match request {
            MembershipRequest::AddLearner(peer) => (vec![ConfChange::AddLearner(peer.id)], vec![peer], None),
            MembershipRequest::AddVoter(peer) if configuration.learners.contains(&peer.id) => {
                return Ok(Stage::CatchingUp {
                    node: peer.id,
                    through: core.commit_index(),
                });
            }
            MembershipRequest::AddVoter(peer) => {
                if configuration.voters.contains(&peer.id) {
                    return Err(Error::InvalidChange(format!("node {} is already a voter", peer.id)));
                }
                let id = peer.id;
                (vec![ConfChange::AddLearner(id)], vec![peer], Some(id))
            }
            MembershipRequest::Promote(node) => {
                if !configuration.learners.contains(&node) {
                    return Err(Error::InvalidChange(format!("node {node} is not a learner")));
                }
                (vec![ConfChange::AddVoter(node)], Vec::new(), None)
            }
            MembershipRequest::Remove(node) => {
                if !configuration.contains(node) {
                    return Err(Error::InvalidChange(format!("node {node} is not a member")));
                }
                if node == self.node && configuration.voters.contains(&node) {
                    return self.hand_over_before_removal(group_id);
                }
                (vec![ConfChange::Remove(node)], Vec::new(), None)
            }
            MembershipRequest::Change(voters) => {
                let wanted: BTreeSet<NodeId> = voters.iter().map(|p| p.id).collect();
                let mut changes: Vec<ConfChange> = wanted
                    .iter()
                    .filter(|n| !configuration.voters.contains(n))
                    .map(|&n| ConfChange::AddVoter(n))
                    .collect();
                changes.extend(
                    configuration
                        .voters
                        .iter()
                        .filter(|n| !wanted.contains(n))
                        .map(|&n| ConfChange::Remove(n)),
                );
                let newcomers = voters.into_iter().filter(|p| !configuration.contains(p.id)).collect();
                (changes, newcomers, None)
            }
            MembershipRequest::Reset(_) => unreachable!("handled by the caller"),
        };
        self.propose_addresses(group_id, newcomers)?;
        let group = self.groups.get_mut(&group_id).expect("checked");
        let term = group.core.term();
        let index = group.core.propose_conf_change(&changes).map_err(raft_error)?;
        log::info!(
            "node {} group {group_id}: proposed membership change {changes:?} at index {index}",
            self.node
        );
        Ok(Stage::Committing {
            index,
            term,
            then_promote,
        })
    }

    /// The leader is asked to remove itself: it first hands leadership to
    /// the most caught-up other voter (the core sends TimeoutNow once that
    /// one holds the whole log), and the new leader is then asked to
    /// propose the removal. So the group never runs with a leader that is
    /// leaving, and it elects no one: the successor is chosen, caught up
    /// and told to campaign at once (thesis §3.10).
    fn hand_over_before_removal(&mut self, group_id: GroupId) -> Result<Stage, Error> {
        let me = self.node;
        let group = self.groups.get_mut(&group_id).expect("checked");
        let core = &mut group.core;
        let matched = |node: &NodeId| core.progress().get(node).map_or(LogIndex(0), |p| p.match_index);
        let target = core
            .configuration()
            .voters
            .iter()
            .filter(|&&n| n != me)
            .max_by_key(|n| (matched(n), std::cmp::Reverse(**n)))
            .copied()
            .ok_or_else(|| {
                Error::InvalidChange(format!("node {me} is the group's only voter: it cannot remove itself"))
            })?;
        core.transfer_leader(target).map_err(raft_error)?;
        log::info!(
            "node {me} group {group_id}: asked to remove itself while leading: handing leadership to node {target} \
             (the most caught-up voter) first; the new leader will propose the removal"
        );
        Ok(Stage::HandingOver { target })
    }

    /// Asks `leader` (over the admin protocol, as `coraft-admin` would) to
    /// remove this node from `group_id`; the answer fills the returned slot
    /// and wakes the loop.
    fn forward_removal(&mut self, group_id: GroupId, leader: NodeId) -> Result<Stage, Error> {
        let Some(address) = self
            .addresses
            .get(&leader)
            .and_then(|a| a.get(self.shard_index()))
            .copied()
        else {
            return Err(Error::NotLeader {
                leader_hint: Some(leader),
            });
        };
        let me = self.node;
        let cluster_id = self.admin.cluster_id();
        let timeout = self.request_timeout;
        let outcome = Rc::new(RefCell::new(None));
        let slot = outcome.clone();
        let events = self.events.clone();
        log::info!("node {me} group {group_id}: node {leader} leads now; asking it at {address} to remove this node");
        glommio::spawn_local(async move {
            let result = glommio::executor()
                .spawn_blocking(move || {
                    let deadline = Instant::now() + timeout;
                    let mut client = crate::admin::AdminClient::connect(address, cluster_id, timeout)?;
                    loop {
                        let answer = client.change_membership(coraft_net::admin::AdminRequest::Remove {
                            group: group_id.0,
                            node: me.0,
                        });
                        // A leader just elected takes no change until an
                        // entry of its term commits: ask again shortly.
                        let busy = matches!(
                            &answer,
                            Err(crate::admin::AdminCallError::Node {
                                error: coraft_net::admin::AdminError::ChangeInProgress { .. },
                                ..
                            })
                        );
                        if !busy || Instant::now() >= deadline {
                            return answer;
                        }
                        std::thread::sleep(FORWARD_RETRY_INTERVAL);
                    }
                })
                .await;
            *slot.borrow_mut() = Some(result.map_err(|error| forwarded_error(leader, error)));
            events.ring();
        })
        .detach();
        Ok(Stage::Forwarded { leader, outcome })
    }

    /// Records the newcomers' addresses here, connects to them, and appends
    /// the group's address book (every member's and theirs) to the log.
    fn propose_addresses(&mut self, group_id: GroupId, newcomers: Vec<PeerSpec>) -> Result<(), Error> {
        if newcomers.is_empty() {
            return Ok(());
        }
        for peer in &newcomers {
            if peer.id == self.node {
                return Err(Error::InvalidChange(format!("node {} is this node", peer.id)));
            }
            let known = self.addresses.get(&peer.id).is_some_and(|a| !a.is_empty());
            if peer.shard_addresses.is_empty() && !known {
                return Err(Error::InvalidChange(format!(
                    "node {} is new to the group: its shard addresses are needed",
                    peer.id
                )));
            }
            if !peer.shard_addresses.is_empty() && peer.shard_addresses.len() <= self.shard_index() {
                return Err(Error::InvalidChange(format!(
                    "node {} lists {} shard addresses; shard {} needs its own",
                    peer.id,
                    peer.shard_addresses.len(),
                    self.shard_index()
                )));
            }
        }
        let mut learned = BTreeMap::new();
        let mut members: BTreeSet<NodeId> = newcomers.iter().map(|p| p.id).collect();
        for peer in newcomers {
            if !peer.shard_addresses.is_empty() {
                learned.insert(peer.id, peer.shard_addresses);
            }
        }
        self.learn_addresses(learned);
        let group = self.groups.get_mut(&group_id).expect("checked");
        members.extend(group.core.configuration().members());
        members.insert(self.node);
        let book: BTreeMap<NodeId, Vec<SocketAddr>> = self
            .addresses
            .iter()
            .filter(|(n, _)| members.contains(n))
            .map(|(n, a)| (*n, a.clone()))
            .collect();
        group.core.propose(vec![encode_addresses(&book)]).map_err(raft_error)?;
        Ok(())
    }

    /// Adds `book` to this shard's address book and connects to the nodes
    /// it names that this shard has no connection to.
    pub(super) fn learn_addresses(&mut self, book: BTreeMap<NodeId, Vec<SocketAddr>>) {
        let shard = self.shard_index();
        for (node, addresses) in book {
            if node == self.node {
                continue;
            }
            let Some(&address) = addresses.get(shard) else {
                log::warn!(
                    "node {} shard {shard}: node {node} lists no address for this shard; not connecting",
                    self.node
                );
                continue;
            };
            let changed = self.addresses.get(&node) != Some(&addresses);
            self.addresses.insert(node, addresses);
            if changed || !self.peers.is_connected(node) {
                match self.peers.connect_to(node, address) {
                    Ok(()) => {
                        self.peer_silent_ticks.insert(node, 0);
                        log::info!(
                            "node {} shard {shard}: connecting to node {node} at {address}",
                            self.node
                        );
                    }
                    Err(error) => log::warn!(
                        "node {} shard {shard}: cannot connect to node {node} at {address}: {error}",
                        self.node
                    ),
                }
            }
        }
    }

    /// Connects to the nodes of the address books the groups restored from
    /// their snapshots at start (`Group::restore_address_book`).
    pub(super) fn learn_restored_addresses(&mut self) {
        let books: Vec<_> = self
            .groups
            .values_mut()
            .flat_map(|g| std::mem::take(&mut g.learned_addresses))
            .collect();
        for book in books {
            self.learn_addresses(book);
        }
    }

    /// After configuration entries were applied: closes the connections to
    /// nodes no group of this shard counts as a member any more.
    ///
    /// A group's leader is kept even so: a node catching up replays the
    /// configurations of the log's history, and one of them may leave out
    /// the node that leads now (removed, then added back later in the log).
    /// Its acknowledgements travel on this connection, and the leader's
    /// heartbeats carry no commit past them, so without it the node would
    /// never reach the entry that names its leader again. (A leader that
    /// removed itself keeps its connections here until the next
    /// configuration is applied with another leader.)
    pub(super) fn prune_peers(&mut self) {
        let mut members = BTreeSet::new();
        for group in self.groups.values() {
            members.extend(group.core.configuration().members());
            members.extend(group.core.leader());
        }
        let gone: Vec<NodeId> = self.peers.nodes().filter(|n| !members.contains(n)).collect();
        for node in gone {
            log::info!(
                "node {} shard {}: node {node} is a member of no group here any more; closing its connection",
                self.node,
                self.shard_index()
            );
            self.peer_silent_ticks.remove(&node);
            self.addresses.remove(&node);
            if let Some(connection) = self.peers.disconnect(node) {
                glommio::spawn_local(connection.close()).detach();
            }
        }
    }

    /// After entries were appended to `group_id`: says so once if its
    /// configuration no longer counts this node (a removed node no longer
    /// campaigns: only voters do).
    pub(super) fn notice_removal(&mut self, group_id: GroupId) {
        let Some(group) = self.groups.get(&group_id) else {
            return;
        };
        let configuration = group.core.configuration();
        if configuration.members().is_empty() {
            // A joining node's group before it received any configuration.
            return;
        }
        if configuration.contains(self.node) {
            self.removed_from.remove(&group_id);
        } else if self.removed_from.insert(group_id) {
            log::warn!(
                "node {} group {group_id}: this node was removed from the group ({:?}); it no longer \
                 campaigns or votes here",
                self.node,
                configuration.voters
            );
        }
    }

    /// Unsafe recovery (`GroupHandle::reset_peers`).
    fn reset_peers(&mut self, group_id: GroupId, voters: &[NodeId]) -> Result<(), Error> {
        let group = self.groups.get_mut(&group_id).expect("checked");
        log::error!(
            "node {} group {group_id}: RESET PEERS to {voters:?} WITHOUT CONSENSUS (was {:?}): entries the lost \
             nodes held and this one did not are gone for good, including acknowledged writes; if a lost node \
             comes back it must be wiped first",
            self.node,
            group.core.configuration()
        );
        group.core.force_configuration(voters).map_err(raft_error)?;
        if let Some(pending) = self.membership_changes.remove(&group_id) {
            let _ = pending.reply.send(Err(Error::InvalidChange(
                "the group's peers were reset while this change was in flight".into(),
            )));
        }
        Ok(())
    }

    /// Moves every change in flight along: resolves those committed (and out
    /// of any joint configuration), promotes caught-up learners, fails those
    /// whose entry was lost or that waited past the request timeout.
    pub(super) fn advance_membership_changes(&mut self) {
        if self.membership_changes.is_empty() {
            return;
        }
        let groups: Vec<GroupId> = self.membership_changes.keys().copied().collect();
        for group_id in groups {
            let _group = crate::logging::group_span(group_id).entered();
            let pending = self.membership_changes.remove(&group_id).expect("listed");
            let outcome = self.advance_change(group_id, pending.stage);
            match outcome {
                Ok(Some(stage)) if pending.received.elapsed() <= self.request_timeout => {
                    self.membership_changes.insert(
                        group_id,
                        PendingChange {
                            stage,
                            reply: pending.reply,
                            received: pending.received,
                        },
                    );
                }
                Ok(Some(_)) => {
                    let _ = pending.reply.send(Err(Error::Timeout));
                }
                Ok(None) => {
                    log::info!("node {} group {group_id}: membership change done", self.node);
                    let _ = pending.reply.send(Ok(()));
                }
                Err(error) => {
                    let _ = pending.reply.send(Err(error));
                }
            }
        }
    }

    /// The next stage of a change (`None`: done).
    fn advance_change(&mut self, group_id: GroupId, stage: Stage) -> Result<Option<Stage>, Error> {
        let Some(group) = self.groups.get_mut(&group_id) else {
            return Err(Error::UnknownGroup(group_id));
        };
        let core = &mut group.core;
        match stage {
            Stage::Committing {
                index,
                term,
                then_promote,
            } => {
                match core.term_at(index) {
                    Some(t) if t == term => {}
                    // Another leader's entry took its place.
                    Some(_) => {
                        return Err(Error::NotLeader {
                            leader_hint: core.leader(),
                        })
                    }
                    None if core.last_index() < index => {
                        return Err(Error::NotLeader {
                            leader_hint: core.leader(),
                        })
                    }
                    None => {}
                }
                if core.commit_index() < index || core.configuration().is_joint() {
                    return Ok(Some(Stage::Committing {
                        index,
                        term,
                        then_promote,
                    }));
                }
                Ok(then_promote.map(|node| Stage::CatchingUp { node, through: index }))
            }
            Stage::HandingOver { target } => {
                if core.role() == Role::Leader {
                    // The core gives a transfer up after an election
                    // timeout; ask again (a no-op while one is under way).
                    core.transfer_leader(target).map_err(raft_error)?;
                    return Ok(Some(Stage::HandingOver { target }));
                }
                match core.leader() {
                    Some(leader) if leader != self.node => self.forward_removal(group_id, leader).map(Some),
                    // No leader known yet: the election is under way.
                    _ => Ok(Some(Stage::HandingOver { target })),
                }
            }
            Stage::Forwarded { leader, outcome } => {
                let answer = outcome.borrow_mut().take();
                match answer {
                    None => Ok(Some(Stage::Forwarded { leader, outcome })),
                    Some(result) => result.map(|()| None),
                }
            }
            Stage::CatchingUp { node, through } => {
                if core.role() != Role::Leader {
                    return Err(Error::NotLeader {
                        leader_hint: core.leader(),
                    });
                }
                let caught_up = core.progress().get(&node).is_some_and(|p| {
                    p.match_index >= through && p.match_index.0 + PROMOTE_LAG_ENTRIES_MAX >= core.last_index().0
                });
                if !caught_up {
                    return Ok(Some(Stage::CatchingUp { node, through }));
                }
                let term = core.term();
                let index = core
                    .propose_conf_change(&[ConfChange::AddVoter(node)])
                    .map_err(raft_error)?;
                self.dirty.insert(group_id);
                log::info!(
                    "node {} group {group_id}: learner {node} caught up; promoting it at index {index}",
                    self.node
                );
                Ok(Some(Stage::Committing {
                    index,
                    term,
                    then_promote: None,
                }))
            }
        }
    }

    /// Fails every change in flight (shutdown, fail-stop).
    pub(super) fn fail_membership_changes(&mut self, error: &Error) {
        for (_, pending) in std::mem::take(&mut self.membership_changes) {
            let _ = pending.reply.send(Err(error.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_book_round_trips_and_bad_bytes_are_named() {
        let mut book = BTreeMap::new();
        book.insert(
            NodeId(4),
            vec!["127.0.0.1:7000".parse().unwrap(), "[::1]:7001".parse().unwrap()],
        );
        book.insert(NodeId(1), vec!["10.0.0.1:9".parse().unwrap()]);
        let bytes = encode_addresses(&book);
        assert_eq!(decode_addresses(&bytes), Some(Ok(book)));
        assert_eq!(decode_addresses(&[command_kind::PLAIN, 0, 0]), None);
        let truncated = &bytes[..bytes.len() - 3];
        assert!(decode_addresses(truncated).unwrap().unwrap_err().contains("truncated"));
        let mut huge = vec![command_kind::ADDRESSES];
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_addresses(&huge)
            .unwrap()
            .unwrap_err()
            .contains("CONFIGURATION_MEMBERS_MAX"));
    }
}
