//! From YAML text to a checked [`Config`]: parse with serde, then validate every field, collecting
//! every problem with its field path. Defaults are filled in here and only here.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::error::{ConfigError, ConfigErrors, FieldPath};
use super::schema::{
    RawBackend, RawConfig, RawHealthCheck, RawListener, RawServer, RawTimeouts, RawWorkers,
};
use super::{
    AdminConfig, BackendConfig, CheckKind, ClusterStatus, Config, EsCheck, HealthCheckConfig,
    HostPort, ListenerConfig, Name, ServerConfig,
};

const DEFAULT_ADMIN_BIND: &str = "127.0.0.1:9901";
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
const DEFAULT_RISE: u32 = 2;
const DEFAULT_FALL: u32 = 3;
const DEFAULT_ES_PATH: &str = "/_cluster/health";
const DEFAULT_HTTP_PATH: &str = "/";
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
const DEFAULT_RETRIES: u32 = 2;
const MAX_WORKERS: u64 = 256;
const MAX_WEIGHT: u64 = 256;
const MAX_RETRIES: u64 = 16;
const MAX_RISE_FALL: u64 = 100;

/// Parses and validates `text`, read from `file`.
pub fn validate(file: &Path, text: &str) -> Result<Config, ConfigErrors> {
    let raw = parse(file, text)?;
    let mut v = Validator {
        file,
        errors: Vec::new(),
    };
    let config = v.config(raw);
    match config {
        Some(c) if v.errors.is_empty() => Ok(c),
        _ => Err(ConfigErrors(v.errors)),
    }
}

fn parse(file: &Path, text: &str) -> Result<RawConfig, ConfigErrors> {
    let is_blank = text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'));
    if is_blank {
        return Err(ConfigErrors(vec![
            ConfigError::Invalid {
                file: file.to_owned(),
                path: String::new(),
                message: "the file has no settings: expected a mapping with enabled, listeners and backends".into(),
            },
            ConfigError::NotEnabled {
                file: file.to_owned(),
                found: None,
            },
        ]));
    }
    let de = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = match e.path().to_string() {
            p if p == "." => String::new(),
            p => p,
        };
        let inner = e.into_inner();
        let location = inner.location();
        ConfigErrors(vec![ConfigError::Syntax {
            file: file.to_owned(),
            path,
            line: location.as_ref().map(|l| l.line()),
            column: location.as_ref().map(|l| l.column()),
            message: strip_location(&inner.to_string()),
        }])
    })
}

/// serde_yaml appends "at line L column C" (and sometimes its own path); both are reported
/// separately, so keep only the message.
fn strip_location(msg: &str) -> String {
    let msg = match msg.rfind(" at line ") {
        Some(i) => &msg[..i],
        None => msg,
    };
    let msg = match msg.split_once(": ") {
        // serde_yaml prefixes nested errors with its own path ("backends[0]: ..."); ours is better.
        Some((head, rest)) if !head.contains(' ') && head != "invalid type" => rest,
        _ => msg,
    };
    // The schema's type names mean nothing to an operator.
    match msg.find("expected struct Raw") {
        Some(i) => format!("{}expected a mapping of settings", &msg[..i]),
        None => msg.to_owned(),
    }
}

struct Validator<'a> {
    file: &'a Path,
    errors: Vec<ConfigError>,
}

