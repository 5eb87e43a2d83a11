//! `coraft-bench reactor`: what one glommio executor wake costs on this
//! machine, the floor under every I/O completion a shard waits for.
//!
//! Three loops on one unbound executor, each timed by wall clock and by the
//! thread's CPU time: a plain future yield (the task runs again without the
//! executor looking at its rings), a task-queue yield (the executor polls its
//! rings between runs), and a 1 µs timer sleep (the executor parks: it arms
//! its timers, sleeps in io_uring and is woken by the timer's completion,
//! the path a shard takes whenever it waits for a socket or the disk); and,
//! as the raw floor, a thread that sleeps 1 µs with `nanosleep`.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use glommio::{LocalExecutorBuilder, Placement};

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid clock id and a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

struct Point {
    name: &'static str,
    wall_us: f64,
    cpu_us: f64,
}

async fn time<F: std::future::Future<Output = ()>>(name: &'static str, rounds: u32, step: impl Fn() -> F) -> Point {
    let (wall, cpu) = (Instant::now(), thread_cpu());
    for _ in 0..rounds {
        step().await;
    }
    Point {
        name,
        wall_us: wall.elapsed().as_secs_f64() * 1e6 / f64::from(rounds),
        cpu_us: (thread_cpu() - cpu).as_secs_f64() * 1e6 / f64::from(rounds),
    }
}

/// `coraft-bench reactor`: no knobs; the loops run a fixed number of rounds.
#[derive(clap::Args, Debug, Clone)]
pub struct ReactorArgs {
    /// Print one JSON line per loop instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs the reactor floor.
pub fn run(args: ReactorArgs) -> Result<()> {
    let json = args.json;
    let points = LocalExecutorBuilder::new(Placement::Unbound)
        .name("reactor-floor")
        .spawn(|| async {
            vec![
                time("future yield", 200_000, futures_lite::future::yield_now).await,
                time("task queue yield", 200_000, || async {
                    glommio::executor().yield_task_queue_now().await
                })
                .await,
                time("park and wake (1 µs timer)", 20_000, || {
                    glommio::timer::sleep(Duration::from_micros(1))
                })
                .await,
            ]
        })
        .map_err(|e| anyhow!("starting an executor: {e}"))?
        .join()
        .map_err(|e| anyhow!("the executor failed: {e}"))?;
    // The raw floor: the same sleep and wake by the kernel alone.
    let (wall, cpu) = (Instant::now(), thread_cpu());
    let rounds = 20_000;
    for _ in 0..rounds {
        std::thread::sleep(Duration::from_micros(1));
    }
    let mut points = points;
    points.push(Point {
        name: "raw floor: nanosleep(1 µs)",
        wall_us: wall.elapsed().as_secs_f64() * 1e6 / f64::from(rounds),
        cpu_us: (thread_cpu() - cpu).as_secs_f64() * 1e6 / f64::from(rounds),
    });
    for point in &points {
        if json {
            println!(
                "{{\"step\":\"{}\",\"wall_us\":{:.3},\"cpu_us\":{:.3}}}",
                point.name, point.wall_us, point.cpu_us
            );
        } else {
            println!(
                "{:<28} {:>9.3} µs wall {:>9.3} µs CPU per step",
                point.name, point.wall_us, point.cpu_us
            );
        }
    }
    Ok(())
}
