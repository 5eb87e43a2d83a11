//! The trait a storage system implements to be replicated.

use std::io::{Read, Write};

use crate::raft::{Configuration, LogIndex, Term};

/// One committed command handed to [`StateMachine::on_apply`].
#[derive(Debug, Clone, Copy)]
pub struct Command<'a> {
    /// Its log index.
    pub index: LogIndex,
    /// The term it was proposed in.
    pub term: Term,
    /// The command bytes as proposed.
    pub data: &'a [u8],
}

/// Why a node stopped leading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaderStopReason {
    /// The node stopped leading while it runs; the term it knows then. A
    /// newer term when it learned of one (another node's election, a
    /// leadership transfer); the term it led in when it stepped down by
    /// itself (check-quorum found it cut off from a quorum, it handed over
    /// after removing itself, its peers were reset, or its WAL failed).
    NewTerm(Term),
    /// The node is shutting down while leading (`Node::shutdown` or drop).
    Shutdown,
}

/// A deterministic state machine replicated by one Raft group.
///
/// It lives on the shard that owns its group and is never moved between
/// threads, so it needs no `Send`. The engine calls it only from that shard
/// (a `Send` one wrapped in [`OffShard`] is called only from its own apply
/// thread instead).
///
/// # Correctness
///
/// - `on_apply` must be deterministic: every replica applies the same
///   commands in the same order and must reach the same state.
/// - A snapshot written by `on_snapshot_save` must contain the state of every
///   command applied so far; `on_snapshot_load` must replace the whole state.
pub trait StateMachine: 'static {
    /// Applies committed commands, in log order; returns one result per
    /// command, handed to its proposer (if it is waiting on this node).
    fn on_apply(&mut self, commands: &mut dyn Iterator<Item = Command<'_>>) -> Vec<Vec<u8>>;

    /// Answers a read-only query against the current state: for a
    /// linearizable read only once the state has caught up with its read
    /// index; for a stale read (`GroupHandle::read_stale`) at once, on
    /// whatever this node has applied.
    fn on_query(&self, query: &[u8]) -> Vec<u8> {
        let _ = query;
        Vec::new()
    }

    /// Writes a snapshot of the state (called by `GroupHandle::snapshot`
    /// and by the snapshot policy, on the shard's thread, after every
    /// applied command). Once it is durable the log below it is dropped, so
    /// it must hold the whole state.
    ///
    /// The default refuses (`ErrorKind::Unsupported`): a state machine that
    /// does not implement snapshots is never compacted, rather than saved
    /// empty and its state lost at the next restart.
    fn on_snapshot_save(&mut self, writer: &mut dyn Write) -> std::io::Result<()> {
        let _ = writer;
        Err(snapshots_unsupported())
    }

    /// An owned, consistent view of the state as of the last applied
    /// command, to be written into a snapshot on another thread while the
    /// shard goes on applying (the view must not change with later
    /// commands: a copy, an immutable version of a persistent structure, a
    /// storage engine's own snapshot). `None` (the default) writes the
    /// snapshot on the shard's thread with `on_snapshot_save`.
    ///
    /// The state machine itself needs no `Send`: only the view crosses to
    /// the writing thread.
    fn snapshot_view(&mut self) -> Option<Box<dyn SnapshotView>> {
        None
    }

    /// Replaces the state with a snapshot: on a fresh state machine when a
    /// node restarts from its newest valid snapshot, and on a running one
    /// when a follower too far behind the leader's log is sent the leader's
    /// snapshot (InstallSnapshot). Either way the commands the snapshot
    /// covers are then not applied again, and whatever state was there
    /// before must be replaced, not merged into. The default refuses, as
    /// `on_snapshot_save` does (it is never called without a saved snapshot).
    fn on_snapshot_load(&mut self, reader: &mut dyn Read) -> std::io::Result<()> {
        let _ = reader;
        Err(snapshots_unsupported())
    }

    /// This node became the group's leader in `term`.
    fn on_leader_start(&mut self, term: Term) {
        let _ = term;
    }

    /// This node stopped leading the group. Every `on_leader_start` is
    /// followed by exactly one `on_leader_stop` before the state machine is
    /// dropped: `Shutdown` when the node shuts down (`Node::shutdown` or
    /// drop) while leading, `NewTerm` for every other way a leader stops
    /// (see [`LeaderStopReason::NewTerm`]; after a WAL failure `on_error`
    /// follows).
    fn on_leader_stop(&mut self, reason: LeaderStopReason) {
        let _ = reason;
    }

    /// A configuration was committed at `index`.
    fn on_configuration_committed(&mut self, index: LogIndex, configuration: &Configuration) {
        let _ = (index, configuration);
    }

    /// The group hit an unrecoverable error (e.g. its WAL failed); it will
    /// take no more writes.
    fn on_error(&mut self, error: &crate::api::Error) {
        let _ = error;
    }

    /// A loader that reads and decodes a snapshot off the shard's thread,
    /// for a state too large to load within one loop turn. `None` (the
    /// default) loads with `on_snapshot_load` on the shard's thread.
    ///
    /// With a loader, the engine runs [`SnapshotLoader::prepare`] on a
    /// blocking thread and hands what it returns to
    /// [`on_snapshot_prepared`](Self::on_snapshot_prepared) on the shard's
    /// thread, which swaps it in. Meanwhile the shard serves its other
    /// groups, and this group goes on logging and acknowledging entries,
    /// but nothing reaches this state machine: commands committed meanwhile
    /// are applied after the swap, and reads (stale ones too) wait for it.
    /// Used both when a follower installs a leader's snapshot and when a
    /// node restarts from its own.
    fn snapshot_loader(&mut self) -> Option<Box<dyn SnapshotLoader>> {
        None
    }

    /// Replaces the whole state with one a loader from
    /// [`snapshot_loader`](Self::snapshot_loader) prepared (downcast it to
    /// the type that loader returned). It runs on the shard's thread, so it
    /// should be cheap: a swap, not a decode. An error fails the shard as a
    /// failed `on_snapshot_load` does. The default refuses.
    fn on_snapshot_prepared(&mut self, prepared: PreparedSnapshot) -> std::io::Result<()> {
        let _ = prepared;
        Err(snapshots_unsupported())
    }

    /// Hands the state machine over to be run on its own apply thread,
    /// off the shard (`None`, the default: it runs on the shard). Wrap a
    /// state machine whose `on_apply` may block (a storage engine writing
    /// or compacting, slow user code) in [`OffShard`] rather than
    /// implementing this: the shard then goes on replicating, heartbeating
    /// and serving its other groups while this one applies. The engine
    /// asks once, when the group starts, after a snapshot was loaded.
    fn apply_off_shard(&mut self) -> Option<Box<dyn StateMachine + Send>> {
        None
    }
}

