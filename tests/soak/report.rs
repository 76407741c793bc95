//! What the soak's records show: which failures were in flight on a killed node and which
//! were not, answers from servers that were not in force or were drained, open files and memory
//! against their bounds, and the error lines in roundhouse's log.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::common::load::{CLIENT_TIMEOUT, ClientLog, Kind, Record};
use crate::{
    CHURN_CLIENTS, DRAINED, FD_SLACK, KEEP_ALIVE_CLIENTS, KILL_WINDOW, KILLED, RSS_SLACK_KIB,
};

/// What was done to roundhouse, and when.
#[derive(Default)]
pub struct Events {
    /// Every configuration applied, the first one at the start.
    pub applied: Vec<Applied>,
    pub kills: Vec<Kill>,
    pub drain: Option<Drain>,
    /// When each refused reload's SIGHUP went.
    pub refused: Vec<Instant>,
}

/// A configuration that was applied: when its SIGHUP was sent (or roundhouse started), when
/// `READY=1` said it was in force, its servers.
pub struct Applied {
    pub sighup: Instant,
    pub ready: Instant,
    pub set: &'static [&'static str],
}

/// A kill of [`KILLED`]: from the call that stopped it to its return.
pub struct Kill {
    pub started: Instant,
    pub ended: Instant,
    pub down_after: Duration,
    pub up_after_restart: Option<Duration>,
}

/// The drain of [`DRAINED`]: when `drain --wait` returned, how long it took, when `ready` went.
pub struct Drain {
    pub returned: Instant,
    pub took: Duration,
    pub ready: Option<Instant>,
}

/// Open files and resident memory of a process.
#[derive(Debug, Clone, Copy)]
pub struct Figures {
    pub fds: usize,
    pub sockets: usize,
    pub rss_kib: u64,
}

impl Figures {
    pub fn of(pid: i32) -> Figures {
        let dir = format!("/proc/{pid}/fd");
        let targets: Vec<String> = std::fs::read_dir(&dir)
            .expect("read /proc/PID/fd")
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .map(|t| t.display().to_string())
            .collect();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status");
        Figures {
            fds: targets.len(),
            sockets: targets.iter().filter(|t| t.starts_with("socket:")).count(),
            rss_kib,
        }
    }
}

/// Prints open files and memory at the warmed-up start and at the end; what exceeds its bound.
pub fn compare(start: Figures, end: Figures) -> Vec<String> {
    println!(
        "open files: {} at the warmed-up start ({} sockets), {} at the end ({} sockets); bound: +{FD_SLACK}",
        start.fds, start.sockets, end.fds, end.sockets
    );
    println!(
        "resident memory: {} KiB at the warmed-up start, {} KiB at the end; bound: +{RSS_SLACK_KIB} KiB",
        start.rss_kib, end.rss_kib
    );
    let mut problems = Vec::new();
    if end.fds > start.fds + FD_SLACK {
        problems.push(format!("open files grew from {} to {}", start.fds, end.fds));
    }
    if end.rss_kib > start.rss_kib + RSS_SLACK_KIB {
        problems.push(format!(
            "resident memory grew from {} KiB to {} KiB",
            start.rss_kib, end.rss_kib
        ));
    }
    problems
}

/// What the records show, and what is wrong with them.
pub struct Report {
    pub problems: Vec<String>,
    /// Failures in flight on the killed node, per kill: (kind, node known, ms after the kill, why).
    per_kill: Vec<Vec<String>>,
    warm_up_requests: usize,
}

impl Report {
    pub fn new(events: &Events, warm: &[ClientLog], main: &[ClientLog]) -> Report {
        let mut report = Report {
            problems: Vec::new(),
            per_kill: vec![Vec::new(); events.kills.len()],
            warm_up_requests: warm.iter().map(|l| l.records.len()).sum(),
        };
        let records = warm.iter().chain(main).flat_map(|l| &l.records);
        for r in records {
            match &r.outcome {
                Ok(node) => report.answered(events, r, node),
                Err(f) => match kill_of(r, &events.kills) {
                    Some(k) if !f.stuck => report.per_kill[k].push(format!(
                        "{:?}{} +{:.1}ms ({})",
                        r.kind,
                        f.node.as_deref().map(|n| format!(" on {n}")).unwrap_or_default(),
                        r.ended.saturating_duration_since(events.kills[k].started).as_secs_f64()
                            * 1e3,
                        f.why
                    )),
                    _ => report.problems.push(format!(
                        "a request failed that was not in flight on a killed node: {:?}{} at {:?} after {:?}: {}",
                        r.kind,
                        f.node.as_deref().map(|n| format!(" on {n}")).unwrap_or_default(),
                        r.started,
                        r.ended - r.started,
                        f.why
                    )),
                },
            }
        }
        for (i, failures) in report.per_kill.iter().enumerate() {
            // each client has one request in flight at most
            if failures.len() > KEEP_ALIVE_CLIENTS + CHURN_CLIENTS {
                report.problems.push(format!(
                    "kill {} failed {} requests, more than there are clients",
                    i + 1,
                    failures.len()
                ));
            }
        }
        report
    }

    /// An answer must come from a server of the configuration in force from its connection's
    /// opening to its end, and not from the drained server while it was drained.
    fn answered(&mut self, events: &Events, r: &Record, node: &str) {
        let set = events
            .applied
            .iter()
            .zip(events.applied.iter().skip(1).map(Some).chain([None]))
            .find(|(a, next)| a.ready <= r.opened && next.is_none_or(|n| r.ended <= n.sighup));
        if let Some((a, _)) = set
            && !a.set.contains(&node)
        {
            self.problems.push(format!(
                "{:?} connection opened while {:?} were configured was answered by {node}",
                r.kind, a.set
            ));
        }
        if let Some(d) = &events.drain
            && node == DRAINED
            && r.started >= d.returned
            && d.ready.is_none_or(|ready| r.ended <= ready)
        {
            self.problems.push(format!(
                "{:?} request answered by {DRAINED} while drained",
                r.kind
            ));
        }
    }

