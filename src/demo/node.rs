//! A stand-in Elasticsearch node: an HTTP (or HTTPS) server answering `/`, `/_cluster/health`,
//! `/_nodes/_local/http` and `/_nodes/_all/http` with the JSON shapes Elasticsearch 8 uses, whose
//! answers can be switched at run time (colour, cluster name, node count, hang, 503, garbage,
//! roles, publish address, the other nodes it lists, a `/_nodes` refused with 403), and which
//! can require credentials like a secured cluster. The demo runs three of them; the integration tests use
//! them as backends.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::answers::{self, Behaviour, Mode, Peer};
use crate::config::ClusterStatus;

/// How a fake node is secured.
#[derive(Debug, Clone, Default)]
pub struct Security {
    /// Serve HTTPS with this certificate chain and private key (PEM).
    pub tls: Option<(String, String)>,
    /// Answer 401 unless `Authorization` is one of these values.
    pub authorization: Option<Vec<String>>,
}

/// A running fake node on 127.0.0.1; stops when dropped.
pub struct FakeNode {
    name: String,
    addr: SocketAddr,
    behaviour: Arc<Mutex<Behaviour>>,
    health_requests: Arc<AtomicU64>,
    nodes_requests: Arc<AtomicU64>,
    last_health_query: Arc<Mutex<Option<String>>>,
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
        Self::start_secured(name, cluster_name, addr, Security::default()).await
    }

    /// Starts a green node of a three-node cluster at `addr`, secured as asked.
    pub async fn start_secured(
        name: &str,
        cluster_name: &str,
        addr: SocketAddr,
        security: Security,
    ) -> io::Result<FakeNode> {
        let tls = match &security.tls {
            Some((cert, key)) => Some(acceptor(cert, key)?),
            None => None,
        };
        let listener = listen(addr)?;
        let addr = listener.local_addr()?;
        // a node started again in place takes its port back from its stopped self
        held_ports().remove(&addr);
        let mut node = FakeNode {
            name: name.to_owned(),
            addr,
            behaviour: Arc::new(Mutex::new(Behaviour {
                cluster_name: cluster_name.to_owned(),
                status: ClusterStatus::Green,
                number_of_nodes: 3,
                mode: Mode::Normal,
                roles: ["data", "ingest", "master"].map(String::from).to_vec(),
                publish: None,
                peers: Vec::new(),
                nodes_refused: false,
                nodes_cluster_name: None,
            })),
            health_requests: Arc::new(AtomicU64::new(0)),
            nodes_requests: Arc::new(AtomicU64::new(0)),
            last_health_query: Arc::new(Mutex::new(None)),
            stop: CancellationToken::new(),
            accepting: None,
        };
        let ctx = Ctx {
            name: node.name.clone(),
            addr,
            behaviour: node.behaviour.clone(),
            health_requests: node.health_requests.clone(),
            nodes_requests: node.nodes_requests.clone(),
            last_health_query: node.last_health_query.clone(),
            authorization: security.authorization.map(Arc::new),
            tls,
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

    /// This node as another node's peer (what `/_nodes/_all/http` lists for it).
    pub fn as_peer(&self) -> Peer {
        let b = self
            .behaviour
            .lock()
            .expect("behaviour lock is never poisoned");
        Peer {
            id: answers::node_id(&self.name),
            name: self.name.clone(),
            roles: b.roles.clone(),
            publish: Some(b.publish.clone().unwrap_or_else(|| self.addr.to_string())),
        }
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

    /// How many times the node was asked for all the cluster's nodes (`/_nodes/_all/http`), as
    /// discovery asks.
    pub fn nodes_requests(&self) -> u64 {
        self.nodes_requests.load(Ordering::Relaxed)
    }

    /// The query string of the last health request (`local=true`, ...).
    pub fn last_health_query(&self) -> Option<String> {
        self.last_health_query
            .lock()
            .expect("query lock is never poisoned")
            .clone()
    }
}

impl FakeNode {
    /// Stops the node and returns once a connection to its port is refused (dropping it stops
    /// it too, but the port closes a moment later).
    pub async fn stop(mut self) {
        // held before the listener closes: not a moment when the port is free
        hold_port(self.addr);
        self.stop.cancel();
        if let Some(task) = self.accepting.take() {
            let _ = task.await;
        }
        until_refused(self.addr).await;
    }
}

/// An address where a connection is refused for as long as the process runs: a port held by a
/// bound socket that never listens, so no other socket is given it.
pub fn refused_address() -> io::Result<SocketAddr> {
    let socket = port_socket(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let addr = socket
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("a TCP socket has an IP address"))?;
    held_ports().insert(addr, socket);
    Ok(addr)
}

/// Returns once a connection to `addr` is refused, or after ten seconds. A listener closed by
/// this process still takes connections while a child being started at that moment (a test
/// running in parallel starts the binary) holds a copy of it: the fork copies every descriptor
/// and close-on-exec lets go of them only at the exec. A connection it takes in that window is
/// reset when the copy goes, which is not what a stopped node does.
async fn until_refused(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpStream::connect(addr).await {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return,
            _ if Instant::now() >= deadline => return,
            _ => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    }
}

/// A listening socket at `addr` that a stopped node's holder can share (`SO_REUSEPORT`: a
/// socket that does not listen gets no connection of the group).
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = port_socket(addr)?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    TcpListener::from_std(socket.into())
}

/// A TCP socket bound to `addr` with `SO_REUSEADDR` (over connections in TIME_WAIT) and
/// `SO_REUSEPORT` (beside the node's own listener, and its listener beside it).
fn port_socket(addr: SocketAddr) -> io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// The ports of stopped nodes, each held by a bound socket that does not listen, for as long as
/// the process runs or until a node starts there again. A connection to a stopped node is then
/// refused, as a stopped node's should be, and the port cannot become another socket's in the
/// meantime: a listener bound to port 0 by a test running in parallel, or the source port of an
/// outgoing connection. Also the addresses of `refused_address`.
fn held_ports() -> std::sync::MutexGuard<'static, HashMap<SocketAddr, socket2::Socket>> {
    static HELD: OnceLock<Mutex<HashMap<SocketAddr, socket2::Socket>>> = OnceLock::new();
    HELD.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn hold_port(addr: SocketAddr) {
    // a port search (port 0, or a connection's source port) never shares a port held this way
    if let Ok(socket) = port_socket(addr) {
        held_ports().insert(addr, socket);
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
    nodes_requests: Arc<AtomicU64>,
    last_health_query: Arc<Mutex<Option<String>>>,
    authorization: Option<Arc<Vec<String>>>,
    tls: Option<TlsAcceptor>,
    stop: CancellationToken,
}

fn acceptor(cert_pem: &str, key_pem: &str) -> io::Result<TlsAcceptor> {
    let invalid = |e: String| io::Error::new(io::ErrorKind::InvalidInput, e);
    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("certificate: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| invalid(format!("key: {e}")))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| invalid(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| invalid(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
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
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = serve(stream, ctx) => {}
            }
        });
    }
}

