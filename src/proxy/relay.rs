//! The relay between a client and a server: both directions in one task (each a pump, see
//! `pump.rs`), half-close forwarded, an idle timeout, and byte counts flushed to the server's
//! counters in batches.
//!
//! On connections to Elasticsearch the relay also follows the HTTP/1.1 framing (`framing.rs`,
//! shown every byte a pump reads but body bytes; `followed.rs`). When the tracker says the
//! connection is idle (the last response complete, no byte of another request) and its server
//! takes no new connections, or roundhouse is stopping, the relay ends there: a client's pooled
//! keep-alive connection is closed between two requests, never in the middle of one, and its
//! next request goes to another server. It ends right after a response, or once it has been
//! quiet for `SETTLED`, never at the moment its client may be writing the next request; after a
//! response, its FIN travels with the response's last bytes (the socket is corked while the
//! server leaves). A followed connection whose client asked for `Connection: close` also ends
//! at the server's FIN after the last answer, without a half-close (see `Pump::poll`).

use std::future::poll_fn;
use std::net::Shutdown;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::time::Instant;

use super::followed::{Followed, tracker};
use super::framing::Direction;
use super::idle::{self, Registration};
use super::pump::{Failed, Pump};
use crate::metrics::IdleClose;
use crate::server::ServerState;

/// How long a connection must have been quiet before it is closed while idle. Closing a
/// connection its client has just taken from its pool and is writing a request on resets that
/// request; a client that sends requests back to back does so within milliseconds of reading
/// the last answer. So a connection whose server leaves closes right after it completes a
/// response (its client is still reading it, and finds the connection closed before it reuses
/// it), or once it has been quiet this long. Measured with opensearch-py (4 threads, back to
/// back) through a real rolling restart: closing at once reset 1 to 2 requests per 3 drains.
const SETTLED: Duration = Duration::from_millis(250);

/// How late the coarse clock may be: it advances once per kernel tick (1 to 10 ms: HZ 1000 to
/// 100). A connection's last activity is read from it (see [`coarse_now`]), and every deadline
/// judged from it gets this margin, so a connection is never judged quiet early; at most this
/// much and one tick late.
const TICK: Duration = Duration::from_millis(10);

/// Now, on the coarse monotonic clock (`CLOCK_MONOTONIC_COARSE`, a read of what the kernel set
/// at its last tick). A relayed connection notes the time of every poll that moves a byte: on
/// the precise clock that was two clock reads per keep-alive request at about 35 ns each in a
/// virtual machine's vDSO, 1% of the proxy's CPU samples.
fn coarse_now() -> coarsetime::Instant {
    // `now()` would also store the reading in a global both workers write
    coarsetime::Instant::now_without_cache_update()
}

/// How long until `after` has passed since `last` (a [`coarse_now`] reading), with [`TICK`]'s
/// margin; zero once it has.
fn left(last: coarsetime::Instant, after: Duration) -> Duration {
    let quiet: Duration = coarse_now().duration_since(last).into();
    (after + TICK).saturating_sub(quiet)
}

/// Polls `timer` until `after` has passed since `last` (a [`coarse_now`] reading): true once it
/// has; else the timer is set for when it will (bytes moved since it was set move it on).
fn quiet_for(
    mut timer: Pin<&mut tokio::time::Sleep>,
    cx: &mut Context<'_>,
    last: coarsetime::Instant,
    after: Duration,
) -> bool {
    while timer.as_mut().poll(cx).is_ready() {
        let wait = left(last, after);
        if wait.is_zero() {
            return true;
        }
        timer.as_mut().reset(Instant::now() + wait);
    }
    false
}

/// Why a relayed connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Both sides finished sending (each FIN was forwarded), or the server finished after the
    /// complete answer to a request that said it was the connection's last.
    Closed,
    /// No bytes either way for the idle timeout.
    IdleTimeout,
    /// The client reset the connection or stopped reading.
    ClientError,
    /// The server reset the connection or stopped reading.
    ServerError,
    /// Closed at an idle point: no request in flight, the server taking no new connections.
    IdleClose(IdleClose),
}

impl End {
    pub fn as_str(self) -> &'static str {
        match self {
            End::Closed => "closed",
            End::IdleTimeout => "idle_timeout",
            End::ClientError => "client_error",
            End::ServerError => "server_error",
            End::IdleClose(_) => "idle_close",
        }
    }
}

