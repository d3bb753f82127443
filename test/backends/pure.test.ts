// The emulated backend's pure parts, against independent oracles: VMFUNC's rules as the
// SDM states them, and the memory slots derived from an EPT checked with the software
// EPT walker (src/elisa/walk.ts).
import { expect } from 'chai';
import fc from 'fast-check';
import { slotsFromEpt, vmfuncOutcome } from '../../src/elisa/backends/emulated';
import { buildContexts } from '../../src/elisa/context';
import { ArenaAllocator } from '../../src/elisa/memory';
import type { MapRequest } from '../../src/elisa/mapreq';
import { walkEpt } from '../../src/elisa/walk';
import type { ManagerMemory } from '../../src/elisa/backends/backend';

describe('emulated backend: VMFUNC rules', () => {
  const known = new Map<bigint, string>([[0x1000_001en, 'default'], [0x2000_005en, 'gate'], [0x3000_005en, 'sub']]);

  it('matches the SDM for random RAX, RCX and list contents', () => {
    const eptp = fc.oneof(fc.constantFrom(0n, ...known.keys()), fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }));
    fc.assert(fc.property(
      fc.oneof(fc.constant(0n), fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), fc.bigInt({ min: 0n, max: 3n }).map((h) => h << 32n)),
      fc.oneof(fc.integer({ min: 0, max: 600 }).map(BigInt), fc.bigInt({ min: 0n, max: (1n << 64n) - 1n })),
      fc.array(eptp, { minLength: 512, maxLength: 512 }),
      (rax, rcx, list) => {
        const out = vmfuncOutcome(rax, rcx, (i) => list[i]!, known);
        // SDM: EAX (bits 31:0) selects the function; ECX (bits 31:0) the list entry.
        const fn = rax % (1n << 32n), index = rcx % (1n << 32n);
        const entry = index < 512n ? list[Number(index)]! : undefined;
        const shouldSwitch = fn === 0n && entry !== undefined && entry !== 0n && known.has(entry);
        expect(out.ok).to.equal(shouldSwitch);
        if (out.ok) expect(out.target).to.equal(known.get(entry!));
      }), { numRuns: 2000 });
  });

  it('names the reason of each failure', () => {
    const list = new Array<bigint>(512).fill(0n);
    list[3] = 0xdead_b000n;
    const at = (i: number): bigint => list[i]!;
    expect(vmfuncOutcome(1n, 0n, at, known)).to.deep.equal({ ok: false, failure: 'EAX = 0x1: only VM function 0 (EPTP switching) is enabled' });
    expect(vmfuncOutcome(0n, 512n, at, known)).to.deep.equal({ ok: false, failure: 'ECX = 0x200: the EPTP list has 512 entries' });
    expect(vmfuncOutcome(0n, 2n, at, known)).to.deep.equal({ ok: false, failure: 'EPTP list entry 2 is empty' });
    expect(vmfuncOutcome(0n, 3n, at, known)).to.deep.equal({ ok: false, failure: 'EPTP list entry 3 (0xdeadb000) is not the EPTP of a context of this vCPU' });
    list[511] = 0x2000_005en;
    // Upper halves are ignored: RAX = 0xffffffff00000000 is function 0, RCX = 2^32 + 511 is index 511.
    expect(vmfuncOutcome(0xffff_ffff_0000_0000n, (1n << 32n) + 511n, at, known)).to.deep.equal({ ok: true, target: 'gate', slot: 511 });
  });
});

describe('emulated backend: memory slots derived from an EPT', () => {
  it('back exactly the EPT leaves with the arena bytes the walker reaches, read-only where W is denied', () => {
    fc.assert(fc.property(
      fc.uniqueArray(fc.integer({ min: 0, max: 63 }), { minLength: 1, maxLength: 12 }),
      fc.array(fc.boolean(), { minLength: 12, maxLength: 12 }),
      fc.boolean(),
      (pageIdx, writable, contiguous) => {
        const allocator = new ArenaAllocator(2048, 1n << 35n);
        const manager = { allocator } as unknown as ManagerMemory;
        const pages = pageIdx.map(() => allocator.allocate());
        const maps: MapRequest[] = pageIdx.map((p, i) => ({
          name: `page ${p}`, source: { physical: pages[i]!.address },
          gva: 0x4000_0000n + BigInt(p) * 4096n,
          gpa: (1n << 34n) + (64n << 20n) + BigInt(contiguous ? i : p * 2) * 4096n, level: 1,
          pt: { writable: writable[i]! }, ept: { read: true, write: writable[i]!, execute: true, memoryType: 'WB' },
        }));
        const ctx = buildContexts({ allocator, gva: 0x20_0000n, entry: maps[0]!.gva, maps, maxPhysAddr: 36, baseGpa: 1n << 34n,
          subStackSize: 8192n, callerMode: 'supervisor' });
        try {
          const slots = slotsFromEpt(ctx, 'sub', manager);
          const covering = (gpa: bigint) => slots.filter((s) => gpa >= s.gpa && gpa < s.gpa + BigInt(s.size));
          // Every translation the builder made is backed by one slot holding the walker's HPA,
          // except the page-table root's own GPA: its leaf equals the APT fill (both map the
          // root read/write), so it is served where APT is honoured, at the CR3 in force.
          let aptEquivalent = 0;
          for (const m of ctx.sub.mappings) {
            const w = walkEpt(allocator, ctx.sub.eptp, m.gpa, { probe: true });
            expect(w.kind).to.equal('ok');
            if (w.kind !== 'ok') continue;
            if (w.hpa === ctx.sub.ptRoot) { aptEquivalent++; expect(covering(m.gpa)).to.have.length(0); continue; }
            const c = covering(m.gpa);
            expect(c, `GPA 0x${m.gpa.toString(16)} (${m.what})`).to.have.length(1);
            expect(allocator.base + BigInt(c[0]!.offset) + (m.gpa - c[0]!.gpa)).to.equal(w.hpa);
            expect(c[0]!.readonly).to.equal(!w.write);
          }
          // Nothing else: slot bytes add up to the mapped pages, and an unmapped GPA has no
          // slot (the walker resolves it to the APT root instead).
          expect(aptEquivalent).to.equal(1);
          const mappedBytes = (ctx.sub.mappings.length - aptEquivalent) * 4096;
          expect(slots.reduce((n, s) => n + s.size, 0)).to.equal(mappedBytes);
          const hole = (1n << 34n) + (512n << 20n);
          expect(covering(hole)).to.have.length(0);
          const w = walkEpt(allocator, ctx.sub.eptp, hole, { probe: true });
          expect(w.kind === 'ok' && w.hpa).to.equal(ctx.sub.ptRoot);
          // Coalescing: no two slots could have been merged.
          for (let i = 1; i < slots.length; i++) {
            const a = slots[i - 1]!, b = slots[i]!;
            expect(a.gpa + BigInt(a.size) === b.gpa && a.offset + a.size === b.offset && a.readonly === b.readonly).to.equal(false);
          }
        } finally {
          ctx.destroy();
        }
      }), { numRuns: 15 });
  });
});
