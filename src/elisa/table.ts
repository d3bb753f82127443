// The radix tree shared by guest page tables and EPTs: 512-entry tables, 9 index bits per
// level, leaves at levels 1..3 (PS=bit 7 marks a large leaf in both formats), address in
// bits 12..51. What differs (presence test, table-entry permissions, names) is a TableKind.

import {
  checkAligned, checkLeafLevel, hex, leafSizeName, levelSize, tableIndex, type LeafLevel, type WalkLevels,
} from './address';
import { ADDRESS_MASK } from './flags';
import { PAGE_SIZE_N, type PageAllocator, type PhysPage } from './memory';

const PS = 1n << 7n;

/** What distinguishes one table format from the other. */
export interface TableKind {
  /** "page table" or "EPT", for messages. */
  readonly name: string;
  /** What the tree translates from and to, for messages ("GVA"/"GPA", "GPA"/"HPA"). */
  readonly inputName: string;
  readonly outputName: string;
  /** Bits of a non-leaf entry besides the address (the most permissive; leaves decide). */
  readonly tableBits: bigint;
  /** Bits the CPU itself sets (accessed/dirty): ignored when comparing entries. */
  readonly hardwareBits: bigint;
  /** Whether an entry is present. */
  present(entry: bigint): boolean;
  /** Text form of an entry's flags, for messages. */
  describe(entry: bigint, leaf: boolean): string;
}

/** Thrown when a mapping would change an existing translation and `replace` was not given. */
export class MappingConflictError extends Error {
  override name = 'MappingConflictError';
}

/** Options common to both table formats. */
export interface TableOptions {
  /** Paging levels (4 or 5). */
  levels: WalkLevels;
  /** Physical-address width (MAXPHYADDR): outputs must be below 2^maxPhysAddr. Default 52. */
  maxPhysAddr?: number;
  /**
   * The address by which table entries (and CR3/EPTP) refer to a newly allocated table page.
   * Default: its physical address. A guest page table placed at other GPAs passes a function
   * handing out those GPAs (called once per page, at allocation).
   */
  tableAddress?: (page: PhysPage) => bigint;
}

/** The translation a tree currently gives one input address (structure only, no permission checks). */
export type Lookup =
  | { mapped: true; level: LeafLevel; entry: bigint; output: bigint; leafBase: bigint }
  | { mapped: false; level: number };

interface Node { page: PhysPage; view: DataView; address: bigint }

/** A radix tree of tables in allocator pages. Subclasses add typed flags and input validation. */
export class RadixTable {
  /** Paging levels. */
  readonly levels: WalkLevels;
  /** Physical-address width outputs must fit. */
  readonly maxPhysAddr: number;
  /** The root table page. */
  readonly root: PhysPage;
  /** The address entries, CR3 or the EPTP use for the root (its physical address unless tableAddress says otherwise). */
  readonly rootAddress: bigint;
  protected readonly kind: TableKind;
  protected readonly allocator: PageAllocator;
  private readonly nodes = new Map<bigint, Node>();
  private aptEntries: bigint[] | undefined;
  private readonly aptPages: PhysPage[] = [];
  private destroyed = false;
  private readonly tableAddress: (page: PhysPage) => bigint;

  /** Allocates the root table. */
  constructor(allocator: PageAllocator, kind: TableKind, options: TableOptions) {
    if (options.levels !== 4 && options.levels !== 5) throw new RangeError(`${kind.name} levels ${String(options.levels)}: only 4- and 5-level walks exist`);
    const maxPhysAddr = options.maxPhysAddr ?? 52;
    if (!Number.isInteger(maxPhysAddr) || maxPhysAddr < 32 || maxPhysAddr > 52) {
      throw new RangeError(`MAXPHYADDR ${maxPhysAddr} is outside 32..52`);
    }
    this.levels = options.levels;
    this.maxPhysAddr = maxPhysAddr;
    this.kind = kind;
    this.allocator = allocator;
    this.tableAddress = options.tableAddress ?? ((page) => page.address);
    const root = this.newNode(undefined);
    this.root = root.page;
    this.rootAddress = root.address;
  }

