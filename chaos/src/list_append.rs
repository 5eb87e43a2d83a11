//! List-append: each append adds a value unique in the run to a key's list;
//! a read returns the whole list. Lists only grow, one entry at a time, in
//! the log's order, so a correct store gives reads that are all prefixes of
//! one order per key. This checker (a small part of what Elle checks)
//! reports, per key:
//!
//! * a read holding a value twice ([`ListViolation::Duplicate`]): an append
//!   applied twice;
//! * a read holding a value never appended to the key, or whose append
//!   definitely failed ([`ListViolation::Phantom`]);
//! * two reads neither a prefix of the other ([`ListViolation::Order`]): no
//!   single order of appends;
//! * a read missing an append acknowledged before the read began
//!   ([`ListViolation::LostAppend`]): the final reads make this "an
//!   acknowledged append is lost";
//! * a read shorter than a read that completed before it began
//!   ([`ListViolation::Stale`]).

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::history::{Key, ProcessId, Value};

/// How an append ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppendOutcome {
    /// Applied.
    Ok,
    /// Definitely not applied.
    Failed,
    /// May or may not have applied.
    Unknown,
}

/// One list operation, recorded once it ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ListOperation {
    /// An append.
    Append {
        /// The process.
        process: ProcessId,
        /// The list.
        key: Key,
        /// The value, unique in the run.
        value: Value,
        /// When it was invoked (the history's clock, ns).
        invoke_ns: u64,
        /// When it completed (for `Unknown`, when the client gave up).
        complete_ns: u64,
        /// How it ended.
        outcome: AppendOutcome,
    },
    /// A read of the whole list; `values` is `None` if it got no answer.
    Read {
        /// The process.
        process: ProcessId,
        /// The list.
        key: Key,
        /// When it was invoked.
        invoke_ns: u64,
        /// When it completed.
        complete_ns: u64,
        /// The list read, if the read got an answer.
        values: Option<Vec<Value>>,
    },
}

/// A list-append anomaly.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum ListViolation {
    /// A read holds `value` more than once.
    Duplicate {
        /// The list.
        key: Key,
        /// The value.
        value: Value,
    },
    /// A read holds a value never appended to the key, or whose append failed.
    Phantom {
        /// The list.
        key: Key,
        /// The value.
        value: Value,
    },
    /// Two reads that are not prefixes of one another.
    Order {
        /// The list.
        key: Key,
        /// One read.
        first: Vec<Value>,
        /// The other.
        second: Vec<Value>,
    },
    /// A read lacks an append acknowledged before it began.
    LostAppend {
        /// The list.
        key: Key,
        /// The value.
        value: Value,
        /// When the read began.
        read_invoke_ns: u64,
    },
    /// A read is shorter than one that completed before it began.
    Stale {
        /// The list.
        key: Key,
        /// The earlier read's length.
        earlier: usize,
        /// This read's length.
        later: usize,
    },
}

/// A read's invocation, completion and values.
type ReadSeen<'a> = (u64, u64, &'a Vec<Value>);

