//! What the process tests share: servers run as child processes (killed
//! when dropped), free ports, and describing a failed client run.
// Each test file uses a different subset of these helpers.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a test waits for something that should happen in well under a
/// second on an idle machine (CI machines are anything but idle).
pub const EVENT_WAIT: Duration = Duration::from_secs(60);

/// A running `counter-server`, killed (SIGKILL) when dropped, however the
/// test ends; its stdout lines are collected as they come.
pub struct Server {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts `program` (a server binary) as node `id` of the cluster whose
    /// node `i + 1` listens on `addresses[i]`.
    pub fn start(program: &str, id: usize, addresses: &[SocketAddr], data: &Path, extra: &[&str]) -> Server {
        let peers: Vec<String> = addresses
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}={a}", i + 1))
            .collect();
        let mut child = Command::new(program)
            .args(["--id", &id.to_string(), "--listen", &addresses[id - 1].to_string()])
            .args(["--peers", &peers.join(",")])
            .arg("--data")
            .arg(data)
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{program} starts: {e}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("piped");
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                sink.lock().unwrap().push(line);
            }
        });
        Server { child, lines }
    }

    /// Waits until the server has printed a line containing `text` (at or
    /// after line `from`), and returns it.
    pub fn wait_for(&self, text: &str, from: usize) -> String {
        let deadline = Instant::now() + EVENT_WAIT;
        loop {
            if let Some(line) = self.lines.lock().unwrap().iter().skip(from).find(|l| l.contains(text)) {
                return line.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no line with `{text}` within {EVENT_WAIT:?}; the server printed:\n{}",
                self.lines.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the server has printed a line containing `text`, then
    /// until it says a snapshot is durable after that line: `text` is what
    /// `on_snapshot_save` prints, before the snapshot's files are synced.
    pub fn wait_for_durable_snapshot(&self, text: &str) {
        self.wait_for(text, 0);
        let at = self
            .lines
            .lock()
            .unwrap()
            .iter()
            .position(|l| l.contains(text))
            .expect("just seen");
        self.wait_for("is durable", at + 1);
    }

    pub fn printed(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Kills a client process left running when a test fails.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_addresses(count: usize) -> Vec<SocketAddr> {
    coraft::ports::free_loopback_addresses(count).unwrap()
}

pub fn cluster_flag(addresses: &[SocketAddr]) -> String {
    addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(",")
}

pub fn describe(output: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

pub fn data_dirs(root: &Path) -> Vec<PathBuf> {
    (1..=3).map(|i| root.join(format!("node-{i}"))).collect()
}
