//! The counter's state machine and its command encoding, shared by
//! `counter-server` (which replicates it) and `counter-client` (which
//! encodes requests and decodes answers).
//!
//! - An increment is a write: 8 bytes, the delta as a little-endian `i64`.
//!   Its result is [`RESULT_OK`] and the new value (8 bytes, little-endian),
//!   or [`RESULT_REFUSED`] and a UTF-8 reason (an overflow, a malformed
//!   command); a refused increment leaves the value as it was.
//! - A get is a read with an empty query; its answer is the value (8 bytes).
//!   The engine calls [`StateMachine::on_query`] only once this replica has
//!   applied everything committed before the read (ReadIndex, or the
//!   leader's lease when the server runs `--read-mode lease`).
//! - A snapshot is the value and the index of the last applied increment
//!   (16 bytes).

use std::io::{Read, Write};

use coraft::api::{Command, LeaderStopReason, PreparedSnapshot, SnapshotLoader, StateMachine};
use coraft::raft::{Configuration, LogIndex, NodeId, Term};

/// First byte of an increment's result: applied, the new value follows.
pub const RESULT_OK: u8 = 0;
/// First byte of an increment's result: not applied, a reason follows.
pub const RESULT_REFUSED: u8 = 1;
/// Size of an increment command: one little-endian `i64`.
pub const INCREMENT_BYTES: usize = 8;

/// The command that adds `delta` to the counter.
pub fn encode_increment(delta: i64) -> Vec<u8> {
    delta.to_le_bytes().to_vec()
}

/// An increment's result: the new value, or why it was refused.
pub fn decode_increment_result(bytes: &[u8]) -> Result<i64, String> {
    match bytes.split_first() {
        Some((&RESULT_OK, value)) => decode_value(value),
        Some((&RESULT_REFUSED, reason)) => Err(String::from_utf8_lossy(reason).into_owned()),
        _ => Err(format!("malformed increment result of {} bytes", bytes.len())),
    }
}

/// A get's answer: the value.
pub fn decode_value(bytes: &[u8]) -> Result<i64, String> {
    let array: [u8; 8] = bytes
        .try_into()
        .map_err(|_| format!("a counter value is 8 bytes, got {}", bytes.len()))?;
    Ok(i64::from_le_bytes(array))
}

/// A replicated `i64`. It prints what happens to it on stdout, each line
/// prefixed with `node N:`, so the three terminals of `docs/examples.md`
/// show the replicas applying the same increments, leadership moving, and
/// snapshots being saved and loaded.
pub struct Counter {
    node: NodeId,
    value: i64,
    /// Index of the last command applied (0: none); saved in snapshots.
    applied_index: LogIndex,
}

impl Counter {
    /// The counter of `node` (its id only labels the printed lines).
    pub fn new(node: NodeId) -> Counter {
        Counter {
            node,
            value: 0,
            applied_index: LogIndex(0),
        }
    }

    /// Its current value.
    pub fn value(&self) -> i64 {
        self.value
    }

    fn increment(&mut self, command: &Command<'_>) -> Vec<u8> {
        self.applied_index = command.index;
        let refused = |reason: String| {
            let mut result = vec![RESULT_REFUSED];
            result.extend_from_slice(reason.as_bytes());
            result
        };
        let Ok(bytes) = <[u8; INCREMENT_BYTES]>::try_from(command.data) else {
            // Every replica refuses it alike: apply stays deterministic.
            return refused(format!(
                "an increment is {INCREMENT_BYTES} bytes (a little-endian i64), got {}",
                command.data.len()
            ));
        };
        let delta = i64::from_le_bytes(bytes);
        match self.value.checked_add(delta) {
            Some(value) => {
                println!(
                    "node {}: apply index {}: {:+} -> value {value}",
                    self.node, command.index, delta
                );
                self.value = value;
                let mut result = vec![RESULT_OK];
                result.extend_from_slice(&value.to_le_bytes());
                result
            }
            None => refused(format!("{} + {delta} overflows an i64: not applied", self.value)),
        }
    }
}

/// Reads a counter's snapshot: its value and the index of its last
/// increment.
fn read_counter_snapshot(reader: &mut dyn Read) -> std::io::Result<(i64, LogIndex)> {
    let mut value = [0u8; 8];
    let mut index = [0u8; 8];
    reader.read_exact(&mut value)?;
    reader.read_exact(&mut index)?;
    Ok((i64::from_le_bytes(value), LogIndex(u64::from_le_bytes(index))))
}

/// Reads a counter's snapshot on the engine's blocking thread.
struct CounterLoader;

impl SnapshotLoader for CounterLoader {
    fn prepare(self: Box<Self>, reader: &mut dyn Read) -> std::io::Result<PreparedSnapshot> {
        Ok(Box::new(read_counter_snapshot(reader)?))
    }
}

impl Counter {
    fn swap_in(&mut self, (value, applied_index): (i64, LogIndex)) {
        self.value = value;
        self.applied_index = applied_index;
        println!(
            "node {}: snapshot loaded: value {} (last increment at index {})",
            self.node, self.value, self.applied_index
        );
    }
}

impl StateMachine for Counter {
    fn on_apply(&mut self, commands: &mut dyn Iterator<Item = Command<'_>>) -> Vec<Vec<u8>> {
        commands.map(|command| self.increment(&command)).collect()
    }

