//! Judging a node by its cluster-health answer. Pure: bytes in, verdict out.

use serde::Deserialize;

use crate::config::{ClusterStatus, EsCheck};
use crate::server::{ClusterView, FailureKind};

/// The fields of `GET /_cluster/health` that a check looks at.
#[derive(Debug, Deserialize)]
struct ClusterHealth {
    cluster_name: String,
    status: String,
    number_of_nodes: u64,
    /// Elasticsearch 7.16+: false while the node has not found an elected master.
    discovered_master: Option<bool>,
    /// OpenSearch's name for the same.
    discovered_cluster_manager: Option<bool>,
}

/// The verdict on one answer: a failure (if any) and what the node said about its cluster.
pub type Verdict = (Option<(FailureKind, String)>, Option<ClusterView>);

/// Applies `check` to an HTTP answer from a node.
pub fn judge(check: &EsCheck, status: u16, body: &[u8]) -> Verdict {
    if !(200..300).contains(&status) {
        return (Some((FailureKind::Other, http_failure(status, body))), None);
    }
    // serde also reads a struct from an array of its values in field order, so that
    // `["prod","green",3,null,null]` would pass: only an object is a cluster-health answer.
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return (
            Some((
                FailureKind::Other,
                "not a cluster health answer (an array, expected an object)".to_owned(),
            )),
            None,
        );
    }
    let health: ClusterHealth = match serde_json::from_slice(body) {
        Ok(h) => h,
        Err(e) => {
            return (
                Some((
                    FailureKind::Other,
                    format!("not a cluster health answer ({e})"),
                )),
                None,
            );
        }
    };
    let colour = ClusterStatus::parse(&health.status);
    let view = ClusterView {
        cluster_name: health.cluster_name.clone(),
        status: colour,
        number_of_nodes: health.number_of_nodes,
    };
    // A node that has not found a master answers `?local=true` with a made-up view of a
    // cluster of one (red): nothing else it says means anything.
    if health.discovered_master == Some(false) || health.discovered_cluster_manager == Some(false) {
        return (
            Some((
                FailureKind::Other,
                "has not discovered a master (stuck in discovery?)".to_owned(),
            )),
            Some(view),
        );
    }
    // Safety problems come first: they are why a node must never get traffic.
    let mut problems = Vec::new();
    if let Some(want) = &check.cluster_name
        && &health.cluster_name != want
    {
        problems.push(format!(
            "cluster_name is {}, want {want}",
            health.cluster_name
        ));
    }
    if let Some(min) = check.min_nodes
        && health.number_of_nodes < u64::from(min)
    {
        let n = health.number_of_nodes;
        let nodes = if n == 1 { "node" } else { "nodes" };
        problems.push(format!("sees {n} {nodes}, want at least {min} (isolated?)"));
    }
    let safe = problems.is_empty();
    match colour {
        Some(c) if check.expect_status.contains(&c) => {}
        Some(c) => problems.push(format!("cluster status {c}")),
        None => {
            problems.push(format!("unknown cluster status {:?}", health.status));
            return (
                Some((FailureKind::Other, problems.join(" and "))),
                Some(view),
            );
        }
    }
    if problems.is_empty() {
        return (None, Some(view));
    }
    let kind = if safe {
        FailureKind::ColourOnly
    } else {
        FailureKind::Other
    };
    (Some((kind, problems.join(" and "))), Some(view))
}

/// A non-2xx answer: the status and, when the body is an Elasticsearch error, its type.
pub fn http_failure(status: u16, body: &[u8]) -> String {
    match error_type(body) {
        Some(t) => format!("HTTP {status}: {t}"),
        None => format!("HTTP {status}"),
    }
}

/// `error.root_cause[0].type` or `error.type` of an Elasticsearch error body.
fn error_type(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let err = v.get("error")?;
    let t = err
        .pointer("/root_cause/0/type")
        .or_else(|| err.get("type"))
        .and_then(|t| t.as_str())?;
    Some(t.to_owned())
}

#[cfg(test)]
mod props;

#[cfg(test)]
mod tests {
    use super::*;

    fn check() -> EsCheck {
        EsCheck {
            path: "/_cluster/health".into(),
            expect_status: vec![ClusterStatus::Green, ClusterStatus::Yellow],
            cluster_name: Some("prod".into()),
            min_nodes: Some(2),
        }
    }

