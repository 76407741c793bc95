//! The worker threads and the CPUs they run on: with `pin_workers: true` and one worker per CPU
//! the process may use, each is pinned to its own; otherwise (and by default) they are left to
//! the scheduler.

mod common;

use std::collections::BTreeSet;

use common::{ConfigBuilder, EchoServer, Roundhouse, SOON, echo_backend};

/// The first two CPUs this test may run on.
fn two_cpus() -> [usize; 2] {
    let allowed = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).expect("affinity");
    let cpus: Vec<usize> = (0..nix::sched::CpuSet::count())
        .filter(|&c| allowed.is_set(c).unwrap_or(false))
        .collect();
    assert!(
        cpus.len() >= 2,
        "these tests need two CPUs, this one may use {cpus:?}"
    );
    [cpus[0], cpus[1]]
}

/// Parses a kernel CPU list such as `0-2,5`.
fn cpu_list(s: &str) -> BTreeSet<usize> {
    let mut set = BTreeSet::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => set.extend(a.parse::<usize>().unwrap()..=b.parse::<usize>().unwrap()),
            None => {
                set.insert(part.parse().unwrap());
            }
        }
    }
    set
}

/// The CPUs each worker thread (`roundhouse-w0`, `-w1`, …) may run on, in worker order.
fn worker_cpus(pid: i32) -> Vec<BTreeSet<usize>> {
    let mut workers = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks") {
        let task = task.expect("task").path();
        let name = std::fs::read_to_string(task.join("comm")).expect("comm");
        let Some(i) = name.trim().strip_prefix("roundhouse-w") else {
            continue;
        };
        let status = std::fs::read_to_string(task.join("status")).expect("status");
        let list = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .expect("Cpus_allowed_list");
        workers.push((i.parse::<usize>().expect("worker number"), cpu_list(list)));
    }
    workers.sort();
    workers.into_iter().map(|(_, cpus)| cpus).collect()
}

/// roundhouse with `top` lines instead of the builder's `workers: 2`, started on `cpus` only.
async fn start_on(cpus: [usize; 2], top: &str, echo: &EchoServer) -> Roundhouse {
    let yaml = ConfigBuilder::new()
        .listener("echo", "echo")
        .backend(echo_backend(echo))
        .yaml()
        .replace("workers: 2\n", top);
    let list = format!("{},{}", cpus[0], cpus[1]);
    let mut rh = Roundhouse::spawn_wrapped(
        &["taskset", "-c", &list],
        &["run", "--config", "@CONFIG@"],
        &yaml,
        &[],
    );
    rh.ready().await;
    rh
}

#[tokio::test]
async fn pin_workers_binds_one_worker_per_cpu_each_to_its_own() {
    let cpus = two_cpus();
    let echo = EchoServer::start().await;
    let rh = start_on(cpus, "workers: auto\npin_workers: true\n", &echo).await;
    rh.stderr
        .wait_for(&["workers pinned, one per CPU"], SOON)
        .await;
    let expected: Vec<BTreeSet<usize>> = cpus.iter().map(|&c| BTreeSet::from([c])).collect();
    assert_eq!(worker_cpus(rh.pid()), expected);
}

#[tokio::test]
async fn by_default_workers_are_left_to_the_scheduler() {
    let cpus = two_cpus();
    let echo = EchoServer::start().await;
    let rh = start_on(cpus, "workers: auto\n", &echo).await;
    let both = BTreeSet::from(cpus);
    assert_eq!(worker_cpus(rh.pid()), vec![both.clone(), both]);
    assert_eq!(rh.stderr.count("pinned"), 0, "{}", rh.stderr.text());
}

#[tokio::test]
async fn fewer_workers_than_cpus_are_not_pinned() {
    let cpus = two_cpus();
    let echo = EchoServer::start().await;
    let rh = start_on(cpus, "workers: 1\npin_workers: true\n", &echo).await;
    rh.stderr
        .wait_for(&["workers not pinned", "one worker per CPU"], SOON)
        .await;
    assert_eq!(worker_cpus(rh.pid()), vec![BTreeSet::from(cpus)]);
}

#[tokio::test]
async fn a_reload_that_changes_pin_workers_says_it_waits_for_a_restart() {
    let cpus = two_cpus();
    let echo = EchoServer::start().await;
    let mut rh = start_on(cpus, "workers: auto\n", &echo).await;
    let text = std::fs::read_to_string(&rh.config).expect("config");
    rh.reload(&format!("{text}pin_workers: true\n")).await;
    rh.stderr
        .wait_for(&["pin_workers changes at the next restart"], SOON)
        .await;
    let both = BTreeSet::from(cpus);
    assert_eq!(worker_cpus(rh.pid()), vec![both.clone(), both]);
}
