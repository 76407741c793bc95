//! The running snapshot: what the data path reads on every new connection, and how a resolved
//! configuration becomes one, carrying state over from the previous snapshot by identity.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::Notify;

use super::listener::ListenerState;
use crate::backend::{Backend, BackendState, Member, Server, Source};
use crate::config::{BackendConfig, Config, HostPort, Name, ServerConfig};
use crate::metrics::{IdleClose, Metrics};
use crate::resolve::Prepared;
use crate::server::{AdminState, Identity, ServerKey, ServerState};

/// The discovered servers of each backend that discovers, as its discovery last reported them.
pub type Discovered = HashMap<Name, Arc<[Member]>>;

/// Everything the data path needs, swapped atomically on reload and on discovery changes.
pub struct Running {
    pub config: Arc<Config>,
    /// Where each configured server's host resolved when the file was loaded.
    addrs: Arc<HashMap<(Name, Name), SocketAddr>>,
    /// The discovered servers this snapshot includes.
    pub discovered: Discovered,
    /// When the configuration file was loaded (a discovery change keeps it).
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

/// The state of the snapshot being replaced, found by identity.
#[derive(Default)]
struct Previous<'a> {
    servers: HashMap<&'a ServerKey, &'a Arc<ServerState>>,
    by_name: HashMap<(&'a str, &'a str), &'a Arc<ServerState>>,
    backends: HashMap<&'a str, &'a Arc<BackendState>>,
    listeners: HashMap<&'a str, &'a Arc<ListenerState>>,
}

