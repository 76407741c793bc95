//! A drain closes a client's keep-alive connection where no request can be cut: right after a
//! response, or once the connection has been quiet for a moment, never while its client may
//! be writing the next request (found by tests/rolling_restart.rs: opensearch-py, sending
//! requests back to back, had one reset in about every three drains).

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// How long a connection must have been quiet before a drain closes it while idle
/// (`SETTLED` in src/proxy/relay.rs).
const SETTLED: Duration = Duration::from_millis(250);

/// A client's thinking time between two requests: short, as in a client sending back to back,
/// and long enough for the drain to have reached the connection's worker.
const THINK: Duration = Duration::from_millis(50);

/// One keep-alive HTTP/1.1 connection, read by Content-Length.
struct Client(BufReader<TcpStream>);

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        Client(BufReader::new(
            TcpStream::connect(addr).await.expect("connect"),
        ))
    }

    /// `GET /` on this connection; the name of the node that answered.
    async fn name(&mut self) -> std::io::Result<String> {
        self.0
            .get_mut()
            .write_all(b"GET / HTTP/1.1\r\nHost: es\r\n\r\n")
            .await?;
        let mut length = None;
        loop {
            let mut line = String::new();
            if self.0.read_line(&mut line).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            if line == "\r\n" {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse::<usize>().ok();
            }
        }
        let mut body = vec![0; length.expect("a Content-Length")];
        self.0.read_exact(&mut body).await?;
        let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        Ok(v["name"].as_str().expect("a name").to_owned())
    }

    /// Waits until roundhouse closes the connection; returns when it did.
    async fn closed(&mut self) -> Instant {
        let n = tokio::time::timeout(SOON, self.0.read(&mut [0u8; 64]))
            .await
            .expect("closed");
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
        Instant::now()
    }
}

async fn admin(admin: SocketAddr, node: &str, action: &str) {
    let (code, body) = http_post(admin, &format!("/servers/es/{node}/{action}"), None)
        .await
        .expect("admin");
    assert_eq!(code, 200, "{body}");
}

#[tokio::test]
async fn a_connection_that_just_answered_carries_its_next_request_then_closes() {
    let nodes = three_nodes().await;
    let rh = serve(es_backend(&nodes)).await;
    let (addr, admin_addr) = (rh.listener("es").await, rh.admin().await);
    // a run is only conclusive when the next request left within SETTLED of the last answer
    for _ in 0..10 {
        let mut c = Client::connect(addr).await;
        let name = c.name().await.expect("first request");
        let answered = Instant::now();
        admin(admin_addr, &name, "drain").await;
        tokio::time::sleep(THINK).await;
        let thought = answered.elapsed();
        let second = c.name().await;
        if thought >= SETTLED - THINK {
            eprintln!("the next request left {thought:?} after the answer: once more");
            admin(admin_addr, &name, "ready").await;
            continue;
        }
        assert_eq!(
            second.expect("the request sent right after the drain is answered"),
            name,
            "on the drained node, as its connection was"
        );
        let after = c.closed().await;
        eprintln!(
            "drained right after an answer, the next request {thought:?} after it: answered, \
             and the connection closed {:?} after that answer",
            after.elapsed()
        );
        return;
    }
    panic!("this machine never sent a request within {SETTLED:?} of the last answer");
}

#[tokio::test]
async fn an_idle_connection_closes_once_quiet_for_its_settle_time() {
    let nodes = three_nodes().await;
    let rh = serve(es_backend(&nodes)).await;
    let (addr, admin_addr) = (rh.listener("es").await, rh.admin().await);
    let mut c = Client::connect(addr).await;
    let name = c.name().await.expect("a request");
    let answered = Instant::now();
    admin(admin_addr, &name, "drain").await;
    let quiet = c.closed().await - answered;
    eprintln!("drained right after an answer; the idle connection closed {quiet:?} after it");
    assert!(quiet >= SETTLED - Duration::from_millis(50), "{quiet:?}");
}
