// The generated gate pages, disassembled by GNU objdump, against the instruction
// sequences ELISA needs (written out here by hand), for a fixed example and for random
// GVAs, stack tops, EPTP-list positions, EPTPs and entry points; plus bad parameters.
import { expect } from 'chai';
import fc from 'fast-check';
import {
  buildEntryPages, buildGateCodePage, buildGatePages, buildSubCodePage, libelisaLayout, checkEptp, verifyGatePages,
  trapVmfuncs,
  GATE_ENTRY_OFFSET, SUB_ENTRY_OFFSET, RETURN_OFFSET, PAGE_SIZE,
  EPTP_SLOT_DEFAULT, EPTP_SLOT_SUB, EPTP_SLOT_GATE, GateError,
  type GatePages, type GatePagesParams, type GeneratedPage,
} from '../../src/elisa/gate';
import { disassembleMany, gnuAssemble, hexBytes, type DisasmLine } from '../support/objdump';

const h = (v: bigint | number): string => `0x${BigInt(v).toString(16)}`;

/** Non-int3 runs of a page: [start offset, lines]; everything else must be int3. */
function runs(lines: DisasmLine[]): { start: number; end: number; lines: DisasmLine[] }[] {
  const out: { start: number; end: number; lines: DisasmLine[] }[] = [];
  for (const l of lines) {
    if (l.text === 'int3') continue;
    const last = out[out.length - 1];
    if (last && last.end === l.offset) {
      last.lines.push(l);
      last.end += l.bytes.length;
    } else {
      out.push({ start: l.offset, end: l.offset + l.bytes.length, lines: [l] });
    }
  }
  return out;
}

/** Instruction text with RIP displacements elided (their targets are checked separately). */
const txt = (l: DisasmLine): string => l.text.replace(/\[rip\+0x[0-9a-f]+\]/, '[rip+X]');

/**
 * Checks every page of `pages` against the expected instruction sequences for `p`,
 * using only objdump's view of the bytes (plus the exported constants under test).
 */
