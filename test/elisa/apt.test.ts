// APT: every unmapped GPA resolves to the context's page-table root, so whatever CR3 holds
// (if it is not a mapped GPA) the 2-D walk reaches the same leaves.
import { expect } from 'chai';
import fc from 'fast-check';
import {
  ArenaAllocator, Ept, GuestPageTable, buildContexts, walk2d, walkEpt, type WalkLevels,
} from '../../src/elisa';
import { markerCode } from './support';

const levelsArb = fc.constantFrom<WalkLevels>(4, 5);

/** A small context by hand: a few GVA→GPA→HPA pages, tables mapped at their own GPAs, APT. */
function handContext(ptLevels: WalkLevels, eptLevels: WalkLevels) {
  const arena = new ArenaAllocator(256, 0x8000_0000n);
  const pt = new GuestPageTable(arena, { levels: ptLevels });
  const ept = new Ept(arena, { levels: eptLevels });
  const data = [arena.allocate(), arena.allocate(), arena.allocate()];
  const gvas = [0x40_0000n, 0x7fff_ffff_f000n, 0xffff_8000_0000_1000n].map((g) =>
    ptLevels === 5 && g > 0xffffn << 48n ? g | (0x1ffn << 48n) : g);
  data.forEach((page, i) => {
    const gpa = 0x10_0000_0000n + BigInt(i) * 0x20_0000n;
    pt.map(gvas[i]!, gpa, 1, { writable: true, user: true });
    ept.map(gpa, page.address, 1, { read: true, write: true, execute: true });
  });
  for (const p of pt.tablePages()) ept.map(p.address, p.address, 1, { read: true, write: true });
  const mapped = (gpa: bigint): boolean => ept.lookup(gpa).mapped;
  ept.fillApt(pt.root.address);
  const eptp = ept.eptp({ accessDirty: true });
  return { arena, pt, ept, eptp, data, gvas, mapped };
}

describe('elisa APT', () => {
  it('every unmapped GPA resolves to the page-table root (random GPAs, 4- and 5-level EPT)', () => {
    fc.assert(fc.property(levelsArb, levelsArb, fc.array(fc.bigInt({ min: 0n, max: (1n << 52n) - 1n }), { minLength: 1, maxLength: 50 }), (ptL, eptL, gpas) => {
      const c = handContext(ptL, eptL);
      for (const raw of gpas) {
        const gpa = eptL === 4 ? raw & ((1n << 48n) - 1n) : raw;
        const w = walkEpt(c.arena, c.eptp, gpa, { write: true });
        expect(w.kind).to.equal('ok');
        if (w.kind !== 'ok') continue;
        if (c.mapped(gpa)) expect(w.hpa >> 12n).to.not.equal(c.pt.root.address >> 12n);
        else expect(w.hpa).to.equal(c.pt.root.address + (gpa & 0xfffn));
        // The APT leaf grants no execute.
        if (!c.mapped(gpa)) expect(walkEpt(c.arena, c.eptp, gpa, { fetch: true }).kind).to.equal('violation');
      }
    }), { numRuns: 40 });
  });

  it('the highest GPA takes root index 15 with a 5-level EPT and 511 with a 4-level EPT, and reaches the root', () => {
    for (const [levels, gpa, index] of [[5, (1n << 52n) - 4096n, 15], [4, (1n << 48n) - 4096n, 511]] as const) {
      const c = handContext(4, levels);
      const w = walkEpt(c.arena, c.eptp, gpa);
      expect(w.steps[0]!.index).to.equal(index);
      expect(w.kind === 'ok' && w.hpa).to.equal(c.pt.root.address);
    }
  });

  it('for random CR3 values at unmapped GPAs the 2-D walk reaches the same leaves', () => {
    fc.assert(fc.property(levelsArb, levelsArb, fc.array(fc.bigInt({ min: 0n, max: (1n << 48n) - 1n }), { minLength: 1, maxLength: 20 }), (ptL, eptL, cr3s) => {
      const c = handContext(ptL, eptL);
      for (const raw of cr3s) {
        const cr3 = raw & ~0xfffn | (raw & 0x18n); // PWT/PCD bits may be set in CR3
        fc.pre(!c.mapped(cr3 & ~0xfffn) || (cr3 & ~0xfffn) === c.pt.root.address);
        c.gvas.forEach((gva, i) => {
          const w = walk2d({ mem: c.arena, eptp: c.eptp, cr3, levels: ptL }, gva + 0x10n, { write: true, user: true });
          expect(w.kind, `CR3 ${cr3.toString(16)} GVA ${gva.toString(16)}`).to.equal('ok');
          expect(w.kind === 'ok' && w.hpa).to.equal(c.data[i]!.address + 0x10n);
        });
      }
    }), { numRuns: 40 });
  });

  it('mapping after the APT fill keeps every other unmapped GPA on the root', () => {
    const c = handContext(4, 4);
    const page = c.arena.allocate();
    const gpa = 0x1234_5678_9000n;
    c.ept.map(gpa, page.address, 1, { read: true });
    const hit = walkEpt(c.arena, c.eptp, gpa + 8n);
    expect(hit.kind === 'ok' && hit.hpa).to.equal(page.address + 8n);
    for (const near of [gpa - 4096n, gpa + 4096n, gpa + (1n << 21n), gpa ^ (1n << 30n)]) {
      const w = walkEpt(c.arena, c.eptp, near);
      expect(w.kind === 'ok' && w.hpa).to.equal(c.pt.root.address);
    }
  });

  it('built contexts: any unmapped CR3 reaches the gate code (gate) and the sub code (sub) at the middle GVA', () => {
    fc.assert(fc.property(levelsArb, levelsArb, fc.bigInt({ min: 1n << 20n, max: (1n << 35n) - 4096n }), fc.array(fc.bigInt({ min: 0n, max: (1n << 48n) - 1n }), { minLength: 1, maxLength: 8 }),
      (ptL, eptL, gpage, cr3s) => {
        const arena = new ArenaAllocator(2400, 0x1_0000_0000n);
        const entryPage = arena.allocate();
        const gva = gpage << 12n;
        const ctx = buildContexts({
          allocator: arena, codeGenerator: markerCode, gva, entry: 0x50_0000n, ptLevels: ptL, eptLevels: eptL,
          maps: [{ source: { physical: entryPage.address }, gva: 0x50_0000n, gpa: 0x60_0000n, level: 1, pt: { user: true }, ept: { read: true, execute: true, userExecute: true } }],
        });
        for (const raw of cr3s) {
          const cr3 = raw & ~0xfffn;
          for (const [name, code] of [['gate', ctx.dataPages.gateCode], ['sub', ctx.dataPages.subCode]] as const) {
            const c = ctx[name];
            fc.pre(!c.ept.lookup(cr3).mapped);
            const w = walk2d({ mem: arena, eptp: c.eptp, cr3, levels: ptL }, ctx.gva + 0x40n, { fetch: true, user: true });
            expect(w.kind, `${name}: ${w.kind !== 'ok' ? w.reason : ''}`).to.equal('ok');
            expect(w.kind === 'ok' && w.hpa).to.equal(code.address + 0x40n);
          }
        }
        ctx.destroy();
        arena.free(entryPage);
        expect(arena.stats().inUse).to.equal(0);
      }), { numRuns: 15 });
  });
});

