//! The byte pump between a client and a server: both directions in one task, half-close
//! forwarded, an idle timeout, and byte counts flushed to the server's counters in batches.
//!
//! A direction holds a buffer only while data is in flight: it waits for readability first and
//! borrows a buffer from a per-thread pool just for the read and the write that follows, so an
//! idle connection costs no buffer memory at all. Bulk data goes through `splice(2)` instead
//! (see `splice.rs`), with the same rule for its pipe.
//!
//! On connections to Elasticsearch the relay also follows the HTTP/1.1 framing (`framing.rs`):
//! every byte read is shown to the tracker before it is written on, except body bytes, which are
//! spliced by count without being looked at. When the tracker says the connection is idle (the
//! last response complete, no byte of another request) and its server takes no new connections,
//! or roundhouse is stopping, the relay ends there: a client's pooled keep-alive connection is
//! closed between two requests, never in the middle of one, and its next request goes to
//! another server. It ends right after a response, or once it has been quiet for `SETTLED`,
//! never at the moment its client may be writing the next request; after a response, its FIN
//! travels with the response's last bytes (the socket is corked while the server leaves).

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::time::Instant;

use super::framing::{Direction, Tracker};
use super::idle::{self, Registration};
use super::splice::{PIPE_SIZE, Pipe};
use crate::metrics::{IdleClose, ServerMetrics};
use crate::server::ServerState;

/// Relay buffer size; one is borrowed per direction only while that direction has data in flight.
const BUFFER_SIZE: usize = 16 * 1024;
/// Buffers kept for reuse per thread; beyond that they are freed.
const POOL_LIMIT: usize = 256;
/// Byte counts reach the shared counters at least this often (and when the connection ends).
const FLUSH_EVERY: u64 = 64 * 1024;
/// Bytes one direction moves at most before it lets the relay flush its count: a pump counts in
/// a u32. tokio's per-poll budget stops a poll long before (128 reads of at most `PIPE_SIZE`);
/// this makes the bound not depend on it.
const UNFLUSHED_LIMIT: u32 = 1 << 30;
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
    /// Both sides finished sending (each FIN was forwarded).
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

/// A relay buffer; a thin pointer, where a slice's would take twice the room in every pump.
type Buffer = Box<[u8; BUFFER_SIZE]>;

// a pump keeps its positions in the buffer as u16, the bytes in its pipe and its unflushed
// count as u32 (the count reaches at most the limit and one read more)
const _: () = assert!(
    BUFFER_SIZE <= u16::MAX as usize
        && UNFLUSHED_LIMIT as usize + PIPE_SIZE + BUFFER_SIZE <= u32::MAX as usize
);

thread_local! {
    static POOL: RefCell<Vec<Buffer>> = const { RefCell::new(Vec::new()) };
}

fn take_buffer() -> Buffer {
    POOL.with_borrow_mut(|p| p.pop()).unwrap_or_else(|| {
        vec![0u8; BUFFER_SIZE]
            .into_boxed_slice()
            .try_into()
            .expect("a slice of BUFFER_SIZE bytes")
    })
}

thread_local! {
    /// Trackers of connections between two messages, for the next message of any connection.
    /// Boxed in the pool too: a connection holds the box itself, so taking one allocates nothing.
    #[allow(clippy::vec_box)]
    static TRACKERS: RefCell<Vec<Box<Tracker>>> = const { RefCell::new(Vec::new()) };
}

fn take_tracker() -> Box<Tracker> {
    TRACKERS
        .with_borrow_mut(|p| p.pop())
        .unwrap_or_else(|| Box::new(Tracker::new()))
}

fn give_tracker(mut t: Box<Tracker>) {
    *t = Tracker::new();
    TRACKERS.with_borrow_mut(|p| {
        if p.len() < POOL_LIMIT {
            p.push(t);
        }
    });
}

fn give_buffer(buf: Buffer) {
    POOL.with_borrow_mut(|p| {
        if p.len() < POOL_LIMIT {
            p.push(buf);
        }
    });
}

