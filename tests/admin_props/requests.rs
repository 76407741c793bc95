//! The requests the admin property test sends: any request line, headers, path and body, and
//! requests with the token to a valid path.

use std::fmt;

use proptest::prelude::*;
use proptest::sample::select;

/// The admin token of the roundhouse under test.
pub const TOKEN: &str = "correct horse battery staple";

/// The servers of backend `es`: name, the name as written in a path, and the admin state each
/// is kept in between cases (all three differ, so any action on any of them shows).
pub const SERVERS: [(&str, &str, &str); 3] = [
    ("es-1", "es-1", "ready"),
    ("es-2", "es-2", "drain"),
    ("x:y@[z]", "x%3Ay%40%5Bz%5D", "maint"),
];

/// Bytes as sent, shown escaped when a case fails.
#[derive(Clone)]
pub struct Wire(Vec<u8>);

impl fmt::Debug for Wire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b\"{}\"", self.0.escape_ascii())
    }
}

/// One case: any request, or a request with the token to a valid path.
#[derive(Clone, Debug)]
pub enum Case {
    Any(Wire),
    Authorized {
        server: usize,
        action: &'static str,
        extra: Vec<String>,
    },
}

fn bytes(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn method() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => Just(bytes("POST")),
        3 => select(vec![
            "post", "Post", "GET", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE",
            "CONNECT", "PRI", "POSTX", "POST\0", "P OST", "", "POST\t",
        ])
        .prop_map(bytes),
        1 => "[!#$%&'*+.^_`|~0-9A-Za-z-]{1,16}".prop_map(|s| bytes(&s)),
        1 => prop::collection::vec(any::<u8>(), 0..8),
    ]
}

fn segment() -> impl Strategy<Value = Vec<u8>> {
    let names: Vec<&str> = SERVERS.iter().flat_map(|(n, p, _)| [*n, *p]).collect();
    prop_oneof![
        4 => select(vec!["servers", "es", "drain", "maint", "ready"]).prop_map(bytes),
        2 => select(names).prop_map(bytes),
        2 => select(vec![
            "..", ".", "", "%2e%2e", "%2F", "%00", "%", "%zz", "%ff", "%C3%A9", "es%2D1", "ES-1",
            "Servers", "drain%20", "drain?x=1", "drain#f", "%2525", "es-1\0",
        ])
        .prop_map(bytes),
        1 => (1usize..20_000).prop_map(|n| "a".repeat(n).into_bytes()),
        1 => "\\PC{0,10}".prop_map(|s| bytes(&s)),
        1 => prop::collection::vec(any::<u8>(), 0..10),
    ]
}

/// `/servers/BACKEND/SERVER/ACTION`, with names right or wrong.
fn change_path() -> impl Strategy<Value = Vec<u8>> {
    let server = select(
        SERVERS
            .iter()
            .map(|(_, p, _)| *p)
            .chain(["nope"])
            .collect::<Vec<_>>(),
    );
    (
        select(vec!["es", "es", "ES", "nope", ""]),
        server,
        select(vec!["drain", "maint", "ready", "DRAIN", "stop", ""]),
    )
        .prop_map(|(b, s, a)| bytes(&format!("/servers/{b}/{s}/{a}")))
}

fn target() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => prop::collection::vec(segment(), 0..6).prop_map(|s| [b"/".to_vec(), s.join(&b'/')].concat()),
        5 => change_path(),
        2 => select(vec![
            "*",
            "",
            "http://x/servers/es/es-1/drain",
            "//servers/es/es-1/drain",
            "/servers//es/es-1/drain",
            "/servers/es/es-1/drain/",
            "servers/es/es-1/drain",
            "/servers/es/es-1/drain?token=correct%20horse%20battery%20staple",
            "/../servers/es/es-1/drain",
            "/servers/es/../es/es-1/drain",
            "/servers/es/es-1/drain\0",
            "/servers/es/es-1/drain HTTP/1.1\r\nAuthorization: Bearer x",
        ])
        .prop_map(bytes),
    ]
}

fn version() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => Just(bytes("HTTP/1.1")),
        1 => select(vec![
            "HTTP/1.0", "HTTP/2.0", "HTTP/1.1 x", "http/1.1", "HTTP/1.", "", "HTTP/1.1\0",
            "HTTP/9.9",
        ])
        .prop_map(bytes),
    ]
}

