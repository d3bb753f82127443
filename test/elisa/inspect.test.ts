// `elisa inspect` output checked by a walker written here from the SDM bit layout alone
// (it imports nothing from src/elisa): the JSON must be complete enough to walk, and the
// walk must agree with what the builder says it built.
import { expect } from 'chai';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect, inspectBuild } from '../../src/cli/commands/inspect';
import { main } from '../../src/cli/main';

interface Dump {
  gva: string; entry: string; eptpList: string;
  contexts: Record<'gate' | 'sub', { eptp: string; ptRoot: string }>;
  pages: Record<string, string>;
}

async function run(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '', err = '';
  const code = await inspect.run(argv, { out: (t) => { out += t + '\n'; }, err: (t) => { err += t + '\n'; } });
  return { code, out, err };
}

/** An SDM-only walker over the dumped pages. Returns the physical address or a failure string. */
class Checker {
  constructor(private readonly d: Dump) {
    for (const [addr, hexBytes] of Object.entries(d.pages)) {
      expect(addr).to.match(/^0x[0-9a-f]+$/);
      expect(BigInt(addr) % 4096n).to.equal(0n);
      expect(hexBytes).to.match(/^[0-9a-f]{8192}$/);
    }
  }

  qword(phys: bigint): bigint {
    const page = '0x' + (phys & ~0xfffn).toString(16);
    const text = this.d.pages[page];
    if (text === undefined) return 0n; // omitted pages are all-zero
    const off = Number(phys & 0xfffn) * 2;
    return Buffer.from(text.slice(off, off + 16), 'hex').readBigUInt64LE();
  }

  /** EPT walk: bits 2:0 R/W/X, bit 7 large page, bits 51:12 address; walk length from EPTP bits 5:3. */
  ept(eptp: bigint, gpa: bigint, need: 'r' | 'w' | 'xu'): bigint | string {
    const levels = Number((eptp >> 3n) & 7n) + 1;
    let table = eptp & 0x000f_ffff_ffff_f000n;
    for (let level = levels; level >= 1; level--) {
      const shift = BigInt(12 + 9 * (level - 1));
      const e = this.qword(table + ((gpa >> shift) & 511n) * 8n);
      if ((e & 7n) === 0n && !(e & (1n << 10n))) return `EPT L${level} not present`;
      if ((e & 2n) && !(e & 1n)) return 'EPT misconfiguration';
      if (level === 1 || (e & 0x80n)) {
        const ok = need === 'r' ? e & 1n : need === 'w' ? e & 2n : e & (1n << 10n);
        if (!ok) return `EPT denies ${need}`;
        return (e & 0x000f_ffff_ffff_f000n & ~((1n << shift) - 1n)) | (gpa & ((1n << shift) - 1n));
      }
      table = e & 0x000f_ffff_ffff_f000n;
    }
    return 'unreachable';
  }

  /** Guest walk, every table read translated through the EPT (with A/D on, a write). */
  walk(ctx: 'gate' | 'sub', cr3: bigint, gva: bigint, need: 'r' | 'w' | 'xu', levels: number): bigint | string {
    const eptp = BigInt(this.d.contexts[ctx].eptp);
    const ad = (eptp & 0x40n) !== 0n;
    let table = cr3 & 0x000f_ffff_ffff_f000n;
    for (let level = levels; level >= 1; level--) {
      const shift = BigInt(12 + 9 * (level - 1));
      const at = this.ept(eptp, table + ((gva >> shift) & 511n) * 8n, ad ? 'w' : 'r');
      if (typeof at === 'string') return `reading guest L${level}: ${at}`;
      const e = this.qword(at);
      if (!(e & 1n)) return `guest L${level} not present`;
      if (level === 1 || (e & 0x80n)) {
        const gpa = (e & 0x000f_ffff_ffff_f000n & ~((1n << shift) - 1n)) | (gva & ((1n << shift) - 1n));
        return this.ept(eptp, gpa, need);
      }
      table = e & 0x000f_ffff_ffff_f000n;
    }
    return 'unreachable';
  }
}

