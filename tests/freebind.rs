//! Listening on an address this host does not hold yet: the backup balancer of a keepalived
//! pair, whose virtual address arrives only when it takes over. The address used is one of the
//! project's test range (10.231.0.0/24), which nothing on this host holds; it is only bound,
//! never connected to.

mod common;

use std::time::Duration;

use common::*;

/// A virtual address of the test range: no host here holds it.
const VIRTUAL: &str = "10.231.0.250";

fn config(echo: &EchoServer, freebind: bool) -> String {
    let extra = if freebind { ", freebind: true" } else { "" };
    ConfigBuilder::new()
        .listener_at("vip", &format!("{VIRTUAL}:9200"), "echo", extra)
        .backend(echo_backend(echo))
        .yaml()
}

#[tokio::test]
async fn an_address_the_host_does_not_hold_is_refused_as_configuration_naming_both_ways_out() {
    let echo = EchoServer::start().await;
    let mut rh = Roundhouse::spawn(&config(&echo, false));
    let status = rh.wait_exit(Duration::from_secs(10)).await;
    // 78: a configuration problem, which the unit does not restart in a loop
    assert_eq!(status.code(), Some(78), "{}", rh.stderr.text());
    let line = rh
        .stderr
        .wait_for(&["listeners[0].bind: cannot bind 10.231.0.250:9200"], SOON)
        .await;
    assert!(
        line.contains("this host does not hold that address (yet)"),
        "{line}"
    );
    assert!(
        line.contains("set freebind: true on the listener"),
        "{line}"
    );
    assert!(line.contains("net.ipv4.ip_nonlocal_bind=1"), "{line}");
    let status = rh
        .notify
        .wait_for_status(&["configuration error"], SOON)
        .await;
    assert!(status.contains("freebind"), "{status}");
}

#[tokio::test]
async fn freebind_listens_on_an_address_the_host_does_not_hold_yet() {
    let echo = EchoServer::start().await;
    let mut rh = Roundhouse::spawn(&config(&echo, true));
    rh.ready().await;
    let line = rh
        .stderr
        .wait_for(&["listening", "listener=vip"], SOON)
        .await;
    assert!(line.contains("addr=10.231.0.250:9200"), "{line}");
}

#[tokio::test]
async fn check_warns_about_a_listener_address_not_on_this_host() {
    let echo = EchoServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    for (freebind, needle) in [
        (
            false,
            "warning: listeners[0].bind: this host does not hold 10.231.0.250: `roundhouse run` will refuse to start (exit 78) unless the listener says freebind: true or the host sets net.ipv4.ip_nonlocal_bind=1",
        ),
        (
            true,
            "note: listeners[0].bind: this host does not hold 10.231.0.250 now; freebind: true lets roundhouse listen on it anyway",
        ),
    ] {
        let path = dir.path().join(format!("freebind-{freebind}.yaml"));
        std::fs::write(&path, config(&echo, freebind)).unwrap();
        let (code, out, err) = run_cli(&["check", "--config", path.to_str().unwrap()], &[]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("configuration is valid"), "{out}");
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
}
