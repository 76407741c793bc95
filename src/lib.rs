//! roundhouse: a round-robin TCP load balancer for Elasticsearch clusters.
//!
//! The data path reads like the module list: [`listener`] accepts, [`proxy`] takes one client
//! connection, asks the [`backend`]'s [`balancer`] for a server whose [`health`] is up, and
//! relays bytes. [`config`] turns a YAML file into a checked configuration; [`runtime`] owns
//! startup, reload and shutdown; [`metrics`] and [`notify`] report what happens.

pub mod admin;
pub mod backend;
pub mod balancer;
pub mod config;
pub mod demo;
pub mod health;
pub mod http1;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod proxy;
pub mod runtime;

/// Exit code for a configuration that cannot be used or is not enabled (sysexits' EX_CONFIG).
/// The systemd unit does not restart after it (`RestartPreventExitStatus=78`).
pub const EXIT_CONFIG: i32 = 78;
/// Exit code for any other failure to start or run.
pub const EXIT_FAILURE: i32 = 1;
