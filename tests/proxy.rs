//! Proxying through the real binary: round robin, weights, retries, byte-exact relaying,
//! half-close, idle timeout, connection limits.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn round_robin_is_even() {
    let nodes = three_nodes().await;
    let rh = serve(es_backend(&nodes)).await;
    let addr = rh.listener("es").await;
    let seen = names(addr, 30).await;
    let counts = tally(&seen);
    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        [10, 10, 10],
        "{counts:?}"
    );
    // and in rotation, not in bursts
    assert_ne!(seen[0], seen[1]);
    assert_ne!(seen[1], seen[2]);
}

#[tokio::test]
async fn weights_are_respected() {
    let nodes = three_nodes().await;
    let backend = Backend::new("es")
        .server("es-1", nodes[0].addr())
        .weighted("es-2", nodes[1].addr(), 2)
        .server("es-3", nodes[2].addr());
    let rh = serve(backend).await;
    let counts = tally(&names(rh.listener("es").await, 40).await);
    assert_eq!(counts["es-1"], 10, "{counts:?}");
    assert_eq!(counts["es-2"], 20, "{counts:?}");
    assert_eq!(counts["es-3"], 10, "{counts:?}");
}

#[tokio::test]
async fn connect_retry_skips_a_dead_server_the_checks_have_not_caught() {
    let mut nodes = three_nodes().await;
    // fall: 100, so within this test neither checks nor failed connects take es-2 out of
    // rotation: only the retry of each client's connect can keep es-2's clients served
    let backend = es_backend(&nodes)
        .check("interval", "1h")
        .check("timeout", "1s")
        .check("fall", "100");
    let rh = serve(backend).await;
    let addr = rh.listener("es").await;
    let admin = rh.admin().await;
    nodes.remove(1).stop().await; // es-2 stops listening
    let seen = names(addr, 12).await;
    assert!(!seen.contains(&"es-2".to_owned()), "{seen:?}");
    assert_eq!(seen.len(), 12, "every client was served");
    let m = Scrape::from(admin).await;
    let failures = m.get(
        "roundhouse_server_connect_failures_total",
        &[("backend", "es"), ("server", "es-2")],
    );
    assert!(failures >= 4.0, "es-2 was tried and refused: {failures}");
    assert_eq!(
        m.get(
            "roundhouse_server_up",
            &[("backend", "es"), ("server", "es-2")]
        ),
        1.0,
        "es-2 was still in rotation: the retries served its clients"
    );
}

#[tokio::test]
async fn a_refused_client_connect_counts_as_a_failed_check() {
    let mut nodes = three_nodes().await;
    // no check runs after the first round (interval: 1h); the first refused client connect is
    // the first failure es-2 sees, and with fall: 1 it takes es-2 out at once
    let backend = es_backend(&nodes)
        .check("interval", "1h")
        .check("timeout", "1s")
        .check("fall", "1");
    let rh = serve(backend).await;
    let addr = rh.listener("es").await;
    nodes.remove(1).stop().await;
    let seen = names(addr, 3).await;
    assert_eq!(seen.len(), 3, "every client was served: {seen:?}");
    let line = rh
        .stderr
        .wait_for(
            &[
                "server is down",
                "server=es-2",
                "connection refused (client connection)",
            ],
            SOON,
        )
        .await;
    assert!(line.contains("WARN"), "{line}");
}

#[tokio::test]
async fn no_healthy_server_closes_the_client_at_once() {
    let nodes = three_nodes().await;
    for n in &nodes {
        n.set(|b| b.mode = Mode::NoMaster);
    }
    let rh = serve(es_backend(&nodes)).await;
    let addr = rh.listener("es").await;
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).await.expect("accepted");
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(SOON, s.read(&mut buf))
        .await
        .expect("closed, not hung");
    assert!(matches!(n, Ok(0) | Err(_)), "closed without data: {n:?}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    rh.stderr
        .wait_for(
            &[
                "WARN",
                "closed a client connection",
                "backend=es",
                "no healthy server",
            ],
            SOON,
        )
        .await;
}

#[tokio::test]
async fn bytes_are_relayed_exactly_with_half_close() {
    let echo = EchoServer::start().await;
    let backend = echo_backend(&echo);
    let rh = serve(backend).await;
    let addr = rh.listener("echo").await;
    let data: Vec<u8> = (0..32 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut r, mut w) = s.into_split();
    let to_send = data.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&to_send).await.unwrap();
        // half-close: our FIN must reach the server, and its answer must still reach us
        w.shutdown().await.unwrap();
        w
    });
    let mut got = Vec::with_capacity(data.len());
    tokio::time::timeout(Duration::from_secs(60), r.read_to_end(&mut got))
        .await
        .expect("echo finished")
        .unwrap();
    let _w = writer.await.unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data, "bytes differ");
}

