// Typed permission sets at the API surface and their exact bit encodings (Intel SDM vol. 3,
// "Hierarchical paging structures" for guest tables, "EPT translation mechanism" for EPT).

import { hex } from './address';

/** Guest page-table entry bits. */
export const PT = {
  P: 1n << 0n, W: 1n << 1n, U: 1n << 2n, PWT: 1n << 3n, PCD: 1n << 4n, A: 1n << 5n, D: 1n << 6n,
  PS: 1n << 7n, G: 1n << 8n, NX: 1n << 63n,
} as const;

/** EPT entry bits. */
export const EPT = {
  R: 1n << 0n, W: 1n << 1n, X: 1n << 2n, MT_SHIFT: 3n, MT_MASK: 7n << 3n, IPAT: 1n << 6n, PS: 1n << 7n,
  A: 1n << 8n, D: 1n << 9n, XU: 1n << 10n,
} as const;

/** Address bits 12..51 of any entry. */
export const ADDRESS_MASK = ((1n << 52n) - 1n) & ~0xfffn;

/** Memory types an EPT leaf (or an EPTP) may carry. 2, 3 and 7 are reserved. */
export type MemoryType = 'UC' | 'WC' | 'WT' | 'WP' | 'WB';
const MEMORY_TYPE_CODES: Record<MemoryType, bigint> = { UC: 0n, WC: 1n, WT: 4n, WP: 5n, WB: 6n };

/** The 3-bit encoding of a memory type. */
export function memoryTypeCode(type: MemoryType): bigint {
  const code = MEMORY_TYPE_CODES[type];
  if (code === undefined) throw new RangeError(`unknown memory type '${String(type)}' (use UC, WC, WT, WP or WB)`);
  return code;
}

/** The memory type a 3-bit code means, or undefined for the reserved codes 2, 3, 7. */
export function memoryTypeName(code: bigint | number): MemoryType | undefined {
  const c = BigInt(code);
  return (Object.keys(MEMORY_TYPE_CODES) as MemoryType[]).find((k) => MEMORY_TYPE_CODES[k] === c);
}

/** Permissions of a guest page-table leaf (present is implied: a mapping is present). */
export interface PtFlags {
  /** W: writes allowed. */
  writable?: boolean;
  /** U/S: user-mode (CPL3) accesses allowed. */
  user?: boolean;
  /** NX (XD): instruction fetches forbidden. */
  noExecute?: boolean;
  /** PWT. */
  writeThrough?: boolean;
  /** PCD. */
  cacheDisable?: boolean;
  /** G: global translation. */
  global?: boolean;
  /** A, pre-set so the CPU need not write it. */
  accessed?: boolean;
  /** D, pre-set so the CPU need not write it. */
  dirty?: boolean;
}

/** Permissions and memory type of an EPT leaf. */
export interface EptFlags {
  /** R: data reads. */
  read?: boolean;
  /** W: data writes (requires read; W without R is an EPT misconfiguration). */
  write?: boolean;
  /** X: instruction fetches (supervisor-mode fetches when mode-based execute control is on). */
  execute?: boolean;
  /** Bit 10: user-mode fetches under mode-based execute control. */
  userExecute?: boolean;
  /** Leaf memory type; default WB. */
  memoryType?: MemoryType;
  /** IPAT: ignore the guest PAT memory type. */
  ignorePat?: boolean;
}

const PT_KEYS = ['writable', 'user', 'noExecute', 'writeThrough', 'cacheDisable', 'global', 'accessed', 'dirty'];
const EPT_KEYS = ['read', 'write', 'execute', 'userExecute', 'memoryType', 'ignorePat'];

function checkKeys(flags: object, allowed: string[], what: string): void {
  if (flags === null || typeof flags !== 'object') throw new TypeError(`${what} must be an object of flags`);
  for (const key of Object.keys(flags)) {
    if (!allowed.includes(key)) throw new TypeError(`${what}: unknown flag '${key}' (known: ${allowed.join(', ')})`);
    const value = (flags as Record<string, unknown>)[key];
    if (key !== 'memoryType' && value !== undefined && typeof value !== 'boolean') {
      throw new TypeError(`${what}: flag '${key}' must be true or false, got ${JSON.stringify(value)}`);
    }
  }
}