    fn on_query(&self, _query: &[u8]) -> Vec<u8> {
        self.value.to_le_bytes().to_vec()
    }

    fn on_snapshot_save(&mut self, writer: &mut dyn Write) -> std::io::Result<()> {
        writer.write_all(&self.value.to_le_bytes())?;
        writer.write_all(&self.applied_index.0.to_le_bytes())?;
        println!(
            "node {}: snapshot saved: value {} (last increment at index {})",
            self.node, self.value, self.applied_index
        );
        Ok(())
    }

    fn on_snapshot_load(&mut self, reader: &mut dyn Read) -> std::io::Result<()> {
        let loaded = read_counter_snapshot(reader)?;
        self.swap_in(loaded);
        Ok(())
    }

    /// The snapshot is read off the shard's thread (a counter's is 16
    /// bytes, so this shows the API more than it saves time); the swap runs
    /// on the shard's.
    fn snapshot_loader(&mut self) -> Option<Box<dyn SnapshotLoader>> {
        Some(Box::new(CounterLoader))
    }

    fn on_snapshot_prepared(&mut self, prepared: PreparedSnapshot) -> std::io::Result<()> {
        let loaded = prepared
            .downcast::<(i64, LogIndex)>()
            .map_err(|_| std::io::Error::other("a prepared snapshot that is not a counter's"))?;
        self.swap_in(*loaded);
        Ok(())
    }

    fn on_leader_start(&mut self, term: Term) {
        println!("node {}: leader start in term {term}: value {}", self.node, self.value);
    }

    fn on_leader_stop(&mut self, reason: LeaderStopReason) {
        let why = match reason {
            // The term this node knows now: a later one when another node
            // was elected, the same one when it stepped down by itself.
            LeaderStopReason::NewTerm(term) => format!("no longer leading (term {term})"),
            LeaderStopReason::Shutdown => "shutting down".to_string(),
        };
        println!("node {}: leader stop: {why}", self.node);
    }

    fn on_configuration_committed(&mut self, index: LogIndex, configuration: &Configuration) {
        let list = |nodes: &std::collections::BTreeSet<NodeId>| {
            nodes.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(",")
        };
        println!(
            "node {}: configuration committed at index {index}: voters [{}] learners [{}]{}",
            self.node,
            list(&configuration.voters),
            list(&configuration.learners),
            if configuration.outgoing_voters.is_empty() {
                String::new()
            } else {
                format!(" (joint with [{}])", list(&configuration.outgoing_voters))
            }
        );
    }

    fn on_error(&mut self, error: &coraft::api::Error) {
        println!("node {}: the group failed and takes no more writes: {error}", self.node);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coraft::raft::Term;

    fn apply(counter: &mut Counter, index: u64, data: &[u8]) -> Vec<u8> {
        let command = Command {
            index: LogIndex(index),
            term: Term(1),
            data,
        };
        counter.on_apply(&mut std::iter::once(command)).remove(0)
    }

    #[test]
    fn increments_return_the_new_value_and_refuse_overflow_and_bad_commands() {
        let mut counter = Counter::new(NodeId(1));
        assert_eq!(
            decode_increment_result(&apply(&mut counter, 1, &encode_increment(5))),
            Ok(5)
        );
        assert_eq!(
            decode_increment_result(&apply(&mut counter, 2, &encode_increment(-7))),
            Ok(-2)
        );
        let overflow = decode_increment_result(&apply(&mut counter, 3, &encode_increment(i64::MIN)));
        assert!(overflow.unwrap_err().contains("overflows"));
        let malformed = decode_increment_result(&apply(&mut counter, 4, b"abc"));
        assert!(malformed.unwrap_err().contains("got 3"));
        assert_eq!(decode_value(&counter.on_query(&[])), Ok(-2));
    }

    #[test]
    fn a_snapshot_loaded_into_a_fresh_counter_restores_value_and_index() {
        let mut counter = Counter::new(NodeId(1));
        apply(&mut counter, 9, &encode_increment(42));
        let mut bytes = Vec::new();
        counter.on_snapshot_save(&mut bytes).unwrap();
        let mut fresh = Counter::new(NodeId(2));
        fresh.on_snapshot_load(&mut bytes.as_slice()).unwrap();
        assert_eq!(fresh.value(), 42);
        assert_eq!(fresh.applied_index, LogIndex(9));
        assert!(
            fresh.on_snapshot_load(&mut &bytes[..5]).is_err(),
            "a torn snapshot is an error"
        );
    }

    #[test]
    fn a_snapshot_prepared_by_the_loader_restores_value_and_index() {
        let mut counter = Counter::new(NodeId(1));
        apply(&mut counter, 9, &encode_increment(42));
        let mut bytes = Vec::new();
        counter.on_snapshot_save(&mut bytes).unwrap();
        let mut fresh = Counter::new(NodeId(2));
        let prepared = fresh.snapshot_loader().unwrap().prepare(&mut bytes.as_slice()).unwrap();
        assert_eq!(fresh.value(), 0, "unchanged until the swap");
        fresh.on_snapshot_prepared(prepared).unwrap();
        assert_eq!(fresh.value(), 42);
        assert_eq!(fresh.applied_index, LogIndex(9));
        assert!(fresh.snapshot_loader().unwrap().prepare(&mut &bytes[..5]).is_err());
        assert!(fresh.on_snapshot_prepared(Box::new("not a counter")).is_err());
    }
}
