//! The human sentences: the `STATUS=` line systemd shows, why a server is out of rotation, why a
//! backend fails open, and times as operators read them. `notify.rs` sends them to systemd and
//! `admin/status.rs` puts them in `/status`; neither composes text of its own.

use std::io;
use std::sync::Arc;
use std::time::SystemTime;

use crate::backend::{Backend, Server};
use crate::server::Health;
use crate::state::Rejection;

/// RFC 3339 in UTC, to the second (for `/status`).
pub fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The local wall-clock time as `HH:MM:SS`, the way an operator reads the journal.
#[allow(unsafe_code)]
pub fn clock(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as libc::time_t;
    // SAFETY: `tm` is plain integers and one pointer, for which all-zero bytes (a null
    // `tm_zone`) is a valid value.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: localtime_r reads `secs` and only writes into the tm we own.
    let ok = unsafe { !libc::localtime_r(&secs, &mut tm).is_null() };
    if !ok {
        return humantime::format_rfc3339_seconds(t).to_string();
    }
    format!("{:02}:{:02}:{:02}", tm.tm_hour, tm.tm_min, tm.tm_sec)
}

/// The human status line: what is served and what is wrong, worst first.
///
/// `serving 1 listener; es: 3/3 servers up`,
/// `DEGRADED: es: 1/3 servers up (es-2: cluster status red; es-3: timed out after 1s)`,
/// `DOWN: es: no healthy server`, and a rejected reload in front of it until one succeeds.
/// Servers the roles filter keeps out are not counted as missing: `es: 3/3 servers up, 1
/// excluded by roles (m-1: dedicated cluster-manager node: not a client entry point)`.
pub fn status_line(
    listeners: usize,
    backends: &[Arc<Backend>],
    loaded_at: SystemTime,
    rejection: Option<&Rejection>,
) -> String {
    let mut worst = 0; // 0 fine, 1 degraded, 2 down
    let mut parts = Vec::new();
    for b in backends {
        let excluded = excluded(b);
        let total = b.servers.iter().filter(|s| !s.state.is_excluded()).count();
        let up = b.servers_up();
        let open_to = b.failing_open_to();
        if !open_to.is_empty() {
            worst = worst.max(1);
            parts.push(format!(
                "{}: 0/{total} healthy, FAIL-OPEN to {} reachable ({})",
                b.name(),
                open_to.len(),
                fail_open_reasons(b, &open_to)
            ));
        } else if up == 0 {
            worst = 2;
            parts.push(format!(
                "{}: no healthy server{}{excluded}",
                b.name(),
                reasons(b)
            ));
        } else if up < total {
            worst = worst.max(1);
            parts.push(format!(
                "{}: {up}/{total} servers up{}{excluded}",
                b.name(),
                reasons(b)
            ));
        } else {
            parts.push(format!("{}: {up}/{total} servers up{excluded}", b.name()));
        }
    }
    let health = match worst {
        0 => format!(
            "serving {listeners} listener{}; {}",
            if listeners == 1 { "" } else { "s" },
            parts.join("; ")
        ),
        1 => format!("DEGRADED: {}", parts.join("; ")),
        _ => format!("DOWN: {}", parts.join("; ")),
    };
    match rejection {
        Some(r) => format!(
            "reload rejected at {}: {}; still serving config loaded at {} | {health}",
            clock(r.at),
            r.reason,
            clock(loaded_at)
        ),
        None => health,
    }
}

/// `, 1 excluded by roles (m-1: dedicated cluster-manager node: not a client entry point)`.
fn excluded(b: &Backend) -> String {
    let out: Vec<String> = b
        .servers
        .iter()
        .filter(|s| s.state.state_word() == "excluded")
        .map(|s| format!("{}: {}", s.config.name, why_out(s)))
        .collect();
    if out.is_empty() {
        String::new()
    } else {
        format!(", {} excluded by roles ({})", out.len(), out.join("; "))
    }
}

/// ` (es-2: cluster status red; es-3: timed out after 1s)` for the servers out of rotation
/// (those the roles filter keeps out are said apart).
fn reasons(b: &Backend) -> String {
    let out: Vec<String> = b
        .servers
        .iter()
        .filter(|s| !s.state.in_rotation() && s.state.state_word() != "excluded")
        .map(|s| format!("{}: {}", s.config.name, why_out(s)))
        .collect();
    if out.is_empty() {
        String::new()
    } else {
        format!(" ({})", out.join("; "))
    }
}

/// `cluster status red; es-3 excluded: timed out after 1s`: why the servers that get traffic
/// failed (their colour), then each server kept out even so, with its reason.
pub fn fail_open_reasons(b: &Backend, open_to: &[&Server]) -> String {
    let mut colours: Vec<String> = Vec::new();
    for s in open_to {
        let why = why_out(s);
        if !colours.contains(&why) {
            colours.push(why);
        }
    }
    let excluded = b
        .servers
        .iter()
        .filter(|s| !open_to.iter().any(|o| std::ptr::eq(*o, *s)))
        .map(|s| format!("{} excluded: {}", s.config.name, why_out(s)));
    colours
        .into_iter()
        .chain(excluded)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why a server is out of rotation, in a few words.
fn why_out(s: &Server) -> String {
    let state = s.state.state_word();
    let h = s.state.health.view();
    let reason = match state {
        "excluded" => s.state.exclusion(),
        _ => h.reason,
    };
    out_of_rotation(state, h.health, reason.as_deref())
}

/// Why a server in `state` (with `health` and the `reason` `/status` gives it) is out of
/// rotation, in the words of the STATUS line; the status page says it the same way.
pub fn out_of_rotation(state: &str, health: &str, reason: Option<&str>) -> String {
    match state {
        "drain" => "draining".to_owned(),
        "maint" => "in maintenance".to_owned(),
        "excluded" => reason.unwrap_or("excluded by its roles").to_owned(),
        _ if health == Health::Unknown.as_str() => "not checked yet".to_owned(),
        _ => reason.unwrap_or("down").to_owned(),
    }
}

/// A connect error as an operator would say it.
pub fn describe_io(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".into(),
        io::ErrorKind::ConnectionReset => "connection reset".into(),
        io::ErrorKind::TimedOut => "connect timed out".into(),
        _ => match e.raw_os_error() {
            Some(libc::EHOSTUNREACH) => "no route to host".into(),
            Some(libc::ENETUNREACH) => "network unreachable".into(),
            _ => e.to_string(),
        },
    }
}
