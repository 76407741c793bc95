//! Health checks against secured nodes: HTTPS with a certificate made for the test, basic auth
//! and API keys. The data path stays TCP passthrough.

mod common;

use std::path::{Path, PathBuf};

use base64::Engine;
use common::certs::TestCa;
use common::scrape::{server, status};
use common::*;

const USER: &str = "roundhouse";
const PASSWORD: &str = "s3cret-horse";
const API_KEY: &str = "VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw==";

fn basic() -> String {
    let pair = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    format!("Basic {pair}")
}

/// Three secured nodes whose certificates name `es.internal`, and a dir with the CA and secrets.
async fn secured_nodes(ca: &TestCa) -> (Vec<FakeNode>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.path().join("password"), format!("{PASSWORD}\n")).unwrap();
    std::fs::write(dir.path().join("wrong-password"), "guess\n").unwrap();
    std::fs::write(dir.path().join("api-key"), API_KEY).unwrap();
    let mut nodes = Vec::new();
    for name in ["es-1", "es-2", "es-3"] {
        let security = Security {
            tls: Some(ca.server(&["es.internal"])),
            authorization: Some(vec![basic(), format!("ApiKey {API_KEY}")]),
        };
        let addr = "127.0.0.1:0".parse().unwrap();
        nodes.push(
            FakeNode::start_secured(name, "prod", addr, security)
                .await
                .unwrap(),
        );
    }
    (nodes, dir)
}

