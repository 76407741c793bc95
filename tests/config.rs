//! Configuration: refusing to start loudly, errors that name file and field, `check`, and a
//! corpus of malformed files that must never panic.

mod common;

use std::path::Path;
use std::time::Duration;

use common::process::NotifySocket;
use common::*;

const PACKAGED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/roundhouse.yaml");

fn write(dir: &Path, text: &str) -> String {
    let p = dir.join("roundhouse.yaml");
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

fn valid() -> String {
    ConfigBuilder::new()
        .listener("es", "es")
        .backend(Backend::new("es").server("es-1", "127.0.0.1:9200".parse().unwrap()))
        .yaml()
}

#[test]
fn run_refuses_when_enabled_is_false() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        &valid().replace("enabled: true", "enabled: false"),
    );
    let (code, _, stderr) = run_cli(&["run", "--config", &path], &[]);
    assert_eq!(code, 78, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "refusing to start: {path} has enabled: false — set enabled: true once it describes your cluster"
        )),
        "{stderr}"
    );
}

#[test]
fn run_refuses_when_enabled_is_absent() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), &valid().replace("enabled: true\n", ""));
    let (code, _, stderr) = run_cli(&["run", "--config", &path], &[]);
    assert_eq!(code, 78, "{stderr}");
    assert!(
        stderr.contains(&format!("{path} does not say enabled: true")),
        "{stderr}"
    );
    assert!(stderr.contains("add the line `enabled: true`"), "{stderr}");
}

#[tokio::test]
async fn refusal_is_told_to_systemd() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        &valid().replace("enabled: true", "enabled: false"),
    );
    let mut notify = NotifySocket::bind(dir.path());
    let socket = notify.path.display().to_string();
    let (code, _, _) = run_cli(&["run", "--config", &path], &[("NOTIFY_SOCKET", &socket)]);
    assert_eq!(code, 78);
    let status = notify.wait_for_status(&[], Duration::from_secs(1)).await;
    assert_eq!(
        status,
        format!(
            "refusing to start: {path} has enabled: false — set enabled: true once it describes your cluster"
        )
    );
}

#[test]
fn packaged_config_refuses_until_enabled() {
    let (code, _, stderr) = run_cli(&["check", "--config", PACKAGED], &[]);
    assert_eq!(code, 78, "{stderr}");
    assert!(stderr.contains("has enabled: false"), "{stderr}");
    // flipping the one switch is all it takes: everything else in it is valid
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(PACKAGED).unwrap();
    let path = write(dir.path(), &text.replace("enabled: false", "enabled: true"));
    let (code, stdout, stderr) = run_cli(&["check", "--config", &path], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("server es-3"), "{stdout}");
}

#[test]
fn packaged_examples_of_balance_roles_and_discovery_are_valid_once_uncommented() {
    let text = std::fs::read_to_string(PACKAGED).unwrap();
    let keys = [
        "cluster_name:",
        "min_nodes:",
        "balance:",
        "roles:",
        "exclude_dedicated_masters:",
        "require:",
        "discovery:",
        "type: elasticsearch",
        "interval: 30s",
        "forget_after:",
    ];
    let uncommented: Vec<String> = text
        .replace("enabled: false", "enabled: true")
        .lines()
        .map(|l| {
            let indent = l.len() - l.trim_start().len();
            match l.trim_start().strip_prefix("# ") {
                Some(rest) if keys.iter().any(|k| rest.trim_start().starts_with(k)) => {
                    format!("{}{rest}", &l[..indent])
                }
                _ => l.to_owned(),
            }
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), &uncommented.join("\n"));
    let (code, stdout, stderr) = run_cli(&["check", "--config", &path], &[]);
    assert_eq!(code, 0, "{stderr}\n{}", uncommented.join("\n"));
    for shown in [
        "balance: least_connections",
        "roles: dedicated masters (cluster managers) kept out; a node needs data",
        "discovery: elasticsearch, GET /_nodes/_all/http of a node that passes its check every 30s",
    ] {
        assert!(stdout.contains(shown), "{shown:?} not in:\n{stdout}");
    }
}

#[test]
fn missing_file_is_named() {
    let (code, _, stderr) = run_cli(&["run", "--config", "/nonexistent/roundhouse.yaml"], &[]);
    assert_eq!(code, 78);
    assert!(
        stderr.contains(
            "/nonexistent/roundhouse.yaml: cannot read the file: No such file or directory"
        ),
        "{stderr}"
    );
}

