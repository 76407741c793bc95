//! Reads the admin endpoint: `/metrics` parsed into samples, `/status` as JSON.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::common::SOON;
use crate::common::net::http_get;

/// One scrape of `/metrics`: `name{label="value",...}` -> value.
pub struct Scrape {
    pub text: String,
    samples: BTreeMap<String, f64>,
}

impl Scrape {
    pub async fn from(admin: SocketAddr) -> Scrape {
        let (code, text) = http_get(admin, "/metrics").await.expect("GET /metrics");
        assert_eq!(code, 200, "{text}");
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                Some((k.to_owned(), v.parse().ok()?))
            })
            .collect();
        Scrape { text, samples }
    }

    /// The value of a sample, by name and labels (in any order); panics if absent.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.find(name, labels)
            .unwrap_or_else(|| panic!("no sample {name}{labels:?} in:\n{}", self.text))
    }

    /// Scrapes until the sample has the value `want` (at most [`SOON`]); returns that scrape.
    pub async fn until_equals(
        admin: SocketAddr,
        name: &str,
        labels: &[(&str, &str)],
        want: f64,
    ) -> Scrape {
        let what = format!("{name}{labels:?} = {want}");
        Scrape::until(admin, &what, |s| s.find(name, labels) == Some(want)).await
    }

    /// The value of a sample, if present.
    pub fn find(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples.iter().find_map(|(k, v)| {
            let (n, rest) = k.split_once('{').unwrap_or((k, "}"));
            let have: Vec<&str> = rest
                .trim_end_matches('}')
                .split(',')
                .filter(|s| !s.is_empty())
                .collect();
            let want: Vec<String> = labels.iter().map(|(l, v)| format!("{l}=\"{v}\"")).collect();
            (n == name
                && have.len() == want.len()
                && want.iter().all(|w| have.contains(&w.as_str())))
            .then_some(*v)
        })
    }
}

/// `GET /status` as JSON.
pub async fn status(admin: SocketAddr) -> serde_json::Value {
    let (code, body) = http_get(admin, "/status").await.expect("GET /status");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("JSON status")
}

/// The `/status` entry of one server.
pub fn server<'a>(
    status: &'a serde_json::Value,
    backend: &str,
    name: &str,
) -> &'a serde_json::Value {
    status["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == backend)
        .and_then(|b| {
            b["servers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["name"] == name)
        })
        .unwrap_or_else(|| panic!("no server {backend}/{name} in {status:#}"))
}

/// How often the `until` helpers look again.
const POLL: std::time::Duration = std::time::Duration::from_millis(20);

impl Scrape {
    /// Scrapes until `ready` holds (a gauge reaching a value, a counter passing one); panics
    /// with the last scrape when it does not within `SOON`.
    pub async fn until(admin: SocketAddr, what: &str, ready: impl Fn(&Scrape) -> bool) -> Scrape {
        let deadline = tokio::time::Instant::now() + crate::common::SOON;
        loop {
            let s = Scrape::from(admin).await;
            if ready(&s) {
                return s;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not within {:?}; metrics were:\n{}",
                crate::common::SOON,
                s.text
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// The sum of every sample of `name` whose labels include these.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let want: Vec<String> = labels.iter().map(|(l, v)| format!("{l}=\"{v}\"")).collect();
        self.samples
            .iter()
            .filter(|(k, _)| {
                let (n, rest) = k.split_once('{').unwrap_or((k, "}"));
                n == name && want.iter().all(|w| rest.contains(w.as_str()))
            })
            .map(|(_, v)| v)
            .sum()
    }
}

/// Reads `/status` until `ready` holds; panics with the last one when it does not within `SOON`.
pub async fn status_until(
    admin: SocketAddr,
    what: &str,
    ready: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + crate::common::SOON;
    loop {
        let s = status(admin).await;
        if ready(&s) {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {:?}; /status was:\n{s:#}",
            crate::common::SOON
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The `/status` entry of one server, if the backend has it.
pub fn find_server<'a>(
    status: &'a serde_json::Value,
    backend: &str,
    name: &str,
) -> Option<&'a serde_json::Value> {
    status["backends"]
        .as_array()?
        .iter()
        .find(|b| b["name"] == backend)?["servers"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == name)
}

/// Polls `/status` until a field of a server has the value `want` (at most [`SOON`]).
pub async fn server_until(admin: SocketAddr, backend: &str, name: &str, field: &str, want: i64) {
    let what = format!("{backend}/{name} {field} = {want}");
    status_until(admin, &what, |st| server(st, backend, name)[field] == want).await;
}
