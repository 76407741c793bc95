//! The `/status` document: the configuration in force, the last reload, and every listener,
//! backend and server with its state, the reason for it and its counters.

use serde_json::{Value, json};

use crate::backend::{Backend, Server, Source};
use crate::state::Shared;
use crate::words::{self, timestamp};

/// Builds the whole document.
pub fn status(shared: &Shared) -> Value {
    let running = shared.running.load();
    let reload = shared
        .last_reload
        .lock()
        .expect("reload record lock")
        .clone();
    let mut listeners: Vec<Value> = running
        .routes
        .iter()
        .map(|(bind, r)| {
            json!({
                "name": &*r.listener.name,
                "bind": bind.to_string(),
                "address": r.local.to_string(),
                "backend": &**r.backend.name(),
                "max_connections": r.max_connections,
                "active_connections": r.listener.metrics.active.get(),
                "connections_total": r.listener.metrics.connections.get(),
            })
        })
        .collect();
    listeners.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    let backends: Vec<Value> = running
        .backends
        .iter()
        .map(|b| {
            let open_to = b.failing_open_to();
            let fail_open_reason = (!open_to.is_empty()).then(|| {
                let names: Vec<&str> = open_to.iter().map(|s| &*s.config.name).collect();
                format!(
                    "no server passes its health check; traffic goes to {}, whose only failure is the cluster colour ({})",
                    names.join(", "),
                    words::fail_open_reasons(b, &open_to)
                )
            });
            let servers: Vec<Value> = b
                .servers
                .iter()
                .map(|s| {
                    let receiving = s.state.in_rotation() || open_to.iter().any(|o| std::ptr::eq(*o, s));
                    server(s, receiving)
                })
                .collect();
            json!({
                "name": &**b.name(),
                "servers_up": b.servers_up(),
                "servers_total": b.servers.len(),
                "servers_excluded": b.servers.iter().filter(|s| s.state.is_excluded()).count(),
                "balance": b.config.balance.as_str(),
                "http_aware": b.config.http_aware,
                "discovery": discovery(b),
                "when_all_unhealthy": b.config.when_all_unhealthy.as_str(),
                "fail_open": fail_open_reason.is_some(),
                "fail_open_reason": fail_open_reason,
                "servers": servers,
            })
        })
        .collect();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "config": {
            "file": running.config.source.display().to_string(),
            "loaded_at": timestamp(running.loaded_at),
        },
        "last_reload": {
            "at": timestamp(reload.at),
            "result": if reload.rejection.is_some() { "failure" } else { "success" },
            "reason": reload.rejection.as_ref().map(|r| r.reason.clone()),
        },
        "listeners": listeners,
        "backends": backends,
    })
}

/// The backend's discovery settings and how its last refresh went; null when it does not
/// discover.
fn discovery(b: &Backend) -> Value {
    let Some(d) = &b.config.discovery else {
        return Value::Null;
    };
    let last = b.state.discovery_report().map(|r| {
        json!({
            "at": timestamp(r.at),
            "result": r.result.as_str(),
            "source": r.source.as_deref(),
            "reason": r.reason,
            "nodes": r.nodes,
        })
    });
    json!({
        "interval": humantime::format_duration(d.interval).to_string(),
        "forget_after": d.forget_after,
        "servers_discovered": b.servers.iter().filter(|s| s.source != Source::Configured).count(),
        "last_refresh": last,
    })
}

fn server(s: &Server, receiving_traffic: bool) -> Value {
    let st = &s.state;
    let h = st.health.view();
    let m = &st.metrics;
    let exclusion = st.exclusion();
    let (source, node_id) = match &s.source {
        Source::Configured => ("configured", None),
        Source::Discovered(member) => ("discovered", Some(member.id.to_string())),
    };
    let node = st.node().map(|n| {
        json!({
            "id": n.id.to_string(),
            "name": n.name,
            "roles": n.roles,
            "publish_address": n.publish.map(|p| p.text),
        })
    });
    json!({
        "name": &*s.config.name,
        "source": source,
        "node_id": node_id.or_else(|| st.node().map(|n| n.id.to_string())),
        "address": s.config.address.to_string(),
        "resolved": s.addr.to_string(),
        "weight": s.config.weight,
        "state": st.state_word(),
        "since": timestamp(st.since()),
        "health": h.health,
        "health_since": timestamp(h.since),
        "admin_state": st.admin().as_str(),
        "receiving_traffic": receiving_traffic,
        "reason": exclusion.or(h.reason),
        "node": node,
        "last_check": h.last_check.map(|c| json!({
            "at": timestamp(c.at),
            "passed": c.passed,
            "duration_ms": c.duration_ms,
            "reason": c.reason,
        })),
        "elasticsearch": h.cluster.map(|c| json!({
            "cluster_name": c.cluster_name,
            "status": c.status.map(|s| s.as_str()),
            "number_of_nodes": c.number_of_nodes,
        })),
        "active_connections": m.active.get(),
        "requests_in_flight": m.requests.in_flight(),
        "byte_relay_connections": m.byte_relays.get(),
        "requests_total": m.requests.requests(),
        "connections_total": m.connections.get(),
        "connect_failures_total": m.connect_failures.get(),
        "sent_bytes_total": m.sent.get(),
        "received_bytes_total": m.received.get(),
    })
}
