//! Parsing, validation and placement of node configs, against fake machines.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{FakeSysfs, THREE_NODES};
use coraft_tuning::limits::LEASE_DRIFT_MARGIN_TICKS_MIN;
use coraft_tuning::*;

fn parse(text: &str) -> NodeConfig {
    NodeConfig::from_toml_str(text).unwrap_or_else(|error| panic!("{error}"))
}

fn three_nodes() -> NodeConfig {
    parse(THREE_NODES)
}

/// A machine whose io_uring works, so only the config is judged.
fn machine(cpus: usize) -> Topology {
    let mut topology = Topology::flat(cpus);
    topology.io_uring = IoUring::Available { features: 0 };
    topology
}

fn problems(config: &NodeConfig, topology: &Topology) -> Vec<Problem> {
    config.review(topology).problems
}

fn kind_of<'a>(problems: &'a [Problem], field: &str) -> &'a ProblemKind {
    &problems
        .iter()
        .find(|problem| problem.field == field)
        .unwrap_or_else(|| panic!("no problem on {field} in {problems:#?}"))
        .kind
}

// ---- parsing ----

#[test]
fn every_field_of_the_documented_example_parses() {
    let config = parse(
        r#"
        cluster_id = 42
        node_id = 1
        listen = "127.0.0.1:7001"
        metrics_listen = "127.0.0.1:9101"
        [[peers]]
        id = 1
        address = "127.0.0.1:7001"
        [shards]
        count = 2
        cores = [0, 1]
        placement = "fixed"
        spin_before_park_us = 100
        [wal]
        dirs = ["/var/lib/coraft/wal0", "/var/lib/coraft/wal1"]
        segment_bytes = 67108864
        fsync = "never"
        [raft]
        tick_ms = 5
        election_timeout_ticks = 20
        heartbeat_interval_ticks = 3
        pre_vote = false
        check_quorum = true
        read_mode = "lease"
        clock_drift_margin_ticks = 4
        election_priority = 7
        [limits]
        batch_entries_max = 1024
        batch_bytes_max = 524288
        inflight_messages_max = 64
        inflight_bytes_max = 8388608
        uncommitted_bytes_max = 33554432
        outbound_queue_bytes_max = 8388608
        groups_max = 5000
        "#,
    );
    assert_eq!(config.cluster_id, 42);
    assert_eq!(config.raft.election_priority, 7);
    assert_eq!(config.metrics_listen, Some("127.0.0.1:9101".parse().unwrap()));
    assert_eq!(config.shards.cores, Some(CoreSelection::List(vec![0, 1])));
    assert_eq!(config.shards.spin_before_park(), Some(Duration::from_micros(100)));
    assert_eq!(config.wal.dirs.as_ref().unwrap()[1], Path::new("/var/lib/coraft/wal1"));
    assert_eq!(config.wal.fsync, FsyncPolicy::Never);
    assert_eq!(config.raft.read_mode, ReadMode::Lease);
    assert_eq!(config.raft.tick(), Duration::from_millis(5));
    assert_eq!(config.raft.lease_ticks(), 16);
    assert!(!config.raft.pre_vote);
    assert_eq!(config.limits.groups_max, 5000);
    assert_eq!(config.limits.outbound_queue_bytes_max, 8 << 20);
}

#[test]
fn omitted_sections_take_the_named_defaults() {
    let config = three_nodes();
    assert_eq!(config.shards.placement, PlacementPolicy::Fixed);
    assert_eq!(config.shards.spin_before_park(), None);
    assert_eq!(config.wal.segment_bytes, SEGMENT_BYTES_DEFAULT);
    assert_eq!(config.wal.fsync, FsyncPolicy::Always);
    assert_eq!(config.raft, RaftSettings::default());
    assert_eq!(config.raft.election_timeout_ticks, ELECTION_TIMEOUT_TICKS_DEFAULT);
    assert_eq!(config.limits, Limits::default());
    assert_eq!(config.metrics_listen, None);
}

#[test]
fn unknown_key_is_refused_naming_the_key_and_its_line() {
    let text = THREE_NODES.replace("count = 2", "count = 2\nshard_count = 3");
    let error = NodeConfig::from_toml_str(&text).unwrap_err();
    let TuningError::Parse { location, message, .. } = &error else {
        panic!("expected a parse error, got {error}");
    };
    assert!(message.contains("unknown field `shard_count`"), "{message}");
    let line = text.lines().position(|line| line.starts_with("shard_count")).unwrap() + 1;
    assert_eq!(location.unwrap().line, line);
    assert_eq!(location.unwrap().column, 1);
}

#[test]
fn unknown_top_level_key_is_refused_too() {
    let error = NodeConfig::from_toml_str(&format!("nodeid = 3\n{THREE_NODES}")).unwrap_err();
    assert!(error.to_string().contains("unknown field `nodeid`"), "{error}");
    assert!(error.to_string().starts_with("config:1:1:"), "{error}");
}

