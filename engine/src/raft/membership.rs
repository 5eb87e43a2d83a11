//! Membership change (Raft thesis §4): joint consensus entered and left
//! automatically, single-voter changes applied directly, learners, and the
//! unsafe reset-peers recovery. A configuration takes effect as soon as it is
//! appended (thesis §4.1) and is undone if its entry is truncated.

use super::core::RaftCore;
use super::error::RaftError;
use super::message::MessageBody;
use super::progress::Progress;
use super::types::{Configuration, EntryPayload, LogIndex, NodeId, Role};

/// One requested membership change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfChange {
    /// Make a node a voter (promoting it if it is a learner).
    AddVoter(NodeId),
    /// Make a node a learner (demoting it if it is a voter).
    AddLearner(NodeId),
    /// Remove a node entirely.
    Remove(NodeId),
}

/// The configurations in the log: the one the snapshot carries and those
/// appended after it, newest last.
#[derive(Clone, Debug)]
pub(super) struct Membership {
    base_index: LogIndex,
    base: Configuration,
    appended: Vec<(LogIndex, Configuration)>,
    forced: Option<Configuration>,
}

impl Membership {
    pub(super) fn new(base_index: LogIndex, base: Configuration) -> Membership {
        Membership {
            base_index,
            base,
            appended: Vec::new(),
            forced: None,
        }
    }

    /// The configuration in force.
    pub(super) fn current(&self) -> &Configuration {
        if let Some(forced) = &self.forced {
            return forced;
        }
        self.appended.last().map_or(&self.base, |(_, c)| c)
    }

    /// Index of the entry that set the configuration in force.
    pub(super) fn current_index(&self) -> LogIndex {
        self.appended.last().map_or(self.base_index, |(i, _)| *i)
    }

    /// The configuration in force at `index`.
    pub(super) fn at(&self, index: LogIndex) -> &Configuration {
        self.appended
            .iter()
            .rev()
            .find(|(i, _)| *i <= index)
            .map_or(&self.base, |(_, c)| c)
    }

    pub(super) fn appended(&mut self, index: LogIndex, configuration: Configuration) {
        self.forced = None;
        self.appended.push((index, configuration));
    }

    pub(super) fn truncated_from(&mut self, from: LogIndex) {
        self.appended.retain(|(i, _)| *i < from);
    }

    pub(super) fn compacted_to(&mut self, index: LogIndex) {
        let base = self.at(index).clone();
        self.appended.retain(|(i, _)| *i > index);
        self.base = base;
        self.base_index = index;
    }

    pub(super) fn restored(&mut self, index: LogIndex, configuration: Configuration) {
        self.appended.clear();
        self.base = configuration;
        self.base_index = index;
        self.forced = None;
    }

    pub(super) fn take_forced(&mut self) -> Option<Configuration> {
        self.forced.take()
    }
}

/// Applies `changes` to `current`, choosing a simple change when at most one
/// voter is affected and a joint configuration otherwise.
fn next_configuration(current: &Configuration, changes: &[ConfChange]) -> Result<Configuration, RaftError> {
    let mut next = current.clone();
    for change in changes {
        match *change {
            ConfChange::AddVoter(n) => {
                next.learners.remove(&n);
                next.voters.insert(n);
            }
            ConfChange::AddLearner(n) => {
                next.voters.remove(&n);
                next.learners.insert(n);
            }
            ConfChange::Remove(n) => {
                next.voters.remove(&n);
                next.learners.remove(&n);
            }
        }
    }
    if next.voters.is_empty() {
        return Err(RaftError::InvalidConfigurationChange {
            reason: "no voter would remain",
        });
    }
    if next == *current {
        return Err(RaftError::InvalidConfigurationChange {
            reason: "the configuration would not change",
        });
    }
    let changed_voters = current.voters.symmetric_difference(&next.voters).count();
    if changed_voters <= 1 {
        return Ok(next);
    }
    // Joint consensus (thesis §4.3): old voters decide beside the new ones;
    // demoted voters stay voters of the outgoing half until the joint
    // configuration is left.
    let demoted: Vec<NodeId> = current
        .voters
        .iter()
        .copied()
        .filter(|n| next.learners.contains(n))
        .collect();
    for n in &demoted {
        next.learners.remove(n);
        next.learners_next.insert(*n);
    }
    next.outgoing_voters = current.voters.clone();
    Ok(next)
}

impl RaftCore {
    /// Proposes a membership change; returns the index of its entry.
    pub fn propose_conf_change(&mut self, changes: &[ConfChange]) -> Result<LogIndex, RaftError> {
        self.wake();
        if self.role != Role::Leader {
            return Err(RaftError::NotLeader {
                leader_hint: self.leader,
            });
        }
        if self.pending_configuration_index > self.log.committed() || self.membership.current().is_joint() {
            return Err(RaftError::ConfigurationChangePending);
        }
        let next = next_configuration(self.membership.current(), changes)?;
        let (index, _) = self.propose_payloads(vec![EntryPayload::Configuration(Box::new(next))])?;
        Ok(index)
    }

