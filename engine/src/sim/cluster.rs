//! The run loop: ticks, deliveries, disk completions, clients and faults, with
//! the checkers consulted after every event.

use std::collections::BTreeSet;
use std::rc::Rc;

use bytes::Bytes;

use crate::raft::{
    ConfChange, Configuration, GroupId, InitialState, LogIndex, Message, MessageBody, NodeId, RaftConfig, RaftCore,
    ReadMode, Ready, Role, SeededRng,
};

use super::checker::{CheckerKind, Checkers, Violation};
use super::clock::Clocks;
use super::network::{Network, NetworkFaults, Packet};
use super::node::{mix, PendingProposal, PendingRead, PendingWrite, Record, SimNode, StateMachine};
use super::{SimOptions, SimOutcome};

/// Bound on Ready rounds one event may cause before the simulator calls it a
/// livelock of the core.
const READY_ROUNDS_MAX: usize = 64;
/// Bound on messages delivered in one tick.
const DELIVERIES_PER_TICK_MAX: usize = 10_000;
const GROUP: GroupId = GroupId(1);
/// Length of the clients' busy and idle spells in runs with quiescence.
const CLIENT_PAUSE_TICKS: u64 = 64;

/// A simulated cluster.
pub struct Cluster {
    options: SimOptions,
    rng: SeededRng,
    nodes: Vec<SimNode>,
    initial: Configuration,
    read_mode: ReadMode,
    /// Flow-control bounds drawn per seed: one entry per append makes the
    /// windows where a leader holds only old-term entries (Raft §5.4.2,
    /// Figure 8) common; larger batches exercise pipelining.
    append_bytes_max: u64,
    inflight_messages_max: usize,
    network: Network,
    faults: NetworkFaults,
    /// Per-seed fault rates (swarm testing): one in N ticks.
    crash_one_in: u64,
    leader_fault_one_in: u64,
    restart_one_in: u64,
    /// One in N elections is followed within 0–3 ticks by a fault on the new
    /// leader (0: never).
    post_election_fault_one_in: u64,
    scheduled_leader_faults: Vec<(u64, usize)>,
    checkers: Checkers,
    now: u64,
    next_value: u64,
    next_read: u64,
    liveness_started_at_value: u64,
    liveness_acked: bool,
    outcome: SimOutcome,
    /// Snapshot data received with an InstallSnapshot, per node.
    incoming_snapshot: Vec<Option<Rc<StateMachine>>>,
    /// Print every event (replaying one seed with CORAFT_SIM_TRACE=1).
    trace: bool,
    /// Idle groups go quiet in this run (drawn per seed, outside the run's
    /// random stream so the other draws stay put).
    quiesce: bool,
    /// Per node, per peer: ticks the node has not been able to hear the peer
    /// (crashed, or the link cut). The runtime learns this from one message
    /// per node pair; at an election timeout a quiet follower of that peer
    /// is told its leader is unreachable.
    silent_ticks: Vec<Vec<u64>>,
    /// Each node's clock (skew, late bursts).
    clocks: Clocks,
    pre_vote: bool,
    check_quorum: bool,
}

