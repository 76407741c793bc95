//! The `roundhouse` command line: parse arguments, call into the library, map errors to exit codes.

use std::path::Path;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Subcommand};

use roundhouse::admin::client::{self, ClientError, Endpoint};
use roundhouse::cli::generate::{self, Packaging};
use roundhouse::cli::{AdminArgs, Cli, Command};
use roundhouse::config;
use roundhouse::resolve;
use roundhouse::runtime::{self, RunError};
use roundhouse::{EXIT_CONFIG, EXIT_FAILURE, demo, logging};

fn main() -> ExitCode {
    // The packaging subcommand is added here only, so the man page and completions, made from
    // `Cli` alone, never show it.
    let matches = Packaging::augment_subcommands(Cli::command()).get_matches();
    if let Ok(Packaging::Generate { what, dir }) = Packaging::from_arg_matches(&matches) {
        return match generate::generate(what, &dir) {
            Ok(files) => {
                files.iter().for_each(|f| println!("{}", f.display()));
                ExitCode::SUCCESS
            }
            Err(e) => {
                logging::print_error(&format!("cannot write into {}: {e}", dir.display()));
                ExitCode::from(EXIT_FAILURE as u8)
            }
        };
    }
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
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