#[test]
fn syntax_error_names_line_and_column() {
    let text = "cluster_id = 42\nnode_id = = 1\n";
    let error = NodeConfig::from_toml_str(text).unwrap_err();
    let TuningError::Parse {
        location: Some(location),
        ..
    } = error
    else {
        panic!("expected a located parse error, got {error}");
    };
    assert_eq!(location.line, 2);
    assert_eq!(location.column, 11);
}

#[test]
fn wrong_types_and_bad_addresses_are_parse_errors() {
    let negative = THREE_NODES.replace("cores = [0, 1]", "cores = [0, -1]");
    assert!(NodeConfig::from_toml_str(&negative)
        .unwrap_err()
        .to_string()
        .contains("-1"));
    let word = THREE_NODES.replace("cores = [0, 1]", "cores = \"all\"");
    assert!(NodeConfig::from_toml_str(&word)
        .unwrap_err()
        .to_string()
        .contains("\"auto\""));
    let address = THREE_NODES.replace("127.0.0.1:7002", "localhost");
    assert!(NodeConfig::from_toml_str(&address).is_err());
    let policy = THREE_NODES.replace("cores = [0, 1]", "placement = \"pinned\"");
    assert!(NodeConfig::from_toml_str(&policy)
        .unwrap_err()
        .to_string()
        .contains("pinned"));
}

#[test]
fn missing_required_field_is_named() {
    let text = THREE_NODES.replace("node_id = 1\n", "");
    let error = NodeConfig::from_toml_str(&text).unwrap_err();
    assert!(error.to_string().contains("missing field `node_id`"), "{error}");
}

#[test]
fn cores_accept_auto_and_lists() {
    let auto = parse(&THREE_NODES.replace("cores = [0, 1]", "cores = \"auto\""));
    assert_eq!(auto.shards.cores, Some(CoreSelection::Auto));
    let empty = parse(&THREE_NODES.replace("cores = [0, 1]", "cores = []"));
    assert_eq!(empty.shards.cores, Some(CoreSelection::List(vec![])));
}

#[test]
fn from_file_reads_a_real_file_and_names_it_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.toml");
    std::fs::write(&path, THREE_NODES).unwrap();
    assert_eq!(NodeConfig::from_file(&path).unwrap(), three_nodes());

    std::fs::write(&path, "cluster_id = \n").unwrap();
    let error = NodeConfig::from_file(&path).unwrap_err();
    assert!(matches!(&error, TuningError::Parse { path: Some(p), .. } if p == &path));
    assert!(
        error.to_string().starts_with(&format!("{}:1:", path.display())),
        "{error}"
    );

    let missing = dir.path().join("absent.toml");
    let error = NodeConfig::from_file(&missing).unwrap_err();
    assert!(
        matches!(&error, TuningError::Read { path, .. } if path == &missing),
        "{error}"
    );
}

#[test]
fn a_config_survives_a_round_trip_through_toml() {
    let mut config = three_nodes();
    config.metrics_listen = Some("127.0.0.1:9101".parse().unwrap());
    config.raft.read_mode = ReadMode::Lease;
    assert_eq!(parse(&config.to_toml_string().unwrap()), config);
    let mut auto = NodeConfig::default();
    auto.shards.cores = Some(CoreSelection::Auto);
    assert_eq!(parse(&auto.to_toml_string().unwrap()), auto);
}

#[test]
fn a_non_utf8_path_is_an_error_not_a_panic_when_writing_toml() {
    use std::os::unix::ffi::OsStrExt;
    let mut config = NodeConfig::default();
    config.wal.dir = Some(PathBuf::from(std::ffi::OsStr::from_bytes(b"/data/\xff")));
    assert!(matches!(
        config.to_toml_string(),
        Err(TuningError::Unserializable { .. })
    ));
}

// ---- validation ----

#[test]
fn the_default_config_is_valid_on_a_one_cpu_machine() {
    let plan = NodeConfig::default().validate(&machine(1)).unwrap();
    assert_eq!(plan.shards().len(), 1);
    assert_eq!(plan.shards()[0].core, Some(0));
    assert_eq!(plan.shards()[0].wal_dir, Path::new(WAL_DIR_DEFAULT).join("shard-0"));
}

#[test]
fn a_nonexistent_core_is_rejected_naming_shards_cores_0() {
    let topology = FakeSysfs::machine(1, 2, 1).topology();
    let config = parse(&THREE_NODES.replace("cores = [0, 1]", "cores = [7, 1]"));
    let found = problems(&config, &topology);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].field, "shards.cores[0]");
    assert_eq!(
        found[0].kind,
        ProblemKind::CoreMissing {
            core: 7,
            cpu_count: 2,
            online: "0-1".to_owned()
        }
    );
    assert!(found[0]
        .to_string()
        .contains("core 7 does not exist on this 2-CPU machine"));
}

#[test]
fn two_shards_on_one_core_are_rejected() {
    let config = parse(&THREE_NODES.replace("cores = [0, 1]", "cores = [1, 1]"));
    let found = problems(&config, &machine(2));
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].field, "shards.cores[1]");
    assert_eq!(found[0].kind, ProblemKind::CoreShared { core: 1, shard: 0 });
}

