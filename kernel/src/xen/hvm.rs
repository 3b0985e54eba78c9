//! HVM parameters and HVM ops (xen.git `xen/include/public/hvm/hvm_op.h`, `hvm/params.h`).

use super::abi::{self, XenHvmParam};
use super::hypercall::{self, HypercallError};

/// `HVMOP_get_param` for this domain.
pub fn get_param(index: u32) -> Result<u64, HypercallError> {
    let mut argument = XenHvmParam {
        domid: abi::DOMID_SELF,
        pad: 0,
        index,
        value: 0,
    };
    // SAFETY: `argument` is a live, identity-mapped `xen_hvm_param` Xen writes `value` into.
    let result = unsafe {
        hypercall::call2(
            abi::HYPERVISOR_HVM_OP,
            u64::from(abi::HVMOP_GET_PARAM),
            &mut argument as *mut XenHvmParam as u64,
        )
    };
    hypercall::check(result).map(|_| argument.value)
}

/// `HVMOP_set_param` for this domain.
pub fn set_param(index: u32, value: u64) -> Result<(), HypercallError> {
    let mut argument = XenHvmParam {
        domid: abi::DOMID_SELF,
        pad: 0,
        index,
        value,
    };
    // SAFETY: `argument` is a live, identity-mapped `xen_hvm_param`.
    let result = unsafe {
        hypercall::call2(
            abi::HYPERVISOR_HVM_OP,
            u64::from(abi::HVMOP_SET_PARAM),
            &mut argument as *mut XenHvmParam as u64,
        )
    };
    hypercall::check(result).map(|_| ())
}

/// Routes event-channel upcalls for the whole domain to IDT `vector` (callback type
/// "vector", `HVM_PARAM_CALLBACK_IRQ`). Xen then injects `vector` whenever vCPU 0's
/// `evtchn_upcall_pending` is set; no LAPIC EOI is involved.
pub fn set_callback_vector(vector: u8) -> Result<(), HypercallError> {
    let value = (abi::HVM_PARAM_CALLBACK_TYPE_VECTOR << abi::HVM_PARAM_CALLBACK_TYPE_SHIFT)
        | u64::from(vector);
    set_param(abi::HVM_PARAM_CALLBACK_IRQ, value)
}
