//! Fuzzing support (not part of the API): the harness of the `core_step`
//! fuzz target (`fuzz/fuzz_targets/core_step.rs`), kept here so that the
//! proptest in `engine/tests/core_step.rs` and the replay of the fuzz corpus
//! run the very same code on stable in CI.
//!
//! [`exercise_core`] reads a whole run from bytes: a node of a three-voter
//! group (recovered with a few entries, or empty), then a sequence of
//! operations — ticks, proposals, reads, persisting what the core handed
//! out, snapshots and compaction — and messages from peers, built around
//! the core's own term and log so that they reach deep into the handlers,
//! with any field sometimes replaced by arbitrary bits. Every message goes
//! through [`RaftCore::step_checked`]; nothing may panic, and the commit
//! index never moves back.

use bytes::Bytes;

use crate::raft::{
    AppendOutcome, Configuration, Entry, EntryPayload, GroupId, HardState, InitialState, LogIndex, Message,
    MessageBody, NodeId, RaftConfig, RaftCore, ReadMode, SnapshotMeta, Term,
};

/// Bound on the operations one input runs.
pub const OPERATIONS_MAX: usize = 512;
/// Bound on the entries of one fuzzed AppendEntries.
pub const FUZZ_ENTRIES_MAX: usize = 6;

const GROUP: GroupId = GroupId(7);
const SELF: NodeId = NodeId(1);

/// Reads the input a byte at a time; zeros once it is used up.
struct Input<'a> {
    data: &'a [u8],
}

impl Input<'_> {
    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&first, rest)) => {
                self.data = rest;
                first
            }
            None => 0,
        }
    }
    fn flag(&mut self) -> bool {
        self.byte() & 1 == 1
    }
    fn u64(&mut self) -> u64 {
        let mut bytes = [0u8; 8];
        for b in &mut bytes {
            *b = self.byte();
        }
        u64::from_le_bytes(bytes)
    }
    /// A value near `base` (-2..=+5), or now and then any value at all.
    fn near(&mut self, base: u64) -> u64 {
        let selector = self.byte();
        match selector {
            0..=239 => {
                let delta = i64::from(selector % 8) - 2;
                base.saturating_add_signed(delta)
            }
            240..=247 => u64::from(self.byte()),
            248..=251 => (1u64 << 62) + u64::from(self.byte() % 3),
            _ => self.u64(),
        }
    }
}

/// Runs one fuzz input against a core. Panics only on a bug.
pub fn exercise_core(data: &[u8]) {
    let mut input = Input { data };
    let mut core = new_core(&mut input);
    let mut committed = core.commit_index();
    for _ in 0..OPERATIONS_MAX {
        if input.is_empty() {
            break;
        }
        operate(&mut core, &mut input);
        let now = core.commit_index();
        assert!(now >= committed, "commit index moved back from {committed} to {now}");
        committed = now;
    }
}

fn new_core(input: &mut Input<'_>) -> RaftCore {
    let flags = input.byte();
    let mut config = RaftConfig::new(SELF, GROUP);
    config.pre_vote = flags & 1 != 0;
    config.check_quorum = flags & 2 != 0;
    config.read_mode = if flags & 6 == 6 {
        ReadMode::Lease
    } else {
        ReadMode::Safe
    };
    config.quiesce = flags & 8 != 0;
    config.inflight_messages_max = 1 + usize::from(input.byte() % 4);
    config.seed = u64::from(input.byte());
    let mut voters = vec![NodeId(1), NodeId(2), NodeId(3)];
    if flags & 16 != 0 {
        voters.push(NodeId(4));
    }
    let mut configuration = Configuration::with_voters(voters);
    if flags & 32 != 0 {
        configuration.learners.insert(NodeId(5));
    }
    // A recovered log: a few entries of terms that never decrease.
    let count = u64::from(input.byte() % 8);
    let mut term = 1;
    let mut entries = Vec::new();
    for index in 1..=count {
        term += u64::from(input.byte() % 2);
        entries.push(Entry {
            index: LogIndex(index),
            term: Term(term),
            payload: EntryPayload::Noop,
        });
    }
    let commit_index = LogIndex(u64::from(input.byte()) % (count + 1));
    let initial = InitialState {
        configuration,
        hard_state: HardState {
            term: Term(term + u64::from(input.byte() % 2)),
            vote: None,
            commit_index,
        },
        snapshot: None,
        entries,
        loaded_snapshot: None,
    };
    RaftCore::new(config, initial).expect("the harness's config is valid")
}

fn operate(core: &mut RaftCore, input: &mut Input<'_>) {
    match input.byte() % 16 {
        0 | 1 => {
            for _ in 0..=input.byte() % 12 {
                core.tick();
            }
        }
        2 => {
            let _ = core.propose(vec![Bytes::from_static(b"fuzz")]);
        }
        3 => persist(core),
        4 => {
            let _ = core.read_index(u64::from(input.byte()));
        }
        5 => {
            let index = core.applied_index();
            if core.snapshot_created(index).is_some() {
                core.compact(index);
            }
        }
        6 => {
            let _ = core.transfer_leader(NodeId(u64::from(input.byte() % 5)));
        }
        7 => core.report_snapshot(peer(input), input.flag()),
        _ => {
            let message = message(core, input);
            let _ = core.step_checked(message);
        }
    }
}

