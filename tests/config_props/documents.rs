//! The files the configuration property tests read: edits of the packaged file, YAML documents
//! of any shape, and near-YAML.

use proptest::prelude::*;
use proptest::sample::{Index, select};
use serde_yaml::Value;

const PACKAGED: &str = include_str!("../../conf/roundhouse.yaml");

/// Every key the schema knows, at any level: generated documents use them so that validation
/// gets past the top level.
const KEYS: &[&str] = &[
    "enabled",
    "workers",
    "shutdown_grace",
    "access_log",
    "admin",
    "bind",
    "token_file",
    "listeners",
    "name",
    "backend",
    "max_connections",
    "backends",
    "servers",
    "address",
    "weight",
    "health_check",
    "type",
    "interval",
    "timeout",
    "rise",
    "fall",
    "expect_status",
    "cluster_name",
    "min_nodes",
    "path",
    "tls",
    "ca_file",
    "server_name",
    "insecure_skip_verify",
    "auth",
    "username",
    "password_file",
    "api_key_file",
    "timeouts",
    "connect",
    "idle",
    "retries",
    "when_all_unhealthy",
];

/// Values of every type, and of the right type but out of range, for any field.
fn value_text() -> impl Strategy<Value = String> {
    let other_types = select(vec![
        "true",
        "no",
        "~",
        "null",
        "[]",
        "{}",
        "[a, b]",
        "{ x: 1 }",
        "''",
        "\"\"",
        "[green, red]",
        "[[1]]",
        "{ name: x, address: 10.0.0.1:9200 }",
        "!!binary aGVsbG8=",
        "&a 5",
        "*a",
        "|\n  block",
        ">-",
        "- item",
        "? key",
        "!custom tag",
        "'it''s'",
        "\"\\u0000\"",
        "\"\\x7f\"",
        "auto",
        "tcp",
        "http",
        "elasticsearch",
        "green",
        "fail_closed",
    ]);
    let numbers = select(vec![
        "0",
        "-1",
        "-0",
        "1.5",
        "1e309",
        "-1e309",
        ".inf",
        "-.inf",
        ".nan",
        "0x10",
        "0o7",
        "4294967295",
        "4294967296",
        "18446744073709551615",
        "18446744073709551616",
        "99999999999999999999999999",
        "65535",
        "65536",
        "101",
        "257",
        "17",
        "1_000",
    ]);
    let addresses = select(vec![
        "10.0.0.1:9200",
        "[::1]:9200",
        "[::]:0",
        "0.0.0.0:0",
        "127.0.0.1:65536",
        "1.2.3.4",
        "10.0.0.x:9200",
        "::1:9200",
        "[fe80::1%eth0]:9200",
        "1.2.3.4:0",
        "/_cluster/health",
        "relative/path",
        "/nonexistent/file",
    ]);
    prop_oneof![
        other_types.prop_map(String::from),
        numbers.prop_map(String::from),
        addresses.prop_map(String::from),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| f.to_string()),
        (
            any::<u32>(),
            select(vec!["ns", "ms", "s", "m", "h", "d", "y", " parsecs", ""])
        )
            .prop_map(|(n, unit)| format!("{n}{unit}")),
        "\\PC{0,30}",
        any::<String>().prop_map(|s| format!("{s:?}")),
        any::<String>(),
        (1usize..3000).prop_map(|n| "x".repeat(n)),
    ]
}

/// A line's indentation change.
#[derive(Debug, Clone)]
enum Indent {
    More(usize),
    Less(usize),
    Tab,
}

/// One edit of a configuration file, the way a person gets one wrong.
#[derive(Debug, Clone)]
enum Edit {
    DeleteLine(Index),
    DuplicateLine(Index),
    SwapLines(Index, Index),
    /// Removes the `#` of a commented line (the packaged file documents options that way).
    Uncomment(Index),
    Reindent(Index, Indent),
    /// Replaces the value of a `key: value` line or a `- item` line.
    SetValue(Index, String),
    /// Adds a key the schema does not know (or knows, elsewhere) beside an existing line.
    InsertKey(Index, String, String),
    InsertText(Index, String),
    Truncate(Index),
}

fn edit() -> impl Strategy<Value = Edit> {
    let key = prop_oneof![
        select(KEYS.to_vec()).prop_map(String::from),
        "[a-z_]{1,12}",
        "\\PC{1,8}"
    ];
    let indent = prop_oneof![
        (1usize..6).prop_map(Indent::More),
        (1usize..6).prop_map(Indent::Less),
        Just(Indent::Tab),
    ];
    prop_oneof![
        1 => any::<Index>().prop_map(Edit::DeleteLine),
        1 => any::<Index>().prop_map(Edit::DuplicateLine),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Edit::SwapLines(a, b)),
        3 => any::<Index>().prop_map(Edit::Uncomment),
        1 => (any::<Index>(), indent).prop_map(|(i, d)| Edit::Reindent(i, d)),
        6 => (any::<Index>(), value_text()).prop_map(|(i, v)| Edit::SetValue(i, v)),
        2 => (any::<Index>(), key, value_text()).prop_map(|(i, k, v)| Edit::InsertKey(i, k, v)),
        1 => (any::<Index>(), any::<String>()).prop_map(|(i, t)| Edit::InsertText(i, t)),
        1 => any::<Index>().prop_map(Edit::Truncate),
    ]
}

