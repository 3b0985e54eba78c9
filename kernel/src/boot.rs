//! PVH entry: the ELF note, the 32-bit entry point, boot page tables, GDT, stack and the switch
//! to long mode, ending in a call to [`crate::kernel_main`].
//!
//! Follows the PVH boot ABI of xen.git `docs/misc/pvh.pandoc`: we are entered at the physical
//! address named by the `XEN_ELFNOTE_PHYS32_ENTRY` note (xen.git
//! `xen/include/public/elfnote.h`, type 18) in 32-bit protected mode, paging off, `ebx` = physical
//! address of `struct hvm_start_info`, everything else (stack, GDT, IDT) unspecified.
//!
//! What the assembly does, in order:
//! 1. `cli; cld`; keep `ebx` (start-info address) untouched throughout.
//! 2. Zero everything from `.bss` to the image end (`.bss`, `.boot` with the page tables and
//!    the stack, `.warm`) and copy `.data` to `.data_pristine` before any code changes it.
//!    The loader already zeroes the NOLOAD part; a reboot through this entry would not.
//! 3. Build the identity map with 2 MiB pages: 4 page directories for 0–4 GiB plus one for the
//!    grant-mapping window at 4–5 GiB (see [`GRANT_WINDOW_BASE`]). The one 2 MiB region that
//!    holds the stack's guard page is split into 4 KiB pages (`boot_pt`): every entry maps
//!    the same frame as the 2 MiB page did, except the guard page, which is not present.
//! 4. Load our GDT (null, 64-bit code 0x08, data 0x10, 32-bit code 0x18, TSS 0x20), enable
//!    PAE, load CR3, set EFER.LME, enable paging (+WP), far-jump to 64-bit.
//! 5. Load data segments, the 64-bit stack pointer, paint the stack below it for the
//!    high-water mark ([`crate::stack`]), and call `kernel_main(start_info_paddr)`.
//!
//! The warm entry `warm_start64` (64-bit, jumped to by [`crate::warm`] after a panic or the
//! shell's `restart`): `cli; cld`, the stack pointer back to the top of the boot stack,
//! [`crate::warm::warm_entry_check`] (boot page tables and IDT against what was built),
//! paint the stack, zero `.bss` only, copy `.data_pristine` back over `.data`, call
//! [`crate::kernel_warm_main`].
//! Every Rust static is then as at cold boot, while `.boot` (page tables, stack, the
//! shared_info page, which is Xen's page now), `.warm` and the RAM log device are untouched.
//!
//! [`check_page_tables`] recomputes every entry the cold entry writes (PML4, PDPT, the 5 PDs,
//! the guard's page table: 4096 entries) and compares: once at cold boot (the assembly and
//! this file must agree) and at every warm entry, before anything else runs, where differing
//! entries are rewritten and CR3 reloaded ([`crate::warm`] records and reports them).
//!
//! `.boot` layout (ascending): PML4, PDPT, 5 page directories, the page table of the guard's
//! 2 MiB region, the guard page ([`STACK_GUARD_SIZE_BYTES`], never used, not present), the
//! boot stack ([`STACK_SIZE_BYTES`]), then the interrupt stacks of #DF (16 KiB), NMI and
//! #MC (8 KiB each). A stack overflow therefore faults on the guard page instead of silently
//! overwriting the page tables below it.
//!
//! The GDT and the 64-bit TSS live in `.data`: [`load_task_register`] writes the TSS
//! descriptor and `ltr`s it (which marks the descriptor busy); the warm entry restores `.data`
//! from the pristine copy and `load_task_register` rewrites the descriptor as available, so
//! `ltr` works again after every warm restart. The TSS's IST1–3 point at the interrupt
//! stacks: the IDT gates of #DF, NMI and #MC ([`crate::arch`]) switch to them, so a fault
//! caused by a broken stack is still reported instead of escalating to a triple fault.

use core::arch::global_asm;

