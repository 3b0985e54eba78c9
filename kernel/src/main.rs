//! xenstore-stubdom: the Xen PVH unikernel that hosts the xenstore server.
//!
//! Contract: boots from the PVH entry note ([`boot`]), brings up logging (port 0xE9 from the
//! first line, then the PV console ring), the exception table, start-info parsing and the heap,
//! then the Xen platform layer ([`xen`]), and finally the xenstore service ([`service`]): the
//! portable server core (`server/`) driven through its platform traits over [`platform`].
//! Without Xen (plain QEMU) it reports that clearly and powers off. A warm restart (panic or
//! the shell's `restart` with a log on a surviving device) re-enters at
//! [`kernel_warm_main`] with fresh statics and the same Xen-side domain ([`warm`]).
#![no_std]
#![no_main]

extern crate alloc;

mod arch;
mod blkfront;
mod boot;
mod debugcon;
mod heap;
mod log_device;
mod logger;
mod options;
mod panic;
#[allow(
    dead_code,
    reason = "console input and polling helpers kept for the debug shell"
)]
mod platform;
mod service;
mod stack;
mod start_info;
mod warm;
#[allow(
    dead_code,
    reason = "complete Xen interface wrappers; the server core will use the rest"
)]
mod xen;
mod xenbus_local;

use log::{LevelFilter, error, info, warn};

use crate::options::{LogDeviceChoice, Persistence, PersistenceOptions};
use crate::platform::{RingMapper, RingMemory, XenPlatform};
use crate::start_info::BootInfo;
use crate::xen::abi;

/// Version string printed in the banner.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Entered from the 64-bit boot code with the physical address of `hvm_start_info`.
#[unsafe(no_mangle)]
pub extern "C" fn kernel_main(start_info_address: u64) -> ! {
    let entry_tsc = arch::rdtsc();
    logger::init(LevelFilter::Info);
    info!("xenstore-stubdom {VERSION}: PVH boot, start_info at {start_info_address:#x}");
    boot::load_task_register();
    arch::install_idt();
    log_image_layout();
    // The warm entry compares the tables with what this file expects: both must agree with
    // what the assembly built.
    let mismatches =
        boot::check_page_tables(false, |mismatch| error!("boot page tables: {mismatch}"));
    assert!(
        mismatches == 0,
        "{mismatches} boot page-table entries differ from the expected identity map"
    );
    let boot_info = match BootInfo::parse(start_info_address) {
        Ok(boot_info) => boot_info,
        Err(error) => panic!("cannot parse start_info: {error}"),
    };
    warm::save_boot_info(&boot_info);
    boot(boot_info, entry_tsc, None)
}

/// Entered from the warm entry `warm_start64` (kernel/src/boot.rs) after a panic or the
/// shell's `restart`: statics are fresh, the domain and its Xen-side state are the same.
#[unsafe(no_mangle)]
pub extern "C" fn kernel_warm_main() -> ! {
    let entry_tsc = arch::rdtsc();
    // First: the IDT (zeroed with .bss) and the TSS its IST gates need; nothing may fault
    // before they are back.
    boot::load_task_register();
    arch::install_idt();
    logger::init(LevelFilter::Info);
    let restarts = warm::restarts();
    info!(
        "xenstore-stubdom {VERSION}: warm restart {restarts} (same domain; statics reset, \
         Xen-side state kept)"
    );
    warm::report_entry_check();
    let Some(boot_info) = warm::saved_boot_info() else {
        panic::halt_with("warm restart without saved boot information")
    };
    boot(
        boot_info,
        entry_tsc,
        Some(service::WarmBoot {
            restarts,
            crash_time_ns: warm::crash_time_ns(),
        }),
    )
}

