// Where the host puts its own structures in guest-physical memory. Everything sits in
// [0, 1 MiB) — GUEST_RESERVED_END — and the ELF loader refuses segments there, so no
// program can collide with them (native/guest/linker.ld links programs at 1 MiB).
// With the identity map, each of these guest-physical addresses is also the linear
// address the CPU uses for it (GDTR/IDTR/TR bases and IST pointers are linear).
//
//   0x00000  null guard page: left not present, so a NULL dereference is a #PF
//   0x01000  GDT: null, 64-bit code (0x08), data (0x10), then one TSS descriptor per vCPU
//   0x02000  TSSs, one 128-byte slot per vCPU (two pages)
//   0x04000  IDT: 256 16-byte gates (vectors 0–31 present)
//   0x05000  exception stubs (host-generated machine code, one page)
//   0x10000  page tables (PML4, PDPT, the null-guard PT, one PD per GiB), 32 pages
//   0x30000  per-vCPU exception areas, 8 KiB each: report, #DF stack, exception stack
//   0x70000  initial stack of vCPU 0 (RSP = 0x80000 at entry; _start switches away)
//   0x80000  free, still reserved for the host

/** Size of a 4 KiB page. */
export const PAGE_SIZE = 0x1000;
/** Guest-physical [0, GUEST_RESERVED_END) belongs to the host; programs load above it. */
export const GUEST_RESERVED_END = 0x100000;
/** The GDT. */
export const GDT_GPA = 0x1000;
/** The first vCPU's TSS; vCPU i's is at TSS_GPA + i * TSS_STRIDE. */
export const TSS_GPA = 0x2000;
/** Distance between consecutive vCPUs' TSSs (a TSS is 104 bytes). */
export const TSS_STRIDE = 128;
/** The IDT (256 gates × 16 bytes = one page). */
export const IDT_GPA = 0x4000;
/** The exception stubs' code page. */
export const STUBS_GPA = 0x5000;
/** First page of the identity page tables. */
export const PAGE_TABLES_GPA = 0x10000;
/** End (exclusive) of the page-table area: 32 pages. */
export const PAGE_TABLES_END = 0x30000;
/** vCPU 0's exception area; vCPU i's is at EXCEPTION_AREA_GPA + i * EXCEPTION_AREA_SIZE. */
export const EXCEPTION_AREA_GPA = 0x30000;
/**
 * Size and alignment of one vCPU's exception area. The stubs find the area by masking
 * RSP with ~(EXCEPTION_AREA_SIZE - 1): every exception arrives on an IST stack inside
 * the area, so this needs no per-vCPU code or data in the stubs.
 */
export const EXCEPTION_AREA_SIZE = 0x2000;
/** Offset in an area of the #DF stack's top (IST2); the report sits below it at offset 0. */
export const DOUBLE_FAULT_STACK_TOP = 0x1000;
/** Offset in an area of the exception stack's top (IST1, every vector but #DF). */
export const EXCEPTION_STACK_TOP = 0x2000;
/** Top of vCPU 0's initial stack (RSP at entry). */
export const INITIAL_STACK_TOP = 0x80000;
/** How many vCPUs the reserved area has room for (exception areas and TSSs). */
export const MAX_VCPUS = 32;

/** GDT selectors. */
export const Selector = {
  code64: 0x08,
  data: 0x10,
  /** vCPU 0's TSS; vCPU i's is tss + 16 * i (a TSS descriptor takes two GDT slots). */
  tss: 0x18,
} as const;

/** Bytes the GDT occupies for `vcpus` vCPUs (3 segment descriptors + 16 bytes per TSS). */
export function gdtSize(vcpus: number): number {
  return 3 * 8 + 16 * vcpus;
}

function checkVcpu(index: number): void {
  if (!Number.isInteger(index) || index < 0 || index >= MAX_VCPUS) {
    throw new RangeError(`vCPU index ${index} is outside 0..${MAX_VCPUS - 1} (the host layout has room for ${MAX_VCPUS} vCPUs)`);
  }
}

/** Guest-physical address of vCPU `index`'s TSS. */
export function tssGpa(index: number): number {
  checkVcpu(index);
  return TSS_GPA + index * TSS_STRIDE;
}

/** GDT selector of vCPU `index`'s TSS. */
export function tssSelector(index: number): number {
  checkVcpu(index);
  return Selector.tss + 16 * index;
}

/** Guest-physical address of vCPU `index`'s exception area (its report is at offset 0). */
export function exceptionAreaGpa(index: number): number {
  checkVcpu(index);
  return EXCEPTION_AREA_GPA + index * EXCEPTION_AREA_SIZE;
}
