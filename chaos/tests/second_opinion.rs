//! The two register checkers on recorded histories: our own
//! (`coraft_chaos::linearizable`) and the second opinion from crates.io
//! (`coraft_chaos::second_opinion`, `todc-utils`'s `WGLChecker`) must reach
//! the same verdict on every key of a real run's history, and on many
//! variants of it made bad (a read returning another value of its key, an
//! acknowledged write turned failed) or uncertain (an acknowledged write
//! turned unknown).
//!
//! `histories/kill-leader-stop-leader-seed5.jsonl` is the register history
//! of 32 keys of `coraft-chaos --seed 5 --duration 8 --nemesis
//! kill-leader,stop-leader --clients 4`, the keys in use around its two
//! faults (keys 72–95 and 144–151), final reads included.
//!
//! The counters and lists, judged by the same checker as
//! fetch-and-increment objects and sequences, must be rejected on
//! hand-made bad histories (each also rejected by our bounds and anomaly
//! checkers), and on the ones only linearizability catches (a counter read
//! going back, appends applied against their real-time order).

use std::collections::BTreeMap;

use coraft_chaos::counter::check_counters;
use coraft_chaos::history::{Event, History, Operation, Outcome};
use coraft_chaos::linearizable::{check_registers, KeyVerdict, STATES_EXPLORED_MAX};
use coraft_chaos::list_append::{check_lists, AppendOutcome, ListOperation};
use coraft_chaos::second_opinion::{
    check_counters_second_opinion, check_lists_second_opinion, check_registers_second_opinion, Opinion, APPLY_STEPS_MAX,
};

fn recorded() -> History {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/histories/kill-leader-stop-leader-seed5.jsonl"
    );
    let file = std::fs::File::open(path).unwrap();
    History::read_json_lines(std::io::BufReader::new(file)).unwrap()
}

/// Both checkers' verdicts per key (true: linearizable), asserting the
/// second judged every key ours judged and that they agree.
fn agreed_verdicts(history: &History, what: &str) -> BTreeMap<u64, bool> {
    let ours = check_registers(history, STATES_EXPLORED_MAX).unwrap();
    let theirs = check_registers_second_opinion(history, APPLY_STEPS_MAX).unwrap();
    assert_eq!(
        ours.keys.keys().collect::<Vec<_>>(),
        theirs.keys.keys().collect::<Vec<_>>(),
        "{what}"
    );
    let mut verdicts = BTreeMap::new();
    for (key, verdict) in &ours.keys {
        let ours_linearizable = match verdict {
            KeyVerdict::Linearizable => true,
            KeyVerdict::NotLinearizable { .. } => false,
            KeyVerdict::TooLarge { .. } => panic!("{what}: key {key} too large for ours"),
        };
        let theirs_linearizable = match theirs.keys[key] {
            Opinion::Linearizable { .. } => true,
            Opinion::NotLinearizable { .. } => false,
            Opinion::Skipped { operations } => panic!("{what}: key {key} ({operations} operations) skipped"),
        };
        assert_eq!(
            ours_linearizable, theirs_linearizable,
            "{what}: key {key}: ours {verdict:?}, theirs {:?}",
            theirs.keys[key]
        );
        verdicts.insert(*key, ours_linearizable);
    }
    assert!(theirs.disagreements(&ours).is_empty(), "{what}");
    verdicts
}

/// Index of the completion event of the operation invoked at event `invoke`.
fn completion_of(history: &History, invoke: usize) -> Option<usize> {
    let Event::Invoke { process, .. } = history.events[invoke] else {
        return None;
    };
    history.events[invoke + 1..]
        .iter()
        .position(|event| matches!(event, Event::Complete { process: p, .. } if *p == process))
        .map(|offset| invoke + 1 + offset)
}

