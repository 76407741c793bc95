//! Scenarios, each followed whole, cut in two at every byte, fed a byte at a time, and fed the
//! way the relay would with `splice(2)` (content skipped by count): every way must end each
//! step in the same state.

use super::Direction::{Down, Up};
use super::{Direction, Fallback, MAX_PIPELINED, Tracker};

/// What the tracker reports after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Seen {
    pub(super) requests: u64,
    pub(super) in_flight: usize,
    pub(super) idle: bool,
    pub(super) close: bool,
    pub(super) client_closes: bool,
    pub(super) fallback: Option<Fallback>,
}

impl Seen {
    pub(super) fn of(t: &Tracker) -> Seen {
        Seen {
            requests: t.requests(),
            in_flight: t.in_flight(),
            idle: t.is_idle(),
            close: t.close_requested(),
            client_closes: t.client_closes(),
            fallback: t.fallback(),
        }
    }

    fn closing(mut self) -> Seen {
        self.close = true;
        self
    }

    /// Closing because a request said so: its client sends no more.
    fn closed_by_client(mut self) -> Seen {
        self.client_closes = true;
        self.closing()
    }
}

fn idle(requests: u64) -> Seen {
    Seen {
        requests,
        in_flight: 0,
        idle: true,
        close: false,
        client_closes: false,
        fallback: None,
    }
}

fn busy(requests: u64, in_flight: usize) -> Seen {
    Seen {
        idle: false,
        in_flight,
        ..idle(requests)
    }
}

/// How a step's bytes reach the tracker.
#[derive(Debug, Clone, Copy)]
enum Cut {
    Whole,
    /// Step `.0` in two pieces at byte `.1`; the others whole.
    At(usize, usize),
    Bytes,
    /// A byte at a time until content comes, which is skipped by count, as the relay would.
    Relay,
}

/// Feeds `bytes` the relay's way: only what `opaque_len` allows is skipped unseen.
pub(super) fn relay_feed(t: &mut Tracker, dir: Direction, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        let opaque = t.opaque_len(dir);
        if opaque > 0 {
            let n = opaque.min(bytes.len() as u64);
            t.skip(dir, n);
            bytes = &bytes[n as usize..];
        } else {
            t.feed(dir, &bytes[..1]);
            bytes = &bytes[1..];
        }
    }
}

fn play(script: &[(Direction, &[u8])], cut: Cut) -> Vec<Seen> {
    let mut t = Tracker::new();
    let mut seen = Vec::new();
    for (i, &(dir, bytes)) in script.iter().enumerate() {
        match cut {
            Cut::At(step, at) if step == i => {
                t.feed(dir, &bytes[..at]);
                t.feed(dir, &bytes[at..]);
            }
            Cut::Whole | Cut::At(..) => t.feed(dir, bytes),
            Cut::Bytes => bytes.chunks(1).for_each(|b| t.feed(dir, b)),
            Cut::Relay => relay_feed(&mut t, dir, bytes),
        }
        seen.push(Seen::of(&t));
    }
    seen
}

/// Plays `script` every way; returns the state after each step, the same for all.
fn follow(script: &[(Direction, &[u8])]) -> Vec<Seen> {
    let whole = play(script, Cut::Whole);
    assert_eq!(play(script, Cut::Bytes), whole, "fed a byte at a time");
    assert_eq!(play(script, Cut::Relay), whole, "fed the relay's way");
    for (step, (_, bytes)) in script.iter().enumerate() {
        // every cut of a short step; a sample of a long one
        let stride = (bytes.len() / 512).max(1);
        for at in (1..bytes.len()).step_by(stride) {
            assert_eq!(
                play(script, Cut::At(step, at)),
                whole,
                "step {step} cut at byte {at}"
            );
        }
    }
    whole
}

/// The reason the script falls back with, after following it every way.
fn falls_back(script: &[(Direction, &[u8])]) -> Option<Fallback> {
    follow(script).last().and_then(|s| s.fallback)
}