impl Cluster {
    /// Builds the cluster of a run.
    pub fn new(options: SimOptions) -> Cluster {
        let mut rng = SeededRng::new(options.seed);
        let pre_vote = options.pre_vote.decide(options.seed, 0x9E7E);
        let check_quorum = options.check_quorum.decide(options.seed, 0xC0C0);
        // Lease reads need check-quorum (the draw is made either way, so the
        // other draws stay put).
        let read_mode = if rng.chance(1, 2) && check_quorum {
            ReadMode::Lease
        } else {
            ReadMode::Safe
        };
        let append_bytes_max = [1, 1, 64, 4096][rng.range(0, 4) as usize];
        let inflight_messages_max = [1, 4, 64][rng.range(0, 3) as usize];
        let crash_one_in = [50, 200, 1000][rng.range(0, 3) as usize];
        let leader_fault_one_in = [8, 20, 100, 1000][rng.range(0, 4) as usize];
        let restart_one_in = [3, 25][rng.range(0, 2) as usize];
        let post_election_fault_one_in = [0, 2, 5][rng.range(0, 3) as usize];
        let faults = NetworkFaults {
            drop_per_mille: [0, 50, 200][rng.range(0, 3) as usize],
            duplicate_per_mille: [0, 20][rng.range(0, 2) as usize],
            long_delay_per_mille: [0, 50, 200][rng.range(0, 3) as usize],
        };
        let initial = Configuration::with_voters((1..=options.nodes).map(NodeId));
        let total = options.nodes + 1;
        let mut cluster = Cluster {
            rng,
            nodes: Vec::new(),
            initial,
            read_mode,
            append_bytes_max,
            inflight_messages_max,
            network: Network::default(),
            faults,
            crash_one_in,
            leader_fault_one_in,
            restart_one_in,
            post_election_fault_one_in,
            scheduled_leader_faults: Vec::new(),
            checkers: Checkers::default(),
            now: 0,
            next_value: 1,
            next_read: 1,
            liveness_started_at_value: u64::MAX,
            liveness_acked: false,
            outcome: SimOutcome {
                seed: options.seed,
                ..SimOutcome::default()
            },
            incoming_snapshot: vec![None; total as usize],
            trace: std::env::var_os("CORAFT_SIM_TRACE").is_some(),
            quiesce: mix(options.seed, 0x71E7).is_multiple_of(2),
            silent_ticks: vec![vec![0; total as usize]; total as usize],
            clocks: Clocks::new(options.seed, total as usize, options.clock_faults),
            pre_vote,
            check_quorum,
            options,
        };
        for id in 1..=total {
            let core = cluster.new_core(
                NodeId(id),
                0,
                InitialState {
                    configuration: cluster.initial.clone(),
                    ..InitialState::default()
                },
            );
            cluster.nodes.push(SimNode::new(core));
        }
        cluster
    }

    fn new_core(&self, id: NodeId, incarnation: u64, initial: InitialState) -> RaftCore {
        let mut config = RaftConfig::new(id, GROUP);
        config.seed = mix(self.options.seed, mix(id.0, incarnation));
        config.read_mode = self.read_mode;
        config.planted_bug = self.options.planted_bug;
        config.inflight_messages_max = self.inflight_messages_max;
        config.append_bytes_max = self.append_bytes_max;
        config.quiesce = self.quiesce;
        config.pre_vote = self.pre_vote;
        config.check_quorum = self.check_quorum;
        RaftCore::new(config, initial).expect("simulator config is valid")
    }

    /// Runs both phases and the final checks.
    pub fn run(mut self) -> SimOutcome {
        for _ in 0..self.options.safety_ticks {
            self.inject_faults();
            self.clients_act();
            self.advance_tick();
            if !self.checkers.violations.is_empty() {
                return self.finish();
            }
        }
        self.start_liveness();
        let mut ticks = 0;
        while !self.liveness_acked && ticks < self.options.liveness_ticks_max {
            self.clients_act();
            self.advance_tick();
            ticks += 1;
            if !self.checkers.violations.is_empty() {
                return self.finish();
            }
        }
        if !self.liveness_acked {
            let states: Vec<String> = self
                .nodes
                .iter()
                .filter_map(|n| n.core.as_ref())
                .map(|c| {
                    format!(
                        "node {} {:?} term {} commit {} last {} persisted {} voters {:?} learners {:?} outgoing {:?} progress {:?}",
                        c.id(),
                        c.role(),
                        c.term(),
                        c.commit_index(),
                        c.last_index(),
                        c.persisted_index(),
                        c.configuration().voters,
                        c.configuration().learners,
                        c.configuration().outgoing_voters,
                        c.progress().iter().map(|(n, p)| (n.0, p.match_index.0, p.next_index.0, p.state)).collect::<Vec<_>>()
                    )
                })
                .collect();
            self.outcome.liveness_failure = Some(format!(
                "no write acknowledged within {} ticks after faults healed (leaders: {:?}); {}",
                self.options.liveness_ticks_max,
                self.leaders(),
                states.join("; ")
            ));
        } else {
            self.check_acknowledged_in_leader();
        }
        self.finish()
    }