/// Checks every key's list operations; an empty result means none of the
/// anomalies above was found.
pub fn check_lists(operations: &[ListOperation]) -> Vec<ListViolation> {
    // key -> (value -> (outcome, complete_ns)) and key -> reads.
    let mut appends: BTreeMap<Key, HashMap<Value, (AppendOutcome, u64)>> = BTreeMap::new();
    let mut reads: BTreeMap<Key, Vec<ReadSeen<'_>>> = BTreeMap::new();
    for operation in operations {
        match operation {
            ListOperation::Append {
                key,
                value,
                complete_ns,
                outcome,
                ..
            } => {
                appends
                    .entry(*key)
                    .or_default()
                    .insert(*value, (*outcome, *complete_ns));
            }
            ListOperation::Read {
                key,
                invoke_ns,
                complete_ns,
                values: Some(values),
                ..
            } => reads.entry(*key).or_default().push((*invoke_ns, *complete_ns, values)),
            ListOperation::Read { values: None, .. } => {}
        }
    }
    let no_appends = HashMap::new();
    let mut violations = Vec::new();
    for (&key, key_reads) in &mut reads {
        let key_appends = appends.get(&key).unwrap_or(&no_appends);
        for &(invoke_ns, _, values) in key_reads.iter() {
            let mut seen = HashSet::new();
            for &value in values {
                if !seen.insert(value) {
                    violations.push(ListViolation::Duplicate { key, value });
                }
                if !matches!(
                    key_appends.get(&value),
                    Some((AppendOutcome::Ok | AppendOutcome::Unknown, _))
                ) {
                    violations.push(ListViolation::Phantom { key, value });
                }
            }
            for (&value, &(outcome, complete_ns)) in key_appends {
                if outcome == AppendOutcome::Ok && complete_ns < invoke_ns && !seen.contains(&value) {
                    violations.push(ListViolation::LostAppend {
                        key,
                        value,
                        read_invoke_ns: invoke_ns,
                    });
                }
            }
        }
        key_reads.sort_by_key(|&(_, _, values)| values.len());
        for pair in key_reads.windows(2) {
            let (shorter, longer) = (pair[0].2, pair[1].2);
            if longer[..shorter.len()] != shorter[..] {
                violations.push(ListViolation::Order {
                    key,
                    first: shorter.clone(),
                    second: longer.clone(),
                });
            }
        }
        for earlier in key_reads.iter() {
            for later in key_reads.iter() {
                if earlier.1 < later.0 && later.2.len() < earlier.2.len() {
                    violations.push(ListViolation::Stale {
                        key,
                        earlier: earlier.2.len(),
                        later: later.2.len(),
                    });
                }
            }
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(value: Value, invoke_ns: u64, complete_ns: u64, outcome: AppendOutcome) -> ListOperation {
        ListOperation::Append {
            process: value,
            key: 1,
            value,
            invoke_ns,
            complete_ns,
            outcome,
        }
    }

    fn read(invoke_ns: u64, complete_ns: u64, values: &[Value]) -> ListOperation {
        ListOperation::Read {
            process: 99,
            key: 1,
            invoke_ns,
            complete_ns,
            values: Some(values.to_vec()),
        }
    }

    #[test]
    fn growing_prefixes_with_unknown_appends_pass() {
        let history = [
            append(1, 0, 10, AppendOutcome::Ok),
            append(2, 5, 30, AppendOutcome::Unknown),
            read(11, 12, &[1]),
            append(3, 13, 20, AppendOutcome::Ok),
            read(21, 25, &[1, 2, 3]),
            read(26, 27, &[1, 2, 3]),
        ];
        assert_eq!(check_lists(&history), vec![]);
    }

    #[test]
    fn each_anomaly_is_reported() {
        let lost = [append(1, 0, 10, AppendOutcome::Ok), read(11, 12, &[])];
        assert!(matches!(
            check_lists(&lost)[..],
            [ListViolation::LostAppend { value: 1, .. }]
        ));
        let duplicate = [append(1, 0, 10, AppendOutcome::Ok), read(11, 12, &[1, 1])];
        assert!(matches!(
            check_lists(&duplicate)[..],
            [ListViolation::Duplicate { value: 1, .. }]
        ));
        let phantom = [append(1, 0, 10, AppendOutcome::Failed), read(11, 12, &[1, 7])];
        assert_eq!(check_lists(&phantom).len(), 2);
        let order = [
            append(1, 0, 10, AppendOutcome::Ok),
            append(2, 0, 10, AppendOutcome::Ok),
            read(11, 12, &[1, 2]),
            read(11, 12, &[2, 1]),
        ];
        assert!(matches!(check_lists(&order)[..], [ListViolation::Order { .. }]));
        let stale = [
            append(1, 0, 1, AppendOutcome::Unknown),
            read(5, 6, &[1]),
            read(7, 8, &[]),
        ];
        assert!(matches!(
            check_lists(&stale)[..],
            [ListViolation::Stale {
                earlier: 1,
                later: 0,
                ..
            }]
        ));
    }
}