#[test]
fn a_core_outside_the_affinity_mask_is_rejected() {
    let mut topology = machine(4);
    topology.restrict_to(&[0, 1]);
    let config = parse(&THREE_NODES.replace("cores = [0, 1]", "cores = [1, 3]"));
    let found = problems(&config, &topology);
    assert_eq!(
        kind_of(&found, "shards.cores[1]"),
        &ProblemKind::CoreNotAllowed {
            core: 3,
            allowed: "0-1".to_owned()
        }
    );
}

#[test]
fn the_core_list_must_have_one_core_per_shard() {
    let config = parse(&THREE_NODES.replace("cores = [0, 1]", "cores = [0]"));
    let found = problems(&config, &machine(2));
    assert_eq!(
        kind_of(&found, "shards.cores"),
        &ProblemKind::CoreCountMismatch { listed: 1, shards: 2 }
    );
}

#[test]
fn auto_cores_follow_the_suggestion_and_refuse_too_many_shards() {
    let topology = FakeSysfs::machine(1, 4, 2).topology();
    let mut config = parse(&THREE_NODES.replace("cores = [0, 1]", "cores = \"auto\""));
    config.shards.count = 3;
    let plan = config.validate(&topology).unwrap();
    let cores: Vec<Option<usize>> = plan.shards().iter().map(|shard| shard.core).collect();
    assert_eq!(
        cores,
        [Some(1), Some(2), Some(3)],
        "core 0 left to the OS, siblings 4-7 idle"
    );

    config.shards.cores = None;
    assert_eq!(
        config.validate(&topology).unwrap().shards()[0].core,
        Some(1),
        "omitted = auto"
    );

    config.shards.count = 9;
    let found = problems(&config, &topology);
    assert_eq!(
        kind_of(&found, "shards.cores"),
        &ProblemKind::AutoCannotPlace { shards: 9, cpus: 8 }
    );
}

#[test]
fn unbound_shards_take_no_cores() {
    let mut config = three_nodes();
    config.shards.placement = PlacementPolicy::Unbound;
    assert_eq!(
        kind_of(&problems(&config, &machine(2)), "shards.cores"),
        &ProblemKind::CoresWithUnbound
    );

    config.shards.cores = None;
    config.shards.count = 3;
    config.shards.spin_before_park_us = 50;
    let plan = config.validate(&machine(2)).unwrap();
    assert!(plan.shards().iter().all(|shard| shard.core.is_none()));
    let warnings: Vec<&WarningKind> = plan.warnings().iter().map(|warning| &warning.kind).collect();
    assert!(warnings.contains(&&WarningKind::Oversubscribed { shards: 3, cpus: 2 }));
    assert!(warnings.contains(&&WarningKind::SpinWhileUnbound {
        spin_before_park_us: 50
    }));
}

#[test]
fn heartbeat_must_be_below_the_election_timeout() {
    let mut config = three_nodes();
    config.raft.heartbeat_interval_ticks = 10;
    let found = problems(&config, &machine(2));
    assert_eq!(
        kind_of(&found, "raft.heartbeat_interval_ticks"),
        &ProblemKind::NotBelow {
            value: 10,
            other_field: "raft.election_timeout_ticks",
            other_value: 10
        }
    );
}

#[test]
fn lease_reads_need_check_quorum_and_a_lease_longer_than_a_heartbeat() {
    let mut config = three_nodes();
    config.raft.read_mode = ReadMode::Lease;
    assert!(
        problems(&config, &machine(2)).is_empty(),
        "the defaults allow lease reads"
    );
    config.raft.check_quorum = false;
    config.raft.clock_drift_margin_ticks = 8;
    let found = problems(&config, &machine(2));
    assert_eq!(kind_of(&found, "raft.read_mode"), &ProblemKind::LeaseNeedsCheckQuorum);
    assert_eq!(
        kind_of(&found, "raft.clock_drift_margin_ticks"),
        &ProblemKind::LeaseTooShort {
            lease_ticks: 2,
            heartbeat_interval_ticks: 2
        }
    );
}

#[test]
fn lease_reads_refuse_a_drift_margin_below_the_engines_least() {
    let mut config = three_nodes();
    config.raft.read_mode = ReadMode::Lease;
    config.raft.clock_drift_margin_ticks = LEASE_DRIFT_MARGIN_TICKS_MIN - 1;
    let found = problems(&config, &machine(2));
    assert_eq!(
        kind_of(&found, "raft.clock_drift_margin_ticks"),
        &ProblemKind::LeaseMarginTooSmall {
            value: 1,
            min: LEASE_DRIFT_MARGIN_TICKS_MIN
        }
    );
    let message = found
        .iter()
        .find(|problem| problem.field == "raft.clock_drift_margin_ticks")
        .unwrap()
        .to_string();
    assert!(message.contains("raft.clock_drift_margin_ticks"), "{message}");
    // The least margin is accepted, and any margin outside lease mode.
    config.raft.clock_drift_margin_ticks = LEASE_DRIFT_MARGIN_TICKS_MIN;
    assert!(problems(&config, &machine(2)).is_empty());
    config.raft.clock_drift_margin_ticks = 1;
    config.raft.read_mode = ReadMode::ReadIndex;
    assert!(problems(&config, &machine(2)).is_empty());
}

