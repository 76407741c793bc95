//! The systemd unit under a real systemd: Debian bookworm booted in systemd-nspawn, with the
//! binary, `systemd/roundhouse.service` and a config installed, and a probe script run inside.
//! The fake Elasticsearch nodes run here on the host; the container shares its network.
//!
//! These need root and boot a container (the first run builds its root file system, a few
//! minutes), so they are ignored by a plain `cargo test`. Run them with:
//!
//!     cargo test --test systemd -- --ignored --test-threads=1

mod common;

use common::systemd_box::{Probe, boot_built};
use common::*;
use roundhouse::config::ClusterStatus;

/// Boots the container with `config` installed as /etc/roundhouse/roundhouse.yaml, beside this
/// build's binary and unit, and runs `script` (bash) inside it.
async fn boot(config: &str, script: &str) -> Probe {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("roundhouse.yaml");
    std::fs::write(&cfg, config).unwrap();
    boot_built(&[(cfg, "/etc/roundhouse/roundhouse.yaml".into())], script).await
}

fn config(nodes: &[&FakeNode]) -> String {
    let b = nodes
        .iter()
        .fold(Backend::new("es"), |b, n| b.server(n.name(), n.addr()));
    ConfigBuilder::new()
        .listener_at("es", "127.0.0.1:19280", "es", "")
        .backend(b)
        .yaml()
        .replace("127.0.0.1:0", "127.0.0.1:19281")
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "boots systemd in a container (root): cargo test --test systemd -- --ignored --test-threads=1"]
async fn the_unit_passes_systemd_analyze_verify() {
    let nodes = three_nodes().await;
    let p = boot(
        &config(&[&nodes[0]]),
        "systemd-analyze verify /etc/systemd/system/roundhouse.service 2>&1; echo verify=$?",
    )
    .await;
    assert_eq!(p.value("verify"), "0", "{}", p.output);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "boots systemd in a container (root): cargo test --test systemd -- --ignored --test-threads=1"]
