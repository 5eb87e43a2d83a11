//! The park bound (`coraft::runtime::ParkBound`): glommio 0.9 can park an
//! executor that still has runnable tasks, when a preemption is pending
//! before its task queues run; with nothing else in flight it then sleeps
//! in `io_uring_enter` for good (issue 16's hung sweep runs). A short
//! preemption timer makes that likely on any machine; the keeper's foreign
//! wakes must get every slice through anyway. The test executor's first
//! loop turn, before the keeper's first poll, has the default 100 ms timer,
//! as a shard's: see `docs/journal/issue-16-hang.md` (end).

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use coraft::runtime::{Keeper, ParkBound, PARK_BOUND};

/// Preemption-timer periods the spinning task must get through: without
/// the keeper the executor parks for good well before this many.
const SLICES: u64 = 20_000;

/// The short preemption timer of the spinning task's queue: one this short
/// often fires between the run loop's I/O poll and its task queues, the
/// parking bug's trigger.
const SHORT_PREEMPT: Duration = Duration::from_micros(20);

/// How long no slice may complete before the executor counts as hung.
const PROGRESS_DEADLINE: Duration = Duration::from_secs(30);

/// Runs `SLICES` preemption slices of a task that always has work, on an
/// executor whose keeper is `keeper` (none: the bug left alone); returns
/// when done or panics once no slice completed for `PROGRESS_DEADLINE`.
fn spin_slices(keeper: Option<Keeper>) {
    let (progress, slices) = mpsc::channel();
    let worker = thread::spawn(move || {
        // The executor's default preemption timer is glommio's 100 ms, as a
        // shard's: the first loop turn of `run` arms it before any task was
        // polled, and had it fired by the time the task queues run, the
        // executor would park before the keeper's first poll with nothing
        // to wake it (with a 20 µs default that happened about 1 run in 5).
        // `spawn_local` polls the keeper at once.
        let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .make()
            .unwrap();
        executor.run(async move {
            if let Some(keeper) = keeper {
                glommio::spawn_local(keeper).detach();
            }
            // Only this queue has the short timer; it is active (runnable)
            // at every loop turn, so every turn arms 20 µs.
            let busy = glommio::executor().create_task_queue(
                glommio::Shares::default(),
                glommio::Latency::Matters(SHORT_PREEMPT),
                "short-preempt",
            );
            let spinner = glommio::spawn_local_into(
                async move {
                    for slice in 0..SLICES {
                        // Spins until the timer fires, then yields: the loop
                        // polls I/O and rearms the timer before running it
                        // again, or parks by mistake.
                        while !glommio::executor().need_preempt() {
                            std::hint::spin_loop();
                        }
                        let _ = progress.send(slice);
                        glommio::yield_if_needed().await;
                    }
                },
                busy,
            )
            .unwrap();
            spinner.await;
        });
    });
    let started = Instant::now();
    let mut done = 0;
    loop {
        match slices.recv_timeout(PROGRESS_DEADLINE) {
            Ok(slice) => done = slice + 1,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("the executor stayed parked for {PROGRESS_DEADLINE:?} after {done} of {SLICES} slices")
            }
        }
    }
    worker.join().unwrap();
    assert_eq!(done, SLICES);
    eprintln!("{SLICES} slices in {:?}", started.elapsed());
}

#[test]
fn an_executor_parked_with_runnable_work_is_woken_within_the_park_bound() {
    let bound = ParkBound::start("park-bound-test", PARK_BOUND, None).unwrap();
    spin_slices(Some(bound.keeper().expect("a free keeper slot")));
}

/// Shows the bug the keeper works around (it hangs): run it alone with
/// `--ignored --exact`.
#[test]
#[ignore = "hangs by design: the parking bug without the keeper"]
fn without_a_keeper_an_executor_parks_for_good_with_runnable_work() {
    spin_slices(None);
}

#[test]
fn keepers_are_bounded_and_a_dropped_keeper_frees_its_slot() {
    let bound = ParkBound::start("park-bound-test", PARK_BOUND, None).unwrap();
    let keepers: Vec<_> = (0..coraft::runtime::PARK_BOUND_KEEPERS_MAX)
        .map(|_| bound.keeper().expect("a slot below the bound"))
        .collect();
    assert!(bound.keeper().is_none(), "one keeper past PARK_BOUND_KEEPERS_MAX");
    drop(keepers);
    assert!(bound.keeper().is_some(), "the dropped keepers' slots are free again");
}
