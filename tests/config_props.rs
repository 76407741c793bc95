//! Property tests of the configuration: arbitrary YAML documents and mutations of the packaged
//! file never panic the parser, every error it gives names the file and a field path or a line,
//! and `roundhouse check` on such files exits 0 or 78, never with a panic.
//!
//! `cargo test --test config_props -- --ignored` runs the long versions (random seed, 50 times
//! the cases).

mod common;
#[path = "config_props/documents.rs"]
mod documents;

use std::path::Path;

use common::props::{self, check};
use common::run_cli;
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use roundhouse::config::{self, ConfigError};

use documents::{mutated_packaged, yaml_document};

const FILE: &str = "/etc/roundhouse/roundhouse.yaml";

/// Lines as YAML counts them: `\u{2028}` and friends break lines too.
fn yaml_lines(text: &str) -> usize {
    let text = text.replace("\r\n", "\n");
    1 + text
        .chars()
        .filter(|c| matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}'))
        .count()
}

/// Checks that an error names the file and a field path or a line, in the documented shape
/// (`file: path: message` or `file:line:col: [path: ]message`).
fn names_its_place(e: &ConfigError, text: &str) -> Result<(), TestCaseError> {
    let shown = e.to_string();
    match e {
        ConfigError::Syntax {
            path,
            line,
            column,
            message,
            ..
        } => {
            prop_assert!(
                !path.is_empty() || line.is_some(),
                "neither a field path nor a line: {shown}"
            );
            let mut expected = FILE.to_owned();
            if let Some(l) = line {
                // a line of the file, or the end of the file just past its last line
                let lines = yaml_lines(text);
                prop_assert!((1..=lines + 1).contains(l), "line {l} of {lines}: {shown}");
                expected.push_str(&format!(":{l}"));
                if let Some(c) = column {
                    expected.push_str(&format!(":{c}"));
                }
            }
            if !path.is_empty() {
                expected.push_str(&format!(": {path}"));
            }
            prop_assert!(!message.is_empty(), "no message: {shown}");
            prop_assert_eq!(&shown, &format!("{expected}: {message}"));
        }
        ConfigError::Invalid { path, message, .. } => {
            // the one error about the whole file: it has nothing in it to point at
            let blank_file = path.is_empty()
                && message.starts_with("the file has no settings")
                && text
                    .lines()
                    .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'));
            prop_assert!(!path.is_empty() || blank_file, "no field path: {shown}");
            prop_assert!(!message.is_empty(), "no message: {shown}");
            let expected = if path.is_empty() {
                format!("{FILE}: {message}")
            } else {
                format!("{FILE}: {path}: {message}")
            };
            prop_assert_eq!(&shown, &expected);
        }
        ConfigError::NotEnabled { .. } => {
            // names the one field it is about, `enabled`, in words
            prop_assert!(
                shown.starts_with(&format!("refusing to start: {FILE} "))
                    && shown.contains("enabled: "),
                "{}",
                shown
            );
        }
        ConfigError::Read { .. } => {
            prop_assert!(false, "parse does not read the file: {shown}");
        }
    }
    prop_assert!(!e.brief().is_empty(), "empty brief form of {shown}");
    Ok(())
}

/// Parses `text`; on errors, checks each one's shape.
fn parses_or_names_each_problem(text: &str) -> Result<(), TestCaseError> {
    match config::parse(Path::new(FILE), text) {
        Ok(_) => Ok(()),
        Err(errors) => {
            prop_assert!(!errors.0.is_empty(), "an empty error list");
            for e in &errors.0 {
                names_its_place(e, text)?;
            }
            Ok(())
        }
    }
}

fn any_yaml_document(runner: TestRunner) {
    check(runner, yaml_document(), |text| {
        parses_or_names_each_problem(&text)
    });
}

fn any_edit_of_the_packaged_file(runner: TestRunner) {
    check(runner, mutated_packaged(), |text| {
        parses_or_names_each_problem(&text)
    });
}

#[test]
fn any_yaml_document_is_parsed_or_rejected_naming_each_place() {
    any_yaml_document(props::quick(1000));
}

#[test]
fn any_edit_of_the_packaged_file_is_parsed_or_rejected_naming_each_place() {
    any_edit_of_the_packaged_file(props::quick(1000));
}

#[test]
#[ignore = "long run: cargo test --test config_props -- --ignored"]
fn any_yaml_document_long() {
    any_yaml_document(props::long(1000));
}

#[test]
#[ignore = "long run: cargo test --test config_props -- --ignored"]
fn any_edit_of_the_packaged_file_long() {
    any_edit_of_the_packaged_file(props::long(1000));
}

/// A file `check` would resolve host names for: skipped, the tests do not use DNS.
fn names_a_host(text: &str) -> bool {
    config::parse(Path::new(FILE), text).is_ok_and(|c| {
        c.backends
            .iter()
            .flat_map(|b| &b.servers)
            .any(|s| s.address.ip().is_none())
    })
}

fn check_never_panics(runner: TestRunner) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("roundhouse.yaml");
    let shown = file.display().to_string();
    check(runner, mutated_packaged(), |text| {
        if names_a_host(&text) {
            return Ok(());
        }
        std::fs::write(&file, &text).unwrap();
        let (code, _, stderr) = run_cli(&["check", "--config", &shown], &[]);
        prop_assert!(code == 0 || code == 78, "exit code {}: {}", code, stderr);
        prop_assert!(
            !stderr.contains("panicked") && !stderr.contains("internal error"),
            "{}",
            stderr
        );
        if code == 78 {
            let errors = config::parse(&file, &text).expect_err("check refused it");
            for e in &errors.0 {
                let line = format!("roundhouse: {}", e.to_string().lines().next().unwrap_or(""));
                prop_assert!(stderr.contains(&line), "{line:?} not in:\n{stderr}");
            }
        }
        Ok(())
    });
}

#[test]
fn check_on_edits_of_the_packaged_file_exits_0_or_78_and_never_panics() {
    check_never_panics(props::quick(24));
}

#[test]
#[ignore = "long run: cargo test --test config_props -- --ignored"]
fn check_on_edits_of_the_packaged_file_long() {
    check_never_panics(props::long(24));
}
