//! The admin protocol's server side: an admin request read off a client
//! connection (`transport.rs`) is answered here, through the same
//! [`GroupHandle`] an embedding program uses (status, transfer, snapshot,
//! the membership changes), so an operator's request and an
//! embedder's take one path into the shards. Every shard of a node holds the
//! same [`AdminService`] and can answer for every group of the node.
//!
//! A connection's admin requests are served one at a time by a task of
//! their own (at most [`ADMIN_REQUESTS_QUEUED_MAX`] waiting), so a slow one
//! (a snapshot) never holds up the client requests of that connection.

use std::net::SocketAddr;

use coraft_net::admin::{
    bounded_reason, group_report_bytes_max, AdminError, AdminReply, AdminRequest, AdminRequestFrame,
    AdminResponseFrame, AdminRole, GroupReport, InstallReport, MemberSpec, NodeReport, PeerReport, ShardReport,
    ShardState, ADMIN_ADDRESSES_VERSION_MIN, ADMIN_ANSWER_BYTES_MAX, ADMIN_GROUPS_VERSION_MIN, ADMIN_INSTALLS_MAX,
    ADMIN_INSTALLS_VERSION_MIN, ADMIN_MEMBERS_MAX, ADMIN_PROTOCOL_VERSION, ADMIN_SERVED_VERSION_MIN,
    ADMIN_SHARDS_VERSION_MIN, ADMIN_STATUS_GROUPS_MAX, ADMIN_STATUS_PAGE_GROUPS_MAX,
};

use crate::api::Error;
use crate::raft::{GroupId, NodeId, Role};

use super::node::{ApiRequest, GroupHandle, GroupStatus, PeerSpec};

/// Bound on admin requests of one connection waiting to be served; more
/// are answered [`AdminError::Busy`].
pub const ADMIN_REQUESTS_QUEUED_MAX: usize = 16;

/// A shard's answer to `ApiRequest::Health`: what [`AdminRequest::Shards`]
/// reports of it.
pub(crate) struct ShardHealth {
    /// The groups it hosts.
    pub groups: u64,
    /// Why its WAL failed, if it did (it then serves no group: fail-stop).
    pub failed: Option<String>,
}

/// What [`AdminReply::Shards`] says of a shard whose executor is gone.
const STOPPED_REASON: &str =
    "the shard's executor has stopped (its request channel is closed); the node's log says why";

/// What a node needs to answer admin requests: its identity, its groups and
/// the way into each shard.
pub(crate) struct AdminService {
    cluster_id: u64,
    node: NodeId,
    election_priority: u8,
    /// The configured groups, then those created at run time
    /// (`Node::create_group`, `group_creation.rs`).
    groups: std::sync::Mutex<Vec<GroupId>>,
    apis: Vec<flume::Sender<ApiRequest>>,
}

impl AdminService {
    pub fn new(
        cluster_id: u64,
        node: NodeId,
        election_priority: u8,
        groups: Vec<GroupId>,
        apis: Vec<flume::Sender<ApiRequest>>,
    ) -> Self {
        AdminService {
            cluster_id,
            node,
            election_priority,
            groups: std::sync::Mutex::new(groups),
            apis,
        }
    }

    /// A group created at run time is served from now on.
    pub fn add_group(&self, group: GroupId) {
        let mut groups = self.groups.lock().expect("not poisoned");
        if !groups.contains(&group) {
            groups.push(group);
        }
    }

    /// A group removed at run time is no longer served.
    pub fn remove_group(&self, group: GroupId) {
        self.groups.lock().expect("not poisoned").retain(|&g| g != group);
    }

    fn groups(&self) -> Vec<GroupId> {
        self.groups.lock().expect("not poisoned").clone()
    }

