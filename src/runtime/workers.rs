//! The proxy's worker threads: each runs its own single-threaded event loop.
//!
//! One event loop per core, each with its own `SO_REUSEPORT` listening sockets, measured ahead of
//! tokio's work-stealing scheduler on this workload: a connection never moves between threads, so
//! its sockets, buffers and timers stay in one core's cache and nothing is shared on the data path.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::proxy;

/// The longest time between two heartbeats of a worker.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// A running set of worker threads.
pub struct Workers {
    handles: Vec<Handle>,
    threads: Vec<(JoinHandle<()>, oneshot::Sender<()>)>,
    heartbeats: Vec<Arc<AtomicU64>>,
}

impl Workers {
    /// Starts `n` worker threads.
    pub fn start(n: usize) -> std::io::Result<Workers> {
        let mut w = Workers {
            handles: Vec::new(),
            threads: Vec::new(),
            heartbeats: Vec::new(),
        };
        for i in 0..n {
            // Sockets and timers only: signals and child processes are the main runtime's. With
            // `enable_all` every worker's event loop also tried the lock of tokio's global queue
            // of orphaned child processes each time it woke (0.1–0.2% of the proxy's CPU samples
            // under keep-alive load, and a cache line both workers write).
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build()?;
            let (stop, stopped) = oneshot::channel::<()>();
            w.handles.push(rt.handle().clone());
            let thread = std::thread::Builder::new()
                .name(format!("roundhouse-w{i}"))
                .spawn(move || {
                    crate::metrics::set_worker();
                    // Returns when told to stop (or when the sender is dropped); dropping the
                    // runtime then closes whatever connections are still open on this thread.
                    let _ = rt.block_on(stopped);
                })?;
            w.threads.push((thread, stop));
            w.heartbeats.push(Arc::new(AtomicU64::new(0)));
        }
        Ok(w)
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