function checkPages(p: GatePagesParams, pages: GatePages, dis: Record<'top' | 'bottom' | 'gate' | 'sub', DisasmLine[]>): void {
  const mid = p.middleGva;
  for (const k of ['top', 'bottom', 'gate', 'sub'] as const) {
    expect(pages[k].bytes.length, `${k} size`).to.equal(PAGE_SIZE);
    // objdump's int3 lines are skipped: every byte outside the decoded code must be int3
    const covered = new Array<boolean>(PAGE_SIZE).fill(false);
    for (const l of dis[k]) covered.fill(true, l.offset, l.offset + l.bytes.length);
    const stray = pages[k].bytes.findIndex((b, i) => !covered[i] && b !== 0xcc);
    expect(stray, `${k}: byte at ${stray} is neither code nor int3 filler`).to.equal(-1);
  }
  expect(pages.top.gva).to.equal(mid - 4096n);
  expect(pages.bottom.gva).to.equal(mid + 4096n);
  expect(pages.gate.gva).to.equal(mid);
  expect(pages.sub.gva).to.equal(mid);

  // ---- top: one run, from elisa_gate_entry to the very end of the page
  const top = runs(dis.top);
  expect(top.length, 'top: one block of code').to.equal(1);
  expect(top[0]!.start).to.equal(GATE_ENTRY_OFFSET);
  expect(top[0]!.end, 'top: VMFUNC ends exactly at the end of the page').to.equal(PAGE_SIZE);
  expect(top[0]!.lines.map(txt)).to.deep.equal([
    'endbr64', 'push rbp', 'mov rbp,rsp', 'push rbx', 'push r12', 'mov r12,rcx', 'mov eax,0x0', 'mov ecx,0x1ff', 'vmfunc',
  ]);
  expect(pages.entryGva).to.equal(mid - 4096n + BigInt(GATE_ENTRY_OFFSET));

  // ---- bottom: the return path at offset 0
  const bottom = runs(dis.bottom);
  expect(bottom.length).to.equal(1);
  expect(bottom[0]!.start).to.equal(RETURN_OFFSET);
  expect(RETURN_OFFSET).to.equal(0);
  expect(bottom[0]!.lines.map(txt)).to.deep.equal(['mov rax,rbx', 'pop r12', 'pop rbx', 'leave', 'ret']);

  // ---- gate: the entry path from 0 to SUB_ENTRY_OFFSET, the invalid path at the end
  const gate = runs(dis.gate);
  expect(gate.length, 'gate: two blocks of code').to.equal(2);
  const [enter, invalid] = gate as [(typeof gate)[0], (typeof gate)[0]];
  expect(enter.start).to.equal(0);
  expect(enter.end, 'gate: VMFUNC(0,1) ends where the sub code starts').to.equal(SUB_ENTRY_OFFSET);
  expect(invalid.end, 'gate: invalid path ends at the end of the page').to.equal(PAGE_SIZE);
  const inv = h(mid + BigInt(invalid.start));
  const eptp = h(p.subEptp);
  expect(enter.lines.map(txt)).to.deep.equal([
    `movabs rax,${eptp}`,
    'mov qword ptr [rip+X],rax',
    `movabs rax,${eptp}`,
    'cmp qword ptr [rip+X],rax',
    `jne ${inv}`,
    'mov rcx,rsp',
    `movabs rsp,${h(p.gateStackTop)}`,
    'pushf',
    'pop rax',
    'mov rsp,rcx',
    'test rax,0x200',
    `jne ${inv}`,
    'mov eax,0x0',
    'mov ecx,0x1',
    'vmfunc',
  ]);
  const movRbx = invalid.lines[4]!;
  expect(invalid.lines.map(txt)).to.deep.equal([
    'mov qword ptr [rip+X],0x0',
    'cmp qword ptr [rip+X],0x0',
    `je ${h(mid + BigInt(movRbx.offset))}`,
    'ud2',
    'mov rbx,0xffffffffffffffff',
    'mov eax,0x0',
    'mov ecx,0x0',
    'vmfunc',
  ]);
  const slot1Gate = p.gateEptpListGva + 8n;
  for (const l of [...enter.lines, ...invalid.lines].filter((x) => x.text.includes('[rip'))) {
    expect(l.target, `gate: "${l.text}" must address slot 1 of the list`).to.equal(slot1Gate);
  }

  // ---- sub: lands at SUB_ENTRY_OFFSET, ends with VMFUNC(0,0) at the end of the page
  const sub = runs(dis.sub);
  expect(sub.length, 'sub: two blocks of code').to.equal(2);
  const [body, exit] = sub as [(typeof sub)[0], (typeof sub)[0]];
  expect(body.start, 'sub: code starts right after the gate VMFUNC').to.equal(SUB_ENTRY_OFFSET);
  expect(exit.end).to.equal(PAGE_SIZE);
  expect(body.lines.map(txt)).to.deep.equal([
    'mov qword ptr [rip+X],0x0',
    'mov rax,rsp',
    `movabs rsp,${h(p.subStackTop)}`,
    'push rax',
    'push rbp',
    'mov rbp,rsp',
    'mov rcx,r12',
    `movabs r11,${h(p.entry)}`,
    'mov eax,0x0',
    'call r11',
    'mov rbx,rax',
    'xor ecx,ecx',
    'xor edx,edx',
    'xor esi,esi',
    'xor edi,edi',
    'xor r8d,r8d',
    'xor r9d,r9d',
    'xor r10d,r10d',
    'xor r11d,r11d',
    'leave',
    'pop rsp',
    `jmp ${h(mid + BigInt(exit.start))}`,
  ]);
  expect(body.lines[0]!.target, 'sub: first instruction clears slot 1').to.equal(p.subEptpListGva + 8n);
  expect(exit.lines.map(txt)).to.deep.equal(['mov eax,0x0', 'mov ecx,0x0', 'vmfunc']);

  // ---- exported VMFUNC sites are exactly the vmfunc instructions objdump sees
  for (const k of ['top', 'bottom', 'gate', 'sub'] as const) {
    const seen = dis[k].filter((l) => l.text === 'vmfunc').map((l) => l.offset);
    expect(pages[k].vmfuncs.map((v) => v.offset), `${k} vmfunc sites`).to.deep.equal(seen);
    for (const v of pages[k].vmfuncs) expect(v.gva).to.equal(pages[k].gva + BigInt(v.offset));
  }
  expect(pages.top.vmfuncs.map((v) => v.slot)).to.deep.equal([EPTP_SLOT_GATE]);
  expect(pages.gate.vmfuncs.map((v) => v.slot)).to.deep.equal([EPTP_SLOT_SUB, EPTP_SLOT_DEFAULT]);
  expect(pages.sub.vmfuncs.map((v) => v.slot)).to.deep.equal([EPTP_SLOT_DEFAULT]);
}