  /** Every table page of the tree (root first), including APT pages. */
  tablePages(): PhysPage[] {
    return [...[...this.nodes.values()].map((n) => n.page), ...this.aptPages];
  }

  /** Every table page with the address entries use for it (APT pages included). */
  tableAddresses(): { page: PhysPage; address: bigint }[] {
    return [...[...this.nodes.values()].map((n) => ({ page: n.page, address: n.address })),
      ...this.aptPages.map((page) => ({ page, address: page.address }))];
  }

  /** Number of table pages (including APT pages). */
  get tablePageCount(): number {
    return this.nodes.size + this.aptPages.length;
  }

  /** Returns every table page to the allocator. The tree is unusable afterwards. */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    for (const node of this.nodes.values()) this.allocator.free(node.page);
    for (const page of this.aptPages) this.allocator.free(page);
    this.nodes.clear();
    this.aptPages.length = 0;
  }

  /** The translation the tree gives `input` (structure only). */
  lookup(input: bigint): Lookup {
    let node = this.nodes.get(this.rootAddress)!;
    for (let level = this.levels as number; level >= 1; level--) {
      const entry = node.view.getBigUint64(tableIndex(input, level) * 8, true);
      if (this.isUnmapped(entry, level)) return { mapped: false, level };
      if (level === 1 || (entry & PS)) {
        const size = levelSize(level);
        const leafBase = input & ~(size - 1n) & ((1n << 64n) - 1n);
        const base = entry & ADDRESS_MASK & ~(size - 1n);
        return { mapped: true, level: level as LeafLevel, entry, output: base + (input & (size - 1n)), leafBase };
      }
      node = this.child(entry);
    }
    throw new Error('unreachable');
  }

  /**
   * Installs a leaf `input → output` at `level` with `leafBits` (flags without address/PS).
   * Splits a larger leaf that covers `input` (keeping every translation it gave); refuses to
   * change an existing translation unless `replace`. Mapping the same translation again is a no-op.
   */
  protected mapRaw(input: bigint, output: bigint, level: LeafLevel, leafBits: bigint, replace: boolean): void {
    if (this.destroyed) throw new Error(`${this.kind.name} was destroyed`);
    checkLeafLevel(level);
    const size = levelSize(level);
    checkAligned(input, size, `${this.kind.inputName} of a ${leafSizeName(level)} mapping`);
    checkAligned(output, size, `${this.kind.outputName} of a ${leafSizeName(level)} mapping`);
    if (output < 0n || output + size > 1n << BigInt(this.maxPhysAddr)) {
      throw new RangeError(`${this.kind.outputName} ${hex(output)} (+${leafSizeName(level)}) is beyond the ${this.maxPhysAddr}-bit physical-address width`);
    }
    const wanted = this.leafEntry(output, level, leafBits);

    // Check first, mutate second: a refused mapping leaves the tree untouched.
    let node = this.nodes.get(this.rootAddress)!;
    for (let lvl = this.levels as number; lvl >= level; lvl--) {
      const entry = node.view.getBigUint64(tableIndex(input, lvl) * 8, true);
      if (this.isUnmapped(entry, lvl)) break;
      const isLeaf = lvl === 1 || (entry & PS) !== 0n;
      if (isLeaf) {
        // The existing leaf covers our range (lvl >= level): what does it give our range now?
        const existingSize = levelSize(lvl);
        const base = entry & ADDRESS_MASK & ~(existingSize - 1n);
        const current = this.leafEntry(base + (input & (existingSize - 1n)), level, entry & ~ADDRESS_MASK & ~PS);
        if ((current & ~this.kind.hardwareBits) === (wanted & ~this.kind.hardwareBits)) return; // already exactly this translation
        if (!replace) this.conflict(input, level, lvl, entry);
        break;
      }
      if (lvl === level) {
        // A table sits where the leaf goes: conflicting only if something below is mapped.
        const found = this.firstLeafBelow(this.child(entry), lvl - 1, input);
        if (found && !replace) this.conflict(input, level, found.level, found.entry, found.input);
        break;
      }
      node = this.child(entry);
    }

    node = this.nodes.get(this.rootAddress)!;
    for (let lvl = this.levels as number; lvl > level; lvl--) {
      const index = tableIndex(input, lvl) * 8;
      const entry = node.view.getBigUint64(index, true);
      if (this.isUnmapped(entry, lvl)) {
        const fresh = this.newNode(lvl - 1);
        node.view.setBigUint64(index, fresh.address | this.kind.tableBits, true);
        node = fresh;
      } else if (entry & PS) {
        node.view.setBigUint64(index, this.split(entry, lvl).address | this.kind.tableBits, true);
        node = this.child(node.view.getBigUint64(index, true));
      } else {
        node = this.child(entry);
      }
    }
    const index = tableIndex(input, level) * 8;
    const old = node.view.getBigUint64(index, true);
    if (level > 1 && !this.isUnmapped(old, level) && !(old & PS)) this.freeSubtree(this.child(old), level - 1);
    node.view.setBigUint64(index, wanted, true);
  }

  /**
   * APT: makes every unmapped input resolve to the 4 KiB page at `target`. A chain of
   * levels-1 dedicated tables is built whose every entry leads one level down and whose
   * level-1 entries all map `target`; every empty entry of the tree is pointed into it.
   * Later mappings treat chain entries as empty. Returns the fill time in milliseconds.
   */
  protected fillAptRaw(target: bigint, leafBits: bigint): number {
    if (this.aptEntries) throw new Error(`${this.kind.name} already has an APT`);
    const started = process.hrtime.bigint();
    const entries: bigint[] = new Array(this.levels + 1).fill(0n);
    entries[1] = this.leafEntry(target, 1, leafBits);
    let below: PhysPage | undefined;
    for (let level = 1; level < this.levels; level++) {
      const page = this.allocator.allocate();
      this.aptPages.push(page);
      const view = new DataView(page.bytes.buffer, page.bytes.byteOffset, page.bytes.byteLength);
      const fill = level === 1 ? entries[1]! : below!.address | this.kind.tableBits;
      entries[level] = fill;
      for (let i = 0; i < 512; i++) view.setBigUint64(i * 8, fill, true);
      below = page;
    }
    entries[this.levels] = below!.address | this.kind.tableBits;
    this.aptEntries = entries;
    this.fillEmpty(this.nodes.get(this.rootAddress)!, this.levels);
    return Number(process.hrtime.bigint() - started) / 1e6;
  }

  /** Addresses of the APT chain pages (empty before fillApt). */
  aptPageAddresses(): bigint[] {
    return this.aptPages.map((p) => p.address);
  }

  /** True if an entry maps nothing of its own (not present, or an APT chain entry). */
  protected isUnmapped(entry: bigint, level: number): boolean {
    return !this.kind.present(entry) || (this.aptEntries !== undefined && (entry & ~this.kind.hardwareBits) === this.aptEntries[level]);
  }

  /** Visits every leaf in input-address order (inputs are sign-extension-free tree indexes). */
  forEachLeaf(visit: (input: bigint, level: LeafLevel, entry: bigint) => void): void {
    const walk = (node: Node, level: number, prefix: bigint): void => {
      for (let i = 0; i < 512; i++) {
        const entry = node.view.getBigUint64(i * 8, true);
        if (this.isUnmapped(entry, level)) continue;
        const input = prefix | (BigInt(i) << BigInt(12 + 9 * (level - 1)));
        if (level === 1 || (entry & PS)) visit(input, level as LeafLevel, entry);
        else walk(this.child(entry), level - 1, input);
      }
    };
    walk(this.nodes.get(this.rootAddress)!, this.levels, 0n);
  }

  private leafEntry(output: bigint, level: number, leafBits: bigint): bigint {
    return output | leafBits | (level > 1 ? PS : 0n);
  }

  /** How an input address is shown in messages (the guest table shows canonical GVAs). */
  protected showInput(input: bigint): string {
    return hex(input);
  }

  private conflict(input: bigint, level: number, existingLevel: number, entry: bigint, at?: bigint): never {
    const size = levelSize(existingLevel);
    const where = at ?? input;
    const base = where & ~(size - 1n);
    throw new MappingConflictError(
      `${this.kind.name}: cannot map ${this.kind.inputName} ${this.showInput(input)} (${leafSizeName(level)}): ` +
      `${this.kind.inputName} ${this.showInput(base)} is already mapped (${leafSizeName(existingLevel)} → ${this.kind.outputName} ` +
      `${hex(entry & ADDRESS_MASK & ~(size - 1n))}, ${this.kind.describe(entry, true)}); pass replace: true to remap`);
  }

  private newNode(level: number | undefined): Node {
    const page = this.allocator.allocate();
    const view = new DataView(page.bytes.buffer, page.bytes.byteOffset, page.bytes.byteLength);
    let address: bigint;
    try {
      address = this.tableAddress(page);
    } catch (err) {
      this.allocator.free(page);
      throw err;
    }
    const node = { page, view, address };
    this.nodes.set(address, node);
    if (level !== undefined && this.aptEntries) {
      const fill = this.aptEntries[level]!;
      for (let i = 0; i < 512; i++) view.setBigUint64(i * 8, fill, true);
    }
    return node;
  }

  private child(entry: bigint): Node {
    const node = this.nodes.get(entry & ADDRESS_MASK);
    if (!node) throw new Error(`${this.kind.name} entry ${hex(entry)} points to a table this tree does not own`);
    return node;
  }

  /** Replaces a large leaf at `level` by a table of `level-1` entries giving the same translations. */
  private split(entry: bigint, level: number): Node {
    const node = this.newNode(undefined);
    const childSize = levelSize(level - 1);
    const base = entry & ADDRESS_MASK & ~(levelSize(level) - 1n);
    const bits = (entry & ~ADDRESS_MASK & ~PS) | (level - 1 > 1 ? PS : 0n);
    for (let i = 0; i < 512; i++) node.view.setBigUint64(i * 8, (base + BigInt(i) * childSize) | bits, true);
    return node;
  }

  private firstLeafBelow(node: Node, level: number, prefix: bigint): { level: number; entry: bigint; input: bigint } | undefined {
    const above = levelSize(level + 1);
    const start = prefix & ~(above - 1n);
    for (let i = 0; i < 512; i++) {
      const entry = node.view.getBigUint64(i * 8, true);
      if (this.isUnmapped(entry, level)) continue;
      const input = start + BigInt(i) * levelSize(level);
      if (level === 1 || (entry & PS)) return { level, entry, input };
      const found = this.firstLeafBelow(this.child(entry), level - 1, input);
      if (found) return found;
    }
    return undefined;
  }

  private freeSubtree(node: Node, level: number): void {
    if (level > 1) {
      for (let i = 0; i < 512; i++) {
        const entry = node.view.getBigUint64(i * 8, true);
        if (!this.isUnmapped(entry, level) && !(entry & PS)) this.freeSubtree(this.child(entry), level - 1);
      }
    }
    this.nodes.delete(node.address);
    this.allocator.free(node.page);
  }

  private fillEmpty(node: Node, level: number): void {
    const apt = this.aptEntries!;
    for (let i = 0; i < 512; i++) {
      const entry = node.view.getBigUint64(i * 8, true);
      if (!this.kind.present(entry)) node.view.setBigUint64(i * 8, apt[level]!, true);
      else if (level > 1 && !(entry & PS) && (entry & ~this.kind.hardwareBits) !== apt[level]) this.fillEmpty(this.child(entry), level - 1);
    }
  }
}

/** Pages covered by a leaf of `level`. */
export function pagesPerLeaf(level: LeafLevel): bigint {
  return levelSize(level) / PAGE_SIZE_N;
}
