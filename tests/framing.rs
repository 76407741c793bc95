//! HTTP/1.1 framing followed through the relay, end to end: every shape of request and response
//! arrives byte for byte, and roundhouse knows where each one ends. That it knows is shown by a
//! drain: a connection closes right after the last byte of its last response, and not one
//! byte earlier (a held-back end keeps it open). A stream that is not HTTP/1.1 is relayed as
//! bytes, counted, and left to end by itself.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::httpd::{HttpServer, chunked, pattern, reply};
use common::keepalive::{KeepAlive, change, idle_closes};
use common::scrape::{server, server_until, status};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a connection that must not be closed is watched after the drain has reached the
/// worker (a pooled connection of the same server has closed by then).
const WATCH: Duration = Duration::from_millis(300);

/// roundhouse in front of one test server `a` (backend `web`, framing followed).
struct Setup {
    a: HttpServer,
    addr: SocketAddr,
    admin: SocketAddr,
    _rh: Roundhouse,
}

impl Setup {
    async fn start() -> Setup {
        let a = HttpServer::start("a").await;
        let backend = Backend::new("web")
            .server("a", a.addr)
            .check("type", "tcp")
            .with("http_aware", "true");
        let rh = serve(backend).await;
        let (addr, admin) = (rh.listener("web").await, rh.admin().await);
        Setup {
            a,
            addr,
            admin,
            _rh: rh,
        }
    }

    /// An idle pooled connection: it closes once a drain has reached the workers.
    async fn witness(&self) -> KeepAlive {
        KeepAlive::pooled(self.addr, "/name").await.0
    }

    /// Drains `a`; returns once `witness` has closed.
    async fn drain(&self, mut witness: KeepAlive) -> Duration {
        let started = Instant::now();
        change(self.admin, "web", "a", "drain").await;
        witness.closed(started).await
    }

    /// The connection was followed to its end (`requests` on `a` in all, nothing in flight,
    /// nothing relayed as bytes) and a drain closes it at once; returns how soon.
    async fn idle_closes(&self, mut c: KeepAlive, requests: u64) -> Duration {
        server_until(self.admin, "web", "a", "requests_total", requests as i64).await;
        // the relay counts a response done just after it wrote its last byte, so the client
        // may have it a moment before the gauge falls (seen once on a busy machine)
        server_until(self.admin, "web", "a", "requests_in_flight", 0).await;
        let st = status(self.admin).await;
        let s = server(&st, "web", "a");
        assert_eq!(s["requests_in_flight"], 0, "{s:#}");
        assert_eq!(s["byte_relay_connections"], 0, "{s:#}");
        let started = Instant::now();
        change(self.admin, "web", "a", "drain").await;
        let took = c.closed(started).await;
        idle_closes(self.admin, "web", "a", "drain", 1).await;
        let m = Scrape::from(self.admin).await;
        assert!(
            !m.text
                .contains("roundhouse_server_unfollowed_connections_total{"),
            "{}",
            m.text
        );
        took
    }

    /// `c` has received all of `want` but the last `held` bytes, which the server holds back:
    /// a drain leaves it open until they have come, then closes it.
    async fn closes_after_the_held_end(&self, c: &mut KeepAlive, want: &[u8], held: usize) {
        let witness = self.witness().await;
        c.expect(&want[..want.len() - held]).await;
        self.drain(witness).await;
        c.stays_open(WATCH).await;
        self.a.release();
        c.expect(&want[want.len() - held..]).await;
        let took = c.closed(Instant::now()).await;
        println!("closed {took:?} after the last byte of the response");
        idle_closes(self.admin, "web", "a", "drain", 2).await;
    }
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: es\r\n\r\n").into_bytes()
}

#[tokio::test]
async fn chunked_responses_are_followed_to_the_end_of_their_trailers() {
    let s = Setup::start().await;
    let mut c = KeepAlive::connect(s.addr).await;
    c.send(&get("/chunked/3000")).await;
    c.expect(&reply("a", "GET", "/chunked/3000", b"").wire)
        .await;
    let r = c.get("/chunked/20000").await;
    assert_eq!(r.body, pattern(20000));
    assert!(
        r.raw
            .ends_with(b"0\r\nX-Length: 20000\r\nX-Done: yes\r\n\r\n")
    );
    // held back: the empty line that ends the trailers
    let path = "/chunked/100000?gate=2";
    c.send(&get(path)).await;
    s.closes_after_the_held_end(&mut c, &reply("a", "GET", path, b"").wire, 2)
        .await;
}

