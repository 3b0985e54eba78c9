//! The Xen platform layer: detection via CPUID (xen.git `xen/include/public/arch-x86/cpuid.h`)
//! and one module per Xen interface. Everything here is specific to running under Xen; the
//! rest of the kernel sees it through [`crate::platform`].

pub mod abi;
pub mod blkif;
pub mod console;
pub mod domctl;
pub mod evtchn;
pub mod grant;
pub mod grant_table;
pub mod hvm;
pub mod hypercall;
pub mod memory;
pub mod sched;
pub mod shared_info;
pub mod time;

use crate::arch::cpuid;

/// What CPUID tells us about the hypervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XenCpuid {
    /// Leaf of the Xen signature (0x40000000 or 0x40000100 with Viridian, ...).
    pub base_leaf: u32,
    /// Highest Xen leaf.
    pub max_leaf: u32,
    pub version_major: u16,
    pub version_minor: u16,
    /// MSR index that installs the hypercall page (leaf base+2 EBX).
    pub hypercall_msr: u32,
    pub hypercall_pages: u32,
    /// Own domain id (leaf base+4 ECX, when flagged present).
    pub domid: Option<u16>,
    /// vCPU id (leaf base+4 EBX, when flagged present).
    pub vcpu_id: Option<u32>,
    /// Leaf base+4 bit 6: `HVMOP_set_evtchn_upcall_vector` supported.
    pub per_vcpu_upcall_vector: bool,
}

/// Scans the hypervisor CPUID leaves for Xen's signature. `None` when not running on Xen.
pub fn detect() -> Option<XenCpuid> {
    for index in 0..0x100u32 {
        let base_leaf = abi::XEN_CPUID_FIRST_LEAF + index * 0x100;
        let signature = cpuid(base_leaf, 0);
        if signature.ebx == abi::XEN_CPUID_SIGNATURE_EBX
            && signature.ecx == abi::XEN_CPUID_SIGNATURE_ECX
            && signature.edx == abi::XEN_CPUID_SIGNATURE_EDX
        {
            let max_leaf = signature.eax;
            if max_leaf < base_leaf + 2 {
                return None; // no hypercall leaf: unusable
            }
            let version = cpuid(base_leaf + 1, 0);
            let hypercall = cpuid(base_leaf + 2, 0);
            let (mut domid, mut vcpu_id, mut per_vcpu_upcall_vector) = (None, None, false);
            if max_leaf >= base_leaf + 4 {
                let features = cpuid(base_leaf + 4, 0);
                if features.eax & abi::XEN_HVM_CPUID_DOMID_PRESENT != 0 {
                    domid = Some(features.ecx as u16);
                }
                if features.eax & abi::XEN_HVM_CPUID_VCPU_ID_PRESENT != 0 {
                    vcpu_id = Some(features.ebx);
                }
                per_vcpu_upcall_vector = features.eax & abi::XEN_HVM_CPUID_UPCALL_VECTOR != 0;
            }
            return Some(XenCpuid {
                base_leaf,
                max_leaf,
                version_major: (version.eax >> 16) as u16,
                version_minor: version.eax as u16,
                hypercall_msr: hypercall.ebx,
                hypercall_pages: hypercall.eax,
                domid,
                vcpu_id,
                per_vcpu_upcall_vector,
            });
        }
    }
    None
}
