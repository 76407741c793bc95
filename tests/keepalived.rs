//! An active/backup pair with keepalived, in network namespaces: `es` with three stand-in nodes,
//! `lb1` and `lb2` each with roundhouse and Debian's keepalived running the shipped
//! conf/keepalived/keepalived.conf, and `client` with a request loop against the virtual address.
//! Every address is in 10.231.0.0/24 inside namespaces the test creates and removes.
//!
//! Root only, so ignored by default: `cargo test --test keepalived -- --ignored --test-threads=1
//! --nocapture` prints each failover time and the client's failed requests.

mod common;
#[path = "keepalived/hosts.rs"]
mod hosts;
#[path = "keepalived/netns.rs"]
mod netns;
#[path = "keepalived/vrrp.rs"]
mod vrrp;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::cluster::all_up;
use common::*;
use hosts::{Client, Nodes, Outcome};
use netns::{Lab, holds};
use vrrp::Keepalived;

/// The address clients use; keepalived gives it to one balancer at a time.
const VIP: &str = "10.231.0.100";
const NODES: [(&str, &str); 3] = [
    ("es-1", "10.231.0.11"),
    ("es-2", "10.231.0.12"),
    ("es-3", "10.231.0.13"),
];
/// The admin endpoint keepalived.conf's check asks (each namespace has its own loopback).
const ADMIN: &str = "127.0.0.1:9901";
/// From the kill to the address on the other balancer: the target with advert_int 1.
const KILL_FAILOVER: Duration = Duration::from_secs(3);
/// A hung roundhouse costs the check's own 1s timeout twice more.
const HANG_FAILOVER: Duration = Duration::from_secs(5);
/// How long "nothing moves" is watched: five adverts and five runs of the check.
const WATCH: Duration = Duration::from_secs(5);

/// The whole set-up; fields drop in this order, the namespaces last.
struct Pair {
    client: Client,
    ka1: Keepalived,
    ka2: Keepalived,
    rh1: Roundhouse,
    rh2: Roundhouse,
    _nodes: Nodes,
    lab: Lab,
}

