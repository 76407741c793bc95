//! Node roles through the real binary, in front of stand-in nodes that report them: a node
//! whose roles make it a poor client entry point (by default a dedicated master) gets no client,
//! and says why in the STATUS line, the log, `/status` and the metrics.

mod common;

use common::cluster::*;
use common::scrape::{self, Scrape};
use common::*;
use roundhouse::demo::node_id;
use serde_json::Value;

const MASTER_REASON: &str = "dedicated cluster-manager node: not a client entry point";

/// es-3 has `roles`, those of a dedicated master: it stays out of rotation, and says why in the
/// STATUS line, the log, `/status` and the state metric.
async fn a_dedicated_master_is_kept_out(roles: &[&str]) {
    let nodes = three_nodes().await;
    nodes[2].set(|b| b.roles = strings(roles));
    let mut rh = serve(es_backend(&nodes)).await;
    let status = rh
        .notify
        .wait_for_status(&["excluded by roles"], SOON)
        .await;
    assert_eq!(
        status,
        format!(
            "serving 1 listener; es: 2/2 servers up, 1 excluded by roles (es-3: {MASTER_REASON})"
        )
    );
    let line = rh
        .stderr
        .wait_for(
            &["server kept out of rotation by its roles", "server=es-3"],
            SOON,
        )
        .await;
    assert!(line.contains(MASTER_REASON), "{line}");

    let addr = rh.listener("es").await;
    let seen = tally(&names(addr, 12).await);
    assert_eq!(
        seen,
        [("es-1".to_owned(), 6), ("es-2".to_owned(), 6)].into(),
        "no client for the dedicated master"
    );

    let admin = rh.admin().await;
    let st = scrape::status(admin).await;
    let es3 = scrape::server(&st, "es", "es-3");
    assert_eq!(es3["state"], "excluded");
    assert_eq!(
        es3["health"], "up",
        "it passes its checks; its roles keep it out"
    );
    assert_eq!(es3["reason"], MASTER_REASON);
    assert_eq!(es3["receiving_traffic"], false);
    assert_eq!(es3["node"]["roles"], serde_json::json!(roles));
    assert_eq!(es3["node_id"], node_id("es-3"));
    assert_eq!(st["backends"][0]["servers_excluded"], 1);

    let s = Scrape::from(admin).await;
    let state = |word| {
        s.get(
            "roundhouse_server_state",
            &[ES, ("server", "es-3"), ("state", word)],
        )
    };
    assert_eq!((state("excluded"), state("up")), (1.0, 0.0));
    assert_eq!(
        (
            s.get("roundhouse_server_excluded", &labels("es-3")),
            s.get("roundhouse_server_excluded", &labels("es-1"))
        ),
        (1.0, 0.0)
    );
    assert_eq!(
        s.get("roundhouse_server_connections_total", &labels("es-3")),
        0.0
    );
    assert_eq!(s.get("roundhouse_backend_servers_up", &[ES]), 2.0);
}

#[tokio::test]
async fn an_elasticsearch_dedicated_master_never_gets_a_client() {
    a_dedicated_master_is_kept_out(&["master"]).await;
}

#[tokio::test]
async fn an_opensearch_dedicated_cluster_manager_never_gets_a_client() {
    a_dedicated_master_is_kept_out(&["cluster_manager"]).await;
}

#[tokio::test]
async fn a_voting_only_master_is_a_dedicated_master_too() {
    a_dedicated_master_is_kept_out(&["master", "voting_only"]).await;
}