/// Size of the boot (and only) stack.
pub const STACK_SIZE_BYTES: usize = 128 * 1024;
/// Size of the not-present guard page right below the boot stack.
pub const STACK_GUARD_SIZE_BYTES: u64 = 4096;
/// Interrupt stack of the double-fault handler (IST1): the panic path runs on it.
const IST_DOUBLE_FAULT_SIZE_BYTES: usize = 16 * 1024;
/// Interrupt stack of the NMI handler (IST2).
const IST_NMI_SIZE_BYTES: usize = 8 * 1024;
/// Interrupt stack of the machine-check handler (IST3).
const IST_MACHINE_CHECK_SIZE_BYTES: usize = 8 * 1024;

/// IST slot (1-based, as in the IDT gate) of the double-fault stack.
pub const IST_DOUBLE_FAULT: u8 = 1;
/// IST slot of the NMI stack.
pub const IST_NMI: u8 = 2;
/// IST slot of the machine-check stack.
pub const IST_MACHINE_CHECK: u8 = 3;

/// GDT selector of the TSS descriptor (two 8-byte slots at 0x20 and 0x28).
pub const TSS_SELECTOR: u16 = 0x20;
/// Bytes of a 64-bit TSS.
const TSS_SIZE_BYTES: u64 = 104;
/// Descriptor type "available 64-bit TSS" with the present bit, DPL 0 (access byte).
const TSS_DESCRIPTOR_ACCESS: u64 = 0x89;

/// First guest-physical address of the window reserved for foreign (grant) mappings.
/// It lies above every RAM range of a xenstore domain (init-xenstore-domain populates only
/// `--memory` MiB below 4 GiB), is identity mapped by the boot page tables, and is never
/// populated by us.
pub const GRANT_WINDOW_BASE: u64 = 0x1_0000_0000;
/// Size of the grant-mapping window: one page directory of 2 MiB pages (1 GiB).
pub const GRANT_WINDOW_SIZE_BYTES: u64 = 0x4000_0000;

/// Number of 2 MiB page directory entries written by the boot code (5 directories × 512).
const BOOT_PD_ENTRIES: u32 = 5 * 512;
/// Entries of one page-table page.
const TABLE_ENTRIES: usize = 512;
/// Page-table entry bits: present | writable.
const ENTRY_PRESENT_WRITABLE: u64 = 0x3;
/// Page-directory entry bit: maps a 2 MiB page.
const ENTRY_LARGE_PAGE: u64 = 0x80;
/// Entry bits the CPU sets as it uses an entry (accessed, dirty): not compared.
const ENTRY_HARDWARE_BITS: u64 = 0x60;

