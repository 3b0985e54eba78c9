//! Warm restart: re-initialising the unikernel in place (same domain, same domid) after a
//! panic or the shell's `restart`, then recovering the store and every ring connection from
//! the newest durable commit of the log.
//!
//! Mechanism (see docs/kernel.md, "Warm restart"): [`restart`] jumps to the warm entry
//! `warm_start64` (kernel/src/boot.rs), which resets the stack pointer to the top of the boot
//! stack, zeroes `.bss`, restores `.data` from the copy the cold entry took, and calls
//! [`crate::kernel_warm_main`]. Every Rust static (allocator, logger and console state, event
//! channel scan state, grant slot bitmap, ...) is then as at cold boot. What survives is
//! Xen-side state, recorded here in the `.warm` linker section, which only the cold entry
//! zeroes:
//!
//! - event channel ports we bound (a bitmap): after a warm restart they are still bound in
//!   Xen; [`release_xen_resources`] closes each one except those registered with
//!   [`keep_port`] (the blkfront driver's). Closing an interdomain port puts the peer's end
//!   back to `ECS_UNBOUND` with us as allowed remote (xen.git `xen/common/event_channel.c`,
//!   `evtchn_close`), so recovery's `bind_interdomain` to the same remote port works again;
//!   VIRQs must be closed before they can be bound again. The PV console's port was bound by
//!   the domain builder, not by us, and is never in the bitmap;
//! - grant mappings (slot, domid, gref, handle): still mapped in Xen; all are unmapped before
//!   the server re-maps the rings (a window slot holding a mapping must never be reused);
//! - the boot information (start_info is gone: the heap reused its memory), the RAM log
//!   device's region, the restart counter, the time of the crash and the recent panic times
//!   (a panic storm halts instead of looping).
//!
//! Every access is atomic (single vCPU, but the records must be readable from the panic
//! handler at any time); the boot-info copy is written once at cold boot before anything
//! reads it.
//!
//! **Entry check.** Before the warm entry zeroes `.bss` or restores `.data`, it calls
//! [`warm_entry_check`] on the freshly reset boot stack: every boot page-table entry is
//! compared with what the cold entry built ([`crate::boot::check_page_tables`]; differing
//! entries are rewritten and CR3 reloaded) and the IDT of the previous run with the gates
//! [`crate::arch::install_idt`] writes ([`crate::arch::check_idt`]; the warm boot rebuilds it
//! anyway). The findings go to a `.warm` record, because nothing else survives the zeroing;
//! [`report_entry_check`] logs them once the logger works again — loudly if anything
//! differed (a sign of memory corruption, e.g. a stack overflow in the previous run).

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crate::start_info::BootInfo;
use crate::xen::{evtchn, grant, shared_info, time};

/// Grant mappings recorded (the grant mapper allocates window slots below this bound).
pub const GRANT_RECORDS_MAX: usize = 4096;
/// Ports a driver may ask to keep across a warm restart.
pub const KEPT_PORTS_MAX: usize = 8;
/// A warm restart after this many panics within [`PANIC_STORM_WINDOW_NS`] halts instead.
pub const PANIC_STORM_COUNT: usize = 5;
/// See [`PANIC_STORM_COUNT`].
pub const PANIC_STORM_WINDOW_NS: u64 = 10_000_000_000;
/// Event channel words (2-level ABI: 4096 ports).
const PORT_WORDS: usize = 64;
/// Differing table entries the warm entry check records in detail (the rest are counted).
pub const ENTRY_MISMATCHES_RECORDED_MAX: usize = 8;

/// `valid` bit of a grant record's first word.
const GRANT_VALID: u64 = 1 << 63;

/// One grant mapping: `word` = valid | domid << 32 | handle; `grant_ref`.
#[derive(Debug)]
struct GrantRecord {
    word: AtomicU64,
    grant_ref: AtomicU32,
}

/// The boot information copy.
struct BootInfoCell(UnsafeCell<MaybeUninit<BootInfo>>);

// SAFETY: written once by the cold boot path (single vCPU, before any reader exists: the flag
// `BOOT_INFO_SAVED` is set with release ordering after the write) and only read afterwards.
unsafe impl Sync for BootInfoCell {}

