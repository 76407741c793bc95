//! Network namespaces the test builds and always removes: one holding a bridge, and one per host
//! with a veth pair into it. Addresses exist only inside these namespaces (10.231.0.0/24), so
//! nothing on the machine running the test changes.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The namespaces of one test; removed when dropped, also when the test panics.
pub struct Lab {
    /// Unique per run and per test: `rhka-PID-N`.
    prefix: String,
    /// Every namespace created so far, the bridge's first.
    created: Vec<String>,
}

impl Lab {
    /// A bridge in its own namespace and one namespace per `(host, addresses)`, each with `eth0`
    /// on the bridge carrying those addresses (a /24 each) and `lo` up.
    pub fn build(hosts: &[(&str, &[&str])]) -> Lab {
        remove_leftovers();
        static RUNS: AtomicUsize = AtomicUsize::new(0);
        let n = RUNS.fetch_add(1, Ordering::Relaxed);
        let mut lab = Lab {
            prefix: format!("rhka-{}-{n}", std::process::id()),
            created: Vec::new(),
        };
        let bridge = lab.add("bridge");
        ip(&["-n", &bridge, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &bridge, "link", "set", "br0", "up"]);
        for (host, addresses) in hosts {
            let ns = lab.add(host);
            // the bridge's end is named after the host, the host's end is eth0
            ip(&[
                "-n", &bridge, "link", "add", host, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ]);
            ip(&["-n", &bridge, "link", "set", host, "master", "br0", "up"]);
            for a in *addresses {
                ip(&["-n", &ns, "addr", "add", &format!("{a}/24"), "dev", "eth0"]);
            }
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        }
        lab
    }

    /// The namespace's full name for a host.
    pub fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    fn add(&mut self, host: &str) -> String {
        let ns = self.ns(host);
        ip(&["netns", "add", &ns]);
        self.created.push(ns.clone());
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ns
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.created.iter().rev() {
            remove(ns);
        }
    }
}

/// Removes a namespace of this test. Whatever still runs in it was started by this test
/// (roundhouse, keepalived and their children), and a namespace lives on while a process holds
/// it, so those processes are killed first.
fn remove(ns: &str) {
    let pids = Command::new("ip").args(["netns", "pids", ns]).output();
    if let Ok(out) = pids {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>()
                && pid != std::process::id() as i32
            {
                // SAFETY: kill has no memory effects; the pid runs in our namespace.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
    let _ = Command::new("ip").args(["netns", "del", ns]).status();
}

/// Removes the namespaces of an earlier run that could not clean up (it was killed): those named
/// `rhka-PID-…` whose PID no longer runs.
fn remove_leftovers() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(pid) = name.strip_prefix("rhka-").and_then(|r| r.split('-').next()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            remove(name);
        }
    }
}

/// Runs `ip ARGS`; panics with its stderr if it fails.
pub fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether `address` is on `eth0` in this namespace now.
pub fn holds(ns: &str, address: &str) -> bool {
    ip(&["-n", ns, "-4", "-o", "addr", "show", "dev", "eth0"]).contains(&format!("inet {address}/"))
}

/// Moves the calling thread into the namespace: the sockets it creates from now on live there
/// (a network namespace belongs to a thread, not to the process).
pub fn enter(ns: &str) {
    let file = File::open(format!("/run/netns/{ns}")).expect("open the namespace");
    // SAFETY: setns only reads the descriptor, which stays open for the call.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {ns}: {}", std::io::Error::last_os_error());
}
