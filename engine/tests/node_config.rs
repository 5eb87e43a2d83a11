//! A real `coraft-node` process and its TOML config: what `coraft-tune check`
//! accepts starts a node, what the engine would not honour is refused at
//! start-up naming the field, and the node's log lines reach stderr.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use coraft_tuning::{NodeConfig, Peer, PlacementPolicy};

/// A single-voter node's config, one unbound shard, WAL under `dir`,
/// changed by `edit`; returns its path.
fn write_config(dir: &Path, edit: impl FnOnce(&mut NodeConfig)) -> PathBuf {
    let listen = coraft::ports::free_loopback_addresses(1).unwrap()[0];
    let mut config = NodeConfig {
        cluster_id: 5,
        node_id: 7,
        listen,
        peers: vec![Peer { id: 7, address: listen }],
        ..NodeConfig::default()
    };
    config.shards.count = 1;
    config.shards.placement = PlacementPolicy::Unbound;
    config.wal.dir = Some(dir.join("wal"));
    edit(&mut config);
    let path = dir.join("node.toml");
    std::fs::write(&path, config.to_toml_string().unwrap()).unwrap();
    path
}

fn node(config: &Path, groups: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_coraft-node"));
    command.args(["--config", config.to_str().unwrap(), "--groups", groups]);
    command.env_remove("RUST_LOG");
    command
}

/// Runs a node that must refuse to start; returns its stderr.
fn refused(mut command: Command) -> String {
    let Output { status, stderr, .. } = command.output().expect("coraft-node runs");
    let stderr = String::from_utf8_lossy(&stderr).into_owned();
    assert!(!status.success(), "the node started: {stderr}");
    stderr
}

/// Kills the process when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a node and reads its stderr until the line saying it runs; returns
/// every line read. Fails if the node exits first.
fn started(mut command: Command) -> Vec<String> {
    let mut child = Running(command.stderr(Stdio::piped()).spawn().expect("coraft-node starts"));
    let stderr = child.0.stderr.take().unwrap();
    let mut lines = Vec::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap();
        let running = line.contains(" running ") && line.contains("listening on");
        lines.push(line);
        if running {
            // SAFETY: signalling our own child by its pid.
            unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
            let status = child.0.wait().unwrap();
            assert!(status.success(), "{status}: {lines:#?}");
            return lines;
        }
    }
    panic!("coraft-node exited before it ran: {lines:#?}");
}

#[test]
fn more_groups_than_limits_groups_max_are_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), |config| config.limits.groups_max = 2);
    let stderr = refused(node(&config, "3"));
    assert!(stderr.contains("--groups 3 exceeds limits.groups_max (2)"), "{stderr}");
    started(node(&config, "2"));
}

#[test]
fn fsync_never_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), |config| {
        config.wal.fsync = coraft_tuning::FsyncPolicy::Never
    });
    let stderr = refused(node(&config, "1"));
    assert!(stderr.contains("wal.fsync: \"never\" is not supported"), "{stderr}");
}

/// `coraft-tune check` and the node agree on segment sizes: the smallest the
/// check accepts starts a node; below it both refuse with the same reason.
#[test]
fn the_smallest_segment_check_accepts_starts_a_node() {
    use coraft_tuning::Topology;
    let dir = tempfile::tempdir().unwrap();
    let smallest = (4 << 20) + 8192;
    let config = write_config(dir.path(), |config| config.wal.segment_bytes = smallest);
    assert!(NodeConfig::from_file(&config)
        .unwrap()
        .review(&Topology::detect())
        .problems
        .is_empty());
    started(node(&config, "1"));

    let config = write_config(dir.path(), |config| config.wal.segment_bytes = smallest - 4096);
    let problems = NodeConfig::from_file(&config)
        .unwrap()
        .review(&Topology::detect())
        .problems;
    assert_eq!(problems.len(), 1, "{problems:?}");
    let stderr = refused(node(&config, "1"));
    assert!(stderr.contains(&problems[0].to_string()), "{stderr}");
    assert!(stderr.contains("wal.segment_bytes: the WAL refuses it"), "{stderr}");
}

