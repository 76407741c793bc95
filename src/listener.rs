//! Listening sockets and the accept loop. Socket options are set here and only here.
//!
//! Each listener address is bound once per worker thread with `SO_REUSEPORT`, so the kernel
//! spreads new connections over the workers and no thread ever waits on another's lock. The
//! sockets of a listener stay open across reloads for as long as its address stays configured,
//! so a reload never refuses a connection.

use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::IntCounter;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use crate::proxy;
use crate::state::Shared;

const BACKLOG: i32 = 4096;
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// The listening sockets of one address, one per worker, bound but not yet accepting.
pub struct Bound {
    /// The address actually bound (the OS's choice when the configured port is 0).
    pub local: SocketAddr,
    sockets: Vec<std::net::TcpListener>,
}

/// Binds `addr` once per worker. Fails, naming the cause, if the address is taken by anyone,
/// including another process that also uses `SO_REUSEPORT`. With `freebind`, an address this
/// host does not hold (yet) is bound all the same.
pub fn bind(addr: SocketAddr, copies: usize, freebind: bool) -> io::Result<Bound> {
    // A plain bind first: it fails when the address is in use, where a SO_REUSEPORT bind would
    // silently share the port with whoever holds it (for example a second roundhouse).
    let probe = socket(addr, false, freebind)?;
    probe.bind(&addr.into())?;
    let local = probe
        .local_addr()?
        .as_socket()
        .expect("a TCP socket has an IP address");
    drop(probe);
    let mut sockets = Vec::with_capacity(copies);
    for _ in 0..copies.max(1) {
        let s = socket(local, true, freebind)?;
        s.bind(&local.into())?;
        s.listen(BACKLOG)?;
        sockets.push(s.into());
    }
    Ok(Bound { local, sockets })
}

fn socket(addr: SocketAddr, reuse_port: bool, freebind: bool) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if freebind {
        if addr.is_ipv6() {
            s.set_freebind_v6(true)?;
        } else {
            s.set_freebind_v4(true)?;
        }
    }
    s.set_reuse_address(true)?;
    // Accepted sockets inherit TCP_NODELAY from the listening socket on Linux: one system call
    // here instead of one per client connection.
    s.set_tcp_nodelay(true)?;
    if addr.is_ipv6() {
        // [::]:9200 means IPv6 only; bind 0.0.0.0:9200 as another listener for IPv4.
        s.set_only_v6(true)?;
    }
    #[cfg(unix)]
    s.set_reuse_port(reuse_port)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// True when a bind failed because this host does not hold the address (and `freebind` was
/// not asked for).
pub fn is_not_local(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EADDRNOTAVAIL)
}

/// What to do about an address this host does not hold, in words.
pub const NOT_LOCAL_HELP: &str = "this host does not hold that address (yet). To listen on an address it may hold later (a virtual IP that keepalived moves here), set freebind: true on the listener, or net.ipv4.ip_nonlocal_bind=1 for the whole host";

/// The running accept loops of one listener address.
pub struct Accepting {
    pub local: SocketAddr,
    stop: CancellationToken,
    loops: Vec<tokio::task::JoinHandle<()>>,
}

impl Accepting {
    /// Stops accepting and returns once every listening socket is closed; open connections
    /// are not touched.
    pub async fn close(mut self) {
        self.stop.cancel();
        for l in self.loops.drain(..) {
            let _ = l.await;
        }
    }
}

impl Drop for Accepting {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Starts one accept loop per worker for the listener configured at `key`.
pub fn start(bound: Bound, key: SocketAddr, workers: &[Handle], shared: &Arc<Shared>) -> Accepting {
    let stop = CancellationToken::new();
    let mut loops = Vec::new();
    let sockets = bound.sockets.into_iter().enumerate();
    for ((i, socket), worker) in sockets.zip(workers.iter().cycle()) {
        let shared = shared.clone();
        let stop = stop.clone();
        let taken = shared.metrics.worker_connections(i % workers.len());
        loops.push(worker.spawn(async move {
            match TcpListener::from_std(socket) {
                Ok(listener) => accept_loop(listener, key, shared, taken, stop).await,
                Err(e) => tracing::error!(bind = %key, error = %e, "cannot start accepting"),
            }
        }));
    }
    Accepting {
        local: bound.local,
        stop,
        loops,
    }
}

async fn accept_loop(
    listener: TcpListener,
    key: SocketAddr,
    shared: Arc<Shared>,
    taken: IntCounter,
    stop: CancellationToken,
) {
    let mut stopped = pin!(stop.cancelled());
    let mut backoff = Duration::from_millis(5);
    let mut last_warning: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            biased;
            _ = &mut stopped => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(5);
                taken.inc();
                proxy::accept(stream, peer, key, &shared);
            }
            Err(e) if is_transient(&e) => {}
            Err(e) => {
                // Out of file descriptors or memory: keep serving the open connections and
                // retry later, instead of spinning on an accept that cannot succeed.
                if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                    tracing::warn!(bind = %key, error = %e, pause_ms = backoff.as_millis() as u64, "accept failed; pausing accepts");
                    last_warning = Some(Instant::now());
                }
                tokio::select! {
                    _ = &mut stopped => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
            }
        }
    }
}

/// Errors that concern one connection that already went away, not the listener.
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    ) || e.raw_os_error() == Some(libc::EPROTO)
}
