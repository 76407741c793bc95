//! The real `roundhouse` binary as a child process: its config in a temp dir, its stderr
//! captured line by line, and a notify socket standing in for systemd so tests can await
//! `READY=1` and read `STATUS=` exactly as systemd would.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::net::UnixDatagram;
use tokio::process::{Child, Command};
use tokio::sync::Notify;

pub const BIN: &str = env!("CARGO_BIN_EXE_roundhouse");

/// Lines a child wrote to stderr, shared with the thread that reads them.
#[derive(Clone, Default)]
pub struct Lines {
    lines: Arc<Mutex<Vec<String>>>,
    added: Arc<Notify>,
}

impl Lines {
    fn push(&self, line: String) {
        self.lines.lock().unwrap().push(line);
        self.added.notify_waiters();
    }

    pub fn all(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    pub fn text(&self) -> String {
        self.all().join("\n")
    }

    /// Waits for a line containing every needle; returns it.
    pub async fn wait_for(&self, needles: &[&str], timeout: Duration) -> String {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let added = self.added.notified();
            tokio::pin!(added);
            added.as_mut().enable();
            if let Some(l) = self
                .all()
                .into_iter()
                .find(|l| needles.iter().all(|n| l.contains(n)))
            {
                return l;
            }
            if tokio::time::timeout_at(deadline, added).await.is_err() {
                panic!(
                    "no line with {needles:?} within {timeout:?}; stderr was:\n{}",
                    self.text()
                );
            }
        }
    }

    /// Waits until at least `n` lines contain the needle.
    pub async fn wait_count(&self, needle: &str, n: usize, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let added = self.added.notified();
            tokio::pin!(added);
            added.as_mut().enable();
            if self.count(needle) >= n {
                return;
            }
            if tokio::time::timeout_at(deadline, added).await.is_err() {
                panic!(
                    "fewer than {n} lines with {needle:?} within {timeout:?}; stderr was:\n{}",
                    self.text()
                );
            }
        }
    }

    /// How many lines contain the needle.
    pub fn count(&self, needle: &str) -> usize {
        self.all().iter().filter(|l| l.contains(needle)).count()
    }

    pub fn capture(stream: impl AsyncRead + Unpin + Send + 'static) -> Lines {
        let lines = Lines::default();
        let l = lines.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stream).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                l.push(line);
            }
        });
        lines
    }
}

/// A notify socket that records every datagram, like systemd's: a task reads it all the time,
/// so roundhouse never waits for room in it and no message is lost however slowly a test looks.
pub struct NotifySocket {
    pub path: PathBuf,
    received: Arc<Mutex<Vec<String>>>,
    added: Arc<Notify>,
    /// Messages before this one are forgotten (see [`NotifySocket::clear`]).
    from: usize,
    /// Messages before this one have been looked at: up to the last one a wait returned.
    seen: usize,
}

