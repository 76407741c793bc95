//! Validation of `health_check.tls` and `health_check.auth`: certificates and secrets are read
//! here, at (re)load, so an unreadable file is a configuration error naming the file.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

use super::error::FieldPath;
use super::schema::{RawAuth, RawTls};
use super::validate::Validator;
use super::{CheckAuth, CheckTls, Secret};

impl Validator<'_> {
    pub(super) fn tls(&mut self, raw: RawTls, path: &FieldPath) -> Option<CheckTls> {
        let insecure = raw.insecure_skip_verify.unwrap_or(false);
        if insecure && raw.ca_file.is_some() {
            self.err(
                &path.field("ca_file"),
                "has no effect with insecure_skip_verify: true (remove one of them)",
            );
            return None;
        }
        let ca = match raw.ca_file {
            None => None,
            Some(file) => match read_certificates(&file) {
                Ok(certs) => Some((file, certs)),
                Err(why) => {
                    self.err(&path.field("ca_file"), why);
                    return None;
                }
            },
        };
        if let Some(name) = &raw.server_name
            && ServerName::try_from(name.as_str()).is_err()
        {
            self.err(
                &path.field("server_name"),
                format!("{name:?} is neither a DNS name nor an IP address"),
            );
            return None;
        }
        Some(CheckTls {
            ca,
            server_name: raw.server_name,
            insecure_skip_verify: insecure,
        })
    }

    pub(super) fn auth(&mut self, raw: RawAuth, path: &FieldPath) -> Option<CheckAuth> {
        match (raw.username, raw.password_file, raw.api_key_file) {
            (Some(username), Some(password_file), None) => match Secret::read(&password_file) {
                Ok(password) if !username.is_empty() && !username.contains(':') => {
                    Some(CheckAuth::Basic { username, password })
                }
                Ok(_) => {
                    self.err(&path.field("username"), "expected a user name without ':'");
                    None
                }
                Err(why) => {
                    self.err(&path.field("password_file"), why);
                    None
                }
            },
            (None, None, Some(key_file)) => match Secret::read(&key_file) {
                Ok(key) => Some(CheckAuth::ApiKey(key)),
                Err(why) => {
                    self.err(&path.field("api_key_file"), why);
                    None
                }
            },
            (_, _, Some(_)) => {
                self.err(
                    &path.field("api_key_file"),
                    "expected either api_key_file or username with password_file, not both",
                );
                None
            }
            (Some(_), None, None) => {
                self.err(
                    &path.field("password_file"),
                    "missing: username needs a password_file",
                );
                None
            }
            (None, Some(_), None) => {
                self.err(
                    &path.field("username"),
                    "missing: password_file needs a username",
                );
                None
            }
            (None, None, None) => {
                self.err(
                    path,
                    "expected username with password_file, or api_key_file",
                );
                None
            }
        }
    }
}

fn read_certificates(file: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(file).map_err(|e| format!("cannot read {file}: {e}"))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{file} is not a PEM certificate bundle: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "{file} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        ));
    }
    Ok(certs)
}