    fn body(name: &str, status: &str, nodes: u64) -> Vec<u8> {
        format!(
            r#"{{"cluster_name":"{name}","status":"{status}","timed_out":false,"number_of_nodes":{nodes},"number_of_data_nodes":{nodes},"active_primary_shards":5,"active_shards":10,"relocating_shards":0,"initializing_shards":0,"unassigned_shards":0,"delayed_unassigned_shards":0,"number_of_pending_tasks":0,"number_of_in_flight_fetch":0,"task_max_waiting_in_queue_millis":0,"active_shards_percent_as_number":100.0}}"#
        )
        .into_bytes()
    }

    #[test]
    fn green_node_of_the_right_cluster_passes() {
        let (failure, view) = judge(&check(), 200, &body("prod", "green", 3));
        assert_eq!(failure, None);
        assert_eq!(view.unwrap().number_of_nodes, 3);
    }

    #[test]
    fn red_alone_is_a_colour_failure() {
        let (failure, _) = judge(&check(), 200, &body("prod", "red", 3));
        assert_eq!(
            failure,
            Some((FailureKind::ColourOnly, "cluster status red".into()))
        );
    }

    #[test]
    fn isolated_node_is_never_colour_only() {
        let (failure, _) = judge(&check(), 200, &body("prod", "red", 1));
        assert_eq!(
            failure,
            Some((
                FailureKind::Other,
                "sees 1 node, want at least 2 (isolated?) and cluster status red".into()
            ))
        );
    }

    #[test]
    fn foreign_cluster_names_both() {
        let (failure, _) = judge(&check(), 200, &body("staging", "green", 3));
        assert_eq!(
            failure,
            Some((
                FailureKind::Other,
                "cluster_name is staging, want prod".into()
            ))
        );
    }

    #[test]
    fn master_not_discovered_is_named() {
        let b = br#"{"error":{"root_cause":[{"type":"master_not_discovered_exception","reason":null}],"type":"master_not_discovered_exception","reason":null},"status":503}"#;
        let (failure, _) = judge(&check(), 503, b);
        assert_eq!(
            failure,
            Some((
                FailureKind::Other,
                "HTTP 503: master_not_discovered_exception".into()
            ))
        );
    }

    #[test]
    fn a_node_without_a_master_is_never_colour_only() {
        // what OpenSearch 2.19 answers to ?local=true while stuck in discovery
        let b = br#"{"cluster_name":"prod","status":"red","timed_out":false,"number_of_nodes":1,"number_of_data_nodes":1,"discovered_master":false,"discovered_cluster_manager":false,"active_primary_shards":0,"active_shards":0,"relocating_shards":0,"initializing_shards":0,"unassigned_shards":0,"delayed_unassigned_shards":0,"number_of_pending_tasks":0,"number_of_in_flight_fetch":0,"task_max_waiting_in_queue_millis":0,"active_shards_percent_as_number":"NaN"}"#;
        let mut c = check();
        c.min_nodes = None;
        let (failure, _) = judge(&c, 200, b);
        assert_eq!(
            failure,
            Some((
                FailureKind::Other,
                "has not discovered a master (stuck in discovery?)".into()
            ))
        );
    }

    #[test]
    fn an_array_of_the_right_values_is_not_an_answer() {
        // found by the property tests: serde reads a struct from its values in an array
        for b in [
            &br#"["prod","green",3,null,null]"#[..],
            br#" ["prod","green",3,true,true]"#,
        ] {
            let (failure, view) = judge(&check(), 200, b);
            assert_eq!(
                failure,
                Some((
                    FailureKind::Other,
                    "not a cluster health answer (an array, expected an object)".into()
                ))
            );
            assert!(view.is_none());
        }
        let (failure, _) = judge(
            &check(),
            200,
            &[b" \n\t".as_slice(), &body("prod", "green", 3)].concat(),
        );
        assert_eq!(failure, None, "white space before the object is JSON");
    }

    #[test]
    fn garbage_is_a_failure_not_a_panic() {
        for b in [&b"<html>"[..], b"", b"{}", b"{\"status\":5}", b"\xff\xfe"] {
            let (failure, _) = judge(&check(), 200, b);
            assert_eq!(failure.unwrap().0, FailureKind::Other);
        }
    }
}
