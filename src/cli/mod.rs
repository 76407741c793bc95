//! The command line as users see it: the clap definitions that `main.rs` parses, and that the
//! man page and the shell completions are generated from, so that neither can drift from
//! `--help`.

pub mod generate;
pub mod man;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::admin::client::{ClientError, Endpoint};
use crate::config::{self, DEFAULT_PATH};
use crate::{EXIT_CONFIG, EXIT_FAILURE};

/// What `--help` shows after the commands, and roundhouse(1) under EXAMPLES.
pub const EXAMPLES: &str = concat!(
    "  roundhouse demo                                  # watch it work: three stand-in nodes, one balancer\n",
    "  roundhouse check --config /etc/roundhouse/roundhouse.yaml\n",
    "  roundhouse run --config /etc/roundhouse/roundhouse.yaml\n",
    "  kill -HUP $(pidof roundhouse)                    # reload the configuration\n",
    "  roundhouse status                                # every server: state, reason, connections, bytes\n",
    "  roundhouse drain es es-2 --wait                  # rolling restart: drain, wait for 0 connections,\n",
    "  roundhouse ready es es-2                         # ... restart the node, then put it back",
);

/// Every exit code, with what it means: `--help` names them, roundhouse(1) explains them.
pub const EXIT_STATUS: [(i32, &str, &str); 4] = [
    (
        0,
        "success",
        "success (for run: stopped by SIGTERM or SIGINT after draining)",
    ),
    (
        EXIT_CONFIG,
        "configuration not usable or not enabled",
        "configuration not usable: not enabled, missing or unreadable file, YAML error, invalid \
         value, unresolvable host name (sysexits' EX_CONFIG). The systemd unit does not restart \
         after it (RestartPreventExitStatus=78).",
    ),
    (
        EXIT_FAILURE,
        "any other failure",
        "any other failure, e.g. a listener address already in use",
    ),
    (2, "usage error", "command-line usage error"),
];

/// The files roundhouse reads, and the packaged ones around it: roundhouse(1) under FILES.
pub const FILES: [(&str, &str); 3] = [
    (
        DEFAULT_PATH,
        "the configuration file (see roundhouse.yaml(5)); every command's default --config. \
         Installed with enabled: false.",
    ),
    (
        "/lib/systemd/system/roundhouse.service",
        "the systemd unit: Type=notify, reload with a check first, no restart after exit code 78.",
    ),
    (
        "/usr/share/doc/roundhouse/README.md",
        "the full manual: health checks, discovery, operations, metrics, monitoring.",
    ),
];

fn after_help() -> String {
    let codes = EXIT_STATUS
        .iter()
        .map(|(code, short, _)| format!("{code} {short}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!("Examples:\n{EXAMPLES}\n\nExit codes: {codes}.")
}

/// A round-robin TCP load balancer for Elasticsearch clusters.
#[derive(Parser)]
#[command(name = "roundhouse", version, after_help = after_help())]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands; each doc comment is its line in `--help` and its paragraph in roundhouse(1).
#[derive(Subcommand)]
pub enum Command {
    /// Run the balancer in the foreground (SIGHUP reloads, SIGTERM drains and stops).
    Run {
        /// The configuration file.
        #[arg(long, short, default_value = DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Validate a configuration file and print what it means, like `haproxy -c` or `nginx -t`.
    Check {
        /// The configuration file.
        #[arg(long, short, default_value = DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Show every server: state, since when, last check, connections and bytes.
    Status {
        #[command(flatten)]
        admin: AdminArgs,
        /// Print the raw JSON of GET /status instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Take a server out of rotation: no new connections; keep-alive connections close between two
    /// requests (Elasticsearch backends), others when they end.
    Drain {
        /// The backend, as named in the configuration.
        backend: String,
        /// The server, as named in the configuration (or its address if it has no name).
        server: String,
        #[command(flatten)]
        admin: AdminArgs,
        /// Wait until the server has no open connection, so no request in flight (or the timeout
        /// passes).
        #[arg(long)]
        wait: bool,
        /// How long --wait waits at most.
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Take a server out for maintenance: out of rotation, health checks paused.
    Maint {
        /// The backend, as named in the configuration.
        backend: String,
        /// The server, as named in the configuration (or its address if it has no name).
        server: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Put a drained or maintained server back in rotation (once its checks pass).
    Ready {
        /// The backend, as named in the configuration.
        backend: String,
        /// The server, as named in the configuration (or its address if it has no name).
        server: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Start three stand-in Elasticsearch nodes on loopback with a balancer in front.
    Demo {
        /// Where the demo balancer listens.
        #[arg(long, default_value = "127.0.0.1:19200")]
        listen: SocketAddr,
        /// Where the demo's admin endpoint listens.
        #[arg(long, default_value = "127.0.0.1:19901")]
        admin: SocketAddr,
    },
}

/// How the command-line tools reach a running roundhouse.
#[derive(clap::Args)]
pub struct AdminArgs {
    /// The admin endpoint (default: admin.bind of the configuration file, else 127.0.0.1:9901).
    #[arg(long)]
    pub admin: Option<SocketAddr>,
    /// The configuration file to read admin.bind and admin.token_file from.
    #[arg(long, short, default_value = DEFAULT_PATH)]
    pub config: PathBuf,
    /// A file with the bearer token for changes (default: admin.token_file of the configuration).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
}

impl AdminArgs {
    /// Where the admin endpoint is and the token to send, from the flags, else the configuration.
    pub fn endpoint(&self) -> Result<Endpoint, ClientError> {
        let (bind, token_file) = config::admin_endpoint(&self.config).unwrap_or((None, None));
        let addr = self
            .admin
            .or(bind)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9901)));
        let token_file = self.token_file.clone().or(token_file.map(PathBuf::from));
        let token = match token_file {
            None => None,
            Some(path) => Some(
                std::fs::read_to_string(&path)
                    .map_err(|source| ClientError::TokenFile { path, source })?
                    .trim_end()
                    .to_owned(),
            ),
        };
        Ok(Endpoint { addr, token })
    }
}
