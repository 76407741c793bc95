//! Properties: any bytes, cut anywhere, never make the tracker panic or leave a fallback; valid
//! conversations (random methods, lengths, chunk sizes, interim responses, pipelining depth)
//! cut at random points are followed exactly: the request count, requests in flight and
//! idleness after every piece are those of a model that knows where each message ends.

use proptest::prelude::*;
use proptest::sample::Index;

use super::Direction::{self, Down, Up};
use super::scan::find_stop;
use super::tests::{Seen, relay_feed};
use super::{MAX_PIPELINED, Tracker};

/// How a message's content is framed.
#[derive(Debug, Clone)]
enum Content {
    None,
    Length(usize),
    Chunked(Vec<usize>),
}

#[derive(Debug, Clone)]
struct Exchange {
    method: &'static str,
    content: Content,
    /// `Expect: 100-continue`, answered with 100 Continue before the content is sent.
    expect: bool,
    /// Fields that matter to nobody, before the ones that do.
    filler: usize,
    interim: usize,
    status: u16,
    answer: Content,
}

fn content() -> impl Strategy<Value = Content> {
    prop_oneof![
        Just(Content::None),
        (0..3000usize).prop_map(Content::Length),
        prop::collection::vec(1..400usize, 0..4).prop_map(Content::Chunked),
    ]
}

fn exchange() -> impl Strategy<Value = Exchange> {
    (
        prop::sample::select(&["GET", "HEAD", "POST", "PUT", "DELETE"][..]),
        content(),
        any::<bool>(),
        0..6usize,
        0..3usize,
        prop::sample::select(&[200u16, 201, 204, 304, 404, 500][..]),
        content(),
    )
        .prop_map(
            |(method, content, expect, filler, interim, status, answer)| Exchange {
                method,
                expect: expect && !matches!(content, Content::None),
                content,
                filler,
                interim,
                status,
                answer,
            },
        )
}

/// Pipelined batches: each batch's requests are all sent before its responses come.
fn conversation() -> impl Strategy<Value = Vec<Vec<Exchange>>> {
    prop::collection::vec(prop::collection::vec(exchange(), 1..5), 1..5)
}

/// Content bytes that look like everything the tracker watches for in heads.
fn body(n: usize) -> impl Iterator<Item = u8> {
    b"\x16\r\nHTTP/1.1 200 OK\r\nContent-Length: 9\n\0PRI * "
        .iter()
        .copied()
        .cycle()
        .take(n)
}

fn write_content(out: &mut Vec<u8>, c: &Content) {
    match c {
        Content::None => {}
        Content::Length(n) => out.extend(body(*n)),
        Content::Chunked(sizes) => {
            for (i, n) in sizes.iter().enumerate() {
                let ext = if i % 2 == 1 { ";ext=\"a;b\"" } else { "" };
                out.extend(format!("{n:x}{ext}\r\n").bytes());
                out.extend(body(*n));
                out.extend(b"\r\n");
            }
            out.extend(b"0\r\nX-Trailer: t\r\n\r\n");
        }
    }
}

fn framing_fields(out: &mut Vec<u8>, c: &Content) {
    match c {
        Content::None => {}
        Content::Length(n) => out.extend(format!("Content-Length: {n}\r\n").bytes()),
        Content::Chunked(_) => out.extend(b"Transfer-Encoding: chunked\r\n"),
    }
}

/// Both byte streams, the order the relay reads them in, and where each message ends.
#[derive(Debug, Default)]
struct Script {
    up: Vec<u8>,
    down: Vec<u8>,
    /// (direction, end offset in that direction's stream), in reading order.
    steps: Vec<(Direction, usize)>,
    head_ends: Vec<usize>,
    request_ends: Vec<usize>,
    response_ends: Vec<usize>,
}

impl Script {
    fn step(&mut self, dir: Direction) {
        let end = if dir == Up {
            self.up.len()
        } else {
            self.down.len()
        };
        self.steps.push((dir, end));
    }