/// Names an Authorization header might be given; the first four are the same header.
const AUTH_NAMES: [&str; 9] = [
    "Authorization",
    "authorization",
    "AUTHORIZATION",
    "AuThOrIzAtIoN",
    "Authorisation",
    "X-Authorization",
    "Proxy-Authorization",
    "Authorization ",
    " Authorization",
];

/// The right token in every broken form, wrong tokens: values a header may carry.
fn credential() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => Just(format!("Bearer {TOKEN}").into_bytes()),
        4 => select(vec![
            format!("bearer {TOKEN}"),
            format!("BEARER {TOKEN}"),
            format!("Bearer  {TOKEN}"),
            format!("Bearer\t{TOKEN}"),
            format!("Bearer{TOKEN}"),
            TOKEN.to_owned(),
            format!("Bearer {TOKEN}x"),
            format!("Bearer {}", &TOKEN[..TOKEN.len() - 1]),
            format!("Bearer {}", TOKEN.to_uppercase()),
            format!("Bearer {TOKEN},Bearer x"),
            format!("Bearer x, Bearer {TOKEN}"),
            format!("Bearer {}", TOKEN.replace(' ', "\t")),
            format!("Bearer \"{TOKEN}\""),
            "Basic Y29ycmVjdDpob3JzZQ==".to_owned(),
            "Bearer".to_owned(),
            "Bearer ".to_owned(),
            String::new(),
        ])
        .prop_map(String::into_bytes),
        2 => "\\PC{0,40}".prop_map(|t| format!("Bearer {t}").into_bytes()),
    ]
}

/// An Authorization header (or something like one), well formed.
fn authorization() -> impl Strategy<Value = Vec<u8>> {
    (select(AUTH_NAMES[..7].to_vec()), credential())
        .prop_map(|(n, v)| [n.as_bytes(), b": ", &v].concat())
}

/// An Authorization header or something like one, well formed or not.
fn any_authorization() -> impl Strategy<Value = Vec<u8>> {
    let value = prop_oneof![
        4 => credential(),
        1 => Just(format!("Bearer {TOKEN}\0").into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..60),
    ];
    (select(AUTH_NAMES.to_vec()), value).prop_map(|(n, v)| [n.as_bytes(), b": ", &v].concat())
}

/// Other header lines (some cases are many lines).
fn other_headers() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let plain = select(vec![
        "Connection: close",
        "Connection: keep-alive",
        "Expect: 100-continue",
        "Upgrade: h2c",
        "X-Forwarded-For: 1.2.3.4",
        "Host: x",
        "Host: x:y:z",
        "Accept: */*",
        "User-Agent: curl/8.0",
    ]);
    let framing = select(vec![
        "Content-Length: 0",
        "Content-Length: -1",
        "Content-Length: 99999999999999999999",
        "Content-Length: 1, 2",
        "Transfer-Encoding: chunked",
        "Transfer-Encoding: gzip",
    ]);
    let broken = select(vec![
        "no colon here",
        "Space : before colon",
        " folded continuation",
        ": empty name",
        "X-Nul: a\0b",
    ]);
    prop_oneof![
        8 => plain.prop_map(|h| vec![bytes(h)]),
        2 => framing.prop_map(|h| vec![bytes(h)]),
        1 => broken.prop_map(|h| vec![bytes(h)]),
        1 => (1usize..40_000).prop_map(|n| vec![format!("X-Big: {}", "x".repeat(n)).into_bytes()]),
        1 => (1usize..400).prop_map(|n| (0..n).map(|i| format!("X-{i}: v").into_bytes()).collect()),
        1 => prop::collection::vec(any::<u8>(), 0..80).prop_map(|h| vec![h]),
    ]
}

/// A body, framed or not; sometimes a whole second request (with the token or without).
fn body() -> impl Strategy<Value = Option<Vec<u8>>> {
    let pipelined = select(vec![
        format!("POST /servers/es/es-1/drain HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"),
        "POST /servers/es/es-2/ready HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\n\r\n".to_owned(),
        "POST /servers/es/es-1/maint HTTP/1.1\r\nHost: x\r\n\r\n".to_owned(),
    ])
    .prop_map(String::into_bytes);
    prop::option::weighted(
        0.3,
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..200),
            pipelined,
            Just(b"5\r\nhello\r\n0\r\n\r\n".to_vec()),
        ],
    )
}

