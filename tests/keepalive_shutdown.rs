//! SIGTERM with keep-alive clients: idle connections close at once, a busy one right after its
//! response, and `shutdown_grace` still bounds it all. Run with `--nocapture` to see the times
//! measured.

mod common;

use std::time::{Duration, Instant};

use common::httpd::HttpServer;
use common::keepalive::KeepAlive;
use common::scrape::server_until;
use common::*;

/// How long a connection that must not be closed is watched after the stop has reached the
/// worker (an idle connection has closed by then).
const WATCH: Duration = Duration::from_millis(300);

/// roundhouse in front of test server `a` (backend `web`, framing followed).
async fn over(a: &HttpServer, grace: &str) -> Roundhouse {
    let backend = Backend::new("web")
        .server("a", a.addr)
        .check("type", "tcp")
        .with("http_aware", "true");
    let config = ConfigBuilder::new()
        .top(&format!("shutdown_grace: {grace}"))
        .listener("web", "web")
        .backend(backend);
    Roundhouse::start(&config.yaml()).await
}

#[tokio::test]
async fn sigterm_closes_idle_keep_alive_connections_at_once() {
    let a = HttpServer::start("a").await;
    let mut rh = over(&a, "30s").await;
    let (addr, admin) = (rh.listener("web").await, rh.admin().await);
    let (mut pooled, _) = KeepAlive::pooled(addr, "/name").await;
    // a connection that never carried a request is closed too: roundhouse is going away
    let mut fresh = KeepAlive::connect(addr).await;
    server_until(admin, "web", "a", "active_connections", 2).await;
    let started = Instant::now();
    rh.signal(libc::SIGTERM);
    let pooled_took = pooled.closed(started).await;
    let fresh_took = fresh.closed(started).await;
    let status = rh.wait_exit(SOON).await;
    let exited = started.elapsed();
    println!(
        "SIGTERM -> idle pooled connection closed {pooled_took:?}, unused one {fresh_took:?}, exit {exited:?} (grace 30s)"
    );
    assert_eq!(status.code(), Some(0));
    assert!(exited < Duration::from_secs(5), "{exited:?}");
    rh.stderr
        .wait_for(&["all connections finished"], SOON)
        .await;
}

#[tokio::test]
async fn sigterm_lets_a_busy_connection_finish_its_response_then_closes_it() {
    let a = HttpServer::start("a").await;
    let mut rh = over(&a, "30s").await;
    let addr = rh.listener("web").await;
    let (mut idle, _) = KeepAlive::pooled(addr, "/name").await;
    let mut busy = KeepAlive::connect(addr).await;
    let later = busy.held("a", "/chunked/500000?gate=7").await;

    let started = Instant::now();
    rh.signal(libc::SIGTERM);
    rh.notify
        .wait_for(&["STOPPING=1", "waiting for 2 open connections"], SOON)
        .await;
    idle.closed(started).await;
    busy.stays_open(WATCH).await;
    a.release();
    busy.expect(&later).await;
    let last_byte = Instant::now();
    let closed = busy.closed(last_byte).await;
    let status = rh.wait_exit(SOON).await;
    println!(
        "SIGTERM with a request in flight: closed {closed:?} after its last response byte, exit {:?} after it",
        last_byte.elapsed()
    );
    assert_eq!(status.code(), Some(0));
    rh.stderr
        .wait_for(&["all connections finished"], SOON)
        .await;
}

#[tokio::test]
async fn shutdown_grace_still_bounds_a_response_that_never_ends() {
    let a = HttpServer::start("a").await;
    let mut rh = over(&a, "500ms").await;
    let addr = rh.listener("web").await;
    let mut busy = KeepAlive::connect(addr).await;
    busy.held("a", "/bytes/1000?gate=1").await;
    let started = Instant::now();
    rh.signal(libc::SIGTERM);
    let status = rh.wait_exit(SOON).await;
    let exited = started.elapsed();
    println!("SIGTERM with a response that never ends: exit after {exited:?} (grace 500ms)");
    assert_eq!(status.code(), Some(0));
    assert!(exited >= Duration::from_millis(500), "{exited:?}");
    assert!(exited < Duration::from_secs(3), "{exited:?}");
    rh.stderr
        .wait_for(&["grace period over", "closed=1"], SOON)
        .await;
    busy.closed(started).await;
}
