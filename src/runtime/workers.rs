//! The proxy's worker threads: each runs its own single-threaded event loop.
//!
//! One event loop per core, each with its own `SO_REUSEPORT` listening sockets, measured ahead of
//! tokio's work-stealing scheduler on this workload: a connection never moves between threads, so
//! its sockets, buffers and timers stay in one core's cache and nothing is shared on the data path.
//!
//! With `pin_workers` and one worker per CPU the process may run on (`workers: auto` on a machine
//! or a cpuset of its own), each worker is also bound to its own CPU. Left to the scheduler, the
//! two workers and the processes around them (clients, backends) were often placed so that a core
//! sat idle while work waited on the other: `benches/compare.py` measured the cores busy 0.84 of
//! the time with the workers free to move, 0.92 with each bound to its CPU, and 1.11× the
//! keep-alive rate (the CPU per request the same). It is off by default for the tail: with 9,000
//! idle connections held open beside the load, p99 was 1.30–1.50× its value without them, against
//! about 1.1–1.2× unpinned. haproxy's rose the same way with its threads pinned (`cpu-map`,
//! 1.39–1.87×), so it is pinning on such a machine, not these workers; why is not known yet
//! (pinned, the workers waited less for a CPU on average, 11.2 against 13.9 µs per request).
//! Against haproxy pinned too, the keep-alive rate was 0.98×. Elsewhere (fewer workers than
//! CPUs, a CPU quota smaller than the cpuset) they are not pinned: which CPUs to leave to others
//! is not ours to guess.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::unistd::Pid;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::proxy;

/// The longest time between two heartbeats of a worker.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// The CPUs this process may run on, one per worker, or `None` when their number is not the
/// workers' (then no worker is pinned, and the log says why).
fn cpus_to_pin(workers: usize) -> Option<Vec<usize>> {
    let allowed = match sched_getaffinity(Pid::from_raw(0)) {
        Ok(set) => set,
        Err(e) => {
            tracing::warn!(
                error = %e,
                "workers not pinned: cannot read the CPUs this process may use"
            );
            return None;
        }
    };
    let cpus: Vec<usize> = (0..CpuSet::count())
        .filter(|&c| allowed.is_set(c).unwrap_or(false))
        .collect();
    if cpus.len() != workers {
        tracing::info!(
            workers,
            cpus = cpus.len(),
            "workers not pinned: pinning needs one worker per CPU this process may use"
        );
        return None;
    }
    tracing::info!(cpus = ?cpus, "workers pinned, one per CPU");
    Some(cpus)
}

/// Binds the calling thread, worker `worker`, to `cpu`; a failure (a system call filter that
/// refuses it, say) leaves the thread free to move, and is logged.
fn pin_to(worker: usize, cpu: usize) {
    let mut set = CpuSet::new();
    let pinned = set
        .set(cpu)
        .and_then(|()| sched_setaffinity(Pid::from_raw(0), &set));
    if let Err(e) = pinned {
        tracing::warn!(worker, cpu, error = %e, "worker not pinned to its CPU");
    }
}

/// A running set of worker threads.
pub struct Workers {
    handles: Vec<Handle>,
    threads: Vec<(JoinHandle<()>, oneshot::Sender<()>)>,
    heartbeats: Vec<Arc<AtomicU64>>,
    /// `pin_workers` as started with.
    pin: bool,
}

impl Workers {
    /// Starts `n` worker threads; with `pin`, each bound to a CPU of its own when there is one
    /// worker per CPU this process may run on (see the module comment). Returns once every worker
    /// runs (named, and pinned or not): what `READY=1` then says is true of all of them.
    pub async fn start(n: usize, pin: bool) -> std::io::Result<Workers> {
        let mut w = Workers {
            handles: Vec::new(),
            threads: Vec::new(),
            heartbeats: Vec::new(),
            pin,
        };
        let cpus = if pin { cpus_to_pin(n) } else { None };
        let (running, mut started) = tokio::sync::mpsc::unbounded_channel::<()>();
        for i in 0..n {
            let cpu = cpus.as_ref().map(|c| c[i]);
            // Sockets and timers only: signals and child processes are the main runtime's. With
            // `enable_all` every worker's event loop also tried the lock of tokio's global queue
            // of orphaned child processes each time it woke (0.1–0.2% of the proxy's CPU samples
            // under keep-alive load, and a cache line both workers write).
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build()?;
            let (stop, stopped) = oneshot::channel::<()>();
            let running = running.clone();
            w.handles.push(rt.handle().clone());
            let thread = std::thread::Builder::new()
                .name(format!("roundhouse-w{i}"))
                .spawn(move || {
                    if let Some(cpu) = cpu {
                        pin_to(i, cpu);
                    }
                    crate::metrics::set_worker();
                    let _ = running.send(());
                    // Returns when told to stop (or when the sender is dropped); dropping the
                    // runtime then closes whatever connections are still open on this thread.
                    let _ = rt.block_on(stopped);
                })?;
            w.threads.push((thread, stop));
            w.heartbeats.push(Arc::new(AtomicU64::new(0)));
        }
        drop(running);
        for _ in 0..n {
            if started.recv().await.is_none() {
                w.stop();
                return Err(std::io::Error::other("a worker thread ended as it started"));
            }
        }
        Ok(w)
    }

    /// Whether the workers were started with `pin_workers` (pinned or not, see the log).
    pub fn pin(&self) -> bool {
        self.pin
    }

    /// The event loops, to spawn accept loops on.
    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }

    /// Starts a task on every worker that counts a heartbeat every `period`, so the watchdog
    /// can tell a live event loop from a hung one.
    ///
    /// The beat also keeps a timer due soon on every event loop, which saves work per connection:
    /// tokio wakes a parked event loop through its eventfd (a `write`, then one more `epoll_wait`)
    /// whenever a new timer is due before the loop's next wake-up, and without a near timer every
    /// connection's connect and idle timers were such a timer. Measured with `strace -c` under
    /// `Connection: close` load: 0.3 eventfd writes per connection before, 0.04 after.
    pub fn start_heartbeats(&self, period: Duration) {
        for (handle, beat) in self.handles.iter().zip(&self.heartbeats) {
            let beat = beat.clone();
            handle.spawn(async move {
                let mut tick = tokio::time::interval(period);
                loop {
                    tick.tick().await;
                    beat.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    }

    /// The heartbeat count of each worker.
    pub fn heartbeats(&self) -> Vec<u64> {
        self.heartbeats
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect()
    }

    /// Wakes every worker's followed connections, so that those whose server takes no new
    /// connections close at their idle point.
    pub fn wake_idle(&self) {
        for h in &self.handles {
            h.spawn(async { proxy::wake_idle_connections() });
        }
    }

    /// From now on every worker's followed connections close at their next idle point (those
    /// idle now at once): roundhouse is stopping.
    pub fn close_at_idle(&self) {
        for h in &self.handles {
            h.spawn(async { proxy::stop_idle_connections() });
        }
    }

    /// Stops every worker; connections still open are closed.
    pub fn stop(self) {
        for (thread, stop) in self.threads {
            let _ = stop.send(());
            if thread.join().is_err() {
                tracing::error!("a worker thread panicked while stopping");
            }
        }
    }
}
