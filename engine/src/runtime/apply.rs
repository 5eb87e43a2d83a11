//! Applying a batch of committed entries: each client command is decided
//! against the session table in log order (a retried write applies at most
//! once), the fresh ones go to the state machine in one call, configuration
//! entries reach `on_configuration_committed` in their place. The same code
//! runs on the shard (a group's own state machine, `group.rs`) and on an
//! apply lane's thread (`apply_lane.rs`): only where the results go differs.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::api::{ApplyResults, Command, Error, StateMachine};
use crate::raft::{Entry, EntryPayload, GroupId, NodeId};

use super::codec::{decode_command, LoggedCommand};
use super::crc_hints::{CrcHints, CRC_HINT_DATA_BYTES_MIN};
use super::sessions::{Admission, SessionIdSet, SessionRefusal, SessionTable};

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

/// What an entry of a batch is answered with.
#[derive(Debug, Clone, Default)]
pub(crate) enum Outcome {
    /// Nothing but success (an empty result).
    #[default]
    Empty,
    /// Result `i` of the batch's [`ApplyResults`].
    Output(usize),
    Failed(Error),
}

/// What `apply_batch` works in and leaves its outcome in, kept between
/// batches so that a batch allocates none of it (fresh memory per turn
/// costs page faults: the allocator hands the freed room back to the
/// kernel between turns).
#[derive(Default)]
pub(crate) struct ApplyScratch {
    /// One outcome per entry of the batch, in order.
    pub results: Vec<Outcome>,
    /// The state machine's results (and retries' cached ones), lent to
    /// `on_apply_into` and answered from.
    pub outputs: ApplyResults,
    fresh: Vec<FreshCommand>,
    /// Sessions with a command in `fresh`.
    waiting: SessionIdSet,
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
        self.outputs.clear();
        self.fresh.clear();
        self.waiting.clear();
        self.apply_durations.clear();
        self.address_books.clear();
        self.configuration_applied = false;
        if self.results.capacity() > APPLY_SCRATCH_ENTRIES_MAX {
            let outputs = std::mem::take(&mut self.outputs);
            *self = ApplyScratch {
                outputs,
                ..ApplyScratch::default()
            };
        }
    }

    /// The result of the entry at `position` (an error is taken out).
    pub fn result(&mut self, position: usize) -> Result<&[u8], Error> {
        result_of(&mut self.results[position], &self.outputs)
    }
}

/// What `outcome` answers, its bytes in `outputs` (an error is taken out).
pub(crate) fn result_of<'a>(outcome: &mut Outcome, outputs: &'a ApplyResults) -> Result<&'a [u8], Error> {
    match std::mem::take(outcome) {
        Outcome::Empty => Ok(&[]),
        Outcome::Output(i) => match outputs.span(i) {
            Some(Ok(bytes)) => Ok(bytes),
            Some(Err(reason)) => Err(Error::ResultTooLarge { reason }),
            None => Ok(&[]),
        },
        Outcome::Failed(error) => Err(error),
    }
}

/// The state an apply changes: the state machine and the client sessions,
/// which must always be at the same index.
pub(crate) struct Applying<'a> {
    pub group: GroupId,
    pub state_machine: &'a mut dyn StateMachine,
    pub sessions: &'a mut SessionTable,
    /// Session commands' CRCs computed where their bytes were hot.
    pub crc_hints: Option<&'a CrcHints>,
}

impl Applying<'_> {
    /// Applies `entries` in order; their results (one per entry), the
    /// address books and configurations they carried and the time
    /// `on_apply` took are left in `scratch` (empty on entry).
    pub fn apply_batch(&mut self, entries: &[Entry], scratch: &mut ApplyScratch) {
        scratch.results.resize_with(entries.len(), Outcome::default);
        let mut start = 0;
        while start < entries.len() {
            // A run of client commands goes to the state machine in one call.
            let mut end = start;
            while end < entries.len() && matches!(entries[end].payload, EntryPayload::Normal(_)) {
                end += 1;
            }
            if end > start {
                self.apply_commands(entries, start..end, scratch);
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

    fn apply_commands(&mut self, entries: &[Entry], run: std::ops::Range<usize>, scratch: &mut ApplyScratch) {
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
                self.apply_fresh(entries, scratch);
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
                    // Noted under this entry's index and term, the hint is
                    // the CRC of these very bytes (`crc_hints.rs`).
                    let hint = (data.len() >= CRC_HINT_DATA_BYTES_MIN)
                        .then_some(self.crc_hints)
                        .flatten()
                        .and_then(|h| h.take(self.group, entry.index, entry.term));
                    debug_assert!(
                        hint.is_none_or(|crc| crc == crc32fast::hash(data)),
                        "a CRC hint for other bytes"
                    );
                    let crc = hint.unwrap_or_else(|| crc32fast::hash(data));
                    match self.sessions.admit(session, sequence, crc) {
                        Ok(Admission::Fresh) => (Some((session, sequence, lowest_unanswered, crc)), data),
                        Ok(Admission::Duplicate(result)) => {
                            scratch.results[position] = Outcome::Output(scratch.outputs.push_engine(&result));
                            continue;
                        }
                        Err(SessionRefusal::Expired) => {
                            scratch.results[position] = Outcome::Failed(Error::SessionExpired);
                            continue;
                        }
                        Err(SessionRefusal::StaleSequence) => {
                            scratch.results[position] = Outcome::Failed(Error::StaleSequence);
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
        self.apply_fresh(entries, scratch);
    }

    /// Hands the admitted commands (of `entries`) to the state machine and
    /// records their results in the sessions.
    fn apply_fresh(&mut self, entries: &[Entry], scratch: &mut ApplyScratch) {
        if scratch.fresh.is_empty() {
            return;
        }
        let ApplyScratch {
            fresh,
            outputs,
            results,
            apply_durations,
            ..
        } = scratch;
        let mut commands = fresh.iter().map(|f| {
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
        let first = outputs.total();
        outputs.begin_call(fresh.len());
        let started = Instant::now();
        self.state_machine.on_apply_into(&mut commands, outputs);
        apply_durations.push(started.elapsed());
        let produced = outputs.total() - first;
        for (k, f) in fresh.drain(..).enumerate() {
            let outcome = if k < produced {
                Outcome::Output(first + k)
            } else {
                Outcome::Empty
            };
            if let Some((id, sequence, lowest_unanswered, crc)) = f.session {
                // The session keeps the output for retries (a refused one
                // as empty: the command was applied all the same).
                let output = match &outcome {
                    Outcome::Output(i) => outputs.span(*i).and_then(Result::ok).unwrap_or(&[]),
                    _ => &[],
                };
                self.sessions.record(id, sequence, lowest_unanswered, crc, output);
            }
            if let Outcome::Output(i) = outcome {
                if let Some(Err(refused)) = outputs.span(i) {
                    let _group = crate::logging::group_span(self.group).entered();
                    log::warn!(
                        "group {}: the result at index {} was refused: {refused}",
                        self.group,
                        entries[f.position].index
                    );
                }
            }
            results[f.position] = outcome;
        }
    }
}