#[unsafe(link_section = ".warm")]
static BOOT_INFO: BootInfoCell = BootInfoCell(UnsafeCell::new(MaybeUninit::uninit()));
#[unsafe(link_section = ".warm")]
static BOOT_INFO_SAVED: AtomicBool = AtomicBool::new(false);
/// Warm restarts done since cold boot.
#[unsafe(link_section = ".warm")]
static RESTARTS: AtomicU64 = AtomicU64::new(0);
/// Xen system time of the last crash / restart request (0: unknown).
#[unsafe(link_section = ".warm")]
static CRASH_TIME_NS: AtomicU64 = AtomicU64::new(0);
/// Times of the last panics (ring of [`PANIC_STORM_COUNT`]).
#[unsafe(link_section = ".warm")]
static RECENT_PANICS: [AtomicU64; PANIC_STORM_COUNT] =
    [const { AtomicU64::new(0) }; PANIC_STORM_COUNT];
#[unsafe(link_section = ".warm")]
static PANIC_COUNT: AtomicU64 = AtomicU64::new(0);
/// Set once the service runs on a log whose device survives a warm restart.
#[unsafe(link_section = ".warm")]
static ENABLED: AtomicBool = AtomicBool::new(false);
/// The RAM log device's region: base, size in bytes (0: none).
#[unsafe(link_section = ".warm")]
static RAM_LOG: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];
#[unsafe(link_section = ".warm")]
static BOUND_PORTS: [AtomicU64; PORT_WORDS] = [const { AtomicU64::new(0) }; PORT_WORDS];
#[unsafe(link_section = ".warm")]
static KEPT_PORTS: [AtomicU32; KEPT_PORTS_MAX] = [const { AtomicU32::new(0) }; KEPT_PORTS_MAX];
/// What the last warm entry check found: page-table entries that differed, IDT words that
/// differed.
#[unsafe(link_section = ".warm")]
static ENTRY_CHECK_COUNTS: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];
/// The first differing entries: [table code (0: none), index, found, expected].
#[unsafe(link_section = ".warm")]
static ENTRY_MISMATCHES: [[AtomicU64; 4]; ENTRY_MISMATCHES_RECORDED_MAX] =
    [const { [const { AtomicU64::new(0) }; 4] }; ENTRY_MISMATCHES_RECORDED_MAX];
#[unsafe(link_section = ".warm")]
static GRANTS: [GrantRecord; GRANT_RECORDS_MAX] = [const {
    GrantRecord {
        word: AtomicU64::new(0),
        grant_ref: AtomicU32::new(0),
    }
}; GRANT_RECORDS_MAX];

unsafe extern "C" {
    /// The warm entry in kernel/src/boot.rs.
    fn warm_start64() -> !;
}

/// Why a warm restart happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartReason {
    /// A panic (journal failures, CPU exceptions, broken invariants).
    Panic,
    /// The panic of `inject-crash`: deliberate, so it does not count towards a panic storm
    /// (a test that injects crashes back to back must not be mistaken for a crash loop).
    InjectedPanic,
    /// The debug shell's `restart` (console or XS_CONTROL).
    Requested,
}

/// Set right before the panic of `inject-crash` (see [`note_injected_panic`]). In `.bss`: a
/// warm restart clears it.
static INJECTED_PANIC: AtomicBool = AtomicBool::new(false);

/// Says that the panic about to happen is an injected crash (`inject-crash`), not a fault.
pub fn note_injected_panic() {
    INJECTED_PANIC.store(true, Ordering::SeqCst);
}

/// The reason of the panic being handled: [`RestartReason::InjectedPanic`] after
/// [`note_injected_panic`], else [`RestartReason::Panic`].
pub fn panic_reason() -> RestartReason {
    if INJECTED_PANIC.load(Ordering::SeqCst) {
        RestartReason::InjectedPanic
    } else {
        RestartReason::Panic
    }
}

/// Why a warm restart is refused (the caller halts, as without persistence).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartRefused {
    /// No log on a device that survives a warm restart.
    NotEnabled,
    /// Too many panics in a short time: restarting again would loop.
    PanicStorm {
        /// Panics within the window.
        panics: usize,
    },
}

impl core::fmt::Display for RestartRefused {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RestartRefused::NotEnabled => formatter.write_str(
                "no log on a device that survives a warm restart (mode none, or no disk yet)",
            ),
            RestartRefused::PanicStorm { panics } => write!(
                formatter,
                "{panics} panics within {} s while warm-restarting: giving up instead of looping",
                PANIC_STORM_WINDOW_NS / 1_000_000_000
            ),
        }
    }
}

