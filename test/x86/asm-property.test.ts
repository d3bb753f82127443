// Property tests of the encoder against GNU binutils: random instructions (registers,
// immediates, displacements, addressing forms chosen by fast-check) are encoded by us,
// disassembled by objdump (must print the text this file's own formatter expects) and
// assembled by GNU as from that text (must give our bytes). Each fast-check run checks a
// batch of instructions with one objdump and one as process.
import { expect } from 'chai';
import fc from 'fast-check';
import {
  Assembler, REGS64, REGS32, qword, dword, ripDisp, Cond,
  type MemOperand, type Reg, type Scale,
} from '../../src/x86/asm';
import { disassemble, gnuAssemble, hexBytes } from '../support/objdump';

type Size = 64 | 32;
type Alu = 'add' | 'or' | 'and' | 'sub' | 'xor' | 'cmp';
type MemSpec =
  | { readonly rip: number }
  | { readonly base?: number; readonly index?: number; readonly scale: Scale; readonly disp: number };
type Spec =
  | { k: 'rr'; op: 'mov' | Alu | 'test'; size: Size; dst: number; src: number }
  | { k: 'rm'; op: 'mov' | Alu | 'test'; size: Size; reg: number; mem: MemSpec }
  | { k: 'mr'; op: 'mov' | Alu | 'test'; size: Size; mem: MemSpec; reg: number }
  | { k: 'ri'; op: 'mov' | Alu | 'test'; size: Size; reg: number; imm: bigint }
  | { k: 'mi'; op: 'mov' | Alu | 'test'; size: Size; mem: MemSpec; imm: bigint }
  | { k: 'movabs'; reg: number; imm: bigint }
  | { k: 'lea'; reg: number; mem: MemSpec }
  | { k: 'push' | 'pop' | 'callr' | 'jmpr'; reg: number }
  | { k: 'callm' | 'jmpm'; mem: MemSpec };

const ALUS: Alu[] = ['add', 'or', 'and', 'sub', 'xor', 'cmp'];
const I32 = 1n << 31n;

const reg = fc.integer({ min: 0, max: 15 });
const disp32 = fc.oneof(
  fc.constant(0),
  fc.integer({ min: -128, max: 127 }),
  fc.constantFrom(-129, 128, -0x80000000, 0x7fffffff),
  fc.integer({ min: -0x80000000, max: 0x7fffffff }),
);
const memSpec: fc.Arbitrary<MemSpec> = fc.oneof(
  disp32.map((d) => ({ rip: d })),
  fc.record({
    base: fc.option(reg, { nil: undefined }),
    index: fc.option(reg.filter((r) => r !== 4), { nil: undefined }),
    scale: fc.constantFrom<Scale>(1, 2, 4, 8),
    disp: disp32,
  }).map((m) => (m.index === undefined ? { ...m, scale: 1 as Scale } : m)),
);
/** Immediates valid as a sign-extended imm32 of an operand of `size`, with boundary bias. */
function imm32(size: Size): fc.Arbitrary<bigint> {
  const hi = size === 64 ? I32 - 1n : (1n << 32n) - 1n;
  return fc.oneof(
    fc.bigInt(-128n, 127n),
    fc.constantFrom(-129n, 128n, -I32, I32 - 1n, hi),
    fc.bigInt(-I32, hi),
  );
}
const imm64 = fc.oneof(fc.bigInt(-(1n << 63n), (1n << 64n) - 1n), imm32(64), fc.constantFrom(I32, (1n << 32n) - 1n, -I32 - 1n));
const size = fc.constantFrom<Size>(64, 32);
const dataOp = fc.constantFrom<'mov' | Alu | 'test'>('mov', 'test', ...ALUS);

