// Builds 4-level identity page tables (virtual = physical) in guest memory: 2 MiB pages,
// except the first 2 MiB, which use a 4 KiB page table so that page 0 can stay not
// present (a NULL dereference then faults instead of reading the GDT's neighbour).
import { PAGE_SIZE, PAGE_TABLES_END, PAGE_TABLES_GPA } from './layout';

/** Page-table entry bits (Intel SDM vol. 3, 4.5). */
export const Pte = {
  present: 1n << 0n,
  writable: 1n << 1n,
  user: 1n << 2n,
  /** In a PDE/PDPTE: maps a large page instead of pointing to a table. */
  pageSize: 1n << 7n,
  noExecute: 1n << 63n,
} as const;

/** 2 MiB, the size of a page mapped by a PD entry with PS set. */
export const LARGE_PAGE_SIZE = 0x200000;
const GIB = 0x40000000;
/** The most one PML4 entry (one PDPT) can map: 512 GiB. */
export const MAX_IDENTITY_MAP = 512 * GIB;

/** What to map and where to put the tables. */
export interface IdentityMapOptions {
  /** Map virtual [0, bytes) to the same physical addresses; rounded up to 2 MiB. */
  bytes: number;
  /** Where the tables go (page aligned); default PAGE_TABLES_GPA. */
  tablesGpa?: number;
  /** End (exclusive) of the space the tables may use; default PAGE_TABLES_END. */
  tablesEnd?: number;
  /** Leave virtual page 0 not present (default true). */
  nullGuard?: boolean;
  /** Set U/S on every entry, so CPL 3 may access the pages (default false). */
  user?: boolean;
}

/** The built tables. */
export interface IdentityMap {
  /** Value for CR3: the PML4's guest-physical address. */
  cr3: number;
  /** Guest-physical pages the tables occupy, starting at cr3. */
  pages: number;
  /** Bytes mapped (the request rounded up to 2 MiB). */
  mappedBytes: number;
}

/**
 * Writes identity page tables for [0, options.bytes) into `memory` (a view of guest
 * memory starting at guest-physical 0) and returns CR3. Every leaf is present and
 * writable (user if asked); no leaf has NX. Throws if the tables do not fit.
 */
export function buildIdentityMap(memory: Uint8Array, options: IdentityMapOptions): IdentityMap {
  const tablesGpa = options.tablesGpa ?? PAGE_TABLES_GPA;
  const tablesEnd = options.tablesEnd ?? PAGE_TABLES_END;
  const nullGuard = options.nullGuard ?? true;
  if (!Number.isSafeInteger(options.bytes) || options.bytes <= 0) {
    throw new RangeError(`identity map size must be a positive integer, got ${options.bytes}`);
  }
  if (options.bytes > MAX_IDENTITY_MAP) {
    throw new RangeError(`identity map of ${options.bytes} bytes exceeds the 512 GiB one PDPT can map`);
  }
  if (tablesGpa % PAGE_SIZE !== 0) {
    throw new RangeError(`page tables address 0x${tablesGpa.toString(16)} is not 4 KiB aligned`);
  }
  const mappedBytes = Math.ceil(options.bytes / LARGE_PAGE_SIZE) * LARGE_PAGE_SIZE;
  const pds = Math.ceil(mappedBytes / GIB);
  const pages = 2 + pds + (nullGuard ? 1 : 0);
  const end = tablesGpa + pages * PAGE_SIZE;
  if (end > tablesEnd) {
    throw new RangeError(`identity map of ${mappedBytes} bytes needs ${pages} table pages at 0x${tablesGpa.toString(16)}, ` +
      `which would end at 0x${end.toString(16)}, past the limit 0x${tablesEnd.toString(16)}`);
  }
  if (end > memory.byteLength) {
    throw new RangeError(`page tables would end at 0x${end.toString(16)}, outside guest memory (${memory.byteLength} bytes)`);
  }
  // Safe: the range was checked against memory.byteLength just above.
  memory.fill(0, tablesGpa, end);
  const view = new DataView(memory.buffer, memory.byteOffset, memory.byteLength);
  const flags = Pte.present | Pte.writable | (options.user ? Pte.user : 0n);
  const pml4 = tablesGpa;
  const pdpt = pml4 + PAGE_SIZE;
  const pd0 = pdpt + PAGE_SIZE;
  const pt0 = pd0 + pds * PAGE_SIZE;
  const put = (gpa: number, value: bigint): void => view.setBigUint64(gpa, value, true);

  put(pml4, BigInt(pdpt) | flags);
  for (let i = 0; i < pds; i++) put(pdpt + 8 * i, BigInt(pd0 + i * PAGE_SIZE) | flags);
  for (let i = 0; i < mappedBytes / LARGE_PAGE_SIZE; i++) {
    put(pd0 + 8 * i, BigInt(i) * BigInt(LARGE_PAGE_SIZE) | flags | Pte.pageSize);
  }
  if (nullGuard) {
    put(pd0, BigInt(pt0) | flags);
    for (let i = 1; i < 512; i++) put(pt0 + 8 * i, BigInt(i * PAGE_SIZE) | flags);
  }
  return { cr3: pml4, pages, mappedBytes };
}
