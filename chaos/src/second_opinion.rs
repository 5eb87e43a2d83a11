//! A second opinion on the register histories, from a checker we did not
//! write: `todc-utils`'s `WGLChecker` (crates.io, MIT; Wing & Gong's search
//! with Lowe's memoization, after Horn & Kroening).
//!
//! Every key [`crate::linearizable`] judges is judged again here, from the
//! same [`History`], and the two verdicts are compared: a key one checker
//! calls linearizable and the other not is a [`Disagreement`], which fails
//! the run (one of the two checkers is wrong, and the history is kept to
//! find out which).
//!
//! How a key's operations become a `todc-utils` history:
//! * every operation gets its own process id, a call at its invocation and a
//!   response at its completion; events are ordered by time, calls before
//!   responses at the same instant (so operations that touch in time
//!   overlap, as in our checker);
//! * an `Unknown` write or compare-and-set gets its response after every
//!   other event (it may take effect at any time after its invocation), and
//!   its step is always legal (a compare-and-set that finds another value
//!   changes nothing): placed last, an operation that never took effect is
//!   indistinguishable from one that did, so "or never" needs no rule of its
//!   own — unlike our checker, which lets the search finish without it;
//! * `Failed` operations and `Unknown` reads are left out, as in ours.
//!
//! Unknown writes whose values nobody observed are kept (ours drops them
//! before searching): this checker judges the raw history. That search can
//! blow up, so each key's search is bounded by a number of steps of the
//! register ([`APPLY_STEPS_MAX`] in a run); past it the key is judged again without those writes
//! (the same reduction as ours, [`crate::linearizable`]), and past the bound
//! again it is [`Opinion::Skipped`], never "linearizable". Keys of more
//! than [`OPERATIONS_MAX`] operations are skipped outright (the crate's
//! history is a vector it searches linearly at each step); counters, whose
//! searches rarely backtrack, have a bound of their own
//! ([`COUNTER_OPERATIONS_MAX`]).
//!
//! The counters and the lists are judged by it too, as the objects they
//! are, not by bounds or anomalies ([`check_counters_second_opinion`],
//! [`check_lists_second_opinion`]):
//! * a counter is a fetch-and-increment object: an acknowledged increment
//!   is legal only on the count one below the count it returned, a read
//!   only on the count it returned; an increment of unknown outcome is
//!   always legal and adds one (placed last, it never happened);
//! * a list is a sequence: an append (acknowledged or unknown) is always
//!   legal and adds its value at the end, a read is legal only on exactly
//!   the list it returned.
//!
//! Linearizability is stronger than what [`crate::counter`] and
//! [`crate::list_append`] check (a counter read lower than an earlier read
//! with every increment unknown, two appends read in the opposite order of
//! their real-time order): a key it rejects that ours passes, or the other
//! way round, is a disagreement and fails the run as well.

use std::any::Any;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

use serde::Serialize;
use todc_utils::linearizability::history::{Action, History as TodcHistory};
use todc_utils::linearizability::WGLChecker;
use todc_utils::Specification;

use crate::history::{Completion, History, HistoryError, Key, Operation, Outcome, Value};
use crate::linearizable::{register_operations_by_key, without_unobserved_unknowns, KeyVerdict, RegisterReport};
use crate::list_append::{AppendOutcome, ListOperation};

/// Default bound on the register steps one key's search may try (each a
/// call of the specification's `apply`); past it the key is retried without
/// its unobserved unknown writes, then skipped.
pub const APPLY_STEPS_MAX: u64 = 300_000;
/// Keys with more operations than this are not given to the second checker.
pub const OPERATIONS_MAX: usize = 2_000;
/// Counters with more operations than this are not given to the second
/// checker. A counter's search rarely backtracks (an acknowledged
/// increment's count fixes its place), so its cost is the crate's linear
/// scan per step: about 0.1 s for 4,000 operations and 0.9 s for 13,500 on
/// the benchmark machine. A 20-second run of the suite gives each of its
/// counters about 4,000.
pub const COUNTER_OPERATIONS_MAX: usize = 20_000;

