//! Helpers shared by the integration tests: the real binary as a child process, a config
//! builder, fake Elasticsearch nodes (the demo's) and plain network tools.

#![allow(dead_code, unused_imports)]

pub mod certs;
pub mod cluster;
pub mod config;
pub mod httpd;
pub mod keepalive;
pub mod load;
pub mod monitoring;
pub mod net;
pub mod opensearch;
pub mod process;
pub mod prometheus;
pub mod promql;
pub mod props;
pub mod scrape;
pub mod systemd_box;

pub use config::{Backend, ConfigBuilder};
pub use net::{
    EchoServer, assert_closed_at_once, http_get, http_post, http_send, names, node_name, tally,
};
pub use process::{Roundhouse, run_cli};
pub use roundhouse::demo::{FakeNode, Mode, Security};
pub use scrape::Scrape;

use std::time::Duration;

/// How long to wait for anything that should happen "at once" in these tests.
pub const SOON: Duration = Duration::from_secs(5);

/// Three green nodes of cluster `prod`: es-1, es-2, es-3.
pub async fn three_nodes() -> Vec<FakeNode> {
    let mut nodes = Vec::new();
    for name in ["es-1", "es-2", "es-3"] {
        nodes.push(
            FakeNode::start(name, "prod")
                .await
                .expect("start fake node"),
        );
    }
    nodes
}

/// A backend `es` over these nodes.
pub fn es_backend(nodes: &[FakeNode]) -> Backend {
    nodes
        .iter()
        .fold(Backend::new("es"), |b, n| b.server(n.name(), n.addr()))
}

/// A backend `echo` with one server `echo-1`, checked by TCP connect.
pub fn echo_backend(echo: &EchoServer) -> Backend {
    Backend::new("echo")
        .server("echo-1", echo.addr)
        .check("type", "tcp")
}

/// roundhouse with one listener, named like the backend, in front of `backend`; ready to serve.
pub async fn serve(backend: Backend) -> Roundhouse {
    let name = backend.name.clone();
    Roundhouse::start(
        &ConfigBuilder::new()
            .listener(&name, &name)
            .backend(backend)
            .yaml(),
    )
    .await
}
