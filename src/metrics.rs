//! The Prometheus registry and typed handles. No other module builds a metric name.
//!
//! Label lookups happen once per server, listener or backend (when it first appears in a loaded
//! configuration); the data path only touches the resolved handles, which are plain atomics.

use std::sync::Arc;
use std::time::SystemTime;

use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::config::ClusterStatus;

mod requests;

use requests::RequestCollector;
pub use requests::{RequestCounts, set_worker};

/// The states a server is reported in; exactly one is 1 at any time.
pub const SERVER_STATES: [&str; 5] = ["up", "down", "excluded", "drain", "maint"];

/// Why a client connection was refused (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// The listener already had `max_connections` open.
    MaxConnections,
    /// No server of the backend was up.
    NoHealthyServer,
    /// Servers were up, but connecting to each one tried failed.
    ConnectFailed,
    /// This process ran out of file descriptors, memory or source ports to connect with.
    OutOfResources,
}

impl RejectReason {
    const ALL: [RejectReason; 4] = [
        Self::MaxConnections,
        Self::NoHealthyServer,
        Self::ConnectFailed,
        Self::OutOfResources,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::MaxConnections => "max_connections",
            Self::NoHealthyServer => "no_healthy_server",
            Self::ConnectFailed => "connect_failed",
            Self::OutOfResources => "out_of_resources",
        }
    }
}

/// Why a keep-alive client connection was closed at an idle point (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum IdleClose {
    /// Its server was drained.
    Drain = 1,
    /// Its server was put in maintenance.
    Maint = 2,
    /// Its server went down by its checks.
    Down = 3,
    /// Its server is kept out by the roles filter.
    Excluded = 4,
    /// Its server left the configuration or the discovered set.
    Removed = 5,
    /// roundhouse is stopping.
    Shutdown = 6,
}

impl IdleClose {
    pub const ALL: [IdleClose; 6] = [
        Self::Drain,
        Self::Maint,
        Self::Down,
        Self::Excluded,
        Self::Removed,
        Self::Shutdown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Drain => "drain",
            Self::Maint => "maint",
            Self::Down => "down",
            Self::Excluded => "excluded",
            Self::Removed => "removed",
            Self::Shutdown => "shutdown",
        }
    }

    /// The reason stored as `n`, for an atomic; `None` for 0 and anything unknown.
    pub fn from_u8(n: u8) -> Option<IdleClose> {
        Self::ALL.into_iter().find(|r| *r as u8 == n)
    }
}

/// How a discovery refresh went (the `result` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscoveryResult {
    /// A trusted answer changed the server set.
    Applied,
    /// A trusted answer, and nothing to change.
    Unchanged,
    /// Every node asked failed to answer or gave an answer that could not be trusted.
    Refused,
    /// No server passed its checks to be asked.
    NoSource,
}

impl DiscoveryResult {
    const ALL: [DiscoveryResult; 4] = [
        Self::Applied,
        Self::Unchanged,
        Self::Refused,
        Self::NoSource,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Unchanged => "unchanged",
            Self::Refused => "refused",
            Self::NoSource => "no_source",
        }
    }
}

/// A change discovery made to a server set (the `change` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscoveryChange {
    Joined,
    Left,
    Moved,
}

impl DiscoveryChange {
    const ALL: [DiscoveryChange; 3] = [Self::Joined, Self::Left, Self::Moved];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Joined => "joined",
            Self::Left => "left",
            Self::Moved => "moved",
        }
    }
}

/// Every metric family roundhouse exports, registered once per process.
pub struct Metrics {
    registry: Registry,
    reloads: IntCounterVec,
    last_reload_successful: IntGauge,
    last_reload_success_time: Gauge,
    listener_connections: IntCounterVec,
    listener_active: IntGaugeVec,
    listener_rejected: IntCounterVec,
    backend_servers_up: IntGaugeVec,
    backend_fail_open: IntGaugeVec,
    server_up: IntGaugeVec,
    server_state: IntGaugeVec,
    server_active: IntGaugeVec,
    server_connections: IntCounterVec,
    server_connect_failures: IntCounterVec,
    server_sent: IntCounterVec,
    server_received: IntCounterVec,
    server_checks: IntCounterVec,
    server_check_duration: HistogramVec,
    server_state_changes: IntCounterVec,
    server_connect_duration: HistogramVec,
    es_cluster_status: IntGaugeVec,
    discovery_refreshes: IntCounterVec,
    discovery_changes: IntCounterVec,
    discovery_servers: IntGaugeVec,
    server_requests: RequestCollector,
    server_byte_relays: IntGaugeVec,
    server_excluded: IntGaugeVec,
    server_idle_closes: IntCounterVec,
    server_unfollowed: IntCounterVec,
    worker_connections: IntCounterVec,
}