    /// Every node's shard addresses the shards know (a node's list from
    /// the first shard that knows it: each lists all of its shards).
    async fn addresses(&self) -> Result<Vec<coraft_net::admin::NodeAddresses>, AdminError> {
        let mut known: std::collections::BTreeMap<NodeId, Vec<SocketAddr>> = Default::default();
        for api in &self.apis {
            let (reply, answer) = flume::bounded(1);
            api.try_send(ApiRequest::Addresses { reply })
                .map_err(|_| AdminError::Busy {
                    bound: "API_QUEUE_MAX".into(),
                })?;
            let book = answer.recv_async().await.map_err(|_| AdminError::Shutdown)?;
            for (node, addresses) in book {
                known.entry(node).or_insert(addresses);
            }
        }
        Ok(known
            .into_iter()
            .take(super::codec::CONFIGURATION_MEMBERS_MAX)
            .map(|(node, addresses)| coraft_net::admin::NodeAddresses {
                node: node.0,
                shard_addresses: addresses.iter().map(|a| a.to_string()).collect(),
            })
            .collect())
    }

    /// Every snapshot stream in flight on the node, by group: at most
    /// [`ADMIN_INSTALLS_MAX`] of them, and how many there are.
    async fn installs(&self) -> Result<AdminReply, AdminError> {
        let mut all = Vec::new();
        for api in &self.apis {
            let (reply, answer) = flume::bounded(1);
            api.try_send(ApiRequest::Installs { reply })
                .map_err(|_| AdminError::Busy {
                    bound: "API_QUEUE_MAX".into(),
                })?;
            all.extend(answer.recv_async().await.map_err(|_| AdminError::Shutdown)?);
        }
        all.sort_by_key(|(group, install)| (*group, install.direction, install.peer));
        let total = all.len() as u64;
        let installs = all
            .into_iter()
            .take(ADMIN_INSTALLS_MAX)
            .map(|(group, install)| InstallReport {
                group: group.0,
                sending: install.direction == super::InstallDirection::Sending,
                peer: install.peer.0,
                snapshot_index: install.snapshot_index.0,
                snapshot_term: install.snapshot_term.0,
                total_bytes: install.total_bytes,
                sent_bytes: install.sent_bytes,
                acknowledged_bytes: install.acknowledged_bytes,
                elapsed_ms: install.elapsed.as_millis() as u64,
            })
            .collect();
        Ok(AdminReply::Installs { installs, total })
    }

    /// Each shard's state, by index. A shard whose request channel is
    /// closed, or that drops the question unanswered, has stopped.
    async fn shards(&self) -> Result<AdminReply, AdminError> {
        let mut reports = Vec::with_capacity(self.apis.len());
        for (shard, api) in self.apis.iter().enumerate() {
            let (reply, answer) = flume::bounded(1);
            let health = match api.try_send(ApiRequest::Health { reply }) {
                Ok(()) => answer.recv_async().await.ok(),
                Err(flume::TrySendError::Disconnected(_)) => None,
                Err(flume::TrySendError::Full(_)) => {
                    return Err(AdminError::Busy {
                        bound: "API_QUEUE_MAX".into(),
                    })
                }
            };
            reports.push(match health {
                None => ShardReport {
                    shard: shard as u32,
                    state: ShardState::Stopped,
                    groups: 0,
                    reason: STOPPED_REASON.into(),
                },
                Some(ShardHealth { groups, failed: None }) => ShardReport {
                    shard: shard as u32,
                    state: ShardState::Serving,
                    groups,
                    reason: String::new(),
                },
                Some(ShardHealth {
                    groups,
                    failed: Some(reason),
                }) => ShardReport {
                    shard: shard as u32,
                    state: ShardState::Failed,
                    groups,
                    reason: bounded_reason(reason),
                },
            });
        }
        Ok(AdminReply::Shards(reports))
    }

    /// The cluster this node belongs to.
    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    fn handle(&self, group: u64) -> GroupHandle {
        let shard = (group % self.apis.len() as u64) as usize;
        GroupHandle::new(GroupId(group), self.apis[shard].clone())
    }