fn file(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// A backend over `nodes` whose check carries this `tls` and `auth` (YAML flow mappings).
fn config(nodes: &[FakeNode], tls: &str, auth: &str) -> String {
    // TLS handshakes of a debug build on a busy machine can take a while
    let mut b = es_backend(nodes)
        .check("interval", "1s")
        .check("timeout", "1s")
        .check("tls", tls);
    if !auth.is_empty() {
        b = b.check("auth", auth);
    }
    ConfigBuilder::new().listener("es", "es").backend(b).yaml()
}

fn tls_with_ca(dir: &Path) -> String {
    format!(
        "{{ ca_file: {}, server_name: es.internal }}",
        file(dir, "ca.pem").display()
    )
}

/// `server` is down for exactly `reason`: in the status line, in the "server is down" log
/// line and in `/status`.
async fn assert_down_with(rh: &mut Roundhouse, name: &str, reason: &str) {
    let ready = rh.ready().await;
    assert!(ready.contains(&format!("{name}: {reason}")), "{ready}");
    let line = rh
        .stderr
        .wait_for(&["server is down", &format!("server={name}")], SOON)
        .await;
    assert!(line.contains(reason), "{line}");
    let shown = status(rh.admin().await).await;
    assert_eq!(server(&shown, "es", name)["reason"], reason, "{shown:#}");
}

fn basic_auth(dir: &Path, password_file: &str) -> String {
    format!(
        "{{ username: {USER}, password_file: {} }}",
        file(dir, password_file).display()
    )
}

#[tokio::test]
async fn up_with_the_right_ca_and_credentials() {
    let ca = TestCa::new();
    let (nodes, dir) = secured_nodes(&ca).await;
    let mut rh = Roundhouse::spawn(&config(
        &nodes,
        &tls_with_ca(dir.path()),
        &basic_auth(dir.path(), "password"),
    ));
    let ready = rh.ready().await;
    assert!(
        ready.contains("serving 1 listener; es: 3/3 servers up"),
        "{ready}\n{}",
        rh.stderr.text()
    );
}

#[tokio::test]
async fn api_keys_work_too() {
    let ca = TestCa::new();
    let (nodes, dir) = secured_nodes(&ca).await;
    let auth = format!(
        "{{ api_key_file: {} }}",
        file(dir.path(), "api-key").display()
    );
    let mut rh = Roundhouse::spawn(&config(&nodes, &tls_with_ca(dir.path()), &auth));
    let ready = rh.ready().await;
    assert!(ready.contains("es: 3/3 servers up"), "{ready}");
}

#[tokio::test]
async fn without_the_ca_the_reason_names_the_certificate_problem() {
    let ca = TestCa::new();
    let (nodes, dir) = secured_nodes(&ca).await;
    let mut rh = Roundhouse::spawn(&config(
        &nodes,
        "{ server_name: es.internal }",
        &basic_auth(dir.path(), "password"),
    ));
    assert_down_with(
        &mut rh,
        "es-1",
        "TLS: the node's certificate (CN=es.internal; DNS:es.internal) is signed by CN=roundhouse \
         test CA, not by one of this machine's trusted CAs: set health_check.tls.ca_file to that \
         CA (Elasticsearch 8: config/certs/http_ca.crt)",
    )
    .await;
}

#[tokio::test]
async fn a_wrong_server_name_fails_verification() {
    let ca = TestCa::new();
    let (nodes, dir) = secured_nodes(&ca).await;
    let tls = format!(
        "{{ ca_file: {}, server_name: other.internal }}",
        file(dir.path(), "ca.pem").display()
    );
    let mut rh = Roundhouse::spawn(&config(&nodes, &tls, &basic_auth(dir.path(), "password")));
    assert_down_with(
        &mut rh,
        "es-1",
        "TLS: the node's certificate (CN=es.internal; DNS:es.internal) is not valid for the name \
         other.internal (health_check.tls.server_name): set server_name to one of its names, or \
         give the node a certificate for other.internal",
    )
    .await;
    // without server_name the server's own host (127.0.0.1) is verified, and is not in the certificate
    let tls = format!("{{ ca_file: {} }}", file(dir.path(), "ca.pem").display());
    let mut rh = Roundhouse::spawn(&config(&nodes, &tls, &basic_auth(dir.path(), "password")));
    assert_down_with(
        &mut rh,
        "es-1",
        "TLS: the node's certificate (CN=es.internal; DNS:es.internal) is not valid for the name \
         127.0.0.1 (the server's host; health_check.tls.server_name is not set): set server_name \
         to one of its names, or give the node a certificate for 127.0.0.1",
    )
    .await;
}

#[tokio::test]
async fn refused_credentials_are_an_error_said_once() {
    let ca = TestCa::new();
    let (nodes, dir) = secured_nodes(&ca).await;
    let mut rh = Roundhouse::spawn(&config(
        &nodes,
        &tls_with_ca(dir.path()),
        &basic_auth(dir.path(), "wrong-password"),
    ));
    let ready = rh.ready().await;
    assert!(ready.contains("DOWN: es: no healthy server (es-1: authentication failed (401): check health_check.auth"), "{ready}");
    let line = rh
        .stderr
        .wait_for(
            &[
                "ERROR",
                "refused the health check's credentials",
                "server=es-1",
            ],
            SOON,
        )
        .await;
    assert!(
        line.contains("authentication failed (401): check health_check.auth"),
        "{line}"
    );
    // many checks later, still said once per server
    let checks = nodes[0].health_requests();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while nodes[0].health_requests() < checks + 3 {
        assert!(tokio::time::Instant::now() < deadline, "checks go on");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        rh.stderr.count("refused the health check's credentials"),
        3,
        "{}",
        rh.stderr.text()
    );
}

#[tokio::test]
async fn a_node_that_wants_credentials_says_so_when_none_are_configured() {
    let ca = TestCa::new();
    let (nodes, dir) = secured_nodes(&ca).await;
    let mut rh = Roundhouse::spawn(&config(&nodes, &tls_with_ca(dir.path()), ""));
    let ready = rh.ready().await;
    assert!(
        ready.contains("es-1: authentication required (401): set health_check.auth"),
        "{ready}"
    );
}

#[tokio::test]
async fn insecure_skip_verify_works_and_is_logged_at_every_load() {
    let ca = TestCa::new();
    let (nodes, dir) = secured_nodes(&ca).await;
    let yaml = config(
        &nodes,
        "{ insecure_skip_verify: true }",
        &basic_auth(dir.path(), "password"),
    );
    let mut rh = Roundhouse::spawn(&yaml);
    let ready = rh.ready().await;
    assert!(ready.contains("es: 3/3 servers up"), "{ready}");
    let warning = "health checks accept ANY TLS certificate (insecure_skip_verify: true)";
    rh.stderr
        .wait_for(&["WARN", warning, "backend=es"], SOON)
        .await;
    rh.reload(&yaml).await;
    rh.stderr.wait_count(warning, 2, SOON).await; // warned again at the reload
}

#[tokio::test]
async fn tls_settings_against_a_plain_http_node_say_what_is_wrong() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
    let nodes = three_nodes().await;
    let mut rh = Roundhouse::spawn(&config(&nodes, &tls_with_ca(dir.path()), ""));
    let ready = rh.ready().await;
    assert!(
        ready.contains("(does the node speak TLS on this port?)"),
        "{ready}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_never_shown() {
    let ca = TestCa::new();
    let (nodes, dir) = secured_nodes(&ca).await;
    let yaml = config(
        &nodes,
        &tls_with_ca(dir.path()),
        &basic_auth(dir.path(), "password"),
    );
    let mut rh = Roundhouse::spawn_with(&yaml, &[("RUST_LOG", "trace")]);
    rh.ready().await;
    let admin = rh.admin().await;
    let shown = [
        status(admin).await.to_string(),
        Scrape::from(admin).await.text,
        rh.stderr.text(),
        run_cli(
            &["check", "--config", &rh.config.display().to_string()],
            &[],
        )
        .1,
    ];
    for text in shown {
        assert!(!text.contains(PASSWORD), "password shown in:\n{text}");
        assert!(
            !text.contains(&basic()[6..]),
            "encoded credentials shown in:\n{text}"
        );
    }
}

#[test]
fn unreadable_secret_and_ca_files_are_configuration_errors() {
    let dir = tempfile::tempdir().unwrap();
    let nodes_yaml = |hc: &str| {
        ConfigBuilder::new()
            .listener("es", "es")
            .backend(
                Backend::new("es")
                    .server("es-1", "127.0.0.1:9200".parse().unwrap())
                    .check("tls", hc),
            )
            .yaml()
    };
    let cases = [
        (
            nodes_yaml("{ ca_file: /nonexistent/ca.pem }"),
            "backends[0].health_check.tls.ca_file: cannot read /nonexistent/ca.pem",
        ),
        (
            nodes_yaml("{ ca_file: /etc/hostname }"),
            "backends[0].health_check.tls.ca_file: /etc/hostname holds no PEM certificate",
        ),
        (
            nodes_yaml("{}").replace(
                "tls: {}",
                "tls: {}\n      auth: { username: u, password_file: /nonexistent/pw }",
            ),
            "backends[0].health_check.auth.password_file: cannot read /nonexistent/pw",
        ),
        (
            nodes_yaml("{}").replace("tls: {}", "auth: { username: u }"),
            "backends[0].health_check.auth.password_file: missing: username needs a password_file",
        ),
        (
            nodes_yaml("{ insecure_skip_verify: true, ca_file: /x }"),
            "backends[0].health_check.tls.ca_file: has no effect with insecure_skip_verify: true",
        ),
        (
            nodes_yaml("{}").replace("type: elasticsearch", "type: tcp"),
            "backends[0].health_check.tls: only applies to type: http or elasticsearch",
        ),
    ];
    for (i, (yaml, expected)) in cases.iter().enumerate() {
        let p = dir.path().join(format!("{i}.yaml"));
        std::fs::write(&p, yaml).unwrap();
        let (code, _, err) = run_cli(&["check", "--config", p.to_str().unwrap()], &[]);
        assert_eq!(code, 78, "case {i}: {err}");
        assert!(
            err.contains(expected),
            "case {i}: missing {expected:?} in {err}"
        );
    }
}
