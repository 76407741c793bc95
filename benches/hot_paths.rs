//! Micro-benchmarks of the pieces every proxied connection touches: choosing a server, reading
//! the configuration snapshot, and counting. The end-to-end comparison with haproxy and nginx is
//! `benches/compare.py`.

use std::collections::HashMap;
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use criterion::{Criterion, criterion_group, criterion_main};
use roundhouse::balancer::RoundRobin;
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

criterion_group!(benches, balancer, per_connection, accounting);
criterion_main!(benches);