/// The packaged file (enabled or not) with a few edits applied.
pub fn mutated_packaged() -> impl Strategy<Value = String> {
    (any::<bool>(), prop::collection::vec(edit(), 1..5)).prop_map(|(enable, edits)| {
        let text = if enable {
            PACKAGED.replace("enabled: false", "enabled: true")
        } else {
            PACKAGED.to_owned()
        };
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        for e in edits {
            apply(&mut lines, e);
        }
        let mut out = lines.join("\n");
        out.push('\n');
        out
    })
}

fn indentation(line: &str) -> &str {
    &line[..line.len() - line.trim_start().len()]
}

fn apply(lines: &mut Vec<String>, edit: Edit) {
    if lines.is_empty() {
        return;
    }
    let settings: Vec<usize> = (0..lines.len())
        .filter(|&i| {
            let t = lines[i].trim_start();
            !t.is_empty() && !t.starts_with('#')
        })
        .collect();
    let commented: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].trim_start().starts_with("# "))
        .collect();
    match edit {
        Edit::DeleteLine(i) => {
            lines.remove(i.index(lines.len()));
        }
        Edit::DuplicateLine(i) => {
            let i = i.index(lines.len());
            lines.insert(i, lines[i].clone());
        }
        Edit::SwapLines(a, b) => {
            let n = lines.len();
            lines.swap(a.index(n), b.index(n));
        }
        Edit::Uncomment(i) if !commented.is_empty() => {
            let i = commented[i.index(commented.len())];
            let indent = indentation(&lines[i]).to_owned();
            let rest = lines[i].trim_start()["# ".len()..].to_owned();
            lines[i] = format!("{indent}{rest}");
        }
        Edit::Reindent(i, d) => {
            let i = i.index(lines.len());
            let line = &lines[i];
            lines[i] = match d {
                Indent::More(n) => format!("{}{line}", " ".repeat(n)),
                Indent::Less(n) => line[indentation(line).len().min(n)..].to_owned(),
                Indent::Tab => format!("\t{line}"),
            };
        }
        Edit::SetValue(i, v) if !settings.is_empty() => {
            let i = settings[i.index(settings.len())];
            let line = &lines[i];
            let keep = match (line.find(": "), line.trim_start().strip_prefix("- ")) {
                (Some(at), _) => at + 2,
                (None, Some(_)) => indentation(line).len() + 2,
                (None, None) => line.len(),
            };
            lines[i] = format!("{}{v}", &line[..keep]);
        }
        Edit::InsertKey(i, k, v) => {
            let i = i.index(lines.len());
            let indent = indentation(&lines[i]).to_owned();
            lines.insert(i, format!("{indent}{k}: {v}"));
        }
        Edit::InsertText(i, t) => {
            lines.insert(i.index(lines.len()), t);
        }
        Edit::Truncate(i) => {
            let mut text = lines.join("\n");
            let mut cut = i.index(text.len());
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            *lines = text.lines().map(str::to_owned).collect();
        }
        Edit::Uncomment(_) | Edit::SetValue(..) => {}
    }
}

/// Any YAML value, with keys the schema knows more often than not.
fn yaml_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| Value::Number(n.into())),
        any::<u64>().prop_map(|n| Value::Number(n.into())),
        any::<f64>().prop_map(|f| Value::Number(f.into())),
        value_text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let key = prop_oneof![
            3 => select(KEYS.to_vec()).prop_map(|k| Value::String(k.into())),
            1 => inner.clone(),
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Sequence),
            prop::collection::vec((key, inner.clone()), 0..6)
                .prop_map(|kv| Value::Mapping(kv.into_iter().collect())),
            (
                select(vec!["!x", "!!str", "tag:yaml.org,2002:int", "!!binary"]),
                inner
            )
                .prop_map(|(tag, value)| Value::Tagged(Box::new(
                    serde_yaml::value::TaggedValue {
                        tag: serde_yaml::value::Tag::new(tag),
                        value,
                    }
                ))),
        ]
    })
}

/// YAML's punctuation and words in any order: documents that are almost YAML.
fn token_soup() -> impl Strategy<Value = String> {
    let token = select(vec![
        "enabled",
        "listeners",
        "backends",
        "servers",
        "name",
        ":",
        " ",
        "  ",
        "\n",
        "\n  ",
        "\n    ",
        "- ",
        "[",
        "]",
        "{",
        "}",
        ",",
        "&a ",
        "*a",
        "!!str ",
        "!!map ",
        "---\n",
        "...\n",
        "# c",
        "'",
        "\"",
        "|",
        ">",
        "? ",
        "true",
        "42",
        "-1",
        "1e999",
        "~",
        "\t",
        "\0",
        "é",
        "\u{feff}",
        "\r\n",
        "%YAML 1.2\n",
        "<<: *a",
        "\\",
        "10.0.0.1:9200",
    ]);
    prop::collection::vec(token, 0..40).prop_map(|t| t.concat())
}

/// Any YAML document as text: a generated value, a token soup, or any string.
pub fn yaml_document() -> impl Strategy<Value = String> {
    let top = prop::collection::vec(
        (
            prop_oneof![
                4 => select(KEYS[..7].to_vec()).prop_map(|k| Value::String(k.into())),
                1 => yaml_value(),
            ],
            yaml_value(),
        ),
        0..8,
    )
    .prop_map(|kv| Value::Mapping(kv.into_iter().collect()));
    prop_oneof![
        3 => top.prop_filter_map("serde_yaml renders it", |v| serde_yaml::to_string(&v).ok()),
        1 => yaml_value().prop_filter_map("serde_yaml renders it", |v| serde_yaml::to_string(&v).ok()),
        2 => token_soup(),
        1 => any::<String>(),
    ]
}
