//! A peer's message never crashes the core: each message that used to trip
//! an assertion, a deliberate panic or an underflow in `RaftCore::step` is
//! refused by `RaftCore::step_checked` with the rule it breaks, and the
//! core goes on working. A proptest runs the fuzz harness
//! (`coraft::fuzzing::exercise_core`, the body of the `core_step` fuzz
//! target) on random inputs, the fuzz corpus replays as ordinary tests, and
//! a cluster of cores exchanging messages through lost, duplicated and
//! reordered deliveries never sees a correct message refused.

use std::collections::BTreeMap;
use std::path::PathBuf;

use bytes::Bytes;
use coraft::fuzzing::exercise_core;
use coraft::raft::{
    AppendOutcome, Configuration, Entry, EntryPayload, GroupId, HardState, InitialState, LogIndex, Message,
    MessageBody, NodeId, ProtocolViolation, RaftConfig, RaftCore, Role, Term, ViolationKind, TERM_MAX,
};
use proptest::prelude::*;

const GROUP: GroupId = GroupId(1);

fn config(id: u64) -> RaftConfig {
    let mut config = RaftConfig::new(NodeId(id), GROUP);
    config.pre_vote = false;
    config
}

/// Node 1 of a three-voter group, recovered with entries 1..=3 of term 1.
fn follower() -> RaftCore {
    let entries = (1..=3)
        .map(|i| Entry {
            index: LogIndex(i),
            term: Term(1),
            payload: EntryPayload::Noop,
        })
        .collect();
    let initial = InitialState {
        configuration: Configuration::with_voters([NodeId(1), NodeId(2), NodeId(3)]),
        hard_state: HardState {
            term: Term(1),
            vote: None,
            commit_index: LogIndex(1),
        },
        snapshot: None,
        entries,
        loaded_snapshot: None,
    };
    RaftCore::new(config(1), initial).expect("valid")
}

/// Persists whatever the core handed out, as a runtime would.
fn persist(core: &mut RaftCore) -> Vec<Message> {
    let ready = core.take_ready();
    if let Some(last) = ready.entries.last() {
        core.on_persisted(last.index, last.term);
    }
    ready.messages.into_iter().chain(ready.persisted_messages).collect()
}

/// Node 1 elected leader of the group (its no-op entry persisted).
fn leader() -> RaftCore {
    let mut core = follower();
    while core.role() != Role::Candidate {
        core.tick();
    }
    persist(&mut core);
    let term = core.term();
    core.step_checked(message(
        2,
        term,
        MessageBody::RequestVoteResponse {
            pre_vote: false,
            granted: true,
        },
    ))
    .expect("a vote is fine");
    assert_eq!(core.role(), Role::Leader);
    persist(&mut core);
    core
}

fn message(from: u64, term: Term, body: MessageBody) -> Message {
    Message {
        group: GROUP,
        from: NodeId(from),
        to: NodeId(1),
        term,
        body,
    }
}

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index: LogIndex(index),
        term: Term(term),
        payload: EntryPayload::Normal(Bytes::from_static(b"x")),
    }
}

fn append(term: u64, prev_log_index: u64, entries: Vec<Entry>) -> Message {
    message(
        2,
        Term(term),
        MessageBody::AppendEntries {
            prev_log_index: LogIndex(prev_log_index),
            prev_log_term: Term(1),
            entries,
            leader_commit: LogIndex(1),
        },
    )
}

fn refused(core: &mut RaftCore, message: Message) -> ViolationKind {
    let before = (core.hard_state(), core.last_index(), core.role());
    let violation: ProtocolViolation = core.step_checked(message).expect_err("must be refused");
    assert_eq!(violation.sender, NodeId(2));
    assert_eq!(
        (core.hard_state(), core.last_index(), core.role()),
        before,
        "a refused message changes nothing"
    );
    violation.kind
}

/// The core still works after a refusal: a follower takes a correct append,
/// a leader commits a proposal once a follower acknowledges it.
fn still_follows(core: &mut RaftCore) {
    let term = core.term().0.max(2);
    core.step_checked(append(term, 3, vec![entry(4, term)]))
        .expect("a correct append");
    assert_eq!(core.last_index(), LogIndex(4));
}

fn still_leads(core: &mut RaftCore) {
    let (index, term) = core.propose(vec![Bytes::from_static(b"after")]).expect("still leads");
    persist(core);
    core.step_checked(message(
        3,
        term,
        MessageBody::AppendEntriesResponse(AppendOutcome::Accepted { match_index: index }),
    ))
    .expect("a correct acknowledgement");
    assert_eq!(core.commit_index(), index);
}