/// Which stream an I/O error came from.
enum Failed {
    Reader,
    Writer,
}

/// One direction: reads from `src`, writes to `dst`, forwards EOF as a write shutdown.
/// Small reads go through a pooled buffer; once a read fills a whole buffer the direction is
/// carrying bulk data and switches to `splice(2)` through a pipe.
#[derive(Default)]
struct Pump {
    buf: Option<Buffer>,
    /// The bytes of `buf` read and not yet written on.
    start: u16,
    end: u16,
    /// Splice from now on (a read filled a whole buffer, and splicing has not failed).
    bulk: bool,
    pipe: Option<Pipe>,
    in_pipe: u32,
    eof: bool,
    done: bool,
    total: u64,
    /// Bytes moved since the last flush; see `UNFLUSHED_LIMIT`.
    unflushed: u32,
}

impl Pump {
    /// `other_done`: the other direction has finished (so `dst` has sent its FIN and read all
    /// it ever will).
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        src: &mut ReadHalf<'_>,
        dst: &mut WriteHalf<'_>,
        other_done: bool,
        mut follow: Option<(&mut Followed, Direction)>,
    ) -> Poll<Result<(), Failed>> {
        loop {
            // Bytes already read go out before anything else is read.
            if self.start < self.end {
                let buf = self
                    .buf
                    .as_ref()
                    .expect("a pump with pending bytes holds a buffer");
                let n = ready!(Pin::new(&mut *dst).poll_write(cx, &buf[self.pending()]))
                    .map_err(|_| Failed::Writer)?;
                if n == 0 {
                    return Poll::Ready(Err(Failed::Writer));
                }
                self.start += n as u16;
                self.sent(n);
                if self.start == self.end {
                    give_buffer(self.buf.take().expect("checked above"));
                }
                continue;
            }
            if self.in_pipe > 0 {
                let pipe = self.pipe.as_ref().expect("bytes in the pipe mean a pipe");
                let socket: &TcpStream = dst.as_ref();
                let (fd, len) = (socket.as_raw_fd(), self.in_pipe as usize);
                match socket.try_io(Interest::WRITABLE, || pipe.drain(fd, len)) {
                    Ok(n) => {
                        self.in_pipe -= n as u32;
                        self.sent(n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        ready!(socket.poll_write_ready(cx)).map_err(|_| Failed::Writer)?;
                    }
                    Err(_) => return Poll::Ready(Err(Failed::Writer)),
                }
                continue;
            }
            if self.eof {
                // Forward the FIN; the other direction keeps flowing (half-close). When the other
                // direction is finished already, the connection ends now and closing `dst` sends
                // the FIN: a shutdown would be one more system call per connection for nothing.
                if !other_done {
                    let socket: &TcpStream = dst.as_ref();
                    match socket2::SockRef::from(socket).shutdown(Shutdown::Write) {
                        Err(e) if e.kind() != io::ErrorKind::NotConnected => {
                            return Poll::Ready(Err(Failed::Writer));
                        }
                        _ => {}
                    }
                }
                self.done = true;
                return Poll::Ready(Ok(()));
            }
            if self.unflushed >= UNFLUSHED_LIMIT {
                // the relay flushes the count after this poll, and polls again
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            // Wait for data before borrowing a buffer or a pipe for it.
            let socket: &TcpStream = src.as_ref();
            ready!(socket.poll_read_ready(cx)).map_err(|_| Failed::Reader)?;
            // Only body bytes may pass unseen: heads and chunk lines are read to be followed.
            let opaque = follow
                .as_mut()
                .map_or(u64::MAX, |(f, dir)| f.tracker().opaque_len(*dir));
            if self.bulk && opaque > 0 {
                let len = usize::try_from(opaque).map_or(PIPE_SIZE, |o| o.min(PIPE_SIZE));
                self.splice_in(socket, len)?;
                if let Some((f, dir)) = follow.as_mut() {
                    f.tracker().skip(*dir, u64::from(self.in_pipe));
                }
            } else {
                ready!(self.read_in(cx, src))?;
                if let (Some((f, dir)), Some(buf)) = (follow.as_mut(), &self.buf) {
                    f.tracker().feed(*dir, &buf[self.pending()]);
                }
            }
        }
    }

    /// One read into a pooled buffer. A read shorter than the buffer tells tokio the socket is
    /// drained, which saves the read that would only have said "would block".
    fn read_in(
        &mut self,
        cx: &mut Context<'_>,
        src: &mut ReadHalf<'_>,
    ) -> Poll<Result<(), Failed>> {
        let mut buf = self.buf.take().unwrap_or_else(take_buffer);
        let mut read = ReadBuf::new(&mut buf[..]);
        match Pin::new(src).poll_read(cx, &mut read) {
            Poll::Ready(Ok(())) => {
                let n = read.filled().len();
                if n == 0 {
                    self.eof = true;
                    give_buffer(buf);
                } else {
                    self.bulk = n == buf.len();
                    self.start = 0;
                    self.end = n as u16;
                    self.buf = Some(buf);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(_)) => {
                give_buffer(buf);
                Poll::Ready(Err(Failed::Reader))
            }
            Poll::Pending => {
                give_buffer(buf);
                Poll::Pending
            }
        }
    }

    /// One splice of at most `len` bytes from the socket into the pipe (the pipe is empty here).
    fn splice_in(&mut self, src: &TcpStream, len: usize) -> Result<(), Failed> {
        let pipe = match self.pipe.take().map_or_else(Pipe::take, Ok) {
            Ok(p) => p,
            Err(_) => {
                // no descriptors for a pipe: plain copies still work
                self.bulk = false;
                return Ok(());
            }
        };
        let fd = src.as_raw_fd();
        match src.try_io(Interest::READABLE, || pipe.fill(fd, len)) {
            Ok(0) => {
                self.eof = true;
                pipe.give_back(true);
            }
            Ok(n) => {
                self.in_pipe = n as u32;
                self.pipe = Some(pipe);
            }
            // Nothing to read: an idle connection holds no pipe.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => pipe.give_back(true),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                self.bulk = false;
                pipe.give_back(true);
            }
            Err(_) => {
                pipe.give_back(true);
                return Err(Failed::Reader);
            }
        }
        Ok(())
    }

    /// Where the bytes read and not yet written on are in `buf`.
    fn pending(&self) -> std::ops::Range<usize> {
        usize::from(self.start)..usize::from(self.end)
    }

    /// No byte read and not yet written on.
    fn is_empty(&self) -> bool {
        self.start == self.end && self.in_pipe == 0
    }

    fn sent(&mut self, n: usize) {
        self.total += n as u64;
        self.unflushed += n as u32;
    }

    fn flush_to(&mut self, counter: &prometheus::IntCounter, force: bool) {
        if u64::from(self.unflushed) >= FLUSH_EVERY || (force && self.unflushed > 0) {
            counter.inc_by(u64::from(self.unflushed));
            self.unflushed = 0;
        }
    }
}

impl Drop for Pump {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            give_buffer(buf);
        }
        if let Some(pipe) = self.pipe.take() {
            pipe.give_back(self.in_pipe == 0);
        }
    }
}

