//! What every part of the process shares, low in the tree so that the listener, the proxy and
//! the admin endpoint read it without importing the runtime that conducts them.
//!
//! [`Shared`] holds the running snapshot (an `ArcSwap<Running>`, stored only by the runtime) and
//! the process-wide handles; [`running`] builds a snapshot from a resolved configuration and
//! carries per-listener, per-backend and per-server state across reloads by identity.

mod listener;
mod running;

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use tokio::sync::Notify;
use tokio_util::task::TaskTracker;

use crate::metrics::Metrics;

pub use listener::ListenerState;
pub use running::{Discovered, Route, Running, build, forget_removed, mark_removed, rebuild};

/// What every part of the process shares: the current snapshot and process-wide handles.
pub struct Shared {
    pub running: ArcSwap<Running>,
    /// Every proxied connection, so shutdown can wait for them.
    pub tracker: TaskTracker,
    pub metrics: Arc<Metrics>,
    /// Signalled when any server changes state.
    pub changes: Arc<Notify>,
    /// The outcome of the last (re)load.
    pub last_reload: Mutex<LastReload>,
}

/// When the configuration was last (re)loaded, and why it was rejected if it was.
#[derive(Debug, Clone)]
pub struct LastReload {
    pub at: SystemTime,
    pub rejection: Option<Rejection>,
}

/// A rejected reload, remembered until a reload succeeds.
#[derive(Debug, Clone)]
pub struct Rejection {
    pub at: SystemTime,
    pub reason: String,
}
