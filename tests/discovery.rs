//! Discovery through the real binary, in front of stand-in nodes that list their cluster's nodes:
//! how the server set follows the cluster — who joins, moves and leaves, and what a reload does
//! to what was discovered. Which answers are trusted is in `discovery_answers.rs`.

mod common;

use std::time::{Duration, Instant};

use common::cluster::*;
use common::scrape::{self, Scrape, find_server, status_until};
use common::*;
use roundhouse::demo::node_id;
use serde_json::Value;

const MASTER_REASON: &str = "dedicated cluster-manager node: not a client entry point";

#[tokio::test]
async fn discovery_from_one_seed_spreads_clients_over_the_data_nodes_only() {
    let nodes = nodes_with_roles(&[
        ("es-1", DATA),
        ("es-2", DATA),
        ("es-3", DATA),
        ("m-1", &["master"]),
    ])
    .await;
    link(&nodes.iter().collect::<Vec<_>>());
    let mut rh = serve(discovering(&[&nodes[0]], 3)).await;
    all_up(&mut rh, 3).await;
    for n in &nodes[1..3] {
        rh.stderr.wait_for(&[&joined(n)], SOON).await;
    }
    let line = rh
        .stderr
        .wait_for(&["node m-1 is not a server of this backend"], SOON)
        .await;
    assert!(line.contains(MASTER_REASON), "{line}");

    let seen = tally(&names(rh.listener("es").await, 30).await);
    assert_eq!(
        seen,
        [
            ("es-1".to_owned(), 10),
            ("es-2".to_owned(), 10),
            ("es-3".to_owned(), 10)
        ]
        .into()
    );

    let admin = rh.admin().await;
    let st = scrape::status(admin).await;
    assert_eq!(scrape::server(&st, "es", "es-1")["source"], "configured");
    for n in &nodes[1..3] {
        let s = scrape::server(&st, "es", n.name());
        assert_eq!(s["source"], "discovered");
        assert_eq!(s["node_id"], node_id(n.name()));
        assert_eq!(s["resolved"], n.addr().to_string());
    }
    assert!(find_server(&st, "es", "m-1").is_none(), "{st:#}");
    let d = &st["backends"][0]["discovery"];
    assert_eq!(d["servers_discovered"], 2);
    assert_eq!(d["interval"], "300ms");
    assert_eq!(d["forget_after"], 3);
    assert_eq!(d["last_refresh"]["nodes"], 4);
    assert_eq!(d["last_refresh"]["reason"], Value::Null);

    let s = Scrape::from(admin).await;
    assert_eq!(s.get("roundhouse_discovery_servers", &[ES]), 2.0);
    assert_eq!(
        s.get(
            "roundhouse_discovery_changes_total",
            &[ES, ("change", "joined")]
        ),
        2.0
    );
}

#[tokio::test]
async fn a_node_that_joins_gets_clients_without_a_reload() {
    let mut nodes = three_data_nodes().await;
    let mut rh = serve(discovering(&[&nodes[0]], 3)).await;
    all_up(&mut rh, 3).await;
    let addr = rh.listener("es").await;

    let es4 = FakeNode::start("es-4", "prod").await.expect("start es-4");
    es4.set(|b| b.roles = strings(DATA));
    nodes.push(es4);
    let joined_at = Instant::now();
    link(&nodes.iter().collect::<Vec<_>>());
    // clients keep coming: the first one es-4 answers is its first client connection
    let mut served = 0;
    while node_name(addr).await.expect("request through roundhouse") != "es-4" {
        served += 1;
        assert!(
            joined_at.elapsed() < SOON,
            "es-4 got no client within {SOON:?}; stderr:\n{}",
            rh.stderr.text()
        );
    }
    let took = joined_at.elapsed();
    eprintln!(
        "es-4 got its first client {took:?} after it joined the cluster ({served} clients before; \
         discovery every 300ms, checks every 500ms)"
    );
    // interval + rise × check interval, and room for a busy machine
    assert!(
        took < Duration::from_millis(300 + 2 * 500 + 1000),
        "{took:?}"
    );
    rh.stderr.wait_for(&[&joined(&nodes[3])], SOON).await;
    assert_eq!(rh.stderr.count("reloading configuration"), 0);
    let st = scrape::status(rh.admin().await).await;
    assert_eq!(scrape::server(&st, "es", "es-4")["source"], "discovered");
}

