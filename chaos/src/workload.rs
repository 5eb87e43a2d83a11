//! The clients of a run: threads, each with its own [`Client`] (its own
//! session), issuing random register reads, writes and compare-and-sets on
//! the KV store, and recording every invocation and completion in one shared
//! [`History`] on one monotonic clock.
//!
//! Keys rotate: the run's operations are numbered, and each block of
//! `keys_active * ops_per_key` operations uses its own `keys_active` keys,
//! so every key's history stays small enough for the linearizability search
//! while the run as a whole covers many keys. Every written value is unique
//! in the run, so a read names the write it saw.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use coraft::api::{KvOp, KvResult};
use coraft::client::{Client, ClientConfig, ClientFailure};
use coraft::raft::GroupId;

use crate::history::{History, Operation, Outcome, ProcessId};
use crate::list_append::{AppendOutcome, ListOperation};
use crate::rng::Rng;

/// The Raft group the KV store lives in.
pub const GROUP: GroupId = GroupId(1);
/// The first register used as a counter (far from the registers the
/// register workload uses).
pub const COUNTER_KEY_BASE: u64 = 1 << 48;
/// Counters in use (the bounds checker takes long histories per key).
pub const COUNTERS: u64 = 4;

/// The history being recorded, with the run's clock.
pub struct Recorder {
    start: Instant,
    history: Mutex<History>,
}

impl Recorder {
    /// A recorder whose clock starts now.
    pub fn new() -> Recorder {
        Recorder {
            start: Instant::now(),
            history: Mutex::new(History::new()),
        }
    }