global_asm!(
    // ---- PVH ELF note (elfnote.h: XEN_ELFNOTE_PHYS32_ENTRY = 18) ----
    r#"
    .pushsection .note.Xen, "a", @note
    .balign 4
    .long 4                 /* namesz: "Xen\0" */
    .long 4                 /* descsz: 32-bit physical entry address */
    .long 18                /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .balign 4
    .long pvh_start32
    .balign 4
    .popsection

    .pushsection .boot.tables, "aw", @nobits
    .balign 4096
    .global boot_pml4
boot_pml4:
    .skip 4096
    .global boot_pdpt
boot_pdpt:
    .skip 4096
    .global boot_pd
boot_pd:
    .skip 4096 * 5
    /* 4 KiB page table of the 2 MiB region that holds the guard page */
    .global boot_pt
boot_pt:
    .skip 4096
    /* never used: mapped not present, so an overflow of the stack above faults here */
    .global boot_stack_guard
boot_stack_guard:
    .skip 4096
    .global boot_stack_bottom
boot_stack_bottom:
    .skip {stack_size}
    .global boot_stack_top
boot_stack_top:
    /* interrupt stacks (TSS IST1-3): #DF, NMI and #MC never run on a possibly broken stack.
       Above the boot stack: an overflow of one of them runs into the boot stack, which is
       dead by then (every exception is fatal), not into the page tables */
ist_double_fault_bottom:
    .skip {ist_double_fault_size}
    .global ist_double_fault_top
ist_double_fault_top:
ist_nmi_bottom:
    .skip {ist_nmi_size}
ist_nmi_top:
ist_machine_check_bottom:
    .skip {ist_machine_check_size}
ist_machine_check_top:
    .popsection

    /* In .data, not .rodata: `ltr` sets the busy bit of the TSS descriptor, and the warm
       entry restores .data (this GDT and TSS included) from the pristine copy */
    .pushsection .data.boot_gdt, "aw", @progbits
    .balign 16
    .global boot_gdt
boot_gdt:
    .quad 0                         /* 0x00 null */
    .quad 0x00af9a000000ffff        /* 0x08 64-bit code, DPL 0 */
    .quad 0x00cf92000000ffff        /* 0x10 flat data, DPL 0 */
    .quad 0x00cf9a000000ffff        /* 0x18 flat 32-bit code (unused after the switch) */
    .quad 0, 0                      /* 0x20 64-bit TSS: written by load_task_register */
boot_gdt_end:
    .popsection

    .pushsection .rodata.boot_gdt_pointer, "a"
    .balign 4
    .word 0
boot_gdt_pointer:
    .word boot_gdt_end - boot_gdt - 1
    .long boot_gdt
    .popsection

    /* 64-bit TSS (Intel SDM vol. 3, "Task-State Segment (TSS)"; 104 bytes): only the IST
       pointers are used (no privilege changes, no I/O bitmap) */
    .pushsection .data.boot_tss, "aw", @progbits
    .balign 16
    .global boot_tss
boot_tss:
    .long 0                         /* reserved */
    .quad 0, 0, 0                   /* RSP0-2 (unused: everything runs at CPL 0) */
    .quad 0                         /* reserved */
    .quad ist_double_fault_top      /* IST1 */
    .quad ist_nmi_top               /* IST2 */
    .quad ist_machine_check_top     /* IST3 */
    .quad 0, 0, 0, 0                /* IST4-7 */
    .quad 0                         /* reserved */
    .word 0                         /* reserved */
    .word boot_tss_end - boot_tss   /* I/O map base beyond the limit: no I/O bitmap */
    .global boot_tss_end
boot_tss_end:
    .popsection

    /* paint the boot stack below rsp - margin for the high-water mark (crate::stack);
       clobbers rax, rcx, rdi; uses no stack */
    .macro PAINT_BOOT_STACK
    movabsq $boot_stack_bottom, %rdi
    movq %rsp, %rcx
    subq ${paint_margin}, %rcx
    subq %rdi, %rcx
    shrq $3, %rcx
    movabsq ${paint}, %rax
    rep stosq
    .endm

    .pushsection .text.boot, "ax", @progbits
    .code32
    .global pvh_start32
pvh_start32:
    cli
    cld

    /* 2. zero .bss, .boot, .data_pristine, .warm (ebx is preserved: start-info address) */
    movl $__bss_start, %edi
    movl $__kernel_end, %ecx
    subl %edi, %ecx
    xorl %eax, %eax
    rep stosb
    /* pristine copy of .data for warm restarts */
    movl $__data_start, %esi
    movl $__data_pristine, %edi
    movl $__data_end, %ecx
    subl %esi, %ecx
    rep movsb

    /* 3. page tables: PML4[0] -> PDPT; PDPT[0..5] -> PD[0..5]; PD entries 2 MiB each */
    movl $boot_pdpt, %eax
    orl $0x3, %eax                  /* present | writable */
    movl %eax, boot_pml4

    xorl %ecx, %ecx
1:
    movl %ecx, %eax
    shll $12, %eax
    addl $boot_pd, %eax
    orl $0x3, %eax
    movl %eax, boot_pdpt(,%ecx,8)
    incl %ecx
    cmpl $5, %ecx
    jb 1b

    xorl %ecx, %ecx
2:
    movl %ecx, %eax
    shll $21, %eax
    orl $0x83, %eax                 /* present | writable | 2 MiB page */
    movl %eax, boot_pd(,%ecx,8)
    movl %ecx, %eax
    shrl $11, %eax                  /* bits 32.. of the physical address */
    movl %eax, boot_pd+4(,%ecx,8)
    incl %ecx
    cmpl ${pd_entries}, %ecx
    jb 2b

    /* 3b. the 2 MiB region holding the guard page: 4 KiB pages (boot_pt), identical to the
       2 MiB mapping except the guard page itself, which is not present */
    movl $boot_stack_guard, %edx
    andl $0xffe00000, %edx          /* region base */
    xorl %ecx, %ecx
6:
    movl %ecx, %eax
    shll $12, %eax
    addl %edx, %eax
    orl $0x3, %eax                  /* present | writable */
    movl %eax, boot_pt(,%ecx,8)     /* the high half stays zero: below 4 GiB */
    incl %ecx
    cmpl $512, %ecx
    jb 6b
    movl $boot_stack_guard, %ecx
    shrl $12, %ecx
    andl $511, %ecx
    movl $0, boot_pt(,%ecx,8)       /* guard page: not present */
    movl $boot_stack_guard, %ecx
    shrl $21, %ecx                  /* index of the region's entry in the 5 PDs */
    movl $boot_pt, %eax
    orl $0x3, %eax
    movl %eax, boot_pd(,%ecx,8)
    movl $0, boot_pd+4(,%ecx,8)

    /* 4. GDT, PAE, CR3, EFER.LME, paging */
    lgdt boot_gdt_pointer
    movl %cr4, %eax
    orl $0x20, %eax                 /* CR4.PAE */
    movl %eax, %cr4
    movl $boot_pml4, %eax
    movl %eax, %cr3
    movl $0xc0000080, %ecx          /* IA32_EFER */
    rdmsr
    orl $0x100, %eax                /* EFER.LME */
    wrmsr
    movl %cr0, %eax
    orl $0x80010001, %eax           /* PG | WP | PE */
    movl %eax, %cr0
    ljmp $0x08, $3f

    .code64
3:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorw %ax, %ax
    movw %ax, %fs
    movw %ax, %gs
    movabsq $boot_stack_top, %rsp
    PAINT_BOOT_STACK
    xorl %ebp, %ebp
    movl %ebx, %edi                 /* zero-extends: start-info physical address */
    call {kernel_main}
4:
    cli
    hlt
    jmp 4b

    /* warm entry (64-bit, from crate::warm): fresh statics, same Xen-side domain */
    .global warm_start64
warm_start64:
    cli
    cld
    movabsq $boot_stack_top, %rsp
    xorl %ebp, %ebp
    /* first, before anything can fault: boot page tables (repaired) and IDT against what
       was built; findings go to .warm */
    call {warm_entry_check}
    PAINT_BOOT_STACK
    movabsq $__bss_start, %rdi
    movabsq $__bss_end, %rcx
    subq %rdi, %rcx
    xorl %eax, %eax
    rep stosb
    movabsq $__data_pristine, %rsi
    movabsq $__data_start, %rdi
    movabsq $__data_end, %rcx
    subq %rdi, %rcx
    rep movsb
    call {kernel_warm_main}
5:
    cli
    hlt
    jmp 5b
    .popsection
"#,
    stack_size = const STACK_SIZE_BYTES,
    paint = const crate::stack::PAINT,
    paint_margin = const crate::stack::PAINT_MARGIN_BYTES,
    ist_double_fault_size = const IST_DOUBLE_FAULT_SIZE_BYTES,
    ist_nmi_size = const IST_NMI_SIZE_BYTES,
    ist_machine_check_size = const IST_MACHINE_CHECK_SIZE_BYTES,
    pd_entries = const BOOT_PD_ENTRIES,
    kernel_main = sym crate::kernel_main,
    kernel_warm_main = sym crate::kernel_warm_main,
    warm_entry_check = sym crate::warm::warm_entry_check,
    options(att_syntax)
);

