//! Unit tests of the core: one per rule, each citing the paper (Raft §N) or
//! Ongaro's thesis (thesis §N). A tiny harness persists instantly and
//! delivers messages in order, except where a test holds them back.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::*;

pub(super) fn ids(n: u64) -> Vec<NodeId> {
    (1..=n).map(NodeId).collect()
}

pub(super) fn core(id: u64, voters: &[NodeId], tune: impl Fn(&mut RaftConfig)) -> RaftCore {
    let mut config = RaftConfig::new(NodeId(id), GroupId(1));
    tune(&mut config);
    let initial = InitialState {
        configuration: Configuration::with_voters(voters.iter().copied()),
        ..Default::default()
    };
    RaftCore::new(config, initial).expect("valid config")
}

/// Cores of one group; persists at once and routes messages on `settle`.
pub(super) struct Cluster {
    pub(super) cores: BTreeMap<NodeId, RaftCore>,
    /// Nodes whose incoming messages are dropped.
    pub(super) isolated: Vec<NodeId>,
    pub(super) applied: BTreeMap<NodeId, Vec<Entry>>,
    pub(super) reads: BTreeMap<NodeId, Vec<ReadState>>,
}

impl Cluster {
    pub(super) fn new(n: u64, tune: impl Fn(&mut RaftConfig)) -> Cluster {
        let voters = ids(n);
        let cores = voters.iter().map(|&id| (id, core(id.0, &voters, &tune))).collect();
        Cluster {
            cores,
            isolated: Vec::new(),
            applied: BTreeMap::new(),
            reads: BTreeMap::new(),
        }
    }

    pub(super) fn get(&mut self, id: u64) -> &mut RaftCore {
        self.cores.get_mut(&NodeId(id)).expect("node exists")
    }

    /// Takes every Ready, persists at once and delivers until quiet.
    pub(super) fn settle(&mut self) {
        self.settle_watching(|_, _| {});
    }

    /// [`Cluster::settle`], showing `watch` every message with the core
    /// that sent it, as it stood when the message left.
    pub(super) fn settle_watching(&mut self, mut watch: impl FnMut(&RaftCore, &Message)) {
        for _ in 0..1000 {
            let mut inbox = Vec::new();
            for (&id, core) in self.cores.iter_mut() {
                while core.has_ready() {
                    let ready = core.take_ready();
                    if let Some(last) = ready.entries.last() {
                        core.on_persisted(last.index, last.term);
                    }
                    self.applied.entry(id).or_default().extend(ready.committed_entries);
                    self.reads.entry(id).or_default().extend(ready.read_states);
                    for message in ready.messages.into_iter().chain(ready.persisted_messages) {
                        watch(core, &message);
                        inbox.push(message);
                    }
                }
            }
            if inbox.is_empty() {
                return;
            }
            for message in inbox {
                if self.isolated.contains(&message.to) || self.isolated.contains(&message.from) {
                    continue;
                }
                if let Some(core) = self.cores.get_mut(&message.to) {
                    core.step(message);
                }
            }
        }
        panic!("cluster did not settle");
    }

    /// Ticks node `id` until it campaigns, then settles.
    pub(super) fn elect(&mut self, id: u64) {
        // Nodes start inside the "a leader may be alive" guard (a restarted
        // node may have acknowledged a lease); age everyone past it.
        for core in self.cores.values_mut() {
            core.forget_leader();
        }
        let timeout = 2 * self.get(id).config().election_timeout_ticks + 20;
        for _ in 0..timeout {
            if self.get(id).role() != Role::Follower {
                break;
            }
            self.get(id).tick();
        }
        self.settle();
        assert_eq!(self.get(id).role(), Role::Leader, "node {id} should have won");
    }

    pub(super) fn tick_all(&mut self, ticks: u64) {
        for _ in 0..ticks {
            for core in self.cores.values_mut() {
                core.tick();
            }
            self.settle();
        }
    }
}

pub(super) fn payload(text: &'static str) -> Vec<Bytes> {
    vec![Bytes::from_static(text.as_bytes())]
}

/// A no-op entry at (`index`, `term`).
fn noop_entry(index: u64, term: u64) -> Entry {
    Entry {
        index: LogIndex(index),
        term: Term(term),
        payload: EntryPayload::Noop,
    }
}

/// AppendEntries from node 1 to node 2 in `term`, starting the log at index 1.
fn append_from_start(term: u64, entries: Vec<Entry>) -> Message {
    Message {
        group: GroupId(1),
        from: NodeId(1),
        to: NodeId(2),
        term: Term(term),
        body: MessageBody::AppendEntries {
            prev_log_index: LogIndex(0),
            prev_log_term: Term(0),
            entries,
            leader_commit: LogIndex(0),
        },
    }
}

#[test]
fn election_timeout_is_drawn_from_t_to_2t() {
    // Raft §5.2: randomized election timeouts spread out candidates.
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..200 {
        let c = core(1, &ids(3), |c| c.seed = seed);
        let t = c.config().election_timeout_ticks;
        assert!((t..2 * t).contains(&c.randomized_election_timeout_ticks));
        seen.insert(c.randomized_election_timeout_ticks);
    }
    assert!(seen.len() > 5, "timeouts should vary with the seed: {seen:?}");
}

#[test]
fn pre_vote_does_not_raise_the_term() {
    // Thesis §9.6: a pre-candidate asks first and changes neither term nor vote.
    let mut c = core(1, &ids(3), |_| {});
    for _ in 0..20 {
        c.tick();
    }
    assert_eq!(c.role(), Role::PreCandidate);
    assert_eq!(c.term(), Term(0));
    let ready = c.take_ready();
    assert!(ready
        .messages
        .iter()
        .all(|m| matches!(m.body, MessageBody::RequestVote { pre_vote: true, .. }) && m.term == Term(1)));
}

#[test]
fn elected_leader_appends_a_noop_and_commits_it() {
    // Raft §5.2 (majority wins) and §8 (a no-op commits earlier entries).
    let mut cluster = Cluster::new(3, |_| {});
    cluster.elect(1);
    let leader = cluster.get(1);
    assert_eq!(leader.term(), Term(1));
    assert_eq!(leader.commit_index(), LogIndex(1));
    // Followers learn the commit index with the next heartbeat.
    let heartbeat = cluster.get(1).config().heartbeat_interval_ticks;
    cluster.tick_all(heartbeat);
    assert_eq!(cluster.applied[&NodeId(2)][0].payload, EntryPayload::Noop);
}