function disPages(sets: GatePages[]): Record<'top' | 'bottom' | 'gate' | 'sub', DisasmLine[]>[] {
  const order = ['top', 'bottom', 'gate', 'sub'] as const;
  const flat = disassembleMany(sets.flatMap((s) => order.map((k) => s[k])), { skipInt3: true });
  return sets.map((_, i) => ({ top: flat[4 * i]!, bottom: flat[4 * i + 1]!, gate: flat[4 * i + 2]!, sub: flat[4 * i + 3]! }));
}

const WB4 = (root: bigint): bigint => root | 6n | (3n << 3n); // WB, 4-level walk

describe('ELISA gate pages', function () {
  this.timeout(120_000);

  it('exports the slot numbers and offsets the backends use', function () {
    expect([EPTP_SLOT_DEFAULT, EPTP_SLOT_SUB, EPTP_SLOT_GATE]).to.deep.equal([0, 1, 511]);
    expect(PAGE_SIZE).to.equal(4096);
    // elisa_gate_entry is 9 instructions, 27 bytes (4+1+3+1+2+3+5+5+3), ending at the page end
    expect(GATE_ENTRY_OFFSET).to.equal(4096 - 27);
    expect(SUB_ENTRY_OFFSET).to.be.within(1, 4096 - 64);
  });

  it('libelisa-style layout: every page disassembles to the expected sequence', function () {
    const mid = 0x7f12_3456_7000n;
    const p: GatePagesParams = { ...libelisaLayout(mid), subEptp: WB4(0x1_2345_6000n), entry: 0x40_1130n };
    expect(p.gateEptpListGva).to.equal(mid + 0x1000n);
    expect(p.gateStackTop).to.equal(mid + 0x3000n);
    expect(p.subStackTop).to.equal(mid + 0x2000n + 0x80_0000n);
    const pages = buildGatePages(p);
    checkPages(p, pages, disPages([pages])[0]!);
  });

  it('the individual generators give the same pages as buildGatePages', function () {
    const p: GatePagesParams = { ...libelisaLayout(0x5000_0000n), subEptp: WB4(0x7000n) | 0x40n, entry: 0x1234_5678n };
    const all = buildGatePages(p);
    const { top, bottom } = buildEntryPages(p);
    const gate = buildGateCodePage({ ...p, eptpListGva: p.gateEptpListGva });
    const sub = buildSubCodePage({ ...p, eptpListGva: p.subEptpListGva });
    expect(Buffer.from(top.bytes).equals(all.top.bytes)).to.equal(true);
    expect(Buffer.from(bottom.bytes).equals(all.bottom.bytes)).to.equal(true);
    expect(Buffer.from(gate.bytes).equals(all.gate.bytes)).to.equal(true);
    expect(Buffer.from(sub.bytes).equals(all.sub.bytes)).to.equal(true);
  });

  it('layout invariants hold for random GVAs, lists, stacks, EPTPs and entries (property, 4 batches of 25)', function () {
    const params = fc
      .record({
        vaBits: fc.constantFrom<48 | 57>(48, 57),
        upper: fc.boolean(),
        midFrac: fc.bigInt(0n, (1n << 45n) - 1n),
        gateListK: fc.integer({ min: -500_000, max: 500_000 }).filter((k) => k !== 0),
        subListK: fc.integer({ min: -500_000, max: 500_000 }).filter((k) => k !== 0),
        gateStack: fc.bigInt(0n, (1n << 64n) - 1n),
        subStack: fc.bigInt(0n, (1n << 64n) - 1n),
        entry: fc.bigInt(0n, (1n << 64n) - 1n),
        root: fc.bigInt(0n, (1n << 40n) - 1n),
        mt: fc.constantFrom(0n, 6n),
        levels: fc.constantFrom(4n, 5n),
        ad: fc.boolean(),
      })
      .map((r): GatePagesParams => {
        const bits = BigInt(r.vaBits);
        const half = 1n << (bits - 1n);
        // pages 1 .. half/4096 - 3 of the chosen half, so top and bottom pages exist
        const span = half / 4096n - 4n;
        const pageNo = 1n + ((r.midFrac * span) >> 45n);
        const mid = (r.upper ? (1n << 64n) - half : 0n) + pageNo * 4096n;
        const canon = (v: bigint): bigint => BigInt.asUintN(64, BigInt.asIntN(Number(bits), v));
        const top16 = (v: bigint): bigint => {
          const t = canon(v) & ~0xfn;
          return t === 0n ? 0x10n : t;
        };
        return {
          vaBits: r.vaBits,
          middleGva: mid,
          gateEptpListGva: mid + BigInt(r.gateListK) * 4096n,
          subEptpListGva: mid + BigInt(r.subListK) * 4096n,
          gateStackTop: top16(r.gateStack),
          subStackTop: top16(r.subStack),
          entry: canon(r.entry),
          subEptp: (r.root << 12n) | r.mt | ((r.levels - 1n) << 3n) | (r.ad ? 0x40n : 0n),
        };
      })
      .filter((p) => {
        const bits = BigInt(p.vaBits!);
        const half = 1n << (bits - 1n);
        const canonical = (a: bigint): boolean => a >= 0n && (a < half || (a >= (1n << 64n) - half && a < 1n << 64n));
        const page = (a: bigint): bigint => a & ~0xfffn;
        const stackOk = (t: bigint, n: bigint, list: bigint): boolean =>
          canonical(t - n) && canonical(t - 1n) && ![p.middleGva, list].includes(page(t - 1n)) && ![p.middleGva, list].includes(page(t - n));
        return canonical(p.gateEptpListGva) && canonical(p.subEptpListGva) &&
          stackOk(p.gateStackTop, 16n, p.gateEptpListGva) && stackOk(p.subStackTop, 16n, p.subEptpListGva);
      });
    fc.assert(
      fc.property(fc.array(params, { minLength: 25, maxLength: 25 }), (sets) => {
        const pages = sets.map(buildGatePages);
        const dis = disPages(pages);
        sets.forEach((p, i) => {
          try {
            checkPages(p, pages[i]!, dis[i]!);
          } catch (e) {
            (e as Error).message = `params ${JSON.stringify(p, (_k, v: unknown) => (typeof v === 'bigint' ? h(v) : v))}: ${(e as Error).message}`;
            throw e;
          }
        });
      }),
      { numRuns: 4, endOnFailure: true },
    );
  });

  it('unused bytes of every page are int3, so stray execution traps', function () {
    const pages = buildGatePages({ ...libelisaLayout(0x1000_0000n), subEptp: WB4(0x9000n), entry: 0x2000n });
    // without skipping: objdump decodes each page as code runs plus int3 lines, nothing else
    const order = ['top', 'bottom', 'gate', 'sub'] as const;
    const dis = disassembleMany(order.map((k) => pages[k]));
    order.forEach((k, i) => {
      const lines = dis[i]!;
      expect(lines.reduce((n, l) => n + l.bytes.length, 0), `${k}: decodes exactly one page`).to.equal(PAGE_SIZE);
      const int3 = lines.filter((l) => l.text === 'int3').length;
      const code = runs(lines).reduce((n, r) => n + r.end - r.start, 0);
      expect(int3 + code, k).to.equal(PAGE_SIZE);
      expect(int3, `${k}: mostly filler`).to.be.greaterThan(3900);
    });
  });
});

