//! Startup, readiness and shutdown of the real binary.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn echo_config(echo: &EchoServer, top: &str) -> String {
    let backend = echo_backend(echo);
    ConfigBuilder::new()
        .top(top)
        .listener("echo", "echo")
        .backend(backend)
        .yaml()
}

async fn round_trip(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).await.unwrap();
    let mut back = vec![0u8; msg.len()];
    tokio::time::timeout(SOON, s.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, msg);
}

#[tokio::test]
async fn ready_comes_after_binding_and_the_first_checks() {
    let nodes = three_nodes().await;
    let mut rh = Roundhouse::spawn(
        &ConfigBuilder::new()
            .listener("es", "es")
            .backend(es_backend(&nodes))
            .yaml(),
    );
    let ready = rh.ready().await;
    assert!(
        ready.contains("STATUS=serving 1 listener; es: 3/3 servers up"),
        "{ready}"
    );
    // READY=1 means serving: the very first request works
    let addr = rh.listener("es").await;
    assert_eq!(node_name(addr).await.unwrap().len(), 4);
}

#[tokio::test]
async fn sigterm_lets_open_connections_finish_then_exits_0() {
    let echo = EchoServer::start().await;
    let mut rh = Roundhouse::start(&echo_config(&echo, "shutdown_grace: 30s")).await;
    let addr = rh.listener("echo").await;
    let mut open = TcpStream::connect(addr).await.unwrap();
    round_trip(&mut open, b"before").await;

    rh.signal(libc::SIGTERM);
    rh.notify
        .wait_for(&["STOPPING=1", "waiting for 1 open connection"], SOON)
        .await;
    // no new clients...
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
    // ...but the open one keeps working until its client is done
    round_trip(&mut open, b"during shutdown").await;
    drop(open);
    let status = rh.wait_exit(SOON).await;
    assert_eq!(status.code(), Some(0));
    rh.stderr
        .wait_for(&["all connections finished"], SOON)
        .await;
}

#[tokio::test]
async fn the_grace_period_bounds_shutdown() {
    let echo = EchoServer::start().await;
    let mut rh = Roundhouse::start(&echo_config(&echo, "shutdown_grace: 300ms")).await;
    let mut open = TcpStream::connect(rh.listener("echo").await).await.unwrap();
    round_trip(&mut open, b"held").await;
    let started = std::time::Instant::now();
    rh.signal(libc::SIGTERM);
    let status = rh.wait_exit(SOON).await;
    assert_eq!(status.code(), Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    rh.stderr
        .wait_for(&["grace period over", "closed=1"], SOON)
        .await;
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(SOON, open.read(&mut buf))
        .await
        .unwrap();
    assert!(
        matches!(n, Ok(0) | Err(_)),
        "the held connection was closed: {n:?}"
    );
}

#[tokio::test]
async fn sigint_stops_too() {
    let echo = EchoServer::start().await;
    let mut rh = Roundhouse::start(&echo_config(&echo, "")).await;
    rh.signal(libc::SIGINT);
    assert_eq!(rh.wait_exit(SOON).await.code(), Some(0));
}

#[tokio::test]
async fn demo_serves_three_nodes_in_rotation() {
    let mut rh = Roundhouse::spawn_command(
        &["demo", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"],
        "",
        &[],
    );
    let ready = rh.ready().await;
    assert!(ready.contains("es: 3/3 servers up"), "{ready}");
    let seen = names(rh.listener("es").await, 6).await;
    let counts = tally(&seen);
    assert_eq!(
        counts.keys().cloned().collect::<Vec<_>>(),
        ["es-1", "es-2", "es-3"],
        "{seen:?}"
    );
    rh.signal(libc::SIGTERM);
    assert_eq!(rh.wait_exit(SOON).await.code(), Some(0));
}
