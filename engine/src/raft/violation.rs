//! Validation of a peer's message before the core steps it.
//!
//! The core's handlers trust what they are given: a leader's entries follow
//! its `prev_log_index`, a follower acknowledges only what it was sent, and no
//! other node leads in this node's own term. Those are facts of a correct
//! peer, and the handlers rely on them with assertions (a gap in the entries
//! trips one) or with arithmetic that would underflow. A peer's bytes are
//! input from outside, so [`RaftCore::step_checked`] first runs
//! [`check_message`]: a pure function of the core's state and the message
//! that names the first rule the message breaks. A message that breaks one
//! is not stepped; the runtime drops it, counts it and logs the violation
//! (`runtime/shard.rs`), and the node keeps serving.
//!
//! A check here never rejects what a correct peer can send, in any
//! interleaving of lost, duplicated or reordered messages: each rule below
//! says why it holds for a correct sender.

use thiserror::Error;

use super::core::RaftCore;
use super::message::{AppendOutcome, Message, MessageBody};
use super::types::{Configuration, Entry, EntryPayload, GroupId, LogIndex, NodeId, Role, Term};

/// Largest term a peer may name. Far beyond any real cluster's life (a new
/// term a microsecond for 146,000 years), and far enough below `u64::MAX`
/// that `term + 1` never overflows.
pub const TERM_MAX: Term = Term(1 << 62);
/// Largest log index a peer may name; like [`TERM_MAX`], so that index
/// arithmetic (`index + count`) never overflows.
pub const INDEX_MAX: LogIndex = LogIndex(1 << 62);

/// A message that breaks the protocol, and who sent it.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("{kind} (a {message_kind} from node {sender} in group {group})")]
pub struct ProtocolViolation {
    /// The node the message names as its sender.
    pub sender: NodeId,
    /// The group it was addressed to.
    pub group: GroupId,
    /// The message's kind ([`MessageBody::kind`]).
    pub message_kind: &'static str,
    /// Which rule it breaks.
    pub kind: ViolationKind,
}

/// The rules a peer's message can break.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ViolationKind {
    /// The message names this node as its sender.
    #[error("the message claims to come from this node itself")]
    FromSelf,
    /// The message is addressed to another node.
    #[error("the message is addressed to node {to}, not to this node")]
    NotAddressedHere {
        /// The receiver it names.
        to: NodeId,
    },
    /// The node named as sender is not the node whose connection carried it
    /// (checked by the runtime against the handshake).
    #[error("the message names node {named} as its sender but came over node {authenticated}'s connection")]
    SenderNotAuthenticated {
        /// The sender the message names.
        named: NodeId,
        /// The node the handshake authenticated.
        authenticated: NodeId,
    },
    /// A term beyond [`TERM_MAX`].
    #[error("{field} {term} is beyond the bound {TERM_MAX}")]
    TermBeyondBound {
        /// Which field.
        field: &'static str,
        /// Its value.
        term: Term,
    },
    /// A log index beyond [`INDEX_MAX`].
    #[error("{field} {index} is beyond the bound {INDEX_MAX}")]
    IndexBeyondBound {
        /// Which field.
        field: &'static str,
        /// Its value.
        index: LogIndex,
    },
    /// An AppendEntries entry at or below `prev_log_index`.
    #[error("entry {index} is not after prev_log_index {prev_log_index}")]
    EntryNotAfterPrev {
        /// The append's `prev_log_index`.
        prev_log_index: LogIndex,
        /// The entry's index.
        index: LogIndex,
    },
    /// AppendEntries entries that do not follow one another.
    #[error("entries are not contiguous: expected index {expected}, found {found}")]
    EntriesNotContiguous {
        /// The index that should come next.
        expected: LogIndex,
        /// The index that came.
        found: LogIndex,
    },
    /// An entry (or `prev_log_term`) of a later term than the leader's own.
    #[error("entry {index} has term {entry_term}, later than the leader's term {leader_term}")]
    EntryTermAboveLeader {
        /// The entry's index.
        index: LogIndex,
        /// Its term.
        entry_term: Term,
        /// The term the message was sent in.
        leader_term: Term,
    },
    /// Entry terms that go down along the log (Raft §5.3: a log's terms never decrease).
    #[error("entry {index} has term {term}, lower than the term {previous} before it")]
    EntryTermsDecrease {
        /// The entry's index.
        index: LogIndex,
        /// Its term.
        term: Term,
        /// The previous entry's term.
        previous: Term,
    },
    /// A configuration (in an entry or a snapshot) with no voter.
    #[error("a configuration at index {index} has no voter")]
    ConfigurationWithoutVoters {
        /// Index of the entry or snapshot carrying it.
        index: LogIndex,
    },
    /// A follower acknowledges entries beyond the leader's own log: it cannot
    /// hold entries of the leader's term that the leader never wrote.
    #[error("acknowledges index {acknowledged} beyond the leader's last index {last_index}")]
    AcknowledgedBeyondLog {
        /// The acknowledged index.
        acknowledged: LogIndex,
        /// The leader's last index.
        last_index: LogIndex,
    },
    /// A heartbeat round acknowledged that the leader never started.
    #[error("acknowledges heartbeat round {round}, but only {current} were sent")]
    RoundNeverSent {
        /// The round acknowledged.
        round: u64,
        /// The leader's latest round.
        current: u64,
    },
    /// A leader's message in this node's own term while this node leads it:
    /// two leaders in one term (Raft §5.2 allows at most one).
    #[error("another leader in this leader's own term {term}")]
    SecondLeaderInTerm {
        /// The term.
        term: Term,
    },
    /// A bare InstallSnapshot message: the runtime installs a snapshot only
    /// from a complete, verified chunk stream (it never sends one bare);
    /// checked by the runtime, not the core.
    #[error("a bare snapshot message: snapshots are installed only from a verified chunk stream")]
    SnapshotNotSupported,
}

