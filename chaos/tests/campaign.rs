//! `coraft-chaos campaign`: a tiny campaign (2 kinds × 2 runs, 3 and 5
//! nodes) whose table must add up its runs exactly, per kind and in all, as
//! `campaign.jsonl` records them; and a campaign whose run cannot be carried
//! out must keep that run's folder with the command that re-runs it.
//!
//! `CORAFT_CHAOS_NODE_BIN=target/fast/coraft-node` runs it against a
//! `coraft-node` already built (say, with `--profile fast`) instead of
//! building this profile's.

use std::path::PathBuf;
use std::time::Duration;

use coraft_chaos::campaign::{campaign, percentile, CampaignOptions, KindRow, SLOW_RUN_KEPT_MS};
use coraft_chaos::nemesis::FaultKind;
use coraft_chaos::run::RunOptions;

mod common;

fn node_bin() -> PathBuf {
    std::env::var_os("CORAFT_CHAOS_NODE_BIN").map_or_else(common::node_bin, PathBuf::from)
}

/// The sum of one figure over `runs` (lines of `campaign.jsonl`).
fn sum(runs: &[&serde_json::Value], field: &str) -> usize {
    runs.iter()
        .map(|run| {
            run["figures"][field]
                .as_u64()
                .unwrap_or_else(|| panic!("{field} in {run}")) as usize
        })
        .sum()
}

/// Checks `row` against the runs it adds up, as recorded in `campaign.jsonl`.
fn assert_adds_up(row: &KindRow, runs: &[&serde_json::Value]) {
    let what = format!("{:?}", row.kind);
    assert_eq!(row.runs, runs.len(), "{what}");
    assert_eq!(
        row.runs_3_nodes,
        runs.iter().filter(|r| r["nodes"] == 3).count(),
        "{what}"
    );
    assert_eq!(
        row.runs_5_nodes,
        runs.iter().filter(|r| r["nodes"] == 5).count(),
        "{what}"
    );
    assert_eq!(
        row.failed,
        runs.iter().filter(|r| r["passed"] == false).count(),
        "{what}"
    );
    assert_eq!(row.register_operations, sum(runs, "register_operations"), "{what}");
    assert_eq!(row.counter_operations, sum(runs, "counter_operations"), "{what}");
    assert_eq!(row.list_operations, sum(runs, "list_operations"), "{what}");
    assert_eq!(row.unknown, sum(runs, "unknown"), "{what}");
    assert_eq!(row.faults, sum(runs, "faults"), "{what}");
    assert_eq!(row.violations, sum(runs, "violations"), "{what}");
    assert_eq!(row.writes_lost, sum(runs, "writes_lost"), "{what}");
    assert_eq!(row.not_recovered, sum(runs, "not_recovered"), "{what}");
    let mut recoveries: Vec<u64> = runs
        .iter()
        .flat_map(|r| r["figures"]["recoveries_ms"].as_array().unwrap().iter())
        .map(|ms| ms.as_u64().unwrap())
        .collect();
    recoveries.sort_unstable();
    assert_eq!(row.recoveries, recoveries.len(), "{what}");
    assert_eq!(row.recovery_p50_ms, percentile(&recoveries, 50), "{what}");
    assert_eq!(row.recovery_p99_ms, percentile(&recoveries, 99), "{what}");
    assert_eq!(
        row.longest_unavailable_ms,
        runs.iter()
            .map(|r| r["figures"]["longest_unavailable_ms"].as_u64().unwrap())
            .max()
            .unwrap_or(0),
        "{what}"
    );
}

