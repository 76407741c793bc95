//! roundhouse in front of real OpenSearch 2.19 nodes (one JVM each, see
//! `tests/fixtures/opensearch-node`): the failures this project exists for, produced by the real
//! engine rather than by our own idea of it.
//!
//! Ignored in a plain `cargo test` (they need Java 17 and Maven, and a few minutes). Run them with
//! `cargo test --test opensearch -- --ignored`; `.ci/run` does. They take turns: one cluster at a
//! time on a small machine.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::opensearch::{Cluster, Node, NodeSpec, call, free_port, lone_node, ok, take_turn};
use common::scrape::{server, status};
use common::*;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Long enough for a busy machine running three JVMs to notice what the engine does.
const NOTICE: Duration = Duration::from_secs(30);

/// A backend `es` over these nodes, checked the way the README recommends for production:
/// node-local cluster health, cluster `prod`, at least 2 nodes; every second with a 1s timeout.
fn backend(nodes: &[&Node]) -> Backend {
    nodes
        .iter()
        .fold(Backend::new("es"), |b, n| b.server(&n.name, n.http))
        .check("interval", "1s")
        .check("timeout", "1s")
        .check("cluster_name", "prod")
        .check("min_nodes", "2")
}

fn all(cluster: &Cluster) -> Vec<&Node> {
    cluster.nodes.iter().collect()
}

/// roundhouse in front of `backend`, once every server has a settled state.
async fn front(backend: Backend, settled: &str) -> Roundhouse {
    let mut rh = serve(backend).await;
    rh.notify.wait_for_status(&[settled], NOTICE).await;
    rh
}

/// Asks `n` times through `addr` which node answers; exactly these nodes (sorted) must have.
async fn assert_served_by(addr: std::net::SocketAddr, n: usize, nodes: &[&str]) {
    let counts = tally(&names(addr, n).await);
    assert_eq!(counts.keys().collect::<Vec<_>>(), nodes, "{counts:?}");
}

async fn connections(rh: &Roundhouse, node: &str) -> f64 {
    Scrape::from(rh.admin().await).await.get(
        "roundhouse_server_connections_total",
        &[("backend", "es"), ("server", node)],
    )
}

