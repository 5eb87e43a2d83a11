//! Hand-made histories: the checkers must say "no" to each violation before
//! their "yes" is worth anything, and "yes" to legal concurrency and to
//! unknown outcomes that did or did not apply.

use coraft_chaos::counter::{check_counters, CounterViolation};
use coraft_chaos::linearizable::{check_registers, KeyVerdict, Verdict, STATES_EXPLORED_MAX};
use coraft_chaos::second_opinion::{check_registers_second_opinion, Opinion, APPLY_STEPS_MAX};
use coraft_chaos::{History, Operation, Outcome, ProcessId};

/// One operation: process, invocation time, completion time (`None`: never
/// completed), what it did, how it ended.
type Op = (ProcessId, u64, Option<u64>, Operation, Outcome);

/// Builds a history from operations, events ordered by time.
fn history(ops: &[Op]) -> History {
    let mut events = Vec::new();
    for &(process, invoke_ns, complete_ns, operation, outcome) in ops {
        events.push((invoke_ns, Some(operation), None, process));
        if let Some(complete_ns) = complete_ns {
            events.push((complete_ns, None, Some(outcome), process));
        }
    }
    events.sort_by_key(|event| event.0);
    let mut history = History::new();
    for (time_ns, operation, outcome, process) in events {
        match (operation, outcome) {
            (Some(operation), _) => history.invoke(process, time_ns, operation),
            (None, Some(outcome)) => history.complete(process, time_ns, outcome),
            (None, None) => unreachable!(),
        }
    }
    history
}

fn read(key: u64) -> Operation {
    Operation::Read { key }
}
fn write(key: u64, value: u64) -> Operation {
    Operation::Write { key, value }
}
fn cas(key: u64, expected: u64, new: u64) -> Operation {
    Operation::Cas { key, expected, new }
}
fn increment(key: u64) -> Operation {
    Operation::Increment { key }
}
fn counter_read(key: u64) -> Operation {
    Operation::CounterRead { key }
}
fn ok() -> Outcome {
    Outcome::Ok { value: None }
}
fn ok_value(value: u64) -> Outcome {
    Outcome::Ok { value: Some(value) }
}
fn ok_empty() -> Outcome {
    Outcome::Ok { value: None }
}

/// Our checker's verdict, after asserting that the second checker (from
/// crates.io, `coraft_chaos::second_opinion`) judged every key and reached
/// the same verdict on each: so every "no" below is its "no" too.
fn register_verdict(ops: &[Op]) -> Verdict {
    let history = history(ops);
    let ours = check_registers(&history, STATES_EXPLORED_MAX).unwrap();
    let theirs = check_registers_second_opinion(&history, APPLY_STEPS_MAX).unwrap();
    for (key, verdict) in &ours.keys {
        let expected = match verdict {
            KeyVerdict::Linearizable => Opinion::Linearizable { reduced: false },
            KeyVerdict::NotLinearizable { .. } => Opinion::NotLinearizable { reduced: false },
            KeyVerdict::TooLarge { .. } => continue,
        };
        assert_eq!(theirs.keys.get(key), Some(&expected), "key {key}: ours {verdict:?}");
    }
    assert!(theirs.disagreements(&ours).is_empty(), "{theirs:?}");
    ours.verdict()
}

// ---- registers: must say "no" -------------------------------------------

#[test]
fn stale_read_after_a_completed_write_is_not_linearizable() {
    let ops = [
        (1, 0, Some(10), write(7, 1), ok()),
        (1, 20, Some(30), write(7, 2), ok()),
        // Invoked after the write of 2 completed, yet reads 1.
        (2, 40, Some(50), read(7), ok_value(1)),
    ];
    assert_eq!(register_verdict(&ops), Verdict::NotLinearizable { key: 7 });
    let report = check_registers(&history(&ops), STATES_EXPLORED_MAX).unwrap();
    let KeyVerdict::NotLinearizable { not_placed, .. } = &report.keys[&7] else {
        panic!("{report:?}");
    };
    assert_eq!(not_placed.len(), 1, "{report:?}");
    assert_eq!(not_placed[0].operation, read(7));
}

