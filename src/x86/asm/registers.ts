/**
 * General-purpose registers as typed values.
 *
 * A register is an object, not a string, so that a typo is a compile error and an
 * instruction that needs a 64-bit register cannot be handed a 32-bit one. `code` is
 * the 4-bit register number of the Intel SDM (bit 3 goes into REX.R/X/B, bits 0..2
 * into ModRM/SIB/opcode).
 */

/** A 64-bit general-purpose register (RAX..R15). */
export interface Reg64 {
  readonly kind: 'reg64';
  readonly name: string;
  readonly code: number;
}

/** A 32-bit general-purpose register (EAX..R15D); writing one zero-extends into the 64-bit register. */
export interface Reg32 {
  readonly kind: 'reg32';
  readonly name: string;
  readonly code: number;
}

/** Any general-purpose register this encoder knows. */
export type Reg = Reg64 | Reg32;

function r64(name: string, code: number): Reg64 {
  return Object.freeze({ kind: 'reg64', name, code });
}
function r32(name: string, code: number): Reg32 {
  return Object.freeze({ kind: 'reg32', name, code });
}

/** The 64-bit registers, by name (r8..r15 need a REX prefix). */
export const rax = r64('rax', 0);
export const rcx = r64('rcx', 1);
export const rdx = r64('rdx', 2);
export const rbx = r64('rbx', 3);
export const rsp = r64('rsp', 4);
export const rbp = r64('rbp', 5);
export const rsi = r64('rsi', 6);
export const rdi = r64('rdi', 7);
export const r8 = r64('r8', 8);
export const r9 = r64('r9', 9);
export const r10 = r64('r10', 10);
export const r11 = r64('r11', 11);
export const r12 = r64('r12', 12);
export const r13 = r64('r13', 13);
export const r14 = r64('r14', 14);
export const r15 = r64('r15', 15);

/** The 32-bit registers, by name; writing one zero-extends into its 64-bit register. */
export const eax = r32('eax', 0);
export const ecx = r32('ecx', 1);
export const edx = r32('edx', 2);
export const ebx = r32('ebx', 3);
export const esp = r32('esp', 4);
export const ebp = r32('ebp', 5);
export const esi = r32('esi', 6);
export const edi = r32('edi', 7);
export const r8d = r32('r8d', 8);
export const r9d = r32('r9d', 9);
export const r10d = r32('r10d', 10);
export const r11d = r32('r11d', 11);
export const r12d = r32('r12d', 12);
export const r13d = r32('r13d', 13);
export const r14d = r32('r14d', 14);
export const r15d = r32('r15d', 15);

/** All 64-bit registers, indexed by their encoding number. */
export const REGS64: readonly Reg64[] = Object.freeze([
  rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8, r9, r10, r11, r12, r13, r14, r15,
]);

/** All 32-bit registers, indexed by their encoding number. */
export const REGS32: readonly Reg32[] = Object.freeze([
  eax, ecx, edx, ebx, esp, ebp, esi, edi, r8d, r9d, r10d, r11d, r12d, r13d, r14d, r15d,
]);

/** Condition codes for Jcc, by their 4-bit encoding (the low nibble of 0x70+cc / 0x0F 0x80+cc). */
export const Cond = Object.freeze({
  O: 0x0, NO: 0x1, B: 0x2, AE: 0x3, E: 0x4, NE: 0x5, BE: 0x6, A: 0x7,
  S: 0x8, NS: 0x9, P: 0xa, NP: 0xb, L: 0xc, GE: 0xd, LE: 0xe, G: 0xf,
} as const);

/** A condition code value (see {@link Cond}). */
export type Cond = (typeof Cond)[keyof typeof Cond];
