//! Configuration errors: each one names the file, the field path and what was expected.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem found in a configuration file.
///
/// The `Display` form is what an operator reads on stderr and in the journal; `brief()` is the
/// shorter form (no file name) used in systemd's one-line `STATUS=`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all (missing, permissions, a directory, ...).
    #[error("{}: cannot read the file: {reason}", file.display())]
    Read { file: PathBuf, reason: String },
    /// The YAML is malformed or a value has the wrong type or an unknown key.
    #[error("{}", located(file, *line, *column, path, message))]
    Syntax {
        file: PathBuf,
        path: String,
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },
    /// The file parses but a value is not acceptable.
    #[error("{}", located(file, None, None, path, message))]
    Invalid {
        file: PathBuf,
        path: String,
        message: String,
    },
    /// `enabled` is absent or false: the file has not been declared ready to serve.
    #[error("{}", refusal(file, *found))]
    NotEnabled { file: PathBuf, found: Option<bool> },
}

impl ConfigError {
    /// The error without the file name, for a one-line status.
    pub fn brief(&self) -> String {
        match self {
            ConfigError::Read { reason, .. } => format!("cannot read the file: {reason}"),
            ConfigError::Syntax { path, message, .. }
            | ConfigError::Invalid { path, message, .. } => {
                if path.is_empty() {
                    message.clone()
                } else {
                    format!("{path}: {message}")
                }
            }
            ConfigError::NotEnabled { .. } => self.to_string(),
        }
    }
}

fn located(
    file: &Path,
    line: Option<usize>,
    column: Option<usize>,
    path: &str,
    message: &str,
) -> String {
    let mut s = file.display().to_string();
    if let Some(line) = line {
        s.push_str(&format!(":{line}"));
        if let Some(column) = column {
            s.push_str(&format!(":{column}"));
        }
    }
    if !path.is_empty() {
        s.push_str(&format!(": {path}"));
    }
    s.push_str(&format!(": {message}"));
    s
}

fn refusal(file: &Path, found: Option<bool>) -> String {
    match found {
        Some(false) => format!(
            "refusing to start: {} has enabled: false — set enabled: true once it describes your cluster",
            file.display()
        ),
        _ => format!(
            "refusing to start: {} does not say enabled: true — add the line `enabled: true` once it describes your cluster",
            file.display()
        ),
    }
}

/// Every problem found in one file. Validation collects them all, so an operator fixes the file
/// in one pass instead of one error per run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// True when the only reason not to run is the missing `enabled: true`.
    pub fn is_refusal_only(&self) -> bool {
        self.0
            .iter()
            .all(|e| matches!(e, ConfigError::NotEnabled { .. }))
    }

    /// The first error, shortened for a one-line status, with a count of the others.
    pub fn summary(&self) -> String {
        let first = self.0.first().map(ConfigError::brief).unwrap_or_default();
        match self.0.len() {
            0 | 1 => first,
            n => format!("{first} (and {} more)", n - 1),
        }
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Builds field paths such as `backends[0].health_check.fall`.
#[derive(Debug, Clone, Default)]
pub struct FieldPath(String);

impl FieldPath {
    /// The path of a named field below this one.
    pub fn field(&self, name: &str) -> FieldPath {
        if self.0.is_empty() {
            FieldPath(name.to_owned())
        } else {
            FieldPath(format!("{}.{name}", self.0))
        }
    }

    /// The path of a list element below this one.
    pub fn index(&self, i: usize) -> FieldPath {
        FieldPath(format!("{}[{i}]", self.0))
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