#[test]
fn the_node_must_be_among_its_peers() {
    let mut config = three_nodes();
    config.node_id = 4;
    let found = problems(&config, &machine(2));
    assert_eq!(kind_of(&found, "node_id"), &ProblemKind::NodeNotAPeer { node_id: 4 });
    config.node_id = 0;
    assert_eq!(
        kind_of(&problems(&config, &machine(2)), "node_id"),
        &ProblemKind::ReservedId
    );
    config.peers.clear();
    config.node_id = 1;
    assert_eq!(kind_of(&problems(&config, &machine(2)), "peers"), &ProblemKind::NoPeers);
}

#[test]
fn duplicate_peer_ids_and_addresses_are_rejected() {
    let mut config = three_nodes();
    config.peers[2].id = 2;
    config.peers[1].address = "127.0.0.1:7001".parse().unwrap();
    let found = problems(&config, &machine(2));
    assert_eq!(
        kind_of(&found, "peers[2].id"),
        &ProblemKind::DuplicatePeerId { id: 2, first_index: 1 }
    );
    let address: SocketAddr = "127.0.0.1:7001".parse().unwrap();
    assert_eq!(
        kind_of(&found, "peers[1].address"),
        &ProblemKind::DuplicatePeerAddress {
            address,
            first_index: 0
        }
    );
}

#[test]
fn undialable_peer_addresses_and_clashing_listeners_are_rejected() {
    let mut config = three_nodes();
    config.peers[1].address = "0.0.0.0:7002".parse().unwrap();
    config.peers[2].address = "127.0.0.1:0".parse().unwrap();
    config.metrics_listen = Some("0.0.0.0:7001".parse().unwrap());
    let found = problems(&config, &machine(2));
    assert!(matches!(
        kind_of(&found, "peers[1].address"),
        ProblemKind::Undialable { .. }
    ));
    assert!(matches!(
        kind_of(&found, "peers[2].address"),
        ProblemKind::Undialable { .. }
    ));
    assert!(matches!(
        kind_of(&found, "metrics_listen"),
        ProblemKind::ListenClash {
            other_field: "listen",
            ..
        }
    ));
    config.metrics_listen = Some("127.0.0.1:9101".parse().unwrap());
    assert!(!problems(&config, &machine(2))
        .iter()
        .any(|p| p.field == "metrics_listen"));
}

#[test]
fn wal_dirs_must_match_the_shard_count_and_not_repeat() {
    let mut config = three_nodes();
    config.wal.dir = None;
    config.wal.dirs = Some(vec![PathBuf::from("/data/a")]);
    assert_eq!(
        kind_of(&problems(&config, &machine(2)), "wal.dirs"),
        &ProblemKind::WalDirCountMismatch { listed: 1, shards: 2 }
    );
    config.wal.dirs = Some(vec![PathBuf::from("/data/a"), PathBuf::from("/data/a/")]);
    assert_eq!(
        kind_of(&problems(&config, &machine(2)), "wal.dirs[1]"),
        &ProblemKind::DuplicateWalDir { first_index: 0 }
    );
    config.wal.dirs = Some(vec![PathBuf::from("/data/a"), PathBuf::from("/data/b")]);
    let plan = config.validate(&machine(2)).unwrap();
    assert_eq!(plan.shards()[1].wal_dir, Path::new("/data/b"));
}

#[test]
fn the_wal_needs_exactly_one_of_dir_and_dirs() {
    let mut config = three_nodes();
    config.wal.dirs = Some(vec![PathBuf::from("/a"), PathBuf::from("/b")]);
    assert_eq!(
        kind_of(&problems(&config, &machine(2)), "wal"),
        &ProblemKind::WalDirAndDirs
    );
    config.wal = WalSettings::default();
    assert_eq!(kind_of(&problems(&config, &machine(2)), "wal"), &ProblemKind::NoWalDir);
    let omitted = THREE_NODES.replace("[wal]\ndir = \"/var/lib/coraft/wal\"\n", "");
    assert_eq!(
        kind_of(&problems(&parse(&omitted), &machine(2)), "wal"),
        &ProblemKind::NoWalDir
    );
}

#[test]
fn a_wal_path_that_is_a_file_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let mut config = three_nodes();
    config.wal.dir = Some(file.clone());
    assert_eq!(
        kind_of(&problems(&config, &machine(2)), "wal.dir"),
        &ProblemKind::NotADirectory { path: file }
    );
    config.wal.dir = Some(dir.path().to_path_buf());
    assert!(problems(&config, &machine(2)).is_empty());
}

#[test]
fn wal_zero_ahead_must_be_whole_blocks_and_zero_turns_it_off() {
    let mut config = three_nodes();
    config.wal.zero_ahead_bytes = 1000;
    assert_eq!(
        kind_of(&problems(&config, &machine(2)), "wal.zero_ahead_bytes"),
        &ProblemKind::NotMultiple {
            value: 1000,
            multiple: 4096
        }
    );
    config.wal.zero_ahead_bytes = 0;
    assert!(problems(&config, &machine(2)).is_empty());
    let parsed: coraft_tuning::NodeConfig = toml::from_str(&toml::to_string(&config).unwrap()).unwrap();
    assert_eq!(parsed.wal.zero_ahead_bytes, 0);
}

