//! A refused node certificate, said so that an operator knows which certificate, what is wrong
//! with it and what to change. The verifier makes one; its `Display` is the check's reason.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::CertificateError;
use rustls::pki_types::UnixTime;

use super::cert::CertSummary;
use crate::words::timestamp;

/// Where trusted certificates come from, as the words name it.
#[derive(Debug)]
pub enum Anchors {
    /// `health_check.tls.ca_file`: its path, and the subjects of the certificates it holds.
    CaFile { path: String, holds: Vec<String> },
    /// The operating system's trusted CAs.
    System,
}

/// Where the name that was verified comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NameFrom {
    /// `health_check.tls.server_name`.
    Setting,
    /// The server's host (no `server_name` set).
    Host,
}

/// What is wrong with the certificate.
#[derive(Debug, Clone)]
pub enum Problem {
    /// Past its end date; `own` is false when a CA certificate of its chain is the expired one.
    Expired { not_after: SystemTime, own: bool },
    /// Before its start date.
    NotValidYet { not_before: SystemTime },
    /// Does not name the host that was verified.
    WrongName { checked: String },
    /// Its issuer is not trusted.
    UnknownIssuer,
    /// Its issuer is trusted by name, but the signature does not verify with that CA's key.
    OtherKey,
    /// A CA certificate (CA:TRUE) served as the node's own, and not pinned.
    CaAsNodeCert,
    /// extendedKeyUsage without serverAuth.
    NotForServers,
    /// The node signed the handshake with a key that is not this certificate's.
    NotItsKey,
    /// Anything else webpki refuses, as rustls says it.
    Other(CertificateError),
}

/// A node certificate that was refused, with everything the words need.
#[derive(Debug, Clone)]
pub struct Refused {
    /// The certificate, or why it could not be read.
    pub cert: Result<CertSummary, String>,
    pub problem: Problem,
    /// True when the certificate is in `ca_file` itself (pinned).
    pub pinned: bool,
    pub anchors: Arc<Anchors>,
    pub name_from: NameFrom,
}

impl Problem {
    /// Classifies what webpki said about a certificate (`cert`, as far as it could be read).
    pub fn from_webpki(e: CertificateError, cert: &Result<CertSummary, String>) -> Problem {
        match e {
            CertificateError::ExpiredContext { not_after, .. } => {
                let not_after = system_time(not_after);
                let own = cert.as_ref().is_ok_and(|c| c.not_after == not_after);
                Problem::Expired { not_after, own }
            }
            CertificateError::NotValidYetContext { not_before, .. } => Problem::NotValidYet {
                not_before: system_time(not_before),
            },
            CertificateError::NotValidForNameContext { expected, .. } => Problem::WrongName {
                checked: expected.to_str().into_owned(),
            },
            CertificateError::UnknownIssuer => Problem::UnknownIssuer,
            CertificateError::BadSignature => Problem::OtherKey,
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                Problem::NotForServers
            }
            CertificateError::Other(ref o)
                if matches!(
                    o.0.downcast_ref::<webpki::Error>(),
                    Some(webpki::Error::CaUsedAsEndEntity)
                ) =>
            {
                Problem::CaAsNodeCert
            }
            other => Problem::Other(other),
        }
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cert = match &self.cert {
            Ok(c) => c,
            Err(why) => {
                return write!(
                    f,
                    "TLS: the node's certificate cannot be read ({why}): give the node a valid certificate"
                );
            }
        };
        write!(f, "TLS: the node's certificate ({}) ", cert.label())?;
        match &self.problem {
            Problem::Expired {
                not_after,
                own: true,
            } => {
                write!(
                    f,
                    "expired at {} (by this machine's clock): give the node a new certificate",
                    timestamp(*not_after)
                )?;
                if let (true, Anchors::CaFile { path, .. }) = (self.pinned, &*self.anchors) {
                    write!(f, " and put it in ca_file {path} in place of this one")?;
                }
                Ok(())
            }
            Problem::Expired { not_after, .. } => write!(
                f,
                "comes with a CA certificate that expired at {} (by this machine's clock): give the node a new certificate chain",
                timestamp(*not_after)
            ),
            Problem::NotValidYet { not_before } => write!(
                f,
                "is valid only from {} on, later than this machine's clock says it is: check the clock here and where the certificate was made",
                timestamp(*not_before)
            ),
            Problem::WrongName { checked } => self.wrong_name(f, cert, checked),
            Problem::UnknownIssuer => self.unknown_issuer(f, cert),
            Problem::OtherKey => {
                write!(
                    f,
                    "has a signature that does not verify with the key of its issuer {} ",
                    cert.issuer
                )?;
                match &*self.anchors {
                    Anchors::CaFile { path, .. } => write!(
                        f,
                        "as found in ca_file {path} (was the CA made anew?): put the CA that signed the node's certificate in that file"
                    ),
                    Anchors::System => write!(
                        f,
                        "as found among this machine's trusted CAs: set health_check.tls.ca_file to the CA that signed it"
                    ),
                }
            }
            Problem::CaAsNodeCert => {
                write!(
                    f,
                    "is a CA certificate (CA:TRUE), which is refused as a node's own certificate unless pinned: "
                )?;
                match &*self.anchors {
                    Anchors::CaFile { path, .. } => {
                        write!(f, "put this very certificate in ca_file {path}")?
                    }
                    Anchors::System => write!(
                        f,
                        "set health_check.tls.ca_file to a file holding this very certificate"
                    )?,
                }
                write!(f, ", or give the node a certificate with CA:FALSE")
            }
            Problem::NotForServers => write!(
                f,
                "is not for TLS servers (its extendedKeyUsage lacks serverAuth): give the node a certificate for serverAuth"
            ),
            Problem::NotItsKey => write!(
                f,
                "does not go with the key the node signed the handshake with: configure the node with this certificate's own private key"
            ),
            Problem::Other(e) => write!(f, "was refused: {e}"),
        }
    }
}