unsafe extern "C" {
    static __kernel_start: u8;
    static __kernel_end: u8;
    static mut boot_gdt: [u64; 6];
    static boot_tss: u8;
    static boot_tss_end: u8;
    static ist_double_fault_top: u8;
    static boot_pml4: u8;
    static boot_pdpt: u8;
    static boot_pd: u8;
    static boot_pt: u8;
    static boot_stack_guard: u8;
    static boot_stack_bottom: u8;
    static boot_stack_top: u8;
}

/// Physical address range `[start, end)` occupied by the loaded kernel image (incl. `.bss`).
pub fn kernel_image_range() -> (u64, u64) {
    // Only the addresses of linker symbols are taken; they are never read.
    let start = core::ptr::addr_of!(__kernel_start) as u64;
    let end = core::ptr::addr_of!(__kernel_end) as u64;
    (start, end)
}

/// Address range `[bottom, top)` of the boot stack.
pub fn stack_range() -> (u64, u64) {
    let bottom = core::ptr::addr_of!(boot_stack_bottom) as u64;
    let top = core::ptr::addr_of!(boot_stack_top) as u64;
    (bottom, top)
}

/// Address range `[start, end)` of the guard page below the boot stack (mapped not present).
pub fn stack_guard_range() -> (u64, u64) {
    let start = core::ptr::addr_of!(boot_stack_guard) as u64;
    (start, start + STACK_GUARD_SIZE_BYTES)
}