const spec: fc.Arbitrary<Spec> = fc.oneof(
  fc.record({ k: fc.constant('rr' as const), op: dataOp, size, dst: reg, src: reg }),
  fc.record({ k: fc.constant('rm' as const), op: dataOp, size, reg, mem: memSpec }),
  fc.record({ k: fc.constant('mr' as const), op: dataOp, size, mem: memSpec, reg }),
  size.chain((s) => fc.record({ k: fc.constant('ri' as const), op: dataOp, size: fc.constant(s), reg, imm: imm32(s) })),
  fc.record({ k: fc.constant('ri' as const), op: fc.constant('mov' as const), size: fc.constant<Size>(64), reg, imm: imm64 }),
  size.chain((s) => fc.record({ k: fc.constant('mi' as const), op: dataOp, size: fc.constant(s), mem: memSpec, imm: imm32(s) })),
  fc.record({ k: fc.constant('movabs' as const), reg, imm: imm64 }),
  fc.record({ k: fc.constant('lea' as const), reg, mem: memSpec }),
  fc.record({ k: fc.constantFrom('push' as const, 'pop' as const, 'callr' as const, 'jmpr' as const), reg }),
  fc.record({ k: fc.constantFrom('callm' as const, 'jmpm' as const), mem: memSpec }),
);

// ---------------------------------------------------------------- building with our encoder

const R = (size: Size, n: number): Reg => (size === 64 ? REGS64[n]! : REGS32[n]!);

function memOperand(m: MemSpec, size: Size): MemOperand {
  const mk = size === 64 ? qword : dword;
  if ('rip' in m) return mk(ripDisp(m.rip));
  return mk({
    ...(m.base !== undefined ? { base: REGS64[m.base]! } : {}),
    ...(m.index !== undefined ? { index: REGS64[m.index]!, scale: m.scale } : {}),
    disp: m.disp,
  });
}

function emit(a: Assembler, s: Spec): void {
  switch (s.k) {
    case 'rr': return void a[s.op](R(s.size, s.dst), R(s.size, s.src));
    case 'rm': return void a[s.op](R(s.size, s.reg), memOperand(s.mem, s.size));
    case 'mr': return void a[s.op](memOperand(s.mem, s.size), R(s.size, s.reg));
    case 'ri': return void a[s.op](R(s.size, s.reg), s.imm);
    case 'mi': return void a[s.op](memOperand(s.mem, s.size), s.imm);
    case 'movabs': return void a.movabs(REGS64[s.reg]!, s.imm);
    case 'lea': return void a.lea(REGS64[s.reg]!, memOperand(s.mem, 64));
    case 'push': return void a.push(REGS64[s.reg]!);
    case 'pop': return void a.pop(REGS64[s.reg]!);
    case 'callr': return void a.call(REGS64[s.reg]!);
    case 'jmpr': return void a.jmp(REGS64[s.reg]!);
    case 'callm': return void a.call(memOperand(s.mem, 64));
    case 'jmpm': return void a.jmp(memOperand(s.mem, 64));
  }
}

// ---------------------------------------------------------------- independent text formatters

/** The signed value an immediate has for an operand of `size` (inputs may be unsigned spellings). */
const signed = (v: bigint, size: Size): bigint => BigInt.asIntN(size, v);
const hexU = (v: bigint, bits: number): string => `0x${BigInt.asUintN(bits, v).toString(16)}`;
const hexS = (v: number): string => (v < 0 ? `-0x${(-v).toString(16)}` : `+0x${v.toString(16)}`);
const dec = (v: bigint | number): string => String(v);
const decS = (v: number): string => (v < 0 ? `-${-v}` : `+${v}`);

/** objdump -M intel spelling of a memory operand. */
function disMem(m: MemSpec, size: Size | null): string {
  const ptr = size === null ? '' : size === 64 ? 'qword ptr ' : 'dword ptr ';
  if ('rip' in m) return `${ptr}[rip+${hexU(BigInt(m.rip), 64)}]`;
  if (m.base === undefined && m.index === undefined) return `${ptr}ds:${hexU(BigInt(m.disp), 64)}`;
  let s = m.base !== undefined ? REGS64[m.base]!.name : '';
  if (m.index !== undefined) s += `${s ? '+' : ''}${REGS64[m.index]!.name}*${m.scale}`;
  // objdump prints a displacement whenever one is encoded: always without a base,
  // and with a base unless it is 0 and the base is not rbp/r13 (those need a disp8).
  const encoded = m.base === undefined || m.disp !== 0 || (m.base & 7) === 5;
  return `${ptr}[${s}${encoded ? hexS(m.disp) : ''}]`;
}

