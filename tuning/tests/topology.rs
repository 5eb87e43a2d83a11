//! Topology detection from fake sysfs trees in temp dirs, the real machine,
//! and the layout suggestion.

mod common;

use common::FakeSysfs;
use coraft_tuning::*;

fn cpu_ids(topology: &Topology) -> Vec<usize> {
    topology.online_cpus()
}

fn fallback_count() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

// ---- detection ----

#[test]
fn smt_siblings_and_numa_nodes_are_read_from_sysfs() {
    let topology = FakeSysfs::machine(2, 2, 2).topology();
    assert_eq!(cpu_ids(&topology), (0..8).collect::<Vec<_>>());
    assert_eq!(topology.cpu(1).unwrap().siblings, [1, 5]);
    assert_eq!(topology.cpu(5).unwrap().physical_core(), 1);
    assert_eq!(topology.cpu(6).unwrap().numa_node, 1);
    assert_eq!(
        topology.numa_nodes,
        [
            NumaNode {
                id: 0,
                cpus: vec![0, 1, 4, 5]
            },
            NumaNode {
                id: 1,
                cpus: vec![2, 3, 6, 7]
            }
        ]
    );
    assert!(topology.has_smt());
    let cores = topology.physical_cores();
    assert_eq!(cores.len(), 4);
    assert_eq!(
        cores[3],
        PhysicalCore {
            cpus: vec![3, 7],
            numa_node: 1
        }
    );
    assert!(topology.notes.is_empty(), "{:?}", topology.notes);
}

#[test]
fn a_missing_sysfs_falls_back_to_available_parallelism() {
    let topology = FakeSysfs::empty().topology();
    assert_eq!(cpu_ids(&topology), (0..fallback_count()).collect::<Vec<_>>());
    assert_eq!(topology.numa_nodes.len(), 1);
    assert!(topology.cpus.iter().all(|cpu| cpu.siblings == [cpu.id]));
    assert!(topology.notes.iter().any(|note| note.contains("available_parallelism")));
    assert!(topology
        .notes
        .iter()
        .any(|note| note.contains("SMT siblings unreadable")));
}

#[test]
fn garbage_sysfs_files_never_panic_and_fall_back() {
    for online in ["", "\n", "garbage", "3-1", "0-99999999", "0-3:1/2", "\u{0}\u{1}"] {
        let sysfs = FakeSysfs::empty();
        sysfs.write("devices/system/cpu/online", online);
        let topology = sysfs.topology();
        assert_eq!(topology.cpus.len(), fallback_count(), "online = {online:?}");
        assert!(!topology.notes.is_empty(), "online = {online:?} must leave a note");
    }
}

#[test]
fn a_huge_cpu_list_is_read_without_quadratic_blowup() {
    // The largest list the parser accepts, with no sibling or node files.
    let sysfs = FakeSysfs::empty();
    sysfs.write("devices/system/cpu/online", "0-65535\n");
    let topology = sysfs.topology();
    assert_eq!(topology.cpus.len(), 65536);
    assert_eq!(topology.physical_cores().len(), 65536);
    assert_eq!(topology.numa_nodes[0].cpus.len(), 65536);
    assert_eq!(topology.suggest(None).shard_count, limits::SHARD_COUNT_LIMIT);
}

#[test]
fn unreadable_siblings_and_numa_lists_degrade_per_cpu() {
    let sysfs = FakeSysfs::empty();
    sysfs
        .write("devices/system/cpu/online", "0-3\n")
        .write("devices/system/cpu/cpu0/topology/thread_siblings_list", "0,2\n")
        .write("devices/system/cpu/cpu2/topology/thread_siblings_list", "0,2\n")
        .write("devices/system/cpu/cpu1/topology/thread_siblings_list", "nonsense")
        // cpu3 has no topology directory at all; core_cpus_list is the newer name.
        .write("devices/system/cpu/cpu3/topology/core_cpus_list", "3\n")
        .write("devices/system/node/node0/cpulist", "0-1\n")
        .write("devices/system/node/node1/cpulist", "###")
        .write("devices/system/node/node2/cpulist", "\n")
        .write("devices/system/node/possible", "0-2\n");
    let topology = sysfs.topology();
    assert_eq!(topology.cpu(0).unwrap().siblings, [0, 2]);
    assert_eq!(topology.cpu(1).unwrap().siblings, [1]);
    assert_eq!(topology.cpu(3).unwrap().siblings, [3]);
    assert_eq!(topology.physical_cores().len(), 3);
    // node1 unreadable, node2 memory-only: CPUs 2 and 3 land in node 0.
    assert_eq!(
        topology.numa_nodes,
        [NumaNode {
            id: 0,
            cpus: vec![0, 1, 2, 3]
        }]
    );
    let notes = topology.notes.join("\n");
    assert!(notes.contains("SMT siblings unreadable for 1 CPU"), "{notes}");
    assert!(notes.contains("node1"), "{notes}");
    assert!(notes.contains("in no NUMA node"), "{notes}");
}