/// Keeps a copy of the boot information for warm restarts (cold boot only).
pub fn save_boot_info(info: &BootInfo) {
    assert!(
        !BOOT_INFO_SAVED.load(Ordering::Acquire),
        "boot info saved twice"
    );
    // SAFETY: single vCPU, cold boot: nobody reads the cell before the flag below is set, and
    // it is written only here (asserted above).
    unsafe { (*BOOT_INFO.0.get()).write(info.clone()) };
    BOOT_INFO_SAVED.store(true, Ordering::Release);
}

/// The boot information saved at cold boot.
pub fn saved_boot_info() -> Option<BootInfo> {
    if !BOOT_INFO_SAVED.load(Ordering::Acquire) {
        return None;
    }
    // SAFETY: the flag says the cell was initialised; it is never written again.
    Some(unsafe { (*BOOT_INFO.0.get()).assume_init_ref().clone() })
}

/// Records the RAM log device's region (cold boot) so that warm boots find the same one.
pub fn set_ram_log(base: u64, size_bytes: u64) {
    RAM_LOG[0].store(base, Ordering::SeqCst);
    RAM_LOG[1].store(size_bytes, Ordering::SeqCst);
}

/// The RAM log device's region `(base, size)`, if one was set up at cold boot.
pub fn ram_log() -> Option<(u64, u64)> {
    let size = RAM_LOG[1].load(Ordering::SeqCst);
    (size > 0).then(|| (RAM_LOG[0].load(Ordering::SeqCst), size))
}

/// The service runs on a log whose device survives a warm restart: panics and `restart` now
/// restart in place instead of halting.
pub fn enable() {
    ENABLED.store(true, Ordering::SeqCst);
}

/// Whether warm restarts are possible (see [`enable`]).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::SeqCst)
}

/// Warm restarts since cold boot.
pub fn restarts() -> u64 {
    RESTARTS.load(Ordering::SeqCst)
}

/// Xen system time of the crash that caused the current warm boot (0: unknown).
pub fn crash_time_ns() -> u64 {
    CRASH_TIME_NS.load(Ordering::SeqCst)
}

/// Asks that `port` stay bound across warm restarts (a driver whose backend must not see
/// the channel close, e.g. blkfront). At most [`KEPT_PORTS_MAX`]; false when full.
#[allow(dead_code, reason = "called by the blkfront driver (branch blkfront)")]
pub fn keep_port(port: u32) -> bool {
    for slot in &KEPT_PORTS {
        if slot
            .compare_exchange(0, port, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
            || slot.load(Ordering::SeqCst) == port
        {
            return true;
        }
    }
    false
}

/// The ports kept across warm restarts (the hook the blkfront driver fills with
/// [`keep_port`]).
pub fn warm_kept_ports() -> KeptPorts {
    let mut kept = KeptPorts {
        ports: [0; KEPT_PORTS_MAX],
        count: 0,
    };
    for slot in &KEPT_PORTS {
        let port = slot.load(Ordering::SeqCst);
        if port != 0 {
            kept.ports[kept.count] = port;
            kept.count += 1;
        }
    }
    kept
}

/// A bounded list of ports.
#[derive(Debug, Clone, Copy)]
pub struct KeptPorts {
    ports: [u32; KEPT_PORTS_MAX],
    count: usize,
}

impl KeptPorts {
    /// The ports.
    pub fn as_slice(&self) -> &[u32] {
        &self.ports[..self.count]
    }
}

/// Event channel layer: `port` was bound (interdomain, VIRQ or unbound).
pub fn note_port_bound(port: u32) {
    if let Some(word) = BOUND_PORTS.get((port / 64) as usize) {
        word.fetch_or(1 << (port % 64), Ordering::SeqCst);
    }
}

/// Event channel layer: `port` was closed.
pub fn note_port_closed(port: u32) {
    if let Some(word) = BOUND_PORTS.get((port / 64) as usize) {
        word.fetch_and(!(1 << (port % 64)), Ordering::SeqCst);
    }
}

/// Grant layer: window slot `slot` now maps `grant_ref` of `domid` with `handle`.
pub fn note_grant_mapped(slot: usize, domid: u16, grant_ref: u32, handle: u32) {
    let record = &GRANTS[slot];
    record.grant_ref.store(grant_ref, Ordering::SeqCst);
    record.word.store(
        GRANT_VALID | u64::from(domid) << 32 | u64::from(handle),
        Ordering::SeqCst,
    );
}

/// Grant layer: window slot `slot` was unmapped.
pub fn note_grant_unmapped(slot: usize) {
    GRANTS[slot].word.store(0, Ordering::SeqCst);
}

/// What [`release_xen_resources`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Released {
    /// Ports closed.
    pub ports_closed: usize,
    /// Ports kept (registered with [`keep_port`]).
    pub ports_kept: usize,
    /// Ports that failed to close (already closed by the peer's death: ignored).
    pub ports_failed: usize,
    /// Grant mappings unmapped.
    pub grants_unmapped: usize,
    /// Grant mappings that failed to unmap (their slots stay reserved).
    pub grants_failed: usize,
}

