//! Health checks against secured nodes: HTTPS with a certificate made for the test, basic auth
//! and API keys. The data path stays TCP passthrough.

mod common;

use std::path::{Path, PathBuf};

use base64::Engine;
use common::certs::{TestCa, openssl_self_signed, server_params};
use common::scrape::{server, status};
use common::*;
use rcgen::{IsCa, date_time_ymd};

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

/// Nodes es-1, es-2, … serving these (certificate, key) pairs over HTTPS, without auth.
async fn nodes_serving(certs: Vec<(String, String)>) -> Vec<FakeNode> {
    let mut nodes = Vec::new();
    for (i, tls) in certs.into_iter().enumerate() {
        let security = Security {
            tls: Some(tls),
            authorization: None,
        };
        let addr = "127.0.0.1:0".parse().unwrap();
        nodes.push(
            FakeNode::start_secured(&format!("es-{}", i + 1), "prod", addr, security)
                .await
                .unwrap(),
        );
    }
    nodes
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
         CA (Elasticsearch 8 keeps it in certs/http_ca.crt)",
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
async fn a_self_signed_certificate_made_with_openssl_is_trusted_when_it_is_in_ca_file() {
    // one certificate per node, as `openssl req -x509 … -subj /CN=es.internal -addext
    // subjectAltName=DNS:es.internal,IP:127.0.0.1` makes them (CA:TRUE), and ca_file the three
    let dir = tempfile::tempdir().unwrap();
    let certs: Vec<_> = (1..=3)
        .map(|i| openssl_self_signed(dir.path(), &format!("es-{i}")))
        .collect();
    let bundle: String = certs.iter().map(|(cert, _)| cert.as_str()).collect();
    std::fs::write(dir.path().join("es.pem"), bundle).unwrap();
    let nodes = nodes_serving(certs).await;
    // no server_name: the server's host, 127.0.0.1, is verified against the certificate's IP
    let tls = format!("{{ ca_file: {} }}", file(dir.path(), "es.pem").display());
    let mut rh = Roundhouse::spawn(&config(&nodes, &tls, ""));
    let ready = rh.ready().await;
    assert!(
        ready.contains("es: 3/3 servers up"),
        "{ready}\n{}",
        rh.stderr.text()
    );
}

#[tokio::test]
async fn a_pinned_certificate_still_has_its_name_checked() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = openssl_self_signed(dir.path(), "es-1");
    std::fs::write(dir.path().join("es.pem"), &cert).unwrap();
    let nodes = nodes_serving(vec![(cert, key)]).await;
    let tls = format!(
        "{{ ca_file: {}, server_name: other.internal }}",
        file(dir.path(), "es.pem").display()
    );
    let mut rh = Roundhouse::spawn(&config(&nodes, &tls, ""));
    assert_down_with(
        &mut rh,
        "es-1",
        "TLS: the node's certificate (CN=es.internal; DNS:es.internal, IP:127.0.0.1) is not valid \
         for the name other.internal (health_check.tls.server_name): set server_name to one of \
         its names, or give the node a certificate for other.internal",
    )
    .await;
}

#[tokio::test]
async fn a_pinned_certificate_served_with_another_key_is_refused() {
    // two openssl certificates, and a node that serves the first with the key of the second (a
    // mix-up of files): the handshake signature does not verify with the pinned certificate
    let dir = tempfile::tempdir().unwrap();
    let (cert, _) = openssl_self_signed(dir.path(), "mine");
    let (_, other_key) = openssl_self_signed(dir.path(), "other");
    std::fs::write(dir.path().join("es.pem"), &cert).unwrap();
    let node = wrong_key::serve(&cert, &other_key).await;
    let nodes_yaml = ConfigBuilder::new()
        .listener("es", "es")
        .backend(
            Backend::new("es")
                .server("es-1", node.addr)
                .check("interval", "1s")
                .check("timeout", "1s")
                .check(
                    "tls",
                    &format!("{{ ca_file: {} }}", file(dir.path(), "es.pem").display()),
                ),
        )
        .yaml();
    let mut rh = Roundhouse::spawn(&nodes_yaml);
    assert_down_with(
        &mut rh,
        "es-1",
        "TLS: the node's certificate (CN=es.internal; DNS:es.internal, IP:127.0.0.1) does not go \
         with the key the node signed the handshake with: configure the node with this \
         certificate's own private key",
    )
    .await;
}

