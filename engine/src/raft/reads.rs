//! Linearizable reads without log writes (Raft thesis §6.4): ReadIndex
//! confirmed by a heartbeat round acknowledged by a quorum, and lease reads
//! answered at once while a recent round's lease lasts (thesis §6.4.1).
//!
//! A read waits until the leader has committed an entry of its own term
//! (it then knows the latest commit index), records the commit index, and is
//! released once a heartbeat round *started after it arrived* is acknowledged
//! by a quorum. Reads arriving in one loop turn share one round: the round
//! starts when the runtime takes the [`Ready`](super::Ready).

use std::collections::VecDeque;

use super::config::{PlantedBug, ReadMode};
use super::core::RaftCore;
use super::error::RaftError;
use super::message::MessageBody;
use super::quorum::quorum_value;
use super::types::{LogIndex, NodeId, ReadState, Role};

/// Bound on reads a leader holds unconfirmed, its own and those its
/// followers forwarded: more of its own are refused as `Busy`, and a
/// follower's is answered at once without an index (its read is dropped,
/// and its client may retry).
pub const PENDING_READS_MAX: usize = 1 << 16;
/// Bound on the heartbeat rounds whose send time is remembered for leases.
pub const ROUND_HISTORY_MAX: usize = 64;

#[derive(Clone, Copy, Debug)]
struct PendingRead {
    context: u64,
    requester: Option<NodeId>,
    index: LogIndex,
    round: u64,
}

/// The leader's reads in flight and its lease.
#[derive(Debug, Default)]
pub(super) struct ReadTracker {
    round: u64,
    rounds_sent: VecDeque<(u64, u64)>,
    committed_in_term: bool,
    waiting_for_commit: Vec<(u64, Option<NodeId>)>,
    waiting_for_round: Vec<PendingRead>,
    pending: VecDeque<PendingRead>,
    lease_until_tick: u64,
    lease_disabled: bool,
}

impl ReadTracker {
    pub(super) fn start_term(&mut self) {
        self.rounds_sent.clear();
        self.committed_in_term = false;
        self.lease_until_tick = 0;
        self.lease_disabled = false;
    }

    /// Forgets every read (leadership is lost); returns them to be failed.
    pub(super) fn abandon(&mut self) -> Vec<(u64, Option<NodeId>)> {
        self.lease_until_tick = 0;
        let mut dropped: Vec<(u64, Option<NodeId>)> = self.waiting_for_commit.drain(..).collect();
        dropped.extend(self.waiting_for_round.drain(..).map(|r| (r.context, r.requester)));
        dropped.extend(self.pending.drain(..).map(|r| (r.context, r.requester)));
        dropped
    }

    fn len(&self) -> usize {
        self.waiting_for_commit.len() + self.waiting_for_round.len() + self.pending.len()
    }

    pub(super) fn needs_round(&self) -> bool {
        !self.waiting_for_round.is_empty()
    }

    /// No read waits for anything.
    pub(super) fn is_idle(&self) -> bool {
        self.len() == 0
    }

    /// Drops the lease and the rounds remembered for it: time stopped
    /// counting (a quiet leader), so no earlier round may confirm anything.
    pub(super) fn forget_lease(&mut self) {
        self.lease_until_tick = 0;
        self.rounds_sent.clear();
    }

    /// Starts a heartbeat round; reads that arrived before it ride on it.
    pub(super) fn start_round(&mut self, now_ticks: u64) -> u64 {
        self.round += 1;
        if self.rounds_sent.len() == ROUND_HISTORY_MAX {
            self.rounds_sent.pop_front();
        }
        self.rounds_sent.push_back((self.round, now_ticks));
        let round = self.round;
        self.pending
            .extend(self.waiting_for_round.drain(..).map(|r| PendingRead { round, ..r }));
        round
    }

    pub(super) fn current_round(&self) -> u64 {
        self.round
    }

    pub(super) fn on_commit_in_term(&mut self, committed: LogIndex) {
        if self.committed_in_term {
            return;
        }
        self.committed_in_term = true;
        let waiting = std::mem::take(&mut self.waiting_for_commit);
        self.waiting_for_round
            .extend(waiting.into_iter().map(|(context, requester)| PendingRead {
                context,
                requester,
                index: committed,
                round: 0,
            }));
    }

    pub(super) fn disable_lease(&mut self) {
        self.lease_disabled = true;
        self.lease_until_tick = 0;
    }

    fn lease_valid(&self, now_ticks: u64) -> bool {
        !self.lease_disabled && now_ticks < self.lease_until_tick
    }

    /// A quorum acknowledged rounds up to `round`: extend the lease from the
    /// time that round was sent. The reads it confirms are then taken one
    /// by one with [`ReadTracker::pop_confirmed`] (no vector per round).
    fn on_quorum_round(&mut self, round: u64, lease_ticks: u64) {
        while let Some(&(r, sent_tick)) = self.rounds_sent.front() {
            if r > round {
                break;
            }
            self.rounds_sent.pop_front();
            if r == round && !self.lease_disabled {
                self.lease_until_tick = self.lease_until_tick.max(sent_tick + lease_ticks);
            }
        }
    }

