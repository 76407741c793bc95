//! Micro-benchmarks of the pieces every proxied connection touches: choosing a server, reading
//! the configuration snapshot, counting, and following HTTP/1.1 framing. The end-to-end comparison with haproxy and nginx is
//! `benches/compare.py`.

use std::collections::HashMap;
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use criterion::{Criterion, criterion_group, criterion_main};
use roundhouse::balancer::RoundRobin;
use roundhouse::framing::{Direction, Tracker};
use roundhouse::metrics::Metrics;
use roundhouse::resolve;
use roundhouse::state::{self, Running};
use tokio::sync::Notify;

fn balancer(c: &mut Criterion) {
    let mut g = c.benchmark_group("balancer");
    let three = RoundRobin::new(&[1, 1, 1]);
    g.bench_function("pick of 3, all up", |b| {
        b.iter(|| black_box(three.pick(|_| true)))
    });
    let weighted = RoundRobin::new(&(0..30).map(|i| 1 + i % 4).collect::<Vec<u32>>());
    g.bench_function("pick of 30 weighted, a third down", |b| {
        b.iter(|| black_box(weighted.pick(|i| i % 3 != 0)))
    });
    g.finish();
}

/// A running snapshot with one listener in front of three servers (all up, never checked).
fn snapshot() -> (Running, SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("roundhouse.yaml");
    let bind: SocketAddr = "127.0.0.1:19200".parse().unwrap();
    std::fs::write(
        &path,
        "enabled: true\nlisteners: [{name: es, bind: \"127.0.0.1:19200\", backend: es}]\n\
         backends: [{name: es, servers: [10.0.0.1:9200, 10.0.0.2:9200, 10.0.0.3:9200]}]\n",
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let prepared = rt.block_on(resolve::prepare(&path)).unwrap();
    let metrics = Metrics::new();
    let running = state::build(
        prepared,
        state::Discovered::new(),
        None,
        &HashMap::new(),
        &metrics,
        &Arc::new(Notify::new()),
    );
    (running, bind)
}

fn per_connection(c: &mut Criterion) {
    let (running, bind) = snapshot();
    let shared = ArcSwap::from_pointee(running);
    c.bench_function("snapshot load + route lookup + route clone", |b| {
        b.iter(|| {
            let running = shared.load();
            black_box(running.routes.get(black_box(&bind)).cloned())
        })
    });
}

fn accounting(c: &mut Criterion) {
    let metrics = Metrics::new();
    let m = metrics.server("es", "es-1");
    let mut g = c.benchmark_group("accounting of 1 MiB in 16 KiB reads");
    g.bench_function("a counter add per read", |b| {
        b.iter(|| {
            for _ in 0..64 {
                m.sent.inc_by(black_box(16 * 1024));
            }
        })
    });
    g.bench_function("local tally, flushed per 64 KiB (roundhouse)", |b| {
        b.iter(|| {
            let mut unflushed = 0u64;
            for _ in 0..64 {
                unflushed += black_box(16 * 1024);
                if unflushed >= 64 * 1024 {
                    m.sent.inc_by(unflushed);
                    unflushed = 0;
                }
            }
            black_box(unflushed)
        })
    });
    g.finish();
    c.bench_function("per-connection counters (open, connect time, close)", |b| {
        let backend = metrics.backend("es", false);
        b.iter(|| {
            m.connections.inc();
            m.active.inc();
            backend.connect_duration.observe(black_box(0.0002));
            m.active.dec();
        })
    });
}

/// A typical Elasticsearch client request: a search with the headers the official clients send.
const SEARCH: &[u8] = b"GET /logs-2024.06/_search?size=10&q=level:error HTTP/1.1\r\n\
    Host: es.internal:9200\r\n\
    User-Agent: elasticsearch-py/8.14.0 (Python/3.12.3; elastic-transport/8.13.1)\r\n\
    Accept: application/vnd.elasticsearch+json; compatible-with=8\r\n\
    Accept-Encoding: gzip\r\n\
    Content-Type: application/vnd.elasticsearch+json; compatible-with=8\r\n\
    Authorization: Basic ZWxhc3RpYzpjaGFuZ2VtZS1wbGVhc2UtY2hhbmdlLW1l\r\n\
    X-Elastic-Client-Meta: es=8.14.0,py=3.12.3,t=8.13.1,ur=2.2.1\r\n\
    X-Opaque-Id: dashboard-7f3a\r\n\
    traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\
    Connection: keep-alive\r\n\r\n";

/// Its answer: a 200 with about 1 KiB of JSON.
fn search_answer() -> Vec<u8> {
    let body = format!("{{\"took\":3,\"hits\":\"{}\"}}", "x".repeat(1000));
    let mut answer = format!(
        "HTTP/1.1 200 OK\r\nX-elastic-product: Elasticsearch\r\n\
         content-type: application/vnd.elasticsearch+json;compatible-with=8\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    answer.extend(body.bytes());
    answer
}

/// The request wrk sends in benches/compare.py's keep-alive load.
const WRK_GET: &[u8] = b"GET /search.json HTTP/1.1\r\nHost: 127.0.0.1:19102\r\n\r\n";

/// The head of nginx's answer to it, and a body of the length it gives.
const NGINX_OK: &[u8] = b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\n\
    Date: Mon, 30 Nov 2026 11:30:00 GMT\r\nContent-Type: application/json\r\n\
    Content-Length: 16\r\nLast-Modified: Mon, 30 Nov 2026 10:00:00 GMT\r\n\
    Connection: keep-alive\r\nETag: \"6569f0a0-400\"\r\nAccept-Ranges: bytes\r\n\r\n\
    {\"took\":3,\"x\":1}";

fn framing(c: &mut Criterion) {
    let answer = search_answer();
    let mut g = c.benchmark_group("HTTP/1.1 framing");
    let exchanges: [(&str, &[u8], &[u8]); 2] = [
        (
            "one keep-alive exchange (GET _search, 200 with 1 KiB)",
            SEARCH,
            &answer,
        ),
        (
            "benches/compare.py's keep-alive exchange (wrk's GET, nginx's 200)",
            WRK_GET,
            NGINX_OK,
        ),
    ];
    for (name, request, response) in exchanges {
        let mut t = Tracker::new();
        g.bench_function(name, |b| {
            b.iter(|| {
                t.feed(Direction::Up, black_box(request));
                t.feed(Direction::Down, black_box(response));
                black_box(t.is_idle())
            })
        });
        assert!(
            t.is_idle() && t.fallback().is_none(),
            "the exchange is followed: {name}"
        );
    }
    g.finish();
}

criterion_group!(benches, balancer, per_connection, accounting, framing);
criterion_main!(benches);
