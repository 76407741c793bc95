//! The command-line side of the admin endpoint: `roundhouse status` and
//! `roundhouse drain|maint|ready BACKEND SERVER`.

use std::fmt::Write;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use hyper::Method;
use hyper::header::{AUTHORIZATION, HOST, HeaderValue};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

use crate::http1;

const MAX_ANSWER: usize = 16 * 1024 * 1024;
const TIMEOUT: Duration = Duration::from_secs(10);

/// Why a command-line tool got no answer it could use from the admin endpoint.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read the token file {}: {source}", path.display())]
    TokenFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the token has characters a header cannot carry")]
    TokenNotAHeader,
    #[error("no connection to the admin endpoint {0} within 10s")]
    ConnectTimeout(SocketAddr),
    #[error(
        "cannot reach the admin endpoint {addr}: {source} (is roundhouse running? see --admin)"
    )]
    Connect {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("no answer from the admin endpoint {0} within 10s")]
    AnswerTimeout(SocketAddr),
    #[error(transparent)]
    Http(#[from] http1::Error),
    #[error("the admin endpoint answered HTTP {status} with something that is not JSON ({source})")]
    NotJson {
        status: u16,
        #[source]
        source: serde_json::Error,
    },
    /// The endpoint refused the request and said why.
    #[error("HTTP {status}: {reason}")]
    Refused { status: u16, reason: String },
    #[error("{backend}/{server} is no longer in the configuration")]
    Gone { backend: String, server: String },
    #[error("{backend}/{server} still has {active} open connection(s) after {}", humantime::format_duration(*waited))]
    StillOpen {
        backend: String,
        server: String,
        active: i64,
        waited: Duration,
    },
}

/// Where the admin endpoint is, and the token for changes.
pub struct Endpoint {
    pub addr: SocketAddr,
    pub token: Option<String>,
}

impl Endpoint {
    async fn call(&self, method: Method, path: &str) -> Result<Value, ClientError> {
        let io = tokio::time::timeout(TIMEOUT, TcpStream::connect(self.addr))
            .await
            .map_err(|_| ClientError::ConnectTimeout(self.addr))?
            .map_err(|source| ClientError::Connect {
                addr: self.addr,
                source,
            })?;
        let mut headers = vec![(
            HOST,
            HeaderValue::from_str(&self.addr.to_string()).expect("an address is a valid header"),
        )];
        if let Some(t) = &self.token {
            let v = HeaderValue::from_str(&format!("Bearer {t}"))
                .map_err(|_| ClientError::TokenNotAHeader)?;
            headers.push((AUTHORIZATION, v));
        }
        let (status, body) = tokio::time::timeout(
            TIMEOUT,
            http1::request(TokioIo::new(io), method, path, &headers, MAX_ANSWER),
        )
        .await
        .map_err(|_| ClientError::AnswerTimeout(self.addr))??;
        let v: Value = serde_json::from_slice(&body)
            .map_err(|source| ClientError::NotJson { status, source })?;
        if (200..300).contains(&status) {
            Ok(v)
        } else {
            Err(ClientError::Refused {
                status,
                reason: v["error"]
                    .as_str()
                    .unwrap_or("(no reason given)")
                    .to_owned(),
            })
        }
    }

    /// `GET /status`.
    pub async fn status(&self) -> Result<Value, ClientError> {
        self.call(Method::GET, "/status").await
    }

    /// Polls `/status` until the server has no open connection, or `timeout` has passed.
    pub async fn wait_drained(
        &self,
        backend: &str,
        server: &str,
        timeout: Duration,
    ) -> Result<(), ClientError> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let status = self.status().await?;
            let active = status["backends"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|b| b["name"] == backend)
                .flat_map(|b| b["servers"].as_array().into_iter().flatten())
                .find(|s| s["name"] == server)
                .and_then(|s| s["active_connections"].as_i64())
                .ok_or_else(|| ClientError::Gone {
                    backend: backend.to_owned(),
                    server: server.to_owned(),
                })?;
            if active == 0 {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                return Err(ClientError::StillOpen {
                    backend: backend.to_owned(),
                    server: server.to_owned(),
                    active,
                    waited: timeout,
                });
            }
            // keep-alive connections close within milliseconds of their last response: look
            // often enough to say so when it happens
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `POST /servers/{backend}/{server}/{action}`.
    pub async fn change(
        &self,
        backend: &str,
        server: &str,
        action: &str,
    ) -> Result<Value, ClientError> {
        let path = format!(
            "/servers/{}/{}/{action}",
            percent_encode(backend),
            percent_encode(server)
        );
        self.call(Method::POST, &path).await
    }
}

fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:@".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The servers of a `/status` document as a table, like haproxy's `show stat`.
/// BYTES IN are from clients to the server, BYTES OUT from the server to clients; IN FLIGHT
/// counts requests whose response is not complete, RELAYS the open connections relayed as bytes
/// (their framing not followed): what `drain --wait` waits for, and what it cannot see into.
pub fn table(status: &Value) -> String {
    let now = SystemTime::now();
    let mut rows = vec![
        [
            "BACKEND",
            "SERVER",
            "SOURCE",
            "STATE",
            "SINCE",
            "LAST CHECK",
            "ACTIVE",
            "IN FLIGHT",
            "RELAYS",
            "TOTAL",
            "BYTES IN",
            "BYTES OUT",
        ]
        .map(String::from),
    ];
    for b in status["backends"].as_array().into_iter().flatten() {
        for s in b["servers"].as_array().into_iter().flatten() {
            let since = s["since"]
                .as_str()
                .and_then(|t| humantime::parse_rfc3339(t).ok())
                .and_then(|t| now.duration_since(t).ok())
                .map(|d| humantime::format_duration(Duration::from_secs(d.as_secs())).to_string())
                .unwrap_or_default();
            rows.push([
                text(&b["name"]),
                text(&s["name"]),
                text(&s["source"]),
                text(&s["state"]),
                since,
                last_check(s),
                text(&s["active_connections"]),
                text(&s["requests_in_flight"]),
                text(&s["byte_relay_connections"]),
                text(&s["connections_total"]),
                bytes(&s["sent_bytes_total"]),
                bytes(&s["received_bytes_total"]),
            ]);
        }
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    if let Some(reason) = status["last_reload"]["reason"].as_str() {
        let _ = writeln!(out, "\nlast reload was rejected: {reason}");
    }
    out
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn last_check(s: &Value) -> String {
    if s["state"] == "excluded" {
        return text(&s["reason"]);
    }
    let c = &s["last_check"];
    if c.is_null() {
        return "not checked yet".into();
    }
    if c["passed"].as_bool() == Some(true) {
        let es = &s["elasticsearch"];
        return match (es["status"].as_str(), es["number_of_nodes"].as_u64()) {
            (Some(colour), Some(n)) => format!("ok ({colour}, {n} nodes)"),
            _ => "ok".into(),
        };
    }
    text(&c["reason"])
}

fn bytes(v: &Value) -> String {
    let n = v.as_u64().unwrap_or(0) as f64;
    match n {
        n if n >= 1024.0 * 1024.0 * 1024.0 => format!("{:.1} GiB", n / (1024.0 * 1024.0 * 1024.0)),
        n if n >= 1024.0 * 1024.0 => format!("{:.1} MiB", n / (1024.0 * 1024.0)),
        n if n >= 1024.0 => format!("{:.1} KiB", n / 1024.0),
        n => format!("{n} B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_encoded_for_the_path() {
        assert_eq!(percent_encode("es-1"), "es-1");
        assert_eq!(percent_encode("[::1]:9200"), "%5B::1%5D:9200");
        assert_eq!(percent_encode("10.0.0.1:9200"), "10.0.0.1:9200");
    }

    #[test]
    fn byte_counts_are_human() {
        assert_eq!(bytes(&Value::from(512)), "512 B");
        assert_eq!(bytes(&Value::from(3 * 1024 * 1024)), "3.0 MiB");
    }
}
