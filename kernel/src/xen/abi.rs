//! Xen ABI definitions used by the kernel: constants and `#[repr(C)]` structs, each with a
//! compile-time size assertion and the public header it mirrors (paths in xen.git,
//! `xen/include/public/`; the domctl layout is the Xen 4.17 one, interface version 0x15, as
//! shipped in Debian bookworm's `libxen-dev`).
//!
//! Written from the headers' facts (numbers, field order, sizes); no code copied.

#![allow(dead_code)] // reason: a complete ABI vocabulary; not every constant is used yet

use core::mem::size_of;

// ---- xen.h: hypercall numbers ----
pub const HYPERVISOR_MEMORY_OP: u32 = 12;
pub const HYPERVISOR_SET_TIMER_OP: u32 = 15;
pub const HYPERVISOR_XEN_VERSION: u32 = 17;
pub const HYPERVISOR_CONSOLE_IO: u32 = 18;
pub const HYPERVISOR_GRANT_TABLE_OP: u32 = 20;
pub const HYPERVISOR_VCPU_OP: u32 = 24;
pub const HYPERVISOR_SCHED_OP: u32 = 29;
pub const HYPERVISOR_EVENT_CHANNEL_OP: u32 = 32;
pub const HYPERVISOR_HVM_OP: u32 = 34;
pub const HYPERVISOR_SYSCTL: u32 = 35;
pub const HYPERVISOR_DOMCTL: u32 = 36;

// ---- xen.h: domain ids, VIRQs ----
pub type DomainId = u16;
pub const DOMID_FIRST_RESERVED: DomainId = 0x7FF0;
pub const DOMID_SELF: DomainId = 0x7FF0;
pub const DOMID_INVALID: DomainId = 0x7FF4;
pub const VIRQ_TIMER: u32 = 0;
pub const VIRQ_DEBUG: u32 = 1;
pub const VIRQ_CONSOLE: u32 = 2;
pub const VIRQ_DOM_EXC: u32 = 3;

// ---- xen.h: console_io ----
pub const CONSOLEIO_WRITE: u32 = 0;

// ---- arch-x86/cpuid.h ----
pub const XEN_CPUID_FIRST_LEAF: u32 = 0x4000_0000;
pub const XEN_CPUID_SIGNATURE_EBX: u32 = 0x566e_6558; // "XenV"
pub const XEN_CPUID_SIGNATURE_ECX: u32 = 0x6558_4d4d; // "MMXe"
pub const XEN_CPUID_SIGNATURE_EDX: u32 = 0x4d4d_566e; // "nVMM"
/// Leaf base+4 EAX bits.
pub const XEN_HVM_CPUID_VCPU_ID_PRESENT: u32 = 1 << 3;
pub const XEN_HVM_CPUID_DOMID_PRESENT: u32 = 1 << 4;
pub const XEN_HVM_CPUID_UPCALL_VECTOR: u32 = 1 << 6;

// ---- arch-x86/hvm/start_info.h ----
pub const XEN_HVM_START_MAGIC_VALUE: u32 = 0x336e_c578;

/// `struct hvm_start_info` (arch-x86/hvm/start_info.h).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct HvmStartInfo {
    pub magic: u32,
    pub version: u32,
    pub flags: u32,
    pub nr_modules: u32,
    pub modlist_paddr: u64,
    pub cmdline_paddr: u64,
    pub rsdp_paddr: u64,
    pub memmap_paddr: u64,
    pub memmap_entries: u32,
    pub reserved: u32,
}
const _: () = assert!(size_of::<HvmStartInfo>() == 56);

/// `struct hvm_modlist_entry` (arch-x86/hvm/start_info.h).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct HvmModlistEntry {
    pub paddr: u64,
    pub size: u64,
    pub cmdline_paddr: u64,
    pub reserved: u64,
}
const _: () = assert!(size_of::<HvmModlistEntry>() == 32);

