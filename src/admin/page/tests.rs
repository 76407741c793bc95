use std::time::{Duration, SystemTime};

use serde_json::json;

use super::*;

const HOSTILE: &str = "<script>alert(\"x\")</script>&'";

fn at(t: &str) -> SystemTime {
    humantime::parse_rfc3339(t).expect("a time")
}

fn server(name: &str, state: &str, health: &str, reason: Option<&str>) -> Value {
    json!({
        "name": name, "source": "configured", "address": "127.0.0.1:9200",
        "state": state, "since": "2026-11-30T05:00:00Z", "health": health,
        "reason": reason, "receiving_traffic": state == "up",
        "active_connections": 2, "connections_total": 7,
        "requests_in_flight": 1, "requests_total": 40,
        "sent_bytes_total": 1536, "received_bytes_total": 3 * 1024 * 1024,
    })
}

fn doc(servers: Vec<Value>) -> Value {
    json!({
        "version": "0.1.0",
        "config": { "file": "/etc/roundhouse/roundhouse.yaml", "loaded_at": "2026-11-30T04:00:00Z" },
        "last_reload": { "at": "2026-11-30T04:00:00Z", "result": "success", "reason": null },
        "listeners": [{ "name": "es", "address": "127.0.0.1:9200", "backend": "es",
                        "max_connections": 1000, "active_connections": 2, "connections_total": 7 }],
        "backends": [{ "name": "es", "servers_up": 1, "servers_excluded": 0, "balance": "round_robin",
                       "discovery": null, "fail_open": false, "fail_open_reason": null,
                       "servers": servers }],
    })
}

#[test]
fn escapes_what_html_gives_meaning() {
    assert_eq!(
        escape(HOSTILE),
        "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;"
    );
    assert_eq!(escape("es-1 [::1]:9200"), "es-1 [::1]:9200");
}

#[test]
fn a_reason_quoting_a_node_is_shown_escaped() {
    let reason = format!("cluster_name is {HOSTILE}, want prod");
    let page = render(
        &doc(vec![server("es-1", "down", "down", Some(&reason))]),
        &format!("DOWN: es: no healthy server (es-1: {reason})"),
        at("2026-11-30T05:04:12Z"),
    );
    assert!(!page.contains("<script"), "{page}");
    assert!(
        page.contains(
            "cluster_name is &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;, want prod"
        ),
        "{page}"
    );
    assert!(page.contains("<title>roundhouse: DOWN</title>"), "{page}");
    assert!(page.contains("class=\"line down\""), "{page}");
}

#[test]
fn every_server_with_its_state_reason_and_counters() {
    let page = render(
        &doc(vec![
            server("es-1", "up", "up", None),
            server("es-2", "drain", "up", None),
            server("es-3", "down", "unknown", None),
            server(
                "m-1",
                "excluded",
                "up",
                Some("dedicated cluster-manager node"),
            ),
        ]),
        "DEGRADED: es: 1/3 servers up",
        at("2026-11-30T05:04:12Z"),
    );
    for want in [
        ">es-1<",
        "<span class=\"state drain\">drain</span>",
        ">draining<",
        ">not checked yet<",
        ">dedicated cluster-manager node<",
        "2 open, 7 total",
        "1 in flight, 40 total",
        "1.5 KiB sent, 3.0 MiB received",
        "2026-11-30T05:00:00Z <span class=\"when\">(4m 12s ago)</span>",
        "<meta http-equiv=\"refresh\" content=\"5\">",
        "<meta name=\"viewport\"",
    ] {
        assert!(page.contains(want), "{want} in {page}");
    }
}

#[test]
fn a_rejected_reload_is_said_with_its_reason() {
    let mut d = doc(vec![server("es-1", "up", "up", None)]);
    d["last_reload"] = json!({ "at": "2026-11-30T05:00:00Z", "result": "failure",
                               "reason": "backends[0].servers[1].address: <empty>" });
    let page = render(
        &d,
        "reload rejected at 05:00:00: x; still serving config loaded at 04:00:00 | serving 1 listener; es: 1/1 servers up",
        at("2026-11-30T05:00:01Z"),
    );
    assert!(
        page.contains("<strong>rejected</strong>: backends[0].servers[1].address: &lt;empty&gt;"),
        "{page}"
    );
    assert!(
        page.contains("<title>roundhouse: reload rejected</title>"),
        "{page}"
    );
}

#[test]
fn ages_and_sizes_read_at_a_glance() {
    assert_eq!(age(Duration::from_secs(42)), "42s");
    assert_eq!(age(Duration::from_secs(3 * 3600 + 5 * 60 + 9)), "3h 5m");
    assert_eq!(age(Duration::from_secs(2 * 86400 + 4 * 3600)), "2d 4h");
    assert_eq!(bytes(512), "512 B");
    assert_eq!(bytes(20 * 1024 * 1024), "20.0 MiB");
}