/**
 * The four pages as GNU as source, written here independently of the generator: page
 * positions come from `.space` arithmetic over labels (the way libelisa lays them out),
 * RIP-relative operands name their target as page label + offset (as resolves the
 * displacement itself), jump sizes come from as's relaxation.
 * The sub code's start is as's own `gate_landing - gate`.
 */
function gasPages(p: GatePagesParams, i: number): string[] {
  const d = (v: bigint): string => v.toString();
  const kg = p.gateEptpListGva + 8n - p.middleGva; // slot 1 relative to the middle page, gate context
  const ks = p.subEptpListGva + 8n - p.middleGva;
  const L = (n: string): string => `p${i}_${n}`;
  return [
    // top
    `${L('top')}:`, `.space 4096 - (${L('top_end')} - ${L('entry')}), 0xcc`, `${L('entry')}:`,
    'endbr64', 'push rbp', 'mov rbp, rsp', 'push rbx', 'push r12', 'mov r12, rcx', 'mov eax, 0', 'mov ecx, 511', 'vmfunc',
    `${L('top_end')}:`,
    // bottom
    `${L('bottom')}:`, 'mov rax, rbx', 'pop r12', 'pop rbx', 'leave', 'ret', `.space 4096 - (. - ${L('bottom')}), 0xcc`,
    // gate
    `${L('gate')}:`,
    `movabs rax, ${d(p.subEptp)}`,
    `mov QWORD PTR [rip + ${L('gate')} + ${d(kg)}], rax`,
    `movabs rax, ${d(p.subEptp)}`,
    `cmp QWORD PTR [rip + ${L('gate')} + ${d(kg)}], rax`,
    `jne ${L('invalid')}`,
    'mov rcx, rsp', `movabs rsp, ${d(p.gateStackTop)}`, 'pushfq', 'pop rax', 'mov rsp, rcx', 'test rax, 0x200',
    `jne ${L('invalid')}`,
    'mov eax, 0', 'mov ecx, 1', 'vmfunc', `${L('landing')}:`,
    `.space 4096 - (${L('landing')} - ${L('gate')}) - (${L('gate_end')} - ${L('invalid')}), 0xcc`,
    `${L('invalid')}:`,
    `mov QWORD PTR [rip + ${L('gate')} + ${d(kg)}], 0`,
    `cmp QWORD PTR [rip + ${L('gate')} + ${d(kg)}], 0`,
    `je ${L('cleared')}`, 'ud2', `${L('cleared')}:`,
    'mov rbx, -1', 'mov eax, 0', 'mov ecx, 0', 'vmfunc', `${L('gate_end')}:`,
    // sub
    `${L('sub')}:`, `.space ${L('landing')} - ${L('gate')}, 0xcc`,
    `mov QWORD PTR [rip + ${L('sub')} + ${d(ks)}], 0`,
    'mov rax, rsp', `movabs rsp, ${d(p.subStackTop)}`, 'push rax', 'push rbp', 'mov rbp, rsp', 'mov rcx, r12',
    `movabs r11, ${d(p.entry)}`, 'mov eax, 0', 'call r11', 'mov rbx, rax',
    'xor ecx, ecx', 'xor edx, edx', 'xor esi, esi', 'xor edi, edi', 'xor r8d, r8d', 'xor r9d, r9d', 'xor r10d, r10d', 'xor r11d, r11d',
    'leave', 'pop rsp', `jmp ${L('exit')}`, `${L('done')}:`,
    `.space 4096 - (${L('done')} - ${L('sub')}) - (${L('sub_end')} - ${L('exit')}), 0xcc`,
    `${L('exit')}:`, 'mov eax, 0', 'mov ecx, 0', 'vmfunc', `${L('sub_end')}:`,
  ];
}

