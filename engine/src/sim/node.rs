//! A simulated node: a core, a disk whose writes complete later (and are lost
//! or torn by a crash), and a state machine that records what it applied.

use std::collections::VecDeque;
use std::rc::Rc;

use super::checker::ReadFloor;
use crate::raft::{Entry, EntryPayload, HardState, LogIndex, Message, RaftCore, SeededRng, SnapshotMeta, Term};

/// The replicated state machine of the simulation: it folds every applied
/// entry into a hash and remembers how many client values it holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateMachine {
    /// Last applied index.
    pub applied_index: LogIndex,
    /// Hash of every applied payload, in order.
    pub digest: u64,
    /// Client values applied.
    pub values_applied: u64,
}

impl StateMachine {
    /// Applies one committed entry.
    pub fn apply(&mut self, entry: &Entry) {
        assert_eq!(entry.index, self.applied_index.next(), "entries are applied in order");
        self.applied_index = entry.index;
        self.digest = mix(self.digest, payload_digest(&entry.payload));
        if let EntryPayload::Normal(_) = entry.payload {
            self.values_applied += 1;
        }
    }
}

/// A stable hash of an entry's payload (the simulator's notion of "same command").
pub fn payload_digest(payload: &EntryPayload) -> u64 {
    match payload {
        EntryPayload::Noop => 1,
        EntryPayload::Normal(data) => data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        }),
        EntryPayload::Configuration(c) => c.members().iter().fold(7, |h, n| mix(h, n.0)) ^ (c.is_joint() as u64),
    }
}

/// Combines two hashes.
pub fn mix(a: u64, b: u64) -> u64 {
    let mut rng = SeededRng::new(a ^ b.rotate_left(17));
    rng.next_u64()
}

/// One record of a write, in the order it reaches the disk.
#[derive(Clone, Debug)]
pub enum Record {
    /// A snapshot from the leader, replacing the whole log.
    Snapshot(SnapshotMeta, Rc<StateMachine>),
    /// A snapshot this node took: entries up to its index are purged, later
    /// ones stay. Ordered after every write handed out before it, so a crash
    /// can never keep the snapshot but lose an earlier truncation.
    LocalSnapshot(SnapshotMeta, Rc<StateMachine>),
    /// Drop entries from this index on.
    Truncate(LogIndex),
    /// Entries to append.
    Entries(Vec<Entry>),
    /// Term, vote, commit.
    HardState(HardState),
}

/// A write handed to the disk, not yet durable.
#[derive(Debug)]
pub struct PendingWrite {
    /// Tick at which it completes.
    pub complete_at: u64,
    /// What it writes.
    pub records: Vec<Record>,
    /// Messages to send when it (and every earlier write) is durable.
    pub gated: Vec<Message>,
    /// The last entry it writes, reported to the core on completion.
    pub last_entry: Option<(LogIndex, Term)>,
}

/// What survives a crash.
#[derive(Clone, Debug, Default)]
pub struct Disk {
    /// Persisted term, vote, commit.
    pub hard_state: HardState,
    /// Persisted snapshot and its data.
    pub snapshot: Option<(SnapshotMeta, Rc<StateMachine>)>,
    /// Persisted entries after the snapshot.
    pub log: Vec<Entry>,
}

impl Disk {
    fn first_index(&self) -> LogIndex {
        self.snapshot.as_ref().map_or(LogIndex(0), |(m, _)| m.index).next()
    }

    /// Applies one record (an error names a record that does not fit).
    pub fn apply(&mut self, record: &Record) -> Result<(), String> {
        match record {
            Record::Snapshot(meta, data) => {
                self.snapshot = Some((meta.clone(), data.clone()));
                self.log.clear();
            }
            Record::LocalSnapshot(meta, data) => {
                self.purge_to(meta.index);
                self.snapshot = Some((meta.clone(), data.clone()));
            }
            Record::Truncate(from) => {
                let keep = from.0.saturating_sub(self.first_index().0) as usize;
                self.log.truncate(keep);
            }
            Record::Entries(entries) => {
                for entry in entries {
                    if entry.index < self.first_index() {
                        continue; // already under a persisted snapshot
                    }
                    let expected = self.first_index().plus(self.log.len() as u64);
                    if entry.index != expected {
                        return Err(format!(
                            "entry {} written after {} (not contiguous)",
                            entry.index,
                            expected.prev()
                        ));
                    }
                    self.log.push(entry.clone());
                }
            }
            Record::HardState(hard_state) => self.hard_state = *hard_state,
        }
        Ok(())
    }

