//! The conductor: startup, signals, the reload sequence and shutdown. The only place that
//! stores a new [`Running`] snapshot.
//!
//! The control thread (this module, the health checkers and the admin endpoint) runs on its own
//! small event loop; proxied connections run on the worker threads. Startup order matters to
//! systemd: listeners are bound and the first round of health checks has answered before
//! `READY=1`, so a unit that is "active" really serves.

mod reload;
mod workers;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{Notify, mpsc};
use tokio_util::task::TaskTracker;

use crate::admin::{self, Admin};
use crate::backend::{Backend, FailOpenChange, Source, StopReason};
use crate::config::{ConfigError, ConfigErrors, Name};
use crate::discovery::{self, Discoverers};
use crate::health::{CheckPlan, CheckTarget, Supervisor};
use crate::listener::{self, Accepting};
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::resolve::prepare;
use crate::server::Health;
use crate::state::{self, LastReload, Running, Shared};
use crate::words;
use workers::{HEARTBEAT, Workers};

/// Why `run` could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration is not usable (or not enabled); nothing was started.
    #[error("{0}")]
    Config(#[source] ConfigErrors),
    /// Something outside the configuration failed (binding a port, starting threads).
    #[error("{0}")]
    Startup(#[from] StartupError),
}

/// What failed while starting, outside the configuration itself.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot start the control event loop: {0}")]
    ControlLoop(#[source] io::Error),
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] io::Error),
    #[error("cannot start worker threads: {0}")]
    Workers(#[source] io::Error),
    #[error("cannot bind listener {listener} on {addr}: {source}")]
    Bind {
        listener: Name,
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot bind the admin endpoint on {addr}: {source}")]
    AdminBind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot serve the admin endpoint: {0}")]
    AdminServe(#[source] io::Error),
    /// Anything else that needs the system (the demo's files and threads).
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

/// Runs the proxy in the foreground until SIGTERM or SIGINT.
pub fn run(path: &Path) -> Result<(), RunError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StartupError::ControlLoop)?;
    rt.block_on(async {
        let mut signals = Signals::install()?;
        let notifier = Notifier::from_env();
        let control = match Control::start(path, notifier).await {
            Ok(c) => c,
            Err((notifier, e)) => {
                let status = match &e {
                    RunError::Config(errs) if errs.is_refusal_only() => errs.summary(),
                    RunError::Config(errs) => format!("configuration error: {}", errs.summary()),
                    RunError::Startup(e) => format!("failed to start: {e}"),
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
        let install = |kind| signal(kind).map_err(|e| RunError::from(StartupError::Signals(e)));
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
    discoverers: Discoverers,
    /// Discovered server sets, from the discovery tasks.
    discovered: mpsc::UnboundedReceiver<discovery::Update>,
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
        let workers =
            match Workers::start(prepared.config.workers, prepared.config.pin_workers).await {
                Ok(w) => w,
                Err(e) => return Err((notifier, StartupError::Workers(e).into())),
            };
        let mut bound = HashMap::new();
        for (i, l) in prepared.config.listeners.iter().enumerate() {
            match listener::bind(l.bind, workers.handles().len(), l.freebind) {
                Ok(b) => {
                    bound.insert(l.bind, b);
                }
                Err(source) => {
                    workers.stop();
                    // An address the host does not hold is the file's to fix (or the host's
                    // sysctl): a configuration problem, which systemd does not restart in a loop.
                    let e = if listener::is_not_local(&source) {
                        RunError::Config(ConfigErrors(vec![not_local(
                            &prepared.config.source,
                            i,
                            l.bind,
                        )]))
                    } else {
                        StartupError::Bind {
                            listener: l.name.clone(),
                            addr: l.bind,
                            source,
                        }
                        .into()
                    };
                    return Err((notifier, e));
                }
            }
        }
        let admin_socket = match admin::bind(prepared.config.admin.bind) {
            Ok(l) => l,
            Err(source) => {
                workers.stop();
                let addr = prepared.config.admin.bind;
                return Err((notifier, StartupError::AdminBind { addr, source }.into()));
            }
        };
        let locals = bound.iter().map(|(k, b)| (*k, b.local)).collect();
        let metrics = Metrics::new();
        metrics.init_reloads();
        let changes = Arc::new(Notify::new());
        let running = state::build(
            prepared,
            state::Discovered::new(),
            None,
            &locals,
            &metrics,
            &changes,
        );
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
                return Err((notifier, StartupError::AdminServe(e).into()));
            }
        };
        let mut supervisor = Supervisor::default();
        let backends = shared.running.load().backends.clone();
        supervisor.apply(check_plans(&backends));
        first_round(&shared, &backends).await;
        let listeners = bound
            .into_iter()
            .map(|(key, b)| (key, start_listener(b, key, &workers, &shared)))
            .collect();
        let (updates, discovered) = mpsc::unbounded_channel();
        let mut discoverers = Discoverers::new(shared.clone(), updates);
        discoverers.apply(&backends);
        let mut control = Control {
            path: path.to_owned(),
            shared,
            workers,
            listeners,
            admin,
            supervisor,
            discoverers,
            discovered,
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
                _ = self.discoverers.next_exit() => {}
                Some(update) = self.discovered.recv() => self.apply_discovered(update).await,
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

    /// Swaps in a snapshot with a backend's newly discovered servers, the same atomic way a
    /// reload does: servers that stay keep their state, and new ones are checked before the
    /// swap, so that a node joining never shows as a server "not checked yet" (a DEGRADED
    /// STATUS line for every join, seen in `tests/discovery.rs`).
    async fn apply_discovered(&mut self, update: discovery::Update) {
        let old = self.shared.running.load_full();
        let mut discovered = old.discovered.clone();
        discovered.insert(update.backend, update.members);
        let new = state::rebuild(&old, discovered, &self.shared.metrics, &self.shared.changes);
        self.supervisor.apply(check_plans(&new.backends));
        first_round(&self.shared, &new.backends).await;
        self.shared.running.store(Arc::new(new));
        self.retire(&old);
        self.refresh_status();
    }

    /// After a swap: the servers of `old` that the new snapshot no longer has lose their metric
    /// series, and their keep-alive connections close at their next idle point.
    fn retire(&self, old: &Running) {
        let new = self.shared.running.load();
        state::forget_removed(old, &new, &self.shared.metrics);
        if state::mark_removed(old, &new) {
            self.workers.wake_idle();
        }
    }

    /// Brings the backend gauges and the STATUS line up to date; sends the line if it changed.
    fn refresh_status(&mut self) -> String {
        let running = self.shared.running.load();
        let mut leaving = false;
        for b in &running.backends {
            if let Some(change) = b.refresh() {
                log_fail_open(b, &change);
            }
            leaving |= b.mark_leaving();
        }
        if leaving {
            self.workers.wake_idle();
        }
        let status = words::status_line(
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
        // keep-alive connections idle now close at once, busy ones after their response
        self.workers.close_at_idle();
        self.supervisor.shutdown().await;
        self.discoverers.shutdown().await;
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

/// The error for listener `i`, whose address `bind` this host does not hold.
fn not_local(file: &Path, i: usize, bind: SocketAddr) -> ConfigError {
    ConfigError::Invalid {
        file: file.to_owned(),
        path: format!("listeners[{i}].bind"),
        message: format!("cannot bind {bind}: {}", listener::NOT_LOCAL_HELP),
    }
}

/// Says once, at warning level, that a backend started or stopped failing open, and why.
fn log_fail_open(b: &Backend, change: &FailOpenChange) {
    match change {
        FailOpenChange::Started { servers } => {
            let servers: Vec<&str> = servers.iter().map(|s| &**s).collect();
            tracing::warn!(
                backend = %b.name(),
                servers = %servers.join(","),
                reason = ?words::fail_open_reasons(b, &b.failing_open_to()),
                "FAIL-OPEN: no server passes its health check; sending traffic to the servers whose only failure is the cluster colour"
            );
        }
        FailOpenChange::Stopped(why) => {
            let why = match why {
                StopReason::ServerUp => "a server passes its health check again",
                StopReason::NothingReachable => {
                    "no server is reachable with the right cluster and enough nodes: clients are closed"
                }
            };
            tracing::warn!(backend = %b.name(), reason = why, "stopped failing open");
        }
    }
}

/// One check plan per server of `backends`: what the supervisor's checkers run.
fn check_plans(backends: &[Arc<Backend>]) -> Vec<CheckPlan> {
    let mut plans = Vec::new();
    for b in backends {
        let hc = &b.config.health_check;
        if hc.tls.as_ref().is_some_and(|t| t.insecure_skip_verify) {
            tracing::warn!(
                backend = %b.name(),
                "health checks accept ANY TLS certificate (insecure_skip_verify: true): a node impersonated by anyone on the path would pass"
            );
        }
        let roles = b.config.roles.is_active().then(|| b.config.roles.clone());
        for s in &b.servers {
            let mut target = CheckTarget::new(hc.clone(), s.addr, s.config.address.host.clone());
            target.roles = roles.clone();
            // node ids tell a seed from the nodes discovery finds
            target.learn_node = roles.is_some() || b.config.discovery.is_some();
            if let Source::Discovered(m) = &s.source {
                target.published = Some(m.publish.text.clone());
            }
            plans.push(CheckPlan {
                key: s.state.key.clone(),
                target: Arc::new(target),
                state: s.state.clone(),
                metrics: b.state.metrics.clone(),
            });
        }
    }
    plans
}

/// Waits until every server has had its first check (or the longest check timeout, plus
/// slack, has passed).
async fn first_round(shared: &Shared, backends: &[Arc<Backend>]) {
    let longest = backends
        .iter()
        .map(|b| b.config.health_check.timeout)
        .max()
        .unwrap_or_default();
    let deadline = tokio::time::Instant::now() + longest + Duration::from_millis(500);
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
