//! The answers the judgement property tests give `judge`: checks, HTTP statuses, bytes of any
//! kind, JSON of any shape, and cluster-health answers near and far from valid.

use proptest::prelude::*;
use proptest::sample::{select, subsequence};
use serde_json::{Map, Value};

use crate::config::{ClusterStatus, EsCheck};

/// The fields of a cluster-health answer that a check reads.
pub const FIELDS: [&str; 5] = [
    "cluster_name",
    "status",
    "number_of_nodes",
    "discovered_master",
    "discovered_cluster_manager",
];

pub fn es_check() -> impl Strategy<Value = EsCheck> {
    (
        subsequence(ClusterStatus::ALL.to_vec(), 1..=3),
        prop::option::of(prop_oneof![3 => Just("prod".to_owned()), 1 => "\\PC{1,12}"]),
        prop::option::of(prop_oneof![1u32..6, 1..=u32::MAX]),
    )
        .prop_map(|(expect_status, cluster_name, min_nodes)| EsCheck {
            path: "/_cluster/health?local=true".into(),
            expect_status,
            cluster_name,
            min_nodes,
        })
}

pub fn http_status() -> impl Strategy<Value = u16> {
    prop_oneof![4 => Just(200u16), 2 => 200u16..300, 2 => 0u16..1000, 1 => any::<u16>()]
}

/// Numbers as JSON text, including those JSON allows and `u64` does not.
fn number_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => (0u64..8).prop_map(|n| n.to_string()),
        1 => any::<u64>().prop_map(|n| n.to_string()),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<f64>().prop_map(|f| format!("{f:?}")),
        2 => select(vec![
            "18446744073709551615", "18446744073709551616", "-1", "-0", "3.0", "3e0", "1e400",
            "-1e400", "0.5", "01", "1_000", "Infinity", "NaN", "0x10",
            "999999999999999999999999999999999999",
        ])
        .prop_map(String::from),
    ]
}

/// Strings as JSON text: colours in every spelling, cluster names, anything.
fn string_text() -> impl Strategy<Value = String> {
    let words = select(vec![
        "green",
        "yellow",
        "red",
        "GREEN",
        "Green",
        " green",
        "green\u{0}",
        "gr\u{e9}en",
        "prod",
        "prod ",
        "PROD",
        "staging",
        "",
        "true",
        "false",
        "3",
    ]);
    prop_oneof![
        4 => words.prop_map(|w| serde_json::to_string(w).expect("a string serializes")),
        1 => any::<String>().prop_map(|s| serde_json::to_string(&s).expect("a string serializes")),
        // escapes that decode to a word the check knows
        1 => select(vec!["\"gr\\u0065en\"", "\"pro\\u0064\"", "\"\\u0072ed\"", "\"yellow\\/\""])
            .prop_map(String::from),
        // not JSON at all
        1 => select(vec!["'green'", "\"green", "green", "\"\\x67reen\""]).prop_map(String::from),
    ]
}

/// Any JSON value, with the field names of a cluster-health answer as keys more often.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop_oneof![
            select(vec!["green", "yellow", "red", "prod"]).prop_map(String::from),
            any::<String>()
        ]
        .prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        let key = prop_oneof![
            select(FIELDS.to_vec()).prop_map(String::from),
            any::<String>()
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key, inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Any JSON value as text.
fn json_text() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => string_text(),
        2 => number_text(),
        1 => select(vec!["true", "false", "null", "[]", "{}", "\"false\"", "0", "1"]).prop_map(String::from),
        2 => json_value().prop_map(|v| v.to_string()),
    ]
}

/// A value for one field of a cluster-health answer: usually of the right type, often not.
fn field_text(field: &str) -> BoxedStrategy<String> {
    match field {
        "status" | "cluster_name" => prop_oneof![3 => string_text(), 1 => json_text()].boxed(),
        "number_of_nodes" => prop_oneof![3 => number_text(), 1 => json_text()].boxed(),
        _ => prop_oneof![
            2 => select(vec!["true", "false", "null"]).prop_map(String::from),
            1 => json_text(),
        ]
        .boxed(),
    }
}

/// How the fields are put together.
#[derive(Debug, Clone)]
enum Shape {
    Object,
    /// The values alone, in an array (serde reads a struct from a sequence).
    Array,
    /// The object inside another, as some other API would answer.
    Nested,
}

