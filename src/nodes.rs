//! What Elasticsearch says about its nodes: the answers of `GET /_nodes/_local/http` (a node
//! about itself: its id, name and roles) and `GET /_nodes/_all/http` (the cluster's nodes and
//! where each publishes its HTTP address), and what a roles filter makes of a node. Pure: bytes
//! in, facts out.

use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;

use crate::config::RoleFilter;

/// A node's permanent id (it survives restarts and address changes).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct NodeId(pub String);

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One node as the cluster describes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeInfo {
    pub id: NodeId,
    pub name: String,
    /// `None` when the node reported no roles at all.
    pub roles: Option<Vec<String>>,
    /// `http.publish_address` as written, and the address it names; `None` without HTTP.
    pub publish: Option<Publish>,
}

/// Where a node says clients reach its HTTP port.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Publish {
    /// As the node wrote it: `10.0.0.1:9200` or `es-1.internal/10.0.0.1:9200`.
    pub text: String,
    pub addr: SocketAddr,
}

/// A `/_nodes` answer: the cluster it is about and its nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodesAnswer {
    pub cluster_name: String,
    pub nodes: Vec<NodeInfo>,
    /// Members that did not answer in time (`_nodes.failures`): in the cluster, but not
    /// described in this answer.
    pub failed: Vec<NodeId>,
}

/// Why an answer could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodesError {
    #[error("not a /_nodes answer ({0})")]
    NotJson(String),
    #[error("the answer lists no node")]
    Empty,
}

#[derive(Deserialize)]
struct RawAnswer {
    #[serde(rename = "_nodes")]
    header: Option<RawHeader>,
    cluster_name: String,
    nodes: std::collections::BTreeMap<String, RawNode>,
}

#[derive(Deserialize)]
struct RawHeader {
    #[serde(default)]
    failures: Vec<RawFailure>,
}

#[derive(Deserialize)]
struct RawFailure {
    node_id: Option<String>,
}

#[derive(Deserialize)]
struct RawNode {
    name: String,
    roles: Option<Vec<String>>,
    http: Option<RawHttp>,
}

#[derive(Deserialize)]
struct RawHttp {
    publish_address: Option<String>,
}

/// Reads a `/_nodes/.../http` answer. A node whose publish address cannot be read is kept,
/// without one (it cannot be a server, but it is a member of the cluster).
pub fn parse(body: &[u8]) -> Result<NodesAnswer, NodesError> {
    let raw: RawAnswer =
        serde_json::from_slice(body).map_err(|e| NodesError::NotJson(e.to_string()))?;
    if raw.nodes.is_empty() {
        return Err(NodesError::Empty);
    }
    let nodes = raw
        .nodes
        .into_iter()
        .map(|(id, n)| NodeInfo {
            id: NodeId(id),
            name: n.name,
            roles: n.roles,
            publish: n
                .http
                .and_then(|h| h.publish_address)
                .and_then(|text| publish_addr(&text).map(|addr| Publish { text, addr })),
        })
        .collect();
    let failed = raw
        .header
        .into_iter()
        .flat_map(|h| h.failures)
        .filter_map(|f| f.node_id.map(NodeId))
        .collect();
    Ok(NodesAnswer {
        cluster_name: raw.cluster_name,
        nodes,
        failed,
    })
}

/// The address in `http.publish_address`, in either form Elasticsearch writes it: `ip:port`, or
/// `hostname/ip:port` when the publish host is a name (`[v6]:port` for IPv6 in both).
pub fn publish_addr(text: &str) -> Option<SocketAddr> {
    let after_host = text.rsplit_once('/').map_or(text, |(_, a)| a);
    if let Ok(a) = after_host.parse::<SocketAddr>() {
        return Some(a);
    }
    // a bare IPv6 address and a port, as some versions write it
    let (ip, port) = after_host.rsplit_once(':')?;
    Some(SocketAddr::new(
        ip.parse::<IpAddr>().ok()?,
        port.parse().ok()?,
    ))
}