describe('elisa inspect', () => {
  for (const [levels, gva, entry] of [[4, 0x7f00_0000_0000n, 0x40_0123n], [5, 0x00aa_0000_0000_0000n, 0x1234_5678_9000n]] as const) {
    it(`dumps ${levels}-level contexts that an independent walker walks the way the builder built them`, async () => {
      const { code, out } = await run(['--gva', '0x' + gva.toString(16), '--entry', '0x' + entry.toString(16), '--levels', String(levels)]);
      expect(code).to.equal(0);
      const dump = JSON.parse(out) as Dump;
      expect(dump.gva).to.equal('0x' + gva.toString(16));
      expect(dump.entry).to.equal('0x' + entry.toString(16));
      const check = new Checker(dump);
      // The same build, through the library: the dump must describe exactly it.
      const { ctx } = inspectBuild({ gva, entry, levels, maps: [] });
      try {
        for (const name of ['gate', 'sub'] as const) {
          const eptp = BigInt(dump.contexts[name].eptp);
          expect(eptp).to.equal(ctx[name].eptp);
          expect(eptp & 0x3fn).to.equal(6n | (BigInt(levels - 1) << 3n)); // WB, walk length = levels
          expect(BigInt(dump.contexts[name].ptRoot)).to.equal(ctx[name].ptRoot);
          // APT: CR3 anywhere unmapped (here: several arbitrary GPAs) leads to the same leaves.
          for (const cr3 of [0n, 0x1234_5000n, 0x7_0000_0000n, BigInt(dump.contexts[name].ptRoot)]) {
            const code = check.walk(name, cr3, gva + 0x10n, 'xu', levels);
            expect(code).to.equal((name === 'gate' ? ctx.dataPages.gateCode : ctx.dataPages.subCode).address + 0x10n);
            expect(check.walk(name, cr3, gva, 'r', levels)).to.equal('EPT denies r'); // execute-only code
            expect(check.walk(name, cr3, gva + 4096n, 'w', levels)).to.equal(BigInt(dump.eptpList));
          }
          // Any unmapped GPA reads as the root.
          expect(check.ept(eptp, 0x3_0000_0000n + 0x18n, 'r')).to.equal(BigInt(dump.contexts[name].ptRoot) + 0x18n);
        }
        // The entry function: in the sub context only, and the dumped page holds its RET.
        const at = check.walk('sub', 0n, entry, 'xu', levels);
        expect(typeof at).to.equal('bigint');
        expect(check.qword((at as bigint) & ~7n) >> (8n * ((at as bigint) & 7n)) & 0xffn).to.equal(0xc3n);
        expect(check.walk('gate', 0n, entry, 'xu', levels)).to.match(/^guest L[1-5] not present$/);
        // The EPTP list: slot 511 = gate EPTP, slot 1 and 0 empty; the code pages are dumped.
        const list = BigInt(dump.eptpList);
        expect(check.qword(list + 511n * 8n)).to.equal(BigInt(dump.contexts.gate.eptp));
        expect(check.qword(list + 8n)).to.equal(0n);
        expect(check.qword(list)).to.equal(0n);
        for (const page of [ctx.dataPages.gateCode, ctx.dataPages.subCode, ...ctx.sub.ept.tablePages(), ...ctx.gate.pt.tablePages()]) {
          expect(dump.pages['0x' + page.address.toString(16)], `page 0x${page.address.toString(16)}`).to.equal(Buffer.from(page.bytes).toString('hex'));
        }
      } finally {
        ctx.destroy();
      }
    });
  }

  it('takes extra map requests from a file', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'elisa-inspect-'));
    const file = join(dir, 'maps.json');
    writeFileSync(file, JSON.stringify([
      { name: 'heap', gva: '0x600000', gpa: '0x50000000', level: 1, pt: { writable: true, user: true, noExecute: true }, ept: { read: true, write: true } },
      { name: 'big', gva: '0x40000000', gpa: '0x80000000', level: 2, source: { guestPhysical: '0x200000000' }, pt: { user: true }, ept: { read: true } },
    ]));
    const { out } = await run(['--map', file]);
    const dump = JSON.parse(out) as Dump;
    const check = new Checker(dump);
    expect(typeof check.walk('sub', 0n, 0x60_0008n, 'w', 4)).to.equal('bigint');
    expect(check.walk('sub', 0n, 0x4012_3456n, 'r', 4)).to.equal(0x2_0012_3456n);
    expect(check.walk('gate', 0n, 0x4012_3456n, 'r', 4)).to.match(/^guest L[1-5] not present$/);
  });

  it('describes a walk in words, and rejects bad options through the CLI', async () => {
    const { out } = await run(['--describe', '0x7f0000001008']);
    expect(out).to.match(/gate context \(EPTP 0x[0-9a-f]+/).and.match(/sub context/).and.match(/guest L1 table/).and.match(/→ GPA 0x4000001008/);
    const saved = process.stderr.write;
    let err = '';
    process.stderr.write = ((t: string) => { err += t; return true; }) as typeof process.stderr.write;
    try {
      expect(await main(['inspect', '--levels', '6'])).to.equal(2);
      expect(await main(['inspect', '--gva', '0x8000000000000000'])).to.equal(1);
    } finally { process.stderr.write = saved; }
    expect(err).to.match(/--levels must be 4 or 5, not 6/).and.match(/requested GVA .* is not canonical/);
  });
});
