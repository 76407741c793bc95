//! `/metrics` after real traffic: the values must be what happened.

mod common;

use std::net::SocketAddr;

use common::scrape::Scrape;
use common::*;
use roundhouse::config::ClusterStatus;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Scrapes until `ready` holds (counters settle when connections close).
async fn settled(admin: SocketAddr, ready: impl Fn(&Scrape) -> bool) -> Scrape {
    Scrape::until(admin, "metrics settled", ready).await
}

const ECHO: [(&str, &str); 2] = [("backend", "echo"), ("server", "echo-1")];

async fn echo_roundhouse(echo: &EchoServer, extra: Backend) -> Roundhouse {
    let backend = echo_backend(echo);
    let config = ConfigBuilder::new()
        .listener("echo", "echo")
        .backend(backend)
        .backend(extra);
    Roundhouse::start(&config.yaml()).await
}

async fn echo_through(addr: SocketAddr, bytes: usize) {
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut r, mut w) = s.into_split();
    let data = vec![b'x'; bytes];
    let writer = tokio::spawn(async move {
        w.write_all(&data).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut got = Vec::new();
    r.read_to_end(&mut got).await.unwrap();
    writer.await.unwrap();
    assert_eq!(got.len(), bytes);
}

#[tokio::test]
async fn connection_and_byte_counts_are_exact() {
    let echo = EchoServer::start().await;
    let rh = echo_roundhouse(
        &echo,
        Backend::new("unused")
            .server("u", echo.addr)
            .check("type", "tcp"),
    )
    .await;
    let (addr, admin) = (rh.listener("echo").await, rh.admin().await);
    // 100 KB, 1 MB and 3 MB: below, at and well above the batching of byte counts
    for bytes in [100_000, 1_000_000, 3_000_000] {
        echo_through(addr, bytes).await;
    }
    let m = settled(admin, |m| {
        m.find("roundhouse_server_active_connections", &ECHO) == Some(0.0)
    })
    .await;
    assert_eq!(
        m.get("roundhouse_server_sent_bytes_total", &ECHO),
        4_100_000.0
    );
    assert_eq!(
        m.get("roundhouse_server_received_bytes_total", &ECHO),
        4_100_000.0
    );
    assert_eq!(m.get("roundhouse_server_connections_total", &ECHO), 3.0);
    assert_eq!(
        m.get(
            "roundhouse_listener_connections_total",
            &[("listener", "echo")]
        ),
        3.0
    );
    assert_eq!(
        m.get(
            "roundhouse_listener_active_connections",
            &[("listener", "echo")]
        ),
        0.0
    );
    assert_eq!(
        m.get(
            "roundhouse_server_connect_duration_seconds_count",
            &[("backend", "echo")]
        ),
        3.0
    );
    assert_eq!(m.get("roundhouse_server_up", &ECHO), 1.0);
    assert_eq!(
        m.get("roundhouse_backend_servers_up", &[("backend", "echo")]),
        1.0
    );
    assert_eq!(
        m.get(
            "roundhouse_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert_eq!(
        m.get("roundhouse_config_reloads_total", &[("result", "success")]),
        1.0
    );
    assert_eq!(m.get("roundhouse_config_last_reload_successful", &[]), 1.0);
}

/// The test configuration runs two workers: every connection is counted once, on one of them.
#[tokio::test]
async fn every_accepted_connection_is_counted_on_one_worker() {
    let echo = EchoServer::start().await;
    let rh = echo_roundhouse(
        &echo,
        Backend::new("unused")
            .server("u", echo.addr)
            .check("type", "tcp"),
    )
    .await;
    let (addr, admin) = (rh.listener("echo").await, rh.admin().await);
    for _ in 0..20 {
        echo_through(addr, 10).await;
    }
    let m = settled(admin, |m| {
        m.find(
            "roundhouse_listener_connections_total",
            &[("listener", "echo")],
        ) == Some(20.0)
    })
    .await;
    let accepted = "roundhouse_worker_connections_accepted_total";
    assert_eq!(m.sum(accepted, &[]), 20.0, "{}", m.text);
    for worker in ["0", "1"] {
        assert!(
            m.find(accepted, &[("worker", worker)]).is_some(),
            "{}",
            m.text
        );
    }
    assert_eq!(m.find(accepted, &[("worker", "2")]), None);
}

#[tokio::test]
async fn open_connections_are_counted_while_open() {
    let echo = EchoServer::start().await;
    let rh = echo_roundhouse(&echo, Backend::new("unused").server("u", echo.addr)).await;
    let (addr, admin) = (rh.listener("echo").await, rh.admin().await);
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"x").await.unwrap();
        s.read_exact(&mut [0u8; 1]).await.unwrap();
        open.push(s);
    }
    let m = Scrape::from(admin).await;
    assert_eq!(m.get("roundhouse_server_active_connections", &ECHO), 3.0);
    assert_eq!(
        m.get(
            "roundhouse_listener_active_connections",
            &[("listener", "echo")]
        ),
        3.0
    );
    drop(open);
    settled(admin, |m| {
        m.find("roundhouse_server_active_connections", &ECHO) == Some(0.0)
    })
    .await;
}

