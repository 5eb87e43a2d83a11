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

    /// Applies committed commands, in log order, writing one result per
    /// command into `out`, a buffer the engine owns and lends for the call
    /// (`docs/embedding.md`, "Results without allocations"). The engine
    /// answers the proposers straight from it, so a state machine that
    /// implements this allocates nothing per result.
    ///
    /// A command without a pushed result gets an empty one; a push past the
    /// call's commands is refused. A result larger than
    /// [`APPLY_RESULT_BYTES_MAX`] (or past [`APPLY_RESULTS_BYTES_MAX`] for
    /// the whole call) is refused with [`ResultTooLarge`]: the command stays
    /// applied, its proposer gets [`crate::api::Error::ResultTooLarge`].
    ///
    /// The default calls [`on_apply`](Self::on_apply) and copies its
    /// results in; a state machine that implements this one can leave
    /// `on_apply` as a call of [`apply_via_results`].
    fn on_apply_into(&mut self, commands: &mut dyn Iterator<Item = Command<'_>>, out: &mut ApplyResults) {
        for result in self.on_apply(commands) {
            if out.push(&result).is_err() {
                // Counted as refused in `out`; past the commands: dropped.
            }
        }
    }

    /// Answers a read-only query against the current state: for a
    /// linearizable read only once the state has caught up with its read
    /// index; for a stale read (`GroupHandle::read_stale`) at once, on
    /// whatever this node has applied.
    fn on_query(&self, query: &[u8]) -> Vec<u8> {
        let _ = query;
        Vec::new()
    }

    /// [`on_query`](Self::on_query)'s answer appended to `out`, a buffer
    /// the engine owns and lends for the call (empty when lent): a state
    /// machine that implements this answers a read without allocating.
    /// The default appends `on_query`'s vector.
    fn on_query_into(&self, query: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(&self.on_query(query));
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

    fn on_apply_into(&mut self, commands: &mut dyn Iterator<Item = Command<'_>>, out: &mut ApplyResults) {
        self.inner().on_apply_into(commands, out)
    }

    fn on_query(&self, query: &[u8]) -> Vec<u8> {
        self.inner
            .as_deref()
            .expect("an OffShard state machine is used only until it is handed to its apply thread")
            .on_query(query)
    }

    fn on_query_into(&self, query: &[u8], out: &mut Vec<u8>) {
        self.inner
            .as_deref()
            .expect("an OffShard state machine is used only until it is handed to its apply thread")
            .on_query_into(query, out)
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

/// Bound on one command's result in [`ApplyResults`] (4 MiB: a quarter of a
/// client frame, so that an answer always fits in one).
pub const APPLY_RESULT_BYTES_MAX: usize = coraft_net::frame::FRAME_BODY_MAX_BYTES / 4;

/// Bound on the result bytes of one `on_apply_into` call (64 MiB); results
/// past it are refused as too large.
pub const APPLY_RESULTS_BYTES_MAX: usize = 64 << 20;

/// Result bytes whose room [`ApplyResults`] keeps between batches (1 MiB); a
/// batch that needed more gives the rest back after it.
pub const APPLY_RESULTS_RETAINED_BYTES_MAX: usize = 1 << 20;

/// Results whose room [`ApplyResults`] keeps between batches; a batch with
/// more gives the rest back after it.
pub const APPLY_RESULTS_RETAINED_MAX: usize = 1 << 14;

/// Why [`ApplyResults`] refused a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ResultTooLarge {
    /// The result itself exceeds [`APPLY_RESULT_BYTES_MAX`].
    #[error("a result of {bytes} bytes exceeds APPLY_RESULT_BYTES_MAX ({APPLY_RESULT_BYTES_MAX} bytes)")]
    Result {
        /// The result's size.
        bytes: usize,
    },
    /// The call's results together would exceed [`APPLY_RESULTS_BYTES_MAX`].
    #[error("a result of {bytes} bytes takes the call's results past APPLY_RESULTS_BYTES_MAX ({APPLY_RESULTS_BYTES_MAX} bytes)")]
    Call {
        /// The result's size.
        bytes: usize,
    },
    /// Every command of the call already has its result.
    #[error("more results than the call's {commands} commands")]
    MoreThanCommands {
        /// The call's commands.
        commands: usize,
    },
}

impl ResultTooLarge {
    /// The name of the bound that refused it.
    pub fn bound(&self) -> &'static str {
        match self {
            ResultTooLarge::Result { .. } => "APPLY_RESULT_BYTES_MAX",
            ResultTooLarge::Call { .. } => "APPLY_RESULTS_BYTES_MAX",
            ResultTooLarge::MoreThanCommands { .. } => "the call's command count",
        }
    }
}

