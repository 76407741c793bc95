//! The `roundhouse` command line: parse arguments, call into the library, map errors to exit codes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use roundhouse::admin::client::{self, ClientError, Endpoint};
use roundhouse::config::{self, DEFAULT_PATH};
use roundhouse::resolve;
use roundhouse::runtime::{self, RunError};
use roundhouse::{EXIT_CONFIG, EXIT_FAILURE, demo, logging};

const EXAMPLES: &str = "\
Examples:
  roundhouse demo                                  # watch it work: three stand-in nodes, one balancer
  roundhouse check --config /etc/roundhouse/roundhouse.yaml
  roundhouse run --config /etc/roundhouse/roundhouse.yaml
  kill -HUP $(pidof roundhouse)                    # reload the configuration
  roundhouse status                                # every server: state, reason, connections, bytes
  roundhouse drain es es-2 --wait                  # rolling restart: drain, wait for 0 connections,
  roundhouse ready es es-2                         # ... restart the node, then put it back

Exit codes: 0 success, 78 configuration not usable or not enabled, 1 any other failure.";

/// A round-robin TCP load balancer for Elasticsearch clusters.
#[derive(Parser)]
#[command(name = "roundhouse", version, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
        /// The backend and the server, as named in the configuration.
        backend: String,
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
        backend: String,
        server: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Put a drained or maintained server back in rotation (once its checks pass).
    Ready {
        backend: String,
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
struct AdminArgs {
    /// The admin endpoint (default: admin.bind of the configuration file, else 127.0.0.1:9901).
    #[arg(long)]
    admin: Option<SocketAddr>,
    /// The configuration file to read admin.bind and admin.token_file from.
    #[arg(long, short, default_value = DEFAULT_PATH)]
    config: PathBuf,
    /// A file with the bearer token for changes (default: admin.token_file of the configuration).
    #[arg(long)]
    token_file: Option<PathBuf>,
}

impl AdminArgs {
    fn endpoint(&self) -> Result<Endpoint, ClientError> {
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init();
    std::panic::set_hook(Box::new(|info| {
        tracing::error!("internal error (a bug; please report it): {info}");
    }));
    let code = match cli.command {
        Command::Run { config } => exit_code(runtime::run(&config)),
        Command::Check { config } => check(&config),
        Command::Demo { listen, admin } => {
            exit_code(demo::run(demo::DemoOptions { listen, admin }))
        }
        Command::Status { admin, json } => with_endpoint(&admin, |ep| async move {
            let status = ep.status().await?;
            if json {
                Ok(serde_json::to_string_pretty(&status).expect("JSON serializes"))
            } else {
                Ok(client::table(&status))
            }
        }),
        Command::Drain {
            backend,
            server,
            admin,
            wait,
            timeout,
        } => with_endpoint(&admin, |ep| async move {
            let changed = ep.change(&backend, &server, "drain").await?;
            let mut out = describe_change(&changed);
            if wait {
                let started = std::time::Instant::now();
                ep.wait_drained(&backend, &server, timeout).await?;
                out.push_str(&format!(
                    "\n{backend}/{server} has no open connection left (after {:.1}s)",
                    started.elapsed().as_secs_f64()
                ));
            }
            Ok(out)
        }),
        Command::Maint {
            backend,
            server,
            admin,
        } => with_endpoint(&admin, |ep| async move {
            Ok(describe_change(
                &ep.change(&backend, &server, "maint").await?,
            ))
        }),
        Command::Ready {
            backend,
            server,
            admin,
        } => with_endpoint(&admin, |ep| async move {
            Ok(describe_change(
                &ep.change(&backend, &server, "ready").await?,
            ))
        }),
    };
    ExitCode::from(code as u8)
}

fn exit_code(result: Result<(), RunError>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(RunError::Config(errors)) => {
            logging::print_error(&errors.to_string());
            EXIT_CONFIG
        }
        Err(RunError::Startup(e)) => {
            logging::print_error(&e.to_string());
            EXIT_FAILURE
        }
    }
}

fn check(path: &Path) -> i32 {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            logging::print_error(&format!("cannot start an event loop: {e}"));
            return EXIT_FAILURE;
        }
    };
    match rt.block_on(resolve::prepare(path)) {
        Ok(prepared) => {
            let resolved = |backend: &str, server: &str| match prepared.addr(backend, server) {
                Some(a) => format!("-> {a}"),
                None => String::new(),
            };
            print!("{}", config::summary(&prepared.config, &resolved));
            for w in prepared.address_warnings() {
                logging::print_error(&w);
            }
            0
        }
        Err(errors) => {
            let n = errors.0.len();
            logging::print_error(&errors.to_string());
            if !errors.is_refusal_only() {
                logging::print_error(&format!(
                    "{}: {n} problem{} found",
                    path.display(),
                    if n == 1 { "" } else { "s" }
                ));
            }
            EXIT_CONFIG
        }
    }
}

/// Runs a command-line tool against the admin endpoint; prints its output or its error.
fn with_endpoint<F, Fut>(args: &AdminArgs, tool: F) -> i32
where
    F: FnOnce(Endpoint) -> Fut,
    Fut: std::future::Future<Output = Result<String, ClientError>>,
{
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            logging::print_error(&format!("cannot start an event loop: {e}"));
            return EXIT_FAILURE;
        }
    };
    match args.endpoint().map(|ep| rt.block_on(tool(ep))) {
        Ok(Ok(out)) => {
            println!("{}", out.trim_end());
            0
        }
        Ok(Err(e)) | Err(e) => {
            logging::print_error(&e.to_string());
            EXIT_FAILURE
        }
    }
}

fn describe_change(v: &serde_json::Value) -> String {
    format!(
        "{}/{}: {} (was {}); {} open connection(s)",
        v["backend"].as_str().unwrap_or("?"),
        v["server"].as_str().unwrap_or("?"),
        v["admin_state"].as_str().unwrap_or("?"),
        v["previous_admin_state"].as_str().unwrap_or("?"),
        v["active_connections"]
    )
}