    /// The oldest read a quorum's acknowledgement of `round` confirms.
    fn pop_confirmed(&mut self, round: u64) -> Option<PendingRead> {
        if self.pending.front().is_some_and(|r| r.round <= round) {
            self.pending.pop_front()
        } else {
            None
        }
    }
}

impl RaftCore {
    /// Asks for a linearizable read identified by `context`. The answer comes
    /// as a [`ReadState`] (or in `dropped_reads`) of a later [`Ready`](super::Ready);
    /// a follower forwards the request to its leader.
    pub fn read_index(&mut self, context: u64) -> Result<(), RaftError> {
        self.wake();
        if self.reads.len() >= PENDING_READS_MAX {
            return Err(RaftError::Busy {
                uncommitted_bytes: self.reads.len() as u64,
                bound_bytes: PENDING_READS_MAX as u64,
            });
        }
        match (self.role, self.leader) {
            (Role::Leader, _) => {
                self.leader_read(context, None);
                Ok(())
            }
            (_, Some(leader)) => {
                self.send(leader, MessageBody::ReadIndex { context });
                Ok(())
            }
            (_, None) => Err(RaftError::NotLeader { leader_hint: None }),
        }
    }

    /// True while this leader may answer reads from its lease.
    pub fn lease_valid(&self) -> bool {
        self.role == Role::Leader && self.reads.committed_in_term && self.reads.lease_valid(self.now_ticks)
    }

    /// A follower's ReadIndex: held like the leader's own reads, within
    /// [`PENDING_READS_MAX`]; beyond it refused at once, so a flood of
    /// forwarded reads cannot grow the leader's memory.
    pub(super) fn peer_read(&mut self, context: u64, from: NodeId) {
        if self.reads.len() >= PENDING_READS_MAX {
            self.send(from, MessageBody::ReadIndexResponse { context, index: None });
            return;
        }
        self.leader_read(context, Some(from));
    }

    pub(super) fn leader_read(&mut self, context: u64, requester: Option<NodeId>) {
        if !self.reads.committed_in_term && self.config.planted_bug != PlantedBug::ReadBeforeCommitInTerm {
            self.reads.waiting_for_commit.push((context, requester));
            return;
        }
        let index = self.log.committed();
        let alone = {
            let conf = self.membership.current();
            !conf.is_joint() && conf.voters.len() == 1 && conf.voters.contains(&self.config.id)
        };
        if alone || (self.config.read_mode == ReadMode::Lease && self.lease_valid()) {
            self.release_read(context, requester, index);
            return;
        }
        self.reads.waiting_for_round.push(PendingRead {
            context,
            requester,
            index,
            round: 0,
        });
    }

    fn release_read(&mut self, context: u64, requester: Option<NodeId>, index: LogIndex) {
        match requester {
            None => self.out.read_states.push(ReadState { context, index }),
            Some(peer) => {
                // The follower serves the read once it has applied `index`;
                // commits are not pushed to up-to-date followers on their
                // own, so carry the commit index to it first.
                self.send_append(peer, true);
                self.send(
                    peer,
                    MessageBody::ReadIndexResponse {
                        context,
                        index: Some(index),
                    },
                )
            }
        }
    }

    pub(super) fn start_read_round_if_needed(&mut self) {
        if self.reads.needs_round() {
            self.heartbeat_elapsed_ticks = 0;
            self.broadcast_heartbeat();
            // A leader that is a quorum by itself (a single voter) hears no
            // answer to the round: it is confirmed as it starts.
            self.release_confirmed_reads();
        }
    }

    pub(super) fn handle_heartbeat_response(&mut self, from: NodeId, round: u64) {
        let Some(progress) = self.progress.get_mut(&from) else {
            return;
        };
        progress.heard_from();
        progress.acked_round = progress.acked_round.max(round);
        if progress.match_index < self.log.last_index() {
            // Even an empty append: if its predecessor was lost, the
            // follower's rejection moves the leader back to probing.
            self.send_append(from, true);
        }
        self.release_confirmed_reads();
    }

    /// Releases the reads whose round a quorum has acknowledged, this
    /// leader counting for the round it last started.
    fn release_confirmed_reads(&mut self) {
        let id = self.config.id;
        let current = self.reads.current_round();
        let progress = &self.progress;
        let quorum_round = quorum_value(self.membership.current(), |n| {
            if n == id {
                current
            } else {
                progress.get(&n).map_or(0, |p| p.acked_round)
            }
        });
        let lease_ticks = self.config.lease_ticks();
        self.reads.on_quorum_round(quorum_round, lease_ticks);
        while let Some(read) = self.reads.pop_confirmed(quorum_round) {
            self.release_read(read.context, read.requester, read.index);
        }
    }
}
