//! Running one check against one server: tcp connect, or an HTTP GET (over TLS if configured,
//! with credentials if configured) judged as http or as Elasticsearch. Every outcome, a
//! timeout included, becomes an [`Observation`] with a reason.

use std::net::SocketAddr;
use std::time::Instant;

use base64::Engine;
use bytes::Bytes;
use hyper::Method;
use hyper::header::{ACCEPT, AUTHORIZATION, HOST, HeaderName, HeaderValue};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::elasticsearch;
use super::tls::Tls;
use crate::config::{CheckAuth, CheckKind, HealthCheckConfig};
use crate::http1;
use crate::server::{FailureKind, Observation};
use crate::words::describe_io;

/// Health answers are small; anything larger is not one.
const MAX_BODY: usize = 256 * 1024;

/// Everything a checker needs to check one server.
#[derive(Clone)]
pub struct CheckTarget {
    pub config: HealthCheckConfig,
    pub addr: SocketAddr,
    /// The configured host name, sent as `Host` and verified by TLS unless `server_name` is set.
    pub host: String,
    /// The TLS client, or why it could not be built.
    tls: Option<Result<Tls, String>>,
    /// `Authorization`, marked sensitive so it is never logged.
    authorization: Option<HeaderValue>,
}

impl PartialEq for CheckTarget {
    fn eq(&self, other: &Self) -> bool {
        self.config == other.config && self.addr == other.addr && self.host == other.host
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
            tls,
            authorization,
        }
    }
}

/// Runs one check, bounded by the check's timeout.
pub async fn check(target: &CheckTarget) -> Observation {
    let start = Instant::now();
    let timeout = target.config.timeout;
    let (failure, cluster) = match tokio::time::timeout(timeout, attempt(target)).await {
        Ok(v) => v,
        Err(_) => (
            Some((
                FailureKind::Other,
                format!("timed out after {}", humantime::format_duration(timeout)),
            )),
            None,
        ),
    };
    Observation {
        failure,
        cluster,
        duration: start.elapsed(),
    }
}

async fn attempt(target: &CheckTarget) -> elasticsearch::Verdict {
    let other = |why: String| (Some((FailureKind::Other, why)), None);
    let stream = match TcpStream::connect(target.addr).await {
        Ok(s) => s,
        Err(e) => return other(describe_io(&e)),
    };
    let _ = stream.set_nodelay(true);
    let path = match &target.config.kind {
        CheckKind::Tcp => return (None, None),
        CheckKind::Http { path } => path,
        CheckKind::Elasticsearch(es) => &es.path,
    };
    let Ok(host) = HeaderValue::from_str(&target.host) else {
        return other(format!("{:?} is not a valid Host header", target.host));
    };
    let mut headers: Vec<(HeaderName, HeaderValue)> = vec![
        (HOST, host),
        (ACCEPT, HeaderValue::from_static("application/json")),
    ];
    if let Some(a) = &target.authorization {
        headers.push((AUTHORIZATION, a.clone()));
    }
    let answer = match &target.tls {
        None => get(TokioIo::new(stream), path, &headers).await,
        Some(Err(why)) => return other(why.clone()),
        Some(Ok(tls)) => match tls.connect(stream).await {
            Ok(s) => get(TokioIo::new(s), path, &headers).await,
            Err(why) => return other(why.to_string()),
        },
    };
    let (status, body) = match answer {
        Ok(answer) => answer,
        Err(why) => return other(why),
    };
    if status == 401 || status == 403 {
        return other(auth_failure(status, target.config.auth.is_some()));
    }
    match &target.config.kind {
        CheckKind::Elasticsearch(es) => elasticsearch::judge(es, status, &body),
        _ if (200..300).contains(&status) => (None, None),
        _ => other(elasticsearch::http_failure(status, &body)),
    }
}

async fn get<T>(
    io: T,
    path: &str,
    headers: &[(HeaderName, HeaderValue)],
) -> Result<(u16, Bytes), String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    http1::request(io, Method::GET, path, headers, MAX_BODY)
        .await
        .map_err(|e| e.to_string())
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