async fn start_reaches_active_with_a_human_status() {
    let nodes = three_nodes().await;
    let p = boot(
        &config(&[&nodes[0], &nodes[1], &nodes[2]]),
        r#"
systemctl start roundhouse; echo start=$?
echo active=$(systemctl is-active roundhouse)
echo status=$(show StatusText)
echo user=$(ps -o user= -p "$(show MainPID)")
echo answer=$(curl -s 127.0.0.1:19280/ | head -c 200)
systemctl status roundhouse --no-pager | sed 's/^/| /'
"#,
    )
    .await;
    assert_eq!(p.value("start"), "0", "{}", p.output);
    assert_eq!(p.value("active"), "active");
    assert_eq!(p.value("status"), "serving 1 listener; es: 3/3 servers up");
    assert_ne!(p.value("user"), "root", "runs as its own unprivileged user");
    assert!(p.value("answer").contains("\"name\":\"es-"), "{}", p.output);
    assert!(
        p.output.contains("| ")
            && p.output
                .contains("Status: \"serving 1 listener; es: 3/3 servers up\""),
        "{}",
        p.output
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "boots systemd in a container (root): cargo test --test systemd -- --ignored --test-threads=1"]
async fn a_refused_config_says_why_and_is_not_restarted() {
    let nodes = three_nodes().await;
    let p = boot(
        &config(&[&nodes[0]]).replace("enabled: true", "enabled: false"),
        r#"
systemctl start roundhouse; echo start=$?
sleep 5   # RestartSec=2: a restart loop would have restarted it twice by now
echo active=$(systemctl is-active roundhouse)
echo restarts=$(show NRestarts)
echo main_status=$(show ExecMainStatus)
echo status=$(show StatusText)
systemctl status roundhouse --no-pager | sed 's/^/| /'
"#,
    )
    .await;
    assert_ne!(p.value("start"), "0");
    assert_eq!(p.value("active"), "failed");
    assert_eq!(p.value("restarts"), "0", "{}", p.journal);
    assert_eq!(p.value("main_status"), "78");
    let why = "refusing to start: /etc/roundhouse/roundhouse.yaml has enabled: false — set enabled: true once it describes your cluster";
    assert_eq!(p.value("status"), why);
    assert!(
        p.output.contains(&format!("Status: \"{why}\"")),
        "{}",
        p.output
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "boots systemd in a container (root): cargo test --test systemd -- --ignored --test-threads=1"]
async fn reload_applies_a_good_file_and_reports_a_bad_one() {
    let nodes = three_nodes().await;
    let two = config(&[&nodes[0], &nodes[1]]);
    let three = config(&[&nodes[0], &nodes[1], &nodes[2]]);
    let bad = three.replace("rise: 2", "rise: 0");
    let p = boot(
        &two,
        &format!(
            r#"
systemctl start roundhouse
echo before=$(show StatusText)
cat > /etc/roundhouse/roundhouse.yaml <<'YAML'
{three}
YAML
systemctl reload roundhouse; echo good_reload=$?
await_status "3/3"; echo after_good=$(show StatusText)
cat > /etc/roundhouse/roundhouse.yaml <<'YAML'
{bad}
YAML
systemctl reload roundhouse; echo bad_reload=$?
echo active=$(systemctl is-active roundhouse)
echo after_bad=$(show StatusText)
# a SIGHUP that bypasses the check is rejected by the process itself, loudly
kill -HUP "$(show MainPID)"
await_status "reload rejected"; echo after_hup=$(show StatusText)
journalctl -u roundhouse --no-pager -p err | sed 's/^/err| /'
"#
        ),
    )
    .await;
    assert_eq!(p.value("before"), "serving 1 listener; es: 2/2 servers up");
    assert_eq!(p.value("good_reload"), "0");
    assert_eq!(
        p.value("after_good"),
        "serving 1 listener; es: 3/3 servers up"
    );
    assert_ne!(
        p.value("bad_reload"),
        "0",
        "systemctl reload fails on a bad file"
    );
    assert_eq!(p.value("active"), "active");
    assert_eq!(
        p.value("after_bad"),
        "serving 1 listener; es: 3/3 servers up"
    );
    let hup = p.value("after_hup");
    assert!(hup.starts_with("reload rejected at "), "{hup}");
    assert!(hup.contains("backends[0].health_check.rise: expected 1 to 100 consecutive checks, got 0; still serving config loaded at"), "{hup}");
    assert!(
        p.output.contains("err| ") && p.output.contains("backends[0].health_check.rise"),
        "errors reach the journal at error priority:\n{}",
        p.output
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "boots systemd in a container (root): cargo test --test systemd -- --ignored --test-threads=1"]
async fn journal_priorities_let_operators_filter_warnings() {
    let nodes = three_nodes().await;
    nodes[2].set(|b| b.status = ClusterStatus::Red);
    let p = boot(
        &config(&[&nodes[0], &nodes[1], &nodes[2]]),
        r#"
systemctl start roundhouse
echo status=$(show StatusText)
journalctl -u roundhouse --no-pager -p warning -o cat | sed 's/^/warn| /'
"#,
    )
    .await;
    assert_eq!(
        p.value("status"),
        "DEGRADED: es: 2/3 servers up (es-3: cluster status red)"
    );
    let warnings: Vec<&str> = p
        .output
        .lines()
        .filter(|l| l.starts_with("warn| "))
        .collect();
    assert!(
        warnings
            .iter()
            .any(|l| l.contains("server is down") && l.contains("cluster status red")),
        "{warnings:?}"
    );
    assert!(
        !warnings.iter().any(|l| l.contains("INFO")),
        "info lines are not warnings: {warnings:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "boots systemd in a container (root): cargo test --test systemd -- --ignored --test-threads=1"]
async fn the_watchdog_is_fed_and_stop_is_clean() {
    let nodes = three_nodes().await;
    let p = boot(
        &config(&[&nodes[0]]),
        r#"
mkdir -p /etc/systemd/system/roundhouse.service.d
printf '[Service]\nWatchdogSec=2s\n' > /etc/systemd/system/roundhouse.service.d/watchdog.conf
systemctl daemon-reload
systemctl start roundhouse
first=$(show WatchdogTimestampMonotonic)
sleep 5
echo fed=$([[ "$(show WatchdogTimestampMonotonic)" != "$first" ]] && echo yes || echo no)
echo active=$(systemctl is-active roundhouse)
echo restarts=$(show NRestarts)
systemctl stop roundhouse; echo stop=$?
echo result=$(show Result)
echo main_status=$(show ExecMainStatus)
journalctl -u roundhouse --no-pager -o cat | sed 's/^/log| /'
"#,
    )
    .await;
    assert_eq!(p.value("fed"), "yes", "{}", p.journal);
    assert_eq!(p.value("active"), "active");
    assert_eq!(p.value("restarts"), "0");
    assert_eq!(p.value("stop"), "0");
    assert_eq!(p.value("result"), "success");
    assert_eq!(p.value("main_status"), "0");
    assert!(
        p.output.contains("all connections finished"),
        "{}",
        p.output
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "boots systemd in a container (root): cargo test --test systemd -- --ignored --test-threads=1"]
async fn workers_are_pinned_under_the_hardened_unit() {
    let nodes = three_nodes().await;
    let p = boot(
        &config(&[&nodes[0]]).replace("workers: 2\n", "workers: auto\npin_workers: true\n"),
        r#"
systemctl start roundhouse
echo active=$(systemctl is-active roundhouse)
echo cpus=$(nproc)
pid=$(show MainPID)
for t in /proc/$pid/task/*; do
  case $(cat $t/comm) in roundhouse-w*) echo "worker| $(cat $t/comm) $(awk '/^Cpus_allowed_list/ { print $2 }' $t/status)";; esac
done
journalctl -u roundhouse --no-pager -o cat | sed 's/^/log| /'
"#,
    )
    .await;
    assert_eq!(p.value("active"), "active", "{}", p.output);
    let workers: Vec<&str> = p
        .output
        .lines()
        .filter_map(|l| l.strip_prefix("worker| "))
        .collect();
    let cpus: usize = p.value("cpus").parse().expect("nproc");
    assert_eq!(workers.len(), cpus, "one worker per CPU: {}", p.output);
    let mut pinned: Vec<&str> = workers
        .iter()
        .filter_map(|w| w.split_once(' ').map(|(_, list)| list))
        .filter(|list| list.parse::<usize>().is_ok())
        .collect();
    pinned.sort();
    pinned.dedup();
    assert_eq!(
        pinned.len(),
        cpus,
        "each worker on a CPU of its own: {}",
        p.output
    );
    assert!(
        p.output.contains("workers pinned, one per CPU"),
        "{}",
        p.output
    );
    assert!(!p.output.contains("worker not pinned"), "{}", p.output);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "boots systemd in a container (root): cargo test --test systemd -- --ignored --test-threads=1"]
async fn a_killed_process_is_restarted_and_serves_again() {
    let nodes = three_nodes().await;
    let p = boot(
        &config(&[&nodes[0]]),
        r#"
systemctl start roundhouse
pid=$(show MainPID)
echo restarts_before=$(show NRestarts)
t0=$(now); kill -9 "$pid"
await_recovered "$pid" "servers up"; echo recovered=$?
echo recovery_s=$(since "$t0")
echo active=$(systemctl is-active roundhouse)
echo status=$(show StatusText)
echo restarts=$(show NRestarts)
echo new_pid=$(( $(show MainPID) != pid && $(show MainPID) != 0 ))
echo answer=$(curl -s 127.0.0.1:19280/ | head -c 200)
journalctl -u roundhouse --no-pager -o cat | sed 's/^/log| /'
"#,
    )
    .await;
    assert_eq!(p.value("recovered"), "0", "{}", p.output);
    let recovery = p.seconds("recovery_s");
    eprintln!("kill -9: active again with its status line after {recovery:.3}s");
    assert!(
        recovery >= 2.0,
        "restarted before RestartSec=2: {recovery}s"
    );
    assert_eq!(p.value("active"), "active");
    assert_eq!(p.value("status"), "serving 1 listener; es: 1/1 servers up");
    assert_eq!(p.value("restarts_before"), "0");
    assert_eq!(p.value("restarts"), "1", "{}", p.output);
    assert_eq!(p.value("new_pid"), "1");
    assert!(
        p.value("answer").contains("\"name\":\"es-1\""),
        "{}",
        p.output
    );
    assert!(
        p.output
            .contains("log| roundhouse.service: Main process exited, code=killed, status=9/KILL"),
        "{}",
        p.output
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "boots systemd in a container (root): cargo test --test systemd -- --ignored --test-threads=1"]
async fn a_hung_process_is_killed_by_the_watchdog_and_restarted() {
    let nodes = three_nodes().await;
    let p = boot(
        &config(&[&nodes[0]]),
        r#"
mkdir -p /etc/systemd/system/roundhouse.service.d
printf '[Service]\nWatchdogSec=3s\n' > /etc/systemd/system/roundhouse.service.d/watchdog.conf
systemctl daemon-reload
systemctl start roundhouse
pid=$(show MainPID); echo pid=$pid
echo restarts_before=$(show NRestarts)
t0=$(now); kill -STOP "$pid"
await_recovered "$pid" "servers up"; echo recovered=$?
echo recovery_s=$(since "$t0")
echo active=$(systemctl is-active roundhouse)
echo status=$(show StatusText)
echo restarts=$(show NRestarts)
echo new_pid=$(( $(show MainPID) != pid && $(show MainPID) != 0 ))
echo answer=$(curl -s 127.0.0.1:19280/ | head -c 200)
# when systemd gave up on the stopped process, by the journal's clock
journalctl --sync
timeout=$(journalctl -u roundhouse -o short-unix --no-pager | awk '/Watchdog timeout/ { sub(/\./, "", $1); print $1 "000"; exit }')
echo detection_s=$( [[ -n $timeout ]] && secs $((timeout - t0)) )
journalctl -u roundhouse --no-pager -o cat | sed 's/^/log| /'
"#,
    )
    .await;
    assert_eq!(p.value("recovered"), "0", "{}", p.output);
    let (detection, recovery) = (p.seconds("detection_s"), p.seconds("recovery_s"));
    eprintln!(
        "SIGSTOP, WatchdogSec=3: watchdog fired after {detection:.3}s, active again with its status line after {recovery:.3}s"
    );
    // The last ping came before the SIGSTOP, so the timeout falls at most 3s after it; the rest
    // is slack for systemd's timer and the journal's clock on a busy machine.
    assert!(detection <= 5.0, "WatchdogSec=3 fired late: {detection}s");
    assert!(
        recovery >= 2.0,
        "restarted before RestartSec=2: {recovery}s"
    );
    assert_eq!(p.value("active"), "active");
    assert_eq!(p.value("status"), "serving 1 listener; es: 1/1 servers up");
    assert_eq!(p.value("restarts_before"), "0");
    assert_eq!(p.value("restarts"), "1", "{}", p.output);
    assert_eq!(p.value("new_pid"), "1");
    assert!(
        p.value("answer").contains("\"name\":\"es-1\""),
        "{}",
        p.output
    );
    for line in [
        "log| roundhouse.service: Watchdog timeout (limit 3s)!".to_owned(),
        format!(
            "log| roundhouse.service: Killing process {} (roundhouse) with signal SIGABRT.",
            p.value("pid")
        ),
        "log| roundhouse.service: Failed with result 'watchdog'.".to_owned(),
    ] {
        assert!(p.output.contains(&line), "no {line:?} in\n{}", p.output);
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "boots systemd in a container (root): cargo test --test systemd -- --ignored --test-threads=1"]
async fn a_config_refused_after_a_crash_is_not_restarted_in_a_loop() {
    let nodes = three_nodes().await;
    let p = boot(
        &config(&[&nodes[0]]),
        r#"
systemctl start roundhouse
echo before=$(show StatusText)
sed -i 's/enabled: true/enabled: false/' /etc/roundhouse/roundhouse.yaml
t0=$(now); kill -9 "$(show MainPID)"
await_failed 78; echo settled=$?
echo settle_s=$(since "$t0")
restarts=$(show NRestarts); echo restarts=$restarts
# RestartSec=2: a restart loop would show within four of its periods
for _ in $(seq 16); do
  [[ "$(show NRestarts)" == "$restarts" && "$(show ActiveState)" == failed ]] || break
  sleep 0.5
done
echo restarts_later=$(show NRestarts)
echo active=$(systemctl is-active roundhouse)
echo main_status=$(show ExecMainStatus)
echo status=$(show StatusText)
journalctl -u roundhouse --no-pager -o cat | sed 's/^/log| /'
"#,
    )
    .await;
    assert_eq!(p.value("before"), "serving 1 listener; es: 1/1 servers up");
    assert_eq!(p.value("settled"), "0", "{}", p.output);
    let settle = p.seconds("settle_s");
    eprintln!("kill -9 with a refused config: failed (exit 78, restarted once) after {settle:.3}s");
    assert_eq!(p.value("restarts"), "1", "restarted once: {}", p.output);
    assert_eq!(p.value("restarts_later"), "1", "{}", p.output);
    assert_eq!(p.value("active"), "failed");
    assert_eq!(p.value("main_status"), "78");
    let why = "refusing to start: /etc/roundhouse/roundhouse.yaml has enabled: false — set enabled: true once it describes your cluster";
    assert_eq!(p.value("status"), why);
    assert!(
        p.output.contains(&format!("log| roundhouse: {why}")),
        "{}",
        p.output
    );
    assert_eq!(
        p.output.matches("Scheduled restart job").count(),
        1,
        "{}",
        p.output
    );
}