/// What a relayed connection carried.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// Bytes from the client written to the server.
    pub sent: u64,
    /// Bytes from the server written to the client.
    pub received: u64,
    /// Requests seen, when the framing was followed.
    pub requests: Option<u64>,
    pub end: End,
}

/// True when the client has sent bytes roundhouse has not read yet (a request on its way).
fn has_unread(socket: &TcpStream) -> bool {
    let mut byte = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    matches!(socket2::SockRef::from(socket).peek(&mut byte), Ok(n) if n > 0)
}

/// Relays until both directions are finished, one side fails, or nothing moves for `idle`.
/// With `follow`, tracks the HTTP/1.1 framing and ends at an idle point once `state` says its
/// server takes no new connections (or the worker is stopping): right after a response, or
/// after `SETTLED` without a new request.
pub async fn relay(
    client: &mut TcpStream,
    server: &mut TcpStream,
    idle: Duration,
    state: &ServerState,
    follow: bool,
) -> Outcome {
    let metrics = &state.metrics;
    if !follow {
        metrics.byte_relays.inc();
    }
    let sleep = tokio::time::sleep(idle);
    tokio::pin!(sleep);
    let (client_read, client_write) = client.split();
    let (server_read, server_write) = server.split();
    let mut c = Connection {
        client_read,
        client_write,
        server_read,
        server_write,
        up: Pump::default(),
        down: Pump::default(),
        followed: follow.then(Followed::new),
        state,
        idle,
        sleep,
        sleep_armed: false,
        settle: None,
        last_activity: coarse_now(),
    };
    // one reference in the waiting future, not one per piece of the connection's state: an
    // idle connection's task is that much smaller
    let end = poll_fn(|cx| c.poll(cx)).await;
    c.up.flush_to(&metrics.sent, true);
    c.down.flush_to(&metrics.received, true);
    match &mut c.followed {
        Some(f) => {
            // the poll that ended the connection returned before counting what it fed the
            // tracker (a fallback in the last bytes, say)
            f.account(metrics);
            f.finish(metrics);
        }
        None => metrics.byte_relays.dec(),
    }
    Outcome {
        sent: c.up.total,
        received: c.down.total,
        requests: c.followed.as_ref().map(|f| f.requests_seen()),
        end,
    }
}

/// What a relayed connection holds while it waits: both pumps, the followed framing, and its
/// timers.
struct Connection<'a> {
    client_read: ReadHalf<'a>,
    client_write: WriteHalf<'a>,
    server_read: ReadHalf<'a>,
    server_write: WriteHalf<'a>,
    /// Client to server.
    up: Pump,
    /// Server to client.
    down: Pump,
    followed: Option<Followed>,
    state: &'a ServerState,
    idle: Duration,
    sleep: Pin<&'a mut tokio::time::Sleep>,
    /// `sleep` has been polled, so it holds the waker of this connection's task (a task's
    /// waker stays the same for its life; see [`Registration`]). From then on it is polled only
    /// once it has fired: every poll of a timer clones the task's waker into it and drops the
    /// one it held. Done on every poll, that was 0.7% of the proxy's CPU samples under
    /// keep-alive load, and polling it only once fired took 0.07 µs of user space off a
    /// request (0.93×, ten runs of benches/compare.py against the build before).
    sleep_armed: bool,
    /// Made only when a connection waits to close (rarely): no timer on the way of every one.
    settle: Option<Pin<Box<tokio::time::Sleep>>>,
    /// When a byte last moved, on the coarse clock.
    last_activity: coarsetime::Instant,
}