describe('ELISA gate pages: GNU as, given the same program text, produces the same four pages', function () {
  this.timeout(60_000);
  it('libelisa layout and 6 random layouts (both halves, 4/5-level), one as run', function () {
    const sets: GatePagesParams[] = [{ ...libelisaLayout(0x7f12_3456_7000n), subEptp: WB4(0x1_2345_6000n), entry: 0x40_1130n }];
    const rnd = fc.sample(
      fc.record({ vaBits: fc.constantFrom<48 | 57>(48, 57), upper: fc.boolean(), frac: fc.bigInt(1n, (1n << 30n) - 1n), root: fc.bigInt(0n, (1n << 40n) - 1n), e: fc.bigInt(0n, (1n << 47n) - 1n) }),
      { numRuns: 6, seed: 11 },
    );
    for (const r of rnd) {
      const half = 1n << BigInt(r.vaBits - 1);
      const mid = (r.upper ? (1n << 64n) - half : 0n) + ((r.frac * (half >> 30n)) & ~0xfffn) + 0x1000n;
      sets.push({ ...libelisaLayout(mid, 0x10_0000n, r.vaBits), subEptp: (r.root << 12n) | 0x5en, entry: r.upper ? (1n << 64n) - r.e : r.e });
    }
    const gas = gnuAssemble(sets.flatMap(gasPages));
    expect(gas.length).to.equal(sets.length * 4 * PAGE_SIZE);
    sets.forEach((p, i) => {
      const pages = buildGatePages(p);
      (['top', 'bottom', 'gate', 'sub'] as const).forEach((k, j) => {
        const theirs = gas.subarray((4 * i + j) * PAGE_SIZE, (4 * i + j + 1) * PAGE_SIZE);
        if (!Buffer.from(theirs).equals(pages[k].bytes)) {
          const at = theirs.findIndex((b, x) => b !== pages[k].bytes[x]);
          expect(hexBytes(pages[k].bytes.subarray(at, at + 16)), `set ${i} ${k} differs from as at offset ${at}`).to.equal(hexBytes(theirs.subarray(at, at + 16)));
        }
      });
    });
  });
});

