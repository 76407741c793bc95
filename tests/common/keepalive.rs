//! A client that keeps its connection, as Elasticsearch clients keep their pooled ones: several
//! requests on one connection, each response read to its exact end, and a way to see when (and
//! how soon) the other side closed it.

use std::fmt;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::SOON;

/// One response as it arrived.
pub struct Response {
    pub status: u16,
    /// The head, interim responses included.
    pub head: String,
    /// The content (chunks joined).
    pub body: Vec<u8>,
    /// Every byte of it, as received.
    pub raw: Vec<u8>,
}

impl Response {
    /// The `name` field of a JSON answer (a node's `GET /`, the test server's `/name`).
    pub fn name(&self) -> String {
        self.try_name().unwrap_or_else(|| {
            panic!(
                "no name in the answer: {:?}",
                String::from_utf8_lossy(&self.raw)
            )
        })
    }

    /// The `name` field, if the content is JSON with one.
    pub fn try_name(&self) -> Option<String> {
        let v: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        Some(v["name"].as_str()?.to_owned())
    }
}

/// Why a request got no complete answer (the fallible calls return it; the others panic with it).
#[derive(Debug)]
pub enum Broken {
    /// The connection closed; `had` is what had arrived of the answer being read.
    Closed { had: Vec<u8> },
    /// Sending or reading failed (a reset, mostly).
    Failed(std::io::Error),
    /// Nothing more arrived within [`SOON`]; `had` bytes were waiting.
    Silent { had: usize },
    /// What arrived is not an HTTP/1.1 answer.
    Garbled(String),
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Broken::Closed { had } => write!(
                f,
                "the connection closed; have {:?}",
                String::from_utf8_lossy(had)
            ),
            Broken::Failed(e) => write!(f, "send or read failed: {e}"),
            Broken::Silent { had } => {
                write!(f, "nothing more within {SOON:?}; have {had} bytes")
            }
            Broken::Garbled(what) => f.write_str(what),
        }
    }
}

/// A kept-alive client connection.
pub struct KeepAlive {
    pub stream: TcpStream,
    /// Bytes read and not yet taken.
    buf: Vec<u8>,
}

impl KeepAlive {
    pub async fn connect(addr: SocketAddr) -> KeepAlive {
        KeepAlive::try_connect(addr).await.expect("connect")
    }

    pub async fn try_connect(addr: SocketAddr) -> std::io::Result<KeepAlive> {
        Ok(KeepAlive {
            stream: TcpStream::connect(addr).await?,
            buf: Vec::new(),
        })
    }

    /// Connects and asks `path` (a JSON answer with a `name`); returns the connection and the
    /// name of the server that answered.
    pub async fn pooled(addr: SocketAddr, path: &str) -> (KeepAlive, String) {
        let mut c = KeepAlive::connect(addr).await;
        let name = c.get(path).await.name();
        (c, name)
    }

    /// Opens connections until one lands on `server` (round robin gets there); keeps that one.
    pub async fn pooled_on(addr: SocketAddr, path: &str, server: &str) -> KeepAlive {
        for _ in 0..16 {
            let (c, name) = KeepAlive::pooled(addr, path).await;
            if name == server {
                return c;
            }
        }
        panic!("no connection landed on {server}");
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("send");
    }

    /// `GET path` on this connection; the whole response.
    pub async fn get(&mut self, path: &str) -> Response {
        self.try_get(path).await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// `GET path` on this connection: the whole response, or why it did not come.
    pub async fn try_get(&mut self, path: &str) -> Result<Response, Broken> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: es\r\n\r\n");
        self.stream
            .write_all(request.as_bytes())
            .await
            .map_err(Broken::Failed)?;
        self.try_response(false).await
    }