    /// The answer to a request whose body could not be read.
    pub fn unreadable(&self, reason: String) -> AdminResponseFrame {
        self.respond(
            0,
            Err(AdminError::BadRequest {
                reason: bounded_reason(format!(
                    "the admin request does not read as admin protocol version {ADMIN_PROTOCOL_VERSION}: {reason}"
                )),
            }),
        )
    }

    fn respond(&self, request_id: u64, result: Result<AdminReply, AdminError>) -> AdminResponseFrame {
        AdminResponseFrame {
            version: ADMIN_PROTOCOL_VERSION,
            request_id,
            node_id: self.node.0,
            result,
        }
    }

    /// The busy answer to a request that could not be queued.
    pub fn busy(&self, request_id: u64) -> AdminResponseFrame {
        self.respond(
            request_id,
            Err(AdminError::Busy {
                bound: "ADMIN_REQUESTS_QUEUED_MAX".into(),
            }),
        )
    }

    /// Serves one request.
    pub async fn serve(&self, frame: AdminRequestFrame) -> AdminResponseFrame {
        // Every request of a served older version reads and answers alike
        // in this one; `Addresses` in every version that has it (a node
        // joining from an older build asks it of this one).
        let oldest = match frame.request {
            AdminRequest::Installs => ADMIN_INSTALLS_VERSION_MIN,
            AdminRequest::Shards => ADMIN_SHARDS_VERSION_MIN,
            AdminRequest::CreateGroup { .. } | AdminRequest::RemoveGroup { .. } => ADMIN_GROUPS_VERSION_MIN,
            AdminRequest::Addresses => ADMIN_ADDRESSES_VERSION_MIN,
            _ => ADMIN_SERVED_VERSION_MIN,
        };
        let result = if !(oldest..=ADMIN_PROTOCOL_VERSION).contains(&frame.version) {
            Err(AdminError::UnsupportedVersion {
                found: frame.version,
                supported: ADMIN_PROTOCOL_VERSION,
            })
        } else if frame.cluster_id != self.cluster_id {
            Err(AdminError::WrongCluster {
                expected: self.cluster_id,
                found: frame.cluster_id,
            })
        } else {
            self.execute(frame.version, frame.request).await
        };
        self.respond(frame.request_id, result)
    }

