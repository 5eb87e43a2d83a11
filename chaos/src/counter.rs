//! Fetch-and-increment counters checked by bounds.
//!
//! Each increment returns the count after it, so on a correct counter:
//! * the counts returned by `Ok` increments of one key are distinct;
//! * an increment's count is at least the number of `Ok` increments that
//!   completed before it was invoked, plus one (itself), and at most the
//!   number of increments, not known failed, invoked before it completed
//!   (itself included);
//! * a read's value is at least the number of `Ok` increments that completed
//!   before it was invoked (an acknowledged increment is never lost) and at
//!   most the number of increments, not known failed, invoked before it
//!   completed. The final read after the cluster heals is one such read, so
//!   this is "acknowledged ≤ final ≤ attempted".
//!
//! `Failed` increments definitely did not apply and count nowhere; `Unknown`
//! ones may have applied, so they count as attempted but never as
//! acknowledged.

use std::collections::{BTreeMap, HashMap};

use crate::history::{Completion, History, HistoryError, Key, Operation, Outcome, Value};

/// A counter behaviour no correct fetch-and-increment object allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CounterViolation {
    /// Two acknowledged increments returned the same count.
    DuplicateCount {
        /// The counter.
        key: Key,
        /// The count returned twice.
        count: Value,
        /// The two increments.
        increments: [Completion; 2],
    },
    /// An increment returned a count outside what the increments around it allow.
    CountOutOfBounds {
        /// The counter.
        key: Key,
        /// The increment.
        increment: Completion,
        /// Lowest allowed count.
        lowest: u64,
        /// Highest allowed count.
        highest: u64,
    },
    /// A read saw fewer increments than were acknowledged before it began:
    /// acknowledged increments were lost.
    ReadBelowAcknowledged {
        /// The counter.
        key: Key,
        /// The read.
        read: Completion,
        /// Increments acknowledged before the read was invoked.
        acknowledged: u64,
    },
    /// A read saw more increments than were attempted before it ended.
    ReadAboveAttempted {
        /// The counter.
        key: Key,
        /// The read.
        read: Completion,
        /// Increments, not known failed, invoked before the read completed.
        attempted: u64,
    },
}

/// Checks every counter key of `history`; returns every violation found
/// (empty: the counters behaved).
pub fn check_counters(history: &History) -> Result<Vec<CounterViolation>, HistoryError> {
    let mut by_key: BTreeMap<Key, Vec<Completion>> = BTreeMap::new();
    for completion in history.completions()? {
        if let Operation::Increment { key } | Operation::CounterRead { key } = completion.operation {
            by_key.entry(key).or_default().push(completion);
        }
    }
    let mut violations = Vec::new();
    for (key, operations) in by_key {
        check_key(key, &operations, &mut violations);
    }
    Ok(violations)
}

fn check_key(key: Key, operations: &[Completion], violations: &mut Vec<CounterViolation>) {
    let increments = || {
        operations
            .iter()
            .filter(|completion| matches!(completion.operation, Operation::Increment { .. }))
    };
    // Completion times of acknowledged increments, and invocation times of
    // increments that may have applied, each sorted for counting by bisection.
    let mut acknowledged_ns: Vec<u64> = increments()
        .filter(|completion| matches!(completion.outcome, Outcome::Ok { .. }))
        .filter_map(|completion| completion.complete_ns)
        .collect();
    acknowledged_ns.sort_unstable();
    let mut attempted_ns: Vec<u64> = increments()
        .filter(|completion| completion.outcome != Outcome::Failed)
        .map(|completion| completion.invoke_ns)
        .collect();
    attempted_ns.sort_unstable();
    let acknowledged_before = |time_ns: u64| acknowledged_ns.partition_point(|&t| t < time_ns);
    let attempted_by = |time_ns: u64| attempted_ns.partition_point(|&t| t <= time_ns);

    let mut by_count: HashMap<Value, Completion> = HashMap::new();
    for completion in operations {
        let (Outcome::Ok { value: Some(value) }, Some(complete_ns)) = (completion.outcome, completion.complete_ns)
        else {
            continue;
        };
        let acknowledged = acknowledged_before(completion.invoke_ns) as u64;
        let attempted = attempted_by(complete_ns) as u64;
        match completion.operation {
            Operation::Increment { .. } => {
                if let Some(first) = by_count.insert(value, *completion) {
                    violations.push(CounterViolation::DuplicateCount {
                        key,
                        count: value,
                        increments: [first, *completion],
                    });
                }
                let lowest = acknowledged + 1;
                if value < lowest || value > attempted {
                    violations.push(CounterViolation::CountOutOfBounds {
                        key,
                        increment: *completion,
                        lowest,
                        highest: attempted,
                    });
                }
            }
            Operation::CounterRead { .. } => {
                if value < acknowledged {
                    violations.push(CounterViolation::ReadBelowAcknowledged {
                        key,
                        read: *completion,
                        acknowledged,
                    });
                }
                if value > attempted {
                    violations.push(CounterViolation::ReadAboveAttempted {
                        key,
                        read: *completion,
                        attempted,
                    });
                }
            }
            Operation::Read { .. } | Operation::Write { .. } | Operation::Cas { .. } => {}
        }
    }
}
