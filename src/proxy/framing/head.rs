//! The head of one message — a request line or status line and its header section, or the
//! trailer section of a chunked body — read in pieces cut anywhere, with no buffer: a few bytes
//! of capture hold the part being recognised when a piece ends inside it (a method, a version, a
//! header name, one token of a list), and what the tracker needs is kept as plain facts.
//!
//! Only the fields that decide framing are read: `Content-Length`, `Transfer-Encoding`,
//! `Connection` and `Expect`. Every other line is only checked to be a field line (a token name,
//! a colon, no control bytes but tab) and skipped.

use super::Fallback;
use super::scan::{find_stop, is_tchar, token_len};

/// Longest start line or field line followed (Elasticsearch's own limit for the request line is
/// 4 KiB by default).
pub(super) const MAX_LINE: u32 = 16 * 1024;
/// Largest head followed: start line and header section, or a trailer section.
pub(super) const MAX_HEAD: u32 = 64 * 1024;
/// Bytes captured for a name or token; "transfer-encoding" is the longest one looked for.
const CAP: usize = 18;

/// What is being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Request,
    Response,
    /// The trailer section after a chunked body: field lines only, none of them read.
    Trailer,
}

/// What a head says about framing and the connection.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Facts {
    /// Request method HEAD: its response has no content.
    pub(super) head_method: bool,
    /// Request method PRI (the HTTP/2 preface, when the version is HTTP/2.0).
    pri: bool,
    pub(super) http10: bool,
    pub(super) status: u16,
    pub(super) content_length: Option<u64>,
    pub(super) transfer_encoding: bool,
    /// `chunked` is the last transfer coding.
    pub(super) chunked: bool,
    chunked_seen: bool,
    pub(super) close: bool,
    pub(super) keep_alive: bool,
    pub(super) expect: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Method,
    TargetStart,
    Target,
    RequestVersion,
    ResponseVersion,
    Status,
    Reason,
    /// CR of the start line seen.
    StartLf,
    /// At the start of a field line, or of the empty line that ends the head.
    LineStart,
    Name,
    /// The value of a field nobody reads.
    Skip,
    LengthStart,
    LengthDigits,
    LengthEnd,
    ListStart,
    ListToken,
    ListEnd,
    ListParams,
    /// CR of a field line seen.
    LineLf,
    /// CR of the empty line seen.
    EndLf,
}

/// Which comma-separated list a value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum List {
    TransferEncoding,
    Connection,
}

/// A head being read (see the module comment).
#[derive(Debug, Clone)]
pub(super) struct Head {
    kind: Kind,
    state: State,
    list: List,
    cap: [u8; CAP],
    /// Bytes in `cap`; past `CAP` it only counts (saturating), and the word is none of ours.
    cap_len: u8,
    /// Bytes of the current line seen in earlier pieces.
    line: u32,
    /// Bytes of the head seen in earlier pieces.
    size: u32,
    pub(super) facts: Facts,
}

fn is_ctl(c: u8) -> bool {
    c < 0x20 || c == 0x7f
}

/// `HTTP/1.x`: `Some(true)` for HTTP/1.0.
fn http1(v: &[u8]) -> Option<bool> {
    match v {
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', minor] if minor.is_ascii_digit() => {
            Some(*minor == b'0')
        }
        _ => None,
    }
}

/// A `Content-Length` value that ends its line, CRLF included: the length and the bytes it
/// took. `None` for anything else (cut by the piece's end, not a number, too large), which the
/// byte-at-a-time path then takes.
fn whole_length(bytes: &[u8]) -> Option<(u64, usize)> {
    let ows = |from: usize| {
        from + bytes[from..]
            .iter()
            .take_while(|&&c| c == b' ' || c == b'\t')
            .count()
    };
    let start = ows(0);
    let digits = bytes[start..]
        .iter()
        .take_while(|c| c.is_ascii_digit())
        .count();
    if digits == 0 || digits > 19 {
        return None;
    }
    let end = ows(start + digits);
    if bytes.get(end..end + 2) != Some(b"\r\n") {
        return None;
    }
    let length = bytes[start..start + digits]
        .iter()
        .fold(0, |n: u64, &c| n * 10 + u64::from(c - b'0'));
    Some((length, end + 2))
}

impl Head {
    pub(super) fn new(kind: Kind) -> Self {
        let mut head = Head {
            kind,
            state: State::LineStart,
            list: List::Connection,
            cap: [0; CAP],
            cap_len: 0,
            line: 0,
            size: 0,
            facts: Facts::default(),
        };
        head.start(kind);
        head
    }