#[test]
fn errors_name_the_file_the_field_and_what_was_expected() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), &valid().replace("fall: 2", "fall: often"));
    let (code, _, stderr) = run_cli(&["check", "--config", &path], &[]);
    assert_eq!(code, 78);
    assert!(stderr.contains(&path), "{stderr}");
    assert!(stderr.contains("backends[0].health_check.fall"), "{stderr}");
    assert!(stderr.contains("expected u64"), "{stderr}");
}

#[test]
fn check_reports_every_error_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let text = valid()
        .replace("fall: 2", "fall: 0")
        .replace(
            "interval: 500ms",
            "interval: 500ms\n      expect_status: [blue]",
        )
        .replace("backend: es }", "backend: nope }");
    let path = write(dir.path(), &text);
    let (code, _, stderr) = run_cli(&["check", "--config", &path], &[]);
    assert_eq!(code, 78);
    for needle in [
        "backends[0].health_check.fall: expected 1 to 100 consecutive checks, got 0",
        "backends[0].health_check.expect_status[0]: unknown cluster status \"blue\": expected green, yellow or red",
        "listeners[0].backend: no backend named \"nope\" (backends: es)",
        "3 problems found",
    ] {
        assert!(stderr.contains(needle), "missing {needle:?} in:\n{stderr}");
    }
}

#[test]
fn unknown_keys_are_rejected_with_the_allowed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        &valid().replace("rise: 2", "rise: 2\n      intervall: 5s"),
    );
    let (code, _, stderr) = run_cli(&["check", "--config", &path], &[]);
    assert_eq!(code, 78);
    assert!(stderr.contains("backends[0].health_check"), "{stderr}");
    assert!(
        stderr.contains("unknown field `intervall`, expected one of"),
        "{stderr}"
    );
}

#[test]
fn a_second_document_is_named_by_its_line() {
    // found by the property tests: serde_yaml says no place for these
    let file = Path::new("/etc/roundhouse/test.yaml");
    let message = "deserializing from YAML containing more than one document is not supported";
    let two = format!("{}---\nenabled: false\n", valid());
    let line = valid().lines().count() + 1;
    let shown = roundhouse::config::parse(file, &two)
        .unwrap_err()
        .to_string();
    assert_eq!(
        shown,
        format!("/etc/roundhouse/test.yaml:{line}: {message}")
    );
    // a stray bracket after a file written in flow style starts a second document too
    let stray = "{enabled: true,\n listeners: []}\n]\n";
    let shown = roundhouse::config::parse(file, stray)
        .unwrap_err()
        .to_string();
    assert_eq!(shown, format!("/etc/roundhouse/test.yaml:3: {message}"));
}

#[test]
fn a_mistyped_address_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let text = valid().replace("servers:\n", "servers:\n      - 10.0.0.x:9200\n");
    let path = write(dir.path(), &text);
    let (code, _, stderr) = run_cli(&["check", "--config", &path], &[]);
    assert_eq!(code, 78);
    assert!(
        stderr.contains("backends[0].servers[0]: invalid address \"10.0.0.x:9200\""),
        "{stderr}"
    );
}

#[test]
fn an_unresolvable_host_name_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let text = valid().replace(
        "servers:\n",
        "servers:\n      - no-such-host.invalid:9200\n",
    );
    let path = write(dir.path(), &text);
    let (code, _, stderr) = run_cli(&["check", "--config", &path], &[]);
    assert_eq!(code, 78, "{stderr}");
    assert!(
        stderr.contains("backends[0].servers[0]: cannot resolve \"no-such-host.invalid\""),
        "{stderr}"
    );
}

#[test]
fn check_prints_the_effective_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), &valid());
    let (code, stdout, stderr) = run_cli(&["check", "--config", &path], &[]);
    assert_eq!(code, 0, "{stderr}");
    for needle in [
        "configuration is valid",
        "es           127.0.0.1:0            -> backend es (no connection limit)",
        "connect timeout 2s, idle timeout 5m, 2 retries, when all unhealthy: fail_open",
        "health check: elasticsearch GET /_cluster/health?local=true expects status green|yellow; every 500ms, timeout 500ms, rise 2, fall 2",
        "server es-1",
        "-> 127.0.0.1:9200",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in:\n{stdout}");
    }
}

