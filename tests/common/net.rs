//! Network helpers: a plain HTTP GET over a raw socket and an echo server.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// `GET path` with `Connection: close`; returns the status code and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> io::Result<(u16, String)> {
    request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: es\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// `POST path` with no body, and a bearer token if given; returns the status code and the body.
pub async fn http_post(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
) -> io::Result<(u16, String)> {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    request(
        addr,
        &format!("POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// `METHOD path` with a JSON body (if any) and `Connection: close`; returns the status code and
/// the body. Enough HTTP for talking to a real node through roundhouse.
pub async fn http_send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    json: Option<&str>,
) -> io::Result<(u16, String)> {
    let body = json.unwrap_or("");
    request(
        addr,
        &format!(
            "{method} {path} HTTP/1.1\r\nHost: es\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .await
}

async fn request(addr: SocketAddr, head: &str) -> io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(head.as_bytes()).await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("no HTTP answer: {text:?}"),
        )
    })?;
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, head.to_owned()))?;
    Ok((code, body.to_owned()))
}

/// A client of `addr` is closed at once (end of stream or reset), not left hanging: what a
/// listener does when it has no server to offer.
pub async fn assert_closed_at_once(addr: SocketAddr) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let n = tokio::time::timeout(crate::common::SOON, s.read(&mut [0u8; 16]))
        .await
        .expect("closed, not hung");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
}

/// The `name` a node reports on `GET /` through `addr`.
pub async fn node_name(addr: SocketAddr) -> io::Result<String> {
    let (_, body) = http_get(addr, "/").await?;
    let v: serde_json::Value = serde_json::from_str(&body)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{e}: {body:?}")))?;
    Ok(v["name"].as_str().unwrap_or_default().to_owned())
}

/// Asks `n` times which node answers through `addr`; returns the names in order.
pub async fn names(addr: SocketAddr, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(node_name(addr).await.expect("request through roundhouse"));
    }
    out
}

/// Counts of each name.
pub fn tally(names: &[String]) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for n in names {
        *m.entry(n.clone()).or_insert(0) += 1;
    }
    m
}

/// A TCP server that echoes every byte back and closes its side after the client's FIN.
/// It counts the connections that sent data (a tcp health check sends none).
pub struct EchoServer {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicU64>,
}

impl EchoServer {
    pub async fn start() -> EchoServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicU64::new(0));
        let count = connections.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let count = count.clone();
                tokio::spawn(async move {
                    let (mut r, mut w) = stream.into_split();
                    let mut first = [0u8; 1];
                    match r.read(&mut first).await {
                        Ok(1) => {
                            count.fetch_add(1, Ordering::Relaxed);
                            if w.write_all(&first).await.is_err() {
                                return;
                            }
                        }
                        _ => {
                            let _ = w.shutdown().await;
                            return;
                        }
                    }
                    // copy until the client's FIN, then send ours: a half-close round trip
                    if tokio::io::copy(&mut r, &mut w).await.is_ok() {
                        let _ = w.shutdown().await;
                    }
                });
            }
        });
        EchoServer { addr, connections }
    }

    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
}
