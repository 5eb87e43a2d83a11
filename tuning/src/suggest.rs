//! Layout advice: which CPUs a given number of shards should pin to.
//!
//! The rules, in order: one shard per physical core (SMT siblings share
//! caches and execution units, so two busy shards on one core slow each
//! other); all shards in one NUMA node when they fit (cross-shard messages and
//! shared NIC queues stay local); CPU 0's core left to the OS and its
//! interrupts when the machine has [`OS_RESERVED_CORE_FROM_PHYSICAL_CORES`]
//! physical cores or more. Each rule gives way, with a line saying so, when
//! the shards do not fit otherwise. `cores = "auto"` in a config resolves
//! through the same function.

use std::fmt;

use crate::cpulist;
use crate::limits::{OS_RESERVED_CORE_FROM_PHYSICAL_CORES, SHARD_COUNT_LIMIT};
use crate::topology::{PhysicalCore, Topology};

/// A suggested `[shards]` layout with its reasons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suggestion {
    /// Shards to run.
    pub shard_count: usize,
    /// CPU of each shard, in shard order; `None` when they cannot all be
    /// pinned (more shards than usable CPUs): run them unbound.
    pub cores: Option<Vec<usize>>,
    /// One line per decision, for people.
    pub explanation: Vec<String>,
}

impl Topology {
    /// Suggests where `shards` shards should run; `None` asks for the
    /// recommended count: one per usable physical core (CPU 0's core left out
    /// on larger machines), capped at [`SHARD_COUNT_LIMIT`].
    pub fn suggest(&self, shards: Option<usize>) -> Suggestion {
        let all = self.physical_cores();
        let cpu_count: usize = all.iter().map(|core| core.cpus.len()).sum();
        let reserve_os = all.len() >= OS_RESERVED_CORE_FROM_PHYSICAL_CORES && all[0].cpus.contains(&0);
        let without_os: Vec<PhysicalCore> = all
            .iter()
            .filter(|core| !(reserve_os && core.cpus.contains(&0)))
            .cloned()
            .collect();

        let mut explanation = vec![format!(
            "this process may use {cpu_count} CPU(s) on {} physical core(s), {}, {} NUMA node(s)",
            all.len(),
            if self.has_smt() { "SMT on" } else { "no SMT" },
            self.numa_nodes.len()
        )];
        let shard_count = match shards {
            Some(count) => count,
            None => {
                let count = without_os.len().clamp(1, SHARD_COUNT_LIMIT);
                explanation.push(format!("{count} shard(s): one per usable physical core"));
                count
            }
        };
        if shard_count == 0 {
            explanation.push("a node needs at least one shard".to_owned());
            return Suggestion {
                shard_count,
                cores: None,
                explanation,
            };
        }

        // Doubling up on SMT siblings costs more than sharing core 0 with the
        // OS, so core 0 comes back before siblings are used.
        let mut attempts = Vec::new();
        for allow_smt in [false, true] {
            attempts.push((without_os.as_slice(), reserve_os, allow_smt));
            if reserve_os {
                attempts.push((all.as_slice(), false, allow_smt));
            }
        }
        for (pool, reserved, allow_smt) in attempts {
            if let Some((mut cores, lines)) = pick(pool, shard_count, self.has_smt(), allow_smt) {
                explanation.extend(core_zero_note(reserved, reserve_os, &cores, shard_count, all.len()));
                explanation.extend(lines);
                cores.sort_unstable();
                explanation.push(format!("pin to CPUs {}", cpulist::format(&cores)));
                return Suggestion {
                    shard_count,
                    cores: Some(cores),
                    explanation,
                };
            }
        }
        explanation.push(format!(
            "{shard_count} shard(s) exceed the {cpu_count} usable CPU(s): run them unbound (placement = \"unbound\") or lower the count"
        ));
        Suggestion {
            shard_count,
            cores: None,
            explanation,
        }
    }
}

