//! Crash survival under SIGKILL: `rxenstored --persistence crash-resilient` is killed at random
//! (seeded) moments and restarted hundreds of times while simulated guests and socket clients
//! run a mixed workload; see `xenstore_e2e::crash` for the workload and the guarantees checked.
//!
//! Environment: `XS_CRASH_KILLS` (default 200), `XS_CRASH_SEED` (replay a run; the seed is
//! printed), `XS_CRASH_BUDGET_SECS` (wall-clock cap of the kill loop, default 600).
//! Run with `--nocapture` to see the progress lines.

use xenstore_e2e::crash::{self, Config};

fn run_and_check(config: Config) {
    let report = crash::run(config);
    eprintln!("{}", report.summary());
    for violation in report.violations.iter().take(30) {
        eprintln!("  {violation}");
    }
    println!(
        "crash harness: {} kills, {} violations",
        report.kills,
        report.violations.len()
    );
    eprintln!(
        "crash harness: {} kills, {} violations",
        report.kills,
        report.violations.len()
    );
    assert!(
        report.violations.is_empty(),
        "crash harness (seed {:#x}): {} violations in {} kills, first: {}",
        report.seed,
        report.violations.len(),
        report.kills,
        report.violations[0]
    );
}

/// The full mix: writes (large, split across ring wraps and in time), reads, pipelined
/// requests, transactions and watches, from 3 guests and 2 socket clients.
#[test]
fn crash_harness_mixed_workload() {
    run_and_check(Config::from_env(200));
}