/// The HTTP side of a followed connection: its tracker, its place in the worker's wake list,
/// and what has been counted of it so far.
struct Followed {
    /// Held only while a message is on its way: given back to the worker's pool at every idle
    /// point (a fresh tracker and an idle one are the same state but for the request count),
    /// so that a pooled keep-alive connection waiting for its next request holds 8 bytes, not
    /// 272. Measured with benches/compare.py's idle load: 2.26 KiB per idle connection with the
    /// tracker inline, 1.88 before framing was followed.
    tracker: Option<Box<Tracker>>,
    /// Requests counted by the trackers given back.
    earlier: u64,
    registration: Option<Registration>,
    requests: u64,
    in_flight: usize,
    fell_back: bool,
}

impl Followed {
    fn new() -> Followed {
        Followed {
            tracker: None,
            earlier: 0,
            registration: None,
            requests: 0,
            in_flight: 0,
            fell_back: false,
        }
    }

    /// The tracker, taken from the pool when the connection's next message begins.
    fn tracker(&mut self) -> &mut Tracker {
        self.tracker.get_or_insert_with(take_tracker)
    }

    /// Gives the tracker back while the connection is idle. One that saw `Connection: close`
    /// is kept: the close must still end the connection.
    fn release_if_idle(&mut self) {
        if let Some(t) = self
            .tracker
            .take_if(|t| t.is_idle() && !t.close_requested())
        {
            self.earlier += t.requests();
            give_tracker(t);
        }
    }