impl std::error::Error for Refused {}

impl Refused {
    fn wrong_name(
        &self,
        f: &mut fmt::Formatter<'_>,
        cert: &CertSummary,
        checked: &str,
    ) -> fmt::Result {
        write!(f, "is not valid for the name {checked}")?;
        match self.name_from {
            NameFrom::Setting => write!(f, " (health_check.tls.server_name): ")?,
            NameFrom::Host => write!(
                f,
                " (the server's host; health_check.tls.server_name is not set): "
            )?,
        }
        if cert.names.is_empty() {
            write!(
                f,
                "it has no subjectAltName, and its CN is not used for names; give the node a certificate with one (openssl: -addext subjectAltName=DNS:{checked})"
            )
        } else {
            write!(
                f,
                "set server_name to one of its names, or give the node a certificate for {checked}"
            )
        }
    }

    fn unknown_issuer(&self, f: &mut fmt::Formatter<'_>, cert: &CertSummary) -> fmt::Result {
        match (&*self.anchors, cert.self_issued) {
            (Anchors::CaFile { path, holds }, true) => write!(
                f,
                "is self-signed and not in ca_file {path} (it holds {}): put this very certificate in that file",
                list(holds)
            ),
            (Anchors::CaFile { path, holds }, false) => write!(
                f,
                "is signed by {}, which is not in ca_file {path} (it holds {}): put the CA that signed the node's certificate in that file",
                cert.issuer,
                list(holds)
            ),
            (Anchors::System, true) => write!(
                f,
                "is self-signed: set health_check.tls.ca_file to a file holding this very certificate"
            ),
            (Anchors::System, false) => write!(
                f,
                "is signed by {}, not by one of this machine's trusted CAs: set health_check.tls.ca_file to that CA (Elasticsearch 8 keeps it in certs/http_ca.crt)",
                cert.issuer
            ),
        }
    }
}

/// `CN=a, CN=b and 3 more`: what a ca_file holds, short enough for a status line.
fn list(subjects: &[String]) -> String {
    const SHOWN: usize = 3;
    let mut s = subjects
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if subjects.len() > SHOWN {
        s.push_str(&format!(" and {} more", subjects.len() - SHOWN));
    }
    s
}

fn system_time(t: UnixTime) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(t.as_secs())
}
