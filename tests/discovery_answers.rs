//! Which answers discovery takes, through the real binary: only from a node that passes the full
//! Elasticsearch judgement, only about the right cluster, with the health check's TLS and
//! credentials; and what it makes of the publish addresses in them.

mod common;

use common::cluster::*;
use common::scrape::{self, Scrape, find_server};
use common::*;

/// A seed that elected itself master of a cluster of one (it sees 1 node; `min_nodes: 2`), and
/// whose answer would add a node of its own.
async fn isolated_seed() -> (FakeNode, FakeNode) {
    let iso = FakeNode::start("iso", "prod").await.expect("start iso");
    let rogue = FakeNode::start("rogue", "prod").await.expect("start rogue");
    let rogue_peer = rogue.as_peer();
    iso.set(|b| {
        b.number_of_nodes = 1;
        b.peers = vec![rogue_peer];
    });
    (iso, rogue)
}

#[tokio::test]
async fn an_isolated_seed_is_never_asked() {
    let nodes = three_data_nodes().await;
    let (iso, _rogue) = isolated_seed().await;
    let mut rh = serve(discovering(&[&nodes[0], &iso], 3)).await;
    let status = rh
        .notify
        .wait_for_status(&["es: 3/4 servers up"], SOON)
        .await;
    assert_eq!(
        status,
        "DEGRADED: es: 3/4 servers up (iso: sees 1 node, want at least 2 (isolated?))"
    );
    let admin = rh.admin().await;
    let before = refreshes(&Scrape::from(admin).await);
    Scrape::until(admin, "five more discovery refreshes", |s| {
        refreshes(s) >= before + 5.0
    })
    .await;

    assert_eq!(iso.nodes_requests(), 0, "iso was never asked");
    assert!(
        nodes.iter().all(|n| n.nodes_requests() > 0),
        "the cluster's nodes are asked in turn"
    );
    let st = scrape::status(admin).await;
    assert!(find_server(&st, "es", "rogue").is_none(), "{st:#}");
    assert_eq!(st["backends"][0]["servers_total"], 4);
    assert!(!rh.stderr.text().contains("rogue"));
}

#[tokio::test]
async fn when_the_only_reachable_seed_is_isolated_the_server_set_stays() {
    let mut nodes = three_data_nodes().await;
    let (iso, _rogue) = isolated_seed().await;
    let mut rh = serve(discovering(&[&nodes[0], &iso], 3)).await;
    rh.notify
        .wait_for_status(&["es: 3/4 servers up"], SOON)
        .await;
    let admin = rh.admin().await;

    // the whole cluster goes away; only the isolated seed still answers
    for n in nodes.drain(..) {
        n.stop().await;
    }
    let line = rh
        .stderr
        .wait_for(
            &[
                "discovery took no answer; the server set stays as it is",
                "no server passes the full Elasticsearch judgement",
            ],
            SOON,
        )
        .await;
    assert!(line.contains("so none is asked"), "{line}");
    let no_source = |s: &Scrape| {
        s.get(
            "roundhouse_discovery_refreshes_total",
            &[ES, ("result", "no_source")],
        )
    };
    let s = Scrape::until(
        admin,
        "more refreshes than forget_after with no source",
        |s| no_source(s) >= 5.0,
    )
    .await;
    eprintln!(
        "with only the isolated seed reachable: {} refreshes found no server to ask",
        no_source(&s)
    );

    assert_eq!(iso.nodes_requests(), 0, "iso was never asked");
    assert_eq!(s.get("roundhouse_discovery_servers", &[ES]), 2.0);
    assert_eq!(rh.stderr.count("left the server set"), 0);
    let st = scrape::status(admin).await;
    for name in ["es-2", "es-3"] {
        let s = scrape::server(&st, "es", name);
        assert_eq!(
            (&s["source"], &s["state"]),
            (&"discovered".into(), &"down".into())
        );
    }
    assert!(find_server(&st, "es", "rogue").is_none(), "{st:#}");
    let last = &st["backends"][0]["discovery"]["last_refresh"];
    assert_eq!(last["result"], "no_source");
    assert_eq!(
        last["reason"],
        "no server passes the full Elasticsearch judgement (right cluster, enough nodes, a master), so none is asked"
    );
}