#[tokio::test]
async fn a_joining_node_is_checked_before_it_enters_the_server_set() {
    let mut nodes = three_data_nodes().await;
    let mut rh = serve(discovering(&[&nodes[0]], 3)).await;
    all_up(&mut rh, 3).await;
    let es4 = FakeNode::start("es-4", "prod").await.expect("start es-4");
    es4.set(|b| b.roles = strings(DATA));
    nodes.push(es4);
    link(&nodes.iter().collect::<Vec<_>>());
    all_up(&mut rh, 4).await;
    // a node joining is no degradation: the STATUS line goes from all up to all up
    let messages = rh.notify.messages();
    let statuses: Vec<&str> = messages
        .iter()
        .filter_map(|m| m.lines().find_map(|l| l.strip_prefix("STATUS=")))
        .collect();
    assert!(
        statuses.iter().all(|s| s.starts_with("serving 1 listener")),
        "{statuses:#?}"
    );
}

#[tokio::test]
async fn a_stopped_node_leaves_rotation_at_once_and_the_server_set_after_forget_after_answers() {
    let mut nodes = three_data_nodes().await;
    let mut rh = serve(discovering(&[&nodes[0]], 3)).await;
    all_up(&mut rh, 3).await;
    let admin = rh.admin().await;
    let before = refreshes(&Scrape::from(admin).await);

    // the cluster no longer lists es-3, and es-3 is gone
    link(&[&nodes[0], &nodes[1]]);
    let es3 = nodes.pop().expect("es-3");
    es3.stop().await;
    let stopped = Instant::now();

    // es-3 answered at that address before: a node that stopped, not a bad publish address
    let status = rh
        .notify
        .wait_status(&["DEGRADED", "es-3: connection refused"], SOON)
        .await;
    let out_of_rotation = stopped.elapsed();
    assert_eq!(
        status,
        "DEGRADED: es: 2/3 servers up (es-3: connection refused)"
    );
    let line = rh
        .stderr
        .wait_for(&["node es-3 (id node-es-3) left the server set"], SOON)
        .await;
    let left = stopped.elapsed();
    // at least forget_after answers (more when its checks took longer to fail than that)
    let absent: u32 = line
        .split("absent from ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no absence count in {line}"));
    assert!(
        absent >= 3 && line.contains("answers in a row and failing its checks"),
        "{line}"
    );
    let status = rh.notify.wait_status(&["serving"], SOON).await;
    assert_eq!(status, "serving 1 listener; es: 2/2 servers up");
    eprintln!(
        "a stopped node: out of rotation after {out_of_rotation:?}, out of the server set after {left:?}"
    );

    let s = Scrape::from(admin).await;
    assert!(
        refreshes(&s) - before >= 3.0,
        "it left only after 3 answers without it: {} refreshes",
        refreshes(&s) - before
    );
    assert_eq!(
        s.get(
            "roundhouse_discovery_changes_total",
            &[ES, ("change", "left")]
        ),
        1.0
    );
    assert_eq!(s.get("roundhouse_discovery_servers", &[ES]), 1.0);
    assert_eq!(
        s.find("roundhouse_server_connections_total", &labels("es-3")),
        None,
        "its series are gone"
    );
    let st = scrape::status(admin).await;
    assert!(find_server(&st, "es", "es-3").is_none(), "{st:#}");
}