/// One register step, as the second checker's specification applies it.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// An acknowledged read that returned this value.
    Read(Option<Value>),
    /// A write, acknowledged or not: always legal.
    Write(Value),
    /// An acknowledged compare-and-set: legal only on `expected`.
    Cas { expected: Value, new: Value },
    /// A compare-and-set of unknown outcome: always legal, sets `new` only
    /// on `expected`.
    UnknownCas { expected: Value, new: Value },
}

thread_local! {
    /// Register steps left for the search running on this thread.
    static STEPS_LEFT: Cell<u64> = const { Cell::new(0) };
}

/// The panic payload that ends a search past its bound (raised with
/// `resume_unwind`, so no panic message is printed).
struct OutOfSteps;

/// Counts one step of the search running on this thread; past its bound,
/// ends the search (caught in [`search_spec`]).
fn take_step() {
    let left = STEPS_LEFT.with(|left| {
        let value = left.get();
        left.set(value.saturating_sub(1));
        value
    });
    if left == 0 {
        resume_unwind(Box::new(OutOfSteps));
    }
}

/// The sequential register the second checker searches against.
struct Register;

impl Specification for Register {
    type State = Option<Value>;
    type Operation = Step;

    fn init() -> Self::State {
        None
    }

    fn apply(step: &Step, state: &Option<Value>) -> (bool, Option<Value>) {
        take_step();
        match *step {
            Step::Read(value) => (value == *state, *state),
            Step::Write(value) => (true, Some(value)),
            Step::Cas { expected, new } => {
                if *state == Some(expected) {
                    (true, Some(new))
                } else {
                    (false, *state)
                }
            }
            Step::UnknownCas { expected, new } => (true, if *state == Some(expected) { Some(new) } else { *state }),
        }
    }
}

/// The second checker's verdict on one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Opinion {
    /// Linearizable; `reduced` if only the history without its unobserved
    /// unknown writes could be searched within the bound.
    Linearizable {
        /// Judged without the unknown writes whose values nobody observed.
        reduced: bool,
    },
    /// Not linearizable.
    NotLinearizable {
        /// Judged without the unknown writes whose values nobody observed.
        reduced: bool,
    },
    /// Not judged: too many operations, or the search ran out of steps.
    Skipped {
        /// The key's operations.
        operations: usize,
    },
}

/// A key the two checkers judged differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Disagreement {
    /// The key.
    pub key: Key,
    /// Whether our checker ([`crate::linearizable`]) said linearizable.
    pub ours_linearizable: bool,
    /// The second checker's verdict.
    pub theirs: Opinion,
}

/// The second checker's verdicts on a history's registers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecondOpinion {
    /// The verdict on each key that has register operations.
    pub keys: BTreeMap<Key, Opinion>,
}

impl SecondOpinion {
    /// Keys judged linearizable, not linearizable, and skipped; and how many
    /// of the judged were judged on the reduced history.
    pub fn counts(&self) -> [usize; 4] {
        let mut counts = [0; 4];
        for opinion in self.keys.values() {
            match opinion {
                Opinion::Linearizable { reduced } => {
                    counts[0] += 1;
                    counts[3] += usize::from(*reduced);
                }
                Opinion::NotLinearizable { reduced } => {
                    counts[1] += 1;
                    counts[3] += usize::from(*reduced);
                }
                Opinion::Skipped { .. } => counts[2] += 1,
            }
        }
        counts
    }

