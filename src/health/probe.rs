//! Running one check against one server: tcp connect, or an HTTP GET judged as http or as
//! Elasticsearch. Every outcome, including a timeout, becomes an [`Observation`] with a reason.

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use hyper::Method;
use hyper::header::{ACCEPT, HOST, HeaderValue};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::elasticsearch;
use super::state::{FailureKind, Observation};
use crate::config::{CheckKind, HealthCheckConfig};
use crate::http1;

/// Health answers are small; anything larger is not one.
const MAX_BODY: usize = 256 * 1024;

/// Everything a checker needs to check one server.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckTarget {
    pub config: HealthCheckConfig,
    pub addr: SocketAddr,
    /// The configured host name, sent as `Host`.
    pub host: String,
}

/// Runs one check, bounded by the check's timeout.
pub async fn check(target: &CheckTarget) -> Observation {
    let start = Instant::now();
    let timeout = target.config.timeout;
    let verdict = match tokio::time::timeout(timeout, attempt(target)).await {
        Ok(v) => v,
        Err(_) => (
            Some((
                FailureKind::Other,
                format!("timed out after {}", humantime::format_duration(timeout)),
            )),
            None,
        ),
    };
    let (failure, cluster) = verdict;
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
    let path = match &target.config.kind {
        CheckKind::Tcp => return (None, None),
        CheckKind::Http { path } => path,
        CheckKind::Elasticsearch(es) => &es.path,
    };
    let (status, body) = match get(stream, &target.host, path).await {
        Ok(answer) => answer,
        Err(why) => return other(why),
    };
    match &target.config.kind {
        CheckKind::Elasticsearch(es) => elasticsearch::judge(es, status, &body),
        _ if (200..300).contains(&status) => (None, None),
        _ => other(elasticsearch::http_failure(status, &body)),
    }
}

/// One `GET` on a fresh connection; returns the status and the (bounded) body.
async fn get(stream: TcpStream, host: &str, path: &str) -> Result<(u16, Bytes), String> {
    let _ = stream.set_nodelay(true);
    let host =
        HeaderValue::from_str(host).map_err(|_| format!("{host:?} is not a valid Host header"))?;
    let headers = [
        (HOST, host),
        (ACCEPT, HeaderValue::from_static("application/json")),
    ];
    http1::request(TokioIo::new(stream), Method::GET, path, &headers, MAX_BODY).await
}

/// A connect error as an operator would say it.
pub fn describe_io(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".into(),
        io::ErrorKind::ConnectionReset => "connection reset".into(),
        io::ErrorKind::TimedOut => "connect timed out".into(),
        _ => match e.raw_os_error() {
            Some(libc::EHOSTUNREACH) => "no route to host".into(),
            Some(libc::ENETUNREACH) => "network unreachable".into(),
            _ => e.to_string(),
        },
    }
}
