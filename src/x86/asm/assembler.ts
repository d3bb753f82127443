/**
 * A small x86-64 assembler as a library: the instruction forms the ELISA gate and sub
 * code need, with labels, fix-ups, jump relaxation and layout directives.
 *
 * Encoding choices follow GNU as (without -O) wherever both are legal, so that the
 * bytes can be cross-checked against it: reg-reg ALU/MOV use the "r/m, reg" opcode,
 * an immediate that fits in 8 signed bits uses the imm8 form, RAX/EAX with a 32-bit
 * immediate uses the short accumulator form, `mov r64, imm` uses the sign-extended
 * imm32 form when it fits and the 10-byte form otherwise.
 *
 * Layout: the program is a list of items (fixed bytes, jumps, label bindings, padding).
 * Jumps of size 'auto' start short and grow to near until every displacement fits;
 * padding items (align, place-at, place-ending-at) are recomputed from the current
 * offsets on every round, so no offset is ever counted by hand.
 */
import { Label, type MemOperand, type RipMem, type Mem } from './operands';
import { type Reg, type Reg64, type Cond } from './registers';

/** An error in the program being assembled: bad operands, undefined labels, ranges. */
export class AsmError extends Error {
  override name = 'AsmError';
}

/** An immediate operand: a JavaScript integer or a bigint. */
export type Imm = number | bigint;

/** How a jump is encoded: short (rel8), near (rel32), or the shortest that fits. */
export type JumpSize = 'auto' | 'short' | 'near';

/** What padding is filled with: one repeated byte (e.g. 0xcc = int3) or multi-byte NOPs. */
export type Fill = number | 'nop';

/** The result of assembling: the bytes and where every label landed. */
export interface Assembled {
  /** The machine code. */
  readonly bytes: Uint8Array;
  /** Offset (from the start of `bytes`) of every label, by name. */
  readonly labels: ReadonlyMap<string, number>;
  /** Virtual address of byte 0, when the assembler was given one. */
  readonly origin: bigint | undefined;
}

/** Options of an {@link Assembler}. */
export interface AssemblerOptions {
  /** Virtual address of the first byte; needed for RIP-relative references to absolute addresses. */
  readonly origin?: bigint;
  /** Default filler for align/placeAt/placeEnding padding (default 0xcc, int3). */
  readonly fill?: Fill;
}

interface Fixup {
  /** Byte position within the item of a little-endian 32-bit field. */
  readonly at: number;
  readonly target: Label | bigint | undefined;
  readonly addend: number;
  /** What the fixup encodes, for error messages. */
  readonly what: string;
}

type Item =
  | { kind: 'fixed'; bytes: Uint8Array; fixups: Fixup[] }
  | { kind: 'jump'; cond: Cond | null; target: Label; size: JumpSize; near: boolean }
  | { kind: 'bind'; label: Label }
  | { kind: 'pad'; rule: PadRule; fill: Fill };

type PadRule = { readonly align: number } | { readonly at: number } | { readonly endAt: number; readonly end: Label };

const ALU = { add: 0, or: 1, and: 4, sub: 5, xor: 6, cmp: 7 } as const;
type AluOp = keyof typeof ALU;

const TWO64 = 1n << 64n;
const TWO32 = 1n << 32n;

/**
 * Multi-byte NOPs recommended by the Intel SDM (Vol. 2B, NOP), indexed by length - 1.
 * Used for 'nop' padding and for {@link Assembler.nop}.
 */
export const MULTI_BYTE_NOPS: readonly (readonly number[])[] = Object.freeze([
  [0x90],
  [0x66, 0x90],
  [0x0f, 0x1f, 0x00],
  [0x0f, 0x1f, 0x40, 0x00],
  [0x0f, 0x1f, 0x44, 0x00, 0x00],
  [0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00],
  [0x0f, 0x1f, 0x80, 0x00, 0x00, 0x00, 0x00],
  [0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00],
  [0x66, 0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00],
]);

function nopBytes(n: number): number[] {
  const out: number[] = [];
  while (n > 0) {
    const k = Math.min(n, MULTI_BYTE_NOPS.length);
    out.push(...MULTI_BYTE_NOPS[k - 1]!);
    n -= k;
  }
  return out;
}