#[test]
fn propose_from_takes_the_commands_and_leaves_the_callers_room_for_the_next_batch() {
    let mut cluster = Cluster::new(3, |_| {});
    cluster.elect(1);
    let mut commands = Vec::with_capacity(8);
    commands.extend([Bytes::from_static(b"a"), Bytes::from_static(b"b")]);
    let room = (commands.as_ptr(), commands.capacity());
    let (first, term) = cluster.get(1).propose_from(&mut commands).unwrap();
    assert!(commands.is_empty());
    assert_eq!((commands.as_ptr(), commands.capacity()), room);
    // A refused batch is taken all the same (the caller answers its waiters).
    commands.push(Bytes::from_static(b"c"));
    assert!(matches!(
        cluster.get(2).propose_from(&mut commands),
        Err(RaftError::NotLeader { .. })
    ));
    assert!(commands.is_empty());
    cluster.settle();
    assert_eq!(cluster.get(1).commit_index(), first.plus(1));
    let applied: Vec<_> = cluster.applied[&NodeId(1)]
        .iter()
        .filter(|e| e.index >= first)
        .map(|e| (e.index, e.term, e.payload.clone()))
        .collect();
    assert_eq!(
        applied,
        vec![
            (first, term, EntryPayload::Normal(Bytes::from_static(b"a"))),
            (first.plus(1), term, EntryPayload::Normal(Bytes::from_static(b"b"))),
        ]
    );
}

#[test]
fn an_up_to_date_follower_learns_a_commit_from_the_next_heartbeat_not_an_empty_append() {
    // The commit index rides on the next entries or the next heartbeat; a
    // commit alone sends no append to followers that have every entry.
    let mut cluster = Cluster::new(3, |_| {});
    cluster.elect(1);
    let heartbeat = cluster.get(1).config().heartbeat_interval_ticks;
    cluster.tick_all(heartbeat);
    let (index, _) = cluster.get(1).propose(payload("x")).unwrap();
    // Deliver the append and both answers, watching what the leader sends.
    let mut appends_after_commit = 0;
    cluster.settle_watching(|sender, message| {
        if message.from == NodeId(1) && sender.commit_index() >= index {
            if let MessageBody::AppendEntries { entries, .. } = &message.body {
                assert!(!entries.is_empty(), "an empty append only for the commit index");
                appends_after_commit += 1;
            }
        }
    });
    assert_eq!(cluster.get(1).commit_index(), index, "the write committed");
    assert_eq!(appends_after_commit, 0);
    assert!(cluster.get(2).commit_index() < index, "not told yet");
    cluster.tick_all(heartbeat);
    assert_eq!(cluster.get(2).commit_index(), index, "told by the heartbeat");
    assert_eq!(cluster.get(3).commit_index(), index);
}

#[test]
fn vote_is_sent_only_after_it_is_persisted() {
    // Raft Figure 2: votedFor is on stable storage before responding.
    let mut voter = core(2, &ids(3), |_| {});
    let request = Message {
        group: GroupId(1),
        from: NodeId(1),
        to: NodeId(2),
        term: Term(1),
        body: MessageBody::RequestVote {
            pre_vote: false,
            last_log_index: LogIndex(0),
            last_log_term: Term(0),
            leadership_transfer: true,
        },
    };
    voter.step(request);
    let ready = voter.take_ready();
    assert_eq!(ready.hard_state.map(|h| h.vote), Some(Some(NodeId(1))));
    assert!(ready.messages.is_empty());
    assert!(matches!(
        ready.persisted_messages[0].body,
        MessageBody::RequestVoteResponse { granted: true, .. }
    ));
}

#[test]
fn voter_rejects_a_candidate_whose_log_is_behind() {
    // Raft §5.4.1: vote only for a candidate at least as up to date.
    let mut cluster = Cluster::new(3, |_| {});
    cluster.elect(1);
    cluster.get(1).propose(payload("a")).unwrap();
    cluster.settle();
    let mut voter = cluster.cores.remove(&NodeId(2)).unwrap();
    voter.forget_leader();
    let request = Message {
        group: GroupId(1),
        from: NodeId(3),
        to: NodeId(2),
        term: Term(5),
        body: MessageBody::RequestVote {
            pre_vote: false,
            last_log_index: LogIndex(1),
            last_log_term: Term(1),
            leadership_transfer: true,
        },
    };
    voter.step(request);
    let ready = voter.take_ready();
    assert!(matches!(
        ready.persisted_messages[0].body,
        MessageBody::RequestVoteResponse { granted: false, .. }
    ));
}

impl RaftCore {
    pub(super) fn forget_leader(&mut self) {
        self.ticks_since_leader_heard = self.config.election_timeout_ticks;
    }
}

#[test]
fn follower_ignores_votes_while_it_hears_from_a_leader() {
    // Thesis §4.2.3: a live leader's followers do not let a partitioned node
    // disrupt the cluster.
    let mut cluster = Cluster::new(3, |_| {});
    cluster.elect(1);
    let follower = cluster.get(2);
    let request = Message {
        group: GroupId(1),
        from: NodeId(3),
        to: NodeId(2),
        term: Term(9),
        body: MessageBody::RequestVote {
            pre_vote: false,
            last_log_index: LogIndex(100),
            last_log_term: Term(8),
            leadership_transfer: false,
        },
    };
    follower.step(request);
    assert_eq!(follower.term(), Term(1));
    assert!(follower.take_ready().persisted_messages.is_empty());
}

#[test]
fn follower_rejects_append_with_mismatched_previous_entry_and_hints() {
    // Raft §5.3: the consistency check, with a hint to skip a term at once.
    let mut follower = core(2, &ids(3), |_| {});
    let append = Message {
        group: GroupId(1),
        from: NodeId(1),
        to: NodeId(2),
        term: Term(3),
        body: MessageBody::AppendEntries {
            prev_log_index: LogIndex(5),
            prev_log_term: Term(3),
            entries: vec![],
            leader_commit: LogIndex(0),
        },
    };
    follower.step(append);
    let ready = follower.take_ready();
    assert_eq!(
        ready.messages[0].body,
        MessageBody::AppendEntriesResponse(AppendOutcome::Rejected {
            rejected_index: LogIndex(5),
            hint_index: LogIndex(0),
            hint_term: Term(0)
        })
    );
}

#[test]
fn follower_replaces_a_conflicting_suffix() {
    // Raft §5.3: delete the conflicting entry and all that follow it.
    let mut follower = core(2, &ids(3), |_| {});
    let (entry, append) = (noop_entry, append_from_start);
    follower.step(append(1, vec![entry(1, 1), entry(2, 1), entry(3, 1)]));
    let first = follower.take_ready();
    assert_eq!(first.entries.len(), 3);
    follower.step(append(2, vec![entry(1, 1), entry(2, 2)]));
    let second = follower.take_ready();
    assert_eq!(second.truncate_from, Some(LogIndex(2)));
    assert_eq!(second.entries, vec![entry(2, 2)]);
    assert_eq!(follower.last_index(), LogIndex(2));
}

