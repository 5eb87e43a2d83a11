//! The operation history a chaos run records: every client invocation and
//! completion, in the order the harness saw them, each stamped with one
//! monotonic clock (nanoseconds since the run started).
//!
//! A process is one logical client thread with at most one operation in
//! flight. Its completion says `Ok` (applied, with the value returned),
//! `Failed` (definitely not applied) or `Unknown` (timeout, connection lost:
//! it may take effect at any time after its invocation, or never). After an
//! `Unknown` the process may invoke again; the unknown operation stays
//! possibly pending for the rest of the run. An invocation with no completion
//! at the end of the history is treated as `Unknown`.
//!
//! The history is stored as JSON lines (one [`Event`] per line) so a failing
//! run can keep it and the checkers can be re-run on it later.

use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};

/// A client process (logical thread) of the run.
pub type ProcessId = u64;
/// A register or counter key.
pub type Key = u64;
/// A value stored in a register or returned by a counter.
pub type Value = u64;

/// What a client asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Operation {
    /// Read a register; an `Ok` completion carries the value (`None`: never written).
    Read {
        /// The register.
        key: Key,
    },
    /// Write `value` to a register.
    Write {
        /// The register.
        key: Key,
        /// The value written.
        value: Value,
    },
    /// Set the register to `new` if it holds `expected`. `Ok` means it
    /// applied; a compare mismatch is `Failed`.
    Cas {
        /// The register.
        key: Key,
        /// The value the register must hold.
        expected: Value,
        /// The value it is set to.
        new: Value,
    },
    /// Increment a counter; an `Ok` completion carries the count after it.
    Increment {
        /// The counter.
        key: Key,
    },
    /// Read a counter; an `Ok` completion carries its count.
    CounterRead {
        /// The counter.
        key: Key,
    },
}

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Applied; `value` is what a read or an increment returned.
    Ok {
        /// The returned value, if the operation returns one.
        value: Option<Value>,
    },
    /// Definitely not applied.
    Failed,
    /// May or may not have applied (timeout, connection lost).
    Unknown,
}

/// One line of the history.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A process started an operation.
    Invoke {
        /// The process.
        process: ProcessId,
        /// Monotonic clock, nanoseconds.
        time_ns: u64,
        /// What it asked for.
        operation: Operation,
    },
    /// The process's operation in flight ended.
    Complete {
        /// The process.
        process: ProcessId,
        /// Monotonic clock, nanoseconds.
        time_ns: u64,
        /// How it ended.
        outcome: Outcome,
    },
}

impl Event {
    fn time_ns(&self) -> u64 {
        match self {
            Event::Invoke { time_ns, .. } | Event::Complete { time_ns, .. } => *time_ns,
        }
    }
}

/// An invocation paired with its completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    /// The process that ran it.
    pub process: ProcessId,
    /// What it asked for.
    pub operation: Operation,
    /// When it was invoked.
    pub invoke_ns: u64,
    /// When it completed; `None` for an unknown outcome, which may take
    /// effect at any later time.
    pub complete_ns: Option<u64>,
    /// How it ended (`Unknown` if it never completed).
    pub outcome: Outcome,
}