    /// Nanoseconds since the run started.
    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Records an invocation (the clock is read under the lock, so events
    /// are in time order).
    pub fn invoke(&self, process: ProcessId, operation: Operation) {
        let mut history = self.history.lock().expect("history lock");
        let now = self.now_ns();
        history.invoke(process, now, operation);
    }

    /// Records a completion.
    pub fn complete(&self, process: ProcessId, outcome: Outcome) {
        let mut history = self.history.lock().expect("history lock");
        let now = self.now_ns();
        history.complete(process, now, outcome);
    }

    /// A copy of the history so far.
    pub fn history(&self) -> History {
        self.history.lock().expect("history lock").clone()
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

/// How the clients choose operations.
#[derive(Debug, Clone, Copy)]
pub struct WorkloadShape {
    /// Keys in use at once.
    pub keys_active: u64,
    /// Operations per key, on average, before the keys rotate.
    pub ops_per_key: u64,
}

/// What the client threads share.
pub struct Shared {
    /// The history.
    pub recorder: Recorder,
    /// Set to end the workload (each thread finishes its operation in flight).
    pub stop: AtomicBool,
    /// The list-append operations, each recorded once it ended.
    pub lists: Mutex<Vec<ListOperation>>,
    operations_started: AtomicU64,
    next_value: AtomicU64,
}

impl Shared {
    /// Shared state for a new run.
    pub fn new() -> Shared {
        Shared {
            recorder: Recorder::new(),
            stop: AtomicBool::new(false),
            lists: Mutex::new(Vec::new()),
            operations_started: AtomicU64::new(0),
            next_value: AtomicU64::new(1),
        }
    }

    fn unique_value(&self) -> u64 {
        self.next_value.fetch_add(1, Ordering::Relaxed)
    }
}

impl Default for Shared {
    fn default() -> Self {
        Shared::new()
    }
}

/// Runs one client thread until `shared.stop` is set.
pub fn client_loop(shared: Arc<Shared>, config: ClientConfig, process: ProcessId, seed: u64, shape: WorkloadShape) {
    let mut rng = Rng::new(seed);
    let mut client = Client::new(config);
    // The value this client last saw in each key, to make CAS succeed often.
    let mut last_seen: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
    let block = (shape.keys_active * shape.ops_per_key).max(1);
    while !shared.stop.load(Ordering::Relaxed) {
        let number = shared.operations_started.fetch_add(1, Ordering::Relaxed);
        let key = (number / block) * shape.keys_active + rng.between(0, shape.keys_active.max(1));
        let roll = rng.between(0, 10);
        // One operation in ten is on a counter: an increment or a read.
        if rng.between(0, 10) == 0 {
            let counter = COUNTER_KEY_BASE + rng.between(0, COUNTERS);
            let operation = if roll < 7 {
                Operation::Increment { key: counter }
            } else {
                Operation::CounterRead { key: counter }
            };
            shared.recorder.invoke(process, operation);
            let outcome = execute(&mut client, operation);
            shared.recorder.complete(process, outcome);
            continue;
        }
        // One operation in five is on the key's list (a key space apart).
        if rng.between(0, 5) == 0 {
            let list_operation = if roll < 5 {
                read_list(&mut client, &shared.recorder, process, key)
            } else {
                append(&mut client, &shared.recorder, process, key, shared.unique_value())
            };
            shared.lists.lock().expect("lists lock").push(list_operation);
            continue;
        }
        let operation = if roll < 5 {
            Operation::Read { key }
        } else if roll < 8 {
            Operation::Write {
                key,
                value: shared.unique_value(),
            }
        } else {
            let expected = match last_seen.get(&key) {
                Some(&value) if rng.between(0, 4) != 0 => value,
                _ => rng.between(1, shared.next_value.load(Ordering::Relaxed).max(2)),
            };
            Operation::Cas {
                key,
                expected,
                new: shared.unique_value(),
            }
        };
        shared.recorder.invoke(process, operation);
        let outcome = execute(&mut client, operation);
        match (operation, outcome) {
            (Operation::Read { key }, Outcome::Ok { value: Some(value) }) => {
                last_seen.insert(key, value);
            }
            (Operation::Write { key, value }, Outcome::Ok { .. })
            | (Operation::Cas { key, new: value, .. }, Outcome::Ok { .. }) => {
                last_seen.insert(key, value);
            }
            _ => {}
        }
        shared.recorder.complete(process, outcome);
    }
}

/// Runs one operation; anything but a clear answer is `Unknown`.
pub fn execute(client: &mut Client, operation: Operation) -> Outcome {
    match operation {
        Operation::Read { key } => match client.read(GROUP, &KvOp::Read { key }.encode()) {
            Ok(bytes) => match KvResult::decode(&bytes) {
                Some(KvResult::Value(value)) => Outcome::Ok { value },
                other => {
                    log_unexpected(operation, &other);
                    Outcome::Unknown
                }
            },
            Err(failure) => unknown(operation, &failure),
        },
        Operation::Write { key, value } => write_outcome(client, operation, KvOp::Write { key, value }),
        Operation::Cas { key, expected, new } => write_outcome(client, operation, KvOp::Cas { key, expected, new }),
        Operation::Increment { key } => match client.write(GROUP, &KvOp::Increment { key }.encode()) {
            Ok(bytes) => match KvResult::decode(&bytes) {
                Some(KvResult::Value(Some(count))) => Outcome::Ok { value: Some(count) },
                Some(KvResult::Error(_)) => Outcome::Failed,
                other => {
                    log_unexpected(operation, &other);
                    Outcome::Unknown
                }
            },
            Err(ClientFailure::SessionExpired | ClientFailure::StaleSequence) => Outcome::Failed,
            Err(failure) => unknown(operation, &failure),
        },
        Operation::CounterRead { key } => match client.read(GROUP, &KvOp::Read { key }.encode()) {
            Ok(bytes) => match KvResult::decode(&bytes) {
                Some(KvResult::Value(count)) => Outcome::Ok {
                    value: Some(count.unwrap_or(0)),
                },
                other => {
                    log_unexpected(operation, &other);
                    Outcome::Unknown
                }
            },
            Err(failure) => unknown(operation, &failure),
        },
    }
}

fn write_outcome(client: &mut Client, operation: Operation, op: KvOp) -> Outcome {
    match client.write(GROUP, &op.encode()) {
        Ok(bytes) => match KvResult::decode(&bytes) {
            Some(KvResult::Done) => Outcome::Ok { value: None },
            // The compare failed, or the store refused the op: not applied.
            Some(KvResult::CasMismatch { .. }) | Some(KvResult::Error(_)) => Outcome::Failed,
            other => {
                log_unexpected(operation, &other);
                Outcome::Unknown
            }
        },
        // The session's table says this write was not applied.
        Err(ClientFailure::SessionExpired | ClientFailure::StaleSequence) => Outcome::Failed,
        // A timeout, a lost connection, giving up: it may have applied.
        Err(failure) => unknown(operation, &failure),
    }
}

/// Reads `key`'s list; recorded with the values, or none if no answer.
pub fn read_list(client: &mut Client, recorder: &Recorder, process: ProcessId, key: u64) -> ListOperation {
    let invoke_ns = recorder.now_ns();
    let values = match client.read(GROUP, &KvOp::ReadList { key }.encode()) {
        Ok(bytes) => match KvResult::decode(&bytes) {
            Some(KvResult::List(values)) => Some(values),
            other => {
                eprintln!("coraft-chaos: unexpected result {other:?} for a read of list {key}");
                None
            }
        },
        Err(failure) => {
            eprintln!("coraft-chaos: a read of list {key} ended unknown: {failure}");
            None
        }
    };
    ListOperation::Read {
        process,
        key,
        invoke_ns,
        complete_ns: recorder.now_ns(),
        values,
    }
}

fn append(client: &mut Client, recorder: &Recorder, process: ProcessId, key: u64, value: u64) -> ListOperation {
    let invoke_ns = recorder.now_ns();
    let outcome = match client.write(GROUP, &KvOp::Append { key, value }.encode()) {
        Ok(bytes) => match KvResult::decode(&bytes) {
            Some(KvResult::Done) => AppendOutcome::Ok,
            Some(KvResult::Error(_)) => AppendOutcome::Failed,
            _ => AppendOutcome::Unknown,
        },
        Err(ClientFailure::SessionExpired | ClientFailure::StaleSequence) => AppendOutcome::Failed,
        Err(failure) => {
            eprintln!("coraft-chaos: an append of {value} to list {key} ended unknown: {failure}");
            AppendOutcome::Unknown
        }
    };
    ListOperation::Append {
        process,
        key,
        value,
        invoke_ns,
        complete_ns: recorder.now_ns(),
        outcome,
    }
}

/// An operation the client got no usable answer for; the cause is logged
/// (it is legal, but a cause other than a fault's is worth a look).
fn unknown(operation: Operation, failure: &ClientFailure) -> Outcome {
    eprintln!("coraft-chaos: {operation:?} ended unknown: {failure}");
    Outcome::Unknown
}

fn log_unexpected(operation: Operation, result: &Option<KvResult>) {
    eprintln!("coraft-chaos: unexpected result {result:?} for {operation:?}; recorded as unknown");
}
