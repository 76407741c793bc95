//! Hot reload on SIGHUP: a valid file is applied atomically, anything else is rejected whole,
//! and no connection is refused or dropped either way.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use roundhouse::config::ClusterStatus;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn es_config(nodes: &[&FakeNode]) -> ConfigBuilder {
    let backend = nodes
        .iter()
        .fold(Backend::new("es"), |b, n| b.server(n.name(), n.addr()));
    ConfigBuilder::new().listener("es", "es").backend(backend)
}

#[tokio::test]
async fn a_valid_reload_applies_new_servers() {
    let nodes = three_nodes().await;
    let mut rh = Roundhouse::start(&es_config(&[&nodes[0], &nodes[1]]).yaml()).await;
    let addr = rh.listener("es").await;
    assert_eq!(tally(&names(addr, 6).await).len(), 2);
    let ready = rh
        .reload(&es_config(&[&nodes[0], &nodes[1], &nodes[2]]).yaml())
        .await;
    assert!(ready.contains("STATUS="), "{ready}");
    rh.notify
        .wait_for_status(&["serving 1 listener; es: 3/3 servers up"], SOON)
        .await;
    let counts = tally(&names(addr, 9).await);
    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        [3, 3, 3],
        "{counts:?}"
    );
    rh.stderr.wait_for(&["configuration reloaded"], SOON).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_reload_keeps_the_old_config() {
    let nodes = three_nodes().await;
    let good = es_config(&[&nodes[0], &nodes[1], &nodes[2]]);
    let mut rh = Roundhouse::start(&good.yaml()).await;
    let addr = rh.listener("es").await;
    let bad = good.yaml().replace(
        &format!("address: \"{}\"", nodes[1].addr()),
        "address: \"10.0.0.x:9200\"",
    );
    let ready = rh.reload(&bad).await;
    let status = ready
        .lines()
        .find_map(|l| l.strip_prefix("STATUS="))
        .unwrap()
        .to_owned();
    let expected_start = "reload rejected at ";
    assert!(status.starts_with(expected_start), "{status}");
    assert!(
        status.contains(": backends[0].servers[1].address: invalid address \"10.0.0.x:9200\": \"10.0.0.x\" is not a valid IP address; expected host:port such as 10.0.0.11:9200 or es-1.internal:9200; still serving config loaded at "),
        "{status}"
    );
    assert!(
        status.ends_with(" | serving 1 listener; es: 3/3 servers up"),
        "{status}"
    );
    let line = rh
        .stderr
        .wait_for(&["ERROR", "reload rejected"], SOON)
        .await;
    assert!(
        line.contains(&rh.config.display().to_string()),
        "names the file: {line}"
    );
    assert!(
        line.contains("backends[0].servers[1]"),
        "names the field: {line}"
    );
    // still serving, unchanged
    assert_eq!(tally(&names(addr, 9).await).len(), 3);
    // `check` says exactly what the reload said
    let (code, _, stderr) = run_cli(
        &["check", "--config", &rh.config.display().to_string()],
        &[],
    );
    assert_eq!(code, 78);
    assert!(
        stderr.contains("backends[0].servers[1].address: invalid address \"10.0.0.x:9200\""),
        "{stderr}"
    );
    // the next good reload clears the rejection
    rh.reload(&good.yaml()).await;
    assert_eq!(
        rh.notify.last_status().unwrap(),
        "serving 1 listener; es: 3/3 servers up"
    );
}

#[tokio::test]
async fn a_reload_to_a_disabled_file_is_rejected() {
    let nodes = three_nodes().await;
    let good = es_config(&[&nodes[0]]).yaml();
    let mut rh = Roundhouse::start(&good).await;
    let ready = rh
        .reload(&good.replace("enabled: true", "enabled: false"))
        .await;
    assert!(ready.contains("has enabled: false"), "{ready}");
    assert!(ready.contains("still serving config loaded at"), "{ready}");
    assert_eq!(node_name(rh.listener("es").await).await.unwrap(), "es-1");
}

#[tokio::test]
async fn an_unchanged_listener_keeps_its_socket() {
    let nodes = three_nodes().await;
    let mut rh = Roundhouse::start(&es_config(&[&nodes[0]]).yaml()).await;
    let before = rh.listener("es").await;
    rh.reload(&es_config(&[&nodes[1]]).yaml()).await;
    assert_eq!(
        rh.stderr.count("listening listener=es"),
        1,
        "no second bind: {}",
        rh.stderr.text()
    );
    // same socket (an OS-chosen port would differ if it had been bound anew), new backend
    rh.notify
        .wait_for_status(&["es: 1/1 servers up"], SOON)
        .await;
    assert_eq!(node_name(before).await.unwrap(), "es-2");
}