fn log_image_layout() {
    let (image_start, image_end) = boot::kernel_image_range();
    let (stack_bottom, stack_top) = boot::stack_range();
    let (guard_start, guard_end) = boot::stack_guard_range();
    info!(
        "kernel image {image_start:#x}-{image_end:#x}, stack {stack_bottom:#x}-{stack_top:#x} \
         (guard page {guard_start:#x}-{guard_end:#x} not present), identity map 0-5 GiB \
         (grant window {:#x}+{} MiB)",
        boot::GRANT_WINDOW_BASE,
        boot::GRANT_WINDOW_SIZE_BYTES >> 20
    );
    let (double_fault_bottom, double_fault_top) = boot::double_fault_stack_range();
    info!(
        "TSS loaded (selector {:#x}): #DF, NMI and #MC run on interrupt stacks (#DF \
         {double_fault_bottom:#x}-{double_fault_top:#x})",
        boot::TSS_SELECTOR
    );
}

/// Everything after start_info: the same for cold and warm boots, except that a warm boot
/// skips the boot log and self-tests, reuses the RAM log region and releases what the
/// previous run left in Xen.
fn boot(mut boot_info: BootInfo, entry_tsc: u64, warm_boot: Option<service::WarmBoot>) -> ! {
    apply_command_line(&boot_info);
    if warm_boot.is_none() {
        log_boot_info(&boot_info);
    }
    let persistence = PersistenceOptions::from_command_line(&boot_info, |error| {
        warn!("{error}: using the default");
    });

    let xen = xen::detect();
    let mut populated_end = None;
    match &xen {
        Some(found) => {
            if warm_boot.is_none() {
                info!(
                    "Xen {}.{} detected (CPUID base {:#x}, hypercall MSR {:#x}, domid {:?})",
                    found.version_major,
                    found.version_minor,
                    found.base_leaf,
                    found.hypercall_msr,
                    found.domid
                );
            }
            xen::hypercall::install(found.hypercall_msr);
            let (major, minor) = xen::hypercall::xen_version();
            if warm_boot.is_none() {
                info!(
                    "hypercall page at {:#x} installed; xen_version says {major}.{minor}",
                    xen::hypercall::page_address()
                );
            }
            match xen::memory::current_reservation_pages() {
                Ok(pages) => {
                    // Populated RAM runs from gfn 0 upwards; 8 special pages (and possibly a
                    // few more builder pages) count towards the reservation but sit near 4 GiB,
                    // so stop 64 pages short to stay on populated frames.
                    let end = pages.saturating_sub(64) * 4096;
                    if warm_boot.is_none() {
                        info!(
                            "current reservation {pages} pages ({} KiB); heap capped at {end:#x}",
                            pages * 4
                        );
                    }
                    populated_end = Some(end);
                }
                Err(error) => warn!("XENMEM_current_reservation failed: {error}"),
            }
        }
        None => info!("no Xen CPUID signature found"),
    }
    if boot_info.memory_map().is_empty() && xen.is_some() {
        fill_memory_map_from_xen(&mut boot_info, populated_end, warm_boot.is_none());
    }

    let (image_start, image_end) = boot::kernel_image_range();
    let range = match heap::choose_range(&boot_info, (image_start, image_end), populated_end) {
        Ok(range) => range,
        Err(error) => panic!("no heap: {error}"),
    };
    let (range, ram_log) = carve_ram_log(range, &persistence, warm_boot.is_some());
    heap::init(range);
    if warm_boot.is_none() {
        match heap::self_test() {
            Ok(_) => {
                let (_, free) = heap::usage();
                info!(
                    "heap ok: {:#x}-{:#x} ({} KiB, {} KiB free)",
                    range.start,
                    range.end,
                    range.size_bytes() / 1024,
                    free / 1024
                );
            }
            Err(reason) => panic!("heap self-test failed: {reason}"),
        }
        run_self_tests(&boot_info);
    } else if xen.is_none() {
        warm_restart_self_test_done(&boot_info);
    }

    let Some(xen) = xen else {
        match xen::console::self_test_on_private_page() {
            Ok(()) => {
                info!("console ring self-test ok: full ring drops and counts, wrap-around ok")
            }
            Err(reason) => panic!("console ring self-test failed: {reason}"),
        }
        info!("boot stack {}", stack::boot_stack_usage());
        info!("not running on Xen: nothing to serve, powering off");
        panic::power_off_without_xen();
    };
    xen_platform_init(
        &boot_info,
        &xen,
        entry_tsc,
        service::LogSetup {
            persistence,
            ram_log,
        },
        warm_boot,
    )
}