    async fn execute(&self, version: u16, request: AdminRequest) -> Result<AdminReply, AdminError> {
        // An asker that can ask for the shards' states learns of a stopped
        // shard from them: its groups are left out of a status instead of
        // failing it (an older asker gets the error, as before).
        let skip_stopped = version >= ADMIN_SHARDS_VERSION_MIN;
        match request {
            AdminRequest::Status { groups } => self.status(groups, skip_stopped).await.map(AdminReply::Status),
            AdminRequest::StatusPage { after, groups_max } => self
                .status_page(after, groups_max, skip_stopped)
                .await
                .map(AdminReply::Status),
            AdminRequest::TransferLeader { group, to } => {
                self.hosted(group)?;
                self.handle(group)
                    .transfer_leader(NodeId(to))
                    .await
                    .map_err(|error| match error {
                        // The core's refusal of the target ("not a voter",
                        // "already the leader") is the caller's mistake.
                        Error::Config(reason) => AdminError::BadRequest {
                            reason: bounded_reason(format!("transfer of group {group} to node {to}: {reason}")),
                        },
                        other => admin_error(group, other),
                    })?;
                Ok(AdminReply::TransferStarted)
            }
            AdminRequest::Snapshot { group } => {
                self.hosted(group)?;
                let index = self.handle(group).snapshot().await.map_err(|e| admin_error(group, e))?;
                Ok(AdminReply::Snapshot { index: index.0 })
            }
            AdminRequest::AddLearner { group, member } => {
                self.hosted(group)?;
                let peer = self.peer_spec(&member, true)?;
                changed(group, self.handle(group).add_learner(peer).await)
            }
            AdminRequest::Promote { group, node } => {
                self.hosted(group)?;
                changed(group, self.handle(group).promote_learner(node_id(node)?).await)
            }
            AdminRequest::AddVoter { group, member } => {
                self.hosted(group)?;
                let peer = self.peer_spec(&member, true)?;
                changed(group, self.handle(group).add_voter(peer).await)
            }
            AdminRequest::Remove { group, node } => {
                self.hosted(group)?;
                changed(group, self.handle(group).remove_member(node_id(node)?).await)
            }
            AdminRequest::Change { group, voters } => {
                self.hosted(group)?;
                let voters = self.members(&voters, |member| self.peer_spec(member, false))?;
                changed(group, self.handle(group).change_members(voters).await)
            }
            AdminRequest::Addresses => self.addresses().await.map(AdminReply::Addresses),
            AdminRequest::Installs => self.installs().await,
            AdminRequest::Shards => self.shards().await,
            AdminRequest::CreateGroup { group, voters } => {
                let voters = self.members(&voters, |&node| node_id(node))?;
                self.on_group_shard(group, |reply| ApiRequest::CreateGroup {
                    group: GroupId(group),
                    voters,
                    reply: Some(reply),
                })
                .await?;
                Ok(AdminReply::GroupCreated { group })
            }
            AdminRequest::RemoveGroup { group } => {
                self.on_group_shard(group, |reply| ApiRequest::RemoveGroup {
                    group: GroupId(group),
                    reply,
                })
                .await?;
                Ok(AdminReply::GroupRemoved { group })
            }
            AdminRequest::ResetPeers {
                group,
                voters,
                confirm_data_loss,
            } => {
                self.hosted(group)?;
                if !confirm_data_loss {
                    return Err(AdminError::BadRequest {
                        reason: "reset-peers can lose acknowledged writes and is refused without \
                                 confirm_data_loss"
                            .into(),
                    });
                }
                let voters = self.members(&voters, |&node| node_id(node))?;
                crate::logging::group_span(GroupId(group)).in_scope(|| {
                    log::warn!(
                        "node {}: an admin request resets group {group} to voters {voters:?} without consensus \
                         (acknowledged writes only the lost nodes held are lost)",
                        self.node
                    )
                });
                changed(group, self.handle(group).reset_peers(voters).await)
            }
        }
    }

    /// Sends the request `make` builds to the shard that hosts (or would
    /// host) `group` and waits for its answer: a group created or removed
    /// at run time (`group_creation.rs`). The shard's refusal
    /// ([`Error::Config`]: a configured group, voters without this node, a
    /// snapshot in flight) is the caller's to fix: [`AdminError::BadRequest`].
    async fn on_group_shard(
        &self,
        group: u64,
        make: impl FnOnce(flume::Sender<Result<(), Error>>) -> ApiRequest,
    ) -> Result<(), AdminError> {
        let shard = (group % self.apis.len() as u64) as usize;
        let (reply, answer) = flume::bounded(1);
        self.apis[shard].try_send(make(reply)).map_err(|error| match error {
            flume::TrySendError::Full(_) => AdminError::Busy {
                bound: "API_QUEUE_MAX".into(),
            },
            flume::TrySendError::Disconnected(_) => AdminError::Shutdown,
        })?;
        match answer.recv_async().await.map_err(|_| AdminError::Shutdown)? {
            Ok(()) => Ok(()),
            Err(Error::Config(reason)) => Err(AdminError::BadRequest {
                reason: bounded_reason(reason),
            }),
            Err(error) => Err(admin_error(group, error)),
        }
    }

    /// Each of `members` through `each`, at most [`ADMIN_MEMBERS_MAX`] of them.
    fn members<T, U>(&self, members: &[T], each: impl Fn(&T) -> Result<U, AdminError>) -> Result<Vec<U>, AdminError> {
        if members.len() > ADMIN_MEMBERS_MAX {
            return Err(AdminError::BadRequest {
                reason: format!(
                    "{} members named, more than ADMIN_MEMBERS_MAX ({ADMIN_MEMBERS_MAX})",
                    members.len()
                ),
            });
        }
        members.iter().map(each).collect()
    }

