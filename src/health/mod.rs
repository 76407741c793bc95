//! Health checking: one checker task per server, the check kinds, and the rise/fall state.
//!
//! The [`Supervisor`] keeps exactly one checker per server of the running configuration. A reload
//! hands it the new backends: servers that stay keep their checker (and their health), which gets
//! the new settings and checks at once; new servers get a checker that checks at once; removed
//! servers lose theirs. Checks of different servers run concurrently on the control thread and
//! never touch the data path, which only reads each server's health atomically.

mod elasticsearch;
mod probe;
mod state;
mod tls;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::backend::{AdminState, Backend, ServerKey, ServerState};
use crate::metrics::BackendMetrics;

pub use probe::{CheckTarget, describe_io};
pub use state::{
    ClusterView, FailureKind, Health, HealthView, LastCheck, Observation, Tracker, Transition,
};

struct Checker {
    settings: watch::Sender<Arc<CheckTarget>>,
    cancel: CancellationToken,
}

/// Owns the checker tasks.
pub struct Supervisor {
    checkers: HashMap<ServerKey, Checker>,
    tasks: JoinSet<ServerKey>,
    stop: CancellationToken,
}

impl Default for Supervisor {
    fn default() -> Self {
        Supervisor {
            checkers: HashMap::new(),
            tasks: JoinSet::new(),
            stop: CancellationToken::new(),
        }
    }
}

impl Supervisor {
    /// Makes the checkers match `backends`: starts, updates and stops them as needed.
    pub fn apply(&mut self, backends: &[Arc<Backend>]) {
        let mut wanted = HashMap::new();
        for b in backends {
            if b.config
                .health_check
                .tls
                .as_ref()
                .is_some_and(|t| t.insecure_skip_verify)
            {
                tracing::warn!(
                    backend = %b.name(),
                    "health checks accept ANY TLS certificate (insecure_skip_verify: true): a node impersonated by anyone on the path would pass"
                );
            }
            for s in &b.servers {
                let target = Arc::new(CheckTarget::new(
                    b.config.health_check.clone(),
                    s.addr,
                    s.config.address.host.clone(),
                ));
                wanted.insert(
                    s.state.key.clone(),
                    (target, s.state.clone(), b.state.metrics.clone()),
                );
            }
        }
        self.checkers.retain(|key, checker| {
            let keep = wanted.contains_key(key);
            if !keep {
                checker.cancel.cancel();
            }
            keep
        });
        for (key, (target, state, metrics)) in wanted {
            match self.checkers.get(&key) {
                Some(c) => {
                    c.settings.send_if_modified(|current| {
                        let changed = **current != *target;
                        if changed {
                            *current = target;
                        }
                        changed
                    });
                }
                None => {
                    let (settings, rx) = watch::channel(target);
                    let cancel = self.stop.child_token();
                    let task = run_checker(state, rx, metrics, cancel.clone());
                    let task_key = key.clone();
                    self.tasks.spawn(async move {
                        task.await;
                        task_key
                    });
                    self.checkers.insert(key, Checker { settings, cancel });
                }
            }
        }
    }

    /// Waits for a checker task that ended; a task only ends when cancelled or when it panicked,
    /// and a panic is reported here rather than lost.
    pub async fn next_exit(&mut self) {
        match self.tasks.join_next().await {
            Some(Err(e)) if e.is_panic() => {
                tracing::error!(error = %e, "a health checker panicked; its server keeps its last state until the next reload");
            }
            Some(_) => {}
            None => std::future::pending().await,
        }
    }

    /// Stops every checker and waits for them.
    pub async fn shutdown(&mut self) {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
        self.checkers.clear();
    }
}

/// Checks one server until cancelled: at once, then every interval, and whenever its settings
/// change or someone asks for a recheck. Paused while the server is in maintenance.
async fn run_checker(
    state: Arc<ServerState>,
    mut settings: watch::Receiver<Arc<CheckTarget>>,
    metrics: BackendMetrics,
    cancel: CancellationToken,
) {
    // Refused credentials are a configuration problem, not a node problem: say so at error
    // level once, not at every check.
    let mut refused_credentials = false;
    loop {
        let target = settings.borrow_and_update().clone();
        if state.admin() != AdminState::Maint {
            let obs = tokio::select! {
                _ = cancel.cancelled() => return,
                obs = probe::check(&target) => obs,
            };
            metrics.check_duration.observe(obs.duration.as_secs_f64());
            let refused = obs
                .failure
                .as_ref()
                .is_some_and(|(_, why)| probe::is_auth_failure(why));
            if refused && !refused_credentials {
                let why = obs
                    .failure
                    .as_ref()
                    .map(|(_, w)| w.as_str())
                    .unwrap_or_default();
                tracing::error!(backend = %state.key.backend, server = %state.key.server, reason = ?why, "the node refused the health check's credentials");
            }
            refused_credentials = refused;
            state.observe(obs, target.config.rise, target.config.fall);
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(target.config.interval) => {}
            r = settings.changed() => if r.is_err() { return },
            _ = state.recheck.notified() => {}
        }
    }
}

/// How long the first round of checks can take at most: the longest timeout, plus slack.
pub fn first_round_deadline(backends: &[Arc<Backend>]) -> Duration {
    backends
        .iter()
        .map(|b| b.config.health_check.timeout)
        .max()
        .unwrap_or_default()
        + Duration::from_millis(500)
}