describe('ELISA gate pages: VMFUNC sites rewritten into port-I/O traps', function () {
  it('each VMFUNC becomes nop; out port,al ending at the same byte; nothing else changes', function () {
    const pages = buildGatePages({ ...libelisaLayout(0x2000_0000n), subEptp: WB4(0x5000n), entry: 0x3000n });
    const order = ['top', 'bottom', 'gate', 'sub'] as const;
    const trapped = order.map((k) => ({ bytes: trapVmfuncs(pages[k], 0xe1), gva: pages[k].gva }));
    const dis = disassembleMany(trapped, { skipInt3: true });
    order.forEach((k, i) => {
      const lines = dis[i]!;
      expect(lines.some((l) => l.text === 'vmfunc'), `${k}: no VMFUNC left`).to.equal(false);
      const sites = pages[k].vmfuncs.map((v) => v.offset);
      for (const o of sites) {
        expect(lines.find((l) => l.offset === o)?.text, `${k}@${o}`).to.equal('nop');
        expect(lines.find((l) => l.offset === o + 1)?.text, `${k}@${o + 1}`).to.equal('out 0xe1,al');
      }
      const changed = Array.from(trapped[i]!.bytes).flatMap((b, j) => (b !== pages[k].bytes[j] ? [j] : []));
      expect(changed, k).to.deep.equal(sites.flatMap((o) => [o, o + 1, o + 2]));
    });
    expect(() => trapVmfuncs(pages.top, 256)).to.throw(GateError, /trap port 256 does not fit in an imm8/);
    const notVmfunc = { ...pages.sub, bytes: Uint8Array.from(pages.sub.bytes).fill(0x90, PAGE_SIZE - 3) };
    expect(() => trapVmfuncs(notVmfunc, 1)).to.throw(GateError, /VMFUNC site at 0xffd to trap: at offset 0xffd expected \[0f 01 d4\], found \[90 90 90\]/);
  });
});

