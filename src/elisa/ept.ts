// Extended page tables (4- and 5-level walks): GPA → HPA with typed permissions and memory
// types, the EPT pointer (EPTP) and the EPTP list page VMFUNC(0, i) selects from.

import { hex, levelShift, type LeafLevel, type WalkLevels } from './address';
import {
  ADDRESS_MASK, decodeEptFlags, describeEptBits, EPT, encodeEptFlags, memoryTypeCode, memoryTypeName,
  type EptCapabilities, type EptFlags, type MemoryType,
} from './flags';
import { readEntry, writeEntry, type PageAllocator, type PhysPage } from './memory';
import type { MapOptions } from './pagetable';
import { RadixTable, type TableKind } from './table';

const EPT_KIND: TableKind = {
  name: 'EPT',
  inputName: 'GPA',
  outputName: 'HPA',
  tableBits: EPT.R | EPT.W | EPT.X | EPT.XU,
  // With EPTP bit 6 the CPU sets A (bit 8) and D (bit 9) in entries it uses.
  hardwareBits: EPT.A | EPT.D,
  // SDM: an EPT entry is present if any of bits 2:0 is set, or bit 10 under mode-based execute control.
  present: (entry) => (entry & (EPT.R | EPT.W | EPT.X | EPT.XU)) !== 0n,
  describe: (entry, leaf) => describeEptBits(entry, leaf),
};

/** Options of an EPT. */
export interface EptOptions extends EptCapabilities {
  /** Walk length, 4 or 5. */
  levels: WalkLevels;
  /** MAXPHYADDR: HPAs and GPAs must be below 2^maxPhysAddr. Default 52. */
  maxPhysAddr?: number;
}

/** The leaf flags of APT entries: the root page is read (and, with A/D, written) as a table. */
export const APT_LEAF_FLAGS: EptFlags = { read: true, write: true, memoryType: 'WB' };

/** An EPT tree. */
export class Ept extends RadixTable {
  private readonly caps: EptCapabilities;

  /** Allocates the root table. */
  constructor(allocator: PageAllocator, options: EptOptions) {
    super(allocator, EPT_KIND, options);
    this.caps = { executeOnly: options.executeOnly ?? true };
  }

  /** Highest GPA bit + 1 this EPT can translate: min(MAXPHYADDR, 12 + 9 * levels). */
  get gpaBits(): number {
    return Math.min(this.maxPhysAddr, Number(levelShift(this.levels + 1)));
  }

  /** Maps `gpa` to `hpa` with a leaf at `level`. */
  map(gpa: bigint, hpa: bigint, level: LeafLevel, flags: EptFlags, options: MapOptions = {}): void {
    const bits = encodeEptFlags(flags, this.caps);
    if (gpa < 0n || gpa >= 1n << BigInt(this.gpaBits)) {
      throw new RangeError(`GPA ${hex(gpa)} is beyond what a ${this.levels}-level EPT with ${this.maxPhysAddr}-bit physical addresses translates (${this.gpaBits} bits)`);
    }
    this.mapRaw(gpa, hpa, level, bits, options.replace ?? false);
  }

  /** Fills every empty entry so that every unmapped GPA resolves to `rootHpa` (the APT). Returns milliseconds spent. */
  fillApt(rootHpa: bigint): number {
    return this.fillAptRaw(rootHpa, encodeEptFlags(APT_LEAF_FLAGS, this.caps));
  }

  /** The EPTP for this tree. */
  eptp(options: { memoryType?: MemoryType; accessDirty?: boolean } = {}): bigint {
    return encodeEptp({ root: this.root.address, levels: this.levels, memoryType: options.memoryType ?? 'WB', accessDirty: options.accessDirty ?? true });
  }

  /** Every leaf as (GPA, level, raw entry). APT entries are not leaves of their own. */
  leaves(): { gpa: bigint; level: LeafLevel; entry: bigint }[] {
    const out: { gpa: bigint; level: LeafLevel; entry: bigint }[] = [];
    this.forEachLeaf((input, level, entry) => out.push({ gpa: input, level, entry }));
    return out;
  }

  /**
   * The mapped GPA space as maximal runs: adjacent leaves whose HPAs are contiguous and whose
   * rights and memory type are equal merge into one region. What a backend that realises a
   * context as memory slots (one slot per region) needs.
   */
  regions(): EptRegion[] {
    const out: EptRegion[] = [];
    const rightsMask = EPT.R | EPT.W | EPT.X | EPT.XU | EPT.MT_MASK | EPT.IPAT;
    for (const leaf of this.leaves()) {
      const size = 1n << levelShift(leaf.level);
      const hpa = leaf.entry & ADDRESS_MASK & ~(size - 1n);
      const bits = leaf.entry & rightsMask;
      const last = out[out.length - 1];
      if (last && last.gpa + last.size === leaf.gpa && last.hpa + last.size === hpa && last.bits === bits) {
        last.size += size;
      } else {
        out.push({ gpa: leaf.gpa, hpa, size, bits, flags: decodeEptFlags(leaf.entry) });
      }
    }
    return out;
  }
}