    /// Requests whose heads have been seen on this connection.
    fn requests_seen(&self) -> u64 {
        self.earlier + self.tracker.as_ref().map_or(0, |t| t.requests())
    }

    /// See [`Tracker::is_idle`]; true while no tracker is held.
    fn is_idle(&self) -> bool {
        self.tracker.as_ref().is_none_or(|t| t.is_idle())
    }

    /// Brings the server's request counters up to date with what the tracker saw.
    fn account(&mut self, m: &ServerMetrics) {
        let seen = self.requests_seen();
        let in_flight = self.tracker.as_ref().map_or(0, |t| t.in_flight());
        if seen != self.requests || in_flight != self.in_flight {
            m.requests.add(
                seen - self.requests,
                in_flight as i64 - self.in_flight as i64,
            );
            self.requests = seen;
            self.in_flight = in_flight;
        }
        if let Some(why) = self.tracker.as_ref().and_then(|t| t.fallback())
            && !self.fell_back
        {
            self.fell_back = true;
            m.byte_relays.inc();
            m.unfollowed(why.as_str());
            // what it was in flight is no longer known
            m.requests.add(0, -(self.in_flight as i64));
            self.in_flight = 0;
        }
    }

    /// Takes the connection out of the server's gauges when it ends.
    fn finish(&mut self, m: &ServerMetrics) {
        m.requests.add(0, -(self.in_flight as i64));
        if self.fell_back {
            m.byte_relays.dec();
        }
        if let Some(t) = self.tracker.take() {
            give_tracker(t);
        }
    }
}

/// The followed side a pump shows its bytes to, with the pump's direction.
fn tracker(f: &mut Option<Followed>, dir: Direction) -> Option<(&mut Followed, Direction)> {
    f.as_mut().map(|f| (f, dir))
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
        if quiet_for(sleep.as_mut(), cx, *last_activity, *idle) {
            return Poll::Ready(End::IdleTimeout);
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// A direction whose count reached the limit moves nothing more in this poll, and asks to be
    /// polled again; once flushed it moves the bytes.
    #[tokio::test]
    async fn a_pump_stops_at_its_unflushed_limit_until_flushed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut from = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut to, _) = listener.accept().await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut from, b"ping")
            .await
            .unwrap();
        to.readable().await.unwrap();
        let (mut src, _) = to.split();
        let (_, mut dst) = from.split();
        let mut pump = Pump::default();
        pump.unflushed = UNFLUSHED_LIMIT;
        let woken = Arc::new(Woken(AtomicBool::new(false)));
        let waker = std::task::Waker::from(woken.clone());
        let mut cx = Context::from_waker(&waker);
        let first = pump.poll(&mut cx, &mut src, &mut dst, false, None);
        assert!(first.is_pending());
        assert!(woken.0.load(Ordering::SeqCst), "asks to be polled again");
        assert_eq!(pump.total, 0, "moved nothing past the limit");
        let counter = prometheus::IntCounter::new("bytes", "bytes").unwrap();
        pump.flush_to(&counter, false);
        assert_eq!(counter.get(), u64::from(UNFLUSHED_LIMIT));
        let _ = poll_fn(|cx| match pump.poll(cx, &mut src, &mut dst, false, None) {
            Poll::Pending if pump.total > 0 => Poll::Ready(()),
            other => other.map(|_| ()),
        })
        .await;
        assert_eq!(pump.total, 4, "moved the bytes once flushed");
    }

    struct Woken(AtomicBool);

    impl std::task::Wake for Woken {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
}
