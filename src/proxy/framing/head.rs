//! The head of one message — a request line or status line and its header section, or the
//! trailer section of a chunked body — read a byte at a time, in pieces cut anywhere, with no
//! buffer: a few bytes of capture hold the part being recognised (a method, a version, a header
//! name, one token of a list), and what the tracker needs is kept as plain facts.
//!
//! Only the fields that decide framing are read: `Content-Length`, `Transfer-Encoding`,
//! `Connection` and `Expect`. Every other line is only checked to be a field line (a token name,
//! a colon, no control bytes but tab) and skipped.

use super::Fallback;

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

/// Token characters (RFC 9110 5.6.2): method, field names, list elements.
static TCHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = matches!(c as u8,
            b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_'
            | b'`' | b'|' | b'~' | b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z');
        c += 1;
    }
    t
};

fn is_tchar(c: u8) -> bool {
    TCHAR[c as usize]
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

    fn capture(&mut self, c: u8) {
        if let Some(slot) = self.cap.get_mut(self.cap_len as usize) {
            *slot = c;
        }
        self.cap_len = self.cap_len.saturating_add(1);
    }

    /// Reads head bytes. Returns how many it took and whether the head is complete (then the
    /// rest of `bytes` belongs to what follows it).
    pub(super) fn feed(&mut self, bytes: &[u8]) -> Result<(usize, bool), Fallback> {
        let mut i = 0;
        // where the current line starts in `bytes` (0 when it started in an earlier piece)
        let mut line_start = 0;
        while i < bytes.len() {
            let c = bytes[i];
            match self.state {
                // The states that see most bytes scan in a loop of their own.
                State::Skip | State::Reason => {
                    let rest = &bytes[i..];
                    match rest.iter().position(|&c| is_ctl(c) && c != b'\t') {
                        None => i = bytes.len(),
                        Some(n) if rest[n] == b'\r' => {
                            self.state = if self.state == State::Skip {
                                State::LineLf
                            } else {
                                State::StartLf
                            };
                            i += n + 1;
                        }
                        Some(_) => return Err(Fallback::Malformed),
                    }
                    continue;
                }
                State::Target => {
                    let rest = &bytes[i..];
                    match rest.iter().position(|&c| c <= b' ' || c == 0x7f) {
                        None => i = bytes.len(),
                        Some(n) if rest[n] == b' ' => {
                            self.state = State::RequestVersion;
                            self.cap_len = 0;
                            i += n + 1;
                        }
                        Some(_) => return Err(Fallback::Malformed),
                    }
                    continue;
                }
                State::Name => {
                    if is_tchar(c) {
                        self.capture(c.to_ascii_lowercase());
                    } else if c == b':' {
                        self.state = self.field()?;
                    } else {
                        // whitespace before the colon included (RFC 9112 5.1)
                        return Err(Fallback::Malformed);
                    }
                }
                State::LineLf | State::StartLf | State::EndLf => {
                    if c != b'\n' {
                        return Err(Fallback::Malformed);
                    }
                    let line = self.line as usize + (i + 1 - line_start);
                    if line > MAX_LINE as usize {
                        return Err(Fallback::LineTooLong);
                    }
                    self.line = 0;
                    line_start = i + 1;
                    if self.state == State::EndLf {
                        self.account(i + 1)?;
                        return Ok((i + 1, true));
                    }
                    self.state = State::LineStart;
                }
                _ => self.step(c)?,
            }
            i += 1;
        }
        self.line += (bytes.len() - line_start) as u32;
        if self.line > MAX_LINE {
            return Err(Fallback::LineTooLong);
        }
        self.account(bytes.len())?;
        Ok((bytes.len(), false))
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
    fn step(&mut self, c: u8) -> Result<(), Fallback> {
        self.state = match self.state {
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
                State::RequestVersion
            }
            // a response is checked from its first byte: anything else is not an answer
            State::ResponseVersion
                if self.cap_len < 7 && c == b"HTTP/1."[self.cap_len as usize]
                    || self.cap_len == 7 && c.is_ascii_digit() =>
            {
                self.capture(c);
                State::ResponseVersion
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
            State::LineStart if c == b'\r' => State::EndLf,
            State::LineStart if is_tchar(c) => {
                self.cap_len = 0;
                self.capture(c.to_ascii_lowercase());
                State::Name
            }
            State::LengthStart | State::LengthEnd if c == b' ' || c == b'\t' => self.state,
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
            State::ListStart if is_tchar(c) => {
                self.cap_len = 0;
                self.capture(c.to_ascii_lowercase());
                State::ListToken
            }
            State::ListToken if is_tchar(c) => {
                self.capture(c.to_ascii_lowercase());
                State::ListToken
            }
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
        };
        Ok(())
    }

    /// The colon after a field name: which state reads the value.
    fn field(&mut self) -> Result<State, Fallback> {
        if self.kind == Kind::Trailer {
            // trailer fields never change framing
            return Ok(State::Skip);
        }
        Ok(match self.captured() {
            b"content-length" => {
                if self.facts.content_length.is_some() {
                    return Err(Fallback::ConflictingLength);
                }
                State::LengthStart
            }
            b"transfer-encoding" => {
                self.facts.transfer_encoding = true;
                self.list = List::TransferEncoding;
                State::ListStart
            }
            b"connection" => {
                self.list = List::Connection;
                State::ListStart
            }
            b"expect" => {
                self.facts.expect = true;
                State::Skip
            }
            _ => State::Skip,
        })
    }

    /// The end of one list element.
    fn token(&mut self) -> Result<(), Fallback> {
        let chunked = self.captured() == b"chunked";
        match self.list {
            List::TransferEncoding => {
                if chunked && self.facts.chunked_seen {
                    // chunked twice (RFC 9112 6.1)
                    return Err(Fallback::InvalidLength);
                }
                self.facts.chunked_seen |= chunked;
                self.facts.chunked = chunked;
            }
            List::Connection => match self.captured() {
                b"close" => self.facts.close = true,
                b"keep-alive" => self.facts.keep_alive = true,
                _ => {}
            },
        }
        Ok(())
    }
}
