//! Validation of `backends`: names, servers, weights, timeouts and retries.

use std::collections::HashSet;
use std::time::Duration;

use super::address::parse_host_port;
use super::error::FieldPath;
use super::schema::{RawBackend, RawDiscovery, RawRoles, RawServer, RawTimeouts};
use super::validate::Validator;
use super::{
    BackendConfig, Balance, CheckKind, DiscoveryConfig, HealthCheckConfig, Name, Role, RoleFilter,
    ServerConfig, WhenAllUnhealthy,
};

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
const DEFAULT_RETRIES: u32 = 2;
const MAX_WEIGHT: u64 = 256;
const MAX_RETRIES: u64 = 16;
const DEFAULT_DISCOVERY_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_FORGET_AFTER: u32 = 3;
const MAX_FORGET_AFTER: u64 = 1000;
/// The roles Elasticsearch and OpenSearch nodes report, as a roles filter may name them.
const KNOWN_ROLES: [&str; 15] = [
    "master",
    "cluster_manager",
    "data",
    "data_content",
    "data_hot",
    "data_warm",
    "data_cold",
    "data_frozen",
    "ingest",
    "ml",
    "remote_cluster_client",
    "transform",
    "voting_only",
    "search",
    "warm",
];

impl Validator<'_> {
    pub(super) fn backends(
        &mut self,
        raw: Vec<RawBackend>,
        path: &FieldPath,
    ) -> Vec<BackendConfig> {
        if raw.is_empty() {
            self.err(path, "expected at least one backend (name, servers)");
        }
        let mut names = HashSet::new();
        let mut out = Vec::new();
        for (i, b) in raw.into_iter().enumerate() {
            let p = path.index(i);
            let name = self.name(b.name.as_deref(), "backend", &p.field("name"));
            if let Some(n) = &name
                && !names.insert(n.clone())
            {
                self.err(
                    &p.field("name"),
                    format!("duplicate backend name {:?}", &**n),
                );
            }
            let servers = self.servers(b.servers, &p.field("servers"));
            let health_check = self.health_check(b.health_check, &p.field("health_check"));
            let (connect_timeout, idle_timeout) = self.timeouts(b.timeouts, &p.field("timeouts"));
            let retries = match b.retries {
                None => DEFAULT_RETRIES,
                Some(r) if r <= MAX_RETRIES => r as u32,
                Some(r) => {
                    self.err(
                        &p.field("retries"),
                        format!("expected 0 to {MAX_RETRIES}, got {r}"),
                    );
                    DEFAULT_RETRIES
                }
            };
            let when_all_unhealthy = match b.when_all_unhealthy.as_deref() {
                None | Some("fail_open") => WhenAllUnhealthy::FailOpen,
                Some("fail_closed") => WhenAllUnhealthy::FailClosed,
                Some(other) => {
                    self.err(
                        &p.field("when_all_unhealthy"),
                        format!("unknown policy {other:?}: expected fail_open or fail_closed"),
                    );
                    WhenAllUnhealthy::FailOpen
                }
            };
            let balance = match b.balance.as_deref() {
                None | Some("round_robin") => Balance::RoundRobin,
                Some("least_connections") => Balance::LeastConnections,
                Some(other) => {
                    self.err(
                        &p.field("balance"),
                        format!(
                            "unknown balance {other:?}: expected round_robin or least_connections"
                        ),
                    );
                    Balance::RoundRobin
                }
            };
            let Some(health_check) = health_check else {
                continue;
            };
            let roles = self.roles(b.roles, &health_check, &p.field("roles"));
            // Elasticsearch's REST API is HTTP/1.1: follow it unless told not to. Anything else
            // may not be HTTP at all.
            let http_aware = b
                .http_aware
                .unwrap_or(matches!(health_check.kind, CheckKind::Elasticsearch(_)));
            let discovery = match b.discovery {
                None => Some(None),
                Some(d) => self
                    .discovery(d, &health_check, &p.field("discovery"))
                    .map(Some),
            };
            if let (Some(name), Some(roles), Some(discovery)) = (name, roles, discovery) {
                out.push(BackendConfig {
                    name,
                    servers,
                    health_check,
                    connect_timeout,
                    idle_timeout,
                    retries,
                    when_all_unhealthy,
                    balance,
                    http_aware,
                    roles,
                    discovery,
                });
            }
        }
        out
    }

    fn servers(&mut self, raw: Vec<RawServer>, path: &FieldPath) -> Vec<ServerConfig> {
        if raw.is_empty() {
            self.err(
                path,
                "expected at least one server (\"host:port\" or {name, address, weight})",
            );
        }
        let mut names = HashSet::new();
        let mut addresses = HashSet::new();
        let mut out = Vec::new();
        for (i, s) in raw.into_iter().enumerate() {
            let p = path.index(i);
            let (name, address, weight, addr_path) = match s {
                RawServer::Address(a) => (None, Some(a), None, p.clone()),
                RawServer::Detailed(d) => (d.name, d.address, d.weight, p.field("address")),
            };
            let Some(address) = address else {
                self.err(
                    &addr_path,
                    "missing: expected host:port such as 10.0.0.11:9200",
                );
                continue;
            };
            let address = match parse_host_port(&address) {
                Ok(a) => a,
                Err(why) => {
                    self.err(&addr_path, format!("invalid address {address:?}: {why}"));
                    continue;
                }
            };
            if !addresses.insert(address.clone()) {
                self.err(
                    &addr_path,
                    format!("{address} is listed twice (use weight to send it more connections)"),
                );
            }
            let name = match name {
                Some(n) => self.name(Some(&n), "server", &p.field("name")),
                None => Some(Name::new(&address.to_string())),
            };
            let weight = match weight {
                None => 1,
                Some(w) if (1..=MAX_WEIGHT).contains(&w) => w as u32,
                Some(w) => {
                    self.err(
                        &p.field("weight"),
                        format!(
                            "expected 1 to {MAX_WEIGHT}, got {w} (to take a server out, drain it or remove it)"
                        ),
                    );
                    1
                }
            };
            let Some(name) = name else { continue };
            if !names.insert(name.clone()) {
                self.err(
                    &p.field("name"),
                    format!("duplicate server name {:?}", &*name),
                );
            }
            out.push(ServerConfig {
                name,
                address,
                weight,
            });
        }
        out
    }

    fn timeouts(&mut self, raw: Option<RawTimeouts>, path: &FieldPath) -> (Duration, Duration) {
        let connect = raw
            .as_ref()
            .and_then(|t| t.connect)
            .map_or(DEFAULT_CONNECT_TIMEOUT, |d| d.0);
        let idle = raw
            .as_ref()
            .and_then(|t| t.idle)
            .map_or(DEFAULT_IDLE_TIMEOUT, |d| d.0);
        if connect.is_zero() {
            self.err(&path.field("connect"), "expected a duration above zero");
        }
        if idle.is_zero() {
            self.err(&path.field("idle"), "expected a duration above zero");
        }
        (connect, idle)
    }
}

