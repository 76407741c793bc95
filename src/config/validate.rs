//! From YAML text to a checked [`Config`]: parse with serde, then validate every field, collecting
//! every problem with its field path. Defaults are filled in here (and in `backends.rs` and
//! `health_check.rs`, which validate those sections) and nowhere else.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::address::check_name;
use super::error::{ConfigError, ConfigErrors, FieldPath};
use super::schema::{RawAdmin, RawConfig, RawListener, RawWorkers};
use super::{AdminConfig, Config, ListenerConfig, Name, Secret};

const DEFAULT_ADMIN_BIND: &str = "127.0.0.1:9901";
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
const MAX_WORKERS: u64 = 256;

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
        let (line, column) = match &location {
            Some(l) => (Some(l.line()), Some(l.column())),
            None if path.is_empty() => (first_line_with(text, &inner.to_string()), None),
            None => (None, None),
        };
        ConfigErrors(vec![ConfigError::Syntax {
            file: file.to_owned(),
            path,
            line,
            column,
            message: strip_location(&inner.to_string()),
        }])
    })
}

/// The first line by which the file already gives `message`, for the errors serde_yaml gives
/// without a place: a second document ("more than one document"), also where it is only a
/// stray `]` after the first. Found by bisecting over line ends: a few parses, not one per line.
fn first_line_with(text: &str, message: &str) -> Option<usize> {
    let ends: Vec<usize> = text
        .split_inclusive('\n')
        .scan(0, |end, line| {
            *end += line.len();
            Some(*end)
        })
        .collect();
    let fails = |lines: usize| {
        serde_yaml::from_str::<serde::de::IgnoredAny>(&text[..ends[lines - 1]])
            .is_err_and(|e| e.to_string() == message)
    };
    if ends.is_empty() || !fails(ends.len()) {
        return None;
    }
    // the smallest line count whose prefix fails: `fails(high)` holds, `fails(low)` does not
    let (mut low, mut high) = (0, ends.len());
    while high - low > 1 {
        let mid = low + (high - low) / 2;
        if fails(mid) {
            high = mid;
        } else {
            low = mid;
        }
    }
    Some(high)
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

pub(super) struct Validator<'a> {
    file: &'a Path,
    errors: Vec<ConfigError>,
}

impl Validator<'_> {
    pub(super) fn err(&mut self, path: &FieldPath, message: impl Into<String>) {
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
        let admin = self.admin(raw.admin, &root.field("admin"));
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
            pin_workers: raw.pin_workers.unwrap_or(false),
            shutdown_grace,
            access_log: raw.access_log.unwrap_or(false),
            admin: admin?,
            listeners,
            backends,
        })
    }

    fn admin(&mut self, raw: Option<RawAdmin>, path: &FieldPath) -> Option<AdminConfig> {
        let (bind, token_file) = raw.map_or((None, None), |a| (a.bind, a.token_file));
        let bind = bind.unwrap_or_else(|| DEFAULT_ADMIN_BIND.to_owned());
        let bind = self.bind_addr(&bind, &path.field("bind"))?;
        let token = match &token_file {
            None => None,
            Some(f) => match Secret::read(f) {
                Ok(t) => Some(t),
                Err(why) => {
                    self.err(&path.field("token_file"), why);
                    return None;
                }
            },
        };
        if token.is_none() && !bind.ip().is_loopback() {
            self.err(
                &path.field("bind"),
                format!(
                    "{bind} is reachable from other hosts: set admin.token_file so that changes need a token, or bind 127.0.0.1"
                ),
            );
            return None;
        }
        Some(AdminConfig {
            bind,
            token,
            token_file,
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

    pub(super) fn name(&mut self, s: Option<&str>, what: &str, path: &FieldPath) -> Option<Name> {
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
                    freebind: l.freebind.unwrap_or(false),
                });
            }
        }
        out
    }
}
