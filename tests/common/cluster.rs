//! Fake clusters for the roles and discovery tests: stand-in nodes with roles, linked so that
//! each lists the others in `/_nodes/_all/http`, and a backend that discovers from seeds.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use roundhouse::demo::{Peer, node_id};

use crate::common::scrape::Scrape;
use crate::common::{Backend, ConfigBuilder, FakeNode, Roundhouse, SOON};

/// The roles of a data node.
pub const DATA: &[&str] = &["data", "ingest"];
/// The label of backend `es`.
pub const ES: (&str, &str) = ("backend", "es");

/// Roles (or anything) as owned strings.
pub fn strings(s: &[&str]) -> Vec<String> {
    s.iter().map(|r| r.to_string()).collect()
}

/// Green `prod` nodes with these names and roles.
pub async fn nodes_with_roles(spec: &[(&str, &[&str])]) -> Vec<FakeNode> {
    let mut nodes = Vec::new();
    for (name, roles) in spec {
        let n = FakeNode::start(name, "prod")
            .await
            .expect("start fake node");
        n.set(|b| b.roles = strings(roles));
        nodes.push(n);
    }
    nodes
}

/// Three data nodes, es-1 to es-3, of one cluster.
pub async fn three_data_nodes() -> Vec<FakeNode> {
    let nodes = nodes_with_roles(&[("es-1", DATA), ("es-2", DATA), ("es-3", DATA)]).await;
    link(&nodes.iter().collect::<Vec<_>>());
    nodes
}

/// Makes `nodes` one cluster: each sees them all and lists the others in `/_nodes/_all/http`
/// (with their roles and publish addresses as they are now).
pub fn link(nodes: &[&FakeNode]) {
    let peers: Vec<Peer> = nodes.iter().map(|n| n.as_peer()).collect();
    for n in nodes {
        let others: Vec<Peer> = peers
            .iter()
            .filter(|p| p.name != n.name())
            .cloned()
            .collect();
        n.set(|b| {
            b.peers = others;
            b.number_of_nodes = nodes.len() as u64;
        });
    }
}

/// A backend `es` that discovers from these seeds, asking every 300ms and forgetting a node that
/// fails its checks after `forget_after` answers without it.
pub fn discovering(seeds: &[&FakeNode], forget_after: u32) -> Backend {
    seeds
        .iter()
        .fold(Backend::new("es"), |b, n| b.server(n.name(), n.addr()))
        .check("cluster_name", "prod")
        .check("min_nodes", "2")
        .with(
            "discovery",
            &format!("{{ type: elasticsearch, interval: 300ms, forget_after: {forget_after} }}"),
        )
}

/// A configuration with listener `es` in front of `backend`.
pub fn es_config(backend: Backend) -> ConfigBuilder {
    ConfigBuilder::new().listener("es", "es").backend(backend)
}

/// The log line of a node joining the server set.
pub fn joined(n: &FakeNode) -> String {
    format!(
        "node {} (id {}) joined at {}",
        n.name(),
        node_id(n.name()),
        n.addr()
    )
}

/// Waits until the STATUS line says every one of `n` servers is up.
pub async fn all_up(rh: &mut Roundhouse, n: usize) {
    let want = format!("serving 1 listener; es: {n}/{n} servers up");
    rh.notify.wait_for_status(&[&want], SOON).await;
}

/// An address on loopback where nothing listens, and nothing will while the test runs.
pub fn dead_address() -> SocketAddr {
    roundhouse::demo::refused_address().expect("a held port")
}

/// Returns once `node` has had `n` more health checks.
pub async fn checked(node: &FakeNode, n: u64) {
    let until = node.health_requests() + n;
    let deadline = Instant::now() + SOON;
    while node.health_requests() < until {
        assert!(Instant::now() < deadline, "{} is checked", node.name());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Discovery refreshes of backend `es` so far, whatever their result.
pub fn refreshes(s: &Scrape) -> f64 {
    s.sum("roundhouse_discovery_refreshes_total", &[ES])
}

/// The labels of one server of backend `es`.
pub fn labels(server: &str) -> [(&str, &str); 2] {
    [ES, ("server", server)]
}