#[test]
fn read_of_never_written_register_after_a_completed_write_is_not_linearizable() {
    let ops = [
        (1, 0, Some(10), write(1, 5), ok()),
        (2, 20, Some(30), read(1), ok_empty()),
    ];
    assert_eq!(register_verdict(&ops), Verdict::NotLinearizable { key: 1 });
}

#[test]
fn two_writes_read_in_an_impossible_order_are_not_linearizable() {
    // Writes of 1 and 2 overlap, so either order is legal, but a reader
    // sees 2 then 1 and a later read sees 2 again: the register would have
    // to go 2 -> 1 -> 2 with one write of each.
    let ops = [
        (1, 0, Some(100), write(3, 1), ok()),
        (2, 0, Some(100), write(3, 2), ok()),
        (3, 10, Some(20), read(3), ok_value(2)),
        (3, 30, Some(40), read(3), ok_value(1)),
        (4, 50, Some(60), read(3), ok_value(2)),
    ];
    assert_eq!(register_verdict(&ops), Verdict::NotLinearizable { key: 3 });
}

#[test]
fn cas_that_succeeded_on_a_value_that_could_not_be_there_is_not_linearizable() {
    let ops = [
        (1, 0, Some(10), write(4, 1), ok()),
        (1, 20, Some(30), write(4, 2), ok()),
        // The register holds 2 for the whole of this cas, yet it succeeded on 1.
        (2, 40, Some(50), cas(4, 1, 3), ok()),
    ];
    assert_eq!(register_verdict(&ops), Verdict::NotLinearizable { key: 4 });
}

#[test]
fn two_cas_from_the_same_value_cannot_both_succeed() {
    let ops = [
        (1, 0, Some(10), write(5, 1), ok()),
        (2, 20, Some(50), cas(5, 1, 2), ok()),
        (3, 20, Some(50), cas(5, 1, 3), ok()),
    ];
    assert_eq!(register_verdict(&ops), Verdict::NotLinearizable { key: 5 });
}

#[test]
fn unknown_write_cannot_take_effect_before_it_was_invoked() {
    let ops = [
        (1, 0, Some(10), read(6), ok_value(9)),
        (2, 20, None, write(6, 9), Outcome::Unknown),
    ];
    assert_eq!(register_verdict(&ops), Verdict::NotLinearizable { key: 6 });
}

#[test]
fn failed_write_never_took_effect() {
    let ops = [
        (1, 0, Some(10), write(8, 9), Outcome::Failed),
        (2, 20, Some(30), read(8), ok_value(9)),
    ];
    assert_eq!(register_verdict(&ops), Verdict::NotLinearizable { key: 8 });
}

#[test]
fn one_bad_key_among_good_ones_is_named() {
    let ops = [
        (1, 0, Some(10), write(1, 1), ok()),
        (1, 20, Some(30), read(1), ok_value(1)),
        (2, 0, Some(10), write(2, 1), ok()),
        (2, 20, Some(30), read(2), ok_value(5)),
    ];
    assert_eq!(register_verdict(&ops), Verdict::NotLinearizable { key: 2 });
}

#[test]
fn search_past_its_bound_is_too_large_never_linearizable() {
    // Many overlapping unknown writes, each value read by one of as many
    // overlapping reads, and a read that nothing wrote: the answer is "no",
    // but with a tiny bound the search must say it gave up.
    let mut ops: Vec<Op> = (0..10)
        .map(|process| (process, 0, None, write(9, process + 1), Outcome::Unknown))
        .collect();
    ops.extend((0..10).map(|reader| (100 + reader, 10, Some(1000), read(9), ok_value(reader + 1))));
    ops.push((200, 10, Some(1000), read(9), ok_value(999)));
    let report = check_registers(&history(&ops), 50).unwrap();
    assert_eq!(report.verdict(), Verdict::TooLarge { key: 9 });
    assert!(matches!(
        report.keys[&9],
        KeyVerdict::TooLarge { states_explored } if states_explored <= 50
    ));
    assert_eq!(
        check_registers(&history(&ops), STATES_EXPLORED_MAX).unwrap().verdict(),
        Verdict::NotLinearizable { key: 9 }
    );
}