#[test]
fn leader_commits_entries_of_previous_terms_only_with_one_of_its_own() {
    // Raft §5.4.2: never commit a previous-term entry by counting replicas.
    let mut cluster = Cluster::new(3, |_| {});
    cluster.elect(1);
    cluster.isolated = vec![NodeId(2), NodeId(3)];
    cluster.get(1).propose(payload("old")).unwrap(); // index 2, term 1, only on node 1
    cluster.settle();
    // Node 1 loses leadership, then wins term 3 without a fresh quorum yet.
    let old_leader = cluster.get(1);
    old_leader.become_follower(Term(2), None);
    old_leader.become_candidate();
    old_leader.become_leader(); // appends its no-op at index 3, term 3
    let ready = old_leader.take_ready();
    let noop = ready.entries.last().unwrap();
    old_leader.on_persisted(noop.index, noop.term);
    let progress = old_leader.progress.get_mut(&NodeId(2)).unwrap();
    progress.become_replicate();
    old_leader.handle_append_response(
        NodeId(2),
        AppendOutcome::Accepted {
            match_index: LogIndex(2),
        },
    );
    assert_eq!(
        cluster.get(1).commit_index(),
        LogIndex(1),
        "index 2 is of term 1: not committed by counting"
    );
    cluster.get(1).handle_append_response(
        NodeId(2),
        AppendOutcome::Accepted {
            match_index: LogIndex(3),
        },
    );
    assert_eq!(cluster.get(1).commit_index(), LogIndex(3), "its own no-op commits both");
}

#[test]
fn leader_counts_its_own_entry_only_once_persisted() {
    // DESIGN: persistence before promise; the leader's match is its fsync.
    let mut alone = core(1, &ids(1), |_| {});
    while alone.role() != Role::Leader {
        alone.tick();
    }
    let noop = alone.take_ready();
    alone.on_persisted(noop.entries[0].index, noop.entries[0].term);
    let (index, term) = alone.propose(payload("x")).unwrap();
    assert_eq!(alone.commit_index(), index.prev());
    let _ = alone.take_ready();
    alone.on_persisted(index, term);
    assert_eq!(alone.commit_index(), index);
}

#[test]
fn stale_persist_report_of_a_replaced_entry_is_ignored() {
    // A persist report names (index, term): one for an entry replaced since
    // must not count.
    let mut follower = core(2, &ids(3), |_| {});
    let (entry, append) = (noop_entry, append_from_start);
    follower.step(append(1, vec![entry(1, 1), entry(2, 1)]));
    let _ = follower.take_ready();
    follower.step(append(2, vec![entry(1, 1), entry(2, 2)]));
    let _ = follower.take_ready();
    follower.on_persisted(LogIndex(2), Term(1));
    assert_eq!(follower.persisted_index(), LogIndex(0));
    follower.on_persisted(LogIndex(2), Term(2));
    assert_eq!(follower.persisted_index(), LogIndex(2));
}

#[test]
fn leader_without_a_quorum_steps_down() {
    // Thesis §6.2 (check-quorum): a leader that has not heard from a quorum
    // within an election timeout steps down.
    let mut cluster = Cluster::new(3, |_| {});
    cluster.elect(1);
    cluster.isolated = vec![NodeId(1)];
    for _ in 0..25 {
        cluster.get(1).tick();
        cluster.settle();
    }
    assert_eq!(cluster.get(1).role(), Role::Follower);
}

#[test]
fn read_index_waits_for_a_quorum_to_confirm_leadership() {
    // Thesis §6.4: the read is released only after a heartbeat round that
    // started after it is acknowledged by a majority.
    let mut cluster = Cluster::new(3, |_| {});
    cluster.elect(1);
    cluster.isolated = vec![NodeId(2), NodeId(3)];
    cluster.get(1).read_index(42).unwrap();
    cluster.settle();
    assert!(
        cluster.reads.get(&NodeId(1)).is_none_or(|r| r.is_empty()),
        "no quorum, no read"
    );
    cluster.isolated.clear();
    cluster.get(1).read_index(43).unwrap();
    cluster.settle();
    let reads = &cluster.reads[&NodeId(1)];
    let confirmed: Vec<u64> = reads.iter().map(|r| r.context).collect();
    assert_eq!(confirmed, vec![42, 43], "the round after the heal confirms both");
    assert!(reads.iter().all(|r| r.index == LogIndex(1)));
}

#[test]
fn a_lone_leaders_read_before_its_first_commit_is_answered_once_it_commits() {
    // Thesis §6.4: a read waits for the leader's first commit in its term,
    // then for a round; a single voter is its own quorum, so the round is
    // confirmed as soon as it starts. (No heartbeat answers ever come to
    // release it, so before the fix it waited for the client's timeout.)
    let mut cluster = Cluster::new(1, |_| {});
    for core in cluster.cores.values_mut() {
        core.forget_leader();
    }
    let timeout = 2 * cluster.get(1).config().election_timeout_ticks + 20;
    for _ in 0..timeout {
        if cluster.get(1).role() == Role::Leader {
            break;
        }
        cluster.get(1).tick();
    }
    assert_eq!(cluster.get(1).role(), Role::Leader);
    assert_eq!(
        cluster.get(1).commit_index(),
        LogIndex(0),
        "the no-op is not persisted yet"
    );
    cluster.get(1).read_index(5).unwrap();
    cluster.settle();
    assert_eq!(
        cluster.reads.get(&NodeId(1)).cloned().unwrap_or_default(),
        vec![ReadState {
            context: 5,
            index: LogIndex(1)
        }],
        "the read is answered once the no-op commits, without any tick"
    );
}

#[test]
fn follower_read_is_confirmed_by_the_leader() {
    // Thesis §6.4: a follower asks the leader for the read index.
    let mut cluster = Cluster::new(3, |_| {});
    cluster.elect(1);
    cluster.get(2).read_index(7).unwrap();
    cluster.settle();
    assert_eq!(
        cluster.reads[&NodeId(2)],
        vec![ReadState {
            context: 7,
            index: LogIndex(1)
        }]
    );
}

#[test]
fn lease_read_is_answered_without_a_round_while_the_lease_lasts() {
    // Thesis §6.4.1: within the lease, the leader answers at once.
    let mut cluster = Cluster::new(3, |c| c.read_mode = ReadMode::Lease);
    cluster.elect(1);
    cluster.tick_all(2); // a heartbeat round acknowledged by a quorum
    assert!(cluster.get(1).lease_valid());
    cluster.isolated = vec![NodeId(2), NodeId(3)];
    cluster.get(1).read_index(9).unwrap();
    cluster.settle();
    assert_eq!(
        cluster.reads[&NodeId(1)].last(),
        Some(&ReadState {
            context: 9,
            index: LogIndex(1)
        })
    );
    for _ in 0..12 {
        cluster.get(1).tick();
    }
    assert!(
        !cluster.get(1).lease_valid(),
        "the lease expires without acknowledgements"
    );
}