impl NotifySocket {
    pub fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind notify socket");
        let received = Arc::new(Mutex::new(Vec::new()));
        let added = Arc::new(Notify::new());
        let (r, a) = (received.clone(), added.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf).await {
                r.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                a.notify_waiters();
            }
        });
        NotifySocket {
            path,
            received,
            added,
            from: 0,
            seen: 0,
        }
    }

    /// The messages received since the last [`NotifySocket::clear`], in order.
    pub fn messages(&self) -> Vec<String> {
        self.received.lock().unwrap()[self.from..].to_vec()
    }

    /// Forgets the messages a wait has looked at: from now on only the messages after the last
    /// one a wait returned count (as with systemd's queue, what the test has not read yet is
    /// still there to be read).
    pub fn clear(&mut self) {
        self.from = self.seen;
    }

    /// Counts every message received so far as looked at: a [`NotifySocket::clear`] after it
    /// forgets them all.
    pub fn drain(&mut self) {
        self.seen = self.received.lock().unwrap().len();
    }

    /// Waits for a message containing every needle (messages since the last clear count too).
    pub async fn wait_for(&mut self, needles: &[&str], timeout: Duration) -> String {
        let found = |m: &String| needles.iter().all(|n| m.contains(n));
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let added = self.added.notified();
            tokio::pin!(added);
            added.as_mut().enable();
            let found_at = self.messages().into_iter().position(|m| found(&m));
            if let Some(i) = found_at {
                self.seen = self.seen.max(self.from + i + 1);
                return self.messages().swap_remove(i);
            }
            if tokio::time::timeout_at(deadline, added).await.is_err() {
                panic!(
                    "no notify message with {needles:?} within {timeout:?}; got {:#?} (all: {:#?}, from {})",
                    self.messages(),
                    self.received.lock().unwrap(),
                    self.from
                );
            }
        }
    }

    /// Waits for the next message with a STATUS= line containing every needle; returns the
    /// status text. Only messages that arrive from now on count.
    pub async fn wait_status(&mut self, needles: &[&str], timeout: Duration) -> String {
        self.clear();
        self.wait_for_status(needles, timeout).await
    }

    /// Like `wait_status`, but an earlier message counts too.
    pub async fn wait_for_status(&mut self, needles: &[&str], timeout: Duration) -> String {
        let mut all = vec!["STATUS="];
        all.extend_from_slice(needles);
        let m = self.wait_for(&all, timeout).await;
        status_of(&m).to_owned()
    }

    /// The last STATUS= seen.
    pub fn last_status(&self) -> Option<String> {
        self.messages().iter().rev().find_map(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("STATUS="))
                .map(str::to_owned)
        })
    }
}

fn status_of(message: &str) -> &str {
    message
        .lines()
        .find_map(|l| l.strip_prefix("STATUS="))
        .unwrap_or("")
}

/// A running `roundhouse run`; killed when dropped.
pub struct Roundhouse {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub notify: NotifySocket,
    pub stderr: Lines,
}

impl Roundhouse {
    /// Starts `roundhouse run` with this config text, without waiting.
    pub fn spawn(yaml: &str) -> Roundhouse {
        Self::spawn_with(yaml, &[])
    }

    /// Like `spawn`, with extra environment variables.
    pub fn spawn_with(yaml: &str, env: &[(&str, &str)]) -> Roundhouse {
        Self::spawn_command(&["run", "--config", "@CONFIG@"], yaml, env)
    }

    /// Starts `roundhouse ARGS` (`@CONFIG@` in ARGS is the config file's path) without waiting.
    pub fn spawn_command(args: &[&str], yaml: &str, env: &[(&str, &str)]) -> Roundhouse {
        Self::spawn_wrapped(&[], args, yaml, env)
    }