    fn build(batches: &[Vec<Exchange>]) -> Script {
        let mut s = Script::default();
        for batch in batches {
            // a client waiting for 100 Continue sends nothing else meanwhile
            let expect_alone = batch.len() == 1;
            for x in batch {
                s.up.extend(
                    format!("{} /logs-{}/_search HTTP/1.1\r\n", x.method, x.filler).bytes(),
                );
                for i in 0..x.filler {
                    s.up.extend(format!("X-Opaque-Id-{i}: client-{i}\r\n").bytes());
                }
                framing_fields(&mut s.up, &x.content);
                let expect = x.expect && expect_alone;
                if expect {
                    s.up.extend(b"Expect: 100-continue\r\n");
                }
                s.up.extend(b"\r\n");
                s.head_ends.push(s.up.len());
                if expect {
                    s.step(Up);
                    s.down.extend(b"HTTP/1.1 100 Continue\r\n\r\n");
                    s.step(Down);
                }
                write_content(&mut s.up, &x.content);
                s.request_ends.push(s.up.len());
            }
            s.step(Up);
            for x in batch {
                for _ in 0..x.interim {
                    s.down
                        .extend(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>\r\n\r\n");
                }
                s.down
                    .extend(format!("HTTP/1.1 {} Whatever\r\n", x.status).bytes());
                for i in 0..x.filler {
                    s.down
                        .extend(format!("x-elastic-product-{i}: Elasticsearch\r\n").bytes());
                }
                // a response without a length would end at close: give it one
                let answer = match &x.answer {
                    Content::None => &Content::Length(0),
                    framed => framed,
                };
                framing_fields(&mut s.down, answer);
                s.down.extend(b"\r\n");
                if !(x.method == "HEAD" || x.status == 204 || x.status == 304) {
                    write_content(&mut s.down, answer);
                }
                s.response_ends.push(s.down.len());
            }
            s.step(Down);
        }
        s
    }

    /// What the tracker must report with `up` and `down` bytes of each stream fed.
    fn model(&self, up: usize, down: usize) -> Seen {
        let requests = self.head_ends.iter().filter(|&&e| e <= up).count();
        let answered = self.response_ends.iter().filter(|&&e| e <= down).count();
        let sent = self.request_ends.iter().filter(|&&e| e <= up).count();
        let at_end =
            |ends: &[usize], k: usize, pos: usize| pos == if k == 0 { 0 } else { ends[k - 1] };
        let idle = requests == sent
            && answered == sent
            && at_end(&self.request_ends, sent, up)
            && at_end(&self.response_ends, answered, down);
        Seen {
            requests: requests as u64,
            in_flight: requests - answered,
            idle,
            close: false,
            client_closes: false,
            fallback: None,
        }
    }
}

/// Feeds the script in pieces of the given sizes (used in turn), checking the model after each.
fn follow_in_pieces(s: &Script, pieces: &[usize], relay: bool) -> Result<(), TestCaseError> {
    let mut t = Tracker::new();
    let mut fed = [0usize; 2];
    let mut next = 0;
    for &(dir, end) in &s.steps {
        let (stream, i) = if dir == Up { (&s.up, 0) } else { (&s.down, 1) };
        while fed[i] < end {
            let n = pieces[next % pieces.len()].min(end - fed[i]);
            next += 1;
            let bytes = &stream[fed[i]..fed[i] + n];
            if relay {
                relay_feed(&mut t, dir, bytes);
            } else {
                t.feed(dir, bytes);
            }
            fed[i] += n;
            prop_assert_eq!(Seen::of(&t), s.model(fed[0], fed[1]), "after {:?}", fed);
        }
    }
    prop_assert!(t.is_idle());
    Ok(())
}

/// Feeds `chunks` (any bytes, either way), checking what must hold whatever they are.
fn survive(chunks: &[(bool, Vec<u8>)], relay: bool) -> Result<(), TestCaseError> {
    let mut t = Tracker::new();
    let mut fell = None;
    for (up, bytes) in chunks {
        let dir = if *up { Up } else { Down };
        if relay {
            relay_feed(&mut t, dir, bytes);
        } else {
            t.feed(dir, bytes);
        }
        if fell.is_some() {
            prop_assert_eq!(t.fallback(), fell, "a fallback is for good");
        }
        fell = t.fallback();
        prop_assert!(t.in_flight() as u64 <= t.requests());
        prop_assert!(t.in_flight() <= MAX_PIPELINED);
        if fell.is_some() {
            prop_assert!(!t.is_idle());
            prop_assert_eq!(t.opaque_len(Up), u64::MAX);
            prop_assert_eq!(t.opaque_len(Down), u64::MAX);
        }
        if t.is_idle() {
            prop_assert_eq!(t.in_flight(), 0);
        }
    }
    Ok(())
}

/// Feeds `chunks` to one tracker whole and to another a byte at a time: both read the same
/// after every chunk. Heads read in one piece take shortcuts (a whole method, status or
/// `Content-Length` at once, sixteen bytes at a time) that a byte at a time never does.
fn whole_or_byte_by_byte(chunks: &[(bool, Vec<u8>)]) -> Result<(), TestCaseError> {
    let mut whole = Tracker::new();
    let mut bytewise = Tracker::new();
    for (up, bytes) in chunks {
        let dir = if *up { Up } else { Down };
        whole.feed(dir, bytes);
        for b in bytes {
            bytewise.feed(dir, std::slice::from_ref(b));
        }
        prop_assert_eq!(Seen::of(&whole), Seen::of(&bytewise), "after {:?}", bytes);
        for dir in [Up, Down] {
            prop_assert_eq!(whole.opaque_len(dir), bytewise.opaque_len(dir));
        }
    }
    Ok(())
}

/// Pieces of HTTP that random sequences of reach deep into the heads and bodies.
const WORDS: &[&str] = &[
    "GET / HTTP/1.1\r\n",
    "HEAD /a HTTP/1.1\r\n",
    "POST /b HTTP/1.0\r\n",
    "HTTP/1.1 200 OK\r\n",
    "HTTP/1.1 100 Continue\r\n",
    "HTTP/1.0 204 x\r\n",
    "HTTP/1.1 101 Up\r\n",
    "\r\n",
    "\r",
    "\n",
    "Content-Length: ",
    "Transfer-Encoding: ",
    "Connection: ",
    "Expect: ",
    "chunked",
    "close",
    "keep-alive",
    "gzip, ",
    "0",
    "5",
    "a",
    "10",
    ";x=\"y\"",
    ",",
    " ",
    "\t",
    ":",
    "X-A: b",
    "\x16",
    "\0",
    "PRI * HTTP/2.0",
    "CONNECT",
    "hello",
];

fn words() -> impl Strategy<Value = Vec<(bool, Vec<u8>)>> {
    let chunk = (
        any::<bool>(),
        prop::collection::vec(prop::sample::select(WORDS), 1..12),
    )
        .prop_map(|(up, w)| (up, w.concat().into_bytes()));
    prop::collection::vec(chunk, 1..24)
}

fn bytes() -> impl Strategy<Value = Vec<(bool, Vec<u8>)>> {
    prop::collection::vec(
        (any::<bool>(), prop::collection::vec(any::<u8>(), 0..64)),
        1..16,
    )
}

fn pieces() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1..80usize, 1..16)
}

