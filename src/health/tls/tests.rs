//! The verifier on certificates made here, at a chosen time: what pinning trusts and what it
//! still refuses, and the words for each refusal.

use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    SerialNumber, date_time_ymd,
};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, RootCertStore};

use super::refused::{Anchors, NameFrom, Problem, Refused};
use super::verify::Verifier;

const CA_FILE: &str = "/etc/roundhouse/es.pem";

/// 2026-06-01, inside every validity period below unless a test says otherwise.
fn june_2026() -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(1_780_272_000))
}

fn params(cn: &str, names: &[&str]) -> CertificateParams {
    let mut p = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .expect("valid names");
    p.distinguished_name.push(DnType::CommonName, cn);
    p.not_before = date_time_ymd(2026, 1, 1);
    p.not_after = date_time_ymd(2027, 1, 1);
    p
}

/// Like `openssl req -x509 -subj /CN=es.internal -addext subjectAltName=…`: self-signed, CA:TRUE.
fn openssl_like(p: CertificateParams) -> CertificateDer<'static> {
    let mut p = p;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().expect("key");
    p.self_signed(&key).expect("cert").der().clone()
}

fn verifier(ca_file: Vec<CertificateDer<'static>>, name_from: NameFrom) -> Verifier {
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(ca_file.iter().cloned());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .expect("roots");
    let anchors = Anchors::CaFile {
        path: CA_FILE.to_owned(),
        holds: ca_file.iter().map(super::cert::subject_of).collect(),
    };
    Verifier::new(webpki, ca_file, anchors, name_from)
}

/// The verifier's verdict for `cert` sent alone, checked as `name` at `now`.
fn verdict(
    v: &Verifier,
    cert: &CertificateDer<'_>,
    name: &str,
    now: UnixTime,
) -> Result<(), Box<Refused>> {
    let name = ServerName::try_from(name).expect("name");
    match v.verify_server_cert(cert, &[], &name, &[], now) {
        Ok(_) => Ok(()),
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(o))) => {
            let refused = o.0.downcast_ref::<Refused>().expect("refusals are words");
            Err(Box::new(refused.clone()))
        }
        Err(e) => panic!("not a certificate refusal: {e:?}"),
    }
}

#[test]
fn webpki_alone_refuses_a_self_signed_ca_certificate_as_its_own_anchor() {
    let cert = openssl_like(params("es.internal", &["es.internal"]));
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates([cert.clone()]);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .expect("roots");
    let name = ServerName::try_from("es.internal").expect("name");
    let e = webpki
        .verify_server_cert(&cert, &[], &name, &[], june_2026())
        .expect_err("webpki refuses CA:TRUE as an end entity");
    assert!(format!("{e:?}").contains("CaUsedAsEndEntity"), "{e:?}");
}

#[test]
fn a_pinned_self_signed_ca_certificate_is_trusted_for_its_names() {
    let cert = openssl_like(params("es.internal", &["es.internal", "127.0.0.1"]));
    let v = verifier(vec![cert.clone()], NameFrom::Setting);
    verdict(&v, &cert, "es.internal", june_2026()).expect("DNS name");
    verdict(&v, &cert, "127.0.0.1", june_2026()).expect("IP address");
}

#[test]
fn pinning_needs_the_very_bytes_not_the_same_key_and_name() {
    let key = KeyPair::generate().expect("key");
    let mut p = params("es.internal", &["es.internal"]);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.serial_number = Some(SerialNumber::from(1u64));
    let in_file = p.self_signed(&key).expect("cert").der().clone();
    p.serial_number = Some(SerialNumber::from(2u64));
    let served = p.self_signed(&key).expect("cert").der().clone();
    let v = verifier(vec![in_file], NameFrom::Setting);
    let r = verdict(&v, &served, "es.internal", june_2026()).expect_err("not pinned");
    assert!(matches!(r.problem, Problem::CaAsNodeCert), "{r:?}");
    assert_eq!(
        r.to_string(),
        "TLS: the node's certificate (CN=es.internal; DNS:es.internal) is a CA certificate (CA:TRUE), \
         which is refused as a node's own certificate unless pinned: put this very certificate in \
         ca_file /etc/roundhouse/es.pem, or give the node a certificate with CA:FALSE"
    );
}

#[test]
fn a_pinned_certificate_still_has_its_name_checked() {
    let cert = openssl_like(params("es.internal", &["es.internal"]));
    let v = verifier(vec![cert.clone()], NameFrom::Host);
    let r = verdict(&v, &cert, "10.0.0.11", june_2026()).expect_err("wrong name");
    assert_eq!(
        r.to_string(),
        "TLS: the node's certificate (CN=es.internal; DNS:es.internal) is not valid for the name \
         10.0.0.11 (the server's host; health_check.tls.server_name is not set): set server_name \
         to one of its names, or give the node a certificate for 10.0.0.11"
    );
}

