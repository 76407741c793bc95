//! The one-screen summary `roundhouse check` prints: what the file asks for, with every default
//! filled in, so an operator sees the effective configuration and not only what they typed.

use std::fmt::Write;

use humantime::format_duration;

use super::{CheckAuth, CheckKind, Config, HealthCheckConfig, RoleFilter};

/// Renders `config` for a human; `resolved(backend, server)` says where a server's name resolved
/// (or why it did not).
pub fn summary(config: &Config, resolved: &dyn Fn(&str, &str) -> String) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{}: configuration is valid", config.source.display());
    let _ = writeln!(
        s,
        "workers: {} (pin_workers: {}); shutdown grace: {}; access log: {}",
        config.workers,
        if config.pin_workers { "on" } else { "off" },
        format_duration(config.shutdown_grace),
        if config.access_log { "on" } else { "off" }
    );
    let _ = writeln!(
        s,
        "admin: http://{} ({})",
        config.admin.bind,
        match &config.admin.token_file {
            Some(f) => format!("changes need the bearer token in {f}"),
            None => "no token: anyone who can connect can drain servers".to_owned(),
        }
    );
    let _ = writeln!(s, "listeners:");
    for l in &config.listeners {
        let limit = l
            .max_connections
            .map_or("no connection limit".to_owned(), |m| {
                format!("at most {m} connections")
            });
        let freebind = if l.freebind {
            ", freebind: listens even before this host holds the address"
        } else {
            ""
        };
        let _ = writeln!(
            s,
            "  {:<12} {:<22} -> backend {} ({limit}{freebind})",
            l.name, l.bind, l.backend
        );
    }
    let _ = writeln!(s, "backends:");
    for b in &config.backends {
        let used = config.listeners.iter().any(|l| l.backend == b.name);
        let _ = writeln!(
            s,
            "  {}{}: connect timeout {}, idle timeout {}, {} retries, when all unhealthy: {}",
            b.name,
            if used {
                ""
            } else {
                " (not used by any listener)"
            },
            format_duration(b.connect_timeout),
            format_duration(b.idle_timeout),
            b.retries,
            b.when_all_unhealthy.as_str()
        );
        let _ = writeln!(s, "    health check: {}", describe_check(&b.health_check));
        let _ = writeln!(
            s,
            "    balance: {}; HTTP framing {}",
            b.balance.as_str(),
            if b.http_aware {
                "followed (keep-alive connections close between requests when their server leaves rotation)"
            } else {
                "not followed (byte relay)"
            }
        );
        if let Some(roles) = describe_roles(&b.roles) {
            let _ = writeln!(s, "    roles: {roles}");
        }
        match &b.discovery {
            Some(d) => {
                let _ = writeln!(
                    s,
                    "    discovery: elasticsearch, GET /_nodes/_all/http of a node that passes its check every {}; a node missing from {} answers in a row and failing its checks leaves; the servers below are the seeds",
                    format_duration(d.interval),
                    d.forget_after
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "    discovery: off (the servers below are the server set)"
                );
            }
        }
        for srv in &b.servers {
            let _ = writeln!(
                s,
                "    server {:<20} {:<26} weight {:<3} {}",
                srv.name,
                srv.address.to_string(),
                srv.weight,
                resolved(&b.name, &srv.name)
            );
        }
    }
    s
}

/// The roles filter in words; `None` when it keeps no node out.
fn describe_roles(r: &RoleFilter) -> Option<String> {
    let mut parts = Vec::new();
    if r.exclude_dedicated_masters {
        parts.push("dedicated masters (cluster managers) kept out".to_owned());
    }
    if !r.require.is_empty() {
        let roles: Vec<&str> = r.require.iter().map(|r| r.0.as_str()).collect();
        parts.push(format!("a node needs {}", roles.join(" and ")));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

fn describe_check(h: &HealthCheckConfig) -> String {
    let what = match &h.kind {
        CheckKind::Tcp => "tcp connect".to_owned(),
        CheckKind::Http { path } => format!("http GET {path} expects 2xx"),
        CheckKind::Elasticsearch(es) => {
            let colours: Vec<&str> = es.expect_status.iter().map(|c| c.as_str()).collect();
            let mut d = format!(
                "elasticsearch GET {} expects status {}",
                es.path,
                colours.join("|")
            );
            if let Some(n) = &es.cluster_name {
                let _ = write!(d, ", cluster_name {n}");
            }
            if let Some(n) = es.min_nodes {
                let _ = write!(d, ", at least {n} nodes");
            }
            d
        }
    };
    let mut d = format!(
        "{what}; every {}, timeout {}, rise {}, fall {}",
        format_duration(h.interval),
        format_duration(h.timeout),
        h.rise,
        h.fall
    );
    if let Some(t) = &h.tls {
        let trust = match (&t.ca, t.insecure_skip_verify) {
            (_, true) => "ANY certificate (insecure_skip_verify)".to_owned(),
            (Some((file, certs)), _) => format!("CAs of {file} ({} certificates)", certs.len()),
            (None, _) => "the system CAs".to_owned(),
        };
        let name = t.server_name.as_deref().unwrap_or("each server's host");
        let _ = write!(d, "; TLS trusting {trust}, verifying {name}");
    }
    match &h.auth {
        Some(CheckAuth::Basic { username, .. }) => {
            let _ = write!(d, "; basic auth as {username}");
        }
        Some(CheckAuth::ApiKey(_)) => d.push_str("; API key"),
        None => {}
    }
    d
}
