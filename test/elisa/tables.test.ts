// Guest page tables and EPTs against the software walker: random mapping sets translate
// exactly as mapped with exactly the requested rights; splits keep every translation;
// conflicting remaps are refused without changing a byte.
import { expect } from 'chai';
import fc from 'fast-check';
import {
  ArenaAllocator, Ept, GuestPageTable, MappingConflictError, walkEpt, walkGuest, encodeEptp,
  type EptFlags, type LeafLevel, type PtFlags, type WalkLevels,
} from '../../src/elisa';

const SIZE = [0n, 1n << 12n, 1n << 21n, 1n << 30n] as const;

interface Leaf { input: bigint; output: bigint; level: LeafLevel; flagIndex: number }

const PT_CHOICES: PtFlags[] = [
  { user: true }, { writable: true }, { writable: true, user: true, noExecute: true }, { noExecute: true }, { user: true, writable: true },
];
const EPT_CHOICES: EptFlags[] = [
  { read: true }, { read: true, write: true }, { execute: true }, { read: true, execute: true, userExecute: true },
  { read: true, write: true, execute: true, memoryType: 'UC' }, { userExecute: true, memoryType: 'WT' }, { read: true, ignorePat: true, memoryType: 'WP' },
];

/** Random non-overlapping leaves inside a few 512 GiB slots (so tables are shared). */
function leafSet(slots: bigint[]): fc.Arbitrary<Leaf[]> {
  const leaf = fc.record({
    slot: fc.constantFrom(...slots),
    l3: fc.integer({ min: 0, max: 3 }),
    l2: fc.integer({ min: 0, max: 5 }),
    l1: fc.integer({ min: 0, max: 511 }),
    level: fc.constantFrom<LeafLevel>(1, 1, 1, 2, 2, 3),
    out: fc.bigInt({ min: 0n, max: (1n << 40n) - 1n }),
    flagIndex: fc.nat(),
  }).map((r) => {
    const raw = (r.slot << 39n) | (BigInt(r.l3) << 30n) | (BigInt(r.l2) << 21n) | (BigInt(r.l1) << 12n);
    const size = SIZE[r.level];
    return { input: raw & ~(size - 1n), output: r.out & ~(size - 1n), level: r.level, flagIndex: r.flagIndex };
  });
  return fc.array(leaf, { maxLength: 40 }).map((all) => {
    const kept: Leaf[] = [];
    for (const l of all) {
      const end = l.input + SIZE[l.level];
      if (kept.every((k) => end <= k.input || l.input >= k.input + SIZE[k.level])) kept.push(l);
    }
    return kept;
  });
}

function sampleOffsets(level: LeafLevel): bigint[] {
  const size = SIZE[level];
  return [0n, size - 8n, size / 2n + 0x123n, size > 4096n ? 4096n * 7n + 5n : 5n];
}

const levelsArb = fc.constantFrom<WalkLevels>(4, 5);

