//! A stand-in Elasticsearch node: an HTTP server answering `/`, `/_cluster/health` and
//! `/_nodes/http` with the JSON shapes Elasticsearch 8 uses, whose answers can be switched at
//! run time (colour, cluster name, node count, hang, 503, garbage). The demo runs three of
//! them; the integration tests use them as backends.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::ClusterStatus;

/// How a fake node answers its health endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Answers with its cluster health.
    Normal,
    /// Accepts the request and never answers (a node stuck looking for a master).
    Hang,
    /// `503 master_not_discovered_exception`.
    NoMaster,
    /// `200` with a body that is not JSON.
    Garbage,
}

/// What a fake node reports.
#[derive(Debug, Clone)]
pub struct Behaviour {
    pub cluster_name: String,
    pub status: ClusterStatus,
    pub number_of_nodes: u64,
    pub mode: Mode,
}

/// A running fake node on 127.0.0.1; stops when dropped.
pub struct FakeNode {
    name: String,
    addr: SocketAddr,
    behaviour: Arc<Mutex<Behaviour>>,
    health_requests: Arc<AtomicU64>,
    stop: CancellationToken,
    accepting: Option<tokio::task::JoinHandle<()>>,
}

impl FakeNode {
    /// Starts a green node of a three-node cluster on an OS-chosen port.
    pub async fn start(name: &str, cluster_name: &str) -> io::Result<FakeNode> {
        Self::start_at(name, cluster_name, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts a green node of a three-node cluster at `addr` (to restart a node in place).
    pub async fn start_at(
        name: &str,
        cluster_name: &str,
        addr: SocketAddr,
    ) -> io::Result<FakeNode> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let mut node = FakeNode {
            name: name.to_owned(),
            addr,
            behaviour: Arc::new(Mutex::new(Behaviour {
                cluster_name: cluster_name.to_owned(),
                status: ClusterStatus::Green,
                number_of_nodes: 3,
                mode: Mode::Normal,
            })),
            health_requests: Arc::new(AtomicU64::new(0)),
            stop: CancellationToken::new(),
            accepting: None,
        };
        let ctx = Ctx {
            name: node.name.clone(),
            addr,
            behaviour: node.behaviour.clone(),
            health_requests: node.health_requests.clone(),
            stop: node.stop.clone(),
        };
        node.accepting = Some(tokio::spawn(accept_loop(listener, ctx)));
        Ok(node)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes what the node reports from now on.
    pub fn set(&self, change: impl FnOnce(&mut Behaviour)) {
        change(
            &mut self
                .behaviour
                .lock()
                .expect("behaviour lock is never poisoned"),
        );
    }

    /// How many health requests the node has received.
    pub fn health_requests(&self) -> u64 {
        self.health_requests.load(Ordering::Relaxed)
    }
}

impl FakeNode {
    /// Stops the node and returns once its port is closed (dropping it stops it too, but the
    /// port closes a moment later).
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.accepting.take() {
            let _ = task.await;
        }
    }
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[derive(Clone)]
struct Ctx {
    name: String,
    addr: SocketAddr,
    behaviour: Arc<Mutex<Behaviour>>,
    health_requests: Arc<AtomicU64>,
    stop: CancellationToken,
}

async fn accept_loop(listener: TcpListener, ctx: Ctx) {
    loop {
        let (stream, _) = tokio::select! {
            _ = ctx.stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(_) => continue,
            },
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let stop = ctx.stop.clone();
            let service = hyper::service::service_fn(move |req| answer(ctx.clone(), req));
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = conn => {}
            }
        });
    }
}

