//! `roundhouse demo`: three stand-in Elasticsearch nodes on loopback with a balancer in front,
//! and a script that makes nodes fail and recover, so a newcomer can watch roundhouse work with
//! no cluster at hand.

mod answers;
mod node;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use answers::{Behaviour, Mode, Peer, node_id};
pub use node::{FakeNode, Security, refused_address};

use crate::config::ClusterStatus;
use crate::runtime::{self, RunError, StartupError};

/// Where the demo listens.
pub struct DemoOptions {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
}

/// Runs the demo until Ctrl-C.
pub fn run(opts: DemoOptions) -> Result<(), RunError> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("demo-nodes".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(io_error("cannot start the demo nodes' event loop", e)));
                    return;
                }
            };
            rt.block_on(async move {
                let mut nodes = Vec::new();
                for name in ["es-1", "es-2", "es-3"] {
                    match FakeNode::start(name, "demo").await {
                        Ok(n) => nodes.push(n),
                        Err(e) => {
                            let _ = tx
                                .send(Err(io_error(&format!("cannot start demo node {name}"), e)));
                            return;
                        }
                    }
                }
                let _ = tx.send(Ok(nodes.iter().map(|n| n.addr()).collect::<Vec<_>>()));
                script(&nodes).await;
            });
        })
        .map_err(|e| io_error("cannot start the demo nodes", e))?;
    let addrs = rx.recv().map_err(|_| {
        io_error(
            "the demo nodes did not start",
            std::io::Error::other("their thread ended"),
        )
    })??;
    let opts = DemoOptions {
        listen: concrete(opts.listen)?,
        admin: concrete(opts.admin)?,
    };
    let path = write_config(&opts, &addrs)?;
    println!(
        "roundhouse demo: three stand-in Elasticsearch nodes ({}) behind a balancer.\n\
         \n  curl http://{listen}/                     # each request lands on the next node: see \"name\"\n\
         \n  curl http://{listen}/_cluster/health\n\
         \n  roundhouse status --admin {admin}        # every node: state, reason, connections\n\
         \n  curl http://{admin}/metrics              # Prometheus metrics\n\
         \nThe config is {config}: edit it and send SIGHUP (kill -HUP {pid}) to reload.\n\
         Every 15 seconds the demo breaks a node in a way a real cluster does (red cluster, a node\n\
         stuck in discovery, a node isolated from its cluster) and then heals it: watch the log.\n\
         Ctrl-C stops.\n",
        addrs
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        listen = opts.listen,
        admin = opts.admin,
        config = path.display(),
        pid = std::process::id(),
    );
    let result = runtime::run(&path);
    if let Some(dir) = path.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
    result
}

/// Port 0 means "any free port": pick one now, so the banner can say which.
fn concrete(addr: SocketAddr) -> Result<SocketAddr, RunError> {
    if addr.port() != 0 {
        return Ok(addr);
    }
    std::net::TcpListener::bind(addr)
        .and_then(|l| l.local_addr())
        .map_err(|e| io_error(&format!("cannot find a free port on {}", addr.ip()), e))
}

fn write_config(opts: &DemoOptions, addrs: &[SocketAddr]) -> Result<PathBuf, RunError> {
    let dir = std::env::temp_dir().join(format!("roundhouse-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| io_error(&format!("cannot create {}", dir.display()), e))?;
    let path = dir.join("roundhouse.yaml");
    let servers: String = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("      - {{ name: es-{}, address: \"{a}\" }}\n", i + 1))
        .collect();
    let text = format!(
        "# Written by `roundhouse demo`.\n\
         enabled: true\n\
         admin:\n  bind: \"{admin}\"\n\
         listeners:\n  - name: es\n    bind: \"{listen}\"\n    backend: es\n\
         backends:\n  - name: es\n    servers:\n{servers}\
         \x20   health_check:\n      type: elasticsearch\n      interval: 1s\n      timeout: 500ms\n      rise: 2\n      fall: 2\n      cluster_name: demo\n      min_nodes: 2\n",
        admin = opts.admin,
        listen = opts.listen,
    );
    std::fs::write(&path, text)
        .map_err(|e| io_error(&format!("cannot write {}", path.display()), e))?;
    Ok(path)
}

/// Breaks and heals nodes in turn, forever.
async fn script(nodes: &[FakeNode]) {
    let step = Duration::from_secs(15);
    type Change = (usize, &'static str, fn(&mut Behaviour));
    let scenes: [Change; 6] = [
        (1, "es-2 now reports cluster status red", |b| {
            b.status = ClusterStatus::Red
        }),
        (1, "es-2 is green again", |b| {
            b.status = ClusterStatus::Green
        }),
        (
            2,
            "es-3 is stuck in discovery: it no longer answers health checks",
            |b| b.mode = Mode::Hang,
        ),
        (2, "es-3 answers again", |b| b.mode = Mode::Normal),
        (
            0,
            "es-1 lost its cluster and sees only itself (1 node)",
            |b| b.number_of_nodes = 1,
        ),
        (0, "es-1 rejoined its cluster", |b| b.number_of_nodes = 3),
    ];
    loop {
        for (node, what, change) in scenes {
            tokio::time::sleep(step).await;
            println!("[demo] {what}");
            nodes[node].set(change);
        }
    }
}

/// A failure of the system underneath the demo, saying what was being done.
fn io_error(what: &str, source: std::io::Error) -> RunError {
    StartupError::Io {
        what: what.to_owned(),
        source,
    }
    .into()
}