/// Does what a runtime does with a Ready: persists it, reports it durable.
fn persist(core: &mut RaftCore) {
    let ready = core.take_ready();
    if let Some(last) = ready.entries.last() {
        core.on_persisted(last.index, last.term);
    }
}

fn peer(input: &mut Input<'_>) -> NodeId {
    // Mostly the group's other voters; now and then a learner, a stranger,
    // node 0 or this node itself.
    match input.byte() % 16 {
        0..=5 => NodeId(2),
        6..=10 => NodeId(3),
        11 => NodeId(4),
        12 => NodeId(5),
        13 => NodeId(9),
        14 => NodeId(0),
        _ => SELF,
    }
}

fn message(core: &RaftCore, input: &mut Input<'_>) -> Message {
    let from = peer(input);
    let to = if input.byte() == 255 { NodeId(2) } else { SELF };
    let term = Term(input.near(core.term().0));
    let last = core.last_index().0;
    let body = match input.byte() % 13 {
        0..=2 => append(core, input, term),
        3 => MessageBody::AppendEntriesResponse(AppendOutcome::Accepted {
            match_index: LogIndex(input.near(last)),
        }),
        4 => MessageBody::AppendEntriesResponse(AppendOutcome::Rejected {
            rejected_index: LogIndex(input.near(last)),
            hint_index: LogIndex(input.near(last)),
            hint_term: Term(input.near(term.0)),
        }),
        5 => MessageBody::RequestVote {
            pre_vote: input.flag(),
            last_log_index: LogIndex(input.near(last)),
            last_log_term: Term(input.near(term.0)),
            leadership_transfer: input.flag(),
        },
        6 => MessageBody::RequestVoteResponse {
            pre_vote: input.flag(),
            granted: input.byte() & 3 != 0,
        },
        7 => MessageBody::Heartbeat {
            commit_index: LogIndex(input.near(core.commit_index().0)),
            round: input.near(0),
            quiesce: input.flag(),
        },
        8 => MessageBody::HeartbeatResponse { round: input.near(1) },
        9 => MessageBody::TimeoutNow,
        10 => MessageBody::ReadIndex {
            context: u64::from(input.byte()),
        },
        11 => MessageBody::ReadIndexResponse {
            context: u64::from(input.byte()),
            index: input.flag().then(|| LogIndex(input.near(last))),
        },
        _ => {
            if input.flag() {
                MessageBody::InstallSnapshotResponse {
                    last_index: LogIndex(input.near(last)),
                }
            } else {
                let voters = if input.flag() {
                    vec![NodeId(1), NodeId(2), NodeId(3)]
                } else {
                    Vec::new()
                };
                MessageBody::InstallSnapshot {
                    meta: SnapshotMeta {
                        index: LogIndex(input.near(last)),
                        term: Term(input.near(term.0)),
                        configuration: Configuration::with_voters(voters),
                    },
                }
            }
        }
    };
    Message {
        group: GROUP,
        from,
        to,
        term,
        body,
    }
}

/// An append around the core's log: mostly well formed (contiguous from
/// `prev_log_index + 1`, terms rising to the leader's), sometimes not.
fn append(core: &RaftCore, input: &mut Input<'_>, term: Term) -> MessageBody {
    let prev_log_index = LogIndex(input.near(core.last_index().0.saturating_sub(2)));
    let prev_log_term = core
        .term_at(prev_log_index)
        .filter(|_| input.byte() < 200)
        .unwrap_or_else(|| Term(input.near(term.0.saturating_sub(1))));
    let count = usize::from(input.byte()) % (FUZZ_ENTRIES_MAX + 1);
    let mut entries = Vec::with_capacity(count);
    let mut index = LogIndex(prev_log_index.0.wrapping_add(1));
    let mut entry_term = prev_log_term;
    for _ in 0..count {
        let shape = input.byte();
        if shape >= 240 {
            // A gap, an index at or below prev, or any index at all.
            index = LogIndex(input.near(prev_log_index.0));
        }
        if shape & 3 == 0 {
            entry_term = Term(input.near(term.0));
        }
        let payload = match shape % 16 {
            1 => EntryPayload::Configuration(Box::new(Configuration::with_voters(if shape >= 128 {
                vec![NodeId(1), NodeId(2)]
            } else {
                Vec::new()
            }))),
            2 => EntryPayload::Noop,
            _ => EntryPayload::Normal(Bytes::from_static(b"e")),
        };
        entries.push(Entry {
            index,
            term: entry_term,
            payload,
        });
        index = LogIndex(index.0.wrapping_add(1));
    }
    MessageBody::AppendEntries {
        prev_log_index,
        prev_log_term,
        entries,
        leader_commit: LogIndex(input.near(core.commit_index().0 + 1)),
    }
}