function toBig(v: Imm, what: string): bigint {
  if (typeof v === 'bigint') return v;
  if (!Number.isSafeInteger(v)) throw new AsmError(`${what}: ${v} is not an integer (use a bigint beyond 2^53)`);
  return BigInt(v);
}

function hex(v: bigint | number): string {
  const b = BigInt(v);
  return b < 0n ? `-0x${(-b).toString(16)}` : `0x${b.toString(16)}`;
}

/**
 * Interprets an immediate for an instruction of the given operand size as the signed
 * value the CPU will see, or throws if it cannot be represented in `bits` (sign-extended).
 * Values may be given signed or as the unsigned bit pattern of the operand size.
 */
function signedImm(v: Imm, opSize: 64 | 32, bits: 8 | 32, what: string): bigint | undefined {
  let b = toBig(v, what);
  const mod = opSize === 64 ? TWO64 : TWO32;
  if (b < -(mod / 2n) || b >= mod) {
    throw new AsmError(`${what}: immediate ${hex(b)} does not fit a ${opSize}-bit operand`);
  }
  if (b >= mod / 2n) b -= mod; // unsigned spelling of a negative value
  const lim = 1n << BigInt(bits - 1);
  return b >= -lim && b < lim ? b : undefined;
}

function le(value: bigint, bytes: number): number[] {
  const out: number[] = [];
  let v = BigInt.asUintN(bytes * 8, value);
  for (let i = 0; i < bytes; i++) {
    out.push(Number(v & 0xffn));
    v >>= 8n;
  }
  return out;
}

function isReg(x: unknown): x is Reg {
  return typeof x === 'object' && x !== null && ((x as Reg).kind === 'reg64' || (x as Reg).kind === 'reg32');
}
function isMem(x: unknown): x is MemOperand {
  return typeof x === 'object' && x !== null && ((x as MemOperand).kind === 'mem' || (x as MemOperand).kind === 'ripmem');
}
function isImm(x: unknown): x is Imm {
  return typeof x === 'number' || typeof x === 'bigint';
}
function opSize(x: Reg | MemOperand): 64 | 32 {
  if (isReg(x)) return x.kind === 'reg64' ? 64 : 32;
  return x.size;
}
function describe(x: unknown): string {
  if (isReg(x)) return x.name;
  if (isMem(x)) return `${x.size === 64 ? 'qword' : 'dword'} memory`;
  if (isImm(x)) return `immediate ${hex(BigInt(x))}`;
  if (x instanceof Label) return `label ${x.name}`;
  return String(x);
}

/** ModRM/SIB/displacement encoding of an r/m operand. */
interface RmEncoding {
  rexR: number;
  rexX: number;
  rexB: number;
  /** ModRM, optional SIB, displacement bytes. */
  bytes: number[];
  /** Offset within `bytes` of a RIP-relative disp32 to fix up. */
  ripAt?: number;
  rip?: RipMem;
}

function encodeRm(regField: number, rm: Reg | MemOperand): RmEncoding {
  const reg3 = (regField & 7) << 3;
  const rexR = regField >> 3;
  if (isReg(rm)) {
    return { rexR, rexX: 0, rexB: rm.code >> 3, bytes: [0xc0 | reg3 | (rm.code & 7)] };
  }
  if (rm.kind === 'ripmem') {
    return { rexR, rexX: 0, rexB: 0, bytes: [0x05 | reg3, 0, 0, 0, 0], ripAt: 1, rip: rm };
  }
  return encodeMem(reg3, rexR, rm);
}