#[test]
fn both_checkers_accept_a_recorded_run_and_agree_on_every_variant_of_it() {
    let history = recorded();
    let verdicts = agreed_verdicts(&history, "the recorded history");
    assert_eq!(verdicts.len(), 32);
    assert!(verdicts.values().all(|&linearizable| linearizable));

    // Values written per key, to make reads return another one.
    let mut written: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for event in &history.events {
        if let Event::Invoke {
            operation: Operation::Write { key, value } | Operation::Cas { key, new: value, .. },
            ..
        } = event
        {
            written.entry(*key).or_default().push(*value);
        }
    }
    let (mut variants, mut rejected, mut accepted) = (0, 0, 0);
    let invokes: Vec<usize> = (0..history.events.len())
        .filter(|&i| matches!(history.events[i], Event::Invoke { .. }))
        .collect();
    // Every 20th operation changed, one at a time (about 55 variants).
    for &invoke in invokes.iter().step_by(20) {
        let Event::Invoke { operation, .. } = history.events[invoke] else {
            unreachable!()
        };
        let Some(complete) = completion_of(&history, invoke) else {
            continue;
        };
        let Event::Complete { outcome, .. } = history.events[complete] else {
            unreachable!()
        };
        let mut variant = history.clone();
        let (key, what) = match (operation, outcome) {
            (Operation::Read { key }, Outcome::Ok { value }) => {
                // Another value of the key, written somewhere in the run.
                let Some(&other) = written[&key].iter().find(|&&v| Some(v) != value) else {
                    continue;
                };
                if let Event::Complete { outcome, .. } = &mut variant.events[complete] {
                    *outcome = Outcome::Ok { value: Some(other) };
                }
                (key, format!("read at event {invoke} returning {other}"))
            }
            (Operation::Write { key, .. }, Outcome::Ok { .. }) if invoke % 3 == 0 => {
                if let Event::Complete { outcome, .. } = &mut variant.events[complete] {
                    *outcome = Outcome::Unknown;
                }
                (key, format!("write at event {invoke} made unknown"))
            }
            (Operation::Write { key, .. } | Operation::Cas { key, .. }, Outcome::Ok { .. }) => {
                if let Event::Complete { outcome, .. } = &mut variant.events[complete] {
                    *outcome = Outcome::Failed;
                }
                (key, format!("operation at event {invoke} made failed"))
            }
            _ => continue,
        };
        let verdicts = agreed_verdicts(&variant, &what);
        variants += 1;
        if verdicts[&key] {
            accepted += 1;
        } else {
            rejected += 1;
        }
        // Other keys are untouched.
        assert_eq!(verdicts.values().filter(|&&v| !v).count(), usize::from(!verdicts[&key]));
    }
    println!("{variants} variants: {rejected} rejected by both checkers, {accepted} accepted by both");
    assert!(variants >= 40, "{variants} variants");
    assert!(rejected >= 20, "only {rejected} of {variants} variants rejected");
}

/// Counter histories: (process, invoke, complete, operation, outcome).
type Call = (u64, u64, u64, Operation, Outcome);

fn counter_history(calls: &[Call]) -> History {
    // Events in time order; a completion at u64::MAX is left out (unknown,
    // never completed).
    let mut events: Vec<(u64, bool, Call)> = Vec::new();
    for &call in calls {
        events.push((call.1, false, call));
        if call.2 != u64::MAX {
            events.push((call.2, true, call));
        }
    }
    events.sort_by_key(|&(time, complete, _)| (time, complete));
    let mut history = History::new();
    for (time, complete, (process, _, _, operation, outcome)) in events {
        if complete {
            history.complete(process, time, outcome);
        } else {
            history.invoke(process, time, operation);
        }
    }
    history
}

const INC: Operation = Operation::Increment { key: 9 };
const READ: Operation = Operation::CounterRead { key: 9 };
fn ok(value: u64) -> Outcome {
    Outcome::Ok { value: Some(value) }
}

/// The counter's verdicts: the second checker's, and whether ours
/// (`coraft_chaos::counter`, by bounds) found a violation.
fn counter_verdicts(calls: &[Call]) -> (Opinion, bool) {
    let history = counter_history(calls);
    let theirs = check_counters_second_opinion(&history, APPLY_STEPS_MAX).unwrap();
    let ours = check_counters(&history).unwrap();
    (theirs.keys[&9], ours.is_empty())
}

#[test]
fn the_second_checker_judges_counters_as_fetch_and_increment_objects() {
    let linearizable = Opinion::Linearizable { reduced: false };
    let not = Opinion::NotLinearizable { reduced: false };
    // Good: concurrent increments returning 1 and 2 in either order, a read
    // of 2; an unknown increment that may or may not have applied.
    let good = [
        (1, 0, 10, INC, ok(2)),
        (2, 1, 9, INC, ok(1)),
        (3, 11, 12, READ, ok(2)),
        (4, 13, u64::MAX, INC, Outcome::Unknown),
        (1, 14, 15, READ, ok(2)),
        (2, 16, 17, READ, ok(3)),
    ];
    assert_eq!(counter_verdicts(&good), (linearizable, true));
    // Bad histories both checkers reject.
    let bad: [(&str, Vec<Call>); 4] = [
        (
            "two increments returned the same count",
            vec![(1, 0, 10, INC, ok(1)), (2, 1, 9, INC, ok(1))],
        ),
        (
            "an acknowledged increment lost (a later read below it)",
            vec![(1, 0, 10, INC, ok(1)), (2, 11, 12, READ, ok(0))],
        ),
        (
            "a read above every increment attempted",
            vec![(1, 0, 10, INC, ok(1)), (2, 11, 12, READ, ok(2))],
        ),
        (
            "an increment returning a count below one acknowledged before it began",
            vec![(1, 0, 10, INC, ok(1)), (2, 11, 12, INC, ok(1))],
        ),
    ];
    for (what, calls) in &bad {
        assert_eq!(counter_verdicts(calls), (not, false), "{what}");
    }
    // Only linearizability catches a counter going back: a read of 2, then
    // a read of 1, with both increments of unknown outcome (the bounds
    // allow 0 to 2 for each read).
    let backwards = [
        (1, 0, u64::MAX, INC, Outcome::Unknown),
        (2, 1, u64::MAX, INC, Outcome::Unknown),
        (3, 10, 11, READ, ok(2)),
        (4, 12, 13, READ, ok(1)),
    ];
    assert_eq!(counter_verdicts(&backwards), (not, true));
    // ... which a run reports as a disagreement.
    let history = counter_history(&backwards);
    let theirs = check_counters_second_opinion(&history, APPLY_STEPS_MAX).unwrap();
    let disagreements = theirs.disagreements_with_rejected(&Default::default());
    assert_eq!(disagreements.len(), 1);
    assert!(disagreements[0].ours_linearizable);
    // Past its step bound a counter is skipped, never called linearizable.
    let small = check_counters_second_opinion(&counter_history(&good), 3).unwrap();
    assert!(matches!(small.keys[&9], Opinion::Skipped { .. }), "{small:?}");
}

