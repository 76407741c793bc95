//! The status page at `/`: the `/status` document as one HTML page for people, the way
//! haproxy's users read its stats page.
//!
//! Plain HTML and a style sheet, no script: it reads the same without JavaScript, reloads
//! itself with `<meta http-equiv="refresh">`, and on a narrow screen each server's row becomes
//! a block of labelled lines. Everything that comes from outside (server names, addresses,
//! reasons that quote a node's answer, the configuration's path) goes through [`escape`];
//! the admin endpoint also sends a Content-Security-Policy that forbids scripts, in case.

use std::fmt::Write;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::words;

/// Seconds between the page's own reloads.
pub const REFRESH_SECS: u32 = 5;

/// The page for the `/status` document `status` and the STATUS line `line`, as of `now`.
pub fn render(status: &Value, line: &str, now: SystemTime) -> String {
    let mut out = String::with_capacity(16 * 1024);
    head(&mut out, status, line);
    summary(&mut out, status, line, now);
    listeners(&mut out, status);
    for b in list(&status["backends"]) {
        backend(&mut out, b, now);
    }
    out.push_str("</main>\n</body>\n</html>\n");
    out
}

/// `s` made safe as HTML text and as a quoted attribute value.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// How bad the STATUS line says things are: the class of the line and the page's title.
fn verdict(line: &str) -> (&'static str, &'static str) {
    // a rejected reload comes first in the line, before " | " and the health
    let health = line.rsplit(" | ").next().unwrap_or(line);
    if health.starts_with("DOWN:") {
        ("down", "DOWN")
    } else if health.starts_with("DEGRADED:") {
        ("degraded", "DEGRADED")
    } else if line.starts_with("reload rejected") {
        ("degraded", "reload rejected")
    } else {
        ("ok", "ok")
    }
}