impl RaftCore {
    /// Checks `message` with [`check_message`] and steps it if it keeps the
    /// protocol. A violation changes nothing in the core.
    pub fn step_checked(&mut self, message: Message) -> Result<(), ProtocolViolation> {
        check_message(self, &message)?;
        self.step(message);
        Ok(())
    }
}

/// Names the first protocol rule `message` breaks, given the state of the
/// core `core` that would step it; `Ok` if it breaks none. Pure.
pub fn check_message(core: &RaftCore, message: &Message) -> Result<(), ProtocolViolation> {
    check(core, message).map_err(|kind| ProtocolViolation {
        sender: message.from,
        group: message.group,
        message_kind: message.body.kind(),
        kind,
    })
}

fn term_bound(field: &'static str, term: Term) -> Result<(), ViolationKind> {
    if term > TERM_MAX {
        return Err(ViolationKind::TermBeyondBound { field, term });
    }
    Ok(())
}

fn index_bound(field: &'static str, index: LogIndex) -> Result<(), ViolationKind> {
    if index > INDEX_MAX {
        return Err(ViolationKind::IndexBeyondBound { field, index });
    }
    Ok(())
}

fn configuration_has_voters(configuration: &Configuration, index: LogIndex) -> Result<(), ViolationKind> {
    if configuration.voters.is_empty() {
        return Err(ViolationKind::ConfigurationWithoutVoters { index });
    }
    Ok(())
}

fn check(core: &RaftCore, m: &Message) -> Result<(), ViolationKind> {
    if m.from == core.config.id {
        return Err(ViolationKind::FromSelf);
    }
    if m.to != core.config.id {
        return Err(ViolationKind::NotAddressedHere { to: m.to });
    }
    term_bound("term", m.term)?;
    check_fields(m)?;
    // The rest depends on this node leading the message's term: a message of
    // another term is answered or ignored by the term rules (`step_term`).
    let leading_this_term = core.role == Role::Leader && m.term == core.term;
    if !leading_this_term {
        return Ok(());
    }
    let last_index = core.log.last_index();
    let acknowledged = match &m.body {
        // A leader sends these; this node leads the term (Raft §5.2).
        MessageBody::AppendEntries { .. } | MessageBody::Heartbeat { .. } | MessageBody::InstallSnapshot { .. } => {
            return Err(ViolationKind::SecondLeaderInTerm { term: m.term })
        }
        // A follower acknowledges what this leader sent it, or its commit
        // index, which is in the leader's log (leader completeness, §5.4).
        MessageBody::AppendEntriesResponse(AppendOutcome::Accepted { match_index }) => *match_index,
        MessageBody::InstallSnapshotResponse { last_index } => *last_index,
        MessageBody::HeartbeatResponse { round } => {
            let current = core.reads.current_round();
            if *round > current {
                return Err(ViolationKind::RoundNeverSent { round: *round, current });
            }
            return Ok(());
        }
        _ => return Ok(()),
    };
    if acknowledged > last_index {
        return Err(ViolationKind::AcknowledgedBeyondLog {
            acknowledged,
            last_index,
        });
    }
    Ok(())
}

