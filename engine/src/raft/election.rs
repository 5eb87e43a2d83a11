//! Leader election (Raft §5.2, §5.4.1) with pre-vote (thesis §9.6) and
//! leadership transfer by TimeoutNow (thesis §3.10).

use super::config::PlantedBug;
use super::core::RaftCore;
use super::message::{Message, MessageBody};
use super::quorum::{vote_result, VoteResult};
use super::types::{NodeId, Role};

/// Why a node starts a campaign.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Campaign {
    /// Ask first whether a real election could be won.
    PreVote,
    /// Raise the term and ask for votes.
    Election,
    /// The leader asked this node to take over: voters skip the lease check.
    Transfer,
}

impl RaftCore {
    /// Only voters campaign; learners and removed nodes never do.
    pub(super) fn promotable(&self) -> bool {
        self.membership.current().is_voter(self.config.id)
    }

    pub(super) fn tick_election(&mut self) {
        self.election_elapsed_ticks += 1;
        if self.promotable() && self.election_elapsed_ticks >= self.randomized_election_timeout_ticks {
            self.election_elapsed_ticks = 0;
            let kind = if self.config.pre_vote {
                Campaign::PreVote
            } else {
                Campaign::Election
            };
            self.campaign(kind);
        }
    }

    pub(super) fn campaign(&mut self, kind: Campaign) {
        let vote_term = match kind {
            Campaign::PreVote => {
                self.become_pre_candidate();
                self.term.next()
            }
            Campaign::Election | Campaign::Transfer => {
                self.become_candidate();
                self.term
            }
        };
        let id = self.config.id;
        self.votes.insert(id, true);
        if vote_result(self.membership.current(), &self.votes) == VoteResult::Won {
            // A single-voter group wins at once.
            self.on_election_won();
            return;
        }
        let voters: Vec<NodeId> = {
            let conf = self.membership.current();
            conf.voters
                .union(&conf.outgoing_voters)
                .copied()
                .filter(|&v| v != id)
                .collect()
        };
        for voter in voters {
            let body = MessageBody::RequestVote {
                pre_vote: kind == Campaign::PreVote,
                last_log_index: self.log.last_index(),
                last_log_term: self.log.last_term(),
                leadership_transfer: kind == Campaign::Transfer,
            };
            let message = self.message(voter, vote_term, body);
            if kind == Campaign::PreVote {
                self.out.messages.push(message);
            } else {
                // The new term and the self-vote are persisted first.
                self.out.persisted_messages.push(message);
            }
        }
    }

    fn on_election_won(&mut self) {
        if self.role == Role::PreCandidate {
            self.campaign(Campaign::Election);
        } else {
            self.become_leader();
        }
    }

    /// Decides a vote or pre-vote request (Raft §5.2, §5.4.1; thesis §9.6).
    pub(super) fn handle_vote_request(&mut self, m: &Message) {
        let MessageBody::RequestVote {
            pre_vote,
            last_log_index,
            last_log_term,
            ..
        } = m.body
        else {
            return;
        };
        // A real vote: at most one candidate per term. A pre-vote: any
        // candidate for a later term (a live leader was ruled out by the
        // lease check in `step_term`).
        let can_vote = self.vote == Some(m.from)
            || (self.vote.is_none() && self.leader.is_none())
            || (pre_vote && m.term > self.term)
            || (self.config.planted_bug == PlantedBug::DoubleVote && self.leader.is_none());
        let log_ok = self.log.is_up_to_date(last_log_index, last_log_term)
            || self.config.planted_bug == PlantedBug::VoteWithoutLogCheck;
        let granted = can_vote && log_ok;
        let body = MessageBody::RequestVoteResponse { pre_vote, granted };
        if pre_vote {
            // Answer in the term asked about when granting, else our own.
            let term = if granted { m.term } else { self.term };
            let reply = self.message(m.from, term, body);
            self.out.messages.push(reply);
            return;
        }
        if granted {
            self.vote = Some(m.from);
            self.election_elapsed_ticks = 0;
        }
        // A vote counts only once it is on disk.
        if self.config.planted_bug == PlantedBug::VoteBeforePersist {
            self.send(m.from, body);
        } else {
            self.send_after_persist(m.from, body);
        }
    }

    pub(super) fn handle_vote_response(&mut self, from: NodeId, granted: bool) {
        if !self.membership.current().is_voter(from) {
            return;
        }
        self.votes.entry(from).or_insert(granted);
        match vote_result(self.membership.current(), &self.votes) {
            VoteResult::Won => self.on_election_won(),
            VoteResult::Lost => {
                let term = self.term;
                self.become_follower(term, None);
            }
            VoteResult::Pending => {}
        }
    }

    pub(super) fn handle_timeout_now(&mut self, from: NodeId) {
        if self.leader == Some(from) && self.promotable() {
            self.campaign(Campaign::Transfer);
        }
    }

    /// Asks the leader to hand leadership to `target` (thesis §3.10): catch it
    /// up, then send TimeoutNow; give up after an election timeout.
    pub fn transfer_leader(&mut self, target: NodeId) -> Result<(), super::error::RaftError> {
        self.wake();
        use super::error::RaftError;
        if self.role != Role::Leader {
            return Err(RaftError::NotLeader {
                leader_hint: self.leader,
            });
        }
        if target == self.config.id {
            return Err(RaftError::InvalidTransferTarget {
                target,
                reason: "already the leader",
            });
        }
        if !self.membership.current().voters.contains(&target) {
            return Err(RaftError::InvalidTransferTarget {
                target,
                reason: "not a voter",
            });
        }
        if self.transfer.map(|t| t.target) == Some(target) {
            return Ok(());
        }
        self.transfer = Some(super::core::Transfer {
            target,
            elapsed_ticks: 0,
        });
        self.advance_transfer(target);
        Ok(())
    }

    /// Sends TimeoutNow once the target has the whole log, else catches it up.
    pub(super) fn advance_transfer(&mut self, target: NodeId) {
        let caught_up = self.progress.get(&target).map(|p| p.match_index) == Some(self.log.last_index());
        if caught_up {
            // The target may win at once, bypassing leases: stop serving
            // lease reads for the rest of this term.
            self.reads.disable_lease();
            self.send(target, MessageBody::TimeoutNow);
        } else {
            self.send_append(target, true);
        }
    }
}
