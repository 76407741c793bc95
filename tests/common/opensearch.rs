//! Real OpenSearch 2.19 nodes for the real-cluster tests: the fixture in
//! `tests/fixtures/opensearch-node` built once with Maven, one JVM per node as a child process
//! (so a test can `kill -9`, freeze or restart one), and a few calls to their REST API.
//!
//! Every node is killed when its `Node` is dropped, also when a test fails: no stray JVM.

use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::common::net::http_send;
use crate::common::process::{Lines, field};

/// How long a node may take to start and a cluster to form on a busy 2-core machine.
pub const FORMING: Duration = Duration::from_secs(90);

/// Fault detection in a few seconds instead of the default ~30s, so a killed or frozen node
/// leaves its cluster (and the cluster's health shows it) within a test's patience.
const FAST_FAULT_DETECTION: &[&str] = &[
    "cluster.fault_detection.leader_check.interval=500ms",
    "cluster.fault_detection.leader_check.timeout=1s",
    "cluster.fault_detection.leader_check.retry_count=2",
    "cluster.fault_detection.follower_check.interval=500ms",
    "cluster.fault_detection.follower_check.timeout=1s",
    "cluster.fault_detection.follower_check.retry_count=2",
    "cluster.publish.timeout=2s",
    "discovery.find_peers_interval=200ms",
];

/// The fixture directory, with the launcher built (`mvn -q package`, skipped while the build is
/// newer than its sources).
pub fn fixture() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/opensearch-node");
        let class = dir.join("target/classes/roundhouse/fixture/OpenSearchNode.class");
        let sources = [
            dir.join("pom.xml"),
            dir.join("src/main/java/roundhouse/fixture/OpenSearchNode.java"),
        ];
        let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let fresh = modified(&class).is_some_and(|built| {
            sources
                .iter()
                .all(|s| modified(s).is_some_and(|m| m <= built))
        }) && dir.join("target/lib").is_dir();
        if !fresh {
            let status = std::process::Command::new("mvn")
                .args(["-q", "-B", "package"])
                .current_dir(&dir)
                .status()
                .expect("run mvn (these tests need Java 17 and Maven: see README)");
            assert!(
                status.success(),
                "mvn package of the fixture failed: {status}"
            );
        }
        dir
    })
}

/// Holds the machine for one test's cluster: a 2-core machine runs one cluster at a time, also
/// when the test harness runs tests in parallel.
pub async fn take_turn() -> tokio::sync::MutexGuard<'static, ()> {
    static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    TURN.lock().await
}

/// A port nobody listens on right now (for a transport port that other nodes must know in
/// advance, a seed that leads nowhere, or a node's HTTP port that must stay the same across a
/// restart). Taken below the kernel's ephemeral range: a port from that range can become the
/// local port of any outgoing connection before the node binds it (or binds it again).
pub fn free_port() -> u16 {
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_start.max(10_001));
    let span = u64::from(high - low);
    let start = RandomState::new().hash_one(std::process::id()) % span;
    (0..span)
        .map(|i| low + ((start + i) % span) as u16)
        .find(|&p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
        .expect("a free port below the ephemeral range")
}

/// What a node is told at start: its cluster, its name, its transport port, where to look for
/// peers, which nodes may bootstrap the cluster, and any other node settings
/// (`node.roles=cluster_manager`, `http.publish_port=9`), which come last and win.
#[derive(Clone)]
pub struct NodeSpec {
    pub cluster: String,
    pub name: String,
    pub transport_port: u16,
    pub seeds: Vec<u16>,
    pub initial_managers: Vec<String>,
    pub settings: Vec<String>,
}

/// One real OpenSearch node (a JVM); killed when dropped.
pub struct Node {
    pub name: String,
    /// Where its HTTP port is bound (which is not what it publishes when `http.publish_port`
    /// says otherwise).
    pub http: SocketAddr,
    pub stderr: Lines,
    spec: NodeSpec,
    child: Child,
    dir: tempfile::TempDir,
}

impl Node {
    /// Starts a node and waits until its HTTP port is ready (not until it joined a cluster).
    pub async fn start(spec: NodeSpec) -> Node {
        let dir = tempfile::tempdir().expect("node dir");
        Node::start_in(spec, dir).await
    }

    /// Kills the node (`kill -9`) and starts it again on the same data path, so it keeps its
    /// node id, with `settings` added to the ones it had (e.g. another `http.port`).
    pub async fn restart(mut self, settings: &[String]) -> Node {
        self.kill().await;
        self.child.wait().await.expect("the killed node is reaped");
        let mut spec = self.spec.clone();
        spec.settings.extend_from_slice(settings);
        Node::start_in(spec, self.dir).await
    }