/// `struct hvm_memmap_table_entry` (arch-x86/hvm/start_info.h).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct HvmMemmapTableEntry {
    pub addr: u64,
    pub size: u64,
    pub type_: u32,
    pub reserved: u32,
}
const _: () = assert!(size_of::<HvmMemmapTableEntry>() == 24);

// ---- version.h ----
pub const XENVER_VERSION: u32 = 0;

// ---- hvm/hvm_op.h, hvm/params.h ----
pub const HVMOP_SET_PARAM: u32 = 0;
pub const HVMOP_GET_PARAM: u32 = 1;
pub const HVMOP_SET_EVTCHN_UPCALL_VECTOR: u32 = 23;
pub const HVM_PARAM_CALLBACK_IRQ: u32 = 0;
pub const HVM_PARAM_STORE_PFN: u32 = 1;
pub const HVM_PARAM_STORE_EVTCHN: u32 = 2;
pub const HVM_PARAM_CONSOLE_PFN: u32 = 17;
pub const HVM_PARAM_CONSOLE_EVTCHN: u32 = 18;
/// `HVM_PARAM_CALLBACK_IRQ` value type "vector" (params.h: bits 56..63 = type 2).
pub const HVM_PARAM_CALLBACK_TYPE_VECTOR: u64 = 2;
pub const HVM_PARAM_CALLBACK_TYPE_SHIFT: u32 = 56;

/// `struct xen_hvm_param` (hvm/hvm_op.h).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct XenHvmParam {
    pub domid: DomainId,
    pub pad: u16,
    pub index: u32,
    pub value: u64,
}
const _: () = assert!(size_of::<XenHvmParam>() == 16);

/// `struct xen_hvm_evtchn_upcall_vector` (hvm/hvm_op.h).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct XenHvmEvtchnUpcallVector {
    pub vcpu: u32,
    pub vector: u8,
    pub pad: [u8; 3],
}
const _: () = assert!(size_of::<XenHvmEvtchnUpcallVector>() == 8);

// ---- memory.h ----
pub const XENMEM_CURRENT_RESERVATION: u32 = 3;
pub const XENMEM_MAXIMUM_RESERVATION: u32 = 4;
pub const XENMEM_ADD_TO_PHYSMAP: u32 = 7;
pub const XENMEM_MEMORY_MAP: u32 = 9;
pub const XENMAPSPACE_SHARED_INFO: u32 = 0;
pub const XENMAPSPACE_GRANT_TABLE: u32 = 1;

/// `struct xen_add_to_physmap` (memory.h).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct XenAddToPhysmap {
    pub domid: DomainId,
    pub size: u16,
    pub space: u32,
    pub idx: u64,
    pub gpfn: u64,
}
const _: () = assert!(size_of::<XenAddToPhysmap>() == 24);

/// `struct xen_memory_map` (memory.h): in = capacity, out = entries written.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct XenMemoryMap {
    pub nr_entries: u32,
    pub pad: u32,
    pub buffer: u64,
}
const _: () = assert!(size_of::<XenMemoryMap>() == 16);

/// One e820 entry as returned by `XENMEM_memory_map` (packed, 20 bytes; memory.h refers to
/// the e820 format).
#[repr(C, packed)]
#[derive(Debug, Clone, Copy, Default)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub type_: u32,
}
const _: () = assert!(size_of::<E820Entry>() == 20);

// ---- event_channel.h ----
pub type EvtchnPort = u32;
pub const EVTCHNOP_BIND_INTERDOMAIN: u32 = 0;
pub const EVTCHNOP_BIND_VIRQ: u32 = 1;
pub const EVTCHNOP_CLOSE: u32 = 3;
pub const EVTCHNOP_SEND: u32 = 4;
pub const EVTCHNOP_STATUS: u32 = 5;
pub const EVTCHNOP_ALLOC_UNBOUND: u32 = 6;
pub const EVTCHNOP_UNMASK: u32 = 9;
/// Ports of the 2-level ABI on 64-bit: 64 words × 64 bits.
pub const EVTCHN_2L_NR_CHANNELS: u32 = 64 * 64;

