//! Xen system time (ns since the host booted) from `vcpu_time_info` (xen.git
//! `xen/include/public/xen.h`), and the one-shot timer `HYPERVISOR_set_timer_op` whose expiry
//! raises `VIRQ_TIMER`.

use super::abi;
use super::hypercall::{self, HypercallError};
use super::shared_info;
use crate::arch::rdtsc;

/// Converts a TSC delta to nanoseconds with Xen's scale (shift, then 32.32 multiply).
pub fn scale_delta(delta: u64, multiplier: u32, shift: i8) -> u64 {
    let shifted = if shift >= 0 {
        delta << shift
    } else {
        delta >> shift.unsigned_abs()
    };
    ((u128::from(shifted) * u128::from(multiplier)) >> 32) as u64
}

/// Current Xen system time in nanoseconds.
pub fn now_ns() -> u64 {
    let time = shared_info::vcpu_time();
    let delta = rdtsc().wrapping_sub(time.tsc_timestamp);
    time.system_time
        .wrapping_add(scale_delta(delta, time.tsc_to_system_mul, time.tsc_shift))
}

/// Arms the one-shot timer for absolute system time `deadline_ns` (0 cancels it).
pub fn set_timer(deadline_ns: u64) -> Result<(), HypercallError> {
    // SAFETY: set_timer_op takes a plain integer.
    let result = unsafe { hypercall::call2(abi::HYPERVISOR_SET_TIMER_OP, deadline_ns, 0) };
    hypercall::check(result).map(|_| ())
}