/** Encodes a guest leaf's flags (P set; PS added by the table for large leaves). */
export function encodePtFlags(flags: PtFlags): bigint {
  checkKeys(flags, PT_KEYS, 'page-table flags');
  let bits = PT.P;
  if (flags.writable) bits |= PT.W;
  if (flags.user) bits |= PT.U;
  if (flags.writeThrough) bits |= PT.PWT;
  if (flags.cacheDisable) bits |= PT.PCD;
  if (flags.accessed) bits |= PT.A;
  if (flags.dirty) bits |= PT.D;
  if (flags.global) bits |= PT.G;
  if (flags.noExecute) bits |= PT.NX;
  return bits;
}

/** Decodes the flag bits of a guest leaf entry. */
export function decodePtFlags(entry: bigint): PtFlags {
  return {
    writable: (entry & PT.W) !== 0n, user: (entry & PT.U) !== 0n, noExecute: (entry & PT.NX) !== 0n,
    writeThrough: (entry & PT.PWT) !== 0n, cacheDisable: (entry & PT.PCD) !== 0n, global: (entry & PT.G) !== 0n,
    accessed: (entry & PT.A) !== 0n, dirty: (entry & PT.D) !== 0n,
  };
}

/** Options that say what the (virtual) CPU supports, for EPT flag validation. */
export interface EptCapabilities {
  /** IA32_VMX_EPT_VPID_CAP bit 0: execute-only translations (X without R). Default true. */
  executeOnly?: boolean;
}

/**
 * Encodes an EPT leaf's flags; throws on combinations the CPU treats as a misconfiguration
 * (write without read, execute-only where unsupported) or that map nothing.
 */
export function encodeEptFlags(flags: EptFlags, caps: EptCapabilities = {}): bigint {
  checkKeys(flags, EPT_KEYS, 'EPT flags');
  if (flags.write && !flags.read) {
    throw new RangeError('EPT flags: write without read is an EPT misconfiguration (SDM: bit 1 set with bit 0 clear)');
  }
  if (!flags.read && !flags.write && !flags.execute && !flags.userExecute) {
    throw new RangeError('EPT flags: no read, write, execute or userExecute: such an entry is not present; leave the address unmapped instead');
  }
  if (flags.execute && !flags.read && caps.executeOnly === false) {
    throw new RangeError('EPT flags: execute-only translations are not supported by this CPU (IA32_VMX_EPT_VPID_CAP bit 0 is 0)');
  }
  let bits = 0n;
  if (flags.read) bits |= EPT.R;
  if (flags.write) bits |= EPT.W;
  if (flags.execute) bits |= EPT.X;
  if (flags.userExecute) bits |= EPT.XU;
  bits |= memoryTypeCode(flags.memoryType ?? 'WB') << EPT.MT_SHIFT;
  if (flags.ignorePat) bits |= EPT.IPAT;
  return bits;
}

/** Decodes the flag bits of an EPT leaf entry (reserved memory types decode to undefined). */
export function decodeEptFlags(entry: bigint): EptFlags {
  const memoryType = memoryTypeName((entry & EPT.MT_MASK) >> EPT.MT_SHIFT);
  return {
    read: (entry & EPT.R) !== 0n, write: (entry & EPT.W) !== 0n, execute: (entry & EPT.X) !== 0n,
    userExecute: (entry & EPT.XU) !== 0n, ...(memoryType ? { memoryType } : {}), ignorePat: (entry & EPT.IPAT) !== 0n,
  };
}

/** Short text form of PT flags, e.g. "P W U NX". */
export function describePtBits(entry: bigint): string {
  const parts = ['P'];
  if (entry & PT.W) parts.push('W');
  if (entry & PT.U) parts.push('U');
  if (entry & PT.NX) parts.push('NX');
  if (entry & PT.PS) parts.push('PS');
  return (entry & PT.P) ? parts.join(' ') : 'not present';
}

/** Short text form of EPT bits, e.g. "R W X XU WB". */
export function describeEptBits(entry: bigint, leaf: boolean): string {
  const parts: string[] = [];
  if (entry & EPT.R) parts.push('R');
  if (entry & EPT.W) parts.push('W');
  if (entry & EPT.X) parts.push('X');
  if (entry & EPT.XU) parts.push('XU');
  if (leaf) parts.push(memoryTypeName((entry & EPT.MT_MASK) >> EPT.MT_SHIFT) ?? `MT?${hex((entry & EPT.MT_MASK) >> EPT.MT_SHIFT)}`);
  return parts.length ? parts.join(' ') : 'not present';
}