/// Address range `[bottom, top)` of the double-fault interrupt stack (IST1).
pub fn double_fault_stack_range() -> (u64, u64) {
    let top = core::ptr::addr_of!(ist_double_fault_top) as u64;
    (top - IST_DOUBLE_FAULT_SIZE_BYTES as u64, top)
}

/// Writes the TSS descriptor into the GDT (type "available", so the busy bit a previous `ltr`
/// set — before a warm restart — is cleared) and loads the task register with it.
///
/// Must run before [`crate::arch::install_idt`]: the gates of #DF, NMI and #MC name IST slots,
/// which the CPU reads from the TSS that TR points at.
pub fn load_task_register() {
    let base = core::ptr::addr_of!(boot_tss) as u64;
    let end = core::ptr::addr_of!(boot_tss_end) as u64;
    assert_eq!(end - base, TSS_SIZE_BYTES, "boot_tss is not a 64-bit TSS");
    let limit = TSS_SIZE_BYTES - 1;
    // Intel SDM vol. 3, "TSS Descriptor in 64-bit mode": limit 15:0, base 23:0, access byte,
    // limit 19:16 (flags 0: byte granularity), base 31:24; then base 63:32 and zeros.
    let low = (limit & 0xFFFF)
        | (base & 0xFF_FFFF) << 16
        | TSS_DESCRIPTOR_ACCESS << 40
        | (limit >> 16 & 0xF) << 48
        | (base >> 24 & 0xFF) << 56;
    let high = base >> 32;
    let slot = usize::from(TSS_SELECTOR / 8);
    // SAFETY: `boot_gdt` is the live GDT (6 slots, in .data: writable); slots 4 and 5 are the
    // TSS descriptor, which the CPU reads only at `ltr` (TR caches it) and nothing else
    // touches. Volatile: the CPU, not Rust, is the reader.
    unsafe {
        let gdt = core::ptr::addr_of_mut!(boot_gdt).cast::<u64>();
        gdt.add(slot).write_volatile(low);
        gdt.add(slot + 1).write_volatile(high);
    }
    // SAFETY: the descriptor written above describes `boot_tss`, a 104-byte 64-bit TSS in
    // .data whose IST pointers name the tops of the interrupt stacks in .boot; loading TR has
    // no other effect than making those stacks available to IST gates.
    unsafe {
        core::arch::asm!("ltr {0:x}", in(reg) TSS_SELECTOR, options(nostack, preserves_flags))
    };
}

