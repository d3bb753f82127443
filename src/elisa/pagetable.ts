// Guest page tables (4-level and 5-level/LA57): GVA → GPA with typed permissions.

import { checkCanonical, hex, linearBits, type LeafLevel, type WalkLevels } from './address';
import { describePtBits, encodePtFlags, PT, type PtFlags } from './flags';
import type { PageAllocator, PhysPage } from './memory';
import { RadixTable, type TableKind } from './table';

const PT_KIND: TableKind = {
  name: 'page table',
  inputName: 'GVA',
  outputName: 'GPA',
  // Non-leaf entries allow everything; the leaf (and any stricter level) decides.
  tableBits: PT.P | PT.W | PT.U,
  hardwareBits: PT.A | PT.D,
  present: (entry) => (entry & PT.P) !== 0n,
  describe: (entry) => describePtBits(entry),
};

/** Options of a guest page table. */
export interface GuestPageTableOptions {
  /** 4 (48-bit linear addresses) or 5 (57-bit, LA57). */
  levels: WalkLevels;
  /** MAXPHYADDR: GPAs must be below 2^maxPhysAddr. Default 52. */
  maxPhysAddr?: number;
  /** The GPA at which each new table page will be visible (default: its physical address); called once per page. */
  tableAddress?: (page: PhysPage) => bigint;
}

/** Options of one mapping. */
export interface MapOptions {
  /** Allow changing an existing translation (otherwise a conflict throws). */
  replace?: boolean;
}

/** Extends an index-space address (bits above the linear width clear) to its canonical form. */
export function signExtend(va: bigint, bits: number): bigint {
  return (va >> BigInt(bits - 1)) & 1n ? va | (((1n << 64n) - 1n) ^ ((1n << BigInt(bits)) - 1n)) : va;
}

/** A guest page-table tree; `rootAddress` is what CR3 holds (a GPA, once the table pages are mapped in an EPT). */
export class GuestPageTable extends RadixTable {
  /** Allocates the root table. */
  constructor(allocator: PageAllocator, options: GuestPageTableOptions) {
    super(allocator, PT_KIND, options);
  }

  /** Linear-address width: 48 or 57. */
  get linearBits(): number {
    return linearBits(this.levels);
  }

  /** Maps `gva` to `gpa` with a leaf at `level` (1: 4 KiB, 2: 2 MiB, 3: 1 GiB). */
  map(gva: bigint, gpa: bigint, level: LeafLevel, flags: PtFlags, options: MapOptions = {}): void {
    checkCanonical(gva, this.linearBits, 'GVA');
    this.mapRaw(gva & ((1n << BigInt(this.linearBits)) - 1n), gpa, level, encodePtFlags(flags), options.replace ?? false);
  }

  protected override showInput(input: bigint): string {
    return hex(signExtend(input, this.linearBits));
  }

  /** Every leaf as (canonical GVA, level, raw entry). */
  leaves(): { gva: bigint; level: LeafLevel; entry: bigint }[] {
    const out: { gva: bigint; level: LeafLevel; entry: bigint }[] = [];
    this.forEachLeaf((input, level, entry) => out.push({ gva: signExtend(input, this.linearBits), level, entry }));
    return out;
  }
}
