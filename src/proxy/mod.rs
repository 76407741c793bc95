//! One client connection: pick a server, connect with retries, relay bytes, account.

mod followed;
/// Public only for `benches/hot_paths.rs`; inside the crate, it is for the relay.
#[doc(hidden)]
pub mod framing;
mod idle;
mod pump;
mod relay;

pub use idle::{stop as stop_idle_connections, wake_all as wake_idle_connections};
mod splice;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::backend::Backend;
use crate::metrics::RejectReason;
use crate::server::{FailureKind, InUse, Observation};
use crate::state::{Route, Shared};
use crate::words::describe_io;
use relay::End;

/// The most servers one client connection may try (`retries` is at most 16).
const MAX_TRIES: usize = 17;

/// Takes over a freshly accepted client connection on the current worker.
pub fn accept(client: TcpStream, peer: SocketAddr, key: SocketAddr, shared: &Arc<Shared>) {
    let running = shared.running.load();
    let Some(route) = running.routes.get(&key) else {
        // the listener was removed by a reload a moment ago; its sockets are closing
        return;
    };
    let listener = &route.listener;
    listener.metrics.connections.inc();
    if !listener.admit(route.max_connections) {
        listener
            .metrics
            .rejected(RejectReason::MaxConnections)
            .inc();
        if route.access_log {
            tracing::info!(target: "access", "{} {peer} -> {}/- rejected max_connections", listener.name, route.backend.name());
        }
        return;
    }
    let route = route.clone();
    shared.tracker.spawn(async move {
        serve(client, peer, &route).await;
        route.listener.release();
    });
}

async fn serve(mut client: TcpStream, peer: SocketAddr, route: &Route) {
    let started = Instant::now();
    let backend = &route.backend;
    // boxed: its timer and retry list live on the heap only while it connects, not in every
    // idle connection's task
    let (mut server_stream, index, in_use) = match Box::pin(connect(backend)).await {
        Ok(ok) => ok,
        Err(reason) => {
            route.listener.metrics.rejected(reason).inc();
            backend.state.no_server_warning(backend.name(), reason);
            if route.access_log {
                tracing::info!(
                    target: "access",
                    "{} {peer} -> {}/- rejected {}",
                    route.listener.name,
                    backend.name(),
                    reason.as_str()
                );
            }
            return;
        }
    };
    let server = &backend.servers[index];
    let m = &server.state.metrics;
    m.connections.inc();
    m.active.inc();
    let outcome = relay::relay(
        &mut client,
        &mut server_stream,
        backend.config.idle_timeout,
        &server.state,
        backend.config.http_aware,
    )
    .await;
    // Closed before anything else: after an idle close, every moment the client's socket stays
    // open is one in which its next request can arrive, and be reset by the close.
    drop(client);
    drop(server_stream);
    if let End::IdleClose(reason) = outcome.end {
        m.idle_closed(reason).inc();
    }
    // before the gauge, so that a zero in the gauge means least connections sees zero too
    drop(in_use);
    m.active.dec();
    let took = started.elapsed();
    if route.access_log {
        tracing::info!(
            target: "access",
            "{} {peer} -> {}/{} up={} down={} {:.1}ms {}{}",
            route.listener.name,
            backend.name(),
            server.config.name,
            outcome.sent,
            outcome.received,
            took.as_secs_f64() * 1000.0,
            outcome.end.as_str(),
            match (outcome.end, outcome.requests) {
                (End::IdleClose(r), Some(n)) => format!(" ({}) requests={n}", r.as_str()),
                (_, Some(n)) => format!(" requests={n}"),
                _ => String::new(),
            }
        );
    } else {
        tracing::debug!(
            listener = %route.listener.name,
            client = %peer,
            backend = %backend.name(),
            server = %server.config.name,
            bytes_up = outcome.sent,
            bytes_down = outcome.received,
            duration_ms = took.as_millis() as u64,
            close = outcome.end.as_str(),
            requests = outcome.requests,
            "connection closed"
        );
    }
}

/// Connects to the next server in rotation, trying up to `retries` others when that fails.
/// A failed connect counts against the server's health, like a failed check.
async fn connect(backend: &Backend) -> Result<(TcpStream, usize, InUse<'_>), RejectReason> {
    let mut tried = [usize::MAX; MAX_TRIES];
    let attempts = (backend.config.retries as usize + 1).min(MAX_TRIES);
    for attempt in 0..attempts {
        let Some(i) = backend.pick(|i| tried[..attempt].contains(&i)) else {
            return Err(if attempt == 0 {
                RejectReason::NoHealthyServer
            } else {
                RejectReason::ConnectFailed
            });
        };
        tried[attempt] = i;
        let server = &backend.servers[i];
        // counted from the pick, so that concurrent picks see it (least connections)
        let in_use = server.state.hold();
        let start = Instant::now();
        let timeout = backend.config.connect_timeout;
        let reason = match tokio::time::timeout(timeout, connect_to(server.addr)).await {
            Ok(Ok(stream)) => {
                let took = start.elapsed();
                backend
                    .state
                    .metrics
                    .connect_duration
                    .observe(took.as_secs_f64());
                return Ok((stream, i, in_use));
            }
            // Out of descriptors, memory or source ports here: not the server's fault.
            Ok(Err(e)) if is_local_exhaustion(&e) => return Err(RejectReason::OutOfResources),
            Ok(Err(e)) => describe_io(&e),
            Err(_) => format!(
                "connect timed out after {}",
                humantime::format_duration(timeout)
            ),
        };
        server.state.metrics.connect_failures.inc();
        let hc = &backend.config.health_check;
        let obs = Observation::fail(
            FailureKind::Other,
            format!("{reason} (client connection)"),
            None,
            start.elapsed(),
        );
        server.state.observe_passive(obs, hc.rise, hc.fall);
    }
    Err(RejectReason::ConnectFailed)
}

/// A connection to `addr`, with `TCP_NODELAY` (the client socket has it from its listening
/// socket). tokio's `connect` reads `SO_ERROR` after every connect to learn whether it failed;
/// here the readiness that ends the wait says so (a failed connect also reports the socket
/// closed for writing), and the error is read only then: one system call fewer per proxied
/// connection, of about 19 besides `epoll_wait` (`strace -c` over 200 connections).
async fn connect_to(addr: SocketAddr) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking().cloexec(),
        Some(Protocol::TCP),
    )?;
    socket.set_tcp_nodelay(true)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let stream = TcpStream::from_std(std::net::TcpStream::from(socket))?;
    let ready = stream.ready(Interest::WRITABLE).await?;
    if ready.is_write_closed() {
        return Err(stream
            .take_error()?
            .unwrap_or_else(|| std::io::ErrorKind::NotConnected.into()));
    }
    Ok(stream)
}

fn is_local_exhaustion(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EADDRNOTAVAIL)
    )
}