    fn finish(mut self) -> SimOutcome {
        self.outcome.violations = std::mem::take(&mut self.checkers.violations);
        self.outcome.writes_acknowledged = self.checkers.acknowledged_writes.count() as u64;
        self.outcome.reads_confirmed = self.checkers.linearizable_reads.confirmed();
        self.outcome.reads_served = self.checkers.linearizable_reads.served();
        self.outcome.lease_reads = self.checkers.lease_safety.lease_reads();
        self.outcome.terms_with_leader = self.checkers.election_safety.terms_with_leader() as u64;
        self.outcome
    }

    fn leaders(&self) -> Vec<(u64, u64)> {
        self.nodes
            .iter()
            .filter_map(|n| n.core.as_ref())
            .filter(|c| c.role() == Role::Leader)
            .map(|c| (c.id().0, c.term().0))
            .collect()
    }

    fn start_liveness(&mut self) {
        self.network.heal();
        self.faults = NetworkFaults::NONE;
        for index in 0..self.nodes.len() {
            if self.nodes[index].core.is_none() {
                self.restart(index);
            }
        }
        self.liveness_started_at_value = self.next_value;
    }

    /// The final leader must hold every acknowledged write.
    fn check_acknowledged_in_leader(&mut self) {
        let leader = self
            .nodes
            .iter()
            .filter_map(|n| n.core.as_ref())
            .filter(|c| c.role() == Role::Leader)
            .max_by_key(|c| c.term());
        if let Some(core) = leader {
            let result = self
                .checkers
                .acknowledged_writes
                .check_leader(core.id().0, |index, term| {
                    core.snapshot().is_some_and(|s| s.index >= index) || core.term_at(index) == Some(term)
                });
            self.checkers.report(result);
        }
    }

    // ----- one tick -----

    fn advance_tick(&mut self) {
        self.now += 1;
        for index in 0..self.nodes.len() {
            let ticks = self.clocks.advance(index);
            if let Some(core) = self.nodes[index].core.as_mut() {
                // Like the runtime, do not tick a quiet core at all.
                for _ in 0..ticks {
                    if core.is_quiesced() {
                        self.outcome.quiesced_core_ticks += 1;
                    } else {
                        core.tick();
                    }
                }
                self.outcome.steps += 1;
                self.drive(index);
            }
        }
        self.watch_peers();
        let mut delivered = 0;
        while let Some(packet) = self.network.next_due(self.now) {
            self.deliver(packet);
            delivered += 1;
            if delivered >= DELIVERIES_PER_TICK_MAX {
                break;
            }
        }
        for index in 0..self.nodes.len() {
            self.complete_writes(index);
        }
    }

    /// The runtime's view of its peers' nodes: a peer not heard for an
    /// election timeout makes the quiet followers of its groups wake.
    fn watch_peers(&mut self) {
        let timeout = RaftConfig::new(NodeId(1), GROUP).election_timeout_ticks;
        for index in 0..self.nodes.len() {
            if self.nodes[index].core.is_none() {
                continue;
            }
            for peer in 0..self.nodes.len() {
                if peer == index {
                    continue;
                }
                let (from, to) = (NodeId(peer as u64 + 1), NodeId(index as u64 + 1));
                let heard = self.nodes[peer].core.is_some() && !self.network.is_cut(from, to);
                let silent = &mut self.silent_ticks[index][peer];
                *silent = if heard { 0 } else { *silent + 1 };
                if *silent == timeout {
                    if let Some(core) = self.nodes[index].core.as_mut() {
                        core.leader_unreachable(from);
                    }
                    self.drive(index);
                }
            }
        }
    }