    /// The keys where our checker's verdict and this one differ (a key one
    /// of them could not judge — too large, skipped — is no disagreement;
    /// a key only one of them judged at all is).
    pub fn disagreements(&self, ours: &RegisterReport) -> Vec<Disagreement> {
        let mut found = Vec::new();
        for (&key, &theirs) in &self.keys {
            let ours_linearizable = match ours.keys.get(&key) {
                Some(KeyVerdict::Linearizable) => true,
                Some(KeyVerdict::NotLinearizable { .. }) => false,
                Some(KeyVerdict::TooLarge { .. }) => continue,
                // Ours had no operation of this key to judge: linearizable.
                None => true,
            };
            let differs = match theirs {
                Opinion::Linearizable { .. } => !ours_linearizable,
                Opinion::NotLinearizable { .. } => ours_linearizable,
                Opinion::Skipped { .. } => false,
            };
            if differs {
                found.push(Disagreement {
                    key,
                    ours_linearizable,
                    theirs,
                });
            }
        }
        for (&key, verdict) in &ours.keys {
            if !self.keys.contains_key(&key) && matches!(verdict, KeyVerdict::NotLinearizable { .. }) {
                found.push(Disagreement {
                    key,
                    ours_linearizable: false,
                    theirs: Opinion::Linearizable { reduced: false },
                });
            }
        }
        found
    }
}

impl SecondOpinion {
    /// The keys where this verdict and ours differ, ours being "every key
    /// passes but `rejected`" (the keys with a counter violation or a list
    /// anomaly); a key this checker skipped is no disagreement.
    pub fn disagreements_with_rejected(&self, rejected: &std::collections::BTreeSet<Key>) -> Vec<Disagreement> {
        let mut found = Vec::new();
        for (&key, &theirs) in &self.keys {
            let ours_linearizable = !rejected.contains(&key);
            let differs = match theirs {
                Opinion::Linearizable { .. } => !ours_linearizable,
                Opinion::NotLinearizable { .. } => ours_linearizable,
                Opinion::Skipped { .. } => false,
            };
            if differs {
                found.push(Disagreement {
                    key,
                    ours_linearizable,
                    theirs,
                });
            }
        }
        found
    }
}

/// Judges every register key of `history` with the second checker, each
/// search bounded by `steps_max` register steps (see [`APPLY_STEPS_MAX`]).
pub fn check_registers_second_opinion(history: &History, steps_max: u64) -> Result<SecondOpinion, HistoryError> {
    let keys = register_operations_by_key(history)?
        .into_iter()
        .map(|(key, operations)| (key, judge(operations, steps_max)))
        .collect();
    Ok(SecondOpinion { keys })
}

/// One key: the raw operations, then, past the bound, the reduced ones.
fn judge(operations: Vec<Completion>, steps_max: u64) -> Opinion {
    let count = operations.len();
    if count > OPERATIONS_MAX {
        return Opinion::Skipped { operations: count };
    }
    if let Some(linearizable) = search(&operations, steps_max) {
        return verdict(linearizable, false);
    }
    let reduced = without_unobserved_unknowns(operations);
    if reduced.len() < count {
        if let Some(linearizable) = search(&reduced, steps_max) {
            return verdict(linearizable, true);
        }
    }
    Opinion::Skipped { operations: count }
}

fn verdict(linearizable: bool, reduced: bool) -> Opinion {
    if linearizable {
        Opinion::Linearizable { reduced }
    } else {
        Opinion::NotLinearizable { reduced }
    }
}

/// Runs the crate's checker on one key's operations; `None` if it ran out
/// of steps.
fn search(operations: &[Completion], steps_max: u64) -> Option<bool> {
    let mut calls = Vec::with_capacity(operations.len());
    for completion in operations {
        let unknown = completion.outcome == Outcome::Unknown;
        let step = match (completion.operation, completion.outcome) {
            (Operation::Read { .. }, Outcome::Ok { value }) => Step::Read(value),
            (Operation::Write { value, .. }, _) => Step::Write(value),
            (Operation::Cas { expected, new, .. }, _) if unknown => Step::UnknownCas { expected, new },
            (Operation::Cas { expected, new, .. }, _) => Step::Cas { expected, new },
            // `register_operations_by_key` keeps nothing else.
            _ => continue,
        };
        let complete_ns = if unknown {
            u64::MAX
        } else {
            completion.complete_ns.unwrap_or(u64::MAX)
        };
        calls.push((completion.invoke_ns, complete_ns, step));
    }
    search_spec::<Register>(calls, steps_max)
}

