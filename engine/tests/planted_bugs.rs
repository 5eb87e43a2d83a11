//! The simulator catches real bugs, and the right checker catches each: with
//! one rule of Raft broken on purpose, the first seed that fails (searched in
//! a pinned range, at most 10,000 seeds) must fail on the checker for that
//! rule. "Some violation" is not enough: a core panic or an error of the
//! simulated runtime would satisfy that without any checker working.

use coraft::raft::PlantedBug;
use coraft::sim::{run, CheckerKind, SimOptions};

/// The first seed in `seeds` that fails, with its first violation's checker
/// and text.
fn first_failure(bug: PlantedBug, seeds: std::ops::Range<u64>) -> Option<(u64, CheckerKind, String)> {
    seeds.into_iter().find_map(|seed| {
        let mut options = SimOptions::new(seed, 3);
        options.planted_bug = bug;
        let outcome = run(options);
        outcome.violations.first().map(|v| (seed, v.checker, v.to_string()))
    })
}

fn assert_caught_by(bug: PlantedBug, seeds: std::ops::Range<u64>, expected: CheckerKind) {
    let range = format!("{seeds:?}");
    let (seed, checker, violation) =
        first_failure(bug, seeds).unwrap_or_else(|| panic!("{bug:?}: no seed in {range} fails"));
    assert_eq!(
        checker, expected,
        "{bug:?}: seed {seed} failed first on {checker}, not {expected}: {violation}"
    );
}

#[test]
fn committing_a_previous_term_entry_by_counting_replicas_is_caught_by_leader_completeness() {
    // Raft §5.4.2 and Figure 8. The interleaving is rare: about 2 in 1,000
    // seeds catch it (the first at seed 85 at the time of writing), so the
    // search runs the whole range to survive changes to the simulator's draws.
    assert_caught_by(
        PlantedBug::CommitPreviousTermByCounting,
        0..10_000,
        CheckerKind::LeaderCompleteness,
    );
}

#[test]
fn granting_votes_without_the_log_check_is_caught_by_leader_completeness() {
    // Raft §5.4.1: a stale candidate wins and lacks committed entries.
    assert_caught_by(
        PlantedBug::VoteWithoutLogCheck,
        0..1_000,
        CheckerKind::LeaderCompleteness,
    );
}

#[test]
fn acknowledging_appends_before_persisting_is_caught_by_leader_completeness() {
    // Persistence before promise: a crash loses what counted for a commit,
    // and a leader elected afterwards lacks it. A follower may also be told
    // a commit index over an older entry it kept in place of the lost one
    // and commit that: state machine safety catches that first on some
    // seeds (1021 is the first). Since a leader probes a follower that lost
    // acknowledged entries from what it still holds (`raft/progress.rs`),
    // the lost entries are often sent again before an election, so fewer
    // seeds fail at all (the first leader-completeness seed moved from 97
    // to 1139). Every seed up to the first leader-completeness one must
    // fail on one of the two checkers.
    let mut others = Vec::new();
    for seed in 0..10_000 {
        let mut options = SimOptions::new(seed, 3);
        options.planted_bug = PlantedBug::AcknowledgeBeforePersist;
        let outcome = run(options);
        let Some(violation) = outcome.violations.first() else {
            continue;
        };
        match violation.checker {
            CheckerKind::LeaderCompleteness => return,
            CheckerKind::StateMachineSafety => others.push(seed),
            other => panic!("AcknowledgeBeforePersist: seed {seed} failed first on {other}: {violation}"),
        }
    }
    panic!("AcknowledgeBeforePersist: no seed in 0..10000 failed on leader completeness (state machine safety: {others:?})");
}

#[test]
fn reading_before_committing_in_the_term_is_caught_by_linearizable_reads() {
    // Thesis §6.4: a new leader's commit index may lag the previous
    // leader's, so a read served from it misses an acknowledged write.
    assert_caught_by(
        PlantedBug::ReadBeforeCommitInTerm,
        0..10_000,
        CheckerKind::LinearizableReads,
    );
}

#[test]
fn sending_a_vote_before_persisting_it_is_caught_by_vote_durability() {
    // Raft Figure 2: a voter that crashes before its vote reached the disk
    // comes back free to vote again in the same term.
    assert_caught_by(PlantedBug::VoteBeforePersist, 0..10_000, CheckerKind::VoteDurability);
}

#[test]
fn voting_twice_in_one_term_is_caught_by_election_safety() {
    // Raft §5.2: one vote per voter per term is what makes one leader per term.
    assert_caught_by(PlantedBug::DoubleVote, 0..10_000, CheckerKind::ElectionSafety);
}

#[test]
fn the_same_seed_replays_the_same_run() {
    let a = run(SimOptions::new(956, 3));
    let b = run(SimOptions::new(956, 3));
    assert_eq!(
        (a.steps, a.writes_acknowledged, a.reads_confirmed, a.reads_served),
        (b.steps, b.writes_acknowledged, b.reads_confirmed, b.reads_served)
    );
    assert!(a.steps > 0);
}
