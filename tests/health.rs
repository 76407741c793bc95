//! Health checks through the real binary: every failure reason takes a node out of rotation
//! with that reason, and recovery brings it back after `rise` passes.

mod common;

use std::net::SocketAddr;

use common::*;
use roundhouse::config::ClusterStatus;
use roundhouse::demo::{Behaviour, Peer, node_id};

/// Starts roundhouse over three nodes with `backend`'s checks; es-2 is then broken with `breaks`,
/// must leave rotation with `reason`, and must come back when `heals` is applied.
async fn leaves_and_returns(
    backend: Backend,
    nodes: &[FakeNode],
    breaks: fn(&mut Behaviour),
    heals: fn(&mut Behaviour),
    reason: &str,
) {
    let mut rh = serve(backend).await;
    let addr = rh.listener("es").await;
    assert_eq!(
        tally(&names(addr, 9).await).len(),
        3,
        "all three serve at first"
    );

    nodes[1].set(breaks);
    let status = rh.notify.wait_status(&["DEGRADED"], SOON).await;
    assert_eq!(
        status,
        format!("DEGRADED: es: 2/3 servers up (es-2: {reason})")
    );
    let line = rh
        .stderr
        .wait_for(&["server is down", "server=es-2"], SOON)
        .await;
    assert!(line.contains(reason), "{line}");
    assert_not_served_by(addr, "es-2").await;

    nodes[1].set(heals);
    let status = rh.notify.wait_status(&["serving"], SOON).await;
    assert_eq!(status, "serving 1 listener; es: 3/3 servers up");
    rh.stderr
        .wait_for(&["server is up again", "server=es-2"], SOON)
        .await;
    assert_eq!(
        tally(&names(addr, 9).await).len(),
        3,
        "es-2 is back in rotation"
    );
}

async fn assert_not_served_by(addr: SocketAddr, name: &str) {
    let seen = names(addr, 12).await;
    assert!(
        !seen.iter().any(|n| n == name),
        "{name} still served: {seen:?}"
    );
}

#[tokio::test]
async fn red_node_leaves_rotation() {
    let nodes = three_nodes().await;
    leaves_and_returns(
        es_backend(&nodes),
        &nodes,
        |b| b.status = ClusterStatus::Red,
        |b| b.status = ClusterStatus::Green,
        "cluster status red",
    )
    .await;
}

#[tokio::test]
async fn yellow_leaves_rotation_only_when_not_accepted() {
    let nodes = three_nodes().await;
    leaves_and_returns(
        es_backend(&nodes).check("expect_status", "[green]"),
        &nodes,
        |b| b.status = ClusterStatus::Yellow,
        |b| b.status = ClusterStatus::Green,
        "cluster status yellow",
    )
    .await;
}

#[tokio::test]
async fn node_of_another_cluster_leaves_rotation() {
    let nodes = three_nodes().await;
    leaves_and_returns(
        es_backend(&nodes).check("cluster_name", "prod"),
        &nodes,
        |b| b.cluster_name = "staging".into(),
        |b| b.cluster_name = "prod".into(),
        "cluster_name is staging, want prod",
    )
    .await;
}

#[tokio::test]
async fn isolated_node_that_elected_itself_leaves_rotation() {
    let nodes = three_nodes().await;
    leaves_and_returns(
        es_backend(&nodes).check("min_nodes", "2"),
        &nodes,
        |b| b.number_of_nodes = 1,
        |b| b.number_of_nodes = 3,
        "sees 1 node, want at least 2 (isolated?)",
    )
    .await;
}

#[tokio::test]
async fn node_stuck_in_discovery_times_out() {
    let nodes = three_nodes().await;
    leaves_and_returns(
        es_backend(&nodes)
            .check("timeout", "150ms")
            .check("interval", "200ms"),
        &nodes,
        |b| b.mode = Mode::Hang,
        |b| b.mode = Mode::Normal,
        "timed out after 150ms",
    )
    .await;
}

#[tokio::test]
async fn node_without_master_is_out_by_its_local_answer() {
    let nodes = three_nodes().await;
    leaves_and_returns(
        es_backend(&nodes),
        &nodes,
        |b| b.mode = Mode::NoMaster,
        |b| b.mode = Mode::Normal,
        "has not discovered a master (stuck in discovery?)",
    )
    .await;
}

#[tokio::test]
async fn node_without_master_answers_503_to_a_cluster_wide_check() {
    let nodes = three_nodes().await;
    leaves_and_returns(
        es_backend(&nodes).check("path", "/_cluster/health"),
        &nodes,
        |b| b.mode = Mode::NoMaster,
        |b| b.mode = Mode::Normal,
        "HTTP 503: master_not_discovered_exception",
    )
    .await;
}

#[tokio::test]
async fn the_default_check_asks_for_the_nodes_own_view() {
    let nodes = three_nodes().await;
    let _rh = serve(es_backend(&nodes)).await;
    assert_eq!(nodes[0].last_health_query().as_deref(), Some("local=true"));
}

#[tokio::test]
async fn malformed_health_answer_fails_the_check() {
    let nodes = three_nodes().await;
    leaves_and_returns(
        es_backend(&nodes),
        &nodes,
        |b| b.mode = Mode::Garbage,
        |b| b.mode = Mode::Normal,
        "not a cluster health answer (expected value at line 1 column 1)",
    )
    .await;
}