/// Warm boot, after shared_info is mapped and before anything is bound or mapped: closes
/// every port of the previous run except the kept ones and unmaps every grant mapping.
/// Returns the window slots that must stay reserved (unmap failed).
pub fn release_xen_resources(mut reserve_slot: impl FnMut(usize)) -> Released {
    let mut released = Released::default();
    let kept = warm_kept_ports();
    for (word_index, word) in BOUND_PORTS.iter().enumerate() {
        let mut bits = word.load(Ordering::SeqCst);
        while bits != 0 {
            let bit = bits.trailing_zeros();
            bits &= !(1 << bit);
            let port = word_index as u32 * 64 + bit;
            if kept.as_slice().contains(&port) {
                released.ports_kept += 1;
                continue;
            }
            match evtchn::close(port) {
                Ok(()) => released.ports_closed += 1,
                Err(_) => {
                    // Gone already (e.g. the peer died and Xen freed it): nothing to do.
                    note_port_closed(port);
                    released.ports_failed += 1;
                }
            }
        }
    }
    for (slot, record) in GRANTS.iter().enumerate() {
        let word = record.word.load(Ordering::SeqCst);
        if word & GRANT_VALID == 0 {
            continue;
        }
        let handle = word as u32;
        match grant::unmap_raw(slot, handle) {
            Ok(()) => {
                note_grant_unmapped(slot);
                released.grants_unmapped += 1;
            }
            Err(_) => {
                reserve_slot(slot);
                released.grants_failed += 1;
            }
        }
    }
    released
}

/// Xen system time when available (shared_info mapped), else the last crash time.
fn now_or_last_crash() -> u64 {
    if shared_info::mapped() {
        time::now_ns()
    } else {
        CRASH_TIME_NS.load(Ordering::SeqCst)
    }
}

/// Checks that a warm restart may happen now (called by the panic handler before it says
/// what it will do). Records a real panic for the storm check; injected ones and requested
/// restarts are not counted.
pub fn check_restart(reason: RestartReason) -> Result<(), RestartRefused> {
    if !enabled() {
        return Err(RestartRefused::NotEnabled);
    }
    if reason == RestartReason::Panic {
        let now = now_or_last_crash();
        let count = PANIC_COUNT.fetch_add(1, Ordering::SeqCst) as usize;
        let slot = &RECENT_PANICS[count % PANIC_STORM_COUNT];
        // With `count` >= PANIC_STORM_COUNT the slot holds the panic PANIC_STORM_COUNT before
        // this one: this panic is then the (PANIC_STORM_COUNT + 1)-th within its time.
        let storm = count >= PANIC_STORM_COUNT
            && now.saturating_sub(slot.load(Ordering::SeqCst)) < PANIC_STORM_WINDOW_NS;
        slot.store(now, Ordering::SeqCst);
        if storm {
            return Err(RestartRefused::PanicStorm {
                panics: PANIC_STORM_COUNT + 1,
            });
        }
    }
    Ok(())
}

/// Restarts in place (after [`check_restart`] said yes): records the time and the counter,
/// then jumps to the warm entry. Interrupts must be off.
pub fn restart() -> ! {
    CRASH_TIME_NS.store(now_or_last_crash(), Ordering::SeqCst);
    RESTARTS.fetch_add(1, Ordering::SeqCst);
    crate::arch::disable_interrupts();
    // SAFETY: `warm_start64` never returns; it discards this stack (resets rsp to the boot
    // stack top), zeroes .bss and restores .data before any Rust code runs again, so no Rust
    // value living now is used afterwards. Interrupts are off (above).
    unsafe { warm_start64() }
}

