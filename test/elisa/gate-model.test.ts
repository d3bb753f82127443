// Runs the generated gate pages in a small, independent model of the machine: a decoder
// written here for exactly the instruction forms the pages may contain, guest-virtual
// address spaces per EPT context (top/bottom in the default context; gate code, EPTP
// list and gate stack in the gate context; sub code, list and sub stack in the sub
// context), and VMFUNC(0, i) switching to the context whose EPTP is in slot i. Code
// pages are execute-only, as the context builder maps them. No KVM: this checks the
// semantics the other helpers' backends rely on (arguments in, result out, registers
// preserved, slot 1 discipline) and that a guest entering the gate page anywhere with
// any registers can neither return with slot 1 set nor enter the sub context elsewhere
// than at its entry.
import { expect } from 'chai';
import fc from 'fast-check';
import {
  buildGatePages, libelisaLayout, SUB_ENTRY_OFFSET, PAGE_SIZE, EPTP_SLOT_DEFAULT, EPTP_SLOT_GATE,
  type GatePages, type GatePagesParams,
} from '../../src/elisa/gate';

type Ctx = 'default' | 'gate' | 'sub';
type Stop =
  | { kind: 'returned' }
  | { kind: 'fault'; why: string }
  | { kind: 'undecoded'; at: bigint }
  | { kind: 'steps' };

interface Page {
  bytes: Uint8Array;
  perm: 'x' | 'rw';
}

const M64 = (1n << 64n) - 1n;
const IF = 1n << 9n;
const ZF = 1n << 6n;
const RAX = 0, RCX = 1, RDX = 2, RBX = 3, RSP = 4, RBP = 5, RSI = 6, RDI = 7, R8 = 8, R9 = 9, R11 = 11, R12 = 12;

class Fault extends Error {}
class Undecoded extends Error {}

/** The model machine: registers, RFLAGS (IF, ZF), current context, per-context page maps. */
class Machine {
  regs: bigint[] = new Array<bigint>(16).fill(0n);
  rip = 0n;
  rflags = 0x2n;
  ctx: Ctx = 'default';
  readonly spaces: Record<Ctx, Map<bigint, Page>> = { default: new Map(), gate: new Map(), sub: new Map() };
  readonly eptps: Record<Ctx, bigint>;
  readonly list: Page = { bytes: new Uint8Array(PAGE_SIZE), perm: 'rw' };
  /** Called when RIP reaches a hooked address in the given context (e.g. the entry function). */
  readonly hooks = new Map<string, (m: Machine) => void>();
  /** Every context switch, for assertions. */
  readonly switches: { from: Ctx; to: Ctx; rip: bigint; slot1: bigint; rflags: bigint }[] = [];

  constructor(eptps: Record<Ctx, bigint>) {
    this.eptps = eptps;
  }

  map(ctx: Ctx, gva: bigint, page: Page): void {
    this.spaces[ctx].set(gva & ~0xfffn, page);
  }

  slot(i: number): bigint {
    return new DataView(this.list.bytes.buffer).getBigUint64(8 * i, true);
  }
  setSlot(i: number, v: bigint): void {
    new DataView(this.list.bytes.buffer).setBigUint64(8 * i, v, true);
  }

  private page(a: bigint, access: 'x' | 'r' | 'w'): { p: Page; off: number } {
    const p = this.spaces[this.ctx].get(a & ~0xfffn & M64);
    if (!p) throw new Fault(`${access} of unmapped ${this.ctx} GVA 0x${a.toString(16)}`);
    if ((access === 'x') !== (p.perm === 'x')) throw new Fault(`${access} of ${p.perm} page at 0x${a.toString(16)} in ${this.ctx}`);
    return { p, off: Number(a & 0xfffn) };
  }
  private read(a: bigint, n: number, access: 'x' | 'r'): bigint {
    let v = 0n;
    for (let i = n - 1; i >= 0; i--) {
      const { p, off } = this.page((a + BigInt(i)) & M64, access);
      v = (v << 8n) | BigInt(p.bytes[off]!);
    }
    return v;
  }
  read64(a: bigint): bigint {
    return this.read(a, 8, 'r');
  }
  write64(a: bigint, v: bigint): void {
    for (let i = 0; i < 8; i++) {
      const { p, off } = this.page((a + BigInt(i)) & M64, 'w');
      p.bytes[off] = Number((v >> BigInt(8 * i)) & 0xffn);
    }
  }
  push(v: bigint): void {
    this.regs[RSP] = (this.regs[RSP]! - 8n) & M64;
    this.write64(this.regs[RSP]!, v);
  }
  pop(): bigint {
    const v = this.read64(this.regs[RSP]!);
    this.regs[RSP] = (this.regs[RSP]! + 8n) & M64;
    return v;
  }

