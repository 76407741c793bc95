//! The running snapshot: what the data path reads on every new connection, and how a validated
//! configuration becomes one (resolving names, carrying state over from the previous snapshot).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::Notify;
use tokio_util::task::TaskTracker;

use crate::backend::{AdminState, Backend, BackendState, Server, ServerKey, ServerState};
use crate::config::{self, Config, ConfigError, ConfigErrors, FieldPath, Name};
use crate::listener::ListenerState;
use crate::metrics::Metrics;
use crate::notify::Rejection;

/// How long a host name may take to resolve at (re)load.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything the data path needs, swapped atomically on reload.
pub struct Running {
    pub config: Arc<Config>,
    pub loaded_at: SystemTime,
    /// Where connections accepted on each configured bind address go.
    pub routes: HashMap<SocketAddr, Route>,
    pub backends: Vec<Arc<Backend>>,
}

/// One listener's destination.
#[derive(Clone)]
pub struct Route {
    pub listener: Arc<ListenerState>,
    pub backend: Arc<Backend>,
    pub max_connections: Option<usize>,
    /// The address actually bound.
    pub local: SocketAddr,
    /// Whether to log every connection at info.
    pub access_log: bool,
}

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

/// A validated configuration whose server names have been resolved.
pub struct Prepared {
    pub config: Config,
    addrs: HashMap<(Name, Name), SocketAddr>,
}

impl Prepared {
    /// Where a server resolved to.
    pub fn addr(&self, backend: &str, server: &str) -> Option<SocketAddr> {
        self.addrs
            .get(&(Name::new(backend), Name::new(server)))
            .copied()
    }
}

/// Reads, validates and resolves a configuration file: what `check`, startup and reload share.
pub async fn prepare(path: &Path) -> Result<Prepared, ConfigErrors> {
    let config = config::load(path)?;
    let mut lookups = tokio::task::JoinSet::new();
    let mut addrs = HashMap::new();
    for (bi, b) in config.backends.iter().enumerate() {
        for (si, s) in b.servers.iter().enumerate() {
            let key = (b.name.clone(), s.name.clone());
            if let Some(ip) = s.address.ip() {
                addrs.insert(key, SocketAddr::new(ip, s.address.port));
                continue;
            }
            let address = s.address.clone();
            let field = FieldPath::default()
                .field("backends")
                .index(bi)
                .field("servers")
                .index(si);
            lookups.spawn(async move {
                let host = (address.host.as_str(), address.port);
                let found =
                    tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host(host)).await;
                let result = match found {
                    Ok(Ok(mut it)) => it
                        .next()
                        .ok_or_else(|| format!("{:?} resolves to no address", address.host)),
                    Ok(Err(e)) => Err(format!("cannot resolve {:?}: {e}", address.host)),
                    Err(_) => Err(format!(
                        "cannot resolve {:?}: no answer within {}s",
                        address.host,
                        RESOLVE_TIMEOUT.as_secs()
                    )),
                };
                (key, field, result)
            });
        }
    }
    let mut errors = Vec::new();
    while let Some(done) = lookups.join_next().await {
        let (key, field, result) = done.expect("a lookup task does not panic");
        match result {
            Ok(addr) => {
                addrs.insert(key, addr);
            }
            Err(message) => errors.push(ConfigError::Invalid {
                file: path.to_owned(),
                path: field.to_string(),
                message,
            }),
        }
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    Ok(Prepared { config, addrs })
}

/// Builds the snapshot for `prepared`, reusing from `previous` the state of every listener,
/// backend and server that stays. `locals` gives the bound address of each configured bind.
pub fn build(
    prepared: Prepared,
    previous: Option<&Running>,
    locals: &HashMap<SocketAddr, SocketAddr>,
    metrics: &Metrics,
    changes: &Arc<Notify>,
) -> Running {
    let Prepared { config, addrs } = prepared;
    let mut old_servers: HashMap<&ServerKey, &Arc<ServerState>> = HashMap::new();
    let mut old_by_name: HashMap<(&str, &str), &Arc<ServerState>> = HashMap::new();
    let mut old_backends: HashMap<&str, &Arc<BackendState>> = HashMap::new();
    let mut old_listeners: HashMap<&str, &Arc<ListenerState>> = HashMap::new();
    if let Some(p) = previous {
        for b in &p.backends {
            old_backends.insert(b.name(), &b.state);
            for s in &b.servers {
                old_servers.insert(&s.state.key, &s.state);
                old_by_name.insert((&s.state.key.backend, &s.state.key.server), &s.state);
            }
        }
        for r in p.routes.values() {
            old_listeners.insert(&r.listener.name, &r.listener);
        }
    }
    let mut backends = Vec::new();
    for b in &config.backends {
        let state = old_backends
            .get(&*b.name)
            .map(|s| Arc::clone(s))
            .unwrap_or_else(|| Arc::new(BackendState::new(metrics.backend(&b.name))));
        let servers = b
            .servers
            .iter()
            .map(|s| {
                let addr = addrs[&(b.name.clone(), s.name.clone())];
                let key = ServerKey {
                    backend: b.name.clone(),
                    server: s.name.clone(),
                    addr,
                };
                let state = match old_servers.get(&key) {
                    Some(st) => Arc::clone(st),
                    None => {
                        // Same name at a new address: a new server to check, but its counters
                        // go on and what the operator asked of it (drain, maint) still holds.
                        let old = old_by_name.get(&(&*b.name, &*s.name));
                        let m = old
                            .map(|o| o.metrics.clone())
                            .unwrap_or_else(|| metrics.server(&b.name, &s.name));
                        let admin = old.map_or(AdminState::Ready, |o| o.admin());
                        Arc::new(ServerState::new(key, m, changes.clone(), admin))
                    }
                };
                Server {
                    config: s.clone(),
                    addr,
                    state,
                }
            })
            .collect();
        backends.push(Arc::new(Backend::new(b.clone(), servers, state)));
    }
    let mut routes = HashMap::new();
    for l in &config.listeners {
        let listener = old_listeners
            .get(&*l.name)
            .map(|s| Arc::clone(s))
            .unwrap_or_else(|| {
                Arc::new(ListenerState::new(
                    l.name.clone(),
                    metrics.listener(&l.name),
                ))
            });
        let backend = backends
            .iter()
            .find(|b| b.name() == &l.backend)
            .expect("validation checked that every listener's backend exists")
            .clone();
        routes.insert(
            l.bind,
            Route {
                listener,
                backend,
                max_connections: l.max_connections,
                local: locals.get(&l.bind).copied().unwrap_or(l.bind),
                access_log: config.access_log,
            },
        );
    }
    Running {
        config: Arc::new(config),
        loaded_at: SystemTime::now(),
        routes,
        backends,
    }
}

/// Removes from the exported metrics what `old` had and `new` no longer has.
pub fn forget_removed(old: &Running, new: &Running, metrics: &Metrics) {
    for b in &old.backends {
        let kept = new.backends.iter().find(|n| n.name() == b.name());
        if kept.is_none() {
            metrics.forget_backend(b.name());
        }
        for s in &b.servers {
            let stays =
                kept.is_some_and(|k| k.servers.iter().any(|n| n.config.name == s.config.name));
            if !stays {
                metrics.forget_server(b.name(), &s.config.name);
            }
        }
    }
    for r in old.routes.values() {
        if !new
            .routes
            .values()
            .any(|n| n.listener.name == r.listener.name)
        {
            metrics.forget_listener(&r.listener.name);
        }
    }
}
