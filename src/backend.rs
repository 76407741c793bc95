//! The running form of a backend: its servers in rotation order, how one is picked, and the
//! backend's own policy (failing open when no server passes its check).
//!
//! A [`Backend`] is rebuilt on every reload from the new configuration. The state of each server
//! (health, what an operator asked of it, counters) is an `Arc<ServerState>` (see
//! [`crate::server`]) that a reload hands over to the new backend whenever the server stays. The
//! backend only *reads* health; the checkers write it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::balancer::{Balancer, LeastConnections, RoundRobin};
use crate::config::{BackendConfig, Balance, Name, ServerConfig, WhenAllUnhealthy};
use crate::metrics::{BackendMetrics, DiscoveryResult, IdleClose, RejectReason};
use crate::nodes::{NodeId, Publish};
use crate::server::{AdminState, ServerState};

/// One server as the current configuration and discovery describe it.
pub struct Server {
    pub config: ServerConfig,
    /// Where connections go (the configured host resolved at load time, or the address the node
    /// publishes).
    pub addr: SocketAddr,
    pub source: Source,
    pub state: Arc<ServerState>,
}

/// Where a server came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Listed in the configuration file (a seed, when the backend discovers).
    Configured,
    /// Reported by the cluster itself.
    Discovered(Member),
}

/// A node that discovery keeps in a backend's server set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: NodeId,
    /// The server's name: the node's name.
    pub name: Name,
    pub publish: Publish,
}

/// The state of one backend that is carried across reloads.
pub struct BackendState {
    pub metrics: BackendMetrics,
    /// Whether the backend discovers (its metrics include the discovery series).
    pub discovers: bool,
    warnings: Mutex<WarningThrottle>,
    /// Whether the backend was failing open when last looked at (to log changes once).
    failing_open: AtomicBool,
    /// How the last discovery refresh went.
    discovery: Mutex<Option<DiscoveryReport>>,
}

/// The outcome of a backend's last discovery refresh, for `/status`.
#[derive(Debug, Clone)]
pub struct DiscoveryReport {
    pub at: SystemTime,
    pub result: DiscoveryResult,
    /// The server whose answer was taken.
    pub source: Option<Name>,
    /// Why no answer was taken, when none was.
    pub reason: Option<String>,
    /// Nodes the answer listed.
    pub nodes: usize,
}

/// Clients closed for lack of a server are logged at most once a second, with a count.
#[derive(Default)]
struct WarningThrottle {
    last: Option<Instant>,
    suppressed: u64,
}

impl BackendState {
    pub fn new(metrics: BackendMetrics, discovers: bool) -> BackendState {
        BackendState {
            metrics,
            discovers,
            warnings: Mutex::default(),
            failing_open: AtomicBool::new(false),
            discovery: Mutex::new(None),
        }
    }

    /// Records how the last discovery refresh went.
    pub fn set_discovery_report(&self, report: DiscoveryReport) {
        *self
            .discovery
            .lock()
            .expect("report lock is never poisoned") = Some(report);
    }

    /// How the last discovery refresh went, if there was one.
    pub fn discovery_report(&self) -> Option<DiscoveryReport> {
        self.discovery
            .lock()
            .expect("report lock is never poisoned")
            .clone()
    }

    /// Records whether the backend fails open now; returns whether it did before.
    fn set_failing_open(&self, now: bool) -> bool {
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
    balancer: Balancer,
}

impl Backend {
    pub fn new(config: BackendConfig, servers: Vec<Server>, state: Arc<BackendState>) -> Backend {
        let weights: Vec<u32> = servers.iter().map(|s| s.config.weight).collect();
        let balancer = match config.balance {
            Balance::RoundRobin => Balancer::RoundRobin(RoundRobin::new(&weights)),
            Balance::LeastConnections => {
                Balancer::LeastConnections(LeastConnections::new(&weights))
            }
        };
        Backend {
            config,
            servers,
            state,
            balancer,
        }
    }

    pub fn name(&self) -> &Name {
        &self.config.name
    }

