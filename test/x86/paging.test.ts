import { expect } from 'chai';
import fc from 'fast-check';
import { buildIdentityMap } from '../../src/x86/paging';
import { PAGE_TABLES_GPA } from '../../src/x86/layout';

/**
 * A software walk of 4-level x86-64 paging (Intel SDM vol. 3, 4.5), written here from
 * the manual, not shared with the builder: returns the physical address, the page size
 * and the effective R/W and U/S permissions, or the level at which the walk failed.
 */
function walk(memory: Uint8Array, cr3: number, va: bigint) {
  const view = new DataView(memory.buffer, memory.byteOffset, memory.byteLength);
  let table = BigInt(cr3) & ~0xfffn;
  let writable = true;
  let user = true;
  for (const [level, shift] of [[4, 39n], [3, 30n], [2, 21n], [1, 12n]] as const) {
    const index = (va >> shift) & 0x1ffn;
    const entry = view.getBigUint64(Number(table + index * 8n), true);
    if ((entry & 1n) === 0n) return { fault: level };
    writable &&= (entry & 2n) !== 0n;
    user &&= (entry & 4n) !== 0n;
    const frame = entry & 0x000ffffffffff000n;
    const large = (entry & 0x80n) !== 0n;
    if (level === 1 || (large && (level === 2 || level === 3))) {
      const size = 1n << shift;
      return { pa: (frame & ~(size - 1n)) | (va & (size - 1n)), size, writable, user, nx: (entry >> 63n) === 1n };
    }
    table = frame;
  }
  throw new Error('unreachable');
}

describe('identity page tables', function () {
  const MIB = 1 << 20;
  // Tables for up to 3 GiB need 2 + 3 + 1 pages at 0x10000: 16 MiB of memory is plenty.
  const memory = new Uint8Array(16 * MIB);

  it('map every address below the size to itself, writable, supervisor, executable (property)', function () {
    fc.assert(fc.property(
      fc.integer({ min: 1, max: 3 * 1024 }).map((mib) => mib * MIB - 1), // sizes 1 MiB - 1 .. 3 GiB
      fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { minLength: 1, maxLength: 20 }),
      (bytes, fractions) => {
        const map = buildIdentityMap(memory, { bytes });
        expect(map.cr3).to.equal(PAGE_TABLES_GPA);
        expect(map.mappedBytes % (2 * MIB)).to.equal(0);
        expect(map.mappedBytes).to.be.at.least(bytes);
        for (const f of fractions) {
          const va = BigInt(0x1000 + Math.floor(f * (map.mappedBytes - 0x1000 - 1)));
          const r = walk(memory, map.cr3, va);
          expect(r, `va 0x${va.toString(16)}`).to.deep.include({ pa: va, writable: true, user: false, nx: false });
          expect(r.size).to.equal(va < 2n * BigInt(MIB) ? 0x1000n : 0x200000n);
        }
        // just past the mapped size, and page 0 (the null guard), are not present
        expect(walk(memory, map.cr3, BigInt(map.mappedBytes))).to.have.property('fault');
        expect(walk(memory, map.cr3, 0x123n)).to.deep.equal({ fault: 1 });
      }), { numRuns: 60 });
  });

  it('set U/S everywhere when asked, and can leave page 0 mapped', function () {
    const map = buildIdentityMap(memory, { bytes: 4 * MIB, user: true, nullGuard: false });
    for (const va of [0n, 0x123n, 0x1fffffn, 0x3fffffn]) {
      expect(walk(memory, map.cr3, va)).to.deep.include({ pa: va, user: true, writable: true, size: 0x200000n });
    }
  });

  it('refuse sizes the table area cannot hold, naming the limit', function () {
    expect(() => buildIdentityMap(memory, { bytes: 64 * 1024 * MIB })).to.throw(RangeError, /needs 67 table pages .* past the limit 0x30000/);
    expect(() => buildIdentityMap(memory, { bytes: 0 })).to.throw(RangeError, /positive integer/);
    expect(() => buildIdentityMap(memory, { bytes: 600 * 1024 * MIB })).to.throw(RangeError, /512 GiB/);
  });
});