    /// A member's [`PeerSpec`]: shard `s` of a node listens on its address's
    /// port + `s`, as `coraft-node` binds them, and every node of a cluster
    /// runs as many shards as this one.
    fn peer_spec(&self, member: &MemberSpec, address_required: bool) -> Result<PeerSpec, AdminError> {
        let id = node_id(member.node)?;
        let bad = |reason: String| AdminError::BadRequest {
            reason: bounded_reason(reason),
        };
        let shard_addresses = match &member.address {
            None if address_required => return Err(bad(format!("node {id} needs its address (ip:port)"))),
            None => Vec::new(),
            Some(text) => {
                let address: SocketAddr = text
                    .parse()
                    .map_err(|e| bad(format!("the address `{text}` of node {id} is not ip:port: {e}")))?;
                (0..self.apis.len())
                    .map(|shard| {
                        let port = u16::try_from(shard)
                            .ok()
                            .and_then(|s| address.port().checked_add(s))
                            .ok_or_else(|| {
                                bad(format!("node {id}: shard {shard}'s port (of {address}) exceeds 65535"))
                            })?;
                        Ok(SocketAddr::new(address.ip(), port))
                    })
                    .collect::<Result<_, AdminError>>()?
            }
        };
        Ok(PeerSpec { id, shard_addresses })
    }

    fn hosted(&self, group: u64) -> Result<(), AdminError> {
        if self.groups().contains(&GroupId(group)) {
            Ok(())
        } else {
            Err(AdminError::UnknownGroup { group })
        }
    }

    /// A group's report; `None` if its shard has stopped and
    /// `skip_stopped` says to leave such groups out.
    async fn group_report(&self, group: u64, skip_stopped: bool) -> Result<Option<GroupReport>, AdminError> {
        match self.handle(group).status().await {
            Ok(status) => Ok(Some(report_of(group, &status))),
            Err(Error::Shutdown) if skip_stopped => Ok(None),
            Err(error) => Err(admin_error(group, error)),
        }
    }

    async fn status(&self, groups: Vec<u64>, skip_stopped: bool) -> Result<NodeReport, AdminError> {
        if groups.len() > ADMIN_STATUS_GROUPS_MAX {
            return Err(AdminError::BadRequest {
                reason: format!(
                    "a status request names {} groups, more than ADMIN_STATUS_GROUPS_MAX ({ADMIN_STATUS_GROUPS_MAX})",
                    groups.len()
                ),
            });
        }
        let groups: Vec<u64> = if groups.is_empty() {
            self.groups().iter().map(|g| g.0).collect()
        } else {
            groups
        };
        for &group in &groups {
            self.hosted(group)?;
        }
        let mut reports = Vec::with_capacity(groups.len());
        let mut bytes = 0;
        for group in groups {
            let Some(report) = self.group_report(group, skip_stopped).await? else {
                continue;
            };
            bytes += group_report_bytes_max(&report);
            if bytes > ADMIN_ANSWER_BYTES_MAX {
                return Err(AdminError::AnswerTooLarge {
                    bytes: bytes as u64,
                    bytes_max: ADMIN_ANSWER_BYTES_MAX as u64,
                });
            }
            reports.push(report);
        }
        Ok(self.report(reports))
    }

