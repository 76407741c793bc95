//! Property test of the admin endpoint: arbitrary request lines, headers, paths and bodies, sent
//! as raw bytes to one running roundhouse, never panic it and never change a server's
//! admin_state unless the request carried the exact token; a request that does carry it, to a
//! valid path, does change it.
//!
//! `cargo test --test admin_props -- --ignored` runs the long version (random seed, 50 times
//! the cases).

mod common;
#[path = "admin_props/requests.rs"]
mod requests;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use common::props::{self, check};
use common::scrape::{server, status};
use common::*;
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::runtime::Handle;

use requests::{Case, SERVERS, TOKEN, case};

/// Does any line of `wire` carry the token exactly (`Authorization: Bearer <token>`, the
/// name in any case, white space around the value)? Only then may a state change.
fn carries_the_token(wire: &[u8]) -> bool {
    let want = format!("Bearer {TOKEN}");
    wire.split(|b| *b == b'\n').any(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            return false;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        name.eq_ignore_ascii_case(b"authorization") && value.trim_ascii() == want.as_bytes()
    })
}

/// The answer's status code, if an answer came.
fn status_code(answer: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(answer.get(..12)?).ok()?;
    text.strip_prefix("HTTP/1.")?.get(2..5)?.parse().ok()
}

/// True once `buf` holds one whole answer (our answers always have a Content-Length, which
/// an answer to HEAD only announces).
fn has_whole_answer(buf: &[u8], to_head: bool) -> bool {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    to_head || buf.len() >= end + 4 + length
}

/// Sends the bytes on a new connection; reads the first answer, then closes our side and
/// waits for the endpoint to close its side. Returns what came back.
async fn send(admin: SocketAddr, wire: &[u8]) -> Result<Vec<u8>, TestCaseError> {
    // the parser skips blank lines before a request
    let head = wire
        .iter()
        .skip_while(|b| matches!(b, b'\r' | b'\n'))
        .take(5)
        .eq(b"HEAD ");
    let mut s = TcpStream::connect(admin).await.expect("connect to admin");
    // the endpoint may close before reading everything (a head too large): not a failure
    let _ = s.write_all(wire).await;
    let mut answer = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let first = tokio::time::timeout(SOON, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
            if has_whole_answer(&answer, head) {
                return;
            }
        }
    })
    .await;
    prop_assert!(first.is_ok(), "neither answered nor closed within {SOON:?}");
    let _ = s.shutdown().await;
    let closed = tokio::time::timeout(SOON, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    prop_assert!(
        closed.is_ok(),
        "not closed within {SOON:?} after our side closed"
    );
    Ok(answer)
}

/// Every server's admin_state, from `/status`.
async fn admin_states(admin: SocketAddr) -> BTreeMap<String, String> {
    let st = status(admin).await;
    SERVERS
        .iter()
        .map(|(name, _, _)| {
            let state = server(&st, "es", name)["admin_state"]
                .as_str()
                .unwrap_or("?");
            (name.to_string(), state.to_owned())
        })
        .collect()
}

fn baseline() -> BTreeMap<String, String> {
    SERVERS
        .iter()
        .map(|(n, _, s)| (n.to_string(), s.to_string()))
        .collect()
}

/// Puts every server back in its state between cases.
async fn restore(admin: SocketAddr) {
    for (_, path, state) in SERVERS {
        let (code, body) = http_post(admin, &format!("/servers/es/{path}/{state}"), Some(TOKEN))
            .await
            .expect("POST with the token");
        assert_eq!(code, 200, "{body}");
    }
    assert_eq!(admin_states(admin).await, baseline());
}

/// What the cases got back, for the summary and to show the property is not vacuous.
#[derive(Default, Debug)]
struct Tally {
    answers: BTreeMap<u16, usize>,
    unanswered: usize,
    changes: usize,
}

async fn one_case(
    admin: SocketAddr,
    case: &Case,
    tally: &RefCell<Tally>,
) -> Result<(), TestCaseError> {
    let wire = case.wire();
    let answer = send(admin, &wire).await?;
    match status_code(&answer) {
        Some(code) => *tally.borrow_mut().answers.entry(code).or_default() += 1,
        None => tally.borrow_mut().unanswered += 1,
    }
    // the endpoint still answers, and says what every server's state is
    let states = admin_states(admin).await;
    let mut expected = baseline();
    if let Case::Authorized { server, action, .. } = case {
        prop_assert_eq!(
            status_code(&answer),
            Some(200),
            "{}",
            String::from_utf8_lossy(&answer)
        );
        expected.insert(SERVERS[*server].0.to_owned(), action.to_string());
        prop_assert_eq!(
            &states,
            &expected,
            "the token and a valid path change the state"
        );
    } else if states != expected {
        prop_assert!(
            carries_the_token(&wire),
            "changed without the token: {:?} -> {:?}",
            expected,
            states
        );
    }
    if states != baseline() {
        tally.borrow_mut().changes += 1;
        restore(admin).await;
    }
    Ok(())
}

/// roundhouse with backend `es` over three echo servers (checked by TCP connect) and a token
/// file, every server in its state between cases.
async fn start(dir: &Path) -> (Roundhouse, Vec<EchoServer>, SocketAddr) {
    let mut echoes = Vec::new();
    for _ in SERVERS {
        echoes.push(EchoServer::start().await);
    }
    let backend = SERVERS.iter().zip(&echoes).fold(
        Backend::new("es").check("type", "tcp"),
        |b, ((name, _, _), e)| b.server(&format!("\"{name}\""), e.addr),
    );
    let token_file = dir.join("admin-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let yaml = ConfigBuilder::new()
        .listener("es", "es")
        .backend(backend)
        .yaml()
        .replace(
            "admin:\n  bind: 127.0.0.1:0\n",
            &format!(
                "admin:\n  bind: 127.0.0.1:0\n  token_file: {}\n",
                token_file.display()
            ),
        );
    let rh = Roundhouse::start(&yaml).await;
    let admin = rh.admin().await;
    restore(admin).await;
    (rh, echoes, admin)
}

async fn admin_requests(runner: TestRunner) {
    let dir = tempfile::tempdir().unwrap();
    let (rh, _echoes, admin) = start(dir.path()).await;
    let tally = RefCell::new(Tally::default());
    let handle = Handle::current();
    // the runner is synchronous: each case runs to its end on this thread
    tokio::task::block_in_place(|| {
        check(runner, case(), |case| {
            handle.block_on(one_case(admin, &case, &tally))
        });
    });
    let (tally, mut rh) = (tally.into_inner(), rh);
    eprintln!("{tally:?}");
    assert!(
        rh.child.try_wait().expect("wait").is_none(),
        "roundhouse still runs"
    );
    assert_eq!(admin_states(admin).await, baseline());
    let stderr = rh.stderr.text();
    assert!(
        !stderr.contains("panicked") && !stderr.contains("internal error"),
        "{stderr}"
    );
    // not vacuous: requests were refused for want of the token, and the token did change states
    assert!(tally.answers.get(&401).is_some_and(|n| *n > 0), "{tally:?}");
    assert!(tally.changes > 0, "{tally:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_requests_never_panic_and_change_state_only_with_the_token() {
    admin_requests(props::quick(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long run: cargo test --test admin_props -- --ignored"]
async fn admin_requests_long() {
    admin_requests(props::long(300)).await;
}
