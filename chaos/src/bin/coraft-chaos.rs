//! `coraft-chaos`: one Jepsen-style run against real `coraft-node`
//! processes (`docs/reliability.md`).
//!
//! ```text
//! coraft-chaos [--seed N] [--duration SECONDS] [--nodes 3|5] [--clients N]
//!              [--nemesis kill,stop,...] [--out DIR] [--node-bin PATH] [--keep-data] [--json]
//!              [--soak DURATION [--rounds N]]
//! coraft-chaos campaign [--runs-per-kind N] [--duration SECONDS] [--kinds LIST|all]
//!              [--nodes 3,5] [--clients N] [--seed N] [--out DIR] [--node-bin PATH]
//!              [--time-budget DURATION] [--json]
//! ```
//! Exits 0 if every key's history is linearizable, 1 on a violation or a
//! key too large to check, 2 if the run itself failed. With `--soak` it runs
//! rounds of `--duration` each, with fault kinds drawn from `--nemesis`,
//! until DURATION (`90s`, `30m`, `8h`, or seconds) is up
//! (`coraft_chaos::soak`); it exits 1 if a round failed. `campaign` runs
//! every kind of `--kinds` (default: every kind; without root, every kind
//! but the partitions) `--runs-per-kind` times alone, on 3 and 5 nodes in
//! turn, and prints one table of the figures per kind
//! (`coraft_chaos::campaign`); it exits 1 if a run failed.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use coraft_chaos::nemesis::FaultKind;
use coraft_chaos::run::{run, RunOptions};

const USAGE: &str = "usage: coraft-chaos [--seed N] [--duration SECONDS] [--nodes 3|5] [--clients N] \
[--nemesis kill,stop,partition,proxy|kill-leader,kill-node,kill-all,stop-leader,stop-node,partition-halves,partition-leader,partition-bridge,partition-ring,partition-one-way,slow-links,snapshot-install,proxy-delay,proxy-reorder,proxy-lossy,transfer,membership,storage|none] [--out DIR] [--node-bin PATH] [--keep-data] [--json] [--soak DURATION [--rounds N]]
       coraft-chaos campaign [--runs-per-kind N] [--duration SECONDS] [--kinds LIST|all] [--nodes 3,5] [--clients N] \
[--seed N] [--out DIR] [--node-bin PATH] [--time-budget DURATION] [--json]";

fn main() {
    match main_result() {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(error) => {
            eprintln!("coraft-chaos: {error:#}");
            std::process::exit(2);
        }
    }
}

extern "C" fn on_interrupt(_signal: libc::c_int) {
    coraft_chaos::nemesis::INTERRUPTED.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// SIGINT and SIGTERM end the run early but normally: the nemesis heals,
/// the network it made is torn down, the history so far is checked.
fn install_interrupt_handler() {
    let handler: extern "C" fn(libc::c_int) = on_interrupt;
    // SAFETY: the handler only stores to an atomic (async-signal-safe).
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
    }
}

fn value<T: std::str::FromStr>(args: &mut impl Iterator<Item = String>, flag: &str) -> Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    let text = args.next().with_context(|| format!("{flag} needs a value"))?;
    text.parse().with_context(|| format!("{flag} `{text}`"))
}

/// `90s`, `30m`, `8h` or plain seconds (`flag` names the option in errors).
fn parse_duration(text: &str, flag: &str) -> Result<Duration> {
    let (number, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => text.split_at(at),
        None => (text, "s"),
    };
    let number: u64 = number
        .parse()
        .with_context(|| format!("{flag} `{text}`: expected a number of seconds, or 90s, 30m, 8h"))?;
    let seconds = match unit {
        "s" => number,
        "m" => number * 60,
        "h" => number * 3_600,
        _ => bail!("{flag} `{text}`: unknown unit `{unit}` (s, m or h)"),
    };
    Ok(Duration::from_secs(seconds))
}