    fn deliver(&mut self, packet: Packet) {
        let index = (packet.message.to.0 - 1) as usize;
        if index >= self.nodes.len() || self.nodes[index].core.is_none() {
            return;
        }
        self.outcome.steps += 1;
        if self.trace {
            let m = &packet.message;
            let detail = match &m.body {
                MessageBody::AppendEntries {
                    prev_log_index,
                    prev_log_term,
                    entries,
                    leader_commit,
                } => format!(
                    " prev ({},{}) entries {:?} commit {}",
                    prev_log_index.0,
                    prev_log_term.0,
                    entries.iter().map(|e| (e.index.0, e.term.0)).collect::<Vec<_>>(),
                    leader_commit.0
                ),
                MessageBody::AppendEntriesResponse(outcome) => format!(" {outcome:?}"),
                MessageBody::InstallSnapshot { meta } => format!(" snapshot ({},{})", meta.index.0, meta.term.0),
                other => format!(" {other:?}"),
            };
            eprintln!(
                "t{} deliver {}>{} term {} {}{detail}",
                self.now,
                m.from,
                m.to,
                m.term.0,
                m.body.kind()
            );
        }
        if packet.snapshot.is_some() {
            self.incoming_snapshot[index] = packet.snapshot;
        }
        // Stepped as the runtime steps a peer's message: through the check
        // of peer input, which must never refuse what a correct node sent.
        let refused = self.nodes[index]
            .core
            .as_mut()
            .expect("checked up")
            .step_checked(packet.message)
            .map_err(|violation| {
                Violation::new(
                    CheckerKind::PeerInputCheck,
                    format!("node {} refused a correct message: {violation}", index + 1),
                )
            });
        self.checkers.report(refused);
        self.drive(index);
        self.incoming_snapshot[index] = None;
    }

    fn complete_writes(&mut self, index: usize) {
        while self.nodes[index]
            .writes
            .front()
            .is_some_and(|w| w.complete_at <= self.now)
        {
            let write = self.nodes[index].writes.pop_front().expect("checked");
            self.outcome.steps += 1;
            for record in &write.records {
                let result = self.nodes[index]
                    .disk
                    .apply(record)
                    .map_err(|e| format!("disk of node {}: {e}", index + 1));
                self.checkers.report_harness(result);
            }
            for message in write.gated {
                self.put_on_wire(index, message);
            }
            if let Some((last_index, last_term)) = write.last_entry {
                if let Some(core) = self.nodes[index].core.as_mut() {
                    core.on_persisted(last_index, last_term);
                }
            }
            self.drive(index);
        }
    }

    // ----- the runtime's side of the core contract -----

    fn drive(&mut self, index: usize) {
        for _ in 0..READY_ROUNDS_MAX {
            let Some(core) = self.nodes[index].core.as_mut() else {
                return;
            };
            if !core.has_ready() {
                return;
            }
            let ready = core.take_ready();
            self.handle_ready(index, ready);
        }
        self.checkers.report_harness(Err(format!(
            "node {} kept producing Ready for {READY_ROUNDS_MAX} rounds",
            index + 1
        )));
    }