    /// The hosted groups above `after`, at most `groups_max` of them and
    /// [`ADMIN_ANSWER_BYTES_MAX`] bytes (but at least one, if any is left).
    /// Groups left out for `skip_stopped` do not count, so that a page is
    /// empty only when no group is left.
    async fn status_page(&self, after: u64, groups_max: u32, skip_stopped: bool) -> Result<NodeReport, AdminError> {
        if groups_max == 0 || groups_max > ADMIN_STATUS_PAGE_GROUPS_MAX {
            return Err(AdminError::BadRequest {
                reason: format!(
                    "a status page of {groups_max} groups: ask for 1 to ADMIN_STATUS_PAGE_GROUPS_MAX \
                     ({ADMIN_STATUS_PAGE_GROUPS_MAX})"
                ),
            });
        }
        let mut hosted: Vec<u64> = self.groups().iter().map(|g| g.0).filter(|&g| g > after).collect();
        hosted.sort_unstable();
        let mut reports = Vec::new();
        let mut bytes = 0;
        for group in hosted {
            if reports.len() >= groups_max as usize {
                break;
            }
            let Some(report) = self.group_report(group, skip_stopped).await? else {
                continue;
            };
            bytes += group_report_bytes_max(&report);
            if bytes > ADMIN_ANSWER_BYTES_MAX {
                if reports.is_empty() {
                    return Err(AdminError::AnswerTooLarge {
                        bytes: bytes as u64,
                        bytes_max: ADMIN_ANSWER_BYTES_MAX as u64,
                    });
                }
                break;
            }
            reports.push(report);
        }
        Ok(self.report(reports))
    }

    fn report(&self, groups: Vec<GroupReport>) -> NodeReport {
        NodeReport {
            node: self.node.0,
            cluster_id: self.cluster_id,
            shards: self.apis.len() as u32,
            groups,
            election_priority: self.election_priority,
        }
    }
}

fn report_of(group: u64, status: &GroupStatus) -> GroupReport {
    let ids = |set: &std::collections::BTreeSet<NodeId>| set.iter().map(|n| n.0).collect();
    GroupReport {
        group,
        role: match status.role {
            Role::Follower => AdminRole::Follower,
            Role::PreCandidate => AdminRole::PreCandidate,
            Role::Candidate => AdminRole::Candidate,
            Role::Leader => AdminRole::Leader,
        },
        term: status.term.0,
        leader: status.leader.map(|n| n.0),
        commit_index: status.commit_index.0,
        applied_index: status.applied_index.0,
        last_index: status.last_index.0,
        snapshot_index: status.snapshot_index.0,
        quiesced: status.quiesced,
        voters: ids(&status.configuration.voters),
        outgoing_voters: ids(&status.configuration.outgoing_voters),
        learners: ids(&status.configuration.learners),
        peers: status
            .peers
            .iter()
            .map(|peer| PeerReport {
                node: peer.node.0,
                match_index: peer.match_index.0,
                next_index: peer.next_index.0,
                lag: peer.lag,
            })
            .collect(),
    }
}

/// A node id from a request: 0 is reserved.
fn node_id(node: u64) -> Result<NodeId, AdminError> {
    if node == 0 {
        return Err(AdminError::BadRequest {
            reason: "node id 0 is reserved".into(),
        });
    }
    Ok(NodeId(node))
}

/// The answer to a membership change.
fn changed(group: u64, result: Result<(), Error>) -> Result<AdminReply, AdminError> {
    result
        .map(|()| AdminReply::MembershipChanged)
        .map_err(|error| admin_error(group, error))
}

/// The wire's typed form of an engine error about `group`.
fn admin_error(group: u64, error: Error) -> AdminError {
    match error {
        Error::ChangeInProgress => AdminError::ChangeInProgress { group },
        Error::InvalidChange(reason) => AdminError::BadRequest {
            reason: bounded_reason(format!("group {group}: {reason}")),
        },
        Error::NotLeader { leader_hint } => AdminError::NotLeader {
            group,
            leader_hint: leader_hint.map(|n| n.0),
        },
        Error::UnknownGroup(_) | Error::GroupRemoved(_) => AdminError::UnknownGroup { group },
        Error::Busy { bound } => AdminError::Busy { bound: bound.into() },
        Error::Timeout => AdminError::Timeout,
        Error::Shutdown => AdminError::Shutdown,
        other => AdminError::Failed {
            reason: bounded_reason(other.to_string()),
        },
    }
}
