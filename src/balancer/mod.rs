//! Server selection over whichever servers are eligible right now: one file per algorithm. No
//! I/O and no locks: a pick is a few atomic operations and array reads.

mod least_connections;
mod round_robin;

pub use least_connections::LeastConnections;
pub use round_robin::RoundRobin;

/// A backend's way of picking a server.
#[derive(Debug)]
pub enum Balancer {
    RoundRobin(RoundRobin),
    LeastConnections(LeastConnections),
}

impl Balancer {
    /// The next server among those `eligible`; `load(i)` is server `i`'s open connections (only
    /// least connections asks).
    pub fn pick(
        &self,
        eligible: impl Fn(usize) -> bool,
        load: impl Fn(usize) -> usize,
    ) -> Option<usize> {
        match self {
            Balancer::RoundRobin(rr) => rr.pick(eligible),
            Balancer::LeastConnections(lc) => lc.pick(eligible, load),
        }
    }
}
