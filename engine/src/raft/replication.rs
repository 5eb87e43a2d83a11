//! Log replication (Raft §5.3) and commitment (§5.4.2): the leader's sending,
//! pipelining and commit rule, and the follower's consistency check.

use std::ops::Bound;

use super::config::PlantedBug;
use super::core::{RaftCore, READY_VECTOR_KEPT_MAX};
use super::message::{AppendOutcome, Message, MessageBody};
use super::progress::ProgressState;
use super::quorum::{has_quorum, quorum_value};
use super::types::{Entry, EntryPayload, LogIndex, NodeId, Role, Term};

impl RaftCore {
    pub(super) fn tick_leader(&mut self) {
        self.heartbeat_elapsed_ticks += 1;
        self.election_elapsed_ticks += 1;
        if self.election_elapsed_ticks >= self.config.election_timeout_ticks {
            self.election_elapsed_ticks = 0;
            self.drop_silent_lingering();
            if self.config.check_quorum {
                let id = self.config.id;
                let progress = &self.progress;
                let alive = has_quorum(self.membership.current(), |n| {
                    n == id || progress.get(&n).is_some_and(|p| p.recent_active)
                });
                if !alive {
                    // Thesis §6.2: a leader cut off from a quorum steps down.
                    let term = self.term;
                    self.become_follower(term, None);
                    self.ticks_since_leader_heard = self.config.election_timeout_ticks;
                    return;
                }
                for progress in self.progress.values_mut() {
                    progress.recent_active = false;
                }
            } else {
                // Without check-quorum only removed nodes that linger are
                // judged by `recent_active` (`drop_silent_lingering`).
                let current = self.membership.current().members();
                for (node, progress) in self.progress.iter_mut() {
                    if !current.contains(node) {
                        progress.recent_active = false;
                    }
                }
            }
        }
        if let Some(transfer) = &mut self.transfer {
            transfer.elapsed_ticks += 1;
            if transfer.elapsed_ticks >= self.config.election_timeout_ticks {
                self.transfer = None;
            }
        }
        let snapshot_timeout = self.config.snapshot_timeout_ticks;
        for progress in self.progress.values_mut() {
            if let ProgressState::Snapshot { .. } = progress.state {
                progress.snapshot_elapsed_ticks += 1;
                if progress.snapshot_elapsed_ticks >= snapshot_timeout {
                    progress.become_probe();
                }
            }
        }
        if self.heartbeat_elapsed_ticks >= self.config.heartbeat_interval_ticks {
            self.heartbeat_elapsed_ticks = 0;
            if self.leader_may_quiesce() {
                self.quiesce_leader();
            } else {
                self.broadcast_heartbeat();
            }
        }
    }