#[test]
fn check_says_whether_workers_are_pinned() {
    let dir = tempfile::tempdir().unwrap();
    for (top, said) in [
        ("", "(pin_workers: off)"),
        ("pin_workers: true\n", "(pin_workers: on)"),
    ] {
        let path = write(dir.path(), &format!("{top}{}", valid()));
        let (code, stdout, stderr) = run_cli(&["check", "--config", &path], &[]);
        assert_eq!(code, 0, "{stderr}");
        assert!(stdout.contains(said), "missing {said:?} in:\n{stdout}");
    }
}

#[test]
fn a_taken_port_fails_startup_with_its_name() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let bind = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let text = valid().replace("bind: \"127.0.0.1:0\"", &format!("bind: \"{bind}\""));
    let path = write(dir.path(), &text);
    let (code, _, stderr) = run_cli(&["run", "--config", &path], &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot bind listener es on {bind}: Address already in use"
        )),
        "{stderr}"
    );
}

#[test]
fn help_has_examples_and_version_prints() {
    let (code, stdout, _) = run_cli(&["--help"], &[]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("Examples:") && stdout.contains("roundhouse demo"),
        "{stdout}"
    );
    let (code, stdout, _) = run_cli(&["--version"], &[]);
    assert_eq!(code, 0);
    assert_eq!(
        stdout.trim(),
        format!("roundhouse {}", env!("CARGO_PKG_VERSION"))
    );
}

