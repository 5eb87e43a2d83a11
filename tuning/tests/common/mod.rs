//! Fake machines: sysfs trees written to temp dirs, read back by the detector.
#![allow(dead_code)]

use std::fs;
use std::path::Path;

use coraft_tuning::Topology;
use tempfile::TempDir;

/// A sysfs lookalike in a temp dir.
pub struct FakeSysfs {
    pub dir: TempDir,
}

impl FakeSysfs {
    /// An empty tree.
    pub fn empty() -> FakeSysfs {
        FakeSysfs {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// Writes `content` at `relative` below the root, creating directories.
    pub fn write(&self, relative: &str, content: &str) -> &FakeSysfs {
        let path = self.dir.path().join(relative);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
        self
    }

    /// A machine numbered like x86 Linux: `nodes` NUMA nodes of
    /// `cores_per_node` physical cores, `threads` hardware threads per core;
    /// thread `t` of core `c` is CPU `t * cores + c`.
    pub fn machine(nodes: usize, cores_per_node: usize, threads: usize) -> FakeSysfs {
        let sysfs = FakeSysfs::empty();
        let cores = nodes * cores_per_node;
        let cpus = cores * threads;
        sysfs.write("devices/system/cpu/online", &format!("0-{}\n", cpus - 1));
        for cpu in 0..cpus {
            let core = cpu % cores;
            let siblings: Vec<String> = (0..threads).map(|t| (t * cores + core).to_string()).collect();
            sysfs.write(
                &format!("devices/system/cpu/cpu{cpu}/topology/thread_siblings_list"),
                &format!("{}\n", siblings.join(",")),
            );
        }
        for node in 0..nodes {
            let mut list: Vec<String> = Vec::new();
            for t in 0..threads {
                let first = t * cores + node * cores_per_node;
                list.push(format!("{}-{}", first, first + cores_per_node - 1));
            }
            sysfs.write(
                &format!("devices/system/node/node{node}/cpulist"),
                &format!("{}\n", list.join(",")),
            );
        }
        sysfs
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn topology(&self) -> Topology {
        Topology::from_sysfs(self.root())
    }
}

/// A valid 3-voter config of node 1, two shards, as TOML.
pub const THREE_NODES: &str = r#"
cluster_id = 42
node_id = 1
listen = "127.0.0.1:7001"

[[peers]]
id = 1
address = "127.0.0.1:7001"
[[peers]]
id = 2
address = "127.0.0.1:7002"
[[peers]]
id = 3
address = "127.0.0.1:7003"

[shards]
count = 2
cores = [0, 1]

[wal]
dir = "/var/lib/coraft/wal"
"#;