#[test]
fn offline_cpus_are_left_out_of_siblings_and_nodes() {
    let sysfs = FakeSysfs::machine(1, 4, 2);
    sysfs.write("devices/system/cpu/online", "0-3,5\n");
    let topology = sysfs.topology();
    assert_eq!(cpu_ids(&topology), [0, 1, 2, 3, 5]);
    assert_eq!(topology.cpu(0).unwrap().siblings, [0]);
    assert_eq!(topology.cpu(1).unwrap().siblings, [1, 5]);
    assert_eq!(topology.numa_nodes[0].cpus, [0, 1, 2, 3, 5]);
    assert!(topology.cpu(4).is_none());
}

#[test]
fn the_affinity_mask_limits_the_allowed_cpus() {
    let mut topology = FakeSysfs::machine(1, 4, 1).topology();
    topology.restrict_to(&[2, 3, 9]);
    assert_eq!(topology.allowed_cpus(), [2, 3]);
    assert_eq!(topology.physical_cores().len(), 2);
    // A mask with no online CPU is ignored rather than leaving none usable.
    topology.restrict_to(&[40]);
    assert_eq!(topology.allowed_cpus(), [2, 3]);
    assert!(topology.notes.iter().any(|note| note.contains("shares no CPU")));
}

#[test]
fn detecting_this_machine_finds_usable_cpus() {
    let topology = Topology::detect();
    let allowed = topology.allowed_cpus();
    assert!(!allowed.is_empty());
    assert!(allowed.len() >= fallback_count().min(topology.cpus.len()));
    assert!(allowed.iter().all(|cpu| topology.cpu(*cpu).is_some()));
    assert!(topology.kernel_release.is_some());
    assert!(!matches!(topology.memlock, MemlockLimit::Unknown));
    let described = topology.to_string();
    assert!(described.contains("io_uring:"), "{described}");
    // io_uring may be off in a sandbox; the probe must still give an answer with a reason.
    match &topology.io_uring {
        IoUring::Available { .. } => {}
        IoUring::Unavailable { reason, .. } | IoUring::Unknown { reason } => assert!(!reason.is_empty()),
    }
}

#[test]
fn the_io_uring_probe_can_run_repeatedly_without_leaking() {
    let first = probe_io_uring();
    for _ in 0..200 {
        assert_eq!(probe_io_uring(), first);
    }
}

#[test]
fn the_kernel_version_is_parsed_from_the_release() {
    let mut topology = Topology::flat(1);
    topology.kernel_release = Some("6.18.44-fc-v782".to_owned());
    assert_eq!(topology.kernel_version(), Some((6, 18)));
    topology.kernel_release = Some("weird".to_owned());
    assert_eq!(topology.kernel_version(), None);
}

// ---- suggestion ----

#[test]
fn suggestion_takes_one_physical_core_each_and_leaves_core_zero_on_big_machines() {
    let topology = FakeSysfs::machine(1, 8, 2).topology();
    let suggestion = topology.suggest(None);
    assert_eq!(suggestion.shard_count, 7);
    assert_eq!(suggestion.cores, Some(vec![1, 2, 3, 4, 5, 6, 7]));
    let text = suggestion.explanation.join("\n");
    assert!(text.contains("core 0 left to the OS"), "{text}");
    assert!(text.contains("SMT siblings left idle"), "{text}");
}

#[test]
fn suggestion_uses_core_zero_on_small_machines() {
    let suggestion = FakeSysfs::machine(1, 2, 1).topology().suggest(None);
    assert_eq!(suggestion.cores, Some(vec![0, 1]));
    assert!(suggestion
        .explanation
        .join("\n")
        .contains("fewer than 4 physical cores it is not set aside"));
}

