//! x86_64 CPU primitives: port I/O, CPUID, MSRs, TSC, interrupt flag, halting, and the IDT
//! with the exception stubs (every exception is fatal and reported through the panic path)
//! and the event-channel upcall stub.
//!
//! Double fault (#DF), NMI and machine check (#MC) run on their own interrupt stacks (IST1–3
//! of the TSS that [`crate::boot::load_task_register`] loads): a double fault is what the CPU
//! raises when it cannot push a page fault's frame because the stack ran into the guard page
//! below the boot stack, and its handler must not need that stack. The #DF report says
//! `double fault: kernel stack overflow?` when CR2 or the interrupted RSP lies in the guard
//! page; the panic path then runs on the 16 KiB IST1 stack and ends in a warm restart (which
//! resets RSP to the top of the boot stack) or a halt, never in a return.
//!
//! Interrupt model (single vCPU): the kernel runs with IF=0 at all times except inside
//! [`wait_for_interrupt`], which executes `sti; hlt` — the STI shadow makes the pair atomic, so
//! an interrupt that became pending after the caller's last check still wakes the `hlt`.
//! The upcall handler therefore only acknowledges (see [`set_upcall_ack`]); all real work
//! happens in the main loop with interrupts off.

use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicU64, Ordering};

/// Writes one byte to an I/O port.
pub fn outb(port: u16, value: u8) {
    // SAFETY: port output has no memory-safety effect on this kernel; the ports written
    // (0xE9 debug console, 0xF4 isa-debug-exit) are emulated debug devices or ignored.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    };
}

/// Writes one 32-bit value to an I/O port.
pub fn outl(port: u16, value: u32) {
    // SAFETY: as for `outb`.
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags))
    };
}

/// Result registers of one CPUID query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuidResult {
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

/// Executes CPUID for `leaf`/`subleaf`.
pub fn cpuid(leaf: u32, subleaf: u32) -> CpuidResult {
    let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
    CpuidResult {
        eax: r.eax,
        ebx: r.ebx,
        ecx: r.ecx,
        edx: r.edx,
    }
}

/// Writes a model-specific register.
///
/// # Safety
/// The caller must name an MSR whose write is valid and whose effect (e.g. Xen filling the
/// hypercall page at the written address) is accounted for.
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: delegated to the caller (see # Safety).
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32,
             options(nostack, preserves_flags))
    };
}

