//! TLS for health checks (rustls): which certificates to trust, which name to verify, and
//! what to tell an operator when a handshake fails.

use std::io;
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::config::CheckTls;

/// Why a TLS client could not be built, or a handshake failed. The `Display` form is the reason
/// a health check shows.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS setup failed: {0}")]
    Setup(#[source] rustls::Error),
    #[error("none of the {ignored} certificates of ca_file is usable as a CA")]
    NoUsableCa { ignored: usize },
    #[error("{0:?} is not a name TLS can verify")]
    BadName(String),
    /// The handshake failed; `reason` says it the way an operator acts on it.
    #[error("{reason}")]
    Handshake {
        reason: String,
        #[source]
        source: io::Error,
    },
}

/// A ready-to-use TLS client for one server.
#[derive(Clone)]
pub struct Tls {
    connector: TlsConnector,
    name: ServerName<'static>,
}

impl Tls {
    /// Builds the client for a server whose configured host is `host`.
    pub fn new(settings: &CheckTls, host: &str) -> Result<Tls, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Setup)?;
        let config = if settings.insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnything(provider)))
                .with_no_client_auth()
        } else {
            let roots = match &settings.ca {
                Some((_, certs)) => {
                    let mut store = RootCertStore::empty();
                    let (_, ignored) = store.add_parsable_certificates(certs.iter().cloned());
                    if store.is_empty() {
                        return Err(TlsError::NoUsableCa { ignored });
                    }
                    Arc::new(store)
                }
                None => system_roots(),
            };
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        let name = settings.server_name.as_deref().unwrap_or(host);
        let name = ServerName::try_from(name.to_owned())
            .map_err(|_| TlsError::BadName(name.to_owned()))?;
        Ok(Tls {
            connector: TlsConnector::from(Arc::new(config)),
            name,
        })
    }

    /// Runs the handshake over a connected stream.
    pub async fn connect(&self, stream: TcpStream) -> Result<TlsStream<TcpStream>, TlsError> {
        self.connector
            .connect(self.name.clone(), stream)
            .await
            .map_err(|source| TlsError::Handshake {
                reason: describe(&source, &self.name),
                source,
            })
    }
}

/// The operating system's trusted CAs, loaded once.
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!(error = %e, "could not load some system CA certificates");
            }
            let mut store = RootCertStore::empty();
            store.add_parsable_certificates(found.certs);
            Arc::new(store)
        })
        .clone()
}

/// A handshake failure as an operator would want to read it.
fn describe(e: &io::Error, name: &ServerName<'_>) -> String {
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return format!("TLS handshake failed: {e}");
    };
    let name = name.to_str();
    match tls {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => {
                "TLS: the node's certificate is not signed by a trusted CA (check health_check.tls.ca_file)".into()
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => format!(
                "TLS: the node's certificate is not valid for the name {name} (check health_check.tls.server_name)"
            ),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "TLS: the node's certificate has expired".into()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "TLS: the node's certificate is not valid yet (check the clocks)".into()
            }
            CertificateError::Revoked => "TLS: the node's certificate is revoked".into(),
            other => format!("TLS: the node's certificate was refused: {other:?}"),
        },
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            format!("TLS handshake failed: {tls} (does the node speak TLS on this port?)")
        }
        other => format!("TLS handshake failed: {other}"),
    }
}

/// `insecure_skip_verify: true`: any certificate, still checking the handshake signatures.
#[derive(Debug)]
struct AcceptAnything(Arc<rustls::crypto::CryptoProvider>);

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