function encodeMem(reg3: number, rexR: number, m: Mem): RmEncoding {
  const disp = BigInt(m.disp);
  if (disp < -(1n << 31n) || disp >= 1n << 31n) {
    throw new AsmError(`memory operand: displacement ${hex(disp)} does not fit in a signed 32-bit field`);
  }
  const d8 = disp >= -128n && disp <= 127n;
  if (m.index && m.index.code === 4) {
    throw new AsmError('memory operand: rsp cannot be an index register');
  }
  const ss = { 1: 0, 2: 1, 4: 2, 8: 3 }[m.scale];
  if (ss === undefined) throw new AsmError(`memory operand: scale ${String(m.scale)} is not 1, 2, 4 or 8`);
  if (!m.base) {
    // No base: SIB with base=101 and mod=00 means [index*scale + disp32]; with no
    // index either (index=100) it is an absolute [disp32] (plain mod=00 rm=101 would
    // be RIP-relative in 64-bit mode).
    const index = m.index ? m.index.code & 7 : 4;
    return {
      rexR, rexX: m.index ? m.index.code >> 3 : 0, rexB: 0,
      bytes: [0x04 | reg3, (ss << 6) | (index << 3) | 5, ...le(disp, 4)],
    };
  }
  const base3 = m.base.code & 7;
  // mod=00 with base low bits 101 (rbp/r13) would mean RIP/disp32: use disp8 = 0 instead.
  const mod = disp === 0n && base3 !== 5 ? 0 : d8 ? 1 : 2;
  const dispBytes = mod === 0 ? [] : mod === 1 ? le(disp, 1) : le(disp, 4);
  if (m.index || base3 === 4) {
    // rsp/r12 as base need a SIB byte (rm=100 means "SIB follows"); index=100 means none.
    const index = m.index ? m.index.code & 7 : 4;
    return {
      rexR, rexX: m.index ? m.index.code >> 3 : 0, rexB: m.base.code >> 3,
      bytes: [(mod << 6) | reg3 | 4, (ss << 6) | (index << 3) | base3, ...dispBytes],
    };
  }
  return { rexR, rexX: 0, rexB: m.base.code >> 3, bytes: [(mod << 6) | reg3 | base3, ...dispBytes] };
}

/**
 * Assembles x86-64 machine code. Emit instructions with the methods, then call
 * {@link Assembler.assemble}. All methods return `this` so calls can be chained.
 */
export class Assembler {
  private readonly items: Item[] = [];
  private readonly labelsByName = new Map<string, Label>();
  private readonly bound = new Set<Label>();
  private readonly used = new Set<Label>();
  private anon = 0;
  private readonly origin: bigint | undefined;
  private readonly fill: Fill;

  /** Creates an empty program; see {@link AssemblerOptions}. */
  constructor(options: AssemblerOptions = {}) {
    if (options.origin !== undefined && (options.origin < 0n || options.origin >= TWO64)) {
      throw new AsmError(`origin ${hex(options.origin)} is not a 64-bit address`);
    }
    this.origin = options.origin;
    this.fill = options.fill ?? 0xcc;
    checkFill(this.fill);
  }

  // ---------------------------------------------------------------- labels

  /** Creates a label (not yet placed). Names must be unique; without a name one is generated. */
  label(name?: string): Label {
    const n = name ?? `.L${this.anon++}`;
    if (this.labelsByName.has(n)) throw new AsmError(`label ${n} is already defined`);
    const l = new Label(n, this);
    this.labelsByName.set(n, l);
    return l;
  }

  /** Places a label at the current position. */
  bind(label: Label): this {
    this.own(label);
    if (this.bound.has(label)) throw new AsmError(`label ${label.name} is bound twice`);
    this.bound.add(label);
    this.items.push({ kind: 'bind', label });
    return this;
  }

  /** Creates a label and places it at the current position. */
  here(name?: string): Label {
    const l = this.label(name);
    this.bind(l);
    return l;
  }

  private own(label: Label): void {
    if (!(label instanceof Label) || label.owner !== this) {
      throw new AsmError(`label ${String(label)} belongs to another assembler`);
    }
  }

  // ---------------------------------------------------------------- raw emission

  private emit(bytes: number[], fixups: Fixup[] = []): this {
    this.items.push({ kind: 'fixed', bytes: Uint8Array.from(bytes), fixups });
    return this;
  }

  /**
   * Emits one instruction with a ModRM operand.
   * `prefix` bytes come before REX (e.g. 0x66), `opcode` after it.
   */
  private modrm(w: boolean, opcode: number[], regField: number, rm: Reg | MemOperand, imm: number[] = [], prefix: number[] = []): this {
    const e = encodeRm(regField, rm);
    const rex = (w ? 8 : 0) | (e.rexR << 2) | (e.rexX << 1) | e.rexB;
    const head = [...prefix, ...(rex ? [0x40 | rex] : []), ...opcode];
    const bytes = [...head, ...e.bytes, ...imm];
    const fixups: Fixup[] = [];
    if (e.rip) {
      fixups.push({ at: head.length + e.ripAt!, target: e.rip.target, addend: e.rip.addend, what: 'RIP-relative operand' });
      if (e.rip.target instanceof Label) this.use(e.rip.target);
    }
    return this.emit(bytes, fixups);
  }

