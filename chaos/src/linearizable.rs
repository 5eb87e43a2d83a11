//! Linearizability of per-key read/write/compare-and-set registers.
//!
//! A history is linearizable if every operation can be given one instant
//! between its invocation and its completion such that, taken in the order of
//! those instants, the operations are a legal run of a sequential register
//! (Herlihy & Wing 1990). Registers on different keys are independent objects,
//! and linearizability is compositional, so each key is checked on its own
//! ("P-compositionality", Horn & Kroening 2015), which keeps the search small.
//!
//! The search is Wing & Gong's: repeatedly linearize next some operation that
//! no unlinearized operation must precede (one that completed before it was
//! invoked), backtracking on dead ends; with Lowe's memoization (2017): a
//! (set of linearized operations, register value) pair already explored is not
//! explored again. It is bounded by a named number of explored states;
//! exceeding it gives [`KeyVerdict::TooLarge`], never a false "linearizable".
//!
//! Outcomes:
//! * `Ok` operations must all be linearized, with the value they returned.
//! * `Failed` operations definitely did not apply and are left out. (A failed
//!   compare-and-set's hint that the value differed is not used; ignoring it
//!   can only miss a violation, never invent one.)
//! * `Unknown` writes and compare-and-sets may take effect at any instant
//!   after their invocation, or never: they may be linearized anywhere after
//!   they were invoked, and the search may finish without them. `Unknown`
//!   reads change nothing and constrain nothing, so they are left out.
//!   So are unknown writes whose value nobody observed (see
//!   `without_unobserved_unknowns`), which would otherwise make long runs
//!   with timeouts too large to search.

use std::collections::{BTreeMap, HashSet};

use crate::history::{Completion, History, HistoryError, Key, Operation, Outcome, Value};

/// Default bound on the states one key's search may explore before it gives
/// up with [`KeyVerdict::TooLarge`]. Each state holds a bitset of the key's
/// operations, so memory is about this times (operations / 8) bytes.
pub const STATES_EXPLORED_MAX: usize = 1_000_000;

/// The register's value: `None` until first written.
type RegisterValue = Option<Value>;

/// The verdict on one key's register.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyVerdict {
    /// Some order of the operations is a legal sequential run.
    Linearizable,
    /// No order is legal.
    NotLinearizable {
        /// The longest legal order the search found, starting from the
        /// register never written.
        longest_linearization: Vec<Completion>,
        /// `Ok` operations missing from that order: no legal place was
        /// found for them.
        not_placed: Vec<Completion>,
    },
    /// The search hit its bound on explored states: no verdict.
    TooLarge {
        /// States explored when it stopped.
        states_explored: usize,
    },
}

/// The verdict of the whole history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every key is linearizable.
    Linearizable,
    /// At least this key is not.
    NotLinearizable {
        /// The first key found not linearizable.
        key: Key,
    },
    /// No key is known not linearizable, but this one's search hit its bound.
    TooLarge {
        /// The first key whose search hit its bound.
        key: Key,
    },
}

/// Per-key verdicts for a history's registers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegisterReport {
    /// The verdict for each key that has register operations.
    pub keys: BTreeMap<Key, KeyVerdict>,
}

impl RegisterReport {
    /// One verdict: not linearizable beats too large beats linearizable.
    pub fn verdict(&self) -> Verdict {
        let mut verdict = Verdict::Linearizable;
        for (&key, key_verdict) in &self.keys {
            match key_verdict {
                KeyVerdict::NotLinearizable { .. } => return Verdict::NotLinearizable { key },
                KeyVerdict::TooLarge { .. } if verdict == Verdict::Linearizable => {
                    verdict = Verdict::TooLarge { key };
                }
                _ => {}
            }
        }
        verdict
    }
}

/// Checks every register key of `history`, each search bounded by
/// `states_explored_max` states (see [`STATES_EXPLORED_MAX`]).
pub fn check_registers(history: &History, states_explored_max: usize) -> Result<RegisterReport, HistoryError> {
    let keys = register_operations_by_key(history)?
        .into_iter()
        .map(|(key, operations)| {
            let operations = without_unobserved_unknowns(operations);
            (key, check_key(&operations, states_explored_max))
        })
        .collect();
    Ok(RegisterReport { keys })
}

/// The register operations of `history` that constrain a key, by key: `Ok`
/// ones, and `Unknown` writes and compare-and-sets (not `Failed` ones, nor
/// `Unknown` reads), in invocation order.
pub(crate) fn register_operations_by_key(history: &History) -> Result<BTreeMap<Key, Vec<Completion>>, HistoryError> {
    let mut by_key: BTreeMap<Key, Vec<Completion>> = BTreeMap::new();
    for completion in history.completions()? {
        let key = match completion.operation {
            Operation::Read { key } | Operation::Write { key, .. } | Operation::Cas { key, .. } => key,
            Operation::Increment { .. } | Operation::CounterRead { .. } => continue,
        };
        let relevant = match completion.outcome {
            Outcome::Ok { .. } => true,
            Outcome::Failed => false,
            Outcome::Unknown => !matches!(completion.operation, Operation::Read { .. }),
        };
        if relevant {
            by_key.entry(key).or_default().push(completion);
        }
    }
    Ok(by_key)
}

