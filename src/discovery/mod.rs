//! Discovery: learning a backend's servers from the cluster itself, the way Elasticsearch's own
//! clients sniff, but safely, and once for every client behind roundhouse.
//!
//! One task per backend with `discovery: elasticsearch` asks `GET /_nodes/_all/http` every
//! `interval`, of a server that passes the full Elasticsearch judgement right now (right
//! cluster name, enough nodes, a master found): a node that elected itself master of a cluster
//! of one, or a node of another cluster, is never asked, and an answer about another cluster or
//! with too few nodes is refused. The answer becomes the backend's discovered servers by the
//! rules of [`members`]; every change goes to the runtime, which swaps a new snapshot in the same
//! atomic way a reload does. Requests use the health check's TLS and credentials.

mod members;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::backend::{Backend, DiscoveryReport, Member, Server, Source};
use crate::config::{BackendConfig, CheckKind, Name};
use crate::health::{CheckTarget, get};
use crate::metrics::{DiscoveryChange, DiscoveryResult};
use crate::nodes::{self, NodeId, NodesAnswer};
use crate::server::{AdminState, Health};
use crate::state::Shared;
use members::{Change, Seeds, Tracked};

/// What is asked of a trusted node.
const NODES_ALL: &str = "/_nodes/_all/http";
/// A large cluster's answer: a few hundred bytes per node.
const MAX_ANSWER: usize = 8 * 1024 * 1024;
/// The least time a discovery request gets, whatever the health check's timeout.
const MIN_TIMEOUT: Duration = Duration::from_secs(2);

/// A backend's discovered servers, for the runtime to build a snapshot with.
#[derive(Debug)]
pub struct Update {
    pub backend: Name,
    pub members: Arc<[Member]>,
}

struct Task {
    settings: watch::Sender<Arc<BackendConfig>>,
    cancel: CancellationToken,
}

/// Owns the discovery tasks, one per backend that discovers.
pub struct Discoverers {
    tasks: HashMap<Name, Task>,
    running: JoinSet<Name>,
    stop: CancellationToken,
    shared: Arc<Shared>,
    updates: mpsc::UnboundedSender<Update>,
}

impl Discoverers {
    /// No task yet; updates go to `updates`.
    pub fn new(shared: Arc<Shared>, updates: mpsc::UnboundedSender<Update>) -> Discoverers {
        Discoverers {
            tasks: HashMap::new(),
            running: JoinSet::new(),
            stop: CancellationToken::new(),
            shared,
            updates,
        }
    }

    /// Makes the tasks match the backends that discover: starts, updates and stops them. A task
    /// whose settings change refreshes at once; it keeps what it knows about the members.
    pub fn apply(&mut self, backends: &[Arc<Backend>]) {
        let wanted: HashMap<Name, Arc<BackendConfig>> = backends
            .iter()
            .filter(|b| b.config.discovery.is_some())
            .map(|b| (b.name().clone(), Arc::new(b.config.clone())))
            .collect();
        self.tasks.retain(|name, task| {
            let keep = wanted.contains_key(name);
            if !keep {
                task.cancel.cancel();
                tracing::info!(backend = %name, "discovery turned off; the configured servers are the server set");
            }
            keep
        });
        for (name, config) in wanted {
            if let Some(task) = self.tasks.get(&name) {
                task.settings.send_if_modified(|current| {
                    let changed = **current != *config;
                    if changed {
                        *current = config;
                    }
                    changed
                });
                continue;
            }
            let (settings, rx) = watch::channel(config);
            let cancel = self.stop.child_token();
            let run = run(
                name.clone(),
                rx,
                self.shared.clone(),
                self.updates.clone(),
                cancel.clone(),
            );
            let task_name = name.clone();
            self.running.spawn(async move {
                run.await;
                task_name
            });
            self.tasks.insert(name, Task { settings, cancel });
        }
    }

    /// Waits for a task that ended; one only ends when cancelled or when it panicked, and a
    /// panic is reported rather than lost.
    pub async fn next_exit(&mut self) {
        match self.running.join_next().await {
            Some(Err(e)) if e.is_panic() => {
                tracing::error!(error = %e, "a discovery task panicked; its backend keeps its servers until the next reload");
            }
            Some(_) => {}
            None => std::future::pending().await,
        }
    }

    /// Stops every task and waits for them.
    pub async fn shutdown(&mut self) {
        self.stop.cancel();
        while self.running.join_next().await.is_some() {}
        self.tasks.clear();
    }
}