/// Takes the RAM log device (`--log-device=ram:<KiB>` with `crash-resilient`) off the top of
/// the heap range. A warm boot takes the region recorded at cold boot (never a new one: the
/// log lives there).
fn carve_ram_log(
    range: heap::HeapRange,
    options: &PersistenceOptions,
    warm_boot: bool,
) -> (heap::HeapRange, Option<(u64, u64)>) {
    if warm_boot {
        return match warm::ram_log() {
            Some((base, size)) => {
                // Same memory map, same reservation: the recorded region is where the cold
                // boot carved it, at the top of this very range.
                assert!(
                    base >= range.start,
                    "RAM log region {base:#x} below the heap range"
                );
                (
                    heap::HeapRange {
                        start: range.start,
                        end: base.min(range.end),
                    },
                    Some((base, size)),
                )
            }
            None => (range, None),
        };
    }
    let (Persistence::CrashResilient, LogDeviceChoice::Ram { kib }) =
        (options.persistence, options.log_device)
    else {
        return (range, None);
    };
    let size = (kib * 1024) & !0xFFF;
    if range.size_bytes() < size + heap::HEAP_SIZE_MIN_BYTES {
        error!(
            "--log-device=ram:{kib}: the heap has only {} KiB; no RAM log device",
            range.size_bytes() / 1024
        );
        return (range, None);
    }
    let base = range.end - size;
    warm::set_ram_log(base, size);
    info!(
        "RAM log device: {base:#x}-{:#x} ({kib} KiB, excluded from the heap; survives warm \
         restarts)",
        base + size
    );
    (
        heap::HeapRange {
            start: range.start,
            end: base,
        },
        Some((base, size)),
    )
}

/// start_info had no memory map (Xen 4.17's PVH builder leaves it empty for
/// init-xenstore-domain): ask Xen, or fall back to "RAM up to the populated limit".
fn fill_memory_map_from_xen(boot_info: &mut BootInfo, populated_end: Option<u64>, verbose: bool) {
    match xen::memory::memory_map() {
        Ok((entries, count)) if count > 0 => {
            boot_info.set_memory_map(entries[..count].iter().map(|entry| {
                let (address, size_bytes, memory_type) = (entry.addr, entry.size, entry.type_);
                start_info::MemoryRange {
                    address,
                    size_bytes,
                    memory_type,
                }
            }));
            if verbose {
                info!("memory map from XENMEM_memory_map ({count} entries):");
            }
        }
        result => {
            let end = populated_end.unwrap_or(0);
            match result {
                Ok(_) => warn!("XENMEM_memory_map returned no entries; assuming RAM 0-{end:#x}"),
                Err(error) => warn!("XENMEM_memory_map failed: {error}; assuming RAM 0-{end:#x}"),
            }
            boot_info.set_memory_map(core::iter::once(start_info::MemoryRange {
                address: 0,
                size_bytes: end,
                memory_type: start_info::MEMORY_TYPE_RAM,
            }));
        }
    }
    if !verbose {
        return;
    }
    for range in boot_info.memory_map() {
        info!(
            "  memory {:#012x}-{:#012x} type {}",
            range.address,
            range.end(),
            range.memory_type
        );
    }
}

fn apply_command_line(boot_info: &BootInfo) {
    if let Some(level) = boot_info.option("--loglevel") {
        let filter = match level {
            "error" => LevelFilter::Error,
            "warn" => LevelFilter::Warn,
            "debug" => LevelFilter::Debug,
            "trace" => LevelFilter::Trace,
            _ => LevelFilter::Info,
        };
        log::set_max_level(filter);
    }
    // Each 0xE9 byte is a VM exit: allow turning it off once the PV console works.
    if boot_info.option("--e9") == Some("off") {
        debugcon::set_enabled(false);
    }
}

