//! Running one check against one server: tcp connect, or an HTTP GET (over TLS if configured,
//! with credentials if configured) judged as http or as Elasticsearch. Every outcome, a
//! timeout included, becomes an [`Observation`] with a reason.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use hyper::Method;
use hyper::header::{ACCEPT, AUTHORIZATION, HOST, HeaderName, HeaderValue};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::elasticsearch;
use super::tls::Tls;
use crate::config::{CheckAuth, CheckKind, HealthCheckConfig, RoleFilter};
use crate::http1;
use crate::nodes::{self, NodeInfo};
use crate::server::{FailureKind, Observation};
use crate::words::describe_io;

/// Health answers are small; anything larger is not one.
const MAX_BODY: usize = 256 * 1024;
/// What a node says about itself: its id, name, roles and HTTP publish address.
const NODE_SELF: &str = "/_nodes/_local/http";

/// Everything a checker needs to check one server.
#[derive(Clone)]
pub struct CheckTarget {
    pub config: HealthCheckConfig,
    pub addr: SocketAddr,
    /// The configured host name, sent as `Host` and verified by TLS unless `server_name` is set.
    pub host: String,
    /// The backend's roles filter, when it can keep a node out (Elasticsearch checks only).
    pub roles: Option<RoleFilter>,
    /// Whether the check also asks the node about itself (its id and roles), now and then.
    pub learn_node: bool,
    /// For a discovered server: its `http.publish_address` as the node wrote it, named in the
    /// reason when nothing answers there.
    pub published: Option<String>,
    /// The TLS client, or why it could not be built.
    tls: Option<Result<Tls, String>>,
    /// `Authorization`, marked sensitive so it is never logged.
    authorization: Option<HeaderValue>,
}

impl PartialEq for CheckTarget {
    fn eq(&self, other: &Self) -> bool {
        self.config == other.config
            && self.addr == other.addr
            && self.host == other.host
            && self.roles == other.roles
            && self.learn_node == other.learn_node
            && self.published == other.published
    }
}

impl CheckTarget {
    pub fn new(config: HealthCheckConfig, addr: SocketAddr, host: String) -> CheckTarget {
        let tls = config
            .tls
            .as_ref()
            .map(|t| Tls::new(t, &host).map_err(|e| e.to_string()));
        let authorization = config.auth.as_ref().map(|a| {
            let value = match a {
                CheckAuth::Basic { username, password } => {
                    let pair = format!("{username}:{}", password.expose());
                    format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD.encode(pair)
                    )
                }
                CheckAuth::ApiKey(key) => format!("ApiKey {}", key.expose()),
            };
            let mut v = HeaderValue::from_str(&value)
                .unwrap_or_else(|_| HeaderValue::from_static("invalid"));
            v.set_sensitive(true);
            v
        });
        CheckTarget {
            config,
            addr,
            host,
            roles: None,
            learn_node: false,
            published: None,
            tls,
            authorization,
        }
    }
}

/// What a check learned about the node itself, when it asked: the node, or why not.
pub type Learned = Option<Result<NodeInfo, String>>;

/// Runs one check, bounded by the check's timeout; with `learn_node`, also asks the node about
/// itself on the same connection, with a timeout of its own (the check's verdict never waits for
/// it, and a slow answer about roles never fails the health check).
pub async fn check(target: &CheckTarget, learn_node: bool) -> (Observation, Learned) {
    let start = Instant::now();
    let timeout = target.config.timeout;
    let deadline = tokio::time::Instant::now() + timeout;
    let attempt = attempt(target, learn_node, deadline);
    let bound = deadline + if learn_node { timeout } else { Duration::ZERO };
    let ((failure, cluster), learned) = match tokio::time::timeout_at(bound, attempt).await {
        Ok(v) => v,
        Err(_) => {
            let why = format!("timed out after {}", humantime::format_duration(timeout));
            ((Some((FailureKind::Other, why)), None), None)
        }
    };
    let obs = Observation {
        failure,
        cluster,
        duration: start.elapsed(),
    };
    (obs, learned)
}

async fn attempt(
    target: &CheckTarget,
    learn_node: bool,
    deadline: tokio::time::Instant,
) -> (elasticsearch::Verdict, Learned) {
    let other = |why: String| ((Some((FailureKind::Other, why)), None), None);
    let path = match &target.config.kind {
        CheckKind::Tcp => {
            return match connect(target, deadline).await {
                Ok(_) => ((None, None), None),
                Err(why) => other(why),
            };
        }
        CheckKind::Http { path } => path.as_str(),
        CheckKind::Elasticsearch(es) => es.path.as_str(),
    };
    let paths: &[&str] = if learn_node {
        &[path, NODE_SELF]
    } else {
        &[path]
    };
    let mut answers = match get(target, paths, MAX_BODY, deadline).await {
        Ok(a) => a.into_iter(),
        Err(why) => return other(why),
    };
    let (status, body) = match answers.next() {
        Some(Ok(answer)) => answer,
        Some(Err(why)) => return other(why),
        None => return other("no HTTP answer".to_owned()),
    };
    let learned = answers.next().map(node_itself);
    if status == 401 || status == 403 {
        return other(auth_failure(status, target.config.auth.is_some()));
    }
    let verdict = match &target.config.kind {
        CheckKind::Elasticsearch(es) => elasticsearch::judge(es, status, &body),
        _ if (200..300).contains(&status) => (None, None),
        _ => (
            Some((
                FailureKind::Other,
                elasticsearch::http_failure(status, &body),
            )),
            None,
        ),
    };
    (verdict, learned)
}

