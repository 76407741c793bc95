//! The running form of a backend: its servers, each with the state that outlives a reload.
//!
//! A [`Backend`] is rebuilt on every reload from the new configuration. The state of each server
//! (health, what an operator asked of it, counters) is an `Arc<ServerState>` that a reload hands
//! over to the new backend whenever the server keeps its backend, name and address.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Notify;

use crate::balancer::RoundRobin;
use crate::config::{BackendConfig, Name, ServerConfig, WhenAllUnhealthy};
use crate::health::{Health, Observation, Tracker, Transition};
use crate::metrics::{BackendMetrics, RejectReason, ServerMetrics};

/// What identifies a server across reloads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerKey {
    pub backend: Name,
    pub server: Name,
    pub addr: SocketAddr,
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
        self.health.health() == Health::Up && self.admin() == AdminState::Ready
    }

    /// True when the server may receive connections while its backend fails open: it is down
    /// only because of the cluster colour, and nobody drained it.
    pub fn fail_open_eligible(&self) -> bool {
        self.admin() == AdminState::Ready && self.health.down_on_colour_only()
    }

    /// The single word used in metrics and status: up, down, drain or maint.
    pub fn state_word(&self) -> &'static str {
        match (self.admin(), self.health.health()) {
            (AdminState::Maint, _) => "maint",
            (AdminState::Drain, _) => "drain",
            (AdminState::Ready, Health::Up) => "up",
            (AdminState::Ready, _) => "down",
        }
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

/// One server as the current configuration describes it.
pub struct Server {
    pub config: ServerConfig,
    /// Where connections go (the configured host, resolved at load time).
    pub addr: SocketAddr,
    pub state: Arc<ServerState>,
}

/// The state of one backend that is carried across reloads.
pub struct BackendState {
    pub metrics: BackendMetrics,
    warnings: Mutex<WarningThrottle>,
    /// Whether the backend was failing open when last looked at (to log changes once).
    failing_open: AtomicBool,
}

/// Clients closed for lack of a server are logged at most once a second, with a count.
#[derive(Default)]
struct WarningThrottle {
    last: Option<Instant>,
    suppressed: u64,
}

impl BackendState {
    pub fn new(metrics: BackendMetrics) -> BackendState {
        BackendState {
            metrics,
            warnings: Mutex::default(),
            failing_open: AtomicBool::new(false),
        }
    }

    /// Records whether the backend fails open now; returns whether it did before.
    pub fn set_failing_open(&self, now: bool) -> bool {
        self.metrics.fail_open.set(i64::from(now));
        self.failing_open.swap(now, Ordering::Relaxed)
    }

    /// Logs that a client was closed because no server could take it (throttled).
    pub fn no_server_warning(&self, backend: &str, reason: RejectReason) {
        let mut w = self
            .warnings
            .lock()
            .expect("warning throttle lock is never poisoned");
        if w.last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            w.suppressed += 1;
            return;
        }
        let also = std::mem::take(&mut w.suppressed);
        w.last = Some(Instant::now());
        drop(w);
        let why = match reason {
            RejectReason::NoHealthyServer => "no healthy server",
            RejectReason::OutOfResources => {
                "no file descriptors, memory or source ports left to connect with"
            }
            _ => "every server tried refused or timed out",
        };
        tracing::warn!(
            backend = %backend,
            reason = ?why,
            closed_since_last_warning = also,
            "closed a client connection"
        );
    }
}

/// A backend as the current configuration describes it.
pub struct Backend {
    pub config: BackendConfig,
    pub servers: Vec<Server>,
    pub state: Arc<BackendState>,
    balancer: RoundRobin,
}

impl Backend {
    pub fn new(config: BackendConfig, servers: Vec<Server>, state: Arc<BackendState>) -> Backend {
        let weights: Vec<u32> = servers.iter().map(|s| s.config.weight).collect();
        Backend {
            config,
            servers,
            state,
            balancer: RoundRobin::new(&weights),
        }
    }

    pub fn name(&self) -> &Name {
        &self.config.name
    }

    /// The next server in rotation that `skip` does not exclude. When no server is in
    /// rotation and the backend fails open, the next server whose only failure is the colour.
    pub fn pick(&self, skip: impl Fn(usize) -> bool) -> Option<usize> {
        let picked = self
            .balancer
            .pick(|i| !skip(i) && self.servers[i].state.in_rotation());
        if picked.is_some()
            || self.config.when_all_unhealthy != WhenAllUnhealthy::FailOpen
            || self.servers_up() > 0
        {
            return picked;
        }
        self.balancer
            .pick(|i| !skip(i) && self.servers[i].state.fail_open_eligible())
    }

    /// The servers the backend sends traffic to although they fail their check: empty unless no
    /// server is up and the backend fails open to those whose only failure is the colour.
    pub fn failing_open_to(&self) -> Vec<&Server> {
        if self.config.when_all_unhealthy != WhenAllUnhealthy::FailOpen || self.servers_up() > 0 {
            return Vec::new();
        }
        self.servers
            .iter()
            .filter(|s| s.state.fail_open_eligible())
            .collect()
    }

    /// How many servers are in rotation.
    pub fn servers_up(&self) -> usize {
        self.servers
            .iter()
            .filter(|s| s.state.in_rotation())
            .count()
    }
}