// ---- registers: must say "yes" ------------------------------------------

#[test]
fn concurrent_overlapping_operations_are_linearizable() {
    let ops = [
        (1, 0, Some(10), write(1, 1), ok()),
        // Write of 2 overlaps two reads: one sees the old value, one the new.
        (2, 20, Some(80), write(1, 2), ok()),
        (3, 25, Some(35), read(1), ok_value(1)),
        (4, 40, Some(50), read(1), ok_value(2)),
        // cas overlapping the write of 2, succeeding on it.
        (5, 30, Some(90), cas(1, 2, 3), ok()),
        (6, 100, Some(110), read(1), ok_value(3)),
    ];
    assert_eq!(register_verdict(&ops), Verdict::Linearizable);
}

#[test]
fn read_of_never_written_register_is_linearizable() {
    let ops = [
        (1, 0, Some(10), read(1), ok_empty()),
        (2, 5, Some(30), write(1, 4), ok()),
        (3, 20, Some(25), read(1), ok_value(4)),
    ];
    assert_eq!(register_verdict(&ops), Verdict::Linearizable);
}

#[test]
fn unknown_write_that_applied_long_after_is_linearizable() {
    let ops = [
        (1, 0, Some(10), write(2, 1), ok()),
        // Timed out; took effect between the two reads, long after.
        (2, 20, None, write(2, 2), Outcome::Unknown),
        (3, 100, Some(110), read(2), ok_value(1)),
        (3, 200, Some(210), read(2), ok_value(2)),
    ];
    assert_eq!(register_verdict(&ops), Verdict::Linearizable);
}

#[test]
fn unknown_write_that_never_applied_is_linearizable() {
    let ops = [
        (1, 0, Some(10), write(2, 1), ok()),
        (2, 20, Some(30), write(2, 2), Outcome::Unknown),
        (3, 100, Some(110), read(2), ok_value(1)),
        (3, 200, Some(210), read(2), ok_value(1)),
    ];
    assert_eq!(register_verdict(&ops), Verdict::Linearizable);
}

#[test]
fn unknown_cas_that_applied_is_linearizable() {
    let ops = [
        (1, 0, Some(10), write(3, 1), ok()),
        (2, 20, Some(30), cas(3, 1, 5), Outcome::Unknown),
        (3, 40, Some(50), read(3), ok_value(5)),
    ];
    assert_eq!(register_verdict(&ops), Verdict::Linearizable);
}

#[test]
fn failed_cas_and_unknown_reads_constrain_nothing() {
    let ops = [
        (1, 0, Some(10), write(3, 1), ok()),
        (2, 20, Some(30), cas(3, 7, 8), Outcome::Failed),
        (3, 20, Some(30), read(3), Outcome::Unknown),
        (4, 40, Some(50), read(3), ok_value(1)),
    ];
    assert_eq!(register_verdict(&ops), Verdict::Linearizable);
}

// ---- counters -------------------------------------------------------------

fn counter_violations(ops: &[Op]) -> Vec<CounterViolation> {
    check_counters(&history(ops)).unwrap()
}

#[test]
fn counter_returning_the_same_count_twice_is_a_violation() {
    let ops = [
        (1, 0, Some(50), increment(1), ok_value(1)),
        (2, 10, Some(60), increment(1), ok_value(1)),
    ];
    let violations = counter_violations(&ops);
    assert!(
        violations
            .iter()
            .any(|v| matches!(v, CounterViolation::DuplicateCount { key: 1, count: 1, .. })),
        "{violations:?}"
    );
}

