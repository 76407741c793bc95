//! A server's health: the rise/fall state machine, the reason of the last failure and what the
//! node last said about its cluster. It lives with the server and is carried across reloads.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, SystemTime};

use crate::config::ClusterStatus;

/// Health as the balancer reads it on every connection (one relaxed atomic load).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Health {
    /// Not checked yet: a new server gets no traffic until its first check answers.
    Unknown = 0,
    Up = 1,
    Down = 2,
}

impl Health {
    fn from_u8(v: u8) -> Health {
        match v {
            1 => Health::Up,
            2 => Health::Down,
            _ => Health::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Up => "up",
            Health::Down => "down",
        }
    }
}

/// What a node said about its cluster in its last health answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClusterView {
    pub cluster_name: String,
    pub status: Option<ClusterStatus>,
    pub number_of_nodes: u64,
}

/// How a check failed; decides whether the failure may ever be overridden.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// Reachable, right cluster, enough nodes: only the cluster colour is not accepted.
    ColourOnly,
    /// Anything else: unreachable, timeout, HTTP error, wrong cluster, too few nodes, bad answer.
    Other,
}

/// The outcome of one check (active, or a failed client connect counted passively).
#[derive(Debug, Clone)]
pub struct Observation {
    pub failure: Option<(FailureKind, String)>,
    pub cluster: Option<ClusterView>,
    pub duration: Duration,
}

impl Observation {
    pub fn pass(cluster: Option<ClusterView>, duration: Duration) -> Observation {
        Observation {
            failure: None,
            cluster,
            duration,
        }
    }

    pub fn fail(
        kind: FailureKind,
        reason: impl Into<String>,
        cluster: Option<ClusterView>,
        duration: Duration,
    ) -> Observation {
        Observation {
            failure: Some((kind, reason.into())),
            cluster,
            duration,
        }
    }
}

/// A change between up and down, with the reason to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub from: Health,
    pub to: Health,
    pub reason: String,
}

/// A copy of a server's health record, for `/status`, the STATUS line and the CLI.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HealthView {
    pub health: &'static str,
    pub since: SystemTime,
    /// The reason the server is down (or of the last failed check while it is still up).
    pub reason: Option<String>,
    pub failure_kind: Option<FailureKind>,
    pub last_check: Option<LastCheck>,
    pub cluster: Option<ClusterView>,
}

/// The last check, passed or failed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LastCheck {
    pub at: SystemTime,
    pub passed: bool,
    pub duration_ms: u64,
    pub reason: Option<String>,
}

#[derive(Debug)]
struct Record {
    passes: u32,
    failures: u32,
    since: SystemTime,
    reason: Option<String>,
    failure_kind: Option<FailureKind>,
    last_check: Option<LastCheck>,
    cluster: Option<ClusterView>,
}

/// The health of one server.
#[derive(Debug)]
pub struct Tracker {
    health: AtomicU8,
    /// The last check failed only on the cluster colour (read by the balancer when failing open).
    colour_only: AtomicBool,
    record: Mutex<Record>,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker {
            health: AtomicU8::new(Health::Unknown as u8),
            colour_only: AtomicBool::new(false),
            record: Mutex::new(Record {
                passes: 0,
                failures: 0,
                since: SystemTime::now(),
                reason: Some("not checked yet".into()),
                failure_kind: None,
                last_check: None,
                cluster: None,
            }),
        }
    }
}

impl Tracker {
    /// The current health, for the balancer.
    pub fn health(&self) -> Health {
        Health::from_u8(self.health.load(Ordering::Relaxed))
    }