#[test]
fn two_voter_change_goes_through_a_joint_configuration_and_leaves_it() {
    // Thesis §4.3: joint consensus, left automatically once committed.
    let mut cluster = Cluster::new(3, |_| {});
    cluster.cores.insert(NodeId(4), core(4, &ids(3), |_| {}));
    cluster.elect(1);
    cluster
        .get(1)
        .propose_conf_change(&[ConfChange::AddVoter(NodeId(4)), ConfChange::Remove(NodeId(3))])
        .unwrap();
    cluster.settle();
    let conf = cluster.get(1).configuration().clone();
    assert!(!conf.is_joint(), "the joint configuration was left: {conf:?}");
    assert_eq!(conf.voters, [1, 2, 4].map(NodeId).into());
    let joint_seen = cluster.applied[&NodeId(2)]
        .iter()
        .any(|e| matches!(&e.payload, EntryPayload::Configuration(c) if c.is_joint()));
    assert!(joint_seen, "the change went through a joint configuration");
}

#[test]
fn learner_receives_the_log_but_never_campaigns() {
    // Thesis §4.2.1: non-voting members catch up without voting.
    let mut cluster = Cluster::new(3, |_| {});
    cluster.cores.insert(NodeId(4), core(4, &ids(3), |_| {}));
    cluster.elect(1);
    cluster
        .get(1)
        .propose_conf_change(&[ConfChange::AddLearner(NodeId(4))])
        .unwrap();
    cluster.settle();
    cluster.get(1).propose(payload("x")).unwrap();
    cluster.settle();
    // The learner has the entries; the commit index comes with a heartbeat.
    let heartbeat = cluster.get(1).config().heartbeat_interval_ticks;
    cluster.tick_all(heartbeat);
    assert_eq!(cluster.get(4).commit_index(), cluster.get(1).commit_index());
    cluster.isolated = vec![NodeId(1)];
    for _ in 0..100 {
        cluster.get(4).tick();
    }
    assert_eq!(cluster.get(4).role(), Role::Follower);
}

#[test]
fn second_configuration_change_waits_for_the_first() {
    // Thesis §4.1: one change at a time.
    let mut cluster = Cluster::new(3, |_| {});
    cluster.cores.insert(NodeId(4), core(4, &ids(3), |_| {}));
    cluster.elect(1);
    cluster.isolated = vec![NodeId(2), NodeId(3)];
    cluster
        .get(1)
        .propose_conf_change(&[ConfChange::AddLearner(NodeId(4))])
        .unwrap();
    assert_eq!(
        cluster.get(1).propose_conf_change(&[ConfChange::Remove(NodeId(2))]),
        Err(RaftError::ConfigurationChangePending)
    );
}

#[test]
fn new_leader_changes_membership_only_after_committing_in_its_term() {
    // Thesis §4.1 (the single-server change bug fix): a leader may change
    // membership only once an entry of its own term committed; otherwise a
    // change it makes may have no quorum in common with an uncommitted one
    // an earlier leader handed out.
    let mut cluster = Cluster::new(3, |_| {});
    cluster.cores.insert(NodeId(4), core(4, &ids(3), |_| {}));
    cluster.elect(1);
    let heartbeat = cluster.get(1).config().heartbeat_interval_ticks;
    cluster.tick_all(heartbeat);
    assert_eq!(
        cluster.get(2).commit_index(),
        LogIndex(1),
        "node 2 knows its whole log is committed"
    );
    // Node 2 wins a later term; its no-op (index 2) is not committed yet.
    cluster.isolated = ids(4);
    let leader = cluster.get(2);
    leader.become_follower(Term(2), None);
    leader.become_candidate();
    leader.become_leader();
    let ready = leader.take_ready();
    let noop = ready.entries.last().unwrap().clone();
    assert_eq!(noop.index, LogIndex(2));
    leader.on_persisted(noop.index, noop.term);
    assert_eq!(
        leader.propose_conf_change(&[ConfChange::AddLearner(NodeId(4))]),
        Err(RaftError::ConfigurationChangePending),
        "no change before the term's first entry commits"
    );
    leader.progress.get_mut(&NodeId(3)).unwrap().become_replicate();
    leader.handle_append_response(
        NodeId(3),
        AppendOutcome::Accepted {
            match_index: noop.index,
        },
    );
    assert_eq!(leader.commit_index(), noop.index);
    assert!(leader.propose_conf_change(&[ConfChange::AddLearner(NodeId(4))]).is_ok());
}

#[test]
fn leadership_transfer_hands_over_with_timeout_now() {
    // Thesis §3.10: catch the target up, send TimeoutNow, the target wins.
    let mut cluster = Cluster::new(3, |_| {});
    cluster.elect(1);
    cluster.get(1).propose(payload("x")).unwrap();
    cluster.settle();
    cluster.get(1).transfer_leader(NodeId(3)).unwrap();
    cluster.settle();
    assert_eq!(cluster.get(3).role(), Role::Leader);
    assert_eq!(cluster.get(1).role(), Role::Follower);
    assert_eq!(cluster.get(1).leader(), Some(NodeId(3)));
}

#[test]
fn transfer_refuses_proposals_and_aborts_after_an_election_timeout() {
    // Thesis §3.10: the leader stops taking proposals while transferring.
    let mut cluster = Cluster::new(3, |_| {});
    cluster.elect(1);
    cluster.isolated = vec![NodeId(3)];
    cluster.get(1).transfer_leader(NodeId(3)).unwrap();
    assert_eq!(
        cluster.get(1).propose(payload("y")),
        Err(RaftError::TransferInProgress { target: NodeId(3) })
    );
    for _ in 0..10 {
        cluster.get(1).tick();
    }
    assert!(cluster.get(1).propose(payload("y")).is_ok());
}

#[test]
fn lost_probe_is_retried_when_the_follower_answers_a_heartbeat() {
    // Regression: coraft-sim found leaders stalled forever behind a dropped
    // probe (seeds 2, 9, 29 of the first run, before the fix).
    let mut cluster = Cluster::new(3, |_| {});
    cluster.elect(1);
    cluster.isolated = vec![NodeId(3)];
    cluster.get(1).propose(payload("x")).unwrap();
    cluster.settle();
    cluster.isolated.clear();
    cluster.tick_all(4);
    assert_eq!(cluster.get(3).commit_index(), cluster.get(1).commit_index());
}