impl<'a> Previous<'a> {
    fn of(running: Option<&'a Running>) -> Previous<'a> {
        let mut p = Previous::default();
        let Some(r) = running else { return p };
        for b in &r.backends {
            p.backends.insert(b.name(), &b.state);
            for s in &b.servers {
                p.servers.insert(&s.state.key, &s.state);
                p.by_name
                    .insert((&s.state.key.backend, &s.state.key.server), &s.state);
            }
        }
        for route in r.routes.values() {
            p.listeners.insert(&route.listener.name, &route.listener);
        }
        p
    }

    /// The state of the server `key`: the same object if it stays. A server by the same name
    /// under another identity (a configured server at a new address) is a new server to check,
    /// but its counters go on and what the operator asked of it (drain, maint) still holds.
    fn server(&self, key: ServerKey, metrics: &Metrics, changes: &Arc<Notify>) -> Arc<ServerState> {
        if let Some(st) = self.servers.get(&key) {
            return Arc::clone(st);
        }
        let old = self.by_name.get(&(&*key.backend, &*key.server));
        let m = old
            .map(|o| o.metrics.clone())
            .unwrap_or_else(|| metrics.server(&key.backend, &key.server));
        let admin = old.map_or(AdminState::Ready, |o| o.admin());
        Arc::new(ServerState::new(key, m, changes.clone(), admin))
    }
}

/// Builds the snapshot for `prepared` and the `discovered` servers, reusing from `previous` the
/// state of every listener, backend and server that stays. `locals` gives the bound address of
/// each configured bind.
pub fn build(
    prepared: Prepared,
    discovered: Discovered,
    previous: Option<&Running>,
    locals: &HashMap<SocketAddr, SocketAddr>,
    metrics: &Metrics,
    changes: &Arc<Notify>,
) -> Running {
    let Prepared { config, addrs } = prepared;
    let old = Previous::of(previous);
    // only backends that (still) discover keep discovered servers
    let discovered: Discovered = discovered
        .into_iter()
        .filter(|(name, _)| config.backend(name).is_some_and(|b| b.discovery.is_some()))
        .collect();
    let mut backends = Vec::new();
    for b in &config.backends {
        // a backend that starts or stops discovering gets handles with or without its
        // discovery series
        let discovers = b.discovery.is_some();
        let state = old
            .backends
            .get(&*b.name)
            .filter(|s| s.discovers == discovers)
            .map(|s| Arc::clone(s))
            .unwrap_or_else(|| {
                Arc::new(BackendState::new(
                    metrics.backend(&b.name, discovers),
                    discovers,
                ))
            });
        let mut servers: Vec<Server> = b
            .servers
            .iter()
            .map(|s| {
                let addr = addrs[&(b.name.clone(), s.name.clone())];
                let key = ServerKey {
                    backend: b.name.clone(),
                    server: s.name.clone(),
                    identity: Identity::Address(addr),
                };
                Server {
                    config: s.clone(),
                    addr,
                    source: Source::Configured,
                    state: old.server(key, metrics, changes),
                }
            })
            .collect();
        for m in discovered.get(&b.name).into_iter().flat_map(|d| d.iter()) {
            if let Some(s) = discovered_server(b, m, &servers, &old, metrics, changes) {
                servers.push(s);
            }
        }
        backends.push(Arc::new(Backend::new(b.clone(), servers, state)));
    }
    let mut routes = HashMap::new();
    for l in &config.listeners {
        let listener = old
            .listeners
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
        addrs: Arc::new(addrs),
        discovered,
        loaded_at: SystemTime::now(),
        routes,
        backends,
    }
}

/// The same configuration as `previous` with another set of discovered servers: what a
/// discovery change swaps in.
pub fn rebuild(
    previous: &Running,
    discovered: Discovered,
    metrics: &Metrics,
    changes: &Arc<Notify>,
) -> Running {
    let prepared = Prepared {
        config: (*previous.config).clone(),
        addrs: (*previous.addrs).clone(),
    };
    let locals = previous
        .routes
        .iter()
        .map(|(bind, r)| (*bind, r.local))
        .collect();
    let mut running = build(
        prepared,
        discovered,
        Some(previous),
        &locals,
        metrics,
        changes,
    );
    running.loaded_at = previous.loaded_at;
    running
}

/// A discovered member as a server, unless a configured server already is that node (a seed
/// answering under its configured name) or uses its name or address.
fn discovered_server(
    b: &BackendConfig,
    m: &Member,
    servers: &[Server],
    old: &Previous<'_>,
    metrics: &Metrics,
    changes: &Arc<Notify>,
) -> Option<Server> {
    let taken = servers.iter().any(|s| {
        s.config.name == m.name
            || s.addr == m.publish.addr
            || s.state.node().is_some_and(|n| n.id == m.id)
    });
    if taken {
        return None;
    }
    let key = ServerKey {
        backend: b.name.clone(),
        server: m.name.clone(),
        identity: Identity::Node(m.id.clone()),
    };
    Some(Server {
        config: ServerConfig {
            name: m.name.clone(),
            address: HostPort {
                host: m.publish.addr.ip().to_string(),
                port: m.publish.addr.port(),
            },
            weight: 1,
        },
        addr: m.publish.addr,
        source: Source::Discovered(m.clone()),
        state: old.server(key, metrics, changes),
    })
}

/// Marks the servers of `old` that `new` no longer has as removed, so that their keep-alive
/// connections close at their next idle point; true when there was one.
pub fn mark_removed(old: &Running, new: &Running) -> bool {
    let mut any = false;
    for s in old.backends.iter().flat_map(|b| &b.servers) {
        let stays = new
            .backends
            .iter()
            .flat_map(|b| &b.servers)
            .any(|n| Arc::ptr_eq(&n.state, &s.state));
        if !stays {
            any |= s.state.set_leaving(Some(IdleClose::Removed));
        }
    }
    any
}

/// Removes from the exported metrics what `old` had and `new` no longer has.
pub fn forget_removed(old: &Running, new: &Running, metrics: &Metrics) {
    for b in &old.backends {
        let kept = new.backends.iter().find(|n| n.name() == b.name());
        match kept {
            None => metrics.forget_backend(b.name()),
            Some(k) if b.state.discovers && !k.state.discovers => {
                metrics.forget_discovery(b.name())
            }
            Some(_) => {}
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{self, Name};
    use crate::server::Health;

    /// A snapshot of backend `es` with these `(name, address)` servers, built on `previous`.
    fn snapshot(
        servers: &[(&str, &str)],
        previous: Option<&Running>,
        metrics: &Metrics,
    ) -> Running {
        let list: Vec<String> = servers
            .iter()
            .map(|(n, a)| format!("{{name: {n}, address: \"{a}\"}}"))
            .collect();
        let yaml = format!(
            "enabled: true\nlisteners: [{{name: es, bind: \"127.0.0.1:19200\", backend: es}}]\n\
             backends: [{{name: es, servers: [{}]}}]\n",
            list.join(", ")
        );
        let config = config::parse(Path::new("test.yaml"), &yaml).expect("a valid config");
        let addrs = servers
            .iter()
            .map(|(n, a)| {
                let addr: SocketAddr = a.parse().expect("an IP address");
                ((Name::new("es"), Name::new(n)), addr)
            })
            .collect();
        let prepared = Prepared { config, addrs };
        build(
            prepared,
            Discovered::new(),
            previous,
            &HashMap::new(),
            metrics,
            &Arc::new(Notify::new()),
        )
    }

    fn server<'a>(r: &'a Running, name: &str) -> &'a Arc<ServerState> {
        &r.backends[0]
            .servers
            .iter()
            .find(|s| *s.config.name == *name)
            .expect("server in the snapshot")
            .state
    }

    fn exported(metrics: &Metrics, needle: &str) -> bool {
        String::from_utf8(metrics.render())
            .expect("UTF-8 exposition")
            .lines()
            .any(|l| !l.starts_with('#') && l.contains(needle))
    }

    #[test]
    fn a_server_that_stays_keeps_its_state_object() {
        let m = Metrics::new();
        let old = snapshot(&[("es-1", "10.0.0.1:9200")], None, &m);
        let new = snapshot(&[("es-1", "10.0.0.1:9200")], Some(&old), &m);
        assert!(Arc::ptr_eq(server(&old, "es-1"), server(&new, "es-1")));
        assert!(Arc::ptr_eq(&old.backends[0].state, &new.backends[0].state));
        let (old_l, new_l) = (&old.routes.values().next(), &new.routes.values().next());
        assert!(Arc::ptr_eq(
            &old_l.expect("a route").listener,
            &new_l.expect("a route").listener
        ));
    }

    #[test]
    fn same_name_at_a_new_address_keeps_counters_and_drain_but_is_checked_afresh() {
        let m = Metrics::new();
        let old = snapshot(&[("es-1", "10.0.0.1:9200")], None, &m);
        let before = server(&old, "es-1");
        before.metrics.connections.inc_by(7);
        before.set_admin(AdminState::Drain);
        before.health.record(
            crate::server::Observation::pass(None, std::time::Duration::ZERO),
            2,
            3,
        );
        assert_eq!(before.health.health(), Health::Up);

        let new = snapshot(&[("es-1", "10.0.0.9:9200")], Some(&old), &m);
        let after = server(&new, "es-1");
        assert!(
            !Arc::ptr_eq(before, after),
            "a new address is a new server to check"
        );
        assert_eq!(
            after.key.identity,
            Identity::Address("10.0.0.9:9200".parse().unwrap())
        );
        assert_eq!(after.metrics.connections.get(), 7, "counters go on");
        assert_eq!(
            after.admin(),
            AdminState::Drain,
            "the operator's drain holds"
        );
        assert_eq!(after.health.health(), Health::Unknown, "health starts over");
    }

    #[test]
    fn a_new_server_starts_ready_and_unchecked() {
        let m = Metrics::new();
        let old = snapshot(&[("es-1", "10.0.0.1:9200")], None, &m);
        server(&old, "es-1").set_admin(AdminState::Maint);
        let new = snapshot(
            &[("es-1", "10.0.0.1:9200"), ("es-2", "10.0.0.2:9200")],
            Some(&old),
            &m,
        );
        let es2 = server(&new, "es-2");
        assert_eq!(es2.admin(), AdminState::Ready);
        assert_eq!(es2.health.health(), Health::Unknown);
        assert_eq!(es2.metrics.connections.get(), 0);
        assert_eq!(server(&new, "es-1").admin(), AdminState::Maint);
    }

    #[test]
    fn a_removed_server_is_forgotten_and_comes_back_fresh() {
        let m = Metrics::new();
        let old = snapshot(
            &[("es-1", "10.0.0.1:9200"), ("es-2", "10.0.0.2:9200")],
            None,
            &m,
        );
        server(&old, "es-2").metrics.connections.inc_by(3);
        server(&old, "es-2").set_admin(AdminState::Drain);
        assert!(exported(&m, "server=\"es-2\""));

        let new = snapshot(&[("es-1", "10.0.0.1:9200")], Some(&old), &m);
        forget_removed(&old, &new, &m);
        assert!(!exported(&m, "server=\"es-2\""), "its series are gone");
        assert!(exported(&m, "server=\"es-1\""), "the others' stay");

        let again = snapshot(
            &[("es-1", "10.0.0.1:9200"), ("es-2", "10.0.0.2:9200")],
            Some(&new),
            &m,
        );
        let es2 = server(&again, "es-2");
        assert_eq!(es2.metrics.connections.get(), 0, "no counter from before");
        assert_eq!(es2.admin(), AdminState::Ready, "no drain from before");
    }

    #[test]
    fn forgetting_keeps_what_stays() {
        let m = Metrics::new();
        let old = snapshot(&[("es-1", "10.0.0.1:9200")], None, &m);
        let new = snapshot(&[("es-1", "10.0.0.2:9200")], Some(&old), &m);
        forget_removed(&old, &new, &m);
        assert!(
            exported(&m, "server=\"es-1\""),
            "a server that moved keeps its series"
        );
        assert!(exported(&m, "listener=\"es\""));
        assert!(exported(&m, "backend=\"es\""));
    }
}