/// Forty bulk connections at once: more pipes in use than the 1 MiB pipes' share holds, so their
/// directions go through pipes of every size roundhouse makes (see `proxy/splice.rs`).
#[tokio::test]
async fn many_bulk_connections_at_once_are_relayed_exactly() {
    let echo = EchoServer::start().await;
    let rh = serve(echo_backend(&echo)).await;
    let addr = rh.listener("echo").await;
    let pattern: Vec<u8> = (0..4 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let clients: Vec<_> = (0..40usize)
        .map(|c| {
            // each client its own bytes: the pattern turned by a different amount
            let mut data = pattern.clone();
            data.rotate_left(c * 977);
            tokio::spawn(async move {
                let (mut r, mut w) = TcpStream::connect(addr).await.unwrap().into_split();
                let to_send = data.clone();
                let writer = tokio::spawn(async move {
                    w.write_all(&to_send).await.unwrap();
                    w.shutdown().await.unwrap();
                    w
                });
                let mut got = Vec::with_capacity(data.len());
                r.read_to_end(&mut got).await.unwrap();
                let _w = writer.await.unwrap();
                assert_eq!(got.len(), data.len(), "client {c}");
                assert!(got == data, "client {c}: bytes differ");
            })
        })
        .collect();
    tokio::time::timeout(Duration::from_secs(120), async {
        for client in clients {
            client.await.unwrap();
        }
    })
    .await
    .expect("every echo finished");
}

#[tokio::test]
async fn a_server_that_answers_after_the_client_fin_is_still_heard() {
    // The client sends a request and its FIN at once; the server answers only after the FIN.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server_addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut req = Vec::new();
                let _ = s.read_to_end(&mut req).await; // until the FIN
                let _ = s
                    .write_all(format!("got {} bytes", req.len()).as_bytes())
                    .await;
            });
        }
    });
    let backend = Backend::new("b")
        .server("s", server_addr)
        .check("type", "tcp");
    let rh = Roundhouse::start(
        &ConfigBuilder::new()
            .listener("l", "b")
            .backend(backend)
            .yaml(),
    )
    .await;
    let mut s = TcpStream::connect(rh.listener("l").await).await.unwrap();
    s.write_all(&[7u8; 1000]).await.unwrap();
    s.shutdown().await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(SOON, s.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer, "got 1000 bytes");
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let echo = EchoServer::start().await;
    // gaps between pings far shorter than the idle timeout, also on a machine kept busy
    let backend = echo_backend(&echo).with("timeouts", "{ idle: 2s }");
    let rh = serve(backend).await;
    let mut s = TcpStream::connect(rh.listener("echo").await).await.unwrap();
    // traffic keeps it open past the timeout...
    let mut quiet = Instant::now();
    let opened = Instant::now();
    for i in 0..6 {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        s.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.unwrap();
        quiet = Instant::now();
    }
    assert!(
        opened.elapsed() >= Duration::from_millis(2500),
        "open past the timeout"
    );
    // ...silence closes it
    let mut buf = [0u8; 4];
    let n = tokio::time::timeout(SOON * 2, s.read(&mut buf))
        .await
        .expect("closed by roundhouse");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    let took = quiet.elapsed();
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(8),
        "{took:?}"
    );
}

#[tokio::test]
async fn max_connections_refuses_beyond_the_limit() {
    let echo = EchoServer::start().await;
    let backend = echo_backend(&echo);
    let config = ConfigBuilder::new()
        .listener_at("echo", "127.0.0.1:0", "echo", ", max_connections: 2")
        .backend(backend);
    let rh = Roundhouse::start(&config.yaml()).await;
    let addr = rh.listener("echo").await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"x").await.unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap(); // proxied: it counts
        held.push(s);
    }
    let mut third = TcpStream::connect(addr).await.unwrap();
    let mut b = [0u8; 1];
    let n = tokio::time::timeout(SOON, third.read(&mut b))
        .await
        .expect("refused at once");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    drop(held.pop());
    // a slot is free again once roundhouse has seen the close (the count `max_connections`
    // compares with is the one this gauge shows, lowered together)
    let labels = [("listener", "echo")];
    Scrape::until_equals(
        rh.admin().await,
        "roundhouse_listener_active_connections",
        &labels,
        1.0,
    )
    .await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"y").await.unwrap();
    let n = tokio::time::timeout(SOON, s.read(&mut b)).await;
    assert!(
        matches!(n, Ok(Ok(1))),
        "a connection is accepted once one closed: {n:?}"
    );
}

#[tokio::test]
async fn running_out_of_file_descriptors_pauses_accepting_and_keeps_serving() {
    let echo = EchoServer::start().await;
    let backend = echo_backend(&echo).check("interval", "1h");
    let rh = serve(backend).await;
    let addr = rh.listener("echo").await;
    // leave room for a few proxied connections (two descriptors each), then starve it
    let open_fds = std::fs::read_dir(format!("/proc/{}/fd", rh.pid()))
        .unwrap()
        .count() as u64;
    let limit = libc::rlimit {
        rlim_cur: open_fds + 6,
        rlim_max: open_fds + 6,
    };
    assert_eq!(
        unsafe { libc::prlimit(rh.pid(), libc::RLIMIT_NOFILE, &limit, std::ptr::null_mut()) },
        0
    );

    let mut clients = Vec::new();
    for _ in 0..12 {
        clients.push(TcpStream::connect(addr).await.unwrap()); // the kernel queues them
    }
    let mut served = Vec::new();
    for mut c in clients {
        c.write_all(b"hi").await.unwrap();
        let mut b = [0u8; 2];
        match tokio::time::timeout(Duration::from_millis(300), c.read(&mut b)).await {
            Ok(Ok(2)) => served.push(c),
            _ => drop(c), // queued behind the limit, or closed for lack of descriptors
        }
    }
    assert!(
        !served.is_empty() && served.len() < 12,
        "served {}",
        served.len()
    );
    rh.stderr
        .wait_for(&["WARN", "Too many open files"], SOON)
        .await;
    // the connections that made it still work
    for c in &mut served {
        c.write_all(b"ok").await.unwrap();
        let mut b = [0u8; 2];
        tokio::time::timeout(SOON, c.read_exact(&mut b))
            .await
            .unwrap()
            .unwrap();
    }
    // once descriptors are free again, new clients are served, and the server was never blamed
    drop(served);
    let mut ok = false;
    for _ in 0..50 {
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"again").await.unwrap();
        let mut b = [0u8; 5];
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), c.read_exact(&mut b)).await
        {
            ok = true;
            break;
        }
    }
    assert!(ok, "served again after descriptors were freed");
    assert_eq!(rh.stderr.count("server is down"), 0, "{}", rh.stderr.text());
}
