//! Keep-alive clients leave a server between two requests: a pooled connection to a server
//! that is drained, put in maintenance, goes down by its checks or is removed by a reload is
//! closed as soon as it is idle, its next request goes to another server on a new connection,
//! and a request in flight is never cut. Run with `--nocapture` to see the times measured.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::httpd::{HttpServer, reply};
use common::keepalive::{KeepAlive, change, idle_closes};
use common::scrape::{server, server_until, status};
use common::*;
use roundhouse::config::ClusterStatus;

/// How long a connection that must not be closed is watched after the drain has reached the
/// worker (a pooled connection of the same server has closed by then).
const WATCH: Duration = Duration::from_millis(300);

/// roundhouse over three fake nodes, one access log line per connection; every node up.
async fn over_nodes(nodes: &[FakeNode]) -> (Roundhouse, SocketAddr, SocketAddr) {
    let rh = Roundhouse::start(&nodes_config(nodes).yaml()).await;
    let (addr, admin) = (rh.listener("es").await, rh.admin().await);
    all_up(admin, "es", nodes.len()).await;
    (rh, addr, admin)
}

fn nodes_config(nodes: &[FakeNode]) -> ConfigBuilder {
    ConfigBuilder::new()
        .top("access_log: true")
        .listener("es", "es")
        .backend(nodes_backend("es", nodes))
}

/// A backend over fake nodes whose checks allow 1s: a pooled connection must not leave its
/// node because a check was slow on a busy machine (500ms was, at startup).
fn nodes_backend<'a>(name: &str, nodes: impl IntoIterator<Item = &'a FakeNode>) -> Backend {
    nodes
        .into_iter()
        .fold(Backend::new(name), |b, n| b.server(n.name(), n.addr()))
        .check("interval", "1s")
        .check("timeout", "1s")
}

