//! The per-server request counters of followed connections, kept per worker thread and summed
//! when read.
//!
//! Every keep-alive request through a followed connection changes two of its server's figures
//! (requests seen, requests in flight) and, when its response is complete, one again. Both
//! worker threads serve every server, so with one shared atomic per figure each of those
//! changes pulled the cache line over from the other core. Here each worker adds to a cache
//! line of its own; a scrape or `/status` (and so `roundhouse status`) sums the lines.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};

/// Lines per server: the last one is shared (see [`set_worker`]).
const SHARDS: usize = 8;
const SHARED: usize = SHARDS - 1;

/// The lines given out so far, process-wide: each is given to one thread only.
static GIVEN: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// The line this thread adds to: one of its own once it is a worker, else the shared one.
    static SHARD: Cell<usize> = const { Cell::new(SHARED) };
}

/// Gives the calling thread (a worker) a line of its own in every server's counts, where it
/// adds with a plain load and store: no other thread writes it. A `lock add` on a line of its
/// own still stalled the worker at every request (half of what the counter update cost in
/// `perf annotate`). Threads past the first `SHARDS - 1` share the last line, with atomic adds.
pub fn set_worker() {
    let line = GIVEN.fetch_add(1, Ordering::Relaxed);
    if line < SHARED {
        SHARD.set(line);
    }
}

/// One worker's part of a server's figures, alone in its cache lines (128 bytes: the adjacent
/// line prefetcher pulls lines in pairs).
#[derive(Default)]
#[repr(align(128))]
struct Shard {
    requests: AtomicU64,
    in_flight: AtomicI64,
}

/// A server's requests seen and requests in flight on its followed connections.
#[derive(Clone, Default)]
pub struct RequestCounts(Arc<[Shard; SHARDS]>);

impl RequestCounts {
    /// Adds `requests` seen and changes the requests in flight by `in_flight`, on the calling
    /// thread's line. A connection stays on one thread, so each line's in-flight count is never
    /// below zero, and neither is the sum.
    pub fn add(&self, requests: u64, in_flight: i64) {
        let line = SHARD.get();
        let shard = &self.0[line];
        if line != SHARED {
            // this thread is the line's only writer: a load and a store lose nothing
            let r = shard.requests.load(Ordering::Relaxed);
            shard.requests.store(r + requests, Ordering::Relaxed);
            let f = shard.in_flight.load(Ordering::Relaxed);
            shard.in_flight.store(f + in_flight, Ordering::Relaxed);
            return;
        }
        if requests != 0 {
            shard.requests.fetch_add(requests, Ordering::Relaxed);
        }
        if in_flight != 0 {
            shard.in_flight.fetch_add(in_flight, Ordering::Relaxed);
        }
    }

    /// Requests seen, all threads.
    pub fn requests(&self) -> u64 {
        self.0
            .iter()
            .map(|s| s.requests.load(Ordering::Relaxed))
            .sum()
    }

    /// Requests whose response is not complete yet, all threads.
    pub fn in_flight(&self) -> i64 {
        self.0
            .iter()
            .map(|s| s.in_flight.load(Ordering::Relaxed))
            .sum()
    }
}

/// Exports every known server's [`RequestCounts`] as `roundhouse_server_requests_total` and
/// `roundhouse_server_requests_in_flight`, labelled by backend and server.
#[derive(Clone)]
pub(super) struct RequestCollector(Arc<Inner>);

/// Every known server's counts, by backend and server name.
type Servers = BTreeMap<(Arc<str>, Arc<str>), RequestCounts>;

struct Inner {
    total: Desc,
    in_flight: Desc,
    servers: Mutex<Servers>,
}

const TOTAL: &str = "roundhouse_server_requests_total";
const IN_FLIGHT: &str = "roundhouse_server_requests_in_flight";

impl RequestCollector {
    pub(super) fn new() -> RequestCollector {
        let desc = |name: &str, help: &str| {
            let labels = vec!["backend".to_owned(), "server".to_owned()];
            Desc::new(name.to_owned(), help.to_owned(), labels, HashMap::new())
                .expect("a valid metric name and labels")
        };
        RequestCollector(Arc::new(Inner {
            total: desc(
                TOTAL,
                "HTTP requests seen on connections to the server whose framing is followed.",
            ),
            in_flight: desc(
                IN_FLIGHT,
                "HTTP requests to the server whose response is not complete yet.",
            ),
            servers: Mutex::new(BTreeMap::new()),
        }))
    }

    fn servers(&self) -> MutexGuard<'_, Servers> {
        // a panic while the map was held cannot leave it half-changed: every change is one call
        self.0
            .servers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The counts of one server: the ones it already has if it was known.
    pub(super) fn server(&self, backend: &str, server: &str) -> RequestCounts {
        self.servers()
            .entry((Arc::from(backend), Arc::from(server)))
            .or_default()
            .clone()
    }

    /// Stops exporting a server.
    pub(super) fn forget(&self, backend: &str, server: &str) {
        self.servers()
            .remove(&(Arc::from(backend), Arc::from(server)));
    }
}

fn family(desc: &Desc, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(desc.fq_name.clone());
    f.set_help(desc.help.clone());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

fn labels(backend: &str, server: &str) -> Vec<LabelPair> {
    [("backend", backend), ("server", server)]
        .into_iter()
        .map(|(name, value)| {
            let mut l = LabelPair::default();
            l.set_name(name.to_owned());
            l.set_value(value.to_owned());
            l
        })
        .collect()
}

impl Collector for RequestCollector {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.0.total, &self.0.in_flight]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let (mut totals, mut in_flight) = (Vec::new(), Vec::new());
        for ((backend, server), counts) in self.servers().iter() {
            let mut c = Counter::default();
            c.set_value(counts.requests() as f64);
            let mut m = Metric::default();
            m.set_counter(c);
            m.set_label(labels(backend, server));
            totals.push(m);
            let mut g = Gauge::default();
            g.set_value(counts.in_flight() as f64);
            let mut m = Metric::default();
            m.set_gauge(g);
            m.set_label(labels(backend, server));
            in_flight.push(m);
        }
        vec![
            family(&self.0.total, MetricType::COUNTER, totals),
            family(&self.0.in_flight, MetricType::GAUGE, in_flight),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_on_several_threads_are_summed() {
        let counts = RequestCounts::default();
        std::thread::scope(|s| {
            for worker in 0..(SHARDS + 2) {
                let counts = counts.clone();
                s.spawn(move || {
                    if worker > 0 {
                        // one thread stays on the shared line; some take lines past the last
                        set_worker();
                    }
                    for _ in 0..1000 {
                        counts.add(1, 1);
                        counts.add(0, -1);
                    }
                    counts.add(2, 1);
                });
            }
        });
        assert_eq!(counts.requests(), (SHARDS as u64 + 2) * 1002);
        assert_eq!(counts.in_flight(), SHARDS as i64 + 2);
    }

    #[test]
    fn a_server_known_again_keeps_its_counts_until_forgotten() {
        let c = RequestCollector::new();
        c.server("es", "a").add(5, 1);
        assert_eq!(c.server("es", "a").requests(), 5);
        let families = c.collect();
        assert_eq!(families[0].get_metric()[0].get_counter().get_value(), 5.0);
        assert_eq!(families[1].get_metric()[0].get_gauge().get_value(), 1.0);
        c.forget("es", "a");
        assert_eq!(c.server("es", "a").requests(), 0);
    }
}
