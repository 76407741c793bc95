//! Load for the soak: clients that keep their connection (GET requests back to back on one
//! connection, as an Elasticsearch client's pool does) and clients that open a new connection
//! per request (`Connection: close`). Every request is recorded: when its connection opened, when
//! it started and ended, which node answered, or why none did.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

use crate::common::SOON;
use crate::common::keepalive::{Broken, KeepAlive};
use crate::common::net::http_get;

/// A request that takes longer than this is stuck.
pub const CLIENT_TIMEOUT: Duration = SOON;

/// How a client uses connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    KeepAlive,
    Churn,
}

/// One request.
#[derive(Debug, Clone)]
pub struct Record {
    pub kind: Kind,
    /// When the connection it went on was opened (its start, for a new connection).
    pub opened: Instant,
    pub started: Instant,
    pub ended: Instant,
    /// The node that answered, or why no complete answer came (boxed: a soak keeps hundreds
    /// of thousands of these, and failures are rare).
    pub outcome: Result<Arc<str>, Box<Failure>>,
}

/// Why a request got no complete answer.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The node the connection was on, when the client knew it (an earlier answer on it).
    pub node: Option<Arc<str>>,
    pub why: String,
    /// No answer within [`CLIENT_TIMEOUT`].
    pub stuck: bool,
}

/// What one client did.
#[derive(Debug, Default)]
pub struct ClientLog {
    pub records: Vec<Record>,
    /// Connections the client opened.
    pub connections: u64,
    /// Pooled connections the client found closed by the other side before reusing them.
    pub found_closed: u64,
}

/// Clients running against one address until [`Load::stop`].
pub struct Load {
    stop: Arc<AtomicBool>,
    clients: Vec<JoinHandle<ClientLog>>,
}

impl Load {
    /// Starts `keep_alive` clients of the first kind and `churn` of the second, all on `path`
    /// (an answer with a JSON `name`).
    pub fn start(addr: SocketAddr, path: &'static str, keep_alive: usize, churn: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let mut clients = Vec::new();
        for _ in 0..keep_alive {
            clients.push(tokio::spawn(keep_alive_client(addr, path, stop.clone())));
        }
        for _ in 0..churn {
            clients.push(tokio::spawn(churn_client(addr, path, stop.clone())));
        }
        Load { stop, clients }
    }

    /// Stops the clients after their current request; returns what each did. A client that
    /// does not stop within [`CLIENT_TIMEOUT`] after its last request fails the test.
    pub async fn stop(self) -> Vec<ClientLog> {
        self.stop.store(true, Ordering::Relaxed);
        let mut logs = Vec::new();
        for c in self.clients {
            let log = timeout(CLIENT_TIMEOUT * 2, c)
                .await
                .expect("a client stuck past its timeout")
                .expect("a client panicked");
            logs.push(log);
        }
        logs
    }
}

/// A connection in a keep-alive client's pool: when it opened, the node its answers came from.
struct Pooled {
    conn: KeepAlive,
    opened: Instant,
    node: Option<Arc<str>>,
}

/// The names of the nodes a client has seen, each allocated once.
#[derive(Default)]
struct Names(Vec<Arc<str>>);

impl Names {
    /// The answer with its node's name shared, the failure boxed.
    fn record(&mut self, outcome: Result<String, Failure>) -> Result<Arc<str>, Box<Failure>> {
        let name = outcome.map_err(Box::new)?;
        if let Some(n) = self.0.iter().find(|n| ***n == *name) {
            return Ok(n.clone());
        }
        self.0.push(name.into());
        Ok(self.0.last().expect("just pushed").clone())
    }
}

