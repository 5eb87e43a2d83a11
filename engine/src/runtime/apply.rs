//! Applying a batch of committed entries: each client command is decided
//! against the session table in log order (a retried write applies at most
//! once), the fresh ones go to the state machine in one call, configuration
//! entries reach `on_configuration_committed` in their place. The same code
//! runs on the shard (a group's own state machine, `group.rs`) and on an
//! apply lane's thread (`apply_lane.rs`): only where the results go differs.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use crate::api::{Command, Error, StateMachine};
use crate::raft::{Entry, EntryPayload, GroupId, NodeId};

use super::codec::{decode_command, LoggedCommand};
use super::sessions::{Admission, SessionRefusal, SessionTable};

/// Bound on the entries whose room [`ApplyScratch`] keeps between apply
/// runs; a larger run's room is given back after it.
pub const APPLY_SCRATCH_ENTRIES_MAX: usize = 1 << 14;

/// A command admitted in this apply run, waiting for the state machine.
struct FreshCommand {
    /// Its place in the batch's entries.
    position: usize,
    /// Where its data starts in its entry's bytes (it runs to the end).
    data_start: usize,
    /// `(session, sequence, lowest_unanswered, command_crc)` of a client's.
    session: Option<(u128, u64, u64, u32)>,
}

/// What `apply_batch` works in and leaves its outcome in, kept between
/// batches so that a batch allocates none of it (fresh memory per turn
/// costs page faults: the allocator hands the freed room back to the
/// kernel between turns).
#[derive(Default)]
pub(crate) struct ApplyScratch {
    /// One result per entry of the batch, in order (`None`: nothing to
    /// answer but success).
    pub results: Vec<Option<Result<Vec<u8>, Error>>>,
    fresh: Vec<FreshCommand>,
    /// Sessions with a command in `fresh`.
    waiting: HashSet<u128>,
    /// How long each `on_apply` call of the batch took.
    pub apply_durations: Vec<Duration>,
    /// The address books the batch's runtime entries carried, in order.
    pub address_books: Vec<BTreeMap<NodeId, Vec<std::net::SocketAddr>>>,
    /// The batch held a configuration entry.
    pub configuration_applied: bool,
}

impl ApplyScratch {
    /// Empties it, keeping the room of runs up to [`APPLY_SCRATCH_ENTRIES_MAX`].
    pub fn clear(&mut self) {
        self.results.clear();
        self.fresh.clear();
        self.waiting.clear();
        self.apply_durations.clear();
        self.address_books.clear();
        self.configuration_applied = false;
        if self.results.capacity() > APPLY_SCRATCH_ENTRIES_MAX {
            *self = ApplyScratch::default();
        }
    }

    /// The result of each entry, in order.
    pub fn take_results(&mut self) -> impl Iterator<Item = Result<Vec<u8>, Error>> + '_ {
        self.results.drain(..).map(|r| r.unwrap_or_else(|| Ok(Vec::new())))
    }
}

/// The state an apply changes: the state machine and the client sessions,
/// which must always be at the same index.
pub(crate) struct Applying<'a> {
    pub group: GroupId,
    pub state_machine: &'a mut dyn StateMachine,
    pub sessions: &'a mut SessionTable,
}

