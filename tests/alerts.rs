//! The Prometheus alert rules in conf/prometheus/: promtool checks them and runs their unit
//! tests (roundhouse-alerts.test.yml), where every alert is shown firing and not firing.
//! `tests/dashboard.rs` checks the same rules against a real roundhouse scraped by a real
//! Prometheus.

use std::path::PathBuf;
use std::process::Command;

fn rules_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("conf/prometheus")
}

/// Runs promtool in conf/prometheus/; returns what it said if it failed.
fn promtool(args: &[&str]) -> Result<String, String> {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(rules_dir())
        .output()
        .expect("promtool is installed (apt-get install prometheus)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(said)
    } else {
        Err(said)
    }
}

#[test]
#[ignore = "needs promtool (Debian package prometheus); .ci/run installs it and runs: cargo test --test alerts -- --ignored"]
fn alert_rules_are_valid() {
    let said = promtool(&["check", "rules", "roundhouse-alerts.yml"])
        .unwrap_or_else(|e| panic!("promtool check rules:\n{e}"));
    assert!(said.contains("SUCCESS"), "{said}");
}

#[test]
#[ignore = "needs promtool (Debian package prometheus); .ci/run installs it and runs: cargo test --test alerts -- --ignored"]
fn every_alert_fires_and_stays_quiet_as_its_unit_tests_say() {
    let said = promtool(&["test", "rules", "roundhouse-alerts.test.yml"])
        .unwrap_or_else(|e| panic!("promtool test rules:\n{e}"));
    assert!(said.contains("SUCCESS"), "{said}");
}

/// Every alert in the rules file has a unit test that shows it firing (an `exp_alerts` with an
/// entry) and one that shows it quiet (`exp_alerts: []`), and every alert is labelled with a
/// severity and annotated with a summary and a description.
#[test]
fn every_alert_is_tested_firing_and_quiet_and_annotated() {
    let rules: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(rules_dir().join("roundhouse-alerts.yml")).unwrap(),
    )
    .expect("rules file is YAML");
    let tests: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(rules_dir().join("roundhouse-alerts.test.yml")).unwrap(),
    )
    .expect("test file is YAML");
    let evals: Vec<&serde_yaml::Value> = tests["tests"]
        .as_sequence()
        .expect("tests: a list")
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_sequence().into_iter().flatten())
        .collect();
    let mut alerts = 0;
    for group in rules["groups"].as_sequence().expect("groups: a list") {
        for rule in group["rules"].as_sequence().expect("rules: a list") {
            let Some(name) = rule["alert"].as_str() else {
                continue;
            };
            alerts += 1;
            let severity = rule["labels"]["severity"].as_str();
            assert!(
                matches!(severity, Some("critical" | "warning")),
                "{name}: severity {severity:?}"
            );
            for a in ["summary", "description"] {
                assert!(
                    rule["annotations"][a]
                        .as_str()
                        .is_some_and(|s| !s.is_empty()),
                    "{name}: no {a}"
                );
            }
            let expected: Vec<usize> = evals
                .iter()
                .filter(|e| e["alertname"].as_str() == Some(name))
                .map(|e| e["exp_alerts"].as_sequence().map_or(0, |a| a.len()))
                .collect();
            assert!(
                expected.iter().any(|&n| n > 0),
                "{name}: no test shows it firing"
            );
            assert!(expected.contains(&0), "{name}: no test shows it quiet");
        }
    }
    assert!(alerts >= 6, "only {alerts} alerts");
}
