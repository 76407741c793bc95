//! The two hosts besides the balancers: `client`, a loop of requests against the virtual address,
//! each on a new connection, every outcome kept with its time; and `es`, the stand-in
//! Elasticsearch nodes. Each runs on a thread of its own that has entered the host's namespace.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use roundhouse::demo::FakeNode;

use crate::netns;

/// A new connection that gets no answer in this long counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const READ_TIMEOUT: Duration = Duration::from_secs(1);
/// Between two requests: about 50 a second, enough to see a failover to the tenth of a second.
const PACE: Duration = Duration::from_millis(20);

/// One request: when it started and why it failed, if it did.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub at: Instant,
    pub failure: Option<String>,
}

/// The request loop; stops when dropped.
pub struct Client {
    stop: Arc<AtomicBool>,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    thread: Option<JoinHandle<()>>,
}

impl Client {
    /// Starts `GET /` against `target` in a loop from namespace `ns`.
    pub fn start(ns: &str, target: SocketAddr) -> Client {
        let stop = Arc::new(AtomicBool::new(false));
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let (s, o, ns) = (stop.clone(), outcomes.clone(), ns.to_owned());
        let thread = std::thread::spawn(move || {
            netns::enter(&ns);
            while !s.load(Ordering::Relaxed) {
                let at = Instant::now();
                let failure = request(target).err();
                o.lock().unwrap().push(Outcome { at, failure });
                std::thread::sleep(PACE);
            }
        });
        Client {
            stop,
            outcomes,
            thread: Some(thread),
        }
    }

    /// Every outcome so far.
    pub fn outcomes(&self) -> Vec<Outcome> {
        self.outcomes.lock().unwrap().clone()
    }

    /// Waits until `n` requests in a row have succeeded (the client is served), or panics.
    pub async fn served(&self, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let outcomes = self.outcomes();
            let tail = outcomes.iter().rev().take_while(|o| o.failure.is_none());
            if tail.count() >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the client was not served within {timeout:?}; last outcomes: {:?}",
                &outcomes[outcomes.len().saturating_sub(5)..]
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `GET /` on a new connection; Ok if the answer is a 200.
fn request(target: SocketAddr) -> Result<(), String> {
    let mut s = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT)
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(READ_TIMEOUT))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: es\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)
        .map_err(|e| format!("read: {e}"))?;
    if answer.starts_with(b"HTTP/1.1 200") {
        Ok(())
    } else {
        Err(format!(
            "answer: {:?}",
            String::from_utf8_lossy(&answer[..answer.len().min(60)])
        ))
    }
}

/// Stand-in Elasticsearch nodes (the demo's) served from a namespace; stopped when dropped.
pub struct Nodes {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Nodes {
    /// Starts a green node of cluster `prod` at each address, inside namespace `ns`.
    pub fn start(ns: &str, nodes: &[(&str, SocketAddr)]) -> Nodes {
        let (ready_tx, ready) = mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let ns = ns.to_owned();
        let nodes: Vec<(String, SocketAddr)> =
            nodes.iter().map(|(n, a)| (n.to_string(), *a)).collect();
        let thread = std::thread::spawn(move || {
            netns::enter(&ns);
            // a runtime of this thread's own: the listeners are made here, in the namespace
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime for the nodes");
            rt.block_on(async move {
                let mut running = Vec::new();
                for (name, addr) in &nodes {
                    running.push(
                        FakeNode::start_at(name, "prod", *addr)
                            .await
                            .expect("start node"),
                    );
                }
                let _ = ready_tx.send(());
                let _ = stopped.await;
            });
        });
        ready
            .recv_timeout(Duration::from_secs(10))
            .expect("the stand-in nodes started");
        Nodes {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
