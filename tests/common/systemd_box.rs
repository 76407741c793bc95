//! The systemd box (`tests/fixtures/systemd-box/run-unit`): Debian bookworm booted in
//! systemd-nspawn with files copied in, and a probe script run inside as root. Needs root.

use std::path::{Path, PathBuf};
use std::process::Command;

pub const RUN_UNIT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/systemd-box/run-unit"
);

/// What a probe printed, and the container's journal.
pub struct Probe {
    pub output: String,
    pub journal: String,
}

impl Probe {
    /// The value of a `key=value` line the probe printed (the last one if several).
    pub fn value(&self, key: &str) -> String {
        self.output
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("the probe printed no {key}=; output:\n{}", self.output))
            .to_owned()
    }

    /// A `key=seconds` line the probe printed, as a number.
    pub fn seconds(&self, key: &str) -> f64 {
        let v = self.value(key);
        v.parse().unwrap_or_else(|_| {
            panic!(
                "{key}={v} is not a number of seconds; output:\n{}",
                self.output
            )
        })
    }

    /// The lines the probe printed with `prefix| ` in front, without it.
    pub fn lines(&self, prefix: &str) -> Vec<&str> {
        let prefix = format!("{prefix}| ");
        self.output
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .collect()
    }
}

/// Shell helpers available to every probe.
pub const PROBE_HELPERS: &str = r#"
show() { systemctl show -p "$1" --value roundhouse; }
# waits (up to 10s) until the unit's StatusText contains $1
await_status() { for _ in $(seq 100); do [[ "$(show StatusText)" == *"$1"* ]] && return 0; sleep 0.1; done; return 1; }
# waits (up to 30s) until the unit is active again, as a process other than $1, with a StatusText
# containing $2: "recovered" as an operator would see it. The new process is asked for first: the
# old one is still "active" until systemd notices its end, and keeps its StatusText until restart.
await_recovered() {
  for _ in $(seq 300); do
    local pid; pid=$(show MainPID)
    [[ $pid != 0 && $pid != "$1" && "$(show ActiveState)" == active && "$(show StatusText)" == *"$2"* ]] && return 0
    sleep 0.1
  done
  return 1
}
# waits (up to 30s) until the unit has failed with its main process' exit status $1
await_failed() {
  for _ in $(seq 300); do
    [[ "$(show ActiveState)" == failed && "$(show ExecMainStatus)" == "$1" ]] && return 0
    sleep 0.1
  done
  return 1
}
# the wall clock in nanoseconds; nanoseconds as seconds (to the millisecond); the seconds since $1
now() { date +%s%N; }
secs() { printf '%d.%03d' $(($1 / 1000000000)) $(($1 / 1000000 % 1000)); }
since() { secs $(($(now) - $1)); }
"#;

/// Boots the box with `files` (a file here, its path inside) copied in, and runs `script`
/// (bash, after [`PROBE_HELPERS`]) inside it once the box has reached multi-user.target.
pub async fn boot(files: &[(PathBuf, String)], script: &str) -> Probe {
    boot_with(&[], files, script).await
}

/// Like [`boot`], with this build's binary and `systemd/roundhouse.service` installed as they
/// would be by hand (the unit tests; the package tests install the package instead).
pub async fn boot_built(files: &[(PathBuf, String)], script: &str) -> Probe {
    let unit = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/roundhouse.service");
    let args = ["--binary", crate::common::process::BIN, "--unit", unit];
    boot_with(&args, files, script).await
}

async fn boot_with(args: &[&str], files: &[(PathBuf, String)], script: &str) -> Probe {
    let dir = tempfile::tempdir().unwrap();
    let probe = dir.path().join("probe.sh");
    std::fs::write(&probe, format!("#!/bin/bash\n{PROBE_HELPERS}\n{script}\n")).unwrap();
    let out = dir.path().join("out");
    let (files, out2) = (files.to_vec(), out.clone());
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let result = tokio::task::spawn_blocking(move || run_unit(&args, &files, &probe, &out2))
        .await
        .unwrap();
    let journal = std::fs::read_to_string(out.join("journal.txt")).unwrap_or_default();
    let output = result.unwrap_or_else(|e| panic!("run-unit failed: {e}\njournal:\n{journal}"));
    Probe { output, journal }
}

fn run_unit(
    args: &[String],
    files: &[(PathBuf, String)],
    probe: &Path,
    out: &Path,
) -> Result<String, String> {
    std::fs::create_dir_all(out).unwrap();
    let mut cmd = Command::new(RUN_UNIT);
    cmd.args(args);
    for (src, dest) in files {
        cmd.arg("--file").arg(format!("{}:{dest}", src.display()));
    }
    let o = cmd
        .arg("--probe")
        .arg(probe)
        .arg("--out")
        .arg(out)
        .output()
        .map_err(|e| format!("cannot run {RUN_UNIT}: {e}"))?;
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    if !o.status.success() {
        return Err(format!(
            "{}\nstdout:\n{stdout}\nstderr:\n{}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    Ok(stdout)
}