/// Handles for one server, resolved once and carried across reloads with the server.
#[derive(Clone)]
pub struct ServerMetrics {
    pub up: IntGauge,
    /// One gauge per entry of [`SERVER_STATES`].
    pub state: [IntGauge; 5],
    pub active: IntGauge,
    pub connections: IntCounter,
    pub connect_failures: IntCounter,
    /// Bytes written toward the server.
    pub sent: IntCounter,
    /// Bytes read from the server.
    pub received: IntCounter,
    pub checks_pass: IntCounter,
    pub checks_fail: IntCounter,
    pub state_changes: IntCounter,
    /// One gauge per entry of [`ClusterStatus::ALL`].
    pub cluster_status: [IntGauge; 3],
    /// Requests seen on followed connections (heads counted; bodies never read), and those
    /// whose response is not complete yet.
    pub requests: RequestCounts,
    /// Open connections relayed as bytes, their framing not followed.
    pub byte_relays: IntGauge,
    /// 1 while the roles filter keeps the server out, whatever its health: lets the alert
    /// rules leave out a server that was never meant for clients when it goes down.
    pub excluded: IntGauge,
    /// Connections closed at an idle point, one counter per entry of [`IdleClose::ALL`].
    idle_closes: [IntCounter; 6],
    /// Connections not followed, by reason: resolved when one falls back (rare), not per read.
    unfollowed: IntCounterVec,
    labels: [Arc<str>; 2],
}

impl ServerMetrics {
    /// The counter of connections closed at an idle point for `reason`.
    pub fn idle_closed(&self, reason: IdleClose) -> &IntCounter {
        &self.idle_closes[reason as usize - 1]
    }

    /// Counts a connection whose framing is not (or no longer) followed, and why.
    pub fn unfollowed(&self, reason: &str) {
        let [b, s] = &self.labels;
        self.unfollowed.with_label_values(&[b, s, reason]).inc();
    }

    /// Sets the one state gauge that is 1.
    pub fn set_state(&self, state: &str) {
        for (name, gauge) in SERVER_STATES.iter().zip(&self.state) {
            gauge.set(i64::from(*name == state));
        }
        self.up.set(i64::from(state == "up"));
    }

    /// Records the colour a node reported last (all 0 when it reported none).
    pub fn set_cluster_status(&self, status: Option<ClusterStatus>) {
        for (c, gauge) in ClusterStatus::ALL.iter().zip(&self.cluster_status) {
            gauge.set(i64::from(Some(*c) == status));
        }
    }
}

/// Handles for one listener.
#[derive(Clone)]
pub struct ListenerMetrics {
    pub connections: IntCounter,
    pub active: IntGauge,
    rejected: [IntCounter; 4],
}

impl ListenerMetrics {
    pub fn rejected(&self, reason: RejectReason) -> &IntCounter {
        &self.rejected[reason as usize]
    }
}

/// Handles for one backend.
#[derive(Clone)]
pub struct BackendMetrics {
    pub servers_up: IntGauge,
    pub fail_open: IntGauge,
    pub check_duration: Histogram,
    pub connect_duration: Histogram,
    /// Servers discovery added (the configured ones not counted).
    pub discovered: IntGauge,
    refreshes: [IntCounter; 4],
    changes: [IntCounter; 3],
}

impl BackendMetrics {
    /// The counter of discovery refreshes that went this way.
    pub fn discovery(&self, result: DiscoveryResult) -> &IntCounter {
        &self.refreshes[result as usize]
    }

    /// The counter of this kind of change to the server set.
    pub fn discovery_change(&self, change: DiscoveryChange) -> &IntCounter {
        &self.changes[change as usize]
    }
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let v = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    r.register(Box::new(v.clone()))
        .expect("metric registered once");
    v
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let v = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    r.register(Box::new(v.clone()))
        .expect("metric registered once");
    v
}

fn histogram_vec(r: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> HistogramVec {
    let v = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets),
        &["backend"],
    )
    .expect("valid metric definition");
    r.register(Box::new(v.clone()))
        .expect("metric registered once");
    v
}

