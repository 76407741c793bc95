//! Builds configuration files for tests, reading like the README's examples.

use std::fmt::Write;
use std::net::SocketAddr;

/// A configuration file under construction.
#[derive(Clone)]
pub struct ConfigBuilder {
    head: String,
    listeners: Vec<String>,
    backends: Vec<Backend>,
}

/// One backend of a [`ConfigBuilder`].
#[derive(Clone)]
pub struct Backend {
    pub name: String,
    pub servers: Vec<String>,
    pub health_check: Vec<String>,
    pub extra: Vec<String>,
}

impl Backend {
    /// A backend named `name` with an Elasticsearch check every 500ms with a 500ms timeout (rise
    /// 2, fall 2): a check on a machine kept busy by other tests still answers in time.
    pub fn new(name: &str) -> Backend {
        Backend {
            name: name.into(),
            servers: Vec::new(),
            health_check: vec![
                "type: elasticsearch".into(),
                "interval: 500ms".into(),
                "timeout: 500ms".into(),
                "rise: 2".into(),
                "fall: 2".into(),
            ],
            extra: Vec::new(),
        }
    }

    /// Adds a named server.
    pub fn server(mut self, name: &str, addr: SocketAddr) -> Backend {
        self.servers
            .push(format!("{{ name: {name}, address: \"{addr}\" }}"));
        self
    }

    /// Adds a named server with a weight.
    pub fn weighted(mut self, name: &str, addr: SocketAddr, weight: u32) -> Backend {
        self.servers.push(format!(
            "{{ name: {name}, address: \"{addr}\", weight: {weight} }}"
        ));
        self
    }

    /// Sets (or adds) a health_check field, e.g. `check("min_nodes", "2")`.
    pub fn check(mut self, key: &str, value: &str) -> Backend {
        self.health_check
            .retain(|l| !l.starts_with(&format!("{key}:")));
        self.health_check.push(format!("{key}: {value}"));
        self
    }

    /// Adds a backend-level field, e.g. `with("retries", "1")` or `with("timeouts", "{ idle: 1s }")`.
    pub fn with(mut self, key: &str, value: &str) -> Backend {
        self.extra.retain(|l| !l.starts_with(&format!("{key}:")));
        self.extra.push(format!("{key}: {value}"));
        self
    }
}

impl Default for ConfigBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ConfigBuilder {
    /// `enabled: true`, one worker, the admin endpoint on an OS-chosen port.
    pub fn new() -> ConfigBuilder {
        ConfigBuilder {
            head: "enabled: true\nworkers: 2\nadmin:\n  bind: 127.0.0.1:0\n".into(),
            listeners: Vec::new(),
            backends: Vec::new(),
        }
    }

    /// Adds a top-level line such as `shutdown_grace: 1s`.
    pub fn top(mut self, line: &str) -> ConfigBuilder {
        self.head.push_str(line);
        self.head.push('\n');
        self
    }

    /// Adds a listener on 127.0.0.1 with an OS-chosen port.
    pub fn listener(self, name: &str, backend: &str) -> ConfigBuilder {
        self.listener_at(name, "127.0.0.1:0", backend, "")
    }

    /// Adds a listener with a bind address and extra fields (", max_connections: 2").
    pub fn listener_at(
        mut self,
        name: &str,
        bind: &str,
        backend: &str,
        extra: &str,
    ) -> ConfigBuilder {
        self.listeners.push(format!(
            "  - {{ name: {name}, bind: \"{bind}\", backend: {backend}{extra} }}"
        ));
        self
    }

    pub fn backend(mut self, b: Backend) -> ConfigBuilder {
        self.backends.push(b);
        self
    }

    /// The YAML text.
    pub fn yaml(&self) -> String {
        let mut s = self.head.clone();
        s.push_str("listeners:\n");
        for l in &self.listeners {
            let _ = writeln!(s, "{l}");
        }
        s.push_str("backends:\n");
        for b in &self.backends {
            let _ = writeln!(s, "  - name: {}", b.name);
            s.push_str("    servers:\n");
            for srv in &b.servers {
                let _ = writeln!(s, "      - {srv}");
            }
            s.push_str("    health_check:\n");
            for h in &b.health_check {
                let _ = writeln!(s, "      {h}");
            }
            for e in &b.extra {
                let _ = writeln!(s, "    {e}");
            }
        }
        s
    }
}
