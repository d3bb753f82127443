// Address arithmetic shared by guest page tables and EPTs: both are radix trees of
// 512-entry tables indexed by 9 bits per level above the 12-bit page offset.

/** Paging-structure levels: 1 = page table (4 KiB leaves) ... 5 = PML5. */
export type Level = 1 | 2 | 3 | 4 | 5;
/** Levels at which a leaf may sit: 4 KiB, 2 MiB, 1 GiB. PS is reserved above level 3. */
export type LeafLevel = 1 | 2 | 3;
/** Number of levels a walk uses. */
export type WalkLevels = 4 | 5;

/** Formats an address or entry as 0x-prefixed lower-case hex. */
export function hex(value: bigint | number): string {
  const v = typeof value === 'number' ? BigInt(value) : value;
  return (v < 0n ? '-0x' + (-v).toString(16) : '0x' + v.toString(16));
}

// Precomputed per level (index 0 unused, 6 = one past PML5): the hot paths index these
// instead of converting numbers to bigints on every call.
const SHIFTS = [0, 1, 2, 3, 4, 5, 6].map((l) => BigInt(12 + 9 * (l - 1)));
const SIZES = SHIFTS.map((s) => 1n << s);

/** Bit position of the lowest address bit a level-`level` entry translates. */
export function levelShift(level: number): bigint {
  return SHIFTS[level] ?? BigInt(12 + 9 * (level - 1));
}

/** Bytes covered by one entry at `level` (4 KiB at 1, 2 MiB at 2, 1 GiB at 3, ...). */
export function levelSize(level: number): bigint {
  return SIZES[level] ?? 1n << levelShift(level);
}

/** The 9-bit table index `address` selects at `level`. */
export function tableIndex(address: bigint, level: number): number {
  return Number((address >> SHIFTS[level]!) & 511n);
}

/** Human name of a leaf size. */
export function leafSizeName(level: number): string {
  return level === 1 ? '4 KiB' : level === 2 ? '2 MiB' : level === 3 ? '1 GiB' : `level-${level}`;
}

/** Checks that `level` is a valid leaf level and returns it typed; throws naming the problem otherwise. */
export function checkLeafLevel(level: unknown, what = 'level'): LeafLevel {
  if (level === 1 || level === 2 || level === 3) return level;
  if (level === 4 || level === 5) {
    throw new RangeError(`${what} ${level}: no leaf can sit at level ${level} (PS is reserved in PML4/PML5 entries); use 1 (4 KiB), 2 (2 MiB) or 3 (1 GiB)`);
  }
  throw new RangeError(`${what} ${String(level)} is not a paging level; use 1 (4 KiB), 2 (2 MiB) or 3 (1 GiB)`);
}

/** Checks that `levels` is 4 or 5 and returns it typed. */
export function checkWalkLevels(levels: unknown, what = 'levels'): WalkLevels {
  if (levels === 4 || levels === 5) return levels;
  throw new RangeError(`${what} ${String(levels)}: only 4- and 5-level paging exist`);
}

/** Number of linear-address bits a guest paging mode translates: 48 for 4-level, 57 for 5-level (LA57). */
export function linearBits(levels: WalkLevels): number {
  return 12 + 9 * levels;
}

/** Mask of the 64-bit address space. */
export const U64 = (1n << 64n) - 1n;

/**
 * True if `va` is canonical for the given width: bits 63..width-1 all equal bit width-1.
 */
export function isCanonical(va: bigint, bits: number): boolean {
  if (va < 0n || va > U64) return false;
  const top = va >> BigInt(bits - 1);
  return top === 0n || top === (1n << BigInt(65 - bits)) - 1n;
}

/** Throws unless `va` is a canonical 64-bit value for `bits`-bit linear addresses. */
export function checkCanonical(va: bigint, bits: number, what: string): void {
  if (va < 0n || va > U64) throw new RangeError(`${what} ${hex(va)} is not a 64-bit address`);
  if (!isCanonical(va, bits)) {
    throw new RangeError(`${what} ${hex(va)} is not canonical for ${bits}-bit linear addresses (bits 63..${bits - 1} must all equal bit ${bits - 1})`);
  }
}

/** Throws unless `address` is a multiple of `alignment`. */
export function checkAligned(address: bigint, alignment: bigint, what: string): void {
  if (address % alignment !== 0n) {
    throw new RangeError(`${what} ${hex(address)} is not aligned to ${hex(alignment)}`);
  }
}

/** The lowest canonical address strictly above the lower half, for `bits`-bit linear addresses. */
export function lowerHalfEnd(bits: number): bigint {
  return 1n << BigInt(bits - 1);
}

/** The first canonical address of the upper half for `bits`-bit linear addresses. */
export function upperHalfStart(bits: number): bigint {
  return U64 + 1n - (1n << BigInt(bits - 1));
}

/**
 * True if [start, start+length) lies entirely within one canonical half (no wrap past 2^64,
 * no crossing into the non-canonical hole).
 */
export function rangeIsCanonical(start: bigint, length: bigint, bits: number): boolean {
  if (length <= 0n) return isCanonical(start, bits);
  const last = start + length - 1n;
  if (last > U64) return false;
  if (!isCanonical(start, bits) || !isCanonical(last, bits)) return false;
  // Both ends canonical: they must be in the same half.
  return (start < lowerHalfEnd(bits)) === (last < lowerHalfEnd(bits));
}

/**
 * MAXPHYADDR as CPUID leaf 0x80000008 reports it: EAX bits 7:0 (physical-address width).
 * Throws for widths no x86-64 CPU reports (below 32 or above 52).
 */
export function maxPhysAddrFromCpuid(eax: number): number {
  const bits = eax & 0xff;
  if (bits < 32 || bits > 52) throw new RangeError(`CPUID 0x80000008 EAX ${hex(eax)}: physical-address width ${bits} is outside 32..52`);
  return bits;
}