describe('ELISA gate pages: bad parameters are refused with a clear error', function () {
  const mid = 0x7f00_0000_0000n;
  const good: GatePagesParams = { ...libelisaLayout(mid), subEptp: WB4(0x1000n), entry: 0x40_0000n };
  const bad = (patch: Partial<GatePagesParams>, re: RegExp): void => {
    expect(() => buildGatePages({ ...good, ...patch })).to.throw(GateError, re);
  };

  it('middle GVA: unaligned, non-canonical, no room for the top or bottom page', function () {
    bad({ middleGva: mid + 8n }, /middleGva 0x7f0000000008 is not 4 KiB aligned/);
    bad({ middleGva: 0x0000_8000_0000_0000n }, /middleGva 0x800000000000 is not a canonical 48-bit address/);
    bad({ middleGva: 0n }, /middleGva 0x0: the gate region .* must lie inside one canonical 48-bit half/);
    bad({ middleGva: 0x7fff_ffff_f000n }, /middleGva 0x7ffffffff000: the gate region/);
    bad({ middleGva: 0xffff_8000_0000_0000n }, /middleGva 0xffff800000000000: the gate region/);
    bad({ middleGva: 0xffff_ffff_ffff_f000n }, /middleGva 0xfffffffffffff000: the gate region/);
    bad({ middleGva: 1n << 64n }, /not a canonical/);
    bad({ middleGva: 0x1000 as unknown as bigint }, /middleGva must be a bigint, got number/);
    // 57-bit addresses are fine with 5-level paging, not with 4-level
    const far = 0x00ff_0000_0000_0000n;
    expect(buildEntryPages({ middleGva: far, vaBits: 57 }).top.gva).to.equal(far - 0x1000n);
    expect(() => buildEntryPages({ middleGva: far })).to.throw(GateError, /not a canonical 48-bit address/);
    expect(() => buildEntryPages({ middleGva: mid, vaBits: 52 as never })).to.throw(GateError, /vaBits must be 48 or 57/);
  });

  it('sub EPTP: memory type, walk length, reserved bits, root beyond 52 bits', function () {
    bad({ subEptp: 0n }, /subEptp 0x0: page-walk length field 0 means neither 4 nor 5 levels/);
    bad({ subEptp: 0x1000n | 1n | (3n << 3n) }, /memory type 1 is neither UC \(0\) nor WB \(6\)/);
    bad({ subEptp: 0x1000n | 6n | (2n << 3n) }, /page-walk length field 2/);
    bad({ subEptp: 0x1800n | 6n | (3n << 3n) }, /bits 7..11 are set \(the EPT root is not a page-aligned address\)/);
    bad({ subEptp: WB4(0x1000n) | 0x80n }, /bits 7..11 are set/);
    bad({ subEptp: WB4(1n << 52n) }, /root address has bits above 51/);
    bad({ subEptp: -1n }, /is not a 64-bit value/);
    expect(checkEptp('x', WB4(0xf_ffff_ffff_f000n) | 0x40n)).to.equal(0xf_ffff_ffff_f05en);
    expect(checkEptp('x', 0x2000n | (4n << 3n))).to.equal(0x2020n); // UC, 5-level
  });

  it('EPTP list: unaligned, out of RIP reach, overlapping the code page', function () {
    bad({ gateEptpListGva: mid + 0x1008n }, /eptpListGva 0x7f0000001008 is not 4 KiB aligned/);
    bad({ subEptpListGva: mid + 0x8000_0000n }, /eptpListGva 0x7f0080000000 is more than 2 GiB away from the middle page 0x7f0000000000/);
    bad({ gateEptpListGva: mid - 0x8000_0000n }, /more than 2 GiB away/);
    bad({ gateEptpListGva: mid }, /EPTP list page 0x7f0000000000..0x7f0000000fff overlaps the middle \(gate code\) page/);
    bad({ subEptpListGva: mid }, /overlaps the middle \(sub code\) page/);
    // the farthest reachable lists are accepted
    const far = buildGatePages({ ...good, gateEptpListGva: mid + 0x7fff_f000n, subEptpListGva: mid - 0x7fff_f000n });
    expect(far.gate.vmfuncs.length).to.equal(2);
  });

  it('stack tops: unaligned, zero, non-canonical, overlapping code or list', function () {
    bad({ gateStackTop: mid + 0x3008n }, /gateStackTop 0x7f0000003008 is not 16-byte aligned/);
    bad({ subStackTop: 0n }, /subStackTop 0x0 is not a stack top/);
    bad({ subStackTop: 0x0000_8000_0000_0010n }, /subStackTop: 0x800000000000..0x80000000000f is not a contiguous canonical 48-bit range/);
    bad({ gateStackTop: mid + 0x1000n }, /gate stack top slot 0x7f0000000ff8..0x7f0000000fff overlaps the middle \(gate code\) page/);
    bad({ gateStackTop: mid + 0x2000n }, /overlaps the EPTP list page/);
    bad({ subStackTop: mid + 0x2000n }, /sub stack top .* overlaps the EPTP list page/);
    // a stack ending exactly at the top of the lower half is fine (pushes write below it)
    const edge = buildGatePages({ ...good, subStackTop: 1n << 47n });
    expect(edge.sub.bytes.length).to.equal(PAGE_SIZE);
    // and one ending at 2^64 (the last page of the upper half) is RSP = 0, which wraps on push
    const wrap = buildGatePages({ ...good, gateStackTop: 1n << 64n });
    const movabsRsp = wrap.gate.bytes.findIndex((b, i) => b === 0x48 && wrap.gate.bytes[i + 1] === 0xbc);
    expect(Array.from(wrap.gate.bytes.subarray(movabsRsp + 2, movabsRsp + 10))).to.deep.equal([0, 0, 0, 0, 0, 0, 0, 0]);
  });

  it('entry: non-canonical', function () {
    bad({ entry: 0x0000_8000_0000_0000n }, /entry 0x800000000000 is not a canonical 48-bit address/);
    bad({ entry: 1n << 64n }, /entry 0x10000000000000000 is not a canonical/);
  });

  it('libelisa layout near the top of the lower half is refused instead of wrapping', function () {
    expect(() => libelisaLayout(0x7fff_ff80_0000n)).to.throw(GateError, /sub stack: 0x7fffff802000..0x800000001fff is not a contiguous canonical 48-bit range/);
    expect(libelisaLayout(0x7fff_ff80_0000n, 0x1000n).subStackTop).to.equal(0x7fff_ff80_3000n);
    expect(() => libelisaLayout(0x1000_0000n, 100n)).to.throw(GateError, /subStackSize 100 is not a positive multiple of 4 KiB/);
  });
});

