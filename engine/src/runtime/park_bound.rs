//! A bound on how long a shard's executor stays parked when glommio parks it
//! by mistake.
//!
//! glommio 0.9's run loop parks the executor whenever
//! `run_task_queues` returns `false`, and it returns `false` both when no
//! task is runnable and when a preemption was already pending before it ran
//! anything. In the second case runnable tasks wait in the queue while the
//! thread sleeps in `io_uring_enter`: if nothing else is in flight (no I/O,
//! no timer registered, no foreign wake coming, as while a node starts) it
//! sleeps forever. The pending preemption is a completion in the latency
//! ring; the one that leaves the thread asleep is the preemption timer
//! (100 ms) firing between the loop's I/O poll and the task queues, which a
//! loaded machine makes likely enough: `coraft-tune sweep` hung twice in
//! 143 short runs with two shards on one or two CPUs. Attaching gdb
//! interrupts the sleep, which is why it "released" those runs. The fix
//! upstream (glommio/glommio PR 53) is not in a release we can use.
//!
//! The workaround: one thread per node wakes every shard's executor every
//! [`PARK_BOUND`] through a foreign waker (a keeper task each shard spawns).
//! A foreign wake writes the executor's eventfd only when it is asleep, so a
//! busy shard pays a channel message per period and an idle one one wake-up;
//! a sleeping executor that had runnable work runs it at most `PARK_BOUND`
//! late instead of never.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::Duration;

/// Longest a shard's executor stays parked without being woken: the period
/// of the node's park-bound thread.
pub const PARK_BOUND: Duration = Duration::from_millis(10);

/// Most executors one [`ParkBound`] thread wakes (keepers alive at once).
pub const PARK_BOUND_KEEPERS_MAX: usize = 1024;

struct Shared {
    /// One slot per keeper: the waker of its task once it has been polled.
    wakers: Mutex<Vec<Option<Waker>>>,
    stop: Mutex<bool>,
    stopped: Condvar,
}

/// A thread that wakes the executors of its [`Keeper`]s every period, so
/// none stays parked longer than that (see the module doc). Stops when
/// dropped.
pub struct ParkBound {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl ParkBound {
    /// Starts the thread, named `name`, waking every `period`; it runs on
    /// `cpus` when given (a node's helper CPUs).
    pub fn start(name: &str, period: Duration, cpus: Option<Vec<usize>>) -> std::io::Result<ParkBound> {
        let shared = Arc::new(Shared {
            wakers: Mutex::new(Vec::new()),
            stop: Mutex::new(false),
            stopped: Condvar::new(),
        });
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new().name(name.to_owned()).spawn(move || {
            if let Some(cpus) = cpus {
                if let Err(error) = super::affinity::pin_current_thread(&cpus) {
                    log::warn!("park-bound thread: cannot pin to CPUs {cpus:?}: {error}");
                }
            }
            wake_every(&thread_shared, period);
        })?;
        Ok(ParkBound {
            shared,
            thread: Some(thread),
        })
    }

    /// A future to spawn (detached) on an executor this thread should wake;
    /// it never completes. `None` past [`PARK_BOUND_KEEPERS_MAX`] keepers.
    pub fn keeper(&self) -> Option<Keeper> {
        let mut wakers = self.shared.wakers.lock().unwrap_or_else(|e| e.into_inner());
        let slot = match wakers.iter().position(Option::is_none) {
            Some(free) => free,
            None if wakers.len() < PARK_BOUND_KEEPERS_MAX => {
                wakers.push(None);
                wakers.len() - 1
            }
            None => return None,
        };
        // A placeholder until the keeper's first poll puts its waker there,
        // so the slot is not handed out twice.
        wakers[slot] = Some(Waker::noop().clone());
        Some(Keeper {
            shared: self.shared.clone(),
            slot,
        })
    }

    fn stop(&mut self) {
        *self.shared.stop.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.shared.stopped.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for ParkBound {
    fn drop(&mut self) {
        self.stop();
    }
}

fn wake_every(shared: &Shared, period: Duration) {
    let mut stop = shared.stop.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let (guard, _) = shared
            .stopped
            .wait_timeout(stop, period)
            .unwrap_or_else(|e| e.into_inner());
        stop = guard;
        if *stop {
            return;
        }
        let wakers = shared.wakers.lock().unwrap_or_else(|e| e.into_inner());
        for waker in wakers.iter().flatten() {
            waker.wake_by_ref();
        }
    }
}

/// The task through which a [`ParkBound`] thread wakes one executor: spawn
/// it on that executor (`glommio::spawn_local(keeper).detach()`). It never
/// completes; dropping it (when its executor ends) forgets the executor.
pub struct Keeper {
    shared: Arc<Shared>,
    slot: usize,
}

impl Future for Keeper {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut wakers = self.shared.wakers.lock().unwrap_or_else(|e| e.into_inner());
        let stored = &mut wakers[self.slot];
        if !stored.as_ref().is_some_and(|waker| waker.will_wake(cx.waker())) {
            *stored = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        let mut wakers = self.shared.wakers.lock().unwrap_or_else(|e| e.into_inner());
        wakers[self.slot] = None;
    }
}