#[test]
fn a_follower_that_lost_entries_it_acknowledged_is_caught_up_from_what_it_still_holds() {
    // A disk that lied: node 3 acknowledged entries 1..=6, then restarted
    // with only 1..=3 (its last synced flush torn). Before the fix the
    // leader ignored its rejections at or below the old match index and
    // probed at match + 1 forever; node 3 never caught up.
    let mut cluster = Cluster::new(3, |_| {});
    cluster.elect(1);
    for _ in 0..5 {
        cluster.get(1).propose(payload("x")).unwrap();
        cluster.settle();
    }
    let last = cluster.get(1).last_index();
    assert_eq!(cluster.get(3).last_index(), last);
    let kept = cluster.get(1).log.entries_from(LogIndex(1), u64::MAX)[..3].to_vec();
    let mut hard_state = cluster.get(3).hard_state();
    hard_state.commit_index = hard_state.commit_index.min(LogIndex(3));
    let mut config = RaftConfig::new(NodeId(3), GroupId(1));
    config.election_timeout_ticks = cluster.get(3).config().election_timeout_ticks;
    let restarted = RaftCore::new(
        config,
        InitialState {
            configuration: Configuration::with_voters(ids(3)),
            hard_state,
            entries: kept,
            ..Default::default()
        },
    )
    .expect("valid state");
    cluster.cores.insert(NodeId(3), restarted);
    assert_eq!(cluster.get(3).last_index(), LogIndex(3));
    cluster.get(1).propose(payload("after")).unwrap();
    cluster.settle();
    cluster.tick_all(4);
    let leader_last = cluster.get(1).last_index();
    assert_eq!(cluster.get(3).last_index(), leader_last, "node 3 caught up");
    assert_eq!(cluster.get(3).commit_index(), cluster.get(1).commit_index());
    let leaders: Vec<Entry> = cluster.get(1).log.entries_from(LogIndex(1), u64::MAX);
    let followers: Vec<Entry> = cluster.get(3).log.entries_from(LogIndex(1), u64::MAX);
    assert_eq!(
        followers.iter().map(|e| (e.index, e.term)).collect::<Vec<_>>(),
        leaders.iter().map(|e| (e.index, e.term)).collect::<Vec<_>>()
    );
}

#[test]
fn lagging_follower_is_sent_a_snapshot_after_compaction() {
    // Raft §7: entries a follower needs were compacted; send the snapshot.
    let mut cluster = Cluster::new(3, |_| {});
    cluster.elect(1);
    cluster.isolated = vec![NodeId(3)];
    for _ in 0..5 {
        cluster.get(1).propose(payload("x")).unwrap();
        cluster.settle();
    }
    let applied = cluster.get(1).applied_index();
    let meta = cluster.get(1).snapshot_created(applied).unwrap();
    cluster.get(1).compact(meta.index);
    cluster.isolated.clear();
    cluster.tick_all(4);
    let follower = cluster.get(3);
    assert_eq!(follower.snapshot().map(|s| s.index), Some(meta.index));
    assert_eq!(follower.commit_index(), cluster.get(1).commit_index());
}

#[test]
fn reset_peers_lets_a_lone_survivor_lead() {
    // Unsafe recovery (SOFAJRaft resetPeers): a quorum is lost for good.
    let mut cluster = Cluster::new(3, |_| {});
    cluster.elect(1);
    cluster.isolated = vec![NodeId(1), NodeId(3)];
    cluster.get(2).force_configuration(&[NodeId(2)]).unwrap();
    for _ in 0..40 {
        cluster.get(2).tick();
        cluster.settle();
    }
    assert_eq!(cluster.get(2).role(), Role::Leader);
    assert_eq!(cluster.get(2).configuration().voters, [NodeId(2)].into());
}

#[test]
fn busy_when_uncommitted_bytes_exceed_the_bound() {
    let mut cluster = Cluster::new(3, |c| c.uncommitted_bytes_max = 100);
    cluster.elect(1);
    cluster.isolated = vec![NodeId(2), NodeId(3)];
    let big = vec![Bytes::from(vec![0u8; 80])];
    cluster.get(1).propose(big.clone()).unwrap();
    assert!(matches!(cluster.get(1).propose(big), Err(RaftError::Busy { .. })));
}

#[test]
fn config_validation_names_the_field() {
    let mut config = RaftConfig::new(NodeId(1), GroupId(1));
    config.heartbeat_interval_ticks = 10;
    assert!(matches!(
        config.validate(),
        Err(ConfigError::Invalid {
            field: "election_timeout_ticks",
            ..
        })
    ));
    let mut config = RaftConfig::new(NodeId(1), GroupId(1));
    config.read_mode = ReadMode::Lease;
    config.check_quorum = false;
    assert!(matches!(
        config.validate(),
        Err(ConfigError::Invalid { field: "read_mode", .. })
    ));
}

pub(super) fn message(from: u64, to: u64, term: u64, body: MessageBody) -> Message {
    Message {
        group: GroupId(1),
        from: NodeId(from),
        to: NodeId(to),
        term: Term(term),
        body,
    }
}

#[test]
fn node_that_sees_a_higher_term_becomes_its_follower() {
    // Raft §5.1: a server that sees a larger term updates its own and reverts
    // to follower.
    let mut cluster = Cluster::new(3, |_| {});
    cluster.elect(1);
    let leader = cluster.get(1);
    leader.step(message(2, 1, 7, MessageBody::HeartbeatResponse { round: 0 }));
    assert_eq!((leader.role(), leader.term()), (Role::Follower, Term(7)));
}

#[test]
fn stale_leader_is_told_the_newer_term() {
    // Raft §5.1: a request with a stale term is rejected; the reply carries
    // the current term so the stale leader steps down.
    let mut follower = core(2, &ids(3), |_| {});
    follower.step(message(
        3,
        2,
        4,
        MessageBody::Heartbeat {
            commit_index: LogIndex(0),
            round: 1,
            quiesce: false,
        },
    ));
    let _ = follower.take_ready();
    follower.step(message(
        1,
        2,
        2,
        MessageBody::Heartbeat {
            commit_index: LogIndex(0),
            round: 1,
            quiesce: false,
        },
    ));
    let ready = follower.take_ready();
    assert_eq!(ready.messages.len(), 1);
    assert_eq!((ready.messages[0].to, ready.messages[0].term), (NodeId(1), Term(4)));
}

#[test]
fn candidate_yields_to_a_leader_of_its_own_term() {
    // Raft §5.2: a candidate that hears from a legitimate leader of its term
    // returns to follower.
    let mut candidate = core(1, &ids(3), |c| c.pre_vote = false);
    candidate.forget_leader();
    while candidate.role() != Role::Candidate {
        candidate.tick();
    }
    let term = candidate.term();
    candidate.step(message(
        2,
        1,
        term.0,
        MessageBody::Heartbeat {
            commit_index: LogIndex(0),
            round: 1,
            quiesce: false,
        },
    ));
    assert_eq!(
        (candidate.role(), candidate.leader()),
        (Role::Follower, Some(NodeId(2)))
    );
}

#[test]
fn follower_commits_up_to_the_last_new_entry_only() {
    // Raft §5.3 (Figure 2): commitIndex = min(leaderCommit, index of last new entry).
    let mut follower = core(2, &ids(3), |_| {});
    let entries = vec![Entry {
        index: LogIndex(1),
        term: Term(1),
        payload: EntryPayload::Noop,
    }];
    follower.step(message(
        1,
        2,
        1,
        MessageBody::AppendEntries {
            prev_log_index: LogIndex(0),
            prev_log_term: Term(0),
            entries,
            leader_commit: LogIndex(5),
        },
    ));
    assert_eq!(follower.commit_index(), LogIndex(1));
}