    /// Drops entries up to `index` (a persisted snapshot covers them).
    pub fn purge_to(&mut self, index: LogIndex) {
        let drop = (index.0 + 1).saturating_sub(self.first_index().0) as usize;
        self.log.drain(..drop.min(self.log.len()));
    }

    /// Term of the entry at `index` on disk, or the snapshot's.
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        if let Some((meta, _)) = &self.snapshot {
            if index <= meta.index {
                return (index == meta.index).then_some(meta.term);
            }
        }
        let first = self.first_index();
        if index < first {
            return None;
        }
        self.log.get((index.0 - first.0) as usize).map(|e| e.term)
    }

    /// True if the disk holds (`index`, `term`) or a snapshot covering it.
    pub fn covers(&self, index: LogIndex, term: Term) -> bool {
        if let Some((meta, _)) = &self.snapshot {
            if index <= meta.index {
                return true;
            }
        }
        self.term_at(index) == Some(term)
    }
}

/// A proposal a node accepted and will acknowledge when it applies it.
#[derive(Clone, Copy, Debug)]
pub struct PendingProposal {
    /// Term it was appended in.
    pub term: Term,
    /// The client value.
    pub value: u64,
}

/// A read waiting to be served.
#[derive(Clone, Copy, Debug)]
pub struct PendingRead {
    /// The read's id.
    pub context: u64,
    /// What it must at least return, fixed when it began.
    pub floor: ReadFloor,
    /// For a read the leader answered from its lease: the leader's term and
    /// the highest write a newer term's leader had acknowledged.
    pub lease: Option<(Term, LogIndex)>,
    /// Index to wait for (once confirmed).
    pub read_index: Option<LogIndex>,
}

/// One simulated node.
pub struct SimNode {
    /// Running core, or `None` while crashed.
    pub core: Option<RaftCore>,
    /// Durable state.
    pub disk: Disk,
    /// Writes in flight, oldest first.
    pub writes: VecDeque<PendingWrite>,
    /// The state machine.
    pub state_machine: StateMachine,
    /// Proposals awaiting acknowledgement, by index.
    pub proposals: std::collections::BTreeMap<LogIndex, PendingProposal>,
    /// Reads in flight.
    pub reads: Vec<PendingRead>,
    /// Counts restarts.
    pub incarnation: u64,
    /// The commit index the checkers last saw.
    pub commit_seen: LogIndex,
    /// The newest snapshot this node holds (taken or installed), durable or
    /// not: what it sends to a peer that needs it.
    pub snapshot: Option<(SnapshotMeta, Rc<StateMachine>)>,
}

impl SimNode {
    /// A node that has never run.
    pub fn new(core: RaftCore) -> SimNode {
        SimNode {
            core: Some(core),
            disk: Disk::default(),
            writes: VecDeque::new(),
            state_machine: StateMachine::default(),
            proposals: Default::default(),
            reads: Vec::new(),
            incarnation: 0,
            commit_seen: LogIndex(0),
            snapshot: None,
        }
    }

    /// Crashes: unfinished writes are lost, except that the oldest may be
    /// torn, leaving a prefix of its records (and of its entries) on disk.
    pub fn crash(&mut self, rng: &mut SeededRng) -> Result<(), String> {
        self.core = None;
        if let Some(write) = self.writes.pop_front() {
            if rng.chance(1, 2) {
                let keep = rng.range(0, write.records.len() as u64 + 1) as usize;
                for (i, record) in write.records.iter().enumerate() {
                    if i < keep {
                        self.disk.apply(record)?;
                    } else if i == keep {
                        if let Record::Entries(entries) = record {
                            let torn = rng.range(0, entries.len() as u64) as usize;
                            self.disk.apply(&Record::Entries(entries[..torn].to_vec()))?;
                        }
                        break;
                    }
                }
            }
        }
        self.writes.clear();
        self.proposals.clear();
        self.reads.clear();
        Ok(())
    }
}