/// Runs the crate's checker on `calls` (invocation, response — `u64::MAX`
/// for an operation whose outcome is unknown: it may take effect at any
/// time after its invocation — and the operation), each its own process;
/// at equal times calls come before responses. `None` if the search ran
/// out of steps.
fn search_spec<S: Specification>(calls: Vec<(u64, u64, S::Operation)>, steps_max: u64) -> Option<bool> {
    if calls.is_empty() {
        return Some(true);
    }
    // (time, 0 for a call and 1 for a response, process)
    let mut events: Vec<(u64, u8, usize)> = Vec::with_capacity(2 * calls.len());
    for (process, (invoke_ns, complete_ns, _)) in calls.iter().enumerate() {
        events.push((*invoke_ns, 0, process));
        events.push((*complete_ns, 1, process));
    }
    events.sort_unstable();
    let actions: Vec<(usize, Action<S::Operation>)> = events
        .into_iter()
        .map(|(_, kind, process)| {
            let operation = calls[process].2.clone();
            (
                process,
                if kind == 0 {
                    Action::Call(operation)
                } else {
                    Action::Response(operation)
                },
            )
        })
        .collect();
    STEPS_LEFT.with(|left| left.set(steps_max));
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        WGLChecker::<S>::is_linearizable(TodcHistory::from_actions(actions))
    }));
    match outcome {
        Ok(linearizable) => Some(linearizable),
        Err(payload) if is_out_of_steps(&*payload) => None,
        Err(payload) => resume_unwind(payload),
    }
}

/// One counter step.
#[derive(Clone, Copy, Debug)]
enum CounterStep {
    /// An acknowledged increment that returned this count (the count after it).
    Increment(Value),
    /// An increment of unknown outcome: always legal, adds one.
    UnknownIncrement,
    /// An acknowledged read that returned this count.
    Read(Value),
}

/// The sequential fetch-and-increment counter.
struct Counter;

impl Specification for Counter {
    type State = Value;
    type Operation = CounterStep;

    fn init() -> Value {
        0
    }

    fn apply(step: &CounterStep, state: &Value) -> (bool, Value) {
        take_step();
        match *step {
            CounterStep::Increment(count) => {
                if count == state.saturating_add(1) {
                    (true, count)
                } else {
                    (false, *state)
                }
            }
            CounterStep::UnknownIncrement => (true, state.saturating_add(1)),
            CounterStep::Read(count) => (count == *state, *state),
        }
    }
}

/// One list step.
#[derive(Clone, Debug)]
enum ListStep {
    /// An append, acknowledged or of unknown outcome: always legal.
    Append(Value),
    /// An answered read and the list it returned.
    Read(Vec<Value>),
}

/// The sequential list.
struct List;

impl Specification for List {
    type State = Vec<Value>;
    type Operation = ListStep;

    fn init() -> Vec<Value> {
        Vec::new()
    }

    fn apply(step: &ListStep, state: &Vec<Value>) -> (bool, Vec<Value>) {
        take_step();
        match step {
            ListStep::Append(value) => {
                let mut next = state.clone();
                next.push(*value);
                (true, next)
            }
            ListStep::Read(values) => (values == state, state.clone()),
        }
    }
}

