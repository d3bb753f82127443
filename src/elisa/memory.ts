// Physical memory as the ELISA structures see it: 4 KiB pages, each a byte view plus the
// physical address that page-table, EPT and EPTP entries will carry. The builders never
// assume where memory comes from; an allocator may hand out pages of an arena of our own
// (emulated backend: the arena is KVM guest memory), host-physical pages resolved by a
// hypercall (hardware backend) or pagemap-resolved pages (in-VM mode).

/** Bytes in one page. */
export const PAGE_SIZE = 4096;
/** PAGE_SIZE as a bigint, for address arithmetic. */
export const PAGE_SIZE_N = 4096n;

/** One 4 KiB page: its bytes and the physical address the hardware structures use for it. */
export interface PhysPage {
  /** Page-aligned physical address (host-physical from the EPT's point of view). */
  readonly address: bigint;
  /** Exactly PAGE_SIZE bytes; writes are what the hardware will see. */
  readonly bytes: Uint8Array;
}

/** Read access to physical memory, page by page: what a software walker needs. */
export interface PhysicalMemory {
  /** The bytes of the page at `address` (page-aligned), or undefined when this memory does not hold it. */
  pageAt(address: bigint): Uint8Array | undefined;
}

/** Allocation counters: `allocated - freed === inUse` always; a balanced teardown leaves inUse at its start value. */
export interface AllocatorStats {
  readonly allocated: number;
  readonly freed: number;
  readonly inUse: number;
}

/** Hands out zeroed 4 KiB pages and takes them back. */
export interface PageAllocator extends PhysicalMemory {
  /** A zero-filled page; throws when memory is exhausted. */
  allocate(): PhysPage;
  /** Returns a page obtained from allocate(); freeing twice or freeing a foreign page throws. */
  free(page: PhysPage): void;
  /** Counters so tests can check that nothing leaks. */
  stats(): AllocatorStats;
}

/** Thrown when an allocator cannot satisfy a request. */
export class OutOfMemoryError extends Error {
  override name = 'OutOfMemoryError';
}

/**
 * A contiguous arena of pages in one ArrayBuffer, placed at a chosen physical base address.
 * The emulated backend registers the same buffer as KVM guest memory at that base, so the
 * addresses written into tables are the addresses KVM resolves.
 */
export class ArenaAllocator implements PageAllocator {
  /** The arena's backing store; page i lives at byte offset i * PAGE_SIZE. */
  readonly buffer: ArrayBuffer;
  /** Physical address of page 0. */
  readonly base: bigint;
  /** Number of pages in the arena. */
  readonly pageCount: number;
  private readonly freeList: number[] = [];
  private readonly inUseFlags: Uint8Array;
  private allocatedCount = 0;
  private freedCount = 0;
  private next = 0;
  /** A buffer we created is zero-filled by the engine; one handed to us may hold anything. */
  private readonly freshIsZero: boolean;

  /**
   * @param pageCount pages in the arena (the ArrayBuffer is pageCount * 4 KiB)
   * @param base physical address of the first page; must be page aligned
   * @param buffer optional existing buffer (e.g. one already registered with KVM)
   */
  constructor(pageCount: number, base: bigint, buffer?: ArrayBuffer) {
    if (!Number.isInteger(pageCount) || pageCount <= 0) throw new RangeError(`arena page count must be a positive integer, got ${pageCount}`);
    if (base < 0n || base % PAGE_SIZE_N !== 0n) throw new RangeError(`arena base 0x${base.toString(16)} is not a page-aligned physical address`);
    if (buffer && buffer.byteLength < pageCount * PAGE_SIZE) {
      throw new RangeError(`arena buffer holds ${buffer.byteLength} bytes, ${pageCount} pages need ${pageCount * PAGE_SIZE}`);
    }
    this.buffer = buffer ?? new ArrayBuffer(pageCount * PAGE_SIZE);
    this.base = base;
    this.pageCount = pageCount;
    this.inUseFlags = new Uint8Array(pageCount);
    this.freshIsZero = buffer === undefined;
  }

  /** Physical address one past the arena's last byte. */
  get end(): bigint {
    return this.base + BigInt(this.pageCount) * PAGE_SIZE_N;
  }

  allocate(): PhysPage {
    let index: number;
    let dirty = true;
    if (this.freeList.length > 0) index = this.freeList.pop()!;
    else if (this.next < this.pageCount) { index = this.next++; dirty = !this.freshIsZero; }
    else throw new OutOfMemoryError(`arena at 0x${this.base.toString(16)} is full: all ${this.pageCount} pages are in use`);
    this.inUseFlags[index] = 1;
    this.allocatedCount++;
    const bytes = new Uint8Array(this.buffer, index * PAGE_SIZE, PAGE_SIZE);
    if (dirty) bytes.fill(0);
    return { address: this.base + BigInt(index) * PAGE_SIZE_N, bytes };
  }

  free(page: PhysPage): void {
    const index = this.indexOf(page.address);
    if (index === undefined) throw new RangeError(`page 0x${page.address.toString(16)} does not belong to this arena`);
    if (!this.inUseFlags[index]) throw new Error(`page 0x${page.address.toString(16)} freed twice`);
    this.inUseFlags[index] = 0;
    this.freedCount++;
    this.freeList.push(index);
  }

  pageAt(address: bigint): Uint8Array | undefined {
    const index = this.indexOf(address);
    if (index === undefined) return undefined;
    return new Uint8Array(this.buffer, index * PAGE_SIZE, PAGE_SIZE);
  }

  stats(): AllocatorStats {
    return { allocated: this.allocatedCount, freed: this.freedCount, inUse: this.allocatedCount - this.freedCount };
  }

  /** True if the page at `address` is currently handed out. */
  isAllocated(address: bigint): boolean {
    const index = this.indexOf(address);
    return index !== undefined && this.inUseFlags[index] === 1;
  }

  private indexOf(address: bigint): number | undefined {
    if (address % PAGE_SIZE_N !== 0n || address < this.base || address >= this.end) return undefined;
    return Number((address - this.base) / PAGE_SIZE_N);
  }
}

/** Reads one little-endian 64-bit entry of a table page. */
export function readEntry(bytes: Uint8Array, index: number): bigint {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getBigUint64(index * 8, true);
}

/** Writes one little-endian 64-bit entry of a table page. */
export function writeEntry(bytes: Uint8Array, index: number, value: bigint): void {
  new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).setBigUint64(index * 8, value, true);
}
