//! When every server is unhealthy: fail open for colour, never for safety.

mod common;

use common::scrape::{server, status};
use common::*;
use roundhouse::config::ClusterStatus;

fn red(b: &mut roundhouse::demo::Behaviour) {
    b.status = ClusterStatus::Red;
}

fn config(nodes: &[FakeNode], policy: &str) -> String {
    let backend = es_backend(nodes)
        .check("cluster_name", "prod")
        .check("min_nodes", "2")
        .with("when_all_unhealthy", policy);
    ConfigBuilder::new()
        .listener("es", "es")
        .backend(backend)
        .yaml()
}

#[tokio::test]
async fn a_red_cluster_keeps_serving_and_says_so() {
    let nodes = three_nodes().await;
    let mut rh = Roundhouse::start(&config(&nodes, "fail_open")).await;
    let (addr, admin) = (rh.listener("es").await, rh.admin().await);
    for n in &nodes {
        n.set(red);
    }
    let line = rh.notify.wait_status(&["FAIL-OPEN"], SOON).await;
    assert_eq!(
        line,
        "DEGRADED: es: 0/3 healthy, FAIL-OPEN to 3 reachable (cluster status red)"
    );
    // the indices that are there stay readable: traffic goes on, over all three
    let counts = tally(&names(addr, 9).await);
    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        [3, 3, 3],
        "{counts:?}"
    );
    let warn = rh
        .stderr
        .wait_for(&["WARN", "FAIL-OPEN", "backend=es"], SOON)
        .await;
    assert!(warn.contains("servers=es-1,es-2,es-3"), "{warn}");
    let m = Scrape::from(admin).await;
    assert_eq!(
        m.get("roundhouse_backend_fail_open", &[("backend", "es")]),
        1.0
    );
    assert_eq!(
        m.get("roundhouse_backend_servers_up", &[("backend", "es")]),
        0.0
    );
    let st = status(admin).await;
    assert_eq!(st["backends"][0]["fail_open"], true);
    assert_eq!(
        st["backends"][0]["fail_open_reason"],
        "no server passes its health check; traffic goes to es-1, es-2, es-3, whose only failure is the cluster colour (cluster status red)"
    );
    assert_eq!(server(&st, "es", "es-2")["receiving_traffic"], true);
    assert_eq!(
        http_get(admin, "/healthz").await.unwrap().1,
        "no server up in backend es (failing open to 3 reachable)\n"
    );

    // one node recovers: only it gets traffic, and fail-open ends, loudly
    nodes[0].set(|b| b.status = ClusterStatus::Green);
    rh.notify
        .wait_status(&["DEGRADED: es: 1/3 servers up"], SOON)
        .await;
    rh.stderr
        .wait_for(
            &[
                "WARN",
                "stopped failing open",
                "a server passes its health check again",
            ],
            SOON,
        )
        .await;
    assert_eq!(
        tally(&names(addr, 4).await).keys().collect::<Vec<_>>(),
        ["es-1"]
    );
    assert_eq!(
        Scrape::from(admin)
            .await
            .get("roundhouse_backend_fail_open", &[("backend", "es")]),
        0.0
    );
}

#[tokio::test]
async fn fail_closed_closes_clients_when_nothing_is_healthy() {
    let nodes = three_nodes().await;
    let mut rh = Roundhouse::start(&config(&nodes, "fail_closed")).await;
    let addr = rh.listener("es").await;
    for n in &nodes {
        n.set(red);
    }
    let line = rh.notify.wait_status(&["DOWN"], SOON).await;
    assert!(
        line.starts_with("DOWN: es: no healthy server (es-1: cluster status red"),
        "{line}"
    );
    assert_closed_at_once(addr).await;
}

#[tokio::test]
async fn isolated_and_foreign_nodes_never_get_traffic_even_failing_open() {
    let nodes = three_nodes().await;
    let mut rh = Roundhouse::start(&config(&nodes, "fail_open")).await;
    let addr = rh.listener("es").await;
    nodes[0].set(red);
    nodes[1].set(|b| {
        b.status = ClusterStatus::Red;
        b.number_of_nodes = 1; // split brain: writes here can be lost
    });
    nodes[2].set(|b| {
        b.status = ClusterStatus::Red;
        b.cluster_name = "staging".into();
    });
    let line = rh.notify.wait_status(&["FAIL-OPEN"], SOON).await;
    assert_eq!(
        line,
        "DEGRADED: es: 0/3 healthy, FAIL-OPEN to 1 reachable (cluster status red; es-2 excluded: sees 1 node, want at least 2 (isolated?) and cluster status red; es-3 excluded: cluster_name is staging, want prod and cluster status red)"
    );
    let seen = names(addr, 9).await;
    assert!(seen.iter().all(|n| n == "es-1"), "{seen:?}");
}

#[tokio::test]
async fn unreachable_and_hung_nodes_never_get_traffic() {
    let mut nodes = three_nodes().await;
    let mut rh = Roundhouse::start(&config(&nodes, "fail_open")).await;
    let addr = rh.listener("es").await;
    nodes[0].set(red);
    nodes[1].set(|b| b.mode = Mode::Hang);
    nodes.remove(2).stop().await;
    rh.notify
        .wait_status(&["FAIL-OPEN to 1 reachable"], SOON)
        .await;
    let seen = names(addr, 6).await;
    assert!(seen.iter().all(|n| n == "es-1"), "{seen:?}");
}

#[tokio::test]
async fn when_no_server_qualifies_clients_are_closed() {
    let nodes = three_nodes().await;
    let mut rh = Roundhouse::start(&config(&nodes, "fail_open")).await;
    let addr = rh.listener("es").await;
    for n in &nodes {
        n.set(|b| b.number_of_nodes = 1);
    }
    let line = rh.notify.wait_status(&["DOWN"], SOON).await;
    assert!(
        line.contains("sees 1 node, want at least 2 (isolated?)"),
        "{line}"
    );
    assert_closed_at_once(addr).await;
}

#[tokio::test]
async fn a_drained_server_is_not_failed_open_to() {
    let nodes = three_nodes().await;
    let mut rh = Roundhouse::start(&config(&nodes, "fail_open")).await;
    let (addr, admin) = (rh.listener("es").await, rh.admin().await);
    let (code, _) = http_post(admin, "/servers/es/es-3/drain", None)
        .await
        .unwrap();
    assert_eq!(code, 200);
    for n in &nodes {
        n.set(red);
    }
    rh.notify
        .wait_status(&["FAIL-OPEN to 2 reachable"], SOON)
        .await;
    let seen = names(addr, 6).await;
    assert!(!seen.contains(&"es-3".to_owned()), "{seen:?}");
}