/// Called by the warm entry `warm_start64` (kernel/src/boot.rs) on the reset boot stack,
/// before `.bss` is zeroed and `.data` restored: checks (and repairs) the boot page tables
/// and checks the IDT, recording the findings in `.warm` (see the module documentation).
///
/// Uses no static but the page tables, the IDT (read) and the `.warm` record: the others
/// still hold the previous run's values. Must not panic (there is no panic path to speak of
/// yet); it only indexes through `get`.
pub(crate) extern "C" fn warm_entry_check() {
    for record in &ENTRY_MISMATCHES {
        record[0].store(0, Ordering::SeqCst);
    }
    let mut recorded = 0;
    let mut record = |mismatch: crate::boot::EntryMismatch| {
        if let Some(slot) = ENTRY_MISMATCHES.get(recorded) {
            slot[0].store(mismatch.table.code(), Ordering::SeqCst);
            slot[1].store(mismatch.index, Ordering::SeqCst);
            slot[2].store(mismatch.found, Ordering::SeqCst);
            slot[3].store(mismatch.expected, Ordering::SeqCst);
            recorded += 1;
        }
    };
    let page_table_mismatches = crate::boot::check_page_tables(true, &mut record);
    let idt_mismatches = crate::arch::check_idt(&mut record);
    ENTRY_CHECK_COUNTS[0].store(page_table_mismatches as u64, Ordering::SeqCst);
    ENTRY_CHECK_COUNTS[1].store(idt_mismatches as u64, Ordering::SeqCst);
}

/// What the last warm entry check found (see [`warm_entry_check`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryCheck {
    /// Boot page-table entries that differed (rewritten).
    pub page_table_mismatches: u64,
    /// IDT words that differed (the IDT is rebuilt anyway).
    pub idt_mismatches: u64,
    /// The first differing entries.
    pub recorded: [Option<crate::boot::EntryMismatch>; ENTRY_MISMATCHES_RECORDED_MAX],
}

/// The findings of the warm entry check of this boot (all zero on a cold boot).
pub fn entry_check() -> EntryCheck {
    let mut recorded = [None; ENTRY_MISMATCHES_RECORDED_MAX];
    for (slot, record) in recorded.iter_mut().zip(&ENTRY_MISMATCHES) {
        *slot =
            crate::boot::CheckedTable::from_code(record[0].load(Ordering::SeqCst)).map(|table| {
                crate::boot::EntryMismatch {
                    table,
                    index: record[1].load(Ordering::SeqCst),
                    found: record[2].load(Ordering::SeqCst),
                    expected: record[3].load(Ordering::SeqCst),
                }
            });
    }
    EntryCheck {
        page_table_mismatches: ENTRY_CHECK_COUNTS[0].load(Ordering::SeqCst),
        idt_mismatches: ENTRY_CHECK_COUNTS[1].load(Ordering::SeqCst),
        recorded,
    }
}

/// Logs the warm entry check: one line when everything was as built, else an error line per
/// differing entry (at most [`ENTRY_MISMATCHES_RECORDED_MAX`]).
pub fn report_entry_check() {
    let check = entry_check();
    if check.page_table_mismatches == 0 && check.idt_mismatches == 0 {
        log::info!("warm entry check: boot page tables and IDT as built");
        return;
    }
    log::error!(
        "WARM ENTRY CHECK FAILED: {} boot page-table entries differed from what the cold entry \
         built (rewritten, CR3 reloaded); {} IDT words differed from the installed gates \
         (IDT rebuilt). Memory was corrupted in the previous run:",
        check.page_table_mismatches,
        check.idt_mismatches
    );
    for mismatch in check.recorded.iter().flatten() {
        log::error!("  {mismatch}");
    }
    let total = check.page_table_mismatches + check.idt_mismatches;
    if total > ENTRY_MISMATCHES_RECORDED_MAX as u64 {
        log::error!(
            "  ... and {} more",
            total - ENTRY_MISMATCHES_RECORDED_MAX as u64
        );
    }
}