#[tokio::test]
async fn listeners_are_added_and_removed_and_removed_ones_drain() {
    let echo = EchoServer::start().await;
    let backend = echo_backend(&echo);
    let one = ConfigBuilder::new()
        .listener("a", "echo")
        .backend(backend.clone());
    let mut rh = Roundhouse::start(&one.yaml()).await;
    let a = rh.listener("a").await;
    let mut open = TcpStream::connect(a).await.unwrap();
    open.write_all(b"1").await.unwrap();
    open.read_exact(&mut [0u8; 1]).await.unwrap();

    let two = ConfigBuilder::new()
        .listener_at("b", "127.0.0.2:0", "echo", "")
        .backend(backend);
    rh.reload(&two.yaml()).await;
    let b = rh.listener("b").await;
    assert_eq!(b.ip().to_string(), "127.0.0.2");
    let mut fresh = TcpStream::connect(b)
        .await
        .expect("the new listener accepts");
    fresh.write_all(b"2").await.unwrap();
    fresh.read_exact(&mut [0u8; 1]).await.unwrap();
    rh.stderr
        .wait_for(&["stopped listening", "bind=127.0.0.1:0"], SOON)
        .await;
    assert!(
        TcpStream::connect(a).await.is_err(),
        "the removed listener no longer accepts"
    );
    // the connection it accepted before keeps working
    open.write_all(b"still here").await.unwrap();
    let mut buf = [0u8; 10];
    tokio::time::timeout(SOON, open.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"still here");
}

#[tokio::test]
async fn a_bind_failure_rejects_the_reload() {
    let nodes = three_nodes().await;
    let good = es_config(&[&nodes[0]]);
    let mut rh = Roundhouse::start(&good.yaml()).await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap();
    let bad = good
        .clone()
        .listener_at("more", &port.to_string(), "es", "");
    let ready = rh.reload(&bad.yaml()).await;
    assert!(
        ready.contains(&format!(
            "listeners[1].bind: cannot bind {port}: Address already in use"
        )),
        "{ready}"
    );
    assert_eq!(node_name(rh.listener("es").await).await.unwrap(), "es-1");
}

#[tokio::test]
async fn servers_that_stay_keep_their_health() {
    let nodes = three_nodes().await;
    let config = es_config(&[&nodes[0], &nodes[1], &nodes[2]])
        .backend(Backend::new("other").server("x", nodes[0].addr()));
    let mut rh = Roundhouse::start(&config.yaml()).await;
    let admin = rh.admin().await;
    nodes[1].set(|b| b.status = ClusterStatus::Red);
    rh.notify
        .wait_status(
            &["DEGRADED: es: 2/3 servers up (es-2: cluster status red)"],
            SOON,
        )
        .await;
    // stderr arrives through a pipe, apart from the notify socket: wait for the lines themselves
    rh.stderr.wait_count("server is up", 4, SOON).await;
    rh.stderr.wait_count("server is down", 1, SOON).await;
    let checks_before = checks_per_server(admin).await;
    // reload with other health settings: es-2 stays down with its reason, nobody flaps
    let changed = config.yaml().replacen("rise: 2", "rise: 3", 1);
    let ready = rh.reload(&changed).await;
    assert!(
        ready.contains("DEGRADED: es: 2/3 servers up (es-2: cluster status red)"),
        "{ready}"
    );
    // new settings mean a check at once: wait until every server has had it, then until every
    // line logged before a later event has arrived
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        let now = checks_per_server(admin).await;
        if now.iter().zip(&checks_before).all(|(n, b)| n > b) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every server was checked after the reload: {checks_before:?} -> {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    rh.log_barrier().await;
    assert_eq!(rh.stderr.count("server is up"), 4, "{}", rh.stderr.text());
    assert_eq!(rh.stderr.count("server is down"), 1, "{}", rh.stderr.text());
}

/// Health checks so far of es-1, es-2, es-3 and x, passed or failed.
async fn checks_per_server(admin: std::net::SocketAddr) -> Vec<f64> {
    let m = Scrape::from(admin).await;
    [
        ("es", "es-1"),
        ("es", "es-2"),
        ("es", "es-3"),
        ("other", "x"),
    ]
    .iter()
    .map(|(b, s)| {
        ["pass", "fail"]
            .iter()
            .map(|r| {
                m.find(
                    "roundhouse_server_health_checks_total",
                    &[("backend", b), ("server", s), ("result", r)],
                )
                .unwrap_or(0.0)
            })
            .sum()
    })
    .collect()
}

#[tokio::test]
async fn new_servers_are_checked_at_once_and_settings_apply_at_once() {
    let nodes = three_nodes().await;
    // checks every hour: only a reload can trigger the checks we see below
    let slow = |ns: &[&FakeNode], expect: &str| {
        let b = ns
            .iter()
            .fold(Backend::new("es"), |b, n| b.server(n.name(), n.addr()))
            .check("interval", "1h")
            .check("timeout", "1s")
            .check("fall", "1")
            .check("expect_status", expect);
        ConfigBuilder::new().listener("es", "es").backend(b).yaml()
    };
    let mut rh = Roundhouse::start(&slow(&[&nodes[0], &nodes[1]], "[green, yellow]")).await;
    nodes[0].set(|b| b.status = ClusterStatus::Yellow);
    let started = Instant::now();
    rh.reload(&slow(&[&nodes[0], &nodes[1], &nodes[2]], "[green]"))
        .await;
    rh.stderr
        .wait_for(&["server is up", "server=es-3"], SOON)
        .await;
    rh.notify
        .wait_for_status(
            &["DEGRADED: es: 2/3 servers up (es-1: cluster status yellow)"],
            SOON,
        )
        .await;
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_removed_server_gets_no_new_connections_and_its_open_ones_drain() {
    let echo1 = EchoServer::start().await;
    let echo2 = EchoServer::start().await;
    let config = |servers: &[(&str, &EchoServer)]| {
        let b = servers
            .iter()
            .fold(Backend::new("echo").check("type", "tcp"), |b, (n, e)| {
                b.server(n, e.addr)
            });
        ConfigBuilder::new()
            .listener("echo", "echo")
            .backend(b)
            .yaml()
    };
    let mut rh = Roundhouse::start(&config(&[("one", &echo1)])).await;
    let addr = rh.listener("echo").await;
    let mut open = TcpStream::connect(addr).await.unwrap();
    open.write_all(b"a").await.unwrap();
    open.read_exact(&mut [0u8; 1]).await.unwrap();
    assert_eq!(echo1.connections(), 1);
    rh.reload(&config(&[("two", &echo2)])).await;
    for _ in 0..3 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"b").await.unwrap();
        s.read_exact(&mut [0u8; 1]).await.unwrap();
    }
    assert_eq!(
        echo1.connections(),
        1,
        "no new connection to the removed server"
    );
    assert_eq!(echo2.connections(), 3);
    open.write_all(b"still").await.unwrap();
    let mut buf = [0u8; 5];
    tokio::time::timeout(SOON, open.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"still");
}