  private use(label: Label): void {
    this.own(label);
    this.used.add(label);
  }

  /** Emits raw bytes (e.g. data, or an instruction this encoder does not know). */
  bytes(data: ArrayLike<number>): this {
    const out: number[] = [];
    for (let i = 0; i < data.length; i++) {
      const b = data[i]!;
      if (!Number.isInteger(b) || b < 0 || b > 255) throw new AsmError(`bytes(): element ${i} (${b}) is not a byte`);
      out.push(b);
    }
    return this.emit(out);
  }

  // ---------------------------------------------------------------- data movement

  /**
   * `mov dst, src`: reg←reg, reg←mem, mem←reg, reg←imm, mem←imm32 (sign-extended
   * for 64-bit destinations). A 64-bit register with an immediate that does not fit
   * in 32 signed bits uses the 10-byte `movabs` form (as GNU as does).
   */
  mov(dst: Reg | MemOperand, src: Reg | MemOperand | Imm): this {
    if (isReg(dst) && isReg(src)) {
      sameSize('mov', dst, src);
      return this.modrm(dst.kind === 'reg64', [0x89], src.code, dst);
    }
    if (isReg(dst) && isMem(src)) {
      sameSize('mov', dst, src);
      return this.modrm(dst.kind === 'reg64', [0x8b], dst.code, src);
    }
    if (isMem(dst) && isReg(src)) {
      sameSize('mov', src, dst);
      return this.modrm(src.kind === 'reg64', [0x89], src.code, dst);
    }
    if (isReg(dst) && isImm(src)) {
      if (dst.kind === 'reg32') {
        const v = signedImm(src, 32, 32, 'mov')!;
        return this.emit([...rexB(false, dst), 0xb8 + (dst.code & 7), ...le(v, 4)]);
      }
      const v = signedImm(src, 64, 32, 'mov');
      if (v === undefined) return this.movabs(dst, src);
      return this.modrm(true, [0xc7], 0, dst, le(v, 4));
    }
    if (isMem(dst) && isImm(src)) {
      const v = signedImm(src, dst.size, 32, 'mov');
      if (v === undefined) {
        throw new AsmError(`mov: immediate ${hex(toBig(src, 'mov'))} does not fit the sign-extended imm32 of a memory store`);
      }
      return this.modrm(dst.size === 64, [0xc7], 0, dst, le(v, 4));
    }
    throw invalid('mov', dst, src);
  }

  /** `movabs r64, imm64`: always the 10-byte form, so the immediate can be patched or found at a fixed place. */
  movabs(dst: Reg64, imm: Imm): this {
    if (!isReg(dst) || dst.kind !== 'reg64') throw invalid('movabs', dst, imm);
    const v = toBig(imm, 'movabs');
    if (v < -(TWO64 / 2n) || v >= TWO64) throw new AsmError(`movabs: immediate ${hex(v)} does not fit in 64 bits`);
    return this.emit([...rexB(true, dst), 0xb8 + (dst.code & 7), ...le(v, 8)]);
  }

  /** `lea r64, [mem]` (including RIP-relative: loads the address itself). */
  lea(dst: Reg64, src: MemOperand): this {
    if (!isReg(dst) || dst.kind !== 'reg64' || !isMem(src)) throw invalid('lea', dst, src);
    return this.modrm(true, [0x8d], dst.code, src);
  }

  /** `push r64`. */
  push(r: Reg64): this {
    if (!isReg(r) || r.kind !== 'reg64') throw invalid('push', r);
    return this.emit([...rexB(false, r), 0x50 + (r.code & 7)]);
  }

  /** `pop r64`. */
  pop(r: Reg64): this {
    if (!isReg(r) || r.kind !== 'reg64') throw invalid('pop', r);
    return this.emit([...rexB(false, r), 0x58 + (r.code & 7)]);
  }