impl Metrics {
    /// Builds and registers every family, plus `roundhouse_build_info` and the process metrics.
    pub fn new() -> Arc<Metrics> {
        let r = Registry::new();
        let build_info = gauge_vec(
            &r,
            "roundhouse_build_info",
            "Always 1; the version label says which roundhouse is running.",
            &["version"],
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        #[cfg(target_os = "linux")]
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("process collector registered once");
        let last_reload_successful = IntGauge::new(
            "roundhouse_config_last_reload_successful",
            "1 if the last configuration (re)load was applied, 0 if it was rejected.",
        )
        .expect("valid metric definition");
        r.register(Box::new(last_reload_successful.clone()))
            .expect("metric registered once");
        let last_reload_success_time = Gauge::new(
            "roundhouse_config_last_reload_success_timestamp_seconds",
            "Unix time of the last configuration (re)load that was applied.",
        )
        .expect("valid metric definition");
        r.register(Box::new(last_reload_success_time.clone()))
            .expect("metric registered once");
        let server = ["backend", "server"];
        let fast = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ];
        Arc::new(Metrics {
            reloads: counter_vec(
                &r,
                "roundhouse_config_reloads_total",
                "Configuration reloads, by result (success or failure).",
                &["result"],
            ),
            last_reload_successful,
            last_reload_success_time,
            listener_connections: counter_vec(
                &r,
                "roundhouse_listener_connections_total",
                "Client connections accepted by a listener.",
                &["listener"],
            ),
            listener_active: gauge_vec(
                &r,
                "roundhouse_listener_active_connections",
                "Client connections open on a listener.",
                &["listener"],
            ),
            listener_rejected: counter_vec(
                &r,
                "roundhouse_listener_rejected_connections_total",
                "Client connections closed without being proxied, by reason.",
                &["listener", "reason"],
            ),
            backend_servers_up: gauge_vec(
                &r,
                "roundhouse_backend_servers_up",
                "Servers of a backend that are up and in rotation.",
                &["backend"],
            ),
            backend_fail_open: gauge_vec(
                &r,
                "roundhouse_backend_fail_open",
                "1 while a backend with no healthy server sends traffic to servers whose only failure is the cluster colour.",
                &["backend"],
            ),
            server_up: gauge_vec(
                &r,
                "roundhouse_server_up",
                "1 if the server is up and in rotation.",
                &server,
            ),
            server_state: gauge_vec(
                &r,
                "roundhouse_server_state",
                "1 for the state the server is in (up, down, excluded, drain or maint).",
                &["backend", "server", "state"],
            ),
            server_active: gauge_vec(
                &r,
                "roundhouse_server_active_connections",
                "Proxied connections open to the server.",
                &server,
            ),
            server_connections: counter_vec(
                &r,
                "roundhouse_server_connections_total",
                "Proxied connections established to the server.",
                &server,
            ),
            server_connect_failures: counter_vec(
                &r,
                "roundhouse_server_connect_failures_total",
                "Failed attempts to connect to the server for a client.",
                &server,
            ),
            server_sent: counter_vec(
                &r,
                "roundhouse_server_sent_bytes_total",
                "Bytes sent to the server (client requests).",
                &server,
            ),
            server_received: counter_vec(
                &r,
                "roundhouse_server_received_bytes_total",
                "Bytes received from the server (responses to clients).",
                &server,
            ),
            server_checks: counter_vec(
                &r,
                "roundhouse_server_health_checks_total",
                "Health checks of the server, by result (pass or fail).",
                &["backend", "server", "result"],
            ),
            server_check_duration: histogram_vec(
                &r,
                "roundhouse_server_health_check_duration_seconds",
                "How long health checks took.",
                fast.clone(),
            ),
            server_state_changes: counter_vec(
                &r,
                "roundhouse_server_state_changes_total",
                "Times the server changed state (up, down, drain, maint).",
                &server,
            ),
            server_connect_duration: histogram_vec(
                &r,
                "roundhouse_server_connect_duration_seconds",
                "How long connecting to a server took for a client.",
                fast,
            ),
            es_cluster_status: gauge_vec(
                &r,
                "roundhouse_elasticsearch_cluster_status",
                "1 for the cluster colour the node reported in its last health answer.",
                &["backend", "server", "status"],
            ),
            discovery_refreshes: counter_vec(
                &r,
                "roundhouse_discovery_refreshes_total",
                "Discovery refreshes of a backend, by result (applied, unchanged, refused, no_source).",
                &["backend", "result"],
            ),
            discovery_changes: counter_vec(
                &r,
                "roundhouse_discovery_changes_total",
                "Changes discovery made to a backend's servers, by change (joined, left, moved).",
                &["backend", "change"],
            ),
            discovery_servers: gauge_vec(
                &r,
                "roundhouse_discovery_servers",
                "Servers of a backend that discovery added (configured servers not counted).",
                &["backend"],
            ),
            server_requests: {
                let c = RequestCollector::new();
                r.register(Box::new(c.clone()))
                    .expect("the request counters are registered once");
                c
            },
            server_byte_relays: gauge_vec(
                &r,
                "roundhouse_server_byte_relay_connections",
                "Open connections to the server relayed as bytes, their HTTP framing not followed.",
                &server,
            ),
            server_excluded: gauge_vec(
                &r,
                "roundhouse_server_excluded",
                "1 while the backend's roles filter keeps the server out of rotation (by the roles its node last reported), whether its checks pass or not.",
                &server,
            ),
            server_idle_closes: counter_vec(
                &r,
                "roundhouse_server_idle_closes_total",
                "Client connections closed at an idle point (last response complete, no new request), by reason.",
                &["backend", "server", "reason"],
            ),
            server_unfollowed: counter_vec(
                &r,
                "roundhouse_server_unfollowed_connections_total",
                "Connections to the server whose HTTP framing the relay stopped following, by reason (tls, http2, upgrade, malformed, ...); backends with http_aware: false are not counted here.",
                &["backend", "server", "reason"],
            ),
            worker_connections: counter_vec(
                &r,
                "roundhouse_worker_connections_accepted_total",
                "Client connections accepted by each worker thread (all listeners): how evenly the kernel spreads them.",
                &["worker"],
            ),
            registry: r,
        })
    }

