//! Startup, signals, reload and shutdown. The only place that stores a new [`Running`].
//!
//! The control thread (this module, the health checkers and the admin endpoint) runs on its own
//! small event loop; proxied connections run on the worker threads. Startup order matters to
//! systemd: listeners are bound and the first round of health checks has answered before
//! `READY=1`, so a unit that is "active" really serves.

mod running;
mod workers;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::Notify;
use tokio_util::task::TaskTracker;

use crate::admin::{self, Admin};
use crate::config::{ConfigError, ConfigErrors};
use crate::health::{self, Health, Supervisor};
use crate::listener::{self, Accepting};
use crate::metrics::Metrics;
use crate::notify::{self, Notifier, Rejection};

pub use running::{LastReload, Prepared, Route, Running, Shared, build, prepare};
use workers::{HEARTBEAT, Workers};

/// Why `run` could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration is not usable (or not enabled); nothing was started.
    #[error("{0}")]
    Config(ConfigErrors),
    /// Something outside the configuration failed (binding a port, starting threads).
    #[error("{0}")]
    Startup(String),
}

/// Runs the proxy in the foreground until SIGTERM or SIGINT.
pub fn run(path: &Path) -> Result<(), RunError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| RunError::Startup(format!("cannot start the control event loop: {e}")))?;
    rt.block_on(async {
        let mut signals = Signals::install()?;
        let notifier = Notifier::from_env();
        let control = match Control::start(path, notifier).await {
            Ok(c) => c,
            Err((notifier, e)) => {
                let status = match &e {
                    RunError::Config(errs) if errs.is_refusal_only() => errs.summary(),
                    RunError::Config(errs) => format!("configuration error: {}", errs.summary()),
                    RunError::Startup(msg) => format!("failed to start: {msg}"),
                };
                notifier.status(&status);
                return Err(e);
            }
        };
        control.serve(&mut signals).await;
        Ok(())
    })
}

/// The signals we act on, installed before anything else so that an early SIGHUP does not
/// terminate the process (its default action).
struct Signals {
    hangup: Signal,
    terminate: Signal,
    interrupt: Signal,
}

impl Signals {
    fn install() -> Result<Signals, RunError> {
        let install = |kind| {
            signal(kind)
                .map_err(|e| RunError::Startup(format!("cannot install signal handlers: {e}")))
        };
        Ok(Signals {
            hangup: install(SignalKind::hangup())?,
            terminate: install(SignalKind::terminate())?,
            interrupt: install(SignalKind::interrupt())?,
        })
    }
}

/// The control plane of a running process.
struct Control {
    path: PathBuf,
    shared: Arc<Shared>,
    workers: Workers,
    listeners: HashMap<SocketAddr, Accepting>,
    admin: Admin,
    supervisor: Supervisor,
    notifier: Notifier,
    status: String,
}

impl Control {
    async fn start(path: &Path, notifier: Notifier) -> Result<Control, (Notifier, RunError)> {
        let prepared = match prepare(path).await {
            Ok(p) => p,
            Err(e) => return Err((notifier, RunError::Config(e))),
        };
        raise_fd_limit();
        let workers = match Workers::start(prepared.config.workers) {
            Ok(w) => w,
            Err(e) => {
                let e = RunError::Startup(format!("cannot start worker threads: {e}"));
                return Err((notifier, e));
            }
        };
        let mut bound = HashMap::new();
        for l in &prepared.config.listeners {
            match listener::bind(l.bind, workers.handles().len()) {
                Ok(b) => {
                    bound.insert(l.bind, b);
                }
                Err(e) => {
                    let e = RunError::Startup(format!(
                        "cannot bind listener {} on {}: {e}",
                        l.name, l.bind
                    ));
                    workers.stop();
                    return Err((notifier, e));
                }
            }
        }
        let admin_socket = match admin::bind(prepared.config.admin.bind) {
            Ok(l) => l,
            Err(e) => {
                let e = RunError::Startup(format!(
                    "cannot bind the admin endpoint on {}: {e}",
                    prepared.config.admin.bind
                ));
                workers.stop();
                return Err((notifier, e));
            }
        };
        let locals = bound.iter().map(|(k, b)| (*k, b.local)).collect();
        let metrics = Metrics::new();
        metrics.init_reloads();
        let changes = Arc::new(Notify::new());
        let running = running::build(prepared, None, &locals, &metrics, &changes);
        metrics.reload(true);
        let shared = Arc::new(Shared {
            running: ArcSwap::from_pointee(running),
            tracker: TaskTracker::new(),
            metrics,
            changes,
            last_reload: Mutex::new(LastReload {
                at: SystemTime::now(),
                rejection: None,
            }),
        });
        let admin = match admin::start(admin_socket, shared.clone()) {
            Ok(a) => a,
            Err(e) => {
                workers.stop();
                let e = RunError::Startup(format!("cannot serve the admin endpoint: {e}"));
                return Err((notifier, e));
            }
        };
        let mut supervisor = Supervisor::default();
        let backends = shared.running.load().backends.clone();
        supervisor.apply(&backends);
        first_round(&shared, &backends).await;
        let listeners = bound
            .into_iter()
            .map(|(key, b)| (key, start_listener(b, key, &workers, &shared)))
            .collect();
        let mut control = Control {
            path: path.to_owned(),
            shared,
            workers,
            listeners,
            admin,
            supervisor,
            notifier,
            status: String::new(),
        };
        let status = control.refresh_status();
        tracing::info!(config = %path.display(), status = %status, "ready");
        control.notifier.ready(&status);
        Ok(control)
    }