    /// Starts reading a new head of `kind`.
    pub(super) fn start(&mut self, kind: Kind) {
        self.kind = kind;
        self.state = match kind {
            Kind::Request => State::Method,
            Kind::Response => State::ResponseVersion,
            Kind::Trailer => State::LineStart,
        };
        self.cap_len = 0;
        self.line = 0;
        self.size = 0;
        self.facts = Facts::default();
    }

    fn captured(&self) -> &[u8] {
        let n = self.cap_len as usize;
        if n <= CAP { &self.cap[..n] } else { &[] }
    }

    /// Captures what fits of `part` (a name cut between pieces).
    fn capture_all(&mut self, part: &[u8]) {
        let at = (self.cap_len as usize).min(CAP);
        let n = part.len().min(CAP - at);
        self.cap[at..at + n].copy_from_slice(&part[..n]);
        self.cap_len = (self.cap_len as usize + part.len()).min(u8::MAX as usize) as u8;
    }

    fn capture(&mut self, c: u8) {
        if let Some(slot) = self.cap.get_mut(self.cap_len as usize) {
            *slot = c;
        }
        self.cap_len = self.cap_len.saturating_add(1);
    }

    /// Reads head bytes. Returns how many it took and whether the head is complete (then the
    /// rest of `bytes` belongs to what follows it).
    ///
    /// One loop over the piece with the state in a local: the runs that hold most bytes (names,
    /// values, the target) are scanned inside it, sixteen bytes at a time; a method, a status
    /// code and a `Content-Length` value are taken whole when the piece holds them; the rest
    /// go a byte at a time to `step`. Each of these cut the cost of a typical exchange (910 ns
    /// of CPU with a byte-at-a-time loop for everything, 260 ns before the sixteen-byte scans
    /// and whole reads, 210 ns now).
    pub(super) fn feed(&mut self, bytes: &[u8]) -> Result<(usize, bool), Fallback> {
        let mut state = self.state;
        let mut i = 0;
        // where the current line starts in `bytes` (0 when it started in an earlier piece)
        let mut line_start = 0;
        while i < bytes.len() {
            let c = bytes[i];
            let rest = &bytes[i..];
            match state {
                // The states that see most bytes scan in a loop of their own.
                State::Skip | State::Reason => {
                    let Some(n) = find_stop(rest, b' ') else {
                        i = bytes.len();
                        continue;
                    };
                    i += n + 1;
                    state = match rest[n] {
                        b'\t' => state,
                        // the LF too, when it is here: one turn of the loop per field line
                        b'\r' if state == State::Skip && rest.get(n + 1) == Some(&b'\n') => {
                            i += 1;
                            self.end_line(line_start, i)?;
                            line_start = i;
                            State::LineStart
                        }
                        b'\r' if state == State::Skip => State::LineLf,
                        b'\r' => State::StartLf,
                        _ => return Err(Fallback::Malformed),
                    };
                    continue;
                }
                State::Target => {
                    match find_stop(rest, b' ' + 1) {
                        None => i = bytes.len(),
                        Some(n) if rest[n] == b' ' => {
                            state = State::RequestVersion;
                            self.cap_len = 0;
                            i += n + 1;
                        }
                        Some(_) => return Err(Fallback::Malformed),
                    }
                    continue;
                }
                State::LineStart | State::Name => {
                    // Field lines one after another in a loop of their own while nobody reads
                    // them: no turn through the dispatch above per line, whose jump the
                    // processor could not foresee (a quarter of this function's samples).
                    while let Some(&c) = bytes.get(i) {
                        if state == State::LineStart {
                            if c == b'\r' {
                                state = State::EndLf;
                                i += 1;
                                break;
                            }
                            if !is_tchar(c) {
                                // an empty name, or obs-fold (RFC 9112 5.2)
                                return Err(Fallback::Malformed);
                            }
                            self.cap_len = 0;
                            state = State::Name;
                        }
                        let rest = &bytes[i..];
                        let n = token_len(rest);
                        i += n;
                        if n == rest.len() {
                            // the name goes on in the next piece
                            self.capture_all(rest);
                            break;
                        }
                        if rest[n] != b':' {
                            // whitespace before the colon included (RFC 9112 5.1)
                            return Err(Fallback::Malformed);
                        }
                        i += 1;
                        state = if self.cap_len == 0 {
                            self.field(&rest[..n])?
                        } else {
                            self.capture_all(&rest[..n]);
                            let (cap, len) = (self.cap, self.cap_len as usize);
                            self.field(cap.get(..len).unwrap_or_default())?
                        };
                        if state != State::Skip {
                            break;
                        }
                        // the value, and the line's end when both are in this piece
                        let rest = &bytes[i..];
                        let Some(n) = find_stop(rest, b' ') else {
                            i = bytes.len();
                            break;
                        };
                        if rest[n] != b'\r' || rest.get(n + 1) != Some(&b'\n') {
                            // a tab, a CR at the end of the piece, or a byte not allowed: the
                            // loop above takes it from there
                            i += n;
                            break;
                        }
                        i += n + 2;
                        self.end_line(line_start, i)?;
                        line_start = i;
                        state = State::LineStart;
                    }
                    continue;
                }
                State::LineLf | State::StartLf | State::EndLf => {
                    if c != b'\n' {
                        return Err(Fallback::Malformed);
                    }
                    self.end_line(line_start, i + 1)?;
                    line_start = i + 1;
                    if state == State::EndLf {
                        self.account(i + 1)?;
                        self.state = state;
                        return Ok((i + 1, true));
                    }
                    state = State::LineStart;
                }
                State::LengthStart => {
                    // the whole value and its line's end, when the piece holds them
                    if let Some((length, n)) = whole_length(rest) {
                        self.facts.content_length = Some(length);
                        i += n;
                        self.end_line(line_start, i)?;
                        line_start = i;
                        state = State::LineStart;
                    } else {
                        state = self.step(state, c)?;
                        i += 1;
                    }
                    continue;
                }
                State::ListStart if is_tchar(c) => {
                    self.cap_len = 0;
                    state = State::ListToken;
                    continue;
                }
                State::ListToken => {
                    let n = token_len(rest);
                    self.capture_all(&rest[..n]);
                    i += n;
                    if n < rest.len() {
                        state = self.step(state, rest[n])?;
                        i += 1;
                    }
                    continue;
                }
                // Whole methods and versions when the piece holds them, as it nearly always
                // does.
                State::Method if self.cap_len == 0 => {
                    let n = token_len(rest);
                    if n > 0 && rest.get(n) == Some(&b' ') {
                        self.capture_all(&rest[..n]);
                        state = self.step(state, b' ')?;
                        i += n + 1;
                    } else {
                        state = self.step(state, c)?;
                        i += 1;
                    }
                    continue;
                }
                State::RequestVersion if self.cap_len == 0 && rest.get(8) == Some(&b'\r') => {
                    self.capture_all(&rest[..8]);
                    state = self.step(state, b'\r')?;
                    i += 8;
                }
                State::ResponseVersion if self.cap_len == 0 && rest.get(8) == Some(&b' ') => {
                    self.facts.http10 = http1(&rest[..8]).ok_or(Fallback::Malformed)?;
                    state = State::Status;
                    i += 8;
                }
                State::Status
                    if self.cap_len == 0
                        && rest.len() > 3
                        && rest[..3].iter().all(u8::is_ascii_digit) =>
                {
                    let digit = |k: usize| u16::from(rest[k] - b'0');
                    self.facts.status = digit(0) * 100 + digit(1) * 10 + digit(2);
                    self.cap_len = 3;
                    state = self.step(state, rest[3])?;
                    i += 4;
                    continue;
                }
                _ => state = self.step(state, c)?,
            }
            i += 1;
        }
        self.state = state;
        self.line += (bytes.len() - line_start) as u32;
        if self.line > MAX_LINE {
            return Err(Fallback::LineTooLong);
        }
        self.account(bytes.len())?;
        Ok((bytes.len(), false))
    }