/// The node's answer about itself, or why it tells nothing.
fn node_itself(answer: Result<(u16, Bytes), String>) -> Result<NodeInfo, String> {
    let (status, body) = answer?;
    if status == 401 || status == 403 {
        return Err(format!(
            "GET {NODE_SELF} was refused ({status}): the health check's user needs the cluster monitor privilege (check health_check.auth)"
        ));
    }
    if !(200..300).contains(&status) {
        return Err(format!(
            "GET {NODE_SELF}: {}",
            elasticsearch::http_failure(status, &body)
        ));
    }
    let node = nodes::parse(&body)
        .map_err(|e| format!("GET {NODE_SELF}: {e}"))?
        .nodes
        .into_iter()
        .next()
        .ok_or_else(|| format!("GET {NODE_SELF} named no node"))?;
    match node.roles {
        Some(_) => Ok(node),
        None => Err(format!("GET {NODE_SELF} lists no roles for the node")),
    }
}

/// Connects to the target before `deadline`; for a discovered server, a connect that fails
/// says which published address did not answer and what usually causes it.
async fn connect(
    target: &CheckTarget,
    deadline: tokio::time::Instant,
) -> Result<TcpStream, String> {
    let why = match tokio::time::timeout_at(deadline, TcpStream::connect(target.addr)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            return Ok(stream);
        }
        Ok(Err(e)) => describe_io(&e),
        Err(_) => format!(
            "timed out after {}",
            humantime::format_duration(target.config.timeout)
        ),
    };
    Err(match &target.published {
        Some(published) => format!(
            "publishes {published}, which does not answer ({why}; a container-internal address? set http.publish_host on the node)"
        ),
        None => why,
    })
}

/// Connects (over TLS when configured) and sends a GET for each of `paths` in turn on that one
/// connection, each answer at most `max_body` bytes. Connecting and the first answer must be
/// done by `deadline`; each later answer gets the check's timeout of its own. The outer error is
/// the connection's; an answer that fails ends the list with its error.
pub async fn get(
    target: &CheckTarget,
    paths: &[&str],
    max_body: usize,
    deadline: tokio::time::Instant,
) -> Result<Vec<Result<(u16, Bytes), String>>, String> {
    let stream = connect(target, deadline).await?;
    let Ok(host) = HeaderValue::from_str(&target.host) else {
        return Err(format!("{:?} is not a valid Host header", target.host));
    };
    let mut headers: Vec<(HeaderName, HeaderValue)> = vec![
        (HOST, host),
        (ACCEPT, HeaderValue::from_static("application/json")),
    ];
    if let Some(a) = &target.authorization {
        headers.push((AUTHORIZATION, a.clone()));
    }
    let headers = &headers;
    let timeout = target.config.timeout;
    let exchange = |mut session: http1::Session| async move {
        let mut answers = Vec::new();
        for (i, path) in paths.iter().enumerate() {
            let limit = match i {
                0 => deadline,
                _ => tokio::time::Instant::now() + timeout,
            };
            let send = session.send(Method::GET, path, headers, max_body);
            let answer = match tokio::time::timeout_at(limit, send).await {
                Ok(a) => a.map_err(|e| e.to_string()),
                // the check's own request says it as every other timeout of the check does
                Err(_) if i == 0 => Err(format!(
                    "timed out after {}",
                    humantime::format_duration(timeout)
                )),
                Err(_) => Err(format!(
                    "GET {path} timed out after {}",
                    humantime::format_duration(timeout)
                )),
            };
            let failed = answer.is_err();
            answers.push(answer);
            if failed {
                break;
            }
        }
        Ok(answers)
    };
    let result = match &target.tls {
        None => http1::session(TokioIo::new(stream), exchange).await,
        Some(Err(why)) => return Err(why.clone()),
        Some(Ok(tls)) => match tokio::time::timeout_at(deadline, tls.connect(stream)).await {
            Ok(Ok(s)) => http1::session(TokioIo::new(s), exchange).await,
            Ok(Err(why)) => return Err(why.to_string()),
            Err(_) => {
                return Err(format!(
                    "timed out after {}",
                    humantime::format_duration(timeout)
                ));
            }
        },
    };
    result.map_err(|e| e.to_string())
}

/// What to fix when a node refuses the check's credentials.
fn auth_failure(status: u16, has_auth: bool) -> String {
    match (status, has_auth) {
        (401, true) => "authentication failed (401): check health_check.auth".into(),
        (401, false) => "authentication required (401): set health_check.auth".into(),
        _ => "not authorized (403): the health check's user needs the cluster monitor privilege (check health_check.auth)".into(),
    }
}

/// True when a failure reason says the node refused the check's credentials.
pub fn is_auth_failure(reason: &str) -> bool {
    reason.starts_with("authentication") || reason.starts_with("not authorized")
}