    /// Records one observation with `rise`/`fall` hysteresis; returns the transition it caused.
    ///
    /// A server's first observation decides its state at once, so a fresh start or a new server
    /// is in (or out of) rotation after one check instead of `rise` checks.
    pub fn record(&self, obs: Observation, rise: u32, fall: u32) -> Option<Transition> {
        let mut r = self
            .record
            .lock()
            .expect("health record lock is never poisoned");
        let now = SystemTime::now();
        let current = self.health();
        r.last_check = Some(LastCheck {
            at: now,
            passed: obs.failure.is_none(),
            duration_ms: obs.duration.as_millis() as u64,
            reason: obs.failure.as_ref().map(|(_, why)| why.clone()),
        });
        if obs.cluster.is_some() {
            r.cluster = obs.cluster;
        }
        let colour_only = matches!(obs.failure, Some((FailureKind::ColourOnly, _)));
        self.colour_only.store(colour_only, Ordering::Relaxed);
        let next = match obs.failure {
            None => {
                r.passes = r.passes.saturating_add(1);
                r.failures = 0;
                if current == Health::Up {
                    r.reason = None;
                    r.failure_kind = None;
                }
                (current == Health::Unknown || (current == Health::Down && r.passes >= rise))
                    .then_some(Health::Up)
            }
            Some((kind, why)) => {
                r.failures = r.failures.saturating_add(1);
                r.passes = 0;
                r.reason = Some(why);
                r.failure_kind = Some(kind);
                (current == Health::Unknown || (current == Health::Up && r.failures >= fall))
                    .then_some(Health::Down)
            }
        };
        let to = next?;
        self.health.store(to as u8, Ordering::Relaxed);
        r.since = now;
        if to == Health::Up {
            r.reason = None;
            r.failure_kind = None;
        }
        Some(Transition {
            from: current,
            to,
            reason: r
                .reason
                .clone()
                .unwrap_or_else(|| "health check passed".to_owned()),
        })
    }

    /// True when the server is down and its last check failed on the cluster colour alone
    /// (reachable, right cluster, enough nodes): the only kind of server a backend may fail
    /// open to.
    pub fn down_on_colour_only(&self) -> bool {
        self.health() == Health::Down && self.colour_only.load(Ordering::Relaxed)
    }

    /// A copy of the record.
    pub fn view(&self) -> HealthView {
        let r = self
            .record
            .lock()
            .expect("health record lock is never poisoned");
        HealthView {
            health: self.health().as_str(),
            since: r.since,
            reason: r.reason.clone(),
            failure_kind: r.failure_kind,
            last_check: r.last_check.clone(),
            cluster: r.cluster.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass() -> Observation {
        Observation::pass(None, Duration::ZERO)
    }
    fn fail(why: &str) -> Observation {
        Observation::fail(FailureKind::Other, why, None, Duration::ZERO)
    }

    #[test]
    fn first_observation_decides() {
        let t = Tracker::default();
        assert_eq!(t.record(pass(), 2, 3).unwrap().to, Health::Up);
        let t = Tracker::default();
        let tr = t.record(fail("timed out after 1s"), 2, 3).unwrap();
        assert_eq!(
            (tr.to, tr.reason.as_str()),
            (Health::Down, "timed out after 1s")
        );
    }

    #[test]
    fn fall_and_rise_need_consecutive_results() {
        let t = Tracker::default();
        t.record(pass(), 2, 3);
        assert!(t.record(fail("a"), 2, 3).is_none());
        assert!(t.record(fail("b"), 2, 3).is_none());
        assert!(
            t.record(pass(), 2, 3).is_none(),
            "a pass resets the failure count"
        );
        assert!(t.record(fail("c"), 2, 3).is_none());
        assert!(t.record(fail("d"), 2, 3).is_none());
        let down = t.record(fail("cluster status red"), 2, 3).unwrap();
        assert_eq!(
            (down.to, down.reason.as_str()),
            (Health::Down, "cluster status red")
        );
        assert!(t.record(pass(), 2, 3).is_none());
        assert_eq!(t.health(), Health::Down);
        assert_eq!(t.record(pass(), 2, 3).unwrap().to, Health::Up);
        assert_eq!(t.view().reason, None);
    }
}