#[test]
fn wal_polled_io_is_off_by_default_and_round_trips() {
    let mut config = three_nodes();
    assert!(!config.wal.polled_io, "the WAL keeps off the polled ring by default");
    config.wal.polled_io = true;
    assert!(problems(&config, &machine(2)).is_empty());
    let parsed: coraft_tuning::NodeConfig = toml::from_str(&toml::to_string(&config).unwrap()).unwrap();
    assert!(parsed.wal.polled_io);
}

#[test]
fn wal_flushes_are_o_dsync_writes_by_default_bounded_and_round_trip() {
    let mut config = three_nodes();
    assert_eq!(
        config.wal.dsync_small_flush_bytes,
        512 << 10,
        "every flush is one O_DSYNC write by default"
    );
    assert_eq!(config.wal.wal_config().dsync_small_flush_bytes, 512 << 10);
    config.wal.dsync_small_flush_bytes = 0;
    assert!(problems(&config, &machine(2)).is_empty());
    assert_eq!(config.wal.wal_config().dsync_small_flush_bytes, 0, "the WAL gets it");
    let parsed: coraft_tuning::NodeConfig = toml::from_str(&toml::to_string(&config).unwrap()).unwrap();
    assert_eq!(parsed.wal.dsync_small_flush_bytes, 0);
    config.wal.dsync_small_flush_bytes = 65536;
    assert!(problems(&config, &machine(2)).is_empty());
    // From 512 KiB up every flush is an O_DSYNC write already.
    config.wal.dsync_small_flush_bytes = (512 << 10) + 1;
    let found = problems(&config, &machine(2));
    let kind = kind_of(&found, "wal.dsync_small_flush_bytes");
    assert!(
        matches!(kind, ProblemKind::WalRefuses { wal_field: "dsync_small_flush_bytes", wal_value, .. } if *wal_value == (512 << 10) + 1),
        "{kind:?}"
    );
    assert!(kind.to_string().contains("512 KiB"), "{kind}");
    let parsed = NodeConfig::from_toml_str("node_id = 1\n[wal]\ndir = \"/tmp/w\"\ndsync_small_flush_bytes = \"big\"\n");
    let error = parsed.expect_err("a string is refused").to_string();
    assert!(error.contains(":4:27") && error.contains("expected usize"), "{error}");
}

#[test]
fn wal_segments_must_be_aligned_and_hold_a_batch() {
    let mut config = three_nodes();
    config.wal.segment_bytes = (64 << 10) + 100;
    assert_eq!(
        kind_of(&problems(&config, &machine(2)), "wal.segment_bytes"),
        &ProblemKind::NotMultiple {
            value: (64 << 10) + 100,
            multiple: 4096
        }
    );
    config.wal.segment_bytes = 1 << 20;
    assert_eq!(
        kind_of(&problems(&config, &machine(2)), "limits.batch_bytes_max"),
        &ProblemKind::ExceedsSegment {
            value: 1 << 20,
            segment_room_bytes: (1 << 20) - 4096
        }
    );
}

#[test]
fn every_zero_limit_is_named() {
    let mut config = three_nodes();
    config.limits = Limits {
        batch_entries_max: 0,
        batch_bytes_max: 0,
        inflight_messages_max: 0,
        inflight_bytes_max: 0,
        uncommitted_bytes_max: 0,
        outbound_queue_bytes_max: 0,
        groups_max: 0,
    };
    let review = config.review(&machine(2));
    assert_eq!(
        review.problem_fields(),
        [
            "limits.batch_entries_max",
            "limits.batch_bytes_max",
            "limits.inflight_messages_max",
            "limits.groups_max",
            "limits.inflight_bytes_max",
            "limits.uncommitted_bytes_max",
            "limits.outbound_queue_bytes_max",
        ]
    );
    assert!(review
        .problems
        .iter()
        .all(|problem| matches!(problem.kind, ProblemKind::OutOfRange { value: 0, min: 1, .. })));
}

#[test]
fn windows_smaller_than_one_batch_are_rejected() {
    let mut config = three_nodes();
    config.limits.outbound_queue_bytes_max = 4096;
    assert_eq!(
        kind_of(&problems(&config, &machine(2)), "limits.outbound_queue_bytes_max"),
        &ProblemKind::BelowOther {
            value: 4096,
            other_field: "limits.batch_bytes_max",
            other_value: 1 << 20
        }
    );
    config.limits.outbound_queue_bytes_max = (8 << 20) + 1;
    assert!(matches!(
        kind_of(&problems(&config, &machine(2)), "limits.outbound_queue_bytes_max"),
        ProblemKind::OutOfRange { max, .. } if *max == limits::OUTBOUND_QUEUE_BYTES_LIMIT
    ));
}

