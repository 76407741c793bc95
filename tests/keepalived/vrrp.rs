//! Debian's keepalived, run in the foreground inside a namespace with its own pid files and the
//! project's conf/keepalived/keepalived.conf.

use std::process::Stdio;

use tokio::process::{Child, Command};

use crate::common::process::Lines;

const KEEPALIVED: &str = "/usr/sbin/keepalived";

/// The shipped keepalived.conf with the test's virtual address in place of the example's.
pub fn config(virtual_address: &str) -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/conf/keepalived/keepalived.conf"
    );
    let text = std::fs::read_to_string(path).expect("read conf/keepalived/keepalived.conf");
    // the example address: if the file stops naming it, this test would run something else
    assert!(
        text.contains("10.0.0.100/24 dev eth0"),
        "keepalived.conf no longer has the example virtual address 10.0.0.100/24 on eth0"
    );
    text.replace("10.0.0.100", virtual_address)
}

/// A running keepalived (parent and VRRP child); killed when dropped, with the namespace.
pub struct Keepalived {
    child: Child,
    /// What it logs (`-l`: to stderr).
    pub log: Lines,
    _dir: tempfile::TempDir,
}

impl Keepalived {
    /// Starts keepalived in namespace `ns` as balancer `id` (`@id` lines of the file apply).
    pub fn start(ns: &str, id: &str, conf: &str) -> Keepalived {
        assert!(
            std::path::Path::new(KEEPALIVED).exists(),
            "{KEEPALIVED} is missing: apt-get install keepalived"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("keepalived.conf");
        std::fs::write(&file, conf).expect("write keepalived.conf");
        let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, KEEPALIVED])
            // foreground, log to the console in detail and not to syslog, VRRP only
            .args([
                "--dont-fork",
                "--log-console",
                "--log-detail",
                "--no-syslog",
                "--vrrp",
            ])
            .args(["--config-id", id, "--use-file", &path("keepalived.conf")])
            .args([
                "--pid",
                &path("keepalived.pid"),
                "--vrrp_pid",
                &path("vrrp.pid"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start keepalived");
        let log = Lines::capture(child.stderr.take().expect("piped stderr"));
        Keepalived {
            child,
            log,
            _dir: dir,
        }
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}
