//! The configuration: its YAML schema, its validation and its errors.
//!
//! Pure by design: no sockets and no tokio. Reading the file and validating it are two steps, and
//! only a validated [`Config`] leaves this module, so the rest of the program never checks a value
//! twice. Host names stay names here; they are resolved when a config is loaded into the runtime.

mod address;
mod backends;
mod error;
mod health_check;
mod schema;
mod secret;
mod summary;
mod tls_auth;
mod validate;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::CertificateDer;

pub use error::{ConfigError, ConfigErrors, FieldPath};
pub use secret::Secret;

/// Where the packaged service looks when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/roundhouse/roundhouse.yaml";

/// A complete, validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file this was read from, for messages and `/status`.
    pub source: PathBuf,
    /// Proxy threads; each runs its own event loop with its own listening sockets.
    pub workers: usize,
    /// Bind each worker to a CPU of its own, when there is one worker per CPU the process may use
    /// (off by default: see `runtime/workers.rs`).
    pub pin_workers: bool,
    /// How long open connections may take to finish after SIGTERM.
    pub shutdown_grace: Duration,
    /// Log one line per proxied connection at info.
    pub access_log: bool,
    pub admin: AdminConfig,
    pub listeners: Vec<ListenerConfig>,
    pub backends: Vec<BackendConfig>,
}

impl Config {
    /// The backend with this name; validation guarantees every listener's backend exists.
    pub fn backend(&self, name: &str) -> Option<&BackendConfig> {
        self.backends.iter().find(|b| &*b.name == name)
    }
}

/// The admin (metrics and status) endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    pub bind: SocketAddr,
    /// When set, changes (drain, maint, ready) need `Authorization: Bearer <token>`.
    pub token: Option<Secret>,
    /// Where the token was read from, for `check` and the CLI.
    pub token_file: Option<String>,
}

/// One listening address and where its connections go.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    pub name: Name,
    pub bind: SocketAddr,
    pub backend: Name,
    /// Clients beyond this many open connections are refused (and counted); `None`: no limit.
    pub max_connections: Option<usize>,
    /// Listen even while this host does not hold the address (`IP_FREEBIND`): a backup balancer
    /// listening on a virtual address that keepalived moves to it only when it takes over.
    pub freebind: bool,
}

/// A named group of servers with one health check and one set of timeouts.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendConfig {
    pub name: Name,
    pub servers: Vec<ServerConfig>,
    pub health_check: HealthCheckConfig,
    pub connect_timeout: Duration,
    /// A proxied connection with no traffic either way for this long is closed.
    pub idle_timeout: Duration,
    /// How many other servers to try when connecting to the chosen one fails.
    pub retries: u32,
    /// What to do when no server passes its health check.
    pub when_all_unhealthy: WhenAllUnhealthy,
    /// How a server is picked for a new connection.
    pub balance: Balance,
    /// Follow the HTTP/1.1 framing of client connections (bytes still pass unchanged), so that
    /// a keep-alive connection closes between two requests when its server leaves rotation.
    pub http_aware: bool,
    /// Which nodes may take clients, by their roles (Elasticsearch checks only).
    pub roles: RoleFilter,
    /// Learn the server set from the cluster itself, the configured servers being the seeds.
    pub discovery: Option<DiscoveryConfig>,
}

/// How a backend picks a server for a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// Each server in turn, in proportion to its weight.
    RoundRobin,
    /// The server with the fewest open connections for its weight; ties in turn.
    LeastConnections,
}

impl Balance {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RoundRobin => "round_robin",
            Self::LeastConnections => "least_connections",
        }
    }
}

/// A node role as the roles filter names it. `master` stands for Elasticsearch's `master` and
/// OpenSearch's `cluster_manager`; `data` for `data` and every `data_*` tier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role(pub String);

/// Which nodes are client entry points, judged by the roles a node reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleFilter {
    /// Keep out nodes whose only roles are master (cluster_manager) and voting_only.
    pub exclude_dedicated_masters: bool,
    /// A node must have every one of these roles.
    pub require: Vec<Role>,
}

impl RoleFilter {
    /// True when the filter can keep a node out, so the node's roles must be known.
    pub fn is_active(&self) -> bool {
        self.exclude_dedicated_masters || !self.require.is_empty()
    }
}

/// How a backend learns its servers from the cluster (`discovery: elasticsearch`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryConfig {
    /// Time between two asks of `GET /_nodes/_all/http`.
    pub interval: Duration,
    /// A discovered node missing from this many answers in a row, and failing its checks, leaves
    /// the server set.
    pub forget_after: u32,
}