/** GNU as spelling of a memory operand. */
function gasMem(m: MemSpec, size: Size | null): string {
  const ptr = size === null ? '' : size === 64 ? 'QWORD PTR ' : 'DWORD PTR ';
  if ('rip' in m) return `${ptr}[rip${decS(m.rip)}]`;
  if (m.base === undefined && m.index === undefined) return `${ptr}[${m.disp}]`;
  let s = m.base !== undefined ? REGS64[m.base]!.name : '';
  if (m.index !== undefined) s += `${s ? '+' : ''}${REGS64[m.index]!.name}*${m.scale}`;
  return `${ptr}[${s}${m.disp !== 0 ? decS(m.disp) : ''}]`;
}

const fitsS32 = (v: bigint): boolean => v >= -I32 && v < I32;

function texts(s: Spec): { dis: string; gas: string } {
  switch (s.k) {
    case 'rr': {
      const d = R(s.size, s.dst).name;
      const r = R(s.size, s.src).name;
      return { dis: `${s.op} ${d},${r}`, gas: `${s.op} ${d}, ${r}` };
    }
    case 'rm': {
      const r = R(s.size, s.reg).name;
      // test r, m is encoded as test m, r (85 /r has only the r/m,reg direction)
      if (s.op === 'test') return { dis: `test ${disMem(s.mem, s.size)},${r}`, gas: `test ${r}, ${gasMem(s.mem, s.size)}` };
      return { dis: `${s.op} ${r},${disMem(s.mem, s.size)}`, gas: `${s.op} ${r}, ${gasMem(s.mem, s.size)}` };
    }
    case 'mr': {
      const r = R(s.size, s.reg).name;
      return { dis: `${s.op} ${disMem(s.mem, s.size)},${r}`, gas: `${s.op} ${gasMem(s.mem, s.size)}, ${r}` };
    }
    case 'ri': {
      const r = R(s.size, s.reg).name;
      const v = signed(s.imm, s.size);
      if (s.op === 'mov' && s.size === 64 && !fitsS32(v)) return { dis: `movabs ${r},${hexU(v, 64)}`, gas: `mov ${r}, ${dec(v)}` };
      return { dis: `${s.op} ${r},${hexU(v, s.size)}`, gas: `${s.op} ${r}, ${dec(v)}` };
    }
    case 'mi': {
      const v = signed(s.imm, s.size);
      return { dis: `${s.op} ${disMem(s.mem, s.size)},${hexU(v, s.size)}`, gas: `${s.op} ${gasMem(s.mem, s.size)}, ${dec(v)}` };
    }
    case 'movabs': {
      const r = REGS64[s.reg]!.name;
      return { dis: `movabs ${r},${hexU(s.imm, 64)}`, gas: `movabs ${r}, ${dec(signed(s.imm, 64))}` };
    }
    case 'lea': {
      const r = REGS64[s.reg]!.name;
      return { dis: `lea ${r},${disMem(s.mem, null)}`, gas: `lea ${r}, ${gasMem(s.mem, null)}` };
    }
    case 'push':
    case 'pop':
      return { dis: `${s.k} ${REGS64[s.reg]!.name}`, gas: `${s.k} ${REGS64[s.reg]!.name}` };
    case 'callr':
    case 'jmpr': {
      const op = s.k === 'callr' ? 'call' : 'jmp';
      return { dis: `${op} ${REGS64[s.reg]!.name}`, gas: `${op} ${REGS64[s.reg]!.name}` };
    }
    case 'callm':
    case 'jmpm': {
      const op = s.k === 'callm' ? 'call' : 'jmp';
      return { dis: `${op} ${disMem(s.mem, 64)}`, gas: `${op} ${gasMem(s.mem, 64)}` };
    }
  }
}