impl Validator<'_> {
    /// The roles filter: on by default for Elasticsearch checks (dedicated masters are kept out),
    /// meaningless for the others, which cannot learn a node's roles.
    fn roles(
        &mut self,
        raw: Option<RawRoles>,
        check: &HealthCheckConfig,
        path: &FieldPath,
    ) -> Option<RoleFilter> {
        let es = matches!(check.kind, CheckKind::Elasticsearch(_));
        let Some(raw) = raw else {
            return Some(RoleFilter {
                exclude_dedicated_masters: es,
                require: Vec::new(),
            });
        };
        if !es {
            self.err(
                path,
                "only applies to health_check type: elasticsearch (the check learns each node's roles)",
            );
            return None;
        }
        let mut require = Vec::new();
        let mut ok = true;
        for (i, r) in raw.require.unwrap_or_default().into_iter().enumerate() {
            if !KNOWN_ROLES.contains(&r.as_str()) {
                self.err(
                    &path.field("require").index(i),
                    format!(
                        "unknown role {r:?}: expected one of {}",
                        KNOWN_ROLES.join(", ")
                    ),
                );
                ok = false;
                continue;
            }
            // OpenSearch's name for the same role
            let r = if r == "cluster_manager" {
                "master".to_owned()
            } else {
                r
            };
            if !require.contains(&Role(r.clone())) {
                require.push(Role(r));
            }
        }
        ok.then_some(RoleFilter {
            exclude_dedicated_masters: raw.exclude_dedicated_masters.unwrap_or(true),
            require,
        })
    }

    /// `discovery: elasticsearch`: only with Elasticsearch checks, and only when the check names
    /// the cluster, so that a node of another cluster can never add its nodes.
    fn discovery(
        &mut self,
        raw: RawDiscovery,
        check: &HealthCheckConfig,
        path: &FieldPath,
    ) -> Option<DiscoveryConfig> {
        let (kind, interval, forget_after, kind_path) = match raw {
            RawDiscovery::Kind(k) => (Some(k), None, None, path.clone()),
            RawDiscovery::Detailed(d) => (d.kind, d.interval, d.forget_after, path.field("type")),
        };
        match kind.as_deref() {
            Some("elasticsearch") => {}
            Some(other) => {
                self.err(
                    &kind_path,
                    format!("unknown discovery {other:?}: expected elasticsearch"),
                );
                return None;
            }
            None => {
                self.err(&kind_path, "missing: expected type: elasticsearch");
                return None;
            }
        }
        let CheckKind::Elasticsearch(es) = &check.kind else {
            self.err(
                path,
                "needs health_check type: elasticsearch (only a node judged as an Elasticsearch node is asked for the others)",
            );
            return None;
        };
        if es.cluster_name.is_none() {
            self.err(
                path,
                "needs health_check.cluster_name: without it a node of another cluster could add its nodes to this backend",
            );
            return None;
        }
        if es.min_nodes.is_none_or(|n| n < 2) {
            self.err(
                path,
                "needs health_check.min_nodes of 2 or more: without it a node that elected itself master of a cluster of one passes its check and would be asked for the cluster's nodes",
            );
            return None;
        }
        let interval = interval.map_or(DEFAULT_DISCOVERY_INTERVAL, |d| d.0);
        if interval.is_zero() {
            self.err(&path.field("interval"), "expected a duration above zero");
            return None;
        }
        let forget_after = match forget_after {
            None => DEFAULT_FORGET_AFTER,
            Some(n) if (1..=MAX_FORGET_AFTER).contains(&n) => n as u32,
            Some(n) => {
                self.err(
                    &path.field("forget_after"),
                    format!("expected 1 to {MAX_FORGET_AFTER} answers, got {n}"),
                );
                return None;
            }
        };
        Some(DiscoveryConfig {
            interval,
            forget_after,
        })
    }
}
