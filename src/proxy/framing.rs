//! Follows HTTP/1.1 framing on a relayed connection without terminating HTTP: the bytes pass
//! through unchanged, and this tracker, fed each direction's bytes in order, knows where each
//! request and response begins and ends. That is what it takes to close a keep-alive client
//! connection at its first idle point (the last response complete, no byte of another request
//! sent) when its server is drained or goes down, and to count requests and requests in flight.
//!
//! It follows (RFC 9110, RFC 9112): request and status lines; `Content-Length`;
//! `Transfer-Encoding` ending in `chunked` (chunk extensions and trailers); pipelined requests,
//! each one's method remembered for its response (a response to HEAD has no content); 1xx
//! interim responses before the final one; 204 and 304 without content; a response delimited
//! by the connection's close (the connection is then never idle again); `Connection: close`,
//! and HTTP/1.0 without `keep-alive`, noted as the connection's last exchange.
//!
//! Heads are read by a state machine with a few bytes of capture (`head.rs`) and never
//! buffered, so a head may be cut anywhere between two reads; names and values are scanned
//! sixteen bytes at a time (`scan.rs`). Bodies are not read at all: [`Tracker::opaque_len`] says
//! how many coming bytes are content (the rest of a `Content-Length` body or of a chunk), which
//! the relay may move with `splice(2)` and count with [`Tracker::skip`], and `feed` itself steps
//! over them by count.
//! Following a typical Elasticsearch exchange (a 570-byte search request, a 200 with a 143-byte
//! head and 1 KiB of JSON) took 210 ns of CPU on the 2-core build machine, and `compare.py`'s
//! (wrk's GET, nginx's answer) 139 ns (`benches/hot_paths.rs`); a tracker is 272 bytes and
//! allocates nothing.
//!
//! Anything it cannot follow with certainty turns it off for the rest of the connection, with a
//! [`Fallback`] reason, and the connection is relayed as bytes as before: TLS or the HTTP/2
//! preface from the client, CONNECT, a 101 Switching Protocols (the request's `Upgrade` is only a
//! proposal; the 101 decides), a line or head past a fixed limit, malformed syntax (bare LF
//! included: lines end in CRLF), lengths that are invalid or could be read two ways (both
//! `Content-Length` and `Transfer-Encoding`, two `Content-Length` fields, a request coding that
//! does not end in `chunked`: the shapes of request smuggling are never followed as something
//! else), more pipelined requests than it remembers, a response with no request waiting for it,
//! and the final response to an `Expect: 100-continue` request that comes before any of its
//! content (the client may then send the content or not: RFC 9110 10.1.1). Once off, it stays
//! off and every call returns at once.
//!
//! It assumes the relay feeds a client's bytes before the server can have them (before writing
//! them), so that a response never comes before the request it answers.

mod chunked;
mod head;
#[cfg(test)]
mod props;
mod scan;
#[cfg(test)]
mod tests;

use chunked::Chunked;
use head::{Head, Kind};

/// Requests remembered while they wait for their responses; one more falls back.
pub const MAX_PIPELINED: usize = 16;

/// Which way bytes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to server: requests.
    Up,
    /// Server to client: responses.
    Down,
}

/// Why a connection stopped being followed (and is relayed as plain bytes from then on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// The client opened with a TLS record (first byte 0x16).
    Tls,
    /// The client sent the HTTP/2 connection preface (`PRI * HTTP/2.0`).
    Http2,
    /// A CONNECT request: a tunnel follows.
    Connect,
    /// A 101 Switching Protocols response: another protocol follows.
    Upgrade,
    /// A start line, field line or chunk-size line longer than 16 KiB.
    LineTooLong,
    /// A header or trailer section larger than 64 KiB.
    HeadTooLarge,
    /// Not HTTP/1.x syntax.
    Malformed,
    /// A `Content-Length` or chunk size that is not a number, a request `Transfer-Encoding`
    /// that does not end in `chunked`, or `Transfer-Encoding` in an HTTP/1.0 message.
    InvalidLength,
    /// `Content-Length` with `Transfer-Encoding`, or `Content-Length` twice.
    ConflictingLength,
    /// More than [`MAX_PIPELINED`] requests waiting for their responses.
    TooManyPipelined,
    /// The final response to an `Expect: 100-continue` request came before any of its content.
    ExpectContinue,
    /// A response with no complete request waiting for it.
    UnexpectedResponse,
    /// The relay skipped more bytes than [`Tracker::opaque_len`] allowed.
    Skipped,
}

impl Fallback {
    /// A short name, for a log field or a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Fallback::Tls => "tls",
            Fallback::Http2 => "http2",
            Fallback::Connect => "connect",
            Fallback::Upgrade => "upgrade",
            Fallback::LineTooLong => "line_too_long",
            Fallback::HeadTooLarge => "head_too_large",
            Fallback::Malformed => "malformed",
            Fallback::InvalidLength => "invalid_length",
            Fallback::ConflictingLength => "conflicting_length",
            Fallback::TooManyPipelined => "too_many_pipelined",
            Fallback::ExpectContinue => "expect_continue",
            Fallback::UnexpectedResponse => "unexpected_response",
            Fallback::Skipped => "skipped",
        }
    }
}

