//! The byte streams the relay property test sends, of two kinds:
//!
//! - conversations: a few exchanges a client and an Elasticsearch node could have (any method,
//!   content by length or chunked, `Expect: 100-continue` with its interim answer, 103, HEAD,
//!   204 and 304 without content, a last response that ends at the close), each answer written
//!   only once its request has arrived, as a server does. Followed to the end, never falling
//!   back;
//! - anything: parts of such messages in any order, with the shapes that make the tracker fall
//!   back (conflicting lengths, 101, CONNECT, a chunked HTTP/1.0 body, a lying length), and
//!   bytes of anything, the answers written at once.
//!
//! Each stream is written in pieces cut anywhere. Content is [`pattern`] bytes, so a failing
//! case prints small.

use std::fmt::Write;

use proptest::prelude::*;
use proptest::sample::{Index, select};

use crate::common::httpd::pattern;

/// How a message's content is framed.
#[derive(Debug, Clone)]
pub enum Content {
    None,
    /// `Content-Length: n` and n bytes.
    Length(usize),
    /// `Transfer-Encoding: chunked`, chunks of these sizes, with a trailer field or not.
    Chunked(Vec<usize>, bool),
    /// The fields of this content but none of its bytes (HEAD, 304), or a length that lies.
    Announced(Box<Content>, usize),
    /// n bytes and no length: the content ends at the close.
    UntilClose(usize),
}

/// One part of a stream.
#[derive(Debug, Clone)]
pub enum Part {
    Message {
        start: String,
        fields: Vec<&'static str>,
        content: Content,
    },
    Raw(Vec<u8>),
}

/// When the server may write a part of its answer: once the head (or the whole) of the
/// client's part `part` has arrived.
#[derive(Debug, Clone, Copy)]
pub struct After {
    pub part: usize,
    pub head_only: bool,
}

/// The server's parts, each with when it may be written.
pub type Down = Vec<(Part, Option<After>)>;

/// One case: what the client sends, what the server answers, and where each is cut.
#[derive(Debug, Clone)]
pub struct Case {
    pub up: Vec<Part>,
    pub down: Down,
    /// The requests of a conversation (none for anything: what is followed there depends).
    pub requests: Option<u64>,
    pub up_cuts: Vec<Index>,
    pub down_cuts: Vec<Index>,
}

/// The server's side of a case.
pub struct Answer {
    pub wire: Vec<u8>,
    /// (end of a segment of `wire`, bytes of the client's to wait for before writing it).
    pub segments: Vec<(usize, usize)>,
    pub cuts: Vec<usize>,
}

impl Case {
    /// The client's bytes and where they are cut.
    pub fn up(&self) -> (Vec<u8>, Vec<usize>) {
        let wire: Vec<u8> = self.up.iter().flat_map(|p| p.wire().0).collect();
        let cuts = cuts(&self.up_cuts, wire.len());
        (wire, cuts)
    }

    /// The server's bytes, when it may write each part, and where they are cut.
    pub fn down(&self) -> Answer {
        let mut ends = Vec::new();
        let mut at = 0;
        for p in &self.up {
            let (bytes, head) = p.wire();
            ends.push((at + head, at + bytes.len()));
            at += bytes.len();
        }
        let mut wire = Vec::new();
        let mut segments = Vec::new();
        for (p, after) in &self.down {
            wire.extend_from_slice(&p.wire().0);
            let wait = after.map_or(0, |a| {
                let (head, end) = ends[a.part];
                if a.head_only { head } else { end }
            });
            segments.push((wire.len(), wait));
        }
        let cuts = cuts(&self.down_cuts, wire.len());
        Answer {
            wire,
            segments,
            cuts,
        }
    }
}

/// Cut positions, ascending, inside `len`.
fn cuts(at: &[Index], len: usize) -> Vec<usize> {
    let mut c: Vec<usize> = at.iter().map(|i| i.index(len.max(1))).collect();
    c.sort_unstable();
    c.dedup();
    c
}

