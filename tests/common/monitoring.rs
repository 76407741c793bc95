//! The dashboard (conf/grafana/roundhouse.json) and the alert rules
//! (conf/prometheus/roundhouse-alerts.yml) read as data: their PromQL, their variables, and the
//! values Grafana would give those variables.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value;

use crate::common::promql::{Selector, selectors};

/// A file under conf/ of this repository.
pub fn conf(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("conf")
        .join(path)
}

/// conf/grafana/roundhouse.json, parsed.
pub fn dashboard() -> Value {
    let text = std::fs::read_to_string(conf("grafana/roundhouse.json")).expect("read dashboard");
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

/// Every panel, rows' collapsed panels included.
pub fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels: a list") {
        out.push(p);
        out.extend(p["panels"].as_array().into_iter().flatten());
    }
    out
}

/// (where, PromQL) of every panel target.
pub fn panel_queries(d: &Value) -> Vec<(String, String)> {
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
pub fn variable_queries(d: &Value) -> Vec<(String, String)> {
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
pub fn label_values_call(query: &str) -> (&str, &str) {
    let inner = query
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not label_values(…): {query}"));
    let (metric, label) = inner.rsplit_once(',').expect("label_values(metric, label)");
    (metric.trim(), label.trim())
}

/// (alert, PromQL) of every rule.
pub fn rule_exprs() -> Vec<(String, String)> {
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
pub struct Vars<'a> {
    pub job: &'a str,
    pub instance: &'a str,
    pub backend: &'a str,
}

impl Vars<'_> {
    /// The expression as Grafana sends it; `$__rate_interval` and `$__interval` become 1m,
    /// which covers everything a test run has scraped.
    pub fn substitute(&self, expr: &str) -> String {
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
pub fn exported_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// Every selector of the dashboard's panels and variables and of the alert rules, with where
/// it was found.
pub fn all_selectors(d: &Value) -> Vec<(String, Selector)> {
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