    fn handle_ready(&mut self, index: usize, ready: Ready) {
        let node_id = NodeId(index as u64 + 1);
        if self.trace {
            let entries: Vec<(u64, u64)> = ready.entries.iter().map(|e| (e.index.0, e.term.0)).collect();
            eprintln!(
                "t{} n{node_id} ready: soft {:?} hard {:?} snap {:?} trunc {:?} entries {entries:?} commit-apply {:?} send {:?} after {:?}",
                self.now,
                ready.soft_state,
                ready.hard_state,
                ready.snapshot.as_ref().map(|s| (s.index.0, s.term.0)),
                ready.truncate_from,
                ready.committed_entries.iter().map(|e| (e.index.0, e.term.0)).collect::<Vec<_>>(),
                ready.messages.iter().map(|m| format!("{}>{}:{}", m.from, m.to, m.body.kind())).collect::<Vec<_>>(),
                ready.persisted_messages.iter().map(|m| format!("{}>{}:{}", m.from, m.to, m.body.kind())).collect::<Vec<_>>(),
            );
        }
        // 1. Persist (later): snapshot, truncation, entries, hard state.
        let mut records = Vec::new();
        if let Some(meta) = &ready.snapshot {
            let data = self.incoming_snapshot[index]
                .clone()
                .expect("an installed snapshot arrived with its data");
            assert_eq!(data.applied_index, meta.index, "snapshot data matches its metadata");
            let result = self.checkers.log_matching.on_snapshot(node_id, meta.index);
            self.checkers.report(result);
            self.nodes[index].state_machine = (*data).clone();
            self.nodes[index].snapshot = Some((meta.clone(), data.clone()));
            self.outcome.snapshots_installed += 1;
            records.push(Record::Snapshot(meta.clone(), data));
        }
        let result = self
            .checkers
            .log_matching
            .on_append(node_id, ready.truncate_from, &ready.entries);
        self.checkers.report(result);
        if let Some(from) = ready.truncate_from {
            records.push(Record::Truncate(from));
        }
        for entry in &ready.entries {
            if matches!(entry.payload, crate::raft::EntryPayload::Configuration(_)) {
                self.outcome.configuration_changes += 1;
            }
        }
        let last_entry = ready.entries.last().map(|e| (e.index, e.term));
        if !ready.entries.is_empty() {
            records.push(Record::Entries(ready.entries.clone()));
        }
        if let Some(hard_state) = ready.hard_state {
            records.push(Record::HardState(hard_state));
        }
        let core = self.nodes[index].core.as_ref().expect("driving a live node");
        let (term, commit, role) = (core.term(), core.commit_index(), core.role());
        if let Some(soft) = ready.soft_state {
            if soft.role == Role::Leader {
                let result = self.checkers.election_safety.on_leader(soft.term, node_id);
                self.checkers.report(result);
                let result =
                    self.checkers
                        .leader_completeness
                        .on_leader(&self.checkers.log_matching, node_id, soft.term);
                self.checkers.report(result);
                if self.post_election_fault_one_in > 0
                    && self.liveness_started_at_value == u64::MAX
                    && self.rng.chance(1, self.post_election_fault_one_in)
                {
                    let at = self.now + self.rng.range(0, 4);
                    self.scheduled_leader_faults.push((at, index));
                }
            }
        }
        let previous_commit = self.checkers_commit_seen(index);
        let result = self.checkers.monotonic_state.on_state(node_id, term, commit);
        self.checkers.report(result);
        if commit > previous_commit {
            let result = self.checkers.log_matching.on_commit(node_id, previous_commit, commit);
            self.checkers.report(result);
            self.nodes[index].commit_seen = commit;
        }
        let _ = role;
        if !records.is_empty() {
            let latency = self.rng.range(0, 3);
            let after = self.nodes[index].writes.back().map_or(0, |w| w.complete_at);
            self.nodes[index].writes.push_back(PendingWrite {
                complete_at: (self.now + latency).max(after),
                records,
                gated: ready.persisted_messages,
                last_entry,
            });
        } else if let Some(last) = self.nodes[index].writes.back_mut() {
            last.gated.extend(ready.persisted_messages);
        } else {
            for message in ready.persisted_messages {
                self.put_on_wire(index, message);
            }
        }
        // 2. Send at once.
        for message in ready.messages {
            self.put_on_wire(index, message);
        }
        // 4. Apply, acknowledge, serve reads.
        for entry in &ready.committed_entries {
            let node = &mut self.nodes[index];
            node.state_machine.apply(entry);
            let (applied, digest) = (node.state_machine.applied_index, node.state_machine.digest);
            if let Some(proposal) = node.proposals.remove(&entry.index) {
                if proposal.term == entry.term {
                    self.checkers
                        .acknowledged_writes
                        .on_ack(entry.index, entry.term, proposal.value);
                    self.checkers.lease_safety.on_ack(entry.index, entry.term);
                    if proposal.value >= self.liveness_started_at_value {
                        self.liveness_acked = true;
                    }
                }
            }
            let result = self.checkers.state_machine_safety.on_apply(node_id, applied, digest);
            self.checkers.report(result);
        }
        for state in ready.read_states {
            if let Some(read) = self.nodes[index].reads.iter_mut().find(|r| r.context == state.context) {
                read.read_index = Some(state.index);
                self.checkers.linearizable_reads.on_confirmed();
            }
        }
        self.serve_reads(index, &ready.dropped_reads);
    }