/// Files that are wrong in every way we could think of. None may panic; each must be rejected
/// with the file named.
const MALFORMED: &[&str] = &[
    "",
    "# only a comment\n",
    "enabled: true",
    "not: yaml: at: all",
    "[1, 2, 3]",
    "42",
    "enabled: yes\nlisteners: []\nbackends: []",
    "enabled: true\n\tlisteners: []",
    "enabled: true\nenabled: false",
    "enabled: true\nlisteners: null\nbackends: null",
    "enabled: true\nbogus: 1",
    "enabled: true\nlisteners: [{}]\nbackends: [{}]",
    "enabled: true\nlisteners: [{name: a, bind: 1.2.3.4:1, backend: b}]\nbackends: [{name: b, servers: []}]",
    "enabled: true\nlisteners: [{name: a, bind: localhost:9200, backend: b}]\nbackends: [{name: b, servers: [1.2.3.4:1]}]",
    "enabled: true\nlisteners: [{name: a, bind: ':::', backend: b}]\nbackends: [{name: b, servers: [1.2.3.4:1]}]",
    "enabled: true\nlisteners: [{name: a/b, bind: 1.2.3.4:1, backend: b}]\nbackends: [{name: b, servers: [1.2.3.4:1]}]",
    "enabled: true\nlisteners: [{name: a, bind: 1.2.3.4:1, backend: b}, {name: a, bind: 1.2.3.4:1, backend: b}]\nbackends: [{name: b, servers: [1.2.3.4:1]}]",
    "enabled: true\nlisteners: [{name: a, bind: 1.2.3.4:1, backend: b, max_connections: 0}]\nbackends: [{name: b, servers: [1.2.3.4:1]}]",
    "enabled: true\nlisteners: [{name: a, bind: 1.2.3.4:1, backend: b, max_connections: -5}]\nbackends: [{name: b, servers: [1.2.3.4:1]}]",
    "enabled: true\nlisteners: [{name: a, bind: 1.2.3.4:1, backend: b}]\nbackends: [{name: b, servers: [1.2.3.4]}]",
    "enabled: true\nlisteners: [{name: a, bind: 1.2.3.4:1, backend: b}]\nbackends: [{name: b, servers: [12]}]",
    "enabled: true\nlisteners: [{name: a, bind: 1.2.3.4:1, backend: b}]\nbackends: [{name: b, servers: [[1]]}]",
    "enabled: true\nlisteners: [{name: a, bind: 1.2.3.4:1, backend: b}]\nbackends: [{name: b, servers: [1.2.3.4:1, 1.2.3.4:1]}]",
    "enabled: true\nlisteners: [{name: a, bind: 1.2.3.4:1, backend: b}]\nbackends: [{name: b, servers: [{address: 1.2.3.4:1, weight: 0}]}]",
    "enabled: true\nlisteners: [{name: a, bind: 1.2.3.4:1, backend: b}]\nbackends: [{name: b, servers: [{address: 1.2.3.4:1, weight: 1000}]}]",
    "enabled: true\nlisteners: [{name: a, bind: 1.2.3.4:1, backend: b}]\nbackends: [{name: b, servers: [{name: x}]}]",
    "enabled: true\nlisteners: [{name: a, bind: 1.2.3.4:1, backend: b}]\nbackends: [{name: b, servers: [{address: 1.2.3.4:1, port: 5}]}]",
    "enabled: true\nlisteners: [{name: a, bind: 1.2.3.4:1, backend: b}]\nbackends: [{name: b, servers: [1.2.3.4:99999]}]",
    "enabled: true\nlisteners: [{name: a, bind: 1.2.3.4:1, backend: b}]\nbackends: [{name: b, servers: [1.2.3.4:1], retries: 100}]",
    "enabled: true\nlisteners: [{name: a, bind: 1.2.3.4:1, backend: b}]\nbackends: [{name: b, servers: [1.2.3.4:1], health_check: {fall: -1}}]",
    "enabled: true\nlisteners: [{name: a, bind: 1.2.3.4:1, backend: b}]\nbackends: [{name: b, servers: [1.2.3.4:1], health_check: {rise: 99999999999999999999999}}]",
    "enabled: true\nlisteners: [{name: a, bind: 1.2.3.4:1, backend: b}]\nbackends: [{name: b, servers: [1.2.3.4:1], health_check: {interval: 5}}]",
    "enabled: true\nlisteners: [{name: a, bind: 1.2.3.4:1, backend: b}]\nbackends: [{name: b, servers: [1.2.3.4:1], health_check: {interval: 2 parsecs}}]",
    "enabled: true\nlisteners: [{name: a, bind: 1.2.3.4:1, backend: b}]\nbackends: [{name: b, servers: [1.2.3.4:1], health_check: {interval: 0s}}]",
    "enabled: true\nlisteners: [{name: a, bind: 1.2.3.4:1, backend: b}]\nbackends: [{name: b, servers: [1.2.3.4:1], health_check: {interval: 1s, timeout: 5s}}]",
    "enabled: true\nlisteners: [{name: a, bind: 1.2.3.4:1, backend: b}]\nbackends: [{name: b, servers: [1.2.3.4:1], health_check: {type: grpc}}]",
    "enabled: true\nlisteners: [{name: a, bind: 1.2.3.4:1, backend: b}]\nbackends: [{name: b, servers: [1.2.3.4:1], health_check: {expect_status: []}}]",
    "enabled: true\nlisteners: [{name: a, bind: 1.2.3.4:1, backend: b}]\nbackends: [{name: b, servers: [1.2.3.4:1], health_check: {min_nodes: 0}}]",
    "enabled: true\nlisteners: [{name: a, bind: 1.2.3.4:1, backend: b}]\nbackends: [{name: b, servers: [1.2.3.4:1], health_check: {cluster_name: ''}}]",
    "enabled: true\nlisteners: [{name: a, bind: 1.2.3.4:1, backend: b}]\nbackends: [{name: b, servers: [1.2.3.4:1], health_check: {path: no-slash}}]",
    "enabled: true\nlisteners: [{name: a, bind: 1.2.3.4:1, backend: b}]\nbackends: [{name: b, servers: [1.2.3.4:1], health_check: {type: tcp, path: /x}}]",
    "enabled: true\nlisteners: [{name: a, bind: 1.2.3.4:1, backend: b}]\nbackends: [{name: b, servers: [1.2.3.4:1], health_check: {type: tcp, min_nodes: 2}}]",
    "enabled: true\nlisteners: [{name: a, bind: 1.2.3.4:1, backend: b}]\nbackends: [{name: b, servers: [1.2.3.4:1], timeouts: {idle: 0s}}]",
    "enabled: true\nworkers: 0\nlisteners: [{name: a, bind: 1.2.3.4:1, backend: b}]\nbackends: [{name: b, servers: [1.2.3.4:1]}]",
    "enabled: true\nworkers: many\nlisteners: [{name: a, bind: 1.2.3.4:1, backend: b}]\nbackends: [{name: b, servers: [1.2.3.4:1]}]",
    "enabled: true\nadmin: {bind: nope}\nlisteners: [{name: a, bind: 1.2.3.4:1, backend: b}]\nbackends: [{name: b, servers: [1.2.3.4:1]}]",
    "enabled: true\nadmin: {bind: 1.2.3.4:1}\nlisteners: [{name: a, bind: 1.2.3.4:1, backend: b}]\nbackends: [{name: b, servers: [1.2.3.4:1]}]",
    "enabled: true\nshutdown_grace: forever\nlisteners: []\nbackends: []",
    "a: &a [x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d]\nf: [*e, *e, *e, *e, *e, *e, *e, *e]",
    "enabled: !!binary aGVsbG8=",
    "? [complex, key]\n: value",
    "enabled: true\nlisteners: *undefined",
    "{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{",
    "enabled: \"\u{0}\"",
];

