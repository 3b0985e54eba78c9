//! Event channels, 2-level ABI (xen.git `xen/include/public/event_channel.h`; pending/mask
//! bitmaps in `struct shared_info`, xen.h): binding, sending, masking, and the pending scan.
//!
//! Delivery model: the upcall (see [`crate::arch`]) only acknowledges; the main loop calls
//! [`take_pending`], which atomically clears each pending, unmasked bit before handing the
//! port to the caller — an event that arrives during processing sets the bit again and is
//! seen on the next scan, so nothing is lost.
//!
//! Every port bound here is recorded in the `.warm` section until it is closed, so a warm
//! restart can close what the previous run left bound ([`crate::warm`]).

use core::sync::atomic::{AtomicUsize, Ordering};

use super::abi::{self, DomainId, EvtchnPort};
use super::hypercall::{self, HypercallError};
use super::shared_info;

/// Number of ports covered by the 2-level ABI.
pub const PORTS_MAX: u32 = abi::EVTCHN_2L_NR_CHANNELS;

/// Why an event-channel operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvtchnError {
    /// The port number is outside the 2-level range.
    PortOutOfRange(EvtchnPort),
    /// Xen refused the operation.
    Hypercall(HypercallError),
}

impl From<HypercallError> for EvtchnError {
    fn from(error: HypercallError) -> Self {
        EvtchnError::Hypercall(error)
    }
}

impl core::fmt::Display for EvtchnError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            EvtchnError::PortOutOfRange(port) => write!(f, "port {port} beyond the 2-level ABI"),
            EvtchnError::Hypercall(error) => write!(f, "hypercall failed: {error}"),
        }
    }
}

fn op<T>(command: u32, argument: &mut T) -> Result<(), HypercallError> {
    // SAFETY: every caller passes the `event_channel.h` struct matching `command`, live and
    // identity mapped for the call.
    let result = unsafe {
        hypercall::call2(
            abi::HYPERVISOR_EVENT_CHANNEL_OP,
            u64::from(command),
            argument as *mut T as u64,
        )
    };
    hypercall::check(result).map(|_| ())
}

fn checked(port: EvtchnPort) -> Result<EvtchnPort, EvtchnError> {
    if port < PORTS_MAX {
        Ok(port)
    } else {
        Err(EvtchnError::PortOutOfRange(port))
    }
}

/// `EVTCHNOP_bind_interdomain`: connects to `remote_port` of `remote_domain`; returns the
/// local port (masked until [`unmask`]).
pub fn bind_interdomain(
    remote_domain: DomainId,
    remote_port: EvtchnPort,
) -> Result<EvtchnPort, EvtchnError> {
    let mut argument = abi::EvtchnBindInterdomain {
        remote_dom: remote_domain,
        pad: 0,
        remote_port,
        local_port: 0,
    };
    op(abi::EVTCHNOP_BIND_INTERDOMAIN, &mut argument)?;
    crate::warm::note_port_bound(argument.local_port);
    checked(argument.local_port)
}

/// `EVTCHNOP_bind_virq` on vCPU 0.
pub fn bind_virq(virq: u32) -> Result<EvtchnPort, EvtchnError> {
    let mut argument = abi::EvtchnBindVirq {
        virq,
        vcpu: 0,
        port: 0,
    };
    op(abi::EVTCHNOP_BIND_VIRQ, &mut argument)?;
    crate::warm::note_port_bound(argument.port);
    checked(argument.port)
}

/// `EVTCHNOP_alloc_unbound`: a port that `remote_domain` may bind to.
pub fn alloc_unbound(remote_domain: DomainId) -> Result<EvtchnPort, EvtchnError> {
    let mut argument = abi::EvtchnAllocUnbound {
        dom: abi::DOMID_SELF,
        remote_dom: remote_domain,
        port: 0,
    };
    op(abi::EVTCHNOP_ALLOC_UNBOUND, &mut argument)?;
    crate::warm::note_port_bound(argument.port);
    checked(argument.port)
}