#[test]
fn a_pinned_certificate_without_subject_alt_names_says_the_cn_is_not_used() {
    let cert = openssl_like(params("es.internal", &[]));
    let v = verifier(vec![cert.clone()], NameFrom::Setting);
    let r = verdict(&v, &cert, "es.internal", june_2026()).expect_err("no SAN");
    assert_eq!(
        r.to_string(),
        "TLS: the node's certificate (CN=es.internal; no subjectAltName) is not valid for the name \
         es.internal (health_check.tls.server_name): it has no subjectAltName, and its CN is not \
         used for names; give the node a certificate with one (openssl: -addext \
         subjectAltName=DNS:es.internal)"
    );
}

#[test]
fn an_expired_pinned_certificate_is_refused_and_the_words_say_to_replace_it_in_ca_file() {
    let cert = openssl_like(params("es.internal", &["es.internal"]));
    let v = verifier(vec![cert.clone()], NameFrom::Setting);
    let in_2028 = UnixTime::since_unix_epoch(Duration::from_secs(1_830_297_600));
    let r = verdict(&v, &cert, "es.internal", in_2028).expect_err("expired");
    assert_eq!(
        r.to_string(),
        "TLS: the node's certificate (CN=es.internal; DNS:es.internal) expired at \
         2027-01-01T00:00:00Z (by this machine's clock): give the node a new certificate and put \
         it in ca_file /etc/roundhouse/es.pem in place of this one"
    );
}

#[test]
fn a_pinned_certificate_is_refused_before_its_start_date() {
    let cert = openssl_like(params("es.internal", &["es.internal"]));
    let v = verifier(vec![cert.clone()], NameFrom::Setting);
    let in_2025 = UnixTime::since_unix_epoch(Duration::from_secs(1_748_736_000));
    let r = verdict(&v, &cert, "es.internal", in_2025).expect_err("not yet valid");
    assert!(
        r.to_string()
            .contains("is valid only from 2026-01-01T00:00:00Z on"),
        "{r}"
    );
}

#[test]
fn a_pinned_certificate_for_clients_only_is_refused() {
    let mut p = params("es.internal", &["es.internal"]);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = openssl_like(p);
    let v = verifier(vec![cert.clone()], NameFrom::Setting);
    let r = verdict(&v, &cert, "es.internal", june_2026()).expect_err("clientAuth only");
    assert!(matches!(r.problem, Problem::NotForServers), "{r:?}");
}

#[test]
fn a_ca_made_anew_with_the_same_name_is_said_to_have_another_key() {
    let ca = || {
        let mut p = params("Elasticsearch security auto-configuration HTTP CA", &[]);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().expect("key");
        (
            p.self_signed(&key).expect("ca").der().clone(),
            Issuer::new(p, key),
        )
    };
    let (old_ca, _) = ca();
    let (_, new_issuer) = ca();
    let node = params("es-1", &["es-1.internal"])
        .signed_by(&KeyPair::generate().unwrap(), &new_issuer)
        .expect("node cert")
        .der()
        .clone();
    let v = verifier(vec![old_ca], NameFrom::Setting);
    let r = verdict(&v, &node, "es-1.internal", june_2026()).expect_err("old CA");
    assert_eq!(
        r.to_string(),
        "TLS: the node's certificate (CN=es-1; DNS:es-1.internal) has a signature that does not \
         verify with the key of its issuer CN=Elasticsearch security auto-configuration HTTP CA \
         as found in ca_file /etc/roundhouse/es.pem (was the CA made anew?): put the CA that \
         signed the node's certificate in that file"
    );
}

#[test]
fn a_self_signed_certificate_not_in_ca_file_says_what_the_file_holds() {
    let others: Vec<_> = (1..=5)
        .map(|i| openssl_like(params(&format!("ca-{i}"), &[])))
        .collect();
    // CA:FALSE so webpki reaches the issuer: a self-signed certificate not in ca_file
    let mut p = params("es.internal", &["es.internal"]);
    p.is_ca = IsCa::ExplicitNoCa;
    let leaf = p
        .self_signed(&KeyPair::generate().unwrap())
        .unwrap()
        .der()
        .clone();
    let v = verifier(others, NameFrom::Setting);
    let r = verdict(&v, &leaf, "es.internal", june_2026()).expect_err("unknown");
    assert_eq!(
        r.to_string(),
        "TLS: the node's certificate (CN=es.internal; DNS:es.internal) is self-signed and not in \
         ca_file /etc/roundhouse/es.pem (it holds CN=ca-1, CN=ca-2, CN=ca-3 and 2 more): put this \
         very certificate in that file"
    );
}