#[tokio::test]
async fn twenty_reloads_under_load_lose_no_request() {
    let nodes = three_nodes().await;
    let a = es_config(&[&nodes[0], &nodes[1], &nodes[2]]);
    let b = es_config(&[&nodes[0], &nodes[1]])
        .backend(Backend::new("spare").server("es-3", nodes[2].addr()));
    let mut rh = Roundhouse::start(&a.yaml()).await;
    let addr = rh.listener("es").await;
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(tokio::sync::Notify::new());
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (ok, failed, stop) = (ok.clone(), failed.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let stopped = stop.notified();
            tokio::pin!(stopped);
            loop {
                tokio::select! {
                    _ = &mut stopped => return,
                    r = http_get(addr, "/_cluster/health") => match r {
                        Ok((200, body)) if body.contains("\"status\":\"green\"") => ok.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    },
                };
            }
        }));
    }
    let started = Instant::now();
    for i in 0..20 {
        // spread the reloads over a second or so of client traffic
        tokio::time::sleep(Duration::from_millis(50)).await;
        let yaml = if i % 2 == 0 { b.yaml() } else { a.yaml() };
        let ready = rh.reload(&yaml).await;
        assert!(!ready.contains("rejected"), "{ready}");
    }
    stop.notify_waiters();
    for c in clients {
        c.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!(
        "reload under load: 20 reloads in {:?}, {ok} requests served, {failed} failed",
        started.elapsed()
    );
    assert_eq!(failed, 0);
    assert!(ok > 100, "the clients really ran during the reloads: {ok}");
    assert_eq!(rh.stderr.count("reload rejected"), 0);
}

#[tokio::test]
async fn the_watchdog_is_fed_at_half_its_period() {
    let nodes = three_nodes().await;
    // a 2s watchdog: a ping every second, and workers that beat every half second, so that
    // only a worker starved for a whole second, not a busy machine, withholds a ping
    let mut rh = Roundhouse::spawn_with(
        &es_config(&[&nodes[0]]).yaml(),
        &[("WATCHDOG_USEC", "2000000")],
    );
    rh.ready().await;
    let started = Instant::now();
    for _ in 0..3 {
        rh.notify.clear();
        rh.notify
            .wait_for(&["WATCHDOG=1"], Duration::from_secs(5))
            .await;
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(2900) && took < Duration::from_secs(8),
        "{took:?}"
    );
    assert_eq!(
        rh.stderr.count("not making progress"),
        0,
        "{}",
        rh.stderr.text()
    );
}

#[tokio::test]
async fn a_watchdog_meant_for_another_process_is_ignored() {
    let nodes = three_nodes().await;
    let mut rh = Roundhouse::spawn_with(
        &es_config(&[&nodes[0]]).yaml(),
        &[("WATCHDOG_USEC", "100000"), ("WATCHDOG_PID", "1")],
    );
    rh.ready().await;
    let res = tokio::time::timeout(
        Duration::from_millis(500),
        rh.notify.wait_for(&["WATCHDOG=1"], Duration::from_secs(1)),
    )
    .await;
    assert!(
        res.is_err(),
        "no watchdog pings for someone else's watchdog"
    );
}
