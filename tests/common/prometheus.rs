//! A real Prometheus server (Debian's `prometheus` binary) as a child process: its own config
//! and storage in a temp dir, its web port chosen by the OS, scraping one roundhouse every
//! second. Killed when dropped, also when a test fails, and with the test process itself.

use std::io;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::process::{Lines, field};

/// A running Prometheus.
pub struct Prometheus {
    child: Child,
    pub addr: SocketAddr,
    pub stderr: Lines,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `target`'s `/metrics` as job `job` every second, evaluating
    /// `rule_file` every second; returns once it answers `/-/ready`.
    pub async fn start(job: &str, target: SocketAddr, rule_file: &Path) -> Prometheus {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {rules}\n\
                 scrape_configs:\n  - job_name: {job}\n    static_configs:\n      - targets: ['{target}']\n",
                rules = rule_file.display()
            ),
        )
        .expect("write prometheus.yml");
        let mut cmd = Command::new("prometheus");
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            // port 0: the OS picks a free one, and Prometheus logs the address it got
            .arg("--web.listen-address=127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // Should the test process itself be killed, Prometheus dies with it.
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .expect("start prometheus (Debian package prometheus)");
        let stderr = child.stderr.take().expect("piped stderr");
        let stderr = Lines::capture(
            tokio::process::ChildStderr::from_std(stderr).expect("stderr on the runtime"),
        );
        let mut prometheus = Prometheus {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            stderr,
            _dir: dir,
        };
        let line = prometheus
            .stderr
            .wait_for(&["msg=\"Listening on\"", "address="], STARTING)
            .await;
        prometheus.addr = field(&line, "address")
            .parse()
            .expect("Listening on line has address=");
        prometheus.wait_ready().await;
        prometheus
    }

    async fn wait_ready(&mut self) {
        let deadline = tokio::time::Instant::now() + STARTING;
        loop {
            if let Ok((200, _)) = get(self.addr, "/-/ready").await {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "prometheus exited ({status}); its log:\n{}",
                    self.stderr.text()
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "prometheus not ready within {STARTING:?}; its log:\n{}",
                self.stderr.text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `GET /api/v1/query?query=…` (at the current time): the result vector, or an error with
    /// what Prometheus said.
    pub async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let data = self
            .api(&format!("/api/v1/query?query={}", encode(expr)))
            .await?;
        match data["resultType"].as_str() {
            Some("vector") => Ok(data["result"].as_array().cloned().unwrap_or_default()),
            other => Err(format!("result type {other:?}, not a vector: {data}")),
        }
    }

    /// The values of a label, among the series of `metric` (Grafana's `label_values`).
    pub async fn label_values(&self, label: &str, metric: &str) -> Result<Vec<String>, String> {
        let data = self
            .api(&format!(
                "/api/v1/label/{label}/values?match[]={}",
                encode(metric)
            ))
            .await?;
        Ok(data
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// `GET path` of the HTTP API: its `data`, or an error with what Prometheus said.
    pub async fn api(&self, path: &str) -> Result<Value, String> {
        let (code, body) = get(self.addr, path)
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        let v: Value =
            serde_json::from_str(&body).map_err(|e| format!("GET {path}: {code} {e}: {body}"))?;
        if code != 200 || v["status"] != "success" {
            return Err(format!("GET {path}: {code} {body}"));
        }
        Ok(v["data"].clone())
    }

    /// Polls until every expression has a result with a number in it; panics at the deadline with
    /// those that have none.
    pub async fn until_all_have_data(&self, exprs: &[(String, String)], within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let mut missing = Vec::new();
            for (at, e) in exprs {
                match self.query(e).await {
                    Ok(r) if r.iter().any(has_number) => {}
                    Ok(r) => missing.push(format!("{at}: no number in {r:?}\n  {e}")),
                    Err(err) => missing.push(format!("{at}: {err}")),
                }
            }
            if missing.is_empty() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no data within {within:?} for:\n{}\nPrometheus log:\n{}",
                missing.join("\n"),
                self.stderr.text()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// A sample whose value is a number (not NaN, not infinite).
fn has_number(sample: &Value) -> bool {
    sample["value"][1]
        .as_str()
        .and_then(|v| v.parse::<f64>().ok())
        .is_some_and(f64::is_finite)
}

/// How long data may take to reach Prometheus and its rules: scrapes and evaluations are every
/// second, so this only matters on a machine that is very busy.
pub const SCRAPED: Duration = Duration::from_secs(60);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How long Prometheus may take to start.
const STARTING: Duration = Duration::from_secs(30);

/// `GET path` over HTTP/1.0, so the answer comes whole (no chunked encoding) and the server
/// closes the connection after it.
async fn get(addr: SocketAddr, path: &str) -> io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: prometheus\r\n\r\n").as_bytes())
        .await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, text.to_string()))?;
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, head.to_owned()))?;
    Ok((code, body.to_owned()))
}

/// Percent-encodes everything but the unreserved characters of RFC 3986.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
