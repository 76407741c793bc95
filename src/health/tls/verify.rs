//! Deciding whether to trust a node's certificate: webpki first; failing that, a certificate that
//! is byte-identical to one in `ca_file` (pinned) is trusted if its dates, purpose and name are
//! right. The handshake signatures are verified either way.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{WebPkiServerVerifier, verify_server_name};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};

use super::cert::CertSummary;
use super::refused::{Anchors, NameFrom, Problem, Refused};

/// webpki's verdict, with pinning and words added.
///
/// Pinning exists for the self-signed certificate `openssl req -x509` makes: it carries
/// CA:TRUE, which webpki refuses as a server's own certificate (CaUsedAsEndEntity) even when
/// it is the trust anchor itself, while OpenSSL (`curl --cacert`, `openssl verify -CAfile`)
/// accepts it. A certificate is pinned only when its DER is byte-identical to one in `ca_file`;
/// a certificate merely signed by the same key, or with the same name, is not.
///
/// A refusal is returned as `CertificateError::Other` carrying a [`Refused`], so that the words
/// can name the certificate; the node then receives the alert `certificate_unknown` rather than
/// a more specific one (`certificate_expired`, `unknown_ca`), which only its own log shows.
#[derive(Debug)]
pub struct Verifier {
    webpki: Arc<WebPkiServerVerifier>,
    /// The `ca_file` certificates (empty with the system roots: nothing to pin).
    pinned: Vec<CertificateDer<'static>>,
    anchors: Arc<Anchors>,
    name_from: NameFrom,
}

impl Verifier {
    pub fn new(
        webpki: Arc<WebPkiServerVerifier>,
        pinned: Vec<CertificateDer<'static>>,
        anchors: Anchors,
        name_from: NameFrom,
    ) -> Verifier {
        Verifier {
            webpki,
            pinned,
            anchors: Arc::new(anchors),
            name_from,
        }
    }

    fn is_pinned(&self, cert: &CertificateDer<'_>) -> bool {
        self.pinned.iter().any(|p| p.as_ref() == cert.as_ref())
    }

    fn refused(
        &self,
        cert: Result<CertSummary, String>,
        problem: Problem,
        pinned: bool,
    ) -> Refused {
        Refused {
            cert,
            problem,
            pinned,
            anchors: self.anchors.clone(),
            name_from: self.name_from,
        }
    }

    /// A handshake signature that does not verify becomes words naming the certificate.
    fn signature_verdict(
        &self,
        verdict: Result<HandshakeSignatureValid, rustls::Error>,
        cert: &CertificateDer<'_>,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        match verdict {
            // BadSignature: another key of the same type; ForPublicKey: another type of key
            Err(rustls::Error::InvalidCertificate(
                CertificateError::BadSignature
                | CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext { .. },
            )) => {
                let pinned = self.is_pinned(cert);
                let refused = self.refused(CertSummary::read(cert), Problem::NotItsKey, pinned);
                Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                    OtherError(Arc::new(refused)),
                )))
            }
            other => other,
        }
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let webpki_says =
            match self
                .webpki
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
            {
                Ok(verified) => return Ok(verified),
                Err(rustls::Error::InvalidCertificate(e)) => e,
                Err(other) => return Err(other),
            };
        let cert = CertSummary::read(end_entity);
        let pinned = self.is_pinned(end_entity);
        let problem = if pinned {
            match pinned_problem(end_entity, &cert, server_name, now) {
                None => return Ok(ServerCertVerified::assertion()),
                Some(p) => p,
            }
        } else {
            Problem::from_webpki(webpki_says, &cert)
        };
        let refused = self.refused(cert, problem, pinned);
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(
            OtherError(Arc::new(refused)),
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let verdict = self.webpki.verify_tls12_signature(message, cert, dss);
        self.signature_verdict(verdict, cert)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let verdict = self.webpki.verify_tls13_signature(message, cert, dss);
        self.signature_verdict(verdict, cert)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// What is wrong with a pinned certificate, checked in webpki's order: dates, purpose, name.
/// Being in `ca_file` stands in for the chain, and for nothing else.
fn pinned_problem(
    der: &CertificateDer<'_>,
    cert: &Result<CertSummary, String>,
    server_name: &ServerName<'_>,
    now: UnixTime,
) -> Option<Problem> {
    let Ok(c) = cert else {
        return Some(Problem::Other(CertificateError::BadEncoding));
    };
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(now.as_secs());
    if now < c.not_before {
        return Some(Problem::NotValidYet {
            not_before: c.not_before,
        });
    }
    if now > c.not_after {
        return Some(Problem::Expired {
            not_after: c.not_after,
            own: true,
        });
    }
    if !c.for_servers {
        return Some(Problem::NotForServers);
    }
    let parsed = match ParsedCertificate::try_from(der) {
        Ok(p) => p,
        Err(e) => return Some(Problem::Other(certificate_error(e))),
    };
    match verify_server_name(&parsed, server_name) {
        Ok(()) => None,
        Err(e) => Some(Problem::from_webpki(certificate_error(e), cert)),
    }
}

fn certificate_error(e: rustls::Error) -> CertificateError {
    match e {
        rustls::Error::InvalidCertificate(c) => c,
        other => CertificateError::Other(OtherError(Arc::new(other))),
    }
}

/// `insecure_skip_verify: true`: any certificate, still checking the handshake signatures.
#[derive(Debug)]
pub struct AcceptAnything(pub Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