fn log_boot_info(boot_info: &BootInfo) {
    info!(
        "start_info parsed: magic ok, at {:#x}, version {}, flags {:#x}, rsdp {:#x}, cmdline \"{}\"{}",
        boot_info.start_info_address,
        boot_info.version,
        boot_info.flags,
        boot_info.rsdp_address,
        boot_info.command_line(),
        if boot_info.command_line_truncated {
            " (truncated)"
        } else {
            ""
        }
    );
    for range in boot_info.memory_map() {
        info!(
            "  memory {:#012x}-{:#012x} type {}",
            range.address,
            range.end(),
            range.memory_type
        );
    }
    for (index, module) in boot_info.modules().iter().enumerate() {
        info!(
            "  module {index}: {:#x} ({} bytes)",
            module.address, module.size_bytes
        );
    }
    info!(
        "memory map: {} entries, {} KiB RAM; {} modules",
        boot_info.memory_map().len(),
        boot_info.ram_bytes() / 1024,
        boot_info.modules().len()
    );
}

/// A `.bss` static the warm-restart self-test sets before the restart; the warm entry must
/// have zeroed it.
static SELFTEST_MARKER: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Injected crashes in a row that `--selftest=warm-injected-crashes` does: more than a real
/// panic storm ([`warm::PANIC_STORM_COUNT`] + 1 panics) would allow.
const SELFTEST_INJECTED_CRASHES: u64 = 2 * warm::PANIC_STORM_COUNT as u64;

/// Depth at which the stack-overflow self-test's recursion would give up (never reached: the
/// 128 KiB stack holds about 120 of its 1 KiB frames).
const SELFTEST_RECURSION_DEPTH_MAX: u64 = 1 << 20;

/// Recurses with frames of over 1 KiB until the boot stack runs into its guard page; returns
/// only if [`SELFTEST_RECURSION_DEPTH_MAX`] comes first.
#[inline(never)]
fn recurse_for_self_test(depth: u64) -> u64 {
    let mut frame = [0u8; 1024];
    // Keeps the frame (and the recursion) from being optimised away.
    core::hint::black_box(&mut frame);
    if core::hint::black_box(depth) >= SELFTEST_RECURSION_DEPTH_MAX {
        return depth;
    }
    recurse_for_self_test(depth + 1).wrapping_add(u64::from(frame[0]))
}

/// `--selftest=stack-overflow` and `warm-stack-overflow`: overflow the boot stack. Must end
/// in the double-fault report (`double fault: kernel stack overflow?`), never return.
fn overflow_stack_for_self_test() {
    let (guard_start, guard_end) = boot::stack_guard_range();
    info!(
        "selftest: overflowing the boot stack into its guard page {guard_start:#x}-{guard_end:#x}"
    );
    let depth = recurse_for_self_test(0);
    error!("selftest: recursion to depth {depth} ended without reaching the guard page");
}

/// The warm boots of `--selftest=warm-stack-overflow` (no Xen). Restart 1 (after the first
/// overflow): the warm entry found the tables intact — the guard page kept the overflow off
/// them; then a page-directory entry and an IDT gate are damaged and the stack overflows
/// again. Restart 2: the TSS was loaded again (`ltr` after the busy bit), the entry check
/// reported exactly the damage and repaired the page table, and the stack was painted anew.
fn warm_stack_overflow_self_test(restarts: u64) {
    let check = warm::entry_check();
    if restarts == 1 {
        if check.page_table_mismatches != 0 || check.idt_mismatches != 0 {
            panic!("selftest: the stack overflow damaged the boot tables: {check:?}");
        }
        let damaged_entry = boot::damage_page_table_for_self_test();
        let damaged_word = arch::damage_idt_for_self_test();
        info!(
            "selftest: damaged {damaged_entry} and the low half of IDT[{:#x}]; overflowing again",
            damaged_word / 2
        );
        overflow_stack_for_self_test();
        return;
    }
    let mut problems = 0;
    if boot::task_register() != boot::TSS_SELECTOR {
        error!(
            "selftest: task register {:#x}, expected {:#x}",
            boot::task_register(),
            boot::TSS_SELECTOR
        );
        problems += 1;
    }
    let reported = check.recorded.iter().flatten();
    let page_directory = reported
        .clone()
        .any(|mismatch| mismatch.table == boot::CheckedTable::PageDirectory);
    let idt = reported
        .clone()
        .any(|mismatch| mismatch.table == boot::CheckedTable::Idt);
    if check.page_table_mismatches != 1 || check.idt_mismatches != 1 || !page_directory || !idt {
        error!("selftest: the warm entry check did not report exactly the damage: {check:?}");
        problems += 1;
    }
    let left = boot::check_page_tables(false, |mismatch| error!("selftest: still {mismatch}"));
    if left != 0 {
        problems += 1;
    }
    let stack = stack::boot_stack_usage();
    if stack.exhausted() {
        error!("selftest: boot stack not painted again: {stack}");
        problems += 1;
    }
    if problems != 0 {
        panic!("selftest: warm stack overflow: {problems} problem(s) after restart {restarts}");
    }
    info!(
        "selftest: warm stack overflow ok: {restarts} overflows reported on the double-fault \
         stack, TSS reloaded, page directory repaired and IDT damage reported at the warm entry, \
         boot stack {stack}"
    );
    panic::power_off_without_xen();
}

