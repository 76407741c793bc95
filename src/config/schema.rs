//! The YAML schema exactly as an operator writes it.
//!
//! These types only describe the file's shape: every field that may be left out is an `Option`, so
//! validation (in `validate.rs`) can tell "absent" from "given" and fill in documented defaults in
//! one place. Unknown keys are rejected here, by serde, with the list of keys that are allowed.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub enabled: Option<bool>,
    pub workers: Option<RawWorkers>,
    pub pin_workers: Option<bool>,
    pub shutdown_grace: Option<HumaneDuration>,
    pub access_log: Option<bool>,
    pub admin: Option<RawAdmin>,
    #[serde(default)]
    pub listeners: Vec<RawListener>,
    #[serde(default)]
    pub backends: Vec<RawBackend>,
}

/// `workers: auto` or a thread count.
#[derive(Debug)]
pub enum RawWorkers {
    Auto,
    Count(u64),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub bind: Option<String>,
    pub token_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub name: Option<String>,
    pub bind: Option<String>,
    pub backend: Option<String>,
    pub max_connections: Option<u64>,
    pub freebind: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    pub name: Option<String>,
    #[serde(default)]
    pub servers: Vec<RawServer>,
    pub health_check: Option<RawHealthCheck>,
    pub timeouts: Option<RawTimeouts>,
    pub retries: Option<u64>,
    pub when_all_unhealthy: Option<String>,
    pub balance: Option<String>,
    pub http_aware: Option<bool>,
    pub roles: Option<RawRoles>,
    pub discovery: Option<RawDiscovery>,
}

/// Which nodes may be client entry points, by their roles.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoles {
    pub exclude_dedicated_masters: Option<bool>,
    pub require: Option<Vec<String>>,
}

/// `discovery: elasticsearch`, or the same as a mapping with its settings.
#[derive(Debug)]
pub enum RawDiscovery {
    Kind(String),
    Detailed(RawDiscoveryDetail),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDiscoveryDetail {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub interval: Option<HumaneDuration>,
    pub forget_after: Option<u64>,
}

/// A server is either `"host:port"` or `{name, address, weight}`.
#[derive(Debug)]
pub enum RawServer {
    Address(String),
    Detailed(RawServerDetail),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServerDetail {
    pub name: Option<String>,
    pub address: Option<String>,
    pub weight: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub interval: Option<HumaneDuration>,
    pub timeout: Option<HumaneDuration>,
    pub rise: Option<u64>,
    pub fall: Option<u64>,
    pub expect_status: Option<Vec<String>>,
    pub cluster_name: Option<String>,
    pub min_nodes: Option<u64>,
    pub path: Option<String>,
    pub tls: Option<RawTls>,
    pub auth: Option<RawAuth>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub ca_file: Option<String>,
    pub server_name: Option<String>,
    pub insecure_skip_verify: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    pub username: Option<String>,
    pub password_file: Option<String>,
    pub api_key_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    pub connect: Option<HumaneDuration>,
    pub idle: Option<HumaneDuration>,
}

/// A duration written the way people write them: `200ms`, `2s`, `5m`, `1h 30m`.
#[derive(Debug, Clone, Copy)]
pub struct HumaneDuration(pub Duration);

impl<'de> Deserialize<'de> for HumaneDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = HumaneDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 200ms, 2s or 5m")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<HumaneDuration, E> {
                humantime::parse_duration(s).map(HumaneDuration).map_err(|e| {
                    E::custom(format!(
                        "invalid duration {s:?} ({e}): expected a duration such as 200ms, 2s or 5m"
                    ))
                })
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<HumaneDuration, E> {
                Err(E::custom(format!(
                    "a bare number ({n}) has no unit: write {n}s or {n}ms"
                )))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<HumaneDuration, E> {
                Err(E::custom(format!(
                    "a bare number ({n}) has no unit: expected a duration such as 200ms, 2s or 5m"
                )))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<HumaneDuration, E> {
                Err(E::custom(format!(
                    "a bare number ({n}) has no unit: expected a duration such as 200ms, 2s or 5m"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for RawWorkers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawWorkers;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("auto or a number of threads")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<RawWorkers, E> {
                match s {
                    "auto" => Ok(RawWorkers::Auto),
                    _ => Err(E::custom(format!(
                        "expected auto or a number of threads, got {s:?}"
                    ))),
                }
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<RawWorkers, E> {
                Ok(RawWorkers::Count(n))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for RawDiscovery {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawDiscovery;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("elasticsearch or a mapping {type, interval, forget_after}")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<RawDiscovery, E> {
                Ok(RawDiscovery::Kind(s.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawDiscovery, A::Error> {
                RawDiscoveryDetail::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawDiscovery::Detailed)
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for RawServer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawServer;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"host:port\" or a mapping {name, address, weight}")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<RawServer, E> {
                Ok(RawServer::Address(s.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawServer, A::Error> {
                RawServerDetail::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawServer::Detailed)
            }
        }
        d.deserialize_any(V)
    }
}