    /// Sends `to` the entries it lacks (or a snapshot). With `allow_empty`,
    /// an empty append carries the commit index. Returns whether anything went.
    pub(super) fn send_append(&mut self, to: NodeId, allow_empty: bool) -> bool {
        let Some(progress) = self.progress.get(&to) else {
            return false;
        };
        if progress.is_paused(self.config.inflight_messages_max, self.config.inflight_bytes_max) {
            return false;
        }
        let next = progress.next_index;
        let bytes_max = progress.append_bytes_max(self.config.append_bytes_max);
        let prev_log_index = next.prev();
        let Some(prev_log_term) = self.log.term_at(prev_log_index) else {
            return self.send_snapshot(to);
        };
        if next <= self.log.snapshot_index() {
            return self.send_snapshot(to);
        }
        // Into an emptied vector of an earlier append, if one was handed back.
        let mut entries = self.spare_append_entries.pop().unwrap_or_default();
        self.log.entries_from_into(next, bytes_max, &mut entries);
        if entries.is_empty() && !allow_empty {
            self.spare_append_entries.push(entries);
            return false;
        }
        let last = entries.last().map_or(prev_log_index, |e| e.index);
        let bytes: u64 = entries.iter().map(Entry::size_bytes).sum();
        let leader_commit = self.log.committed();
        if let Some(progress) = self.progress.get_mut(&to) {
            progress.sent(last, bytes);
        }
        self.send(
            to,
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
            },
        );
        true
    }

    pub(super) fn broadcast_append(&mut self) {
        self.send_append_to_each_peer(true);
    }

    /// `send_append` to every peer in the progress map's order, without
    /// collecting the peers into a vector at every proposal and commit:
    /// `send_append` needs `&mut self`, so the next peer is looked up after
    /// the one just served.
    pub(super) fn send_append_to_each_peer(&mut self, allow_empty: bool) {
        let mut next = self.progress.keys().next().copied();
        while let Some(peer) = next {
            self.send_append(peer, allow_empty);
            next = self
                .progress
                .range((Bound::Excluded(peer), Bound::Unbounded))
                .next()
                .map(|(&id, _)| id);
        }
    }

    /// Sends a heartbeat round to every peer; it also confirms waiting reads.
    pub(super) fn broadcast_heartbeat(&mut self) {
        let round = self.reads.start_round(self.now_ticks);
        let committed = self.log.committed();
        // Straight from the progress map into the outbox (what `send` does),
        // without a vector of the peers at every heartbeat of every group.
        let (group, from, term) = (self.config.group, self.config.id, self.term);
        for (&peer, progress) in &self.progress {
            self.out.messages.push(Message {
                group,
                from,
                to: peer,
                term,
                body: MessageBody::Heartbeat {
                    commit_index: committed.min(progress.match_index),
                    round,
                    quiesce: false,
                },
            });
        }
    }

    pub(super) fn handle_append_response(&mut self, from: NodeId, outcome: AppendOutcome) {
        let Some(progress) = self.progress.get_mut(&from) else {
            return;
        };
        progress.recent_active = true;
        match outcome {
            AppendOutcome::Accepted { match_index } => {
                let was_probing = progress.state == ProgressState::Probe;
                let updated = progress.acknowledge(match_index);
                if updated {
                    match progress.state {
                        ProgressState::Probe => progress.become_replicate(),
                        ProgressState::Snapshot { pending_index } if progress.match_index >= pending_index => {
                            progress.become_probe()
                        }
                        _ => {}
                    }
                } else if was_probing {
                    progress.probe_sent = false;
                }
                if !(updated && self.maybe_commit()) {
                    self.send_append(from, false);
                }
                if self.transfer.map(|t| t.target) == Some(from) {
                    self.advance_transfer(from);
                }
                // A removed node that lingered until it held its removal
                // (`sync_progress_with_configuration`) is let go.
                let lingering = !self.membership.current().contains(from)
                    && !self.membership.at(self.log.committed()).contains(from);
                if lingering
                    && self
                        .progress
                        .get(&from)
                        .is_some_and(|p| p.match_index >= self.membership.current_index())
                {
                    self.sync_progress_with_configuration();
                }
            }
            AppendOutcome::Rejected {
                rejected_index,
                hint_index,
                hint_term,
            } => {
                let (new_match_hint, _) = self.log.last_index_with_term_at_most(hint_index, hint_term);
                let progress = self.progress.get_mut(&from).expect("checked above");
                if progress.reject(rejected_index, new_match_hint) {
                    self.send_append(from, true);
                }
            }
        }
    }

    /// Advances the commit index to what a quorum has persisted, counting
    /// only entries of the current term (Raft §5.4.2). Returns whether it
    /// advanced (and then tells every follower).
    pub(super) fn maybe_commit(&mut self) -> bool {
        if self.role != Role::Leader {
            return false;
        }
        let id = self.config.id;
        let persisted = self.log.persisted().0;
        let progress = &self.progress;
        let quorum_index = LogIndex(quorum_value(self.membership.current(), |n| {
            if n == id {
                persisted
            } else {
                progress.get(&n).map_or(0, |p| p.match_index.0)
            }
        }));
        if quorum_index <= self.log.committed() {
            return false;
        }
        let of_current_term = self.log.term_at(quorum_index) == Some(self.term);
        if !of_current_term && self.config.planted_bug != PlantedBug::CommitPreviousTermByCounting {
            return false;
        }
        let previous = self.log.committed();
        self.log.commit_to(quorum_index);
        self.on_commit_advanced(previous);
        true
    }

    fn on_commit_advanced(&mut self, previous: LogIndex) {
        let committed = self.log.committed();
        let mut freed = 0;
        for index in previous.next().0..=committed.0 {
            if let Some(entry) = self.log.entry(LogIndex(index)) {
                if entry.term == self.term {
                    freed += entry.size_bytes();
                }
            }
        }
        self.uncommitted_bytes = self.uncommitted_bytes.saturating_sub(freed);
        if self.log.term_at(committed) == Some(self.term) {
            self.reads.on_commit_in_term(committed);
        }
        if self.membership_after_commit() {
            return;
        }
        // Followers with entries to receive get them now, carrying the new
        // commit index. An up-to-date follower is not sent an empty append
        // just for the commit index: it learns it with the next entries or
        // the next heartbeat (which carries it), as in SOFAJRaft and braft.
        // An immediate empty append per commit would make every write cost
        // each follower a second frame, a second turn and a second answer,
        // which at one client is about a third of all the messages.
        self.send_append_to_each_peer(false);
    }

    /// A follower's consistency check and append (Raft §5.3). The emptied
    /// `entries` vector is kept for the runtime to fill again
    /// (`take_received_entries_vector`).
    pub(super) fn handle_append(
        &mut self,
        from: NodeId,
        prev_log_index: LogIndex,
        prev_log_term: Term,
        mut entries: Vec<Entry>,
        leader_commit: LogIndex,
    ) {
        self.append_received(from, prev_log_index, prev_log_term, &mut entries, leader_commit);
        if entries.capacity() > 0 && entries.capacity() <= READY_VECTOR_KEPT_MAX {
            // Entries the log already held, or all of a rejected append.
            entries.clear();
            self.received_entries = Some(entries);
        }
    }

    /// [`handle_append`](Self::handle_append) with the entries moved out of
    /// `entries` as the log takes them.
    fn append_received(
        &mut self,
        from: NodeId,
        prev_log_index: LogIndex,
        prev_log_term: Term,
        entries: &mut Vec<Entry>,
        leader_commit: LogIndex,
    ) {
        let committed = self.log.committed();
        if prev_log_index < committed {
            // Everything up to the commit index already matches.
            self.send_after_persist(
                from,
                MessageBody::AppendEntriesResponse(AppendOutcome::Accepted { match_index: committed }),
            );
            return;
        }
        if !self.log.matches(prev_log_index, prev_log_term) {
            let (hint_index, hint_term) = self.log.last_index_with_term_at_most(prev_log_index, prev_log_term);
            let outcome = AppendOutcome::Rejected {
                rejected_index: prev_log_index,
                hint_index,
                hint_term,
            };
            self.send(from, MessageBody::AppendEntriesResponse(outcome));
            return;
        }
        let last_new = prev_log_index.plus(entries.len() as u64);
        if let Some(conflict) = self.log.find_conflict(entries) {
            assert!(
                conflict > committed,
                "node {} would overwrite committed entry {conflict} (commit {committed})",
                self.config.id
            );
            if conflict <= self.log.last_index() {
                self.log.truncate_from(conflict);
                self.membership.truncated_from(conflict);
            }
            let skip = (conflict.0 - prev_log_index.0 - 1) as usize;
            for entry in entries.drain(skip.min(entries.len())..) {
                if let EntryPayload::Configuration(conf) = &entry.payload {
                    self.configuration_appended(entry.index, (**conf).clone());
                }
                self.log.append([entry]);
            }
        }
        self.log.commit_to(leader_commit.min(last_new));
        let body = MessageBody::AppendEntriesResponse(AppendOutcome::Accepted { match_index: last_new });
        // Everything acknowledged must be durable: if it already is (an
        // append that only carried the commit index), answer at once.
        if self.log.persisted() >= last_new || self.config.planted_bug == PlantedBug::AcknowledgeBeforePersist {
            self.send(from, body);
        } else {
            self.send_after_persist(from, body);
        }
    }
}