/// Where one direction is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Between messages: no byte of the next one seen.
    Start,
    Head,
    /// A `Content-Length` body with this many bytes left (never 0).
    Length(u64),
    Chunked,
    /// A response body that ends when the server closes.
    UntilClose,
}

/// One direction's reading.
#[derive(Debug, Clone)]
struct Side {
    stage: Stage,
    head: Head,
    chunked: Chunked,
    /// A byte of the current body has been seen.
    body_started: bool,
}

impl Side {
    fn new(kind: Kind) -> Self {
        Side {
            stage: Stage::Start,
            head: Head::new(kind),
            chunked: Chunked::new(),
            body_started: false,
        }
    }

    fn in_body(&self) -> bool {
        matches!(self.stage, Stage::Length(_) | Stage::Chunked)
    }
}

/// What a response needs to know of its request.
#[derive(Debug, Default, Clone, Copy)]
struct Waiting {
    head_method: bool,
    /// `Expect: 100-continue` (or any expectation) on a request with content.
    expect: bool,
}

/// Requests whose heads are complete and whose final responses are not, oldest first.
#[derive(Debug, Clone)]
struct Queue {
    entries: [Waiting; MAX_PIPELINED],
    first: usize,
    len: usize,
}

impl Queue {
    fn push(&mut self, w: Waiting) -> Result<(), Fallback> {
        if self.len == MAX_PIPELINED {
            return Err(Fallback::TooManyPipelined);
        }
        self.entries[(self.first + self.len) % MAX_PIPELINED] = w;
        self.len += 1;
        Ok(())
    }

    fn front(&self) -> Option<Waiting> {
        (self.len > 0).then(|| self.entries[self.first])
    }

    fn pop(&mut self) {
        debug_assert!(self.len > 0);
        self.first = (self.first + 1) % MAX_PIPELINED;
        self.len -= 1;
    }
}

/// Follows the HTTP/1.1 framing of one connection (see the module comment).
#[derive(Debug, Clone)]
pub struct Tracker {
    up: Side,
    down: Side,
    waiting: Queue,
    requests: u64,
    close: bool,
    client_closes: bool,
    fallback: Option<Fallback>,
}

impl Default for Tracker {
    fn default() -> Self {
        Self::new()
    }
}

impl Tracker {
    /// A tracker for a new connection: idle, nothing seen.
    pub fn new() -> Self {
        Tracker {
            up: Side::new(Kind::Request),
            down: Side::new(Kind::Response),
            waiting: Queue {
                entries: [Waiting::default(); MAX_PIPELINED],
                first: 0,
                len: 0,
            },
            requests: 0,
            close: false,
            client_closes: false,
            fallback: None,
        }
    }

    /// Every request seen has its complete final response, and no byte of another request has
    /// been seen (true at the start too). Never true once fallen back.
    pub fn is_idle(&self) -> bool {
        self.fallback.is_none()
            && self.waiting.len == 0
            && self.up.stage == Stage::Start
            && self.down.stage == Stage::Start
    }

    /// Requests whose heads have been seen.
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// Requests seen whose final responses are not complete.
    pub fn in_flight(&self) -> usize {
        self.waiting.len
    }

    /// A request or response asked for the connection to end after its exchange
    /// (`Connection: close`, HTTP/1.0 without `keep-alive`, or a response that ends at close).
    pub fn close_requested(&self) -> bool {
        self.close
    }

    /// A request said it is the connection's last (`Connection: close`, or HTTP/1.0 without
    /// `keep-alive`): its client sends no further request on it (RFC 9112 9.6).
    pub fn client_closes(&self) -> bool {
        self.client_closes
    }

    /// Why the connection is no longer followed, if it is not.
    pub fn fallback(&self) -> Option<Fallback> {
        self.fallback
    }

    /// How many of the coming bytes in `direction` are content that may be moved without being
    /// shown to the tracker (then counted with [`Tracker::skip`]). `u64::MAX` once fallen back
    /// or in a response that ends at close.
    pub fn opaque_len(&self, direction: Direction) -> u64 {
        if self.fallback.is_some() {
            return u64::MAX;
        }
        let side = self.side(direction);
        match side.stage {
            Stage::Length(left) => left,
            Stage::Chunked => side.chunked.opaque_len(),
            Stage::UntilClose => u64::MAX,
            Stage::Start | Stage::Head => 0,
        }
    }