#[test]
fn malformed_configs_are_rejected_without_panicking() {
    let file = Path::new("/etc/roundhouse/test.yaml");
    for (i, text) in MALFORMED.iter().enumerate() {
        let errors = roundhouse::config::parse(file, text)
            .err()
            .unwrap_or_else(|| panic!("case {i} was accepted: {text:?}"));
        assert!(!errors.0.is_empty(), "case {i}");
        for e in &errors.0 {
            let shown = e.to_string();
            assert!(
                shown.contains("/etc/roundhouse/test.yaml"),
                "case {i}: {shown}"
            );
            assert!(!e.brief().is_empty(), "case {i}");
        }
    }
    // deeper nesting than any parser stack should follow
    let deep = "[".repeat(100_000);
    assert!(roundhouse::config::parse(file, &deep).is_err());
    let long_name = format!(
        "enabled: true\nlisteners: [{{name: {}, bind: 1.2.3.4:1, backend: b}}]",
        "x".repeat(1 << 20)
    );
    assert!(roundhouse::config::parse(file, &long_name).is_err());
}

#[test]
fn malformed_configs_through_the_binary_exit_78_and_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    for (i, text) in MALFORMED.iter().enumerate().step_by(3) {
        let path = write(dir.path(), text);
        let (code, _, stderr) = run_cli(&["check", "--config", &path], &[]);
        assert_eq!(code, 78, "case {i}: {stderr}");
        assert!(!stderr.contains("panicked"), "case {i}: {stderr}");
        assert!(stderr.contains(&path), "case {i}: {stderr}");
    }
    let bytes = dir.path().join("binary.yaml");
    std::fs::write(&bytes, [0xff, 0xfe, 0x00, 0x80]).unwrap();
    let (code, _, stderr) = run_cli(&["check", "--config", &bytes.display().to_string()], &[]);
    assert_eq!(code, 78, "{stderr}");
    let (code, _, stderr) = run_cli(
        &["check", "--config", &dir.path().display().to_string()],
        &[],
    );
    assert_eq!(code, 78, "a directory is not a config: {stderr}");
}

#[test]
fn discovery_is_only_for_checks_that_name_the_cluster_and_a_quorum() {
    let dir = tempfile::tempdir().unwrap();
    let with = |checks: &[(&str, &str)]| {
        let backend = checks.iter().fold(
            Backend::new("es")
                .server("es-1", "127.0.0.1:9200".parse().unwrap())
                .with("discovery", "elasticsearch"),
            |b, (k, v)| b.check(k, v),
        );
        let yaml = ConfigBuilder::new()
            .listener("es", "es")
            .backend(backend)
            .yaml();
        let path = write(dir.path(), &yaml);
        run_cli(&["check", "--config", &path], &[])
    };
    let (code, _, err) = with(&[("min_nodes", "2")]);
    assert_eq!(code, 78);
    assert!(
        err.contains("backends[0].discovery: needs health_check.cluster_name"),
        "{err}"
    );
    let (code, _, err) = with(&[("cluster_name", "prod")]);
    assert_eq!(code, 78);
    assert!(
        err.contains("backends[0].discovery: needs health_check.min_nodes of 2 or more"),
        "{err}"
    );
    let (code, _, err) = with(&[("cluster_name", "prod"), ("min_nodes", "1")]);
    assert_eq!(code, 78, "{err}");
    let (code, out, err) = with(&[("cluster_name", "prod"), ("min_nodes", "2")]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("discovery: elasticsearch"), "{out}");
}
