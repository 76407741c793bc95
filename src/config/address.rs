//! Names and addresses as written in the file: what is accepted and why not.

use std::net::SocketAddr;

use super::HostPort;

/// Names end up in metric labels, URLs of the admin API and log lines: keep them plain.
pub(super) fn check_name(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("expected a non-empty name");
    }
    if s.len() > 128 {
        return Err("expected at most 128 characters");
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "._:-[]@".contains(c);
    if !s.chars().all(allowed) {
        return Err("expected letters, digits and . _ : - [ ] @ only");
    }
    Ok(())
}

/// Parses `host:port` or `[v6]:port`.
pub(super) fn parse_host_port(s: &str) -> Result<HostPort, String> {
    const EXPECTED: &str = "expected host:port such as 10.0.0.11:9200 or es-1.internal:9200";
    if let Ok(sa) = s.parse::<SocketAddr>() {
        if sa.port() == 0 {
            return Err(format!("port 0 is not a server port; {EXPECTED}"));
        }
        return Ok(HostPort {
            host: sa.ip().to_string(),
            port: sa.port(),
        });
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("no port; {EXPECTED}"));
    };
    let port: u16 = match port.parse() {
        Ok(p) if p > 0 => p,
        _ => return Err(format!("invalid port {port:?}; {EXPECTED}")),
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    let numeric_labels = host
        .split('.')
        .filter(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_digit()))
        .count();
    let labels = host.split('.').count();
    // A name made mostly of numbers ("10.0.0.x") is a mistyped IP address, not a host name.
    let looks_numeric = numeric_labels == labels || (labels == 4 && numeric_labels >= 3);
    if looks_numeric && labels == 4 {
        return Err(format!("{host:?} is not a valid IP address; {EXPECTED}"));
    }
    if host.is_empty() || host.len() > 253 || looks_numeric || !host.split('.').all(label_ok) {
        return Err(format!(
            "{host:?} is neither an IP address nor a host name; {EXPECTED}"
        ));
    }
    Ok(HostPort {
        host: host.to_owned(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        assert_eq!(parse_host_port("10.0.0.1:9200").unwrap().port, 9200);
        assert_eq!(parse_host_port("[::1]:9200").unwrap().host, "::1");
        assert_eq!(
            parse_host_port("es-3.internal:9201").unwrap().host,
            "es-3.internal"
        );
        assert!(
            parse_host_port("10.0.0.x:9200").is_err(),
            "a mistyped IP is not a host name"
        );
        assert!(parse_host_port("10.0.0.300:9200").is_err());
        assert!(parse_host_port("es-1").is_err());
        assert!(parse_host_port("es-1:0").is_err());
        assert!(parse_host_port("es 1:9200").is_err());
        assert!(parse_host_port(":9200").is_err());
    }

    #[test]
    fn names_are_plain() {
        assert!(check_name("es-3").is_ok());
        assert!(check_name("10.0.0.1:9200").is_ok());
        assert!(check_name("a/b").is_err());
        assert!(check_name("").is_err());
    }
}
