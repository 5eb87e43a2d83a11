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

use std::collections::BTreeMap;

use coraft_chaos::history::{Event, History, Operation, Outcome};
use coraft_chaos::linearizable::{check_registers, KeyVerdict, STATES_EXPLORED_MAX};
use coraft_chaos::second_opinion::{check_registers_second_opinion, Opinion, APPLY_STEPS_MAX};

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