    async fn start_in(spec: NodeSpec, dir: tempfile::TempDir) -> Node {
        let (child, stderr, http) = Self::launch(&spec, dir.path(), free_port()).await;
        Node {
            name: spec.name.clone(),
            http,
            stderr,
            child,
            spec,
            dir,
        }
    }

    /// Starts the JVM of a node on `dir` and waits for its READY line; returns the child, its
    /// stderr and the HTTP address it bound. `spec.settings` come last, so an `http.port` there
    /// wins over `http_port`.
    async fn launch(spec: &NodeSpec, dir: &Path, http_port: u16) -> (Child, Lines, SocketAddr) {
        let seeds: Vec<String> = spec
            .seeds
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let mut cmd = Command::new("java");
        cmd.args([
            "-Xms256m",
            "-Xmx512m",
            "-XX:TieredStopAtLevel=1",
            "-XX:+UseSerialGC",
        ])
        .args([
            "-cp",
            "target/classes:target/lib/*",
            "roundhouse.fixture.OpenSearchNode",
        ])
        .arg(format!("base.dir={}", dir.display()))
        .arg(format!("cluster.name={}", spec.cluster))
        .arg(format!("node.name={}", spec.name))
        .arg(format!("http.port={http_port}"))
        .arg(format!("transport.port={}", spec.transport_port))
        .arg(format!("discovery.seed_hosts={}", seeds.join(",")))
        .arg(format!(
            "cluster.initial_cluster_manager_nodes={}",
            spec.initial_managers.join(",")
        ))
        .args(FAST_FAULT_DETECTION)
        .args(&spec.settings)
        .current_dir(fixture())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
        // Should the test process itself be killed, its nodes die with it.
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("start java (these tests need Java 17)");
        let stderr = Lines::capture(child.stderr.take().expect("piped stderr"));
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let ready = tokio::time::timeout(FORMING, stdout.next_line()).await;
        let line = match ready {
            Ok(Ok(Some(line))) if line.starts_with("OPENSEARCH-NODE READY") => line,
            other => panic!(
                "node {} did not start ({other:?}); its stderr:\n{}",
                spec.name,
                stderr.text()
            ),
        };
        let http = field(&line, "http").parse().expect("READY line has http=");
        (child, stderr, http)
    }

    /// `SIGTERM`, as a service manager stops a node: the node closes itself. Returns its exit
    /// status once the JVM has exited.
    pub async fn terminate(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        match tokio::time::timeout(FORMING, self.child.wait()).await {
            Ok(status) => status.expect("wait for the node"),
            Err(_) => panic!(
                "node {} still running {FORMING:?} after SIGTERM; its stderr:\n{}",
                self.name,
                self.stderr.text()
            ),
        }
    }

    /// Starts the node again once it has exited: same data directory, name, ports and peers, so
    /// it rejoins its cluster as the node it was. Waits until its HTTP port is ready.
    pub async fn start_again(&mut self) {
        assert!(
            matches!(self.child.try_wait(), Ok(Some(_))),
            "node {} must have exited before it restarts",
            self.name
        );
        let (child, stderr, http) =
            Self::launch(&self.spec, self.dir.path(), self.http.port()).await;
        assert_eq!(http, self.http, "node {} back on its address", self.name);
        self.child = child;
        self.stderr = stderr;
    }

    /// The node's own view of its cluster (`/_cluster/health?local=true`), as roundhouse asks.
    pub async fn health(&self) -> Value {
        call(self.http, "GET", "/_cluster/health?local=true", None)
            .await
            .1
    }