/// The second half of `--selftest=warm-restart` (warm boot, no Xen): statics are fresh.
fn warm_restart_self_test_done(boot_info: &BootInfo) {
    if boot_info.option("--selftest") == Some("warm-stack-overflow") {
        warm_stack_overflow_self_test(warm::restarts());
        return;
    }
    if boot_info.option("--selftest") == Some("warm-panic-storm") {
        panic!(
            "selftest: panic again after warm restart {}",
            warm::restarts()
        );
    }
    if boot_info.option("--selftest") == Some("warm-injected-crashes") {
        let restarts = warm::restarts();
        if restarts < SELFTEST_INJECTED_CRASHES && debugcon::enabled() {
            warm::note_injected_panic();
            panic!("selftest: injected crash after warm restart {restarts}");
        }
        info!(
            "selftest: {restarts} injected crashes back to back restarted in place (no panic-storm stop)"
        );
        panic::power_off_without_xen();
    }
    if boot_info.option("--selftest") != Some("warm-restart") {
        return;
    }
    let marker = SELFTEST_MARKER.load(core::sync::atomic::Ordering::SeqCst);
    let (used, _) = heap::usage();
    if marker == 0 && debugcon::enabled() {
        info!(
            "selftest: warm restart {} ok: .bss zeroed, .data restored, heap fresh ({used} bytes used)",
            warm::restarts()
        );
        panic::power_off_without_xen();
    }
    panic!("selftest: warm restart left stale statics (marker {marker:#x})");
}

/// Deliberate faults selected by `--selftest=<name>` (checked by scripts/kernel-smoke.sh).
fn run_self_tests(boot_info: &BootInfo) {
    match boot_info.option("--selftest") {
        Some("page-fault") => {
            info!("selftest: reading unmapped address 0x200000000");
            // SAFETY: deliberately unsound access to an unmapped address to check that the
            // page-fault handler reports it; the kernel panics and never continues.
            let value = unsafe { core::ptr::read_volatile(0x2_0000_0000 as *const u64) };
            error!("selftest: read {value:#x} from an unmapped address without a fault");
        }
        Some("panic") => panic!("selftest: deliberate panic"),
        Some("stack-overflow") => overflow_stack_for_self_test(),
        Some("warm-stack-overflow") => {
            // Overflow, warm restart from the double-fault stack, damage, overflow again,
            // check (see `warm_stack_overflow_self_test`).
            warm::enable();
            overflow_stack_for_self_test();
        }
        Some("warm-panic-storm") => {
            warm::enable();
            panic!("selftest: first panic of a storm");
        }
        Some("warm-injected-crashes") => {
            warm::enable();
            warm::note_injected_panic();
            panic!("selftest: first injected crash");
        }
        Some("warm-restart") => {
            // Checked without Xen: the warm entry resets the stack, .bss and .data and comes
            // back through `kernel_warm_main` (see `warm_restart_self_test_done`).
            warm::enable();
            SELFTEST_MARKER.store(0x5eed, core::sync::atomic::Ordering::SeqCst);
            panic!("selftest: deliberate panic before a warm restart");
        }
        Some(other) => warn!("unknown --selftest={other}"),
        None => {}
    }
}