#[test]
fn suggestion_stays_in_one_numa_node_when_the_shards_fit() {
    // Two nodes of four cores: node 0 loses core 0 to the OS, so node 1 is roomier.
    let topology = FakeSysfs::machine(2, 4, 2).topology();
    let suggestion = topology.suggest(Some(3));
    assert_eq!(suggestion.cores, Some(vec![4, 5, 6]));
    assert!(suggestion.explanation.join("\n").contains("all shards in NUMA node 1"));
    let two = topology.suggest(Some(2)).cores.unwrap();
    assert!(two.iter().all(|cpu| topology.cpu(*cpu).unwrap().numa_node == 1));
}

#[test]
fn suggestion_spans_numa_nodes_only_when_needed() {
    let topology = FakeSysfs::machine(2, 4, 2).topology();
    let suggestion = topology.suggest(Some(6));
    let cores = suggestion.cores.clone().unwrap();
    // Node 1 (four usable cores) fills first, then node 0 without core 0.
    assert_eq!(cores, [1, 2, 4, 5, 6, 7]);
    assert!(suggestion.explanation.join("\n").contains("span NUMA nodes [0, 1]"));
}

#[test]
fn suggestion_gives_core_zero_back_before_doubling_up_on_siblings() {
    let topology = FakeSysfs::machine(1, 4, 2).topology();
    assert_eq!(topology.suggest(Some(4)).cores, Some(vec![0, 1, 2, 3]));
    // Beyond the physical cores, siblings are used and core 0 is left to the OS again.
    let smt = topology.suggest(Some(6));
    assert_eq!(smt.cores, Some(vec![1, 2, 3, 5, 6, 7]));
    assert!(smt.explanation.join("\n").contains("6 shard(s) share a physical core"));
    let all = topology.suggest(Some(8));
    assert_eq!(all.cores, Some((0..8).collect()));
}

#[test]
fn suggestion_refuses_to_pin_more_shards_than_cpus() {
    let suggestion = FakeSysfs::machine(1, 2, 1).topology().suggest(Some(3));
    assert_eq!(suggestion.cores, None);
    assert!(suggestion.to_toml().contains("placement = \"unbound\""));
    assert_eq!(Topology::flat(2).suggest(Some(0)).cores, None);
}

#[test]
fn suggestion_respects_the_affinity_mask() {
    let mut topology = FakeSysfs::machine(1, 8, 1).topology();
    topology.restrict_to(&[4, 5, 6]);
    let suggestion = topology.suggest(None);
    assert_eq!(suggestion.cores, Some(vec![4, 5, 6]));
}

#[test]
fn a_suggested_layout_validates_as_a_config() {
    let topology = FakeSysfs::machine(2, 4, 2).topology();
    let suggestion = topology.suggest(None);
    let text = format!(
        "cluster_id = 1\nnode_id = 1\nlisten = \"127.0.0.1:7001\"\npeers = [{{ id = 1, address = \"127.0.0.1:7001\" }}]\n{}[wal]\ndir = \"/tmp/w\"\n",
        suggestion.to_toml()
    );
    let config = NodeConfig::from_toml_str(&text).unwrap();
    let review = config.review(&topology);
    assert!(review.problems.is_empty(), "{:#?}", review.problems);
    assert_eq!(
        config.shards.cores,
        Some(CoreSelection::List(suggestion.cores.unwrap()))
    );
}

// ---- example ----

#[test]
fn the_example_config_passes_validation_on_any_machine() {
    let machines = [
        Topology::flat(1),
        Topology::flat(2),
        Topology::flat(300),
        FakeSysfs::machine(2, 4, 2).topology(),
        Topology::detect(),
    ];
    for topology in machines {
        let text = example_config(&topology);
        let config = NodeConfig::from_toml_str(&text).unwrap_or_else(|error| panic!("{error}\n{text}"));
        let review = config.review(&topology);
        let real_problems: Vec<&Problem> = review.problems.iter().filter(|p| p.field != "machine").collect();
        assert!(real_problems.is_empty(), "{real_problems:#?}\n{text}");
        assert_eq!(config.shards.placement, PlacementPolicy::Unbound);
        assert_eq!(config.shards.count, topology.suggest(None).shard_count);
        // The example documents the defaults: it must not drift from them.
        assert_eq!(config.raft, RaftSettings::default());
        assert_eq!(config.limits, Limits::default());
        assert_eq!(config.wal.segment_bytes, SEGMENT_BYTES_DEFAULT);
    }
}