#[test]
fn up_to_date_compares_last_terms_before_lengths() {
    // Raft §5.4.1: the log with the later last term is more up to date; with
    // equal last terms, the longer log is.
    let mut voter = core(2, &ids(3), |_| {});
    voter.forget_leader();
    let entries = (1..=3)
        .map(|i| Entry {
            index: LogIndex(i),
            term: Term(2),
            payload: EntryPayload::Noop,
        })
        .collect();
    voter.step(message(
        1,
        2,
        2,
        MessageBody::AppendEntries {
            prev_log_index: LogIndex(0),
            prev_log_term: Term(0),
            entries,
            leader_commit: LogIndex(0),
        },
    ));
    voter.forget_leader();
    voter.leader = None;
    let _ = voter.take_ready();
    let vote = |last_index: u64, last_term: u64| MessageBody::RequestVote {
        pre_vote: true,
        last_log_index: LogIndex(last_index),
        last_log_term: Term(last_term),
        leadership_transfer: false,
    };
    let granted = |voter: &mut RaftCore| {
        let ready = voter.take_ready();
        matches!(
            ready.messages[0].body,
            MessageBody::RequestVoteResponse { granted: true, .. }
        )
    };
    voter.step(message(3, 2, 3, vote(9, 1)));
    assert!(!granted(&mut voter), "a longer log of an older term is behind");
    voter.step(message(3, 2, 3, vote(1, 3)));
    assert!(granted(&mut voter), "a shorter log of a later term is ahead");
    voter.step(message(3, 2, 3, vote(2, 2)));
    assert!(!granted(&mut voter), "same last term, shorter log is behind");
}

#[test]
fn higher_election_priority_times_out_sooner() {
    // SOFAJRaft-style priority election: higher priority, shorter wait.
    for seed in 0..50 {
        let high = core(1, &ids(3), |c| {
            c.election_priority = 10;
            c.seed = seed;
        });
        let low = core(2, &ids(3), |c| {
            c.election_priority = 1;
            c.seed = seed;
        });
        assert!(high.randomized_election_timeout_ticks < low.randomized_election_timeout_ticks);
    }
}

#[test]
fn a_leader_that_steps_down_keeps_its_term_and_vote_and_drops_its_reads() {
    // The runtime's fail-stop: a node whose storage failed gives up
    // leadership without a new term, so nothing new must be persisted.
    let mut cluster = Cluster::new(3, |_| {});
    cluster.elect(1);
    let before = cluster.get(1).hard_state();
    cluster.isolated = vec![NodeId(1)];
    cluster.get(1).read_index(7).unwrap();
    cluster.get(1).step_down();
    let core = cluster.get(1);
    assert_eq!(core.role(), Role::Follower);
    assert_eq!(core.leader(), None);
    assert_eq!(core.hard_state(), before);
    let ready = core.take_ready();
    assert_eq!(ready.dropped_reads, vec![7]);
    assert!(ready.hard_state.is_none());
}

#[test]
fn a_leader_refuses_a_peers_read_beyond_the_pending_reads_bound() {
    // Thesis §6.4: a follower's ReadIndex waits at the leader for a round.
    // A flood of them must not grow the leader's reads without bound: past
    // PENDING_READS_MAX the leader answers "no index" at once, which the
    // follower reports as a retryable refusal.
    let mut cluster = Cluster::new(3, |_| {});
    cluster.elect(1);
    // No quorum: every read stays pending.
    cluster.isolated = vec![NodeId(2), NodeId(3)];
    let term = cluster.get(1).term().0;
    let leader = cluster.get(1);
    for context in 0..PENDING_READS_MAX as u64 {
        leader.step(message(2, 1, term, MessageBody::ReadIndex { context }));
    }
    let beyond = PENDING_READS_MAX as u64;
    leader.step(message(2, 1, term, MessageBody::ReadIndex { context: beyond }));
    let answers: Vec<(u64, Option<LogIndex>)> = leader
        .take_ready()
        .messages
        .into_iter()
        .filter_map(|m| match m.body {
            MessageBody::ReadIndexResponse { context, index } => Some((context, index)),
            _ => None,
        })
        .collect();
    assert_eq!(
        answers,
        vec![(beyond, None)],
        "only the read beyond the bound is refused"
    );
    // The leader's own reads share the bound.
    assert!(matches!(leader.read_index(1 << 40), Err(RaftError::Busy { .. })));
    // Once a round confirms the held reads, a peer's read is taken again.
    cluster.isolated.clear();
    let heartbeat = cluster.get(1).config().heartbeat_interval_ticks;
    cluster.tick_all(heartbeat);
    assert_eq!(
        cluster.reads.get(&NodeId(2)).map_or(0, Vec::len),
        PENDING_READS_MAX,
        "the held reads were confirmed"
    );
    let leader = cluster.get(1);
    assert_eq!(leader.term().0, term);
    leader.step(message(2, 1, term, MessageBody::ReadIndex { context: beyond + 1 }));
    let refused = leader
        .take_ready()
        .messages
        .into_iter()
        .any(|m| matches!(m.body, MessageBody::ReadIndexResponse { index: None, .. }));
    assert!(!refused, "a read under the bound was refused");
}

/// A restarted core whose state machine was loaded from a snapshot while the
/// log is still whole never hands out the entries the snapshot covers, and
/// ignores a loaded snapshot whose entry its log does not hold.
#[test]
fn a_loaded_snapshot_counts_as_applied_and_only_later_entries_are_handed_out() {
    let voters = ids(1);
    let entries: Vec<Entry> = (1..=5)
        .map(|i| Entry {
            index: LogIndex(i),
            term: Term(1),
            payload: EntryPayload::Normal(Bytes::from(vec![i as u8])),
        })
        .collect();
    let recovered = |loaded: Option<SnapshotMeta>| {
        let initial = InitialState {
            configuration: Configuration::with_voters(voters.iter().copied()),
            hard_state: HardState {
                term: Term(1),
                vote: Some(NodeId(1)),
                commit_index: LogIndex(2),
            },
            entries: entries.clone(),
            loaded_snapshot: loaded,
            ..Default::default()
        };
        RaftCore::new(RaftConfig::new(NodeId(1), GroupId(1)), initial).expect("valid config")
    };
    let meta = |index: u64, term: u64| SnapshotMeta {
        index: LogIndex(index),
        term: Term(term),
        configuration: Configuration::with_voters(voters.iter().copied()),
    };
    let mut core = recovered(Some(meta(4, 1)));
    assert_eq!(core.applied_index(), LogIndex(4));
    assert_eq!(
        core.commit_index(),
        LogIndex(4),
        "a snapshot covers only committed entries"
    );
    assert_eq!(core.snapshot().map(|s| s.index), Some(LogIndex(4)));
    assert_eq!(core.last_index(), LogIndex(5), "the log stays whole");
    assert!(core.take_ready().committed_entries.is_empty());
    assert_eq!(core.snapshot_meta(LogIndex(4)), None, "not newer than the loaded one");

    let ignored = recovered(Some(meta(4, 2)));
    assert_eq!(ignored.applied_index(), LogIndex(0), "its term is not the log's there");
    assert_eq!(ignored.snapshot().map(|s| s.index), None);
}