#[tokio::test]
async fn a_healthy_node_missing_from_the_answers_stays() {
    let nodes = three_data_nodes().await;
    // forget_after 1: a node that failed its checks would go at the first answer without it
    let mut rh = serve(discovering(&[&nodes[0]], 1)).await;
    all_up(&mut rh, 3).await;

    // es-1 and es-2 no longer list es-3, which still answers its checks well
    link(&[&nodes[0], &nodes[1]]);
    let asked = || nodes[0].nodes_requests() + nodes[1].nodes_requests();
    let since = asked();
    let deadline = Instant::now() + SOON;
    while asked() < since + 4 {
        assert!(Instant::now() < deadline, "discovery asks es-1 and es-2");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    rh.log_barrier().await;

    assert_eq!(
        rh.stderr.count("left the server set"),
        0,
        "{}",
        rh.stderr.text()
    );
    let admin = rh.admin().await;
    let s = Scrape::from(admin).await;
    assert_eq!(
        s.get(
            "roundhouse_discovery_changes_total",
            &[ES, ("change", "left")]
        ),
        0.0
    );
    let st = scrape::status(admin).await;
    let es3 = scrape::server(&st, "es", "es-3");
    assert_eq!(
        (&es3["source"], &es3["state"]),
        (&"discovered".into(), &"up".into())
    );
    let seen = tally(&names(rh.listener("es").await, 9).await);
    assert_eq!(
        seen.get("es-3"),
        Some(&3),
        "es-3 still gets clients: {seen:?}"
    );
}

#[tokio::test]
async fn a_node_restarted_at_a_new_port_keeps_its_name_and_counters() {
    let mut nodes = three_data_nodes().await;
    let mut rh = serve(discovering(&[&nodes[0]], 3)).await;
    all_up(&mut rh, 3).await;
    let addr = rh.listener("es").await;
    let admin = rh.admin().await;
    let seen = tally(&names(addr, 9).await);
    assert_eq!(seen.get("es-3"), Some(&3));
    let connections = || async {
        Scrape::from(admin)
            .await
            .get("roundhouse_server_connections_total", &labels("es-3"))
    };
    assert_eq!(connections().await, 3.0);

    let old = nodes.pop().expect("es-3");
    let old_addr = old.addr();
    old.stop().await;
    let es3 = FakeNode::start("es-3", "prod").await.expect("restart es-3");
    es3.set(|b| b.roles = strings(DATA));
    let new_addr = es3.addr();
    assert_ne!(new_addr, old_addr);
    nodes.push(es3);
    link(&nodes.iter().collect::<Vec<_>>());

    rh.stderr
        .wait_for(
            &[&format!(
                "node es-3 (id node-es-3) moved from {old_addr} to {new_addr}"
            )],
            SOON,
        )
        .await;
    let st = status_until(admin, "es-3 up at its new address", |st| {
        find_server(st, "es", "es-3")
            .is_some_and(|s| s["resolved"] == new_addr.to_string() && s["state"] == "up")
    })
    .await;
    let es3 = scrape::server(&st, "es", "es-3");
    assert_eq!(es3["node_id"], node_id("es-3"));
    assert_eq!(es3["source"], "discovered");

    let seen = tally(&names(addr, 9).await);
    assert_eq!(seen.get("es-3"), Some(&3), "{seen:?}");
    assert_eq!(connections().await, 6.0, "its counters carried on");
    let s = Scrape::from(admin).await;
    let change = |c| s.get("roundhouse_discovery_changes_total", &[ES, ("change", c)]);
    assert_eq!(
        (change("joined"), change("moved"), change("left")),
        (2.0, 1.0, 0.0)
    );
    assert_eq!(rh.stderr.count("joined at"), 2, "es-3 joined once");
}

#[tokio::test]
async fn a_drained_node_restarted_at_a_new_port_stays_drained() {
    let mut nodes = three_data_nodes().await;
    let mut rh = serve(discovering(&[&nodes[0]], 3)).await;
    all_up(&mut rh, 3).await;
    let admin = rh.admin().await;
    let (code, body) = http_post(admin, "/servers/es/es-3/drain", None)
        .await
        .expect("POST drain");
    assert_eq!(code, 200, "{body}");

    let old = nodes.pop().expect("es-3");
    old.stop().await;
    let es3 = FakeNode::start("es-3", "prod").await.expect("restart es-3");
    es3.set(|b| b.roles = strings(DATA));
    let new_addr = es3.addr();
    nodes.push(es3);
    link(&nodes.iter().collect::<Vec<_>>());
    let st = status_until(admin, "es-3 healthy at its new address", |st| {
        find_server(st, "es", "es-3")
            .is_some_and(|s| s["resolved"] == new_addr.to_string() && s["health"] == "up")
    })
    .await;
    let es3 = scrape::server(&st, "es", "es-3");
    assert_eq!(
        (&es3["state"], &es3["admin_state"]),
        (&"drain".into(), &"drain".into())
    );
    let seen = tally(&names(rh.listener("es").await, 6).await);
    assert_eq!(
        seen,
        [("es-1".to_owned(), 3), ("es-2".to_owned(), 3)].into()
    );
}

#[tokio::test]
async fn turning_discovery_off_by_reload_drops_the_discovered_servers() {
    let nodes = three_data_nodes().await;
    let mut rh = Roundhouse::start(&es_config(discovering(&[&nodes[0]], 3)).yaml()).await;
    all_up(&mut rh, 3).await;
    let admin = rh.admin().await;
    let s = Scrape::from(admin).await;
    assert!(
        s.find(
            "roundhouse_server_state",
            &[ES, ("server", "es-2"), ("state", "up")]
        )
        .is_some()
    );

    let plain = Backend::new("es")
        .server("es-1", nodes[0].addr())
        .check("cluster_name", "prod")
        .check("min_nodes", "2");
    let ready = rh.reload(&es_config(plain).yaml()).await;
    assert!(
        ready.contains("STATUS=serving 1 listener; es: 1/1 servers up"),
        "{ready}"
    );
    rh.stderr
        .wait_for(
            &["discovery turned off; the configured servers are the server set"],
            SOON,
        )
        .await;

    let st = scrape::status(admin).await;
    let servers: Vec<&Value> = st["backends"][0]["servers"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    assert_eq!(servers.len(), 1, "{st:#}");
    assert_eq!(servers[0]["name"], "es-1");
    assert_eq!(st["backends"][0]["discovery"], Value::Null);
    let s = Scrape::from(admin).await;
    for gone in [
        "server=\"es-2\"",
        "server=\"es-3\"",
        "roundhouse_discovery_",
    ] {
        assert!(
            !s.text
                .lines()
                .any(|l| !l.starts_with('#') && l.contains(gone)),
            "{gone} is still exported:\n{}",
            s.text
        );
    }
    let seen = tally(&names(rh.listener("es").await, 4).await);
    assert_eq!(seen, [("es-1".to_owned(), 4)].into());

    // and nobody is asked any more: many checks later, no /_nodes/_all/http
    checked(&nodes[0], 2).await;
    let asked = nodes[0].nodes_requests();
    checked(&nodes[0], 5).await;
    assert_eq!(nodes[0].nodes_requests(), asked, "discovery stopped");
}

#[tokio::test]
async fn a_reload_keeps_discovered_servers_and_their_state() {
    let nodes = three_data_nodes().await;
    let backend = discovering(&[&nodes[0]], 3);
    let mut rh = Roundhouse::start(&es_config(backend.clone()).yaml()).await;
    all_up(&mut rh, 3).await;
    let addr = rh.listener("es").await;
    let admin = rh.admin().await;
    let seen = tally(&names(addr, 9).await);
    assert_eq!(seen.get("es-2"), Some(&3));
    let before = scrape::status(admin).await;
    let s = Scrape::from(admin).await;
    let unchanged_before = s.get(
        "roundhouse_discovery_refreshes_total",
        &[ES, ("result", "unchanged")],
    );

    // another setting changes: the discovery task is told, and asks at once
    let ready = rh
        .reload(&es_config(backend.with("retries", "1")).yaml())
        .await;
    assert!(
        ready.contains("STATUS=serving 1 listener; es: 3/3 servers up"),
        "{ready}"
    );
    Scrape::until(admin, "a refresh after the reload", |s| {
        s.get(
            "roundhouse_discovery_refreshes_total",
            &[ES, ("result", "unchanged")],
        ) > unchanged_before
    })
    .await;
    // every STATUS line since the reload started
    rh.notify.drain();
    assert!(
        !rh.notify.messages().iter().any(|m| m.contains("DEGRADED")),
        "no flapping: {:#?}",
        rh.notify.messages()
    );
    rh.log_barrier().await;
    assert_eq!(rh.stderr.count("joined at"), 2, "nobody joined again");
    assert_eq!(rh.stderr.count("left the server set"), 0);
    let up_lines = rh
        .stderr
        .all()
        .into_iter()
        .filter(|l| l.contains("server is up") && l.contains("server=es-2"))
        .count();
    assert_eq!(up_lines, 1, "es-2 came up once");

    let after = scrape::status(admin).await;
    for name in ["es-2", "es-3"] {
        let (b, a) = (
            scrape::server(&before, "es", name),
            scrape::server(&after, "es", name),
        );
        assert_eq!(a["source"], "discovered");
        assert_eq!(a["state"], "up");
        assert_eq!(a["since"], b["since"], "{name} never left the state up");
        assert_eq!(a["connections_total"], 3, "{name}'s counters carried over");
    }
    let s = Scrape::from(admin).await;
    assert_eq!(
        s.get("roundhouse_server_state_changes_total", &labels("es-2")),
        0.0
    );
}

#[tokio::test]
async fn a_discovered_node_written_into_the_file_becomes_a_seed_and_keeps_its_counters() {
    let nodes = three_data_nodes().await;
    let mut rh = Roundhouse::start(&es_config(discovering(&[&nodes[0]], 1)).yaml()).await;
    all_up(&mut rh, 3).await;
    let addr = rh.listener("es").await;
    let admin = rh.admin().await;
    let seen = tally(&names(addr, 9).await);
    assert_eq!(seen.get("es-2"), Some(&3));

    let ready = rh
        .reload(&es_config(discovering(&[&nodes[0], &nodes[1]], 1)).yaml())
        .await;
    assert!(
        ready.contains("STATUS=serving 1 listener; es: 3/3 servers up"),
        "{ready}"
    );
    let since = nodes[0].nodes_requests() + nodes[1].nodes_requests();
    let deadline = Instant::now() + SOON;
    while nodes[0].nodes_requests() + nodes[1].nodes_requests() < since + 4 {
        assert!(Instant::now() < deadline, "discovery asks es-1 and es-2");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    rh.log_barrier().await;

    let st = scrape::status(admin).await;
    let es2 = scrape::server(&st, "es", "es-2");
    assert_eq!(
        (&es2["source"], &es2["state"]),
        (&"configured".into(), &"up".into())
    );
    assert_eq!(es2["connections_total"], 3, "its counters carried over");
    assert_eq!(st["backends"][0]["discovery"]["servers_discovered"], 1);
    rh.stderr
        .wait_for(
            &["node es-2 (id node-es-2) is listed in the configuration file now"],
            SOON,
        )
        .await;
    // it is still in the cluster's answers and passes its checks: it never left
    assert_eq!(
        rh.stderr.count("left the server set"),
        0,
        "{}",
        rh.stderr.text()
    );
    let s = Scrape::from(admin).await;
    assert_eq!(
        s.get(
            "roundhouse_discovery_changes_total",
            &[ES, ("change", "left")]
        ),
        0.0
    );
    assert_eq!(s.get("roundhouse_discovery_servers", &[ES]), 1.0);
}