  /** `pushfq`: pushes RFLAGS. */
  pushfq(): this {
    return this.emit([0x9c]);
  }

  /** `popfq`: pops RFLAGS. */
  popfq(): this {
    return this.emit([0x9d]);
  }

  // ---------------------------------------------------------------- arithmetic / logic

  private alu(op: AluOp, dst: Reg | MemOperand, src: Reg | MemOperand | Imm): this {
    const n = ALU[op];
    if (isReg(dst) && isReg(src)) {
      sameSize(op, dst, src);
      return this.modrm(dst.kind === 'reg64', [(n << 3) | 1], src.code, dst);
    }
    if (isReg(dst) && isMem(src)) {
      sameSize(op, dst, src);
      return this.modrm(dst.kind === 'reg64', [(n << 3) | 3], dst.code, src);
    }
    if (isMem(dst) && isReg(src)) {
      sameSize(op, src, dst);
      return this.modrm(src.kind === 'reg64', [(n << 3) | 1], src.code, dst);
    }
    if ((isReg(dst) || isMem(dst)) && isImm(src)) {
      const size = opSize(dst);
      const w = size === 64;
      const v32 = signedImm(src, size, 32, op);
      if (v32 === undefined) {
        throw new AsmError(`${op}: immediate ${hex(toBig(src, op))} does not fit a sign-extended 32-bit immediate`);
      }
      if (v32 >= -128n && v32 <= 127n) return this.modrm(w, [0x83], n, dst, le(v32, 1));
      if (isReg(dst) && dst.code === 0) return this.emit([...(w ? [0x48] : []), (n << 3) | 5, ...le(v32, 4)]);
      return this.modrm(w, [0x81], n, dst, le(v32, 4));
    }
    throw invalid(op, dst, src);
  }

  /** `add dst, src` (reg/mem, reg/mem/imm; not mem, mem). */
  add(dst: Reg | MemOperand, src: Reg | MemOperand | Imm): this {
    return this.alu('add', dst, src);
  }
  /** `sub dst, src`. */
  sub(dst: Reg | MemOperand, src: Reg | MemOperand | Imm): this {
    return this.alu('sub', dst, src);
  }
  /** `and dst, src`. */
  and(dst: Reg | MemOperand, src: Reg | MemOperand | Imm): this {
    return this.alu('and', dst, src);
  }
  /** `or dst, src`. */
  or(dst: Reg | MemOperand, src: Reg | MemOperand | Imm): this {
    return this.alu('or', dst, src);
  }
  /** `xor dst, src`. */
  xor(dst: Reg | MemOperand, src: Reg | MemOperand | Imm): this {
    return this.alu('xor', dst, src);
  }
  /** `cmp a, b` (sets flags for a - b). */
  cmp(a: Reg | MemOperand, b: Reg | MemOperand | Imm): this {
    return this.alu('cmp', a, b);
  }

  /** `test a, b` (sets flags for a & b); the immediate form has no imm8 encoding. */
  test(a: Reg | MemOperand, b: Reg | MemOperand | Imm): this {
    if (isReg(a) && isReg(b)) {
      sameSize('test', a, b);
      return this.modrm(a.kind === 'reg64', [0x85], b.code, a);
    }
    if (isMem(a) && isReg(b)) {
      sameSize('test', b, a);
      return this.modrm(b.kind === 'reg64', [0x85], b.code, a);
    }
    if (isReg(a) && isMem(b)) {
      sameSize('test', a, b);
      return this.modrm(a.kind === 'reg64', [0x85], a.code, b);
    }
    if ((isReg(a) || isMem(a)) && isImm(b)) {
      const size = opSize(a);
      const v = signedImm(b, size, 32, 'test');
      if (v === undefined) throw new AsmError(`test: immediate ${hex(toBig(b, 'test'))} does not fit a sign-extended 32-bit immediate`);
      if (isReg(a) && a.code === 0) return this.emit([...(size === 64 ? [0x48] : []), 0xa9, ...le(v, 4)]);
      return this.modrm(size === 64, [0xf7], 0, a, le(v, 4));
    }
    throw invalid('test', a, b);
  }

  // ---------------------------------------------------------------- control flow

