//! Health checking: one checker task per server and the check kinds (tcp, http, elasticsearch).
//!
//! The [`Supervisor`] keeps exactly one checker per [`CheckPlan`]: one plan per server of the
//! running configuration, naming what to check and the [`ServerState`] to record results in. A
//! reload hands it new plans: servers that stay keep their checker (and their health), which gets
//! the new settings and checks at once; new servers get a checker that checks at once; removed
//! servers lose theirs. Checks of different servers run concurrently on the control thread and
//! never touch the data path, which only reads each server's health atomically. The rise/fall
//! state itself lives with the server (`server::health`), not here.

mod elasticsearch;
mod probe;
mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::metrics::BackendMetrics;
use crate::nodes;
use crate::server::{AdminState, FailureKind, ServerKey, ServerState};

pub use probe::{CheckTarget, get};

/// What to check for one server, and where its results go.
pub struct CheckPlan {
    pub key: ServerKey,
    pub target: Arc<CheckTarget>,
    pub state: Arc<ServerState>,
    /// The backend's handles (the check-duration histogram).
    pub metrics: BackendMetrics,
}

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
    /// Makes the checkers match `plans`: starts, updates and stops them as needed.
    pub fn apply(&mut self, plans: Vec<CheckPlan>) {
        let wanted: HashMap<ServerKey, CheckPlan> =
            plans.into_iter().map(|p| (p.key.clone(), p)).collect();
        self.checkers.retain(|key, checker| {
            let keep = wanted.contains_key(key);
            if !keep {
                checker.cancel.cancel();
            }
            keep
        });
        for (key, plan) in wanted {
            let CheckPlan {
                target,
                state,
                metrics,
                ..
            } = plan;
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

/// How often a check asks the node about itself again. Roles change only when a node restarts,
/// and a restart fails a check first, after which the next check asks at once.
const NODE_REFRESH: Duration = Duration::from_secs(60);

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
    let mut learned_at: Option<Instant> = None;
    let mut last_failed = true;
    // Where the server last passed a check: a discovered node that stops answering where it
    // answered before has stopped or crashed, and its reason should not suggest a publish
    // address nobody can reach (the hint is for a node never reached there).
    let mut passed_at: Option<SocketAddr> = None;
    loop {
        let mut target = settings.borrow_and_update().clone();
        if target.published.is_some() && passed_at == Some(target.addr) {
            let mut answered = (*target).clone();
            answered.published = None;
            target = Arc::new(answered);
        }
        if state.admin() != AdminState::Maint {
            let learn = target.learn_node
                && (last_failed || learned_at.is_none_or(|t| t.elapsed() >= NODE_REFRESH));
            let (mut obs, learned) = tokio::select! {
                _ = cancel.cancelled() => return,
                checked = probe::check(&target, learn) => checked,
            };
            metrics.check_duration.observe(obs.duration.as_secs_f64());
            match learned {
                Some(Ok(node)) => {
                    state.set_node(node);
                    learned_at = Some(Instant::now());
                }
                // A node whose roles cannot be read is not taken for a data node.
                Some(Err(why))
                    if target.roles.is_some()
                        && state.node().is_none()
                        && obs.failure.is_none() =>
                {
                    obs.failure =
                        Some((FailureKind::Other, format!("cannot tell its roles: {why}")));
                }
                Some(Err(why)) => {
                    tracing::debug!(backend = %state.key.backend, server = %state.key.server, reason = %why, "could not refresh what the node says about itself; keeping what it said before");
                }
                None => {}
            }
            last_failed = obs.failure.is_some();
            if !last_failed {
                passed_at = Some(target.addr);
            }
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
            state.set_exclusion(exclusion(&target, &state));
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(target.config.interval) => {}
            r = settings.changed() => if r.is_err() { return },
            _ = state.recheck.notified() => {}
        }
    }
}

/// Why the backend's roles filter keeps the server out, if it does (and it knows the roles).
fn exclusion(target: &CheckTarget, state: &ServerState) -> Option<String> {
    let filter = target.roles.as_ref()?;
    let roles = state.node()?.roles?;
    nodes::judge_roles(filter, &roles).err()
}