/// A state a [`SnapshotLoader`] prepared, for
/// [`StateMachine::on_snapshot_prepared`] to downcast and swap in.
pub type PreparedSnapshot = Box<dyn std::any::Any + Send>;

/// What [`StateMachine::snapshot_loader`] hands over: reads a snapshot's
/// data on a blocking thread, off the shard's loop, into a state that is
/// then swapped in on the shard's thread. It reads the bytes
/// `on_snapshot_save` (or a [`SnapshotView`]) wrote.
pub trait SnapshotLoader: Send {
    /// Reads and decodes the whole snapshot. An error (the data does not
    /// decode) fails the load as an `on_snapshot_load` error does.
    fn prepare(self: Box<Self>, reader: &mut dyn Read) -> std::io::Result<PreparedSnapshot>;
}

fn snapshots_unsupported() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "this state machine does not implement on_snapshot_save and on_snapshot_load",
    )
}

/// What [`StateMachine::snapshot_view`] hands over: written into the
/// snapshot's data file on a blocking thread, off the shard's loop. The
/// bytes must be what `on_snapshot_load` reads back.
pub trait SnapshotView: Send {
    /// Writes the view's state into the snapshot.
    fn write_to(&mut self, writer: &mut dyn Write) -> std::io::Result<()>;
}

/// A state machine applied on its own thread instead of on its shard's
/// loop: for an `on_apply` that may take milliseconds (a real storage
/// engine, slow user code), so that it does not hold up heartbeats,
/// replication and the shard's other groups. Return it from the state
/// machine factory: `Box::new(OffShard::new(MyStore::open(..)))`.
///
/// Every call the engine makes on it (`on_apply`, `on_query`, the leader
/// and configuration callbacks, the snapshot) then happens on that thread,
/// in log order; a write is answered, and a linearizable read served, only
/// once the thread has applied up to it (`docs/architecture.md`, "The
/// apply lane"). The state machine must be `Send`.
pub struct OffShard {
    inner: Option<Box<dyn StateMachine + Send>>,
}

impl OffShard {
    /// Wraps `state_machine` to be applied off the shard.
    pub fn new(state_machine: impl StateMachine + Send) -> OffShard {
        OffShard {
            inner: Some(Box::new(state_machine)),
        }
    }

    fn inner(&mut self) -> &mut (dyn StateMachine + Send) {
        self.inner
            .as_deref_mut()
            .expect("an OffShard state machine is used only until it is handed to its apply thread")
    }
}

/// Until the group starts (a snapshot loaded at restart), the wrapper
/// passes every call through; then the engine takes the state machine out
/// (`apply_off_shard`) and calls it only on its apply thread.
impl StateMachine for OffShard {
    fn on_apply(&mut self, commands: &mut dyn Iterator<Item = Command<'_>>) -> Vec<Vec<u8>> {
        self.inner().on_apply(commands)
    }

    fn on_query(&self, query: &[u8]) -> Vec<u8> {
        self.inner
            .as_deref()
            .expect("an OffShard state machine is used only until it is handed to its apply thread")
            .on_query(query)
    }

    fn on_snapshot_save(&mut self, writer: &mut dyn Write) -> std::io::Result<()> {
        self.inner().on_snapshot_save(writer)
    }

    fn snapshot_view(&mut self) -> Option<Box<dyn SnapshotView>> {
        self.inner().snapshot_view()
    }

    fn on_snapshot_load(&mut self, reader: &mut dyn Read) -> std::io::Result<()> {
        self.inner().on_snapshot_load(reader)
    }

    fn on_leader_start(&mut self, term: Term) {
        self.inner().on_leader_start(term)
    }

    fn on_leader_stop(&mut self, reason: LeaderStopReason) {
        self.inner().on_leader_stop(reason)
    }

    fn on_configuration_committed(&mut self, index: LogIndex, configuration: &Configuration) {
        self.inner().on_configuration_committed(index, configuration)
    }

    fn on_error(&mut self, error: &crate::api::Error) {
        self.inner().on_error(error)
    }

    fn apply_off_shard(&mut self) -> Option<Box<dyn StateMachine + Send>> {
        self.inner.take()
    }
}