/// `struct evtchn_bind_interdomain` (event_channel.h).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct EvtchnBindInterdomain {
    pub remote_dom: DomainId,
    pub pad: u16,
    pub remote_port: EvtchnPort,
    pub local_port: EvtchnPort,
}
const _: () = assert!(size_of::<EvtchnBindInterdomain>() == 12);

/// `struct evtchn_bind_virq` (event_channel.h).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct EvtchnBindVirq {
    pub virq: u32,
    pub vcpu: u32,
    pub port: EvtchnPort,
}
const _: () = assert!(size_of::<EvtchnBindVirq>() == 12);

/// `struct evtchn_alloc_unbound` (event_channel.h).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct EvtchnAllocUnbound {
    pub dom: DomainId,
    pub remote_dom: DomainId,
    pub port: EvtchnPort,
}
const _: () = assert!(size_of::<EvtchnAllocUnbound>() == 8);

/// `struct evtchn_send`, `evtchn_close`, `evtchn_unmask` (event_channel.h): one port.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct EvtchnPortArgument {
    pub port: EvtchnPort,
}
const _: () = assert!(size_of::<EvtchnPortArgument>() == 4);

// ---- sched.h ----
pub const SCHEDOP_YIELD: u32 = 0;
pub const SCHEDOP_BLOCK: u32 = 1;
pub const SCHEDOP_SHUTDOWN: u32 = 2;
pub const SCHEDOP_POLL: u32 = 3;
pub const SHUTDOWN_POWEROFF: u32 = 0;
pub const SHUTDOWN_REBOOT: u32 = 1;
pub const SHUTDOWN_CRASH: u32 = 3;

/// `struct sched_poll` (sched.h): block until one of `nr_ports` ports (array at guest
/// address `ports`) is pending or Xen system time reaches `timeout` (ns, 0 = no timeout).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct SchedPoll {
    pub ports: u64,
    pub nr_ports: u32,
    pub pad: u32,
    pub timeout: u64,
}
const _: () = assert!(size_of::<SchedPoll>() == 24);

/// `struct sched_shutdown` (sched.h).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct SchedShutdown {
    pub reason: u32,
}
const _: () = assert!(size_of::<SchedShutdown>() == 4);

// ---- xen.h + arch-x86/xen.h: shared_info / vcpu_info (x86_64 layout) ----
/// `struct vcpu_time_info` (xen.h).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct VcpuTimeInfo {
    pub version: u32,
    pub pad0: u32,
    pub tsc_timestamp: u64,
    pub system_time: u64,
    pub tsc_to_system_mul: u32,
    pub tsc_shift: i8,
    pub flags: u8,
    pub pad1: [u8; 2],
}
const _: () = assert!(size_of::<VcpuTimeInfo>() == 32);

/// `struct vcpu_info` (xen.h) with `struct arch_vcpu_info` (arch-x86/xen.h) inlined.
#[repr(C)]
#[derive(Debug)]
pub struct VcpuInfo {
    pub evtchn_upcall_pending: u8,
    pub evtchn_upcall_mask: u8,
    pub pad0: [u8; 6],
    pub evtchn_pending_sel: u64,
    pub arch_cr2: u64,
    pub arch_pad: u64,
    pub time: VcpuTimeInfo,
}
const _: () = assert!(size_of::<VcpuInfo>() == 64);

/// `struct shared_info` (xen.h), x86_64, up to and including the wallclock fields; the
/// arch part that follows is not used.
#[repr(C)]
#[derive(Debug)]
pub struct SharedInfo {
    pub vcpu_info: [VcpuInfo; 32],
    pub evtchn_pending: [u64; 64],
    pub evtchn_mask: [u64; 64],
    pub wc_version: u32,
    pub wc_sec: u32,
    pub wc_nsec: u32,
    pub wc_sec_hi: u32,
}
const _: () = assert!(size_of::<SharedInfo>() == 3088);
const _: () = assert!(core::mem::offset_of!(SharedInfo, evtchn_pending) == 2048);
const _: () = assert!(core::mem::offset_of!(SharedInfo, evtchn_mask) == 2560);