/// Reads the time-stamp counter.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects (CR4.TSD is clear: we never set it).
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Reads CR2 (the faulting linear address of the last page fault).
pub fn read_cr2() -> u64 {
    let value: u64;
    // SAFETY: reading CR2 at CPL 0 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Disables interrupts.
pub fn disable_interrupts() {
    // SAFETY: clearing IF only delays interrupt delivery.
    unsafe { asm!("cli", options(nomem, nostack)) };
}

/// Enables interrupts, halts until one arrives, disables them again.
///
/// Atomic with respect to the caller's last "is there work?" check thanks to the STI shadow.
/// Returns after any interrupt (upcall, spurious) — callers re-check their condition.
pub fn wait_for_interrupt() {
    // SAFETY: the IDT is installed (see `install_idt`) before the first call; the handlers
    // it names preserve all registers, so enabling interrupts for the `hlt` is sound.
    unsafe { asm!("sti", "hlt", "cli", options(nomem, nostack)) };
}

/// Stops the CPU for good (interrupts off).
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: with IF=0, `hlt` only returns on NMI/SMI; we loop back.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

// ---------------------------------------------------------------------------------------------
// IDT

/// Vector used for the Xen event-channel upcall.
pub const UPCALL_VECTOR: u8 = 0xF3;

#[repr(C, align(16))]
#[derive(Clone, Copy)]
struct IdtEntry {
    offset_low: u16,
    selector: u16,
    ist: u8,
    type_attributes: u8,
    offset_middle: u16,
    offset_high: u32,
    reserved: u32,
}
const _: () = assert!(core::mem::size_of::<IdtEntry>() == 16);

impl IdtEntry {
    const MISSING: IdtEntry = IdtEntry {
        offset_low: 0,
        selector: 0,
        ist: 0,
        type_attributes: 0,
        offset_middle: 0,
        offset_high: 0,
        reserved: 0,
    };

    /// A 64-bit interrupt gate; `ist` = 0 stays on the current stack, 1–7 switch to that
    /// TSS interrupt stack.
    fn interrupt_gate(handler: u64, ist: u8) -> IdtEntry {
        IdtEntry {
            offset_low: handler as u16,
            selector: 0x08, // 64-bit code segment of the boot GDT
            ist,
            type_attributes: 0x8E, // present, DPL 0, 64-bit interrupt gate
            offset_middle: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        }
    }

    /// The gate as the two 8-byte words the CPU reads (low, high).
    fn words(&self) -> [u64; 2] {
        [
            u64::from(self.offset_low)
                | u64::from(self.selector) << 16
                | u64::from(self.ist) << 32
                | u64::from(self.type_attributes) << 40
                | u64::from(self.offset_middle) << 48,
            u64::from(self.offset_high) | u64::from(self.reserved) << 32,
        ]
    }
}

#[repr(C, align(4096))]
struct Idt([IdtEntry; 256]);
const _: () = assert!(core::mem::size_of::<Idt>() == 256 * 16);

static mut IDT: Idt = Idt([IdtEntry::MISSING; 256]);

#[repr(C, packed)]
struct DescriptorTablePointer {
    limit: u16,
    base: u64,
}

// Exception stubs: push a dummy error code where the CPU does not, push the vector, jump to
// the common path which saves registers and calls `exception_dispatch` (never returns).
global_asm!(
    r#"
    .macro EXC_NOERR n
    .global exception_stub_\n
exception_stub_\n:
    pushq $0
    pushq $\n
    jmp exception_common
    .endm
    .macro EXC_ERR n
    .global exception_stub_\n
exception_stub_\n:
    pushq $\n
    jmp exception_common
    .endm

    .pushsection .text.exceptions, "ax", @progbits
    EXC_NOERR 0
    EXC_NOERR 1
    EXC_NOERR 2
    EXC_NOERR 3
    EXC_NOERR 4
    EXC_NOERR 5
    EXC_NOERR 6
    EXC_NOERR 7
    EXC_ERR 8
    EXC_NOERR 9
    EXC_ERR 10
    EXC_ERR 11
    EXC_ERR 12
    EXC_ERR 13
    EXC_ERR 14
    EXC_NOERR 15
    EXC_NOERR 16
    EXC_ERR 17
    EXC_NOERR 18
    EXC_NOERR 19
    EXC_NOERR 20
    EXC_ERR 21
    EXC_NOERR 22
    EXC_NOERR 23
    EXC_NOERR 24
    EXC_NOERR 25
    EXC_NOERR 26
    EXC_NOERR 27
    EXC_NOERR 28
    EXC_ERR 29
    EXC_ERR 30
    EXC_NOERR 31

exception_common:
    pushq %rax
    pushq %rbx
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %rbp
    movq %rsp, %rdi
    andq $-16, %rsp
    call {dispatch}
1:  cli
    hlt
    jmp 1b

    /* Event-channel upcall: acknowledge and return; the main loop scans the bitmaps. */
    .global upcall_stub
upcall_stub:
    pushq %rax
    movq {pending_flag}(%rip), %rax
    testq %rax, %rax
    jz 2f
    movb $0, (%rax)          /* vcpu_info.evtchn_upcall_pending = 0 */
2:  movq {eoi_register}(%rip), %rax
    testq %rax, %rax
    jz 3f
    movl $0, (%rax)          /* LAPIC EOI (only when the per-vCPU vector is in use) */
3:  lock incq {upcall_count}(%rip)
    popq %rax
    iretq
    .popsection

    .pushsection .rodata.exception_stub_table, "a"
    .balign 8
    .global exception_stub_table
exception_stub_table:
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad exception_stub_\n
    .endr
    .popsection
"#,
    dispatch = sym exception_dispatch,
    pending_flag = sym UPCALL_PENDING_FLAG,
    eoi_register = sym UPCALL_EOI_REGISTER,
    upcall_count = sym UPCALL_COUNT,
    options(att_syntax)
);

unsafe extern "C" {
    safe fn upcall_stub();
    /// Addresses of `exception_stub_0` .. `exception_stub_31` (built by the assembly above).
    safe static exception_stub_table: [u64; 32];
}

/// Address of `vcpu_info.evtchn_upcall_pending` once shared_info is mapped (0 before).
static UPCALL_PENDING_FLAG: AtomicU64 = AtomicU64::new(0);
/// Address of the LAPIC EOI register if the per-vCPU upcall vector is used (0 otherwise).
static UPCALL_EOI_REGISTER: AtomicU64 = AtomicU64::new(0);
/// Number of upcalls taken (statistics).
static UPCALL_COUNT: AtomicU64 = AtomicU64::new(0);

/// Tells the upcall stub what to acknowledge: the `evtchn_upcall_pending` byte of vCPU 0 and,
/// optionally, the LAPIC EOI register.
pub fn set_upcall_ack(pending_flag_address: u64, eoi_register_address: Option<u64>) {
    UPCALL_PENDING_FLAG.store(pending_flag_address, Ordering::SeqCst);
    UPCALL_EOI_REGISTER.store(eoi_register_address.unwrap_or(0), Ordering::SeqCst);
}

/// Number of upcall interrupts taken so far.
pub fn upcall_count() -> u64 {
    UPCALL_COUNT.load(Ordering::Relaxed)
}

/// Registers saved by `exception_common`, lowest address first, followed by the CPU frame.
#[repr(C)]
#[derive(Debug)]
pub struct ExceptionFrame {
    rbp: u64,
    rdi: u64,
    rsi: u64,
    rdx: u64,
    rcx: u64,
    rbx: u64,
    rax: u64,
    vector: u64,
    error_code: u64,
    rip: u64,
    cs: u64,
    rflags: u64,
    rsp: u64,
    ss: u64,
}

const EXCEPTION_NAMES: [&str; 32] = [
    "divide error",
    "debug",
    "NMI",
    "breakpoint",
    "overflow",
    "bound range",
    "invalid opcode",
    "device not available",
    "double fault",
    "coprocessor overrun",
    "invalid TSS",
    "segment not present",
    "stack fault",
    "general protection",
    "page fault",
    "reserved",
    "x87 FP",
    "alignment check",
    "machine check",
    "SIMD FP",
    "virtualization",
    "control protection",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "hypervisor injection",
    "VMM communication",
    "security",
    "reserved",
];

/// Vector of the NMI.
const NMI_VECTOR: u64 = 2;
/// Vector of the double fault.
const DOUBLE_FAULT_VECTOR: u64 = 8;
/// Vector of the page fault.
const PAGE_FAULT_VECTOR: u64 = 14;
/// Vector of the machine check.
const MACHINE_CHECK_VECTOR: u64 = 18;

/// The interrupt stack (IST slot) an exception vector runs on; 0 = the current stack.
fn ist_for_vector(vector: u64) -> u8 {
    match vector {
        DOUBLE_FAULT_VECTOR => crate::boot::IST_DOUBLE_FAULT,
        NMI_VECTOR => crate::boot::IST_NMI,
        MACHINE_CHECK_VECTOR => crate::boot::IST_MACHINE_CHECK,
        _ => 0,
    }
}

extern "C" fn exception_dispatch(frame: &ExceptionFrame) -> ! {
    let name = EXCEPTION_NAMES
        .get(frame.vector as usize)
        .copied()
        .unwrap_or("unknown");
    // A #DF from a stack overflow follows a page fault (on the guard page), so CR2 is
    // meaningful for both.
    let cr2 = if frame.vector == PAGE_FAULT_VECTOR || frame.vector == DOUBLE_FAULT_VECTOR {
        read_cr2()
    } else {
        0
    };
    let (guard_start, guard_end) = crate::boot::stack_guard_range();
    let in_guard = |address: u64| (guard_start..guard_end).contains(&address);
    if (frame.vector == DOUBLE_FAULT_VECTOR || frame.vector == PAGE_FAULT_VECTOR)
        && (in_guard(cr2) || in_guard(frame.rsp))
    {
        let (stack_bottom, stack_top) = crate::boot::stack_range();
        panic!(
            "{name}: kernel stack overflow? rsp={:#x} cr2={cr2:#x} (guard page \
             {guard_start:#x}-{guard_end:#x} below the boot stack {stack_bottom:#x}-\
             {stack_top:#x}) rip={:#x} error_code={:#x} rbp={:#x}",
            frame.rsp, frame.rip, frame.error_code, frame.rbp
        );
    }
    panic!(
        "CPU exception {} ({}) error_code={:#x} rip={:#x} rsp={:#x} rflags={:#x} cr2={:#x} \
         rax={:#x} rbx={:#x} rcx={:#x} rdx={:#x} rsi={:#x} rdi={:#x} rbp={:#x}",
        frame.vector,
        name,
        frame.error_code,
        frame.rip,
        frame.rsp,
        frame.rflags,
        cr2,
        frame.rax,
        frame.rbx,
        frame.rcx,
        frame.rdx,
        frame.rsi,
        frame.rdi,
        frame.rbp
    );
}

/// The gate [`install_idt`] writes for `vector`.
fn expected_gate(vector: usize) -> IdtEntry {
    let stubs: [u64; 32] = exception_stub_table;
    match stubs.get(vector) {
        Some(stub) => IdtEntry::interrupt_gate(*stub, ist_for_vector(vector as u64)),
        None if vector == usize::from(UPCALL_VECTOR) => {
            IdtEntry::interrupt_gate(upcall_stub as *const () as u64, 0)
        }
        None => IdtEntry::MISSING,
    }
}

/// Compares the IDT in memory with what [`install_idt`] writes, word by word; calls `report`
/// for each differing 8-byte word and returns their number. Reads only.
///
/// The warm entry calls it before `.bss` (which holds the IDT) is zeroed: a gate broken in
/// the previous run (which would have turned the next exception into a triple fault) is
/// reported before the warm boot rebuilds the table.
pub fn check_idt(mut report: impl FnMut(crate::boot::EntryMismatch)) -> usize {
    let base = core::ptr::addr_of!(IDT).cast::<u64>();
    let mut mismatches = 0;
    for vector in 0..256 {
        let expected = expected_gate(vector).words();
        for (half, expected_word) in expected.into_iter().enumerate() {
            let index = vector * 2 + half;
            // SAFETY: `index` < 512 and the IDT is 256 16-byte gates = 512 aligned words in
            // .bss, always mapped. Volatile: the CPU reads this memory, not Rust code, and
            // the warm entry reads it before Rust's view of .bss is reset.
            let found = unsafe { base.wrapping_add(index).read_volatile() };
            if found != expected_word {
                mismatches += 1;
                report(crate::boot::EntryMismatch {
                    table: crate::boot::CheckedTable::Idt,
                    index: index as u64,
                    found,
                    expected: expected_word,
                });
            }
        }
    }
    mismatches
}

/// Installs the IDT: vectors 0–31 report the exception and panic (#DF, NMI and #MC on their
/// interrupt stacks); [`UPCALL_VECTOR`] is the event-channel upcall. Must run before
/// interrupts are ever enabled, and after [`crate::boot::load_task_register`].
pub fn install_idt() {
    // SAFETY: single vCPU, interrupts disabled, called once during boot before anything reads
    // the IDT: this is the only live reference to `IDT`.
    let idt = unsafe { &mut *core::ptr::addr_of_mut!(IDT) };
    for (vector, gate) in idt.0.iter_mut().enumerate() {
        *gate = expected_gate(vector);
    }
    let pointer = DescriptorTablePointer {
        limit: (core::mem::size_of::<Idt>() - 1) as u16,
        base: core::ptr::addr_of!(IDT) as u64,
    };
    // SAFETY: `pointer` describes a valid, 'static IDT whose gates point at the stubs above.
    unsafe { asm!("lidt [{}]", in(reg) &pointer, options(readonly, nostack, preserves_flags)) };
}

/// Self-test hook (`--selftest=warm-stack-overflow`): overwrites the low half of the gate of
/// vector 0x80, which nothing raises, with garbage — damage the next warm entry must report.
/// Returns the IDT word index as [`check_idt`] will report it.
pub fn damage_idt_for_self_test() -> u64 {
    const VECTOR: usize = 0x80;
    // SAFETY: single vCPU, interrupts off; the gate of vector 0x80 is never used (no `int`
    // instruction, no device raises it), so no delivery reads the garbage written here.
    unsafe {
        core::ptr::addr_of_mut!(IDT)
            .cast::<u64>()
            .add(VECTOR * 2)
            .write_volatile(0xBAD0_BAD0_BAD0_BAD0)
    };
    (VECTOR * 2) as u64
}