#[tokio::test]
async fn head_responses_end_with_their_head_whatever_length_they_announce() {
    let s = Setup::start().await;
    let mut c = KeepAlive::connect(s.addr).await;
    for (method, path) in [
        ("HEAD", "/bytes/5000"),
        ("GET", "/bytes/10"),
        ("HEAD", "/chunked/5000"),
    ] {
        c.send(format!("{method} {path} HTTP/1.1\r\nHost: es\r\n\r\n").as_bytes())
            .await;
        c.expect(&reply("a", method, path, b"").wire).await;
    }
    let took = s.idle_closes(c, 3).await;
    println!("closed {took:?} after the drain");
}

#[tokio::test]
async fn responses_204_and_304_have_no_content() {
    let s = Setup::start().await;
    let mut c = KeepAlive::connect(s.addr).await;
    for path in ["/status/204", "/status/304", "/status/204"] {
        c.send(&get(path)).await;
        c.expect(&reply("a", "GET", path, b"").wire).await;
    }
    s.idle_closes(c, 3).await;
}

#[tokio::test]
async fn expect_100_continue_is_followed_through_the_interim_response() {
    let s = Setup::start().await;
    let witness = s.witness().await;
    let mut c = KeepAlive::connect(s.addr).await;
    let body = pattern(200_000);
    c.send(
        format!(
            "POST /echo HTTP/1.1\r\nHost: es\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await;
    c.expect(b"HTTP/1.1 100 Continue\r\n\r\n").await;
    // between the interim response and the content the request is in flight
    s.drain(witness).await;
    c.stays_open(WATCH).await;
    c.send(&body).await;
    c.expect(&reply("a", "POST", "/echo", &body).wire).await;
    c.closed(Instant::now()).await;
    idle_closes(s.admin, "web", "a", "drain", 2).await;
}

#[tokio::test]
async fn a_final_response_before_the_continued_content_falls_back_to_byte_relay() {
    let s = Setup::start().await;
    let mut c = KeepAlive::connect(s.addr).await;
    // the client may send the content or not (RFC 9110 10.1.1): its end cannot be known
    c.send(
        b"POST /refuse HTTP/1.1\r\nHost: es\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n",
    )
    .await;
    c.expect(b"HTTP/1.1 417 Expectation Failed\r\nContent-Length: 0\r\n\r\n")
        .await;
    c.send(b"0123456789").await;
    assert_eq!(c.get("/name").await.name(), "a");
    let labels = [
        ("backend", "web"),
        ("server", "a"),
        ("reason", "expect_continue"),
    ];
    Scrape::until_equals(
        s.admin,
        "roundhouse_server_unfollowed_connections_total",
        &labels,
        1.0,
    )
    .await;
    server_until(s.admin, "web", "a", "byte_relay_connections", 1).await;
    let witness = s.witness().await;
    s.drain(witness).await;
    c.stays_open(WATCH).await;
    assert_eq!(c.get("/name").await.name(), "a", "relayed as before");
    drop(c);
    server_until(s.admin, "web", "a", "byte_relay_connections", 0).await;
    server_until(s.admin, "web", "a", "active_connections", 0).await;
}

#[tokio::test]
async fn pipelined_requests_are_all_answered_before_the_close() {
    let s = Setup::start().await;
    let mut c = KeepAlive::connect(s.addr).await;
    let requests = [
        ("GET", "/bytes/1000"),
        ("GET", "/chunked/50000?gate=10"),
        ("HEAD", "/bytes/7"),
        ("GET", "/status/304"),
        ("GET", "/bytes/3"),
    ];
    let mut sent = Vec::new();
    let mut want = Vec::new();
    for (method, path) in requests {
        sent.extend_from_slice(format!("{method} {path} HTTP/1.1\r\nHost: es\r\n\r\n").as_bytes());
        want.extend_from_slice(&reply("a", method, path, b"").wire);
    }
    c.send(&sent).await;
    // the server answers in order: the second answer's end holds back all that follow it
    let held = want.len()
        - (reply("a", "GET", "/bytes/1000", b"").wire.len()
            + reply("a", "GET", requests[1].1, b"").wire.len()
            - 10);
    s.closes_after_the_held_end(&mut c, &want, held).await;
    assert_eq!(s.a.requests(), 5 + 1);
}

#[tokio::test]
async fn connection_close_ends_the_connection_after_its_response() {
    let s = Setup::start().await;
    // asked by the client
    let mut c = KeepAlive::connect(s.addr).await;
    c.get("/bytes/10").await;
    c.send(b"GET /bytes/100 HTTP/1.1\r\nHost: es\r\nConnection: close\r\n\r\n")
        .await;
    c.expect(&reply("a", "GET", "/bytes/100", b"").wire).await;
    c.closed(Instant::now()).await;
    // the server's FIN reached the client, and roundhouse has ended the connection while the
    // client still holds its side open: a client that asked for the close sends nothing more
    server_until(s.admin, "web", "a", "active_connections", 0).await;
    drop(c);
    // said by the server: the client may still be sending, so the half-close is relayed and
    // the connection ends with the client's own FIN
    let mut c = KeepAlive::connect(s.addr).await;
    c.send(&get("/close/100")).await;
    c.expect(&reply("a", "GET", "/close/100", b"").wire).await;
    c.closed(Instant::now()).await;
    tokio::time::sleep(WATCH).await;
    let st = status(s.admin).await;
    let a = server(&st, "web", "a");
    assert_eq!(
        a["active_connections"], 1,
        "still open for the client: {a:#}"
    );
    drop(c);
    server_until(s.admin, "web", "a", "active_connections", 0).await;
    let st = status(s.admin).await;
    let a = server(&st, "web", "a");
    assert_eq!(a["requests_total"], 3, "{a:#}");
    assert_eq!(a["requests_in_flight"], 0, "{a:#}");
    // they ended by themselves, followed all the way
    idle_closes(s.admin, "web", "a", "drain", 0).await;
    let m = Scrape::from(s.admin).await;
    assert!(
        !m.text
            .contains("roundhouse_server_unfollowed_connections_total{")
    );
}

#[tokio::test]
async fn a_response_that_ends_at_the_close_is_never_cut() {
    let s = Setup::start().await;
    let mut c = KeepAlive::connect(s.addr).await;
    let path = "/until-close/100000?gate=100";
    c.send(&get(path)).await;
    let want = reply("a", "GET", path, b"").wire;
    let witness = s.witness().await;
    c.expect(&want[..want.len() - 100]).await;
    s.drain(witness).await;
    c.stays_open(WATCH).await;
    s.a.release();
    assert_eq!(c.rest().await, want[want.len() - 100..]);
    // the server closed it, not an idle point
    idle_closes(s.admin, "web", "a", "drain", 1).await;
}

#[tokio::test]
async fn bodies_of_several_mebibytes_are_relayed_byte_exact_and_followed() {
    const MIB: usize = 1024 * 1024;
    let s = Setup::start().await;
    let mut c = KeepAlive::connect(s.addr).await;
    let up = pattern(4 * MIB);
    c.send(
        format!(
            "POST /echo HTTP/1.1\r\nHost: es\r\nContent-Length: {}\r\n\r\n",
            up.len()
        )
        .as_bytes(),
    )
    .await;
    c.send(&up).await;
    c.expect(&reply("a", "POST", "/echo", &up).wire).await;
    // a chunked request body: its chunks are spliced by count too
    let up = pattern(2 * MIB + 17);
    c.send(b"PUT /echo HTTP/1.1\r\nHost: es\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await;
    c.send(&chunked(&up)).await;
    c.expect(&reply("a", "PUT", "/echo", &up).wire).await;
    let r = c.get(&format!("/chunked/{}", 3 * MIB)).await;
    assert_eq!(r.body, pattern(3 * MIB));
    let r = c.get(&format!("/bytes/{}", 5 * MIB)).await;
    assert_eq!(r.body, pattern(5 * MIB));
    let took = s.idle_closes(c, 4).await;
    println!("after 14 MiB relayed: closed {took:?} after the drain");
    let m = Scrape::from(s.admin).await;
    let labels = [("backend", "web"), ("server", "a")];
    assert!(m.get("roundhouse_server_sent_bytes_total", &labels) > (6 * MIB) as f64);
    assert!(m.get("roundhouse_server_received_bytes_total", &labels) > (14 * MIB) as f64);
}

/// The first flight of a real TLS client (rustls): a ClientHello record.
fn client_hello() -> Vec<u8> {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    let name = "es.internal".try_into().unwrap();
    let mut tls = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut out = Vec::new();
    tls.write_tls(&mut out).unwrap();
    out
}

#[tokio::test]
async fn streams_that_are_not_http_1_fall_back_to_byte_relay_and_end_by_themselves() {
    let s = Setup::start().await;
    let mut h2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    h2.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    let mut binary = vec![0u8, 0xff, 0x13, 0x37];
    binary.extend_from_slice(&pattern(70_000));
    let streams = [
        ("tls", client_hello()),
        ("http2", h2),
        ("malformed", binary),
    ];
    let mut relayed = Vec::new();
    for (reason, first) in &streams {
        let mut c = KeepAlive::connect(s.addr).await;
        c.send(first).await;
        c.expect(first).await;
        let labels = [("backend", "web"), ("server", "a"), ("reason", *reason)];
        Scrape::until_equals(
            s.admin,
            "roundhouse_server_unfollowed_connections_total",
            &labels,
            1.0,
        )
        .await;
        relayed.push(c);
    }
    server_until(s.admin, "web", "a", "byte_relay_connections", 3).await;
    let witness = s.witness().await;
    s.drain(witness).await;
    for c in &mut relayed {
        c.stays_open(WATCH / 3).await;
    }
    for c in &mut relayed {
        let more = pattern(100_000);
        c.send(&more).await;
        c.expect(&more).await;
        c.stream.shutdown().await.unwrap();
        assert_eq!(
            c.rest().await,
            b"",
            "ended by the server's close, nothing more"
        );
    }
    server_until(s.admin, "web", "a", "byte_relay_connections", 0).await;
    server_until(s.admin, "web", "a", "active_connections", 0).await;
    idle_closes(s.admin, "web", "a", "drain", 1).await;
}

#[tokio::test]
async fn a_fallback_in_the_last_bytes_of_a_connection_is_counted() {
    // a server that reads the request to the client's FIN, answers with bytes no request asked
    // for after the response, and closes: the connection ends in the poll that falls back
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = listener.local_addr().unwrap();
    const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok\x00garbage";
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = Vec::new();
                if s.read_to_end(&mut request).await.is_ok() && !request.is_empty() {
                    let _ = s.write_all(ANSWER).await;
                }
            });
        }
    });
    let backend = Backend::new("web")
        .server("a", origin)
        .check("type", "tcp")
        .with("http_aware", "true");
    let rh = serve(backend).await;
    let (addr, admin) = (rh.listener("web").await, rh.admin().await);
    for n in 1..=10 {
        let mut c = KeepAlive::connect(addr).await;
        c.send(b"GET / HTTP/1.1\r\nHost: es\r\n\r\n").await;
        c.stream.shutdown().await.unwrap();
        assert_eq!(c.rest().await, ANSWER);
        server_until(admin, "web", "a", "active_connections", 0).await;
        let m = Scrape::from(admin).await;
        let labels = [("backend", "web"), ("server", "a")];
        assert_eq!(m.get("roundhouse_server_requests_total", &labels), n as f64);
        let unfollowed = m.sum("roundhouse_server_unfollowed_connections_total", &[]);
        assert_eq!(unfollowed, n as f64, "connection {n}:\n{}", m.text);
        assert_eq!(
            m.get("roundhouse_server_byte_relay_connections", &labels),
            0.0
        );
    }
}