  /** `jmp label` (rel8/rel32, see {@link JumpSize}), `jmp r64` or `jmp qword [mem]`. */
  jmp(target: Label | Reg64 | MemOperand, size: JumpSize = 'auto'): this {
    if (target instanceof Label) return this.jump(null, target, size);
    if (isReg(target) && target.kind === 'reg64') return this.modrm(false, [0xff], 4, target);
    if (isMem(target) && target.size === 64) return this.modrm(false, [0xff], 4, target);
    throw invalid('jmp', target);
  }

  /** `jcc label`: conditional jump (see {@link Cond}). */
  jcc(cond: Cond, target: Label, size: JumpSize = 'auto'): this {
    if (!Number.isInteger(cond) || cond < 0 || cond > 15) throw new AsmError(`jcc: ${String(cond)} is not a condition code`);
    if (!(target instanceof Label)) throw invalid('jcc', target);
    return this.jump(cond, target, size);
  }

  private jump(cond: Cond | null, target: Label, size: JumpSize): this {
    if (size !== 'auto' && size !== 'short' && size !== 'near') throw new AsmError(`jump size ${String(size)} is not auto, short or near`);
    this.use(target);
    this.items.push({ kind: 'jump', cond, target, size, near: size === 'near' });
    return this;
  }

  /** `call label` (rel32), `call r64` or `call qword [mem]`. */
  call(target: Label | Reg64 | MemOperand): this {
    if (target instanceof Label) {
      this.use(target);
      return this.emit([0xe8, 0, 0, 0, 0], [{ at: 1, target, addend: 0, what: 'call' }]);
    }
    if (isReg(target) && target.kind === 'reg64') return this.modrm(false, [0xff], 2, target);
    if (isMem(target) && target.size === 64) return this.modrm(false, [0xff], 2, target);
    throw invalid('call', target);
  }

  /** `leave` (mov rsp, rbp; pop rbp). */
  leave(): this {
    return this.emit([0xc9]);
  }
  /** `ret` (near return). */
  ret(): this {
    return this.emit([0xc3]);
  }
  /** `endbr64` (CET indirect-branch target marker; a NOP without CET). */
  endbr64(): this {
    return this.emit([0xf3, 0x0f, 0x1e, 0xfa]);
  }
  /** `vmfunc` (0f 01 d4): VM function EAX, here EPTP switching to list entry ECX. */
  vmfunc(): this {
    return this.emit([0x0f, 0x01, 0xd4]);
  }
  /** `vmcall` (0f 01 c1). */
  vmcall(): this {
    return this.emit([0x0f, 0x01, 0xc1]);
  }
  /** `int3` (cc). */
  int3(): this {
    return this.emit([0xcc]);
  }
  /** `ud2` (0f 0b): guaranteed invalid opcode. */
  ud2(): this {
    return this.emit([0x0f, 0x0b]);
  }
  /** `hlt`. */
  hlt(): this {
    return this.emit([0xf4]);
  }
  /** `cli`. */
  cli(): this {
    return this.emit([0xfa]);
  }
  /** `sti`. */
  sti(): this {
    return this.emit([0xfb]);
  }
  /** `out imm8, al` (e6 ib): writes AL to an I/O port; a 2-byte port-I/O trap. */
  outAl(port: number): this {
    if (!Number.isInteger(port) || port < 0 || port > 255) throw new AsmError(`out: port ${port} does not fit in imm8`);
    return this.emit([0xe6, port]);
  }

  /** Emits `n` bytes of NOPs (SDM multi-byte NOPs, at most 9 bytes each). */
  nop(n = 1): this {
    if (!Number.isInteger(n) || n < 0) throw new AsmError(`nop: length ${n} is not a non-negative integer`);
    return this.emit(nopBytes(n));
  }

  // ---------------------------------------------------------------- layout directives

  /** Pads with `fill` up to the next multiple of `n` (a power of two). */
  align(n: number, fill: Fill = this.fill): this {
    if (!Number.isInteger(n) || n < 1 || (n & (n - 1)) !== 0) throw new AsmError(`align: ${n} is not a power of two`);
    checkFill(fill);
    this.items.push({ kind: 'pad', rule: { align: n }, fill });
    return this;
  }