async fn answer(ctx: Ctx, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let b = ctx
        .behaviour
        .lock()
        .expect("behaviour lock is never poisoned")
        .clone();
    let json = |status: StatusCode, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .header("X-elastic-product", "Elasticsearch")
            .body(Full::new(Bytes::from(body)))
            .expect("static response parts are valid")
    };
    let reply = match req.uri().path() {
        "/_cluster/health" => {
            ctx.health_requests.fetch_add(1, Ordering::Relaxed);
            match b.mode {
                Mode::Normal => json(StatusCode::OK, health_body(&b)),
                Mode::Hang => {
                    ctx.stop.cancelled().await;
                    json(StatusCode::SERVICE_UNAVAILABLE, String::new())
                }
                Mode::NoMaster => json(StatusCode::SERVICE_UNAVAILABLE, no_master_body()),
                Mode::Garbage => json(StatusCode::OK, "<html>not json</html>".to_owned()),
            }
        }
        "/" => json(StatusCode::OK, root_body(&ctx.name, &b)),
        "/_nodes/http" => json(StatusCode::OK, nodes_body(&ctx.name, ctx.addr, &b)),
        path => json(StatusCode::NOT_FOUND, not_found_body(path)),
    };
    Ok(reply)
}

fn health_body(b: &Behaviour) -> String {
    let unassigned = match b.status {
        ClusterStatus::Green => 0,
        ClusterStatus::Yellow => 5,
        ClusterStatus::Red => 10,
    };
    serde_json::json!({
        "cluster_name": b.cluster_name,
        "status": b.status.as_str(),
        "timed_out": false,
        "number_of_nodes": b.number_of_nodes,
        "number_of_data_nodes": b.number_of_nodes,
        "active_primary_shards": 10,
        "active_shards": 20 - unassigned,
        "relocating_shards": 0,
        "initializing_shards": 0,
        "unassigned_shards": unassigned,
        "delayed_unassigned_shards": 0,
        "number_of_pending_tasks": 0,
        "number_of_in_flight_fetch": 0,
        "task_max_waiting_in_queue_millis": 0,
        "active_shards_percent_as_number": f64::from(20 - unassigned) * 5.0,
    })
    .to_string()
}

fn no_master_body() -> String {
    serde_json::json!({
        "error": {
            "root_cause": [{"type": "master_not_discovered_exception", "reason": null}],
            "type": "master_not_discovered_exception",
            "reason": null
        },
        "status": 503
    })
    .to_string()
}

fn root_body(name: &str, b: &Behaviour) -> String {
    serde_json::json!({
        "name": name,
        "cluster_name": b.cluster_name,
        "cluster_uuid": "kcCSyDfeQ8ui8dGWBYsL5A",
        "version": {
            "number": "8.11.1",
            "build_flavor": "default",
            "build_type": "tar",
            "build_hash": "6f9ff581fbcde658e6f69d6ce03050f060d1fd0c",
            "build_date": "2023-11-11T10:05:59.421038163Z",
            "build_snapshot": false,
            "lucene_version": "9.8.0",
            "minimum_wire_compatibility_version": "7.17.0",
            "minimum_index_compatibility_version": "7.0.0"
        },
        "tagline": "You Know, for Search"
    })
    .to_string()
}

fn nodes_body(name: &str, addr: SocketAddr, b: &Behaviour) -> String {
    serde_json::json!({
        "_nodes": {"total": 1, "successful": 1, "failed": 0},
        "cluster_name": b.cluster_name,
        "nodes": {
            format!("node-{name}"): {
                "name": name,
                "transport_address": format!("{}:9300", addr.ip()),
                "host": addr.ip().to_string(),
                "ip": addr.ip().to_string(),
                "version": "8.11.1",
                "roles": ["data", "ingest", "master"],
                "http": {
                    "bound_address": [addr.to_string()],
                    "publish_address": addr.to_string(),
                    "max_content_length_in_bytes": 104857600
                }
            }
        }
    })
    .to_string()
}

fn not_found_body(path: &str) -> String {
    serde_json::json!({
        "error": {
            "root_cause": [{"type": "index_not_found_exception", "reason": format!("no such index [{}]", path.trim_start_matches('/'))}],
            "type": "index_not_found_exception",
            "reason": format!("no such index [{}]", path.trim_start_matches('/'))
        },
        "status": 404
    })
    .to_string()
}