describe('elisa APT after the CPU ran', () => {
  it('entries the CPU marked accessed/dirty still count as APT (empty) and as the same translation', () => {
    const arena = new ArenaAllocator(64, 0x8000_0000n);
    const pt = new GuestPageTable(arena, { levels: 4 });
    const ept = new Ept(arena, { levels: 4 });
    const data = arena.allocate();
    ept.map(0x5000n, data.address, 1, { read: true, write: true });
    ept.fillApt(pt.root.address);
    const eptp = ept.eptp();
    const view = new DataView(ept.root.bytes.buffer, ept.root.bytes.byteOffset, 4096);
    // The CPU walked GPA 0x3_0000_0000_0000 (root index 96, an APT entry) and set A and D.
    view.setBigUint64(96 * 8, view.getBigUint64(96 * 8, true) | (3n << 8n), true);
    const page = arena.allocate();
    ept.map(0x3000_0000_0000n, page.address, 1, { read: true });
    const w = walkEpt(arena, eptp, 0x3000_0000_0010n);
    expect(w.kind === 'ok' && w.hpa).to.equal(page.address + 0x10n);
    const other = walkEpt(arena, eptp, 0x3000_0020_0000n);
    expect(other.kind === 'ok' && other.hpa).to.equal(pt.root.address);
    // A leaf with A/D set by the CPU: mapping it again identically is not a conflict.
    const leafTable = ept.tablePages().find((p) => new DataView(p.bytes.buffer, p.bytes.byteOffset, 4096).getBigUint64(5 * 8, true) >> 12n === data.address >> 12n)!;
    const lv = new DataView(leafTable.bytes.buffer, leafTable.bytes.byteOffset, 4096);
    lv.setBigUint64(5 * 8, lv.getBigUint64(5 * 8, true) | (3n << 8n), true);
    ept.map(0x5000n, data.address, 1, { read: true, write: true });
  });
});

describe('elisa APT and the guest RAM below the base GPA', () => {
  it('with the default table window, every CR3 below 256 GiB outside the application GPAs reaches the code', () => {
    const arena = new ArenaAllocator(2400, 0x1_0000_0000n);
    const entryPage = arena.allocate();
    const ctx = buildContexts({
      allocator: arena, gva: 0x7f00_0000_0000n, entry: 0x50_0000n,
      maps: [{ source: { physical: entryPage.address }, gva: 0x50_0000n, gpa: 0x60_0000n, level: 1, pt: { user: true }, ept: { read: true, execute: true, userExecute: true } }],
    });
    // Every context GPA but the application's lies at or above the base: guest RAM below it is all APT.
    for (const c of [ctx.gate, ctx.sub]) {
      for (const m of c.mappings) if (m.gpa !== 0x60_0000n) expect(m.gpa >= 1n << 38n, `${m.what} at ${m.gpa.toString(16)}`).to.equal(true);
      expect(c.ptRootGpa).to.equal((1n << 38n) + (1n << 30n)); // each context's first table, in its own window
    }
    fc.assert(fc.property(fc.bigInt({ min: 0n, max: (1n << 26n) - 1n }), (page) => {
      const cr3 = page << 12n;
      fc.pre(cr3 !== 0x60_0000n);
      for (const [name, code] of [['gate', ctx.dataPages.gateCode], ['sub', ctx.dataPages.subCode]] as const) {
        const w = walk2d({ mem: arena, eptp: ctx[name].eptp, cr3, levels: 4 }, ctx.gva, { fetch: true, user: true });
        expect(w.kind === 'ok' && w.hpa).to.equal(code.address);
      }
    }), { numRuns: 200 });
    ctx.destroy();
    arena.free(entryPage);
    expect(arena.stats().inUse).to.equal(0);
  });
});