    /// For each refused reload: how many requests were answered from its SIGHUP to the
    /// next one (the servers they came from are checked with the others), the set in force.
    pub fn after_refused(
        &self,
        events: &Events,
        logs: &[ClientLog],
    ) -> Vec<(usize, &'static [&'static str])> {
        events
            .refused
            .iter()
            .map(|&at| {
                let before = events.applied.iter().rev().find(|a| a.sighup < at);
                let next = events.applied.iter().find(|a| a.sighup > at);
                let answered = logs
                    .iter()
                    .flat_map(|l| &l.records)
                    .filter(|r| r.outcome.is_ok() && r.started >= at)
                    .filter(|r| next.is_none_or(|n| r.ended <= n.sighup))
                    .count();
                (answered, before.expect("a configuration").set)
            })
            .collect()
    }

    pub fn print(&self, logs: &[ClientLog], ran: Duration) {
        let of = |kind: Kind| {
            logs.iter()
                .filter(move |l| l.records.first().is_some_and(|r| r.kind == kind))
        };
        let count = |kind: Kind| of(kind).map(|l| l.records.len()).sum::<usize>();
        let (keep, churn) = (count(Kind::KeepAlive), count(Kind::Churn));
        let connections: u64 = of(Kind::KeepAlive).map(|l| l.connections).sum();
        let found_closed: u64 = of(Kind::KeepAlive).map(|l| l.found_closed).sum();
        let mut latencies: Vec<Duration> = logs
            .iter()
            .flat_map(|l| &l.records)
            .filter(|r| r.outcome.is_ok())
            .map(|r| r.ended - r.started)
            .collect();
        latencies.sort();
        let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
        let failed: usize = self.per_kill.iter().map(Vec::len).sum();
        let stuck = logs
            .iter()
            .flat_map(|l| &l.records)
            .filter(|r| r.outcome.as_ref().is_err_and(|f| f.stuck))
            .count();
        println!(
            "requests: {} ({:.0}/s; {} in the warm-up before): {keep} keep-alive on {connections} connections, {churn} on a new connection each; latency p50 {:.2}ms, p99 {:.2}ms, max {:.1}ms",
            keep + churn,
            (keep + churn) as f64 / ran.as_secs_f64(),
            self.warm_up_requests,
            at(0.5).as_secs_f64() * 1e3,
            at(0.99).as_secs_f64() * 1e3,
            at(1.0).as_secs_f64() * 1e3,
        );
        println!(
            "pooled connections closed by roundhouse between two requests, found closed before reuse: {found_closed}"
        );
        println!(
            "failed: {failed} in flight on {KILLED} when it was killed, {} other; stuck past {CLIENT_TIMEOUT:?}: {stuck}",
            self.problems.len()
        );
        for (i, f) in self.per_kill.iter().enumerate() {
            let list = if f.is_empty() {
                "none".to_owned()
            } else {
                f.join(", ")
            };
            println!("  kill {}: {} failed: {list}", i + 1, f.len());
        }
    }
}

/// The kill a failed request was in flight for: on the killed node (or on a connection whose
/// node it did not know yet, opened before the kill ended), failing within [`KILL_WINDOW`].
fn kill_of(r: &Record, kills: &[Kill]) -> Option<usize> {
    let f = r.outcome.as_ref().err()?;
    kills.iter().position(|k| {
        let in_window = r.ended >= k.started && r.ended <= k.ended + KILL_WINDOW;
        let on_it = match f.node.as_deref() {
            Some(n) => n == KILLED,
            None => r.started <= k.ended,
        };
        in_window && on_it
    })
}

/// roundhouse's log: error lines must all come from the refused reload.
pub struct LogCheck {
    pub problems: Vec<String>,
    errors: usize,
    warnings: BTreeMap<String, usize>,
}

impl LogCheck {
    pub fn of(lines: &[String], refused: usize) -> LogCheck {
        let level = |l: &str| l.split_whitespace().nth(1).unwrap_or("").to_owned();
        let mut check = LogCheck {
            problems: Vec::new(),
            errors: 0,
            warnings: BTreeMap::new(),
        };
        for l in lines {
            if level(l) == "ERROR" || l.contains("panicked") {
                check.errors += 1;
                if !l.contains("reload rejected") {
                    check
                        .problems
                        .push(format!("an error not caused on purpose: {l}"));
                }
            } else if level(l) == "WARN" {
                *check.warnings.entry(message(l)).or_default() += 1;
            }
        }
        if check.errors != refused {
            check.problems.push(format!(
                "{} error lines for {refused} refused reload(s)",
                check.errors
            ));
        }
        check
    }

    pub fn print(&self) {
        let warnings: Vec<String> = self
            .warnings
            .iter()
            .map(|(m, n)| format!("{n} \"{m}\""))
            .collect();
        println!(
            "log: {} error line(s), from the refused reload; warnings: {}",
            self.errors,
            warnings.join(", ")
        );
    }
}

/// The message of a log line, without its time, level and fields.
fn message(line: &str) -> String {
    line.split_whitespace()
        .skip(2)
        .take_while(|w| !w.contains('='))
        .collect::<Vec<_>>()
        .join(" ")
}
