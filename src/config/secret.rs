//! Secrets read from files (never written inline in the YAML): shown nowhere, compared in
//! constant time.

use std::fmt;
use std::sync::Arc;

/// A secret value. `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Reads a secret file: the value is its content without the trailing line break.
    pub(super) fn read(path: &str) -> Result<Secret, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
        let value = text.trim_end_matches(['\n', '\r']);
        if value.trim().is_empty() {
            return Err(format!("{path} is empty"));
        }
        if value.contains(['\n', '\r']) {
            return Err(format!("{path} has more than one line"));
        }
        Ok(Secret(Arc::from(value)))
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Compares with `candidate` in time that does not depend on where they differ.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        let mine = self.0.as_bytes();
        let mut diff = mine.len() ^ candidate.len();
        for (i, b) in mine.iter().enumerate() {
            diff |= usize::from(b ^ candidate.get(i).copied().unwrap_or(0));
        }
        diff == 0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_read_trimmed_and_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token");
        std::fs::write(&p, "s3cret\n").unwrap();
        let s = Secret::read(p.to_str().unwrap()).unwrap();
        assert_eq!(s.expose(), "s3cret");
        assert_eq!(format!("{s:?}"), "Secret(…)");
        assert!(s.matches(b"s3cret"));
        assert!(!s.matches(b"s3cre"));
        assert!(!s.matches(b"s3cret!"));
        std::fs::write(&p, "\n").unwrap();
        assert!(
            Secret::read(p.to_str().unwrap())
                .unwrap_err()
                .ends_with("is empty")
        );
        assert!(
            Secret::read("/nonexistent/token")
                .unwrap_err()
                .contains("cannot read /nonexistent/token")
        );
    }
}