const STYLE: &str = "\
body{font:15px/1.4 system-ui,sans-serif;margin:0 auto;padding:.5em 1em;max-width:80em;color:#111;background:#fff}
h1{font-size:1.3em;margin:.2em 0}h1 small{font-weight:normal;color:#555}
h2{font-size:1.1em;margin:1.2em 0 .3em}
p{margin:.3em 0}.note{color:#555;font-size:.9em}
.line{padding:.5em .7em;border-left:.4em solid;font-weight:600;overflow-wrap:anywhere}
.line.ok{border-color:#2a7d2a;background:#eef7ee}.line.degraded{border-color:#c77700;background:#fff6e5}
.line.down{border-color:#c62828;background:#fdecea}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;vertical-align:top;padding:.3em .5em;border-bottom:1px solid #ddd;overflow-wrap:anywhere}
th{background:#f3f3f3;font-weight:600}
.addr,.when{color:#555;font-size:.9em}
.state{display:inline-block;padding:0 .4em;border-radius:.2em;font-weight:600;color:#fff;background:#666}
.state.up{background:#2a7d2a}.state.down{background:#c62828}.state.drain,.state.maint{background:#1f5fa8}
.state.excluded{background:#777}
@media (max-width:700px){
table.servers thead{display:none}
table.servers,table.servers tbody,table.servers tr,table.servers td{display:block;width:auto}
table.servers tr{border:1px solid #ccc;border-radius:.3em;margin:0 0 .6em;padding:.3em}
table.servers td{border:none;padding:.1em .3em}
table.servers td:empty{display:none}
table.servers td::before{content:attr(data-label) \": \";font-weight:600;color:#333}
}
";

fn head(out: &mut String, status: &Value, line: &str) {
    let (_, title) = verdict(line);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">\n\
         <title>roundhouse: {title}</title>\n<style>\n{STYLE}</style>\n</head>\n<body>\n<main>\n\
         <h1>roundhouse <small>{}</small></h1>\n",
        escape(&text(&status["version"])),
    );
}

fn summary(out: &mut String, status: &Value, line: &str, now: SystemTime) {
    let (class, _) = verdict(line);
    let _ = writeln!(
        out,
        "<p class=\"line {class}\" id=\"status-line\">{}</p>",
        escape(line)
    );
    let config = &status["config"];
    let _ = writeln!(
        out,
        "<p>Configuration <code>{}</code>, loaded {}.</p>",
        escape(&text(&config["file"])),
        when(&config["loaded_at"], now)
    );
    let reload = &status["last_reload"];
    let outcome = match reload["result"].as_str() {
        Some("failure") => format!(
            "<strong>rejected</strong>: {} (the configuration loaded before still serves)",
            escape(&text(&reload["reason"]))
        ),
        _ => "applied".to_owned(),
    };
    let _ = writeln!(
        out,
        "<p id=\"last-reload\">Last reload {}: {outcome}.</p>",
        when(&reload["at"], now)
    );
    let _ = writeln!(
        out,
        "<p class=\"note\">This page reloads itself every {REFRESH_SECS} seconds. \
         The same as JSON: <a href=\"/status\">/status</a>; metrics: <a href=\"/metrics\">/metrics</a>.</p>"
    );
}

fn listeners(out: &mut String, status: &Value) {
    let all = list(&status["listeners"]);
    if all.is_empty() {
        return;
    }
    out.push_str(
        "<h2>Listeners</h2>\n<table class=\"servers\">\n<thead><tr><th>listener</th><th>address</th>\
         <th>backend</th><th>connections</th></tr></thead>\n<tbody>\n",
    );
    for l in all {
        let max = match l["max_connections"].as_u64() {
            Some(m) => format!(" of at most {m}"),
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "<tr><td data-label=\"listener\">{}</td><td data-label=\"address\">{}</td>\
             <td data-label=\"backend\">{}</td><td data-label=\"connections\">{} open{max}, {} accepted</td></tr>",
            escape(&text(&l["name"])),
            escape(&text(&l["address"])),
            escape(&text(&l["backend"])),
            text(&l["active_connections"]),
            text(&l["connections_total"]),
        );
    }
    out.push_str("</tbody>\n</table>\n");
}

fn backend(out: &mut String, b: &Value, now: SystemTime) {
    let servers = list(&b["servers"]);
    let excluded = b["servers_excluded"].as_u64().unwrap_or(0);
    let counted = (servers.len() as u64).saturating_sub(excluded);
    let excluded = match excluded {
        0 => String::new(),
        n => format!(", {n} excluded by roles"),
    };
    let _ = writeln!(
        out,
        "<h2>Backend {}: {}/{counted} servers up{excluded}</h2>",
        escape(&text(&b["name"])),
        text(&b["servers_up"]),
    );
    let _ = write!(
        out,
        "<p class=\"note\">balance {}",
        escape(&text(&b["balance"]))
    );
    if let Some(d) = b["discovery"].as_object() {
        discovery(out, d, now);
    }
    out.push_str(".</p>\n");
    if b["fail_open"].as_bool() == Some(true) {
        let _ = writeln!(
            out,
            "<p class=\"line degraded\">FAIL-OPEN: {}</p>",
            escape(&text(&b["fail_open_reason"]))
        );
    }
    out.push_str(
        "<table class=\"servers\">\n<thead><tr><th>server</th><th>state</th><th>since</th>\
         <th>reason</th><th>connections</th><th>requests</th><th>bytes</th></tr></thead>\n<tbody>\n",
    );
    for s in servers {
        server(out, s, now);
    }
    out.push_str("</tbody>\n</table>\n");
}

fn discovery(out: &mut String, d: &serde_json::Map<String, Value>, now: SystemTime) {
    let _ = write!(
        out,
        "; discovery every {}, {} server(s) discovered",
        escape(&text(&d["interval"])),
        text(&d["servers_discovered"])
    );
    let Some(last) = d["last_refresh"].as_object() else {
        out.push_str(", not refreshed yet");
        return;
    };
    let _ = write!(
        out,
        ", last refresh {}: {}",
        when(&last["at"], now),
        escape(&text(&last["result"]))
    );
    if let Some(reason) = last["reason"].as_str() {
        let _ = write!(out, " ({})", escape(reason));
    }
}

fn server(out: &mut String, s: &Value, now: SystemTime) {
    let state = s["state"].as_str().unwrap_or("unknown");
    let reason = match state {
        "up" => String::new(),
        _ => {
            let mut why = words::out_of_rotation(
                state,
                s["health"].as_str().unwrap_or(""),
                s["reason"].as_str(),
            );
            if s["receiving_traffic"].as_bool() == Some(true) {
                why.push_str("; receives traffic while the backend fails open");
            }
            why
        }
    };
    let source = match s["source"].as_str() {
        Some("discovered") => ", discovered",
        _ => "",
    };
    let _ = writeln!(
        out,
        "<tr class=\"server\"><td data-label=\"server\">{}<br><span class=\"addr\">{}{source}</span></td>\
         <td data-label=\"state\"><span class=\"state {}\">{}</span></td>\
         <td data-label=\"since\">{}</td>\
         <td data-label=\"reason\" class=\"reason\">{}</td>\
         <td data-label=\"connections\">{} open, {} total</td>\
         <td data-label=\"requests\">{} in flight, {} total</td>\
         <td data-label=\"bytes\">{} sent, {} received</td></tr>",
        escape(&text(&s["name"])),
        escape(&text(&s["address"])),
        escape(state),
        escape(state),
        when(&s["since"], now),
        escape(&reason),
        text(&s["active_connections"]),
        text(&s["connections_total"]),
        text(&s["requests_in_flight"]),
        text(&s["requests_total"]),
        bytes(s["sent_bytes_total"].as_u64().unwrap_or(0)),
        bytes(s["received_bytes_total"].as_u64().unwrap_or(0)),
    );
}

/// The array in `v`, or nothing.
fn list(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// A string or number as text; nothing for null.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// `2026-11-30T05:40:00Z <span>(4m 12s ago)</span>`, escaped; the time alone if it does not parse.
fn when(v: &Value, now: SystemTime) -> String {
    let t = text(v);
    let ago = humantime::parse_rfc3339(&t)
        .ok()
        .and_then(|at| now.duration_since(at).ok())
        .map(|d| format!(" <span class=\"when\">({} ago)</span>", age(d)))
        .unwrap_or_default();
    format!("{}{ago}", escape(&t))
}

/// A duration the way one reads it at a glance: `42s`, `4m 12s`, `3h 5m`, `2d 4h`.
fn age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

/// Bytes in binary units, to one decimal: `512 B`, `1.5 KiB`, `20.0 MiB`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests;
