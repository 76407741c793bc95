//! Validation of `backends`: names, servers, weights, timeouts and retries.

use std::collections::HashSet;
use std::time::Duration;

use super::address::parse_host_port;
use super::error::FieldPath;
use super::schema::{RawBackend, RawServer, RawTimeouts};
use super::validate::Validator;
use super::{BackendConfig, Name, ServerConfig, WhenAllUnhealthy};

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
const DEFAULT_RETRIES: u32 = 2;
const MAX_WEIGHT: u64 = 256;
const MAX_RETRIES: u64 = 16;

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
            if let (Some(name), Some(health_check)) = (name, health_check) {
                out.push(BackendConfig {
                    name,
                    servers,
                    health_check,
                    connect_timeout,
                    idle_timeout,
                    retries,
                    when_all_unhealthy,
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
