//! The admin endpoint and the command-line tools: /status, /healthz, drain, maint, ready, the
//! bearer token, bad requests, and the access log.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::scrape::{server, status};
use common::*;
use roundhouse::config::ClusterStatus;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A raw request to the admin endpoint; returns status code and body.
async fn raw(admin: SocketAddr, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(admin).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(SOON, s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

async fn post(admin: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    http_post(admin, path, token)
        .await
        .expect("POST to the admin endpoint")
}

#[tokio::test]
async fn status_reports_every_server_with_its_reason() {
    let nodes = three_nodes().await;
    let mut rh = serve(es_backend(&nodes)).await;
    let admin = rh.admin().await;
    let _ = names(rh.listener("es").await, 3).await;
    nodes[1].set(|b| b.status = ClusterStatus::Red);
    rh.notify.wait_status(&["DEGRADED"], SOON).await;
    let st = status(admin).await;
    assert_eq!(st["config"]["file"], rh.config.display().to_string());
    assert_eq!(st["last_reload"]["result"], "success");
    assert_eq!(st["listeners"][0]["name"], "es");
    assert_eq!(st["listeners"][0]["connections_total"], 3);
    let es2 = server(&st, "es", "es-2");
    assert_eq!(es2["state"], "down");
    assert_eq!(es2["reason"], "cluster status red");
    assert_eq!(es2["last_check"]["passed"], false);
    assert_eq!(es2["elasticsearch"]["status"], "red");
    assert_eq!(es2["elasticsearch"]["cluster_name"], "prod");
    assert_eq!(es2["elasticsearch"]["number_of_nodes"], 3);
    assert_eq!(es2["connections_total"], 1);
    assert_eq!(es2["address"], nodes[1].addr().to_string());
    assert!(es2["since"].as_str().unwrap().ends_with('Z'));
    let es1 = server(&st, "es", "es-1");
    assert_eq!(es1["state"], "up");
    assert_eq!(es1["reason"], serde_json::Value::Null);
    assert_eq!(st["backends"][0]["servers_up"], 2);
}

#[tokio::test]
async fn healthz_is_503_naming_a_backend_without_servers() {
    let nodes = three_nodes().await;
    let config = ConfigBuilder::new()
        .listener("es", "es")
        .backend(es_backend(&nodes[..2]))
        .backend(Backend::new("logs").server("es-3", nodes[2].addr()));
    let mut rh = Roundhouse::start(&config.yaml()).await;
    let admin = rh.admin().await;
    assert_eq!(http_get(admin, "/healthz").await.unwrap().0, 200);
    nodes[2].set(|b| b.mode = Mode::NoMaster);
    rh.notify.wait_status(&["DOWN"], SOON).await;
    let (code, body) = http_get(admin, "/healthz").await.unwrap();
    assert_eq!(code, 503);
    assert_eq!(body, "no server up in backend logs\n");
}

#[tokio::test]
async fn drain_stops_new_connections_and_lets_open_ones_finish() {
    let e1 = EchoServer::start().await;
    let e2 = EchoServer::start().await;
    let backend = Backend::new("echo")
        .server("a", e1.addr)
        .server("b", e2.addr)
        .check("type", "tcp");
    let rh = serve(backend).await;
    let (addr, admin) = (rh.listener("echo").await, rh.admin().await);
    let mut open = TcpStream::connect(addr).await.unwrap(); // goes to "a"
    open.write_all(b"1").await.unwrap();
    open.read_exact(&mut [0u8; 1]).await.unwrap();
    assert_eq!(e1.connections(), 1);

    let (code, body) = post(admin, "/servers/echo/a/drain", None).await;
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["state"].as_str(), v["active_connections"].as_i64()),
        (Some("drain"), Some(1))
    );
    for _ in 0..4 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"2").await.unwrap();
        s.read_exact(&mut [0u8; 1]).await.unwrap();
    }
    assert_eq!(
        (e1.connections(), e2.connections()),
        (1, 4),
        "no new connection to a drained server"
    );
    open.write_all(b"still").await.unwrap();
    let mut buf = [0u8; 5];
    open.read_exact(&mut buf).await.unwrap();
    assert_eq!(
        server(&status(admin).await, "echo", "a")["active_connections"],
        1
    );
    drop(open);

    assert_eq!(post(admin, "/servers/echo/a/ready", None).await.0, 200);
    for _ in 0..2 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"3").await.unwrap();
        s.read_exact(&mut [0u8; 1]).await.unwrap();
    }
    assert_eq!(e1.connections(), 2, "back in rotation");
}