/// A malformed history.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// A process invoked while its previous operation was still in flight.
    #[error("event {event_index}: process {process} invoked while its operation invoked at event {pending_index} is still in flight")]
    DoubleInvoke {
        /// Index of the offending event.
        event_index: usize,
        /// The process.
        process: ProcessId,
        /// Index of the invocation still in flight.
        pending_index: usize,
    },
    /// A completion for a process with nothing in flight.
    #[error("event {event_index}: process {process} completed with no operation in flight")]
    CompleteWithoutInvoke {
        /// Index of the offending event.
        event_index: usize,
        /// The process.
        process: ProcessId,
    },
    /// The clock went backwards.
    #[error("event {event_index}: time {time_ns} ns is before the previous event's {previous_ns} ns")]
    TimeWentBackwards {
        /// Index of the offending event.
        event_index: usize,
        /// Its time.
        time_ns: u64,
        /// The previous event's time.
        previous_ns: u64,
    },
    /// An `Ok` completion lacks the value its operation returns, or carries
    /// one it does not return.
    #[error(
        "event {event_index}: ok completion of {operation:?} has value {value:?}, which that operation does not return"
    )]
    BadOkValue {
        /// Index of the offending event.
        event_index: usize,
        /// The operation.
        operation: Operation,
        /// The value given.
        value: Option<Value>,
    },
    /// A line of a JSON-lines history did not parse.
    #[error("history line {line}: {source}")]
    Parse {
        /// 1-based line number.
        line: usize,
        /// The parse error.
        source: serde_json::Error,
    },
    /// Reading or writing the history failed.
    #[error("history I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// The events of a run, in the order they happened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    /// The events.
    pub events: Vec<Event>,
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records an invocation.
    pub fn invoke(&mut self, process: ProcessId, time_ns: u64, operation: Operation) {
        self.events.push(Event::Invoke {
            process,
            time_ns,
            operation,
        });
    }

    /// Records a completion.
    pub fn complete(&mut self, process: ProcessId, time_ns: u64, outcome: Outcome) {
        self.events.push(Event::Complete {
            process,
            time_ns,
            outcome,
        });
    }

    /// Pairs invocations with completions, checking the history is well
    /// formed. Operations come out in invocation order.
    pub fn completions(&self) -> Result<Vec<Completion>, HistoryError> {
        let mut completions: Vec<Completion> = Vec::new();
        // process -> (event index, index into `completions`) of its op in flight.
        let mut in_flight: std::collections::HashMap<ProcessId, (usize, usize)> = std::collections::HashMap::new();
        let mut previous_ns = 0;
        for (event_index, event) in self.events.iter().enumerate() {
            let time_ns = event.time_ns();
            if time_ns < previous_ns {
                return Err(HistoryError::TimeWentBackwards {
                    event_index,
                    time_ns,
                    previous_ns,
                });
            }
            previous_ns = time_ns;
            match *event {
                Event::Invoke { process, operation, .. } => {
                    if let Some(&(pending_index, _)) = in_flight.get(&process) {
                        return Err(HistoryError::DoubleInvoke {
                            event_index,
                            process,
                            pending_index,
                        });
                    }
                    in_flight.insert(process, (event_index, completions.len()));
                    completions.push(Completion {
                        process,
                        operation,
                        invoke_ns: time_ns,
                        complete_ns: None,
                        outcome: Outcome::Unknown,
                    });
                }
                Event::Complete { process, outcome, .. } => {
                    let Some((_, slot)) = in_flight.remove(&process) else {
                        return Err(HistoryError::CompleteWithoutInvoke { event_index, process });
                    };
                    let completion = &mut completions[slot];
                    if let Outcome::Ok { value } = outcome {
                        let returns_value = matches!(
                            completion.operation,
                            Operation::Increment { .. } | Operation::CounterRead { .. }
                        );
                        let reads_register = matches!(completion.operation, Operation::Read { .. });
                        let well_formed = if returns_value {
                            value.is_some()
                        } else {
                            reads_register || value.is_none()
                        };
                        if !well_formed {
                            return Err(HistoryError::BadOkValue {
                                event_index,
                                operation: completion.operation,
                                value,
                            });
                        }
                    }
                    completion.outcome = outcome;
                    if outcome != Outcome::Unknown {
                        completion.complete_ns = Some(time_ns);
                    }
                }
            }
        }
        Ok(completions)
    }

    /// Writes the history as JSON lines, one event per line.
    pub fn write_json_lines(&self, mut out: impl Write) -> Result<(), HistoryError> {
        for event in &self.events {
            serde_json::to_writer(&mut out, event).map_err(std::io::Error::from)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
        Ok(())
    }

    /// Reads a history written by [`History::write_json_lines`]; blank lines
    /// are skipped, a bad line is an error naming its number.
    pub fn read_json_lines(input: impl BufRead) -> Result<Self, HistoryError> {
        let mut events = Vec::new();
        for (index, line) in input.lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let event = serde_json::from_str(&line).map_err(|source| HistoryError::Parse {
                line: index + 1,
                source,
            })?;
            events.push(event);
        }
        Ok(Self { events })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_round_trip_keeps_every_event() {
        let mut history = History::new();
        history.invoke(1, 10, Operation::Write { key: 3, value: 7 });
        history.invoke(2, 11, Operation::Increment { key: 0 });
        history.complete(1, 20, Outcome::Ok { value: None });
        history.complete(2, 25, Outcome::Unknown);
        history.invoke(
            1,
            30,
            Operation::Cas {
                key: 3,
                expected: 7,
                new: 8,
            },
        );
        history.complete(1, 31, Outcome::Failed);
        let mut bytes = Vec::new();
        history.write_json_lines(&mut bytes).unwrap();
        assert_eq!(String::from_utf8_lossy(&bytes).lines().count(), 6);
        let back = History::read_json_lines(&bytes[..]).unwrap();
        assert_eq!(back, history);
    }

    #[test]
    fn bad_json_line_is_named_by_number() {
        let text = "{\"event\":\"invoke\",\"process\":1,\"time_ns\":1,\"operation\":{\"kind\":\"read\",\"key\":1}}\nnot json\n";
        let error = History::read_json_lines(text.as_bytes()).unwrap_err();
        assert!(matches!(error, HistoryError::Parse { line: 2, .. }), "{error}");
    }

    #[test]
    fn completions_pair_by_process_and_leave_unfinished_ops_unknown() {
        let mut history = History::new();
        history.invoke(1, 1, Operation::Read { key: 1 });
        history.invoke(2, 2, Operation::Write { key: 1, value: 5 });
        history.complete(1, 3, Outcome::Ok { value: Some(5) });
        let completions = history.completions().unwrap();
        assert_eq!(completions.len(), 2);
        assert_eq!(completions[0].complete_ns, Some(3));
        assert_eq!(completions[0].outcome, Outcome::Ok { value: Some(5) });
        assert_eq!(completions[1].complete_ns, None);
        assert_eq!(completions[1].outcome, Outcome::Unknown);
    }

    #[test]
    fn malformed_histories_are_errors_naming_the_event() {
        let mut double = History::new();
        double.invoke(1, 1, Operation::Read { key: 1 });
        double.invoke(1, 2, Operation::Read { key: 1 });
        assert!(matches!(
            double.completions(),
            Err(HistoryError::DoubleInvoke {
                event_index: 1,
                pending_index: 0,
                ..
            })
        ));

        let mut orphan = History::new();
        orphan.complete(4, 1, Outcome::Failed);
        assert!(matches!(
            orphan.completions(),
            Err(HistoryError::CompleteWithoutInvoke {
                event_index: 0,
                process: 4
            })
        ));

        let mut backwards = History::new();
        backwards.invoke(1, 10, Operation::Read { key: 1 });
        backwards.complete(1, 9, Outcome::Failed);
        assert!(matches!(
            backwards.completions(),
            Err(HistoryError::TimeWentBackwards { event_index: 1, .. })
        ));

        let mut valueless = History::new();
        valueless.invoke(1, 1, Operation::Increment { key: 1 });
        valueless.complete(1, 2, Outcome::Ok { value: None });
        assert!(matches!(
            valueless.completions(),
            Err(HistoryError::BadOkValue { event_index: 1, .. })
        ));
    }
}
