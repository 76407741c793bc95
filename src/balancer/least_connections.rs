//! Least connections: the eligible server with the fewest open connections for its weight, ties
//! taken in turn.
//!
//! Elasticsearch clients hold long keep-alive connections, and one search can cost a thousand
//! times another: counting connections, not turns, keeps a server that is busy with slow
//! requests from being handed more. The counts are per server and shared by every worker
//! thread, so the choice is the same whichever thread accepted the client.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Least connections over servers `0..n` with these weights.
#[derive(Debug)]
pub struct LeastConnections {
    weights: Box<[u32]>,
    /// Where the scan starts, so that servers with equal load take turns.
    cursor: AtomicUsize,
}

impl LeastConnections {
    /// For servers with these weights (each at least 1).
    pub fn new(weights: &[u32]) -> LeastConnections {
        LeastConnections {
            weights: weights.iter().map(|w| (*w).max(1)).collect(),
            cursor: AtomicUsize::new(0),
        }
    }

    /// The eligible server with the lowest `load / weight`; `None` when none is eligible.
    pub fn pick(
        &self,
        eligible: impl Fn(usize) -> bool,
        load: impl Fn(usize) -> usize,
    ) -> Option<usize> {
        let n = self.weights.len();
        if n == 0 {
            return None;
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed) % n;
        let mut best: Option<(usize, u64, u64)> = None;
        for k in 0..n {
            let i = (start + k) % n;
            if !eligible(i) {
                continue;
            }
            let (l, w) = (load(i) as u64, u64::from(self.weights[i]));
            // l / w < best_l / best_w, without division
            if best.is_none_or(|(_, bl, bw)| l * bw < bl * w) {
                best = Some((i, l, w));
            }
        }
        best.map(|(i, _, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_loaded_server_is_picked() {
        let lc = LeastConnections::new(&[1, 1, 1]);
        let load = [5, 1, 3];
        for _ in 0..10 {
            assert_eq!(lc.pick(|_| true, |i| load[i]), Some(1));
        }
    }

    #[test]
    fn ties_take_turns() {
        let lc = LeastConnections::new(&[1, 1, 1]);
        let picks: Vec<usize> = (0..6).map(|_| lc.pick(|_| true, |_| 0).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn weights_scale_the_load() {
        // weight 2 with 3 connections (1.5 each) beats weight 1 with 2
        let lc = LeastConnections::new(&[1, 2]);
        assert_eq!(lc.pick(|_| true, |i| [2, 3][i]), Some(1));
        // and loses to weight 1 with 1
        assert_eq!(lc.pick(|_| true, |i| [1, 3][i]), Some(0));
    }

    #[test]
    fn connections_spread_in_proportion_to_weight() {
        let lc = LeastConnections::new(&[1, 3]);
        let mut load = [0usize; 2];
        for _ in 0..400 {
            let i = lc.pick(|_| true, |i| load[i]).unwrap();
            load[i] += 1;
        }
        assert_eq!(load, [100, 300]);
    }

    #[test]
    fn only_eligible_servers() {
        let lc = LeastConnections::new(&[1, 1, 1]);
        assert_eq!(lc.pick(|i| i == 2, |i| [0, 0, 9][i]), Some(2));
        assert_eq!(lc.pick(|_| false, |_| 0), None);
    }
}