/// The rules of the message alone, whatever the receiver's state.
fn check_fields(m: &Message) -> Result<(), ViolationKind> {
    match &m.body {
        MessageBody::AppendEntries {
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit,
        } => {
            index_bound("prev_log_index", *prev_log_index)?;
            term_bound("prev_log_term", *prev_log_term)?;
            index_bound("leader_commit", *leader_commit)?;
            if *prev_log_term > m.term {
                return Err(ViolationKind::EntryTermAboveLeader {
                    index: *prev_log_index,
                    entry_term: *prev_log_term,
                    leader_term: m.term,
                });
            }
            check_entries(*prev_log_index, *prev_log_term, entries, m.term)
        }
        MessageBody::AppendEntriesResponse(AppendOutcome::Accepted { match_index }) => {
            index_bound("match_index", *match_index)
        }
        MessageBody::AppendEntriesResponse(AppendOutcome::Rejected {
            rejected_index,
            hint_index,
            hint_term,
        }) => {
            index_bound("rejected_index", *rejected_index)?;
            index_bound("hint_index", *hint_index)?;
            term_bound("hint_term", *hint_term)
        }
        MessageBody::RequestVote {
            last_log_index,
            last_log_term,
            ..
        } => {
            index_bound("last_log_index", *last_log_index)?;
            term_bound("last_log_term", *last_log_term)
        }
        MessageBody::Heartbeat { commit_index, .. } => index_bound("commit_index", *commit_index),
        MessageBody::ReadIndexResponse { index: Some(index), .. } => index_bound("index", *index),
        MessageBody::InstallSnapshot { meta } => {
            index_bound("snapshot index", meta.index)?;
            term_bound("snapshot term", meta.term)?;
            if meta.term > m.term {
                return Err(ViolationKind::EntryTermAboveLeader {
                    index: meta.index,
                    entry_term: meta.term,
                    leader_term: m.term,
                });
            }
            configuration_has_voters(&meta.configuration, meta.index)
        }
        MessageBody::InstallSnapshotResponse { last_index } => index_bound("last_index", *last_index),
        MessageBody::RequestVoteResponse { .. }
        | MessageBody::HeartbeatResponse { .. }
        | MessageBody::TimeoutNow
        | MessageBody::ReadIndex { .. }
        | MessageBody::ReadIndexResponse { index: None, .. } => Ok(()),
    }
}

/// Entries of an append follow `prev_log_index` one by one, with terms that
/// never decrease and never pass the leader's own (Raft §5.3).
fn check_entries(
    prev_log_index: LogIndex,
    prev_log_term: Term,
    entries: &[Entry],
    leader_term: Term,
) -> Result<(), ViolationKind> {
    let mut expected = prev_log_index.next();
    let mut previous_term = prev_log_term;
    for entry in entries {
        if entry.index <= prev_log_index {
            return Err(ViolationKind::EntryNotAfterPrev {
                prev_log_index,
                index: entry.index,
            });
        }
        if entry.index != expected {
            return Err(ViolationKind::EntriesNotContiguous {
                expected,
                found: entry.index,
            });
        }
        index_bound("entry index", entry.index)?;
        term_bound("entry term", entry.term)?;
        if entry.term > leader_term {
            return Err(ViolationKind::EntryTermAboveLeader {
                index: entry.index,
                entry_term: entry.term,
                leader_term,
            });
        }
        if entry.term < previous_term {
            return Err(ViolationKind::EntryTermsDecrease {
                index: entry.index,
                term: entry.term,
                previous: previous_term,
            });
        }
        if let EntryPayload::Configuration(configuration) = &entry.payload {
            configuration_has_voters(configuration, entry.index)?;
        }
        previous_term = entry.term;
        expected = expected.next();
    }
    Ok(())
}