/// True for a node whose roles are only master (cluster_manager), possibly with voting_only: it
/// manages the cluster and holds no data, so a client request would only be forwarded from it.
pub fn is_dedicated_master(roles: &[String]) -> bool {
    let master = roles
        .iter()
        .any(|r| r == "master" || r == "cluster_manager");
    master
        && roles
            .iter()
            .all(|r| matches!(r.as_str(), "master" | "cluster_manager" | "voting_only"))
}

/// Whether `roles` satisfy `filter`: `Err` says in words why the node is no client entry point.
pub fn judge_roles(filter: &RoleFilter, roles: &[String]) -> Result<(), String> {
    if filter.exclude_dedicated_masters && is_dedicated_master(roles) {
        return Err("dedicated cluster-manager node: not a client entry point".to_owned());
    }
    let has = |want: &str| {
        roles.iter().any(|r| match want {
            "master" => r == "master" || r == "cluster_manager",
            "data" => r == "data" || r.starts_with("data_"),
            other => r == other,
        })
    };
    let missing: Vec<&str> = filter
        .require
        .iter()
        .map(|r| r.0.as_str())
        .filter(|r| !has(r))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let roles = if roles.is_empty() {
        "none (coordinating only)".to_owned()
    } else {
        roles.join(", ")
    };
    Err(format!(
        "lacks the role{} {} that roles.require asks for (has {roles})",
        if missing.len() == 1 { "" } else { "s" },
        missing.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Role;

    fn roles(r: &[&str]) -> Vec<String> {
        r.iter().map(|s| s.to_string()).collect()
    }

    /// What OpenSearch 2.19 answers to `GET /_nodes/_all/http`: a cluster-manager-only node and
    /// a data node publishing as `hostname/ip:port`.
    const OPENSEARCH: &str = r#"{"_nodes":{"total":3,"successful":3,"failed":0},"cluster_name":"prod","nodes":{
      "Xq3vU7kSQ8yG1mK0aB2cDw":{"name":"m1","transport_address":"127.0.0.1:9301","host":"127.0.0.1","ip":"127.0.0.1","version":"2.19.1","build_type":"tar","build_hash":"x","roles":["cluster_manager"],"attributes":{"shard_indexing_pressure_enabled":"true"},"http":{"bound_address":["127.0.0.1:40001"],"publish_address":"127.0.0.1:40001","max_content_length_in_bytes":104857600}},
      "b1Zc9wTfQbK5d0XyZ3a4Eg":{"name":"n1","transport_address":"127.0.0.1:9302","host":"127.0.0.1","ip":"127.0.0.1","version":"2.19.1","build_type":"tar","build_hash":"x","roles":["cluster_manager","data","ingest","remote_cluster_client"],"attributes":{},"http":{"bound_address":["[::1]:40002","127.0.0.1:40002"],"publish_address":"localhost/127.0.0.1:40002","max_content_length_in_bytes":104857600}},
      "nohttp00000000000000000":{"name":"t1","transport_address":"127.0.0.1:9303","host":"127.0.0.1","ip":"127.0.0.1","version":"2.19.1","roles":["data"],"attributes":{}}
    }}"#;

    #[test]
    fn parses_both_publish_address_forms_and_a_node_without_http() {
        let a = parse(OPENSEARCH.as_bytes()).expect("parses");
        assert_eq!(a.cluster_name, "prod");
        assert_eq!(a.nodes.len(), 3);
        let by = |name: &str| a.nodes.iter().find(|n| n.name == name).unwrap();
        let m1 = by("m1");
        assert_eq!(m1.id, NodeId("Xq3vU7kSQ8yG1mK0aB2cDw".into()));
        assert_eq!(
            m1.publish.as_ref().unwrap().addr,
            "127.0.0.1:40001".parse().unwrap()
        );
        let n1 = by("n1");
        assert_eq!(
            n1.publish.as_ref().unwrap().text,
            "localhost/127.0.0.1:40002"
        );
        assert_eq!(
            n1.publish.as_ref().unwrap().addr,
            "127.0.0.1:40002".parse().unwrap()
        );
        assert_eq!(by("t1").publish, None, "no http section");
    }

    #[test]
    fn members_that_did_not_answer_are_named() {
        let body = br#"{"_nodes":{"total":2,"successful":1,"failed":1,"failures":[{"type":"failed_node_exception","reason":"Failed node [z9]","node_id":"z9","caused_by":{"type":"receive_timeout_transport_exception","reason":"timed out"}}]},"cluster_name":"prod","nodes":{"a1":{"name":"n1","roles":["data"],"http":{"publish_address":"127.0.0.1:9200"}}}}"#;
        let a = parse(body).expect("parses");
        assert_eq!(a.failed, vec![NodeId("z9".into())]);
        assert_eq!(a.nodes.len(), 1);
    }

    #[test]
    fn publish_addresses_in_every_form() {
        let a = |s: &str| publish_addr(s);
        assert_eq!(a("10.0.0.1:9200"), Some("10.0.0.1:9200".parse().unwrap()));
        assert_eq!(
            a("es-1.internal/10.0.0.1:9200"),
            Some("10.0.0.1:9200".parse().unwrap())
        );
        assert_eq!(a("[::1]:9200"), Some("[::1]:9200".parse().unwrap()));
        assert_eq!(
            a("localhost/[::1]:9200"),
            Some("[::1]:9200".parse().unwrap())
        );
        assert_eq!(a("es-1.internal:9200"), None, "a name alone is no address");
        assert_eq!(a("garbage"), None);
        assert_eq!(a(""), None);
    }

    #[test]
    fn elasticsearch_master_and_opensearch_cluster_manager_are_the_same_role() {
        assert!(is_dedicated_master(&roles(&["master"])));
        assert!(is_dedicated_master(&roles(&["cluster_manager"])));
        assert!(is_dedicated_master(&roles(&["master", "voting_only"])));
        assert!(!is_dedicated_master(&roles(&["master", "data"])));
        assert!(!is_dedicated_master(&roles(&["cluster_manager", "ingest"])));
        assert!(!is_dedicated_master(&roles(&[])), "coordinating only");
        assert!(!is_dedicated_master(&roles(&["voting_only"])));
    }

    #[test]
    fn the_filter_says_why_a_node_is_kept_out() {
        let default = RoleFilter {
            exclude_dedicated_masters: true,
            require: vec![],
        };
        assert_eq!(
            judge_roles(&default, &roles(&["cluster_manager"])),
            Err("dedicated cluster-manager node: not a client entry point".into())
        );
        assert_eq!(judge_roles(&default, &roles(&["data", "master"])), Ok(()));
        assert_eq!(judge_roles(&default, &roles(&[])), Ok(()));
        let off = RoleFilter {
            exclude_dedicated_masters: false,
            require: vec![],
        };
        assert_eq!(judge_roles(&off, &roles(&["master"])), Ok(()));
        let data = RoleFilter {
            exclude_dedicated_masters: false,
            require: vec![Role("data".into())],
        };
        assert_eq!(judge_roles(&data, &roles(&["data_hot", "ingest"])), Ok(()));
        assert_eq!(
            judge_roles(&data, &roles(&["ingest", "master"])),
            Err("lacks the role data that roles.require asks for (has ingest, master)".into())
        );
        assert_eq!(
            judge_roles(&data, &roles(&[])),
            Err(
                "lacks the role data that roles.require asks for (has none (coordinating only))"
                    .into()
            )
        );
        let master = RoleFilter {
            exclude_dedicated_masters: false,
            require: vec![Role("master".into())],
        };
        assert_eq!(judge_roles(&master, &roles(&["cluster_manager"])), Ok(()));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for b in [
            &b"<html>"[..],
            b"",
            b"{}",
            br#"{"cluster_name":"x","nodes":{}}"#,
            b"\xff",
        ] {
            assert!(parse(b).is_err());
        }
    }
}