// ---- io/console.h ----
pub const XENCONS_IN_SIZE: u32 = 1024;
pub const XENCONS_OUT_SIZE: u32 = 2048;

/// `struct xencons_interface` (io/console.h).
#[repr(C)]
#[derive(Debug)]
pub struct XenconsInterface {
    pub in_: [u8; XENCONS_IN_SIZE as usize],
    pub out: [u8; XENCONS_OUT_SIZE as usize],
    pub in_cons: u32,
    pub in_prod: u32,
    pub out_cons: u32,
    pub out_prod: u32,
}
const _: () = assert!(size_of::<XenconsInterface>() == 3088);

// ---- grant_table.h ----
pub type GrantRef = u32;
pub type GrantHandle = u32;
pub const GNTTABOP_MAP_GRANT_REF: u32 = 0;
pub const GNTTABOP_UNMAP_GRANT_REF: u32 = 1;
pub const GNTTABOP_SETUP_TABLE: u32 = 2;
pub const GNTTABOP_QUERY_SIZE: u32 = 6;
pub const GNTMAP_HOST_MAP: u32 = 1 << 1;
pub const GNTMAP_READONLY: u32 = 1 << 2;
pub const GNTTAB_RESERVED_CONSOLE: GrantRef = 0;
pub const GNTTAB_RESERVED_XENSTORE: GrantRef = 1;
pub const GNTST_OKAY: i16 = 0;
/// Grant entry flags (grant_table.h `GTF_*`, v1 `flags` field).
pub const GTF_INVALID: u16 = 0;
pub const GTF_PERMIT_ACCESS: u16 = 1;
pub const GTF_TYPE_MASK: u16 = 3;
pub const GTF_READONLY: u16 = 1 << 2;
pub const GTF_READING: u16 = 1 << 3;
pub const GTF_WRITING: u16 = 1 << 4;
/// Refs below this are reserved for the toolstack (grant_table.h: `GNTTAB_NR_RESERVED_ENTRIES`).
pub const GNTTAB_NR_RESERVED_ENTRIES: GrantRef = 8;

/// `struct grant_entry_v1` (grant_table.h): 512 per 4 KiB frame.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct GrantEntryV1 {
    pub flags: u16,
    pub domid: DomainId,
    pub frame: u32,
}
const _: () = assert!(size_of::<GrantEntryV1>() == 8);

/// `struct gnttab_map_grant_ref` (grant_table.h).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct GnttabMapGrantRef {
    pub host_addr: u64,
    pub flags: u32,
    pub ref_: GrantRef,
    pub dom: DomainId,
    pub status: i16,
    pub handle: GrantHandle,
    pub dev_bus_addr: u64,
}
const _: () = assert!(size_of::<GnttabMapGrantRef>() == 32);

/// `struct gnttab_unmap_grant_ref` (grant_table.h).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct GnttabUnmapGrantRef {
    pub host_addr: u64,
    pub dev_bus_addr: u64,
    pub handle: GrantHandle,
    pub status: i16,
    pub pad: u16,
}
const _: () = assert!(size_of::<GnttabUnmapGrantRef>() == 24);

/// Grant status codes (grant_table.h `GNTST_*`), for messages.
pub fn grant_status_name(status: i16) -> &'static str {
    match status {
        0 => "okay",
        -1 => "general error",
        -2 => "bad domain",
        -3 => "bad gntref",
        -4 => "bad handle",
        -5 => "bad virt addr",
        -6 => "bad dev addr",
        -7 => "no device space",
        -8 => "permission denied",
        -9 => "bad page",
        -10 => "bad copy arg",
        -11 => "address too big",
        -12 => "eagain",
        -13 => "no space",
        _ => "unknown",
    }
}