/// A request line, headers and a body, each perhaps broken.
fn structured_request() -> impl Strategy<Value = Vec<u8>> {
    (
        (method(), target(), version()),
        prop::bool::weighted(0.8),
        prop::collection::vec(
            prop_oneof![2 => any_authorization().prop_map(|a| vec![a]), 3 => other_headers()],
            0..4,
        ),
        body(),
        prop::bool::weighted(0.85),
    )
        .prop_map(|((m, t, v), host, headers, body, crlf)| {
            let eol: &[u8] = if crlf { b"\r\n" } else { b"\n" };
            let mut out = [m.as_slice(), b" ", &t, b" ", &v, eol].concat();
            if host {
                out.extend_from_slice(b"Host: admin");
                out.extend_from_slice(eol);
            }
            for line in headers.into_iter().flatten() {
                out.extend_from_slice(&line);
                out.extend_from_slice(eol);
            }
            if let Some(b) = &body {
                out.extend_from_slice(format!("Content-Length: {}", b.len()).as_bytes());
                out.extend_from_slice(eol);
            }
            out.extend_from_slice(eol);
            out.extend(body.unwrap_or_default());
            out
        })
}

/// Any bytes, or HTTP's words in any order.
fn raw_request() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 1..2000),
        prop::collection::vec(
            select(vec![
                "POST",
                "GET",
                " ",
                "/servers/es/es-1/drain",
                "/",
                "HTTP/1.1",
                "\r\n",
                "\n",
                "Authorization: ",
                "Bearer ",
                TOKEN,
                "Content-Length: 5",
                "\0",
                ":",
                "%",
            ]),
            1..30,
        )
        .prop_map(|t| t.concat().into_bytes()),
    ]
    // a head always ends, so that each case is answered or closed at once rather than after
    // the head timeout; blank lines alone are skipped by the parser, so they are no case
    .prop_map(|mut r| {
        r.extend_from_slice(b"\r\n\r\n");
        r
    })
    .prop_filter("more than blank lines", |r| {
        r.iter().any(|b| *b != b'\r' && *b != b'\n')
    })
}

/// Well formed, to the change endpoints, with every wrong credential: what reaches the handler.
fn near_valid_request() -> impl Strategy<Value = Vec<u8>> {
    (
        select(vec!["POST", "POST", "POST", "post", "GET", "PUT"]),
        change_path(),
        prop::collection::vec(authorization(), 0..3),
        prop::collection::vec(
            select(vec![
                "Accept: */*",
                "Connection: keep-alive",
                "X-Forwarded-For: 1.2.3.4",
            ]),
            0..2,
        ),
    )
        .prop_map(|(m, path, auth, other)| {
            let mut out = [m.as_bytes(), b" ", &path, b" HTTP/1.1\r\nHost: admin\r\n"].concat();
            for line in auth
                .iter()
                .map(Vec::as_slice)
                .chain(other.iter().map(|h| h.as_bytes()))
            {
                out.extend_from_slice(line);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"\r\n");
            out
        })
}

/// Any request, as the bytes a client sends.
fn any_request() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![3 => near_valid_request(), 3 => structured_request(), 1 => raw_request()]
}

pub fn case() -> impl Strategy<Value = Case> {
    let extra = prop::collection::vec("X-[A-Za-z]{1,10}: [ -~]{0,20}", 0..3);
    prop_oneof![
        9 => any_request().prop_map(|r| Case::Any(Wire(r))),
        1 => (0..SERVERS.len(), select(vec!["drain", "maint", "ready"]), extra)
            .prop_map(|(server, action, extra)| Case::Authorized { server, action, extra }),
    ]
}

impl Case {
    /// The bytes sent.
    pub fn wire(&self) -> Vec<u8> {
        match self {
            Case::Any(w) => w.0.clone(),
            Case::Authorized {
                server,
                action,
                extra,
            } => {
                let path = SERVERS[*server].1;
                let extra: String = extra.iter().map(|h| format!("{h}\r\n")).collect();
                format!(
                    "POST /servers/es/{path}/{action} HTTP/1.1\r\nHost: admin\r\n{extra}Authorization: Bearer {TOKEN}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
                .into_bytes()
            }
        }
    }
}