impl Pair {
    /// Builds the namespaces, starts the nodes, both roundhouses, keepalived on lb1 (which takes
    /// the address), keepalived on lb2 (which stays backup) and the client, served through lb1.
    async fn start() -> Pair {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "network namespaces need root: run this test as root"
        );
        let es: Vec<&str> = NODES.iter().map(|(_, a)| *a).collect();
        let lab = Lab::build(&[
            ("es", &es),
            ("lb1", &["10.231.0.21"]),
            ("lb2", &["10.231.0.22"]),
            ("client", &["10.231.0.30"]),
        ]);
        let nodes: Vec<(&str, SocketAddr)> = NODES
            .iter()
            .map(|(n, a)| (*n, format!("{a}:9200").parse().expect("node address")))
            .collect();
        let nodes = Nodes::start(&lab.ns("es"), &nodes);
        let rh1 = start_roundhouse(&lab, "lb1").await;
        let rh2 = start_roundhouse(&lab, "lb2").await;
        let conf = vrrp::config(VIP);
        let ka1 = Keepalived::start(&lab.ns("lb1"), "lb1", &conf);
        wait_holds(&lab, "lb1", Duration::from_secs(10), &ka1).await;
        let ka2 = Keepalived::start(&lab.ns("lb2"), "lb2", &conf);
        ka2.log
            .wait_for(&["Entering BACKUP STATE"], Duration::from_secs(10))
            .await;
        let vip: SocketAddr = format!("{VIP}:9200").parse().expect("virtual address");
        let client = Client::start(&lab.ns("client"), vip);
        client.served(10, Duration::from_secs(10)).await;
        Pair {
            client,
            ka1,
            ka2,
            rh1,
            rh2,
            _nodes: nodes,
            lab,
        }
    }

    /// Waits until `host` holds the virtual address (and the other balancer does not);
    /// returns how long that took from `since`.
    async fn moved_to(&self, host: &str, since: Instant, timeout: Duration) -> Duration {
        let log = if host == "lb1" { &self.ka1 } else { &self.ka2 };
        wait_holds(&self.lab, host, timeout, log).await;
        let took = since.elapsed();
        let other = if host == "lb1" { "lb2" } else { "lb1" };
        let deadline = Instant::now() + Duration::from_secs(5);
        while holds(&self.lab.ns(other), VIP) {
            assert!(Instant::now() < deadline, "both balancers hold {VIP}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        took
    }

    /// Watches for `WATCH`: `host` keeps the address, the other never has it, and the client
    /// is served throughout. A negative can only be shown over a time, hence the window.
    async fn stays_on(&self, host: &str) {
        let from = Instant::now();
        self.keeps(host).await;
        let failed = failures_since(&self.client.outcomes(), from);
        assert!(
            failed.is_empty(),
            "the client failed while nothing moved: {failed:?}"
        );
    }

    /// Watches for `WATCH`: `host` keeps the address and the other never has it.
    async fn keeps(&self, host: &str) {
        let other = if host == "lb1" { "lb2" } else { "lb1" };
        let from = Instant::now();
        while from.elapsed() < WATCH {
            assert!(holds(&self.lab.ns(host), VIP), "{host} lost {VIP}");
            assert!(!holds(&self.lab.ns(other), VIP), "{other} took {VIP}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Prints and checks what the client saw around a failover at `event` that took `took`:
    /// failures only from just before the event (a request in flight) to shortly after the
    /// address moved (a connection attempt to the old holder), and served again afterwards.
    async fn client_across(&self, what: &str, event: Instant, took: Duration) {
        self.client.served(10, Duration::from_secs(5)).await;
        let outcomes = self.client.outcomes();
        let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.failure.is_some()).collect();
        let offsets: Vec<f64> = failed
            .iter()
            .map(|o| o.at.saturating_duration_since(event).as_secs_f64())
            .collect();
        println!(
            "{what}: address on the other balancer after {:.2}s; client: {} of {} requests in the run failed{}",
            took.as_secs_f64(),
            failed.len(),
            outcomes.len(),
            match (offsets.first(), offsets.last()) {
                (Some(a), Some(b)) => format!(", started {a:.2}s to {b:.2}s after the event"),
                _ => String::new(),
            }
        );
        for o in &failed {
            // the client's timeouts: a request that started before the event can fail with it
            assert!(
                o.at + Duration::from_millis(1600) >= event,
                "a request failed before the event: {o:?}"
            );
            assert!(
                o.at <= event + took + Duration::from_secs(1),
                "a request failed after the address moved: {:?} at +{:.2}s",
                o.failure,
                o.at.saturating_duration_since(event).as_secs_f64()
            );
        }
    }
}

/// roundhouse on a balancer: the listener on the virtual address with `freebind: true`, the
/// admin endpoint where keepalived's check looks; ready and every node up.
async fn start_roundhouse(lab: &Lab, host: &str) -> Roundhouse {
    let ns = lab.ns(host);
    let mut rh = Roundhouse::spawn_wrapped(
        &["ip", "netns", "exec", &ns],
        &["run", "--config", "@CONFIG@"],
        &roundhouse_config(),
        &[],
    );
    rh.ready().await;
    all_up(&mut rh, NODES.len()).await;
    rh
}

fn roundhouse_config() -> String {
    let backend = NODES.iter().fold(Backend::new("es"), |b, (name, a)| {
        b.server(name, format!("{a}:9200").parse().expect("node address"))
    });
    let yaml = ConfigBuilder::new()
        .listener_at("es", &format!("{VIP}:9200"), "es", ", freebind: true")
        .backend(backend)
        .yaml();
    assert!(yaml.contains("  bind: 127.0.0.1:0\n"), "{yaml}");
    yaml.replace("  bind: 127.0.0.1:0\n", &format!("  bind: {ADMIN}\n"))
}

/// Polls `ip addr` in the host's namespace until it holds the virtual address.
async fn wait_holds(lab: &Lab, host: &str, timeout: Duration, ka: &Keepalived) {
    let deadline = Instant::now() + timeout;
    while !holds(&lab.ns(host), VIP) {
        assert!(
            Instant::now() < deadline,
            "{host} did not get {VIP} within {timeout:?}; its keepalived logged:\n{}",
            ka.log.text()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits a part of a second that differs from run to run, so that over several runs the event
/// lands anywhere in the check's 1s cycle (without it, every run hit the same point of the cycle
/// and measured the same failover time). Not a synchronisation: nothing is waited for.
async fn anywhere_in_the_check_cycle() {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .subsec_nanos();
    tokio::time::sleep(Duration::from_nanos(u64::from(nanos % 1_000_000_000))).await;
}

fn failures_since(outcomes: &[Outcome], from: Instant) -> Vec<Outcome> {
    outcomes
        .iter()
        .filter(|o| o.at >= from && o.failure.is_some())
        .cloned()
        .collect()
}

#[tokio::test]
#[ignore = "root: builds network namespaces and runs keepalived"]
async fn the_address_starts_on_lb1_and_the_client_is_served_through_it() {
    let pair = Pair::start().await;
    assert!(holds(&pair.lab.ns("lb1"), VIP));
    assert!(!holds(&pair.lab.ns("lb2"), VIP));
    // both roundhouses listen on it: the backup only thanks to freebind
    for rh in [&pair.rh1, &pair.rh2] {
        let addr = rh.listener("es").await;
        assert_eq!(addr.to_string(), format!("{VIP}:9200"));
    }
    pair.stays_on("lb1").await;
}

#[tokio::test]
#[ignore = "root: builds network namespaces and runs keepalived"]
async fn kill_9_of_the_active_roundhouse_moves_the_address_within_3s() {
    let mut pair = Pair::start().await;
    anywhere_in_the_check_cycle().await;
    let killed = Instant::now();
    pair.rh1.signal(libc::SIGKILL);
    let took = pair.moved_to("lb2", killed, Duration::from_secs(10)).await;
    pair.client_across("kill -9", killed, took).await;
    pair.ka1.log.wait_for(&["Entering FAULT STATE"], SOON).await;
    assert!(
        took < KILL_FAILOVER,
        "failover took {took:?}, over {KILL_FAILOVER:?}"
    );
    let _ = pair.rh1.wait_exit(SOON).await;
}

#[tokio::test]
#[ignore = "root: builds network namespaces and runs keepalived"]
async fn a_roundhouse_that_comes_back_does_not_take_the_address_back() {
    let mut pair = Pair::start().await;
    let backups = pair.ka1.log.count("Entering BACKUP STATE");
    anywhere_in_the_check_cycle().await;
    let killed = Instant::now();
    pair.rh1.signal(libc::SIGKILL);
    let took = pair.moved_to("lb2", killed, Duration::from_secs(10)).await;
    pair.client_across("kill -9", killed, took).await;
    let _ = pair.rh1.wait_exit(SOON).await;

    pair.rh1 = start_roundhouse(&pair.lab, "lb1").await;
    // its check passes twice: out of FAULT, a backup again; nopreempt keeps it one
    pair.ka1
        .log
        .wait_count(
            "Entering BACKUP STATE",
            backups + 1,
            Duration::from_secs(10),
        )
        .await;
    pair.stays_on("lb2").await;
}

#[tokio::test]
#[ignore = "root: builds network namespaces and runs keepalived"]
async fn a_hung_roundhouse_moves_the_address() {
    let pair = Pair::start().await;
    anywhere_in_the_check_cycle().await;
    let stopped = Instant::now();
    pair.rh1.signal(libc::SIGSTOP);
    let took = pair.moved_to("lb2", stopped, Duration::from_secs(10)).await;
    pair.client_across("SIGSTOP", stopped, took).await;
    // the port was open: the check failed by timing out (curl's 28), not by being refused
    pair.ka1
        .log
        .wait_for(&["roundhouse_alive", "status 28"], SOON)
        .await;
    pair.rh1.signal(libc::SIGCONT);
    assert!(
        took < HANG_FAILOVER,
        "failover took {took:?}, over {HANG_FAILOVER:?}"
    );
}

#[tokio::test]
#[ignore = "root: builds network namespaces and runs keepalived"]
async fn a_bad_reload_does_not_move_the_address() {
    let mut pair = Pair::start().await;
    let bad = format!("{}no_such_key: 1\n", roundhouse_config());
    pair.rh1.reload(&bad).await;
    pair.rh1.stderr.wait_for(&["reload rejected"], SOON).await;
    pair.stays_on("lb1").await;
    assert_eq!(pair.ka1.log.count("Entering FAULT STATE"), 0);
    assert!(pair.ka1.running() && pair.ka2.running());
}

#[tokio::test]
#[ignore = "root: builds network namespaces and runs keepalived"]
async fn every_node_unreachable_from_both_does_not_move_the_address() {
    let mut pair = Pair::start().await;
    // both balancers lose the whole cluster: /healthz answers 503 on both
    netns::ip(&["-n", &pair.lab.ns("es"), "link", "set", "eth0", "down"]);
    for rh in [&mut pair.rh1, &mut pair.rh2] {
        rh.notify
            .wait_for_status(&["DOWN: es: no healthy server"], Duration::from_secs(10))
            .await;
    }
    // roundhouse is alive on both, the cluster is what is gone: moving would gain nothing
    pair.keeps("lb1").await;
    assert_eq!(pair.ka1.log.count("Entering FAULT STATE"), 0);
    assert_eq!(pair.ka2.log.count("Entering FAULT STATE"), 0);
}
