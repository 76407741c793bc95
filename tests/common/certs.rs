//! Certificates made for one test: a certificate authority and the server certificates it
//! signs (rcgen), and self-signed ones made by the real `openssl` command, as people make them.

use std::path::Path;
use std::process::Command;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

pub struct TestCa {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new() -> TestCa {
        TestCa::named("roundhouse test CA")
    }

    /// A CA whose subject is `CN=<cn>`.
    pub fn named(cn: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// A server certificate for these names, the first one also its CN: (certificate PEM,
    /// private key PEM).
    pub fn server(&self, names: &[&str]) -> (String, String) {
        self.sign(server_params(names[0], names))
    }

    /// A certificate made from `params`, signed by this CA: (certificate PEM, private key PEM).
    pub fn sign(&self, params: CertificateParams) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// Parameters for a server certificate with subject `CN=<cn>` and these names (DNS names, or
/// IP addresses).
pub fn server_params(cn: &str, names: &[&str]) -> CertificateParams {
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params
}

/// A self-signed certificate made the way the openssl documentation and most how-tos make one
/// (CA:TRUE, 30 days), for `/CN=es.internal` with `DNS:es.internal,IP:127.0.0.1`; the files are
/// written in `dir` as `<stem>.crt` and `<stem>.key`: (certificate PEM, private key PEM).
pub fn openssl_self_signed(dir: &Path, stem: &str) -> (String, String) {
    let (cert, key) = (
        dir.join(format!("{stem}.crt")),
        dir.join(format!("{stem}.key")),
    );
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .args([
            "-subj",
            "/CN=es.internal",
            "-addext",
            "subjectAltName=DNS:es.internal,IP:127.0.0.1",
        ])
        .output()
        .expect("the openssl command (Debian package openssl) is needed by this test");
    assert!(
        out.status.success(),
        "openssl req failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        std::fs::read_to_string(cert).unwrap(),
        std::fs::read_to_string(key).unwrap(),
    )
}
