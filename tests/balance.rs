//! How a server is picked, through the real binary with two worker threads (so that the
//! connections held in these tests are accepted on both): least connections sends a new client
//! to the server with the fewest open connections for its weight, whichever thread counted
//! them; round robin, the default, takes turns whatever the load.

mod common;

use std::net::SocketAddr;

use common::scrape::{self, Scrape};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A client connection through roundhouse kept open (HTTP keep-alive), and the node that
/// answered on it.
struct Held {
    _stream: TcpStream,
    node: String,
}

/// Opens a connection, sends one request and keeps the connection open.
async fn hold(addr: SocketAddr) -> Held {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: es\r\n\r\n")
        .await
        .expect("send");
    let body = read_answer(&mut stream).await;
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON answer");
    Held {
        _stream: stream,
        node: v["name"].as_str().expect("a node name").to_owned(),
    }
}

/// Reads one HTTP answer (with `Content-Length`) and returns its body, leaving the connection open.
async fn read_answer(stream: &mut TcpStream) -> String {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed before a full answer: {raw:?}");
        raw.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&raw);
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .expect("Content-Length");
        if body.len() >= length {
            return body[..length].to_owned();
        }
    }
}

/// Opens `n` connections one after the other and keeps them; returns them with their nodes.
async fn hold_many(addr: SocketAddr, n: usize) -> Vec<Held> {
    let mut held = Vec::new();
    for _ in 0..n {
        held.push(hold(addr).await);
    }
    held
}

fn nodes_of(held: &[Held]) -> Vec<&str> {
    held.iter().map(|h| h.node.as_str()).collect()
}

/// Closes the held connections answered by `node`.
fn close_on(held: &mut Vec<Held>, node: &str, how_many: usize) {
    let mut closed = 0;
    held.retain(|h| {
        let close = h.node == node && closed < how_many;
        closed += usize::from(close);
        !close
    });
    assert_eq!(closed, how_many, "{node} had {how_many} to close");
}

/// Waits until roundhouse counts these open connections per server.
async fn active(admin: SocketAddr, want: &[(&str, f64)]) {
    Scrape::until(admin, &format!("active connections {want:?}"), |s| {
        want.iter().all(|(server, n)| {
            s.get(
                "roundhouse_server_active_connections",
                &[("backend", "es"), ("server", server)],
            ) == *n
        })
    })
    .await;
}

async fn two_nodes() -> Vec<FakeNode> {
    let mut nodes = three_nodes().await;
    nodes.truncate(2);
    nodes
}

async fn start(backend: Backend) -> (Roundhouse, SocketAddr, SocketAddr) {
    let mut rh = serve(backend).await;
    rh.notify
        .wait_for_status(&["serving 1 listener; es: 2/2 servers up"], SOON)
        .await;
    let addr = rh.listener("es").await;
    let admin = rh.admin().await;
    (rh, addr, admin)
}

#[tokio::test]
async fn least_connections_sends_new_clients_to_the_less_loaded_server() {
    let nodes = two_nodes().await;
    let (_rh, addr, admin) = start(es_backend(&nodes).with("balance", "least_connections")).await;
    // equal loads take turns
    let mut held = hold_many(addr, 6).await;
    assert_eq!(
        tally(&held.iter().map(|h| h.node.clone()).collect::<Vec<_>>()),
        [("es-1".to_owned(), 3), ("es-2".to_owned(), 3)].into()
    );
    active(admin, &[("es-1", 3.0), ("es-2", 3.0)]).await;

    // es-2's clients leave: the next three go to es-2, whatever the turn
    close_on(&mut held, "es-2", 3);
    active(admin, &[("es-1", 3.0), ("es-2", 0.0)]).await;
    let next = hold_many(addr, 3).await;
    assert_eq!(nodes_of(&next), ["es-2"; 3]);
    held.extend(next);
    active(admin, &[("es-1", 3.0), ("es-2", 3.0)]).await;

    // and the other way round
    close_on(&mut held, "es-1", 2);
    active(admin, &[("es-1", 1.0), ("es-2", 3.0)]).await;
    let next = hold_many(addr, 2).await;
    assert_eq!(nodes_of(&next), ["es-1"; 2]);

    // short requests while es-1 holds 3 and es-2 none go to es-2, every one
    held.extend(next);
    close_on(&mut held, "es-2", 3);
    active(admin, &[("es-1", 3.0), ("es-2", 0.0)]).await;
    let seen = names(addr, 10).await;
    assert_eq!(seen, vec!["es-2".to_owned(); 10]);
}

#[tokio::test]
async fn least_connections_respects_weights() {
    let nodes = two_nodes().await;
    let backend = Backend::new("es")
        .weighted("es-1", nodes[0].addr(), 1)
        .weighted("es-2", nodes[1].addr(), 3)
        .with("balance", "least_connections");
    let (_rh, addr, admin) = start(backend).await;
    let held = hold_many(addr, 8).await;
    let seen = tally(&held.iter().map(|h| h.node.clone()).collect::<Vec<_>>());
    assert_eq!(
        seen,
        [("es-1".to_owned(), 2), ("es-2".to_owned(), 6)].into()
    );
    active(admin, &[("es-1", 2.0), ("es-2", 6.0)]).await;
    let st = scrape::status(admin).await;
    assert_eq!(st["backends"][0]["balance"], "least_connections");
}

#[tokio::test]
async fn round_robin_stays_the_default_and_takes_turns_whatever_the_load() {
    let nodes = two_nodes().await;
    let (_rh, addr, admin) = start(es_backend(&nodes)).await;
    let st = scrape::status(admin).await;
    assert_eq!(st["backends"][0]["balance"], "round_robin");

    let mut held = hold_many(addr, 4).await;
    assert_eq!(nodes_of(&held), ["es-1", "es-2", "es-1", "es-2"]);
    close_on(&mut held, "es-2", 2);
    active(admin, &[("es-1", 2.0), ("es-2", 0.0)]).await;
    // least connections would send all of these to es-2
    let seen = tally(&names(addr, 6).await);
    assert_eq!(
        seen,
        [("es-1".to_owned(), 3), ("es-2".to_owned(), 3)].into()
    );
}