#[test]
fn append_with_a_gap_in_its_entries_is_refused() {
    let mut core = follower();
    let kind = refused(&mut core, append(2, 3, vec![entry(4, 2), entry(6, 2)]));
    assert_eq!(
        kind,
        ViolationKind::EntriesNotContiguous {
            expected: LogIndex(5),
            found: LogIndex(6)
        }
    );
    still_follows(&mut core);
}

#[test]
fn append_with_an_entry_at_or_below_prev_is_refused() {
    // Unchecked, entry 2 conflicts, the log is truncated from 2, and the
    // count of entries to skip underflows (wrapping in release: entries 2-3
    // are lost while the follower acknowledges index 4).
    let mut core = follower();
    let kind = refused(&mut core, append(2, 3, vec![entry(2, 2)]));
    assert_eq!(
        kind,
        ViolationKind::EntryNotAfterPrev {
            prev_log_index: LogIndex(3),
            index: LogIndex(2)
        }
    );
    assert_eq!(core.last_index(), LogIndex(3));
    still_follows(&mut core);
}

#[test]
fn append_with_entries_of_a_later_term_than_the_leader_is_refused() {
    let mut core = follower();
    let kind = refused(&mut core, append(2, 3, vec![entry(4, 9)]));
    assert!(matches!(kind, ViolationKind::EntryTermAboveLeader { .. }), "{kind:?}");
    still_follows(&mut core);
}

#[test]
fn acknowledgement_beyond_the_leaders_log_is_refused() {
    // Unchecked, the leader moves next_index past its log and panics in
    // send_snapshot ("needs a snapshot ... but holds none").
    let mut core = leader();
    let last = core.last_index();
    let term = core.term();
    let kind = refused(
        &mut core,
        message(
            2,
            term,
            MessageBody::AppendEntriesResponse(AppendOutcome::Accepted {
                match_index: LogIndex(100),
            }),
        ),
    );
    assert_eq!(
        kind,
        ViolationKind::AcknowledgedBeyondLog {
            acknowledged: LogIndex(100),
            last_index: last
        }
    );
    let kind = refused(
        &mut core,
        message(
            2,
            term,
            MessageBody::InstallSnapshotResponse {
                last_index: LogIndex(100),
            },
        ),
    );
    assert!(matches!(kind, ViolationKind::AcknowledgedBeyondLog { .. }), "{kind:?}");
    still_leads(&mut core);
}

#[test]
fn append_or_heartbeat_in_the_leaders_own_term_is_refused() {
    // Unchecked, the leader panics on purpose ("leader 1 of term 2 got ...").
    let mut core = leader();
    let term = core.term();
    let kind = refused(&mut core, append(term.0, 4, Vec::new()));
    assert_eq!(kind, ViolationKind::SecondLeaderInTerm { term });
    let heartbeat = MessageBody::Heartbeat {
        commit_index: LogIndex(0),
        round: 1,
        quiesce: false,
    };
    let kind = refused(&mut core, message(2, term, heartbeat));
    assert_eq!(kind, ViolationKind::SecondLeaderInTerm { term });
    still_leads(&mut core);
}

#[test]
fn acknowledgement_of_a_heartbeat_round_never_sent_is_refused() {
    // Unchecked, one forged acknowledgement of a future round would confirm
    // the reads of every round up to it with no word from that follower.
    let mut core = leader();
    let term = core.term();
    still_leads(&mut core);
    core.read_index(7).expect("read");
    let sent = persist(&mut core);
    let round = sent
        .iter()
        .find_map(|m| match m.body {
            MessageBody::Heartbeat { round, .. } => Some(round),
            _ => None,
        })
        .expect("a heartbeat round confirms the read");
    let kind = refused(
        &mut core,
        message(2, term, MessageBody::HeartbeatResponse { round: round + 5 }),
    );
    assert_eq!(
        kind,
        ViolationKind::RoundNeverSent {
            round: round + 5,
            current: round
        }
    );
    assert!(
        core.take_ready().read_states.is_empty(),
        "no read confirmed by a forged round"
    );
    core.step_checked(message(2, term, MessageBody::HeartbeatResponse { round }))
        .expect("the real acknowledgement");
    assert_eq!(core.take_ready().read_states.len(), 1);
}

#[test]
fn term_beyond_the_bound_is_refused() {
    // Unchecked, the node adopts term u64::MAX and its next campaign
    // overflows the term.
    let mut core = follower();
    let vote = MessageBody::RequestVote {
        pre_vote: false,
        last_log_index: LogIndex(3),
        last_log_term: Term(1),
        leadership_transfer: false,
    };
    let kind = refused(&mut core, message(2, Term(u64::MAX), vote.clone()));
    assert_eq!(
        kind,
        ViolationKind::TermBeyondBound {
            field: "term",
            term: Term(u64::MAX)
        }
    );
    core.step_checked(message(2, TERM_MAX, vote))
        .expect("the bound itself is fine");
    still_follows(&mut core);
}