    /// Serves every confirmed read whose index the state machine reached,
    /// from the state it holds now, and checks what each returned.
    fn serve_reads(&mut self, index: usize, dropped: &[u64]) {
        let node = &mut self.nodes[index];
        let applied = node.state_machine.applied_index;
        let mut served = Vec::new();
        node.reads.retain(|r| {
            if r.read_index.is_some_and(|i| i <= applied) {
                served.push(*r);
                return false;
            }
            !dropped.contains(&r.context)
        });
        for read in served {
            if let Some((term, floor)) = read.lease {
                let result = self
                    .checkers
                    .lease_safety
                    .on_served(index as u64 + 1, term, floor, applied);
                self.checkers.report(result);
            }
            let result =
                self.checkers
                    .linearizable_reads
                    .on_served(index as u64 + 1, read.context, read.floor, applied);
            self.checkers.report(result);
        }
    }

    fn checkers_commit_seen(&self, index: usize) -> LogIndex {
        self.nodes[index].commit_seen
    }

    fn put_on_wire(&mut self, index: usize, message: Message) {
        if let MessageBody::RequestVoteResponse {
            pre_vote: false,
            granted: true,
        } = message.body
        {
            self.checkers
                .vote_durability
                .on_vote_sent(message.from, message.term, message.to);
            let result = self
                .checkers
                .election_safety
                .on_vote_granted(message.from, message.term, message.to);
            self.checkers.report(result);
        }
        let snapshot = match &message.body {
            MessageBody::InstallSnapshot { meta } => {
                let data = self.nodes[index].snapshot.as_ref().map(|(_, d)| d.clone());
                assert!(
                    data.as_ref().is_some_and(|d| d.applied_index == meta.index),
                    "sent snapshot {} matches its data {:?}",
                    meta.index,
                    data.as_ref().map(|d| d.applied_index)
                );
                data
            }
            _ => None,
        };
        self.network
            .send(self.now, Packet { message, snapshot }, self.faults, &mut self.rng);
    }

    // ----- clients -----

