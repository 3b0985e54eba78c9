//! Scheduler ops (xen.git `xen/include/public/sched.h`): shutdown, poll.

use super::abi::{self, EvtchnPort, SchedPoll, SchedShutdown};
use super::hypercall::{self, HypercallError};

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

/// `SCHEDOP_poll` on one port: blocks until `port` is pending or Xen system time reaches
/// `deadline_ns` (absolute; 0 = no timeout). Returns at once if the port is already pending.
/// Works with interrupts off (it is a blocking hypercall, not `hlt`). The caller re-checks
/// its condition afterwards: a return says nothing about why it woke.
pub fn poll_port(port: EvtchnPort, deadline_ns: u64) -> Result<(), HypercallError> {
    let ports = [port];
    let mut argument = SchedPoll {
        ports: ports.as_ptr() as u64,
        nr_ports: 1,
        pad: 0,
        timeout: deadline_ns,
    };
    // SAFETY: `argument` and the one-element `ports` array it points at are live and identity
    // mapped for the duration of the call; Xen only reads them.
    let result = unsafe {
        hypercall::call2(
            abi::HYPERVISOR_SCHED_OP,
            u64::from(abi::SCHEDOP_POLL),
            &mut argument as *mut SchedPoll as u64,
        )
    };
    hypercall::check(result).map(|_| ())
}
