//! How the property tests run: a fixed seed in `cargo test` (the same cases every run, so a
//! failure there is a regression and not luck), a random seed and many more cases in the
//! `#[ignore]`d long runs, which explore.

use proptest::test_runner::{Config, RngSeed, TestRunner};

/// The seed of every quick run.
const SEED: u64 = 0x726f_756e_6468_6f75;

/// A runner for `cases` cases with the fixed seed.
pub fn quick(cases: u32) -> TestRunner {
    runner(cases, RngSeed::Fixed(SEED))
}

/// A runner for 50 times `cases` cases with a random seed (shown with a failure).
pub fn long(cases: u32) -> TestRunner {
    runner(cases * 50, RngSeed::Random)
}

fn runner(cases: u32, rng_seed: RngSeed) -> TestRunner {
    TestRunner::new(Config {
        cases,
        rng_seed,
        // a failure is turned into a named regression test, not a file beside the source
        failure_persistence: None,
        // a failing case that waits on a socket must not shrink for hours
        max_shrink_time: 60_000,
        ..Config::default()
    })
}

/// Runs `test` on values of `strategy`; a failure panics with the smallest failing value.
pub fn check<S: proptest::strategy::Strategy>(
    mut runner: TestRunner,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), proptest::test_runner::TestCaseError>,
) {
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{e}");
    }
}
