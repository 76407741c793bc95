//! One server's state, as both sides see it: what identifies it across reloads, what an operator
//! asked of it, its health (the rise/fall tracker in [`health`]) and its counters.
//!
//! Neither the balancer side ([`crate::backend`]) nor the checker side ([`crate::health`]) owns
//! this: the checkers write observations into a [`ServerState`], the balancer reads
//! [`ServerState::in_rotation`] with two relaxed atomic loads, and a reload hands the same
//! `Arc<ServerState>` to the new snapshot for every server that stays.

pub mod health;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::Notify;

use crate::config::Name;
use crate::metrics::{IdleClose, ServerMetrics};
use crate::nodes::{NodeId, NodeInfo};

pub use health::{ClusterView, FailureKind, Health, Observation, Tracker, Transition};

/// What identifies a server across reloads and discovery refreshes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerKey {
    pub backend: Name,
    pub server: Name,
    pub identity: Identity,
}

/// What makes a server the same server: a configured one is its address (the same name at a
/// new address is checked afresh); a discovered one is its node id, wherever it publishes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    Address(SocketAddr),
    Node(NodeId),
}

/// What an operator asked of a server through the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum AdminState {
    /// In rotation whenever healthy.
    Ready = 0,
    /// No new connections; open ones finish. Health checks go on.
    Drain = 1,
    /// Out of rotation and health checks paused (maintenance).
    Maint = 2,
}

impl AdminState {
    fn from_u8(v: u8) -> AdminState {
        match v {
            1 => AdminState::Drain,
            2 => AdminState::Maint,
            _ => AdminState::Ready,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AdminState::Ready => "ready",
            AdminState::Drain => "drain",
            AdminState::Maint => "maint",
        }
    }
}

/// The state of one server that is carried across reloads.
pub struct ServerState {
    pub key: ServerKey,
    pub health: Tracker,
    admin: AtomicU8,
    pub metrics: ServerMetrics,
    /// Wakes the server's checker for an immediate check.
    pub recheck: Notify,
    /// Tells the runtime that some server's state changed (for STATUS and backend gauges).
    changes: Arc<Notify>,
    /// The state word last published and since when it holds.
    published: Mutex<(&'static str, SystemTime)>,
    /// Kept out of rotation by the backend's roles filter (read on every pick).
    excluded: AtomicBool,
    /// Why the roles filter keeps it out.
    exclusion: Mutex<Option<String>>,
    /// What the node last said about itself (`/_nodes/_local/http`), when the check asks.
    node: Mutex<Option<NodeInfo>>,
    /// Client connections given to this server and not yet closed, counted from the moment it is
    /// picked (for least connections, across all worker threads).
    pub in_use: AtomicUsize,
    /// Why the server takes no new connections (an [`IdleClose`] as u8), 0 while it does: its
    /// followed connections close at their next idle point.
    leaving: AtomicU8,
}

impl ServerState {
    /// A server not checked yet, in the operator's state `admin`.
    pub fn new(
        key: ServerKey,
        metrics: ServerMetrics,
        changes: Arc<Notify>,
        admin: AdminState,
    ) -> ServerState {
        let s = ServerState {
            key,
            health: Tracker::default(),
            admin: AtomicU8::new(admin as u8),
            metrics,
            recheck: Notify::new(),
            changes,
            published: Mutex::new(("", SystemTime::now())),
            excluded: AtomicBool::new(false),
            exclusion: Mutex::new(None),
            node: Mutex::new(None),
            in_use: AtomicUsize::new(0),
            leaving: AtomicU8::new(0),
        };
        s.publish_state();
        s
    }

    pub fn admin(&self) -> AdminState {
        AdminState::from_u8(self.admin.load(Ordering::Relaxed))
    }

    /// Sets the operator's state; returns the previous one.
    pub fn set_admin(&self, state: AdminState) -> AdminState {
        let old = AdminState::from_u8(self.admin.swap(state as u8, Ordering::Relaxed));
        if old != state {
            self.metrics.state_changes.inc();
            self.publish_state();
            if old == AdminState::Maint {
                // checks were paused: find out where the server stands now
                self.recheck.notify_one();
            }
        }
        old
    }

    /// True when the server may receive a new connection.
    pub fn in_rotation(&self) -> bool {
        self.health.health() == Health::Up
            && self.admin() == AdminState::Ready
            && !self.excluded.load(Ordering::Relaxed)
    }

    /// True when the server may receive connections while its backend fails open: it is down
    /// only because of the cluster colour, nobody drained it and its roles do not exclude it.
    pub fn fail_open_eligible(&self) -> bool {
        self.admin() == AdminState::Ready
            && self.health.down_on_colour_only()
            && !self.excluded.load(Ordering::Relaxed)
    }

