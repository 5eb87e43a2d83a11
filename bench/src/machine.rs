//! What a figure was measured on: cores, CPU model, kernel, memory, and the
//! file system under the WAL directory, read from `/proc` and `statfs` so a
//! result pasted anywhere carries its context.

use std::path::Path;

use serde::Serialize;

/// The machine a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPUs this process may run on.
    pub cores: usize,
    /// The CPU's model name (`/proc/cpuinfo`), or "unknown".
    pub cpu: String,
    /// The kernel release (`/proc/sys/kernel/osrelease`).
    pub kernel: String,
    /// Total memory in MiB (`/proc/meminfo`).
    pub memory_mib: u64,
    /// The 1-minute load average when the run started (`/proc/loadavg`).
    pub load_1m: f64,
    /// The directory the WALs were written under.
    pub wal_dir: String,
    /// The file system type of the mount holding `wal_dir` (e.g. ext4).
    pub wal_fs: String,
    /// The device or source of that mount.
    pub wal_device: String,
}

impl Machine {
    /// Reads the machine's description, for WALs under `wal_dir`.
    pub fn detect(wal_dir: &Path) -> Machine {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find(|line| line.starts_with("model name"))
                    .and_then(|line| line.split_once(':'))
                    .map(|(_, name)| name.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|text| text.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let memory_mib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| {
                let line = text.lines().find(|line| line.starts_with("MemTotal:"))?;
                line.split_whitespace().nth(1)?.parse::<u64>().ok()
            })
            .map_or(0, |kib| kib / 1024);
        let load_1m = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|text| text.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0);
        let canonical = wal_dir.canonicalize().unwrap_or_else(|_| wal_dir.to_path_buf());
        let (wal_fs, wal_device) = mount_of(&canonical).unwrap_or_else(|| ("unknown".into(), "unknown".into()));
        Machine {
            cores,
            cpu,
            kernel,
            memory_mib,
            load_1m,
            wal_dir: canonical.display().to_string(),
            wal_fs,
            wal_device,
        }
    }

    /// One line for people.
    pub fn describe(&self) -> String {
        format!(
            "{} cores ({}), {} MiB, Linux {}, load {:.2}; WAL on {} ({}) under {}",
            self.cores,
            self.cpu,
            self.memory_mib,
            self.kernel,
            self.load_1m,
            self.wal_fs,
            self.wal_device,
            self.wal_dir
        )
    }
}

/// The file system type and source of the mount that holds `path`: the
/// longest mount point of `/proc/self/mountinfo` that is a prefix of it.
fn mount_of(path: &Path) -> Option<(String, String)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut best: Option<(usize, String, String)> = None;
    for line in text.lines() {
        // id parent major:minor root mount-point options [optional...] - fstype source super-options
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(separator) = fields.iter().position(|field| *field == "-") else {
            continue;
        };
        let (Some(mount_point), Some(fs), Some(source)) =
            (fields.get(4), fields.get(separator + 1), fields.get(separator + 2))
        else {
            continue;
        };
        let mount_point = mount_point.replace("\\040", " ");
        if path.starts_with(&mount_point) && best.as_ref().is_none_or(|(length, ..)| mount_point.len() >= *length) {
            best = Some((mount_point.len(), fs.to_string(), source.to_string()));
        }
    }
    best.map(|(_, fs, source)| (fs, source))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_temp_dir_has_a_file_system_and_the_machine_has_cores() {
        let dir = tempfile::tempdir().unwrap();
        let machine = Machine::detect(dir.path());
        assert!(machine.cores >= 1);
        assert_ne!(machine.wal_fs, "unknown", "{machine:?}");
        assert_ne!(machine.kernel, "unknown");
    }
}
