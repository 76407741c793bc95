//! Validation of `health_check`: the check type and the settings each type accepts.

use std::time::Duration;

use super::error::FieldPath;
use super::schema::RawHealthCheck;
use super::validate::Validator;
use super::{CheckKind, ClusterStatus, EsCheck, HealthCheckConfig};

const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
const DEFAULT_RISE: u32 = 2;
const DEFAULT_FALL: u32 = 3;
/// The node's own view of the cluster, answered without asking the master: a node that cannot
/// reach a master still answers, and its answer is about itself.
const DEFAULT_ES_PATH: &str = "/_cluster/health?local=true";
const DEFAULT_HTTP_PATH: &str = "/";
const MAX_RISE_FALL: u64 = 100;

impl Validator<'_> {
    pub(super) fn health_check(
        &mut self,
        raw: Option<RawHealthCheck>,
        path: &FieldPath,
    ) -> Option<HealthCheckConfig> {
        let mut raw = raw.unwrap_or_else(empty_health_check);
        let interval = raw.interval.map_or(DEFAULT_INTERVAL, |d| d.0);
        let timeout = raw.timeout.map_or(DEFAULT_TIMEOUT, |d| d.0);
        let mut ok = true;
        if interval.is_zero() {
            self.err(&path.field("interval"), "expected a duration above zero");
            ok = false;
        }
        if timeout.is_zero() {
            self.err(&path.field("timeout"), "expected a duration above zero");
            ok = false;
        } else if timeout > interval {
            self.err(
                &path.field("timeout"),
                format!(
                    "{} is longer than interval ({}): expected at most the interval",
                    humantime::format_duration(timeout),
                    humantime::format_duration(interval)
                ),
            );
            ok = false;
        }
        let rise = self.count(raw.rise, DEFAULT_RISE, &path.field("rise"));
        let fall = self.count(raw.fall, DEFAULT_FALL, &path.field("fall"));
        let (raw_tls, raw_auth) = (raw.tls.take(), raw.auth.take());
        let kind = self.check_kind(raw, path)?;
        let speaks_http = !matches!(kind, CheckKind::Tcp);
        let tls = match raw_tls {
            Some(_) if !speaks_http => {
                self.err(
                    &path.field("tls"),
                    "only applies to type: http or elasticsearch",
                );
                return None;
            }
            Some(t) => Some(self.tls(t, &path.field("tls"))?),
            None => None,
        };
        let auth = match raw_auth {
            Some(_) if !speaks_http => {
                self.err(
                    &path.field("auth"),
                    "only applies to type: http or elasticsearch",
                );
                return None;
            }
            Some(a) => Some(self.auth(a, &path.field("auth"))?),
            None => None,
        };
        Some(HealthCheckConfig {
            kind,
            interval,
            timeout,
            rise: rise?,
            fall: fall?,
            tls,
            auth,
        })
        .filter(|_| ok)
    }

    fn count(&mut self, raw: Option<u64>, default: u32, path: &FieldPath) -> Option<u32> {
        match raw {
            None => Some(default),
            Some(n) if (1..=MAX_RISE_FALL).contains(&n) => Some(n as u32),
            Some(n) => {
                self.err(
                    path,
                    format!("expected 1 to {MAX_RISE_FALL} consecutive checks, got {n}"),
                );
                None
            }
        }
    }

    fn check_kind(&mut self, raw: RawHealthCheck, path: &FieldPath) -> Option<CheckKind> {
        let kind = raw.kind.as_deref().unwrap_or("elasticsearch");
        let es_only = [
            ("expect_status", raw.expect_status.is_some()),
            ("cluster_name", raw.cluster_name.is_some()),
            ("min_nodes", raw.min_nodes.is_some()),
        ];
        if kind != "elasticsearch" {
            for (field, given) in es_only {
                if given {
                    self.err(
                        &path.field(field),
                        format!("only applies to type: elasticsearch (this check is type: {kind})"),
                    );
                }
            }
        }
        let path_of = |v: &mut Self, default: &str| -> Option<String> {
            let p = raw.path.clone().unwrap_or_else(|| default.to_owned());
            if p.starts_with('/') && !p.chars().any(|c| c.is_whitespace() || c.is_control()) {
                Some(p)
            } else {
                v.err(
                    &path.field("path"),
                    format!(
                        "invalid path {p:?}: expected an absolute URL path such as /_cluster/health"
                    ),
                );
                None
            }
        };
        match kind {
            "tcp" => {
                if raw.path.is_some() {
                    self.err(
                        &path.field("path"),
                        "only applies to type: http or elasticsearch",
                    );
                    return None;
                }
                Some(CheckKind::Tcp)
            }
            "http" => Some(CheckKind::Http {
                path: path_of(self, DEFAULT_HTTP_PATH)?,
            }),
            "elasticsearch" => {
                let p = path_of(self, DEFAULT_ES_PATH);
                let expect_status =
                    self.expect_status(raw.expect_status, &path.field("expect_status"));
                let min_nodes = match raw.min_nodes {
                    Some(0) => {
                        self.err(
                            &path.field("min_nodes"),
                            "expected at least 1 (leave it out to accept any node count)",
                        );
                        None
                    }
                    Some(n) if n > u32::MAX as u64 => {
                        self.err(&path.field("min_nodes"), format!("{n} is too large"));
                        None
                    }
                    m => Some(m.map(|m| m as u32)),
                };
                let cluster_name = match raw.cluster_name {
                    Some(n) if n.trim().is_empty() => {
                        self.err(
                            &path.field("cluster_name"),
                            "expected a cluster name (leave it out to accept any cluster)",
                        );
                        None
                    }
                    n => Some(n),
                };
                Some(CheckKind::Elasticsearch(EsCheck {
                    path: p?,
                    expect_status: expect_status?,
                    cluster_name: cluster_name?,
                    min_nodes: min_nodes?,
                }))
            }
            other => {
                self.err(
                    &path.field("type"),
                    format!("unknown check type {other:?}: expected tcp, http or elasticsearch"),
                );
                None
            }
        }
    }

    fn expect_status(
        &mut self,
        raw: Option<Vec<String>>,
        path: &FieldPath,
    ) -> Option<Vec<ClusterStatus>> {
        let Some(raw) = raw else {
            return Some(vec![ClusterStatus::Green, ClusterStatus::Yellow]);
        };
        if raw.is_empty() {
            self.err(path, "expected at least one of green, yellow, red");
            return None;
        }
        let mut out = Vec::new();
        for (i, s) in raw.iter().enumerate() {
            match ClusterStatus::parse(s) {
                Some(c) if !out.contains(&c) => out.push(c),
                Some(_) => {}
                None => {
                    self.err(
                        &path.index(i),
                        format!("unknown cluster status {s:?}: expected green, yellow or red"),
                    );
                    return None;
                }
            }
        }
        Some(out)
    }
}

fn empty_health_check() -> RawHealthCheck {
    RawHealthCheck {
        kind: None,
        interval: None,
        timeout: None,
        rise: None,
        fall: None,
        expect_status: None,
        cluster_name: None,
        min_nodes: None,
        path: None,
        tls: None,
        auth: None,
    }
}