async fn serve(stream: TcpStream, ctx: Ctx) {
    let tls = ctx.tls.clone();
    let service = hyper::service::service_fn(move |req| answer(ctx.clone(), req));
    let http = hyper::server::conn::http1::Builder::new();
    match tls {
        None => {
            let _ = http.serve_connection(TokioIo::new(stream), service).await;
        }
        Some(acceptor) => {
            if let Ok(stream) = acceptor.accept(stream).await {
                let _ = http.serve_connection(TokioIo::new(stream), service).await;
            }
        }
    }
}

async fn answer(ctx: Ctx, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let b = ctx
        .behaviour
        .lock()
        .expect("behaviour lock is never poisoned")
        .clone();
    let path = req.uri().path();
    let query = req.uri().query().map(str::to_owned);
    if path == "/_cluster/health" {
        ctx.health_requests.fetch_add(1, Ordering::Relaxed);
    }
    if let Some(allowed) = &ctx.authorization {
        let given = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if !given.is_some_and(|g| allowed.iter().any(|a| a == g)) {
            return Ok(json(
                StatusCode::UNAUTHORIZED,
                answers::unauthenticated_body(path),
            ));
        }
    }
    let reply = match path {
        "/_cluster/health" => {
            let local = query
                .as_deref()
                .is_some_and(|q| q.split('&').any(|p| p == "local=true"));
            *ctx.last_health_query
                .lock()
                .expect("query lock is never poisoned") = query;
            match b.mode {
                Mode::Normal => json(StatusCode::OK, answers::health_body(&b)),
                Mode::Hang => {
                    ctx.stop.cancelled().await;
                    json(StatusCode::SERVICE_UNAVAILABLE, String::new())
                }
                Mode::NoMaster if local => json(StatusCode::OK, answers::no_master_local_body(&b)),
                Mode::NoMaster => json(StatusCode::SERVICE_UNAVAILABLE, answers::no_master_body()),
                Mode::Garbage => json(StatusCode::OK, "<html>not json</html>".to_owned()),
            }
        }
        "/" => json(StatusCode::OK, answers::root_body(&ctx.name, &b)),
        p if p.starts_with("/_nodes") && b.nodes_refused => {
            json(StatusCode::FORBIDDEN, answers::forbidden_body())
        }
        "/_nodes/_local/http" | "/_nodes/_local" => json(
            StatusCode::OK,
            answers::nodes_body(&ctx.name, ctx.addr, &b, false),
        ),
        "/_nodes/http" | "/_nodes/_all/http" | "/_nodes" => {
            ctx.nodes_requests.fetch_add(1, Ordering::Relaxed);
            json(
                StatusCode::OK,
                answers::nodes_body(&ctx.name, ctx.addr, &b, true),
            )
        }
        path => json(StatusCode::NOT_FOUND, answers::not_found_body(path)),
    };
    Ok(reply)
}

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("X-elastic-product", "Elasticsearch")
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}
