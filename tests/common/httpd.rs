//! A raw-TCP HTTP/1.1 server, the backend of the tests that follow framing through roundhouse.
//! It answers with every shape a response takes (Content-Length, chunked with extensions and
//! trailers, no content for HEAD, 204 and 304, `100 Continue`, `Connection: close`, content that
//! ends at the close), answers pipelined requests in order, and holds the last bytes of a
//! response back until the test releases them (`?gate=N`), which is how a test keeps a request
//! in flight for as long as it likes. What it answers is a function of the request ([`reply`]),
//! so a client knows every byte that must arrive. A stream that does not start like a request
//! (TLS, the HTTP/2 preface, binary) is echoed back instead.
//!
//! Paths: `/name` (`{"name":"…"}`), `/bytes/N` (N bytes of [`pattern`]), `/chunked/N` (the same
//! bytes chunked, with trailers), `/status/204`, `/status/304`, `/echo` (the request's content),
//! `/close/N` (with `Connection: close`), `/until-close/N` (no length: ends at the close),
//! `/refuse` (417 before the content of an `Expect: 100-continue` request). A query `?gate=N`
//! holds back the last N bytes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// Sizes of the chunks of a `/chunked/N` answer, in turn: one byte to more than a pipe holds.
const CHUNK_SIZES: [usize; 9] = [1, 2, 13, 100, 1000, 8191, 16384, 65536, 300_000];

/// `n` bytes that differ from any shifted copy of themselves, so a lost, doubled or reordered
/// piece shows.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| ((i as u32).wrapping_mul(2_654_435_761) >> 24) as u8 ^ (i >> 16) as u8)
        .collect()
}

/// What the server sends for one request: the bytes, and whether it closes afterwards.
pub struct Reply {
    pub wire: Vec<u8>,
    /// Bytes at the end held back until [`HttpServer::release`].
    pub gate: usize,
    pub close: bool,
}

/// The reply of server `name` to `method path` with content `body` (before any `100 Continue`).
pub fn reply(name: &str, method: &str, path: &str, body: &[u8]) -> Reply {
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let gate = query
        .split('&')
        .find_map(|q| q.strip_prefix("gate="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let number = |prefix: &str| path.strip_prefix(prefix).and_then(|n| n.parse().ok());
    let head_only = method == "HEAD";
    let (head, content, close) = if path == "/name" {
        let json = format!("{{\"name\":\"{name}\"}}").into_bytes();
        (length_head("200 OK", json.len(), ""), json, false)
    } else if let Some(n) = number("/bytes/") {
        (length_head("200 OK", n, ""), pattern(n), false)
    } else if let Some(n) = number("/chunked/") {
        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\nTrailer: X-Length\r\n\r\n";
        (head.to_owned(), chunked(&pattern(n)), false)
    } else if path == "/status/204" {
        (
            "HTTP/1.1 204 No Content\r\nX-Note: none\r\n\r\n".to_owned(),
            Vec::new(),
            false,
        )
    } else if path == "/status/304" {
        // a 304 may announce the length of what it did not send (RFC 9110 8.6)
        let head = "HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 5000\r\n\r\n";
        (head.to_owned(), Vec::new(), false)
    } else if path == "/echo" {
        (length_head("200 OK", body.len(), ""), body.to_vec(), false)
    } else if let Some(n) = number("/close/") {
        (
            length_head("200 OK", n, "Connection: close\r\n"),
            pattern(n),
            true,
        )
    } else if let Some(n) = number("/until-close/") {
        (
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n".to_owned(),
            pattern(n),
            true,
        )
    } else {
        let text = format!("no such path: {path}\n").into_bytes();
        (length_head("404 Not Found", text.len(), ""), text, false)
    };
    let mut wire = head.into_bytes();
    if !head_only {
        wire.extend_from_slice(&content);
    }
    Reply {
        gate: gate.min(wire.len()),
        wire,
        close,
    }
}

fn length_head(status: &str, length: usize, extra: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/octet-stream\r\nContent-Length: {length}\r\n{extra}\r\n"
    )
}

/// `content` chunked in [`CHUNK_SIZES`] turns, every other chunk line with an extension, and
/// two trailer fields.
pub fn chunked(content: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = content;
    for (i, size) in CHUNK_SIZES.iter().cycle().enumerate() {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at((*size).min(rest.len()));
        let ext = if i % 2 == 1 { ";n=v" } else { "" };
        out.extend_from_slice(format!("{:X}{ext}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
        rest = tail;
    }
    out.extend_from_slice(
        format!("0\r\nX-Length: {}\r\nX-Done: yes\r\n\r\n", content.len()).as_bytes(),
    );
    out
}

/// A running server on 127.0.0.1; stops accepting when dropped.
pub struct HttpServer {
    pub name: String,
    pub addr: SocketAddr,
    gate: Arc<Semaphore>,
    requests: Arc<AtomicU64>,
    accepting: JoinHandle<()>,
}

struct Ctx {
    name: String,
    gate: Arc<Semaphore>,
    requests: Arc<AtomicU64>,
}

impl HttpServer {
    pub async fn start(name: &str) -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let ctx = Arc::new(Ctx {
            name: name.to_owned(),
            gate: Arc::new(Semaphore::new(0)),
            requests: Arc::new(AtomicU64::new(0)),
        });
        let (gate, requests) = (ctx.gate.clone(), ctx.requests.clone());
        let accepting = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, ctx.clone()));
            }
        });
        HttpServer {
            name: name.to_owned(),
            addr,
            gate,
            requests,
            accepting,
        }
    }

    /// Lets one held-back reply send its last bytes.
    pub fn release(&self) {
        self.gate.add_permits(1);
    }

    /// Requests read so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