  /** Runs until RIP reaches `stopAt` in the default context, a fault, or `maxSteps`. */
  run(stopAt: bigint | null, maxSteps = 200): Stop {
    try {
      for (let i = 0; i < maxSteps; i++) {
        if (this.ctx === 'default' && this.rip === stopAt) return { kind: 'returned' };
        const hook = this.hooks.get(`${this.ctx}:${this.rip}`);
        if (hook) {
          hook(this);
          continue;
        }
        this.step();
      }
      return { kind: 'steps' };
    } catch (e) {
      if (e instanceof Fault) return { kind: 'fault', why: e.message };
      if (e instanceof Undecoded) return { kind: 'undecoded', at: this.rip };
      throw e;
    }
  }

  /** Decodes and executes one instruction (only the forms the gate pages use). */
  step(): void {
    let pc = this.rip;
    const fetch = (n: number): bigint => {
      const v = this.read(pc, n, 'x');
      pc = (pc + BigInt(n)) & M64;
      return v;
    };
    const s32 = (v: bigint): bigint => BigInt.asIntN(32, v);
    const s8 = (v: bigint): bigint => BigInt.asIntN(8, v);
    let b = Number(fetch(1));
    if (b === 0xf3) {
      if (fetch(3) !== 0xfa1e0fn) throw new Undecoded();
      this.rip = pc; // endbr64
      return;
    }
    let w = false, r = 0, bx = 0;
    if ((b & 0xf0) === 0x40) {
      w = (b & 8) !== 0;
      r = (b >> 2) & 1;
      bx = b & 1;
      if (b & 2) throw new Undecoded(); // REX.X: no SIB forms in the gate pages
      b = Number(fetch(1));
    }
    // ModRM with register or [rip+disp32] operand; returns reg field and an r/m accessor.
    const modrm = (): { reg: number; get: () => bigint; set: (v: bigint) => void; isMem: boolean; finish: (immLen: number) => void } => {
      const m = Number(fetch(1));
      const mod = m >> 6, reg = ((m >> 3) & 7) | (r << 3), rm = (m & 7) | (bx << 3);
      if (mod === 3) {
        return { reg, isMem: false, finish: () => {}, get: () => this.regs[rm]!, set: (v) => { this.regs[rm] = v & M64; } };
      }
      if (mod !== 0 || (m & 7) !== 5) throw new Undecoded();
      const disp = s32(fetch(4));
      let addr = 0n;
      // RIP-relative is relative to the end of the instruction, i.e. after any immediate
      return {
        reg, isMem: true,
        finish: (immLen) => { addr = (pc + BigInt(immLen) + disp) & M64; },
        get: () => this.read64(addr),
        set: (v) => this.write64(addr, v),
      };
    };
    const setZF = (v: bigint): void => {
      this.rflags = (v & M64) === 0n ? this.rflags | ZF : this.rflags & ~ZF;
    };
    const jump = (taken: boolean, rel: bigint): void => {
      this.rip = taken ? (pc + rel) & M64 : pc;
    };
    if (b >= 0x50 && b <= 0x57) {
      const v = this.regs[(b & 7) | (bx << 3)]!;
      this.rip = pc;
      this.push(v);
      return;
    }
    if (b >= 0x58 && b <= 0x5f) {
      this.rip = pc;
      this.regs[(b & 7) | (bx << 3)] = this.pop(); // pop rsp: the popped value wins
      return;
    }
    if (b >= 0xb8 && b <= 0xbf) {
      this.regs[(b & 7) | (bx << 3)] = w ? fetch(8) : fetch(4); // 32-bit form zero-extends
      this.rip = pc;
      return;
    }
    switch (b) {
      case 0x89: { // mov r/m64, r64
        if (!w) throw new Undecoded();
        const o = modrm();
        o.finish(0);
        o.set(this.regs[o.reg]!);
        this.rip = pc;
        return;
      }
      case 0xc7: { // mov r/m64, imm32 (sign-extended)
        if (!w) throw new Undecoded();
        const o = modrm();
        if ((o.reg & 7) !== 0) throw new Undecoded();
        o.finish(4);
        o.set(s32(fetch(4)) & M64);
        this.rip = pc;
        return;
      }
      case 0x31: { // xor r/m32, r32 (register form only): zero-extends, sets ZF
        if (w) throw new Undecoded();
        const o = modrm();
        if (o.isMem) throw new Undecoded();
        const v = (o.get() ^ this.regs[o.reg]!) & 0xffffffffn;
        o.set(v);
        setZF(v);
        this.rip = pc;
        return;
      }
      case 0x39: { // cmp r/m64, r64
        if (!w) throw new Undecoded();
        const o = modrm();
        o.finish(0);
        setZF(o.get() - this.regs[o.reg]!);
        this.rip = pc;
        return;
      }
      case 0x83: { // cmp r/m64, imm8
        if (!w) throw new Undecoded();
        const o = modrm();
        if ((o.reg & 7) !== 7) throw new Undecoded();
        o.finish(1);
        setZF(o.get() - (s8(fetch(1)) & M64));
        this.rip = pc;
        return;
      }
      case 0xa9: { // test rax, imm32
        if (!w) throw new Undecoded();
        setZF(this.regs[RAX]! & (s32(fetch(4)) & M64));
        this.rip = pc;
        return;
      }
      case 0x9c: this.rip = pc; this.push(this.rflags); return;
      case 0x9d: this.rip = pc; this.rflags = this.pop(); return;
      case 0x74: { const d = s8(fetch(1)); jump((this.rflags & ZF) !== 0n, d); return; }
      case 0x75: { const d = s8(fetch(1)); jump((this.rflags & ZF) === 0n, d); return; }
      case 0xe9: { const d = s32(fetch(4)); jump(true, d); return; }
      case 0xc9: this.rip = pc; this.regs[RSP] = this.regs[RBP]!; this.regs[RBP] = this.pop(); return;
      case 0xc3: this.rip = this.pop(); return;
      case 0xcc: throw new Fault('int3');
      case 0xff: {
        const o = modrm();
        if ((o.reg & 7) !== 2 || o.isMem) throw new Undecoded();
        const target = o.get();
        this.rip = pc;
        this.push(pc);
        this.rip = target;
        return;
      }
      case 0x0f: {
        const b2 = Number(fetch(1));
        if (b2 === 0x0b) throw new Fault('ud2');
        if (b2 === 0x84 || b2 === 0x85) {
          const d = s32(fetch(4));
          jump(((this.rflags & ZF) !== 0n) === (b2 === 0x84), d);
          return;
        }
        if (b2 === 0x01 && fetch(1) === 0xd4n) {
          this.rip = pc;
          this.vmfunc();
          return;
        }
        throw new Undecoded();
      }
      default:
        throw new Undecoded();
    }
  }