/// The `coraft-node` next to this executable, or `given`; it must exist.
fn node_bin(given: Option<PathBuf>) -> Result<PathBuf> {
    let node_bin = match given {
        Some(path) => path,
        None => {
            let exe = std::env::current_exe().context("finding this executable")?;
            exe.with_file_name("coraft-node")
        }
    };
    if !node_bin.is_file() {
        bail!(
            "no coraft-node at {}: build it (cargo build -p coraft --bin coraft-node) or pass --node-bin",
            node_bin.display()
        );
    }
    Ok(node_bin)
}

fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}

/// `coraft-chaos campaign ...`.
fn campaign_main(mut args: impl Iterator<Item = String>) -> Result<bool> {
    let mut runs_per_kind = 3usize;
    let mut duration_s = 20u64;
    let mut kinds = None;
    let mut node_counts = vec![3usize, 5];
    let mut clients = 5usize;
    let mut seed = None;
    let mut out = None;
    let mut given_node_bin = None;
    let mut time_budget = None;
    let mut json = false;
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--runs-per-kind" => runs_per_kind = value(&mut args, "--runs-per-kind")?,
            "--duration" => duration_s = value(&mut args, "--duration")?,
            "--kinds" => {
                let text: String = value(&mut args, "--kinds")?;
                kinds = Some(if text == "all" {
                    FaultKind::ALL.to_vec()
                } else {
                    FaultKind::parse_list(&text).map_err(|e| anyhow::anyhow!("--kinds: {e}"))?
                });
            }
            "--nodes" => {
                let text: String = value(&mut args, "--nodes")?;
                node_counts = text
                    .split(',')
                    .map(|n| match n.trim().parse::<usize>() {
                        Ok(n @ (3 | 5)) => Ok(n),
                        _ => Err(anyhow::anyhow!(
                            "--nodes `{text}`: a list of 3 and 5 (the suite runs 3 or 5 nodes)"
                        )),
                    })
                    .collect::<Result<_>>()?;
            }
            "--clients" => clients = value(&mut args, "--clients")?,
            "--seed" => seed = Some(value(&mut args, "--seed")?),
            "--out" => out = Some(PathBuf::from(value::<String>(&mut args, "--out")?)),
            "--node-bin" => given_node_bin = Some(PathBuf::from(value::<String>(&mut args, "--node-bin")?)),
            "--time-budget" => {
                time_budget = Some(parse_duration(
                    &value::<String>(&mut args, "--time-budget")?,
                    "--time-budget",
                )?)
            }
            "--json" => json = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(true);
            }
            other => bail!("campaign: unknown argument `{other}`\n{USAGE}"),
        }
    }
    if runs_per_kind == 0 {
        bail!("--runs-per-kind must be at least 1");
    }
    if clients == 0 {
        bail!("--clients must be at least 1");
    }
    let kinds = kinds.unwrap_or_else(|| {
        FaultKind::ALL
            .iter()
            .copied()
            .filter(|k| root || !k.is_partition())
            .collect()
    });
    if kinds.is_empty() {
        bail!("--kinds: no fault kind to run");
    }
    if !root {
        if let Some(kind) = kinds.iter().find(|k| k.is_partition()) {
            bail!("--kinds: `{}` needs root (network namespaces)", kind.name());
        }
    }
    let seed = seed.unwrap_or_else(clock_seed);
    let out = out.unwrap_or_else(|| PathBuf::from(format!("coraft-chaos-campaign-{seed}")));
    let mut base = RunOptions::new(node_bin(given_node_bin)?, out, seed);
    base.duration = Duration::from_secs(duration_s);
    base.clients = clients;
    install_interrupt_handler();
    eprintln!(
        "coraft-chaos: campaign seed {seed}: {} kinds x {runs_per_kind} runs of {duration_s} s, nodes {:?}, in {}",
        kinds.len(),
        node_counts,
        base.out_dir.display()
    );
    let campaign = coraft_chaos::campaign::campaign(&coraft_chaos::campaign::CampaignOptions {
        base,
        kinds,
        runs_per_kind,
        node_counts,
        time_budget,
    })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&campaign)?);
    } else {
        print!("{}", campaign.table());
    }
    Ok(campaign.failed().is_empty())
}