/// Drops the unknown writes and compare-and-sets whose value no read
/// returned and no kept compare-and-set expects.
///
/// Each unknown operation multiplies the states the search must carry (it
/// may still take effect at any later point), so long runs with timeouts
/// would soon be too large. Dropping such an operation cannot change the
/// verdict: an unknown operation may never take effect, so a linearization
/// without it is still legal; and in a legal linearization with it, its value
/// is never observed, so the next operation that observes the register comes
/// after a write that replaced it, and removing the operation leaves every
/// observation unchanged. Dropping a compare-and-set removes its expected
/// value from the observed ones, so this repeats until nothing changes.
pub(crate) fn without_unobserved_unknowns(mut operations: Vec<Completion>) -> Vec<Completion> {
    loop {
        let mut observed: HashSet<RegisterValue> = HashSet::new();
        for completion in &operations {
            match (completion.operation, completion.outcome) {
                (Operation::Read { .. }, Outcome::Ok { value }) => {
                    observed.insert(value);
                }
                (Operation::Cas { expected, .. }, _) => {
                    observed.insert(Some(expected));
                }
                _ => {}
            }
        }
        let before = operations.len();
        operations.retain(|completion| {
            let written = match completion.operation {
                Operation::Write { value, .. } => value,
                Operation::Cas { new, .. } => new,
                _ => return true,
            };
            completion.outcome != Outcome::Unknown || observed.contains(&Some(written))
        });
        if operations.len() == before {
            return operations;
        }
    }
}

/// Applies `completion` to the register holding `value`: the value after it,
/// or `None` if it cannot happen there.
fn step(completion: &Completion, value: RegisterValue) -> Option<RegisterValue> {
    match completion.operation {
        Operation::Read { .. } => match completion.outcome {
            Outcome::Ok { value: read } if read == value => Some(value),
            _ => None,
        },
        Operation::Write { value: written, .. } => Some(Some(written)),
        Operation::Cas { expected, new, .. } => (value == Some(expected)).then_some(Some(new)),
        Operation::Increment { .. } | Operation::CounterRead { .. } => None,
    }
}

/// A fixed-size set of operation indices.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Bitset(Vec<u64>);

impl Bitset {
    fn new(len: usize) -> Self {
        Self(vec![0; len.div_ceil(64)])
    }
    fn contains(&self, index: usize) -> bool {
        self.0[index / 64] & (1 << (index % 64)) != 0
    }
    fn insert(&mut self, index: usize) {
        self.0[index / 64] |= 1 << (index % 64);
    }
    fn remove(&mut self, index: usize) {
        self.0[index / 64] &= !(1 << (index % 64));
    }
    fn is_subset_of(&self, other: &Bitset) -> bool {
        self.0.iter().zip(&other.0).all(|(a, b)| a & !b == 0)
    }
}

/// One level of the depth-first search: the operation linearized to reach
/// it, the register value after it, and where the scan for the next
/// candidate resumes.
struct Frame {
    operation: Option<usize>,
    value: RegisterValue,
    next_candidate: usize,
}

/// Wing & Gong's search with Lowe's memoization over one key's operations.
fn check_key(operations: &[Completion], states_explored_max: usize) -> KeyVerdict {
    let count = operations.len();
    let is_ok = |index: usize| matches!(operations[index].outcome, Outcome::Ok { .. });
    let ok_count = (0..count).filter(|&index| is_ok(index)).count();
    if ok_count == 0 {
        return KeyVerdict::Linearizable;
    }
    // must_precede[i]: the ok operations that completed before i was invoked.
    let must_precede: Vec<Bitset> = operations
        .iter()
        .map(|later| {
            let mut set = Bitset::new(count);
            for (index, earlier) in operations.iter().enumerate() {
                if earlier
                    .complete_ns
                    .is_some_and(|complete_ns| complete_ns < later.invoke_ns)
                {
                    set.insert(index);
                }
            }
            set
        })
        .collect();

    let mut linearized = Bitset::new(count);
    let mut ok_linearized = 0;
    let mut visited: HashSet<(Bitset, RegisterValue)> = HashSet::new();
    visited.insert((linearized.clone(), None));
    let mut states_explored = 1;
    let mut stack = vec![Frame {
        operation: None,
        value: None,
        next_candidate: 0,
    }];
    let mut longest: Vec<usize> = Vec::new();

    while let Some(top) = stack.last_mut() {
        let value = top.value;
        let mut next = None;
        while top.next_candidate < count {
            let candidate = top.next_candidate;
            top.next_candidate += 1;
            if linearized.contains(candidate) || !must_precede[candidate].is_subset_of(&linearized) {
                continue;
            }
            let Some(after) = step(&operations[candidate], value) else {
                continue;
            };
            linearized.insert(candidate);
            if visited.insert((linearized.clone(), after)) {
                next = Some((candidate, after));
                break;
            }
            linearized.remove(candidate);
        }
        match next {
            Some((candidate, after)) => {
                states_explored += 1;
                if is_ok(candidate) {
                    ok_linearized += 1;
                }
                stack.push(Frame {
                    operation: Some(candidate),
                    value: after,
                    next_candidate: 0,
                });
                if ok_linearized == ok_count {
                    return KeyVerdict::Linearizable;
                }
                if stack.len() - 1 > longest.len() {
                    longest = stack.iter().filter_map(|frame| frame.operation).collect();
                }
                if states_explored >= states_explored_max {
                    return KeyVerdict::TooLarge { states_explored };
                }
            }
            None => {
                let frame = stack.pop().expect("the loop holds a frame");
                if let Some(operation) = frame.operation {
                    linearized.remove(operation);
                    if is_ok(operation) {
                        ok_linearized -= 1;
                    }
                }
            }
        }
    }

    let placed: HashSet<usize> = longest.iter().copied().collect();
    KeyVerdict::NotLinearizable {
        longest_linearization: longest.iter().map(|&index| operations[index]).collect(),
        not_placed: (0..count)
            .filter(|index| is_ok(*index) && !placed.contains(index))
            .map(|index| operations[index])
            .collect(),
    }
}