/// One request head, as far as this server cares.
struct Request {
    method: String,
    path: String,
    length: usize,
    chunked: bool,
    expect_continue: bool,
    close: bool,
}

async fn serve(stream: TcpStream, ctx: Arc<Ctx>) {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let first = match r.fill_buf().await {
        Ok(b) if !b.is_empty() => b,
        // a TCP health check: connected, nothing sent
        _ => return,
    };
    if !first[0].is_ascii_uppercase() || first.starts_with(b"PRI ") {
        echo(r, w).await;
        return;
    }
    while let Some(req) = read_head(&mut r).await {
        ctx.requests.fetch_add(1, Ordering::Relaxed);
        let has_content = req.chunked || req.length > 0;
        if req.expect_continue && has_content {
            let answer: &[u8] = if req.path == "/refuse" {
                b"HTTP/1.1 417 Expectation Failed\r\nContent-Length: 0\r\n\r\n"
            } else {
                b"HTTP/1.1 100 Continue\r\n\r\n"
            };
            if w.write_all(answer).await.is_err() {
                return;
            }
        }
        let Some(body) = read_body(&mut r, &req).await else {
            return;
        };
        if req.path == "/refuse" {
            // answered before its content, which was read and dropped
            continue;
        }
        let reply = reply(&ctx.name, &req.method, &req.path, &body);
        if send(&mut w, &reply, &ctx.gate).await.is_err() {
            return;
        }
        if reply.close || req.close {
            let _ = w.shutdown().await;
            return;
        }
    }
}

async fn send(w: &mut OwnedWriteHalf, reply: &Reply, gate: &Semaphore) -> std::io::Result<()> {
    let (now, later) = reply.wire.split_at(reply.wire.len() - reply.gate);
    w.write_all(now).await?;
    if !later.is_empty() {
        gate.acquire()
            .await
            .expect("the gate is never closed")
            .forget();
        w.write_all(later).await?;
    }
    Ok(())
}

async fn echo(mut r: BufReader<OwnedReadHalf>, mut w: OwnedWriteHalf) {
    let buffered = r.buffer().to_vec();
    r.consume(buffered.len());
    if w.write_all(&buffered).await.is_ok() && tokio::io::copy(&mut r, &mut w).await.is_ok() {
        let _ = w.shutdown().await;
    }
}

/// A line with its CRLF removed; `None` at the end of the stream.
async fn line(r: &mut BufReader<OwnedReadHalf>) -> Option<String> {
    let mut buf = Vec::new();
    match r.read_until(b'\n', &mut buf).await {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(
            String::from_utf8_lossy(&buf)
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
        ),
    }
}

async fn read_head(r: &mut BufReader<OwnedReadHalf>) -> Option<Request> {
    let start = line(r).await?;
    let mut parts = start.split(' ');
    let mut req = Request {
        method: parts.next()?.to_owned(),
        path: parts.next()?.to_owned(),
        length: 0,
        chunked: false,
        expect_continue: false,
        close: start.ends_with("HTTP/1.0"),
    };
    loop {
        let field = line(r).await?;
        if field.is_empty() {
            return Some(req);
        }
        let (name, value) = field.split_once(':')?;
        let value = value.trim().to_ascii_lowercase();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => req.length = value.parse().ok()?,
            "transfer-encoding" => req.chunked = value.ends_with("chunked"),
            "expect" => req.expect_continue = value == "100-continue",
            "connection" => req.close = value == "close",
            _ => {}
        }
    }
}

async fn read_body(r: &mut BufReader<OwnedReadHalf>, req: &Request) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    if !req.chunked {
        body.resize(req.length, 0);
        r.read_exact(&mut body).await.ok()?;
        return Some(body);
    }
    loop {
        let size_line = line(r).await?;
        let size = size_line.split(';').next()?.trim();
        let size = usize::from_str_radix(size, 16).ok()?;
        if size == 0 {
            // trailers, up to the empty line
            while !line(r).await?.is_empty() {}
            return Some(body);
        }
        let at = body.len();
        body.resize(at + size, 0);
        r.read_exact(&mut body[at..]).await.ok()?;
        line(r).await?;
    }
}