/// Valid conversations, then one byte changed anywhere: whatever it does, nothing breaks.
fn mutated() -> impl Strategy<Value = (Vec<Vec<Exchange>>, Index, u8)> {
    (conversation(), any::<Index>(), any::<u8>())
}

fn mutate(batches: &[Vec<Exchange>], at: &Index, byte: u8) -> Vec<(bool, Vec<u8>)> {
    let s = Script::build(batches);
    let mut up = s.up.clone();
    let mut down = s.down.clone();
    let total = up.len() + down.len();
    let i = at.index(total);
    if i < up.len() {
        up[i] = byte;
    } else {
        down[i - up.len()] = byte;
    }
    let mut fed = [0usize; 2];
    s.steps
        .iter()
        .map(|&(dir, end)| {
            let i = if dir == Up { 0 } else { 1 };
            let stream = if dir == Up { &up } else { &down };
            let chunk = stream[fed[i]..end].to_vec();
            fed[i] = end;
            (dir == Up, chunk)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn valid_conversations_cut_anywhere_are_followed_exactly(
        batches in conversation(), pieces in pieces(), relay in any::<bool>()
    ) {
        let s = Script::build(&batches);
        follow_in_pieces(&s, &[usize::MAX], false)?;
        follow_in_pieces(&s, &pieces, relay)?;
    }

    #[test]
    fn the_stop_byte_scan_finds_the_first_stop_byte(
        bytes in prop::collection::vec(prop::sample::select(&[0u8, 9, 13, 31, 32, 33, 126, 127, 128, 255][..]), 0..40),
        printable in prop::collection::vec(33u8..127, 0..40),
        limit in prop::sample::select(&[b' ', b' ' + 1][..]),
    ) {
        // printable bytes first, so that the stop is found at every offset in a word
        let bytes = [printable, bytes].concat();
        let naive = bytes.iter().position(|&c| c < limit || c == 0x7f);
        prop_assert_eq!(find_stop(&bytes, limit), naive);
    }

    #[test]
    fn any_bytes_never_panic_and_a_fallback_is_for_good(chunks in bytes(), relay in any::<bool>()) {
        survive(&chunks, relay)?;
    }

    #[test]
    fn random_pieces_of_http_never_panic(chunks in words(), relay in any::<bool>()) {
        survive(&chunks, relay)?;
    }

    #[test]
    fn a_changed_byte_in_a_valid_conversation_never_panics(
        (batches, at, byte) in mutated(), relay in any::<bool>()
    ) {
        survive(&mutate(&batches, &at, byte), relay)?;
    }

    #[test]
    fn any_bytes_are_read_the_same_whole_or_byte_by_byte(
        (batches, at, byte) in mutated(), http in words(), chunks in bytes()
    ) {
        whole_or_byte_by_byte(&mutate(&batches, &at, byte))?;
        whole_or_byte_by_byte(&http)?;
        whole_or_byte_by_byte(&chunks)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20_000, ..ProptestConfig::default() })]

    /// The same properties, longer: `cargo test --lib framing -- --ignored` (20,000 cases).
    #[test]
    #[ignore = "long run: cargo test --lib framing -- --ignored"]
    fn long_run_of_all_properties(
        batches in conversation(), pieces in pieces(), relay in any::<bool>(),
        chunks in bytes(), http in words(), (mutant, at, byte) in mutated(),
    ) {
        let s = Script::build(&batches);
        follow_in_pieces(&s, &[usize::MAX], false)?;
        follow_in_pieces(&s, &pieces, relay)?;
        survive(&chunks, relay)?;
        survive(&http, relay)?;
        survive(&mutate(&mutant, &at, byte), relay)?;
        whole_or_byte_by_byte(&mutate(&mutant, &at, byte))?;
        whole_or_byte_by_byte(&http)?;
    }
}
