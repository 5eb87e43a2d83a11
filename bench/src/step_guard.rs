//! A bound on each step of an embedded run that waits on the nodes running
//! in this process: starting a node, waiting for leaders, reading metrics,
//! shutting down. Those calls block until a shard answers, and a shard
//! that never answers (issue 16: an executor parked for good) cannot be
//! stopped from outside, so past [`EMBEDDED_STEP_TIMEOUT`] the process
//! exits with an error naming the step instead of hanging.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Longest one step of an embedded run may take (a node starts in about a
/// second on a loaded 2-CPU machine).
pub const EMBEDDED_STEP_TIMEOUT: Duration = Duration::from_secs(120);

/// Exit status of a run stopped by the guard (as for any failed run).
const EXIT_STEP_TIMED_OUT: i32 = 1;

#[derive(Default)]
struct State {
    /// The step under way and when it must be over.
    step: Option<(String, Instant)>,
    stop: bool,
}

/// Watches the current step from its own thread; stops when dropped.
pub struct StepGuard {
    shared: Arc<(Mutex<State>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl StepGuard {
    pub fn start() -> StepGuard {
        let shared = Arc::new((Mutex::new(State::default()), Condvar::new()));
        let watched = shared.clone();
        let thread = std::thread::Builder::new()
            .name("bench-step-guard".into())
            .spawn(move || watch(&watched))
            .expect("starting the step guard's thread");
        StepGuard {
            shared,
            thread: Some(thread),
        }
    }

    /// `what` starts now and must end within [`EMBEDDED_STEP_TIMEOUT`].
    pub fn step(&self, what: impl Into<String>) {
        let mut state = self.shared.0.lock().unwrap_or_else(|e| e.into_inner());
        state.step = Some((what.into(), Instant::now() + EMBEDDED_STEP_TIMEOUT));
        self.shared.1.notify_all();
    }

    /// No step under way (the drivers bound their own waits).
    pub fn idle(&self) {
        self.shared.0.lock().unwrap_or_else(|e| e.into_inner()).step = None;
    }
}

impl Drop for StepGuard {
    fn drop(&mut self) {
        self.shared.0.lock().unwrap_or_else(|e| e.into_inner()).stop = true;
        self.shared.1.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn watch(shared: &(Mutex<State>, Condvar)) {
    let (lock, changed) = shared;
    let mut state = lock.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if state.stop {
            return;
        }
        let wait = match &state.step {
            None => Duration::from_secs(3600),
            Some((what, deadline)) => match deadline.checked_duration_since(Instant::now()) {
                Some(left) => left,
                None => {
                    eprintln!(
                        "error: {what}: not done within {} s (EMBEDDED_STEP_TIMEOUT); a shard of a node in this \
                         process stopped answering and cannot be stopped from here, so the run ends",
                        EMBEDDED_STEP_TIMEOUT.as_secs()
                    );
                    std::process::exit(EXIT_STEP_TIMED_OUT);
                }
            },
        };
        state = changed.wait_timeout(state, wait).unwrap_or_else(|e| e.into_inner()).0;
    }
}
