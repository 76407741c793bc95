//! The Grafana dashboard (conf/grafana/roundhouse.json) and the alert rules
//! (conf/prometheus/roundhouse-alerts.yml) against what roundhouse really exports: every metric
//! they name exists, and, with a real Prometheus scraping a real roundhouse through traffic, a
//! reload and a node going down, every panel's query has data and every rule evaluates.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use common::prometheus::Prometheus;
use common::promql::{Selector, selectors};
use common::*;
use serde_json::Value;

fn conf(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("conf")
        .join(path)
}

fn dashboard() -> Value {
    let text = std::fs::read_to_string(conf("grafana/roundhouse.json")).expect("read dashboard");
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

/// Every panel, rows' collapsed panels included.
fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels: a list") {
        out.push(p);
        out.extend(p["panels"].as_array().into_iter().flatten());
    }
    out
}

/// (where, PromQL) of every panel target.
fn panel_queries(d: &Value) -> Vec<(String, String)> {
    panels(d)
        .into_iter()
        .flat_map(|p| {
            p["targets"].as_array().into_iter().flatten().map(move |t| {
                let title = p["title"].as_str().unwrap_or("?");
                let at = format!("panel {title:?} query {}", t["refId"]);
                (
                    at,
                    t["expr"]
                        .as_str()
                        .expect("every target has expr")
                        .to_owned(),
                )
            })
        })
        .collect()
}

/// The template variables of type query: (name, query).
fn variable_queries(d: &Value) -> Vec<(String, String)> {
    d["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .filter(|v| v["type"] == "query")
        .map(|v| {
            let q = &v["query"];
            let q = q.as_str().or_else(|| q["query"].as_str()).expect("query");
            (v["name"].as_str().unwrap().to_owned(), q.to_owned())
        })
        .collect()
}

/// `label_values(METRIC{...}, LABEL)` split into the selector and the label.
fn label_values_call(query: &str) -> (&str, &str) {
    let inner = query
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not label_values(…): {query}"));
    let (metric, label) = inner.rsplit_once(',').expect("label_values(metric, label)");
    (metric.trim(), label.trim())
}

/// (alert, PromQL) of every rule.
fn rule_exprs() -> Vec<(String, String)> {
    let text =
        std::fs::read_to_string(conf("prometheus/roundhouse-alerts.yml")).expect("read rules");
    let rules: serde_yaml::Value = serde_yaml::from_str(&text).expect("the rules are YAML");
    rules["groups"]
        .as_sequence()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_sequence().expect("rules").iter())
        .map(|r| {
            let name = r["alert"].as_str().or(r["record"].as_str()).unwrap_or("?");
            (
                format!("rule {name}"),
                r["expr"].as_str().expect("expr").to_owned(),
            )
        })
        .collect()
}

/// The values Grafana would put in place of the dashboard's variables for this roundhouse.
struct Vars<'a> {
    job: &'a str,
    instance: &'a str,
    backend: &'a str,
}

impl Vars<'_> {
    /// The expression as Grafana sends it; `$__rate_interval` and `$__interval` become 1m,
    /// which covers everything a test run has scraped.
    fn substitute(&self, expr: &str) -> String {
        let mut e = expr.to_owned();
        for (name, value) in [
            ("__rate_interval", "1m"),
            ("__interval", "1m"),
            ("job", self.job),
            ("instance", self.instance),
            ("backend", self.backend),
        ] {
            e = e
                .replace(&format!("${{{name}}}"), value)
                .replace(&format!("${name}"), value);
        }
        assert!(!e.contains('$'), "a variable the test does not know: {e}");
        e
    }
}

/// Names of the samples in a `/metrics` text.
fn exported_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// Every selector of the dashboard's panels and variables and of the alert rules, with where
/// it was found.
fn all_selectors(d: &Value) -> Vec<(String, Selector)> {
    let mut exprs = panel_queries(d);
    exprs.extend(variable_queries(d).into_iter().map(|(name, q)| {
        (
            format!("variable {name}"),
            label_values_call(&q).0.to_owned(),
        )
    }));
    exprs.extend(rule_exprs());
    exprs
        .into_iter()
        .flat_map(|(at, e)| selectors(&e).into_iter().map(move |s| (at.clone(), s)))
        .collect()
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
    let rh = serve(es_backend(&nodes)).await;
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

/// The selector once for each alternative of a regex matcher that lists plain words
/// (`state=~"drain|maint"` gives `state="drain"` and `state="maint"`), so that a misspelt
/// alternative cannot hide behind a good one; the selector itself if it has none.
fn each_alternative(selector: &str) -> Vec<String> {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '|');
    for (start, _) in selector.match_indices("=~\"") {
        let rest = &selector[start + 3..];
        let Some(end) = rest.find('"') else { continue };
        let words = &rest[..end];
        if words.contains('|') && words.chars().all(plain) {
            let regex = format!("=~\"{words}\"");
            return words
                .split('|')
                .flat_map(|w| each_alternative(&selector.replacen(&regex, &format!("=\"{w}\""), 1)))
                .collect();
        }
    }
    vec![selector.to_owned()]
}

/// Polls until every expression has a result with a number in it; panics at the deadline with
/// those that have none.
async fn until_all_have_data(prom: &Prometheus, exprs: &[(String, String)], within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let mut missing = Vec::new();
        for (at, e) in exprs {
            match prom.query(e).await {
                Ok(r) if r.iter().any(has_number) => {}
                Ok(r) => missing.push(format!("{at}: no number in {r:?}\n  {e}")),
                Err(err) => missing.push(format!("{at}: {err}")),
            }
        }
        if missing.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no data within {within:?} for:\n{}\nPrometheus log:\n{}",
            missing.join("\n"),
            prom.stderr.text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A sample whose value is a number (not NaN, not infinite).
fn has_number(sample: &Value) -> bool {
    sample["value"][1]
        .as_str()
        .and_then(|v| v.parse::<f64>().ok())
        .is_some_and(f64::is_finite)
}

/// How long data may take to reach Prometheus and its rules: scrapes and evaluations are every
/// second, so this only matters on a machine that is very busy.
const SCRAPED: Duration = Duration::from_secs(60);

#[tokio::test]
#[ignore = "needs prometheus (Debian package prometheus); .ci/run installs it and runs: cargo test --test dashboard -- --ignored"]
async fn every_panel_and_every_alert_rule_has_data_in_a_real_prometheus() {
    let mut nodes = three_nodes().await;
    let config = ConfigBuilder::new()
        .listener("es", "es")
        .backend(es_backend(&nodes))
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
    until_all_have_data(&prom, &scraped(r#"up{job="roundhouse"} == 1"#), SCRAPED).await;

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
    ] {
        until_all_have_data(&prom, &scraped(e), SCRAPED).await;
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
    until_all_have_data(&prom, &queries, SCRAPED).await;

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
    until_all_have_data(&prom, &matched, SCRAPED).await;

    // every rule has been evaluated on this data without an error, and the node that went down
    // makes RoundhouseBackendDegraded pending (it fires after its 10 minutes)
    let degraded =
        r#"ALERTS{alertname="RoundhouseBackendDegraded", alertstate="pending", backend="es"}"#;
    until_all_have_data(&prom, &scraped(degraded), SCRAPED).await;
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
