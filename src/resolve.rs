//! Resolving a validated configuration's host names: the step between a checked [`Config`] and
//! a running snapshot, shared by `check`, startup and reload. Off the data path, bounded in time.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::config::{self, Config, ConfigError, ConfigErrors, FieldPath, Name};

/// How long a host name may take to resolve at (re)load.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// A validated configuration whose server names have been resolved.
pub struct Prepared {
    pub config: Config,
    pub(crate) addrs: HashMap<(Name, Name), SocketAddr>,
}

impl Prepared {
    /// Listeners whose address this host does not hold right now, in words: with `freebind` a
    /// note (fine for a backup balancer), without it a warning that `run` will refuse.
    pub fn address_warnings(&self) -> Vec<String> {
        self.config
            .listeners
            .iter()
            .enumerate()
            .filter(|(_, l)| !holds(l.bind.ip()))
            .map(|(i, l)| {
                if l.freebind {
                    format!(
                        "note: listeners[{i}].bind: this host does not hold {} now; freebind: true lets roundhouse listen on it anyway (it serves once the address arrives)",
                        l.bind.ip()
                    )
                } else {
                    format!(
                        "warning: listeners[{i}].bind: this host does not hold {}: `roundhouse run` will refuse to start (exit 78) unless the listener says freebind: true or the host sets net.ipv4.ip_nonlocal_bind=1",
                        l.bind.ip()
                    )
                }
            })
            .collect()
    }

    /// Where a server resolved to.
    pub fn addr(&self, backend: &str, server: &str) -> Option<SocketAddr> {
        self.addrs
            .get(&(Name::new(backend), Name::new(server)))
            .copied()
    }
}

/// Reads, validates and resolves a configuration file: what `check`, startup and reload share.
pub async fn prepare(path: &Path) -> Result<Prepared, ConfigErrors> {
    let config = config::load(path)?;
    let mut lookups = tokio::task::JoinSet::new();
    let mut addrs = HashMap::new();
    for (bi, b) in config.backends.iter().enumerate() {
        for (si, s) in b.servers.iter().enumerate() {
            let key = (b.name.clone(), s.name.clone());
            if let Some(ip) = s.address.ip() {
                addrs.insert(key, SocketAddr::new(ip, s.address.port));
                continue;
            }
            let address = s.address.clone();
            let field = FieldPath::default()
                .field("backends")
                .index(bi)
                .field("servers")
                .index(si);
            lookups.spawn(async move {
                let host = (address.host.as_str(), address.port);
                let found =
                    tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host(host)).await;
                let result = match found {
                    Ok(Ok(mut it)) => it
                        .next()
                        .ok_or_else(|| format!("{:?} resolves to no address", address.host)),
                    Ok(Err(e)) => Err(format!("cannot resolve {:?}: {e}", address.host)),
                    Err(_) => Err(format!(
                        "cannot resolve {:?}: no answer within {}s",
                        address.host,
                        RESOLVE_TIMEOUT.as_secs()
                    )),
                };
                (key, field, result)
            });
        }
    }
    let mut errors = Vec::new();
    while let Some(done) = lookups.join_next().await {
        let (key, field, result) = done.expect("a lookup task does not panic");
        match result {
            Ok(addr) => {
                addrs.insert(key, addr);
            }
            Err(message) => errors.push(ConfigError::Invalid {
                file: path.to_owned(),
                path: field.to_string(),
                message,
            }),
        }
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    Ok(Prepared { config, addrs })
}

/// True when this host holds `ip` now: a bind on it works (the unspecified address, `0.0.0.0`
/// or `::`, is everyone's; with `net.ipv4.ip_nonlocal_bind=1` every address is).
fn holds(ip: std::net::IpAddr) -> bool {
    ip.is_unspecified()
        || !std::net::TcpListener::bind(SocketAddr::new(ip, 0))
            .is_err_and(|e| e.raw_os_error() == Some(libc::EADDRNOTAVAIL))
}