#[tokio::test]
async fn server_state_and_cluster_colour_follow_health() {
    let nodes = three_nodes().await;
    let mut rh = serve(es_backend(&nodes)).await;
    let admin = rh.admin().await;
    let es2 = [("backend", "es"), ("server", "es-2")];
    let m = Scrape::from(admin).await;
    assert_eq!(m.get("roundhouse_server_up", &es2), 1.0);
    assert_eq!(
        m.get(
            "roundhouse_elasticsearch_cluster_status",
            &[es2[0], es2[1], ("status", "green")]
        ),
        1.0
    );
    nodes[1].set(|b| b.status = ClusterStatus::Red);
    rh.notify.wait_status(&["DEGRADED"], SOON).await;
    let m = Scrape::from(admin).await;
    assert_eq!(m.get("roundhouse_server_up", &es2), 0.0);
    for (state, v) in [("up", 0.0), ("down", 1.0), ("drain", 0.0), ("maint", 0.0)] {
        assert_eq!(
            m.get(
                "roundhouse_server_state",
                &[es2[0], es2[1], ("state", state)]
            ),
            v,
            "{state}"
        );
    }
    assert_eq!(
        m.get(
            "roundhouse_elasticsearch_cluster_status",
            &[es2[0], es2[1], ("status", "red")]
        ),
        1.0
    );
    assert_eq!(
        m.get(
            "roundhouse_elasticsearch_cluster_status",
            &[es2[0], es2[1], ("status", "green")]
        ),
        0.0
    );
    assert_eq!(m.get("roundhouse_server_state_changes_total", &es2), 1.0);
    assert!(
        m.get(
            "roundhouse_server_health_checks_total",
            &[es2[0], es2[1], ("result", "fail")]
        ) >= 2.0
    );
    assert!(
        m.get(
            "roundhouse_server_health_checks_total",
            &[es2[0], es2[1], ("result", "pass")]
        ) >= 1.0
    );
    assert_eq!(
        m.get("roundhouse_backend_servers_up", &[("backend", "es")]),
        2.0
    );
    assert!(
        m.get(
            "roundhouse_server_health_check_duration_seconds_count",
            &[("backend", "es")]
        ) >= 3.0
    );
}

#[tokio::test]
async fn refused_clients_are_counted_by_reason() {
    let nodes = three_nodes().await;
    for n in &nodes {
        n.set(|b| b.status = ClusterStatus::Red);
    }
    let config = ConfigBuilder::new()
        .listener("es", "es")
        .backend(es_backend(&nodes).with("when_all_unhealthy", "fail_closed"));
    let rh = Roundhouse::start(&config.yaml()).await;
    let (addr, admin) = (rh.listener("es").await, rh.admin().await);
    for _ in 0..4 {
        let _ = http_get(addr, "/").await;
    }
    let m = settled(admin, |m| {
        m.find(
            "roundhouse_listener_rejected_connections_total",
            &[("listener", "es"), ("reason", "no_healthy_server")],
        ) == Some(4.0)
    })
    .await;
    assert_eq!(
        m.get(
            "roundhouse_listener_connections_total",
            &[("listener", "es")]
        ),
        4.0
    );
    assert_eq!(
        m.get(
            "roundhouse_listener_rejected_connections_total",
            &[("listener", "es"), ("reason", "max_connections")]
        ),
        0.0
    );
}

