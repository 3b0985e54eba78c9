//! Scheduler ops (xen.git `xen/include/public/sched.h`): shutdown.

use super::abi::{self, SchedShutdown};
use super::hypercall;

/// Why the domain stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownReason {
    PowerOff,
    Reboot,
    Crash,
}

/// `SCHEDOP_shutdown`; halts if Xen refuses (it should not).
pub fn shutdown(reason: ShutdownReason) -> ! {
    let reason = match reason {
        ShutdownReason::PowerOff => abi::SHUTDOWN_POWEROFF,
        ShutdownReason::Reboot => abi::SHUTDOWN_REBOOT,
        ShutdownReason::Crash => abi::SHUTDOWN_CRASH,
    };
    if hypercall::ready() {
        let mut argument = SchedShutdown { reason };
        // SAFETY: `argument` is a live `sched_shutdown`; the call does not return on success.
        let _ = unsafe {
            hypercall::call2(
                abi::HYPERVISOR_SCHED_OP,
                u64::from(abi::SCHEDOP_SHUTDOWN),
                &mut argument as *mut SchedShutdown as u64,
            )
        };
    }
    crate::arch::halt_forever()
}
