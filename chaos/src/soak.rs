//! `coraft-chaos --soak DURATION`: back-to-back rounds, each a whole run
//! ([`crate::run::run`]) with its own seed and a few fault kinds drawn from
//! the ones given, each checked as a run is, until the soak's time is up.
//!
//! A round that passed leaves one line in `soak.jsonl` (its summary) and
//! its folder is removed; a failing round (a violation, a disagreement of
//! the checkers, a storage fault not handled, or a run that could not be
//! carried out) keeps its folder, `round-N-seed-S`, with a `RERUN` file
//! holding the command that re-runs it.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::nemesis::FaultKind;
use crate::rng::Rng;
use crate::run::{run, RunOptions};
use crate::RunError;

/// Most fault kinds one round draws.
const KINDS_PER_ROUND_MAX: usize = 3;

/// What to soak.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// The options of every round; `seed` seeds the soak (the rounds'
    /// seeds and kinds), `out_dir` holds the rounds' folders, `nemesis` the
    /// kinds rounds draw from.
    pub round: RunOptions,
    /// How long the soak runs: no round starts after it.
    pub duration: Duration,
    /// At most this many rounds (`None`: as many as fit).
    pub rounds_max: Option<usize>,
}

/// One round's result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Round {
    /// Its number, from 1.
    pub round: usize,
    /// Its seed.
    pub seed: u64,
    /// Its fault kinds.
    pub nemesis: Vec<FaultKind>,
    /// Whether it passed.
    pub passed: bool,
    /// Its summary (`summary.json`), or the error that ended it.
    pub summary: serde_json::Value,
    /// Its folder, if kept (failing rounds).
    pub kept: Option<PathBuf>,
    /// The command that re-runs it.
    pub rerun: String,
}

/// The kinds round `round` of a soak seeded `seed` uses: one to
/// [`KINDS_PER_ROUND_MAX`] of `kinds`, leaving out what cannot mix with a
/// proxy kind drawn (partitions, `membership`).
pub fn round_kinds(seed: u64, round: usize, kinds: &[FaultKind]) -> Vec<FaultKind> {
    if kinds.is_empty() {
        return vec![];
    }
    let mut rng = Rng::new(seed ^ (round as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let count = 1 + rng.index(KINDS_PER_ROUND_MAX.min(kinds.len()));
    let mut drawn: Vec<FaultKind> = Vec::new();
    while drawn.len() < count {
        let kind = kinds[rng.index(kinds.len())];
        if !drawn.contains(&kind) {
            drawn.push(kind);
        }
    }
    if drawn.iter().any(|k| k.is_proxy()) {
        drawn.retain(|k| !k.is_partition() && *k != FaultKind::Membership);
    }
    drawn
}

/// Runs the soak; each round's outcome is printed as it ends and appended
/// to `soak.jsonl` in the output folder. `Err` only if that folder cannot
/// be written.
pub fn soak(options: &SoakOptions) -> Result<Vec<Round>, RunError> {
    let out = &options.round.out_dir;
    std::fs::create_dir_all(out).map_err(|source| RunError::Io {
        what: format!("creating {}", out.display()),
        source,
    })?;
    let log_path = out.join("soak.jsonl");
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|source| RunError::Io {
            what: format!("opening {}", log_path.display()),
            source,
        })?;
    let until = Instant::now() + options.duration;
    let mut rounds = Vec::new();
    let mut seeds = Rng::new(options.round.seed);
    while Instant::now() < until
        && options.rounds_max.is_none_or(|max| rounds.len() < max)
        && !crate::nemesis::INTERRUPTED.load(std::sync::atomic::Ordering::Relaxed)
    {
        let number = rounds.len() + 1;
        let seed = seeds.next_u64() >> 1;
        let mut round = options.round.clone();
        round.seed = seed;
        round.nemesis = round_kinds(options.round.seed, number, &options.round.nemesis);
        round.out_dir = out.join(format!("round-{number}-seed-{seed}"));
        let rerun = rerun_command(&round);
        let (passed, summary) = match run(&round) {
            Ok(report) => (report.passed(), report.summary_json()),
            Err(error) => (false, serde_json::json!({ "error": error.to_string() })),
        };
        let kept = if passed {
            let _ = std::fs::remove_dir_all(&round.out_dir);
            None
        } else {
            let _ = std::fs::create_dir_all(&round.out_dir);
            let _ = std::fs::write(round.out_dir.join("RERUN"), format!("{rerun}\n"));
            Some(round.out_dir.clone())
        };
        let result = Round {
            round: number,
            seed,
            nemesis: round.nemesis.clone(),
            passed,
            summary,
            kept,
            rerun,
        };
        let line = serde_json::to_string(&result).map_err(|e| RunError::Setup(e.to_string()))?;
        writeln!(log, "{line}").map_err(|source| RunError::Io {
            what: format!("writing {}", log_path.display()),
            source,
        })?;
        eprintln!(
            "coraft-chaos: soak round {number} (seed {seed}, {}): {}",
            kinds_list(&result.nemesis),
            if passed {
                "passed".to_string()
            } else {
                format!("FAILED; kept in {}; re-run: {}", round.out_dir.display(), result.rerun)
            }
        );
        rounds.push(result);
    }
    Ok(rounds)
}

/// `kill-leader,stop-node`, or `none`.
pub fn kinds_list(kinds: &[FaultKind]) -> String {
    if kinds.is_empty() {
        "none".to_string()
    } else {
        kinds.iter().map(|k| k.name()).collect::<Vec<_>>().join(",")
    }
}

/// The `coraft-chaos` command that re-runs `options` (same seed, kinds,
/// size and duration).
pub fn rerun_command(options: &RunOptions) -> String {
    format!(
        "coraft-chaos --seed {} --duration {} --nodes {} --clients {} --nemesis {} --out {}",
        options.seed,
        options.duration.as_secs(),
        options.nodes,
        options.clients,
        kinds_list(&options.nemesis),
        options.out_dir.display()
    )
}