#[tokio::test]
async fn clients_beyond_max_connections_are_counted() {
    let echo = EchoServer::start().await;
    let backend = echo_backend(&echo);
    let config = ConfigBuilder::new()
        .listener_at("echo", "127.0.0.1:0", "echo", ", max_connections: 1")
        .backend(backend);
    let rh = Roundhouse::start(&config.yaml()).await;
    let (addr, admin) = (rh.listener("echo").await, rh.admin().await);
    let mut held = TcpStream::connect(addr).await.unwrap();
    held.write_all(b"x").await.unwrap();
    held.read_exact(&mut [0u8; 1]).await.unwrap();
    let mut refused = TcpStream::connect(addr).await.unwrap();
    let n = refused.read(&mut [0u8; 1]).await;
    assert!(matches!(n, Ok(0) | Err(_)));
    let m = Scrape::from(admin).await;
    let l = [("listener", "echo"), ("reason", "max_connections")];
    assert_eq!(
        m.get("roundhouse_listener_rejected_connections_total", &l),
        1.0
    );
    assert_eq!(
        m.get(
            "roundhouse_listener_connections_total",
            &[("listener", "echo")]
        ),
        2.0
    );
    assert_eq!(
        m.get(
            "roundhouse_listener_active_connections",
            &[("listener", "echo")]
        ),
        1.0
    );
}

#[tokio::test]
async fn connect_failures_are_counted() {
    let mut nodes = three_nodes().await;
    let backend = es_backend(&nodes)
        .check("interval", "1h")
        .check("timeout", "1s")
        .check("fall", "5");
    let rh = serve(backend).await;
    let (addr, admin) = (rh.listener("es").await, rh.admin().await);
    nodes.remove(0).stop().await;
    let seen = names(addr, 6).await;
    assert_eq!(seen.len(), 6);
    let m = Scrape::from(admin).await;
    // es-1 has every third turn, and a retry takes the next turn: so es-1 is tried (and fails)
    // for clients 1, 3 and 5, who are then served by es-2

    assert_eq!(
        m.get(
            "roundhouse_server_connect_failures_total",
            &[("backend", "es"), ("server", "es-1")]
        ),
        3.0
    );
    assert_eq!(
        m.get(
            "roundhouse_server_connections_total",
            &[("backend", "es"), ("server", "es-1")]
        ),
        0.0
    );
}

#[tokio::test]
async fn counters_survive_a_reload_and_removed_servers_disappear() {
    let echo = EchoServer::start().await;
    let other = EchoServer::start().await;
    let backend = |with_other: bool| {
        let b = echo_backend(&echo);
        if with_other {
            b.server("echo-2", other.addr)
        } else {
            b
        }
    };
    let config = |with_other| {
        ConfigBuilder::new()
            .listener("echo", "echo")
            .backend(backend(with_other))
            .yaml()
    };
    let mut rh = Roundhouse::start(&config(true)).await;
    let (addr, admin) = (rh.listener("echo").await, rh.admin().await);
    for _ in 0..4 {
        echo_through(addr, 1000).await;
    }
    let before = settled(admin, |m| {
        m.find("roundhouse_server_active_connections", &ECHO) == Some(0.0)
    })
    .await;
    assert_eq!(
        before.get("roundhouse_server_connections_total", &ECHO),
        2.0
    );
    rh.reload(&config(false)).await;
    let after = Scrape::from(admin).await;
    assert_eq!(
        after.get("roundhouse_server_connections_total", &ECHO),
        2.0,
        "kept across the reload"
    );
    assert_eq!(
        after.get("roundhouse_server_sent_bytes_total", &ECHO),
        2000.0
    );
    assert_eq!(
        after.find(
            "roundhouse_server_up",
            &[("backend", "echo"), ("server", "echo-2")]
        ),
        None
    );
    assert_eq!(
        after.get("roundhouse_config_reloads_total", &[("result", "success")]),
        2.0
    );
    // a rejected reload is counted and flagged
    rh.reload("enabled: false\n").await;
    let rejected = Scrape::from(admin).await;
    assert_eq!(
        rejected.get("roundhouse_config_reloads_total", &[("result", "failure")]),
        1.0
    );
    assert_eq!(
        rejected.get("roundhouse_config_last_reload_successful", &[]),
        0.0
    );
    assert_eq!(
        rejected.get(
            "roundhouse_config_last_reload_success_timestamp_seconds",
            &[]
        ),
        after.get(
            "roundhouse_config_last_reload_success_timestamp_seconds",
            &[]
        )
    );
}

#[tokio::test]
#[ignore = "needs promtool (Debian package prometheus); .ci/run installs it and runs: cargo test --test metrics -- --ignored"]
async fn promtool_finds_nothing_to_complain_about() {
    let nodes = three_nodes().await;
    nodes[0].set(|b| b.status = ClusterStatus::Yellow);
    let rh = serve(es_backend(&nodes)).await;
    let _ = names(rh.listener("es").await, 3).await;
    let m = Scrape::from(rh.admin().await).await;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is installed (apt-get install prometheus)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(m.text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool says:\n{said}"
    );
}
