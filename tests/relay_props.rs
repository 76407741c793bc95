//! Property test of the relay: any request stream and any response stream (mostly HTTP/1.1
//! messages of every framing, sometimes bytes of anything, each written in pieces cut anywhere)
//! relayed through roundhouse arrive byte for byte, with the framing followed (`http_aware:
//! true`) and not (`false`). Following the framing never changes a byte.
//!
//! `cargo test --test relay_props -- --ignored` runs the long version (random seed, 50 times
//! the cases).

mod common;
#[path = "relay_props/streams.rs"]
mod streams;

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use common::props::{self, check};
use common::*;
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::{oneshot, watch};

use streams::{Answer, Case, case};

/// What the server answers one connection, and where it says what it received.
struct Script {
    answer: Answer,
    received: oneshot::Sender<Vec<u8>>,
}

/// A server that answers each connection that sends a byte with the next script (a TCP health
/// check sends none): it writes the script's bytes, each part once the client's bytes it waits
/// for have arrived, while it reads the client's to their end; then closes.
struct Scripted {
    addr: SocketAddr,
    queue: Arc<Mutex<VecDeque<Script>>>,
}

impl Scripted {
    async fn start() -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let queue: Arc<Mutex<VecDeque<Script>>> = Arc::default();
        let q = queue.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(answer(stream, q.clone()));
            }
        });
        Scripted { addr, queue }
    }

    /// The next connection's answer; the receiver gets what that connection sent.
    fn push(&self, answer: Answer) -> oneshot::Receiver<Vec<u8>> {
        let (tx, rx) = oneshot::channel();
        self.queue.lock().unwrap().push_back(Script {
            answer,
            received: tx,
        });
        rx
    }
}

async fn answer(stream: TcpStream, queue: Arc<Mutex<VecDeque<Script>>>) {
    let (mut r, mut w) = stream.into_split();
    let mut got = vec![0u8; 64 * 1024];
    let n = match r.read(&mut got).await {
        Ok(n) if n > 0 => n,
        _ => return,
    };
    got.truncate(n);
    let Some(script) = queue.lock().unwrap().pop_front() else {
        return;
    };
    let (arrived, mut seen) = watch::channel(got.len());
    let reading = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match r.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    arrived.send_replace(got.len());
                }
                Err(e) => return Err(e),
            }
        }
    };
    let a = &script.answer;
    let writing = async {
        let mut from = 0;
        for &(end, wait) in &a.segments {
            if seen.wait_for(|n| *n >= wait).await.is_err() {
                return;
            }
            let cuts: Vec<usize> = a
                .cuts
                .iter()
                .copied()
                .filter(|c| (from..end).contains(c))
                .collect();
            if write_pieces(&mut w, &a.wire[..end], from, &cuts)
                .await
                .is_err()
            {
                return;
            }
            from = end;
        }
    };
    let (read, ()) = tokio::join!(reading, writing);
    if read.is_ok() {
        let _ = script.received.send(got);
    }
}

/// Writes `bytes[from..]` in pieces cut at `cuts`, letting the other side run between two.
async fn write_pieces(
    w: &mut tokio::net::tcp::OwnedWriteHalf,
    bytes: &[u8],
    mut from: usize,
    cuts: &[usize],
) -> io::Result<()> {
    for &to in cuts.iter().chain(std::iter::once(&bytes.len())) {
        w.write_all(&bytes[from..to]).await?;
        tokio::task::yield_now().await;
        from = to;
    }
    Ok(())
}

/// One client connection through `addr`: sends `up` in pieces and its FIN while it reads
/// everything that comes back.
async fn relay_once(addr: SocketAddr, up: &[u8], cuts: &[usize]) -> io::Result<Vec<u8>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut r, mut w) = stream.into_split();
    let writing = async {
        write_pieces(&mut w, up, 0, cuts).await?;
        w.shutdown().await
    };
    let mut got = Vec::new();
    let (wrote, read) = tokio::join!(writing, r.read_to_end(&mut got));
    wrote?;
    read?;
    Ok(got)
}