/** A run of GPA space mapped contiguously with one set of rights. */
export interface EptRegion {
  gpa: bigint;
  hpa: bigint;
  /** Bytes. */
  size: bigint;
  /** Raw rights and memory-type bits of the leaves. */
  bits: bigint;
  /** The same, typed. */
  flags: EptFlags;
}

/** The fields of an EPT pointer. */
export interface EptpFields {
  /** Physical address of the root table (page aligned). */
  root: bigint;
  /** Walk length. */
  levels: WalkLevels;
  /** Memory type used to access the EPT paging structures (UC or WB are architecturally allowed). */
  memoryType: MemoryType;
  /** Bit 6: accessed/dirty flags for EPT (guest table reads then count as writes). */
  accessDirty: boolean;
}

/** Builds an EPTP: memory type bits 2:0, walk length − 1 bits 5:3, A/D bit 6, root bits 51:12. */
export function encodeEptp(fields: EptpFields, maxPhysAddr = 52): bigint {
  if (fields.levels !== 4 && fields.levels !== 5) throw new RangeError(`EPTP walk length ${String(fields.levels)}: only 4 and 5 exist`);
  if (fields.memoryType !== 'UC' && fields.memoryType !== 'WB') {
    throw new RangeError(`EPTP memory type ${fields.memoryType}: the EPT structures may only be accessed UC or WB`);
  }
  if (fields.root % 4096n !== 0n || fields.root < 0n) throw new RangeError(`EPTP root ${hex(fields.root)} is not page aligned`);
  if (fields.root >= 1n << BigInt(maxPhysAddr)) throw new RangeError(`EPTP root ${hex(fields.root)} is beyond the ${maxPhysAddr}-bit physical-address width`);
  return memoryTypeCode(fields.memoryType) | (BigInt(fields.levels - 1) << 3n) | (fields.accessDirty ? 1n << 6n : 0n) | fields.root;
}

/** Decodes an EPTP; throws naming the first field a CPU would reject. */
export function decodeEptp(eptp: bigint, maxPhysAddr = 52): EptpFields {
  const mt = eptp & 7n;
  const memoryType = memoryTypeName(mt);
  if (memoryType !== 'UC' && memoryType !== 'WB') throw new RangeError(`EPTP ${hex(eptp)}: memory type ${mt} is neither UC (0) nor WB (6)`);
  const walk = Number((eptp >> 3n) & 7n) + 1;
  if (walk !== 4 && walk !== 5) throw new RangeError(`EPTP ${hex(eptp)}: walk length ${walk} is neither 4 nor 5`);
  if (eptp & 0xf80n) throw new RangeError(`EPTP ${hex(eptp)}: reserved bits 11:7 are set`);
  if (eptp >> BigInt(maxPhysAddr)) throw new RangeError(`EPTP ${hex(eptp)}: bits above MAXPHYADDR ${maxPhysAddr} are set`);
  return { root: eptp & ADDRESS_MASK, levels: walk as WalkLevels, memoryType, accessDirty: (eptp & (1n << 6n)) !== 0n };
}

/** Slot VMFUNC(0, 511) selects: the gate context. */
export const GATE_SLOT = 511;
/** Slot the gate writes the sub EPTP into and VMFUNC(0, 1) selects. */
export const SUB_SLOT = 1;
/** Slot the host writes the default (guest's own) EPTP into at activation. */
export const DEFAULT_SLOT = 0;

/** The EPTP list: one page of 512 EPTPs. */
export class EptpList {
  /** The list page; its physical address goes into the VMCS EPTP-list field. */
  readonly page: PhysPage;

  /** Wraps an allocated page (zeroed: every slot empty). */
  constructor(page: PhysPage) {
    this.page = page;
  }

  /** The EPTP in `slot` (0 = empty). */
  get(slot: number): bigint {
    checkSlot(slot);
    return readEntry(this.page.bytes, slot);
  }

  /** Writes `eptp` into `slot`; the value is decoded first so a malformed EPTP cannot be stored. */
  set(slot: number, eptp: bigint): void {
    checkSlot(slot);
    if (eptp !== 0n) decodeEptp(eptp);
    writeEntry(this.page.bytes, slot, eptp);
  }

  /** Empties `slot`. */
  clear(slot: number): void {
    this.set(slot, 0n);
  }
}

function checkSlot(slot: number): void {
  if (!Number.isInteger(slot) || slot < 0 || slot > 511) throw new RangeError(`EPTP list slot ${slot} is outside 0..511 (VMFUNC with ECX ≥ 512 fails)`);
}