/// A table the boot code builds (page tables) or installs (IDT), checked at the warm entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckedTable {
    /// `boot_pml4`.
    Pml4,
    /// `boot_pdpt`.
    Pdpt,
    /// The 5 page directories `boot_pd`, indexed as one array of 2560 entries (index × 2 MiB
    /// is the address the entry maps).
    PageDirectory,
    /// `boot_pt`, the 4 KiB page table of the guard page's 2 MiB region.
    PageTable,
    /// The IDT, indexed by 8-byte word: vector × 2 (low half of the gate) or vector × 2 + 1.
    Idt,
}

impl CheckedTable {
    const ALL: [CheckedTable; 5] = [
        CheckedTable::Pml4,
        CheckedTable::Pdpt,
        CheckedTable::PageDirectory,
        CheckedTable::PageTable,
        CheckedTable::Idt,
    ];

    /// A small number for records that must be plain integers (the `.warm` section).
    pub fn code(self) -> u64 {
        match self {
            CheckedTable::Pml4 => 1,
            CheckedTable::Pdpt => 2,
            CheckedTable::PageDirectory => 3,
            CheckedTable::PageTable => 4,
            CheckedTable::Idt => 5,
        }
    }

    /// The table with [`Self::code`] `code`.
    pub fn from_code(code: u64) -> Option<CheckedTable> {
        CheckedTable::ALL
            .into_iter()
            .find(|table| table.code() == code)
    }
}

/// One table entry that differed from what the boot code writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryMismatch {
    /// Which table.
    pub table: CheckedTable,
    /// Entry index (8-byte words for the IDT, see [`CheckedTable::Idt`]).
    pub index: u64,
    /// The value found (with the CPU's accessed/dirty bits, if set).
    pub found: u64,
    /// The value the boot code writes.
    pub expected: u64,
}

impl core::fmt::Display for EntryMismatch {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let index = self.index;
        match self.table {
            CheckedTable::Pml4 => write!(formatter, "PML4[{index}]")?,
            CheckedTable::Pdpt => write!(formatter, "PDPT[{index}]")?,
            CheckedTable::PageDirectory => {
                write!(formatter, "PD[{index}] (maps {:#x})", index << 21)?
            }
            CheckedTable::PageTable => write!(
                formatter,
                "PT[{index}] (maps {:#x})",
                guard_region_base() + index * 4096
            )?,
            CheckedTable::Idt => write!(
                formatter,
                "IDT[{:#x}] {} half",
                index / 2,
                if index.is_multiple_of(2) {
                    "low"
                } else {
                    "high"
                }
            )?,
        }
        write!(
            formatter,
            " = {:#018x}, expected {:#018x}",
            self.found, self.expected
        )
    }
}

/// Base of the 2 MiB region that holds the guard page (mapped by `boot_pt`).
fn guard_region_base() -> u64 {
    stack_guard_range().0 & !0x1F_FFFF
}

/// The value the cold entry writes into entry `index` of `table` (a page table).
fn expected_entry(table: CheckedTable, index: u64) -> u64 {
    let guard = stack_guard_range().0;
    match table {
        CheckedTable::Pml4 if index == 0 => {
            core::ptr::addr_of!(boot_pdpt) as u64 | ENTRY_PRESENT_WRITABLE
        }
        CheckedTable::Pdpt if index < 5 => {
            (core::ptr::addr_of!(boot_pd) as u64 + index * 4096) | ENTRY_PRESENT_WRITABLE
        }
        CheckedTable::PageDirectory if index == guard >> 21 => {
            core::ptr::addr_of!(boot_pt) as u64 | ENTRY_PRESENT_WRITABLE
        }
        CheckedTable::PageDirectory => index << 21 | ENTRY_LARGE_PAGE | ENTRY_PRESENT_WRITABLE,
        CheckedTable::PageTable => {
            let address = guard_region_base() + index * 4096;
            if address == guard {
                0
            } else {
                address | ENTRY_PRESENT_WRITABLE
            }
        }
        CheckedTable::Pml4 | CheckedTable::Pdpt | CheckedTable::Idt => 0,
    }
}