#[tokio::test]
async fn a_dedicated_master_that_goes_down_is_not_a_missing_server() {
    let mut nodes = three_nodes().await;
    nodes[2].set(|b| b.roles = strings(&["master"]));
    let mut rh = serve(es_backend(&nodes)).await;
    rh.notify
        .wait_for_status(&["es: 2/2 servers up, 1 excluded by roles"], SOON)
        .await;
    let admin = rh.admin().await;
    nodes.pop().expect("three nodes").stop().await;
    let down = [ES, ("server", "es-3"), ("state", "down")];
    let s = Scrape::until_equals(admin, "roundhouse_server_state", &down, 1.0).await;
    // what the alert rules read: down, but still kept out by the roles its node last reported,
    // so RoundhouseBackendDegraded leaves it out, as the STATUS line does
    assert_eq!(s.get("roundhouse_server_excluded", &labels("es-3")), 1.0);
    assert_eq!(s.get("roundhouse_backend_servers_up", &[ES]), 2.0);
    let st = scrape::status(admin).await;
    assert_eq!(st["backends"][0]["servers_excluded"], 1);
    let line = rh.notify.last_status().expect("a STATUS line");
    assert!(
        line.starts_with("serving 1 listener; es: 2/2 servers up"),
        "{line}"
    );
}

#[tokio::test]
async fn with_the_filter_off_a_dedicated_master_gets_clients() {
    let nodes = three_nodes().await;
    nodes[2].set(|b| b.roles = strings(&["master"]));
    let mut rh =
        serve(es_backend(&nodes).with("roles", "{ exclude_dedicated_masters: false }")).await;
    all_up(&mut rh, 3).await;
    let seen = tally(&names(rh.listener("es").await, 9).await);
    assert_eq!(seen.get("es-3"), Some(&3), "{seen:?}");
    let st = scrape::status(rh.admin().await).await;
    assert_eq!(scrape::server(&st, "es", "es-3")["state"], "up");
    assert_eq!(st["backends"][0]["servers_excluded"], 0);
}

#[tokio::test]
async fn required_roles_keep_out_a_node_without_them() {
    let nodes = three_nodes().await;
    nodes[2].set(|b| b.roles = strings(&["ingest"]));
    let mut rh = serve(es_backend(&nodes).with("roles", "{ require: [data] }")).await;
    let reason = "lacks the role data that roles.require asks for (has ingest)";
    let status = rh
        .notify
        .wait_for_status(&["excluded by roles"], SOON)
        .await;
    assert_eq!(
        status,
        format!("serving 1 listener; es: 2/2 servers up, 1 excluded by roles (es-3: {reason})")
    );
    let seen = tally(&names(rh.listener("es").await, 8).await);
    assert_eq!(
        seen,
        [("es-1".to_owned(), 4), ("es-2".to_owned(), 4)].into()
    );
    let st = scrape::status(rh.admin().await).await;
    let es3 = scrape::server(&st, "es", "es-3");
    assert_eq!(
        (&es3["state"], &es3["reason"]),
        (&"excluded".into(), &reason.into())
    );
}

#[tokio::test]
async fn a_node_whose_roles_cannot_be_read_is_kept_out_and_says_so() {
    let nodes = three_nodes().await;
    // es-3's health answers are fine; only /_nodes refuses (a user without cluster monitor)
    nodes[2].set(|b| b.nodes_refused = true);
    let mut rh = serve(es_backend(&nodes)).await;
    let reason = "cannot tell its roles: GET /_nodes/_local/http was refused (403): the health \
                  check's user needs the cluster monitor privilege (check health_check.auth)";
    let status = rh.notify.wait_for_status(&["DEGRADED"], SOON).await;
    assert_eq!(
        status,
        format!("DEGRADED: es: 2/3 servers up (es-3: {reason})")
    );
    let seen = tally(&names(rh.listener("es").await, 8).await);
    assert_eq!(
        seen,
        [("es-1".to_owned(), 4), ("es-2".to_owned(), 4)].into(),
        "not taken for a data node"
    );
    let st = scrape::status(rh.admin().await).await;
    let es3 = scrape::server(&st, "es", "es-3");
    assert_eq!(
        (&es3["state"], &es3["reason"]),
        (&"down".into(), &reason.into())
    );
    assert_eq!(es3["node"], Value::Null, "nothing known about it");
}