  /** Pads with `fill` so that the next item starts exactly at `offset`; an error if already past it. */
  placeAt(offset: number, fill: Fill = this.fill): this {
    if (!Number.isInteger(offset) || offset < 0) throw new AsmError(`placeAt: ${offset} is not a non-negative integer`);
    checkFill(fill);
    this.items.push({ kind: 'pad', rule: { at: offset }, fill });
    return this;
  }

  /**
   * Pads with `fill`, then emits what `body` emits, such that the body ends exactly at
   * `offset` (like `.space END - (end - start)` but computed, never hand-counted).
   * An error if the code before plus the body does not fit.
   */
  placeEnding(offset: number, body: () => void, fill: Fill = this.fill): this {
    if (!Number.isInteger(offset) || offset < 0) throw new AsmError(`placeEnding: ${offset} is not a non-negative integer`);
    checkFill(fill);
    const end = this.label();
    this.items.push({ kind: 'pad', rule: { endAt: offset, end }, fill });
    body();
    this.bind(end);
    return this;
  }

  // ---------------------------------------------------------------- assembly

  /** Lays out the program, resolves labels and fix-ups, and returns the bytes. */
  assemble(): Assembled {
    for (const l of this.used) {
      if (!this.bound.has(l)) throw new AsmError(`label ${l.name} is used but never bound`);
    }
    const { offsets, sizes, labelAt } = this.layout();
    const total = offsets.length ? offsets[offsets.length - 1]! + sizes[sizes.length - 1]! : 0;
    const out = new Uint8Array(total);
    this.items.forEach((it, i) => {
      const off = offsets[i]!;
      const end = off + sizes[i]!;
      switch (it.kind) {
        case 'fixed': {
          out.set(it.bytes, off);
          for (const f of it.fixups) {
            const rel = this.relative(f.target, f.addend, end, labelAt, f.what);
            out.set(le(rel, 4), off + f.at);
          }
          break;
        }
        case 'jump': {
          const rel = BigInt(labelAt(it.target) - end);
          if (!it.near) {
            if (rel < -128n || rel > 127n) {
              throw new AsmError(`short jump to ${it.target.name} at offset ${hex(off)}: displacement ${rel} does not fit in 8 bits`);
            }
            out.set([it.cond === null ? 0xeb : 0x70 | it.cond, Number(BigInt.asUintN(8, rel))], off);
          } else {
            const op = it.cond === null ? [0xe9] : [0x0f, 0x80 | it.cond];
            out.set([...op, ...le(rel, 4)], off);
          }
          break;
        }
        case 'pad':
          out.set(fillBytes(it.fill, sizes[i]!), off);
          break;
        case 'bind':
          break;
      }
    });
    const labels = new Map<string, number>();
    for (const l of this.bound) labels.set(l.name, labelAt(l));
    return { bytes: out, labels, origin: this.origin };
  }

  private relative(target: Label | bigint | undefined, addend: number, end: number, labelAt: (l: Label) => number, what: string): bigint {
    let rel: bigint;
    if (target === undefined) {
      rel = BigInt(addend);
    } else if (target instanceof Label) {
      rel = BigInt(labelAt(target) + addend - end);
    } else {
      if (this.origin === undefined) {
        throw new AsmError(`${what} to absolute address ${hex(target)} needs the assembler's origin`);
      }
      // RIP + disp wraps modulo 2^64, like the CPU's address arithmetic.
      rel = BigInt.asIntN(64, target + BigInt(addend) - (this.origin + BigInt(end)));
    }
    if (rel < -(1n << 31n) || rel >= 1n << 31n) {
      const t = target === undefined ? 'a literal displacement' : target instanceof Label ? `label ${target.name}` : `address ${hex(target + BigInt(addend))}`;
      throw new AsmError(`${what} to ${t} is out of the ±2 GiB reach of RIP-relative addressing (displacement ${hex(rel)})`);
    }
    return rel;
  }