async fn keep_alive_client(addr: SocketAddr, path: &str, stop: Arc<AtomicBool>) -> ClientLog {
    let mut log = ClientLog::default();
    let mut names = Names::default();
    let mut pooled: Option<Pooled> = None;
    while !stop.load(Ordering::Relaxed) {
        if pooled.as_ref().is_some_and(|p| p.conn.dropped()) {
            log.found_closed += 1;
            pooled = None;
        }
        let started = Instant::now();
        if pooled.is_none() {
            match timeout(CLIENT_TIMEOUT, KeepAlive::try_connect(addr)).await {
                Ok(Ok(conn)) => {
                    log.connections += 1;
                    pooled = Some(Pooled {
                        conn,
                        opened: started,
                        node: None,
                    });
                }
                Ok(Err(e)) => {
                    log.records
                        .push(failed(Kind::KeepAlive, started, e.to_string()));
                    continue;
                }
                Err(_) => {
                    log.records.push(stuck(Kind::KeepAlive, started, "connect"));
                    continue;
                }
            }
        }
        let p = pooled.as_mut().expect("connected above");
        let outcome = match timeout(CLIENT_TIMEOUT, p.conn.try_get(path)).await {
            Err(_) => Err(stuck_failure(p.node.clone(), "answer")),
            Ok(Err(broken)) => Err(Failure {
                node: p.node.clone(),
                stuck: matches!(broken, Broken::Silent { .. }),
                why: describe(&broken),
            }),
            Ok(Ok(r)) if r.status != 200 => Err(Failure {
                node: p.node.clone(),
                why: format!("status {}", r.status),
                stuck: false,
            }),
            Ok(Ok(r)) => r.try_name().ok_or_else(|| Failure {
                node: p.node.clone(),
                why: format!("no name in {:?}", String::from_utf8_lossy(&r.body)),
                stuck: false,
            }),
        };
        let outcome = names.record(outcome);
        let failed = outcome.is_err();
        if let Ok(name) = &outcome {
            p.node = Some(name.clone());
        }
        log.records.push(Record {
            kind: Kind::KeepAlive,
            opened: p.opened,
            started,
            ended: Instant::now(),
            outcome,
        });
        if failed {
            pooled = None;
        }
    }
    log
}

async fn churn_client(addr: SocketAddr, path: &str, stop: Arc<AtomicBool>) -> ClientLog {
    let mut log = ClientLog::default();
    let mut names = Names::default();
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        log.connections += 1;
        let outcome = match timeout(CLIENT_TIMEOUT, http_get(addr, path)).await {
            Err(_) => Err(stuck_failure(None, "answer")),
            Ok(Err(e)) => Err(Failure {
                node: None,
                why: e.to_string(),
                stuck: false,
            }),
            Ok(Ok((200, body))) => serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["name"].as_str().map(str::to_owned))
                .ok_or_else(|| Failure {
                    node: None,
                    why: format!("no name in {body:?}"),
                    stuck: false,
                }),
            Ok(Ok((code, _))) => Err(Failure {
                node: None,
                why: format!("status {code}"),
                stuck: false,
            }),
        };
        log.records.push(Record {
            kind: Kind::Churn,
            opened: started,
            started,
            ended: Instant::now(),
            outcome: names.record(outcome),
        });
    }
    log
}

fn describe(broken: &Broken) -> String {
    match broken {
        Broken::Closed { had } if had.is_empty() => "closed before any byte of the answer".into(),
        Broken::Closed { had } => format!("closed after {} bytes of the answer", had.len()),
        other => other.to_string(),
    }
}

fn stuck_failure(node: Option<Arc<str>>, waiting_for: &str) -> Failure {
    Failure {
        node,
        why: format!("no {waiting_for} within {CLIENT_TIMEOUT:?}"),
        stuck: true,
    }
}

/// A request that failed before it had a connection.
fn failed(kind: Kind, started: Instant, why: String) -> Record {
    Record {
        kind,
        opened: started,
        started,
        ended: Instant::now(),
        outcome: Err(Box::new(Failure {
            node: None,
            why: format!("connect: {why}"),
            stuck: false,
        })),
    }
}

fn stuck(kind: Kind, started: Instant, waiting_for: &str) -> Record {
    Record {
        kind,
        opened: started,
        started,
        ended: Instant::now(),
        outcome: Err(Box::new(stuck_failure(None, waiting_for))),
    }
}