/// Waits until `n` servers of the backend are up.
async fn all_up(admin: SocketAddr, backend: &str, n: usize) {
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        let st = status(admin).await;
        let b = st["backends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["name"] == backend)
            .unwrap();
        if b["servers_up"] == n {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "not all up: {b:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// roundhouse over test HTTP servers (backend `web`, framing followed, TCP checks).
async fn over_servers(servers: &[&HttpServer]) -> (Roundhouse, SocketAddr, SocketAddr) {
    let backend = servers
        .iter()
        .fold(Backend::new("web"), |b, s| b.server(&s.name, s.addr))
        .check("type", "tcp")
        .with("http_aware", "true");
    let rh = serve(backend).await;
    let (addr, admin) = (rh.listener("web").await, rh.admin().await);
    (rh, addr, admin)
}

/// A connection that has carried two requests to one node and now waits in the client's pool;
/// and the name of that node.
async fn pooled(addr: SocketAddr) -> (KeepAlive, String) {
    let (mut c, name) = KeepAlive::pooled(addr, "/").await;
    assert_eq!(c.get("/").await.name(), name, "one connection, one node");
    (c, name)
}

/// New connections go to the other nodes.
async fn next_requests_go_elsewhere(addr: SocketAddr, left: &str) {
    for _ in 0..4 {
        let (_, name) = KeepAlive::pooled(addr, "/").await;
        assert_ne!(name, left, "a new connection went to the server that left");
    }
}

#[tokio::test]
async fn an_idle_pooled_connection_closes_within_milliseconds_of_a_drain() {
    let nodes = three_nodes().await;
    let (_rh, addr, admin) = over_nodes(&nodes).await;
    let (mut c, name) = pooled(addr).await;
    let started = Instant::now();
    change(admin, "es", &name, "drain").await;
    let took = c.closed(started).await;
    println!("drain -> idle pooled connection closed: {took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    next_requests_go_elsewhere(addr, &name).await;
    idle_closes(admin, "es", &name, "drain", 1).await;
    let st = status(admin).await;
    let s = server(&st, "es", &name);
    assert_eq!(
        (
            &s["active_connections"],
            &s["requests_total"],
            &s["requests_in_flight"]
        ),
        (&0.into(), &2.into(), &0.into()),
        "{s:#}"
    );
}

#[tokio::test]
async fn an_idle_pooled_connection_closes_when_its_server_goes_into_maint() {
    let nodes = three_nodes().await;
    let (_rh, addr, admin) = over_nodes(&nodes).await;
    let (mut c, name) = pooled(addr).await;
    let started = Instant::now();
    change(admin, "es", &name, "maint").await;
    let took = c.closed(started).await;
    println!("maint -> idle pooled connection closed: {took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    next_requests_go_elsewhere(addr, &name).await;
    idle_closes(admin, "es", &name, "maint", 1).await;
    idle_closes(admin, "es", &name, "drain", 0).await;
}

#[tokio::test]
async fn an_idle_pooled_connection_closes_when_its_server_goes_down_by_its_checks() {
    let nodes = three_nodes().await;
    let (mut rh, addr, admin) = over_nodes(&nodes).await;
    let (mut c, name) = pooled(addr).await;
    let node = nodes.iter().find(|n| n.name() == name).unwrap();
    let started = Instant::now();
    node.set(|b| b.status = ClusterStatus::Red);
    // the close and the status line that says the node is down come from the same moment
    let (closed, down) = tokio::join!(
        async {
            c.closed(started).await;
            Instant::now()
        },
        async {
            rh.notify.wait_status(&["DEGRADED", &name], SOON).await;
            Instant::now()
        }
    );
    let after = closed.saturating_duration_since(down);
    let before = down.saturating_duration_since(closed);
    println!(
        "red -> down by checks after {:?}; idle pooled connection closed {after:?} after the status line ({before:?} before it)",
        down - started
    );
    assert!(after < Duration::from_secs(1), "{after:?}");
    next_requests_go_elsewhere(addr, &name).await;
    idle_closes(admin, "es", &name, "down", 1).await;
}

#[tokio::test]
async fn an_idle_pooled_connection_closes_when_a_reload_removes_its_server() {
    let nodes = three_nodes().await;
    let (mut rh, addr, _admin) = over_nodes(&nodes).await;
    let (mut c, name) = pooled(addr).await;
    let config = ConfigBuilder::new()
        .top("access_log: true")
        .listener("es", "es")
        .backend(nodes_backend(
            "es",
            nodes.iter().filter(|n| n.name() != name),
        ));
    let started = Instant::now();
    rh.reload(&config.yaml()).await;
    let reloaded = started.elapsed();
    let took = c.closed(started).await;
    println!(
        "reload without the server -> idle pooled connection closed: {took:?} (the reload took {reloaded:?})"
    );
    assert!(took < reloaded + Duration::from_secs(1), "{took:?}");
    next_requests_go_elsewhere(addr, &name).await;
    // the server's series left with it: the access log says why the connection closed
    rh.stderr
        .wait_for(
            &[&format!("-> es/{name} "), "idle_close (removed) requests=2"],
            SOON,
        )
        .await;
}

#[tokio::test]
async fn a_request_in_flight_is_answered_completely_before_the_close() {
    let (a, b) = (HttpServer::start("a").await, HttpServer::start("b").await);
    let (_rh, addr, admin) = over_servers(&[&a, &b]).await;
    let mut busy = KeepAlive::pooled_on(addr, "/name", "a").await;
    let mut idle = KeepAlive::pooled_on(addr, "/name", "a").await;
    let later = busy.held("a", "/bytes/300000?gate=1000").await;
    server_until(admin, "web", "a", "requests_in_flight", 1).await;

    let started = Instant::now();
    change(admin, "web", "a", "drain").await;
    let idle_took = idle.closed(started).await;
    busy.stays_open(WATCH).await;
    a.release();
    busy.expect(&later).await;
    let last_byte = Instant::now();
    let took = busy.closed(last_byte).await;
    println!(
        "drain: idle connection closed after {idle_took:?}; busy one {took:?} after its last response byte"
    );
    idle_closes(admin, "web", "a", "drain", 2).await;
    server_until(admin, "web", "a", "requests_in_flight", 0).await;
    let (_, name) = KeepAlive::pooled(addr, "/name").await;
    assert_eq!(name, "b");
}

/// Segments the socket has received (`tcpi_segs_in` of `TCP_INFO`).
fn segments_in(socket: &std::net::TcpStream) -> u32 {
    use std::os::fd::AsRawFd;
    // SAFETY: tcp_info is plain data, valid zeroed.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: a valid descriptor, and a buffer of `len` bytes that outlives the call.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    info.tcpi_segs_in
}

/// The close that follows a leaving server's last response comes with that response's last
/// bytes: a client that has read the whole answer already finds the connection closed, as a
/// pool checks before it reuses a connection, so it never sends a next request there for the
/// close to reset. Seen two ways: the last bytes and the FIN reach the client in one segment
/// (counted by the kernel: this fails on every run without the cork), and a client that reads
/// as fast as a thread can (spinning on non-blocking reads) and looks once more right after the
/// last byte finds the connection closed (without the cork, this failed in 6 runs of 20 on a
/// busy machine, none on a quiet one). The soak found it: a close that came 2 ms after the
/// answer, on a busy machine, reset the request sent in between.
#[tokio::test]
async fn the_close_after_a_leaving_servers_last_response_comes_with_its_last_byte() {
    let (a, b) = (HttpServer::start("a").await, HttpServer::start("b").await);
    let (_rh, addr, admin) = over_servers(&[&a, &b]).await;
    let mut busy = KeepAlive::pooled_on(addr, "/name", "a").await;
    let later = busy.held("a", "/bytes/1000?gate=5").await;
    server_until(admin, "web", "a", "requests_in_flight", 1).await;
    change(admin, "web", "a", "drain").await;

    let mut socket = busy.stream.into_std().expect("a std socket");
    let (spinning, spins) = tokio::sync::oneshot::channel();
    let reader = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let deadline = Instant::now() + SOON;
        let mut got = Vec::new();
        let mut byte = [0u8; 64];
        let before = segments_in(&socket);
        let _ = spinning.send(());
        while got.len() < later.len() {
            match socket.read(&mut byte) {
                Ok(0) => panic!(
                    "closed after {} of the last {} bytes",
                    got.len(),
                    later.len()
                ),
                Ok(n) => got.extend_from_slice(&byte[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "the last bytes did not come");
                    std::hint::spin_loop();
                }
                Err(e) => panic!("read: {e}"),
            }
        }
        assert_eq!(got, later, "the response's last bytes");
        // at once, as a pool looks before it sends the next request
        match socket.read(&mut byte) {
            Ok(0) => {}
            other => panic!(
                "the connection was still open right after the answer's last byte ({other:?}): \
                 a request sent now would be reset by the close"
            ),
        }
        assert_eq!(
            segments_in(&socket) - before,
            1,
            "the last bytes and the close in one segment"
        );
    });
    spins.await.expect("the reader started");
    a.release();
    reader.await.expect("the reader");
    idle_closes(admin, "web", "a", "drain", 1).await;
}

#[tokio::test]
async fn a_half_sent_request_is_answered_before_the_close() {
    let (a, b) = (HttpServer::start("a").await, HttpServer::start("b").await);
    let (_rh, addr, admin) = over_servers(&[&a, &b]).await;
    let mut busy = KeepAlive::pooled_on(addr, "/name", "a").await;
    let mut idle = KeepAlive::pooled_on(addr, "/name", "a").await;
    busy.send(b"GET /bytes/1000 HTTP/1.1\r\nHo").await;
    let started = Instant::now();
    change(admin, "web", "a", "drain").await;
    idle.closed(started).await;
    busy.stays_open(WATCH).await;
    busy.send(b"st: es\r\n\r\n").await;
    busy.expect(&reply("a", "GET", "/bytes/1000", b"").wire)
        .await;
    busy.closed(Instant::now()).await;
    idle_closes(admin, "web", "a", "drain", 2).await;
}

#[tokio::test]
async fn a_connection_that_never_carried_a_request_is_left_to_its_client() {
    let a = HttpServer::start("a").await;
    let (_rh, addr, admin) = over_servers(&[&a]).await;
    let mut fresh = KeepAlive::connect(addr).await;
    server_until(admin, "web", "a", "active_connections", 1).await;
    let (mut idle, _) = KeepAlive::pooled(addr, "/name").await;
    let started = Instant::now();
    change(admin, "web", "a", "drain").await;
    idle.closed(started).await;
    // its client may be sending its first request right now: closing it would be an error
    fresh.stays_open(WATCH).await;
    assert_eq!(fresh.get("/name").await.name(), "a");
    fresh.closed(Instant::now()).await;
    idle_closes(admin, "web", "a", "drain", 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_wait_returns_right_after_the_last_response() {
    let (a, b) = (HttpServer::start("a").await, HttpServer::start("b").await);
    let (rh, addr, admin) = over_servers(&[&a, &b]).await;
    let mut busy = KeepAlive::pooled_on(addr, "/name", "a").await;
    let mut idle = KeepAlive::pooled_on(addr, "/name", "a").await;
    let later = busy.held("a", "/chunked/100000?gate=5").await;

    let args = [
        "drain".to_owned(),
        "web".into(),
        "a".into(),
        "--admin".into(),
        admin.to_string(),
        "--config".into(),
        rh.config.display().to_string(),
        "--wait".into(),
        "--timeout".into(),
        "10s".into(),
    ];
    let started = Instant::now();
    let waiter = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_cli(&args, &[])
    });
    let idle_took = idle.closed(started).await;
    busy.stays_open(WATCH).await;
    assert!(
        !waiter.is_finished(),
        "drain --wait returned with a request in flight"
    );
    a.release();
    busy.expect(&later).await;
    let last_byte = Instant::now();
    let (code, out, err) = waiter.await.unwrap();
    let took = last_byte.elapsed();
    busy.closed(last_byte).await;
    println!(
        "drain --wait: idle connection closed {idle_took:?} after the command started; the command returned {took:?} after the last response byte; it said: {out}"
    );
    assert_eq!(code, 0, "{err}");
    // typically 15-50ms (the command polls every 50ms); a busy machine has taken 530ms
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert!(
        out.contains("web/a: drain (was ready); 2 open connection(s)"),
        "{out}"
    );
    assert!(
        out.contains("web/a has no open connection left (after 0."),
        "{out}"
    );
}

#[tokio::test]
async fn http_aware_false_keeps_the_byte_relay() {
    let nodes = three_nodes().await;
    let config = nodes_config(&nodes)
        .listener_at("plain", "127.0.0.2:0", "plain", "")
        .backend(nodes_backend("plain", &nodes).with("http_aware", "false"));
    let rh = Roundhouse::start(&config.yaml()).await;
    let (addr, plain, admin) = (
        rh.listener("es").await,
        rh.listener("plain").await,
        rh.admin().await,
    );
    all_up(admin, "es", 3).await;
    all_up(admin, "plain", 3).await;
    let (mut followed, name) = pooled(addr).await;
    let mut relayed = KeepAlive::pooled_on(plain, "/", &name).await;
    let started = Instant::now();
    change(admin, "es", &name, "drain").await;
    change(admin, "plain", &name, "drain").await;
    followed.closed(started).await;
    relayed.stays_open(WATCH).await;
    // the same connection, to the drained node, as before
    assert_eq!(relayed.get("/").await.name(), name);
    let st = status(admin).await;
    let plain_backend = st["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "plain")
        .unwrap();
    assert_eq!(plain_backend["http_aware"], false);
    let s = server(&st, "plain", &name);
    assert_eq!(
        (
            &s["active_connections"],
            &s["byte_relay_connections"],
            &s["requests_total"]
        ),
        (&1.into(), &1.into(), &0.into()),
        "{s:#}"
    );
    idle_closes(admin, "plain", &name, "drain", 0).await;
    // a byte relay by configuration: not a connection the relay stopped following
    let m = Scrape::from(admin).await;
    assert_eq!(
        m.sum("roundhouse_server_unfollowed_connections_total", &[]),
        0.0
    );
    drop(relayed);
    server_until(admin, "plain", &name, "active_connections", 0).await;
    server_until(admin, "plain", &name, "byte_relay_connections", 0).await;
}