  private layout(): { offsets: number[]; sizes: number[]; labelAt: (l: Label) => number } {
    const items = this.items;
    const sizes = items.map((it) =>
      it.kind === 'fixed' ? it.bytes.length : it.kind === 'jump' ? jumpLength(it) : 0,
    );
    const offsets: number[] = new Array<number>(items.length).fill(0);
    const labelOffsets = new Map<Label, number>();
    const labelAt = (l: Label): number => {
      const o = labelOffsets.get(l);
      if (o === undefined) throw new AsmError(`label ${l.name} is used but never bound`);
      return o;
    };
    // Placement targets wanted by each pad in the last pass (may be negative = impossible).
    const want: number[] = new Array<number>(items.length).fill(0);
    // Length of each placeEnding body as measured in the previous pass, by pad index.
    const bodyLen = new Map<number, number>();
    // Each pass lays everything out front to back, so offsets and align/placeAt padding
    // are exact for the current jump sizes; a placeEnding pad uses its body's length from
    // the previous pass, and jumps are judged only once those lengths are settled (a stale
    // body length would inflate distances and grow jumps that need not grow). Jumps only
    // ever grow, so this terminates; the bound guards against oscillating directives.
    for (let round = 0; round < 64; round++) {
      let off = 0;
      for (let i = 0; i < items.length; i++) {
        offsets[i] = off;
        const it = items[i]!;
        if (it.kind === 'bind') labelOffsets.set(it.label, off);
        if (it.kind === 'pad') {
          const r = it.rule;
          want[i] = 'align' in r ? (r.align - (off % r.align)) % r.align : 'at' in r ? r.at - off : r.endAt - off - (bodyLen.get(i) ?? 0);
          sizes[i] = Math.max(0, want[i]!);
        }
        off += sizes[i]!;
      }
      let settled = true;
      for (let i = 0; i < items.length; i++) {
        const it = items[i]!;
        if (it.kind !== 'pad' || !('endAt' in it.rule)) continue;
        const len = labelAt(it.rule.end) - offsets[i]! - sizes[i]!;
        if (bodyLen.get(i) !== len) {
          bodyLen.set(i, len);
          settled = false;
        }
      }
      if (!settled) continue;
      let grew = false;
      for (let i = 0; i < items.length; i++) {
        const it = items[i]!;
        if (it.kind !== 'jump' || it.size !== 'auto' || it.near) continue;
        const rel = labelAt(it.target) - (offsets[i]! + 2);
        if (rel < -128 || rel > 127) {
          it.near = true;
          sizes[i] = jumpLength(it);
          grew = true;
        }
      }
      if (grew) continue;
      for (let i = 0; i < items.length; i++) {
        const it = items[i]!;
        if (it.kind !== 'pad' || want[i]! >= 0) continue;
        if ('at' in it.rule) {
          throw new AsmError(`placeAt(${hex(it.rule.at)}): code already reaches offset ${hex(offsets[i]!)}`);
        }
        if ('endAt' in it.rule) {
          const len = bodyLen.get(i)!;
          throw new AsmError(
            `placeEnding(${hex(it.rule.endAt)}): code before it ends at ${hex(offsets[i]!)} and the block is ${len} bytes long, ` +
              `${offsets[i]! + len - it.rule.endAt} bytes too many`,
          );
        }
      }
      return { offsets, sizes, labelAt };
    }
    throw new AsmError('layout did not converge (conflicting alignment and placement directives)');
  }
}

function jumpLength(it: { cond: Cond | null; near: boolean }): number {
  if (!it.near) return 2;
  return it.cond === null ? 5 : 6;
}

function fillBytes(fill: Fill, n: number): number[] {
  return fill === 'nop' ? nopBytes(n) : new Array<number>(n).fill(fill);
}

function checkFill(fill: Fill): void {
  if (fill !== 'nop' && !(Number.isInteger(fill) && fill >= 0 && fill <= 255)) {
    throw new AsmError(`fill ${String(fill)} is neither a byte nor 'nop'`);
  }
}

function rexB(w: boolean, r: Reg): number[] {
  const rex = (w ? 8 : 0) | (r.code >> 3);
  return rex ? [0x40 | rex] : [];
}

function sameSize(op: string, r: Reg, other: Reg | MemOperand): void {
  if (opSize(r) !== opSize(other)) {
    throw new AsmError(`${op}: operand sizes differ (${describe(r)} is ${opSize(r)}-bit, ${describe(other)} is ${opSize(other)}-bit)`);
  }
}

function invalid(op: string, ...operands: unknown[]): AsmError {
  return new AsmError(`${op}: invalid operand combination (${operands.map(describe).join(', ')})`);
}
