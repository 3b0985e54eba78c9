//! `xenstore-e2e`: end-to-end test support for the hosted daemon `rxenstored`.
//!
//! The integration tests in `tests/tests/*.rs` use these modules:
//! - [`daemon`]: locate (or build) the `rxenstored` binary, spawn it on a private socket in a
//!   temporary directory, wait for readiness (pid file), SIGKILL/SIGTERM and restart it;
//! - [`tools`]: run the real clients (Debian xenstore-utils, pyxs) against that socket;
//! - [`wire`]: small helpers over the wire format (payload building, error names);
//! - [`rng`]: a tiny seeded PRNG so every randomised run is reproducible from its seed;
//! - [`crash`]: the reusable crash-survival harness (workload, killer, checker).
//!
//! Simulated guests (raw bytes, split packets, corrupt indices, every received packet visible
//! for exactly-once checks) are `rxenstored::guest::SimulatedGuest`.

pub mod crash;
pub mod daemon;
pub mod rng;
pub mod tools;
pub mod wire;
