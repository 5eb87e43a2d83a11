//! Reading CPUs, SMT siblings and NUMA nodes from a sysfs tree.
//!
//! Every file may be missing, empty or malformed (containers hide parts of
//! `/sys`; old kernels lack files): each failure falls back to something
//! safe and adds a note, and nothing here panics.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use super::{Cpu, NumaNode};
use crate::cpulist;

/// CPUs and NUMA nodes below `root` (a `/sys` lookalike). `affinity` is the
/// first fallback when the online list is unusable. Every CPU list here is
/// sorted, so membership is a binary search: a machine of thousands of CPUs
/// (or a corrupt file claiming as many) costs milliseconds, not minutes.
pub(super) fn read(root: &Path, affinity: Option<&[usize]>, notes: &mut Vec<String>) -> (Vec<Cpu>, Vec<NumaNode>) {
    let cpu_root = root.join("devices/system/cpu");
    let online = online_cpus(&cpu_root, affinity, notes);

    let mut missing_siblings = 0;
    let mut cpus: Vec<Cpu> = online
        .iter()
        .map(|&id| {
            let siblings = siblings(&cpu_root, id, &online).unwrap_or_else(|| {
                missing_siblings += 1;
                vec![id]
            });
            Cpu {
                id,
                siblings,
                numa_node: 0,
                allowed: true,
            }
        })
        .collect();
    if missing_siblings > 0 {
        notes.push(format!(
            "SMT siblings unreadable for {missing_siblings} CPU(s); assumed one thread per core for them"
        ));
    }

    let numa_nodes = numa_nodes(&root.join("devices/system/node"), &online, notes);
    for node in &numa_nodes {
        for cpu in cpus.iter_mut().filter(|cpu| node.cpus.binary_search(&cpu.id).is_ok()) {
            cpu.numa_node = node.id;
        }
    }
    (cpus, numa_nodes)
}

fn online_cpus(cpu_root: &Path, affinity: Option<&[usize]>, notes: &mut Vec<String>) -> Vec<usize> {
    let path = cpu_root.join("online");
    let problem = match fs::read_to_string(&path) {
        Ok(text) => match cpulist::parse(&text) {
            Ok(cpus) if !cpus.is_empty() => return cpus,
            Ok(_) => "it lists no CPU".to_owned(),
            Err(error) => error,
        },
        Err(error) => error.to_string(),
    };
    if let Some(affinity) = affinity.filter(|affinity| !affinity.is_empty()) {
        notes.push(format!(
            "{} unusable ({problem}); took the CPUs of the affinity mask",
            path.display()
        ));
        return affinity.to_vec();
    }
    let count = std::thread::available_parallelism().map_or(1, usize::from);
    notes.push(format!(
        "{} unusable ({problem}); assumed CPUs 0-{} from available_parallelism",
        path.display(),
        count - 1
    ));
    (0..count).collect()
}

/// The online siblings of `cpu`, itself included; `None` when unreadable.
fn siblings(cpu_root: &Path, cpu: usize, online: &[usize]) -> Option<Vec<usize>> {
    let topology = cpu_root.join(format!("cpu{cpu}/topology"));
    let text = fs::read_to_string(topology.join("thread_siblings_list"))
        .or_else(|_| fs::read_to_string(topology.join("core_cpus_list")))
        .ok()?;
    let mut siblings: Vec<usize> = cpulist::parse(&text)
        .ok()?
        .into_iter()
        .filter(|sibling| online.binary_search(sibling).is_ok())
        .collect();
    if !siblings.contains(&cpu) {
        siblings.push(cpu);
        siblings.sort_unstable();
    }
    Some(siblings)
}

fn numa_nodes(node_root: &Path, online: &[usize], notes: &mut Vec<String>) -> Vec<NumaNode> {
    let mut nodes: Vec<NumaNode> = Vec::new();
    let mut assigned = BTreeSet::new();
    let mut unreadable = Vec::new();
    if let Ok(entries) = fs::read_dir(node_root) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|name| name.strip_prefix("node"))
                .and_then(|id| id.parse::<usize>().ok())
            else {
                continue;
            };
            match fs::read_to_string(entry.path().join("cpulist"))
                .map_err(|error| error.to_string())
                .and_then(|text| cpulist::parse(&text))
            {
                Ok(cpus) => {
                    // A CPU listed by two nodes stays with the first.
                    let cpus = cpus
                        .into_iter()
                        .filter(|cpu| online.binary_search(cpu).is_ok() && assigned.insert(*cpu))
                        .collect();
                    nodes.push(NumaNode { id, cpus });
                }
                Err(error) => unreadable.push(format!("node{id}: {error}")),
            }
        }
    }
    if !unreadable.is_empty() {
        notes.push(format!("NUMA node CPU lists unreadable ({})", unreadable.join("; ")));
    }
    // Memory-only nodes have no CPU; they do not matter for placement.
    nodes.retain(|node| !node.cpus.is_empty());
    nodes.sort_by_key(|node| node.id);

    let orphans: Vec<usize> = online.iter().copied().filter(|cpu| !assigned.contains(cpu)).collect();
    if !orphans.is_empty() {
        if !nodes.is_empty() {
            notes.push(format!(
                "CPUs {} are in no NUMA node; counted in node {}",
                cpulist::format(&orphans),
                nodes[0].id
            ));
        }
        match nodes.first_mut() {
            Some(first) => {
                first.cpus.extend(orphans);
                first.cpus.sort_unstable();
            }
            None => nodes.push(NumaNode { id: 0, cpus: orphans }),
        }
    }
    nodes
}