    /// Like `spawn_command`, through a wrapper that execs it (`ip netns exec NS`), so the
    /// process and its pid are still roundhouse's.
    pub fn spawn_wrapped(
        wrapper: &[&str],
        args: &[&str],
        yaml: &str,
        env: &[(&str, &str)],
    ) -> Roundhouse {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("roundhouse.yaml");
        std::fs::write(&config, yaml).expect("write config");
        let notify = NotifySocket::bind(dir.path());
        let mut cmd = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut cmd = Command::new(program);
                cmd.args(rest).arg(BIN);
                cmd
            }
            None => Command::new(BIN),
        };
        for a in args {
            match *a {
                "@CONFIG@" => cmd.arg(&config),
                a => cmd.arg(a),
            };
        }
        cmd.env("NOTIFY_SOCKET", &notify.path)
            .env("RUST_LOG", "info")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start roundhouse");
        let stderr = Lines::capture(child.stderr.take().expect("piped stderr"));
        Roundhouse {
            child,
            dir,
            config,
            notify,
            stderr,
        }
    }

    /// Starts `roundhouse run` and waits for `READY=1`.
    pub async fn start(yaml: &str) -> Roundhouse {
        let mut rh = Self::spawn(yaml);
        rh.ready().await;
        rh
    }

    /// Waits for `READY=1`; fails at once if the process exits first.
    pub async fn ready(&mut self) -> String {
        let stderr = self.stderr.clone();
        tokio::select! {
            m = self.notify.wait_for(&["READY=1"], Duration::from_secs(15)) => m,
            status = self.child.wait() => panic!(
                "roundhouse exited ({status:?}) before READY=1; stderr:\n{}",
                stderr.text()
            ),
        }
    }

    /// The address the named listener actually bound.
    pub async fn listener(&self, name: &str) -> SocketAddr {
        let line = self
            .stderr
            .wait_for(
                &["listening", &format!("listener={name} ")],
                Duration::from_secs(5),
            )
            .await;
        field(&line, "addr")
            .parse()
            .expect("listening line has addr")
    }

    /// The address the admin endpoint actually bound.
    pub async fn admin(&self) -> SocketAddr {
        let line = self
            .stderr
            .wait_for(&["admin endpoint listening"], Duration::from_secs(5))
            .await;
        field(&line, "addr").parse().expect("admin line has addr")
    }

    /// Replaces the config file (for a reload).
    pub fn write_config(&self, yaml: &str) {
        std::fs::write(&self.config, yaml).expect("write config");
    }

    /// Writes a new config file, sends SIGHUP and waits for the reload to finish (systemd's
    /// `RELOADING=1` ... `READY=1`, in that order); returns the `READY=1` message.
    pub async fn reload(&mut self, yaml: &str) -> String {
        self.write_config(yaml);
        self.notify.clear();
        self.signal(libc::SIGHUP);
        self.notify
            .wait_for(&["RELOADING=1", "MONOTONIC_USEC="], Duration::from_secs(5))
            .await;
        let ready = self
            .notify
            .wait_for(&["READY=1"], Duration::from_secs(5))
            .await;
        let messages = self.notify.messages();
        let position = |needle: &str| messages.iter().position(|m| m.contains(needle));
        assert!(
            position("RELOADING=1") < position("READY=1"),
            "RELOADING=1 comes before READY=1: {messages:?}"
        );
        ready
    }

    /// Returns once every line the process logged before now has been read: reloads the same
    /// file again (which changes nothing) and waits for the line that reload logs last.
    pub async fn log_barrier(&mut self) {
        let text = std::fs::read_to_string(&self.config).expect("read config");
        let before = self.stderr.count("configuration reloaded");
        self.reload(&text).await;
        self.stderr
            .wait_count("configuration reloaded", before + 1, Duration::from_secs(5))
            .await;
    }

    /// The process id.
    pub fn pid(&self) -> i32 {
        self.child.id().expect("roundhouse is running") as i32
    }

    /// Sends a signal to the process.
    pub fn signal(&self, sig: i32) {
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// Waits for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => status.expect("wait for roundhouse"),
            Err(_) => panic!(
                "roundhouse did not exit within {timeout:?}; stderr:\n{}",
                self.stderr.text()
            ),
        }
    }
}

/// The value of `key=value` in a log line (quotes removed).
pub fn field(line: &str, key: &str) -> String {
    let start = line
        .find(&format!(" {key}="))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
        + key.len()
        + 2;
    let rest = &line[start..];
    if let Some(quoted) = rest.strip_prefix('"') {
        quoted.split('"').next().unwrap_or("").to_owned()
    } else {
        rest.split(' ').next().unwrap_or("").to_owned()
    }
}

/// Runs a `roundhouse` subcommand to completion; returns (exit code, stdout, stderr).
pub fn run_cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(args)
        .env_remove("JOURNAL_STREAM")
        .env_remove("NOTIFY_SOCKET");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run roundhouse");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A failing test shows what roundhouse logged: most failures are explained there.
impl Drop for Roundhouse {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- roundhouse stderr ---\n{}", self.stderr.text());
        }
    }
}
