//! The operator's rolling restart of a real 3-node OpenSearch 2.19 cluster behind roundhouse,
//! while a real application (opensearch-py, retries off) indexes and searches back to back: the
//! README's "Rolling restart" recipe, step by step, with the figures it quotes.
//!
//! Ignored in a plain `cargo test` (it needs Java 17, Maven and opensearch-py, and a few
//! minutes). Run it with `cargo test --test rolling_restart -- --ignored`; `.ci/run` does.

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use common::net::http_send;
use common::opensearch::{Cluster, Node, call, ok, take_turn};
use common::process::Lines;
use common::scrape::{server, status};
use common::*;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin, Command};

/// Long enough for a busy machine running three JVMs to notice what the engine does.
const NOTICE: Duration = Duration::from_secs(30);

/// `drain --wait` must return this soon after the node's last response, and after it was typed
/// beyond the last request it found in flight (the engine's time to answer is not roundhouse's).
const DRAIN_AT_MOST: Duration = Duration::from_secs(1);

/// The backend of the README's rolling restart: node-local cluster health, cluster `prod`, at
/// least 2 nodes, every second with a 1s timeout (rise 2, fall 3). `fall: 3` is the default:
/// while the nodes elect a new cluster manager they answer that they have none, for 2 to 2.5s
/// on a busy 2-core machine, and with `fall: 2` two nodes at once left rotation that way.
fn backend(nodes: &[Node]) -> Backend {
    nodes
        .iter()
        .fold(Backend::new("es"), |b, n| b.server(&n.name, n.http))
        .check("interval", "1s")
        .check("timeout", "1s")
        .check("fall", "3")
        .check("cluster_name", "prod")
        .check("min_nodes", "2")
}

/// `roundhouse ARGS` typed by the operator, against this roundhouse's admin endpoint.
async fn roundhouse(rh: &Roundhouse, args: &[&str]) -> (i32, String, String) {
    let admin = rh.admin().await.to_string();
    let config = rh.config.display().to_string();
    let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    all.extend(["--admin".into(), admin, "--config".into(), config]);
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = all.iter().map(String::as_str).collect();
        run_cli(&args, &[])
    })
    .await
    .expect("run the CLI")
}

/// Like `roundhouse`, and the command must succeed; returns its output.
async fn operator(rh: &Roundhouse, args: &[&str]) -> String {
    let (code, out, err) = roundhouse(rh, args).await;
    assert_eq!(code, 0, "roundhouse {args:?}: {out}{err}");
    out
}

