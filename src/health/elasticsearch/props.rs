//! Property tests of `judge`: whatever a node answers (any bytes, any JSON, cluster-health
//! documents with fields missing, mistyped, duplicated, huge or negative), the judgement never
//! panics and never passes a node unless its answer says, in the fields a check reads, that it
//! should. `cargo test --lib health::elasticsearch -- --ignored` runs the long versions.

mod answers;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use serde_json::Value;

use super::judge;
use crate::config::{ClusterStatus, EsCheck};
use crate::server::FailureKind;
use answers::{any_bytes, es_check, http_status, near_health, well_typed};

/// A fixed seed in `cargo test`; a random seed and 50 times the cases in the long run.
fn runner(cases: u32, long: bool) -> TestRunner {
    TestRunner::new(Config {
        cases: if long { cases * 50 } else { cases },
        rng_seed: if long {
            RngSeed::Random
        } else {
            RngSeed::Fixed(0x726f_756e_6468_6f75)
        },
        failure_persistence: None,
        ..Config::default()
    })
}

/// Runs `test` on values of `strategy`; a failure panics with the smallest failing value.
fn run<S: Strategy>(
    mut runner: TestRunner,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{e}");
    }
}

/// What the answer says, read by hand from the JSON: does it satisfy `check` (colour aside
/// when `any_colour`)?
fn says_healthy(check: &EsCheck, status: u16, body: &[u8], any_colour: bool) -> bool {
    let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    let colour = m
        .get("status")
        .and_then(Value::as_str)
        .and_then(ClusterStatus::parse);
    let colour_ok = match colour {
        Some(c) => any_colour || check.expect_status.contains(&c),
        None => false,
    };
    let name_ok = m
        .get("cluster_name")
        .and_then(Value::as_str)
        .is_some_and(|n| check.cluster_name.as_deref().is_none_or(|want| want == n));
    let nodes_ok = m
        .get("number_of_nodes")
        .and_then(Value::as_u64)
        .is_some_and(|n| check.min_nodes.is_none_or(|min| n >= u64::from(min)));
    let discovered = |field: &str| m.get(field) != Some(&Value::Bool(false));
    (200..300).contains(&status)
        && colour_ok
        && name_ok
        && nodes_ok
        && discovered("discovered_master")
        && discovered("discovered_cluster_manager")
}

/// The two properties every answer must keep.
fn judged_by_its_own_words(check: &EsCheck, status: u16, body: &[u8]) -> Result<(), TestCaseError> {
    let (failure, _) = judge(check, status, body);
    let shown = String::from_utf8_lossy(body);
    match failure {
        None => prop_assert!(
            says_healthy(check, status, body, false),
            "passed, but the answer does not say so: HTTP {status} {shown}"
        ),
        Some((FailureKind::ColourOnly, why)) => prop_assert!(
            says_healthy(check, status, body, true),
            "a colour-only failure ({why}), but more is wrong: HTTP {status} {shown}"
        ),
        Some((FailureKind::Other, why)) => {
            prop_assert!(!why.is_empty(), "a failure without a reason")
        }
    }
    Ok(())
}

fn near_health_answers(runner: TestRunner) {
    run(
        runner,
        (es_check(), http_status(), near_health()),
        |(check, status, body)| judged_by_its_own_words(&check, status, &body),
    );
}

fn arbitrary_bytes(runner: TestRunner) {
    run(
        runner,
        (es_check(), http_status(), any_bytes()),
        |(check, status, body)| judged_by_its_own_words(&check, status, &body),
    );
}

fn well_typed_answers(runner: TestRunner) {
    run(
        runner,
        (es_check(), 200u16..300, well_typed()),
        |(check, status, body)| {
            judged_by_its_own_words(&check, status, &body)?;
            // and the converse: a well-typed answer that says so passes
            let (failure, view) = judge(&check, status, &body);
            prop_assert_eq!(
                failure.is_none(),
                says_healthy(&check, status, &body, false),
                "{:?}",
                failure
            );
            let is_object = body.first() == Some(&b'{');
            prop_assert_eq!(
                view.is_some(),
                is_object,
                "only an object gives a view of the cluster"
            );
            Ok(())
        },
    );
}

#[test]
fn near_health_answers_pass_only_when_they_say_so() {
    near_health_answers(runner(2000, false));
}

#[test]
fn arbitrary_bytes_never_pass() {
    arbitrary_bytes(runner(2000, false));
}

#[test]
fn well_typed_answers_pass_exactly_when_they_say_so() {
    well_typed_answers(runner(1000, false));
}

#[test]
#[ignore = "long run: cargo test --lib health::elasticsearch -- --ignored"]
fn near_health_answers_long() {
    near_health_answers(runner(2000, true));
}

#[test]
#[ignore = "long run: cargo test --lib health::elasticsearch -- --ignored"]
fn arbitrary_bytes_long() {
    arbitrary_bytes(runner(2000, true));
}

#[test]
#[ignore = "long run: cargo test --lib health::elasticsearch -- --ignored"]
fn well_typed_answers_long() {
    well_typed_answers(runner(1000, true));
}