#[tokio::test]
async fn an_answer_about_another_cluster_is_refused() {
    let nodes = nodes_with_roles(&[("es-1", DATA), ("es-2", DATA)]).await;
    link(&nodes.iter().collect::<Vec<_>>());
    // its health says prod, its /_nodes answer another cluster
    nodes[0].set(|b| b.nodes_cluster_name = Some("staging".into()));
    let rh = serve(discovering(&[&nodes[0]], 3)).await;
    let line = rh
        .stderr
        .wait_for(
            &["discovery took no answer; the server set stays as it is"],
            SOON,
        )
        .await;
    assert!(
        line.contains("es-1: its answer is about cluster staging, want prod"),
        "{line}"
    );
    let admin = rh.admin().await;
    let s = Scrape::from(admin).await;
    assert!(
        s.get(
            "roundhouse_discovery_refreshes_total",
            &[ES, ("result", "refused")]
        ) >= 1.0
    );
    assert_eq!(s.get("roundhouse_discovery_servers", &[ES]), 0.0);
    let st = scrape::status(admin).await;
    assert!(find_server(&st, "es", "es-2").is_none(), "{st:#}");
    assert_eq!(
        st["backends"][0]["discovery"]["last_refresh"]["result"],
        "refused"
    );
    let seen = tally(&names(rh.listener("es").await, 4).await);
    assert_eq!(seen, [("es-1".to_owned(), 4)].into());
}

#[tokio::test]
async fn a_discovered_node_that_publishes_an_address_nobody_listens_on_says_so() {
    let nodes = nodes_with_roles(&[("es-1", DATA), ("es-2", DATA)]).await;
    let dead = dead_address();
    // es-2 publishes an address of its own (a container's, say) that does not answer
    nodes[1].set(|b| b.publish = Some(dead.to_string()));
    link(&nodes.iter().collect::<Vec<_>>());
    let mut rh = serve(discovering(&[&nodes[0]], 3)).await;
    let reason = format!(
        "publishes {dead}, which does not answer (connection refused; a container-internal \
         address? set http.publish_host on the node)"
    );
    let status = rh
        .notify
        .wait_for_status(&["DEGRADED", "es-2: publishes"], SOON)
        .await;
    assert_eq!(
        status,
        format!("DEGRADED: es: 1/2 servers up (es-2: {reason})")
    );
    let st = scrape::status(rh.admin().await).await;
    let es2 = scrape::server(&st, "es", "es-2");
    assert_eq!(
        (&es2["state"], &es2["reason"]),
        (&"down".into(), &reason.into())
    );
    assert_eq!(es2["resolved"], dead.to_string());
    let seen = tally(&names(rh.listener("es").await, 4).await);
    assert_eq!(seen, [("es-1".to_owned(), 4)].into());
}

#[tokio::test]
async fn both_publish_address_forms_are_understood() {
    let nodes = three_data_nodes().await;
    // es-2 publishes under a host name (`hostname/ip:port`), es-3 as `ip:port`
    let named = format!("es-2.internal/{}", nodes[1].addr());
    nodes[1].set(|b| b.publish = Some(named.clone()));
    link(&nodes.iter().collect::<Vec<_>>());
    let mut rh = serve(discovering(&[&nodes[0]], 3)).await;
    all_up(&mut rh, 3).await;
    rh.stderr
        .wait_for(
            &[&format!("node es-2 (id node-es-2) joined at {named}")],
            SOON,
        )
        .await;
    rh.stderr.wait_for(&[&joined(&nodes[2])], SOON).await;
    let seen = tally(&names(rh.listener("es").await, 9).await);
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen.values().all(|n| *n == 3), "{seen:?}");
    let st = scrape::status(rh.admin().await).await;
    assert_eq!(
        scrape::server(&st, "es", "es-2")["resolved"],
        nodes[1].addr().to_string()
    );
}

#[tokio::test]
async fn discovery_asks_with_the_health_checks_tls_and_credentials() {
    let ca = common::certs::TestCa::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let (ca_file, password_file) = (dir.path().join("ca.pem"), dir.path().join("password"));
    std::fs::write(&ca_file, ca.pem()).expect("write CA");
    std::fs::write(&password_file, "s3cret\n").expect("write password");
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            "roundhouse:s3cret"
        )
    );
    let mut nodes = Vec::new();
    for name in ["es-1", "es-2", "es-3"] {
        let security = Security {
            tls: Some(ca.server(&["es.internal"])),
            authorization: Some(vec![basic.clone()]),
        };
        let addr = "127.0.0.1:0".parse().expect("an address");
        let n = FakeNode::start_secured(name, "prod", addr, security)
            .await
            .expect("start secured node");
        n.set(|b| b.roles = strings(DATA));
        nodes.push(n);
    }
    link(&nodes.iter().collect::<Vec<_>>());
    // TLS handshakes of a debug build on a busy machine can take a while
    let backend = discovering(&[&nodes[0]], 3)
        .check("interval", "1s")
        .check("timeout", "1s")
        .check(
            "tls",
            &format!(
                "{{ ca_file: {}, server_name: es.internal }}",
                ca_file.display()
            ),
        )
        .check(
            "auth",
            &format!(
                "{{ username: roundhouse, password_file: {} }}",
                password_file.display()
            ),
        );
    let mut rh = serve(backend).await;
    all_up(&mut rh, 3).await;
    for n in &nodes[1..] {
        rh.stderr.wait_for(&[&joined(n)], SOON).await;
    }
    assert!(nodes[0].nodes_requests() > 0);
}