    /// The next server in rotation that `skip` does not exclude. When no server is in
    /// rotation and the backend fails open, the next server whose only failure is the colour.
    pub fn pick(&self, skip: impl Fn(usize) -> bool) -> Option<usize> {
        let load = |i: usize| self.servers[i].state.in_use.load(Ordering::Relaxed);
        let picked = self
            .balancer
            .pick(|i| !skip(i) && self.servers[i].state.in_rotation(), load);
        if picked.is_some()
            || self.config.when_all_unhealthy != WhenAllUnhealthy::FailOpen
            || self.servers_up() > 0
        {
            return picked;
        }
        self.balancer.pick(
            |i| !skip(i) && self.servers[i].state.fail_open_eligible(),
            load,
        )
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

    /// Marks each server as taking new connections or not (and why not); true when one has just
    /// stopped taking them, so that its keep-alive connections are woken to close when idle.
    pub fn mark_leaving(&self) -> bool {
        let open_to = self.failing_open_to();
        let mut newly = false;
        for s in &self.servers {
            let st = &s.state;
            let takes = st.in_rotation() || open_to.iter().any(|o| std::ptr::eq(*o, s));
            let reason = (!takes).then(|| match st.admin() {
                AdminState::Drain => IdleClose::Drain,
                AdminState::Maint => IdleClose::Maint,
                AdminState::Ready if st.is_excluded() => IdleClose::Excluded,
                AdminState::Ready => IdleClose::Down,
            });
            newly |= st.set_leaving(reason);
        }
        newly
    }

    /// Brings the backend's gauges up to date after a server changed state, and says whether
    /// the backend started or stopped failing open (each change is reported once).
    pub fn refresh(&self) -> Option<FailOpenChange> {
        let up = self.servers_up();
        self.state.metrics.servers_up.set(up as i64);
        let open_to = self.failing_open_to();
        let was = self.state.set_failing_open(!open_to.is_empty());
        match (was, open_to.is_empty()) {
            (false, false) => Some(FailOpenChange::Started {
                servers: open_to.iter().map(|s| s.config.name.clone()).collect(),
            }),
            (true, true) if up > 0 => Some(FailOpenChange::Stopped(StopReason::ServerUp)),
            (true, true) => Some(FailOpenChange::Stopped(StopReason::NothingReachable)),
            _ => None,
        }
    }
}

/// A change in whether a backend fails open, for the runtime to log once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailOpenChange {
    /// No server passes its check; traffic now goes to these, whose only failure is the colour.
    Started { servers: Vec<Name> },
    /// The backend stopped failing open.
    Stopped(StopReason),
}

/// Why a backend stopped failing open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// A server passes its health check again.
    ServerUp,
    /// No server is reachable with the right cluster and enough nodes: clients are closed.
    NothingReachable,
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use tokio::sync::Notify;

    use super::*;
    use crate::config;
    use crate::metrics::Metrics;
    use crate::server::{AdminState, FailureKind, Identity, Observation, ServerKey};

    fn backend() -> Backend {
        let yaml = "enabled: true\nlisteners: [{name: es, bind: \"127.0.0.1:19200\", backend: es}]\n\
                    backends: [{name: es, servers: [\"10.0.0.1:9200\", \"10.0.0.2:9200\"]}]\n";
        let config = config::parse(Path::new("test.yaml"), yaml).expect("a valid config");
        let b = config.backends[0].clone();
        let m = Metrics::new();
        let servers = b
            .servers
            .iter()
            .map(|s| {
                let addr: SocketAddr = s.address.to_string().parse().expect("an IP address");
                let key = ServerKey {
                    backend: b.name.clone(),
                    server: s.name.clone(),
                    identity: Identity::Address(addr),
                };
                let metrics = m.server(&b.name, &s.name);
                let state =
                    ServerState::new(key, metrics, Arc::new(Notify::new()), AdminState::Ready);
                Server {
                    config: s.clone(),
                    addr,
                    source: Source::Configured,
                    state: Arc::new(state),
                }
            })
            .collect();
        let state = Arc::new(BackendState::new(m.backend(&b.name, false), false));
        Backend::new(b, servers, state)
    }

    fn observe(b: &Backend, i: usize, failure: Option<FailureKind>) {
        let obs = match failure {
            None => Observation::pass(None, Duration::ZERO),
            Some(kind) => Observation::fail(kind, "cluster status red", None, Duration::ZERO),
        };
        b.servers[i].state.observe(obs, 1, 1);
    }

    #[test]
    fn failing_open_starts_and_stops_once_each() {
        let b = backend();
        observe(&b, 0, Some(FailureKind::ColourOnly));
        observe(&b, 1, Some(FailureKind::Other));
        assert_eq!(
            b.refresh(),
            Some(FailOpenChange::Started {
                servers: vec![b.servers[0].config.name.clone()]
            })
        );
        assert_eq!(b.state.metrics.fail_open.get(), 1);
        assert_eq!(b.refresh(), None, "said once");
        assert_eq!(
            b.pick(|_| false),
            Some(0),
            "traffic goes to the colour-only server"
        );

        observe(&b, 1, None);
        assert_eq!(
            b.refresh(),
            Some(FailOpenChange::Stopped(StopReason::ServerUp))
        );
        assert_eq!(b.state.metrics.fail_open.get(), 0);
        assert_eq!(b.state.metrics.servers_up.get(), 1);
    }

    #[test]
    fn failing_open_stops_when_nothing_is_reachable() {
        let b = backend();
        observe(&b, 0, Some(FailureKind::ColourOnly));
        observe(&b, 1, Some(FailureKind::Other));
        assert!(matches!(b.refresh(), Some(FailOpenChange::Started { .. })));
        observe(&b, 0, Some(FailureKind::Other));
        assert_eq!(
            b.refresh(),
            Some(FailOpenChange::Stopped(StopReason::NothingReachable))
        );
        assert_eq!(b.pick(|_| false), None);
    }
}