  /** VMFUNC leaf 0: EPTP switching to list[ECX]; anything invalid is a VM exit (#UD in the guest). */
  private vmfunc(): void {
    if ((this.regs[RAX]! & 0xffffffffn) !== 0n) throw new Fault('vmfunc: EAX is not 0');
    const i = Number(this.regs[RCX]! & 0xffffffffn);
    if (i >= 512) throw new Fault(`vmfunc: index ${i} >= 512`);
    const eptp = this.slot(i);
    const to = (Object.keys(this.eptps) as Ctx[]).find((c) => this.eptps[c] === eptp);
    if (!to) throw new Fault(`vmfunc: slot ${i} holds 0x${eptp.toString(16)}, not a valid EPTP`);
    this.switches.push({ from: this.ctx, to, rip: this.rip, slot1: this.slot(1), rflags: this.rflags });
    this.ctx = to;
  }
}

const GUEST_STACK = 0x7ffd_0000_0000n;
const RETURN_ADDRESS = 0x5555_5555_0000n;

interface World {
  m: Machine;
  pages: GatePages;
  p: GatePagesParams;
  calls: { regs: bigint[]; ctx: Ctx; slot1: bigint; rflags: bigint }[];
}

/** Builds a machine with the four pages and the stacks/list mapped as the context builder does. */
function world(p: GatePagesParams, result: bigint, built?: GatePages): World {
  const pages = built ?? buildGatePages(p);
  const eptps = { default: 0xdef000n | 0x1en, gate: 0x9a7e000n | 0x1en, sub: p.subEptp };
  const m = new Machine(eptps);
  const rw = (): Page => ({ bytes: new Uint8Array(PAGE_SIZE), perm: 'rw' });
  m.map('default', pages.top.gva, { bytes: pages.top.bytes, perm: 'x' });
  m.map('default', pages.bottom.gva, { bytes: pages.bottom.bytes, perm: 'x' });
  m.map('default', GUEST_STACK - 8n, rw());
  m.map('gate', p.middleGva, { bytes: pages.gate.bytes, perm: 'x' });
  m.map('gate', p.gateEptpListGva, m.list);
  m.map('gate', p.gateStackTop - 8n, rw());
  m.map('sub', p.middleGva, { bytes: pages.sub.bytes, perm: 'x' });
  m.map('sub', p.subEptpListGva, m.list);
  m.map('sub', p.subStackTop - 8n, rw());
  m.map('sub', p.subStackTop - 0x1000n - 8n, rw());
  m.setSlot(EPTP_SLOT_DEFAULT, eptps.default);
  m.setSlot(EPTP_SLOT_GATE, eptps.gate);
  const calls: World['calls'] = [];
  // The entry function: record what it sees, clobber every caller-saved register, return.
  m.hooks.set(`sub:${p.entry}`, (mm) => {
    calls.push({ regs: [...mm.regs], ctx: mm.ctx, slot1: mm.slot(1), rflags: mm.rflags });
    for (const r of [RCX, RDX, RSI, RDI, R8, R9, 10, R11]) mm.regs[r] = 0xbad0_0000n + BigInt(r);
    mm.regs[RAX] = result;
    mm.rip = mm.pop();
  });
  return { m, pages, p, calls };
}