#[tokio::test]
#[ignore = "real OpenSearch nodes: needs Java 17 and Maven; cargo test --test opensearch -- --ignored"]
async fn a_green_cluster_is_spread_round_robin_and_serves_real_requests() {
    let _turn = take_turn().await;
    let started = Instant::now();
    let cluster = Cluster::start("prod", "n", 3).await;
    eprintln!("3-node cluster green in {:?}", started.elapsed());
    let rh = front(backend(&all(&cluster)), "es: 3/3 servers up").await;
    let addr = rh.listener("es").await;

    let counts = tally(&names(addr, 9).await);
    assert_eq!(
        counts.into_iter().collect::<Vec<_>>(),
        [("n1".into(), 3), ("n2".into(), 3), ("n3".into(), 3)]
    );

    // a client's whole path through roundhouse: create an index, write, search it back
    ok(
        addr,
        "PUT",
        "/books",
        Some(r#"{"settings":{"number_of_shards":3,"number_of_replicas":1}}"#),
    )
    .await;
    for i in 0..30 {
        let doc = format!(r#"{{"title":"book {i}","n":{i}}}"#);
        ok(addr, "PUT", &format!("/books/_doc/{i}"), Some(&doc)).await;
    }
    ok(addr, "POST", "/books/_refresh", None).await;
    let found = ok(addr, "GET", "/books/_search?q=title:book&size=100", None).await;
    assert_eq!(found["hits"]["total"]["value"], 30, "{found}");
    let doc = ok(addr, "GET", "/books/_doc/7", None).await;
    assert_eq!(doc["_source"]["n"], 7, "{doc}");
}

#[tokio::test]
#[ignore = "real OpenSearch nodes: needs Java 17 and Maven; cargo test --test opensearch -- --ignored"]
async fn a_yellow_cluster_stays_in_rotation_only_when_yellow_is_accepted() {
    let _turn = take_turn().await;
    let cluster = Cluster::start("prod", "n", 3).await;
    // more replicas than nodes: one replica can never be assigned
    let n1 = cluster.node("n1").http;
    let wide = r#"{"settings":{"number_of_shards":1,"number_of_replicas":3}}"#;
    ok(n1, "PUT", "/wide", Some(wide)).await;
    for node in &cluster.nodes {
        node.wait_health("yellow", |h| h["status"] == "yellow")
            .await;
    }

    let tolerant = front(backend(&all(&cluster)), "es: 3/3 servers up").await;
    let addr = tolerant.listener("es").await;
    assert_served_by(addr, 6, &["n1", "n2", "n3"]).await;
    assert_eq!(
        tolerant.notify.last_status().unwrap(),
        "serving 1 listener; es: 3/3 servers up"
    );

    let strict = backend(&all(&cluster))
        .check("expect_status", "[green]")
        .with("when_all_unhealthy", "fail_closed");
    let mut strict = serve(strict).await;
    let line = strict
        .notify
        .wait_for_status(&["DOWN: es: no healthy server"], NOTICE)
        .await;
    assert_eq!(
        line,
        "DOWN: es: no healthy server (n1: cluster status yellow; n2: cluster status yellow; n3: cluster status yellow)"
    );
    let st = status(strict.admin().await).await;
    for name in ["n1", "n2", "n3"] {
        let s = server(&st, "es", name);
        assert_eq!(s["reason"], "cluster status yellow", "{s:#}");
        assert_eq!(s["elasticsearch"]["status"], "yellow", "{s:#}");
    }
    assert_closed_at_once(strict.listener("es").await).await;
}

#[tokio::test]
#[ignore = "real OpenSearch nodes: needs Java 17 and Maven; cargo test --test opensearch -- --ignored"]
async fn a_node_that_elected_itself_master_of_one_never_gets_a_client() {
    let _turn = take_turn().await;
    let cluster = Cluster::start("prod", "n", 3).await;
    // same cluster name, no seeds, itself as its only initial cluster manager
    let lone = lone_node("prod", "n4").await;
    let health = lone.health().await;
    assert_eq!(
        (&health["status"], &health["number_of_nodes"]),
        (&"green".into(), &1.into()),
        "the engine calls it healthy: {health}"
    );

    let mut nodes = all(&cluster);
    nodes.push(&lone);
    let rh = front(
        backend(&nodes),
        "DEGRADED: es: 3/4 servers up (n4: sees 1 node, want at least 2 (isolated?))",
    )
    .await;
    let addr = rh.listener("es").await;
    assert_served_by(addr, 12, &["n1", "n2", "n3"]).await;
    assert_eq!(connections(&rh, "n4").await, 0.0);
    let st = status(rh.admin().await).await;
    let n4 = server(&st, "es", "n4");
    assert_eq!(n4["reason"], "sees 1 node, want at least 2 (isolated?)");
    assert_eq!(n4["elasticsearch"]["number_of_nodes"], 1);
    assert_eq!(n4["elasticsearch"]["status"], "green");
}

#[tokio::test]
#[ignore = "real OpenSearch nodes: needs Java 17 and Maven; cargo test --test opensearch -- --ignored"]
async fn a_node_stuck_in_discovery_stays_out() {
    let _turn = take_turn().await;
    let cluster = Cluster::start("prod", "n", 2).await;
    // seeds that lead nowhere and nobody to bootstrap with: it never finds a cluster manager
    let stuck = Node::start(NodeSpec {
        cluster: "prod".into(),
        name: "stuck".into(),
        transport_port: free_port(),
        seeds: vec![free_port()],
        initial_managers: Vec::new(),
        settings: Vec::new(),
    })
    .await;
    let (code, seen) = call(stuck.http, "GET", "/_cluster/health?local=true", None).await;
    eprintln!("a node stuck in discovery answers {code}: {seen}");

    let mut nodes = all(&cluster);
    nodes.push(&stuck);
    let rh = front(
        backend(&nodes),
        "DEGRADED: es: 2/3 servers up (stuck: has not discovered a master (stuck in discovery?))",
    )
    .await;
    let addr = rh.listener("es").await;
    assert_served_by(addr, 8, &["n1", "n2"]).await;
    assert_eq!(connections(&rh, "stuck").await, 0.0);
}

/// Clients asking `GET /` through `addr` in a loop until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<(Vec<String>, Vec<Instant>)>>,
}

impl Load {
    fn start(addr: std::net::SocketAddr, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..clients)
            .map(|_| {
                let stop = stop.clone();
                tokio::spawn(async move {
                    let (mut answered, mut failed) = (Vec::new(), Vec::new());
                    while !stop.load(Ordering::Relaxed) {
                        let asked = Instant::now();
                        match node_name(addr).await {
                            Ok(name) => answered.push(name),
                            Err(_) => failed.push(asked),
                        }
                    }
                    (answered, failed)
                })
            })
            .collect();
        Load { stop, tasks }
    }

    /// Stops the clients; returns every answer's node name and when each failed request was sent.
    async fn finish(self) -> (Vec<String>, Vec<Instant>) {
        self.stop.store(true, Ordering::Relaxed);
        let (mut answered, mut failed) = (Vec::new(), Vec::new());
        for t in self.tasks {
            let (a, f) = t.await.expect("client task");
            answered.extend(a);
            failed.extend(f);
        }
        (answered, failed)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real OpenSearch nodes: needs Java 17 and Maven; cargo test --test opensearch -- --ignored"]
async fn a_killed_node_leaves_rotation_and_only_its_requests_in_flight_fail() {
    const CLIENTS: usize = 8;
    let _turn = take_turn().await;
    let cluster = Cluster::start("prod", "n", 3).await;
    let mut rh = front(
        backend(&all(&cluster)).with("retries", "2"),
        "es: 3/3 servers up",
    )
    .await;
    let addr = rh.listener("es").await;
    let load = Load::start(addr, CLIENTS);
    tokio::time::sleep(Duration::from_secs(1)).await; // a second of traffic before the kill

    let killed = Instant::now();
    cluster.nodes[2].kill().await;
    let line = rh
        .notify
        .wait_status(&["DEGRADED: es: 2/3 servers up (n3: "], NOTICE)
        .await;
    let out = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await; // two more seconds of traffic without it
    let (answered, failed) = load.finish().await;
    let counts = tally(&answered);
    let m = Scrape::from(rh.admin().await).await;
    let n3 = [("backend", "es"), ("server", "n3")];
    let connected = m.get("roundhouse_server_connections_total", &n3) as usize;
    let refused = m.get("roundhouse_server_connect_failures_total", &n3);
    eprintln!(
        "kill -9 n3: out of rotation after {:?} (fall 2 x interval 1s, or at once when a client's \
         connect is refused); {} requests answered {counts:?}, {} failed; n3 took {connected} client \
         connections, {refused} more were refused and retried on another node; status {line:?}",
        out - killed,
        answered.len(),
        failed.len()
    );
    assert!(
        out - killed <= Duration::from_secs(4),
        "fall 2 x 1s, plus up to one interval until the next check, with slack: {:?}",
        out - killed
    );
    // every failed request was on a connection n3 took and never answered (in flight when it
    // died), and none sent once n3 was out of rotation failed
    assert!(
        failed.len() <= connected - counts["n3"],
        "{} failed, but n3 left only {} connections unanswered",
        failed.len(),
        connected - counts["n3"]
    );
    assert!(
        failed.iter().all(|&t| t < out),
        "a request sent after n3 left rotation failed"
    );
    assert!(counts["n1"] > 100 && counts["n2"] > 100, "{counts:?}");
}

#[tokio::test]
#[ignore = "real OpenSearch nodes: needs Java 17 and Maven; cargo test --test opensearch -- --ignored"]
async fn a_frozen_node_times_out_leaves_rotation_and_comes_back() {
    let _turn = take_turn().await;
    let cluster = Cluster::start("prod", "n", 3).await;
    let mut rh = front(backend(&all(&cluster)), "es: 3/3 servers up").await;
    let addr = rh.listener("es").await;

    let frozen = Instant::now();
    cluster.node("n3").freeze();
    let line = rh
        .notify
        .wait_status(
            &["DEGRADED: es: 2/3 servers up (n3: timed out after 1s)"],
            NOTICE,
        )
        .await;
    eprintln!(
        "SIGSTOP n3: out of rotation after {:?}: {line}",
        frozen.elapsed()
    );
    assert_served_by(addr, 8, &["n1", "n2"]).await;

    let thawed = Instant::now();
    cluster.node("n3").thaw();
    rh.notify
        .wait_status(&["serving 1 listener; es: 3/3 servers up"], NOTICE)
        .await;
    eprintln!("SIGCONT n3: back in rotation after {:?}", thawed.elapsed());
    assert_served_by(addr, 9, &["n1", "n2", "n3"]).await;
}

#[tokio::test]
#[ignore = "real OpenSearch nodes: needs Java 17 and Maven; cargo test --test opensearch -- --ignored"]
async fn a_red_cluster_fails_open_to_its_survivors_but_never_to_the_isolated_node() {
    let _turn = take_turn().await;
    let cluster = Cluster::start("prod", "n", 3).await;
    let lone = lone_node("prod", "n4").await;
    let n1 = cluster.node("n1").http;
    // an index whose only copy lives on n3, and one that survives losing any node
    let fragile = r#"{"settings":{"number_of_shards":1,"number_of_replicas":0,"index.routing.allocation.require._name":"n3"}}"#;
    ok(n1, "PUT", "/fragile", Some(fragile)).await;
    let sturdy = r#"{"settings":{"number_of_shards":2,"number_of_replicas":1}}"#;
    ok(n1, "PUT", "/sturdy", Some(sturdy)).await;
    for i in 0..10 {
        let doc = format!(r#"{{"n":{i}}}"#);
        ok(n1, "PUT", &format!("/sturdy/_doc/{i}"), Some(&doc)).await;
    }
    ok(n1, "POST", "/sturdy/_refresh", None).await;
    for node in &cluster.nodes {
        node.wait_health("green", |h| h["status"] == "green").await;
    }

    let mut nodes = all(&cluster);
    nodes.push(&lone);
    let config = |policy: &str| {
        ConfigBuilder::new()
            .listener("es", "es")
            .backend(backend(&nodes).with("when_all_unhealthy", policy))
            .yaml()
    };
    let mut rh = Roundhouse::start(&config("fail_open")).await;
    rh.notify
        .wait_for_status(&["DEGRADED: es: 3/4 servers up (n4: "], NOTICE)
        .await;
    let (addr, admin) = (rh.listener("es").await, rh.admin().await);

    cluster.nodes[2].kill().await;
    cluster
        .node("n1")
        .wait_health("red without n3", |h| {
            h["status"] == "red" && h["number_of_nodes"] == 2
        })
        .await;
    let line = rh.notify.wait_status(&["FAIL-OPEN"], NOTICE).await;
    assert_eq!(
        line,
        "DEGRADED: es: 0/4 healthy, FAIL-OPEN to 2 reachable (cluster status red; \
         n3 excluded: connection refused; n4 excluded: sees 1 node, want at least 2 (isolated?))"
    );
    // the index that survived stays readable through roundhouse, on the survivors only
    for _ in 0..4 {
        let found = ok(addr, "GET", "/sturdy/_search?size=0", None).await;
        assert_eq!(found["hits"]["total"]["value"], 10, "{found}");
    }
    assert_served_by(addr, 8, &["n1", "n2"]).await;
    let m = Scrape::from(admin).await;
    assert_eq!(
        m.get("roundhouse_backend_fail_open", &[("backend", "es")]),
        1.0
    );
    assert_eq!(
        connections(&rh, "n4").await,
        0.0,
        "the isolated node, never"
    );
    let st = status(admin).await;
    assert_eq!(
        st["backends"][0]["fail_open_reason"],
        "no server passes its health check; traffic goes to n1, n2, whose only failure is the \
         cluster colour (cluster status red; n3 excluded: connection refused; \
         n4 excluded: sees 1 node, want at least 2 (isolated?))"
    );
    assert_eq!(server(&st, "es", "n4")["receiving_traffic"], false);

    // the operator prefers closing: a reload to fail_closed closes clients at once
    let ready = rh.reload(&config("fail_closed")).await;
    assert!(ready.contains("DOWN: es: no healthy server"), "{ready}");
    assert_closed_at_once(addr).await;
}

#[tokio::test]
#[ignore = "real OpenSearch nodes: needs Java 17 and Maven; cargo test --test opensearch -- --ignored"]
async fn a_node_of_another_cluster_stays_out_naming_both_clusters() {
    let _turn = take_turn().await;
    let prod = lone_node("prod", "p1").await;
    let staging = lone_node("staging", "s1").await;
    let es = backend(&[&prod, &staging]).check("min_nodes", "1");
    let rh = front(
        es,
        "DEGRADED: es: 1/2 servers up (s1: cluster_name is staging, want prod)",
    )
    .await;
    let addr = rh.listener("es").await;
    assert_served_by(addr, 4, &["p1"]).await;
    assert_eq!(connections(&rh, "s1").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real OpenSearch nodes and opensearch-py: cargo test --test opensearch -- --ignored"]
async fn a_real_client_loses_nothing_while_a_node_dies_and_roundhouse_reloads() {
    const DOCS: u64 = 10_000;
    let _turn = take_turn().await;
    let cluster = Cluster::start("prod", "n", 3).await;
    let config = |nodes: &[&Node]| {
        ConfigBuilder::new()
            .listener("es", "es")
            .backend(backend(nodes).with("retries", "2"))
            .yaml()
    };
    let three = config(&all(&cluster));
    let mut rh = front(
        backend(&all(&cluster)).with("retries", "2"),
        "es: 3/3 servers up",
    )
    .await;
    let addr = rh.listener("es").await;
    let docs = r#"{"settings":{"number_of_shards":3,"number_of_replicas":1}}"#;
    ok(addr, "PUT", "/docs", Some(docs)).await;
    cluster.nodes[0]
        .wait_health("green", |h| h["status"] == "green")
        .await;

    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/opensearch-client/bulk_index.py"
    );
    let python = std::env::var("ROUNDHOUSE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut client = tokio::process::Command::new(&python)
        .args([script, "127.0.0.1", &addr.port().to_string(), "docs"])
        .arg(DOCS.to_string())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("run {python} (needs opensearch-py from PyPI): {e}"));
    let mut lines = BufReader::new(client.stdout.take().unwrap()).lines();
    let (mut killed, mut reloads, mut summary) = (false, 0, None);
    while let Some(line) = tokio::time::timeout(NOTICE * 4, lines.next_line())
        .await
        .expect("the client keeps making progress")
        .expect("client stdout")
    {
        let Some(done) = line.strip_prefix("progress ") else {
            summary = Some(line);
            continue;
        };
        let done: u64 = done.parse().expect("progress N");
        if done >= 2_000 && !killed {
            cluster.nodes[2].kill().await;
            killed = true;
        } else if done >= 4_000 && reloads == 0 {
            // the operator takes the dead node out of the config...
            let two = config(&[cluster.node("n1"), cluster.node("n2")]);
            assert!(!rh.reload(&two).await.contains("rejected"));
            reloads += 1;
        } else if done >= 6_000 && reloads == 1 {
            // ...and puts it back, still dead
            assert!(!rh.reload(&three).await.contains("rejected"));
            reloads += 1;
        }
    }
    let exit = client.wait().await.expect("client exit");
    let summary = summary.expect("the client's summary line");
    eprintln!("opensearch-py bulk through roundhouse: {summary}");
    assert!(exit.success(), "{summary}");
    assert_eq!((killed, reloads), (true, 2), "the faults happened mid-run");
    let summary: serde_json::Value = serde_json::from_str(&summary).expect("JSON summary");
    assert_eq!(summary["indexed"], DOCS);

    ok(addr, "POST", "/docs/_refresh", None).await;
    let count = ok(addr, "GET", "/docs/_count", None).await;
    assert_eq!(count["count"], DOCS, "{count}");
}

// Issue 13: the cluster, not just the list. Node roles learned by the checks, discovery from
// seeds, nodes joining, leaving, moving; the isolated node and the unreachable publish address.

/// A dedicated cluster manager (`node.roles=cluster_manager`) beside three data nodes (default
/// roles), all of cluster `prod`.
async fn three_data_nodes_and_a_manager() -> Cluster {
    Cluster::start_nodes(
        "prod",
        &[
            ("n1", &[]),
            ("n2", &[]),
            ("n3", &[]),
            ("m1", &["node.roles=cluster_manager"]),
        ],
    )
    .await
}

/// `backend(seeds)` that discovers the rest of the cluster every second.
fn discovering(seeds: &[&Node], forget_after: u32) -> Backend {
    backend(seeds).with(
        "discovery",
        &format!("{{ type: elasticsearch, interval: 1s, forget_after: {forget_after} }}"),
    )
}

/// The servers `/status` lists for backend `es`, with where each came from.
fn server_set(st: &serde_json::Value) -> Vec<(String, String)> {
    let mut set: Vec<(String, String)> = st["backends"][0]["servers"]
        .as_array()
        .expect("servers")
        .iter()
        .map(|s| {
            let text = |k: &str| s[k].as_str().unwrap_or_default().to_owned();
            (text("name"), text("source"))
        })
        .collect();
    set.sort();
    set
}

fn set_of(servers: &[(&str, &str)]) -> Vec<(String, String)> {
    servers
        .iter()
        .map(|(n, s)| (n.to_string(), s.to_string()))
        .collect()
}

/// What a node says about itself (`GET /_nodes/_local/http`): its id and the node entry.
async fn itself(node: &Node) -> (String, serde_json::Value) {
    let answer = ok(node.http, "GET", "/_nodes/_local/http", None).await;
    let (id, entry) = answer["nodes"]
        .as_object()
        .and_then(|m| m.iter().next())
        .unwrap_or_else(|| panic!("no node in {answer}"));
    (id.clone(), entry.clone())
}

/// How backend `es`'s last discovery refresh went, once there was one.
async fn last_refresh(rh: &Roundhouse) -> serde_json::Value {
    let deadline = Instant::now() + NOTICE;
    loop {
        let st = status(rh.admin().await).await;
        let last = &st["backends"][0]["discovery"]["last_refresh"];
        if !last.is_null() {
            return last.clone();
        }
        assert!(Instant::now() < deadline, "no discovery refresh: {st:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The log line that says `node` joined, once there is one.
async fn joined(rh: &Roundhouse, node: &str) -> String {
    rh.stderr
        .wait_for(&[&format!("node {node} (id "), ") joined at "], NOTICE)
        .await
}

#[tokio::test]
#[ignore = "real OpenSearch nodes: needs Java 17 and Maven; cargo test --test opensearch -- --ignored"]
async fn a_dedicated_cluster_manager_never_gets_a_client_unless_the_roles_filter_is_off() {
    let _turn = take_turn().await;
    let cluster = three_data_nodes_and_a_manager().await;
    let (_, m1) = itself(cluster.node("m1")).await;
    assert_eq!(m1["roles"], serde_json::json!(["cluster_manager"]), "{m1}");

    let mut rh = front(
        backend(&all(&cluster)),
        "serving 1 listener; es: 3/3 servers up, 1 excluded by roles \
         (m1: dedicated cluster-manager node: not a client entry point)",
    )
    .await;
    let addr = rh.listener("es").await;
    assert_served_by(addr, 12, &["n1", "n2", "n3"]).await;
    assert_eq!(connections(&rh, "m1").await, 0.0);
    let st = status(rh.admin().await).await;
    let s = server(&st, "es", "m1");
    assert_eq!(s["state"], "excluded", "{s:#}");
    assert_eq!(
        s["reason"],
        "dedicated cluster-manager node: not a client entry point"
    );
    assert_eq!(s["node"]["roles"], serde_json::json!(["cluster_manager"]));
    assert_eq!(s["receiving_traffic"], false);
    assert_eq!(st["backends"][0]["servers_excluded"], 1);

    // the operator turns the filter off: the manager takes its share like any node
    let off = ConfigBuilder::new()
        .listener("es", "es")
        .backend(backend(&all(&cluster)).with("roles", "{ exclude_dedicated_masters: false }"))
        .yaml();
    rh.reload(&off).await;
    rh.notify
        .wait_for_status(&["serving 1 listener; es: 4/4 servers up"], NOTICE)
        .await;
    let counts = tally(&names(addr, 12).await);
    assert_eq!(
        counts.into_iter().collect::<Vec<_>>(),
        [
            ("m1".into(), 3),
            ("n1".into(), 3),
            ("n2".into(), 3),
            ("n3".into(), 3)
        ]
    );
    assert_eq!(connections(&rh, "m1").await, 3.0);
}

#[tokio::test]
#[ignore = "real OpenSearch nodes: needs Java 17 and Maven; cargo test --test opensearch -- --ignored"]
async fn discovery_from_one_seed_finds_the_data_nodes_and_spreads_clients_over_them_only() {
    let _turn = take_turn().await;
    let cluster = three_data_nodes_and_a_manager().await;
    let started = Instant::now();
    let mut rh = serve(discovering(&[cluster.node("n1")], 3)).await;
    rh.notify
        .wait_for_status(&["serving 1 listener; es: 3/3 servers up"], NOTICE)
        .await;
    eprintln!(
        "one seed, discovery every 1s: all three data nodes in rotation {:?} after roundhouse started",
        started.elapsed()
    );
    for node in ["n2", "n3"] {
        let (id, _) = itself(cluster.node(node)).await;
        let line = joined(&rh, node).await;
        let at = cluster.node(node).http;
        assert!(
            line.contains(&format!("node {node} (id {id}) joined at {at}")),
            "{line}"
        );
    }
    let m1 = rh
        .stderr
        .wait_for(&["node m1 is not a server of this backend"], NOTICE)
        .await;
    assert!(
        m1.contains("dedicated cluster-manager node: not a client entry point"),
        "{m1}"
    );

    let addr = rh.listener("es").await;
    let counts = tally(&names(addr, 9).await);
    assert_eq!(
        counts.into_iter().collect::<Vec<_>>(),
        [("n1".into(), 3), ("n2".into(), 3), ("n3".into(), 3)]
    );
    let st = status(rh.admin().await).await;
    assert_eq!(
        server_set(&st),
        set_of(&[
            ("n1", "configured"),
            ("n2", "discovered"),
            ("n3", "discovered")
        ])
    );
    let d = &st["backends"][0]["discovery"];
    assert_eq!(d["servers_discovered"], 2, "{d:#}");
    assert_eq!(d["last_refresh"]["nodes"], 4, "{d:#}");
    let (n2, _) = itself(cluster.node("n2")).await;
    assert_eq!(server(&st, "es", "n2")["node_id"], n2.as_str());
    let m = Scrape::from(rh.admin().await).await;
    let es = [("backend", "es")];
    assert_eq!(m.get("roundhouse_discovery_servers", &es), 2.0);
    assert_eq!(
        m.get(
            "roundhouse_discovery_changes_total",
            &[("backend", "es"), ("change", "joined")]
        ),
        2.0
    );

    // Seeded with the dedicated manager alone (operators often list the managers): it is asked,
    // never given a client, and the three data nodes are found through it.
    let mut rh = serve(discovering(&[cluster.node("m1")], 3)).await;
    rh.notify
        .wait_for_status(
            &[
                "serving 1 listener; es: 3/3 servers up, 1 excluded by roles \
               (m1: dedicated cluster-manager node: not a client entry point)",
            ],
            NOTICE,
        )
        .await;
    let addr = rh.listener("es").await;
    assert_served_by(addr, 9, &["n1", "n2", "n3"]).await;
    assert_eq!(connections(&rh, "m1").await, 0.0);
    assert_eq!(last_refresh(&rh).await["source"], "m1");
}

#[tokio::test]
#[ignore = "real OpenSearch nodes: needs Java 17 and Maven; cargo test --test opensearch -- --ignored"]
async fn a_node_that_joins_the_cluster_gets_clients_without_a_reload() {
    const INTERVAL: Duration = Duration::from_secs(1); // discovery and checks alike
    const RISE: u32 = 2;
    let _turn = take_turn().await;
    let mut cluster = three_data_nodes_and_a_manager().await;
    let mut rh = serve(discovering(&[cluster.node("n1")], 3)).await;
    rh.notify
        .wait_for_status(&["serving 1 listener; es: 3/3 servers up"], NOTICE)
        .await;
    let addr = rh.listener("es").await;

    // watch the cluster from n1 while the fifth node starts: when does it join?
    let n1 = cluster.node("n1").http;
    let membership = tokio::spawn(async move {
        loop {
            let (_, h) = call(n1, "GET", "/_cluster/health?local=true", None).await;
            if h["number_of_nodes"] == 5 {
                return Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let asked = Instant::now();
    cluster.add("n5", &[]).await;
    let http_ready = Instant::now();
    // a client keeps connecting through roundhouse until one reaches n5
    let deadline = Instant::now() + NOTICE * 2;
    let first_client = loop {
        if node_name(addr).await.expect("request through roundhouse") == "n5" {
            break Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "n5 got no client connection; roundhouse's log:\n{}",
            rh.stderr.text()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let in_cluster = tokio::time::timeout(NOTICE, membership)
        .await
        .expect("n1 sees n5 join")
        .expect("membership task");
    let line = joined(&rh, "n5").await;
    let (id, _) = itself(cluster.node("n5")).await;
    assert!(
        line.contains(&format!("node n5 (id {id}) joined at ")),
        "{line}"
    );
    let since = |t: Instant| {
        first_client
            .checked_duration_since(t)
            .map_or_else(|| "-".to_owned(), |d| format!("{d:?}"))
    };
    eprintln!(
        "n5: JVM start to HTTP ready {:?}; joined the cluster {} after HTTP ready; first client \
         connection through roundhouse {} after it joined the cluster, {} after HTTP ready",
        http_ready - asked,
        in_cluster
            .checked_duration_since(http_ready)
            .map_or_else(|| "before HTTP was ready".to_owned(), |d| format!("{d:?}")),
        since(in_cluster),
        since(http_ready),
    );
    let bound = INTERVAL + INTERVAL * RISE;
    let joined_to_client = first_client.saturating_duration_since(in_cluster);
    assert!(
        joined_to_client <= bound + Duration::from_secs(2),
        "interval + rise x check interval = {bound:?}, plus slack for a busy machine; took {joined_to_client:?}"
    );
    rh.notify
        .wait_for_status(&["serving 1 listener; es: 4/4 servers up"], NOTICE)
        .await;
    assert_served_by(addr, 8, &["n1", "n2", "n3", "n5"]).await;
    assert_eq!(
        rh.stderr.count("configuration reloaded"),
        0,
        "no reload was needed"
    );
}

#[tokio::test]
#[ignore = "real OpenSearch nodes: needs Java 17 and Maven; cargo test --test opensearch -- --ignored"]
async fn a_node_stopped_for_good_leaves_rotation_at_once_and_the_server_set_after_the_absence_rule()
{
    const FORGET_AFTER: u32 = 3;
    let _turn = take_turn().await;
    let cluster = Cluster::start("prod", "n", 3).await;
    let mut rh = serve(discovering(&[cluster.node("n1")], FORGET_AFTER)).await;
    rh.notify
        .wait_for_status(&["serving 1 listener; es: 3/3 servers up"], NOTICE)
        .await;
    let addr = rh.listener("es").await;
    let (id, _) = itself(cluster.node("n3")).await;

    rh.notify.drain();
    let n1 = cluster.node("n1").http;
    let stopped = Instant::now();
    cluster.node("n3").kill().await;
    let membership = tokio::spawn(async move {
        loop {
            let (_, h) = call(n1, "GET", "/_cluster/health?local=true", None).await;
            if h["number_of_nodes"] == 2 {
                return Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    // `/_nodes/_all/http` asks every node: a dead one is missing from the answer at once,
    // before the cluster drops it, so its absence is counted from its death
    let answer = ok(n1, "GET", "/_nodes/_all/http", None).await;
    let listed: Vec<&str> = answer["nodes"]
        .as_object()
        .map(|m| m.values().filter_map(|n| n["name"].as_str()).collect())
        .unwrap_or_default();
    assert!(!listed.contains(&"n3"), "{answer}");
    let down = rh
        .notify
        .wait_status(&["DEGRADED: es: 2/3 servers up (n3: "], NOTICE)
        .await;
    let out = stopped.elapsed();
    assert_eq!(
        down,
        "DEGRADED: es: 2/3 servers up (n3: connection refused)"
    );
    assert_served_by(addr, 6, &["n1", "n2"]).await;
    let left = rh
        .stderr
        .wait_for(&[&format!("node n3 (id {id}) left the server set")], NOTICE)
        .await;
    let forgotten = stopped.elapsed();
    assert!(
        left.contains(&format!(
            "absent from {FORGET_AFTER} answers in a row and failing its checks"
        )),
        "{left}"
    );
    rh.notify
        .wait_for_status(&["serving 1 listener; es: 2/2 servers up"], NOTICE)
        .await;
    let gone = tokio::time::timeout(NOTICE, membership)
        .await
        .expect("n1 sees n3 leave")
        .expect("membership task")
        - stopped;
    eprintln!(
        "kill -9 of discovered n3: missing from n1's /_nodes/_all/http at once ({}); out of \
         rotation after {out:?} ({down}); out of the cluster (n1 sees 2 nodes) after {gone:?}; \
         out of the server set after {forgotten:?}: {left}",
        answer["_nodes"]
    );
    assert!(
        out <= Duration::from_secs(4),
        "fall 2 x 1s, with slack: {out:?}"
    );
    assert!(
        forgotten >= out && forgotten >= Duration::from_secs(1) * (FORGET_AFTER - 1),
        "left only once out of rotation, and after {FORGET_AFTER} answers without it (at least \
         {} intervals after it died): {forgotten:?}",
        FORGET_AFTER - 1
    );
    let st = status(rh.admin().await).await;
    assert_eq!(
        server_set(&st),
        set_of(&[("n1", "configured"), ("n2", "discovered")])
    );
    let m = Scrape::from(rh.admin().await).await;
    assert_eq!(
        m.get(
            "roundhouse_discovery_changes_total",
            &[("backend", "es"), ("change", "left")]
        ),
        1.0
    );
    assert_served_by(addr, 6, &["n1", "n2"]).await;
}

#[tokio::test]
#[ignore = "real OpenSearch nodes: needs Java 17 and Maven; cargo test --test opensearch -- --ignored"]
async fn a_node_restarted_on_a_new_http_port_keeps_its_name_and_counters() {
    let _turn = take_turn().await;
    let mut cluster = Cluster::start("prod", "n", 3).await;
    // long enough for a JVM to restart: the node is not forgotten meanwhile
    let mut rh = serve(discovering(&[cluster.node("n1")], 60)).await;
    rh.notify
        .wait_for_status(&["serving 1 listener; es: 3/3 servers up"], NOTICE)
        .await;
    let addr = rh.listener("es").await;
    assert_served_by(addr, 9, &["n1", "n2", "n3"]).await;
    let before = connections(&rh, "n3").await;
    assert_eq!(before, 3.0);
    let (id, _) = itself(cluster.node("n3")).await;
    let old = cluster.node("n3").http;

    let new_port = free_port();
    rh.notify.drain();
    rh.notify.clear();
    let restarting = Instant::now();
    cluster
        .restart("n3", &[format!("http.port={new_port}")])
        .await;
    let http_ready = restarting.elapsed();
    let n3 = cluster.node("n3");
    assert_eq!(n3.http.port(), new_port);
    assert_eq!(itself(n3).await.0, id, "OpenSearch kept the node id");
    let moved = rh
        .stderr
        .wait_for(
            &[&format!(
                "node n3 (id {id}) moved from {old} to {}",
                n3.http
            )],
            NOTICE,
        )
        .await;
    let moved_after = restarting.elapsed();
    rh.notify
        .wait_for_status(&["serving 1 listener; es: 3/3 servers up"], NOTICE)
        .await;
    let back = restarting.elapsed();
    eprintln!(
        "n3 restarted from {old} to {}: HTTP ready after {http_ready:?}, moved after \
         {moved_after:?} ({moved}), back in rotation after {back:?}; statuses meanwhile: {:?}",
        n3.http,
        rh.notify.messages()
    );
    assert_served_by(addr, 9, &["n1", "n2", "n3"]).await;
    assert_eq!(
        connections(&rh, "n3").await,
        before + 3.0,
        "counters carried"
    );
    let st = status(rh.admin().await).await;
    let s = server(&st, "es", "n3");
    assert_eq!(s["node_id"], id.as_str(), "{s:#}");
    assert_eq!(s["resolved"], n3.http.to_string(), "{s:#}");
    assert_eq!(s["source"], "discovered");
    assert_eq!(
        rh.stderr.count("joined at"),
        2,
        "n2 and n3 joined once each"
    );
    assert_eq!(rh.stderr.count("left the server set"), 0);
    let m = Scrape::from(rh.admin().await).await;
    assert_eq!(
        m.get(
            "roundhouse_discovery_changes_total",
            &[("backend", "es"), ("change", "moved")]
        ),
        1.0
    );
}

#[tokio::test]
#[ignore = "real OpenSearch nodes: needs Java 17 and Maven; cargo test --test opensearch -- --ignored"]
async fn an_isolated_node_listed_as_a_seed_never_changes_the_server_set() {
    let _turn = take_turn().await;
    let cluster = Cluster::start("prod", "n", 3).await;
    let lone = lone_node("prod", "n4").await;
    // what the isolated node would say if asked: a cluster `prod` of one, itself
    let (code, its_answer) = call(lone.http, "GET", "/_nodes/_all/http", None).await;
    assert_eq!(code, 200);
    assert_eq!(its_answer["cluster_name"], "prod");
    assert_eq!(its_answer["nodes"].as_object().map(|n| n.len()), Some(1));

    // The isolated node is the only seed that answers: the real seed n1 is frozen.
    cluster.node("n1").freeze();
    let mut rh = serve(discovering(&[&lone, cluster.node("n1")], 3)).await;
    let alone = rh
        .notify
        .wait_for_status(&["DOWN: es: no healthy server"], NOTICE)
        .await;
    let refused = rh
        .stderr
        .wait_for(
            &["discovery took no answer; the server set stays as it is"],
            NOTICE,
        )
        .await;
    assert!(
        refused.contains(
            "no server passes the full Elasticsearch judgement (right cluster, enough nodes, a master), so none is asked"
        ),
        "{refused}"
    );
    let st = status(rh.admin().await).await;
    assert_eq!(
        server_set(&st),
        set_of(&[("n1", "configured"), ("n4", "configured")])
    );
    let d = &last_refresh(&rh).await;
    assert_eq!(d["result"], "no_source", "{d:#}");
    assert_closed_at_once(rh.listener("es").await).await;
    eprintln!(
        "only the isolated seed answers: {alone}; discovery: {}; log: {refused}",
        d["reason"]
    );

    // Without min_nodes the isolated node would pass the judgement, be asked and serve every
    // client: discovery without `min_nodes: 2` or more is a configuration error
    // (tests/config.rs, discovery_is_only_for_checks_that_name_the_cluster_and_a_quorum).

    // The real seed answers again: the cluster is found through it, never through n4.
    cluster.node("n1").thaw();
    rh.notify
        .wait_for_status(
            &["DEGRADED: es: 3/4 servers up (n4: sees 1 node, want at least 2 (isolated?))"],
            NOTICE,
        )
        .await;
    let addr = rh.listener("es").await;
    for _ in 0..5 {
        let st = status(rh.admin().await).await;
        assert_eq!(
            server_set(&st),
            set_of(&[
                ("n1", "configured"),
                ("n2", "discovered"),
                ("n3", "discovered"),
                ("n4", "configured")
            ])
        );
        let last = &st["backends"][0]["discovery"]["last_refresh"];
        assert_ne!(last["source"], "n4", "{last:#}");
        assert_eq!(last["nodes"], 3, "{last:#}");
        assert_served_by(addr, 6, &["n1", "n2", "n3"]).await;
        tokio::time::sleep(Duration::from_secs(1)).await; // one more refresh
    }
    assert_eq!(connections(&rh, "n4").await, 0.0);
    assert_eq!(rh.stderr.count("left the server set"), 0);
}

#[tokio::test]
#[ignore = "real OpenSearch nodes: needs Java 17 and Maven; cargo test --test opensearch -- --ignored"]
async fn a_node_that_publishes_an_address_that_does_not_answer_is_named_with_it() {
    let _turn = take_turn().await;
    let nobody = free_port();
    let publish_port = format!("http.publish_port={nobody}");
    let cluster = Cluster::start_nodes(
        "prod",
        &[
            ("n1", &[]),
            // the other form of publish address: hostname/ip:port
            ("n2", &["http.publish_host=localhost"]),
            ("n3", &[&publish_port]),
        ],
    )
    .await;
    let (_, n2) = itself(cluster.node("n2")).await;
    let n2_publishes = format!("localhost/{}", cluster.node("n2").http);
    assert_eq!(n2["http"]["publish_address"], n2_publishes.as_str(), "{n2}");
    let published = format!("127.0.0.1:{nobody}");
    let (_, n3) = itself(cluster.node("n3")).await;
    assert_eq!(n3["http"]["publish_address"], published.as_str(), "{n3}");

    let rh = front(
        discovering(&[cluster.node("n1")], 3),
        "DEGRADED: es: 2/3 servers up (n3: ",
    )
    .await;
    let why = format!(
        "publishes {published}, which does not answer (connection refused; a container-internal \
         address? set http.publish_host on the node)"
    );
    assert_eq!(
        rh.notify.last_status().unwrap(),
        format!("DEGRADED: es: 2/3 servers up (n3: {why})")
    );
    let st = status(rh.admin().await).await;
    assert_eq!(server(&st, "es", "n3")["reason"], why.as_str());
    assert!(
        joined(&rh, "n3")
            .await
            .contains(&format!("joined at {published}"))
    );
    assert!(
        joined(&rh, "n2")
            .await
            .contains(&format!("joined at {n2_publishes}"))
    );
    let addr = rh.listener("es").await;
    assert_served_by(addr, 6, &["n1", "n2"]).await;
    assert_eq!(connections(&rh, "n3").await, 0.0);
}