/// Where two byte strings first differ, for a failure message that fits on a screen.
fn differ(what: &str, got: &[u8], want: &[u8]) -> String {
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    format!(
        "{what}: {} bytes arrived of {}; first difference at byte {at}: got {:?}, want {:?}",
        got.len(),
        want.len(),
        got[at..(at + 32).min(got.len())].escape_ascii().to_string(),
        want[at..(at + 32).min(want.len())]
            .escape_ascii()
            .to_string(),
    )
}

/// The requests counted on backend `on` and its connections not followed, as exported now.
async fn counts(admin: SocketAddr) -> (f64, f64) {
    let m = Scrape::from(admin).await;
    let labels = [("backend", "on"), ("server", "s")];
    let requests = m.get("roundhouse_server_requests_total", &labels);
    let unfollowed = m.sum("roundhouse_server_unfollowed_connections_total", &[]);
    (requests, unfollowed)
}

async fn one_case(
    server: &Scripted,
    listeners: &[(&str, SocketAddr)],
    admin: SocketAddr,
    case: &Case,
) -> Result<(), TestCaseError> {
    let (up, up_cuts) = case.up();
    let before = counts(admin).await;
    for (name, addr) in listeners {
        let received = server.push(case.down());
        let down = case.down().wire;
        let got = tokio::time::timeout(SOON, relay_once(*addr, &up, &up_cuts))
            .await
            .map_err(|_| TestCaseError::fail(format!("{name}: no end within {SOON:?}")))?
            .map_err(|e| TestCaseError::fail(format!("{name}: {e}")))?;
        let sent = tokio::time::timeout(SOON, received)
            .await
            .map_err(|_| TestCaseError::fail(format!("{name}: the server got no end")))?
            .map_err(|_| TestCaseError::fail(format!("{name}: the server got no script")))?;
        prop_assert!(
            got == down,
            "{}",
            differ(&format!("{name}: down"), &got, &down)
        );
        prop_assert!(sent == up, "{}", differ(&format!("{name}: up"), &sent, &up));
    }
    // a conversation is followed to its end: every request counted, no fallback
    if let Some(n) = case.requests {
        let after = counts(admin).await;
        prop_assert_eq!((after.0 - before.0, after.1 - before.1), (n as f64, 0.0));
    }
    Ok(())
}

async fn relayed_streams(runner: TestRunner) {
    let server = Scripted::start().await;
    let backend = |name: &str, on: bool| {
        Backend::new(name)
            .server("s", server.addr)
            .check("type", "tcp")
            .with("http_aware", if on { "true" } else { "false" })
    };
    let config = ConfigBuilder::new()
        .listener("on", "on")
        .backend(backend("on", true))
        .listener_at("off", "127.0.0.2:0", "off", "")
        .backend(backend("off", false));
    let rh = Roundhouse::start(&config.yaml()).await;
    let listeners = [
        ("on", rh.listener("on").await),
        ("off", rh.listener("off").await),
    ];
    let admin = rh.admin().await;
    let handle = Handle::current();
    // the runner is synchronous: each case runs to its end on this thread
    tokio::task::block_in_place(|| {
        check(runner, case(), |case| {
            handle.block_on(one_case(&server, &listeners, admin, &case))
        });
    });
    // not vacuous: the framing was followed on one side, and only there
    let m = Scrape::from(admin).await;
    let requests = |b| {
        m.get(
            "roundhouse_server_requests_total",
            &[("backend", b), ("server", "s")],
        )
    };
    let fell_back: Vec<&str> = m
        .text
        .lines()
        .filter(|l| l.starts_with("roundhouse_server_unfollowed_connections_total{"))
        .collect();
    println!(
        "requests followed: {}; connections not followed: {fell_back:#?}",
        requests("on")
    );
    assert!(requests("on") > 0.0);
    assert_eq!(requests("off"), 0.0);
    assert!(
        fell_back.iter().all(|l| l.contains("backend=\"on\"")),
        "{fell_back:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_bytes_are_identical_with_framing_followed_or_not() {
    relayed_streams(props::quick(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long run: cargo test --test relay_props -- --ignored"]
async fn relayed_bytes_are_identical_with_framing_followed_or_not_long() {
    relayed_streams(props::long(100)).await;
}