describe('elisa tables', () => {
  it('guest page tables: random mapping sets walk to exactly what was mapped, with exactly the rights', () => {
    fc.assert(fc.property(levelsArb, leafSet([0n, 1n, 255n, 256n, 511n]), (levels, leaves) => {
      const arena = new ArenaAllocator(4096, 0x10_0000n);
      const pt = new GuestPageTable(arena, { levels });
      const bits = levels === 4 ? 48n : 57n;
      const canon = (raw: bigint): bigint => ((raw >> (bits - 1n)) & 1n) ? raw | (((1n << 64n) - 1n) ^ ((1n << bits) - 1n)) : raw;
      // For 5-level, spread the slots over PML5 entries too.
      const place = (l: Leaf): bigint => canon(levels === 5 ? (l.input | ((l.input >> 39n) & 1n) << 48n) : l.input);
      for (const l of leaves) pt.map(place(l), l.output, l.level, PT_CHOICES[l.flagIndex % PT_CHOICES.length]!);
      for (const l of leaves) {
        const want = PT_CHOICES[l.flagIndex % PT_CHOICES.length]!;
        for (const off of sampleOffsets(l.level)) {
          const w = walkGuest(arena, pt.root.address, place(l) + off, levels);
          expect(w.kind, `walk of ${place(l) + off}`).to.equal('ok');
          if (w.kind !== 'ok') continue;
          expect(w.gpa).to.equal(l.output + off);
          expect(w.level).to.equal(l.level);
          expect(w.writable).to.equal(!!want.writable);
          expect(w.user).to.equal(!!want.user);
          expect(w.executable).to.equal(!want.noExecute);
        }
      }
      // Something not mapped does not translate.
      const probe = canon(3n << 39n);
      expect(walkGuest(arena, pt.root.address, probe, levels).kind).to.equal('page-fault');
      expect(pt.leaves().length).to.equal(leaves.length);
      pt.destroy();
      expect(arena.stats().inUse).to.equal(0);
    }), { numRuns: 60 });
  });

  it('EPTs: random mapping sets walk to exactly what was mapped, with exactly the rights and memory type', () => {
    fc.assert(fc.property(levelsArb, leafSet([0n, 1n, 7n, 300n]), (levels, leaves) => {
      const arena = new ArenaAllocator(4096, 0x10_0000n);
      const ept = new Ept(arena, { levels });
      const eptp = encodeEptp({ root: ept.root.address, levels, memoryType: 'WB', accessDirty: false });
      for (const l of leaves) ept.map(l.input, l.output, l.level, EPT_CHOICES[l.flagIndex % EPT_CHOICES.length]!);
      for (const l of leaves) {
        const want = EPT_CHOICES[l.flagIndex % EPT_CHOICES.length]!;
        for (const off of sampleOffsets(l.level)) {
          // Ask for an access the leaf allows, then check the reported rights are exactly the requested ones.
          const access = want.read ? {} : want.execute ? { fetch: true } : { fetch: true, user: true };
          const w = walkEpt(arena, eptp, l.input + off, access);
          expect(w.kind).to.equal('ok');
          if (w.kind !== 'ok') continue;
          expect(w.hpa).to.equal(l.output + off);
          expect(w.level).to.equal(l.level);
          expect({ r: w.read, w: w.write, x: w.execute, xu: w.userExecute, mt: w.memoryType })
            .to.deep.equal({ r: !!want.read, w: !!want.write, x: !!want.execute, xu: !!want.userExecute, mt: want.memoryType ?? 'WB' });
          if (!want.write) expect(walkEpt(arena, eptp, l.input + off, { write: true }).kind).to.equal('violation');
        }
      }
      expect(walkEpt(arena, eptp, 5n << 39n).kind).to.equal('violation');
      ept.destroy();
      expect(arena.stats().inUse).to.equal(0);
    }), { numRuns: 60 });
  });

  it('splitting a large leaf keeps every translation it gave and its rights', () => {
    fc.assert(fc.property(levelsArb, fc.constantFrom<LeafLevel>(2, 3), fc.integer({ min: 0, max: 511 }), fc.integer({ min: 0, max: 511 }), fc.boolean(),
      (levels, big, i, j, identical) => {
        const arena = new ArenaAllocator(256, 0x10_0000n);
        const ept = new Ept(arena, { levels });
        const eptp = encodeEptp({ root: ept.root.address, levels, memoryType: 'WB', accessDirty: false });
        const base = 3n << 30n;
        const hpa = 7n << 30n;
        ept.map(base, hpa, big, { read: true, execute: true });
        // A smaller mapping inside: identical (no-op), or different (needs replace).
        const small = (big - 1) as LeafLevel;
        const at = base + BigInt(i) * SIZE[small];
        const target = identical ? hpa + BigInt(i) * SIZE[small] : 0x4000_0000_0n + BigInt(j) * SIZE[small];
        if (identical) ept.map(at, target, small, { read: true, execute: true });
        else {
          expect(() => ept.map(at, target, small, { read: true, write: true })).to.throw(MappingConflictError, /already mapped.*replace: true/);
          ept.map(at, target, small, { read: true, write: true }, { replace: true });
        }
        // Every other translation of the old large leaf is unchanged (probe each sub-range).
        for (let k = 0; k < 512; k += identical ? 1 : 37) {
          const g = base + BigInt(k) * SIZE[small] + 0x18n;
          const w = walkEpt(arena, eptp, g, { fetch: true });
          if (k === i && !identical) { expect(w.kind).to.equal('violation'); continue; }
          expect(w.kind).to.equal('ok');
          if (w.kind === 'ok') { expect(w.hpa).to.equal(hpa + BigInt(k) * SIZE[small] + 0x18n); expect(w.write).to.equal(false); }
        }
        const moved = walkEpt(arena, eptp, at + 8n, {});
        expect(moved.kind === 'ok' && moved.hpa).to.equal(target + 8n);
        if (!identical && moved.kind === 'ok') expect(moved.write).to.equal(true);
        // Deeper split: a 4 KiB page inside a 1 GiB leaf goes through two splits.
        ept.destroy();
        expect(arena.stats().inUse).to.equal(0);
      }), { numRuns: 80 });
  });

  it('a 4 KiB replacement inside a 1 GiB leaf splits twice and preserves the rest', () => {
    const arena = new ArenaAllocator(64, 0x10_0000n);
    const pt = new GuestPageTable(arena, { levels: 4 });
    pt.map(1n << 30n, 5n << 30n, 3, { writable: true });
    pt.map((1n << 30n) + 0x12_3000n, 0x9000n, 1, { user: true }, { replace: true });
    expect(pt.tablePageCount).to.equal(4); // PML4, PDPT, the PD split from the 1 GiB leaf, the PT split from a 2 MiB leaf
    for (const off of [0n, 0x12_2ff8n, 0x12_4000n, 0x20_0000n, (1n << 30n) - 8n]) {
      const w = walkGuest(arena, pt.root.address, (1n << 30n) + off, 4, { write: true });
      expect(w.kind === 'ok' && w.gpa).to.equal((5n << 30n) + off);
    }
    const w = walkGuest(arena, pt.root.address, (1n << 30n) + 0x12_3010n, 4, { user: true });
    expect(w.kind === 'ok' && w.gpa).to.equal(0x9010n);
    expect(walkGuest(arena, pt.root.address, (1n << 30n) + 0x12_3010n, 4, { write: true }).kind).to.equal('page-fault');
    pt.destroy();
    expect(arena.stats()).to.deep.equal({ allocated: 4, freed: 4, inUse: 0 });
  });

  it('a refused remap changes no byte of any table', () => {
    fc.assert(fc.property(leafSet([0n, 2n]), fc.nat(), (leaves, pick) => {
      fc.pre(leaves.length > 0);
      const arena = new ArenaAllocator(1024, 0x10_0000n);
      const pt = new GuestPageTable(arena, { levels: 4 });
      for (const l of leaves) pt.map(l.input, l.output, l.level, { writable: true });
      const victim = leaves[pick % leaves.length]!;
      const snapshot = pt.tablePages().map((p) => Buffer.from(p.bytes).toString('hex'));
      const before = arena.stats();
      // Remap a page inside the victim to a different GPA: a 4 KiB page at its second page.
      const at = victim.input + (victim.level > 1 ? 4096n : 0n);
      expect(() => pt.map(at, victim.output + 0x1000_0000n, 1, { writable: true })).to.throw(MappingConflictError);
      // Same target, different rights: also a conflict.
      expect(() => pt.map(victim.input, victim.output, victim.level, { writable: false })).to.throw(MappingConflictError);
      expect(pt.tablePages().map((p) => Buffer.from(p.bytes).toString('hex'))).to.deep.equal(snapshot);
      expect(arena.stats()).to.deep.equal(before);
      // Mapping exactly the same thing again is accepted and changes nothing.
      pt.map(victim.input, victim.output, victim.level, { writable: true });
      expect(pt.tablePages().map((p) => Buffer.from(p.bytes).toString('hex'))).to.deep.equal(snapshot);
      pt.destroy();
      expect(arena.stats().inUse).to.equal(0);
    }), { numRuns: 40 });
  });

  it('a large mapping over smaller ones needs replace and frees the tables it drops', () => {
    const arena = new ArenaAllocator(64, 0x10_0000n);
    const ept = new Ept(arena, { levels: 4 });
    ept.map(0x20_0000n + 0x5000n, 0x1000n, 1, { read: true });
    const used = arena.stats().inUse;
    expect(() => ept.map(0x20_0000n, 0x40_0000n, 2, { read: true })).to.throw(MappingConflictError, /GPA 0x205000 is already mapped/);
    ept.map(0x20_0000n, 0x40_0000n, 2, { read: true }, { replace: true });
    expect(arena.stats().inUse).to.equal(used - 1);
    const eptp = encodeEptp({ root: ept.root.address, levels: 4, memoryType: 'WB', accessDirty: false });
    const w = walkEpt(arena, eptp, 0x20_5008n);
    expect(w.kind === 'ok' && w.hpa).to.equal(0x40_5008n);
    ept.destroy();
    expect(arena.stats().inUse).to.equal(0);
  });

  it('validation: alignment, canonical GVAs, physical width, levels, EPT flag combinations', () => {
    const arena = new ArenaAllocator(64, 0x10_0000n);
    const pt = new GuestPageTable(arena, { levels: 4, maxPhysAddr: 46 });
    const ept = new Ept(arena, { levels: 4, maxPhysAddr: 46, executeOnly: false });
    expect(() => pt.map(0x1234n, 0n, 1, {})).to.throw(/GVA of a 4 KiB mapping 0x1234 is not aligned to 0x1000/);
    expect(() => pt.map(0x20_1000n, 0n, 2, {})).to.throw(/GVA of a 2 MiB mapping 0x201000 is not aligned to 0x200000/);
    expect(() => pt.map(0x0000_8000_0000_0000n, 0n, 1, {})).to.throw(/not canonical for 48-bit/);
    expect(() => pt.map(0x1000n, 1n << 46n, 1, {})).to.throw(/beyond the 46-bit physical-address width/);
    expect(() => pt.map(0x1000n, 0n, 0 as LeafLevel, {})).to.throw(/level 0 is not a paging level/);
    expect(() => pt.map(0x1000n, 0n, 6 as LeafLevel, {})).to.throw(/level 6 is not a paging level/);
    expect(() => pt.map(0x1000n, 0n, 4 as LeafLevel, {})).to.throw(/PS is reserved/);
    expect(() => pt.map(0x1000n, 0n, 1, { writeable: true } as PtFlags)).to.throw(/unknown flag 'writeable'/);
    expect(() => ept.map(0x1000n, 0n, 1, { write: true })).to.throw(/write without read is an EPT misconfiguration/);
    expect(() => ept.map(0x1000n, 0n, 1, {})).to.throw(/not present/);
    expect(() => ept.map(0x1000n, 0n, 1, { execute: true })).to.throw(/execute-only/);
    expect(() => ept.map(0x1000n, 0n, 1, { read: true, memoryType: 'XX' as 'WB' })).to.throw(/unknown memory type 'XX'/);
    expect(() => ept.map(1n << 46n, 0n, 1, { read: true })).to.throw(/GPA 0x400000000000 is beyond/);
    expect(() => new GuestPageTable(arena, { levels: 3 as WalkLevels })).to.throw(/only 4- and 5-level/);
    const pt57 = new GuestPageTable(arena, { levels: 5 });
    pt57.map(0x00ff_0000_0000_0000n, 0n, 1, {}); // canonical with LA57, not with 4 levels
    expect(() => pt.map(0x00ff_0000_0000_0000n, 0n, 1, {})).to.throw(/not canonical/);
    expect(() => pt57.map(0x0100_0000_0000_0000n, 0n, 1, {})).to.throw(/not canonical for 57-bit/);
    pt.map(0xffff_8000_0000_0000n, 0x1000n, 1, {});
    expect(() => pt.map(0xffff_8000_0000_0000n, 0x2000n, 1, {})).to.throw(/cannot map GVA 0xffff800000000000 \(4 KiB\): GVA 0xffff800000000000 is already mapped \(4 KiB → GPA 0x1000, P\)/);
    pt.destroy(); ept.destroy(); pt57.destroy();
    expect(arena.stats().inUse).to.equal(0);
  });
});

