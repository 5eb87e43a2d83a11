//! Histories generated from a real sequential register and counter, executed
//! one operation at a time, then given random real-time overlaps: each
//! operation's invocation is moved earlier and its completion later around
//! the instant it really ran. Such a history is linearizable by
//! construction, so the checkers must accept it; with one read's value
//! replaced by a value nothing ever wrote, the register checker must reject it.

use std::collections::BTreeMap;

use coraft_chaos::counter::check_counters;
use coraft_chaos::linearizable::{check_registers, Verdict, STATES_EXPLORED_MAX};
use coraft_chaos::second_opinion::{check_registers_second_opinion, Opinion, APPLY_STEPS_MAX};
use coraft_chaos::{History, Key, Operation, Outcome, Value};
use proptest::prelude::*;

/// Instants at which the generated operations really run, this far apart.
const STEP_NS: u64 = 100;
/// How far an invocation or completion may move from that instant: more than
/// one step, so neighbouring operations overlap.
const JITTER_NS_MAX: u64 = 250;
/// A value no generated write uses.
const NEVER_WRITTEN: Value = 1_000_000;

/// The random choices for one operation.
#[derive(Clone, Debug)]
struct Choice {
    key: Key,
    kind: u8,
    cas_expects_current: bool,
    before_ns: u64,
    after_ns: u64,
    /// 0: unknown outcome that applied; 1: unknown that did not apply;
    /// 2: failed (not applied); otherwise ok.
    fate: u8,
    /// Whether an unknown outcome still gets a completion event.
    unknown_completes: bool,
}

fn choice() -> impl Strategy<Value = Choice> {
    (
        0..3u64,
        0..5u8,
        any::<bool>(),
        0..JITTER_NS_MAX,
        0..JITTER_NS_MAX,
        0..8u8,
        any::<bool>(),
    )
        .prop_map(
            |(key, kind, cas_expects_current, before_ns, after_ns, fate, unknown_completes)| Choice {
                key,
                kind,
                cas_expects_current,
                before_ns,
                after_ns,
                fate,
                unknown_completes,
            },
        )
}

/// One generated operation with its times and outcome.
struct Generated {
    invoke_ns: u64,
    complete_ns: u64,
    operation: Operation,
    outcome: Outcome,
    /// Whether the completion event is recorded (false: never completed).
    completes: bool,
}

/// Runs the choices on a sequential register and counter and spreads them in time.
fn generate(choices: &[Choice]) -> Vec<Generated> {
    let mut registers: BTreeMap<Key, Option<Value>> = BTreeMap::new();
    let mut counters: BTreeMap<Key, u64> = BTreeMap::new();
    let mut generated = Vec::new();
    for (index, choice) in choices.iter().enumerate() {
        let instant_ns = JITTER_NS_MAX + STEP_NS * index as u64;
        let key = choice.key;
        let current = registers.get(&key).copied().flatten();
        // Distinct for every operation, so every write's value is unique.
        let unique = index as Value + 1;
        // What the operation is, whether it applies, and its ok outcome.
        let (operation, applies, ok_outcome) = match choice.kind {
            0 => (Operation::Read { key }, true, Outcome::Ok { value: current }),
            1 => (
                Operation::Write { key, value: unique },
                true,
                Outcome::Ok { value: None },
            ),
            2 => {
                let expected = match current {
                    Some(current) if choice.cas_expects_current => current,
                    _ => NEVER_WRITTEN + unique,
                };
                let operation = Operation::Cas {
                    key,
                    expected,
                    new: unique,
                };
                (operation, current == Some(expected), Outcome::Ok { value: None })
            }
            3 => {
                let count = counters.get(&key).copied().unwrap_or(0) + 1;
                (Operation::Increment { key }, true, Outcome::Ok { value: Some(count) })
            }
            _ => {
                let count = counters.get(&key).copied().unwrap_or(0);
                (Operation::CounterRead { key }, true, Outcome::Ok { value: Some(count) })
            }
        };
        let (outcome, applied) = match (applies, choice.fate) {
            // A cas whose compare fails is reported failed.
            (false, _) => (Outcome::Failed, false),
            (true, 0) => (Outcome::Unknown, true),
            (true, 1) => (Outcome::Unknown, false),
            (true, 2) => (Outcome::Failed, false),
            (true, _) => (ok_outcome, true),
        };
        if applied {
            match operation {
                Operation::Write { value, .. } => {
                    registers.insert(key, Some(value));
                }
                Operation::Cas { new, .. } => {
                    registers.insert(key, Some(new));
                }
                Operation::Increment { .. } => *counters.entry(key).or_insert(0) += 1,
                Operation::Read { .. } | Operation::CounterRead { .. } => {}
            }
        }
        generated.push(Generated {
            invoke_ns: instant_ns - choice.before_ns,
            complete_ns: instant_ns + choice.after_ns,
            operation,
            outcome,
            completes: outcome != Outcome::Unknown || choice.unknown_completes,
        });
    }
    generated
}

