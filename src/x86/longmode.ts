// Everything a vCPU needs to start directly in 64-bit long mode, without real-mode boot
// code: the host writes GDT, TSSs, IDT and exception stubs into guest memory, and sets
// segment registers, descriptor tables and control registers through KVM_SET_SREGS.
import type { DTable, Segment } from '../kvm/structs';
import { codeSegment64, dataSegment, TSS_SIZE, tssDescriptor, writeTss } from './descriptors';
import { exceptionStubs, IDT_LIMIT, writeIdt } from './exceptions';
import {
  DOUBLE_FAULT_STACK_TOP, EXCEPTION_STACK_TOP, exceptionAreaGpa, GDT_GPA, gdtSize, IDT_GPA, MAX_VCPUS,
  Selector, STUBS_GPA, tssGpa, tssSelector,
} from './layout';

/** Control-register and EFER bits used here (Intel SDM vol. 3, 2.5; AMD APM vol. 2, 3.1.7). */
export const Cr0 = { PE: 1n << 0n, MP: 1n << 1n, ET: 1n << 4n, NE: 1n << 5n, WP: 1n << 16n, AM: 1n << 18n, PG: 1n << 31n } as const;
/** CR4 bits. */
export const Cr4 = { PAE: 1n << 5n, PGE: 1n << 7n, OSFXSR: 1n << 9n, OSXMMEXCPT: 1n << 10n } as const;
/** EFER bits. */
export const Efer = { SCE: 1n << 0n, LME: 1n << 8n, LMA: 1n << 10n, NXE: 1n << 11n } as const;

/** CR0 for our guests: protected mode, paging, write-protect honoured at CPL 0, native x87 errors. */
export const LONG_MODE_CR0 = Cr0.PE | Cr0.MP | Cr0.ET | Cr0.NE | Cr0.WP | Cr0.PG;
/** CR4: PAE (required for long mode) and SSE enabled (FXSR/XMM exceptions), for programs that use it. */
export const LONG_MODE_CR4 = Cr4.PAE | Cr4.OSFXSR | Cr4.OSXMMEXCPT;
/** EFER: long mode enabled and active, NX available to page tables. */
export const LONG_MODE_EFER = Efer.LME | Efer.LMA | Efer.NXE;
/** RFLAGS at entry: only the always-one bit 1 (interrupts off). */
export const INITIAL_RFLAGS = 0x2n;

/** The hidden part of a segment register: KVM's struct kvm_segment, one definition for both layers. */
export type SegmentState = Segment;
/** GDTR/IDTR (struct kvm_dtable). */
export type DescriptorTableState = DTable;

/** The special registers one vCPU needs for long mode at CPL 0. */
export interface LongModeState {
  cs: SegmentState;
  ds: SegmentState;
  es: SegmentState;
  fs: SegmentState;
  gs: SegmentState;
  ss: SegmentState;
  tr: SegmentState;
  ldt: SegmentState;
  gdt: DescriptorTableState;
  idt: DescriptorTableState;
  cr0: bigint;
  cr3: bigint;
  cr4: bigint;
  efer: bigint;
}

/**
 * Writes the GDT (with one TSS descriptor per vCPU), the TSSs with their IST stacks,
 * the IDT and the exception stubs into `memory` (guest memory from guest-physical 0).
 */
export function writeSystemStructures(memory: Uint8Array, vcpus: number): void {
  if (!Number.isInteger(vcpus) || vcpus < 1 || vcpus > MAX_VCPUS) {
    throw new RangeError(`vCPU count ${vcpus} is outside 1..${MAX_VCPUS}`);
  }
  const view = new DataView(memory.buffer, memory.byteOffset, memory.byteLength);
  // Safe: every address below is inside the reserved first MiB, which the caller's
  // memory (at least 2 MiB, checked by the machine) contains; DataView bounds-checks anyway.
  memory.fill(0, GDT_GPA, GDT_GPA + gdtSize(MAX_VCPUS));
  view.setBigUint64(GDT_GPA + Selector.code64, codeSegment64(), true);
  view.setBigUint64(GDT_GPA + Selector.data, dataSegment(), true);
  for (let i = 0; i < vcpus; i++) {
    const [low, high] = tssDescriptor(tssGpa(i));
    view.setBigUint64(GDT_GPA + tssSelector(i), low, true);
    view.setBigUint64(GDT_GPA + tssSelector(i) + 8, high, true);
    const area = exceptionAreaGpa(i);
    memory.fill(0, area, area + EXCEPTION_STACK_TOP);
    writeTss(view, tssGpa(i), {
      rsp0: area + EXCEPTION_STACK_TOP,
      ist: [area + EXCEPTION_STACK_TOP, area + DOUBLE_FAULT_STACK_TOP],
    });
  }
  writeIdt(view, IDT_GPA, STUBS_GPA);
  const stubs = exceptionStubs();
  memory.fill(0xcc, STUBS_GPA, STUBS_GPA + 0x1000);
  memory.set(stubs, STUBS_GPA);
}

function segment(selector: number, type: number, code: boolean): SegmentState {
  return {
    base: 0n, limit: 0xffffffff, selector, type, present: true, dpl: 0,
    db: !code, s: true, l: code, g: true, avl: false, unusable: false,
  };
}

/** Special-register state for vCPU `index`: flat 64-bit segments, its TSS, our GDT/IDT, paging on `cr3`. */
export function longModeState(index: number, vcpus: number, cr3: number | bigint): LongModeState {
  const data = segment(Selector.data, 0x3, false);
  return {
    cs: segment(Selector.code64, 0xb, true),
    ds: data, es: { ...data }, fs: { ...data }, gs: { ...data }, ss: { ...data },
    tr: {
      base: BigInt(tssGpa(index)), limit: TSS_SIZE - 1, selector: tssSelector(index), type: 0xb,
      present: true, dpl: 0, db: false, s: false, l: false, g: false, avl: false, unusable: false,
    },
    ldt: { base: 0n, limit: 0xffff, selector: 0, type: 0x2, present: true, dpl: 0,
      db: false, s: false, l: false, g: false, avl: false, unusable: true },
    gdt: { base: BigInt(GDT_GPA), limit: gdtSize(vcpus) - 1 },
    idt: { base: BigInt(IDT_GPA), limit: IDT_LIMIT },
    cr0: LONG_MODE_CR0, cr3: BigInt(cr3), cr4: LONG_MODE_CR4, efer: LONG_MODE_EFER,
  };
}