describe('elisa tables: model-based remapping', () => {
  it('random overlapping maps with replace: every page translates as the last mapping covering it says', () => {
    const op = fc.record({
      level: fc.constantFrom<LeafLevel>(1, 1, 2, 2, 3),
      page: fc.integer({ min: 0, max: (1 << 18) - 1 }), // 4 KiB page index inside one 1 GiB window
      out: fc.integer({ min: 0, max: 1 << 20 }),
      write: fc.boolean(),
    });
    fc.assert(fc.property(fc.array(op, { minLength: 1, maxLength: 30 }), fc.array(fc.integer({ min: 0, max: (1 << 18) - 1 }), { minLength: 20, maxLength: 20 }), (ops, probes) => {
      const arena = new ArenaAllocator(2048, 0x10_0000n);
      const ept = new Ept(arena, { levels: 4 });
      const eptp = encodeEptp({ root: ept.root.address, levels: 4, memoryType: 'WB', accessDirty: false });
      const window = 5n << 30n;
      const done: { base: bigint; size: bigint; out: bigint; write: boolean }[] = [];
      for (const o of ops) {
        const size = SIZE[o.level];
        const base = window + ((BigInt(o.page) << 12n) & ~(size - 1n) & ((1n << 30n) - 1n));
        const out = (BigInt(o.out) << 21n) & ~(size - 1n);
        ept.map(base, out, o.level, { read: true, write: o.write }, { replace: true });
        done.push({ base, size, out, write: o.write });
      }
      const interesting = new Set<bigint>(probes.map((p) => window + (BigInt(p) << 12n)));
      for (const d of done) { interesting.add(d.base); interesting.add(d.base + d.size - 4096n); }
      for (const gpa of interesting) {
        const last = [...done].reverse().find((d) => gpa >= d.base && gpa < d.base + d.size);
        const w = walkEpt(arena, eptp, gpa + 8n);
        if (!last) { expect(w.kind).to.equal('violation'); continue; }
        expect(w.kind).to.equal('ok');
        if (w.kind !== 'ok') continue;
        expect(w.hpa).to.equal(last.out + (gpa - last.base) + 8n);
        expect(w.write).to.equal(last.write);
      }
      ept.destroy();
      expect(arena.stats().inUse).to.equal(0);
    }), { numRuns: 100 });
  });
});