fn append(process: u64, value: u64, invoke_ns: u64, complete_ns: u64, outcome: AppendOutcome) -> ListOperation {
    ListOperation::Append {
        process,
        key: 4,
        value,
        invoke_ns,
        complete_ns,
        outcome,
    }
}

fn read(process: u64, invoke_ns: u64, complete_ns: u64, values: &[u64]) -> ListOperation {
    ListOperation::Read {
        process,
        key: 4,
        invoke_ns,
        complete_ns,
        values: Some(values.to_vec()),
    }
}

/// The list's verdicts: the second checker's, and whether ours found no anomaly.
fn list_verdicts(operations: &[ListOperation]) -> (Opinion, bool) {
    let theirs = check_lists_second_opinion(operations, APPLY_STEPS_MAX);
    (theirs.keys[&4], check_lists(operations).is_empty())
}

#[test]
fn the_second_checker_judges_lists_as_sequences() {
    use AppendOutcome::{Failed, Ok as Acked, Unknown};
    let linearizable = Opinion::Linearizable { reduced: false };
    let not = Opinion::NotLinearizable { reduced: false };
    // Good: concurrent appends read in either order, an unknown append seen
    // late, a failed one never seen, a read with no answer.
    let good = [
        append(1, 1, 0, 10, Acked),
        append(2, 2, 1, 9, Acked),
        read(3, 2, 3, &[]),
        read(3, 11, 12, &[2, 1]),
        append(1, 3, 13, 14, Unknown),
        append(2, 4, 13, 14, Failed),
        ListOperation::Read {
            process: 3,
            key: 4,
            invoke_ns: 15,
            complete_ns: 16,
            values: None,
        },
        read(2, 20, 21, &[2, 1, 3]),
    ];
    assert_eq!(list_verdicts(&good), (linearizable, true));
    // Bad histories both checkers reject.
    let bad: [(&str, Vec<ListOperation>); 5] = [
        ("a lost append", vec![append(1, 1, 0, 10, Acked), read(2, 11, 12, &[])]),
        (
            "an append applied twice",
            vec![append(1, 1, 0, 10, Acked), read(2, 11, 12, &[1, 1])],
        ),
        (
            "a failed append read",
            vec![append(1, 1, 0, 10, Failed), read(2, 11, 12, &[1])],
        ),
        (
            "two reads in different orders",
            vec![
                append(1, 1, 0, 10, Acked),
                append(2, 2, 0, 10, Acked),
                read(3, 11, 12, &[1, 2]),
                read(3, 13, 14, &[2, 1]),
            ],
        ),
        (
            "a stale read after a longer one",
            vec![
                append(1, 1, 0, 10, Unknown),
                read(3, 11, 12, &[1]),
                read(3, 13, 14, &[]),
            ],
        ),
    ];
    for (what, operations) in &bad {
        assert_eq!(list_verdicts(operations), (not, false), "{what}");
    }
    // Only linearizability catches appends applied against their real-time
    // order: append 1 acknowledged before append 2 began, read as [2, 1].
    let reordered = [
        append(1, 1, 0, 10, Acked),
        append(2, 2, 11, 20, Acked),
        read(3, 21, 22, &[2, 1]),
    ];
    assert_eq!(list_verdicts(&reordered), (not, true));
    // Past the bound, unknown appends nobody read are dropped (they cannot
    // change the verdict), then the list is skipped.
    let mut many = vec![append(1, 1, 0, 10, Acked), read(2, 11, 12, &[1])];
    many.extend((0..12).map(|i| append(3 + i, 100 + i, 13, 14, Unknown)));
    many.push(read(2, 15, 16, &[1]));
    let reduced = check_lists_second_opinion(&many, 200);
    assert_eq!(reduced.keys[&4], Opinion::Linearizable { reduced: true });
    let skipped = check_lists_second_opinion(&good, 2);
    assert!(matches!(skipped.keys[&4], Opinion::Skipped { .. }), "{skipped:?}");
}