#[tokio::test]
async fn maint_pauses_health_checks_and_ready_resumes_them() {
    let nodes = three_nodes().await;
    let rh = serve(es_backend(&nodes)).await;
    let admin = rh.admin().await;
    assert_eq!(post(admin, "/servers/es/es-2/maint", None).await.0, 200);
    let checks = nodes[1].health_requests();
    tokio::time::sleep(Duration::from_millis(500)).await; // five check intervals
    assert!(
        nodes[1].health_requests() <= checks + 1,
        "checks paused (one may have been in flight)"
    );
    let st = status(admin).await;
    assert_eq!(server(&st, "es", "es-2")["state"], "maint");
    assert!(
        !names(rh.listener("es").await, 6)
            .await
            .contains(&"es-2".to_owned())
    );
    let paused = nodes[1].health_requests();
    assert_eq!(post(admin, "/servers/es/es-2/ready", None).await.0, 200);
    let deadline = tokio::time::Instant::now() + SOON;
    while nodes[1].health_requests() == paused {
        assert!(tokio::time::Instant::now() < deadline, "checks resumed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn admin_state_survives_a_reload() {
    let nodes = three_nodes().await;
    let config = ConfigBuilder::new()
        .listener("es", "es")
        .backend(es_backend(&nodes));
    let mut rh = Roundhouse::start(&config.yaml()).await;
    let admin = rh.admin().await;
    assert_eq!(post(admin, "/servers/es/es-3/drain", None).await.0, 200);
    rh.reload(&config.yaml().replacen("rise: 2", "rise: 3", 1))
        .await;
    assert_eq!(server(&status(admin).await, "es", "es-3")["state"], "drain");
    let status_line = rh.notify.last_status().unwrap();
    assert_eq!(status_line, "DEGRADED: es: 2/3 servers up (es-3: draining)");
}

#[tokio::test]
async fn a_change_that_sends_a_body_is_refused_and_changes_nothing() {
    let nodes = three_nodes().await;
    let rh = serve(es_backend(&nodes)).await;
    let admin = rh.admin().await;
    for framing in ["Content-Length: 5\r\n", "Transfer-Encoding: chunked\r\n"] {
        let body = if framing.starts_with("Content") {
            "hello"
        } else {
            "5\r\nhello\r\n0\r\n\r\n"
        };
        let (code, answer) = raw(
            admin,
            &format!(
                "POST /servers/es/es-1/drain HTTP/1.1\r\nHost: x\r\n{framing}Connection: close\r\n\r\n{body}"
            ),
        )
        .await;
        assert_eq!(code, 400, "{answer}");
        assert!(answer.contains("changes take no request body"), "{answer}");
    }
    let st = status(admin).await;
    assert_eq!(server(&st, "es", "es-1")["admin_state"], "ready", "{st:#}");
}

#[tokio::test]
async fn unknown_names_are_404_and_bad_requests_400() {
    let nodes = three_nodes().await;
    let rh = serve(es_backend(&nodes)).await;
    let admin = rh.admin().await;
    let (code, body) = post(admin, "/servers/nope/es-1/drain", None).await;
    assert_eq!(
        (code, body.contains("no backend named \\\"nope\\\"")),
        (404, true),
        "{body}"
    );
    let (code, body) = post(admin, "/servers/es/es-9/drain", None).await;
    assert_eq!(
        (
            code,
            body.contains("no server named \\\"es-9\\\" in backend \\\"es\\\"")
        ),
        (404, true),
        "{body}"
    );
    let (code, body) = post(admin, "/servers/es/es-1/explode", None).await;
    assert_eq!(
        (code, body.contains("expected drain, maint or ready")),
        (400, true),
        "{body}"
    );
    let (code, _) = post(admin, "/servers/es/es-1%zz/drain", None).await;
    assert_eq!(code, 400);
    let (code, _) = raw(
        admin,
        "GET /servers/es/es-1/drain HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(code, 405);
    let (code, _) = raw(
        admin,
        "GET /nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(code, 404);
    let (code, _) = raw(admin, "BREW /coffee HTCPCP/1.0\r\n\r\n").await;
    assert_eq!(code, 400);
}

#[tokio::test]
async fn garbage_and_oversized_requests_never_hurt_the_proxy() {
    let nodes = three_nodes().await;
    let rh = serve(es_backend(&nodes)).await;
    let (addr, admin) = (rh.listener("es").await, rh.admin().await);
    let huge_header = format!(
        "GET /status HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(200_000)
    );
    let many_headers = format!("GET /status HTTP/1.1\r\n{}\r\n", "X-A: b\r\n".repeat(5000));
    let corpus: Vec<Vec<u8>> = vec![
        b"\x00\x01\x02\x03\xff\xfe\xfd".to_vec(),
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(), // a TLS hello
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        b"GET /status HTTP/9.9\r\n\r\n".to_vec(),
        b"GET http://evil/status HTTP/1.1\r\nHost: evil\r\n\r\n".to_vec(),
        b"POST /servers/es/es-1/drain HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\nxx".to_vec(),
        b"POST /servers/es/es-1/drain HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzzz\r\n"
            .to_vec(),
        b"GET /../../etc/passwd HTTP/1.1\r\n\r\n".to_vec(),
        b"GET /status\r\n".to_vec(),
        huge_header.into_bytes(),
        many_headers.into_bytes(),
        vec![b'A'; 1 << 20],
    ];
    for req in &corpus {
        if let Ok(mut s) = TcpStream::connect(admin).await {
            let _ = s.write_all(req).await;
            let mut sink = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut sink)).await;
        }
    }
    // more idle connections than the endpoint serves at once, each sending half a request
    let mut idle = Vec::new();
    for _ in 0..100 {
        if let Ok(mut s) = TcpStream::connect(admin).await {
            let _ = s.write_all(b"GET /status HTTP/1.1\r\nHo").await;
            idle.push(s);
        }
    }
    // the proxy is untouched...
    assert_eq!(names(addr, 3).await.len(), 3);
    // ...and the endpoint answers again once the half-sent requests time out or go away
    drop(idle);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok((200, _)) = http_get(admin, "/healthz").await {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "admin endpoint recovered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(rh.stderr.count("panicked"), 0, "{}", rh.stderr.text());
    let status = rh.notify.last_status().unwrap_or_default();
    assert!(status.starts_with("serving"), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_need_the_token_when_one_is_configured() {
    let nodes = three_nodes().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, "correct horse battery staple\n").unwrap();
    let config = ConfigBuilder::new()
        .listener("es", "es")
        .backend(es_backend(&nodes))
        .yaml()
        .replace(
            "admin:\n  bind: 127.0.0.1:0\n",
            &format!(
                "admin:\n  bind: 127.0.0.1:0\n  token_file: {}\n",
                token_file.display()
            ),
        );
    let rh = Roundhouse::start(&config).await;
    let admin = rh.admin().await;
    let (code, body) = post(admin, "/servers/es/es-1/drain", None).await;
    assert_eq!(code, 401, "{body}");
    assert_eq!(
        post(admin, "/servers/es/es-1/drain", Some("wrong")).await.0,
        401
    );
    assert_eq!(
        post(
            admin,
            "/servers/es/es-1/drain",
            Some("correct horse battery staple")
        )
        .await
        .0,
        200
    );
    assert_eq!(
        http_get(admin, "/status").await.unwrap().0,
        200,
        "reading needs no token"
    );
    // the CLI reads the token file named in the config
    let cfg = rh.config.display().to_string();
    let a = admin.to_string();
    let (code, out, err) = run_cli(
        &["ready", "es", "es-1", "--admin", &a, "--config", &cfg],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("es/es-1: ready (was drain)"), "{out}");
    let (code, _, err) = run_cli(
        &[
            "drain",
            "es",
            "es-1",
            "--admin",
            &a,
            "--config",
            "/nonexistent",
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert!(err.contains("HTTP 401"), "{err}");
    // the token is never shown
    assert!(
        !http_get(admin, "/status")
            .await
            .unwrap()
            .1
            .contains("horse")
    );
    assert!(!Scrape::from(admin).await.text.contains("horse"));
    assert!(!rh.stderr.text().contains("horse"));
}

#[test]
fn an_admin_endpoint_reachable_from_outside_needs_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.yaml");
    let config = ConfigBuilder::new()
        .listener("es", "es")
        .backend(Backend::new("es").server("es-1", "127.0.0.1:9200".parse().unwrap()))
        .yaml()
        .replace("bind: 127.0.0.1:0\n", "bind: 0.0.0.0:9901\n");
    std::fs::write(&path, config).unwrap();
    let (code, _, err) = run_cli(&["check", "--config", path.to_str().unwrap()], &[]);
    assert_eq!(code, 78);
    assert!(
        err.contains(
            "admin.bind: 0.0.0.0:9901 is reachable from other hosts: set admin.token_file"
        ),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_shows_a_status_table_and_drains_with_wait() {
    let echo = EchoServer::start().await;
    let nodes = three_nodes().await;
    let config = ConfigBuilder::new()
        .listener("es", "es")
        .backend(es_backend(&nodes).check("cluster_name", "prod"))
        .listener_at("echo", "127.0.0.2:0", "echo", "")
        .backend(
            Backend::new("echo")
                .server("e", echo.addr)
                .check("type", "tcp"),
        );
    let rh = Roundhouse::start(&config.yaml()).await;
    let _ = names(rh.listener("es").await, 3).await;
    nodes[2].set(|b| b.cluster_name = "staging".into());
    let a = rh.admin().await.to_string();
    let cfg = rh.config.display().to_string();
    let deadline = tokio::time::Instant::now() + SOON;
    let out = loop {
        let (code, out, err) = run_cli(&["status", "--admin", &a, "--config", &cfg], &[]);
        assert_eq!(code, 0, "{err}");
        if out.contains("es-3") && out.contains("down") {
            break out;
        }
        assert!(tokio::time::Instant::now() < deadline, "{out}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let header = out.lines().next().unwrap();
    for col in [
        "BACKEND",
        "SERVER",
        "STATE",
        "SINCE",
        "LAST CHECK",
        "ACTIVE",
        "IN FLIGHT",
        "RELAYS",
        "TOTAL",
        "BYTES IN",
        "BYTES OUT",
    ] {
        assert!(header.contains(col), "{header}");
    }
    let es1 = out.lines().find(|l| l.contains("es-1")).unwrap();
    assert!(
        es1.contains("up") && es1.contains("ok (green, 3 nodes)"),
        "{es1}"
    );
    let es3 = out.lines().find(|l| l.contains("es-3")).unwrap();
    assert!(es3.contains("cluster_name is staging, want prod"), "{es3}");

    // drain --wait returns once the last open connection closed
    let mut open = TcpStream::connect(rh.listener("echo").await).await.unwrap();
    open.write_all(b"x").await.unwrap();
    open.read_exact(&mut [0u8; 1]).await.unwrap();
    let args = [
        "drain",
        "echo",
        "e",
        "--admin",
        &a,
        "--config",
        &cfg,
        "--wait",
        "--timeout",
        "10s",
    ]
    .map(String::from);
    let waiter = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_cli(&args, &[])
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !waiter.is_finished(),
        "still waiting while a connection is open"
    );
    drop(open);
    let (code, out, err) = waiter.await.unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("echo/e: drain (was ready); 1 open connection(s)"),
        "{out}"
    );
    assert!(out.contains("echo/e has no open connection left"), "{out}");
}

#[tokio::test]
async fn the_access_log_has_a_line_per_connection() {
    let echo = EchoServer::start().await;
    let backend = echo_backend(&echo);
    let config = ConfigBuilder::new()
        .top("access_log: true")
        .listener("echo", "echo")
        .backend(backend);
    let rh = Roundhouse::start(&config.yaml()).await;
    let addr = rh.listener("echo").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let local = s.local_addr().unwrap();
    s.write_all(b"hello").await.unwrap();
    s.shutdown().await.unwrap();
    let mut back = Vec::new();
    s.read_to_end(&mut back).await.unwrap();
    let line = rh
        .stderr
        .wait_for(
            &["INFO", &format!("echo {local} -> echo/echo-1 up=5 down=5 ")],
            SOON,
        )
        .await;
    assert!(line.ends_with(" closed"), "{line}");
}