/// Where one result lies in [`ApplyResults`]' bytes (`len == REFUSED`: a
/// refused result, `start` its place in `refusals`).
#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    len: u32,
}

const REFUSED: u32 = u32::MAX;

/// The results of an [`StateMachine::on_apply_into`] call: one contiguous
/// byte buffer and where each result lies in it, owned by the engine and
/// reused batch after batch (its room is kept up to
/// [`APPLY_RESULTS_RETAINED_BYTES_MAX`] and [`APPLY_RESULTS_RETAINED_MAX`]).
/// The state machine sees only its own call's results.
#[derive(Debug, Default)]
pub struct ApplyResults {
    bytes: Vec<u8>,
    spans: Vec<Span>,
    /// What refused each refused result, in order.
    refusals: Vec<ResultTooLarge>,
    /// The first result of the current call.
    base: usize,
    /// Where the current call's bytes start.
    base_bytes: usize,
    /// The current call's commands (the results it may push).
    commands: usize,
}

impl ApplyResults {
    /// An empty buffer (the engine lends one; a test may make its own).
    pub fn new() -> ApplyResults {
        ApplyResults::default()
    }

    /// Adds the next command's result.
    pub fn push(&mut self, result: &[u8]) -> Result<(), ResultTooLarge> {
        self.push_with(|bytes| bytes.extend_from_slice(result))
    }

    /// Adds the next command's result, written by `write` straight onto
    /// the end of the buffer (it must only append).
    pub fn push_with(&mut self, write: impl FnOnce(&mut Vec<u8>)) -> Result<(), ResultTooLarge> {
        let start = self.bytes.len();
        write(&mut self.bytes);
        let bytes = self.bytes.len().saturating_sub(start);
        let refusal = if self.len() >= self.commands {
            Some(ResultTooLarge::MoreThanCommands {
                commands: self.commands,
            })
        } else if bytes > APPLY_RESULT_BYTES_MAX {
            Some(ResultTooLarge::Result { bytes })
        } else if self.bytes.len() - self.base_bytes > APPLY_RESULTS_BYTES_MAX {
            Some(ResultTooLarge::Call { bytes })
        } else {
            None
        };
        match refusal {
            None => {
                self.spans.push(Span {
                    start,
                    len: bytes as u32,
                });
                Ok(())
            }
            Some(refusal) => {
                self.bytes.truncate(start);
                if !matches!(refusal, ResultTooLarge::MoreThanCommands { .. }) {
                    self.spans.push(Span {
                        start: self.refusals.len(),
                        len: REFUSED,
                    });
                    self.refusals.push(refusal);
                }
                Err(refusal)
            }
        }
    }

    /// The results pushed in this call so far.
    pub fn len(&self) -> usize {
        self.spans.len() - self.base
    }

    /// No result was pushed in this call yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Result `i` of this call (`None`: not pushed, or refused).
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        self.span(self.base.checked_add(i)?)?.ok()
    }

    /// Starts a call of `commands` commands: its results follow the ones
    /// already there.
    pub(crate) fn begin_call(&mut self, commands: usize) {
        self.base = self.spans.len();
        self.base_bytes = self.bytes.len();
        self.commands = commands;
    }

    /// The number of results of every call since the last `clear`.
    pub(crate) fn total(&self) -> usize {
        self.spans.len()
    }

    /// Result `i` counted from the last `clear`: its bytes, or what refused it.
    pub(crate) fn span(&self, i: usize) -> Option<Result<&[u8], ResultTooLarge>> {
        let span = *self.spans.get(i)?;
        if span.len == REFUSED {
            return Some(Err(self.refusals[span.start]));
        }
        Some(Ok(&self.bytes[span.start..span.start + span.len as usize]))
    }

    /// Adds a result the engine already has (a retry's cached one), past
    /// the bounds of a call.
    pub(crate) fn push_engine(&mut self, result: &[u8]) -> usize {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(result);
        self.spans.push(Span {
            start,
            // A cached result passed APPLY_RESULT_BYTES_MAX when it was made.
            len: result.len().min(REFUSED as usize - 1) as u32,
        });
        self.spans.len() - 1
    }

    /// Empties it, keeping the room of batches up to the retained bounds.
    pub(crate) fn clear(&mut self) {
        self.bytes.clear();
        self.spans.clear();
        self.refusals.clear();
        self.base = 0;
        self.base_bytes = 0;
        self.commands = 0;
        if self.bytes.capacity() > APPLY_RESULTS_RETAINED_BYTES_MAX {
            self.bytes.shrink_to(APPLY_RESULTS_RETAINED_BYTES_MAX);
        }
        if self.spans.capacity() > APPLY_RESULTS_RETAINED_MAX {
            self.spans.shrink_to(APPLY_RESULTS_RETAINED_MAX);
        }
        if self.refusals.capacity() > APPLY_RESULTS_RETAINED_MAX {
            self.refusals.shrink_to(APPLY_RESULTS_RETAINED_MAX);
        }
    }
}