    /// Counts `n` bytes moved in `direction` without being shown; at most
    /// [`Tracker::opaque_len`] (more falls back with [`Fallback::Skipped`]).
    pub fn skip(&mut self, direction: Direction, n: u64) {
        if self.fallback.is_some() || n == 0 {
            return;
        }
        if n > self.opaque_len(direction) {
            self.fallback = Some(Fallback::Skipped);
            return;
        }
        let side = self.side_mut(direction);
        side.body_started = true;
        match side.stage {
            Stage::Length(left) if left == n => self.message_done(direction),
            Stage::Length(left) => side.stage = Stage::Length(left - n),
            Stage::Chunked => side.chunked.skip(n),
            _ => {}
        }
    }

    /// Reads the next `bytes` of `direction`, a piece of any size.
    pub fn feed(&mut self, direction: Direction, mut bytes: &[u8]) {
        while !bytes.is_empty() && self.fallback.is_none() {
            match self.step(direction, bytes) {
                Ok(n) => bytes = &bytes[n..],
                Err(reason) => self.fallback = Some(reason),
            }
        }
    }

    fn side(&self, direction: Direction) -> &Side {
        match direction {
            Direction::Up => &self.up,
            Direction::Down => &self.down,
        }
    }

    fn side_mut(&mut self, direction: Direction) -> &mut Side {
        match direction {
            Direction::Up => &mut self.up,
            Direction::Down => &mut self.down,
        }
    }

    /// Takes what it can of `bytes` in the current stage; returns how many it took.
    fn step(&mut self, direction: Direction, bytes: &[u8]) -> Result<usize, Fallback> {
        let side = self.side_mut(direction);
        match side.stage {
            Stage::Start => {
                let kind = match direction {
                    Direction::Up => Kind::Request,
                    Direction::Down => Kind::Response,
                };
                side.head.start(kind);
                side.stage = Stage::Head;
                Ok(0)
            }
            Stage::Head => {
                let (n, done) = side.head.feed(bytes)?;
                if done {
                    side.body_started = false;
                    match direction {
                        Direction::Up => self.request_head()?,
                        Direction::Down => self.response_head()?,
                    }
                }
                Ok(n)
            }
            Stage::Length(_) => {
                let n = self.opaque_len(direction).min(bytes.len() as u64);
                self.skip(direction, n);
                Ok(n as usize)
            }
            Stage::Chunked => {
                side.body_started = true;
                let (n, done) = side.chunked.feed(&mut side.head, bytes)?;
                if done {
                    self.message_done(direction);
                }
                Ok(n)
            }
            Stage::UntilClose => Ok(bytes.len()),
        }
    }

    /// A request head is complete: how its body is framed, and it waits for its response.
    fn request_head(&mut self) -> Result<(), Fallback> {
        let f = self.up.head.facts;
        let body = if f.transfer_encoding {
            if f.content_length.is_some() {
                return Err(Fallback::ConflictingLength);
            }
            // a request body must end in chunked, or its length is unknown (RFC 9112 6.3)
            if f.http10 || !f.chunked {
                return Err(Fallback::InvalidLength);
            }
            Stage::Chunked
        } else {
            match f.content_length {
                None | Some(0) => Stage::Start,
                Some(n) => Stage::Length(n),
            }
        };
        self.waiting.push(Waiting {
            head_method: f.head_method,
            expect: f.expect && body != Stage::Start,
        })?;
        self.requests += 1;
        self.client_closes |= f.close || (f.http10 && !f.keep_alive);
        self.close |= self.client_closes;
        self.up.stage = body;
        Ok(())
    }

    /// A response head is complete: interim or final, and how its body is framed.
    fn response_head(&mut self) -> Result<(), Fallback> {
        let f = self.down.head.facts;
        if f.status == 101 {
            return Err(Fallback::Upgrade);
        }
        if f.transfer_encoding && f.content_length.is_some() {
            return Err(Fallback::ConflictingLength);
        }
        if f.transfer_encoding && f.http10 {
            return Err(Fallback::InvalidLength);
        }
        let request = self.waiting.front().ok_or(Fallback::UnexpectedResponse)?;
        if f.status < 200 {
            // interim: the final response follows
            self.down.stage = Stage::Start;
            return Ok(());
        }
        if request.expect && self.waiting.len == 1 && self.up.in_body() && !self.up.body_started {
            return Err(Fallback::ExpectContinue);
        }
        self.close |= f.close || (f.http10 && !f.keep_alive);
        let body = if request.head_method || f.status == 204 || f.status == 304 {
            Stage::Start
        } else if f.transfer_encoding {
            if f.chunked {
                Stage::Chunked
            } else {
                Stage::UntilClose
            }
        } else {
            match f.content_length {
                Some(0) => Stage::Start,
                Some(n) => Stage::Length(n),
                None => Stage::UntilClose,
            }
        };
        self.close |= body == Stage::UntilClose;
        if body == Stage::Start {
            self.message_done(Direction::Down);
        } else {
            self.down.stage = body;
        }
        Ok(())
    }

    /// A message is complete; a final response takes its request off the queue.
    fn message_done(&mut self, direction: Direction) {
        self.side_mut(direction).stage = Stage::Start;
        if direction == Direction::Down {
            self.waiting.pop();
        }
    }
}
