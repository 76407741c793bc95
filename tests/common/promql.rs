//! Finds the vector selectors in a PromQL expression, so tests can check that every metric a
//! dashboard or an alert rule names is one roundhouse exports. A scanner, not a parser: it
//! knows what can stand where a metric name stands (strings, durations, numbers, function
//! names, keywords and label lists are skipped) and is exact for the expressions we write.

/// One vector selector: the metric name and its matchers as written (`{...}`, or empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    pub name: String,
    pub matchers: String,
}

impl Selector {
    /// The selector as PromQL text.
    pub fn text(&self) -> String {
        format!("{}{}", self.name, self.matchers)
    }
}

/// Keywords followed by a parenthesised list of label names.
const LABEL_LISTS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
/// Keywords, constants and aggregation operators (which `by (…)` may follow instead of `(`):
/// words that stand where a metric name could.
const KEYWORDS: [&str; 21] = [
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "atan2",
    "inf",
    "nan",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
];

/// Every vector selector in `expr`, in order.
pub fn selectors(expr: &str) -> Vec<Selector> {
    let b = expr.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'"' | b'\'' | b'`' => i = skip_string(b, i),
            b'#' => {
                i = b[i..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(b.len(), |p| i + p)
            }
            b'[' => i = close(b, i, b'[', b']'),
            b'{' => {
                let end = close(b, i, b'{', b'}');
                out.push(Selector {
                    name: String::new(),
                    matchers: expr[i..end].to_owned(),
                });
                i = end;
            }
            b'0'..=b'9' => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c == b':' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':')
                {
                    i += 1;
                }
                let word = &expr[start..i];
                let next = skip_space(b, i);
                let lower = word.to_ascii_lowercase();
                if LABEL_LISTS.contains(&lower.as_str()) {
                    if b.get(next) == Some(&b'(') {
                        i = close(b, next, b'(', b')');
                    }
                } else if KEYWORDS.contains(&lower.as_str()) || b.get(next) == Some(&b'(') {
                    // an operator, a constant, or a function or aggregation's name
                } else if b.get(next) == Some(&b'{') {
                    let end = close(b, next, b'{', b'}');
                    out.push(Selector {
                        name: word.to_owned(),
                        matchers: expr[next..end].to_owned(),
                    });
                    i = end;
                } else {
                    out.push(Selector {
                        name: word.to_owned(),
                        matchers: String::new(),
                    });
                }
            }
            _ => i += 1,
        }
    }
    out
}

/// The selector once for each alternative of a regex matcher that lists plain words
/// (`state=~"drain|maint"` gives `state="drain"` and `state="maint"`), so that a misspelt
/// alternative cannot hide behind a good one; the selector itself if it has none.
pub fn each_alternative(selector: &str) -> Vec<String> {
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

fn skip_space(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// The index just past the string that starts at `i`.
fn skip_string(b: &[u8], i: usize) -> usize {
    let quote = b[i];
    let mut j = i + 1;
    while j < b.len() && b[j] != quote {
        if b[j] == b'\\' && quote != b'`' {
            j += 1;
        }
        j += 1;
    }
    (j + 1).min(b.len())
}

/// The index just past the bracket that closes the one at `i` (strings inside skipped).
fn close(b: &[u8], i: usize, open: u8, shut: u8) -> usize {
    let mut depth = 0;
    let mut j = i;
    while j < b.len() {
        match b[j] {
            b'"' | b'\'' | b'`' => {
                j = skip_string(b, j);
                continue;
            }
            c if c == open => depth += 1,
            c if c == shut => {
                depth -= 1;
                if depth == 0 {
                    return j + 1;
                }
            }
            _ => {}
        }
        j += 1;
    }
    b.len()
}