    /// Resolves the handles of one server.
    pub fn server(&self, backend: &str, server: &str) -> ServerMetrics {
        let l = [backend, server];
        let state =
            SERVER_STATES.map(|s| self.server_state.with_label_values(&[backend, server, s]));
        let cluster_status = ClusterStatus::ALL.map(|c| {
            self.es_cluster_status
                .with_label_values(&[backend, server, c.as_str()])
        });
        ServerMetrics {
            up: self.server_up.with_label_values(&l),
            state,
            active: self.server_active.with_label_values(&l),
            connections: self.server_connections.with_label_values(&l),
            connect_failures: self.server_connect_failures.with_label_values(&l),
            sent: self.server_sent.with_label_values(&l),
            received: self.server_received.with_label_values(&l),
            checks_pass: self
                .server_checks
                .with_label_values(&[backend, server, "pass"]),
            checks_fail: self
                .server_checks
                .with_label_values(&[backend, server, "fail"]),
            state_changes: self.server_state_changes.with_label_values(&l),
            cluster_status,
            requests: self.server_requests.server(backend, server),
            byte_relays: self.server_byte_relays.with_label_values(&l),
            excluded: self.server_excluded.with_label_values(&l),
            idle_closes: IdleClose::ALL.map(|r| {
                self.server_idle_closes
                    .with_label_values(&[backend, server, r.as_str()])
            }),
            unfollowed: self.server_unfollowed.clone(),
            labels: [Arc::from(backend), Arc::from(server)],
        }
    }

    /// Drops a server that left the configuration from the exported metrics.
    pub fn forget_server(&self, backend: &str, server: &str) {
        let l = [backend, server];
        for v in [
            &self.server_up,
            &self.server_active,
            &self.server_byte_relays,
            &self.server_excluded,
        ] {
            let _ = v.remove_label_values(&l);
        }
        for v in [
            &self.server_connections,
            &self.server_connect_failures,
            &self.server_sent,
            &self.server_received,
            &self.server_state_changes,
        ] {
            let _ = v.remove_label_values(&l);
        }
        self.server_requests.forget(backend, server);
        for r in IdleClose::ALL {
            let _ = self
                .server_idle_closes
                .remove_label_values(&[backend, server, r.as_str()]);
        }
        // the unfollowed series exist only for the reasons that happened
        let mut gone: Vec<String> = Vec::new();
        for family in Collector::collect(&self.server_unfollowed) {
            for m in family.get_metric() {
                let labels: Vec<(&str, &str)> = m
                    .get_label()
                    .iter()
                    .map(|l| (l.name(), l.value()))
                    .collect();
                let has = |k: &str, v: &str| labels.iter().any(|(n, x)| *n == k && *x == v);
                if has("backend", backend)
                    && has("server", server)
                    && let Some((_, reason)) = labels.iter().find(|(n, _)| *n == "reason")
                {
                    gone.push((*reason).to_owned());
                }
            }
        }
        for reason in gone {
            let _ = self
                .server_unfollowed
                .remove_label_values(&[backend, server, &reason]);
        }
        for s in SERVER_STATES {
            let _ = self.server_state.remove_label_values(&[backend, server, s]);
        }
        for c in ClusterStatus::ALL {
            let _ = self
                .es_cluster_status
                .remove_label_values(&[backend, server, c.as_str()]);
        }
        for r in ["pass", "fail"] {
            let _ = self
                .server_checks
                .remove_label_values(&[backend, server, r]);
        }
    }

