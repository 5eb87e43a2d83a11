//! The machine a node runs on: its CPUs, how they pair into physical cores
//! (SMT siblings) and group into NUMA nodes, which of them this process may
//! use, and whether io_uring — which glommio needs — works.
//!
//! [`Topology::detect`] reads Linux sysfs and asks the kernel; it never panics
//! on missing or odd files and says in [`Topology::notes`] what it had to
//! guess. [`Detector`] points detection at another sysfs root, so tests feed
//! it fake machines from temp dirs. Validation ([`crate::NodeConfig::validate`])
//! and the layout advice ([`Topology::suggest`]) only read this plain data.

mod sysfs;
mod system;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

pub use system::probe_io_uring;

use crate::cpulist;

/// One online CPU (a hardware thread).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cpu {
    /// Its number, as glommio's `Placement::Fixed` and `taskset` take it.
    pub id: usize,
    /// The hardware threads of its physical core, itself included, sorted.
    pub siblings: Vec<usize>,
    /// Its NUMA node.
    pub numa_node: usize,
    /// Whether this process's affinity mask lets it run there.
    pub allowed: bool,
}

impl Cpu {
    /// A key shared by all threads of one physical core: its lowest sibling.
    pub fn physical_core(&self) -> usize {
        self.siblings.first().copied().unwrap_or(self.id)
    }
}

/// A NUMA node and its online CPUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumaNode {
    /// Node number.
    pub id: usize,
    /// Its online CPUs, sorted.
    pub cpus: Vec<usize>,
}

/// The usable hardware threads of one physical core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhysicalCore {
    /// Allowed CPUs of the core, sorted (more than one with SMT).
    pub cpus: Vec<usize>,
    /// Its NUMA node.
    pub numa_node: usize,
}

/// Whether io_uring works for this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IoUring {
    /// A one-entry ring was set up and closed.
    Available {
        /// The kernel's `IORING_FEAT_*` bits.
        features: u32,
    },
    /// `io_uring_setup` failed.
    Unavailable {
        /// The errno.
        errno: i32,
        /// What it most likely means.
        reason: String,
    },
    /// Not probed, or not probeable here.
    Unknown {
        /// Why.
        reason: String,
    },
}

/// The process's locked-memory limit (RLIMIT_MEMLOCK, soft).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemlockLimit {
    /// No limit.
    Unlimited,
    /// A limit in bytes.
    Bytes(u64),
    /// Not read.
    Unknown,
}

/// What detection found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// Online CPUs, sorted by id; never empty.
    pub cpus: Vec<Cpu>,
    /// NUMA nodes, sorted by id; every CPU is in exactly one.
    pub numa_nodes: Vec<NumaNode>,
    /// io_uring support.
    pub io_uring: IoUring,
    /// `uname -r`, when read.
    pub kernel_release: Option<String>,
    /// Locked-memory limit.
    pub memlock: MemlockLimit,
    /// What detection could not read and what it assumed instead.
    pub notes: Vec<String>,
}

/// Detection with its sources configurable.
#[derive(Debug, Clone)]
pub struct Detector {
    sysfs_root: PathBuf,
    query_process: bool,
}

impl Default for Detector {
    fn default() -> Self {
        Detector::new()
    }
}

impl Detector {
    /// Reads `/sys` and queries this process (affinity, io_uring, kernel, memlock).
    pub fn new() -> Detector {
        Detector {
            sysfs_root: PathBuf::from("/sys"),
            query_process: true,
        }
    }

    /// Reads sysfs below `root` instead of `/sys` (the files are
    /// `root/devices/system/cpu/online`, `.../cpuN/topology/thread_siblings_list`,
    /// `root/devices/system/node/nodeN/cpulist`).
    pub fn sysfs_root(mut self, root: impl Into<PathBuf>) -> Detector {
        self.sysfs_root = root.into();
        self
    }

    /// Whether to ask the kernel about this process: its affinity mask, an
    /// io_uring probe, the kernel release and RLIMIT_MEMLOCK. Off, every CPU
    /// is allowed and the rest is unknown — what a fake sysfs needs.
    pub fn query_process(mut self, query: bool) -> Detector {
        self.query_process = query;
        self
    }

    /// Detects. Never panics; falls back to `available_parallelism` when
    /// sysfs is unreadable, and records each fallback in `notes`.
    pub fn detect(&self) -> Topology {
        let mut notes = Vec::new();
        let affinity = if self.query_process {
            system::affinity().map_err(|error| notes.push(error)).ok()
        } else {
            None
        };
        let (cpus, numa_nodes) = sysfs::read(&self.sysfs_root, affinity.as_deref(), &mut notes);
        let mut topology = Topology {
            cpus,
            numa_nodes,
            io_uring: IoUring::Unknown {
                reason: "not probed".to_owned(),
            },
            kernel_release: None,
            memlock: MemlockLimit::Unknown,
            notes,
        };
        if let Some(allowed) = affinity {
            topology.restrict_to(&allowed);
        }
        if self.query_process {
            topology.io_uring = probe_io_uring();
            topology.kernel_release = system::kernel_release();
            topology.memlock = system::memlock();
        }
        topology
    }
}

impl Topology {
    /// Detects this machine (see [`Detector::new`]).
    pub fn detect() -> Topology {
        Detector::new().detect()
    }