#[test]
fn the_node_logs_to_stderr_with_its_id_at_the_configured_level() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), |_| {});
    let lines = started(node(&config, "1"));
    let startup = lines.iter().find(|l| l.contains(" running ")).unwrap();
    assert!(
        startup.contains(" INFO node{node=7}: coraft_node: node 7 of cluster 5 running"),
        "{lines:#?}"
    );
    assert!(!lines.iter().any(|l| l.contains(" DEBUG ")), "{lines:#?}");

    // RUST_LOG wins over the config's level.
    let mut command = node(&config, "1");
    command.env("RUST_LOG", "debug");
    let lines = started(command);
    let debug = lines
        .iter()
        .find(|l| l.contains(" DEBUG "))
        .unwrap_or_else(|| panic!("{lines:#?}"));
    assert!(
        debug.contains(" DEBUG node{node=7}: coraft_node: effective config of"),
        "{lines:#?}"
    );

    let config = write_config(dir.path(), |config| config.log.level = coraft_tuning::LogLevel::Debug);
    let lines = started(node(&config, "1"));
    assert!(lines.iter().any(|l| l.contains(" DEBUG node{node=7}: ")), "{lines:#?}");
}

/// An embedder calling `Node::start` gets the same bound as `coraft-node`:
/// more groups than `limits.groups_max` are refused before anything starts.
#[test]
fn an_embedded_node_with_more_groups_than_limits_groups_max_is_refused() {
    use coraft::api::Error;
    use coraft::raft::GroupId;
    use coraft::runtime::{Node, NodeOptions, StateMachineFactory};

    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), |config| config.limits.groups_max = 2);
    let config = NodeConfig::from_file(&path).unwrap();
    let plan = config.validate(&coraft_tuning::Topology::detect()).unwrap();
    let options = NodeOptions::from_plan(&plan, (1..=3).map(GroupId).collect());
    let factory: StateMachineFactory = std::sync::Arc::new(|_| Box::new(coraft::api::CommandCounter::default()));
    match Node::start(options, factory) {
        Err(Error::Config(reason)) => assert!(reason.contains("limits.groups_max (2)"), "{reason}"),
        Err(other) => panic!("refused with the wrong error: {other}"),
        Ok(node) => {
            node.shutdown();
            panic!("a node hosting 3 groups started with limits.groups_max = 2");
        }
    }
}

#[test]
fn a_snapshot_trigger_below_its_minimum_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), |config| config.snapshot.after_entries = 3);
    let stderr = refused(node(&config, "1"));
    assert!(
        stderr.contains("snapshot.after_entries: 3 is neither 0 (off) nor in the allowed range"),
        "{stderr}"
    );
}

/// `coraft-node` honours `[snapshot]`: with an entries trigger its groups
/// snapshot by themselves, and a node killed afterwards restarts from the
/// snapshot with every acknowledged write.
#[test]
fn coraft_node_snapshots_by_its_policy_and_restarts_from_the_snapshot() {
    use coraft::client::{Client, ClientConfig};
    use coraft::raft::{GroupId, NodeId};

    let dir = tempfile::tempdir().unwrap();
    let mut listen = None;
    let path = write_config(dir.path(), |config| {
        config.snapshot.after_entries = 64;
        config.snapshot.log_tail_entries = 0;
        listen = Some(config.listen);
    });
    let listen = listen.unwrap();
    let snapshots = dir.path().join("wal").join("shard-0").join("snapshots").join("group-1");
    let client = || {
        Client::new(ClientConfig {
            cluster_id: 5,
            nodes: vec![(NodeId(7), vec![listen])],
            attempt_timeout: std::time::Duration::from_secs(2),
        })
    };
    let write = |client: &mut Client| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            match client.write(GroupId(1), b"x") {
                Ok(result) => return u64::from_le_bytes(result.try_into().unwrap()),
                Err(error) => {
                    assert!(std::time::Instant::now() < deadline, "no write within 30 s: {error}");
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            }
        }
    };
    {
        let _node = Running(node(&path, "1").spawn().unwrap());
        let mut client = client();
        for expected in 1..=200 {
            assert_eq!(write(&mut client), expected);
        }
        let taken: Vec<_> = std::fs::read_dir(&snapshots)
            .map(|entries| {
                entries
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .filter(|name| name.starts_with("snapshot-"))
                    .collect()
            })
            .unwrap_or_default();
        assert!(!taken.is_empty(), "no snapshot in {}", snapshots.display());
        // Dropping `_node` kills it with SIGKILL.
    }
    let _node = Running(node(&path, "1").spawn().unwrap());
    let mut client = client();
    assert_eq!(write(&mut client), 201, "every acknowledged write survived");
}