/** Encodes, disassembles and re-assembles a batch; throws with the first disagreement. */
function checkBatch(specs: Spec[]): void {
  const parts = specs.map((s) => {
    const a = new Assembler();
    emit(a, s);
    return a.assemble().bytes;
  });
  const starts: number[] = [];
  let total = 0;
  for (const p of parts) {
    starts.push(total);
    total += p.length;
  }
  const all = new Uint8Array(total);
  parts.forEach((p, i) => all.set(p, starts[i]!));
  const dis = new Map(disassemble(all).map((l) => [l.offset, l]));
  const t = specs.map(texts);
  const gas = gnuAssemble(t.map((x) => x.gas));
  specs.forEach((s, i) => {
    const ours = parts[i]!;
    const line = dis.get(starts[i]!);
    const ctx = `${JSON.stringify(s, (_k, v: unknown) => (typeof v === 'bigint' ? `${v}n` : v))} -> ${hexBytes(ours)}`;
    expect(line, `objdump: no instruction at ${starts[i]} for ${ctx}`).to.not.equal(undefined);
    expect(line!.bytes.length, `objdump length for ${ctx}`).to.equal(ours.length);
    expect(line!.text, `objdump text for ${ctx}`).to.equal(t[i]!.dis);
    expect(hexBytes(gas.subarray(starts[i]!, starts[i]! + ours.length)), `as "${t[i]!.gas}" for ${ctx}`).to.equal(hexBytes(ours));
  });
  expect(gas.length).to.equal(total);
}

