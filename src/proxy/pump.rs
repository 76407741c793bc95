//! One direction of a relayed connection: reads from one socket and writes to the other,
//! forwards the end of the stream as a write shutdown, and counts the bytes it moved.
//!
//! A direction holds a buffer only while data is in flight: it waits for readability first and
//! borrows a buffer from a per-thread pool just for the read and the write that follows, so an
//! idle connection costs no buffer memory at all. Bulk data goes through `splice(2)` instead
//! (see `splice.rs`), with the same rule for its pipe. On a followed connection every byte read
//! is shown to the tracker before it is written on, except body bytes, which are spliced by
//! count without being looked at.

use std::cell::RefCell;
use std::io;
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};

use super::followed::Followed;
use super::framing::Direction;
use super::splice::{PIPE_MAX, Pipe};

/// Relay buffer size; one is borrowed per direction only while that direction has data in flight.
const BUFFER_SIZE: usize = 16 * 1024;
/// Buffers kept for reuse per thread; beyond that they are freed.
const POOL_LIMIT: usize = 256;
/// Byte counts reach the shared counters at least this often (and when the connection ends).
const FLUSH_EVERY: u64 = 64 * 1024;
/// Bytes one direction moves at most before it lets the relay flush its count: a pump counts in
/// a u32. tokio's per-poll budget stops a poll long before (128 reads of at most `PIPE_MAX`);
/// this makes the bound not depend on it.
const UNFLUSHED_LIMIT: u32 = 1 << 30;

/// A relay buffer; a thin pointer, where a slice's would take twice the room in every pump.
type Buffer = Box<[u8; BUFFER_SIZE]>;

// a pump keeps its positions in the buffer as u16, the bytes in its pipe and its unflushed
// count as u32 (the count reaches at most the limit and one read more)
const _: () = assert!(
    BUFFER_SIZE <= u16::MAX as usize
        && UNFLUSHED_LIMIT as usize + PIPE_MAX + BUFFER_SIZE <= u32::MAX as usize
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

fn give_buffer(buf: Buffer) {
    POOL.with_borrow_mut(|p| {
        if p.len() < POOL_LIMIT {
            p.push(buf);
        }
    });
}

/// Which stream an I/O error came from.
pub(super) enum Failed {
    Reader,
    Writer,
}

/// One direction: reads from `src`, writes to `dst`, forwards EOF as a write shutdown.
/// Small reads go through a pooled buffer; once a read fills a whole buffer the direction is
/// carrying bulk data and switches to `splice(2)` through a pipe.
#[derive(Default)]
pub(super) struct Pump {
    buf: Option<Buffer>,
    /// The bytes of `buf` read and not yet written on.
    start: u16,
    end: u16,
    /// Splice from now on (a read filled a whole buffer, and splicing has not failed).
    bulk: bool,
    pipe: Option<Pipe>,
    in_pipe: u32,
    eof: bool,
    pub(super) done: bool,
    pub(super) total: u64,
    /// Bytes moved since the last flush; see `UNFLUSHED_LIMIT`.
    unflushed: u32,
}

impl Pump {
    /// `other_done`: the other direction has finished (so `dst` has sent its FIN and read all
    /// it ever will).
    pub(super) fn poll(
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
                // So it does when the server ends after the complete answer to a request that
                // said it was the last (`Connection: close`): its client sends nothing more, and
                // the relay ends the connection without waiting for the client's own FIN.
                let last = matches!(&follow, Some((f, Direction::Down)) if f.last_exchange_done());
                if !other_done && !last {
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
                let len = usize::try_from(opaque).map_or(PIPE_MAX, |o| o.min(PIPE_MAX));
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
    pub(super) fn is_empty(&self) -> bool {
        self.start == self.end && self.in_pipe == 0
    }

    fn sent(&mut self, n: usize) {
        self.total += n as u64;
        self.unflushed += n as u32;
    }

    pub(super) fn flush_to(&mut self, counter: &prometheus::IntCounter, force: bool) {
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

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
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
