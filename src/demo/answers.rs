//! What a stand-in node reports ([`Behaviour`]) and the JSON it answers with, in the shapes
//! Elasticsearch 8 uses.

use std::net::SocketAddr;

use crate::config::ClusterStatus;

/// How a fake node answers its health endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Answers with its cluster health.
    Normal,
    /// Accepts the request and never answers (a node stuck looking for a master).
    Hang,
    /// Stuck in discovery: `503 master_not_discovered_exception`, or with `?local=true` a red
    /// cluster of one that has not discovered a master (as Elasticsearch and OpenSearch do).
    NoMaster,
    /// `200` with a body that is not JSON.
    Garbage,
}

/// What a fake node reports.
#[derive(Debug, Clone)]
pub struct Behaviour {
    pub cluster_name: String,
    pub status: ClusterStatus,
    pub number_of_nodes: u64,
    pub mode: Mode,
    /// Its roles, as `/_nodes` lists them (default: data, ingest, master).
    pub roles: Vec<String>,
    /// The HTTP publish address it reports (default: where it listens), as the node writes it.
    pub publish: Option<String>,
    /// The other nodes of its cluster, as `/_nodes/_all/http` lists them besides itself.
    pub peers: Vec<Peer>,
    /// `/_nodes` answers 403, as to a user without the cluster monitor privilege, while the
    /// health endpoint still answers.
    pub nodes_refused: bool,
    /// The cluster name its `/_nodes` answers give, when not its own. No real node does this;
    /// it stands for an answer about another cluster, which discovery must refuse.
    pub nodes_cluster_name: Option<String>,
}

/// Another node of a fake node's cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub id: String,
    pub name: String,
    pub roles: Vec<String>,
    /// `http.publish_address`; `None`: the node has no HTTP section.
    pub publish: Option<String>,
}

/// The id a fake node named `name` has, whatever its address (a restarted node keeps it).
pub fn node_id(name: &str) -> String {
    format!("node-{name}")
}

pub fn health_body(b: &Behaviour) -> String {
    let unassigned = match b.status {
        ClusterStatus::Green => 0,
        ClusterStatus::Yellow => 5,
        ClusterStatus::Red => 10,
    };
    serde_json::json!({
        "cluster_name": b.cluster_name,
        "status": b.status.as_str(),
        "timed_out": false,
        "number_of_nodes": b.number_of_nodes,
        "number_of_data_nodes": b.number_of_nodes,
        "discovered_master": true,
        "active_primary_shards": 10,
        "active_shards": 20 - unassigned,
        "relocating_shards": 0,
        "initializing_shards": 0,
        "unassigned_shards": unassigned,
        "delayed_unassigned_shards": 0,
        "number_of_pending_tasks": 0,
        "number_of_in_flight_fetch": 0,
        "task_max_waiting_in_queue_millis": 0,
        "active_shards_percent_as_number": f64::from(20 - unassigned) * 5.0,
    })
    .to_string()
}

/// What a node stuck in discovery answers to `?local=true`: a cluster of one, red, no master.
pub fn no_master_local_body(b: &Behaviour) -> String {
    serde_json::json!({
        "cluster_name": b.cluster_name,
        "status": "red",
        "timed_out": false,
        "number_of_nodes": 1,
        "number_of_data_nodes": 1,
        "discovered_master": false,
        "active_primary_shards": 0,
        "active_shards": 0,
        "relocating_shards": 0,
        "initializing_shards": 0,
        "unassigned_shards": 0,
        "delayed_unassigned_shards": 0,
        "number_of_pending_tasks": 0,
        "number_of_in_flight_fetch": 0,
        "task_max_waiting_in_queue_millis": 0,
        "active_shards_percent_as_number": "NaN",
    })
    .to_string()
}