/// Xen platform bring-up, then the xenstore service (never returns).
fn xen_platform_init(
    boot_info: &BootInfo,
    xen_cpuid: &xen::XenCpuid,
    entry_tsc: u64,
    log_setup: service::LogSetup,
    warm_boot: Option<service::WarmBoot>,
) -> ! {
    if let Err(error) = xen::shared_info::map() {
        panic!("cannot map shared_info: {error}");
    }
    xen::evtchn::mask_all();
    // A warm boot: the previous run's ports are still bound and its rings still mapped.
    let mut reserved_slots = alloc::vec::Vec::new();
    if warm_boot.is_some() {
        let released = warm::release_xen_resources(|slot| reserved_slots.push(slot));
        info!(
            "warm restart: closed {} event channel ports ({} kept, {} already gone), unmapped \
             {} grant mappings ({} failed, slots kept reserved)",
            released.ports_closed,
            released.ports_kept,
            released.ports_failed,
            released.grants_unmapped,
            released.grants_failed
        );
    }
    arch::set_upcall_ack(xen::shared_info::upcall_pending_address(), None);
    match xen::hvm::set_callback_vector(arch::UPCALL_VECTOR) {
        Ok(()) => info!(
            "shared_info mapped; event upcall on vector {:#x}",
            arch::UPCALL_VECTOR
        ),
        Err(error) => error!("HVM_PARAM_CALLBACK_IRQ failed: {error}; waking by timer only"),
    }
    let now = xen::time::now_ns();
    let (wallclock_seconds, _) = xen::shared_info::wallclock();
    if warm_boot.is_none() {
        info!(
            "system time {} ms since host boot; wallclock {wallclock_seconds} s",
            now / 1_000_000
        );
    }

    match xen::console::init() {
        Ok(location) => {
            let _ = xen::evtchn::unmask(location.port);
            info!(
                "PV console ring at gfn {:#x}, port {}",
                location.gfn, location.port
            );
        }
        Err(error) => warn!("no PV console: {error}"),
    }

    let own_domid = xen_cpuid.domid.unwrap_or(abi::DOMID_SELF);
    let store_gfn = xen::hvm::get_param(abi::HVM_PARAM_STORE_PFN);
    let store_port = xen::hvm::get_param(abi::HVM_PARAM_STORE_EVTCHN);
    info!("own domid {own_domid}; store ring gfn {store_gfn:x?}, store evtchn {store_port:?}");

    // VIRQ_TIMER only has to wake the idle `hlt` (set_timer_op deadlines); its events carry
    // no work, so the port is not kept.
    match xen::evtchn::bind_virq(abi::VIRQ_TIMER) {
        Ok(port) => {
            let _ = xen::evtchn::unmask(port);
        }
        Err(error) => error!("bind VIRQ_TIMER failed: {error}; waking on events only"),
    }
    let dom_exc_port = match xen::evtchn::bind_virq(abi::VIRQ_DOM_EXC) {
        Ok(port) => {
            let _ = xen::evtchn::unmask(port);
            info!("VIRQ_DOM_EXC bound to port {port}");
            Some(port)
        }
        Err(error) => {
            warn!("bind VIRQ_DOM_EXC failed: {error} (not the nominated handler?)");
            None
        }
    };
    let mut platform = XenPlatform::new();
    for slot in reserved_slots {
        platform.reserve_grant_slot(slot);
    }
    let dom0_remote_port = boot_info
        .option("--event")
        .and_then(|port| port.parse::<u32>().ok());
    let startup = service::Startup {
        dom0_remote_port,
        own_domid,
        dom_exc_port,
        entry_tsc,
        log_setup,
        warm_boot,
        blkfront_enabled: boot_info.option("--blkfront") != Some("off"),
    };
    if startup.warm_boot.is_some() {
        // The checks and first looks of a cold boot are skipped: the restart time counts.
        info!("platform ready again: recovering the xenstore server from the log");
        service::run(platform, startup)
    }
    log_domains();
    match dom0_remote_port {
        Some(remote_port) => match platform.map(0) {
            // A look at dom0's ring before the server maps it for good, plus a map/unmap
            // self-check; the server's own mapping follows with the INTRODUCE of dom0.
            Ok(ring) => {
                // xs_wire.h ring indices: req_cons @2048, req_prod @2052, rsp_cons @2056,
                // rsp_prod @2060 (read only, for the log; the server owns the protocol).
                info!(
                    "dom0 ring (grant ref 1) readable at gfn {:#x}: req {}/{} rsp {}/{}; \
                     dom0 event port {remote_port}",
                    ring.gfn(),
                    ring.load_acquire(2048),
                    ring.load_acquire(2052),
                    ring.load_acquire(2056),
                    ring.load_acquire(2060)
                );
                grant_self_check(&mut platform, &ring);
                if let Err(error) = platform.unmap(ring) {
                    error!("unmapping the first look at dom0's ring failed: {error}");
                }
            }
            Err(error) => error!("cannot map dom0's xenstore ring (grant ref 1): {error}"),
        },
        None => {
            warn!("no --event <port> on the command line: not started by init-xenstore-domain?")
        }
    }
    // Xen 4.17's init-xenstore-domain allocates no loopback port for the store domain's own
    // ring (HVM_PARAM_STORE_EVTCHN = 0): there is nothing to bind, and the kernel has no
    // xenbus client of its own, so its ring is not served (docs/kernel.md).
    match store_port {
        Ok(0) => {
            info!("own store ring: HVM_PARAM_STORE_EVTCHN is 0 (Xen 4.17 launcher): not served")
        }
        Ok(port) => {
            info!("own store ring: port {port} not served (the kernel has no xenbus client)")
        }
        Err(error) => info!("own store ring: HVM_PARAM_STORE_EVTCHN unreadable: {error}"),
    }
    evtchn_self_check(own_domid);

    info!("platform ready: starting the xenstore server");
    service::run(platform, startup)
}