#[test]
fn lost_acknowledged_increment_is_a_violation() {
    let ops = [
        (1, 0, Some(10), increment(2), ok_value(1)),
        (1, 20, Some(30), increment(2), ok_value(2)),
        (1, 40, Some(50), increment(2), ok_value(3)),
        // Final read after all three were acknowledged sees only two.
        (9, 100, Some(110), counter_read(2), ok_value(2)),
    ];
    let violations = counter_violations(&ops);
    assert_eq!(
        violations,
        vec![CounterViolation::ReadBelowAcknowledged {
            key: 2,
            read: coraft_chaos::Completion {
                process: 9,
                operation: counter_read(2),
                invoke_ns: 100,
                complete_ns: Some(110),
                outcome: ok_value(2),
            },
            acknowledged: 3,
        }]
    );
}

#[test]
fn read_above_attempted_is_a_violation() {
    let ops = [
        (1, 0, Some(10), increment(3), ok_value(1)),
        (2, 20, Some(30), increment(3), Outcome::Failed),
        (9, 40, Some(50), counter_read(3), ok_value(2)),
    ];
    let violations = counter_violations(&ops);
    assert!(
        matches!(
            violations.as_slice(),
            [CounterViolation::ReadAboveAttempted {
                key: 3,
                attempted: 1,
                ..
            }]
        ),
        "{violations:?}"
    );
}

#[test]
fn increment_count_below_completed_increments_is_a_violation() {
    let ops = [
        (1, 0, Some(10), increment(4), ok_value(1)),
        (1, 20, Some(30), increment(4), ok_value(2)),
        // Invoked after two acknowledged increments, so its count is >= 3;
        // distinct from theirs, so only the bound catches it.
        (2, 40, Some(50), increment(4), ok_value(0)),
    ];
    let violations = counter_violations(&ops);
    assert!(
        matches!(
            violations.as_slice(),
            [CounterViolation::CountOutOfBounds {
                key: 4,
                lowest: 3,
                highest: 3,
                ..
            }]
        ),
        "{violations:?}"
    );
}

#[test]
fn increment_count_above_invoked_increments_is_a_violation() {
    let ops = [
        (1, 0, Some(10), increment(5), ok_value(2)),
        (2, 20, Some(30), increment(5), ok_value(1)),
    ];
    let violations = counter_violations(&ops);
    assert!(
        violations.iter().any(|v| matches!(
            v,
            CounterViolation::CountOutOfBounds {
                key: 5,
                lowest: 1,
                highest: 1,
                ..
            }
        )),
        "{violations:?}"
    );
}

#[test]
fn concurrent_increments_with_unknown_outcomes_are_accepted() {
    let ops = [
        (1, 0, Some(100), increment(6), ok_value(2)),
        (2, 10, Some(90), increment(6), ok_value(1)),
        // Timed out, but applied: the later counts show it.
        (3, 20, None, increment(6), Outcome::Unknown),
        (4, 110, Some(120), increment(6), ok_value(4)),
        // Timed out and never applied.
        (5, 130, None, increment(6), Outcome::Unknown),
        (6, 200, Some(210), counter_read(6), ok_value(4)),
        (7, 200, Some(210), counter_read(6), ok_value(4)),
    ];
    assert_eq!(counter_violations(&ops), vec![]);
}

#[test]
fn many_unknown_writes_whose_values_nobody_observes_stay_checkable() {
    // A long run where every fifth write times out: each unknown write may
    // take effect at any later time, so a naive search carries all of them
    // along (2^unknowns states). Their values are never read nor expected
    // by a cas, so they cannot change any verdict.
    let mut ops: Vec<Op> = Vec::new();
    let mut value = 0;
    for round in 0..200u64 {
        let start = round * 100;
        value += 1;
        if round % 5 == 0 {
            ops.push((1000 + round, start, None, write(1, value), Outcome::Unknown));
        } else {
            ops.push((1, start, Some(start + 10), write(1, value), ok()));
            ops.push((2, start + 20, Some(start + 30), read(1), ok_value(value)));
        }
    }
    let report = check_registers(&history(&ops), 10_000).unwrap();
    assert_eq!(report.verdict(), Verdict::Linearizable, "{report:?}");

    // The same with the last read returning the value of the first
    // acknowledged write (round 1), long overwritten, is still caught. (The
    // value of round 0's unknown write would be legal: it may take effect
    // at any time.)
    let last = ops.len() - 1;
    ops[last].4 = ok_value(2);
    let report = check_registers(&history(&ops), 10_000).unwrap();
    assert_eq!(report.verdict(), Verdict::NotLinearizable { key: 1 });
}