describe('ELISA gate pages: the invariant checker catches corrupted pages', function () {
  const p: GatePagesParams = { ...libelisaLayout(0x4000_0000n), subEptp: WB4(0x3000n), entry: 0x1000n };
  const pages = buildGatePages(p);
  const patch = (page: GeneratedPage, offset: number, value: number): GeneratedPage => {
    const bytes = Uint8Array.from(page.bytes);
    bytes[offset] = value;
    return { ...page, bytes };
  };
  const broken = (change: Partial<GatePages>, re: RegExp, params: GatePagesParams = p): void => {
    expect(() => verifyGatePages({ ...pages, ...change }, params)).to.throw(GateError, re);
  };

  it('accepts the pages as built', function () {
    verifyGatePages(pages, p);
    expect(pages.gate.bytes[SUB_ENTRY_OFFSET - 1]).to.equal(0xd4);
  });

  it('top page: VMFUNC index, last byte, entry marker', function () {
    broken({ top: patch(pages.top, PAGE_SIZE - 1, 0x90) }, /top page layout invariant violated: exported VMFUNC site at 0xffd/);
    broken({ top: patch(pages.top, PAGE_SIZE - 7, 0x00) }, /top page .*EAX=0, ECX=511, VMFUNC ending the page: at offset 0xff3 expected \[b8 00 00 00 00 b9 ff 01 00 00 0f 01 d4\]/);
    broken({ top: patch(pages.top, GATE_ENTRY_OFFSET, 0x90) }, /elisa_gate_entry starts with endbr64/);
  });

  it('bottom page: return path at offset 0', function () {
    broken({ bottom: patch(pages.bottom, 0, 0x90) }, /bottom page layout invariant violated: return path starts with mov rax, rbx/);
  });

  it('gate page: VMFUNC(0,1) index, invalid path clearing the wrong slot, RBX not -1', function () {
    broken({ gate: patch(pages.gate, SUB_ENTRY_OFFSET - 7, 2) }, /gate page .*EAX=0, ECX=1, VMFUNC before the sub entry offset/);
    const inv = pages.gate.labels.get('invalid_attempt')!;
    broken({ gate: patch(pages.gate, inv + 3, pages.gate.bytes[inv + 3]! + 8) }, /invalid path clears slot 1 writes 0x40001010 instead of slot 1 at 0x40001008/);
    broken({ gate: patch(pages.gate, inv + 7, 1) }, /invalid path clears slot 1 \(stores 0\)/);
    broken({ gate: patch(pages.gate, PAGE_SIZE - 17, 0) }, /invalid path ends the page with RBX=-1/);
  });

  it('sub page: entry does not clear slot 1, final VMFUNC index', function () {
    broken({ sub: patch(pages.sub, SUB_ENTRY_OFFSET, 0x90) }, /sub page layout invariant violated: sub entry clears slot 1/);
    broken({ sub: patch(pages.sub, PAGE_SIZE - 8, 1) }, /sub page .*EAX=0, ECX=0, VMFUNC ending the page/);
  });

  it('pages not consecutive, or checked against another list address', function () {
    broken({ bottom: { ...pages.bottom, gva: pages.bottom.gva + 0x1000n } }, /not consecutive/);
    broken({}, /gate page layout invariant violated: invalid path clears slot 1 writes 0x40001008 instead of slot 1 at 0x40005008/, { ...p, gateEptpListGva: 0x4000_5000n });
    broken({}, /sub page layout invariant violated: sub entry clears slot 1 writes 0x40001008 instead/, { ...p, subEptpListGva: 0x4000_5000n });
    broken({ entryGva: pages.entryGva + 1n }, /entryGva is not the address of elisa_gate_entry/);
  });
});
