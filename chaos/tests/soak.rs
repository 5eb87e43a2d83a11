//! `--soak`: back-to-back checked rounds. Two short rounds under kills and
//! pauses must both pass and leave only `soak.jsonl`; a round that cannot
//! be carried out (no `coraft-node` where it says) must keep its folder
//! with the command that re-runs it.

use std::time::Duration;

use coraft_chaos::nemesis::FaultKind;
use coraft_chaos::run::RunOptions;
use coraft_chaos::soak::{round_kinds, soak, SoakOptions};

mod common;
use common::node_bin;

#[test]
fn a_two_round_soak_checks_each_round_and_keeps_only_a_failing_one() {
    let dir = tempfile::Builder::new().prefix("coraft-chaos-soak").tempdir().unwrap();
    let kinds = FaultKind::parse_list("kill-leader,kill-node,stop-node").unwrap();
    let mut round = RunOptions::new(node_bin(), dir.path().join("good"), 77);
    round.duration = Duration::from_secs(5);
    round.nemesis = kinds.clone();
    let rounds = soak(&SoakOptions {
        round,
        duration: Duration::from_secs(3_600),
        rounds_max: Some(2),
    })
    .unwrap();
    assert_eq!(rounds.len(), 2);
    for (index, result) in rounds.iter().enumerate() {
        assert!(result.passed, "round {}: {}", result.round, result.summary);
        assert!(result.kept.is_none());
        assert!(!result.nemesis.is_empty() && result.nemesis.iter().all(|k| kinds.contains(k)));
        assert_eq!(result.nemesis, round_kinds(77, index + 1, &kinds));
        assert!(
            result.summary["operations"]["ok"].as_u64().unwrap() > 10,
            "{}",
            result.summary
        );
        assert!(
            result.rerun.contains(&format!("--seed {}", result.seed)),
            "{}",
            result.rerun
        );
    }
    assert_ne!(rounds[0].seed, rounds[1].seed);
    let names: Vec<String> = std::fs::read_dir(dir.path().join("good"))
        .unwrap()
        .map(|item| item.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["soak.jsonl".to_string()]);
    let log = std::fs::read_to_string(dir.path().join("good/soak.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 2);

    // A round that fails keeps its folder and says how to re-run it.
    let mut round = RunOptions::new(dir.path().join("no-such-coraft-node"), dir.path().join("bad"), 78);
    round.duration = Duration::from_secs(1);
    round.nemesis = kinds.clone();
    let rounds = soak(&SoakOptions {
        round,
        duration: Duration::from_secs(3_600),
        rounds_max: Some(1),
    })
    .unwrap();
    assert_eq!(rounds.len(), 1);
    assert!(!rounds[0].passed);
    let kept = rounds[0].kept.as_ref().expect("the failing round's folder is kept");
    let rerun = std::fs::read_to_string(kept.join("RERUN")).unwrap();
    assert!(rerun.contains(&format!("--seed {}", rounds[0].seed)), "{rerun}");
    assert!(rounds[0].summary["error"]
        .as_str()
        .unwrap()
        .contains("no-such-coraft-node"));
}