/** Simulates `call elisa_gate_entry` from the guest with the given registers. */
function callGate(w: World, regs: bigint[], ifFlag: boolean): Stop {
  const { m } = w;
  m.regs = [...regs];
  m.regs[RSP] = GUEST_STACK;
  m.rflags = 0x2n | (ifFlag ? IF : 0n);
  m.ctx = 'default';
  m.push(RETURN_ADDRESS);
  m.rip = w.pages.entryGva;
  return m.run(RETURN_ADDRESS);
}

const WB4 = (root: bigint): bigint => root | 6n | (3n << 3n);
const u64 = fc.bigInt(0n, M64);
const regsArb = fc.array(u64, { minLength: 16, maxLength: 16 });

describe('ELISA gate pages in a machine model (round trip, refusal, hostile entry)', function () {
  this.timeout(60_000);

  // Middle pages anywhere in either canonical half, 4- or 5-level; entries anywhere canonical.
  const layouts = fc
    .record({ vaBits: fc.constantFrom<48 | 57>(48, 57), upper: fc.boolean(), frac: fc.bigInt(0n, (1n << 32n) - 1n), root: fc.bigInt(1n, (1n << 40n) - 1n), entry: u64 })
    .map(({ vaBits, upper, frac, root, entry }): GatePagesParams => {
      const half = 1n << BigInt(vaBits - 1);
      const pages = half / 4096n - 0x1000n; // leave room for the 8 MiB sub stack above
      const mid = (upper ? (1n << 64n) - half : 0n) + (1n + ((frac * pages) >> 32n)) * 4096n;
      const canonicalEntry = BigInt.asUintN(64, BigInt.asIntN(vaBits, entry));
      return { ...libelisaLayout(mid, 8n << 20n, vaBits), subEptp: WB4(root << 12n), entry: canonicalEntry };
    });

  it('round trip: six arguments reach the entry, its result returns in RAX, callee-saved registers survive', function () {
    fc.assert(
      fc.property(layouts, regsArb, u64, (p, regs, result) => {
        const w = world(p, result);
        const stop = callGate(w, regs, false);
        expect(stop, JSON.stringify(stop, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString(16) : v))).to.deep.equal({ kind: 'returned' });
        const { m, calls } = w;
        expect(m.regs[RAX]).to.equal(result);
        for (const r of [RBX, RBP, R12, 13, 14, 15]) expect(m.regs[r], `register ${r} preserved`).to.equal(regs[r]);
        expect(m.regs[RSP], 'rsp back after the return').to.equal(GUEST_STACK);
        // what the entry function left in caller-saved registers does not reach the guest
        for (const r of [RCX, RDX, RSI, RDI, R8, R9, 10, R11]) expect(m.regs[r], `register ${r} scrubbed`).to.equal(0n);
        // the entry function ran once, in the sub context, with the caller's arguments
        expect(calls.length).to.equal(1);
        const c = calls[0]!;
        expect(c.ctx).to.equal('sub');
        expect([RDI, RSI, RDX, RCX, R8, R9].map((r) => c.regs[r])).to.deep.equal([RDI, RSI, RDX, RCX, R8, R9].map((r) => regs[r]));
        expect(c.regs[RAX]! & 0xffn, 'AL = 0 for variadic callees').to.equal(0n);
        expect(c.slot1, 'slot 1 already cleared when the entry runs').to.equal(0n);
        // on the sub stack, ABI-aligned: at function entry RSP + 8 is a multiple of 16
        const sp = c.regs[RSP]!;
        expect(sp < p.subStackTop && sp >= p.subStackTop - 64n, 'on the sub stack').to.equal(true);
        expect((sp + 8n) % 16n).to.equal(0n);
        expect(c.regs[RBP]).to.equal(p.subStackTop - 16n);
        // default -> gate -> sub -> default; slot 1 is clear again at the end
        expect(m.switches.map((s) => `${s.from}>${s.to}`)).to.deep.equal(['default>gate', 'gate>sub', 'sub>default']);
        expect(m.switches[2]!.rip, 'sub returns to the bottom page start').to.equal(p.middleGva + 0x1000n);
        expect(m.switches[1]!.rip).to.equal(p.middleGva + BigInt(SUB_ENTRY_OFFSET));
        expect(m.slot(1)).to.equal(0n);
        expect(m.ctx).to.equal('default');
      }),
      { numRuns: 200 },
    );
  });

  it('interrupts enabled: the gate refuses, returns -1 through the bottom page, slot 1 cleared, entry never called', function () {
    fc.assert(
      fc.property(layouts, regsArb, (p, regs) => {
        const w = world(p, 42n);
        const stop = callGate(w, regs, true);
        expect(stop.kind).to.equal('returned');
        expect(w.m.regs[RAX]).to.equal(M64); // -1
        expect(w.calls.length).to.equal(0);
        expect(w.m.slot(1)).to.equal(0n);
        for (const r of [RBX, RBP, R12, 13, 14, 15]) expect(w.m.regs[r]).to.equal(regs[r]);
        expect(w.m.switches.map((s) => `${s.from}>${s.to}`)).to.deep.equal(['default>gate', 'gate>default']);
        expect(w.m.switches[1]!.rip).to.equal(p.middleGva + 0x1000n);
      }),
      { numRuns: 100 },
    );
  });

  it('hostile entry at every byte of the gate page, any registers, IF either way: never back in the default context with slot 1 set, never in the sub context except at its entry with IF = 0', function () {
    // This sub EPTP hides a VMFUNC (0f 01 d4) inside both movabs immediates of the gate code.
    const p: GatePagesParams = { ...libelisaLayout(0x4000_0000n), subEptp: 0xd4_010f_001en, entry: 0x40_1000n };
    const built = buildGatePages(p);
    expect(Buffer.from(built.gate.bytes.subarray(4, 7)).toString('hex')).to.equal('0f01d4');
    const outcomes = new Map<string, number>();
    const rng = fc.sample(fc.tuple(regsArb, fc.boolean(), fc.constantFrom('any', 'list', 'stack')), { numRuns: 6 * PAGE_SIZE, seed: 4 });
    for (let off = 0; off < PAGE_SIZE; off++) {
      for (let t = 0; t < 6; t++) {
        const [regs, ifFlag, rspKind] = rng[off * 6 + t]!;
        const { m } = world(p, 7n, built);
        m.regs = [...regs];
        // point RSP anywhere, or into the list page or gate stack, to attack PUSHFQ
        if (rspKind === 'list') m.regs[RSP] = p.gateEptpListGva + (regs[RSP]! % 513n) * 8n;
        if (rspKind === 'stack') m.regs[RSP] = p.gateStackTop - (regs[RSP]! % 64n) * 8n;
        m.rflags = 0x2n | (ifFlag ? IF : 0n);
        m.ctx = 'gate';
        m.rip = p.middleGva + BigInt(off);
        const stop = m.run(null, 100);
        for (const s of m.switches) {
          if (s.to === 'default') expect(s.slot1, `entered at ${off}: back in default with slot 1 set`).to.equal(0n);
          if (s.to === 'sub') {
            expect(s.rip, `entered at ${off}: sub context entered at the wrong place`).to.equal(p.middleGva + BigInt(SUB_ENTRY_OFFSET));
            expect(s.rflags & IF, `entered at ${off}: sub context entered with IF = 1`).to.equal(0n);
          }
        }
        const key = `${stop.kind}${m.switches.length ? ':' + m.switches.map((s) => s.to).join('>') : ''}`;
        outcomes.set(key, (outcomes.get(key) ?? 0) + 1);
      }
    }
    // sanity: full trips, refusals and the hidden VMFUNC were all exercised
    const keys = [...outcomes.keys()];
    const seen = JSON.stringify([...outcomes]);
    expect(keys.some((k) => k.endsWith(':sub>default')), seen).to.equal(true);
    expect(keys.some((k) => k.endsWith(':default')), seen).to.equal(true);
    expect(outcomes.get('undecoded') ?? 0, seen).to.be.lessThan(6 * PAGE_SIZE / 2);
  });
});