#[test]
fn a_tiny_campaign_adds_up_its_runs_per_kind_and_keeps_a_failing_run() {
    let dir = tempfile::Builder::new()
        .prefix("coraft-chaos-campaign")
        .tempdir()
        .unwrap();
    let kinds = FaultKind::parse_list("kill-leader,stop-node").unwrap();
    let mut base = RunOptions::new(node_bin(), dir.path().join("good"), 31);
    base.duration = Duration::from_secs(6);
    let result = campaign(&CampaignOptions {
        base,
        kinds: kinds.clone(),
        runs_per_kind: 2,
        node_counts: vec![3, 5],
        time_budget: None,
    })
    .unwrap();
    let table = result.table();
    println!("{table}");
    assert_eq!(result.runs.len(), 4, "{table}");
    for run in &result.runs {
        assert!(run.passed, "{run:?}");
        // A passed run is kept only for a gap in acknowledged writes.
        assert!(
            run.kept.is_none() || run.figures.longest_unavailable_ms > SLOW_RUN_KEPT_MS,
            "{run:?}"
        );
        assert!(run.figures.register_operations > 10, "{run:?}");
        assert!(run.rerun.contains(&format!("--seed {} ", run.seed)), "{}", run.rerun);
        assert!(
            run.rerun.contains(&format!("--nemesis {} ", run.kind.name())),
            "{}",
            run.rerun
        );
    }
    assert!(result.total.faults > 0, "{table}");
    // Each kind ran twice, once on 3 nodes and once on 5, with other seeds.
    for (row, kind) in result.rows.iter().zip(&kinds) {
        assert_eq!(row.kind, Some(*kind));
        assert_eq!((row.runs, row.runs_3_nodes, row.runs_5_nodes), (2, 1, 1), "{table}");
    }
    let mut seeds: Vec<u64> = result.runs.iter().map(|r| r.seed).collect();
    seeds.sort_unstable();
    seeds.dedup();
    assert_eq!(seeds.len(), 4);

    // The table adds up exactly what `campaign.jsonl` says each run found.
    let log = std::fs::read_to_string(dir.path().join("good/campaign.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 4);
    for (row, kind) in result.rows.iter().zip(&kinds) {
        let runs: Vec<&serde_json::Value> = lines.iter().filter(|l| l["kind"] == kind.name()).collect();
        assert_adds_up(row, &runs);
    }
    assert_adds_up(&result.total, &lines.iter().collect::<Vec<_>>());
    let total = &result.total;
    let total_line = format!(
        "| **all** | 4 (2 / 2) | 0 | {} / {} / {} | {} | {} | {} | {} |",
        total.register_operations,
        total.counter_operations,
        total.list_operations,
        total.unknown,
        total.faults,
        total.violations,
        total.writes_lost
    );
    assert!(table.contains(&total_line), "no `{total_line}` in\n{table}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("good/campaign.txt")).unwrap(),
        table
    );
    // Passing runs leave nothing but the campaign's own files.
    let mut names: Vec<String> = std::fs::read_dir(dir.path().join("good"))
        .unwrap()
        .map(|item| item.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    // (but the folders of runs kept for a gap: a loaded machine's tail).
    let slow_kinds: Vec<&str> = result
        .runs
        .iter()
        .filter(|run| run.kept.is_some())
        .map(|run| run.kind.name())
        .collect();
    names.retain(|name| !slow_kinds.contains(&name.as_str()));
    names.sort();
    assert_eq!(names, ["campaign.json", "campaign.jsonl", "campaign.txt"]);

    // A run that cannot be carried out is kept, with its re-run command.
    let base = RunOptions::new(dir.path().join("no-such-coraft-node"), dir.path().join("bad"), 32);
    let result = campaign(&CampaignOptions {
        base,
        kinds: vec![FaultKind::KillNode],
        runs_per_kind: 1,
        node_counts: vec![3, 5],
        time_budget: None,
    })
    .unwrap();
    let run = &result.runs[0];
    assert!(
        !run.passed && run.error.as_deref().unwrap().contains("no-such-coraft-node"),
        "{run:?}"
    );
    let kept = run.kept.as_ref().expect("the failing run's folder is kept");
    assert!(kept.starts_with(dir.path().join("bad/kill-node")), "{}", kept.display());
    let rerun = std::fs::read_to_string(kept.join("RERUN")).unwrap();
    assert!(rerun.contains(&format!("--seed {} ", run.seed)), "{rerun}");
    assert_eq!((result.total.failed, result.total.errors), (1, 1));
    let table = result.table();
    assert!(
        table.contains("| `kill-node` | 1 (1 / 0) | 1 (1 not carried out) |"),
        "{table}"
    );
    assert!(
        table.contains(&format!("FAILED kill-node run 1 (seed {}", run.seed)),
        "{table}"
    );
}
