// BRACKET_INSNS (src/elisa/host/bench.ts) counts the instructions inside each rdtsc
// bracket of the bench app; the benchmark's per-instruction arithmetic depends on them.
// Recount them here with objdump: the guest's compiled brackets, and the path through
// the generated gate pages and the sub entry function, followed like the CPU does.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { expect } from 'chai';
import { BRACKET_INSNS } from '../../src/elisa/host/bench';
import { buildGatePages, libelisaLayout, LABEL_GATE_ENTRY, LABEL_SUB_ENTRY } from '../../src/elisa/gate';
import { parseElf } from '../../src/x86/elf';
import { guestProgramPath } from '../../src/x86/programs';
import { disassemble, type DisasmLine } from '../support/objdump';

/** Instructions of function `name` in an ELF, via objdump (Intel syntax); a leaf ends at its first ret (padding follows). */
function functionBody(elf: string, name: string, leaf = true): string[] {
  const out = execFileSync('objdump', ['-d', '--no-show-raw-insn', '-M', 'intel', elf], { encoding: 'utf8' });
  const start = out.indexOf(`<${name}>:\n`);
  expect(start, `${name} in ${elf}`).to.be.greaterThan(-1);
  const body = out.slice(start).split('\n\n')[0]!.split('\n').slice(1);
  const insns = body.map((l) => l.split('\t').slice(1).join(' ').trim()).filter((t) => t.length > 0);
  const ret = insns.findIndex((t) => t.startsWith('ret'));
  return leaf && ret >= 0 ? insns.slice(0, ret + 1) : insns;
}

/** Counts instructions from `offset`, following jmp and stopping before VMFUNC or after ret. */
function follow(lines: DisasmLine[], offset: number, onCall?: () => number): number {
  let count = 0;
  let i = lines.findIndex((l) => l.offset === offset);
  expect(i, `an instruction at offset ${offset}`).to.be.greaterThan(-1);
  for (let guard = 0; guard < 200; guard++) {
    const l = lines[i]!;
    if (l.text === 'vmfunc') return count;
    count++;
    if (l.text.startsWith('ret')) return count;
    if (l.text.startsWith('call') && onCall) count += onCall();
    if (l.text.startsWith('jmp ')) {
      const target = Number.parseInt(l.text.split(' ').pop()!, 16);
      i = lines.findIndex((x) => x.offset === target);
      continue;
    }
    i++;
  }
  throw new Error('no VMFUNC or ret within 200 instructions');
}

describe('bench: instructions inside the rdtsc brackets', function () {
  this.timeout(30_000);

  it('match BRACKET_INSNS', () => {
    const main = functionBody(guestProgramPath('bench'), 'main', false);
    const rdtsc = main.flatMap((t, i) => (t === 'rdtsc' ? [i] : []));
    // Brackets: rdtsc (exclusive) .. next rdtsc (inclusive), inside the loop.
    const brackets = rdtsc.slice(0, -1).map((at, k) => main.slice(at + 1, rdtsc[k + 1]! + 1));
    const find = (pred: (b: string[]) => boolean): string[] => {
      const b = brackets.find(pred);
      expect(b, 'bracket').to.not.equal(undefined);
      return b!;
    };
    const trip = find((b) => b.some((t) => /^call\s+rax$/.test(t)));
    const pio = find((b) => b.some((t) => t.includes('<pio_call>')));
    const block = find((b) => b.some((t) => t.includes('<insn_block>')));
    const pioBody = functionBody(guestProgramPath('bench'), 'pio_call');
    const blockBody = functionBody(guestProgramPath('bench'), 'insn_block');
    expect(pioBody.filter((t) => t.startsWith('out')).length).to.equal(1);
    expect(block.length + blockBody.length).to.equal(BRACKET_INSNS.block);
    expect(pio.length + pioBody.length - 1).to.equal(BRACKET_INSNS.pio); // minus the OUT (the exit)

    // The gate path: top page from elisa_gate_entry, gate code from 0, sub code from the
    // sub entry (plus the entry function), bottom page to its ret; VMFUNCs excluded.
    const layout = libelisaLayout(0x102000n, 65536n);
    const pages = buildGatePages({ ...layout, subEptp: 0x1234005en, entry: 0x4000_0000n });
    const sub = parseElf(readFileSync(guestProgramPath('sub/bench')), 'sub/bench');
    const entryBody = functionBody(guestProgramPath('sub/bench'), 'elisa_sub_entry');
    expect(sub.symbols.get('elisa_sub_entry')).to.not.equal(undefined);
    const path =
      follow(disassemble(pages.top.bytes), pages.top.labels.get(LABEL_GATE_ENTRY)!) +
      follow(disassemble(pages.gate.bytes), 0) +
      follow(disassemble(pages.sub.bytes), pages.sub.labels.get(LABEL_SUB_ENTRY)!, () => entryBody.length) +
      follow(disassemble(pages.bottom.bytes), 0);
    expect(trip.length + path).to.equal(BRACKET_INSNS.roundTrip);
  });
});