#[test]
fn message_naming_this_node_as_sender_or_another_receiver_is_refused() {
    let mut core = follower();
    let mut from_self = append(2, 3, Vec::new());
    from_self.from = NodeId(1);
    let violation = core.step_checked(from_self).expect_err("from self");
    assert_eq!(violation.kind, ViolationKind::FromSelf);
    let mut elsewhere = append(2, 3, Vec::new());
    elsewhere.to = NodeId(3);
    assert_eq!(
        refused(&mut core, elsewhere),
        ViolationKind::NotAddressedHere { to: NodeId(3) }
    );
}

#[test]
fn configuration_without_voters_is_refused() {
    let mut core = follower();
    let empty = Entry {
        index: LogIndex(4),
        term: Term(2),
        payload: EntryPayload::Configuration(Box::default()),
    };
    let kind = refused(&mut core, append(2, 3, vec![empty]));
    assert_eq!(kind, ViolationKind::ConfigurationWithoutVoters { index: LogIndex(4) });
    still_follows(&mut core);
}

#[test]
fn violation_names_sender_message_and_rule() {
    let mut core = follower();
    let violation = core
        .step_checked(append(2, 3, vec![entry(4, 2), entry(6, 2)]))
        .expect_err("gap");
    assert_eq!(
        violation.to_string(),
        "entries are not contiguous: expected index 5, found 6 (a AppendEntries from node 2 in group 1)"
    );
}

// ----- fuzz harness in CI -----

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/core_step")
}

#[test]
fn fuzz_corpus_replays_without_panic() {
    let mut replayed = 0;
    for file in std::fs::read_dir(corpus_dir()).expect("fuzz/corpus/core_step exists") {
        let path = file.expect("entry").path();
        let data = std::fs::read(&path).expect("readable");
        exercise_core(&data);
        replayed += 1;
    }
    assert!(replayed > 0, "the corpus holds seeds");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// The fuzz target's body on random inputs: never a panic.
    #[test]
    fn core_never_panics_on_peer_messages(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        exercise_core(&data);
    }
}

// ----- no false alarm -----

/// A three-node cluster of cores whose messages are lost, duplicated and
/// reordered by `choices`; every message a correct core sends must pass
/// `step_checked`. Returns the highest commit index reached.
fn run_cluster(choices: &[u8]) -> LogIndex {
    let mut cores: BTreeMap<NodeId, RaftCore> = (1..=3)
        .map(|id| {
            let mut config = RaftConfig::new(NodeId(id), GROUP);
            config.seed = u64::from(choices.first().copied().unwrap_or(0)) + id;
            let initial = InitialState {
                configuration: Configuration::with_voters([NodeId(1), NodeId(2), NodeId(3)]),
                ..Default::default()
            };
            (NodeId(id), RaftCore::new(config, initial).expect("valid"))
        })
        .collect();
    let mut network: Vec<Message> = Vec::new();
    for &choice in choices {
        let node = NodeId(u64::from(choice % 3) + 1);
        match choice / 3 % 8 {
            0 | 1 => {
                for core in cores.values_mut() {
                    core.tick();
                }
            }
            2 => {
                let core = cores.get_mut(&node).expect("node");
                let _ = core.propose(vec![Bytes::from_static(b"w")]);
                let _ = core.read_index(u64::from(choice));
            }
            3 if !network.is_empty() => {
                // Lose one.
                let at = usize::from(choice) % network.len();
                network.swap_remove(at);
            }
            4 if !network.is_empty() => {
                // Deliver one twice, the copy later.
                let at = usize::from(choice) % network.len();
                let copy = network[at].clone();
                network.push(copy);
            }
            _ => {}
        }
        for core in cores.values_mut() {
            network.extend(persist(core));
        }
        // Deliver some, from an arbitrary point (reordering).
        let deliver = network.len().min(usize::from(choice % 5));
        let start = if network.is_empty() {
            0
        } else {
            usize::from(choice) % network.len()
        };
        let start = start.min(network.len() - deliver);
        for message in network.drain(start..start + deliver).collect::<Vec<_>>() {
            let core = cores.get_mut(&message.to).expect("addressed to a member");
            if let Err(violation) = core.step_checked(message.clone()) {
                panic!("a correct message was refused: {violation} ({message:?})");
            }
        }
    }
    cores.values().map(RaftCore::commit_index).max().unwrap_or_default()
}

#[test]
fn the_cluster_of_correct_cores_elects_and_commits() {
    // The no-false-alarm check has teeth only if its schedules reach
    // elections, replication and commits: a fixed long schedule does.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let choices: Vec<u8> = (0..20_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 56) as u8
        })
        .collect();
    assert!(run_cluster(&choices) > LogIndex(5));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn correct_cores_never_trip_a_check(choices in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = run_cluster(&choices);
    }
}