impl Connection<'_> {
    /// Polls the connection. While its server is leaving (or roundhouse is stopping), the
    /// client's socket is corked for the length of the poll: what the poll writes to the client
    /// is held in the socket. When those bytes complete a response and the connection closes
    /// at that idle point, the write shutdown puts the FIN in the segment of the last bytes, so
    /// the client can never read the end of the answer and still find the connection open: a
    /// pool that checks a connection before it reuses it (urllib3 does) drops this one, and no
    /// next request is sent on it to be reset by the close. Uncorked, the close came one wake-up
    /// of this thread after the last bytes; a soak on a busy machine had a request reset in
    /// between. Any other outcome of the poll uncorks, which sends what was held at once.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<End> {
        let leaving =
            self.followed.is_some() && (idle::stopping() || self.state.leaving().is_some());
        if !leaving {
            return self.poll_io(cx, false);
        }
        // a socket that cannot be corked closes as it did before
        let corked = socket2::SockRef::from(self.client_write.as_ref())
            .set_tcp_cork(true)
            .is_ok();
        let end = self.poll_io(cx, true);
        if corked {
            let socket = socket2::SockRef::from(self.client_write.as_ref());
            match end {
                // the FIN goes out with the held bytes; the caller closes the socket right after
                Poll::Ready(End::IdleClose(_)) => {
                    let _ = socket.shutdown(Shutdown::Write);
                }
                _ => {
                    let _ = socket.set_tcp_cork(false);
                }
            }
        }
        end
    }

    /// One poll of both directions and the timers; `leaving_before`: whether the server was
    /// leaving before this poll moved any byte (see `answered_now`).
    fn poll_io(&mut self, cx: &mut Context<'_>, leaving_before: bool) -> Poll<End> {
        let Connection {
            client_read,
            client_write,
            server_read,
            server_write,
            up,
            down,
            followed,
            state,
            idle,
            sleep,
            sleep_armed,
            settle,
            last_activity,
        } = self;
        let metrics = &state.metrics;
        let moved = (up.total, down.total, up.done, down.done);
        let mut result = None;
        if !up.done
            && let Poll::Ready(Err(f)) = up.poll(
                cx,
                client_read,
                server_write,
                down.done,
                tracker(followed, Direction::Up),
            )
        {
            result = Some(match f {
                Failed::Reader => End::ClientError,
                Failed::Writer => End::ServerError,
            });
        }
        if result.is_none()
            && !down.done
            && let Poll::Ready(Err(f)) = down.poll(
                cx,
                server_read,
                client_write,
                up.done,
                tracker(followed, Direction::Down),
            )
        {
            result = Some(match f {
                Failed::Reader => End::ServerError,
                Failed::Writer => End::ClientError,
            });
        }
        up.flush_to(&metrics.sent, false);
        down.flush_to(&metrics.received, false);
        if let Some(end) = result {
            return Poll::Ready(end);
        }
        if up.done && down.done {
            return Poll::Ready(End::Closed);
        }
        if down.done && followed.as_ref().is_some_and(Followed::last_exchange_done) {
            // the server's FIN after the last exchange its client asked for (see `Pump::poll`)
            return Poll::Ready(End::Closed);
        }
        if moved != (up.total, down.total, up.done, down.done) {
            *last_activity = coarse_now();
        }
        if let Some(f) = followed.as_mut() {
            f.account(metrics);
            if f.registration.is_none() {
                f.registration = Some(Registration::new(cx.waker()));
            }
            f.release_if_idle();
            let quiet = f.is_idle() && up.is_empty() && down.is_empty() && !up.done;
            if quiet {
                // a connection that never carried a request is only closed when stopping: its
                // client may be sending its first request right now, and a fresh connection
                // closed under it would be an error, not a stale pooled one
                let reason = if idle::stopping() {
                    Some(IdleClose::Shutdown)
                } else if f.requests_seen() > 0 {
                    state.leaving()
                } else {
                    None
                };
                if let Some(r) = reason
                    && !has_unread(client_read.as_ref())
                {
                    // A response completed in this very poll, and the server was leaving before it
                    // went out: its client is still reading it. A leave seen only after the
                    // response went out (this thread held up between the two, while the client
                    // read the answer and may be writing its next request) is treated as a leave
                    // of an idle connection: it waits until the connection is quiet.
                    let answered_now = leaving_before && down.total != moved.1;
                    if answered_now || left(*last_activity, SETTLED).is_zero() {
                        return Poll::Ready(End::IdleClose(r));
                    }
                    let timer = settle.get_or_insert_with(|| {
                        Box::pin(tokio::time::sleep(left(*last_activity, SETTLED)))
                    });
                    if quiet_for(timer.as_mut(), cx, *last_activity, SETTLED) {
                        return Poll::Ready(End::IdleClose(r));
                    }
                }
            }
        }
        if !*sleep_armed || sleep.is_elapsed() {
            *sleep_armed = true;
            if quiet_for(sleep.as_mut(), cx, *last_activity, *idle) {
                return Poll::Ready(End::IdleTimeout);
            }
        }
        Poll::Pending
    }
}
