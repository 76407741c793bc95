//! The state of one listener that outlives a reload: its open-connection count (for
//! `max_connections`) and its counters.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::config::Name;
use crate::metrics::ListenerMetrics;

/// The counters of one listener, carried across reloads while its name and address stay.
pub struct ListenerState {
    pub name: Name,
    /// Open client connections (for `max_connections`).
    pub active: AtomicUsize,
    pub metrics: ListenerMetrics,
}

impl ListenerState {
    pub fn new(name: Name, metrics: ListenerMetrics) -> ListenerState {
        ListenerState {
            name,
            active: AtomicUsize::new(0),
            metrics,
        }
    }

    /// Counts a new connection unless `max` are already open; the caller must call
    /// [`ListenerState::release`] for every `true`.
    pub fn admit(&self, max: Option<usize>) -> bool {
        let before = self.active.fetch_add(1, Ordering::Relaxed);
        if max.is_some_and(|m| before >= m) {
            self.active.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        self.metrics.active.inc();
        true
    }

    /// Counts a connection as closed.
    pub fn release(&self) {
        self.active.fetch_sub(1, Ordering::Relaxed);
        self.metrics.active.dec();
    }
}
