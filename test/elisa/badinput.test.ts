// Bad input to the builder: each case fails with an error that names the problem, and the
// allocator's counters balance afterwards (nothing leaked, even when the failure comes late).
import { expect } from 'chai';
import fc from 'fast-check';
import {
  ArenaAllocator, buildContexts, BuildError, OutOfMemoryError, type BuildOptions, type MapRequest, type LeafLevel,
} from '../../src/elisa';
import { markerCode } from './support';

const TEXT = 0x4000_0000_0000n; // a "physical" source outside the arena: tables only, no bytes needed
const text = (over: Partial<MapRequest> = {}): MapRequest => ({
  name: 'text', source: { physical: TEXT }, gva: 0x40_0000n, gpa: 0x8000_0000n, level: 1,
  pt: { user: true }, ept: { read: true, execute: true, userExecute: true }, ...over,
});

function attempt(over: Partial<BuildOptions>, pages = 2400): { error: unknown; arena: ArenaAllocator } {
  const arena = new ArenaAllocator(pages, 0x1_0000_0000n);
  let error: unknown;
  try {
    const ctx = buildContexts({ allocator: arena, gva: 0x7f00_0000_0000n, entry: 0x40_0010n, maps: [text()], ...over });
    ctx.destroy();
  } catch (err) { error = err; }
  return { error, arena };
}

const BAD: [string, Partial<BuildOptions>, RegExp][] = [
  ['unaligned requested GVA', { gva: 0x7f00_0000_0800n }, /requested GVA \(the middle page\) 0x7f0000000800 is not aligned to 0x1000/],
  ['non-canonical requested GVA', { gva: 0x8000_0000_0000n }, /not canonical for 48-bit/],
  ['requested GVA whose top page is not canonical', { gva: 0xffff_8000_0000_0000n }, /top page .* must be canonical/],
  ['requested GVA at page 0 (no top page)', { gva: 0n }, /top page/],
  ['non-canonical entry', { entry: 0x0001_0000_0000_0000n }, /entry point 0x1000000000000 is not canonical/],
  ['entry outside any mapping', { entry: 0x50_0000n }, /entry point 0x500000 is not in executable sub-context memory.*not present/],
  ['entry in an NX page', { maps: [text({ pt: { user: true, noExecute: true } })] }, /entry point .* instruction fetch from an NX page/],
  ['entry in a page without EPT execute', { maps: [text({ ept: { read: true } })] }, /entry point .* user execute not allowed/],
  ['entry in a supervisor page', { maps: [text({ pt: {} })] }, /entry point .* user access to a supervisor page/],
  ['entry in the sub stack', { entry: 0x7f00_0000_3000n }, /entry point 0x7f0000003000 .*NX page/],
  ['overlapping requests in GVA space', { maps: [text(), text({ name: 'data', gpa: 0x9000_0000n, source: { physical: TEXT + 0x1000n } })] },
    /map request 1 \(data\) overlaps map request 0 \(text\) in GVA space: \[0x400000, 0x401000\) and \[0x400000, 0x401000\)/],
  ['overlapping requests in GVA space (2 MiB over 4 KiB)', { maps: [text({ gva: 0x50_0000n }), text({ name: 'big', gva: 0x40_0000n, gpa: 0xa000_0000n, source: { physical: TEXT + 0x20_0000n }, level: 2 })] },
    /map request 1 \(big\) overlaps map request 0 \(text\) in GVA space: \[0x500000, 0x501000\) and \[0x400000, 0x600000\)/],
  ['overlapping requests in GPA space', { maps: [text(), text({ name: 'other', gva: 0x60_0000n, source: { physical: TEXT + 0x1000n } })] },
    /map request 1 \(other\) overlaps map request 0 \(text\) in GPA space/],
  ['unaligned request GVA', { maps: [text({ gva: 0x40_0800n })] }, /map request 0 \(text\): GVA of a 4 KiB mapping 0x400800 is not aligned/],
  ['unaligned request GPA for 2 MiB', { maps: [text({ gva: 0x40_0000n, gpa: 0x8000_1000n, level: 2, source: { physical: TEXT } })] }, /GPA of a 2 MiB mapping 0x80001000 is not aligned to 0x200000/],
  ['unaligned source for 1 GiB', { maps: [text({ gva: 0x4000_0000n, gpa: 0x4000_0000n, level: 3, source: { physical: TEXT + 0x20_0000n } })], entry: 0x4000_0000n }, /source physical address 0x400000200000 is not aligned to 1 GiB/],
  ['non-canonical request GVA', { maps: [text({ gva: 0x0000_9000_0000_0000n })] }, /map request 0 \(text\): GVA 0x900000000000 is not canonical/],
  ['request GPA beyond the physical width', { maxPhysAddr: 40, maps: [text({ gpa: 1n << 40n })] }, /GPA 0x10000000000 \(\+4 KiB\) is beyond the 40-bit guest-physical reach/],
  ['source beyond the physical width', { maxPhysAddr: 40, maps: [text({ source: { physical: 1n << 41n } })] }, /source physical address 0x20000000000 is beyond the 40-bit/],
  ['level 0', { maps: [text({ level: 0 as LeafLevel })] }, /level 0 is not a paging level/],
  ['level 6', { maps: [text({ level: 6 as LeafLevel })] }, /level 6 is not a paging level/],
  ['level 4', { maps: [text({ level: 4 as LeafLevel })] }, /PS is reserved/],
  ['EPT write without read', { maps: [text({ ept: { write: true, execute: true } })] }, /write without read is an EPT misconfiguration/],
  ['request over the EPTP list GVA', { maps: [text({ gva: 0x7f00_0000_1000n })] }, /overlaps the middle page and the EPTP list page/],
  ['request over the sub stack GVA', { maps: [text({ gva: 0x7f00_0040_0000n, level: 2 })] }, /overlaps the sub stack/],
  ['request over the context GPAs', { maps: [text({ gpa: (1n << 38n) + 0x5000n })] }, /GPA range .* overlaps the gate\/sub code, EPTP list and stack pages/],
  ['request GPA inside the page-table window', { maps: [text({ gpa: (1n << 38n) + (1n << 30n) + 0x5000n })] }, /GPA range \[0x4040005000, 0x4040006000\) overlaps the page-table GPA window at \[0x4040000000, 0x4080000000\)/],
  ['request GPA over a page-table page placed at its physical address', { tableGpaBase: 'physical', maps: [text({ gpa: 0x1_0080_0000n, level: 2 })] }, /cannot map page-table page .* already mapped/],
  ['page-table window overlapping the context pages', { tableGpaBase: (1n << 38n) - (1n << 29n) }, /page-table GPA window 0x3fe0000000 \(\+1 GiB\) overlaps the context pages/],
  ['page-table window beyond the physical reach', { maxPhysAddr: 39, tableGpaBase: (1n << 39n) - (1n << 29n), baseGpa: 1n << 30n, maps: [text({ source: { physical: 0x20_0000n } })] }, /page-table GPA window 0x7fe0000000 \(\+1 GiB\) ends beyond the 0x8000000000 guest-physical reach/],
  ['virtual source without a resolver', { maps: [text({ source: { virtual: 0x1000n } })] }, /cannot resolve virtual addresses/],
  ['a stack that fits nowhere', { gva: 0xffff_8000_0000_1000n, subStackSize: 1n << 47n }, /no room for a 0x800000000000-byte sub stack/],
  ['unaligned stack size', { subStackSize: 0x1800n }, /sub stack size 0x1800 is not a positive multiple of 4 KiB/],
  ['guest paging levels 3', { ptLevels: 3 as 4 }, /only 4- and 5-level/],
  ['EPT levels 6', { eptLevels: 6 as 4 }, /only 4- and 5-level/],
  ['a code generator that fails', { codeGenerator: () => { throw new Error('assembler exploded'); } }, /code generation failed: assembler exploded/],
  ['a code generator that returns a short page', { codeGenerator: (p) => ({ ...markerCode(p), sub: new Uint8Array(10) }) }, /sub page of 10 bytes/],
];