impl Validator<'_> {
    fn err(&mut self, path: &FieldPath, message: impl Into<String>) {
        self.errors.push(ConfigError::Invalid {
            file: self.file.to_owned(),
            path: path.to_string(),
            message: message.into(),
        });
    }

    fn config(&mut self, raw: RawConfig) -> Option<Config> {
        let root = FieldPath::default();
        if raw.enabled != Some(true) {
            self.errors.push(ConfigError::NotEnabled {
                file: self.file.to_owned(),
                found: raw.enabled,
            });
        }
        let workers = self.workers(raw.workers, &root.field("workers"));
        let shutdown_grace = raw.shutdown_grace.map_or(DEFAULT_SHUTDOWN_GRACE, |d| d.0);
        let admin_bind = raw
            .admin
            .and_then(|a| a.bind)
            .unwrap_or_else(|| DEFAULT_ADMIN_BIND.to_owned());
        let admin = self
            .bind_addr(&admin_bind, &root.field("admin").field("bind"))
            .map(|bind| AdminConfig { bind });

        // Listeners are checked against the names as written, so a backend with an error of its
        // own does not also make every listener that uses it look wrong.
        let backend_names: Vec<String> =
            raw.backends.iter().filter_map(|b| b.name.clone()).collect();
        let backends = self.backends(raw.backends, &root.field("backends"));
        let listeners = self.listeners(raw.listeners, &backend_names, &root.field("listeners"));
        if let Some(admin) = &admin {
            for (i, l) in listeners.iter().enumerate() {
                if l.bind == admin.bind && l.bind.port() != 0 {
                    self.err(
                        &root.field("listeners").index(i).field("bind"),
                        format!("{} is also admin.bind", l.bind),
                    );
                }
            }
        }
        Some(Config {
            source: self.file.to_owned(),
            workers: workers?,
            shutdown_grace,
            admin: admin?,
            listeners,
            backends,
        })
    }

    fn workers(&mut self, raw: Option<RawWorkers>, path: &FieldPath) -> Option<usize> {
        match raw {
            None | Some(RawWorkers::Auto) => Some(
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1),
            ),
            Some(RawWorkers::Count(n)) if (1..=MAX_WORKERS).contains(&n) => Some(n as usize),
            Some(RawWorkers::Count(n)) => {
                self.err(
                    path,
                    format!("expected auto or 1 to {MAX_WORKERS} threads, got {n}"),
                );
                None
            }
        }
    }

    fn bind_addr(&mut self, s: &str, path: &FieldPath) -> Option<SocketAddr> {
        match s.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.err(
                    path,
                    format!(
                        "invalid bind address {s:?}: expected IP:PORT such as 0.0.0.0:9200, 127.0.0.1:9200 or [::]:9200"
                    ),
                );
                None
            }
        }
    }

    fn name(&mut self, s: Option<&str>, what: &str, path: &FieldPath) -> Option<Name> {
        let Some(s) = s else {
            self.err(path, format!("missing: every {what} needs a name"));
            return None;
        };
        if let Err(why) = check_name(s) {
            self.err(path, format!("invalid name {s:?}: {why}"));
            return None;
        }
        Some(Name::new(s))
    }

    fn listeners(
        &mut self,
        raw: Vec<RawListener>,
        backends: &[String],
        path: &FieldPath,
    ) -> Vec<ListenerConfig> {
        if raw.is_empty() {
            self.err(path, "expected at least one listener (name, bind, backend)");
        }
        let mut names = HashSet::new();
        let mut binds = HashSet::new();
        let mut out = Vec::new();
        for (i, l) in raw.into_iter().enumerate() {
            let p = path.index(i);
            let name = self.name(l.name.as_deref(), "listener", &p.field("name"));
            if let Some(n) = &name
                && !names.insert(n.clone())
            {
                self.err(
                    &p.field("name"),
                    format!("duplicate listener name {:?}", &**n),
                );
            }
            let bind = match l.bind.as_deref() {
                Some(b) => self.bind_addr(b, &p.field("bind")),
                None => {
                    self.err(
                        &p.field("bind"),
                        "missing: expected IP:PORT such as 0.0.0.0:9200",
                    );
                    None
                }
            };
            if let Some(b) = bind
                && b.port() != 0
                && !binds.insert(b)
            {
                self.err(
                    &p.field("bind"),
                    format!("{b} is bound by another listener"),
                );
            }
            let backend = match l.backend.as_deref() {
                None => {
                    self.err(
                        &p.field("backend"),
                        "missing: expected the name of a backend",
                    );
                    None
                }
                Some(b) if !backends.iter().any(|x| x == b) => {
                    self.err(
                        &p.field("backend"),
                        format!("no backend named {b:?} (backends: {})", backends.join(", ")),
                    );
                    None
                }
                Some(b) => Some(Name::new(b)),
            };
            let max_connections = match l.max_connections {
                Some(0) => {
                    self.err(
                        &p.field("max_connections"),
                        "expected at least 1 (leave it out for no limit)",
                    );
                    None
                }
                m => m.map(|m| m as usize),
            };
            if let (Some(name), Some(bind), Some(backend)) = (name, bind, backend) {
                out.push(ListenerConfig {
                    name,
                    bind,
                    backend,
                    max_connections,
                });
            }
        }
        out
    }

    fn backends(&mut self, raw: Vec<RawBackend>, path: &FieldPath) -> Vec<BackendConfig> {
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
            if let (Some(name), Some(health_check)) = (name, health_check) {
                out.push(BackendConfig {
                    name,
                    servers,
                    health_check,
                    connect_timeout,
                    idle_timeout,
                    retries,
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

    fn health_check(
        &mut self,
        raw: Option<RawHealthCheck>,
        path: &FieldPath,
    ) -> Option<HealthCheckConfig> {
        let raw = raw.unwrap_or_else(empty_health_check);
        let interval = raw.interval.map_or(DEFAULT_INTERVAL, |d| d.0);
        let timeout = raw.timeout.map_or(DEFAULT_TIMEOUT, |d| d.0);
        let mut ok = true;
        if interval.is_zero() {
            self.err(&path.field("interval"), "expected a duration above zero");
            ok = false;
        }
        if timeout.is_zero() {
            self.err(&path.field("timeout"), "expected a duration above zero");
            ok = false;
        } else if timeout > interval {
            self.err(
                &path.field("timeout"),
                format!(
                    "{} is longer than interval ({}): expected at most the interval",
                    humantime::format_duration(timeout),
                    humantime::format_duration(interval)
                ),
            );
            ok = false;
        }
        let rise = self.count(raw.rise, DEFAULT_RISE, &path.field("rise"));
        let fall = self.count(raw.fall, DEFAULT_FALL, &path.field("fall"));
        let kind = self.check_kind(raw, path);
        Some(HealthCheckConfig {
            kind: kind?,
            interval,
            timeout,
            rise: rise?,
            fall: fall?,
        })
        .filter(|_| ok)
    }

    fn count(&mut self, raw: Option<u64>, default: u32, path: &FieldPath) -> Option<u32> {
        match raw {
            None => Some(default),
            Some(n) if (1..=MAX_RISE_FALL).contains(&n) => Some(n as u32),
            Some(n) => {
                self.err(
                    path,
                    format!("expected 1 to {MAX_RISE_FALL} consecutive checks, got {n}"),
                );
                None
            }
        }
    }

    fn check_kind(&mut self, raw: RawHealthCheck, path: &FieldPath) -> Option<CheckKind> {
        let kind = raw.kind.as_deref().unwrap_or("elasticsearch");
        let es_only = [
            ("expect_status", raw.expect_status.is_some()),
            ("cluster_name", raw.cluster_name.is_some()),
            ("min_nodes", raw.min_nodes.is_some()),
        ];
        if kind != "elasticsearch" {
            for (field, given) in es_only {
                if given {
                    self.err(
                        &path.field(field),
                        format!("only applies to type: elasticsearch (this check is type: {kind})"),
                    );
                }
            }
        }
        let path_of = |v: &mut Self, default: &str| -> Option<String> {
            let p = raw.path.clone().unwrap_or_else(|| default.to_owned());
            if p.starts_with('/') && !p.chars().any(|c| c.is_whitespace() || c.is_control()) {
                Some(p)
            } else {
                v.err(
                    &path.field("path"),
                    format!(
                        "invalid path {p:?}: expected an absolute URL path such as /_cluster/health"
                    ),
                );
                None
            }
        };
        match kind {
            "tcp" => {
                if raw.path.is_some() {
                    self.err(
                        &path.field("path"),
                        "only applies to type: http or elasticsearch",
                    );
                    return None;
                }
                Some(CheckKind::Tcp)
            }
            "http" => Some(CheckKind::Http {
                path: path_of(self, DEFAULT_HTTP_PATH)?,
            }),
            "elasticsearch" => {
                let p = path_of(self, DEFAULT_ES_PATH);
                let expect_status =
                    self.expect_status(raw.expect_status, &path.field("expect_status"));
                let min_nodes = match raw.min_nodes {
                    Some(0) => {
                        self.err(
                            &path.field("min_nodes"),
                            "expected at least 1 (leave it out to accept any node count)",
                        );
                        None
                    }
                    Some(n) if n > u32::MAX as u64 => {
                        self.err(&path.field("min_nodes"), format!("{n} is too large"));
                        None
                    }
                    m => Some(m.map(|m| m as u32)),
                };
                let cluster_name = match raw.cluster_name {
                    Some(n) if n.trim().is_empty() => {
                        self.err(
                            &path.field("cluster_name"),
                            "expected a cluster name (leave it out to accept any cluster)",
                        );
                        None
                    }
                    n => Some(n),
                };
                Some(CheckKind::Elasticsearch(EsCheck {
                    path: p?,
                    expect_status: expect_status?,
                    cluster_name: cluster_name?,
                    min_nodes: min_nodes?,
                }))
            }
            other => {
                self.err(
                    &path.field("type"),
                    format!("unknown check type {other:?}: expected tcp, http or elasticsearch"),
                );
                None
            }
        }
    }

    fn expect_status(
        &mut self,
        raw: Option<Vec<String>>,
        path: &FieldPath,
    ) -> Option<Vec<ClusterStatus>> {
        let Some(raw) = raw else {
            return Some(vec![ClusterStatus::Green, ClusterStatus::Yellow]);
        };
        if raw.is_empty() {
            self.err(path, "expected at least one of green, yellow, red");
            return None;
        }
        let mut out = Vec::new();
        for (i, s) in raw.iter().enumerate() {
            match ClusterStatus::parse(s) {
                Some(c) if !out.contains(&c) => out.push(c),
                Some(_) => {}
                None => {
                    self.err(
                        &path.index(i),
                        format!("unknown cluster status {s:?}: expected green, yellow or red"),
                    );
                    return None;
                }
            }
        }
        Some(out)
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

fn empty_health_check() -> RawHealthCheck {
    RawHealthCheck {
        kind: None,
        interval: None,
        timeout: None,
        rise: None,
        fall: None,
        expect_status: None,
        cluster_name: None,
        min_nodes: None,
        path: None,
    }
}

/// Names end up in metric labels, URLs of the admin API and log lines: keep them plain.
fn check_name(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("expected a non-empty name");
    }
    if s.len() > 128 {
        return Err("expected at most 128 characters");
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "._:-[]@".contains(c);
    if !s.chars().all(allowed) {
        return Err("expected letters, digits and . _ : - [ ] @ only");
    }
    Ok(())
}

/// Parses `host:port` or `[v6]:port`.
fn parse_host_port(s: &str) -> Result<HostPort, String> {
    const EXPECTED: &str = "expected host:port such as 10.0.0.11:9200 or es-1.internal:9200";
    if let Ok(sa) = s.parse::<SocketAddr>() {
        if sa.port() == 0 {
            return Err(format!("port 0 is not a server port; {EXPECTED}"));
        }
        return Ok(HostPort {
            host: sa.ip().to_string(),
            port: sa.port(),
        });
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("no port; {EXPECTED}"));
    };
    let port: u16 = match port.parse() {
        Ok(p) if p > 0 => p,
        _ => return Err(format!("invalid port {port:?}; {EXPECTED}")),
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    let numeric_labels = host
        .split('.')
        .filter(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_digit()))
        .count();
    let labels = host.split('.').count();
    // A name made mostly of numbers ("10.0.0.x") is a mistyped IP address, not a host name.
    let looks_numeric = numeric_labels == labels || (labels == 4 && numeric_labels >= 3);
    if looks_numeric && labels == 4 {
        return Err(format!("{host:?} is not a valid IP address; {EXPECTED}"));
    }
    if host.is_empty() || host.len() > 253 || looks_numeric || !host.split('.').all(label_ok) {
        return Err(format!(
            "{host:?} is neither an IP address nor a host name; {EXPECTED}"
        ));
    }
    Ok(HostPort {
        host: host.to_owned(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        assert_eq!(parse_host_port("10.0.0.1:9200").unwrap().port, 9200);
        assert_eq!(parse_host_port("[::1]:9200").unwrap().host, "::1");
        assert_eq!(
            parse_host_port("es-3.internal:9201").unwrap().host,
            "es-3.internal"
        );
        assert!(
            parse_host_port("10.0.0.x:9200").is_err(),
            "a mistyped IP is not a host name"
        );
        assert!(parse_host_port("10.0.0.300:9200").is_err());
        assert!(parse_host_port("es-1").is_err());
        assert!(parse_host_port("es-1:0").is_err());
        assert!(parse_host_port("es 1:9200").is_err());
        assert!(parse_host_port(":9200").is_err());
    }

    #[test]
    fn names_are_plain() {
        assert!(check_name("es-3").is_ok());
        assert!(check_name("10.0.0.1:9200").is_ok());
        assert!(check_name("a/b").is_err());
        assert!(check_name("").is_err());
    }
}