    /// Reads a sysfs tree only, assuming every CPU allowed (see [`Detector::query_process`]).
    pub fn from_sysfs(root: impl AsRef<Path>) -> Topology {
        Detector::new().sysfs_root(root.as_ref()).query_process(false).detect()
    }

    /// A machine of `cpu_count` CPUs (at least one), no SMT, one NUMA node,
    /// all allowed, io_uring unknown: for tests and examples.
    pub fn flat(cpu_count: usize) -> Topology {
        let ids: Vec<usize> = (0..cpu_count.max(1)).collect();
        Topology {
            cpus: ids
                .iter()
                .map(|&id| Cpu {
                    id,
                    siblings: vec![id],
                    numa_node: 0,
                    allowed: true,
                })
                .collect(),
            numa_nodes: vec![NumaNode { id: 0, cpus: ids }],
            io_uring: IoUring::Unknown {
                reason: "synthetic topology".to_owned(),
            },
            kernel_release: None,
            memlock: MemlockLimit::Unknown,
            notes: Vec::new(),
        }
    }

    /// Marks CPUs outside `allowed` as not allowed. If that would leave none,
    /// keeps them all and says so in `notes`.
    pub fn restrict_to(&mut self, allowed: &[usize]) {
        let allowed_set: BTreeSet<usize> = allowed.iter().copied().collect();
        if !self.cpus.iter().any(|cpu| allowed_set.contains(&cpu.id)) {
            self.notes.push(format!(
                "the affinity mask {} shares no CPU with the online CPUs; treating all as allowed",
                cpulist::format(allowed)
            ));
            return;
        }
        for cpu in &mut self.cpus {
            cpu.allowed = allowed_set.contains(&cpu.id);
        }
    }

    /// The CPU with this id, if online.
    pub fn cpu(&self, id: usize) -> Option<&Cpu> {
        self.cpus.iter().find(|cpu| cpu.id == id)
    }

    /// Ids of the online CPUs.
    pub fn online_cpus(&self) -> Vec<usize> {
        self.cpus.iter().map(|cpu| cpu.id).collect()
    }

    /// Ids of the CPUs this process may run on.
    pub fn allowed_cpus(&self) -> Vec<usize> {
        self.cpus.iter().filter(|cpu| cpu.allowed).map(|cpu| cpu.id).collect()
    }

    /// Physical cores with at least one allowed CPU, by lowest CPU id.
    pub fn physical_cores(&self) -> Vec<PhysicalCore> {
        let mut cores: BTreeMap<usize, PhysicalCore> = BTreeMap::new();
        for cpu in self.cpus.iter().filter(|cpu| cpu.allowed) {
            cores
                .entry(cpu.physical_core())
                .or_insert_with(|| PhysicalCore {
                    cpus: Vec::new(),
                    numa_node: cpu.numa_node,
                })
                .cpus
                .push(cpu.id);
        }
        cores.into_values().collect()
    }

    /// Whether any physical core has more than one online thread.
    pub fn has_smt(&self) -> bool {
        self.cpus.iter().any(|cpu| cpu.siblings.len() > 1)
    }

    /// `(major, minor)` of the kernel release, when known.
    pub fn kernel_version(&self) -> Option<(u32, u32)> {
        let release = self.kernel_release.as_deref()?;
        let mut numbers = release
            .split(|c: char| !c.is_ascii_digit())
            .map(|part| part.parse::<u32>().ok());
        Some((numbers.next()??, numbers.next()??))
    }
}

impl fmt::Display for IoUring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IoUring::Available { features } => write!(f, "available (features {features:#x})"),
            IoUring::Unavailable { errno, reason } => write!(f, "UNAVAILABLE (errno {errno}): {reason}"),
            IoUring::Unknown { reason } => write!(f, "unknown ({reason})"),
        }
    }
}

impl fmt::Display for MemlockLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemlockLimit::Unlimited => f.write_str("unlimited"),
            MemlockLimit::Bytes(bytes) => write!(f, "{} KiB", bytes / 1024),
            MemlockLimit::Unknown => f.write_str("unknown"),
        }
    }
}

impl fmt::Display for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let online = self.online_cpus();
        let allowed = self.allowed_cpus();
        let cores = self.physical_cores();
        writeln!(f, "CPUs online:     {} ({})", cpulist::format(&online), online.len())?;
        writeln!(f, "CPUs allowed:    {} ({})", cpulist::format(&allowed), allowed.len())?;
        let smt = if self.has_smt() { "SMT on" } else { "no SMT" };
        writeln!(f, "physical cores:  {} ({smt})", cores.len())?;
        for core in &cores {
            writeln!(
                f,
                "  core {:<4} CPUs {:<10} NUMA node {}",
                core.cpus[0],
                cpulist::format(&core.cpus),
                core.numa_node
            )?;
        }
        writeln!(f, "NUMA nodes:      {}", self.numa_nodes.len())?;
        for node in &self.numa_nodes {
            writeln!(f, "  node {:<4} CPUs {}", node.id, cpulist::format(&node.cpus))?;
        }
        writeln!(f, "io_uring:        {}", self.io_uring)?;
        writeln!(
            f,
            "kernel:          {}",
            self.kernel_release.as_deref().unwrap_or("unknown")
        )?;
        writeln!(f, "memlock limit:   {}", self.memlock)?;
        for note in &self.notes {
            writeln!(f, "note: {note}")?;
        }
        Ok(())
    }
}
