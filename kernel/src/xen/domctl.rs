//! Domain information via `XEN_DOMCTL_getdomaininfo` (xen.git `xen/include/public/domctl.h`),
//! for Xen 4.17 (`XEN_DOMCTL_INTERFACE_VERSION` 0x15). The domctl interface version changes
//! between releases: a mismatch makes Xen return `EACCES`, reported as such.
//!
//! Semantics differ by version: up to 4.17 Xen returns the first domain whose id is >= the
//! requested one; from 4.18 on only the exact domain (else `ESRCH`). [`next_domain`] handles
//! both. `XEN_DOMCTL_get_domain_state` (4.21+) is not implemented yet.

use super::abi::{self, DomainId, XenDomctl, XenDomctlGetdomaininfo, XenDomctlPayload};
use super::hypercall::{self, HypercallError};

/// The facts about a domain that a xenstore server needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DomainInfo {
    pub domid: DomainId,
    pub flags: u32,
    pub total_pages: u64,
    pub max_pages: u64,
    pub gpaddr_bits: u8,
}

impl DomainInfo {
    pub fn dying(&self) -> bool {
        self.flags & abi::XEN_DOMINF_DYING != 0
    }
    pub fn shutdown(&self) -> bool {
        self.flags & abi::XEN_DOMINF_SHUTDOWN != 0
    }
    pub fn shutdown_code(&self) -> u8 {
        ((self.flags >> abi::XEN_DOMINF_SHUTDOWN_SHIFT) & abi::XEN_DOMINF_SHUTDOWN_MASK) as u8
    }
    pub fn xenstore_domain(&self) -> bool {
        self.flags & abi::XEN_DOMINF_XS_DOMAIN != 0
    }
    pub fn hvm(&self) -> bool {
        self.flags & abi::XEN_DOMINF_HVM_GUEST != 0
    }
}

/// Raw `XEN_DOMCTL_getdomaininfo` for `domid`.
pub fn getdomaininfo(domid: DomainId) -> Result<DomainInfo, HypercallError> {
    let mut domctl = XenDomctl {
        cmd: abi::XEN_DOMCTL_GETDOMAININFO,
        interface_version: abi::XEN_DOMCTL_INTERFACE_VERSION_4_17,
        domain: domid,
        pad: [0; 3],
        payload: XenDomctlPayload { pad: [0; 16] },
    };
    // SAFETY: `domctl` is a live, identity-mapped `struct xen_domctl` (144 bytes, asserted).
    let result = unsafe {
        hypercall::call2(
            abi::HYPERVISOR_DOMCTL,
            &mut domctl as *mut XenDomctl as u64,
            0,
        )
    };
    hypercall::check(result)?;
    // SAFETY: Xen filled the getdomaininfo member for this command; every bit pattern is a
    // valid `XenDomctlGetdomaininfo` (plain integers).
    let info: XenDomctlGetdomaininfo = unsafe { domctl.payload.getdomaininfo };
    Ok(DomainInfo {
        domid: info.domain,
        flags: info.flags,
        total_pages: info.tot_pages,
        max_pages: info.max_pages,
        gpaddr_bits: info.gpaddr_bits,
    })
}

/// The existing domain with the smallest id >= `from`, or `None` when there is none.
/// Bounded by `DOMID_FIRST_RESERVED` probes.
pub fn next_domain(from: DomainId) -> Result<Option<DomainInfo>, HypercallError> {
    let (major, minor) = hypercall::xen_version();
    let first_at_or_above = (major, minor) <= (4, 17);
    let mut candidate = from;
    while candidate < abi::DOMID_FIRST_RESERVED {
        match getdomaininfo(candidate) {
            Ok(info) if info.domid >= candidate => return Ok(Some(info)),
            Ok(_) => candidate += 1, // should not happen; keep going forwards
            // Up to 4.17: nothing at or above `candidate`.
            Err(HypercallError(abi::XEN_ESRCH)) if first_at_or_above => return Ok(None),
            // 4.18+: just not this one (bounded by the reserved range).
            Err(HypercallError(abi::XEN_ESRCH)) => candidate += 1,
            Err(error) => return Err(error),
        }
    }
    Ok(None)
}
