//! A chunked body (RFC 9112 7.1): chunk-size lines are read, extensions skipped, chunk data
//! counted past without being looked at, and the trailer section read by [`Head`].

use super::Fallback;
use super::head::{Head, Kind, MAX_LINE};
use super::scan::find_stop;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The first hex digit of a chunk size.
    SizeStart,
    Size,
    /// Whitespace after the size: only an extension may follow.
    BeforeExtension,
    Extension,
    /// CR of the chunk-size line seen.
    SizeLf,
    /// Chunk data: `left` bytes to go.
    Data,
    DataCr,
    DataLf,
    /// The trailer section, read by the message's [`Head`].
    Trailer,
}

/// A chunked body being read.
#[derive(Debug, Clone)]
pub(super) struct Chunked {
    state: State,
    /// The chunk size being read, then the data bytes left of the chunk.
    left: u64,
    /// Bytes of the chunk-size line so far.
    line: u32,
}

impl Chunked {
    pub(super) fn new() -> Self {
        Chunked {
            state: State::SizeStart,
            left: 0,
            line: 0,
        }
    }

    /// Chunk data bytes that come next and can be moved without being looked at.
    pub(super) fn opaque_len(&self) -> u64 {
        if self.state == State::Data {
            self.left
        } else {
            0
        }
    }

    /// Counts `n` bytes of chunk data (at most [`Chunked::opaque_len`]) as moved.
    pub(super) fn skip(&mut self, n: u64) {
        debug_assert!(self.state == State::Data && n <= self.left);
        self.left -= n;
        if self.left == 0 {
            self.state = State::DataCr;
        }
    }

    /// Reads body bytes. Returns how many it took and whether the body (trailers included) is
    /// complete.
    pub(super) fn feed(
        &mut self,
        head: &mut Head,
        bytes: &[u8],
    ) -> Result<(usize, bool), Fallback> {
        let mut i = 0;
        while i < bytes.len() {
            let c = bytes[i];
            match self.state {
                State::Data => {
                    let n = self.left.min((bytes.len() - i) as u64);
                    self.skip(n);
                    i += n as usize;
                    continue;
                }
                State::Trailer => {
                    let (n, done) = head.feed(&bytes[i..])?;
                    if done {
                        *self = Chunked::new();
                    }
                    return Ok((i + n, done));
                }
                State::Extension => {
                    // quoted strings in extensions hold no CR, so the line ends at the first one
                    let rest = &bytes[i..];
                    let (n, end) = match find_stop(rest, b' ') {
                        Some(n) if rest[n] == b'\r' => (n + 1, true),
                        Some(n) if rest[n] == b'\t' => (n + 1, false),
                        Some(_) => return Err(Fallback::Malformed),
                        None => (rest.len(), false),
                    };
                    self.line += n as u32;
                    if self.line > MAX_LINE {
                        return Err(Fallback::LineTooLong);
                    }
                    i += n;
                    if end {
                        self.state = State::SizeLf;
                    }
                    continue;
                }
                _ => {}
            }
            self.line += 1;
            if self.line > MAX_LINE {
                return Err(Fallback::LineTooLong);
            }
            self.state = match (self.state, c) {
                (State::SizeStart | State::Size, _) if c.is_ascii_hexdigit() => {
                    let digit = (c as char).to_digit(16).expect("a hex digit") as u64;
                    if self.left > u64::MAX >> 4 {
                        return Err(Fallback::InvalidLength);
                    }
                    self.left = self.left << 4 | digit;
                    State::Size
                }
                (State::SizeStart, _) => return Err(Fallback::InvalidLength),
                (State::Size | State::BeforeExtension, b' ' | b'\t') => State::BeforeExtension,
                (State::Size | State::BeforeExtension, b';') => State::Extension,
                (State::Size, b'\r') => State::SizeLf,
                (State::Size, _) => return Err(Fallback::InvalidLength),
                (State::SizeLf, b'\n') if self.left == 0 => {
                    head.start(Kind::Trailer);
                    State::Trailer
                }
                (State::SizeLf, b'\n') => {
                    self.line = 0;
                    State::Data
                }
                (State::DataCr, b'\r') => State::DataLf,
                (State::DataLf, b'\n') => {
                    self.line = 0;
                    State::SizeStart
                }
                _ => return Err(Fallback::Malformed),
            };
            i += 1;
        }
        Ok((bytes.len(), false))
    }
}