    async fn serve(mut self, signals: &mut Signals) {
        let watchdog = Notifier::watchdog_interval();
        // Workers beat at least twice per watchdog ping, and at least once a second even without
        // a watchdog: see `Workers::start_heartbeats` for why the second matters.
        self.workers
            .start_heartbeats(watchdog.map_or(HEARTBEAT, |p| (p / 2).min(HEARTBEAT)));
        let period = watchdog.unwrap_or(Duration::from_secs(3600));
        // The first ping is due one period after READY=1; workers beat at least twice per period.
        let mut watchdog_tick =
            tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        let mut beats = self.workers.heartbeats();
        loop {
            tokio::select! {
                _ = signals.hangup.recv() => self.reload().await,
                _ = signals.terminate.recv() => break,
                _ = signals.interrupt.recv() => break,
                _ = self.shared.changes.notified() => {
                    self.refresh_status();
                }
                _ = self.supervisor.next_exit() => {}
                _ = watchdog_tick.tick(), if watchdog.is_some() => {
                    // Only vouch for the process when every worker's event loop has moved.
                    let now = self.workers.heartbeats();
                    if now.iter().zip(&beats).all(|(n, b)| n > b) {
                        self.notifier.watchdog();
                    } else {
                        tracing::error!("a worker event loop is not making progress; withholding the watchdog ping");
                    }
                    beats = now;
                }
            }
        }
        self.shutdown(signals).await;
    }

    /// Re-reads the file; applies it only if all of it is valid and every new listener binds.
    async fn reload(&mut self) {
        self.notifier.reloading();
        tracing::info!(config = %self.path.display(), "reloading configuration");
        match self.try_reload().await {
            Ok(()) => {
                *self.shared.last_reload.lock().expect("reload record lock") = LastReload {
                    at: SystemTime::now(),
                    rejection: None,
                };
                self.shared.metrics.reload(true);
                tracing::info!(config = %self.path.display(), "configuration reloaded");
            }
            Err(errors) => {
                self.shared.metrics.reload(false);
                for e in &errors.0 {
                    tracing::error!(
                        "reload rejected, still serving the previous configuration: {e}"
                    );
                }
                let now = SystemTime::now();
                *self.shared.last_reload.lock().expect("reload record lock") = LastReload {
                    at: now,
                    rejection: Some(Rejection {
                        at: now,
                        reason: errors.summary(),
                    }),
                };
            }
        }
        let status = self.refresh_status();
        self.notifier.ready(&status);
    }

    async fn try_reload(&mut self) -> Result<(), ConfigErrors> {
        let prepared = prepare(&self.path).await?;
        let old_workers = self.workers.handles().len();
        if prepared.config.workers != old_workers {
            tracing::warn!(
                running = old_workers,
                configured = prepared.config.workers,
                "workers changes at the next restart, not on reload"
            );
        }
        // Bind every new address before anything changes, so a failure leaves all as it was.
        let mut fresh = HashMap::new();
        for (i, l) in prepared.config.listeners.iter().enumerate() {
            if self.listeners.contains_key(&l.bind) {
                continue;
            }
            let b = listener::bind(l.bind, old_workers).map_err(|e| {
                ConfigErrors(vec![ConfigError::Invalid {
                    file: self.path.clone(),
                    path: format!("listeners[{i}].bind"),
                    message: format!("cannot bind {}: {e}", l.bind),
                }])
            })?;
            fresh.insert(l.bind, b);
        }
        let old_admin = self.shared.running.load().config.admin.bind;
        let new_admin = prepared.config.admin.bind;
        let admin_socket = if new_admin == old_admin {
            None
        } else {
            Some(admin::bind(new_admin).map_err(|e| {
                ConfigErrors(vec![ConfigError::Invalid {
                    file: self.path.clone(),
                    path: "admin.bind".into(),
                    message: format!("cannot bind {new_admin}: {e}"),
                }])
            })?)
        };
        let mut locals: HashMap<SocketAddr, SocketAddr> =
            self.listeners.iter().map(|(k, a)| (*k, a.local)).collect();
        locals.extend(fresh.iter().map(|(k, b)| (*k, b.local)));
        let old = self.shared.running.load_full();
        let new = running::build(
            prepared,
            Some(&old),
            &locals,
            &self.shared.metrics,
            &self.shared.changes,
        );
        let removed: Vec<SocketAddr> = self
            .listeners
            .keys()
            .filter(|k| !new.routes.contains_key(k))
            .copied()
            .collect();
        // New servers are checked before the swap, so a reload that replaces every server of a
        // backend never leaves clients a moment with no server known to be up.
        self.supervisor.apply(&new.backends);
        first_round(&self.shared, &new.backends).await;
        self.shared.running.store(Arc::new(new));
        for (key, b) in fresh {
            let accepting = start_listener(b, key, &self.workers, &self.shared);
            self.listeners.insert(key, accepting);
        }
        if let Some(socket) = admin_socket {
            match admin::start(socket, self.shared.clone()) {
                Ok(a) => self.admin = a,
                Err(e) => {
                    tracing::error!(bind = %new_admin, error = %e, "cannot serve the admin endpoint at its new address; it stays where it was")
                }
            }
        }
        for key in removed {
            if let Some(a) = self.listeners.remove(&key) {
                a.close().await;
                tracing::info!(bind = %key, "stopped listening; open connections continue");
            }
        }
        running::forget_removed(&old, &self.shared.running.load(), &self.shared.metrics);
        Ok(())
    }