/// The history of generated operations, one process each, events in time order.
fn history(generated: &[Generated]) -> History {
    let mut events = Vec::new();
    for (process, op) in generated.iter().enumerate() {
        events.push((op.invoke_ns, process as u64, Some(op.operation), None));
        if op.completes {
            events.push((op.complete_ns, process as u64, None, Some(op.outcome)));
        }
    }
    events.sort_by_key(|event| event.0);
    let mut history = History::new();
    for (time_ns, process, operation, outcome) in events {
        match (operation, outcome) {
            (Some(operation), _) => history.invoke(process, time_ns, operation),
            (None, Some(outcome)) => history.complete(process, time_ns, outcome),
            (None, None) => unreachable!(),
        }
    }
    history
}

proptest! {
    #[test]
    fn histories_of_a_sequential_register_with_overlaps_are_accepted(
        choices in prop::collection::vec(choice(), 1..60)
    ) {
        let history = history(&generate(&choices));
        let report = check_registers(&history, STATES_EXPLORED_MAX).unwrap();
        prop_assert_eq!(report.verdict(), Verdict::Linearizable, "{:?}", report);
        // The second checker (crates.io) agrees.
        let second = check_registers_second_opinion(&history, APPLY_STEPS_MAX).unwrap();
        prop_assert!(second.disagreements(&report).is_empty(), "{:?}", second);
        let violations = check_counters(&history).unwrap();
        prop_assert!(violations.is_empty(), "{:?}", violations);
    }

    #[test]
    fn the_same_histories_with_a_read_of_a_never_written_value_are_rejected(
        choices in prop::collection::vec(choice(), 1..60),
        last_read in choice(),
        which_read in any::<prop::sample::Index>(),
    ) {
        assert_mutated_read_rejected(choices, last_read, which_read)?;
    }
}

/// Changes one ok read of the generated history to a value never written and
/// checks the register checker rejects it, naming the read's key.
fn assert_mutated_read_rejected(
    mut choices: Vec<Choice>,
    last_read: Choice,
    which_read: prop::sample::Index,
) -> Result<(), TestCaseError> {
    // At least one ok read to mutate.
    choices.push(Choice {
        kind: 0,
        fate: 7,
        ..last_read
    });
    let mut generated = generate(&choices);
    let ok_reads: Vec<usize> = generated
        .iter()
        .enumerate()
        .filter(|(_, op)| matches!(op.operation, Operation::Read { .. }) && matches!(op.outcome, Outcome::Ok { .. }))
        .map(|(index, _)| index)
        .collect();
    let mutated = ok_reads[which_read.index(ok_reads.len())];
    generated[mutated].outcome = Outcome::Ok {
        value: Some(NEVER_WRITTEN),
    };
    let Operation::Read { key } = generated[mutated].operation else {
        unreachable!()
    };
    let report = check_registers(&history(&generated), STATES_EXPLORED_MAX).unwrap();
    prop_assert_eq!(report.verdict(), Verdict::NotLinearizable { key }, "{:?}", report);
    // The second checker (crates.io) says "no" on the key too, unless the
    // key is past its bound.
    let second = check_registers_second_opinion(&history(&generated), APPLY_STEPS_MAX).unwrap();
    prop_assert!(second.disagreements(&report).is_empty(), "{:?}", second);
    prop_assert!(
        !matches!(second.keys.get(&key), Some(Opinion::Linearizable { .. }) | None),
        "{:?}",
        second
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn long_histories_of_a_sequential_register_are_accepted_within_the_default_bound(
        choices in prop::collection::vec(choice(), 2000..2001)
    ) {
        let history = history(&generate(&choices));
        let report = check_registers(&history, STATES_EXPLORED_MAX).unwrap();
        prop_assert_eq!(report.verdict(), Verdict::Linearizable, "{:?}", report);
    }

    #[test]
    fn long_histories_with_a_read_of_a_never_written_value_are_rejected_within_the_default_bound(
        choices in prop::collection::vec(choice(), 2000..2001),
        last_read in choice(),
        which_read in any::<prop::sample::Index>(),
    ) {
        assert_mutated_read_rejected(choices, last_read, which_read)?;
    }
}