/// What a backend does when no server passes its health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenAllUnhealthy {
    /// Send traffic to the servers whose only failure is the cluster colour (reachable, right
    /// cluster, enough nodes): a red cluster still serves the indices it has.
    FailOpen,
    /// No healthy server, no traffic.
    FailClosed,
}

impl WhenAllUnhealthy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FailOpen => "fail_open",
            Self::FailClosed => "fail_closed",
        }
    }
}

/// One server of a backend, as configured (its host is resolved at load time).
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// The name used in metrics, status and the admin API; the address when none was given.
    pub name: Name,
    pub address: HostPort,
    pub weight: u32,
}

/// How a backend's servers are checked.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheckConfig {
    pub kind: CheckKind,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive passes needed to go up.
    pub rise: u32,
    /// Consecutive failures needed to go down.
    pub fall: u32,
    /// Speak TLS to the node (http and elasticsearch checks).
    pub tls: Option<CheckTls>,
    /// Credentials for the node (http and elasticsearch checks).
    pub auth: Option<CheckAuth>,
}

/// TLS for health checks; the data path stays TCP passthrough.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckTls {
    /// Certificates to trust instead of the system roots, and the file they came from.
    pub ca: Option<(String, Vec<CertificateDer<'static>>)>,
    /// The name to send (SNI) and to verify; default: the server's host.
    pub server_name: Option<String>,
    /// Accept any certificate. Allowed, but logged loudly at every (re)load.
    pub insecure_skip_verify: bool,
}

/// Credentials a health check presents.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckAuth {
    /// `Authorization: Basic …`.
    Basic { username: String, password: Secret },
    /// `Authorization: ApiKey …` (the encoded key Elasticsearch hands out).
    ApiKey(Secret),
}

/// What a check asks of a server.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckKind {
    /// A TCP connect succeeds.
    Tcp,
    /// `GET path` answers 2xx.
    Http { path: String },
    /// `GET path` answers cluster-health JSON that satisfies every condition.
    Elasticsearch(EsCheck),
}

/// The conditions of an Elasticsearch cluster-health check.
#[derive(Debug, Clone, PartialEq)]
pub struct EsCheck {
    pub path: String,
    pub expect_status: Vec<ClusterStatus>,
    pub cluster_name: Option<String>,
    pub min_nodes: Option<u32>,
}

/// Elasticsearch's cluster colours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterStatus {
    Green,
    Yellow,
    Red,
}

impl ClusterStatus {
    /// All colours, in order of health.
    pub const ALL: [ClusterStatus; 3] = [Self::Green, Self::Yellow, Self::Red];

    /// Parses the `status` field of a cluster-health answer.
    pub fn parse(s: &str) -> Option<ClusterStatus> {
        match s {
            "green" => Some(Self::Green),
            "yellow" => Some(Self::Yellow),
            "red" => Some(Self::Red),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Green => "green",
            Self::Yellow => "yellow",
            Self::Red => "red",
        }
    }
}

impl fmt::Display for ClusterStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A listener, backend or server name: cheap to clone, shown as written.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(Arc<str>);

impl Name {
    pub fn new(s: &str) -> Name {
        Name(Arc::from(s))
    }
}

impl std::ops::Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

impl serde::Serialize for Name {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// A server address as written: an IP address or a host name, and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl HostPort {
    /// The IP address when the host is one (no lookup needed).
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip() {
            Some(IpAddr::V6(_)) => write!(f, "[{}]:{}", self.host, self.port),
            _ => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

/// Reads and validates a configuration file.
pub fn load(file: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        ConfigErrors(vec![ConfigError::Read {
            file: file.to_owned(),
            reason: e.to_string(),
        }])
    })?;
    parse(file, &text)
}

/// Validates configuration text; `file` is only used to name the source in errors.
pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigErrors> {
    validate::validate(file, text)
}

pub use summary::summary;

/// Where a configuration file puts the admin endpoint, and its token file: read leniently (the
/// rest of the file may be invalid or not enabled) for the command-line tools.
pub fn admin_endpoint(file: &Path) -> Option<(Option<SocketAddr>, Option<String>)> {
    #[derive(serde::Deserialize)]
    struct Lenient {
        admin: Option<schema::RawAdmin>,
    }
    let text = std::fs::read_to_string(file).ok()?;
    let admin = serde_yaml::from_str::<Lenient>(&text).ok()?.admin?;
    Some((admin.bind.and_then(|b| b.parse().ok()), admin.token_file))
}