    fn random_live_node(&mut self) -> Option<usize> {
        let live: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].core.is_some())
            .collect();
        if live.is_empty() {
            return None;
        }
        Some(live[self.rng.range(0, live.len() as u64) as usize])
    }

    fn clients_act(&mut self) {
        if self.quiesce && (self.now / CLIENT_PAUSE_TICKS) % 2 == 1 {
            // Runs where groups may go quiet alternate busy and idle spells,
            // so quiet groups meet crashes, partitions and the next write.
            return;
        }
        if self.rng.chance(2, 3) {
            self.client_write();
        }
        if self.rng.chance(1, 3) {
            self.client_read();
        }
        if self.rng.chance(1, 80) {
            self.take_snapshot();
        }
        if self.options.membership_changes && self.rng.chance(1, 60) {
            self.change_membership();
        }
        if self.rng.chance(1, 150) {
            self.transfer_leadership();
        }
    }

    fn client_write(&mut self) {
        let Some(index) = self.random_live_node() else { return };
        let value = self.next_value;
        self.next_value += 1;
        let core = self.nodes[index].core.as_mut().expect("live");
        if let Ok((at, term)) = core.propose(vec![Bytes::copy_from_slice(&value.to_le_bytes())]) {
            self.nodes[index].proposals.insert(at, PendingProposal { term, value });
            self.outcome.steps += 1;
            self.drive(index);
        }
    }

    fn client_read(&mut self) {
        let Some(index) = self.random_live_node() else { return };
        let context = self.next_read;
        self.next_read += 1;
        let floor = self
            .checkers
            .linearizable_reads
            .floor(self.checkers.acknowledged_writes.highest_index());
        let core = self.nodes[index].core.as_mut().expect("live");
        // A leader in lease mode with a valid lease answers at once, from
        // its lease alone.
        let lease = (core.role() == Role::Leader && self.read_mode == ReadMode::Lease && core.lease_valid())
            .then(|| (core.term(), self.checkers.lease_safety.floor_after(core.term())));
        let core = self.nodes[index].core.as_mut().expect("live");
        if core.read_index(context).is_ok() {
            self.nodes[index].reads.push(PendingRead {
                context,
                floor,
                lease,
                read_index: None,
            });
            self.outcome.steps += 1;
            self.drive(index);
        }
    }

    fn take_snapshot(&mut self) {
        let Some(index) = self.random_live_node() else { return };
        let latency = self.rng.range(0, 3);
        let keep = self.rng.range(0, 6);
        let now = self.now;
        let node = &mut self.nodes[index];
        let core = node.core.as_mut().expect("live");
        let applied = core.applied_index();
        if let Some(meta) = core.snapshot_created(applied) {
            core.compact(LogIndex(meta.index.0.saturating_sub(keep)));
            let data = Rc::new(node.state_machine.clone());
            node.snapshot = Some((meta.clone(), data.clone()));
            // Saved in order behind the writes already handed out.
            let after = node.writes.back().map_or(0, |w| w.complete_at);
            node.writes.push_back(PendingWrite {
                complete_at: (now + latency).max(after),
                records: vec![Record::LocalSnapshot(meta, data)],
                gated: Vec::new(),
                last_entry: None,
            });
        }
    }

    fn leader_index(&self) -> Option<usize> {
        (0..self.nodes.len()).find(|&i| self.nodes[i].core.as_ref().is_some_and(|c| c.role() == Role::Leader))
    }

    fn change_membership(&mut self) {
        let Some(index) = self.leader_index() else { return };
        let spare = NodeId(self.nodes.len() as u64);
        let core = self.nodes[index].core.as_mut().expect("leader is live");
        let conf = core.configuration().clone();
        let voters: Vec<NodeId> = conf.voters.iter().copied().collect();
        let pick = voters[self.rng.range(0, voters.len() as u64) as usize];
        let changes = if !conf.contains(spare) {
            vec![ConfChange::AddLearner(spare)]
        } else if conf.learners.contains(&spare) {
            if self.rng.chance(1, 2) {
                vec![ConfChange::AddVoter(spare)]
            } else {
                // Swap a voter for the learner: two voters change, so joint.
                vec![ConfChange::AddVoter(spare), ConfChange::AddLearner(pick)]
            }
        } else if voters.len() > 3 {
            vec![ConfChange::Remove(pick)]
        } else {
            let others: Vec<NodeId> = (1..=self.options.nodes)
                .map(NodeId)
                .filter(|n| !conf.voters.contains(n))
                .collect();
            match others.first() {
                Some(&other) => vec![ConfChange::AddVoter(other), ConfChange::AddLearner(spare)],
                None => return,
            }
        };
        if core.propose_conf_change(&changes).is_ok() {
            self.outcome.steps += 1;
            self.drive(index);
        }
    }

    fn transfer_leadership(&mut self) {
        let Some(index) = self.leader_index() else { return };
        let core = self.nodes[index].core.as_mut().expect("leader is live");
        let voters: Vec<NodeId> = core
            .configuration()
            .voters
            .iter()
            .copied()
            .filter(|&v| v != core.id())
            .collect();
        if voters.is_empty() {
            return;
        }
        let target = voters[self.rng.range(0, voters.len() as u64) as usize];
        if core.transfer_leader(target).is_ok() {
            self.drive(index);
        }
    }

    // ----- faults -----

    fn inject_faults(&mut self) {
        if self.rng.chance(1, self.crash_one_in) {
            if let Some(index) = self.random_live_node() {
                self.crash(index);
            }
        }
        // Leaders fail too: a crash or isolation right after an election is
        // what the dangerous schedules (Raft Figure 8) are made of.
        let now = self.now;
        let mut due: Vec<usize> = Vec::new();
        self.scheduled_leader_faults.retain(|&(at, index)| {
            if at <= now {
                due.push(index);
            }
            at > now
        });
        if self.rng.chance(1, self.leader_fault_one_in) {
            due.extend(self.leader_index());
        }
        for index in due {
            if self.nodes[index]
                .core
                .as_ref()
                .is_some_and(|c| c.role() == Role::Leader)
            {
                if self.rng.chance(1, 2) {
                    self.crash(index);
                } else {
                    self.isolate(NodeId(index as u64 + 1));
                }
            }
        }
        for index in 0..self.nodes.len() {
            if self.nodes[index].core.is_none() && self.rng.chance(1, self.restart_one_in) {
                self.restart(index);
            }
        }
        if self.rng.chance(1, 100) {
            self.partition();
        }
        if self.network.cut_links() > 0 && self.rng.chance(1, 40) {
            self.network.heal();
        }
    }

    fn crash(&mut self, index: usize) {
        if self.trace {
            eprintln!(
                "t{} n{} CRASH (writes in flight: {})",
                self.now,
                index + 1,
                self.nodes[index].writes.len()
            );
        }
        self.outcome.crashes += 1;
        let result = self.nodes[index]
            .crash(&mut self.rng)
            .map_err(|e| format!("disk of node {}: {e}", index + 1));
        self.checkers.report_harness(result);
    }

    fn restart(&mut self, index: usize) {
        let node_id = NodeId(index as u64 + 1);
        if self.trace {
            let disk = &self.nodes[index].disk;
            eprintln!(
                "t{} n{node_id} RESTART hard {:?} snap {:?} log {:?}",
                self.now,
                disk.hard_state,
                disk.snapshot.as_ref().map(|(m, _)| (m.index.0, m.term.0)),
                disk.log.iter().map(|e| (e.index.0, e.term.0)).collect::<Vec<_>>()
            );
        }
        self.clocks.restart(index);
        let node = &mut self.nodes[index];
        node.incarnation += 1;
        let disk = node.disk.clone();
        let initial = InitialState {
            configuration: self.initial.clone(),
            hard_state: disk.hard_state,
            snapshot: disk.snapshot.as_ref().map(|(m, _)| m.clone()),
            entries: disk.log.clone(),
            loaded_snapshot: None,
        };
        let snapshot_index = initial.snapshot.as_ref().map_or(LogIndex(0), |m| m.index);
        let incarnation = node.incarnation;
        let core = self.new_core(node_id, incarnation, initial);
        let node = &mut self.nodes[index];
        node.state_machine = disk
            .snapshot
            .as_ref()
            .map_or_else(StateMachine::default, |(_, d)| (**d).clone());
        // Only the durable snapshot survives the crash.
        node.snapshot = disk.snapshot.clone();
        node.commit_seen = core.commit_index();
        node.core = Some(core);
        self.checkers
            .monotonic_state
            .on_restart(node_id, disk.hard_state.term, self.nodes[index].commit_seen);
        let result = self.checkers.vote_durability.on_restart(node_id, disk.hard_state);
        self.checkers.report(result);
        let result = self
            .checkers
            .log_matching
            .on_restart(node_id, snapshot_index, &disk.log);
        self.checkers.report(result);
        let commit = self.nodes[index].commit_seen;
        let result = self.checkers.log_matching.on_commit(node_id, snapshot_index, commit);
        self.checkers.report(result);
    }

    fn isolate(&mut self, node: NodeId) {
        for other in (1..=self.nodes.len() as u64).map(NodeId) {
            if other != node {
                self.network.cut(node, other);
                self.network.cut(other, node);
            }
        }
    }

    fn partition(&mut self) {
        let ids: Vec<NodeId> = (1..=self.nodes.len() as u64).map(NodeId).collect();
        let kind = self.rng.range(0, 3);
        let isolated: BTreeSet<NodeId> = match kind {
            // Isolate one node, both ways.
            0 => [ids[self.rng.range(0, ids.len() as u64) as usize]].into(),
            // A random split.
            1 => ids.iter().copied().filter(|_| self.rng.chance(1, 2)).collect(),
            // One way: one node cannot hear anyone (it can still send).
            _ => {
                let node = ids[self.rng.range(0, ids.len() as u64) as usize];
                for &other in &ids {
                    if other != node {
                        self.network.cut(other, node);
                    }
                }
                return;
            }
        };
        for &a in &isolated {
            for &b in &ids {
                if !isolated.contains(&b) {
                    self.network.cut(a, b);
                    self.network.cut(b, a);
                }
            }
        }
    }
}