const GET: &[u8] = b"GET /logs/_search?q=a HTTP/1.1\r\nHost: es:9200\r\nAccept: */*\r\n\r\n";
const OK: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{\"ok\":true}";

#[test]
fn a_new_connection_is_idle() {
    let t = Tracker::new();
    assert_eq!(Seen::of(&t), idle(0));
    assert_eq!(t.opaque_len(Up), 0);
    assert_eq!(t.opaque_len(Down), 0);
}

#[test]
fn a_keep_alive_exchange_is_idle_once_its_response_is_complete() {
    let seen = follow(&[(Up, GET), (Down, OK), (Up, GET), (Down, OK)]);
    assert_eq!(seen, [busy(1, 1), idle(1), busy(2, 1), idle(2)]);
}

#[test]
fn the_first_byte_of_a_request_ends_idleness() {
    let seen = follow(&[(Up, GET), (Down, OK), (Up, b"G")]);
    assert_eq!(seen, [busy(1, 1), idle(1), busy(1, 0)]);
}

#[test]
fn a_response_cut_short_is_not_complete() {
    let seen = follow(&[(Up, GET), (Down, &OK[..OK.len() - 1]), (Down, b"}")]);
    assert_eq!(seen, [busy(1, 1), busy(1, 1), idle(1)]);
}

#[test]
fn content_is_counted_not_read() {
    // the body looks like TLS, a request line and a bare LF: none of it is looked at
    let post = b"POST /_bulk HTTP/1.1\r\nContent-Length: 30\r\n\r\n\x16\x03\x01GET / HTTP/1.1\n\n\0\xff\r\nPRI *\r\n";
    let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nHTTP/1.1 200";
    let seen = follow(&[(Up, post), (Down, answer)]);
    assert_eq!(seen, [busy(1, 1), idle(1)]);
}

#[test]
fn a_response_before_the_request_content_is_idle_only_once_the_content_is_complete() {
    let head = b"PUT /i/_doc/1 HTTP/1.1\r\nContent-Length: 4\r\n\r\n";
    let early = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
    let seen = follow(&[(Up, head), (Up, b"ab"), (Down, early), (Up, b"cd")]);
    // the response is complete before the content: not idle until the content is
    assert_eq!(seen, [busy(1, 1), busy(1, 1), busy(1, 0), idle(1)]);
}

#[test]
fn chunked_content_with_extensions_and_trailers_is_followed_both_ways() {
    let request = b"POST /_bulk HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
        5;name=\"a b;c\"\r\nhello\r\n\
        A ; x = y\r\n0123456789\r\n\
        0;last\r\nX-Checksum: 1234\r\nX-Other:\tz\r\n\r\n";
    let response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
        00000003\r\nabc\r\nff\r\n"
        .iter()
        .copied()
        .chain([b'.'; 255])
        .chain(*b"\r\n0\r\n\r\n")
        .collect::<Vec<u8>>();
    let seen = follow(&[(Up, request), (Down, &response), (Up, GET), (Down, OK)]);
    assert_eq!(seen, [busy(1, 1), idle(1), busy(2, 1), idle(2)]);
}

#[test]
fn chunk_data_is_opaque_and_chunk_lines_are_not() {
    let mut t = Tracker::new();
    t.feed(
        Up,
        b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
    );
    assert_eq!(t.opaque_len(Up), 0);
    t.feed(Up, b"1f4\r\n");
    assert_eq!(t.opaque_len(Up), 500);
    t.skip(Up, 499);
    assert_eq!(t.opaque_len(Up), 1);
    t.feed(Up, b"x\r");
    assert_eq!(t.opaque_len(Up), 0);
    t.feed(Up, b"\n0\r\n\r\n");
    assert_eq!(Seen::of(&t), busy(1, 1));
    assert_eq!(t.fallback(), None);
}

#[test]
fn content_length_content_is_opaque_and_skip_completes_it() {
    let mut t = Tracker::new();
    t.feed(Up, GET);
    t.feed(
        Down,
        b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\nabc",
    );
    assert_eq!(t.opaque_len(Down), 99_997);
    assert_eq!(t.opaque_len(Up), 0);
    t.skip(Down, 90_000);
    t.skip(Down, 9_997);
    assert_eq!(Seen::of(&t), idle(1));
    assert_eq!(t.opaque_len(Down), 0);
}

#[test]
fn skipping_more_than_the_content_falls_back() {
    let mut t = Tracker::new();
    t.feed(Up, b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\n");
    t.skip(Up, 4);
    assert_eq!(t.fallback(), Some(Fallback::Skipped));
    let mut t = Tracker::new();
    t.skip(Down, 1);
    assert_eq!(t.fallback(), Some(Fallback::Skipped));
}

#[test]
fn a_response_to_head_has_no_content_whatever_its_length_says() {
    let head = b"HEAD /logs HTTP/1.1\r\nHost: es\r\n\r\n";
    let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n";
    let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    let seen = follow(&[(Up, head), (Down, answer), (Up, head), (Down, chunked)]);
    assert_eq!(seen, [busy(1, 1), idle(1), busy(2, 1), idle(2)]);
}

#[test]
fn no_content_and_not_modified_responses_have_no_content() {
    let no_content = b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n";
    let not_modified = b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n";
    let seen = follow(&[
        (Up, GET),
        (Down, no_content),
        (Up, GET),
        (Down, not_modified),
    ]);
    assert_eq!(seen, [busy(1, 1), idle(1), busy(2, 1), idle(2)]);
}

#[test]
fn interim_responses_come_before_the_final_one() {
    let interim = b"HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n";
    let seen = follow(&[(Up, GET), (Down, interim), (Down, OK)]);
    assert_eq!(seen, [busy(1, 1), busy(1, 1), idle(1)]);
}

const EXPECT: &[u8] =
    b"PUT /i/_doc/1 HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 7\r\n\r\n";

#[test]
fn expect_continue_followed_by_content_then_final_response() {
    let seen = follow(&[
        (Up, EXPECT),
        (Down, b"HTTP/1.1 100 Continue\r\n\r\n"),
        (Up, b"{\"a\":1}"),
        (Down, OK),
    ]);
    assert_eq!(seen, [busy(1, 1), busy(1, 1), busy(1, 1), idle(1)]);
}

#[test]
fn expect_continue_with_a_final_response_before_any_content_falls_back() {
    let refused = b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n";
    let script: &[(Direction, &[u8])] = &[(Up, EXPECT), (Down, refused)];
    assert_eq!(falls_back(script), Some(Fallback::ExpectContinue));
    let after_continue: &[(Direction, &[u8])] = &[
        (Up, EXPECT),
        (Down, b"HTTP/1.1 100 Continue\r\n\r\n"),
        (Down, refused),
    ];
    assert_eq!(falls_back(after_continue), Some(Fallback::ExpectContinue));
}

#[test]
fn expect_continue_with_content_already_started_is_followed() {
    // the client did not wait: once a byte of content is sent, all of it must follow
    let refused = b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n";
    let seen = follow(&[(Up, EXPECT), (Up, b"{"), (Down, refused), (Up, b"\"a\":1}")]);
    assert_eq!(seen, [busy(1, 1), busy(1, 1), busy(1, 0), idle(1)]);
}

#[test]
fn expect_continue_without_content_is_followed() {
    let request = b"GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n";
    let seen = follow(&[(Up, request), (Down, OK)]);
    assert_eq!(seen, [busy(1, 1), idle(1)]);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let requests = b"GET /a HTTP/1.1\r\n\r\nHEAD /b HTTP/1.1\r\n\r\n\
        POST /c HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi\
        GET /d HTTP/1.1\r\n\r\n";
    let first = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na";
    // the answer to HEAD says how long a GET's would be; then two more in one piece
    let rest = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n\
        HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n\
        HTTP/1.1 404 Not Found\r\ncontent-length: 3\r\n\r\nno!";
    let seen = follow(&[(Up, requests), (Down, first), (Down, rest)]);
    assert_eq!(seen, [busy(4, 4), busy(4, 3), idle(4)]);
}

#[test]
fn one_more_pipelined_request_than_remembered_falls_back() {
    let many = GET.repeat(MAX_PIPELINED);
    let seen = follow(&[(Up, &many)]);
    assert_eq!(seen, [busy(MAX_PIPELINED as u64, MAX_PIPELINED)]);
    let script: &[(Direction, &[u8])] = &[(Up, &many), (Up, GET)];
    assert_eq!(falls_back(script), Some(Fallback::TooManyPipelined));
}

#[test]
fn connection_close_on_either_side_is_noted() {
    let close = b"GET / HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n";
    assert_eq!(
        follow(&[(Up, close), (Down, OK)])[1],
        idle(1).closed_by_client()
    );
    let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nconnection:\tclose \r\n\r\n";
    assert_eq!(follow(&[(Up, GET), (Down, answer)])[1], idle(1).closing());
    let other = b"GET / HTTP/1.1\r\nConnection: closed, upgrade\r\n\r\n";
    assert_eq!(follow(&[(Up, other), (Down, OK)])[1], idle(1));
}

#[test]
fn http10_closes_unless_it_asks_for_keep_alive() {
    let plain = b"GET / HTTP/1.0\r\n\r\n";
    let answer = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok";
    assert_eq!(
        follow(&[(Up, plain), (Down, answer)])[1],
        idle(1).closed_by_client()
    );
    let keep = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
    let kept = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok";
    assert_eq!(follow(&[(Up, keep), (Down, kept)])[1], idle(1));
    assert_eq!(follow(&[(Up, keep), (Down, answer)])[1], idle(1).closing());
}

#[test]
fn a_response_without_a_length_ends_at_close_and_is_never_idle() {
    let answer = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it";
    let seen = follow(&[
        (Up, GET),
        (Down, answer),
        (Down, b"HTTP/1.1 200 OK\r\n\r\n"),
    ]);
    assert_eq!(
        seen,
        [busy(1, 1), busy(1, 1).closing(), busy(1, 1).closing()]
    );
    let mut t = Tracker::new();
    t.feed(Up, GET);
    t.feed(Down, answer);
    assert_eq!(t.opaque_len(Down), u64::MAX);
}

#[test]
fn a_response_coding_not_ending_in_chunked_ends_at_close() {
    let answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n";
    let seen = follow(&[(Up, GET), (Down, answer)]);
    assert_eq!(seen, [busy(1, 1), busy(1, 1).closing()]);
}

#[test]
fn names_are_case_insensitive_and_values_trimmed() {
    let request = b"POST / HTTP/1.1\r\ncOnTeNt-LeNgTh:\t 3 \t\r\n\r\nabc";
    let answer = b"HTTP/1.1 200 OK\r\nTRANSFER-ENCODING: gzip ,, CHUNKED\t\r\n\r\n0\r\n\r\n";
    let seen = follow(&[(Up, request), (Down, answer)]);
    assert_eq!(seen, [busy(1, 1), idle(1)]);
}

#[test]
fn fields_that_only_look_like_ours_are_skipped() {
    let request = b"GET / HTTP/1.1\r\nContent-Lengthy: x\r\nX-Content-Length: 5\r\n\
        X-A-Very-Long-Field-Name-Indeed: Content-Length: 9\r\nX-Empty:\r\n\r\n";
    let answer = b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n";
    let seen = follow(&[(Up, request), (Down, answer)]);
    assert_eq!(seen, [busy(1, 1), idle(1)]);
}

#[test]
fn an_upgrade_the_server_declines_is_followed_and_one_it_accepts_falls_back() {
    let upgrade = b"GET / HTTP/1.1\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\r\n";
    assert_eq!(follow(&[(Up, upgrade), (Down, OK)])[1], idle(1));
    let switching = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n\0\0\x12\x04";
    let script: &[(Direction, &[u8])] = &[(Up, upgrade), (Down, switching)];
    assert_eq!(falls_back(script), Some(Fallback::Upgrade));
}

#[test]
fn non_http_clients_fall_back_with_their_reason() {
    let hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03";
    assert_eq!(falls_back(&[(Up, hello)]), Some(Fallback::Tls));
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\x12\x04\0\0\0\0\0";
    assert_eq!(falls_back(&[(Up, preface)]), Some(Fallback::Http2));
    let connect = b"CONNECT es:9200 HTTP/1.1\r\nHost: es:9200\r\n\r\n";
    assert_eq!(falls_back(&[(Up, connect)]), Some(Fallback::Connect));
    for garbage in [
        &b"\x00\x01\x02\x03"[..],
        b"SSH-2.0-OpenSSH_9.2\r\n",
        b"GET /\r\n",
        b"GET / HTTP/1.1\n\n",
        b"GET  / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/3.0\r\n\r\n",
        b"GET / HTTP/1.1 \r\n\r\n",
        b"\r\nGET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost : es\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: es\r\n folded\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: es\rX\n\r\n",
        b"GET / HTTP/1.1\r\nHost: e\0s\r\n\r\n",
        b"GET / HTTP/1.1\r\n: empty name\r\n\r\n",
        b"GET / HTTP/1.1\r\nConnection: \"close\"\r\n\r\n",
    ] {
        let seen = follow(&[(Up, garbage)]);
        let shown = String::from_utf8_lossy(garbage);
        assert_eq!(seen[0].fallback, Some(Fallback::Malformed), "{shown:?}");
    }
}

#[test]
fn malformed_responses_fall_back() {
    for answer in [
        &b"HTTP/1.1 20 OK\r\n\r\n"[..],
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 099 Low\r\n\r\n",
        b"HTTP/1.1 600 High\r\n\r\n",
        b"HTTP/2 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
        b"<html>",
    ] {
        let seen = follow(&[(Up, GET), (Down, answer)]);
        let shown = String::from_utf8_lossy(answer);
        assert_eq!(seen[1].fallback, Some(Fallback::Malformed), "{shown:?}");
    }
}

#[test]
fn malformed_chunks_fall_back() {
    let head = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
    for (body, reason) in [
        (&b"x\r\n"[..], Fallback::InvalidLength),
        (b"-1\r\n", Fallback::InvalidLength),
        (b"5\n", Fallback::InvalidLength),
        (b"5 \r\n", Fallback::Malformed),
        (b"10000000000000000\r\n", Fallback::InvalidLength),
        (b"2\r\nabX\n", Fallback::Malformed),
        (b"2\r\nab\r\n0\r\nbad trailer\r\n\r\n", Fallback::Malformed),
        (b"2;a\0\r\n", Fallback::Malformed),
    ] {
        let seen = follow(&[(Up, head), (Up, body)]);
        let shown = String::from_utf8_lossy(body);
        assert_eq!(seen[1].fallback, Some(reason), "{shown:?}");
    }
}

#[test]
fn lengths_that_could_be_read_two_ways_fall_back() {
    for (request, reason) in [
        (
            &b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            Fallback::ConflictingLength,
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            Fallback::ConflictingLength,
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            Fallback::ConflictingLength,
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            Fallback::ConflictingLength,
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n",
            Fallback::InvalidLength,
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
            Fallback::InvalidLength,
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: \r\n\r\n",
            Fallback::InvalidLength,
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
            Fallback::InvalidLength,
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            Fallback::InvalidLength,
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            Fallback::InvalidLength,
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n",
            Fallback::InvalidLength,
        ),
        (
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            Fallback::InvalidLength,
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding : chunked\r\n\r\n",
            Fallback::Malformed,
        ),
    ] {
        let shown = String::from_utf8_lossy(request);
        assert_eq!(falls_back(&[(Up, request)]), Some(reason), "{shown:?}");
    }
    let both = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n";
    let script: &[(Direction, &[u8])] = &[(Up, GET), (Down, both)];
    assert_eq!(falls_back(script), Some(Fallback::ConflictingLength));
}

#[test]
fn a_response_nobody_asked_for_falls_back() {
    assert_eq!(
        falls_back(&[(Down, b"HTTP/1.1 408 Request Timeout\r\n\r\n")]),
        Some(Fallback::UnexpectedResponse)
    );
    // before the request's head is complete
    let script: &[(Direction, &[u8])] = &[(Up, b"GET / HTTP/1.1\r\n"), (Down, OK)];
    assert_eq!(falls_back(script), Some(Fallback::UnexpectedResponse));
    // one response too many
    let script: &[(Direction, &[u8])] = &[(Up, GET), (Down, OK), (Down, OK)];
    assert_eq!(falls_back(script), Some(Fallback::UnexpectedResponse));
}

#[test]
fn lines_and_heads_past_the_limits_fall_back() {
    let long_target = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(16 * 1024));
    assert_eq!(
        falls_back(&[(Up, long_target.as_bytes())]),
        Some(Fallback::LineTooLong)
    );
    let long_value = format!("GET / HTTP/1.1\r\nX-A: {}\r\n\r\n", "a".repeat(16 * 1024));
    assert_eq!(
        falls_back(&[(Up, long_value.as_bytes())]),
        Some(Fallback::LineTooLong)
    );
    // a line just under the limit is fine
    let fits = format!(
        "GET / HTTP/1.1\r\nX-A: {}\r\n\r\n",
        "a".repeat(16 * 1024 - 7)
    );
    assert_eq!(follow(&[(Up, fits.as_bytes())]), [busy(1, 1)]);
    let many = format!(
        "GET / HTTP/1.1\r\n{}\r\n",
        "X-A: 0123456789\r\n".repeat(4000)
    );
    assert_eq!(
        falls_back(&[(Up, many.as_bytes())]),
        Some(Fallback::HeadTooLarge)
    );
    let long_chunk_line = format!("1;{}\r\n", "e".repeat(16 * 1024));
    let head = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
    let script: &[(Direction, &[u8])] = &[(Up, head), (Up, long_chunk_line.as_bytes())];
    assert_eq!(falls_back(script), Some(Fallback::LineTooLong));
}

#[test]
fn once_fallen_back_it_stays_and_every_call_returns_at_once() {
    let mut t = Tracker::new();
    t.feed(Up, b"\x16\x03\x01");
    assert_eq!(t.fallback(), Some(Fallback::Tls));
    t.feed(Up, GET);
    t.feed(Down, OK);
    t.skip(Down, 1 << 40);
    assert_eq!(t.fallback(), Some(Fallback::Tls));
    assert!(!t.is_idle());
    assert_eq!(t.requests(), 0);
    assert_eq!(t.opaque_len(Up), u64::MAX);
    assert_eq!(t.opaque_len(Down), u64::MAX);
}