/// Entry count and entry bytes of each AppendEntries in `messages` to `to`.
fn appends_to(messages: &[Message], to: u64) -> Vec<(usize, u64)> {
    messages
        .iter()
        .filter(|m| m.to == NodeId(to))
        .filter_map(|m| match &m.body {
            MessageBody::AppendEntries { entries, .. } => {
                Some((entries.len(), entries.iter().map(Entry::size_bytes).sum()))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn heartbeat_answers_from_a_lagging_probing_follower_build_probes_of_bounded_size() {
    // Regression (`coraft-chaos --seed 1034097185650778836 --nemesis
    // partition-leader`): every heartbeat answer from a lagging follower in
    // Probe lets a probe go again, and each probe was a full catch-up batch
    // (up to `append_bytes_max`, 1 MiB of cloned entries) that the
    // runtime's full outbound queue then dropped. Reads start a round per
    // turn, so one turn stepped thousands of answers and took seconds. The
    // probes still go (when messages are sent is unchanged) but each is
    // small; full batches flow once the follower is in Replicate.
    const ANSWERS: usize = 1000;
    const ENTRIES: usize = 2000;
    let mut cluster = Cluster::new(3, |_| {});
    assert!(cluster.get(1).config().append_bytes_max > 64 * PROBE_APPEND_BYTES_MAX);
    cluster.isolated = vec![NodeId(3)];
    cluster.elect(1);
    let text: &'static str =
        "a catch-up entry of a hundred bytes, as a key-value write is: .........................................";
    for _ in 0..ENTRIES / 100 {
        for _ in 0..100 {
            cluster.get(1).propose(payload(text)).unwrap();
        }
        cluster.settle();
    }
    cluster.isolated.clear();
    let term = cluster.get(1).term().0;
    let leader = cluster.get(1);
    let _ = leader.take_ready();
    let lag = leader.last_index().0 - leader.progress()[&NodeId(3)].match_index.0;
    assert!(lag >= ENTRIES as u64, "node 3 lags by {lag}");
    assert_eq!(leader.progress()[&NodeId(3)].state, ProgressState::Probe);
    let round = leader.reads.current_round();

    for _ in 0..ANSWERS {
        leader.step(message(3, 1, term, MessageBody::HeartbeatResponse { round }));
    }
    let ready = leader.take_ready();
    let appends = appends_to(&ready.messages, 3);
    let entries: usize = appends.iter().map(|a| a.0).sum();
    let bytes: u64 = appends.iter().map(|a| a.1).sum();
    // Each answer still lets one probe go: a lost probe is retried.
    assert_eq!(appends.len(), ANSWERS, "one probe per answer");
    assert!(
        bytes <= ANSWERS as u64 * PROBE_APPEND_BYTES_MAX,
        "{} appends built carrying {entries} entries, {bytes} bytes for {ANSWERS} answers",
        appends.len()
    );
    assert!(appends.iter().all(|&(n, _)| n >= 1), "a probe carries an entry");

    // Once a probe matches, full batches flow and the follower catches up.
    for message in ready.messages.into_iter().chain(ready.persisted_messages) {
        if let Some(core) = cluster.cores.get_mut(&message.to) {
            core.step(message);
        }
    }
    let mut largest = 0;
    cluster.settle_watching(|_, m| {
        if let Some(&(_, bytes)) = appends_to(std::slice::from_ref(m), 3).first() {
            largest = largest.max(bytes);
        }
    });
    cluster.tick_all(10);
    assert!(
        largest > PROBE_APPEND_BYTES_MAX,
        "a replicating follower gets full batches ({largest} bytes)"
    );
    assert_eq!(cluster.get(3).last_index(), cluster.get(1).last_index());
    assert_eq!(cluster.get(3).commit_index(), cluster.get(1).commit_index());
}

#[test]
fn heartbeat_answers_from_a_lagging_replicating_follower_send_its_lag_at_most_once() {
    // The other half of the partition-leader stall's shape: an answer
    // frees one window slot of a replicating follower, and the append that
    // goes then carries entries after what was already sent, so however
    // many answers a turn steps, the lag is built once (then empty appends
    // carry the commit index), not once per answer.
    const ANSWERS: usize = 1000;
    let mut cluster = Cluster::new(3, |c| c.inflight_messages_max = 2);
    cluster.elect(1);
    cluster.isolated = vec![NodeId(3)];
    let text: &'static str =
        "a catch-up entry of a hundred bytes, as a key-value write is: .........................................";
    for _ in 0..20 {
        for _ in 0..100 {
            cluster.get(1).propose(payload(text)).unwrap();
        }
        cluster.settle();
    }
    cluster.isolated.clear();
    let term = cluster.get(1).term().0;
    let leader = cluster.get(1);
    let _ = leader.take_ready();
    let progress = &leader.progress()[&NodeId(3)];
    assert_eq!(progress.state, ProgressState::Replicate);
    let unsent = leader.last_index().0 + 1 - progress.next_index.0;
    assert!(unsent >= 1000, "{unsent} entries not yet sent to node 3");
    let round = leader.reads.current_round();

    for _ in 0..ANSWERS {
        leader.step(message(3, 1, term, MessageBody::HeartbeatResponse { round }));
    }
    let ready = leader.take_ready();
    let appends = appends_to(&ready.messages, 3);
    let entries: usize = appends.iter().map(|a| a.0).sum();
    assert_eq!(appends.len(), ANSWERS, "one append per answer");
    assert!(
        entries as u64 <= unsent,
        "{entries} entries built for {ANSWERS} answers; {unsent} were unsent"
    );
}

#[test]
fn a_recycled_ready_lends_its_vectors_to_the_next_one_emptied_and_within_the_bound() {
    // Not a Raft rule: the runtime hands each Ready back (`recycle`) so that
    // a group's next Ready does not allocate its vectors anew.
    let mut cluster = Cluster::new(3, |_| {});
    cluster.elect(1);
    let leader = cluster.get(1);
    leader.propose(payload("x")).unwrap();
    let first = leader.take_ready();
    assert_eq!(first.messages.len(), 2, "an append to each follower");
    assert_eq!(first.entries.len(), 1);
    let (messages_at, entries_at) = (first.messages.as_ptr(), first.entries.as_ptr());
    let append_entries_at = |ready: &Ready| -> Vec<*const Entry> {
        let mut at: Vec<_> = ready
            .messages
            .iter()
            .filter_map(|m| match &m.body {
                MessageBody::AppendEntries { entries, .. } => Some(entries.as_ptr()),
                _ => None,
            })
            .collect();
        at.sort();
        at
    };
    let appends_at = append_entries_at(&first);
    assert_eq!(appends_at.len(), 2);
    leader.recycle(first);
    // Nothing is left over from the handed-back Ready.
    assert!(!leader.has_ready());
    leader.propose(payload("y")).unwrap();
    let second = leader.take_ready();
    assert_eq!(second.messages.as_ptr(), messages_at, "the outbox kept its allocation");
    assert_eq!(second.entries.as_ptr(), entries_at, "the entries kept theirs");
    assert_eq!(second.entries.len(), 1);
    assert_eq!(
        second.entries[0].payload,
        EntryPayload::Normal(Bytes::from_static(b"y"))
    );
    assert_eq!(second.messages.len(), 2);
    assert_eq!(
        append_entries_at(&second),
        appends_at,
        "the appends refilled the handed-back vectors"
    );
    for message in &second.messages {
        let MessageBody::AppendEntries { entries, .. } = &message.body else {
            panic!("expected an append, got {message:?}");
        };
        assert_eq!(entries.last().map(|e| e.index), Some(second.entries[0].index));
    }
    // A vector past the bound is not kept.
    let big = Ready {
        messages: Vec::with_capacity(READY_VECTOR_KEPT_MAX + 1),
        ..Ready::default()
    };
    leader.recycle(big);
    leader.propose(payload("z")).unwrap();
    let third = leader.take_ready();
    assert!(third.messages.capacity() <= READY_VECTOR_KEPT_MAX);
}

#[test]
fn a_follower_hands_back_the_vector_of_each_append_emptied_and_its_entries_in_the_log() {
    // Not a Raft rule: the runtime fills the vector of the last append a
    // follower stepped with the next append it receives, instead of
    // allocating one per message (`take_received_entries_vector`).
    let mut cluster = Cluster::new(3, |_| {});
    cluster.elect(1);
    let leader = cluster.get(1);
    leader
        .propose(vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")])
        .unwrap();
    let ready = leader.take_ready();
    let append = ready
        .messages
        .into_iter()
        .find(|m| m.to == NodeId(2))
        .expect("an append to node 2");
    let MessageBody::AppendEntries { entries, .. } = &append.body else {
        panic!("expected an append, got {append:?}");
    };
    let sent = entries.clone();
    let vector_at = entries.as_ptr();
    let follower = cluster.get(2);
    // The vector of the election's last append (its no-op) is kept.
    assert!(follower.take_received_entries_vector().is_some());
    follower.step(append);
    let vector = follower
        .take_received_entries_vector()
        .expect("the append's vector is handed back");
    assert!(vector.is_empty());
    assert_eq!(vector.as_ptr(), vector_at, "the very vector the append carried");
    assert!(follower.take_received_entries_vector().is_none(), "handed back once");
    // The entries went to the log and out to persist, in order.
    let persisted = follower.take_ready();
    assert_eq!(persisted.entries, sent);
    for entry in &sent {
        assert_eq!(follower.log.entry(entry.index), Some(entry));
    }
    // A vector past the bound is not kept.
    let mut big = Vec::with_capacity(READY_VECTOR_KEPT_MAX + 1);
    big.extend(sent.iter().cloned());
    let prev_log_index = sent[0].index.prev();
    let term = cluster.get(1).term();
    let follower = cluster.get(2);
    let prev_log_term = follower.log.term_at(prev_log_index).expect("held");
    follower.step(Message {
        group: GroupId(1),
        from: NodeId(1),
        to: NodeId(2),
        term,
        body: MessageBody::AppendEntries {
            prev_log_index,
            prev_log_term,
            entries: big,
            leader_commit: LogIndex(0),
        },
    });
    assert!(follower.take_received_entries_vector().is_none());
}

#[test]
fn a_lending_ready_lends_the_committed_entries_a_cloning_one_carries() {
    // Two cores fed the same inputs: one's Readies clone the committed
    // entries, the other's lend them from its log, batch after batch
    // (some past the apply bound), with compactions in between that move
    // where the log's ring starts.
    let voters = ids(1);
    let mut cloning = core(1, &voters, |_| {});
    let mut lending = core(1, &voters, |_| {});
    for core in [&mut cloning, &mut lending] {
        while core.role() != Role::Leader {
            core.tick();
        }
    }
    let mut lent_total = 0;
    for round in 0..40u64 {
        let size = if round % 7 == 3 {
            3 << 20
        } else {
            1 + round as usize * 13 % 200
        };
        let batch: Vec<Bytes> = (0..1 + round % 5)
            .map(|_| Bytes::from(vec![round as u8; size]))
            .collect();
        cloning.propose(batch.clone()).unwrap();
        lending.propose(batch).unwrap();
        while cloning.has_ready() || lending.has_ready() {
            let cloned = cloning.take_ready();
            let lent = lending.take_ready_lending();
            assert!(lent.committed_entries.is_empty(), "lent, not cloned");
            assert_eq!(cloned.committed, lent.committed, "round {round}");
            let lent_entries: Vec<Entry> = match lent.committed {
                Some(range) => {
                    let (front, back) = lending.committed_entries(range);
                    front.iter().chain(back).cloned().collect()
                }
                None => Vec::new(),
            };
            assert_eq!(cloned.committed_entries, lent_entries, "round {round}");
            lent_total += lent_entries.len();
            for (core, ready) in [(&mut cloning, &cloned), (&mut lending, &lent)] {
                if let Some(last) = ready.entries.last() {
                    core.on_persisted(last.index, last.term);
                }
            }
        }
        if round % 3 == 2 {
            for core in [&mut cloning, &mut lending] {
                let applied = core.applied_index();
                core.snapshot_created(applied).expect("applied");
                core.compact(applied.prev());
            }
        }
    }
    assert!(lent_total > 40, "{lent_total} entries applied");
}

#[test]
#[should_panic(expected = "lent after the log dropped them")]
fn entries_lent_by_a_ready_and_compacted_before_they_were_read_are_a_panic_not_a_wrong_apply() {
    let mut core = core(1, &ids(1), |_| {});
    while core.role() != Role::Leader {
        core.tick();
    }
    let (index, term) = core.propose(payload("x")).unwrap();
    core.take_ready_lending();
    core.on_persisted(index, term);
    let ready = core.take_ready_lending();
    let range = ready.committed.expect("committed");
    core.snapshot_created(range.last).expect("handed out to apply");
    core.compact(range.last);
    let _ = core.committed_entries(range);
}