/// Discovers for one backend until cancelled: at once, then every interval, and whenever its
/// settings change.
async fn run(
    backend: Name,
    mut settings: watch::Receiver<Arc<BackendConfig>>,
    shared: Arc<Shared>,
    updates: mpsc::UnboundedSender<Update>,
    cancel: CancellationToken,
) {
    let mut d = Discovery {
        backend,
        tracked: Vec::new(),
        ignored: HashSet::new(),
        last_problem: None,
        next_source: 0,
    };
    // a reload restarts nothing: members carried by the snapshot are where a new task starts
    if let Some(known) = shared.running.load().discovered.get(&d.backend) {
        d.tracked = known
            .iter()
            .map(|m| Tracked {
                member: m.clone(),
                absent: 0,
            })
            .collect();
    }
    loop {
        let config = settings.borrow_and_update().clone();
        let Some(discovery) = config.discovery.clone() else {
            return;
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = d.refresh(&config, &shared, &updates) => {}
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(discovery.interval) => {}
            r = settings.changed() => if r.is_err() { return },
        }
    }
}

/// What one backend's discovery remembers between refreshes.
struct Discovery {
    backend: Name,
    tracked: Vec<Tracked>,
    /// Nodes already said to be left out, so each is said once.
    ignored: HashSet<NodeId>,
    /// The last reason no answer was taken, so a lasting problem is logged once.
    last_problem: Option<String>,
    /// Where the next refresh starts looking for a trusted node, so the asking goes round.
    next_source: usize,
}

impl Discovery {
    /// Asks one trusted node after another until an answer is taken; records how it went.
    async fn refresh(
        &mut self,
        config: &BackendConfig,
        shared: &Shared,
        updates: &mpsc::UnboundedSender<Update>,
    ) {
        let running = shared.running.load();
        let Some(backend) = running.backends.iter().find(|b| *b.name() == self.backend) else {
            return;
        };
        let report = self.ask_around(backend, config, updates).await;
        backend.state.metrics.discovery(report.result).inc();
        backend.state.set_discovery_report(report);
    }

    async fn ask_around(
        &mut self,
        backend: &Backend,
        config: &BackendConfig,
        updates: &mpsc::UnboundedSender<Update>,
    ) -> DiscoveryReport {
        let metrics = &backend.state.metrics;
        let trusted: Vec<&Server> = backend.servers.iter().filter(|s| trusted(s)).collect();
        if trusted.is_empty() {
            return self.failed(
                DiscoveryResult::NoSource,
                "no server passes the full Elasticsearch judgement (right cluster, enough nodes, a master), so none is asked".into(),
            );
        }
        let mut problems = Vec::new();
        let start = self.next_source % trusted.len();
        self.next_source = self.next_source.wrapping_add(1);
        for s in trusted.iter().cycle().skip(start).take(trusted.len()) {
            match ask(config, s).await {
                Ok(answer) => {
                    let changed = self.take(backend, &answer, config);
                    let result = if changed {
                        let members: Arc<[Member]> =
                            self.tracked.iter().map(|t| t.member.clone()).collect();
                        let _ = updates.send(Update {
                            backend: self.backend.clone(),
                            members,
                        });
                        DiscoveryResult::Applied
                    } else {
                        DiscoveryResult::Unchanged
                    };
                    metrics.discovered.set(self.tracked.len() as i64);
                    if self.last_problem.take().is_some() {
                        tracing::info!(backend = %self.backend, source = %s.config.name, "discovery answers again");
                    }
                    return DiscoveryReport {
                        at: SystemTime::now(),
                        result,
                        source: Some(s.config.name.clone()),
                        reason: None,
                        nodes: answer.nodes.len(),
                    };
                }
                Err(why) => problems.push(format!("{}: {why}", s.config.name)),
            }
        }
        self.failed(DiscoveryResult::Refused, problems.join("; "))
    }

