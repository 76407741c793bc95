//! Spreading client connections evenly over the workers.
//!
//! The kernel gives each new connection to one worker's `SO_REUSEPORT` socket by a hash of its
//! addresses, which leaves the workers with uneven shares of a few dozen long-lived keep-alive
//! connections (measured with 64: anywhere from 32/32 to 42/22 over two workers). The worker
//! with more then queues more ready connections per wake-up, and its requests wait longer.
//! So a worker that holds clearly more open connections than the least busy one hands each new
//! connection it accepts to that one, as haproxy's accept queues do.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;

/// How many more open connections than the least busy worker a worker may hold before it hands
/// new ones over. Moving one costs an `epoll_ctl` and, when the other worker sleeps, a wake-up;
/// a small slack keeps that off the path of most short-lived connections.
const SLACK: usize = 2;

/// The workers' event loops and how many client connections each has open.
pub struct Spread {
    workers: Vec<Handle>,
    open: Box<[AtomicUsize]>,
}

/// Counts one open connection on a worker for as long as it is held.
pub struct Held {
    spread: Arc<Spread>,
    worker: usize,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.spread.open[self.worker].fetch_sub(1, Ordering::Relaxed);
    }
}

impl Spread {
    /// Spreads over these event loops, one per worker.
    pub fn new(workers: &[Handle]) -> Arc<Spread> {
        Arc::new(Spread {
            workers: workers.to_vec(),
            open: workers.iter().map(|_| AtomicUsize::new(0)).collect(),
        })
    }

    /// The workers' event loops.
    pub fn workers(&self) -> &[Handle] {
        &self.workers
    }

    /// The worker that should serve a connection that worker `me` accepted: `me`, unless it
    /// holds more than `SLACK` connections more than the least busy worker.
    pub fn pick(&self, me: usize) -> usize {
        let mine = self.open[me].load(Ordering::Relaxed);
        let (least, fewest) = self
            .open
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .enumerate()
            .min_by_key(|&(_, n)| n)
            .unwrap_or((me, mine));
        if mine > fewest + SLACK { least } else { me }
    }

    /// Counts a connection open on `worker` until the returned value is dropped.
    pub fn hold(self: &Arc<Self>, worker: usize) -> Held {
        self.open[worker].fetch_add(1, Ordering::Relaxed);
        Held {
            spread: self.clone(),
            worker,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spread(n: usize) -> Arc<Spread> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        Spread::new(&vec![rt.handle().clone(); n])
    }

    #[test]
    fn a_worker_within_the_slack_keeps_its_connection() {
        let s = spread(2);
        let _held: Vec<_> = (0..SLACK).map(|_| s.hold(0)).collect();
        assert_eq!(s.pick(0), 0);
    }

    #[test]
    fn a_worker_past_the_slack_hands_over_to_the_least_busy() {
        let s = spread(3);
        let _a: Vec<_> = (0..SLACK + 2).map(|_| s.hold(0)).collect();
        let _b: Vec<_> = (0..2).map(|_| s.hold(1)).collect();
        let _c: Vec<_> = (0..1).map(|_| s.hold(2)).collect();
        assert_eq!(s.pick(0), 2);
        assert_eq!(s.pick(1), 1);
    }

    #[test]
    fn a_closed_connection_no_longer_counts() {
        let s = spread(2);
        let held: Vec<_> = (0..SLACK + 1).map(|_| s.hold(0)).collect();
        assert_eq!(s.pick(0), 1);
        drop(held);
        assert_eq!(s.pick(0), 0);
    }
}