#[tokio::test]
async fn refused_connection_fails_the_check_and_a_restarted_node_returns() {
    let mut nodes = three_nodes().await;
    let addr2 = nodes[1].addr();
    let mut rh = serve(es_backend(&nodes)).await;
    let addr = rh.listener("es").await;
    nodes.remove(1).stop().await;
    let status = rh.notify.wait_status(&["DEGRADED"], SOON).await;
    assert_eq!(
        status,
        "DEGRADED: es: 2/3 servers up (es-2: connection refused)"
    );
    assert_not_served_by(addr, "es-2").await;
    // the node comes back on the same port
    let _back = FakeNode::start_at("es-2", "prod", addr2)
        .await
        .expect("restart es-2");
    rh.notify
        .wait_status(&["serving 1 listener; es: 3/3 servers up"], SOON)
        .await;
}

#[tokio::test]
async fn a_discovered_node_that_stops_is_refused_not_suspected_of_a_bad_publish_address() {
    let seed = FakeNode::start("es-1", "prod").await.expect("start es-1");
    let es2 = FakeNode::start("es-2", "prod").await.expect("start es-2");
    let nobody = common::cluster::dead_address();
    let es3 = Peer {
        id: node_id("es-3"),
        name: "es-3".into(),
        roles: vec!["data".into()],
        publish: Some(nobody.to_string()),
    };
    seed.set(|b| {
        b.peers = vec![es2.as_peer(), es3];
        b.number_of_nodes = 3;
    });
    es2.set(|b| b.number_of_nodes = 3);
    let es = Backend::new("es")
        .server("es-1", seed.addr())
        .check("cluster_name", "prod")
        .check("min_nodes", "2")
        .with("discovery", "{ type: elasticsearch, interval: 200ms }");
    let mut rh = serve(es).await;
    // never reached at its address: the hint fits
    let es3_why = format!(
        "es-3: publishes {nobody}, which does not answer (connection refused; a \
         container-internal address? set http.publish_host on the node)"
    );
    rh.notify
        .wait_for_status(&["DEGRADED: es: 2/3 servers up (", &es3_why], SOON)
        .await;

    // answered at its address, then stopped: it is refused, nothing more
    es2.stop().await;
    let status = rh.notify.wait_status(&["1/3 servers up"], SOON).await;
    assert_eq!(
        status,
        format!("DEGRADED: es: 1/3 servers up (es-2: connection refused; {es3_why})")
    );
}

#[tokio::test]
async fn all_nodes_down_is_reported_as_down() {
    let nodes = three_nodes().await;
    let backend = es_backend(&nodes).with("when_all_unhealthy", "fail_closed");
    let config = ConfigBuilder::new().listener("es", "es").backend(backend);
    let mut rh = Roundhouse::start(&config.yaml()).await;
    for n in &nodes {
        n.set(|b| b.status = ClusterStatus::Red);
    }
    let status = rh.notify.wait_status(&["DOWN"], SOON).await;
    assert!(
        status.starts_with("DOWN: es: no healthy server (es-1: cluster status red"),
        "{status}"
    );
}

#[tokio::test]
async fn http_check_wants_2xx() {
    let nodes = three_nodes().await;
    let backend = es_backend(&nodes)
        .check("type", "http")
        .check("path", "/_cluster/health");
    leaves_and_returns(
        backend,
        &nodes,
        |b| b.mode = Mode::NoMaster,
        |b| b.mode = Mode::Normal,
        "HTTP 503: master_not_discovered_exception",
    )
    .await;
}

#[tokio::test]
async fn tcp_check_only_wants_a_connection() {
    let nodes = three_nodes().await;
    let backend = es_backend(&nodes).check("type", "tcp");
    let rh = serve(backend).await;
    let addr = rh.listener("es").await;
    nodes[1].set(|b| b.status = ClusterStatus::Red);
    // a red node still accepts connections: a tcp check cannot tell
    assert_eq!(tally(&names(addr, 9).await).len(), 3);
}

#[tokio::test]
async fn checks_of_a_hanging_node_do_not_delay_the_others() {
    let nodes = three_nodes().await;
    nodes[0].set(|b| b.mode = Mode::Hang);
    // a timeout far longer than a healthy check takes even on a machine kept busy, so that only
    // the hanging node's check can take that long
    let backend = es_backend(&nodes)
        .check("timeout", "3s")
        .check("interval", "3s");
    let mut rh = Roundhouse::spawn(
        &ConfigBuilder::new()
            .listener("es", "es")
            .backend(backend)
            .yaml(),
    );
    let started = std::time::Instant::now();
    rh.ready().await;
    // READY waits for the hanging check's timeout, but es-2 and es-3 were up long before
    let up2 = rh
        .stderr
        .wait_for(&["server is up", "server=es-2"], SOON)
        .await;
    let down1 = rh
        .stderr
        .wait_for(&["server is down", "server=es-1"], SOON)
        .await;
    assert!(started.elapsed() >= std::time::Duration::from_millis(2900));
    let at = |l: &str| l.split_whitespace().next().unwrap().to_owned();
    assert!(
        at(&up2) < at(&down1),
        "es-2 ({up2}) was up before es-1 timed out ({down1})"
    );
}