// ---- domctl.h (Xen 4.17: XEN_DOMCTL_INTERFACE_VERSION 0x15) ----
pub const XEN_DOMCTL_INTERFACE_VERSION_4_17: u32 = 0x15;
pub const XEN_DOMCTL_GETDOMAININFO: u32 = 5;
pub const XEN_DOMCTL_GET_DOMAIN_STATE: u32 = 90;
pub const XEN_DOMINF_DYING: u32 = 1 << 0;
pub const XEN_DOMINF_HVM_GUEST: u32 = 1 << 1;
pub const XEN_DOMINF_SHUTDOWN: u32 = 1 << 2;
pub const XEN_DOMINF_PAUSED: u32 = 1 << 3;
pub const XEN_DOMINF_BLOCKED: u32 = 1 << 4;
pub const XEN_DOMINF_RUNNING: u32 = 1 << 5;
pub const XEN_DOMINF_DEBUGGED: u32 = 1 << 6;
pub const XEN_DOMINF_XS_DOMAIN: u32 = 1 << 7;
pub const XEN_DOMINF_HAP: u32 = 1 << 8;
pub const XEN_DOMINF_SHUTDOWN_SHIFT: u32 = 16;
pub const XEN_DOMINF_SHUTDOWN_MASK: u32 = 0xFF;

/// `struct xen_arch_domainconfig` (arch-x86/xen.h, 4.17).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct XenArchDomainconfig {
    pub emulation_flags: u32,
    pub misc_flags: u32,
}
const _: () = assert!(size_of::<XenArchDomainconfig>() == 8);

/// `struct xen_domctl_getdomaininfo` (domctl.h, 4.17 / interface version 0x15).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct XenDomctlGetdomaininfo {
    pub domain: DomainId,
    pub pad1: u16,
    pub flags: u32,
    pub tot_pages: u64,
    pub max_pages: u64,
    pub outstanding_pages: u64,
    pub shr_pages: u64,
    pub paged_pages: u64,
    pub shared_info_frame: u64,
    pub cpu_time: u64,
    pub nr_online_vcpus: u32,
    pub max_vcpu_id: u32,
    pub ssidref: u32,
    pub handle: [u8; 16],
    pub cpupool: u32,
    pub gpaddr_bits: u8,
    pub pad2: [u8; 7],
    pub arch_config: XenArchDomainconfig,
}
const _: () = assert!(size_of::<XenDomctlGetdomaininfo>() == 112);
const _: () = assert!(core::mem::offset_of!(XenDomctlGetdomaininfo, handle) == 76);
const _: () = assert!(core::mem::offset_of!(XenDomctlGetdomaininfo, gpaddr_bits) == 96);

/// `struct xen_domctl` (domctl.h): header + 128-byte union (only getdomaininfo is used).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct XenDomctl {
    pub cmd: u32,
    pub interface_version: u32,
    pub domain: DomainId,
    pub pad: [u16; 3],
    pub payload: XenDomctlPayload,
}

/// The union of `struct xen_domctl` (domctl.h), padded to 128 bytes and 8-aligned.
#[repr(C)]
#[derive(Clone, Copy)]
pub union XenDomctlPayload {
    pub getdomaininfo: XenDomctlGetdomaininfo,
    pub pad: [u64; 16],
}
const _: () = assert!(size_of::<XenDomctlPayload>() == 128);
const _: () = assert!(size_of::<XenDomctl>() == 144);

impl core::fmt::Debug for XenDomctlPayload {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("XenDomctlPayload { .. }")
    }
}

// ---- errno values returned by hypercalls (xen/include/public/errno.h), for messages ----
pub const XEN_EPERM: i64 = 1;
pub const XEN_ENOENT: i64 = 2;
pub const XEN_ESRCH: i64 = 3;
pub const XEN_EINVAL: i64 = 22;
pub const XEN_EACCES: i64 = 13;
pub const XEN_ENOSYS: i64 = 38;