// ---- the second checker (crates.io) on its own ------------------------------

#[test]
fn the_second_checker_past_its_bound_skips_a_key_never_calls_it_linearizable() {
    // The bad history of `search_past_its_bound_is_too_large_never_linearizable`.
    let mut ops: Vec<Op> = (0..10)
        .map(|process| (process, 0, None, write(9, process + 1), Outcome::Unknown))
        .collect();
    ops.extend((0..10).map(|reader| (100 + reader, 10, Some(1000), read(9), ok_value(reader + 1))));
    ops.push((200, 10, Some(1000), read(9), ok_value(999)));
    let small = check_registers_second_opinion(&history(&ops), 20).unwrap();
    assert_eq!(small.keys[&9], Opinion::Skipped { operations: 21 });
    assert_eq!(small.counts(), [0, 0, 1, 0]);
    // A skipped key is no disagreement, whatever ours said.
    let ours = check_registers(&history(&ops), STATES_EXPLORED_MAX).unwrap();
    assert!(small.disagreements(&ours).is_empty());
    // With the default bound it says "no" or gives up (ours, which may
    // finish without the unknown writes, says "no"), never "yes".
    let full = check_registers_second_opinion(&history(&ops), APPLY_STEPS_MAX).unwrap();
    assert!(!matches!(full.keys[&9], Opinion::Linearizable { .. }), "{full:?}");
}

#[test]
fn the_second_checker_judges_many_unobserved_unknown_writes_and_catches_a_read_among_them() {
    let mut ops: Vec<Op> = Vec::new();
    for round in 0..200u64 {
        let start = round * 100;
        if round % 5 == 0 {
            ops.push((1000 + round, start, None, write(1, round + 1), Outcome::Unknown));
        } else {
            ops.push((1, start, Some(start + 10), write(1, round + 1), ok()));
            ops.push((2, start + 20, Some(start + 30), read(1), ok_value(round + 1)));
        }
    }
    let good = check_registers_second_opinion(&history(&ops), APPLY_STEPS_MAX).unwrap();
    assert!(matches!(good.keys[&1], Opinion::Linearizable { .. }), "{good:?}");
    let last = ops.len() - 1;
    ops[last].4 = ok_value(2);
    let bad = check_registers_second_opinion(&history(&ops), APPLY_STEPS_MAX).unwrap();
    assert!(matches!(bad.keys[&1], Opinion::NotLinearizable { .. }), "{bad:?}");
}

#[test]
fn checkers_that_disagree_are_reported_key_by_key() {
    // Ours judges this key not linearizable; a second opinion saying
    // otherwise (made up here: the real one agrees) is a disagreement, and
    // so is a key ours rejects that the second never judged.
    let ops = [
        (1, 0, Some(10), write(7, 1), ok()),
        (2, 20, Some(30), read(7), ok_value(2)),
    ];
    let ours = check_registers(&history(&ops), STATES_EXPLORED_MAX).unwrap();
    let mut theirs = check_registers_second_opinion(&history(&ops), APPLY_STEPS_MAX).unwrap();
    assert!(theirs.disagreements(&ours).is_empty());
    theirs.keys.insert(7, Opinion::Linearizable { reduced: false });
    let found = theirs.disagreements(&ours);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].key, 7);
    assert!(!found[0].ours_linearizable);
    theirs.keys.clear();
    assert_eq!(theirs.disagreements(&ours).len(), 1);
}