describe('elisa builder: bad input', () => {
  for (const [title, over, message] of BAD) {
    it(`${title} → clear error, no page leaked`, () => {
      const { error, arena } = attempt(over);
      expect(error, 'expected an error').to.be.instanceOf(Error);
      expect((error as Error).message).to.match(message);
      const s = arena.stats();
      expect(s.inUse, `leaked ${s.inUse} pages`).to.equal(0);
      expect(s.allocated).to.equal(s.freed);
    });
  }

  it('running out of pages at any point of the build leaks nothing', () => {
    // A full build takes N pages; every smaller arena fails somewhere else in the sequence.
    const full = attempt({ subStackSize: 0x4000n }, 64).arena.stats().allocated;
    fc.assert(fc.property(fc.integer({ min: 1, max: full - 1 }), (pages) => {
      const { error, arena } = attempt({ subStackSize: 0x4000n }, pages);
      expect(error).to.be.instanceOf(OutOfMemoryError);
      expect(arena.stats().inUse).to.equal(0);
    }), { numRuns: Math.min(full - 1, 100) });
  });

  it('accepts an exact alias (two GVAs, same GPA, same source and rights)', () => {
    const { error } = attempt({ maps: [text(), text({ name: 'alias', gva: 0x60_0000n })] });
    expect(error).to.equal(undefined);
  });

  it('errors are BuildErrors for input problems', () => {
    expect(attempt({ gva: 0x123n }).error).to.be.instanceOf(BuildError);
  });
});
