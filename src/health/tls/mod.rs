//! TLS for health checks (rustls): which certificates to trust, which name to verify, and
//! what to tell an operator when a handshake fails.
//!
//! `verify.rs` decides on a node's certificate (webpki, plus pinning of the certificates in
//! `ca_file`), `refused.rs` says why one was refused, `cert.rs` reads what a certificate says
//! about itself.

mod cert;
mod refused;
#[cfg(test)]
mod tests;
mod verify;

use std::io;
use std::sync::{Arc, OnceLock};

use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::ServerName;
use rustls::{CertificateError, ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::config::CheckTls;
use refused::{Anchors, NameFrom, Refused};
use verify::{AcceptAnything, Verifier};

/// Why a TLS client could not be built, or a handshake failed. The `Display` form is the reason
/// a health check shows.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS setup failed: {0}")]
    Setup(#[source] rustls::Error),
    #[error("none of the {ignored} certificates of ca_file is usable as a CA")]
    NoUsableCa { ignored: usize },
    #[error("TLS setup failed: {0}")]
    Verifier(#[source] rustls::client::VerifierBuilderError),
    #[error(
        "TLS: this machine has no trusted CA certificates (install ca-certificates, or set health_check.tls.ca_file)"
    )]
    NoSystemRoots,
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
        let name_from = match settings.server_name {
            Some(_) => NameFrom::Setting,
            None => NameFrom::Host,
        };
        let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> =
            if settings.insecure_skip_verify {
                Arc::new(AcceptAnything(provider.clone()))
            } else {
                Arc::new(verifier(settings, provider.clone(), name_from)?)
            };
        // `dangerous()` is rustls' door to any verifier of our own; ours is webpki's, plus
        // pinning (see verify.rs), unless insecure_skip_verify asked for none.
        let config = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
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

/// webpki over `ca_file` (whose certificates are also the ones pinned), or over the system roots.
fn verifier(
    settings: &CheckTls,
    provider: Arc<rustls::crypto::CryptoProvider>,
    name_from: NameFrom,
) -> Result<Verifier, TlsError> {
    let (roots, pinned, anchors) = match &settings.ca {
        Some((path, certs)) => {
            let mut store = RootCertStore::empty();
            let (_, ignored) = store.add_parsable_certificates(certs.iter().cloned());
            if store.is_empty() {
                return Err(TlsError::NoUsableCa { ignored });
            }
            let anchors = Anchors::CaFile {
                path: path.clone(),
                holds: certs.iter().map(cert::subject_of).collect(),
            };
            (Arc::new(store), certs.clone(), anchors)
        }
        None => (system_roots(), Vec::new(), Anchors::System),
    };
    if roots.is_empty() {
        return Err(TlsError::NoSystemRoots);
    }
    let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
        .build()
        .map_err(TlsError::Verifier)?;
    Ok(Verifier::new(webpki, pinned, anchors, name_from))
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
        rustls::Error::InvalidCertificate(CertificateError::Other(o))
            if o.0.downcast_ref::<Refused>().is_some() =>
        {
            o.0.to_string()
        }
        rustls::Error::InvalidCertificate(c) => {
            format!("TLS: the node's certificate for {name} was refused: {c}")
        }
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            format!("TLS handshake failed: {tls} (does the node speak TLS on this port?)")
        }
        other => format!("TLS handshake failed: {other}"),
    }
}