    /// The single word used in metrics and status: up, down, excluded, drain or maint.
    pub fn state_word(&self) -> &'static str {
        match (self.admin(), self.health.health()) {
            (AdminState::Maint, _) => "maint",
            (AdminState::Drain, _) => "drain",
            (AdminState::Ready, Health::Up) if self.excluded.load(Ordering::Relaxed) => "excluded",
            (AdminState::Ready, Health::Up) => "up",
            (AdminState::Ready, _) => "down",
        }
    }

    /// True when the backend's roles filter keeps the server out of rotation.
    pub fn is_excluded(&self) -> bool {
        self.excluded.load(Ordering::Relaxed)
    }

    /// Why the roles filter keeps the server out of rotation, if it does.
    pub fn exclusion(&self) -> Option<String> {
        self.exclusion
            .lock()
            .expect("exclusion lock is never poisoned")
            .clone()
    }

    /// Records the roles filter's verdict; logs and publishes a change once.
    pub fn set_exclusion(&self, reason: Option<String>) {
        let mut current = self
            .exclusion
            .lock()
            .expect("exclusion lock is never poisoned");
        if *current == reason {
            return;
        }
        let (backend, server) = (&*self.key.backend, &*self.key.server);
        match &reason {
            Some(why) => {
                tracing::info!(backend = %backend, server = %server, reason = ?why, "server kept out of rotation by its roles")
            }
            None => {
                tracing::info!(backend = %backend, server = %server, "server's roles make it a client entry point")
            }
        }
        self.excluded.store(reason.is_some(), Ordering::Relaxed);
        self.metrics.excluded.set(i64::from(reason.is_some()));
        *current = reason;
        drop(current);
        self.publish_state();
    }

    /// Why the server takes no new connections, if it does not (read by its connections at
    /// each idle point: one relaxed load).
    pub fn leaving(&self) -> Option<IdleClose> {
        IdleClose::from_u8(self.leaving.load(Ordering::Relaxed))
    }

    /// Records whether the server takes new connections; true when it has just stopped (its idle
    /// connections must then be woken to close).
    pub fn set_leaving(&self, reason: Option<IdleClose>) -> bool {
        let new = reason.map_or(0, |r| r as u8);
        let old = self.leaving.swap(new, Ordering::Relaxed);
        old != new && new != 0
    }

    /// Counts a client connection given to this server, until the guard is dropped.
    pub fn hold(&self) -> InUse<'_> {
        self.in_use.fetch_add(1, Ordering::Relaxed);
        InUse(&self.in_use)
    }

    /// What the node last said about itself.
    pub fn node(&self) -> Option<NodeInfo> {
        self.node
            .lock()
            .expect("node lock is never poisoned")
            .clone()
    }

    /// Records what the node said about itself.
    pub fn set_node(&self, info: NodeInfo) {
        *self.node.lock().expect("node lock is never poisoned") = Some(info);
    }

    /// Records the result of a health check.
    pub fn observe(&self, obs: Observation, rise: u32, fall: u32) -> Option<Transition> {
        if obs.failure.is_none() {
            self.metrics.checks_pass.inc();
        } else {
            self.metrics.checks_fail.inc();
        }
        if let Some(c) = &obs.cluster {
            self.metrics.set_cluster_status(c.status);
        }
        self.record(obs, rise, fall)
    }

    /// Records a failed client connect: it counts toward `fall` like a failed check, and asks
    /// the checker to confirm at once.
    pub fn observe_passive(&self, obs: Observation, rise: u32, fall: u32) -> Option<Transition> {
        let t = self.record(obs, rise, fall);
        self.recheck.notify_one();
        t
    }

    /// Logs and publishes a change of state once, with its reason.
    fn record(&self, obs: Observation, rise: u32, fall: u32) -> Option<Transition> {
        let t = self.health.record(obs, rise, fall)?;
        let (backend, server) = (&*self.key.backend, &*self.key.server);
        match t.to {
            Health::Up if t.from == Health::Unknown => {
                tracing::info!(backend = %backend, server = %server, "server is up")
            }
            Health::Up => {
                tracing::info!(backend = %backend, server = %server, "server is up again")
            }
            _ => {
                tracing::warn!(backend = %backend, server = %server, reason = ?t.reason, "server is down")
            }
        }
        if t.from != Health::Unknown {
            self.metrics.state_changes.inc();
        }
        self.publish_state();
        Some(t)
    }

    /// Since when the server is in its current state (up, down, drain or maint).
    pub fn since(&self) -> SystemTime {
        self.published
            .lock()
            .expect("published lock is never poisoned")
            .1
    }

    fn publish_state(&self) {
        let word = self.state_word();
        let mut published = self
            .published
            .lock()
            .expect("published lock is never poisoned");
        if published.0 != word {
            *published = (word, SystemTime::now());
        }
        drop(published);
        self.metrics.set_state(word);
        self.changes.notify_one();
    }
}

/// One client connection counted in [`ServerState::in_use`] while it lives.
pub struct InUse<'a>(&'a AtomicUsize);

impl Drop for InUse<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