impl Applying<'_> {
    /// Applies `entries` in order; their results (one per entry), the
    /// address books and configurations they carried and the time
    /// `on_apply` took are left in `scratch` (empty on entry).
    /// `awaited(position)` says whether a proposer waits here for the entry
    /// at that position (only then is a session's output copied for it).
    pub fn apply_batch(&mut self, entries: &[Entry], scratch: &mut ApplyScratch, awaited: &dyn Fn(usize) -> bool) {
        scratch.results.resize_with(entries.len(), || None);
        let mut start = 0;
        while start < entries.len() {
            // A run of client commands goes to the state machine in one call.
            let mut end = start;
            while end < entries.len() && matches!(entries[end].payload, EntryPayload::Normal(_)) {
                end += 1;
            }
            if end > start {
                self.apply_commands(entries, start..end, scratch, awaited);
                start = end;
                continue;
            }
            let entry = &entries[start];
            if let EntryPayload::Configuration(configuration) = &entry.payload {
                self.state_machine
                    .on_configuration_committed(entry.index, configuration);
                scratch.configuration_applied = true;
            }
            start += 1;
        }
    }

    fn apply_commands(
        &mut self,
        entries: &[Entry],
        run: std::ops::Range<usize>,
        scratch: &mut ApplyScratch,
        awaited: &dyn Fn(usize) -> bool,
    ) {
        // A second command of a session waiting in this call first flushes
        // it, so it is decided on a current table.
        for position in run {
            let entry = &entries[position];
            let EntryPayload::Normal(bytes) = &entry.payload else {
                unreachable!("a run of normal entries")
            };
            if let Some(book) = super::membership::decode_addresses(bytes) {
                // The runtime's own entry: the shard connects to its nodes.
                match book {
                    Ok(book) => scratch.address_books.push(book),
                    Err(error) => {
                        let _group = crate::logging::group_span(self.group).entered();
                        log::warn!(
                            "group {}: ignoring the address book at index {}: {error}",
                            self.group,
                            entry.index
                        )
                    }
                }
                continue;
            }
            let Some(logged) = decode_command(bytes) else {
                // Not a command this runtime wrote: nothing to apply.
                continue;
            };
            if logged
                .session()
                .is_some_and(|session| scratch.waiting.contains(&session))
            {
                self.apply_fresh(entries, scratch, awaited);
                scratch.waiting.clear();
            }
            self.sessions.advance_clock(logged.leader_time_ms());
            let (session, data) = match logged {
                LoggedCommand::Plain { data, .. } => (None, data),
                LoggedCommand::Register {
                    session, timeout_ms, ..
                } => {
                    self.sessions.register(session, timeout_ms);
                    continue;
                }
                LoggedCommand::Session {
                    session,
                    sequence,
                    lowest_unanswered,
                    data,
                    ..
                } => {
                    let crc = crc32fast::hash(data);
                    match self.sessions.admit(session, sequence, crc) {
                        Ok(Admission::Fresh) => (Some((session, sequence, lowest_unanswered, crc)), data),
                        Ok(Admission::Duplicate(result)) => {
                            scratch.results[position] = Some(Ok(result));
                            continue;
                        }
                        Err(SessionRefusal::Expired) => {
                            scratch.results[position] = Some(Err(Error::SessionExpired));
                            continue;
                        }
                        Err(SessionRefusal::StaleSequence) => {
                            scratch.results[position] = Some(Err(Error::StaleSequence));
                            continue;
                        }
                    }
                }
            };
            if let Some((id, ..)) = session {
                scratch.waiting.insert(id);
            }
            // The data is the tail of the entry's bytes.
            scratch.fresh.push(FreshCommand {
                position,
                data_start: bytes.len() - data.len(),
                session,
            });
        }
        self.apply_fresh(entries, scratch, awaited);
    }

    /// Hands the admitted commands (of `entries`) to the state machine and
    /// records their results in the sessions.
    fn apply_fresh(&mut self, entries: &[Entry], scratch: &mut ApplyScratch, awaited: &dyn Fn(usize) -> bool) {
        if scratch.fresh.is_empty() {
            return;
        }
        let mut commands = scratch.fresh.iter().map(|f| {
            let entry = &entries[f.position];
            let EntryPayload::Normal(bytes) = &entry.payload else {
                unreachable!("only normal entries are admitted")
            };
            Command {
                index: entry.index,
                term: entry.term,
                data: &bytes[f.data_start..],
            }
        });
        let started = Instant::now();
        let outputs = self.state_machine.on_apply(&mut commands);
        scratch.apply_durations.push(started.elapsed());
        let mut outputs = outputs.into_iter();
        for f in scratch.fresh.drain(..) {
            let output = outputs.next().unwrap_or_default();
            let answer = match f.session {
                Some((id, sequence, lowest_unanswered, crc)) => {
                    // The session keeps the output for retries; a copy is
                    // made only for a proposer waiting here (on the leader:
                    // a follower answers no one and moves it).
                    let answer = if awaited(f.position) {
                        output.clone()
                    } else {
                        Vec::new()
                    };
                    self.sessions.record(id, sequence, lowest_unanswered, crc, output);
                    answer
                }
                None => output,
            };
            scratch.results[f.position] = Some(Ok(answer));
        }
    }
}