#[test]
fn all_problems_are_reported_at_once() {
    let mut config = parse(&THREE_NODES.replace("cores = [0, 1]", "cores = [7, 7]"));
    config.node_id = 9;
    config.raft.heartbeat_interval_ticks = 50;
    config.limits.groups_max = 0;
    config.wal.dir = None;
    let error = config.validate(&machine(2)).unwrap_err();
    let TuningError::Invalid { problems } = &error else {
        panic!("expected Invalid, got {error}");
    };
    let fields: Vec<&str> = problems.iter().map(|problem| problem.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "node_id",
            "shards.cores[0]",
            "shards.cores[1]",
            "wal",
            "raft.heartbeat_interval_ticks",
            "limits.groups_max"
        ]
    );
    let text = error.to_string();
    assert!(text.starts_with("invalid config (6 problem(s)):"), "{text}");
    assert!(text.contains("  shards.cores[1]: core 7 does not exist"), "{text}");
}

#[test]
fn fsync_never_is_refused_naming_the_field() {
    let mut config = three_nodes();
    config.wal.fsync = FsyncPolicy::Never;
    assert_eq!(
        kind_of(&problems(&config, &machine(2)), "wal.fsync"),
        &ProblemKind::FsyncNeverUnsupported
    );
    let error = config.validate(&machine(2)).unwrap_err().to_string();
    assert!(error.contains("wal.fsync: \"never\" is not supported"), "{error}");
}

#[test]
fn a_segment_too_small_for_the_wals_record_bound_is_refused() {
    let mut config = three_nodes();
    config.wal.segment_bytes = 2 << 20;
    assert_eq!(
        kind_of(&problems(&config, &machine(2)), "wal.segment_bytes"),
        &ProblemKind::WalRefuses {
            wal_field: "record_bytes_max",
            wal_value: 4 << 20,
            reason: "must fit in one batch, and in one segment after a flush marker",
            minimum: Some((4 << 20) + 8192),
        }
    );
    config.wal.segment_bytes = (4 << 20) + 8192;
    assert!(problems(&config, &machine(2)).is_empty());
}

/// What `check` accepts the node's WAL accepts: every segment size and
/// zero-ahead distance validation passes opens with `coraft_wal::Config::validate`.
#[test]
fn every_wal_setting_validation_accepts_passes_the_wals_own_check() {
    let mut accepted = 0;
    for segment_bytes in (0..=(9u64 << 20)).step_by(4096).chain([1 << 30, (1 << 30) + 4096]) {
        for zero_ahead_bytes in [0, 4096, 4097, 64 << 20] {
            let mut config = three_nodes();
            config.limits.batch_bytes_max = 4096;
            config.limits.inflight_bytes_max = 4096;
            config.limits.uncommitted_bytes_max = 4096;
            config.limits.outbound_queue_bytes_max = 4096;
            config.wal.segment_bytes = segment_bytes;
            config.wal.zero_ahead_bytes = zero_ahead_bytes;
            let review = config.review(&machine(2));
            let wal = config.wal.wal_config().validate();
            if review.problems.is_empty() {
                accepted += 1;
                assert!(
                    wal.is_ok(),
                    "{segment_bytes}/{zero_ahead_bytes}: check accepts, the WAL refuses: {wal:?}"
                );
            } else {
                assert!(
                    review.problems.iter().all(|p| p.field.starts_with("wal.")),
                    "{review:?}"
                );
            }
        }
    }
    assert!(accepted > 0);
}

#[test]
fn shards_on_smt_siblings_or_across_numa_nodes_are_warned() {
    let topology = FakeSysfs::machine(2, 2, 2).topology();
    // CPUs: core c has threads c and c+4; node 0 = cores 0-1, node 1 = cores 2-3.
    let mut config = three_nodes();
    config.shards.count = 3;
    config.shards.cores = Some(CoreSelection::List(vec![1, 5, 2]));
    let review = config.review(&topology);
    assert!(review.problems.is_empty(), "{:#?}", review.problems);
    let warning = |field: &str| review.warnings.iter().find(|w| w.field == field).map(|w| &w.kind);
    assert_eq!(
        warning("shards.cores[1]"),
        Some(&WarningKind::SmtSiblings {
            core: 5,
            sibling: 1,
            shard: 0
        })
    );
    assert_eq!(
        warning("shards.cores"),
        Some(&WarningKind::SpansNumaNodes { nodes: vec![0, 1] })
    );
}

#[test]
fn core_zero_is_warned_only_on_machines_with_cores_to_spare() {
    let mut config = three_nodes();
    let on_core_zero = |topology: &Topology| {
        config
            .review(topology)
            .warnings
            .iter()
            .any(|w| matches!(w.kind, WarningKind::OsCoreUsed { .. }))
    };
    assert!(!on_core_zero(&machine(2)));
    assert!(on_core_zero(&machine(8)));
    config.shards.cores = Some(CoreSelection::List(vec![1, 2]));
    assert!(!config
        .review(&machine(8))
        .warnings
        .iter()
        .any(|w| matches!(w.kind, WarningKind::OsCoreUsed { .. })));
}

