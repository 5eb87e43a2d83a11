//! Quiescence: an idle group stops ticking, so a node can host thousands of
//! groups that cost nothing while nobody writes to them (the idea of
//! CockroachDB's quiesced ranges).
//!
//! A leader whose group is idle — everything committed and durable, every
//! follower holding all of it and heard from lately, no read, transfer or
//! configuration change under way — sends one last heartbeat marked
//! `quiesce` and goes quiet: it sends no more heartbeats and its timers stop.
//! A follower that gets that heartbeat from its leader and holds everything
//! it commits goes quiet too: its election timer stops. A quiet core ignores
//! [`tick`](RaftCore::tick) except for counting time, so the runtime may skip
//! ticking it altogether.
//!
//! Anything else wakes a core: a proposal, a read, a transfer, a
//! configuration change, or any message but the quiescing heartbeat and its
//! answer. Waking forgets what time the core thought it was:
//! - a leader drops its lease and the rounds it remembers (acknowledgements
//!   that predate the wake must not confirm a read or extend a lease), starts
//!   a fresh check-quorum window and heartbeats at once;
//! - a follower restarts its election timer.
//!
//! A quiet follower keeps rejecting votes as long as it believes its leader
//! alive (thesis §4.2.3): its time since the leader was heard is frozen. The
//! runtime therefore watches each peer node with one message per node pair
//! and calls [`leader_unreachable`](RaftCore::leader_unreachable) when the
//! leader's node falls silent for an election timeout; and a vote requested
//! by the very leader a follower follows (it restarted and lost its
//! leadership) wakes the follower and is not refused for a live leader.
//!
//! Safety does not depend on any of this (no Raft safety rule reads a clock);
//! the lease does, and a quiet leader never holds one.

use super::core::RaftCore;
use super::message::{Message, MessageBody};
use super::progress::ProgressState;
use super::types::Role;

impl RaftCore {
    /// True while this core is quiet: its ticks do nothing but count time.
    pub fn is_quiesced(&self) -> bool {
        self.quiesced
    }

    /// The runtime lost contact with `leader`'s node for an election
    /// timeout. A quiet follower of that leader wakes and counts the leader
    /// as gone, so it may vote (and campaign) at once; other cores ignore it.
    pub fn leader_unreachable(&mut self, leader: super::types::NodeId) {
        if self.quiesced && self.role == Role::Follower && self.leader == Some(leader) {
            self.wake();
            self.ticks_since_leader_heard = self.config.election_timeout_ticks;
        }
    }

    /// Whether an idle leader may go quiet now.
    pub(super) fn leader_may_quiesce(&self) -> bool {
        if !self.config.quiesce || self.role != Role::Leader || self.transfer.is_some() {
            return false;
        }
        let last = self.log.last_index();
        let conf = self.membership.current();
        self.log.committed() == last
            && self.log.persisted() == last
            && self.reads.is_idle()
            && self.out.is_empty()
            && !conf.is_joint()
            && self.pending_configuration_index <= last
            && self.membership.current_index() <= last
            && self.progress.values().all(|p| {
                p.match_index == last
                    && p.state == ProgressState::Replicate
                    && p.inflights.count() == 0
                    && p.recent_active
            })
    }

    /// Sends the quiescing heartbeat and goes quiet.
    pub(super) fn quiesce_leader(&mut self) {
        let committed = self.log.committed();
        let round = self.reads.current_round();
        let peers: Vec<_> = self.progress.keys().copied().collect();
        for peer in peers {
            self.send(
                peer,
                MessageBody::Heartbeat {
                    commit_index: committed,
                    round,
                    quiesce: true,
                },
            );
        }
        self.reads.forget_lease();
        self.quiesced = true;
    }

    /// A follower told to go quiet does so if it holds everything committed.
    pub(super) fn follower_may_quiesce(&mut self) {
        let last = self.log.last_index();
        if self.config.quiesce && self.log.committed() == last && self.log.persisted() == last {
            self.quiesced = true;
        }
    }

    /// Whether `message` leaves a quiet core quiet: the quiescing heartbeat
    /// (and its repeats) at a follower, their answers at the leader.
    pub(super) fn keeps_quiet(&self, message: &Message) -> bool {
        message.term == self.term
            && match message.body {
                MessageBody::Heartbeat { quiesce, .. } => {
                    quiesce && self.role == Role::Follower && self.leader == Some(message.from)
                }
                MessageBody::HeartbeatResponse { .. } => self.role == Role::Leader,
                _ => false,
            }
    }

    /// Leaves the quiet state (no-op when awake).
    pub(super) fn wake(&mut self) {
        if !self.quiesced {
            return;
        }
        self.quiesced = false;
        self.election_elapsed_ticks = 0;
        self.heartbeat_elapsed_ticks = 0;
        if self.role == Role::Leader {
            self.reads.forget_lease();
            for progress in self.progress.values_mut() {
                progress.recent_active = false;
            }
            self.broadcast_heartbeat();
        } else {
            self.reset_election_timeout();
        }
    }
}