fn main_result() -> Result<bool> {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("campaign") {
        args.next();
        return campaign_main(args);
    }
    let mut seed = None;
    let mut duration_s = 30u64;
    let mut nodes = 3usize;
    let mut clients = 5usize;
    // Partitions need root: they are asked for by name.
    let mut nemesis: Vec<FaultKind> = FaultKind::ALL
        .iter()
        .copied()
        .filter(|k| !k.is_partition() && !matches!(k, FaultKind::SnapshotInstall | FaultKind::Storage))
        .collect();
    let mut out = None;
    let mut given_node_bin = None;
    let mut keep_data = false;
    let mut json = false;
    let mut soak = None;
    let mut rounds = None;
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--seed" => seed = Some(value(&mut args, "--seed")?),
            "--duration" => duration_s = value(&mut args, "--duration")?,
            "--nodes" => nodes = value(&mut args, "--nodes")?,
            "--clients" => clients = value(&mut args, "--clients")?,
            "--nemesis" => {
                let text: String = value(&mut args, "--nemesis")?;
                nemesis = FaultKind::parse_list(&text).map_err(|e| anyhow::anyhow!("--nemesis: {e}"))?;
            }
            "--out" => out = Some(PathBuf::from(value::<String>(&mut args, "--out")?)),
            "--node-bin" => given_node_bin = Some(PathBuf::from(value::<String>(&mut args, "--node-bin")?)),
            "--keep-data" => keep_data = true,
            "--json" => json = true,
            "--soak" => soak = Some(parse_duration(&value::<String>(&mut args, "--soak")?, "--soak")?),
            "--rounds" => rounds = Some(value::<usize>(&mut args, "--rounds")?),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(true);
            }
            other => bail!("unknown argument `{other}`\n{USAGE}"),
        }
    }
    if nodes != 3 && nodes != 5 {
        bail!("--nodes {nodes}: the suite runs 3 or 5 nodes");
    }
    if rounds.is_some() && soak.is_none() {
        bail!("--rounds needs --soak");
    }
    if clients == 0 {
        bail!("--clients must be at least 1");
    }
    let seed = seed.unwrap_or_else(clock_seed);
    let node_bin = node_bin(given_node_bin)?;
    let out = out.unwrap_or_else(|| {
        PathBuf::from(if soak.is_some() {
            format!("coraft-chaos-soak-{seed}")
        } else {
            format!("coraft-chaos-{seed}")
        })
    });
    let mut options = RunOptions::new(node_bin, out, seed);
    options.duration = Duration::from_secs(duration_s);
    options.nodes = nodes;
    options.clients = clients;
    options.nemesis = nemesis;
    options.keep_data = keep_data;
    install_interrupt_handler();
    if let Some(duration) = soak {
        let rounds = coraft_chaos::soak::soak(&coraft_chaos::soak::SoakOptions {
            round: options,
            duration,
            rounds_max: rounds,
        })?;
        let failed: Vec<&coraft_chaos::soak::Round> = rounds.iter().filter(|r| !r.passed).collect();
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "seed": seed,
                    "rounds": rounds.len(),
                    "failed": failed.len(),
                    "failed_rounds": failed,
                }))?
            );
        } else {
            println!("soak seed {seed}: {} rounds, {} failed", rounds.len(), failed.len());
            for round in &failed {
                println!(
                    "  round {} FAILED: kept in {}; re-run: {}",
                    round.round,
                    round.kept.as_ref().map_or("?".into(), |p| p.display().to_string()),
                    round.rerun
                );
            }
        }
        return Ok(failed.is_empty());
    }
    let report = run(&options)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report.summary_json())?);
    } else {
        print!("{}", report.summary());
    }
    if !report.passed() {
        eprintln!(
            "coraft-chaos: FAILED; re-run with: {}",
            coraft_chaos::soak::rerun_command(&options)
        );
    }
    Ok(report.passed())
}