#[test]
fn a_machine_without_io_uring_cannot_run_a_node() {
    let mut topology = machine(2);
    topology.io_uring = IoUring::Unavailable {
        errno: 1,
        reason: "not permitted".to_owned(),
    };
    let found = problems(&three_nodes(), &topology);
    assert_eq!(
        kind_of(&found, "machine"),
        &ProblemKind::IoUringUnavailable {
            reason: "not permitted".to_owned()
        }
    );
}

#[test]
fn old_kernels_low_memlock_and_even_voter_counts_are_warned() {
    let mut topology = machine(2);
    topology.kernel_release = Some("5.4.0-150-generic".to_owned());
    topology.memlock = MemlockLimit::Bytes(64 << 10);
    let mut config = three_nodes();
    config.peers.pop();
    let kinds: Vec<WarningKind> = config.review(&topology).warnings.into_iter().map(|w| w.kind).collect();
    assert!(kinds.contains(&WarningKind::KernelTooOld {
        release: "5.4.0-150-generic".to_owned()
    }));
    assert!(kinds.contains(&WarningKind::MemlockLow { bytes: 64 << 10 }));
    assert!(kinds.contains(&WarningKind::EvenVoters { voters: 2 }));
}

// ---- placement ----

#[test]
fn the_plan_gives_each_shard_its_core_wal_dir_and_spin() {
    let mut config = three_nodes();
    config.shards.spin_before_park_us = 100;
    let plan = config.validate(&machine(2)).unwrap();
    assert_eq!(
        plan.shards(),
        [
            ShardPlacement {
                shard: 0,
                core: Some(0),
                wal_dir: PathBuf::from("/var/lib/coraft/wal/shard-0"),
                spin_before_park: Some(Duration::from_micros(100)),
            },
            ShardPlacement {
                shard: 1,
                core: Some(1),
                wal_dir: PathBuf::from("/var/lib/coraft/wal/shard-1"),
                spin_before_park: Some(Duration::from_micros(100)),
            },
        ]
    );
    assert_eq!(plan.config(), &config);
    let (config_back, shards, _) = plan.into_parts();
    assert_eq!(config_back, config);
    assert_eq!(shards.len(), 2);
}

#[test]
fn shard_wal_dir_prefers_the_per_shard_list() {
    let wal = WalSettings {
        dirs: Some(vec![PathBuf::from("/d0")]),
        ..WalSettings::default()
    };
    assert_eq!(shard_wal_dir(&wal, 0), Some(PathBuf::from("/d0")));
    assert_eq!(shard_wal_dir(&wal, 1), None);
    assert_eq!(shard_wal_dir(&WalSettings::default(), 0), None);
}

#[test]
fn snapshot_settings_have_defaults_and_parse() {
    let config = three_nodes();
    assert_eq!(config.snapshot, coraft_tuning::SnapshotSettings::default());
    assert_eq!(
        config.snapshot.after_log_bytes,
        coraft_tuning::SNAPSHOT_AFTER_LOG_BYTES_DEFAULT
    );
    let text = format!("{THREE_NODES}\n[snapshot]\nafter_entries = 1000\ninterval_ms = 0\nlog_tail_entries = 0\n");
    let parsed = parse(&text);
    assert_eq!(parsed.snapshot.after_entries, 1000);
    assert_eq!(parsed.snapshot.interval_ms, 0);
    assert_eq!(parsed.snapshot.log_tail_entries, 0);
    assert!(problems(&parsed, &machine(2)).is_empty());
    assert!(NodeConfig::from_toml_str(&format!("{THREE_NODES}\n[snapshot]\nafter_entrys = 5\n")).is_err());
}

#[test]
fn snapshot_triggers_are_off_or_in_range_and_the_tail_is_bounded() {
    let mut config = three_nodes();
    config.snapshot.after_entries = 10;
    config.snapshot.after_log_bytes = 100;
    config.snapshot.shard_after_log_bytes = 65535;
    config.snapshot.interval_ms = 5;
    config.snapshot.log_tail_entries = (1 << 24) + 1;
    config.snapshot.install_bytes_per_second = 1000;
    let found = problems(&config, &machine(2));
    assert_eq!(
        kind_of(&found, "snapshot.after_entries"),
        &ProblemKind::OffOrOutOfRange {
            value: 10,
            min: 64,
            max: u64::MAX
        }
    );
    assert_eq!(
        kind_of(&found, "snapshot.after_log_bytes"),
        &ProblemKind::OffOrOutOfRange {
            value: 100,
            min: 64 << 10,
            max: u64::MAX
        }
    );
    assert_eq!(
        kind_of(&found, "snapshot.shard_after_log_bytes"),
        &ProblemKind::OffOrOutOfRange {
            value: 65535,
            min: 64 << 10,
            max: u64::MAX
        }
    );
    assert_eq!(
        kind_of(&found, "snapshot.interval_ms"),
        &ProblemKind::OffOrOutOfRange {
            value: 5,
            min: 100,
            max: 7 * 24 * 3_600_000
        }
    );
    assert_eq!(
        kind_of(&found, "snapshot.log_tail_entries"),
        &ProblemKind::OutOfRange {
            value: (1 << 24) + 1,
            min: 0,
            max: 1 << 24
        }
    );
    assert_eq!(
        kind_of(&found, "snapshot.install_bytes_per_second"),
        &ProblemKind::OutOfRange {
            value: 1000,
            min: 1 << 20,
            max: 64 << 30
        }
    );
}