    /// Whether the other side has closed (or reset) this idle connection, or sent bytes nobody
    /// asked for: what urllib3 (the Python Elasticsearch client's pool) looks at, without
    /// waiting, before it reuses a pooled connection.
    pub fn dropped(&self) -> bool {
        if !self.buf.is_empty() {
            return true;
        }
        let mut fd = libc::pollfd {
            fd: self.stream.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, for the length of the call; a timeout of 0 never blocks.
        let ready = unsafe { libc::poll(&mut fd, 1, 0) };
        ready != 0
    }

    /// Sends `GET path` to be answered by the test server `server` (`common::httpd`), with a
    /// `?gate=N` that holds the last N bytes of the answer back, and reads the answer up to
    /// them: the request is in flight until the server is released. Returns the held bytes.
    pub async fn held(&mut self, server: &str, path: &str) -> Vec<u8> {
        let r = crate::common::httpd::reply(server, "GET", path, b"");
        assert!(r.gate > 0, "{path} holds nothing back");
        let (now, later) = r.wire.split_at(r.wire.len() - r.gate);
        self.send(format!("GET {path} HTTP/1.1\r\nHost: es\r\n\r\n").as_bytes())
            .await;
        self.expect(now).await;
        later.to_vec()
    }

    /// Reads exactly these bytes, or fails saying where they differ.
    pub async fn expect(&mut self, want: &[u8]) {
        let got = self.take(want.len()).await;
        if let Some(at) = got.iter().zip(want).position(|(a, b)| a != b) {
            panic!(
                "byte {at} of {} differs: got {:?}, want {:?}",
                want.len(),
                String::from_utf8_lossy(&got[at..(at + 40).min(got.len())]),
                String::from_utf8_lossy(&want[at..(at + 40).min(want.len())]),
            );
        }
    }

    /// Reads one response (interim ones included in its head); `to_head`: it answers a HEAD.
    pub async fn response(&mut self, to_head: bool) -> Response {
        self.try_response(to_head)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Reads one response, or says why it did not come whole.
    pub async fn try_response(&mut self, to_head: bool) -> Result<Response, Broken> {
        let mut raw = Vec::new();
        let (status, head) = loop {
            let head = self.head().await?;
            raw.extend_from_slice(&head);
            let text = String::from_utf8_lossy(&head).into_owned();
            let status: u16 = text
                .split(' ')
                .nth(1)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| Broken::Garbled(format!("not a response: {text:?}")))?;
            if status >= 200 {
                break (status, String::from_utf8_lossy(&raw).into_owned());
            }
        };
        let lower = head.to_ascii_lowercase();
        let field = |name: &str| {
            lower
                .lines()
                .rev()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
        };
        let mut body = Vec::new();
        if to_head || status == 204 || status == 304 {
        } else if field("transfer-encoding:").is_some_and(|v| v.ends_with("chunked")) {
            loop {
                let size_line = self.line().await?;
                raw.extend_from_slice(&size_line);
                let text = String::from_utf8_lossy(&size_line).into_owned();
                let size = text.trim_end().split(';').next().unwrap_or("");
                let size = usize::from_str_radix(size.trim(), 16)
                    .map_err(|_| Broken::Garbled(format!("chunk size line {text:?}")))?;
                if size == 0 {
                    loop {
                        let l = self.line().await?;
                        raw.extend_from_slice(&l);
                        if l == b"\r\n" {
                            break;
                        }
                    }
                    break;
                }
                let chunk = self.try_take(size + 2).await?;
                raw.extend_from_slice(&chunk);
                body.extend_from_slice(&chunk[..size]);
            }
        } else if let Some(n) = field("content-length:") {
            let n = n
                .parse()
                .map_err(|_| Broken::Garbled(format!("a length: {n:?}")))?;
            body = self.try_take(n).await?;
            raw.extend_from_slice(&body);
        } else {
            body = self.rest().await;
            raw.extend_from_slice(&body);
        }
        Ok(Response {
            status,
            head,
            body,
            raw,
        })
    }

    /// Waits (at most [`SOON`]) for the other side to close; no byte may come first. Returns
    /// the time since `since`.
    pub async fn closed(&mut self, since: Instant) -> Duration {
        assert!(self.buf.is_empty(), "bytes left unread: {:?}", self.buf);
        let mut byte = [0u8; 1];
        match tokio::time::timeout(SOON, self.stream.read(&mut byte)).await {
            Ok(Ok(0)) | Ok(Err(_)) => since.elapsed(),
            Ok(Ok(_)) => panic!("a byte came instead of the close: {byte:?}"),
            Err(_) => panic!("the connection was not closed within {SOON:?}"),
        }
    }

    /// Nothing arrives and the connection stays open for `window`.
    pub async fn stays_open(&mut self, window: Duration) {
        assert!(self.buf.is_empty(), "bytes left unread: {:?}", self.buf);
        let mut byte = [0u8; 1];
        if let Ok(r) = tokio::time::timeout(window, self.stream.read(&mut byte)).await {
            panic!("the connection should have stayed open and quiet; read gave {r:?}");
        }
    }

    /// Everything up to the end of the stream.
    pub async fn rest(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.buf);
        tokio::time::timeout(SOON, self.stream.read_to_end(&mut out))
            .await
            .expect("the stream ended in time")
            .expect("read to the end");
        out
    }

    /// Exactly `n` bytes.
    pub async fn take(&mut self, n: usize) -> Vec<u8> {
        self.try_take(n).await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// Exactly `n` bytes, or why they did not come.
    async fn try_take(&mut self, n: usize) -> Result<Vec<u8>, Broken> {
        while self.buf.len() < n {
            self.more().await?;
        }
        let rest = self.buf.split_off(n);
        Ok(std::mem::replace(&mut self.buf, rest))
    }

    /// A response head, up to and with its empty line.
    async fn head(&mut self) -> Result<Vec<u8>, Broken> {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                return self.try_take(end + 4).await;
            }
            self.more().await?;
        }
    }

    /// A line with its LF.
    async fn line(&mut self) -> Result<Vec<u8>, Broken> {
        loop {
            if let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
                return self.try_take(end + 1).await;
            }
            self.more().await?;
        }
    }

    async fn more(&mut self) -> Result<(), Broken> {
        let mut chunk = vec![0u8; 256 * 1024];
        let n = tokio::time::timeout(SOON, self.stream.read(&mut chunk))
            .await
            .map_err(|_| Broken::Silent {
                had: self.buf.len(),
            })?
            .map_err(Broken::Failed)?;
        if n == 0 {
            return Err(Broken::Closed {
                had: self.buf.clone(),
            });
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

/// `POST /servers/{backend}/{server}/{action}` on the admin endpoint; it must succeed.
pub async fn change(admin: SocketAddr, backend: &str, server: &str, action: &str) {
    let path = format!("/servers/{backend}/{server}/{action}");
    let (code, body) = crate::common::http_post(admin, &path, None)
        .await
        .expect("POST to the admin endpoint");
    assert_eq!(code, 200, "{path}: {body}");
}

/// Waits until `n` connections of the server have been closed at an idle point for `reason`
/// (`roundhouse_server_idle_closes_total`).
pub async fn idle_closes(admin: SocketAddr, backend: &str, server: &str, reason: &str, n: u64) {
    let labels = [("backend", backend), ("server", server), ("reason", reason)];
    let name = "roundhouse_server_idle_closes_total";
    crate::common::Scrape::until_equals(admin, name, &labels, n as f64).await;
}