    /// A line of this piece from `start` ends before `end` (after its LF).
    fn end_line(&mut self, start: usize, end: usize) -> Result<(), Fallback> {
        if self.line as usize + (end - start) > MAX_LINE as usize {
            return Err(Fallback::LineTooLong);
        }
        self.line = 0;
        Ok(())
    }

    /// Adds `n` bytes of this piece to the head's size.
    fn account(&mut self, n: usize) -> Result<(), Fallback> {
        let size = self.size as usize + n;
        if size > MAX_HEAD as usize {
            return Err(Fallback::HeadTooLarge);
        }
        self.size = size as u32;
        Ok(())
    }

    /// One byte in any state without a loop of its own.
    fn step(&mut self, state: State, c: u8) -> Result<State, Fallback> {
        Ok(match state {
            State::Method if is_tchar(c) => {
                self.capture(c);
                State::Method
            }
            State::Method if c == b' ' && self.cap_len > 0 => {
                match self.captured() {
                    b"HEAD" => self.facts.head_method = true,
                    b"PRI" => self.facts.pri = true,
                    b"CONNECT" => return Err(Fallback::Connect),
                    _ => {}
                }
                State::TargetStart
            }
            State::Method if c == 0x16 && self.cap_len == 0 => return Err(Fallback::Tls),
            State::TargetStart if c > b' ' && c != 0x7f => State::Target,
            State::RequestVersion if c == b'\r' => {
                if self.facts.pri && self.captured() == b"HTTP/2.0" {
                    return Err(Fallback::Http2);
                }
                self.facts.http10 = http1(self.captured()).ok_or(Fallback::Malformed)?;
                State::StartLf
            }
            State::RequestVersion if self.cap_len < 8 => {
                self.capture(c);
                state
            }
            // a response is checked from its first byte: anything else is not an answer
            State::ResponseVersion
                if self.cap_len < 7 && c == b"HTTP/1."[self.cap_len as usize]
                    || self.cap_len == 7 && c.is_ascii_digit() =>
            {
                self.capture(c);
                state
            }
            State::ResponseVersion if c == b' ' => {
                self.facts.http10 = http1(self.captured()).ok_or(Fallback::Malformed)?;
                self.cap_len = 0;
                State::Status
            }
            State::Status if c.is_ascii_digit() && self.cap_len < 3 => {
                self.cap_len += 1;
                self.facts.status = self.facts.status * 10 + u16::from(c - b'0');
                State::Status
            }
            State::Status if (c == b' ' || c == b'\r') && self.cap_len == 3 => {
                if !(100..=599).contains(&self.facts.status) {
                    return Err(Fallback::Malformed);
                }
                if c == b' ' {
                    State::Reason
                } else {
                    State::StartLf
                }
            }
            State::LengthStart | State::LengthEnd if c == b' ' || c == b'\t' => state,
            State::LengthStart | State::LengthDigits if c.is_ascii_digit() => {
                let n = self.facts.content_length.unwrap_or(0);
                let n = n
                    .checked_mul(10)
                    .and_then(|n| n.checked_add(u64::from(c - b'0')))
                    .ok_or(Fallback::InvalidLength)?;
                self.facts.content_length = Some(n);
                State::LengthDigits
            }
            State::LengthDigits if c == b' ' || c == b'\t' => State::LengthEnd,
            State::LengthDigits | State::LengthEnd if c == b'\r' => State::LineLf,
            State::LengthStart | State::LengthDigits | State::LengthEnd => {
                // empty, a list ("5, 5"), a sign or any other byte
                return Err(Fallback::InvalidLength);
            }
            State::ListStart if c == b' ' || c == b'\t' || c == b',' => State::ListStart,
            State::ListStart | State::ListEnd | State::ListParams if c == b'\r' => State::LineLf,
            State::ListToken if matches!(c, b' ' | b'\t' | b',' | b';' | b'\r') => {
                self.token()?;
                match c {
                    b',' => State::ListStart,
                    b';' => State::ListParams,
                    b'\r' => State::LineLf,
                    _ => State::ListEnd,
                }
            }
            State::ListEnd if c == b' ' || c == b'\t' => State::ListEnd,
            State::ListEnd | State::ListParams if c == b',' => State::ListStart,
            State::ListEnd if c == b';' => State::ListParams,
            // A quoted parameter could hide a comma: not followed.
            State::ListParams if c != b'"' && (!is_ctl(c) || c == b'\t') => State::ListParams,
            _ => return Err(Fallback::Malformed),
        })
    }

