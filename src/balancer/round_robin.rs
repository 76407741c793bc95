//! Weighted round robin over whichever servers are eligible right now.
//!
//! The weights are expanded once, when a configuration is loaded, into a smoothly interleaved
//! schedule (for weights 1 and 2: b a b, not a b b), so picking is one atomic increment and an
//! array read. A slot whose server is not eligible is not handed to its neighbour: the picker
//! takes a fresh slot instead, so the servers that are left keep sharing the load evenly.

use std::sync::atomic::{AtomicUsize, Ordering};

/// A weighted round-robin schedule over servers `0..n`.
#[derive(Debug)]
pub struct RoundRobin {
    schedule: Box<[u32]>,
    cursor: AtomicUsize,
}

impl RoundRobin {
    /// A schedule for servers with these weights (each at least 1).
    pub fn new(weights: &[u32]) -> RoundRobin {
        RoundRobin {
            schedule: smooth_schedule(weights).into_boxed_slice(),
            cursor: AtomicUsize::new(0),
        }
    }

    /// The next eligible server, or `None` when no server is eligible.
    pub fn pick(&self, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        let len = self.schedule.len();
        // Each server appears at least once, so `len` slots visit every server.
        for _ in 0..len {
            let slot = self.cursor.fetch_add(1, Ordering::Relaxed) % len;
            let server = self.schedule[slot] as usize;
            if eligible(server) {
                return Some(server);
            }
        }
        None
    }
}

/// nginx's smooth weighted round robin, unrolled over one full cycle.
fn smooth_schedule(weights: &[u32]) -> Vec<u32> {
    let total: i64 = weights.iter().map(|&w| i64::from(w.max(1))).sum();
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, w) in weights.iter().enumerate() {
            current[i] += i64::from((*w).max(1));
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(best as u32);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(
        rr: &RoundRobin,
        n: usize,
        picks: usize,
        eligible: impl Fn(usize) -> bool,
    ) -> Vec<usize> {
        let mut c = vec![0; n];
        for _ in 0..picks {
            c[rr.pick(&eligible).unwrap()] += 1;
        }
        c
    }

    #[test]
    fn equal_weights_rotate_evenly() {
        let rr = RoundRobin::new(&[1, 1, 1]);
        let order: Vec<usize> = (0..6).map(|_| rr.pick(|_| true).unwrap()).collect();
        assert_eq!(order, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn weights_are_respected_and_interleaved() {
        let rr = RoundRobin::new(&[1, 2]);
        let order: Vec<usize> = (0..3).map(|_| rr.pick(|_| true).unwrap()).collect();
        assert_eq!(order, [1, 0, 1]);
        assert_eq!(counts(&rr, 2, 300, |_| true), [100, 200]);
    }

    #[test]
    fn an_ineligible_server_does_not_overload_its_neighbour() {
        let rr = RoundRobin::new(&[1, 1, 1]);
        assert_eq!(counts(&rr, 3, 600, |i| i != 1), [300, 0, 300]);
    }

    #[test]
    fn nothing_eligible_is_none() {
        let rr = RoundRobin::new(&[3, 1]);
        assert_eq!(rr.pick(|_| false), None);
    }
}