    /// Applies an accepted answer; logs and counts every change. True when the members changed.
    fn take(&mut self, backend: &Backend, answer: &NodesAnswer, config: &BackendConfig) -> bool {
        let seeds = seeds(backend);
        let discovery = config.discovery.as_ref().expect("a discovering backend");
        let passing = |id: &NodeId| {
            backend.servers.iter().any(|s| {
                matches!(&s.source, Source::Discovered(m) if m.id == *id)
                    && s.state.health.health() == Health::Up
            })
        };
        let changes = members::apply(
            &mut self.tracked,
            answer,
            &seeds,
            &config.roles,
            discovery.forget_after,
            passing,
        );
        let metrics = &backend.state.metrics;
        let mut changed = false;
        for c in changes {
            let b = &self.backend;
            match c {
                Change::Joined(m) => {
                    changed = true;
                    metrics.discovery_change(DiscoveryChange::Joined).inc();
                    tracing::info!(backend = %b, server = %m.name, node_id = %m.id, address = %m.publish.addr, "node {} (id {}) joined at {}", m.name, m.id, m.publish.text);
                }
                Change::Left { member: m, why } => {
                    changed = true;
                    metrics.discovery_change(DiscoveryChange::Left).inc();
                    tracing::warn!(backend = %b, server = %m.name, node_id = %m.id, reason = %why, "node {} (id {}) left the server set", m.name, m.id);
                }
                Change::Moved { member: m, from } => {
                    changed = true;
                    metrics.discovery_change(DiscoveryChange::Moved).inc();
                    tracing::info!(backend = %b, server = %m.name, node_id = %m.id, "node {} (id {}) moved from {} to {}", m.name, m.id, from.text, m.publish.text);
                }
                Change::Configured(m) => {
                    changed = true;
                    tracing::info!(backend = %b, server = %m.name, node_id = %m.id, "node {} (id {}) is listed in the configuration file now: a configured server", m.name, m.id);
                }
                Change::Ignored { id, name, why } => {
                    if self.ignored.insert(id.clone()) {
                        tracing::info!(backend = %b, node = %name, node_id = %id, reason = %why, "node {name} is not a server of this backend");
                    }
                }
            }
        }
        changed
    }

    /// A refresh that took no answer: logged once per distinct reason, reported every time.
    fn failed(&mut self, result: DiscoveryResult, reason: String) -> DiscoveryReport {
        if self.last_problem.as_deref() != Some(reason.as_str()) {
            tracing::warn!(backend = %self.backend, reason = %reason, "discovery took no answer; the server set stays as it is");
            self.last_problem = Some(reason.clone());
        }
        DiscoveryReport {
            at: SystemTime::now(),
            result,
            source: None,
            reason: Some(reason),
            nodes: 0,
        }
    }
}

/// A server whose answer may change the server set: it passes the full Elasticsearch judgement
/// (or fails on the cluster colour alone, which says nothing about membership), and is not in
/// maintenance. Its roles do not matter: a dedicated master knows the cluster best.
fn trusted(s: &Server) -> bool {
    s.state.admin() != AdminState::Maint
        && (s.state.health.health() == Health::Up || s.state.health.down_on_colour_only())
}

/// The configured servers, by name, node id and address.
fn seeds(backend: &Backend) -> Seeds {
    let mut seeds = Seeds::default();
    for s in &backend.servers {
        if s.source != Source::Configured {
            continue;
        }
        seeds.names.insert(s.config.name.clone());
        seeds.addrs.insert(s.addr);
        if let Some(n) = s.state.node() {
            seeds.ids.insert(n.id);
        }
    }
    seeds
}

/// Asks `server` for the cluster's nodes and checks the answer can be trusted.
async fn ask(config: &BackendConfig, server: &Server) -> Result<NodesAnswer, String> {
    let CheckKind::Elasticsearch(es) = &config.health_check.kind else {
        return Err("discovery needs an Elasticsearch health check".into());
    };
    let target = CheckTarget::new(
        config.health_check.clone(),
        server.addr,
        server.config.address.host.clone(),
    );
    let timeout = config.health_check.timeout.max(MIN_TIMEOUT);
    let deadline = tokio::time::Instant::now() + timeout;
    // The node asks every other node; one that hangs (a GC pause, a frozen VM) would hold the
    // whole answer. With half our time as the cluster's own timeout, such a node comes back as
    // failed (still a member) instead, and the answer in time.
    let path = format!("{NODES_ALL}?timeout={}ms", timeout.as_millis() / 2);
    let answers = tokio::time::timeout_at(deadline, get(&target, &[&path], MAX_ANSWER, deadline))
        .await
        .map_err(|_| {
            format!(
                "GET {NODES_ALL} timed out after {}",
                humantime::format_duration(timeout)
            )
        })??;
    let (status, body) = answers
        .into_iter()
        .next()
        .unwrap_or_else(|| Err("no HTTP answer".into()))?;
    if !(200..300).contains(&status) {
        return Err(format!("GET {NODES_ALL} answered HTTP {status}"));
    }
    let answer = nodes::parse(&body).map_err(|e| format!("GET {NODES_ALL}: {e}"))?;
    if let Some(want) = &es.cluster_name
        && &answer.cluster_name != want
    {
        return Err(format!(
            "its answer is about cluster {}, want {want}",
            answer.cluster_name
        ));
    }
    if let Some(min) = es.min_nodes
        && answer.nodes.len() < min as usize
    {
        return Err(format!(
            "its answer lists {} nodes, want at least {min}",
            answer.nodes.len()
        ));
    }
    if let Some(me) = server.state.node()
        && !answer.nodes.iter().any(|n| n.id == me.id)
    {
        return Err(format!(
            "its answer does not list the node itself ({})",
            me.id
        ));
    }
    Ok(answer)
}