    /// A configuration entry was appended to the log: it is in force now.
    pub(super) fn configuration_appended(&mut self, index: LogIndex, configuration: Configuration) {
        self.membership.appended(index, configuration);
        if self.role == Role::Leader {
            self.sync_progress_with_configuration();
        }
    }

    /// Tracks the progress of every member of the configuration in force,
    /// and, until that configuration is committed, of the members of the
    /// committed one too: a removed node keeps receiving the log until the
    /// entry that removed it is committed, so it learns it was removed and
    /// stops campaigning (thesis §4.2.2). The removal can commit on the
    /// remaining voters before the removed node has the entry; such a node
    /// keeps its progress (it lingers: it counts for no quorum) until it has
    /// acknowledged the configuration in force, or until a check round of
    /// an election timeout passes without hearing from it
    /// (`drop_silent_lingering`).
    pub(super) fn sync_progress_with_configuration(&mut self) {
        let mut members = self.membership.current().members();
        members.extend(self.membership.at(self.log.committed()).members());
        let next = self.log.last_index().next();
        let in_force_at = self.membership.current_index();
        self.progress
            .retain(|n, p| members.contains(n) || p.match_index < in_force_at);
        for member in members {
            if member != self.config.id {
                self.progress.entry(member).or_insert_with(|| {
                    let mut progress = Progress::new(next);
                    progress.recent_active = true;
                    progress
                });
            }
        }
    }

    /// Once per election timeout at the leader: drops the progress of
    /// removed nodes that were not heard from during the round, and of
    /// those that hold the configuration in force (see
    /// `sync_progress_with_configuration`). Returns nothing: a node that
    /// never learns of its removal is then left alone, as in thesis §4.2.2.
    pub(super) fn drop_silent_lingering(&mut self) {
        let current = self.membership.current().members();
        let committed = self.membership.at(self.log.committed()).members();
        let in_force_at = self.membership.current_index();
        self.progress.retain(|n, p| {
            current.contains(n) || committed.contains(n) || (p.recent_active && p.match_index < in_force_at)
        });
    }

    /// After the commit index moved at the leader: leave a committed joint
    /// configuration, or step down if a committed configuration removed this
    /// node (thesis §4.2.2). Returns true if the node stepped down.
    pub(super) fn membership_after_commit(&mut self) -> bool {
        let committed = self.log.committed();
        if self.membership.current_index() > committed {
            return false;
        }
        // Borrowed, not cloned: this runs at every commit advance of a leader.
        let current = self.membership.current();
        if current.is_joint() && self.pending_configuration_index <= committed {
            let left = current.left_joint();
            self.propose_leave_joint(left);
            return false;
        }
        if self.progress.keys().any(|n| !current.contains(*n)) {
            // The removal is committed: stop replicating to removed nodes.
            self.sync_progress_with_configuration();
        }
        let current = self.membership.current();
        if !current.is_voter(self.config.id) {
            // A leader that removed itself hands leadership to the most
            // caught-up voter (the lowest id among equals; it must hold every
            // committed entry) before it steps down, so the group does not
            // wait out an election timeout (thesis §4.2.2, §3.10).
            let successor = current
                .voters
                .iter()
                .filter_map(|n| self.progress.get(n).map(|p| (p.match_index, *n)))
                .filter(|&(match_index, _)| match_index >= committed)
                .max_by_key(|&(match_index, n)| (match_index, std::cmp::Reverse(n)))
                .map(|(_, n)| n);
            if let Some(successor) = successor {
                self.reads.disable_lease();
                self.send(successor, MessageBody::TimeoutNow);
            }
            let term = self.term;
            self.become_follower(term, None);
            return true;
        }
        false
    }

    fn propose_leave_joint(&mut self, configuration: Configuration) {
        if self.transfer.is_some() {
            self.transfer = None;
        }
        let _ = self.propose_payloads(vec![EntryPayload::Configuration(Box::new(configuration))]);
    }

    /// Unsafe recovery when a quorum is lost for good: adopt `voters` as the
    /// configuration now, without consensus. Every surviving node must be
    /// given the same set; the next leader records it in the log.
    pub fn force_configuration(&mut self, voters: &[NodeId]) -> Result<(), RaftError> {
        self.wake();
        if voters.is_empty() {
            return Err(RaftError::InvalidConfigurationChange {
                reason: "no voter given",
            });
        }
        let configuration = Configuration::with_voters(voters.iter().copied());
        let term = self.term;
        self.become_follower(term, None);
        self.ticks_since_leader_heard = self.config.election_timeout_ticks;
        self.membership.forced = Some(configuration);
        Ok(())
    }
}
