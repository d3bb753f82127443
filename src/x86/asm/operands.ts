/**
 * Memory operands and labels for the x86-64 encoder.
 *
 * Memory operands are plain data: `[base + index*scale + disp]` or `[rip + target]`,
 * where a RIP-relative target is either a label of the same assembler or an absolute
 * address (resolved against the assembler's origin). The operand size is part of the
 * operand (`qword(...)` / `dword(...)`) because instructions such as `mov m64, imm32`
 * have no register to carry it.
 */
import type { Reg64 } from './registers';

/** A position in the code being assembled; created by `Assembler.label()`, placed by `bind()`. */
export class Label {
  /** @internal Created only by an Assembler (which records itself as owner). */
  constructor(
    readonly name: string,
    /** @internal identity of the owning assembler */
    readonly owner: object,
  ) {}
  /** Returns the label's name, for messages. */
  toString(): string {
    return this.name;
  }
}

/** Scale factor of an index register. */
export type Scale = 1 | 2 | 4 | 8;

/** `[base + index*scale + disp]`; any part may be missing, disp is a signed 32-bit value. */
export interface Address {
  readonly base?: Reg64;
  readonly index?: Reg64;
  readonly scale?: Scale;
  readonly disp?: number;
}

/**
 * A RIP-relative address: `[rip + (target + addend - end of instruction)]`, or, with
 * no target, `[rip + addend]` (a literal displacement).
 */
export interface RipAddress {
  readonly kind: 'rip';
  /** A label of the same assembler, an absolute virtual address (needs the assembler's origin), or none. */
  readonly target: Label | bigint | undefined;
  readonly addend: number;
}

/** Operand size of a memory operand, in bits. */
export type MemSize = 64 | 32;

/** A sized memory operand with base/index/displacement addressing. */
export interface Mem {
  readonly kind: 'mem';
  readonly size: MemSize;
  readonly base?: Reg64;
  readonly index?: Reg64;
  readonly scale: Scale;
  readonly disp: number;
}

/** A sized RIP-relative memory operand (see {@link RipAddress}). */
export interface RipMem {
  readonly kind: 'ripmem';
  readonly size: MemSize;
  readonly target: Label | bigint | undefined;
  readonly addend: number;
}

/** Any memory operand. */
export type MemOperand = Mem | RipMem;

/**
 * `[rip + target + addend]`: target is a label or an absolute virtual address.
 * The encoder computes the displacement from the end of the instruction.
 */
export function rip(target: Label | bigint | number, addend = 0): RipAddress {
  if (!Number.isSafeInteger(addend)) throw new RangeError(`rip(): addend ${addend} is not an integer`);
  const t = typeof target === 'number' ? BigInt(checkSafe(target, 'rip() target')) : target;
  return { kind: 'rip', target: t, addend };
}

/** `[rip + disp]` with a literal signed 32-bit displacement from the end of the instruction. */
export function ripDisp(disp: number): RipAddress {
  if (!Number.isSafeInteger(disp)) throw new RangeError(`ripDisp(): displacement ${disp} is not an integer`);
  return { kind: 'rip', target: undefined, addend: disp };
}

function checkSafe(n: number, what: string): number {
  if (!Number.isSafeInteger(n)) throw new RangeError(`${what}: ${n} is not a safe integer`);
  return n;
}

function sized(size: MemSize, a: Address | RipAddress): MemOperand {
  if ('kind' in a && a.kind === 'rip') return { kind: 'ripmem', size, target: a.target, addend: a.addend };
  const addr = a as Address;
  const disp = addr.disp ?? 0;
  if (!Number.isSafeInteger(disp)) throw new RangeError(`memory operand: displacement ${disp} is not an integer`);
  if (addr.scale !== undefined && addr.index === undefined && addr.scale !== 1) {
    throw new RangeError(`memory operand: scale ${addr.scale} given without an index register`);
  }
  const m: Mem = { kind: 'mem', size, scale: addr.scale ?? 1, disp };
  return { ...m, ...(addr.base ? { base: addr.base } : {}), ...(addr.index ? { index: addr.index } : {}) };
}

/** A 64-bit memory operand (`QWORD PTR [...]`). */
export function qword(a: Address | RipAddress): MemOperand {
  return sized(64, a);
}

/** A 32-bit memory operand (`DWORD PTR [...]`). */
export function dword(a: Address | RipAddress): MemOperand {
  return sized(32, a);
}