pub fn no_master_body() -> String {
    serde_json::json!({
        "error": {
            "root_cause": [{"type": "master_not_discovered_exception", "reason": null}],
            "type": "master_not_discovered_exception",
            "reason": null
        },
        "status": 503
    })
    .to_string()
}

pub fn root_body(name: &str, b: &Behaviour) -> String {
    serde_json::json!({
        "name": name,
        "cluster_name": b.cluster_name,
        "cluster_uuid": "kcCSyDfeQ8ui8dGWBYsL5A",
        "version": {
            "number": "8.11.1",
            "build_flavor": "default",
            "build_type": "tar",
            "build_hash": "6f9ff581fbcde658e6f69d6ce03050f060d1fd0c",
            "build_date": "2023-11-11T10:05:59.421038163Z",
            "build_snapshot": false,
            "lucene_version": "9.8.0",
            "minimum_wire_compatibility_version": "7.17.0",
            "minimum_index_compatibility_version": "7.0.0"
        },
        "tagline": "You Know, for Search"
    })
    .to_string()
}

/// `/_nodes/_local/http` (`all` false) or `/_nodes/_all/http` (`all` true).
pub fn nodes_body(name: &str, addr: SocketAddr, b: &Behaviour, all: bool) -> String {
    let me = Peer {
        id: node_id(name),
        name: name.to_owned(),
        roles: b.roles.clone(),
        publish: Some(b.publish.clone().unwrap_or_else(|| addr.to_string())),
    };
    let listed: Vec<&Peer> = if all {
        std::iter::once(&me).chain(&b.peers).collect()
    } else {
        vec![&me]
    };
    let mut nodes = serde_json::Map::new();
    for p in listed {
        let mut node = serde_json::json!({
            "name": p.name,
            "transport_address": format!("{}:9300", addr.ip()),
            "host": addr.ip().to_string(),
            "ip": addr.ip().to_string(),
            "version": "8.11.1",
            "roles": p.roles,
        });
        if let Some(publish) = &p.publish {
            node["http"] = serde_json::json!({
                "bound_address": [publish],
                "publish_address": publish,
                "max_content_length_in_bytes": 104857600
            });
        }
        nodes.insert(p.id.clone(), node);
    }
    serde_json::json!({
        "_nodes": {"total": nodes.len(), "successful": nodes.len(), "failed": 0},
        "cluster_name": b.nodes_cluster_name.as_ref().unwrap_or(&b.cluster_name),
        "nodes": nodes,
    })
    .to_string()
}

pub fn not_found_body(path: &str) -> String {
    serde_json::json!({
        "error": {
            "root_cause": [{"type": "index_not_found_exception", "reason": format!("no such index [{}]", path.trim_start_matches('/'))}],
            "type": "index_not_found_exception",
            "reason": format!("no such index [{}]", path.trim_start_matches('/'))
        },
        "status": 404
    })
    .to_string()
}

/// What a secured node answers a user who lacks the cluster monitor privilege.
pub fn forbidden_body() -> String {
    let reason = "action [cluster:monitor/nodes/info] is unauthorized for user [roundhouse] with effective roles [] on indices [], this action is granted by the cluster privileges [monitor,manage,all]";
    serde_json::json!({
        "error": {
            "root_cause": [{"type": "security_exception", "reason": reason}],
            "type": "security_exception",
            "reason": reason
        },
        "status": 403
    })
    .to_string()
}

pub fn unauthenticated_body(path: &str) -> String {
    let reason = format!("missing authentication credentials for REST request [{path}]");
    serde_json::json!({
        "error": {
            "root_cause": [{
                "type": "security_exception",
                "reason": reason,
                "header": {"WWW-Authenticate": ["Basic realm=\"security\" charset=\"UTF-8\"", "ApiKey"]}
            }],
            "type": "security_exception",
            "reason": reason,
            "header": {"WWW-Authenticate": ["Basic realm=\"security\" charset=\"UTF-8\"", "ApiKey"]}
        },
        "status": 401
    })
    .to_string()
}
