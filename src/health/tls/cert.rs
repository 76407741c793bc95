//! What a certificate says about itself: the names, dates and issuer an operator recognises it
//! by, and the few facts the pinned path decides on (dates, purpose).

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use rustls::pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::x509::X509Name;

/// The parts of one certificate that the words and the pinned path need.
#[derive(Debug, Clone, PartialEq)]
pub struct CertSummary {
    /// `CN=es.internal`, or the whole subject when it has no CN.
    pub subject: String,
    /// The issuer, said the same way.
    pub issuer: String,
    /// subjectAltName entries as openssl prints them: `DNS:es.internal`, `IP:127.0.0.1`.
    pub names: Vec<String>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// basicConstraints CA:TRUE.
    pub is_ca: bool,
    /// Issuer and subject are the same name: self-signed, as `openssl req -x509` makes them.
    pub self_issued: bool,
    /// No extendedKeyUsage, or one that allows serverAuth.
    pub for_servers: bool,
}

impl CertSummary {
    /// Reads a DER certificate; the error says why it cannot be read.
    pub fn read(der: &CertificateDer<'_>) -> Result<CertSummary, String> {
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
            .map_err(|e| format!("not an X.509 certificate: {e}"))?;
        let names = match cert.subject_alternative_name() {
            Ok(Some(san)) => san.value.general_names.iter().filter_map(name).collect(),
            Ok(None) => Vec::new(),
            Err(e) => return Err(format!("bad subjectAltName: {e}")),
        };
        let for_servers = match cert.extended_key_usage() {
            Ok(Some(eku)) => eku.value.server_auth || eku.value.any,
            Ok(None) => true,
            Err(e) => return Err(format!("bad extendedKeyUsage: {e}")),
        };
        let validity = cert.validity();
        Ok(CertSummary {
            subject: short_name(cert.subject()),
            issuer: short_name(cert.issuer()),
            names,
            not_before: system_time(validity.not_before.timestamp()),
            not_after: system_time(validity.not_after.timestamp()),
            is_ca: cert.is_ca(),
            self_issued: cert.subject().as_raw() == cert.issuer().as_raw(),
            for_servers,
        })
    }

    /// `CN=es.internal; DNS:es.internal, IP:127.0.0.1`: how the words name the certificate.
    pub fn label(&self) -> String {
        if self.names.is_empty() {
            format!("{}; no subjectAltName", self.subject)
        } else {
            format!("{}; {}", self.subject, self.names.join(", "))
        }
    }
}

/// The CN (what people name their certificates by), or the whole name if there is none.
pub fn short_name(name: &X509Name<'_>) -> String {
    match name.iter_common_name().next().map(|cn| cn.as_str()) {
        Some(Ok(cn)) => format!("CN={cn}"),
        _ => name.to_string(),
    }
}

/// The subject of a certificate, for saying what a `ca_file` holds.
pub fn subject_of(der: &CertificateDer<'_>) -> String {
    match x509_parser::parse_x509_certificate(der.as_ref()) {
        Ok((_, cert)) => short_name(cert.subject()),
        Err(_) => "an unreadable certificate".to_owned(),
    }
}

fn name(n: &GeneralName<'_>) -> Option<String> {
    match n {
        GeneralName::DNSName(d) => Some(format!("DNS:{d}")),
        GeneralName::IPAddress(b) => {
            let ip = match b.len() {
                4 => IpAddr::from(<[u8; 4]>::try_from(*b).ok()?),
                16 => IpAddr::from(<[u8; 16]>::try_from(*b).ok()?),
                _ => return None,
            };
            Some(format!("IP:{ip}"))
        }
        _ => None,
    }
}

/// Seconds since the epoch; dates before 1970 (no real server certificate has one) as 1970.
fn system_time(secs: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}