    /// Waits until the node's local health satisfies `ok`; returns that health.
    pub async fn wait_health(&self, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + FORMING;
        loop {
            let h = self.health().await;
            if ok(&h) {
                return h;
            }
            assert!(
                Instant::now() < deadline,
                "node {} not {what} within {FORMING:?}: {h}\nits stderr:\n{}",
                self.name,
                self.stderr.text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `kill -9`: the JVM dies at once, the kernel resets its connections. Returns once its
    /// HTTP port refuses connections.
    pub async fn kill(&self) {
        self.signal(libc::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(self.http).await.is_ok() {
            assert!(
                Instant::now() < deadline,
                "node {} survived SIGKILL",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// `SIGSTOP`: a hung JVM that still holds its sockets open.
    pub fn freeze(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// `SIGCONT`.
    pub fn thaw(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, sig: i32) {
        let pid = self.child.id().expect("node is running") as i32;
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "signal {sig} to node");
    }
}

/// A REST call to a node (directly or through roundhouse): the status and the JSON answer.
pub async fn call(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    let (code, text) = http_send(addr, method, path, body)
        .await
        .unwrap_or_else(|e| panic!("{method} {path} at {addr}: {e}"));
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{method} {path} at {addr}: {e}: {text:?}"));
    (code, json)
}

/// Like `call`, and the answer must be a success.
pub async fn ok(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> Value {
    let (code, json) = call(addr, method, path, body).await;
    assert!((200..300).contains(&code), "{method} {path}: {code} {json}");
    json
}

/// Nodes of one cluster, each told of the others, bootstrapped by all of them together.
pub struct Cluster {
    pub name: String,
    /// Every node's transport port: the seeds of a node that joins later.
    ports: Vec<u16>,
    pub nodes: Vec<Node>,
}

impl Cluster {
    /// Starts `n` nodes named `{prefix}1..n` of cluster `name` and waits until each sees a
    /// green cluster of `n` nodes.
    pub async fn start(name: &str, prefix: &str, n: usize) -> Cluster {
        let names: Vec<String> = (1..=n).map(|i| format!("{prefix}{i}")).collect();
        let nodes: Vec<(&str, &[&str])> = names.iter().map(|n| (n.as_str(), &[][..])).collect();
        Cluster::start_nodes(name, &nodes).await
    }

    /// Starts one node per `(name, settings)` in cluster `name`, all of them initial cluster
    /// managers (so each must be cluster-manager eligible), and waits until each sees a green
    /// cluster of all of them.
    pub async fn start_nodes(name: &str, nodes: &[(&str, &[&str])]) -> Cluster {
        let ports: Vec<u16> = nodes.iter().map(|_| free_port()).collect();
        let names: Vec<String> = nodes.iter().map(|(n, _)| n.to_string()).collect();
        let starting: Vec<_> = nodes
            .iter()
            .zip(&ports)
            .map(|((node, settings), &port)| {
                tokio::spawn(Node::start(NodeSpec {
                    cluster: name.into(),
                    name: node.to_string(),
                    transport_port: port,
                    seeds: ports.clone(),
                    initial_managers: names.clone(),
                    settings: settings.iter().map(|s| s.to_string()).collect(),
                }))
            })
            .collect();
        let mut cluster = Cluster {
            name: name.into(),
            ports,
            nodes: Vec::new(),
        };
        for s in starting {
            cluster.nodes.push(s.await.expect("node start task"));
        }
        cluster.wait_green().await;
        cluster
    }

    /// Waits until every node sees a green cluster of all the nodes.
    pub async fn wait_green(&self) {
        let n = self.nodes.len();
        for node in &self.nodes {
            node.wait_health("green with all nodes", |h| {
                h["status"] == "green" && h["number_of_nodes"] == n
            })
            .await;
        }
    }

    /// Starts one more node that joins the running cluster (seeded with every node, bootstrapping
    /// nothing); returns once its HTTP port is ready, which may be before it joined.
    pub async fn add(&mut self, name: &str, settings: &[&str]) {
        let port = free_port();
        let node = Node::start(NodeSpec {
            cluster: self.name.clone(),
            name: name.into(),
            transport_port: port,
            seeds: self.ports.clone(),
            initial_managers: Vec::new(),
            settings: settings.iter().map(|s| s.to_string()).collect(),
        })
        .await;
        self.ports.push(port);
        self.nodes.push(node);
    }

    /// Restarts the node named `name` (see [`Node::restart`]); returns once its HTTP port is
    /// ready, which may be before it rejoined.
    pub async fn restart(&mut self, name: &str, settings: &[String]) {
        let i = self
            .nodes
            .iter()
            .position(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"));
        let node = self.nodes.remove(i);
        let node = node.restart(settings).await;
        self.nodes.insert(i, node);
    }

    /// The node named `name`.
    pub fn node(&self, name: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }
}

/// A node that forms its own one-node cluster named `cluster`: no seeds, itself as its only
/// initial cluster manager. Healthy by its own account: the split-brain case.
pub async fn lone_node(cluster: &str, name: &str) -> Node {
    let node = Node::start(NodeSpec {
        cluster: cluster.into(),
        name: name.into(),
        transport_port: free_port(),
        seeds: Vec::new(),
        initial_managers: vec![name.into()],
        settings: Vec::new(),
    })
    .await;
    node.wait_health("a green cluster of one", |h| {
        h["status"] == "green" && h["number_of_nodes"] == 1
    })
    .await;
    node
}