#[tokio::test]
async fn a_ca_and_node_certificates_as_elasticsearch_8_makes_them_are_trusted() {
    // Elasticsearch 8's auto-configuration: config/certs/http_ca.crt is a CA, and each node's
    // HTTP certificate is signed by it, for the host's names and addresses
    let ca = TestCa::named("Elasticsearch security auto-configuration HTTP CA");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("http_ca.crt"), ca.pem()).unwrap();
    let certs = (1..=3)
        .map(|i| {
            let host = format!("es-{i}");
            let fqdn = format!("es-{i}.internal");
            let mut params = server_params(&host, &[&host, &fqdn, "localhost", "127.0.0.1", "::1"]);
            params.is_ca = IsCa::ExplicitNoCa;
            ca.sign(params)
        })
        .collect();
    let nodes = nodes_serving(certs).await;
    let tls = format!(
        "{{ ca_file: {} }}",
        file(dir.path(), "http_ca.crt").display()
    );
    let mut rh = Roundhouse::spawn(&config(&nodes, &tls, ""));
    let ready = rh.ready().await;
    assert!(
        ready.contains("es: 3/3 servers up"),
        "{ready}\n{}",
        rh.stderr.text()
    );
}

#[tokio::test]
async fn an_expired_certificate_is_down_and_the_reason_says_when_and_what_to_do() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
    let mut params = server_params("es.internal", &["es.internal"]);
    params.not_before = date_time_ymd(2020, 1, 1);
    params.not_after = date_time_ymd(2021, 1, 1);
    let nodes = nodes_serving(vec![ca.sign(params)]).await;
    let mut rh = Roundhouse::spawn(&config(&nodes, &tls_with_ca(dir.path()), ""));
    assert_down_with(
        &mut rh,
        "es-1",
        "TLS: the node's certificate (CN=es.internal; DNS:es.internal) expired at \
         2021-01-01T00:00:00Z (by this machine's clock): give the node a new certificate",
    )
    .await;
}

#[tokio::test]
async fn a_certificate_from_an_unknown_ca_is_down_and_the_reason_names_issuer_and_ca_file() {
    let (prod, staging) = (TestCa::named("es-prod CA"), TestCa::named("es-staging CA"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), staging.pem()).unwrap();
    let nodes = nodes_serving(vec![prod.server(&["es.internal"])]).await;
    let mut rh = Roundhouse::spawn(&config(&nodes, &tls_with_ca(dir.path()), ""));
    let reason = format!(
        "TLS: the node's certificate (CN=es.internal; DNS:es.internal) is signed by CN=es-prod CA, \
         which is not in ca_file {} (it holds CN=es-staging CA): put the CA that signed the \
         node's certificate in that file",
        file(dir.path(), "ca.pem").display()
    );
    assert_down_with(&mut rh, "es-1", &reason).await;
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

/// A TLS server that presents one certificate and signs the handshake with an unrelated key,
/// which rustls' own configuration builders refuse to set up.
mod wrong_key {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use rustls::server::{ClientHello, ResolvesServerCert};
    use rustls::sign::CertifiedKey;
    use tokio::net::TcpListener;

    #[derive(Debug)]
    struct Mismatched(Arc<CertifiedKey>);

    impl ResolvesServerCert for Mismatched {
        fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
            Some(self.0.clone())
        }
    }

    pub struct Server {
        pub addr: SocketAddr,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    pub async fn serve(cert_pem: &str, key_pem: &str) -> Server {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
        let key = provider
            .key_provider
            .load_private_key(PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap())
            .unwrap();
        let resolver = Mismatched(Arc::new(CertifiedKey::new(vec![cert], key)));
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(resolver));
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                // the client refuses the signature: every handshake fails, as it should
                tokio::spawn(async move { acceptor.accept(stream).await });
            }
        });
        Server { addr, task }
    }
}