    /// The counter of connections accepted by worker `index`, resolved once per accept loop.
    pub fn worker_connections(&self, index: usize) -> IntCounter {
        self.worker_connections
            .with_label_values(&[&index.to_string()])
    }

    /// Resolves the handles of one listener.
    pub fn listener(&self, name: &str) -> ListenerMetrics {
        ListenerMetrics {
            connections: self.listener_connections.with_label_values(&[name]),
            active: self.listener_active.with_label_values(&[name]),
            rejected: RejectReason::ALL.map(|r| {
                self.listener_rejected
                    .with_label_values(&[name, r.as_str()])
            }),
        }
    }

    /// Drops a listener that left the configuration from the exported metrics.
    pub fn forget_listener(&self, name: &str) {
        let _ = self.listener_connections.remove_label_values(&[name]);
        let _ = self.listener_active.remove_label_values(&[name]);
        for r in RejectReason::ALL {
            let _ = self
                .listener_rejected
                .remove_label_values(&[name, r.as_str()]);
        }
    }

    /// Resolves the handles of one backend. The discovery series appear only for a backend
    /// that discovers.
    pub fn backend(&self, name: &str, discovers: bool) -> BackendMetrics {
        let detached = |n: &str| IntCounter::new(n, "not exported").expect("valid metric");
        let (refreshes, changes, discovered) = if discovers {
            (
                DiscoveryResult::ALL.map(|r| {
                    self.discovery_refreshes
                        .with_label_values(&[name, r.as_str()])
                }),
                DiscoveryChange::ALL.map(|c| {
                    self.discovery_changes
                        .with_label_values(&[name, c.as_str()])
                }),
                self.discovery_servers.with_label_values(&[name]),
            )
        } else {
            (
                DiscoveryResult::ALL.map(|r| detached(r.as_str())),
                DiscoveryChange::ALL.map(|c| detached(c.as_str())),
                IntGauge::new("discovered", "not exported").expect("valid metric"),
            )
        };
        BackendMetrics {
            servers_up: self.backend_servers_up.with_label_values(&[name]),
            fail_open: self.backend_fail_open.with_label_values(&[name]),
            check_duration: self.server_check_duration.with_label_values(&[name]),
            connect_duration: self.server_connect_duration.with_label_values(&[name]),
            discovered,
            refreshes,
            changes,
        }
    }

    /// Drops a backend that left the configuration from the exported metrics.
    pub fn forget_backend(&self, name: &str) {
        let _ = self.backend_servers_up.remove_label_values(&[name]);
        let _ = self.backend_fail_open.remove_label_values(&[name]);
        let _ = self.server_check_duration.remove_label_values(&[name]);
        let _ = self.server_connect_duration.remove_label_values(&[name]);
        self.forget_discovery(name);
    }

    /// Drops a backend's discovery series (it stopped discovering, or is gone).
    pub fn forget_discovery(&self, name: &str) {
        for r in DiscoveryResult::ALL {
            let _ = self
                .discovery_refreshes
                .remove_label_values(&[name, r.as_str()]);
        }
        for c in DiscoveryChange::ALL {
            let _ = self
                .discovery_changes
                .remove_label_values(&[name, c.as_str()]);
        }
        let _ = self.discovery_servers.remove_label_values(&[name]);
    }

    /// Counts a configuration (re)load.
    pub fn reload(&self, applied: bool) {
        let result = if applied { "success" } else { "failure" };
        self.reloads.with_label_values(&[result]).inc();
        self.last_reload_successful.set(i64::from(applied));
        if applied {
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            self.last_reload_success_time.set(now);
        }
    }

    /// Makes both reload results visible from the start, so rates work before the first reload.
    pub fn init_reloads(&self) {
        for result in ["success", "failure"] {
            self.reloads.with_label_values(&[result]);
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding into memory cannot fail");
        out
    }
}