/// Compares all 4096 entries of the boot page tables with what the cold entry writes
/// (ignoring the accessed and dirty bits the CPU sets), calls `report` for each one that
/// differs, and returns their number. With `repair`, each differing entry is rewritten and,
/// if there was one, CR3 is reloaded (TLB flush).
///
/// Touches no static but the page tables: the warm entry calls it before `.bss` is zeroed.
pub fn check_page_tables(repair: bool, mut report: impl FnMut(EntryMismatch)) -> usize {
    let tables = [
        (
            CheckedTable::Pml4,
            core::ptr::addr_of!(boot_pml4) as u64,
            TABLE_ENTRIES,
        ),
        (
            CheckedTable::Pdpt,
            core::ptr::addr_of!(boot_pdpt) as u64,
            TABLE_ENTRIES,
        ),
        (
            CheckedTable::PageDirectory,
            core::ptr::addr_of!(boot_pd) as u64,
            BOOT_PD_ENTRIES as usize,
        ),
        (
            CheckedTable::PageTable,
            core::ptr::addr_of!(boot_pt) as u64,
            TABLE_ENTRIES,
        ),
    ];
    let mut mismatches = 0;
    for (table, base, entries) in tables {
        for index in 0..entries {
            let entry = (base as *mut u64).wrapping_add(index);
            // SAFETY: `entry` lies inside one of the boot page tables in `.boot` (`entries`
            // 8-byte entries from a page-aligned `base`), mapped and writable. Volatile: the
            // CPU's page walker is the other user of this memory.
            let found = unsafe { entry.read_volatile() };
            let expected = expected_entry(table, index as u64);
            if found & !ENTRY_HARDWARE_BITS == expected {
                continue;
            }
            mismatches += 1;
            report(EntryMismatch {
                table,
                index: index as u64,
                found,
                expected,
            });
            if repair {
                // SAFETY: as for the read; `expected` is exactly what the cold entry wrote
                // there, so the mapping becomes the identity map every part of the kernel
                // assumes. The TLB is flushed below.
                unsafe { entry.write_volatile(expected) };
            }
        }
    }
    if repair && mismatches > 0 {
        // SAFETY: reloading CR3 with its own value only flushes the (non-global) TLB entries,
        // so the entries rewritten above take effect.
        unsafe {
            core::arch::asm!(
                "mov {0}, cr3",
                "mov cr3, {0}",
                out(reg) _,
                options(nostack, preserves_flags)
            )
        };
    }
    mismatches
}

/// The task register's current selector ([`TSS_SELECTOR`] once [`load_task_register`] ran).
pub fn task_register() -> u16 {
    let selector: u16;
    // SAFETY: `str` only reads the task register.
    unsafe {
        core::arch::asm!("str {0:x}", out(reg) selector, options(nomem, nostack, preserves_flags))
    };
    selector
}

/// Self-test hook (`--selftest=warm-stack-overflow`, without Xen only): clears the writable
/// bit of the last page-directory entry (the top 2 MiB of the grant window, never touched
/// without Xen) — damage the next warm entry must find and repair. Returns the entry as
/// [`check_page_tables`] will report it.
pub fn damage_page_table_for_self_test() -> EntryMismatch {
    let index = u64::from(BOOT_PD_ENTRIES) - 1;
    let expected = expected_entry(CheckedTable::PageDirectory, index);
    let damaged = expected & !0x2;
    // SAFETY: the entry is the last of the 5 page directories (in bounds); it maps grant
    // window memory that nothing uses without Xen, so making it read-only affects no access.
    // Its stale TLB entry, if any, is never used either.
    unsafe {
        (core::ptr::addr_of!(boot_pd) as *mut u64)
            .add(index as usize)
            .write_volatile(damaged)
    };
    EntryMismatch {
        table: CheckedTable::PageDirectory,
        index,
        found: damaged,
        expected,
    }
}