describe('x86 encoder: random instructions vs GNU objdump and as (property)', function () {
  this.timeout(120_000);

  it('data movement, ALU, test, lea, push/pop, indirect call/jmp: 8 batches of 250', function () {
    fc.assert(
      fc.property(fc.array(spec, { minLength: 250, maxLength: 250 }), (specs) => {
        checkBatch(specs);
      }),
      // No shrinking: a batch is 250 instructions, and the failure message already names
      // the first instruction that disagrees.
      { numRuns: 8, endOnFailure: true },
    );
  });

  it('random jump graphs relax exactly like GNU as', function () {
    // A program is a sequence of NOP blocks, label bindings and jumps (jmp or jcc,
    // auto-sized) to random labels, forward or backward, near the 8-bit boundary.
    type Step = { kind: 'pad'; n: number } | { kind: 'jump'; cond: number | null; to: number; near: boolean };
    const step: fc.Arbitrary<Step> = fc.oneof(
      fc.record({ kind: fc.constant('pad' as const), n: fc.oneof(fc.integer({ min: 0, max: 8 }), fc.integer({ min: 100, max: 140 })) }),
      fc.record({
        kind: fc.constant('jump' as const),
        cond: fc.option(fc.integer({ min: 0, max: 15 }), { nil: null }),
        to: fc.nat(),
        near: fc.integer({ min: 0, max: 4 }).map((n) => n === 0), // 1 in 5 forced near = as {disp32}
      }),
    );
    const CC = ['jo', 'jno', 'jb', 'jae', 'je', 'jne', 'jbe', 'ja', 'js', 'jns', 'jp', 'jnp', 'jl', 'jge', 'jle', 'jg'];
    fc.assert(
      fc.property(fc.array(step, { minLength: 4, maxLength: 40 }), fc.integer({ min: 2, max: 6 }), (steps, nLabels) => {
        const a = new Assembler();
        const labels = Array.from({ length: nLabels }, (_, i) => a.label(`L${i}`));
        const text: string[] = [];
        // labels are bound at evenly spread steps so every label exists
        const bindAt = labels.map((_, i) => Math.floor((i * steps.length) / nLabels));
        steps.forEach((st, i) => {
          bindAt.forEach((at, li) => {
            if (at === i) {
              a.bind(labels[li]!);
              text.push(`L${li}:`);
            }
          });
          if (st.kind === 'pad') {
            a.bytes(new Array(st.n).fill(0x90));
            if (st.n) text.push(`.fill ${st.n},1,0x90`);
          } else {
            const li = st.to % nLabels;
            const size = st.near ? 'near' : 'auto';
            if (st.cond === null) a.jmp(labels[li]!, size);
            else a.jcc(st.cond as Cond, labels[li]!, size);
            text.push(`${st.near ? '{disp32} ' : ''}${st.cond === null ? 'jmp' : CC[st.cond]} L${li}`);
          }
        });
        const ours = a.assemble().bytes;
        const gas = gnuAssemble(text);
        expect(hexBytes(ours), text.join('; ')).to.equal(hexBytes(gas));
      }),
      { numRuns: 40 },
    );
  });

  it('alignment and placement directives mixed with relaxing jumps lay out exactly like GNU as', function () {
    // .balign N,0xcc = align(N); .org X,0xcc = placeAt(X); placeEnding(E, body of L
    // bytes) = .org E-L,0xcc then the body. Jumps in between relax across the padding.
    type Step =
      | { kind: 'pad'; n: number }
      | { kind: 'align'; log2: number }
      | { kind: 'at'; ahead: number }
      | { kind: 'ending'; ahead: number; body: number }
      | { kind: 'jump'; to: number };
    const step: fc.Arbitrary<Step> = fc.oneof(
      fc.record({ kind: fc.constant('pad' as const), n: fc.integer({ min: 1, max: 90 }) }),
      fc.record({ kind: fc.constant('align' as const), log2: fc.integer({ min: 0, max: 6 }) }),
      fc.record({ kind: fc.constant('at' as const), ahead: fc.integer({ min: 0, max: 40 }) }),
      fc.record({ kind: fc.constant('ending' as const), ahead: fc.integer({ min: 0, max: 40 }), body: fc.integer({ min: 1, max: 12 }) }),
      fc.record({ kind: fc.constant('jump' as const), to: fc.nat() }),
    );
    fc.assert(
      fc.property(fc.array(step, { minLength: 3, maxLength: 30 }), (steps) => {
        const a = new Assembler({ fill: 0xcc });
        const nLabels = 3;
        const labels = Array.from({ length: nLabels }, (_, i) => a.label(`M${i}`));
        const bindAt = labels.map((_, i) => Math.floor((i * steps.length) / nLabels));
        const text: string[] = [];
        // placement targets must not be behind the code: assume every jump is near (as
        // as may choose near for all), so targets are computed from a pessimistic offset
        let pessimistic = 0;
        steps.forEach((st, i) => {
          bindAt.forEach((at, li) => {
            if (at === i) {
              a.bind(labels[li]!);
              text.push(`M${li}:`);
            }
          });
          switch (st.kind) {
            case 'pad':
              a.bytes(new Array(st.n).fill(0x90));
              text.push(`.fill ${st.n},1,0x90`);
              pessimistic += st.n;
              break;
            case 'align':
              a.align(1 << st.log2);
              text.push(`.balign ${1 << st.log2},0xcc`);
              pessimistic += (1 << st.log2) - 1;
              break;
            case 'at': {
              const target = pessimistic + st.ahead;
              a.placeAt(target);
              text.push(`.org ${target},0xcc`);
              pessimistic = target;
              break;
            }
            case 'ending': {
              const end = pessimistic + st.ahead + st.body;
              a.placeEnding(end, () => a.bytes(new Array(st.body).fill(0x90)));
              text.push(`.org ${end - st.body},0xcc`, `.fill ${st.body},1,0x90`);
              pessimistic = end;
              break;
            }
            case 'jump':
              a.jmp(labels[st.to % nLabels]!);
              text.push(`jmp M${st.to % nLabels}`);
              pessimistic += 5;
              break;
          }
        });
        const ours = a.assemble();
        const gas = gnuAssemble(text);
        expect(hexBytes(ours.bytes), text.join('; ')).to.equal(hexBytes(gas));
      }),
      { numRuns: 40 },
    );
  });
});
