// Encodes the x86-64 system structures the host writes into guest memory: GDT segment
// and TSS descriptors, the 64-bit TSS and IDT gates (Intel SDM vol. 3, 3.4.5, 7.7, 6.14).

/** A 64-bit code segment descriptor (L=1, DPL 0, execute/read, accessed). */
export function codeSegment64(): bigint {
  // access byte: P=1, DPL=0, S=1, type=0xB (code, execute/read, accessed) → 0x9B
  // flags nibble: G=1, L=1, D=0 → 0xA; limit 0xFFFFF (ignored in 64-bit mode)
  return segmentDescriptor(0, 0xfffff, 0x9b, 0xa);
}

/** A flat writable data segment descriptor (DPL 0, accessed, 4 GiB limit). */
export function dataSegment(): bigint {
  // access 0x93: P=1, DPL=0, S=1, type=3 (data, read/write, accessed); flags G=1, D/B=1
  return segmentDescriptor(0, 0xfffff, 0x93, 0xc);
}

/** An 8-byte segment descriptor from base, 20-bit limit, access byte and flags nibble. */
export function segmentDescriptor(base: number, limit: number, access: number, flags: number): bigint {
  const b = BigInt(base >>> 0);
  const l = BigInt(limit & 0xfffff);
  return (l & 0xffffn)
    | ((b & 0xffffffn) << 16n)
    | (BigInt(access & 0xff) << 40n)
    | ((l >> 16n) << 48n)
    | (BigInt(flags & 0xf) << 52n)
    | ((b >> 24n) << 56n);
}

/** TSS descriptor type in the GDT: 64-bit TSS, busy (it is loaded into TR by the host). */
export const TSS_TYPE_BUSY = 0xb;
/** Bytes in a 64-bit TSS. */
export const TSS_SIZE = 104;

/** A 16-byte 64-bit TSS descriptor, as two little-endian quadwords [low, high]. */
export function tssDescriptor(base: number, limit = TSS_SIZE - 1): [bigint, bigint] {
  const low = segmentDescriptor(base & 0xffffffff, limit, 0x80 | TSS_TYPE_BUSY, 0);
  const high = BigInt(Math.floor(base / 2 ** 32));
  return [low, high];
}

/** The stacks a TSS names. */
export interface TssStacks {
  /** RSP0: stack for a privilege change to CPL 0. */
  rsp0: number;
  /** IST1..IST7 (index 0 is IST1); missing entries are 0 (unused). */
  ist: number[];
}

/** Writes a 64-bit TSS at `offset` of `view` (no I/O bitmap: its base is past the limit). */
export function writeTss(view: DataView, offset: number, stacks: TssStacks): void {
  if (stacks.ist.length > 7) throw new RangeError(`a TSS has 7 IST slots, got ${stacks.ist.length}`);
  for (let i = 0; i < TSS_SIZE; i++) view.setUint8(offset + i, 0);
  view.setBigUint64(offset + 4, BigInt(stacks.rsp0), true);
  stacks.ist.forEach((rsp, i) => view.setBigUint64(offset + 0x24 + 8 * i, BigInt(rsp), true));
  view.setUint16(offset + 0x66, TSS_SIZE, true);
}

/** IDT gate types. */
export const GateType = { interrupt: 0xe, trap: 0xf } as const;

/** One 64-bit IDT gate. */
export interface IdtGate {
  handler: number;
  selector: number;
  /** IST index 1..7, or 0 to stay on the current stack. */
  ist: number;
  type: number;
  dpl: number;
}

/** A 16-byte IDT gate as two little-endian quadwords [low, high]. */
export function idtGate(gate: IdtGate): [bigint, bigint] {
  const h = BigInt(gate.handler);
  const low = (h & 0xffffn)
    | (BigInt(gate.selector & 0xffff) << 16n)
    | (BigInt(gate.ist & 7) << 32n)
    | (BigInt(0x80 | ((gate.dpl & 3) << 5) | (gate.type & 0xf)) << 40n)
    | (((h >> 16n) & 0xffffn) << 48n);
  const high = (h >> 32n) & 0xffffffffn;
  return [low, high];
}