/// Something close to a cluster-health answer, as the bytes a node sends.
pub fn near_health() -> impl Strategy<Value = Vec<u8>> {
    let fields: Vec<_> = FIELDS
        .iter()
        .map(|f| prop::option::weighted(0.85, field_text(f)).prop_map(move |v| (f.to_string(), v)))
        .collect();
    let extra = prop::collection::vec(
        (
            prop_oneof![
                select(FIELDS.to_vec()).prop_map(String::from),
                "[a-z_]{1,20}",
                any::<String>()
            ],
            json_text(),
        ),
        0..4,
    );
    let shape =
        prop_oneof![4 => Just(Shape::Object), 2 => Just(Shape::Array), 1 => Just(Shape::Nested)];
    let around = select(vec!["", " ", "\n", "\u{feff}", " x", "}", ",", "\0"]);
    (fields, extra, shape, any::<bool>(), around)
        .prop_flat_map(|(fields, extra, shape, shuffle, around)| {
            let mut all: Vec<(String, String)> = fields
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k, v)))
                .collect();
            // an array keeps the fields' order, as serde reads it; extras go to objects only
            if !matches!(shape, Shape::Array) {
                all.extend(extra);
            }
            let all = if shuffle && !matches!(shape, Shape::Array) {
                Just(all).prop_shuffle().boxed()
            } else {
                Just(all).boxed()
            };
            (all, Just(shape), Just(around))
        })
        .prop_map(|(fields, shape, around)| render(&fields, &shape, around).into_bytes())
}

fn render(fields: &[(String, String)], shape: &Shape, around: &str) -> String {
    let key = |k: &str| serde_json::to_string(k).expect("a string serializes");
    let body = match shape {
        Shape::Object | Shape::Nested => {
            let pairs: Vec<String> = fields
                .iter()
                .map(|(k, v)| format!("{}:{v}", key(k)))
                .collect();
            format!("{{{}}}", pairs.join(","))
        }
        Shape::Array => {
            let values: Vec<&str> = fields.iter().map(|(_, v)| v.as_str()).collect();
            format!("[{}]", values.join(","))
        }
    };
    let body = match shape {
        Shape::Nested => format!("{{\"cluster\":{body}}}"),
        _ => body,
    };
    // what comes after the document (or before, for a byte order mark)
    if around == "\u{feff}" {
        format!("{around}{body}")
    } else {
        format!("{body}{around}")
    }
}

/// Bytes of any kind, and valid answers with a few bytes broken.
pub fn any_bytes() -> impl Strategy<Value = Vec<u8>> {
    let valid =
        br#"{"cluster_name":"prod","status":"green","number_of_nodes":3,"discovered_master":true}"#;
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4).prop_map(
            move |edits| {
                let mut b = valid.to_vec();
                for (i, byte) in edits {
                    let i = i.index(b.len());
                    b[i] = byte;
                }
                b
            }
        ),
        any::<prop::sample::Index>().prop_map(move |i| valid[..i.index(valid.len())].to_vec()),
    ]
}

/// A well-typed answer, with any values and unknown fields beside; sometimes the same values
/// in an array, which is no answer at all.
pub fn well_typed() -> impl Strategy<Value = Vec<u8>> {
    let colour = prop_oneof![
        4 => select(vec!["green", "yellow", "red"]).prop_map(String::from),
        1 => any::<String>(),
    ];
    let name = prop_oneof![3 => Just("prod".to_owned()), 1 => any::<String>()];
    let nodes = prop_oneof![3 => 0u64..6, 1 => any::<u64>()];
    let discovered = prop::option::of(prop::option::of(any::<bool>()));
    let extra = prop::collection::vec(("[a-z_]{1,20}", json_value()), 0..4);
    let as_array = prop::bool::weighted(0.1);
    (
        colour,
        name,
        nodes,
        discovered.clone(),
        discovered,
        extra,
        as_array,
    )
        .prop_map(|(status, name, nodes, master, manager, extra, as_array)| {
            let discovered =
                |v: Option<Option<bool>>| v.map(|v| v.map_or(Value::Null, Value::Bool));
            let (master, manager) = (discovered(master), discovered(manager));
            if as_array {
                let values = [
                    Value::from(name),
                    Value::from(status),
                    Value::from(nodes),
                    master.unwrap_or(Value::Null),
                    manager.unwrap_or(Value::Null),
                ];
                return Value::Array(values.to_vec()).to_string().into_bytes();
            }
            let mut m = Map::new();
            for (k, v) in extra {
                if !FIELDS.contains(&k.as_str()) {
                    m.insert(k, v);
                }
            }
            m.insert("cluster_name".into(), Value::from(name));
            m.insert("status".into(), Value::from(status));
            m.insert("number_of_nodes".into(), Value::from(nodes));
            for (field, v) in [
                ("discovered_master", master),
                ("discovered_cluster_manager", manager),
            ] {
                if let Some(v) = v {
                    m.insert(field.into(), v);
                }
            }
            Value::Object(m).to_string().into_bytes()
        })
}