/// Maps dom0's grant a second time, compares, unmaps: proves map/unmap on this Xen.
fn grant_self_check(platform: &mut XenPlatform, first: &platform::MappedRing) {
    match platform.map(0) {
        Ok(second) => {
            let same = second.load_acquire(2052) == first.load_acquire(2052);
            let gfn = second.gfn();
            match platform.unmap(second) {
                Ok(()) => info!(
                    "grant self-check: second mapping at gfn {gfn:#x} {} the first; unmapped ok",
                    if same { "matches" } else { "DIFFERS from" }
                ),
                Err(error) => error!("grant self-check: unmap failed: {error}"),
            }
        }
        Err(error) => error!("grant self-check: second map failed: {error}"),
    }
}

/// Allocates an unbound port, closes it: proves alloc_unbound/close.
fn evtchn_self_check(own_domid: u16) {
    match xen::evtchn::alloc_unbound(own_domid) {
        Ok(port) => match xen::evtchn::close(port) {
            Ok(()) => info!("event channel self-check: alloc_unbound -> port {port}, closed ok"),
            Err(error) => error!("event channel self-check: close({port}) failed: {error}"),
        },
        Err(error) => error!("event channel self-check: alloc_unbound failed: {error}"),
    }
}

fn log_domains() {
    let mut next = 0u16;
    for _ in 0..64 {
        match xen::domctl::next_domain(next) {
            Ok(Some(domain)) => {
                info!(
                    "domain {}: flags {:#x}{}{}{}, {} pages (max {}), gpaddr_bits {}",
                    domain.domid,
                    // Bits 16..: shutdown code, meaningful only when shut down.
                    domain.flags & 0xFFFF,
                    if domain.xenstore_domain() {
                        " xenstore"
                    } else {
                        ""
                    },
                    if domain.dying() { " dying" } else { "" },
                    if domain.shutdown() { " shutdown" } else { "" },
                    domain.total_pages,
                    domain.max_pages,
                    domain.gpaddr_bits
                );
                next = domain.domid + 1;
            }
            Ok(None) => return,
            Err(error) => {
                warn!("XEN_DOMCTL_getdomaininfo({next}) failed: {error}");
                return;
            }
        }
    }
}
