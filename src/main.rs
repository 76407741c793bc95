//! The `roundhouse` command line: parse arguments, call into the library, map errors to exit codes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use roundhouse::config::{self, DEFAULT_PATH};
use roundhouse::runtime::{self, RunError};
use roundhouse::{EXIT_CONFIG, EXIT_FAILURE, demo, logging};

const EXAMPLES: &str = "\
Examples:
  roundhouse demo                                  # watch it work: three stand-in nodes, one balancer
  roundhouse check --config /etc/roundhouse/roundhouse.yaml
  roundhouse run --config /etc/roundhouse/roundhouse.yaml
  kill -HUP $(pidof roundhouse)                    # reload the configuration

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
        Err(RunError::Startup(message)) => {
            logging::print_error(&message);
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
    match rt.block_on(runtime::prepare(path)) {
        Ok(prepared) => {
            let resolved = |backend: &str, server: &str| match prepared.addr(backend, server) {
                Some(a) => format!("-> {a}"),
                None => String::new(),
            };
            print!("{}", config::summary(&prepared.config, &resolved));
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