// ---- helper threads ----

#[test]
fn helper_threads_default_to_the_cpus_no_shard_is_pinned_to() {
    // Shards on 1 and 2 of 4 CPUs: the helpers get 0 and 3.
    let mut config = three_nodes();
    config.shards.cores = Some(CoreSelection::List(vec![2, 1]));
    let plan = config.validate(&machine(4)).unwrap();
    assert_eq!(plan.helper_cores(), [0, 3]);
    // Shards on every CPU, or unbound: the helpers may use them all.
    let plan = three_nodes().validate(&machine(2)).unwrap();
    assert_eq!(plan.helper_cores(), [0, 1]);
    let mut unbound = three_nodes();
    unbound.shards.placement = PlacementPolicy::Unbound;
    unbound.shards.cores = None;
    assert_eq!(unbound.validate(&machine(4)).unwrap().helper_cores(), [0, 1, 2, 3]);
    // "auto" written out is the default, and is not written back.
    let written = parse(&format!("{THREE_NODES}\n[helper_threads]\ncores = \"auto\"\n"));
    assert_eq!(written.validate(&machine(4)).unwrap().helper_cores(), [2, 3]);
    assert!(!written.to_toml_string().unwrap().contains("helper_threads"));
}

#[test]
fn helper_threads_run_on_the_listed_cpus_and_round_trip() {
    let config = parse(&format!("{THREE_NODES}\n[helper_threads]\ncores = [3, 2]\n"));
    assert_eq!(config.helper_threads.cores, Some(CoreSelection::List(vec![3, 2])));
    let plan = config.validate(&machine(4)).unwrap();
    assert_eq!(plan.helper_cores(), [2, 3]);
    assert!(
        plan.warnings().iter().all(|w| !w.field.starts_with("helper_threads")),
        "{:?}",
        plan.warnings()
    );
    assert_eq!(parse(&config.to_toml_string().unwrap()), config);
}

#[test]
fn a_helper_cpu_that_does_not_exist_is_refused_naming_the_field() {
    let config = parse(&format!("{THREE_NODES}\n[helper_threads]\ncores = [0, 7]\n"));
    let problems = problems(&config, &machine(2));
    assert_eq!(
        kind_of(&problems, "helper_threads.cores[1]"),
        &ProblemKind::CoreMissing {
            core: 7,
            cpu_count: 2,
            online: "0-1".into()
        }
    );
    let error = config.validate(&machine(2)).unwrap_err().to_string();
    assert!(
        error.contains("helper_threads.cores[1]: core 7 does not exist on this 2-CPU machine (online CPUs: 0-1)"),
        "{error}"
    );
}

#[test]
fn helper_cpus_outside_the_affinity_repeated_or_none_are_refused() {
    let mut topology = machine(4);
    topology.cpus[3].allowed = false;
    let config = parse(&format!("{THREE_NODES}\n[helper_threads]\ncores = [3, 2, 2]\n"));
    let problems = problems(&config, &topology);
    assert_eq!(
        kind_of(&problems, "helper_threads.cores[0]"),
        &ProblemKind::CoreNotAllowed {
            core: 3,
            allowed: "0-2".into()
        }
    );
    assert_eq!(
        kind_of(&problems, "helper_threads.cores[2]"),
        &ProblemKind::CoreListedTwice {
            core: 2,
            first_index: 1
        }
    );
    let empty = parse(&format!("{THREE_NODES}\n[helper_threads]\ncores = []\n"));
    let problems = self::problems(&empty, &machine(4));
    assert_eq!(kind_of(&problems, "helper_threads.cores"), &ProblemKind::NoCoresListed);
    // An unknown key in the section is a parse error naming it.
    let error = NodeConfig::from_toml_str(&format!("{THREE_NODES}\n[helper_threads]\ncpus = [0]\n"))
        .unwrap_err()
        .to_string();
    assert!(error.contains("unknown field `cpus`"), "{error}");
}

#[test]
fn helpers_on_a_shards_cpu_are_warned_only_when_a_cpu_has_no_shard() {
    // Shards on 0 and 1 of 4 CPUs, helpers on shard 1's CPU: warned.
    let config = parse(&format!("{THREE_NODES}\n[helper_threads]\ncores = [1]\n"));
    let review = config.review(&machine(4));
    assert!(review.problems.is_empty(), "{:?}", review.problems);
    let warning = review
        .warnings
        .iter()
        .find(|w| w.field == "helper_threads.cores[0]")
        .unwrap_or_else(|| panic!("{:?}", review.warnings));
    assert_eq!(
        warning.kind,
        WarningKind::HelperOnShardCore {
            core: 1,
            shard: 1,
            free: "2-3".into()
        }
    );
    // On 2 CPUs, both taken by shards, there is nowhere else to go.
    let review = config.review(&machine(2));
    assert!(
        review.warnings.iter().all(|w| w.field != "helper_threads.cores[0]"),
        "{:?}",
        review.warnings
    );
}
