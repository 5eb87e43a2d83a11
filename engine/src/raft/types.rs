//! The nouns of the protocol: ids, terms, indexes, log entries, hard state and
//! snapshot metadata. Plain data shared by the core, the simulator and the
//! runtime.

use std::collections::BTreeSet;
use std::fmt;

use bytes::Bytes;

macro_rules! id_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

id_newtype!(
    /// A node (a process taking part in one or many groups).
    NodeId
);
id_newtype!(
    /// A Raft group: one replicated log and state machine.
    GroupId
);
id_newtype!(
    /// A Raft term (Raft §5.1).
    Term
);
id_newtype!(
    /// A position in a group's log; the first entry has index 1, 0 means "none".
    LogIndex
);

impl Term {
    /// The term after this one.
    pub fn next(self) -> Term {
        Term(self.0 + 1)
    }
}

impl LogIndex {
    /// The index after this one.
    pub fn next(self) -> LogIndex {
        LogIndex(self.0 + 1)
    }
    /// The index before this one (saturating at 0).
    pub fn prev(self) -> LogIndex {
        LogIndex(self.0.saturating_sub(1))
    }
    /// `self + count`.
    pub fn plus(self, count: u64) -> LogIndex {
        LogIndex(self.0 + count)
    }
}

/// What a log entry carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryPayload {
    /// Appended by a new leader to commit entries of earlier terms (Raft §8).
    Noop,
    /// An application command, opaque to Raft.
    Normal(Bytes),
    /// A new membership configuration; it takes effect when appended
    /// (Raft thesis §4.1), whether or not it is committed. Boxed: inline,
    /// its four sets would make every entry 120 bytes instead of 56, in the
    /// log, in each Ready and in each message, for an entry that is rare.
    Configuration(Box<Configuration>),
}

/// One entry of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Position in the log.
    pub index: LogIndex,
    /// Term of the leader that created it.
    pub term: Term,
    /// What it carries.
    pub payload: EntryPayload,
}

/// Bytes an entry is charged for in flow-control windows: its payload plus a
/// fixed overhead for index, term and framing.
pub const ENTRY_OVERHEAD_BYTES: u64 = 24;

impl EntryPayload {
    /// The payload's part of [`Entry::size_bytes`] (without the overhead).
    pub fn size_bytes(&self) -> u64 {
        match self {
            EntryPayload::Noop => 0,
            EntryPayload::Normal(data) => data.len() as u64,
            EntryPayload::Configuration(conf) => conf.member_count() as u64 * 8,
        }
    }
}

impl Entry {
    /// The entry's size for flow control (in-flight and uncommitted bytes).
    pub fn size_bytes(&self) -> u64 {
        self.payload.size_bytes() + ENTRY_OVERHEAD_BYTES
    }
}

/// What must be on disk before a vote or an append is acknowledged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    /// The latest term this node has seen.
    pub term: Term,
    /// The candidate this node voted for in `term`, if any.
    pub vote: Option<NodeId>,
    /// The highest index known committed (may lag; recovery re-learns it).
    pub commit_index: LogIndex,
}

/// A membership configuration. `outgoing_voters` is non-empty only in a joint
/// configuration (Raft thesis §4.3), when decisions need a majority of both
/// `voters` and `outgoing_voters`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Configuration {
    /// Voters of the (incoming) configuration.
    pub voters: BTreeSet<NodeId>,
    /// Voters of the outgoing configuration while joint; empty otherwise.
    pub outgoing_voters: BTreeSet<NodeId>,
    /// Non-voting members that receive the log.
    pub learners: BTreeSet<NodeId>,
    /// Outgoing voters that become learners when the joint configuration is
    /// left (a demotion); empty unless joint.
    pub learners_next: BTreeSet<NodeId>,
}

impl Configuration {
    /// A simple (non-joint) configuration of these voters.
    pub fn with_voters(voters: impl IntoIterator<Item = NodeId>) -> Configuration {
        Configuration {
            voters: voters.into_iter().collect(),
            ..Configuration::default()
        }
    }
    /// True while both an old and a new voter set decide.
    pub fn is_joint(&self) -> bool {
        !self.outgoing_voters.is_empty()
    }
    /// True if `node` votes in either half.
    pub fn is_voter(&self, node: NodeId) -> bool {
        self.voters.contains(&node) || self.outgoing_voters.contains(&node)
    }
    /// True if `node` receives the log in any role.
    pub fn contains(&self, node: NodeId) -> bool {
        self.is_voter(node) || self.learners.contains(&node) || self.learners_next.contains(&node)
    }
    /// Every member, voters first, in ascending order and without repeats.
    pub fn members(&self) -> BTreeSet<NodeId> {
        let mut all: BTreeSet<NodeId> = self.voters.clone();
        all.extend(self.outgoing_voters.iter().copied());
        all.extend(self.learners.iter().copied());
        all.extend(self.learners_next.iter().copied());
        all
    }
    /// Number of distinct members.
    pub fn member_count(&self) -> usize {
        self.members().len()
    }
    /// The configuration that leaving this joint one yields.
    pub fn left_joint(&self) -> Configuration {
        let mut learners = self.learners.clone();
        learners.extend(self.learners_next.iter().copied());
        Configuration {
            voters: self.voters.clone(),
            outgoing_voters: BTreeSet::new(),
            learners,
            learners_next: BTreeSet::new(),
        }
    }
}

/// Where a snapshot stands in the log and which configuration it carries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// The last index the snapshot covers.
    pub index: LogIndex,
    /// The term of that entry.
    pub term: Term,
    /// The configuration in force at `index`.
    pub configuration: Configuration,
}

/// The role a core plays in its group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Asks whether it could win an election, without raising its term
    /// (Raft thesis §9.6).
    PreCandidate,
    /// Campaigns for votes in a new term.
    Candidate,
    /// Accepts proposals and replicates the log.
    Leader,
}

/// Volatile facts a runtime wants to notice when they change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftState {
    /// Current role.
    pub role: Role,
    /// Current term.
    pub term: Term,
    /// The leader this node follows, if known.
    pub leader: Option<NodeId>,
}

/// A confirmed linearizable read: once the state machine has applied `index`,
/// the read identified by `context` may be served (Raft thesis §6.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    /// The caller's identifier for the read.
    pub context: u64,
    /// The commit index the read must wait for.
    pub index: LogIndex,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_holds_no_configuration_inline() {
        // Index, term and a shared `Bytes` with the payload's tag: every
        // entry of the log, of each Ready and of each message pays this
        // size. A configuration held inline (four sets) would double it.
        let bytes = std::mem::size_of::<Entry>();
        println!("an Entry is {bytes} bytes");
        assert!(bytes <= 56, "an Entry is {bytes} bytes");
    }
}