    /// Recomputes the backend gauges and the STATUS line; sends it if it changed.
    fn refresh_status(&mut self) -> String {
        let running = self.shared.running.load();
        for b in &running.backends {
            b.state.metrics.servers_up.set(b.servers_up() as i64);
            let open_to = b.failing_open_to();
            let was = b.state.set_failing_open(!open_to.is_empty());
            if !open_to.is_empty() && !was {
                let servers: Vec<&str> = open_to.iter().map(|s| &*s.config.name).collect();
                tracing::warn!(
                    backend = %b.name(),
                    servers = %servers.join(","),
                    reason = ?notify::fail_open_reasons(b, &open_to),
                    "FAIL-OPEN: no server passes its health check; sending traffic to the servers whose only failure is the cluster colour"
                );
            } else if open_to.is_empty() && was {
                let why = if b.servers_up() > 0 {
                    "a server passes its health check again"
                } else {
                    "no server is reachable with the right cluster and enough nodes: clients are closed"
                };
                tracing::warn!(backend = %b.name(), reason = why, "stopped failing open");
            }
        }
        let status = notify::status_line(
            running.routes.len(),
            &running.backends,
            running.loaded_at,
            self.shared
                .last_reload
                .lock()
                .expect("reload record lock")
                .rejection
                .as_ref(),
        );
        if status != self.status {
            self.notifier.status(&status);
            self.status = status.clone();
        }
        status
    }

    /// Stops accepting, lets open connections finish within the grace period, then exits.
    async fn shutdown(mut self, signals: &mut Signals) {
        let grace = self.shared.running.load().config.shutdown_grace;
        for (_, a) in self.listeners.drain() {
            a.close().await;
        }
        self.shared.tracker.close();
        let open = self.shared.tracker.len();
        let status = format!(
            "stopping: waiting for {open} open connection{} (at most {})",
            if open == 1 { "" } else { "s" },
            humantime::format_duration(grace)
        );
        tracing::info!(open_connections = open, grace = %humantime::format_duration(grace), "stopping");
        self.notifier.stopping(&status);
        self.supervisor.shutdown().await;
        tokio::select! {
            _ = self.shared.tracker.wait() => tracing::info!("all connections finished"),
            _ = tokio::time::sleep(grace) => tracing::warn!(
                closed = self.shared.tracker.len(),
                "grace period over; closing the connections still open"
            ),
            _ = signals.terminate.recv() => tracing::warn!("second signal; closing open connections now"),
            _ = signals.interrupt.recv() => tracing::warn!("second signal; closing open connections now"),
        }
        self.workers.stop();
    }
}

/// Every proxied connection holds two descriptors: use all the hard limit allows (as nginx and
/// Go programs do), since the soft limit is often a meagre 1024.
fn raise_fd_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::info!(max_open_files = n, "file descriptor limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the file descriptor limit"),
    }
}

/// Starts accepting on a bound listener and says where, by name.
fn start_listener(
    bound: listener::Bound,
    key: SocketAddr,
    workers: &Workers,
    shared: &Arc<Shared>,
) -> Accepting {
    let running = shared.running.load();
    let name = running.routes.get(&key).map(|r| r.listener.name.clone());
    tracing::info!(listener = %name.as_deref().unwrap_or("?"), bind = %key, addr = %bound.local, "listening");
    listener::start(bound, key, workers.handles(), shared)
}

/// Waits until every server has had its first check (or the longest check timeout passed).
async fn first_round(shared: &Shared, backends: &[Arc<crate::backend::Backend>]) {
    let deadline = tokio::time::Instant::now() + health::first_round_deadline(backends);
    loop {
        let pending = backends
            .iter()
            .flat_map(|b| &b.servers)
            .any(|s| s.state.health.health() == Health::Unknown);
        if !pending {
            return;
        }
        tokio::select! {
            _ = shared.changes.notified() => {}
            _ = tokio::time::sleep_until(deadline) => return,
        }
    }
}