    /// The colon after a field name: which state reads the value.
    fn field(&mut self, name: &[u8]) -> Result<State, Fallback> {
        if self.kind == Kind::Trailer {
            // trailer fields never change framing
            return Ok(State::Skip);
        }
        let is = |ours: &[u8]| name.eq_ignore_ascii_case(ours);
        Ok(match name.len() {
            14 if is(b"content-length") => {
                if self.facts.content_length.is_some() {
                    return Err(Fallback::ConflictingLength);
                }
                State::LengthStart
            }
            17 if is(b"transfer-encoding") => {
                self.facts.transfer_encoding = true;
                self.list = List::TransferEncoding;
                State::ListStart
            }
            10 if is(b"connection") => {
                self.list = List::Connection;
                State::ListStart
            }
            6 if is(b"expect") => {
                self.facts.expect = true;
                State::Skip
            }
            _ => State::Skip,
        })
    }

    /// The end of one list element.
    fn token(&mut self) -> Result<(), Fallback> {
        let chunked = self.captured().eq_ignore_ascii_case(b"chunked");
        match self.list {
            List::TransferEncoding => {
                if chunked && self.facts.chunked_seen {
                    // chunked twice (RFC 9112 6.1)
                    return Err(Fallback::InvalidLength);
                }
                self.facts.chunked_seen |= chunked;
                self.facts.chunked = chunked;
            }
            List::Connection => {
                let token = self.captured();
                if token.eq_ignore_ascii_case(b"close") {
                    self.facts.close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    self.facts.keep_alive = true;
                }
            }
        }
        Ok(())
    }
}