/// Why core 0 is or is not used, when it matters.
fn core_zero_note(
    reserved: bool,
    reserve_os: bool,
    cores: &[usize],
    shard_count: usize,
    physical_cores: usize,
) -> Option<String> {
    if reserved {
        Some(format!(
            "core 0 left to the OS and interrupts ({physical_cores} physical cores ≥ {OS_RESERVED_CORE_FROM_PHYSICAL_CORES})"
        ))
    } else if reserve_os {
        Some(format!(
            "core 0 used: {shard_count} shard(s) do not fit on the other cores"
        ))
    } else if cores.contains(&0) {
        Some(format!(
            "core 0 used: with fewer than {OS_RESERVED_CORE_FROM_PHYSICAL_CORES} physical cores it is not set aside for the OS"
        ))
    } else {
        None
    }
}

/// Picks `count` CPUs from `cores` (several threads of a core only with
/// `allow_smt`), or `None` if there are too few.
fn pick(cores: &[PhysicalCore], count: usize, smt: bool, allow_smt: bool) -> Option<(Vec<usize>, Vec<String>)> {
    let one_per_core = if smt {
        "one shard per physical core, SMT siblings left idle"
    } else {
        "one shard per physical core"
    };
    // NUMA nodes by usable cores, most first; ties go to the lowest node.
    let mut nodes: Vec<(usize, Vec<&PhysicalCore>)> = Vec::new();
    for core in cores {
        match nodes.iter_mut().find(|(id, _)| *id == core.numa_node) {
            Some((_, members)) => members.push(core),
            None => nodes.push((core.numa_node, vec![core])),
        }
    }
    nodes.sort_by(|(a_id, a), (b_id, b)| b.len().cmp(&a.len()).then(a_id.cmp(b_id)));
    let mut lines = Vec::new();

    if let Some((node, members)) = nodes.first().filter(|(_, members)| members.len() >= count) {
        let picked = members.iter().take(count).map(|core| core.cpus[0]).collect();
        lines.push(one_per_core.to_owned());
        if nodes.len() > 1 {
            lines.push(format!("all shards in NUMA node {node}"));
        }
        return Some((picked, lines));
    }
    let ordered: Vec<&PhysicalCore> = nodes.iter().flat_map(|(_, members)| members.iter().copied()).collect();
    if count <= ordered.len() {
        let picked: Vec<&PhysicalCore> = ordered.into_iter().take(count).collect();
        let mut used: Vec<usize> = picked.iter().map(|core| core.numa_node).collect();
        used.sort_unstable();
        used.dedup();
        lines.push(one_per_core.to_owned());
        lines.push(format!(
            "shards span NUMA nodes {used:?}: no single node has {count} usable physical cores"
        ));
        return Some((picked.iter().map(|core| core.cpus[0]).collect(), lines));
    }
    let threads: usize = ordered.iter().map(|core| core.cpus.len()).sum();
    if !allow_smt || count > threads {
        return None;
    }
    // First threads of every core, then second threads, and so on.
    let mut picked = Vec::with_capacity(count);
    let mut depth = 0;
    while picked.len() < count {
        for core in &ordered {
            if let Some(&cpu) = core.cpus.get(depth) {
                if picked.len() < count {
                    picked.push(cpu);
                }
            }
        }
        depth += 1;
    }
    lines.push(format!(
        "{} shard(s) share a physical core with another shard through SMT: only {} physical core(s)",
        (2 * (count - ordered.len())).min(count),
        ordered.len()
    ));
    if nodes.len() > 1 {
        lines.push(format!("shards span all {} NUMA nodes", nodes.len()));
    }
    Some((picked, lines))
}

impl Suggestion {
    /// The `[shards]` section this suggests, as TOML.
    pub fn to_toml(&self) -> String {
        let mut toml = format!("[shards]\ncount = {}\n", self.shard_count);
        match &self.cores {
            Some(cores) => {
                let list: Vec<String> = cores.iter().map(ToString::to_string).collect();
                toml.push_str(&format!("cores = [{}]\nplacement = \"fixed\"\n", list.join(", ")));
            }
            None => toml.push_str("placement = \"unbound\"\n"),
        }
        toml
    }
}

impl fmt::Display for Suggestion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in &self.explanation {
            writeln!(f, "# {line}")?;
        }
        f.write_str(&self.to_toml())
    }
}