/// Judges every counter of `history` (its increments and counter reads) as
/// a fetch-and-increment object, each search bounded by `steps_max` steps
/// (past it, or past [`COUNTER_OPERATIONS_MAX`] operations, the key is
/// skipped).
pub fn check_counters_second_opinion(history: &History, steps_max: u64) -> Result<SecondOpinion, HistoryError> {
    let mut by_key: BTreeMap<Key, Vec<(u64, u64, CounterStep)>> = BTreeMap::new();
    for completion in history.completions()? {
        let (key, step) = match (completion.operation, completion.outcome) {
            (Operation::Increment { key }, Outcome::Ok { value: Some(count) }) => (key, CounterStep::Increment(count)),
            (Operation::Increment { key }, Outcome::Unknown) => (key, CounterStep::UnknownIncrement),
            (Operation::CounterRead { key }, Outcome::Ok { value }) => (key, CounterStep::Read(value.unwrap_or(0))),
            // Failed increments never applied; unanswered reads saw nothing.
            _ => continue,
        };
        let complete_ns = match step {
            CounterStep::UnknownIncrement => u64::MAX,
            _ => completion.complete_ns.unwrap_or(u64::MAX),
        };
        by_key
            .entry(key)
            .or_default()
            .push((completion.invoke_ns, complete_ns, step));
    }
    let keys = by_key
        .into_iter()
        .map(|(key, calls)| {
            let count = calls.len();
            let opinion = if count > COUNTER_OPERATIONS_MAX {
                Opinion::Skipped { operations: count }
            } else {
                match search_spec::<Counter>(calls, steps_max) {
                    Some(linearizable) => verdict(linearizable, false),
                    None => Opinion::Skipped { operations: count },
                }
            };
            (key, opinion)
        })
        .collect();
    Ok(SecondOpinion { keys })
}

/// Judges every list of `operations` as a sequence with append and read,
/// each search bounded by `steps_max` steps. Past the bound a list is
/// judged again without the appends of unknown outcome whose value no read
/// returned (placed last, they never happened: they cannot change the
/// verdict), and past it again it is skipped.
pub fn check_lists_second_opinion(operations: &[ListOperation], steps_max: u64) -> SecondOpinion {
    let mut by_key: BTreeMap<Key, Vec<&ListOperation>> = BTreeMap::new();
    for operation in operations {
        let (ListOperation::Append { key, .. } | ListOperation::Read { key, .. }) = operation;
        by_key.entry(*key).or_default().push(operation);
    }
    let keys = by_key
        .into_iter()
        .map(|(key, operations)| {
            let seen: std::collections::HashSet<Value> = operations
                .iter()
                .filter_map(|operation| match operation {
                    ListOperation::Read {
                        values: Some(values), ..
                    } => Some(values.iter().copied()),
                    _ => None,
                })
                .flatten()
                .collect();
            let calls = |reduced: bool| -> Vec<(u64, u64, ListStep)> {
                operations
                    .iter()
                    .filter_map(|operation| match operation {
                        ListOperation::Append {
                            value,
                            invoke_ns,
                            complete_ns,
                            outcome,
                            ..
                        } => match outcome {
                            AppendOutcome::Ok => Some((*invoke_ns, *complete_ns, ListStep::Append(*value))),
                            AppendOutcome::Unknown if reduced && !seen.contains(value) => None,
                            AppendOutcome::Unknown => Some((*invoke_ns, u64::MAX, ListStep::Append(*value))),
                            AppendOutcome::Failed => None,
                        },
                        ListOperation::Read {
                            invoke_ns,
                            complete_ns,
                            values: Some(values),
                            ..
                        } => Some((*invoke_ns, *complete_ns, ListStep::Read(values.clone()))),
                        ListOperation::Read { values: None, .. } => None,
                    })
                    .collect()
            };
            let full = calls(false);
            let count = full.len();
            let opinion = if count > OPERATIONS_MAX {
                Opinion::Skipped { operations: count }
            } else if let Some(linearizable) = search_spec::<List>(full, steps_max) {
                verdict(linearizable, false)
            } else {
                let reduced = calls(true);
                match (reduced.len() < count)
                    .then(|| search_spec::<List>(reduced, steps_max))
                    .flatten()
                {
                    Some(linearizable) => verdict(linearizable, true),
                    None => Opinion::Skipped { operations: count },
                }
            };
            (key, opinion)
        })
        .collect();
    SecondOpinion { keys }
}

fn is_out_of_steps(payload: &(dyn Any + Send)) -> bool {
    payload.is::<OutOfSteps>()
}
