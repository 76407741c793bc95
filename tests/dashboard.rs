//! The Grafana dashboard (conf/grafana/roundhouse.json) and the alert rules
//! (conf/prometheus/roundhouse-alerts.yml) against what roundhouse really exports: every metric
//! they name exists, and, with a real Prometheus scraping a real roundhouse through traffic, a
//! reload and a node going down, every panel's query has data and every rule evaluates.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::monitoring::*;
use common::prometheus::{Prometheus, SCRAPED};
use common::promql::{Selector, each_alternative, selectors};
use common::*;

/// Backend `es` over these nodes, made one cluster that it discovers: the discovery series
/// exist only for a backend that discovers, and the dashboard has panels for them.
fn discovering_es(nodes: &[FakeNode]) -> Backend {
    common::cluster::link(&nodes.iter().collect::<Vec<_>>());
    es_backend(nodes)
        .check("cluster_name", "prod")
        .check("min_nodes", "2")
        .with(
            "discovery",
            "{ type: elasticsearch, interval: 500ms, forget_after: 3 }",
        )
}

#[test]
fn the_promql_scanner_finds_every_selector_and_nothing_else() {
    let found = selectors(
        r#"histogram_quantile(0.99, sum by (backend, le) (rate(a_bucket{x="}", y=~"a|b"}[5m])))
           - on (job) group_left (version) b offset 5m > bool 2 and c unless count without (z) (d)
           or sum(e) by (f) or max by (g) (h)"#,
    );
    let texts: Vec<String> = found.iter().map(Selector::text).collect();
    assert_eq!(
        texts,
        [r#"a_bucket{x="}", y=~"a|b"}"#, "b", "c", "d", "e", "h"]
    );
}

#[test]
fn a_regex_of_plain_words_is_checked_one_word_at_a_time() {
    assert_eq!(
        each_alternative(r#"s{a=~"x|y", b="z", c=~"u|v"}"#),
        [
            r#"s{a="x", b="z", c="u"}"#,
            r#"s{a="x", b="z", c="v"}"#,
            r#"s{a="y", b="z", c="u"}"#,
            r#"s{a="y", b="z", c="v"}"#
        ]
    );
    assert_eq!(each_alternative(r#"s{a=~"x.*"}"#), [r#"s{a=~"x.*"}"#]);
}

#[test]
fn the_dashboard_is_importable_json_whose_queries_all_follow_its_variables() {
    let d = dashboard();
    assert_eq!(d["uid"], "roundhouse");
    assert!(d["schemaVersion"].as_u64().is_some_and(|v| v >= 36));
    let vars: Vec<&str> = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(vars, ["datasource", "job", "instance", "backend"]);
    let backend = &d["templating"]["list"][3];
    assert_eq!(backend["multi"], true);
    assert_eq!(backend["includeAll"], true);
    for (name, q) in variable_queries(&d) {
        let (metric, label) = label_values_call(&q);
        assert_eq!(label, name, "{name}: {q}");
        assert!(metric.starts_with("roundhouse_"), "{name}: {q}");
    }

    let mut ids = BTreeSet::new();
    let mut cells: Vec<(String, [u64; 4])> = Vec::new();
    for p in panels(&d) {
        let title = p["title"].as_str().expect("every panel has a title");
        assert!(
            ids.insert(p["id"].as_u64().expect("id")),
            "id again: {title}"
        );
        let g = &p["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| g[k].as_u64().expect("gridPos"));
        assert!(x + w <= 24, "{title} is wider than the dashboard");
        for (other, [ox, oy, ow, oh]) in &cells {
            let apart = x + w <= *ox || ox + ow <= x || y + h <= *oy || oy + oh <= y;
            assert!(apart, "{title} overlaps {other}");
        }
        cells.push((title.to_owned(), [x, y, w, h]));
        if p["type"] == "row" {
            continue;
        }
        assert!(
            p["description"].as_str().is_some_and(|s| !s.is_empty()),
            "{title}: no description"
        );
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for ds in std::iter::once(&p["datasource"]).chain(targets.iter().map(|t| &t["datasource"]))
        {
            assert_eq!(ds["type"], "prometheus", "{title}");
            assert_eq!(ds["uid"], "${datasource}", "{title}");
        }
    }

    // every query shows this roundhouse's series only, and the chosen backends' only
    for (at, expr) in panel_queries(&d) {
        for s in selectors(&expr) {
            for m in [r#"job="$job""#, r#"instance="$instance""#] {
                assert!(s.matchers.contains(m), "{at}: {} lacks {m}", s.text());
            }
            let per_backend = [
                "roundhouse_server_",
                "roundhouse_backend_",
                "roundhouse_elasticsearch_",
            ];
            if per_backend.iter().any(|p| s.name.starts_with(p)) {
                let m = r#"backend=~"$backend""#;
                assert!(s.matchers.contains(m), "{at}: {} lacks {m}", s.text());
            }
        }
    }
}

#[tokio::test]
async fn every_metric_the_dashboard_and_the_alerts_name_is_exported() {
    let nodes = three_nodes().await;
    let rh = serve(discovering_es(&nodes)).await;
    let exported = exported_names(&Scrape::from(rh.admin().await).await.text);
    let mut checked = 0;
    for (at, s) in all_selectors(&dashboard()) {
        // `up` is the one series Prometheus makes itself, for every target it scrapes
        if s.name == "up" {
            continue;
        }
        assert!(
            exported.contains(&s.name),
            "{at}: {} is not in roundhouse's /metrics, which has:\n{exported:#?}",
            s.name
        );
        checked += 1;
    }
    assert!(checked > 30, "only {checked} selectors found");
}

#[tokio::test]
#[ignore = "needs prometheus (Debian package prometheus); .ci/run installs it and runs: cargo test --test dashboard -- --ignored"]
async fn every_panel_and_every_alert_rule_has_data_in_a_real_prometheus() {
    let mut nodes = three_nodes().await;
    let config = ConfigBuilder::new()
        .listener("es", "es")
        .backend(discovering_es(&nodes))
        .yaml();
    let mut rh = Roundhouse::start(&config).await;
    let (addr, admin) = (rh.listener("es").await, rh.admin().await);
    let prom = Prometheus::start(
        "roundhouse",
        admin,
        &conf("prometheus/roundhouse-alerts.yml"),
    )
    .await;
    let scraped = |e: &str| [("scrape".to_owned(), e.to_owned())];
    // a first scrape before anything happens, so that what follows shows as increases
    prom.until_all_have_data(&scraped(r#"up{job="roundhouse"} == 1"#), SCRAPED)
        .await;

    // clients all along, a reload, and one node going down
    let traffic = tokio::spawn(async move {
        loop {
            let _ = node_name(addr).await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    rh.reload(&config).await;
    nodes.pop().expect("three nodes").stop().await;
    rh.notify.wait_status(&["DEGRADED", "es-3"], SOON).await;
    for e in [
        r#"roundhouse_config_reloads_total{result="success"} == 2"#,
        r#"roundhouse_server_state{server="es-3", state="down"} == 1"#,
        r#"rate(roundhouse_server_connections_total{server="es-1"}[1m]) > 0"#,
        r#"roundhouse_discovery_refreshes_total{result="unchanged"} > 0"#,
    ] {
        prom.until_all_have_data(&scraped(e), SCRAPED).await;
    }

    // every panel, as Grafana would ask for it with this roundhouse and backend es chosen
    let d = dashboard();
    let instance = admin.to_string();
    let vars = Vars {
        job: "roundhouse",
        instance: &instance,
        backend: "es",
    };
    let queries: Vec<(String, String)> = panel_queries(&d)
        .into_iter()
        .map(|(at, e)| (at, vars.substitute(&e)))
        .collect();
    assert!(queries.len() >= 20, "only {} queries", queries.len());
    prom.until_all_have_data(&queries, SCRAPED).await;

    // the variables offer this roundhouse and its backend
    for (name, q) in variable_queries(&d) {
        let (metric, label) = label_values_call(&q);
        let values = prom
            .label_values(label, &vars.substitute(metric))
            .await
            .unwrap_or_else(|e| panic!("variable {name}: {e}"));
        let want = match name.as_str() {
            "job" => vars.job,
            "instance" => vars.instance,
            _ => vars.backend,
        };
        assert!(values.iter().any(|v| v == want), "{name}: {values:?}");
    }

    // every selector of the dashboard and the rules matches series (no label or value that
    // roundhouse does not export)
    let matched: Vec<(String, String)> = all_selectors(&d)
        .into_iter()
        .flat_map(|(at, s)| {
            each_alternative(&vars.substitute(&s.text()))
                .into_iter()
                .map(move |s| (format!("{at}: selector"), s))
        })
        .collect();
    prom.until_all_have_data(&matched, SCRAPED).await;

    // every rule has been evaluated on this data without an error, and the node that went down
    // makes RoundhouseBackendDegraded pending (it fires after its 10 minutes)
    let degraded =
        r#"ALERTS{alertname="RoundhouseBackendDegraded", alertstate="pending", backend="es"}"#;
    prom.until_all_have_data(&scraped(degraded), SCRAPED).await;
    let rules = prom.api("/api/v1/rules").await.expect("GET /api/v1/rules");
    let mut evaluated = 0;
    for group in rules["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            assert_eq!(rule["health"], "ok", "{rule:#}");
            assert!(
                !rule["lastEvaluation"]
                    .as_str()
                    .unwrap_or("0001")
                    .starts_with("0001")
            );
            evaluated += 1;
        }
    }
    assert_eq!(evaluated, rule_exprs().len());
    traffic.abort();
}