/// An `on_apply` for a state machine that implements
/// [`StateMachine::on_apply_into`]: runs it on a fresh buffer and returns
/// its results as vectors (a refused result comes back empty).
pub fn apply_via_results(
    state_machine: &mut (impl StateMachine + ?Sized),
    commands: &mut dyn Iterator<Item = Command<'_>>,
) -> Vec<Vec<u8>> {
    let commands: Vec<Command<'_>> = commands.collect();
    let mut out = ApplyResults::new();
    out.begin_call(commands.len());
    state_machine.on_apply_into(&mut commands.iter().copied(), &mut out);
    (0..commands.len())
        .map(|i| out.get(i).map(<[u8]>::to_vec).unwrap_or_default())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_of_a_call_follow_the_earlier_calls_and_each_call_sees_only_its_own() {
        let mut out = ApplyResults::new();
        out.begin_call(2);
        out.push(b"one").unwrap();
        out.push_with(|bytes| bytes.extend_from_slice(b"two")).unwrap();
        assert_eq!(
            out.push(b"three"),
            Err(ResultTooLarge::MoreThanCommands { commands: 2 })
        );
        out.begin_call(1);
        assert!(out.is_empty());
        out.push(b"").unwrap();
        assert_eq!((out.len(), out.get(0)), (1, Some(&b""[..])));
        assert_eq!(out.total(), 3);
        assert_eq!(out.span(0), Some(Ok(&b"one"[..])));
        assert_eq!(out.span(1), Some(Ok(&b"two"[..])));
        assert_eq!(out.span(2), Some(Ok(&b""[..])));
        assert_eq!(out.span(3), None);
    }

    #[test]
    fn a_result_past_a_bound_is_refused_and_its_bytes_given_back() {
        let mut out = ApplyResults::new();
        out.begin_call(3);
        let refused = out.push_with(|bytes| bytes.resize(APPLY_RESULT_BYTES_MAX + 1, 1));
        assert_eq!(
            refused,
            Err(ResultTooLarge::Result {
                bytes: APPLY_RESULT_BYTES_MAX + 1
            })
        );
        assert_eq!(refused.unwrap_err().bound(), "APPLY_RESULT_BYTES_MAX");
        out.push(b"next").unwrap();
        assert_eq!(out.get(0), None, "the refused result has no bytes");
        assert_eq!(out.get(1), Some(&b"next"[..]));
        assert_eq!(out.span(0), Some(Err(refused.unwrap_err())));
        assert_eq!(out.bytes.len(), 4, "the refused bytes were given back");
        out.clear();
        assert!(
            out.bytes.capacity() <= APPLY_RESULTS_RETAINED_BYTES_MAX,
            "clear gives back the room past the retained bound"
        );
        assert_eq!(out.total(), 0);
    }

    #[test]
    fn the_results_of_one_call_together_are_bounded() {
        let mut out = ApplyResults::new();
        let per = APPLY_RESULT_BYTES_MAX;
        let fit = APPLY_RESULTS_BYTES_MAX / per;
        out.begin_call(fit + 1);
        for _ in 0..fit {
            out.push_with(|bytes| bytes.resize(bytes.len() + per, 0)).unwrap();
        }
        assert_eq!(
            out.push(b"x"),
            Err(ResultTooLarge::Call { bytes: 1 }),
            "one byte past APPLY_RESULTS_BYTES_MAX"
        );
        // The next call starts its own count.
        out.begin_call(1);
        out.push(b"x").unwrap();
    }

    #[test]
    fn apply_via_results_gives_on_apply_the_results_of_on_apply_into() {
        struct Lengths;
        impl StateMachine for Lengths {
            fn on_apply(&mut self, commands: &mut dyn Iterator<Item = Command<'_>>) -> Vec<Vec<u8>> {
                apply_via_results(self, commands)
            }
            fn on_apply_into(&mut self, commands: &mut dyn Iterator<Item = Command<'_>>, out: &mut ApplyResults) {
                for command in commands {
                    let _ = out.push(&[command.data.len() as u8]);
                }
            }
        }
        let data: [&[u8]; 3] = [b"", b"ab", b"abcd"];
        let mut commands = data.iter().enumerate().map(|(i, d)| Command {
            index: LogIndex(i as u64 + 1),
            term: Term(1),
            data: d,
        });
        assert_eq!(Lengths.on_apply(&mut commands), vec![vec![0], vec![2], vec![4]]);
    }
}
