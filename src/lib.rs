//! roundhouse: a round-robin TCP load balancer for Elasticsearch clusters.
//!
//! The data path reads like the module list: [`listener`] accepts, [`proxy`] takes one client
//! connection, asks the [`backend`]'s [`balancer`] for a server whose [`server`] state says it is
//! in rotation, and relays bytes. [`health`] checks servers and records what it finds in their
//! state. [`config`] turns a YAML file into a checked configuration, [`resolve`] resolves its
//! host names, and [`state`] holds the running snapshot every part reads; [`runtime`] owns
//! startup, reload and shutdown and is the only writer of that snapshot. [`metrics`],
//! [`words`] and [`notify`] report what happens: counters, sentences, and systemd.
//!
//! [`cli`] is the command line's definition, shared by `main.rs` and the generated man page
//! and completions. Only what the command line, the tests and the benchmarks use is public.

#![deny(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod admin;
pub(crate) mod backend;
pub mod balancer;
pub mod cli;
pub mod config;
pub mod demo;
pub(crate) mod discovery;
pub(crate) mod health;
pub(crate) mod http1;
pub(crate) mod listener;
pub mod logging;
pub mod metrics;
pub(crate) mod nodes;
pub(crate) mod notify;
pub(crate) mod proxy;
pub mod resolve;
pub mod runtime;
pub(crate) mod server;
pub mod state;
pub(crate) mod words;

/// The HTTP/1.1 framing tracker, public for the benchmarks only.
#[doc(hidden)]
pub use proxy::framing;

/// Exit code for a configuration that cannot be used or is not enabled (sysexits' EX_CONFIG).
/// The systemd unit does not restart after it (`RestartPreventExitStatus=78`).
pub const EXIT_CONFIG: i32 = 78;
/// Exit code for any other failure to start or run.
pub const EXIT_FAILURE: i32 = 1;