/// Waits until `roundhouse status --json` gives the server this health.
async fn wait_health(rh: &Roundhouse, node: &str, health: &str) {
    let started = Instant::now();
    loop {
        let out = operator(rh, &["status", "--json"]).await;
        let st: Value = serde_json::from_str(&out).expect("status --json is JSON");
        if server(&st, "es", node)["health"] == health {
            return;
        }
        assert!(
            started.elapsed() < NOTICE,
            "roundhouse never saw {node} {health}: {:#}",
            server(&st, "es", node)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The application: `rolling_load.py` with its commands on stdin and its lines on stdout.
struct App {
    child: Child,
    stdin: ChildStdin,
    out: Lines,
    ids_file: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl App {
    /// Starts the application against `addr`; returns once each of its workers had an answer.
    async fn start(addr: SocketAddr, index: &str) -> App {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/opensearch-client/rolling_load.py"
        );
        let python = std::env::var("ROUNDHOUSE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
        let dir = tempfile::tempdir().expect("temp dir");
        let ids_file = dir.path().join("acknowledged-ids");
        let mut child = Command::new(&python)
            .arg(script)
            .args(["127.0.0.1", &addr.port().to_string(), index])
            .arg(&ids_file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("run {python} (needs opensearch-py from PyPI): {e}"));
        let stdin = child.stdin.take().expect("piped stdin");
        let out = Lines::capture(child.stdout.take().expect("piped stdout"));
        out.wait_for(&["running"], NOTICE).await;
        App {
            child,
            stdin,
            out,
            ids_file,
            _dir: dir,
        }
    }

    /// Requests done and failed so far.
    async fn count(&mut self) -> (u64, u64) {
        let before = self.out.count("count ");
        self.stdin
            .write_all(b"count\n")
            .await
            .expect("ask for a count");
        self.out.wait_count("count ", before + 1, NOTICE).await;
        let line = self
            .out
            .all()
            .into_iter()
            .filter(|l| l.starts_with("count "))
            .nth(before)
            .expect("the count asked for");
        let mut n = line
            .split(' ')
            .skip(1)
            .map(|n| n.parse().expect("count N F"));
        (n.next().expect("requests"), n.next().expect("failures"))
    }

    /// The lines it printed so far that start with `what` (`failure `, `partial `).
    fn reported(&self, what: &str) -> Vec<String> {
        self.out
            .all()
            .into_iter()
            .filter(|l| l.starts_with(what))
            .collect()
    }

    /// Stops the workers; returns the summary and the ids of the acknowledged documents.
    async fn stop(mut self) -> (Value, Vec<String>) {
        self.stdin
            .write_all(b"stop\n")
            .await
            .expect("tell it to stop");
        let exit = tokio::time::timeout(NOTICE, self.child.wait())
            .await
            .expect("the application stops")
            .expect("its exit status");
        let summary = self.out.wait_for(&["\"requests\""], NOTICE).await;
        let summary: Value = serde_json::from_str(&summary).expect("JSON summary");
        eprintln!("application: {summary} ({exit})");
        let ids = std::fs::read_to_string(&self.ids_file).expect("acknowledged ids");
        (summary, ids.lines().map(str::to_owned).collect())
    }
}

/// The time of the newest access-log line of `node`'s connections, once there is one line for
/// each of the `connections` it ever had (the log line follows the close by microseconds).
async fn last_close(rh: &Roundhouse, node: &str, connections: usize) -> SystemTime {
    let needle = format!("-> es/{node} ");
    rh.stderr.wait_count(&needle, connections, NOTICE).await;
    rh.stderr
        .all()
        .iter()
        .filter(|l| l.contains(&needle))
        .filter_map(|l| humantime::parse_rfc3339_weak(l.split_whitespace().next()?).ok())
        .max()
        .expect("access-log lines start with their time")
}

/// roundhouse's access-log lines, one per client connection, in order.
fn access_log(rh: &Roundhouse) -> String {
    let lines: Vec<String> = rh
        .stderr
        .all()
        .into_iter()
        .filter(|l| l.contains(" -> es/"))
        .collect();
    lines.join("\n")
}

/// roundhouse's log lines of servers changing state (drain, down with the reason, up, ready).
fn state_changes(rh: &Roundhouse) -> String {
    let lines: Vec<String> = rh
        .stderr
        .all()
        .into_iter()
        .filter(|l| {
            [
                "server is down",
                "server is up again",
                "changed by the admin API",
            ]
            .iter()
            .any(|w| l.contains(w))
        })
        .collect();
    lines.join("\n")
}

/// `METHOD path` through `addr`, which must succeed; its answer may be empty.
async fn done(addr: SocketAddr, method: &str, path: &str) {
    let (code, body) = http_send(addr, method, path, None)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    assert!((200..300).contains(&code), "{method} {path}: {code} {body}");
}

/// Takes `node` out of the cluster's voting configuration and waits until another node is the
/// elected cluster manager. If `node` was the manager, it hands the role over now, while it still
/// runs: the others need not first notice that it is gone.
async fn hand_over(addr: SocketAddr, node: &str) {
    let path = format!("/_cluster/voting_config_exclusions?node_names={node}&timeout=30s");
    done(addr, "POST", &path).await;
    let started = Instant::now();
    loop {
        let manager = elected_manager(addr).await;
        if manager != node {
            return;
        }
        assert!(
            started.elapsed() < NOTICE,
            "{node} is still the elected cluster manager"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Clears the voting configuration exclusions (the restarted node has rejoined: it votes again).
async fn clear_voting_exclusions(addr: SocketAddr) {
    let path = "/_cluster/voting_config_exclusions?wait_for_removal=false";
    done(addr, "DELETE", path).await;
}

/// Samples the requests in flight to `node` in `/status` every 20ms until `stop` fires; returns
/// when, after `since`, the last sample that saw one was taken (zero if none did).
async fn last_busy(
    admin: SocketAddr,
    node: String,
    since: Instant,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> Duration {
    let mut busy = Duration::ZERO;
    loop {
        let taken = since.elapsed();
        let st = status(admin).await;
        if server(&st, "es", &node)["requests_in_flight"].as_i64() > Some(0) {
            busy = taken;
        }
        tokio::select! {
            _ = &mut stop => return busy,
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
}

/// Keeps shards off `node` (`None`: off no node), through roundhouse.
async fn exclude(addr: SocketAddr, node: Option<&str>) {
    let body = serde_json::json!({
        "persistent": { "cluster.routing.allocation.exclude._name": node }
    });
    ok(addr, "PUT", "/_cluster/settings", Some(&body.to_string())).await;
}

/// Waits until `node` holds no shard copy, not even one on its way off it (`_cat/shards` names
/// a relocating shard's source and target in one column: `n3 -> 127.0.0.1 <id> n1`).
async fn wait_no_shards(addr: SocketAddr, node: &str) {
    let started = Instant::now();
    let path = "/_cat/shards?format=json&h=index,shard,prirep,state,node";
    loop {
        let shards = ok(addr, "GET", path, None).await;
        let on_it: Vec<&Value> = shards
            .as_array()
            .expect("_cat/shards is an array")
            .iter()
            .filter(|s| {
                s["state"] != "STARTED"
                    || s["node"]
                        .as_str()
                        .is_some_and(|n| n.split_whitespace().any(|w| w == node))
            })
            .collect();
        if on_it.is_empty() {
            return;
        }
        assert!(
            started.elapsed() < NOTICE * 3,
            "{node} still holds (or shards still move): {on_it:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The name of the elected cluster manager, asked through roundhouse.
async fn elected_manager(addr: SocketAddr) -> String {
    let answer = ok(
        addr,
        "GET",
        "/_cat/cluster_manager?format=json&h=node",
        None,
    )
    .await;
    answer[0]["node"]
        .as_str()
        .unwrap_or_else(|| panic!("_cat/cluster_manager names a node: {answer}"))
        .to_owned()
}

/// The node to restart next among those not restarted yet: the elected cluster manager last.
/// Its turn makes the others elect a new one, and meanwhile a node may answer that it has no
/// master, which takes it out of rotation too (2 to 2.5s in our runs) and moves its keep-alive
/// clients to the nodes left: restarting the manager last makes that happen once, not at every
/// turn.
async fn next_node(addr: SocketAddr, nodes: &[Node], done: &[usize]) -> usize {
    let manager = elected_manager(addr).await;
    let left: Vec<usize> = (0..nodes.len()).filter(|i| !done.contains(i)).collect();
    let pick = left
        .iter()
        .copied()
        .find(|&i| nodes[i].name != manager)
        .unwrap_or(left[0]);
    eprintln!(
        "{}: next (elected cluster manager: {manager})",
        nodes[pick].name
    );
    pick
}

/// Waits until the cluster is green with no shard moving.
async fn wait_settled(addr: SocketAddr) {
    let path =
        "/_cluster/health?wait_for_status=green&wait_for_no_relocating_shards=true&timeout=90s";
    let (code, health) = call(addr, "GET", path, None).await;
    assert_eq!(
        (code, &health["status"], &health["relocating_shards"]),
        (200, &"green".into(), &0.into()),
        "{health}"
    );
}

/// What one node's turn measured.
struct Turn {
    node: String,
    handed_over: Duration,
    shards_moved: Duration,
    open_at_drain: u64,
    drain: Duration,
    /// When, after the drain was typed, a request to the node was last seen in flight.
    busy: Duration,
    after_last_response: Duration,
    out_of_rotation: Duration,
    down: Duration,
    requests: u64,
    failed: u64,
}

/// One node's turn in the rolling restart, exactly as the README's recipe says.
async fn restart_in_turn(
    rh: &Roundhouse,
    addr: SocketAddr,
    node: &mut Node,
    app: &mut App,
) -> Turn {
    let name = node.name.clone();
    let (requests_before, failed_before) = app.count().await;

    // 0. out of the voting configuration: an elected cluster manager hands its role over first
    let handed = Instant::now();
    hand_over(addr, &name).await;
    let handed_over = handed.elapsed();

    // 1. its shards move to the other nodes: no search or write of the engine's own runs on it
    // when it stops (OpenSearch fails a search whose fetch phase meets a node that just left)
    let excluded = Instant::now();
    exclude(addr, Some(&name)).await;
    wait_no_shards(addr, &name).await;
    let shards_moved = excluded.elapsed();

    // 2. drain: no new connections; pooled keep-alive ones close at their next idle point
    let drain_started = Instant::now();
    eprintln!(
        "{name}: roundhouse drain at {}",
        humantime::format_rfc3339_micros(SystemTime::now())
    );
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let sampler = tokio::spawn(last_busy(
        rh.admin().await,
        name.clone(),
        drain_started,
        stopped,
    ));
    let out = operator(rh, &["drain", "es", &name, "--wait", "--timeout", "60s"]).await;
    let drain = drain_started.elapsed();
    let _ = stop.send(());
    let busy = sampler.await.expect("the sampler of requests in flight");
    let drained_at = SystemTime::now();
    eprintln!("{out}");
    let open_at_drain: u64 = out
        .split(" open connection(s)")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("drain says how many connections were open: {out}"));
    let st = status(rh.admin().await).await;
    let total = server(&st, "es", &name)["connections_total"]
        .as_u64()
        .expect("connections_total");
    let last = last_close(rh, &name, total as usize).await;
    let after_last_response = drained_at.duration_since(last).unwrap_or_default();

    // 3. stop the node (SIGTERM, as systemctl stop does) and wait until roundhouse has it down
    let stopped = Instant::now();
    let exit = node.terminate().await;
    assert!(exit.success(), "{name} stopped cleanly: {exit}");
    wait_health(rh, &name, "down").await;

    // 4. start it again on its data; it rejoins the cluster; wait until roundhouse has it up
    node.start_again().await;
    wait_health(rh, &name, "up").await;
    let down = stopped.elapsed();

    // 5. back in rotation
    operator(rh, &["ready", "es", &name]).await;
    let out_of_rotation = drain_started.elapsed();

    // 6. it votes again; shards may go back to it; the cluster green, nothing moving, before
    // the next node
    clear_voting_exclusions(addr).await;
    exclude(addr, None).await;
    wait_settled(addr).await;

    let (requests_after, failed_after) = app.count().await;
    Turn {
        node: name,
        handed_over,
        shards_moved,
        open_at_drain,
        drain,
        busy,
        after_last_response,
        out_of_rotation,
        down,
        requests: requests_after - requests_before,
        failed: failed_after - failed_before,
    }
}

/// Every id is a document of `index`, asked for through `addr` in batches.
async fn missing(addr: SocketAddr, index: &str, ids: &[String]) -> Vec<String> {
    let mut missing = Vec::new();
    for batch in ids.chunks(500) {
        let body = serde_json::json!({ "ids": batch }).to_string();
        let path = format!("/{index}/_mget?_source=false");
        let answer = ok(addr, "POST", &path, Some(&body)).await;
        for doc in answer["docs"].as_array().expect("mget docs") {
            if doc["found"] != true {
                missing.push(doc["_id"].as_str().unwrap_or("?").to_owned());
            }
        }
    }
    missing
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real OpenSearch nodes and opensearch-py: cargo test --test rolling_restart -- --ignored"]
async fn a_rolling_restart_fails_no_request_of_a_client_without_retries() {
    let _turn = take_turn().await;
    let started = Instant::now();
    let mut cluster = Cluster::start("prod", "n", 3).await;
    let config = ConfigBuilder::new()
        .top("access_log: true")
        .listener("es", "es")
        .backend(backend(&cluster.nodes));
    let mut rh = Roundhouse::start(&config.yaml()).await;
    rh.notify
        .wait_for_status(&["es: 3/3 servers up"], NOTICE)
        .await;
    let addr = rh.listener("es").await;
    let settings = r#"{"settings":{"number_of_shards":3,"number_of_replicas":1}}"#;
    ok(addr, "PUT", "/load", Some(settings)).await;
    ok(
        addr,
        "GET",
        "/_cluster/health/load?wait_for_status=green&timeout=60s",
        None,
    )
    .await;

    let mut app = App::start(addr, "load").await;
    let mut turns = Vec::new();
    let mut done = Vec::new();
    while done.len() < cluster.nodes.len() {
        let next = next_node(addr, &cluster.nodes, &done).await;
        done.push(next);
        let turn = restart_in_turn(&rh, addr, &mut cluster.nodes[next], &mut app).await;
        eprintln!(
            "{}: out of the voting configuration in {:.1}s, shards moved off in {:.1}s; drain \
             --wait {:.3}s ({} open connections, a request in flight until {:.3}s; {:.3}s \
             after its last response), out of rotation {:.1}s (down {:.1}s), {} requests \
             meanwhile, {} failed",
            turn.node,
            turn.handed_over.as_secs_f64(),
            turn.shards_moved.as_secs_f64(),
            turn.drain.as_secs_f64(),
            turn.open_at_drain,
            turn.busy.as_secs_f64(),
            turn.after_last_response.as_secs_f64(),
            turn.out_of_rotation.as_secs_f64(),
            turn.down.as_secs_f64(),
            turn.requests,
            turn.failed
        );
        turns.push(turn);
    }
    let failures = app.reported("failure ");
    for partial in app.reported("partial ") {
        eprintln!("a search answered in part: {partial}");
    }
    let (summary, acked) = app.stop().await;
    eprintln!("roundhouse's state changes:\n{}", state_changes(&rh));
    let by_drain = rh.stderr.count("idle_close (drain)");
    // a node that has no master while the others elect one is down by its checks for a while
    let by_down = rh.stderr.count("idle_close (down)");
    eprintln!(
        "rolling restart of 3 nodes: {} requests ({} documents indexed, {} searches), {} failed; \
         connections closed at an idle point: {by_drain} by a drain, {by_down} by a node down; \
         {:.0}s in all",
        summary["requests"],
        summary["indexed"],
        summary["searches"],
        summary["failures"],
        started.elapsed().as_secs_f64()
    );

    assert!(
        failures.is_empty(),
        "failed requests:\n{}\nroundhouse's access log:\n{}",
        failures.join("\n"),
        access_log(&rh)
    );
    assert_eq!(summary["failures"], 0, "{summary}");
    // with its shards moved off first, no search meets the stopping node
    assert_eq!(summary["partial_searches"], 0, "{summary}");
    for t in &turns {
        assert!(
            t.open_at_drain > 0,
            "{}: the client had a pooled connection on it when it was drained",
            t.node
        );
        // a request in flight is answered before its connection closes: how long the engine
        // takes to answer it (0.83s seen on a busy machine) is not roundhouse's to shorten
        assert!(
            t.drain.saturating_sub(t.busy) < DRAIN_AT_MOST && t.after_last_response < DRAIN_AT_MOST,
            "{}: drain --wait took {:?} (a request in flight until {:?}), {:?} after the last \
             response",
            t.node,
            t.drain,
            t.busy,
            t.after_last_response
        );
    }
    ok(addr, "POST", "/load/_refresh", None).await;
    let count = ok(addr, "GET", "/load/_count", None).await;
    assert_eq!(count["count"], acked.len(), "{count}");
    assert_eq!(summary["indexed"], acked.len(), "{summary}");
    let lost = missing(addr, "load", &acked).await;
    eprintln!(
        "{} acknowledged documents, {} in the index after a refresh, {} of them missing",
        acked.len(),
        count["count"],
        lost.len()
    );
    assert!(lost.is_empty(), "acknowledged but missing: {lost:?}");
}