/// `EVTCHNOP_send`.
pub fn send(port: EvtchnPort) -> Result<(), EvtchnError> {
    let mut argument = abi::EvtchnPortArgument {
        port: checked(port)?,
    };
    op(abi::EVTCHNOP_SEND, &mut argument).map_err(EvtchnError::from)
}

/// `EVTCHNOP_close` (the port is masked first so a stale bit cannot be reported).
pub fn close(port: EvtchnPort) -> Result<(), EvtchnError> {
    mask(checked(port)?);
    let mut argument = abi::EvtchnPortArgument { port };
    op(abi::EVTCHNOP_CLOSE, &mut argument)?;
    crate::warm::note_port_closed(port);
    clear_pending(port);
    Ok(())
}

fn word_and_bit(port: EvtchnPort) -> (usize, u64) {
    ((port / 64) as usize, 1u64 << (port % 64))
}

/// Masks `port` (atomic set of its mask bit).
pub fn mask(port: EvtchnPort) {
    let (word, bit) = word_and_bit(port);
    shared_info::mask_word(word).fetch_or(bit, Ordering::SeqCst);
}

/// Unmasks `port`; if it is already pending, asks Xen (`EVTCHNOP_unmask`) to re-deliver so the
/// upcall fires.
pub fn unmask(port: EvtchnPort) -> Result<(), EvtchnError> {
    let (word, bit) = word_and_bit(checked(port)?);
    shared_info::mask_word(word).fetch_and(!bit, Ordering::SeqCst);
    if shared_info::pending_word(word).load(Ordering::SeqCst) & bit != 0 {
        let mut argument = abi::EvtchnPortArgument { port };
        op(abi::EVTCHNOP_UNMASK, &mut argument)?;
    }
    Ok(())
}

/// Clears the pending bit of `port`.
pub fn clear_pending(port: EvtchnPort) {
    let (word, bit) = word_and_bit(port);
    shared_info::pending_word(word).fetch_and(!bit, Ordering::SeqCst);
}

/// Masks every port (done once at start: only ports we bind are unmasked).
pub fn mask_all() {
    for word in 0..64 {
        shared_info::mask_word(word).store(u64::MAX, Ordering::SeqCst);
    }
}

/// Is any unmasked port pending?
pub fn any_pending() -> bool {
    (0..64).any(|word| {
        shared_info::pending_word(word).load(Ordering::SeqCst)
            & !shared_info::mask_word(word).load(Ordering::SeqCst)
            != 0
    })
}

/// Word the next scan starts at (rotates, so low ports cannot starve high ones).
static SCAN_START: AtomicUsize = AtomicUsize::new(0);

/// Hands every pending, unmasked port to `handler`, clearing its pending bit first.
/// Returns the number of ports handed out. Bounded: at most [`PORTS_MAX`] per call.
pub fn take_pending(mut handler: impl FnMut(EvtchnPort)) -> usize {
    // Acknowledge the upcall state first: anything that arrives from now on re-sets it.
    shared_info::upcall_pending().store(0, Ordering::SeqCst);
    shared_info::pending_selector().swap(0, Ordering::SeqCst);
    let start = SCAN_START.fetch_add(1, Ordering::Relaxed) % 64;
    let mut delivered = 0;
    for step in 0..64 {
        let word = (start + step) % 64;
        let ready = shared_info::pending_word(word).load(Ordering::SeqCst)
            & !shared_info::mask_word(word).load(Ordering::SeqCst);
        let mut remaining = ready;
        while remaining != 0 {
            let bit_index = remaining.trailing_zeros();
            let bit = 1u64 << bit_index;
            remaining &= !bit;
            let previous = shared_info::pending_word(word).fetch_and(!bit, Ordering::SeqCst);
            if previous & bit != 0 {
                delivered += 1;
                handler(word as u32 * 64 + bit_index);
            }
        }
    }
    delivered
}