impl Part {
    /// The bytes, and how many of them are the head.
    fn wire(&self) -> (Vec<u8>, usize) {
        let (start, fields, content) = match self {
            Part::Raw(bytes) => return (bytes.clone(), bytes.len()),
            Part::Message {
                start,
                fields,
                content,
            } => (start, fields, content),
        };
        let mut out = format!("{start}\r\n");
        for f in fields {
            let _ = write!(out, "{f}\r\n");
        }
        framing_fields(content, &mut out);
        out.push_str("\r\n");
        let mut out = out.into_bytes();
        let head = out.len();
        content_bytes(content, &mut out);
        (out, head)
    }
}

fn framing_fields(content: &Content, head: &mut String) {
    match content {
        Content::None | Content::UntilClose(_) => {}
        Content::Length(n) => {
            let _ = write!(head, "Content-Length: {n}\r\n");
        }
        Content::Chunked(..) => head.push_str("Transfer-Encoding: chunked\r\n"),
        Content::Announced(inner, _) => framing_fields(inner, head),
    }
}

fn content_bytes(content: &Content, out: &mut Vec<u8>) {
    match content {
        Content::None => {}
        Content::Length(n) | Content::UntilClose(n) => out.extend_from_slice(&pattern(*n)),
        Content::Announced(_, sent) => out.extend_from_slice(&pattern(*sent)),
        Content::Chunked(sizes, trailer) => {
            for (i, n) in sizes.iter().enumerate() {
                let ext = if i % 3 == 1 { ";x=\"y\"" } else { "" };
                out.extend_from_slice(format!("{n:x}{ext}\r\n").as_bytes());
                out.extend_from_slice(&pattern(*n));
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n");
            if *trailer {
                out.extend_from_slice(b"X-Trailer: t\r\n");
            }
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// Mostly small, sometimes past a relay buffer (16 KiB), now and then past a pipe (256 KiB).
fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        8 => 0usize..200,
        3 => 200usize..20_000,
        1 => 20_000usize..400_000,
    ]
}

/// Content that frames itself: by length or chunked.
fn framed() -> impl Strategy<Value = Content> {
    prop_oneof![
        size().prop_map(Content::Length),
        (
            prop::collection::vec(size().prop_map(|n| n.max(1)), 0..4),
            any::<bool>()
        )
            .prop_map(|(sizes, trailer)| Content::Chunked(sizes, trailer)),
    ]
}

/// One exchange of a conversation.
#[derive(Debug, Clone)]
struct Exchange {
    method: &'static str,
    request: Content,
    expect: bool,
    early_hints: bool,
    status: u16,
    response: Content,
    close: bool,
}

fn exchange() -> impl Strategy<Value = Exchange> {
    let method = select(vec!["GET", "HEAD", "POST", "PUT", "DELETE"]);
    let request = prop_oneof![2 => Just(Content::None), 3 => framed()];
    let status = select(vec![200u16, 201, 204, 304, 404, 429]);
    let until_close = size().prop_map(Content::UntilClose);
    let response = prop_oneof![6 => framed(), 1 => until_close];
    (
        (method, request, any::<bool>(), any::<bool>()),
        (status, response, any::<bool>()),
    )
        .prop_map(
            |((method, request, expect, early_hints), (status, response, close))| Exchange {
                method,
                request,
                expect,
                early_hints,
                status,
                response,
                close,
            },
        )
}

/// A conversation: exchanges in order; only the last may end at the close.
fn conversation() -> impl Strategy<Value = (Vec<Part>, Down, u64)> {
    prop::collection::vec(exchange(), 1..5).prop_map(|exchanges| {
        let mut up = Vec::new();
        let mut down = Vec::new();
        let last = exchanges.len() - 1;
        for (i, mut x) in exchanges.into_iter().enumerate() {
            let mut fields = vec!["Host: es", "Content-Type: application/json"];
            let has_content = !matches!(x.request, Content::None);
            if x.expect && has_content {
                fields.push("Expect: 100-continue");
                let interim = message("HTTP/1.1 100 Continue", Content::None);
                down.push((
                    interim,
                    Some(After {
                        part: i,
                        head_only: true,
                    }),
                ));
            }
            if x.close && i == last {
                fields.push("Connection: close");
            }
            up.push(Part::Message {
                start: format!("{} /i/_doc/{i} HTTP/1.1", x.method),
                fields,
                content: x.request,
            });
            if x.early_hints {
                let hints = message("HTTP/1.1 103 Early Hints", Content::None);
                down.push((
                    hints,
                    Some(After {
                        part: i,
                        head_only: false,
                    }),
                ));
            }
            if matches!(x.response, Content::UntilClose(_)) && i != last {
                x.response = Content::Length(0);
            }
            let no_content = x.method == "HEAD" || x.status == 204 || x.status == 304;
            let response = match x.response {
                _ if x.status == 204 => Content::None,
                Content::UntilClose(_) if no_content => Content::None,
                r if no_content => Content::Announced(Box::new(r), 0),
                r => r,
            };
            let start = format!("HTTP/1.1 {} X", x.status);
            down.push((
                message(&start, response),
                Some(After {
                    part: i,
                    head_only: false,
                }),
            ));
        }
        let n = up.len() as u64;
        (up, down, n)
    })
}

fn message(start: &str, content: Content) -> Part {
    Part::Message {
        start: start.to_owned(),
        fields: vec!["X-elastic-product: Elasticsearch"],
        content,
    }
}

fn any_content() -> impl Strategy<Value = Content> {
    prop_oneof![
        3 => Just(Content::None),
        6 => framed(),
        1 => (framed(), size()).prop_map(|(c, sent)| Content::Announced(Box::new(c), sent)),
        1 => size().prop_map(Content::UntilClose),
    ]
}

fn any_message(
    starts: Vec<&'static str>,
    fields: Vec<&'static str>,
) -> impl Strategy<Value = Part> {
    let fields = prop::collection::vec(select(fields), 0..3);
    (select(starts), fields, any_content()).prop_map(|(start, fields, content)| Part::Message {
        start: start.to_owned(),
        fields,
        content,
    })
}

fn any_request() -> impl Strategy<Value = Part> {
    any_message(
        vec![
            "GET / HTTP/1.1",
            "HEAD / HTTP/1.1",
            "POST /_bulk HTTP/1.1",
            "GET / HTTP/1.0",
            "POST / HTTP/1.0",
            "CONNECT es:9200 HTTP/1.1",
            "GET /bad path HTTP/1.1",
        ],
        vec![
            "Host: es",
            "Expect: 100-continue",
            "Connection: close",
            "Connection: keep-alive",
            "Upgrade: h2c",
            "Content-Length: 3",
            "Transfer-Encoding: gzip",
        ],
    )
}

fn any_response() -> impl Strategy<Value = Part> {
    any_message(
        vec![
            "HTTP/1.1 200 OK",
            "HTTP/1.1 100 Continue",
            "HTTP/1.1 204 No Content",
            "HTTP/1.1 304 Not Modified",
            "HTTP/1.0 200 OK",
            "HTTP/1.1 101 Switching Protocols",
        ],
        vec![
            "Connection: close",
            "Connection: keep-alive",
            "Content-Length: 3",
            "Transfer-Encoding: gzip, chunked",
        ],
    )
}

/// Any bytes, or the pieces of HTTP that matter most to a reader of framing.
fn raw() -> impl Strategy<Value = Part> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 1..64),
        select(vec![
            "\r\n",
            "\n",
            "0\r\n\r\n",
            "HTTP/1.1 ",
            "GET ",
            "\x16\x03\x01",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
    ]
    .prop_map(Part::Raw)
}

fn anything() -> impl Strategy<Value = (Vec<Part>, Down)> {
    let stream = |message: BoxedStrategy<Part>| {
        prop::collection::vec(prop_oneof![3 => message, 1 => raw()], 1..5)
    };
    (
        stream(any_request().boxed()),
        stream(any_response().boxed()),
    )
        .prop_map(|(up, down)| (up, down.into_iter().map(|p| (p, None)).collect()))
}

pub fn case() -> impl Strategy<Value = Case> {
    let cuts = || prop::collection::vec(any::<Index>(), 0..6);
    let streams = prop_oneof![
        3 => conversation().prop_map(|(up, down, n)| (up, down, Some(n))),
        2 => anything().prop_map(|(up, down)| (up, down, None)),
    ];
    (streams, cuts(), cuts()).prop_map(|((up, down, requests), up_cuts, down_cuts)| Case {
        up,
        down,
        requests,
        up_cuts,
        down_cuts,
    })
}
